/* test_power.c: power iteration on matrices with a known spectrum and a spectral gap.
 * Tolerances: with |lambda_2/lambda_1| = 0.5 the Rayleigh quotient error decays like 0.25^t;
 * the stopping rule resid <= tol |rho| with tol = 1e-10 bounds |rho - lambda_1| by
 * resid^2 / gap ~ 1e-19 relative, so 1e-9 relative leaves a wide margin for rounding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>

#include "curv/power.h"
#include "base/rng.h"

/* A = U diag(lam) U^T with U orthogonal (QR of a Gaussian matrix); U returned too. */
static double *with_spectrum(size_t n, const double *lam, uint64_t seed, double *u /* OUT */) {
  double *tau = malloc(n * sizeof *tau), *a = calloc(n * n, sizeof *a);
  td_rng r;
  td_rng_init(&r, seed, 98);
  td_rng_fill_normal(&r, u, n * n, 1.0);
  assert_int_equal(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)n, (int)n, u, (int)n, tau), 0);
  assert_int_equal(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)n, (int)n, (int)n, u, (int)n, tau), 0);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j <= i; j++) {
      double s = 0.0;
      for (size_t k = 0; k < n; k++) s += u[i * n + k] * lam[k] * u[j * n + k];
      a[i * n + j] = a[j * n + i] = s;
    }
  free(tau);
  return a;
}

static void run_gap(double top, double second) {
  const size_t n = 120;
  double lam[120], u[120 * 120], v[120];
  td_rng r;
  td_rng_init(&r, 3, 1);
  for (size_t i = 0; i < n; i++) lam[i] = 0.8 * second * (2.0 * td_rng_uniform(&r) - 1.0);
  lam[0] = top;
  lam[1] = second;
  double *a = with_spectrum(n, lam, 4, u);
  td_power_opts o = td_power_opts_default();
  o.tol = 1e-10;
  o.seed = 5;
  td_power_result res;
  assert_int_equal(td_power_top(td_linop_dense_matvec, a, n, &o, v, &res, NULL), 0);
  assert_true(res.converged);
  assert_true(fabs(res.eigval - top) <= 1e-9 * fabs(top));
  assert_true(res.resid <= 1e-10 * fabs(top));
  /* ~ log(1e-10)/log(0.5) = 33 iterations for the residual; allow 2x */
  assert_true(res.n_matvec <= 70);
  double dot = 0.0; /* |<u_1, v>| = 1 - O(resid^2 / gap^2) */
  for (size_t i = 0; i < n; i++) dot += u[i * n + 0] * v[i];
  assert_true(fabs(fabs(dot) - 1.0) <= 1e-12);
  free(a);
}

static void test_positive_dominant(void **state) {
  (void)state;
  run_gap(10.0, 5.0);
}

static void test_negative_dominant(void **state) {
  (void)state;
  run_gap(-10.0, 5.0); /* power iteration is largest-MAGNITUDE: finds -10, not 5 */
}

/* +-10 both dominant: no convergence, reported as such (not an error). */
static void test_no_gap_reports_not_converged(void **state) {
  (void)state;
  double d[6] = {10, -10, 1, 2, 3, -4};
  td_power_opts o = td_power_opts_default();
  o.max_iter = 200;
  td_power_result res;
  assert_int_equal(td_power_top(td_linop_diag_matvec, d, 6, &o, NULL, &res, NULL), 0);
  assert_false(res.converged);
  assert_int_equal(res.n_matvec, 200);
}

static void test_errors(void **state) {
  (void)state;
  double d[3] = {1, 2, 3}, z[3] = {0, 0, 0};
  td_power_opts o = td_power_opts_default();
  td_power_result res;
  td_err err;
  o.tol = -1.0;
  assert_int_equal(td_power_top(td_linop_diag_matvec, d, 3, &o, NULL, &res, &err), TD_EINVAL);
  assert_string_equal(err.field, "tol");
  o = td_power_opts_default();
  o.max_iter = 0;
  assert_int_equal(td_power_top(td_linop_diag_matvec, d, 3, &o, NULL, &res, &err), TD_EINVAL);
  o = td_power_opts_default();
  assert_int_equal(td_power_top(td_linop_diag_matvec, z, 3, &o, NULL, &res, &err), TD_ERANGE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_positive_dominant),
      cmocka_unit_test(test_negative_dominant),
      cmocka_unit_test(test_no_gap_reports_not_converged),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
