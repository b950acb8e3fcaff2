/* slq.c: stochastic Lanczos quadrature and the Gaussian-smoothed spectral density. */
#include "curv/slq.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "curv/lanczos.h"

td_slq_opts td_slq_opts_default(void) {
  td_slq_opts o;
  memset(&o, 0, sizeof o);
  o.n_probes = 10;
  o.probe = TD_SLQ_RADEMACHER;
  o.n_grid = 512;
  return o;
}

void td_slq_result_deinit(td_slq_result *res) {
  if (!res) return;
  free(res->len);
  free(res->nodes);
  free(res->weights);
  free(res->grid);
  free(res->density);
  memset(res, 0, sizeof *res);
}

/* grid and density from the nodes and weights in *res (sigma, lo, hi already resolved). */
static void slq_density(td_slq_result *res, double lo, double hi) {
  const size_t G = res->n_grid, P = res->n_probes, m = res->stride;
  const double s = res->sigma, c = 1.0 / (s * 2.5066282746310005024 * (double)P); /* sqrt(2 pi) */
  for (size_t g = 0; g < G; g++) {
    double t = lo + (hi - lo) * (double)g / (double)(G - 1);
    double acc = 0.0;
    for (size_t p = 0; p < P; p++)
      for (size_t k = 0; k < res->len[p]; k++) {
        double z = (t - res->nodes[p * m + k]) / s;
        acc += res->weights[p * m + k] * exp(-0.5 * z * z);
      }
    res->grid[g] = t;
    res->density[g] = c * acc;
  }
}

int td_slq_run(td_matvec_fn f, void *ctx, size_t n, const td_slq_opts *opts, td_slq_result *res,
               td_err *err) {
  if (res) memset(res, 0, sizeof *res);
  if (!f || !opts || !res || !n || n > (size_t)INT_MAX)
    return td_err_set(err, TD_EINVAL, NULL, "slq: bad arguments (n=%zu)", n);
  const size_t P = opts->n_probes;
  size_t m = opts->steps ? opts->steps : (n < 80 ? n : 80);
  if (!P) return td_err_set(err, TD_EINVAL, "n_probes", "n_probes must be >= 1");
  if (m > n) return td_err_set(err, TD_EINVAL, "steps", "steps=%zu exceeds n=%zu", m, n);
  if (opts->n_grid < 2) return td_err_set(err, TD_EINVAL, "n_grid", "n_grid must be >= 2");
  if (!(opts->sigma >= 0.0) || !isfinite(opts->sigma))
    return td_err_set(err, TD_EINVAL, "sigma", "sigma must be finite and >= 0");
  if (!isfinite(opts->lo) || !isfinite(opts->hi))
    return td_err_set(err, TD_EINVAL, "lo", "grid range must be finite");
  if (opts->probe != TD_SLQ_RADEMACHER && opts->probe != TD_SLQ_GAUSSIAN)
    return td_err_set(err, TD_EINVAL, "probe", "unknown probe distribution");
  if (m > SIZE_MAX / sizeof(double) / n - 1 || m > SIZE_MAX / sizeof(double) / m ||
      P > SIZE_MAX / sizeof(double) / m)
    return td_err_set(err, TD_ENOMEM, NULL, "slq: workspace size overflows");

  int rc = 0;
  double *Q = malloc(m * n * sizeof *Q), *q0 = malloc(n * sizeof *q0);
  double *alpha = malloc(m * sizeof *alpha), *beta = malloc(m * sizeof *beta);
  double *theta = malloc(m * sizeof *theta), *S = malloc(m * m * sizeof *S);
  res->len = calloc(P, sizeof *res->len);
  res->nodes = calloc(P * m, sizeof *res->nodes);
  res->weights = calloc(P * m, sizeof *res->weights);
  res->grid = malloc(opts->n_grid * sizeof *res->grid);
  res->density = malloc(opts->n_grid * sizeof *res->density);
  if (!Q || !q0 || !alpha || !beta || !theta || !S || !res->len || !res->nodes ||
      !res->weights || !res->grid || !res->density) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "slq: out of memory (n=%zu, steps=%zu)", n, m);
    goto done;
  }
  res->n_probes = P;
  res->stride = m;
  res->n_grid = opts->n_grid;

  double tmin = INFINITY, tmax = -INFINITY;
  for (size_t p = 0; p < P; p++) {
    if (opts->probe == TD_SLQ_GAUSSIAN) td_linop_gaussian(q0, n, opts->seed, p);
    else td_linop_rademacher(q0, n, opts->seed, p); /* normalized inside tridiag */
    size_t steps = 0;
    rc = td_lanczos_tridiag(f, ctx, n, q0, m, Q, alpha, beta, &steps, err);
    res->n_matvec += steps;
    if (rc) goto done;
    rc = td_lanczos_tridiag_eig(steps, alpha, beta, theta, S, err);
    if (rc) goto done;
    res->len[p] = steps;
    for (size_t k = 0; k < steps; k++) {
      res->nodes[p * m + k] = theta[k];
      res->weights[p * m + k] = S[k] * S[k]; /* row 0 of S: first components */
    }
    if (theta[0] < tmin) tmin = theta[0];
    if (theta[steps - 1] > tmax) tmax = theta[steps - 1];
  }

  double sigma = opts->sigma;
  if (sigma == 0.0) {
    double range = tmax - tmin;
    sigma = range > 0.0 ? 0.01 * range : 0.01 * fmax(fabs(tmax), 1.0);
  }
  res->sigma = sigma;
  double lo = opts->lo, hi = opts->hi;
  if (!(lo < hi)) {
    lo = tmin - 5.0 * sigma;
    hi = tmax + 5.0 * sigma;
  }
  slq_density(res, lo, hi);

done:
  free(Q);
  free(q0);
  free(alpha);
  free(beta);
  free(theta);
  free(S);
  if (rc) td_slq_result_deinit(res);
  return rc;
}

json_t *td_slq_result_json(const td_slq_result *res) {
  if (!res || !res->len) return NULL;
  json_t *nodes = json_array(), *weights = json_array();
  json_t *grid = td_lanczos_json_array(res->grid, res->n_grid);
  json_t *dens = td_lanczos_json_array(res->density, res->n_grid);
  int ok = nodes && weights && grid && dens && isfinite(res->sigma);
  for (size_t p = 0; ok && p < res->n_probes; p++) {
    ok = !json_array_append_new(nodes, td_lanczos_json_array(res->nodes + p * res->stride, res->len[p])) &&
         !json_array_append_new(weights, td_lanczos_json_array(res->weights + p * res->stride, res->len[p]));
  }
  if (!ok) {
    json_decref(nodes);
    json_decref(weights);
    json_decref(grid);
    json_decref(dens);
    return NULL;
  }
  return json_pack("{s:o, s:o, s:o, s:o, s:f, s:I, s:I}", "nodes", nodes, "weights", weights,
                   "grid", grid, "density", dens, "sigma", res->sigma, "n_probes",
                   (json_int_t)res->n_probes, "n_matvec", (json_int_t)res->n_matvec);
}
