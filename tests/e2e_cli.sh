#!/usr/bin/env bash
# e2e_cli.sh: the command line (tdlab submit|ls|show|watch|cancel) against the real daemon
# (called by tests/e2e.sh; its own daemon, with a lab token and 1 worker).
#
# Usage: tests/e2e_cli.sh path/to/tdlab
#
# Checks every verb, the --url/TDLAB_URL and --token/--token-file/TDLAB_TOKEN settings, and
# the errors: a spec that is not JSON or not there (exit 2, nothing sent), a spec the server
# refuses and an unknown id (exit 1 with the server's message and field), a write without the
# token (exit 1, 401), a server that is down (exit 3, one line). `watch` is run on a
# pseudo-terminal with script(1) when it is installed (the bar is redrawn in place).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init cli "$@"

TOKEN="cli-e2e-$$-0123456789"
printf '%s\n' "$TOKEN" >"$TMP/token"
chmod 600 "$TMP/token"
e2e_start --workers 1 --batch-ms 100 --token-file "$TMP/token"
ok "cli: the daemon starts ($BASE, with a lab token)"
export TDLAB_URL="$BASE" TDLAB_TOKEN="$TOKEN"

# run NAME args...: run tdlab with stdout to $TMP/out, stderr to $TMP/err; RC is its exit code.
run() {
  "$TDLAB" "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
  RC=$?
}
# server_msg PATH: the error message that curl gets for GET PATH (the reference for the CLI).
server_msg() {
  curl -s -H "Authorization: Bearer $TOKEN" "$BASE$1" | sed 's/.*"message":"\([^"]*\)".*/\1/'
}

FAST='{"kind":"linreg","name":"cli-fast","tags":["cli"],"params":{"data":{"name":"synthetic","n":100,"d":10},"steps":200,"seed":0}}'
SLOW='{"kind":"linreg","name":"cli-slow","tags":["cli-slow"],"params":{"data":{"name":"synthetic","n":2000,"d":300},"steps":1000000}}'
DIVERGE='{"kind":"linreg","name":"cli-diverge","params":{"data":{"name":"synthetic","n":100,"d":10},"lr":50,"steps":500}}'
printf '%s\n' "$FAST" >"$TMP/fast.json"
printf '%s\n' "$DIVERGE" >"$TMP/diverge.json"

# ---------------------------------------------------------------- submit

run submit "$TMP/fast.json"
ID1=$(cat "$TMP/out")
check "cli: submit FILE prints only the new job's id and exits 0" \
  bash -c "[ $RC = 0 ] && [[ '$ID1' =~ ^[0-9]+$ ]] && curl -s '$BASE/api/v1/jobs/$ID1' | grep -q '\"name\":\"cli-fast\"'"
"$TDLAB" submit - --wait <"$TMP/fast.json" >"$TMP/out" 2>"$TMP/err"
RC=$?
ID2=$(cat "$TMP/out")
check "cli: submit - --wait reads stdin, prints the id, follows the job and exits 0 when it succeeds" \
  bash -c "[ $RC = 0 ] && [[ '$ID2' =~ ^[0-9]+$ ]] && grep -q 'succeeded' '$TMP/err' &&
           curl -s '$BASE/api/v1/jobs/$ID2' | grep -q '\"status\":\"succeeded\"'"
check "cli: submit --wait shows the progress bar and the last metric values" \
  bash -c "grep -q '\[#*\] 100%  200/200' '$TMP/err' && grep -Eq '^  loss +[0-9.e-]+  \(step 200\)' '$TMP/err'"
run submit "$TMP/diverge.json" --wait
DID=$(cat "$TMP/out")
check "cli: submit --wait of a job that diverges exits non-zero with its status and error" \
  bash -c "[ $RC = 1 ] && grep -q \"^tdlab: job $DID diverged\" '$TMP/err'"

echo '{"kind": "linreg", "params": {' >"$TMP/bad.json"
run submit "$TMP/bad.json"
check "cli: a spec that is not JSON: exit 2 with the line and column, nothing sent" \
  bash -c "[ $RC = 2 ] && grep -q 'bad.json is not valid JSON (line 2' '$TMP/err' && [ ! -s '$TMP/out' ]"
echo '[1,2]' >"$TMP/array.json"
run submit "$TMP/array.json"
check "cli: a spec that is not an object: exit 2" bash -c "[ $RC = 2 ] && grep -q 'must hold a JSON object' '$TMP/err'"
run submit "$TMP/no-such-file.json"
check "cli: a spec file that does not exist: exit 2 naming it" \
  bash -c "[ $RC = 2 ] && grep -q 'cannot open .*no-such-file.json: No such file' '$TMP/err'"
echo '{"kind":"linreg","params":{"lr":-1}}' >"$TMP/refused.json"
run submit "$TMP/refused.json"
check "cli: a spec the server refuses: exit 1 with the server's message and field" \
  bash -c "[ $RC = 1 ] && grep -q 'params.lr' '$TMP/err' && grep -q '(field params.lr) \[HTTP 400 invalid_param\]' '$TMP/err' && [ \$(wc -l <'$TMP/err') = 1 ]"
TDLAB_TOKEN= run submit "$TMP/fast.json"
check "cli: submit without the token: exit 1 with the server's 401 message" \
  bash -c "[ $RC = 1 ] && grep -q 'Authorization: Bearer' '$TMP/err' && grep -q 'HTTP 401 unauthorized' '$TMP/err'"
TDLAB_TOKEN= run submit "$TMP/fast.json" --token-file "$TMP/token"
check "cli: --token-file supplies the token" bash -c "[ $RC = 0 ] && [[ \"\$(cat '$TMP/out')\" =~ ^[0-9]+$ ]]"
ID3=$(cat "$TMP/out")
wait_job "$ID1" 60 >/dev/null
wait_job "$ID3" 60 >/dev/null

# ---------------------------------------------------------------- ls

run ls
check "cli: ls prints the header and one row per job (4 jobs)" \
  bash -c "[ $RC = 0 ] && head -1 '$TMP/out' | grep -Eq '^ +ID  KIND +NAME +STATUS +PROGRESS +CREATED$' && [ \$(wc -l <'$TMP/out') = 5 ]"
check "cli: a row holds id, kind, name, status, progress and created time" \
  grep -Eq "^ +$ID1  linreg +cli-fast +succeeded +200/200 +[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$" "$TMP/out"
run ls --status diverged
check "cli: ls --status diverged lists only job $DID" \
  bash -c "[ $RC = 0 ] && [ \$(wc -l <'$TMP/out') = 2 ] && grep -Eq '^ +$DID  linreg +cli-diverge +diverged' '$TMP/out'"
run ls --tag cli --kind linreg --status succeeded --limit 2
check "cli: ls --tag --kind --status --limit 2: two rows, newest first, and a hint for the next page" \
  bash -c "[ $RC = 0 ] && [ \$(wc -l <'$TMP/out') = 3 ] && sed -n 2p '$TMP/out' | grep -Eq '^ +$ID3 ' && grep -q -- '--cursor' '$TMP/err'"
run ls --status nope
check "cli: ls --status nope: exit 1 with the server's message naming the field" \
  bash -c "[ $RC = 1 ] && grep -q 'status must be' '$TMP/err' && grep -q '(field status)' '$TMP/err'"
run ls --limit abc
check "cli: ls --limit abc: exit 2, nothing sent" bash -c "[ $RC = 2 ] && grep -q 'limit must be a positive integer' '$TMP/err'"
run ls --bogus 1
check "cli: an unknown option: exit 2" bash -c "[ $RC = 2 ] && grep -q 'unknown option --bogus' '$TMP/err'"
run submit "$TMP/nope.json" --bogus
check "cli: an unknown last option is unknown (not short of a value): exit 2" \
  bash -c "[ $RC = 2 ] && grep -q 'unknown option --bogus' '$TMP/err' && ! grep -q 'needs a value' '$TMP/err'"
run ls --kind
check "cli: a known option without its value: exit 2, needs a value" \
  bash -c "[ $RC = 2 ] && grep -q -- '--kind needs a value' '$TMP/err'"

# ---------------------------------------------------------------- show

run show "$ID1"
curl -s "$BASE/api/v1/jobs/$ID1" >"$TMP/job.json"
check "cli: show prints the job indented, the same JSON value as the API's" \
  bash -c "[ $RC = 0 ] && grep -q '^  \"status\": \"succeeded\",$' '$TMP/out' &&
           python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); sys.exit(a!=b)' '$TMP/out' '$TMP/job.json'"
want=$(server_msg /api/v1/jobs/999999)
run show 999999
check "cli: show of an unknown id: exit 1 with the server's message ('$want')" \
  bash -c "[ $RC = 1 ] && [ -n '$want' ] && grep -qF '$want' '$TMP/err' && grep -q 'HTTP 404 not_found' '$TMP/err'"
run show abc
check "cli: show abc: exit 2 (not an id)" bash -c "[ $RC = 2 ] && grep -q 'not a job id' '$TMP/err'"

# ---------------------------------------------------------------- watch and cancel

printf '%s\n' "$SLOW" >"$TMP/slow.json"
run submit "$TMP/slow.json"
RUNNING=$(cat "$TMP/out")
run submit "$TMP/slow.json"
QUEUED=$(cat "$TMP/out")
for _ in $(seq 1 100); do
  curl -s "$BASE/api/v1/jobs/$RUNNING" | grep -q '"status":"running"' && break
  sleep 0.1
done
run cancel "$QUEUED"
check "cli: cancel of a queued job: 'cancelled', exit 0" \
  bash -c "[ $RC = 0 ] && grep -qx 'job $QUEUED cancelled' '$TMP/out' && curl -s '$BASE/api/v1/jobs/$QUEUED' | grep -q '\"status\":\"cancelled\"'"
( sleep 2; "$TDLAB" cancel "$RUNNING" >"$TMP/cancel.out" 2>&1 ) &
canceller=$!
"$TDLAB" watch "$RUNNING" >"$TMP/watch.out" 2>"$TMP/watch.err"
RC=$?
wait "$canceller"
check "cli: cancel of a running job: 'cancel requested'" grep -q "job $RUNNING: cancel requested" "$TMP/cancel.out"
check "cli: watch (not a terminal) follows the job until it ends, exit 1 as it was cancelled" \
  bash -c "[ $RC = 1 ] && grep -q 'cli-slow: running' '$TMP/watch.out' && tail -n +2 '$TMP/watch.out' | grep -q 'cli-slow: cancelled' &&
           grep -q \"job $RUNNING cancelled: cancelled by request\" '$TMP/watch.err'"
check "cli: watch prints the last value of each metric key at the end" grep -Eq '^  loss +[0-9.e+-]+  \(step [0-9]+\)' "$TMP/watch.out"
run watch "$ID1"
check "cli: watch of a finished job that succeeded: one report, exit 0" \
  bash -c "[ $RC = 0 ] && grep -q 'cli-fast: succeeded' '$TMP/out'"
if command -v script >/dev/null; then
  script -qec "'$TDLAB' watch '$ID1'" /dev/null >"$TMP/tty.out" 2>&1
  check "cli: watch on a terminal draws the bar (100%) and exits 0" \
    bash -c "[ $? = 0 ] && grep -q '100%  200/200' '$TMP/tty.out'"
  printf '%s\n' "$SLOW" | "$TDLAB" submit - >"$TMP/out"
  TTYJ=$(cat "$TMP/out")
  ( sleep 2.5; "$TDLAB" cancel "$TTYJ" >/dev/null 2>&1 ) &
  canceller=$!
  script -qec "'$TDLAB' watch '$TTYJ'" /dev/null >"$TMP/tty2.out" 2>&1
  wait "$canceller"
  check "cli: watch on a terminal redraws in place (cursor up + clear) while the job runs" \
    bash -c "grep -q \$'\\033\\[[0-9]*A\\033\\[J' '$TMP/tty2.out' && grep -q 'cancelled' '$TMP/tty2.out'"
else
  echo "     (script(1) is not installed: the terminal drawing of watch is not checked)"
fi
run cancel "$ID1"
check "cli: cancel of a finished job: exit 1 with the server's 409 message" \
  bash -c "[ $RC = 1 ] && grep -q 'already finished' '$TMP/err' && grep -q 'HTTP 409 conflict' '$TMP/err'"
TDLAB_TOKEN= run cancel "$ID1"
check "cli: cancel without the token: exit 1 (401)" bash -c "[ $RC = 1 ] && grep -q 'HTTP 401' '$TMP/err'"
run cancel 999999
check "cli: cancel of an unknown id: exit 1 with 404" bash -c "[ $RC = 1 ] && grep -q 'HTTP 404 not_found' '$TMP/err'"

# ---------------------------------------------------------------- --url and a server that is down

TDLAB_URL=http://127.0.0.1:1 run show "$ID1" --url "$BASE/"
check "cli: --url wins over TDLAB_URL (and a trailing / is fine)" bash -c "[ $RC = 0 ] && grep -q '\"id\": $ID1' '$TMP/out'"
# a port that nothing listens on: bind one, note it, close it
DOWN=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
for verb in "ls" "show $ID1" "watch $ID1" "cancel $ID1" "submit $TMP/fast.json"; do
  # shellcheck disable=SC2086
  TDLAB_URL="http://127.0.0.1:$DOWN" run $verb
  check "cli: $verb with the server down: exit 3 and one clear line" \
    bash -c "[ $RC = 3 ] && [ \$(wc -l <'$TMP/err') = 1 ] && grep -q '^tdlab: cannot reach the tdlab server at http://127.0.0.1:$DOWN' '$TMP/err' && [ ! -s '$TMP/out' ]"
done
TDLAB_URL=ftp://x run ls
check "cli: a URL that is not http(s): exit 2" bash -c "[ $RC = 2 ] && grep -q 'must start with http' '$TMP/err'"
check "cli: the daemon is still alive" kill -0 "$PID"
finish
