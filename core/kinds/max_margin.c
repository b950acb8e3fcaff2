/* max_margin.c: the `max_margin` kind: gradient descent on the logistic loss of separable data
 * converges in direction to the hard-margin SVM solution at the 1/log t rate (chapter 8).
 *
 * Data: n points x_i ~ N(0, I_d) labelled by a teacher, y_i = sign(<u, x_i>) with u ~ N(0, I_d)
 * from the seed, keeping only points whose distance |<u, x>| / ||u|| is at least data.gap
 * (rejection sampling), so the set is separable through the origin with margin >= gap.
 * Loss: L(w) = (1/n) sum_i log(1 + exp(-y_i <x_i, w>)) (no bias), GD w_{t+1} = w_t - eta grad L
 * from w_0 = 0.
 *
 * Reference direction: w_hat = argmin ||w|| s.t. y_i <x_i, w> >= 1, computed exactly by the
 * least-distance program of Lawson and Hanson (1974, ch. 23) through their NNLS active-set
 * algorithm (implicit/implicit.h, td_implicit_max_margin).
 *
 * Theory (Soudry, Hoffer, Nacson, Gunasekar and Srebro 2018, "The implicit bias of gradient
 * descent on separable data", JMLR, Theorem 3): for eta < 2 / beta (beta the smoothness of L),
 * w_t = w_hat log t + rho_t with ||rho_t|| bounded, so ||w_t|| / log t -> ||w_hat|| and
 *   || w_t / ||w_t|| - w_hat / ||w_hat|| || = O(1 / log t)
 * (their eq. 11: the rate is ||rho|| / (||w_hat|| log t) and no faster). Logged over
 * log-spaced steps: dir_dist (that norm), angle (radians), dir_dist_log_t = dir_dist * log t
 * (tends to a constant when the rate is 1/log t), w_norm_over_log_t beside its limit
 * w_norm_over_log_t_limit = ||w_hat||, the normalized margin (metric margin)
 * min_i y_i <x_i, w_t> / ||w_t|| beside the max margin margin_max = 1 / ||w_hat||, the loss, and resid_perp = ||w_t - (<w_t, w_hat> / ||w_hat||^2) w_hat||, the
 * part of rho_t orthogonal to w_hat, which the theorem keeps bounded (dir_dist is about
 * resid_perp / ||w_t||: the 1/log t rate is this bounded residual over a norm growing like
 * log t). The mean loss scales the effective time by 1/n, so ||w_t|| / log t approaches
 * ||w_hat|| only slowly (w_t ~ w_hat log(t) - c w_hat with c of order log n). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "implicit/implicit.h"
#include "kinds/registry.h"

static const td_param mm_params[] = {
    {"data.n", TD_PT_INT, "40", 2, 5000, NULL, 0, "number of points"},
    {"data.d", TD_PT_INT, "2", 1, 200, NULL, 0, "input dimension"},
    {"data.gap", TD_PT_NUM, "0.1", 0, 10, NULL, 0,
     "points closer than this to the teacher's hyperplane are rejected"},
    {"lr", TD_PT_NUM, "1", 1e-9, 1e3, NULL, 0, "GD step eta"},
    {"steps", TD_PT_INT, "100000", 1, 1e7, NULL, 0, "GD steps"},
    {"log_points", TD_PT_INT, "200", 10, 10000, NULL, 0,
     "metrics at about this many log-spaced steps (and the first 10)"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of teacher and data"},
};

static int mm_check(const json_t *p, td_estimate *est, td_err *err) {
  (void)err;
  double n = (double)td_param_int(p, "data.n", 40), d = (double)td_param_int(p, "data.d", 2);
  est->bytes = 8.0 * (4 * n * d + 4 * (n + d) * (n + d));
  est->n_params = d;
  return 0;
}

static void set_num(json_t *o, const char *k, double v) {
  json_object_set_new(o, k, isfinite(v) ? json_real(v) : json_null());
}

static int mm_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  const int n = (int)td_param_int(params, "data.n", 40), d = (int)td_param_int(params, "data.d", 2);
  const double gap = td_param_num(params, "data.gap", 0.1), lr = td_param_num(params, "lr", 1.0);
  const long steps = td_param_int(params, "steps", 100000);
  const long npts = td_param_int(params, "log_points", 200);
  const uint64_t seed = (uint64_t)td_param_int(params, "seed", 0);
  double *Z = malloc((size_t)n * d * sizeof *Z), *X = malloc((size_t)n * d * sizeof *X),
         *u = malloc((size_t)d * sizeof *u), *wh = malloc((size_t)d * sizeof *wh),
         *w = calloc((size_t)d, sizeof *w), *m = malloc((size_t)n * sizeof *m),
         *r = malloc((size_t)n * sizeof *r), *g = malloc((size_t)d * sizeof *g);
  int *y = malloc((size_t)n * sizeof *y);
  int rc = 0;
  if (!Z || !X || !u || !wh || !w || !m || !r || !g || !y) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "max_margin: out of memory");
    goto out;
  }
  td_rng rt, rd;
  td_rng_init(&rt, seed, TD_RNG_TEACHER);
  td_rng_init(&rd, seed, TD_RNG_DATA);
  td_rng_fill_normal(&rt, u, (size_t)d, 1.0);
  const double un = td_la_nrm2((size_t)d, u);
  for (int i = 0; i < n; i++) {
    double s = 0;
    for (long tries = 0;; tries++) {
      if (tries > 100000) {
        rc = td_err_set(err, TD_EINVAL, "params.data.gap",
                        "max_margin: data.gap %g rejects almost every point", gap);
        goto out;
      }
      td_rng_fill_normal(&rd, X + (size_t)i * d, (size_t)d, 1.0);
      s = td_la_dot((size_t)d, X + (size_t)i * d, u) / un;
      if (fabs(s) >= gap && s != 0) break;
    }
    y[i] = s > 0 ? 1 : -1;
    for (int k = 0; k < d; k++) Z[(size_t)i * d + k] = y[i] * X[(size_t)i * d + k];
  }
  if ((rc = td_implicit_max_margin(n, d, Z, wh, err))) goto out;
  const double whn = td_la_nrm2((size_t)d, wh);
  double last_dd = NAN, last_angle = NAN, last_ratio = NAN, last_margin = NAN, last_loss = NAN;
  long next = 1;
  const double growth = pow((double)steps, 1.0 / (double)npts);
  for (long t = 0; t <= steps; t++) {
    if ((t & 1023) == 0 && td_sink_should_stop(sink)) {
      rc = TD_ECANCELLED;
      goto out;
    }
    /* margins m_i = <z_i, w>, loss and gradient -(1/n) sum sigma(-m_i) z_i */
    td_la_gemv(0, n, d, 1.0, Z, w, 0.0, m);
    const int log_now = t == steps || t <= 10 || t >= next;
    if (log_now) {
      double loss = 0, mmin = INFINITY;
      for (int i = 0; i < n; i++) {
        loss += m[i] > 0 ? log1p(exp(-m[i])) : -m[i] + log1p(exp(m[i]));
        if (m[i] < mmin) mmin = m[i];
      }
      loss /= n;
      const double wn = td_la_nrm2((size_t)d, w);
      td_sink_metric(sink, "loss", t, loss);
      td_sink_metric(sink, "w_norm", t, wn);
      if (wn > 0) {
        double dd = 0;
        for (int k = 0; k < d; k++) {
          const double e = w[k] / wn - wh[k] / whn;
          dd += e * e;
        }
        dd = sqrt(dd);
        /* the angle between unit vectors at distance dd (accurate for small angles) */
        const double angle = 2.0 * asin(dd < 2 ? 0.5 * dd : 1.0);
        /* the residual orthogonal to w_hat, bounded by the theorem: dir_dist ~ resid_perp /
         * ||w_t|| ~ resid_perp / (||w_hat|| log t) */
        const double proj = td_la_dot((size_t)d, w, wh) / (whn * whn);
        double rp = 0;
        for (int k = 0; k < d; k++) rp += (w[k] - proj * wh[k]) * (w[k] - proj * wh[k]);
        td_sink_metric(sink, "resid_perp", t, sqrt(rp));
        td_sink_metric(sink, "dir_dist", t, dd);
        td_sink_metric(sink, "angle", t, angle);
        td_sink_metric(sink, "margin", t, mmin / wn);
        td_sink_metric(sink, "margin_max", t, 1.0 / whn);
        last_dd = dd;
        last_angle = angle;
        last_margin = mmin / wn;
        if (t >= 2) {
          const double lt = log((double)t);
          td_sink_metric(sink, "dir_dist_log_t", t, dd * lt);
          td_sink_metric(sink, "w_norm_over_log_t", t, wn / lt);
          td_sink_metric(sink, "w_norm_over_log_t_limit", t, whn);
          last_ratio = wn / lt;
        }
      }
      last_loss = loss;
      while (next <= t) {
        const long nx = (long)ceil((double)next * growth);
        next = nx > next ? nx : next + 1;
      }
      td_sink_progress(sink, t, steps);
    }
    if (t == steps) break;
    for (int i = 0; i < n; i++) r[i] = -1.0 / (1.0 + exp(m[i])); /* -sigma(-m_i) */
    td_la_gemv(1, n, d, 1.0 / n, Z, r, 0.0, g);
    td_la_axpy((size_t)d, -lr, g, w);
  }
  {
    json_t *a = json_object(), *pts = json_array(), *jw = json_array(), *jf = json_array(),
           *sv = json_array();
    for (int i = 0; i < n; i++) {
      json_t *pt = json_array();
      for (int k = 0; k < d; k++) json_array_append_new(pt, json_real(X[(size_t)i * d + k]));
      json_array_append_new(pt, json_integer(y[i]));
      json_array_append_new(pts, pt);
      if (td_la_dot((size_t)d, Z + (size_t)i * d, wh) < 1.0 + 1e-8)
        json_array_append_new(sv, json_integer(i));
    }
    for (int k = 0; k < d; k++) {
      json_array_append_new(jw, json_real(wh[k]));
      json_array_append_new(jf, json_real(w[k]));
    }
    json_object_set_new(a, "points", pts);
    json_object_set_new(a, "w_hat", jw);
    json_object_set_new(a, "w_final", jf);
    json_object_set_new(a, "support", sv);
    json_object_set_new(a, "method", json_string("LDP via NNLS, Lawson and Hanson 1974 ch. 23"));
    char *txt = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (txt) {
      td_sink_artifact(sink, "max_margin.json", "application/json", txt, strlen(txt));
      free(txt);
    }
  }
  json_t *s = json_object();
  set_num(s, "w_hat_norm", whn);
  set_num(s, "max_margin", 1.0 / whn);
  set_num(s, "margin", last_margin);
  set_num(s, "dir_dist", last_dd);
  set_num(s, "angle", last_angle);
  set_num(s, "w_norm_over_log_t", last_ratio);
  set_num(s, "loss", last_loss);
  *summary = s;
out:
  free(Z); free(X); free(u); free(wh); free(w); free(m); free(r); free(g); free(y);
  return rc;
}

const td_kind td_kind_max_margin = {
    .name = "max_margin",
    .doc = "GD on the logistic loss of separable data vs the exact hard-margin SVM direction "
           "(Soudry et al. 2018 1/log t rate)",
    .chapter = "8",
    .params = mm_params,
    .n_params = sizeof mm_params / sizeof mm_params[0],
    .check = mm_check,
    .run = mm_run,
};
