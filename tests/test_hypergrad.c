/* test_hypergrad.c: the four hypergradient methods of bilevel/hypergrad.h on ridge regression
 * (a quadratic inner problem, where the IFT is exact), against references from outside the
 * methods: central finite differences of the validation loss through an unroll written in
 * this file, the closed form by Cholesky (LAPACK), and a dense eigendecomposition.
 *
 * Tolerances. The validation loss after T heavy-ball steps on a quadratic is a smooth
 * function of lambda and lr_t; central differences with step h have truncation error
 * h^2 |f'''| / 6 and rounding error eps |f| / h; with h = 1e-5 both are below 1e-9 relative
 * here, so 1e-6 relative separates a correct hypergradient from a wrong one (a dropped term
 * or a wrong sign moves it by O(1)). Exact reversal runs in fixed point (2^-52 grid): its
 * trajectory differs from the double one by ~1e-16 per step, far below 1e-6. Long unrolls
 * (T = 1500) converge to w* to ~1e-13, so the unrolled hypergradients meet the IFT and the
 * closed form to 1e-8. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "base/la.h"
#include "base/rng.h"
#include "bilevel/hgmlp.h"
#include "bilevel/hypergrad.h"
#include "bilevel/influence.h"
#include "nn/data.h"
#include "nn/model.h"

enum { NTR = 40, NV = 30, D = 6, G = 2 };
static const size_t OFF[G + 1] = {0, 3, 6};

typedef struct fixture {
  double X[NTR * D], y[NTR], Xv[NV * D], yv[NV], w0[D];
  td_hg_ridge q;
  td_hg_problem p;
} fixture;

static void make(fixture *f) {
  td_rng r;
  td_rng_init(&r, 11, 3);
  td_rng_fill_normal(&r, f->X, NTR * D, 1.0);
  td_rng_fill_normal(&r, f->Xv, NV * D, 1.0);
  double wt[D];
  td_rng_fill_normal(&r, wt, D, 1.0);
  for (int i = 0; i < NTR; i++) f->y[i] = td_la_dot(D, f->X + i * D, wt) + 0.5 * td_rng_normal(&r);
  for (int i = 0; i < NV; i++) f->yv[i] = td_la_dot(D, f->Xv + i * D, wt) + 0.5 * td_rng_normal(&r);
  td_rng_fill_normal(&r, f->w0, D, 0.3);
  td_err err;
  assert_int_equal(td_hg_ridge_init(&f->q, f->X, f->y, NTR, f->Xv, f->yv, NV, D, &err), 0);
  f->p = td_hg_ridge_problem(&f->q, G, OFF);
}

/* Data weights of the reference unroll (NULL: all 1): L_train = (1/n) sum_i s_i l_i. */
static const double *REF_S;

/* The reference unroll, written here from the update rule (independent of hypergrad.c):
 * v = mu v + (X^T S (X w - y)/n + lam_t w), w -= lr_t v, with a per-step lambda so that a
 * perturbation can be confined to the last K steps (truncation). Returns L_val(w_T). */
static double ref_unroll(const fixture *f, int T, const double *lrs, double mu,
                         const double *lam_steps /* T x G */) {
  double w[D], v[D] = {0};
  memcpy(w, f->w0, sizeof w);
  for (int t = 0; t < T; t++) {
    double g[D] = {0};
    for (int i = 0; i < NTR; i++) {
      double r = -f->y[i];
      for (int k = 0; k < D; k++) r += f->X[i * D + k] * w[k];
      if (REF_S) r *= REF_S[i];
      for (int k = 0; k < D; k++) g[k] += r * f->X[i * D + k] / NTR;
    }
    for (int k = 0; k < D; k++) {
      double l = lam_steps[t * G + (k < 3 ? 0 : 1)];
      v[k] = mu * v[k] + g[k] + l * w[k];
    }
    for (int k = 0; k < D; k++) w[k] -= lrs[t] * v[k];
  }
  double s = 0;
  for (int i = 0; i < NV; i++) {
    double r = -f->yv[i];
    for (int k = 0; k < D; k++) r += f->Xv[i * D + k] * w[k];
    s += r * r;
  }
  return 0.5 * s / NV;
}

/* Central differences of ref_unroll in lambda_j over steps [t_from, T). */
static double fd_lambda(const fixture *f, int T, const double *lrs, double mu,
                        const double *lambda, int j, int t_from) {
  double *ls = malloc((size_t)T * G * sizeof *ls);
  double h = 1e-5, fp = 0, fm = 0;
  for (int s = -1; s <= 1; s += 2) {
    for (int t = 0; t < T; t++)
      for (int k = 0; k < G; k++) ls[t * G + k] = lambda[k] + (k == j && t >= t_from ? s * h : 0);
    double v = ref_unroll(f, T, lrs, mu, ls);
    if (s < 0) fm = v; else fp = v;
  }
  free(ls);
  return (fp - fm) / (2 * h);
}

static double fd_lr(const fixture *f, int T, const double *lrs, double mu, const double *lambda,
                    int t0) {
  double *ls = malloc((size_t)T * G * sizeof *ls), *lr = malloc((size_t)T * sizeof *lr);
  for (int t = 0; t < T; t++)
    for (int k = 0; k < G; k++) ls[t * G + k] = lambda[k];
  double h = 1e-6;
  memcpy(lr, lrs, (size_t)T * sizeof *lr);
  lr[t0] += h;
  double fp = ref_unroll(f, T, lr, mu, ls);
  lr[t0] -= 2 * h;
  double fm = ref_unroll(f, T, lr, mu, ls);
  free(ls), free(lr);
  return (fp - fm) / (2 * h);
}

static void assert_rel(double got, double ref, double tol) {
  double e = fabs(got - ref) / fmax(fabs(ref), 1e-12);
  if (!(e <= tol)) fail_msg("got %.17g, reference %.17g, relative error %.3g > %.3g", got, ref, e, tol);
}

enum { T = 60 };
static const double LAMBDA[G] = {0.05, 0.2};

static void lrs_fill(double *lrs, int n) {
  for (int t = 0; t < n; t++) lrs[t] = 0.05 * (1.0 + 0.5 * cos(0.3 * t)); /* a schedule */
}

static void test_reverse_matches_finite_differences(void **st) {
  (void)st;
  fixture f;
  make(&f);
  double lrs[T], dl[G], dlr[T];
  lrs_fill(lrs, T);
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  td_hg_result res = {.d_lambda = dl, .d_lr = dlr};
  td_err err;
  assert_int_equal(td_hg_reverse(&f.p, &u, 0, &res, &err), 0);
  for (int j = 0; j < G; j++) assert_rel(dl[j], fd_lambda(&f, T, lrs, 0.9, LAMBDA, j, 0), 1e-6);
  const int ts[3] = {0, 17, T - 1};
  for (int k = 0; k < 3; k++) assert_rel(dlr[ts[k]], fd_lr(&f, T, lrs, 0.9, LAMBDA, ts[k]), 1e-6);
  assert_int_equal(res.n_hvp, T);
  td_hg_ridge_deinit(&f.q);
}

/* Truncated back-propagation over the last K steps (Shaban et al. 2019) is the derivative
 * with lambda perturbed in those steps only: the reference perturbs exactly those. */
static void test_truncated_reverse(void **st) {
  (void)st;
  fixture f;
  make(&f);
  double lrs[T], dl[G], dfull[G];
  lrs_fill(lrs, T);
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  td_err err;
  td_hg_result full = {.d_lambda = dfull};
  assert_int_equal(td_hg_reverse(&f.p, &u, 0, &full, &err), 0);
  td_hg_result res = {.d_lambda = dl};
  assert_int_equal(td_hg_reverse(&f.p, &u, 10, &res, &err), 0);
  for (int j = 0; j < G; j++) {
    double ref = fd_lambda(&f, T, lrs, 0.9, LAMBDA, j, T - 10);
    assert_rel(dl[j], ref, 1e-6);
    assert_true(fabs(dl[j] - dfull[j]) > 1e-3 * fabs(dfull[j])); /* truncation is biased */
  }
  assert_int_equal(res.n_hvp, 10);
  assert_true(res.bytes < full.bytes);
  td_hg_ridge_deinit(&f.q);
}

static void test_forward_mode_matches_finite_differences(void **st) {
  (void)st;
  fixture f;
  make(&f);
  double lrs[T], dl[G];
  lrs_fill(lrs, T);
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  td_hg_result res = {.d_lambda = dl};
  td_err err;
  assert_int_equal(td_hg_forward_mode(&f.p, &u, &res, &err), 0);
  for (int j = 0; j < G; j++) assert_rel(dl[j], fd_lambda(&f, T, lrs, 0.9, LAMBDA, j, 0), 1e-6);
  assert_int_equal(res.n_hvp, (long)T * G); /* one HVP per hyperparameter per step */
  td_hg_ridge_deinit(&f.q);
}

/* Exact reversal: the reversed trajectory is bitwise the forward one, (w_0, v_0) and the empty
 * store are recovered, and the hypergradient meets the finite differences. */
static void test_reversal_bitwise_and_fd(void **st) {
  (void)st;
  fixture f;
  make(&f);
  double lrs[T], dl[G], dlr[T];
  lrs_fill(lrs, T);
  double *tf = malloc((T + 1) * D * sizeof *tf), *tr = malloc((T + 1) * D * sizeof *tr);
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  td_hg_result res = {.d_lambda = dl, .d_lr = dlr};
  td_err err;
  assert_int_equal(td_hg_reversal(&f.p, &u, &res, tf, tr, &err), 0);
  assert_memory_equal(tf, tr, (T + 1) * D * sizeof *tf);
  assert_int_equal(res.mismatch, 0);
  assert_int_equal(res.mu_num, 9);
  assert_int_equal(res.mu_den, 10);
  /* the store holds about T log2(10/9) = 9.1 bits per parameter, not 64 T */
  assert_true(res.store_bits > 0.5 * T * D * log2(10.0 / 9) && res.store_bits < 2.0 * T * D * log2(10.0 / 9) + 8 * D);
  /* the trajectory is that of double precision to rounding */
  double wT[D];
  assert_int_equal(td_hg_forward(&f.p, &u, wT, NULL, NULL, &err), 0);
  for (int k = 0; k < D; k++) assert_true(fabs(wT[k] - tf[T * D + k]) < 1e-12);
  for (int j = 0; j < G; j++) assert_rel(dl[j], fd_lambda(&f, T, lrs, 0.9, LAMBDA, j, 0), 1e-6);
  assert_rel(dlr[5], fd_lr(&f, T, lrs, 0.9, LAMBDA, 5), 1e-6);
  free(tf), free(tr);
  td_hg_ridge_deinit(&f.q);
}

/* A gradient that is not deterministic (a 1-ulp perturbation on every other call) breaks
 * the reversal, and the mismatch count says so. */
static int flaky_calls;
static td_hg_problem flaky_inner;
static int flaky_point(void *ctx, const double *w, double *loss, double *g, td_err *err) {
  int rc = flaky_inner.point(ctx, w, loss, g, err);
  if (++flaky_calls % 2 == 0) g[0] = nextafter(g[0], INFINITY) * (1 + 1e-9);
  return rc;
}

static void test_reversal_detects_nondeterminism(void **st) {
  (void)st;
  fixture f;
  make(&f);
  double lrs[T], dl[G];
  lrs_fill(lrs, T);
  flaky_inner = f.p;
  td_hg_problem p = f.p;
  p.point = flaky_point;
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  td_hg_result res = {.d_lambda = dl};
  td_err err;
  assert_int_equal(td_hg_reversal(&p, &u, &res, NULL, NULL, &err), 0);
  assert_true(res.mismatch > 0);
  td_hg_ridge_deinit(&f.q);
}

/* IFT at the exact minimizer against the closed form, and the closed form against central
 * differences of L_val(w*(lambda)). */
static void test_ift_matches_closed_form(void **st) {
  (void)st;
  fixture f;
  make(&f);
  double ws[D], cf[G], dl[G];
  td_err err;
  assert_int_equal(td_hg_ridge_solve(&f.q, G, OFF, LAMBDA, ws, cf, &err), 0);
  for (int j = 0; j < G; j++) {
    double lp[G], lm[G], wp[D], wm[D], gp[D], vp, vm;
    memcpy(lp, LAMBDA, sizeof lp), memcpy(lm, LAMBDA, sizeof lm);
    lp[j] += 1e-5, lm[j] -= 1e-5;
    td_hg_ridge_solve(&f.q, G, OFF, lp, wp, NULL, &err);
    td_hg_ridge_solve(&f.q, G, OFF, lm, wm, NULL, &err);
    f.p.val(f.p.ctx, wp, &vp, gp, &err);
    f.p.val(f.p.ctx, wm, &vm, gp, &err);
    assert_rel(cf[j], (vp - vm) / 2e-5, 1e-6);
  }
  td_hg_ift_opts o = {.solver = TD_HG_IFT_CG, .max_iters = 50, .tol = 1e-14};
  td_hg_result res = {.d_lambda = dl};
  assert_int_equal(td_hg_ift(&f.p, LAMBDA, ws, &o, &res, &err), 0);
  assert_true(res.stationarity < 1e-12);
  for (int j = 0; j < G; j++) assert_rel(dl[j], cf[j], 1e-10);
  /* Neumann: lambda_max against a dense eigendecomposition of H + Lambda */
  double A[D * D], ev[D];
  memcpy(A, f.q.H, sizeof A);
  for (int i = 0; i < D; i++) A[i * D + i] += LAMBDA[i < 3 ? 0 : 1];
  assert_int_equal(td_la_syevd(D, A, ev, NULL), 0);
  o = (td_hg_ift_opts){.solver = TD_HG_IFT_NEUMANN, .max_iters = 3000, .power_iters = 500};
  assert_int_equal(td_hg_ift(&f.p, LAMBDA, ws, &o, &res, &err), 0);
  assert_rel(res.lambda_max, ev[D - 1], 1e-6);
  assert_true(res.alpha * res.lambda_max < 2);
  for (int j = 0; j < G; j++) assert_rel(dl[j], cf[j], 1e-8);
  /* alpha lambda_max > 2 violates the condition: the series diverges */
  o.alpha = 2.2 / ev[D - 1];
  o.max_iters = 200;
  int rc = td_hg_ift(&f.p, LAMBDA, ws, &o, &res, &err);
  assert_true(rc == TD_ERANGE || res.solve_resid > 1.0);
  td_hg_ridge_deinit(&f.q);
}

/* All four agree on a long unroll, where w_T = w* to rounding and the IFT is exact. */
static void test_all_four_agree_long_unroll(void **st) {
  (void)st;
  fixture f;
  make(&f);
  enum { TL = 1500 };
  double *lrs = malloc(TL * sizeof *lrs);
  for (int t = 0; t < TL; t++) lrs[t] = 0.05;
  td_hg_unroll u = {.T = TL, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  double a[G], b[G], c[G], d[G], e[G], ws[D], wT[D];
  td_err err;
  td_hg_result r1 = {.d_lambda = a}, r2 = {.d_lambda = b}, r3 = {.d_lambda = c},
               r4 = {.d_lambda = d};
  assert_int_equal(td_hg_reverse(&f.p, &u, 0, &r1, &err), 0);
  assert_int_equal(td_hg_reversal(&f.p, &u, &r2, NULL, NULL, &err), 0);
  assert_int_equal(r2.mismatch, 0);
  assert_int_equal(td_hg_forward_mode(&f.p, &u, &r3, &err), 0);
  assert_int_equal(td_hg_forward(&f.p, &u, wT, NULL, NULL, &err), 0);
  td_hg_ift_opts o = {.solver = TD_HG_IFT_CG, .max_iters = 50, .tol = 1e-14};
  assert_int_equal(td_hg_ift(&f.p, LAMBDA, wT, &o, &r4, &err), 0);
  assert_int_equal(td_hg_ridge_solve(&f.q, G, OFF, LAMBDA, ws, e, &err), 0);
  for (int j = 0; j < G; j++) {
    assert_rel(a[j], e[j], 1e-8);
    assert_rel(b[j], e[j], 1e-8);
    assert_rel(c[j], e[j], 1e-8);
    assert_rel(d[j], e[j], 1e-8);
  }
  /* memory: stored trajectory O(T P), reversal O(P) + bits */
  assert_true(r1.bytes > 100 * r2.bytes / 10);
  free(lrs);
  td_hg_ridge_deinit(&f.q);
}


/* Per-example data weights s (L_train = (1/n) sum_i s_i l_i, derivative at s = 1): reverse
 * mode and exact reversal against central differences of the reference unroll in one weight
 * (h = 1e-5; the map is smooth in s_i, so 1e-6 relative as above). */
static void test_data_weights_match_finite_differences(void **st) {
  (void)st;
  fixture f;
  make(&f);
  double lrs[T], dl[G], dl2[G], ds1[NTR], ds2[NTR], s[NTR];
  lrs_fill(lrs, T);
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  td_hg_result r1 = {.d_lambda = dl, .d_wts = ds1}, r2 = {.d_lambda = dl2, .d_wts = ds2};
  td_err err;
  assert_int_equal(td_hg_reverse(&f.p, &u, 0, &r1, &err), 0);
  assert_int_equal(td_hg_reversal(&f.p, &u, &r2, NULL, NULL, &err), 0);
  assert_int_equal(r2.mismatch, 0);
  double *ls = malloc((size_t)T * G * sizeof *ls);
  for (int t = 0; t < T; t++)
    for (int k = 0; k < G; k++) ls[t * G + k] = LAMBDA[k];
  const int pick[3] = {0, 17, NTR - 1};
  for (int a = 0; a < 3; a++) {
    int i = pick[a];
    double fv[2];
    for (int sg = 0; sg < 2; sg++) {
      for (int k = 0; k < NTR; k++) s[k] = 1.0;
      s[i] += sg ? -1e-5 : 1e-5;
      REF_S = s;
      fv[sg] = ref_unroll(&f, T, lrs, 0.9, ls);
      REF_S = NULL;
    }
    double fd = (fv[0] - fv[1]) / 2e-5;
    assert_rel(ds1[i], fd, 1e-6);
    assert_rel(ds2[i], fd, 1e-6);
  }
  /* forward mode does not do data weights (one tangent per example): not an error, skipped;
   * a problem without ex_dot refuses */
  td_hg_problem p = f.p;
  p.ex_dot = NULL;
  assert_int_equal(td_hg_reverse(&p, &u, 0, &r1, &err), TD_EINVAL);
  free(ls);
  td_hg_ridge_deinit(&f.q);
}

/* The ridge minimizer with data weights s, by LAPACK in this file: (X^T S X / n + Lambda) w =
 * X^T S y / n; returns L_val(w). */
static double ridge_weighted_val(const fixture *f, const double *s) {
  double A[D * D] = {0}, b[D] = {0};
  for (int i = 0; i < NTR; i++)
    for (int k = 0; k < D; k++) {
      b[k] += s[i] * f->X[i * D + k] * f->y[i] / NTR;
      for (int l = 0; l < D; l++) A[k * D + l] += s[i] * f->X[i * D + k] * f->X[i * D + l] / NTR;
    }
  for (int k = 0; k < D; k++) A[k * D + k] += LAMBDA[k < 3 ? 0 : 1];
  assert_int_equal(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', D, 1, A, D, b, 1), 0);
  double v = 0;
  for (int i = 0; i < NV; i++) {
    double r = -f->yv[i];
    for (int k = 0; k < D; k++) r += f->Xv[i * D + k] * b[k];
    v += r * r;
  }
  return 0.5 * v / NV;
}

/* Ridge: the closed form of the data-weight hypergradient at the exact minimizer against
 * central differences of L_val(w*(s)) solved in this file, and the IFT (at the minimizer) and
 * a long reverse unroll (T = 1500, converged to ~1e-13) against the closed form. */
static void test_data_weights_ridge_closed_form(void **st) {
  (void)st;
  fixture f;
  make(&f);
  td_err err;
  double cf[NTR], s[NTR];
  assert_int_equal(td_hg_ridge_dweights(&f.q, G, OFF, LAMBDA, cf, &err), 0);
  for (int i = 0; i < NTR; i += 7) {
    for (int k = 0; k < NTR; k++) s[k] = 1.0;
    s[i] = 1 + 1e-5;
    double fp = ridge_weighted_val(&f, s);
    s[i] = 1 - 1e-5;
    double fm = ridge_weighted_val(&f, s);
    assert_rel(cf[i], (fp - fm) / 2e-5, 1e-6);
  }
  enum { TL = 1500 };
  double *lrs = malloc(TL * sizeof *lrs), dl[G], ws[D], ds_rev[NTR], ds_ift[NTR];
  for (int t = 0; t < TL; t++) lrs[t] = 0.05;
  td_hg_unroll u = {.T = TL, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = f.w0};
  td_hg_result r1 = {.d_lambda = dl, .d_wts = ds_rev}, r2 = {.d_lambda = dl, .d_wts = ds_ift};
  assert_int_equal(td_hg_reverse(&f.p, &u, 0, &r1, &err), 0);
  assert_int_equal(td_hg_ridge_solve(&f.q, G, OFF, LAMBDA, ws, NULL, &err), 0);
  td_hg_ift_opts o = {.solver = TD_HG_IFT_CG, .max_iters = 50, .tol = 1e-14};
  assert_int_equal(td_hg_ift(&f.p, LAMBDA, ws, &o, &r2, &err), 0);
  double num1 = 0, num2 = 0, den = 0;
  for (int i = 0; i < NTR; i++) {
    num1 += (ds_rev[i] - cf[i]) * (ds_rev[i] - cf[i]);
    num2 += (ds_ift[i] - cf[i]) * (ds_ift[i] - cf[i]);
    den += cf[i] * cf[i];
  }
  assert_true(sqrt(num1 / den) < 1e-8);
  assert_true(sqrt(num2 / den) < 1e-10);
  free(lrs);
  td_hg_ridge_deinit(&f.q);
}

static void curv_hvp(void *ctx, const double *v, double *out) { td_curv_hvp(ctx, v, out); }

/* At unit weights, the IFT data-weight hypergradient is Koh and Liang's influence of
 * up-weighting each training example divided by n (hypergrad.h, td_hg_ift): checked on a
 * small tanh MLP against bilevel/influence.h's exact dense solve (Cholesky of H + lambda I
 * built from HVP columns) and per-example gradients (td_curv_per_example_grads), a different
 * solver and a different per-example path (the IFT uses CG and one JVP). */
static void test_data_weights_ift_is_influence(void **st) {
  (void)st;
  td_err err;
  td_synth_cfg sc = {.d = 4, .noise = 0.1, .decay = 0};
  td_dataset tr, va;
  enum { NT = 25 };
  assert_int_equal(td_data_synthetic(&sc, NT, 3, 1, &tr, NULL, &err), 0);
  assert_int_equal(td_data_synthetic(&sc, 15, 3, 2, &va, NULL, &err), 0);
  td_mlp_cfg mc = {.in_dim = 4, .out_dim = 1, .n_hidden = 1, .hidden = {5}, .act = TD_ACT_TANH,
                   .init_scale = 1.0};
  td_mlp *m;
  assert_int_equal(td_mlp_create(&mc, &m, &err), 0);
  td_mlp_init(m, 6);
  td_hgmlp h;
  assert_int_equal(td_hgmlp_init(&h, m, &tr, NT, &va, 15, TD_CURV_MSE, &err), 0);
  td_hg_problem p = td_hgmlp_problem(&h);
  size_t P = m->n_params;
  const double lam = 0.3, lams[2] = {lam, lam}; /* one strength for all: the damping */
  /* a point near the inner minimizer (the identity holds at any point) */
  enum { TW = 200 };
  double lrs[TW], dl[2], ds[NT], score[NT];
  for (int t = 0; t < TW; t++) lrs[t] = 0.1;
  double *w = malloc(P * sizeof *w), *gv = malloc(P * sizeof *gv), *q = malloc(P * sizeof *q);
  double *Gx = malloc(NT * P * sizeof *Gx);
  td_hg_unroll u = {.T = TW, .lrs = lrs, .mu = 0.9, .lambda = lams, .w0 = m->params};
  assert_int_equal(td_hg_forward(&p, &u, w, NULL, NULL, &err), 0);
  td_hg_ift_opts o = {.solver = TD_HG_IFT_CG, .max_iters = 200, .tol = 1e-14};
  td_hg_result r = {.d_lambda = dl, .d_wts = ds};
  assert_int_equal(td_hg_ift(&p, lams, w, &o, &r, &err), 0);
  /* the influence module's view */
  double vl;
  assert_int_equal(td_curv_set_point(&h.tr, w, &err), 0);
  td_curv_per_example_grads(&h.tr, Gx);
  assert_int_equal(p.val(p.ctx, w, &vl, gv, &err), 0);
  td_inf_problem ip = {.n_params = P, .n_train = NT, .ctx = &h.tr, .hvp = curv_hvp};
  td_inf_exact e;
  assert_int_equal(td_inf_exact_init(&e, &ip, lam, &err), 0);
  td_inf_exact_solve(&e, gv, q);
  td_inf_scores(Gx, NT, P, q, score);
  for (int i = 0; i < NT; i++) assert_rel(ds[i] * NT, score[i], 1e-8);
  td_inf_exact_deinit(&e);
  free(w), free(gv), free(q), free(Gx);
  td_hgmlp_deinit(&h);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&va);
}

static void test_mu_rational_and_errors(void **st) {
  (void)st;
  uint32_t n, d;
  td_err err;
  assert_int_equal(td_hg_mu_rational(0.9, &n, &d, &err), 0);
  assert_true(n == 9 && d == 10);
  assert_int_equal(td_hg_mu_rational(0.99, &n, &d, &err), 0);
  assert_true(n == 99 && d == 100);
  assert_int_equal(td_hg_mu_rational(0.5, &n, &d, &err), 0);
  assert_true(n == 1 && d == 2);
  assert_int_equal(td_hg_mu_rational(0.0, &n, &d, &err), TD_EINVAL);
  assert_int_equal(td_hg_mu_rational(1.0, &n, &d, &err), TD_EINVAL);
  fixture f;
  make(&f);
  double lrs[3] = {0.1, 0.1, 0.1}, dl[G], big[D];
  for (int i = 0; i < D; i++) big[i] = 5000; /* outside the fixed-point range */
  td_hg_unroll u = {.T = 3, .lrs = lrs, .mu = 0.9, .lambda = LAMBDA, .w0 = big};
  td_hg_result res = {.d_lambda = dl};
  assert_int_equal(td_hg_reversal(&f.p, &u, &res, NULL, NULL, &err), TD_ERANGE);
  u.w0 = f.w0;
  u.mu = 0;
  assert_int_equal(td_hg_reversal(&f.p, &u, &res, NULL, NULL, &err), TD_EINVAL);
  lrs[1] = -1;
  u.mu = 0.9;
  assert_int_equal(td_hg_reverse(&f.p, &u, 0, &res, &err), TD_EINVAL);
  td_hg_ridge_deinit(&f.q);
}

/* The MLP adapter: a tanh network on synthetic data; every unrolled method against central
 * differences of L_val(w_T) computed by the double-precision forward unroll (h = 1e-5: the
 * truncation error h^2 |f'''| / 6 is ~1e-10 relative for this smooth map). */
static void test_mlp_methods_match_finite_differences(void **st) {
  (void)st;
  td_err err;
  td_synth_cfg sc = {.d = 5, .noise = 0.1, .decay = 0};
  td_dataset tr, va;
  assert_int_equal(td_data_synthetic(&sc, 30, 3, 1, &tr, NULL, &err), 0);
  assert_int_equal(td_data_synthetic(&sc, 20, 3, 2, &va, NULL, &err), 0);
  td_mlp_cfg mc = {.in_dim = 5, .out_dim = 1, .n_hidden = 1, .hidden = {7}, .act = TD_ACT_TANH,
                   .init_scale = 1.0};
  td_mlp *m;
  assert_int_equal(td_mlp_create(&mc, &m, &err), 0);
  td_mlp_init(m, 4);
  td_hgmlp h;
  assert_int_equal(td_hgmlp_init(&h, m, &tr, 30, &va, 20, TD_CURV_MSE, &err), 0);
  td_hg_problem p = td_hgmlp_problem(&h);
  assert_int_equal(p.n_groups, 2);
  enum { TM = 15 };
  double lrs[TM], lam[2] = {0.01, 0.03}, a[2], b[2], c[2], e[2], dlr[TM];
  for (int t = 0; t < TM; t++) lrs[t] = 0.2;
  td_hg_unroll u = {.T = TM, .lrs = lrs, .mu = 0.9, .lambda = lam, .w0 = m->params};
  td_hg_result r1 = {.d_lambda = a, .d_lr = dlr}, r2 = {.d_lambda = b}, r3 = {.d_lambda = c};
  assert_int_equal(td_hg_reverse(&p, &u, 0, &r1, &err), 0);
  assert_int_equal(td_hg_reversal(&p, &u, &r2, NULL, NULL, &err), 0);
  assert_int_equal(r2.mismatch, 0);
  assert_int_equal(td_hg_forward_mode(&p, &u, &r3, &err), 0);
  /* exact reversal with the last 7 steps' first-layer pre-activations kept from the forward
   * pass (td_hgmlp_cache): the reverse pass that starts those steps' forward at layer 1 must
   * still recover the forward trajectory bit for bit */
  size_t P = m->n_params;
  double *tf = malloc((TM + 1) * P * sizeof *tf), *tb = malloc((TM + 1) * P * sizeof *tb);
  assert_int_equal(td_hgmlp_cache(&h, TM, 7.5 * 30 * 7 * sizeof(double), &err), 0);
  assert_int_equal(h.cache_steps, 7);
  td_hg_result r4 = {.d_lambda = e};
  assert_int_equal(td_hg_reversal(&p, &u, &r4, tf, tb, &err), 0);
  assert_int_equal(h.cache_hits, 7);
  assert_int_equal(r4.mismatch, 0);
  assert_memory_equal(tf, tb, (TM + 1) * P * sizeof *tf);
  free(tf), free(tb);
  double *wT = malloc(m->n_params * sizeof *wT), *g = malloc(m->n_params * sizeof *g);
  for (int j = 0; j < 2; j++) {
    double fv[2];
    for (int s = 0; s < 2; s++) {
      double l2[2] = {lam[0], lam[1]};
      l2[j] += s ? -1e-5 : 1e-5;
      td_hg_unroll uu = u;
      uu.lambda = l2;
      assert_int_equal(td_hg_forward(&p, &uu, wT, NULL, NULL, &err), 0);
      p.val(p.ctx, wT, &fv[s], g, &err);
    }
    double fd = (fv[0] - fv[1]) / 2e-5;
    assert_rel(a[j], fd, 1e-6);
    assert_rel(b[j], fd, 1e-6);
    assert_rel(c[j], fd, 1e-6);
    assert_rel(e[j], fd, 1e-6);
  }
  free(wT), free(g);
  td_hgmlp_deinit(&h);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&va);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reverse_matches_finite_differences),
      cmocka_unit_test(test_truncated_reverse),
      cmocka_unit_test(test_forward_mode_matches_finite_differences),
      cmocka_unit_test(test_reversal_bitwise_and_fd),
      cmocka_unit_test(test_reversal_detects_nondeterminism),
      cmocka_unit_test(test_ift_matches_closed_form),
      cmocka_unit_test(test_all_four_agree_long_unroll),
      cmocka_unit_test(test_mu_rational_and_errors),
      cmocka_unit_test(test_mlp_methods_match_finite_differences),
      cmocka_unit_test(test_data_weights_match_finite_differences),
      cmocka_unit_test(test_data_weights_ridge_closed_form),
      cmocka_unit_test(test_data_weights_ift_is_influence),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
