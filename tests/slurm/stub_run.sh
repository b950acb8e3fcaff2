#!/bin/sh
# stub_run.sh: a stand-in for `tdlab run SPEC --report URL --job ID --token-file F` with curl,
# for tests/e2e_slurm.sh when the tdlab under test has no `run --report` (it is built on another
# branch). It runs `$TDLAB_REAL run SPEC --out FILE` in the background, sends a heartbeat every
# second while it runs (stopping it when the answer says cancel_requested), then posts every
# point in batches of 2000 and the final status: the same protocol (PROTOCOL16.md) the real
# client speaks, without its buffering and retries.
# Usage (as the Slurm job script calls it): stub_run.sh run SPEC --report URL --job ID --token-file F
set -u
[ "${1:-}" = run ] || { echo "stub_run: expected 'run'" >&2; exit 2; }
SPEC="$2"
shift 2
URL="" JOB="" TOKF=""
while [ $# -gt 0 ]; do
  case "$1" in
  --report) URL="$2"; shift 2 ;;
  --job) JOB="$2"; shift 2 ;;
  --token-file) TOKF="$2"; shift 2 ;;
  *) shift ;;
  esac
done
TOKEN=$(cat "$TOKF")
OUT="${TMPDIR:-/tmp}/stub_run.$$.jsonl"
post() { # post PATH BODY -> prints the HTTP body
  curl -s --max-time 30 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data-binary "$2" "$URL/api/v1/jobs/$JOB/$1"
}
"$TDLAB_REAL" run "$SPEC" --out "$OUT" >/dev/null 2>&1 &
RUN=$!
while kill -0 "$RUN" 2>/dev/null; do
  hb=$(post heartbeat '{}')
  case "$hb" in *'"cancel_requested":true'*) kill "$RUN"; wait "$RUN"; rm -f "$OUT"; exit 0 ;; esac
  sleep 1
done
wait "$RUN"
rc=$?
grep '^{"key"' "$OUT" | split -l 2000 - "$OUT.part."
# The last line of --out is {"status", "summary", "error", "seconds"}: the finish body.
FIN=$(grep '^{"status"' "$OUT" | tail -1 | sed 's/,"seconds":[^}]*}$/}/')
for f in "$OUT".part.*; do
  [ -f "$f" ] || continue
  post points "{\"points\":[$(paste -sd, "$f")]}" >/dev/null
  rm -f "$f"
done
rm -f "$OUT"
if [ -n "$FIN" ]; then post finish "$FIN" >/dev/null
else post finish "{\"status\":\"failed\",\"error\":\"tdlab run exited with $rc\"}" >/dev/null; fi
exit 0
