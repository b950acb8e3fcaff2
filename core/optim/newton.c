/* newton.c: dense damped Newton / Gauss-Newton solves for small models (see newton.h). */
#include "optim/newton.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"

struct td_newton {
  size_t n;
  double *M; /* n x n */
  double *w, *t, *e;
};

double td_newton_bytes(double n_params) { return 8.0 * (n_params * n_params + 4.0 * n_params); }

int td_newton_create(size_t n_params, size_t max_params, td_newton **out, td_err *err) {
  *out = NULL;
  if (n_params == 0)
    return td_err_set(err, TD_EINVAL, NULL, "newton: the model has no parameters");
  if (n_params > max_params)
    return td_err_set(err, TD_EINVAL, "params.optimizer.newton_max_params",
                      "newton forms the dense %zu x %zu curvature matrix: the model has %zu "
                      "parameters, above optimizer.newton_max_params = %zu; use a smaller "
                      "model or raise the cap (at most %d)",
                      n_params, n_params, n_params, max_params, TD_NEWTON_MAX_PARAMS_CEIL);
  td_newton *o = calloc(1, sizeof *o);
  if (!o) return td_err_set(err, TD_ENOMEM, NULL, "newton: out of memory");
  o->n = n_params;
  o->M = malloc(n_params * n_params * sizeof *o->M);
  o->w = malloc(n_params * sizeof *o->w);
  o->t = malloc(n_params * sizeof *o->t);
  o->e = malloc(n_params * sizeof *o->e);
  if (!o->M || !o->w || !o->t || !o->e) {
    td_newton_destroy(o);
    return td_err_set(err, TD_ENOMEM, NULL, "newton: out of memory for a %zu x %zu matrix",
                      n_params, n_params);
  }
  *out = o;
  return 0;
}

void td_newton_destroy(td_newton *o) {
  if (!o) return;
  free(o->M);
  free(o->w);
  free(o->t);
  free(o->e);
  free(o);
}

void td_newton_dense(td_curv_ctx *c, td_newton_curv kind, double *M, double *e) {
  assert(c && c->have_point && M && e);
  const size_t n = c->m->n_params;
  memset(e, 0, n * sizeof *e);
  /* Column j of C is C e_j; it is written as ROW j (C is symmetric) and symmetrized below. */
  for (size_t j = 0; j < n; j++) {
    e[j] = 1.0;
    double *row = M + j * n;
    switch (kind) {
    case TD_NEWTON_HESSIAN: td_curv_hvp(c, e, row); break;
    case TD_NEWTON_GGN: td_curv_ggn_vp(c, e, row); break;
    case TD_NEWTON_FISHER_EMP: td_curv_fisher_vp(c, TD_CURV_FISHER_EMPIRICAL, e, row); break;
    }
    e[j] = 0.0;
  }
  for (size_t i = 0; i < n; i++)
    for (size_t j = i + 1; j < n; j++) {
      double s = 0.5 * (M[i * n + j] + M[j * n + i]);
      M[i * n + j] = s;
      M[j * n + i] = s;
    }
}

int td_newton_solve_dense(int n, double *M, const double *g, double damping, double *d,
                          double *w, double *t, td_newton_info *info, td_err *err) {
  td_newton_info inf;
  memset(&inf, 0, sizeof inf);
  if (n < 1 || !M || !g || !d || !w || !t)
    return td_err_set(err, TD_EINVAL, NULL, "newton: bad arguments");
  if (!(damping >= 0) || !isfinite(damping))
    return td_err_set(err, TD_EINVAL, "params.optimizer.damping", "damping must be >= 0");
  const size_t nn = (size_t)n * (size_t)n;
  double chk = 0.0;
  for (size_t i = 0; i < nn; i++) chk += M[i] * 0.0;
  for (int i = 0; i < n; i++) chk += g[i] * 0.0;
  if (chk != 0.0)
    return td_err_set(err, TD_ERANGE, NULL, "newton: non-finite curvature or gradient");
  int rc = td_la_syevd(n, M, w, err);
  if (rc) return rc;
  /* M now holds the eigenvectors as columns: M[i*n + j] = component i of q_j. */
  double smax = 0.0;
  for (int j = 0; j < n; j++) {
    if (fabs(w[j]) > smax) smax = fabs(w[j]);
    if (w[j] < 0) inf.n_negative++;
  }
  inf.eig_min = w[0];
  inf.eig_max = w[n - 1];
  /* t = Q^T g: M stored n x n with the vectors as columns, Trans -> rows are q_j^T. */
  td_la_gemv(1, n, n, 1.0, M, g, 0.0, t);
  const double floor = 1e-12 * smax;
  for (int j = 0; j < n; j++) {
    double s = fabs(w[j]) + damping;
    if (s <= floor || s == 0.0) {
      t[j] = 0.0;
      inf.n_dropped++;
    } else {
      t[j] = -t[j] / s;
    }
  }
  /* d = Q t: M NoTrans (n x n) times t. */
  td_la_gemv(0, n, n, 1.0, M, t, 0.0, d);
  if (info) *info = inf;
  return 0;
}

int td_newton_direction(td_newton *o, td_curv_ctx *c, td_newton_curv kind, const double *g,
                        double damping, double l2, double *d, td_newton_info *info,
                        td_err *err) {
  if (!o || !c || !c->m || c->m->n_params != o->n)
    return td_err_set(err, TD_EINVAL, NULL, "newton: model size does not match the workspace");
  if (!c->have_point) return td_err_set(err, TD_EINVAL, NULL, "newton: no point set");
  const size_t n = o->n;
  td_newton_dense(c, kind, o->M, o->e);
  if (l2 != 0.0)
    for (size_t i = 0; i < n; i++) o->M[i * n + i] += l2;
  td_newton_info inf;
  int rc = td_newton_solve_dense((int)n, o->M, g, damping, d, o->w, o->t, &inf, err);
  if (rc) return rc;
  inf.products = n;
  if (info) *info = inf;
  return 0;
}
