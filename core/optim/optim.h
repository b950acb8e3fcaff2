/* optim.h: first-order optimizers behind one interface (SGD, heavy ball, Nesterov, Adagrad,
 * RMSprop, Adam, AdamW). */
#ifndef TD_OPTIM_H
#define TD_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#include <jansson.h>

/* Hyperparameters of every optimizer; each reads the fields it needs. Defaults are
 * PyTorch's (td_optim_hp_default), except that eps is one field: PyTorch's Adagrad default is
 * 1e-10, the others' 1e-8 (the train kind picks 1e-10 for adagrad when eps is absent). */
typedef struct td_optim_hp {
  double momentum;     /* sgd, heavy_ball, nesterov, rmsprop: mu >= 0 */
  int nesterov;        /* sgd: needs momentum > 0 and dampening == 0 (as PyTorch) */
  double dampening;    /* sgd: tau in [0, 1), PyTorch's dampening */
  double beta1, beta2; /* adam, adamw: in [0, 1) */
  double eps;          /* adagrad, rmsprop, adam, adamw: > 0 */
  double weight_decay; /* >= 0; see the convention below */
  double alpha;        /* rmsprop: smoothing constant of the squared-gradient average, [0, 1) */
  int centered;        /* rmsprop: divide by the estimated std instead of the RMS */
  double lr_decay;     /* adagrad: lr_t = lr / (1 + (t - 1) lr_decay), >= 0 */
  double initial_accumulator; /* adagrad: initial value of the squared-gradient sum, >= 0 */
  double temperature;  /* sgld: T >= 0 (1: the posterior; 0: plain SGD) */
  double n_data;       /* sgld: N >= 1, the training-set size (noise variance 2 lr T / N) */
  uint64_t noise_seed; /* sgld: seed of the injected noise */
} td_optim_hp;

/* td_optim_default_weight_decay: PyTorch's default weight_decay of optimizer `name`: 0.01 for
 * adamw (torch.optim.AdamW, weight_decay=1e-2), 0 for every other (torch.optim.SGD, Adam,
 * Adagrad, RMSprop: 0). td_optim_hp_default's weight_decay is 0, so a caller that builds
 * hyperparameters for adamw must take this value when the user gave none. */
double td_optim_default_weight_decay(const char *name);

/* td_optim_fill_params: the validation-time fill of per-optimizer defaults (a td_kind `fill`
 * hook, registry.h): when the validated params (modified in place) have no
 * optimizer.weight_decay, write td_optim_default_weight_decay(optimizer.name) there, so the
 * stored params show the value the job runs with. Errors: TD_ENOMEM; TD_EINVAL when params is
 * not an object. */
int td_optim_fill_params(json_t *params, td_err *err);

/* Weight-decay convention (PyTorch's, and stated in every optimizer's doc):
 *  - sgd, heavy_ball, nesterov, adagrad, rmsprop and adam: COUPLED L2: the gradient becomes
 *    g + wd * p before anything else (it is the gradient of the loss plus wd/2 ||p||^2; for
 *    the adaptive methods it is then rescaled by the preconditioner like the rest of g);
 *  - adamw: DECOUPLED decay (Loshchilov and Hutter 2019, "Decoupled weight decay
 *    regularization", ICLR, Algorithm 2 line 12): p <- p - lr * wd * p, applied before the
 *    Adam update and not passed through the moments. This is torch.optim.AdamW: the decay is
 *    multiplied by lr. The paper writes theta_t = theta_{t-1} - eta_t (alpha m^/(sqrt(v^)+eps)
 *    + lambda theta_{t-1}), with a schedule multiplier eta_t SEPARATE from the step size
 *    alpha, so its decay per step is eta_t lambda, not alpha eta_t lambda. The two agree with
 *    PyTorch's lr = alpha eta_t and wd = lambda / alpha; in PyTorch's form (ours) a learning-
 *    rate schedule therefore also scales the decay, as eta_t does in the paper.
 *  - A penalty l2/2 ||p||^2 added to the LOSS (the train kind's `l2`) is a separate option:
 *    for every optimizer here it enters as the coupled L2 above, whatever `wd` says.
 *
 * Update rules (t counts steps from 1; g is the gradient after coupled L2; lr is the value
 * passed to td_optim_step, so a schedule (sched.h) acts on every method the same way):
 *  sgd (torch.optim.SGD): without momentum p -= lr g. With momentum, buf = g at t = 1, else
 *      buf = mu buf + (1 - dampening) g; the step direction is buf, or g + mu buf with
 *      Nesterov (Sutskever et al. 2013, in PyTorch's form); p -= lr * direction.
 *  heavy_ball (Polyak 1964, "Some methods of speeding up the convergence of iteration
 *      methods", eq. 9): p_{t+1} = p_t - lr_t g_t + mu (p_t - p_{t-1}), kept as the
 *      displacement d = p_t - p_{t-1}: d = mu d - lr g; p += d (d = 0 before step 1). Relation
 *      to sgd with momentum (PyTorch's v = mu v + g, p -= lr v): d_t = -lr_t v_t when lr is
 *      constant, so the two are the same method (equal up to rounding); under a schedule
 *      PyTorch's form rescales the old momentum by lr_t / lr_{t-1}
 *      (d_t = mu (lr_t/lr_{t-1}) d_{t-1} - lr_t g_t) while Polyak's keeps it.
 *  nesterov: sgd with nesterov on (Sutskever, Martens, Dahl, Hinton 2013, "On the importance
 *      of initialization and momentum in deep learning", ICML, eq. 3-4, in PyTorch's form:
 *      the iterate is the look-ahead point, so the gradient is taken at the current p):
 *      buf = mu buf + g (buf = g at t = 1), p -= lr (g + mu buf). Needs momentum > 0.
 *  adagrad (Duchi, Hazan, Singer 2011, "Adaptive subgradient methods", JMLR 12, sec. 1,
 *      diagonal version; torch.optim.Adagrad): clr = lr / (1 + (t - 1) lr_decay),
 *      s += g^2 (s starts at initial_accumulator), p -= clr g / (sqrt(s) + eps).
 *  rmsprop (Tieleman and Hinton 2012, COURSERA "Neural networks for machine learning",
 *      lecture 6.5; centered: Graves 2013, "Generating sequences with recurrent neural
 *      networks", eq. 38-45; torch.optim.RMSprop): v = alpha v + (1 - alpha) g^2 (v starts at
 *      0, no bias correction), den = sqrt(v) + eps, or, centered, a = alpha a + (1 - alpha) g
 *      and den = sqrt(v - a^2) + eps; then without momentum p -= lr g / den, with it
 *      buf = mu buf + g / den, p -= lr buf.
 *  adam (Kingma and Ba 2015, Algorithm 1; torch.optim.Adam): m = b1 m + (1-b1) g,
 *      v = b2 v + (1-b2) g^2, p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps).
 *      Its first step is p1 = p0 - lr g / (|g| + eps) exactly (m^ = g, v^ = g^2).
 *  adamw (Loshchilov and Hutter 2019; torch.optim.AdamW): p *= 1 - lr wd, then adam with
 *      no L2 term.
 *  sgld (Welling and Teh 2011, "Bayesian learning via stochastic gradient Langevin dynamics",
 *      ICML, eq. 4, for the MEAN loss: the posterior is exp(-N L(p) / T)): p -= lr (g + wd p),
 *      then p += sqrt(2 lr T / N) xi, xi ~ N(0, I) from the counter-based stream
 *      (noise_seed, TD_OPTIM_SGLD_STREAM + t) of rng.h, t the number of steps taken before
 *      this one, so a run and its fork draw the same noise. wd is a Gaussian prior of
 *      precision N wd. With the full training set as the batch it is (unadjusted) Langevin
 *      dynamics; T = 0 is plain SGD.
 *
 * Extending: optimizers are rows of a table in optim.c (name, number of state vectors,
 * check, step). Methods that need curvature (Newton, Hessian-free, K-FAC, natural gradient)
 * receive it through an oracle struct of callbacks (HVP, GGN-vector, per-layer statistics)
 * set before stepping, so this interface does not change. */
#define TD_OPTIM_SGLD_STREAM 0x53474c4400000000ull /* "SGLD" */

td_optim_hp td_optim_hp_default(void);

typedef struct td_optim td_optim;

/* td_optim_create: optimizer `name` (one of td_optim_names()) for n_params parameters, with
 * initial state (zero; adagrad's sum at initial_accumulator). Errors: TD_EINVAL with err->field "params.optimizer.<x>" for an unknown name
 * or an invalid hyperparameter (e.g. nesterov without momentum), TD_ENOMEM. *out is NULL on
 * error. The caller owns *out (td_optim_destroy). hp is copied. */
int td_optim_create(const char *name, const td_optim_hp *hp, size_t n_params,
                    td_optim **out /* OUT */, td_err *err);
void td_optim_destroy(td_optim *o);

/* td_optim_check: the validation of td_optim_create (name and hyperparameters) without
 * allocating, for a kind's `check`. Errors: as td_optim_create (TD_EINVAL, field named). */
int td_optim_check(const char *name, const td_optim_hp *hp, td_err *err);

/* td_optim_step: one update of params (n_params) in place from grad (n_params, unchanged)
 * with learning rate lr. Never allocates. */
void td_optim_step(td_optim *o, double *params, const double *grad, double lr);

/* td_optim_set_lr_segments: per-parameter learning-rate multipliers, constant on segments:
 * segment s covers [ends[s-1], ends[s]) (ends[-1] = 0; the last end must be n_params) and
 * each later td_optim_step updates it as the same optimizer restricted to that slice (its
 * state slice, the shared step count) with learning rate lr * mults[s] (mults > 0). Coupled
 * weight decay follows the step; adamw's decoupled decay p *= 1 - lr wd uses the segment's lr
 * too (as torch does with one param group per tensor, the mup package's convention). n_seg = 0
 * removes them (then a step is exactly the plain one). Used for the per-layer scalings of
 * model.parameterization mup (model.h td_mlp_lr_segments). Errors: TD_EINVAL (more than
 * TD_OPTIM_MAX_SEGMENTS, ends not increasing or not ending at n_params, a multiplier not > 0,
 * sgld with segments: its noise is one stream over the whole vector; field
 * params.optimizer.name). */
#define TD_OPTIM_MAX_SEGMENTS 256
int td_optim_set_lr_segments(td_optim *o, int n_seg, const size_t *ends, const double *mults,
                             td_err *err);

/* td_optim_adam_like: non-zero for the optimizers that scale like Adam under mup (adam, adamw,
 * adagrad, rmsprop: Tensor Programs V, Table 3 caption); the others scale like SGD. */
int td_optim_adam_like(const char *name);

/* td_optim_reset: return the state to its initial value and the step counter to 0. */
void td_optim_reset(td_optim *o);

/* Accessors: the name, the number of steps taken, the n_params, and state vector i for
 * checkpoints; NULL when i is out of range or unused. State vectors: sgd/nesterov 0 = buf
 * (only with momentum); heavy_ball 0 = d = p_t - p_{t-1}; adagrad 0 = s; rmsprop 0 = v,
 * 1 = buf (momentum > 0), 2 = a (centered); adam/adamw 0 = m, 1 = v. */
const char *td_optim_name(const td_optim *o);
long td_optim_steps(const td_optim *o);
size_t td_optim_n_params(const td_optim *o);
double *td_optim_state(td_optim *o, int i);

/* td_optim_state_name: PyTorch's key for state vector i of o (the names of
 * torch.optim.<X>.state[p]), used for checkpoint tensors `optimizer.<name>.<param>`:
 *   sgd, nesterov: 0 momentum_buffer
 *   heavy_ball:    0 displacement (d = p_t - p_{t-1}; not a torch optimizer: for a constant
 *                  lr, torch.optim.SGD's momentum_buffer = -d / lr)
 *   adagrad:       0 sum
 *   rmsprop:       0 square_avg, 1 momentum_buffer, 2 grad_avg
 *   adam, adamw:   0 exp_avg, 1 exp_avg_sq
 * The name is returned even when the vector is unused for o's hyperparameters (then
 * td_optim_state(o, i) is NULL). NULL for i outside [0, number of slots). Static storage. */
const char *td_optim_state_name(const td_optim *o, int i);

/* td_optim_set_steps: set the step counter to t >= 0 (restoring a checkpoint: it is the
 * `t - 1` of the next update's bias correction, adagrad's lr decay and sgd's first-step
 * rule, i.e. torch's state["step"]). Negative t is ignored. */
void td_optim_set_steps(td_optim *o, long t);

/* td_optim_names: "sgd|heavy_ball|nesterov|adagrad|rmsprop|adam|adamw|sgld" (schemas, docs). */
const char *td_optim_names(void);

/* td_optim_state_count: how many n_params state vectors td_optim_create would allocate for
 * `name` with hp (NULL: defaults), for memory estimates; -1 for an unknown name. */
int td_optim_state_count(const char *name, const td_optim_hp *hp);

#endif
