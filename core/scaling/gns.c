/* gns.c: the two-batch gradient-noise-scale estimator with moving averages (McCandlish et al. 2018). */
#include "scaling/gns.h"

#include <cblas.h>
#include <math.h>

int td_gns_init(td_gns *st, double decay, td_err *err) {
  st->decay = 0;
  st->g2_ema = st->s_ema = st->weight = 0;
  st->n = 0;
  st->n_pop = INFINITY;
  if (!isfinite(decay) || decay < 0 || decay >= 1)
    return td_err_set(err, TD_EINVAL, "noise_scale.decay",
                      "noise_scale.decay = %g must be in [0, 1)", decay);
  st->decay = decay;
  return 0;
}

int td_gns_set_population(td_gns *st, double n_pop, td_err *err) {
  if (!(n_pop >= 2))
    return td_err_set(err, TD_EINVAL, "noise_scale",
                      "the population size must be >= 2 (got %g)", n_pop);
  st->n_pop = n_pop;
  return 0;
}

/* c(b) = (n - b) / (b (n - 1)), the finite-population variance factor; 1/b for n = inf. */
static double fpc(double b, double n) { return isinf(n) ? 1.0 / b : (n - b) / (b * (n - 1)); }

int td_gns_two_batch(double b_small, double g2_small, double b_big, double g2_big,
                     double *g2_est, double *s_est, td_err *err) {
  return td_gns_two_batch_pop(b_small, g2_small, b_big, g2_big, INFINITY, g2_est, s_est, err);
}

int td_gns_two_batch_pop(double b_small, double g2_small, double b_big, double g2_big,
                         double n_pop, double *g2_est, double *s_est, td_err *err) {
  *g2_est = *s_est = NAN;
  if (!(b_small > 0) || !isfinite(b_small) || !isfinite(b_big) || !(b_big > b_small))
    return td_err_set(err, TD_EINVAL, "noise_scale.b_big",
                      "need 0 < b_small < b_big (got b_small = %g, b_big = %g)", b_small, b_big);
  if (!isfinite(g2_small) || !isfinite(g2_big) || g2_small < 0 || g2_big < 0)
    return td_err_set(err, TD_EINVAL, "noise_scale",
                      "squared gradient norms must be finite and >= 0 (got %g, %g)", g2_small,
                      g2_big);
  if (!(n_pop >= 2) || b_big > n_pop)
    return td_err_set(err, TD_EINVAL, "noise_scale.b_big",
                      "need b_big (%g) <= the population size (%g), which must be >= 2", b_big,
                      n_pop);
  if (isinf(n_pop)) { /* McCandlish et al. 2018, App. A, eqs. A.2 and A.3. */
    *g2_est = (b_big * g2_big - b_small * g2_small) / (b_big - b_small);
    *s_est = (g2_small - g2_big) / (1.0 / b_small - 1.0 / b_big);
    return 0;
  }
  /* Without replacement: E|G_b|^2 = |G|^2 + tr(S) c(b) (gns.h), solved for the two unknowns. */
  const double cs = fpc(b_small, n_pop), cb = fpc(b_big, n_pop);
  *g2_est = (cs * g2_big - cb * g2_small) / (cs - cb);
  *s_est = (g2_small - g2_big) / (cs - cb);
  return 0;
}

int td_gns_update(td_gns *st, double b_small, double g2_small, double b_big, double g2_big,
                  td_err *err) {
  double g2, s;
  int rc = td_gns_two_batch_pop(b_small, g2_small, b_big, g2_big, st->n_pop, &g2, &s, err);
  if (rc) return rc;
  double d = st->decay;
  st->g2_ema = d * st->g2_ema + (1 - d) * g2;
  st->s_ema = d * st->s_ema + (1 - d) * s;
  st->weight = d * st->weight + (1 - d);
  st->n++;
  return 0;
}

double td_gns_b_simple(const td_gns *st) {
  if (st->n == 0 || !(st->g2_ema > 0) || !(st->s_ema > 0)) return NAN;
  return st->s_ema / st->g2_ema;
}

double td_gns_g2(const td_gns *st) { return st->n ? st->g2_ema / st->weight : NAN; }

double td_gns_trace(const td_gns *st) { return st->n ? st->s_ema / st->weight : NAN; }

double td_gns_sqnorm(const double *g, size_t n) {
  return n ? cblas_ddot((int)n, g, 1, g, 1) : 0.0;
}
