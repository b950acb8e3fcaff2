/* influence.h: influence functions (Koh and Liang 2017) of training examples on a test loss
 * (prefix td_inf_): the damped inverse-Hessian-vector product by an exact dense solve, by CG or
 * by LiSSA (Agarwal, Bullins and Hazan 2017), scores for every training example, self-influence,
 * Pearson / Spearman correlations, and exact leave-one-out for ridge regression.
 *
 * CONVENTIONS (also in the README). The model w* minimizes the training objective
 *   J(w) = (1/n) sum_i l_i(w) + (damping / 2) ||w||^2,
 * so the damped Hessian H + damping I is the Hessian of J (the L2 strength IS the damping, and
 * for a network trained with that L2 the influence is the derivative of what retraining does).
 * With g_i = grad l_i(w*) (per example, NOT divided by n) and g_test = grad L_test(w*):
 *   score_i = I_up,loss(z_i, z_test) = -g_test^T (H + damping I)^-1 g_i
 * (Koh and Liang 2017, eq. 2): the derivative of the test loss with respect to the weight
 * eps of example i in J + eps l_i. POSITIVE score = upweighting z_i RAISES the test loss
 * (harmful); negative = helpful. Removing z_i is eps = -1/n, so the predicted change of the
 * test loss on removal is -score_i / n (positive: removing it hurts: it was helpful).
 * Self-influence s_i = g_i^T (H + damping I)^-1 g_i >= 0 (when H + damping I is positive
 * definite): large for examples the model fits against the rest of the data, e.g. mislabeled
 * ones. No normalization is applied to either (kronfluence issue #36: state it). */
#ifndef TD_INFLUENCE_H
#define TD_INFLUENCE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* The curvature of the training loss at w*. hvp: out = H v for the MEAN training loss over all
 * n examples (no damping); hvp_batch: out = H_B v for the mean over the examples idx[0..b)
 * (LiSSA's stochastic products; NULL: LiSSA uses the full H). */
typedef struct td_inf_problem {
  size_t n_params;
  size_t n_train;
  void *ctx;
  void (*hvp)(void *ctx, const double *v, double *out /* OUT */);
  void (*hvp_batch)(void *ctx, const size_t *idx, int b, const double *v, double *out /* OUT */);
} td_inf_problem;

typedef enum { TD_INF_EXACT = 0, TD_INF_CG = 1, TD_INF_LISSA = 2 } td_inf_method;

typedef struct td_inf_opts {
  td_inf_method method;
  double damping;      /* > 0 (the L2 strength of J) */
  int cg_iters;        /* CG cap (default 200 if <= 0) */
  double cg_tol;       /* CG relative residual (default 1e-10 if <= 0) */
  int lissa_depth;     /* LiSSA recursion depth J (default 1000 if <= 0) */
  int lissa_repeats;   /* averaged independent recursions (default 1) */
  int lissa_batch;     /* examples per stochastic HVP (0: the full H) */
  double lissa_scale;  /* s: must exceed lambda_max(H + damping I) for convergence */
  uint64_t seed;       /* LiSSA's batch draws */
} td_inf_opts;

/* The exact solver's state: the damped Hessian built densely from n_params HVPs (columns
 * H e_k, symmetrized) and its Cholesky factor. For n_params up to a few thousand. */
typedef struct td_inf_exact {
  size_t n;
  double *L;   /* n x n Cholesky factor (upper, LAPACKE dpotrf row-major) */
} td_inf_exact;

/* td_inf_exact_init: build and factor H + damping I. Errors: TD_EINVAL, TD_ENOMEM, TD_ERANGE
 * (not positive definite: raise the damping). */
int td_inf_exact_init(td_inf_exact *e, const td_inf_problem *p, double damping, td_err *err);
void td_inf_exact_deinit(td_inf_exact *e);
/* td_inf_exact_solve: q = (H + damping I)^-1 b (in place allowed: q may equal b). */
void td_inf_exact_solve(const td_inf_exact *e, const double *b, double *q /* OUT */);

/* td_inf_ihvp: q (n_params) = (H + damping I)^-1 b by o->method:
 *  - TD_INF_EXACT: builds the dense damped Hessian each call (use td_inf_exact_* to reuse);
 *  - TD_INF_CG: td_cg_solve with lambda = damping (*iters = CG iterations);
 *  - TD_INF_LISSA: h_0 = b, h_j = b + (1 - damping / s) h_{j-1} - H_Bj h_{j-1} / s, q = h_J / s
 *    (Agarwal et al. 2017, Algorithm 1; Koh and Liang 2017, sec. 3), with H_Bj the Hessian of a
 *    random batch of lissa_batch examples drawn without replacement from stream seed; averaged
 *    over lissa_repeats recursions. Unbiased in the limit J -> inf when s > lambda_max; its
 *    error is the truncation (1 - lambda_min / s)^J plus the batch noise.
 * Errors: TD_EINVAL (damping <= 0, bad options), TD_ENOMEM, TD_ERANGE (non-finite). */
int td_inf_ihvp(const td_inf_problem *p, const td_inf_opts *o, const double *b,
                double *q /* OUT */, int *iters /* OUT, may be NULL */, td_err *err);

/* EK-FAC (George, Laurent, Bouthillier, Ballas and Vincent 2018, "Fast approximate natural
 * gradient descent in a Kronecker-factored eigenbasis", sec. 3; Grosse et al. 2023, "Studying
 * large language model generalization with influence functions", sec. 2.2) of the block-
 * diagonal EMPIRICAL Fisher of an MLP without normalization layers: per linear layer j with
 * inputs a_i (n_in) and per-example output gradients d_i (n_out; the bias gradient), the
 * per-example gradient is d_i [a_i; 1]^T, A = mean_i [a_i; 1][a_i; 1]^T = Q_A diag Q_A^T,
 * S = mean_i d_i d_i^T = Q_S diag Q_S^T, and the eigenvalue correction
 *   Lambda_ab = mean_i ((Q_S^T d_i)_a ((Q_A^T [a_i; 1])_b)^2
 * is the empirical Fisher's diagonal in the Kronecker eigenbasis (George et al., eq. 12), so
 * F_j ~ (Q_S (x) Q_A) diag(Lambda) (Q_S (x) Q_A)^T. The solve applies the inverse of that
 * plus damping I per layer. The curvature is the empirical Fisher with the TRUE labels (a
 * Gauss-Newton-like PSD matrix), not the Hessian of exact/CG/LiSSA: the estimators differ by
 * that too. */
#define TD_INF_EKFAC_MAX 17

typedef struct td_inf_ekfac_layer {
  size_t off;      /* offset of W (n_out x n_in, row-major) then b (n_out) in the flat vector */
  int n_out, n_in;
  double *QS;      /* n_out x n_out, eigenvectors as columns (owned) */
  double *QA;      /* (n_in + 1) x (n_in + 1), eigenvectors as columns (owned) */
  double *lam;     /* n_out x (n_in + 1) corrected eigenvalues (owned) */
} td_inf_ekfac_layer;

typedef struct td_inf_ekfac {
  int n_layers;
  size_t n_params;
  td_inf_ekfac_layer L[TD_INF_EKFAC_MAX];
  double *work;    /* scratch of the solve (owned) */
} td_inf_ekfac;

/* td_inf_ekfac_init: the factors and corrections from n examples: acts[j] (n x n_in[j], the
 * inputs of linear layer j) and D[j] (n x n_out[j], the per-example gradients of its bias,
 * NOT divided by n). off[j] locates the layer in the flat parameter vector of n_params entries;
 * entries outside every layer are treated as having zero curvature (solve: divided by the
 * damping). Errors: TD_EINVAL, TD_ENOMEM, TD_EINTERNAL (eigensolver). */
int td_inf_ekfac_init(td_inf_ekfac *e, int n_layers, const size_t *off, const int *n_out,
                      const int *n_in, const double *const *acts, const double *const *D,
                      size_t n, size_t n_params, td_err *err);
void td_inf_ekfac_deinit(td_inf_ekfac *e);
/* td_inf_ekfac_solve: q = (F_ekfac + damping I)^-1 b, layer by layer (q may not alias b). */
void td_inf_ekfac_solve(const td_inf_ekfac *e, double damping, const double *b,
                        double *q /* OUT */);

/* td_inf_scores: score_i = -G_i . q for the n rows of G (n x P, per-example gradients) and
 * q = (H + damping I)^-1 g_test: the I_up,loss of every training example (see the header). */
void td_inf_scores(const double *G, size_t n, size_t P, const double *q, double *score /* OUT */);

/* td_inf_pearson / td_inf_spearman: correlation of x and y (n >= 2); Spearman is Pearson of
 * the average ranks (ties get their mean rank). NaN when a variance is 0. */
double td_inf_pearson(const double *x, const double *y, size_t n);
double td_inf_spearman(const double *x, const double *y, size_t n);

/* td_inf_ridge_loo: exact leave-one-out for ridge regression J(w) = 1/(2n) ||X w - y||^2 +
 * damping/2 ||w||^2 (X n x d, the 1/n kept when an example is removed, i.e. eps = -1/n):
 * with A = X^T X / n + damping I, w* = A^-1 X^T y / n, residual r_i = x_i^T w* - y_i and
 * leverage h_i = x_i^T A^-1 x_i / n, the Sherman-Morrison formula gives
 *   w_{-i} = w* + A^-1 x_i r_i / (n (1 - h_i)),
 * and dloss[i] (OUT, n) = L_test(w_{-i}) - L_test(w*) for L_test(w) = 1/(2m) ||Xt w - yt||^2
 * (Xt m x d). The first-order influence prediction is -score_i / n = g_test^T A^-1 x_i r_i / n:
 * the exact change differs by the factor 1/(1 - h_i) and a second-order term.
 * Errors: TD_EINVAL, TD_ENOMEM, TD_ERANGE (A not positive definite). */
int td_inf_ridge_loo(const double *X, const double *y, size_t n, size_t d, const double *Xt,
                     const double *yt, size_t m, double damping, double *dloss /* OUT */,
                     td_err *err);

#endif
