/* horizon.c: greedy and full-horizon learning-rate schedules on the noisy quadratic model. */
#include "bilevel/horizon.h"

#include <lbfgs.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int check(const td_horizon_cfg *c, td_err *err) {
  if (!c || c->dim == 0 || !c->h || !c->c || !c->s0 || !(c->batch > 0) || c->T < 1)
    return td_err_set(err, TD_EINVAL, NULL, "short horizon: bad configuration");
  for (size_t i = 0; i < c->dim; i++)
    if (!(c->h[i] > 0) || !(c->c[i] >= 0) || !(c->s0[i] >= 0))
      return td_err_set(err, TD_EINVAL, "params.h", "short horizon: h > 0, c >= 0 needed");
  return 0;
}

double td_horizon_loss(const td_horizon_cfg *c, const double *a, double *loss, double *grad) {
  size_t d = c->dim;
  int T = c->T;
  /* forward: keep s_t for every t when the gradient is wanted (T x d) */
  double *S = malloc((grad ? (size_t)(T + 1) : 2) * d * sizeof *S);
  if (!S) return NAN;
  double *s = S;
  memcpy(s, c->s0, d * sizeof *s);
  double L = 0;
  for (size_t i = 0; i < d; i++) L += 0.5 * c->h[i] * s[i];
  if (loss) loss[0] = L;
  for (int t = 0; t < T; t++) {
    double *sn = grad ? S + (size_t)(t + 1) * d : S + (size_t)((t + 1) % 2) * d;
    L = 0;
    for (size_t i = 0; i < d; i++) {
      double r = 1 - a[t] * c->h[i];
      sn[i] = r * r * s[i] + a[t] * a[t] * c->c[i] / c->batch;
      L += 0.5 * c->h[i] * sn[i];
    }
    if (loss) loss[t + 1] = L;
    s = sn;
  }
  if (grad) {
    /* adjoint p_i = dL_T/ds_i,t; at T: h_i / 2. ds'/da = -2 h r s + 2 a c / B; ds'/ds = r^2 */
    double *p = malloc(d * sizeof *p);
    if (!p) {
      free(S);
      return NAN;
    }
    for (size_t i = 0; i < d; i++) p[i] = 0.5 * c->h[i];
    for (int t = T - 1; t >= 0; t--) {
      const double *st = S + (size_t)t * d;
      double g = 0;
      for (size_t i = 0; i < d; i++) {
        double r = 1 - a[t] * c->h[i];
        g += p[i] * (-2 * c->h[i] * r * st[i] + 2 * a[t] * c->c[i] / c->batch);
        p[i] *= r * r;
      }
      grad[t] = g;
    }
    free(p);
  }
  free(S);
  return L;
}

int td_horizon_greedy(const td_horizon_cfg *c, double *a, double *loss, td_err *err) {
  int rc = check(c, err);
  if (rc) return rc;
  size_t d = c->dim;
  double *s = malloc(d * sizeof *s);
  if (!s) return td_err_set(err, TD_ENOMEM, NULL, "short horizon: out of memory");
  memcpy(s, c->s0, d * sizeof *s);
  double L = 0;
  for (size_t i = 0; i < d; i++) L += 0.5 * c->h[i] * s[i];
  if (loss) loss[0] = L;
  for (int t = 0; t < c->T; t++) {
    double num = 0, den = 0;
    for (size_t i = 0; i < d; i++) {
      num += c->h[i] * c->h[i] * s[i];
      den += c->h[i] * c->h[i] * c->h[i] * s[i] + c->h[i] * c->c[i] / c->batch;
    }
    a[t] = den > 0 ? num / den : 0;
    L = 0;
    for (size_t i = 0; i < d; i++) {
      double r = 1 - a[t] * c->h[i];
      s[i] = r * r * s[i] + a[t] * a[t] * c->c[i] / c->batch;
      L += 0.5 * c->h[i] * s[i];
    }
    if (loss) loss[t + 1] = L;
  }
  free(s);
  return 0;
}

typedef struct full_ctx {
  const td_horizon_cfg *c;
  double *a, *g;
  int evals;
  td_sink *sink;
} full_ctx;

static int full_progress(void *inst, const lbfgsfloatval_t *x, const lbfgsfloatval_t *g,
                         const lbfgsfloatval_t fx, const lbfgsfloatval_t xnorm,
                         const lbfgsfloatval_t gnorm, const lbfgsfloatval_t step, int n, int k,
                         int ls) {
  (void)x, (void)g, (void)fx, (void)xnorm, (void)gnorm, (void)step, (void)n, (void)k, (void)ls;
  return td_sink_should_stop(((full_ctx *)inst)->sink); /* non-zero cancels */
}

static lbfgsfloatval_t full_eval(void *inst, const lbfgsfloatval_t *u, lbfgsfloatval_t *gu,
                                 const int n, const lbfgsfloatval_t step) {
  (void)step;
  full_ctx *f = inst;
  f->evals++;
  for (int t = 0; t < n; t++) f->a[t] = exp(u[t]);
  double L = td_horizon_loss(f->c, f->a, NULL, f->g);
  if (!isfinite(L) || !(L > 0)) {
    for (int t = 0; t < n; t++) gu[t] = 0;
    return 1e300;
  }
  /* d log L / d u_t = a_t dL/da_t / L */
  for (int t = 0; t < n; t++) gu[t] = f->a[t] * f->g[t] / L;
  return log(L);
}

int td_horizon_full(const td_horizon_cfg *c, int max_iters, td_sink *sink, double *a,
                    int *iters, td_err *err) {
  int rc = check(c, err);
  if (rc) return rc;
  int T = c->T;
  for (int t = 0; t < T; t++)
    if (!(a[t] > 0)) return td_err_set(err, TD_EINVAL, NULL, "short horizon: start lr <= 0");
  lbfgsfloatval_t *u = lbfgs_malloc(T);
  double *buf = malloc(2 * (size_t)T * sizeof *buf);
  if (!u || !buf) {
    lbfgs_free(u);
    free(buf);
    return td_err_set(err, TD_ENOMEM, NULL, "short horizon: out of memory");
  }
  for (int t = 0; t < T; t++) u[t] = log(a[t]);
  full_ctx f = {c, buf, buf + T, 0, sink};
  lbfgs_parameter_t par;
  lbfgs_parameter_init(&par);
  par.m = 20;
  par.epsilon = 1e-10;
  par.max_iterations = max_iters > 0 ? max_iters : 500;
  par.max_linesearch = 60;
  lbfgsfloatval_t fx = 0;
  int st = lbfgs(T, u, &fx, full_eval, full_progress, &f, &par);
  /* whatever the status, u is the best point L-BFGS kept; keep it only if it is no worse */
  double L0 = td_horizon_loss(c, a, NULL, NULL);
  for (int t = 0; t < T; t++) buf[t] = exp(u[t]);
  double L1 = td_horizon_loss(c, buf, NULL, NULL);
  if (isfinite(L1) && L1 <= L0) memcpy(a, buf, (size_t)T * sizeof *a);
  if (iters) *iters = f.evals;
  lbfgs_free(u);
  free(buf);
  if (st == LBFGSERR_CANCELED) return td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
  return 0;
}
