/* laplace.c: Laplace posteriors of an MLP (full / K-FAC / diagonal GGN), the marginal
 * likelihood, posterior predictives, calibration, and the BLR evidence (laplace.h). */
#include "bayes/laplace.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "nn/loss.h"
#include "optim/kfac.h"

#define LOG_2PI 1.8378770664093454836

void td_laplace_destroy(td_laplace *L) {
  if (!L) return;
  free(L->theta);
  free(L->V);
  free(L->ev);
  for (int b = 0; b < L->n_blk; b++) {
    free(L->blk[b].QA);
    free(L->blk[b].sA);
    free(L->blk[b].QG);
    free(L->blk[b].sG);
  }
  free(L);
}

/* The linear layer with index j, or NULL. */
static const td_layer *linear_layer(const td_mlp *m, int j) {
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].kind == TD_LAYER_LINEAR && m->layers[i].index == j) return &m->layers[i];
  return NULL;
}

/* Eigendecomposition of a symmetric n x n matrix copied from S: Q (columns), s (clamped >= 0). */
static int eig_copy(const double *S, int n, double **Q, double **s, td_err *err) {
  *Q = malloc((size_t)n * n * sizeof **Q);
  *s = malloc((size_t)n * sizeof **s);
  if (!*Q || !*s) return td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory");
  memcpy(*Q, S, (size_t)n * n * sizeof **Q);
  int rc = td_la_syevd(n, *Q, *s, err);
  if (rc) return rc;
  for (int i = 0; i < n; i++)
    if ((*s)[i] < 0) (*s)[i] = 0.0;
  return 0;
}

int td_laplace_fit(const td_mlp *m, const double *params, const td_dataset *ds,
                   td_curv_loss loss, td_laplace_struct st, td_laplace_subset sub, int chunk,
                   td_laplace **out, td_err *err) {
  *out = NULL;
  if (!m || !params || !ds || ds->n < 1 || chunk < 1)
    return td_err_set(err, TD_EINVAL, NULL, "laplace: need a model, parameters and data");
  if (m->n_norm > 0)
    return td_err_set(err, TD_EINVAL, "params.model", "laplace: normalization layers are not supported");
  if (loss == TD_CURV_XENT && !ds->y)
    return td_err_set(err, TD_EINVAL, "params.loss", "laplace: cross-entropy needs labels");
  const size_t n_all = m->n_params;
  const int K = m->cfg.out_dim;
  const td_layer *last = linear_layer(m, m->n_linear - 1);
  size_t off = 0, P = n_all;
  if (sub == TD_LAPLACE_LAST_LAYER) {
    off = last->off;
    P = last->n_params;
  }
  if (st == TD_LAPLACE_FULL && P > TD_LAPLACE_MAX_FULL)
    return td_err_set(err, TD_EINVAL, "params.laplace.structure",
                      "laplace: the full GGN of %zu parameters is above the cap of %d; use "
                      "kfac, diag or subset last_layer",
                      P, TD_LAPLACE_MAX_FULL);
  const size_t N = ds->n;
  if (st == TD_LAPLACE_KFAC) { /* the largest divisor of N not above chunk */
    int c = chunk < (int)N ? chunk : (int)N;
    while (N % (size_t)c) c--;
    chunk = c;
  }
  if (chunk > (int)N) chunk = (int)N;
  td_laplace *L = calloc(1, sizeof *L);
  if (!L) return td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory");
  L->m = m;
  L->st = st;
  L->sub = sub;
  L->loss = loss;
  L->off = off;
  L->P = P;
  L->n_data = (double)N;
  td_curv_ctx c;
  memset(&c, 0, sizeof c);
  td_kfac *kf = NULL;
  double *u = NULL, *G = NULL;
  int rc = 0;
  L->theta = malloc(n_all * sizeof *L->theta);
  if (!L->theta) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory");
    goto fail;
  }
  memcpy(L->theta, params, n_all * sizeof *L->theta);
  L->theta_sq = td_la_dot(P, params + off, params + off);
  if ((rc = td_curv_init(&c, m, chunk, err))) goto fail;
  td_curv_set_mode(&c, TD_MLP_EVAL);
  if (st == TD_LAPLACE_KFAC) {
    td_kfac_hp hp = {.decay = 1.0, .inverse_every = 1, .fisher = TD_KFAC_FISHER_EXACT, .seed = 0};
    if ((rc = td_kfac_create(m, chunk, &hp, &kf, err))) goto fail;
  } else {
    u = malloc((size_t)chunk * K * sizeof *u);
    G = malloc((size_t)chunk * n_all * sizeof *G);
    if (st == TD_LAPLACE_FULL) L->V = calloc(P * P, sizeof *L->V);
    L->ev = calloc(P, sizeof *L->ev);
    if (!u || !G || !L->ev || (st == TD_LAPLACE_FULL && !L->V)) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory (P = %zu)", P);
      goto fail;
    }
  }
  double loglik = 0;
  for (size_t s0 = 0; s0 < N; s0 += (size_t)chunk) {
    const int B = (int)(N - s0 < (size_t)chunk ? N - s0 : (size_t)chunk);
    if ((rc = td_curv_set_batch(&c, ds->X + s0 * ds->d, ds->y ? ds->y + s0 : NULL,
                                ds->Y ? ds->Y + s0 * (size_t)K : NULL, B, loss, err)))
      goto fail;
    if ((rc = td_curv_set_point(&c, params, err))) goto fail;
    loglik -= B * c.loss_value;
    if (loss == TD_CURV_MSE) loglik -= 0.5 * B * K * LOG_2PI;
    if (kf) {
      if ((rc = td_kfac_update(kf, &c, err))) goto fail;
      continue;
    }
    /* The K cotangents per example whose outer products sum to H_i: sqrt(p_k) (p - e_k)
     * (softmax: sum_k p_k (p - e_k)(p - e_k)^T = diag(p) - p p^T) or e_k (squared error). */
    for (int k = 0; k < K; k++) {
      for (int i = 0; i < B; i++)
        for (int l = 0; l < K; l++) {
          if (loss == TD_CURV_XENT) {
            const double *p = c.prob + (size_t)i * K;
            u[(size_t)i * K + l] = sqrt(p[k]) * (p[l] - (l == k));
          } else {
            u[(size_t)i * K + l] = l == k;
          }
        }
      td_curv_per_example_vjp(&c, u, G);
      if (st == TD_LAPLACE_FULL) {
        /* V += (1/N) Gs^T Gs, Gs the subset columns of G (B x P, leading dimension n_all) */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)P, (int)P, B, 1.0 / (double)N,
                    G + off, (int)n_all, G + off, (int)n_all, 1.0, L->V, (int)P);
      } else {
        for (int i = 0; i < B; i++) {
          const double *g = G + (size_t)i * n_all + off;
          for (size_t p = 0; p < P; p++) L->ev[p] += g[p] * g[p] / (double)N;
        }
      }
    }
  }
  L->loglik = loglik;
  if (st == TD_LAPLACE_FULL) {
    if ((rc = td_la_syevd((int)P, L->V, L->ev, err))) goto fail;
    for (size_t p = 0; p < P; p++)
      if (L->ev[p] < 0) L->ev[p] = 0.0;
  } else if (st == TD_LAPLACE_KFAC) {
    const int j0 = sub == TD_LAPLACE_LAST_LAYER ? m->n_linear - 1 : 0;
    for (int j = j0; j < m->n_linear; j++) {
      const td_layer *ly = linear_layer(m, j);
      td_laplace_blk *b = &L->blk[L->n_blk++];
      int da = 0, dg = 0;
      const double *A = td_kfac_factor_a(kf, j, &da), *Gf = td_kfac_factor_g(kf, j, &dg);
      b->layer = j;
      b->off = ly->off;
      b->n_in = ly->n_in;
      b->n_out = ly->n_out;
      if ((rc = eig_copy(A, da, &b->QA, &b->sA, err)) || (rc = eig_copy(Gf, dg, &b->QG, &b->sG, err)))
        goto fail;
    }
  }
  td_kfac_destroy(kf);
  td_curv_deinit(&c);
  free(u);
  free(G);
  *out = L;
  return 0;
fail:
  td_kfac_destroy(kf);
  td_curv_deinit(&c);
  free(u);
  free(G);
  td_laplace_destroy(L);
  return rc;
}

double td_laplace_log_marglik(const td_laplace *L, double delta) {
  const double N = L->n_data;
  double logdet = 0;
  if (L->st == TD_LAPLACE_KFAC) {
    for (int b = 0; b < L->n_blk; b++) {
      const td_laplace_blk *k = &L->blk[b];
      for (int p = 0; p < k->n_out; p++)
        for (int q = 0; q <= k->n_in; q++) logdet += log(N * k->sG[p] * k->sA[q] + delta);
    }
  } else {
    for (size_t p = 0; p < L->P; p++) logdet += log(N * L->ev[p] + delta);
  }
  return L->loglik - 0.5 * delta * L->theta_sq + 0.5 * (double)L->P * log(delta) - 0.5 * logdet;
}

double td_laplace_optimize_prior(const td_laplace *L, double lo, double hi, double *lml) {
  const int n = 81;
  const double a = log(lo), b = log(hi);
  int best = 0;
  double fb = -INFINITY;
  for (int i = 0; i < n; i++) {
    const double f = td_laplace_log_marglik(L, exp(a + (b - a) * i / (n - 1)));
    if (f > fb) {
      fb = f;
      best = i;
    }
  }
  /* golden section on [x_{best-1}, x_{best+1}] in log delta */
  double x0 = a + (b - a) * (best > 0 ? best - 1 : 0) / (n - 1);
  double x3 = a + (b - a) * (best < n - 1 ? best + 1 : n - 1) / (n - 1);
  const double gr = 0.5 * (sqrt(5.0) - 1.0);
  double x1 = x3 - gr * (x3 - x0), x2 = x0 + gr * (x3 - x0);
  double f1 = td_laplace_log_marglik(L, exp(x1)), f2 = td_laplace_log_marglik(L, exp(x2));
  for (int it = 0; it < 200 && x3 - x0 > 1e-10; it++) {
    if (f1 > f2) {
      x3 = x2;
      x2 = x1;
      f2 = f1;
      x1 = x3 - gr * (x3 - x0);
      f1 = td_laplace_log_marglik(L, exp(x1));
    } else {
      x0 = x1;
      x1 = x2;
      f1 = f2;
      x2 = x0 + gr * (x3 - x0);
      f2 = td_laplace_log_marglik(L, exp(x2));
    }
  }
  double x = 0.5 * (x0 + x3), f = td_laplace_log_marglik(L, exp(x));
  if (fb > f) { /* the maximum sits at a grid end */
    x = a + (b - a) * best / (n - 1);
    f = fb;
  }
  if (lml) *lml = f;
  return exp(x);
}

/* Local index (in the subset vector) of entry (o, i) of block k's V = [W | b]. */
static size_t blk_index(const td_laplace *L, const td_laplace_blk *k, int o, int i) {
  const size_t base = k->off - L->off;
  return i < k->n_in ? base + (size_t)o * k->n_in + i
                     : base + (size_t)k->n_out * k->n_in + o;
}

int td_laplace_sample(const td_laplace *L, double delta, td_rng *r, double *d, td_err *err) {
  const double N = L->n_data;
  const size_t n_all = L->m->n_params;
  memset(d, 0, n_all * sizeof *d);
  double *ds = d + L->off;
  if (L->st == TD_LAPLACE_DIAG) {
    for (size_t p = 0; p < L->P; p++) ds[p] = td_rng_normal(r) / sqrt(N * L->ev[p] + delta);
    return 0;
  }
  if (L->st == TD_LAPLACE_FULL) {
    double *z = malloc(L->P * sizeof *z);
    if (!z) return td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory");
    for (size_t p = 0; p < L->P; p++) z[p] = td_rng_normal(r) / sqrt(N * L->ev[p] + delta);
    td_la_gemv(0, (int)L->P, (int)L->P, 1.0, L->V, z, 0.0, ds); /* V z */
    free(z);
    return 0;
  }
  size_t mx = 0;
  for (int b = 0; b < L->n_blk; b++) {
    const size_t s = (size_t)L->blk[b].n_out * (L->blk[b].n_in + 1);
    if (s > mx) mx = s;
  }
  double *Z = malloc(2 * mx * sizeof *Z);
  if (!Z) return td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory");
  double *T = Z + mx;
  for (int b = 0; b < L->n_blk; b++) {
    const td_laplace_blk *k = &L->blk[b];
    const int no = k->n_out, na = k->n_in + 1;
    for (int p = 0; p < no; p++)
      for (int q = 0; q < na; q++)
        Z[(size_t)p * na + q] = td_rng_normal(r) / sqrt(N * k->sG[p] * k->sA[q] + delta);
    /* U = QG Z QA^T: T = QG Z (no x na), then U = T QA^T into Z */
    td_la_gemm(0, 0, no, na, no, 1.0, k->QG, Z, 0.0, T);
    td_la_gemm(0, 1, no, na, na, 1.0, T, k->QA, 0.0, Z);
    for (int o = 0; o < no; o++)
      for (int i = 0; i < na; i++) ds[blk_index(L, k, o, i)] = Z[(size_t)o * na + i];
  }
  free(Z);
  return 0;
}

int td_laplace_cov_dense(const td_laplace *L, double delta, double *S, td_err *err) {
  const size_t P = L->P;
  const double N = L->n_data;
  memset(S, 0, P * P * sizeof *S);
  if (L->st == TD_LAPLACE_DIAG) {
    for (size_t p = 0; p < P; p++) S[p * P + p] = 1.0 / (N * L->ev[p] + delta);
    return 0;
  }
  if (L->st == TD_LAPLACE_FULL) {
    for (size_t i = 0; i < P; i++)
      for (size_t j = 0; j < P; j++) {
        double s = 0;
        for (size_t p = 0; p < P; p++) s += L->V[i * P + p] * L->V[j * P + p] / (N * L->ev[p] + delta);
        S[i * P + j] = s;
      }
    return 0;
  }
  (void)err;
  for (int b = 0; b < L->n_blk; b++) {
    const td_laplace_blk *k = &L->blk[b];
    const int no = k->n_out, na = k->n_in + 1;
    for (int o = 0; o < no; o++)
      for (int i = 0; i < na; i++)
        for (int o2 = 0; o2 < no; o2++)
          for (int i2 = 0; i2 < na; i2++) {
            double s = 0;
            for (int p = 0; p < no; p++)
              for (int q = 0; q < na; q++)
                s += k->QG[o * no + p] * k->QA[i * na + q] * k->QG[o2 * no + p] *
                     k->QA[i2 * na + q] / (N * k->sG[p] * k->sA[q] + delta);
            S[blk_index(L, k, o, i) * P + blk_index(L, k, o2, i2)] = s;
          }
  }
  return 0;
}

int td_laplace_predict(const td_laplace *L, double delta, td_laplace_pred how, int n_samples,
                       uint64_t seed, const td_dataset *ds, size_t n, int chunk, double *probs,
                       td_err *err) {
  if (L->loss != TD_CURV_XENT)
    return td_err_set(err, TD_EINVAL, "params.loss", "laplace: predictives need cross-entropy");
  const td_mlp *m = L->m;
  const size_t n_all = m->n_params;
  const int K = m->cfg.out_dim;
  if (how == TD_LAPLACE_PRED_MAP) n_samples = 0;
  if (how != TD_LAPLACE_PRED_MAP && n_samples < 1)
    return td_err_set(err, TD_EINVAL, "params.laplace.samples", "laplace: need samples >= 1");
  double *D = NULL, *th = malloc(n_all * sizeof *th), *jv = malloc((size_t)chunk * K * sizeof *jv),
         *pr = malloc((size_t)chunk * K * sizeof *pr);
  td_curv_ctx c;
  memset(&c, 0, sizeof c);
  int rc = 0;
  if (n_samples > 0) D = malloc((size_t)n_samples * n_all * sizeof *D);
  if (!th || !jv || !pr || (n_samples > 0 && !D)) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "laplace: out of memory for %d samples", n_samples);
    goto out;
  }
  td_rng r;
  td_rng_init(&r, seed, TD_RNG_PROBE);
  for (int s = 0; s < n_samples; s++)
    if ((rc = td_laplace_sample(L, delta, &r, D + (size_t)s * n_all, err))) goto out;
  if ((rc = td_curv_init(&c, m, chunk, err))) goto out;
  td_curv_set_mode(&c, TD_MLP_EVAL);
  for (size_t s0 = 0; s0 < n; s0 += (size_t)chunk) {
    const int B = (int)(n - s0 < (size_t)chunk ? n - s0 : (size_t)chunk);
    double *P = probs + s0 * (size_t)K;
    if ((rc = td_curv_set_batch(&c, ds->X + s0 * ds->d, ds->y + s0, NULL, B, TD_CURV_XENT, err)))
      goto out;
    if ((rc = td_curv_set_point(&c, L->theta, err)) && rc != TD_ERANGE) goto out;
    rc = 0;
    const double *f = c.ws.act[m->n_layers]; /* f* (B x K) */
    if (how == TD_LAPLACE_PRED_MAP) {
      td_softmax_rows(P, f, B, K);
      continue;
    }
    memset(P, 0, (size_t)B * K * sizeof *P);
    for (int s = 0; s < n_samples; s++) {
      const double *d = D + (size_t)s * n_all;
      if (how == TD_LAPLACE_PRED_GLM) {
        td_curv_jvp(&c, d, jv);
        for (size_t e = 0; e < (size_t)B * K; e++) jv[e] += f[e];
        td_softmax_rows(pr, jv, B, K);
      } else {
        for (size_t q = 0; q < n_all; q++) th[q] = L->theta[q] + d[q];
        const double *fs = td_mlp_forward(m, &c.ws, th, c.X, B);
        td_softmax_rows(pr, fs, B, K); /* (overwrites the cached f*, unused by NN) */
      }
      for (size_t e = 0; e < (size_t)B * K; e++) P[e] += pr[e] / n_samples;
    }
  }
out:
  td_curv_deinit(&c);
  free(D);
  free(th);
  free(jv);
  free(pr);
  return rc;
}

void td_laplace_calibrate(const double *probs, const int *y, size_t n, int K,
                          td_laplace_calib *o) {
  memset(o, 0, sizeof *o);
  double csum[TD_LAPLACE_ECE_BINS] = {0}, asum[TD_LAPLACE_ECE_BINS] = {0};
  for (size_t i = 0; i < n; i++) {
    const double *p = probs + i * (size_t)K;
    int am = 0;
    for (int k = 1; k < K; k++)
      if (p[k] > p[am]) am = k;
    const double py = p[y[i]] > 1e-300 ? p[y[i]] : 1e-300;
    o->nll -= log(py);
    const int ok = am == y[i];
    o->acc += ok;
    for (int k = 0; k < K; k++) {
      const double e = p[k] - (k == y[i]);
      o->brier += e * e;
    }
    int b = (int)ceil(p[am] * TD_LAPLACE_ECE_BINS) - 1;
    if (b < 0) b = 0;
    if (b >= TD_LAPLACE_ECE_BINS) b = TD_LAPLACE_ECE_BINS - 1;
    o->count[b]++;
    csum[b] += p[am];
    asum[b] += ok;
  }
  for (int b = 0; b < TD_LAPLACE_ECE_BINS; b++) {
    if (!o->count[b]) {
      o->conf[b] = o->bin_acc[b] = NAN;
      continue;
    }
    o->conf[b] = csum[b] / o->count[b];
    o->bin_acc[b] = asum[b] / o->count[b];
    o->ece += fabs(asum[b] - csum[b]) / (double)n;
  }
  o->nll /= (double)n;
  o->acc /= (double)n;
  o->brier /= (double)n;
}

int td_laplace_blr_evidence(const double *X, const double *y, int n, int d, double alpha,
                            double sigma2, double *out, td_err *err) {
  if (!(alpha > 0) || !(sigma2 > 0) || n < 1 || d < 1)
    return td_err_set(err, TD_EINVAL, NULL, "blr: need alpha, sigma2 > 0, n, d >= 1");
  double *C = malloc((size_t)n * n * sizeof *C), *v = malloc((size_t)n * sizeof *v);
  if (!C || !v) {
    free(C);
    free(v);
    return td_err_set(err, TD_ENOMEM, NULL, "blr: out of memory");
  }
  /* C = sigma2 I + X X^T / alpha (X (n x d) NoTrans times X^T) */
  td_la_gemm(0, 1, n, n, d, 1.0 / alpha, X, X, 0.0, C);
  for (int i = 0; i < n; i++) C[(size_t)i * n + i] += sigma2;
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, C, n);
  int rc = 0;
  if (info) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "blr: covariance not positive definite");
  } else {
    double logdet = 0;
    for (int i = 0; i < n; i++) logdet += 2.0 * log(C[(size_t)i * n + i]);
    memcpy(v, y, (size_t)n * sizeof *v);
    /* v = L^{-1} y, quad = ||v||^2 = y^T C^{-1} y */
    cblas_dtrsv(CblasRowMajor, CblasLower, CblasNoTrans, CblasNonUnit, n, C, n, v, 1);
    const double quad = td_la_dot((size_t)n, v, v);
    *out = -0.5 * ((double)n * LOG_2PI + logdet + quad);
  }
  free(C);
  free(v);
  return rc;
}
