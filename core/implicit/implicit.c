/* implicit.c: spectral filters, the Langevin stationary variance, NNLS and the max-margin
 * direction (implicit.h has the formulas and sources). */
#include "implicit/implicit.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"

double td_implicit_gd_filter(double lambda, double eta, double t) {
  double a = eta * lambda;
  if (a >= 0 && a < 1) return -expm1(t * log1p(-a));
  return 1.0 - pow(1.0 - a, t);
}

double td_implicit_ridge_filter(double lambda, double mu) { return lambda / (lambda + mu); }

double td_implicit_langevin_var(double h, double eta, double temp, double n_data, double s) {
  double a = eta * h;
  if (!(a > 0 && a < 2)) return INFINITY;
  return (2.0 * eta * temp / n_data + eta * eta * s * s) / (a * (2.0 - a));
}

/* z (n) = least-squares solution on the passive columns (pas[j] != 0), zero elsewhere. */
static int nnls_solve(int m, int n, const double *A, const double *b, const int *pas,
                      double *Ap, double *zp, double *z, td_err *err) {
  int k = 0;
  for (int j = 0; j < n; j++)
    if (pas[j]) {
      for (int i = 0; i < m; i++) Ap[(size_t)i * n + k] = A[(size_t)i * n + j];
      k++;
    }
  for (int j = 0; j < n; j++) z[j] = 0.0;
  if (k == 0) return 0;
  /* Ap holds the passive columns packed to m x k with row stride n: repack to stride k. */
  for (int i = 0; i < m; i++) memmove(Ap + (size_t)i * k, Ap + (size_t)i * n, (size_t)k * sizeof *Ap);
  int rc = td_la_lstsq_minnorm(m, k, 1, Ap, b, -1.0, zp, NULL, err);
  if (rc) return rc;
  k = 0;
  for (int j = 0; j < n; j++)
    if (pas[j]) z[j] = zp[k++];
  return 0;
}

int td_implicit_nnls(int m, int n, const double *A, const double *b, double tol, double *x,
                     td_err *err) {
  if (m < 1 || n < 1 || !A || !b || !x)
    return td_err_set(err, TD_EINVAL, NULL, "nnls: need m, n >= 1 and non-NULL arrays");
  double *Ap = malloc((size_t)m * n * sizeof *Ap), *zp = malloc((size_t)n * sizeof *zp),
         *z = malloc((size_t)n * sizeof *z), *w = malloc((size_t)n * sizeof *w),
         *r = malloc((size_t)m * sizeof *r);
  int *pas = calloc((size_t)n, sizeof *pas);
  int rc = 0;
  if (!Ap || !zp || !z || !w || !r || !pas) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "nnls: out of memory (m=%d, n=%d)", m, n);
    goto out;
  }
  if (tol <= 0) {
    double a1 = 0;
    for (int j = 0; j < n; j++) {
      double s = 0;
      for (int i = 0; i < m; i++) s += fabs(A[(size_t)i * n + j]);
      if (s > a1) a1 = s;
    }
    tol = 10.0 * DBL_EPSILON * a1 * td_la_nrm2((size_t)m, b);
  }
  for (int j = 0; j < n; j++) x[j] = 0.0;
  for (int outer = 0;; outer++) {
    if (outer > 3 * n) {
      rc = td_err_set(err, TD_EINTERNAL, NULL, "nnls: no convergence in %d iterations", 3 * n);
      goto out;
    }
    /* w = A^T (b - A x): the negative gradient (dual variables). */
    memcpy(r, b, (size_t)m * sizeof *r);
    td_la_gemv(0, m, n, -1.0, A, x, 1.0, r);
    td_la_gemv(1, m, n, 1.0, A, r, 0.0, w);
    int t = -1;
    for (int j = 0; j < n; j++)
      if (!pas[j] && w[j] > tol && (t < 0 || w[j] > w[t])) t = j;
    if (t < 0) break; /* Kuhn-Tucker conditions hold */
    pas[t] = 1;
    for (int inner = 0; inner <= n; inner++) {
      if ((rc = nnls_solve(m, n, A, b, pas, Ap, zp, z, err))) goto out;
      double alpha = 2.0;
      int jmin = -1;
      for (int j = 0; j < n; j++)
        if (pas[j] && z[j] <= 0) {
          double a = x[j] / (x[j] - z[j]);
          if (a < alpha) {
            alpha = a;
            jmin = j;
          }
        }
      if (jmin < 0) break; /* z feasible */
      /* Step to the boundary and free the coordinates that reached zero (Lawson and Hanson,
       * NNLS steps 8-11; the minimizing index is zeroed exactly). */
      for (int j = 0; j < n; j++) {
        if (!pas[j]) continue;
        x[j] += alpha * (z[j] - x[j]);
        if (j == jmin || x[j] <= 0) {
          pas[j] = 0;
          x[j] = 0.0;
        }
      }
    }
    for (int j = 0; j < n; j++) x[j] = pas[j] && z[j] > 0 ? z[j] : 0.0;
  }
out:
  free(Ap);
  free(zp);
  free(z);
  free(w);
  free(r);
  free(pas);
  return rc;
}

int td_implicit_max_margin(int n, int d, const double *Z, double *w, td_err *err) {
  if (n < 1 || d < 1 || !Z || !w)
    return td_err_set(err, TD_EINVAL, NULL, "max_margin: need n, d >= 1");
  const int m = d + 1;
  double *E = malloc((size_t)m * n * sizeof *E), *f = calloc((size_t)m, sizeof *f),
         *u = malloc((size_t)n * sizeof *u), *r = malloc((size_t)m * sizeof *r);
  int rc = 0;
  if (!E || !f || !u || !r) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "max_margin: out of memory");
    goto out;
  }
  /* E = [Z^T; 1^T]: E[k][i] = Z[i][k] for k < d, E[d][i] = 1. */
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < d; k++) E[(size_t)k * n + i] = Z[(size_t)i * d + k];
    E[(size_t)d * n + i] = 1.0;
  }
  f[d] = 1.0;
  if ((rc = td_implicit_nnls(m, n, E, f, 0.0, u, err))) goto out;
  memcpy(r, f, (size_t)m * sizeof *r);
  td_la_gemv(0, m, n, 1.0, E, u, -1.0, r); /* r = E u - f */
  /* Infeasible exactly when r = 0 (Lawson and Hanson, ch. 23, Theorem 23.27); r[d] = -1 +
   * sum u lies in [-1, 0), so a tiny |r[d]| signals (near-)inseparable data. */
  if (!(fabs(r[d]) > 1e3 * DBL_EPSILON)) {
    rc = td_err_set(err, TD_EINVAL, NULL,
                    "max_margin: the data are not linearly separable through the origin");
    goto out;
  }
  for (int k = 0; k < d; k++) w[k] = -r[k] / r[d];
out:
  free(E);
  free(f);
  free(u);
  free(r);
  return rc;
}
