/* diverge.c: the divergence rule (diverge.h). */
#include "train/diverge.h"

#include <math.h>

#define L0_STEPS 5      /* the reference loss L0 is the mean of the first L0_STEPS losses */
#define EMA_DECAY 0.9   /* smoothing of the loss for the spike reference and the recovery test */

int td_diverge_parse(const json_t *params, td_diverge_cfg *cfg, td_err *err) {
  (void)err;
  cfg->enabled = td_param_bool(params, "divergence.enabled", 1);
  cfg->max_ratio = td_param_num(params, "divergence.max_ratio", 1e4);
  cfg->spike_ratio = td_param_num(params, "divergence.spike_ratio", 10);
  cfg->recover_ratio = td_param_num(params, "divergence.recover_ratio", 0.5);
  return 0;
}

void td_diverge_init(td_diverge *d, const td_diverge_cfg *cfg) {
  *d = (td_diverge){.cfg = *cfg, .l0 = NAN, .best = INFINITY};
}

int td_diverge_observe(td_diverge *d, long step, double loss, td_err *err) {
  if (!isfinite(loss))
    return td_err_set(err, TD_EDIVERGED, NULL,
                      "diverged at step %ld: the training loss is %g (rule: non-finite)", step,
                      loss);
  d->n++;
  if (d->n <= L0_STEPS) {
    d->l0_sum += loss;
    d->l0 = d->l0_sum / (double)d->n;
  }
  d->ema = EMA_DECAY * d->ema + (1 - EMA_DECAY) * loss;
  d->ema_w = EMA_DECAY * d->ema_w + (1 - EMA_DECAY);
  const double sm = d->ema / d->ema_w;
  if (!d->cfg.enabled) return 0;
  if (loss > d->cfg.max_ratio * d->l0)
    return td_err_set(err, TD_EDIVERGED, NULL,
                      "diverged at step %ld: the training loss %g exceeds divergence.max_ratio "
                      "(%g) times the initial loss %g (rule: blow-up)",
                      step, loss, d->cfg.max_ratio, d->l0);
  const double ref = d->best > d->l0 ? d->best : d->l0;
  if (!d->spike_step && d->n > L0_STEPS && loss > d->cfg.spike_ratio * ref) {
    d->spike_step = step;
    d->spike_loss = loss;
    d->spike_ref = ref;
  }
  if (sm < d->best) d->best = sm;
  return 0;
}

int td_diverge_finish(const td_diverge *d, long step, td_err *err) {
  if (!d->cfg.enabled || !d->spike_step || d->ema_w <= 0) return 0;
  const double sm = d->ema / d->ema_w;
  if (sm < d->cfg.recover_ratio * d->l0) return 0;
  return td_err_set(err, TD_EDIVERGED, NULL,
                    "diverged: the training loss spiked to %g at step %ld (more than "
                    "divergence.spike_ratio %g times %g) and did not recover: its smoothed value "
                    "at step %ld is %g, not below divergence.recover_ratio (%g) times the "
                    "initial loss %g (rule: spike without recovery)",
                    d->spike_loss, d->spike_step, d->cfg.spike_ratio, d->spike_ref, step, sm,
                    d->cfg.recover_ratio, d->l0);
}
