#!/usr/bin/env bash
# compare.sh: issue 17's two speed claims, in one run.
#  1. bench_metrics_read: a downsampled read (max_points=1000) of a 10k- and a 10M-point series
#     against the full scan it replaced, and the bytes per stored point with and without the
#     pyramid (bench/bench_metrics_read.c).
#  2. The comparison page with 20 runs of 100,000 points each (bench_metrics_read
#     --make-compare-db), served by the real daemon and opened in headless Chromium
#     (tests/browser/check.js --time-compare): milliseconds from the start of the page's script
#     to the last chart drawn, and from navigation to drawn.
# Usage: bench/compare.sh BUILD_DIR [--big N]
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
BUILD="${1:-build}"
shift || true
TMP=$(mktemp -d /tmp/tdlab-bench-compare.XXXXXX)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
status=0
"$BUILD/bench/bench_metrics_read" --migrations "$here/../migrations" "$@" || status=1
"$BUILD/bench/bench_metrics_read" --migrations "$here/../migrations" --make-compare-db "$TMP/cmp.db" >/dev/null || exit 1
PORT=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
"$BUILD/tdlab" serve --host 127.0.0.1 --port "$PORT" --db "$TMP/cmp.db" --web "$here/../web" \
  --migrations "$here/../migrations" --workers 1 2>"$TMP/server.log" &
PID=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
IDS=$(seq -s, 1 20)
URL="http://127.0.0.1:$PORT/compare.html?jobs=$IDS&keys=train_loss,test_acc"
for i in 1 2 3; do
  node "$here/../tests/browser/check.js" --out "$TMP/shots" --time-compare "$URL" --runs 20 | grep '^BENCH' || status=1
done
exit $status
