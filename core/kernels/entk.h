/* entk.h: the empirical NTK of a finite tdlab MLP, from per-layer Gram products (the
 * Jacobian is never materialized). */
#ifndef TD_ENTK_H
#define TD_ENTK_H

#include "base/err.h"
#include "nn/model.h"

/* Options of td_entk_compute. A zeroed struct means: trace over outputs, unit weights, no
 * memory cap. */
typedef struct td_entk_opts {
  int full;              /* nonzero: the full (n1 k) x (n2 k) kernel; 0: its trace over the
                            k outputs, n1 x n2 */
  const double *w_scale; /* n_linear multipliers c_W[j] on linear layer j's weight block, or
                            NULL (all 1); see td_entk_compute */
  const double *b_scale; /* n_linear multipliers c_b[j] on its bias block, or NULL (all 1) */
  double max_bytes;      /* refuse (TD_ELIMIT) when td_entk_estimate is above this; <= 0: no
                            cap */
} td_entk_opts;

/* td_entk_estimate: the bytes td_entk_compute needs for these sizes, output included,
 * computed in double precision without allocating: the output (k^2 n1 n2 or n1 n2 doubles),
 * two n1 x n2 Gram buffers, two (k N x w) backpropagation buffers (N = n1 + n2 when X2 is
 * given, else n1; w the widest hidden or output layer), the forward workspace of batch N
 * (td_mlp_estimate) and the stacked input when X2 is given. Errors: TD_EINVAL. */
int td_entk_estimate(const td_mlp *m, int n1, int n2, int has_x2, int full,
                     double *bytes /* OUT */, td_err *err);

/* td_entk_compute: the empirical NTK at parameters `params` (n_params; usually m->params)
 *   Theta[(i,a),(j,b)] = sum_j c_W[j] <df_a(x_i)/dW_j, df_b(x'_j)/dW_j>
 *                      + c_b[j] <df_a(x_i)/db_j, df_b(x'_j)/db_j>
 * (Jacot et al. 2018, eq. 3: Theta = J J^T; with all c = 1 it is exactly J(X) J(X2)^T over
 * every parameter of the model (its stored coordinates: under the model's parameterization,
 * model.h td_param_kind, the multipliers w_mult, b_mult of each layer enter the forward pass,
 * the backpropagation and, squared, c_W and c_b); c_W[j] = s_j^2 gives the NTK in the
 * parameterization W_j =
 * s_j * omega_j, since df/domega = s_j df/dW), for x_i the rows of X (n1 x in_dim) and x'_j
 * those of X2 (n2 x in_dim; NULL means X, then n2 is ignored), outputs a, b in [0, k).
 * Layout: full: out[(i k + a) (n2 k) + j k + b] (example-major, neural-tangents' (n1, n2, k,
 * k) order flattened); trace: out[i n2 + j] = sum_a Theta[(i,a),(j,a)].
 * Method: a linear layer's weight block contributes (A A2^T) o (D_a D2_b^T) (o: elementwise),
 * with A (N x n_in) its input activations and D_a (N x n_out) the derivative of output a with
 * respect to its output, backpropagated for all k outputs at once as a (k N x width) matrix;
 * the bias block contributes D_a D2_b^T. The forward pass is in EVAL mode (examples
 * independent). Cost: O(k^2 n1 n2 w) per layer in full mode (a <= b blocks only when X2 is
 * NULL), O(k n1 n2 w) in trace mode. Memory: td_entk_estimate.
 * Models with normalization layers (model.h cfg.norm) take a dense path instead, since their
 * gamma/beta are not a Gram product: the Jacobian J_a (N x n_params) of every output a is
 * built row by row by td_curv_per_example_vjp (curv.h; EVAL mode, so BatchNorm is the affine
 * map of its running statistics and examples are independent), then Theta_ab =
 * J_a(X) diag(c) J_b(X2)^T by GEMMs (c: c_W, c_b of o on linear layers, 1 on norm
 * parameters; the model's multipliers are inside J). It holds k N n_params doubles, which td_entk_estimate counts, so
 * o->max_bytes caps it before anything is allocated. Cost O(k N P + k^2 n1 n2 P).
 * Errors: TD_EINVAL (n1 < 1, NULL), TD_ERANGE (dense path: non-finite outputs), TD_ELIMIT
 * (estimate above o->max_bytes; nothing is computed), TD_ENOMEM. */
int td_entk_compute(const td_mlp *m, const double *params, const double *X, int n1,
                    const double *X2, int n2, const td_entk_opts *o,
                    double *out /* OUT, caller-allocated */, td_err *err);

#endif
