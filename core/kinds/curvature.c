/* curvature.c: the `curvature` experiment kind: train an MLP and track the Hessian spectrum
 * (sharpness, top-k, GGN top, trace, density) on a fixed analysis batch (chapters 2, 3, 9).
 *
 * Semantics (also in the schema docs):
 *  - Training is that of `train`: the same data, model, loss, optimizers, epoch-wise shuffled
 *    minibatches from stream TD_RNG_SHUFFLE, steps 1..T, train_loss/grad_norm at step t on the
 *    minibatch before update t, evaluations (test_loss, test_acc) at 0, every eval_every and T.
 *  - The analysis batch is the first analysis_n training examples in file order (fixed for the
 *    whole run). L is the mean loss on it (DESIGN: sharpness is the largest algebraic
 *    eigenvalue of the Hessian of the training loss on the analysis batch).
 *  - Analyses happen at step 0 (init), every analyze_every steps and ALWAYS at the last step T,
 *    at the parameters after update t. They log sharpness (= hessian_eig_1), hessian_eig_1..k,
 *    sharpness_resid (max(Lanczos residual ||H y - theta y||, eps ||H|| sqrt(n_params)): a
 *    bound on the eigenvalue error, Parlett Thm 4.5.1 plus the products' rounding; ckind.c),
 *    lanczos_steps, analysis_loss, and optionally hessian_max_abs_eig, ggn_top, hessian_trace
 *    (+ hessian_trace_stderr), with artifacts eigenvalues_step<t>.json, eigenvalues.json (all
 *    steps so far), and with analysis.density density_step<t>.json / density.json (SLQ:
 *    {grid, density, nodes, weights, ...}). With sgd (dampening 0), heavy_ball or nesterov
 *    also predicted_spectral_radius: the largest spectral radius of the method's 2x2
 *    iteration matrix (games/momentum.h) at the next update's lr over the top-k eigenvalues
 *    (+ the coupled weight decay), the full-batch quadratic model's rate (chapter 9).
 *  - At the end, params.safetensors (application/octet-stream) holds the final parameters, the
 *    very point of the last analysis, with metadata (step, sharpness, analysis_n, loss,
 *    activation, dataset) for tests/hessian_torch_check.py.
 *  - Divergence: the rule of core/train/diverge.h (params.divergence.*) on the minibatch
 *    loss, and a non-finite analysis loss: TD_EDIVERGED with summary.diverged_step.
 *  - The loop, optimizers and evaluation are the trainer's (core/train/trainer.h); this file
 *    is a schema and three hooks (analyze, finish, teardown): the shortest example of a kind. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "games/momentum.h"
#include "kinds/ckind_internal.h"
#include "kinds/registry.h"
#include "nn/checkpoint.h"
#include "train/trainer.h"

static const td_param curvature_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("all 60000", "all 10000", "[128]", "\"relu\"", "\"cross_entropy\""),
    TD_TRAINER_OPTIM_PARAMS(TD_TRAINER_OPTIM_NAMES "|" TD_SOPT_NAMES, "0.05"),
    TD_SOPT_PARAMS,
    TD_TRAINER_LENGTH_PARAMS,
    {"analyze_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between curvature analyses (absent: about 10; always at step 0 and the last step)"},
    {"analysis_n", TD_PT_INT, NULL, 1, 60000, NULL, 0,
     "analysis batch: the first analysis_n training examples in file order (absent: "
     "min(1000, n_train))"},
    TD_CKIND__ANALYSIS_PARAMS("5", "1e-10", "20", "false", "true"),
    TD_TRAINER_CHECKPOINT_PARAMS,
    TD_TRAINER_FORK_PARAMS,
    TD_DIVERGE_PARAMS,
};

typedef struct curv_cfg {
  td_trainer_cfg tc;
  int analysis_n;
  td_ckind__ana_opts ana;
} curv_cfg;

static int parse_cfg(const json_t *p, curv_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  td_trainer_cfg *t = &c->tc;
  int rc = td_trainer_parse_problem(p, 0, 0, 0, &t->pb, err);
  if (rc) return rc;
  if ((rc = td_trainer_parse_length(p, t, 1e9, 10, err))) return rc;
  if ((rc = td_trainer_parse_optim(p, t, err))) return rc;
  t->metrics = TD_TRAINER_M_GRAD_NORM;
  t->analyze_every = td_param_int(p, "analyze_every", 0);
  if (t->analyze_every <= 0)
    t->analyze_every = t->total_steps >= 10 ? (t->total_steps + 9) / 10 : 1;
  long an = td_param_int(p, "analysis_n", 0);
  if (an <= 0) an = t->pb.n_train < 1000 ? (long)t->pb.n_train : 1000;
  if (an > (long)t->pb.n_train)
    return td_err_set(err, TD_EINVAL, "params.analysis_n",
                      "analysis_n (%ld) exceeds the training set (%zu examples)", an,
                      t->pb.n_train);
  c->analysis_n = (int)an;
  td_ckind__parse_analysis(p, &c->ana);
  return td_trainer_parse_checkpoint(p, t, err);
}

static int curvature_check(const json_t *params, td_estimate *est, td_err *err) {
  curv_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  const td_trainer_cfg *t = &c.tc;
  double np = 0, ws = 0, ws_eval = 0, cb = 0, ob = 0;
  if ((rc = td_mlp_estimate(&t->pb.mlp, t->batch, &np, &ws, err))) return rc;
  if ((rc = td_mlp_estimate(&t->pb.mlp, TD_TRAINER_EVAL_BATCH, &np, &ws_eval, err))) return rc;
  if ((rc = td_curv_estimate(&t->pb.mlp, c.analysis_n, &cb, err))) return rc;
  if ((rc = td_trainer_optim_bytes(t, &ob, err))) return rc;
  double d = t->pb.mlp.in_dim, k = t->pb.mlp.out_dim;
  double bytes = 8.0 * np * 3 + ob;                      /* params, grad, checkpoint; optimizer */
  bytes += ws + ws_eval + cb;                            /* activations, curvature buffers */
  bytes += td_ckind__analysis_bytes(&c.ana, np);         /* Lanczos / SLQ basis */
  bytes += td_trainer_data_bytes(&t->pb) + 8.0 * t->pb.n_train;
  bytes += 8.0 * t->batch * (d + k);
  est->bytes = bytes;
  est->n_params = np;
  return 0;
}

/* The kind's own state: the analysis batch and its results. */
typedef struct curv_state {
  const curv_cfg *c;
  td_curv_ctx ac; /* the first analysis_n training examples */
  json_t *hist;   /* rolling eigenvalues.json */
  td_ckind__ana_result ar;
  double secs, smax;
  long n_ana;
} curv_state;

/* For the momentum family (sgd with dampening 0, heavy_ball, nesterov): the largest spectral
 * radius of the method's 2x2 iteration matrix (games/momentum.h) at the lr of the next update
 * over the top-k Hessian eigenvalues just computed, each shifted by the coupled L2 weight
 * decay (the gradient g + wd p adds wd to the curvature): the full-batch quadratic model's
 * predicted per-step factor along those directions. Logged as predicted_spectral_radius. */
static int predict_rho(td_trainer *t, curv_state *s) {
  const td_trainer_cfg *tc = &s->c->tc;
  td_mom_method mm;
  if (strcmp(tc->opt_name, "sgd") == 0 && tc->hp.dampening == 0)
    mm = tc->hp.nesterov ? TD_MOM_NESTEROV : tc->hp.momentum > 0 ? TD_MOM_HEAVY_BALL : TD_MOM_GD;
  else if (strcmp(tc->opt_name, "heavy_ball") == 0) mm = TD_MOM_HEAVY_BALL;
  else if (strcmp(tc->opt_name, "nesterov") == 0) mm = TD_MOM_NESTEROV;
  else return 0;
  const json_t *rows = json_object_get(s->hist, "hessian_top_k");
  const json_t *row = json_array_get(rows, json_array_size(rows) - 1);
  if (!json_array_size(row)) return 0;
  double lr = td_sched_lr(&tc->sched, t->step + 1), rho = 0;
  for (size_t i = 0; i < json_array_size(row); i++)
    rho = fmax(rho, td_mom_rho(mm, lr, mm == TD_MOM_GD ? 0 : tc->hp.momentum,
                               json_number_value(json_array_get(row, i)) + tc->hp.weight_decay));
  return td_sink_metric(t->sink, "predicted_spectral_radius", t->step, rho);
}

static int curv_analyze(td_trainer *t, void *ctx, td_err *err) {
  curv_state *s = ctx;
  int rc = 0;
  if (!s->hist) { /* first analysis (step 0): bind the analysis batch */
    s->smax = -INFINITY;
    if (!(s->hist = json_object()))
      return td_err_set(err, TD_ENOMEM, NULL, "curvature: out of memory");
    if ((rc = td_curv_init(&s->ac, t->m, s->c->analysis_n, err)) ||
        (rc = td_curv_set_batch(&s->ac, t->train.X, t->train.y, t->train.Y, s->c->analysis_n,
                                s->c->tc.pb.loss, err)))
      return rc;
  }
  double t0 = td_trainer_now();
  rc = td_curv_set_point(&s->ac, t->m->params, err);
  if (rc == TD_ERANGE)
    return td_err_set(err, TD_EDIVERGED, NULL, "analysis loss is not finite at step %ld",
                      t->step);
  if (!rc) rc = td_ckind__analyze(&s->ac, &s->c->ana, t->step, t->sink, s->hist, &s->ar, err);
  s->secs += td_trainer_now() - t0;
  if (rc) return rc;
  s->n_ana++;
  if (s->ar.sharpness > s->smax) s->smax = s->ar.sharpness;
  return predict_rho(t, s);
}

/* The final parameters as params.safetensors, with what a cross-check needs in metadata. */
static int save_params(td_trainer *t, curv_state *s, td_err *err) {
  const curv_cfg *c = s->c;
  char buf[64];
  json_t *meta = json_object();
  snprintf(buf, sizeof buf, "%ld", t->step);
  json_object_set_new(meta, "step", json_string(buf));
  snprintf(buf, sizeof buf, "%.17g", s->ar.sharpness);
  json_object_set_new(meta, "sharpness", json_string(buf));
  snprintf(buf, sizeof buf, "%d", c->analysis_n);
  json_object_set_new(meta, "analysis_n", json_string(buf));
  json_object_set_new(meta, "loss",
                      json_string(c->tc.pb.loss == TD_CURV_MSE ? "mse" : "cross_entropy"));
  json_object_set_new(meta, "dataset",
                      json_string(c->tc.pb.synthetic ? "synthetic" : "fashion-mnist"));
  json_object_set_new(meta, "kind", json_string("curvature"));
  unsigned char *bytes = NULL;
  size_t len = 0;
  int rc = td_checkpoint_save(t->m, t->m->params, meta, &bytes, &len, err);
  if (!rc)
    rc = td_sink_artifact(t->sink, "params.safetensors", "application/octet-stream", bytes, len);
  free(bytes);
  json_decref(meta);
  return rc;
}

static int curv_finish(td_trainer *t, void *ctx, json_t *sum, td_err *err) {
  curv_state *s = ctx;
  json_object_set_new(sum, "steps", json_integer(t->step));
  json_object_set_new(sum, "analyses", json_integer(s->n_ana));
  td_trainer_set_num(sum, "analysis_seconds", s->secs);
  if (t->diverged_step >= 0) {
    td_trainer_set_num(sum, "train_loss", t->loss);
    return 0;
  }
  td_trainer_set_num(sum, "sharpness", s->ar.sharpness);
  td_trainer_set_num(sum, "sharpness_max", s->smax);
  td_trainer_set_num(sum, "sharpness_resid", s->ar.resid);
  td_trainer_set_num(sum, "test_loss", t->ev[0]);
  if (t->test.y) td_trainer_set_num(sum, "test_acc", t->ev[1]);
  td_trainer_set_num(sum, "last_batch_loss", t->loss);
  return t->status ? 0 : save_params(t, s, err);
}

static void curv_teardown(td_trainer *t, void *ctx) {
  (void)t;
  curv_state *s = ctx;
  td_curv_deinit(&s->ac);
  json_decref(s->hist);
}

static int curvature_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  curv_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  curv_state s = {.c = &c};
  const td_trainer_hooks hooks = {.ctx = &s,
                                  .analyze = curv_analyze,
                                  .finish = curv_finish,
                                  .teardown = curv_teardown};
  return td_trainer_run(&c.tc, &hooks, sink, summary, err);
}

const td_kind td_kind_curvature = {
    .name = "curvature",
    .doc = "Train an MLP and track the Hessian spectrum (sharpness, top-k, GGN, trace, density) "
           "on a fixed analysis batch",
    .chapter = "2,3,9",
    .params = curvature_params,
    .n_params = sizeof curvature_params / sizeof curvature_params[0],
    .check = curvature_check,
    .fill = td_optim_fill_params,
    .run = curvature_run,
};
