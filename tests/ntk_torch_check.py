#!/usr/bin/python3
"""ntk_torch_check.py: cross-check tdlab's empirical NTK of a network exported as safetensors
against functorch's vmap(jacrev) in float64.

Usage: /usr/bin/python3 tests/ntk_torch_check.py http://127.0.0.1:PORT [TOKEN]
(needs torch with functorch, and a running `tdlab serve`; tests/e2e_kernels.sh runs it when
/usr/bin/python3 has torch). For each of a few MLPs (relu, tanh, linear; 1 to 3 hidden
layers; several outputs; one with LayerNorm after each hidden layer), initialized in PyTorch (torch.nn.Linear's default init, biases
included), it writes the layers.{j}.weight / layers.{j}.bias tensors (F64, the layout of
torch.nn.Linear) and the "activation" metadata as a safetensors file, uploads it
(POST /api/v1/checkpoints), asks POST /api/v1/kernels for {"kernel": "empirical_ntk",
"checkpoint": id, "x", "x2"?, "outputs"} and compares with
    Theta[(i,a),(j,b)] = sum_p df_a(x_i)/dp df_b(x2_j)/dp
computed by functorch (per-example Jacobians by vmap(jacrev), contracted with einsum), in the
full (n1 k x n2 k, example-major) and the trace (n1 x n2) forms, for x against itself and
against x2. Passes when ||tdlab - torch||_F / ||torch||_F < 1e-9 for every case; prints one
line per case and exits non-zero on a failure.
"""
import json
import struct
import sys
import urllib.error
import urllib.request

import torch
from functorch import jacrev, make_functional, vmap

BASE = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else "http://127.0.0.1:8080"
TOKEN = sys.argv[2] if len(sys.argv) > 2 else None
torch.set_default_dtype(torch.float64)


def request(path, body, ctype):
    req = urllib.request.Request(BASE + path, data=body, method="POST")
    req.add_header("Content-Type", ctype)
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def safetensors_bytes(layers, activation, norms=()):
    header, blobs, off = {}, [], 0
    tensors = [(f"layers.{j}.{n}", t) for j, lin in enumerate(layers)
               for n, t in (("weight", lin.weight), ("bias", lin.bias))]
    tensors += [(f"norms.{j}.{n}", t) for j, ln in enumerate(norms)
                for n, t in (("weight", ln.weight), ("bias", ln.bias))]
    for key, t in tensors:
        b = t.detach().contiguous().numpy().astype("<f8").tobytes()
        header[key] = {"dtype": "F64", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"activation": activation}
    if norms:
        header["__metadata__"].update({"norm": "layernorm", "norm_eps": repr(norms[0].eps)})
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def torch_ntk(model, x1, x2):
    fmodel, params = make_functional(model)

    def f(p, xi):
        return fmodel(p, xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(f), (None, 0))
    j1 = [t.flatten(2) for t in jac(params, x1)]
    j2 = [t.flatten(2) for t in jac(params, x2)]
    return sum(torch.einsum("Naf,Mbf->NMab", a, b) for a, b in zip(j1, j2))  # (n1, n2, k, k)


def main():
    torch.manual_seed(12)
    acts = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "linear": torch.nn.Identity}
    # (activation, widths, LayerNorm after every hidden linear layer: tdlab's dense-Jacobian
    # path of td_entk_compute, with random gains and shifts)
    nets = [("relu", [5, 16, 8, 3], False), ("tanh", [4, 32, 2], False),
            ("linear", [3, 6, 6, 6, 2], False), ("relu", [10, 64, 64, 10], False),
            ("tanh", [6, 12, 9, 3], True)]
    failed = 0
    for act, dims, use_ln in nets:
        layers = [torch.nn.Linear(dims[i], dims[i + 1]) for i in range(len(dims) - 1)]
        norms = [torch.nn.LayerNorm(dims[i + 1]) for i in range(len(dims) - 2)] if use_ln else []
        with torch.no_grad():
            for ln in norms:
                ln.weight.normal_(1.0, 0.3)
                ln.bias.normal_(0.0, 0.3)
        mods = []
        for i, lin in enumerate(layers):
            mods.append(lin)
            if i + 1 < len(layers):
                if use_ln:
                    mods.append(norms[i])
                mods.append(acts[act]())
        model = torch.nn.Sequential(*mods)
        st, body = request("/api/v1/checkpoints", safetensors_bytes(layers, act, norms),
                           "application/octet-stream")
        if st != 201:
            print(f"FAIL upload {act} {dims}: {st} {body}")
            failed += 1
            continue
        cid = body["id"]
        x1 = torch.randn(7, dims[0])
        x2 = torch.randn(5, dims[0])
        k = dims[-1]
        for use_x2 in (False, True):
            xb = x2 if use_x2 else x1
            ref = torch_ntk(model, x1, xb)
            for outputs in ("full", "trace"):
                req = {"kernel": "empirical_ntk", "checkpoint": cid, "x": x1.tolist(),
                       "outputs": outputs}
                if use_x2:
                    req["x2"] = x2.tolist()
                st, body = request("/api/v1/kernels", json.dumps(req).encode(), "application/json")
                if st != 200:
                    print(f"FAIL {act} {dims} x2={use_x2} {outputs}: {st} {body}")
                    failed += 1
                    continue
                got = torch.tensor(body["matrix"])
                if outputs == "full":
                    want = ref.permute(0, 2, 1, 3).reshape(x1.shape[0] * k, xb.shape[0] * k)
                else:
                    want = torch.diagonal(ref, dim1=2, dim2=3).sum(-1)
                rel = (torch.linalg.norm(got - want) / torch.linalg.norm(want)).item()
                ok = got.shape == want.shape and rel < 1e-9
                failed += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {act} {dims} x2={use_x2} {outputs} "
                      f"shape {tuple(got.shape)} rel_frob_err {rel:.2e}")
    print("ntk_torch_check:", "passed" if not failed else f"{failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
