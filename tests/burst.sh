#!/usr/bin/env bash
# burst.sh: a burst of 10,000 job submissions against a server with a queue cap
# (--max-queued), 32 at a time (curl --parallel, keep-alive connections), while 2 workers
# drain the queue. Checks:
#   - every submission is answered 201 (with a Location) or 503 (with Retry-After): no other
#     status, no connection error;
#   - both happen (the cap is reached, and jobs are accepted);
#   - a 503 body is the JSON error queue_full;
#   - afterwards GET /api/v1/jobs (paged) lists exactly the 201'd ids: none lost, none extra;
#   - every accepted job runs to succeeded (nothing accepted is dropped).
#
# Usage: tests/burst.sh path/to/tdlab
# Environment: BURST_N (10000), BURST_PARALLEL (32), BURST_MAX_QUEUED (500), BURST_KEEP=1.
# Prints one line per check and a final "N passed, M failed"; exits non-zero on a failure.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TDLAB="${1:-}"
if [ -z "$TDLAB" ] || [ ! -x "$TDLAB" ]; then
  echo "usage: tests/burst.sh path/to/tdlab" >&2
  echo "0 passed, 1 failed"
  exit 2
fi
TDLAB="$(cd "$(dirname "$TDLAB")" && pwd)/$(basename "$TDLAB")"
N="${BURST_N:-10000}"
PAR="${BURST_PARALLEL:-32}"
MAXQ="${BURST_MAX_QUEUED:-500}"
TMP="$(mktemp -d /tmp/tdlab-burst.XXXXXX)"
# shellcheck source=srvlib.sh
. "$ROOT/tests/srvlib.sh"
cleanup() {
  srv_kill9
  if [ "$FAIL" -eq 0 ] && [ -z "${BURST_KEEP:-}" ]; then rm -rf "$TMP"; else echo "(kept $TMP)"; fi
}
trap cleanup EXIT

if ! srv_start "$TMP/burst.db" --workers 2 --max-queued "$MAXQ" --log-level warn; then
  bad "the daemon starts"
  finish
fi
ok "the daemon starts ($SRV_BASE, --max-queued $MAXQ, 2 workers)"

# A tiny job (a few milliseconds), so that the workers drain the queue during the burst.
JOB='{\"kind\":\"linreg\",\"name\":\"burst\",\"params\":{\"data\":{\"name\":\"synthetic\",\"n\":20,\"d\":5},\"steps\":2}}'
for i in $(seq 1 "$N"); do
  [ "$i" -gt 1 ] && echo next
  printf 'url = "%s/api/v1/jobs"\n' "$SRV_BASE"
  printf 'data-binary = "%s"\n' "$JOB"
  printf 'header = "Content-Type: application/json"\n'
  printf 'output = "%s/r/%s"\n' "$TMP" "$i"
  printf 'write-out = "%%{http_code} %%{filename_effective} %%header{location} %%header{retry-after}\\n"\n'
done >"$TMP/curl.cfg"
mkdir -p "$TMP/r"

t0=$(date +%s.%N)
curl -s -Z --parallel-max "$PAR" --max-time 60 -K "$TMP/curl.cfg" >"$TMP/out" 2>/dev/null
t1=$(date +%s.%N)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
n_all=$(grep -c . "$TMP/out")
# "201 FILE /api/v1/jobs/ID " or "503 FILE  SECONDS"
R201='^201 [^ ]* /api/v1/jobs/[0-9][0-9]* *$'
R503='^503 [^ ]*  *[0-9][0-9]*$'
n201=$(grep -c "$R201" "$TMP/out")
n503=$(grep -c "$R503" "$TMP/out")
other=$((n_all - n201 - n503))
echo "# $N submissions in $secs s: $n201 accepted (201), $n503 refused (503), $other other"
[ "$n_all" = "$N" ] && ok "all $N submissions were answered" || bad "$n_all of $N submissions answered"
[ "$other" = 0 ] && ok "every answer is 201 with Location or 503 with Retry-After" ||
  bad "$other answers are neither: $(grep -v "$R201" "$TMP/out" | grep -v "$R503" | cut -d' ' -f1,3- | sort | uniq -c | head -5 | tr '\n' ';')"
[ "$n201" -gt 0 ] && [ "$n503" -gt 0 ] && ok "the cap was reached (both 201 and 503 happened)" ||
  bad "wanted both 201 and 503 (got $n201 and $n503); raise BURST_N or lower BURST_MAX_QUEUED"
grep "$R201" "$TMP/out" | awk '{print $3}' | grep -o '[0-9]*$' | sort -n >"$TMP/accepted"
dupl=$(uniq -d "$TMP/accepted" | wc -l)
[ "$dupl" = 0 ] && ok "no job id was handed out twice" || bad "$dupl ids were returned twice"

# Every 503 body is the JSON error queue_full; every 201 body is the job with the Location's id.
# (one grep and one awk over all the files: a process per file would take longer than the burst)
grep "$R503" "$TMP/out" | awk '{print $2}' >"$TMP/files503"
bad503=0
[ -s "$TMP/files503" ] &&
  bad503=$(xargs grep -L '^{"error":{"code":"queue_full","message":"' <"$TMP/files503" | wc -l)
[ "$bad503" = 0 ] && ok "every 503 body is a JSON queue_full error ($n503)" ||
  bad "$bad503 of the 503 bodies are not a JSON queue_full error"
grep "$R201" "$TMP/out" | awk '{ id = $3; sub(/.*\//, "", id); print $2, id }' >"$TMP/pairs201"
bad201=$(awk 'NR == FNR { want[$1] = $2; next }
  FNR == 1 { if (index($0, "{\"id\":" want[FILENAME] ",\"kind\":\"linreg\"") != 1) bad++ }
  END { print bad + 0 }' "$TMP/pairs201" $(awk '{print $1}' "$TMP/pairs201"))
[ "$bad201" = 0 ] && ok "every 201 body is the new job, with the id of its Location" ||
  bad "$bad201 of the 201 bodies do not match their Location"

# Every accepted id is listed, and nothing else (paging through GET /api/v1/jobs?name...).
: >"$TMP/listed"
cursor=""
for _ in $(seq 1 1000); do
  curl -s "$SRV_BASE/api/v1/jobs?limit=1000${cursor:+&cursor=$cursor}" >"$TMP/page"
  grep -o '{"id":[0-9]*,"kind":"linreg","name":"burst"' "$TMP/page" | grep -o '"id":[0-9]*' |
    cut -d: -f2 >>"$TMP/listed"
  cursor=$(grep -o '"next_cursor":"[0-9]*"' "$TMP/page" | grep -o '[0-9][0-9]*')
  [ -n "$cursor" ] || break
done
sort -n -o "$TMP/listed" "$TMP/listed"
missing=$(comm -23 <(sort "$TMP/accepted") <(sort "$TMP/listed") | wc -l)
extra=$(comm -13 <(sort "$TMP/accepted") <(sort "$TMP/listed") | wc -l)
[ "$missing" = 0 ] && ok "every accepted job is listed by GET /api/v1/jobs ($n201)" ||
  bad "$missing accepted jobs are missing from the list"
[ "$extra" = 0 ] && ok "no refused submission created a job (listed $(wc -l <"$TMP/listed") = accepted $n201)" ||
  bad "$extra listed jobs were never acknowledged with a 201"

# Nothing accepted is dropped: every burst job runs to succeeded.
deadline=$((SECONDS + 180))
while [ $SECONDS -lt $deadline ]; do
  left=$(curl -s "$SRV_BASE/healthz" | grep -o '"queue_depth":[0-9]*' | cut -d: -f2)
  [ "$left" = 0 ] && break
  sleep 0.5
done
sleep 0.5
counts=$(sqlite3 "$TMP/burst.db" "SELECT status || ':' || count(*) FROM jobs WHERE name='burst' GROUP BY status" 2>/dev/null | tr '\n' ' ')
nsucc=$(sqlite3 "$TMP/burst.db" "SELECT count(*) FROM jobs WHERE name='burst' AND status='succeeded'" 2>/dev/null)
[ "$nsucc" = "$n201" ] && ok "all $n201 accepted jobs ran to succeeded" ||
  bad "accepted jobs by status: $counts(wanted succeeded:$n201)"
srv_term && ok "the daemon stops cleanly on SIGTERM" || bad "the daemon stops cleanly on SIGTERM"
finish
