#!/usr/bin/env bash
# e2e_kernels.sh: end-to-end test of POST /api/v1/kernels against the real daemon (called by
# tests/e2e.sh; runs alone too). A second or two.
#
# Usage: tests/e2e_kernels.sh path/to/tdlab
#
# Checks, against values derived by hand (see tests/test_kernels.c for the derivations):
#   - relu NTK, depth 1, sigma_w2 2, sigma_b2 0, x = [e1, e2]: [[2, 1/pi], [1/pi, 2]];
#   - erf NNGP, depth 1, sigma_w2 = sigma_b2 = 1, x = [[1]] against x2 = [[-1]]: [[1]];
#   - linear NTK, depth 2, sigma_w2 3, sigma_b2 0.5, x = [[2]], x2 = [[1]]: [[179]];
#   - bad input: 400 JSON errors naming the field (kernel, activation, depth, sigma_w2, an
#     unknown key, a ragged row, a non-number entry, x2 of another dimension, too many rows).
# Needs bash, curl, grep, sed, awk. Prints one line per check and "N passed, M failed".
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
. "$ROOT/tests/e2elib.sh"
e2e_init kernels "$@"

post() { post_json /api/v1/kernels "$1"; } # post JSON: CODE and $TMP/body
# matrix FILE: the numbers of "matrix", one per line
matrix() { sed 's/.*"matrix":\[\(.*\)\]\].*/\1/' "$1" | tr -d '[]' | tr ',' '\n'; }
# close_all FILE V1 V2 ...: the matrix entries equal V1 V2 ... to 1e-13 relative
close_all() {
  local f="$1"
  shift
  local got
  got=$(matrix "$f" | tr '\n' ' ')
  awk -v got="$got" -v want="$*" 'BEGIN { n = split(got, g, " "); m = split(want, w, " ");
    if (n != m) exit 1; for (i = 1; i <= n; i++) { d = g[i] - w[i]; if (d < 0) d = -d;
    s = w[i] < 0 ? -w[i] : w[i]; if (d > 1e-13 * (s > 1 ? s : 1)) exit 1 } exit 0 }'
}
bad_kernel() { # bad_kernel NAME FIELD|- JSON: POST /api/v1/kernels is a 400 naming FIELD
  expect_error "$1" 400 "$2" POST /api/v1/kernels -H 'Content-Type: application/json' --data-binary "$3"
}

e2e_start --workers 1
ok "kernels: the daemon starts ($SRV_BASE)"

post '{"kernel":"ntk","activation":"relu","depth":1,"sigma_w2":2,"sigma_b2":0,"x":[[1,0],[0,1]]}'
check "relu NTK depth 1 of two orthogonal unit rows is [[2, 1/pi], [1/pi, 2]]" \
  bash -c "[ '$CODE' = 200 ] && $(declare -f matrix close_all); close_all '$TMP/body' 2 0.31830988618379067 0.31830988618379067 2"
post '{"kernel":"nngp","activation":"erf","depth":1,"sigma_w2":1,"sigma_b2":1,"x":[[1]],"x2":[[-1]]}'
check "erf NNGP depth 1 of x = 1 against x2 = -1 is [[1]] (shape [1,1])" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"shape\":\[1,1\]' '$TMP/body' && $(declare -f matrix close_all); close_all '$TMP/body' 1"
post '{"kernel":"ntk","activation":"linear","depth":2,"sigma_w2":3,"sigma_b2":0.5,"x":[[2]],"x2":[[1]]}'
check "linear NTK depth 2 of x = 2 against x2 = 1 is [[179]]" \
  bash -c "[ '$CODE' = 200 ] && $(declare -f matrix close_all); close_all '$TMP/body' 179"
post '{"kernel":"nngp","x":[[1,2,3],[4,5,6],[0.5,0,1]],"x2":[[1,1,1]]}'
check "x against x2 gives n1 x n2 (3 x 1) with the defaults echoed (relu, depth 1, 1, 0)" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"shape\":\[3,1\]' '$TMP/body' && grep -q '\"activation\":\"relu\"' '$TMP/body' && grep -q '\"depth\":1,' '$TMP/body'"

bad_kernel "a kernel that overflows double precision (depth 64, sigma_w2 1e6)" sigma_w2 '{"kernel":"nngp","depth":64,"sigma_w2":1e6,"x":[[1],[2]]}'
bad_kernel "unknown kernel" kernel '{"kernel":"rbf","x":[[1]]}'
bad_kernel "missing kernel" kernel '{"x":[[1]]}'
bad_kernel "unknown activation" activation '{"kernel":"ntk","activation":"tanh","x":[[1]]}'
bad_kernel "negative depth" depth '{"kernel":"ntk","depth":-1,"x":[[1]]}'
bad_kernel "depth 65" depth '{"kernel":"ntk","depth":65,"x":[[1]]}'
bad_kernel "sigma_w2 0" sigma_w2 '{"kernel":"ntk","sigma_w2":0,"x":[[1]]}'
bad_kernel "sigma_b2 a string" sigma_b2 '{"kernel":"ntk","sigma_b2":"1","x":[[1]]}'
bad_kernel "unknown key" y '{"kernel":"ntk","x":[[1]],"y":[[1]]}'
bad_kernel "x missing" x '{"kernel":"ntk"}'
bad_kernel "x empty" x '{"kernel":"ntk","x":[]}'
bad_kernel "ragged row" 'x[1]' '{"kernel":"ntk","x":[[1,2],[3]]}'
bad_kernel "a string entry" 'x[0][1]' '{"kernel":"ntk","x":[[1,"a"]]}'
bad_kernel "x2 of another dimension" 'x2[0]' '{"kernel":"ntk","x":[[1,2]],"x2":[[1,2,3]]}'
big=$(awk 'BEGIN { printf "["; for (i = 0; i < 4097; i++) printf "%s[1]", (i ? "," : ""); printf "]" }')
bad_kernel "4097 rows" x "{\"kernel\":\"ntk\",\"x\":$big}"
big=$(awk 'BEGIN { printf "["; for (i = 0; i < 600; i++) printf "%s[1]", (i ? "," : ""); printf "]" }')
bad_kernel "600 x 600 entries above the cap" x "{\"kernel\":\"ntk\",\"x\":$big}"
bad_kernel "malformed JSON" - '{"kernel":'

# ---------------------------------------------------------------- the empirical NTK
# A hand-made network 1-1-1, linear: f(x) = 3 (2 x + 0.5) + 1. Its Jacobian is (dW0, db0,
# dW1, db1) = (3x, 3, 2x + 0.5, 1), so Theta(x, x') = 9 x x' + 9 + (2x + .5)(2x' + .5) + 1:
# Theta(1,1) = 25.25, Theta(1,2) = 39.25, Theta(2,2) = 66.25.
h='{"layers.0.weight":{"dtype":"F64","shape":[1,1],"data_offsets":[0,8]},"layers.0.bias":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},"layers.1.weight":{"dtype":"F64","shape":[1,1],"data_offsets":[16,24]},"layers.1.bias":{"dtype":"F64","shape":[1],"data_offsets":[24,32]},"__metadata__":{"activation":"linear"}}'
while [ $(( ${#h} % 8 )) -ne 0 ]; do h="$h "; done
{
  len=${#h}
  for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (len >> (8 * i)) & 255 )))"; done
  printf '%s' "$h"
  printf '\x00\x00\x00\x00\x00\x00\x00\x40'  # 2.0
  printf '\x00\x00\x00\x00\x00\x00\xe0\x3f'  # 0.5
  printf '\x00\x00\x00\x00\x00\x00\x08\x40'  # 3.0
  printf '\x00\x00\x00\x00\x00\x00\xf0\x3f'  # 1.0
} >"$TMP/lin.safetensors"
CODE=$(curl -s -o "$TMP/body" -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
  --data-binary "@$TMP/lin.safetensors" "$SRV_BASE/api/v1/checkpoints")
CK=$(grep -o '"id":[0-9]*' "$TMP/body" | head -1 | sed 's/.*://')
check "the hand-made network uploads as a checkpoint" bash -c "[ '$CODE' = 201 ] && [ -n '$CK' ]"
post "{\"kernel\":\"empirical_ntk\",\"checkpoint\":${CK:-0},\"x\":[[1],[2]]}"
check "its empirical NTK at x = 1, 2 is [[25.25, 39.25], [39.25, 66.25]]" \
  bash -c "[ '$CODE' = 200 ] && $(declare -f matrix close_all); close_all '$TMP/body' 25.25 39.25 39.25 66.25"
post "{\"kernel\":\"empirical_ntk\",\"checkpoint\":${CK:-0},\"x\":[[1]],\"x2\":[[2]],\"outputs\":\"trace\"}"
check "x against x2, outputs trace: [[39.25]]" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"outputs\":\"trace\"' '$TMP/body' && $(declare -f matrix close_all); close_all '$TMP/body' 39.25"
bad_kernel "empirical without a network" checkpoint '{"kernel":"empirical_ntk","x":[[1]]}'
bad_kernel "empirical with a row of the wrong width" 'x[0]' "{\"kernel\":\"empirical_ntk\",\"checkpoint\":${CK:-0},\"x\":[[1,2]]}"
bad_kernel "empirical with depth" depth "{\"kernel\":\"empirical_ntk\",\"checkpoint\":${CK:-0},\"depth\":2,\"x\":[[1]]}"
bad_kernel "empirical with outputs=diag" outputs "{\"kernel\":\"empirical_ntk\",\"checkpoint\":${CK:-0},\"outputs\":\"diag\",\"x\":[[1]]}"
bad_kernel "checkpoint with the analytic ntk" checkpoint '{"kernel":"ntk","checkpoint":1,"x":[[1]]}'
post '{"kernel":"empirical_ntk","checkpoint":999,"x":[[1]]}'
check "an unknown checkpoint is a 404 naming checkpoint" \
  bash -c "[ '$CODE' = 404 ] && grep -q '\"field\":\"checkpoint\"' '$TMP/body'"

# model.parameterization (the trainer's shared rows): accepted by trainer kinds, refused with a
# 400 naming the field where the kind or optimizer cannot apply it; an ntk and a mup job run,
# and a checkpoint of the ntk job carries the parameterization into the empirical NTK.
job_400() { # job_400 NAME FIELD JSON
  expect_error "$1" 400 "$2" POST /api/v1/jobs -H 'Content-Type: application/json' --data-binary "$3"
}
SYN='"data":{"name":"synthetic","n":64,"d":5},"loss":"mse","model":{"hidden":[16]'
job_400 "unknown parameterization" params.model.parameterization "{\"kind\":\"train\",\"params\":{$SYN,\"parameterization\":\"xavier\"}}}"
job_400 "mup with kfac" params.model.parameterization "{\"kind\":\"train\",\"params\":{$SYN,\"parameterization\":\"mup\"},\"optimizer\":{\"name\":\"kfac\"}}}"
job_400 "mup with sgld" params.model.parameterization "{\"kind\":\"train\",\"params\":{$SYN,\"parameterization\":\"mup\"},\"optimizer\":{\"name\":\"sgld\"}}}"
job_400 "laplace with ntk" params.model.parameterization "{\"kind\":\"laplace\",\"params\":{$SYN,\"parameterization\":\"ntk\"}}}"
job_400 "ntk with sigma_w2 0" params.model.sigma_w2 "{\"kind\":\"train\",\"params\":{$SYN,\"parameterization\":\"ntk\",\"sigma_w2\":0}}}"
NJ=$(srv_submit "{\"kind\":\"train\",\"params\":{$SYN,\"parameterization\":\"ntk\"},\"steps\":20,\"batch_size\":16,\"checkpoint_every\":20}}")
MJ=$(srv_submit "{\"kind\":\"train\",\"params\":{$SYN,\"parameterization\":\"mup\",\"base_width\":8},\"optimizer\":{\"name\":\"adam\",\"lr\":0.01},\"steps\":20,\"batch_size\":16}}")
st=$(wait_job "$NJ" 60)
check "a train job with parameterization ntk succeeds ($st)" [ "$st" = succeeded ]
st=$(wait_job "$MJ" 60)
check "a train job with parameterization mup and adam succeeds ($st)" [ "$st" = succeeded ]
post "{\"kernel\":\"empirical_ntk\",\"job\":${NJ:-0},\"step\":20,\"x\":[[1,0,0,0,0]],\"outputs\":\"trace\"}"
check "the empirical NTK of the ntk job's checkpoint (its multipliers from the metadata)" \
  bash -c "[ '$CODE' = 200 ] && grep -q '\"shape\":\[1,1\]' '$TMP/body'"

# The PyTorch cross-check (functorch vmap(jacrev), relative 1e-9), when torch is there.
if /usr/bin/python3 -c 'import torch, functorch' >/dev/null 2>&1; then
  if /usr/bin/python3 "$ROOT/tests/ntk_torch_check.py" "$SRV_BASE" >"$TMP/torch.log" 2>&1; then
    ok "empirical NTK of uploaded PyTorch networks = functorch vmap(jacrev) to 1e-9 (tests/ntk_torch_check.py)"
  else
    bad "tests/ntk_torch_check.py: $(tail -3 "$TMP/torch.log")"
  fi
else
  echo "skip - tests/ntk_torch_check.py (no torch/functorch in /usr/bin/python3)"
fi
finish
