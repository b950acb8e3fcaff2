/* test_lanczos.c: Lanczos top-k (LA and LM) against LAPACK dsyevd on dense symmetric matrices,
 * residual estimates against true residuals, restarts at invariant subspaces, errors.
 * Tolerances: with full re-orthogonalization Lanczos is backward stable, so a Ritz value
 * whose residual is r lies within r of an eigenvalue (Weinstein) and, given a gap g, within
 * r^2/g; converged pairs are compared at 1e-9 relative to ||A||, which is ~1e4 eps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "curv/lanczos.h"
#include "base/rng.h"

/* GOE-like random symmetric matrix: (G + G^T) / 2 with G_ij ~ N(0, 1). */
static double *random_sym(size_t n, uint64_t seed) {
  double *a = malloc(n * n * sizeof *a);
  td_rng r;
  td_rng_init(&r, seed, 99);
  td_rng_fill_normal(&r, a, n * n, 1.0);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < i; j++) a[i * n + j] = a[j * n + i] = 0.5 * (a[i * n + j] + a[j * n + i]);
  return a;
}

/* A = U diag(lam) U^T with U Haar-ish orthogonal (QR of a Gaussian matrix). */
static double *with_spectrum(size_t n, const double *lam, uint64_t seed) {
  double *u = malloc(n * n * sizeof *u), *tau = malloc(n * sizeof *tau);
  double *a = calloc(n * n, sizeof *a);
  td_rng r;
  td_rng_init(&r, seed, 98);
  td_rng_fill_normal(&r, u, n * n, 1.0);
  assert_int_equal(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)n, (int)n, u, (int)n, tau), 0);
  assert_int_equal(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)n, (int)n, (int)n, u, (int)n, tau), 0);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      double s = 0.0;
      for (size_t k = 0; k < n; k++) s += u[i * n + k] * lam[k] * u[j * n + k];
      a[i * n + j] = s;
    }
  for (size_t i = 0; i < n; i++) /* exact symmetry */
    for (size_t j = 0; j < i; j++) a[i * n + j] = a[j * n + i];
  free(u);
  free(tau);
  return a;
}

/* All eigenvalues of A, ascending, via dsyevd. */
static double *eig_all(const double *a, size_t n) {
  double *c = malloc(n * n * sizeof *c), *w = malloc(n * sizeof *w);
  memcpy(c, a, n * n * sizeof *c);
  assert_int_equal(td_la_syevd((int)n, c, w, NULL), 0);
  free(c);
  return w;
}

/* The k eigenvalues wanted by `which`, in output order (ties to the positive one). */
static void expected_topk(const double *w, size_t n, size_t k, td_lanczos_which which,
                          double *out) {
  size_t lo = 0, hi = n;
  for (size_t r = 0; r < k; r++) {
    if (which == TD_LANCZOS_LA || fabs(w[hi - 1]) >= fabs(w[lo])) out[r] = w[--hi];
    else out[r] = w[lo++];
  }
}

static double spec_norm(const double *w, size_t n) { return fmax(fabs(w[0]), fabs(w[n - 1])); }

/* Full Krylov space (m = n): Lanczos is a full tridiagonalization, all Ritz values exact. */
static void test_full_krylov_matches_dsyevd(void **state) {
  (void)state;
  const size_t n = 60, k = 6;
  double *a = random_sym(n, 1);
  double *w = eig_all(a, n);
  const double anorm = spec_norm(w, n);
  for (int which = 0; which < 2; which++) {
    td_lanczos_opts o = td_lanczos_opts_default(k);
    o.which = (td_lanczos_which)which;
    o.max_steps = n;
    o.tol = 1e-12;
    td_lanczos_result res;
    td_err err;
    assert_int_equal(td_lanczos_topk(td_linop_dense_matvec, a, n, &o, &res, &err), 0);
    double want[6];
    expected_topk(w, n, k, o.which, want);
    assert_int_equal(res.k, k);
    for (size_t r = 0; r < k; r++) {
      assert_true(fabs(res.eigvals[r] - want[r]) <= 1e-9 * anorm);
      assert_true(res.resid[r] <= 1e-9 * anorm);
    }
    assert_int_equal(res.n_converged, k);
    td_lanczos_result_deinit(&res);
  }
  free(a);
  free(w);
}

/* Large negative eigenvalues: LA and LM give different answers; few steps suffice because
 * the outliers are well separated from a bulk in [-1, 1] (Kaniel-Paige-Saad rate). */
static void test_la_vs_lm_with_negative_outliers(void **state) {
  (void)state;
  const size_t n = 300, k = 3;
  double *lam = malloc(n * sizeof *lam);
  td_rng r;
  td_rng_init(&r, 7, 1);
  for (size_t i = 0; i < n; i++) lam[i] = 2.0 * td_rng_uniform(&r) - 1.0;
  lam[0] = -50.0, lam[1] = -30.0, lam[2] = 20.0, lam[3] = 10.0, lam[4] = 5.0;
  double *a = with_spectrum(n, lam, 3);
  const double la[3] = {20.0, 10.0, 5.0}, lm[3] = {-50.0, -30.0, 20.0};
  for (int which = 0; which < 2; which++) {
    td_lanczos_opts o = td_lanczos_opts_default(k);
    o.which = (td_lanczos_which)which;
    o.want_vectors = 1;
    o.seed = 11;
    td_lanczos_result res;
    td_err err;
    assert_int_equal(td_lanczos_topk(td_linop_dense_matvec, a, n, &o, &res, &err), 0);
    assert_int_equal(res.n_converged, k);
    assert_true(res.steps < td_lanczos_default_steps(n, k)); /* stopped early on tol */
    const double *want = which == TD_LANCZOS_LA ? la : lm;
    double *av = malloc(n * sizeof *av);
    for (size_t i = 0; i < k; i++) {
      /* eigenvalues well conditioned (gap >= 4): error ~ resid^2/gap, far below 1e-8 */
      assert_true(fabs(res.eigvals[i] - want[i]) <= 1e-8 * 50.0);
      const double *y = res.eigvecs + i * n;
      td_linop_dense_matvec(a, y, av, n);
      double true_res = 0.0, ny = 0.0;
      for (size_t j = 0; j < n; j++) {
        double d = av[j] - res.eigvals[i] * y[j];
        true_res += d * d;
        ny += y[j] * y[j];
      }
      /* the estimate beta_m |s_mi| is the true residual up to rounding (orthogonal Q) */
      assert_true(fabs(sqrt(true_res) - res.resid[i]) <= 1e-11 * 50.0);
      assert_true(fabs(ny - 1.0) <= 1e-12);
      for (size_t l = 0; l < i; l++) { /* Ritz vectors orthogonal */
        double d = 0.0;
        for (size_t j = 0; j < n; j++) d += y[j] * res.eigvecs[l * n + j];
        assert_true(fabs(d) <= 1e-12);
      }
    }
    free(av);
    td_lanczos_result_deinit(&res);
  }
  free(lam);
  free(a);
}

/* Random symmetric matrix, partial Krylov space: every Ritz value lies within its reported
 * residual of a true eigenvalue, and converged ones are the wanted ones, in order. The
 * residual is checked from outside: ||A y - theta y|| of each returned Ritz vector, computed
 * densely here, equals the reported resid (|beta_m s_mi|, Parlett 1998, sec. 13.1) to
 * rounding (1e-12 ||A||) and meets the requested tol: <= tol * ||A|| + 1e-12 ||A|| (the
 * code's scale is max |theta| <= ||A||). */
static void test_random_partial_bounds(void **state) {
  (void)state;
  const size_t n = 400, k = 4;
  double *a = random_sym(n, 5);
  double *w = eig_all(a, n);
  const double anorm = spec_norm(w, n);
  for (int which = 0; which < 2; which++) {
    td_lanczos_opts o = td_lanczos_opts_default(k);
    o.which = (td_lanczos_which)which;
    o.max_steps = 200;
    o.tol = 1e-9;
    o.want_vectors = 1;
    td_lanczos_result res;
    td_err err;
    assert_int_equal(td_lanczos_topk(td_linop_dense_matvec, a, n, &o, &res, &err), 0);
    double want[4];
    expected_topk(w, n, k, o.which, want);
    assert_int_equal(res.n_converged, k);
    for (size_t i = 0; i < k; i++) {
      const double *y = res.eigvecs + i * n;
      double r2 = 0;
      for (size_t p = 0; p < n; p++) {
        double ay = 0;
        for (size_t q = 0; q < n; q++) ay += a[p * n + q] * y[q];
        r2 += (ay - res.eigvals[i] * y[p]) * (ay - res.eigvals[i] * y[p]);
      }
      const double rt = sqrt(r2);
      if (!(fabs(rt - res.resid[i]) <= 1e-12 * anorm && rt <= (o.tol + 1e-12) * anorm))
        fail_msg("pair %zu: true residual %g, reported %g, tol %g * %g", i, rt, res.resid[i],
                 o.tol, anorm);
      double best = INFINITY;
      for (size_t j = 0; j < n; j++) best = fmin(best, fabs(w[j] - res.eigvals[i]));
      assert_true(best <= res.resid[i] + 1e-12 * anorm); /* Weinstein, plus rounding */
      assert_true(fabs(res.eigvals[i] - want[i]) <= 1e-8 * anorm);
    }
    td_lanczos_result_deinit(&res);
  }
  free(a);
  free(w);
}

/* diag(5, 1 x49): the start vector spans an invariant subspace of dimension 2 ({5, 1}), so
 * k = 3 needs a restart; the fresh vector lies in the 1-eigenspace and adds another 1. The
 * answer (5, 1, 1) is then exact, multiplicity included. */
static void test_restart_at_invariant_subspace(void **state) {
  (void)state;
  const size_t n = 50;
  double d[50];
  for (size_t i = 0; i < n; i++) d[i] = i == 17 ? 5.0 : 1.0;
  for (int which = 0; which < 2; which++) {
    td_lanczos_opts o = td_lanczos_opts_default(3);
    o.which = (td_lanczos_which)which;
    o.max_steps = 20;
    td_lanczos_result res;
    assert_int_equal(td_lanczos_topk(td_linop_diag_matvec, d, n, &o, &res, NULL), 0);
    assert_true(res.n_restarts >= 1);
    assert_int_equal(res.n_converged, 3);
    const double want[3] = {5.0, 1.0, 1.0};
    for (size_t i = 0; i < 3; i++) assert_true(fabs(res.eigvals[i] - want[i]) <= 1e-13);
    td_lanczos_result_deinit(&res);
  }
  /* a 1 x 1 operator */
  double one = -4.0;
  td_lanczos_opts o = td_lanczos_opts_default(1);
  o.which = TD_LANCZOS_LM;
  td_lanczos_result res;
  assert_int_equal(td_lanczos_topk(td_linop_diag_matvec, &one, 1, &o, &res, NULL), 0);
  assert_true(res.eigvals[0] == -4.0 && res.steps == 1);
  td_lanczos_result_deinit(&res);
}

/* td_lanczos_tridiag: with outliers, plain Lanczos loses orthogonality as soon as a Ritz value
 * converges (Paige 1971); with full re-orthogonalization Q stays orthonormal to O(eps)
 * (Giraud, Langou, Rozloznik 2005: CGS2 gives O(eps) loss), so max|Q Q^T - I| <= 1e-13
 * (~500 eps) and Q A Q^T = T entrywise to 1e-12 ||A||. */
static void test_tridiag_orthogonal(void **state) {
  (void)state;
  const size_t n = 500, m = 150;
  double *a = random_sym(n, 13);
  for (size_t i = 0; i < 5; i++) a[i * n + i] += 100.0 * (double)(i + 1);
  double *Q = malloc(m * n * sizeof *Q), *al = malloc(m * sizeof *al), *be = malloc(m * sizeof *be);
  double *q0 = malloc(n * sizeof *q0), *G = malloc(m * m * sizeof *G), *aq = malloc(n * sizeof *aq);
  td_linop_gaussian(q0, n, 3, 0);
  size_t steps = 0;
  assert_int_equal(td_lanczos_tridiag(td_linop_dense_matvec, a, n, q0, m, Q, al, be, &steps, NULL),
                   0);
  assert_int_equal(steps, m);
  /* G (m x m) = Q Q^T: Q is m x n row-major, second operand transposed */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)m, (int)n, 1.0, Q, (int)n, Q,
              (int)n, 0.0, G, (int)m);
  double worst = 0.0;
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < m; j++) worst = fmax(worst, fabs(G[i * m + j] - (i == j ? 1.0 : 0.0)));
  assert_true(worst <= 1e-13);
  double anorm = 600.0, tworst = 0.0; /* ||A|| <= 500 + ~2 sqrt(n) */
  for (size_t i = 0; i < m; i++) {
    td_linop_dense_matvec(a, Q + i * n, aq, n);
    for (size_t j = 0; j < m; j++) {
      double t = 0.0;
      for (size_t l = 0; l < n; l++) t += Q[j * n + l] * aq[l];
      double want = i == j ? al[i] : (j == i + 1 ? be[i] : (i == j + 1 ? be[j] : 0.0));
      tworst = fmax(tworst, fabs(t - want));
    }
  }
  assert_true(tworst <= 1e-12 * anorm);
  free(a);
  free(Q);
  free(al);
  free(be);
  free(q0);
  free(G);
  free(aq);
}

static void test_deterministic_and_json(void **state) {
  (void)state;
  const size_t n = 80;
  double *a = random_sym(n, 9);
  td_lanczos_opts o = td_lanczos_opts_default(2);
  o.seed = 42;
  td_lanczos_result r1, r2;
  assert_int_equal(td_lanczos_topk(td_linop_dense_matvec, a, n, &o, &r1, NULL), 0);
  assert_int_equal(td_lanczos_topk(td_linop_dense_matvec, a, n, &o, &r2, NULL), 0);
  assert_memory_equal(r1.eigvals, r2.eigvals, 2 * sizeof(double));
  json_t *j = td_lanczos_result_json(&r1, TD_LANCZOS_LA);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "which")), "LA");
  assert_int_equal(json_array_size(json_object_get(j, "eigenvalues")), 2);
  assert_true(json_real_value(json_array_get(json_object_get(j, "eigenvalues"), 0)) ==
              r1.eigvals[0]);
  json_decref(j);
  td_lanczos_result_deinit(&r1);
  td_lanczos_result_deinit(&r2);
  free(a);
}

static void nan_matvec(void *ctx, const double *v, double *out, size_t n) {
  int *calls = ctx;
  for (size_t i = 0; i < n; i++) out[i] = (*calls >= 2 && i == 0) ? NAN : v[i] * (double)(i + 1);
  (*calls)++;
}

static void test_errors(void **state) {
  (void)state;
  double d[4] = {1, 2, 3, 4};
  td_lanczos_result res;
  td_err err;
  td_lanczos_opts o = td_lanczos_opts_default(0);
  assert_int_equal(td_lanczos_topk(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  assert_string_equal(err.field, "k");
  o.k = 5;
  assert_int_equal(td_lanczos_topk(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  o.k = 2;
  o.tol = 0.0;
  assert_int_equal(td_lanczos_topk(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  o.tol = 1e-10;
  o.max_steps = 1;
  assert_int_equal(td_lanczos_topk(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  assert_int_equal(td_lanczos_topk(NULL, d, 4, &o, &res, &err), TD_EINVAL);
  assert_null(res.eigvals);
  int calls = 0;
  o = td_lanczos_opts_default(1);
  assert_int_equal(td_lanczos_topk(nan_matvec, &calls, 10, &o, &res, &err), TD_ERANGE);
  assert_null(res.eigvals);
  /* tridiag: zero start vector */
  double q0[4] = {0}, Q[16], al[4], be[4];
  size_t steps;
  assert_int_equal(td_lanczos_tridiag(td_linop_diag_matvec, d, 4, q0, 4, Q, al, be, &steps, &err),
                   TD_EINVAL);
  assert_true(td_lanczos_workspace_bytes(SIZE_MAX / 2, 100, 1, 0) == SIZE_MAX);
  assert_true(td_lanczos_workspace_bytes(1000, 10, 2, 1) >= 13000 * sizeof(double));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_krylov_matches_dsyevd),
      cmocka_unit_test(test_la_vs_lm_with_negative_outliers),
      cmocka_unit_test(test_random_partial_bounds),
      cmocka_unit_test(test_restart_at_invariant_subspace),
      cmocka_unit_test(test_tridiag_orthogonal),
      cmocka_unit_test(test_deterministic_and_json),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
