#!/usr/bin/env bash
# browser.sh: the dashboard test in headless Chromium (Debian's chromium package).
#
# Usage: tests/browser.sh path/to/tdlab
#
# 1. Starts the real daemon on a free loopback port with a temporary database and web/,
#    submits a small Fashion-MNIST `train` job with curl and waits for it to succeed.
# 2. tests/browser/check.js drives Chromium over the DevTools protocol (Node >= 18 built-ins
#    only, no npm install):
#    the jobs list must show the job, the job page must draw its loss and accuracy charts
#    (pixels of the series colour on the canvas), the log-y toggle must work, and there must
#    be no console errors, exceptions or failed loads; a small nqm batch-size sweep must show
#    its log-log plot with the critical_batch fit, band and asymptotes, and link every child.
#    Six small runs (the README's four optimizers, and a second seed of sgd and adam) drive the
#    comparison page: selection and Compare in the jobs list, one chart per shared key, the
#    legend from differing params, smoothing, log y and zoom in a shared URL that reopens the
#    same view, relative time, seed groups with bands, search, dark mode, named controls and
#    a 390 px screen; the sweep page's parallel coordinates, scatter and children's curves; a
#    small hyperopt job whose page draws the gradient run beside its same-budget random-search
#    sweep (summary.random_sweep POSTed under the job's name; web/js/hyperopt.js).
# 3. The same script checks the pages against tests/browser/fake_api.js fixtures: NaN and
#    Infinity metric values, sharpness with its 2/lr line, spectral-density and eigenvalue
#    artifacts, a 1e6-step run, a fork (parent link, the parent's curve up to the fork step,
#    the children, the Fork form and what it posts), and the sweep page with its fit and band.
# Screenshots go to $BROWSER_OUT (default: build/browser next to the binary's build dir).
# Prints one line per check and a final "N passed, M failed"; exits non-zero on a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
TDLAB=${1:-build/tdlab}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
OUT=${BROWSER_OUT:-$(dirname "$TDLAB")/browser}
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/tdlab-browser.XXXXXX)
PASS=0; FAIL=0; DAEMON_PID=""
ok()     { PASS=$((PASS + 1)); echo "ok - $*"; }
not_ok() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
cleanup() {
  if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill "$DAEMON_PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DAEMON_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
finish() { echo "$PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ]; exit $?; }

# --- prerequisites ---------------------------------------------------------------------------
if ! command -v node >/dev/null; then not_ok "node is installed (needed to drive Chromium)"; finish; fi
if [ ! -x "$CHROMIUM" ]; then not_ok "chromium at $CHROMIUM (apt-get install chromium; make deps)"; finish; fi
free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
json_get() { node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>{try{let v=JSON.parse(d);for(const k of process.argv[1].split("."))v=v==null?v:v[k];console.log(v==null?"":typeof v==="object"?JSON.stringify(v):v)}catch(e){console.log("")}})' "$1"; }

# --- the real daemon ------------------------------------------------------------------------------
CHECK_ARGS=(--out "$OUT" --fixtures web --chromium "$CHROMIUM")
if [ ! -x "$TDLAB" ]; then
  not_ok "tdlab binary at $TDLAB (build it with make)"
else
  PORT=$(free_port)
  BASE="http://127.0.0.1:$PORT"
  "$TDLAB" serve --host 127.0.0.1 --port "$PORT" --db "$TMP/t.db" --web web --workers 1 >"$OUT/daemon.log" 2>&1 &
  DAEMON_PID=$!
  up=""
  for _ in $(seq 1 100); do
    if curl -fsS "$BASE/healthz" >/dev/null 2>&1; then up=1; break; fi
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$up" ]; then
    not_ok "daemon answers /healthz on port $PORT (see $OUT/daemon.log)"
  else
    ok "daemon answers /healthz on port $PORT"
    SPEC='{"kind":"train","name":"browser-test","tags":["browser"],"params":{"data":{"name":"fashion-mnist","n_train":2000,"n_test":500},"model":{"hidden":[32]},"epochs":1,"batch_size":64,"seed":0}}'
    RESP=$(curl -sS -X POST -H 'Content-Type: application/json' --data "$SPEC" "$BASE/api/v1/jobs")
    JOB=$(printf '%s' "$RESP" | json_get id)
    [ -z "$JOB" ] && JOB=$(printf '%s' "$RESP" | json_get job.id)
    if [ -z "$JOB" ]; then
      not_ok "submit a train job (answer: ${RESP:0:300})"
    else
      ok "submitted train job $JOB"
      STATUS=""
      for _ in $(seq 1 600); do   # up to 120 s
        STATUS=$(curl -sS "$BASE/api/v1/jobs/$JOB" | json_get status)
        case "$STATUS" in succeeded|failed|diverged|cancelled) break ;; esac
        sleep 0.2
      done
      if [ "$STATUS" = "succeeded" ]; then ok "job $JOB succeeded"; else not_ok "job $JOB succeeded (status: ${STATUS:-none})"; fi
      CHECK_ARGS+=(--base "$BASE" --job "$JOB")
    fi
    # The README's four optimizers (small), and a second seed of sgd and adam, for the
    # comparison page.
    CMP_IDS=""; SEED_IDS=""
    for o in "sgd 0.1 0" "adam 0.003 0" "kfac 0.5 0" "hessian_free 1 0" "sgd 0.1 1" "adam 0.003 1"; do
      set -- $o
      S='{"kind":"train","name":"cmp-'$1'","tags":["cmp"],"params":{"data":{"name":"fashion-mnist","n_train":1000,"n_test":300},"model":{"hidden":[16]},"optimizer":{"name":"'$1'","lr":'$2'},"epochs":2,"batch_size":128,"seed":'$3'}}'
      ID=$(curl -sS -X POST -H 'Content-Type: application/json' --data "$S" "$BASE/api/v1/jobs" | json_get id)
      if [ "$3" = 0 ]; then CMP_IDS="$CMP_IDS${CMP_IDS:+,}$ID"; fi
      case "$1" in sgd|adam) SEED_IDS="$SEED_IDS${SEED_IDS:+,}$ID" ;; esac
    done
    for _ in $(seq 1 600); do   # up to 120 s
      left=$(curl -sS "$BASE/api/v1/jobs?tag=cmp&status=queued,running" | grep -c '"id"')
      [ "$left" = 0 ] && break
      sleep 0.2
    done
    if [ "$left" = 0 ]; then ok "six comparison runs finished"; CHECK_ARGS+=(--compare "$CMP_IDS" --seeds "$SEED_IDS"); else not_ok "six comparison runs finished"; fi
    # A small nqm batch-size scan with a critical_batch fit, for the sweep page.
    SWEEP_SPEC='{"name":"browser-bs","kind":"nqm","base":{"dim":20,"target_loss":0.05,"max_steps":20000,"tune_lr":true},"axes":{"batch_size":{"values":[1,4,16,64,256,1024]}},"fit":{"law":"critical_batch","x":"params.batch_size","y":"summary.steps_to_target","bootstrap":50}}'
    SWEEP=$(curl -sS -X POST -H 'Content-Type: application/json' --data "$SWEEP_SPEC" "$BASE/api/v1/sweeps" | json_get id)
    if [ -z "$SWEEP" ]; then
      not_ok "submit an nqm sweep"
    else
      SSTATUS=""
      for _ in $(seq 1 600); do   # up to 120 s
        SSTATUS=$(curl -sS "$BASE/api/v1/sweeps/$SWEEP?children=0" | json_get status)
        case "$SSTATUS" in finished|cancelled) break ;; esac
        sleep 0.2
      done
      if [ "$SSTATUS" = "finished" ]; then ok "sweep $SWEEP finished"; CHECK_ARGS+=(--sweep "$SWEEP"); else not_ok "sweep $SWEEP finished (status: ${SSTATUS:-none})"; fi
    fi
    # A small hyperopt job and its same-budget random-search sweep (summary.random_sweep, named
    # after the job as the job page looks it up), for the job page's comparison chart.
    HSPEC='{"kind":"hyperopt","params":{"data":{"n_train":100,"n_test":100},"model":{"hidden":[8]},"steps":10,"outer":{"steps":2,"lr":0.5}}}'
    HO=$(curl -sS -X POST -H 'Content-Type: application/json' --data "$HSPEC" "$BASE/api/v1/jobs" | json_get id)
    HSTATUS=""
    for _ in $(seq 1 600); do   # up to 120 s
      HSTATUS=$(curl -sS "$BASE/api/v1/jobs/$HO" | json_get status)
      case "$HSTATUS" in succeeded|failed|diverged|cancelled) break ;; esac
      sleep 0.2
    done
    HSW=""
    if [ -n "$HO" ] && [ "$HSTATUS" = succeeded ]; then
      HSPEC2=$(curl -sS "$BASE/api/v1/jobs/$HO" | json_get summary.random_sweep |
        node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>{const s=JSON.parse(d);s.name="hyperopt-random-of-job-"+process.argv[1];console.log(JSON.stringify(s))})' "$HO")
      HSW=$(curl -sS -X POST -H 'Content-Type: application/json' --data "$HSPEC2" "$BASE/api/v1/sweeps" | json_get id)
      for _ in $(seq 1 600); do
        [ "$(curl -sS "$BASE/api/v1/sweeps/$HSW?children=0" | json_get status)" = finished ] && break
        sleep 0.2
      done
    fi
    if [ -n "$HSW" ]; then ok "hyperopt job $HO and its random-search sweep $HSW finished"; CHECK_ARGS+=(--hyperopt "$HO"); else not_ok "hyperopt job and its sweep (job ${HO:-none}: ${HSTATUS:-none})"; fi
  fi
fi

# --- Chromium ---------------------------------------------------------------------------------
node tests/browser/check.js "${CHECK_ARGS[@]}" >"$TMP/check.out" 2>"$TMP/check.err"
rc=$?
cat "$TMP/check.out"
n_ok=$(grep -c '^ok - ' "$TMP/check.out")
n_bad=$(grep -c '^not ok - ' "$TMP/check.out")
PASS=$((PASS + n_ok)); FAIL=$((FAIL + n_bad))
if [ "$rc" -ne 0 ] && [ "$n_bad" -eq 0 ]; then
  not_ok "check.js exited with $rc: $(tail -c 600 "$TMP/check.err")"
fi
finish
