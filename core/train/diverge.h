/* diverge.h: the divergence rule of every kind that trains a network on a loss: a loss that
 * becomes non-finite, blows up, or spikes and never recovers ends the run as `diverged`.
 *
 * The trainer feeds it the training loss of every step (td_diverge_observe) and asks for the
 * verdict at the end (td_diverge_finish). The rule and its defaults are documented in the
 * schema rows TD_DIVERGE_PARAMS (shared by every training kind).
 *
 * THE RULE. L0 is the first loss observed (the loss at the initial parameters, before any
 * update); s_t is the bias-corrected exponential moving average of the losses, decay 0.9
 * (s_t = m_t / (1 - 0.9^t), m_t = 0.9 m_{t-1} + 0.1 loss_t: about the last 10 steps), which
 * keeps one noisy minibatch from tripping a ratio. At step t the run is diverged when
 *   1. non-finite: loss_t is NaN or +-inf (always applied, even with the rule disabled);
 *   2. blow-up:    s_t > max_ratio * L0 (default 1e4);
 * and at the end (last step T) when
 *   3. spike without recovery: some s_t > spike_ratio * L0 (default 10; the first such t is
 *      "the spike") and s_T >= recover_ratio * L0 (default 0.5).
 * A run that never spikes is never diverged by rule 3 (a run that does not learn is a result,
 * not a divergence). The ratio rules 2 and 3 are skipped when L0 <= 0.
 *
 * WHY. A loss that explodes by orders of magnitude and stays there is a divergence (rule 2).
 * A loss that spikes and comes back to where it started has lost what it learned and sits at
 * chance (the issue-10 run SGD lr 3, momentum 0.9: 2.5 -> 117 -> 2.4). But large spikes that
 * recover are normal dynamics: in the catapult phase (Lewkowycz, Bahri, Dyer, Sohl-Dickstein,
 * Gur-Ari 2020, "The large learning rate phase of deep learning: the catapult mechanism",
 * sec. 2-3) the loss grows for some steps while the curvature falls, then converges to a
 * flatter minimum with a lower loss; at the edge of stability (Cohen, Kaur, Li, Kolter,
 * Talwalkar 2021, sec. 3) the loss decreases non-monotonically with spikes. Both end well
 * below L0, so rule 3 asks for recovery below recover_ratio * L0 rather than forbidding
 * spikes. L0 is the loss at the first step, not a mean of the first steps, because runs that
 * diverge often do so within the first 2-5 updates (issue 10: 1.6 -> 1.9e4 at step 2), which
 * would inflate such a mean. Caveat: with minibatches of a few examples the first loss is
 * noisy (a single squared error can be far below its mean); raise max_ratio or lower
 * recover_ratio there, or disable the rule. */
#ifndef TD_DIVERGE_H
#define TD_DIVERGE_H

#include <jansson.h>

#include "base/err.h"
#include "base/schema.h"

/* Schema rows of the rule ("divergence.*"); defaults are those of td_diverge_parse. */
#define TD_DIVERGE_PARAMS                                                                         \
  {"divergence.enabled", TD_PT_BOOL, "true", 0, 0, NULL, 0,                                       \
   "apply the divergence rule (core/train/diverge.h): L0 = the first training loss (initial "     \
   "parameters), s_t = bias-corrected EMA (decay 0.9) of the training loss; diverged on "         \
   "blow-up (s_t > max_ratio L0) or a spike (s_t > spike_ratio L0) not followed by recovery "     \
   "(final s_T >= recover_ratio L0). A non-finite loss always ends the run as diverged. "         \
   "Spikes that recover (catapult: Lewkowycz et al. 2020; edge of stability: Cohen et al. "       \
   "2021) stay succeeded"},                                                                       \
      {"divergence.max_ratio", TD_PT_NUM, "1e4", 1, 1e300, NULL, 0,                               \
       "blow-up: diverged at the first step whose smoothed training loss exceeds max_ratio "      \
       "times L0, the loss of the first step"},                                                   \
      {"divergence.spike_ratio", TD_PT_NUM, "10", 1, 1e300, NULL, 0,                              \
       "spike: the smoothed training loss exceeds spike_ratio times L0 at some step"},            \
      {"divergence.recover_ratio", TD_PT_NUM, "0.5", 0, 1, NULL, 0,                               \
       "no recovery: a run that spiked is diverged at its end unless its final smoothed loss "    \
       "is below recover_ratio times L0 (catapult and edge-of-stability runs end below it)"}

typedef struct td_diverge_cfg {
  int enabled;
  double max_ratio, spike_ratio, recover_ratio;
} td_diverge_cfg;

typedef struct td_diverge {
  td_diverge_cfg cfg;
  long n;                  /* losses observed */
  double l0;               /* reference loss L0: the first loss (NaN until observed) */
  double ema, ema_w;       /* EMA of the loss and of 1 (bias correction): s = ema / ema_w */
  double best;             /* lowest smoothed loss so far */
  long spike_step;         /* first step with s > spike_ratio L0 (0: none) */
  double spike_loss, spike_ref; /* s at the spike, and L0 */
  double peak;             /* highest smoothed loss so far */
} td_diverge;

/* td_diverge_parse: read TD_DIVERGE_PARAMS from validated params (borrowed); absent rows take
 * the defaults above. Errors: none today (returns 0); kept fallible for future checks. */
int td_diverge_parse(const json_t *params, td_diverge_cfg *cfg /* OUT */, td_err *err);

/* td_diverge_init: start a run. */
void td_diverge_init(td_diverge *d, const td_diverge_cfg *cfg);

/* td_diverge_observe: the training loss of step `step` (call it for every step, in order, the
 * first call with the loss at the initial parameters). Returns 0, or TD_EDIVERGED with
 * err->msg naming the step, the rule and the values (rules 1 and 2 above). */
int td_diverge_observe(td_diverge *d, long step, double loss, td_err *err);

/* td_diverge_finish: the verdict at the end of the run (last step `step`): 0, or
 * TD_EDIVERGED when the run spiked and its smoothed loss did not recover (rule 3; err->msg
 * names the spike's step and values, and the final smoothed loss). */
int td_diverge_finish(const td_diverge *d, long step, td_err *err);

#endif
