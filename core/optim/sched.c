/* sched.c: learning-rate schedules (constant, step, cosine) with an optional linear warm-up. */
#include "optim/sched.h"

#include <math.h>
#include <string.h>

int td_sched_parse(const char *name, td_sched_kind *out) {
  if (!name) return TD_EINVAL;
  if (strcmp(name, "constant") == 0) *out = TD_SCHED_CONSTANT;
  else if (strcmp(name, "step") == 0) *out = TD_SCHED_STEP;
  else if (strcmp(name, "cosine") == 0) *out = TD_SCHED_COSINE;
  else return TD_EINVAL;
  return 0;
}

const char *td_sched_names(void) { return "constant|step|cosine"; }

int td_sched_init(td_sched *s, td_sched_kind kind, double base_lr, long warmup_steps,
                  long step_size, double gamma, double min_lr, long total_steps, td_err *err) {
  memset(s, 0, sizeof *s);
  if (kind != TD_SCHED_CONSTANT && kind != TD_SCHED_STEP && kind != TD_SCHED_COSINE)
    return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.name", "unknown schedule (%s)",
                      td_sched_names());
  if (!(base_lr > 0) || !isfinite(base_lr))
    return td_err_set(err, TD_EINVAL, "params.optimizer.lr", "the learning rate must be > 0");
  if (warmup_steps < 0)
    return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.warmup_steps",
                      "warmup_steps must be >= 0");
  if (kind == TD_SCHED_STEP) {
    if (step_size < 1)
      return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.step_size",
                        "the step schedule needs step_size >= 1");
    if (!(gamma > 0) || !isfinite(gamma))
      return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.gamma", "gamma must be > 0");
  }
  if (kind == TD_SCHED_COSINE) {
    if (!(min_lr >= 0 && min_lr <= base_lr))
      return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.min_lr",
                        "min_lr must be in [0, lr] (%g)", base_lr);
    if (total_steps <= warmup_steps)
      return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.warmup_steps",
                        "the cosine schedule needs steps after the warm-up (%ld of %ld)",
                        warmup_steps, total_steps);
  }
  s->kind = kind;
  s->base_lr = base_lr;
  s->warmup_steps = warmup_steps;
  s->step_size = step_size;
  s->gamma = gamma;
  s->min_lr = min_lr;
  s->total_steps = total_steps;
  return 0;
}

double td_sched_lr(const td_sched *s, long t) {
  if (t < 1) t = 1;
  const long W = s->warmup_steps;
  if (t <= W) return s->base_lr * (double)t / (double)W;
  const long k = t - W - 1; /* steps since the warm-up, from 0 */
  switch (s->kind) {
  case TD_SCHED_CONSTANT: return s->base_lr;
  case TD_SCHED_STEP: return s->base_lr * pow(s->gamma, (double)(k / s->step_size));
  case TD_SCHED_COSINE: {
    const long S = s->total_steps - W;
    if (k >= S) return s->min_lr;
    const double pi = 3.14159265358979323846;
    return s->min_lr +
           (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(pi * (double)k / (double)S));
  }
  }
  return s->base_lr;
}
