/* test_model.c: finite-difference gradient checks of every layer kernel and of the whole MLP
 * (relu, tanh, linear activations; cross-entropy and squared error), the accumulate and
 * overwrite modes of backward, the flat parameter layout, init statistics and estimates.
 *
 * Tolerances: central differences with step h have truncation error O(h^2 f''') and
 * rounding error O(eps |f| / h). For the linear layer (L linear in every argument) only
 * rounding remains: h = 1e-6 gives ~1e-10, we allow 1e-7. For tanh and the full MLP,
 * h = 1e-5 gives truncation ~1e-10 and rounding ~1e-11 on O(1) values; we allow a relative
 * error of 1e-6 (abs floor 1e-8). ReLU inputs are kept at |x| >= 1e-2 in the kernel test so
 * that no difference straddles the kink; in the MLP test a kink crossing has probability
 * ~1e-6 per run for a fixed seed (and the seed is fixed, so the test is deterministic). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "base/rng.h"

static void fill(td_rng *r, double *x, size_t n, double s) { td_rng_fill_normal(r, x, n, s); }

static double dotv(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

static void assert_close(double got, double want, double rtol, double atol, const char *what,
                         size_t i) {
  if (!(fabs(got - want) <= atol + rtol * fabs(want)))
    fail_msg("%s[%zu]: got %.12g want %.12g", what, i, got, want);
}

/* L = <G, linear(inp; W, b)>: dL/dW = G^T inp, dL/db = colsum G, dL/dinp = G W. */
static double lin_obj(const double *inp, const double *W, const double *b, const double *G, int B,
                      int ni, int no, double *tmp) {
  td_linear_forward(tmp, inp, W, b, B, ni, no);
  return dotv(tmp, G, (size_t)B * no);
}

static void test_linear_fd(void **state) {
  (void)state;
  enum { B = 3, NI = 5, NO = 4 };
  td_rng r;
  td_rng_init(&r, 1, 0);
  double inp[B * NI], W[NO * NI], b[NO], G[B * NO], tmp[B * NO];
  fill(&r, inp, B * NI, 1);
  fill(&r, W, NO * NI, 1);
  fill(&r, b, NO, 1);
  fill(&r, G, B * NO, 1);
  double dinp[B * NI] = {0}, dW[NO * NI] = {0}, db[NO] = {0};
  td_linear_backward(dinp, dW, db, G, inp, W, B, NI, NO);
  const double h = 1e-6;
  struct { double *x, *g; size_t n; const char *name; } v[3] = {
      {inp, dinp, B * NI, "dinp"}, {W, dW, NO * NI, "dW"}, {b, db, NO, "db"}};
  for (int k = 0; k < 3; k++)
    for (size_t i = 0; i < v[k].n; i++) {
      double x0 = v[k].x[i];
      v[k].x[i] = x0 + h;
      double lp = lin_obj(inp, W, b, G, B, NI, NO, tmp);
      v[k].x[i] = x0 - h;
      double lm = lin_obj(inp, W, b, G, B, NI, NO, tmp);
      v[k].x[i] = x0;
      assert_close(v[k].g[i], (lp - lm) / (2 * h), 0, 1e-7, v[k].name, i);
    }
  /* Backward accumulates: a second call doubles every gradient. */
  double dW1[NO * NI];
  memcpy(dW1, dW, sizeof dW);
  td_linear_backward(dinp, dW, db, G, inp, W, B, NI, NO);
  for (int i = 0; i < NO * NI; i++) assert_true(fabs(dW[i] - 2 * dW1[i]) <= 1e-14 * fabs(dW1[i]) + 1e-300);
  /* dinp = NULL skips the input gradient. */
  td_linear_backward(NULL, dW, db, G, inp, W, B, NI, NO);
}

static void test_activations_fd(void **state) {
  (void)state;
  enum { N = 40 };
  td_rng r;
  td_rng_init(&r, 2, 0);
  double x[N], G[N], out[N], dx[N];
  fill(&r, x, N, 1);
  fill(&r, G, N, 1);
  for (int i = 0; i < N; i++)
    if (fabs(x[i]) < 1e-2) x[i] = x[i] < 0 ? -0.5 : 0.5; /* away from the ReLU kink */
  for (int act = 0; act < 2; act++) {
    const double h = act == 0 ? 1e-6 : 1e-5;
    if (act == 0) td_relu_forward(out, x, N);
    else td_tanh_forward(out, x, N);
    memset(dx, 0, sizeof dx);
    if (act == 0) td_relu_backward(dx, G, x, N);
    else td_tanh_backward(dx, G, out, N);
    for (int i = 0; i < N; i++) {
      double xp = x[i] + h, xm = x[i] - h, fp, fm;
      if (act == 0) {
        fp = xp > 0 ? xp : 0;
        fm = xm > 0 ? xm : 0;
      } else {
        fp = tanh(xp);
        fm = tanh(xm);
      }
      assert_close(dx[i], G[i] * (fp - fm) / (2 * h), 1e-6, 1e-8, act ? "tanh" : "relu", (size_t)i);
    }
    /* accumulate */
    double dx1[N];
    memcpy(dx1, dx, sizeof dx);
    if (act == 0) td_relu_backward(dx, G, x, N);
    else td_tanh_backward(dx, G, out, N);
    for (int i = 0; i < N; i++) assert_true(fabs(dx[i] - 2 * dx1[i]) <= 1e-15 * fabs(dx1[i]) + 1e-300);
  }
  /* ReLU at exactly 0: value 0, derivative taken as 0. */
  double z = 0.0, o, g = 1.0, d = 0.0;
  td_relu_forward(&o, &z, 1);
  td_relu_backward(&d, &g, &z, 1);
  assert_true(o == 0.0 && d == 0.0);
}

typedef struct {
  td_mlp *m;
  td_mlp_ws *ws;
  const double *X;
  const int *y;
  const double *T;
  int B, use_mse;
} obj_ctx;

static double model_loss(const obj_ctx *c, double *dz) {
  const double *z = td_mlp_forward(c->m, c->ws, c->m->params, c->X, c->B);
  double l;
  int K = c->m->cfg.out_dim;
  if (c->T) td_loss_mse(&l, dz, z, c->T, c->B, K);
  else if (c->use_mse) td_loss_mse_onehot(&l, dz, z, c->y, c->B, K);
  else td_loss_xent(&l, dz, z, c->y, c->B, K);
  return l;
}

static void mlp_fd_case(td_act act, int loss_kind /* 0 xent, 1 mse one-hot, 2 mse targets */,
                        int n_hidden) {
  enum { B = 6, D = 5, K = 3 };
  td_mlp_cfg cfg = {.in_dim = D, .out_dim = K, .n_hidden = n_hidden, .hidden = {4, 3},
                    .act = act, .init_scale = 1.0};
  td_mlp *m;
  td_mlp_ws ws;
  assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
  assert_int_equal(td_mlp_ws_init(&ws, m, B + 2, NULL), 0);
  td_mlp_init(m, 3);
  td_rng r;
  td_rng_init(&r, 4, 0);
  /* Non-zero biases so their gradients are exercised away from the init. */
  fill(&r, m->params, m->n_params, 0.5);
  double X[B * D], T[B * K], dz[B * K];
  int y[B];
  fill(&r, X, B * D, 1);
  fill(&r, T, B * K, 1);
  for (int i = 0; i < B; i++) y[i] = (int)td_rng_below(&r, K);
  obj_ctx c = {m, &ws, X, y, loss_kind == 2 ? T : NULL, B, loss_kind == 1};
  model_loss(&c, dz);
  double *g = malloc(m->n_params * sizeof *g);
  for (size_t i = 0; i < m->n_params; i++) g[i] = 123.0; /* overwrite mode ignores this */
  td_mlp_backward(m, &ws, m->params, dz, B, g, 0);
  const double h = 1e-5;
  for (size_t i = 0; i < m->n_params; i++) {
    double p0 = m->params[i];
    m->params[i] = p0 + h;
    double lp = model_loss(&c, NULL);
    m->params[i] = p0 - h;
    double lm = model_loss(&c, NULL);
    m->params[i] = p0;
    assert_close(g[i], (lp - lm) / (2 * h), 1e-6, 1e-8, "mlp grad", i);
  }
  /* accumulate mode adds: g + g */
  model_loss(&c, dz);
  double *g2 = malloc(m->n_params * sizeof *g2);
  memcpy(g2, g, m->n_params * sizeof *g);
  td_mlp_backward(m, &ws, m->params, dz, B, g2, 1);
  for (size_t i = 0; i < m->n_params; i++)
    assert_true(fabs(g2[i] - 2 * g[i]) <= 1e-14 * fabs(g[i]) + 1e-300);
  free(g);
  free(g2);
  td_mlp_ws_deinit(&ws);
  td_mlp_destroy(m);
}

static void test_mlp_fd_relu_xent(void **s) { (void)s; mlp_fd_case(TD_ACT_RELU, 0, 2); }
static void test_mlp_fd_tanh_xent(void **s) { (void)s; mlp_fd_case(TD_ACT_TANH, 0, 2); }
static void test_mlp_fd_linear_mse(void **s) { (void)s; mlp_fd_case(TD_ACT_LINEAR, 1, 2); }
static void test_mlp_fd_tanh_mse_targets(void **s) { (void)s; mlp_fd_case(TD_ACT_TANH, 2, 1); }
static void test_mlp_fd_no_hidden(void **s) { (void)s; mlp_fd_case(TD_ACT_RELU, 0, 0); }

/* The flat layout: W_j (out x in) row-major then b_j, layers in order; forward equals a
 * hand-written loop over that layout. Exact up to summation order (1e-12). */
static void test_layout_and_forward(void **state) {
  (void)state;
  td_mlp_cfg cfg = {.in_dim = 3, .out_dim = 2, .n_hidden = 1, .hidden = {4},
                    .act = TD_ACT_TANH, .init_scale = 1.0};
  td_mlp *m;
  td_mlp_ws ws;
  assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
  assert_int_equal(m->n_params, (size_t)(3 * 4 + 4 + 4 * 2 + 2));
  assert_int_equal(m->n_linear, 2);
  assert_int_equal(m->n_layers, 3);
  double *W0, *b0, *W1, *b1;
  assert_non_null(td_mlp_linear(m, 0, m->params, &W0, &b0));
  assert_non_null(td_mlp_linear(m, 1, m->params, &W1, &b1));
  assert_null(td_mlp_linear(m, 2, m->params, NULL, NULL));
  assert_ptr_equal(W0, m->params);
  assert_ptr_equal(b0, m->params + 12);
  assert_ptr_equal(W1, m->params + 16);
  assert_ptr_equal(b1, m->params + 24);
  td_rng r;
  td_rng_init(&r, 9, 0);
  fill(&r, m->params, m->n_params, 1);
  double x[2 * 3];
  fill(&r, x, 6, 1);
  assert_int_equal(td_mlp_ws_init(&ws, m, 2, NULL), 0);
  const double *z = td_mlp_forward(m, &ws, m->params, x, 2);
  for (int s = 0; s < 2; s++) {
    double hdn[4];
    for (int o = 0; o < 4; o++) {
      double a = b0[o];
      for (int i = 0; i < 3; i++) a += W0[o * 3 + i] * x[s * 3 + i];
      hdn[o] = tanh(a);
    }
    for (int o = 0; o < 2; o++) {
      double a = b1[o];
      for (int i = 0; i < 4; i++) a += W1[o * 4 + i] * hdn[i];
      assert_close(z[s * 2 + o], a, 1e-12, 1e-12, "forward", (size_t)o);
    }
  }
  /* pre-activations stay in the workspace: act[1] is the linear output, act[2] its tanh */
  for (int i = 0; i < 8; i++) assert_close(ws.act[2][i], tanh(ws.act[1][i]), 1e-15, 0, "act", (size_t)i);
  td_mlp_ws_deinit(&ws);
  td_mlp_destroy(m);
}

/* He init: std sqrt(2/in) before a ReLU, LeCun sqrt(1/in) for the output layer; biases 0;
 * same seed, same parameters. The sample std of N normals has relative sd 1/sqrt(2N); with
 * N = 200*100 that is 0.5%; we allow 3%. */
static void test_init(void **state) {
  (void)state;
  td_mlp_cfg cfg = {.in_dim = 200, .out_dim = 100, .n_hidden = 1, .hidden = {100},
                    .act = TD_ACT_RELU, .init_scale = 0.5};
  td_mlp *a, *b;
  assert_int_equal(td_mlp_create(&cfg, &a, NULL), 0);
  assert_int_equal(td_mlp_create(&cfg, &b, NULL), 0);
  td_mlp_init(a, 17);
  td_mlp_init(b, 17);
  assert_memory_equal(a->params, b->params, a->n_params * sizeof(double));
  double *W, *bias;
  const td_layer *L = td_mlp_linear(a, 0, a->params, &W, &bias);
  double s2 = 0;
  for (int i = 0; i < L->n_in * L->n_out; i++) s2 += W[i] * W[i];
  double sd = sqrt(s2 / (L->n_in * L->n_out));
  assert_true(fabs(sd / (0.5 * sqrt(2.0 / 200)) - 1) < 0.03);
  for (int i = 0; i < L->n_out; i++) assert_true(bias[i] == 0.0);
  L = td_mlp_linear(a, 1, a->params, &W, &bias);
  s2 = 0;
  for (int i = 0; i < L->n_in * L->n_out; i++) s2 += W[i] * W[i];
  sd = sqrt(s2 / (L->n_in * L->n_out));
  assert_true(fabs(sd / (0.5 * sqrt(1.0 / 100)) - 1) < 0.03);
  td_mlp_init(b, 18);
  assert_true(memcmp(a->params, b->params, a->n_params * sizeof(double)) != 0);
  td_mlp_destroy(a);
  td_mlp_destroy(b);
}


/* Sample mean and mean square of x[0..n) against the distribution's: mean 0, E[x^2] = v, with
 * Var(x^2) = m4 - v^2 (m4 = E[x^4]). Each is allowed 5 standard errors of its sample mean
 * (sqrt(v/n) and sqrt((m4 - v^2)/n)): a false failure has probability below 1e-6. */
static void check_moments(const double *x, size_t n, double v, double m4, const char *what) {
  double s = 0, s2 = 0;
  for (size_t i = 0; i < n; i++) {
    s += x[i];
    s2 += x[i] * x[i];
  }
  const double mean = s / n, ms = s2 / n;
  const double se_mean = sqrt(v / n), se_ms = sqrt((m4 - v * v) / n);
  if (fabs(mean) > 5 * se_mean)
    fail_msg("%s: mean %g, |mean| > 5 se = %g (n %zu)", what, mean, 5 * se_mean, n);
  if (fabs(ms - v) > 5 * se_ms)
    fail_msg("%s: mean square %g, want %g +- %g (n %zu)", what, ms, v, 5 * se_ms, n);
}

/* torch_default is torch.nn.Linear.reset_parameters: W and b ~ U(-a, a), a = 1/sqrt(fan_in)
 * (times init_scale). U(-a, a) has variance a^2/3 and E[x^4] = a^4/5. Every draw must also lie
 * inside [-a, a]. Checked for every layer of a 300-200-50-10 ReLU net at two scales. */
static void test_init_torch_default(void **state) {
  (void)state;
  const double scales[2] = {1.0, 0.5};
  for (int k = 0; k < 2; k++) {
    td_mlp_cfg cfg = {.in_dim = 300, .out_dim = 10, .n_hidden = 2, .hidden = {200, 50},
                      .act = TD_ACT_RELU, .init_scale = scales[k]};
    assert_int_equal(td_mlp_init_parse("torch_default", &cfg.init), 0);
    assert_int_equal(cfg.init, TD_INIT_TORCH_DEFAULT);
    td_mlp *m;
    assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
    td_mlp_init(m, 5);
    for (int j = 0; j < m->n_linear; j++) {
      double *W, *b;
      const td_layer *L = td_mlp_linear(m, j, m->params, &W, &b);
      const double a = scales[k] / sqrt((double)L->n_in), v = a * a / 3, m4 = a * a * a * a / 5;
      const size_t nw = (size_t)L->n_in * L->n_out;
      for (size_t i = 0; i < nw; i++) assert_true(fabs(W[i]) <= a);
      for (int i = 0; i < L->n_out; i++) assert_true(fabs(b[i]) <= a);
      char what[64];
      snprintf(what, sizeof what, "scale %g layer %d W", scales[k], j);
      check_moments(W, nw, v, m4, what);
      snprintf(what, sizeof what, "scale %g layer %d b", scales[k], j);
      check_moments(b, (size_t)L->n_out, v, m4, what);
      /* the biases are drawn: not all zero (probability 0 under U(-a, a)) */
      double bmax = 0;
      for (int i = 0; i < L->n_out; i++) bmax = fmax(bmax, fabs(b[i]));
      assert_true(bmax > 0);
    }
    td_mlp_destroy(m);
  }
}

/* he_normal and lecun_normal apply to every layer whatever the activation: W ~ N(0, g/fan_in)
 * with g = 2 or 1 (E[x^4] = 3 sigma^4), biases 0. A tanh net with he_normal differs from the
 * default (LeCun before tanh), a ReLU net with lecun_normal too. */
static void test_init_he_lecun(void **state) {
  (void)state;
  const struct {
    const char *name;
    td_act act;
    double gain;
  } cases[2] = {{"he_normal", TD_ACT_TANH, 2.0}, {"lecun_normal", TD_ACT_RELU, 1.0}};
  for (int k = 0; k < 2; k++) {
    td_mlp_cfg cfg = {.in_dim = 300, .out_dim = 10, .n_hidden = 2, .hidden = {200, 50},
                      .act = cases[k].act, .init_scale = 1.0};
    assert_int_equal(td_mlp_init_parse(cases[k].name, &cfg.init), 0);
    td_mlp *m;
    assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
    td_mlp_init(m, 6);
    for (int j = 0; j < m->n_linear; j++) {
      double *W, *b;
      const td_layer *L = td_mlp_linear(m, j, m->params, &W, &b);
      const double v = cases[k].gain / L->n_in;
      char what[64];
      snprintf(what, sizeof what, "%s layer %d W", cases[k].name, j);
      check_moments(W, (size_t)L->n_in * L->n_out, v, 3 * v * v, what);
      for (int i = 0; i < L->n_out; i++) assert_true(b[i] == 0.0);
    }
    td_mlp_destroy(m);
  }
  td_init in;
  assert_int_equal(td_mlp_init_parse(NULL, &in), 0);
  assert_int_equal(in, TD_INIT_AUTO);
  assert_int_equal(td_mlp_init_parse("xavier", &in), TD_EINVAL);
}

static void test_estimate_and_errors(void **state) {
  (void)state;
  td_mlp_cfg cfg = {.in_dim = 784, .out_dim = 10, .n_hidden = 2, .hidden = {512, 512},
                    .act = TD_ACT_RELU, .init_scale = 1.0};
  double np, ws;
  assert_int_equal(td_mlp_estimate(&cfg, 128, &np, &ws, NULL), 0);
  assert_true(np == 784.0 * 512 + 512 + 512.0 * 512 + 512 + 512.0 * 10 + 10);
  td_mlp *m;
  assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
  assert_true((double)m->n_params == np);
  td_mlp_destroy(m);
  /* An absurd width is estimated without allocating: 1e7 x 1e7 weights. */
  cfg.hidden[0] = 10000000;
  cfg.hidden[1] = 10000000;
  assert_int_equal(td_mlp_estimate(&cfg, 128, &np, &ws, NULL), 0);
  assert_true(np > 1e14);
  td_err err;
  assert_int_equal(td_mlp_create(&cfg, &m, &err), TD_ELIMIT);
  assert_null(m);
  cfg.hidden[0] = 0;
  assert_int_equal(td_mlp_estimate(&cfg, 128, &np, &ws, &err), TD_EINVAL);
  cfg.hidden[0] = 4;
  cfg.n_hidden = TD_MLP_MAX_HIDDEN + 1;
  assert_int_equal(td_mlp_create(&cfg, &m, &err), TD_EINVAL);
  td_act a;
  assert_int_equal(td_mlp_act_parse("tanh", &a), 0);
  assert_int_equal(a, TD_ACT_TANH);
  assert_int_equal(td_mlp_act_parse("gelu", &a), TD_EINVAL);
}

int main(void) {
  td_la_set_threads(1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_linear_fd),
      cmocka_unit_test(test_activations_fd),
      cmocka_unit_test(test_mlp_fd_relu_xent),
      cmocka_unit_test(test_mlp_fd_tanh_xent),
      cmocka_unit_test(test_mlp_fd_linear_mse),
      cmocka_unit_test(test_mlp_fd_tanh_mse_targets),
      cmocka_unit_test(test_mlp_fd_no_hidden),
      cmocka_unit_test(test_layout_and_forward),
      cmocka_unit_test(test_init),
      cmocka_unit_test(test_init_torch_default),
      cmocka_unit_test(test_init_he_lecun),
      cmocka_unit_test(test_estimate_and_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
