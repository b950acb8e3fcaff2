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
 *  - A non-finite loss of either model ends the job with TD_EDIVERGED. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "nn/loss.h"
#include "kinds/ckind_internal.h"
#include "kinds/registry.h"

static const td_param taylor_params[] = {
    TD_CKIND__PROBLEM_PARAMS("5000", "1000", "[256]", "\"relu\"", "\"cross_entropy\""),
    TD_CKIND__OPTIM_PARAMS("0.05"),
    {"batch_size", TD_PT_INT, "128", 1, 65536, NULL, 0, "minibatch size (clamped to n_train)"},
    {"steps", TD_PT_INT, "500", 1, 1e8, NULL, 0, "training steps of both models"},
    {"eval_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between held-out evaluations and function distances (absent: about 20)"},
};

typedef struct taylor_cfg {
  td_ckind__problem pb;
  const char *opt_name;
  td_optim_hp hp;
  double lr;
  int n_state, batch;
  long steps, eval_every;
} taylor_cfg;

static int parse_cfg(const json_t *p, taylor_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  int rc = td_ckind__parse_problem(p, 5000, 1000, &c->pb, err);
  if (rc) return rc;
  if ((rc = td_ckind__parse_optim(p, &c->opt_name, &c->hp, &c->lr, &c->n_state, err))) return rc;
  long bs = td_param_int(p, "batch_size", 128);
  c->batch = (int)(bs < (long)c->pb.n_train ? bs : (long)c->pb.n_train);
  c->steps = td_param_int(p, "steps", 500);
  c->eval_every = td_param_int(p, "eval_every", 0);
  if (c->eval_every <= 0) c->eval_every = c->steps >= 20 ? (c->steps + 19) / 20 : 1;
  if (c->pb.n_test > 1000000)
    return td_err_set(err, TD_EINVAL, "params.data.n_test", "at most 1e6 held-out points");
  return 0;
}

static int taylor_check(const json_t *params, td_estimate *est, td_err *err) {
  taylor_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  double np = 0, ws = 0, cb = 0, ce = 0;
  if ((rc = td_mlp_estimate(&c.pb.mlp, c.batch, &np, &ws, err))) return rc;
  if ((rc = td_curv_estimate(&c.pb.mlp, c.batch, &cb, err))) return rc;
  if ((rc = td_curv_estimate(&c.pb.mlp, (int)c.pb.n_test, &ce, err))) return rc;
  double d = c.pb.mlp.in_dim, k = c.pb.mlp.out_dim;
  double bytes = 8.0 * np * (6 + 2 * c.n_state);  /* params, grad, theta0, w, d, Hd, states */
  bytes += ws + 2 * cb + ce;                      /* workspaces, 2 batch ctxs, eval ctx */
  bytes += td_ckind__data_bytes(&c.pb) + 8.0 * c.pb.n_train;
  bytes += 8.0 * c.batch * (d + 3 * k) + 8.0 * 3 * (double)c.pb.n_test * k;
  est->bytes = bytes;
  est->n_params = np;
  return 0;
}

typedef struct taylor_state {
  td_dataset train, test;
  td_mlp *m;
  td_mlp_ws ws_new, ws_eval;
  td_optim *opt, *opt_lin;
  td_curv_ctx net, lin, ev;
  td_ckind__batcher bt;
  double *theta0, *w, *gw, *dstep, *hd, *delta;  /* n_params each */
  double *Xb, *Yb, *zl, *dzl;                    /* batch buffers */
  int *yb;
  double *f_net, *f_lin, *f0;                    /* n_test x K */
} taylor_state;

static void state_free(taylor_state *s) {
  td_dataset_deinit(&s->train);
  td_dataset_deinit(&s->test);
  td_mlp_ws_deinit(&s->ws_new);
  td_mlp_ws_deinit(&s->ws_eval);
  td_optim_destroy(s->opt);
  td_optim_destroy(s->opt_lin);
  td_curv_deinit(&s->net);
  td_curv_deinit(&s->lin);
  td_curv_deinit(&s->ev);
  td_ckind__batcher_deinit(&s->bt);
  td_mlp_destroy(s->m);
  free(s->theta0);
  free(s->w);
  free(s->gw);
  free(s->dstep);
  free(s->hd);
  free(s->delta);
  free(s->Xb);
  free(s->Yb);
  free(s->zl);
  free(s->dzl);
  free(s->yb);
  free(s->f_net);
  free(s->f_lin);
  free(s->f0);
}

/* delta = w - theta0 */
static void diff(double *delta, const double *w, const double *theta0, size_t n) {
  for (size_t i = 0; i < n; i++) delta[i] = w[i] - theta0[i];
}

/* Held-out evaluation of both models and their function-space distance. */
static int do_eval(taylor_state *s, const taylor_cfg *c, td_sink *sink, long step,
                   double out[3]) {
  const size_t nt = s->test.n, np = s->m->n_params;
  const int K = c->pb.mlp.out_dim;
  double tl = NAN, ta = NAN, tll = NAN, tal = NAN;
  td_ckind__evaluate(s->m, &s->ws_eval, s->m->params, &s->test, nt, c->pb.loss, &tl, &ta,
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
  td_ckind__loss(c->pb.loss, &s->test, 0, s->f_lin, (int)nt, &tll, NULL);
  if (s->test.y) tal = (double)td_count_correct(s->f_lin, s->test.y, (int)nt, K) / (double)nt;
  int rc = td_sink_metric(sink, "test_loss", step, tl);
  if (!rc) rc = td_sink_metric(sink, "test_loss_lin", step, tll);
  if (!rc && s->test.y) rc = td_sink_metric(sink, "test_acc", step, ta);
  if (!rc && s->test.y) rc = td_sink_metric(sink, "test_acc_lin", step, tal);
  if (!rc) rc = td_sink_metric(sink, "func_dist", step, dist);
  if (!rc) rc = td_sink_metric(sink, "func_dist_rel", step, moved > 0 ? dist / moved : 0.0);
  diff(s->delta, s->m->params, s->theta0, np);
  if (!rc) rc = td_sink_metric(sink, "param_dist", step, td_la_nrm2(np, s->delta));
  diff(s->delta, s->w, s->theta0, np);
  if (!rc) rc = td_sink_metric(sink, "param_dist_lin", step, td_la_nrm2(np, s->delta));
  out[0] = tl;
  out[1] = tll;
  out[2] = dist;
  return rc;
}

static int taylor_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  taylor_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  taylor_state s;
  memset(&s, 0, sizeof s);
  if ((rc = td_ckind__load(&c.pb, &s.train, &s.test, err))) goto out;
  const int B = c.batch, K = c.pb.mlp.out_dim, NT = (int)s.test.n;
  const size_t d = s.train.d;
  if ((rc = td_mlp_create(&c.pb.mlp, &s.m, err))) goto out;
  td_mlp_init(s.m, c.pb.seed);
  const size_t np = s.m->n_params;
  int eb = NT < TD_CKIND__EVAL_BATCH ? NT : TD_CKIND__EVAL_BATCH;
  if ((rc = td_mlp_ws_init(&s.ws_new, s.m, B, err))) goto out;
  if ((rc = td_mlp_ws_init(&s.ws_eval, s.m, eb, err))) goto out;
  if ((rc = td_optim_create(c.opt_name, &c.hp, np, &s.opt, err))) goto out;
  if ((rc = td_optim_create(c.opt_name, &c.hp, np, &s.opt_lin, err))) goto out;
  if ((rc = td_curv_init(&s.net, s.m, B, err))) goto out;
  if ((rc = td_curv_init(&s.lin, s.m, B, err))) goto out;
  if ((rc = td_curv_init(&s.ev, s.m, NT, err))) goto out;
  if ((rc = td_ckind__batcher_init(&s.bt, s.train.n, B, c.pb.seed, err))) goto out;
  double **vecs[] = {&s.theta0, &s.w, &s.gw, &s.dstep, &s.hd, &s.delta};
  for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) *vecs[i] = malloc(np * sizeof(double));
  s.Xb = malloc((size_t)B * d * sizeof *s.Xb);
  s.zl = malloc((size_t)B * K * sizeof *s.zl);
  s.dzl = malloc((size_t)B * K * sizeof *s.dzl);
  if (s.train.y) s.yb = malloc((size_t)B * sizeof *s.yb);
  else s.Yb = malloc((size_t)B * K * sizeof *s.Yb);
  s.f_net = malloc((size_t)NT * K * sizeof *s.f_net);
  s.f_lin = malloc((size_t)NT * K * sizeof *s.f_lin);
  s.f0 = malloc((size_t)NT * K * sizeof *s.f0);
  if (!s.theta0 || !s.w || !s.gw || !s.dstep || !s.hd || !s.delta || !s.Xb || !s.zl || !s.dzl ||
      (!s.yb && !s.Yb) || !s.f_net || !s.f_lin || !s.f0) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "taylor: out of memory");
    goto out;
  }
  memcpy(s.theta0, s.m->params, np * sizeof *s.theta0);
  memcpy(s.w, s.m->params, np * sizeof *s.w);
  /* The held-out points at theta0: f0 and the Jacobian context for f_lin. */
  if ((rc = td_curv_set_batch(&s.ev, s.test.X, s.test.y, s.test.Y, NT, c.pb.loss, err))) goto out;
  if ((rc = td_curv_set_point(&s.ev, s.theta0, err))) goto out;
  memcpy(s.f0, s.ev.ws.act[s.m->n_layers], (size_t)NT * K * sizeof *s.f0);
  td_dataset bview = {.n = (size_t)B, .d = d, .k = K, .X = s.Xb, .y = s.yb, .Y = s.Yb};

  double ev[3] = {NAN, NAN, NAN}, loss = NAN, loss_lin = NAN;
  double sum_abs_err1 = 0, sum_abs_err2 = 0, sum_abs_act = 0;
  long step = 0, diverged_step = 0;
  if ((rc = do_eval(&s, &c, sink, 0, ev))) goto out;
  td_sink_progress(sink, 0, c.steps);
  while (step < c.steps) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", step);
      break;
    }
    int b = td_ckind__batcher_next(&s.bt, &s.train, s.Xb, s.yb, s.Yb);
    step++;
    /* Network: loss, gradient and the step it takes. */
    if ((rc = td_curv_set_batch(&s.net, s.Xb, s.yb, s.Yb, b, c.pb.loss, err))) break;
    int prc = td_curv_set_point(&s.net, s.m->params, NULL);
    loss = s.net.loss_value;
    /* Linear model on the same batch: f_lin = f(theta0) + J(theta0) (w - theta0). */
    if ((rc = td_curv_set_batch(&s.lin, s.Xb, s.yb, s.Yb, b, c.pb.loss, err))) break;
    td_curv_set_point(&s.lin, s.theta0, NULL);
    diff(s.delta, s.w, s.theta0, np);
    td_curv_jvp(&s.lin, s.delta, s.zl);
    const double *z0 = s.lin.ws.act[s.m->n_layers];
    for (size_t j = 0; j < (size_t)b * K; j++) s.zl[j] += z0[j];
    td_ckind__loss(c.pb.loss, &bview, 0, s.zl, b, &loss_lin, s.dzl);
    if (prc == TD_ERANGE || !isfinite(loss) || !isfinite(loss_lin)) {
      diverged_step = step;
      td_sink_metric(sink, "train_loss", step, loss);
      td_sink_metric(sink, "train_loss_lin", step, loss_lin);
      break;
    }
    const double *g = td_curv_grad(&s.net);
    memcpy(s.dstep, s.m->params, np * sizeof *s.dstep);
    td_optim_step(s.opt, s.m->params, g, c.lr);
    for (size_t i = 0; i < np; i++) s.dstep[i] = s.m->params[i] - s.dstep[i];
    td_curv_hvp(&s.net, s.dstep, s.hd); /* H at theta_{t-1}: the context kept that point */
    double t1 = td_la_dot(np, g, s.dstep);
    double t2 = t1 + 0.5 * td_la_dot(np, s.dstep, s.hd);
    double lnew = NAN;
    const double *zn = td_mlp_forward(s.m, &s.ws_new, s.m->params, s.Xb, b);
    td_ckind__loss(c.pb.loss, &bview, 0, zn, b, &lnew, NULL);
    const double act = lnew - loss;
    sum_abs_err1 += fabs(t1 - act);
    sum_abs_err2 += fabs(t2 - act);
    sum_abs_act += fabs(act);
    /* Linear model step. */
    td_curv_vjp(&s.lin, s.dzl, s.gw);
    td_optim_step(s.opt_lin, s.w, s.gw, c.lr);

    if ((rc = td_sink_metric(sink, "train_loss", step, loss))) break;
    if ((rc = td_sink_metric(sink, "train_loss_lin", step, loss_lin))) break;
    if ((rc = td_sink_metric(sink, "loss_change_actual", step, act))) break;
    if ((rc = td_sink_metric(sink, "loss_change_taylor1", step, t1))) break;
    if ((rc = td_sink_metric(sink, "loss_change_taylor2", step, t2))) break;
    if (step % c.eval_every == 0 || step == c.steps)
      if ((rc = do_eval(&s, &c, sink, step, ev))) break;
    td_sink_progress(sink, step, c.steps);
  }

  json_t *sum = json_object();
  if (sum) {
    json_object_set_new(sum, "n_params", json_integer((json_int_t)np));
    json_object_set_new(sum, "steps", json_integer(step));
    td_ckind__set_num(sum, "train_loss", loss);
    td_ckind__set_num(sum, "train_loss_lin", loss_lin);
    td_ckind__set_num(sum, "test_loss", ev[0]);
    td_ckind__set_num(sum, "test_loss_lin", ev[1]);
    td_ckind__set_num(sum, "func_dist", ev[2]);
    /* Mean |prediction - actual| over the steps, relative to mean |actual|. */
    td_ckind__set_num(sum, "taylor1_rel_error", sum_abs_act > 0 ? sum_abs_err1 / sum_abs_act : NAN);
    td_ckind__set_num(sum, "taylor2_rel_error", sum_abs_act > 0 ? sum_abs_err2 / sum_abs_act : NAN);
    if (diverged_step) json_object_set_new(sum, "diverged_step", json_integer(diverged_step));
  }
  *summary = sum;
  if (!rc && diverged_step)
    rc = td_err_set(err, TD_EDIVERGED, NULL, "loss became non-finite at step %ld", diverged_step);
out:
  state_free(&s);
  return rc;
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
