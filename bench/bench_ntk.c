/* bench_ntk.c: time the full empirical NTK (td_entk_compute: all 10 outputs, a 2000 x 2000
 * float64 matrix) of an MLP 784-256-256-10 (ReLU) at initialization over n = 200 Fashion-MNIST
 * examples (the first 200 of the train file; uniform random pixels when the files are
 * absent). Prints on stderr the kernel's trace and the memory: td_entk_estimate (everything
 * the computation allocates, the output included) and the process's peak RSS; prints the
 * median ms per kernel as its last stdout line. The peer is bench/ntk.py (functorch
 * vmap(jacrev) with the Jacobian contraction in PyTorch).
 * Usage: bench_ntk [--threads N] [--iters N] [--n N] [--trace] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "base/la.h"
#include "base/rng.h"
#include "benchlib.h"
#include "kernels/entk.h"
#include "nn/data.h"

int main(int argc, char **argv) {
  int threads = 2, iters = 5, n = 200, full = 1;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--trace")) full = 0;
    else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--iters")) iters = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--n")) n = atoi(argv[++i]);
  }
  if (iters < 1) iters = 1;
  if (n < 1) n = 1;
  td_la_set_threads(threads);
  td_mlp_cfg cfg = {.in_dim = 784, .out_dim = 10, .n_hidden = 2, .hidden = {256, 256},
                    .act = TD_ACT_RELU, .init_scale = 1.0};
  td_err err = {0};
  td_mlp *m = NULL;
  td_dataset ds;
  const char *src = bench_images(n, 0, &ds);
  if (!src) return 1;
  if (td_mlp_create(&cfg, &m, &err)) {
    fprintf(stderr, "bench_ntk: %s\n", err.msg);
    return 1;
  }
  td_mlp_init(m, 0);
  const int k = 10;
  size_t sz = (full ? (size_t)k * k : 1) * (size_t)n * n;
  double *out = malloc(sz * sizeof *out), *t = malloc((size_t)iters * sizeof *t), need = 0;
  if (!out || !t) return 1;
  td_entk_opts o = {.full = full};
  td_entk_estimate(m, n, 0, 0, full, &need, NULL);
  for (int it = -1; it < iters; it++) {
    double t0 = bench_now_ms();
    if (td_entk_compute(m, m->params, ds.X, n, NULL, 0, &o, out, &err)) {
      fprintf(stderr, "bench_ntk: %s\n", err.msg);
      return 1;
    }
    double t1 = bench_now_ms();
    if (it >= 0) t[it] = t1 - t0;
  }
  bench_sort_median(t, iters);
  double tr = 0;
  size_t dim = full ? (size_t)n * k : (size_t)n;
  for (size_t i = 0; i < dim; i++) tr += out[i * dim + i];
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%.4f\n", t[iters / 2]);
  fprintf(stderr,
          "bench_ntk: %s n=%d %s threads=%d iters=%d median=%.3f ms min=%.3f ms trace=%.10g "
          "entk_bytes=%.1f MB peak_rss=%.1f MB\n",
          src, n, full ? "full (n k x n k)" : "trace (n x n)", threads, iters, t[iters / 2],
          t[0], tr, need / 1048576.0, ru.ru_maxrss / 1024.0);
  free(out);
  free(t);
  td_mlp_destroy(m);
  td_dataset_deinit(&ds);
  return 0;
}
