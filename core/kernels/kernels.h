/* kernels.h: infinite-width kernels of deep fully connected networks: the NNGP kernel and the
 * NTK by their layer recursions, for relu, erf and linear activations. */
#ifndef TD_KERNELS_H
#define TD_KERNELS_H

#include "base/err.h"

/* Activations with closed-form Gaussian expectations. */
typedef enum { TD_KACT_RELU = 0, TD_KACT_ERF = 1, TD_KACT_LINEAR = 2 } td_kact;

/* Which kernel. */
typedef enum { TD_KERNEL_NNGP = 0, TD_KERNEL_NTK = 1 } td_kernel_kind;

#define TD_KERNEL_MAX_DEPTH 64

/* The network whose infinite-width limit is taken, in the NTK parameterization (Jacot et al.
 * 2018, sec. 2; Lee et al. 2019, eq. 1): input x in R^d, `depth` hidden layers of width
 * n -> infinity, activation phi, a LINEAR output layer:
 *   h^1 = sigma_w / sqrt(d) W^1 x + sigma_b b^1,
 *   h^l = sigma_w / sqrt(n) W^l phi(h^{l-1}) + sigma_b b^l,   l = 2 .. depth + 1,
 * all W, b entries i.i.d. N(0, 1); the output is h^{depth+1}. The same sigma_w2 = sigma_w^2
 * and sigma_b2 = sigma_b^2 are used by every layer, the output layer included. */
typedef struct td_kernel_cfg {
  td_kact act;
  int depth;        /* hidden layers, 0 .. TD_KERNEL_MAX_DEPTH (0: the linear model) */
  double sigma_w2;  /* > 0 */
  double sigma_b2;  /* >= 0 */
} td_kernel_cfg;

/* td_kernel_act_parse: "relu" | "erf" | "linear" to td_kact; td_kernel_kind_parse: "nngp" |
 * "ntk". Errors: TD_EINVAL. */
int td_kernel_act_parse(const char *name, td_kact *out /* OUT */);
int td_kernel_kind_parse(const char *name, td_kernel_kind *out /* OUT */);

/* td_kernel_expect: the Gaussian expectations one layer needs, for (u, v) ~ N(0, [[k11, k12],
 * [k12, k22]]) (k11, k22 >= 0, |k12| <= sqrt(k11 k22); clamped to that range):
 *   *e_phi  = E[phi(u) phi(v)],  *e_dphi = E[phi'(u) phi'(v)].
 * Closed forms (theta = arccos(k12 / sqrt(k11 k22))):
 *  - relu: e_phi = sqrt(k11 k22) (sin theta + (pi - theta) cos theta) / (2 pi),
 *          e_dphi = (pi - theta) / (2 pi): the arc-cosine kernels of degree 1 and 0 (Cho and
 *          Saul 2009, "Kernel methods for deep learning", eqs. 6-7, with the 1/pi of their
 *          definition times the 1/2 of a single relu); when k11 k22 = 0 both are 0 (then
 *          u = 0 or v = 0 almost surely, and relu'(0) = 0 as in td_relu_backward);
 *  - erf: e_phi = (2/pi) asin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22))) (Williams 1997,
 *          "Computing with infinite networks", eq. 11, with Sigma = k and no extra bias
 *          input), e_dphi = (4/pi) / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12^2) (phi'(u) =
 *          2/sqrt(pi) exp(-u^2) and E[exp(-u^2 - v^2)] = det(I + 2 k)^(-1/2));
 *  - linear: e_phi = k12, e_dphi = 1. */
void td_kernel_expect(td_kact act, double k11, double k12, double k22, double *e_phi /* OUT */,
                      double *e_dphi /* OUT */);

/* td_kernel_matrix: the analytic NNGP kernel K = lim E[f(x) f(x')] or NTK Theta of the
 * network of td_kernel_cfg, between the rows of X (n1 x d) and of X2 (n2 x d; NULL means X2 =
 * X, n2 = n1), written to out (n1 x n2, row-major, caller-allocated). Recursions (Lee et al.
 * 2018, "Deep neural networks as Gaussian processes", eqs. 4-5; Jacot et al. 2018, Theorem 1;
 * Arora et al. 2019, "On exact computation with an infinitely wide neural net", eqs. 7-9):
 *   K^1 = Theta^1 = sigma_w2 x.x' / d + sigma_b2,
 *   K^{l+1} = sigma_w2 E[phi(u) phi(v)] + sigma_b2,
 *   Theta^{l+1} = K^{l+1} + sigma_w2 E[phi'(u) phi'(v)] Theta^l,
 * with (u, v) ~ N(0, K^l restricted to {x, x'}), for l = 1 .. depth; the output is layer
 * depth + 1. For one output the kernel is a scalar; for k outputs the kernel is this times
 * I_k. Costs O(n1 n2 (d + depth)). Errors: TD_EINVAL (bad cfg: depth out of range,
 * sigma_w2 <= 0, sigma_b2 < 0 or non-finite; n < 1; d < 1; NULL), with the field in err. */
int td_kernel_matrix(const td_kernel_cfg *cfg, td_kernel_kind kind, const double *X, int n1,
                     const double *X2, int n2, int d, double *out /* OUT, n1 x n2 */,
                     td_err *err);

#endif
