#!/usr/bin/env bash
# rest.sh: REST throughput benchmark. GET /api/v1/jobs/{id} on `tdlab serve` (2 workers busy
# training) against a bare libmicrohttpd handler (bench/bare_mhd.c) that serves the same bytes,
# both measured with wrk in the same run, while the same training load runs, alternating
# tdlab, bare, bare, tdlab, ... so that a drift in machine load hits both sides alike.
#
# Usage: bench/rest.sh [BUILD_DIR]        (default build; needs BUILD/tdlab, BUILD/bench/bare_mhd, wrk)
# Environment: REST_SECS (seconds per wrk run, 10), REST_CONNS (50), REST_ROUNDS (2: each
# side runs 2 x REST_SECS), REST_WRK_THREADS (2), REST_TARGET (running | finished: GET a job
# that is running, whose record changes with every metric batch, or one that has finished).
# Prints (rps = requests per second over all rounds; p99 = the worst round's p99):
#   BENCH rest_get_job tdlab_rps=<r> peer=bare_mhd peer_rps=<r> ratio=<tdlab/peer> p99_ms=<t> peer_p99_ms=<t> ...
# and one "round" line per wrk run on stderr. Exits 1 when a side fails or sees errors.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-build}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
TDLAB="$BUILD/tdlab"
BARE="$BUILD/bench/bare_mhd"
SECS="${REST_SECS:-10}"
CONNS="${REST_CONNS:-50}"
ROUNDS="${REST_ROUNDS:-2}"
WTHREADS="${REST_WRK_THREADS:-2}"
TARGET="${REST_TARGET:-running}"
for x in "$TDLAB" "$BARE"; do
  [ -x "$x" ] || { echo "rest.sh: $x is missing (make BUILD=... all)" >&2; exit 2; }
done
command -v wrk >/dev/null || { echo "rest.sh: wrk is missing (scripts/deps.sh load)" >&2; exit 2; }
TMP="$(mktemp -d /tmp/tdlab-rest.XXXXXX)"
BARE_PID=""
# shellcheck source=../tests/srvlib.sh
. "$ROOT/tests/srvlib.sh"
cleanup() {
  [ -n "$BARE_PID" ] && kill "$BARE_PID" 2>/dev/null && wait "$BARE_PID" 2>/dev/null
  srv_kill9
  rm -rf "$TMP"
}
trap cleanup EXIT

# The background load: two training jobs that run until the benchmark ends (an MLP
# 256-256-1 on a synthetic regression set; each logs train_loss, grad_norm, param_norm per step).
TRAIN='{"kind":"train","name":"rest-bench-load","params":{"data":{"name":"synthetic","n":4096,"d":256},"model":{"hidden":[256]},"loss":"mse","optimizer":{"lr":0.002},"batch_size":128,"steps":1000000000,"eval_every":1000000000,"seed":1}}'
QUICK='{"kind":"linreg","name":"rest-bench-target","params":{"data":{"name":"synthetic","n":200,"d":50,"noise":0.1},"lr":0.1,"steps":100,"seed":0}}'

srv_start "$TMP/bench.db" --workers 2 || { echo "rest.sh: tdlab serve did not start" >&2; exit 1; }
if [ "$TARGET" = finished ]; then
  ID=$(srv_submit "$QUICK")
  for _ in $(seq 1 300); do [ "$(srv_status "$ID")" = succeeded ] && break; sleep 0.1; done
fi
J1=$(srv_submit "$TRAIN")
J2=$(srv_submit "$TRAIN")
[ "$TARGET" = finished ] || ID=$J1
srv_wait_running "$J1" 60 && srv_wait_running "$J2" 60 ||
  { echo "rest.sh: the training jobs did not start" >&2; exit 1; }
URL="$SRV_BASE/api/v1/jobs/$ID"
curl -s -o "$TMP/job.json" "$URL"
HTTP_THREADS=$(grep -o 'http_threads=[0-9]*' "$SRV_LOG" | head -1 | cut -d= -f2)
"$BARE" --port 0 --threads "${HTTP_THREADS:-2}" --body-file "$TMP/job.json" >"$TMP/bare.out" 2>&1 &
BARE_PID=$!
BPORT=""
for _ in $(seq 1 100); do
  BPORT=$(grep -o 'port=[0-9]*' "$TMP/bare.out" | cut -d= -f2)
  [ -n "$BPORT" ] && break
  sleep 0.05
done
[ -n "$BPORT" ] || { echo "rest.sh: bare_mhd did not start" >&2; exit 1; }
BURL="http://127.0.0.1:$BPORT/api/v1/jobs/$ID"

# Warm up both (connections, caches) for a second each.
wrk -t"$WTHREADS" -c"$CONNS" -d1s "$URL" >/dev/null 2>&1
wrk -t"$WTHREADS" -c"$CONNS" -d1s "$BURL" >/dev/null 2>&1

t_reqs=0 t_secs=0 t_p99=0 t_err=0 p_reqs=0 p_secs=0 p_p99=0 p_err=0 fail=0
# run SIDE URL: one wrk run; accumulates into t_* or p_*.
run() {
  local side="$1" url="$2" out="$TMP/wrk.$1.$RANDOM"
  wrk -t"$WTHREADS" -c"$CONNS" -d"${SECS}s" --latency "$url" >"$out" 2>&1
  wrk_parse "$out"
  if [ -z "$WRK_RPS" ]; then
    echo "rest.sh: wrk failed against $side:" >&2
    cat "$out" >&2
    fail=1
    return
  fi
  local err=$((WRK_NON2XX + WRK_SOCKERR))
  echo "round side=$side rps=$WRK_RPS p50_ms=$WRK_P50_MS p99_ms=$WRK_P99_MS errors=$err" >&2
  if [ "$side" = tdlab ]; then
    t_reqs=$(awk -v a="$t_reqs" -v r="$WRK_RPS" -v s="$SECS" 'BEGIN {print a + r * s}')
    t_secs=$((t_secs + SECS))
    t_p99=$(awk -v a="$t_p99" -v b="$WRK_P99_MS" 'BEGIN {print (b > a ? b : a)}')
    t_err=$((t_err + err))
  else
    p_reqs=$(awk -v a="$p_reqs" -v r="$WRK_RPS" -v s="$SECS" 'BEGIN {print a + r * s}')
    p_secs=$((p_secs + SECS))
    p_p99=$(awk -v a="$p_p99" -v b="$WRK_P99_MS" 'BEGIN {print (b > a ? b : a)}')
    p_err=$((p_err + err))
  fi
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run tdlab "$URL"; run bare "$BURL"
  else run bare "$BURL"; run tdlab "$URL"; fi
done
[ "$fail" = 0 ] || exit 1
st=$(srv_status "$J1")
awk -v tr="$t_reqs" -v ts="$t_secs" -v pr="$p_reqs" -v ps="$p_secs" -v tp="$t_p99" \
  -v pp="$p_p99" -v te="$t_err" -v pe="$p_err" -v c="$CONNS" -v tg="$TARGET" -v st="$st" 'BEGIN {
  t = tr / ts; p = pr / ps;
  printf "BENCH rest_get_job tdlab_rps=%.0f peer=bare_mhd peer_rps=%.0f ratio=%.3f p99_ms=%.2f peer_p99_ms=%.2f conns=%d target=%s errors=%d peer_errors=%d load_job=%s\n", t, p, t / p, tp, pp, c, tg, te, pe, st }'
[ "$t_err" = 0 ] && [ "$p_err" = 0 ]
