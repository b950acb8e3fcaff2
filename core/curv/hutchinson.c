/* hutchinson.c: Rademacher-probe trace estimation with a standard error. */
#include "curv/hutchinson.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int td_hutchinson_trace(td_matvec_fn f, void *ctx, size_t n, size_t n_probes, uint64_t seed,
                        double *samples, td_hutchinson_result *res, td_err *err) {
  if (res) memset(res, 0, sizeof *res);
  if (!f || !res || !n || n > (size_t)INT_MAX)
    return td_err_set(err, TD_EINVAL, NULL, "hutchinson: bad arguments (n=%zu)", n);
  if (!n_probes) return td_err_set(err, TD_EINVAL, "n_probes", "n_probes must be >= 1");
  double *z = malloc(n * sizeof *z), *az = malloc(n * sizeof *az);
  if (!z || !az) {
    free(z);
    free(az);
    return td_err_set(err, TD_ENOMEM, NULL, "hutchinson: out of memory (n=%zu)", n);
  }
  int rc = 0;
  double mean = 0.0, m2 = 0.0;
  for (size_t p = 0; p < n_probes; p++) {
    td_linop_rademacher(z, n, seed, p);
    f(ctx, z, az, n);
    res->n_matvec++;
    double x = cblas_ddot((int)n, z, 1, az, 1);
    if (!isfinite(x)) {
      rc = td_err_set(err, TD_ERANGE, NULL, "hutchinson: non-finite sample at probe %zu", p);
      break;
    }
    if (samples) samples[p] = x;
    double d = x - mean;
    mean += d / (double)(p + 1);
    m2 += d * (x - mean);
  }
  if (!rc) {
    res->trace = mean;
    res->n_probes = n_probes;
    res->std_err = n_probes > 1 ? sqrt(m2 / (double)(n_probes - 1) / (double)n_probes) : NAN;
  }
  free(z);
  free(az);
  return rc;
}
