/* model.c: the MLP: layer kernels, one flat parameter vector, exact forward/backward.
 *
 * DESIGN. llm.c-style: a model is a list of td_layer records (kind, widths, offset into the
 * flat vector). Parameters and gradients are single allocations; the workspace holds every
 * layer's input and output for one maximum batch size, allocated once, so a training step
 * performs no allocation. Kernels come in forward/backward pairs; the public backward
 * kernels accumulate (+=), and the model's backward uses overwrite variants internally
 * (BLAS beta = 0) to skip zeroing gradients and activation gradients each step. The input
 * layer never computes dL/dX. Norm layers (LayerNorm, BatchNorm) keep xhat and rstd in
 * ws->aux for backward; BatchNorm's running statistics are model buffers written only by a
 * TRAIN-mode forward with ws->update_running (model.h). The JVP/HVP kernels live in curv.c. */
#include "nn/model.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"

#define TD__MAX_DIM 10000000

/* The elementwise loops below are unrolled by 4 with restrict pointers: -O2 (GCC 12's
 * "very cheap" vectorizer, and Clang) then emits packed AVX2 code for them, while a plain
 * loop with a runtime trip count stays scalar. Every lane does the same IEEE operations as
 * the scalar formula, so the results do not depend on the unrolling. */

/* ---- kernels ---------------------------------------------------------------------------- */

/* out = sw inp W^T + sb b (the parameterization's multipliers; sw = sb = 1 is exactly the
 * unscaled layer: the bias rows are copied, and BLAS gets alpha = 1). */
static void linear_forward(double *out, const double *inp, const double *W, const double *b,
                           int B, int n_in, int n_out, double sw, double sb) {
  /* out: (B, n_out); inp: (B, n_in); W: (n_out, n_in); b: (n_out) */
  assert(out && inp && W && b && B >= 1 && n_in >= 1 && n_out >= 1);
  if (sb == 1.0)
    for (int r = 0; r < B; r++) memcpy(out + (size_t)r * n_out, b, (size_t)n_out * sizeof *b);
  else
    for (int r = 0; r < B; r++)
      for (int o = 0; o < n_out; o++) out[(size_t)r * n_out + o] = sb * b[o];
  /* out += sw inp W^T: A = inp as stored (B x n_in, NoTrans), B = W stored (n_out x n_in), so
   * Trans gives the (n_in x n_out) factor; beta = 1 keeps the bias rows. */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, n_out, n_in, sw, inp, n_in, W, n_in,
              1.0, out, n_out);
}

void td_linear_forward(double *out, const double *inp, const double *W, const double *b, int B,
                       int n_in, int n_out) {
  linear_forward(out, inp, W, b, B, n_in, n_out, 1.0, 1.0);
}

/* acc_p: accumulate into dW/db (else overwrite); acc_i: the same for dinp. sw, sb: the
 * multipliers of out = sw inp W^T + sb b, so dW = sw dout^T inp, db = sb colsum(dout),
 * dinp = sw dout W (sw = sb = 1: BLAS gets alpha = 1 and sb * g = g exactly). */
static void linear_backward(double *dinp, double *dW, double *db, const double *dout,
                            const double *inp, const double *W, int B, int n_in, int n_out,
                            int acc_p, int acc_i, double sw, double sb) {
  /* dinp: (B, n_in) or NULL; dW: (n_out, n_in); db: (n_out); dout: (B, n_out) */
  assert(dW && db && dout && inp && W && B >= 1 && n_in >= 1 && n_out >= 1);
  /* dW = dout^T inp: dout stored (B x n_out) -> Trans gives (n_out x B); inp (B x n_in)
   * NoTrans. Result (n_out x n_in) matches W's layout. */
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, B, sw, dout, n_out, inp,
              n_in, acc_p ? 1.0 : 0.0, dW, n_in);
  if (!acc_p) memset(db, 0, (size_t)n_out * sizeof *db);
  const int o4 = n_out & ~3;
  for (int r = 0; r < B && sb != 1.0; r++)
    for (int o = 0; o < n_out; o++) db[o] += sb * dout[(size_t)r * n_out + o];
  for (int r = 0; r < B && sb == 1.0; r++) {
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
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n_in, n_out, sw, dout, n_out, W,
                n_in, acc_i ? 1.0 : 0.0, dinp, n_in);
  }
}

void td_linear_backward(double *dinp, double *dW, double *db, const double *dout,
                        const double *inp, const double *W, int B, int n_in, int n_out) {
  linear_backward(dinp, dW, db, dout, inp, W, B, n_in, n_out, 1, 1, 1.0, 1.0);
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

/* Normalization. LayerNorm normalizes each row (one example's n features); BatchNorm in
 * training mode each column (one feature over the B examples). Rows are contiguous; columns
 * are handled in blocks of TD__NB adjacent features whose sums are gathered by one pass over
 * the rows, so that every loop walks memory contiguously. Means and variances take two passes
 * (the mean, then the centered sum of squares), which is accurate. */
#define TD__NB 256

/* Row reductions keep 4 partial sums (lanes j mod 4), combined as (s0 + s1) + (s2 + s3):
 * a single running sum would serialize on the add latency. */
static double sum4(const double *restrict a, int n) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += a[j];
    s1 += a[j + 1];
    s2 += a[j + 2];
    s3 += a[j + 3];
  }
  for (; j < n; j++) s0 += a[j];
  return (s0 + s1) + (s2 + s3);
}

/* hr = xr - mu, returning sum (xr - mu)^2 (4 partial sums as sum4). */
static double center4(double *restrict hr, const double *restrict xr, double mu, int n) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  int j = 0;
  for (; j + 4 <= n; j += 4)
    for (int l = 0; l < 4; l++) {
      double c = xr[j + l] - mu;
      hr[j + l] = c;
      s[l] += c * c;
    }
  for (; j < n; j++) {
    double c = xr[j] - mu;
    hr[j] = c;
    s[0] += c * c;
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

static void ln_rows(double *xhat, double *rstd, const double *x, int B, int n, double eps) {
  for (int r = 0; r < B; r++) {
    const double *restrict xr = x + (size_t)r * n;
    double *restrict hr = xhat + (size_t)r * n;
    const double mu = sum4(xr, n) / n, ss = center4(hr, xr, mu, n);
    const double rs = 1.0 / sqrt(ss / n + eps);
    for (int j = 0; j < n; j++) hr[j] *= rs;
    rstd[r] = rs;
  }
}

static void bn_cols(double *xhat, double *rstd, double *run_mean, double *run_var, double *count,
                    const double *x, int B, int n, double eps, double momentum) {
  double mu[TD__NB], ss[TD__NB];
  const int upd = run_mean && run_var && B > 1;
  for (int j0 = 0; j0 < n; j0 += TD__NB) {
    const int w = n - j0 < TD__NB ? n - j0 : TD__NB;
    for (int k = 0; k < w; k++) mu[k] = ss[k] = 0.0;
    for (int r = 0; r < B; r++) {
      const double *restrict xr = x + (size_t)r * n + j0;
      for (int k = 0; k < w; k++) mu[k] += xr[k];
    }
    for (int k = 0; k < w; k++) mu[k] /= B;
    for (int r = 0; r < B; r++) {
      const double *restrict xr = x + (size_t)r * n + j0;
      double *restrict hr = xhat + (size_t)r * n + j0;
      for (int k = 0; k < w; k++) {
        double c = xr[k] - mu[k];
        hr[k] = c;
        ss[k] += c * c;
      }
    }
    for (int k = 0; k < w; k++) {
      rstd[j0 + k] = 1.0 / sqrt(ss[k] / B + eps);
      if (upd) {
        run_mean[j0 + k] = (1.0 - momentum) * run_mean[j0 + k] + momentum * mu[k];
        run_var[j0 + k] = (1.0 - momentum) * run_var[j0 + k] + momentum * (ss[k] / (B - 1));
      }
    }
    for (int r = 0; r < B; r++) {
      double *restrict hr = xhat + (size_t)r * n + j0;
      const double *restrict rs = rstd + j0;
      for (int k = 0; k < w; k++) hr[k] *= rs[k];
    }
  }
  if (upd && count) *count += 1.0;
}

/* out = gamma * xhat + beta, per feature (column). */
static void norm_affine(double *out, const double *xhat, const double *gamma, const double *beta,
                        int B, int n) {
  for (int r = 0; r < B; r++) {
    const double *restrict h = xhat + (size_t)r * n;
    double *restrict o = out + (size_t)r * n;
    for (int j = 0; j < n; j++) o[j] = gamma[j] * h[j] + beta[j];
  }
}

/* dgamma, dbeta (+= or =, skipped when NULL) and, when dinp, dinp (+= or =) of P(dout * gamma)
 * with P the projection over rows (per_row) or columns, or, without projection (BatchNorm in
 * eval mode), dout * gamma * rstd. */
static void norm_backward(double *dinp, double *dgamma, double *dbeta, const double *dout,
                          const double *xhat, const double *rstd, const double *gamma, int B,
                          int n, int per_row, int project, int acc_p, int acc_i) {
  if (dgamma && !acc_p) {
    memset(dgamma, 0, (size_t)n * sizeof *dgamma);
    memset(dbeta, 0, (size_t)n * sizeof *dbeta);
  }
  for (int r = 0; r < B && dgamma; r++) {
    const double *restrict d = dout + (size_t)r * n, *restrict h = xhat + (size_t)r * n;
    double *restrict dg = dgamma, *restrict db = dbeta;
    for (int j = 0; j < n; j++) {
      dg[j] += d[j] * h[j];
      db[j] += d[j];
    }
  }
  if (!dinp) return;
  if (per_row || !project) {
    for (int r = 0; r < B; r++) {
      const double *restrict d = dout + (size_t)r * n, *restrict h = xhat + (size_t)r * n;
      double *restrict o = dinp + (size_t)r * n;
      if (!project) { /* batchnorm in eval mode: a fixed per-feature scale */
        for (int j = 0; j < n; j++) {
          double v = d[j] * gamma[j] * rstd[j];
          o[j] = acc_i ? o[j] + v : v;
        }
        continue;
      }
      double su4[4] = {0.0, 0.0, 0.0, 0.0}, shu4[4] = {0.0, 0.0, 0.0, 0.0};
      int j = 0;
      for (; j + 4 <= n; j += 4)
        for (int l = 0; l < 4; l++) {
          double u = d[j + l] * gamma[j + l];
          su4[l] += u;
          shu4[l] += h[j + l] * u;
        }
      for (; j < n; j++) {
        double u = d[j] * gamma[j];
        su4[0] += u;
        shu4[0] += h[j] * u;
      }
      const double su = ((su4[0] + su4[1]) + (su4[2] + su4[3])) / n;
      const double shu = ((shu4[0] + shu4[1]) + (shu4[2] + shu4[3])) / n;
      const double rs = rstd[r];
      for (j = 0; j < n; j++) {
        double v = rs * (d[j] * gamma[j] - su - h[j] * shu);
        o[j] = acc_i ? o[j] + v : v;
      }
    }
    return;
  }
  double su[TD__NB], shu[TD__NB];
  for (int j0 = 0; j0 < n; j0 += TD__NB) {
    const int w = n - j0 < TD__NB ? n - j0 : TD__NB;
    const double *restrict g = gamma + j0, *restrict rs = rstd + j0;
    for (int k = 0; k < w; k++) su[k] = shu[k] = 0.0;
    for (int r = 0; r < B; r++) {
      const double *restrict d = dout + (size_t)r * n + j0, *restrict h = xhat + (size_t)r * n + j0;
      for (int k = 0; k < w; k++) {
        double u = d[k] * g[k];
        su[k] += u;
        shu[k] += h[k] * u;
      }
    }
    for (int k = 0; k < w; k++) {
      su[k] /= B;
      shu[k] /= B;
    }
    for (int r = 0; r < B; r++) {
      const double *restrict d = dout + (size_t)r * n + j0, *restrict h = xhat + (size_t)r * n + j0;
      double *restrict o = dinp + (size_t)r * n + j0;
      for (int k = 0; k < w; k++) {
        double v = rs[k] * (d[k] * g[k] - su[k] - h[k] * shu[k]);
        o[k] = acc_i ? o[k] + v : v;
      }
    }
  }
}

void td_layernorm_forward(double *out, double *xhat, double *rstd, const double *inp,
                          const double *gamma, const double *beta, int B, int n, double eps) {
  /* out, xhat, inp: (B, n); rstd: (B); gamma, beta: (n) */
  assert(out && xhat && rstd && inp && gamma && beta && B >= 1 && n >= 1 && eps >= 0);
  ln_rows(xhat, rstd, inp, B, n, eps);
  norm_affine(out, xhat, gamma, beta, B, n);
}

void td_layernorm_backward(double *dinp, double *dgamma, double *dbeta, const double *dout,
                           const double *xhat, const double *rstd, const double *gamma, int B,
                           int n) {
  assert(!dgamma == !dbeta && dout && xhat && rstd && gamma && B >= 1 && n >= 1);
  norm_backward(dinp, dgamma, dbeta, dout, xhat, rstd, gamma, B, n, 1, 1, 1, 1);
}

void td_batchnorm_forward(double *out, double *xhat, double *rstd, double *run_mean,
                          double *run_var, double *count, const double *inp, const double *gamma,
                          const double *beta, int B, int n, double eps, double momentum,
                          int training) {
  /* out, xhat, inp: (B, n); rstd, run_mean, run_var: (n); gamma, beta: (n) */
  assert(out && xhat && rstd && inp && gamma && beta && B >= 1 && n >= 1 && eps >= 0);
  if (training) {
    bn_cols(xhat, rstd, run_mean, run_var, count, inp, B, n, eps, momentum);
  } else {
    assert(run_mean && run_var);
    for (int j = 0; j < n; j++) rstd[j] = 1.0 / sqrt(run_var[j] + eps);
    for (int r = 0; r < B; r++) {
      const double *restrict x = inp + (size_t)r * n;
      double *restrict h = xhat + (size_t)r * n;
      for (int j = 0; j < n; j++) h[j] = (x[j] - run_mean[j]) * rstd[j];
    }
  }
  norm_affine(out, xhat, gamma, beta, B, n);
}

void td_batchnorm_backward(double *dinp, double *dgamma, double *dbeta, const double *dout,
                           const double *xhat, const double *rstd, const double *gamma, int B,
                           int n, int training) {
  assert(!dgamma == !dbeta && dout && xhat && rstd && gamma && B >= 1 && n >= 1);
  norm_backward(dinp, dgamma, dbeta, dout, xhat, rstd, gamma, B, n, 0, training, 1, 1);
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

int td_mlp_norm_parse(const char *name, td_norm *out) {
  if (!name) return TD_EINVAL;
  if (strcmp(name, "none") == 0) *out = TD_NORM_NONE;
  else if (strcmp(name, "layernorm") == 0) *out = TD_NORM_LAYERNORM;
  else if (strcmp(name, "batchnorm") == 0) *out = TD_NORM_BATCHNORM;
  else return TD_EINVAL;
  return 0;
}

const char *td_mlp_norm_name(td_norm norm) {
  return norm == TD_NORM_LAYERNORM ? "layernorm" : norm == TD_NORM_BATCHNORM ? "batchnorm" : "none";
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
  if (c->norm != TD_NORM_NONE && c->norm != TD_NORM_LAYERNORM && c->norm != TD_NORM_BATCHNORM)
    return td_err_set(err, TD_EINVAL, "params.model.norm", "mlp: unknown normalization");
  if (!(c->norm_eps >= 0) || !isfinite(c->norm_eps))
    return td_err_set(err, TD_EINVAL, "params.model.norm_eps", "mlp: norm_eps must be >= 0");
  if (c->param != TD_PARAM_STANDARD && c->param != TD_PARAM_NTK && c->param != TD_PARAM_MUP)
    return td_err_set(err, TD_EINVAL, "params.model.parameterization",
                      "mlp: unknown parameterization");
  if (c->param == TD_PARAM_NTK && (!(c->sigma_w2 > 0) || !isfinite(c->sigma_w2)))
    return td_err_set(err, TD_EINVAL, "params.model.sigma_w2", "mlp: ntk needs sigma_w2 > 0");
  if (c->param == TD_PARAM_NTK && (!(c->sigma_b2 >= 0) || !isfinite(c->sigma_b2)))
    return td_err_set(err, TD_EINVAL, "params.model.sigma_b2", "mlp: ntk needs sigma_b2 >= 0");
  if (c->param == TD_PARAM_MUP && (!(c->base_width >= 0) || !isfinite(c->base_width)))
    return td_err_set(err, TD_EINVAL, "params.model.base_width",
                      "mlp: base_width must be >= 0 (0 means 1)");
  return 0;
}

int td_mlp_estimate(const td_mlp_cfg *cfg, int cap, double *n_params, double *ws_bytes,
                    td_err *err) {
  int rc = cfg_check(cfg, err);
  if (rc) return rc;
  double np = 0, widths = 0;
  double prev = cfg->in_dim;
  double c = cap > 0 ? cap : 1, aux = 0;
  for (int i = 0; i <= cfg->n_hidden; i++) {
    double w = i < cfg->n_hidden ? cfg->hidden[i] : cfg->out_dim;
    np += prev * w + w;
    widths += w * (i < cfg->n_hidden && cfg->act != TD_ACT_LINEAR ? 2 : 1);
    if (i < cfg->n_hidden && cfg->norm != TD_NORM_NONE) { /* gamma, beta; out, xhat, rstd */
      np += 2 * w;
      widths += w;
      aux += c * w + (c > w ? c : w);
    }
    prev = w;
  }
  *n_params = np;
  *ws_bytes = (2.0 * c * widths + aux) * sizeof(double);
  return 0;
}

/* The parameterization's forward and learning-rate multipliers of every layer (model.h,
 * td_param_kind). */
static void set_multipliers(td_mlp *m) {
  const td_mlp_cfg *c = &m->cfg;
  const double base = c->base_width > 0 ? c->base_width : 1.0;
  const int last = m->n_linear - 1;
  int j = -1; /* the linear layer a norm layer follows */
  for (int i = 0; i < m->n_layers; i++) {
    td_layer *L = &m->layers[i];
    L->w_mult = L->b_mult = 1.0;
    L->lr_sgd = L->lr_sgd_b = L->lr_adam = L->lr_adam_b = 1.0;
    if (L->kind == TD_LAYER_LINEAR) j = L->index;
    if (L->kind == TD_LAYER_LINEAR && c->param == TD_PARAM_NTK) {
      L->w_mult = sqrt(c->sigma_w2 / L->n_in);
      L->b_mult = sqrt(c->sigma_b2);
    }
    if (c->param != TD_PARAM_MUP || L->n_params == 0) continue;
    /* mup (TP5 Table 3): r_in, r_out relative to the base width; the finite input and output
     * dimensions have r = 1 */
    const double r_in = (L->kind == TD_LAYER_LINEAR && j > 0) ? L->n_in / base : 1.0;
    const double r_out = (L->kind != TD_LAYER_LINEAR || j < last) ? L->n_out / base : 1.0;
    L->lr_sgd_b = r_out; /* all biases (and norm shifts): the input-weights column */
    L->lr_adam_b = 1.0;
    if (L->kind != TD_LAYER_LINEAR) { /* norm gains: vector-like, the input-weights column */
      L->lr_sgd = r_out;
      L->lr_adam = 1.0;
    } else if (j == 0 && last > 0) { /* input weights */
      L->lr_sgd = r_out;
      L->lr_adam = 1.0;
    } else if (j == last) { /* output weights (a model without hidden layers: both finite) */
      L->lr_sgd = 1.0 / r_in;
      L->lr_adam = 1.0 / r_in;
    } else { /* hidden weights */
      L->lr_sgd = 1.0;
      L->lr_adam = 1.0 / r_in;
    }
  }
}

int td_mlp_lr_segments(const td_mlp *m, int adam, size_t *ends, double *mults) {
  int n = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (!L->n_params) continue;
    const size_t nw = L->kind == TD_LAYER_LINEAR ? (size_t)L->n_in * L->n_out : (size_t)L->n_out;
    const double a = adam ? L->lr_adam : L->lr_sgd, b = adam ? L->lr_adam_b : L->lr_sgd_b;
    ends[n] = L->off + nw;
    mults[n++] = a;
    ends[n] = L->off + L->n_params;
    mults[n++] = b;
  }
  return n;
}

int td_mlp_param_parse(const char *name, td_param_kind *out) {
  if (!name || !strcmp(name, "standard")) *out = TD_PARAM_STANDARD;
  else if (!strcmp(name, "ntk")) *out = TD_PARAM_NTK;
  else if (!strcmp(name, "mup")) *out = TD_PARAM_MUP;
  else return TD_EINVAL;
  return 0;
}

const char *td_mlp_param_name(td_param_kind p) {
  return p == TD_PARAM_NTK ? "ntk" : p == TD_PARAM_MUP ? "mup" : "standard";
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
    if (i < cfg->n_hidden && cfg->norm != TD_NORM_NONE) {
      td_layer *N = &m->layers[m->n_layers++];
      N->kind = cfg->norm == TD_NORM_LAYERNORM ? TD_LAYER_LAYERNORM : TD_LAYER_BATCHNORM;
      N->n_in = N->n_out = w;
      N->off = off;
      N->n_params = 2 * (size_t)w;
      N->index = L->index;
      off += N->n_params;
      if (N->kind == TD_LAYER_BATCHNORM) {
        N->buf_off = m->n_buffers;
        N->n_buffers = 2 * (size_t)w + 1;
        m->n_buffers += N->n_buffers;
      }
      m->n_norm++;
    }
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
  set_multipliers(m);
  m->norm_eps = cfg->norm_eps > 0 ? cfg->norm_eps : TD_NORM_EPS_DEFAULT;
  m->params = calloc(off, sizeof *m->params);
  m->grad = calloc(off, sizeof *m->grad);
  if (m->n_buffers) m->buffers = calloc(m->n_buffers, sizeof *m->buffers);
  if (!m->params || !m->grad || (m->n_buffers && !m->buffers)) {
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
  free(m->buffers);
  free(m);
}

int td_mlp_init_parse(const char *name, td_init *out) {
  if (!name) *out = TD_INIT_AUTO;
  else if (!strcmp(name, "he_normal")) *out = TD_INIT_HE_NORMAL;
  else if (!strcmp(name, "lecun_normal")) *out = TD_INIT_LECUN_NORMAL;
  else if (!strcmp(name, "torch_default")) *out = TD_INIT_TORCH_DEFAULT;
  else return TD_EINVAL;
  return 0;
}

void td_mlp_init(td_mlp *m, uint64_t seed) {
  td_rng r;
  td_rng_init(&r, seed, TD_RNG_INIT);
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (L->kind == TD_LAYER_LAYERNORM || L->kind == TD_LAYER_BATCHNORM) {
      double *g = m->params + L->off;
      for (int k = 0; k < L->n_out; k++) {
        g[k] = 1.0;
        g[L->n_out + k] = 0.0;
      }
      if (L->n_buffers) {
        double *bf = m->buffers + L->buf_off;
        for (int k = 0; k < L->n_out; k++) {
          bf[k] = 0.0;
          bf[L->n_out + k] = 1.0;
        }
        bf[2 * (size_t)L->n_out] = 0.0;
      }
      continue;
    }
    if (L->kind != TD_LAYER_LINEAR) continue;
    int nx = i + 1;
    while (nx < m->n_layers && (m->layers[nx].kind == TD_LAYER_LAYERNORM ||
                                m->layers[nx].kind == TD_LAYER_BATCHNORM))
      nx++;
    int next_relu = nx < m->n_layers && m->layers[nx].kind == TD_LAYER_RELU;
    double *W = m->params + L->off;
    const size_t nw = (size_t)L->n_in * L->n_out;
    if (m->cfg.param == TD_PARAM_NTK) { /* N(0, s^2) coordinates; the multipliers scale */
      td_rng_fill_normal(&r, W, nw + (size_t)L->n_out, m->cfg.init_scale);
      continue;
    }
    /* mup: the output layer's weight variance / r_in (TP5 Table 3) */
    const double mup_out = m->cfg.param == TD_PARAM_MUP && L->index == m->n_linear - 1 &&
                                   L->index > 0
                               ? sqrt(L->n_in / (m->cfg.base_width > 0 ? m->cfg.base_width : 1.0))
                               : 1.0;
    if (m->cfg.init == TD_INIT_TORCH_DEFAULT) {
      /* kaiming_uniform_(a = sqrt(5)): bound = sqrt(2 / (1 + 5)) * sqrt(3 / fan_in) */
      const double bound = m->cfg.init_scale / sqrt((double)L->n_in);
      for (size_t k = 0; k < nw + (size_t)L->n_out; k++)
        W[k] = bound * (2.0 * td_rng_uniform(&r) - 1.0) / (k < nw ? mup_out : 1.0);
      continue;
    }
    double gain = m->cfg.init == TD_INIT_HE_NORMAL     ? 2.0
                  : m->cfg.init == TD_INIT_LECUN_NORMAL ? 1.0
                  : next_relu                           ? 2.0
                                                        : 1.0;
    double std = m->cfg.init_scale * sqrt(gain / L->n_in) / mup_out;
    td_rng_fill_normal(&r, W, nw, std);
    memset(W + nw, 0, (size_t)L->n_out * sizeof *W);
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

static int is_norm(const td_layer *L) {
  return L->kind == TD_LAYER_LAYERNORM || L->kind == TD_LAYER_BATCHNORM;
}

const td_layer *td_mlp_norm(const td_mlp *m, int j, double *vec, double **gamma, double **beta) {
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (is_norm(L) && L->index == j) {
      if (gamma) *gamma = vec + L->off;
      if (beta) *beta = vec + L->off + (size_t)L->n_out;
      return L;
    }
  }
  return NULL;
}

const td_layer *td_mlp_norm_buffers(const td_mlp *m, int j, double **mean, double **var,
                                    double **count) {
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (L->kind == TD_LAYER_BATCHNORM && L->index == j) {
      double *b = m->buffers + L->buf_off;
      if (mean) *mean = b;
      if (var) *var = b + L->n_out;
      if (count) *count = b + 2 * (size_t)L->n_out;
      return L;
    }
  }
  return NULL;
}

int td_mlp_scale_invariant(const td_mlp *m, int j) {
  for (int i = 0; i + 1 < m->n_layers; i++)
    if (m->layers[i].kind == TD_LAYER_LINEAR && m->layers[i].index == j)
      return is_norm(&m->layers[i + 1]);
  return 0;
}

/* Extra workspace of norm layer L: xhat (cap x n), then rstd (cap for LayerNorm, n for
 * BatchNorm; the larger is reserved so either fits). */
static size_t aux_size(const td_layer *L, int cap) {
  if (!is_norm(L)) return 0;
  size_t n = (size_t)L->n_out, c = (size_t)cap;
  return c * n + (c > n ? c : n);
}

int td_mlp_ws_init(td_mlp_ws *ws, const td_mlp *m, int cap, td_err *err) {
  memset(ws, 0, sizeof *ws);
  if (cap < 1) return td_err_set(err, TD_EINVAL, NULL, "mlp workspace: batch must be >= 1");
  size_t total = 0;
  for (int i = 0; i < m->n_layers; i++)
    total += 2 * (size_t)cap * m->layers[i].n_out + aux_size(&m->layers[i], cap);
  /* 64-byte alignment for each buffer helps the BLAS and the vectorized loops. */
  total += 24 * (size_t)(m->n_layers + 1);
  double *mem = aligned_alloc(64, ((total * sizeof(double)) + 63) / 64 * 64);
  if (!mem) return td_err_set(err, TD_ENOMEM, NULL, "mlp workspace: out of memory");
  size_t off = 0;
  for (int i = 0; i < m->n_layers; i++) {
    size_t sz = (size_t)cap * m->layers[i].n_out;
    ws->act[i + 1] = mem + off;
    off += (sz + 7) / 8 * 8;
    ws->dact[i + 1] = mem + off;
    off += (sz + 7) / 8 * 8;
    size_t ax = aux_size(&m->layers[i], cap);
    if (ax) {
      ws->aux[i] = mem + off;
      off += (ax + 7) / 8 * 8;
    }
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

void td_mlp_ws_set_mode(td_mlp_ws *ws, td_mlp_mode mode, int update_running) {
  ws->mode = mode;
  ws->update_running = mode == TD_MLP_TRAIN && update_running;
}

const double *td_mlp_forward(const td_mlp *m, td_mlp_ws *ws, const double *params,
                             const double *X, int B) {
  return td_mlp_forward_from(m, ws, params, X, B, 0);
}

const double *td_mlp_forward_from(const td_mlp *m, td_mlp_ws *ws, const double *params,
                                  const double *X, int B, int first) {
  /* X: (B, in_dim) -> returns (B, out_dim) */
  assert(B >= 1 && B <= ws->cap && ws->n_layers == m->n_layers);
  assert(first >= 0 && first < m->n_layers);
  ws->input = X;
  ws->act[0] = (double *)X; /* never written through: dact[0] is unused */
  for (int i = first; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    const double *in = ws->act[i];
    double *out = ws->act[i + 1];
    size_t n = (size_t)B * L->n_out;
    switch (L->kind) {
    case TD_LAYER_LINEAR: {
      const double *W = params + L->off;
      linear_forward(out, in, W, W + (size_t)L->n_in * L->n_out, B, L->n_in, L->n_out, L->w_mult,
                     L->b_mult);
      break;
    }
    case TD_LAYER_RELU: td_relu_forward(out, in, n); break;
    case TD_LAYER_TANH: td_tanh_forward(out, in, n); break;
    case TD_LAYER_LAYERNORM: {
      const double *g = params + L->off;
      double *xh = ws->aux[i];
      td_layernorm_forward(out, xh, xh + (size_t)ws->cap * L->n_out, in, g, g + L->n_out, B,
                           L->n_out, m->norm_eps);
      break;
    }
    case TD_LAYER_BATCHNORM: {
      const double *g = params + L->off;
      double *xh = ws->aux[i], *bf = m->buffers + L->buf_off;
      /* the running statistics: read in eval mode, written in train mode with
       * update_running, untouched otherwise */
      const int train = ws->mode == TD_MLP_TRAIN, use = !train || ws->update_running;
      td_batchnorm_forward(out, xh, xh + (size_t)ws->cap * L->n_out, use ? bf : NULL,
                           use ? bf + L->n_out : NULL, use ? bf + 2 * (size_t)L->n_out : NULL,
                           in, g, g + L->n_out, B, L->n_out, m->norm_eps, TD_BN_MOMENTUM, train);
      break;
    }
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
                      L->n_out, accumulate, 0, L->w_mult, L->b_mult);
      break;
    }
    case TD_LAYER_RELU:
      if (dinp) relu_backward(dinp, d, ws->act[i], n, 0);
      break;
    case TD_LAYER_TANH:
      if (dinp) tanh_backward(dinp, d, ws->act[i + 1], n, 0);
      break;
    case TD_LAYER_LAYERNORM:
    case TD_LAYER_BATCHNORM: {
      const double *g = params + L->off, *xh = ws->aux[i];
      double *dg = grad + L->off;
      norm_backward(dinp, dg, dg + L->n_out, d, xh, xh + (size_t)ws->cap * L->n_out, g, B,
                    L->n_out, L->kind == TD_LAYER_LAYERNORM,
                    L->kind == TD_LAYER_LAYERNORM || ws->mode == TD_MLP_TRAIN, accumulate, 0);
      break;
    }
    }
    d = dinp;
  }
}
