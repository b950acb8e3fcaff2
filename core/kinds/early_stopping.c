/* early_stopping.c: the `early_stopping` kind: gradient descent on least squares against
 * ridge regression with mu = 1 / (eta t), their spectral filters and test risks, and the
 * distance of the GD iterate from the minimum-norm solution (chapter 8).
 *
 * Problem (the chapter 1 toy model, as `linreg`): the synthetic linear teacher of nn/data.h,
 * x ~ N(0, Sigma), Sigma = diag(i^-decay), y = <w*, x> + noise N(0, 1); training loss
 * L(w) = 1/(2n) ||X w - y||^2; H = X^T X / n = Q diag(lambda) Q^T (lambda_i = sigma_i^2 / n from
 * the SVD of X, LAPACK dgesvd; the rank is numpy's matrix_rank cut sigma_i > sigma_max max(n,d)
 * eps), b = X^T y / n, beta = Q^T b.
 *
 * Paths (Ali, Kolter and Tibshirani 2019, "A continuous-time view of early stopping for least
 * squares regression", AISTATS, eqs. 4-6):
 *   gradient descent w_{t+1} = w_t - eta grad L(w_t), from w_0 (zero, or N(0, init_scale^2/d)):
 *     Q^T w_t = (1 - eta lambda)^t Q^T w_0 + g_t(lambda) / lambda * beta,
 *     g_t(lambda) = 1 - (1 - eta lambda)^t (the GD filter), on the range; null-space
 *     coordinates keep their start;
 *   ridge w_mu = argmin L(w) + mu/2 ||w||^2, mu = 1 / (eta t) (t >= 1):
 *     Q^T w_mu = r(lambda) / lambda * beta, r(lambda) = lambda / (lambda + mu).
 * Both paths are computed: the GD iterate by running the recursion on X itself, and its closed
 * form in the eigenbasis (metric gd_closed_form_err = ||w_t - closed form||, rounding level);
 * the ridge solution from its closed form.
 *
 * Filters at three eigenvalues f = 0, 1, 2 (the largest, the median and the smallest nonzero
 * lambda; their values in the summary as filter_lambda/f): filter/f_gd (closed form g_t),
 * filter/f_ridge (r at mu = 1/(eta t)) and, from a zero start, filter/f_gd_observed (the
 * coordinate of the GD iterate over its limit, lambda (Q^T w_t) / beta).
 *
 * Test risk (population, closed form under the teacher): R(w) = 1/2 (w - w*)^T Sigma (w - w*)
 * + noise^2 / 2, the expected loss 1/2 (<x, w> - y)^2 on a fresh example; the held-out risk on
 * data.n_test fresh examples is logged beside it (test_loss_gd, test_loss_ridge). Ali et al.'s
 * Theorem 2 bounds the risk of gradient FLOW by 1.6862 times the ridge risk at mu = 1/t; the
 * kind logs the discrete ratio risk_gd / risk_ridge.
 *
 * Minimum norm: w+ = X^+ y = Q diag(1/lambda on the range) beta. dist_min_norm = ||w_t - w+||
 * (observed) and its closed form dist_min_norm_theory = sqrt(sum_range (1 - eta lambda)^(2t)
 * (Q^T w_0 - Q^T w+)^2 + sum_null (Q^T w_0)^2): from a zero start (and only then) GD converges
 * to the min-norm solution when d > n (Zhang et al. 2017, sec. 5; Gunasekar et al. 2018). */
#include <float.h>
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "implicit/implicit.h"
#include "kinds/registry.h"
#include "nn/data.h"

#define ES_MAX_D 2000
#define ES_N_FILTERS 3 /* eigen-indices whose filters are logged: largest, median, smallest */

static const td_param es_params[] = {
    {"data.n", TD_PT_INT, "100", 1, 20000, NULL, 0, "training examples of the linear teacher"},
    {"data.d", TD_PT_INT, "50", 1, ES_MAX_D, NULL, 0, "input dimension (d > n: underdetermined)"},
    {"data.noise", TD_PT_NUM, "0.5", 0, 1e3, NULL, 0, "std of the label noise"},
    {"data.decay", TD_PT_NUM, "1", 0, 10, NULL, 0,
     "feature covariance eigenvalues are i^-decay, i = 1..d"},
    {"data.n_test", TD_PT_INT, "2000", 1, 100000, NULL, 0,
     "held-out examples for the empirical test loss"},
    {"lr", TD_PT_NUM, "0.1", 1e-12, 1e6, NULL, 0,
     "step eta of full-batch GD (stable below 2 / lambda_max)"},
    {"steps", TD_PT_INT, "1000", 1, 100000, NULL, 0, "GD steps (metrics at 0..steps)"},
    {"init", TD_PT_STR, "\"zero\"", 0, 0, "zero|normal", 0,
     "start: w = 0 (the filters and ridge comparison assume it), or N(0, init_scale^2 / d)"},
    {"init_scale", TD_PT_NUM, "1", 0, 1e3, NULL, 0, "std multiplier of the normal start"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of teacher, data and start"},
};

typedef struct es_cfg {
  size_t n, d, n_test;
  td_synth_cfg synth;
  double lr, init_scale;
  long steps;
  int zero_init;
  uint64_t seed;
} es_cfg;

static void es_parse(const json_t *p, es_cfg *c) {
  memset(c, 0, sizeof *c);
  c->n = (size_t)td_param_int(p, "data.n", 100);
  c->d = (size_t)td_param_int(p, "data.d", 50);
  c->n_test = (size_t)td_param_int(p, "data.n_test", 2000);
  c->synth.d = c->d;
  c->synth.noise = td_param_num(p, "data.noise", 0.5);
  c->synth.decay = td_param_num(p, "data.decay", 1.0);
  c->lr = td_param_num(p, "lr", 0.1);
  c->steps = td_param_int(p, "steps", 1000);
  c->zero_init = strcmp(td_param_str(p, "init", "zero"), "zero") == 0;
  c->init_scale = td_param_num(p, "init_scale", 1.0);
  c->seed = (uint64_t)td_param_int(p, "seed", 0);
}

static int es_check(const json_t *params, td_estimate *est, td_err *err) {
  (void)err;
  es_cfg c;
  es_parse(params, &c);
  double n = (double)c.n, d = (double)c.d;
  est->bytes = 8.0 * (2 * n * d + 2 * d * d + (double)c.n_test * d + 20 * d + 2 * n);
  est->n_params = d;
  return 0;
}

/* 1/2 (w - w*)^T diag(sd^2) (w - w*) + noise^2 / 2 */
static double pop_risk(const double *w, const double *wt, const double *sd2, size_t d,
                       double noise) {
  double s = 0;
  for (size_t j = 0; j < d; j++) s += sd2[j] * (w[j] - wt[j]) * (w[j] - wt[j]);
  return 0.5 * s + 0.5 * noise * noise;
}

/* 1/(2m) ||X w - y||^2 over m rows; R (m) scratch. */
static double ls_loss(const double *X, const double *y, const double *w, size_t m, size_t d,
                      double *R) {
  memcpy(R, y, m * sizeof *R);
  td_la_gemv(0, (int)m, (int)d, 1.0, X, w, -1.0, R);
  double s = td_la_nrm2(m, R);
  return 0.5 * s * s / (double)m;
}

static double dist(const double *a, const double *b, size_t d) {
  double s = 0;
  for (size_t j = 0; j < d; j++) s += (a[j] - b[j]) * (a[j] - b[j]);
  return sqrt(s);
}

static int es_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  es_cfg c;
  es_parse(params, &c);
  const size_t n = c.n, d = c.d;
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  double *wt = malloc(d * sizeof *wt), *sd2 = malloc(d * sizeof *sd2),
         *Xc = malloc(n * d * sizeof *Xc), *sig = calloc(d, sizeof *sig),
         *VT = malloc(d * d * sizeof *VT), *superb = malloc(d * sizeof *superb),
         *lam = malloc(d * sizeof *lam), *beta = malloc(d * sizeof *beta),
         *c0 = malloc(d * sizeof *c0), *w = malloc(d * sizeof *w), *g = malloc(d * sizeof *g),
         *cq = malloc(d * sizeof *cq), *wc = malloc(d * sizeof *wc),
         *wr = malloc(d * sizeof *wr), *wp = malloc(d * sizeof *wp),
         *tmp = malloc(d * sizeof *tmp), *R = NULL;
  int rc = 0;
  if (!wt || !sd2 || !Xc || !sig || !VT || !superb || !lam || !beta || !c0 || !w || !g || !cq ||
      !wc || !wr || !wp || !tmp) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "early_stopping: out of memory");
    goto out;
  }
  if ((rc = td_data_synthetic(&c.synth, n, c.seed, TD_RNG_DATA, &tr, wt, err))) goto out;
  if ((rc = td_data_synthetic(&c.synth, c.n_test, c.seed, TD_RNG_TEST_DATA, &te, NULL, err)))
    goto out;
  R = malloc((n > c.n_test ? n : c.n_test) * sizeof *R);
  if (!R) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "early_stopping: out of memory");
    goto out;
  }
  for (size_t j = 0; j < d; j++) sd2[j] = pow((double)(j + 1), -c.synth.decay);
  /* SVD of X: rows of VT are the right singular vectors (d of them, null space included). */
  memcpy(Xc, tr.X, n * d * sizeof *Xc);
  lapack_int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'A', (lapack_int)n, (lapack_int)d, Xc,
                                   (lapack_int)d, sig, NULL, 1, VT, (lapack_int)d, superb);
  if (info) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "early_stopping: dgesvd failed (info %d)", (int)info);
    goto out;
  }
  const double sigma_tol = sig[0] * (double)(n > d ? n : d) * DBL_EPSILON;
  size_t rank = 0;
  for (size_t i = 0; i < d; i++) {
    lam[i] = sig[i] * sig[i] / (double)n; /* descending */
    rank += sig[i] > sigma_tol;
  }
  if (!rank) {
    rc = td_err_set(err, TD_EINVAL, "params.data", "early_stopping: X is zero");
    goto out;
  }
  /* b = X^T y / n, beta = Q^T b = VT b. */
  td_la_gemv(1, (int)n, (int)d, 1.0 / (double)n, tr.X, tr.Y, 0.0, tmp);
  td_la_gemv(0, (int)d, (int)d, 1.0, VT, tmp, 0.0, beta);
  /* start */
  if (c.zero_init) {
    memset(w, 0, d * sizeof *w);
  } else {
    td_rng r;
    td_rng_init(&r, c.seed, TD_RNG_INIT);
    td_rng_fill_normal(&r, w, d, c.init_scale / sqrt((double)d));
  }
  td_la_gemv(0, (int)d, (int)d, 1.0, VT, w, 0.0, c0);
  /* min-norm solution w+ = Q diag(1/lambda) beta on the range */
  for (size_t i = 0; i < d; i++) tmp[i] = i < rank ? beta[i] / lam[i] : 0.0;
  td_la_gemv(1, (int)d, (int)d, 1.0, VT, tmp, 0.0, wp);
  const size_t fidx[ES_N_FILTERS] = {0, (rank - 1) / 2, rank - 1};
  const double lr = c.lr;
  double max_cf_err = 0, max_ratio = 0, last_gd_risk = NAN, last_ridge_risk = NAN,
         last_dist = NAN, last_mn = NAN, last_mn_th = NAN;
  long diverged_at = -1;
  const double loss0 = ls_loss(tr.X, tr.Y, w, n, d, R);
  for (long t = 0; t <= c.steps; t++) {
    if (td_sink_should_stop(sink)) {
      rc = TD_ECANCELLED;
      goto out;
    }
    const double tt = (double)t;
    /* closed-form GD iterate in the eigenbasis, then back: wc = Q cq */
    for (size_t i = 0; i < d; i++) {
      if (i < rank) {
        const double a = 1.0 - lr * lam[i];
        const double decay = pow(a, tt);
        cq[i] = decay * c0[i] + td_implicit_gd_filter(lam[i], lr, tt) / lam[i] * beta[i];
      } else {
        cq[i] = c0[i];
      }
    }
    td_la_gemv(1, (int)d, (int)d, 1.0, VT, cq, 0.0, wc);
    const double loss = ls_loss(tr.X, tr.Y, w, n, d, R);
    if (!isfinite(loss) || loss > 1e12 * (loss0 > 1e-300 ? loss0 : 1e-300)) {
      td_sink_metric(sink, "train_loss_gd", t, loss);
      diverged_at = t;
      break;
    }
    const double cf_err = dist(w, wc, d);
    if (cf_err > max_cf_err) max_cf_err = cf_err;
    td_sink_metric(sink, "train_loss_gd", t, loss);
    td_sink_metric(sink, "gd_closed_form_err", t, cf_err);
    const double risk_gd = pop_risk(w, wt, sd2, d, c.synth.noise);
    td_sink_metric(sink, "risk_gd", t, risk_gd);
    td_sink_metric(sink, "test_loss_gd", t, ls_loss(te.X, te.Y, w, c.n_test, d, R));
    /* min-norm distance and its closed form */
    double mn_th = 0;
    for (size_t i = 0; i < d; i++) {
      if (i < rank) {
        const double e = pow(1.0 - lr * lam[i], tt) * (c0[i] - beta[i] / lam[i]);
        mn_th += e * e;
      } else {
        mn_th += c0[i] * c0[i];
      }
    }
    last_mn = dist(w, wp, d);
    last_mn_th = sqrt(mn_th);
    td_sink_metric(sink, "dist_min_norm", t, last_mn);
    td_sink_metric(sink, "dist_min_norm_theory", t, last_mn_th);
    if (t >= 1) {
      const double mu = 1.0 / (lr * tt);
      for (size_t i = 0; i < d; i++)
        tmp[i] = i < rank ? td_implicit_ridge_filter(lam[i], mu) / lam[i] * beta[i] : 0.0;
      td_la_gemv(1, (int)d, (int)d, 1.0, VT, tmp, 0.0, wr);
      const double risk_r = pop_risk(wr, wt, sd2, d, c.synth.noise);
      td_sink_metric(sink, "ridge_mu", t, mu);
      td_sink_metric(sink, "train_loss_ridge", t, ls_loss(tr.X, tr.Y, wr, n, d, R));
      td_sink_metric(sink, "risk_ridge", t, risk_r);
      td_sink_metric(sink, "test_loss_ridge", t, ls_loss(te.X, te.Y, wr, c.n_test, d, R));
      last_dist = dist(w, wr, d);
      td_sink_metric(sink, "dist_gd_ridge", t, last_dist);
      td_sink_metric(sink, "risk_ratio", t, risk_gd / risk_r);
      if (risk_gd / risk_r > max_ratio) max_ratio = risk_gd / risk_r;
      last_ridge_risk = risk_r;
      /* the filters at three eigenvalues: GD closed form, GD observed (zero start), ridge */
      td_la_gemv(0, (int)d, (int)d, 1.0, VT, w, 0.0, tmp);
      for (int f = 0; f < ES_N_FILTERS; f++) {
        const size_t i = fidx[f];
        char key[64];
        snprintf(key, sizeof key, "filter/%d_gd", f);
        td_sink_metric(sink, key, t, td_implicit_gd_filter(lam[i], lr, tt));
        snprintf(key, sizeof key, "filter/%d_ridge", f);
        td_sink_metric(sink, key, t, td_implicit_ridge_filter(lam[i], mu));
        if (c.zero_init && fabs(beta[i]) > 0) {
          snprintf(key, sizeof key, "filter/%d_gd_observed", f);
          td_sink_metric(sink, key, t, tmp[i] * lam[i] / beta[i]);
        }
      }
    }
    last_gd_risk = risk_gd;
    td_sink_progress(sink, t, c.steps);
    if (t == c.steps) break;
    /* GD step on X itself: g = X^T (X w - y) / n */
    memcpy(R, tr.Y, n * sizeof *R);
    td_la_gemv(0, (int)n, (int)d, 1.0, tr.X, w, -1.0, R);
    td_la_gemv(1, (int)n, (int)d, 1.0 / (double)n, tr.X, R, 0.0, g);
    td_la_axpy(d, -lr, g, w);
  }
  {
    /* artifact: the two filters over the whole spectrum at the last step */
    json_t *a = json_object(), *jl = json_array(), *jg = json_array(), *jr = json_array();
    const double T = (double)c.steps, mu = 1.0 / (lr * T);
    for (size_t i = 0; i < rank; i++) {
      json_array_append_new(jl, json_real(lam[i]));
      json_array_append_new(jg, json_real(td_implicit_gd_filter(lam[i], lr, T)));
      json_array_append_new(jr, json_real(td_implicit_ridge_filter(lam[i], mu)));
    }
    json_object_set_new(a, "step", json_integer(c.steps));
    json_object_set_new(a, "mu", json_real(mu));
    json_object_set_new(a, "lambda", jl);
    json_object_set_new(a, "filter_gd", jg);
    json_object_set_new(a, "filter_ridge", jr);
    char *txt = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (txt) {
      td_sink_artifact(sink, "filters.json", "application/json", txt, strlen(txt));
      free(txt);
    }
  }
  json_t *s = json_object();
  json_object_set_new(s, "rank", json_integer((json_int_t)rank));
  json_object_set_new(s, "lambda_max", json_real(lam[0]));
  json_object_set_new(s, "lambda_min", json_real(lam[rank - 1]));
  json_object_set_new(s, "lr_critical", json_real(2.0 / lam[0]));
  for (int f = 0; f < ES_N_FILTERS; f++) {
    char key[32];
    snprintf(key, sizeof key, "filter_lambda/%d", f);
    json_object_set_new(s, key, json_real(lam[fidx[f]]));
  }
  json_object_set_new(s, "gd_closed_form_err_max", json_real(max_cf_err));
  json_object_set_new(s, "risk_gd", isfinite(last_gd_risk) ? json_real(last_gd_risk) : json_null());
  json_object_set_new(s, "risk_ridge",
                      isfinite(last_ridge_risk) ? json_real(last_ridge_risk) : json_null());
  json_object_set_new(s, "risk_ratio_max", json_real(max_ratio));
  json_object_set_new(s, "risk_noise_floor", json_real(0.5 * c.synth.noise * c.synth.noise));
  json_object_set_new(s, "dist_gd_ridge", isfinite(last_dist) ? json_real(last_dist) : json_null());
  json_object_set_new(s, "dist_min_norm", isfinite(last_mn) ? json_real(last_mn) : json_null());
  json_object_set_new(s, "dist_min_norm_theory",
                      isfinite(last_mn_th) ? json_real(last_mn_th) : json_null());
  if (diverged_at >= 0) {
    json_object_set_new(s, "diverged_step", json_integer(diverged_at));
    rc = td_err_set(err, TD_EDIVERGED, NULL,
                    "early_stopping: the GD loss exceeded 1e12 times its start at step %ld "
                    "(lr %g above lr_critical = 2 / lambda_max = %g)",
                    diverged_at, lr, 2.0 / lam[0]);
  }
  *summary = s;
out:
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(wt); free(sd2); free(Xc); free(sig); free(VT); free(superb); free(lam); free(beta);
  free(c0); free(w); free(g); free(cq); free(wc); free(wr); free(wp); free(tmp); free(R);
  return rc;
}

const td_kind td_kind_early_stopping = {
    .name = "early_stopping",
    .doc = "GD on least squares vs ridge with mu = 1/(eta t): spectral filters, test risks, "
           "distance to the min-norm solution",
    .chapter = "8",
    .params = es_params,
    .n_params = sizeof es_params / sizeof es_params[0],
    .check = es_check,
    .run = es_run,
};
