/* nqm.h: the noisy quadratic model of Zhang et al. 2019 ("Which Algorithmic Choices Matter at
 * Which Batch Sizes? Insights From a Noisy Quadratic Model", NeurIPS), exact moment
 * propagation and Monte Carlo simulation.
 *
 * Model (Zhang et al. 2019, sec. 3): loss L(theta) = 1/2 sum_i h_i theta_i^2 in the eigenbasis
 * of the Hessian; a minibatch gradient is g_i = h_i theta_i + eps_i, eps_i ~ N(0, c_i / B)
 * independent across coordinates and steps (c_i is the per-example gradient variance, B the
 * batch size). Coordinates never interact, so each one is a small linear system.
 *
 * Optimizer (one general update; SGD, heavy ball, preconditioning and EMA are special cases):
 *   a_i = lr * h_i^-p                       preconditioner P = H^-p (sec. 3.3; p = 0: SGD)
 *   v'  = beta v - a_i g_i                   heavy-ball momentum beta (sec. 3.2; 0: none)
 *   theta' = theta + v'
 *   avg' = gamma avg + (1 - gamma) theta'    iterate averaging, EMA decay gamma (sec. 3.4)
 * with v_0 = 0 and avg_0 = theta_0. The loss is evaluated at avg when gamma > 0, else at theta.
 * Per coordinate the state z = (theta[, v][, avg]) (k = 1..3 entries) obeys z' = A z + b eps.
 *
 * Exact mode: the mean m' = A m and the (uncentered) second moment M' = A M A^T + (c_i/B) b b^T
 * propagate in closed form; E[L] = 1/2 sum_i h_i M_i[e, e] (e: the evaluated entry). It depends
 * on theta_0 only through theta_0^2, so a fixed start theta_0 = x gives the same expected loss
 * as a random start with E[theta_0^2] = x^2.
 * Sample mode: R independent replicas are simulated with Gaussian noise; the loss is the mean
 * over replicas of 1/2 sum_i h_i z_e^2.
 * Steady state: when every coordinate is stable (0 < a_i h_i < 2 (1 + beta), beta < 1,
 * gamma < 1) M converges to the solution of the discrete Lyapunov equation
 * M = A M A^T + (c_i/B) b b^T (solved exactly, k^2 unknowns). For SGD it is
 * E[theta_i^2] = a_i c_i / (B h_i (2 - a_i h_i)); for heavy ball
 * E[theta_i^2] = a_i c_i (1 + beta) / (B h_i (1 - beta) (2 (1 + beta) - a_i h_i))
 * (the stationary variance of an AR(2) process). */
#ifndef TD_NQM_H
#define TD_NQM_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/sink.h"

typedef struct td_nqm_config {
  size_t dim;          /* coordinates, >= 1 */
  const double *h;     /* curvatures (dim, each > 0), or NULL: h_i = 1/i (i = 1..dim) */
  const double *c;     /* per-example gradient variances (dim, >= 0), or NULL: c_i = 1/i */
  double lr;           /* > 0 */
  double momentum;     /* beta in [0, 1) */
  double power;        /* preconditioning power p >= 0 */
  double ema;          /* EMA decay gamma in [0, 1); 0: no averaging */
  double batch;        /* batch size B > 0 */
  double init;         /* theta_0,i for every i */
  int sample;          /* 0: exact moments; 1: Monte Carlo */
  size_t replicas;     /* sample mode: replicas R >= 1 */
  uint64_t seed;       /* sample mode: noise seed */
} td_nqm_config;

typedef struct td_nqm td_nqm;

/* td_nqm_create: build the model and its per-coordinate systems from cfg (borrowed; h and c
 * are copied). Errors: TD_EINVAL (field "params.<name>") for dim 0, a non-positive or
 * non-finite h_i, a negative c_i, lr <= 0, beta or gamma outside [0, 1), p < 0, B <= 0,
 * R = 0 in sample mode; TD_ENOMEM. On success *out (OUT) is owned by the caller
 * (td_nqm_destroy); on error it is NULL. */
int td_nqm_create(const td_nqm_config *cfg, td_nqm **out /* OUT */, td_err *err);

/* td_nqm_destroy: free q. NULL is a no-op. */
void td_nqm_destroy(td_nqm *q);

/* td_nqm_bytes: memory td_nqm_create would allocate for (dim, sample, replicas), in bytes. */
double td_nqm_bytes(size_t dim, int sample, size_t replicas);

/* td_nqm_step: advance one optimizer step (exact: moments; sample: every replica). Kernel. */
void td_nqm_step(td_nqm *q);

/* td_nqm_loss: the expected loss E[L] (exact) or the replica mean (sample) at the current
 * step. *bias (OUT, may be NULL) gets 1/2 sum_i h_i m_i[e]^2, the part of E[L] due to the
 * mean (Zhang et al.'s "bias" term; NaN in sample mode); E[L] - bias is the variance part. */
double td_nqm_loss(const td_nqm *q, double *bias /* OUT */);

/* td_nqm_replica_loss: 1/2 sum_i h_i z_e^2 of replica r (sample mode; NaN otherwise). */
double td_nqm_replica_loss(const td_nqm *q, size_t r);

/* td_nqm_coord: mean and uncentered second moment of the evaluated iterate of coordinate i
 * (exact: propagated; sample: over the replicas). */
void td_nqm_coord(const td_nqm *q, size_t i, double *mean /* OUT */, double *second /* OUT */);

/* td_nqm_stable: 1 when every coordinate's iteration matrix has spectral radius < 1. */
int td_nqm_stable(const td_nqm *q);

/* td_nqm_steady_risk: lim E[L] as t -> inf from the Lyapunov solution (see above), or NaN
 * when some coordinate is unstable. */
double td_nqm_steady_risk(const td_nqm *q);

/* td_nqm_max_ah: max_i a_i h_i (the stability margin: SGD needs < 2, heavy ball < 2(1+beta)). */
double td_nqm_max_ah(const td_nqm *q);

/* td_nqm_noise_scale: 1/2 sum_i h_i a_i c_i / B, the order of magnitude of the noise floor
 * (the SGD steady-state risk is within a factor 2 of it when a_i h_i < 1). */
double td_nqm_noise_scale(const td_nqm *q);

/* td_nqm_steps_to_target: exact mode: the first step t in [0, max_steps] with E[L_t] <= target
 * for cfg (cfg->sample is ignored), or -1 when not reached (also when the loss becomes
 * non-finite or exceeds 1e30), in *steps (OUT). Returns 0 or an error of td_nqm_create. */
int td_nqm_steps_to_target(const td_nqm_config *cfg, double target, long max_steps,
                           td_sink *sink, long *steps /* OUT */, td_err *err);

/* td_nqm_tune_lr: the learning rate minimizing steps_to_target (exact mode), as Zhang et al.
 * 2019 tune it per batch size (sec. 4): a 33-point log grid over [lr_max * 1e-4, lr_max),
 * lr_max = 2 (1 + beta) / max_i h_i^(1-p) being the stability limit, then 17 points between
 * the best point's neighbours. Ties keep the smaller lr. cfg->lr is ignored.
 * *best_lr and *best_steps (OUT) get the winner, or NaN and -1 when no lr reaches the target
 * within max_steps. `sink` (may be NULL) is polled for cancellation. Errors: those of
 * td_nqm_create, TD_ECANCELLED. */
int td_nqm_tune_lr(const td_nqm_config *cfg, double target, long max_steps, td_sink *sink,
                   double *best_lr /* OUT */, long *best_steps /* OUT */, td_err *err);

#endif
