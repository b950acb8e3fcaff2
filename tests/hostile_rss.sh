#!/usr/bin/env bash
# hostile_rss.sh: memory stays flat under hostile input. Sends 2,000 bad requests (warm-up:
# connection pools, malloc arenas and SQLite caches reach their steady size), reads the
# server's RSS, sends 10,000 more, reads it again. Checks every answer is a 4xx, the server
# is still healthy, and the RSS grew by less than RSS_SLACK_KB (default 2048 kB; a leak of
# even 200 bytes per request would add ~2 MB).
# The requests (curl --parallel, 16 at a time): malformed, truncated and deeply nested JSON,
# unknown kinds and fields, wrong types, absurd sizes, an oversize body, wrong content type
# and method, bad ids, bad query values, and static paths that try to climb out of web/.
#
# Usage: tests/hostile_rss.sh path/to/tdlab
# Prints "RSS before_kb=... after_kb=... growth_kb=..." and a final "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TDLAB="${1:-}"
if [ -z "$TDLAB" ] || [ ! -x "$TDLAB" ]; then
  echo "usage: tests/hostile_rss.sh path/to/tdlab" >&2
  echo "0 passed, 1 failed"
  exit 2
fi
TDLAB="$(cd "$(dirname "$TDLAB")" && pwd)/$(basename "$TDLAB")"
SLACK="${RSS_SLACK_KB:-2048}"
TMP="$(mktemp -d /tmp/tdlab-hostile.XXXXXX)"
# shellcheck source=srvlib.sh
. "$ROOT/tests/srvlib.sh"
cleanup() {
  srv_kill9
  if [ "$FAIL" -eq 0 ] && [ -z "${HOSTILE_KEEP:-}" ]; then rm -rf "$TMP"; else echo "(kept $TMP)"; fi
}
trap cleanup EXIT
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$SRV_PID/status" 2>/dev/null; }

if ! srv_start "$TMP/h.db" --workers 1 --max-body 65536 --log-level warn; then
  bad "the daemon starts"
  finish
fi
ok "the daemon starts ($SRV_BASE)"
J=$(srv_submit '{"kind":"linreg","params":{"steps":10}}')

# One curl config block per request kind (METHOD PATH CONTENT-TYPE BODY-FILE).
mkdir -p "$TMP/b"
printf '{"kind":"linreg","params":' >"$TMP/b/truncated"
printf '{"kind":' >"$TMP/b/truncated2"
printf 'not json at all' >"$TMP/b/garbage"
printf '\xff\xfe{"kind":"linreg"}' >"$TMP/b/badutf8"
printf '{"kind":"nope","params":{}}' >"$TMP/b/unknown_kind"
printf '{"kind":"linreg","params":{"lr":"fast"}}' >"$TMP/b/wrong_type"
printf '{"kind":"linreg","params":{"bogus":1}}' >"$TMP/b/unknown_field"
printf '{"kind":"train","params":{"model":{"hidden":[100000,100000,100000]}}}' >"$TMP/b/absurd"
printf '{"kind":"train","params":{"batch_size":-5}}' >"$TMP/b/negative"
printf '{"kind":"linreg","params":{"steps":1e400}}' >"$TMP/b/huge_number"
printf '{"kind":"linreg","kind":"linreg"}' >"$TMP/b/dup_key"
printf '[]' >"$TMP/b/array"
head -c 20000 /dev/zero | tr '\0' '[' >"$TMP/b/nested"
head -c 100000 /dev/zero | tr '\0' 'x' | sed 's/^/{"kind":"/; s/$/"}/' >"$TMP/b/oversize"
printf '{"kind":"linreg","tags":["%s"]}' "$(head -c 300 /dev/zero | tr '\0' 't')" >"$TMP/b/long_tag"
{
  first=1
  block() { # block METHOD PATH [CONTENT-TYPE BODYFILE]
    [ $first = 1 ] || echo next
    first=0
    printf 'url = "%s%s"\nrequest = "%s"\noutput = "/dev/null"\nwrite-out = "%%{http_code} %%{method} %%{url_effective} %%{errormsg}\\n"\npath-as-is\n' \
      "$SRV_BASE" "$2" "$1"
    if [ $# -ge 4 ]; then
      printf 'header = "Content-Type: %s"\ndata-binary = "@%s"\n' "$3" "$TMP/b/$4"
    fi
  }
  for f in truncated truncated2 garbage badutf8 unknown_kind wrong_type unknown_field absurd \
    negative huge_number dup_key array nested oversize long_tag; do
    block POST /api/v1/jobs application/json "$f"
  done
  block POST /api/v1/jobs text/plain unknown_kind
  block DELETE /api/v1/jobs
  block PUT "/api/v1/jobs/$J"
  block GET /api/v1/jobs/abc
  block GET /api/v1/jobs/0
  block GET /api/v1/jobs/99999999999
  block GET "/api/v1/jobs?limit=-1"
  block GET "/api/v1/jobs?status=bogus"
  block GET "/api/v1/jobs?cursor=xyz"
  block GET "/api/v1/jobs/$J/metrics?max_points=abc"
  block GET "/api/v1/jobs/$J/metrics?keys=a%2Cb%20c"
  block GET "/api/v1/jobs/$J/artifacts/..%2F..%2Fetc%2Fpasswd"
  block GET /../../etc/passwd
  block GET /%2e%2e/%2e%2e/etc/passwd
  block GET /.git/config
  block GET "/index.html%00.js"
  block GET /api/v2/nothing
  block POST "/api/v1/jobs/$J/cancel/extra"
} >"$TMP/one.cfg"
per=$(grep -c '^url' "$TMP/one.cfg")
# hostile N OUT: send N requests (cycling through the blocks).
hostile() {
  local reps=$((($1 + per - 1) / per)) r
  for r in $(seq 1 "$reps"); do
    [ "$r" -gt 1 ] && echo next
    cat "$TMP/one.cfg"
  done >"$TMP/run.cfg"
  curl -s -Z --parallel-max 16 --max-time 30 -K "$TMP/run.cfg" >"$2" 2>/dev/null
}
hostile 2000 "$TMP/warm.out"
sleep 1
rss0=$(rss_kb)
hostile 10000 "$TMP/main.out"
sleep 1
rss1=$(rss_kb)
growth=$((rss1 - rss0))
n=$(cat "$TMP/warm.out" "$TMP/main.out" | grep -c .)
n4xx=$(cat "$TMP/warm.out" "$TMP/main.out" | grep -c '^4[0-9][0-9] ')
echo "# $per kinds of bad request; $n sent"
echo "RSS before_kb=$rss0 after_kb=$rss1 growth_kb=$growth (after a warm-up of 2000, then 10000 bad requests)"
[ "$n4xx" = "$n" ] && ok "all $n bad requests got a 4xx" ||
  bad "$((n - n4xx)) of $n bad requests got something else: $(cat "$TMP/warm.out" "$TMP/main.out" | grep -v '^4[0-9][0-9] ' | sort | uniq -c | head -5 | tr '\n' ';')"
[ "$growth" -lt "$SLACK" ] && ok "RSS stays flat: +$growth kB over 10000 bad requests (limit $SLACK kB)" ||
  bad "RSS grew by $growth kB over 10000 bad requests (limit $SLACK kB)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$SRV_BASE/healthz")
[ "$code" = 200 ] && ok "/healthz is 200 afterwards" || bad "/healthz is $code afterwards"
[ "$(srv_status "$J")" = succeeded ] && ok "the job submitted before the attack succeeded" ||
  bad "the job is $(srv_status "$J")"
srv_term && ok "the daemon stops cleanly on SIGTERM" || bad "the daemon stops cleanly on SIGTERM"
finish
