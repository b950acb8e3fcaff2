/* lanczos.h: symmetric Lanczos with full re-orthogonalization: top-k eigenpairs of an
 * implicit operator (largest algebraic or largest magnitude), and the raw tridiagonalization
 * used by stochastic Lanczos quadrature (slq.h).
 *
 * Memory: the Lanczos basis is kept, (m + 1) * n doubles for m steps (m = 100 and
 * n = 1e6 parameters is 0.8 GB); td_lanczos_workspace_bytes tells a kind's estimate. */
#ifndef TD_LANCZOS_H
#define TD_LANCZOS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/linop.h"

typedef enum td_lanczos_which {
  TD_LANCZOS_LA = 0, /* largest algebraic: theta_1 >= theta_2 >= ... */
  TD_LANCZOS_LM = 1  /* largest magnitude: |theta_1| >= |theta_2| >= ... (signs kept) */
} td_lanczos_which;

typedef struct td_lanczos_opts {
  size_t k;              /* eigenpairs wanted, 1 <= k <= n */
  size_t max_steps;      /* Krylov dimension cap m (0: td_lanczos_default_steps(n, k)) */
  td_lanczos_which which;
  double tol;            /* stop once every wanted Ritz pair has resid <= tol * scale, where
                            scale = max |theta| (an estimate of ||A||_2); > 0, default 1e-10 */
  uint64_t seed;         /* start vector: td_linop_gaussian(seed, stream 0) */
  int want_vectors;      /* non-zero: also return the Ritz vectors */
} td_lanczos_opts;

typedef struct td_lanczos_result {
  size_t k;          /* pairs returned: min(opts.k, steps) */
  double *eigvals;   /* k Ritz values, ordered by opts.which (descending) */
  double *resid;     /* k residual estimates |beta_m| * |s_{m,i}| = ||A y_i - theta_i y_i||_2 */
  double *eigvecs;   /* k x n row-major unit Ritz vectors y_i, or NULL if not wanted */
  size_t n;          /* operator dimension */
  size_t steps;      /* Lanczos steps taken m (<= max_steps; fewer when converged early) */
  size_t n_matvec;   /* operator applications (== steps) */
  size_t n_converged;/* wanted pairs with resid <= tol * scale */
  size_t n_restarts; /* invariant subspaces hit and continued with a fresh random vector */
  double scale;      /* max |theta| over all Ritz values at the end */
} td_lanczos_result;

/* td_lanczos_opts_default: k as given, max_steps 0 (auto), LA, tol 1e-10, seed 0, no vectors. */
td_lanczos_opts td_lanczos_opts_default(size_t k);

/* td_lanczos_default_steps: min(n, max(2k + 20, 40)). Extreme eigenvalues of Hessian-like
 * spectra (a few outliers above a bulk) usually converge well within this; early stopping by
 * tol makes a larger cap cost only memory. */
size_t td_lanczos_default_steps(size_t n, size_t k);

/* td_lanczos_workspace_bytes: peak heap bytes td_lanczos_topk allocates for (n, m, k,
 * want_vectors), dominated by the (m + 1) x n basis; SIZE_MAX on overflow. */
size_t td_lanczos_workspace_bytes(size_t n, size_t m, size_t k, int want_vectors);

/* td_lanczos_topk: the k extreme eigenpairs of the symmetric operator `f` (n x n).
 *
 * Algorithm: Lanczos tridiagonalization A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T (Golub & Van
 * Loan, Matrix Computations, 4th ed., Alg. 10.1.1) with complete re-orthogonalization
 * (GvL §10.3.1) done as classical Gram-Schmidt applied twice, each pass two dgemv calls over
 * the basis ("twice is enough": Giraud, Langou, Rozloznik 2005). Ritz pairs (theta_i,
 * y_i = Q_m s_i) come from T_m s_i = theta_i s_i (LAPACKE_dstev), and their residual norm
 * is ||A y_i - theta_i y_i|| = |beta_m| |e_m^T s_i| (GvL §10.1; exact in exact arithmetic, and
 * to rounding while Q stays numerically orthogonal: Paige 1971, 1980). Each Ritz value is then within resid_i of an
 * eigenvalue of A (Krylov-Weinstein bound; Parlett, The Symmetric Eigenvalue Problem, ch. 4).
 * The second Gram-Schmidt pass is skipped when the first removed little (the DGKS criterion:
 * Daniel, Gragg, Kaufman, Stewart 1976, ||w'|| >= ||w||/sqrt(2)). Convergence is
 * tested after step k and then at steps spaced by ~10% of the current step count. When the
 * start vector spans an invariant subspace (beta_j <= 10 sqrt(n) eps ||T||) a fresh random
 * vector orthogonal to Q (td_linop_gaussian(seed, stream 1 + restart)) is taken and T gets a
 * zero off-diagonal (counted in n_restarts).
 * Cost: `steps` matvecs, plus 2 (sometimes 4) streams of the basis per step: O(n m^2) flops,
 * memory-bound: an 80-step run at n = 670k spends ~4.6 s in it on one core of the dev box.
 *
 * Limitation: single-vector Lanczos finds one copy of a repeated eigenvalue; a multiplicity
 * may show up late or not at all (use a block method if that matters).
 *
 * Errors: TD_EINVAL (f NULL, n 0, k 0 or > n, tol <= 0 or NaN), TD_ENOMEM, TD_ERANGE (the
 * operator produced a non-finite value; res is then zeroed), TD_EINTERNAL (dstev failed).
 * Ownership: *res (OUT) owns its arrays; free with td_lanczos_result_deinit. On error *res
 * is zeroed and owns nothing. */
int td_lanczos_topk(td_matvec_fn f, void *ctx, size_t n, const td_lanczos_opts *opts,
                    td_lanczos_result *res /* OUT */, td_err *err);

/* td_lanczos_result_deinit: free the arrays of *res and zero it. NULL is a no-op. */
void td_lanczos_result_deinit(td_lanczos_result *res);

/* td_lanczos_result_json: {"which": "LA"|"LM", "eigenvalues": [...], "residuals": [...],
 * "steps", "n_matvec", "n_converged", "scale"} as a new reference (no vectors), or NULL on
 * allocation failure or a non-finite value. */
json_t *td_lanczos_result_json(const td_lanczos_result *res, td_lanczos_which which);

/* td_lanczos_tridiag: up to m plain Lanczos steps with full re-orthogonalization from q0,
 * stopping early at an invariant subspace (no restart: the Gauss quadrature of SLQ is then
 * exact). Same recurrence as td_lanczos_topk.
 *   q0    (n)      start vector, non-zero and finite; normalized internally (borrowed)
 *   Q     (m x n)  workspace, row j = Lanczos vector q_{j+1}, row-major (caller-owned)
 *   alpha (m) OUT  diagonal of T; beta (m) OUT: beta[j] = ||r_j||, so the off-diagonal of T
 *                  is beta[0 .. steps-2] and beta[steps-1] is the residual norm beta_m
 *   *steps OUT     steps taken, 1 <= steps <= m
 * Errors: TD_EINVAL (NULL pointer, n or m zero, m > n, q0 zero or non-finite), TD_ENOMEM,
 * TD_ERANGE (non-finite operator output). */
int td_lanczos_tridiag(td_matvec_fn f, void *ctx, size_t n, const double *q0, size_t m,
                       double *Q /* m x n, workspace */, double *alpha /* OUT */,
                       double *beta /* OUT */, size_t *steps /* OUT */, td_err *err);

/* td_lanczos_tridiag_eig: eigen-decomposition of the symmetric tridiagonal T (m x m) with
 * diagonal alpha (m) and off-diagonal beta (m - 1): theta (m, OUT) ascending, and S (m x m,
 * OUT, row-major) with S[i*m + j] = component i of the unit eigenvector of theta_j.
 * Row 0 of S gives the Gauss quadrature weights S[j]^2 (Golub & Welsch 1969), row m-1 the
 * residual factors. Uses LAPACKE_dstev (implicit QL/QR). Errors: TD_EINVAL, TD_ENOMEM,
 * TD_EINTERNAL (no convergence). alpha and beta are not modified. */
int td_lanczos_tridiag_eig(size_t m, const double *alpha, const double *beta,
                           double *theta /* OUT */, double *S /* OUT */, td_err *err);

/* td_lanczos_json_array: x (n doubles, borrowed) as a new JSON array of reals (caller owns
 * the reference). Returns NULL on allocation failure or when an entry is not finite (JSON has
 * no literal for NaN/Inf). Shared by the Lanczos and SLQ result encoders. */
json_t *td_lanczos_json_array(const double *x, size_t n);

#endif
