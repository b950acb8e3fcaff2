/* trainer.h: the one training loop shared by every kind that trains a network (prefix
 * td_trainer_): a PROBLEM (data + model + loss: loading, optional centering, batch buffers,
 * evaluation) and a TRAINER (minibatch order, loss and gradient, optimizer step for the
 * first-order optimizers of optim.h and the second-order ones of sopt.h, lr schedule,
 * evaluation, the divergence rule of diverge.h, cancellation, progress, the standard metrics).
 *
 * HOW TO ADD A KIND THAT TRAINS A NETWORK (see core/kinds/curvature.c for a short example):
 *   1. a schema: the shared rows below (TD_TRAINER_PROBLEM_PARAMS, TD_TRAINER_OPTIM_PARAMS,
 *      TD_TRAINER_LENGTH_PARAMS, TD_DIVERGE_PARAMS) plus the kind's own rows;
 *   2. a parse function that fills a td_trainer_cfg with td_trainer_parse_problem,
 *      td_trainer_parse_length and td_trainer_parse_optim (and the kind's own fields);
 *   3. hooks (td_trainer_hooks) for the kind's own work: after the loss, after a step, at an
 *      analysis step, at the end (summary), plus set-up and teardown of its own state;
 *   4. run = td_trainer_run(&cfg, &hooks, params, sink, summary, err);
 *   5. one line in core/kinds/registry.c.
 *
 * The loop (step labels, metrics and hooks in order):
 *   MINIBATCH mode (cfg.full_batch = 0; steps are numbered 1..T): eval(0), analyze(0), then for
 *   t = 1..T: next batch; loss and gradient at theta_{t-1}; after_loss; divergence rule on
 *   train_loss_t; update t (optimizer or the update hook); standard metrics at t; after_step;
 *   eval at t (every eval_every and T); analyze at t (every analyze_every and T); target.
 *   FULL-BATCH mode (cfg.full_batch = 1, as eos: T updates give steps 0..T): for t = 0..T: loss
 *   and gradient of the whole training set at theta_t; after_loss; divergence rule; standard
 *   metrics at t; eval at t; analyze at t; then, for t < T, update t+1 and after_step.
 * In both modes an evaluation or analysis at step t sees the parameters after t updates, and
 * so does the checkpoint of step t (cfg.ckpt_every: at its multiples t > 0 and the last step,
 * after the analysis; FULL-BATCH: before update t+1).
 *
 * Starting points: init_from loads the parameters (and BatchNorm buffers) of a checkpoint after
 * the initialization, before the setup hook; everything else starts afresh. A fork from step S
 * also loads the optimizer state and the trainer's state of the checkpoint's metadata (the
 * number of permutations drawn and the position in the current one, the target_loss EMA, the
 * divergence rule's state) and starts at step S + 1 (FULL-BATCH: at S, whose loss is not
 * counted twice) with no evaluation or analysis at 0: a fork that changes nothing continues
 * bitwise as the parent did. Hooks see the loaded parameters.
 *
 * Divergence: every step's training loss goes to td_diverge_observe (non-finite: always
 * diverged; blow-up and spike rules per params.divergence.*), td_diverge_finish at the end. A
 * run that trips it stops (the step's train_loss is still logged), returns TD_EDIVERGED with
 * err->msg from the rule, and the summary holds diverged_step. A hook may also return
 * TD_EDIVERGED (e.g. a non-finite analysis loss): the same, at the current step. */
#ifndef TD_TRAINER_H
#define TD_TRAINER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/rng.h"
#include "base/schema.h"
#include "base/sink.h"
#include "curv/curv.h"
#include "nn/data.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "optim/sched.h"
#include "optim/sopt.h"
#include "train/diverge.h"

#define TD_TRAINER_FMNIST_TRAIN 60000
#define TD_TRAINER_FMNIST_TEST 10000
#define TD_TRAINER_EVAL_BATCH 500     /* examples per forward pass in evaluations */
#define TD_TRAINER_TRAIN_EVAL_MAX 10000 /* training examples of train_eval_loss / train_acc */

/* ------------------------------------------------------------------ shared schema rows */

/* The problem: data, model, loss, seed (paths data.*, model.*, loss, seed). NTRAIN_DOC and
 * NTEST_DOC say what an absent data.n_train / data.n_test means for the kind (see
 * td_trainer_parse_problem); HIDDEN, ACT, LOSS are default JSON texts. */
#define TD_TRAINER_PROBLEM_PARAMS(NTRAIN_DOC, NTEST_DOC, HIDDEN, ACT, LOSS)                       \
  {"data.name", TD_PT_STR, "\"fashion-mnist\"", 0, 0, "fashion-mnist|synthetic", 0,               \
   "dataset: fashion-mnist (IDX files, pixels / 255) or synthetic (linear teacher, loss mse)"},    \
      {"data.n_train", TD_PT_INT, NULL, 1, 1e7, NULL, 0,                                          \
       "training examples: the first n_train in file order (absent: " NTRAIN_DOC                  \
       "; synthetic: all data.n)"},                                                               \
      {"data.n_test", TD_PT_INT, NULL, 1, 1e7, NULL, 0,                                           \
       "held-out examples: the first n_test of the test file (absent: " NTEST_DOC                 \
       "; synthetic: 1000)"},                                                                     \
      {"data.n", TD_PT_INT, "1000", 1, 1e7, NULL, 0, "synthetic: training set size"},             \
      {"data.d", TD_PT_INT, "20", 1, 1e5, NULL, 0, "synthetic: input dimension"},                 \
      {"data.noise", TD_PT_NUM, "0.1", 0, 1e3, NULL, 0, "synthetic: std of the label noise"},     \
      {"data.decay", TD_PT_NUM, "0", 0, 10, NULL, 0,                                              \
       "synthetic: feature covariance eigenvalues are i^-decay, i = 1..d"},                       \
      {"model.hidden", TD_PT_INT_LIST, HIDDEN, 1, 1e5, NULL, 16, "hidden layer widths"},          \
      {"model.activation", TD_PT_STR, ACT, 0, 0, "relu|tanh|linear", 0,                           \
       "activation after every hidden linear layer"},                                             \
      TD_TRAINER_INIT_PARAMS, TD_TRAINER_PARAMETERIZATION_PARAMS,                                 \
      {"loss", TD_PT_STR, LOSS, 0, 0, "cross_entropy|mse", 0,                                     \
       "cross_entropy (mean -log softmax of the true class) or mse (1/2 mean ||f-y||^2, "         \
       "one-hot targets for classes)"},                                                           \
      {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0,                                    \
       "seed of init, data, shuffling and probe vectors"}

/* The initialization rows (model.init, model.init_scale); td_mlp_init_parse reads init. */
#define TD_TRAINER_INIT_PARAMS                                                                    \
  {"model.init", TD_PT_STR, NULL, 0, 0, "he_normal|lecun_normal|torch_default", 0,                \
   "weight init: he_normal N(0, 2/fan_in), lecun_normal N(0, 1/fan_in) (biases 0), or "           \
   "torch_default (torch.nn.Linear.reset_parameters: W and b ~ U(-1/sqrt(fan_in), "              \
   "1/sqrt(fan_in))); absent: He before a relu, LeCun otherwise"},                               \
      {"model.init_scale", TD_PT_NUM, "1", 0, 1e3, NULL, 0,                                       \
       "multiplier on the init distribution of the weights and biases"}

/* The parameterization rows (model.parameterization, model.sigma_w2, model.sigma_b2,
 * model.base_width; model.h td_param_kind has the scalings and their sources). */
#define TD_TRAINER_PARAMETERIZATION_PARAMS                                                        \
  {"model.parameterization", TD_PT_STR, "\"standard\"", 0, 0, "standard|ntk|mup", 0,               \
   "standard: model.init as is; ntk (Jacot et al. 2018): W, b ~ N(0, init_scale^2), layer "       \
   "output sigma_w/sqrt(fan_in) W x + sigma_b b; mup (Tensor Programs V, Table 3, relative to "   \
   "model.base_width): output init var / r_in, per-layer lr x r_out (SGD: input weights, "       \
   "biases), x 1/r_in (SGD: output; Adam: hidden and output)"},                                  \
      {"model.sigma_w2", TD_PT_NUM, "2", 1e-6, 1e6, NULL, 0, "ntk: sigma_w^2 of every layer"},    \
      {"model.sigma_b2", TD_PT_NUM, "0.1", 0, 1e6, NULL, 0, "ntk: sigma_b^2 of every layer"},     \
      {"model.base_width", TD_PT_NUM, "1", 1e-6, 1e9, NULL, 0,                                     \
       "mup: the base width n0 (r = fan / n0; at width n0 mup is standard; 1: Table 3 as "      \
       "printed)"}

/* Normalization layers (model.norm, model.norm_eps). */
#define TD_TRAINER_NORM_PARAMS                                                                    \
  {"model.norm", TD_PT_STR, "\"none\"", 0, 0, "none|layernorm|batchnorm", 0,                      \
   "normalization after every hidden linear layer, before the activation (gamma=1, beta=0; "      \
   "batchnorm: momentum 0.1, batch stats in training, running stats in evaluation)"},            \
      {"model.norm_eps", TD_PT_NUM, "1e-5", 1e-300, 1, NULL, 0, "epsilon of the norm layers"}

/* The first-order optimizers (optim.h) and the lr schedule (sched.h); NAMES is the enum of
 * optimizer.name (TD_TRAINER_OPTIM_NAMES, and "|" TD_SOPT_NAMES for kinds that add
 * TD_SOPT_PARAMS), LR the default lr. */
#define TD_TRAINER_OPTIM_NAMES "sgd|heavy_ball|nesterov|adagrad|rmsprop|adam|adamw|sgld"
#define TD_TRAINER_OPTIM_PARAMS(NAMES, LR)                                                        \
  {"optimizer.name", TD_PT_STR, "\"sgd\"", 0, 0, NAMES, 0,                                        \
   "optimizer (update rules and sources: core/optim/optim.h, docs/optimizers.md)"},               \
      {"optimizer.lr", TD_PT_NUM, LR, 1e-12, 1e3, NULL, 0,                                        \
       "learning rate (the base value of optimizer.schedule)"},                                   \
      {"optimizer.momentum", TD_PT_NUM, NULL, 0, 1, NULL, 0,                                      \
       "sgd (PyTorch form), heavy_ball (Polyak), nesterov, rmsprop: momentum (absent: 0.9 for "   \
       "heavy_ball and nesterov, 0 otherwise)"},                                                  \
      {"optimizer.nesterov", TD_PT_BOOL, "false", 0, 0, NULL, 0,                                  \
       "sgd: Nesterov momentum (needs momentum > 0; same as the name nesterov)"},                 \
      {"optimizer.beta1", TD_PT_NUM, "0.9", 0, 0.999999, NULL, 0, "adam/adamw: beta1"},           \
      {"optimizer.beta2", TD_PT_NUM, "0.999", 0, 0.99999999, NULL, 0, "adam/adamw: beta2"},       \
      {"optimizer.eps", TD_PT_NUM, NULL, 1e-30, 1, NULL, 0,                                       \
       "adagrad/rmsprop/adam/adamw: epsilon (absent: 1e-10 for adagrad, 1e-8 otherwise)"},        \
      {"optimizer.alpha", TD_PT_NUM, "0.99", 0, 0.999999, NULL, 0,                                \
       "rmsprop: smoothing constant of the squared-gradient average"},                            \
      {"optimizer.centered", TD_PT_BOOL, "false", 0, 0, NULL, 0,                                  \
       "rmsprop: normalize by the estimated gradient std (Graves 2013)"},                         \
      {"optimizer.lr_decay", TD_PT_NUM, "0", 0, 1e6, NULL, 0,                                     \
       "adagrad: lr_t = lr / (1 + (t-1) lr_decay) (PyTorch)"},                                    \
      {"optimizer.initial_accumulator", TD_PT_NUM, "0", 0, 1e6, NULL, 0,                          \
       "adagrad: initial value of the squared-gradient sum"},                                     \
      {"optimizer.temperature", TD_PT_NUM, "1", 0, 1e6, NULL, 0,                                  \
       "sgld: temperature T, noise N(0, 2 lr T / n_data) per coordinate and step (Welling and "   \
       "Teh 2011; batch_size = n_train: full-batch Langevin)"},                                   \
      {"optimizer.n_data", TD_PT_INT, NULL, 1, 1e9, NULL, 0,                                      \
       "sgld: N of the noise variance 2 lr T / N (absent: the training-set size)"},               \
      {"optimizer.weight_decay", TD_PT_NUM, NULL, 0, 1e3, NULL, 0,                                \
       "the optimizer's decay: adamw decoupled p -= lr*wd*p (PyTorch); all others coupled L2, "   \
       "g += wd*p. Absent: PyTorch's default, 0.01 for adamw and 0 otherwise, written into the "  \
       "stored params (the kind's fill hook: td_optim_fill_params)"},                             \
      {"optimizer.schedule.name", TD_PT_STR, "\"constant\"", 0, 0, "constant|step|cosine", 0,     \
       "learning-rate schedule after the warm-up: constant; step (lr gamma^floor(s/step_size)); " \
       "cosine (to min_lr at the last step)"},                                                    \
      {"optimizer.schedule.warmup_steps", TD_PT_INT, "0", 0, 1e9, NULL, 0,                        \
       "linear warm-up: lr t/warmup_steps for t <= warmup_steps, then the schedule"},             \
      {"optimizer.schedule.step_size", TD_PT_INT, NULL, 1, 1e9, NULL, 0,                          \
       "step: updates between decays (required by step)"},                                        \
      {"optimizer.schedule.gamma", TD_PT_NUM, "0.1", 1e-12, 1e3, NULL, 0,                         \
       "step: the decay factor"},                                                                 \
      {"optimizer.schedule.min_lr", TD_PT_NUM, "0", 0, 1e3, NULL, 0,                              \
       "cosine: the final learning rate (<= lr)"}

/* Minibatches and the length of the run (batch_size, epochs, steps, eval_every). */
#define TD_TRAINER_LENGTH_PARAMS                                                                  \
  {"batch_size", TD_PT_INT, "128", 1, 65536, NULL, 0, "minibatch size (clamped to n_train)"},     \
      {"epochs", TD_PT_INT, NULL, 1, 1e5, NULL, 0,                                                \
       "passes over the training set, reshuffled each epoch (give epochs or steps; neither: 1)"}, \
      {"steps", TD_PT_INT, NULL, 1, 1e9, NULL, 0, "training steps (instead of epochs)"},          \
      {"eval_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,                                            \
       "steps between evaluations (absent: about 10 evaluations; always at step 0 and the end)"}

/* Checkpoints and starting points (checkpoint_every, init_from.*). A checkpoint at step S is
 * the artifact checkpoint_step<S>.safetensors (core/nn/checkpoint.h): the parameters after S
 * updates, the BatchNorm buffers, the first-order optimizer's state (optimizer.<state>.*;
 * second-order optimizers: parameters only) and, in its metadata, what a fork needs to continue
 * exactly (td_trainer_run). */
#define TD_TRAINER_CHECKPOINT_PARAMS                                                                {"checkpoint_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,                                             "store checkpoint_step<S>.safetensors (parameters and optimizer state after S updates) at "       "every multiple S of this and at the last step (absent: none)"},                                     {"init_from.job", TD_PT_INT, NULL, 1, 9007199254740991.0, NULL, 0,                                 "start from the parameters of this job's checkpoint at init_from.step (optimizer state "          "and step numbering start afresh)"},                                                             {"init_from.step", TD_PT_INT, NULL, 0, 1e12, NULL, 0, "the step of init_from.job's checkpoint"},       {"init_from.checkpoint", TD_PT_INT, NULL, 1, 9007199254740991.0, NULL, 0,                          "start from the parameters of an uploaded checkpoint (POST /api/v1/checkpoints)"}

/* Forks (fork.*): for kinds whose whole training state is the trainer's. */
#define TD_TRAINER_FORK_PARAMS                                                                      {"fork.job", TD_PT_INT, NULL, 1, 9007199254740991.0, NULL, 0,                                      "continue this job from its checkpoint at fork.step: parameters, optimizer state, step "          "numbering, data order and smoothed losses, with any hyperparameter changed (a fork that "        "changes nothing reproduces the parent's later metrics bitwise with one BLAS thread)"},               {"fork.step", TD_PT_INT, NULL, 0, 1e12, NULL, 0,                                                   "the step of fork.job's checkpoint; the fork runs steps fork.step + 1 .. steps"}

/* ------------------------------------------------------------------ configuration */

/* The problem: data, model and loss. */
typedef struct td_problem_cfg {
  int synthetic;
  size_t n_train, n_test; /* effective sizes */
  size_t synth_n;
  td_synth_cfg synth;
  td_mlp_cfg mlp;
  td_curv_loss loss;
  uint64_t seed;
  int center; /* subtract the training set's per-feature mean (train and test inputs) */
} td_problem_cfg;

/* Standard per-step metrics besides train_loss (always logged): bits of td_trainer_cfg.metrics. */
enum {
  TD_TRAINER_M_GRAD_NORM = 1,  /* grad_norm: 2-norm of the step's loss gradient */
  TD_TRAINER_M_LR = 2,         /* lr: the step's learning rate */
  TD_TRAINER_M_PARAM_NORM = 4, /* param_norm: 2-norm of the parameters after the update */
  TD_TRAINER_M_TRAIN_ACC = 8,  /* grad_curv, classification: train_acc of the step's batch */
};

typedef struct td_trainer_cfg {
  td_problem_cfg pb;
  /* optimizer (td_trainer_parse_optim) */
  const char *opt_name;
  td_optim_hp hp;
  double lr;
  td_sched sched;
  int so; /* a second-order optimizer (sopt.h) */
  td_sopt_hp so_hp;
  double l2; /* l2/2 ||theta||^2 added to the training loss (0: none) */
  /* loop */
  int full_batch;    /* FULL-BATCH mode (steps 0..T, see the header) */
  int grad_curv;     /* loss and gradient through the trainer's td_curv_ctx t->cc */
  int batch;         /* minibatch size (MINIBATCH mode) */
  long total_steps, eval_every, analyze_every; /* analyze_every 0: no analyze hook */
  long layer_every;  /* per-layer metrics (0: none) */
  int eval_train;    /* evaluations also log train_eval_loss / train_acc */
  unsigned metrics;  /* TD_TRAINER_M_* */
  const char *loss_key; /* metric name of the training loss (NULL: "train_loss") */
  int has_target;    /* target_loss (train) */
  double target_loss, target_ema;
  td_diverge_cfg div;
  /* checkpoints (td_trainer_parse_checkpoint) */
  long ckpt_every;                 /* 0: none */
  long init_job, init_step, init_ckpt; /* init_from: job > 0 with step, or ckpt > 0 */
  long fork_job, fork_step;        /* fork: job > 0 */
} td_trainer_cfg;

/* td_trainer_parse_problem: read TD_TRAINER_PROBLEM_PARAMS (and model.norm, model.norm_eps,
 * data.center when present) of validated params (borrowed). An absent data.n_train
 * (data.n_test) means fmnist_n_train (fmnist_n_test) examples of fashion-mnist (0: all 60000 /
 * 10000), all data.n synthetic ones (1000 synthetic test examples); center_default is the
 * value of an absent data.center. Errors: TD_EINVAL with the field. */
int td_trainer_parse_problem(const json_t *p, size_t fmnist_n_train, size_t fmnist_n_test,
                             int center_default, td_problem_cfg *pb /* OUT */, td_err *err);

/* td_trainer_parse_model: the model.* rows (hidden, activation (absent: act_default), init,
 * init_scale, norm, norm_eps, parameterization, sigma_w2, sigma_b2, base_width) into mlp (in_dim, out_dim are the caller's). Errors: TD_EINVAL
 * with the field. */
int td_trainer_parse_model(const json_t *p, const char *act_default, td_mlp_cfg *mlp /* OUT */,
                           td_err *err);

/* td_trainer_require_standard: for kinds that share the model rows but compute with the
 * layers themselves or run their own optimizer loop (their math assumes unit multipliers and
 * one learning rate): TD_EINVAL naming params.model.parameterization unless it is absent or
 * "standard". */
int td_trainer_require_standard(const json_t *p, const char *kind, td_err *err);

/* td_trainer_parse_length: batch_size (clamped to n_train), epochs or steps (neither: one
 * epoch; more than max_steps: TD_EINVAL on params.epochs), eval_every (absent: (T + div - 1)
 * / div for T >= div, else 1). Needs c->pb. */
int td_trainer_parse_length(const json_t *p, td_trainer_cfg *c, double max_steps, long div,
                            td_err *err);

/* td_trainer_parse_optim: optimizer.* (TD_TRAINER_OPTIM_PARAMS and, for second-order names,
 * TD_SOPT_PARAMS), the schedule over c->total_steps, l2, and the divergence rule. Needs
 * c->pb and c->total_steps. Errors: TD_EINVAL with the field. */
int td_trainer_parse_optim(const json_t *p, td_trainer_cfg *c, td_err *err);

/* td_trainer_parse_checkpoint: checkpoint_every, init_from.* and fork.* (absent rows: off).
 * Needs c->total_steps and the optimizer. Errors: TD_EINVAL naming the field (init_from with
 * both a job and a checkpoint or a job without a step; fork and init_from together; a fork of
 * a second-order optimizer, whose state is not stored; fork.step not below the last step). */
int td_trainer_parse_checkpoint(const json_t *p, td_trainer_cfg *c, td_err *err);

/* td_trainer_data_bytes: bytes of the loaded data sets (plus the decompressed IDX file). */
double td_trainer_data_bytes(const td_problem_cfg *pb);

/* td_trainer_optim_bytes: bytes of the optimizer (state vectors, or the second-order
 * optimizer and its td_curv_ctx for batch c->batch); also runs td_sopt_check (newton's cap). */
int td_trainer_optim_bytes(const td_trainer_cfg *c, double *bytes /* OUT */, td_err *err);

/* ------------------------------------------------------------------ the trainer */

typedef struct td_trainer td_trainer;

/* Hooks: each is optional (NULL); ctx is td_trainer_hooks.ctx. Fallible ones return 0 or a
 * negative TD_* code (TD_EDIVERGED: the run diverged at t->step, with err->msg). */
typedef struct td_trainer_hooks {
  void *ctx;
  /* Replaces the default loading of t->train / t->test (td_trainer_load). */
  int (*load)(td_trainer *t, void *ctx, td_err *err);
  /* After the data, the model (initialized), the optimizer and the buffers exist. */
  int (*setup)(td_trainer *t, void *ctx, td_err *err);
  /* Replaces the loss and gradient: set t->loss and t->grad (n_params) at the current
   * parameters (for the batch t->b in MINIBATCH mode). */
  int (*loss)(td_trainer *t, void *ctx, td_err *err);
  /* After the loss and gradient of step t->step, before the divergence rule and the update. */
  int (*after_loss)(td_trainer *t, void *ctx, td_err *err);
  /* Replaces the optimizer step (t->lr is the step's learning rate). */
  int (*update)(td_trainer *t, void *ctx, td_err *err);
  /* After the update and the standard metrics of step t->step. */
  int (*after_step)(td_trainer *t, void *ctx, td_err *err);
  /* Replaces the default evaluation (td_trainer_eval) at step t->step. */
  int (*eval)(td_trainer *t, void *ctx, td_err *err);
  /* At step 0 (MINIBATCH: before the loop), every cfg.analyze_every steps and at the last. */
  int (*analyze)(td_trainer *t, void *ctx, td_err *err);
  /* At the end (also after a divergence; not after an error or a cancellation): add the
   * kind's keys to summary (which already holds n_params, and diverged_step if diverged). */
  int (*finish)(td_trainer *t, void *ctx, json_t *summary, td_err *err);
  /* Frees the kind's state; always called once setup was attempted. */
  void (*teardown)(td_trainer *t, void *ctx);
} td_trainer_hooks;

struct td_trainer {
  const td_trainer_cfg *cfg;
  td_sink *sink;
  td_dataset train, test;
  td_mlp *m;
  td_mlp_ws ws, ws_eval;
  td_optim *opt;
  td_sopt *so;
  td_curv_ctx cc;    /* grad_curv: the loss context; second-order optimizers: their context */
  size_t *perm, pos; /* epoch-wise permutation (stream TD_RNG_SHUFFLE) and position */
  long n_shuffles;   /* epochs begun (permutations drawn) */
  long first_step;   /* the label of the first step this run takes (a fork: fork.step + 1) */
  td_rng shuf;
  double *Xb, *Yb, *dz, *prev;
  int *yb;
  td_dataset bview;  /* a dataset view of the batch buffers (n = the batch capacity) */
  /* the step in progress (read by hooks) */
  long step;         /* its label */
  int b;             /* its batch size */
  double loss;       /* its training loss (with the l2 penalty) */
  const double *grad;/* its gradient (n_params) */
  double gnorm, lr;
  double ev[4];      /* last evaluation: test_loss, test_acc, train_eval_loss, train_acc */
  long diverged_step;/* -1: none */
  double train_time; /* seconds in batch gather, loss, gradient, update, norms */
  double ema, ema_w; /* target_loss: EMA of train_loss */
  long steps_to_target;
  td_diverge div;
  int status;        /* at finish: 0, TD_EDIVERGED or TD_ECANCELLED */
};

/* td_trainer_run: the whole job: load the problem (or the load hook), center it if asked,
 * build the model (td_mlp_init of cfg->pb.seed by cfg->pb.mlp.init), the optimizer and the
 * buffers, load init_from / fork (td_sink_checkpoint), run the loop of the header with the
 * hooks, and build *summary (OUT, new reference; also on divergence and cancellation; NULL on
 * other errors). Returns 0, TD_EDIVERGED, TD_ECANCELLED, or the errors of loading, allocation,
 * the optimizer, the checkpoint (TD_EINVAL / TD_ENOTFOUND with field params.init_from,
 * params.fork or the tensor's name), the sink and the hooks. Borrows cfg, hooks and sink. */
int td_trainer_run(const td_trainer_cfg *cfg, const td_trainer_hooks *hooks, td_sink *sink,
                   json_t **summary /* OUT */, td_err *err);

/* td_trainer_load: load train (first n_train) and test (first n_test) of pb. */
int td_trainer_load(const td_problem_cfg *pb, td_dataset *train /* OUT */,
                    td_dataset *test /* OUT */, td_err *err);

/* td_trainer_center: subtract the per-feature mean of train from every row of train and test
 * (the preprocessing of Cohen et al. 2021's experiments). */
void td_trainer_center(td_dataset *train, td_dataset *test);

/* td_trainer_evaluate: mean loss and accuracy (NaN for regression sets) of params on the
 * first n examples of ds, in chunks of ws->cap; outputs (n x K) copied to out if not NULL. */
void td_trainer_evaluate(const td_mlp *m, td_mlp_ws *ws, const double *params,
                         const td_dataset *ds, size_t n, td_curv_loss loss, double *loss_out,
                         double *acc_out, double *out);

/* td_trainer_eval: the default evaluation at t->step: test_loss, test_acc and, with
 * cfg.eval_train, train_eval_loss, train_acc over the first min(n_train, 10000) training
 * examples (t->ev). Models in eval mode (BatchNorm: running statistics). */
int td_trainer_eval(td_trainer *t);

/* td_trainer_loss: the loss of outputs z (B x K) against rows [s, s + B) of ds (xent or mse,
 * one-hot targets for labels), with the mean gradient dz (B x K, may be NULL). */
void td_trainer_loss(td_curv_loss loss, const td_dataset *ds, size_t s, const double *z, int B,
                     double *l /* OUT */, double *dz /* OUT */);

/* td_trainer_set_num: put v in a JSON object; NaN/Inf become "NaN", "Infinity", "-Infinity". */
void td_trainer_set_num(json_t *o, const char *key, double v);

/* td_trainer_now: a monotonic clock in seconds. */
double td_trainer_now(void);

#endif
