/* test_influence.c: influence functions (bilevel/influence.h) against references from outside:
 * exact leave-one-out refits by Cholesky of the reduced problem, the second-order bound that
 * ties the first-order influence to the exact leave-one-out change, a dense solve for CG and
 * LiSSA (on ridge and on a small tanh network through td_curv), and rank correlations on
 * hand-computed cases.
 *
 * Tolerances: Cholesky refits agree to ~1e-13 (well-conditioned d = 5 systems), so 1e-9; CG to
 * 1e-12 relative residual, so 1e-8 on the solution (condition number < 1e3); deterministic LiSSA
 * converges as (1 - mu_min / s)^J, which the test computes and uses as the tolerance;
 * stochastic LiSSA's error is sampling noise, checked at 5 % after averaging 50 recursions
 * (the noise measured here is about 1 %; a wrong sign or scale is off by 100 %). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "bilevel/influence.h"
#include "curv/curv.h"
#include "curv/power.h"
#include "nn/data.h"
#include "nn/model.h"

enum { N = 60, D = 5, M = 40 };

typedef struct ridge {
  double X[N * D], y[N], Xt[M * D], yt[M], H[D * D];
} ridge;

static void make_ridge(ridge *r) {
  td_rng g;
  td_rng_init(&g, 5, 9);
  td_rng_fill_normal(&g, r->X, N * D, 1.0);
  td_rng_fill_normal(&g, r->Xt, M * D, 1.0);
  double wt[D];
  td_rng_fill_normal(&g, wt, D, 1.0);
  for (int i = 0; i < N; i++) r->y[i] = td_la_dot(D, r->X + i * D, wt) + 0.7 * td_rng_normal(&g);
  for (int i = 0; i < M; i++) r->yt[i] = td_la_dot(D, r->Xt + i * D, wt) + 0.7 * td_rng_normal(&g);
  r->y[3] += 6; /* an outlier */
  td_la_ata(N, D, 1.0 / N, r->X, r->H);
}

static void ridge_hvp(void *ctx, const double *v, double *out) {
  const ridge *r = ctx;
  td_la_gemv(0, D, D, 1.0, r->H, v, 0.0, out);
}

static void ridge_hvp_batch(void *ctx, const size_t *idx, int b, const double *v, double *out) {
  const ridge *r = ctx;
  memset(out, 0, D * sizeof *out);
  for (int k = 0; k < b; k++) {
    const double *x = r->X + idx[k] * D;
    double s = td_la_dot(D, x, v) / b;
    for (int j = 0; j < D; j++) out[j] += s * x[j];
  }
}

/* w = (X^T X / n' + lam I)^-1 X^T y / n with rows `skip` removed from the sums but n kept. */
static void refit(const ridge *r, double lam, int skip, double *w) {
  double A[D * D] = {0}, b[D] = {0};
  for (int i = 0; i < N; i++) {
    if (i == skip) continue;
    for (int a = 0; a < D; a++) {
      b[a] += r->X[i * D + a] * r->y[i] / N;
      for (int c = 0; c < D; c++) A[a * D + c] += r->X[i * D + a] * r->X[i * D + c] / N;
    }
  }
  for (int a = 0; a < D; a++) A[a * D + a] += lam;
  assert_int_equal(LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', D, 1, A, D, b, 1), 0);
  memcpy(w, b, sizeof b);
}

static double test_loss(const ridge *r, const double *w) {
  double s = 0;
  for (int i = 0; i < M; i++) {
    double e = td_la_dot(D, r->Xt + i * D, w) - r->yt[i];
    s += e * e;
  }
  return 0.5 * s / M;
}

static void test_ridge_loo_against_refits(void **st) {
  (void)st;
  ridge r;
  make_ridge(&r);
  double lam = 0.05, dl[N], w0[D], wi[D];
  td_err err;
  assert_int_equal(td_inf_ridge_loo(r.X, r.y, N, D, r.Xt, r.yt, M, lam, dl, &err), 0);
  refit(&r, lam, -1, w0);
  double l0 = test_loss(&r, w0);
  for (int i = 0; i < N; i++) {
    refit(&r, lam, i, wi);
    double ref = test_loss(&r, wi) - l0;
    assert_true(fabs(dl[i] - ref) <= 1e-9 * fmax(fabs(ref), 1e-6));
  }
}

/* First-order influence vs exact LOO: with dw_i = the exact parameter change and u_i its
 * influence prediction, dw_i = u_i / (1 - h_i) exactly (Sherman-Morrison), and the test loss is
 * quadratic: Delta_i = g_test . dw_i + 1/2 dw_i^T Ht dw_i. So
 * |Delta_i - (-score_i / n) / (1 - h_i)| <= 1/2 lambda_max(Ht) ||dw_i||^2, checked per example. */
static void test_influence_vs_exact_loo(void **st) {
  (void)st;
  ridge r;
  make_ridge(&r);
  double lam = 0.05, dl[N], w0[D], q[D], gt[D] = {0}, G[N * D], score[N];
  td_err err;
  assert_int_equal(td_inf_ridge_loo(r.X, r.y, N, D, r.Xt, r.yt, M, lam, dl, &err), 0);
  refit(&r, lam, -1, w0);
  for (int i = 0; i < M; i++) {
    double e = td_la_dot(D, r.Xt + i * D, w0) - r.yt[i];
    td_la_axpy(D, e / M, r.Xt + i * D, gt);
  }
  for (int i = 0; i < N; i++) {
    double e = td_la_dot(D, r.X + i * D, w0) - r.y[i];
    for (int k = 0; k < D; k++) G[i * D + k] = e * r.X[i * D + k];
  }
  td_inf_problem p = {.n_params = D, .n_train = N, .ctx = &r, .hvp = ridge_hvp};
  td_inf_opts o = {.method = TD_INF_EXACT, .damping = lam};
  assert_int_equal(td_inf_ihvp(&p, &o, gt, q, NULL, &err), 0);
  td_inf_scores(G, N, D, q, score);
  double Ht[D * D], ev[D], A[D * D];
  td_la_ata(M, D, 1.0 / M, r.Xt, Ht);
  memcpy(A, Ht, sizeof A);
  td_la_syevd(D, A, ev, NULL);
  double pred[N];
  for (int i = 0; i < N; i++) {
    double wi[D], u[D];
    refit(&r, lam, i, wi);
    for (int k = 0; k < D; k++) wi[k] -= w0[k];
    /* leverage from the dense system */
    double B[D * D];
    memcpy(B, r.H, sizeof B);
    for (int k = 0; k < D; k++) B[k * D + k] += lam;
    memcpy(u, r.X + i * D, sizeof u);
    LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', D, 1, B, D, u, 1);
    double h = td_la_dot(D, r.X + i * D, u) / N;
    pred[i] = -score[i] / N;
    double bound = 0.5 * ev[D - 1] * td_la_dot(D, wi, wi) + 1e-12;
    assert_true(fabs(dl[i] - pred[i] / (1 - h)) <= bound);
  }
  assert_true(td_inf_pearson(pred, dl, N) > 0.95);
  /* the outlier (example 3) is the most harmful by the influence ranking... removing it helps */
  int arg = 0;
  for (int i = 1; i < N; i++)
    if (score[i] > score[arg]) arg = i;
  assert_true(dl[arg] < 0);
}

static void test_cg_and_lissa_against_exact_ridge(void **st) {
  (void)st;
  ridge r;
  make_ridge(&r);
  double b[D] = {1, -2, 0.5, 3, -1}, qe[D], qc[D], ql[D];
  td_err err;
  td_inf_problem p = {.n_params = D, .n_train = N, .ctx = &r, .hvp = ridge_hvp,
                      .hvp_batch = ridge_hvp_batch};
  double lam = 0.1;
  td_inf_opts o = {.method = TD_INF_EXACT, .damping = lam};
  assert_int_equal(td_inf_ihvp(&p, &o, b, qe, NULL, &err), 0);
  o.method = TD_INF_CG;
  o.cg_tol = 1e-13;
  assert_int_equal(td_inf_ihvp(&p, &o, b, qc, NULL, &err), 0);
  for (int k = 0; k < D; k++) assert_true(fabs(qc[k] - qe[k]) < 1e-8 * td_la_nrm2(D, qe));
  /* deterministic LiSSA: error <= (1 - mu_min / s)^J ||q|| in the eigenbasis */
  double A[D * D], ev[D];
  memcpy(A, r.H, sizeof A);
  td_la_syevd(D, A, ev, NULL);
  double s = 1.2 * (ev[D - 1] + lam);
  o = (td_inf_opts){.method = TD_INF_LISSA, .damping = lam, .lissa_depth = 400, .lissa_scale = s};
  assert_int_equal(td_inf_ihvp(&p, &o, b, ql, NULL, &err), 0);
  double tol = pow(1 - (ev[0] + lam) / s, 400) * td_la_nrm2(D, qe) * 1.01 + 1e-12;
  for (int k = 0; k < D; k++) assert_true(fabs(ql[k] - qe[k]) <= tol);
  /* stochastic LiSSA, batch 20, averaged over 50 recursions */
  o.lissa_batch = 20;
  o.lissa_repeats = 50;
  o.lissa_depth = 300;
  assert_int_equal(td_inf_ihvp(&p, &o, b, ql, NULL, &err), 0);
  double e = 0;
  for (int k = 0; k < D; k++) e += (ql[k] - qe[k]) * (ql[k] - qe[k]);
  assert_true(sqrt(e) < 0.05 * td_la_nrm2(D, qe));
  /* a scale below lambda_max diverges and says so */
  o.lissa_batch = 0;
  o.lissa_repeats = 1;
  o.lissa_scale = 0.3 * (ev[D - 1] + lam);
  o.lissa_depth = 3000;
  assert_int_equal(td_inf_ihvp(&p, &o, b, ql, NULL, &err), TD_ERANGE);
  o.damping = 0;
  assert_int_equal(td_inf_ihvp(&p, &o, b, ql, NULL, &err), TD_EINVAL);
}

/* A small tanh network: CG and LiSSA against the dense exact solve of the damped Hessian. */
static void net_hvp(void *ctx, const double *v, double *out) { td_curv_hvp(ctx, v, out); }

/* s I - (H + 2 I): its top eigenvalue is s - mu_min(H + 2 I). */
static double shift_s;
static void shifted_matvec(void *ctx, const double *v, double *out, size_t n) {
  td_curv_hvp(ctx, v, out);
  for (size_t i = 0; i < n; i++) out[i] = (shift_s - 2.0) * v[i] - out[i];
}

static void test_small_net_cg_lissa_against_exact(void **st) {
  (void)st;
  td_err err;
  td_synth_cfg sc = {.d = 4, .noise = 0.1, .decay = 0};
  td_dataset tr;
  assert_int_equal(td_data_synthetic(&sc, 40, 2, 1, &tr, NULL, &err), 0);
  td_mlp_cfg mc = {.in_dim = 4, .out_dim = 1, .n_hidden = 1, .hidden = {6}, .act = TD_ACT_TANH,
                   .init_scale = 1.0};
  td_mlp *m;
  assert_int_equal(td_mlp_create(&mc, &m, &err), 0);
  td_mlp_init(m, 1);
  td_curv_ctx c;
  assert_int_equal(td_curv_init(&c, m, 40, &err), 0);
  assert_int_equal(td_curv_set_batch(&c, tr.X, NULL, tr.Y, 40, TD_CURV_MSE, &err), 0);
  assert_int_equal(td_curv_set_point(&c, m->params, &err), 0);
  size_t P = m->n_params;
  double *b = malloc(3 * P * sizeof *b), *qe = b + P, *qc = b + 2 * P;
  td_rng g;
  td_rng_init(&g, 2, 2);
  td_rng_fill_normal(&g, b, P, 1.0);
  td_inf_problem p = {.n_params = P, .n_train = 40, .ctx = &c, .hvp = net_hvp};
  td_inf_opts o = {.method = TD_INF_EXACT, .damping = 2.0};
  assert_int_equal(td_inf_ihvp(&p, &o, b, qe, NULL, &err), 0);
  o.method = TD_INF_CG;
  o.cg_tol = 1e-13;
  o.cg_iters = 500;
  assert_int_equal(td_inf_ihvp(&p, &o, b, qc, NULL, &err), 0);
  double en = td_la_nrm2(P, qe), d = 0;
  for (size_t k = 0; k < P; k++) d = fmax(d, fabs(qc[k] - qe[k]));
  assert_true(d < 1e-8 * en);
  td_power_opts po = td_power_opts_default();
  td_power_result pr;
  int prc = td_power_top(td_curv_hvp_matvec, &c, P, &po, NULL, &pr, &err);
  if (prc) fprintf(stderr, "power: %s\n", err.msg);
  assert_int_equal(prc, 0);
  double s = 1.1 * (fabs(pr.eigval) + 2.0);
  shift_s = s;
  po.max_iter = 5000;
  po.tol = 1e-10;
  assert_int_equal(td_power_top(shifted_matvec, &c, P, &po, NULL, &pr, &err), 0);
  double mu_min = s - pr.eigval; /* the smallest eigenvalue of H + 2 I */
  assert_true(mu_min > 0);
  int J = (int)ceil(log(1e-9) / log(1 - mu_min / s));
  o = (td_inf_opts){.method = TD_INF_LISSA, .damping = 2.0, .lissa_depth = J, .lissa_scale = s};
  assert_int_equal(td_inf_ihvp(&p, &o, b, qc, NULL, &err), 0);
  d = 0;
  for (size_t k = 0; k < P; k++) d = fmax(d, fabs(qc[k] - qe[k]));
  /* J is chosen so that (1 - mu_min / s)^J = 1e-9, the truncation error, with mu_min the
   * smallest eigenvalue of H + 2 I by the power method on s I - (H + 2 I) (to 1e-10) */
  assert_true(d < 1e-6 * en);
  free(b);
  td_curv_deinit(&c);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
}

static void test_correlations(void **st) {
  (void)st;
  double x[5] = {1, 2, 3, 4, 5}, y[5] = {2, 4, 6, 8, 10}, z[5] = {1, 8, 27, 64, 125};
  double t[5] = {1, 1, 2, 3, 3}, u[5] = {5, 4, 3, 2, 1};
  assert_true(fabs(td_inf_pearson(x, y, 5) - 1) < 1e-15);
  assert_true(fabs(td_inf_spearman(x, z, 5) - 1) < 1e-15);
  assert_true(td_inf_pearson(x, z, 5) < 0.99);
  assert_true(fabs(td_inf_spearman(x, u, 5) + 1) < 1e-15);
  /* ties: ranks of t are 1.5 1.5 3 4.5 4.5; Pearson with 1..5 = 0.9486832980505138 */
  assert_true(fabs(td_inf_spearman(x, t, 5) - 0.9486832980505138) < 1e-14);
}

/* EK-FAC on a small tanh MLP, checked against its definition from outside the module: the
 * eigenbases diagonalize A and S built here from the layer inputs and the per-example
 * gradients (td_curv_per_example_grads), the corrected eigenvalues equal the empirical Fisher's
 * quadratic form u^T F u = mean_i (g_i . u)^2 along each Kronecker eigenvector u (George et al.
 * 2018, eq. 12), and the solve inverts (F_ekfac + damping I) rebuilt here from those
 * eigenvectors. All are exact identities: tolerances 1e-10 for rounding. */
static void test_ekfac_definition(void **st) {
  (void)st;
  td_err err;
  td_synth_cfg sc = {.d = 4, .noise = 0.1, .decay = 0};
  td_dataset tr;
  enum { NE = 40 };
  assert_int_equal(td_data_synthetic(&sc, NE, 2, 1, &tr, NULL, &err), 0);
  td_mlp_cfg mc = {.in_dim = 4, .out_dim = 1, .n_hidden = 1, .hidden = {6}, .act = TD_ACT_TANH,
                   .init_scale = 1.0};
  td_mlp *m;
  assert_int_equal(td_mlp_create(&mc, &m, &err), 0);
  td_mlp_init(m, 1);
  td_curv_ctx c;
  assert_int_equal(td_curv_init(&c, m, NE, &err), 0);
  assert_int_equal(td_curv_set_batch(&c, tr.X, NULL, tr.Y, NE, TD_CURV_MSE, &err), 0);
  assert_int_equal(td_curv_set_point(&c, m->params, &err), 0);
  size_t P = m->n_params;
  double *G = malloc(NE * P * sizeof *G);
  td_curv_per_example_grads(&c, G);
  size_t off[2];
  int no[2], ni[2];
  const double *acts[2];
  double *Dm[2];
  for (int j = 0; j < 2; j++) {
    double *W, *b;
    const td_layer *l = td_mlp_linear(m, j, m->params, &W, &b);
    off[j] = l->off, no[j] = l->n_out, ni[j] = l->n_in;
    acts[j] = c.ws.act[l - m->layers]; /* the layer's input */
    Dm[j] = malloc(NE * (size_t)no[j] * sizeof *Dm[j]);
    for (int i = 0; i < NE; i++)
      for (int r = 0; r < no[j]; r++)
        Dm[j][i * no[j] + r] = G[i * P + off[j] + (size_t)no[j] * ni[j] + r];
  }
  td_inf_ekfac e;
  const double *Dc[2] = {Dm[0], Dm[1]};
  assert_int_equal(td_inf_ekfac_init(&e, 2, off, no, ni, acts, Dc, NE, P, &err), 0);
  double *u = malloc(P * sizeof *u);
  for (int j = 0; j < 2; j++) {
    const td_inf_ekfac_layer *l = &e.L[j];
    int ni1 = ni[j] + 1;
    /* Q_A^T A Q_A is diagonal, A built here */
    double A[8 * 8] = {0};
    for (int i = 0; i < NE; i++)
      for (int a = 0; a < ni1; a++)
        for (int b = 0; b < ni1; b++) {
          double xa = a < ni[j] ? acts[j][i * ni[j] + a] : 1, xb = b < ni[j] ? acts[j][i * ni[j] + b] : 1;
          A[a * ni1 + b] += xa * xb / NE;
        }
    for (int p = 0; p < ni1; p++)
      for (int q = 0; q < ni1; q++) {
        if (p == q) continue;
        double s = 0;
        for (int a = 0; a < ni1; a++)
          for (int b = 0; b < ni1; b++) s += l->QA[a * ni1 + p] * A[a * ni1 + b] * l->QA[b * ni1 + q];
        assert_true(fabs(s) < 1e-12);
      }
    /* Lambda_ab = mean_i (g_i . u_ab)^2 */
    for (int a = 0; a < no[j]; a++)
      for (int b = 0; b < ni1; b++) {
        memset(u, 0, P * sizeof *u);
        for (int r = 0; r < no[j]; r++)
          for (int k = 0; k < ni1; k++) {
            double v = l->QS[r * no[j] + a] * l->QA[k * ni1 + b];
            if (k < ni[j]) u[off[j] + (size_t)r * ni[j] + k] = v;
            else u[off[j] + (size_t)no[j] * ni[j] + r] = v;
          }
        double f = 0;
        for (int i = 0; i < NE; i++) {
          double d = td_la_dot(P, G + i * P, u);
          f += d * d / NE;
        }
        assert_true(fabs(f - l->lam[a * ni1 + b]) <= 1e-10 * fmax(f, 1e-12));
      }
  }
  /* the solve: (F_ekfac + damping I) q = rhs with F_ekfac rebuilt from u_ab and Lambda_ab */
  double *rhs = malloc(P * sizeof *rhs), *q = malloc(P * sizeof *q), *Fq = malloc(P * sizeof *Fq);
  td_rng g;
  td_rng_init(&g, 4, 4);
  td_rng_fill_normal(&g, rhs, P, 1.0);
  td_inf_ekfac_solve(&e, 0.3, rhs, q);
  for (size_t k = 0; k < P; k++) Fq[k] = 0.3 * q[k];
  for (int j = 0; j < 2; j++) {
    const td_inf_ekfac_layer *l = &e.L[j];
    int ni1 = ni[j] + 1;
    for (int a = 0; a < no[j]; a++)
      for (int b = 0; b < ni1; b++) {
        memset(u, 0, P * sizeof *u);
        for (int r = 0; r < no[j]; r++)
          for (int k = 0; k < ni1; k++) {
            double v = l->QS[r * no[j] + a] * l->QA[k * ni1 + b];
            if (k < ni[j]) u[off[j] + (size_t)r * ni[j] + k] = v;
            else u[off[j] + (size_t)no[j] * ni[j] + r] = v;
          }
        td_la_axpy(P, l->lam[a * ni1 + b] * td_la_dot(P, u, q), u, Fq);
      }
  }
  for (size_t k = 0; k < P; k++) assert_true(fabs(Fq[k] - rhs[k]) < 1e-10 * td_la_nrm2(P, rhs));
  td_inf_ekfac_deinit(&e);
  free(u), free(rhs), free(q), free(Fq), free(G), free(Dm[0]), free(Dm[1]);
  td_curv_deinit(&c);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ridge_loo_against_refits),
      cmocka_unit_test(test_influence_vs_exact_loo),
      cmocka_unit_test(test_cg_and_lissa_against_exact_ridge),
      cmocka_unit_test(test_small_net_cg_lissa_against_exact),
      cmocka_unit_test(test_correlations),
      cmocka_unit_test(test_ekfac_definition),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
