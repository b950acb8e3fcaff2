/* igr.c: the `igr` kind: implicit gradient regularization. Gradient descent with step eta,
 * gradient flow on L and gradient flow on the modified loss L + (eta/4) ||grad L||^2, from the
 * same start, over a sweep of eta; the distances GD-to-flow (order eta) and GD-to-modified-flow
 * (order eta^2) and their log-log slopes (chapter 8).
 *
 * Theory (Barrett and Dherin 2021, "Implicit gradient regularization", ICLR, Theorem 3.1;
 * Smith, Dherin, Barrett and De 2021 for SGD): the GD iterate theta_k stays within O(eta^2)
 * of the flow theta'(t) = -grad L~(theta), L~ = L + (eta/4) ||grad L||^2, whose vector field
 * is -(grad L + (eta/2) H grad L), at t = k eta over a fixed time horizon, and within O(eta) of
 * the plain flow theta'(t) = -grad L(theta) (backward error analysis: one GD step matches
 * the flow of L to first order only; Hairer, Lubich and Wanner, "Geometric Numerical
 * Integration", ch. IX). So at a fixed time T the distances scale like eta and eta^2, and the
 * slopes of log distance against log eta are 1 and 2.
 *
 * Integrator: GSL's gsl_odeiv2 driver with the embedded Runge-Kutta Prince-Dormand (8, 9)
 * stepper (gsl_odeiv2_step_rk8pd; adaptive step control with absolute and relative
 * tolerance ode_tol, default 1e-10, per component: GSL manual, "Ordinary Differential
 * Equations"), advanced from k eta to (k + 1) eta along the GD steps so that both flows are
 * compared at every step. Its error (about ode_tol times the trajectory scale) must stay far
 * below the smallest distance measured, C eta_min^2.
 *
 * Problems:
 *   2d:  L(a, b) = 1/2 (a b - 1)^2 (the scalar "two-layer linear" model of Barrett and Dherin's
 *        sec. 4, with one example x = y = 1), from (a, b) = start; gradient and Hessian in
 *        closed form. The trajectories are an artifact the dashboard draws.
 *   mlp: the problem rows (default Fashion-MNIST, 500 examples, 784-32-10, tanh, mse); the
 *        full-batch gradient by backprop and H grad L by Pearlmutter's R-operator (curv.h),
 *        both exact. Not trained by the trainer: one job runs one GD and two ODE solves per
 *        eta on the same start, which is not the trainer's single training loop.
 * Metrics (i = index of eta in lrs): dist_flow/i, dist_mod/i (at every GD step k; time k eta),
 * loss_gd/i. Summary: the distances at time T per eta and the fitted slopes. Artifact
 * igr.json: etas, distances, slopes, and (2d) the three trajectories per eta. */
#include <gsl/gsl_errno.h>
#include <gsl/gsl_odeiv2.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "curv/curv.h"
#include "kinds/registry.h"
#include "train/trainer.h"

#define IGR_MAX_ETAS 12
#define IGR_MAX_STEPS 20000

static const td_param igr_params[] = {
    {"problem", TD_PT_STR, "\"2d\"", 0, 0, "2d|mlp", 0,
     "2d: L(a, b) = 1/2 (a b - 1)^2; mlp: the network and data of the rows below"},
    {"start", TD_PT_NUM_LIST, "[2.5, 0.1]", -100, 100, NULL, 2, "2d: the start (a, b)"},
    {"lrs", TD_PT_NUM_LIST, "[0.01, 0.02, 0.04, 0.08]", 1e-6, 10, NULL, IGR_MAX_ETAS,
     "the sweep of GD step sizes eta (each below 2 / sharpness: the default mlp problem starts "
     "at a sharpness of about 167, so e.g. [0.001, 0.002, 0.004, 0.008] with time 0.4)"},
    {"time", TD_PT_NUM, "2", 1e-6, 1e4, NULL, 0,
     "flow time T: GD runs round(T / eta) steps for each eta"},
    {"ode_tol", TD_PT_NUM, "1e-10", 1e-14, 1e-3, NULL, 0,
     "absolute and relative tolerance of the rk8pd integrator (gsl_odeiv2)"},
    TD_TRAINER_PROBLEM_PARAMS("500", "100", "[32]", "\"tanh\"", "\"mse\""),
};

typedef struct igr_ctx {
  int two_d;
  double eta;    /* the current sweep value */
  int modified;  /* the field of the modified loss */
  td_curv_ctx *c;
  size_t n;
  double *g;     /* scratch: gradient copy */
  int failed;
} igr_ctx;

/* 2d: gradient and Hessian-gradient product of L = 1/2 (ab - 1)^2 */
static void f2d(const double *x, double *g, double *hg) {
  const double a = x[0], b = x[1], r = a * b - 1;
  g[0] = r * b;
  g[1] = r * a;
  /* H = [[b^2, 2ab - 1], [2ab - 1, a^2]] */
  hg[0] = b * b * g[0] + (2 * a * b - 1) * g[1];
  hg[1] = (2 * a * b - 1) * g[0] + a * a * g[1];
}

static double loss2d(const double *x) {
  const double r = x[0] * x[1] - 1;
  return 0.5 * r * r;
}

/* grad (and, if hg, H grad) of the MLP loss at x. */
static int fmlp(igr_ctx *s, const double *x, double *g, double *hg) {
  td_err err;
  if (td_curv_set_point(s->c, x, &err)) return -1;
  memcpy(g, td_curv_grad(s->c), s->n * sizeof *g);
  if (hg) td_curv_hvp(s->c, g, hg);
  return 0;
}

static int ode_f(double t, const double y[], double f[], void *params) {
  (void)t;
  igr_ctx *s = params;
  if (s->two_d) {
    double g[2], hg[2];
    f2d(y, g, hg);
    for (int i = 0; i < 2; i++) f[i] = -(g[i] + (s->modified ? 0.5 * s->eta * hg[i] : 0.0));
    return GSL_SUCCESS;
  }
  if (fmlp(s, y, s->g, s->modified ? f : NULL)) {
    s->failed = 1;
    return GSL_EBADFUNC;
  }
  for (size_t i = 0; i < s->n; i++)
    f[i] = -(s->g[i] + (s->modified ? 0.5 * s->eta * f[i] : 0.0));
  return GSL_SUCCESS;
}

static double dist(const double *a, const double *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
  return sqrt(s);
}

/* least-squares slope of log y against log x */
static double loglog_slope(const double *x, const double *y, int n) {
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  int m = 0;
  for (int i = 0; i < n; i++) {
    if (!(x[i] > 0 && y[i] > 0)) continue;
    const double lx = log(x[i]), ly = log(y[i]);
    sx += lx;
    sy += ly;
    sxx += lx * lx;
    sxy += lx * ly;
    m++;
  }
  if (m < 2) return NAN;
  return (m * sxy - sx * sy) / (m * sxx - sx * sx);
}

static int igr_check(const json_t *p, td_estimate *est, td_err *err) {
  const json_t *lrs = td_param_get(p, "lrs");
  const double T = td_param_num(p, "time", 2);
  for (size_t i = 0; i < json_array_size(lrs); i++) {
    const double eta = json_number_value(json_array_get(lrs, i));
    if (T / eta > IGR_MAX_STEPS)
      return td_err_set(err, TD_EINVAL, "params.lrs",
                        "time / lrs[%zu] = %g GD steps, above the cap of %d", i, T / eta,
                        IGR_MAX_STEPS);
    if (T / eta < 1)
      return td_err_set(err, TD_EINVAL, "params.lrs", "lrs[%zu] exceeds time: no GD step", i);
  }
  est->n_params = 2;
  est->bytes = 1e6;
  if (strcmp(td_param_str(p, "problem", "2d"), "mlp") == 0) {
    td_problem_cfg pb;
    int rc = td_trainer_parse_problem(p, 500, 100, 0, &pb, err);
    if (rc) return rc;
    double np = 0, cb = 0, ws = 0;
    if ((rc = td_mlp_estimate(&pb.mlp, (int)pb.n_train, &np, &ws, err))) return rc;
    if ((rc = td_curv_estimate(&pb.mlp, (int)pb.n_train, &cb, err))) return rc;
    est->n_params = np;
    est->bytes = cb + ws + td_trainer_data_bytes(&pb) + 8.0 * np * 40; /* rk8pd: 13 stages x 3 */
  }
  return 0;
}

static int igr_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  const int two_d = strcmp(td_param_str(params, "problem", "2d"), "2d") == 0;
  const json_t *jl = td_param_get(params, "lrs");
  const int ne = (int)json_array_size(jl);
  const double T = td_param_num(params, "time", 2), tol = td_param_num(params, "ode_tol", 1e-10);
  double etas[IGR_MAX_ETAS], dflow[IGR_MAX_ETAS] = {0}, dmod[IGR_MAX_ETAS] = {0};
  for (int i = 0; i < ne; i++) etas[i] = json_number_value(json_array_get(jl, (size_t)i));
  td_problem_cfg pb;
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  td_mlp *m = NULL;
  td_curv_ctx c;
  memset(&c, 0, sizeof c);
  double *x0 = NULL, *xg = NULL, *yf = NULL, *ym = NULL, *g = NULL, *scratch = NULL;
  gsl_odeiv2_driver *df = NULL, *dm = NULL;
  json_t *art = json_object(), *trajs = json_array();
  int rc = 0;
  size_t n = 2;
  if (!two_d) {
    if ((rc = td_trainer_parse_problem(params, 500, 100, 0, &pb, err))) goto out;
    if ((rc = td_trainer_load(&pb, &tr, &te, err))) goto out;
    if ((rc = td_mlp_create(&pb.mlp, &m, err))) goto out;
    td_mlp_init(m, pb.seed);
    n = m->n_params;
    if ((rc = td_curv_init(&c, m, (int)tr.n, err))) goto out;
    if ((rc = td_curv_set_batch(&c, tr.X, tr.y, tr.Y, (int)tr.n, pb.loss, err))) goto out;
  }
  x0 = malloc(n * sizeof *x0);
  xg = malloc(n * sizeof *xg);
  yf = malloc(n * sizeof *yf);
  ym = malloc(n * sizeof *ym);
  g = malloc(n * sizeof *g);
  scratch = malloc(n * sizeof *scratch);
  if (!x0 || !xg || !yf || !ym || !g || !scratch || !art || !trajs) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "igr: out of memory");
    goto out;
  }
  if (two_d) {
    x0[0] = td_param_num(params, "start[0]", 2.5);
    x0[1] = td_param_num(params, "start[1]", 0.1);
  } else {
    memcpy(x0, m->params, n * sizeof *x0);
  }
  gsl_set_error_handler_off();
  long total = 0, done = 0;
  for (int i = 0; i < ne; i++) total += lround(T / etas[i]);
  for (int i = 0; i < ne; i++) {
    const double eta = etas[i];
    const long K = lround(T / eta);
    igr_ctx sf = {.two_d = two_d, .eta = eta, .modified = 0, .c = &c, .n = n, .g = scratch};
    igr_ctx sm = sf;
    sm.modified = 1;
    gsl_odeiv2_system sys_f = {ode_f, NULL, n, &sf}, sys_m = {ode_f, NULL, n, &sm};
    df = gsl_odeiv2_driver_alloc_y_new(&sys_f, gsl_odeiv2_step_rk8pd, eta / 4, tol, tol);
    dm = gsl_odeiv2_driver_alloc_y_new(&sys_m, gsl_odeiv2_step_rk8pd, eta / 4, tol, tol);
    if (!df || !dm) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "igr: out of memory for the ODE drivers");
      goto out;
    }
    memcpy(xg, x0, n * sizeof *xg);
    memcpy(yf, x0, n * sizeof *yf);
    memcpy(ym, x0, n * sizeof *ym);
    double tf = 0, tm = 0;
    json_t *tg = json_array(), *tfl = json_array(), *tmo = json_array();
    char key[32];
    for (long k = 0; k <= K; k++) {
      if (td_sink_should_stop(sink)) {
        json_decref(tg);
        json_decref(tfl);
        json_decref(tmo);
        rc = TD_ECANCELLED;
        goto out;
      }
      if (k > 0) {
        const double t1 = eta * (double)k;
        const int sa = gsl_odeiv2_driver_apply(df, &tf, t1, yf);
        const int sb = gsl_odeiv2_driver_apply(dm, &tm, t1, ym);
        if (sa != GSL_SUCCESS || sb != GSL_SUCCESS || sf.failed || sm.failed) {
          json_decref(tg);
          json_decref(tfl);
          json_decref(tmo);
          rc = td_err_set(err, TD_EDIVERGED, NULL,
                          "igr: the ODE integration failed at eta %g, time %g (GSL status %d/%d)",
                          eta, t1, sa, sb);
          goto out;
        }
      }
      double loss;
      if (two_d) {
        loss = loss2d(xg);
        json_t *pg = json_array(), *pf = json_array(), *pm = json_array();
        for (int q = 0; q < 2; q++) {
          json_array_append_new(pg, json_real(xg[q]));
          json_array_append_new(pf, json_real(yf[q]));
          json_array_append_new(pm, json_real(ym[q]));
        }
        json_array_append_new(tg, pg);
        json_array_append_new(tfl, pf);
        json_array_append_new(tmo, pm);
      } else {
        if (fmlp(&sf, xg, g, NULL)) {
          json_decref(tg);
          json_decref(tfl);
          json_decref(tmo);
          rc = td_err_set(err, TD_EDIVERGED, NULL, "igr: the GD loss is not finite at eta %g", eta);
          goto out;
        }
        loss = c.loss_value;
      }
      const double a = dist(xg, yf, n), b = dist(xg, ym, n);
      snprintf(key, sizeof key, "dist_flow/%d", i);
      td_sink_metric(sink, key, k, a);
      snprintf(key, sizeof key, "dist_mod/%d", i);
      td_sink_metric(sink, key, k, b);
      snprintf(key, sizeof key, "loss_gd/%d", i);
      td_sink_metric(sink, key, k, loss);
      if (!isfinite(loss)) {
        json_decref(tg);
        json_decref(tfl);
        json_decref(tmo);
        rc = td_err_set(err, TD_EDIVERGED, NULL, "igr: the GD loss is not finite at eta %g", eta);
        goto out;
      }
      dflow[i] = a;
      dmod[i] = b;
      td_sink_progress(sink, done + k, total);
      if (k == K) break;
      /* GD step */
      if (two_d) {
        double hg[2];
        f2d(xg, g, hg);
      }
      td_la_axpy(n, -eta, g, xg);
    }
    done += K;
    if (two_d) {
      json_t *o = json_object();
      json_object_set_new(o, "eta", json_real(eta));
      json_object_set_new(o, "gd", tg);
      json_object_set_new(o, "flow", tfl);
      json_object_set_new(o, "modified_flow", tmo);
      json_array_append_new(trajs, o);
    } else {
      json_decref(tg);
      json_decref(tfl);
      json_decref(tmo);
    }
    gsl_odeiv2_driver_free(df);
    gsl_odeiv2_driver_free(dm);
    df = dm = NULL;
  }
  {
    const double sl_f = loglog_slope(etas, dflow, ne), sl_m = loglog_slope(etas, dmod, ne);
    json_t *s = json_object(), *je = json_array(), *jf = json_array(), *jm = json_array();
    for (int i = 0; i < ne; i++) {
      json_array_append_new(je, json_real(etas[i]));
      json_array_append_new(jf, json_real(dflow[i]));
      json_array_append_new(jm, json_real(dmod[i]));
    }
    json_object_set_new(art, "eta", je);
    json_object_set_new(art, "dist_flow", jf);
    json_object_set_new(art, "dist_mod", jm);
    td_trainer_set_num(art, "slope_flow", sl_f);
    td_trainer_set_num(art, "slope_mod", sl_m);
    td_trainer_set_num(art, "time", T);
    json_object_set_new(art, "integrator", json_string("gsl_odeiv2 rk8pd"));
    td_trainer_set_num(art, "ode_tol", tol);
    json_object_set_new(art, "trajectories", trajs);
    trajs = NULL;
    json_object_set_new(s, "dist_flow", json_deep_copy(json_object_get(art, "dist_flow")));
    json_object_set_new(s, "dist_mod", json_deep_copy(json_object_get(art, "dist_mod")));
    td_trainer_set_num(s, "slope_flow", sl_f);
    td_trainer_set_num(s, "slope_mod", sl_m);
    json_object_set_new(s, "n_params", json_integer((json_int_t)n));
    char *txt = json_dumps(art, JSON_COMPACT);
    if (txt) {
      rc = td_sink_artifact(sink, "igr.json", "application/json", txt, strlen(txt));
      free(txt);
    }
    *summary = s;
  }
out:
  if (df) gsl_odeiv2_driver_free(df);
  if (dm) gsl_odeiv2_driver_free(dm);
  json_decref(art);
  json_decref(trajs);
  td_curv_deinit(&c);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(x0);
  free(xg);
  free(yf);
  free(ym);
  free(g);
  free(scratch);
  return rc;
}

const td_kind td_kind_igr = {
    .name = "igr",
    .doc = "Implicit gradient regularization: GD vs gradient flow on L (distance ~ eta) and on "
           "L + (eta/4)|grad L|^2 (~ eta^2), integrated with GSL rk8pd, over a sweep of eta",
    .chapter = "8",
    .params = igr_params,
    .n_params = sizeof igr_params / sizeof igr_params[0],
    .check = igr_check,
    .run = igr_run,
};
