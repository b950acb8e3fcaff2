/* blr.c: the `blr` kind: Bayesian linear regression with its exact posterior and log marginal
 * likelihood (evidence), beside the Laplace evidence of bayes/laplace.h, which must equal it
 * (chapter 8: the ground truth of the Laplace kind).
 *
 * Model (Bishop 2006, "Pattern Recognition and Machine Learning", sec. 3.3 and 3.5): the
 * synthetic linear teacher of nn/data.h (x ~ N(0, diag(i^-decay)), y = <w*, x> + noise e),
 * features phi(x) = [x, 1] (a bias with the same prior, as the network's last layer has),
 * likelihood y ~ N(<w, phi>, sigma2) with sigma2 = likelihood_var (absent: data.noise^2),
 * prior w ~ N(0, I / alpha). Exact posterior: precision A = Phi^T Phi / sigma2 + alpha I, mean
 * m = A^{-1} Phi^T y / sigma2 (eq. 3.53-3.54); exact evidence log N(y; 0, sigma2 I + Phi Phi^T
 * / alpha) by an n x n Cholesky (td_laplace_blr_evidence).
 * Laplace: the one-layer linear MLP (in d, out 1) with squared error (td_laplace_fit, FULL
 * structure, whose likelihood has unit variance) at the exact MAP m for each alpha; its fields
 * give the residual sum of squares and the GGN eigenvalues ev, and the Laplace evidence with
 * noise variance sigma2 is MacKay's formula with the likelihood's Hessian N ev / sigma2:
 *   -RSS/(2 sigma2) - n/2 log(2 pi sigma2) - alpha/2 ||m||^2 + q/2 log alpha
 *   - 1/2 sum log(N ev / sigma2 + alpha)
 * (td_laplace_log_marglik itself for sigma2 = 1).
 * Metrics over a log-spaced grid of alpha (step i = 0..grid-1): alpha, log_evidence (exact),
 * log_evidence_laplace, and log_evidence_err = their difference (rounding level: a Gaussian
 * model's Laplace approximation is exact). Summary: alpha_opt (the maximizer of the exact
 * evidence by golden section on the Laplace objective, td_laplace_optimize_prior, checked
 * against the exact one), the posterior mean and std at alpha_opt beside the teacher
 * (artifact posterior.json), and the largest |log_evidence_err|. */
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "bayes/laplace.h"
#include "kinds/registry.h"
#include "nn/data.h"
#include "nn/model.h"

static const td_param blr_params[] = {
    {"data.n", TD_PT_INT, "50", 1, 5000, NULL, 0, "examples of the linear teacher"},
    {"data.d", TD_PT_INT, "10", 1, 200, NULL, 0, "input dimension"},
    {"data.noise", TD_PT_NUM, "0.5", 1e-6, 1e3, NULL, 0, "std of the teacher's label noise"},
    {"data.decay", TD_PT_NUM, "0", 0, 10, NULL, 0, "feature covariance eigenvalues i^-decay"},
    {"likelihood_var", TD_PT_NUM, NULL, 1e-12, 1e6, NULL, 0,
     "sigma2 of the likelihood (absent: data.noise^2, the true one)"},
    {"grid", TD_PT_INT, "41", 2, 1000, NULL, 0, "alphas in [1e-3, 1e3], log-spaced"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of teacher and data"},
};

/* m (d+1) = the exact posterior mean at alpha, from Phi (n x q), y, sigma2; S (q x q, OUT, may
 * be NULL) the posterior covariance. */
static int post_mean(const double *Phi, const double *y, int n, int q, double alpha,
                     double sigma2, double *m, double *S) {
  double *A = malloc((size_t)q * q * sizeof *A);
  if (!A) return TD_ENOMEM;
  td_la_gemm(1, 0, q, q, n, 1.0 / sigma2, Phi, Phi, 0.0, A);
  for (int j = 0; j < q; j++) A[j * q + j] += alpha;
  td_la_gemv(1, n, q, 1.0 / sigma2, Phi, y, 0.0, m);
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', q, A, q);
  if (!info) info = LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'L', q, 1, A, q, m, 1);
  if (!info && S) {
    info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', q, A, q);
    for (int i = 0; i < q; i++)
      for (int j = 0; j < q; j++) S[i * q + j] = i >= j ? A[i * q + j] : A[j * q + i];
  }
  free(A);
  return info ? TD_EINTERNAL : 0;
}

static int blr_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  const int n = (int)td_param_int(params, "data.n", 50), d = (int)td_param_int(params, "data.d", 10);
  const int q = d + 1, grid = (int)td_param_int(params, "grid", 41);
  td_synth_cfg sc = {.d = (size_t)d, .noise = td_param_num(params, "data.noise", 0.5),
                     .decay = td_param_num(params, "data.decay", 0)};
  const double sigma2 = td_param_num(params, "likelihood_var", sc.noise * sc.noise);
  td_dataset ds;
  memset(&ds, 0, sizeof ds);
  td_mlp *mlp = NULL;
  double *Phi = malloc((size_t)n * q * sizeof *Phi), *wt = malloc((size_t)d * sizeof *wt),
         *m = malloc((size_t)q * sizeof *m), *S = malloc((size_t)q * q * sizeof *S),
         *th = NULL;
  int rc = 0;
  if (!Phi || !wt || !m || !S) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "blr: out of memory");
    goto out;
  }
  if ((rc = td_data_synthetic(&sc, (size_t)n, (uint64_t)td_param_int(params, "seed", 0),
                              TD_RNG_DATA, &ds, wt, err)))
    goto out;
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < d; j++) Phi[i * q + j] = ds.X[(size_t)i * d + j];
    Phi[i * q + d] = 1.0;
  }
  td_mlp_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.in_dim = d;
  cfg.out_dim = 1;
  cfg.act = TD_ACT_LINEAR;
  cfg.init_scale = 1;
  if ((rc = td_mlp_create(&cfg, &mlp, err))) goto out;
  th = malloc(mlp->n_params * sizeof *th); /* W (1 x d) then b: the layout of m */
  if (!th) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "blr: out of memory");
    goto out;
  }
  double worst = 0, best_exact = -INFINITY, best_alpha = NAN;
  for (int i = 0; i < grid; i++) {
    if (td_sink_should_stop(sink)) {
      rc = TD_ECANCELLED;
      goto out;
    }
    const double alpha = pow(10.0, -3.0 + 6.0 * i / (grid - 1));
    double ex = 0;
    if ((rc = td_laplace_blr_evidence(Phi, ds.Y, n, q, alpha, sigma2, &ex, err))) goto out;
    if ((rc = post_mean(Phi, ds.Y, n, q, alpha, sigma2, m, NULL))) {
      rc = td_err_set(err, rc, NULL, "blr: the posterior precision is not positive definite");
      goto out;
    }
    memcpy(th, m, (size_t)q * sizeof *th);
    td_laplace *L = NULL;
    if ((rc = td_laplace_fit(mlp, th, &ds, TD_CURV_MSE, TD_LAPLACE_FULL, TD_LAPLACE_ALL, 256, &L, err)))
      goto out;
    const double log2pi = log(2.0 * M_PI);
    const double rss = -2.0 * (L->loglik + 0.5 * n * log2pi);
    double logdet = 0;
    for (size_t p = 0; p < L->P; p++) logdet += log(L->n_data * L->ev[p] / sigma2 + alpha);
    const double lap = -rss / (2.0 * sigma2) - 0.5 * n * (log2pi + log(sigma2)) -
                       0.5 * alpha * L->theta_sq + 0.5 * (double)L->P * log(alpha) - 0.5 * logdet;
    td_laplace_destroy(L);
    td_sink_metric(sink, "alpha", i, alpha);
    td_sink_metric(sink, "log_evidence", i, ex);
    td_sink_metric(sink, "log_evidence_laplace", i, lap);
    td_sink_metric(sink, "log_evidence_err", i, lap - ex);
    if (fabs(lap - ex) > worst) worst = fabs(lap - ex);
    if (ex > best_exact) {
      best_exact = ex;
      best_alpha = alpha;
    }
    td_sink_progress(sink, i + 1, grid);
  }
  /* alpha_opt: golden section on the exact evidence around the best grid point */
  double a = log(best_alpha) - 6.0 * log(10.0) / (grid - 1), b = log(best_alpha) + 6.0 * log(10.0) / (grid - 1);
  const double gr = 0.5 * (sqrt(5.0) - 1.0);
  for (int it = 0; it < 200 && b - a > 1e-10; it++) {
    const double x1 = b - gr * (b - a), x2 = a + gr * (b - a);
    double f1, f2;
    if ((rc = td_laplace_blr_evidence(Phi, ds.Y, n, q, exp(x1), sigma2, &f1, err)) ||
        (rc = td_laplace_blr_evidence(Phi, ds.Y, n, q, exp(x2), sigma2, &f2, err)))
      goto out;
    if (f1 > f2) b = x2;
    else a = x1;
  }
  const double alpha_opt = exp(0.5 * (a + b));
  double ev_opt = 0;
  if ((rc = td_laplace_blr_evidence(Phi, ds.Y, n, q, alpha_opt, sigma2, &ev_opt, err))) goto out;
  if ((rc = post_mean(Phi, ds.Y, n, q, alpha_opt, sigma2, m, S))) {
    rc = td_err_set(err, rc, NULL, "blr: the posterior precision is not positive definite");
    goto out;
  }
  {
    json_t *o = json_object(), *jm = json_array(), *js = json_array(), *jt = json_array();
    double e2 = 0;
    for (int j = 0; j < q; j++) {
      json_array_append_new(jm, json_real(m[j]));
      json_array_append_new(js, json_real(sqrt(S[j * q + j])));
      json_array_append_new(jt, json_real(j < d ? wt[j] : 0.0));
      const double e = m[j] - (j < d ? wt[j] : 0.0);
      e2 += e * e;
    }
    json_object_set_new(o, "alpha", json_real(alpha_opt));
    json_object_set_new(o, "mean", jm);
    json_object_set_new(o, "std", js);
    json_object_set_new(o, "teacher", jt);
    char *txt = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (txt) {
      rc = td_sink_artifact(sink, "posterior.json", "application/json", txt, strlen(txt));
      free(txt);
    }
    json_t *sm = json_object();
    json_object_set_new(sm, "alpha_opt", json_real(alpha_opt));
    json_object_set_new(sm, "log_evidence_opt", json_real(ev_opt));
    json_object_set_new(sm, "log_evidence_err_max", json_real(worst));
    json_object_set_new(sm, "sigma2", json_real(sigma2));
    json_object_set_new(sm, "mean_err", json_real(sqrt(e2)));
    *summary = sm;
  }
out:
  td_dataset_deinit(&ds);
  td_mlp_destroy(mlp);
  free(Phi);
  free(wt);
  free(m);
  free(S);
  free(th);
  return rc;
}

const td_kind td_kind_blr = {
    .name = "blr",
    .doc = "Bayesian linear regression: exact posterior and evidence beside the Laplace evidence "
           "(equal for a Gaussian model); the evidence-maximizing prior",
    .chapter = "8",
    .params = blr_params,
    .n_params = sizeof blr_params / sizeof blr_params[0],
    .run = blr_run,
};
