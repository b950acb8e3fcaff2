/* kpred.h: kernel predictions: the NNGP posterior and the NTK gradient-flow prediction. */
#ifndef TD_KPRED_H
#define TD_KPRED_H

#include "base/err.h"

/* td_kpred_gp: the Gaussian-process posterior with prior covariance K on the n training rows
 * (noise-free, or with noise variance diag_reg), at m test rows (Rasmussen and Williams 2006,
 * "Gaussian processes for machine learning", eqs. 2.25-2.26, Algorithm 2.1; the NNGP
 * predictor of Lee et al. 2018, eqs. 2-3):
 *   mean (m x k) = K_s (K + diag_reg I)^{-1} Y,
 *   var (m)      = kss - diag(K_s (K + diag_reg I)^{-1} K_s^T)   (the same for every output,
 *                  since the prior is K times I_k; clamped at 0 against rounding),
 * with K (n x n, symmetric; only its lower triangle is read), K_s (m x n) the kernel between
 * test and training rows, kss (m) the test rows' prior variances (NULL: var not computed;
 * var may then be NULL), Y (n x k) the targets. By a Cholesky factorization of K + diag_reg I
 * (LAPACK dpotrf), whose 1-norm condition number estimate (dpocon) goes to *cond (may be
 * NULL). Errors: TD_EINVAL (sizes, diag_reg < 0 or non-finite, non-finite entries: field
 * "kernel"), TD_ERANGE, field "diag_reg", when K + diag_reg I is not positive definite in
 * floating point (the factorization breaks down: duplicated inputs or a deep kernel make K
 * singular) or its condition number is above 1/eps (~4.5e15: the solve would have no
 * correct digit); the message gives the failing pivot or the condition number and suggests a
 * diag_reg. Nothing is written to the outputs on error. */
int td_kpred_gp(int n, const double *K, int m, const double *Ks, const double *kss, int k,
                const double *Y, double diag_reg, double *mean /* OUT, m x k */,
                double *var /* OUT, m; may be NULL */, double *cond /* OUT; may be NULL */,
                td_err *err);

/* td_kpred_flow: the NTK gradient-flow prediction of a network trained on the n training
 * rows by gradient flow (learning rate eta, time t = eta-free "steps": t steps of GD with
 * learning rate eta approach it as eta -> 0) on tdlab's squared error, the MEAN over the n
 * examples: L = 1/(2n) sum_i ||f(x_i) - y_i||^2. With the kernel fixed at Theta (the
 * linearized network, exact as width -> infinity):
 *   train (n x k): f_t(X)  = Y + exp(-eta Theta t / n) (f_0(X) - Y),
 *   test  (m x k): f_t(X*) = f_0(X*) - Theta_s Theta^{-1} (I - exp(-eta Theta t / n))
 *                                      (f_0(X) - Y).
 * Source: Lee et al. 2019, "Wide neural networks of any depth evolve as linear models under
 * gradient descent", eqs. 9-10, whose loss is the SUM over examples: their eta is eta / n
 * here (d f/dt = -eta/n Theta (f - Y) for the mean loss). The kernel is shared by the k
 * outputs (Theta times I_k: an analytic kernel, or the empirical NTK's trace over outputs
 * divided by k). Theta (n x n, symmetric) + diag_reg I is eigendecomposed (LAPACK dsyevd);
 * Theta^{-1}(I - exp(-a Theta)) is applied as (1 - exp(-a lambda)) / lambda per eigenvalue
 * (expm1; its limit a = eta t / n at lambda = 0), so for finite t no inverse is formed and a
 * singular kernel (duplicated inputs) gives the finite limit. Eigenvalues below 0 (rounding
 * in a PSD kernel) are taken as 0. *cond (may be NULL) gets lambda_max / lambda_min (inf
 * when lambda_min = 0). Theta_s (m x n), F0s (m x k) and Fs may be NULL when m = 0.
 * t = INFINITY is allowed (the kernel regression limit): it needs Theta^{-1} and fails with
 * TD_ERANGE, field "diag_reg", when lambda_min <= n eps lambda_max.
 * Errors: TD_EINVAL (sizes, eta <= 0, t < 0, diag_reg < 0, non-finite kernel entries),
 * TD_ERANGE, TD_ENOMEM, TD_EINTERNAL (dsyevd did not converge). */
int td_kpred_flow(int n, const double *Theta, int m, const double *Theta_s, int k,
                  const double *Y, const double *F0, const double *F0s, double eta, double t,
                  double diag_reg, double *F /* OUT, n x k */, double *Fs /* OUT, m x k */,
                  double *cond /* OUT; may be NULL */, td_err *err);

/* td_kpred_gd: the same prediction for `steps` steps of full-batch gradient DESCENT with
 * learning rate eta on the linearized network (the kernel fixed at Theta): per eigenvalue
 * lambda of Theta + diag_reg I the residual shrinks by (1 - eta lambda / n)^steps instead of
 * exp(-eta lambda t / n), and the test factor is (1 - (1 - eta lambda / n)^steps) / lambda
 * (its limit steps eta / n at lambda = 0). Exact for a linear model (the network's
 * linearization: Lee et al. 2019, sec. 2.2, with their sum loss) and equal to td_kpred_flow
 * at t = steps as eta -> 0. Same arguments and errors as td_kpred_flow (steps >= 0). */
int td_kpred_gd(int n, const double *Theta, int m, const double *Theta_s, int k,
                const double *Y, const double *F0, const double *F0s, double eta, long steps,
                double diag_reg, double *F /* OUT, n x k */, double *Fs /* OUT, m x k */,
                double *cond /* OUT; may be NULL */, td_err *err);

#endif
