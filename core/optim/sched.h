/* sched.h: learning-rate schedules (constant, step, cosine) with an optional linear warm-up. */
#ifndef TD_SCHED_H
#define TD_SCHED_H

#include "base/err.h"

/* Conventions. Steps are numbered t = 1..T as in the train kind: td_sched_lr(s, t) is the
 * learning rate that update t uses. With W = warmup_steps (0: none) and base = base_lr:
 *
 *   warm-up, t <= W:   lr_t = base * t / W          (linear, reaches base at t = W; the
 *                                                    first update already moves, unlike
 *                                                    schedules that start at lr 0)
 *   after it, with s = t - W - 1 (0, 1, ... the steps since the warm-up) and S = T - W:
 *     constant:        lr_t = base
 *     step:            lr_t = base * gamma^floor(s / step_size)     (torch StepLR)
 *     cosine:          lr_t = min_lr + (base - min_lr) (1 + cos(pi s / S)) / 2, and min_lr
 *                      once s >= S (torch CosineAnnealingLR with T_max = S, stepped every
 *                      update; Loshchilov and Hutter 2017, "SGDR", eq. 5 without restarts)
 *
 * The warm-up composes with each of them: the main schedule starts (s = 0) right after it,
 * as torch.optim.lr_scheduler.SequentialLR([LinearLR(1/W, 1, W), main], milestones=[W])
 * does (Goyal et al. 2017, "Accurate, large minibatch SGD", sec. 2.2: gradual warm-up). The
 * schedule multiplies the step of every optimizer the same way (optim.h: lr is an argument
 * of td_optim_step), including adamw's decoupled decay (PyTorch's convention). */

typedef enum td_sched_kind {
  TD_SCHED_CONSTANT = 0,
  TD_SCHED_STEP = 1,
  TD_SCHED_COSINE = 2
} td_sched_kind;

typedef struct td_sched {
  td_sched_kind kind;
  double base_lr;    /* > 0 */
  long warmup_steps; /* >= 0 */
  long step_size;    /* step: >= 1 */
  double gamma;      /* step: the factor, > 0 */
  double min_lr;     /* cosine: the final learning rate, 0 <= min_lr <= base_lr */
  long total_steps;  /* cosine: T, the total number of updates, > warmup_steps */
} td_sched;

/* td_sched_parse: "constant" | "step" | "cosine" to the kind. Errors: TD_EINVAL. */
int td_sched_parse(const char *name, td_sched_kind *out /* OUT */);

/* td_sched_names: "constant|step|cosine" (for schemas and docs). */
const char *td_sched_names(void);

/* td_sched_init: fill *s (caller-owned) and validate it. Fields a kind does not use are
 * ignored (step_size, gamma for constant/cosine; min_lr, total_steps for constant/step).
 * Errors: TD_EINVAL with err->field "params.optimizer.schedule.<field>" (base_lr is
 * "params.optimizer.lr") for an out-of-range value, e.g. a cosine schedule whose warm-up
 * covers every step. */
int td_sched_init(td_sched *s /* OUT */, td_sched_kind kind, double base_lr, long warmup_steps,
                  long step_size, double gamma, double min_lr, long total_steps, td_err *err);

/* td_sched_lr: the learning rate of update t (t >= 1; t < 1 is treated as 1), by the
 * formulas above. Pure: no state, so it can be evaluated at any step in any order. */
double td_sched_lr(const td_sched *s, long t);

#endif
