/* kernels.c: analytic NNGP and NTK layer recursions (see kernels.h for the formulas). */
#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int td_kernel_act_parse(const char *name, td_kact *out) {
  if (!name) return TD_EINVAL;
  if (!strcmp(name, "relu")) *out = TD_KACT_RELU;
  else if (!strcmp(name, "erf")) *out = TD_KACT_ERF;
  else if (!strcmp(name, "linear")) *out = TD_KACT_LINEAR;
  else return TD_EINVAL;
  return 0;
}

int td_kernel_kind_parse(const char *name, td_kernel_kind *out) {
  if (!name) return TD_EINVAL;
  if (!strcmp(name, "nngp")) *out = TD_KERNEL_NNGP;
  else if (!strcmp(name, "ntk")) *out = TD_KERNEL_NTK;
  else return TD_EINVAL;
  return 0;
}

void td_kernel_expect(td_kact act, double k11, double k12, double k22, double *e_phi,
                      double *e_dphi) {
  if (k11 < 0) k11 = 0;
  if (k22 < 0) k22 = 0;
  double s = sqrt(k11 * k22);
  if (k12 > s) k12 = s;
  if (k12 < -s) k12 = -s;
  switch (act) {
  case TD_KACT_RELU: {
    if (s == 0) {
      *e_phi = 0;
      *e_dphi = 0;
      return;
    }
    double c = k12 / s;
    if (c > 1) c = 1;
    if (c < -1) c = -1;
    double th = acos(c);
    *e_phi = s * (sin(th) + (M_PI - th) * c) / (2 * M_PI);
    *e_dphi = (M_PI - th) / (2 * M_PI);
    return;
  }
  case TD_KACT_ERF: {
    double a = 1 + 2 * k11, b = 1 + 2 * k22;
    double r = 2 * k12 / sqrt(a * b);
    if (r > 1) r = 1;
    if (r < -1) r = -1;
    *e_phi = (2 / M_PI) * asin(r);
    double det = a * b - 4 * k12 * k12; /* >= a + b - 1 >= 1 since k12^2 <= k11 k22 */
    *e_dphi = (4 / M_PI) / sqrt(det);
    return;
  }
  case TD_KACT_LINEAR:
  default:
    *e_phi = k12;
    *e_dphi = 1;
    return;
  }
}

static int check_cfg(const td_kernel_cfg *c, td_err *err) {
  if (!c) return td_err_set(err, TD_EINVAL, NULL, "no kernel configuration");
  if (c->act != TD_KACT_RELU && c->act != TD_KACT_ERF && c->act != TD_KACT_LINEAR)
    return td_err_set(err, TD_EINVAL, "activation", "activation must be relu, erf or linear");
  if (c->depth < 0 || c->depth > TD_KERNEL_MAX_DEPTH)
    return td_err_set(err, TD_EINVAL, "depth", "depth must be in [0, %d], got %d",
                      TD_KERNEL_MAX_DEPTH, c->depth);
  if (!isfinite(c->sigma_w2) || c->sigma_w2 <= 0)
    return td_err_set(err, TD_EINVAL, "sigma_w2", "sigma_w2 must be finite and > 0");
  if (!isfinite(c->sigma_b2) || c->sigma_b2 < 0)
    return td_err_set(err, TD_EINVAL, "sigma_b2", "sigma_b2 must be finite and >= 0");
  return 0;
}

/* The NNGP diagonal K^l(x, x), l = 1 .. depth + 1, of each row: q[l * n + i] (l 0-based). */
static void diag_recursion(const td_kernel_cfg *c, const double *X, int n, int d, double *q) {
  for (int i = 0; i < n; i++) {
    const double *x = X + (size_t)i * d;
    double s = 0;
    for (int j = 0; j < d; j++) s += x[j] * x[j];
    double k = c->sigma_w2 * s / d + c->sigma_b2;
    q[i] = k;
    for (int l = 1; l <= c->depth; l++) {
      double ep, ed;
      td_kernel_expect(c->act, k, k, k, &ep, &ed);
      k = c->sigma_w2 * ep + c->sigma_b2;
      q[(size_t)l * n + i] = k;
    }
  }
}

int td_kernel_matrix(const td_kernel_cfg *cfg, td_kernel_kind kind, const double *X, int n1,
                     const double *X2, int n2, int d, double *out, td_err *err) {
  int rc = check_cfg(cfg, err);
  if (rc) return rc;
  if (kind != TD_KERNEL_NNGP && kind != TD_KERNEL_NTK)
    return td_err_set(err, TD_EINVAL, "kernel", "kernel must be nngp or ntk");
  if (!X || !out || n1 < 1 || d < 1)
    return td_err_set(err, TD_EINVAL, "x", "x must have at least one row and one column");
  if (!X2) {
    X2 = X;
    n2 = n1;
  }
  if (n2 < 1) return td_err_set(err, TD_EINVAL, "x2", "x2 must have at least one row");
  int L = cfg->depth + 1;
  double *q1 = malloc(sizeof(double) * (size_t)L * n1);
  double *q2 = X2 == X ? q1 : malloc(sizeof(double) * (size_t)L * n2);
  if (!q1 || !q2) {
    free(q1);
    if (q2 != q1) free(q2);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory for the kernel diagonals");
  }
  diag_recursion(cfg, X, n1, d, q1);
  if (q2 != q1) diag_recursion(cfg, X2, n2, d, q2);
  for (int i = 0; i < n1; i++) {
    const double *x = X + (size_t)i * d;
    for (int j = 0; j < n2; j++) {
      const double *y = X2 + (size_t)j * d;
      double s = 0;
      for (int t = 0; t < d; t++) s += x[t] * y[t];
      double k = cfg->sigma_w2 * s / d + cfg->sigma_b2, th = k;
      for (int l = 1; l <= cfg->depth; l++) {
        double ep, ed;
        td_kernel_expect(cfg->act, q1[(size_t)(l - 1) * n1 + i], k,
                         q2[(size_t)(l - 1) * n2 + j], &ep, &ed);
        double kn = cfg->sigma_w2 * ep + cfg->sigma_b2;
        th = kn + cfg->sigma_w2 * ed * th;
        k = kn;
      }
      out[(size_t)i * n2 + j] = kind == TD_KERNEL_NNGP ? k : th;
    }
  }
  free(q1);
  if (q2 != q1) free(q2);
  return 0;
}
