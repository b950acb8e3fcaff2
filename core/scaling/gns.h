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
 * Finite population (sampling without replacement). When the b examples of a batch are drawn
 * WITHOUT replacement from a training set of n examples (distinct examples, as the `train`
 * kind draws them), the per-example gradients g_1..g_n have mean G and population covariance
 * S = (1/n) sum_j (g_j - G)(g_j - G)^T, and the batch mean has
 *   E|G_b|^2 = |G|^2 + tr(S) c(b),  c(b) = (n - b) / (b (n - 1))
 * (the variance of a sample mean without replacement: Cochran 1977, "Sampling Techniques",
 * Thm 2.2, applied per coordinate and summed). The i.i.d. formulas A.2/A.3 (c(b) = 1/b) are then
 * biased: E S_est = tr(S) n/(n-1) and E |G|^2_est = |G|^2 - tr(S)/(n-1), so b_simple comes out
 * too high by a factor of about 1 + B_simple/n (11 % at B_simple = 100, n = 1000). With the
 * population size set (td_gns_set_population) the estimators below use c(b) instead of 1/b,
 * which makes them unbiased for |G|^2 and tr(S); B_simple = tr(S) / |G|^2 is then the noise
 * scale of sampling WITH replacement from the training set (the i.i.d. model on its empirical
 * distribution). Without it (n = infinity) they are McCandlish et al.'s A.2/A.3.
 *
 * Typical use in a training loop (every `every` steps):
 *   td_gns st; td_gns_init(&st, 0.95, NULL); td_gns_set_population(&st, n_train, NULL);
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
  double n_pop;   /* population size the batches are drawn from without replacement
                     (INFINITY: i.i.d. draws; td_gns_set_population) */
} td_gns;

/* td_gns_init: reset `st` with EMA decay `decay` in [0, 1) and an infinite population
 * (i.i.d. batches; see td_gns_set_population).
 * Errors: TD_EINVAL (field "noise_scale.decay") for a decay outside [0, 1) or non-finite;
 * then `st` is still reset, with decay 0. */
int td_gns_init(td_gns *st, double decay, td_err *err);

/* td_gns_set_population: the batches of later td_gns_update calls are drawn without
 * replacement from a population of n_pop examples (>= 2; INFINITY: i.i.d.); the estimators
 * then apply the finite-population correction c(b) = (n - b)/(b (n - 1)) (see above).
 * Errors: TD_EINVAL (field "noise_scale") for n_pop < 2 or NaN; the state is then unchanged. */
int td_gns_set_population(td_gns *st, double n_pop, td_err *err);

/* td_gns_two_batch: the unbiased two-batch estimates of McCandlish et al. 2018 (A.2, A.3):
 *   |G|^2_est = (b_big |G_big|^2 - b_small |G_small|^2) / (b_big - b_small)
 *   S_est     = (|G_small|^2 - |G_big|^2) / (1/b_small - 1/b_big)
 * `g2_small` and `g2_big` are the squared norms of the MEAN gradients over b_small and b_big
 * examples (b in examples, b_small < b_big). Either estimate may be negative on one draw.
 * Results in *g2_est and *s_est (OUT). Errors: TD_EINVAL for b_small <= 0, b_big <= b_small,
 * or a non-finite / negative squared norm; the outputs are then NaN. */
int td_gns_two_batch(double b_small, double g2_small, double b_big, double g2_big,
                     double *g2_est /* OUT */, double *s_est /* OUT */, td_err *err);

/* td_gns_two_batch_pop: the same for batches drawn without replacement from n_pop examples
 * (INFINITY gives td_gns_two_batch). With c_s = c(b_small), c_b = c(b_big) as above, the two
 * equations E|G_b|^2 = |G|^2 + tr(S) c(b) give the unbiased estimates
 *   S_est     = (|G_small|^2 - |G_big|^2) / (c_s - c_b)
 *   |G|^2_est = (c_s |G_big|^2 - c_b |G_small|^2) / (c_s - c_b).
 * Errors: those of td_gns_two_batch, and TD_EINVAL for n_pop < 2 or b_big > n_pop. */
int td_gns_two_batch_pop(double b_small, double g2_small, double b_big, double g2_big,
                         double n_pop, double *g2_est /* OUT */, double *s_est /* OUT */,
                         td_err *err);

/* td_gns_update: fold one pair of measurements into the moving averages:
 *   ema <- decay * ema + (1 - decay) * estimate   (separately for |G|^2 and S),
 * the estimates of td_gns_two_batch_pop with the state's population size.
 * Errors: those of td_gns_two_batch; the state is then unchanged. */
int td_gns_update(td_gns *st, double b_small, double g2_small, double b_big, double g2_big,
                  td_err *err);

/* td_gns_b_simple: S_ema / G2_ema, the simple noise scale B_simple = tr(Sigma) / |G|^2
 * (McCandlish et al. 2018, eq. 2.8), in examples. The bias corrections of the two EMAs cancel
 * in the ratio. The single estimates can be negative, and so can their averages early in
 * training (few measurements) or when the noise dominates the |G|^2 estimate: the ratio is
 * then meaningless, and this returns NaN: before the first update, or while G2_ema <= 0 or
 * S_ema <= 0 (average longer or use a larger b_big). Callers must not report NaN as data
 * (the `train` kind logs b_simple_undefined instead). A ratio of EMAs is also biased when the
 * EMAs are noisy (E[X/Y] != E X / E Y); the bias shrinks with the number of averaged
 * measurements, about (1 + decay)/(1 - decay). */
double td_gns_b_simple(const td_gns *st);

/* td_gns_g2 / td_gns_trace: the bias-corrected averages of |G|^2 and of tr(Sigma)
 * (divided by 1 - decay^n, as Adam does). NaN before the first update. */
double td_gns_g2(const td_gns *st);
double td_gns_trace(const td_gns *st);

/* td_gns_sqnorm: |g|^2 = sum_i g_i^2 of a vector g (n). Kernel: never fails. */
double td_gns_sqnorm(const double *g, size_t n);

#endif
