#!/usr/bin/env bash
# rest.sh: REST throughput benchmark. GET /api/v1/jobs/{id} on `tdlab serve` (2 workers busy
# training) against a bare libmicrohttpd handler (bench/bare_mhd.c) that serves the same bytes,
# both measured with wrk in the same run, while the same training load runs, alternating
# tdlab, bare, bare, tdlab, ... so that a drift in machine load hits both sides alike.
# tdlab runs with its defaults (access log at info, job cache on, workers at nice 5);
# REST_SERVE_FLAGS adds serve flags (e.g. "--job-cache 0 --worker-nice 0") for comparisons.
#
# Usage: bench/rest.sh [BUILD_DIR]        (default build; needs BUILD/tdlab, BUILD/bench/bare_mhd, wrk)
# Environment: REST_SECS (seconds per wrk run, 10), REST_CONNS (50), REST_ROUNDS (2: each
# side runs 2 x REST_SECS), REST_WRK_THREADS (2), REST_TARGET (running | finished: GET a job
# that is running, whose record changes with every metric batch, or one that has finished).
# Prints (rps = requests per second over all rounds; p99 = the worst round's p99):
#   BENCH rest_get_job tdlab_rps=<r> peer=bare_mhd peer_rps=<r> ratio=<tdlab/peer> p99_ms=<t> peer_p99_ms=<t> ...
# and one "round" line per wrk run on stderr. Exits 1 when a side fails or sees errors.
# On a shared machine the request rate of both sides swings with the other load; the line
# also gives each server's CPU time per request (HTTP threads only: tdlab's worker threads,
# named td-worker-N, are left out) and cpu_ratio = peer_cpu_us / tdlab_cpu_us, which is far
# less sensitive to that noise: the share of the per-request cost that libmicrohttpd and the
# kernel account for.
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

# shellcheck disable=SC2086
srv_start "$TMP/bench.db" --workers 2 ${REST_SERVE_FLAGS:-} || { echo "rest.sh: tdlab serve did not start" >&2; exit 1; }
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

# cpu_ticks PID: user+system clock ticks of PID's threads, except those named td-worker-*.
cpu_ticks() {
  local t sum=0 comm st
  for t in /proc/"$1"/task/*; do
    comm=$(cat "$t/comm" 2>/dev/null) || continue
    case "$comm" in td-worker-*) continue ;; esac
    st=$(cat "$t/stat" 2>/dev/null) || continue
    st=${st##*) }
    sum=$((sum + $(awk '{print $12 + $13}' <<<"$st")))
  done
  echo "$sum"
}
HZ=$(getconf CLK_TCK)
t_reqs=0 t_secs=0 t_p99=0 t_err=0 p_reqs=0 p_secs=0 p_p99=0 p_err=0 fail=0 t_cpu=0 p_cpu=0
# run SIDE URL: one wrk run; accumulates into t_* or p_*.
run() {
  local side="$1" url="$2" out="$TMP/wrk.$1.$RANDOM" pid c0 c1
  pid=$SRV_PID
  [ "$side" = bare ] && pid=$BARE_PID
  c0=$(cpu_ticks "$pid")
  wrk -t"$WTHREADS" -c"$CONNS" -d"${SECS}s" --latency "$url" >"$out" 2>&1
  c1=$(cpu_ticks "$pid")
  wrk_parse "$out"
  if [ -z "$WRK_RPS" ]; then
    echo "rest.sh: wrk failed against $side:" >&2
    cat "$out" >&2
    fail=1
    return
  fi
  local err=$((WRK_NON2XX + WRK_SOCKERR))
  local cpu_us
  cpu_us=$(awk -v c=$((c1 - c0)) -v hz="$HZ" -v r="$WRK_REQS" 'BEGIN { printf "%.1f", c / hz * 1e6 / r }')
  echo "round side=$side rps=$WRK_RPS p50_ms=$WRK_P50_MS p99_ms=$WRK_P99_MS cpu_us_per_req=$cpu_us errors=$err" >&2
  if [ "$side" = tdlab ]; then
    t_cpu=$((t_cpu + c1 - c0))
    t_reqs=$(awk -v a="$t_reqs" -v r="$WRK_RPS" -v s="$SECS" 'BEGIN {print a + r * s}')
    t_secs=$((t_secs + SECS))
    t_p99=$(awk -v a="$t_p99" -v b="$WRK_P99_MS" 'BEGIN {print (b > a ? b : a)}')
    t_err=$((t_err + err))
  else
    p_cpu=$((p_cpu + c1 - c0))
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
  -v pp="$p_p99" -v te="$t_err" -v pe="$p_err" -v c="$CONNS" -v tg="$TARGET" -v st="$st" \
  -v tc="$t_cpu" -v pc="$p_cpu" -v hz="$HZ" 'BEGIN {
  t = tr / ts; p = pr / ps; tu = tc / hz * 1e6 / tr; pu = pc / hz * 1e6 / pr;
  printf "BENCH rest_get_job tdlab_rps=%.0f peer=bare_mhd peer_rps=%.0f ratio=%.3f p99_ms=%.2f peer_p99_ms=%.2f tdlab_cpu_us_per_req=%.1f peer_cpu_us_per_req=%.1f cpu_ratio=%.3f conns=%d target=%s errors=%d peer_errors=%d load_job=%s\n", t, p, t / p, tp, pp, tu, pu, (tu > 0 ? pu / tu : 0), c, tg, te, pe, st }'
[ "$t_err" = 0 ] && [ "$p_err" = 0 ]
