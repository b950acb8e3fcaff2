#!/usr/bin/python3
"""train_step.py: PyTorch peer of bench_train.c: one SGD step of MLP 784-512-512-10, float64.

Prints the median milliseconds per step (forward + cross-entropy + backward + SGD update with
momentum 0.9) at batch 128 on 2 threads, the same work as bench/bench_train.c.
Usage: train_step.py [--iters N] [--warmup N]"""
import sys
import time

try:
    import torch
except ImportError:
    print("NA")
    sys.exit(0)
from benchlib import int_options, median, mlp, setup


def main():
    iters, warmup = int_options(iters=200, warmup=20)
    setup()
    dt = torch.float64
    model = mlp(512)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(128, 784, dtype=dt)
    y = torch.randint(0, 10, (128,))
    lossf = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print("%.4f" % (1e3 * median(times)))


if __name__ == "__main__":
    main()
