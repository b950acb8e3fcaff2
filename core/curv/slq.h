/* slq.h: stochastic Lanczos quadrature (SLQ): spectral density nodes/weights of an implicit
 * symmetric operator and a Gaussian-smoothed density on a grid. */
#ifndef TD_SLQ_H
#define TD_SLQ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/linop.h"

typedef enum td_slq_probe {
  TD_SLQ_RADEMACHER = 0, /* z in {+-1}^n / sqrt(n) */
  TD_SLQ_GAUSSIAN = 1    /* z ~ N(0, I), normalized to unit length */
} td_slq_probe;

typedef struct td_slq_opts {
  size_t n_probes;    /* independent start vectors, >= 1 (default 10) */
  size_t steps;       /* Lanczos steps per probe m, 1..n (default 0: min(n, 80)) */
  td_slq_probe probe; /* default TD_SLQ_RADEMACHER */
  uint64_t seed;      /* probe p is drawn from (seed, stream p) */
  size_t n_grid;      /* density grid points, >= 2 (default 512) */
  double sigma;       /* Gaussian width, eigenvalue units; 0: auto = 1% of the node range
                         (or 1% of max(|node|, 1) when all nodes coincide) */
  double lo, hi;      /* grid range; lo >= hi (default 0, 0): node range +- 5 sigma */
} td_slq_opts;

typedef struct td_slq_result {
  size_t n_probes;  /* P */
  size_t stride;    /* row length of nodes/weights (= the steps asked for) */
  size_t *len;      /* P: nodes found for probe p (< stride after an invariant subspace) */
  double *nodes;    /* P x stride row-major; row p: len[p] Ritz values, ascending */
  double *weights;  /* P x stride; row p: squared first components, sum 1 */
  size_t n_grid;
  double *grid;     /* n_grid equispaced points lo..hi */
  double *density;  /* n_grid: phi_sigma(t), integrates to ~1 over the grid */
  double sigma;     /* the width used */
  size_t n_matvec;  /* total operator applications */
} td_slq_result;

/* td_slq_opts_default: 10 Rademacher probes, steps auto, seed 0, 512 grid points, auto
 * sigma and range. */
td_slq_opts td_slq_opts_default(void);

/* td_slq_run: the spectral density of A (n x n, symmetric) by stochastic Lanczos quadrature
 * (Ubaru, Chen, Saad 2017, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature",
 * SIMAX 38(4), §3 and Alg. 1; applied to Hessians by Ghorbani, Krishnan, Xiao 2019, "An
 * investigation into neural net optimization via Hessian eigenvalue density", ICML, §2).
 * For each unit probe v_p, m Lanczos steps with full re-orthogonalization give T_m; its
 * eigenpairs (theta_k, s_k) are the nodes and tau_k^2 = (e_1^T s_k)^2 the weights of the
 * m-point Gauss quadrature of the measure mu_p(t) = sum_i (v_p^T u_i)^2 delta(t - lambda_i)
 * (Golub & Welsch 1969), so E_p[mu_p] = (1/n) sum_i delta(t - lambda_i) and
 *   (1/P) sum_p sum_k tau_{pk}^2 f(theta_{pk}) ~ tr(f(A)) / n.
 * The smoothed density is phi_sigma(t) = (1/P) sum_p sum_k tau_{pk}^2 g_sigma(t - theta_{pk}),
 * g_sigma the N(0, sigma^2) pdf (Ghorbani et al. 2019 §2; the Gaussian-blurred density of
 * states of Lin, Saad, Yang 2016, "Approximating spectral densities of large matrices", SIAM
 * Rev. 58(1)). A probe stops early at an invariant subspace (A with few distinct eigenvalues);
 * its quadrature is then exact.
 * Memory: (m + 1) n + O(P m + n_grid) doubles.
 * Errors: TD_EINVAL (bad options; field named), TD_ENOMEM, TD_ERANGE (non-finite operator
 * output), TD_EINTERNAL (dstev). Ownership: *res (OUT) owns its arrays; free with
 * td_slq_result_deinit. On error *res is zeroed. */
int td_slq_run(td_matvec_fn f, void *ctx, size_t n, const td_slq_opts *opts,
               td_slq_result *res /* OUT */, td_err *err);

/* td_slq_result_deinit: free the arrays of *res and zero it. NULL is a no-op. */
void td_slq_result_deinit(td_slq_result *res);

/* td_slq_result_json: {"nodes": [[...] per probe], "weights": [[...] per probe], "grid": [...],
 * "density": [...], "sigma": s, "n_probes": P, "n_matvec": N} as a new reference; each
 * probe's arrays have len[p] entries and its weights sum to 1. NULL on allocation failure
 * or a non-finite value. */
json_t *td_slq_result_json(const td_slq_result *res);

#endif
