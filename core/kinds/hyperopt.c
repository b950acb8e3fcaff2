/* hyperopt.c: the `hyperopt` experiment kind (chapter 11): gradient-based tuning of per-layer L2
 * strengths or of the learning-rate schedule through the unrolled inner training (exact
 * reversal or the stored trajectory),
 * against random search with the same budget, both on the same inner problem.
 *
 * Semantics (also in the schema docs):
 *  - The inner problem and unroll are those of `hypergradient` (kinds/hypergradient.c): the
 *    model on data.* (full batch over n_train), validation loss over n_test held-out examples,
 *    T = steps heavy-ball steps (lr, momentum) from the same initialization for every trial.
 *  - Gradient-based: the outer variables are u_j = log lambda_j (one per linear layer), updated
 *    by Adam (outer.lr, betas 0.9 / 0.999, eps 1e-8; Kingma and Ba 2015) on dL_val/du_j =
 *    lambda_j dL_val/dlambda_j for outer.steps iterations, from l2_init.
 *  - Random search: log10 lambda_j drawn uniformly in [log10 l2_min, log10 l2_max] per layer
 *    (stream TD_RNG_PROBE + 91 of the seed), trials until the budget of the gradient-based run
 *    is spent. Budget unit: one gradient or Hessian-vector product of the training loss (a
 *    trial costs T, a hypergradient by reversal 3 T).
 *  - Metrics: outer_val_loss (step k: L_val at the k-th lambda of the gradient run), l2/<j>
 *    (step k), random_val_loss (step r: the r-th trial), and best_hyperopt / best_random with the
 *    budget spent so far as the step, so both curves share the x-axis.
 *  - tune "lr_schedule": the outer variables are u_t = log lr_t (every step, from lr), with
 *    dL_val/du_t = lr_t dL_val/dlr_t; the L2 strengths stay at l2_init; random search draws a
 *    constant lr log-uniform in [lr_min, lr_max]; metrics lr_mean (step k) and, at the end,
 *    lr_best (step t: the best schedule).
 *  - Summary: best_val_loss_hyperopt, best_val_loss_random, budget, l2_best or lr_best (the
 *    vector), random_trials. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "bilevel/hgmlp.h"
#include "bilevel/hypergrad.h"
#include "kinds/registry.h"
#include "train/trainer.h"

static const td_param ho_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("500", "500", "[32]", "\"relu\"", "\"cross_entropy\""),
    {"steps", TD_PT_INT, "50", 1, 10000, NULL, 0, "unrolled heavy-ball steps T per inner run"},
    {"lr", TD_PT_NUM, "0.1", 1e-12, 1e3, NULL, 0, "inner learning rate"},
    {"momentum", TD_PT_NUM, "0.9", 0.001, 0.999, NULL, 0, "inner heavy-ball momentum (> 0)"},
    {"method", TD_PT_STR, "\"reversal\"", 0, 0, "reversal|reverse", 0,
     "hypergradient: exact reversal (O(P) memory) or the stored trajectory"},
    {"outer.steps", TD_PT_INT, "20", 1, 10000, NULL, 0, "outer (hyperparameter) iterations"},
    {"outer.lr", TD_PT_NUM, "0.3", 1e-6, 100, NULL, 0, "Adam step on log lambda"},
    {"l2_init", TD_PT_NUM, "0.001", 1e-12, 1e3, NULL, 0, "initial L2 strength of every layer"},
    {"l2_min", TD_PT_NUM, "1e-6", 1e-12, 1e3, NULL, 0, "random search: lower end (log-uniform)"},
    {"l2_max", TD_PT_NUM, "1", 1e-12, 1e3, NULL, 0, "random search: upper end (log-uniform)"},
    {"tune", TD_PT_STR, "\"l2\"", 0, 0, "l2|lr_schedule", 0,
     "outer variables: the per-layer L2 strengths, or the learning rate of every step (the "
     "L2 strengths then stay at l2_init)"},
    {"lr_min", TD_PT_NUM, "0.001", 1e-12, 1e3, NULL, 0,
     "tune lr_schedule: random search draws a constant lr log-uniform in [lr_min, lr_max]"},
    {"lr_max", TD_PT_NUM, "1", 1e-12, 1e3, NULL, 0, "tune lr_schedule: see lr_min"},
};

static int ho_check(const json_t *p, td_estimate *est, td_err *err) {
  int prc = td_trainer_require_standard(p, "hyperopt", err);
  if (prc) return prc;
  td_problem_cfg pb;
  int rc = td_trainer_parse_problem(p, 500, 500, 0, &pb, err);
  if (rc) return rc;
  if (td_param_num(p, "l2_min", 1e-6) >= td_param_num(p, "l2_max", 1))
    return td_err_set(err, TD_EINVAL, "params.l2_min", "l2_min must be below l2_max");
  double P, ws, cb, cbv;
  if ((rc = td_mlp_estimate(&pb.mlp, 1, &P, &ws, err)) ||
      (rc = td_curv_estimate(&pb.mlp, (int)pb.n_train, &cb, err)) ||
      (rc = td_curv_estimate(&pb.mlp, (int)pb.n_test, &cbv, err)))
    return rc;
  double T = (double)td_param_int(p, "steps", 50);
  int rev = strcmp(td_param_str(p, "method", "reversal"), "reverse") == 0;
  est->bytes = cb + cbv + 8.0 * P * (rev ? 5 + 2 * T : 12) + td_trainer_data_bytes(&pb);
  est->n_params = P;
  return 0;
}

static int ho_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  td_problem_cfg pb;
  int rc = td_trainer_parse_problem(p, 500, 500, 0, &pb, err);
  if (rc) return rc;
  int T = (int)td_param_int(p, "steps", 50), K = (int)td_param_int(p, "outer.steps", 20);
  double lr = td_param_num(p, "lr", 0.1), mu = td_param_num(p, "momentum", 0.9);
  double olr = td_param_num(p, "outer.lr", 0.3), l2i = td_param_num(p, "l2_init", 1e-3);
  double lmin = log10(td_param_num(p, "l2_min", 1e-6)), lmax = log10(td_param_num(p, "l2_max", 1));
  int rev = strcmp(td_param_str(p, "method", "reversal"), "reverse") == 0;
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  td_mlp *m = NULL;
  td_hgmlp h;
  memset(&h, 0, sizeof h);
  double *lrs = NULL, *w0 = NULL, *wT = NULL, *g = NULL, *ov = NULL, *dlr = NULL;
  int tune_lr = strcmp(td_param_str(p, "tune", "l2"), "lr_schedule") == 0;
  double rlo = log10(td_param_num(p, "lr_min", 1e-3)), rhi = log10(td_param_num(p, "lr_max", 1));
  json_t *s = NULL;
  if ((rc = td_trainer_load(&pb, &tr, &te, err)) || (rc = td_mlp_create(&pb.mlp, &m, err)))
    goto out;
  td_mlp_init(m, pb.seed);
  if ((rc = td_hgmlp_init(&h, m, &tr, pb.n_train, &te, pb.n_test, pb.loss, err))) goto out;
  size_t P = m->n_params;
  int G = h.n_groups;
  lrs = malloc((size_t)T * sizeof *lrs);
  w0 = malloc(P * sizeof *w0);
  wT = malloc(P * sizeof *wT);
  g = malloc(P * sizeof *g);
  double lam[TD_MLP_MAX_LAYERS], dl[TD_MLP_MAX_LAYERS];
  /* the outer variables u (log lambda_j or log lr_t), Adam moments, the best point */
  int NV = tune_lr ? T : G;
  ov = calloc(4 * (size_t)NV, sizeof *ov);
  dlr = calloc((size_t)T, sizeof *dlr);
  if (!lrs || !w0 || !wT || !g || !ov || !dlr) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "hyperopt: out of memory");
    goto out;
  }
  for (int t = 0; t < T; t++) lrs[t] = lr;
  memcpy(w0, m->params, P * sizeof *w0);
  td_hg_problem hp = td_hgmlp_problem(&h);
  double *u = ov, *am = ov + NV, *av = ov + 2 * NV, *best = ov + 3 * NV;
  for (int j = 0; j < NV; j++) u[j] = log(tune_lr ? lr : l2i);
  for (int j = 0; j < G; j++) lam[j] = l2i;
  double budget = 0, best_h = INFINITY;
  for (int k = 0; k <= K; k++) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
      goto out;
    }
    for (int j = 0; j < NV; j++) (tune_lr ? lrs : lam)[j] = exp(u[j]);
    td_hg_unroll un = {.T = T, .lrs = lrs, .mu = mu, .lambda = lam, .w0 = w0};
    td_hg_result r;
    memset(&r, 0, sizeof r);
    r.d_lambda = dl;
    r.d_lr = tune_lr ? dlr : NULL;
    if (k < K) {
      rc = rev ? td_hg_reverse(&hp, &un, 0, &r, err) : td_hg_reversal(&hp, &un, &r, NULL, NULL, err);
      budget += (double)(r.n_grad + r.n_hvp);
    } else { /* the last lambda: evaluate only */
      if (!(rc = td_hg_forward(&hp, &un, wT, NULL, NULL, err)))
        rc = hp.val(hp.ctx, wT, &r.val_loss, g, err);
      budget += T;
    }
    if (rc == TD_ERANGE || (!rc && !isfinite(r.val_loss))) {
      rc = td_err_set(err, TD_EDIVERGED, "params.lr", "the inner training diverged (outer step %d)", k);
      goto out;
    }
    if (rc) goto out;
    td_sink_metric(sink, "outer_val_loss", k, r.val_loss);
    if (tune_lr) {
      double sl = 0;
      for (int t = 0; t < T; t++) sl += lrs[t];
      td_sink_metric(sink, "lr_mean", k, sl / T);
    } else {
      for (int j = 0; j < G; j++) {
        char key[32];
        snprintf(key, sizeof key, "l2/%d", j);
        td_sink_metric(sink, key, k, lam[j]);
      }
    }
    if (r.val_loss < best_h) {
      best_h = r.val_loss;
      for (int j = 0; j < NV; j++) best[j] = exp(u[j]);
    }
    td_sink_metric(sink, "best_hyperopt", (long)budget, best_h);
    td_sink_progress(sink, k + 1, 2 * (K + 1));
    if (k < K) /* Adam on u = log lambda (or log lr) */
      for (int j = 0; j < NV; j++) {
        double gj = tune_lr ? lrs[j] * dlr[j] : lam[j] * dl[j];
        am[j] = 0.9 * am[j] + 0.1 * gj;
        av[j] = 0.999 * av[j] + 0.001 * gj * gj;
        double mh = am[j] / (1 - pow(0.9, k + 1)), vh = av[j] / (1 - pow(0.999, k + 1));
        u[j] -= olr * mh / (sqrt(vh) + 1e-8);
      }
  }
  /* random search with the same budget */
  td_rng rng;
  td_rng_init(&rng, pb.seed, TD_RNG_PROBE + 91);
  double spent = 0, best_r = INFINITY;
  long trials = 0;
  while (spent + T <= budget) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
      goto out;
    }
    if (tune_lr) {
      double l = pow(10.0, rlo + (rhi - rlo) * td_rng_uniform(&rng));
      for (int t = 0; t < T; t++) lrs[t] = l;
    } else {
      for (int j = 0; j < G; j++) lam[j] = pow(10.0, lmin + (lmax - lmin) * td_rng_uniform(&rng));
    }
    td_hg_unroll un = {.T = T, .lrs = lrs, .mu = mu, .lambda = lam, .w0 = w0};
    double vl = NAN;
    rc = td_hg_forward(&hp, &un, wT, NULL, NULL, err);
    if (!rc) rc = hp.val(hp.ctx, wT, &vl, g, err);
    if (rc == TD_ERANGE) rc = 0, vl = NAN; /* a diverged trial is a bad trial, not an error */
    if (rc) goto out;
    spent += T;
    td_sink_metric(sink, "random_val_loss", trials, vl);
    if (vl < best_r) best_r = vl;
    td_sink_metric(sink, "best_random", (long)spent, best_r);
    trials++;
  }
  s = json_object();
  json_object_set_new(s, "best_val_loss_hyperopt", json_real(best_h));
  json_object_set_new(s, "best_val_loss_random", isfinite(best_r) ? json_real(best_r) : json_null());
  json_object_set_new(s, "budget", json_real(budget));
  json_object_set_new(s, "random_trials", json_integer(trials));
  json_t *bl = json_array();
  for (int j = 0; j < NV; j++) json_array_append_new(bl, json_real(best[j]));
  json_object_set_new(s, tune_lr ? "lr_best" : "l2_best", bl);
  json_object_set_new(s, "tune", json_string(tune_lr ? "lr_schedule" : "l2"));
  if (tune_lr)
    for (int t = 0; t < T; t++) td_sink_metric(sink, "lr_best", t, best[t]);
  json_object_set_new(s, "method", json_string(rev ? "reverse" : "reversal"));
  td_sink_progress(sink, 2 * (K + 1), 2 * (K + 1));
out:
  if (s) *summary = s;
  td_hgmlp_deinit(&h);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(lrs), free(w0), free(wT), free(g), free(ov), free(dlr);
  return rc;
}

const td_kind td_kind_hyperopt = {
    .name = "hyperopt",
    .doc = "Gradient-based tuning of per-layer L2 strengths through the unrolled training "
           "(exact reversal) vs random search with the same budget",
    .chapter = "11",
    .params = ho_params,
    .n_params = sizeof ho_params / sizeof ho_params[0],
    .check = ho_check,
    .run = ho_run,
};
