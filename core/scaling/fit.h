/* fit.h: scaling-law fits with bootstrap intervals: power_offset, chinchilla (Hoffmann et al.
 * 2022, Approach 3) and critical_batch (McCandlish et al. 2018). Backs POST /api/v1/fits and
 * the `fit` of a sweep.
 *
 * Laws and their points:
 *   power_offset    L(x) = E + A x^-alpha                points {x, y}
 *   chinchilla      L(N, D) = E + A/N^alpha + B/D^beta   points {N, D, L}
 *   critical_batch  S(B) = S_min (1 + B_crit / B)        points {B, S}
 * Every value must be a finite number > 0 (logs are taken). Extra keys in a point are ignored.
 *
 * Method (all three laws, as Hoffmann et al. 2022, Approach 3, eq. 3 and App. D.2):
 *   - the law is written as a log-sum-exp of terms linear in unconstrained parameters, e.g.
 *     log L_hat(N, D) = LSE(a - alpha log N, b - beta log D, e), A = e^a, B = e^b, E = e^e;
 *     power_offset: LSE(a - alpha log x, e); critical_batch: log S = LSE(s, s + k - log B)
 *     with S_min = e^s, B_crit = e^k;
 *   - minimize the mean Huber loss (delta = 1e-3) of the log residuals
 *     r_i = log L_hat_i - log L_i with L-BFGS (liblbfgs), started from the best 24 points
 *     of a grid of starting values (chinchilla: Hoffmann's grid alpha, beta in {0, .5, 1, 1.5,
 *     2}, e in {-1, -.5, 0, .5, 1}, a, b in {0, 5, 10, 15, 20, 25}; the others: a grid scaled
 *     to the data). The grid is scored first and only the best starts are refined (a speed-up
 *     over refining all of them; the best refined start wins);
 *   - 95% intervals: percentile bootstrap (Efron and Tibshirani 1993, ch. 13): resample the
 *     points with replacement (seeded), refit from the full-data optimum, take the 2.5% and
 *     97.5% quantiles of each parameter and, pointwise, of the fitted curve.
 *
 * Result (a new JSON object):
 *   {"law": "chinchilla", "n_points": 40, "objective": 1.2e-7, "rmse_log": 3e-4,
 *    "params":  {"E": {"value": 1.69, "ci95": [1.6, 1.8]}, "A": ..., "alpha": ..., ...},
 *    "derived": {...same form...},      chinchilla: a, b, G of N_opt = G (C/6)^a,
 *                                       D_opt = G^-1 (C/6)^b; critical_batch: E_min
 *    "residuals": [r_1, ...],           log residuals log L_hat_i - log L_i, in point order
 *    "curve": {"x": [...], "y": [...], "lo": [...], "hi": [...]},   for plotting;
 *                                       chinchilla: x is compute C = 6ND and y is the loss
 *                                       at the compute-optimal (N_opt(C), D_opt(C))
 *    "compute_optimal": {"C": [...], "N_opt": [...], "N_opt_lo": [...], "N_opt_hi": [...],
 *                        "D_opt": [...], "D_opt_lo": [...], "D_opt_hi": [...]}, chinchilla
 *    "bootstrap": {"resamples": 200, "seed": 0, "failed": 0}}
 * ci95 is null when resamples is 0. A non-finite number is written as JSON null. */
#ifndef TD_FIT_H
#define TD_FIT_H

#include <jansson.h>
#include <stdint.h>

#include "base/err.h"

typedef enum {
  TD_FIT_POWER_OFFSET = 0,
  TD_FIT_CHINCHILLA = 1,
  TD_FIT_CRITICAL_BATCH = 2,
} td_fit_law;

/* td_fit_law_from_name: the law called `name` ("power_offset", "chinchilla",
 * "critical_batch"), or -1. */
int td_fit_law_from_name(const char *name);

typedef struct td_fit_opts {
  int resamples;    /* bootstrap resamples, 0..5000 (default 200; 0: no intervals) */
  uint64_t seed;    /* seed of the resampling (default 0) */
  int curve_points; /* points of the plotted curve, 2..1000 (default 60) */
} td_fit_opts;

/* td_fit_opts_default: 200 resamples, seed 0, 60 curve points. */
void td_fit_opts_default(td_fit_opts *opts /* OUT */);

/* td_fit_run: fit `law` to `points` (borrowed JSON array, see above; at most 100000 points,
 * at least 4 for power_offset, 6 for chinchilla, 3 for critical_batch, with at least 3
 * distinct x / 2 distinct N and D / 2 distinct B). opts NULL: defaults.
 * On success *result (OUT) is a new reference (see above).
 * Errors: TD_EINVAL with field "law", "points", "points[3]" or "points[3].y" (missing, not a
 * number, not finite, not > 0), or "bootstrap"/"curve_points"/"seed" for bad opts;
 * TD_ERANGE when no start converged to a finite objective; TD_ENOMEM. *result is then NULL. */
int td_fit_run(const char *law, const json_t *points, const td_fit_opts *opts,
               json_t **result /* OUT */, td_err *err);

/* td_fit_request: the body of POST /api/v1/fits:
 *   {"law": "...", "points": [...], "bootstrap": 200, "seed": 0, "curve_points": 60}
 * (the last three optional). Unknown keys are TD_EINVAL with their name as field. Then as
 * td_fit_run. */
int td_fit_request(const json_t *body, json_t **result /* OUT */, td_err *err);

/* td_fit_spec_validate: check a sweep's `fit` (borrowed):
 *   {"law": "power_offset" | "critical_batch", "x": PATH, "y": PATH, ...}
 *   {"law": "chinchilla", "N": PATH, "D": PATH, "L": PATH, ...}
 * plus optional "bootstrap", "seed", "curve_points". A PATH starts with "params." or
 * "summary." (e.g. "summary.n_params", "params.batch_size") and is at most 128 bytes.
 * On success *normalized (OUT) is a new object with the defaults filled. Errors: TD_EINVAL
 * with field "fit.<key>". */
int td_fit_spec_validate(const json_t *fit, json_t **normalized /* OUT */, td_err *err);

/* td_fit_sweep: run a sweep's fit over its children. `fit_spec` is a td_fit_spec_validate
 * spec; `children` (borrowed) is an array of {"params": {...}, "summary": {...}} (finished
 * children; others are the caller's business). A child whose path values are missing, not
 * numbers or not > 0 is skipped; the result adds "skipped": count. Errors: those of
 * td_fit_run (too few usable points is TD_EINVAL, field "fit"). */
int td_fit_sweep(const json_t *fit_spec, const json_t *children, json_t **result /* OUT */,
                 td_err *err);

/* td_fit_chinchilla_optimal: the compute-optimal allocation for C = 6 N D of
 * L = E + A/N^alpha + B/D^beta (Hoffmann et al. 2022, eq. 4):
 *   G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta), b = alpha/(alpha+beta),
 *   N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b.
 * NaN outputs when alpha, beta, A or B is not > 0. Kernel: never fails. */
void td_fit_chinchilla_optimal(double A, double alpha, double B, double beta, double C,
                               double *n_opt /* OUT */, double *d_opt /* OUT */);

#endif
