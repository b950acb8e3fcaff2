/* linreg.c: the `linreg` experiment kind: full-batch GD on least squares vs its closed form (chapter 1).
 *
 * Problem: L(w) = 1/2 * (1/n) * ||X w - Y||_F^2, X (n x d), Y (n x k) (k = 1 for the synthetic
 * teacher, k = 10 one-hot targets for fashion-mnist pixels, then w is d x 10). No bias term.
 * GD: w_{t+1} = w_t - lr * grad, grad = X^T (X w_t - Y) / n = H w_t - b, with
 * H = X^T X / n and b = X^T Y / n (the gradient is computed by the cheaper of the two equal
 * forms; the logged loss is always computed from the residual X w_t - Y itself).
 *
 * Closed form (Grosse, CSC2541 notes, "Taylor approximations / a toy model"; Goh, "Why
 * momentum really works", Distill 2017): with H = Q diag(lambda) Q^T and the
 * minimum-norm minimizer w* = H^+ b = X^+ Y, the error e_t = w_t - w* obeys
 * e_{t+1} = (I - lr H) e_t, so in the eigenbasis c_t = Q^T e_t shrinks coordinate-wise by
 * (1 - lr lambda_i) per step, and
 *   L(w_t) = L* + 1/2 * sum_i lambda_i (1 - lr lambda_i)^(2t) ||c_0[i, :]||^2,
 * where L* = L(w*) is the irreducible loss. Directions with lambda_i = 0 (the null space of X,
 * present when d > n or for constant pixels) do not move under GD and do not change the loss;
 * from a zero start they stay zero, so GD converges to X^+ Y (metric dist_to_min_norm).
 *
 * Spectrum and rank: from the singular value decomposition of X itself, X = U diag(sigma) Q^T
 * (for n > d first X = Q_x R by Householder QR, accumulated over blocks of rows so that X is
 * not copied, then the SVD of R, which has the singular values and right vectors of X; for
 * n <= d the SVD of a copy of X; LAPACK dgeqrf, dgesvd), so lambda_i = sigma_i^2 / n and the
 * eigenvectors of H are the right singular vectors (all d of them, null space included).
 * Forming X^T X first would square the condition number: its eigenvalues carry an absolute
 * error of about eps lambda_max, so sigma_i / sigma_max below about sqrt(eps) could not be
 * resolved. The numerical rank is numpy.linalg.matrix_rank's: the number of singular values
 * sigma_i > sigma_tol = sigma_max * max(n, d) * eps (eps = DBL_EPSILON); zero_threshold =
 * sigma_tol^2 / n is the same cut on the eigenvalues of H. lambda_min (the smallest nonzero
 * eigenvalue), the condition number lambda_max / lambda_min, the min-norm w* (the
 * pseudo-inverse on the rank-r range) and loss_theory all use that rank. The summary reports
 * rank, sigma_tol and zero_threshold.
 *
 * Divergence: the job ends as TD_EDIVERGED when the loss becomes non-finite or exceeds 1e12
 * times the initial loss; and, if the run ends with lr > lr_critical = 2 / lambda_max (an
 * unstable iteration, whose loss grows without bound), at the end with diverged_step = the
 * first step whose loss exceeded the initial loss (or the last step). */
#include <float.h>
#include <jansson.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/data.h"
#include "base/la.h"
#include "base/rng.h"
#include "kinds/registry.h"

#define LINREG_DIVERGE_FACTOR 1e12
#define LINREG_MAX_D 5000

static const td_param linreg_params[] = {
    {"data.name", TD_PT_STR, "\"synthetic\"", 0, 0, "synthetic|fashion-mnist", 0,
     "synthetic linear teacher, or Fashion-MNIST pixels with one-hot targets (w is d x 10)"},
    {"data.n_train", TD_PT_INT, NULL, 1, 60000, NULL, 0,
     "fashion-mnist: the first n_train training examples in file order (absent: all)"},
    {"data.n", TD_PT_INT, "200", 1, 1e6, NULL, 0, "synthetic: number of examples"},
    {"data.d", TD_PT_INT, "50", 1, LINREG_MAX_D, NULL, 0, "synthetic: input dimension"},
    {"data.noise", TD_PT_NUM, "0.1", 0, 1e3, NULL, 0, "synthetic: std of the label noise"},
    {"data.decay", TD_PT_NUM, "0", 0, 10, NULL, 0,
     "synthetic: feature covariance eigenvalues are i^-decay, i = 1..d"},
    {"lr", TD_PT_NUM, "0.1", 1e-12, 1e6, NULL, 0, "learning rate of full-batch GD"},
    {"steps", TD_PT_INT, "100", 1, 1e6, NULL, 0, "GD steps (loss is logged at 0..steps)"},
    {"init", TD_PT_STR, "\"zero\"", 0, 0, "zero|normal", 0,
     "start: w = 0, or w ~ N(0, init_scale^2 / d) from the seed"},
    {"init_scale", TD_PT_NUM, "1", 0, 1e3, NULL, 0, "std multiplier of the normal start"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed of data and start"},
};

typedef struct linreg_cfg {
  int synthetic;
  size_t n, d;
  int k;
  td_synth_cfg synth;
  double lr;
  long steps;
  int zero_init;
  double init_scale;
  uint64_t seed;
} linreg_cfg;

static void parse_cfg(const json_t *p, linreg_cfg *c) {
  memset(c, 0, sizeof *c);
  c->synthetic = strcmp(td_param_str(p, "data.name", "synthetic"), "synthetic") == 0;
  if (c->synthetic) {
    c->n = (size_t)td_param_int(p, "data.n", 200);
    c->d = (size_t)td_param_int(p, "data.d", 50);
    c->k = 1;
    c->synth.d = c->d;
    c->synth.noise = td_param_num(p, "data.noise", 0.1);
    c->synth.decay = td_param_num(p, "data.decay", 0.0);
  } else {
    long nt = td_param_int(p, "data.n_train", 0);
    c->n = nt > 0 ? (size_t)nt : 60000;
    c->d = 784;
    c->k = 10;
  }
  c->lr = td_param_num(p, "lr", 0.1);
  c->steps = td_param_int(p, "steps", 100);
  c->zero_init = strcmp(td_param_str(p, "init", "zero"), "zero") == 0;
  c->init_scale = td_param_num(p, "init_scale", 1.0);
  c->seed = (uint64_t)td_param_int(p, "seed", 0);
}

static int linreg_check(const json_t *params, td_estimate *est, td_err *err) {
  (void)err;
  linreg_cfg c;
  parse_cfg(params, &c);
  double n = (double)c.n, d = (double)c.d, k = c.k;
  /* X, Y, residual; H, eigenvectors, the QR block buffer (2 d^2), R, V^T and LAPACKE's
   * transposed copies; vectors of d x k; for n <= d a copy of X for the SVD. */
  est->bytes = 8.0 * (n * d + 2 * n * k + 10 * d * d + 8 * d * k);
  if (n <= d) est->bytes += 16.0 * n * d;
  if (!c.synthetic) est->bytes += 60000.0 * 785 + 8.0 * n * d; /* IDX buffer, dataset X */
  est->n_params = d * k;
  return 0;
}

static void set_num(json_t *o, const char *key, double v) {
  if (isfinite(v)) json_object_set_new(o, key, json_real(v));
  else json_object_set_new(o, key, json_string(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity"));
}

/* 1/2 mean_i ||R_i||^2 where R = X w - Y (n x k), written to R. */
static double ls_loss(double *R, const double *X, const double *w, const double *Y, size_t n,
                      size_t d, int k) {
  memcpy(R, Y, n * (size_t)k * sizeof *R);
  /* R = X w - Y: X (n x d) NoTrans, w (d x k) NoTrans, beta = -1 on the copy of Y. */
  td_la_gemm(0, 0, (int)n, k, (int)d, 1.0, X, w, -1.0, R);
  double s = td_la_nrm2(n * (size_t)k, R);
  return 0.5 * s * s / (double)n;
}

/* The singular values of X (n x d, borrowed) in sig (d, DESCENDING, zero-padded past
 * min(n, d)) and the right singular vectors as the ROWS of VT (d x d, all d: a basis of the
 * null space completes them), without modifying X. n > d: R of X = Q R by Householder QR
 * over blocks of d rows (S = [R; X_block] is re-factored for each block; R^T R = X^T X and
 * sigma(R) = sigma(X), Golub and Van Loan 4th ed. sec. 5.2 and 8.6), then dgesvd of R;
 * n <= d: dgesvd of a copy of X. Errors: TD_ENOMEM, TD_EINTERNAL (LAPACK failure). */
static int x_svd(const double *X, size_t n, size_t d, double *sig, double *VT, td_err *err) {
  const size_t m = n > d ? d : n; /* rows of the matrix handed to dgesvd */
  double *M = NULL, *S = NULL, *tau = NULL, *superb = NULL;
  int rc = 0;
  lapack_int info = 0;
  M = calloc(m * d, sizeof *M);
  superb = malloc(d * sizeof *superb);
  if (n > d) {
    S = malloc(2 * d * d * sizeof *S);
    tau = malloc(d * sizeof *tau);
  }
  if (!M || !superb || (n > d && (!S || !tau))) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "linreg: out of memory for the SVD (d=%zu)", d);
    goto out;
  }
  if (n > d) {
    /* M holds R (d x d, upper), zero at first. */
    for (size_t r0 = 0; r0 < n && !info; r0 += d) {
      const size_t nb = n - r0 < d ? n - r0 : d;
      memcpy(S, M, d * d * sizeof *S);
      memcpy(S + d * d, X + r0 * d, nb * d * sizeof *S);
      info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)(d + nb), (lapack_int)d, S,
                            (lapack_int)d, tau);
      for (size_t i = 0; i < d; i++)
        for (size_t j = 0; j < d; j++) M[i * d + j] = j >= i ? S[i * d + j] : 0.0;
    }
  } else {
    memcpy(M, X, n * d * sizeof *M);
  }
  for (size_t i = 0; i < d; i++) sig[i] = 0.0;
  if (!info)
    info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'A', (lapack_int)m, (lapack_int)d, M,
                          (lapack_int)d, sig, NULL, 1, VT, (lapack_int)d, superb);
  if (info) rc = td_err_set(err, TD_EINTERNAL, NULL, "linreg: LAPACK QR/SVD failed (info %d)",
                            (int)info);
out:
  free(M);
  free(S);
  free(tau);
  free(superb);
  return rc;
}

static int linreg_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  linreg_cfg c;
  parse_cfg(params, &c);
  td_dataset ds;
  memset(&ds, 0, sizeof ds);
  double *Y = NULL, *H = NULL, *Hc = NULL, *lam = NULL, *b = NULL, *qb = NULL, *wstar = NULL, *w = NULL,
         *R = NULL, *G = NULL, *e2 = NULL, *tmp = NULL, *sig = NULL, *VT = NULL;
  int rc;
  if (c.synthetic) {
    rc = td_data_synthetic(&c.synth, c.n, c.seed, TD_RNG_DATA, &ds, NULL, err);
    if (rc) goto out;
    Y = ds.Y;
    ds.Y = NULL; /* Y is ours now */
  } else {
    rc = td_data_fashion_mnist("train", c.n, &ds, err);
    if (rc) goto out;
    Y = malloc(c.n * (size_t)c.k * sizeof *Y);
    if (!Y) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "linreg: out of memory");
      goto out;
    }
    td_data_onehot(Y, ds.y, c.n, c.k);
  }
  const size_t n = ds.n, d = ds.d;
  const int k = c.k;
  const size_t dk = d * (size_t)k;
  H = malloc(d * d * sizeof *H);
  const int grad_by_h = n > d; /* grad = H w - b is cheaper than X^T (X w - Y) / n */
  if (grad_by_h) Hc = malloc(d * d * sizeof *Hc);
  lam = malloc(d * sizeof *lam);
  b = malloc(dk * sizeof *b);
  qb = malloc(dk * sizeof *qb);
  wstar = malloc(dk * sizeof *wstar);
  w = malloc(dk * sizeof *w);
  G = malloc(dk * sizeof *G);
  tmp = malloc(dk * sizeof *tmp);
  e2 = malloc(d * sizeof *e2);
  R = malloc(n * (size_t)k * sizeof *R);
  sig = malloc(d * sizeof *sig);
  VT = malloc(d * d * sizeof *VT);
  if (!sig || !VT || !H || (grad_by_h && !Hc) || !lam || !b || !qb || !wstar || !w || !G || !tmp || !e2 || !R) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "linreg: out of memory (d=%zu, n=%zu)", d, n);
    goto out;
  }

  /* b = X^T Y / n (X (n x d) Trans, Y (n x k) NoTrans); Hc = X^T X / n for the gradient. */
  td_la_gemm(1, 0, (int)d, k, (int)n, 1.0 / (double)n, ds.X, Y, 0.0, b);
  if (grad_by_h) td_la_ata((int)n, (int)d, 1.0 / (double)n, ds.X, Hc);
  /* Spectrum from the SVD of X (see the header): lam ascending, H holds Q as COLUMNS
   * (column i = right singular vector of lam[i]); a singular value is nonzero iff it exceeds
   * numpy's matrix_rank tolerance sigma_tol. */
  if ((rc = x_svd(ds.X, n, d, sig, VT, err))) goto out;
  const double sigma_tol = sig[0] * (double)(n > d ? n : d) * DBL_EPSILON;
  const double thr = sigma_tol * sigma_tol / (double)n; /* the same cut on lambda */
  size_t rank = 0; /* the nonzero ones are the last `rank` of the ascending lam */
  for (size_t i = 0; i < d; i++) {
    const size_t si = d - 1 - i; /* ascending order */
    lam[i] = sig[si] * sig[si] / (double)n;
    rank += sig[si] > sigma_tol;
    for (size_t r = 0; r < d; r++) H[r * d + i] = VT[si * d + r];
  }
  const double lmax = lam[d - 1];
  const double lmin = rank ? lam[d - rank] : NAN;
  if (!rank) {
    rc = td_err_set(err, TD_EINVAL, "params.data", "linreg: X is zero, the Hessian vanishes");
    goto out;
  }

  /* w* = Q diag(1/lambda on the range) Q^T b: qb = Q^T b (Q stored d x d, Trans), scale rows,
   * then w* = Q qb (NoTrans). */
  td_la_gemm(1, 0, (int)d, k, (int)d, 1.0, H, b, 0.0, qb);
  for (size_t i = 0; i < d; i++)
    for (int j = 0; j < k; j++) qb[i * k + j] = i >= d - rank ? qb[i * k + j] / lam[i] : 0.0;
  td_la_gemm(0, 0, (int)d, k, (int)d, 1.0, H, qb, 0.0, wstar);
  const double loss_star = ls_loss(R, ds.X, wstar, Y, n, d, k);

  /* Start and its eigen-coordinates c0 = Q^T (w0 - w*); e2[i] = ||c0[i,:]||^2. */
  if (c.zero_init) {
    memset(w, 0, dk * sizeof *w);
  } else {
    td_rng r;
    td_rng_init(&r, c.seed, TD_RNG_INIT);
    td_rng_fill_normal(&r, w, dk, c.init_scale / sqrt((double)d));
  }
  for (size_t i = 0; i < dk; i++) tmp[i] = w[i] - wstar[i];
  td_la_gemm(1, 0, (int)d, k, (int)d, 1.0, H, tmp, 0.0, qb);
  for (size_t i = 0; i < d; i++) {
    double s = 0.0;
    for (int j = 0; j < k; j++) s += qb[i * k + j] * qb[i * k + j];
    e2[i] = s;
  }

  /* Eigenvalues as an artifact (ascending). */
  json_t *eig = json_array();
  for (size_t i = 0; eig && i < d; i++) json_array_append_new(eig, json_real(lam[i]));
  json_t *art = json_pack("{s:o, s:f, s:f, s:I}", "eigenvalues", eig, "zero_threshold", thr,
                          "sigma_tol", sigma_tol, "rank", (json_int_t)rank);
  if (art) {
    char *txt = json_dumps(art, JSON_COMPACT);
    if (txt) td_sink_artifact(sink, "eigenvalues.json", "application/json", txt, strlen(txt));
    free(txt);
    json_decref(art);
  }

  const double lr = c.lr, lr_crit = 2.0 / lmax;
  double loss = NAN, loss0 = NAN, theory = NAN, max_rel = 0.0, dist = NAN;
  long t = 0, diverged_step = 0, first_rise = 0;
  td_sink_progress(sink, 0, c.steps);
  for (t = 0;; t++) {
    loss = ls_loss(R, ds.X, w, Y, n, d, k);
    double tr = 0.0;
    for (size_t i = d - rank; i < d; i++) {
      double f = 1.0 - lr * lam[i];
      tr += lam[i] * pow(f, 2.0 * (double)t) * e2[i];
    }
    theory = loss_star + 0.5 * tr;
    if (t == 0) loss0 = loss;
    if ((rc = td_sink_metric(sink, "loss", t, loss))) break;
    if ((rc = td_sink_metric(sink, "loss_theory", t, theory))) break;
    if (c.zero_init) {
      for (size_t i = 0; i < dk; i++) tmp[i] = w[i] - wstar[i];
      dist = td_la_nrm2(dk, tmp);
      if ((rc = td_sink_metric(sink, "dist_to_min_norm", t, dist))) break;
    }
    if (!isfinite(loss) || loss > LINREG_DIVERGE_FACTOR * (loss0 > 0 ? loss0 : DBL_MIN)) {
      diverged_step = t;
      break;
    }
    if (!first_rise && loss > loss0) first_rise = t;
    double rel = fabs(loss - theory) / fmax(fabs(theory), DBL_MIN);
    if (rel > max_rel) max_rel = rel;
    td_sink_progress(sink, t, c.steps);
    if (t == c.steps) break;
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", t);
      break;
    }
    /* The gradient X^T (X w - Y) / n = H w - b. When n > d the second form is cheaper
     * (d^2 k instead of n d k flops): G = H w - b (H (d x d), w (d x k), beta = -1 on b).
     * Otherwise G = X^T R / n with the residual R from the loss (X (n x d) Trans). */
    if (grad_by_h) {
      memcpy(G, b, dk * sizeof *G);
      td_la_gemm(0, 0, (int)d, k, (int)d, 1.0, Hc, w, -1.0, G);
    } else {
      td_la_gemm(1, 0, (int)d, k, (int)n, 1.0 / (double)n, ds.X, R, 0.0, G);
    }
    td_la_axpy(dk, -lr, G, w);
  }
  if (!rc && !diverged_step && lr > lr_crit) diverged_step = first_rise ? first_rise : c.steps;

  json_t *sum = json_object();
  if (sum) {
    set_num(sum, "lambda_max", lmax);
    set_num(sum, "lambda_min", lmin);
    set_num(sum, "condition_number", lmax / lmin);
    json_object_set_new(sum, "rank", json_integer((json_int_t)rank));
    set_num(sum, "zero_threshold", thr);
    set_num(sum, "sigma_tol", sigma_tol);
    set_num(sum, "sigma_max", sig[0]);
    set_num(sum, "lr_critical", lr_crit);
    set_num(sum, "lr_optimal", 2.0 / (lmax + lmin));
    set_num(sum, "loss_star", loss_star);
    set_num(sum, "loss", loss);
    set_num(sum, "loss_theory", theory);
    set_num(sum, "max_rel_err", max_rel);
    json_object_set_new(sum, "n", json_integer((json_int_t)n));
    json_object_set_new(sum, "d", json_integer((json_int_t)d));
    if (c.zero_init) set_num(sum, "dist_to_min_norm", dist);
    if (diverged_step) json_object_set_new(sum, "diverged_step", json_integer(diverged_step));
  }
  *summary = sum;
  if (!rc && diverged_step)
    rc = td_err_set(err, TD_EDIVERGED, NULL,
                    "diverged at step %ld: lr %.4g vs lr_critical 2/lambda_max = %.4g",
                    diverged_step, lr, lr_crit);
out:
  td_dataset_deinit(&ds);
  free(Y);
  free(H);
  free(Hc);
  free(lam);
  free(b);
  free(qb);
  free(wstar);
  free(w);
  free(G);
  free(tmp);
  free(e2);
  free(R);
  free(sig);
  free(VT);
  return rc;
}

const td_kind td_kind_linreg = {
    .name = "linreg",
    .doc = "Full-batch GD on least squares; observed loss vs the eigenbasis closed form",
    .chapter = "1",
    .params = linreg_params,
    .n_params = sizeof linreg_params / sizeof linreg_params[0],
    .check = linreg_check,
    .run = linreg_run,
};
