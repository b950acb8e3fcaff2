/* power.h: power iteration for the dominant (largest-magnitude) eigenvalue of an implicit
 * symmetric operator. */
#ifndef TD_POWER_H
#define TD_POWER_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/linop.h"

typedef struct td_power_opts {
  size_t max_iter; /* matvec budget, >= 1 (default 1000) */
  double tol;      /* converged when ||A v - rho v|| <= tol * |rho|; > 0 (default 1e-8) */
  uint64_t seed;   /* start vector td_linop_gaussian(seed, stream 0) */
} td_power_opts;

typedef struct td_power_result {
  double eigval;   /* Rayleigh quotient rho = v^T A v of the last unit iterate v */
  double resid;    /* ||A v - rho v||_2 for that v */
  size_t n_matvec; /* operator applications */
  int converged;   /* 1 if resid <= tol * |rho| was reached within max_iter */
} td_power_result;

/* td_power_opts_default: max_iter 1000, tol 1e-8, seed 0. */
td_power_opts td_power_opts_default(void);

/* td_power_top: the eigenvalue of largest magnitude of the symmetric operator `f` (n x n) by
 * the power method (Golub & Van Loan, Matrix Computations, 4th ed., §8.2.1): v <- A v/||A v||,
 * with the Rayleigh quotient rho = v^T A v and the residual ||A v - rho v|| computed from the
 * same matvec. Since A is symmetric, |rho - lambda| <= resid (Weinstein's bound) and, with
 * a spectral gap, |rho - lambda_1| = O(|lambda_2/lambda_1|^(2t)) after t steps (GvL §8.2.1).
 * If +-lambda both dominate, the iteration does not converge; converged is then 0 and the
 * caller should use td_lanczos_topk(LM).
 *   vec (n, OUT, may be NULL): the last unit iterate v.
 * Not converging within max_iter is not an error (check res->converged).
 * Errors: TD_EINVAL (f NULL, n 0, max_iter 0, tol <= 0), TD_ENOMEM, TD_ERANGE (non-finite
 * operator output, or A v = 0 exactly: then rho = 0 and res is still filled). */
int td_power_top(td_matvec_fn f, void *ctx, size_t n, const td_power_opts *opts,
                 double *vec /* OUT, may be NULL */, td_power_result *res /* OUT */, td_err *err);

#endif
