#!/usr/bin/python3
"""hvp.py: PyTorch peer of bench_hvp.c: one Hessian-vector product, MLP 784-512-512-10, float64.

The HVP of the mean softmax cross-entropy over n = 1000 Fashion-MNIST examples (the first 1000
of the train file, pixels / 255; uniform random inputs when the files are absent) with respect
to all parameters, by double backward (Pearlmutter's trick as autograd does it):
    g = torch.autograd.grad(loss, params, create_graph=True)
    Hv = torch.autograd.grad(sum_i <g_i, v_i>, params)
Each timed call runs the forward pass, the first backward with create_graph and the second
backward (autograd cannot reuse the forward across calls). float64, torch.set_num_threads(2).
Prints the median milliseconds per HVP as its last line (NA without torch).
Usage: hvp.py [--iters N] [--warmup N] [--n N]"""
import gzip
import os
import sys
import time

try:
    import torch
except ImportError:
    print("NA")
    sys.exit(0)


def load_images(n):
    d = os.environ.get("TDLAB_DATA_DIR") or "/usr/share/datasets/fashion-mnist"
    try:
        with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz"), "rb") as f:
            raw = f.read()
        with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz"), "rb") as f:
            lab = f.read()
    except OSError:
        g = torch.Generator().manual_seed(0)
        return (torch.rand(n, 784, dtype=torch.float64, generator=g),
                torch.randint(0, 10, (n,), generator=g))
    x = torch.frombuffer(bytearray(raw[16:16 + n * 784]), dtype=torch.uint8)
    x = x.reshape(n, 784).to(torch.float64) / 255.0
    y = torch.frombuffer(bytearray(lab[8:8 + n]), dtype=torch.uint8).to(torch.int64)
    return x, y


def main():
    iters, warmup, n = 20, 3, 1000
    args = sys.argv[1:]
    for i, a in enumerate(args):
        if a == "--iters":
            iters = int(args[i + 1])
        if a == "--warmup":
            warmup = int(args[i + 1])
        if a == "--n":
            n = int(args[i + 1])
    torch.set_num_threads(2)
    torch.manual_seed(0)
    dt = torch.float64
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 10)).to(dt)
    params = list(model.parameters())
    x, y = load_images(n)
    lossf = torch.nn.CrossEntropyLoss()
    v = [torch.randn_like(p) for p in params]

    def hvp():
        loss = lossf(model(x), y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        s = sum((gi * vi).sum() for gi, vi in zip(g, v))
        return torch.autograd.grad(s, params)

    for _ in range(warmup):
        hvp()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        hvp()
        times.append(time.perf_counter() - t0)
    times.sort()
    print("%.4f" % (1e3 * times[len(times) // 2]))


if __name__ == "__main__":
    main()
