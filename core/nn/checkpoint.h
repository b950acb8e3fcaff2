/* checkpoint.h: MLP parameters to and from safetensors (F64) in the torch.nn.Linear layout. */
#ifndef TD_CHECKPOINT_H
#define TD_CHECKPOINT_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "nn/model.h"
#include "optim/optim.h"

/* Tensor names and shapes: for linear layer j = 0, 1, ... (model.h's L->index)
 *   layers.{j}.weight  F64 (out, in)   row-major, = torch.nn.Linear(in, out).weight
 *   layers.{j}.bias    F64 (out)
 * so that `torch.nn.ModuleDict({"layers": nn.ModuleList([nn.Linear(...), ...])})` (or any
 * module with a `layers` ModuleList of Linear) loads the file with load_state_dict(strict=True)
 * after safetensors.torch.load_file. Activations are not tensors; tdlab records them in the
 * metadata (see td_checkpoint_save).
 *
 * Models with normalization layers (model.h cfg.norm) add, for each hidden linear layer j,
 * the torch.nn.LayerNorm / BatchNorm1d state of the module `norms[j]`:
 *   norms.{j}.weight        F64 (out)   gamma
 *   norms.{j}.bias          F64 (out)   beta
 * and for BatchNorm the buffers (m->buffers, not parameters):
 *   norms.{j}.running_mean  F64 (out)
 *   norms.{j}.running_var   F64 (out)   (unbiased, as torch keeps it)
 *   norms.{j}.num_batches_tracked  F64 scalar (torch's is I64; load_state_dict casts it)
 * so a module with `layers` (ModuleList of Linear) and `norms` (ModuleList of LayerNorm or
 * BatchNorm1d, eps from the metadata) loads with strict=True. Linear naming is unchanged, and
 * a model without normalization writes exactly the tensors it always did. The metadata gets
 * "norm" (layernorm|batchnorm) and "norm_eps" (%.17g) when the model has norm layers. */

/* Optimizer state (td_checkpoint_save_state with an optimizer). For each state vector i that
 * the optimizer uses (td_optim_state(o, i) != NULL; its layout is that of params), the
 * parameter tensors above (not the BatchNorm buffers) again, under
 *   optimizer.<state>.<tensor>      e.g. optimizer.exp_avg.layers.0.weight  F64 (out, in)
 * where <state> is td_optim_state_name (PyTorch's key in torch.optim.<X>.state[p]):
 *   sgd, nesterov  momentum_buffer (only with momentum > 0)
 *   heavy_ball     displacement (p_t - p_{t-1}; torch's momentum_buffer = -displacement / lr)
 *   adagrad        sum
 *   rmsprop        square_avg; momentum_buffer (momentum > 0); grad_avg (centered)
 *   adam, adamw    exp_avg, exp_avg_sq
 * and two metadata entries (strings, as safetensors requires):
 *   "optimizer"       the optimizer's name (td_optim_name)
 *   "optimizer_step"  its step count (td_optim_steps, torch's state["step"]), decimal. */
#define TD_CHECKPOINT_META_OPTIMIZER "optimizer"
/* The parameterization (model.h td_param_kind) of a non-standard model: metadata
 * "parameterization" (ntk|mup) with "sigma_w2", "sigma_b2" (ntk) or "base_width" (mup), %.17g.
 * The tensors hold the stored (trained) coordinates; the layer's weight is w_mult times
 * layers.{j}.weight. Absent: standard (a standard model writes exactly the bytes it always
 * did). td_checkpoint_cfg reads them; td_checkpoint_load_state refuses (TD_EINVAL, field
 * "parameterization") a checkpoint whose parameterization differs from the model's, since the
 * same tensors would be a different function. */
#define TD_CHECKPOINT_META_PARAM "parameterization"
#define TD_CHECKPOINT_META_OPTIMIZER_STEP "optimizer_step"

/* td_checkpoint_save_state: serialize params (m->n_params, the layout of m), the BatchNorm
 * buffers of m->buffers and, when opt is not NULL, its state vectors and step count (names
 * above) into a new safetensors buffer (F64). metadata (borrowed, may be NULL) is a JSON
 * object of strings copied into "__metadata__"; tdlab adds "format": "pt", "activation",
 * "norm"/"norm_eps" (models with norm layers) unless the caller set them, and with opt it
 * sets "optimizer" and "optimizer_step" (overriding the caller's).
 * Errors: TD_EINVAL (NULL arguments, metadata not an object of strings, td_optim_n_params(opt)
 * != m->n_params; field "optimizer"), TD_ENOMEM. Ownership: opt is only read; the caller
 * frees *bytes (OUT) with free(); on error *bytes is NULL and *len 0. */
int td_checkpoint_save_state(const td_mlp *m, const double *params, const td_optim *opt,
                             const json_t *metadata, unsigned char **bytes /* OUT */,
                             size_t *len /* OUT */, td_err *err);

/* td_checkpoint_load_state: parse the safetensors buffer (len bytes, borrowed, treated as
 * hostile), check it against m and, on success, copy the parameters into params
 * (m->n_params), the BatchNorm running statistics into m->buffers, and, when opt is not
 * NULL, the optimizer state into opt's state vectors and its step count
 * (td_optim_set_steps). Checks, strict as torch's load_state_dict(strict=True):
 *  - every parameter tensor of m (and BatchNorm buffer) is present (num_batches_tracked may
 *    be absent, or a scalar of any dtype: torch's I64 is not converted, the count restarts
 *    at 0), F64 or F32 (converted exactly), with exactly m's shape, all values finite;
 *  - no other tensor is present, except optimizer.* tensors, which are ignored when opt is
 *    NULL (an init_from of a checkpoint written with its optimizer state) and, with opt, for
 *    state names that opt does not use (e.g. a fork that turns momentum off);
 *  - with opt: metadata "optimizer" equals td_optim_name(opt), "optimizer_step" is an
 *    integer >= 0, and every state tensor opt uses is present, F64/F32, shaped and finite.
 * On success *metadata (OUT, may be NULL) is a new reference to a copy of "__metadata__"
 * (an empty object when the file has none).
 * Errors: TD_EINVAL (malformed file; a dtype, shape, non-finite value or unexpected tensor,
 * err->field = the tensor's name and the message gives the expected and found shapes; a
 * missing or different optimizer, field "optimizer"; a bad step, field "optimizer_step";
 * td_optim_n_params(opt) != m->n_params), TD_ENOTFOUND (an expected tensor is missing;
 * field = its name), TD_ELIMIT, TD_ENOMEM. Nothing is written (params, m->buffers, opt) on
 * error. */
int td_checkpoint_load_state(const td_mlp *m, const void *buf, size_t len,
                             double *params /* OUT */, td_optim *opt /* may be NULL */,
                             json_t **metadata /* OUT, may be NULL */, td_err *err);

/* td_checkpoint_params_cfg: the model architecture of a kind's validated, defaults-filled
 * params (borrowed), by the rule of the kinds that train a network (core/kinds/train.c,
 * ckind.c): inputs and outputs from data.name (fashion-mnist: 784 and 10; synthetic: data.d
 * and 1), hidden widths from model.hidden, model.activation (relu), model.norm (none),
 * model.norm_eps, init_scale 1. For checking a checkpoint named by params.init_from /
 * params.fork against the job before it runs (td_checkpoint_load_state on a model built
 * from *cfg). Errors: TD_ENOTFOUND (params has no "model" object: the kind trains no
 * network), TD_EINVAL (field params.model.* or params.data.name). */
int td_checkpoint_params_cfg(const json_t *params, td_mlp_cfg *cfg /* OUT */, td_err *err);

/* td_checkpoint_check_params: build the model of params (td_checkpoint_params_cfg) and check
 * the checkpoint buf (len bytes) against it as td_checkpoint_load_state does with opt NULL,
 * without keeping anything. With `optimizer` non-zero (a fork) the checkpoint must also
 * carry optimizer state of the optimizer named by params.optimizer.name (metadata
 * "optimizer"; field "optimizer"). Errors: those of the two functions above, TD_ENOMEM. */
int td_checkpoint_check_params(const json_t *params, const void *buf, size_t len, int optimizer,
                               td_err *err);

/* td_checkpoint_save: serialize params (m->n_params, the layout of m; usually m->params),
 * and BatchNorm buffers from m->buffers, into a new safetensors buffer (td_safetensors_write). metadata (borrowed, may be NULL) is a
 * JSON object of strings copied into "__metadata__"; tdlab adds "format": "pt" and
 * "activation" (relu|tanh|linear) unless the caller set them.
 * Errors: TD_EINVAL (NULL arguments, metadata not an object of strings), TD_ENOMEM.
 * Ownership: the caller frees *buf (OUT) with free(); on error *buf is NULL and *len 0. */
int td_checkpoint_save(const td_mlp *m, const double *params, const json_t *metadata,
                       unsigned char **buf /* OUT */, size_t *len /* OUT */, td_err *err);
/* (td_checkpoint_save is td_checkpoint_save_state with opt NULL.) */

/* td_checkpoint_load: td_checkpoint_load_state(m, buf, len, params, NULL, NULL, err): the
 * parameters (and BatchNorm buffers) only; optimizer.* tensors are ignored, non-finite values
 * refused. Errors and guarantees as td_checkpoint_load_state. */
int td_checkpoint_load(const td_mlp *m, const void *buf, size_t len, double *params /* OUT */,
                       td_err *err);

/* td_checkpoint_cfg: read the architecture of a checkpoint: in_dim, hidden widths and
 * out_dim from the layers.{j}.weight shapes (which must chain: in of j+1 == out of j), and
 * the activation from the "activation" metadata (relu when absent). init_scale is set to 1.
 * norm comes from the "norm" metadata, or when absent from the tensors (norms.0.running_mean:
 * batchnorm; norms.0.weight: layernorm; else none), norm_eps from "norm_eps" (absent: 0,
 * i.e. the default 1e-5).
 * Errors: TD_EINVAL (no layers.0.weight, a gap in j, shapes that do not chain, more than
 * TD_MLP_MAX_HIDDEN hidden layers, an unknown activation), TD_ELIMIT, TD_ENOMEM. */
int td_checkpoint_cfg(const void *buf, size_t len, td_mlp_cfg *cfg /* OUT */, td_err *err);

/* td_checkpoint_save_file / td_checkpoint_load_file: the same through a file at `path`
 * (written whole, then renamed into place, so a reader never sees half a file; read whole,
 * at most 4 GiB). Errors: those above, plus TD_EIO / TD_ENOTFOUND for file errors. */
int td_checkpoint_save_file(const char *path, const td_mlp *m, const double *params,
                            const json_t *metadata, td_err *err);
int td_checkpoint_load_file(const char *path, const td_mlp *m, double *params /* OUT */,
                            td_err *err);
/* td_checkpoint_save_file_state: td_checkpoint_save_state through a file at `path` (written
 * whole, then renamed into place). Errors: those of td_checkpoint_save_state, TD_EIO. */
int td_checkpoint_save_file_state(const char *path, const td_mlp *m, const double *params,
                                  const td_optim *opt, const json_t *metadata, td_err *err);

#endif
