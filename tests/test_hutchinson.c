/* test_hutchinson.c: Hutchinson trace estimator: exact on diagonal matrices (z_i^2 = 1),
 * unbiased with the predicted standard error on a dense matrix. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>

#include "curv/hutchinson.h"
#include "base/rng.h"

/* Rademacher probes on diag(d): z^T D z = sum_i d_i z_i^2 = tr(D) exactly; the only error
 * is the rounding of an n-term sum, so 1e-12 relative. */
static void test_exact_on_diagonal(void **state) {
  (void)state;
  const size_t n = 1000;
  double *d = malloc(n * sizeof *d), tr = 0.0;
  td_rng r;
  td_rng_init(&r, 1, 1);
  for (size_t i = 0; i < n; i++) tr += (d[i] = 10.0 * td_rng_normal(&r));
  for (size_t p = 1; p <= 3; p++) {
    td_hutchinson_result res;
    double samples[3];
    assert_int_equal(td_hutchinson_trace(td_linop_diag_matvec, d, n, p, 7, samples, &res, NULL), 0);
    assert_true(fabs(res.trace - tr) <= 1e-12 * fabs(tr) + 1e-12);
    for (size_t i = 0; i < p; i++) assert_true(fabs(samples[i] - tr) <= 1e-12 * fabs(tr));
    if (p == 1) assert_true(isnan(res.std_err));
    else assert_true(res.std_err <= 1e-12 * fabs(tr));
    assert_int_equal(res.n_matvec, p);
  }
  free(d);
}

/* Dense symmetric A: the per-probe variance is 2 (||A||_F^2 - sum A_ii^2) (Avron & Toledo
 * 2011, Lemma 1). With P = 400 probes the reported standard error must match
 * sqrt(var / P) within 20% (the relative sd of a sample sd is ~ sqrt(kurtosis-ish/P) < 10%),
 * and the estimate must lie within 4 standard errors of tr(A). Seeded, so deterministic. */
static void test_unbiased_with_stderr(void **state) {
  (void)state;
  const size_t n = 60, P = 400;
  double *a = malloc(n * n * sizeof *a);
  td_rng r;
  td_rng_init(&r, 2, 1);
  td_rng_fill_normal(&r, a, n * n, 1.0);
  double tr = 0.0, fro = 0.0, diag2 = 0.0;
  for (size_t i = 0; i < n; i++) {
    a[i * n + i] += 3.0; /* trace ~ 180 */
    for (size_t j = 0; j < i; j++) a[i * n + j] = a[j * n + i];
  }
  for (size_t i = 0; i < n; i++) {
    tr += a[i * n + i];
    diag2 += a[i * n + i] * a[i * n + i];
    for (size_t j = 0; j < n; j++) fro += a[i * n + j] * a[i * n + j];
  }
  double se_theory = sqrt(2.0 * (fro - diag2) / (double)P);
  td_hutchinson_result res;
  assert_int_equal(td_hutchinson_trace(td_linop_dense_matvec, a, n, P, 11, NULL, &res, NULL), 0);
  assert_true(fabs(res.std_err / se_theory - 1.0) <= 0.2);
  assert_true(fabs(res.trace - tr) <= 4.0 * se_theory);
  /* same seed, same result, bit for bit */
  td_hutchinson_result res2;
  assert_int_equal(td_hutchinson_trace(td_linop_dense_matvec, a, n, P, 11, NULL, &res2, NULL), 0);
  assert_true(res.trace == res2.trace && res.std_err == res2.std_err);
  free(a);
}

static void test_errors(void **state) {
  (void)state;
  double d[2] = {1, INFINITY};
  td_hutchinson_result res;
  td_err err;
  assert_int_equal(td_hutchinson_trace(td_linop_diag_matvec, d, 2, 0, 1, NULL, &res, &err),
                   TD_EINVAL);
  assert_string_equal(err.field, "n_probes");
  assert_int_equal(td_hutchinson_trace(td_linop_diag_matvec, d, 0, 1, 1, NULL, &res, &err),
                   TD_EINVAL);
  assert_int_equal(td_hutchinson_trace(td_linop_diag_matvec, d, 2, 3, 1, NULL, &res, &err),
                   TD_ERANGE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exact_on_diagonal),
      cmocka_unit_test(test_unbiased_with_stderr),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
