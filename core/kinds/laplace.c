/* laplace.c: the `laplace` kind: train an MLP to its MAP (or start from a checkpoint), fit a
 * Laplace posterior with the GGN as its precision (full, K-FAC, diagonal; all parameters or
 * the last layer), choose the prior precision by maximizing the marginal likelihood, and
 * compare the NLL, accuracy and ECE of the linearized (GLM) and Monte Carlo predictives with
 * the MAP network (chapter 8; MacKay 1992; Daxberger et al. 2021, "Laplace Redux").
 *
 * After the trainer's last step (finish hook), for each structure asked for:
 *   - bayes/laplace.h td_laplace_fit on the first laplace.n_fit training examples (EVAL mode);
 *   - the prior precision delta: laplace.prior_precision, or the maximizer over [1e-4, 1e6]
 *     of the Laplace log marginal likelihood (td_laplace_optimize_prior);
 *   - predictives on the test set with laplace.samples posterior samples: GLM (softmax of
 *     f* + J(x) d, the linearized network) and NN (softmax of f(x; theta* + d));
 *   - summary keys map/{nll,acc,ece,brier}, and <structure>/{log_marglik, prior_precision,
 *     glm_nll, glm_acc, glm_ece, nn_nll, nn_acc, nn_ece, seconds}; artifacts reliability.json (per predictive: bin confidence, accuracy and count
 *     over 15 bins) and marglik.json (log marginal likelihood over a delta grid).
 * Starting from another job's checkpoint: init_from.job / init_from.step with laplace.train
 * false and steps 1 (the trainer's update hook then skips the optimizer step): the posterior
 * is fitted at the checkpoint's parameters exactly.
 * The evidence formula assumes the trained parameters are a mode of the posterior with the
 * chosen delta; with optimizer.weight_decay wd (coupled L2, sgd) the MAP is that of
 * delta = N wd on all parameters. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bayes/laplace.h"
#include "kinds/registry.h"
#include "train/trainer.h"

#define LP_CHUNK 250

static const td_param laplace_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("1000", "2000", "[32]", "\"relu\"", "\"cross_entropy\""),
    TD_TRAINER_OPTIM_PARAMS(TD_TRAINER_OPTIM_NAMES, "0.1"),
    TD_TRAINER_LENGTH_PARAMS,
    {"laplace.structure", TD_PT_STR, "\"all\"", 0, 0, "full|kfac|diag|all", 0,
     "posterior precision N G + delta I with the GGN G: full, kfac (per-layer Kronecker), diag, "
     "or all three (full skipped above 6000 parameters)"},
    {"laplace.subset", TD_PT_STR, "\"last_layer\"", 0, 0, "all|last_layer", 0,
     "parameters with a posterior (others held at the MAP): all, or the last linear layer"},
    {"laplace.prior_precision", TD_PT_NUM, NULL, 1e-12, 1e12, NULL, 0,
     "delta of the prior N(0, I / delta) (absent: maximize the marginal likelihood over "
     "[1e-4, 1e6])"},
    {"laplace.samples", TD_PT_INT, "100", 1, 10000, NULL, 0,
     "posterior samples of the GLM and NN predictives"},
    {"laplace.n_fit", TD_PT_INT, NULL, 1, 60000, NULL, 0,
     "training examples the GGN is computed on (absent: all of n_train)"},
    {"laplace.train", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "false: the optimizer steps are skipped, so the posterior is fitted at the starting "
     "parameters (with init_from: a checkpoint of another job, as it is; give steps 1)"},
    TD_TRAINER_CHECKPOINT_PARAMS,
    TD_DIVERGE_PARAMS,
};

typedef struct lp_cfg {
  td_trainer_cfg tc;
  int st_mask; /* bits 1 << td_laplace_struct */
  td_laplace_subset sub;
  double delta; /* 0: optimize */
  int samples;
  long n_fit;
  int train; /* 0: the update hook skips the optimizer step */
} lp_cfg;

static int parse_cfg(const json_t *p, lp_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  td_trainer_cfg *t = &c->tc;
  int rc = td_trainer_parse_problem(p, 1000, 2000, 0, &t->pb, err);
  if (rc) return rc;
  if (t->pb.loss != TD_CURV_XENT || t->pb.synthetic)
    return td_err_set(err, TD_EINVAL, "params.loss",
                      "laplace: the predictive metrics need a classification set with "
                      "cross_entropy (data.name fashion-mnist)");
  if ((rc = td_trainer_parse_length(p, t, 1e9, 10, err))) return rc;
  if ((rc = td_trainer_parse_optim(p, t, err))) return rc;
  t->metrics = TD_TRAINER_M_GRAD_NORM;
  const char *s = td_param_str(p, "laplace.structure", "all");
  c->st_mask = !strcmp(s, "full")   ? 1 << TD_LAPLACE_FULL
               : !strcmp(s, "kfac") ? 1 << TD_LAPLACE_KFAC
               : !strcmp(s, "diag") ? 1 << TD_LAPLACE_DIAG
                                    : 7;
  c->sub = strcmp(td_param_str(p, "laplace.subset", "last_layer"), "all") ? TD_LAPLACE_LAST_LAYER
                                                                          : TD_LAPLACE_ALL;
  c->delta = td_param_num(p, "laplace.prior_precision", 0);
  c->samples = (int)td_param_int(p, "laplace.samples", 100);
  c->n_fit = td_param_int(p, "laplace.n_fit", (long)t->pb.n_train);
  c->train = td_param_bool(p, "laplace.train", 1);
  if (c->n_fit > (long)t->pb.n_train)
    return td_err_set(err, TD_EINVAL, "params.laplace.n_fit",
                      "laplace.n_fit (%ld) exceeds the training set (%zu)", c->n_fit,
                      t->pb.n_train);
  return td_trainer_parse_checkpoint(p, t, err);
}

/* parameters of the subset for an estimate */
static double subset_params(const td_mlp_cfg *m, td_laplace_subset sub, double np) {
  if (sub == TD_LAPLACE_ALL) return np;
  const int h = m->n_hidden ? m->hidden[m->n_hidden - 1] : m->in_dim;
  return (double)(h + 1) * m->out_dim;
}

static int laplace_check(const json_t *params, td_estimate *est, td_err *err) {
  int prc = td_trainer_require_standard(params, "laplace", err);
  if (prc) return prc;
  lp_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  const td_trainer_cfg *t = &c.tc;
  double np = 0, ws = 0, cb = 0, ob = 0;
  if ((rc = td_mlp_estimate(&t->pb.mlp, t->batch, &np, &ws, err))) return rc;
  if ((rc = td_curv_estimate(&t->pb.mlp, LP_CHUNK, &cb, err))) return rc;
  if ((rc = td_trainer_optim_bytes(t, &ob, err))) return rc;
  const double P = subset_params(&t->pb.mlp, c.sub, np);
  if (c.st_mask == (1 << TD_LAPLACE_FULL) && P > TD_LAPLACE_MAX_FULL)
    return td_err_set(err, TD_EINVAL, "params.laplace.structure",
                      "the full GGN of %.0f parameters is above the cap of %d: use kfac, diag "
                      "or laplace.subset last_layer",
                      P, TD_LAPLACE_MAX_FULL);
  double bytes = 8.0 * np * 4 + ob + 2 * ws + 2 * cb + td_trainer_data_bytes(&t->pb);
  bytes += 8.0 * LP_CHUNK * np;                       /* per-example Jacobian rows */
  bytes += 8.0 * (double)c.samples * np;              /* posterior samples */
  if ((c.st_mask & (1 << TD_LAPLACE_FULL)) && P <= TD_LAPLACE_MAX_FULL) bytes += 16.0 * P * P;
  bytes += 8.0 * 4 * np;                              /* K-FAC factors, generously */
  est->bytes = bytes;
  est->n_params = np;
  return 0;
}

typedef struct lp_state {
  const lp_cfg *c;
} lp_state;

static const char *st_name(int s) {
  return s == TD_LAPLACE_FULL ? "full" : s == TD_LAPLACE_KFAC ? "kfac" : "diag";
}

static json_t *calib_json(const td_laplace_calib *cb) {
  json_t *o = json_object(), *c = json_array(), *a = json_array(), *n = json_array();
  for (int b = 0; b < TD_LAPLACE_ECE_BINS; b++) {
    json_array_append_new(c, cb->count[b] ? json_real(cb->conf[b]) : json_null());
    json_array_append_new(a, cb->count[b] ? json_real(cb->bin_acc[b]) : json_null());
    json_array_append_new(n, json_integer(cb->count[b]));
  }
  json_object_set_new(o, "confidence", c);
  json_object_set_new(o, "accuracy", a);
  json_object_set_new(o, "count", n);
  td_trainer_set_num(o, "ece", cb->ece);
  td_trainer_set_num(o, "nll", cb->nll);
  td_trainer_set_num(o, "acc", cb->acc);
  return o;
}

/* A result of the posterior fit: a summary key (a one-point metric series would only clutter
 * the job page). */
static void put(td_trainer *t, json_t *sum, const char *key, double v) {
  (void)t;
  td_trainer_set_num(sum, key, v);
}

static int emit_artifact(td_sink *sink, const char *name, json_t *o) {
  char *txt = json_dumps(o, JSON_COMPACT);
  int rc = txt ? td_sink_artifact(sink, name, "application/json", txt, strlen(txt)) : TD_ENOMEM;
  free(txt);
  return rc;
}

static int lp_finish(td_trainer *t, void *ctx, json_t *sum, td_err *err) {
  lp_state *s = ctx;
  const lp_cfg *c = s->c;
  json_object_set_new(sum, "steps", json_integer(t->step));
  if (t->status) return 0;
  const size_t nt = t->test.n;
  const int K = t->m->cfg.out_dim;
  double *probs = malloc(nt * (size_t)K * sizeof *probs);
  json_t *rel = json_object(), *ml = json_object();
  td_laplace *L = NULL;
  int rc = 0;
  if (!probs || !rel || !ml) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory");
    goto out;
  }
  td_dataset fit = t->train;
  fit.n = (size_t)c->n_fit;
  td_laplace_calib cb;
  /* the MAP network */
  if ((rc = td_laplace_fit(t->m, t->m->params, &fit, TD_CURV_XENT, TD_LAPLACE_DIAG,
                           TD_LAPLACE_LAST_LAYER, LP_CHUNK, &L, err)))
    goto out;
  if ((rc = td_laplace_predict(L, 1.0, TD_LAPLACE_PRED_MAP, 0, 0, &t->test, nt, LP_CHUNK, probs, err)))
    goto out;
  td_laplace_destroy(L);
  L = NULL;
  td_laplace_calibrate(probs, t->test.y, nt, K, &cb);
  put(t, sum, "map/nll", cb.nll);
  put(t, sum, "map/acc", cb.acc);
  put(t, sum, "map/ece", cb.ece);
  put(t, sum, "map/brier", cb.brier);
  json_object_set_new(rel, "map", calib_json(&cb));
  for (int st = 0; st < 3; st++) {
    if (!(c->st_mask & (1 << st))) continue;
    if (td_sink_should_stop(t->sink)) {
      rc = TD_ECANCELLED;
      goto out;
    }
    char key[64];
    const double t0 = td_trainer_now();
    rc = td_laplace_fit(t->m, t->m->params, &fit, TD_CURV_XENT, (td_laplace_struct)st, c->sub,
                        LP_CHUNK, &L, err);
    if (rc == TD_EINVAL && st == TD_LAPLACE_FULL && c->st_mask != (1 << TD_LAPLACE_FULL)) {
      rc = 0; /* "all": full is skipped above the cap */
      json_object_set_new(sum, "full/skipped", json_string(err->msg));
      continue;
    }
    if (rc) goto out;
    double lml;
    const double delta = c->delta > 0 ? c->delta : td_laplace_optimize_prior(L, 1e-4, 1e6, &lml);
    lml = td_laplace_log_marglik(L, delta);
    snprintf(key, sizeof key, "%s/log_marglik", st_name(st));
    put(t, sum, key, lml);
    snprintf(key, sizeof key, "%s/prior_precision", st_name(st));
    put(t, sum, key, delta);
    {
      json_t *o = json_object(), *xs = json_array(), *ys = json_array();
      for (int i = 0; i <= 60; i++) {
        const double dl = pow(10.0, -4.0 + 10.0 * i / 60.0);
        json_array_append_new(xs, json_real(dl));
        json_array_append_new(ys, json_real(td_laplace_log_marglik(L, dl)));
      }
      json_object_set_new(o, "prior_precision", xs);
      json_object_set_new(o, "log_marglik", ys);
      json_object_set_new(o, "chosen", json_real(delta));
      json_object_set_new(o, "n_params", json_integer((json_int_t)L->P));
      json_object_set_new(ml, st_name(st), o);
    }
    const td_laplace_pred preds[2] = {TD_LAPLACE_PRED_GLM, TD_LAPLACE_PRED_NN};
    const char *pn[2] = {"glm", "nn"};
    for (int q = 0; q < 2; q++) {
      if ((rc = td_laplace_predict(L, delta, preds[q], c->samples, t->cfg->pb.seed, &t->test, nt,
                                   LP_CHUNK, probs, err)))
        goto out;
      td_laplace_calibrate(probs, t->test.y, nt, K, &cb);
      snprintf(key, sizeof key, "%s/%s_nll", st_name(st), pn[q]);
      put(t, sum, key, cb.nll);
      snprintf(key, sizeof key, "%s/%s_acc", st_name(st), pn[q]);
      put(t, sum, key, cb.acc);
      snprintf(key, sizeof key, "%s/%s_ece", st_name(st), pn[q]);
      put(t, sum, key, cb.ece);
      snprintf(key, sizeof key, "%s/%s", st_name(st), pn[q]);
      json_object_set_new(rel, key, calib_json(&cb));
    }
    snprintf(key, sizeof key, "%s/seconds", st_name(st));
    td_trainer_set_num(sum, key, td_trainer_now() - t0);
    td_laplace_destroy(L);
    L = NULL;
  }
  json_object_set_new(sum, "laplace_subset",
                      json_string(c->sub == TD_LAPLACE_ALL ? "all" : "last_layer"));
  if ((rc = emit_artifact(t->sink, "reliability.json", rel))) goto out;
  rc = emit_artifact(t->sink, "marglik.json", ml);
out:
  td_laplace_destroy(L);
  free(probs);
  json_decref(rel);
  json_decref(ml);
  return rc;
}

/* laplace.train false: no optimizer step (the parameters stay those of the start). */
static int lp_no_update(td_trainer *t, void *ctx, td_err *err) {
  (void)t;
  (void)ctx;
  (void)err;
  return 0;
}

static int laplace_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  lp_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  lp_state s = {.c = &c};
  const td_trainer_hooks hooks = {.ctx = &s, .finish = lp_finish,
                                  .update = c.train ? NULL : lp_no_update};
  return td_trainer_run(&c.tc, &hooks, sink, summary, err);
}

const td_kind td_kind_laplace = {
    .name = "laplace",
    .doc = "Train an MLP, fit a Laplace posterior (full / K-FAC / diagonal GGN), choose the prior "
           "by the marginal likelihood, compare NLL / accuracy / ECE with the MAP",
    .chapter = "8",
    .params = laplace_params,
    .n_params = sizeof laplace_params / sizeof laplace_params[0],
    .check = laplace_check,
    .fill = td_optim_fill_params,
    .run = laplace_run,
};
