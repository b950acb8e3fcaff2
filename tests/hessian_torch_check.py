#!/usr/bin/python3
"""hessian_torch_check.py: cross-check a `curvature` job's last sharpness with PyTorch.

Loads the job's final parameters (params.safetensors: layers.{i}.weight (out, in) and
layers.{i}.bias (out), F64), rebuilds the MLP in torch (float64; Linear layers with the
activation named in the file's metadata between them), loads the analysis batch -- the
first analysis_n examples of the Fashion-MNIST TRAIN file in file order, pixels / 255 -- and
computes the top (largest algebraic) eigenvalue of the Hessian of the mean loss (cross-entropy,
or 1/2 mean ||f - onehot(y)||^2 for mse) on it, independently of tdlab:
  - n_params <= --dense-max (default 3000): the dense Hessian, column by column from
    double-backward HVPs, then torch.linalg.eigvalsh;
  - otherwise: Lanczos with full re-orthogonalization (twice) on double-backward HVPs
    (torch.autograd.grad with create_graph=True, then grad of <g, v>), until the top Ritz
    residual ||H y - theta y|| <= 1e-11 |theta| (the eigenvalue error is below it).
It then compares with the job's last sharpness and exits 1 if the relative difference
exceeds --rtol (default 1e-6).

Usage (optional, needs /usr/bin/python3 with python3-torch; not part of `make test`):
  # 1. Run a curvature job on the server and download its checkpoint and metrics:
  #      curl -s localhost:8080/api/v1/jobs/ID/artifacts/params.safetensors -o params.safetensors
  #    or let this script fetch both:
  /usr/bin/python3 tests/hessian_torch_check.py --server http://127.0.0.1:8080 --job ID
  # 2. Or give a file; the reference sharpness comes from --sharpness, from a metrics file
  #    (--metrics: `tdlab run --out` JSON lines, or the CSV of GET .../metrics.csv), or else
  #    from the checkpoint's own metadata (the curvature kind stores "sharpness", "analysis_n",
  #    "loss", "activation" there):
  /usr/bin/python3 tests/hessian_torch_check.py params.safetensors [--metrics m.jsonl]
Options: --analysis-n N, --loss cross_entropy|mse, --activation relu|tanh|linear override the
metadata; --data-dir DIR (default $TDLAB_DATA_DIR or /usr/share/datasets/fashion-mnist);
--threads N (default 2).
"""
import argparse
import gzip
import json
import os
import struct
import sys
import urllib.request

import torch

DT = torch.float64


def parse_safetensors(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dtype = {"F64": torch.float64, "F32": torch.float32}[info["dtype"]]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=dtype).to(DT)
        tensors[name] = t.reshape(info["shape"])
    return tensors, meta


def load_batch(data_dir, n):
    with gzip.open(os.path.join(data_dir, "train-images-idx3-ubyte.gz"), "rb") as f:
        raw = f.read()
    with gzip.open(os.path.join(data_dir, "train-labels-idx1-ubyte.gz"), "rb") as f:
        lab = f.read()
    assert struct.unpack(">I", raw[:4])[0] == 0x803 and struct.unpack(">I", lab[:4])[0] == 0x801
    x = torch.frombuffer(bytearray(raw[16:16 + n * 784]), dtype=torch.uint8)
    x = x.reshape(n, 784).to(DT) / 255.0
    y = torch.frombuffer(bytearray(lab[8:8 + n]), dtype=torch.uint8).to(torch.int64)
    return x, y


def build(tensors, act):
    n = 0
    while "layers.%d.weight" % n in tensors:
        n += 1
    assert n > 0, "no layers.0.weight"
    assert set(tensors) == {"layers.%d.%s" % (i, k) for i in range(n) for k in ("weight", "bias")}
    params = []
    for i in range(n):
        params.append(tensors["layers.%d.weight" % i].clone().requires_grad_(True))
        params.append(tensors["layers.%d.bias" % i].clone().requires_grad_(True))
    f = {"relu": torch.relu, "tanh": torch.tanh, "linear": lambda h: h}[act]

    def forward(x, ps):
        h = x
        for i in range(n):
            h = h @ ps[2 * i].T + ps[2 * i + 1]
            if i + 1 < n:
                h = f(h)
        return h

    return params, forward


def make_hvp(params, forward, x, y, loss_name):
    K = params[-1].shape[0]

    def loss_fn():
        z = forward(x, params)
        if loss_name == "mse":
            t = torch.nn.functional.one_hot(y, K).to(DT)
            return 0.5 * ((z - t) ** 2).sum(dim=1).mean()
        return torch.nn.functional.cross_entropy(z, y)

    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gflat = torch.cat([g.reshape(-1) for g in grads])

    def hvp(v):
        (hv,) = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(gflat, params, v, retain_graph=True)])]
        return hv.detach()

    return hvp, gflat.numel(), loss.item()


def top_eig_dense(hvp, n):
    H = torch.empty(n, n, dtype=DT)
    e = torch.zeros(n, dtype=DT)
    for j in range(n):
        e[j] = 1.0
        H[:, j] = hvp(e)
        e[j] = 0.0
    asym = (H - H.T).abs().max().item()
    H = 0.5 * (H + H.T)
    return torch.linalg.eigvalsh(H)[-1].item(), "dense eigvalsh (n=%d, max asym %.2e)" % (n, asym)


def top_eig_lanczos(hvp, n, max_steps=400, tol=1e-11):
    g = torch.Generator().manual_seed(1234)
    q = torch.randn(n, dtype=DT, generator=g)
    Q = [q / q.norm()]
    alpha, beta = [], []
    theta = float("nan")
    for j in range(min(max_steps, n)):
        w = hvp(Q[j])
        alpha.append(torch.dot(w, Q[j]).item())
        Qm = torch.stack(Q)
        for _ in range(2):  # full re-orthogonalization, twice
            w = w - Qm.T @ (Qm @ w)
        b = w.norm().item()
        T = torch.diag(torch.tensor(alpha, dtype=DT))
        for i, bi in enumerate(beta):
            T[i, i + 1] = T[i + 1, i] = bi
        ev, S = torch.linalg.eigh(T)
        theta = ev[-1].item()
        resid = abs(b * S[-1, -1].item())
        if resid <= tol * abs(theta) or b == 0.0:
            return theta, "Lanczos (%d steps, resid %.2e)" % (j + 1, resid)
        beta.append(b)
        Q.append(w / b)
    return theta, "Lanczos (NOT converged after %d steps)" % len(alpha)


def reference_from_metrics(path):
    last = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                d = json.loads(line)
                if d.get("key") == "sharpness":
                    if last is None or d["step"] >= last[0]:
                        last = (d["step"], float(d["value"]))
            elif line.startswith("sharpness,"):
                _, s, v = line.split(",")
                if last is None or int(s) >= last[0]:
                    last = (int(s), float(v))
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file", nargs="?")
    ap.add_argument("--server")
    ap.add_argument("--job")
    ap.add_argument("--metrics")
    ap.add_argument("--sharpness", type=float)
    ap.add_argument("--analysis-n", type=int)
    ap.add_argument("--loss", choices=["cross_entropy", "mse"])
    ap.add_argument("--activation", choices=["relu", "tanh", "linear"])
    ap.add_argument("--data-dir", default=os.environ.get("TDLAB_DATA_DIR") or
                    "/usr/share/datasets/fashion-mnist")
    ap.add_argument("--dense-max", type=int, default=3000)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    ref, ref_src = a.sharpness, "--sharpness"
    if a.server and a.job:
        base = a.server.rstrip("/") + "/api/v1/jobs/%s" % a.job
        raw = urllib.request.urlopen(base + "/artifacts/params.safetensors").read()
        m = json.load(urllib.request.urlopen(base + "/metrics?keys=sharpness"))
        s = m["metrics"]["sharpness"]
        if ref is None:
            ref, ref_src = float(s["value"][-1]), "server metrics (step %d)" % s["step"][-1]
    elif a.file:
        raw = open(a.file, "rb").read()
    else:
        ap.error("give a params.safetensors file or --server and --job")
    tensors, meta = parse_safetensors(raw)
    if ref is None and a.metrics:
        last = reference_from_metrics(a.metrics)
        if last:
            ref, ref_src = last[1], "%s (step %d)" % (a.metrics, last[0])
    if ref is None and "sharpness" in meta:
        ref, ref_src = float(meta["sharpness"]), "checkpoint metadata (step %s)" % meta.get("step")
    if meta.get("dataset", "fashion-mnist") != "fashion-mnist":
        sys.exit("only fashion-mnist analysis batches are supported (got %s)" % meta["dataset"])
    n = a.analysis_n or int(meta.get("analysis_n", 1000))
    loss_name = a.loss or meta.get("loss", "cross_entropy")
    act = a.activation or meta.get("activation", "relu")

    x, y = load_batch(a.data_dir, n)
    params, forward = build(tensors, act)
    hvp, n_params, loss = make_hvp(params, forward, x, y, loss_name)
    if n_params <= a.dense_max:
        lam, how = top_eig_dense(hvp, n_params)
    else:
        lam, how = top_eig_lanczos(hvp, n_params)
    print("model: %s, activation %s, loss %s, n_params %d; analysis batch: first %d train "
          "examples; loss %.12g" % ([tuple(tensors["layers.%d.weight" % i].shape)
                                     for i in range(len(params) // 2)], act, loss_name,
                                    n_params, n, loss))
    print("torch top Hessian eigenvalue: %.15g  [%s]" % (lam, how))
    if ref is None:
        print("no reference sharpness given")
        return 0
    rel = abs(lam - ref) / abs(ref)
    ok = rel <= a.rtol
    print("tdlab sharpness:              %.15g  [%s]" % (ref, ref_src))
    print("relative difference: %.3e (tolerance %.1e): %s" % (rel, a.rtol, "OK" if ok else "MISMATCH"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
