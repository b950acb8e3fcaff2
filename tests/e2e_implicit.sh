#!/usr/bin/env bash
# e2e_implicit.sh: end-to-end checks of the chapter 8 kinds (implicit regularization and
# Bayesian inference) against the real daemon (called by tests/e2e.sh; runs alone too).
# About 30 s on 2 cores.
#
# Usage: tests/e2e_implicit.sh path/to/tdlab
#
# Starts `tdlab serve` on a free port with a temporary database and 2 workers, then checks:
#   - early_stopping: the GD iterate equals its spectral closed form (gd_closed_form_err_max
#     < 1e-12), the metrics carry both risks and filters, filters.json exists;
#   - max_margin: the GD direction is within 0.05 of the LDP/NNLS max-margin direction after
#     1e5 steps, the normalized margin is below the max margin, max_margin.json exists;
#   - langevin (SGLD, B = 5): the running variances are within 4.5 standard errors of the
#     discretized chain's closed form (var_z);
#   - blr: the Laplace evidence equals the exact Bayesian linear regression evidence;
#   - laplace (Fashion-MNIST 1000/1000, 784-32-10, last layer, all three structures): the
#     GLM predictive's NLL and ECE are below the MAP network's, its accuracy within 1 point,
#     and reliability.json / marglik.json exist;
#   - laplace started from a train job's checkpoint without training: its MAP NLL equals the
#     parent's test loss;
#   - igr (2d): the log-log slopes of the distances GD-to-flow and GD-to-modified-flow are
#     about 1 and 2 (in [0.9, 1.25] and [1.85, 2.2]);
#   - bad params: 400 naming the field (langevin lr * curvature >= 2, laplace full GGN above
#     its cap, igr an eta longer than the time).
# Needs bash, curl, grep, sed, awk. Prints one line per check and "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init implicit "$@"

lt() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN{exit !(a < b)}'; }

expect_400() { # expect_400 NAME FIELD JSON
  local code
  code=$(curl -s -o "$TMP/err" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary "$3" "$SRV_BASE/api/v1/jobs")
  if [ "$code" = 400 ] && grep -q "\"field\":\"$2\"" "$TMP/err"; then
    ok "bad params: $1 -> 400 field=$2"
  else
    bad "bad params: $1: got $code $(head -c 300 "$TMP/err")"
  fi
}

e2e_start --workers 2 --batch-ms 100
ok "implicit: the daemon starts ($SRV_BASE, 2 workers)"

ES=$(srv_submit '{"kind":"early_stopping","params":{"data":{"n":100,"d":50},"lr":0.3,"steps":500}}')
MM=$(srv_submit '{"kind":"max_margin","params":{"steps":100000,"seed":3}}')
LG=$(srv_submit '{"kind":"langevin","params":{"steps":400000,"batch_size":5,"seed":1}}')
IG=$(srv_submit '{"kind":"igr","params":{"problem":"2d"}}')
SG=$(srv_submit '{"kind":"train","params":{"data":{"name":"fashion-mnist","n_train":500,"n_test":200},"model":{"hidden":[16]},"steps":50,"batch_size":50,"optimizer":{"name":"sgld","lr":0.05,"temperature":0.5}}}')
TR=$(srv_submit '{"kind":"train","params":{"data":{"name":"fashion-mnist","n_train":1000,"n_test":500},"model":{"hidden":[32]},"epochs":5,"batch_size":100,"optimizer":{"lr":0.1,"momentum":0.9},"checkpoint_every":50}}')
BL=$(srv_submit '{"kind":"blr","params":{"data":{"n":50,"d":10}}}')
LP=$(srv_submit '{"kind":"laplace","params":{"data":{"n_train":1000,"n_test":1000},"epochs":30,"optimizer":{"lr":0.1,"momentum":0.9},"laplace":{"samples":50}}}')

st=$(wait_job "$ES" 60)
check "early_stopping succeeds and its GD iterate equals the spectral closed form (< 1e-12)" \
  bash -c "[ '$st' = succeeded ] && awk -v x='$(jnum gd_closed_form_err_max "$TMP/job_$ES")' 'BEGIN{exit !(x < 1e-12)}'"
curl -s "$SRV_BASE/api/v1/jobs/$ES/metrics?keys=risk_gd,risk_ridge,filter/0_gd,filter/0_ridge&max_points=50" >"$TMP/es_m"
check "early_stopping logs both risks and both filters" \
  bash -c "grep -q '\"risk_gd\"' '$TMP/es_m' && grep -q '\"risk_ridge\"' '$TMP/es_m' && grep -q '\"filter/0_ridge\"' '$TMP/es_m'"
check "early_stopping writes filters.json" \
  bash -c "curl -s '$SRV_BASE/api/v1/jobs/$ES/artifacts/filters.json' | grep -q '\"filter_gd\"'"

st=$(wait_job "$MM" 60)
dd=$(jnum dir_dist "$TMP/job_$MM")
check "max_margin: GD's direction within 0.05 of the hard-margin SVM direction (dir_dist $dd)" \
  bash -c "[ '$st' = succeeded ] && awk -v x='$dd' 'BEGIN{exit !(x < 0.05)}'"
check "max_margin: normalized margin below the max margin, max_margin.json has w_hat" \
  bash -c "lt() { awk -v a=\"\$1\" -v b=\"\$2\" 'BEGIN{exit !(a <= b)}'; };
           lt '$(jnum margin "$TMP/job_$MM")' '$(jnum max_margin "$TMP/job_$MM")' &&
           curl -s '$SRV_BASE/api/v1/jobs/$MM/artifacts/max_margin.json' | grep -q '\"w_hat\"'"

st=$(wait_job "$LG" 60)
z=$(grep -o '"var_z":\[[^]]*\]' "$TMP/job_$LG" | sed 's/.*\[\(.*\)\]/\1/')
check "langevin (SGLD): running variances within 4.5 standard errors of the closed form (z = $z)" \
  bash -c "[ '$st' = succeeded ] && echo '$z' | tr ',' '\n' | awk '{ if (\$1 > 4.5 || \$1 < -4.5) bad = 1; n++ } END { exit !(n == 2 && !bad) }'"

st=$(wait_job "$IG" 60)
sf=$(jnum slope_flow "$TMP/job_$IG")
sm=$(jnum slope_mod "$TMP/job_$IG")
check "igr (2d): slope GD-to-flow $sf ~ 1 and GD-to-modified-flow $sm ~ 2" \
  bash -c "[ '$st' = succeeded ] && awk -v a='$sf' -v b='$sm' 'BEGIN{exit !(a >= 0.9 && a <= 1.25 && b >= 1.85 && b <= 2.2)}'"

st=$(wait_job "$SG" 60)
check "train with optimizer sgld succeeds with its temperature in the stored params" \
  bash -c "[ '$st' = succeeded ] && grep -q '\"temperature\":0.5' '$TMP/job_$SG' && grep -q '\"name\":\"sgld\"' '$TMP/job_$SG'"

st=$(wait_job "$BL" 60)
check "blr: the Laplace evidence equals the exact evidence over the alpha grid (< 1e-9)" \
  bash -c "[ '$st' = succeeded ] && awk -v x='$(jnum log_evidence_err_max "$TMP/job_$BL")' 'BEGIN{exit !(x < 1e-9)}'"

st=$(wait_job "$LP" 240)
mn=$(jnum map/nll "$TMP/job_$LP"); me=$(jnum map/ece "$TMP/job_$LP"); ma=$(jnum map/acc "$TMP/job_$LP")
gn=$(jnum kfac/glm_nll "$TMP/job_$LP"); ge=$(jnum kfac/glm_ece "$TMP/job_$LP"); ga=$(jnum kfac/glm_acc "$TMP/job_$LP")
check "laplace (K-FAC, last layer): NLL $mn -> $gn and ECE $me -> $ge improve, accuracy $ma -> $ga kept" \
  bash -c "[ '$st' = succeeded ] && awk -v mn='$mn' -v gn='$gn' -v me='$me' -v ge='$ge' -v ma='$ma' -v ga='$ga' \
           'BEGIN{exit !(gn < mn && ge < me && ga >= ma - 0.01)}'"
check "laplace: full and diag structures report evidence and predictive metrics" \
  bash -c "grep -q '\"full/log_marglik\"' '$TMP/job_$LP' && grep -q '\"diag/nn_ece\"' '$TMP/job_$LP'"
check "laplace writes reliability.json and marglik.json" \
  bash -c "curl -s '$SRV_BASE/api/v1/jobs/$LP/artifacts/reliability.json' | grep -q '\"confidence\"' &&
           curl -s '$SRV_BASE/api/v1/jobs/$LP/artifacts/marglik.json' | grep -q '\"log_marglik\"'"

st=$(wait_job "$TR" 120)
LC=$(srv_submit '{"kind":"laplace","params":{"data":{"n_train":1000,"n_test":500},"model":{"hidden":[32]},"steps":1,"init_from":{"job":'"$TR"',"step":50},"laplace":{"train":false,"structure":"kfac","samples":20}}}')
st2=$(wait_job "$LC" 120)
tl=$(jnum test_loss "$TMP/job_$TR"); mn=$(jnum map/nll "$TMP/job_$LC")
check "laplace from another job's checkpoint (laplace.train false): its MAP NLL $mn is the parent's test loss $tl" \
  bash -c "[ '$st' = succeeded ] && [ '$st2' = succeeded ] && awk -v a='$tl' -v b='$mn' 'BEGIN{d = a - b; if (d < 0) d = -d; exit !(d <= 1e-9 * a)}'"

expect_400 "langevin lr * curvature >= 2" params.lr '{"kind":"langevin","params":{"lr":3,"curvatures":[1]}}'
expect_400 "laplace full GGN over all 25450 parameters" params.laplace.structure \
  '{"kind":"laplace","params":{"laplace":{"structure":"full","subset":"all"}}}'
expect_400 "igr eta above the time" params.lrs '{"kind":"igr","params":{"lrs":[0.5],"time":0.1}}'

finish
