/* test_curv.c: exact curvature products (curv.h) on tiny MLPs: JVP, VJP, gradient, HVP,
 * GGN, true and empirical Fisher, per-example gradients and the matvec adapters.
 *
 * What is tested and the tolerances (all relative to the largest entry of the reference):
 *  - JVP and HVP against FOURTH-order central differences (of outputs / of the exact
 *    gradient), f'(0) ~ [8(f(h) - f(-h)) - (f(2h) - f(-2h))] / (12h), h = 1e-3: truncation
 *    O(h^4 f^(5)) ~ 1e-12 and rounding O(eps |f| / h) ~ 1e-13 on O(1) values, so 1e-8 is a
 *    wide margin that still catches any wrong term (a missing second-derivative term is
 *    O(1)). ReLU: the data and seeds are fixed and no pre-activation lies within 2h |R{z}|
 *    of the kink (checked), so the differences see a smooth function.
 *  - The dense Hessian built column by column from HVPs (H e_j) is symmetric to 1e-12 and
 *    matches the dense finite-difference Hessian within 1e-8 (the criterion).
 *  - One linear layer (no hidden layer) with squared error: the GGN and the Hessian both equal
 *    I_out kron C with C = Xa^T Xa / n, Xa = [X, 1] (see test_ggn_linear_kron for the layout),
 *    to 1e-13 (pure rounding: the products are exact).
 *  - Softmax cross-entropy: the GGN equals the true Fisher built from its definition,
 *    (1/B) sum_i sum_c p_ic g_ic g_ic^T with g_ic the gradient of -log p(c | x_i), to 1e-12.
 *  - Empirical Fisher product = (1/B) G^T G v from per-example gradients; the mean of the
 *    per-example gradients = the batch gradient = td_mlp_backward's gradient; <u, Jv> =
 *    <J^T u, v>: all to 1e-12 (rounding only).
 *  - Lanczos on the HVP operator finds the top eigenvalue of the dense Hessian (dsyevd) to
 *    1e-9 relative. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "curv/curv.h"
#include "base/la.h"
#include "curv/lanczos.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "base/rng.h"

enum { B = 7, D = 5, K = 3 };

typedef struct fixture {
  td_mlp *m;
  td_curv_ctx c;
  double X[B * D];
  int y[B];
  double Y[B * K];
  size_t n;
} fixture;

static void make(fixture *f, int n_hidden, const int *hidden, td_act act, td_curv_loss loss,
                 int use_targets, uint64_t seed) {
  memset(f, 0, sizeof *f);
  td_mlp_cfg cfg = {.in_dim = D, .out_dim = K, .n_hidden = n_hidden, .act = act,
                    .init_scale = 1.0};
  for (int i = 0; i < n_hidden; i++) cfg.hidden[i] = hidden[i];
  td_err err;
  assert_int_equal(td_mlp_create(&cfg, &f->m, &err), 0);
  td_mlp_init(f->m, seed);
  td_rng r;
  td_rng_init(&r, seed, TD_RNG_DATA);
  td_rng_fill_normal(&r, f->X, B * D, 1.0);
  /* Non-zero biases so that the bias blocks are exercised by everything. */
  for (int j = 0; j < f->m->n_linear; j++) {
    double *b = NULL;
    const td_layer *L = td_mlp_linear(f->m, j, f->m->params, NULL, &b);
    td_rng_fill_normal(&r, b, (size_t)L->n_out, 0.3);
  }
  for (int i = 0; i < B; i++) f->y[i] = (int)td_rng_below(&r, K);
  td_rng_fill_normal(&r, f->Y, B * K, 1.0);
  f->n = f->m->n_params;
  assert_int_equal(td_curv_init(&f->c, f->m, B, &err), 0);
  assert_int_equal(td_curv_set_batch(&f->c, f->X, f->y, use_targets ? f->Y : NULL, B, loss, &err),
                   0);
  assert_int_equal(td_curv_set_point(&f->c, f->m->params, &err), 0);
}

static void unmake(fixture *f) {
  td_curv_deinit(&f->c);
  td_mlp_destroy(f->m);
}

static double maxabs(const double *a, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(a[i]) > s) s = fabs(a[i]);
  return s;
}

/* max |got - want| <= rtol * max |want| (+ a tiny floor). */
static void assert_vec_close(const double *got, const double *want, size_t n, double rtol,
                             const char *what) {
  double scale = maxabs(want, n), tol = rtol * scale + 1e-300;
  for (size_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= tol))
      fail_msg("%s[%zu]: got %.15g want %.15g (scale %.3g, rtol %.1g)", what, i, got[i], want[i],
               scale, rtol);
}

static void randv(double *v, size_t n, uint64_t stream) {
  td_rng r;
  td_rng_init(&r, 77, stream);
  td_rng_fill_normal(&r, v, n, 1.0);
}

/* The exact gradient at theta (through a second context, so f->c keeps its point). */
static void grad_at(fixture *f, td_curv_ctx *c2, const double *theta, double *g) {
  assert_int_equal(td_curv_set_point(c2, theta, NULL), 0);
  memcpy(g, td_curv_grad(c2), f->n * sizeof *g);
}

/* Fourth-order central difference along v of a vector function F(theta) (m outputs). */
typedef void (*vecfn)(fixture *f, td_curv_ctx *c2, const double *theta, double *out);
static void fd4(fixture *f, td_curv_ctx *c2, vecfn F, const double *v, size_t m, double h,
                double *out) {
  double *t = malloc(f->n * sizeof *t), *a[4];
  const double s[4] = {h, -h, 2 * h, -2 * h};
  for (int k = 0; k < 4; k++) {
    a[k] = malloc(m * sizeof *a[k]);
    for (size_t j = 0; j < f->n; j++) t[j] = f->m->params[j] + s[k] * v[j];
    F(f, c2, t, a[k]);
  }
  for (size_t j = 0; j < m; j++)
    out[j] = (8.0 * (a[0][j] - a[1][j]) - (a[2][j] - a[3][j])) / (12.0 * h);
  for (int k = 0; k < 4; k++) free(a[k]);
  free(t);
}

static void F_grad(fixture *f, td_curv_ctx *c2, const double *theta, double *out) {
  grad_at(f, c2, theta, out);
}
static void F_outputs(fixture *f, td_curv_ctx *c2, const double *theta, double *out) {
  (void)f;
  assert_int_equal(td_curv_set_point(c2, theta, NULL), 0);
  memcpy(out, c2->ws.act[c2->m->n_layers], (size_t)B * K * sizeof *out);
}

static void second_ctx(fixture *f, td_curv_ctx *c2) {
  assert_int_equal(td_curv_init(c2, f->m, B, NULL), 0);
  assert_int_equal(td_curv_set_batch(c2, f->c.X, f->c.y, f->c.Y, B, f->c.loss, NULL), 0);
}

/* Smallest |pre-activation| / |its tangent| over hidden units: the distance to a ReLU kink in
 * units of the step along v. */
static double kink_margin(fixture *f, const double *v) {
  td_curv_jvp(&f->c, v, (double[B * K]){0});
  double worst = INFINITY;
  for (int i = 0; i < f->m->n_layers; i++) {
    if (f->m->layers[i].kind != TD_LAYER_RELU) continue;
    const double *z = f->c.ws.act[i], *rz = f->c.ract[i];
    for (int j = 0; j < B * f->m->layers[i].n_in; j++) {
      double d = fabs(z[j]) / (fabs(rz[j]) + 1e-300);
      if (d < worst) worst = d;
    }
  }
  return worst;
}

static void check_hvp_jvp_fd(td_act act, td_curv_loss loss, int targets) {
  const int hid[2] = {4, 3};
  fixture f;
  make(&f, 2, hid, act, loss, targets, 3);
  td_curv_ctx c2;
  second_ctx(&f, &c2);
  double *v = malloc(f.n * sizeof *v), *hv = malloc(f.n * sizeof *hv),
         *fd = malloc(f.n * sizeof *fd);
  double jv[B * K], fdj[B * K];
  /* ReLU: h = 1e-4 (truncation ~1e-16, rounding ~1e-12) keeps the stencil off the kinks. */
  const double h = act == TD_ACT_RELU ? 1e-4 : 1e-3;
  for (uint64_t s = 0; s < 3; s++) {
    randv(v, f.n, s);
    if (act == TD_ACT_RELU && !(kink_margin(&f, v) > 4 * h))
      fail_msg("kink margin %g along probe %d", kink_margin(&f, v), (int)s);
    td_curv_hvp(&f.c, v, hv);
    fd4(&f, &c2, F_grad, v, f.n, h, fd);
    assert_vec_close(hv, fd, f.n, 1e-8, "hvp vs fd");
    td_curv_jvp(&f.c, v, jv);
    fd4(&f, &c2, F_outputs, v, B * K, h, fdj);
    assert_vec_close(jv, fdj, B * K, 1e-8, "jvp vs fd");
  }
  free(v);
  free(hv);
  free(fd);
  td_curv_deinit(&c2);
  unmake(&f);
}

static void test_fd_tanh_xent(void **s) { (void)s; check_hvp_jvp_fd(TD_ACT_TANH, TD_CURV_XENT, 0); }
static void test_fd_relu_xent(void **s) { (void)s; check_hvp_jvp_fd(TD_ACT_RELU, TD_CURV_XENT, 0); }
static void test_fd_tanh_mse(void **s) { (void)s; check_hvp_jvp_fd(TD_ACT_TANH, TD_CURV_MSE, 1); }
static void test_fd_relu_mse_onehot(void **s) {
  (void)s;
  check_hvp_jvp_fd(TD_ACT_RELU, TD_CURV_MSE, 0);
}

/* Dense matrix of a product: column j = P(e_j). */
typedef void (*prodfn)(td_curv_ctx *c, const double *v, double *out);
static double *dense_of(fixture *f, prodfn P) {
  size_t n = f->n;
  double *A = malloc(n * n * sizeof *A), *e = calloc(n, sizeof *e), *col = malloc(n * sizeof *col);
  for (size_t j = 0; j < n; j++) {
    e[j] = 1.0;
    P(&f->c, e, col);
    e[j] = 0.0;
    for (size_t i = 0; i < n; i++) A[i * n + j] = col[i];
  }
  free(e);
  free(col);
  return A;
}

static void check_dense_hessian(td_act act, td_curv_loss loss) {
  const int hid[2] = {4, 3};
  fixture f;
  make(&f, 2, hid, act, loss, 0, 5);
  const size_t n = f.n;
  double *H = dense_of(&f, td_curv_hvp);
  double scale = maxabs(H, n * n);
  assert_true(scale > 1e-3);
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < i; j++)
      if (!(fabs(H[i * n + j] - H[j * n + i]) <= 1e-12 * scale))
        fail_msg("H not symmetric at (%zu,%zu): %.17g vs %.17g", i, j, H[i * n + j], H[j * n + i]);
  /* Dense finite-difference Hessian, column j = d grad / d theta_j. */
  td_curv_ctx c2;
  second_ctx(&f, &c2);
  double *e = calloc(n, sizeof *e), *col = malloc(n * sizeof *col);
  double *Hfd = malloc(n * n * sizeof *Hfd);
  for (size_t j = 0; j < n; j++) {
    e[j] = 1.0;
    if (act == TD_ACT_RELU) assert_true(kink_margin(&f, e) > 4e-3);
    fd4(&f, &c2, F_grad, e, n, 1e-3, col);
    e[j] = 0.0;
    for (size_t i = 0; i < n; i++) Hfd[i * n + j] = col[i];
  }
  assert_vec_close(H, Hfd, n * n, 1e-8, "dense H vs fd");
  /* The matvec adapter is the same operator, and H v = sum_j H[:, j] v_j. */
  double *v = malloc(n * sizeof *v), *hv = malloc(n * sizeof *hv), *ref = malloc(n * sizeof *ref);
  randv(v, n, 9);
  td_curv_hvp_matvec(&f.c, v, hv, n);
  td_la_gemv(0, (int)n, (int)n, 1.0, H, v, 0.0, ref);
  assert_vec_close(hv, ref, n, 1e-12, "hvp matvec vs dense");
  /* Lanczos (largest algebraic) on the operator vs dsyevd on the dense matrix. */
  double *w = malloc(n * sizeof *w);
  assert_int_equal(td_la_syevd((int)n, H, w, NULL), 0);
  td_lanczos_opts o = td_lanczos_opts_default(2);
  td_lanczos_result res;
  assert_int_equal(td_lanczos_topk(td_curv_hvp_matvec, &f.c, n, &o, &res, NULL), 0);
  assert_true(fabs(res.eigvals[0] - w[n - 1]) <= 1e-9 * fabs(w[n - 1]));
  assert_true(fabs(res.eigvals[1] - w[n - 2]) <= 1e-9 * fabs(w[n - 1]));
  td_lanczos_result_deinit(&res);
  free(w);
  free(v);
  free(hv);
  free(ref);
  free(e);
  free(col);
  free(Hfd);
  free(H);
  td_curv_deinit(&c2);
  unmake(&f);
}

static void test_dense_hessian_tanh_xent(void **s) {
  (void)s;
  check_dense_hessian(TD_ACT_TANH, TD_CURV_XENT);
}
static void test_dense_hessian_relu_mse(void **s) {
  (void)s;
  check_dense_hessian(TD_ACT_RELU, TD_CURV_MSE);
}

/* One linear layer f = W x + b with squared error. Parameter layout (model.h): W (K x D)
 * row-major, index o*D + k, then b, index K*D + o. With xa = [x, 1] (D + 1 features) and
 * C = (1/n) sum_i xa_i xa_i^T, the GGN (= the Hessian, the model being linear) is
 *   G[(o,k), (o',k')] = delta_{o o'} C[k, k'],   k, k' in 0..D (k = D is the bias "feature")
 * i.e. I_K kron (X^T X / n) on the W block alone (outer index o, inner index k, as the
 * row-major layout nests them), the cross block I_K kron (X^T 1 / n) between W_o and b_o,
 * and the bias block I_K. We check every entry. */
static void test_ggn_linear_kron(void **s) {
  (void)s;
  fixture f;
  make(&f, 0, NULL, TD_ACT_RELU, TD_CURV_MSE, 1, 11);
  const size_t n = f.n;
  assert_int_equal(n, (size_t)(K * D + K));
  double C[(D + 1) * (D + 1)];
  for (int k = 0; k <= D; k++)
    for (int l = 0; l <= D; l++) {
      double acc = 0;
      for (int i = 0; i < B; i++)
        acc += (k < D ? f.X[i * D + k] : 1.0) * (l < D ? f.X[i * D + l] : 1.0);
      C[k * (D + 1) + l] = acc / B;
    }
  double *Gref = calloc(n * n, sizeof *Gref);
  for (int o = 0; o < K; o++)
    for (int k = 0; k <= D; k++)
      for (int l = 0; l <= D; l++) {
        size_t a = k < D ? (size_t)(o * D + k) : (size_t)(K * D + o);
        size_t b = l < D ? (size_t)(o * D + l) : (size_t)(K * D + o);
        Gref[a * n + b] = C[k * (D + 1) + l];
      }
  double *G = dense_of(&f, td_curv_ggn_vp), *H = dense_of(&f, td_curv_hvp);
  assert_vec_close(G, Gref, n * n, 1e-13, "GGN vs I kron C");
  assert_vec_close(H, Gref, n * n, 1e-13, "H vs I kron C");
  free(G);
  free(H);
  free(Gref);
  unmake(&f);
}

/* A model with no hidden layer is linear in theta, so H = GGN for cross-entropy too. */
static void test_linear_model_hessian_is_ggn(void **s) {
  (void)s;
  fixture f;
  make(&f, 0, NULL, TD_ACT_RELU, TD_CURV_XENT, 0, 12);
  double *G = dense_of(&f, td_curv_ggn_vp), *H = dense_of(&f, td_curv_hvp);
  assert_vec_close(H, G, f.n * f.n, 1e-13, "H vs GGN (linear model, xent)");
  free(G);
  free(H);
  unmake(&f);
}

static void fisher_true(td_curv_ctx *c, const double *v, double *out) {
  td_curv_fisher_vp(c, TD_CURV_FISHER_TRUE, v, out);
}

/* The true Fisher from its definition: F = (1/B) sum_i sum_c p_ic g_ic g_ic^T, where
 * g_ic = J_i^T (p_i - e_c) is the gradient of -log softmax(z_i)[c]; one per-example VJP per
 * class c gives g_ic for every i. Compared with the dense GGN J^T H_out J. */
static void test_ggn_equals_true_fisher_xent(void **s) {
  (void)s;
  const int hid[2] = {4, 3};
  for (int a = 0; a < 2; a++) {
    fixture f;
    make(&f, 2, hid, a ? TD_ACT_RELU : TD_ACT_TANH, TD_CURV_XENT, 0, 21 + (uint64_t)a);
    const size_t n = f.n;
    double *F = calloc(n * n, sizeof *F), *Gi = malloc((size_t)B * n * sizeof *Gi);
    double U[B * K];
    for (int c = 0; c < K; c++) {
      for (int i = 0; i < B; i++)
        for (int k = 0; k < K; k++) U[i * K + k] = f.c.prob[i * K + k] - (k == c ? 1.0 : 0.0);
      td_curv_per_example_vjp(&f.c, U, Gi);
      for (int i = 0; i < B; i++) {
        double w = f.c.prob[i * K + c] / B;
        const double *g = Gi + (size_t)i * n;
        for (size_t p = 0; p < n; p++)
          for (size_t q = 0; q < n; q++) F[p * n + q] += w * g[p] * g[q];
      }
    }
    double *G = dense_of(&f, td_curv_ggn_vp), *Ft = dense_of(&f, fisher_true);
    assert_vec_close(G, F, n * n, 1e-12, "GGN vs true Fisher (definition)");
    assert_vec_close(Ft, F, n * n, 1e-12, "fisher_vp(TRUE) vs definition");
    /* And the GGN is PSD while H is not in general: smallest eigenvalue >= -1e-12 scale. */
    double *w = malloc(n * sizeof *w);
    assert_int_equal(td_la_syevd((int)n, G, w, NULL), 0);
    assert_true(w[0] >= -1e-12 * fabs(w[n - 1]));
    free(w);
    free(F);
    free(Gi);
    free(G);
    free(Ft);
    unmake(&f);
  }
}

/* Per-example gradients: mean = batch gradient = td_mlp_backward; empirical Fisher product
 * = (1/B) sum_i g_i (g_i . v). */
static void check_per_example(td_act act, td_curv_loss loss, int targets) {
  const int hid[1] = {6};
  fixture f;
  make(&f, 1, hid, act, loss, targets, 31);
  const size_t n = f.n;
  double *G = malloc((size_t)B * n * sizeof *G), *mean = calloc(n, sizeof *mean);
  td_curv_per_example_grads(&f.c, G);
  for (int i = 0; i < B; i++)
    for (size_t p = 0; p < n; p++) mean[p] += G[(size_t)i * n + p] / B;
  const double *g = td_curv_grad(&f.c);
  assert_vec_close(mean, g, n, 1e-12, "mean per-example grad vs batch grad");
  /* Same gradient as the model's own backward pass. */
  td_mlp_ws ws;
  assert_int_equal(td_mlp_ws_init(&ws, f.m, B, NULL), 0);
  double dz[B * K], l = 0;
  const double *z = td_mlp_forward(f.m, &ws, f.m->params, f.X, B);
  if (loss == TD_CURV_XENT) td_loss_xent(&l, dz, z, f.y, B, K);
  else if (targets) td_loss_mse(&l, dz, z, f.Y, B, K);
  else td_loss_mse_onehot(&l, dz, z, f.y, B, K);
  td_mlp_backward(f.m, &ws, f.m->params, dz, B, f.m->grad, 0);
  assert_vec_close(g, f.m->grad, n, 1e-13, "curv grad vs td_mlp_backward");
  assert_true(fabs(l - f.c.loss_value) <= 1e-15 * fabs(l));
  td_mlp_ws_deinit(&ws);
  /* Empirical Fisher. */
  double *v = malloc(n * sizeof *v), *fv = malloc(n * sizeof *fv), *ref = calloc(n, sizeof *ref);
  randv(v, n, 41);
  td_curv_fisher_emp_matvec(&f.c, v, fv, n);
  for (int i = 0; i < B; i++) {
    const double *gi = G + (size_t)i * n;
    double s = td_la_dot(n, gi, v) / B;
    td_la_axpy(n, s, gi, ref);
  }
  assert_vec_close(fv, ref, n, 1e-12, "empirical Fisher vs (1/B) sum g g^T v");
  free(v);
  free(fv);
  free(ref);
  free(G);
  free(mean);
  unmake(&f);
}

static void test_per_example_relu_xent(void **s) {
  (void)s;
  check_per_example(TD_ACT_RELU, TD_CURV_XENT, 0);
}
static void test_per_example_tanh_mse(void **s) {
  (void)s;
  check_per_example(TD_ACT_TANH, TD_CURV_MSE, 1);
}

/* Adjoint identity <u, J v> = <J^T u, v>, and the GGN as J^T (H_out (J v)). */
static void test_vjp_adjoint_and_ggn_composition(void **s) {
  (void)s;
  const int hid[2] = {4, 3};
  fixture f;
  make(&f, 2, hid, TD_ACT_TANH, TD_CURV_XENT, 0, 51);
  const size_t n = f.n;
  double *v = malloc(n * sizeof *v), *jtu = malloc(n * sizeof *jtu), *gv = malloc(n * sizeof *gv);
  double u[B * K], jv[B * K], hjv[B * K];
  randv(v, n, 1);
  randv(u, B * K, 2);
  td_curv_jvp(&f.c, v, jv);
  td_curv_vjp(&f.c, u, jtu);
  double a = td_la_dot(B * K, u, jv), b = td_la_dot(n, jtu, v);
  assert_true(fabs(a - b) <= 1e-12 * (fabs(a) + 1e-300));
  td_curv_loss_hvp(&f.c, jv, hjv);
  td_curv_vjp(&f.c, hjv, jtu);
  td_curv_ggn_matvec(&f.c, v, gv, n);
  assert_vec_close(gv, jtu, n, 1e-13, "ggn vs J^T H_out J v");
  free(v);
  free(jtu);
  free(gv);
  unmake(&f);
}

static void test_errors_and_estimate(void **s) {
  (void)s;
  const int hid[1] = {4};
  fixture f;
  make(&f, 1, hid, TD_ACT_RELU, TD_CURV_XENT, 0, 61);
  td_err err;
  td_curv_ctx c;
  assert_int_equal(td_curv_init(&c, f.m, 0, &err), TD_EINVAL);
  assert_int_equal(td_curv_init(&c, f.m, 2, &err), 0);
  assert_int_equal(td_curv_set_batch(&c, f.X, f.y, NULL, 3, TD_CURV_XENT, &err), TD_EINVAL);
  assert_int_equal(td_curv_set_batch(&c, f.X, NULL, f.Y, 2, TD_CURV_XENT, &err), TD_EINVAL);
  int bad[2] = {0, K};
  assert_int_equal(td_curv_set_batch(&c, f.X, bad, NULL, 2, TD_CURV_XENT, &err), TD_EINVAL);
  assert_int_equal(td_curv_set_point(&c, f.m->params, &err), TD_EINVAL);
  assert_int_equal(td_curv_set_batch(&c, f.X, f.y, NULL, 2, TD_CURV_MSE, &err), 0);
  double *p = malloc(f.n * sizeof *p);
  memcpy(p, f.m->params, f.n * sizeof *p);
  p[f.n - 1] = NAN; /* the output bias (a NaN weight before a ReLU would be masked) */
  assert_int_equal(td_curv_set_point(&c, p, &err), TD_ERANGE);
  free(p);
  td_curv_deinit(&c);
  td_curv_deinit(&c); /* zeroed: no-op */
  td_curv_deinit(NULL);
  double bytes = 0;
  td_mlp_cfg big = {.in_dim = 784, .out_dim = 10, .n_hidden = 1, .hidden = {1000000},
                    .act = TD_ACT_RELU, .init_scale = 1};
  assert_int_equal(td_curv_estimate(&big, 1000, &bytes, &err), 0);
  assert_true(bytes > 1e10); /* estimated without allocating */
  assert_int_equal(td_curv_estimate(&big, 0, &bytes, &err), TD_EINVAL);
  unmake(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fd_tanh_xent),
      cmocka_unit_test(test_fd_relu_xent),
      cmocka_unit_test(test_fd_tanh_mse),
      cmocka_unit_test(test_fd_relu_mse_onehot),
      cmocka_unit_test(test_dense_hessian_tanh_xent),
      cmocka_unit_test(test_dense_hessian_relu_mse),
      cmocka_unit_test(test_ggn_linear_kron),
      cmocka_unit_test(test_linear_model_hessian_is_ggn),
      cmocka_unit_test(test_ggn_equals_true_fisher_xent),
      cmocka_unit_test(test_per_example_relu_xent),
      cmocka_unit_test(test_per_example_tanh_mse),
      cmocka_unit_test(test_vjp_adjoint_and_ggn_composition),
      cmocka_unit_test(test_errors_and_estimate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
