/* hgmlp.h: an MLP as the inner problem of bilevel/hypergrad.h (prefix td_hgmlp_): full-batch
 * training and validation losses through td_curv, one L2 group per linear layer. */
#ifndef TD_HGMLP_H
#define TD_HGMLP_H

#include <stddef.h>

#include "base/err.h"
#include "bilevel/hypergrad.h"
#include "curv/curv.h"
#include "nn/data.h"
#include "nn/model.h"

/* L_train is the mean loss (curv.h conventions) over the first n_train examples of `train`,
 * L_val over the first n_val of `val`; gradients by backprop and Hessian-vector products by
 * Pearlmutter's R{backprop} (td_curv_hvp), both exact. Group j (j < m->n_linear) is linear
 * layer j's W_j and b_j, together with the parameters of a normalization layer right after it
 * (contiguous in the flat layout of model.h). Borrows m and the data sets. */
typedef struct td_hgmlp {
  const td_mlp *m;
  td_curv_ctx tr, va;
  int n_groups;
  size_t group_off[TD_MLP_MAX_LAYERS + 1];
  /* td_hgmlp_cache: steps cache_first .. cache_first + cache_steps - 1 keep their first-layer
   * pre-activations (cache_len doubles each) */
  double *cache;
  int cache_first, cache_steps;
  size_t cache_len;
  long cache_hits;        /* reverse-pass points that skipped the first layer's GEMM */
  double *jv;             /* n_train x out_dim scratch of the data-weight products */
} td_hgmlp;

/* td_hgmlp_init: two curvature contexts (train batch n_train, validation batch n_val).
 * Errors: TD_EINVAL (sizes, labels), TD_ENOMEM; *h is deinitialized on error. */
int td_hgmlp_init(td_hgmlp *h, const td_mlp *m, const td_dataset *train, size_t n_train,
                  const td_dataset *val, size_t n_val, td_curv_loss loss, td_err *err);
void td_hgmlp_deinit(td_hgmlp *h);

/* td_hgmlp_cache: make exact reversal (td_hg_reversal through td_hgmlp_problem's point_at)
 * keep, on its forward pass of a T-step unroll, the training batch's first-layer
 * pre-activations (n_train x hidden doubles, 2 MB for 1000 x 256) of the last
 * min(T, floor(max_bytes / that)) steps, and reuse them when the reverse pass recomputes
 * those steps: each such step skips the first layer's forward GEMM (n_train x in x hidden,
 * the largest in the step with the weight gradient). The point it sets is bitwise the one
 * td_curv_set_point sets (same kernels on the same inputs), so the reversal stays exact.
 * max_bytes <= 0 frees the cache. Memory: the cache, counted by the caller. Errors: TD_EINVAL
 * (T < 1, a model with one layer), TD_ENOMEM. */
int td_hgmlp_cache(td_hgmlp *h, int T, double max_bytes, td_err *err);

/* td_hgmlp_problem: the td_hg_problem of h (ctx = h), with data weights over the n_train
 * training examples (ex_dot: one JVP, td_curv_jvp, per call). */
td_hg_problem td_hgmlp_problem(td_hgmlp *h);

#endif
