/* laplace.h: Laplace approximations of an MLP posterior and Bayesian linear regression
 * (chapter 8, prefix td_laplace_): the GGN posterior precision in three structures (full,
 * K-FAC, diagonal) over all parameters or the last layer, the log marginal likelihood and the
 * prior precision that maximizes it, posterior samples for the linearized (GLM) and the
 * Monte Carlo predictive, calibration metrics (NLL, accuracy, ECE), and the closed-form
 * evidence of Bayesian linear regression as ground truth.
 *
 * Model (MacKay 1992, "A practical Bayesian framework for backpropagation networks";
 * Daxberger, Kristiadi, Immer, Eschenhagen, Bauer and Hennig 2021, "Laplace Redux", sec. 2):
 * likelihood p(D | theta) = prod_i p(y_i | f(x_i; theta)), with cross-entropy the categorical
 * softmax likelihood and squared error the Gaussian N(y; f, I) (so -log p = 1/2 ||f - y||^2 +
 * K/2 log 2 pi); prior N(0, delta^{-1} I) on the subset's parameters (the rest are held at the
 * MAP). Posterior N(theta*, Sigma) with precision Lambda = N G + delta I, G the MEAN GGN of the
 * training set, G = (1/N) sum_i J_i^T H_i J_i (H_i the Hessian of -log p in the outputs:
 * diag(p) - p p^T for softmax, I for squared error) restricted to the subset, in the
 * structure:
 *   FULL  G itself (P x P, eigendecomposed once: LAPACK dsyevd);
 *   KFAC  per linear layer G_j kron A_j (Martens and Grosse 2015; the EXACT-Fisher factors of
 *         optim/kfac.h over the whole training set), eigenvalues s_G,p s_A,q;
 *   DIAG  diag(G).
 * Every structure is an eigenbasis with eigenvalues ev of G, so
 *   log p(D | delta) ~= log p(D | theta*) - delta/2 ||theta*||^2 + P/2 log delta
 *                       - 1/2 sum log(N ev + delta)
 * (the Laplace evidence, MacKay 1992 eq. 9; the 2 pi terms of prior and Laplace cancel), and
 * a posterior sample is theta* + B diag((N ev + delta)^{-1/2}) z. The MAP theta* is the
 * caller's: the evidence formula assumes it is a mode of the posterior with this delta. */
#ifndef TD_LAPLACE_H
#define TD_LAPLACE_H

#include <stddef.h>

#include "base/err.h"
#include "base/rng.h"
#include "curv/curv.h"
#include "nn/data.h"
#include "nn/model.h"

typedef enum { TD_LAPLACE_FULL = 0, TD_LAPLACE_KFAC = 1, TD_LAPLACE_DIAG = 2 } td_laplace_struct;
typedef enum { TD_LAPLACE_ALL = 0, TD_LAPLACE_LAST_LAYER = 1 } td_laplace_subset;

#define TD_LAPLACE_MAX_FULL 6000 /* largest P of the FULL structure (P^2 doubles) */
#define TD_LAPLACE_ECE_BINS 15

/* One K-FAC block: linear layer j, its flat offset, and the eigenbases of A and G. */
typedef struct td_laplace_blk {
  int layer;          /* linear layer index j */
  size_t off;         /* offset of W_j in the flat parameters (b_j follows W_j) */
  int n_in, n_out;    /* A is (n_in + 1)^2, G is n_out^2 */
  double *QA, *sA;    /* eigenvectors as COLUMNS (row-major), eigenvalues (clamped >= 0) */
  double *QG, *sG;
} td_laplace_blk;

typedef struct td_laplace {
  const td_mlp *m;          /* borrowed */
  td_laplace_struct st;
  td_laplace_subset sub;
  td_curv_loss loss;
  size_t off, P;            /* the subset: params[off, off + P) */
  double n_data;            /* N */
  double loglik;            /* log p(D | theta*), summed over the N examples */
  double theta_sq;          /* ||theta*_subset||^2 */
  double *theta;            /* the MAP, all n_params (owned copy) */
  double *V, *ev;           /* FULL: eigenvectors (P x P, columns) and eigenvalues of G;
                               DIAG: ev = diag(G), V NULL */
  int n_blk;                /* KFAC */
  td_laplace_blk blk[TD_MLP_MAX_LAYERS];
} td_laplace;

/* td_laplace_fit: fit the posterior structure of model m (borrowed; no normalization layers)
 * at the MAP params (n_params, copied) on the training set ds (borrowed: y for cross-entropy,
 * Y or y for squared error), in chunks of at most `chunk` examples (>= 1; K-FAC uses the
 * largest divisor of N not above it, so that its running mean is the exact training mean).
 * Cost: FULL N K P^2 flops, DIAG N K P, KFAC N K times a backward pass plus the factors'
 * eigendecompositions. *out (OUT) is a new object (td_laplace_destroy).
 * Errors: TD_EINVAL (normalization layers, FULL with P > TD_LAPLACE_MAX_FULL, empty data),
 * TD_ENOMEM, TD_ERANGE (non-finite loss at the MAP), LAPACK failures (TD_EINTERNAL). */
int td_laplace_fit(const td_mlp *m, const double *params, const td_dataset *ds,
                   td_curv_loss loss, td_laplace_struct st, td_laplace_subset sub, int chunk,
                   td_laplace **out /* OUT */, td_err *err);
void td_laplace_destroy(td_laplace *L);

/* td_laplace_log_marglik: the Laplace log marginal likelihood at prior precision delta > 0
 * (formula in the header; nats). */
double td_laplace_log_marglik(const td_laplace *L, double delta);

/* td_laplace_optimize_prior: the delta in [lo, hi] (0 < lo < hi) that maximizes
 * td_laplace_log_marglik: a grid of 81 log-spaced points, then golden-section search on the
 * bracket of the best grid point to a relative 1e-10 in delta. Returns delta; *lml (OUT, may
 * be NULL) its log marginal likelihood. */
double td_laplace_optimize_prior(const td_laplace *L, double lo, double hi, double *lml /* OUT */);

/* td_laplace_sample: d (n_params, OUT) = a posterior perturbation theta - theta* ~ N(0, Sigma)
 * at prior precision delta, zero outside the subset; z draws from r. Kernel-like: allocates a
 * scratch of max(P, block) doubles (TD_ENOMEM). */
int td_laplace_sample(const td_laplace *L, double delta, td_rng *r, double *d /* OUT */,
                      td_err *err);

/* td_laplace_cov_dense: the posterior covariance Sigma of the subset at delta as a dense
 * P x P row-major matrix (OUT), from the structure's eigenbasis (for tests and small P).
 * Errors: TD_ENOMEM. */
int td_laplace_cov_dense(const td_laplace *L, double delta, double *S /* OUT, P x P */,
                         td_err *err);

/* Predictive methods for classification (cross-entropy) of td_laplace_predict. */
typedef enum {
  TD_LAPLACE_PRED_MAP = 0, /* softmax(f(x; theta*)) */
  TD_LAPLACE_PRED_GLM = 1, /* linearized: mean over samples of softmax(f* + J(x) d) */
  TD_LAPLACE_PRED_NN = 2   /* Monte Carlo: mean over samples of softmax(f(x; theta* + d)) */
} td_laplace_pred;

/* td_laplace_predict: class probabilities (n x K, OUT) of the first n examples of ds under
 * the given predictive with n_samples posterior samples at delta (the same samples d_s for
 * every example, drawn from seed), in chunks of `chunk`. Errors: TD_EINVAL (loss is not
 * cross-entropy), TD_ENOMEM. */
int td_laplace_predict(const td_laplace *L, double delta, td_laplace_pred how, int n_samples,
                       uint64_t seed, const td_dataset *ds, size_t n, int chunk,
                       double *probs /* OUT */, td_err *err);

/* Calibration of predicted probabilities against labels. */
typedef struct td_laplace_calib {
  double nll;  /* mean -log p(y_i) (probabilities floored at 1e-300) */
  double acc;  /* argmax accuracy */
  double ece;  /* expected calibration error, 15 equal-width confidence bins (Guo, Pleiss,
                  Sun and Weinberger 2017, eq. 3): sum_b (n_b / n) |acc_b - conf_b| */
  double brier;/* mean sum_k (p_k - 1[y = k])^2 */
  double conf[TD_LAPLACE_ECE_BINS], bin_acc[TD_LAPLACE_ECE_BINS];
  long count[TD_LAPLACE_ECE_BINS];
} td_laplace_calib;

/* td_laplace_calibrate: metrics of probs (n x K) against labels y (n). Bin b holds the
 * confidences in (b/15, (b+1)/15] (bin 0 also holds 0). Kernel. */
void td_laplace_calibrate(const double *probs, const int *y, size_t n, int K,
                          td_laplace_calib *out /* OUT */);

/* td_laplace_blr_evidence: the exact log evidence of Bayesian linear regression,
 * log N(y; 0, sigma2 I + alpha^{-1} X X^T) (Bishop 2006, eq. 3.86 in its covariance form),
 * X (n x d), y (n), by a Cholesky factorization of the n x n covariance (LAPACK dpotrf).
 * Errors: TD_EINVAL (alpha, sigma2 <= 0), TD_ENOMEM, TD_EINTERNAL (not positive definite). */
int td_laplace_blr_evidence(const double *X, const double *y, int n, int d, double alpha,
                            double sigma2, double *out /* OUT */, td_err *err);

#endif
