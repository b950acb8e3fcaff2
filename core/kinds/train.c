/* train.c: the `train` experiment kind (MLP on Fashion-MNIST or synthetic data; chapters 4, 5).
 *
 * Semantics (also in the schema docs):
 *  - Data: fashion-mnist takes the FIRST n_train / n_test examples of the train / t10k files
 *    in file order (absent: all 60000 / 10000). synthetic is a linear-teacher regression set
 *    (data.c): n training examples (n_train, if given, takes the first n_train of them) and
 *    n_test (default 1000) test examples from the same teacher; it needs loss "mse".
 *  - Batches: each epoch is a fresh permutation of the training set drawn from stream
 *    TD_RNG_SHUFFLE of the seed; consecutive batch_size slices, the last one partial (as
 *    PyTorch's DataLoader with drop_last=False). batch_size above n_train is clamped.
 *  - Length: `epochs` or `steps` (not both); neither means 1 epoch.
 *  - Steps are numbered 1..T. train_loss/grad_norm at step t are the minibatch loss and the
 *    2-norm of its gradient at the parameters before update t; param_norm is after it.
 *    Evaluations happen at step 0 (init), every eval_every steps and at the last step, and
 *    log test_loss, test_acc over the whole test set, and train_eval_loss, train_acc over the
 *    first min(n_train, 10000) training examples (a fixed subset keeps evals cheap).
 *  - Summary: test_acc, test_loss, train_loss (= the final train_eval_loss), train_acc,
 *    n_params, steps, steps_per_sec (wall time of the training steps alone: batch gather,
 *    forward, backward, norms, update; no evaluation, no reporting).
 *  - Divergence (core/train/diverge.h, params.divergence.*): a non-finite training loss, a
 *    blow-up above divergence.max_ratio times the initial loss, or a spike that never
 *    recovers ends the job with TD_EDIVERGED, the rule's message and summary.diverged_step.
 *  - The loop, the standard metrics and the evaluation are the trainer's
 *    (core/train/trainer.h); this file adds the noise scale (after_step) and the summary.
 *  - noise_scale.every (optional): every that many steps, after update t, the gradient noise
 *    scale is measured at the current parameters (McCandlish et al. 2018, App. A; core/scaling/gns.h):
 *    b_big distinct training examples are drawn (stream TRAIN_RNG_GNS of the seed), the mean
 *    loss gradient G_small of the first b_small of them and G_big of all b_big are computed
 *    (one forward/backward pass over the b_big examples; weight decay is not part of it), and
 *    the two-batch estimates of |G|^2 and tr(Sigma), with the finite-population correction
 *    for drawing without replacement from the n_train examples (gns.h: E|G_b|^2 = |G|^2 +
 *    tr(S) (n-b)/(b(n-1)); unbiased, and B_simple is that of i.i.d. draws from the training
 *    set), are folded into EMAs (decay noise_scale.decay, absent: 0.95). Logs gns_g2 and
 *    gns_trace (bias-corrected EMAs; either can be negative early in training, when few
 *    noisy estimates are averaged) and b_simple = tr(Sigma) / |G|^2 in examples only while
 *    both EMAs are > 0; otherwise the ratio is undefined or negative and meaningless, and
 *    b_simple_undefined = 1 is logged at that step instead (summary: b_simple_undefined).
 *  - target_loss (optional): the job ends (succeeded) at the first step t whose smoothed
 *    training loss is <= target_loss; summary.steps_to_target = t (JSON null when the target
 *    was not reached within the steps). The smoothed loss is the bias-corrected EMA of the
 *    minibatch train_loss, ema_t = d ema_{t-1} + (1 - d) train_loss_t divided by 1 - d^t
 *    (d = target_ema, absent: 0.95), logged as train_loss_ema. It is cheap (no extra pass),
 *    and lags the true loss by about d / (1 - d) steps (19 at 0.95): a constant offset in
 *    steps, small next to steps_to_target in batch-size scans; raise d for small batches
 *    whose minibatch loss is noisy. A final evaluation is made at step t.
 *  - Optimizers (optim.h has every update rule and its source): sgd, heavy_ball, nesterov,
 *    adagrad, rmsprop, adam, adamw. optimizer.momentum absent means 0.9 for heavy_ball and
 *    nesterov, 0 otherwise; optimizer.eps absent means 1e-10 for adagrad, 1e-8 otherwise
 *    (PyTorch's defaults). Second-order methods (core/optim/sopt.h has the step and the sources):
 *    newton, hessian_free, natural_gradient, kfac; they see the minibatch through a
 *    td_curv_ctx (one extra forward pass per step), treat optimizer.weight_decay and l2 both as
 *    a coupled L2 term with curvature (weight_decay + l2) I, and log damping, rho, cg_iters,
 *    step_norm (and line_search_alpha for hessian_free) every step. newton refuses models
 *    over optimizer.newton_max_params in the check (400, field
 *    params.optimizer.newton_max_params).
 *  - Learning rate: optimizer.schedule (sched.h): constant, step, cosine, each with an
 *    optional linear warm-up; update t uses lr_t = td_sched_lr(t), logged as `lr` every step.
 *  - weight_decay vs l2: optimizer.weight_decay is the optimizer's own decay (coupled L2 in
 *    the gradient for all but adamw, decoupled p -= lr wd p for adamw); `l2` adds
 *    l2/2 ||theta||^2 (every parameter: weights, biases, norm gamma/beta) to the training
 *    LOSS, so train_loss (and train_loss_ema, target_loss) includes it and its gradient
 *    l2 theta goes through every optimizer, adaptive preconditioners included (for adam this
 *    differs from adamw's decay: Loshchilov and Hutter 2019). Logged as l2_penalty when > 0.
 *    Evaluation losses (test_loss, train_eval_loss) are data losses without it.
 *  - model.norm: layernorm or batchnorm after every hidden linear layer, before its
 *    activation (model.h). Training steps run in train mode (BatchNorm: batch statistics, and
 *    the running statistics are updated, momentum 0.1); evaluations run in eval mode
 *    (BatchNorm: running statistics). BatchNorm needs batches of at least 2 examples, so a
 *    batch_size or a last partial batch of 1 is refused.
 *  - Per-layer metrics, for every linear layer j (w = its W and b together, the parameters
 *    of layers.{j}): weight_norm/{j} = ||w|| after the update, update_ratio/{j} =
 *    ||w_t - w_{t-1}|| / ||w_{t-1}|| (the relative size of update t), and for scale-invariant
 *    layers (followed by a norm layer) effective_lr/{j} = lr_t / ||w||^2 (the step size on
 *    the sphere: van Laarhoven 2017; Arora et al. 2019). Logged every layer_metrics_every
 *    steps (absent: eval_every), and weight_norm also at step 0: a norm costs O(n_params),
 *    cheap next to a step, but 2-3 keys per layer every step would multiply the stored
 *    points. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kinds/registry.h"
#include "nn/loss.h"
#include "scaling/gns.h"
#include "train/trainer.h"

static const td_param train_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("all 60000", "all 10000", "[128]", "\"relu\"", "\"cross_entropy\""),
    TD_TRAINER_NORM_PARAMS,
    TD_TRAINER_OPTIM_PARAMS(TD_TRAINER_OPTIM_NAMES "|" TD_SOPT_NAMES, "0.05"),
    TD_SOPT_PARAMS,
    {"l2", TD_PT_NUM, "0", 0, 1e3, NULL, 0,
     "L2 penalty l2/2 ||theta||^2 added to the training loss (in train_loss; its gradient goes "
     "through the optimizer, preconditioners included), unlike optimizer.weight_decay"},
    {"layer_metrics_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between weight_norm/{j}, update_ratio/{j}, effective_lr/{j} (absent: eval_every)"},
    TD_TRAINER_LENGTH_PARAMS,
    {"noise_scale.every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between gradient-noise-scale measurements (b_simple, McCandlish et al. 2018; "
     "absent: none). The b_big examples are distinct (drawn without replacement from n_train), "
     "and the estimates apply the finite-population correction E|G_b|^2 = |G|^2 + "
     "tr(S)(n-b)/(b(n-1)) (unbiased). b_simple is the ratio of EMAs, logged only while both "
     "are > 0; early in training it can be negative or undefined, and b_simple_undefined = 1 "
     "is logged instead"},
    {"noise_scale.b_small", TD_PT_INT, NULL, 1, 65536, NULL, 0,
     "noise scale: the small batch (absent: batch_size)"},
    {"noise_scale.b_big", TD_PT_INT, NULL, 2, 65536, NULL, 0,
     "noise scale: the big batch, > b_small and <= n_train (absent: min(n_train, 8 b_small))"},
    {"noise_scale.decay", TD_PT_NUM, NULL, 0, 0.9999, NULL, 0,
     "noise scale: EMA decay of the |G|^2 and tr(Sigma) estimates (absent: 0.95)"},
    {"target_loss", TD_PT_NUM, NULL, 0, 1e300, NULL, 0,
     "end the job once the smoothed train loss (train_loss_ema) is <= this; records "
     "summary.steps_to_target (absent: no target)"},
    {"target_ema", TD_PT_NUM, NULL, 0, 0.9999, NULL, 0,
     "EMA decay of train_loss_ema, the loss compared with target_loss (absent: 0.95)"},
    TD_TRAINER_CHECKPOINT_PARAMS,
    TD_TRAINER_FORK_PARAMS,
    TD_DIVERGE_PARAMS,
};

#define TRAIN_RNG_GNS 0x474e53 /* rng stream of the noise-scale batches ("GNS") */

typedef struct train_cfg {
  td_trainer_cfg tc;
  long gns_every;   /* 0: no noise-scale measurement */
  int gns_small, gns_big;
  double gns_decay;
} train_cfg;

/* Read validated params (borrowed) into c and do the cross-field checks. */
static int parse_cfg(const json_t *p, train_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  td_trainer_cfg *t = &c->tc;
  int rc = td_trainer_parse_problem(p, 0, 0, 0, &t->pb, err);
  if (rc) return rc;
  if ((rc = td_trainer_parse_length(p, t, 1e12, 10, err))) return rc;
  if ((rc = td_trainer_parse_optim(p, t, err))) return rc;
  t->layer_every = td_param_int(p, "layer_metrics_every", t->eval_every);
  t->eval_train = 1;
  t->metrics = TD_TRAINER_M_GRAD_NORM | TD_TRAINER_M_LR | TD_TRAINER_M_PARAM_NORM;
  if (t->pb.mlp.norm == TD_NORM_BATCHNORM && t->pb.mlp.n_hidden > 0 &&
      (t->batch < 2 || t->pb.n_train % (size_t)t->batch == 1))
    return td_err_set(err, TD_EINVAL, "params.batch_size",
                      "batchnorm needs batches of at least 2 examples (batch_size %d, n_train "
                      "%zu leaves a batch of 1)",
                      t->batch, t->pb.n_train);
  const size_t n_train = t->pb.n_train;
  c->gns_every = td_param_int(p, "noise_scale.every", 0);
  if (c->gns_every > 0) {
    long bs_small = td_param_int(p, "noise_scale.b_small", t->batch);
    long big_def = 8 * bs_small < (long)n_train ? 8 * bs_small : (long)n_train;
    long bs_big = td_param_int(p, "noise_scale.b_big", big_def);
    if (bs_small >= (long)n_train)
      return td_err_set(err, TD_EINVAL, "params.noise_scale.b_small",
                        "noise_scale.b_small (%ld) must be below n_train (%zu)", bs_small,
                        n_train);
    if (bs_big <= bs_small || bs_big > (long)n_train)
      return td_err_set(err, TD_EINVAL, "params.noise_scale.b_big",
                        "noise_scale.b_big (%ld) must be above b_small (%ld) and at most "
                        "n_train (%zu)",
                        bs_big, bs_small, n_train);
    c->gns_small = (int)bs_small;
    c->gns_big = (int)bs_big;
    c->gns_decay = td_param_num(p, "noise_scale.decay", 0.95);
  } else if (td_param_has(p, "noise_scale.b_small") || td_param_has(p, "noise_scale.b_big") ||
             td_param_has(p, "noise_scale.decay")) {
    return td_err_set(err, TD_EINVAL, "params.noise_scale.every",
                      "noise_scale needs every (the steps between measurements)");
  }
  t->has_target = td_param_has(p, "target_loss");
  t->target_loss = td_param_num(p, "target_loss", 0.0);
  t->target_ema = td_param_num(p, "target_ema", 0.95);
  return td_trainer_parse_checkpoint(p, t, err);
}

static int train_check(const json_t *params, td_estimate *est, td_err *err) {
  train_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  const td_trainer_cfg *t = &c.tc;
  double np = 0, ws = 0, ws_eval = 0, ob = 0;
  if ((rc = td_mlp_estimate(&t->pb.mlp, t->batch, &np, &ws, err))) return rc;
  if ((rc = td_mlp_estimate(&t->pb.mlp, TD_TRAINER_EVAL_BATCH, &np, &ws_eval, err))) return rc;
  double d = t->pb.mlp.in_dim, k = t->pb.mlp.out_dim;
  const double n_train = (double)t->pb.n_train, n_test = (double)t->pb.n_test;
  if ((rc = td_trainer_optim_bytes(t, &ob, err))) return rc;
  double bytes = 8.0 * np * 3 + ob;  /* params, grad, previous params; optimizer */
  bytes += ws + ws_eval;             /* activations */
  bytes += 8.0 * (n_train + n_test) * (d + k) + 8.0 * n_train; /* data, perm */
  bytes += 8.0 * (double)t->batch * (d + k) + 8.0 * TD_TRAINER_EVAL_BATCH * k; /* batches */
  if (!t->pb.synthetic) bytes += 60000.0 * 785; /* decompressed IDX file while loading */
  if (c.gns_every > 0) { /* noise scale: 2 gradients, a b_big batch and its activations */
    double ws_gns = 0;
    if ((rc = td_mlp_estimate(&t->pb.mlp, c.gns_big, &np, &ws_gns, err))) return rc;
    bytes += 16.0 * np + ws_gns + 8.0 * (double)c.gns_big * (d + 2 * k) + 8.0 * n_train;
  }
  est->bytes = bytes;
  est->n_params = np;
  return 0;
}

/* The kind's own state: the noise-scale measurement. */
typedef struct train_state {
  const train_cfg *c;
  td_rng gns_rng;
  td_gns gns;
  td_mlp_ws ws_gns;
  double *Xg, *Yg, *dzg, *g_small, *g_big;
  int *yg;
  size_t *gidx;
} train_state;

static int train_setup(td_trainer *t, void *ctx, td_err *err) {
  train_state *s = ctx;
  const train_cfg *c = s->c;
  td_rng_init(&s->gns_rng, c->tc.pb.seed, TRAIN_RNG_GNS);
  td_gns_init(&s->gns, 0.0, NULL);
  if (c->gns_every <= 0) return 0;
  const size_t n = t->train.n, d = t->train.d;
  const int K = c->tc.pb.mlp.out_dim;
  int rc = td_gns_init(&s->gns, c->gns_decay, err);
  if (!rc) rc = td_gns_set_population(&s->gns, (double)n, err);
  if (rc) return rc;
  int cap = c->gns_small > c->gns_big - c->gns_small ? c->gns_small : c->gns_big - c->gns_small;
  if ((rc = td_mlp_ws_init(&s->ws_gns, t->m, cap, err))) return rc;
  s->Xg = malloc((size_t)c->gns_big * d * sizeof *s->Xg);
  s->dzg = malloc((size_t)cap * K * sizeof *s->dzg);
  s->g_small = malloc(t->m->n_params * sizeof *s->g_small);
  s->g_big = malloc(t->m->n_params * sizeof *s->g_big);
  s->gidx = malloc(n * sizeof *s->gidx);
  if (t->train.y) s->yg = malloc((size_t)c->gns_big * sizeof *s->yg);
  else s->Yg = malloc((size_t)c->gns_big * K * sizeof *s->Yg);
  if (!s->Xg || !s->dzg || !s->g_small || !s->g_big || !s->gidx || (!s->yg && !s->Yg))
    return td_err_set(err, TD_ENOMEM, NULL, "train: out of memory for the noise scale");
  for (size_t i = 0; i < n; i++) s->gidx[i] = i;
  return 0;
}

static void train_teardown(td_trainer *t, void *ctx) {
  (void)t;
  train_state *s = ctx;
  td_mlp_ws_deinit(&s->ws_gns);
  free(s->Xg);
  free(s->Yg);
  free(s->dzg);
  free(s->g_small);
  free(s->g_big);
  free(s->yg);
  free(s->gidx);
}

/* Mean loss gradient (into grad) of rows [r0, r0 + b) of the gathered noise-scale batch. */
static void gns_grad(td_trainer *t, train_state *s, int r0, int b, double *grad) {
  const int K = t->m->cfg.out_dim;
  const size_t d = t->train.d;
  double l = 0;
  const double *z = td_mlp_forward(t->m, &s->ws_gns, t->m->params, s->Xg + (size_t)r0 * d, b);
  if (s->yg && t->cfg->pb.loss == TD_CURV_XENT) td_loss_xent(&l, s->dzg, z, s->yg + r0, b, K);
  else if (s->yg) td_loss_mse_onehot(&l, s->dzg, z, s->yg + r0, b, K);
  else td_loss_mse(&l, s->dzg, z, s->Yg + (size_t)r0 * K, b, K);
  td_mlp_backward(t->m, &s->ws_gns, t->m->params, s->dzg, b, grad, 0);
}

/* One noise-scale measurement at the current parameters (see the header): b_big distinct
 * examples (partial Fisher-Yates on gidx), G_small over the first b_small, G_big over all of
 * them as the size-weighted mean of G_small and the rest's gradient. */
static int train_after_step(td_trainer *t, void *ctx, td_err *err) {
  (void)err;
  train_state *s = ctx;
  const train_cfg *c = s->c;
  if (c->gns_every <= 0 || t->step % c->gns_every != 0) return 0;
  const int bs = c->gns_small, bb = c->gns_big, K = t->m->cfg.out_dim;
  const size_t n = t->train.n, d = t->train.d, np = t->m->n_params;
  for (int i = 0; i < bb; i++) {
    size_t j = (size_t)i + (size_t)td_rng_below(&s->gns_rng, n - (size_t)i);
    size_t tmp = s->gidx[i];
    s->gidx[i] = s->gidx[j];
    s->gidx[j] = tmp;
    size_t src = s->gidx[i];
    memcpy(s->Xg + (size_t)i * d, t->train.X + src * d, d * sizeof *s->Xg);
    if (s->yg) s->yg[i] = t->train.y[src];
    else memcpy(s->Yg + (size_t)i * K, t->train.Y + src * (size_t)K, (size_t)K * sizeof *s->Yg);
  }
  gns_grad(t, s, 0, bs, s->g_small);
  gns_grad(t, s, bs, bb - bs, s->g_big);
  double g2s = td_gns_sqnorm(s->g_small, np);
  const double ws = (double)bs / bb, wr = (double)(bb - bs) / bb;
  for (size_t i = 0; i < np; i++) s->g_big[i] = ws * s->g_small[i] + wr * s->g_big[i];
  double g2b = td_gns_sqnorm(s->g_big, np);
  if (td_gns_update(&s->gns, bs, g2s, bb, g2b, NULL) != 0) return 0; /* non-finite: skip */
  const double bsim = td_gns_b_simple(&s->gns); /* NaN while an EMA is <= 0: not data */
  int rc = isfinite(bsim) ? td_sink_metric(t->sink, "b_simple", t->step, bsim)
                          : td_sink_metric(t->sink, "b_simple_undefined", t->step, 1.0);
  if (!rc) rc = td_sink_metric(t->sink, "gns_g2", t->step, td_gns_g2(&s->gns));
  if (!rc) rc = td_sink_metric(t->sink, "gns_trace", t->step, td_gns_trace(&s->gns));
  return rc;
}

static int train_finish(td_trainer *t, void *ctx, json_t *sum, td_err *err) {
  (void)err;
  train_state *s = ctx;
  const td_trainer_cfg *c = &s->c->tc;
  json_object_set_new(sum, "steps", json_integer(t->step));
  json_object_set_new(sum, "batch_size", json_integer(c->batch));
  td_trainer_set_num(sum, "steps_per_sec",
                     t->train_time > 0 ? (double)(t->step - t->first_step + 1) / t->train_time
                                       : 0.0);
  if (t->diverged_step >= 0) {
    td_trainer_set_num(sum, "train_loss", t->loss);
  } else {
    td_trainer_set_num(sum, "test_loss", t->ev[0]);
    td_trainer_set_num(sum, "train_loss", t->ev[2]);
    td_trainer_set_num(sum, "last_batch_loss", t->loss);
    if (t->test.y) td_trainer_set_num(sum, "test_acc", t->ev[1]);
    if (t->train.y) td_trainer_set_num(sum, "train_acc", t->ev[3]);
  }
  if (c->has_target) {
    td_trainer_set_num(sum, "target_loss", c->target_loss);
    json_object_set_new(sum, "steps_to_target",
                        t->steps_to_target ? json_integer(t->steps_to_target) : json_null());
    json_object_set_new(sum, "reached_target", json_boolean(t->steps_to_target > 0));
  }
  if (s->c->gns_every > 0 && s->gns.n > 0) {
    if (isfinite(td_gns_b_simple(&s->gns)))
      td_trainer_set_num(sum, "b_simple", td_gns_b_simple(&s->gns));
    else
      json_object_set_new(sum, "b_simple_undefined", json_true());
  }
  return 0;
}

static int train_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  train_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  train_state s = {.c = &c};
  const td_trainer_hooks hooks = {.ctx = &s,
                                  .setup = train_setup,
                                  .after_step = train_after_step,
                                  .finish = train_finish,
                                  .teardown = train_teardown};
  return td_trainer_run(&c.tc, &hooks, sink, summary, err);
}

const td_kind td_kind_train = {
    .name = "train",
    .doc = "Train an MLP (optional LayerNorm/BatchNorm) with a first- or second-order optimizer "
           "and an lr schedule; logs loss, lr, norms, per-layer metrics and accuracy",
    .chapter = "4,5",
    .params = train_params,
    .n_params = sizeof train_params / sizeof train_params[0],
    .check = train_check,
    .fill = td_optim_fill_params,
    .run = train_run,
};
