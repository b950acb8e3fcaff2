/* cg.c: linear conjugate gradient for (A + lambda I) x = b (see cg.h). */
#include "curv/cg.h"

#include <math.h>
#include <string.h>

#include "base/la.h"

size_t td_cg_work_len(size_t n, int max_iters) {
  return 3 * n + (size_t)(max_iters > 0 ? max_iters : 0) + 1;
}

/* out = A v + lambda v */
static void damped(td_matvec_fn A, void *ctx, size_t n, double lambda, const double *v,
                   double *out) {
  A(ctx, v, out, n);
  if (lambda != 0.0) td_la_axpy(n, lambda, v, out);
}

static int all_finite(const double *x, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += x[i] * 0.0; /* NaN iff some entry is NaN or Inf */
  return s == 0.0;
}

int td_cg_solve(td_matvec_fn A, void *ctx, size_t n, double lambda, const double *b, double *x,
                const td_cg_opts *o, double *work, td_cg_result *res, td_err *err) {
  memset(res, 0, sizeof *res);
  if (!A || !b || !x || !o || !work || n == 0 || o->max_iters < 1 || !(lambda >= 0) ||
      !isfinite(lambda))
    return td_err_set(err, TD_EINVAL, NULL, "cg: bad arguments");
  double *r = work, *p = work + n, *Ap = work + 2 * n, *hist = work + 3 * n;
  const double eps = o->martens_eps > 0 ? o->martens_eps : 5e-4;
  const double bnorm = td_la_nrm2(n, b);
  if (!isfinite(bnorm)) return td_err_set(err, TD_ERANGE, NULL, "cg: right-hand side not finite");

  /* Initial residual; a non-zero x0 costs one matvec. */
  int warm = 0;
  for (size_t i = 0; i < n && !warm; i++) warm = x[i] != 0.0;
  double phi = 0.0;
  if (warm) {
    damped(A, ctx, n, lambda, x, Ap);
    res->matvecs++;
    for (size_t i = 0; i < n; i++) r[i] = b[i] - Ap[i];
    phi = -0.5 * (td_la_dot(n, x, b) + td_la_dot(n, x, r));
    if (!isfinite(phi) || phi >= 0.0) { /* the warm start is no better than 0 */
      warm = 0;
      phi = 0.0;
    }
  }
  if (!warm) {
    memset(x, 0, n * sizeof *x);
    memcpy(r, b, n * sizeof *r);
  }
  res->warm_used = warm;
  if (bnorm == 0.0) { /* b = 0: x = 0 is the solution */
    memset(x, 0, n * sizeof *x);
    res->stop = TD_CG_STOP_RESID;
    return 0;
  }
  memcpy(p, r, n * sizeof *p);
  double rr = td_la_dot(n, r, r);
  hist[0] = phi;
  res->stop = TD_CG_STOP_ITERS;
  for (int it = 1; it <= o->max_iters; it++) {
    if (o->tol > 0 && sqrt(rr) <= o->tol * bnorm) {
      res->stop = TD_CG_STOP_RESID;
      break;
    }
    damped(A, ctx, n, lambda, p, Ap);
    res->matvecs++;
    const double pAp = td_la_dot(n, p, Ap);
    if (!isfinite(pAp))
      return td_err_set(err, TD_ERANGE, NULL, "cg: non-finite curvature at iteration %d", it);
    if (pAp <= 0.0) {
      res->stop = TD_CG_STOP_NEGCURV;
      break;
    }
    const double alpha = rr / pAp;
    td_la_axpy(n, alpha, p, x);
    td_la_axpy(n, -alpha, Ap, r);
    const double rr_new = td_la_dot(n, r, r);
    phi = -0.5 * (td_la_dot(n, x, b) + td_la_dot(n, x, r));
    if (!isfinite(rr_new) || !isfinite(phi) || !all_finite(x, n)) {
      td_la_axpy(n, -alpha, p, x); /* back to the last finite iterate */
      return td_err_set(err, TD_ERANGE, NULL, "cg: non-finite iterate at iteration %d", it);
    }
    hist[it] = phi;
    res->iters = it;
    const double beta = rr_new / rr;
    rr = rr_new;
    if (o->martens_stop) {
      int k = (int)ceil(0.1 * it);
      if (k < 10) k = 10;
      if (it > k && phi < 0.0 && (phi - hist[it - k]) / phi < k * eps) {
        res->stop = TD_CG_STOP_MARTENS;
        break;
      }
    }
    if (o->tol > 0 && sqrt(rr) <= o->tol * bnorm) {
      res->stop = TD_CG_STOP_RESID;
      break;
    }
    for (size_t i = 0; i < n; i++) p[i] = r[i] + beta * p[i];
  }
  res->phi = phi;
  res->rel_resid = sqrt(rr) / bnorm;
  return 0;
}
