/* sopt.h: the second-order optimizers (newton, hessian_free, natural_gradient, kfac) behind one
 * step interface that sees the current minibatch through a td_curv_ctx, plus their schema rows.
 *
 * Why a second interface next to optim.h: td_optim_step sees only a gradient, while these
 * methods need curvature products and layer statistics at the current parameters ON the
 * current minibatch, and evaluate the loss at trial points (reduction ratio, line search).
 * The caller binds the batch and sets the point on a td_curv_ctx (one forward pass, which also
 * gives the loss) and hands the context over; the optimizer rebinds it as it needs (a curvature
 * sub-batch, trial points) and updates the parameters. Any kind that owns a td_curv_ctx can
 * use it (train does; see core/kinds/train.c).
 *
 * The step (f is the minibatch loss plus the L2 term eta/2 ||theta||^2 with
 * eta = optimizer.weight_decay (train adds its l2), coupled as in optim.h's sgd/adam; its
 * curvature eta I is added to every curvature matrix; v is the previous step, 0 at first):
 *   g   = grad f(theta)                       (the minibatch gradient + eta theta)
 *   d   = the method's direction:
 *         newton            -(|C| + lambda I)^+ g, C the dense Hessian (or Gauss-Newton) of
 *                           the curvature batch + eta I (newton.h; Dauphin et al. 2014 |.|)
 *         hessian_free      CG on (G + (lambda + eta) I) d = -g, G the Gauss-Newton matrix of
 *                           the curvature batch, warm-started (hf.h; Martens 2010)
 *         natural_gradient  CG on (F + (lambda + eta) I) d = -g, F the true or empirical
 *                           Fisher of the curvature batch (hf.h; Amari 1998)
 *         kfac              -[(A_j + pi_j gamma I) kron (G_j + gamma/pi_j I)]^{-1} g per layer
 *                           (kfac.h; Martens and Grosse 2015, sec. 6.3)
 *   s   = mu v + lr d, mu = optimizer.momentum (heavy ball on the preconditioned direction),
 *         except kfac with kfac_rescale (default): s = lr (alpha d + mu v) with (alpha, mu)
 *         minimizing the quadratic model 1/2 x^T (F + (lambda + eta) I) x + g^T x, F the
 *         exact Fisher (= GGN) of the minibatch, over x = alpha d + mu v (Martens and Grosse
 *         sec. 7; mu is solved for only when optimizer.momentum > 0, whose value is then not
 *         used); two extra GGN products per step
 *   rho = (f(theta + s) - f(theta)) / (g^T s + 1/2 s^T (C + eta I) s), the reduction ratio
 *         with the UNDAMPED quadratic model (Martens and Sutskever 2012, "Training deep and
 *         recurrent networks with Hessian-free optimization", sec. 8.5); C is newton's matrix,
 *         the Gauss-Newton matrix for hessian_free and kfac (the exact Fisher, as Martens and
 *         Grosse sec. 6.5), the chosen Fisher for natural_gradient; computed when the damping
 *         adapts or for hessian_free (one product and one forward pass)
 *   lambda <- td_lm_adapt(lambda, rho) every step when optimizer.adapt_damping (absent: on,
 *         except natural_gradient). For newton, hessian_free and natural_gradient lambda is
 *         the Tikhonov damping of the solve. For kfac with kfac_rescale, lambda is the damping
 *         of the re-scaling model (a trust region on alpha, mu), and the factored damping
 *         gamma (initially sqrt(lambda + eta)) adapts by Martens and Grosse's greedy rule
 *         (sec. 6.6) at each inverse refresh: of gamma, gamma w, gamma / w
 *         (w = (19/20)^(kfac_inverse_every / 2)) the one whose re-scaled step has the lowest
 *         model value; without kfac_rescale, gamma = sqrt(lambda + eta) (logged kfac_gamma)
 *   kfac damping: at the first step, a gamma below the resolution floor of the Kronecker
 *         factors (kfac.h, "Damping floor": dim eps lambda_max per factor) is refused with
 *         TD_EINVAL naming params.optimizer.damping and the smallest usable damping; later
 *         (adapted) values are raised to the floor, and kfac_floored (logged) counts the
 *         factors at it. A non-finite direction or re-scaling model (D^T F D overflows) ends
 *         the step with TD_ERANGE naming params.optimizer.damping
 *   acceptance: hessian_free runs a backtracking line search (Martens and Sutskever 2012
 *         sec. 8.8): alpha = 1, 0.8, 0.8^2, ... (at most 8 tries) until
 *         f(theta + alpha s) <= f(theta) + 0.01 alpha g^T s; if none passes, no step is
 *         taken and the CG warm start is dropped. newton (with adapt_damping) rejects a step
 *         that raises f (Levenberg-Marquardt; Nocedal and Wright Algorithm 4.1 with eta = 0).
 *         The others always take the step.
 *   theta <- theta + alpha s,  v <- alpha s.
 * Second-order methods read lr as a multiplier of the (damped) Newton-like step: 1 is the
 * natural value (the first-order default 0.05 is far too small for them).
 * The curvature batch (optimizer.curv_batch, Martens 2010 sec. 4.3: the GGN products use a
 * smaller batch than the gradient) is the FIRST curv_batch examples of the (already shuffled)
 * minibatch; kfac's factors and its re-scaling always use the whole minibatch. */
#ifndef TD_SOPT_H
#define TD_SOPT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "curv/curv.h"
#include "base/err.h"
#include "nn/model.h"
#include "optim/newton.h"
#include "base/schema.h"
#include "base/sink.h"

typedef enum td_sopt_kind {
  TD_SOPT_NEWTON = 0,
  TD_SOPT_HF = 1,
  TD_SOPT_NGD = 2,
  TD_SOPT_KFAC = 3
} td_sopt_kind;

/* Hyperparameters (td_sopt_hp_parse fills the method defaults). */
typedef struct td_sopt_hp {
  td_sopt_kind kind;
  double damping;        /* initial lambda >= 0 */
  int adapt_damping;     /* LM rule on lambda every step */
  double momentum;       /* mu in [0, 1) */
  double weight_decay;   /* eta >= 0 (coupled L2) */
  int cg_max_iters;      /* hessian_free, natural_gradient */
  double cg_tol;         /* relative residual */
  int cg_martens_stop;
  double cg_warm_decay;  /* in [0, 1] */
  int curv_batch;        /* newton/hf/ngd curvature batch; 0: the whole minibatch */
  int fisher_empirical;  /* natural_gradient, kfac: the empirical instead of the true Fisher */
  double kfac_decay;
  int kfac_inverse_every;
  int kfac_exact_fisher; /* kfac: the true Fisher's G by enumerating the K outputs */
  int kfac_rescale;      /* kfac: model-chosen alpha (and mu) of Martens and Grosse sec. 7 */
  long newton_max_params;
  td_newton_curv newton_curv; /* TD_NEWTON_HESSIAN or TD_NEWTON_GGN */
  uint64_t seed;         /* kfac's sampled targets */
} td_sopt_hp;

/* Schema rows shared by the kinds that offer these optimizers (paths "optimizer.*"); put them
 * after the kind's own optimizer.* rows. The optimizer.name enum, lr, momentum and
 * weight_decay rows stay the kind's own. */
#define TD_SOPT_NAMES "newton|hessian_free|natural_gradient|kfac"
#define TD_SOPT_PARAMS                                                                            \
  {"optimizer.damping", TD_PT_NUM, NULL, 0, 1e12, NULL, 0,                                        \
   "second-order: initial Tikhonov damping lambda (absent: newton 0.1, hessian_free 1, "         \
   "natural_gradient 1e-3, kfac 1e-3). kfac: gamma = sqrt(damping + weight_decay) below the "     \
   "resolution of the Kronecker factors (dim eps lambda_max, core/optim/kfac.h) is refused at "   \
   "the first step; adapted values are floored there (kfac_floored)"},                            \
      {"optimizer.adapt_damping", TD_PT_BOOL, NULL, 0, 0, NULL, 0,                                \
       "second-order: Levenberg-Marquardt adaptation of lambda from the reduction ratio rho "     \
       "(x2/3 if rho > 3/4, x3/2 if rho < 1/4; absent: on, except for natural_gradient)"},        \
      {"optimizer.cg_max_iters", TD_PT_INT, "50", 1, 10000, NULL, 0,                              \
       "hessian_free, natural_gradient: CG iteration cap (one curvature product each)"},         \
      {"optimizer.cg_tol", TD_PT_NUM, "1e-6", 0, 1, NULL, 0,                                      \
       "hessian_free, natural_gradient: CG stops at residual <= cg_tol * ||g|| (0: off)"},       \
      {"optimizer.cg_martens_stop", TD_PT_BOOL, "true", 0, 0, NULL, 0,                            \
       "hessian_free, natural_gradient: Martens (2010) relative-progress CG termination"},       \
      {"optimizer.cg_warm_decay", TD_PT_NUM, "0.95", 0, 1, NULL, 0,                               \
       "hessian_free, natural_gradient: CG starts from this times the previous solution"},       \
      {"optimizer.curv_batch", TD_PT_INT, NULL, 1, 65536, NULL, 0,                                \
       "newton, hessian_free, natural_gradient: curvature products on the first curv_batch "     \
       "examples of each minibatch (absent: all of it)"},                                         \
      {"optimizer.fisher", TD_PT_STR, "\"true\"", 0, 0, "true|empirical", 0,                      \
       "natural_gradient, kfac: the true Fisher (model's predictive distribution) or the "       \
       "empirical Fisher (the batch labels)"},                                                    \
      {"optimizer.kfac_decay", TD_PT_NUM, "0.95", 0, 1, NULL, 0,                                  \
       "kfac: moving-average decay of the Kronecker factors (step k uses min(1-1/k, decay))"},   \
      {"optimizer.kfac_inverse_every", TD_PT_INT, "10", 1, 1000000, NULL, 0,                      \
       "kfac: steps between refreshes of the factor inverses (eigendecompositions)"},             \
      {"optimizer.kfac_exact_fisher", TD_PT_BOOL, "false", 0, 0, NULL, 0,                         \
       "kfac: true-Fisher G factor by enumerating the outputs (K backward passes) instead of "   \
       "one sampled target per example"},                                                         \
      {"optimizer.kfac_rescale", TD_PT_BOOL, "true", 0, 0, NULL, 0,                               \
       "kfac: step lr (alpha D + mu v) with alpha, mu minimizing the exact-Fisher quadratic "    \
       "model (Martens and Grosse sec. 7; mu only when momentum > 0); false: lr D + momentum v"},\
      {"optimizer.newton_max_params", TD_PT_INT, "5000", 1, 20000, NULL, 0,                       \
       "newton: refuse models with more parameters (dense n x n matrix, 16 n^2 bytes)"},          \
      {"optimizer.newton_curvature", TD_PT_STR, "\"hessian\"", 0, 0, "hessian|gauss_newton", 0,   \
       "newton: the dense matrix: the exact Hessian or the Gauss-Newton matrix"}

/* td_sopt_kind_parse: the kind for an optimizer name; TD_EINVAL (no detail) for a name that
 * is not second-order (e.g. "sgd"), so callers can use it as a test. */
int td_sopt_kind_parse(const char *name, td_sopt_kind *out /* OUT */);

/* td_sopt_hp_parse: read the TD_SOPT_PARAMS rows plus optimizer.momentum and
 * optimizer.weight_decay of validated params (borrowed) for optimizer `name`, filling the
 * method defaults; seed is copied. Errors: TD_EINVAL with err->field (a name that is not
 * second-order; kfac with damping + weight_decay == 0; momentum >= 1). */
int td_sopt_hp_parse(const json_t *p, const char *name, uint64_t seed, td_sopt_hp *hp /* OUT */,
                     td_err *err);

/* td_sopt_check: the cross-checks that need the model size, and the heap bytes of the
 * optimizer plus the td_curv_ctx it needs (cap = the minibatch size). newton refuses
 * n_params > newton_max_params with TD_EINVAL, field "params.optimizer.newton_max_params"
 * (a 400 from the server), naming the parameter count and the cap. */
int td_sopt_check(const td_sopt_hp *hp, const td_mlp_cfg *cfg, int cap, double *bytes /* OUT */,
                  td_err *err);

typedef struct td_sopt td_sopt;

/* td_sopt_create: the optimizer for model m (borrowed, must outlive it) and batches of up to
 * cap examples. Errors: TD_EINVAL (as td_sopt_check), TD_ENOMEM. Caller owns *out. */
int td_sopt_create(const td_sopt_hp *hp, const td_mlp *m, int cap, td_sopt **out /* OUT */,
                   td_err *err);
void td_sopt_destroy(td_sopt *o);

/* What a step did. NaN where not computed. */
typedef struct td_sopt_stats {
  double loss;        /* minibatch loss at theta (before the step; no L2 term) */
  double grad_norm;   /* ||grad of the minibatch loss|| (no L2 term) */
  double damping;     /* lambda after this step's adaptation */
  double rho;         /* reduction ratio (NaN when not computed) */
  double alpha;       /* line-search factor (1 except for hessian_free) */
  double step_norm;   /* ||alpha s|| */
  int cg_iters;       /* CG iterations (hessian_free, natural_gradient), else 0 */
  double kfac_alpha;  /* kfac_rescale: the model's alpha and mu (NaN otherwise) */
  double kfac_mu;
  size_t products;    /* curvature products (HVP/GGN/Fisher/JVP/VJP) this step */
} td_sopt_stats;

/* td_sopt_step: one update of params (n_params, in place) with learning rate lr (see the
 * header for the rule). c must be a td_curv_ctx for o's model whose batch is the current
 * minibatch and whose point is set at params (td_curv_set_batch, td_curv_set_point); on
 * return its binding and point are unspecified (the caller sets them again next step).
 * Errors: TD_EINVAL (no point, model mismatch), TD_ERANGE (non-finite curvature or
 * statistics: the parameters are unchanged), errors of the LAPACK solves. st may be NULL. */
int td_sopt_step(td_sopt *o, td_curv_ctx *c, double *params, double lr,
                 td_sopt_stats *st /* OUT */, td_err *err);

/* td_sopt_log: report a step's diagnostics as metrics at `step`: damping, rho (when
 * computed), cg_iters (CG methods), step_norm, and line_search_alpha (hessian_free).
 * Returns the first sink error. */
int td_sopt_log(const td_sopt *o, const td_sopt_stats *st, td_sink *sink, long step);

/* td_sopt_diverge_hint: append to err->msg (truncated to fit) the method's current damping
 * and a hint naming params.optimizer.damping: for a kind whose run diverged (the divergence
 * rule, core/train/diverge.h) while this optimizer was stepping. No-op for NULL. */
void td_sopt_diverge_hint(const td_sopt *o, td_err *err);

/* td_sopt_damping: the current lambda. */
double td_sopt_damping(const td_sopt *o);

#endif
