#!/usr/bin/env bash
# compare_optimizers.sh: the issue-4 optimizer comparison: iterations to training loss 0.3 on a
# Fashion-MNIST subset for SGD with momentum, Adam, K-FAC and Hessian-free, each at its best
# learning rate from a small grid. Reproduces the table of docs/optimizers.md.
#
# Usage: scripts/compare_optimizers.sh [BUILD_DIR] [OUT_DIR]
#   BUILD_DIR  where tdlab is (default build; `make` first)
#   OUT_DIR    specs, metrics (JSON lines) and table.md (default var/compare_optimizers)
# Env: METHODS="sgd adam kfac hessian_free" (a subset to run), FORCE=1 (rerun runs whose
#   metrics already exist; by default they are reused, so an interrupted sweep resumes).
#
# Setup (every run): the first 10000 training images (n_train 10000) and the first 2000 test
# images, MLP 784-256-256-10 ReLU, softmax cross-entropy, batch 256 (a fresh shuffle per epoch),
# seed 0 (same init and batch order for every method). The training loss is the loss over the
# WHOLE 10k training subset (train_eval_loss), evaluated every 5 steps; a method's count is
# the first evaluation step at which it is <= 0.3 (so counts are multiples of 5). A run stops
# once the EMA of the minibatch loss (target_loss 0.3, target_ema 0.9) reaches 0.3, which lags
# the full-subset crossing by a few steps, or at its step cap (1500 first-order, 300
# second-order). Wall time to target = steps to target / steps_per_sec (the training steps
# alone, without the evaluations), on whatever the machine was doing at the time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="${1:-build}"
OUT="${2:-$ROOT/var/compare_optimizers}"
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
TDLAB="$BUILD/tdlab"
[ -x "$TDLAB" ] || { echo "compare_optimizers: $TDLAB not found (run make)" >&2; exit 2; }
METHODS="${METHODS:-sgd adam kfac hessian_free}"
mkdir -p "$OUT/specs" "$OUT/runs"

# The learning-rate grids (docs/optimizers.md repeats them).
grid() {
  case $1 in
  sgd) echo "0.01 0.03 0.1 0.3" ;;
  adam) echo "0.0001 0.0003 0.001 0.003" ;;
  kfac) echo "0.25 0.5 1" ;;
  hessian_free) echo "0.25 0.5 1" ;;
  esac
}
# The optimizer object of each method (besides lr).
optim() {
  case $1 in
  sgd) echo '"name": "sgd", "momentum": 0.9' ;;
  adam) echo '"name": "adam"' ;;
  kfac) echo '"name": "kfac", "momentum": 0.9, "damping": 0.001, "kfac_inverse_every": 10' ;;
  hessian_free) echo '"name": "hessian_free", "damping": 1, "adapt_damping": false, "cg_max_iters": 50' ;;
  esac
}
cap() { case $1 in sgd | adam) echo 1500 ;; *) echo 300 ;; esac; }

for m in $METHODS; do
  for lr in $(grid "$m"); do
    id="${m}_lr${lr}"
    spec="$OUT/specs/$id.json"
    cat >"$spec" <<EOF
{"kind": "train", "params": {
  "data": {"name": "fashion-mnist", "n_train": 10000, "n_test": 2000},
  "model": {"hidden": [256, 256], "activation": "relu"},
  "loss": "cross_entropy",
  "optimizer": {$(optim "$m"), "lr": $lr},
  "batch_size": 256, "steps": $(cap "$m"), "eval_every": 5, "seed": 0,
  "target_loss": 0.3, "target_ema": 0.9}}
EOF
    if [ -s "$OUT/runs/$id.jsonl" ] && [ "${FORCE:-0}" != 1 ] &&
      tail -n 1 "$OUT/runs/$id.jsonl" | grep -q '"status"'; then
      echo "compare_optimizers: $id: reusing $OUT/runs/$id.jsonl" >&2
      continue
    fi
    echo "compare_optimizers: running $id" >&2
    "$TDLAB" run "$spec" >"$OUT/runs/$id.jsonl" || true
  done
done

# The table: per run and per method (best lr = fewest steps to 0.3).
/usr/bin/python3 - "$OUT" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = {}
for f in sorted(glob.glob(os.path.join(out, "runs", "*.jsonl"))):
    name = os.path.basename(f)[:-6]
    m, lr = name.rsplit("_lr", 1)
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
    if last is None:
        continue
    s = last.get("summary") or {}
    hit = next((st for st, v in evals if isinstance(v, float) and v <= 0.3), None)
    hit_ema = next((st for st, v in ema if isinstance(v, float) and v <= 0.3), None)
    sps = s.get("steps_per_sec") or 0
    rows.setdefault(m, []).append(dict(lr=float(lr), status=last.get("status"), hit=hit,
        hit_ema=hit_ema, steps=s.get("steps"), sps=sps, secs=last.get("seconds"),
        wall=(hit / sps if hit and sps else None), test_acc=s.get("test_acc"),
        loss=s.get("train_loss")))
order = ["sgd", "adam", "kfac", "hessian_free"]
label = {"sgd": "SGD + momentum 0.9", "adam": "Adam", "kfac": "K-FAC", "hessian_free": "Hessian-free"}
def fmt(x, f="%g"):
    return "-" if x is None else f % x
lines = ["| method | lr grid | best lr | steps to train loss <= 0.3 | steps (EMA <= 0.3) | "
         "s/step | train time to 0.3 (s) | job wall (s) |",
         "|---|---|---|---|---|---|---|---|"]
detail = ["| method | lr | status | steps to 0.3 | steps (EMA) | steps run | s/step | job wall (s) | final train loss | test acc |",
          "|---|---|---|---|---|---|---|---|---|---|"]
for m in order + sorted(set(rows) - set(order)):
    if m not in rows:
        continue
    rs = sorted(rows[m], key=lambda r: r["lr"])
    for r in rs:
        detail.append("| %s | %g | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label.get(m, m), r["lr"], r["status"], fmt(r["hit"]), fmt(r["hit_ema"]), fmt(r["steps"]),
            fmt(1 / r["sps"] if r["sps"] else None, "%.3f"), fmt(r["secs"], "%.0f"),
            fmt(r["loss"], "%.3f"), fmt(r["test_acc"], "%.3f")))
    ok = [r for r in rs if r["hit"] is not None]
    b = min(ok, key=lambda r: (r["hit"], r["lr"])) if ok else None
    grid = ", ".join("%g" % r["lr"] for r in rs)
    if b:
        lines.append("| %s | %s | %g | %d | %s | %.3f | %.1f | %.0f |" % (
            label.get(m, m), grid, b["lr"], b["hit"], fmt(b["hit_ema"]), 1 / b["sps"], b["wall"],
            b["secs"]))
    else:
        lines.append("| %s | %s | - | not reached | - | - | - | - |" % (label.get(m, m), grid))
txt = "\n".join(lines) + "\n\nAll runs:\n\n" + "\n".join(detail) + "\n"
open(os.path.join(out, "table.md"), "w").write(txt)
print(txt)
PY
