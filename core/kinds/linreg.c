/* linreg.c: the `linreg` experiment kind: full-batch GD on least squares vs its closed form (chapter 1).
 *
 * Problem: L(w) = 1/2 * (1/n) * ||X w - Y||_F^2, X (n x d), Y (n x k) (k = 1 for the synthetic
 * teacher, k = 10 one-hot targets for fashion-mnist pixels, then w is d x 10). No bias term.
 * GD: w_{t+1} = w_t - lr * grad, grad = X^T (X w_t - Y) / n = H w_t - b, with
 * H = X^T X / n and b = X^T Y / n (the gradient is computed by the cheaper of the two equal
 * forms; the logged loss is always computed from the residual X w_t - Y itself).
 *
 * Closed form (Grosse, CSC2541 notes, "Taylor approximations / a toy model"; Goh, "Why
 * momentum really works", Distill 2017): with H = Q diag(lambda) Q^T (LAPACK dsyevd) and the
 * minimum-norm minimizer w* = H^+ b = X^+ Y, the error e_t = w_t - w* obeys
 * e_{t+1} = (I - lr H) e_t, so in the eigenbasis c_t = Q^T e_t shrinks coordinate-wise by
 * (1 - lr lambda_i) per step, and
 *   L(w_t) = L* + 1/2 * sum_i lambda_i (1 - lr lambda_i)^(2t) ||c_0[i, :]||^2,
 * where L* = L(w*) is the irreducible loss. Directions with lambda_i = 0 (the null space of X,
 * present when d > n or for constant pixels) do not move under GD and do not change the loss;
 * from a zero start they stay zero, so GD converges to X^+ Y (metric dist_to_min_norm).
 *
 * Zero threshold: an eigenvalue counts as nonzero when lambda > lambda_max * max(n, d) * eps
 * (eps = DBL_EPSILON), the rank tolerance of numpy.linalg.matrix_rank / pinv. lambda_min is
 * the smallest nonzero eigenvalue.
 *
 * Divergence: the job ends as TD_EDIVERGED when the loss becomes non-finite or exceeds 1e12
 * times the initial loss; and, if the run ends with lr > lr_critical = 2 / lambda_max (an
 * unstable iteration, whose loss grows without bound), at the end with diverged_step = the
 * first step whose loss exceeded the initial loss (or the last step). */
#include <float.h>
#include <jansson.h>
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
  /* X, Y, residual; H, eigenvectors, LAPACKE's transposed copies; vectors of d x k. */
  est->bytes = 8.0 * (n * d + 2 * n * k + 5 * d * d + 8 * d * k);
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

static int linreg_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  linreg_cfg c;
  parse_cfg(params, &c);
  td_dataset ds;
  memset(&ds, 0, sizeof ds);
  double *Y = NULL, *H = NULL, *Hc = NULL, *lam = NULL, *b = NULL, *qb = NULL, *wstar = NULL, *w = NULL,
         *R = NULL, *G = NULL, *e2 = NULL, *tmp = NULL;
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
  if (!H || (grad_by_h && !Hc) || !lam || !b || !qb || !wstar || !w || !G || !tmp || !e2 || !R) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "linreg: out of memory (d=%zu, n=%zu)", d, n);
    goto out;
  }

  /* H = X^T X / n and b = X^T Y / n (X (n x d) Trans, Y (n x k) NoTrans). */
  td_la_ata((int)n, (int)d, 1.0 / (double)n, ds.X, H);
  td_la_gemm(1, 0, (int)d, k, (int)n, 1.0 / (double)n, ds.X, Y, 0.0, b);
  if (grad_by_h) memcpy(Hc, H, d * d * sizeof *H);
  if ((rc = td_la_syevd((int)d, H, lam, err))) goto out; /* H now holds Q (columns) */
  const double lmax = lam[d - 1];
  const double thr = (lmax > 0 ? lmax : 0.0) * (double)(n > d ? n : d) * DBL_EPSILON;
  size_t rank = 0;
  double lmin = NAN;
  for (size_t i = 0; i < d; i++)
    if (lam[i] > thr) {
      if (!rank) lmin = lam[i];
      rank++;
    }
  if (!rank) {
    rc = td_err_set(err, TD_EINVAL, "params.data", "linreg: X is zero, the Hessian vanishes");
    goto out;
  }

  /* w* = Q diag(1/lambda on the range) Q^T b: qb = Q^T b (Q stored d x d, Trans), scale rows,
   * then w* = Q qb (NoTrans). */
  td_la_gemm(1, 0, (int)d, k, (int)d, 1.0, H, b, 0.0, qb);
  for (size_t i = 0; i < d; i++)
    for (int j = 0; j < k; j++) qb[i * k + j] = lam[i] > thr ? qb[i * k + j] / lam[i] : 0.0;
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
  json_t *art = json_pack("{s:o, s:f}", "eigenvalues", eig, "zero_threshold", thr);
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
    for (size_t i = 0; i < d; i++)
      if (lam[i] > thr) {
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
