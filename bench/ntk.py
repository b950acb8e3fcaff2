#!/usr/bin/python3
"""ntk.py: PyTorch peer of bench_ntk.c: the full empirical NTK of an MLP 784-256-256-10 (ReLU,
float64) over n = 200 Fashion-MNIST examples, all 10 outputs (a 2000 x 2000 matrix).

The way functorch's "Neural Tangent Kernels" tutorial computes it: per-example Jacobians with
vmap(jacrev(f)) over the flat parameters, then the contraction
    Theta[N, M, a, b] = sum over parameter tensors of einsum('Naf,Mbf->NMab', J1, J2),
chunked over examples (the whole Jacobian is 200 x 10 x 269,322 doubles = 4.3 GB): the
Jacobian of each chunk of examples is computed once per chunk pair (i <= j) and the lower
blocks mirrored. float64, torch.set_num_threads(2). Prints on stderr the peak RSS and the
trace, and the median milliseconds per kernel as its last stdout line (NA without torch or
functorch). Usage: ntk.py [--iters N] [--n N] [--chunk C]"""
import resource
import sys
import time

try:
    import torch
    from functorch import jacrev, make_functional, vmap
except ImportError:
    print("NA")
    sys.exit(0)
from benchlib import int_options, load_images, median, mlp, setup


def empirical_ntk(fmodel, params, x, chunk):
    def f_single(p, xi):
        return fmodel(p, xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(f_single), (None, 0))
    n = x.shape[0]
    starts = list(range(0, n, chunk))
    k = fmodel(params, x[:1]).shape[1]
    out = torch.empty(n, n, k, k, dtype=x.dtype)
    for i in starts:
        ji = [j.flatten(2) for j in jac(params, x[i:i + chunk])]
        for j in starts:
            if j < i:
                continue
            jj = ji if j == i else [t.flatten(2) for t in jac(params, x[j:j + chunk])]
            blk = sum(torch.einsum("Naf,Mbf->NMab", a, b) for a, b in zip(ji, jj))
            out[i:i + chunk, j:j + chunk] = blk
            if j != i:
                out[j:j + chunk, i:i + chunk] = blk.permute(1, 0, 3, 2)
            del jj, blk
        del ji
    return out


def main():
    iters, n, chunk = int_options(iters=1, n=200, chunk=50)
    setup()
    model = mlp(256)
    fmodel, params = make_functional(model)
    x = load_images(n)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = empirical_ntk(fmodel, params, x, chunk)
        times.append((time.perf_counter() - t0) * 1e3)
    med = median(times)
    tr = torch.diagonal(torch.diagonal(out, dim1=0, dim2=1), dim1=0, dim2=1).sum().item()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"ntk.py: n={n} chunk={chunk} iters={iters} median={med:.1f} ms "
          f"trace={tr:.10g} peak_rss={rss:.1f} MB", file=sys.stderr)
    print(f"{med:.4f}")


if __name__ == "__main__":
    main()
