/* power.c: power iteration with Rayleigh quotient and residual-based stopping. */
#include "curv/power.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

td_power_opts td_power_opts_default(void) {
  td_power_opts o = {.max_iter = 1000, .tol = 1e-8, .seed = 0};
  return o;
}

int td_power_top(td_matvec_fn f, void *ctx, size_t n, const td_power_opts *opts, double *vec,
                 td_power_result *res, td_err *err) {
  if (res) memset(res, 0, sizeof *res);
  if (!f || !opts || !res || !n || n > (size_t)INT_MAX)
    return td_err_set(err, TD_EINVAL, NULL, "power: bad arguments (n=%zu)", n);
  if (!opts->max_iter) return td_err_set(err, TD_EINVAL, "max_iter", "max_iter must be >= 1");
  if (!(opts->tol > 0.0)) return td_err_set(err, TD_EINVAL, "tol", "tol must be > 0");
  const int ni = (int)n;
  double *v = malloc(n * sizeof *v), *w = malloc(n * sizeof *w);
  if (!v || !w) {
    free(v);
    free(w);
    return td_err_set(err, TD_ENOMEM, NULL, "power: out of memory (n=%zu)", n);
  }
  td_linop_gaussian(v, n, opts->seed, 0);
  cblas_dscal(ni, 1.0 / cblas_dnrm2(ni, v, 1), v, 1);
  int rc = 0;
  for (size_t t = 0; t < opts->max_iter; t++) {
    f(ctx, v, w, n);
    res->n_matvec++;
    double rho = cblas_ddot(ni, v, 1, w, 1);
    double nw = cblas_dnrm2(ni, w, 1);
    /* ||w - rho v||^2 = ||w||^2 - rho^2 for unit v cancels badly near convergence: form it. */
    double r2 = 0.0;
    for (size_t i = 0; i < n; i++) {
      double d = w[i] - rho * v[i];
      r2 += d * d;
    }
    double r = sqrt(r2);
    res->eigval = rho;
    res->resid = r;
    if (!isfinite(rho) || !isfinite(nw)) {
      rc = td_err_set(err, TD_ERANGE, NULL, "power: operator returned a non-finite value");
      break;
    }
    if (nw == 0.0) {
      rc = td_err_set(err, TD_ERANGE, NULL, "power: A v = 0 (v in the null space)");
      break;
    }
    if (r <= opts->tol * fabs(rho)) {
      res->converged = 1;
      break;
    }
    if (t + 1 < opts->max_iter)
      for (size_t i = 0; i < n; i++) v[i] = w[i] / nw;
  }
  if (vec) memcpy(vec, v, n * sizeof *v);
  free(v);
  free(w);
  return rc;
}
