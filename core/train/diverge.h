/* diverge.h: the divergence rule of every kind that trains a network on a loss: a loss that
 * becomes non-finite, blows up, or spikes and never recovers ends the run as `diverged`.
 *
 * The trainer feeds it the training loss of every step (td_diverge_observe) and asks for the
 * verdict at the end (td_diverge_finish). The rule and its defaults are documented in the
 * schema rows TD_DIVERGE_PARAMS (shared by every training kind). */
#ifndef TD_DIVERGE_H
#define TD_DIVERGE_H

#include <jansson.h>

#include "base/err.h"
#include "base/schema.h"

/* Schema rows of the rule ("divergence.*"); defaults are those of td_diverge_parse. */
#define TD_DIVERGE_PARAMS                                                                         \
  {"divergence.enabled", TD_PT_BOOL, "true", 0, 0, NULL, 0,                                       \
   "apply the divergence rule below (a non-finite loss always ends the run as diverged)"},       \
      {"divergence.max_ratio", TD_PT_NUM, "1e4", 1, 1e300, NULL, 0,                               \
       "blow-up: diverged at the first step whose training loss exceeds max_ratio times the "    \
       "reference loss L0 (the mean loss of the first steps)"},                                   \
      {"divergence.spike_ratio", TD_PT_NUM, "10", 1, 1e300, NULL, 0,                              \
       "spike: a step whose loss exceeds spike_ratio times L0 (or times the lowest smoothed "    \
       "loss so far, whichever is larger)"},                                                      \
      {"divergence.recover_ratio", TD_PT_NUM, "0.5", 0, 1, NULL, 0,                               \
       "no recovery: a run that spiked is diverged unless its smoothed loss ends below "          \
       "recover_ratio times L0 (catapult and edge-of-stability spikes recover below it)"}

typedef struct td_diverge_cfg {
  int enabled;
  double max_ratio, spike_ratio, recover_ratio;
} td_diverge_cfg;

typedef struct td_diverge {
  td_diverge_cfg cfg;
  long n;                  /* losses observed */
  double l0_sum, l0;       /* reference loss (NaN until set) */
  double ema, ema_w, best; /* bias-corrected EMA of the loss, its lowest value */
  long spike_step;         /* first spike (0: none) */
  double spike_loss, spike_ref;
} td_diverge;

/* td_diverge_parse: read TD_DIVERGE_PARAMS from validated params (borrowed); absent rows take
 * the defaults above. Errors: none today (returns 0); kept fallible for future checks. */
int td_diverge_parse(const json_t *params, td_diverge_cfg *cfg /* OUT */, td_err *err);

/* td_diverge_init: start a run. */
void td_diverge_init(td_diverge *d, const td_diverge_cfg *cfg);

/* td_diverge_observe: the training loss of step `step`. Returns 0, or TD_EDIVERGED with
 * err->msg naming the step, the rule and the values (non-finite loss; blow-up). */
int td_diverge_observe(td_diverge *d, long step, double loss, td_err *err);

/* td_diverge_finish: the verdict at the end of the run (last step `step`): 0, or
 * TD_EDIVERGED when the run spiked and its smoothed loss did not recover (err->msg names the
 * spike's step and values, and the final smoothed loss). */
int td_diverge_finish(const td_diverge *d, long step, td_err *err);

#endif
