/* kpred.c: NNGP posterior (Cholesky) and NTK gradient-flow predictions (eigendecomposition). */
#include "kernels/kpred.h"

#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"

static int finite_all(size_t n, const double *x) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

int td_kpred_gp(int n, const double *K, int m, const double *Ks, const double *kss, int k,
                const double *Y, double diag_reg, double *mean, double *var, double *cond,
                td_err *err) {
  if (n < 1 || m < 0 || k < 1 || !K || !Y || !mean || (m > 0 && !Ks))
    return td_err_set(err, TD_EINVAL, "kernel", "GP prediction: bad sizes or NULL inputs");
  if (!isfinite(diag_reg) || diag_reg < 0)
    return td_err_set(err, TD_EINVAL, "diag_reg", "diag_reg must be finite and >= 0");
  if (!finite_all((size_t)n * n, K) || (m && !finite_all((size_t)m * n, Ks)))
    return td_err_set(err, TD_EINVAL, "kernel", "the kernel has non-finite entries");
  double *A = malloc(sizeof(double) * (size_t)n * n);
  double *B = malloc(sizeof(double) * (size_t)n * (k + (size_t)m));
  if (!A || !B) {
    free(A);
    free(B);
    return td_err_set(err, TD_ENOMEM, NULL, "GP prediction: out of memory");
  }
  memcpy(A, K, sizeof(double) * (size_t)n * n);
  double mean_diag = 0;
  for (int i = 0; i < n; i++) {
    A[(size_t)i * n + i] += diag_reg;
    mean_diag += K[(size_t)i * n + i] / n;
  }
  /* 1-norm of the symmetric matrix from its lower triangle, for dpocon */
  double anorm = 0;
  for (int j = 0; j < n; j++) {
    double s = 0;
    for (int i = 0; i < n; i++) s += fabs(i >= j ? A[(size_t)i * n + j] : A[(size_t)j * n + i]);
    if (s > anorm) anorm = s;
  }
  int rc = 0;
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, A, n);
  if (info > 0) {
    rc = td_err_set(err, TD_ERANGE, "diag_reg",
                    "the kernel plus diag_reg = %g is not positive definite in floating point "
                    "(Cholesky breaks down at pivot %d of %d): duplicated inputs or a deep "
                    "kernel make it singular; set diag_reg > 0, e.g. %.1e (1e-6 of its mean "
                    "diagonal)", diag_reg, (int)info, n, 1e-6 * fabs(mean_diag));
    goto out;
  }
  if (info < 0) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "dpotrf: argument %d", (int)-info);
    goto out;
  }
  double rcond = 0;
  LAPACKE_dpocon(LAPACK_ROW_MAJOR, 'L', n, A, n, anorm, &rcond);
  if (cond) *cond = rcond > 0 ? 1 / rcond : INFINITY;
  if (!(rcond >= DBL_EPSILON)) {
    rc = td_err_set(err, TD_ERANGE, "diag_reg",
                    "the kernel plus diag_reg = %g has condition number %.3g, above 1/eps: "
                    "the solve would have no correct digit (duplicated inputs?); set diag_reg "
                    "> 0, e.g. %.1e", diag_reg, rcond > 0 ? 1 / rcond : INFINITY,
                    1e-6 * fabs(mean_diag));
    goto out;
  }
  /* B (n x (k + m)) = [Y, K_s^T]; solve A B' = B */
  for (int i = 0; i < n; i++) {
    for (int c = 0; c < k; c++) B[(size_t)i * (k + m) + c] = Y[(size_t)i * k + c];
    for (int j = 0; j < m; j++) B[(size_t)i * (k + m) + k + j] = Ks[(size_t)j * n + i];
  }
  info = LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'L', n, k + m, A, n, B, k + m);
  if (info) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "dpotrs: info %d", (int)info);
    goto out;
  }
  for (int j = 0; j < m; j++) {
    for (int c = 0; c < k; c++) {
      double s = 0;
      for (int i = 0; i < n; i++) s += Ks[(size_t)j * n + i] * B[(size_t)i * (k + m) + c];
      mean[(size_t)j * k + c] = s;
    }
    if (kss && var) {
      double q = 0;
      for (int i = 0; i < n; i++) q += Ks[(size_t)j * n + i] * B[(size_t)i * (k + m) + k + j];
      double v = kss[j] - q;
      var[j] = v > 0 ? v : 0;
    }
  }
out:
  free(A);
  free(B);
  return rc;
}

static int kpred(int n, const double *Theta, int m, const double *Theta_s, int k, const double *Y,
                 const double *F0, const double *F0s, double eta, double t, long steps,
                 double diag_reg, double *F, double *Fs, double *cond, td_err *err);

int td_kpred_flow(int n, const double *Theta, int m, const double *Theta_s, int k,
                  const double *Y, const double *F0, const double *F0s, double eta, double t,
                  double diag_reg, double *F, double *Fs, double *cond, td_err *err) {
  return kpred(n, Theta, m, Theta_s, k, Y, F0, F0s, eta, t, -1, diag_reg, F, Fs, cond, err);
}

int td_kpred_gd(int n, const double *Theta, int m, const double *Theta_s, int k,
                const double *Y, const double *F0, const double *F0s, double eta, long steps,
                double diag_reg, double *F, double *Fs, double *cond, td_err *err) {
  if (steps < 0) return td_err_set(err, TD_EINVAL, "steps", "steps must be >= 0");
  return kpred(n, Theta, m, Theta_s, k, Y, F0, F0s, eta, (double)steps, steps, diag_reg, F, Fs,
               cond, err);
}

/* steps < 0: gradient flow at time t; else `steps` steps of GD. */
static int kpred(int n, const double *Theta, int m, const double *Theta_s, int k, const double *Y,
                 const double *F0, const double *F0s, double eta, double t, long steps,
                 double diag_reg, double *F, double *Fs, double *cond, td_err *err) {
  if (n < 1 || m < 0 || k < 1 || !Theta || !Y || !F0 || !F ||
      (m > 0 && (!Theta_s || !F0s || !Fs)))
    return td_err_set(err, TD_EINVAL, "kernel", "flow prediction: bad sizes or NULL inputs");
  if (!(eta > 0) || !isfinite(eta))
    return td_err_set(err, TD_EINVAL, "lr", "the learning rate must be finite and > 0");
  if (!(t >= 0)) return td_err_set(err, TD_EINVAL, "t", "t must be >= 0");
  if (!isfinite(diag_reg) || diag_reg < 0)
    return td_err_set(err, TD_EINVAL, "diag_reg", "diag_reg must be finite and >= 0");
  if (!finite_all((size_t)n * n, Theta) || (m && !finite_all((size_t)m * n, Theta_s)))
    return td_err_set(err, TD_EINVAL, "kernel", "the kernel has non-finite entries");
  double *V = malloc(sizeof(double) * (size_t)n * n);
  double *lam = malloc(sizeof(double) * (size_t)n);
  double *C = malloc(sizeof(double) * (size_t)n * k);
  double *G = malloc(sizeof(double) * (size_t)n * k);
  double *TV = m ? malloc(sizeof(double) * (size_t)m * n) : NULL;
  int rc = 0;
  if (!V || !lam || !C || !G || (m && !TV)) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "flow prediction: out of memory");
    goto out;
  }
  memcpy(V, Theta, sizeof(double) * (size_t)n * n);
  for (int i = 0; i < n; i++) V[(size_t)i * n + i] += diag_reg;
  if ((rc = td_la_syevd(n, V, lam, err))) goto out;
  double lmax = lam[n - 1] > 0 ? lam[n - 1] : 0, lmin = lam[0] > 0 ? lam[0] : 0;
  if (cond) *cond = lmin > 0 ? lmax / lmin : INFINITY;
  if (isinf(t) && !(lmin > n * DBL_EPSILON * lmax)) {
    rc = td_err_set(err, TD_ERANGE, "diag_reg",
                    "t = infinity needs the inverse kernel, but lambda_min / lambda_max = %.3g "
                    "is below n eps (duplicated inputs?); set diag_reg > 0 or a finite t",
                    lmax > 0 ? lmin / lmax : 0.0);
    goto out;
  }
  /* C (n x k) = V^T (F0 - Y): the residual in the eigenbasis */
  for (size_t i = 0; i < (size_t)n * k; i++) G[i] = F0[i] - Y[i];
  td_la_gemm(1, 0, n, k, n, 1.0, V, G, 0.0, C);
  const double a = eta * t / n;
  /* train: F = Y + V diag(exp(-a lambda)) C */
  for (int i = 0; i < n; i++) {
    double l = lam[i] > 0 ? lam[i] : 0;
    double e = steps >= 0 ? pow(1 - eta * l / n, (double)steps) : isinf(t) ? 0 : exp(-a * l);
    for (int c = 0; c < k; c++) G[(size_t)i * k + c] = e * C[(size_t)i * k + c];
  }
  memcpy(F, Y, sizeof(double) * (size_t)n * k);
  td_la_gemm(0, 0, n, k, n, 1.0, V, G, 1.0, F);
  if (m) {
    /* test: Fs = F0s - (Theta_s V) diag(g(lambda)) C, g = (1 - exp(-a lambda)) / lambda */
    for (int i = 0; i < n; i++) {
      double l = lam[i] > 0 ? lam[i] : 0;
      double g = steps >= 0 ? (l > 0 ? (1 - pow(1 - eta * l / n, (double)steps)) / l : a)
                 : isinf(t) ? 1 / l : l > 0 ? -expm1(-a * l) / l : a;
      for (int c = 0; c < k; c++) G[(size_t)i * k + c] = g * C[(size_t)i * k + c];
    }
    td_la_gemm(0, 0, m, n, n, 1.0, Theta_s, V, 0.0, TV);
    memcpy(Fs, F0s, sizeof(double) * (size_t)m * k);
    td_la_gemm(0, 0, m, k, n, -1.0, TV, G, 1.0, Fs);
  }
out:
  free(V);
  free(lam);
  free(C);
  free(G);
  free(TV);
  return rc;
}
