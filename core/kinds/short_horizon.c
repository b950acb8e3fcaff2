/* short_horizon.c: the `short_horizon` experiment kind (chapter 11): short-horizon bias (Wu,
 * Ren, Liao and Grosse 2018) on the noisy quadratic model: the greedy learning-rate schedule
 * (tuned over a one-step horizon) against the schedule tuned for the loss at the full horizon.
 *
 * Semantics (also in the schema docs): h_i = i^-h_decay (i = 1..dim), c_i = noise * h_i (the
 * gradient noise covariance proportional to the Hessian, as in Wu et al. 2018 sec. 3),
 * E[theta_0,i^2] = init^2, SGD with batch B; expected losses are exact (bilevel/horizon.h).
 * The greedy schedule is the closed form of horizon.h; the full-horizon schedule minimizes
 * E[L_T] over all T learning rates by exact hypergradients and L-BFGS, started from the greedy
 * one. Metrics per step t: lr_greedy, lr_full (t = 0..T-1), loss_greedy, loss_full (t = 0..T).
 * Artifact schedules.json {greedy: {lr, loss}, full: {lr, loss}}. Summary: final_loss_greedy,
 * final_loss_full, loss_ratio (greedy / full, > 1 when the short horizon loses), and the
 * learning rates at the midpoint and the sums of both schedules (the greedy one decays
 * faster: its midpoint lr and sum are smaller). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bilevel/horizon.h"
#include "kinds/registry.h"

static const td_param sh_params[] = {
    {"dim", TD_PT_INT, "100", 1, 100000, NULL, 0, "coordinates of the quadratic"},
    {"h_decay", TD_PT_NUM, "1", 0, 10, NULL, 0, "curvatures h_i = i^-h_decay"},
    {"noise", TD_PT_NUM, "1", 0, 1e6, NULL, 0, "gradient noise c_i = noise * h_i"},
    {"batch_size", TD_PT_NUM, "1", 1e-6, 1e9, NULL, 0, "minibatch size B (noise / B)"},
    {"init", TD_PT_NUM, "1", 0, 1e6, NULL, 0, "initial |theta_0,i| (E[theta_0^2] = init^2)"},
    {"steps", TD_PT_INT, "300", 1, 20000, NULL, 0, "the full horizon T"},
    {"max_iters", TD_PT_INT, "500", 1, 100000, NULL, 0, "L-BFGS iterations (full horizon)"},
};

static int sh_check(const json_t *p, td_estimate *est, td_err *err) {
  double d = (double)td_param_int(p, "dim", 100), T = (double)td_param_int(p, "steps", 300);
  double it = (double)td_param_int(p, "max_iters", 500);
  /* each L-BFGS evaluation (a few per iteration) is a forward and reverse pass: ~8 d T flops */
  if (d * T * it > 2e10)
    return td_err_set(err, TD_ELIMIT, "params.max_iters",
                      "dim x steps x max_iters = %.3g exceeds the cap of 2e10", d * T * it);
  est->bytes = 8.0 * (T + 1) * d + 8.0 * 60 * T;
  est->n_params = 0;
  return 0;
}

static json_t *arr(const double *x, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(a, isfinite(x[i]) ? json_real(x[i]) : json_null());
  return a;
}

static int sh_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  size_t d = (size_t)td_param_int(p, "dim", 100);
  int T = (int)td_param_int(p, "steps", 300);
  double hd = td_param_num(p, "h_decay", 1), noise = td_param_num(p, "noise", 1);
  double init = td_param_num(p, "init", 1);
  double *h = malloc(3 * d * sizeof *h);
  double *buf = malloc(4 * ((size_t)T + 1) * sizeof *buf);
  if (!h || !buf) {
    free(h), free(buf);
    return td_err_set(err, TD_ENOMEM, NULL, "short_horizon: out of memory");
  }
  double *c = h + d, *s0 = h + 2 * d;
  for (size_t i = 0; i < d; i++) {
    h[i] = pow((double)(i + 1), -hd);
    c[i] = noise * h[i];
    s0[i] = init * init;
  }
  double *ag = buf, *af = buf + (T + 1), *lg = buf + 2 * (T + 1), *lf = buf + 3 * (T + 1);
  td_horizon_cfg cfg = {.dim = d, .h = h, .c = c, .s0 = s0,
                        .batch = td_param_num(p, "batch_size", 1), .T = T};
  int iters = 0;
  int rc = td_horizon_greedy(&cfg, ag, lg, err);
  if (!rc) {
    memcpy(af, ag, (size_t)T * sizeof *af);
    td_sink_progress(sink, 1, 3);
    if (td_sink_should_stop(sink)) rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
  }
  if (!rc)
    rc = td_horizon_full(&cfg, (int)td_param_int(p, "max_iters", 500), sink, af, &iters, err);
  if (rc) {
    free(h), free(buf);
    return rc;
  }
  td_horizon_loss(&cfg, af, lf, NULL);
  for (int t = 0; t <= T; t++) {
    if (t < T) {
      td_sink_metric(sink, "lr_greedy", t, ag[t]);
      td_sink_metric(sink, "lr_full", t, af[t]);
    }
    td_sink_metric(sink, "loss_greedy", t, lg[t]);
    td_sink_metric(sink, "loss_full", t, lf[t]);
  }
  json_t *art = json_object(), *g = json_object(), *f = json_object();
  json_object_set_new(g, "lr", arr(ag, T));
  json_object_set_new(g, "loss", arr(lg, T + 1));
  json_object_set_new(f, "lr", arr(af, T));
  json_object_set_new(f, "loss", arr(lf, T + 1));
  json_object_set_new(art, "greedy", g);
  json_object_set_new(art, "full", f);
  char *txt = json_dumps(art, JSON_COMPACT | JSON_REAL_PRECISION(17));
  if (txt) rc = td_sink_artifact(sink, "schedules.json", "application/json", txt, strlen(txt));
  free(txt);
  json_decref(art);
  double sg = 0, sf = 0;
  for (int t = 0; t < T; t++) sg += ag[t], sf += af[t];
  json_t *s = json_object();
  json_object_set_new(s, "final_loss_greedy", json_real(lg[T]));
  json_object_set_new(s, "final_loss_full", json_real(lf[T]));
  json_object_set_new(s, "loss_ratio", json_real(lg[T] / lf[T]));
  json_object_set_new(s, "lr_mid_greedy", json_real(ag[T / 2]));
  json_object_set_new(s, "lr_mid_full", json_real(af[T / 2]));
  json_object_set_new(s, "lr_sum_greedy", json_real(sg));
  json_object_set_new(s, "lr_sum_full", json_real(sf));
  json_object_set_new(s, "lbfgs_evaluations", json_integer(iters));
  td_sink_progress(sink, 3, 3);
  *summary = s;
  free(h), free(buf);
  return rc;
}

const td_kind td_kind_short_horizon = {
    .name = "short_horizon",
    .doc = "Short-horizon bias (Wu et al. 2018) on the noisy quadratic model: greedy vs "
           "full-horizon learning-rate schedules tuned by exact hypergradients",
    .chapter = "11",
    .params = sh_params,
    .n_params = sizeof sh_params / sizeof sh_params[0],
    .check = sh_check,
    .run = sh_run,
};
