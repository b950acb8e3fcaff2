/* test_norm.c: LayerNorm and BatchNorm layers (model.h) and their curvature support (curv.h):
 * forward against the textbook formulas, running statistics, eval mode, gradients against
 * finite differences, JVP and HVP against finite differences, per-example gradients, the
 * scale-invariance identity under plain GD, and a checkpoint round trip.
 *
 * Tolerances (relative to the largest entry of the reference):
 *  - forward / running statistics against a direct evaluation of the formula: 1e-13 (a few
 *    roundings in a different order).
 *  - gradient, JVP and HVP against FOURTH-order central differences (of the loss / the
 *    outputs / the exact gradient), h = 1e-3 for the gradient and 1e-4 for JVP and HVP: the
 *    normalized network has large high-order derivatives (at h = 1e-3 the HVP difference
 *    still carries a 2e-8 truncation error that shrinks as h^4: 2e-12 at h = 1e-4), and
 *    rounding is O(eps |f| / h) ~ 1e-12 on O(1) values, so 1e-8 is a wide margin that still
 *    catches any missing term (each is O(1)). The activation is tanh (smooth, non-zero second
 *    derivative), so the HVP exercises every term of the norm layers' R-backward, including
 *    the batch coupling of BatchNorm in training mode.
 *  - symmetry u.Hv = v.Hu: 1e-12 (rounding only).
 *  - scale invariance: with eps = 1e-300 (0 would be the exact statement; var + eps == var in
 *    double here) the identity ||w'||^2 = ||w||^2 + lr^2 ||g||^2 holds up to the rounding of
 *    w.g, ~1e-16 ||w|| ||g||: checked to 1e-12 relative over 20 steps. With the default eps
 *    it would be off by O(eps / var) ~ 1e-5, which the test also shows is visible. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/checkpoint.h"
#include "curv/curv.h"
#include "nn/model.h"
#include "base/rng.h"
#include "nn/safetensors.h"

enum { B = 6, D = 4, K = 3 };

typedef struct fixture {
  td_mlp *m;
  td_curv_ctx c;
  double X[B * D];
  int y[B];
  size_t n;
} fixture;

/* A 4-5-4-3 tanh MLP with `norm` after both hidden layers, random non-trivial gamma/beta and
 * biases, BatchNorm running statistics away from their initial 0/1. */
static void make_w(fixture *f, td_norm norm, td_mlp_mode mode, double eps, uint64_t seed, int h0,
                   int h1) {
  memset(f, 0, sizeof *f);
  td_mlp_cfg cfg = {.in_dim = D, .out_dim = K, .n_hidden = 2, .hidden = {h0, h1},
                    .act = TD_ACT_TANH, .init_scale = 1.0, .norm = norm, .norm_eps = eps};
  td_err err;
  assert_int_equal(td_mlp_create(&cfg, &f->m, &err), 0);
  td_mlp_init(f->m, seed);
  td_rng r;
  td_rng_init(&r, seed, TD_RNG_DATA);
  td_rng_fill_normal(&r, f->X, B * D, 1.0);
  for (int j = 0; j < f->m->n_linear; j++) {
    double *b = NULL;
    const td_layer *L = td_mlp_linear(f->m, j, f->m->params, NULL, &b);
    td_rng_fill_normal(&r, b, (size_t)L->n_out, 0.3);
    double *g = NULL, *be = NULL;
    const td_layer *N = td_mlp_norm(f->m, j, f->m->params, &g, &be);
    if (!N) continue;
    for (int k = 0; k < N->n_out; k++) {
      g[k] = 1.0 + 0.5 * td_rng_normal(&r);
      be[k] = 0.3 * td_rng_normal(&r);
    }
    double *rm, *rv, *cnt;
    if (td_mlp_norm_buffers(f->m, j, &rm, &rv, &cnt))
      for (int k = 0; k < N->n_out; k++) {
        rm[k] = 0.2 * td_rng_normal(&r);
        rv[k] = 0.5 + td_rng_uniform(&r);
      }
  }
  for (int i = 0; i < B; i++) f->y[i] = (int)td_rng_below(&r, K);
  f->n = f->m->n_params;
  assert_int_equal(td_curv_init(&f->c, f->m, B, &err), 0);
  td_curv_set_mode(&f->c, mode);
  assert_int_equal(td_curv_set_batch(&f->c, f->X, f->y, NULL, B, TD_CURV_XENT, &err), 0);
  assert_int_equal(td_curv_set_point(&f->c, f->m->params, &err), 0);
}

static void make(fixture *f, td_norm norm, td_mlp_mode mode, double eps, uint64_t seed) {
  make_w(f, norm, mode, eps, seed, 5, 4);
}

static void unmake(fixture *f) {
  td_curv_deinit(&f->c);
  td_mlp_destroy(f->m);
}

static double maxabs(const double *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
  return m;
}

static void close_vec(const double *got, const double *want, size_t n, double rtol,
                      const char *what) {
  double scale = fmax(maxabs(want, n), 1e-300);
  for (size_t i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= rtol * scale))
      fail_msg("%s[%zu]: got %.17g want %.17g (scale %g)", what, i, got[i], want[i], scale);
}

/* Loss at theta + t v (a second context so the fixture's cache stays intact). */
static double loss_at(fixture *f, td_curv_ctx *c2, const double *v, double t, double *grad,
                      double *out) {
  double *p = malloc(f->n * sizeof *p);
  for (size_t i = 0; i < f->n; i++) p[i] = f->m->params[i] + t * v[i];
  assert_int_equal(td_curv_set_point(c2, p, NULL), 0);
  if (grad) memcpy(grad, td_curv_grad(c2), f->n * sizeof *grad);
  if (out) memcpy(out, c2->ws.act[f->m->n_layers], (size_t)B * K * sizeof *out);
  free(p);
  return c2->loss_value;
}

static void ctx2(fixture *f, td_curv_ctx *c2) {
  assert_int_equal(td_curv_init(c2, f->m, B, NULL), 0);
  td_curv_set_mode(c2, f->c.ws.mode);
  assert_int_equal(td_curv_set_batch(c2, f->X, f->y, NULL, B, TD_CURV_XENT, NULL), 0);
}

static const td_norm NORMS[3] = {TD_NORM_LAYERNORM, TD_NORM_BATCHNORM, TD_NORM_BATCHNORM};
static const td_mlp_mode MODES[3] = {TD_MLP_TRAIN, TD_MLP_TRAIN, TD_MLP_EVAL};

/* Forward kernels against the formulas, written out naively. */
static void test_forward_formulas(void **state) {
  (void)state;
  enum { R = 5, N = 4 };
  double x[R * N], g[N], be[N], out[R * N], xh[R * N], rs[R > N ? R : N];
  td_rng r;
  td_rng_init(&r, 3, TD_RNG_DATA);
  td_rng_fill_normal(&r, x, R * N, 2.0);
  for (int j = 0; j < N; j++) {
    g[j] = 1 + 0.3 * j;
    be[j] = -0.1 * j;
  }
  const double eps = 1e-5;
  td_layernorm_forward(out, xh, rs, x, g, be, R, N, eps);
  for (int i = 0; i < R; i++) {
    double mu = 0, var = 0;
    for (int j = 0; j < N; j++) mu += x[i * N + j] / N;
    for (int j = 0; j < N; j++) var += (x[i * N + j] - mu) * (x[i * N + j] - mu) / N;
    for (int j = 0; j < N; j++) {
      double want = g[j] * (x[i * N + j] - mu) / sqrt(var + eps) + be[j];
      assert_true(fabs(out[i * N + j] - want) <= 1e-13 * fmax(1, fabs(want)));
    }
  }
  /* batchnorm, training, with the running update (momentum 0.1, unbiased variance) */
  double rm[N] = {0.5, 0, 0, -1}, rv[N] = {1, 2, 1, 0.5}, cnt = 3;
  double rm0[N], rv0[N];
  memcpy(rm0, rm, sizeof rm);
  memcpy(rv0, rv, sizeof rv);
  td_batchnorm_forward(out, xh, rs, rm, rv, &cnt, x, g, be, R, N, eps, 0.1, 1);
  assert_true(cnt == 4);
  for (int j = 0; j < N; j++) {
    double mu = 0, ss = 0;
    for (int i = 0; i < R; i++) mu += x[i * N + j] / R;
    for (int i = 0; i < R; i++) ss += (x[i * N + j] - mu) * (x[i * N + j] - mu);
    for (int i = 0; i < R; i++) {
      double want = g[j] * (x[i * N + j] - mu) / sqrt(ss / R + eps) + be[j];
      assert_true(fabs(out[i * N + j] - want) <= 1e-13 * fmax(1, fabs(want)));
    }
    assert_true(fabs(rm[j] - (0.9 * rm0[j] + 0.1 * mu)) <= 1e-14);
    assert_true(fabs(rv[j] - (0.9 * rv0[j] + 0.1 * ss / (R - 1))) <= 1e-13 * rv[j]);
  }
  /* eval: the running statistics, untouched */
  double rm1[N], rv1[N];
  memcpy(rm1, rm, sizeof rm);
  memcpy(rv1, rv, sizeof rv);
  td_batchnorm_forward(out, xh, rs, rm, rv, &cnt, x, g, be, R, N, eps, 0.1, 0);
  assert_memory_equal(rm, rm1, sizeof rm);
  assert_memory_equal(rv, rv1, sizeof rv);
  for (int i = 0; i < R; i++)
    for (int j = 0; j < N; j++) {
      double want = g[j] * (x[i * N + j] - rm[j]) / sqrt(rv[j] + eps) + be[j];
      assert_true(fabs(out[i * N + j] - want) <= 1e-13 * fmax(1, fabs(want)));
    }
  /* B = 1 in training: xhat = 0 (out = beta), running statistics unchanged */
  td_batchnorm_forward(out, xh, rs, rm, rv, &cnt, x, g, be, 1, N, eps, 0.1, 1);
  assert_memory_equal(rm, rm1, sizeof rm);
  for (int j = 0; j < N; j++) assert_true(out[j] == be[j]);
}

/* BatchNorm over 300 features (more than one 256-column block of model.c): forward and the
 * input gradient against the naive per-column formulas, dinp = rstd (u - mean u - xhat
 * mean(xhat u)) with u = dout gamma. */
static void test_batchnorm_wide(void **state) {
  (void)state;
  enum { R = 3, N = 300 };
  static double x[R * N], dout[R * N], out[R * N], xh[R * N], din[R * N], rs[N];
  double g[N], be[N], dg[N], db[N];
  td_rng r;
  td_rng_init(&r, 4, TD_RNG_DATA);
  td_rng_fill_normal(&r, x, R * N, 1.5);
  td_rng_fill_normal(&r, dout, R * N, 1.0);
  td_rng_fill_normal(&r, g, N, 1.0);
  td_rng_fill_normal(&r, be, N, 1.0);
  const double eps = 1e-5;
  td_batchnorm_forward(out, xh, rs, NULL, NULL, NULL, x, g, be, R, N, eps, 0.1, 1);
  memset(din, 0, sizeof din);
  memset(dg, 0, sizeof dg);
  memset(db, 0, sizeof db);
  td_batchnorm_backward(din, dg, db, dout, xh, rs, g, R, N, 1);
  for (int j = 0; j < N; j++) {
    double mu = 0, var = 0, su = 0, shu = 0, sdg = 0, sdb = 0, hh[R];
    for (int i = 0; i < R; i++) mu += x[i * N + j] / R;
    for (int i = 0; i < R; i++) var += (x[i * N + j] - mu) * (x[i * N + j] - mu) / R;
    const double rr = 1 / sqrt(var + eps);
    for (int i = 0; i < R; i++) {
      hh[i] = (x[i * N + j] - mu) * rr;
      double want = g[j] * hh[i] + be[j];
      assert_true(fabs(out[i * N + j] - want) <= 1e-13 * fmax(1, fabs(want)));
      double u = dout[i * N + j] * g[j];
      su += u / R;
      shu += hh[i] * u / R;
      sdg += dout[i * N + j] * hh[i];
      sdb += dout[i * N + j];
    }
    for (int i = 0; i < R; i++) {
      double want = rr * (dout[i * N + j] * g[j] - su - hh[i] * shu);
      assert_true(fabs(din[i * N + j] - want) <= 1e-12 * fmax(1, fabs(want)));
    }
    assert_true(fabs(dg[j] - sdg) <= 1e-13 * fmax(1, fabs(sdg)));
    assert_true(fabs(db[j] - sdb) <= 1e-13 * fmax(1, fabs(sdb)));
  }
}

/* The model: layer list, init, the running statistics move only with update_running. */
static void test_model_layout(void **state) {
  (void)state;
  td_mlp_cfg cfg = {.in_dim = 3, .out_dim = 2, .n_hidden = 2, .hidden = {4, 5},
                    .act = TD_ACT_RELU, .init_scale = 1.0, .norm = TD_NORM_BATCHNORM};
  td_mlp *m = NULL;
  assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
  assert_int_equal(m->n_layers, 7); /* lin, bn, relu, lin, bn, relu, lin */
  assert_int_equal(m->layers[1].kind, TD_LAYER_BATCHNORM);
  assert_int_equal(m->n_norm, 2);
  assert_int_equal(m->n_params, (3 * 4 + 4) + 8 + (4 * 5 + 5) + 10 + (5 * 2 + 2));
  assert_int_equal(m->n_buffers, 9 + 11);
  assert_true(m->norm_eps == 1e-5);
  assert_true(td_mlp_scale_invariant(m, 0) && td_mlp_scale_invariant(m, 1));
  assert_false(td_mlp_scale_invariant(m, 2));
  double np = 0, wsb = 0;
  assert_int_equal(td_mlp_estimate(&cfg, 8, &np, &wsb, NULL), 0);
  assert_true(np == (double)m->n_params);
  /* the weights are those of the same model without norm (no extra draws) */
  td_mlp_cfg plain = cfg;
  plain.norm = TD_NORM_NONE;
  td_mlp *m0 = NULL;
  assert_int_equal(td_mlp_create(&plain, &m0, NULL), 0);
  td_mlp_init(m, 7);
  td_mlp_init(m0, 7);
  for (int j = 0; j < 3; j++) {
    double *W, *W0;
    const td_layer *L = td_mlp_linear(m, j, m->params, &W, NULL);
    td_mlp_linear(m0, j, m0->params, &W0, NULL);
    assert_memory_equal(W, W0, (size_t)L->n_in * L->n_out * sizeof *W);
  }
  double *g, *be, *rm, *rv, *cnt;
  td_mlp_norm(m, 1, m->params, &g, &be);
  td_mlp_norm_buffers(m, 1, &rm, &rv, &cnt);
  for (int k = 0; k < 5; k++) assert_true(g[k] == 1 && be[k] == 0 && rm[k] == 0 && rv[k] == 1);
  td_mlp_ws ws;
  assert_int_equal(td_mlp_ws_init(&ws, m, 4, NULL), 0);
  double X[12] = {1, 2, 3, -1, 0, 2, 0.5, 0.5, -2, 3, 1, 0};
  td_mlp_forward(m, &ws, m->params, X, 4);
  assert_true(rm[0] == 0 && rv[0] == 1 && *cnt == 0); /* no update_running */
  td_mlp_ws_set_mode(&ws, TD_MLP_TRAIN, 1);
  td_mlp_forward(m, &ws, m->params, X, 4);
  assert_true(*cnt == 1);
  td_mlp_ws_set_mode(&ws, TD_MLP_EVAL, 1); /* update_running is ignored in eval */
  assert_int_equal(ws.update_running, 0);
  double rm_copy[5];
  memcpy(rm_copy, rm, sizeof rm_copy);
  td_mlp_forward(m, &ws, m->params, X, 4);
  assert_memory_equal(rm, rm_copy, sizeof rm_copy);
  td_mlp_ws_deinit(&ws);
  td_mlp_destroy(m);
  td_mlp_destroy(m0);
  td_err err;
  cfg.norm = (td_norm)7;
  assert_int_equal(td_mlp_create(&cfg, &m, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.model.norm");
  td_norm nm;
  assert_int_equal(td_mlp_norm_parse("layernorm", &nm), 0);
  assert_int_equal(nm, TD_NORM_LAYERNORM);
  assert_int_equal(td_mlp_norm_parse("groupnorm", &nm), TD_EINVAL);
}

/* Gradient (curv backward and td_mlp_backward) against differences of the loss. */
static void test_grad_fd(void **state) {
  (void)state;
  for (int c = 0; c < 3; c++) {
    fixture f;
    make(&f, NORMS[c], MODES[c], 0, 11 + c);
    const double *g = td_curv_grad(&f.c);
    /* td_mlp_backward through the model workspace gives the same gradient */
    td_mlp_ws ws;
    assert_int_equal(td_mlp_ws_init(&ws, f.m, B, NULL), 0);
    td_mlp_ws_set_mode(&ws, MODES[c], 0);
    const double *z = td_mlp_forward(f.m, &ws, f.m->params, f.X, B);
    close_vec(z, f.c.ws.act[f.m->n_layers], (size_t)B * K, 1e-15, "forward");
    double *dz = malloc(B * K * sizeof *dz), *g2 = malloc(f.n * sizeof *g2);
    memcpy(dz, f.c.delta[f.m->n_layers], B * K * sizeof *dz);
    td_mlp_backward(f.m, &ws, f.m->params, dz, B, g2, 0);
    close_vec(g2, g, f.n, 1e-13, "mlp_backward");
    td_curv_ctx c2;
    ctx2(&f, &c2);
    double *e = calloc(f.n, sizeof *e), *fd = malloc(f.n * sizeof *fd);
    const double h = 1e-3;
    for (size_t i = 0; i < f.n; i++) {
      e[i] = 1;
      double a = loss_at(&f, &c2, e, h, NULL, NULL), b = loss_at(&f, &c2, e, -h, NULL, NULL);
      double a2 = loss_at(&f, &c2, e, 2 * h, NULL, NULL), b2 = loss_at(&f, &c2, e, -2 * h, NULL, NULL);
      fd[i] = (8 * (a - b) - (a2 - b2)) / (12 * h);
      e[i] = 0;
    }
    close_vec(g, fd, f.n, 1e-8, c == 0 ? "grad LN" : c == 1 ? "grad BN train" : "grad BN eval");
    /* the mean of the per-example gradients is the gradient (where they are defined) */
    double *G = malloc((size_t)B * f.n * sizeof *G);
    td_curv_per_example_grads(&f.c, G);
    if (c == 1) {
      assert_int_equal(td_curv_per_example_supported(&f.c), 0);
      assert_true(isnan(G[0]) && isnan(G[(size_t)B * f.n - 1]));
    } else {
      assert_int_equal(td_curv_per_example_supported(&f.c), 1);
      for (size_t i = 0; i < f.n; i++) {
        double s = 0;
        for (int r = 0; r < B; r++) s += G[(size_t)r * f.n + i] / B;
        fd[i] = s;
      }
      close_vec(fd, g, f.n, 1e-13, "per-example mean");
    }
    free(G);
    free(e);
    free(fd);
    free(dz);
    free(g2);
    td_mlp_ws_deinit(&ws);
    td_curv_deinit(&c2);
    unmake(&f);
  }
}

/* JVP against differences of the outputs, HVP against differences of the exact gradient,
 * HVP symmetry, and <u, J v> = <J^T u, v>. wide != 0 uses hidden widths 300 and 260, so
 * that the column blocks of the BatchNorm kernels (256 in model.c, 128 in curv.c) are
 * crossed; the gradient is then checked along v (g.v against the difference of the loss). */
static void jvp_hvp_fd(int wide) {
  for (int c = 0; c < 3; c++) {
    fixture f;
    if (wide) make_w(&f, NORMS[c], MODES[c], 0, 51 + c, 300, 260);
    else make(&f, NORMS[c], MODES[c], 0, 21 + c);
    td_curv_ctx c2;
    ctx2(&f, &c2);
    double *v = malloc(f.n * sizeof *v), *u = malloc(f.n * sizeof *u);
    td_rng r;
    td_rng_init(&r, 99 + c, TD_RNG_DATA);
    /* ||v|| ~ 10 in both sizes, so the differences see the same scale of variation */
    td_rng_fill_normal(&r, v, f.n, wide ? sqrt(100.0 / f.n) : 1.0);
    td_rng_fill_normal(&r, u, f.n, wide ? sqrt(100.0 / f.n) : 1.0);
    const double h = 1e-4;
    double jv[B * K], fp[B * K], fm[B * K], fp2[B * K], fm2[B * K], fdj[B * K];
    td_curv_jvp(&f.c, v, jv);
    loss_at(&f, &c2, v, h, NULL, fp);
    loss_at(&f, &c2, v, -h, NULL, fm);
    loss_at(&f, &c2, v, 2 * h, NULL, fp2);
    loss_at(&f, &c2, v, -2 * h, NULL, fm2);
    for (int k = 0; k < B * K; k++) fdj[k] = (8 * (fp[k] - fm[k]) - (fp2[k] - fm2[k])) / (12 * h);
    close_vec(jv, fdj, B * K, 1e-8, "jvp");
    /* <w, J v> = <J^T w, v> */
    double w[B * K], *jtw = malloc(f.n * sizeof *jtw);
    td_rng_fill_normal(&r, w, B * K, 1.0);
    td_curv_vjp(&f.c, w, jtw);
    double l = 0, rr = 0;
    for (int k = 0; k < B * K; k++) l += w[k] * jv[k];
    for (size_t i = 0; i < f.n; i++) rr += jtw[i] * v[i];
    assert_true(fabs(l - rr) <= 1e-12 * fmax(1, fabs(l)));
    /* HVP */
    double *hv = malloc(f.n * sizeof *hv), *hu = malloc(f.n * sizeof *hu);
    double *ga = malloc(f.n * sizeof *ga), *gb = malloc(f.n * sizeof *gb);
    double *ga2 = malloc(f.n * sizeof *ga2), *gb2 = malloc(f.n * sizeof *gb2);
    double *fd = malloc(f.n * sizeof *fd);
    td_curv_hvp(&f.c, v, hv);
    loss_at(&f, &c2, v, h, ga, NULL);
    loss_at(&f, &c2, v, -h, gb, NULL);
    loss_at(&f, &c2, v, 2 * h, ga2, NULL);
    loss_at(&f, &c2, v, -2 * h, gb2, NULL);
    for (size_t i = 0; i < f.n; i++) fd[i] = (8 * (ga[i] - gb[i]) - (ga2[i] - gb2[i])) / (12 * h);
    close_vec(hv, fd, f.n, 1e-8, c == 0 ? "hvp LN" : c == 1 ? "hvp BN train" : "hvp BN eval");
    if (wide) { /* directional derivative of the loss */
      const double *g = td_curv_grad(&f.c);
      double gv = 0;
      for (size_t i = 0; i < f.n; i++) gv += g[i] * v[i];
      double a = loss_at(&f, &c2, v, h, NULL, NULL), b = loss_at(&f, &c2, v, -h, NULL, NULL);
      double a2 = loss_at(&f, &c2, v, 2 * h, NULL, NULL), b2 = loss_at(&f, &c2, v, -2 * h, NULL, NULL);
      double fdv = (8 * (a - b) - (a2 - b2)) / (12 * h);
      if (!(fabs(gv - fdv) <= 1e-8 * fmax(1, fabs(fdv)))) fail_msg("g.v %.17g vs %.17g", gv, fdv);
    }
    td_curv_hvp(&f.c, u, hu);
    double uhv = 0, vhu = 0;
    for (size_t i = 0; i < f.n; i++) {
      uhv += u[i] * hv[i];
      vhu += v[i] * hu[i];
    }
    assert_true(fabs(uhv - vhu) <= 1e-12 * fmax(1, fabs(uhv)));
    free(v);
    free(u);
    free(jtw);
    free(hv);
    free(hu);
    free(ga);
    free(gb);
    free(ga2);
    free(gb2);
    free(fd);
    td_curv_deinit(&c2);
    unmake(&f);
  }
}

static void test_jvp_hvp_fd(void **state) {
  (void)state;
  jvp_hvp_fd(0);
}

static void test_jvp_hvp_fd_wide(void **state) {
  (void)state;
  jvp_hvp_fd(1);
}

/* Scale invariance: for w = (W_0, b_0), the linear layer before a norm layer, w.g = 0 and
 * plain GD gives ||w_{t+1}||^2 = ||w_t||^2 + lr^2 ||g_t||^2. */
static void test_scale_invariance(void **state) {
  (void)state;
  for (int c = 0; c < 2; c++) {
    fixture f;
    make(&f, NORMS[c], TD_MLP_TRAIN, 1e-300, 31 + c);
    const td_layer *L = td_mlp_linear(f.m, 0, f.m->params, NULL, NULL);
    const size_t off = L->off, len = L->n_params;
    const double lr = 0.3;
    double *p = malloc(f.n * sizeof *p);
    memcpy(p, f.m->params, f.n * sizeof *p);
    for (int t = 0; t < 20; t++) {
      assert_int_equal(td_curv_set_point(&f.c, p, NULL), 0);
      const double *g = td_curv_grad(&f.c);
      double w2 = 0, g2 = 0, wg = 0, n2 = 0;
      for (size_t i = off; i < off + len; i++) {
        w2 += p[i] * p[i];
        g2 += g[i] * g[i];
        wg += p[i] * g[i];
      }
      assert_true(fabs(wg) <= 1e-13 * sqrt(w2 * g2));
      for (size_t i = 0; i < f.n; i++) p[i] -= lr * g[i];
      for (size_t i = off; i < off + len; i++) n2 += p[i] * p[i];
      if (!(fabs(n2 - (w2 + lr * lr * g2)) <= 1e-12 * n2))
        fail_msg("norm %d step %d: %.17g vs %.17g", c, t, n2, w2 + lr * lr * g2);
    }
    /* with the default eps the orthogonality is only approximate (relative O(eps/var)) */
    free(p);
    unmake(&f);
  }
}

/* safetensors round trip: parameters and running statistics, names, cfg inference. */
static void test_checkpoint_roundtrip(void **state) {
  (void)state;
  fixture f;
  make(&f, TD_NORM_BATCHNORM, TD_MLP_TRAIN, 0, 41);
  unsigned char *buf = NULL;
  size_t len = 0;
  assert_int_equal(td_checkpoint_save(f.m, f.m->params, NULL, &buf, &len, NULL), 0);
  td_mlp_cfg cfg;
  assert_int_equal(td_checkpoint_cfg(buf, len, &cfg, NULL), 0);
  assert_int_equal(cfg.norm, TD_NORM_BATCHNORM);
  assert_true(cfg.norm_eps == 1e-5);
  assert_int_equal(cfg.n_hidden, 2);
  td_mlp *m2 = NULL;
  assert_int_equal(td_mlp_create(&cfg, &m2, NULL), 0);
  assert_int_equal(td_checkpoint_load(m2, buf, len, m2->params, NULL), 0);
  assert_memory_equal(m2->params, f.m->params, f.n * sizeof(double));
  assert_int_equal(m2->n_buffers, f.m->n_buffers);
  assert_memory_equal(m2->buffers, f.m->buffers, f.m->n_buffers * sizeof(double));
  td_safetensors *st = NULL;
  assert_int_equal(td_safetensors_parse(buf, len, &st, NULL), 0);
  assert_non_null(td_safetensors_find(st, "norms.1.running_var"));
  assert_non_null(td_safetensors_find(st, "norms.0.num_batches_tracked"));
  assert_non_null(td_safetensors_find(st, "layers.2.bias"));
  assert_null(td_safetensors_find(st, "norms.2.weight"));
  assert_int_equal(td_safetensors_count(st), 3 * 2 + 2 * 5);
  td_safetensors_destroy(st);
  /* a model without norm refuses the file (unexpected tensors) and stays unchanged */
  cfg.norm = TD_NORM_NONE;
  td_mlp *m3 = NULL;
  assert_int_equal(td_mlp_create(&cfg, &m3, NULL), 0);
  td_err err;
  assert_int_equal(td_checkpoint_load(m3, buf, len, m3->params, &err), TD_EINVAL);
  for (size_t i = 0; i < m3->n_params; i++) assert_true(m3->params[i] == 0);
  free(buf);
  td_mlp_destroy(m2);
  td_mlp_destroy(m3);
  unmake(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forward_formulas), cmocka_unit_test(test_batchnorm_wide),
      cmocka_unit_test(test_model_layout),
      cmocka_unit_test(test_grad_fd),          cmocka_unit_test(test_jvp_hvp_fd),
      cmocka_unit_test(test_jvp_hvp_fd_wide),
      cmocka_unit_test(test_scale_invariance), cmocka_unit_test(test_checkpoint_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
