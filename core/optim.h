/* optim.h: optimizers behind one interface (SGD with momentum/Nesterov, Adam, AdamW). */
#ifndef TD_OPTIM_H
#define TD_OPTIM_H

#include <stddef.h>

#include "err.h"

/* Hyperparameters of every optimizer; each reads the fields it needs. Defaults are
 * PyTorch's (td_optim_hp_default). */
typedef struct td_optim_hp {
  double momentum;     /* sgd: mu >= 0 */
  int nesterov;        /* sgd: needs momentum > 0 and dampening == 0 (as PyTorch) */
  double dampening;    /* sgd: tau in [0, 1), PyTorch's dampening */
  double beta1, beta2; /* adam, adamw: in [0, 1) */
  double eps;          /* adam, adamw: > 0 */
  double weight_decay; /* >= 0; see the convention below */
} td_optim_hp;

/* Weight-decay convention (PyTorch's, and stated in every optimizer's doc):
 *  - sgd and adam: COUPLED L2: the gradient becomes g + wd * p before anything else (it is
 *    the gradient of the loss plus wd/2 ||p||^2, and for adam it is then rescaled);
 *  - adamw: DECOUPLED decay (Loshchilov and Hutter 2019, Algorithm 2 line 12, with their
 *    schedule multiplier eta_t folded into lr): p <- p - lr * wd * p, applied before the Adam
 *    update and not passed through the moments. This is torch.optim.AdamW: the decay
 *    scales with lr (the paper's version writes the decay unscaled by alpha).
 *
 * Update rules (t counts steps from 1; g is the gradient after coupled L2):
 *  sgd (torch.optim.SGD): without momentum p -= lr g. With momentum, buf = g at t = 1, else
 *      buf = mu buf + (1 - dampening) g; the step direction is buf, or g + mu buf with
 *      Nesterov (Sutskever et al. 2013, in PyTorch's form); p -= lr * direction.
 *  adam (Kingma and Ba 2015, Algorithm 1; torch.optim.Adam): m = b1 m + (1-b1) g,
 *      v = b2 v + (1-b2) g^2, p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps).
 *  adamw (Loshchilov and Hutter 2019; torch.optim.AdamW): p *= 1 - lr wd, then adam with
 *      no L2 term.
 *
 * Extending: optimizers are rows of a table in optim.c (name, number of state vectors,
 * check, step). Issue 4's methods (Adagrad, RMSprop, Newton, Hessian-free, K-FAC, natural
 * gradient) and learning-rate schedules plug in there; methods that need curvature will
 * receive it through an oracle struct of callbacks (HVP, GGN-vector, per-layer statistics)
 * set before stepping, so this interface does not change. */
td_optim_hp td_optim_hp_default(void);

typedef struct td_optim td_optim;

/* td_optim_create: optimizer `name` ("sgd", "adam", "adamw") for n_params parameters, with
 * zeroed state. Errors: TD_EINVAL with err->field "params.optimizer.<x>" for an unknown name
 * or an invalid hyperparameter (e.g. nesterov without momentum), TD_ENOMEM. *out is NULL on
 * error. The caller owns *out (td_optim_destroy). hp is copied. */
int td_optim_create(const char *name, const td_optim_hp *hp, size_t n_params,
                    td_optim **out /* OUT */, td_err *err);
void td_optim_destroy(td_optim *o);

/* td_optim_step: one update of params (n_params) in place from grad (n_params, unchanged)
 * with learning rate lr. Never allocates. */
void td_optim_step(td_optim *o, double *params, const double *grad, double lr);

/* td_optim_reset: zero the state and the step counter. */
void td_optim_reset(td_optim *o);

/* Accessors: the name, the number of steps taken, the n_params, and state vector i
 * (momentum buffer, or Adam's m then v) for checkpoints; NULL when i is out of range. */
const char *td_optim_name(const td_optim *o);
long td_optim_steps(const td_optim *o);
size_t td_optim_n_params(const td_optim *o);
double *td_optim_state(td_optim *o, int i);

/* td_optim_names: "sgd|adam|adamw" (for schemas and docs). */
const char *td_optim_names(void);

#endif
