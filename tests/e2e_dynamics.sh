#!/usr/bin/env bash
# e2e_dynamics.sh: end-to-end test of the `momentum` and `game` kinds (chapters 9, 10) (called by
# tests/e2e.sh; runs alone too). About 20 s on 2 cores.
#
# Usage: tests/e2e_dynamics.sh path/to/tdlab
#
# Starts `tdlab serve` on a free port with a temporary database and 2 workers, then checks:
#   - momentum: Polyak's heavy ball on kappa = 100 reports the rate (sqrt k - 1)/(sqrt k + 1)
#     and the stability_region.json, modes.json and tuned.json artifacts;
#   - game: the bilinear game under simultaneous GDA spirals out at sqrt(1 + lr^2) and
#     succeeds (no divergence rule), alternating GDA stays bounded, extragradient contracts
#     at sqrt(1 - lr^2 + lr^4); phase-plane and eigenvalue metrics exist;
#   - the Dirac-GAN: eigenvalues +-i/2 at the equilibrium, no convergence without a penalty,
#     convergence with R1;
#   - a tiny gan_mixture run writes sample artifacts and mode counts;
#   - bad params: 400 naming the field.
# Needs bash, curl, grep, sed, awk. Prints one line per check and "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init dynamics "$@"

# ---------------------------------------------------------------- start

e2e_start --workers 2 --batch-ms 100
ok "dynamics: the daemon starts ($BASE, 2 workers)"

submit() { # submit JSON: the new job's id
  post_json /api/v1/jobs "$1"
  jnum id "$TMP/body"
}
sumnum() { grep -o "\"$1\":-\{0,1\}[0-9][0-9.eE+-]*" "$2" | head -1 | sed 's/^"[^"]*"://'; }

# ---------------------------------------------------------------- momentum

M=$(submit '{"kind":"momentum","params":{"kappa":100,"n":20,"tuning":"optimal","steps":300}}')
st=$(wait_job "$M" 60)
rate=$(sumnum predicted_rate "$TMP/job_$M")
check "momentum: Polyak's heavy ball succeeds with rate 9/11 = (sqrt 100 - 1)/(sqrt 100 + 1) (got $rate)" \
  bash -c "[ '$st' = succeeded ] && within '$rate' 0.8181817 0.8181820"
obs=$(sumnum observed_rate "$TMP/job_$M")
check "momentum: the observed rate is within 1% of it (got $obs)" within "$obs" 0.81 0.8265
req GET "/api/v1/jobs/$M/artifacts/stability_region.json"
check "momentum: stability_region.json has the grid and the boundaries" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"rho_heavy_ball\"' '$TMP/body' && grep -q '\"boundary_lr\"' '$TMP/body' && grep -q '\"nesterov\"' '$TMP/body'"
req GET "/api/v1/jobs/$M/artifacts/modes.json"
check "momentum: modes.json has per-mode matrices, radii and damping" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"damping\":\"under\"' '$TMP/body' && grep -q '\"matrix\"' '$TMP/body'"

# ---------------------------------------------------------------- games

S=$(submit '{"kind":"game","params":{"game":{"name":"bilinear","A":[[1]]},"algorithm":"simultaneous","lr":0.1,"steps":300}}')
A=$(submit '{"kind":"game","params":{"game":{"name":"bilinear"},"algorithm":"alternating","lr":0.1,"steps":300}}')
E=$(submit '{"kind":"game","params":{"game":{"name":"bilinear"},"algorithm":"extragradient","lr":0.1,"steps":300}}')
st=$(wait_job "$S" 60)
r=$(sumnum observed_rate "$TMP/job_$S")
check "game: simultaneous GDA spirals out at sqrt(1.01) and the job succeeds (got $st, $r)" \
  bash -c "[ '$st' = succeeded ] && within '$r' 1.0049875621 1.0049875622"
st=$(wait_job "$A" 60)
dmax=$(sumnum dist_max "$TMP/job_$A")
check "game: alternating GDA stays on a bounded orbit (dist_max $dmax <= 1.5)" \
  bash -c "[ '$st' = succeeded ] && within '$dmax' 1.414 1.5"
st=$(wait_job "$E" 60)
r=$(sumnum observed_rate "$TMP/job_$E")
check "game: extragradient contracts at sqrt(0.9901) (got $r)" within "$r" 0.9950376877 0.9950376878
req GET "/api/v1/jobs/$S/metrics?keys=x/0,y/0,jacobian_eig_im/0,update_spectral_radius"
check "game: phase-plane and eigenvalue metrics are there" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"x/0\"' '$TMP/body' && grep -q '\"y/0\"' '$TMP/body' && grep -q '\"jacobian_eig_im/0\"' '$TMP/body' && grep -q '\"update_spectral_radius\"' '$TMP/body'"

D0=$(submit '{"kind":"game","params":{"game":{"name":"dirac_gan"},"algorithm":"simultaneous","lr":0.1,"steps":500}}')
D1=$(submit '{"kind":"game","params":{"game":{"name":"dirac_gan","penalty":"r1","penalty_weight":1},"algorithm":"simultaneous","lr":0.1,"steps":500}}')
st=$(wait_job "$D0" 60)
d=$(sumnum dist_final "$TMP/job_$D0")
im=$(grep -o '"jacobian_eig_at_equilibrium":{"re":\[[^]]*\],"im":\[[-0-9.eE+]*' "$TMP/job_$D0" | sed 's/.*\[//')
check "dirac_gan: eigenvalues +-i/2 at the equilibrium (im $im) and no convergence without a penalty (dist $d)" \
  bash -c "[ '$st' = succeeded ] && within '$im' 0.4999999999 0.5000000001 && within '$d' 0.5 1e9"
st=$(wait_job "$D1" 60)
d=$(sumnum dist_final "$TMP/job_$D1")
check "dirac_gan: R1 converges (dist $d)" bash -c "[ '$st' = succeeded ] && within '$d' 0 1e-6"

G=$(submit '{"kind":"game","params":{"game":{"name":"gan_mixture","hidden":8,"depth":2,"batch":32,"n_samples":200,"sample_every":10},"algorithm":"consensus","gamma":10,"lr":0.001,"steps":20}}')
st=$(wait_job "$G" 60)
req GET "/api/v1/jobs/$G/artifacts/samples_step20.json"
check "gan_mixture: a tiny consensus run succeeds and writes samples with centres" \
  bash -c "[ '$st' = succeeded ] && [ '$CODE' = 200 ] && grep -q '\"centres\"' '$TMP/body' && grep -q '\"modes_covered\"' '$TMP/body'"

# ---------------------------------------------------------------- bad params

bad_job() { expect_error "$1" 400 "$2" POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "$3"; }
bad_job "ragged A" "params.game.A[1]" '{"kind":"game","params":{"game":{"A":[[1,2],[3]]}}}'
bad_job "init of the wrong length" "params.init" '{"kind":"game","params":{"game":{"A":[[1,2]]},"init":[1,2]}}'
bad_job "unknown algorithm" "params.algorithm" '{"kind":"game","params":{"algorithm":"gda"}}'
bad_job "a penalty on the bilinear game" "params.game.penalty" '{"kind":"game","params":{"game":{"penalty":"r1"}}}'
bad_job "momentum with gd" "params.momentum" '{"kind":"momentum","params":{"method":"gd","momentum":0.5}}'
bad_job "eos nesterov without momentum" "params.nesterov" '{"kind":"eos","params":{"nesterov":true}}'
req GET /healthz
check "the daemon is healthy afterwards" bash -c "[ '$CODE' = 200 ] && kill -0 $PID"

finish
