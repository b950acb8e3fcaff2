/* hypergrad.h: hypergradients d L_val(w_T(lambda)) / d lambda of an unrolled heavy-ball inner
 * optimization (prefix td_hg_): reverse mode through the stored trajectory (with truncation),
 * exact reversal in fixed point (Maclaurin, Duvenaud and Adams 2015), forward mode (Franceschi
 * et al. 2017), and the implicit function theorem by CG or Neumann (Lorraine, Vicol and
 * Duvenaud 2020).
 *
 * THE BILEVEL PROBLEM. Parameters w (P), outer variables:
 *  - per-group L2 strengths lambda_j (j < n_groups; group j is the contiguous range
 *    [group_off[j], group_off[j+1]) of w; for an MLP one group per linear layer, W and b):
 *    the inner objective is L_train(w) + sum_j lambda_j / 2 ||w_{G_j}||^2, so its gradient
 *    is g(w) = grad L_train(w) + Lambda w with Lambda = diag(lambda_{group(i)});
 *  - the learning rates lr_t of every step t = 0..T-1 (a learning-rate schedule).
 * The inner optimizer is heavy ball in PyTorch's SGD-momentum form (torch.optim.SGD with
 * momentum mu, dampening 0; equivalent to Polyak 1964 with w_{t+1} = w_t - lr g + mu (w_t -
 * w_{t-1}) for a constant lr):
 *     v_0 = 0,  v_{t+1} = mu v_t + g(w_t),  w_{t+1} = w_t - lr_t v_{t+1},   t = 0..T-1,
 * full batch (the inner gradient is deterministic). The outer loss is L_val(w_T).
 *
 * REVERSE RECURSION (all reverse methods; Maclaurin et al. 2015, Algorithm 2, in this
 * parametrization): with adjoints dw = dL_val/dw_T, dv = 0, for t = T-1 .. 0:
 *     d lr_t = -v_{t+1} . dw;   dv += -lr_t dw;
 *     d lambda_j += w_{t,G_j} . dv_{G_j};   d s_i += grad l_i(w_t) . dv / n (data weights);
 *     dw += (H(w_t) + Lambda) dv;   dv = mu dv;
 * with H the Hessian of L_train (exact HVPs). Cost: one gradient and one HVP per step.
 *
 * The inner problem is given by callbacks (td_hg_problem), so the same code serves a dense
 * quadratic (ridge regression: td_hg_ridge below, where every method has a closed form to
 * meet) and an MLP (kinds/hypergradient.c, bench/bench_hypergrad.c through td_curv). */
#ifndef TD_HYPERGRAD_H
#define TD_HYPERGRAD_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* The inner problem. point() sets the current point and returns L_train and its gradient
 * (WITHOUT the L2 term); hvp() multiplies the Hessian of L_train at the last point; val()
 * returns L_val and its gradient at w. All must be deterministic: the same w gives bitwise
 * the same gradient (exact reversal relies on it; one BLAS thread count for the whole run).
 * Return 0 or a negative TD_* code (TD_ERANGE for a non-finite loss). */
typedef struct td_hg_problem {
  size_t n;               /* parameters P >= 1 */
  int n_groups;           /* L2 groups >= 1 */
  const size_t *group_off;/* n_groups + 1 offsets, 0 = off[0] < ... < off[n_groups] = n */
  void *ctx;
  int (*point)(void *ctx, const double *w, double *loss /* OUT */, double *g /* OUT, n */,
               td_err *err);
  void (*hvp)(void *ctx, const double *v, double *hv /* OUT, n */);
  int (*val)(void *ctx, const double *w, double *loss /* OUT */, double *g /* OUT, n */,
             td_err *err);
  /* Optional (NULL: point() is used). td_hg_reversal calls point_at(ctx, t, 0, w, ...) at
   * forward step t and point_at(ctx, t, 1, w, ...) when it recomputes step t on the reverse
   * pass (where w is bitwise the forward w_t), so the problem may keep per-step data of the
   * forward pass and reuse it (hgmlp: the first layer's pre-activations, td_hgmlp_cache).
   * It must return bitwise what point(w) returns and leave the point set for hvp(). */
  int (*point_at)(void *ctx, int t, int reverse, const double *w, double *loss /* OUT */,
                  double *g /* OUT, n */, td_err *err);
  /* Optional (NULL: data weights are not available). PER-EXAMPLE DATA WEIGHTS as outer
   * variables: L_train is the mean (1/n_ex) sum_i l_i(w) of n_ex per-example losses, read as
   * the weighted mean (1/n_ex) sum_i s_i l_i(w) at unit weights s = 1 (the normalization
   * stays 1/n_ex when a weight moves). ex_dot(ctx, u, out) returns, at the last point set by
   * point(), out_i (n_ex) = d g / d s_i . u = grad l_i(w) . u / n_ex: the mixed partial that
   * the hypergradient methods contract with their adjoint, exactly as they contract
   * E_j w with it for an L2 strength. */
  size_t n_ex;
  void (*ex_dot)(void *ctx, const double *u, double *out /* OUT, n_ex */);
} td_hg_problem;

/* The unroll: T steps of heavy ball from w0 with momentum mu and lr_t = lrs[t]. */
typedef struct td_hg_unroll {
  int T;                  /* steps >= 1 */
  const double *lrs;      /* T learning rates (> 0) */
  double mu;              /* momentum in [0, 1); exact reversal needs mu > 0 */
  const double *lambda;   /* n_groups L2 strengths (>= 0) */
  const double *w0;       /* P initial parameters */
} td_hg_unroll;

/* What one method returns. d_lambda (n_groups) and d_lr (T, may be NULL: not computed) are
 * caller-owned arrays. */
typedef struct td_hg_result {
  double val_loss;        /* L_val at the end point (w_T, or the IFT point) */
  double *d_lambda;       /* OUT: dL_val/dlambda_j */
  double *d_lr;           /* OUT: dL_val/dlr_t (NULL: skipped) */
  double *d_wts;          /* OUT: dL_val/ds_i (n_ex) at unit data weights (NULL: skipped;
                             needs ex_dot; reverse, reversal and IFT only) */
  double secs;            /* wall time of the method (forward + backward) */
  double bytes;           /* the method's own working memory, counted: trajectory, tangents,
                             lost-bit store, solver vectors (not the problem's buffers) */
  long n_grad, n_hvp;     /* gradient evaluations and Hessian-vector products */
  /* exact reversal */
  long mismatch;          /* entries of (w_0, v_0) not recovered bitwise (0 when exact) */
  double store_bits;      /* bits held by the lost-bit store at the end of the forward pass */
  uint32_t mu_num, mu_den;/* the rational momentum used in fixed point */
  /* IFT */
  double stationarity;    /* ||g(w)|| at the IFT point (the inner problem's residual) */
  double solve_resid;     /* relative residual ||b - A q|| / ||b|| of the linear solve */
  int solve_iters;        /* CG iterations or Neumann terms */
  double lambda_max;      /* Neumann: top eigenvalue of H + Lambda (power method) */
  double alpha;           /* Neumann: step alpha; it converges iff 0 < alpha lambda_max < 2
                             and H + Lambda is positive definite */
} td_hg_result;

/* td_hg_forward: run the unroll in double precision: w_T (OUT, P) and v_T (OUT, P, may be
 * NULL). traj (OUT, may be NULL): (T + 1) x P rows w_0 .. w_T. Errors: TD_EINVAL (bad
 * arguments), TD_ENOMEM, the callbacks' errors. */
int td_hg_forward(const td_hg_problem *p, const td_hg_unroll *u, double *wT /* OUT */,
                  double *vT /* OUT */, double *traj /* OUT */, td_err *err);

/* td_hg_reverse: reverse mode through the stored trajectory: a forward pass that keeps w_t
 * and v_{t+1} of the last K steps (memory 2 K P doubles), then the reverse recursion of the
 * header over those K steps only (K = truncate, 0 or >= T: all T steps, the exact
 * hypergradient; K < T: the K-step truncated back-propagation of Shaban, Cheng, Hatch and
 * Boots 2019, biased; d_lr_t is 0 for t < T - K). Errors as td_hg_forward. */
int td_hg_reverse(const td_hg_problem *p, const td_hg_unroll *u, int truncate,
                  td_hg_result *res /* OUT */, td_err *err);

/* Fixed-point representation of exact reversal: x = i * 2^-TD_HG_RADIX with i an int64, so
 * |x| < 2^(63 - TD_HG_RADIX) = 2048 and the resolution is 2.2e-16 (Maclaurin et al. 2015,
 * sec. 2.3 use the same radix). */
#define TD_HG_RADIX 52

/* td_hg_mu_rational: the rational n/d nearest to mu with d <= 65536 (continued fractions),
 * e.g. 0.9 -> 9/10. Errors: TD_EINVAL unless 0 < mu < 1. */
int td_hg_mu_rational(double mu, uint32_t *num /* OUT */, uint32_t *den /* OUT */,
                      td_err *err);

/* td_hg_reversal: exact reversal of heavy ball (Maclaurin, Duvenaud and Adams 2015, sec. 2.3
 * and Algorithm 2). The forward pass runs in fixed point (TD_HG_RADIX): v <- (n/d) v + g,
 * w <- w - lr_t v, with g = g(w) evaluated at the double value of w and rounded to the grid;
 * multiplication by mu = n/d is done exactly on integers: the remainder r = v mod d is
 * pushed onto a per-parameter mixed-radix store S <- S d + r, and the digit q = S mod n is
 * popped back into v, so v <- (v - r)/d * n + q loses nothing and the store grows by only
 * log2(d/n) bits per step (0.152 bits for mu = 0.9) — the information that momentum's decay
 * destroys. The reverse pass undoes every step bitwise (division by mu is the same operation
 * with n and d swapped), recomputes g(w_t) from the recovered w_t, and runs the reverse
 * recursion of the header. Memory: w, v, adjoints (4 P doubles) plus the store, O(P) plus
 * the lost bits, instead of O(T P). The differentiated map is the fixed-point one (it differs
 * from the double-precision trajectory by rounding, about 1e-16 per step).
 * res->mismatch counts the entries of (w_0, v_0) that the reversal failed to recover bitwise
 * (0 unless a callback is not deterministic). traj_fwd / traj_rev (may be NULL): (T + 1) x P
 * doubles, the values of w_t on the forward pass and on the reverse pass (for tests; they
 * are bitwise equal when the reversal is exact). Errors: TD_EINVAL (mu not in (0, 1)),
 * TD_ERANGE (a value left the fixed-point range, |x| >= 2048, or is not finite), TD_ENOMEM,
 * the callbacks' errors. */
int td_hg_reversal(const td_hg_problem *p, const td_hg_unroll *u, td_hg_result *res /* OUT */,
                   double *traj_fwd /* OUT */, double *traj_rev /* OUT */, td_err *err);

/* td_hg_forward_mode: real-time recurrent (forward-mode) differentiation (Franceschi,
 * Donini, Frasconi and Pontil 2017, "Forward and reverse gradient-based hyperparameter
 * optimization", sec. 3): for every L2 group j, tangents Zw = dw_t/dlambda_j, Zv = dv_t/dlambda_j
 * follow Zv <- mu Zv + (H(w_t) + Lambda) Zw + E_j w_t, Zw <- Zw - lr_t Zv, and d lambda_j =
 * grad L_val(w_T) . Zw_T. Cost per hyperparameter: one HVP per step and 2 P doubles of
 * memory (so n_groups HVPs per step in all), independent of T. d_lr is not computed (set
 * to NULL or ignored). Errors as td_hg_forward. */
int td_hg_forward_mode(const td_hg_problem *p, const td_hg_unroll *u,
                       td_hg_result *res /* OUT */, td_err *err);

typedef enum { TD_HG_IFT_CG = 0, TD_HG_IFT_NEUMANN = 1 } td_hg_ift_solver;

typedef struct td_hg_ift_opts {
  td_hg_ift_solver solver;
  int max_iters;          /* CG iterations or Neumann terms, >= 1 */
  double tol;             /* CG relative residual target */
  double alpha;           /* Neumann step; <= 0: 1 / lambda_max (power method) */
  int power_iters;        /* power-method budget for lambda_max (Neumann), >= 1 */
} td_hg_ift_opts;

/* td_hg_ift: the implicit-function-theorem hypergradient at a point w (P) that is taken as
 * the inner solution (g(w) = 0; res->stationarity reports ||g(w)||, the inexactness):
 *   d lambda_j = -grad L_val(w)^T (H + Lambda)^-1 E_j w      (Lorraine et al. 2020, eq. 5-6)
 * with E_j w the group-j part of w (the mixed partial d g / d lambda_j). The inverse-Hessian-
 * vector product q = (H + Lambda)^-1 grad L_val is solved by
 *  - CG (td_cg_solve; H + Lambda must be positive definite), or
 *  - the Neumann series q = alpha sum_{k<K} (I - alpha A)^k b (Lorraine et al. 2020, eq. 7,
 *    Algorithm 3), which converges iff A = H + Lambda is positive definite and
 *    alpha lambda_max(A) < 2; lambda_max is measured by the power method and returned with
 *    alpha, so the condition can be checked (a violated condition is not an error: the
 *    residual shows the divergence).
 * lambda (n_groups) are the strengths at which w was obtained. Errors: TD_EINVAL, TD_ENOMEM,
 * TD_ERANGE (non-finite solve), the callbacks' errors. */
int td_hg_ift(const td_hg_problem *p, const double *lambda, const double *w,
              const td_hg_ift_opts *o, td_hg_result *res /* OUT */, td_err *err);
/* With res->d_wts (and p->ex_dot): also the data-weight hypergradient at unit weights,
 *   d s_i = -grad l_i(w)^T (H + Lambda)^-1 grad L_val(w) / n,
 * which with one L2 strength lambda for all parameters is Koh and Liang's (2017, eq. 2)
 * influence of up-weighting example i, I_up,loss(z_i, z_val) = -g_val^T (H + lambda I)^-1 g_i,
 * divided by n (bilevel/influence.h's score_i / n: up-weighting by eps in J + eps l_i is a
 * weight change of n eps here). Cost: one JVP more. */

/* ------------------------------------------------------------------ ridge regression */

/* A dense quadratic inner problem: L_train(w) = 1/(2n) ||X w - y||^2, L_val(w) =
 * 1/(2m) ||Xv w - yv||^2, so H = X^T X / n for every w and the IFT is exact at the minimizer
 * w*(lambda) = (H + Lambda)^-1 X^T y / n. Borrowed arrays; H and X^T y / n precomputed (owned). */
typedef struct td_hg_ridge {
  size_t n, m, d;
  const double *X, *y, *Xv, *yv; /* n x d, n, m x d, m (borrowed) */
  double *H;                     /* d x d = X^T X / n (owned) */
  double *b;                     /* d = X^T y / n (owned) */
  double *r;                     /* max(n, m) scratch */
  double *rt;                    /* n: the training residual X w - y at the last point */
} td_hg_ridge;

/* td_hg_ridge_init / td_hg_ridge_deinit: precompute H and b. Errors: TD_EINVAL, TD_ENOMEM. */
int td_hg_ridge_init(td_hg_ridge *q, const double *X, const double *y, size_t n,
                     const double *Xv, const double *yv, size_t m, size_t d, td_err *err);
void td_hg_ridge_deinit(td_hg_ridge *q);

/* td_hg_ridge_problem: a td_hg_problem on q (ctx = q) with the given groups, with data
 * weights (n_ex = n, l_i = (x_i^T w - y_i)^2 / 2: ex_dot out_i = r_i x_i^T u / n). */
td_hg_problem td_hg_ridge_problem(td_hg_ridge *q, int n_groups, const size_t *group_off);

/* td_hg_ridge_solve: the exact inner minimizer w* (d) = (H + Lambda)^-1 b and, when dl is not
 * NULL, the closed-form hypergradient dl (n_groups) = -grad L_val(w*)^T (H + Lambda)^-1 E_j w*,
 * both by a Cholesky factorization (LAPACKE dposv; independent of CG). Errors: TD_EINVAL,
 * TD_ERANGE (H + Lambda not positive definite), TD_ENOMEM. */
int td_hg_ridge_solve(const td_hg_ridge *q, int n_groups, const size_t *group_off,
                      const double *lambda, double *wstar /* OUT */, double *dl /* OUT */,
                      td_err *err);

/* td_hg_ridge_dweights: the closed-form data-weight hypergradient at unit weights and the
 * exact minimizer: ds (n, OUT) with ds_i = -r_i x_i^T (H + Lambda)^-1 grad L_val(w*) / n,
 * r_i = x_i^T w* - y_i (differentiate (H_s + Lambda) w* = X^T S y / n in s_i at s = 1), by
 * Cholesky. Errors as td_hg_ridge_solve. */
int td_hg_ridge_dweights(const td_hg_ridge *q, int n_groups, const size_t *group_off,
                         const double *lambda, double *ds /* OUT */, td_err *err);

#endif
