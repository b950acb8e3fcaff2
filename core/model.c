/* model.c: the MLP: layer kernels, one flat parameter vector, exact forward/backward.
 *
 * DESIGN. llm.c-style: a model is a list of td_layer records (kind, widths, offset into the
 * flat vector). Parameters and gradients are single allocations; the workspace holds every
 * layer's input and output for one maximum batch size, allocated once, so a training step
 * performs no allocation. Kernels come in forward/backward pairs; the public backward
 * kernels accumulate (+=), and the model's backward uses overwrite variants internally
 * (BLAS beta = 0) to skip zeroing gradients and activation gradients each step. The input
 * layer never computes dL/dX. A later JVP/HVP adds tangent buffers next to act/dact. */
#include "model.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

#define TD__MAX_DIM 10000000

/* The elementwise loops below are unrolled by 4 with restrict pointers: -O2 (GCC 12's
 * "very cheap" vectorizer, and Clang) then emits packed AVX2 code for them, while a plain
 * loop with a runtime trip count stays scalar. Every lane does the same IEEE operations as
 * the scalar formula, so the results do not depend on the unrolling. */

/* ---- kernels ---------------------------------------------------------------------------- */

void td_linear_forward(double *out, const double *inp, const double *W, const double *b, int B,
                       int n_in, int n_out) {
  /* out: (B, n_out); inp: (B, n_in); W: (n_out, n_in); b: (n_out) */
  assert(out && inp && W && b && B >= 1 && n_in >= 1 && n_out >= 1);
  for (int r = 0; r < B; r++) memcpy(out + (size_t)r * n_out, b, (size_t)n_out * sizeof *b);
  /* out += inp W^T: A = inp as stored (B x n_in, NoTrans), B = W stored (n_out x n_in), so
   * Trans gives the (n_in x n_out) factor; beta = 1 keeps the bias rows. */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, 1.0, inp, n_in, W, n_in,
              1.0, out, n_out);
}

/* acc_p: accumulate into dW/db (else overwrite); acc_i: the same for dinp. */
static void linear_backward(double *dinp, double *dW, double *db, const double *dout,
                            const double *inp, const double *W, int B, int n_in, int n_out,
                            int acc_p, int acc_i) {
  /* dinp: (B, n_in) or NULL; dW: (n_out, n_in); db: (n_out); dout: (B, n_out) */
  assert(dW && db && dout && inp && W && B >= 1 && n_in >= 1 && n_out >= 1);
  /* dW = dout^T inp: dout stored (B x n_out) -> Trans gives (n_out x B); inp (B x n_in)
   * NoTrans. Result (n_out x n_in) matches W's layout. */
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, 1.0, dout, n_out, inp,
              n_in, acc_p ? 1.0 : 0.0, dW, n_in);
  if (!acc_p) memset(db, 0, (size_t)n_out * sizeof *db);
  const int o4 = n_out & ~3;
  for (int r = 0; r < B; r++) {
    const double *restrict g = dout + (size_t)r * n_out;
    double *restrict acc = db;
    int o = 0;
    for (; o < o4; o += 4) {
      acc[o] += g[o];
      acc[o + 1] += g[o + 1];
      acc[o + 2] += g[o + 2];
      acc[o + 3] += g[o + 3];
    }
    for (; o < n_out; o++) acc[o] += g[o];
  }
  if (dinp) {
    /* dinp = dout W: dout (B x n_out) NoTrans, W (n_out x n_in) NoTrans. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, 1.0, dout, n_out, W,
                n_in, acc_i ? 1.0 : 0.0, dinp, n_in);
  }
}

void td_linear_backward(double *dinp, double *dW, double *db, const double *dout,
                        const double *inp, const double *W, int B, int n_in, int n_out) {
  linear_backward(dinp, dW, db, dout, inp, W, B, n_in, n_out, 1, 1);
}

void td_relu_forward(double *restrict out, const double *restrict inp, size_t n) {
  size_t i = 0, n4 = n & ~(size_t)3;
  for (; i < n4; i += 4) {
    out[i] = inp[i] > 0.0 ? inp[i] : 0.0;
    out[i + 1] = inp[i + 1] > 0.0 ? inp[i + 1] : 0.0;
    out[i + 2] = inp[i + 2] > 0.0 ? inp[i + 2] : 0.0;
    out[i + 3] = inp[i + 3] > 0.0 ? inp[i + 3] : 0.0;
  }
  for (; i < n; i++) out[i] = inp[i] > 0.0 ? inp[i] : 0.0;
}

static void relu_backward(double *restrict dinp, const double *restrict dout,
                          const double *restrict inp, size_t n, int acc) {
  size_t i = 0, n4 = n & ~(size_t)3;
  if (acc) {
    for (; i < n; i++) dinp[i] += inp[i] > 0.0 ? dout[i] : 0.0;
    return;
  }
  for (; i < n4; i += 4) {
    /* unconditional loads make the selects branch-free (blend) */
    double d0 = dout[i], d1 = dout[i + 1], d2 = dout[i + 2], d3 = dout[i + 3];
    dinp[i] = inp[i] > 0.0 ? d0 : 0.0;
    dinp[i + 1] = inp[i + 1] > 0.0 ? d1 : 0.0;
    dinp[i + 2] = inp[i + 2] > 0.0 ? d2 : 0.0;
    dinp[i + 3] = inp[i + 3] > 0.0 ? d3 : 0.0;
  }
  for (; i < n; i++) dinp[i] = inp[i] > 0.0 ? dout[i] : 0.0;
}

void td_relu_backward(double *dinp, const double *dout, const double *inp, size_t n) {
  relu_backward(dinp, dout, inp, n, 1);
}

void td_tanh_forward(double *out, const double *inp, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = tanh(inp[i]);
}

static void tanh_backward(double *dinp, const double *dout, const double *out, size_t n,
                          int acc) {
  if (acc)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * (1.0 - out[i] * out[i]);
  else
    for (size_t i = 0; i < n; i++) dinp[i] = dout[i] * (1.0 - out[i] * out[i]);
}

void td_tanh_backward(double *dinp, const double *dout, const double *out, size_t n) {
  tanh_backward(dinp, dout, out, n, 1);
}

/* ---- model ------------------------------------------------------------------------------ */

int td_mlp_act_parse(const char *name, td_act *out) {
  if (!name) return TD_EINVAL;
  if (strcmp(name, "relu") == 0) *out = TD_ACT_RELU;
  else if (strcmp(name, "tanh") == 0) *out = TD_ACT_TANH;
  else if (strcmp(name, "linear") == 0) *out = TD_ACT_LINEAR;
  else return TD_EINVAL;
  return 0;
}

static int cfg_check(const td_mlp_cfg *c, td_err *err) {
  if (!c) return td_err_set(err, TD_EINVAL, NULL, "mlp: no config");
  if (c->in_dim < 1 || c->in_dim > TD__MAX_DIM || c->out_dim < 1 || c->out_dim > TD__MAX_DIM)
    return td_err_set(err, TD_EINVAL, NULL, "mlp: in_dim/out_dim must be in 1..%d",
                      TD__MAX_DIM);
  if (c->n_hidden < 0 || c->n_hidden > TD_MLP_MAX_HIDDEN)
    return td_err_set(err, TD_EINVAL, "params.model.hidden", "mlp: at most %d hidden layers",
                      TD_MLP_MAX_HIDDEN);
  for (int i = 0; i < c->n_hidden; i++)
    if (c->hidden[i] < 1 || c->hidden[i] > TD__MAX_DIM)
      return td_err_set(err, TD_EINVAL, "params.model.hidden", "mlp: hidden width %d out of 1..%d",
                        c->hidden[i], TD__MAX_DIM);
  if (c->act != TD_ACT_RELU && c->act != TD_ACT_TANH && c->act != TD_ACT_LINEAR)
    return td_err_set(err, TD_EINVAL, "params.model.activation", "mlp: unknown activation");
  if (!(c->init_scale >= 0) || !isfinite(c->init_scale))
    return td_err_set(err, TD_EINVAL, "params.model.init_scale", "mlp: bad init_scale");
  return 0;
}

int td_mlp_estimate(const td_mlp_cfg *cfg, int cap, double *n_params, double *ws_bytes,
                    td_err *err) {
  int rc = cfg_check(cfg, err);
  if (rc) return rc;
  double np = 0, widths = 0;
  double prev = cfg->in_dim;
  for (int i = 0; i <= cfg->n_hidden; i++) {
    double w = i < cfg->n_hidden ? cfg->hidden[i] : cfg->out_dim;
    np += prev * w + w;
    widths += w * (i < cfg->n_hidden && cfg->act != TD_ACT_LINEAR ? 2 : 1);
    prev = w;
  }
  *n_params = np;
  *ws_bytes = 2.0 * (cap > 0 ? cap : 1) * widths * sizeof(double);
  return 0;
}

int td_mlp_create(const td_mlp_cfg *cfg, td_mlp **out, td_err *err) {
  *out = NULL;
  int rc = cfg_check(cfg, err);
  if (rc) return rc;
  td_mlp *m = calloc(1, sizeof *m);
  if (!m) return td_err_set(err, TD_ENOMEM, NULL, "mlp: out of memory");
  m->cfg = *cfg;
  size_t off = 0;
  int prev = cfg->in_dim, maxw = cfg->in_dim;
  for (int i = 0; i <= cfg->n_hidden; i++) {
    int w = i < cfg->n_hidden ? cfg->hidden[i] : cfg->out_dim;
    if ((double)prev * w > 2147483647.0) {
      free(m);
      return td_err_set(err, TD_ELIMIT, "params.model.hidden",
                        "mlp: layer %d has %.3g weights (at most 2^31)", i, (double)prev * w);
    }
    td_layer *L = &m->layers[m->n_layers++];
    L->kind = TD_LAYER_LINEAR;
    L->n_in = prev;
    L->n_out = w;
    L->off = off;
    L->n_params = (size_t)prev * w + (size_t)w;
    L->index = m->n_linear++;
    off += L->n_params;
    if (i < cfg->n_hidden && cfg->act != TD_ACT_LINEAR) {
      td_layer *A = &m->layers[m->n_layers++];
      A->kind = cfg->act == TD_ACT_RELU ? TD_LAYER_RELU : TD_LAYER_TANH;
      A->n_in = A->n_out = w;
      A->off = off;
      A->n_params = 0;
      A->index = -1;
    }
    if (w > maxw) maxw = w;
    prev = w;
  }
  m->n_params = off;
  m->max_width = maxw;
  m->params = calloc(off, sizeof *m->params);
  m->grad = calloc(off, sizeof *m->grad);
  if (!m->params || !m->grad) {
    td_mlp_destroy(m);
    return td_err_set(err, TD_ENOMEM, NULL, "mlp: out of memory for %zu parameters", off);
  }
  *out = m;
  return 0;
}

void td_mlp_destroy(td_mlp *m) {
  if (!m) return;
  free(m->params);
  free(m->grad);
  free(m);
}

void td_mlp_init(td_mlp *m, uint64_t seed) {
  td_rng r;
  td_rng_init(&r, seed, TD_RNG_INIT);
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (L->kind != TD_LAYER_LINEAR) continue;
    int next_relu = i + 1 < m->n_layers && m->layers[i + 1].kind == TD_LAYER_RELU;
    double gain = next_relu ? 2.0 : 1.0;
    double std = m->cfg.init_scale * sqrt(gain / L->n_in);
    double *W = m->params + L->off;
    td_rng_fill_normal(&r, W, (size_t)L->n_in * L->n_out, std);
    memset(W + (size_t)L->n_in * L->n_out, 0, (size_t)L->n_out * sizeof *W);
  }
}

const td_layer *td_mlp_linear(const td_mlp *m, int j, double *vec, double **W, double **b) {
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (L->kind == TD_LAYER_LINEAR && L->index == j) {
      if (W) *W = vec + L->off;
      if (b) *b = vec + L->off + (size_t)L->n_in * L->n_out;
      return L;
    }
  }
  return NULL;
}

int td_mlp_ws_init(td_mlp_ws *ws, const td_mlp *m, int cap, td_err *err) {
  memset(ws, 0, sizeof *ws);
  if (cap < 1) return td_err_set(err, TD_EINVAL, NULL, "mlp workspace: batch must be >= 1");
  size_t total = 0;
  for (int i = 0; i < m->n_layers; i++) total += 2 * (size_t)cap * m->layers[i].n_out;
  /* 64-byte alignment for each buffer helps the BLAS and the vectorized loops. */
  total += 16 * (size_t)(m->n_layers + 1);
  double *mem = aligned_alloc(64, ((total * sizeof(double)) + 63) / 64 * 64);
  if (!mem) return td_err_set(err, TD_ENOMEM, NULL, "mlp workspace: out of memory");
  size_t off = 0;
  for (int i = 0; i < m->n_layers; i++) {
    size_t sz = (size_t)cap * m->layers[i].n_out;
    ws->act[i + 1] = mem + off;
    off += (sz + 7) / 8 * 8;
    ws->dact[i + 1] = mem + off;
    off += (sz + 7) / 8 * 8;
  }
  assert(off <= total);
  ws->mem = mem;
  ws->cap = cap;
  ws->n_layers = m->n_layers;
  return 0;
}

void td_mlp_ws_deinit(td_mlp_ws *ws) {
  if (!ws) return;
  free(ws->mem);
  memset(ws, 0, sizeof *ws);
}

const double *td_mlp_forward(const td_mlp *m, td_mlp_ws *ws, const double *params,
                             const double *X, int B) {
  /* X: (B, in_dim) -> returns (B, out_dim) */
  assert(B >= 1 && B <= ws->cap && ws->n_layers == m->n_layers);
  ws->input = X;
  ws->act[0] = (double *)X; /* never written through: dact[0] is unused */
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    const double *in = ws->act[i];
    double *out = ws->act[i + 1];
    size_t n = (size_t)B * L->n_out;
    switch (L->kind) {
    case TD_LAYER_LINEAR: {
      const double *W = params + L->off;
      td_linear_forward(out, in, W, W + (size_t)L->n_in * L->n_out, B, L->n_in, L->n_out);
      break;
    }
    case TD_LAYER_RELU: td_relu_forward(out, in, n); break;
    case TD_LAYER_TANH: td_tanh_forward(out, in, n); break;
    }
  }
  return ws->act[m->n_layers];
}

void td_mlp_backward(const td_mlp *m, td_mlp_ws *ws, const double *params, const double *dout,
                     int B, double *grad, int accumulate) {
  assert(B >= 1 && B <= ws->cap && ws->n_layers == m->n_layers);
  const double *d = dout; /* dL/d act[i+1] */
  for (int i = m->n_layers - 1; i >= 0; i--) {
    const td_layer *L = &m->layers[i];
    double *dinp = i > 0 ? ws->dact[i] : NULL; /* overwritten: one consumer per buffer */
    size_t n = (size_t)B * L->n_out;
    switch (L->kind) {
    case TD_LAYER_LINEAR: {
      const double *W = params + L->off;
      double *dW = grad + L->off;
      linear_backward(dinp, dW, dW + (size_t)L->n_in * L->n_out, d, ws->act[i], W, B, L->n_in,
                      L->n_out, accumulate, 0);
      break;
    }
    case TD_LAYER_RELU:
      if (dinp) relu_backward(dinp, d, ws->act[i], n, 0);
      break;
    case TD_LAYER_TANH:
      if (dinp) tanh_backward(dinp, d, ws->act[i + 1], n, 0);
      break;
    }
    d = dinp;
  }
}
