/* test_cg.c: linear conjugate gradient (cg.h) on dense symmetric systems.
 *
 * Tolerances: on well-conditioned SPD systems (condition number <= 1e3) CG with a 1e-13
 * relative residual gives the solution to ~1e-13 * cond, so 1e-8 against LAPACK's dposv is a
 * wide margin that any wrong recurrence misses by orders of magnitude. The Martens stop is
 * checked by its definition (it fired, and the last k iterations improved phi by less than
 * k * eps relative) and by phi being close to the optimum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "curv/cg.h"
#include "base/la.h"
#include "base/linop.h"
#include "base/rng.h"

enum { N = 30 };

/* A = Q diag(ev) Q^T with Q from Gram-Schmidt on a Gaussian matrix; ev log-spaced in [1, cond]. */
static void make_spd(double *A, int n, double cond, uint64_t seed) {
  double *Q = malloc((size_t)n * n * sizeof *Q), *T = malloc((size_t)n * n * sizeof *T);
  td_rng r;
  td_rng_init(&r, seed, 1);
  td_rng_fill_normal(&r, Q, (size_t)n * n, 1.0);
  for (int i = 0; i < n; i++) {
    double *qi = Q + (size_t)i * n;
    for (int j = 0; j < i; j++) td_la_axpy(n, -td_la_dot(n, qi, Q + (size_t)j * n), Q + (size_t)j * n, qi);
    td_la_scal(n, 1.0 / td_la_nrm2(n, qi), qi);
  }
  /* T = diag(ev) Q (rows scaled), A = Q^T T. */
  for (int i = 0; i < n; i++) {
    double ev = pow(cond, (double)i / (n - 1));
    for (int j = 0; j < n; j++) T[(size_t)i * n + j] = ev * Q[(size_t)i * n + j];
  }
  td_la_gemm(1, 0, n, n, n, 1.0, Q, T, 0.0, A);
  for (int i = 0; i < n; i++) /* exact symmetry */
    for (int j = i + 1; j < n; j++) A[(size_t)j * n + i] = A[(size_t)i * n + j];
  free(Q);
  free(T);
}

/* x = (A + lambda I)^{-1} b by Cholesky (dposv). */
static void dense_solve(const double *A, int n, double lambda, const double *b, double *x) {
  double *M = malloc((size_t)n * n * sizeof *M);
  memcpy(M, A, (size_t)n * n * sizeof *M);
  for (int i = 0; i < n; i++) M[(size_t)i * n + i] += lambda;
  memcpy(x, b, (size_t)n * sizeof *x);
  assert_int_equal(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', n, 1, M, n, x, 1), 0);
  free(M);
}

static double max_rel(const double *a, const double *b, int n) {
  double m = 0, s = 0;
  for (int i = 0; i < n; i++) {
    if (fabs(a[i] - b[i]) > m) m = fabs(a[i] - b[i]);
    if (fabs(b[i]) > s) s = fabs(b[i]);
  }
  return m / s;
}

static void test_solves_spd_with_damping(void **st) {
  (void)st;
  double A[N * N], b[N], x[N], ref[N];
  double *work = malloc(td_cg_work_len(N, 200) * sizeof *work);
  make_spd(A, N, 1e3, 7);
  td_rng r;
  td_rng_init(&r, 3, 2);
  td_rng_fill_normal(&r, b, N, 1.0);
  const double lambdas[2] = {0.0, 0.5};
  for (int k = 0; k < 2; k++) {
    memset(x, 0, sizeof x);
    td_cg_opts o = {.max_iters = 200, .tol = 1e-13, .martens_stop = 0};
    td_cg_result res;
    td_err err;
    assert_int_equal(td_cg_solve(td_linop_dense_matvec, A, N, lambdas[k], b, x, &o, work, &res,
                                 &err),
                     0);
    dense_solve(A, N, lambdas[k], b, ref);
    assert_true(max_rel(x, ref, N) < 1e-8);
    assert_int_equal(res.stop, TD_CG_STOP_RESID);
    assert_true(res.rel_resid <= 1e-13);
    assert_int_equal(res.warm_used, 0);
    /* phi at the solution is -1/2 b^T x* */
    assert_true(fabs(res.phi + 0.5 * td_la_dot(N, b, ref)) < 1e-8 * fabs(res.phi));
  }
  free(work);
}

static void test_warm_start(void **st) {
  (void)st;
  double A[N * N], b[N], x[N], ref[N];
  double *work = malloc(td_cg_work_len(N, 100) * sizeof *work);
  make_spd(A, N, 10, 11);
  td_rng r;
  td_rng_init(&r, 5, 2);
  td_rng_fill_normal(&r, b, N, 1.0);
  dense_solve(A, N, 0.0, b, ref);
  td_cg_opts o = {.max_iters = 100, .tol = 1e-10};
  td_cg_result res;
  /* the exact solution as warm start: one matvec for the residual, no iteration */
  memcpy(x, ref, sizeof x);
  assert_int_equal(td_cg_solve(td_linop_dense_matvec, A, N, 0.0, b, x, &o, work, &res, NULL), 0);
  assert_int_equal(res.warm_used, 1);
  assert_int_equal(res.iters, 0);
  assert_int_equal(res.matvecs, 1);
  /* a start worse than 0 (phi(-3 x*) = 7.5 b^T x* > 0) is dropped */
  for (int i = 0; i < N; i++) x[i] = -3.0 * ref[i];
  assert_int_equal(td_cg_solve(td_linop_dense_matvec, A, N, 0.0, b, x, &o, work, &res, NULL), 0);
  assert_int_equal(res.warm_used, 0);
  assert_true(max_rel(x, ref, N) < 1e-8);
  free(work);
}

static void test_cap_and_negative_curvature(void **st) {
  (void)st;
  double A[N * N], b[N], x[N];
  double *work = malloc(td_cg_work_len(N, 100) * sizeof *work);
  make_spd(A, N, 1e3, 13);
  for (int i = 0; i < N; i++) b[i] = 1.0;
  memset(x, 0, sizeof x);
  td_cg_opts o = {.max_iters = 3, .tol = 1e-14};
  td_cg_result res;
  assert_int_equal(td_cg_solve(td_linop_dense_matvec, A, N, 0.0, b, x, &o, work, &res, NULL), 0);
  assert_int_equal(res.stop, TD_CG_STOP_ITERS);
  assert_int_equal(res.iters, 3);
  /* diag(1, -1, ...): b = e_2 points along the negative eigenvalue: stop at once, x = 0 */
  double d[N];
  for (int i = 0; i < N; i++) d[i] = i == 1 ? -1.0 : 1.0;
  memset(b, 0, sizeof b);
  b[1] = 1.0;
  memset(x, 0, sizeof x);
  o.max_iters = 10;
  assert_int_equal(td_cg_solve(td_linop_diag_matvec, d, N, 0.0, b, x, &o, work, &res, NULL), 0);
  assert_int_equal(res.stop, TD_CG_STOP_NEGCURV);
  assert_true(td_la_nrm2(N, x) == 0.0);
  /* errors */
  assert_int_equal(td_cg_solve(td_linop_diag_matvec, d, N, -1.0, b, x, &o, work, &res, NULL),
                   TD_EINVAL);
  free(work);
}

static void test_martens_stop(void **st) {
  (void)st;
  enum { M = 400 };
  /* diag with eigenvalues log-spaced in [1e-6, 1]: CG makes slow progress late on */
  double *d = malloc(M * sizeof *d), *b = malloc(M * sizeof *b), *x = calloc(M, sizeof *x);
  double *work = malloc(td_cg_work_len(M, 1000) * sizeof *work);
  for (int i = 0; i < M; i++) {
    d[i] = pow(1e-6, (double)i / (M - 1));
    b[i] = 1.0;
  }
  td_cg_opts o = {.max_iters = 1000, .tol = 0, .martens_stop = 1, .martens_eps = 5e-4};
  td_cg_result res;
  assert_int_equal(td_cg_solve(td_linop_diag_matvec, d, M, 0.0, b, x, &o, work, &res, NULL), 0);
  assert_int_equal(res.stop, TD_CG_STOP_MARTENS);
  assert_true(res.iters > 10 && res.iters < 1000);
  /* the rule's definition, re-checked from the phi history CG keeps in work */
  const double *hist = work + 3 * M;
  int i = res.iters, k = (int)ceil(0.1 * i) < 10 ? 10 : (int)ceil(0.1 * i);
  assert_true(hist[i] < 0 && (hist[i] - hist[i - k]) / hist[i] < k * 5e-4);
  /* it stopped close to the optimum phi* = -1/2 sum b_i^2 / d_i in relative terms */
  double phis = 0;
  for (int j = 0; j < M; j++) phis -= 0.5 / d[j];
  assert_true(res.phi / phis > 0.9);
  free(d);
  free(b);
  free(x);
  free(work);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_solves_spd_with_damping),
      cmocka_unit_test(test_warm_start),
      cmocka_unit_test(test_cap_and_negative_curvature),
      cmocka_unit_test(test_martens_stop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
