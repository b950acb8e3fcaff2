#!/usr/bin/env bash
# load.sh: load test. wrk sends 50 connections for 30 s to the job, metrics and list
# endpoints (tests/load/rotate.lua takes the paths round robin) of `tdlab serve` on loopback,
# while 2 workers train. Must see 0 errors: every answer 2xx, no socket error (connect,
# read, write, or timeout after 2 s). Reports throughput and latency percentiles, and the
# server's RSS before and after.
#
# Usage: tests/load.sh path/to/tdlab
# Environment: LOAD_SECS (30), LOAD_CONNS (50), LOAD_THREADS (2, wrk threads), LOAD_KEEP=1.
# Prints "LOAD rps=... p50_ms=... p99_ms=... requests=... errors=..." and a final
# "N passed, M failed"; exits non-zero on a failure.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TDLAB="${1:-}"
if [ -z "$TDLAB" ] || [ ! -x "$TDLAB" ]; then
  echo "usage: tests/load.sh path/to/tdlab" >&2
  echo "0 passed, 1 failed"
  exit 2
fi
TDLAB="$(cd "$(dirname "$TDLAB")" && pwd)/$(basename "$TDLAB")"
SECS="${LOAD_SECS:-30}"
CONNS="${LOAD_CONNS:-50}"
WTHREADS="${LOAD_THREADS:-2}"
TMP="$(mktemp -d /tmp/tdlab-load.XXXXXX)"
# shellcheck source=srvlib.sh
. "$ROOT/tests/srvlib.sh"
cleanup() {
  srv_kill9
  if [ "$FAIL" -eq 0 ] && [ -z "${LOAD_KEEP:-}" ]; then rm -rf "$TMP"; else echo "(kept $TMP)"; fi
}
trap cleanup EXIT
command -v wrk >/dev/null || { bad "wrk is installed (scripts/deps.sh load)"; finish; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SRV_PID/status" 2>/dev/null; }

if ! srv_start "$TMP/load.db" --workers 2 --log-level warn; then
  bad "the daemon starts"
  finish
fi
ok "the daemon starts ($SRV_BASE, 2 workers)"

# Two training jobs that outlast the test (an MLP on a synthetic regression set; each logs
# train_loss, grad_norm and param_norm every step), and one finished job.
TRAIN='{"kind":"train","name":"load","tags":["load"],"params":{"data":{"name":"synthetic","n":4096,"d":256},"model":{"hidden":[256]},"loss":"mse","optimizer":{"lr":0.002},"batch_size":128,"steps":1000000000,"eval_every":500,"seed":1}}'
DONE='{"kind":"linreg","name":"load-done","params":{"data":{"name":"synthetic","n":200,"d":50},"lr":0.1,"steps":300}}'
D=$(srv_submit "$DONE")
for _ in $(seq 1 200); do [ "$(srv_status "$D")" = succeeded ] && break; sleep 0.1; done
J1=$(srv_submit "$TRAIN")
J2=$(srv_submit "$TRAIN")
if srv_wait_running "$J1" 60 && srv_wait_running "$J2" 60; then
  ok "2 workers are training (jobs $J1 and $J2)"
else
  bad "2 workers are training"
  finish
fi
PATHS=(
  "/api/v1/jobs/$J1"
  "/api/v1/jobs/$J1/metrics?max_points=1000"
  "/api/v1/jobs?limit=50"
  "/api/v1/jobs/$D"
  "/api/v1/jobs/$J2/metrics?keys=train_loss&max_points=200"
  "/api/v1/jobs?status=running,succeeded&limit=20"
  "/api/v1/jobs/$D/metrics"
)
rss0=$(rss_kb)
wrk -t"$WTHREADS" -c"$CONNS" -d"${SECS}s" --latency -s "$ROOT/tests/load/rotate.lua" "$SRV_BASE" \
  -- "${PATHS[@]}" >"$TMP/wrk.out" 2>&1
rss1=$(rss_kb)
cat "$TMP/wrk.out" | sed 's/^/#   /'
wrk_parse "$TMP/wrk.out"
if [ -z "$WRK_RPS" ]; then
  bad "wrk ran"
  finish
fi
errors=$((WRK_NON2XX + WRK_SOCKERR))
echo "LOAD rps=$WRK_RPS p50_ms=$WRK_P50_MS p99_ms=$WRK_P99_MS requests=$WRK_REQS errors=$errors conns=$CONNS secs=$SECS rss_kb_before=$rss0 rss_kb_after=$rss1"
[ "$WRK_NON2XX" = 0 ] && ok "every answer is 2xx ($WRK_REQS requests; $(grep '^statuses:' "$TMP/wrk.out"))" ||
  bad "$WRK_NON2XX answers were not 2xx ($(grep '^statuses:' "$TMP/wrk.out"))"
[ "$WRK_SOCKERR" = 0 ] && ok "no socket errors or timeouts" ||
  bad "socket errors: $(grep 'Socket errors' "$TMP/wrk.out")"
st1=$(srv_status "$J1")
st2=$(srv_status "$J2")
[ "$st1" = running ] && [ "$st2" = running ] && ok "both jobs kept training through the load" ||
  bad "the training jobs are $st1 and $st2 after the load"
code=$(curl -s -o /dev/null -w '%{http_code}' "$SRV_BASE/healthz")
[ "$code" = 200 ] && ok "/healthz is 200 after the load" || bad "/healthz is $code after the load"
srv_term && ok "the daemon stops cleanly on SIGTERM" || bad "the daemon stops cleanly on SIGTERM"
finish
