#!/usr/bin/python3
"""hypergrad_torch_check.py: cross-check the `hypergradient` kind with PyTorch autograd.

For each case below it runs `tdlab run` on a hypergradient spec (Fashion-MNIST, MLP, the unroll
of core/bilevel/hypergrad.h), reads the initial parameters the job stored
(params_init.safetensors: layers.{j}.weight (out, in), layers.{j}.bias, F64) and differentiates
the validation loss through the same unroll in PyTorch float64, independently of tdlab:
    v_0 = 0,  v_{t+1} = mu v_t + grad L_train(w_t) + lam_j w_t (per linear layer j),
    w_{t+1} = w_t - lr_t v_{t+1},   L_val(w_T),
torch.autograd.grad with create_graph=True through every step, then d L_val / d (lam, lr_t).
L_train is the mean loss over the first n_train training examples (full batch), L_val over the
first n_test test examples (pixels / 255); cross-entropy, or 1/2 mean ||f - onehot(y)||^2.
It compares d_lambda of every unrolled method (reverse, reversal, forward) and the d_lr
metric (step t = dL_val/dlr_t) with torch's, and exits 1 if a relative 2-norm difference
exceeds --rtol (default 1e-8). The third case has "hyperparameter": "data_weights": there
L_train = (1/n) sum_i s_i l_i with s = 1 a leaf tensor, and d L_val / d s from torch is compared
with hypergradient.json's d_weights of reverse and reversal (forward mode is off there).

Usage (needs /usr/bin/python3 with python3-torch; not part of `make test`):
  /usr/bin/python3 tests/hypergrad_torch_check.py build/tdlab [--rtol 1e-8] [--threads 2]
"""
import argparse
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch

DT = torch.float64

CASES = [
    {"data": {"n_train": 300, "n_test": 200}, "model": {"hidden": [32], "activation": "relu"},
     "loss": "cross_entropy", "steps": 40, "lr": 0.1, "momentum": 0.9, "l2": [1e-3, 3e-3]},
    {"data": {"n_train": 200, "n_test": 100}, "model": {"hidden": [16, 8], "activation": "tanh"},
     "loss": "mse", "steps": 30, "lr": 0.2, "momentum": 0.8, "l2": [1e-2, 2e-3, 5e-3]},
    {"data": {"n_train": 100, "n_test": 100}, "model": {"hidden": [16], "activation": "relu"},
     "loss": "cross_entropy", "steps": 25, "lr": 0.1, "momentum": 0.9, "l2": [1e-3, 2e-3],
     "hyperparameter": "data_weights", "methods": {"forward": False, "ift": False}},
]


def parse_safetensors(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=DT).reshape(info["shape"]).clone()
    return out


def load(split, n):
    d = os.environ.get("TDLAB_DATA_DIR") or "/usr/share/datasets/fashion-mnist"
    pre = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(d, pre + "-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    with gzip.open(os.path.join(d, pre + "-labels-idx1-ubyte.gz"), "rb") as f:
        lab = f.read()
    x = torch.frombuffer(bytearray(raw[16:16 + n * 784]), dtype=torch.uint8)
    x = x.reshape(n, 784).to(DT) / 255.0
    y = torch.frombuffer(bytearray(lab[8:8 + n]), dtype=torch.uint8).to(torch.int64)
    return x, y


def torch_hypergradient(case, ps):
    L = len(ps) // 2
    act = {"relu": torch.relu, "tanh": torch.tanh, "linear": lambda z: z}[case["model"]["activation"]]
    x, y = load("train", case["data"]["n_train"])
    xv, yv = load("test", case["data"]["n_test"])

    def f(ws, xx):
        h = xx
        for j in range(L):
            h = h @ ws[2 * j].T + ws[2 * j + 1]
            if j < L - 1:
                h = act(h)
        return h

    def per_example(z, yy):
        if case["loss"] == "mse":
            return 0.5 * ((z - torch.nn.functional.one_hot(yy, 10).to(DT)) ** 2).sum(1)
        return torch.nn.functional.cross_entropy(z, yy, reduction="none")

    def loss(z, yy, s=None):
        le = per_example(z, yy)
        return (le * s).mean() if s is not None else le.mean()

    s = torch.ones(case["data"]["n_train"], dtype=DT, requires_grad=True)

    T, mu = case["steps"], case["momentum"]
    lam = torch.tensor(case["l2"], dtype=DT, requires_grad=True)
    lrs = torch.full((T,), case["lr"], dtype=DT, requires_grad=True)
    w = [p.clone().requires_grad_(True) for p in ps]
    v = [torch.zeros_like(p) for p in w]
    for t in range(T):
        g = torch.autograd.grad(loss(f(w, x), y, s), w, create_graph=True)
        v = [mu * vi + gi + lam[i // 2] * wi for i, (vi, gi, wi) in enumerate(zip(v, g, w))]
        w = [wi - lrs[t] * vi for wi, vi in zip(w, v)]
    dl, dlr, ds = torch.autograd.grad(loss(f(w, xv), yv), [lam, lrs, s])
    return dl, dlr, ds


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tdlab")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    worst = 0.0
    for k, case in enumerate(CASES):
        with tempfile.TemporaryDirectory() as d:
            spec = os.path.join(d, "spec.json")
            with open(spec, "w") as fh:
                json.dump({"kind": "hypergradient",
                           "params": dict(case, methods=case.get("methods", {"ift": False}))}, fh)
            out = os.path.join(d, "m.jsonl")
            subprocess.run([a.tdlab, "run", spec, "--out", out, "--artifacts", d], check=True,
                           stdout=subprocess.DEVNULL)
            lines = [json.loads(s) for s in open(out)]
            with open(os.path.join(d, "params_init.safetensors"), "rb") as fh:
                st = parse_safetensors(fh.read())
            with open(os.path.join(d, "hypergradient.json")) as fh:
                art = json.load(fh)
        L = len(st) // 2
        ps = []
        for j in range(L):
            ps += [st["layers.%d.weight" % j], st["layers.%d.bias" % j]]
        summ = [s for s in lines if "status" in s][-1]["summary"]
        dlr_td = torch.tensor([s["value"] for s in lines if s.get("key") == "d_lr"], dtype=DT)
        dl, dlr, ds = torch_hypergradient(case, ps)
        meths = [m for m in ("reverse", "reversal", "forward") if "d_lambda_" + m in summ]
        errs = {m: rel(torch.tensor(summ["d_lambda_" + m], dtype=DT), dl) for m in meths}
        errs["d_lr"] = rel(dlr_td, dlr)
        if case.get("hyperparameter") == "data_weights":
            for m in ("reverse", "reversal"):
                errs["d_weights_" + m] = rel(torch.tensor(art["d_weights"][m], dtype=DT), ds)
        worst = max(worst, max(errs.values()))
        print("case %d: torch d_lambda %s; relative differences %s"
              % (k, [round(x, 12) for x in dl.tolist()],
                 ", ".join("%s %.2e" % kv for kv in errs.items())))
    ok = worst <= a.rtol
    print("%s: worst relative difference %.2e (rtol %.0e)" % ("OK" if ok else "FAIL", worst, a.rtol))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
