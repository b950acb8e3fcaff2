#!/usr/bin/python3
"""ntk.py: PyTorch peer of bench_ntk.c: the full empirical NTK of an MLP 784-256-256-10 (ReLU,
float64) over n = 200 Fashion-MNIST examples, all 10 outputs (a 2000 x 2000 matrix).

The way functorch's "Neural Tangent Kernels" tutorial computes it: per-example Jacobians with
vmap(jacrev(f)) over the flat parameters, then the contraction
    Theta[N, M, a, b] = sum over parameter tensors of einsum('Naf,Mbf->NMab', J1, J2)
(computed as one GEMM per tensor on reshaped views, the second operand always a small block:
torch copies operands, gigabytes for the first layer's 200,704 columns of a row block),
chunked over examples (the whole Jacobian is 200 x 10 x 269,322 doubles = 4.3 GB), blockwise
over the upper triangle (i <= j) with the lower blocks mirrored: the Jacobian of a ROW block of
`chunk` examples (default 100: 2.2 GB) is computed once and kept while the Jacobians of the
column examples after it are computed in small blocks of `col` examples (default 10) and
contracted against it as they come (the diagonal block reuses the row Jacobian). So the peak
memory is about one row block plus one column block and their temporaries, and the example
Jacobians are computed n + (number of examples in later blocks) times in all (300 for the
defaults, against 500 for pairs of 50-example chunks). The parameters are detached: with
requires_grad the blocks carried an autograd graph through which `out` kept every block's
Jacobian alive (the ~11 GB peak of the earlier version). float64,
torch.set_num_threads(2). Prints on stderr the peak RSS and the trace, and the median
milliseconds per kernel as its last stdout line (NA without torch or functorch).
Usage: ntk.py [--iters N] [--n N] [--chunk C] [--col C]"""
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


def empirical_ntk(fmodel, params, x, chunk, col):
    def f_single(p, xi):
        return fmodel(p, xi.unsqueeze(0)).squeeze(0)

    jac = vmap(jacrev(f_single), (None, 0))
    n = x.shape[0]
    k = fmodel(params, x[:1]).shape[1]
    out = torch.empty(n, n, k, k, dtype=x.dtype)

    def contract(a, b):
        # einsum('Naf,Mbf->NMab', a, b) as one GEMM on views; b is always a small block (torch
        # copies the transposed operand: for the first layer's 200,704 columns a row block's
        # copy would be gigabytes)
        na, ka, f = a.shape
        nb, kb, _ = b.shape
        return (a.reshape(na * ka, f) @ b.reshape(nb * kb, f).T).view(na, ka, nb, kb).permute(0, 2, 1, 3)

    def put(i0, i1, j0, j1, ja, jb, mirror=True):
        blk = sum(contract(a, b) for a, b in zip(ja, jb))
        out[i0:i1, j0:j1] = blk
        if mirror:
            out[j0:j1, i0:i1] = blk.permute(1, 0, 3, 2)

    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        # the row block's Jacobian, filled from sub-blocks of `col` examples so that vmap's
        # temporaries stay those of a small block
        ji = None
        for s0 in range(i0, i1, col):
            s1 = min(s0 + col, i1)
            js = [j.flatten(2) for j in jac(params, x[s0:s1])]
            if ji is None:
                ji = [torch.empty((i1 - i0,) + t.shape[1:], dtype=t.dtype) for t in js]
            for dst, src in zip(ji, js):
                dst[s0 - i0:s1 - i0] = src
            del js
        for s0 in range(i0, i1, col):  # the diagonal block, against small slices of itself
            s1 = min(s0 + col, i1)
            put(i0, i1, s0, s1, ji, [t[s0 - i0:s1 - i0] for t in ji], mirror=False)
        for j0 in range(i1, n, col):
            j1 = min(j0 + col, n)
            jj = [j.flatten(2) for j in jac(params, x[j0:j1])]
            put(i0, i1, j0, j1, ji, jj)
            del jj
        del ji
    return out


def main():
    iters, n, chunk, col = int_options(iters=1, n=200, chunk=100, col=10)
    setup()
    model = mlp(256)
    fmodel, params = make_functional(model)
    # plain tensors: with requires_grad the results carried an autograd graph, and `out`
    # (filled in place) kept every block's Jacobian alive through it (the old ~11 GB peak);
    # jacrev differentiates its inputs whether they require grad or not
    params = tuple(p.detach() for p in params)
    x = load_images(n)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = empirical_ntk(fmodel, params, x, chunk, col)
        times.append((time.perf_counter() - t0) * 1e3)
    med = median(times)
    tr = torch.diagonal(torch.diagonal(out, dim1=0, dim2=1), dim1=0, dim2=1).sum().item()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"ntk.py: n={n} chunk={chunk} col={col} iters={iters} median={med:.1f} ms "
          f"trace={tr:.10g} peak_rss={rss:.1f} MB", file=sys.stderr)
    print(f"{med:.4f}")


if __name__ == "__main__":
    main()
