/* bench_train.c: time one training step (forward, cross-entropy, backward, SGD+momentum) of
 * an MLP 784-512-512-10 at batch 128 in double precision; prints the median ms per step.
 * Usage: bench_train [--threads N] [--iters N] [--warmup N]. Default 2 BLAS threads (the
 * PyTorch peer, bench/train_step.py, uses torch.set_num_threads(2)). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/la.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "base/rng.h"
#include "benchlib.h"

int main(int argc, char **argv) {
  int threads = 2, iters = 200, warmup = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--threads") == 0) threads = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--iters") == 0) iters = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--warmup") == 0) warmup = atoi(argv[i + 1]);
  }
  if (iters < 1) iters = 1;
  td_la_set_threads(threads);
  const int B = 128, D = 784, K = 10;
  td_mlp_cfg cfg = {.in_dim = D, .out_dim = K, .n_hidden = 2, .hidden = {512, 512},
                    .act = TD_ACT_RELU, .init_scale = 1.0};
  td_err err = {0};
  td_mlp *m = NULL;
  td_optim *opt = NULL;
  td_mlp_ws ws;
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = 0.9;
  if (td_mlp_create(&cfg, &m, &err) || td_mlp_ws_init(&ws, m, B, &err) ||
      td_optim_create("sgd", &hp, m->n_params, &opt, &err)) {
    fprintf(stderr, "bench_train: %s\n", err.msg);
    return 1;
  }
  td_mlp_init(m, 0);
  double *X = malloc((size_t)B * D * sizeof *X), *dz = malloc((size_t)B * K * sizeof *dz);
  int *y = malloc(B * sizeof *y);
  td_rng r;
  td_rng_init(&r, 0, TD_RNG_DATA);
  for (int i = 0; i < B * D; i++) X[i] = td_rng_uniform(&r);
  for (int i = 0; i < B; i++) y[i] = (int)td_rng_below(&r, K);
  double *t = malloc((size_t)iters * sizeof *t), loss = 0;
  for (int it = -warmup; it < iters; it++) {
    double t0 = bench_now_ms();
    const double *z = td_mlp_forward(m, &ws, m->params, X, B);
    td_loss_xent(&loss, dz, z, y, B, K);
    td_mlp_backward(m, &ws, m->params, dz, B, m->grad, 0);
    td_optim_step(opt, m->params, m->grad, 0.01);
    double t1 = bench_now_ms();
    if (it >= 0) t[it] = t1 - t0;
  }
  bench_sort_median(t, iters);
  printf("%.4f\n", t[iters / 2]);
  fprintf(stderr, "bench_train: threads=%d iters=%d median=%.4f ms min=%.4f ms loss=%.4f\n",
          threads, iters, t[iters / 2], t[0], loss);
  free(t);
  free(X);
  free(dz);
  free(y);
  td_optim_destroy(opt);
  td_mlp_ws_deinit(&ws);
  td_mlp_destroy(m);
  return 0;
}
