/* benchlib.h: helpers shared by the numerics benchmarks bench/bench_{train,hvp,ntk}.c: a
 * monotonic clock in milliseconds, the median of a set of timings, and the Fashion-MNIST inputs
 * with a random stand-in when the files are absent. Header-only (static functions), so each
 * benchmark stays one .c file linked against the libraries. */
#ifndef TD_BENCHLIB_H
#define TD_BENCHLIB_H

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/rng.h"
#include "nn/data.h"

/* bench_now_ms: CLOCK_MONOTONIC in milliseconds (an arbitrary origin; only differences mean
 * anything). */
static inline double bench_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* bench_sort_median: sort t[0..n) ascending in place (so t[0] is the minimum) and return
 * t[n / 2], the median (the upper one for even n). n >= 1. */
static inline double bench_sort_median(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
  return t[n / 2];
}

/* bench_images: the first n examples of the Fashion-MNIST train file into *ds (zeroed first;
 * free with td_dataset_deinit). When the files cannot be read, n x 784 uniform [0, 1) pixels
 * (td_rng seed 0, TD_RNG_DATA) and, when labels is non-zero, n uniform labels in 0..9 stand in
 * (ds->y stays NULL without labels). Returns the source's name ("fashion-mnist" or "random"),
 * or NULL when memory ran out. */
static inline const char *bench_images(int n, int labels, td_dataset *ds) {
  td_err err = {0};
  memset(ds, 0, sizeof *ds);
  if (!td_data_fashion_mnist("train", (size_t)n, ds, &err)) return "fashion-mnist";
  ds->n = (size_t)n;
  ds->d = 784;
  ds->k = 10;
  ds->X = malloc((size_t)n * 784 * sizeof *ds->X);
  if (labels) ds->y = malloc((size_t)n * sizeof *ds->y);
  if (!ds->X || (labels && !ds->y)) return NULL;
  td_rng r;
  td_rng_init(&r, 0, TD_RNG_DATA);
  for (size_t i = 0; i < (size_t)n * 784; i++) ds->X[i] = td_rng_uniform(&r);
  if (labels)
    for (int i = 0; i < n; i++) ds->y[i] = (int)td_rng_below(&r, 10);
  return "random";
}

#endif
