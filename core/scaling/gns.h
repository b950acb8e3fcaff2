/* gns.h: gradient noise scale b_simple = tr(Sigma) / |G|^2 from two batch sizes, with moving
 * averages (McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of Large-Batch
 * Training", Appendix A).
 *
 * Model: a per-example gradient has mean G and covariance Sigma. The gradient of a batch of
 * b examples then has E|G_b|^2 = |G|^2 + tr(Sigma) / b (eq. A.1). Two batch sizes give
 * unbiased estimates of |G|^2 and S = tr(Sigma) (eqs. A.2, A.3); both are noisy, so each is
 * smoothed by its own exponential moving average and b_simple is the ratio of the averages
 * (the ratio of averages, not the average of ratios, as the paper recommends).
 *
 * Typical use in a training loop (every `every` steps):
 *   td_gns st; td_gns_init(&st, 0.95, NULL);
 *   g2s = td_gns_sqnorm(grad_small, n); g2b = td_gns_sqnorm(grad_big, n);
 *   td_gns_update(&st, b_small, g2s, b_big, g2b, NULL);
 *   sink->metric("b_simple", step, td_gns_b_simple(&st));
 */
#ifndef TD_GNS_H
#define TD_GNS_H

#include <stddef.h>

#include "base/err.h"

/* Caller-owned state (td_gns_init; no deinit needed). */
typedef struct td_gns {
  double decay;   /* EMA decay in [0, 1); 0 means no averaging (the last estimate only) */
  double g2_ema;  /* EMA of the |G|^2 estimates (not bias-corrected) */
  double s_ema;   /* EMA of the tr(Sigma) estimates (not bias-corrected) */
  double weight;  /* EMA of 1: the bias correction, 1 - decay^n */
  long n;         /* number of updates so far */
} td_gns;

/* td_gns_init: reset `st` with EMA decay `decay` in [0, 1).
 * Errors: TD_EINVAL (field "noise_scale.decay") for a decay outside [0, 1) or non-finite;
 * then `st` is still reset, with decay 0. */
int td_gns_init(td_gns *st, double decay, td_err *err);

/* td_gns_two_batch: the unbiased two-batch estimates of McCandlish et al. 2018 (A.2, A.3):
 *   |G|^2_est = (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
 *   S_est     = (|G_small|^2 - |G_big|^2) / (1/b_small - 1/b_big)
 * `g2_small` and `g2_big` are the squared norms of the MEAN gradients over b_small and b_big
 * examples (b in examples, b_small < b_big). Either estimate may be negative on one draw.
 * Results in *g2_est and *s_est (OUT). Errors: TD_EINVAL for b_small <= 0, b_big <= b_small,
 * or a non-finite / negative squared norm; the outputs are then NaN. */
int td_gns_two_batch(double b_small, double g2_small, double b_big, double g2_big,
                     double *g2_est /* OUT */, double *s_est /* OUT */, td_err *err);

/* td_gns_update: fold one pair of measurements into the moving averages:
 *   ema <- decay * ema + (1 - decay) * estimate   (separately for |G|^2 and S).
 * Errors: those of td_gns_two_batch; the state is then unchanged. */
int td_gns_update(td_gns *st, double b_small, double g2_small, double b_big, double g2_big,
                  td_err *err);

/* td_gns_b_simple: S_ema / G2_ema, the simple noise scale B_simple = tr(Sigma) / |G|^2
 * (McCandlish et al. 2018, eq. 2.8), in examples. The bias corrections of the two EMAs cancel
 * in the ratio. NaN when undefined: before the first update, or while G2_ema <= 0 (noise
 * dominates the |G|^2 estimate; average longer or use a larger b_big). */
double td_gns_b_simple(const td_gns *st);

/* td_gns_g2 / td_gns_trace: the bias-corrected averages of |G|^2 and of tr(Sigma)
 * (divided by 1 - decay^n, as Adam does). NaN before the first update. */
double td_gns_g2(const td_gns *st);
double td_gns_trace(const td_gns *st);

/* td_gns_sqnorm: |g|^2 = sum_i g_i^2 of a vector g (n). Kernel: never fails. */
double td_gns_sqnorm(const double *g, size_t n);

#endif
