/* hutchinson.h: Hutchinson's stochastic trace estimator with Rademacher probes. */
#ifndef TD_HUTCHINSON_H
#define TD_HUTCHINSON_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/linop.h"

typedef struct td_hutchinson_result {
  double trace;    /* mean of the probe samples z_p^T A z_p */
  double std_err;  /* sample standard deviation (1/(P-1) normalization) / sqrt(P); NaN if P = 1 */
  size_t n_probes; /* P */
  size_t n_matvec; /* == P */
} td_hutchinson_result;

/* td_hutchinson_trace: tr(A) ~ (1/P) sum_p z_p^T A z_p with z_p i.i.d. Rademacher (+-1) vectors
 * (Hutchinson 1990, "A stochastic estimator of the trace of the influence matrix for
 * Laplacian smoothing splines", Commun. Stat. Simul. Comput. 19(2); unbiased with per-probe
 * variance 2 (||A||_F^2 - sum_i A_ii^2): Avron & Toledo 2011, J. ACM 58(2), Lemma 1).
 * Probe p is td_linop_rademacher(seed, stream p), so results do not depend on anything but
 * (seed, P). Since z_i^2 = 1, the estimate is exact for a diagonal A with any P.
 * Mean and variance by Welford's update (Knuth TAOCP vol. 2, §4.2.2).
 *   samples (P, OUT, may be NULL): the individual z_p^T A z_p.
 * Errors: TD_EINVAL (f NULL, n 0, P 0), TD_ENOMEM, TD_ERANGE (a non-finite sample). */
int td_hutchinson_trace(td_matvec_fn f, void *ctx, size_t n, size_t n_probes, uint64_t seed,
                        double *samples /* OUT, may be NULL */,
                        td_hutchinson_result *res /* OUT */, td_err *err);

#endif
