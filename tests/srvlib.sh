# srvlib.sh: shell helpers shared by the reliability scripts (crash.sh, load.sh, burst.sh),
# bench/rest.sh and, through tests/e2elib.sh, the end-to-end scripts: start `tdlab serve` on a
# free loopback port, talk to it with curl, and parse wrk output. Source it from bash after
# setting TDLAB (the binary), ROOT (the repo) and TMP (a scratch directory).

# Check counters shared by the scripts: ok/bad count one check each; finish prints the
# closing "N passed, M failed" line and exits non-zero when a check failed.
PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
finish() {
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ]
  exit $?
}

SRV_PID=""
SRV_BASE=""
SRV_N=0

# srv_start DB [extra serve flags...]: start the daemon on 127.0.0.1:0 with database DB; wait
# for its "listening" line; set SRV_PID, SRV_PORT and SRV_BASE. The log goes to
# $TMP/server.N.log (SRV_LOG). Returns non-zero (after printing the log) when it fails.
srv_start() {
  local db="$1"
  shift
  SRV_N=$((SRV_N + 1))
  SRV_LOG="$TMP/server.$SRV_N.log"
  "$TDLAB" serve --host 127.0.0.1 --port 0 --db "$db" --web "$ROOT/web" \
    --migrations "$ROOT/migrations" "$@" 2>"$SRV_LOG" &
  SRV_PID=$!
  SRV_PORT=""
  local _
  for _ in $(seq 1 400); do
    SRV_PORT=$(grep -o 'event=listening url=http://127.0.0.1:[0-9]*' "$SRV_LOG" 2>/dev/null |
      grep -o '[0-9]*$' | head -1)
    [ -n "$SRV_PORT" ] && break
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$SRV_PORT" ]; then
    echo "--- server log ($SRV_LOG):" >&2
    cat "$SRV_LOG" >&2
    return 1
  fi
  SRV_BASE="http://127.0.0.1:$SRV_PORT"
}

# srv_kill9: kill -9 the daemon and reap it.
srv_kill9() {
  if [ -n "$SRV_PID" ]; then
    kill -9 "$SRV_PID" 2>/dev/null
    wait "$SRV_PID" 2>/dev/null
  fi
  SRV_PID=""
}

# srv_term: SIGTERM and wait (at most 60 s, then kill -9). Returns the exit status.
srv_term() {
  local rc=0 _
  [ -n "$SRV_PID" ] || return 0
  kill -TERM "$SRV_PID" 2>/dev/null
  for _ in $(seq 1 600); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SRV_PID" 2>/dev/null; then
    kill -9 "$SRV_PID" 2>/dev/null
    rc=137
  fi
  wait "$SRV_PID" 2>/dev/null || rc=$?
  SRV_PID=""
  return $rc
}

# srv_submit JSON: POST a job; prints its id (empty on failure).
srv_submit() {
  curl -s --max-time 30 -H 'Content-Type: application/json' --data-binary "$1" \
    "$SRV_BASE/api/v1/jobs" | grep -o '^{"id":[0-9]*' | grep -o '[0-9]*$'
}

# srv_status ID: the job's status.
srv_status() {
  curl -s --max-time 10 "$SRV_BASE/api/v1/jobs/$1" | grep -o '"status":"[a-z]*"' | head -1 |
    sed 's/.*:"\(.*\)"/\1/'
}

# srv_wait_running ID SECONDS: wait until the job is running with progress.done > 0.
srv_wait_running() {
  local id="$1" deadline=$((SECONDS + $2)) j
  while [ $SECONDS -le $deadline ]; do
    j=$(curl -s --max-time 10 "$SRV_BASE/api/v1/jobs/$id")
    case "$j" in *'"status":"running"'*'"progress":{"done":'[1-9]*) return 0 ;; esac
    sleep 0.1
  done
  return 1
}

# wrk_ms VALUE: a wrk duration (e.g. 812.00us, 3.21ms, 1.02s, 2.00m) in milliseconds.
wrk_ms() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
    if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
    printf "%.3f", n }'
}

# wrk_parse FILE: from `wrk --latency` output set WRK_RPS, WRK_P50_MS, WRK_P99_MS,
# WRK_REQS, WRK_NON2XX (non-2xx/3xx responses) and WRK_SOCKERR (connect+read+write+timeout).
# WRK_RPS is empty when the output has no "Requests/sec" line.
wrk_parse() {
  local f="$1"
  WRK_RPS=$(awk '/^Requests\/sec:/ {print $2}' "$f")
  WRK_P50_MS=$(wrk_ms "$(awk '$1 == "50%" {print $2}' "$f")")
  WRK_P99_MS=$(wrk_ms "$(awk '$1 == "99%" {print $2}' "$f")")
  WRK_REQS=$(awk '/requests in/ {print $1}' "$f")
  WRK_NON2XX=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$f")
  WRK_NON2XX=${WRK_NON2XX:-0}
  WRK_SOCKERR=$(awk '/Socket errors:/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$f")
  WRK_SOCKERR=${WRK_SOCKERR:-0}
}
