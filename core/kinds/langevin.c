/* langevin.c: the `langevin` kind: SGLD and full-batch Langevin dynamics on a Gaussian
 * target; the running variance of the chain beside the closed-form stationary variance of the
 * discretized chain (chapter 8).
 *
 * Target. N data points x_i ~ N(0, I_p) (p = len(curvatures)) and the mean loss
 *   L(theta) = (1/N) sum_i 1/2 sum_j h_j (theta_j - x_ij)^2,
 * so the tempered posterior exp(-N L(theta) / T) is Gaussian with mean xbar and variance
 * T / (N h_j) per coordinate.
 * Chain (Welling and Teh 2011, eq. 4, in the mean-loss form with step eta):
 *   theta_{k+1} = theta_k - eta grad L_B(theta_k) + sqrt(2 eta T / N) xi_k,  xi_k ~ N(0, I),
 * with grad L_B the gradient on a minibatch of B indices drawn WITH replacement (SGLD), or the
 * full gradient (batch_size absent: full-batch Langevin). On this target the minibatch
 * gradient error h_j (xbar_j - xbar_B,j) does not depend on theta and is i.i.d. over steps with
 * variance s_j^2 = h_j^2 sigma_j^2 / B (sigma_j^2 the population variance of the x_ij), so
 * each coordinate is an AR(1) chain with coefficient rho = 1 - eta h_j and the stationary
 * variance is exactly (implicit.h, td_implicit_langevin_var)
 *   v_j = (2 eta T / N + eta^2 s_j^2) / (eta h_j (2 - eta h_j)),
 * against the target's T / (N h_j): the discretization inflates it by 1 / (1 - eta h / 2) and
 * the minibatch noise adds eta s^2 / (h (2 - eta h)) (Mandt, Hoffman and Blei 2017, sec. 3).
 *
 * Metrics, every log_every steps after burn_in: var/j (the running variance of theta_j over the
 * post-burn-in samples, Welford), var/j_theory (v_j), var/j_target (T / (N h_j)), var_se/j
 * (the Monte Carlo standard error of the running variance for a stationary Gaussian AR(1):
 * Var(s^2) ~ (2 v^2 / m) (1 + rho^2) / (1 - rho^2) over m samples; Priestley 1981, sec. 5.3)
 * and mean/j beside xbar_j. Coordinates j < 8 are logged. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "implicit/implicit.h"
#include "kinds/registry.h"

#define LG_MAX_P 64
#define LG_LOG_P 8

static const td_param lg_params[] = {
    {"curvatures", TD_PT_NUM_LIST, "[1, 0.2]", 1e-6, 1e6, NULL, LG_MAX_P,
     "h_j: the curvature of the mean loss per coordinate (the target's dimension p)"},
    {"n_data", TD_PT_INT, "100", 1, 1e6, NULL, 0, "N: data points (noise variance 2 eta T / N)"},
    {"lr", TD_PT_NUM, "0.5", 1e-9, 1e3, NULL, 0, "step eta (needs eta h_j < 2)"},
    {"temperature", TD_PT_NUM, "1", 0, 1e6, NULL, 0,
     "T: noise variance 2 eta T / N per coordinate (1: the posterior; 0: plain (S)GD)"},
    {"batch_size", TD_PT_INT, NULL, 1, 1e6, NULL, 0,
     "SGLD minibatch size B, indices drawn with replacement (absent: full-batch Langevin)"},
    {"steps", TD_PT_INT, "200000", 1, 1e8, NULL, 0, "chain steps"},
    {"burn_in", TD_PT_INT, NULL, 0, 1e8, NULL, 0,
     "steps discarded before the running statistics (absent: 20 / (eta min h), capped at steps/2)"},
    {"log_every", TD_PT_INT, NULL, 1, 1e8, NULL, 0, "steps between metrics (absent: steps/200)"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of data and noise"},
};

static int lg_check(const json_t *p, td_estimate *est, td_err *err) {
  const json_t *h = td_param_get(p, "curvatures");
  const double lr = td_param_num(p, "lr", 0.5);
  for (size_t j = 0; j < json_array_size(h); j++) {
    const double hj = json_number_value(json_array_get(h, j));
    if (!(lr * hj < 2))
      return td_err_set(err, TD_EINVAL, "params.lr",
                        "lr * curvatures[%zu] = %g: the chain is unstable (needs < 2)", j, lr * hj);
  }
  const long N = td_param_int(p, "n_data", 100);
  if (td_param_has(p, "batch_size") && td_param_int(p, "batch_size", 1) > N)
    return td_err_set(err, TD_EINVAL, "params.batch_size", "batch_size exceeds n_data (%ld)", N);
  const double work = (double)td_param_int(p, "steps", 200000) * (double)json_array_size(h) *
                      (td_param_has(p, "batch_size") ? (double)td_param_int(p, "batch_size", 1) : 1.0);
  if (work > 2e10)
    return td_err_set(err, TD_EINVAL, "params.steps",
                      "steps x dimension x batch_size = %.3g is above the cap of 2e10", work);
  est->bytes = 8.0 * (double)N * (double)json_array_size(h) + 1e5;
  est->n_params = (double)json_array_size(h);
  return 0;
}

static int lg_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  const json_t *jh = td_param_get(params, "curvatures");
  const int p = (int)json_array_size(jh);
  const long N = td_param_int(params, "n_data", 100);
  const double lr = td_param_num(params, "lr", 0.5), T = td_param_num(params, "temperature", 1);
  const int sgld = td_param_has(params, "batch_size");
  const long B = sgld ? td_param_int(params, "batch_size", 1) : N;
  const long steps = td_param_int(params, "steps", 200000);
  const uint64_t seed = (uint64_t)td_param_int(params, "seed", 0);
  double h[LG_MAX_P], xbar[LG_MAX_P], s2[LG_MAX_P], th[LG_MAX_P], mean[LG_MAX_P], m2[LG_MAX_P],
      vth[LG_MAX_P], xb[LG_MAX_P];
  double hmin = INFINITY;
  for (int j = 0; j < p; j++) {
    h[j] = json_number_value(json_array_get(jh, (size_t)j));
    if (h[j] < hmin) hmin = h[j];
  }
  long burn = td_param_has(params, "burn_in") ? td_param_int(params, "burn_in", 0)
                                              : (long)ceil(20.0 / (lr * hmin));
  if (!td_param_has(params, "burn_in") && burn > steps / 2) burn = steps / 2;
  if (burn >= steps)
    return td_err_set(err, TD_EINVAL, "params.burn_in", "burn_in must be below steps");
  long log_every = td_param_has(params, "log_every") ? td_param_int(params, "log_every", 1)
                                                     : (steps / 200 > 0 ? steps / 200 : 1);
  double *X = malloc((size_t)N * p * sizeof *X);
  if (!X) return td_err_set(err, TD_ENOMEM, NULL, "langevin: out of memory");
  td_rng rd, rn, rb;
  td_rng_init(&rd, seed, TD_RNG_DATA);
  td_rng_init(&rn, seed, TD_RNG_PROBE);
  td_rng_init(&rb, seed, TD_RNG_SHUFFLE);
  td_rng_fill_normal(&rd, X, (size_t)N * p, 1.0);
  for (int j = 0; j < p; j++) {
    double s = 0, q = 0;
    for (long i = 0; i < N; i++) s += X[i * p + j];
    xbar[j] = s / (double)N;
    for (long i = 0; i < N; i++) q += (X[i * p + j] - xbar[j]) * (X[i * p + j] - xbar[j]);
    const double pop_var = q / (double)N;
    s2[j] = sgld ? h[j] * h[j] * pop_var / (double)B : 0.0;
    vth[j] = td_implicit_langevin_var(h[j], lr, T, (double)N, sqrt(s2[j]));
    th[j] = xbar[j]; /* start at the mode */
    mean[j] = m2[j] = 0.0;
  }
  const double noise_sd = sqrt(2.0 * lr * T / (double)N);
  long m = 0;
  int rc = 0;
  for (long k = 1; k <= steps; k++) {
    if ((k & 1023) == 0 && td_sink_should_stop(sink)) {
      rc = TD_ECANCELLED;
      goto out;
    }
    if (sgld) {
      for (int j = 0; j < p; j++) xb[j] = 0.0;
      for (long b = 0; b < B; b++) {
        const long i = (long)td_rng_below(&rb, (uint64_t)N);
        for (int j = 0; j < p; j++) xb[j] += X[i * p + j];
      }
      for (int j = 0; j < p; j++) xb[j] /= (double)B;
    } else {
      for (int j = 0; j < p; j++) xb[j] = xbar[j];
    }
    for (int j = 0; j < p; j++)
      th[j] += -lr * h[j] * (th[j] - xb[j]) + noise_sd * td_rng_normal(&rn);
    if (k > burn) {
      m++;
      for (int j = 0; j < p; j++) { /* Welford */
        const double dlt = th[j] - mean[j];
        mean[j] += dlt / (double)m;
        m2[j] += dlt * (th[j] - mean[j]);
      }
      if (m >= 2 && (k % log_every == 0 || k == steps)) {
        for (int j = 0; j < p && j < LG_LOG_P; j++) {
          char key[32];
          const double var = m2[j] / (double)(m - 1), rho = 1.0 - lr * h[j];
          const double se = vth[j] * sqrt(2.0 / (double)m * (1 + rho * rho) / (1 - rho * rho));
          snprintf(key, sizeof key, "var/%d", j);
          td_sink_metric(sink, key, k, var);
          snprintf(key, sizeof key, "var/%d_theory", j);
          td_sink_metric(sink, key, k, vth[j]);
          snprintf(key, sizeof key, "var/%d_target", j);
          td_sink_metric(sink, key, k, T / ((double)N * h[j]));
          snprintf(key, sizeof key, "var_se/%d", j);
          td_sink_metric(sink, key, k, se);
          snprintf(key, sizeof key, "mean/%d", j);
          td_sink_metric(sink, key, k, mean[j]);
        }
      }
    }
    if (k % log_every == 0) td_sink_progress(sink, k, steps);
  }
  {
    json_t *s = json_object(), *jv = json_array(), *jt = json_array(), *jg = json_array(),
           *jz = json_array();
    for (int j = 0; j < p; j++) {
      const double var = m > 1 ? m2[j] / (double)(m - 1) : NAN, rho = 1.0 - lr * h[j];
      const double se = vth[j] * sqrt(2.0 / (double)m * (1 + rho * rho) / (1 - rho * rho));
      json_array_append_new(jv, isfinite(var) ? json_real(var) : json_null());
      json_array_append_new(jt, json_real(vth[j]));
      json_array_append_new(jg, json_real(T / ((double)N * h[j])));
      json_array_append_new(jz, isfinite(var) ? json_real((var - vth[j]) / se) : json_null());
    }
    json_object_set_new(s, "var", jv);
    json_object_set_new(s, "var_theory", jt);
    json_object_set_new(s, "var_target", jg);
    json_object_set_new(s, "var_z", jz);
    json_object_set_new(s, "samples", json_integer(m));
    json_object_set_new(s, "burn_in", json_integer(burn));
    json_object_set_new(s, "mode", json_string(sgld ? "sgld" : "langevin"));
    *summary = s;
  }
out:
  free(X);
  return rc;
}

const td_kind td_kind_langevin = {
    .name = "langevin",
    .doc = "SGLD / full-batch Langevin on a Gaussian target: running variance vs the "
           "discretized chain's closed form",
    .chapter = "8",
    .params = lg_params,
    .n_params = sizeof lg_params / sizeof lg_params[0],
    .check = lg_check,
    .run = lg_run,
};
