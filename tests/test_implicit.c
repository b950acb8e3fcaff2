/* test_implicit.c: chapter 8 implicit regularization: the GD and ridge filters, the
 * early_stopping kind against independent dense solves, NNLS and the max-margin direction
 * against brute-force enumeration, and the Langevin stationary variance (closed form against
 * the variance recursion, and the langevin kind's chain against the closed form).
 *
 * Tolerances are stated per test with their reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <lapacke.h>

#include "base/la.h"
#include "implicit/implicit.h"
#include "kinds/registry.h"
#include "nn/data.h"
#include "base/rng.h"

/* ------------------------------------------------------------------ a metric recorder */
#define REC_MAX 400000
typedef struct rec_pt {
  char key[40];
  long step;
  double v;
} rec_pt;
typedef struct rec {
  rec_pt *p;
  long n;
} rec;

static int rec_metric(void *ctx, const char *key, long step, double v) {
  rec *r = ctx;
  if (r->n < REC_MAX) {
    snprintf(r->p[r->n].key, sizeof r->p[r->n].key, "%s", key);
    r->p[r->n].step = step;
    r->p[r->n].v = v;
    r->n++;
  }
  return 0;
}

static double rec_get(const rec *r, const char *key, long step) {
  for (long i = r->n - 1; i >= 0; i--)
    if (r->p[i].step == step && strcmp(r->p[i].key, key) == 0) return r->p[i].v;
  fail_msg("metric %s at step %ld not logged", key, step);
  return NAN;
}

static int run_kind(const char *kind, const char *spec, rec *r, json_t **summary) {
  json_t *p = json_loads(spec, 0, NULL);
  assert_non_null(p);
  json_t *filled = NULL;
  td_err err;
  int rc = td_kinds_validate(kind, p, NULL, &filled, NULL, &err);
  json_decref(p);
  if (rc) return rc;
  td_sink sink = {.ctx = r, .metric = rec_metric};
  rc = td_kinds_find(kind)->run(filled, &sink, summary, &err);
  json_decref(filled);
  return rc;
}

static double snum(const json_t *s, const char *k) {
  const json_t *v = json_object_get(s, k);
  if (!json_is_number(v)) fail_msg("summary key %s missing", k);
  return json_number_value(v);
}

/* ------------------------------------------------------------------ filters */

/* g_t against the recursion g_{t+1} = g_t + eta lambda (1 - g_t), g_0 = 0 (which is what one
 * GD step does to a coordinate), for eta lambda in (0, 2): agreement to 4 ulp-ish (1e-14
 * relative on values >= 1e-6, 1e-20 absolute below), as both are accurate to a few eps. */
static void test_gd_filter_recursion(void **state) {
  (void)state;
  const double el[] = {1e-6, 1e-3, 0.05, 0.5, 0.999, 1.0, 1.5, 1.9};
  for (size_t i = 0; i < sizeof el / sizeof el[0]; i++) {
    double g = 0;
    for (int t = 0; t <= 500; t++) {
      const double f = td_implicit_gd_filter(el[i], 1.0, t);
      const double tol = fabs(g) >= 1e-6 ? 1e-13 * fabs(g) : 1e-20 + 1e-13 * fabs(g);
      if (!(fabs(f - g) <= tol))
        fail_msg("eta*lambda %g t %d: filter %.17g recursion %.17g", el[i], t, f, g);
      g = g + el[i] * (1.0 - g);
    }
  }
  /* ridge filter: the solution of (lambda + mu) c = lambda */
  assert_true(fabs(td_implicit_ridge_filter(2.0, 0.5) - 0.8) <= 1e-16);
}

/* early_stopping: the kind's observed filters (from its GD run on X) equal the closed form
 * to 1e-9 relative (rounding of 1000 GD steps on O(1) data is ~1e-13); its ridge risk equals
 * the population risk of an independent ridge solve (LAPACK dgesv of (X^T X/n + mu I) w = X^T
 * y / n on the regenerated data), to 1e-10 relative (condition number of the solve ~ 1e3);
 * and for d > n the GD iterate reaches the LAPACK dgelsd min-norm solution. */
static void test_early_stopping_kind(void **state) {
  (void)state;
  rec r = {calloc(REC_MAX, sizeof(rec_pt)), 0};
  json_t *s = NULL;
  const int n = 60, d = 30;
  assert_int_equal(run_kind("early_stopping",
                            "{\"data\":{\"n\":60,\"d\":30,\"noise\":0.5,\"decay\":1},"
                            "\"lr\":0.3,\"steps\":400,\"seed\":5}",
                            &r, &s),
                   0);
  for (long t = 1; t <= 400; t++)
    for (int f = 0; f < 3; f++) {
      char k1[32], k2[32];
      snprintf(k1, sizeof k1, "filter/%d_gd", f);
      snprintf(k2, sizeof k2, "filter/%d_gd_observed", f);
      const double a = rec_get(&r, k1, t), b = rec_get(&r, k2, t);
      if (!(fabs(a - b) <= 1e-9 * fabs(a))) fail_msg("t %ld filter %d: %.15g vs %.15g", t, f, a, b);
    }
  assert_true(snum(s, "gd_closed_form_err_max") < 1e-12);
  /* independent ridge at t = 50 and 400 */
  td_synth_cfg sc = {.d = (size_t)d, .noise = 0.5, .decay = 1};
  td_dataset ds;
  double wt[30];
  td_err err;
  assert_int_equal(td_data_synthetic(&sc, (size_t)n, 5, TD_RNG_DATA, &ds, wt, &err), 0);
  const long ts[2] = {50, 400};
  for (int q = 0; q < 2; q++) {
    const double mu = 1.0 / (0.3 * (double)ts[q]);
    double A[30 * 30], bb[30];
    lapack_int ipiv[30];
    for (int i = 0; i < d; i++) {
      bb[i] = 0;
      for (int k = 0; k < n; k++) bb[i] += ds.X[k * d + i] * ds.Y[k] / n;
      for (int j = 0; j < d; j++) {
        double sum = 0;
        for (int k = 0; k < n; k++) sum += ds.X[k * d + i] * ds.X[k * d + j];
        A[i * d + j] = sum / n + (i == j ? mu : 0);
      }
    }
    assert_int_equal(LAPACKE_dgesv(LAPACK_ROW_MAJOR, d, 1, A, d, ipiv, bb, 1), 0);
    double risk = 0.125; /* noise^2 / 2 */
    for (int j = 0; j < d; j++) risk += 0.5 * pow(j + 1.0, -1.0) * (bb[j] - wt[j]) * (bb[j] - wt[j]);
    const double got = rec_get(&r, "risk_ridge", ts[q]);
    if (!(fabs(got - risk) <= 1e-10 * risk)) fail_msg("t %ld ridge risk %.15g vs %.15g", ts[q], got, risk);
  }
  td_dataset_deinit(&ds);
  json_decref(s);

  /* d > n: distance to X^+ y. */
  r.n = 0;
  assert_int_equal(run_kind("early_stopping",
                            "{\"data\":{\"n\":20,\"d\":50,\"noise\":0.5,\"decay\":0},"
                            "\"lr\":0.1,\"steps\":4000,\"seed\":1}",
                            &r, &s),
                   0);
  const double d0 = rec_get(&r, "dist_min_norm", 0), dT = rec_get(&r, "dist_min_norm", 4000);
  assert_true(d0 > 0.1);
  assert_true(dT < 1e-8);
  for (long t = 0; t <= 4000; t += 100) {
    const double a = rec_get(&r, "dist_min_norm", t), b = rec_get(&r, "dist_min_norm_theory", t);
    assert_true(fabs(a - b) <= 1e-9 * d0);
  }
  /* the kind's min-norm point is dgelsd's: the GD iterate at 4000 is within 1e-8 of it */
  sc.d = 50;
  sc.decay = 0;
  assert_int_equal(td_data_synthetic(&sc, 20, 1, TD_RNG_DATA, &ds, NULL, &err), 0);
  double wp[50], w[50] = {0}, g[50], res[20];
  assert_int_equal(td_la_lstsq_minnorm(20, 50, 1, ds.X, ds.Y, -1, wp, NULL, &err), 0);
  for (int t = 0; t < 4000; t++) {
    memcpy(res, ds.Y, sizeof res);
    td_la_gemv(0, 20, 50, 1.0, ds.X, w, -1.0, res);
    td_la_gemv(1, 20, 50, 1.0 / 20, ds.X, res, 0.0, g);
    td_la_axpy(50, -0.1, g, w);
  }
  double e = 0;
  for (int j = 0; j < 50; j++) e += (w[j] - wp[j]) * (w[j] - wp[j]);
  assert_true(sqrt(e) < 1e-8);
  assert_true(fabs(snum(s, "dist_min_norm") - sqrt(e)) < 1e-8);
  td_dataset_deinit(&ds);
  json_decref(s);
  free(r.p);
}

/* ------------------------------------------------------------------ NNLS and max margin */

/* brute force NNLS: over all passive sets S, the unconstrained LS on S; keep those with
 * positive coefficients, the best residual wins (the optimum is one of them). */
static double brute_nnls(int m, int n, const double *A, const double *b, double *x) {
  double best = INFINITY;
  double As[64 * 8];
  td_err err;
  for (unsigned mask = 0; mask < (1u << n); mask++) {
    int k = 0, idx[8];
    for (int j = 0; j < n; j++)
      if (mask & (1u << j)) idx[k++] = j;
    double r2;
    double full[8] = {0};
    if (k) {
      for (int i = 0; i < m; i++)
        for (int q = 0; q < k; q++) As[i * k + q] = A[i * n + idx[q]];
      double sol[8];
      if (td_la_lstsq_minnorm(m, k, 1, As, b, -1, sol, NULL, &err)) continue;
      int ok = 1;
      for (int q = 0; q < k; q++) {
        if (sol[q] < 0) ok = 0;
        full[idx[q]] = sol[q];
      }
      if (!ok) continue;
    }
    r2 = 0;
    for (int i = 0; i < m; i++) {
      double ri = -b[i];
      for (int j = 0; j < n; j++) ri += A[i * n + j] * full[j];
      r2 += ri * ri;
    }
    if (r2 < best - 1e-13) {
      best = r2;
      memcpy(x, full, (size_t)n * sizeof *x);
    }
  }
  return best;
}

/* 50 random problems: m = 6, n = 5 (full column rank: a unique solution, compared entrywise
 * to 1e-10, as both solve the same well-conditioned small least-squares problem) and m = 3,
 * n = 7 (the minimizer need not be unique: the residual norms are compared, to 1e-10). */
static void test_nnls_brute(void **state) {
  (void)state;
  td_rng r;
  td_rng_init(&r, 11, 1);
  for (int trial = 0; trial < 50; trial++) {
    const int m = trial % 2 ? 6 : 3, n = trial % 2 ? 5 : 7;
    double A[64], b[8], x[8], xb[8];
    td_rng_fill_normal(&r, A, (size_t)m * n, 1.0);
    td_rng_fill_normal(&r, b, (size_t)m, 1.0);
    td_err err;
    assert_int_equal(td_implicit_nnls(m, n, A, b, 0, x, &err), 0);
    const double best = brute_nnls(m, n, A, b, xb);
    double r2 = 0;
    for (int i = 0; i < m; i++) {
      double ri = -b[i];
      for (int j = 0; j < n; j++) ri += A[i * n + j] * x[j];
      r2 += ri * ri;
    }
    for (int j = 0; j < n; j++) assert_true(x[j] >= 0);
    if (!(fabs(sqrt(r2) - sqrt(best)) <= 1e-10)) fail_msg("trial %d residual %.15g vs %.15g", trial, sqrt(r2), sqrt(best));
    if (m > n)
      for (int j = 0; j < n; j++)
        if (!(fabs(x[j] - xb[j]) <= 1e-10)) fail_msg("trial %d x[%d] %.15g vs %.15g", trial, j, x[j], xb[j]);
  }
}

/* Max margin: (a) a closed form in 2-D: points (1, 0), (0, 1) labelled +1 give w_hat = (1, 1)
 * (the min-norm point with both constraints active); (b) random separable sets in d = 3: the
 * solution equals the brute-force optimum over active sets S (w_S = Z_S^+ 1, feasible; the
 * optimum is the feasible one of least norm) to 1e-10, and is feasible. */
static void test_max_margin(void **state) {
  (void)state;
  td_err err;
  double Z1[4] = {1, 0, 0, 1}, w[8];
  assert_int_equal(td_implicit_max_margin(2, 2, Z1, w, &err), 0);
  assert_true(fabs(w[0] - 1) < 1e-14 && fabs(w[1] - 1) < 1e-14);
  /* (2, 0), (1, 3): the first alone gives w = (0.5, 0), which meets 1*0.5 >= 1? no; both active */
  double Z2[4] = {2, 0, 1, 3};
  assert_int_equal(td_implicit_max_margin(2, 2, Z2, w, &err), 0);
  assert_true(fabs(w[0] - 0.5) < 1e-14 && fabs(w[1] - 1.0 / 6) < 1e-14);
  /* (2, 0), (3, 1): the first's w = (0.5, 0) satisfies the second (1.5 >= 1): one active */
  double Z3[4] = {2, 0, 3, 1};
  assert_int_equal(td_implicit_max_margin(2, 2, Z3, w, &err), 0);
  assert_true(fabs(w[0] - 0.5) < 1e-14 && fabs(w[1]) < 1e-14);
  /* inseparable: z and -z */
  double Z4[4] = {1, 2, -1, -2};
  assert_int_equal(td_implicit_max_margin(2, 2, Z4, w, &err), TD_EINVAL);

  td_rng r;
  td_rng_init(&r, 3, 1);
  const int d = 3, n = 8;
  for (int trial = 0; trial < 30; trial++) {
    double u[3], Z[24];
    td_rng_fill_normal(&r, u, 3, 1.0);
    for (int i = 0; i < n; i++) {
      double s;
      do {
        td_rng_fill_normal(&r, Z + i * d, 3, 1.0);
        s = td_la_dot(3, Z + i * d, u);
      } while (fabs(s) < 0.2);
      if (s < 0)
        for (int k = 0; k < d; k++) Z[i * d + k] = -Z[i * d + k];
    }
    assert_int_equal(td_implicit_max_margin(n, d, Z, w, &err), 0);
    double best = INFINITY, wb[3] = {0};
    for (unsigned mask = 1; mask < (1u << n); mask++) {
      int k = 0, idx[8];
      for (int i = 0; i < n; i++)
        if (mask & (1u << i)) idx[k++] = i;
      if (k > d) continue;
      double Zs[24], one[8], ws[3];
      for (int q = 0; q < k; q++) {
        one[q] = 1;
        for (int c = 0; c < d; c++) Zs[q * d + c] = Z[idx[q] * d + c];
      }
      if (td_la_lstsq_minnorm(k, d, 1, Zs, one, -1, ws, NULL, &err)) continue;
      int feas = 1;
      for (int i = 0; i < n; i++)
        if (td_la_dot(3, Z + i * d, ws) < 1 - 1e-12) feas = 0;
      const double nn = td_la_nrm2(3, ws);
      if (feas && nn < best) {
        best = nn;
        memcpy(wb, ws, sizeof wb);
      }
    }
    for (int k = 0; k < d; k++)
      if (!(fabs(w[k] - wb[k]) <= 1e-10 * best)) fail_msg("trial %d w[%d] %.15g vs %.15g", trial, k, w[k], wb[k]);
    for (int i = 0; i < n; i++) assert_true(td_la_dot(3, Z + i * d, w) >= 1 - 1e-10);
  }
}

/* The max_margin kind: GD's direction approaches w_hat (dir_dist shrinks from step 10 to the
 * end by more than the ratio of log t, minus slack for the bounded residual), the normalized
 * margin approaches 1 / ||w_hat|| from below, and resid_perp stays bounded. */
static void test_max_margin_kind(void **state) {
  (void)state;
  rec r = {calloc(REC_MAX, sizeof(rec_pt)), 0};
  json_t *s = NULL;
  assert_int_equal(run_kind("max_margin", "{\"steps\":200000,\"seed\":1}", &r, &s), 0);
  const double dd = snum(s, "dir_dist"), mm = snum(s, "max_margin"), mg = snum(s, "margin");
  assert_true(dd < 0.05);
  assert_true(mg <= mm * (1 + 1e-12) && mg > 0.9 * mm);
  /* dir_dist * log t bounded (the 1/log t rate): within a factor 3 of its value at t = 100 */
  const double a = rec_get(&r, "dir_dist_log_t", 10);
  assert_true(dd * log(200000.0) < 3 * a + 1e-3);
  json_decref(s);
  free(r.p);
}

/* ------------------------------------------------------------------ Langevin */

/* Closed form against the variance recursion v <- rho^2 v + q iterated to its fixed point. */
static void test_langevin_closed_form(void **state) {
  (void)state;
  const double hs[] = {0.1, 1, 3}, etas[] = {0.01, 0.3, 0.6};
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      const double h = hs[i], eta = etas[j];
      if (eta * h >= 2) continue;
      const double rho = 1 - eta * h, q = 2 * eta * 1.5 / 50 + eta * eta * 0.7 * 0.7;
      double v = 0;
      for (int k = 0; k < 200000; k++) v = rho * rho * v + q;
      const double c = td_implicit_langevin_var(h, eta, 1.5, 50, 0.7);
      assert_true(fabs(c - v) <= 1e-12 * v);
    }
  assert_true(isinf(td_implicit_langevin_var(1, 2.5, 1, 10, 0)));
}

/* The langevin kind, 400000 steps, full batch and SGLD (B = 5): the running variance is within
 * 4.5 Monte Carlo standard errors of the discretized chain's closed form (a 4.5-sigma band:
 * false-failure probability ~1e-5 per coordinate; the seed is fixed, so the test is
 * deterministic), and, for the coordinate with eta h = 0.5, more than 6 standard errors away
 * from the continuous-time target T / (N h) (so the test tells the discretized form from the
 * continuum). */
static void test_langevin_kind(void **state) {
  (void)state;
  const char *specs[2] = {"{\"steps\":400000}", "{\"steps\":400000,\"batch_size\":5,\"seed\":2}"};
  for (int q = 0; q < 2; q++) {
    rec r = {calloc(REC_MAX, sizeof(rec_pt)), 0};
    json_t *s = NULL;
    assert_int_equal(run_kind("langevin", specs[q], &r, &s), 0);
    for (int j = 0; j < 2; j++) {
      char k[32];
      snprintf(k, sizeof k, "var/%d", j);
      const double v = rec_get(&r, k, 400000);
      snprintf(k, sizeof k, "var/%d_theory", j);
      const double th = rec_get(&r, k, 400000);
      snprintf(k, sizeof k, "var_se/%d", j);
      const double se = rec_get(&r, k, 400000);
      snprintf(k, sizeof k, "var/%d_target", j);
      const double tg = rec_get(&r, k, 400000);
      if (!(fabs(v - th) <= 4.5 * se)) fail_msg("spec %d coord %d: var %.6g theory %.6g se %.3g", q, j, v, th, se);
      if (j == 0) assert_true(fabs(v - tg) > 6 * se);
    }
    json_decref(s);
    free(r.p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gd_filter_recursion), cmocka_unit_test(test_early_stopping_kind),
      cmocka_unit_test(test_nnls_brute),          cmocka_unit_test(test_max_margin),
      cmocka_unit_test(test_max_margin_kind),     cmocka_unit_test(test_langevin_closed_form),
      cmocka_unit_test(test_langevin_kind),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
