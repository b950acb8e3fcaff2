/* curv.h: exact curvature products of an MLP loss on a fixed batch: JVP (R-operator), VJP,
 * Hessian-vector (Pearlmutter's R{backprop}), Gauss-Newton- and Fisher-vector products,
 * per-example gradients, and td_matvec_fn adapters for the spectral methods.
 *
 * Conventions (DESIGN "Numerics conventions"): the loss is the MEAN over the B examples of the
 * batch, L(theta) = (1/B) sum_i l(f(x_i; theta), y_i), with
 *   cross-entropy  l(z, y) = -log softmax(z)[y],
 *   squared error  l(f, t) = 1/2 ||f - t||^2 (targets t, or one-hot(y) for class labels).
 * Every product here is of THAT mean loss: H = d^2 L / d theta^2, and the GGN and Fishers
 * are averages over the batch, so that on one example they all have the same scale as H.
 * Vectors in parameter space use the flat layout of td_mlp (model.h): per linear layer j,
 * W_j (out x in, row-major) then b_j (out). Output-space quantities are (B x K) row-major,
 * K = out_dim. Nothing here uses finite differences.
 *
 * Usage: td_curv_init once (allocates everything for batches up to `cap`), td_curv_set_batch
 * (borrows X and the labels/targets), td_curv_set_point (copies the parameters and runs the
 * forward pass once), then any number of products at that point: they reuse the cached
 * forward activations (and, for the Hessian, the cached backward pass) and never allocate.
 * A product costs only its tangent passes, which is what makes Lanczos with tens of HVPs at
 * fixed parameters cheap.
 *
 * Normalization layers (model.h) are supported in every product. The context's forward mode
 * is that of its workspace (td_curv_set_mode; TD_MLP_TRAIN after init): in TRAIN mode
 * BatchNorm normalizes with the statistics of the analysis batch, so the products are those
 * of the loss that training minimizes, with the examples coupled through the batch mean and
 * variance (every tangent and R-backward kernel differentiates through them); in EVAL mode
 * BatchNorm is the fixed affine map of its running statistics. LayerNorm is the same in both.
 * No product here updates the running statistics.
 *
 * Extending to a new layer kind: add to curv.c's three layer
 * switches (forward tangent `rfwd`, backward `bwd`, and R-backward `rbwd`) a case that calls
 * a pair of kernels like the ones below: *_jvp (the directional derivative of the forward map
 * in the input tangent AND the parameter tangent) and *_rbackward (the directional derivative
 * of the layer's backward map: the R-operator of Pearlmutter 1994, eq. 4-8, applied to the
 * layer's backprop equations). Parameter-free layers take no parameter tangent. */
#ifndef TD_CURV_H
#define TD_CURV_H

#include <stddef.h>

#include "base/err.h"
#include "nn/model.h"

typedef enum td_curv_loss {
  TD_CURV_XENT = 0, /* softmax cross-entropy, integer labels */
  TD_CURV_MSE = 1   /* 1/2 mean squared error, targets Y (B x K) or one-hot of labels y */
} td_curv_loss;

typedef enum td_curv_fisher {
  TD_CURV_FISHER_TRUE = 0,     /* E over y ~ the model's predictive distribution */
  TD_CURV_FISHER_EMPIRICAL = 1 /* the labels of the batch: (1/B) sum_i g_i g_i^T */
} td_curv_fisher;

/* The context: a model (borrowed), a batch (borrowed), a parameter point (copied) and every
 * buffer the products need (owned). Fields are readable; change them only through the
 * functions below. Not thread-safe: one context per thread. */
typedef struct td_curv_ctx {
  const td_mlp *m;       /* borrowed; its layer list must not change */
  int cap;               /* largest batch */
  /* batch (td_curv_set_batch) */
  const double *X;       /* B x in_dim, borrowed */
  const int *y;          /* B labels or NULL, borrowed */
  const double *Y;       /* B x K targets or NULL, borrowed */
  td_curv_loss loss;
  int B;
  /* point (td_curv_set_point) */
  int have_point;        /* forward pass cached at theta */
  int have_grad;         /* backward pass (delta, grad) cached at theta */
  double *theta;         /* n_params: the point, owned copy */
  double *grad;          /* n_params: dL/dtheta at theta, valid when have_grad */
  double loss_value;     /* L(theta) on the batch */
  td_mlp_ws ws;          /* forward activations at theta (ws.act[i], i = 0..n_layers) */
  double *prob;          /* B x K softmax of the outputs (cross-entropy only) */
  double *rgrad;         /* B x K per-example output gradients r_i = dl_i/dz_i (NOT / B) */
  /* per layer i = 0..n_layers-1, buffers shaped like ws.act[i+1] (cap x layers[i].n_out) */
  double *delta[TD_MLP_MAX_LAYERS + 1];  /* dL/d act[i], i >= 1 (delta[n_layers] = dL/dz) */
  double *ract[TD_MLP_MAX_LAYERS + 1];   /* R{act[i]}: forward tangents, i >= 1 */
  double *rdelta[TD_MLP_MAX_LAYERS + 1]; /* R{delta[i]} or VJP cotangents, i >= 1 */
  /* norm layer i: R{xhat} (cap x n) then R{rstd} (cap or n), written by the forward tangent
   * pass and read by the R-backward pass; NULL for other layers */
  double *rnorm[TD_MLP_MAX_LAYERS];
  double *mem;           /* one block behind delta/ract/rdelta/prob/rgrad */
  size_t n_products;     /* products computed since init (HVP, GGN, Fisher, JVP, VJP) */
} td_curv_ctx;

/* td_curv_estimate: heap bytes of td_curv_init for cfg at batch cap, in double precision and
 * WITHOUT allocating (so a kind's `check` can refuse absurd sizes). Includes the model
 * workspace, the tangent buffers and three n_params vectors (theta, grad, one product
 * output) but not the model itself. Errors: TD_EINVAL (invalid cfg, cap < 1). */
int td_curv_estimate(const td_mlp_cfg *cfg, int cap, double *bytes /* OUT */, td_err *err);

/* td_curv_init: a context for model m (borrowed; must outlive c) and batches of up to `cap`
 * examples. Allocates everything once. Errors: TD_EINVAL (cap < 1, no model), TD_ENOMEM
 * (c is then deinitialized). The caller owns the struct; free with td_curv_deinit. */
int td_curv_init(td_curv_ctx *c, const td_mlp *m, int cap, td_err *err);

/* td_curv_deinit: free the buffers and zero *c. NULL and a zeroed struct are no-ops. */
void td_curv_deinit(td_curv_ctx *c);

/* td_curv_set_batch: bind the batch: X (B x in_dim), and labels y (B, each in [0, K)) or
 * targets Y (B x K). Cross-entropy needs y; squared error takes Y, or one-hot(y) when Y is
 * NULL. All borrowed: they must stay alive and unchanged while products are computed.
 * Invalidates the point (call td_curv_set_point again).
 * Errors: TD_EINVAL (B outside 1..cap, missing labels, a label out of range). */
int td_curv_set_batch(td_curv_ctx *c, const double *X, const int *y, const double *Y, int B,
                      td_curv_loss loss, td_err *err);

/* td_curv_set_mode: the forward mode of the products (model.h td_mlp_mode; only BatchNorm
 * differs). Never updates running statistics. Invalidates the point (call td_curv_set_point
 * again). */
void td_curv_set_mode(td_curv_ctx *c, td_mlp_mode mode);

/* td_curv_set_point: copy params (n_params) into c->theta, run the forward pass on the batch
 * and compute L(theta) (c->loss_value), the softmax and the per-example output gradients.
 * The backward pass (gradient, and the delta cache of the HVP) runs lazily on the first
 * td_curv_grad or td_curv_hvp. Errors: TD_EINVAL (no batch), TD_ERANGE (the loss is not
 * finite: the point is still set, products would be meaningless). */
int td_curv_set_point(td_curv_ctx *c, const double *params, td_err *err);

/* td_curv_set_point_act1: td_curv_set_point with the output of layer 0 on this batch at
 * these params given (act1: B x layers[0].n_out, e.g. c->ws.act[1] saved after an earlier
 * set_point at the same params): the forward pass starts at layer 1 and skips layer 0's
 * GEMM. The caller vouches that act1 is that output; then everything (loss, gradient,
 * products) is bitwise what td_curv_set_point gives. act1 NULL: td_curv_set_point. */
int td_curv_set_point_act1(td_curv_ctx *c, const double *params, const double *act1,
                           td_err *err);

/* td_curv_grad: the gradient dL/dtheta (n_params) at the point, computed once by backprop
 * (and cached with every layer's delta for the HVP). Returns c->grad (owned by c, valid until
 * the next set_point/set_batch). The point must be set (asserted). Never allocates. */
const double *td_curv_grad(td_curv_ctx *c);

/* ---- products at the current point. Kernels: void, never allocate, shapes asserted, the
 * point must be set. v and out have n_params entries unless stated; out never aliases v. */

/* td_curv_jvp: jv (B x K) = J v, J = d outputs / d theta (B K x n_params), by one forward
 * tangent pass (the R-operator: Pearlmutter 1994, "Fast exact multiplication by the
 * Hessian", Neural Computation 6(1), sec. 3, eq. 4-5). Exact. */
void td_curv_jvp(td_curv_ctx *c, const double *v, double *jv /* OUT, B x K */);

/* td_curv_vjp: out (n_params) = J^T u for an output cotangent u (B x K), by one backward
 * pass (reverse mode). No 1/B: the gradient is td_curv_vjp(dL/dz). */
void td_curv_vjp(td_curv_ctx *c, const double *u, double *out /* OUT */);

/* td_curv_loss_hvp: out (B x K) = H_out u, the Hessian of the MEAN loss w.r.t. the outputs
 * (block diagonal over examples): cross-entropy (diag(p_i) - p_i p_i^T) u_i / B (Bishop,
 * PRML eq. 4.110 per example), squared error u_i / B. out may equal u. */
void td_curv_loss_hvp(const td_curv_ctx *c, const double *u, double *out /* OUT, B x K */);

/* td_curv_hvp: out = H v, H = d^2 L / d theta^2, exactly, by Pearlmutter's R{backprop}
 * (Pearlmutter 1994, sec. 4, eq. 8-12 applied to each layer's backprop equations): a forward
 * tangent pass R{act}, the R-derivative of the loss gradient, and an R-backward pass that
 * differentiates the cached backward pass (delta) along v. Per linear layer the R-backward
 * is R{dW} = R{d}^T a + d^T R{a}, R{db} = colsum R{d}, R{d_in} = R{d} W + d V_W; tanh adds
 * the second-derivative term -2 d * y * R{y}; ReLU has none (its second derivative is 0
 * almost everywhere; at exactly 0 the derivative is taken as 0, as in backward).
 * Cost at a cached point: about 3x a forward pass (6 GEMMs per hidden linear layer, 2 for
 * the first layer). */
void td_curv_hvp(td_curv_ctx *c, const double *v, double *out /* OUT */);

/* td_curv_ggn_vp: out = G v with the generalized Gauss-Newton matrix G = J^T H_out J
 * (Schraudolph 2002, "Fast curvature matrix-vector products for second-order gradient
 * descent", Neural Computation 14(7), eq. 6; Martens 2010, "Deep learning via Hessian-free
 * optimization", ICML, sec. 4.2): a forward tangent pass, td_curv_loss_hvp, and a backward
 * pass. G is positive semi-definite (H_out is, for both losses). */
void td_curv_ggn_vp(td_curv_ctx *c, const double *v, double *out /* OUT */);

/* td_curv_fisher_vp: out = F v.
 *  - TD_CURV_FISHER_TRUE: F = (1/B) sum_i E_{y ~ p(y|x_i, theta)} [g_i(y) g_i(y)^T] with g_i(y)
 *    the gradient of l(f(x_i), y). With r = dl/dz, E[r r^T] = diag(p) - p p^T for the softmax
 *    and = I for squared error read as the Gaussian N(f, I) (-log density = l + const), so
 *    F = (1/B) sum_i J_i^T H_out,i J_i = G exactly for both losses (Martens 2020, "New insights
 *    and perspectives on the natural gradient method", JMLR 21, sec. 9.2; the proof is that
 *    both equal J^T E[r r^T] J and the softmax log-likelihood's Hessian does not depend on y).
 *    It is computed as the GGN product; tests/test_curv.c checks it against F built from its
 *    definition (the expectation enumerated over the K classes).
 *  - TD_CURV_FISHER_EMPIRICAL: F = (1/B) sum_i g_i g_i^T with the batch's own labels:
 *    F v = J^T u, u_i = r_i (r_i . (J v)_i) / B (one JVP and one VJP; Kunstner, Balles,
 *    Hennig 2019, "Limitations of the empirical Fisher approximation", eq. 3). */
void td_curv_fisher_vp(td_curv_ctx *c, td_curv_fisher kind, const double *v,
                       double *out /* OUT */);

/* td_curv_per_example_vjp: G (B x n_params, row i) = J_i^T u_i for the B output cotangents u
 * (B x K): one batched backward pass for the layer deltas, then per example the outer
 * products delta_i a_i^T of every linear layer, and delta_i * xhat_i, delta_i for the gamma
 * and beta of a norm layer (Goodfellow 2015, "Efficient per-example gradient computations",
 * arXiv:1510.01799). Memory: the caller's B x n_params.
 * BatchNorm in TRAIN mode couples the examples (each output depends on every input through
 * the batch statistics), so the batched deltas no longer split into per-example gradients:
 * then every entry of G is set to NaN (check td_curv_per_example_supported first; use EVAL
 * mode, or LayerNorm, for per-example quantities). */
void td_curv_per_example_vjp(td_curv_ctx *c, const double *u, double *G /* OUT */);

/* td_curv_per_example_grads: G (B x n_params), row i = the gradient of l_i = l(f(x_i), y_i)
 * (NOT divided by B), so that the mean of the rows is td_curv_grad. NaN under BatchNorm in
 * TRAIN mode (see td_curv_per_example_vjp). */
void td_curv_per_example_grads(td_curv_ctx *c, double *G /* OUT */);

/* td_curv_per_example_supported: 1 when per-example gradients are defined by the batched
 * method above (no BatchNorm layer, or EVAL mode), else 0. */
int td_curv_per_example_supported(const td_curv_ctx *c);

/* td_matvec_fn adapters (linop.h) for lanczos/power/hutchinson/slq: ctx is a td_curv_ctx *
 * with its point set; n must equal n_params (asserted). Symmetric operators: H, G, true and
 * empirical Fisher. */
void td_curv_hvp_matvec(void *ctx, const double *v, double *out /* OUT */, size_t n);
void td_curv_ggn_matvec(void *ctx, const double *v, double *out /* OUT */, size_t n);
void td_curv_fisher_true_matvec(void *ctx, const double *v, double *out /* OUT */, size_t n);
void td_curv_fisher_emp_matvec(void *ctx, const double *v, double *out /* OUT */, size_t n);

/* ---- per-layer tangent kernels (llm.c style: outputs first, B rows, WRITE their outputs).
 * A NULL input tangent means zero (the data input X has no tangent). */

/* td_curv_linear_jvp: rout (B x n_out) = rin W^T + inp VW^T + Vb, the R-operator of
 * out = inp W^T + b along (VW, Vb) and the input tangent rin (NULL: 0). */
void td_curv_linear_jvp(double *rout, const double *rin, const double *inp, const double *W,
                        const double *VW, const double *Vb, int B, int n_in, int n_out);

/* td_curv_linear_rbackward: the R-operator of linear backprop (Pearlmutter 1994, sec. 4):
 *   RW (n_out x n_in) = rdout^T inp + dout^T rin   (second term skipped when rin is NULL),
 *   Rb (n_out) = column sums of rdout,
 *   rdinp (B x n_in) = rdout W + dout VW           (skipped when rdinp is NULL).
 * dout is the cached dL/dout, rdout its tangent. */
void td_curv_linear_rbackward(double *rdinp, double *RW, double *Rb, const double *rdout,
                              const double *dout, const double *inp, const double *rin,
                              const double *W, const double *VW, int B, int n_in, int n_out);

/* td_curv_relu_jvp: rout = rin * [inp > 0]; td_curv_relu_rbackward: rdinp = rdout * [inp > 0]
 * (relu'' = 0 a.e.). n = B * width entries. */
void td_curv_relu_jvp(double *rout, const double *rin, const double *inp, size_t n);
void td_curv_relu_rbackward(double *rdinp, const double *rdout, const double *inp, size_t n);

/* td_curv_tanh_jvp: rout = rin * (1 - y^2) with y = tanh(inp) the cached OUTPUT;
 * td_curv_tanh_rbackward: rdinp = rdout * (1 - y^2) - 2 dout * y * rout (the derivative of
 * dinp = dout * (1 - y^2) along the tangent: tanh'' = -2 y (1 - y^2)). */
void td_curv_tanh_jvp(double *rout, const double *rin, const double *y, size_t n);
void td_curv_tanh_rbackward(double *rdinp, const double *rdout, const double *dout,
                            const double *y, const double *rout, size_t n);

/* Normalization layers (model.h: xhat = (x - mean) rstd, out = gamma xhat + beta). With
 * P(u) = rstd (u - mean(u) - xhat mean(xhat u)) per normalized group (a row for LayerNorm, a
 * column for BatchNorm in training mode) and a = mean(xhat rin):
 *   R{xhat} = P(rin),  R{rstd} = -rstd^2 a   (from R{var} = 2 mean((x - mean) rin)),
 *   R{out}  = gamma R{xhat} + Vgamma xhat + Vbeta.
 * BatchNorm in eval mode (project = 0) is affine: R{xhat} = rin rstd, R{rstd} = 0.
 * td_curv_layernorm_jvp / td_curv_batchnorm_jvp write rout (B x n), rxhat (B x n) and rrstd
 * (B for LayerNorm, n for BatchNorm), the last two for the R-backward. rin NULL means 0.
 * Source: differentiating the forward map above (Ioffe and Szegedy 2015, sec. 3; Ba et al.
 * 2016, eq. 4); the Jacobian of xhat in x is the symmetric P, so the JVP and the backward
 * share it. */
void td_curv_layernorm_jvp(double *rout, double *rxhat, double *rrstd, const double *rin,
                           const double *xhat, const double *rstd, const double *gamma,
                           const double *Vgamma, const double *Vbeta, int B, int n);
void td_curv_batchnorm_jvp(double *rout, double *rxhat, double *rrstd, const double *rin,
                           const double *xhat, const double *rstd, const double *gamma,
                           const double *Vgamma, const double *Vbeta, int B, int n,
                           int training);

/* td_curv_layernorm_rbackward / td_curv_batchnorm_rbackward: the R-operator (Pearlmutter
 * 1994, sec. 4) of the norm backward dgamma = sum dout xhat, dbeta = sum dout,
 * dinp = P(u), u = dout gamma:
 *   Rgamma (n) = sum_b (rdout xhat + dout R{xhat}),   Rbeta (n) = sum_b rdout,
 *   rdinp (B x n) = R{rstd} (u - mean(u) - xhat mean(xhat u))
 *                 + rstd (Ru - mean(Ru) - xhat mean(xhat Ru) - R{xhat} mean(xhat u)
 *                         - xhat mean(R{xhat} u)),   Ru = rdout gamma + dout Vgamma,
 * and, in BatchNorm's eval mode, rdinp = Ru rstd. rdinp may be NULL (skipped); rxhat and
 * rrstd NULL mean a zero input tangent. All outputs are written. */
void td_curv_layernorm_rbackward(double *rdinp, double *Rgamma, double *Rbeta,
                                 const double *rdout, const double *dout, const double *xhat,
                                 const double *rstd, const double *rxhat, const double *rrstd,
                                 const double *gamma, const double *Vgamma, int B, int n);
void td_curv_batchnorm_rbackward(double *rdinp, double *Rgamma, double *Rbeta,
                                 const double *rdout, const double *dout, const double *xhat,
                                 const double *rstd, const double *rxhat, const double *rrstd,
                                 const double *gamma, const double *Vgamma, int B, int n,
                                 int training);

#endif
