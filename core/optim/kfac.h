/* kfac.h: K-FAC (Martens and Grosse 2015): per linear layer Kronecker factors of the Fisher,
 * A = E[a a^T] of the layer inputs (with a homogeneous 1 for the bias) and G = E[g g^T] of the
 * backpropagated pre-activation gradients, kept as moving averages, with factored Tikhonov
 * damping and periodically refreshed inverses (eigendecompositions).
 *
 * Layout. Linear layer j maps a (n_in) to s = W a + b (n_out); with abar = [a; 1] its
 * per-example gradient is the n_out x (n_in + 1) matrix D = g abar^T, g = dl/ds. Packing the
 * flat parameters (W row-major, then b; model.h) as V = [W | b] (n_out x (n_in + 1)), the
 * Fisher block of layer j is E[vec(D) vec(D)^T] and K-FAC approximates its product with V by
 *     F_j V ~= G V A,     G = E[g g^T] (n_out x n_out),  A = E[abar abar^T] ((n_in+1)^2),
 * (Martens and Grosse 2015, eq. 1 and sec. 3: F_j ~= A kron G with column-stacked vec; here
 * the same operator written on the matrix V), and the approximate Fisher is block-diagonal
 * over layers (their sec. 4.2). Expectations are batch means; the loss is the batch MEAN, so
 * g is the gradient of ONE example's loss l_i (not divided by B), and G V A is on the same
 * scale as the GGN and Fisher of curv.h.
 *
 * Which Fisher feeds G (td_kfac_fisher):
 *  - SAMPLED (default; Martens and Grosse sec. 5): per example one target drawn from the
 *    model's predictive distribution (softmax: y ~ p(.|x); squared error: t ~ N(f(x), I)),
 *    g backpropagated from r = dl/dz at that target. E[G] is the true-Fisher factor.
 *  - EXACT: the expectation over the predictive distribution done exactly by enumerating the
 *    K outputs: cross-entropy backpropagates the K cotangents sqrt(p_k) (p - e_k) (whose outer
 *    products sum to diag(p) - p p^T = H_out), squared error the K unit vectors e_k
 *    (H_out = I). K backward passes per update instead of one.
 *  - EMPIRICAL: the batch's own labels (the empirical Fisher's factor).
 *
 * What is exact. For ONE linear layer (no hidden layer) with squared error, the EXACT mode
 * gives G = I and A = (1/B) sum abar abar^T, and G V A equals the GGN (= the Fisher = the
 * Hessian) product exactly, since the GGN of that model is V -> (1/B) sum_i V abar_i abar_i^T
 * (tests/test_kfac.c). More generally, with squared error the LAST layer's diagonal block is
 * exact in EXACT mode. With cross-entropy the per-example H_out,i = diag(p_i) - p_i p_i^T
 * varies with the example, so E[H_out,i kron abar_i abar_i^T] != E[H_out] kron E[abar abar^T]
 * and K-FAC is an approximation even for one layer.
 *
 * Damping floor. The eigenvalues that td_kfac_refresh gets from LAPACK (dsyevd, backward
 * stable) carry an absolute error of order dim * eps * ||F|| (Weyl's inequality applied to the
 * backward error; Golub and Van Loan, "Matrix Computations", 4th ed., sec. 8.1.2 and 8.4; the
 * same dim * eps * sigma_max cut as numpy's matrix_rank and LAPACK's rcond), and eigenvectors
 * of (near-)zero eigenvalues mix with the rest at that level. A factored damping below it
 * divides that rounding noise by an arbitrarily small number: with optimizer.damping 1e-300
 * (gamma = 1e-150) the direction overflowed in D^T F D, or stepped ~1e17 along the null space
 * of A (input pixels that are always 0). So each factor's damping is floored at the level
 * it can resolve:
 *     dA_j = max(pi_j gamma, (n_in + 1) eps lambda_max(A_j)),
 *     dG_j = max(gamma / pi_j, n_out eps lambda_max(G_j)),
 * eps = DBL_EPSILON, lambda_max of the last refresh; this bounds the damped condition numbers
 * by 1 / (dim eps) and changes nothing for any gamma a user means (at the default 1e-3 the
 * floors are ~1e-12 relative). td_kfac_floored counts the factors at their floor.
 *
 * Parameters outside the linear layers (the gamma and beta of normalization layers, model.h)
 * have no Kronecker model: td_kfac_precondition and td_kfac_curv_vp act as the identity on
 * them (a plain gradient step for those coordinates). */
#ifndef TD_KFAC_H
#define TD_KFAC_H

#include <stddef.h>
#include <stdint.h>

#include "curv/curv.h"
#include "base/err.h"
#include "nn/model.h"

typedef enum td_kfac_fisher {
  TD_KFAC_FISHER_SAMPLED = 0,
  TD_KFAC_FISHER_EXACT = 1,
  TD_KFAC_FISHER_EMPIRICAL = 2
} td_kfac_fisher;

typedef struct td_kfac_hp {
  double decay;       /* moving-average decay eps_max in [0, 1]; the k-th update uses
                         eps_k = min(1 - 1/k, eps_max) (Martens and Grosse sec. 5), so the
                         first update sets the factors and decay 1 gives the running mean */
  int inverse_every;  /* refresh the eigendecompositions every T3 >= 1 updates (sec. 8) */
  td_kfac_fisher fisher;
  uint64_t seed;      /* of the sampled targets (stream TD_KFAC_RNG_STREAM) */
} td_kfac_hp;

#define TD_KFAC_RNG_STREAM 0x4b464143u /* "KFAC" */

typedef struct td_kfac td_kfac;

/* td_kfac_bytes: heap bytes of td_kfac_create for cfg and batches up to cap (double
 * precision, no allocation; errors of td_mlp_estimate). */
int td_kfac_bytes(const td_mlp_cfg *cfg, int cap, double *bytes /* OUT */, td_err *err);

/* td_kfac_create: factors (zero), eigenbases and scratch for model m (borrowed; its layer list
 * must not change) and batches of up to cap examples. Errors: TD_EINVAL (decay outside [0, 1],
 * inverse_every < 1, cap < 1, fisher unknown), TD_ENOMEM. *out NULL on error; caller owns it. */
int td_kfac_create(const td_mlp *m, int cap, const td_kfac_hp *hp, td_kfac **out /* OUT */,
                   td_err *err);
void td_kfac_destroy(td_kfac *k);

/* td_kfac_update: fold the statistics of c's batch at c's point (set; c->m must be the model
 * of k) into the factors: A_j <- eps A_j + (1 - eps) (1/B) sum_i abar_i abar_i^T from the
 * cached forward activations, and G_j likewise from one (SAMPLED, EMPIRICAL) or K (EXACT)
 * backward passes (td_curv_vjp; it overwrites c's VJP buffers, not the point). Errors:
 * TD_EINVAL (model mismatch, no point, B > cap), TD_ERANGE (non-finite statistics; the factors
 * are then unchanged). */
int td_kfac_update(td_kfac *k, td_curv_ctx *c, td_err *err);

/* td_kfac_refresh: eigendecompose every A_j and G_j (LAPACK dsyevd; negative rounding-level
 * eigenvalues are clamped to 0) and recompute the factored-damping ratios
 * pi_j = sqrt((tr(A_j) / dim A_j) / (tr(G_j) / dim G_j)) (Martens and Grosse sec. 6.3, the
 * trace-norm choice; pi_j = 1 when a trace is 0). Errors: those of dsyevd. */
int td_kfac_refresh(td_kfac *k, td_err *err);

/* td_kfac_precondition: out = F_gamma^{-1} v with the factored Tikhonov damping of Martens and
 * Grosse sec. 6.3: per layer (A_j + dA_j I) kron (G_j + dG_j I) (dA_j = pi_j gamma and
 * dG_j = gamma / pi_j, each raised to its floor, see "Damping floor"), inverted through
 * the eigenbases of the last refresh: with A = Q_A diag(s_A) Q_A^T, G = Q_G diag(s_G) Q_G^T,
 *   U_j = Q_G [ (Q_G^T V_j Q_A) ./ ((s_G + dG_j) (s_A + dA_j)^T) ] Q_A^T.
 * gamma > 0 (their gamma = sqrt(lambda + eta), eta the L2 coefficient). v, out: n_params, may
 * not alias. Kernel: never allocates (k's scratch); needs a refresh first (asserted). */
void td_kfac_precondition(td_kfac *k, double gamma, const double *v, double *out /* OUT */);

/* td_kfac_curv_vp: out = F_gamma v with the CURRENT factors, per layer
 * (G_j + dG_j I) V_j (A_j + dA_j I) (floored as in td_kfac_precondition; gamma = 0: the
 * undamped K-FAC curvature G_j V_j A_j, which tests compare with the GGN). pi_j and the
 * floors are those of the last refresh (1 and 0 before any). Kernel. */
void td_kfac_curv_vp(td_kfac *k, double gamma, const double *v, double *out /* OUT */);

/* td_kfac_floored: how many factors (A_j and G_j counted separately) have their damping
 * raised to the floor at this gamma, with the floors of the last refresh (0 before any). */
int td_kfac_floored(const td_kfac *k, double gamma);

/* td_kfac_gamma_floor: the smallest gamma at which no factor is floored (max over layers of
 * floor(A_j) / pi_j and floor(G_j) pi_j), from the last refresh (0 before any). */
double td_kfac_gamma_floor(const td_kfac *k);

/* td_kfac_direction: one K-FAC step's direction at c's point: td_kfac_update, a refresh on
 * the 1st and then every inverse_every-th update, and d = -F_gamma^{-1} g (g already includes
 * any L2 gradient; Martens and Grosse take gamma = sqrt(lambda + eta) at the start and then
 * adapt it, sec. 6.6: the caller's business, see sopt.c). Errors: those of update and
 * refresh; TD_EINVAL when gamma <= 0 (factored damping needs gamma > 0). */
int td_kfac_direction(td_kfac *k, td_curv_ctx *c, const double *g, double gamma,
                      double *d /* OUT */, td_err *err);

/* td_kfac_refreshed_last: non-zero when the last td_kfac_direction refreshed the inverses. */
int td_kfac_refreshed_last(const td_kfac *k);

/* Accessors (tests, checkpoints): updates so far; linear layer j's factors A (dim n_in + 1)
 * and G (dim n_out), row-major and symmetric, and its pi; NULL / 0 when j is out of range. */
long td_kfac_updates(const td_kfac *k);
const double *td_kfac_factor_a(const td_kfac *k, int j, int *dim /* OUT */);
const double *td_kfac_factor_g(const td_kfac *k, int j, int *dim /* OUT */);
double td_kfac_pi(const td_kfac *k, int j);

#endif
