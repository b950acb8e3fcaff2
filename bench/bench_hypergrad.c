/* bench_hypergrad.c: the hypergradient of the validation loss through T = 100 unrolled
 * full-batch heavy-ball steps (momentum 0.9, PyTorch's SGD-momentum form) of an MLP 784-256-10
 * (ReLU, float64, mean cross-entropy) on the first 1000 Fashion-MNIST training examples, with
 * respect to the per-layer L2 strengths (2) and the T learning rates, by tdlab's exact
 * reversal (td_hg_reversal: O(P) memory plus the bits momentum loses) or, with
 * --method reverse, by the stored trajectory (td_hg_reverse: O(T P)). The validation loss is
 * the mean cross-entropy on the first 1000 test examples.
 * Writes the initial parameters (raw little-endian float64, tdlab's flat layout: W1 256x784,
 * b1, W2 10x256, b2) to --w0 FILE and the result as JSON to --out FILE, for the PyTorch peer
 * (bench/hypergrad.py) that differentiates through the same unroll with create_graph=True
 * and compares. Memory: VmHWM - VmRSS around the computation (the peak is reset through
 * /proc/self/clear_refs first), in MiB. Prints the milliseconds of one hypergradient as its
 * last line.
 * --cache-mib X (default 0, off; it measured no gain): exact reversal keeps the first-layer pre-activations of as
 * many of the last steps as fit in X MiB (td_hgmlp_cache; 0 turns it off), so that the reverse
 * pass skips their first-layer forward GEMM; the cache is in the measured peak and in
 * counted_mib.
 * Usage: bench_hypergrad [--threads N] [--T N] [--n N] [--lr X] [--lambda X]
 *        [--method reversal|reverse] [--cache-mib X] [--w0 FILE] [--out FILE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "bilevel/hgmlp.h"
#include "bilevel/hypergrad.h"
#include "nn/data.h"

static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t kl = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, key, kl)) v = atol(line + kl + 1);
  if (f) fclose(f);
  return v;
}

static void reset_peak(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (f) {
    fputs("5", f);
    fclose(f);
  }
}

int main(int argc, char **argv) {
  int threads = 2, T = 100, n = 1000;
  double lr = 0.1, lambda = 1e-3, mu = 0.9, cache_mib = 0;
  const char *method = "reversal", *w0path = NULL, *outpath = NULL;
  for (int i = 1; i + 1 < argc; i++) {
    if (!strcmp(argv[i], "--threads")) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--T")) T = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--n")) n = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--lr")) lr = atof(argv[++i]);
    else if (!strcmp(argv[i], "--lambda")) lambda = atof(argv[++i]);
    else if (!strcmp(argv[i], "--method")) method = argv[++i];
    else if (!strcmp(argv[i], "--w0")) w0path = argv[++i];
    else if (!strcmp(argv[i], "--out")) outpath = argv[++i];
    else if (!strcmp(argv[i], "--cache-mib")) cache_mib = atof(argv[++i]);
  }
  if (T < 1 || n < 1) return 1;
  td_la_set_threads(threads);
  td_err err = {0};
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  if (td_data_fashion_mnist("train", (size_t)n, &tr, &err) ||
      td_data_fashion_mnist("test", (size_t)n, &te, &err)) {
    fprintf(stderr, "bench_hypergrad: %s\n", err.msg);
    return 1;
  }
  td_mlp_cfg cfg = {.in_dim = 784, .out_dim = 10, .n_hidden = 1, .hidden = {256},
                    .act = TD_ACT_RELU, .init_scale = 1.0};
  td_mlp *m = NULL;
  if (td_mlp_create(&cfg, &m, &err)) return 1;
  td_mlp_init(m, 0);
  size_t P = m->n_params;
  if (w0path) {
    FILE *f = fopen(w0path, "wb");
    if (!f || fwrite(m->params, sizeof(double), P, f) != P) return 1;
    fclose(f);
  }
  double *lrs = malloc((size_t)T * sizeof *lrs), *dlr = malloc((size_t)T * sizeof *dlr);
  double lam[2] = {lambda, lambda}, dl[2];
  for (int t = 0; t < T; t++) lrs[t] = lr;
  long rss0 = status_kb("VmRSS");
  reset_peak();
  td_hgmlp h;
  if (td_hgmlp_init(&h, m, &tr, (size_t)n, &te, (size_t)n, TD_CURV_XENT, &err)) {
    fprintf(stderr, "bench_hypergrad: %s\n", err.msg);
    return 1;
  }
  if (strcmp(method, "reverse") && td_hgmlp_cache(&h, T, cache_mib * 1048576.0, &err)) {
    fprintf(stderr, "bench_hypergrad: %s\n", err.msg);
    return 1;
  }
  double cached = (double)h.cache_steps * h.cache_len * sizeof(double);
  td_hg_problem p = td_hgmlp_problem(&h);
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = mu, .lambda = lam, .w0 = m->params};
  td_hg_result res = {.d_lambda = dl, .d_lr = dlr};
  int rc = !strcmp(method, "reverse") ? td_hg_reverse(&p, &u, 0, &res, &err)
                                      : td_hg_reversal(&p, &u, &res, NULL, NULL, &err);
  long hwm = status_kb("VmHWM");
  if (rc) {
    fprintf(stderr, "bench_hypergrad: %s\n", err.msg);
    return 1;
  }
  double mib = (hwm - rss0) / 1024.0;
  if (outpath) {
    FILE *f = fopen(outpath, "w");
    if (!f) return 1;
    fprintf(f, "{\"method\": \"%s\", \"T\": %d, \"n\": %d, \"lr\": %.17g, \"mu\": %.17g, "
               "\"lambda\": %.17g, \"threads\": %d, \"ms\": %.3f, \"mem_mib\": %.3f, "
               "\"counted_mib\": %.3f, \"val_loss\": %.17g, \"mismatch\": %ld, "
               "\"store_bits\": %.0f, \"cache_steps\": %d, \"d_lambda\": [%.17g, %.17g], \"d_lr\": [",
            method, T, n, lr, mu, lambda, threads, res.secs * 1e3, mib,
            (res.bytes + cached) / 1048576.0, res.val_loss, res.mismatch, res.store_bits,
            h.cache_steps, dl[0], dl[1]);
    for (int t = 0; t < T; t++) fprintf(f, "%s%.17g", t ? ", " : "", dlr[t]);
    fprintf(f, "]}\n");
    fclose(f);
  }
  fprintf(stderr,
          "bench_hypergrad: %s T=%d n=%d P=%zu threads=%d %.1f ms, peak +%.1f MiB (counted "
          "%.1f MiB), val_loss %.12g, d_lambda [%.10g, %.10g], mismatch %ld, store %.0f bits, "
          "cached steps %d (reused %ld)\n",
          method, T, n, P, threads, res.secs * 1e3, mib, (res.bytes + cached) / 1048576.0,
          res.val_loss, dl[0], dl[1], res.mismatch, res.store_bits, h.cache_steps, h.cache_hits);
  printf("%.3f\n", res.secs * 1e3);
  td_hgmlp_deinit(&h);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(lrs), free(dlr);
  return 0;
}
