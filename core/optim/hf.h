/* hf.h: CG-based second-order directions: Hessian-free (truncated Newton on the Gauss-Newton
 * matrix, Martens 2010) and natural gradient (CG on Fisher-vector products), with damping,
 * CG warm starts and the Levenberg-Marquardt damping rule. */
#ifndef TD_HF_H
#define TD_HF_H

#include <stddef.h>

#include "curv/cg.h"
#include "curv/curv.h"
#include "base/err.h"

/* The curvature matrix C of the CG system (C + (lambda + l2) I) d = -g. */
typedef enum td_hf_curv {
  TD_HF_GGN = 0,        /* Gauss-Newton G = J^T H_out J (hessian_free) */
  TD_HF_FISHER_TRUE = 1,/* the true Fisher (natural_gradient); equals G for both losses (curv.h)
                           and is computed by the same product */
  TD_HF_FISHER_EMP = 2  /* the empirical Fisher (1/B) sum_i g_i g_i^T (natural_gradient with
                           optimizer.fisher "empirical") */
} td_hf_curv;

typedef struct td_hf_hp {
  td_hf_curv curv;
  double damping;     /* initial lambda >= 0 (Tikhonov damping lambda I) */
  td_cg_opts cg;      /* cap, tolerance, Martens' stop */
  double warm_decay;  /* CG starts from warm_decay * (previous solution); 0: cold starts */
} td_hf_hp;

typedef struct td_hf td_hf;

/* Outcome of one direction. */
typedef struct td_hf_info {
  td_cg_result cg;
  double damping; /* the lambda used */
} td_hf_info;

/* td_hf_create: state for n_params parameters (the previous CG solution, CG workspace).
 * Errors: TD_EINVAL (n_params 0, damping < 0, warm_decay outside [0, 1], cg.max_iters < 1),
 * TD_ENOMEM. *out is NULL on error; the caller owns it (td_hf_destroy). */
int td_hf_create(const td_hf_hp *hp, size_t n_params, td_hf **out /* OUT */, td_err *err);
void td_hf_destroy(td_hf *o);

/* td_hf_bytes: heap bytes of td_hf_create (about (4 n + cap) doubles). */
double td_hf_bytes(double n_params, int cg_max_iters);

/* td_hf_direction: d (n) = the CG solution of (C + (lambda + l2) I) d = -g at c's point and
 * batch (c is a td_curv_ctx with its point set), with C as hp->curv and lambda the current
 * damping; CG starts from warm_decay * (the previous solution) (Martens 2010, sec. 4.5; the
 * decay 0.95 is his), or from 0 when that is no better (cg.h). The solution is kept as the
 * next warm start. l2 is the coefficient of an L2 term l2/2 ||theta||^2 already added to g
 * (its curvature is l2 I). Source: Martens 2010, "Deep learning via Hessian-free optimization",
 * ICML, Algorithm 1 (hessian_free); for the natural gradient, Amari 1998, "Natural gradient
 * works efficiently in learning", Neural Computation 10(2), eq. 3.12, with the damped Fisher
 * F + lambda I solved by CG (Martens 2020, JMLR 21, sec. 8 and 10).
 * Errors: TD_ERANGE (non-finite products), TD_EINVAL (size mismatch). info may be NULL. */
int td_hf_direction(td_hf *o, td_curv_ctx *c, const double *g, double l2, double *d /* OUT */,
                    td_hf_info *info /* OUT */, td_err *err);

/* td_hf_curv_vp: out = C v with the method's curvature (no damping) at c's point. Kernel. */
void td_hf_curv_vp(const td_hf *o, td_curv_ctx *c, const double *v, double *out /* OUT */);

/* td_hf_damping / td_hf_set_damping: the current lambda; set clamps to [1e-12, 1e12]
 * unless lambda is 0 (exactly 0 stays 0: no damping, nothing to adapt). */
double td_hf_damping(const td_hf *o);
void td_hf_set_damping(td_hf *o, double lambda);

/* td_hf_forget: drop the warm start (after a rejected step: the previous solution is not a
 * good guess for the next system). */
void td_hf_forget(td_hf *o);

/* td_lm_adapt: the Levenberg-Marquardt rule for the damping from the reduction ratio
 * rho = (f(theta + s) - f(theta)) / (q(s) - q(0)) of an actual over a predicted loss change:
 * lambda *= 2/3 when rho > 3/4, lambda *= 3/2 when rho < 1/4 (and when rho is NaN: a
 * non-finite loss), unchanged otherwise. Source: Martens 2010, sec. 4.1 (the constants are
 * his); Nocedal and Wright, Numerical Optimization, 2nd ed., Algorithm 4.1 for the rule's
 * origin in trust regions. Returns the new lambda (0 stays 0). */
double td_lm_adapt(double lambda, double rho);

#endif
