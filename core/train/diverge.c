/* diverge.c: the divergence rule (diverge.h: the rule, its defaults and its sources). */
#include "train/diverge.h"

#include <math.h>

#define EMA_DECAY 0.9 /* smoothing of the loss: about the last 10 steps */

int td_diverge_parse(const json_t *params, td_diverge_cfg *cfg, td_err *err) {
  (void)err;
  cfg->enabled = td_param_bool(params, "divergence.enabled", 1);
  cfg->max_ratio = td_param_num(params, "divergence.max_ratio", 1e4);
  cfg->spike_ratio = td_param_num(params, "divergence.spike_ratio", 10);
  cfg->recover_ratio = td_param_num(params, "divergence.recover_ratio", 0.5);
  return 0;
}

void td_diverge_init(td_diverge *d, const td_diverge_cfg *cfg) {
  *d = (td_diverge){.cfg = *cfg, .l0 = NAN, .best = INFINITY, .peak = -INFINITY};
}

int td_diverge_observe(td_diverge *d, long step, double loss, td_err *err) {
  if (!isfinite(loss))
    return td_err_set(err, TD_EDIVERGED, NULL,
                      "diverged at step %ld (rule: non-finite): the training loss is %g", step,
                      loss);
  if (d->n++ == 0) d->l0 = loss;
  d->ema = EMA_DECAY * d->ema + (1 - EMA_DECAY) * loss;
  d->ema_w = EMA_DECAY * d->ema_w + (1 - EMA_DECAY);
  const double s = d->ema / d->ema_w;
  if (s < d->best) d->best = s;
  if (s > d->peak) d->peak = s;
  if (!d->cfg.enabled || !(d->l0 > 0)) return 0;
  if (s > d->cfg.max_ratio * d->l0)
    return td_err_set(err, TD_EDIVERGED, NULL,
                      "diverged at step %ld (rule: blow-up): the smoothed training loss %g "
                      "(this step: %g) exceeds divergence.max_ratio %g x the initial loss %g",
                      step, s, loss, d->cfg.max_ratio, d->l0);
  if (!d->spike_step && s > d->cfg.spike_ratio * d->l0) {
    d->spike_step = step;
    d->spike_loss = s;
    d->spike_ref = d->l0;
  }
  return 0;
}

int td_diverge_finish(const td_diverge *d, long step, td_err *err) {
  if (!d->cfg.enabled || !d->spike_step || d->ema_w <= 0 || !(d->l0 > 0)) return 0;
  const double s = d->ema / d->ema_w;
  if (s < d->cfg.recover_ratio * d->l0) return 0;
  return td_err_set(err, TD_EDIVERGED, NULL,
                    "diverged (rule: spike without recovery): the smoothed training loss rose "
                    "to %g at step %ld (> divergence.spike_ratio %g x initial loss %g; peak %g) "
                    "and at the last step %ld is %g, not below divergence.recover_ratio %g x "
                    "the initial loss",
                    d->spike_loss, d->spike_step, d->cfg.spike_ratio, d->l0, d->peak, step, s,
                    d->cfg.recover_ratio);
}
