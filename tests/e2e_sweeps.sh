#!/usr/bin/env bash
# e2e_sweeps.sh: end-to-end test of sweeps and fits against the real daemon (called by
# tests/e2e.sh; runs alone too). About 30 s on 2 cores.
#
# Usage: tests/e2e_sweeps.sh path/to/tdlab
#
# Starts `tdlab serve` on a free port with a temporary database and 2 workers, then checks:
#   - an nqm batch-size sweep (steps to target, lr tuned per batch size) with a critical_batch
#     fit: 201 + Location, every child created, the sweep finishes, the fit has B_crit;
#   - a tiny `train` width sweep on Fashion-MNIST with a power_offset fit of
#     summary.test_loss against summary.n_params;
#   - early stopping: an nqm lr sweep with ASHA ends the slow children as `pruned`;
#   - cancelling a sweep (queued children at once, the running one at its next step);
#   - the list, the children in the jobs list (?sweep= and ?tag=sweep:ID), the dashboard page;
#   - POST /api/v1/fits recovering Chinchilla (Hoffmann et al. 2022: E 1.69, A 406.4,
#     alpha 0.34, B 410.7, beta 0.28) and a power law from points generated from them;
#   - bad sweeps and bad fits: 4xx JSON errors naming the field (a bad point names the point,
#     and no child is created).
# Needs bash, curl, grep, sed, awk. Prints one line per check and "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init sweeps "$@"

bad_sweep() { expect_error "$1" "$2" "$3" POST /api/v1/sweeps -H 'Content-Type: application/json' --data-binary "$4"; }
bad_fit() { expect_error "$1" "$2" "$3" POST /api/v1/fits -H 'Content-Type: application/json' --data-binary "$4"; }

# wait_sweep ID STATUS SECONDS: poll until the sweep's status is STATUS ($TMP/sweep_ID).
wait_sweep() {
  local id="$1" want="$2" secs="$3" st=""
  local deadline=$((SECONDS + secs))
  while [ $SECONDS -le $deadline ]; do
    curl -s --max-time 30 -o "$TMP/sweep_$id" "$BASE/api/v1/sweeps/$id" 2>/dev/null
    st=$(jstr status "$TMP/sweep_$id")
    [ "$st" = "$want" ] && return 0
    sleep 0.3
  done
  echo "     sweep $id is '$st', wanted '$want': $(head -c 400 "$TMP/sweep_$id")"
  return 1
}
n_jobs() { curl -s --max-time 10 "$BASE/api/v1/jobs?limit=1000" | grep -o '"kind":' | wc -l; }

# ---------------------------------------------------------------- start

e2e_start --workers 2 --batch-ms 100
ok "sweeps: the daemon starts ($BASE, 2 workers)"

# ---------------------------------------------------------------- an nqm batch-size scan

NQM='{"name":"e2e-nqm-bs","kind":"nqm","base":{"dim":100,"target_loss":0.01,"max_steps":100000,"tune_lr":true},"axes":{"batch_size":{"values":[1,4,16,64,256,1024,4096]}},"fit":{"law":"critical_batch","x":"params.batch_size","y":"summary.steps_to_target","bootstrap":100}}'
post_json /api/v1/sweeps "$NQM"
S1=$(jnum id "$TMP/body")
check "POST /api/v1/sweeps answers 201 with the sweep, its 7 children and a Location" \
  bash -c "[ '$CODE' = 201 ] && grep -qi '^location: /api/v1/sweeps/$S1' '$TMP/hdr' &&
           [ \$(grep -o '\"axis_values\":' '$TMP/body' | wc -l) = 7 ] && grep -q '\"n_children\":7' '$TMP/body'"
check "the children are ordinary jobs tagged sweep:$S1 with sweep_id $S1" \
  bash -c "curl -s '$BASE/api/v1/jobs?tag=sweep:$S1' | grep -o '\"sweep_id\":$S1' | wc -l | grep -qx 7 &&
           curl -s '$BASE/api/v1/jobs?sweep=$S1' | grep -o '\"kind\":\"nqm\"' | wc -l | grep -qx 7"

# ---------------------------------------------------------------- a tiny train width sweep

WIDTH='{"name":"e2e-width","kind":"train","base":{"data":{"name":"fashion-mnist","n_train":2000,"n_test":500},"batch_size":64,"epochs":2,"optimizer":{"name":"sgd","lr":0.1,"momentum":0.9}},"axes":{"model.hidden[0]":{"values":[8,16,32,64,128]}},"fit":{"law":"power_offset","x":"summary.n_params","y":"summary.test_loss","bootstrap":100}}'
post_json /api/v1/sweeps "$WIDTH"
S2=$(jnum id "$TMP/body")
check "a train width sweep is created (5 children)" bash -c "[ '$CODE' = 201 ] && grep -q '\"n_children\":5' '$TMP/body'"

check "the nqm sweep $S1 finishes" wait_sweep "$S1" finished 90
F="$TMP/sweep_$S1"
check "every nqm child succeeded with a steps_to_target" \
  bash -c "grep -q '\"succeeded\":7' '$F' && [ \$(grep -o '\"steps_to_target\":[0-9]' '$F' | wc -l) = 7 ]"
BC=$(fitval B_crit "$F")
SMIN=$(fitval S_min "$F")
# The nqm kind is exact (moment propagation) and tune_lr is deterministic, so the fit's point
# estimate is too: these batch sizes are 7 of the 13 of docs/sweeps.md's "nqm-sgd" sweep
# (same steps to target), whose fit is B_crit = 500 [443, 668], S_min = 63.2 [47.4, 69.4]
# (measured here: 499.8 and 63.2). Bound: the documented 95% bootstrap intervals.
check "the critical_batch fit has B_crit ($BC in [443, 668]) and S_min ($SMIN in [47.4, 69.4]) with 95% intervals" \
  bash -c "within '$BC' 443 668 && within '$SMIN' 47.4 69.4 && grep -q '\"B_crit\":{\"value\":[0-9.eE+-]*,\"ci95\":\[' '$F' &&
           grep -q '\"E_min\"' '$F' && grep -q '\"n_points\":7' '$F' && grep -q '\"points\":\[{' '$F'"

check "the train width sweep $S2 finishes" wait_sweep "$S2" finished 120
F2="$TMP/sweep_$S2"
ALPHA=$(fitval alpha "$F2")
EW=$(fitval E "$F2")
# docs/sweeps.md's width scan (full data, 3 epochs, widths 4-1024) fits alpha = 1.33
# [0.91, 1.87], E = 0.377; this smaller one (2000 examples, 2 epochs, widths 8-128) saturates
# faster in width, so its alpha is steeper (measured 1.98) and its floor higher (E measured
# 0.83). Bounds: alpha in [0.9, 3.0] (the documented interval's lower end; 1.5x the measured
# value) and E in [0.377, 1.25] (less data and training cannot reach below the documented
# full-data E; 1.5x the measured value).
check "its power_offset fit of test_loss on n_params has E, A, alpha (alpha=$ALPHA in [0.9, 3], E=$EW in [0.377, 1.25])" \
  bash -c "grep -q '\"succeeded\":5' '$F2' && grep -q '\"law\":\"power_offset\"' '$F2' &&
           within '$ALPHA' 0.9 3.0 && within '$EW' 0.377 1.25 && grep -q '\"x\":\"summary.n_params\"' '$F2' && ! grep -q '\"fit\":{[^}]*\"error\"' '$F2'"

# ---------------------------------------------------------------- early stopping

ES='{"name":"e2e-asha","kind":"nqm","max_concurrency":1,"base":{"dim":100,"max_steps":3000,"batch_size":16},"axes":{"lr":{"values":[0.5,0.05,0.005]}},"early_stopping":{"rule":"asha","metric":"loss","min_steps":100,"eta":3}}'
post_json /api/v1/sweeps "$ES"
S3=$(jnum id "$TMP/body")
check "an ASHA sweep is created" bash -c "[ '$CODE' = 201 ] && grep -q '\"early_stopping\":{\"rule\":\"asha\"' '$TMP/body'"
check "it finishes" wait_sweep "$S3" finished 60
check "the slow learning rates end as pruned, with the reason in error" \
  bash -c "grep -q '\"pruned\":2' '$TMP/sweep_$S3' && grep -q '\"succeeded\":1' '$TMP/sweep_$S3' &&
           [ \$(grep -o '\"error\":\"pruned by early stopping: asha: at rung 100' '$TMP/sweep_$S3' | wc -l) = 2 ]"
req GET "/api/v1/jobs?sweep=$S3&status=pruned"
check "GET /api/v1/jobs?status=pruned lists them" bash -c "[ '$CODE' = 200 ] && [ \$(grep -o '\"status\":\"pruned\"' '$TMP/body' | wc -l) = 2 ]"

# ---------------------------------------------------------------- cancel

SLOW='{"name":"e2e-cancel","kind":"train","max_concurrency":1,"base":{"data":{"name":"fashion-mnist","n_train":20000,"n_test":500},"model":{"hidden":[256,256]},"batch_size":32,"epochs":200,"eval_every":1000000},"axes":{"seed":{"values":[1,2,3]}}}'
post_json /api/v1/sweeps "$SLOW"
S4=$(jnum id "$TMP/body")
for _ in $(seq 1 100); do
  curl -s -o "$TMP/s4" "$BASE/api/v1/sweeps/$S4?children=0"
  grep -q '"running":1' "$TMP/s4" && break
  sleep 0.1
done
check "max_concurrency 1: one child runs, two wait" bash -c "grep -q '\"running\":1' '$TMP/s4' && grep -q '\"queued\":2' '$TMP/s4'"
req POST "/api/v1/sweeps/$S4/cancel"
check "POST /api/v1/sweeps/$S4/cancel: 202, the queued children are cancelled at once" \
  bash -c "[ '$CODE' = 202 ] && grep -q '\"status\":\"cancelled\"' '$TMP/body' && grep -q '\"cancelled\":2' '$TMP/body'"
check "the running child stops: every child is cancelled" \
  bash -c "for i in \$(seq 1 100); do curl -s '$BASE/api/v1/sweeps/$S4?children=0' | grep -q '\"cancelled\":3' && exit 0; sleep 0.2; done; exit 1"
expect_error "cancel a cancelled sweep" 409 - POST "/api/v1/sweeps/$S4/cancel"

# ---------------------------------------------------------------- list and dashboard

req GET /api/v1/sweeps
check "GET /api/v1/sweeps lists the 4 sweeps newest first with counts" \
  bash -c "[ '$CODE' = 200 ] && [ \$(grep -o '\"counts\":{' '$TMP/body' | wc -l) = 4 ] && grep -q '^{\"sweeps\":\[{\"id\":$S4,' '$TMP/body'"
req GET "/api/v1/sweeps?limit=1"
check "the list pages with a cursor" bash -c "[ '$CODE' = 200 ] && grep -q '\"next_cursor\":\"$S4\"' '$TMP/body'"
req GET "/sweep.html?id=$S1"
check "GET /sweep.html serves the sweep page" bash -c "[ '$CODE' = 200 ] && grep -qi '^content-type: text/html' '$TMP/hdr'"

# ---------------------------------------------------------------- POST /api/v1/fits

# Points from Chinchilla's fitted law (Hoffmann et al. 2022, eq. 10) on a 6 x 6 grid.
pts=$(awk 'BEGIN{
  n=0; for (i=0;i<6;i++) for (j=0;j<6;j++) {
    N = 1e7 * 10^(i*0.6); D = 1e9 * 10^(j*0.5);
    L = 1.69 + 406.4 / N^0.34 + 410.7 / D^0.28;
    printf("%s{\"N\":%.10g,\"D\":%.10g,\"L\":%.17g}", n++ ? "," : "", N, D, L) } }')
post_json /api/v1/fits "{\"law\":\"chinchilla\",\"points\":[$pts],\"bootstrap\":20}"
cp "$TMP/body" "$TMP/chin"
E=$(fitval E "$TMP/chin"); AL=$(fitval alpha "$TMP/chin"); BE=$(fitval beta "$TMP/chin")
check "POST /api/v1/fits recovers Chinchilla's law (E=$E alpha=$AL beta=$BE; 1.69, 0.34, 0.28)" \
  bash -c "[ '$CODE' = 200 ] && within '$E' 1.6731 1.7069 && within '$AL' 0.3366 0.3434 && within '$BE' 0.2772 0.2828 &&
           grep -q '\"compute_optimal\":{' '$TMP/chin' && grep -q '\"n_points\":36' '$TMP/chin'"
pts=$(awk 'BEGIN{ for (i=0;i<10;i++) { x = 1e3 * 10^(i*0.4); printf("%s{\"x\":%.10g,\"y\":%.17g}", i ? "," : "", x, 0.3 + 40 * x^-0.45) } }')
post_json /api/v1/fits "{\"law\":\"power_offset\",\"points\":[$pts],\"bootstrap\":50,\"seed\":3}"
AL=$(fitval alpha "$TMP/body")
check "POST /api/v1/fits recovers a power law (alpha=$AL; 0.45) with intervals and residuals" \
  bash -c "[ '$CODE' = 200 ] && within '$AL' 0.4455 0.4545 && grep -q '\"ci95\":\[' '$TMP/body' && grep -q '\"residuals\":\[' '$TMP/body'"
post_json /api/v1/fits '{"law":"critical_batch","points":[{"B":1,"S":65000},{"B":16,"S":5000},{"B":256,"S":1250},{"B":4096,"S":1015.6}],"bootstrap":0}'
check "critical_batch with bootstrap 0: B_crit about 64, intervals null" \
  bash -c "[ '$CODE' = 200 ] && within '$(fitval B_crit "$TMP/body")' 60 68 && grep -q '\"ci95\":null' '$TMP/body'"

bad_fit "fit without a law" 400 law '{"points":[{"x":1,"y":1}]}'
bad_fit "fit with an unknown law" 400 law '{"law":"exponential","points":[]}'
bad_fit "fit with an unknown key in a point" 400 'points[0].z' '{"law":"power_offset","points":[{"x":1,"y":2,"z":3},{"x":2,"y":1.5},{"x":3,"y":1.2},{"x":4,"y":1.1}]}'
bad_fit "fit with a non-positive y" 400 'points[2].y' '{"law":"power_offset","points":[{"x":1,"y":1},{"x":2,"y":0.5},{"x":3,"y":-1},{"x":4,"y":0.2}]}'
bad_fit "fit with a missing field" 400 'points[0].S' '{"law":"critical_batch","points":[{"B":1},{"B":2,"S":3},{"B":3,"S":2}]}'
bad_fit "fit with too few points" 400 - '{"law":"power_offset","points":[{"x":1,"y":1}]}'
bad_fit "fit with an unknown field" 400 foo '{"law":"power_offset","points":[],"foo":1}'
bad_fit "fit with bootstrap out of range" 400 bootstrap '{"law":"power_offset","points":[{"x":1,"y":1},{"x":2,"y":0.5},{"x":3,"y":0.3},{"x":4,"y":0.2}],"bootstrap":-1}'
awk 'BEGIN{ printf("{\"law\":\"power_offset\",\"points\":["); for (i=0;i<10001;i++) printf("%s{\"x\":%d,\"y\":1}", i ? "," : "", i+1); printf("]}") }' >"$TMP/big.json"
bad_fit "fit with too many points" 400 points "@$TMP/big.json"
pts=$(awk 'BEGIN{ for (i=0;i<2000;i++) printf("%s{\"x\":%d,\"y\":%g}", i ? "," : "", i+1, 1+1/(i+1)) }')
bad_fit "fit whose bootstrap would take too long" 400 bootstrap "{\"law\":\"power_offset\",\"points\":[$pts],\"bootstrap\":1000}"
bad_fit "fit with malformed JSON" 400 - '{"law":'
expect_error "fit without Content-Type: application/json" 415 - POST /api/v1/fits --data-binary '{"law":"power_offset"}'

# ---------------------------------------------------------------- bad sweeps

before=$(n_jobs)
bad_sweep "sweep with a bad point (names it)" 400 axes.batch_size \
  '{"kind":"nqm","axes":{"batch_size":{"values":[4,0,8]}}}'
check "the error names point 1 and its value" grep -q 'point 1 (batch_size=0)' "$TMP/body"
bad_sweep "sweep whose last point is bad" 400 axes.lr \
  '{"kind":"nqm","axes":{"lr":{"values":[0.1,0.2,-1]}},"seeds":2}'
check "no child was created by the bad sweeps" bash -c "[ '$(n_jobs)' = '$before' ]"
bad_sweep "sweep of an unknown kind" 400 kind '{"kind":"nope","axes":{}}'
bad_sweep "sweep with an unknown field" 400 colour '{"kind":"nqm","colour":"red"}'
bad_sweep "sweep with a bad axis spec" 400 axes.lr '{"kind":"nqm","axes":{"lr":{"values":[]}}}'
bad_sweep "grid sweep with a uniform axis" 400 axes.lr '{"kind":"nqm","axes":{"lr":{"uniform":[0.1,1]}}}'
bad_sweep "random sweep without samples" 400 samples '{"kind":"nqm","mode":"random","axes":{"lr":{"log_uniform":[0.01,1]}}}'
bad_sweep "sweep with too many children" 400 axes '{"kind":"nqm","axes":{"batch_size":{"values":[1,2,3,4,5,6,7,8,9,10]},"dim":{"values":[1,2,3,4,5,6,7,8,9,10]},"lr":{"values":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,1.1]}}}'
bad_sweep "sweep with a bad early_stopping rule" 400 early_stopping.rule '{"kind":"nqm","early_stopping":{"rule":"hyperband","metric":"loss"}}'
bad_sweep "sweep with a bad fit law" 400 fit.law '{"kind":"nqm","fit":{"law":"linear","x":"params.lr","y":"summary.final_loss"}}'
bad_sweep "sweep with malformed JSON" 400 - '{"kind":'
bad_sweep "sweep that is not an object" 400 - '[1,2]'
check "still no child created" bash -c "[ '$(n_jobs)' = '$before' ]"
expect_error "GET an unknown sweep" 404 - GET /api/v1/sweeps/999999
expect_error "GET a sweep with a bad id" 404 - GET /api/v1/sweeps/abc
expect_error "DELETE a sweep" 405 - DELETE "/api/v1/sweeps/$S1"
expect_error "cancel a finished sweep" 409 - POST "/api/v1/sweeps/$S1/cancel"
expect_error "sweeps list with a bad limit" 400 limit GET "/api/v1/sweeps?limit=0"
req GET /healthz
check "the daemon is healthy afterwards" bash -c "[ '$CODE' = 200 ] && kill -0 $PID"

finish
