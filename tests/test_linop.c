/* test_linop.c: dense/diagonal matvecs and the seeded probe vectors (reproducible per
 * (seed, stream), distinct across streams, right moments). Moment tolerances are 5 standard
 * errors of the sample statistic, on fixed seeds (so deterministic). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/linop.h"
#include "base/rng.h"

static void test_matvecs(void **state) {
  (void)state;
  const double a[9] = {1, 2, 3, 2, 5, 6, 3, 6, 9}, d[3] = {2, -1, 0.5}, v[3] = {1, -1, 2};
  double out[3];
  td_linop_dense_matvec((void *)a, v, out, 3);
  assert_true(out[0] == 5 && out[1] == 9 && out[2] == 15);
  td_linop_diag_matvec((void *)d, v, out, 3);
  assert_true(out[0] == 2 && out[1] == 1 && out[2] == 1);
}

static void test_rademacher(void **state) {
  (void)state;
  const size_t n = 100003; /* not a multiple of 64 */
  double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
  td_linop_rademacher(x, n, 5, 0);
  double s = 0.0;
  for (size_t i = 0; i < n; i++) {
    assert_true(x[i] == 1.0 || x[i] == -1.0);
    s += x[i];
  }
  assert_true(fabs(s / (double)n) <= 5.0 / sqrt((double)n));
  td_linop_rademacher(y, n, 5, 0);
  assert_memory_equal(x, y, n * sizeof *x);
  td_linop_rademacher(y, n, 5, 1); /* another stream: ~half the signs differ */
  size_t diff = 0;
  for (size_t i = 0; i < n; i++) diff += x[i] != y[i];
  assert_true(fabs((double)diff / (double)n - 0.5) <= 5.0 * 0.5 / sqrt((double)n));
  free(x);
  free(y);
}

static void test_gaussian(void **state) {
  (void)state;
  const size_t n = 100001;
  double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
  td_linop_gaussian(x, n, 9, 3);
  double m = 0.0, v = 0.0;
  for (size_t i = 0; i < n; i++) m += x[i] / (double)n;
  for (size_t i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m) / (double)(n - 1);
  assert_true(fabs(m) <= 5.0 / sqrt((double)n));
  assert_true(fabs(v - 1.0) <= 5.0 * sqrt(2.0 / (double)n));
  td_linop_gaussian(y, n, 9, 3);
  assert_memory_equal(x, y, n * sizeof *x);
  /* probe streams are disjoint from the kinds' streams (here TD_RNG_INIT of the same seed) */
  td_rng r;
  td_rng_init(&r, 9, TD_RNG_INIT);
  td_rng_fill_normal(&r, y, n, 1.0);
  assert_true(memcmp(x, y, 16 * sizeof *x) != 0);
  free(x);
  free(y);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matvecs),
      cmocka_unit_test(test_rademacher),
      cmocka_unit_test(test_gaussian),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
