/* test_laplace.c: Laplace posteriors (bayes/laplace.h) against closed forms and independent
 * computations:
 *  - Bayesian linear regression: the Laplace approximation of a linear-Gaussian model is
 *    exact, so the Laplace evidence of a one-layer linear MLP with squared error at its exact
 *    MAP (a dense ridge solve here) equals the closed-form evidence log N(y; 0, I + X X^T /
 *    delta) (an n x n Cholesky, a different computation) to 1e-10, in the FULL and the K-FAC
 *    structures (K-FAC is exact for one linear layer with squared error: G = I);
 *  - DIAG equals FULL (covariance and evidence) on a one-layer squared-error model whose
 *    inputs have a diagonal second-moment matrix with zero mean (inputs +-e_j, equally often),
 *    where the GGN A kron I is diagonal;
 *  - the FULL GGN of a hidden-layer cross-entropy net equals the dense GGN built column by
 *    column from td_curv_ggn_vp (the R-operator path of curv.c, not the per-example VJPs);
 *  - the optimized prior precision satisfies MacKay's stationarity condition
 *    delta ||theta||^2 = sum N ev / (N ev + delta) (MacKay 1992, eq. 18);
 *  - K-FAC posterior samples have the covariance of td_laplace_cov_dense within Monte Carlo
 *    error; ECE and NLL of a hand-computed example. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "bayes/laplace.h"
#include "curv/curv.h"
#include "nn/model.h"
#include "nn/data.h"
#include "kinds/registry.h"

static td_mlp *make_mlp(int in, int out, int hidden) {
  td_mlp_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.in_dim = in;
  cfg.out_dim = out;
  cfg.n_hidden = hidden > 0;
  cfg.hidden[0] = hidden;
  cfg.act = TD_ACT_TANH;
  cfg.init_scale = 1;
  td_mlp *m = NULL;
  td_err err;
  assert_int_equal(td_mlp_create(&cfg, &m, &err), 0);
  td_mlp_init(m, 1);
  return m;
}

/* the exact MAP of the linear-Gaussian model: (Xa^T Xa + delta I) theta = Xa^T y, Xa = [X, 1],
 * written as W (1 x d) then b. */
static void ridge_map(const double *X, const double *y, int n, int d, double delta, double *th) {
  const int q = d + 1;
  double *A = calloc((size_t)q * q, sizeof *A), *b = calloc((size_t)q, sizeof *b);
  lapack_int *ip = malloc((size_t)q * sizeof *ip);
  for (int i = 0; i < n; i++) {
    double a[64];
    for (int j = 0; j < d; j++) a[j] = X[i * d + j];
    a[d] = 1;
    for (int j = 0; j < q; j++) {
      b[j] += a[j] * y[i];
      for (int k = 0; k < q; k++) A[j * q + k] += a[j] * a[k];
    }
  }
  for (int j = 0; j < q; j++) A[j * q + j] += delta;
  assert_int_equal(LAPACKE_dgesv(LAPACK_ROW_MAJOR, q, 1, A, q, ip, b, 1), 0);
  memcpy(th, b, (size_t)q * sizeof *th);
  free(A);
  free(b);
  free(ip);
}

static void test_blr_evidence(void **state) {
  (void)state;
  const int n = 40, d = 5;
  const double delta = 0.7;
  double X[40 * 5], y[40], Xa[40 * 6], th[6];
  td_rng r;
  td_rng_init(&r, 9, 1);
  td_rng_fill_normal(&r, X, (size_t)n * d, 1.0);
  for (int i = 0; i < n; i++) {
    y[i] = 0.3 + td_rng_normal(&r);
    for (int j = 0; j < d; j++) y[i] += 0.5 * (j + 1) * X[i * d + j] / d;
    for (int j = 0; j < d; j++) Xa[i * (d + 1) + j] = X[i * d + j];
    Xa[i * (d + 1) + d] = 1;
  }
  double exact;
  td_err err;
  assert_int_equal(td_laplace_blr_evidence(Xa, y, n, d + 1, delta, 1.0, &exact, &err), 0);
  td_mlp *m = make_mlp(d, 1, 0);
  ridge_map(X, y, n, d, delta, th);
  td_dataset ds = {.n = (size_t)n, .d = (size_t)d, .k = 1, .X = X, .y = NULL, .Y = y};
  const td_laplace_struct sts[2] = {TD_LAPLACE_FULL, TD_LAPLACE_KFAC};
  for (int s = 0; s < 2; s++) {
    td_laplace *L = NULL;
    assert_int_equal(td_laplace_fit(m, th, &ds, TD_CURV_MSE, sts[s], TD_LAPLACE_ALL, 16, &L, &err), 0);
    const double lap = td_laplace_log_marglik(L, delta);
    if (!(fabs(lap - exact) <= 1e-10)) fail_msg("structure %d: laplace %.15g exact %.15g", s, lap, exact);
    /* and at a delta that is not the MAP's, the formula is no longer the evidence */
    td_laplace_destroy(L);
  }
  /* a wrong MAP (the unregularized least squares) breaks the equality: the test can fail */
  ridge_map(X, y, n, d, 1e-12, th);
  td_laplace *L = NULL;
  assert_int_equal(td_laplace_fit(m, th, &ds, TD_CURV_MSE, TD_LAPLACE_FULL, TD_LAPLACE_ALL, 16, &L, &err), 0);
  assert_true(fabs(td_laplace_log_marglik(L, delta) - exact) > 1e-6);
  td_laplace_destroy(L);
  td_mlp_destroy(m);
}

static void test_diag_equals_full(void **state) {
  (void)state;
  const int d = 3, K = 2, n = 12;
  double X[12 * 3] = {0}, Y[12 * 2];
  for (int i = 0; i < n; i++) {
    X[i * d + (i / 2) % d] = (i % 2) ? -1.0 : 1.0;
    Y[i * K] = 0.1 * i;
    Y[i * K + 1] = -0.05 * i;
  }
  td_mlp *m = make_mlp(d, K, 0);
  td_dataset ds = {.n = (size_t)n, .d = (size_t)d, .k = K, .X = X, .y = NULL, .Y = Y};
  td_err err;
  td_laplace *Lf = NULL, *Ld = NULL, *Lk = NULL;
  assert_int_equal(td_laplace_fit(m, m->params, &ds, TD_CURV_MSE, TD_LAPLACE_FULL, TD_LAPLACE_ALL, 5, &Lf, &err), 0);
  assert_int_equal(td_laplace_fit(m, m->params, &ds, TD_CURV_MSE, TD_LAPLACE_DIAG, TD_LAPLACE_ALL, 5, &Ld, &err), 0);
  assert_int_equal(td_laplace_fit(m, m->params, &ds, TD_CURV_MSE, TD_LAPLACE_KFAC, TD_LAPLACE_ALL, 5, &Lk, &err), 0);
  const size_t P = Lf->P;
  double *Sf = malloc(P * P * sizeof *Sf), *Sd = malloc(P * P * sizeof *Sd), *Sk = malloc(P * P * sizeof *Sk);
  assert_int_equal(td_laplace_cov_dense(Lf, 0.3, Sf, &err), 0);
  assert_int_equal(td_laplace_cov_dense(Ld, 0.3, Sd, &err), 0);
  assert_int_equal(td_laplace_cov_dense(Lk, 0.3, Sk, &err), 0);
  for (size_t i = 0; i < P * P; i++) {
    assert_true(fabs(Sf[i] - Sd[i]) <= 1e-13);
    assert_true(fabs(Sf[i] - Sk[i]) <= 1e-13);
  }
  assert_true(fabs(td_laplace_log_marglik(Lf, 0.3) - td_laplace_log_marglik(Ld, 0.3)) <= 1e-11);
  assert_true(fabs(td_laplace_log_marglik(Lf, 0.3) - td_laplace_log_marglik(Lk, 0.3)) <= 1e-11);
  /* the independent covariance: (N A kron I + delta I)^{-1} has diagonal 1/(N A_jj + delta):
   * A = diag(4/12 each input, 1 bias) -> N A = 4 for weights, 12 for biases */
  for (size_t p = 0; p < P; p++) {
    const double want = p < (size_t)(K * d) ? 1.0 / (4.0 + 0.3) : 1.0 / (12.0 + 0.3);
    assert_true(fabs(Sf[p * P + p] - want) <= 1e-14);
  }
  free(Sf);
  free(Sd);
  free(Sk);
  td_laplace_destroy(Lf);
  td_laplace_destroy(Ld);
  td_laplace_destroy(Lk);
  td_mlp_destroy(m);
}

static void test_full_ggn_vs_rop(void **state) {
  (void)state;
  const int d = 4, K = 3, n = 30;
  double X[30 * 4];
  int y[30];
  td_rng r;
  td_rng_init(&r, 5, 1);
  td_rng_fill_normal(&r, X, (size_t)n * d, 1.0);
  for (int i = 0; i < n; i++) y[i] = (int)td_rng_below(&r, K);
  td_mlp *m = make_mlp(d, K, 5);
  td_dataset ds = {.n = (size_t)n, .d = (size_t)d, .k = K, .X = X, .y = y, .Y = NULL};
  td_err err;
  td_laplace *L = NULL;
  assert_int_equal(td_laplace_fit(m, m->params, &ds, TD_CURV_XENT, TD_LAPLACE_FULL, TD_LAPLACE_ALL, 7, &L, &err), 0);
  const size_t P = L->P;
  td_curv_ctx c;
  assert_int_equal(td_curv_init(&c, m, n, &err), 0);
  assert_int_equal(td_curv_set_batch(&c, X, y, NULL, n, TD_CURV_XENT, &err), 0);
  assert_int_equal(td_curv_set_point(&c, m->params, &err), 0);
  double *e = calloc(P, sizeof *e), *col = malloc(P * sizeof *col);
  double mx = 0, worst = 0;
  for (size_t j = 0; j < P; j++) {
    e[j] = 1;
    td_curv_ggn_vp(&c, e, col);
    e[j] = 0;
    for (size_t i = 0; i < P; i++) {
      double g = 0; /* V diag(ev) V^T */
      for (size_t p = 0; p < P; p++) g += L->V[i * P + p] * L->ev[p] * L->V[j * P + p];
      if (fabs(col[i]) > mx) mx = fabs(col[i]);
      if (fabs(g - col[i]) > worst) worst = fabs(g - col[i]);
    }
  }
  /* eigenvalues were clamped at 0: rounding-level negative ones lose ~eps ||G||; allow
   * 1e-12 relative to the largest entry */
  if (!(worst <= 1e-12 * mx)) fail_msg("GGN mismatch %.3g (max entry %.3g)", worst, mx);
  /* last-layer subset: the same block of the same matrix */
  td_laplace *Ll = NULL;
  assert_int_equal(td_laplace_fit(m, m->params, &ds, TD_CURV_XENT, TD_LAPLACE_FULL, TD_LAPLACE_LAST_LAYER, 7, &Ll, &err), 0);
  assert_int_equal((int)Ll->P, K * 5 + K);
  const size_t off = Ll->off, Q = Ll->P;
  for (size_t j = 0; j < Q; j++) {
    e[off + j] = 1;
    td_curv_ggn_vp(&c, e, col);
    e[off + j] = 0;
    for (size_t i = 0; i < Q; i++) {
      double g = 0;
      for (size_t p = 0; p < Q; p++) g += Ll->V[i * Q + p] * Ll->ev[p] * Ll->V[j * Q + p];
      assert_true(fabs(g - col[off + i]) <= 1e-12 * mx);
    }
  }
  /* MacKay's stationarity condition at the optimized prior */
  double lml;
  const double dl = td_laplace_optimize_prior(L, 1e-4, 1e4, &lml);
  double gamma = 0;
  for (size_t p = 0; p < P; p++) gamma += n * L->ev[p] / (n * L->ev[p] + dl);
  if (!(fabs(dl * L->theta_sq - gamma) <= 1e-6 * gamma))
    fail_msg("delta %.10g: delta |theta|^2 = %.10g, gamma = %.10g", dl, dl * L->theta_sq, gamma);
  assert_true(lml >= td_laplace_log_marglik(L, dl * 1.01) && lml >= td_laplace_log_marglik(L, dl / 1.01));
  free(e);
  free(col);
  td_curv_deinit(&c);
  td_laplace_destroy(L);
  td_laplace_destroy(Ll);
  td_mlp_destroy(m);
}

/* K-FAC samples (two layers, 20000 draws): every entry of the sample covariance within 5
 * standard errors of td_laplace_cov_dense (se of a covariance estimate ~ sqrt((S_ii S_jj +
 * S_ij^2) / n)); the sampler and the dense covariance share only the eigenbases. */
static void test_kfac_samples(void **state) {
  (void)state;
  const int d = 3, K = 2, n = 20;
  double X[20 * 3];
  int y[20];
  td_rng r;
  td_rng_init(&r, 7, 1);
  td_rng_fill_normal(&r, X, (size_t)n * d, 1.0);
  for (int i = 0; i < n; i++) y[i] = i % 2;
  td_mlp *m = make_mlp(d, K, 2);
  td_dataset ds = {.n = (size_t)n, .d = (size_t)d, .k = K, .X = X, .y = y, .Y = NULL};
  td_err err;
  td_laplace *L = NULL;
  assert_int_equal(td_laplace_fit(m, m->params, &ds, TD_CURV_XENT, TD_LAPLACE_KFAC, TD_LAPLACE_ALL, 10, &L, &err), 0);
  const size_t P = L->P;
  double *S = malloc(P * P * sizeof *S), *C = calloc(P * P, sizeof *C), *dv = malloc(P * sizeof *dv);
  assert_int_equal(td_laplace_cov_dense(L, 0.5, S, &err), 0);
  const int ns = 20000;
  td_rng_init(&r, 8, 2);
  for (int s = 0; s < ns; s++) {
    assert_int_equal(td_laplace_sample(L, 0.5, &r, dv, &err), 0);
    for (size_t i = 0; i < P; i++)
      for (size_t j = 0; j < P; j++) C[i * P + j] += dv[i] * dv[j] / ns;
  }
  for (size_t i = 0; i < P; i++)
    for (size_t j = 0; j < P; j++) {
      const double se = sqrt((S[i * P + i] * S[j * P + j] + S[i * P + j] * S[i * P + j]) / ns);
      if (!(fabs(C[i * P + j] - S[i * P + j]) <= 5 * se))
        fail_msg("(%zu,%zu) sample %.6g dense %.6g se %.3g", i, j, C[i * P + j], S[i * P + j], se);
    }
  free(S);
  free(C);
  free(dv);
  td_laplace_destroy(L);
  td_mlp_destroy(m);
}

static void test_calibrate(void **state) {
  (void)state;
  /* 4 examples, 2 classes: confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.55 (right) */
  const double p[8] = {0.9, 0.1, 0.9, 0.1, 0.4, 0.6, 0.55, 0.45};
  const int y[4] = {0, 1, 1, 0};
  td_laplace_calib c;
  td_laplace_calibrate(p, y, 4, 2, &c);
  assert_true(fabs(c.acc - 0.75) < 1e-15);
  const double nll = -(log(0.9) + log(0.1) + log(0.6) + log(0.55)) / 4;
  assert_true(fabs(c.nll - nll) < 1e-15);
  /* bins of width 1/15: 0.9 -> bin 13 (0.8667, 0.9333]; 0.6 -> bin 8 (0.5333, 0.6]; 0.55 ->
   * bin 8. ECE = (2/4)|0.5 - 0.9| + (2/4)|1 - 0.575| = 0.2 + 0.2125 */
  assert_int_equal(c.count[13], 2);
  assert_int_equal(c.count[8], 2);
  assert_true(fabs(c.ece - 0.4125) < 1e-15);
}


/* The blr kind (noise 0.5, so sigma2 = 0.25, not the Laplace module's unit variance): its
 * exact and Laplace evidences at every grid alpha agree to 1e-9 (both are sums of O(100)
 * terms of O(1): rounding ~1e-13), and at grid point 20 (alpha = 1) both equal Bishop's
 * d x d form (PRML eq. 3.86), computed here from the regenerated data:
 *   q/2 log alpha - n/2 log(2 pi sigma2) - E(m) - 1/2 log |A|,
 *   E(m) = ||y - Phi m||^2 / (2 sigma2) + alpha/2 ||m||^2, A = Phi^T Phi / sigma2 + alpha I. */
static double g_ev[64], g_lap[64];
static int blr_metric(void *ctx, const char *key, long step, double v) {
  (void)ctx;
  if (step < 0 || step >= 64) return 0;
  if (!strcmp(key, "log_evidence")) g_ev[step] = v;
  if (!strcmp(key, "log_evidence_laplace")) g_lap[step] = v;
  return 0;
}
static void test_blr_kind(void **state) {
  (void)state;
  json_t *p = json_loads("{\"data\":{\"n\":30,\"d\":4,\"noise\":0.5},\"grid\":41,\"seed\":2}", 0, NULL);
  json_t *filled = NULL, *sum = NULL;
  td_err err;
  assert_int_equal(td_kinds_validate("blr", p, NULL, &filled, NULL, &err), 0);
  td_sink sink = {.metric = blr_metric};
  assert_int_equal(td_kinds_find("blr")->run(filled, &sink, &sum, &err), 0);
  for (int i = 0; i < 41; i++)
    if (!(fabs(g_ev[i] - g_lap[i]) <= 1e-9)) fail_msg("alpha %d: exact %.15g laplace %.15g", i, g_ev[i], g_lap[i]);
  td_synth_cfg sc = {.d = 4, .noise = 0.5, .decay = 0};
  td_dataset ds;
  assert_int_equal(td_data_synthetic(&sc, 30, 2, TD_RNG_DATA, &ds, NULL, &err), 0);
  const int n = 30, q = 5;
  const double s2 = 0.25, alpha = 1.0;
  double A[25] = {0}, b[5] = {0}, m[5];
  for (int i = 0; i < n; i++) {
    double f[5] = {ds.X[i * 4], ds.X[i * 4 + 1], ds.X[i * 4 + 2], ds.X[i * 4 + 3], 1.0};
    for (int j = 0; j < q; j++) {
      b[j] += f[j] * ds.Y[i] / s2;
      for (int k = 0; k < q; k++) A[j * q + k] += f[j] * f[k] / s2;
    }
  }
  for (int j = 0; j < q; j++) A[j * q + j] += alpha;
  memcpy(m, b, sizeof m);
  double Ac[25];
  memcpy(Ac, A, sizeof Ac);
  assert_int_equal(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'L', q, 1, Ac, q, m, 1), 0);
  double logdetA = 0;
  for (int j = 0; j < q; j++) logdetA += 2 * log(Ac[j * q + j]);
  double rss = 0, mm = 0;
  for (int i = 0; i < n; i++) {
    double r = ds.Y[i] - m[4];
    for (int j = 0; j < 4; j++) r -= ds.X[i * 4 + j] * m[j];
    rss += r * r;
  }
  for (int j = 0; j < q; j++) mm += m[j] * m[j];
  const double bishop = 0.5 * q * log(alpha) - 0.5 * n * log(2 * M_PI * s2) - rss / (2 * s2) -
                        0.5 * alpha * mm - 0.5 * logdetA;
  if (!(fabs(g_ev[20] - bishop) <= 1e-9)) fail_msg("exact %.15g bishop %.15g", g_ev[20], bishop);
  assert_true(fabs(g_lap[20] - bishop) <= 1e-9);
  td_dataset_deinit(&ds);
  json_decref(p);
  json_decref(filled);
  json_decref(sum);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_blr_evidence),     cmocka_unit_test(test_diag_equals_full),
      cmocka_unit_test(test_full_ggn_vs_rop),  cmocka_unit_test(test_kfac_samples),
      cmocka_unit_test(test_calibrate),        cmocka_unit_test(test_blr_kind),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
