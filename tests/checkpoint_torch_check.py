#!/usr/bin/env python3
"""checkpoint_torch_check.py: cross-check tdlab's optimizer-state checkpoints against PyTorch.

Optional, not part of `make test` (needs torch). Usage:
    mkdir -p /tmp/ckd && TDLAB_CKPT_DUMP=/tmp/ckd build/tests/test_checkpoint
    /usr/bin/python3 tests/checkpoint_torch_check.py /tmp/ckd
For sgd (momentum 0.9, dampening 0.1, weight_decay 0.01) and adam (weight_decay 0.01), loads
<opt>.safetensors (written by test_checkpoint.c after 5 steps) into torch.nn.Linear layers
(load_state_dict, strict) and the named state tensors optimizer.<state>.<param> plus the
"optimizer_step" metadata into torch.optim.<X>'s state, takes step 6 in torch with the same
gradient (g[j] = sin(26 * 5 + j) over tdlab's flat layout: per layer W row-major, then b) and
lr 1e-2, and compares with <opt>_next.safetensors, tdlab's own step 6. Both are float64 and the
same formula, so they agree to a few ulps (tolerance rtol 1e-13).
"""
import json
import math
import struct
import sys

import torch

d = sys.argv[1]


def load(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    data = raw[8 + n :]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        assert info["dtype"] == "F64", name
        b, e = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float64).reshape(info["shape"]).clone()
    return out, meta


STATE = {"sgd": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"]}
for opt_name, states in STATE.items():
    t, meta = load("%s/%s.safetensors" % (d, opt_name))
    nxt, _ = load("%s/%s_next.safetensors" % (d, opt_name))
    assert meta["optimizer"] == opt_name, meta
    step = int(meta["optimizer_step"])
    assert step == 5, step
    net = torch.nn.ModuleDict({"layers": torch.nn.ModuleList([torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)])}).double()
    net.load_state_dict({k: v for k, v in t.items() if k.startswith("layers.")}, strict=True)
    named = dict(net.named_parameters())  # "layers.0.weight", ...
    order = ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    params = [named[k] for k in order]
    if opt_name == "sgd":
        opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=0.01)
    else:
        opt = torch.optim.Adam(params, lr=1e-2, weight_decay=0.01)
    for k, p in zip(order, params):
        st = {s: t["optimizer.%s.%s" % (s, k)].clone() for s in states}
        if opt_name == "adam":
            st["step"] = torch.tensor(float(step))
        opt.state[p] = st
    j = 0
    for p in params:
        n = p.numel()
        p.grad = torch.tensor([math.sin(26 * 5 + j + i) for i in range(n)], dtype=torch.float64).reshape(p.shape)
        j += n
    opt.step()
    worst = 0.0
    for k, p in zip(order, params):
        assert torch.allclose(p.data, nxt[k], rtol=1e-13, atol=1e-16), (opt_name, k, p.data, nxt[k])
        worst = max(worst, (p.data - nxt[k]).abs().max().item())
    print("%s: the torch step from tdlab's state equals tdlab's step (max |diff| %.3g)" % (opt_name, worst))
print("OK")
