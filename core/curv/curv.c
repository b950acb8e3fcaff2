/* curv.c: exact JVP/VJP/HVP/GGN/Fisher products and per-example gradients of an MLP loss.
 *
 * DESIGN. A context caches, for one batch and one parameter point, the forward activations
 * (in a td_mlp_ws), the softmax and the per-example output gradients; the backward deltas
 * dL/d act[i] are cached on the first gradient or HVP. Every product then runs only its
 * tangent passes over preallocated buffers, as whole-batch GEMMs:
 *   JVP    forward tangent pass (rfwd)                          2 GEMMs per linear layer
 *   VJP    backward pass (bwd)                                  2 GEMMs per linear layer
 *   GGN    rfwd, loss Hessian, bwd                              4
 *   HVP    rfwd, R{loss gradient}, R-backward (rbwd)            6
 * (one fewer each in the first linear layer, whose input has no tangent and needs no
 * backpropagated delta). Layer switches live in rfwd, bwd and rbwd only. */
#include "curv/curv.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/loss.h"

/* ---- layer kernels ------------------------------------------------------------------------ */

/* The R-operator of out = sw inp W^T + sb b: rout = sb Vb + sw (inp VW^T + rin W^T). With
 * sw = sb = 1 (the standard parameterization) the bias rows are copied and BLAS gets
 * alpha = 1, exactly the unscaled layer. */
static void linear_jvp(double *rout, const double *rin, const double *inp, const double *W,
                       const double *VW, const double *Vb, int B, int n_in, int n_out, double sw,
                       double sb) {
  /* rout: (B, n_out); rin, inp: (B, n_in); W, VW: (n_out, n_in); Vb: (n_out) */
  assert(rout && inp && W && VW && Vb && B >= 1 && n_in >= 1 && n_out >= 1);
  if (sb == 1.0)
    for (int r = 0; r < B; r++) memcpy(rout + (size_t)r * n_out, Vb, (size_t)n_out * sizeof *Vb);
  else
    for (int r = 0; r < B; r++)
      for (int o = 0; o < n_out; o++) rout[(size_t)r * n_out + o] = sb * Vb[o];
  /* rout += sw inp VW^T: inp (B x n_in) NoTrans; VW stored (n_out x n_in), Trans -> n_in x n_out. */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, sw, inp, n_in, VW, n_in,
              1.0, rout, n_out);
  /* rout += sw rin W^T: the same shapes with the input tangent and the weights. */
  if (rin)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, sw, rin, n_in, W, n_in,
                1.0, rout, n_out);
}

void td_curv_linear_jvp(double *rout, const double *rin, const double *inp, const double *W,
                        const double *VW, const double *Vb, int B, int n_in, int n_out) {
  linear_jvp(rout, rin, inp, W, VW, Vb, B, n_in, n_out, 1.0, 1.0);
}

/* out = s colsum(a) (s = 1: the plain sum, exactly). */
static void colsum_s(double *out, const double *a, int B, int n, double s) {
  memset(out, 0, (size_t)n * sizeof *out);
  for (int r = 0; r < B; r++) {
    const double *row = a + (size_t)r * n;
    if (s == 1.0)
      for (int o = 0; o < n; o++) out[o] += row[o];
    else
      for (int o = 0; o < n; o++) out[o] += s * row[o];
  }
}

/* The R-operator of the backward map of out = sw inp W^T + sb b: RW = sw (rdout^T inp +
 * dout^T rin), Rb = sb colsum(rdout), rdinp = sw (rdout W + dout VW). */
static void linear_rbackward(double *rdinp, double *RW, double *Rb, const double *rdout,
                             const double *dout, const double *inp, const double *rin,
                             const double *W, const double *VW, int B, int n_in, int n_out,
                             double sw, double sb) {
  /* rdinp: (B, n_in) or NULL; RW: (n_out, n_in); Rb: (n_out); rdout, dout: (B, n_out);
   * inp, rin: (B, n_in); W, VW: (n_out, n_in) */
  assert(RW && Rb && rdout && dout && inp && W && VW && B >= 1 && n_in >= 1 && n_out >= 1);
  /* RW = sw rdout^T inp: rdout stored (B x n_out), Trans -> (n_out x B); inp (B x n_in). */
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, sw, rdout, n_out, inp,
              n_in, 0.0, RW, n_in);
  /* RW += sw dout^T rin: the same transposes. */
  if (rin)
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, sw, dout, n_out, rin,
                n_in, 1.0, RW, n_in);
  colsum_s(Rb, rdout, B, n_out, sb);
  if (rdinp) {
    /* rdinp = sw (rdout W + dout VW): (B x n_out) times (n_out x n_in), both NoTrans. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, sw, rdout, n_out, W,
                n_in, 0.0, rdinp, n_in);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, sw, dout, n_out, VW,
                n_in, 1.0, rdinp, n_in);
  }
}

void td_curv_linear_rbackward(double *rdinp, double *RW, double *Rb, const double *rdout,
                              const double *dout, const double *inp, const double *rin,
                              const double *W, const double *VW, int B, int n_in, int n_out) {
  linear_rbackward(rdinp, RW, Rb, rdout, dout, inp, rin, W, VW, B, n_in, n_out, 1.0, 1.0);
}

/* out[i] = x[i] if inp[i] > 0 else +0.0, 4 lanes at a time with a bit mask (GCC/Clang vector
 * extension; lane-wise it is exactly the scalar expression). */
typedef double v4d __attribute__((vector_size(32)));
typedef long long v4i __attribute__((vector_size(32)));
static void relu_mask(double *out, const double *x, const double *inp, size_t n) {
  size_t i = 0;
  const v4d zero = {0, 0, 0, 0};
  for (; i + 4 <= n; i += 4) {
    v4d a, m, r;
    memcpy(&a, x + i, sizeof a);
    memcpy(&m, inp + i, sizeof m);
    r = (v4d)((v4i)a & (m > zero));
    memcpy(out + i, &r, sizeof r);
  }
  for (; i < n; i++) out[i] = inp[i] > 0.0 ? x[i] : 0.0;
}

void td_curv_relu_jvp(double *rout, const double *rin, const double *inp, size_t n) {
  assert(rout && rin && inp);
  relu_mask(rout, rin, inp, n);
}

void td_curv_relu_rbackward(double *rdinp, const double *rdout, const double *inp, size_t n) {
  assert(rdinp && rdout && inp);
  relu_mask(rdinp, rdout, inp, n);
}

void td_curv_tanh_jvp(double *rout, const double *rin, const double *y, size_t n) {
  assert(rout && rin && y);
  for (size_t i = 0; i < n; i++) rout[i] = rin[i] * (1.0 - y[i] * y[i]);
}

void td_curv_tanh_rbackward(double *rdinp, const double *rdout, const double *dout,
                            const double *y, const double *rout, size_t n) {
  assert(rdinp && rdout && dout && y);
  if (rout)
    for (size_t i = 0; i < n; i++)
      rdinp[i] = rdout[i] * (1.0 - y[i] * y[i]) - 2.0 * dout[i] * y[i] * rout[i];
  else
    for (size_t i = 0; i < n; i++) rdinp[i] = rdout[i] * (1.0 - y[i] * y[i]);
}

/* Normalization tangents. Groups are rows (LayerNorm: one example's features) or columns
 * (BatchNorm in training mode: one feature over the batch); without projection (BatchNorm in
 * eval mode) the map is per-feature affine. Columns are processed in blocks of TD__NB
 * adjacent features whose sums are gathered by a pass over the rows (contiguous access), as
 * in model.c. gamma, Vgamma, Vbeta are per feature. */
#define TD__NB 128

static void norm_jvp(double *rout, double *rxhat, double *rrstd, const double *rin,
                     const double *xhat, const double *rstd, const double *gamma,
                     const double *Vgamma, const double *Vbeta, int B, int n, int per_row,
                     int project) {
  assert(rout && rxhat && rrstd && xhat && rstd && gamma && Vgamma && Vbeta && B >= 1 && n >= 1);
  const size_t N = (size_t)B * n;
  if (!rin) {
    memset(rxhat, 0, N * sizeof *rxhat);
    memset(rrstd, 0, (size_t)(per_row ? B : n) * sizeof *rrstd);
  } else if (!project) { /* batchnorm, eval: rxhat = rin * rstd per feature */
    for (int b = 0; b < B; b++)
      for (int j = 0; j < n; j++) rxhat[(size_t)b * n + j] = rin[(size_t)b * n + j] * rstd[j];
    memset(rrstd, 0, (size_t)n * sizeof *rrstd);
  } else if (per_row) {
    for (int b = 0; b < B; b++) {
      const double *restrict ir = rin + (size_t)b * n, *restrict h = xhat + (size_t)b * n;
      double *restrict rh = rxhat + (size_t)b * n;
      double m = 0.0, a = 0.0;
      for (int j = 0; j < n; j++) {
        m += ir[j];
        a += h[j] * ir[j];
      }
      m /= n;
      a /= n;
      const double r = rstd[b];
      for (int j = 0; j < n; j++) rh[j] = r * (ir[j] - m - h[j] * a);
      rrstd[b] = -r * r * a;
    }
  } else {
    double m[TD__NB], a[TD__NB];
    for (int j0 = 0; j0 < n; j0 += TD__NB) {
      const int w = n - j0 < TD__NB ? n - j0 : TD__NB;
      for (int k = 0; k < w; k++) m[k] = a[k] = 0.0;
      for (int b = 0; b < B; b++) {
        const double *restrict ir = rin + (size_t)b * n + j0, *restrict h = xhat + (size_t)b * n + j0;
        for (int k = 0; k < w; k++) {
          m[k] += ir[k];
          a[k] += h[k] * ir[k];
        }
      }
      for (int k = 0; k < w; k++) {
        m[k] /= B;
        a[k] /= B;
        rrstd[j0 + k] = -rstd[j0 + k] * rstd[j0 + k] * a[k];
      }
      for (int b = 0; b < B; b++) {
        const double *restrict ir = rin + (size_t)b * n + j0, *restrict h = xhat + (size_t)b * n + j0;
        double *restrict rh = rxhat + (size_t)b * n + j0;
        for (int k = 0; k < w; k++) rh[k] = rstd[j0 + k] * (ir[k] - m[k] - h[k] * a[k]);
      }
    }
  }
  for (int b = 0; b < B; b++) {
    const double *restrict h = xhat + (size_t)b * n, *restrict rh = rxhat + (size_t)b * n;
    double *restrict o = rout + (size_t)b * n;
    for (int j = 0; j < n; j++) o[j] = gamma[j] * rh[j] + Vgamma[j] * h[j] + Vbeta[j];
  }
}

/* The five group means of the R-backward: u = dout gamma, ru = rdout gamma + dout Vgamma;
 * s = {mean u, mean xhat u, mean ru, mean xhat ru, mean rxhat u}. */
static void rb_sums(double s[5], const double *d, const double *rd, const double *h,
                    const double *rh, double g, double vg) {
  double u = *d * g, ru = *rd * g + *d * vg;
  s[0] += u;
  s[1] += *h * u;
  s[2] += ru;
  s[3] += *h * ru;
  if (rh) s[4] += *rh * u;
}

/* rdinp entry: rr (u - su - h shu) + r (ru - sru - h shru - rh shu - h srhu). */
static double rb_out(const double s[5], double d, double rd, double h, double rh, double g,
                     double vg, double r, double rr) {
  double u = d * g, ru = rd * g + d * vg;
  return rr * (u - s[0] - h * s[1]) + r * (ru - s[2] - h * s[3] - rh * s[1] - h * s[4]);
}

static void norm_rbackward(double *rdinp, double *Rgamma, double *Rbeta, const double *rdout,
                           const double *dout, const double *xhat, const double *rstd,
                           const double *rxhat, const double *rrstd, const double *gamma,
                           const double *Vgamma, int B, int n, int per_row, int project) {
  assert(Rgamma && Rbeta && rdout && dout && xhat && rstd && gamma && Vgamma && B >= 1 && n >= 1);
  assert(!rxhat == !rrstd);
  memset(Rgamma, 0, (size_t)n * sizeof *Rgamma);
  memset(Rbeta, 0, (size_t)n * sizeof *Rbeta);
  for (int b = 0; b < B; b++) {
    const size_t o = (size_t)b * n;
    for (int j = 0; j < n; j++) {
      Rgamma[j] += rdout[o + j] * xhat[o + j] + (rxhat ? dout[o + j] * rxhat[o + j] : 0.0);
      Rbeta[j] += rdout[o + j];
    }
  }
  if (!rdinp) return;
  if (!project) { /* batchnorm, eval: rdinp = (rdout gamma + dout Vgamma) rstd */
    for (int b = 0; b < B; b++)
      for (int j = 0; j < n; j++) {
        const size_t e = (size_t)b * n + j;
        rdinp[e] = (rdout[e] * gamma[j] + dout[e] * Vgamma[j]) * rstd[j];
      }
    return;
  }
  if (per_row) {
    for (int b = 0; b < B; b++) {
      const size_t o = (size_t)b * n;
      double s[5] = {0, 0, 0, 0, 0};
      for (int j = 0; j < n; j++)
        rb_sums(s, dout + o + j, rdout + o + j, xhat + o + j, rxhat ? rxhat + o + j : NULL,
                gamma[j], Vgamma[j]);
      for (int k = 0; k < 5; k++) s[k] /= n;
      const double r = rstd[b], rr = rrstd ? rrstd[b] : 0.0;
      for (int j = 0; j < n; j++)
        rdinp[o + j] = rb_out(s, dout[o + j], rdout[o + j], xhat[o + j],
                              rxhat ? rxhat[o + j] : 0.0, gamma[j], Vgamma[j], r, rr);
    }
    return;
  }
  double s[TD__NB][5];
  for (int j0 = 0; j0 < n; j0 += TD__NB) {
    const int w = n - j0 < TD__NB ? n - j0 : TD__NB;
    memset(s, 0, sizeof s);
    for (int b = 0; b < B; b++) {
      const size_t o = (size_t)b * n + j0;
      for (int k = 0; k < w; k++)
        rb_sums(s[k], dout + o + k, rdout + o + k, xhat + o + k, rxhat ? rxhat + o + k : NULL,
                gamma[j0 + k], Vgamma[j0 + k]);
    }
    for (int k = 0; k < w; k++)
      for (int q = 0; q < 5; q++) s[k][q] /= B;
    for (int b = 0; b < B; b++) {
      const size_t o = (size_t)b * n + j0;
      for (int k = 0; k < w; k++)
        rdinp[o + k] = rb_out(s[k], dout[o + k], rdout[o + k], xhat[o + k],
                              rxhat ? rxhat[o + k] : 0.0, gamma[j0 + k], Vgamma[j0 + k],
                              rstd[j0 + k], rrstd ? rrstd[j0 + k] : 0.0);
    }
  }
}

void td_curv_layernorm_jvp(double *rout, double *rxhat, double *rrstd, const double *rin,
                           const double *xhat, const double *rstd, const double *gamma,
                           const double *Vgamma, const double *Vbeta, int B, int n) {
  norm_jvp(rout, rxhat, rrstd, rin, xhat, rstd, gamma, Vgamma, Vbeta, B, n, 1, 1);
}

void td_curv_batchnorm_jvp(double *rout, double *rxhat, double *rrstd, const double *rin,
                           const double *xhat, const double *rstd, const double *gamma,
                           const double *Vgamma, const double *Vbeta, int B, int n,
                           int training) {
  norm_jvp(rout, rxhat, rrstd, rin, xhat, rstd, gamma, Vgamma, Vbeta, B, n, 0, training);
}

void td_curv_layernorm_rbackward(double *rdinp, double *Rgamma, double *Rbeta,
                                 const double *rdout, const double *dout, const double *xhat,
                                 const double *rstd, const double *rxhat, const double *rrstd,
                                 const double *gamma, const double *Vgamma, int B, int n) {
  norm_rbackward(rdinp, Rgamma, Rbeta, rdout, dout, xhat, rstd, rxhat, rrstd, gamma, Vgamma, B,
                 n, 1, 1);
}

void td_curv_batchnorm_rbackward(double *rdinp, double *Rgamma, double *Rbeta,
                                 const double *rdout, const double *dout, const double *xhat,
                                 const double *rstd, const double *rxhat, const double *rrstd,
                                 const double *gamma, const double *Vgamma, int B, int n,
                                 int training) {
  norm_rbackward(rdinp, Rgamma, Rbeta, rdout, dout, xhat, rstd, rxhat, rrstd, gamma, Vgamma, B,
                 n, 0, training);
}

static int is_norm(const td_layer *L) {
  return L->kind == TD_LAYER_LAYERNORM || L->kind == TD_LAYER_BATCHNORM;
}

/* Does the normalization of layer L project (couple) over its group in mode `mode`? */
static int norm_projects(const td_layer *L, td_mlp_mode mode) {
  return L->kind == TD_LAYER_LAYERNORM || mode == TD_MLP_TRAIN;
}

/* ---- context ------------------------------------------------------------------------------ */

/* Index of the first layer with parameters: act[i] has a non-zero tangent (and needs a
 * backpropagated delta) only for i > first_param_layer. */
static int first_param_layer(const td_mlp *m) {
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].n_params > 0) return i;
  return m->n_layers;
}

int td_curv_estimate(const td_mlp_cfg *cfg, int cap, double *bytes, td_err *err) {
  if (cap < 1) return td_err_set(err, TD_EINVAL, NULL, "curv: batch must be >= 1");
  double np = 0, ws = 0;
  int rc = td_mlp_estimate(cfg, cap, &np, &ws, err);
  if (rc) return rc;
  double widths = 0, rnorm = 0;
  for (int i = 0; i <= cfg->n_hidden; i++) {
    double w = i < cfg->n_hidden ? cfg->hidden[i] : cfg->out_dim;
    widths += w * (i < cfg->n_hidden && cfg->act != TD_ACT_LINEAR ? 2 : 1);
    if (i < cfg->n_hidden && cfg->norm != TD_NORM_NONE) {
      widths += w;
      rnorm += (double)cap * w + (cap > w ? cap : w);
    }
  }
  *bytes = ws + 8.0 * (3.0 * cap * widths + rnorm + 2.0 * cap * cfg->out_dim + 3.0 * np);
  return 0;
}

/* R{xhat} (cap x n) then R{rstd} (cap or n) of a norm layer. */
static size_t rnorm_size(const td_layer *L, int cap) {
  size_t n = (size_t)L->n_out, cp = (size_t)cap;
  return cp * n + (cp > n ? cp : n);
}

int td_curv_init(td_curv_ctx *c, const td_mlp *m, int cap, td_err *err) {
  memset(c, 0, sizeof *c);
  if (!m || cap < 1) return td_err_set(err, TD_EINVAL, NULL, "curv: bad model or batch cap");
  int rc = td_mlp_ws_init(&c->ws, m, cap, err);
  if (rc) return rc;
  const int K = m->cfg.out_dim;
  size_t total = 2 * (size_t)cap * K + 16;
  for (int i = 0; i < m->n_layers; i++) {
    total += 3 * ((size_t)cap * m->layers[i].n_out + 8);
    if (is_norm(&m->layers[i])) total += rnorm_size(&m->layers[i], cap) + 8;
  }
  c->mem = aligned_alloc(64, (total * sizeof(double) + 63) / 64 * 64);
  c->theta = malloc(m->n_params * sizeof *c->theta);
  c->grad = malloc(m->n_params * sizeof *c->grad);
  if (!c->mem || !c->theta || !c->grad) {
    td_curv_deinit(c);
    return td_err_set(err, TD_ENOMEM, NULL, "curv: out of memory (batch cap %d)", cap);
  }
  size_t off = 0;
  for (int i = 0; i < m->n_layers; i++) {
    size_t sz = ((size_t)cap * m->layers[i].n_out + 7) / 8 * 8;
    c->delta[i + 1] = c->mem + off;
    off += sz;
    c->ract[i + 1] = c->mem + off;
    off += sz;
    c->rdelta[i + 1] = c->mem + off;
    off += sz;
    if (is_norm(&m->layers[i])) {
      c->rnorm[i] = c->mem + off;
      off += (rnorm_size(&m->layers[i], cap) + 7) / 8 * 8;
    }
  }
  c->prob = c->mem + off;
  off += ((size_t)cap * K + 7) / 8 * 8;
  c->rgrad = c->mem + off;
  off += ((size_t)cap * K + 7) / 8 * 8;
  assert(off <= total);
  c->m = m;
  c->cap = cap;
  return 0;
}

void td_curv_deinit(td_curv_ctx *c) {
  if (!c) return;
  td_mlp_ws_deinit(&c->ws);
  free(c->mem);
  free(c->theta);
  free(c->grad);
  memset(c, 0, sizeof *c);
}

int td_curv_set_batch(td_curv_ctx *c, const double *X, const int *y, const double *Y, int B,
                      td_curv_loss loss, td_err *err) {
  c->have_point = c->have_grad = 0;
  if (!c->m || !X || B < 1 || B > c->cap)
    return td_err_set(err, TD_EINVAL, NULL, "curv: batch of %d examples (cap %d)", B, c->cap);
  if (loss != TD_CURV_XENT && loss != TD_CURV_MSE)
    return td_err_set(err, TD_EINVAL, NULL, "curv: unknown loss");
  if (loss == TD_CURV_XENT && !y)
    return td_err_set(err, TD_EINVAL, NULL, "curv: cross-entropy needs labels");
  if (!y && !Y) return td_err_set(err, TD_EINVAL, NULL, "curv: no labels or targets");
  const int K = c->m->cfg.out_dim;
  if (y && !(loss == TD_CURV_MSE && Y))
    for (int i = 0; i < B; i++)
      if (y[i] < 0 || y[i] >= K)
        return td_err_set(err, TD_EINVAL, NULL, "curv: label %d of example %d not in [0, %d)",
                          y[i], i, K);
  c->X = X;
  c->y = y;
  c->Y = loss == TD_CURV_MSE ? Y : NULL;
  c->B = B;
  c->loss = loss;
  return 0;
}

void td_curv_set_mode(td_curv_ctx *c, td_mlp_mode mode) {
  c->have_point = c->have_grad = 0;
  td_mlp_ws_set_mode(&c->ws, mode, 0);
}

int td_curv_set_point(td_curv_ctx *c, const double *params, td_err *err) {
  return td_curv_set_point_act1(c, params, NULL, err);
}

int td_curv_set_point_act1(td_curv_ctx *c, const double *params, const double *act1,
                           td_err *err) {
  c->have_point = c->have_grad = 0;
  if (!c->m || !c->X || !params) return td_err_set(err, TD_EINVAL, NULL, "curv: no batch bound");
  const td_mlp *m = c->m;
  const int B = c->B, K = m->cfg.out_dim, L = m->n_layers;
  memcpy(c->theta, params, m->n_params * sizeof *c->theta);
  if (act1 && L > 1)
    memcpy(c->ws.act[1], act1, (size_t)B * m->layers[0].n_out * sizeof *act1);
  const double *z = td_mlp_forward_from(m, &c->ws, c->theta, c->X, B, act1 && L > 1 ? 1 : 0);
  double *dz = c->delta[L];
  const size_t n = (size_t)B * K;
  if (c->loss == TD_CURV_XENT) {
    td_loss_xent(&c->loss_value, dz, z, c->y, B, K);
    td_softmax_rows(c->prob, z, B, K);
    memcpy(c->rgrad, c->prob, n * sizeof *c->rgrad);
    for (int i = 0; i < B; i++) c->rgrad[(size_t)i * K + c->y[i]] -= 1.0;
  } else {
    if (c->Y) td_loss_mse(&c->loss_value, dz, z, c->Y, B, K);
    else td_loss_mse_onehot(&c->loss_value, dz, z, c->y, B, K);
    for (size_t j = 0; j < n; j++) c->rgrad[j] = z[j] - (c->Y ? c->Y[j] : 0.0);
    if (!c->Y)
      for (int i = 0; i < B; i++) c->rgrad[(size_t)i * K + c->y[i]] -= 1.0;
  }
  c->have_point = 1;
  if (!isfinite(c->loss_value))
    return td_err_set(err, TD_ERANGE, NULL, "curv: the loss is not finite (%g)", c->loss_value);
  return 0;
}

/* Backward pass from the output cotangent `top` (B x K) through the cached forward pass:
 * bufs[i] (i > first param layer) receives d/d act[i]; grad (may be NULL) receives the
 * parameter gradient (written). */
static void bwd(td_curv_ctx *c, const double *top, double **bufs, double *grad) {
  const td_mlp *m = c->m;
  const int B = c->B, first = first_param_layer(m);
  const double *d = top;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    const td_layer *Ly = &m->layers[i];
    double *dinp = i > first ? bufs[i] : NULL;
    const size_t n = (size_t)B * Ly->n_out;
    switch (Ly->kind) {
    case TD_LAYER_LINEAR: {
      const double *W = c->theta + Ly->off;
      if (grad) {
        double *dW = grad + Ly->off;
        /* dW = d^T act: d stored (B x n_out), Trans -> (n_out x B); act (B x n_in). */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Ly->n_out, Ly->n_in, B, Ly->w_mult,
                    d, Ly->n_out, c->ws.act[i], Ly->n_in, 0.0, dW, Ly->n_in);
        colsum_s(dW + (size_t)Ly->n_in * Ly->n_out, d, B, Ly->n_out, Ly->b_mult);
      }
      /* dinp = d W: (B x n_out) times W (n_out x n_in), both NoTrans. */
      if (dinp)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, Ly->n_in, Ly->n_out, Ly->w_mult,
                    d, Ly->n_out, W, Ly->n_in, 0.0, dinp, Ly->n_in);
      break;
    }
    case TD_LAYER_RELU:
      if (dinp) td_curv_relu_rbackward(dinp, d, c->ws.act[i], n); /* same map as backward */
      break;
    case TD_LAYER_TANH: /* with no output tangent, rbackward is the plain backward map */
      if (dinp) td_curv_tanh_rbackward(dinp, d, d, c->ws.act[i + 1], NULL, n);
      break;
    case TD_LAYER_LAYERNORM:
    case TD_LAYER_BATCHNORM: {
      /* the model's kernels accumulate: zero what they add into first */
      const double *g = c->theta + Ly->off, *xh = c->ws.aux[i];
      const double *rs = xh + (size_t)c->ws.cap * Ly->n_out;
      double *dg = grad ? grad + Ly->off : NULL;
      if (dg) memset(dg, 0, Ly->n_params * sizeof *dg);
      if (dinp) memset(dinp, 0, n * sizeof *dinp);
      if (Ly->kind == TD_LAYER_LAYERNORM)
        td_layernorm_backward(dinp, dg, dg ? dg + Ly->n_out : NULL, d, xh, rs, g, B, Ly->n_out);
      else
        td_batchnorm_backward(dinp, dg, dg ? dg + Ly->n_out : NULL, d, xh, rs, g, B, Ly->n_out,
                              c->ws.mode == TD_MLP_TRAIN);
      break;
    }
    }
    if (!dinp) break; /* nothing below needs a delta */
    d = dinp;
  }
}

const double *td_curv_grad(td_curv_ctx *c) {
  assert(c->have_point);
  if (!c->have_grad) {
    bwd(c, c->delta[c->m->n_layers], c->delta, c->grad);
    c->have_grad = 1;
  }
  return c->grad;
}

/* Forward tangent pass along v: c->ract[i+1] = R{act[i+1]} for every layer. */
static void rfwd(td_curv_ctx *c, const double *v) {
  const td_mlp *m = c->m;
  const int B = c->B;
  const double *rin = NULL; /* the input X has no tangent */
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *Ly = &m->layers[i];
    double *rout = c->ract[i + 1];
    const size_t n = (size_t)B * Ly->n_out;
    switch (Ly->kind) {
    case TD_LAYER_LINEAR: {
      const double *W = c->theta + Ly->off, *VW = v + Ly->off;
      linear_jvp(rout, rin, c->ws.act[i], W, VW, VW + (size_t)Ly->n_in * Ly->n_out, B, Ly->n_in,
                 Ly->n_out, Ly->w_mult, Ly->b_mult);
      break;
    }
    case TD_LAYER_RELU:
      if (rin) td_curv_relu_jvp(rout, rin, c->ws.act[i], n);
      break;
    case TD_LAYER_TANH:
      if (rin) td_curv_tanh_jvp(rout, rin, c->ws.act[i + 1], n);
      break;
    case TD_LAYER_LAYERNORM:
    case TD_LAYER_BATCHNORM: {
      const double *g = c->theta + Ly->off, *Vg = v + Ly->off, *xh = c->ws.aux[i];
      const double *rs = xh + (size_t)c->ws.cap * Ly->n_out;
      double *rxh = c->rnorm[i], *rrs = rxh + (size_t)c->cap * Ly->n_out;
      norm_jvp(rout, rxh, rrs, rin, xh, rs, g, Vg, Vg + Ly->n_out, B, Ly->n_out,
               Ly->kind == TD_LAYER_LAYERNORM, norm_projects(Ly, c->ws.mode));
      break;
    }
    }
    if (rin || Ly->n_params) rin = rout;
  }
  assert(rin); /* a model has at least one linear layer */
}

void td_curv_loss_hvp(const td_curv_ctx *c, const double *u, double *out) {
  assert(c->have_point && u && out);
  const int B = c->B, K = c->m->cfg.out_dim;
  const double invB = 1.0 / B;
  if (c->loss == TD_CURV_XENT) {
    for (int i = 0; i < B; i++) {
      const double *p = c->prob + (size_t)i * K, *ui = u + (size_t)i * K;
      double *oi = out + (size_t)i * K;
      double pu = 0.0;
      for (int k = 0; k < K; k++) pu += p[k] * ui[k];
      for (int k = 0; k < K; k++) oi[k] = p[k] * (ui[k] - pu) * invB;
    }
  } else {
    const size_t n = (size_t)B * K;
    for (size_t j = 0; j < n; j++) out[j] = u[j] * invB;
  }
}

void td_curv_jvp(td_curv_ctx *c, const double *v, double *jv) {
  assert(c->have_point && v && jv);
  rfwd(c, v);
  memcpy(jv, c->ract[c->m->n_layers], (size_t)c->B * c->m->cfg.out_dim * sizeof *jv);
  c->n_products++;
}

void td_curv_vjp(td_curv_ctx *c, const double *u, double *out) {
  assert(c->have_point && u && out);
  bwd(c, u, c->rdelta, out);
  c->n_products++;
}

void td_curv_ggn_vp(td_curv_ctx *c, const double *v, double *out) {
  assert(c->have_point && v && out && v != out);
  const int L = c->m->n_layers;
  rfwd(c, v);
  td_curv_loss_hvp(c, c->ract[L], c->rdelta[L]);
  bwd(c, c->rdelta[L], c->rdelta, out);
  c->n_products++;
}

void td_curv_fisher_vp(td_curv_ctx *c, td_curv_fisher kind, const double *v, double *out) {
  if (kind == TD_CURV_FISHER_TRUE) {
    td_curv_ggn_vp(c, v, out);
    return;
  }
  assert(c->have_point && v && out && v != out);
  const int L = c->m->n_layers, B = c->B, K = c->m->cfg.out_dim;
  rfwd(c, v);
  const double *jv = c->ract[L];
  double *u = c->rdelta[L];
  for (int i = 0; i < B; i++) {
    const double *r = c->rgrad + (size_t)i * K, *ji = jv + (size_t)i * K;
    double s = 0.0;
    for (int k = 0; k < K; k++) s += r[k] * ji[k];
    s /= B;
    for (int k = 0; k < K; k++) u[(size_t)i * K + k] = r[k] * s;
  }
  bwd(c, u, c->rdelta, out);
  c->n_products++;
}

void td_curv_hvp(td_curv_ctx *c, const double *v, double *out) {
  assert(c->have_point && v && out && v != out);
  const td_mlp *m = c->m;
  const int B = c->B, L = m->n_layers, first = first_param_layer(m);
  td_curv_grad(c); /* the delta cache */
  rfwd(c, v);
  /* R{dL/dz} = H_out R{z}: the loss gradient's tangent (p - e)/B -> R{p}/B, or R{f}/B. */
  td_curv_loss_hvp(c, c->ract[L], c->rdelta[L]);
  const double *rd = c->rdelta[L];
  for (int i = L - 1; i >= 0; i--) {
    const td_layer *Ly = &m->layers[i];
    double *rdinp = i > first ? c->rdelta[i] : NULL;
    const double *rin = i > first ? c->ract[i] : NULL;
    const size_t n = (size_t)B * Ly->n_out;
    switch (Ly->kind) {
    case TD_LAYER_LINEAR: {
      const double *W = c->theta + Ly->off, *VW = v + Ly->off;
      double *RW = out + Ly->off;
      linear_rbackward(rdinp, RW, RW + (size_t)Ly->n_in * Ly->n_out, rd, c->delta[i + 1],
                       c->ws.act[i], rin, W, VW, B, Ly->n_in, Ly->n_out, Ly->w_mult, Ly->b_mult);
      break;
    }
    case TD_LAYER_RELU:
      if (rdinp) td_curv_relu_rbackward(rdinp, rd, c->ws.act[i], n);
      break;
    case TD_LAYER_TANH:
      if (rdinp)
        td_curv_tanh_rbackward(rdinp, rd, c->delta[i + 1], c->ws.act[i + 1], c->ract[i + 1], n);
      break;
    case TD_LAYER_LAYERNORM:
    case TD_LAYER_BATCHNORM: {
      const double *g = c->theta + Ly->off, *Vg = v + Ly->off, *xh = c->ws.aux[i];
      const double *rs = xh + (size_t)c->ws.cap * Ly->n_out;
      const double *rxh = c->rnorm[i], *rrs = rxh + (size_t)c->cap * Ly->n_out;
      double *Rg = out + Ly->off;
      norm_rbackward(rdinp, Rg, Rg + Ly->n_out, rd, c->delta[i + 1], xh, rs, rxh, rrs, g, Vg, B,
                     Ly->n_out, Ly->kind == TD_LAYER_LAYERNORM, norm_projects(Ly, c->ws.mode));
      break;
    }
    }
    if (!rdinp) break;
    rd = rdinp;
  }
  c->n_products++;
}

void td_curv_per_example_vjp(td_curv_ctx *c, const double *u, double *G) {
  assert(c->have_point && u && G);
  const td_mlp *m = c->m;
  const int B = c->B, L = m->n_layers;
  const size_t np = m->n_params;
  if (!td_curv_per_example_supported(c)) {
    for (size_t k = 0; k < (size_t)B * np; k++) G[k] = NAN;
    c->n_products++;
    return;
  }
  bwd(c, u, c->rdelta, NULL);
  for (int i = 0; i < L; i++) {
    const td_layer *Ly = &m->layers[i];
    if (is_norm(Ly)) { /* gamma row: d_i * xhat_i; beta row: d_i (never the last layer) */
      const double *d = c->rdelta[i + 1], *xh = c->ws.aux[i];
      const int w = Ly->n_out;
      for (int r = 0; r < B; r++) {
        double *gg = G + (size_t)r * np + Ly->off;
        const double *dr = d + (size_t)r * w, *hr = xh + (size_t)r * w;
        for (int k = 0; k < w; k++) gg[k] = dr[k] * hr[k];
        memcpy(gg + w, dr, (size_t)w * sizeof *dr);
      }
      continue;
    }
    if (Ly->kind != TD_LAYER_LINEAR) continue;
    const double *d = i + 1 == L ? u : c->rdelta[i + 1];
    const double *a = c->ws.act[i];
    for (int r = 0; r < B; r++) {
      const double *dr = d + (size_t)r * Ly->n_out, *ar = a + (size_t)r * Ly->n_in;
      double *gW = G + (size_t)r * np + Ly->off;
      for (int o = 0; o < Ly->n_out; o++) {
        double *row = gW + (size_t)o * Ly->n_in;
        const double s = Ly->w_mult == 1.0 ? dr[o] : Ly->w_mult * dr[o];
        for (int k = 0; k < Ly->n_in; k++) row[k] = s * ar[k];
      }
      if (Ly->b_mult == 1.0)
        memcpy(gW + (size_t)Ly->n_in * Ly->n_out, dr, (size_t)Ly->n_out * sizeof *dr);
      else
        for (int o = 0; o < Ly->n_out; o++)
          gW[(size_t)Ly->n_in * Ly->n_out + o] = Ly->b_mult * dr[o];
    }
  }
  c->n_products++;
}

int td_curv_per_example_supported(const td_curv_ctx *c) {
  if (c->ws.mode != TD_MLP_TRAIN) return 1;
  for (int i = 0; i < c->m->n_layers; i++)
    if (c->m->layers[i].kind == TD_LAYER_BATCHNORM) return 0;
  return 1;
}

void td_curv_per_example_grads(td_curv_ctx *c, double *G) {
  td_curv_per_example_vjp(c, c->rgrad, G);
}

void td_curv_hvp_matvec(void *ctx, const double *v, double *out, size_t n) {
  td_curv_ctx *c = ctx;
  assert(n == c->m->n_params);
  (void)n;
  td_curv_hvp(c, v, out);
}

void td_curv_ggn_matvec(void *ctx, const double *v, double *out, size_t n) {
  td_curv_ctx *c = ctx;
  assert(n == c->m->n_params);
  (void)n;
  td_curv_ggn_vp(c, v, out);
}

void td_curv_fisher_true_matvec(void *ctx, const double *v, double *out, size_t n) {
  td_curv_ctx *c = ctx;
  assert(n == c->m->n_params);
  (void)n;
  td_curv_fisher_vp(c, TD_CURV_FISHER_TRUE, v, out);
}

void td_curv_fisher_emp_matvec(void *ctx, const double *v, double *out, size_t n) {
  td_curv_ctx *c = ctx;
  assert(n == c->m->n_params);
  (void)n;
  td_curv_fisher_vp(c, TD_CURV_FISHER_EMPIRICAL, v, out);
}
