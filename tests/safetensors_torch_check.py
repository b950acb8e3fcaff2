#!/usr/bin/env python3
"""safetensors_torch_check.py: cross-check tdlab's safetensors writer against PyTorch.

Optional, not part of `make test` (needs torch). Usage:
    TDLAB_ST_DUMP=/tmp/ck.safetensors build/tests/test_safetensors
    /usr/bin/python3 tests/safetensors_torch_check.py /tmp/ck.safetensors
Parses the file by hand from the format description (8-byte LE header length, JSON header,
raw little-endian data), loads it into torch.nn.Linear layers with load_state_dict (the layout
contract: layers.{i}.weight (out, in), layers.{i}.bias (out)), and compares every value with
the ones test_safetensors.c wrote. With the `safetensors` package installed it also loads the
file with safetensors.torch.load_file.
"""
import json
import math
import struct
import sys

import torch

path = sys.argv[1]
raw = open(path, "rb").read()
(n,) = struct.unpack("<Q", raw[:8])
assert n % 8 == 0 and raw[8:9] == b"{", "header length/alignment"
header = json.loads(raw[8 : 8 + n].decode("utf-8"))
data = raw[8 + n :]
meta = header.pop("__metadata__", {})
assert meta == {"format": "pt", "tdlab": "test"}, meta

DT = {"F64": torch.float64, "F32": torch.float32}
tensors = {}
for name, info in header.items():
    b, e = info["data_offsets"]
    t = torch.frombuffer(bytearray(data[b:e]), dtype=DT[info["dtype"]]) if e > b else torch.empty(0, dtype=torch.float64)
    tensors[name] = t.reshape(info["shape"])

# Same values as fill_values() in tests/test_safetensors.c.
w0 = torch.tensor([0.1 * i - 0.55 for i in range(12)], dtype=torch.float64).reshape(3, 4)
b0 = torch.tensor([1.0 / (i + 3.0) for i in range(3)], dtype=torch.float64)
w1 = [(i - 2.5) * 1e-3 for i in range(6)]
w1[4] = 4.9e-324
w1[5] = math.inf
w1 = torch.tensor(w1, dtype=torch.float64).reshape(2, 3)
assert torch.equal(tensors["layers.0.weight"], w0)
assert torch.equal(tensors["layers.0.bias"], b0)
assert torch.equal(tensors["layers.1.weight"], w1)
b1 = tensors["layers.1.bias"]
assert math.isnan(b1[0].item()) and b1[1].item() == 0.0 and math.copysign(1, b1[1].item()) < 0
assert tensors["scalar"].shape == () and tensors["scalar"].item() == 42.5
assert tensors["empty"].shape == (0, 5)

# The layout contract: the checkpoint loads into an nn.Sequential of Linear layers.
net = torch.nn.ModuleDict({"layers": torch.nn.ModuleList([torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)])}).double()
sd = {k: v for k, v in tensors.items() if k.startswith("layers.")}
net.load_state_dict(sd, strict=True)
assert torch.equal(net["layers"][0].weight.data, w0)

try:
    from safetensors.torch import load_file  # optional
    ref = load_file(path)
    for k in ref:
        assert torch.equal(ref[k].nan_to_num(), tensors[k].nan_to_num()), k
    print("safetensors package: OK")
except ImportError:
    print("safetensors package not installed; hand parser only")
print("OK: %d tensors, header %d bytes" % (len(tensors), n))
