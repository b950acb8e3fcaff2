#!/usr/bin/env bash
# e2e_remote.sh: runs that execute elsewhere (issue 16) against the real daemon (called by
# tests/e2e.sh; runs alone too). About 40 s on 2 cores.
#
# Usage: tests/e2e_remote.sh path/to/tdlab
#
# Starts `tdlab serve` with a lab token and --max-attempts 2 (restarted with
# --heartbeat-timeout 3 for the lease checks), then checks:
#   - tokens: POST /api/v1/runs needs the lab token; the ingestion endpoints need the run's own
#     token (wrong token 401 run_token_invalid, the lab token 401, the token of another job
#     401), and a run token opens nothing else (401 on POST /api/v1/jobs);
#   - every 400 names its field: bad JSON, unknown fields, a point without key, a bad key, a
#     value string that is not NaN/Infinity, a fractional or absurd step, more than 10000
#     points (413), bad progress, bad finish status;
#   - idempotent retries (the same batch twice stores it once), the NaN/Infinity round trip,
#     409 job_finished after finish, an identical finish again is 200, another one (another
#     status, summary or error) 409;
#   - cancel: the heartbeat says cancel_requested, and the finish ends the job cancelled;
#   - leases: an external run without heartbeats becomes crashed and is resumed with a new
#     token (the old one is refused); a remote job stays queued beside a local worker, starts
#     with POST .../start, is re-queued with attempt 2 when its heartbeats stop, then failed
#     at --max-attempts; executor "slurm" is refused naming executor;
#   - `tdlab run --report`: a remote run whose server is killed (-9) and restarted mid-run
#     ends succeeded with every point of the same spec run locally (`tdlab run --out`) present
#     exactly once; a cancel stops a `tdlab run --report` (exit 4, job cancelled); one killed
#     with -9 is re-queued by its lease;
#   - external runs in the job list (?kind=external) and GET /api/v1/kinds still answers.
# Needs bash, curl, grep, sed, awk, sort. Prints one line per check and "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init remote "$@"

LAB=lab-token-0123456789abcdef
printf '%s\n' "$LAB" >"$TMP/lab.token"
# The protocol checks first with the default lease; the lease checks restart it with 3 s.
SERVE_FLAGS=(--workers 1 --token-file "$TMP/lab.token" --max-attempts 2)
e2e_start "${SERVE_FLAGS[@]}"
PORT="$SRV_PORT"
ok "remote: the daemon starts ($BASE, lab token)"

AL=(-H "Authorization: Bearer $LAB")
JSON=(-H 'Content-Type: application/json')
# run_post PATH TOKEN BODY: POST a JSON body with a run token.
run_post() { req POST "$1" "${JSON[@]}" -H "Authorization: Bearer $2" --data-binary "$3"; }
tok_of() { jstr token "$TMP/body"; }
id_of() { jnum id "$TMP/body"; }

# ---------------------------------------------------------------- tokens
expect_error "POST /api/v1/runs without the lab token" 401 - POST /api/v1/runs "${JSON[@]}" --data-binary '{"name":"a"}'
req POST /api/v1/runs "${AL[@]}" "${JSON[@]}" --data-binary '{"name":"ext-a","params":{"lr":0.1,"arch":"resnet"},"tags":["ext","t1"]}'
A=$(id_of)
TA=$(tok_of)
check "POST /api/v1/runs: 201 with id and a 64-hex token" test "$CODE" = 201 -a -n "$A" -a "${#TA}" = 64
# the name limit counts characters, not bytes: 200 "é" (400 bytes) pass, 201 do not
E200=$(python3 -c 'print("\u00e9" * 200)')
req POST /api/v1/jobs "${AL[@]}" "${JSON[@]}" --data-binary "{\"kind\":\"nqm\",\"executor\":\"remote\",\"name\":\"$E200\"}"
check "POST /api/v1/jobs: a name of 200 non-ASCII characters (400 bytes) is accepted" test "$CODE" = 201
expect_error "POST /api/v1/runs: a name of 201 characters" 400 name POST /api/v1/runs "${AL[@]}" "${JSON[@]}" --data-binary "{\"name\":\"${E200}x\"}"
req GET "/api/v1/jobs/$A"
check "the run is kind external, running, executor external, params as given" \
  grep -q '"kind":"external".*"status":"running".*"params":{"lr":0.1,"arch":"resnet"}.*"executor":"external"' "$TMP/body"
req POST /api/v1/runs "${AL[@]}" "${JSON[@]}" --data-binary '{"name":"ext-b"}'
B=$(id_of)
TB=$(tok_of)

P1='{"points":[{"key":"loss","step":0,"value":1.5},{"key":"loss","step":1,"value":"NaN"},{"key":"loss","step":2,"value":"Infinity"},{"key":"loss","step":3,"value":"-Infinity"},{"key":"acc","step":0,"value":0.25}]}'
# the run token with its last hex digit changed (to 1 when it is 0, else to 0)
if [ "${TA: -1}" = 0 ]; then TA_WRONG="${TA%?}1"; else TA_WRONG="${TA%?}0"; fi
expect_error "points with a wrong run token" 401 - POST "/api/v1/jobs/$A/points" "${JSON[@]}" -H "Authorization: Bearer $TA_WRONG" --data-binary "$P1"
check "  ... its code is run_token_invalid" grep -q '"code":"run_token_invalid"' "$TMP/body"
expect_error "points without a token" 401 - POST "/api/v1/jobs/$A/points" "${JSON[@]}" --data-binary "$P1"
expect_error "points with the lab token" 401 - POST "/api/v1/jobs/$A/points" "${JSON[@]}" "${AL[@]}" --data-binary "$P1"
expect_error "points with the token of another job" 401 - POST "/api/v1/jobs/$A/points" "${JSON[@]}" -H "Authorization: Bearer $TB" --data-binary "$P1"
expect_error "a run token on POST /api/v1/jobs" 401 - POST /api/v1/jobs "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"kind":"nqm"}'
expect_error "a run token on POST /api/v1/runs/{id}/resume" 401 - POST "/api/v1/runs/$A/resume" -H "Authorization: Bearer $TA"
expect_error "points of a job that does not exist" 404 - POST "/api/v1/jobs/999999/points" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary "$P1"

# ---------------------------------------------------------------- points, idempotency, NaN
ingested() { curl -s "$BASE/metrics" | sed -n 's/^tdlab_metric_points_ingested_total //p'; }
N0=$(ingested)
run_post "/api/v1/jobs/$A/points" "$TA" "$P1"
check "points: 200 {accepted 5, duplicates 0}" grep -q '^{"accepted":5,"duplicates":0}$' "$TMP/body"
run_post "/api/v1/jobs/$A/points" "$TA" "$P1"
check "the same batch again (a retry): accepted 0, duplicates 5" grep -q '^{"accepted":0,"duplicates":5}$' "$TMP/body"
N1=$(ingested)
check "tdlab_metric_points_ingested_total counts the 5 ingested points, not the duplicates ($N0 -> $N1)" \
  test "$((N1 - N0))" = 5
run_post "/api/v1/jobs/$A/points" "$TA" '{"points":[{"key":"loss","step":3,"value":7},{"key":"loss","step":4,"value":0.5}]}'
check "a batch overlapping a stored step: accepted 1, duplicates 1 (the first value is kept)" grep -q '^{"accepted":1,"duplicates":1}$' "$TMP/body"
req GET "/api/v1/jobs/$A/metrics"
check "NaN/Infinity round trip, each step once: loss = [1.5,NaN,Infinity,-Infinity,0.5]" \
  grep -q '"loss":{"step":\[0,1,2,3,4\],"value":\[1.5,"NaN","Infinity","-Infinity",0.5\],"total":5}' "$TMP/body"
req GET "/api/v1/jobs/$A/metrics.csv"
check "metrics.csv has 6 points" test "$(grep -c '^[a-z]*,[0-9]*,' "$TMP/body")" = 6

bp() { expect_error "$1" "$2" "$3" POST "/api/v1/jobs/$A/points" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary "$4"; }
bp "points: malformed JSON" 400 - '{"points":['
check "  ... its code is invalid_json" grep -q '"code":"invalid_json"' "$TMP/body"
bp "points: not an object" 400 - '[1,2]'
bp "points: missing" 400 points '{}'
bp "points: unknown field" 400 extra '{"points":[],"extra":1}'
bp "points: not an array" 400 points '{"points":{"key":"a"}}'
bp "a point that is not an object" 400 'points[0]' '{"points":[3]}'
bp "a point without key" 400 'points[1].key' '{"points":[{"key":"a","step":1,"value":1},{"step":1,"value":1}]}'
bp "a key with a space" 400 'points[0].key' '{"points":[{"key":"a b","step":1,"value":1}]}'
bp "a key of 129 characters" 400 'points[0].key' "{\"points\":[{\"key\":\"$(printf 'k%.0s' $(seq 1 129))\",\"step\":1,\"value\":1}]}"
bp "a value string that is not NaN/Infinity" 400 'points[0].value' '{"points":[{"key":"a","step":1,"value":"nan"}]}'
bp "a value that is a boolean" 400 'points[0].value' '{"points":[{"key":"a","step":1,"value":true}]}'
bp "a point without value" 400 'points[0].value' '{"points":[{"key":"a","step":1}]}'
bp "a fractional step" 400 'points[0].step' '{"points":[{"key":"a","step":1.5,"value":1}]}'
bp "an absurd step (1e300)" 400 'points[0].step' '{"points":[{"key":"a","step":1e300,"value":1}]}'
run_post "/api/v1/jobs/$B/points" "$TB" '{"points":[{"key":"fstep","step":7.0,"value":1}]}'
check "a step written as 7.0 (Python's json.dumps of a float) is step 7" \
  bash -c "[ '$CODE' = 200 ] && curl -s '$BASE/api/v1/jobs/$B/metrics?keys=fstep' | grep -q '\"step\":\[7\]'"
bp "a step beyond 2^53" 400 'points[0].step' '{"points":[{"key":"a","step":9007199254740993,"value":1}]}'
bp "an unknown field in a point" 400 'points[0].when' '{"points":[{"key":"a","step":1,"value":1,"when":3}]}'
awk 'BEGIN { printf "{\"points\":["; for (i = 0; i < 10001; i++) printf "%s{\"key\":\"k\",\"step\":%d,\"value\":1}", (i ? "," : ""), i; printf "]}" }' >"$TMP/big.json"
bp "10001 points in one request" 413 points "@$TMP/big.json"
awk 'BEGIN { printf "{\"points\":["; for (i = 0; i < 10000; i++) printf "%s{\"key\":\"k\",\"step\":%d,\"value\":%d}", (i ? "," : ""), i, i; printf "]}" }' >"$TMP/max.json"
run_post "/api/v1/jobs/$A/points" "$TA" "@$TMP/max.json"
check "10000 points in one request are taken" grep -q '^{"accepted":10000,"duplicates":0}$' "$TMP/body"
expect_error "a bad point stores nothing of its batch" 400 'points[2].value' POST "/api/v1/jobs/$A/points" "${JSON[@]}" -H "Authorization: Bearer $TA" \
  --data-binary '{"points":[{"key":"z","step":1,"value":1},{"key":"z","step":2,"value":2},{"key":"z","step":3,"value":"x"}]}'
req GET "/api/v1/jobs/$A/metrics?keys=z"
check "  ... (no point of key z stored)" bash -c "! grep -q '\"z\":{\"step\":\[[0-9]' '$TMP/body'"

# ---------------------------------------------------------------- heartbeat, artifacts
run_post "/api/v1/jobs/$A/heartbeat" "$TA" '{"progress":{"done":3,"total":10}}'
check "heartbeat: 200 running, cancel_requested false" grep -q '^{"status":"running","cancel_requested":false' "$TMP/body"
req GET "/api/v1/jobs/$A"
check "  ... the progress is 3/10 and heartbeat_at is set" grep -q '"progress":{"done":3,"total":10}.*"heartbeat_at":"20' "$TMP/body"
expect_error "heartbeat: progress done above total" 400 progress.done POST "/api/v1/jobs/$A/heartbeat" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"progress":{"done":5,"total":3}}'
expect_error "heartbeat: bad progress" 400 progress POST "/api/v1/jobs/$A/heartbeat" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"progress":{"done":-1,"total":3}}'
expect_error "heartbeat: unknown field" 400 state POST "/api/v1/jobs/$A/heartbeat" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"state":1}'
req POST "/api/v1/jobs/$A/artifacts/curve.json" -H "Authorization: Bearer $TA" -H 'Content-Type: application/json' --data-binary '{"x":[1,2,3]}'
check "artifact: 201" test "$CODE" = 201
req GET "/api/v1/jobs/$A/artifacts/curve.json"
check "  ... read back with its bytes and Content-Type" bash -c "grep -q '^{\"x\":\[1,2,3\]}$' '$TMP/body' && grep -qi '^content-type: application/json' '$TMP/hdr'"
expect_error "artifact: a name starting with a dot" 400 name POST "/api/v1/jobs/$A/artifacts/.hidden" -H "Authorization: Bearer $TA" --data-binary 'x'
expect_error "artifact: a wrong token" 401 - POST "/api/v1/jobs/$A/artifacts/x.bin" -H "Authorization: Bearer $TB" --data-binary 'x'

# ---------------------------------------------------------------- finish
bf() { expect_error "$1" "$2" "$3" POST "/api/v1/jobs/$A/finish" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary "$4"; }
bf "finish: status cancelled (the server marks that)" 400 status '{"status":"cancelled"}'
bf "finish: no status" 400 status '{"summary":{}}'
bf "finish: summary not an object" 400 summary '{"status":"succeeded","summary":[1]}'
bf "finish: error not a string" 400 error '{"status":"failed","error":5}'
run_post "/api/v1/jobs/$A/finish" "$TA" '{"status":"succeeded","summary":{"final_loss":0.5}}'
check "finish: 200 succeeded" grep -q '^{"id":[0-9]*,"status":"succeeded"}$' "$TMP/body"
run_post "/api/v1/jobs/$A/finish" "$TA" '{"status":"succeeded","summary":{"final_loss":0.5}}'
check "the same finish again (a retry after a lost answer): 200" test "$CODE" = 200
expect_error "a different finish afterwards" 409 - POST "/api/v1/jobs/$A/finish" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"status":"failed"}'
expect_error "the same status with another summary afterwards (it would not be stored)" 409 - POST "/api/v1/jobs/$A/finish" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"status":"succeeded","summary":{"final_loss":0.25}}'
check "  ... its message says so" grep -q 'another summary or error' "$TMP/body"
expect_error "the same status with an error afterwards" 409 - POST "/api/v1/jobs/$A/finish" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"status":"succeeded","summary":{"final_loss":0.5},"error":"x"}'
expect_error "points after finish" 409 - POST "/api/v1/jobs/$A/points" "${JSON[@]}" -H "Authorization: Bearer $TA" --data-binary '{"points":[{"key":"loss","step":99,"value":1}]}'
check "  ... its code is job_finished" grep -q '"code":"job_finished"' "$TMP/body"
expect_error "heartbeat after finish" 409 - POST "/api/v1/jobs/$A/heartbeat" -H "Authorization: Bearer $TA"
expect_error "artifact after finish" 409 - POST "/api/v1/jobs/$A/artifacts/late.bin" -H "Authorization: Bearer $TA" --data-binary 'x'
req GET "/api/v1/jobs/$A"
check "the job is succeeded with its summary" grep -q '"status":"succeeded".*"summary":{"final_loss":0.5}' "$TMP/body"

# ---------------------------------------------------------------- cancel
req POST "/api/v1/jobs/$B/cancel" "${AL[@]}"
run_post "/api/v1/jobs/$B/heartbeat" "$TB" '{}'
check "after a cancel the heartbeat says cancel_requested true" grep -q '"cancel_requested":true' "$TMP/body"
run_post "/api/v1/jobs/$B/finish" "$TB" '{"status":"failed","error":"stopped"}'
check "  ... and the finish ends the run cancelled" grep -q '"status":"cancelled"' "$TMP/body"

# ---------------------------------------------------------------- job list, kinds
req GET "/api/v1/jobs?kind=external"
check "GET /api/v1/jobs?kind=external lists both runs" bash -c "test \$(grep -o '\"kind\":\"external\"' '$TMP/body' | wc -l) = 2"
req GET "/api/v1/jobs?status=crashed"
check "GET /api/v1/jobs?status=crashed is a valid filter" test "$CODE" = 200
req GET /api/v1/kinds
check "GET /api/v1/kinds still answers 200" test "$CODE" = 200

# ---------------------------------------------------------------- executor field
expect_error "executor slurm without the Slurm executor" 400 executor POST /api/v1/jobs "${JSON[@]}" "${AL[@]}" --data-binary '{"kind":"nqm","executor":"slurm"}'
expect_error "an unknown executor" 400 executor POST /api/v1/jobs "${JSON[@]}" "${AL[@]}" --data-binary '{"kind":"nqm","executor":"moon"}'

# ---------------------------------------------------------------- leases
srv_term
SERVE_FLAGS+=(--heartbeat-timeout 3 --port "$PORT")
e2e_start "${SERVE_FLAGS[@]}"
check "the daemon restarts with --heartbeat-timeout 3 on port $PORT" test "$SRV_PORT" = "$PORT"
# An external run that stops beating becomes crashed (timeout 3 s, checked every 0.75 s).
req POST /api/v1/runs "${AL[@]}" "${JSON[@]}" --data-binary '{"name":"ext-c"}'
C=$(id_of)
TC=$(tok_of)
st=""
for _ in $(seq 1 60); do st=$(srv_status "$C"); [ "$st" = crashed ] && break; sleep 0.2; done
check "an external run without heartbeats becomes crashed (lease 3 s)" test "$st" = crashed
req GET "/api/v1/jobs/$C"
check "  ... its error says since when and how to resume" grep -q '"error":"crashed: no heartbeat since 20.*resume' "$TMP/body"
expect_error "resume without the lab token" 401 - POST "/api/v1/runs/$C/resume"
req POST "/api/v1/runs/$C/resume" "${AL[@]}"
TC2=$(tok_of)
check "resume: 200 with a new token" test "$CODE" = 200 -a "${#TC2}" = 64 -a "$TC2" != "$TC"
check "  ... the run is running again" test "$(srv_status "$C")" = running
expect_error "the old token after a resume" 401 - POST "/api/v1/jobs/$C/heartbeat" -H "Authorization: Bearer $TC"
run_post "/api/v1/jobs/$C/points" "$TC2" '{"points":[{"key":"loss","step":0,"value":1}]}'
check "the new token writes points" test "$CODE" = 200
run_post "/api/v1/jobs/$C/finish" "$TC2" '{"status":"succeeded"}'
expect_error "resume of a finished run" 409 - POST "/api/v1/runs/$C/resume" "${AL[@]}"

# A remote job stays queued beside the local worker until it is started.
SPEC='{"kind":"linreg","executor":"remote","params":{"steps":200,"data":{"n":40,"d":5}}}'
req POST /api/v1/jobs "${JSON[@]}" "${AL[@]}" --data-binary "$SPEC"
R=$(id_of)
check "POST /api/v1/jobs executor remote: 201, executor remote" bash -c "test '$CODE' = 201 && grep -q '\"executor\":\"remote\"' '$TMP/body'"
sleep 2.5
check "  ... the local worker does not take it (queued after 2.5 s)" test "$(srv_status "$R")" = queued
expect_error "start without the lab token" 401 - POST "/api/v1/jobs/$R/start"
req POST "/api/v1/jobs/$R/start" "${AL[@]}"
TR=$(tok_of)
check "start: 200 with token, kind, filled params, attempt 1" \
  bash -c "test '$CODE' = 200 && grep -q '\"kind\":\"linreg\",\"params\":{\"steps\":200,.*\"attempt\":1}' '$TMP/body'"
expect_error "start again (already running)" 409 - POST "/api/v1/jobs/$R/start" "${AL[@]}"
req POST "/api/v1/jobs" "${JSON[@]}" "${AL[@]}" --data-binary '{"kind":"linreg","params":{"steps":5}}'
L=$(id_of)
wait_job "$L" 30 >/dev/null
expect_error "start of a local job" 409 - POST "/api/v1/jobs/$L/start" "${AL[@]}"
expect_error "resume of a job that is not external" 409 - POST "/api/v1/runs/$L/resume" "${AL[@]}"
st=""
for _ in $(seq 1 60); do st=$(srv_status "$R"); [ "$st" = queued ] && break; sleep 0.2; done
req GET "/api/v1/jobs/$R"
check "a remote run without heartbeats is re-queued with attempt 2" grep -q '"status":"queued".*"attempt":2' "$TMP/body"
expect_error "the token of the lost attempt is refused" 401 - POST "/api/v1/jobs/$R/heartbeat" -H "Authorization: Bearer $TR"
req POST "/api/v1/jobs/$R/start" "${AL[@]}"
check "  ... started again: attempt 2" grep -q '"attempt":2}$' "$TMP/body"
st=""
for _ in $(seq 1 60); do st=$(srv_status "$R"); [ "$st" = failed ] && break; sleep 0.2; done
req GET "/api/v1/jobs/$R"
check "  ... lost again at --max-attempts 2: failed with the reason" grep -q '"status":"failed".*"error":"lost: no heartbeat since' "$TMP/body"

# ---------------------------------------------------------------- tdlab run --report
# The same spec run locally gives the reference: every (key, step) it emits.
RSPEC='{"kind":"linreg","params":{"steps":30000,"data":{"n":400,"d":100}}}'
printf '%s\n' "$RSPEC" >"$TMP/rspec.json"
"$TDLAB" run "$TMP/rspec.json" --out "$TMP/local.jsonl" >/dev/null 2>&1
grep -o '"key":"[^"]*","step":[0-9]*' "$TMP/local.jsonl" | sed 's/"key":"\([^"]*\)","step":\([0-9]*\)/\1,\2/' | sort >"$TMP/want.txt"
NWANT=$(wc -l <"$TMP/want.txt")
req POST /api/v1/jobs "${JSON[@]}" "${AL[@]}" --data-binary "$(printf '%s' "$RSPEC" | sed 's/^{/{"executor":"remote",/')"
X=$(id_of)
req POST "/api/v1/jobs/$X/start" "${AL[@]}"
printf '%s\n' "$(tok_of)" >"$TMP/x.token"
"$TDLAB" run "$TMP/rspec.json" --report "$BASE" --job "$X" --token-file "$TMP/x.token" --heartbeat 0.5 \
  >"$TMP/report.out" 2>"$TMP/report.err" &
RUNPID=$!
# kill -9 the server once points flow, keep it down 1.5 s, restart it on the same port
for _ in $(seq 1 100); do
  n=$(curl -s --max-time 5 "$BASE/api/v1/jobs/$X/metrics?keys=loss&max_points=2" | jnum total /dev/stdin)
  [ -n "$n" ] && [ "$n" -gt 0 ] && break
  sleep 0.1
done
srv_kill9
sleep 1.5
e2e_start "${SERVE_FLAGS[@]}"
check "the server restarts on the same port ($BASE) while the run streams" test "$SRV_PORT" = "$PORT"
wait "$RUNPID"
RRC=$?
check "tdlab run --report survives the server's kill -9 and ends 0" test "$RRC" = 0
check "  ... it retried while the server was away (stderr says so)" grep -q 'retrying with backoff' "$TMP/report.err"
check "  ... its status line says succeeded" grep -q '"status":"succeeded"' "$TMP/report.out"
req GET "/api/v1/jobs/$X"
check "the job is succeeded, attempt 1 (the restart did not re-queue it)" grep -q '"status":"succeeded".*"attempt":1' "$TMP/body"
req GET "/api/v1/jobs/$X/metrics.csv"
grep -E '^[a-z_]+,-?[0-9]+,' "$TMP/body" | cut -d, -f1,2 | sort >"$TMP/got.txt"
check "every (key, step) of the local run is stored ($NWANT points)" cmp -s "$TMP/want.txt" "$TMP/got.txt"
check "  ... each exactly once" test "$(uniq -d "$TMP/got.txt" | wc -l)" = 0

req GET "/api/v1/metrics?jobs=$A,$X&max_points=10"
check "the comparison API takes an external and a remote run together" \
  bash -c "test '$CODE' = 200 && grep -q '\"$A\":{\"job_id\":$A' '$TMP/body' && grep -q '\"$X\":{\"job_id\":$X' '$TMP/body'"

# A cancel reaches `tdlab run --report` through its heartbeat: the run stops, exit 4, and
# the job ends cancelled.
req POST /api/v1/jobs "${JSON[@]}" "${AL[@]}" --data-binary "$(printf '%s' "$RSPEC" | sed 's/^{/{"executor":"remote",/')"
Z=$(id_of)
req POST "/api/v1/jobs/$Z/start" "${AL[@]}"
TDLAB_RUN_TOKEN="$(tok_of)" "$TDLAB" run "$TMP/rspec.json" --report "$BASE" --job "$Z" --heartbeat 0.3 \
  >"$TMP/cancel.out" 2>/dev/null &
RUNPID=$!
for _ in $(seq 1 100); do
  n=$(curl -s --max-time 5 "$BASE/api/v1/jobs/$Z/metrics?keys=loss&max_points=2" | jnum total /dev/stdin)
  [ -n "$n" ] && [ "$n" -gt 0 ] && break
  sleep 0.1
done
req POST "/api/v1/jobs/$Z/cancel" "${AL[@]}"
wait "$RUNPID"
CRC=$?
check "a cancel stops tdlab run --report (exit 4, status line cancelled)" \
  bash -c "test $CRC = 4 && grep -q '\"status\":\"cancelled\"' '$TMP/cancel.out'"
check "  ... and the job ends cancelled" test "$(srv_status "$Z")" = cancelled

# kill -9 of a `tdlab run --report`: the lease re-queues the job with attempt 2.
req POST /api/v1/jobs "${JSON[@]}" "${AL[@]}" --data-binary "$(printf '%s' "$RSPEC" | sed 's/^{/{"executor":"remote",/')"
Y=$(id_of)
req POST "/api/v1/jobs/$Y/start" "${AL[@]}"
TDLAB_RUN_TOKEN="$(tok_of)" "$TDLAB" run "$TMP/rspec.json" --report "$BASE" --job "$Y" >/dev/null 2>&1 &
RUNPID=$!
for _ in $(seq 1 100); do
  n=$(curl -s --max-time 5 "$BASE/api/v1/jobs/$Y/metrics?keys=loss&max_points=2" | jnum total /dev/stdin)
  [ -n "$n" ] && [ "$n" -gt 0 ] && break
  sleep 0.1
done
{ kill -9 "$RUNPID"; wait "$RUNPID"; } 2>/dev/null
st=""
for _ in $(seq 1 80); do st=$(srv_status "$Y"); [ "$st" != running ] && break; sleep 0.2; done
req GET "/api/v1/jobs/$Y"
check "a tdlab run --report killed with -9 is re-queued by its lease (attempt 2)" grep -q '"status":"queued".*"attempt":2' "$TMP/body"
env -u TDLAB_RUN_TOKEN "$TDLAB" run "$TMP/rspec.json" --report "$BASE" --job "$Y" >/dev/null 2>"$TMP/notoken.err"
NRC=$?
check "tdlab run --report without a token exits 2 with a message" \
  bash -c "test $NRC = 2 && grep -q 'run token' '$TMP/notoken.err'"
timeout 20 "$TDLAB" run "$TMP/rspec.json" --report "${BASE#http://}" --job "$Y" --token x >/dev/null 2>"$TMP/nourl.err"
NRC=$?
check "tdlab run --report with a URL without http:// exits 2 at once (no retrying)" \
  bash -c "test $NRC = 2 && grep -q 'must start with http://' '$TMP/nourl.err'"
# SIGTERM while the server does not answer the first heartbeat: out within a backoff step (it
# retried for --retry-for seconds, 900 by default, before)
T0=$(date +%s)
"$TDLAB" run "$TMP/rspec.json" --report http://127.0.0.1:1 --job "$Y" --token x >"$TMP/sig.out" 2>"$TMP/sig.err" &
SPID=$!
sleep 1
kill -TERM "$SPID"
for _ in $(seq 1 150); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SPID" 2>/dev/null; then kill -9 "$SPID"; fi
wait "$SPID" 2>/dev/null
SRC=$?
check "tdlab run --report with the server away at its start stops on SIGTERM: exit 4, interrupted ($(( $(date +%s) - T0 )) s)" \
  bash -c "test $SRC = 4 && grep -q '\"status\":\"interrupted\"' '$TMP/sig.out'"

finish
