#!/usr/bin/env python3
"""track_torch.py: a small PyTorch training script tracked by tdlab (two added lines).

Trains an MLP 784-64-10 with SGD + momentum on the first N Fashion-MNIST training images (the
same files and the same pixel scaling, x / 255, as tdlab's `train` kind), logging the minibatch
loss every step and the test loss/accuracy every `--eval-every` steps, so that its curves can be
compared on the dashboard with a tdlab `train` job of the same spec.

    TDLAB_URL=http://127.0.0.1:8080 /usr/bin/python3 clients/python/examples/track_torch.py

Needs torch (Debian's python3-torch). The tdlab lines are marked "# tdlab".
"""

import argparse
import gzip
import os
import struct
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tdlab  # noqa: E402  (or: pip install clients/python)

DATA = "/usr/share/datasets/fashion-mnist"


def idx(path):
    """An IDX file (the MNIST format) as a uint8 tensor of its shape."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8).reshape(shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    xtr = idx(f"{DATA}/train-images-idx3-ubyte.gz")[:a.n_train].reshape(-1, 784).double() / 255
    ytr = idx(f"{DATA}/train-labels-idx1-ubyte.gz")[:a.n_train].long()
    xte = idx(f"{DATA}/t10k-images-idx3-ubyte.gz")[:a.n_test].reshape(-1, 784).double() / 255
    yte = idx(f"{DATA}/t10k-labels-idx1-ubyte.gz")[:a.n_test].long()
    model = torch.nn.Sequential(torch.nn.Linear(784, a.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(a.hidden, 10)).double()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()

    steps = a.epochs * -(-a.n_train // a.batch_size)
    run = tdlab.start_run(name="torch-mlp", params=vars(a), tags=["torch"], total=steps)  # tdlab
    print(f"tracking as job {run.id} on {run.client.url}", file=sys.stderr)
    t0, step = time.time(), 0
    for _ in range(a.epochs):
        perm = torch.randperm(a.n_train)
        for i in range(0, a.n_train, a.batch_size):
            b = perm[i:i + a.batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xtr[b]), ytr[b])
            loss.backward()
            opt.step()
            logs = {"train_loss": loss.item()}
            if step % a.eval_every == 0:
                with torch.no_grad():
                    out = model(xte)
                    logs["test_loss"] = loss_fn(out, yte).item()
                    logs["test_acc"] = (out.argmax(1) == yte).double().mean().item()
            run.log(logs, step=step)  # tdlab
            step += 1
    with torch.no_grad():
        out = model(xte)
        summary = {"test_loss": loss_fn(out, yte).item(),
                   "test_acc": (out.argmax(1) == yte).double().mean().item(),
                   "steps": step, "seconds": time.time() - t0}
    run.finish(summary=summary)  # optional: at exit the run is finished anyway
    print(f"job {run.id}: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
