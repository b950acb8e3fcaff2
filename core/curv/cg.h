/* cg.h: linear conjugate gradient for damped curvature systems (A + lambda I) x = b with a
 * matvec callback, warm starts, an iteration cap and Martens' relative-progress stop. */
#ifndef TD_CG_H
#define TD_CG_H

#include <stddef.h>

#include "base/err.h"
#include "base/linop.h"

/* Why CG stopped. */
typedef enum td_cg_stop {
  TD_CG_STOP_RESID = 0,   /* ||b - (A + lambda I) x|| <= tol ||b|| (or b = 0) */
  TD_CG_STOP_ITERS = 1,   /* the iteration cap */
  TD_CG_STOP_MARTENS = 2, /* Martens' relative-progress rule (see td_cg_opts) */
  TD_CG_STOP_NEGCURV = 3  /* p^T (A + lambda I) p <= 0: A + lambda I is not positive definite
                             along p; x is the last iterate (the direction is not taken) */
} td_cg_stop;

typedef struct td_cg_opts {
  int max_iters;      /* iteration cap (one matvec each), >= 1 */
  double tol;         /* relative residual target; 0 disables the residual test */
  int martens_stop;   /* non-zero: Martens 2010 sec. 4.4 rule below */
  double martens_eps; /* its epsilon (the paper's 5e-4 when <= 0) */
} td_cg_opts;

typedef struct td_cg_result {
  int iters;          /* CG iterations (= matvecs after the initial residual) */
  int matvecs;        /* all matvecs, including the warm start's initial residual */
  double phi;         /* phi(x) = 1/2 x^T (A + lambda I) x - b^T x at the returned x */
  double rel_resid;   /* ||b - (A + lambda I) x|| / ||b|| (recursive residual; 0 if b = 0) */
  int warm_used;      /* 1 when the warm start x0 was kept, 0 when CG started from 0 */
  td_cg_stop stop;
} td_cg_result;

/* td_cg_work_len: doubles of workspace td_cg_solve needs: 3 n + max_iters + 1. */
size_t td_cg_work_len(size_t n, int max_iters);

/* td_cg_solve: minimize phi(x) = 1/2 x^T (A + lambda I) x - b^T x, i.e. solve
 * (A + lambda I) x = b for a symmetric positive semi-definite operator A (n x n, a matvec) and
 * lambda >= 0, by linear conjugate gradient (Hestenes and Stiefel 1952; Nocedal and Wright,
 * Numerical Optimization, 2nd ed., Algorithm 5.2), starting from x (in: the warm start x0;
 * out: the solution).
 *  - Warm start (Martens 2010, "Deep learning via Hessian-free optimization", ICML, sec. 4.5):
 *    the initial residual r0 = b - (A + lambda I) x0 costs one matvec; when phi(x0) >= 0
 *    = phi(0) the warm start is worse than no start and CG restarts from x = 0 (res->warm_used
 *    0). Pass x = 0 for a cold start (no matvec is spent on it).
 *  - Stop when ||r_i|| <= tol ||b||, after max_iters iterations, on non-positive curvature
 *    p^T (A + lambda I) p <= 0 (the iterate before it is returned), or with martens_stop by
 *    Martens 2010 sec. 4.4: at iteration i, with k = max(10, ceil(0.1 i)), stop when i > k,
 *    phi(x_i) < 0 and (phi(x_i) - phi(x_{i-k})) / phi(x_i) < k * eps (the relative decrease
 *    of the quadratic over the last k iterations is small). phi is tracked for free as
 *    phi(x) = -1/2 x^T (b + r) with r = b - (A + lambda I) x.
 * work: td_cg_work_len(n, o->max_iters) doubles (caller-owned; contents are scratch).
 * Returns 0 (whatever the stop reason), TD_EINVAL (n = 0, max_iters < 1, lambda < 0, NULL
 * arguments), or TD_ERANGE when a matvec or the iterate becomes non-finite (x then holds the
 * last finite iterate). Never allocates. */
int td_cg_solve(td_matvec_fn A, void *ctx, size_t n, double lambda, const double *b,
                double *x /* in: x0, OUT: solution */, const td_cg_opts *o, double *work,
                td_cg_result *res /* OUT */, td_err *err);

#endif
