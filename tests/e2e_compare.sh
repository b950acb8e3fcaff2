#!/usr/bin/env bash
# e2e_compare.sh: end-to-end test of issue 17's API against the real daemon (called by
# tests/e2e.sh; runs alone too). About 10 s on 2 cores.
#
# Usage: tests/e2e_compare.sh path/to/tdlab
#
# Starts `tdlab serve` on a free port with a temporary database and 2 workers, runs two small
# Fashion-MNIST `train` jobs (sgd, adam), then checks:
#   - GET /api/v1/metrics?jobs=A,B&keys=..&max_points=N: each job's part has the per-job
#     response's shape and the same points; time=1 adds wall times inside the job's run;
#   - bad jobs/max_points/time and unknown parameters are 400 naming the field; an unknown
#     job is 404 naming jobs;
#   - gzip when accepted (the body decompresses to the uncompressed answer), none otherwise;
#   - GET /api/v1/jobs?q=: a search by param and summary, and a malformed query's 400;
#   - PATCH /api/v1/jobs/{id} {name, tags}; DELETE of a running job is 409, of a finished one
#     204 with its metrics gone.
# Needs bash, curl, grep, gzip and /usr/bin/python3 (JSON). Prints one line per check.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init compare "$@"
PY=/usr/bin/python3
get() { CODE=$(curl -s -o "$TMP/body" -D "$TMP/hdr" -w '%{http_code}' "$@"); }
# js EXPR: evaluate a Python expression over d = the JSON in $TMP/body
js() { "$PY" -c "import json,sys; d=json.load(open('$TMP/body')); print($1)"; }

e2e_start --workers 2 --batch-ms 100
ok "compare: the daemon starts ($SRV_BASE)"
B="$SRV_BASE"
job() { curl -s -X POST "$B/api/v1/jobs" -H 'Content-Type: application/json' --data-binary "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
SPEC='{"kind":"train","name":"cmp-OPT","tags":["e2ecmp"],"params":{"data":{"name":"fashion-mnist","n_train":1000,"n_test":200},"model":{"hidden":[16]},"optimizer":{"name":"OPT","lr":LR},"batch_size":50,"epochs":2,"seed":0}}'
A=$(job "$(echo "$SPEC" | sed 's/OPT/sgd/g; s/LR/0.1/')")
C=$(job "$(echo "$SPEC" | sed 's/OPT/adam/g; s/LR/0.003/')")
for _ in $(seq 1 300); do
  n=$(curl -s "$B/api/v1/jobs?tag=e2ecmp&status=succeeded" | grep -o '"kind":"train"' | wc -l)
  [ "$n" = 2 ] && break
  sleep 0.2
done
check "two train jobs ($A, $C) succeed" [ "$n" = 2 ]

# ---- several jobs' metrics in one request
get "$B/api/v1/metrics?jobs=$A,$C&keys=train_loss,test_acc&max_points=10"
check "GET /api/v1/metrics?jobs=$A,$C: 200 with both jobs, each with step/value/total" \
  bash -c "[ '$CODE' = 200 ] && [ \"\$($(declare -f js); PY=$PY TMP=$TMP js \"sorted(d['jobs'].keys())==['$A','$C'] and all(set(d['jobs'][k]['metrics'][m].keys())=={'step','value','total'} and len(d['jobs'][k]['metrics'][m]['step'])<=10 for k in d['jobs'] for m in ('train_loss','test_acc'))\")\" = True ]"
# each part equals the per-job endpoint's answer
for id in $A $C; do
  curl -s "$B/api/v1/jobs/$id/metrics?keys=train_loss,test_acc&max_points=10" >"$TMP/one"
  check "job $id's part equals GET /api/v1/jobs/$id/metrics" \
    "$PY" -c "import json; a=json.load(open('$TMP/body'))['jobs']['$id']; b=json.load(open('$TMP/one')); exit(0 if a==b else 1)"
done
get "$B/api/v1/metrics?jobs=$A&keys=train_loss&time=1"
curl -s "$B/api/v1/jobs/$A" >"$TMP/job"
check "time=1: one wall time per point, non-decreasing, within the job's run" \
  "$PY" -c "
import json, datetime
d=json.load(open('$TMP/body'))['jobs']['$A']['metrics']['train_loss']; j=json.load(open('$TMP/job'))
ts=lambda s: datetime.datetime.strptime(s,'%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=datetime.timezone.utc).timestamp()
t=d['time']; ok=len(t)==len(d['step'])>10 and all(b>=a for a,b in zip(t,t[1:])) and ts(j['started_at'])-1<=t[0] and t[-1]<=ts(j['finished_at'])+1
exit(0 if ok else 1)"
for bad_q in "keys=train_loss:jobs" "jobs=0:jobs" "jobs=$A,x:jobs" "jobs=$A&max_points=1:max_points" "jobs=$A&time=2:time" "jobs=$A&bogus=1:bogus"; do
  q="${bad_q%:*}" field="${bad_q##*:}"
  get "$B/api/v1/metrics?$q"
  check "GET /api/v1/metrics?$q: 400 naming $field" bash -c "[ '$CODE' = 400 ] && grep -q '\"field\":\"$field\"' '$TMP/body'"
done
get "$B/api/v1/metrics?jobs=$A&max_points=100000"
check "without keys, jobs x 64 x max_points over 4,000,000 is 400 naming max_points" bash -c "[ '$CODE' = 400 ] && grep -q '\"field\":\"max_points\"' '$TMP/body'"
get "$B/api/v1/metrics?jobs=$A"
check "without max_points a series is downsampled to at most 1000 points" \
  bash -c "[ '$CODE' = 200 ] && [ \"\$($(declare -f js); PY=$PY TMP=$TMP js \"max(len(v['step']) for v in d['jobs']['$A']['metrics'].values())<=1000\")\" = True ]"
get "$B/api/v1/metrics?jobs=$A,99999"
check "an unknown job is 404 naming jobs" bash -c "[ '$CODE' = 404 ] && grep -q '\"field\":\"jobs\"' '$TMP/body'"

# ---- gzip
curl -s "$B/api/v1/jobs/$A/metrics" >"$TMP/plain"
curl -s -D "$TMP/gzhdr" -H 'Accept-Encoding: gzip' "$B/api/v1/jobs/$A/metrics" >"$TMP/gz"
check "a response over 1 KB is gzip-compressed when accepted, and decompresses to the plain answer" \
  bash -c "grep -qi '^content-encoding: gzip' '$TMP/gzhdr' && [ \$(stat -c %s '$TMP/gz') -lt \$(stat -c %s '$TMP/plain') ] && gzip -dc '$TMP/gz' | cmp -s - '$TMP/plain'"
curl -s -D "$TMP/idhdr" -o /dev/null -H 'Accept-Encoding: gzip;q=0' "$B/api/v1/jobs/$A/metrics"
check "no gzip with q=0 (or without Accept-Encoding)" bash -c "! grep -qi '^content-encoding' '$TMP/idhdr'"

# ---- search
get -G "$B/api/v1/jobs" --data-urlencode "q=optimizer.name=adam and summary.test_acc>0.1 and tag=e2ecmp"
check "?q=optimizer.name=adam and summary.test_acc>0.1: only the adam job" \
  bash -c "[ '$CODE' = 200 ] && [ \"\$($(declare -f js); PY=$PY TMP=$TMP js \"[j['id'] for j in d['jobs']]\")\" = '[$C]' ]"
get -G "$B/api/v1/jobs" --data-urlencode "q=optimizer.lr >= 0.05 or seed = 7"
check "?q=optimizer.lr >= 0.05 or seed = 7: only the sgd job" \
  bash -c "[ \"\$($(declare -f js); PY=$PY TMP=$TMP js \"[j['id'] for j in d['jobs']]\")\" = '[$A]' ]"
get -G "$B/api/v1/jobs" --data-urlencode "q=optimizer.name="
check "a malformed query is 400 naming q and the character" \
  bash -c "[ '$CODE' = 400 ] && grep -q '\"field\":\"q\"' '$TMP/body' && grep -q 'character 16' '$TMP/body'"

# ---- PATCH and DELETE
get -X PATCH -H 'Content-Type: application/json' --data-binary '{"name":"renamed","tags":["x1","x2"]}' "$B/api/v1/jobs/$A"
check "PATCH {name, tags}: 200 with the edited job, listed under its new tag" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"name\":\"renamed\"' '$TMP/body' && curl -s '$B/api/v1/jobs?tag=x2' | grep -q '\"id\":$A,' && ! curl -s '$B/api/v1/jobs?tag=e2ecmp' | grep -q '\"id\":$A,'"
get -X PATCH -H 'Content-Type: application/json' --data-binary '{"status":"failed"}' "$B/api/v1/jobs/$A"
check "PATCH of another field is 400 naming it" bash -c "[ '$CODE' = 400 ] && grep -q '\"field\":\"status\"' '$TMP/body'"
LONG=$(job '{"kind":"train","params":{"data":{"name":"fashion-mnist","n_train":2000,"n_test":200},"model":{"hidden":[64]},"batch_size":16,"epochs":50}}')
for _ in $(seq 1 100); do curl -s "$B/api/v1/jobs/$LONG" | grep -q '"status":"running"' && break; sleep 0.1; done
get -X DELETE "$B/api/v1/jobs/$LONG"
check "DELETE of a running job is 409" [ "$CODE" = 409 ]
curl -s -X POST "$B/api/v1/jobs/$LONG/cancel" >/dev/null
get -X DELETE "$B/api/v1/jobs/$C"
check "DELETE of a finished job is 204; the job and its metrics are gone (404)" \
  bash -c "[ '$CODE' = 204 ] && [ \$(curl -s -o /dev/null -w '%{http_code}' '$B/api/v1/jobs/$C') = 404 ] && [ \$(curl -s -o /dev/null -w '%{http_code}' '$B/api/v1/jobs/$C/metrics') = 404 ]"
finish
