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
 * 2019, Theorem 2.1). Under mup (the model's parameterization, model.h td_param_kind: Yang et
 * al. 2022, Tensor Programs V, Table 3, SGD column, base width 1) the feature change stays of
 * order one as width grows (feature learning). The NTK of a parameterization is
 * J diag(lr multipliers) J^T, the kernel of its GD (the model's forward multipliers enter J
 * inside td_entk_compute; mup's per-layer lr multipliers are passed as its c_W, c_b).
 * Summary: widths, and for each the final fn_distance, ntk_change, param_change,
 * feature_change, train_loss, pred_loss (lists in width order).
 * Data: synthetic (x ~ N(0, I_d), y = tanh(x . w*), w* ~ N(0, I/d), k = 1), or Fashion-MNIST
 * (the first n_train / n_test images, one-hot targets, k = 10).
 * On the trainer (core/train/trainer.h), one run per width in FULL-BATCH mode: the model
 * (model.parameterization in the model: ntk W = sigma_w/sqrt(fan_in) omega, GD on omega;
 * network i of `widths` initialized from seed + 1000 (i + 1)), plain sgd with lr (mup: its
 * per-layer lr segments), a loss hook for the centered, alpha-scaled loss (its train_loss.w<N>
 * is logged by the trainer at every step: the function-space loss without 1/alpha^2, while
 * the gradient is that of the loss / alpha^2), and an analysis hook every log_every steps for
 * the kernel prediction and the other metrics. Only non-finite losses count as divergence
 * (the blow-up and spike rules are off). */
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
#include "train/trainer.h"

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
    double cb = 0; /* the trainer's full-batch td_curv_ctx */
    if ((rc = td_curv_estimate(&m, c.n, &cb, err))) return rc;
    double b = 8 * 4 * np + 2 * ws + cb + 8.0 * 8 * (c.n + c.nt) * (c.n + c.nt) +
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

/* The state of one width's run (the trainer's hooks). */
typedef struct lazy_ctx {
  const lazy_cfg *c;
  const td_dataset *tr, *te; /* loaded once, copied into each run */
  const double *Xall;        /* [train; test] inputs */
  long width;
  char loss_key[48];
  td_mlp_ws ws, wt; /* EVAL-mode workspaces of batch n and n_test */
  double *T0, *Tt, *Ts, *Kall, *F0, *F0s, *Hp, *Hps, *H, *Hs, *zero, *zeros, *dout, *p0, *Z0;
  double cw[TD_MLP_MAX_HIDDEN + 1], cb[TD_MLP_MAX_HIDDEN + 1];
  int wz;
  double fin[6];
  /* the outer sink: progress over all widths */
  td_sink *outer;
  long done_base, total;
} lazy_ctx;

static int wrap_metric(void *ctx, const char *key, long step, double v) {
  return td_sink_metric(((lazy_ctx *)ctx)->outer, key, step, v);
}
static void wrap_progress(void *ctx, long done, long total) {
  lazy_ctx *x = ctx;
  (void)total;
  td_sink_progress(x->outer, x->done_base + done, x->total);
}
static int wrap_stop(void *ctx) { return td_sink_should_stop(((lazy_ctx *)ctx)->outer); }

static int h_load(td_trainer *t, void *ctx, td_err *err) {
  lazy_ctx *x = ctx;
  int rc = td_dataset_copy(&t->train, x->tr, err);
  return rc ? rc : td_dataset_copy(&t->test, x->te, err);
}

static void h_teardown(td_trainer *t, void *ctx) {
  lazy_ctx *x = ctx;
  (void)t;
  td_mlp_ws_deinit(&x->ws);
  td_mlp_ws_deinit(&x->wt);
  double **bufs[] = {&x->T0, &x->Tt, &x->Ts, &x->Kall, &x->F0, &x->F0s, &x->Hp, &x->Hps,
                     &x->H, &x->Hs, &x->zero, &x->zeros, &x->dout, &x->p0, &x->Z0};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
    free(*bufs[i]);
    *bufs[i] = NULL;
  }
}

static int h_setup(td_trainer *t, void *ctx, td_err *err) {
  lazy_ctx *x = ctx;
  const lazy_cfg *c = x->c;
  const int n = c->n, nt = c->nt, k = c->k, N = n + nt;
  const td_mlp *m = t->m;
  int rc;
  if ((rc = td_mlp_ws_init(&x->ws, m, n, err)) || (rc = td_mlp_ws_init(&x->wt, m, nt, err)))
    return rc;
  td_mlp_ws_set_mode(&x->ws, TD_MLP_EVAL, 0);
  td_mlp_ws_set_mode(&x->wt, TD_MLP_EVAL, 0);
  x->wz = m->layers[m->n_layers - 1].n_in;
  const size_t sz[15] = {(size_t)n * n, (size_t)n * n, (size_t)nt * n, (size_t)n * N,
                         (size_t)n * k, (size_t)nt * k, (size_t)n * k, (size_t)nt * k,
                         (size_t)n * k, (size_t)nt * k, (size_t)n * k, (size_t)nt * k,
                         (size_t)n * k, m->n_params, (size_t)n * x->wz};
  double **bufs[15] = {&x->T0, &x->Tt, &x->Ts, &x->Kall, &x->F0, &x->F0s, &x->Hp, &x->Hps,
                       &x->H, &x->Hs, &x->zero, &x->zeros, &x->dout, &x->p0, &x->Z0};
  for (int i = 0; i < 15; i++)
    if (!(*bufs[i] = calloc(sz[i], sizeof(double))))
      return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  /* the kernel of GD in this parameterization: J diag(lr multipliers) J^T; the model's forward
   * multipliers are applied inside td_entk_compute, mup's lr multipliers (SGD column) here */
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (L->kind != TD_LAYER_LINEAR) continue;
    x->cw[L->index] = L->lr_sgd;
    x->cb[L->index] = L->lr_sgd_b;
  }
  memcpy(x->p0, m->params, sizeof(double) * m->n_params);
  td_entk_opts o = {.full = 0, .w_scale = x->cw, .b_scale = x->cb};
  /* Theta_0 on [train; test] x train, trace / k */
  if ((rc = td_entk_compute(m, m->params, x->Xall, N, x->tr->X, n, &o, x->Kall, err))) return rc;
  for (size_t i = 0; i < (size_t)N * n; i++) x->Kall[i] /= k;
  memcpy(x->T0, x->Kall, sizeof(double) * (size_t)n * n);
  memcpy(x->Ts, x->Kall + (size_t)n * n, sizeof(double) * (size_t)nt * n);
  memcpy(x->F0, td_mlp_forward(m, &x->ws, m->params, x->tr->X, n), sizeof(double) * (size_t)n * k);
  memcpy(x->Z0, x->ws.act[m->n_layers - 1], sizeof(double) * (size_t)n * x->wz);
  memcpy(x->F0s, td_mlp_forward(m, &x->wt, m->params, x->te->X, nt),
         sizeof(double) * (size_t)nt * k);
  return 0;
}

/* h = alpha (f - f_0); t->loss = 1/(2n) sum ||h - y||^2 (function space); the gradient is that
 * of t->loss / alpha^2: dL/df = (h - y) / (n alpha). */
static int h_loss(td_trainer *t, void *ctx, td_err *err) {
  lazy_ctx *x = ctx;
  const lazy_cfg *c = x->c;
  const int n = c->n, k = c->k;
  (void)err;
  const double *f = td_mlp_forward(t->m, &x->ws, t->m->params, x->tr->X, n);
  for (size_t i = 0; i < (size_t)n * k; i++) x->H[i] = c->alpha * (f[i] - x->F0[i]);
  t->loss = half_mse(x->H, x->tr->Y, n, k);
  for (size_t i = 0; i < (size_t)n * k; i++) x->dout[i] = (x->H[i] - x->tr->Y[i]) / (n * c->alpha);
  td_mlp_backward(t->m, &x->ws, t->m->params, x->dout, n, t->m->grad, 0);
  t->grad = t->m->grad;
  return 0;
}

static int h_eval(td_trainer *t, void *ctx, td_err *err) {
  (void)t, (void)ctx, (void)err;
  return 0; /* the analysis hook logs test_loss.w<N> */
}

/* The metrics of the header at step t->step (after h_loss at the same parameters). */
static int h_analyze(td_trainer *t, void *ctx, td_err *err) {
  lazy_ctx *x = ctx;
  const lazy_cfg *c = x->c;
  const td_mlp *m = t->m;
  const int n = c->n, nt = c->nt, k = c->k;
  const long step = t->step, width = x->width;
  int rc;
  td_mlp_forward(m, &x->ws, m->params, x->tr->X, n); /* the features at theta_t */
  double fc = rel(x->ws.act[m->n_layers - 1], x->Z0, (size_t)n * x->wz);
  const double *fs = td_mlp_forward(m, &x->wt, m->params, x->te->X, nt);
  for (size_t i = 0; i < (size_t)nt * k; i++) x->Hs[i] = c->alpha * (fs[i] - x->F0s[i]);
  /* the kernel prediction from h_0 = 0 */
  if ((rc = td_kpred_gd(n, x->T0, nt, x->Ts, k, x->tr->Y, x->zero, x->zeros, c->lr, step, 0.0,
                        x->Hp, x->Hps, NULL, err)))
    return rc;
  double pc = 0, pn = 0; /* in the stored (trained) coordinates */
  for (size_t i = 0; i < m->n_params; i++) {
    double dd = m->params[i] - x->p0[i];
    pc += dd * dd;
    pn += x->p0[i] * x->p0[i];
  }
  td_entk_opts o = {.full = 0, .w_scale = x->cw, .b_scale = x->cb};
  if ((rc = td_entk_compute(m, m->params, x->tr->X, n, NULL, 0, &o, x->Tt, err))) return rc;
  for (size_t i = 0; i < (size_t)n * n; i++) x->Tt[i] /= k;
  double v[6] = {step ? rel(x->Hs, x->Hps, (size_t)nt * k) : 0, rel(x->Tt, x->T0, (size_t)n * n),
                 pn > 0 ? sqrt(pc / pn) : 0, fc, half_mse(x->H, x->tr->Y, n, k),
                 half_mse(x->Hp, x->tr->Y, n, k)};
  metric(x->outer, "fn_distance", width, step, v[0]);
  metric(x->outer, "ntk_change", width, step, v[1]);
  metric(x->outer, "param_change", width, step, v[2]);
  metric(x->outer, "feature_change", width, step, v[3]);
  metric(x->outer, "pred_loss", width, step, v[5]);
  metric(x->outer, "test_loss", width, step, half_mse(x->Hs, x->te->Y, nt, k));
  for (int q = 0; q < 6; q++) x->fin[q] = v[q];
  return 0;
}

static int lazy_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  lazy_cfg c;
  parse_cfg(params, &c);
  const int n = c.n, nt = c.nt, N = n + nt;
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  double *Xall = NULL;
  double fin[6][8] = {{0}};
  int rc = load_data(&c, &tr, &te, err);
  if (rc) goto out;
  if (!(Xall = malloc(sizeof(double) * (size_t)N * c.d))) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    goto out;
  }
  memcpy(Xall, tr.X, sizeof(double) * (size_t)n * c.d);
  memcpy(Xall + (size_t)n * c.d, te.X, sizeof(double) * (size_t)nt * c.d);
  for (int wi = 0; wi < c.n_widths; wi++) {
    lazy_ctx x;
    memset(&x, 0, sizeof x);
    x.c = &c;
    x.tr = &tr;
    x.te = &te;
    x.Xall = Xall;
    x.width = c.widths[wi];
    x.outer = sink;
    x.done_base = (long)wi * c.steps;
    x.total = (long)c.n_widths * c.steps;
    snprintf(x.loss_key, sizeof x.loss_key, "train_loss.w%ld", x.width);
    td_trainer_cfg tc;
    memset(&tc, 0, sizeof tc);
    tc.pb.n_train = (size_t)n;
    tc.pb.n_test = (size_t)nt;
    tc.pb.mlp = mlp_cfg(&c, x.width);
    tc.pb.mlp.param = c.mup ? TD_PARAM_MUP : c.ntk_param ? TD_PARAM_NTK : TD_PARAM_STANDARD;
    tc.pb.mlp.sigma_w2 = c.sw2;
    tc.pb.mlp.sigma_b2 = c.sb2;
    tc.pb.mlp.base_width = 1;
    tc.pb.loss = TD_CURV_MSE;
    tc.pb.seed = c.seed + 1000 * (uint64_t)(wi + 1);
    tc.opt_name = "sgd";
    tc.hp = td_optim_hp_default();
    tc.lr = c.lr;
    if ((rc = td_sched_init(&tc.sched, TD_SCHED_CONSTANT, c.lr, 0, 0, 0.1, 0.0, c.steps, err)))
      goto out;
    tc.full_batch = tc.grad_curv = 1;
    tc.total_steps = c.steps;
    tc.analyze_every = c.log_every;
    tc.loss_key = x.loss_key;
    td_trainer_hooks h = {.ctx = &x, .load = h_load, .setup = h_setup, .loss = h_loss,
                          .eval = h_eval, .analyze = h_analyze, .teardown = h_teardown};
    td_sink ws = {.ctx = &x, .metric = wrap_metric, .progress = wrap_progress,
                  .should_stop = wrap_stop};
    json_t *sum = NULL;
    rc = td_trainer_run(&tc, &h, &ws, &sum, err);
    json_decref(sum);
    if (rc == TD_EDIVERGED && err) {
      char msg[sizeof err->msg];
      snprintf(msg, sizeof msg, "%s", err->msg);
      td_err_set(err, TD_EDIVERGED, "lr", "width %ld: %s", x.width, msg);
    }
    if (rc) goto out;
    for (int q = 0; q < 6; q++) fin[q][wi] = x.fin[q];
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
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(Xall);
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
