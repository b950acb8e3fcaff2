/* horizon.h: short-horizon bias (Wu, Ren, Liao and Grosse 2018, "Understanding short-horizon
 * bias in stochastic meta-optimization", ICLR) on the noisy quadratic model (prefix
 * td_horizon_): the greedy (one-step-horizon) learning-rate schedule in closed form, and the
 * schedule that minimizes the loss at the full horizon T, tuned by exact hypergradients of the
 * expected loss (reverse mode through the moment recursion) and L-BFGS.
 *
 * Model (scaling/nqm.h; Wu et al. 2018 sec. 3, Zhang et al. 2019): L = 1/2 sum_i h_i theta_i^2,
 * SGD with minibatch gradient noise of variance c_i / B per coordinate and learning rate a_t at
 * step t. The second moment s_i = E[theta_i^2] follows
 *     s_i' = (1 - a_t h_i)^2 s_i + a_t^2 c_i / B,   E[L_t] = 1/2 sum_i h_i s_i,t
 * exactly (the mean part is included in s; Wu et al. eq. 6-7).
 * Greedy schedule: a_t = argmin_a E[L_{t+1}] given s_t (the horizon-1 meta-objective):
 *     a_t = sum_i h_i^2 s_i / sum_i (h_i^3 s_i + h_i c_i / B)        (Wu et al. 2018, eq. 9)
 * Full-horizon schedule: argmin over (a_0 .. a_{T-1}) of E[L_T], with a_t = exp(u_t) > 0. */
#ifndef TD_HORIZON_H
#define TD_HORIZON_H

#include <stddef.h>

#include "base/err.h"
#include "base/sink.h"

typedef struct td_horizon_cfg {
  size_t dim;        /* coordinates >= 1 */
  const double *h;   /* curvatures > 0 (dim) */
  const double *c;   /* gradient-noise variances >= 0 (dim) */
  const double *s0;  /* initial second moments E[theta_0^2] >= 0 (dim) */
  double batch;      /* B > 0 */
  int T;             /* horizon >= 1 */
} td_horizon_cfg;

/* td_horizon_loss: E[L_t] for t = 0..T under the schedule a (T), into loss (T + 1, may be
 * NULL); returns E[L_T]. When grad is not NULL, grad (T) = dE[L_T]/da_t by reverse mode
 * through the recursion (exact). Never allocates beyond a dim-sized scratch (malloc; NaN is
 * returned when it fails). */
double td_horizon_loss(const td_horizon_cfg *c, const double *a, double *loss /* OUT */,
                       double *grad /* OUT */);

/* td_horizon_greedy: the greedy schedule a (OUT, T) of the header, and its loss curve
 * (OUT, T + 1, may be NULL). Errors: TD_EINVAL, TD_ENOMEM. */
int td_horizon_greedy(const td_horizon_cfg *c, double *a /* OUT */, double *loss /* OUT */,
                      td_err *err);

/* td_horizon_full: minimize log E[L_T] over log a_t by L-BFGS (liblbfgs; at most max_iters
 * iterations) from the start a (in: e.g. the greedy schedule; OUT: the tuned schedule).
 * *iters (OUT, may be NULL) gets the evaluations used. sink (may be NULL) is polled for
 * cancellation after every iteration. Errors: TD_EINVAL, TD_ENOMEM, TD_ECANCELLED (a then
 * holds the best schedule so far). */
int td_horizon_full(const td_horizon_cfg *c, int max_iters, td_sink *sink,
                    double *a /* in/OUT */, int *iters /* OUT */, td_err *err);

#endif
