/* influence.c: influence functions: damped inverse-HVPs (exact, CG, LiSSA), scores,
 * correlations, and exact ridge leave-one-out. */
#include "bilevel/influence.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "curv/cg.h"

int td_inf_exact_init(td_inf_exact *e, const td_inf_problem *p, double damping, td_err *err) {
  memset(e, 0, sizeof *e);
  if (!p || !p->hvp || p->n_params == 0 || !(damping >= 0))
    return td_err_set(err, TD_EINVAL, "params.damping", "influence: bad exact-solve input");
  size_t n = p->n_params;
  if (n > 20000)
    return td_err_set(err, TD_ELIMIT, "params.methods.exact",
                      "the exact solve builds a %zu x %zu matrix: too large", n, n);
  e->n = n;
  e->L = malloc(n * n * sizeof *e->L);
  double *ek = calloc(n, sizeof *ek), *col = malloc(n * sizeof *col);
  if (!e->L || !ek || !col) {
    free(ek), free(col);
    td_inf_exact_deinit(e);
    return td_err_set(err, TD_ENOMEM, NULL, "influence: out of memory");
  }
  for (size_t k = 0; k < n; k++) { /* column k of H = row k (H symmetric) */
    ek[k] = 1;
    p->hvp(p->ctx, ek, col);
    ek[k] = 0;
    memcpy(e->L + k * n, col, n * sizeof *col);
  }
  for (size_t i = 0; i < n; i++) { /* symmetrize the rounding, add the damping */
    for (size_t j = i + 1; j < n; j++) {
      double s = 0.5 * (e->L[i * n + j] + e->L[j * n + i]);
      e->L[i * n + j] = e->L[j * n + i] = s;
    }
    e->L[i * n + i] += damping;
  }
  free(ek), free(col);
  if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, e->L, (lapack_int)n) != 0) {
    td_inf_exact_deinit(e);
    return td_err_set(err, TD_ERANGE, "params.damping",
                      "H + damping I is not positive definite: raise the damping");
  }
  return 0;
}

void td_inf_exact_deinit(td_inf_exact *e) {
  if (!e) return;
  free(e->L);
  memset(e, 0, sizeof *e);
}

void td_inf_exact_solve(const td_inf_exact *e, const double *b, double *q) {
  if (q != b) memcpy(q, b, e->n * sizeof *q);
  LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)e->n, 1, e->L, (lapack_int)e->n, q, 1);
}

typedef struct hvp_adapt {
  const td_inf_problem *p;
} hvp_adapt;

static void hvp_matvec(void *ctx, const double *v, double *out, size_t n) {
  (void)n;
  const hvp_adapt *a = ctx;
  a->p->hvp(a->p->ctx, v, out);
}

int td_inf_ihvp(const td_inf_problem *p, const td_inf_opts *o, const double *b, double *q,
                int *iters, td_err *err) {
  if (!p || !o || !b || !q || !p->hvp || p->n_params == 0)
    return td_err_set(err, TD_EINVAL, NULL, "influence: bad arguments");
  if (!(o->damping > 0))
    return td_err_set(err, TD_EINVAL, "params.damping", "influence: damping must be > 0");
  size_t n = p->n_params;
  int rc = 0;
  if (o->method == TD_INF_EXACT) {
    td_inf_exact e;
    if ((rc = td_inf_exact_init(&e, p, o->damping, err))) return rc;
    td_inf_exact_solve(&e, b, q);
    td_inf_exact_deinit(&e);
    if (iters) *iters = (int)n;
  } else if (o->method == TD_INF_CG) {
    int it = o->cg_iters > 0 ? o->cg_iters : 200;
    double *work = malloc(td_cg_work_len(n, it) * sizeof *work);
    if (!work) return td_err_set(err, TD_ENOMEM, NULL, "influence: out of memory");
    hvp_adapt a = {p};
    td_cg_opts co = {.max_iters = it, .tol = o->cg_tol > 0 ? o->cg_tol : 1e-10};
    td_cg_result cr;
    memset(q, 0, n * sizeof *q);
    rc = td_cg_solve(hvp_matvec, &a, n, o->damping, b, q, &co, work, &cr, err);
    free(work);
    if (iters) *iters = cr.iters;
  } else {
    int J = o->lissa_depth > 0 ? o->lissa_depth : 1000;
    int R = o->lissa_repeats > 0 ? o->lissa_repeats : 1;
    double s = o->lissa_scale;
    if (!(s > 0))
      return td_err_set(err, TD_EINVAL, "params.lissa.scale", "LiSSA needs a scale > 0");
    int bsz = o->lissa_batch;
    if (bsz < 0 || (size_t)bsz > p->n_train || (bsz > 0 && !p->hvp_batch))
      return td_err_set(err, TD_EINVAL, "params.lissa.batch", "LiSSA batch out of range");
    double *h = malloc(2 * n * sizeof *h);
    size_t *idx = bsz > 0 ? malloc(p->n_train * sizeof *idx) : NULL;
    if (!h || (bsz > 0 && !idx)) {
      free(h), free(idx);
      return td_err_set(err, TD_ENOMEM, NULL, "influence: out of memory");
    }
    double *hv = h + n;
    td_rng r;
    td_rng_init(&r, o->seed, TD_RNG_PROBE + 77);
    memset(q, 0, n * sizeof *q);
    for (int rep = 0; rep < R && !rc; rep++) {
      memcpy(h, b, n * sizeof *h);
      for (int j = 0; j < J; j++) {
        if (bsz > 0) { /* partial Fisher-Yates: the first bsz of a random permutation */
          for (size_t i = 0; i < p->n_train; i++) idx[i] = i;
          for (int k = 0; k < bsz; k++) {
            size_t pick = (size_t)k + (size_t)td_rng_below(&r, (uint64_t)(p->n_train - k));
            size_t t = idx[k];
            idx[k] = idx[pick];
            idx[pick] = t;
          }
          p->hvp_batch(p->ctx, idx, bsz, h, hv);
        } else {
          p->hvp(p->ctx, h, hv);
        }
        double keep = 1 - o->damping / s;
        for (size_t i = 0; i < n; i++) h[i] = b[i] + keep * h[i] - hv[i] / s;
      }
      for (size_t i = 0; i < n; i++) q[i] += h[i] / (s * R);
      for (size_t i = 0; i < n; i++)
        if (!isfinite(q[i])) {
          rc = td_err_set(err, TD_ERANGE, "params.lissa.scale",
                          "LiSSA diverged: the scale must exceed the top eigenvalue of "
                          "H + damping I");
          break;
        }
    }
    free(h), free(idx);
    if (iters) *iters = J * R;
  }
  return rc;
}

void td_inf_scores(const double *G, size_t n, size_t P, const double *q, double *score) {
  td_la_gemv(0, (int)n, (int)P, -1.0, G, q, 0.0, score);
}

double td_inf_pearson(const double *x, const double *y, size_t n) {
  if (n < 2) return NAN;
  double mx = 0, my = 0;
  for (size_t i = 0; i < n; i++) mx += x[i], my += y[i];
  mx /= n, my /= n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx == 0 || syy == 0) return NAN;
  return sxy / sqrt(sxx * syy);
}

typedef struct rank_item {
  double v;
  size_t i;
} rank_item;

static int cmp_item(const void *a, const void *b) {
  double x = ((const rank_item *)a)->v, y = ((const rank_item *)b)->v;
  return (x > y) - (x < y);
}

static int ranks(const double *x, size_t n, double *rk) {
  rank_item *it = malloc(n * sizeof *it);
  if (!it) return -1;
  for (size_t i = 0; i < n; i++) it[i].v = x[i], it[i].i = i;
  qsort(it, n, sizeof *it, cmp_item);
  for (size_t a = 0; a < n;) {
    size_t b = a;
    while (b + 1 < n && it[b + 1].v == it[a].v) b++;
    double r = 0.5 * (double)(a + b) + 1;
    for (size_t k = a; k <= b; k++) rk[it[k].i] = r;
    a = b + 1;
  }
  free(it);
  return 0;
}

double td_inf_spearman(const double *x, const double *y, size_t n) {
  if (n < 2) return NAN;
  double *rx = malloc(2 * n * sizeof *rx);
  if (!rx) return NAN;
  double *ry = rx + n, out = NAN;
  if (!ranks(x, n, rx) && !ranks(y, n, ry)) out = td_inf_pearson(rx, ry, n);
  free(rx);
  return out;
}

int td_inf_ridge_loo(const double *X, const double *y, size_t n, size_t d, const double *Xt,
                     const double *yt, size_t m, double damping, double *dloss, td_err *err) {
  if (!X || !y || !Xt || !yt || n < 2 || d == 0 || m == 0 || !(damping >= 0) || !dloss)
    return td_err_set(err, TD_EINVAL, NULL, "ridge leave-one-out: bad arguments");
  double *A = malloc(d * d * sizeof *A), *w = malloc(d * sizeof *w);
  double *u = malloc(d * sizeof *u), *wi = malloc(d * sizeof *wi), *rt = malloc(m * sizeof *rt);
  int rc = 0;
  if (!A || !w || !u || !wi || !rt) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "ridge leave-one-out: out of memory");
    goto out;
  }
  td_la_ata((int)n, (int)d, 1.0 / n, X, A);
  for (size_t k = 0; k < d; k++) A[k * d + k] += damping;
  td_la_gemv(1, (int)n, (int)d, 1.0 / n, X, y, 0.0, w);
  if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, A, (lapack_int)d) != 0) {
    rc = td_err_set(err, TD_ERANGE, "params.damping", "X^T X / n + damping I is singular");
    goto out;
  }
  LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, 1, A, (lapack_int)d, w, 1);
  memcpy(rt, yt, m * sizeof *rt);
  td_la_gemv(0, (int)m, (int)d, 1.0, Xt, w, -1.0, rt);
  double l0 = 0.5 * td_la_dot(m, rt, rt) / m;
  for (size_t i = 0; i < n; i++) {
    const double *xi = X + i * d;
    memcpy(u, xi, d * sizeof *u);
    LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, 1, A, (lapack_int)d, u, 1);
    double h = td_la_dot(d, xi, u) / n, r = td_la_dot(d, xi, w) - y[i];
    for (size_t k = 0; k < d; k++) wi[k] = w[k] + u[k] * r / (n * (1 - h));
    memcpy(rt, yt, m * sizeof *rt);
    td_la_gemv(0, (int)m, (int)d, 1.0, Xt, wi, -1.0, rt);
    dloss[i] = 0.5 * td_la_dot(m, rt, rt) / m - l0;
  }
out:
  free(A), free(w), free(u), free(wi), free(rt);
  return rc;
}

/* ------------------------------------------------------------------ EK-FAC */

void td_inf_ekfac_deinit(td_inf_ekfac *e) {
  if (!e) return;
  for (int j = 0; j < e->n_layers && j < TD_INF_EKFAC_MAX; j++)
    free(e->L[j].QS), free(e->L[j].QA), free(e->L[j].lam);
  free(e->work);
  memset(e, 0, sizeof *e);
}

int td_inf_ekfac_init(td_inf_ekfac *e, int n_layers, const size_t *off, const int *n_out,
                      const int *n_in, const double *const *acts, const double *const *D,
                      size_t n, size_t n_params, td_err *err) {
  memset(e, 0, sizeof *e);
  if (n_layers < 1 || n_layers > TD_INF_EKFAC_MAX || n == 0 || !off || !n_out || !n_in ||
      !acts || !D)
    return td_err_set(err, TD_EINVAL, NULL, "ekfac: bad arguments");
  e->n_layers = n_layers;
  e->n_params = n_params;
  size_t wmax = 0;
  int rc = 0;
  for (int j = 0; j < n_layers && !rc; j++) {
    td_inf_ekfac_layer *l = &e->L[j];
    int no = n_out[j], ni1 = n_in[j] + 1;
    l->off = off[j], l->n_out = no, l->n_in = n_in[j];
    if (off[j] + (size_t)no * ni1 > n_params) {
      rc = td_err_set(err, TD_EINVAL, NULL, "ekfac: layer %d outside the parameters", j);
      break;
    }
    l->QS = malloc((size_t)no * no * sizeof *l->QS);
    l->QA = malloc((size_t)ni1 * ni1 * sizeof *l->QA);
    l->lam = calloc((size_t)no * ni1, sizeof *l->lam);
    double *at = malloc(n * (size_t)ni1 * sizeof *at); /* [a_i; 1] rows */
    double *ev = malloc((size_t)(no > ni1 ? no : ni1) * sizeof *ev);
    double *P = malloc(n * (size_t)no * sizeof *P), *R = malloc(n * (size_t)ni1 * sizeof *R);
    if (!l->QS || !l->QA || !l->lam || !at || !ev || !P || !R) {
      free(at), free(ev), free(P), free(R);
      rc = td_err_set(err, TD_ENOMEM, NULL, "ekfac: out of memory");
      break;
    }
    for (size_t i = 0; i < n; i++) {
      memcpy(at + i * ni1, acts[j] + i * (size_t)n_in[j], (size_t)n_in[j] * sizeof *at);
      at[i * ni1 + n_in[j]] = 1.0;
    }
    td_la_ata((int)n, ni1, 1.0 / n, at, l->QA); /* A */
    td_la_ata((int)n, no, 1.0 / n, D[j], l->QS); /* S */
    if (!(rc = td_la_syevd(ni1, l->QA, ev, err)) && !(rc = td_la_syevd(no, l->QS, ev, err))) {
      /* P = D Q_S (n x no), R = [a;1] Q_A (n x ni1): projections; Lambda = (P.^2)^T (R.^2) / n */
      td_la_gemm(0, 0, (int)n, no, no, 1.0, D[j], l->QS, 0.0, P);
      td_la_gemm(0, 0, (int)n, ni1, ni1, 1.0, at, l->QA, 0.0, R);
      for (size_t k = 0; k < n * (size_t)no; k++) P[k] *= P[k];
      for (size_t k = 0; k < n * (size_t)ni1; k++) R[k] *= R[k];
      td_la_gemm(1, 0, no, ni1, (int)n, 1.0 / n, P, R, 0.0, l->lam);
    }
    free(at), free(ev), free(P), free(R);
    size_t w = (size_t)no * ni1 * 2;
    if (w > wmax) wmax = w;
  }
  if (!rc && !(e->work = malloc(wmax * sizeof *e->work)))
    rc = td_err_set(err, TD_ENOMEM, NULL, "ekfac: out of memory");
  if (rc) td_inf_ekfac_deinit(e);
  return rc;
}

void td_inf_ekfac_solve(const td_inf_ekfac *e, double damping, const double *b, double *q) {
  /* parameters outside every layer: (0 + damping)^-1 */
  for (size_t k = 0; k < e->n_params; k++) q[k] = b[k] / damping;
  for (int j = 0; j < e->n_layers; j++) {
    const td_inf_ekfac_layer *l = &e->L[j];
    int no = l->n_out, ni = l->n_in, ni1 = ni + 1;
    double *V = e->work, *T = e->work + (size_t)no * ni1;
    /* V = [W | b] (no x ni1) from the flat layout W (no x ni) then b (no) */
    for (int r = 0; r < no; r++) {
      memcpy(V + (size_t)r * ni1, b + l->off + (size_t)r * ni, (size_t)ni * sizeof *V);
      V[(size_t)r * ni1 + ni] = b[l->off + (size_t)no * ni + r];
    }
    /* T = Q_S^T V Q_A, / (Lambda + damping), V = Q_S T Q_A^T */
    td_la_gemm(1, 0, no, ni1, no, 1.0, l->QS, V, 0.0, T);
    td_la_gemm(0, 0, no, ni1, ni1, 1.0, T, l->QA, 0.0, V);
    for (size_t k = 0; k < (size_t)no * ni1; k++) V[k] /= l->lam[k] + damping;
    td_la_gemm(0, 1, no, ni1, ni1, 1.0, V, l->QA, 0.0, T);
    td_la_gemm(0, 0, no, ni1, no, 1.0, l->QS, T, 0.0, V);
    for (int r = 0; r < no; r++) {
      memcpy(q + l->off + (size_t)r * ni, V + (size_t)r * ni1, (size_t)ni * sizeof *q);
      q[l->off + (size_t)no * ni + r] = V[(size_t)r * ni1 + ni];
    }
  }
}
