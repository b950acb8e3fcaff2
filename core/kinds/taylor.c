/* taylor.c: the `taylor` experiment kind: a network and its linearization trained side by side,
 * and the second-order Taylor prediction of every step's loss change (chapters 2, 9).
 *
 * Semantics (also in the schema docs):
 *  - Two models start from the same theta0 (td_mlp_init of the seed): the network f(x; theta)
 *    and its first-order Taylor model (the linearized network; Lee et al. 2019, "Wide neural
 *    networks of any depth evolve as linear models under gradient descent", NeurIPS, eq. 5)
 *        f_lin(x; w) = f(x; theta0) + J(x; theta0) (w - theta0),
 *    computed exactly: f(x; theta0) by a forward pass at theta0 and J (w - theta0) by one JVP
 *    (R-operator) at theta0; its gradient is J(theta0)^T dL/df_lin (one VJP at theta0).
 *  - Both are trained with the same optimizer (own state each) on the same minibatches (the
 *    epoch-wise shuffle of `train`, stream TD_RNG_SHUFFLE).
 *  - Every step t logs, on that minibatch b: train_loss (network, before update t),
 *    train_loss_lin (linear model, before its update t), and for the network's actual step
 *    d = theta_t - theta_{t-1}:
 *        loss_change_actual  = L_b(theta_t) - L_b(theta_{t-1})
 *        loss_change_taylor1 = g^T d
 *        loss_change_taylor2 = g^T d + 1/2 d^T H d
 *    with g and H the exact minibatch gradient and Hessian at theta_{t-1} (H d by Pearlmutter's
 *    R{backprop}, not finite differences). The second-order model is the quadratic Taylor
 *    expansion of L_b around theta_{t-1} (Grosse, CSC2541 notes, "Taylor approximations").
 *  - Evaluations at step 0, every eval_every steps and at T, on the held-out points (the first
 *    n_test test examples): test_loss, test_acc, test_loss_lin, test_acc_lin,
 *    func_dist = sqrt(mean over points and outputs of (f - f_lin)^2) (the RMS function-space
 *    distance), func_dist_rel = func_dist / RMS(f - f(theta0)) (how much of the network's
 *    movement in function space the linear model misses), param_dist = ||theta - theta0||,
 *    param_dist_lin = ||w - theta0||.
 *  - Divergence: a non-finite loss of either model, or the shared rule of
 *    core/train/diverge.h (params.divergence.*) on the network's train_loss, ends the job with
 *    TD_EDIVERGED and summary.diverged_step.
 *  - The network is trained by the trainer (core/train/trainer.h, gradient through a
 *    td_curv_ctx); the linear model is this file's hooks (after_loss, after_step, eval). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "kinds/registry.h"
#include "nn/loss.h"
#include "train/trainer.h"

static const td_param taylor_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("5000", "1000", "[256]", "\"relu\"", "\"cross_entropy\""),
    TD_TRAINER_OPTIM_PARAMS(TD_TRAINER_OPTIM_NAMES, "0.05"),
    {"batch_size", TD_PT_INT, "128", 1, 65536, NULL, 0, "minibatch size (clamped to n_train)"},
    {"steps", TD_PT_INT, "500", 1, 1e8, NULL, 0, "training steps of both models"},
    {"eval_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between held-out evaluations and function distances (absent: about 20)"},
    TD_TRAINER_CHECKPOINT_PARAMS,
    TD_DIVERGE_PARAMS,
};

typedef struct taylor_cfg {
  td_trainer_cfg tc;
  int n_state;
} taylor_cfg;

static int parse_cfg(const json_t *p, taylor_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  td_trainer_cfg *t = &c->tc;
  int rc = td_trainer_parse_problem(p, 5000, 1000, 0, &t->pb, err);
  if (rc) return rc;
  if ((rc = td_trainer_parse_length(p, t, 1e9, 20, err))) return rc;
  if ((rc = td_trainer_parse_optim(p, t, err))) return rc;
  t->grad_curv = 1;
  c->n_state = td_optim_state_count(t->opt_name, &t->hp);
  if (t->pb.n_test > 1000000)
    return td_err_set(err, TD_EINVAL, "params.data.n_test", "at most 1e6 held-out points");
  return td_trainer_parse_checkpoint(p, t, err);
}

static int taylor_check(const json_t *params, td_estimate *est, td_err *err) {
  taylor_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  const td_problem_cfg *pb = &c.tc.pb;
  double np = 0, ws = 0, cb = 0, ce = 0;
  if ((rc = td_mlp_estimate(&pb->mlp, c.tc.batch, &np, &ws, err))) return rc;
  if ((rc = td_curv_estimate(&pb->mlp, c.tc.batch, &cb, err))) return rc;
  if ((rc = td_curv_estimate(&pb->mlp, (int)pb->n_test, &ce, err))) return rc;
  double d = pb->mlp.in_dim, k = pb->mlp.out_dim;
  double bytes = 8.0 * np * (6 + 2 * c.n_state); /* params, grad, theta0, w, d, Hd, states */
  bytes += ws + 2 * cb + ce;                      /* workspaces, 2 batch ctxs, eval ctx */
  bytes += td_trainer_data_bytes(pb) + 8.0 * pb->n_train;
  bytes += 8.0 * c.tc.batch * (d + 3 * k) + 8.0 * 3 * (double)pb->n_test * k;
  est->bytes = bytes;
  est->n_params = np;
  return 0;
}

/* The kind's own state: the linear model and the Taylor predictions. */
typedef struct taylor_state {
  const taylor_cfg *c;
  td_mlp_ws ws_new;
  td_optim *opt_lin;
  td_curv_ctx lin, ev;
  double *theta0, *w, *gw, *dstep, *hd, *delta; /* n_params each */
  double *zl, *dzl;                             /* batch outputs of the linear model */
  double *f_net, *f_lin, *f0;                   /* n_test x K */
  double loss_lin, ev3[3];                      /* ev3: test_loss, test_loss_lin, func_dist */
  double sum_abs_err1, sum_abs_err2, sum_abs_act;
} taylor_state;

static int taylor_setup(td_trainer *t, void *ctx, td_err *err) {
  taylor_state *s = ctx;
  const td_trainer_cfg *c = &s->c->tc;
  const int B = c->batch, K = c->pb.mlp.out_dim, NT = (int)t->test.n;
  const size_t np = t->m->n_params;
  int rc;
  s->loss_lin = NAN;
  for (int i = 0; i < 3; i++) s->ev3[i] = NAN;
  if ((rc = td_mlp_ws_init(&s->ws_new, t->m, B, err)) ||
      (rc = td_optim_create(c->opt_name, &c->hp, np, &s->opt_lin, err)) ||
      (rc = td_curv_init(&s->lin, t->m, B, err)) || (rc = td_curv_init(&s->ev, t->m, NT, err)))
    return rc;
  double **vecs[] = {&s->theta0, &s->w, &s->gw, &s->dstep, &s->hd, &s->delta};
  for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++)
    *vecs[i] = malloc(np * sizeof(double));
  s->zl = malloc((size_t)B * K * sizeof *s->zl);
  s->dzl = malloc((size_t)B * K * sizeof *s->dzl);
  s->f_net = malloc((size_t)NT * K * sizeof *s->f_net);
  s->f_lin = malloc((size_t)NT * K * sizeof *s->f_lin);
  s->f0 = malloc((size_t)NT * K * sizeof *s->f0);
  if (!s->theta0 || !s->w || !s->gw || !s->dstep || !s->hd || !s->delta || !s->zl || !s->dzl ||
      !s->f_net || !s->f_lin || !s->f0)
    return td_err_set(err, TD_ENOMEM, NULL, "taylor: out of memory");
  memcpy(s->theta0, t->m->params, np * sizeof *s->theta0);
  memcpy(s->w, t->m->params, np * sizeof *s->w);
  /* The held-out points at theta0: f0 and the Jacobian context for f_lin. */
  if ((rc = td_curv_set_batch(&s->ev, t->test.X, t->test.y, t->test.Y, NT, c->pb.loss, err)) ||
      (rc = td_curv_set_point(&s->ev, s->theta0, err)))
    return rc;
  memcpy(s->f0, s->ev.ws.act[t->m->n_layers], (size_t)NT * K * sizeof *s->f0);
  return 0;
}

static void taylor_teardown(td_trainer *t, void *ctx) {
  (void)t;
  taylor_state *s = ctx;
  td_mlp_ws_deinit(&s->ws_new);
  td_optim_destroy(s->opt_lin);
  td_curv_deinit(&s->lin);
  td_curv_deinit(&s->ev);
  double *bufs[] = {s->theta0, s->w, s->gw, s->dstep, s->hd, s->delta,
                    s->zl, s->dzl, s->f_net, s->f_lin, s->f0};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
}

/* delta = w - theta0 */
static void diff(double *delta, const double *w, const double *theta0, size_t n) {
  for (size_t i = 0; i < n; i++) delta[i] = w[i] - theta0[i];
}

/* The linear model on the step's batch: f_lin = f(theta0) + J(theta0) (w - theta0), its loss
 * and output gradient; and the network's parameters before the update (for its step d). */
static int taylor_after_loss(td_trainer *t, void *ctx, td_err *err) {
  taylor_state *s = ctx;
  const td_trainer_cfg *c = &s->c->tc;
  const int b = t->b, K = c->pb.mlp.out_dim;
  const size_t np = t->m->n_params;
  int rc = td_curv_set_batch(&s->lin, t->Xb, t->yb, t->Yb, b, c->pb.loss, err);
  if (rc) return rc;
  td_curv_set_point(&s->lin, s->theta0, NULL);
  diff(s->delta, s->w, s->theta0, np);
  td_curv_jvp(&s->lin, s->delta, s->zl);
  const double *z0 = s->lin.ws.act[t->m->n_layers];
  for (size_t j = 0; j < (size_t)b * K; j++) s->zl[j] += z0[j];
  td_trainer_loss(c->pb.loss, &t->bview, 0, s->zl, b, &s->loss_lin, s->dzl);
  if (!isfinite(t->loss) || !isfinite(s->loss_lin)) {
    td_sink_metric(t->sink, "train_loss_lin", t->step, s->loss_lin);
    if (!isfinite(s->loss_lin))
      return td_err_set(err, TD_EDIVERGED, NULL,
                        "diverged at step %ld: the linear model's loss is %g", t->step,
                        s->loss_lin);
  }
  memcpy(s->dstep, t->m->params, np * sizeof *s->dstep);
  return 0;
}

/* The network's step d: the actual and predicted loss changes; then the linear model's step. */
static int taylor_after_step(td_trainer *t, void *ctx, td_err *err) {
  (void)err;
  taylor_state *s = ctx;
  const td_trainer_cfg *c = &s->c->tc;
  const size_t np = t->m->n_params;
  const int b = t->b;
  for (size_t i = 0; i < np; i++) s->dstep[i] = t->m->params[i] - s->dstep[i];
  td_curv_hvp(&t->cc, s->dstep, s->hd); /* H at theta_{t-1}: the context kept that point */
  double t1 = td_la_dot(np, t->grad, s->dstep);
  double t2 = t1 + 0.5 * td_la_dot(np, s->dstep, s->hd);
  double lnew = NAN;
  const double *zn = td_mlp_forward(t->m, &s->ws_new, t->m->params, t->Xb, b);
  td_trainer_loss(c->pb.loss, &t->bview, 0, zn, b, &lnew, NULL);
  const double act = lnew - t->loss;
  s->sum_abs_err1 += fabs(t1 - act);
  s->sum_abs_err2 += fabs(t2 - act);
  s->sum_abs_act += fabs(act);
  td_curv_vjp(&s->lin, s->dzl, s->gw);
  td_optim_step(s->opt_lin, s->w, s->gw, t->lr);
  int rc = td_sink_metric(t->sink, "train_loss_lin", t->step, s->loss_lin);
  if (!rc) rc = td_sink_metric(t->sink, "loss_change_actual", t->step, act);
  if (!rc) rc = td_sink_metric(t->sink, "loss_change_taylor1", t->step, t1);
  if (!rc) rc = td_sink_metric(t->sink, "loss_change_taylor2", t->step, t2);
  return rc;
}

/* Held-out evaluation of both models and their function-space distance. */
static int taylor_eval(td_trainer *t, void *ctx, td_err *err) {
  (void)err;
  taylor_state *s = ctx;
  const td_trainer_cfg *c = &s->c->tc;
  const size_t nt = t->test.n, np = t->m->n_params;
  const int K = c->pb.mlp.out_dim;
  const long step = t->step;
  td_sink *sink = t->sink;
  double tl = NAN, ta = NAN, tll = NAN, tal = NAN;
  td_trainer_evaluate(t->m, &t->ws_eval, t->m->params, &t->test, nt, c->pb.loss, &tl, &ta,
                      s->f_net);
  diff(s->delta, s->w, s->theta0, np);
  td_curv_jvp(&s->ev, s->delta, s->f_lin);
  const size_t nk = nt * (size_t)K;
  double dist = 0, moved = 0;
  for (size_t j = 0; j < nk; j++) {
    s->f_lin[j] += s->f0[j];
    double e = s->f_net[j] - s->f_lin[j], mv = s->f_net[j] - s->f0[j];
    dist += e * e;
    moved += mv * mv;
  }
  dist = sqrt(dist / (double)nk);
  moved = sqrt(moved / (double)nk);
  td_trainer_loss(c->pb.loss, &t->test, 0, s->f_lin, (int)nt, &tll, NULL);
  if (t->test.y) tal = (double)td_count_correct(s->f_lin, t->test.y, (int)nt, K) / (double)nt;
  int rc = td_sink_metric(sink, "test_loss", step, tl);
  if (!rc) rc = td_sink_metric(sink, "test_loss_lin", step, tll);
  if (!rc && t->test.y) rc = td_sink_metric(sink, "test_acc", step, ta);
  if (!rc && t->test.y) rc = td_sink_metric(sink, "test_acc_lin", step, tal);
  if (!rc) rc = td_sink_metric(sink, "func_dist", step, dist);
  if (!rc) rc = td_sink_metric(sink, "func_dist_rel", step, moved > 0 ? dist / moved : 0.0);
  diff(s->delta, t->m->params, s->theta0, np);
  if (!rc) rc = td_sink_metric(sink, "param_dist", step, td_la_nrm2(np, s->delta));
  diff(s->delta, s->w, s->theta0, np);
  if (!rc) rc = td_sink_metric(sink, "param_dist_lin", step, td_la_nrm2(np, s->delta));
  s->ev3[0] = tl;
  s->ev3[1] = tll;
  s->ev3[2] = dist;
  return rc;
}

static int taylor_finish(td_trainer *t, void *ctx, json_t *sum, td_err *err) {
  (void)err;
  taylor_state *s = ctx;
  json_object_set_new(sum, "steps", json_integer(t->step));
  td_trainer_set_num(sum, "train_loss", t->loss);
  td_trainer_set_num(sum, "train_loss_lin", s->loss_lin);
  td_trainer_set_num(sum, "test_loss", s->ev3[0]);
  td_trainer_set_num(sum, "test_loss_lin", s->ev3[1]);
  td_trainer_set_num(sum, "func_dist", s->ev3[2]);
  /* Mean |prediction - actual| over the steps, relative to mean |actual|. */
  const double a = s->sum_abs_act;
  td_trainer_set_num(sum, "taylor1_rel_error", a > 0 ? s->sum_abs_err1 / a : NAN);
  td_trainer_set_num(sum, "taylor2_rel_error", a > 0 ? s->sum_abs_err2 / a : NAN);
  return 0;
}

static int taylor_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  taylor_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  taylor_state s = {.c = &c};
  const td_trainer_hooks hooks = {.ctx = &s,
                                  .setup = taylor_setup,
                                  .after_loss = taylor_after_loss,
                                  .after_step = taylor_after_step,
                                  .eval = taylor_eval,
                                  .finish = taylor_finish,
                                  .teardown = taylor_teardown};
  return td_trainer_run(&c.tc, &hooks, sink, summary, err);
}

const td_kind td_kind_taylor = {
    .name = "taylor",
    .doc = "Train a network and its linearization side by side; function-space distance and "
           "second-order Taylor predictions of each step's loss change",
    .chapter = "2,9",
    .params = taylor_params,
    .n_params = sizeof taylor_params / sizeof taylor_params[0],
    .check = taylor_check,
    .run = taylor_run,
};
