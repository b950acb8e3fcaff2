/* hyperopt.c: the `hyperopt` experiment kind (chapter 11): gradient-based tuning of per-layer L2
 * strengths or of the learning-rate schedule through the unrolled inner training (exact
 * reversal or the stored trajectory), to be compared with a random-search SWEEP (the sweeps
 * API, POST /api/v1/sweeps) of the same budget on the same inner problem: the job's summary
 * holds that sweep's spec (random_sweep), whose children are hyperopt jobs with
 * outer.steps 0 (one inner run at drawn strengths: the sweep's trials).
 *
 * Semantics (also in the schema docs):
 *  - The inner problem and unroll are those of `hypergradient` (kinds/hypergradient.c): the
 *    model on data.* (full batch over n_train), validation loss over n_test held-out examples,
 *    T = steps heavy-ball steps (lr, momentum) from the same initialization for every trial.
 *  - Gradient-based: the outer variables are u_j = log lambda_j (one per linear layer), updated
 *    by Adam (outer.lr, betas 0.9 / 0.999, eps 1e-8; Kingma and Ba 2015) on dL_val/du_j =
 *    lambda_j dL_val/dlambda_j for outer.steps iterations, from l2_init.
 *    l2 (a list, one per layer) overrides l2_init. outer.steps 0: no outer step, one inner run
 *    at l2 (or at the constant lr) and its L_val: a random-search trial.
 *  - Budget unit: one gradient or Hessian-vector product of the training loss (a trial costs
 *    T, a hypergradient by reversal 3 T, the last evaluation T).
 *  - The random-search sweep of the same budget: summary random_sweep = {"name", "kind":
 *    "hyperopt", "base": these params with outer.steps 0, l2 = l2_init per layer,
 *    random_in_job false, "axes": {"l2[j]": {"log_uniform": [l2_min, l2_max]}} (tune
 *    lr_schedule: {"lr": {"log_uniform": [lr_min, lr_max]}}), "mode": "random", "samples":
 *    floor(budget / T), "seed": seed}, ready to POST to /api/v1/sweeps; child i's trial ends
 *    at budget (i + 1) T, and its summary val_loss is its outer loss. The job page
 *    (web/js/hyperopt.js) finds a sweep of that name and draws its best-so-far beside
 *    best_hyperopt.
 *  - random_in_job true (default false): ALSO the old in-job baseline, labelled as such:
 *    log10 lambda_j uniform in [log10 l2_min, log10 l2_max] (stream TD_RNG_PROBE + 91 of the
 *    seed) until the budget is spent; metrics in_job_random_val_loss (step r),
 *    in_job_best_random (step: budget spent); summary best_val_loss_random_in_job,
 *    random_trials_in_job.
 *  - Metrics: outer_val_loss (step k: L_val at the k-th lambda of the gradient run), l2/<j>
 *    (step k), and best_hyperopt with the budget spent so far as the step (the x-axis the
 *    sweep's best-so-far shares).
 *  - tune "lr_schedule": the outer variables are u_t = log lr_t (every step, from lr), with
 *    dL_val/du_t = lr_t dL_val/dlr_t; the L2 strengths stay at l2_init; random search draws a
 *    constant lr log-uniform in [lr_min, lr_max]; metrics lr_mean (step k) and, at the end,
 *    lr_best (step t: the best schedule).
 *  - Summary: best_val_loss_hyperopt, val_loss (the last outer point's L_val), budget,
 *    l2_best or lr_best (the vector), random_sweep, random_sweep_trials. */
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
    {"outer.steps", TD_PT_INT, "20", 0, 10000, NULL, 0,
     "outer (hyperparameter) iterations; 0: evaluate the start only (a random-search trial)"},
    {"l2", TD_PT_NUM_LIST, NULL, 1e-12, 1e3, NULL, TD_MLP_MAX_LAYERS,
     "initial L2 strength per linear layer (overrides l2_init; the random sweep's axes)"},
    {"random_in_job", TD_PT_BOOL, "false", 0, 0, NULL, 0,
     "also run the in-job random-search baseline (labelled in_job); the comparison proper is "
     "the sweep of summary.random_sweep"},
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
  const json_t *l2 = td_param_get(p, "l2");
  if (l2 && json_is_array(l2) && (int)json_array_size(l2) != pb.mlp.n_hidden + 1)
    return td_err_set(err, TD_EINVAL, "params.l2", "give one L2 strength per linear layer (%d)",
                      pb.mlp.n_hidden + 1);
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

/* The spec of the random-search sweep with the same budget (see the header): NULL on OOM. */
static json_t *random_sweep_spec(const json_t *p, int G, int T, double budget, uint64_t seed,
                                 int tune_lr, double l2i) {
  json_t *base = json_deep_copy(p), *axes = json_object(), *spec = json_object();
  if (!base || !axes || !spec || !json_is_object(base)) {
    json_decref(base), json_decref(axes), json_decref(spec);
    return NULL;
  }
  json_t *outer = json_object_get(base, "outer");
  if (!json_is_object(outer)) {
    outer = json_object();
    json_object_set_new(base, "outer", outer);
  }
  json_object_set_new(outer, "steps", json_integer(0));
  json_object_set_new(base, "random_in_job", json_false());
  if (tune_lr) {
    json_object_set_new(axes, "lr",
                        json_pack("{s:[f,f]}", "log_uniform", td_param_num(p, "lr_min", 1e-3),
                                  td_param_num(p, "lr_max", 1)));
  } else {
    json_t *l2 = json_array();
    for (int j = 0; j < G; j++) {
      json_array_append_new(l2, json_real(l2i));
      char key[32];
      snprintf(key, sizeof key, "l2[%d]", j);
      json_object_set_new(axes, key,
                          json_pack("{s:[f,f]}", "log_uniform", td_param_num(p, "l2_min", 1e-6),
                                    td_param_num(p, "l2_max", 1)));
    }
    json_object_set_new(base, "l2", l2);
  }
  json_object_set_new(spec, "name", json_string("hyperopt-random-search"));
  json_object_set_new(spec, "kind", json_string("hyperopt"));
  json_object_set_new(spec, "base", base);
  json_object_set_new(spec, "axes", axes);
  json_object_set_new(spec, "mode", json_string("random"));
  json_object_set_new(spec, "samples", json_integer((json_int_t)floor(budget / T)));
  json_object_set_new(spec, "seed", json_integer((json_int_t)(seed & 0x7fffffff)));
  return spec;
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
  const json_t *l2v = td_param_get(p, "l2");
  for (int j = 0; j < G; j++)
    lam[j] = json_is_array(l2v) ? json_number_value(json_array_get(l2v, (size_t)j)) : l2i;
  for (int j = 0; j < NV; j++) u[j] = log(tune_lr ? lr : lam[j]);
  double budget = 0, best_h = INFINITY, last_val = NAN;
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
    last_val = r.val_loss;
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
  /* the in-job random-search baseline (random_in_job), labelled as such */
  int in_job = td_param_bool(p, "random_in_job", 0);
  td_rng rng;
  td_rng_init(&rng, pb.seed, TD_RNG_PROBE + 91);
  double spent = 0, best_r = INFINITY;
  long trials = 0;
  while (in_job && spent + T <= budget) {
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
    td_sink_metric(sink, "in_job_random_val_loss", trials, vl);
    if (vl < best_r) best_r = vl;
    td_sink_metric(sink, "in_job_best_random", (long)spent, best_r);
    trials++;
  }
  s = json_object();
  json_object_set_new(s, "best_val_loss_hyperopt", json_real(best_h));
  json_object_set_new(s, "val_loss", json_real(last_val));
  if (in_job) {
    json_object_set_new(s, "best_val_loss_random_in_job",
                        isfinite(best_r) ? json_real(best_r) : json_null());
    json_object_set_new(s, "random_trials_in_job", json_integer(trials));
  }
  json_object_set_new(s, "budget", json_real(budget));
  if (K > 0) {
    json_t *spec = random_sweep_spec(p, G, T, budget, pb.seed, tune_lr, l2i);
    json_object_set_new(s, "random_sweep_trials", json_integer((json_int_t)floor(budget / T)));
    if (spec) json_object_set_new(s, "random_sweep", spec);
  }
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
    .doc = "Gradient-based tuning of per-layer L2 strengths (or the lr schedule) through the "
           "unrolled training (exact reversal); summary.random_sweep is the random-search "
           "sweep of the same budget to POST to /api/v1/sweeps",
    .chapter = "11",
    .params = ho_params,
    .n_params = sizeof ho_params / sizeof ho_params[0],
    .check = ho_check,
    .run = ho_run,
};
