/* kfac.c: K-FAC Kronecker factors, factored damping and preconditioning (see kfac.h). */
#include "optim/kfac.h"

#include <assert.h>
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"

typedef struct kfac_layer {
  int li;             /* index in m->layers */
  int n_in, n_out, da;/* da = n_in + 1 */
  size_t off;         /* W at off, b at off + n_out * n_in */
  double *A, *G;      /* factors (da x da, n_out x n_out), symmetric, full storage */
  double *Gacc;       /* this update's G statistic (n_out x n_out) */
  double *QA, *sA;    /* eigenvectors as columns, eigenvalues (last refresh) */
  double *QG, *sG;
  double pi;
  double fA, fG;      /* damping floors of the last refresh (kfac.h): dim eps max eig */
} kfac_layer;

struct td_kfac {
  const td_mlp *m;
  td_kfac_hp hp;
  int cap;
  int nl;
  kfac_layer L[TD_MLP_MAX_LAYERS];
  long updates;
  int refreshed, refreshed_last;
  td_rng rng;
  double *u;       /* cap x K cotangents */
  double *gvjp;    /* n_params: the VJP's (unused) parameter output */
  double *Anew;    /* max da^2: this update's A statistic */
  double *t0, *t1, *t2; /* max n_out * da each */
};

/* Linear-layer widths of a cfg: n_in of layer j is dims[j], n_out is dims[j+1]. */
static int cfg_dims(const td_mlp_cfg *cfg, int *dims) {
  dims[0] = cfg->in_dim;
  for (int i = 0; i < cfg->n_hidden; i++) dims[i + 1] = cfg->hidden[i];
  dims[cfg->n_hidden + 1] = cfg->out_dim;
  return cfg->n_hidden + 1;
}

int td_kfac_bytes(const td_mlp_cfg *cfg, int cap, double *bytes, td_err *err) {
  double np = 0, ws = 0;
  int rc = td_mlp_estimate(cfg, cap, &np, &ws, err);
  if (rc) return rc;
  int dims[TD_MLP_MAX_HIDDEN + 2];
  int nl = cfg_dims(cfg, dims);
  double tot = 0, maxa = 0, maxt = 0;
  for (int j = 0; j < nl; j++) {
    double da = dims[j] + 1.0, no = dims[j + 1];
    tot += 2 * da * da + da + 3 * no * no + no;
    if (da * da > maxa) maxa = da * da;
    if (no * da > maxt) maxt = no * da;
  }
  *bytes = 8.0 * (tot + maxa + 3 * maxt + (double)cap * cfg->out_dim + np);
  return 0;
}

void td_kfac_destroy(td_kfac *k) {
  if (!k) return;
  for (int j = 0; j < k->nl; j++) {
    kfac_layer *l = &k->L[j];
    free(l->A);
    free(l->G);
    free(l->Gacc);
    free(l->QA);
    free(l->sA);
    free(l->QG);
    free(l->sG);
  }
  free(k->u);
  free(k->gvjp);
  free(k->Anew);
  free(k->t0);
  free(k->t1);
  free(k->t2);
  free(k);
}

int td_kfac_create(const td_mlp *m, int cap, const td_kfac_hp *hp, td_kfac **out, td_err *err) {
  *out = NULL;
  if (!m || !hp || cap < 1) return td_err_set(err, TD_EINVAL, NULL, "kfac: bad arguments");
  if (!(hp->decay >= 0 && hp->decay <= 1))
    return td_err_set(err, TD_EINVAL, "params.optimizer.kfac_decay",
                      "kfac_decay must be in [0, 1]");
  if (hp->inverse_every < 1)
    return td_err_set(err, TD_EINVAL, "params.optimizer.kfac_inverse_every",
                      "kfac_inverse_every must be >= 1");
  if (hp->fisher != TD_KFAC_FISHER_SAMPLED && hp->fisher != TD_KFAC_FISHER_EXACT &&
      hp->fisher != TD_KFAC_FISHER_EMPIRICAL)
    return td_err_set(err, TD_EINVAL, "params.optimizer.fisher", "unknown Fisher kind");
  td_kfac *k = calloc(1, sizeof *k);
  if (!k) return td_err_set(err, TD_ENOMEM, NULL, "kfac: out of memory");
  k->m = m;
  k->hp = *hp;
  k->cap = cap;
  td_rng_init(&k->rng, hp->seed, TD_KFAC_RNG_STREAM);
  size_t maxa = 0, maxt = 0;
  int ok = 1;
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *Ly = &m->layers[i];
    if (Ly->kind != TD_LAYER_LINEAR) continue;
    kfac_layer *l = &k->L[k->nl++];
    l->li = i;
    l->n_in = Ly->n_in;
    l->n_out = Ly->n_out;
    l->da = Ly->n_in + 1;
    l->off = Ly->off;
    l->pi = 1.0;
    const size_t da = (size_t)l->da, no = (size_t)l->n_out;
    l->A = calloc(da * da, sizeof(double));
    l->QA = calloc(da * da, sizeof(double));
    l->sA = calloc(da, sizeof(double));
    l->G = calloc(no * no, sizeof(double));
    l->Gacc = calloc(no * no, sizeof(double));
    l->QG = calloc(no * no, sizeof(double));
    l->sG = calloc(no, sizeof(double));
    ok = ok && l->A && l->QA && l->sA && l->G && l->Gacc && l->QG && l->sG;
    if (da * da > maxa) maxa = da * da;
    if (no * da > maxt) maxt = no * da;
  }
  const int K = m->cfg.out_dim;
  k->u = malloc((size_t)cap * K * sizeof *k->u);
  k->gvjp = malloc(m->n_params * sizeof *k->gvjp);
  k->Anew = malloc(maxa * sizeof *k->Anew);
  k->t0 = malloc(maxt * sizeof *k->t0);
  k->t1 = malloc(maxt * sizeof *k->t1);
  k->t2 = malloc(maxt * sizeof *k->t2);
  if (!ok || !k->u || !k->gvjp || !k->Anew || !k->t0 || !k->t1 || !k->t2 || k->nl == 0) {
    td_kfac_destroy(k);
    return td_err_set(err, TD_ENOMEM, NULL, "kfac: out of memory for the factors");
  }
  *out = k;
  return 0;
}

static void mirror_upper(double *A, int n) {
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++) A[(size_t)j * n + i] = A[(size_t)i * n + j];
}

static int finite_all(const double *x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += x[i] * 0.0;
  return s == 0.0;
}

/* Fill k->u (B x K) with the cotangents of pass `pass` (see kfac.h). */
static void cotangents(td_kfac *k, const td_curv_ctx *c, int pass) {
  const int B = c->B, K = c->m->cfg.out_dim;
  double *u = k->u;
  switch (k->hp.fisher) {
  case TD_KFAC_FISHER_EMPIRICAL:
    memcpy(u, c->rgrad, (size_t)B * K * sizeof *u);
    break;
  case TD_KFAC_FISHER_SAMPLED:
    if (c->loss == TD_CURV_XENT) {
      for (int i = 0; i < B; i++) {
        const double *p = c->prob + (size_t)i * K;
        double *ui = u + (size_t)i * K;
        double r = td_rng_uniform(&k->rng), cum = 0.0;
        int y = K - 1;
        for (int j = 0; j < K; j++) {
          cum += p[j];
          if (r < cum) {
            y = j;
            break;
          }
        }
        memcpy(ui, p, (size_t)K * sizeof *ui);
        ui[y] -= 1.0;
      }
    } else {
      td_rng_fill_normal(&k->rng, u, (size_t)B * K, 1.0);
    }
    break;
  case TD_KFAC_FISHER_EXACT:
    memset(u, 0, (size_t)B * K * sizeof *u);
    for (int i = 0; i < B; i++) {
      double *ui = u + (size_t)i * K;
      if (c->loss == TD_CURV_XENT) {
        const double *p = c->prob + (size_t)i * K;
        const double s = sqrt(p[pass]);
        for (int j = 0; j < K; j++) ui[j] = s * p[j];
        ui[pass] -= s;
      } else {
        ui[pass] = 1.0;
      }
    }
    break;
  }
}

int td_kfac_update(td_kfac *k, td_curv_ctx *c, td_err *err) {
  if (!k || !c || c->m != k->m) return td_err_set(err, TD_EINVAL, NULL, "kfac: model mismatch");
  if (!c->have_point) return td_err_set(err, TD_EINVAL, NULL, "kfac: no point set");
  if (c->B > k->cap)
    return td_err_set(err, TD_EINVAL, NULL, "kfac: batch %d above the cap %d", c->B, k->cap);
  const td_mlp *m = k->m;
  const int B = c->B, L = m->n_layers, K = m->cfg.out_dim;
  const double invB = 1.0 / B;
  /* G statistics: one or K backward passes. */
  const int passes = k->hp.fisher == TD_KFAC_FISHER_EXACT ? K : 1;
  for (int pass = 0; pass < passes; pass++) {
    cotangents(k, c, pass);
    td_curv_vjp(c, k->u, k->gvjp);
    for (int j = 0; j < k->nl; j++) {
      kfac_layer *l = &k->L[j];
      const double *d = l->li + 1 == L ? k->u : c->rdelta[l->li + 1];
      /* Gacc (upper) (+)= d^T d / B: d stored (B x n_out); Trans gives n_out x n_out. */
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, l->n_out, B, invB, d, l->n_out,
                  pass ? 1.0 : 0.0, l->Gacc, l->n_out);
    }
  }
  k->updates++;
  const double eps1 = 1.0 - 1.0 / (double)k->updates;
  const double eps = eps1 < k->hp.decay ? eps1 : k->hp.decay;
  int bad = 0;
  for (int j = 0; j < k->nl; j++) {
    kfac_layer *l = &k->L[j];
    const int da = l->da, ni = l->n_in;
    const double *a = c->ws.act[l->li];
    /* Anew (upper, leading ni x ni) = a^T a / B: a stored (B x ni), Trans gives ni x ni. */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, ni, B, invB, a, ni, 0.0, k->Anew, da);
    for (int r = 0; r < ni; r++) k->Anew[(size_t)r * da + ni] = 0.0;
    for (int i = 0; i < B; i++) {
      const double *ai = a + (size_t)i * ni;
      for (int r = 0; r < ni; r++) k->Anew[(size_t)r * da + ni] += ai[r] * invB;
    }
    k->Anew[(size_t)ni * da + ni] = 1.0;
    mirror_upper(k->Anew, da);
    mirror_upper(l->Gacc, l->n_out);
    const size_t na = (size_t)da * da, ng = (size_t)l->n_out * l->n_out;
    if (!finite_all(k->Anew, na) || !finite_all(l->Gacc, ng)) {
      bad = 1;
      continue;
    }
    for (size_t t = 0; t < na; t++) l->A[t] = eps * l->A[t] + (1.0 - eps) * k->Anew[t];
    for (size_t t = 0; t < ng; t++) l->G[t] = eps * l->G[t] + (1.0 - eps) * l->Gacc[t];
  }
  if (bad) return td_err_set(err, TD_ERANGE, NULL, "kfac: non-finite factor statistics");
  return 0;
}

static double trace_mean(const double *A, int n) {
  double t = 0.0;
  for (int i = 0; i < n; i++) t += A[(size_t)i * n + i];
  return t / n;
}

int td_kfac_refresh(td_kfac *k, td_err *err) {
  for (int j = 0; j < k->nl; j++) {
    kfac_layer *l = &k->L[j];
    const int da = l->da, no = l->n_out;
    memcpy(l->QA, l->A, (size_t)da * da * sizeof *l->QA);
    int rc = td_la_syevd(da, l->QA, l->sA, err);
    if (!rc) {
      memcpy(l->QG, l->G, (size_t)no * no * sizeof *l->QG);
      rc = td_la_syevd(no, l->QG, l->sG, err);
    }
    if (rc) return rc;
    for (int i = 0; i < da; i++)
      if (l->sA[i] < 0) l->sA[i] = 0.0;
    for (int i = 0; i < no; i++)
      if (l->sG[i] < 0) l->sG[i] = 0.0;
    double ta = trace_mean(l->A, da), tg = trace_mean(l->G, no);
    l->pi = (ta > 0 && tg > 0 && isfinite(ta) && isfinite(tg)) ? sqrt(ta / tg) : 1.0;
    /* dsyevd returns the eigenvalues in ascending order: the last is the largest */
    l->fA = da * DBL_EPSILON * l->sA[da - 1];
    l->fG = no * DBL_EPSILON * l->sG[no - 1];
  }
  k->refreshed = 1;
  return 0;
}

/* The damping added to A and to G of layer l for gamma > 0: pi gamma and gamma / pi, each
 * raised to its factor's floor (kfac.h). */
static void damping_of(const kfac_layer *l, double gamma, double *dA, double *dG) {
  *dA = gamma * l->pi;
  *dG = gamma / l->pi;
  if (!(*dA >= l->fA)) *dA = l->fA;
  if (!(*dG >= l->fG)) *dG = l->fG;
}

int td_kfac_floored(const td_kfac *k, double gamma) {
  int n = 0;
  for (int j = 0; j < k->nl; j++) {
    const kfac_layer *l = &k->L[j];
    n += !(gamma * l->pi >= l->fA);
    n += !(gamma / l->pi >= l->fG);
  }
  return n;
}

double td_kfac_gamma_floor(const td_kfac *k) {
  double g = 0.0;
  for (int j = 0; j < k->nl; j++) {
    const kfac_layer *l = &k->L[j];
    if (l->fA / l->pi > g) g = l->fA / l->pi;
    if (l->fG * l->pi > g) g = l->fG * l->pi;
  }
  return g;
}

/* V (n_out x da) = [W | b] of layer l in vec. */
static void pack(const kfac_layer *l, const double *vec, double *V) {
  const double *W = vec + l->off, *b = W + (size_t)l->n_out * l->n_in;
  for (int o = 0; o < l->n_out; o++) {
    memcpy(V + (size_t)o * l->da, W + (size_t)o * l->n_in, (size_t)l->n_in * sizeof *V);
    V[(size_t)o * l->da + l->n_in] = b[o];
  }
}

static void unpack(const kfac_layer *l, const double *V, double *vec) {
  double *W = vec + l->off, *b = W + (size_t)l->n_out * l->n_in;
  for (int o = 0; o < l->n_out; o++) {
    memcpy(W + (size_t)o * l->n_in, V + (size_t)o * l->da, (size_t)l->n_in * sizeof *V);
    b[o] = V[(size_t)o * l->da + l->n_in];
  }
}

void td_kfac_precondition(td_kfac *k, double gamma, const double *v, double *out) {
  assert(k && k->refreshed && v && out && v != out && gamma > 0);
  /* Parameters outside the linear layers (normalization gamma/beta) are not modeled by
   * K-FAC: identity there (a plain gradient step), overwritten below for the linear ones. */
  memcpy(out, v, k->m->n_params * sizeof *out);
  for (int j = 0; j < k->nl; j++) {
    const kfac_layer *l = &k->L[j];
    const int no = l->n_out, da = l->da;
    double dA, dg;
    damping_of(l, gamma, &dA, &dg);
    pack(l, v, k->t0);
    /* t1 = QG^T V: QG (no x no) Trans; V (no x da) NoTrans. */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, no, da, no, 1.0, l->QG, no, k->t0, da,
                0.0, k->t1, da);
    /* t2 = t1 QA: (no x da) times QA (da x da), both NoTrans. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, no, da, da, 1.0, k->t1, da, l->QA, da,
                0.0, k->t2, da);
    for (int o = 0; o < no; o++) {
      double *row = k->t2 + (size_t)o * da;
      const double go = l->sG[o] + dg;
      for (int c = 0; c < da; c++) row[c] /= go * (l->sA[c] + dA);
    }
    /* t1 = QG t2: QG (no x no) NoTrans. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, no, da, no, 1.0, l->QG, no, k->t2, da,
                0.0, k->t1, da);
    /* t0 = t1 QA^T: QA (da x da) Trans. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, no, da, da, 1.0, k->t1, da, l->QA, da,
                0.0, k->t0, da);
    unpack(l, k->t0, out);
  }
}

void td_kfac_curv_vp(td_kfac *k, double gamma, const double *v, double *out) {
  assert(k && v && out && v != out && gamma >= 0);
  memcpy(out, v, k->m->n_params * sizeof *out); /* identity outside the linear layers */
  for (int j = 0; j < k->nl; j++) {
    const kfac_layer *l = &k->L[j];
    const int no = l->n_out, da = l->da;
    double dA = 0, dg = 0;
    if (gamma > 0) damping_of(l, gamma, &dA, &dg);
    pack(l, v, k->t0);
    /* t1 = G V: G (no x no) times V (no x da), both NoTrans; then + dG V. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, no, da, no, 1.0, l->G, no, k->t0, da,
                0.0, k->t1, da);
    if (gamma > 0) td_la_axpy((size_t)no * da, dg, k->t0, k->t1);
    /* t2 = t1 A: (no x da) times A (da x da), both NoTrans (A symmetric); then + pi gamma t1. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, no, da, da, 1.0, k->t1, da, l->A, da,
                0.0, k->t2, da);
    if (gamma > 0) td_la_axpy((size_t)no * da, dA, k->t1, k->t2);
    unpack(l, k->t2, out);
  }
}

int td_kfac_direction(td_kfac *k, td_curv_ctx *c, const double *g, double gamma, double *d,
                      td_err *err) {
  if (!(gamma > 0) || !isfinite(gamma))
    return td_err_set(err, TD_EINVAL, "params.optimizer.damping",
                      "kfac needs damping + weight_decay > 0 (factored Tikhonov damping)");
  int rc = td_kfac_update(k, c, err);
  if (rc) return rc;
  k->refreshed_last = 0;
  if (!k->refreshed || (k->updates - 1) % k->hp.inverse_every == 0) {
    if ((rc = td_kfac_refresh(k, err))) return rc;
    k->refreshed_last = 1;
  }
  td_kfac_precondition(k, gamma, g, d);
  td_la_scal(k->m->n_params, -1.0, d);
  return 0;
}

int td_kfac_refreshed_last(const td_kfac *k) { return k->refreshed_last; }

long td_kfac_updates(const td_kfac *k) { return k->updates; }

const double *td_kfac_factor_a(const td_kfac *k, int j, int *dim) {
  if (j < 0 || j >= k->nl) return NULL;
  if (dim) *dim = k->L[j].da;
  return k->L[j].A;
}

const double *td_kfac_factor_g(const td_kfac *k, int j, int *dim) {
  if (j < 0 || j >= k->nl) return NULL;
  if (dim) *dim = k->L[j].n_out;
  return k->L[j].G;
}

double td_kfac_pi(const td_kfac *k, int j) { return (j >= 0 && j < k->nl) ? k->L[j].pi : 0.0; }
