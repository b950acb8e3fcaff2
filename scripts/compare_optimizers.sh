#!/usr/bin/env bash
# compare_optimizers.sh: the issue-4 optimizer comparison: iterations to training loss 0.3 on a
# Fashion-MNIST subset for SGD with momentum, Adam, K-FAC and Hessian-free, each at its best
# learning rate from a small grid. Reproduces the tables of docs/optimizers.md.
#
# Usage: scripts/compare_optimizers.sh [BUILD_DIR] [OUT_DIR]
#   BUILD_DIR  where tdlab is (default build; `make` first)
#   OUT_DIR    specs, metrics (JSON lines) and table.md (default var/compare_optimizers)
# Env:
#   METHODS="sgd adam kfac hessian_free"   the methods to run (the table covers every run
#                                          found in OUT_DIR)
#   BATCH=256                              minibatch size (the main table; 2048 for the
#                                          large-batch supplement)
#   GRID_sgd, GRID_adam, GRID_kfac, GRID_hessian_free   override a learning-rate grid
#   FORCE=1                                rerun runs whose metrics exist (by default they are
#                                          reused, so an interrupted sweep resumes)
#   TIMING=0                               skip the timing runs
# Both tables of docs/optimizers.md: scripts/compare_optimizers.sh build &&
#   BATCH=2048 GRID_sgd="0.03 0.1 0.3" GRID_adam="0.001 0.003 0.01" GRID_kfac="0.5 1" \
#   GRID_hessian_free="0.5 1" scripts/compare_optimizers.sh build
#
# Setup (every run): the first 10000 training images (n_train 10000) and the first 2000 test
# images, MLP 784-256-256-10 ReLU, softmax cross-entropy, minibatches of BATCH (a fresh shuffle
# per epoch), seed 0 (same init and batch order for every method). The training loss is the
# loss over the WHOLE 10k training subset (train_eval_loss), evaluated every 5 steps; a
# method's count is the first evaluation step at which it is <= 0.3 (so counts are multiples
# of 5). A run stops once the EMA of the minibatch loss (target_loss 0.3, target_ema 0.9)
# reaches 0.3, usually a few steps after the full-subset crossing, or at its step cap (1500
# first-order, 300 second-order); ">N (stopped)" marks a run that stopped at step N on the EMA
# before an evaluation saw 0.3.
# Time per step: after the sweep, each method is re-run at its best lr without evaluations
# (100 steps first-order, 20 second-order), three times, one method after the other, and the
# best steps_per_sec (the training steps alone) is kept; time to 0.3 = steps to 0.3 x s/step.
# The machine is shared, so these are indicative; the per-run s/step of the sweep are in the
# "all runs" table.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-build}"
OUT="${2:-$ROOT/var/compare_optimizers}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
TDLAB="$BUILD/tdlab"
[ -x "$TDLAB" ] || { echo "compare_optimizers: $TDLAB not found (run make)" >&2; exit 2; }
METHODS="${METHODS:-sgd adam kfac hessian_free}"
BATCH="${BATCH:-256}"
mkdir -p "$OUT/specs" "$OUT/runs" "$OUT/timing"

# The learning-rate grids (docs/optimizers.md repeats them).
grid() {
  case $1 in
  sgd) echo "${GRID_sgd:-0.01 0.03 0.1 0.3}" ;;
  adam) echo "${GRID_adam:-0.0003 0.001 0.003 0.01}" ;;
  kfac) echo "${GRID_kfac:-0.25 0.5 1}" ;;
  hessian_free) echo "${GRID_hessian_free:-0.25 0.5 1}" ;;
  esac
}
# The optimizer object of each method (besides lr). Hessian-free: with minibatches of 256 the
# Levenberg-Marquardt rule drives the damping down to ~0.02 and the steps overfit each
# minibatch (the full-subset loss rose from 0.69 to 1.06 over steps 15-30), so the damping is
# fixed at 1; from 1024 examples on, Martens' setup: adaptive damping and a curvature batch of
# 512 (Martens 2010, sec. 4.3).
optim() {
  case $1 in
  sgd) echo '"name": "sgd", "momentum": 0.9' ;;
  adam) echo '"name": "adam"' ;;
  kfac) echo '"name": "kfac", "momentum": 0.9, "damping": 0.001, "kfac_inverse_every": 10' ;;
  hessian_free)
    if [ "$BATCH" -ge 1024 ]; then
      echo '"name": "hessian_free", "damping": 1, "adapt_damping": true, "curv_batch": 512, "cg_max_iters": 50'
    else
      echo '"name": "hessian_free", "damping": 1, "adapt_damping": false, "cg_max_iters": 50'
    fi ;;
  esac
}
cap() { case $1 in sgd | adam) echo 1500 ;; *) echo 300 ;; esac; }
run_id() { if [ "$BATCH" = 256 ]; then echo "${1}_lr${2}"; else echo "${1}_b${BATCH}_lr${2}"; fi; }

spec() { # spec METHOD LR STEPS EVAL_EVERY TARGET(0/1)
  local tgt=""
  [ "$5" = 1 ] && tgt=', "target_loss": 0.3, "target_ema": 0.9'
  cat <<EOF
{"kind": "train", "params": {
  "data": {"name": "fashion-mnist", "n_train": 10000, "n_test": 2000},
  "model": {"hidden": [256, 256], "activation": "relu"},
  "loss": "cross_entropy",
  "optimizer": {$(optim "$1"), "lr": $2},
  "batch_size": $BATCH, "steps": $3, "eval_every": $4, "seed": 0$tgt}}
EOF
}

for m in $METHODS; do
  for lr in $(grid "$m"); do
    id=$(run_id "$m" "$lr")
    spec "$m" "$lr" "$(cap "$m")" 5 1 >"$OUT/specs/$id.json"
    if [ -s "$OUT/runs/$id.jsonl" ] && [ "${FORCE:-0}" != 1 ] &&
      tail -n 1 "$OUT/runs/$id.jsonl" | grep -q '"status"'; then
      echo "compare_optimizers: $id: reusing $OUT/runs/$id.jsonl" >&2
      continue
    fi
    echo "compare_optimizers: running $id" >&2
    "$TDLAB" run "$OUT/specs/$id.json" >"$OUT/runs/$id.jsonl" || true
  done
done

# The table: per run, and per (method, batch) the best lr = fewest steps to 0.3.
table() {
  /usr/bin/python3 - "$OUT" "$1" <<'PY'
import glob, json, os, re, sys
out, phase = sys.argv[1], sys.argv[2]
def load(f):
    evals, ema, last = [], [], None
    for line in open(f):
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if "status" in o:
            last = o
        elif o.get("key") == "train_eval_loss":
            evals.append((o["step"], o["value"]))
        elif o.get("key") == "train_loss_ema":
            ema.append((o["step"], o["value"]))
    return evals, ema, last
rows = {}
for f in sorted(glob.glob(os.path.join(out, "runs", "*.jsonl"))):
    mt = re.match(r"(.+?)(?:_b(\d+))?_lr([0-9.e-]+)$", os.path.basename(f)[:-6])
    m, b, lr = mt.group(1), int(mt.group(2) or 256), mt.group(3)
    evals, ema, last = load(f)
    if last is None:
        continue
    s = last.get("summary") or {}
    hit = next((st for st, v in evals if isinstance(v, float) and v <= 0.3), None)
    hit_ema = next((st for st, v in ema if isinstance(v, float) and v <= 0.3), None)
    tsps = None  # the best of the timing repeats
    for tf in glob.glob(os.path.join(out, "timing", os.path.basename(f)[:-6] + ".*.jsonl")):
        v = ((load(tf)[2] or {}).get("summary") or {}).get("steps_per_sec")
        if v and (tsps is None or v > tsps):
            tsps = v
    rows.setdefault((m, b), []).append(dict(lr=float(lr), lrs=lr, status=last.get("status"),
        hit=hit, hit_ema=hit_ema, steps=s.get("steps"), sps=s.get("steps_per_sec") or 0,
        tsps=tsps, secs=last.get("seconds"), test_acc=s.get("test_acc"),
        loss=s.get("train_loss")))
order = {"sgd": 0, "adam": 1, "kfac": 2, "hessian_free": 3}
label = {"sgd": "SGD + momentum 0.9", "adam": "Adam", "kfac": "K-FAC", "hessian_free": "Hessian-free"}
keys = sorted(rows, key=lambda k: (k[1], order.get(k[0], 9), k[0]))
def fmt(x, f="%g"):
    return "-" if x is None else f % x
def count(r):
    if r["hit"] is not None:
        return "%d" % r["hit"]
    if r["hit_ema"] is not None:
        return ">%d (stopped)" % r["steps"]
    return ">%s (cap)" % r["steps"]
best = {}
for k in keys:
    ok = [r for r in rows[k] if r["hit"] is not None]
    best[k] = min(ok, key=lambda r: (r["hit"], r["lr"])) if ok else None
if phase == "best":  # method batch lr, for the timing runs
    for k in keys:
        if best[k]:
            print(k[0], k[1], best[k]["lrs"])
    sys.exit(0)
lines = ["| method | batch | lr grid | best lr | steps to train loss <= 0.3 | s/step | time to 0.3 (s) |",
         "|---|---|---|---|---|---|---|"]
detail = ["| method | batch | lr | steps to 0.3 | steps (EMA <= 0.3) | steps run | s/step (sweep) | job wall (s) | final train loss | test acc |",
          "|---|---|---|---|---|---|---|---|---|---|"]
for k in keys:
    m, b = k
    rs = sorted(rows[k], key=lambda r: r["lr"])
    for r in rs:
        detail.append("| %s | %d | %g | %s | %s | %s | %s | %s | %s | %s |" % (
            label.get(m, m), b, r["lr"], count(r), fmt(r["hit_ema"]), fmt(r["steps"]),
            fmt(1 / r["sps"] if r["sps"] else None, "%.3f"), fmt(r["secs"], "%.0f"),
            fmt(r["loss"], "%.3f"), fmt(r["test_acc"], "%.3f")))
    g = ", ".join("%g" % r["lr"] for r in rs)
    x = best[k]
    if x:
        sps = x["tsps"] or x["sps"]
        lines.append("| %s | %d | %s | %g | %d | %.3f | %.1f |" % (
            label.get(m, m), b, g, x["lr"], x["hit"], 1 / sps, x["hit"] / sps))
    else:
        lines.append("| %s | %d | %s | - | not reached | - | - |" % (label.get(m, m), b, g))
txt = "\n".join(lines) + "\n\nAll runs:\n\n" + "\n".join(detail) + "\n"
open(os.path.join(out, "table.md"), "w").write(txt)
print(txt)
PY
}

if [ "${TIMING:-1}" = 1 ]; then
  table best | while read -r m b lr; do
    [ "$b" = "$BATCH" ] || continue
    case " $METHODS " in *" $m "*) ;; *) continue ;; esac
    id=$(run_id "$m" "$lr")
    case $m in sgd | adam) n=100 ;; *) n=20 ;; esac
    echo "compare_optimizers: timing $id ($n steps, no evaluations, best of 3)" >&2
    spec "$m" "$lr" "$n" 1000000 0 >"$OUT/specs/timing_$id.json"
    for k in 1 2 3; do
      "$TDLAB" run "$OUT/specs/timing_$id.json" >"$OUT/timing/$id.$k.jsonl" || true
    done
  done
fi
table all
