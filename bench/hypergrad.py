#!/usr/bin/python3
"""hypergrad.py: PyTorch peer of bench_hypergrad.c: the hypergradient through an unrolled
heavy-ball optimization by autograd (create_graph=True), float64, and the comparison.

The unroll (the same as tdlab's, core/bilevel/hypergrad.h): an MLP 784-256-10 (ReLU), mean
cross-entropy on the first n Fashion-MNIST training examples (pixels / 255), per-layer L2
strengths lam_j (layer j's W and b), full batch, PyTorch's SGD-momentum form:
    v_0 = 0,  v_{t+1} = mu v_t + grad L_train(w_t) + lam * w_t,  w_{t+1} = w_t - lr_t v_{t+1},
from the initial parameters tdlab wrote (--w0). The outer loss is the mean cross-entropy on the
first n test examples at w_T, differentiated with respect to lam (2) and lr_t (T) by
torch.autograd.grad through the whole unroll (the graph of every step is kept: memory O(T)).
Memory: VmHWM - VmRSS around the computation (peak reset through /proc/self/clear_refs).

With --tdlab FILE (bench_hypergrad's --out), prints one line
  BENCH <name> tdlab_ms=.. peer=pytorch peer_ms=.. ratio=.. tdlab_mib=.. peer_mib=..
        mem_ratio=.. rel_err_lambda=.. rel_err_lr=.. mismatch=..
and exits 1 when the values differ by more than --rtol (default 1e-8). Without --tdlab, prints
the milliseconds as the last line. NA without torch.
Usage: hypergrad.py --w0 FILE [--tdlab FILE] [--T 100] [--n 1000] [--lr 0.1] [--mu 0.9]
                    [--lambda 1e-3] [--threads 2] [--name NAME]"""
import gzip
import json
import os
import sys
import time

try:
    import torch
except ImportError:
    print("NA")
    sys.exit(0)


def load(split, n):
    d = os.environ.get("TDLAB_DATA_DIR") or "/usr/share/datasets/fashion-mnist"
    pre = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(d, pre + "-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    with gzip.open(os.path.join(d, pre + "-labels-idx1-ubyte.gz"), "rb") as f:
        lab = f.read()
    x = torch.frombuffer(bytearray(raw[16:16 + n * 784]), dtype=torch.uint8)
    x = x.reshape(n, 784).to(torch.float64) / 255.0
    y = torch.frombuffer(bytearray(lab[8:8 + n]), dtype=torch.uint8).to(torch.int64)
    return x, y


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def blas_threads():
    """The thread count of the OpenBLAS that PyTorch's process loaded ("?" if none)."""
    import ctypes
    for name in ("libopenblas.so.0", "libblas.so.3"):
        try:
            return str(ctypes.CDLL(name).openblas_get_num_threads())
        except (OSError, AttributeError):
            pass
    return "?"


def unrolled_hypergradient(w0, x, y, xv, yv, T, lr, mu, lam0):
    """d L_val(w_T) / d (lam, lrs) by autograd through the unroll."""
    lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    lrs = torch.full((T,), lr, dtype=torch.float64, requires_grad=True)
    W1, b1, W2, b2 = [t.clone().requires_grad_(True) for t in w0]
    w = [W1, b1, W2, b2]
    group = [0, 0, 1, 1]
    v = [torch.zeros_like(t) for t in w]

    def f(ws, xx):
        h = torch.relu(xx @ ws[0].T + ws[1])
        return h @ ws[2].T + ws[3]

    ce = torch.nn.functional.cross_entropy
    for t in range(T):
        loss = ce(f(w, x), y)
        g = torch.autograd.grad(loss, w, create_graph=True)
        v = [mu * vi + gi + lam[group[i]] * wi for i, (vi, gi, wi) in enumerate(zip(v, g, w))]
        w = [wi - lrs[t] * vi for wi, vi in zip(w, v)]
    lval = ce(f(w, xv), yv)
    dl, dlr = torch.autograd.grad(lval, [lam, lrs])
    return lval.item(), dl, dlr


def main():
    a = {"--T": "100", "--n": "1000", "--lr": "0.1", "--mu": "0.9", "--lambda": "1e-3",
         "--threads": "2", "--w0": None, "--tdlab": None, "--rtol": "1e-8",
         "--name": "hypergrad_reversal_784-256-10_T100_n1000"}
    args = sys.argv[1:]
    for i in range(0, len(args) - 1, 2):
        a[args[i]] = args[i + 1]
    T, n = int(a["--T"]), int(a["--n"])
    lr, mu, lam = float(a["--lr"]), float(a["--mu"]), float(a["--lambda"])
    torch.set_num_threads(int(a["--threads"]))
    x, y = load("train", n)
    xv, yv = load("test", n)
    raw = torch.frombuffer(bytearray(open(a["--w0"], "rb").read()), dtype=torch.float64)
    shapes = [(256, 784), (256,), (10, 256), (10,)]
    w0, off = [], 0
    for s in shapes:
        k = 1
        for d in s:
            k *= d
        w0.append(raw[off:off + k].reshape(s).clone())
        off += k
    rss0 = status_kb("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    lval, dl, dlr = unrolled_hypergradient(w0, x, y, xv, yv, T, lr, mu, [lam, lam])
    ms = (time.perf_counter() - t0) * 1e3
    mib = (status_kb("VmHWM") - rss0) / 1024.0
    print("hypergrad.py: T=%d n=%d %.1f ms peak +%.1f MiB val_loss %.12g d_lambda [%.10g, %.10g]"
          % (T, n, ms, mib, lval, dl[0].item(), dl[1].item()), file=sys.stderr)
    if not a["--tdlab"]:
        print("%.3f" % ms)
        return 0
    with open(a["--tdlab"]) as f:
        td = json.load(f)
    tdl = torch.tensor(td["d_lambda"], dtype=torch.float64)
    tlr = torch.tensor(td["d_lr"], dtype=torch.float64)
    e_l = ((tdl - dl).norm() / dl.norm()).item()
    e_r = ((tlr - dlr).norm() / dlr.norm()).item()
    ok = e_l <= float(a["--rtol"]) and e_r <= float(a["--rtol"])
    print("BENCH %s threads=%d/%d blas_threads=%s tdlab_ms=%.1f peer=pytorch peer_ms=%.1f ratio=%.3f tdlab_mib=%.1f "
          "peer_mib=%.1f mem_ratio=%.4f rel_err_lambda=%.2e rel_err_lr=%.2e mismatch=%d %s"
          % (a["--name"], td["threads"], torch.get_num_threads(), blas_threads(), td["ms"], ms, td["ms"] / ms, td["mem_mib"], mib,
             td["mem_mib"] / mib if mib > 0 else float("nan"), e_l, e_r, td["mismatch"],
             "values_agree" if ok else "VALUES_DIFFER"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
