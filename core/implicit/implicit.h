/* implicit.h: closed forms of implicit regularization (chapter 8, prefix td_implicit_): the
 * spectral filters of early-stopped gradient descent and of ridge regression, the
 * stationary variance of discretized Langevin dynamics on a quadratic, non-negative least
 * squares and the hard-margin (max-margin) direction of a separable data set. */
#ifndef TD_IMPLICIT_H
#define TD_IMPLICIT_H

#include <stddef.h>

#include "base/err.h"

/* td_implicit_gd_filter: the spectral filter of t steps of gradient descent with step eta on
 * least squares from w_0 = 0, g_t(lambda) = 1 - (1 - eta lambda)^t: in the eigenbasis of
 * H = X^T X / n, w_t = Q diag(g_t(lambda_i) / lambda_i) Q^T X^T y / n (Ali, Kolter and
 * Tibshirani 2019, "A continuous-time view of early stopping for least squares", eq. 5).
 * Computed as -expm1(t log1p(-eta lambda)) when 0 <= eta lambda < 1 (no cancellation for small
 * eta lambda), else with pow. t >= 0. */
double td_implicit_gd_filter(double lambda, double eta, double t);

/* td_implicit_ridge_filter: the spectral filter of ridge regression with penalty mu (the
 * minimizer of 1/(2n) ||X w - y||^2 + mu/2 ||w||^2), r(lambda) = lambda / (lambda + mu); mu > 0
 * (Ali et al. 2019 match mu = 1 / (eta t) with t steps of gradient descent). */
double td_implicit_ridge_filter(double lambda, double mu);

/* td_implicit_langevin_var: the stationary variance of the discretized Langevin chain
 *   theta_{k+1} = theta_k - eta (h theta_k + s xi'_k) + sqrt(2 eta temp / N) xi_k
 * (xi, xi' independent N(0, 1)) on the quadratic mean loss h theta^2 / 2 with gradient noise of
 * std s: an AR(1) process with coefficient rho = 1 - eta h, so
 *   v = (2 eta temp / N + eta^2 s^2) / (1 - rho^2) = (2 eta temp / N + eta^2 s^2) / (eta h (2 - eta h)),
 * which tends to temp / (N h) (the target N(0, temp / (N h))) as eta -> 0 (Welling and Teh 2011,
 * eq. 4 with the prior folded into h; Mandt, Hoffman and Blei 2017, sec. 3, for the noise
 * term). Needs 0 < eta h < 2 (else the chain has no stationary law: returns +Inf). */
double td_implicit_langevin_var(double h, double eta, double temp, double n_data, double s);

/* td_implicit_nnls: non-negative least squares, x = argmin ||A x - b||_2 subject to x >= 0, by
 * the active-set algorithm of Lawson and Hanson (1974), "Solving Least Squares Problems",
 * ch. 23, algorithm NNLS (finite termination; each inner least-squares problem is solved by
 * LAPACK dgelsd on the passive columns). A is m x n row-major, b has m entries, both borrowed;
 * x (OUT, n). tol: the dual-feasibility tolerance (w_j <= tol ends the outer loop; <= 0 picks
 * 10 * eps * ||A||_1 ||b||). Errors: TD_EINVAL (bad sizes), TD_ENOMEM, TD_EINTERNAL (LAPACK
 * failure or no convergence in 3n outer iterations). */
int td_implicit_nnls(int m, int n, const double *A, const double *b, double tol,
                     double *x /* OUT */, td_err *err);

/* td_implicit_max_margin: the hard-margin SVM without bias, w_hat = argmin ||w|| subject to
 * y_i <x_i, w> >= 1, for Z (n x d, row i = y_i x_i, borrowed). This is a least-distance
 * program (LDP) min ||w|| s.t. Z w >= 1, solved exactly through NNLS (Lawson and Hanson 1974,
 * ch. 23, sec. 4, "LDP"): u = NNLS of E = [Z^T; 1^T] ((d+1) x n) against f = (0, ..., 0, 1),
 * r = E u - f, w = -r[0..d) / r[d]. The max-margin direction of Soudry et al. 2018 (their
 * Theorem 3: GD on the logistic loss of separable data converges in direction to w_hat) is
 * w_hat / ||w_hat||, and the margin min_i y_i <x_i, w_hat / ||w_hat||> is 1 / ||w_hat||.
 * w (OUT, d). Errors: TD_EINVAL when the data are not linearly separable through the origin
 * (||r|| = 0, LDP infeasible), and those of td_implicit_nnls. */
int td_implicit_max_margin(int n, int d, const double *Z, double *w /* OUT */, td_err *err);

#endif
