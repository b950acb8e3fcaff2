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
 *    same step: two_over_lr = 2/lr and stability_threshold = (2 + 2 beta)/lr.
 *  - Why these thresholds: on a quadratic with curvature lambda, GD multiplies the error along
 *    that eigenvector by (1 - lr lambda) per step and diverges iff lr lambda > 2 (Cohen et al.
 *    2021, sec. 2); heavy ball's iteration matrix [[1 + beta - lr lambda, -beta], [1, 0]] has
 *    spectral radius < 1 iff lr lambda < 2 + 2 beta (Cohen et al. 2021, appendix on momentum;
 *    Goh 2017, "Why momentum really works"). The edge-of-stability signature: sharpness rises
 *    (progressive sharpening) until it reaches the threshold, then hovers at or just above it
 *    while the loss keeps decreasing non-monotonically.
 *  - The analysis batch is the first analysis_n training examples (absent: the whole training
 *    set, which is then the very batch of the GD step, so the cached forward pass is reused).
 *  - The job diverges (TD_EDIVERGED) when the loss is non-finite or exceeds 1e6 times its
 *    initial value.
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
#include <time.h>

#include "base/la.h"
#include "nn/loss.h"
#include "kinds/ckind_internal.h"
#include "kinds/registry.h"

#define EOS_DIVERGE_FACTOR 1e6

static const td_param eos_params[] = {
    TD_CKIND__PROBLEM_PARAMS("1000", "1000", "[100, 100]", "\"tanh\"", "\"mse\""),
    {"data.center", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "subtract the training set's per-feature mean from train and test inputs (as Cohen et al. "
     "2021 do); without it the mean input direction dominates the sharpness"},
    {"lr", TD_PT_NUM, "0.1", 1e-12, 1e6, NULL, 0, "learning rate of full-batch GD"},
    {"momentum", TD_PT_NUM, "0", 0, 0.999, NULL, 0,
     "heavy-ball momentum beta (PyTorch SGD convention); threshold becomes (2 + 2 beta)/lr"},
    {"steps", TD_PT_INT, "1000", 1, 1e7, NULL, 0, "GD updates T (metrics at steps 0..T)"},
    {"analyze_every", TD_PT_INT, "10", 1, 1e9, NULL, 0,
     "steps between sharpness computations (always at 0 and T)"},
    {"analysis_n", TD_PT_INT, NULL, 1, 60000, NULL, 0,
     "sharpness on the first analysis_n training examples (absent: the whole training set)"},
    {"eval_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between test evaluations (absent: about 10; always at 0 and T)"},
    TD_CKIND__ANALYSIS_PARAMS("1", "1e-6", "0", "false", "false"),
};

typedef struct eos_cfg {
  td_ckind__problem pb;
  double lr, beta;
  int center;
  long steps, analyze_every, eval_every;
  int analysis_n;
  td_ckind__ana_opts ana;
} eos_cfg;

static int parse_cfg(const json_t *p, eos_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  int rc = td_ckind__parse_problem(p, 1000, 1000, &c->pb, err);
  if (rc) return rc;
  c->lr = td_param_num(p, "lr", 0.1);
  c->center = td_param_bool(p, "data.center", 1);
  c->beta = td_param_num(p, "momentum", 0.0);
  c->steps = td_param_int(p, "steps", 1000);
  c->analyze_every = td_param_int(p, "analyze_every", 10);
  c->eval_every = td_param_int(p, "eval_every", 0);
  if (c->eval_every <= 0) c->eval_every = c->steps >= 10 ? (c->steps + 9) / 10 : 1;
  long an = td_param_int(p, "analysis_n", 0);
  if (an > (long)c->pb.n_train)
    return td_err_set(err, TD_EINVAL, "params.analysis_n",
                      "analysis_n (%ld) exceeds the training set (%zu examples)", an,
                      c->pb.n_train);
  if ((double)c->pb.n_train > 2147483647.0)
    return td_err_set(err, TD_EINVAL, "params.data.n_train", "n_train too large");
  c->analysis_n = an > 0 ? (int)an : (int)c->pb.n_train;
  td_ckind__parse_analysis(p, &c->ana);
  c->ana.artifacts = 0; /* hundreds of analyses: only the rolling eigenvalues.json */
  return 0;
}

static int eos_check(const json_t *params, td_estimate *est, td_err *err) {
  eos_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  double cb = 0, cb2 = 0, np = 0, ws = 0;
  if ((rc = td_curv_estimate(&c.pb.mlp, (int)c.pb.n_train, &cb, err))) return rc;
  if (c.analysis_n < (int)c.pb.n_train &&
      (rc = td_curv_estimate(&c.pb.mlp, c.analysis_n, &cb2, err)))
    return rc;
  if ((rc = td_mlp_estimate(&c.pb.mlp, TD_CKIND__EVAL_BATCH, &np, &ws, err))) return rc;
  est->bytes = cb + cb2 + ws + 8.0 * np * 3 + td_ckind__analysis_bytes(&c.ana, np) +
               td_ckind__data_bytes(&c.pb);
  est->n_params = np;
  return 0;
}

typedef struct eos_state {
  td_dataset train, test;
  td_mlp *m;
  td_mlp_ws ws_eval;
  td_optim *opt;
  td_curv_ctx gd, ana; /* ana is used only when analysis_n < n_train */
  json_t *hist;
} eos_state;

static void state_free(eos_state *s) {
  td_dataset_deinit(&s->train);
  td_dataset_deinit(&s->test);
  td_mlp_ws_deinit(&s->ws_eval);
  td_curv_deinit(&s->gd);
  td_curv_deinit(&s->ana);
  td_mlp_destroy(s->m);
  td_optim_destroy(s->opt);
  json_decref(s->hist);
}

static int eos_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  eos_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  eos_state s;
  memset(&s, 0, sizeof s);
  if ((rc = td_ckind__load(&c.pb, &s.train, &s.test, err))) goto out;
  if (c.center) td_ckind__center(&s.train, &s.test);
  const int N = (int)s.train.n;
  const double two_over_lr = 2.0 / c.lr, thr = (2.0 + 2.0 * c.beta) / c.lr;
  if ((rc = td_mlp_create(&c.pb.mlp, &s.m, err))) goto out;
  td_mlp_init(s.m, c.pb.seed);
  int eb = (int)(s.test.n < TD_CKIND__EVAL_BATCH ? s.test.n : TD_CKIND__EVAL_BATCH);
  if ((rc = td_mlp_ws_init(&s.ws_eval, s.m, eb, err))) goto out;
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = c.beta;
  if ((rc = td_optim_create("sgd", &hp, s.m->n_params, &s.opt, err))) goto out;
  if ((rc = td_curv_init(&s.gd, s.m, N, err))) goto out;
  if ((rc = td_curv_set_batch(&s.gd, s.train.X, s.train.y, s.train.Y, N, c.pb.loss, err)))
    goto out;
  const int separate = c.analysis_n < N;
  if (separate) {
    if ((rc = td_curv_init(&s.ana, s.m, c.analysis_n, err))) goto out;
    if ((rc = td_curv_set_batch(&s.ana, s.train.X, s.train.y, s.train.Y, c.analysis_n,
                                c.pb.loss, err)))
      goto out;
  }
  if (!(s.hist = json_object())) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "eos: out of memory");
    goto out;
  }

  const int K = c.pb.mlp.out_dim;
  double loss0 = NAN, loss = NAN, smax = -INFINITY, tl = NAN, ta = NAN;
  double late_sum = 0, late_max = -INFINITY;
  long n_ana = 0, n_late = 0, first_at = -1, diverged_step = -1;
  int was_below = 0;
  const long n_ana_total = c.steps / c.analyze_every + 1 + (c.steps % c.analyze_every != 0);
  const long late_from = n_ana_total - (n_ana_total + 3) / 4; /* index of the first late one */
  td_ckind__ana_result ar = {0};
  td_sink_progress(sink, 0, c.steps);
  for (long t = 0; t <= c.steps; t++) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", t);
      break;
    }
    int prc = td_curv_set_point(&s.gd, s.m->params, NULL);
    loss = s.gd.loss_value;
    if (t == 0) loss0 = loss;
    if (prc == TD_ERANGE || !(loss <= EOS_DIVERGE_FACTOR * loss0)) {
      diverged_step = t;
      td_sink_metric(sink, "train_loss", t, loss);
      break;
    }
    const double *g = td_curv_grad(&s.gd);
    if ((rc = td_sink_metric(sink, "train_loss", t, loss))) break;
    if ((rc = td_sink_metric(sink, "grad_norm", t, td_la_nrm2(s.m->n_params, g)))) break;
    if (s.train.y &&
        (rc = td_sink_metric(sink, "train_acc", t,
                             (double)td_count_correct(s.gd.ws.act[s.m->n_layers], s.train.y, N,
                                                      K) / N)))
      break;
    if (t % c.eval_every == 0 || t == c.steps) {
      td_ckind__evaluate(s.m, &s.ws_eval, s.m->params, &s.test, s.test.n, c.pb.loss, &tl, &ta,
                         NULL);
      if ((rc = td_sink_metric(sink, "test_loss", t, tl))) break;
      if (s.test.y && (rc = td_sink_metric(sink, "test_acc", t, ta))) break;
    }
    if (t % c.analyze_every == 0 || t == c.steps) {
      td_curv_ctx *ac = &s.gd;
      if (separate) {
        ac = &s.ana;
        if (td_curv_set_point(ac, s.m->params, NULL) == TD_ERANGE) {
          diverged_step = t;
          break;
        }
      }
      if ((rc = td_ckind__analyze(ac, &c.ana, t, sink, s.hist, &ar, err))) break;
      if ((rc = td_sink_metric(sink, "two_over_lr", t, two_over_lr))) break;
      if ((rc = td_sink_metric(sink, "stability_threshold", t, thr))) break;
      if ((rc = td_sink_metric(sink, "sharpness_ratio", t, ar.sharpness / thr))) break;
      if (ar.sharpness > smax) smax = ar.sharpness;
      if (ar.sharpness < 0.95 * thr) was_below = 1;
      else if (first_at < 0 && was_below) first_at = t;
      if (n_ana >= late_from) {
        late_sum += ar.sharpness / thr;
        if (ar.sharpness / thr > late_max) late_max = ar.sharpness / thr;
        n_late++;
      }
      n_ana++;
    }
    if (t == c.steps) break;
    td_optim_step(s.opt, s.m->params, g, c.lr);
    td_sink_progress(sink, t + 1, c.steps);
  }

  json_t *sum = json_object();
  if (sum) {
    json_object_set_new(sum, "n_params", json_integer((json_int_t)s.m->n_params));
    json_object_set_new(sum, "n_train", json_integer(N));
    td_ckind__set_num(sum, "two_over_lr", two_over_lr);
    td_ckind__set_num(sum, "stability_threshold", thr);
    td_ckind__set_num(sum, "sharpness_final", ar.sharpness);
    td_ckind__set_num(sum, "sharpness_max", smax);
    json_object_set_new(sum, "first_step_at_threshold", json_integer(first_at));
    td_ckind__set_num(sum, "late_ratio_mean", n_late ? late_sum / n_late : NAN);
    td_ckind__set_num(sum, "late_ratio_max", n_late ? late_max : NAN);
    td_ckind__set_num(sum, "train_loss", loss);
    td_ckind__set_num(sum, "test_loss", tl);
    if (s.test.y) td_ckind__set_num(sum, "test_acc", ta);
    if (diverged_step >= 0) json_object_set_new(sum, "diverged_step", json_integer(diverged_step));
  }
  *summary = sum;
  if (!rc && diverged_step >= 0)
    rc = td_err_set(err, TD_EDIVERGED, NULL, "loss %g at step %ld (initial %g)", loss,
                    diverged_step, loss0);
out:
  state_free(&s);
  return rc;
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
