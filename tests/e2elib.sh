# e2elib.sh: the preamble shared by the end-to-end scripts tests/e2e_<topic>.sh (each runs its
# own daemon; tests/e2e.sh calls them). It builds on tests/srvlib.sh (ok, bad, finish, srv_*).
#
# Use, at the top of a script (after `set -uo pipefail`):
#   ROOT="$(cd "$(dirname "$0")/.." && pwd)"
#   . "$ROOT/tests/e2elib.sh"
#   e2e_init TOPIC "$@"                  # argument check, TDLAB made absolute, TMP, cleanup trap
#   e2e_start --workers 2 --batch-ms 100 # the daemon with the script's own flags; PID, BASE
#   ok "TOPIC: the daemon starts ($BASE, ...)"
#   ... checks (check, req, post_json, expect_error, ...) ...
#   finish
#
# On exit the daemon gets SIGTERM (kill -9 after 10 s), and TMP is removed unless a check
# failed or E2E_KEEP is set.

# shellcheck source=tests/srvlib.sh
. "$ROOT/tests/srvlib.sh"

PID=""
BASE=""

# e2e_init TOPIC [path/to/tdlab]: exit 2 with a usage line (and "0 passed, 1 failed") unless the
# binary is executable; make TDLAB absolute; create TMP=/tmp/tdlab-e2e-TOPIC.XXXXXX (with an
# empty TOPIC /tmp/tdlab-e2e.XXXXXX); set the cleanup trap.
e2e_init() {
  local topic="$1"
  TDLAB="${2:-}"
  if [ -z "$TDLAB" ] || [ ! -x "$TDLAB" ]; then
    echo "usage: tests/$(basename "$0") path/to/tdlab" >&2
    echo "0 passed, 1 failed"
    exit 2
  fi
  TDLAB="$(cd "$(dirname "$TDLAB")" && pwd)/$(basename "$TDLAB")"
  TMP="$(mktemp -d "/tmp/tdlab-e2e${topic:+-$topic}.XXXXXX")"
  trap e2e_cleanup EXIT
}

e2e_cleanup() {
  if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
    kill -TERM "$SRV_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SRV_PID" 2>/dev/null
    wait "$SRV_PID" 2>/dev/null
  fi
  if [ "$FAIL" -eq 0 ] && [ -z "${E2E_KEEP:-}" ]; then rm -rf "$TMP"; else echo "(logs kept in $TMP)"; fi
}

# e2e_start [serve flags...]: start the daemon (srv_start) on $TMP/tdlab.db with these flags;
# set PID and BASE (= SRV_PID, SRV_BASE). When it does not start: one failed check
# "the daemon starts" and finish.
e2e_start() {
  if ! srv_start "$TMP/tdlab.db" "$@"; then
    bad "the daemon starts"
    finish
  fi
  PID="$SRV_PID"
  BASE="$SRV_BASE"
}

check() { # check NAME command...: one check, passed when the command succeeds
  local name="$1"
  shift
  if "$@"; then ok "$name"; else bad "$name"; fi
}

# req METHOD PATH [curl args...]: sets CODE (000 when curl failed), writes the body to
# $TMP/body and the headers to $TMP/hdr. curl gives up after REQ_MAX_TIME seconds (60).
req() {
  local method="$1" path="$2"
  shift 2
  CODE=$(curl -s --path-as-is -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' -X "$method" \
    --max-time "${REQ_MAX_TIME:-60}" "$@" "$BASE$path" 2>/dev/null)
  [ -n "$CODE" ] || CODE=000
}
post_json() { req POST "$1" -H 'Content-Type: application/json' --data-binary "$2"; }
# jstr / jnum FIELD FILE: the first "FIELD":"string" / "FIELD":number in a file of compact JSON.
jstr() { grep -o "\"$1\":\"[^\"]*\"" "$2" | head -1 | sed 's/^"[^"]*":"\(.*\)"$/\1/'; }
jnum() { grep -o "\"$1\":-\{0,1\}[0-9][0-9.eE+-]*" "$2" | head -1 | sed 's/^"[^"]*"://'; }
# fitval NAME FILE: the "value" of fit parameter NAME ("NAME":{"value":X,...}).
fitval() { grep -o "\"$1\":{\"value\":-\{0,1\}[0-9][0-9.eE+-]*" "$2" | head -1 | sed 's/.*"value"://'; }
# within X LO HI: LO <= X <= HI (floating point, via awk).
within() { [ -n "$1" ] && awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN{exit !(x >= lo && x <= hi)}'; }
export -f within fitval jstr jnum
is_json_error() { grep -q '^{"error":{"code":"[a-z_]*","message":"' "$TMP/body"; }
# expect_error NAME STATUS FIELD|- METHOD PATH [curl args...]: the answer is STATUS with the JSON
# error envelope, naming FIELD (any field with -).
expect_error() {
  local name="$1" want="$2" field="$3" method="$4" path="$5"
  shift 5
  req "$method" "$path" "$@"
  local got_field
  got_field=$(jstr field "$TMP/body")
  if [ "$CODE" = "$want" ] && is_json_error && { [ "$field" = - ] || [ "$got_field" = "$field" ]; }; then
    ok "bad request: $name -> $CODE $(jstr code "$TMP/body")${got_field:+ field=$got_field}"
  else
    bad "bad request: $name: got $CODE, wanted $want (field $field): $(head -c 300 "$TMP/body")"
  fi
}

# wait_job ID SECONDS: poll GET /api/v1/jobs/ID (into $TMP/job_ID) until the job is finished
# (succeeded, failed, diverged or cancelled) or SECONDS have passed; prints its final status, or
# "timeout". Returns 0 when it succeeded.
wait_job() {
  local id="$1" deadline=$((SECONDS + $2)) st=""
  while [ $SECONDS -le $deadline ]; do
    curl -s --max-time 30 -o "$TMP/job_$id" "$BASE/api/v1/jobs/$id" 2>/dev/null
    st=$(jstr status "$TMP/job_$id")
    case "$st" in succeeded | failed | diverged | cancelled) echo "$st"; [ "$st" = succeeded ]; return ;; esac
    sleep 0.2
  done
  echo "timeout"
  return 1
}
