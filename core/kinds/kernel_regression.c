/* kernel_regression.c: the `kernel_regression` experiment kind: NNGP and NTK regression on a
 * Fashion-MNIST subset with one-hot targets, next to a finite network trained on the same
 * subset (chapter 6).
 *
 * On the first n_train training images X and the first n_test test images X* (pixels in
 * [0, 1]; one-hot targets Y, k = 10, as Lee et al. 2018, sec. 3, and Arora et al. 2019,
 * sec. 7, regress on one-hot labels), with the analytic kernels of kernels.h (model.depth
 * hidden layers, model.activation, sigma_w2, sigma_b2):
 *  - NNGP: the GP posterior mean K(X*, X) (K + diag_reg I)^{-1} Y (td_kpred_gp; Lee et al.
 *    2018, eq. 2-3);
 *  - NTK: the infinite-time gradient-flow prediction of an infinitely wide network with
 *    f_0 = 0, Theta(X*, X) (Theta + diag_reg I)^{-1} Y (td_kpred_flow at t = infinity; Jacot
 *    et al. 2018, sec. 5; Arora et al. 2019, eq. 10). It does NOT subtract an initial output:
 *    Lee et al. 2019, eqs. 9-10, carry f_0 terms, and f_0 = 0 is their mean over
 *    initializations (the network's f_0 is a centered Gaussian process), so this is the
 *    prediction of the ensemble mean (ntk_test_*);
 *  - NTK with f_0: eqs. 9-10 WITH the finite network's own initial outputs f_0(X), f_0(X*),
 *    for the same `steps` steps of GD with lr (td_kpred_gd: f(X*) = f_0(X*) - Theta(X*, X)
 *    Theta^{-1} (I - (I - lr Theta / n)^steps) (f_0(X) - Y)), the analytic kernel: what the
 *    finite network converges to as its width grows (ntk_f0_test_*, and
 *    net_ntk_f0_distance = ||f_net(X*) - f_pred(X*)||_F / ||f_pred(X*)||_F);
 *  - the finite network: width `width` in the NTK parameterization (model.h: W =
 *    sigma_w / sqrt(fan_in) omega, b = sigma_b beta, omega, beta ~ N(0, 1) from `seed`; GD on
 *    (omega, beta)), trained on the trainer (core/train/trainer.h, FULL-BATCH mode: `steps`
 *    steps of sgd with learning rate lr on tdlab's squared error 1/(2n) sum ||f - y||^2, one-hot
 *    targets; the metric net_train_loss at every step, and the trainer's test_loss / test_acc
 *    at the last).
 * Reported for each: test accuracy (argmax), test MSE (1/(2 n_test) sum ||f - y||^2, tdlab's
 * convention), and the kernels' condition numbers (of K + diag_reg I and Theta + diag_reg I).
 * A kernel that cannot be factored fails the job with the error naming diag_reg. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "kernels/kernels.h"
#include "kernels/kpred.h"
#include "kinds/registry.h"
#include "nn/data.h"
#include "nn/model.h"
#include "train/trainer.h"

static const td_param kr_params[] = {
    {"data.n_train", TD_PT_INT, "500", 10, 5000, NULL, 0, "the first n_train training images"},
    {"data.n_test", TD_PT_INT, "500", 1, 10000, NULL, 0, "the first n_test test images"},
    {"model.depth", TD_PT_INT, "1", 1, 16, NULL, 0, "hidden layers (kernels and network)"},
    {"model.activation", TD_PT_STR, "\"relu\"", 0, 0, "relu|linear", 0,
     "activation (those with an analytic kernel and a tdlab layer)"},
    {"model.sigma_w2", TD_PT_NUM, "2", 1e-6, 1e6, NULL, 0, "sigma_w^2 of every layer"},
    {"model.sigma_b2", TD_PT_NUM, "0.1", 0, 1e6, NULL, 0, "sigma_b^2 of every layer"},
    {"model.width", TD_PT_INT, "512", 1, 8192, NULL, 0, "width of the finite network"},
    {"diag_reg", TD_PT_NUM, "1e-6", 0, 1e6, NULL, 0,
     "added to the kernels' diagonal before they are factored (times their mean diagonal)"},
    {"lr", TD_PT_NUM, "1", 1e-9, 1e6, NULL, 0, "learning rate of the finite network's GD"},
    {"steps", TD_PT_INT, "500", 0, 100000, NULL, 0, "GD steps of the finite network"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of the finite network"},
};

static int kr_check(const json_t *p, td_estimate *est, td_err *err) {
  (void)err;
  double n = (double)td_param_int(p, "data.n_train", 500), m = (double)td_param_int(p, "data.n_test", 500);
  double w = (double)td_param_int(p, "model.width", 512), L = (double)td_param_int(p, "model.depth", 1);
  double np = 784 * w + (L - 1) * w * w + 10 * w;
  est->bytes = 8.0 * (6 * n * n + 3 * m * n + 4 * np + 4 * (n + m) * w * L) + 70000.0 * 785 * 2;
  est->n_params = np;
  return 0;
}

static void score(const double *F, const td_dataset *te, double *acc, double *mse) {
  int ok = 0;
  double s = 0;
  for (size_t i = 0; i < te->n; i++) {
    int best = 0;
    for (int c = 0; c < 10; c++) {
      double y = c == te->y[i];
      s += (F[i * 10 + c] - y) * (F[i * 10 + c] - y);
      if (F[i * 10 + c] > F[i * 10 + best]) best = c;
    }
    ok += best == te->y[i];
  }
  *acc = (double)ok / te->n;
  *mse = 0.5 * s / te->n;
}

/* The finite network's run on the trainer: data copied in, f_0 recorded at initialization,
 * the test outputs at the end; a sink that offsets the progress by the two kernels. */
typedef struct kr_ctx {
  const td_dataset *tr, *te;
  double *F0, *F0s, *Fnet; /* n x 10, n_test x 10 (f_0), n_test x 10 (trained) */
} kr_ctx;

typedef struct kr_sink_ctx {
  td_sink *outer;
  long base, total;
} kr_sink_ctx;

static int kr_metric(void *ctx, const char *key, long step, double v) {
  return td_sink_metric(((kr_sink_ctx *)ctx)->outer, key, step, v);
}
static void kr_progress(void *ctx, long done, long total) {
  kr_sink_ctx *x = ctx;
  (void)total;
  td_sink_progress(x->outer, x->base + done, x->total);
}
static int kr_stop(void *ctx) { return td_sink_should_stop(((kr_sink_ctx *)ctx)->outer); }

static int kr_load(td_trainer *t, void *ctx, td_err *err) {
  kr_ctx *x = ctx;
  int rc = td_dataset_copy(&t->train, x->tr, err);
  return rc ? rc : td_dataset_copy(&t->test, x->te, err);
}

static int kr_setup(td_trainer *t, void *ctx, td_err *err) {
  kr_ctx *x = ctx;
  double l;
  (void)err;
  td_trainer_evaluate(t->m, &t->ws_eval, t->m->params, &t->train, t->train.n, TD_CURV_MSE, &l,
                      NULL, x->F0);
  td_trainer_evaluate(t->m, &t->ws_eval, t->m->params, &t->test, t->test.n, TD_CURV_MSE, &l,
                      NULL, x->F0s);
  return 0;
}

static int kr_finish(td_trainer *t, void *ctx, json_t *summary, td_err *err) {
  kr_ctx *x = ctx;
  double l;
  (void)summary;
  if (!(x->Fnet = malloc(sizeof(double) * t->test.n * 10)))
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  td_trainer_evaluate(t->m, &t->ws_eval, t->m->params, &t->test, t->test.n, TD_CURV_MSE, &l,
                      NULL, x->Fnet);
  return 0;
}

static int kr_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  int n = (int)td_param_int(params, "data.n_train", 500), nt = (int)td_param_int(params, "data.n_test", 500);
  td_kernel_cfg kc = {.depth = (int)td_param_int(params, "model.depth", 1),
                      .sigma_w2 = td_param_num(params, "model.sigma_w2", 2),
                      .sigma_b2 = td_param_num(params, "model.sigma_b2", 0.1)};
  int lin = !strcmp(td_param_str(params, "model.activation", "relu"), "linear");
  kc.act = lin ? TD_KACT_LINEAR : TD_KACT_RELU;
  double reg = td_param_num(params, "diag_reg", 1e-6), lr = td_param_num(params, "lr", 1);
  long steps = td_param_int(params, "steps", 500), width = td_param_int(params, "model.width", 512);
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  double *K = NULL, *Ks = NULL, *Y = NULL, *F = NULL, *Z = NULL, *Ftr = NULL;
  json_t *sm = NULL;
  int rc;
  if ((rc = td_data_fashion_mnist("train", (size_t)n, &tr, err)) ||
      (rc = td_data_fashion_mnist("test", (size_t)nt, &te, err)))
    goto out;
  rc = TD_ENOMEM;
  K = malloc(sizeof(double) * (size_t)n * n);
  Ks = malloc(sizeof(double) * (size_t)nt * n);
  Y = calloc((size_t)n * 10, sizeof(double));
  F = malloc(sizeof(double) * (size_t)nt * 10);
  Ftr = malloc(sizeof(double) * (size_t)n * 10);
  Z = calloc((size_t)(n > nt ? n : nt) * 10, sizeof(double));
  if (!K || !Ks || !Y || !F || !Ftr || !Z) {
    td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    goto out;
  }
  for (int i = 0; i < n; i++) Y[(size_t)i * 10 + tr.y[i]] = 1;
  sm = json_object();
  const char *names[2] = {"nngp", "ntk"};
  for (int which = 0; which < 2; which++) {
    td_kernel_kind kind = which ? TD_KERNEL_NTK : TD_KERNEL_NNGP;
    if ((rc = td_kernel_matrix(&kc, kind, tr.X, n, NULL, 0, 784, K, err)) ||
        (rc = td_kernel_matrix(&kc, kind, te.X, nt, tr.X, n, 784, Ks, err)))
      goto out;
    double md = 0, cond = NAN;
    for (int i = 0; i < n; i++) md += K[(size_t)i * n + i] / n;
    rc = which ? td_kpred_flow(n, K, nt, Ks, 10, Y, Z, Z, 1.0, INFINITY, reg * md, Ftr, F, &cond, err)
               : td_kpred_gp(n, K, nt, Ks, NULL, 10, Y, reg * md, F, NULL, &cond, err);
    if (rc) goto out;
    double acc, mse;
    score(F, &te, &acc, &mse);
    char key[64];
    snprintf(key, sizeof key, "%s_test_accuracy", names[which]);
    json_object_set_new(sm, key, json_real(acc));
    snprintf(key, sizeof key, "%s_test_mse", names[which]);
    json_object_set_new(sm, key, json_real(mse));
    snprintf(key, sizeof key, "%s_condition_number", names[which]);
    json_object_set_new(sm, key, isfinite(cond) ? json_real(cond) : json_string("Infinity"));
    td_sink_progress(sink, which + 1, 2 + steps);
  }
  /* the finite network, NTK parameterization, full-batch GD on the trainer */
  kr_ctx x = {.tr = &tr, .te = &te, .F0 = calloc((size_t)n * 10, sizeof(double)),
              .F0s = calloc((size_t)nt * 10, sizeof(double))};
  if (!x.F0 || !x.F0s) {
    free(x.F0);
    free(x.F0s);
    rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    goto out;
  }
  td_trainer_cfg tc;
  memset(&tc, 0, sizeof tc);
  tc.pb.n_train = (size_t)n;
  tc.pb.n_test = (size_t)nt;
  tc.pb.mlp = (td_mlp_cfg){.in_dim = 784, .out_dim = 10, .n_hidden = kc.depth,
                           .act = lin ? TD_ACT_LINEAR : TD_ACT_RELU, .init_scale = 1.0,
                           .param = TD_PARAM_NTK, .sigma_w2 = kc.sigma_w2,
                           .sigma_b2 = kc.sigma_b2};
  for (int j = 0; j < kc.depth; j++) tc.pb.mlp.hidden[j] = (int)width;
  tc.pb.loss = TD_CURV_MSE;
  tc.pb.seed = (uint64_t)td_param_int(params, "seed", 0);
  tc.opt_name = "sgd";
  tc.hp = td_optim_hp_default();
  tc.lr = lr;
  if ((rc = td_sched_init(&tc.sched, TD_SCHED_CONSTANT, lr, 0, 0, 0.1, 0.0, steps, err))) {
    free(x.F0);
    free(x.F0s);
    goto out;
  }
  tc.full_batch = tc.grad_curv = 1;
  tc.total_steps = steps;
  tc.loss_key = "net_train_loss";
  kr_sink_ctx sc = {.outer = sink, .base = 2, .total = 2 + steps};
  td_sink wsink = {.ctx = &sc, .metric = kr_metric, .progress = kr_progress, .should_stop = kr_stop};
  td_trainer_hooks h = {.ctx = &x, .load = kr_load, .setup = kr_setup, .finish = kr_finish};
  json_t *tsum = NULL;
  rc = td_trainer_run(&tc, &h, &wsink, &tsum, err);
  json_decref(tsum);
  if (rc == TD_EDIVERGED && err) {
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    td_err_set(err, TD_EDIVERGED, "lr", "the network: %s", msg);
  }
  if (!rc) {
    /* Lee et al. 2019, eqs. 9-10 with the network's f_0, after the same GD steps (K, Ks hold
     * the analytic NTK from the loop above) */
    rc = td_kpred_gd(n, K, nt, Ks, 10, Y, x.F0, x.F0s, lr, steps, 0.0, Ftr, F, NULL, err);
  }
  if (!rc) {
    double acc, mse, num = 0, den = 0;
    score(x.Fnet, &te, &acc, &mse);
    json_object_set_new(sm, "net_test_accuracy", json_real(acc));
    json_object_set_new(sm, "net_test_mse", json_real(mse));
    score(F, &te, &acc, &mse);
    json_object_set_new(sm, "ntk_f0_test_accuracy", json_real(acc));
    json_object_set_new(sm, "ntk_f0_test_mse", json_real(mse));
    for (size_t i = 0; i < (size_t)nt * 10; i++) {
      num += (x.Fnet[i] - F[i]) * (x.Fnet[i] - F[i]);
      den += F[i] * F[i];
    }
    json_object_set_new(sm, "net_ntk_f0_distance", json_real(den > 0 ? sqrt(num / den) : 0));
  }
  free(x.F0);
  free(x.F0s);
  free(x.Fnet);
  if (rc) goto out;
  *summary = sm;
  sm = NULL;
  rc = 0;
out:
  json_decref(sm);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(K);
  free(Ks);
  free(Y);
  free(F);
  free(Ftr);
  free(Z);
  return rc;
}

const td_kind td_kind_kernel_regression = {
    .name = "kernel_regression",
    .doc = "NNGP and NTK regression on a Fashion-MNIST subset beside a finite network trained on it",
    .chapter = "6",
    .params = kr_params,
    .n_params = sizeof kr_params / sizeof kr_params[0],
    .check = kr_check,
    .run = kr_run,
};
