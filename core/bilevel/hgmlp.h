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
} td_hgmlp;

/* td_hgmlp_init: two curvature contexts (train batch n_train, validation batch n_val).
 * Errors: TD_EINVAL (sizes, labels), TD_ENOMEM; *h is deinitialized on error. */
int td_hgmlp_init(td_hgmlp *h, const td_mlp *m, const td_dataset *train, size_t n_train,
                  const td_dataset *val, size_t n_val, td_curv_loss loss, td_err *err);
void td_hgmlp_deinit(td_hgmlp *h);

/* td_hgmlp_problem: the td_hg_problem of h (ctx = h). */
td_hg_problem td_hgmlp_problem(td_hgmlp *h);

#endif
