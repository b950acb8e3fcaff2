/* checkpoint.h: MLP parameters to and from safetensors (F64) in the torch.nn.Linear layout. */
#ifndef TD_CHECKPOINT_H
#define TD_CHECKPOINT_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "nn/model.h"

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

/* td_checkpoint_save: serialize params (m->n_params, the layout of m; usually m->params),
 * and BatchNorm buffers from m->buffers, into a new safetensors buffer (td_safetensors_write). metadata (borrowed, may be NULL) is a
 * JSON object of strings copied into "__metadata__"; tdlab adds "format": "pt" and
 * "activation" (relu|tanh|linear) unless the caller set them.
 * Errors: TD_EINVAL (NULL arguments, metadata not an object of strings), TD_ENOMEM.
 * Ownership: the caller frees *buf (OUT) with free(); on error *buf is NULL and *len 0. */
int td_checkpoint_save(const td_mlp *m, const double *params, const json_t *metadata,
                       unsigned char **buf /* OUT */, size_t *len /* OUT */, td_err *err);

/* td_checkpoint_load: parse the safetensors buffer (len bytes, borrowed, treated as hostile)
 * and copy every layers.{j}.weight / layers.{j}.bias (and norms.{j}.weight / .bias) into
 * params (m->n_params), and BatchNorm running statistics into m->buffers (the one write to
 * the model itself). Strict, as torch's load_state_dict(strict=True): every tensor of m must
 * be present with exactly its shape, F64 or F32 (converted exactly), and no other tensor may
 * be present; the exception is norms.{j}.num_batches_tracked, which may be absent or a
 * scalar of any dtype (torch's I64 is not converted: the count restarts at 0).
 * Errors: TD_EINVAL (malformed file, shape or dtype mismatch, unexpected tensor; err->field
 * names the tensor), TD_ENOTFOUND (a tensor is missing; field = its name), TD_ELIMIT,
 * TD_ENOMEM. Nothing is written to params or
 * m->buffers on error. */
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

#endif
