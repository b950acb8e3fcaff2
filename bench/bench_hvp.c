/* bench_hvp.c: time one exact Hessian-vector product (td_curv_hvp, Pearlmutter's R{backprop})
 * of the mean softmax cross-entropy of an MLP 784-512-512-10 (ReLU, double) over n = 1000
 * Fashion-MNIST examples (the first 1000 of the train file; uniform random pixels when the
 * files are absent); prints the median ms per HVP as its last line.
 * By default the forward pass and the gradient are cached at the point (td_curv_set_point
 * once), as in Lanczos, which applies the Hessian tens of times at fixed parameters. With
 * --cold every timed HVP also redoes the forward pass and the gradient (set_point + grad),
 * the same work as the PyTorch peer's double backward (bench/hvp.py).
 * Usage: bench_hvp [--threads N] [--iters N] [--warmup N] [--n N] [--cold]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "curv/curv.h"
#include "nn/data.h"
#include "base/la.h"
#include "base/rng.h"
#include "benchlib.h"

int main(int argc, char **argv) {
  int threads = 2, iters = 20, warmup = 3, n = 1000, cold = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--cold")) cold = 1;
    else if (i + 1 < argc && !strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--iters")) iters = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--warmup")) warmup = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--n")) n = atoi(argv[++i]);
  }
  if (iters < 1) iters = 1;
  if (n < 1) n = 1;
  td_la_set_threads(threads);
  td_mlp_cfg cfg = {.in_dim = 784, .out_dim = 10, .n_hidden = 2, .hidden = {512, 512},
                    .act = TD_ACT_RELU, .init_scale = 1.0};
  td_err err = {0};
  td_mlp *m = NULL;
  td_curv_ctx c;
  td_dataset ds;
  const char *src = bench_images(n, 1, &ds);
  if (!src) return 1;
  if (td_mlp_create(&cfg, &m, &err) || td_curv_init(&c, m, n, &err) ||
      td_curv_set_batch(&c, ds.X, ds.y, NULL, n, TD_CURV_XENT, &err)) {
    fprintf(stderr, "bench_hvp: %s\n", err.msg);
    return 1;
  }
  td_mlp_init(m, 0);
  double *v = malloc(m->n_params * sizeof *v), *hv = malloc(m->n_params * sizeof *hv);
  double *t = malloc((size_t)iters * sizeof *t);
  if (!v || !hv || !t) return 1;
  td_rng r;
  td_rng_init(&r, 1, TD_RNG_PROBE);
  td_rng_fill_normal(&r, v, m->n_params, 1.0);
  if (td_curv_set_point(&c, m->params, &err)) {
    fprintf(stderr, "bench_hvp: %s\n", err.msg);
    return 1;
  }
  td_curv_grad(&c);
  for (int it = -warmup; it < iters; it++) {
    double t0 = bench_now_ms();
    if (cold) {
      td_curv_set_point(&c, m->params, NULL);
      td_curv_grad(&c);
    }
    td_curv_hvp(&c, v, hv);
    double t1 = bench_now_ms();
    if (it >= 0) t[it] = t1 - t0;
  }
  bench_sort_median(t, iters);
  printf("%.4f\n", t[iters / 2]);
  fprintf(stderr,
          "bench_hvp: %s n=%d %s threads=%d iters=%d median=%.3f ms min=%.3f ms "
          "vHv=%.6g loss=%.6f\n",
          src, n, cold ? "cold (forward+grad+hvp)" : "cached point", threads, iters,
          t[iters / 2], t[0], td_la_dot(m->n_params, v, hv), c.loss_value);
  free(t);
  free(v);
  free(hv);
  td_curv_deinit(&c);
  td_mlp_destroy(m);
  td_dataset_deinit(&ds);
  return 0;
}
