#!/usr/bin/env bash
# e2e.sh: end-to-end test of `tdlab serve` with curl against the real daemon.
#
# Usage: tests/e2e.sh path/to/tdlab
#
# Starts the daemon on a free loopback port (--port 0; the port is read from its "listening"
# log line) with a temporary database and the repo's web/ and migrations/, then checks:
#   - health, the catalogue, the dashboard and Prometheus endpoints;
#   - a `train` job on a Fashion-MNIST subset: submit, poll to succeeded, the job record,
#     metrics as JSON (full and downsampled) and CSV, the list endpoint, artifacts;
#   - more than 30 bad requests, each answered 4xx with a JSON error body, and /healthz after;
#   - cancelling a queued job (at once) and a running job (at its next step);
#   - kill -9 during a job, restart: the job is re-queued with attempt+1 and finishes, every
#     metric line committed before the kill is still there, and no (key, step) appears twice;
#   - SIGTERM during a job: exit 0, the job is back in the queue with its attempt unchanged,
#     PRAGMA integrity_check is ok;
#   - the other verbs: `tdlab run`, `tdlab kinds`, `tdlab migrate`;
#   - sweeps and fits: tests/e2e_sweeps.sh (its own daemon);
#   - checkpoints, init_from/fork, tdlab run --artifacts: tests/e2e_checkpoints.sh (its own);
#   - raw-socket protocol edges: tests/protocol.sh (its own daemon; needs python3);
#   - kernels (chapter 6): tests/e2e_kernels.sh; chapter 8 kinds (implicit regularization,
#     Bayesian inference): tests/e2e_implicit.sh; momentum and games (chapters 9, 10):
#     tests/e2e_dynamics.sh; bilevel (chapters 11, 12): tests/e2e_bilevel.sh (each its own);
#   - multi-job metrics, gzip, search, PATCH/DELETE: tests/e2e_compare.sh (its own);
#   - backup while ingesting, schema upgrades, disk full: tests/e2e_ops.sh (its own daemons);
#   - the OpenAPI document checked by ajv against real responses: tests/e2e_openapi.sh (needs
#     node and npm); the command line tdlab submit/ls/show/watch/cancel: tests/e2e_cli.sh.
#   - the Slurm executor on a private single-node cluster: tests/e2e_slurm.sh (skips with one line).
# Needs bash, curl, coreutils, grep, sed, awk and python3 (sqlite3 optional).
# Prints one line per check and a final "N passed, M failed"; exits non-zero on a failure.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init "" "$@"
DB="$TMP/tdlab.db"
REQ_MAX_TIME=30

# ---------------------------------------------------------------- helpers

# start_server [extra serve flags...]: start the daemon on $DB (srv_start; its log is $SRV_LOG),
# wait for its port, set PID and BASE.
start_server() {
  srv_start "$DB" --workers 1 --batch-ms 100 "$@" || return 1
  PID="$SRV_PID"
  BASE="$SRV_BASE"
}

# Status of job $1 (into $TMP/job).
job_status() {
  curl -s --max-time 10 -o "$TMP/job" "$BASE/api/v1/jobs/$1" 2>/dev/null
  jstr status "$TMP/job"
}
# wait_status ID WANT SECONDS: poll until the job's status is WANT; fails early on another
# final status.
wait_status() {
  local id="$1" want="$2" secs="$3" st=""
  local deadline=$((SECONDS + secs))
  while [ $SECONDS -le $deadline ]; do
    st=$(job_status "$id")
    [ "$st" = "$want" ] && return 0
    case "$st" in succeeded | failed | diverged | cancelled) [ "$st" != "$want" ] && break ;; esac
    sleep 0.2
  done
  echo "     job $id is '$st', wanted '$want': $(head -c 600 "$TMP/job")"
  return 1
}
# wait_progress ID N SECONDS: poll until the job is running with progress.done >= N.
wait_progress() {
  local id="$1" n="$2" secs="$3"
  local deadline=$((SECONDS + secs))
  while [ $SECONDS -le $deadline ]; do
    job_status "$id" >/dev/null
    local d
    d=$(jnum done "$TMP/job")
    [ "$(jstr status "$TMP/job")" = running ] && [ -n "$d" ] && [ "$d" -ge "$n" ] && return 0
    sleep 0.1
  done
  echo "     job $id did not reach progress $n: $(head -c 400 "$TMP/job")"
  return 1
}
bad_job() { # bad_job NAME JSON [STATUS=400]
  expect_error "$1" "${3:-400}" - POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "$2"
}

# A small, fast Fashion-MNIST job (the first examples in file order).
SMALL='{"kind":"train","name":"e2e-small","tags":["e2e"],"params":{"data":{"name":"fashion-mnist","n_train":2000,"n_test":500},"model":{"hidden":[64],"activation":"relu"},"loss":"cross_entropy","optimizer":{"name":"sgd","lr":0.05,"momentum":0.9},"batch_size":64,"epochs":2,"seed":0}}'
# A job that runs for many seconds (it is cancelled or interrupted, never awaited to the end).
LONG='{"kind":"train","name":"e2e-long","params":{"data":{"name":"fashion-mnist","n_train":20000,"n_test":500},"model":{"hidden":[256,256]},"batch_size":32,"epochs":200,"eval_every":1000000,"seed":1}}'
# A job of a few seconds, for the kill -9 test (1500 steps).
MID='{"kind":"train","name":"e2e-restart","params":{"data":{"name":"fashion-mnist","n_train":4800,"n_test":500},"model":{"hidden":[256]},"batch_size":32,"epochs":10,"eval_every":300,"seed":2}}'

# ---------------------------------------------------------------- start

if ! start_server; then
  bad "the daemon starts and prints its port"
  finish
fi
ok "the daemon starts on a free port ($BASE)"

req GET /healthz
check "GET /healthz is 200 with status ok, queue depth and workers" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"status\":\"ok\"' '$TMP/body' && grep -q '\"queue_depth\":' '$TMP/body' && grep -q '\"workers\":1' '$TMP/body'"

req GET /api/v1/kinds
check "GET /api/v1/kinds lists train and linreg with their schemas" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"name\":\"train\"' '$TMP/body' && grep -q '\"name\":\"linreg\"' '$TMP/body' && grep -q '\"path\":\"optimizer.lr\"' '$TMP/body'"

if [ -f "$ROOT/web/index.html" ]; then
  req GET /
  check "GET / serves the dashboard as text/html with an ETag" \
    bash -c "[ '$CODE' = 200 ] && grep -qi '^content-type: text/html' '$TMP/hdr' && grep -qi '^etag:' '$TMP/hdr'"
  etag=$(grep -i '^etag:' "$TMP/hdr" | sed 's/^[^:]*: *//' | tr -d '\r')
  req GET / -H "If-None-Match: $etag"
  check "a matching If-None-Match gets 304" [ "$CODE" = 304 ]
  js=$(cd "$ROOT/web" && ls js/*.js 2>/dev/null | head -1)
  if [ -n "$js" ]; then
    req GET "/$js"
    check "GET /$js is text/javascript" bash -c "[ '$CODE' = 200 ] && grep -qi '^content-type: text/javascript' '$TMP/hdr'"
  fi
fi

# ---------------------------------------------------------------- a training job

post_json /api/v1/jobs "$SMALL"
ID=$(jnum id "$TMP/body")
check "POST /api/v1/jobs answers 201 with the job and a Location header" \
  bash -c "[ '$CODE' = 201 ] && [ -n '$ID' ] && grep -qi '^location: /api/v1/jobs/$ID' '$TMP/hdr'"
check "the stored params have the defaults filled in" \
  bash -c "grep -q '\"beta1\":0.9' '$TMP/body' && grep -q '\"init_scale\":' '$TMP/body'"
check "train job $ID reaches succeeded" wait_status "$ID" succeeded 180
cp "$TMP/job" "$TMP/job_small"
check "the job record has every field (RFC 3339 UTC times, progress, summary, attempt 1)" \
  bash -c "grep -Eq '\"created_at\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z\"' '$TMP/job_small' &&
           grep -Eq '\"finished_at\":\"[0-9]{4}-' '$TMP/job_small' && grep -q '\"progress\":{\"done\":' '$TMP/job_small' &&
           grep -q '\"attempt\":1,' '$TMP/job_small' && grep -q '\"summary\":{' '$TMP/job_small' &&
           grep -q '\"test_acc\":' '$TMP/job_small' && grep -q '\"name\":\"e2e-small\"' '$TMP/job_small' &&
           grep -q '\"tags\":\[\"e2e\"\]' '$TMP/job_small'"
STEPS=$(sed 's/.*"summary"://' "$TMP/job_small" | grep -o '"steps":[0-9]*' | head -1 | sed 's/.*://')
[ -n "$STEPS" ] || STEPS=$(jnum done "$TMP/job_small")

req GET "/api/v1/jobs/$ID/metrics"
check "GET metrics is columnar JSON with train_loss, test_acc and grad_norm" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"metrics\":{' '$TMP/body' && grep -q '\"train_loss\":{\"step\":\[[0-9]' '$TMP/body' && grep -q '\"test_acc\":{\"step\":\[' '$TMP/body' && grep -q '\"grad_norm\":{' '$TMP/body'"
curl -s --max-time 10 -o "$TMP/small.csv" "$BASE/api/v1/jobs/$ID/metrics.csv"
want_first=$(grep '^train_loss,' "$TMP/small.csv" | head -1 | cut -d, -f2)
want_last=$(grep '^train_loss,' "$TMP/small.csv" | tail -1 | cut -d, -f2)
req GET "/api/v1/jobs/$ID/metrics?keys=train_loss&max_points=20"
n_steps=$(sed 's/.*"step":\[\([^]]*\)\].*/\1/' "$TMP/body" | tr ',' '\n' | grep -c .)
first=$(sed 's/.*"step":\[\([^],]*\).*/\1/' "$TMP/body")
last=$(sed 's/.*"step":\[\([^]]*\)\].*/\1/' "$TMP/body" | tr ',' '\n' | tail -1)
check "max_points=20 downsamples train_loss to $n_steps <= 20 points keeping the first ($first) and last ($last) step" \
  bash -c "[ '$CODE' = 200 ] && [ '$n_steps' -le 20 ] && [ '$n_steps' -ge 2 ] && [ '$first' = '$want_first' ] && [ '$last' = '$want_last' ] && ! grep -q '\"test_acc\"' '$TMP/body'"
req GET "/api/v1/jobs/$ID/metrics?keys=train_loss&since_step=10"
check "since_step=10 starts at step 10" bash -c "[ '$CODE' = 200 ] && grep -q '\"step\":\[10,' '$TMP/body'"

req GET "/api/v1/jobs/$ID/metrics.csv"
cp "$TMP/body" "$TMP/small.csv"
n_loss=$(grep -c '^train_loss,' "$TMP/small.csv")
dups=$(tail -n +2 "$TMP/small.csv" | cut -d, -f1,2 | sort | uniq -d | wc -l)
check "GET metrics.csv is text/csv key,step,value with one train_loss row per step ($n_loss, steps $STEPS)" \
  bash -c "[ '$CODE' = 200 ] && grep -qi '^content-type: text/csv' '$TMP/hdr' && [ \"\$(head -1 '$TMP/small.csv')\" = 'key,step,value' ] && [ '$n_loss' -ge '$STEPS' ] && [ '$n_loss' -le $((STEPS + 1)) ] && [ '$dups' = 0 ]"

req GET "/api/v1/jobs?status=succeeded&kind=train&tag=e2e&limit=1"
check "GET /api/v1/jobs filters by status, kind and tag, newest first, with next_cursor" \
  bash -c "[ '$CODE' = 200 ] && grep -q '^{\"jobs\":\[{\"id\":$ID,' '$TMP/body' && grep -q '\"next_cursor\":null' '$TMP/body'"
post_json /api/v1/jobs '{"kind":"linreg","params":{"data":{"name":"synthetic","n":200,"d":50,"noise":0.1},"lr":0.1,"steps":300,"seed":0}}'
LIN=$(jnum id "$TMP/body")
check "a linreg job succeeds" wait_status "$LIN" succeeded 60
req GET "/api/v1/jobs?limit=1"
cursor=$(jstr next_cursor "$TMP/body")
check "a page of 1 of 2 jobs has a next_cursor that leads to the older job" \
  bash -c "[ '$CODE' = 200 ] && grep -q '^{\"jobs\":\[{\"id\":$LIN,' '$TMP/body' && [ -n '$cursor' ]"
req GET "/api/v1/jobs?limit=1&cursor=$cursor"
check "the cursor page holds job $ID" grep -q "^{\"jobs\":\[{\"id\":$ID," "$TMP/body"
req GET "/api/v1/jobs/$ID/artifacts"
check "GET artifacts lists the job's artifacts" bash -c "[ '$CODE' = 200 ] && grep -q '\"artifacts\":\[' '$TMP/body'"
art=$(grep -o '"name":"[^"]*"' "$TMP/body" | head -1 | sed 's/"name":"\(.*\)"/\1/')
if [ -n "$art" ]; then
  req GET "/api/v1/jobs/$ID/artifacts/$art"
  check "GET artifacts/$art returns it with its content type" bash -c "[ '$CODE' = 200 ] && grep -qi '^content-type: ' '$TMP/hdr'"
fi

# ---------------------------------------------------------------- bad requests

BIG="$TMP/big.json"
{ printf '{"kind":"train","name":"'; head -c 1200000 /dev/zero | tr '\0' 'a'; printf '"}'; } >"$BIG"
DEEP=$(printf '%.0s[' $(seq 1 5000))
LONGNAME=$(head -c 300 /dev/zero | tr '\0' 'n')

bad_job "malformed JSON" '{"kind":'
bad_job "body is an array, not an object" '[1,2,3]'
bad_job "empty body" ''
bad_job "kind is a number" '{"kind":5}'
bad_job "kind missing" '{"params":{}}'
bad_job "unknown kind" '{"kind":"no_such_kind"}'
bad_job "unknown top-level field" '{"kind":"train","bogus":1}'
bad_job "unknown param" '{"kind":"train","params":{"bogus":1}}'
bad_job "unknown nested param" '{"kind":"train","params":{"optimizer":{"lr":0.1,"foo":1}}}'
bad_job "lr is a string" '{"kind":"train","params":{"optimizer":{"lr":"fast"}}}'
bad_job "negative lr" '{"kind":"train","params":{"optimizer":{"lr":-0.1}}}'
bad_job "negative batch size" '{"kind":"train","params":{"batch_size":-5}}'
bad_job "zero batch size" '{"kind":"train","params":{"batch_size":0}}'
bad_job "absurd width hidden [1000000000]" '{"kind":"train","params":{"model":{"hidden":[1000000000]}}}'
bad_job "absurd model 3 x 100000 wide (estimate cap)" '{"kind":"train","params":{"model":{"hidden":[100000,100000,100000]}}}'
bad_job "negative width" '{"kind":"train","params":{"model":{"hidden":[-1]}}}'
bad_job "hidden is a string" '{"kind":"train","params":{"model":{"hidden":"big"}}}'
bad_job "hidden is empty" '{"kind":"train","params":{"model":{"hidden":[]}}}'
bad_job "fractional width" '{"kind":"train","params":{"model":{"hidden":[1.5]}}}'
bad_job "absurd steps" '{"kind":"train","params":{"steps":1000000000000}}'
bad_job "activation not in the enum" '{"kind":"train","params":{"model":{"activation":"sigmoidz"}}}'
bad_job "params is an array" '{"kind":"train","params":[1]}'
bad_job "tags is a string" '{"kind":"train","tags":"x"}'
bad_job "tag with a space" '{"kind":"train","tags":["a b"]}'
bad_job "priority out of range" '{"kind":"train","priority":1000000000}'
bad_job "name too long" "{\"kind\":\"train\",\"name\":\"$LONGNAME\"}"
bad_job "NaN literal" '{"kind":"train","params":{"optimizer":{"lr":NaN}}}'
bad_job "duplicate key" '{"kind":"train","kind":"linreg"}'
bad_job "number overflow 1e400" '{"kind":"train","params":{"optimizer":{"lr":1e400}}}'
bad_job "integer overflow" '{"kind":"train","params":{"batch_size":99999999999999999999999}}'
bad_job "NUL escape in a string" '{"kind":"tr\u0000ain"}'
bad_job "invalid UTF-8" "$(printf '{"kind":"train","name":"\xff\xfe"}')"
bad_job "nesting 5000 deep" "$DEEP"
bad_job "linreg lr of the wrong type" '{"kind":"linreg","params":{"lr":[1]}}'
bad_job "seed is negative" '{"kind":"train","params":{"seed":-1}}'
expect_error "body over 1 MiB" 413 - POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "@$BIG"
expect_error "chunked body over 1 MiB" 413 - POST /api/v1/jobs -H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' --data-binary "@$BIG"
expect_error "Content-Type text/plain" 415 - POST /api/v1/jobs -H 'Content-Type: text/plain' --data-binary "$SMALL"
expect_error "form-encoded body" 415 - POST /api/v1/jobs --data "$SMALL"
expect_error "DELETE on the jobs collection" 405 - DELETE /api/v1/jobs
expect_error "PUT on a job" 405 - PUT "/api/v1/jobs/$ID" -H 'Content-Type: application/json' --data-binary '{}'
expect_error "POST /healthz" 405 - POST /healthz
expect_error "GET on cancel" 405 - GET "/api/v1/jobs/$ID/cancel"
expect_error "POST to a static file" 405 - POST /index.html
expect_error "unknown API path" 404 - GET /api/v1/nope
expect_error "unknown API version" 404 - GET /api/v2/jobs
expect_error "unknown job" 404 - GET /api/v1/jobs/999999
expect_error "job id is not a number" 404 - GET /api/v1/jobs/abc
expect_error "job id with a sign" 404 - GET /api/v1/jobs/-1
expect_error "job id overflows" 404 - GET /api/v1/jobs/99999999999999999999999
expect_error "metrics of an unknown job" 404 - GET /api/v1/jobs/999999/metrics
expect_error "max_points is not a number" 400 - GET "/api/v1/jobs/$ID/metrics?max_points=abc"
expect_error "max_points=1" 400 - GET "/api/v1/jobs/$ID/metrics?max_points=1"
expect_error "max_points absurd" 400 - GET "/api/v1/jobs/$ID/metrics?max_points=1000000000000"
expect_error "since_step fractional" 400 - GET "/api/v1/jobs/$ID/metrics?since_step=1.5"
expect_error "keys with a space" 400 - GET "/api/v1/jobs/$ID/metrics?keys=a%20b"
expect_error "list limit=0" 400 - GET "/api/v1/jobs?limit=0"
expect_error "list limit=100000" 400 - GET "/api/v1/jobs?limit=100000"
expect_error "list status=bogus" 400 - GET "/api/v1/jobs?status=bogus"
expect_error "list cursor=xyz" 400 - GET "/api/v1/jobs?cursor=xyz"
# Query consistency: unknown values and unknown parameters are 400s naming them; an id has
# one spelling (no leading zeros, no sign); a key a finished job never reported is a 400.
expect_error "list kind=bogus (unknown value)" 400 kind GET "/api/v1/jobs?kind=bogus"
expect_error "list with an unknown parameter" 400 bogus GET "/api/v1/jobs?bogus=1"
expect_error "list with a misspelt parameter stauts=" 400 stauts GET "/api/v1/jobs?stauts=queued"
expect_error "list status given twice" 400 status GET "/api/v1/jobs?status=queued&status=running"
expect_error "list status without a value" 400 status GET "/api/v1/jobs?status"
expect_error "list sweep that does not exist" 400 sweep GET "/api/v1/jobs?sweep=999999"
expect_error "list sweep=01 (leading zero)" 400 sweep GET "/api/v1/jobs?sweep=01"
expect_error "list cursor=+5 (a sign)" 400 cursor GET "/api/v1/jobs?cursor=%2B5"
expect_error "metrics keys=nope on a finished job" 400 keys GET "/api/v1/jobs/$ID/metrics?keys=nope"
expect_error "metrics keys=train_loss,nope" 400 keys GET "/api/v1/jobs/$ID/metrics?keys=train_loss,nope"
expect_error "metrics.csv keys=nope" 400 keys GET "/api/v1/jobs/$ID/metrics.csv?keys=nope"
expect_error "metrics keys=train_loss,,x (an empty element)" 400 keys GET "/api/v1/jobs/$ID/metrics?keys=train_loss,,x"
expect_error "metrics?jobs keys=a, (a trailing comma)" 400 keys GET "/api/v1/metrics?jobs=$ID&keys=train_loss,"
expect_error "metrics with an unknown parameter" 400 max_point GET "/api/v1/jobs/$ID/metrics?max_point=10"
expect_error "metrics.csv with max_points (not a csv parameter)" 400 max_points GET "/api/v1/jobs/$ID/metrics.csv?max_points=10"
expect_error "job record with a query parameter" 400 x GET "/api/v1/jobs/$ID?x=1"
expect_error "sweeps list with an unknown parameter" 400 status GET "/api/v1/sweeps?status=running"
expect_error "healthz with a query parameter" 400 verbose GET "/healthz?verbose=1"
expect_error "POST jobs with a query parameter" 400 dry_run POST "/api/v1/jobs?dry_run=1" -H 'Content-Type: application/json' --data-binary "$SMALL"
expect_error "job id 0$ID (leading zero) is not job $ID" 404 - GET "/api/v1/jobs/0$ID"
expect_error "job id +$ID (a sign) is not job $ID" 404 - GET "/api/v1/jobs/+$ID"
expect_error "metrics of job 0$ID" 404 - GET "/api/v1/jobs/0$ID/metrics"
expect_error "cancel job 0$ID" 404 - POST "/api/v1/jobs/0$ID/cancel"
req GET "/api/v1/jobs?kind=linreg&status=succeeded"
check "a known kind filters (kind=linreg holds job $LIN, not job $ID)" \
  bash -c "[ '$CODE' = 200 ] && grep -q '^{\"jobs\":\[{\"id\":$LIN,' '$TMP/body' && ! grep -q '\"id\":$ID,' '$TMP/body'"
req GET "/api/v1/jobs?tag=no-job-has-this-tag"
check "a tag no job carries is an empty page (tags are open-ended)" \
  bash -c "[ '$CODE' = 200 ] && grep -q '^{\"jobs\":\[\],' '$TMP/body'"
req GET "/job.html?id=$ID&x=1"
check "dashboard pages still take query parameters (job.html?id=...)" bash -c "[ '$CODE' = 200 ]"
expect_error "cancel an unknown job" 404 - POST /api/v1/jobs/999999/cancel
expect_error "cancel a finished job" 409 - POST "/api/v1/jobs/$ID/cancel"
expect_error "unknown artifact" 404 - GET "/api/v1/jobs/$ID/artifacts/nope.json"
expect_error "artifacts of an unknown job" 404 - GET /api/v1/jobs/999999/artifacts
expect_error "static path /../../etc/passwd" 404 - GET /../../etc/passwd
expect_error "static path %2e%2e encoded" 404 - GET /%2e%2e/%2e%2e/etc/passwd
expect_error "static path %2E%2E%2F encoded slashes" 404 - GET /%2E%2E%2F%2E%2E%2Fetc%2Fpasswd
expect_error "static path ..%2f into the repo" 404 - GET /..%2fserver%2fmain.c
expect_error "static path double-encoded" 404 - GET /%252e%252e/%252e%252e/etc/passwd
expect_error "static path with a NUL" 404 - GET /index.html%00.js
expect_error "static hidden file" 404 - GET /.git/config
expect_error "static path through js/../.." 404 - GET /js/../../Makefile
expect_error "missing static file" 404 - GET /no-such-page.html

req GET /healthz
check "after all the bad requests /healthz is still 200 ok" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"status\":\"ok\"' '$TMP/body'"
check "the daemon process is still alive" kill -0 "$PID"

req GET /metrics
check "GET /metrics is Prometheus text with jobs, queue depth, workers, points and requests" \
  bash -c "[ '$CODE' = 200 ] && grep -q '^tdlab_jobs{status=\"succeeded\"} [1-9]' '$TMP/body' && grep -q '^tdlab_queue_depth ' '$TMP/body' &&
           grep -q '^tdlab_workers_busy ' '$TMP/body' && grep -q '^tdlab_metric_points_ingested_total [1-9]' '$TMP/body' &&
           grep -q '^tdlab_http_requests_total{route=\"jobs_create\",code=\"400\"} [1-9]' '$TMP/body' &&
           grep -q '^tdlab_http_request_duration_seconds_bucket{route=\"jobs_get\",le=\"+Inf\"} [1-9]' '$TMP/body'"

# ---------------------------------------------------------------- cancellation

post_json /api/v1/jobs "$LONG"
RUN=$(jnum id "$TMP/body")
check "a long job starts running" wait_progress "$RUN" 5 120
post_json /api/v1/jobs "$LONG"
QUEUED=$(jnum id "$TMP/body")
check "with the only worker busy, a second job waits as queued" bash -c "[ \"\$(curl -s '$BASE/api/v1/jobs/$QUEUED' | grep -o '\"status\":\"[a-z]*\"' | head -1)\" = '\"status\":\"queued\"' ]"
req POST "/api/v1/jobs/$QUEUED/cancel"
check "cancelling a queued job answers 200 and it is cancelled at once" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"status\":\"cancelled\"' '$TMP/body'"
req POST "/api/v1/jobs/$RUN/cancel" -H 'Content-Type: application/json' --data-binary '{}'
check "cancelling a running job answers 202" bash -c "[ '$CODE' = 202 ] && grep -q '\"cancel_requested\":true' '$TMP/body'"
check "the running job stops at its next step as cancelled" wait_status "$RUN" cancelled 30
check "its error says it was cancelled by request" grep -q '"error":"cancelled by request"' "$TMP/job"

# ---------------------------------------------------------------- kill -9 and restart

post_json /api/v1/jobs "$MID"
KJ=$(jnum id "$TMP/body")
# Progress is written in the same transaction as a batch of points, so once the API shows
# progress, points are committed.
check "the restart job runs and commits metrics" wait_progress "$KJ" 50 120
curl -s --max-time 10 -o "$TMP/before.csv" "$BASE/api/v1/jobs/$KJ/metrics.csv"
n_before=$(tail -n +2 "$TMP/before.csv" | grep -c .)
st_before=$(job_status "$KJ")
kill -9 "$PID"
wait "$PID" 2>/dev/null
PID=""
check "kill -9 in the middle of the job ($st_before, $n_before metric rows committed)" \
  bash -c "[ '$st_before' = running ] && [ '$n_before' -gt 0 ]"
if start_server; then
  ok "the daemon restarts on the same database"
  check "the interrupted job is re-queued with attempt 2 and finishes" wait_status "$KJ" succeeded 240
  check "its record shows attempt 2" grep -q '"attempt":2,' "$TMP/job"
  KSTEPS=$(sed 's/.*"summary"://' "$TMP/job" | grep -o '"steps":[0-9]*' | head -1 | sed 's/.*://')
  curl -s --max-time 30 -o "$TMP/after.csv" "$BASE/api/v1/jobs/$KJ/metrics.csv"
  dups=$(tail -n +2 "$TMP/after.csv" | cut -d, -f1,2 | sort | uniq -d | wc -l)
  missing=$(tail -n +2 "$TMP/before.csv" | grep -vxFf "$TMP/after.csv" | wc -l)
  n_loss=$(grep -c '^train_loss,' "$TMP/after.csv")
  check "no (key, step) appears twice in its metrics" [ "$dups" = 0 ]
  check "every metric row committed before the kill is still there, unchanged" [ "$missing" = 0 ]
  check "train_loss has one row per step ($n_loss rows, $KSTEPS steps)" \
    bash -c "[ -n '$KSTEPS' ] && [ '$n_loss' -ge '$KSTEPS' ] && [ '$n_loss' -le $((KSTEPS + 1)) ]"
else
  bad "the daemon restarts on the same database"
fi

# ---------------------------------------------------------------- SIGTERM

post_json /api/v1/jobs "$LONG"
TJ=$(jnum id "$TMP/body")
check "a job is running before SIGTERM" wait_progress "$TJ" 5 120
kill -TERM "$PID"
rc=0
for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
  bad "SIGTERM stops the daemon within 30 s"
  kill -9 "$PID"
  wait "$PID" 2>/dev/null
else
  wait "$PID"
  rc=$?
  check "SIGTERM: the daemon exits 0" [ "$rc" = 0 ]
fi
PID=""
check "SIGTERM: the log records the shutdown and the job's re-queue" \
  bash -c "grep -q 'event=job_requeued job=$TJ' '$SRV_LOG' && grep -q 'event=stopped' '$SRV_LOG'"
if command -v sqlite3 >/dev/null; then
  check "SIGTERM: PRAGMA integrity_check is ok" bash -c "[ \"\$(sqlite3 '$DB' 'PRAGMA integrity_check')\" = ok ]"
  check "SIGTERM: the job is queued again with its attempt unchanged" \
    bash -c "[ \"\$(sqlite3 '$DB' 'SELECT status, attempt FROM jobs WHERE id=$TJ')\" = 'queued|1' ]"
fi
if start_server --workers 0; then
  job_status "$TJ" >/dev/null
  check "after a restart the job is still queued (nothing lost)" grep -q '"status":"queued"' "$TMP/job"
  req POST "/api/v1/jobs/$TJ/cancel"
  check "and can be cancelled" bash -c "[ '$CODE' = 200 ]"
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null
  PID=""
else
  bad "the daemon restarts after SIGTERM"
fi

# ---------------------------------------------------------------- the other verbs

cat >"$TMP/spec.json" <<'EOF'
{"kind":"linreg","params":{"data":{"name":"synthetic","n":100,"d":20,"noise":0.1},"lr":0.1,"steps":50,"seed":0}}
EOF
"$TDLAB" run "$TMP/spec.json" --out "$TMP/run.jsonl" 2>"$TMP/run.err"
rc=$?
check "tdlab run writes metric lines then a final succeeded line" \
  bash -c "[ '$rc' = 0 ] && grep -q '^{\"key\":\"loss\",\"step\":0,\"value\":' '$TMP/run.jsonl' && tail -1 '$TMP/run.jsonl' | grep -q '^{\"status\":\"succeeded\",\"summary\":{'"
echo '{"kind":"linreg","params":{"lr":-1}}' >"$TMP/bad_spec.json"
"$TDLAB" run "$TMP/bad_spec.json" >/dev/null 2>"$TMP/run.err"
rc=$?
check "tdlab run refuses an invalid spec with exit 2 naming the field" bash -c "[ '$rc' = 2 ] && grep -q 'params.lr' '$TMP/run.err'"
check "tdlab kinds prints the catalogue" bash -c "'$TDLAB' kinds | grep -q '^train' && '$TDLAB' kinds --json | grep -q '\"linreg\"'"
check "tdlab migrate creates a fresh database" bash -c "'$TDLAB' migrate --db '$TMP/fresh.db' --migrations '$ROOT/migrations' 2>/dev/null && [ -s '$TMP/fresh.db' ]"

# ---------------------------------------------------------------- sweeps and fits

# Its own daemon and database (2 workers); it prints its own checks.
if "$ROOT/tests/e2e_sweeps.sh" "$TDLAB" | sed 's/^/  /'; then
  ok "sweeps and fits (tests/e2e_sweeps.sh)"
else
  bad "sweeps and fits (tests/e2e_sweeps.sh)"
fi

# ---------------------------------------------------------------- comparing runs (issue 17)

if "$ROOT/tests/e2e_compare.sh" "$TDLAB" | sed 's/^/  /'; then ok "comparing runs: multi-job metrics, gzip, search, PATCH/DELETE (tests/e2e_compare.sh)"; else bad "comparing runs (tests/e2e_compare.sh)"; fi

# ---------------------------------------------------------------- checkpoints

# Its own daemon and database (1 worker, --max-upload 64K); it prints its own checks.
if "$ROOT/tests/e2e_checkpoints.sh" "$TDLAB" | sed 's/^/  /'; then
  ok "checkpoints (tests/e2e_checkpoints.sh)"
else
  bad "checkpoints (tests/e2e_checkpoints.sh)"
fi
if "$ROOT/tests/e2e_dynamics.sh" "$TDLAB" | sed 's/^/  /'; then ok "momentum and games (tests/e2e_dynamics.sh)"; else bad "momentum and games (tests/e2e_dynamics.sh)"; fi

# ---------------------------------------------------------------- operations

# Its own daemons: backup while ingesting, schema upgrades from tests/fixtures (needs sqlite3).
if "$ROOT/tests/e2e_ops.sh" "$TDLAB" | sed 's/^/  /'; then
  ok "operations: backup, schema upgrades (tests/e2e_ops.sh)"
else
  bad "operations: backup, schema upgrades (tests/e2e_ops.sh)"
fi

# ---------------------------------------------------------------- raw-socket protocol edges

# Its own daemon (--conn-timeout 2); malformed requests over a plain socket.
if "$ROOT/tests/protocol.sh" "$TDLAB" | sed 's/^/  /'; then
  ok "protocol edges (tests/protocol.sh)"
else
  bad "protocol edges (tests/protocol.sh)"
fi
# Its own daemon (1 worker): POST /api/v1/kernels against hand-derived values, and its 400s.
if "$ROOT/tests/e2e_kernels.sh" "$TDLAB" | sed 's/^/  /'; then ok "kernels (tests/e2e_kernels.sh)"; else bad "kernels (tests/e2e_kernels.sh)"; fi
if "$ROOT/tests/e2e_implicit.sh" "$TDLAB" | sed 's/^/  /'; then ok "chapter 8 kinds (tests/e2e_implicit.sh)"; else bad "chapter 8 kinds (tests/e2e_implicit.sh)"; fi
# ---------------------------------------------------------------- bilevel (issue 15)
if "$ROOT/tests/e2e_bilevel.sh" "$TDLAB" | sed 's/^/  /'; then ok "bilevel kinds (tests/e2e_bilevel.sh)"; else bad "bilevel kinds (tests/e2e_bilevel.sh)"; fi
# ---------------------------------------------------------------- remote runs (issue 16)
if "$ROOT/tests/e2e_remote.sh" "$TDLAB" | sed 's/^/  /'; then ok "remote runs: tokens, ingestion, leases, tdlab run --report (tests/e2e_remote.sh)"; else bad "remote runs (tests/e2e_remote.sh)"; fi
if "$ROOT/tests/e2e_openapi.sh" "$TDLAB" | sed 's/^/  /'; then ok "OpenAPI document checked by ajv against real responses (tests/e2e_openapi.sh)"; else bad "OpenAPI (tests/e2e_openapi.sh)"; fi
if "$ROOT/tests/e2e_cli.sh" "$TDLAB" | sed 's/^/  /'; then ok "command line: submit/ls/show/watch/cancel (tests/e2e_cli.sh)"; else bad "command line (tests/e2e_cli.sh)"; fi
if "$ROOT/tests/e2e_pyclient.sh" "$TDLAB" | sed 's/^/  /'; then ok "the Python client (tests/e2e_pyclient.sh)"; else bad "the Python client (tests/e2e_pyclient.sh)"; fi
if "$ROOT/tests/e2e_slurm.sh" "$TDLAB" | sed 's/^/  /'; then ok "Slurm executor on a single-node cluster, or one SKIP line (tests/e2e_slurm.sh)"; else bad "Slurm executor (tests/e2e_slurm.sh)"; fi

finish
