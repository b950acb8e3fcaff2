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
 *  - Divergence (core/train/diverge.h, params divergence.*): every step's train_loss goes to
 *    the divergence rule; a non-finite loss or a blow-up ends the job at once, a spike without
 *    recovery at the end, with TD_EDIVERGED and summary.diverged_step (the step that tripped
 *    the rule; for a spike, the spike's step).
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
#include <time.h>

#include "curv/curv.h"
#include "nn/data.h"
#include "scaling/gns.h"
#include "base/la.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "base/rng.h"
#include "optim/sched.h"
#include "optim/sopt.h"
#include "kinds/registry.h"
#include "train/diverge.h"

#define TRAIN_EVAL_MAX 10000 /* training examples used for train_acc at each eval */
#define EVAL_BATCH 500       /* examples per forward pass during evaluation */
#define FMNIST_TRAIN 60000
#define FMNIST_TEST 10000

static const td_param train_params[] = {
    {"data.name", TD_PT_STR, "\"fashion-mnist\"", 0, 0, "fashion-mnist|synthetic", 0,
     "dataset: fashion-mnist (IDX files) or synthetic (linear teacher, regression, loss mse)"},
    {"data.n_train", TD_PT_INT, NULL, 1, 1e7, NULL, 0,
     "training examples, the first n_train in file order (absent: all; synthetic: all n)"},
    {"data.n_test", TD_PT_INT, NULL, 1, 1e7, NULL, 0,
     "test examples, the first n_test in file order (absent: all 10000; synthetic: 1000)"},
    {"data.n", TD_PT_INT, "1000", 1, 1e7, NULL, 0, "synthetic: training set size"},
    {"data.d", TD_PT_INT, "20", 1, 1e5, NULL, 0, "synthetic: input dimension"},
    {"data.noise", TD_PT_NUM, "0.1", 0, 1e3, NULL, 0, "synthetic: std of the label noise"},
    {"data.decay", TD_PT_NUM, "0", 0, 10, NULL, 0,
     "synthetic: feature covariance eigenvalues are i^-decay, i = 1..d"},
    {"model.hidden", TD_PT_INT_LIST, "[128]", 1, 1e5, NULL, 16, "hidden layer widths"},
    {"model.activation", TD_PT_STR, "\"relu\"", 0, 0, "relu|tanh|linear", 0,
     "activation after every hidden linear layer"},
    {"model.init_scale", TD_PT_NUM, "1", 0, 1e3, NULL, 0,
     "multiplier on the init std (He for relu, LeCun otherwise); biases start at 0"},
    {"model.norm", TD_PT_STR, "\"none\"", 0, 0, "none|layernorm|batchnorm", 0,
     "normalization after every hidden linear layer, before the activation (gamma=1, beta=0; "
     "batchnorm: momentum 0.1, batch stats in training, running stats in evaluation)"},
    {"model.norm_eps", TD_PT_NUM, "1e-5", 1e-300, 1, NULL, 0, "epsilon of the norm layers"},
    {"loss", TD_PT_STR, "\"cross_entropy\"", 0, 0, "cross_entropy|mse", 0,
     "cross_entropy (mean -log softmax of the true class) or mse (1/2 mean ||f-y||^2, "
     "one-hot targets for classes)"},
    {"optimizer.name", TD_PT_STR, "\"sgd\"", 0, 0,
     "sgd|heavy_ball|nesterov|adagrad|rmsprop|adam|adamw|" TD_SOPT_NAMES, 0,
     "optimizer (update rules and sources: core/optim/optim.h, docs/optimizers.md)"},
    {"optimizer.lr", TD_PT_NUM, "0.05", 1e-12, 1e3, NULL, 0,
     "learning rate (the base value of optimizer.schedule)"},
    {"optimizer.momentum", TD_PT_NUM, NULL, 0, 1, NULL, 0,
     "sgd (PyTorch form), heavy_ball (Polyak), nesterov, rmsprop: momentum (absent: 0.9 for "
     "heavy_ball and nesterov, 0 otherwise)"},
    {"optimizer.nesterov", TD_PT_BOOL, "false", 0, 0, NULL, 0,
     "sgd: Nesterov momentum (needs momentum > 0; same as the name nesterov)"},
    {"optimizer.beta1", TD_PT_NUM, "0.9", 0, 0.999999, NULL, 0, "adam/adamw: beta1"},
    {"optimizer.beta2", TD_PT_NUM, "0.999", 0, 0.99999999, NULL, 0, "adam/adamw: beta2"},
    {"optimizer.eps", TD_PT_NUM, NULL, 1e-30, 1, NULL, 0,
     "adagrad/rmsprop/adam/adamw: epsilon (absent: 1e-10 for adagrad, 1e-8 otherwise)"},
    {"optimizer.alpha", TD_PT_NUM, "0.99", 0, 0.999999, NULL, 0,
     "rmsprop: smoothing constant of the squared-gradient average"},
    {"optimizer.centered", TD_PT_BOOL, "false", 0, 0, NULL, 0,
     "rmsprop: normalize by the estimated gradient std (Graves 2013)"},
    {"optimizer.lr_decay", TD_PT_NUM, "0", 0, 1e6, NULL, 0,
     "adagrad: lr_t = lr / (1 + (t-1) lr_decay) (PyTorch)"},
    {"optimizer.initial_accumulator", TD_PT_NUM, "0", 0, 1e6, NULL, 0,
     "adagrad: initial value of the squared-gradient sum"},
    {"optimizer.weight_decay", TD_PT_NUM, NULL, 0, 1e3, NULL, 0,
     "the optimizer's decay: adamw decoupled p -= lr*wd*p (PyTorch); all others coupled L2, "
     "g += wd*p (see also l2). Absent: PyTorch's default, 0.01 for adamw and 0 otherwise, "
     "written into the stored params"},
    {"optimizer.schedule.name", TD_PT_STR, "\"constant\"", 0, 0, "constant|step|cosine", 0,
     "learning-rate schedule after the warm-up: constant; step (lr gamma^floor(s/step_size)); "
     "cosine (to min_lr at the last step)"},
    {"optimizer.schedule.warmup_steps", TD_PT_INT, "0", 0, 1e9, NULL, 0,
     "linear warm-up: lr t/warmup_steps for t <= warmup_steps, then the schedule"},
    {"optimizer.schedule.step_size", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "step: updates between decays (required by step)"},
    {"optimizer.schedule.gamma", TD_PT_NUM, "0.1", 1e-12, 1e3, NULL, 0,
     "step: the decay factor"},
    {"optimizer.schedule.min_lr", TD_PT_NUM, "0", 0, 1e3, NULL, 0,
     "cosine: the final learning rate (<= lr)"},
    TD_SOPT_PARAMS,
    {"l2", TD_PT_NUM, "0", 0, 1e3, NULL, 0,
     "L2 penalty l2/2 ||theta||^2 added to the training loss (in train_loss; its gradient goes "
     "through the optimizer, preconditioners included), unlike optimizer.weight_decay"},
    {"layer_metrics_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between weight_norm/{j}, update_ratio/{j}, effective_lr/{j} (absent: eval_every)"},
    {"batch_size", TD_PT_INT, "128", 1, 65536, NULL, 0,
     "minibatch size (clamped to n_train)"},
    {"epochs", TD_PT_INT, NULL, 1, 1e5, NULL, 0,
     "passes over the training set, reshuffled each epoch (give epochs or steps; neither: 1)"},
    {"steps", TD_PT_INT, NULL, 1, 1e9, NULL, 0, "training steps (instead of epochs)"},
    {"eval_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between evaluations (absent: about 10 evaluations; always at step 0 and the end)"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of init, data and shuffling"},
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
    TD_DIVERGE_PARAMS,
};

#define TRAIN_RNG_GNS 0x474e53 /* rng stream of the noise-scale batches ("GNS") */

typedef struct train_cfg {
  int synthetic;
  size_t n_train, n_test;
  size_t synth_n;
  td_synth_cfg synth;
  td_mlp_cfg mlp;
  int mse;
  const char *opt_name;
  td_optim_hp hp;
  double lr;
  int batch;        /* effective: min(batch_size, n_train) */
  long steps_per_epoch;
  long total_steps;
  long eval_every;
  uint64_t seed;
  long gns_every;   /* 0: no noise-scale measurement */
  int gns_small, gns_big;
  double gns_decay;
  int has_target;
  double target_loss, target_ema;
  td_sched sched;
  double l2;
  long layer_every;
  int so;           /* a second-order optimizer (sopt.h) */
  td_sopt_hp so_hp;
} train_cfg;

/* Read validated params (borrowed) into c and do the cross-field checks. */
static int parse_cfg(const json_t *p, train_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  const char *dname = td_param_str(p, "data.name", "fashion-mnist");
  c->synthetic = strcmp(dname, "synthetic") == 0;
  long ntr = td_param_int(p, "data.n_train", 0), nte = td_param_int(p, "data.n_test", 0);
  int in_dim, out_dim;
  if (c->synthetic) {
    c->synth_n = (size_t)td_param_int(p, "data.n", 1000);
    c->synth.d = (size_t)td_param_int(p, "data.d", 20);
    c->synth.noise = td_param_num(p, "data.noise", 0.1);
    c->synth.decay = td_param_num(p, "data.decay", 0.0);
    if (ntr > (long)c->synth_n)
      return td_err_set(err, TD_EINVAL, "params.data.n_train",
                        "n_train (%ld) exceeds the synthetic set size data.n (%zu)", ntr,
                        c->synth_n);
    c->n_train = ntr > 0 ? (size_t)ntr : c->synth_n;
    c->n_test = nte > 0 ? (size_t)nte : 1000;
    in_dim = (int)c->synth.d;
    out_dim = 1;
  } else {
    if (ntr > FMNIST_TRAIN)
      return td_err_set(err, TD_EINVAL, "params.data.n_train",
                        "fashion-mnist has %d training examples, not %ld", FMNIST_TRAIN, ntr);
    if (nte > FMNIST_TEST)
      return td_err_set(err, TD_EINVAL, "params.data.n_test",
                        "fashion-mnist has %d test examples, not %ld", FMNIST_TEST, nte);
    c->n_train = ntr > 0 ? (size_t)ntr : FMNIST_TRAIN;
    c->n_test = nte > 0 ? (size_t)nte : FMNIST_TEST;
    in_dim = 784;
    out_dim = 10;
  }
  c->mse = strcmp(td_param_str(p, "loss", "cross_entropy"), "mse") == 0;
  if (c->synthetic && !c->mse)
    return td_err_set(err, TD_EINVAL, "params.loss",
                      "synthetic data is a regression set: use \"loss\": \"mse\"");

  const json_t *hid = td_param_get(p, "model.hidden");
  c->mlp.in_dim = in_dim;
  c->mlp.out_dim = out_dim;
  c->mlp.n_hidden = json_is_array(hid) ? (int)json_array_size(hid) : 0;
  if (c->mlp.n_hidden > TD_MLP_MAX_HIDDEN)
    return td_err_set(err, TD_EINVAL, "params.model.hidden", "at most %d hidden layers",
                      TD_MLP_MAX_HIDDEN);
  for (int i = 0; i < c->mlp.n_hidden; i++)
    c->mlp.hidden[i] = (int)json_number_value(json_array_get(hid, (size_t)i));
  if (td_mlp_act_parse(td_param_str(p, "model.activation", "relu"), &c->mlp.act))
    return td_err_set(err, TD_EINVAL, "params.model.activation", "unknown activation");
  c->mlp.init_scale = td_param_num(p, "model.init_scale", 1.0);
  if (td_mlp_norm_parse(td_param_str(p, "model.norm", "none"), &c->mlp.norm))
    return td_err_set(err, TD_EINVAL, "params.model.norm", "unknown normalization");
  c->mlp.norm_eps = td_param_num(p, "model.norm_eps", TD_NORM_EPS_DEFAULT);

  c->opt_name = td_param_str(p, "optimizer.name", "sgd");
  c->hp = td_optim_hp_default();
  c->lr = td_param_num(p, "optimizer.lr", 0.05);
  const int mom_default = !strcmp(c->opt_name, "heavy_ball") || !strcmp(c->opt_name, "nesterov");
  c->hp.momentum = td_param_num(p, "optimizer.momentum", mom_default ? 0.9 : 0.0);
  c->hp.nesterov = td_param_bool(p, "optimizer.nesterov", 0);
  c->hp.beta1 = td_param_num(p, "optimizer.beta1", 0.9);
  c->hp.beta2 = td_param_num(p, "optimizer.beta2", 0.999);
  c->hp.eps = td_param_num(p, "optimizer.eps", strcmp(c->opt_name, "adagrad") ? 1e-8 : 1e-10);
  c->hp.weight_decay = td_param_num(p, "optimizer.weight_decay",
                                    td_optim_default_weight_decay(c->opt_name));
  c->hp.alpha = td_param_num(p, "optimizer.alpha", 0.99);
  c->hp.centered = td_param_bool(p, "optimizer.centered", 0);
  c->hp.lr_decay = td_param_num(p, "optimizer.lr_decay", 0.0);
  c->hp.initial_accumulator = td_param_num(p, "optimizer.initial_accumulator", 0.0);
  c->l2 = td_param_num(p, "l2", 0.0);
  /* first-order methods (the optim.h table) are checked here; names outside it (the schema
   * enum lists them) are validated by their own code */
  if (td_optim_state_count(c->opt_name, NULL) >= 0 && td_optim_check(c->opt_name, &c->hp, err))
    return TD_EINVAL;
  if (c->hp.nesterov && strcmp(c->opt_name, "sgd") == 0 && c->hp.momentum <= 0)
    return td_err_set(err, TD_EINVAL, "params.optimizer.nesterov",
                      "nesterov needs optimizer.momentum > 0");

  long bs = td_param_int(p, "batch_size", 128);
  c->batch = (int)(bs < (long)c->n_train ? bs : (long)c->n_train);
  c->steps_per_epoch = (long)((c->n_train + (size_t)c->batch - 1) / (size_t)c->batch);
  int has_ep = td_param_has(p, "epochs"), has_st = td_param_has(p, "steps");
  if (has_ep && has_st)
    return td_err_set(err, TD_EINVAL, "params.steps", "give either epochs or steps, not both");
  if (has_st) {
    c->total_steps = td_param_int(p, "steps", 1);
  } else {
    double t = (double)td_param_int(p, "epochs", 1) * (double)c->steps_per_epoch;
    if (t > 1e12)
      return td_err_set(err, TD_EINVAL, "params.epochs", "%.3g steps is too many", t);
    c->total_steps = (long)t;
  }
  c->eval_every = td_param_int(p, "eval_every", 0);
  if (c->eval_every <= 0) c->eval_every = c->total_steps >= 10 ? (c->total_steps + 9) / 10 : 1;
  c->layer_every = td_param_int(p, "layer_metrics_every", c->eval_every);
  if (c->mlp.norm == TD_NORM_BATCHNORM && c->mlp.n_hidden > 0 &&
      (c->batch < 2 || c->n_train % (size_t)c->batch == 1))
    return td_err_set(err, TD_EINVAL, "params.batch_size",
                      "batchnorm needs batches of at least 2 examples (batch_size %d, n_train "
                      "%zu leaves a batch of 1)",
                      c->batch, c->n_train);
  td_sched_kind sk;
  if (td_sched_parse(td_param_str(p, "optimizer.schedule.name", "constant"), &sk))
    return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.name", "unknown schedule");
  int rc = td_sched_init(&c->sched, sk, c->lr, td_param_int(p, "optimizer.schedule.warmup_steps", 0),
                         td_param_int(p, "optimizer.schedule.step_size", 0),
                         td_param_num(p, "optimizer.schedule.gamma", 0.1),
                         td_param_num(p, "optimizer.schedule.min_lr", 0.0), c->total_steps, err);
  if (rc) return rc;
  c->seed = (uint64_t)td_param_int(p, "seed", 0);
  c->gns_every = td_param_int(p, "noise_scale.every", 0);
  if (c->gns_every > 0) {
    long bs_small = td_param_int(p, "noise_scale.b_small", c->batch);
    long big_def = 8 * bs_small < (long)c->n_train ? 8 * bs_small : (long)c->n_train;
    long bs_big = td_param_int(p, "noise_scale.b_big", big_def);
    if (bs_small >= (long)c->n_train)
      return td_err_set(err, TD_EINVAL, "params.noise_scale.b_small",
                        "noise_scale.b_small (%ld) must be below n_train (%zu)", bs_small,
                        c->n_train);
    if (bs_big <= bs_small || bs_big > (long)c->n_train)
      return td_err_set(err, TD_EINVAL, "params.noise_scale.b_big",
                        "noise_scale.b_big (%ld) must be above b_small (%ld) and at most "
                        "n_train (%zu)",
                        bs_big, bs_small, c->n_train);
    c->gns_small = (int)bs_small;
    c->gns_big = (int)bs_big;
    c->gns_decay = td_param_num(p, "noise_scale.decay", 0.95);
  } else if (td_param_has(p, "noise_scale.b_small") || td_param_has(p, "noise_scale.b_big") ||
             td_param_has(p, "noise_scale.decay")) {
    return td_err_set(err, TD_EINVAL, "params.noise_scale.every",
                      "noise_scale needs every (the steps between measurements)");
  }
  c->has_target = td_param_has(p, "target_loss");
  c->target_loss = td_param_num(p, "target_loss", 0.0);
  c->target_ema = td_param_num(p, "target_ema", 0.95);
  td_sopt_kind sok;
  c->so = td_sopt_kind_parse(c->opt_name, &sok) == 0;
  if (c->so) {
    if ((rc = td_sopt_hp_parse(p, c->opt_name, c->seed, &c->so_hp, err))) return rc;
    c->so_hp.weight_decay += c->l2; /* both are a coupled L2 term for these methods */
  }
  return 0;
}

static int train_check(const json_t *params, td_estimate *est, td_err *err) {
  train_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  double np = 0, ws = 0, ws_eval = 0;
  if ((rc = td_mlp_estimate(&c.mlp, c.batch, &np, &ws, err))) return rc;
  if ((rc = td_mlp_estimate(&c.mlp, EVAL_BATCH, &np, &ws_eval, err))) return rc;
  double d = c.mlp.in_dim, k = c.mlp.out_dim;
  int n_state = td_optim_state_count(c.opt_name, &c.hp);
  if (n_state < 0) n_state = 4;
  double bytes = 8.0 * np * (3 + n_state);  /* params, grad, previous params, state */
  bytes += ws + ws_eval;                                        /* activations */
  bytes += 8.0 * (double)(c.n_train + c.n_test) * (d + k) + 8.0 * c.n_train; /* data, perm */
  bytes += 8.0 * (double)c.batch * (d + k) + 8.0 * EVAL_BATCH * k; /* batch buffers */
  if (!c.synthetic) bytes += 60000.0 * 785; /* decompressed IDX file while loading */
  if (c.gns_every > 0) { /* noise scale: 2 gradients, a b_big batch and its activations */
    double ws_gns = 0;
    if ((rc = td_mlp_estimate(&c.mlp, c.gns_big, &np, &ws_gns, err))) return rc;
    bytes += 16.0 * np + ws_gns + 8.0 * (double)c.gns_big * (d + 2 * k) + 8.0 * c.n_train;
  }
  if (c.so) { /* the optimizer and its td_curv_ctx; newton's parameter cap */
    double sb = 0;
    if ((rc = td_sopt_check(&c.so_hp, &c.mlp, c.batch, &sb, err))) return rc;
    bytes += sb;
  }
  est->bytes = bytes;
  est->n_params = np;
  return 0;
}

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* JSON cannot hold NaN/Inf: store them as strings, as the metrics API does. */
static void set_num(json_t *o, const char *key, double v) {
  if (isfinite(v)) json_object_set_new(o, key, json_real(v));
  else json_object_set_new(o, key, json_string(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity"));
}

/* Mean loss and accuracy of the model on the first n examples of ds. acc is NaN for
 * regression sets. */
static void evaluate(const td_mlp *m, td_mlp_ws *ws, const train_cfg *c, const td_dataset *ds,
                     size_t n, double *loss, double *acc) {
  double lsum = 0.0;
  long correct = 0;
  int K = c->mlp.out_dim;
  for (size_t s = 0; s < n; s += EVAL_BATCH) {
    int B = (int)(n - s < EVAL_BATCH ? n - s : EVAL_BATCH);
    const double *z = td_mlp_forward(m, ws, m->params, ds->X + s * ds->d, B);
    double l = 0.0;
    if (ds->y) {
      if (c->mse) td_loss_mse_onehot(&l, NULL, z, ds->y + s, B, K);
      else td_loss_xent(&l, NULL, z, ds->y + s, B, K);
      correct += td_count_correct(z, ds->y + s, B, K);
    } else {
      td_loss_mse(&l, NULL, z, ds->Y + s * (size_t)K, B, K);
    }
    lsum += l * B;
  }
  *loss = lsum / (double)n;
  *acc = ds->y ? (double)correct / (double)n : NAN;
}

typedef struct train_state {
  td_dataset train, test;
  td_mlp *m;
  td_mlp_ws ws, ws_eval;
  td_optim *opt;
  double *Xb, *Yb, *dz;
  double *prev; /* parameters before the update, at layer-metric steps */
  int *yb;
  size_t *perm;
  /* noise scale (noise_scale.every > 0) */
  td_mlp_ws ws_gns;
  double *Xg, *Yg, *dzg, *g_small, *g_big;
  int *yg;
  size_t *gidx;
  /* second-order optimizers */
  td_sopt *so;
  td_curv_ctx cc;
} train_state;

static void state_free(train_state *s) {
  td_dataset_deinit(&s->train);
  td_dataset_deinit(&s->test);
  td_mlp_ws_deinit(&s->ws);
  td_mlp_ws_deinit(&s->ws_eval);
  td_mlp_destroy(s->m);
  td_optim_destroy(s->opt);
  free(s->Xb);
  free(s->Yb);
  free(s->dz);
  free(s->prev);
  free(s->yb);
  free(s->perm);
  td_mlp_ws_deinit(&s->ws_gns);
  free(s->Xg);
  free(s->Yg);
  free(s->dzg);
  free(s->g_small);
  free(s->g_big);
  free(s->yg);
  free(s->gidx);
  td_sopt_destroy(s->so);
  td_curv_deinit(&s->cc);
}

/* Mean loss gradient (into grad) of rows [r0, r0 + b) of the gathered noise-scale batch. */
static void gns_grad(train_state *s, const train_cfg *c, int r0, int b, double *grad) {
  const int K = c->mlp.out_dim;
  const size_t d = s->train.d;
  double l = 0;
  const double *z = td_mlp_forward(s->m, &s->ws_gns, s->m->params, s->Xg + (size_t)r0 * d, b);
  if (s->yg && !c->mse) td_loss_xent(&l, s->dzg, z, s->yg + r0, b, K);
  else if (s->yg) td_loss_mse_onehot(&l, s->dzg, z, s->yg + r0, b, K);
  else td_loss_mse(&l, s->dzg, z, s->Yg + (size_t)r0 * K, b, K);
  td_mlp_backward(s->m, &s->ws_gns, s->m->params, s->dzg, b, grad, 0);
}

/* One noise-scale measurement at the current parameters (see the header): b_big distinct
 * examples (partial Fisher-Yates on gidx), G_small over the first b_small, G_big over all of
 * them as the size-weighted mean of G_small and the rest's gradient. */
static int gns_measure(train_state *s, const train_cfg *c, td_rng *r, td_gns *st,
                       td_sink *sink, long step) {
  const int bs = c->gns_small, bb = c->gns_big, K = c->mlp.out_dim;
  const size_t n = s->train.n, d = s->train.d, np = s->m->n_params;
  for (int i = 0; i < bb; i++) {
    size_t j = (size_t)i + (size_t)td_rng_below(r, n - (size_t)i);
    size_t t = s->gidx[i];
    s->gidx[i] = s->gidx[j];
    s->gidx[j] = t;
    size_t src = s->gidx[i];
    memcpy(s->Xg + (size_t)i * d, s->train.X + src * d, d * sizeof *s->Xg);
    if (s->yg) s->yg[i] = s->train.y[src];
    else memcpy(s->Yg + (size_t)i * K, s->train.Y + src * (size_t)K, (size_t)K * sizeof *s->Yg);
  }
  gns_grad(s, c, 0, bs, s->g_small);
  gns_grad(s, c, bs, bb - bs, s->g_big);
  double g2s = td_gns_sqnorm(s->g_small, np);
  const double ws = (double)bs / bb, wr = (double)(bb - bs) / bb;
  for (size_t i = 0; i < np; i++) s->g_big[i] = ws * s->g_small[i] + wr * s->g_big[i];
  double g2b = td_gns_sqnorm(s->g_big, np);
  if (td_gns_update(st, bs, g2s, bb, g2b, NULL) != 0) return 0; /* non-finite: skip */
  const double bsim = td_gns_b_simple(st); /* NaN while an EMA is <= 0: not data */
  int rc = isfinite(bsim) ? td_sink_metric(sink, "b_simple", step, bsim)
                          : td_sink_metric(sink, "b_simple_undefined", step, 1.0);
  if (!rc) rc = td_sink_metric(sink, "gns_g2", step, td_gns_g2(st));
  if (!rc) rc = td_sink_metric(sink, "gns_trace", step, td_gns_trace(st));
  return rc;
}

/* Per linear layer j (w = W_j and b_j): weight_norm/{j}, and when prev (the parameters
 * before this update) is given update_ratio/{j} = ||w - w_prev|| / ||w_prev|| and, for
 * scale-invariant layers, effective_lr/{j} = lr / ||w||^2 (see the header). */
static int layer_metrics(const td_mlp *m, const double *prev, double lr, td_sink *sink,
                         long step) {
  char key[64];
  int rc = 0;
  for (int j = 0; j < m->n_linear && !rc; j++) {
    const td_layer *L = td_mlp_linear(m, j, m->params, NULL, NULL);
    const double *w = m->params + L->off;
    double w2 = 0.0, d2 = 0.0, p2 = 0.0;
    for (size_t i = 0; i < L->n_params; i++) w2 += w[i] * w[i];
    snprintf(key, sizeof key, "weight_norm/%d", j);
    rc = td_sink_metric(sink, key, step, sqrt(w2));
    if (rc || !prev) continue;
    const double *wp = prev + L->off;
    for (size_t i = 0; i < L->n_params; i++) {
      d2 += (w[i] - wp[i]) * (w[i] - wp[i]);
      p2 += wp[i] * wp[i];
    }
    snprintf(key, sizeof key, "update_ratio/%d", j);
    rc = td_sink_metric(sink, key, step, p2 > 0 ? sqrt(d2 / p2) : NAN);
    if (!rc && td_mlp_scale_invariant(m, j)) {
      snprintf(key, sizeof key, "effective_lr/%d", j);
      rc = td_sink_metric(sink, key, step, lr / w2);
    }
  }
  return rc;
}

static int do_eval(train_state *s, const train_cfg *c, td_sink *sink, long step, double out[4]) {
  /* out: test_loss, test_acc, train_eval_loss, train_acc */
  size_t ntr = s->train.n < TRAIN_EVAL_MAX ? s->train.n : TRAIN_EVAL_MAX;
  evaluate(s->m, &s->ws_eval, c, &s->test, s->test.n, &out[0], &out[1]);
  evaluate(s->m, &s->ws_eval, c, &s->train, ntr, &out[2], &out[3]);
  int rc = td_sink_metric(sink, "test_loss", step, out[0]);
  if (!rc) rc = td_sink_metric(sink, "train_eval_loss", step, out[2]);
  if (!rc && s->test.y) rc = td_sink_metric(sink, "test_acc", step, out[1]);
  if (!rc && s->train.y) rc = td_sink_metric(sink, "train_acc", step, out[3]);
  return rc;
}

static int train_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  train_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  train_state s;
  memset(&s, 0, sizeof s);

  /* Data. */
  if (c.synthetic) {
    rc = td_data_synthetic(&c.synth, c.synth_n, c.seed, TD_RNG_DATA, &s.train, NULL, err);
    if (!rc) {
      s.train.n = c.n_train; /* the first n_train of the n examples */
      rc = td_data_synthetic(&c.synth, c.n_test, c.seed, TD_RNG_TEST_DATA, &s.test, NULL, err);
    }
  } else {
    rc = td_data_fashion_mnist("train", c.n_train, &s.train, err);
    if (!rc) rc = td_data_fashion_mnist("test", c.n_test, &s.test, err);
  }
  if (rc) goto out;

  /* Model, workspaces, optimizer, batch buffers: everything is allocated here, once. */
  const int B = c.batch, K = c.mlp.out_dim;
  const size_t d = s.train.d;
  if ((rc = td_mlp_create(&c.mlp, &s.m, err))) goto out;
  td_mlp_init(s.m, c.seed);
  int eb = (int)((s.test.n > s.train.n ? s.test.n : s.train.n));
  if (eb > EVAL_BATCH) eb = EVAL_BATCH;
  if ((rc = td_mlp_ws_init(&s.ws, s.m, B, err))) goto out;
  if ((rc = td_mlp_ws_init(&s.ws_eval, s.m, eb, err))) goto out;
  td_mlp_ws_set_mode(&s.ws, TD_MLP_TRAIN, 1);   /* BatchNorm: batch stats, running update */
  td_mlp_ws_set_mode(&s.ws_eval, TD_MLP_EVAL, 0); /* BatchNorm: running statistics */
  if (c.so) {
    if ((rc = td_sopt_create(&c.so_hp, s.m, B, &s.so, err)) ||
        (rc = td_curv_init(&s.cc, s.m, B, err)))
      goto out;
  } else if ((rc = td_optim_create(c.opt_name, &c.hp, s.m->n_params, &s.opt, err))) {
    goto out;
  }
  s.Xb = malloc((size_t)B * d * sizeof *s.Xb);
  s.dz = malloc((size_t)B * K * sizeof *s.dz);
  s.perm = malloc(s.train.n * sizeof *s.perm);
  s.prev = malloc(s.m->n_params * sizeof *s.prev);
  if (s.train.y) s.yb = malloc((size_t)B * sizeof *s.yb);
  else s.Yb = malloc((size_t)B * K * sizeof *s.Yb);
  if (!s.Xb || !s.dz || !s.perm || !s.prev || (!s.yb && !s.Yb)) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "train: out of memory for batch buffers");
    goto out;
  }

  const size_t n = s.train.n;
  for (size_t i = 0; i < n; i++) s.perm[i] = i;
  td_rng shuf;
  td_rng_init(&shuf, c.seed, TD_RNG_SHUFFLE);
  td_rng gns_rng;
  td_rng_init(&gns_rng, c.seed, TRAIN_RNG_GNS);
  td_gns gns;
  td_gns_init(&gns, 0.0, NULL);
  if (c.gns_every > 0) {
    if ((rc = td_gns_init(&gns, c.gns_decay, err)) ||
        (rc = td_gns_set_population(&gns, (double)n, err)))
      goto out;
    int cap = c.gns_small > c.gns_big - c.gns_small ? c.gns_small : c.gns_big - c.gns_small;
    if ((rc = td_mlp_ws_init(&s.ws_gns, s.m, cap, err))) goto out;
    s.Xg = malloc((size_t)c.gns_big * d * sizeof *s.Xg);
    s.dzg = malloc((size_t)cap * K * sizeof *s.dzg);
    s.g_small = malloc(s.m->n_params * sizeof *s.g_small);
    s.g_big = malloc(s.m->n_params * sizeof *s.g_big);
    s.gidx = malloc(n * sizeof *s.gidx);
    if (s.train.y) s.yg = malloc((size_t)c.gns_big * sizeof *s.yg);
    else s.Yg = malloc((size_t)c.gns_big * K * sizeof *s.Yg);
    if (!s.Xg || !s.dzg || !s.g_small || !s.g_big || !s.gidx || (!s.yg && !s.Yg)) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "train: out of memory for the noise scale");
      goto out;
    }
    for (size_t i = 0; i < n; i++) s.gidx[i] = i;
  }
  double ema = 0.0, ema_w = 0.0;
  long steps_to_target = 0; /* 0: not reached */
  td_diverge_cfg dvc;
  td_diverge dv;
  if ((rc = td_diverge_parse(params, &dvc, err))) goto out;
  td_diverge_init(&dv, &dvc);

  double ev[4] = {NAN, NAN, NAN, NAN};
  if ((rc = do_eval(&s, &c, sink, 0, ev))) goto out;
  if ((rc = layer_metrics(s.m, NULL, 0.0, sink, 0))) goto out;
  td_sink_progress(sink, 0, c.total_steps);

  double train_time = 0.0, loss = NAN;
  long step = 0, diverged_step = 0;
  size_t pos = n; /* position in the current permutation; n forces a reshuffle */
  while (step < c.total_steps) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", step);
      break;
    }
    double t0 = now_sec();
    if (pos >= n) {
      td_rng_shuffle(&shuf, s.perm, n);
      pos = 0;
    }
    int b = (int)(n - pos < (size_t)B ? n - pos : (size_t)B);
    for (int i = 0; i < b; i++) {
      size_t src = s.perm[pos + (size_t)i];
      memcpy(s.Xb + (size_t)i * d, s.train.X + src * d, d * sizeof *s.Xb);
      if (s.yb) s.yb[i] = s.train.y[src];
      else memcpy(s.Yb + (size_t)i * K, s.train.Y + src * (size_t)K, (size_t)K * sizeof *s.Yb);
    }
    pos += (size_t)b;
    const double *z = td_mlp_forward(s.m, &s.ws, s.m->params, s.Xb, b);
    if (s.yb && !c.mse) td_loss_xent(&loss, s.dz, z, s.yb, b, K);
    else if (s.yb) td_loss_mse_onehot(&loss, s.dz, z, s.yb, b, K);
    else td_loss_mse(&loss, s.dz, z, s.Yb, b, K);
    step++;
    double penalty = 0.0; /* l2/2 ||theta||^2, part of the training loss */
    if (c.l2 > 0) {
      double pn = td_la_nrm2(s.m->n_params, s.m->params);
      penalty = 0.5 * c.l2 * pn * pn;
      loss += penalty;
    }
    if ((rc = td_diverge_observe(&dv, step, loss, err))) {
      td_sopt_diverge_hint(s.so, err);
      diverged_step = step;
      td_sink_metric(sink, "train_loss", step, loss);
      break;
    }
    td_mlp_backward(s.m, &s.ws, s.m->params, s.dz, b, s.m->grad, 0);
    if (c.l2 > 0)
      for (size_t i = 0; i < s.m->n_params; i++) s.m->grad[i] += c.l2 * s.m->params[i];
    double gnorm = td_la_nrm2(s.m->n_params, s.m->grad);
    const double lr = td_sched_lr(&c.sched, step);
    const int layer_step = step % c.layer_every == 0;
    if (layer_step) memcpy(s.prev, s.m->params, s.m->n_params * sizeof *s.prev);
    td_sopt_stats sst;
    if (s.so) { /* bind the minibatch and the point, then the second-order step */
      rc = td_curv_set_batch(&s.cc, s.Xb, s.yb, s.Yb, b, c.mse ? TD_CURV_MSE : TD_CURV_XENT, err);
      if (!rc) rc = td_curv_set_point(&s.cc, s.m->params, err);
      if (!rc) rc = td_sopt_step(s.so, &s.cc, s.m->params, lr, &sst, err);
      if (rc) break;
    } else {
      td_optim_step(s.opt, s.m->params, s.m->grad, lr);
    }
    double pnorm = td_la_nrm2(s.m->n_params, s.m->params);
    train_time += now_sec() - t0;

    if ((rc = td_sink_metric(sink, "train_loss", step, loss))) break;
    if ((rc = td_sink_metric(sink, "lr", step, lr))) break;
    if (c.l2 > 0 && (rc = td_sink_metric(sink, "l2_penalty", step, penalty))) break;
    if (layer_step && (rc = layer_metrics(s.m, s.prev, lr, sink, step))) break;
    if ((rc = td_sink_metric(sink, "grad_norm", step, gnorm))) break;
    if ((rc = td_sink_metric(sink, "param_norm", step, pnorm))) break;
    if (s.so && (rc = td_sopt_log(s.so, &sst, sink, step))) break;
    if (c.has_target) {
      ema = c.target_ema * ema + (1.0 - c.target_ema) * loss;
      ema_w = c.target_ema * ema_w + (1.0 - c.target_ema);
      if ((rc = td_sink_metric(sink, "train_loss_ema", step, ema / ema_w))) break;
      if (ema / ema_w <= c.target_loss) steps_to_target = step;
    }
    if (c.gns_every > 0 && step % c.gns_every == 0 &&
        (rc = gns_measure(&s, &c, &gns_rng, &gns, sink, step)))
      break;
    if (step % c.eval_every == 0 || step == c.total_steps || steps_to_target)
      if ((rc = do_eval(&s, &c, sink, step, ev))) break;
    td_sink_progress(sink, step, c.total_steps);
    if (steps_to_target) break;
  }

  if (!rc && (rc = td_diverge_finish(&dv, step, err))) {
    td_sopt_diverge_hint(s.so, err);
    diverged_step = dv.spike_step;
  }
  json_t *sum = json_object();
  if (sum) {
    json_object_set_new(sum, "n_params", json_integer((json_int_t)s.m->n_params));
    json_object_set_new(sum, "steps", json_integer(step));
    json_object_set_new(sum, "batch_size", json_integer(B));
    set_num(sum, "steps_per_sec", train_time > 0 ? (double)step / train_time : 0.0);
    if (diverged_step) {
      json_object_set_new(sum, "diverged_step", json_integer(diverged_step));
      set_num(sum, "train_loss", loss);
    } else {
      set_num(sum, "test_loss", ev[0]);
      set_num(sum, "train_loss", ev[2]);
      set_num(sum, "last_batch_loss", loss);
      if (s.test.y) set_num(sum, "test_acc", ev[1]);
      if (s.train.y) set_num(sum, "train_acc", ev[3]);
    }
    if (c.has_target) {
      set_num(sum, "target_loss", c.target_loss);
      json_object_set_new(sum, "steps_to_target",
                          steps_to_target ? json_integer(steps_to_target) : json_null());
      json_object_set_new(sum, "reached_target", json_boolean(steps_to_target > 0));
    }
    if (c.gns_every > 0 && gns.n > 0) {
      if (isfinite(td_gns_b_simple(&gns))) set_num(sum, "b_simple", td_gns_b_simple(&gns));
      else json_object_set_new(sum, "b_simple_undefined", json_true());
    }
  }
  *summary = sum;
out:
  state_free(&s);
  return rc;
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
