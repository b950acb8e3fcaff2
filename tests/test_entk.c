/* test_entk.c: the empirical NTK (Gram factorization) against a dense Jacobian built on a tiny
 * net, column by column by central finite differences of the forward pass, and row by row by
 * the model's exact backward pass; cross kernels, the trace, per-layer weights, the memory
 * cap and refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "kernels/entk.h"

static td_mlp *tiny(td_act act, uint64_t seed) {
  td_mlp_cfg c = {.in_dim = 3, .out_dim = 2, .n_hidden = 2, .hidden = {5, 4}, .act = act,
                  .init_scale = 1.0};
  td_mlp *m = NULL;
  assert_int_equal(td_mlp_create(&c, &m, NULL), 0);
  td_rng r;
  td_rng_init(&r, seed, 3);
  td_rng_fill_normal(&r, m->params, m->n_params, 0.7); /* biases non-zero too */
  return m;
}

/* which linear layer owns parameter p, and whether it is a bias */
static void owner(const td_mlp *m, size_t p, int *layer, int *is_bias) {
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (L->kind == TD_LAYER_LINEAR && p >= L->off && p < L->off + L->n_params) {
      *layer = L->index;
      *is_bias = p >= L->off + (size_t)L->n_in * L->n_out;
      return;
    }
  }
  fail_msg("parameter %zu has no owner", p);
}

/* Dense J (rows (i,a) of [X; X2], n_params columns) by central differences, h = 1e-5. */
static double *jac_fd(td_mlp *m, const double *X, int N) {
  int k = m->cfg.out_dim;
  double *J = calloc((size_t)N * k * m->n_params, sizeof(double));
  td_mlp_ws ws;
  assert_int_equal(td_mlp_ws_init(&ws, m, N, NULL), 0);
  td_mlp_ws_set_mode(&ws, TD_MLP_EVAL, 0);
  double *fp = malloc(sizeof(double) * N * k);
  const double h = 1e-5;
  for (size_t p = 0; p < m->n_params; p++) {
    double keep = m->params[p];
    m->params[p] = keep + h;
    memcpy(fp, td_mlp_forward(m, &ws, m->params, X, N), sizeof(double) * N * k);
    m->params[p] = keep - h;
    const double *fm = td_mlp_forward(m, &ws, m->params, X, N);
    m->params[p] = keep;
    for (int r = 0; r < N * k; r++) J[(size_t)r * m->n_params + p] = (fp[r] - fm[r]) / (2 * h);
  }
  free(fp);
  td_mlp_ws_deinit(&ws);
  return J;
}

/* Dense J by rows: the exact gradient of output a at example i (td_mlp_backward, batch 1). */
static double *jac_rows(td_mlp *m, const double *X, int N) {
  int k = m->cfg.out_dim;
  double *J = calloc((size_t)N * k * m->n_params, sizeof(double));
  td_mlp_ws ws;
  assert_int_equal(td_mlp_ws_init(&ws, m, 1, NULL), 0);
  td_mlp_ws_set_mode(&ws, TD_MLP_EVAL, 0);
  double e[8];
  for (int i = 0; i < N; i++)
    for (int a = 0; a < k; a++) {
      td_mlp_forward(m, &ws, m->params, X + (size_t)i * m->cfg.in_dim, 1);
      for (int b = 0; b < k; b++) e[b] = a == b;
      td_mlp_backward(m, &ws, m->params, e, 1, J + ((size_t)i * k + a) * m->n_params, 0);
    }
  td_mlp_ws_deinit(&ws);
  return J;
}

/* Theta_ref from a dense J: rows r1 of the first set, r2 of the second, weighted by c. */
static double dense_entry(const td_mlp *m, const double *J, int r1, int r2, const double *cw,
                          const double *cb) {
  double s = 0;
  for (size_t p = 0; p < m->n_params; p++) {
    int l = -1, bias = 0;
    owner(m, p, &l, &bias);
    double c = bias ? (cb ? cb[l] : 1) : (cw ? cw[l] : 1);
    s += c * J[(size_t)r1 * m->n_params + p] * J[(size_t)r2 * m->n_params + p];
  }
  return s;
}

static void check(td_act act, int use_scales) {
  td_mlp *m = tiny(act, 11 + act);
  const int n1 = 4, n2 = 3, k = 2;
  double X[(4 + 3) * 3];
  td_rng r;
  td_rng_init(&r, 5, 1);
  td_rng_fill_normal(&r, X, 21, 1.0);
  double cw[3] = {0.5, 2.0, 0.25}, cb[3] = {1.5, 0.1, 3.0};
  td_entk_opts o = {.full = 1, .w_scale = use_scales ? cw : NULL, .b_scale = use_scales ? cb : NULL};
  double full[8 * 6], sym[8 * 8], tr[4 * 3];
  td_err e;
  assert_int_equal(td_entk_compute(m, m->params, X, n1, X + n1 * 3, n2, &o, full, &e), 0);
  assert_int_equal(td_entk_compute(m, m->params, X, n1, NULL, 0, &o, sym, &e), 0);
  o.full = 0;
  assert_int_equal(td_entk_compute(m, m->params, X, n1, X + n1 * 3, n2, &o, tr, &e), 0);
  double *Jfd = jac_fd(m, X, n1 + n2), *Jex = jac_rows(m, X, n1 + n2);
  double scale = 0;
  for (int t = 0; t < 48; t++) scale = fmax(scale, fabs(full[t]));
  double err_fd = 0, err_ex = 0, err_sym = 0, err_tr = 0;
  for (int i = 0; i < n1; i++)
    for (int a = 0; a < k; a++)
      for (int j = 0; j < n2; j++)
        for (int b = 0; b < k; b++) {
          double v = full[(i * k + a) * (n2 * k) + j * k + b];
          double fd = dense_entry(m, Jfd, i * k + a, (n1 + j) * k + b, o.w_scale, o.b_scale);
          double ex = dense_entry(m, Jex, i * k + a, (n1 + j) * k + b, o.w_scale, o.b_scale);
          err_fd = fmax(err_fd, fabs(v - fd));
          err_ex = fmax(err_ex, fabs(v - ex));
        }
  for (int i = 0; i < n1; i++)
    for (int a = 0; a < k; a++)
      for (int j = 0; j < n1; j++)
        for (int b = 0; b < k; b++) {
          double ex = dense_entry(m, Jex, i * k + a, j * k + b, o.w_scale, o.b_scale);
          err_sym = fmax(err_sym, fabs(sym[(i * k + a) * (n1 * k) + j * k + b] - ex));
        }
  for (int i = 0; i < n1; i++)
    for (int j = 0; j < n2; j++) {
      double ex = 0;
      for (int a = 0; a < k; a++)
        ex += dense_entry(m, Jex, i * k + a, (n1 + j) * k + a, o.w_scale, o.b_scale);
      err_tr = fmax(err_tr, fabs(tr[i * n2 + j] - ex));
    }
  print_message("act %d scales %d: max|Theta| %.3g, err vs FD %.2g, vs exact rows %.2g, sym "
                "%.2g, trace %.2g\n", act, use_scales, scale, err_fd, err_ex, err_sym, err_tr);
  /* FD with h = 1e-5: truncation h^2 |f'''| ~ 1e-10 and rounding eps |f| / h ~ 1e-11 per
   * Jacobian entry, summed over ~60 parameters: 1e-8 relative is well above both and far
   * below any wrong term (each layer's block is O(1)). The exact rows differ only by
   * rounding in the sums: 1e-12 relative. */
  assert_true(err_fd < 1e-8 * scale);
  assert_true(err_ex < 1e-12 * scale);
  assert_true(err_sym < 1e-12 * scale);
  assert_true(err_tr < 1e-12 * scale);
  free(Jfd);
  free(Jex);
  td_mlp_destroy(m);
}

static void test_relu(void **s) { (void)s; check(TD_ACT_RELU, 0); check(TD_ACT_RELU, 1); }
static void test_tanh(void **s) { (void)s; check(TD_ACT_TANH, 0); check(TD_ACT_TANH, 1); }
static void test_linear(void **s) { (void)s; check(TD_ACT_LINEAR, 1); }

static void test_cap_and_refusals(void **state) {
  (void)state;
  td_mlp *m = tiny(TD_ACT_RELU, 1);
  double X[12] = {0}, out[64];
  td_err e;
  double need;
  assert_int_equal(td_entk_estimate(m, 4, 0, 0, 1, &need, &e), 0);
  /* the output alone is k^2 n^2 doubles */
  assert_true(need >= 8.0 * 4 * 16);
  td_entk_opts o = {.full = 1, .max_bytes = need - 1};
  assert_int_equal(td_entk_compute(m, m->params, X, 4, NULL, 0, &o, out, &e), TD_ELIMIT);
  o.max_bytes = need;
  assert_int_equal(td_entk_compute(m, m->params, X, 4, NULL, 0, &o, out, &e), 0);
  assert_int_equal(td_entk_compute(m, m->params, X, 0, NULL, 0, &o, out, &e), TD_EINVAL);
  td_mlp_destroy(m);
  /* the dense path of models with norm layers is capped the same way (it holds k N P) */
  td_mlp_cfg c = {.in_dim = 3, .out_dim = 2, .n_hidden = 1, .hidden = {4}, .act = TD_ACT_RELU,
                  .init_scale = 1.0, .norm = TD_NORM_LAYERNORM};
  assert_int_equal(td_mlp_create(&c, &m, NULL), 0);
  assert_int_equal(td_entk_estimate(m, 4, 0, 0, 1, &need, &e), 0);
  assert_true(need >= 8.0 * 2 * 4 * m->n_params);
  o.max_bytes = need - 1;
  assert_int_equal(td_entk_compute(m, m->params, X, 4, NULL, 0, &o, out, &e), TD_ELIMIT);
  td_mlp_destroy(m);
}

/* Norm layers (the dense path): LayerNorm, and BatchNorm in EVAL mode with non-trivial running
 * statistics, in the standard and the ntk parameterization, with per-layer weights: against
 * the dense finite-difference Jacobian (same tolerance argument as check()). */
static void check_norm(td_norm norm, td_param_kind pz) {
  td_mlp_cfg c = {.in_dim = 3, .out_dim = 2, .n_hidden = 2, .hidden = {5, 4}, .act = TD_ACT_TANH,
                  .init_scale = 1.0, .norm = norm, .param = pz, .sigma_w2 = 1.5, .sigma_b2 = 0.2};
  td_mlp *m = NULL;
  assert_int_equal(td_mlp_create(&c, &m, NULL), 0);
  td_rng r;
  td_rng_init(&r, 21, 3);
  td_rng_fill_normal(&r, m->params, m->n_params, 0.7);
  for (size_t i = 0; i < m->n_buffers; i++) m->buffers[i] = 0.5 + 0.3 * fabs(td_rng_normal(&r));
  const int n1 = 4, n2 = 3, k = 2;
  double X[7 * 3], full[8 * 6], tr[4 * 3];
  td_rng_fill_normal(&r, X, 21, 1.0);
  double cw[3] = {0.5, 2.0, 0.25}, cb[3] = {1.5, 0.1, 3.0};
  td_entk_opts o = {.full = 1, .w_scale = cw, .b_scale = cb};
  td_err e;
  assert_int_equal(td_entk_compute(m, m->params, X, n1, X + n1 * 3, n2, &o, full, &e), 0);
  o.full = 0;
  assert_int_equal(td_entk_compute(m, m->params, X, n1, X + n1 * 3, n2, &o, tr, &e), 0);
  double *J = jac_fd(m, X, n1 + n2), *wt = malloc(sizeof(double) * m->n_params);
  for (int i = 0; i < m->n_layers; i++) { /* the weights: c_W, c_b on linear layers, 1 on norms */
    const td_layer *L = &m->layers[i];
    size_t nw = L->kind == TD_LAYER_LINEAR ? (size_t)L->n_in * L->n_out : (size_t)L->n_out;
    for (size_t t = 0; t < L->n_params; t++)
      wt[L->off + t] = L->kind != TD_LAYER_LINEAR ? 1 : t < nw ? cw[L->index] : cb[L->index];
  }
  double scale = 0, err = 0, err_tr = 0;
  for (int t = 0; t < 48; t++) scale = fmax(scale, fabs(full[t]));
  for (int i = 0; i < n1; i++)
    for (int j = 0; j < n2; j++) {
      double trace = 0;
      for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++) {
          double ref = 0;
          for (size_t p = 0; p < m->n_params; p++)
            ref += wt[p] * J[(size_t)(i * k + a) * m->n_params + p] *
                   J[(size_t)((n1 + j) * k + b) * m->n_params + p];
          err = fmax(err, fabs(full[(i * k + a) * (n2 * k) + j * k + b] - ref));
          if (a == b) trace += ref;
        }
      err_tr = fmax(err_tr, fabs(tr[i * n2 + j] - trace));
    }
  print_message("norm %d param %d: max|Theta| %.3g, err vs FD %.2g, trace %.2g\n", norm, pz,
                scale, err, err_tr);
  assert_true(scale > 0.1);
  assert_true(err < 1e-8 * scale);
  assert_true(err_tr < 1e-8 * scale);
  free(J);
  free(wt);
  td_mlp_destroy(m);
}

static void test_norm_layers(void **s) {
  (void)s;
  check_norm(TD_NORM_LAYERNORM, TD_PARAM_STANDARD);
  check_norm(TD_NORM_BATCHNORM, TD_PARAM_STANDARD);
  check_norm(TD_NORM_LAYERNORM, TD_PARAM_NTK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_relu),
      cmocka_unit_test(test_tanh),
      cmocka_unit_test(test_linear),
      cmocka_unit_test(test_cap_and_refusals),
      cmocka_unit_test(test_norm_layers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
