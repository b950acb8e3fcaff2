/* eos.c: the `eos` experiment kind: full-batch gradient descent (optionally heavy-ball momentum)
 * with the sharpness tracked against the stability threshold 2/lr: the edge of stability of
 * Cohen, Kaur, Li, Kolter, Talwalkar 2021, "Gradient descent on neural networks typically
 * occurs at the edge of stability", ICLR (chapter 4).
 *
 * Semantics (also in the schema docs):
 *  - The training set is the first n_train examples (file order); every step is one update
 *    theta_{t+1} = theta_t - lr grad L(theta_t) with the FULL-batch gradient of the mean loss
 *    (heavy ball with momentum beta: PyTorch SGD's buf = beta buf + g, theta -= lr buf, i.e.
 *    theta_{t+1} = theta_t - lr g_t + beta (theta_t - theta_{t-1})).
 *  - Step t refers to theta_t (t = 0 is the initialization; T updates give steps 0..T):
 *    train_loss, train_acc (classification) and grad_norm at step t are those of theta_t, and
 *    so is the sharpness (largest algebraic Hessian eigenvalue of the loss on the analysis
 *    batch, Lanczos) logged at 0, every analyze_every steps and at T, with beside it, at the
 *    same step: two_over_lr = 2/lr and stability_threshold = (2 + 2 beta)/lr (with
 *    nesterov: (2 + 2 beta)/((1 + 2 beta) lr)), threshold_heavy_ball and threshold_nesterov
 *    (both, whatever the method), and predicted_spectral_radius: the largest spectral radius
 *    of the method's 2x2 iteration matrix (games/momentum.h) over the top analysis.top_k
 *    Hessian eigenvalues, i.e. the rate the quadratic model at theta_t predicts along
 *    those directions (> 1: unstable there).
 *  - Why these thresholds: on a quadratic with curvature lambda, GD multiplies the error along
 *    that eigenvector by (1 - lr lambda) per step and diverges iff lr lambda > 2 (Cohen et al.
 *    2021, sec. 2); heavy ball's iteration matrix [[1 + beta - lr lambda, -beta], [1, 0]] has
 *    spectral radius < 1 iff lr lambda < 2 + 2 beta (Cohen et al. 2021, appendix on momentum;
 *    Goh 2017, "Why momentum really works"); Nesterov's, [[(1 - a)(1 + beta), -(1 - a) beta],
 *    [1, 0]] with a = lr lambda, iff lr lambda < (2 + 2 beta)/(1 + 2 beta) (Jury's test,
 *    derived in games/momentum.h). The edge-of-stability signature: sharpness rises
 *    (progressive sharpening) until it reaches the threshold, then hovers at or just above it
 *    while the loss keeps decreasing non-monotonically.
 *  - The analysis batch is the first analysis_n training examples (absent: the whole training
 *    set, which is then the very batch of the GD step, so the cached forward pass is reused).
 *  - Divergence: the shared rule of core/train/diverge.h (params.divergence.*; it replaces
 *    the former rule "loss above 1e6 times its initial value"): a non-finite loss, a loss
 *    above divergence.max_ratio times the initial loss, or a spike that never recovers below
 *    divergence.recover_ratio times it (edge-of-stability spikes recover) ends the job with
 *    TD_EDIVERGED and summary.diverged_step; so does a non-finite analysis loss.
 *  - The loop is the trainer's FULL-BATCH mode (core/train/trainer.h); this file adds the
 *    analysis hook (sharpness against the thresholds) and the summary.
 *  - Summary: sharpness_final, sharpness_max, two_over_lr, stability_threshold,
 *    first_step_at_threshold (the first analysis step with sharpness >= 0.95 threshold
 *    after an analysis below it, i.e. reached by progressive sharpening; -1 if none) and late_ratio_mean / late_ratio_max (sharpness / threshold over the last quarter
 *    of the analyses).
 *
 * The defaults show both phases in about two CPU-minutes: Fashion-MNIST n_train = 1000
 * (centered inputs), MLP 784-100-100-10 tanh, mse, lr = 0.1 (2/lr = 20), 1000 steps, sharpness
 * every 10 steps. Measured (seed 0): sharpness 31.4 at init drops to 15.7 by step 80 while
 * the loss falls from 0.73 to 0.18; progressive sharpening then takes it to 24.7 at step 350;
 * the loss spikes at step 380 and from step 400 on the sharpness hovers at 20.2-21.9
 * (sharpness / (2/lr) = 1.01-1.09) while the loss keeps falling non-monotonically (0.115 at
 * step 400, 0.061 at step 1500). Without data.center the mean-input direction dominates the
 * Hessian (sharpness ~100-130 at init) and GD at lr 0.1 diverges at once. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "games/momentum.h"
#include "kinds/ckind_internal.h"
#include "kinds/registry.h"
#include "train/trainer.h"

static const td_param eos_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("1000", "1000", "[100, 100]", "\"tanh\"", "\"mse\""),
    {"data.center", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "subtract the training set's per-feature mean from train and test inputs (as Cohen et al. "
     "2021 do); without it the mean input direction dominates the sharpness"},
    {"lr", TD_PT_NUM, "0.1", 1e-12, 1e6, NULL, 0, "learning rate of full-batch GD"},
    {"momentum", TD_PT_NUM, "0", 0, 0.999, NULL, 0,
     "heavy-ball momentum beta (PyTorch SGD convention); threshold becomes (2 + 2 beta)/lr"},
    {"nesterov", TD_PT_BOOL, "false", 0, 0, NULL, 0,
     "Nesterov momentum (PyTorch's nesterov=True, needs momentum > 0); threshold becomes "
     "(2 + 2 beta)/((1 + 2 beta) lr)"},
    {"steps", TD_PT_INT, "1000", 1, 1e7, NULL, 0, "GD updates T (metrics at steps 0..T)"},
    {"analyze_every", TD_PT_INT, "10", 1, 1e9, NULL, 0,
     "steps between sharpness computations (always at 0 and T)"},
    {"analysis_n", TD_PT_INT, NULL, 1, 60000, NULL, 0,
     "sharpness on the first analysis_n training examples (absent: the whole training set)"},
    {"eval_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between test evaluations (absent: about 10; always at 0 and T)"},
    TD_CKIND__ANALYSIS_PARAMS("1", "1e-6", "0", "false", "false"),
    TD_TRAINER_CHECKPOINT_PARAMS,
    TD_TRAINER_FORK_PARAMS,
    TD_DIVERGE_PARAMS,
};

typedef struct eos_cfg {
  td_trainer_cfg tc;
  double beta;
  int nesterov;
  int analysis_n;
  td_ckind__ana_opts ana;
} eos_cfg;

static int parse_cfg(const json_t *p, eos_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  td_trainer_cfg *t = &c->tc;
  int rc = td_trainer_parse_problem(p, 1000, 1000, 1, &t->pb, err);
  if (rc) return rc;
  t->full_batch = t->grad_curv = 1;
  t->metrics = TD_TRAINER_M_GRAD_NORM | TD_TRAINER_M_TRAIN_ACC;
  t->lr = td_param_num(p, "lr", 0.1);
  c->beta = td_param_num(p, "momentum", 0.0);
  t->opt_name = "sgd";
  t->hp = td_optim_hp_default();
  t->hp.momentum = c->beta;
  c->nesterov = td_param_bool(p, "nesterov", 0);
  if (c->nesterov && !(c->beta > 0))
    return td_err_set(err, TD_EINVAL, "params.nesterov",
                      "params.nesterov needs params.momentum > 0 (as PyTorch)");
  t->hp.nesterov = c->nesterov;
  t->total_steps = td_param_int(p, "steps", 1000);
  t->analyze_every = td_param_int(p, "analyze_every", 10);
  t->eval_every = td_param_int(p, "eval_every", 0);
  if (t->eval_every <= 0)
    t->eval_every = t->total_steps >= 10 ? (t->total_steps + 9) / 10 : 1;
  if ((rc = td_sched_init(&t->sched, TD_SCHED_CONSTANT, t->lr, 0, 0, 0.1, 0.0, t->total_steps,
                          err)))
    return rc;
  if ((rc = td_diverge_parse(p, &t->div, err))) return rc;
  long an = td_param_int(p, "analysis_n", 0);
  if (an > (long)t->pb.n_train)
    return td_err_set(err, TD_EINVAL, "params.analysis_n",
                      "analysis_n (%ld) exceeds the training set (%zu examples)", an,
                      t->pb.n_train);
  if ((double)t->pb.n_train > 2147483647.0)
    return td_err_set(err, TD_EINVAL, "params.data.n_train", "n_train too large");
  c->analysis_n = an > 0 ? (int)an : (int)t->pb.n_train;
  td_ckind__parse_analysis(p, &c->ana);
  c->ana.artifacts = 0; /* hundreds of analyses: only the rolling eigenvalues.json */
  return td_trainer_parse_checkpoint(p, t, err);
}

static int eos_check(const json_t *params, td_estimate *est, td_err *err) {
  eos_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  const td_problem_cfg *pb = &c.tc.pb;
  double cb = 0, cb2 = 0, np = 0, ws = 0;
  if ((rc = td_curv_estimate(&pb->mlp, (int)pb->n_train, &cb, err))) return rc;
  if (c.analysis_n < (int)pb->n_train &&
      (rc = td_curv_estimate(&pb->mlp, c.analysis_n, &cb2, err)))
    return rc;
  if ((rc = td_mlp_estimate(&pb->mlp, TD_TRAINER_EVAL_BATCH, &np, &ws, err))) return rc;
  est->bytes = cb + cb2 + ws + 8.0 * np * 3 + td_ckind__analysis_bytes(&c.ana, np) +
               td_trainer_data_bytes(pb);
  est->n_params = np;
  return 0;
}

/* The kind's own state: the analysis context (when analysis_n < n_train) and the statistics
 * of the sharpness against the threshold. */
typedef struct eos_state {
  const eos_cfg *c;
  td_curv_ctx ana;
  json_t *hist;
  td_ckind__ana_result ar;
  double two_over_lr, thr, smax, late_sum, late_max;
  long n_ana, n_late, first_at, late_from;
  int was_below, separate;
} eos_state;

static int eos_setup(td_trainer *t, void *ctx, td_err *err) {
  eos_state *s = ctx;
  const eos_cfg *c = s->c;
  const long T = c->tc.total_steps, every = c->tc.analyze_every;
  s->two_over_lr = 2.0 / c->tc.lr;
  s->thr = td_mom_threshold(c->nesterov ? TD_MOM_NESTEROV : TD_MOM_HEAVY_BALL, c->tc.lr,
                            c->beta);
  s->smax = -INFINITY;
  s->late_max = -INFINITY;
  s->first_at = -1;
  const long n_ana_total = T / every + 1 + (T % every != 0);
  s->late_from = n_ana_total - (n_ana_total + 3) / 4; /* index of the first late one */
  int rc;
  s->separate = c->analysis_n < (int)t->train.n;
  if (s->separate &&
      ((rc = td_curv_init(&s->ana, t->m, c->analysis_n, err)) ||
       (rc = td_curv_set_batch(&s->ana, t->train.X, t->train.y, t->train.Y, c->analysis_n,
                               c->tc.pb.loss, err))))
    return rc;
  if (!(s->hist = json_object())) return td_err_set(err, TD_ENOMEM, NULL, "eos: out of memory");
  return 0;
}

/* Sharpness at theta_t (the whole training set's context, already at theta_t, unless a
 * separate analysis batch is asked for) and its ratio to the thresholds. */
static int eos_analyze(td_trainer *t, void *ctx, td_err *err) {
  eos_state *s = ctx;
  const long step = t->step;
  td_curv_ctx *ac = &t->cc;
  if (s->separate) {
    ac = &s->ana;
    if (td_curv_set_point(ac, t->m->params, NULL) == TD_ERANGE)
      return td_err_set(err, TD_EDIVERGED, NULL, "the analysis loss is not finite at step %ld",
                        step);
  }
  int rc = td_ckind__analyze(ac, &s->c->ana, step, t->sink, s->hist, &s->ar, err);
  if (!rc) rc = td_sink_metric(t->sink, "two_over_lr", step, s->two_over_lr);
  if (!rc) rc = td_sink_metric(t->sink, "stability_threshold", step, s->thr);
  if (!rc) rc = td_sink_metric(t->sink, "sharpness_ratio", step, s->ar.sharpness / s->thr);
  if (!rc)
    rc = td_sink_metric(t->sink, "threshold_heavy_ball", step,
                        td_mom_threshold(TD_MOM_HEAVY_BALL, s->c->tc.lr, s->c->beta));
  if (!rc)
    rc = td_sink_metric(t->sink, "threshold_nesterov", step,
                        td_mom_threshold(TD_MOM_NESTEROV, s->c->tc.lr, s->c->beta));
  /* The quadratic model at theta_t: each top Hessian eigenvalue lambda_i is a mode of the
   * method's 2x2 iteration (games/momentum.h); the largest spectral radius among them. */
  const json_t *rows = json_object_get(s->hist, "hessian_top_k");
  const json_t *row = json_array_get(rows, json_array_size(rows) - 1);
  if (!rc && json_array_size(row) > 0) {
    double rho = 0;
    td_mom_method mm = s->c->nesterov ? TD_MOM_NESTEROV
                       : s->c->beta > 0 ? TD_MOM_HEAVY_BALL
                                        : TD_MOM_GD;
    for (size_t i = 0; i < json_array_size(row); i++)
      rho = fmax(rho, td_mom_rho(mm, s->c->tc.lr, s->c->beta,
                                 json_number_value(json_array_get(row, i))));
    rc = td_sink_metric(t->sink, "predicted_spectral_radius", step, rho);
  }
  if (rc) return rc;
  const double sh = s->ar.sharpness;
  if (sh > s->smax) s->smax = sh;
  if (sh < 0.95 * s->thr) s->was_below = 1;
  else if (s->first_at < 0 && s->was_below) s->first_at = step;
  if (s->n_ana >= s->late_from) {
    s->late_sum += sh / s->thr;
    if (sh / s->thr > s->late_max) s->late_max = sh / s->thr;
    s->n_late++;
  }
  s->n_ana++;
  return 0;
}

static int eos_finish(td_trainer *t, void *ctx, json_t *sum, td_err *err) {
  (void)err;
  eos_state *s = ctx;
  json_object_set_new(sum, "n_train", json_integer((json_int_t)t->train.n));
  td_trainer_set_num(sum, "two_over_lr", s->two_over_lr);
  td_trainer_set_num(sum, "stability_threshold", s->thr);
  td_trainer_set_num(sum, "sharpness_final", s->ar.sharpness);
  td_trainer_set_num(sum, "sharpness_max", s->smax);
  json_object_set_new(sum, "first_step_at_threshold", json_integer(s->first_at));
  td_trainer_set_num(sum, "late_ratio_mean", s->n_late ? s->late_sum / s->n_late : NAN);
  td_trainer_set_num(sum, "late_ratio_max", s->n_late ? s->late_max : NAN);
  td_trainer_set_num(sum, "train_loss", t->loss);
  td_trainer_set_num(sum, "test_loss", t->ev[0]);
  if (t->test.y) td_trainer_set_num(sum, "test_acc", t->ev[1]);
  return 0;
}

static void eos_teardown(td_trainer *t, void *ctx) {
  (void)t;
  eos_state *s = ctx;
  td_curv_deinit(&s->ana);
  json_decref(s->hist);
}

static int eos_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  eos_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  eos_state s = {.c = &c};
  const td_trainer_hooks hooks = {.ctx = &s,
                                  .setup = eos_setup,
                                  .analyze = eos_analyze,
                                  .finish = eos_finish,
                                  .teardown = eos_teardown};
  return td_trainer_run(&c.tc, &hooks, sink, summary, err);
}

const td_kind td_kind_eos = {
    .name = "eos",
    .doc = "Full-batch GD (optionally heavy ball) with sharpness tracked against 2/lr: "
           "progressive sharpening and the edge of stability",
    .chapter = "4",
    .params = eos_params,
    .n_params = sizeof eos_params / sizeof eos_params[0],
    .check = eos_check,
    .run = eos_run,
};
