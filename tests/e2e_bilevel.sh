#!/usr/bin/env bash
# e2e_bilevel.sh: end-to-end test of the bilevel kinds (hypergradient, influence, short_horizon,
# hyperopt) against the real daemon (called by tests/e2e.sh; runs alone too). About 15 seconds.
#
# Usage: tests/e2e_bilevel.sh path/to/tdlab
#
# Starts `tdlab serve` on a free port with a temporary database and 2 workers, then checks:
#   - hypergradient on ridge (600 heavy-ball steps, where the unroll has converged and the IFT
#     is exact): all four methods meet the closed form to 1e-9 relative (max_rel_diff), the
#     exact reversal recovered (w_0, v_0) bitwise (reversal_mismatch 0), the artifact lists the
#     four methods with time and memory, and the stored trajectory needs more memory than
#     the reversal; the d_lr metric has one point per step;
#   - hypergradient on a small MLP (Fashion-MNIST): reverse, reversal and forward mode agree to
#     1e-9; the Neumann IFT reports lambda_max, alpha and its convergence condition;
#   - influence on ridge: Pearson and Spearman of the influence prediction with the exact
#     leave-one-out change above 0.99, CG and LiSSA meet the exact solve to 1e-8, and the 3
#     flipped labels rank in the top 3 self-influences; influence.json has the top lists;
#   - influence on a small tanh network: retraining without an example (the measured effect)
#     correlates with the prediction above 0.99 (Pearson), and with EK-FAC's (a different
#     curvature: the empirical Fisher) above 0.9;
#   - short_horizon: the greedy schedule loses to the full-horizon one and decays faster, and
#     both schedules are stored as metrics (the job page draws them);
#   - hyperopt: the gradient-based outer loop lowers the validation loss below its start; its
#     summary.random_sweep, POSTed to /api/v1/sweeps (named after the job, as the job page
#     does), runs floor(budget / T) hyperopt trials with outer.steps 0 at log-uniform L2
#     strengths: every child succeeds with a val_loss, the trials' total cost equals the
#     gradient run's budget, a child's val_loss equals an independent job at the same
#     strengths, and the best-so-far of the sweep and the best of the gradient run are both
#     reported (the comparison itself is printed, not asserted); the in-job baseline
#     (random_in_job) is labelled in_job; tuning the learning-rate schedule (20 rates) lowers
#     the loss by more than 5 %;
#   - hypergradient with "hyperparameter": "data_weights": on ridge reverse, reversal and the
#     IFT meet the closed form per example to 1e-8, with one d_weight point per example; on a
#     small MLP the reversal meets reverse mode per example to 1e-9;
#   - refusals, each a 400 naming the field: exact reversal with momentum 0, a test index
#     beyond n_test, ridge on Fashion-MNIST, an unknown hyperparameter, a wrong number of L2
#     strengths (hypergradient and hyperopt).
# Needs bash, curl, grep, awk. Prints one line per check and "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init bilevel "$@"

below() { [ -n "$1" ] && awk -v x="$1" -v hi="$2" 'BEGIN{exit !(x <= hi)}'; }
above() { [ -n "$1" ] && awk -v x="$1" -v lo="$2" 'BEGIN{exit !(x >= lo)}'; }

submit() { # submit JSON -> JOB id (empty on failure)
  post_json /api/v1/jobs "$1"
  JOB=""
  [ "$CODE" = 201 ] && JOB=$(jnum id "$TMP/body")
}
succeeded() { # succeeded ID SECONDS: wait_job, and on anything but success say what the job is
  local st
  st=$(wait_job "$1" "$2") && return 0
  echo "     job $1 is '$st': $(head -c 600 "$TMP/job_$1")"
  return 1
}
expect_400() { # expect_400 NAME FIELD JSON
  post_json /api/v1/jobs "$3"
  local f
  f=$(jstr field "$TMP/body")
  if [ "$CODE" = 400 ] && [ "$f" = "$2" ]; then ok "refused: $1 -> 400 field=$f"
  else bad "refused: $1: got $CODE field '$f': $(head -c 300 "$TMP/body")"; fi
}

e2e_start --workers 2 --batch-ms 100
ok "bilevel: the daemon starts ($BASE)"

# ---------------------------------------------------------------- hypergradient
submit '{"kind":"hypergradient","params":{"inner":"ridge","data":{"name":"synthetic","n":200,"d":8,"noise":0.3},"loss":"mse","steps":600,"lr":0.1,"momentum":0.9,"l2":[0.05,0.2]}}'
HR=$JOB
submit '{"kind":"hypergradient","params":{"data":{"n_train":200,"n_test":200},"model":{"hidden":[16]},"steps":30,"lr":0.05,"l2":[0.001,0.002],"ift":{"solver":"neumann","max_iters":50}}}'
HM=$JOB
submit '{"kind":"hypergradient","params":{"inner":"ridge","hyperparameter":"data_weights","data":{"name":"synthetic","n":60,"d":5,"noise":0.3},"loss":"mse","steps":600,"lr":0.1,"momentum":0.9,"l2":[0.05,0.2]}}'
HW=$JOB
submit '{"kind":"hypergradient","params":{"hyperparameter":"data_weights","data":{"n_train":100,"n_test":100},"model":{"hidden":[8]},"steps":20,"lr":0.05,"methods":{"forward":false}}}'
HWM=$JOB
submit '{"kind":"influence","params":{"inner":"ridge","data":{"name":"synthetic","n":100,"d":5,"noise":0.2},"loss":"mse","damping":0.05,"flip":3,"test_indices":[0,1],"lissa":{"depth":3000}}}'
IR=$JOB
submit '{"kind":"influence","params":{"data":{"name":"synthetic","n":80,"d":4,"n_test":20},"loss":"mse","model":{"hidden":[6],"activation":"tanh"},"train":{"steps":3000,"lr":0.1},"damping":0.05,"loo":{"n":15,"steps":2000},"lissa":{"depth":2000}}}'
IM=$JOB

if succeeded "$HR" 60; then
  f="$TMP/job_$HR"
  check "hypergradient ridge: the four methods meet the closed form to 1e-9 (max_rel_diff $(jnum max_rel_diff "$f"))" \
    below "$(jnum max_rel_diff "$f")" 1e-9
  check "hypergradient ridge: exact reversal recovers (w_0, v_0) bitwise" \
    bash -c "grep -q '\"reversal_mismatch\":0[,}]' '$f'"
  req GET "/api/v1/jobs/$HR/artifacts/hypergradient.json"
  check "hypergradient.json lists reverse, reversal, forward and ift with secs and bytes" \
    bash -c "[ '$CODE' = 200 ] && for m in reverse reversal forward ift; do grep -q \"\\\"\$m\\\":{\\\"d_lambda\\\"\" '$TMP/body' || exit 1; done; grep -q '\"closed_form\"' '$TMP/body'"
  rb=$(jnum bytes_reverse "$f")
  vb=$(jnum bytes_reversal "$f")
  check "the stored trajectory uses more memory than the reversal ($rb vs $vb bytes)" \
    awk -v a="$rb" -v b="$vb" 'BEGIN{exit !(a > 10 * b)}'
  req GET "/api/v1/jobs/$HR/metrics?keys=d_lr"
  check "the d_lr metric has one point per unrolled step (600)" \
    bash -c "grep -q '\"d_lr\":{[^}]*\"total\":600' '$TMP/body'"
else
  bad "hypergradient ridge job succeeds"
fi

if succeeded "$HM" 120; then
  f="$TMP/job_$HM"
  check "hypergradient mlp: reverse, reversal and forward agree to 1e-9 (max_rel_diff $(jnum max_rel_diff "$f"))" \
    below "$(jnum max_rel_diff "$f")" 1e-9
  req GET "/api/v1/jobs/$HM/artifacts/hypergradient.json"
  check "hypergradient mlp: the Neumann IFT reports lambda_max, alpha and its condition" \
    bash -c "grep -q '\"lambda_max\":[0-9]' '$TMP/body' && grep -q '\"alpha_lambda_max\":' '$TMP/body' && grep -q '\"neumann_condition_met\":true' '$TMP/body'"
else
  bad "hypergradient mlp job succeeds"
fi

if succeeded "$HW" 60; then
  f="$TMP/job_$HW"
  check "hypergradient data_weights ridge: reverse, reversal and IFT meet the closed form to 1e-8 ($(jnum d_weights_max_rel_diff "$f"))" \
    bash -c "grep -q '\"d_weights_reference\":\"closed_form\"' '$f' && awk -v a='$(jnum d_weights_max_rel_diff "$f")' 'BEGIN{exit !(a != \"\" && a <= 1e-8)}'"
  req GET "/api/v1/jobs/$HW/metrics?keys=d_weight"
  check "hypergradient data_weights ridge: the d_weight metric has one point per training example (60)" \
    bash -c "grep -q '\"d_weight\":{[^}]*\"total\":60' '$TMP/body'"
else
  bad "hypergradient data_weights ridge job succeeds"
fi
if succeeded "$HWM" 120; then
  f="$TMP/job_$HWM"
  rd=$(grep -o '"d_weights_rel_diff":{[^}]*}' "$f" | grep -o '"reversal":[^,}]*' | sed 's/.*://')
  check "hypergradient data_weights mlp: exact reversal meets reverse mode per example to 1e-9 ($rd)" \
    below "$rd" 1e-9
  req GET "/api/v1/jobs/$HWM/artifacts/hypergradient.json"
  check "hypergradient data_weights mlp: hypergradient.json has 100 weights per method" \
    bash -c "[ \$(grep -o '\"d_weights\":{\"reverse\":\\[[^]]*' '$TMP/body' | tr ',' '\n' | wc -l) = 100 ]"
else
  bad "hypergradient data_weights mlp job succeeds"
fi

# ---------------------------------------------------------------- influence
if succeeded "$IR" 60; then
  f="$TMP/job_$IR"
  check "influence ridge: Pearson with exact leave-one-out >= 0.99 ($(jnum pearson_exact "$f"))" \
    above "$(jnum pearson_exact "$f")" 0.99
  check "influence ridge: Spearman with exact leave-one-out >= 0.99 ($(jnum spearman_exact "$f"))" \
    above "$(jnum spearman_exact "$f")" 0.99
  check "influence ridge: CG and LiSSA meet the exact solve to 1e-8" \
    bash -c "awk -v a='$(jnum rel_err_cg "$f")' -v b='$(jnum rel_err_lissa "$f")' 'BEGIN{exit !(a != \"\" && b != \"\" && a <= 1e-8 && b <= 1e-8)}'"
  check "influence ridge: the 3 flipped labels are the 3 largest self-influences" \
    bash -c "grep -q '\"flipped_in_top\":3[,}]' '$f'"
  req GET "/api/v1/jobs/$IR/artifacts/influence.json"
  check "influence.json has helpful/harmful lists for both test examples and the convention" \
    bash -c "[ \$(grep -o '\"helpful\":\[{\"index\"' '$TMP/body' | wc -l) = 2 ] && grep -q '\"harmful\":\[{\"index\"' '$TMP/body' && grep -q 'positive = harmful' '$TMP/body'"
else
  bad "influence ridge job succeeds"
fi

if succeeded "$IM" 120; then
  f="$TMP/job_$IM"
  check "influence mlp: retraining without each of 15 examples correlates with the prediction (Pearson $(jnum pearson_exact "$f") >= 0.99)" \
    above "$(jnum pearson_exact "$f")" 0.99
  check "influence mlp: the proximal Bregman response (Bae et al. 2022) also matches the prediction (Pearson $(jnum pearson_exact_pbrf "$f") >= 0.99)" \
    above "$(jnum pearson_exact_pbrf "$f")" 0.99
  check "influence mlp: EK-FAC (empirical Fisher) scores correlate with retraining (Pearson $(jnum pearson_ekfac "$f") >= 0.9)" \
    above "$(jnum pearson_ekfac "$f")" 0.9
else
  bad "influence mlp job succeeds"
fi

# ---------------------------------------------------------------- short-horizon bias
submit '{"kind":"short_horizon","params":{"dim":50,"steps":200}}'
SH=$JOB
if succeeded "$SH" 60; then
  f="$TMP/job_$SH"
  check "short_horizon: the greedy schedule loses at the horizon (loss_ratio $(jnum loss_ratio "$f") > 1.1)" \
    above "$(jnum loss_ratio "$f")" 1.1
  check "short_horizon: the greedy schedule decays faster (midpoint lr $(jnum lr_mid_greedy "$f") < $(jnum lr_mid_full "$f"))" \
    awk -v a="$(jnum lr_mid_greedy "$f")" -v b="$(jnum lr_mid_full "$f")" 'BEGIN{exit !(a != "" && a < b)}'
  req GET "/api/v1/jobs/$SH/metrics?keys=lr_greedy,lr_full"
  check "short_horizon: both schedules are metrics with 200 points each" \
    bash -c "[ \$(grep -o '\"total\":200' '$TMP/body' | wc -l) = 2 ]"
else
  bad "short_horizon job succeeds"
fi

# ---------------------------------------------------------------- hyperopt
submit '{"kind":"hyperopt","params":{"data":{"n_train":100,"n_test":100},"model":{"hidden":[8]},"steps":20,"outer":{"steps":6,"lr":0.5}}}'
HO=$JOB
if succeeded "$HO" 90; then
  f="$TMP/job_$HO"
  req GET "/api/v1/jobs/$HO/metrics?keys=outer_val_loss"
  first=$(grep -o '"value":\[[^],]*' "$TMP/body" | sed 's/.*\[//')
  check "hyperopt: the best outer loss is below the initial one ($(jnum best_val_loss_hyperopt "$f") < $first)" \
    awk -v a="$(jnum best_val_loss_hyperopt "$f")" -v b="$first" 'BEGIN{exit !(a != "" && b != "" && a < b)}'
  budget=$(jnum budget "$f")
  ntr=$(jnum random_sweep_trials "$f")
  check "hyperopt: the same-budget sweep has floor(budget / T) = $ntr trials (budget $budget, T 20)" \
    awk -v b="$budget" -v n="$ntr" 'BEGIN{exit !(n != "" && n == int(b / 20) && n >= 3)}'
  # the sweep spec: the balanced JSON object after "random_sweep":, renamed after the job
  spec=$(grep -o '"random_sweep":{.*' "$f" | sed 's/^"random_sweep"://' |
    awk '{d=0; for(i=1;i<=length($0);i++){c=substr($0,i,1); if(c=="{")d++; if(c=="}")d--; printf "%s",c; if(d==0)exit}}' |
    sed "s/\"name\":\"hyperopt-random-search\"/\"name\":\"hyperopt-random-of-job-$HO\"/")
  check "hyperopt: random_sweep is a random sweep of hyperopt trials with outer.steps 0 over l2[0], l2[1]" \
    bash -c "echo '$spec' | grep -q '\"kind\":\"hyperopt\"' && echo '$spec' | grep -q '\"steps\":0' && echo '$spec' | grep -q '\"l2\[1\]\":{\"log_uniform\"' && echo '$spec' | grep -q '\"mode\":\"random\"'"
  post_json /api/v1/sweeps "$spec"
  SW=$(jnum id "$TMP/body")
  if [ "$CODE" = 201 ] && [ -n "$SW" ]; then
    ok "hyperopt: POST /api/v1/sweeps accepts the job's random_sweep (sweep $SW)"
    st=""
    for i in $(seq 1 600); do
      curl -s --max-time 30 -o "$TMP/sweep_$SW" "$BASE/api/v1/sweeps/$SW" 2>/dev/null
      st=$(jstr status "$TMP/sweep_$SW")
      [ "$st" = finished ] && break
      sleep 0.2
    done
    nsucc=$(grep -o '"status":"succeeded"' "$TMP/sweep_$SW" | wc -l)
    nval=$(grep -o '"val_loss":[0-9]' "$TMP/sweep_$SW" | wc -l)
    check "hyperopt sweep: all $ntr trials succeed, each with a val_loss ($nsucc succeeded, $nval val_loss)" \
      bash -c "[ '$st' = finished ] && [ '$nsucc' = '$ntr' ] && [ '$nval' = '$ntr' ]"
    # every trial costs T = 20: the sweep's total budget is the gradient run's (floor)
    tb=$(grep -o '"budget":[0-9.e+]*' "$TMP/sweep_$SW" | sed 's/.*://' | awk '{s+=$1} END{print s}')
    check "hyperopt sweep: the trials' budgets add up to the gradient run's within one trial ($tb vs $budget)" \
      awk -v a="$tb" -v b="$budget" 'BEGIN{exit !(a != "" && a <= b && a > b - 20)}'
    # a child against an independent job at the same strengths (outer.steps 0)
    l2c=$(grep -o '"axis_values":{[^}]*}' "$TMP/sweep_$SW" | head -1 | sed 's/"axis_values"://')
    a0=$(echo "$l2c" | grep -o '"l2\[0\]":[0-9.eE+-]*' | sed 's/.*://')
    a1=$(echo "$l2c" | grep -o '"l2\[1\]":[0-9.eE+-]*' | sed 's/.*://')
    v0=$(grep -o '"summary":{[^}]*' "$TMP/sweep_$SW" | head -1 | grep -o '"val_loss":[0-9.eE+-]*' | sed 's/.*://')
    submit "{\"kind\":\"hyperopt\",\"params\":{\"data\":{\"n_train\":100,\"n_test\":100},\"model\":{\"hidden\":[8]},\"steps\":20,\"outer\":{\"steps\":0},\"l2\":[$a0,$a1]}}"
    if succeeded "$JOB" 60; then
      v1=$(jnum val_loss "$TMP/job_$JOB")
      check "hyperopt sweep: trial 0 (l2 $a0, $a1) gives the val_loss of a separate job at those strengths ($v0 vs $v1)" \
        awk -v a="$v0" -v b="$v1" 'BEGIN{exit !(a != "" && a == b)}'
    else
      bad "hyperopt: a single trial job succeeds"
    fi
    bsw=$(grep -o '"val_loss":[0-9.eE+-]*' "$TMP/sweep_$SW" | sed 's/.*://' | sort -g | head -1)
    echo "     hyperopt best $(jnum best_val_loss_hyperopt "$f") vs random-search sweep best $bsw (same budget $budget)"
    check "the job page's lookup: GET /api/v1/sweeps lists the sweep by the job's name" \
      bash -c "curl -s '$BASE/api/v1/sweeps?limit=50' | grep -q '\"name\":\"hyperopt-random-of-job-$HO\"'"
  else
    bad "hyperopt: POST /api/v1/sweeps accepts the job's random_sweep: $CODE $(head -c 300 "$TMP/body")"
  fi
else
  bad "hyperopt job succeeds"
fi
submit '{"kind":"hyperopt","params":{"data":{"n_train":100,"n_test":100},"model":{"hidden":[8]},"steps":20,"outer":{"steps":2,"lr":0.5},"random_in_job":true}}'
if succeeded "$JOB" 90; then
  f="$TMP/job_$JOB"
  check "hyperopt random_in_job: the in-job baseline is labelled ($(jnum random_trials_in_job "$f") trials, best_val_loss_random_in_job)" \
    bash -c "[ '$(jnum random_trials_in_job "$f")' -ge 3 ] && grep -q '\"best_val_loss_random_in_job\":[0-9]' '$f' && ! grep -q '\"best_val_loss_random\":' '$f'"
else
  bad "hyperopt random_in_job job succeeds"
fi
submit '{"kind":"hyperopt","params":{"data":{"n_train":100,"n_test":100},"model":{"hidden":[8]},"steps":20,"lr":0.05,"tune":"lr_schedule","outer":{"steps":6,"lr":0.3}}}'
HL=$JOB
if succeeded "$HL" 90; then
  f="$TMP/job_$HL"
  req GET "/api/v1/jobs/$HL/metrics?keys=outer_val_loss,lr_best"
  first=$(grep -o '"outer_val_loss":{"step":\[[^]]*\],"value":\[[^],]*' "$TMP/body" | sed 's/.*\[//')
  check "hyperopt lr_schedule: tuning the 20 learning rates lowers the validation loss ($(jnum best_val_loss_hyperopt "$f") < $first)" \
    awk -v a="$(jnum best_val_loss_hyperopt "$f")" -v b="$first" 'BEGIN{exit !(a != "" && b != "" && a < 0.95 * b)}'
  check "hyperopt lr_schedule: the best schedule is a metric with 20 points" \
    bash -c "grep -q '\"lr_best\":{[^}]*\"total\":20' '$TMP/body'"
else
  bad "hyperopt lr_schedule job succeeds"
fi

# ---------------------------------------------------------------- refusals
expect_400 "exact reversal with momentum 0" params.momentum \
  '{"kind":"hypergradient","params":{"momentum":0}}'
expect_400 "a test index beyond n_test" params.test_indices \
  '{"kind":"influence","params":{"data":{"n_test":10},"test_indices":[10]}}'
expect_400 "ridge on fashion-mnist" params.data.name '{"kind":"influence","params":{"inner":"ridge"}}'
expect_400 "an unknown hyperparameter" params.hyperparameter \
  '{"kind":"hypergradient","params":{"hyperparameter":"dropout"}}'
expect_400 "three L2 strengths for two layers" params.l2 \
  '{"kind":"hypergradient","params":{"l2":[0.1,0.2,0.3]}}'
expect_400 "hyperopt: three L2 strengths for two layers" params.l2 \
  '{"kind":"hyperopt","params":{"l2":[0.1,0.2,0.3]}}'

finish
