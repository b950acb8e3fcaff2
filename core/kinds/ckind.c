/* ckind.c: the Hessian/GGN analysis suite of the curvature kinds (metrics and artifacts). */
#include "kinds/ckind_internal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curv/hutchinson.h"
#include "curv/lanczos.h"
#include "nn/loss.h"
#include "curv/slq.h"
#include "kinds/registry.h"
#include "train/trainer.h"

void td_ckind__parse_analysis(const json_t *p, td_ckind__ana_opts *o) {
  memset(o, 0, sizeof *o);
  o->top_k = (int)td_param_int(p, "analysis.top_k", 1);
  o->lanczos_steps = (size_t)td_param_int(p, "analysis.lanczos_steps", 100);
  o->tol = td_param_num(p, "analysis.tol", 1e-10);
  o->magnitude = td_param_bool(p, "analysis.largest_magnitude", 0);
  o->ggn = td_param_bool(p, "analysis.ggn", 0);
  o->trace_probes = (int)td_param_int(p, "analysis.trace_probes", 0);
  o->density = td_param_bool(p, "analysis.density", 0);
  o->density_probes = (int)td_param_int(p, "analysis.density_probes", 5);
  o->density_steps = (int)td_param_int(p, "analysis.density_steps", 60);
  o->density_grid = (int)td_param_int(p, "analysis.density_grid", 256);
  o->seed = (uint64_t)td_param_int(p, "seed", 0);
  o->artifacts = 1;
}

double td_ckind__analysis_bytes(const td_ckind__ana_opts *o, double n) {
  double m = (double)o->lanczos_steps;
  double b = 8.0 * ((m + 1) * n + m * (m + 8) + (o->top_k + 1) * (m + 3));
  if (o->density) {
    double ms = o->density_steps;
    double s = 8.0 * ((ms + 1) * n + 2.0 * o->density_probes * ms + 2.0 * o->density_grid);
    if (s > b) b = s;
  }
  if (o->trace_probes) {
    double t = 8.0 * (2 * n + o->trace_probes);
    if (t > b) b = t;
  }
  return b;
}

static int emit(td_sink *sink, const char *key, long step, double v) {
  return td_sink_metric(sink, key, step, v);
}

static int put_json(td_sink *sink, const char *name, json_t *doc) {
  if (!doc) return 0;
  char *txt = json_dumps(doc, JSON_COMPACT);
  int rc = txt ? td_sink_artifact(sink, name, "application/json", txt, strlen(txt)) : TD_ENOMEM;
  free(txt);
  return rc;
}

/* Append x to hist[key] (created as an array when missing); steals x. */
static void hist_append(json_t *hist, const char *key, json_t *x) {
  json_t *a = json_object_get(hist, key);
  if (!a) {
    a = json_array();
    json_object_set_new(hist, key, a);
  }
  json_array_append_new(a, x);
}

/* Clamp the Lanczos step cap to [k + 1, n] (n: operator size). */
static size_t steps_for(size_t cap, size_t k, size_t n) {
  size_t m = cap < k + 1 ? k + 1 : cap;
  return m > n ? n : m;
}

/* The bound reported as sharpness_resid for Ritz pair i: max(resid_i, eps ||H|| sqrt(n)).
 * For a symmetric H and a unit vector y, some eigenvalue lambda has
 * |theta - lambda| <= ||H y - theta y|| (Parlett, The Symmetric Eigenvalue Problem, Thm 4.5.1;
 * Krylov-Weinstein). Lanczos reports that residual as |beta_m s_mi|, which is exact only in
 * exact arithmetic: once it falls below the rounding of the products themselves (it reads
 * 1e-19 or 1e-69 after convergence) it says nothing, while the computed eigenvalue still
 * differs from a dense eigendecomposition by ~1e-14. So the floor eps ||H|| sqrt(n) (the
 * rounding of one product H y of n terms, each of size up to ||H||, accumulated as a random
 * walk: Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 3.1 and 2.8)
 * is added, with ||H|| estimated by lr->scale = max |theta| over all Ritz values (these lie in
 * [lambda_min, lambda_max], so it is a lower estimate of ||H||, close once both ends of the
 * spectrum have converged). */
static double eig_error_bound(const td_lanczos_result *lr, size_t i) {
  const double fl = DBL_EPSILON * lr->scale * sqrt((double)lr->n);
  return lr->resid[i] > fl ? lr->resid[i] : fl;
}

int td_ckind__analyze(td_curv_ctx *c, const td_ckind__ana_opts *o, long step, td_sink *sink,
                      json_t *hist, td_ckind__ana_result *res, td_err *err) {
  memset(res, 0, sizeof *res);
  const size_t n = c->m->n_params;
  size_t k = (size_t)o->top_k;
  if (k > n) k = n;
  int rc = 0;
  char key[64], name[96];
  json_t *art = json_object();
  json_object_set_new(art, "step", json_integer(step));
  td_trainer_set_num(art, "loss", c->loss_value);
  json_object_set_new(art, "n", json_integer(c->B));
  json_object_set_new(art, "n_params", json_integer((json_int_t)n));

  /* Hessian, largest algebraic: sharpness and the top k. */
  td_lanczos_opts lo = td_lanczos_opts_default(k);
  lo.max_steps = steps_for(o->lanczos_steps, k, n);
  lo.tol = o->tol;
  lo.seed = o->seed + (uint64_t)step;
  td_lanczos_result lr;
  if ((rc = td_lanczos_topk(td_curv_hvp_matvec, c, n, &lo, &lr, err))) goto out;
  res->sharpness = lr.eigvals[0];
  res->resid = eig_error_bound(&lr, 0);
  res->steps = lr.steps;
  res->n_matvec = lr.n_matvec;
  res->converged = lr.n_converged >= lr.k;
  json_object_set_new(art, "hessian", td_lanczos_result_json(&lr, TD_LANCZOS_LA));
  if (!(rc = emit(sink, "sharpness", step, lr.eigvals[0])) &&
      !(rc = emit(sink, "sharpness_resid", step, res->resid)) &&
      !(rc = emit(sink, "lanczos_steps", step, (double)lr.steps)) &&
      !(rc = emit(sink, "analysis_loss", step, c->loss_value)))
    for (size_t i = 0; i < lr.k && !rc; i++) {
      snprintf(key, sizeof key, "hessian_eig_%zu", i + 1);
      rc = emit(sink, key, step, lr.eigvals[i]);
    }
  if (hist) {
    json_t *row = json_array();
    for (size_t i = 0; i < lr.k; i++) json_array_append_new(row, json_real(lr.eigvals[i]));
    hist_append(hist, "steps", json_integer(step));
    hist_append(hist, "hessian_top_k", row);
  }
  td_lanczos_result_deinit(&lr);
  if (rc) goto out;

  if (o->magnitude) {
    td_lanczos_opts lm = lo;
    lm.k = 1;
    lm.which = TD_LANCZOS_LM;
    if ((rc = td_lanczos_topk(td_curv_hvp_matvec, c, n, &lm, &lr, err))) goto out;
    json_object_set_new(art, "hessian_lm", td_lanczos_result_json(&lr, TD_LANCZOS_LM));
    rc = emit(sink, "hessian_max_abs_eig", step, lr.eigvals[0]);
    if (hist) hist_append(hist, "hessian_max_abs_eig", json_real(lr.eigvals[0]));
    td_lanczos_result_deinit(&lr);
    if (rc) goto out;
  }
  if (o->ggn) {
    td_lanczos_opts lg = lo;
    lg.k = 1;
    lg.max_steps = steps_for(o->lanczos_steps, 1, n);
    if ((rc = td_lanczos_topk(td_curv_ggn_matvec, c, n, &lg, &lr, err))) goto out;
    json_object_set_new(art, "ggn", td_lanczos_result_json(&lr, TD_LANCZOS_LA));
    rc = emit(sink, "ggn_top", step, lr.eigvals[0]);
    if (hist) hist_append(hist, "ggn_top", json_real(lr.eigvals[0]));
    td_lanczos_result_deinit(&lr);
    if (rc) goto out;
  }
  if (o->trace_probes > 0) {
    td_hutchinson_result hr;
    if ((rc = td_hutchinson_trace(td_curv_hvp_matvec, c, n, (size_t)o->trace_probes,
                                  o->seed + (uint64_t)step, NULL, &hr, err)))
      goto out;
    json_t *t = json_object();
    td_trainer_set_num(t, "estimate", hr.trace);
    td_trainer_set_num(t, "std_err", hr.std_err);
    json_object_set_new(t, "n_probes", json_integer((json_int_t)hr.n_probes));
    json_object_set_new(art, "trace", t);
    rc = emit(sink, "hessian_trace", step, hr.trace);
    if (!rc && o->trace_probes > 1) rc = emit(sink, "hessian_trace_stderr", step, hr.std_err);
    if (hist) hist_append(hist, "hessian_trace", json_real(hr.trace));
    if (rc) goto out;
  }
  if (o->artifacts) {
    snprintf(name, sizeof name, "eigenvalues_step%ld.json", step);
    if ((rc = put_json(sink, name, art))) goto out;
    if (hist && (rc = put_json(sink, "eigenvalues.json", hist))) goto out;
  }
  if (o->density) {
    td_slq_opts so = td_slq_opts_default();
    so.n_probes = (size_t)o->density_probes;
    so.steps = (size_t)o->density_steps < n ? (size_t)o->density_steps : n;
    so.seed = o->seed + (uint64_t)step;
    so.n_grid = (size_t)o->density_grid;
    td_slq_result sr;
    if ((rc = td_slq_run(td_curv_hvp_matvec, c, n, &so, &sr, err))) goto out;
    json_t *dj = td_slq_result_json(&sr);
    td_slq_result_deinit(&sr);
    if (dj) {
      json_object_set_new(dj, "step", json_integer(step));
      snprintf(name, sizeof name, "density_step%ld.json", step);
      rc = put_json(sink, name, dj);
      if (!rc) rc = put_json(sink, "density.json", dj);
      json_decref(dj);
    }
  }
out:
  json_decref(art);
  return rc;
}
