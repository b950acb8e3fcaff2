/* newton.h: damped Newton and Gauss-Newton steps with the DENSE curvature matrix (small models
 * only): the matrix built column by column from exact curvature products, then an
 * eigendecomposition-based solve that handles indefinite Hessians. */
#ifndef TD_NEWTON_H
#define TD_NEWTON_H

#include <stddef.h>

#include "curv/curv.h"
#include "base/err.h"

/* Which curvature matrix C is formed. */
typedef enum td_newton_curv {
  TD_NEWTON_HESSIAN = 0,    /* H = d^2 L / d theta^2 (exact HVPs, Pearlmutter 1994) */
  TD_NEWTON_GGN = 1,        /* G = J^T H_out J = the true Fisher for both losses (curv.h) */
  TD_NEWTON_FISHER_EMP = 2  /* the empirical Fisher (1/B) sum_i g_i g_i^T */
} td_newton_curv;

/* Default cap on the parameter count: the dense matrix and its eigenvectors take 16 n^2 bytes
 * (400 MB at 5000) and forming it costs n curvature products. */
#define TD_NEWTON_DEFAULT_MAX_PARAMS 5000
/* Hard ceiling of the cap (16 n^2 bytes = 6.4 GB at 20000). */
#define TD_NEWTON_MAX_PARAMS_CEIL 20000

typedef struct td_newton td_newton;

/* Outcome of one solve. */
typedef struct td_newton_info {
  double eig_min, eig_max; /* algebraic extremes of the curvature matrix's spectrum */
  int n_negative;          /* eigenvalues < 0 (their sign was flipped: |lambda_i|) */
  int n_dropped;           /* eigen-directions left out as numerically zero (see solve) */
  size_t products;         /* curvature products spent forming the matrix */
} td_newton_info;

/* td_newton_bytes: heap bytes of td_newton_create for n parameters (16 n^2 + O(n)), in double
 * precision so a kind's check can refuse before allocating. */
double td_newton_bytes(double n_params);

/* td_newton_create: workspace for dense solves of n_params unknowns (a matrix and its
 * eigenvectors in place, the eigenvalues, two vectors). max_params is the cap (the caller's
 * optimizer.newton_max_params). Errors: TD_EINVAL with err->field
 * "params.optimizer.newton_max_params" when n_params > max_params (the message gives both
 * numbers) or n_params == 0, TD_ENOMEM. *out is NULL on error; the caller owns it. */
int td_newton_create(size_t n_params, size_t max_params, td_newton **out /* OUT */,
                     td_err *err);
void td_newton_destroy(td_newton *o);

/* td_newton_dense: M (n x n, row-major, caller-owned) = the curvature matrix `kind` at c's
 * point and batch, column j = C e_j by one exact product (n products; the HVP is Pearlmutter's
 * R{backprop}, curv.h), then symmetrized as (M + M^T) / 2 (the products are symmetric up to
 * rounding). The point of c must be set (asserted). Kernel: never allocates; e (n) is a
 * scratch vector. */
void td_newton_dense(td_curv_ctx *c, td_newton_curv kind, double *M /* OUT, n x n */,
                     double *e /* scratch, n */);

/* td_newton_solve_dense: d (n) = -(|M| + damping I)^+ g for the symmetric M (n x n, row-major;
 * DESTROYED: it holds the eigenvectors on return), by the eigendecomposition M = Q diag(s)
 * Q^T (LAPACK dsyevd): d = -sum_i (q_i^T g) / (|s_i| + damping) q_i.
 * Indefinite M: the absolute values |s_i| turn a Newton step towards a saddle or a maximum
 * into a descent step along negative-curvature directions (the "saddle-free Newton" rescaling
 * of Dauphin et al. 2014, "Identifying and attacking the saddle point problem in
 * high-dimensional non-convex optimization", NeurIPS, sec. 4, eq. 11). For positive
 * semi-definite M it is the ordinary damped (Levenberg-Marquardt) step
 * (M + damping I)^{-1} g (Nocedal and Wright, Numerical Optimization, 2nd ed., eq. 10.32).
 * Directions whose |s_i| + damping <= 1e-12 * max_i |s_i| are dropped (pseudo-inverse: a
 * singular M with damping 0, e.g. a dead unit, gives a finite step). w (n) and t (n) are
 * scratch. Errors: TD_EINVAL (damping < 0), TD_EINTERNAL/TD_ENOMEM from dsyevd, TD_ERANGE
 * (non-finite M or g). info may be NULL. */
int td_newton_solve_dense(int n, double *M, const double *g, double damping,
                          double *d /* OUT */, double *w /* scratch n */,
                          double *t /* scratch n */, td_newton_info *info /* OUT */,
                          td_err *err);

/* td_newton_direction: the damped (saddle-free) Newton direction at c's point:
 * d = -(|C| + damping I)^+ g with C the dense `kind` matrix of c's batch (+ l2 I, the curvature
 * of an L2 term l2/2 ||theta||^2 whose gradient the caller has already added to g).
 * Costs n products and one n x n eigendecomposition. Errors: as td_newton_solve_dense;
 * TD_EINVAL when c's model size differs from the workspace's. */
int td_newton_direction(td_newton *o, td_curv_ctx *c, td_newton_curv kind, const double *g,
                        double damping, double l2, double *d /* OUT */,
                        td_newton_info *info /* OUT */, td_err *err);

#endif
