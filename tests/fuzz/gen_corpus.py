#!/usr/bin/env python3
# gen_corpus.py: regenerate the seed corpora of tests/fuzz/corpus/ (run it when kinds change).
# Usage: build/tdlab kinds --json > /tmp/kinds.json && python3 tests/fuzz/gen_corpus.py /tmp/kinds.json tests/fuzz/corpus
import json, os, struct, sys, gzip
cat = json.load(open(sys.argv[1]))
root = sys.argv[2]
def put(d, name, data):
    os.makedirs(os.path.join(root, d), exist_ok=True)
    if isinstance(data, (dict, list)): data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str): data = data.encode()
    open(os.path.join(root, d, name), "wb").write(data)
def setp(obj, path, v):
    parts = path.split(".")
    for p in parts[:-1]: obj = obj.setdefault(p, {})
    obj[parts[-1]] = v
def sample(p, which):
    t = p["type"]; d = p.get("default")
    if which == "default": return d
    if p.get("enum"): return p["enum"][-1] if which == "max" else p["enum"][0]
    lo, hi = p.get("min"), p.get("max")
    if t == "integer": return int(lo if which == "min" else min(hi, 64))
    if t == "number": return lo if which == "min" else hi
    if t == "boolean": return which == "max"
    if t.startswith("list"):
        x = int(lo) if t == "list of integers" else lo
        return [x] if which == "min" else [x, x]
    return d
for k in cat:
    n = k["name"]
    put("jobspec", f"{n}-empty.json", {"kind": n, "params": {}})
    for which in ("default", "min", "max"):
        params = {}
        for p in k["params"]:
            v = sample(p, which)
            if v is not None: setp(params, p["path"], v)
        put("jobspec", f"{n}-{which}.json", {"kind": n, "params": params})
    ps = {}
    setp(ps, "data.name", "synthetic") if any(p["path"] == "data.name" for p in k["params"]) else None
    put("jobspec", f"{n}-body.json", {"kind": n, "params": ps, "name": "seed run", "tags": ["a", "b:c"], "priority": -3})
put("jobspec", "bad-type.json", {"kind": "train", "params": {"optimizer": {"lr": "fast"}}})
put("jobspec", "bad-field.json", {"kind": "linreg", "params": {"nope": 1}})
put("jobspec", "bad-kind.json", {"kind": "nosuch", "params": {}})
put("jobspec", "huge-model.json", {"kind": "train", "params": {"model": {"hidden": [100000, 100000]}}})
put("jobspec", "nan.json", '{"kind":"nqm","params":{"lr":1e999,"h":[1,2,-0.0]}}')
# sweeps
put("sweep", "h4-a.json", {"name":"g","kind":"nqm","base":{"dim":10},"axes":{"lr":{"values":[0.1,0.2,0.5]},"batch_size":{"values":[1,4]}},"seeds":2,"early_stopping":{"rule":"asha","metric":"loss","min_steps":10},"fit":{"law":"critical_batch","x":"params.batch_size","y":"summary.steps_to_target"}})
put("sweep", "h4-b.json", {"kind":"train","mode":"random","samples":3,"axes":{"model.hidden[0]":{"values":[32,64]},"optimizer.lr":{"log_uniform":[0.001,1]}},"early_stopping":{"rule":"median","metric":"train_loss","grace_steps":5}})
put("sweep", "linreg-grid.json", {"kind":"linreg","base":{"steps":10},"axes":{"lr":{"values":[0.01,0.1]},"data.d":{"values":[5,10,20]}},"seeds":[0,7],"max_concurrency":2})
put("sweep", "eos-random.json", {"kind":"eos","mode":"random","samples":4,"seed":3,"axes":{"lr":{"uniform":[0.01,0.5]},"momentum":{"values":[0,0.9]}},"seeds":1})
put("sweep", "chinchilla.json", {"name":"scaling","kind":"train","base":{"data":{"name":"synthetic"}},"axes":{"model.hidden":{"values":[[8],[16],[32,32]]},"data.n":{"values":[100,200]}},"fit":{"law":"chinchilla","N":"summary.n_params","D":"params.data.n","L":"summary.final_loss","bootstrap":10}})
put("sweep", "power.json", {"kind":"nqm","axes":{"batch_size":{"values":[1,2,4,8]}},"fit":{"law":"power_offset","x":"params.batch_size","y":"summary.final_loss","seed":1,"curve_points":5},"early_stopping":{"rule":"asha","metric":"loss","mode":"max","min_steps":1,"eta":2,"max_steps":100}})
put("sweep", "bad-axis.json", {"kind":"nqm","axes":{"lr":{"values":[-1]}}})
put("sweep", "too-many.json", {"kind":"nqm","axes":{"lr":{"values":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]},"batch_size":{"values":[1,2,3,4,5,6,7,8,9]}}})
# query strings
for i, q in enumerate([
    "keys=train_loss,lr&max_points=10&since_step=5",
    "keys=test%2Facc%401&max_points=2",
    "since_step=-100&max_points=100000",
    "status=queued,running,succeeded&kind=train&tag=fuzz&limit=10&cursor=5",
    "status=failed,diverged,cancelled&sweep=1&limit=1000",
    "tag=a%3Ab&kind=linreg&limit=1&cursor=9007199254740992",
    "keys=lr&keys=train_loss&max_points=3&max_points=x",
    "keys=%00&since_step=9223372036854775808&limit=-1",
    "keys+=a+b&status&limit=",
    "cursor=1%2&sweep=%ZZ&keys=,,,",
    ]):
    put("query", f"q{i}.txt", q)
# IDX
def idx(type_byte, dims, payload):
    return bytes([0, 0, type_byte, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload
put("idx", "u8-images-3x2x2.idx", idx(0x08, [3, 2, 2], bytes(range(0, 240, 20))))
put("idx", "u8-labels-4.idx", idx(0x08, [4], bytes([0, 1, 9, 3])))
put("idx", "i8.idx", idx(0x09, [2, 2], bytes([0x80, 0x7f, 1, 0xff])))
put("idx", "i16.idx", idx(0x0B, [3], struct.pack(">3h", -1, 2, 32767)))
put("idx", "i32.idx", idx(0x0C, [2, 1], struct.pack(">2i", -2**31, 7)))
put("idx", "f32.idx", idx(0x0D, [2], struct.pack(">2f", 1.5, float("nan"))))
put("idx", "f64.idx", idx(0x0E, [1, 1, 2], struct.pack(">2d", -0.0, float("inf"))))
d = os.environ.get("TDLAB_DATA_DIR", "/usr/share/datasets/fashion-mnist")
try:
    with gzip.open(os.path.join(d, "t10k-images-idx3-ubyte.gz")) as f: h = f.read(16 + 2 * 784)
    put("idx", "fashion-2-images.idx", h[:4] + struct.pack(">I", 2) + h[8:])
    with gzip.open(os.path.join(d, "t10k-labels-idx1-ubyte.gz")) as f: h = f.read(8 + 5)
    put("idx", "fashion-5-labels.idx", h[:4] + struct.pack(">I", 5) + h[8:])
except OSError as e:
    print("no fashion-mnist:", e)
