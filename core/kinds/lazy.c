/* lazy.c: the `lazy` experiment kind: full-batch gradient descent on squared error for MLPs of
 * several widths, beside their NTK predictions: lazy training versus feature learning
 * (chapter 6).
 *
 * For each width w in `widths`: a network (model.depth hidden layers of width w,
 * model.activation, k linear outputs) in the NTK parameterization (Jacot et al. 2018: W =
 * sigma_w / sqrt(fan_in) omega, b = sigma_b beta, omega, beta ~ N(0, 1); GD on (omega, beta)),
 * or in tdlab's standard one (GD on (W, b), model.init), with Chizat and Bach's output scale
 * alpha (2019, "On lazy training in differentiable programming", sec. 2: the model
 * h = alpha (f(theta) - f(theta_0)), centered so that h_0 = 0, and the loss divided by
 * alpha^2): L = 1/(2 n alpha^2) sum_i ||h(x_i) - y_i||^2 on the n training rows, `steps` steps
 * of full-batch GD with learning rate lr. A large alpha makes any width lazy.
 * The kernel prediction is that of the linearized network under the same GD steps
 * (td_kpred_gd with the empirical NTK at initialization, its trace over outputs / k; in h
 * the kernel is alpha^2 Theta and the loss 1/alpha^2, so the prediction does not depend on
 * alpha): h_t = Y + (I - lr Theta_0 / n)^t (h_0 - Y), extended to the test rows (Lee et al.
 * 2019, eqs. 9-10 for gradient descent, their eta = lr / n for tdlab's mean loss).
 * Metrics (every log_every steps, keys suffixed by the width, e.g. train_loss.w256):
 *  - train_loss (1/(2n) sum ||h - y||^2: the loss in function space, without 1/alpha^2),
 *    pred_loss (the same for the kernel prediction), test_loss;
 *  - fn_distance: ||h(X*) - h_pred(X*)||_F / ||h_pred(X*)||_F on the test rows (0 at step 0);
 *  - ntk_change: ||Theta_t - Theta_0||_F / ||Theta_0||_F (the empirical NTK on the training
 *    rows, trace over outputs);
 *  - param_change: ||p_t - p_0|| / ||p_0|| in the trained coordinates ((omega, beta) under
 *    ntk, (W, b) under standard);
 *  - feature_change: ||Z_t - Z_0||_F / ||Z_0||_F of the last hidden layer on the training
 *    rows.
 * Under the NTK parameterization these fall like 1/sqrt(width) (lazy training; Lee et al.
 * 2019, Theorem 2.1). Under mup (Yang and Hu 2021; the per-layer init variances and SGD
 * learning-rate multipliers of Yang et al. 2022, Tensor Programs V, Table 3: input weights and
 * biases var 1/fan_in, lr x fan_out; hidden var 1/fan_in, lr x 1; output var 1/fan_in^2, lr x
 * 1/fan_in) the feature change stays of order one as width grows (feature learning). The NTK
 * of a parameterization is J diag(lr multipliers) J^T, the kernel of its GD. Summary: widths, and for each the final fn_distance, ntk_change,
 * param_change, feature_change, train_loss, pred_loss (lists in width order).
 * Data: synthetic (x ~ N(0, I_d), y = tanh(x . w*), w* ~ N(0, I/d), k = 1), or Fashion-MNIST
 * (the first n_train / n_test images, one-hot targets, k = 10). Not on the trainer: the
 * loop is GD in (omega, beta) with the per-layer scales of the parameterization. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "kernels/entk.h"
#include "kernels/kpred.h"
#include "kinds/registry.h"
#include "nn/data.h"
#include "nn/model.h"

static const td_param lazy_params[] = {
    {"data.name", TD_PT_STR, "\"synthetic\"", 0, 0, "synthetic|fashion-mnist", 0,
     "synthetic: x ~ N(0, I_d), y = tanh(x . w*); fashion-mnist: one-hot targets (k = 10)"},
    {"data.n_train", TD_PT_INT, "32", 2, 1000, NULL, 0, "training rows (full batch)"},
    {"data.n_test", TD_PT_INT, "32", 1, 1000, NULL, 0, "test rows"},
    {"data.d", TD_PT_INT, "8", 1, 5000, NULL, 0, "synthetic: input dimension"},
    {"widths", TD_PT_INT_LIST, "[64, 256, 1024]", 1, 16384, NULL, 8, "hidden widths"},
    {"model.depth", TD_PT_INT, "1", 1, 4, NULL, 0, "hidden layers"},
    {"model.activation", TD_PT_STR, "\"relu\"", 0, 0, "relu|tanh|linear", 0, "hidden activation"},
    {"model.parameterization", TD_PT_STR, "\"ntk\"", 0, 0, "ntk|standard|mup", 0,
     "ntk: GD on omega with W = sigma_w/sqrt(fan_in) omega (Jacot et al. 2018); standard: "
     "GD on W with tdlab's init; mup: the maximal-update parameterization for SGD (Yang et al. "
     "2022, Tensor Programs V, Table 3)"},
    {"model.sigma_w2", TD_PT_NUM, "2", 1e-6, 1e6, NULL, 0, "ntk: sigma_w^2"},
    {"model.sigma_b2", TD_PT_NUM, "0.1", 0, 1e6, NULL, 0, "ntk: sigma_b^2"},
    {"alpha", TD_PT_NUM, "1", 1e-6, 1e6, NULL, 0,
     "Chizat-Bach output scale: h = alpha (f - f_0), loss / alpha^2 (large: lazy at any width)"},
    {"lr", TD_PT_NUM, "0.5", 1e-9, 1e6, NULL, 0, "learning rate of full-batch GD"},
    {"steps", TD_PT_INT, "200", 1, 100000, NULL, 0, "GD steps per width"},
    {"log_every", TD_PT_INT, "20", 1, 100000, NULL, 0, "log the metrics every this many steps"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of data and networks"},
};

typedef struct lazy_cfg {
  int fmnist, n, nt, d, k, depth, ntk_param, mup, n_widths;
  long widths[8], steps, log_every;
  td_act act;
  double sw2, sb2, alpha, lr;
  uint64_t seed;
} lazy_cfg;

static void parse_cfg(const json_t *p, lazy_cfg *c) {
  memset(c, 0, sizeof *c);
  c->fmnist = !strcmp(td_param_str(p, "data.name", "synthetic"), "fashion-mnist");
  c->n = (int)td_param_int(p, "data.n_train", 32);
  c->nt = (int)td_param_int(p, "data.n_test", 32);
  c->d = c->fmnist ? 784 : (int)td_param_int(p, "data.d", 8);
  c->k = c->fmnist ? 10 : 1;
  c->depth = (int)td_param_int(p, "model.depth", 1);
  c->ntk_param = !strcmp(td_param_str(p, "model.parameterization", "ntk"), "ntk");
  c->mup = !strcmp(td_param_str(p, "model.parameterization", "ntk"), "mup");
  td_mlp_act_parse(td_param_str(p, "model.activation", "relu"), &c->act);
  c->sw2 = td_param_num(p, "model.sigma_w2", 2);
  c->sb2 = td_param_num(p, "model.sigma_b2", 0.1);
  c->alpha = td_param_num(p, "alpha", 1);
  c->lr = td_param_num(p, "lr", 0.5);
  c->steps = td_param_int(p, "steps", 200);
  c->log_every = td_param_int(p, "log_every", 20);
  c->seed = (uint64_t)td_param_int(p, "seed", 0);
  const json_t *w = td_param_get(p, "widths");
  c->n_widths = (int)json_array_size(w);
  for (int i = 0; i < c->n_widths && i < 8; i++)
    c->widths[i] = (long)json_integer_value(json_array_get(w, (size_t)i));
}

static td_mlp_cfg mlp_cfg(const lazy_cfg *c, long width) {
  td_mlp_cfg m = {.in_dim = c->d, .out_dim = c->k, .n_hidden = c->depth, .act = c->act,
                  .init_scale = 1.0};
  for (int i = 0; i < c->depth; i++) m.hidden[i] = (int)width;
  return m;
}

static int lazy_check(const json_t *params, td_estimate *est, td_err *err) {
  lazy_cfg c;
  parse_cfg(params, &c);
  double worst = 0, npm = 0;
  for (int i = 0; i < c.n_widths; i++) {
    td_mlp_cfg m = mlp_cfg(&c, c.widths[i]);
    double np, ws;
    int rc = td_mlp_estimate(&m, c.n + c.nt, &np, &ws, err);
    if (rc) return rc;
    double b = 8 * 4 * np + 2 * ws + 8.0 * 8 * (c.n + c.nt) * (c.n + c.nt) +
               16.0 * c.k * (c.n + c.nt) * c.widths[i];
    if (b > worst) worst = b;
    if (np > npm) npm = np;
  }
  est->bytes = worst + (c.fmnist ? 70000.0 * 785 : 0);
  est->n_params = npm;
  return 0;
}

static double rel(const double *a, const double *b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : 0;
}

static double half_mse(const double *H, const double *Y, int n, int k) {
  double s = 0;
  for (size_t i = 0; i < (size_t)n * k; i++) s += (H[i] - Y[i]) * (H[i] - Y[i]);
  return 0.5 * s / n;
}

static void metric(td_sink *sink, const char *key, long width, long step, double v) {
  char name[64];
  snprintf(name, sizeof name, "%s.w%ld", key, width);
  td_sink_metric(sink, name, step, v);
}

static int load_data(const lazy_cfg *c, td_dataset *tr, td_dataset *te, td_err *err) {
  if (c->fmnist) {
    int rc = td_data_fashion_mnist("train", (size_t)c->n, tr, err);
    if (!rc) rc = td_data_fashion_mnist("test", (size_t)c->nt, te, err);
    if (rc) return rc;
    td_dataset *s[2] = {tr, te};
    for (int j = 0; j < 2; j++) {
      s[j]->Y = calloc(s[j]->n * 10, sizeof(double));
      if (!s[j]->Y) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
      for (size_t i = 0; i < s[j]->n; i++) s[j]->Y[i * 10 + s[j]->y[i]] = 1;
    }
    return 0;
  }
  td_rng r;
  td_rng_init(&r, c->seed, TD_RNG_TEACHER);
  double *w = malloc(sizeof(double) * c->d);
  if (!w) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  td_rng_fill_normal(&r, w, (size_t)c->d, 1.0 / sqrt(c->d));
  td_dataset *s[2] = {tr, te};
  int ns[2] = {c->n, c->nt};
  for (int j = 0; j < 2; j++) {
    s[j]->n = (size_t)ns[j];
    s[j]->d = (size_t)c->d;
    s[j]->k = 1;
    s[j]->X = malloc(sizeof(double) * ns[j] * c->d);
    s[j]->Y = malloc(sizeof(double) * ns[j]);
    if (!s[j]->X || !s[j]->Y) {
      free(w);
      return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    }
    td_rng_init(&r, c->seed, j ? TD_RNG_TEST_DATA : TD_RNG_DATA);
    td_rng_fill_normal(&r, s[j]->X, (size_t)ns[j] * c->d, 1.0);
    for (int i = 0; i < ns[j]; i++) s[j]->Y[i] = tanh(td_la_dot((size_t)c->d, s[j]->X + (size_t)i * c->d, w));
  }
  free(w);
  return 0;
}

static int lazy_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  lazy_cfg c;
  parse_cfg(params, &c);
  const int n = c.n, nt = c.nt, k = c.k, N = n + nt;
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  td_mlp *m = NULL;
  td_mlp_ws ws, wt;
  memset(&ws, 0, sizeof ws);
  memset(&wt, 0, sizeof wt);
  double *Xall = NULL, *T0 = NULL, *Tt = NULL, *Ts = NULL, *F0 = NULL, *F0s = NULL, *Hp = NULL,
         *Hps = NULL, *H = NULL, *Hs = NULL, *dout = NULL, *p0 = NULL, *Z0 = NULL, *Kall = NULL;
  double fin[6][8] = {{0}};
  int rc = load_data(&c, &tr, &te, err);
  if (rc) goto out;
  rc = TD_ENOMEM;
  Xall = malloc(sizeof(double) * (size_t)N * c.d);
  T0 = malloc(sizeof(double) * (size_t)n * n);
  Tt = malloc(sizeof(double) * (size_t)n * n);
  Ts = malloc(sizeof(double) * (size_t)nt * n);
  Kall = malloc(sizeof(double) * (size_t)n * N);
  F0 = malloc(sizeof(double) * (size_t)n * k);
  F0s = malloc(sizeof(double) * (size_t)nt * k);
  Hp = malloc(sizeof(double) * (size_t)n * k);
  Hps = malloc(sizeof(double) * (size_t)nt * k);
  H = malloc(sizeof(double) * (size_t)n * k);
  Hs = malloc(sizeof(double) * (size_t)nt * k);
  dout = malloc(sizeof(double) * (size_t)n * k);
  if (!Xall || !T0 || !Tt || !Ts || !Kall || !F0 || !F0s || !Hp || !Hps || !H || !Hs || !dout) {
    td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    goto out;
  }
  memcpy(Xall, tr.X, sizeof(double) * (size_t)n * c.d);
  memcpy(Xall + (size_t)n * c.d, te.X, sizeof(double) * (size_t)nt * c.d);
  long total = (long)c.n_widths * c.steps, done = 0;
  for (int wi = 0; wi < c.n_widths; wi++) {
    long width = c.widths[wi];
    td_mlp_cfg mc = mlp_cfg(&c, width);
    if ((rc = td_mlp_create(&mc, &m, err)) || (rc = td_mlp_ws_init(&ws, m, n, err)) ||
        (rc = td_mlp_ws_init(&wt, m, nt, err)))
      goto out;
    td_mlp_ws_set_mode(&ws, TD_MLP_EVAL, 0);
    td_mlp_ws_set_mode(&wt, TD_MLP_EVAL, 0);
    /* per-parameter scale s^2 of the parameterization: the GD step and the NTK weights */
    double cw[TD_MLP_MAX_HIDDEN + 1], cb[TD_MLP_MAX_HIDDEN + 1];
    double *sc = malloc(sizeof(double) * m->n_params);
    p0 = malloc(sizeof(double) * m->n_params);
    int wz = m->layers[m->n_layers - 1].n_in;
    Z0 = malloc(sizeof(double) * (size_t)n * wz);
    if (!sc || !p0 || !Z0) {
      free(sc);
      rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
      goto out;
    }
    td_rng r;
    td_rng_init(&r, c.seed + 1000 * (uint64_t)(wi + 1), TD_RNG_INIT);
    if (!c.ntk_param && !c.mup) td_mlp_init(m, c.seed + (uint64_t)wi);
    for (int j = 0; j <= c.depth; j++) {
      double *W, *b;
      const td_layer *L = td_mlp_linear(m, j, m->params, &W, &b);
      cw[j] = c.ntk_param ? c.sw2 / L->n_in : 1;
      cb[j] = c.ntk_param ? c.sb2 : 1;
      if (c.ntk_param) {
        td_rng_fill_normal(&r, W, (size_t)L->n_in * L->n_out, sqrt(cw[j]));
        td_rng_fill_normal(&r, b, (size_t)L->n_out, sqrt(cb[j]));
      } else if (c.mup) {
        /* Tensor Programs V, Table 3, SGD: input weights and all biases: init var 1/fan_in,
         * LR x fan_out; hidden weights: init var 1/fan_in, LR x 1; output weights: init var
         * 1/fan_in^2, LR x 1/fan_in. Biases start at 0 (a width-independent choice). */
        int out = j == c.depth;
        double sd = out ? 1.0 / L->n_in : sqrt(1.0 / L->n_in);
        td_rng_fill_normal(&r, W, (size_t)L->n_in * L->n_out, sd);
        memset(b, 0, sizeof(double) * (size_t)L->n_out);
        cw[j] = j == 0 ? (double)L->n_out : out ? 1.0 / L->n_in : 1.0;
        cb[j] = (double)L->n_out;
      }
      for (size_t t = 0; t < (size_t)L->n_in * L->n_out; t++) sc[W - m->params + t] = cw[j];
      for (size_t t = 0; t < (size_t)L->n_out; t++) sc[b - m->params + t] = cb[j];
    }
    memcpy(p0, m->params, sizeof(double) * m->n_params);
    td_entk_opts o = {.full = 0, .w_scale = cw, .b_scale = cb};
    /* Theta_0 on [train; test] x train, trace / k */
    if ((rc = td_entk_compute(m, m->params, Xall, N, tr.X, n, &o, Kall, err))) {
      free(sc);
      goto out;
    }
    for (size_t t = 0; t < (size_t)N * n; t++) Kall[t] /= k;
    memcpy(T0, Kall, sizeof(double) * (size_t)n * n);
    memcpy(Ts, Kall + (size_t)n * n, sizeof(double) * (size_t)nt * n);
    memcpy(F0, td_mlp_forward(m, &ws, m->params, tr.X, n), sizeof(double) * (size_t)n * k);
    memcpy(Z0, ws.act[m->n_layers - 1], sizeof(double) * (size_t)n * wz);
    memcpy(F0s, td_mlp_forward(m, &wt, m->params, te.X, nt), sizeof(double) * (size_t)nt * k);
    double zero_h[1] = {0};
    (void)zero_h;
    for (long step = 0; step <= c.steps; step++) {
      if (td_sink_should_stop(sink)) {
        free(sc);
        rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
        goto out;
      }
      /* h = alpha (f - f0) on the training rows */
      const double *f = td_mlp_forward(m, &ws, m->params, tr.X, n);
      for (size_t t = 0; t < (size_t)n * k; t++) H[t] = c.alpha * (f[t] - F0[t]);
      int log_now = step % c.log_every == 0 || step == c.steps;
      if (log_now) {
        double *Zt = ws.act[m->n_layers - 1];
        double fc = rel(Zt, Z0, (size_t)n * wz);
        const double *fs = td_mlp_forward(m, &wt, m->params, te.X, nt);
        for (size_t t = 0; t < (size_t)nt * k; t++) Hs[t] = c.alpha * (fs[t] - F0s[t]);
        /* the kernel prediction from h_0 = 0 */
        double *Z = dout; /* zeros of n x k for h_0 */
        memset(Z, 0, sizeof(double) * (size_t)n * k);
        double *Zs = calloc((size_t)nt * k, sizeof(double));
        if (!Zs) {
          free(sc);
          rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
          goto out;
        }
        rc = td_kpred_gd(n, T0, nt, Ts, k, tr.Y, Z, Zs, c.lr, step, 0.0, Hp, Hps, NULL, err);
        free(Zs);
        if (rc) {
          free(sc);
          goto out;
        }
        double pc = 0, pn = 0;
        for (size_t t = 0; t < m->n_params; t++) {
          double dd = m->params[t] - p0[t];
          double wgt = c.ntk_param ? 1 / sc[t] : 1; /* the trained coordinates */
          pc += dd * dd * wgt;
          pn += p0[t] * p0[t] * wgt;
        }
        if ((rc = td_entk_compute(m, m->params, tr.X, n, NULL, 0, &o, Tt, err))) {
          free(sc);
          goto out;
        }
        for (size_t t = 0; t < (size_t)n * n; t++) Tt[t] /= k;
        double v[6] = {rel(Hs, Hps, (size_t)nt * k), rel(Tt, T0, (size_t)n * n),
                       sqrt(pc / pn), fc, half_mse(H, tr.Y, n, k), half_mse(Hp, tr.Y, n, k)};
        if (step == 0) v[0] = 0;
        metric(sink, "fn_distance", width, step, v[0]);
        metric(sink, "ntk_change", width, step, v[1]);
        metric(sink, "param_change", width, step, v[2]);
        metric(sink, "feature_change", width, step, v[3]);
        metric(sink, "train_loss", width, step, v[4]);
        metric(sink, "pred_loss", width, step, v[5]);
        metric(sink, "test_loss", width, step, half_mse(Hs, te.Y, nt, k));
        if (!isfinite(v[4])) {
          free(sc);
          rc = td_err_set(err, TD_EDIVERGED, "lr", "width %ld: the loss became non-finite at step %ld",
                          width, step);
          goto out;
        }
        for (int q = 0; q < 6; q++) fin[q][wi] = v[q];
      }
      if (step == c.steps) break;
      /* dL/df = (h - y) / (n alpha); GD on the trained coordinates: p -= lr s^2 dL/dW */
      for (size_t t = 0; t < (size_t)n * k; t++) dout[t] = (H[t] - tr.Y[t]) / (n * c.alpha);
      td_mlp_backward(m, &ws, m->params, dout, n, m->grad, 0);
      for (size_t t = 0; t < m->n_params; t++) m->params[t] -= c.lr * sc[t] * m->grad[t];
      td_sink_progress(sink, ++done, total);
    }
    free(sc);
    free(p0);
    free(Z0);
    p0 = Z0 = NULL;
    td_mlp_ws_deinit(&ws);
    td_mlp_ws_deinit(&wt);
    td_mlp_destroy(m);
    m = NULL;
  }
  json_t *sm = json_object(), *wl = json_array();
  for (int i = 0; i < c.n_widths; i++) json_array_append_new(wl, json_integer(c.widths[i]));
  json_object_set_new(sm, "widths", wl);
  static const char *names[6] = {"fn_distance", "ntk_change", "param_change", "feature_change",
                                 "train_loss", "pred_loss"};
  for (int q = 0; q < 6; q++) {
    json_t *a = json_array();
    for (int i = 0; i < c.n_widths; i++)
      json_array_append_new(a, isfinite(fin[q][i]) ? json_real(fin[q][i]) : json_string("NaN"));
    json_object_set_new(sm, names[q], a);
  }
  *summary = sm;
  rc = 0;
out:
  td_mlp_ws_deinit(&ws);
  td_mlp_ws_deinit(&wt);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(Xall);
  free(T0);
  free(Tt);
  free(Ts);
  free(Kall);
  free(F0);
  free(F0s);
  free(Hp);
  free(Hps);
  free(H);
  free(Hs);
  free(dout);
  free(p0);
  free(Z0);
  return rc;
}

const td_kind td_kind_lazy = {
    .name = "lazy",
    .doc = "Full-batch GD on MLPs of several widths beside their NTK predictions: lazy vs feature learning",
    .chapter = "6",
    .params = lazy_params,
    .n_params = sizeof lazy_params / sizeof lazy_params[0],
    .check = lazy_check,
    .run = lazy_run,
};
