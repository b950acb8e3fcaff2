/* momentum.c: the `momentum` experiment kind: GD, heavy ball and Nesterov on a quadratic with a
 * given spectrum as linear dynamical systems, predicted against observed rates, stability
 * regions and the classical optimal parameters (chapter 9). Closed form: no trainer.
 *
 * Semantics (also in the schema docs):
 *  - The problem is f(x) = 1/2 sum_i lambda_i x_i^2 with the curvatures `spectrum`, or, when
 *    absent, n curvatures from L down to mu = L/kappa by `decay`: geometric
 *    lambda_i = L kappa^(-i/(n-1)), linear (evenly spaced) or inverse
 *    lambda_i = L / (1 + (kappa - 1) i/(n-1)). x_0 = init in every coordinate, x_{-1} = x_0.
 *  - The method runs the recursion of games/momentum.h for `steps` updates. Step t is the
 *    state after t updates: metrics loss = f(x_t) and dist = ||x_t|| at 0, every log_every
 *    steps and at the last step.
 *  - tuning "optimal" replaces lr (and momentum) by the classical choice for the spectrum's
 *    [mu, L]: gd 2/(L + mu) (rate (kappa - 1)/(kappa + 1)); heavy_ball Polyak's; nesterov
 *    1/L with (sqrt kappa - 1)/(sqrt kappa + 1). tuning "lrp" (nesterov only) uses
 *    4/(3L + mu) of Lessard, Recht and Packard 2016.
 *  - Artifact modes.json: for each curvature the 2x2 iteration matrix, its eigenvalues,
 *    spectral radius rho, damping ("over", "critical", "under") and the observed rate of
 *    that mode: (env(T) / env(T/2))^(1/(T - T/2)), env(k) the largest |(x_k, x_{k-1})| over
 *    the window of max(1, T/10) steps ending at k (the window spans the oscillation of an
 *    under-damped mode); T is cut where the mode fell below 1e-250 of its start.
 *  - Artifact stability_region.json: rho over a (lr, momentum) grid at curvature
 *    grid.lambda for heavy_ball and nesterov (momentum 0 is gd), and the analytic boundaries
 *    lr*(beta): gd 2/lambda, heavy ball (2 + 2 beta)/lambda, Nesterov
 *    (2 + 2 beta)/((1 + 2 beta) lambda).
 *  - Artifact tuned.json and summary.tuned: for [mu, L] the Polyak, Nesterov and LRP
 *    parameters with the rate each source states, the worst rho over the spectrum, and the
 *    observed rate of the whole vector (same estimator as the modes) when run.
 *  - Summary: predicted_rate (worst rho over the spectrum), observed_rate (same estimator on
 *    ||(x_t, x_{t-1})||), lr, momentum, method, mu, L, kappa, thresholds at (lr, momentum),
 *    stable, n_over, n_under, n_critical. An unstable run (rho > 1) is a result: the kind
 *    does not apply the divergence rule; it stops early when the state leaves 1e250. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "games/momentum.h"
#include "kinds/registry.h"

static const td_param mom_params[] = {
    {"spectrum", TD_PT_NUM_LIST, NULL, 1e-12, 1e12, NULL, 10000,
     "curvatures lambda_i of the quadratic (absent: n values from L to L/kappa by decay)"},
    {"n", TD_PT_INT, "20", 1, 10000, NULL, 0, "number of curvatures when spectrum is absent"},
    {"L", TD_PT_NUM, "1", 1e-12, 1e12, NULL, 0, "largest curvature when spectrum is absent"},
    {"kappa", TD_PT_NUM, "100", 1, 1e12, NULL, 0,
     "condition number L/mu when spectrum is absent"},
    {"decay", TD_PT_STR, "\"geometric\"", 0, 0, "geometric|linear|inverse", 0,
     "how the curvatures fall from L to L/kappa"},
    {"method", TD_PT_STR, "\"heavy_ball\"", 0, 0, "gd|heavy_ball|nesterov", 0,
     "gd x' = x - lr g; heavy_ball adds beta (x - x_prev); nesterov takes the gradient at "
     "x + beta (x - x_prev)"},
    {"tuning", TD_PT_STR, "\"manual\"", 0, 0, "manual|optimal|lrp", 0,
     "manual: lr and momentum as given; optimal: Polyak (heavy_ball), 1/L with "
     "(sqrt k - 1)/(sqrt k + 1) (nesterov), 2/(L + mu) (gd); lrp: nesterov with 4/(3L + mu)"},
    {"lr", TD_PT_NUM, "1", 1e-12, 1e12, NULL, 0, "step size (tuning manual)"},
    {"momentum", TD_PT_NUM, "0.5", 0, 0.9999, NULL, 0, "beta (tuning manual; gd must have 0)"},
    {"steps", TD_PT_INT, "200", 2, 1e6, NULL, 0, "updates T (metrics at steps 0..T)"},
    {"init", TD_PT_NUM, "1", -1e6, 1e6, NULL, 0, "x_0 in every coordinate (nonzero)"},
    {"log_every", TD_PT_INT, "1", 1, 1e6, NULL, 0, "steps between logged points"},
    {"grid.lambda", TD_PT_NUM, "1", 1e-12, 1e12, NULL, 0,
     "curvature of the stability-region grid"},
    {"grid.n_lr", TD_PT_INT, "81", 2, 401, NULL, 0, "grid points in lr, (0, 4.4/lambda]"},
    {"grid.n_momentum", TD_PT_INT, "41", 2, 401, NULL, 0, "grid points in momentum, [0, 0.99]"},
};

static const char *damp_name(td_damping d) {
  return d == TD_DAMP_OVER ? "over" : d == TD_DAMP_UNDER ? "under" : "critical";
}

/* The curvatures (malloc'ed, *n OUT). */
static double *spectrum(const json_t *p, int *n) {
  const json_t *s = td_param_get(p, "spectrum");
  if (s) {
    *n = (int)json_array_size(s);
    double *v = malloc((size_t)*n * sizeof *v);
    for (int i = 0; v && i < *n; i++) v[i] = json_number_value(json_array_get(s, (size_t)i));
    return v;
  }
  *n = (int)td_param_int(p, "n", 20);
  double L = td_param_num(p, "L", 1), k = td_param_num(p, "kappa", 100);
  const char *d = td_param_str(p, "decay", "geometric");
  double *v = malloc((size_t)*n * sizeof *v);
  for (int i = 0; v && i < *n; i++) {
    double u = *n > 1 ? (double)i / (double)(*n - 1) : 0.0;
    if (strcmp(d, "linear") == 0) v[i] = L - (L - L / k) * u;
    else if (strcmp(d, "inverse") == 0) v[i] = L / (1.0 + (k - 1.0) * u);
    else v[i] = L * pow(k, -u);
  }
  return v;
}

static int mom_check(const json_t *p, td_estimate *est, td_err *err) {
  td_mom_method m;
  td_mom_parse(td_param_str(p, "method", "heavy_ball"), &m);
  const char *tun = td_param_str(p, "tuning", "manual");
  if (m == TD_MOM_GD && strcmp(tun, "manual") == 0 && td_param_num(p, "momentum", 0) != 0)
    return td_err_set(err, TD_EINVAL, "params.momentum",
                      "params.momentum must be 0 for method gd");
  if (strcmp(tun, "lrp") == 0 && m != TD_MOM_NESTEROV)
    return td_err_set(err, TD_EINVAL, "params.tuning",
                      "tuning \"lrp\" (Lessard, Recht and Packard 2016) is for method nesterov");
  if (td_param_num(p, "init", 1) == 0)
    return td_err_set(err, TD_EINVAL, "params.init", "params.init must be nonzero");
  double n = td_param_has(p, "spectrum") ? (double)json_array_size(td_param_get(p, "spectrum"))
                                          : (double)td_param_int(p, "n", 20);
  double steps = (double)td_param_int(p, "steps", 200);
  double g = (double)td_param_int(p, "grid.n_lr", 81) * (double)td_param_int(p, "grid.n_momentum", 41);
  /* per-mode norms of the run and of one tuned run at a time: 2 n (T + 1) doubles */
  est->bytes = 8.0 * (2 * n * (steps + 1) + 8 * n + 2 * g + 4 * (steps + 1)) + 65536;
  est->n_params = 0;
  return 0;
}

/* Envelope-ratio rate of a sequence of state norms r[0..T]: see the file comment. */
static double env_rate(const double *r, long T) {
  double r0 = r[0];
  long Te = T;
  for (long k = 1; k <= T; k++)
    if (!(r[k] > 1e-250 * r0) || !isfinite(r[k])) {
      Te = k - 1;
      break;
    }
  if (Te < 2) return NAN;
  long T0 = Te / 2, w = Te / 10 > 1 ? Te / 10 : 1;
  double e1 = 0, e0 = 0;
  for (long k = Te - w + 1; k <= Te; k++) e1 = fmax(e1, r[k]);
  for (long k = T0 - w + 1; k <= T0; k++)
    if (k >= 0) e0 = fmax(e0, r[k]);
  return pow(e1 / e0, 1.0 / (double)(Te - T0));
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static int emit_json(td_sink *sink, const char *name, json_t *o) {
  char *txt = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!txt) return TD_ENOMEM;
  td_sink_artifact(sink, name, "application/json", txt, strlen(txt));
  free(txt);
  return 0;
}

/* The stability-region grid at curvature lam. */
static json_t *grid_json(double lam, int nl, int nb) {
  json_t *o = json_object(), *lrs = json_array(), *bs = json_array();
  json_t *hb = json_array(), *ne = json_array();
  json_t *bhb = json_array(), *bne = json_array();
  double lr_max = 4.4 / lam;
  for (int i = 0; i < nl; i++) json_array_append_new(lrs, json_real(lr_max * (i + 1) / nl));
  for (int j = 0; j < nb; j++) {
    double b = 0.99 * j / (nb - 1);
    json_array_append_new(bs, json_real(b));
    json_t *rh = json_array(), *rn = json_array();
    for (int i = 0; i < nl; i++) {
      double lr = lr_max * (i + 1) / nl;
      json_array_append_new(rh, json_real(td_mom_rho(TD_MOM_HEAVY_BALL, lr, b, lam)));
      json_array_append_new(rn, json_real(td_mom_rho(TD_MOM_NESTEROV, lr, b, lam)));
    }
    json_array_append_new(hb, rh);
    json_array_append_new(ne, rn);
    json_array_append_new(bhb, json_real(td_mom_lr_threshold(TD_MOM_HEAVY_BALL, b, lam)));
    json_array_append_new(bne, json_real(td_mom_lr_threshold(TD_MOM_NESTEROV, b, lam)));
  }
  json_object_set_new(o, "lambda", json_real(lam));
  json_object_set_new(o, "lr", lrs);
  json_object_set_new(o, "momentum", bs);
  json_object_set_new(o, "rho_heavy_ball", hb);
  json_object_set_new(o, "rho_nesterov", ne);
  json_t *bd = json_object();
  json_object_set_new(bd, "gd", json_real(td_mom_lr_threshold(TD_MOM_GD, 0, lam)));
  json_object_set_new(bd, "heavy_ball", bhb);
  json_object_set_new(bd, "nesterov", bne);
  json_object_set_new(o, "boundary_lr", bd);
  json_object_set_new(o, "doc", json_string(
      "rho_*[j][i]: spectral radius at momentum[j], lr[i]; boundary_lr.*[j]: the largest "
      "stable lr at momentum[j] (gd: 2/lambda, heavy_ball: (2+2b)/lambda, nesterov: "
      "(2+2b)/((1+2b) lambda))"));
  return o;
}

/* Runs the recursion on every mode; r[k] = ||(x_k, x_{k-1})|| of the full vector, per-mode
 * norms in rm[i*(T+1) + k]. Stops early (returns the last step) when the state leaves 1e250
 * or on cancellation (*cancelled). */
static long simulate(const double *lam, int n, const double *M, double x0, long T, double *r,
                     double *rm, double *loss, td_sink *sink, int *cancelled) {
  double *x = malloc((size_t)n * 2 * sizeof *x), *xp = x + n;
  for (int i = 0; i < n; i++) x[i] = xp[i] = x0;
  long t;
  for (t = 0; t <= T; t++) {
    double s = 0, l = 0;
    for (int i = 0; i < n; i++) {
      double ri = hypot(x[i], xp[i]);
      rm[(size_t)i * (size_t)(T + 1) + (size_t)t] = ri;
      s += ri * ri;
      l += 0.5 * lam[i] * x[i] * x[i];
    }
    r[t] = sqrt(s);
    loss[t] = l;
    if (t == T || !(r[t] < 1e250)) break;
    if (td_sink_should_stop(sink)) {
      *cancelled = 1;
      break;
    }
    for (int i = 0; i < n; i++) {
      const double *Mi = M + 4 * i;
      double nx = Mi[0] * x[i] + Mi[1] * xp[i];
      xp[i] = x[i];
      x[i] = nx;
    }
  }
  free(x);
  return t > T ? T : t;
}

static int mom_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  td_estimate est;
  int rc = mom_check(p, &est, err);
  if (rc) return rc;
  int n;
  double *lam = spectrum(p, &n);
  if (!lam) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  double mu = lam[0], L = lam[0];
  for (int i = 1; i < n; i++) {
    mu = fmin(mu, lam[i]);
    L = fmax(L, lam[i]);
  }
  td_mom_method m;
  td_mom_parse(td_param_str(p, "method", "heavy_ball"), &m);
  const char *tun = td_param_str(p, "tuning", "manual");
  double lr = td_param_num(p, "lr", 1), beta = m == TD_MOM_GD ? 0 : td_param_num(p, "momentum", 0.5);
  double stated = NAN;
  if (strcmp(tun, "optimal") == 0) {
    td_mom_tuned tt = m == TD_MOM_GD ? (td_mom_tuned){2.0 / (L + mu), 0, (L - mu) / (L + mu)}
                      : m == TD_MOM_HEAVY_BALL ? td_mom_polyak(mu, L)
                                               : td_mom_nesterov_std(mu, L);
    lr = tt.lr;
    beta = tt.beta;
    stated = tt.rate;
  } else if (strcmp(tun, "lrp") == 0) {
    td_mom_tuned tt = td_mom_nesterov_lrp(mu, L);
    lr = tt.lr;
    beta = tt.beta;
    stated = tt.rate;
  }
  long T = td_param_int(p, "steps", 200), every = td_param_int(p, "log_every", 1);
  double x0 = td_param_num(p, "init", 1);
  double *M = malloc((size_t)n * 4 * sizeof *M);
  double *r = malloc((size_t)(T + 1) * 2 * sizeof *r), *loss = r ? r + T + 1 : NULL;
  double *rm = malloc((size_t)n * (size_t)(T + 1) * sizeof *rm);
  if (!M || !r || !rm) {
    free(lam);
    free(M);
    free(r);
    free(rm);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  json_t *modes = json_array();
  double worst = 0;
  int cnt[3] = {0, 0, 0};
  td_mom_mode *md = malloc((size_t)n * sizeof *md);
  for (int i = 0; md && i < n; i++) {
    td_mom_analyze(m, lr, beta, lam[i], &md[i]);
    memcpy(M + 4 * i, md[i].M, sizeof md[i].M);
    worst = fmax(worst, md[i].rho);
    cnt[md[i].damping]++;
  }
  int cancelled = 0;
  long Tend = md ? simulate(lam, n, M, x0, T, r, rm, loss, sink, &cancelled) : 0;
  for (long t = 0; md && t <= Tend; t++)
    if (t % every == 0 || t == Tend) {
      td_sink_metric(sink, "loss", t, loss[t]);
      td_sink_metric(sink, "dist", t, r[t]);
    }
  td_sink_progress(sink, Tend, T);
  for (int i = 0; md && i < n; i++) {
    json_t *o = json_object(), *Mj = json_array(), *er = json_array(), *ei = json_array();
    for (int k = 0; k < 4; k++) json_array_append_new(Mj, json_real(md[i].M[k]));
    for (int k = 0; k < 2; k++) {
      json_array_append_new(er, json_real(md[i].eig_re[k]));
      json_array_append_new(ei, json_real(md[i].eig_im[k]));
    }
    json_object_set_new(o, "lambda", json_real(lam[i]));
    json_object_set_new(o, "matrix", Mj);
    json_object_set_new(o, "eig_re", er);
    json_object_set_new(o, "eig_im", ei);
    json_object_set_new(o, "rho", json_real(md[i].rho));
    json_object_set_new(o, "damping", json_string(damp_name(md[i].damping)));
    json_object_set_new(o, "observed_rate",
                        jnum(env_rate(rm + (size_t)i * (size_t)(T + 1), Tend)));
    json_array_append_new(modes, o);
  }
  json_t *ma = json_object();
  json_object_set_new(ma, "method", json_string(td_mom_name(m)));
  json_object_set_new(ma, "lr", json_real(lr));
  json_object_set_new(ma, "momentum", json_real(beta));
  json_object_set_new(ma, "modes", modes);
  if (md) rc = emit_json(sink, "modes.json", ma);
  else json_decref(ma);
  if (!rc && md)
    rc = emit_json(sink, "stability_region.json",
                   grid_json(td_param_num(p, "grid.lambda", 1),
                             (int)td_param_int(p, "grid.n_lr", 81),
                             (int)td_param_int(p, "grid.n_momentum", 41)));
  /* The classical choices for [mu, L], each run on this spectrum for the observed rate. */
  json_t *tuned = json_array();
  for (int k = 0; md && !rc && k < 4; k++) {
    td_mom_method km = k == 0 ? TD_MOM_GD : k == 1 ? TD_MOM_HEAVY_BALL : TD_MOM_NESTEROV;
    td_mom_tuned tt = k == 0   ? (td_mom_tuned){2.0 / (L + mu), 0, (L - mu) / (L + mu)}
                      : k == 1 ? td_mom_polyak(mu, L)
                      : k == 2 ? td_mom_nesterov_std(mu, L)
                               : td_mom_nesterov_lrp(mu, L);
    const char *nm[] = {"gd_2_over_L_plus_mu", "polyak_heavy_ball", "nesterov_1_over_L",
                        "nesterov_lrp_4_over_3L_plus_mu"};
    double *Mk = malloc((size_t)n * 4 * sizeof *Mk);
    double *rk = malloc((size_t)(T + 1) * 2 * sizeof *rk);
    double *rmk = malloc((size_t)n * (size_t)(T + 1) * sizeof *rmk);
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(nm[k]));
    json_object_set_new(o, "method", json_string(td_mom_name(km)));
    json_object_set_new(o, "lr", json_real(tt.lr));
    json_object_set_new(o, "momentum", json_real(tt.beta));
    json_object_set_new(o, "stated_rate", json_real(tt.rate));
    if (Mk && rk && rmk) {
      for (int i = 0; i < n; i++) td_mom_matrix(km, tt.lr, tt.beta, lam[i], Mk + 4 * i);
      int c2 = 0;
      long Tk = simulate(lam, n, Mk, x0, T, rk, rmk, rk + T + 1, NULL, &c2);
      json_object_set_new(o, "worst_rho", json_real(td_mom_worst_rho(km, tt.lr, tt.beta, lam, n)));
      json_object_set_new(o, "observed_rate", jnum(env_rate(rk, Tk)));
    }
    free(Mk);
    free(rk);
    free(rmk);
    json_array_append_new(tuned, o);
  }
  if (!rc) rc = emit_json(sink, "tuned.json", json_incref(tuned));

  json_t *s = json_object();
  json_object_set_new(s, "method", json_string(td_mom_name(m)));
  json_object_set_new(s, "tuning", json_string(tun));
  json_object_set_new(s, "lr", json_real(lr));
  json_object_set_new(s, "momentum", json_real(beta));
  json_object_set_new(s, "mu", json_real(mu));
  json_object_set_new(s, "L", json_real(L));
  json_object_set_new(s, "kappa", json_real(L / mu));
  json_object_set_new(s, "predicted_rate", json_real(worst));
  json_object_set_new(s, "stated_rate", jnum(stated));
  json_object_set_new(s, "observed_rate", jnum(md ? env_rate(r, Tend) : NAN));
  json_object_set_new(s, "stable", json_boolean(worst < 1));
  json_object_set_new(s, "threshold_gd", json_real(td_mom_threshold(TD_MOM_GD, lr, 0)));
  json_object_set_new(s, "threshold_heavy_ball",
                      json_real(td_mom_threshold(TD_MOM_HEAVY_BALL, lr, beta)));
  json_object_set_new(s, "threshold_nesterov",
                      json_real(td_mom_threshold(TD_MOM_NESTEROV, lr, beta)));
  json_object_set_new(s, "n_over", json_integer(cnt[TD_DAMP_OVER]));
  json_object_set_new(s, "n_critical", json_integer(cnt[TD_DAMP_CRITICAL]));
  json_object_set_new(s, "n_under", json_integer(cnt[TD_DAMP_UNDER]));
  json_object_set_new(s, "final_step", json_integer(Tend));
  json_object_set_new(s, "final_loss", jnum(md ? loss[Tend] : NAN));
  json_object_set_new(s, "tuned", tuned);
  free(md);
  free(lam);
  free(M);
  free(r);
  free(rm);
  if (!md && !rc) rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  if (rc) {
    json_decref(s);
    return rc;
  }
  *summary = s;
  if (cancelled) return td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", Tend);
  return 0;
}

const td_kind td_kind_momentum = {
    .name = "momentum",
    .doc = "GD, heavy ball and Nesterov on a quadratic as linear systems: per-curvature "
           "iteration matrices, damping, predicted vs observed rates, stability regions, "
           "Polyak / Nesterov / Lessard-Recht-Packard parameters",
    .chapter = "9",
    .params = mom_params,
    .n_params = sizeof mom_params / sizeof mom_params[0],
    .check = mom_check,
    .run = mom_run,
};
