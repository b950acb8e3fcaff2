"""benchlib.py: helpers shared by the PyTorch peers bench/{train_step,hvp,ntk}.py: integer
options, the torch setup (threads, seed), the MLP 784-w-w-10 (ReLU, float64), the Fashion-MNIST
inputs with a random stand-in, and the median of the timings. Import it after torch (a peer
prints NA and exits when torch is missing, before it gets here)."""
import gzip
import os
import sys

import torch


def int_options(**defaults):
    """The integer options --NAME N of sys.argv (each NAME a keyword of defaults, whose value is
    the default); returns them as a tuple in the order of the keywords."""
    vals = dict(defaults)
    args = sys.argv[1:]
    for i, a in enumerate(args):
        for name in vals:
            if a == "--" + name:
                vals[name] = int(args[i + 1])
    return tuple(vals.values())


def setup(threads=2):
    """torch.set_num_threads(threads) and torch.manual_seed(0)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)


def mlp(width):
    """The MLP 784-width-width-10 (ReLU) in float64, with PyTorch's default initialization (from
    the global generator: call setup() first for a fixed seed)."""
    return torch.nn.Sequential(
        torch.nn.Linear(784, width), torch.nn.ReLU(),
        torch.nn.Linear(width, width), torch.nn.ReLU(),
        torch.nn.Linear(width, 10)).to(torch.float64)


def load_images(n, labels=False):
    """The first n Fashion-MNIST training images as an n x 784 float64 tensor of pixels / 255
    (from $TDLAB_DATA_DIR, else /usr/share/datasets/fashion-mnist), with their labels (int64)
    when labels is true; uniform random pixels (and labels in 0..9) from a generator seeded 0
    when the files cannot be read."""
    d = os.environ.get("TDLAB_DATA_DIR") or "/usr/share/datasets/fashion-mnist"
    try:
        with gzip.open(os.path.join(d, "train-images-idx3-ubyte.gz"), "rb") as f:
            raw = f.read()
        if labels:
            with gzip.open(os.path.join(d, "train-labels-idx1-ubyte.gz"), "rb") as f:
                lab = f.read()
    except OSError:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 784, dtype=torch.float64, generator=g)
        return (x, torch.randint(0, 10, (n,), generator=g)) if labels else x
    x = torch.frombuffer(bytearray(raw[16:16 + n * 784]), dtype=torch.uint8)
    x = x.reshape(n, 784).to(torch.float64) / 255.0
    if not labels:
        return x
    return x, torch.frombuffer(bytearray(lab[8:8 + n]), dtype=torch.uint8).to(torch.int64)


def median(times):
    """Sort the list times in place and return its middle element (the upper one for an even
    length)."""
    times.sort()
    return times[len(times) // 2]
