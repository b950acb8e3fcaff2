/* fit.c: scaling-law fits (Huber on log residuals, L-BFGS from a grid, bootstrap intervals). */
#include "scaling/fit.h"

#include <lbfgs.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/schema.h"

#define TD__FIT_MAX_POINTS 10000
#define TD__FIT_MAX_P 5
#define TD__FIT_MAX_T 3
#define TD__FIT_HUBER_DELTA 1e-3
#define TD__FIT_TOP_STARTS 24

typedef struct law_def {
  const char *name;
  int np;                 /* internal parameters */
  int nf;                 /* features per point (1 or 2) */
  const char *fields[3];  /* point keys: the features, then the target */
  int min_points;
  int min_distinct;       /* distinct values needed in each feature */
} law_def;

static const law_def laws[] = {
    {"power_offset", 3, 1, {"x", "y", NULL}, 4, 3},
    {"chinchilla", 5, 2, {"N", "D", "L"}, 6, 3},
    {"critical_batch", 2, 1, {"B", "S", NULL}, 3, 2},
};
#define N_LAWS (sizeof laws / sizeof laws[0])

int td_fit_law_from_name(const char *name) {
  for (size_t i = 0; name && i < N_LAWS; i++)
    if (strcmp(laws[i].name, name) == 0) return (int)i;
  return -1;
}

void td_fit_opts_default(td_fit_opts *o) {
  o->resamples = 200;
  o->seed = 0;
  o->curve_points = 60;
}

void td_fit_chinchilla_optimal(double A, double alpha, double B, double beta, double C,
                               double *n_opt, double *d_opt) {
  *n_opt = *d_opt = NAN;
  if (!(A > 0) || !(B > 0) || !(alpha > 0) || !(beta > 0) || !(C > 0)) return;
  double G = pow(alpha * A / (beta * B), 1.0 / (alpha + beta));
  double a = beta / (alpha + beta), b = alpha / (alpha + beta);
  *n_opt = G * pow(C / 6.0, a);
  *d_opt = pow(C / 6.0, b) / G;
}

/* ---------------------------------------------------------------- data and objective */

typedef struct fit_data {
  int law;
  size_t n;
  double *f1, *f2, *ly; /* log features and log target */
  double *w;            /* weights (bootstrap counts); sum is wsum */
  double wsum;
} fit_data;

/* Terms t_k of the log-sum-exp and their gradients dt_k/dtheta (row k of g, TD__FIT_MAX_P). */
static int terms(int law, const double *th, double f1, double f2, double *t, double *g) {
  memset(g, 0, sizeof(double) * TD__FIT_MAX_T * TD__FIT_MAX_P);
  switch (law) {
  case TD_FIT_POWER_OFFSET: /* theta = (a, alpha, e) */
    t[0] = th[0] - th[1] * f1;
    g[0 * TD__FIT_MAX_P + 0] = 1;
    g[0 * TD__FIT_MAX_P + 1] = -f1;
    t[1] = th[2];
    g[1 * TD__FIT_MAX_P + 2] = 1;
    return 2;
  case TD_FIT_CHINCHILLA: /* theta = (a, b, e, alpha, beta) */
    t[0] = th[0] - th[3] * f1;
    g[0 * TD__FIT_MAX_P + 0] = 1;
    g[0 * TD__FIT_MAX_P + 3] = -f1;
    t[1] = th[1] - th[4] * f2;
    g[1 * TD__FIT_MAX_P + 1] = 1;
    g[1 * TD__FIT_MAX_P + 4] = -f2;
    t[2] = th[2];
    g[2 * TD__FIT_MAX_P + 2] = 1;
    return 3;
  default: /* critical_batch: theta = (s, k): log S = LSE(s, s + k - log B) */
    t[0] = th[0];
    g[0 * TD__FIT_MAX_P + 0] = 1;
    t[1] = th[0] + th[1] - f1;
    g[1 * TD__FIT_MAX_P + 0] = 1;
    g[1 * TD__FIT_MAX_P + 1] = 1;
    return 2;
  }
}

/* log L_hat at one point; softmax weights into sm (may be NULL). */
static double predict_log(int law, const double *th, double f1, double f2, double *sm,
                          double *g) {
  double t[TD__FIT_MAX_T];
  int nt = terms(law, th, f1, f2, t, g);
  double m = t[0];
  for (int k = 1; k < nt; k++)
    if (t[k] > m) m = t[k];
  double s = 0, e[TD__FIT_MAX_T];
  for (int k = 0; k < nt; k++) s += (e[k] = exp(t[k] - m));
  if (sm)
    for (int k = 0; k < nt; k++) sm[k] = e[k] / s;
  return m + log(s);
}

/* Objective: (1/delta) * weighted mean of Huber_delta(log L_hat_i - log L_i) (Hoffmann et
 * al. 2022, eq. 3; the 1/delta scale keeps gradients O(1) and leaves the argmin unchanged).
 * Gradient into grad when non-NULL. */
static double objective(const fit_data *d, const double *th, double *grad) {
  const double delta = TD__FIT_HUBER_DELTA;
  int np = laws[d->law].np;
  double f = 0, sm[TD__FIT_MAX_T], g[TD__FIT_MAX_T * TD__FIT_MAX_P];
  if (grad) memset(grad, 0, sizeof(double) * (size_t)np);
  for (size_t i = 0; i < d->n; i++) {
    if (d->w[i] == 0) continue;
    double r = predict_log(d->law, th, d->f1[i], d->f2 ? d->f2[i] : 0, sm, g) - d->ly[i];
    double ar = fabs(r);
    f += d->w[i] * (ar <= delta ? 0.5 * r * r : delta * (ar - 0.5 * delta));
    if (grad) {
      double psi = d->w[i] * (ar <= delta ? r : (r > 0 ? delta : -delta));
      int nt = d->law == TD_FIT_CHINCHILLA ? 3 : 2;
      for (int k = 0; k < nt; k++)
        for (int p = 0; p < np; p++) grad[p] += psi * sm[k] * g[k * TD__FIT_MAX_P + p];
    }
  }
  double scale = 1.0 / (d->wsum * delta);
  if (grad)
    for (int p = 0; p < np; p++) grad[p] *= scale;
  return f * scale;
}

static lbfgsfloatval_t lbfgs_eval(void *inst, const lbfgsfloatval_t *x, lbfgsfloatval_t *g,
                                  const int n, const lbfgsfloatval_t step) {
  (void)n;
  (void)step;
  double f = objective((const fit_data *)inst, x, g);
  if (!isfinite(f)) { /* steer the line search away from overflow */
    for (int i = 0; i < n; i++) g[i] = 0;
    return 1e300;
  }
  return f;
}

/* Refine theta in place with L-BFGS; returns the final objective (inf on failure). */
static double refine(const fit_data *d, double *theta) {
  int np = laws[d->law].np;
  lbfgsfloatval_t *x = lbfgs_malloc(np);
  if (!x) return INFINITY;
  for (int p = 0; p < np; p++) x[p] = theta[p];
  lbfgs_parameter_t par;
  lbfgs_parameter_init(&par);
  par.m = 10;
  par.epsilon = 1e-11;
  par.max_iterations = 2000;
  par.max_linesearch = 60;
  lbfgsfloatval_t fx = 0;
  lbfgs(np, x, &fx, lbfgs_eval, NULL, (void *)d, &par);
  /* Whatever the status (convergence, rounding limit, line-search stall), x is the best point
   * the library kept; use it if finite. */
  double f = objective(d, x, NULL);
  int ok = isfinite(f);
  for (int p = 0; p < np; p++) ok = ok && isfinite(x[p]);
  if (ok)
    for (int p = 0; p < np; p++) theta[p] = x[p];
  lbfgs_free(x);
  return ok ? f : INFINITY;
}

/* ---------------------------------------------------------------- starting grid */

typedef struct start {
  double f;
  double th[TD__FIT_MAX_P];
} start;

static int cmp_start(const void *a, const void *b) {
  double x = ((const start *)a)->f, y = ((const start *)b)->f;
  return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Fill the starting grid (allocated, *n entries) for law on data d. */
static start *make_grid(const fit_data *d, size_t *n) {
  double mf1 = 0, my = 0, minly = INFINITY, minf1 = INFINITY, maxf1 = -INFINITY;
  for (size_t i = 0; i < d->n; i++) {
    mf1 += d->f1[i] / (double)d->n;
    my += d->ly[i] / (double)d->n;
    if (d->ly[i] < minly) minly = d->ly[i];
    if (d->f1[i] < minf1) minf1 = d->f1[i];
    if (d->f1[i] > maxf1) maxf1 = d->f1[i];
  }
  start *g = NULL;
  size_t k = 0;
  if (d->law == TD_FIT_CHINCHILLA) {
    /* Hoffmann et al. 2022, App. D.2: alpha, beta in {0,.5,...,2}, e in {-1,-.5,...,1},
     * a, b in {0, 5, ..., 25}. */
    g = malloc(5 * 5 * 5 * 6 * 6 * sizeof *g);
    if (!g) return NULL;
    for (int ia = 0; ia < 5; ia++)
      for (int ib = 0; ib < 5; ib++)
        for (int ie = 0; ie < 5; ie++)
          for (int aa = 0; aa < 6; aa++)
            for (int bb = 0; bb < 6; bb++) {
              double *t = g[k++].th;
              t[0] = 5.0 * aa;
              t[1] = 5.0 * bb;
              t[2] = -1 + 0.5 * ie;
              t[3] = 0.5 * ia;
              t[4] = 0.5 * ib;
            }
  } else if (d->law == TD_FIT_POWER_OFFSET) {
    static const double al[] = {0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3};
    static const double ef[] = {0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99};
    static const double ao[] = {-6, -4, -2, -1, 0, 1, 2, 4};
    g = malloc(10 * 7 * 8 * sizeof *g);
    if (!g) return NULL;
    for (int i = 0; i < 10; i++)
      for (int j = 0; j < 7; j++)
        for (int m = 0; m < 8; m++) {
          double *t = g[k++].th;
          t[1] = al[i];
          t[2] = minly + log(ef[j]);
          t[0] = al[i] * mf1 + my + ao[m];
        }
  } else {
    static const double so[] = {-2, -1, -0.5, -0.2, 0};
    g = malloc(5 * 13 * sizeof *g);
    if (!g) return NULL;
    for (int i = 0; i < 5; i++)
      for (int j = 0; j < 13; j++) {
        double *t = g[k++].th;
        t[0] = minly + so[i];
        t[1] = (minf1 - 3) + (maxf1 - minf1 + 6) * j / 12.0;
      }
  }
  *n = k;
  return g;
}

/* Fit from the grid: score all starts, refine the best TD__FIT_TOP_STARTS. */
static double fit_from_grid(const fit_data *d, double *best) {
  size_t n = 0;
  start *g = make_grid(d, &n);
  if (!g) return INFINITY;
  for (size_t i = 0; i < n; i++) {
    g[i].f = objective(d, g[i].th, NULL);
    if (!isfinite(g[i].f)) g[i].f = INFINITY;
  }
  qsort(g, n, sizeof *g, cmp_start);
  int np = laws[d->law].np;
  double bf = INFINITY;
  for (size_t i = 0; i < n && i < TD__FIT_TOP_STARTS; i++) {
    double th[TD__FIT_MAX_P];
    memcpy(th, g[i].th, sizeof th);
    double f = refine(d, th);
    if (f < bf) {
      bf = f;
      memcpy(best, th, sizeof(double) * (size_t)np);
    }
  }
  free(g);
  return bf;
}

/* ---------------------------------------------------------------- natural parameters */

#define TD__FIT_MAX_NAT 9

/* Natural parameters and derived quantities of theta; names in *names. Returns count; the
 * first `*n_params` are "params", the rest "derived". */
static int natural(int law, const double *th, double *v, const char **names, int *n_params) {
  switch (law) {
  case TD_FIT_POWER_OFFSET:
    names[0] = "E", v[0] = exp(th[2]);
    names[1] = "A", v[1] = exp(th[0]);
    names[2] = "alpha", v[2] = th[1];
    *n_params = 3;
    return 3;
  case TD_FIT_CHINCHILLA: {
    double A = exp(th[0]), B = exp(th[1]), al = th[3], be = th[4];
    names[0] = "E", v[0] = exp(th[2]);
    names[1] = "A", v[1] = A;
    names[2] = "alpha", v[2] = al;
    names[3] = "B", v[3] = B;
    names[4] = "beta", v[4] = be;
    *n_params = 5;
    int ok = al > 0 && be > 0;
    names[5] = "a", v[5] = ok ? be / (al + be) : NAN;
    names[6] = "b", v[6] = ok ? al / (al + be) : NAN;
    names[7] = "G", v[7] = ok ? pow(al * A / (be * B), 1.0 / (al + be)) : NAN;
    return 8;
  }
  default:
    names[0] = "S_min", v[0] = exp(th[0]);
    names[1] = "B_crit", v[1] = exp(th[1]);
    *n_params = 2;
    names[2] = "E_min", v[2] = exp(th[0] + th[1]);
    return 3;
  }
}

/* The plotted curve at x (chinchilla: compute C, y is the loss at the compute optimum). */
static double curve_y(int law, const double *th, double x, double *n_opt, double *d_opt) {
  switch (law) {
  case TD_FIT_POWER_OFFSET: return exp(th[2]) + exp(th[0]) * pow(x, -th[1]);
  case TD_FIT_CHINCHILLA: {
    double A = exp(th[0]), B = exp(th[1]), N, D;
    td_fit_chinchilla_optimal(A, th[3], B, th[4], x, &N, &D);
    if (n_opt) *n_opt = N;
    if (d_opt) *d_opt = D;
    return exp(th[2]) + A * pow(N, -th[3]) + B * pow(D, -th[4]);
  }
  default: return exp(th[0]) * (1 + exp(th[1]) / x);
  }
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* Linear-interpolated quantile q of sorted v (n >= 1). */
static double quantile(const double *v, size_t n, double q) {
  double pos = q * (double)(n - 1);
  size_t i = (size_t)floor(pos);
  if (i + 1 >= n) return v[n - 1];
  double fr = pos - (double)i;
  return v[i] + fr * (v[i + 1] - v[i]);
}

/* 2.5% and 97.5% quantiles of column col of rows (R x stride), skipping non-finite. */
static void interval(const double *rows, size_t R, size_t stride, size_t col, double *tmp,
                     double *lo, double *hi) {
  size_t m = 0;
  for (size_t r = 0; r < R; r++) {
    double x = rows[r * stride + col];
    if (isfinite(x)) tmp[m++] = x;
  }
  if (m < 2) {
    *lo = *hi = NAN;
    return;
  }
  qsort(tmp, m, sizeof *tmp, cmp_double);
  *lo = quantile(tmp, m, 0.025);
  *hi = quantile(tmp, m, 0.975);
}

/* ---------------------------------------------------------------- validation */

static size_t count_distinct(const double *x, const double *w, size_t n, double *tmp) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (!w || w[i] > 0) tmp[m++] = x[i];
  qsort(tmp, m, sizeof *tmp, cmp_double);
  size_t k = m ? 1 : 0;
  for (size_t i = 1; i < m; i++)
    if (tmp[i] != tmp[i - 1]) k++;
  return k;
}

static void fit_data_free(fit_data *d) {
  free(d->f1);
  free(d->f2);
  free(d->ly);
  free(d->w);
}

static int load_points(int law, const json_t *points, fit_data *d, td_err *err) {
  const law_def *L = &laws[law];
  memset(d, 0, sizeof *d);
  d->law = law;
  if (!json_is_array(points))
    return td_err_set(err, TD_EINVAL, "points", "points must be a list of {%s%s%s%s%s}",
                      L->fields[0], ", ", L->fields[1], L->nf == 2 ? ", " : "",
                      L->nf == 2 ? L->fields[2] : "");
  size_t n = json_array_size(points);
  if (n < (size_t)L->min_points)
    return td_err_set(err, TD_EINVAL, "points", "%s needs at least %d points (got %zu)",
                      L->name, L->min_points, n);
  if (n > TD__FIT_MAX_POINTS)
    return td_err_set(err, TD_EINVAL, "points", "at most %d points (got %zu)",
                      TD__FIT_MAX_POINTS, n);
  d->n = n;
  d->f1 = malloc(n * sizeof(double));
  d->f2 = L->nf == 2 ? malloc(n * sizeof(double)) : NULL;
  d->ly = malloc(n * sizeof(double));
  d->w = malloc(n * sizeof(double));
  double *tmp = malloc(n * sizeof(double));
  if (!d->f1 || (L->nf == 2 && !d->f2) || !d->ly || !d->w || !tmp) {
    free(tmp);
    fit_data_free(d);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    const json_t *p = json_array_get(points, i);
    char f[64];
    if (!json_is_object(p)) {
      snprintf(f, sizeof f, "points[%zu]", i);
      free(tmp);
      fit_data_free(d);
      return td_err_set(err, TD_EINVAL, f, "%s must be an object", f);
    }
    const char *pk;
    const json_t *pv;
    json_object_foreach((json_t *)p, pk, pv) { /* an unknown key is an error, as at the top */
      int known = 0;
      for (int j = 0; j <= L->nf; j++) known |= strcmp(pk, L->fields[j]) == 0;
      if (!known) {
        snprintf(f, sizeof f, "points[%zu].%.40s", i, pk);
        free(tmp);
        fit_data_free(d);
        return td_err_set(err, TD_EINVAL, f, "%s is not a field of law %s (its points have %s%s%s%s%s)",
                          f, L->name, L->fields[0], ", ", L->fields[1],
                          L->nf == 2 ? ", " : "", L->nf == 2 ? L->fields[2] : "");
      }
    }
    for (int j = 0; j <= L->nf; j++) {
      const char *key = L->fields[j];
      const json_t *v = json_object_get(p, key);
      snprintf(f, sizeof f, "points[%zu].%s", i, key);
      double x = json_number_value(v);
      const char *why = !v ? "is required" : !json_is_number(v) ? "must be a number"
                        : !isfinite(x) ? "must be finite" : !(x > 0) ? "must be > 0 (the fit takes logs)" : NULL;
      if (why) {
        free(tmp);
        fit_data_free(d);
        return td_err_set(err, TD_EINVAL, f, "%s %s", f, why);
      }
      double lx = log(x);
      if (j == L->nf)
        d->ly[i] = lx;
      else if (j == 0)
        d->f1[i] = lx;
      else
        d->f2[i] = lx;
    }
    d->w[i] = 1;
  }
  d->wsum = (double)n;
  size_t k1 = count_distinct(d->f1, NULL, n, tmp);
  size_t k2 = d->f2 ? count_distinct(d->f2, NULL, n, tmp) : (size_t)L->min_distinct;
  free(tmp);
  if (k1 < (size_t)L->min_distinct || k2 < (size_t)L->min_distinct) {
    const char *fld = k1 < (size_t)L->min_distinct ? L->fields[0] : L->fields[1];
    fit_data_free(d);
    return td_err_set(err, TD_EINVAL, "points",
                      "%s needs at least %d distinct values of %s to identify its parameters",
                      L->name, L->min_distinct, fld);
  }
  return 0;
}

/* ---------------------------------------------------------------- the fit */

static json_t *jarray_of(const double *v, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++) json_array_append_new(a, jnum(v[i]));
  return a;
}

int td_fit_run(const char *law_name, const json_t *points, const td_fit_opts *opts,
               json_t **result, td_err *err) {
  *result = NULL;
  td_fit_opts o;
  if (opts)
    o = *opts;
  else
    td_fit_opts_default(&o);
  int law = td_fit_law_from_name(law_name);
  if (law < 0)
    return td_err_set(err, TD_EINVAL, "law",
                      "law must be \"power_offset\", \"chinchilla\" or \"critical_batch\"");
  if (o.resamples < 0 || o.resamples > 5000)
    return td_err_set(err, TD_EINVAL, "bootstrap", "bootstrap must be in [0, 5000]");
  if (o.curve_points < 2 || o.curve_points > 1000)
    return td_err_set(err, TD_EINVAL, "curve_points", "curve_points must be in [2, 1000]");
  fit_data d;
  int rc = load_points(law, points, &d, err);
  if (rc) return rc;
  const law_def *L = &laws[law];
  int np = L->np;
  double th[TD__FIT_MAX_P] = {0};
  double fbest = fit_from_grid(&d, th);
  if (!isfinite(fbest)) {
    fit_data_free(&d);
    return td_err_set(err, TD_ERANGE, "points", "the fit did not converge from any start");
  }

  /* Bootstrap: multinomial resampling as integer weights; refit from the optimum. */
  size_t R = (size_t)o.resamples, n = d.n, nc = (size_t)o.curve_points;
  double *boot = R ? malloc(R * TD__FIT_MAX_P * sizeof(double)) : NULL;
  double *tmp = malloc((R + n + 1) * sizeof(double));
  double *w0 = malloc(n * sizeof(double));
  if ((R && !boot) || !tmp || !w0) {
    free(boot);
    free(tmp);
    free(w0);
    fit_data_free(&d);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  memcpy(w0, d.w, n * sizeof(double));
  size_t ok = 0, failed = 0;
  for (size_t r = 0; r < R; r++) {
    td_rng rng; /* resample r is stream r of the seed: reproducible on its own */
    td_rng_init(&rng, o.seed, (uint64_t)r);
    memset(d.w, 0, n * sizeof(double));
    for (size_t i = 0; i < n; i++) d.w[td_rng_below(&rng, n)] += 1;
    size_t k1 = count_distinct(d.f1, d.w, n, tmp);
    size_t k2 = d.f2 ? count_distinct(d.f2, d.w, n, tmp) : (size_t)L->min_distinct;
    double *bt = &boot[ok * TD__FIT_MAX_P];
    memcpy(bt, th, sizeof(double) * TD__FIT_MAX_P);
    if (k1 < (size_t)L->min_distinct || k2 < (size_t)L->min_distinct || !isfinite(refine(&d, bt))) {
      failed++;
      continue;
    }
    ok++;
  }
  memcpy(d.w, w0, n * sizeof(double));
  d.wsum = (double)n;

  /* Result. */
  json_t *res = json_object();
  json_object_set_new(res, "law", json_string(L->name));
  json_object_set_new(res, "n_points", json_integer((json_int_t)n));
  json_object_set_new(res, "objective", jnum(fbest * TD__FIT_HUBER_DELTA));
  double nat[TD__FIT_MAX_NAT];
  const char *names[TD__FIT_MAX_NAT];
  int n_par = 0, n_nat = natural(law, th, nat, names, &n_par);
  double *bnat = ok ? malloc(ok * TD__FIT_MAX_NAT * sizeof(double)) : NULL;
  for (size_t r = 0; bnat && r < ok; r++) {
    const char *nm[TD__FIT_MAX_NAT];
    int dummy;
    natural(law, &boot[r * TD__FIT_MAX_P], &bnat[r * TD__FIT_MAX_NAT], nm, &dummy);
  }
  json_t *jp = json_object(), *jd = json_object();
  for (int i = 0; i < n_nat; i++) {
    json_t *e = json_object();
    json_object_set_new(e, "value", jnum(nat[i]));
    if (bnat) {
      double lo, hi;
      interval(bnat, ok, TD__FIT_MAX_NAT, (size_t)i, tmp, &lo, &hi);
      json_t *ci = json_array();
      json_array_append_new(ci, jnum(lo));
      json_array_append_new(ci, jnum(hi));
      json_object_set_new(e, "ci95", ci);
    } else {
      json_object_set_new(e, "ci95", json_null());
    }
    json_object_set_new(i < n_par ? jp : jd, names[i], e);
  }
  json_object_set_new(res, "params", jp);
  json_object_set_new(res, "derived", jd);

  /* Residuals. */
  double ss = 0, *resid = malloc(n * sizeof(double));
  double gscratch[TD__FIT_MAX_T * TD__FIT_MAX_P];
  for (size_t i = 0; resid && i < n; i++) {
    resid[i] = predict_log(law, th, d.f1[i], d.f2 ? d.f2[i] : 0, NULL, gscratch) - d.ly[i];
    ss += resid[i] * resid[i];
  }
  json_object_set_new(res, "residuals", resid ? jarray_of(resid, n) : json_array());
  json_object_set_new(res, "rmse_log", jnum(sqrt(ss / (double)n)));
  free(resid);

  /* Curve on a log grid with a pointwise bootstrap band. */
  double xlo = INFINITY, xhi = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    double x = law == TD_FIT_CHINCHILLA ? log(6.0) + d.f1[i] + d.f2[i] : d.f1[i];
    if (x < xlo) xlo = x;
    if (x > xhi) xhi = x;
  }
  xlo -= log(2.0);
  xhi += law == TD_FIT_CHINCHILLA ? log(10.0) : log(2.0);
  double *cx = malloc(nc * sizeof(double)), *cy = malloc(nc * sizeof(double));
  double *clo = malloc(nc * sizeof(double)), *chi = malloc(nc * sizeof(double));
  double *cn = malloc(nc * 3 * sizeof(double)), *cd = malloc(nc * 3 * sizeof(double));
  double *by = malloc((ok ? ok : 1) * 3 * sizeof(double));
  if (cx && cy && clo && chi && cn && cd && by) {
    for (size_t j = 0; j < nc; j++) {
      double x = exp(xlo + (xhi - xlo) * (double)j / (double)(nc - 1));
      cx[j] = x;
      cy[j] = curve_y(law, th, x, &cn[j], &cd[j]);
      for (size_t r = 0; r < ok; r++)
        by[r * 3] = curve_y(law, &boot[r * TD__FIT_MAX_P], x, &by[r * 3 + 1], &by[r * 3 + 2]);
      if (ok) {
        interval(by, ok, 3, 0, tmp, &clo[j], &chi[j]);
        interval(by, ok, 3, 1, tmp, &cn[nc + j], &cn[2 * nc + j]);
        interval(by, ok, 3, 2, tmp, &cd[nc + j], &cd[2 * nc + j]);
      } else {
        clo[j] = chi[j] = cn[nc + j] = cn[2 * nc + j] = cd[nc + j] = cd[2 * nc + j] = NAN;
      }
    }
    json_t *cv = json_object();
    json_object_set_new(cv, "x", jarray_of(cx, nc));
    json_object_set_new(cv, "y", jarray_of(cy, nc));
    json_object_set_new(cv, "lo", jarray_of(clo, nc));
    json_object_set_new(cv, "hi", jarray_of(chi, nc));
    json_object_set_new(res, "curve", cv);
    if (law == TD_FIT_CHINCHILLA) {
      json_t *co = json_object();
      json_object_set_new(co, "C", jarray_of(cx, nc));
      json_object_set_new(co, "N_opt", jarray_of(cn, nc));
      json_object_set_new(co, "N_opt_lo", jarray_of(cn + nc, nc));
      json_object_set_new(co, "N_opt_hi", jarray_of(cn + 2 * nc, nc));
      json_object_set_new(co, "D_opt", jarray_of(cd, nc));
      json_object_set_new(co, "D_opt_lo", jarray_of(cd + nc, nc));
      json_object_set_new(co, "D_opt_hi", jarray_of(cd + 2 * nc, nc));
      json_object_set_new(res, "compute_optimal", co);
    }
  }
  json_t *bs = json_object();
  json_object_set_new(bs, "resamples", json_integer((json_int_t)R));
  json_object_set_new(bs, "seed", json_integer((json_int_t)o.seed));
  json_object_set_new(bs, "failed", json_integer((json_int_t)failed));
  json_object_set_new(res, "bootstrap", bs);
  free(cx);
  free(cy);
  free(clo);
  free(chi);
  free(cn);
  free(cd);
  free(by);
  free(bnat);
  free(boot);
  free(tmp);
  free(w0);
  fit_data_free(&d);
  (void)np;
  *result = res;
  return 0;
}

/* ---------------------------------------------------------------- request forms */

static int opt_int(const json_t *obj, const char *key, const char *prefix, long lo, long hi,
                   long *out, td_err *err) {
  const json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) return 0;
  double x = json_number_value(v);
  char f[64];
  snprintf(f, sizeof f, "%s%s", prefix, key);
  if (!json_is_number(v) || !isfinite(x) || x != floor(x) || x < (double)lo || x > (double)hi)
    return td_err_set(err, TD_EINVAL, f, "%s must be an integer in [%ld, %ld]", f, lo, hi);
  *out = (long)x;
  return 0;
}

static int read_opts(const json_t *obj, const char *prefix, td_fit_opts *o, td_err *err) {
  td_fit_opts_default(o);
  long b = o->resamples, s = 0, c = o->curve_points;
  int rc;
  if ((rc = opt_int(obj, "bootstrap", prefix, 0, 5000, &b, err)) ||
      (rc = opt_int(obj, "seed", prefix, 0, 9007199254740991L, &s, err)) ||
      (rc = opt_int(obj, "curve_points", prefix, 2, 1000, &c, err)))
    return rc;
  o->resamples = (int)b;
  o->seed = (uint64_t)s;
  o->curve_points = (int)c;
  return 0;
}

int td_fit_request(const json_t *body, json_t **result, td_err *err) {
  *result = NULL;
  if (!json_is_object(body))
    return td_err_set(err, TD_EINVAL, "", "the body must be a JSON object {\"law\", \"points\"}");
  static const char *const keys[] = {"law", "points", "bootstrap", "seed", "curve_points"};
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)body, key, v) {
    int known = 0;
    for (size_t i = 0; i < 5; i++) known |= strcmp(key, keys[i]) == 0;
    if (!known) return td_err_set(err, TD_EINVAL, key, "unknown field '%.100s'", key);
  }
  const char *law = json_string_value(json_object_get(body, "law"));
  if (!law || td_fit_law_from_name(law) < 0)
    return td_err_set(err, TD_EINVAL, "law",
                      "law must be \"power_offset\", \"chinchilla\" or \"critical_batch\"");
  td_fit_opts o;
  int rc = read_opts(body, "", &o, err);
  if (rc) return rc;
  return td_fit_run(law, json_object_get(body, "points"), &o, result, err);
}

static int path_ok(const json_t *v) {
  const char *s = json_string_value(v);
  if (!s || json_string_length(v) > 128 || strlen(s) != json_string_length(v)) return 0;
  if (strncmp(s, "params.", 7) != 0 && strncmp(s, "summary.", 8) != 0) return 0;
  const char *rest = strchr(s, '.') + 1;
  return *rest != '\0';
}

int td_fit_spec_validate(const json_t *fit, json_t **normalized, td_err *err) {
  *normalized = NULL;
  if (!json_is_object(fit))
    return td_err_set(err, TD_EINVAL, "fit",
                      "fit must be an object like {\"law\": \"power_offset\", \"x\": "
                      "\"summary.n_params\", \"y\": \"summary.test_loss\"}");
  const char *law = json_string_value(json_object_get(fit, "law"));
  int li = law ? td_fit_law_from_name(law) : -1;
  if (li < 0)
    return td_err_set(err, TD_EINVAL, "fit.law",
                      "fit.law must be \"power_offset\", \"chinchilla\" or \"critical_batch\"");
  static const char *const k1[] = {"x", "y"}, *const k2[] = {"N", "D", "L"};
  const char *const *pk = li == TD_FIT_CHINCHILLA ? k2 : k1;
  size_t npk = li == TD_FIT_CHINCHILLA ? 3 : 2;
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)fit, key, v) {
    int known = strcmp(key, "law") == 0 || strcmp(key, "bootstrap") == 0 ||
                strcmp(key, "seed") == 0 || strcmp(key, "curve_points") == 0;
    for (size_t i = 0; i < npk; i++) known |= strcmp(key, pk[i]) == 0;
    if (!known)
      return td_err_set(err, TD_EINVAL, "fit", "unknown field fit.%.64s for law %s", key, law);
  }
  for (size_t i = 0; i < npk; i++) {
    char f[16];
    snprintf(f, sizeof f, "fit.%s", pk[i]);
    if (!path_ok(json_object_get(fit, pk[i])))
      return td_err_set(err, TD_EINVAL, f,
                        "%s must be a path like \"summary.test_loss\" or \"params.batch_size\"",
                        f);
  }
  td_fit_opts o;
  int rc = read_opts(fit, "fit.", &o, err);
  if (rc) return rc;
  json_t *n = json_object();
  json_object_set_new(n, "law", json_string(law));
  for (size_t i = 0; i < npk; i++)
    json_object_set_new(n, pk[i], json_string(json_string_value(json_object_get(fit, pk[i]))));
  json_object_set_new(n, "bootstrap", json_integer(o.resamples));
  json_object_set_new(n, "seed", json_integer((json_int_t)o.seed));
  json_object_set_new(n, "curve_points", json_integer(o.curve_points));
  *normalized = n;
  return 0;
}

int td_fit_sweep(const json_t *fit_spec, const json_t *children, json_t **result, td_err *err) {
  *result = NULL;
  json_t *spec = NULL;
  int rc = td_fit_spec_validate(fit_spec, &spec, err);
  if (rc) return rc;
  const char *law = json_string_value(json_object_get(spec, "law"));
  int li = td_fit_law_from_name(law);
  static const char *const k1[] = {"x", "y"}, *const k2[] = {"N", "D", "L"};
  const char *const *pk = li == TD_FIT_CHINCHILLA ? k2 : k1;
  const char *const *dst = li == TD_FIT_CHINCHILLA ? k2 : laws[li].fields;
  size_t npk = li == TD_FIT_CHINCHILLA ? 3 : 2;
  json_t *points = json_array();
  size_t skipped = 0;
  for (size_t i = 0; i < json_array_size(children); i++) {
    const json_t *c = json_array_get(children, i);
    json_t *p = json_object();
    int good = 1;
    for (size_t j = 0; j < npk && good; j++) {
      const json_t *v = td_param_get(c, json_string_value(json_object_get(spec, pk[j])));
      double x = json_number_value(v);
      good = json_is_number(v) && isfinite(x) && x > 0;
      if (good) json_object_set_new(p, dst[j], json_real(x));
    }
    if (good)
      json_array_append_new(points, p);
    else {
      json_decref(p);
      skipped++;
    }
  }
  td_fit_opts o;
  read_opts(spec, "", &o, NULL);
  rc = td_fit_run(law, points, &o, result, err);
  if (rc) {
    if (err) {
      char msg[sizeof err->msg + 80];
      snprintf(msg, sizeof msg, "%s (%zu of %zu children had usable values)", err->msg,
               json_array_size(points), json_array_size(children));
      td_err_set(err, rc, "fit", "%.380s", msg);
    }
  } else {
    json_object_set_new(*result, "skipped", json_integer((json_int_t)skipped));
  }
  json_decref(points);
  json_decref(spec);
  return rc;
}
