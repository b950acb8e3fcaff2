/* model.h: the MLP: layer kernels, one flat parameter vector, exact forward/backward. */
#ifndef TD_MODEL_H
#define TD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* ---------------------------------------------------------------------------------------
 * Layer kernels (llm.c style). Outputs first, then inputs, then weights, then sizes.
 * Forward writes its output; backward ACCUMULATES (+=) into every gradient it is given.
 * They never allocate and check shapes with assert only. B is the batch size.
 * --------------------------------------------------------------------------------------- */

/* td_linear_forward: out (B x n_out) = inp (B x n_in) W^T + b.
 * W is (n_out x n_in) row-major, the layout of torch.nn.Linear.weight; b (n_out). */
void td_linear_forward(double *out, const double *inp, const double *W, const double *b, int B,
                       int n_in, int n_out);

/* td_linear_backward: given dout = dL/dout (B x n_out):
 *   dW (n_out x n_in) += dout^T inp,  db (n_out) += column sums of dout,
 *   dinp (B x n_in) += dout W   (skipped when dinp is NULL, e.g. for the input layer).
 * Source: the chain rule for out = inp W^T + b (any matrix-calculus text, e.g. Grosse,
 * CSC2541 notes, "backprop"). */
void td_linear_backward(double *dinp, double *dW, double *db, const double *dout,
                        const double *inp, const double *W, int B, int n_in, int n_out);

/* td_relu_forward: out[i] = max(inp[i], 0), n = B * width entries. */
void td_relu_forward(double *out, const double *inp, size_t n);
/* td_relu_backward: dinp[i] += dout[i] * [inp[i] > 0] (derivative 0 taken at 0). */
void td_relu_backward(double *dinp, const double *dout, const double *inp, size_t n);

/* td_tanh_forward: out[i] = tanh(inp[i]). */
void td_tanh_forward(double *out, const double *inp, size_t n);
/* td_tanh_backward: dinp[i] += dout[i] * (1 - out[i]^2), using the forward OUTPUT. */
void td_tanh_backward(double *dinp, const double *dout, const double *out, size_t n);

/* ---------------------------------------------------------------------------------------
 * The MLP. DESIGN: a model is a flat sequence of layers (linear, activation; later
 * layernorm, batchnorm). Every parameter lives in ONE contiguous vector `params`
 * (n_params doubles) and every gradient in one vector `grad` of the same layout, so that
 * optimizers, norms, checkpoints and curvature code see plain vectors. Linear layer j
 * owns W_j (out x in, row-major, torch.nn.Linear layout; tensor name layers.{j}.weight)
 * followed by b_j (out; layers.{j}.bias), layers in order. The workspace keeps the input
 * and output of every layer (so the pre-activations survive the forward pass), which is
 * what backward needs and what a later forward-mode JVP (R-operator) and Pearlmutter's
 * R{backprop} HVP need too: they add tangent buffers of the same shapes to the workspace
 * and one *_jvp / *_hvp kernel per layer kind.
 * --------------------------------------------------------------------------------------- */

#define TD_MLP_MAX_HIDDEN 16
#define TD_MLP_MAX_LAYERS 64

typedef enum { TD_ACT_RELU = 0, TD_ACT_TANH = 1, TD_ACT_LINEAR = 2 } td_act;

typedef enum { TD_LAYER_LINEAR = 0, TD_LAYER_RELU = 1, TD_LAYER_TANH = 2 } td_layer_kind;

typedef struct td_layer {
  td_layer_kind kind;
  int n_in, n_out;   /* feature widths (equal for activations) */
  size_t off;        /* offset of the layer's parameters in params/grad (W first, then b) */
  size_t n_params;   /* 0 for parameter-free layers */
  int index;         /* linear layers: 0, 1, ... (the j of layers.{j}.weight); else -1 */
} td_layer;

typedef struct td_mlp_cfg {
  int in_dim;                     /* input features, >= 1 */
  int out_dim;                    /* outputs (classes or targets), >= 1 */
  int n_hidden;                   /* 0 .. TD_MLP_MAX_HIDDEN */
  int hidden[TD_MLP_MAX_HIDDEN];  /* widths, each >= 1 */
  td_act act;                     /* after every hidden linear layer; none after the last */
  double init_scale;              /* multiplier on the init std, >= 0 */
} td_mlp_cfg;

typedef struct td_mlp {
  td_mlp_cfg cfg;
  int n_layers;
  td_layer layers[TD_MLP_MAX_LAYERS];
  int n_linear;
  size_t n_params;
  int max_width;     /* widest layer output (or input) */
  double *params;    /* n_params, owned */
  double *grad;      /* n_params, owned */
} td_mlp;

/* Activations of one batch, allocated once for a maximum batch size `cap`.
 * act[0] is the (borrowed) input of the last forward; act[i+1] (cap x layers[i].n_out) is
 * the output of layer i; dact[i] has the shape of act[i] (dact[0] is unused: no dL/dX). */
typedef struct td_mlp_ws {
  int cap;
  int n_layers;
  const double *input;
  double *act[TD_MLP_MAX_LAYERS + 1];
  double *dact[TD_MLP_MAX_LAYERS + 1];
  double *mem;      /* one block behind act and dact */
} td_mlp_ws;

/* td_mlp_act_parse: "relu" | "tanh" | "linear" to td_act. Errors: TD_EINVAL. */
int td_mlp_act_parse(const char *name, td_act *out /* OUT */);

/* td_mlp_estimate: parameter count and workspace bytes for batch `cap`, computed in double
 * precision WITHOUT allocating, so absurd widths (1e9) can be refused first.
 * Errors: TD_EINVAL for an invalid cfg (dims < 1, too many layers). */
int td_mlp_estimate(const td_mlp_cfg *cfg, int cap, double *n_params /* OUT */,
                    double *ws_bytes /* OUT */, td_err *err);

/* td_mlp_create: build the layer list and allocate params and grad (zeroed; call
 * td_mlp_init to initialize). Errors: TD_EINVAL (bad cfg), TD_ELIMIT (more than 2^31
 * weights in one layer), TD_ENOMEM. *out is NULL on error. */
int td_mlp_create(const td_mlp_cfg *cfg, td_mlp **out /* OUT */, td_err *err);
void td_mlp_destroy(td_mlp *m);

/* td_mlp_init: draw the parameters from stream TD_RNG_INIT of `seed`, linear layers in order,
 * W row-major: W_ij ~ N(0, init_scale^2 * gain / n_in) with gain 2 when the layer is followed
 * by a ReLU (He et al. 2015, eq. 10) and gain 1 otherwise (LeCun et al. 1998, "Efficient
 * BackProp", sec. 4.6), including the output layer; biases are 0. */
void td_mlp_init(td_mlp *m, uint64_t seed);

/* td_mlp_linear: pointers to W (n_out x n_in) and b of linear layer j (0-based) inside
 * `vec` (params, grad or any vector of the same layout). Returns the layer or NULL. */
const td_layer *td_mlp_linear(const td_mlp *m, int j, double *vec, double **W /* OUT */,
                              double **b /* OUT */);

/* td_mlp_ws_init / td_mlp_ws_deinit: workspace for batches up to `cap` examples (the
 * caller owns the struct). Errors: TD_EINVAL (cap < 1), TD_ENOMEM. */
int td_mlp_ws_init(td_mlp_ws *ws, const td_mlp *m, int cap, td_err *err);
void td_mlp_ws_deinit(td_mlp_ws *ws);

/* td_mlp_forward: run the B <= ws->cap examples X (B x in_dim, borrowed and kept as act[0]
 * until the next forward, so it must stay alive for backward) through the model with
 * parameters `params` (n_params; usually m->params). Returns the outputs (B x out_dim),
 * which live in ws. Never allocates. */
const double *td_mlp_forward(const td_mlp *m, td_mlp_ws *ws, const double *params,
                             const double *X, int B);

/* td_mlp_backward: backprop dout = dL/doutputs (B x out_dim) through the last forward (same
 * B and params). grad (n_params) receives dL/dparams: ADDED to it when accumulate != 0,
 * else overwritten (no need to zero it first). dL/dX is not computed. Never allocates. */
void td_mlp_backward(const td_mlp *m, td_mlp_ws *ws, const double *params, const double *dout,
                     int B, double *grad, int accumulate);

#endif
