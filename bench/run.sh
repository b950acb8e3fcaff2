#!/bin/sh
# run.sh: run every benchmark against its peer and print one line per benchmark:
#   BENCH <name> tdlab_ms=<t> peer=<peer> peer_ms=<t> ratio=<tdlab/peer>
# Usage: bench/run.sh [BUILD_DIR]   (default build). Builds nothing: `make bench` does.
# To add a benchmark, append one `bench_pair` line at the bottom. The tdlab command and the
# peer command each print the median milliseconds per operation as their LAST stdout line
# (a peer prints NA when it cannot run, e.g. without python3-torch).
set -u
BUILD=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
PY=${TDLAB_BENCH_PYTHON:-/usr/bin/python3}
status=0

# bench_pair NAME PEER "TDLAB_CMD" "PEER_CMD"
bench_pair() {
  name=$1 peer=$2 tcmd=$3 pcmd=$4
  t=$(sh -c "$tcmd" 2>/dev/null | tail -n 1)
  case $t in '' | *[!0-9.]*) echo "bench: $name: tdlab side failed" >&2; t=NA; status=1 ;; esac
  p=NA
  if [ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1; then
    p=$(sh -c "$pcmd" 2>/dev/null | tail -n 1)
    case $p in '' | *[!0-9.]*) p=NA ;; esac
  fi
  if [ "$t" != NA ] && [ "$p" != NA ]; then
    r=$(awk -v a="$t" -v b="$p" 'BEGIN { printf "%.3f", a / b }')
  else
    r=NA
  fi
  echo "BENCH $name tdlab_ms=$t peer=$peer peer_ms=$p ratio=$r"
}

# --- benchmarks ------------------------------------------------------------------------
# One SGD-with-momentum training step (forward, cross-entropy, backward, update) of an MLP
# 784-512-512-10 at batch 128 in float64, both sides on 2 threads.
bench_pair train_step_784-512-512-10_b128 pytorch \
  "OPENBLAS_NUM_THREADS=2 '$BUILD/bench/bench_train' --threads 2" \
  "'$PY' '$here/train_step.py'"

# --- h7 (issue 3): one exact Hessian-vector product of the mean cross-entropy of an MLP
# 784-512-512-10 (ReLU, float64) over the first 1000 Fashion-MNIST training examples, vs
# PyTorch double backward (torch.autograd.grad twice; bench/hvp.py), both on 2 threads.
# tdlab caches the forward pass and the gradient at the point (as Lanczos does: many HVPs at
# fixed parameters); the _cold line redoes forward + gradient + HVP each call, which is the
# peer's work exactly.
bench_pair hvp_784-512-512-10_n1000 pytorch \
  "OPENBLAS_NUM_THREADS=2 '$BUILD/bench/bench_hvp' --threads 2" \
  "'$PY' '$here/hvp.py'"
bench_pair hvp_cold_784-512-512-10_n1000 pytorch \
  "OPENBLAS_NUM_THREADS=2 '$BUILD/bench/bench_hvp' --threads 2 --cold" \
  "'$PY' '$here/hvp.py' --iters 10"

# --- h8 (issue 6): throughput benchmarks with their own BENCH lines (rates, not times).
# Metric ingestion: points/s of a job emitting points as fast as it can through the server's
# sink (queue worker + store_mw batched writer), and of store_mw alone, vs raw batched SQLite
# inserts into the same schema, same run (bench/bench_ingest.c; spread on stderr).
"$BUILD/bench/bench_ingest" --migrations "$here/../migrations" || status=1
# Issue 16: 64 concurrent remote runs posting 5000-point batches to one tdlab serve vs one
# in-process job's point rate, same run; checks every point is stored (bench/bench_remote.c).
"$BUILD/bench/bench_remote" --tdlab "$BUILD/tdlab" --migrations "$here/../migrations" || status=1
# REST: GET /api/v1/jobs/{id} on tdlab serve (2 workers training) vs a bare libmicrohttpd
# handler serving the same bytes, wrk with 50 connections, same run (bench/rest.sh).
if command -v wrk >/dev/null 2>&1; then
  "$here/rest.sh" "$BUILD" || status=1
else
  echo "bench: rest_get_job: wrk is not installed (scripts/deps.sh bench)" >&2
fi

# --- issue 12: the full empirical NTK (all 10 outputs: 2000 x 2000, float64) of an MLP
# 784-256-256-10 (ReLU) over the first 200 Fashion-MNIST training examples: tdlab's per-layer
# Gram products (td_entk_compute; memory on stderr) vs functorch vmap(jacrev) with the
# Jacobian contraction in PyTorch, chunked over examples: a row block of 100 examples kept,
# column blocks of 10 contracted against it (bench/ntk.py; peak RSS on stderr), both on 2
# threads. The peer takes about a minute or more (a 1e12-flop contraction), so it runs once.
bench_pair entk_784-256-256-10_n200_full pytorch-functorch \
  "OPENBLAS_NUM_THREADS=2 '$BUILD/bench/bench_ntk' --threads 2" \
  "'$PY' '$here/ntk.py' --iters 1"
# --- issue 15: the hypergradient (per-layer L2 strengths and the 100 learning rates) of the
# validation loss through 100 unrolled full-batch heavy-ball steps (momentum 0.9) of an MLP
# 784-256-10 on 1000 Fashion-MNIST examples: tdlab's exact reversal (bench_hypergrad.c) vs
# PyTorch autograd through the same unroll with create_graph=True (hypergrad.py), same run,
# one hypergradient each. Threads: both call the same OpenBLAS (pthread build) with 2 threads:
# tdlab by OPENBLAS_NUM_THREADS=2 and --threads 2, PyTorch by OpenBLAS's default of one per core
# on this 2-core machine, and torch.set_num_threads(2) for its own OpenMP kernels; the BENCH line
# prints what both report (threads=tdlab/torch, blas_threads=PyTorch's OpenBLAS). The
# reversal's first-layer cache is off (--cache-mib 0, the default: it measured no gain).
# hypergrad.py prints the BENCH line with the time ratio, the peak-memory ratio
# (VmHWM above the RSS before the computation) and the relative difference of the values, and
# fails when they differ by more than 1e-8.
OPENBLAS_NUM_THREADS=2 "$BUILD/bench/bench_hypergrad" --threads 2 --T 100 --n 1000 \
  --w0 "$BUILD/bench/hypergrad_w0.bin" --out "$BUILD/bench/hypergrad_tdlab.json" >/dev/null &&
  { "$PY" "$here/hypergrad.py" --threads 2 --T 100 \
      --n 1000 --w0 "$BUILD/bench/hypergrad_w0.bin" --tdlab "$BUILD/bench/hypergrad_tdlab.json" ||
      status=1; } || status=1
# Issue 17: a downsampled metric read of 10k vs 10M points against the old full scan, bytes
# per stored point with and without the pyramid, and the comparison page opening 20 runs of
# 100,000 points in headless Chromium (bench/compare.sh).
"$here/compare.sh" "$BUILD" || status=1
# --- ops (issue 18): lists, polls and exports at 1,000,000 jobs and a 10-million-point run,
# on a database that bench/scale.sh generates once (about 2 min) under $SCALE_DIR.
"$here/scale.sh" "$BUILD" || status=1

exit $status
