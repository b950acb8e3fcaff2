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
import sys
import time

try:
    import torch
except ImportError:
    print("NA")
    sys.exit(0)
from benchlib import int_options, load_images, median, mlp, setup


def main():
    iters, warmup, n = int_options(iters=20, warmup=3, n=1000)
    setup()
    model = mlp(512)
    params = list(model.parameters())
    x, y = load_images(n, labels=True)
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
    print("%.4f" % (1e3 * median(times)))


if __name__ == "__main__":
    main()
