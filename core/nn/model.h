/* model.h: the MLP: layer kernels, one flat parameter vector, exact forward/backward. */
#ifndef TD_MODEL_H
#define TD_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

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

/* Normalization kernels. Both normalize x to xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps)
 * with the BIASED variance, then out = gamma * xhat + beta per feature (gamma, beta: n).
 * They write xhat (B x n) and rstd for backward. The backward of xhat is the symmetric
 * projection P(u) = rstd * (u - mean(u) - xhat * mean(xhat * u)), the means taken over the
 * normalized group (Ioffe and Szegedy 2015, "Batch normalization", sec. 3, the backprop
 * equations; Ba, Kiros, Hinton 2016, "Layer normalization", eq. 4 for the per-example form).
 *
 * td_layernorm_forward: per example (row) over its n features; rstd has B entries.
 * torch.nn.LayerNorm(n, eps) with elementwise_affine. */
void td_layernorm_forward(double *out, double *xhat, double *rstd, const double *inp,
                          const double *gamma, const double *beta, int B, int n, double eps);
/* td_layernorm_backward: given dout (B x n): dgamma (n) += sum_b dout * xhat,
 * dbeta (n) += sum_b dout (both skipped when NULL), dinp (B x n) += P_row(dout * gamma)
 * (skipped when NULL). */
void td_layernorm_backward(double *dinp, double *dgamma, double *dbeta, const double *dout,
                           const double *xhat, const double *rstd, const double *gamma, int B,
                           int n);

/* td_batchnorm_forward: per feature (column) over the B examples; rstd has n entries.
 *  training != 0: the batch mean and biased variance normalize; when run_mean/run_var are
 *    non-NULL they are updated as PyTorch does: r = (1 - momentum) r + momentum * stat, with
 *    the UNBIASED variance (times B/(B-1)) for run_var, and *count (may be NULL) += 1; with
 *    B = 1 (variance 0/0) the running statistics are left unchanged (PyTorch refuses B = 1).
 *  training == 0 (eval): mean = run_mean, var = run_var (both required), a per-feature
 *    affine map. torch.nn.BatchNorm1d(n, eps, momentum). */
void td_batchnorm_forward(double *out, double *xhat, double *rstd, double *run_mean,
                          double *run_var, double *count, const double *inp, const double *gamma,
                          const double *beta, int B, int n, double eps, double momentum,
                          int training);
/* td_batchnorm_backward: dgamma += sum_b dout * xhat, dbeta += sum_b dout (both skipped
 * when NULL), and dinp +=
 * P_column(dout * gamma) in training mode (the batch statistics depend on every example)
 * or dout * gamma * rstd in eval mode. dinp may be NULL. */
void td_batchnorm_backward(double *dinp, double *dgamma, double *dbeta, const double *dout,
                           const double *xhat, const double *rstd, const double *gamma, int B,
                           int n, int training);

/* ---------------------------------------------------------------------------------------
 * The MLP. DESIGN: a model is a flat sequence of layers (linear, normalization, activation). Every parameter lives in ONE contiguous vector `params`
 * (n_params doubles) and every gradient in one vector `grad` of the same layout, so that
 * optimizers, norms, checkpoints and curvature code see plain vectors. Linear layer j
 * owns W_j (out x in, row-major, torch.nn.Linear layout; tensor name layers.{j}.weight)
 * followed by b_j (out; layers.{j}.bias), layers in order. The workspace keeps the input
 * and output of every layer (so the pre-activations survive the forward pass), which is
 * what backward needs and what a later forward-mode JVP (R-operator) and Pearlmutter's
 * R{backprop} HVP need too: they add tangent buffers of the same shapes to the workspace
 * and one *_jvp / *_hvp kernel per layer kind.
 *
 * Normalization (cfg.norm): every HIDDEN linear layer j is followed by a normalization layer
 * (norms.{j}) and then the activation: linear -> norm -> act (the placement of Ioffe and
 * Szegedy 2015, sec. 3.2: "before the nonlinearity"); the output layer is not normalized.
 * The norm layer owns gamma (n; tensor norms.{j}.weight, init 1) then beta (n;
 * norms.{j}.bias, init 0) in the flat vector, right after linear layer j's W and b.
 * BatchNorm's running mean and variance are BUFFERS, not parameters: they live in
 * m->buffers (init 0 and 1; per BN layer running_mean (n), running_var (n),
 * num_batches_tracked (1)), are never seen by optimizers, gradients or curvature products,
 * and change only in a training-mode forward with ws->update_running set. The linear
 * layer's bias before a norm layer is kept (torch.nn.Linear's default): under BatchNorm in
 * training mode it cancels exactly (zero gradient); under LayerNorm only its mean cancels.
 * A linear layer followed by a norm layer is scale-invariant: its output does not change
 * when its (W, b) are scaled by c > 0 (exactly when eps = 0; the eps term breaks it by a
 * relative O(eps / var)).
 * --------------------------------------------------------------------------------------- */

#define TD_MLP_MAX_HIDDEN 16
#define TD_MLP_MAX_LAYERS 64

typedef enum { TD_ACT_RELU = 0, TD_ACT_TANH = 1, TD_ACT_LINEAR = 2 } td_act;

typedef enum { TD_NORM_NONE = 0, TD_NORM_LAYERNORM = 1, TD_NORM_BATCHNORM = 2 } td_norm;

/* Weight initialization (params.model.init; td_mlp_init has the distributions). */
typedef enum {
  TD_INIT_AUTO = 0,    /* He normal before a ReLU, LeCun normal otherwise (the default) */
  TD_INIT_HE_NORMAL = 1,
  TD_INIT_LECUN_NORMAL = 2,
  TD_INIT_TORCH_DEFAULT = 3 /* torch.nn.Linear.reset_parameters */
} td_init;

/* Parameterization (params.model.parameterization): how the trained coordinates map to the
 * network's weights, and how an optimizer's learning rate is distributed over the layers.
 * Linear layer j computes out = w_mult_j * inp W_j^T + b_mult_j * b_j, where W_j, b_j are the
 * stored (trained) parameters; the multipliers flow through forward, backward, the curvature
 * products (curv.h), the empirical NTK (entk.h) and per-example gradients. With fan_in = n_in
 * of the layer and, for mup, r_in = fan_in / base_width (1 for the input layer, whose fan_in is
 * the finite input dimension) and r_out = fan_out / base_width (1 for the output layer):
 *  - TD_PARAM_STANDARD: tdlab's (w_mult = b_mult = 1; td_mlp_init's distributions; lr x 1).
 *  - TD_PARAM_NTK (Jacot, Gabriel, Hongler 2018, "Neural tangent kernel", sec. 2, eq. 1; the
 *    sigma_w, sigma_b form of Lee et al. 2019, eq. 1): W, b ~ N(0, init_scale^2),
 *    w_mult = sigma_w / sqrt(fan_in), b_mult = sigma_b; lr x 1 (gradient descent on the
 *    N(0, 1) coordinates, whose empirical NTK tends to the analytic one of kernels.h).
 *  - TD_PARAM_MUP (Yang et al. 2022, "Tensor Programs V", Table 3, the muP columns, with every
 *    "infinite" fan measured relative to base_width as in their sec. 4 / the mup package, so
 *    that at width base_width muP coincides with SP; base_width 1 is Table 3 literally):
 *    no multipliers (w_mult = b_mult = 1);
 *      input weights and all biases (and norm gains/shifts): init as standard, SGD lr x r_out,
 *        Adam lr x 1;
 *      hidden weights: init as standard, SGD lr x 1, Adam lr x 1 / r_in;
 *      output weights: init variance of standard / r_in, SGD lr x 1 / r_in, Adam lr x 1 / r_in.
 *    "SGD" applies to sgd, heavy_ball, nesterov, sgld; "Adam" to adam, adamw, adagrad,
 *    rmsprop (TP5 Table 3 caption: Adagrad etc. scale as Adam). td_mlp_lr_segments gives the
 *    multipliers. */
typedef enum { TD_PARAM_STANDARD = 0, TD_PARAM_NTK = 1, TD_PARAM_MUP = 2 } td_param_kind;

#define TD_NORM_EPS_DEFAULT 1e-5 /* torch.nn.LayerNorm / BatchNorm1d default */
#define TD_BN_MOMENTUM 0.1       /* torch.nn.BatchNorm1d default */

typedef enum {
  TD_LAYER_LINEAR = 0,
  TD_LAYER_RELU = 1,
  TD_LAYER_TANH = 2,
  TD_LAYER_LAYERNORM = 3,
  TD_LAYER_BATCHNORM = 4
} td_layer_kind;

typedef struct td_layer {
  td_layer_kind kind;
  int n_in, n_out;   /* feature widths (equal for activations) */
  size_t off;        /* offset of the layer's parameters in params/grad (W first, then b;
                        norm layers: gamma, then beta) */
  size_t n_params;   /* 0 for parameter-free layers */
  int index;         /* linear layers: 0, 1, ... (the j of layers.{j}.weight); norm layers:
                        the j of norms.{j} (= the linear layer before it); else -1 */
  size_t buf_off;    /* batchnorm: offset of running_mean in m->buffers (then running_var,
                        then num_batches_tracked); else 0 */
  size_t n_buffers;  /* batchnorm: 2 n + 1; else 0 */
  double w_mult, b_mult; /* linear layers: the parameterization's multipliers (1: standard);
                            1 for other layers */
  double lr_sgd, lr_sgd_b, lr_adam, lr_adam_b; /* the parameterization's learning-rate
                            multipliers of W (or gamma) and b (or beta) for SGD- and Adam-like
                            optimizers (1 except under mup) */
} td_layer;

typedef struct td_mlp_cfg {
  int in_dim;                     /* input features, >= 1 */
  int out_dim;                    /* outputs (classes or targets), >= 1 */
  int n_hidden;                   /* 0 .. TD_MLP_MAX_HIDDEN */
  int hidden[TD_MLP_MAX_HIDDEN];  /* widths, each >= 1 */
  td_act act;                     /* after every hidden linear layer; none after the last */
  double init_scale;              /* multiplier on the init distribution, >= 0 */
  td_init init;                   /* TD_INIT_AUTO (0) in zeroed configs */
  td_norm norm;                   /* after every hidden linear layer, before act (0: none) */
  double norm_eps;                /* eps of the norm layers, >= 0; 0 means
                                     TD_NORM_EPS_DEFAULT (so zeroed configs get it) */
  td_param_kind param;            /* parameterization (TD_PARAM_STANDARD in zeroed configs) */
  double sigma_w2, sigma_b2;      /* ntk: sigma_w^2 > 0 and sigma_b^2 >= 0 */
  double base_width;              /* mup: the base width (0 in zeroed configs means 1) */
} td_mlp_cfg;

typedef struct td_mlp {
  td_mlp_cfg cfg;
  int n_layers;
  td_layer layers[TD_MLP_MAX_LAYERS];
  int n_linear;
  int n_norm;        /* normalization layers (0 or n_hidden) */
  size_t n_params;
  int max_width;     /* widest layer output (or input) */
  double norm_eps;   /* the eps in use (cfg.norm_eps or the default) */
  double *params;    /* n_params, owned */
  double *grad;      /* n_params, owned */
  size_t n_buffers;  /* non-trainable state (BatchNorm running statistics) */
  double *buffers;   /* n_buffers, owned (NULL when 0) */
} td_mlp;

/* Forward modes (torch's module.train() / module.eval()). Only BatchNorm differs: TRAIN
 * normalizes with the batch statistics (examples in a batch are coupled), EVAL with the
 * running statistics (every example independent). */
typedef enum { TD_MLP_TRAIN = 0, TD_MLP_EVAL = 1 } td_mlp_mode;

/* Activations of one batch, allocated once for a maximum batch size `cap`.
 * act[0] is the (borrowed) input of the last forward; act[i+1] (cap x layers[i].n_out) is
 * the output of layer i; dact[i] has the shape of act[i] (dact[0] is unused: no dL/dX). */
typedef struct td_mlp_ws {
  int cap;
  int n_layers;
  const double *input;
  double *act[TD_MLP_MAX_LAYERS + 1];
  double *dact[TD_MLP_MAX_LAYERS + 1];
  /* norm layer i: aux[i] = xhat (cap x n) then rstd (LayerNorm: cap; BatchNorm: n) */
  double *aux[TD_MLP_MAX_LAYERS];
  td_mlp_mode mode; /* TD_MLP_TRAIN after init */
  int update_running; /* TRAIN mode: forward also updates m->buffers (default 0) */
  double *mem;      /* one block behind act, dact and aux */
} td_mlp_ws;

/* td_mlp_act_parse: "relu" | "tanh" | "linear" to td_act. Errors: TD_EINVAL. */
int td_mlp_act_parse(const char *name, td_act *out /* OUT */);

/* td_mlp_init_parse: NULL (absent) -> TD_INIT_AUTO; "he_normal" | "lecun_normal" |
 * "torch_default" to td_init. Errors: TD_EINVAL. */
int td_mlp_init_parse(const char *name, td_init *out /* OUT */);

/* td_mlp_norm_parse: "none" | "layernorm" | "batchnorm" to td_norm; td_mlp_norm_name the
 * reverse ("none" for unknown values). Errors: TD_EINVAL. */
int td_mlp_norm_parse(const char *name, td_norm *out /* OUT */);
const char *td_mlp_norm_name(td_norm norm);

/* td_mlp_param_parse: NULL (absent) -> TD_PARAM_STANDARD; "standard" | "ntk" | "mup";
 * td_mlp_param_name the reverse. Errors: TD_EINVAL. */
int td_mlp_param_parse(const char *name, td_param_kind *out /* OUT */);
const char *td_mlp_param_name(td_param_kind p);

/* td_mlp_lr_segments: the learning-rate multipliers of the parameterization as contiguous
 * segments of the flat parameter vector: segment s covers [ends[s-1], ends[s]) (ends[-1] = 0)
 * with multiplier mults[s]; adam != 0 selects the Adam column (see td_param_kind). Writes at
 * most 2 * m->n_layers entries to each array; returns the number of segments (the last end is
 * n_params). Under standard and ntk every multiplier is 1. */
int td_mlp_lr_segments(const td_mlp *m, int adam, size_t *ends /* OUT */,
                       double *mults /* OUT */);

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
 * W row-major then b, by cfg.init (s = cfg.init_scale, n_in = fan_in of the layer):
 *  - TD_INIT_AUTO: W_ij ~ N(0, s^2 * gain / n_in) with gain 2 when the layer is followed by a
 *    ReLU (He et al. 2015, eq. 10; a norm layer in between is skipped over) and gain 1
 *    otherwise (LeCun et al. 1998, "Efficient BackProp", sec. 4.6), including the output
 *    layer; biases are 0.
 *  - TD_INIT_HE_NORMAL: W_ij ~ N(0, 2 s^2 / n_in) for every layer; biases 0.
 *  - TD_INIT_LECUN_NORMAL: W_ij ~ N(0, s^2 / n_in) for every layer; biases 0.
 *  - TD_INIT_TORCH_DEFAULT: exactly torch.nn.Linear.reset_parameters (torch/nn/modules/
 *    linear.py): kaiming_uniform_(W, a = sqrt(5)) draws U(-bound, bound) with bound =
 *    gain sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), i.e. bound =
 *    1/sqrt(fan_in); then b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Both bounds times s.
 *    (Same distribution as PyTorch; not the same random numbers.)
 * The parameterization (td_param_kind) changes this: ntk draws every W and b from
 * N(0, s^2) (the multipliers carry the scale); mup divides the output layer's weight variance
 * by r_in = fan_in / base_width (its biases as above).
 * Norm layers: gamma = 1, beta = 0 (no random draws, so the weights are those of the same
 * model without normalization); BatchNorm buffers: running_mean 0, running_var 1,
 * num_batches_tracked 0 (torch's initial state). */
void td_mlp_init(td_mlp *m, uint64_t seed);

/* td_mlp_linear: pointers to W (n_out x n_in) and b of linear layer j (0-based) inside
 * `vec` (params, grad or any vector of the same layout). Returns the layer or NULL. */
const td_layer *td_mlp_linear(const td_mlp *m, int j, double *vec, double **W /* OUT */,
                              double **b /* OUT */);

/* td_mlp_norm: pointers to gamma and beta (n each) of norm layer j (norms.{j}) inside `vec`
 * (params, grad or any vector of the same layout). Returns the layer or NULL. */
const td_layer *td_mlp_norm(const td_mlp *m, int j, double *vec, double **gamma /* OUT */,
                            double **beta /* OUT */);

/* td_mlp_norm_buffers: pointers into m->buffers to the running mean, running variance (n
 * each) and num_batches_tracked (1) of BatchNorm layer j. Returns the layer, or NULL when j
 * is not a BatchNorm layer. */
const td_layer *td_mlp_norm_buffers(const td_mlp *m, int j, double **mean /* OUT */,
                                    double **var /* OUT */, double **count /* OUT */);

/* td_mlp_scale_invariant: non-zero when linear layer j is followed by a norm layer, so that
 * its output is invariant to scaling its (W, b) by c > 0 (up to eps; see the DESIGN note).
 * For such a parameter group w the loss gradient is orthogonal to w (differentiate
 * L(c w) = L(w) at c = 1), so plain GD gives ||w_{t+1}||^2 = ||w_t||^2 + lr^2 ||g_t||^2
 * and the effective step on the sphere is lr / ||w||^2 (van Laarhoven 2017, "L2
 * regularization versus batch and weight normalization", eq. 9; Arora, Li, Lyu 2019,
 * "Theoretical analysis of auto rate-tuning by batch normalization", Lemma 2.4). */
int td_mlp_scale_invariant(const td_mlp *m, int j);

/* td_mlp_ws_init / td_mlp_ws_deinit: workspace for batches up to `cap` examples (the
 * caller owns the struct), in TRAIN mode without running-statistics updates.
 * Errors: TD_EINVAL (cap < 1), TD_ENOMEM. */
int td_mlp_ws_init(td_mlp_ws *ws, const td_mlp *m, int cap, td_err *err);
void td_mlp_ws_deinit(td_mlp_ws *ws);

/* td_mlp_ws_set_mode: forward mode of the workspace (see td_mlp_mode). update_running != 0
 * (TRAIN mode only) makes every forward through this workspace update the BatchNorm running
 * statistics in m->buffers, as a torch forward in train mode does; use it for the training
 * workspace only, so that evaluations, curvature analyses and noise-scale measurements leave
 * the buffers alone. */
void td_mlp_ws_set_mode(td_mlp_ws *ws, td_mlp_mode mode, int update_running);

/* td_mlp_forward: run the B <= ws->cap examples X (B x in_dim, borrowed and kept as act[0]
 * until the next forward, so it must stay alive for backward) through the model with
 * parameters `params` (n_params; usually m->params) in the workspace's mode. Returns the
 * outputs (B x out_dim), which live in ws. Never allocates. Writes m->buffers only in TRAIN
 * mode with ws->update_running (BatchNorm running statistics). */
const double *td_mlp_forward(const td_mlp *m, td_mlp_ws *ws, const double *params,
                             const double *X, int B);

/* td_mlp_forward_from: td_mlp_forward that starts at layer `first` (0 <= first < n_layers),
 * taking ws->act[first] (B x the input width of layer first) as already holding the output
 * of layer first - 1 on the same X and params, e.g. restored from an earlier forward pass.
 * Runs the same kernels on the same inputs, so the outputs are bitwise those of
 * td_mlp_forward. X is still recorded as act[0] (backward reads it). */
const double *td_mlp_forward_from(const td_mlp *m, td_mlp_ws *ws, const double *params,
                                  const double *X, int B, int first);

/* td_mlp_backward: backprop dout = dL/doutputs (B x out_dim) through the last forward (same
 * B, params and mode; in TRAIN mode BatchNorm's backward includes the batch statistics'
 * dependence on every example). grad (n_params) receives dL/dparams: ADDED to it when accumulate != 0,
 * else overwritten (no need to zero it first). dL/dX is not computed. Never allocates. */
void td_mlp_backward(const td_mlp *m, td_mlp_ws *ws, const double *params, const double *dout,
                     int B, double *grad, int accumulate);

#endif
