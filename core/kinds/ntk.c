/* ntk.c: the `ntk` experiment kind: the empirical NTK and NNGP of random finite networks
 * against the analytic infinite-width kernels, as a function of width (chapter 6).
 *
 * For each width w in `widths` and each of `seeds` random networks (depth hidden layers of
 * width w, model.activation, k = model.outputs linear outputs) at initialization, on the
 * first data.n_train inputs X:
 *  - the empirical NTK's trace over outputs divided by k, Theta_s (n x n; td_entk_compute),
 *    against the analytic NTK Theta (td_kernel_matrix; for k outputs the limit is Theta I_k):
 *    ntk_rel_error(w) = mean_s ||Theta_s - Theta||_F / ||Theta||_F (the error of each seed's
 *    kernel, averaged; Jacot et al. 2018, Theorem 1 gives the limit, and the fluctuations of
 *    the finite-width kernel are O(1/sqrt(w)): Hanin and Nica 2019), so it should fall like
 *    1/sqrt(w): the summary has the least-squares slope of log error on log width;
 *  - the NNGP: the empirical covariance of the outputs over seeds and outputs, K_emp =
 *    1/(S k) sum_s sum_a f_a(X) f_a(X)^T, against the analytic NNGP K (Lee et al. 2018,
 *    eqs. 4-5): nngp_rel_error(w) = ||K_emp - K||_F / ||K||_F. With S k samples its Monte
 *    Carlo error is about sqrt(2 / (S k)) and does not fall with width; nngp_cond_rel_error
 *    (ntk parameterization only) averages instead the per-seed conditional covariance
 *    E[f f^T | hidden layers] = sigma_w2 / w Z Z^T + sigma_b2 (Z: the last hidden layer),
 *    whose error does fall with width.
 * Parameterizations (model.parameterization):
 *  - ntk (default; Jacot et al. 2018, sec. 2): W ~ N(0, 1) with each layer's output scaled by
 *    sigma_w / sqrt(fan_in), biases sigma_b N(0, 1) (the network of kernels.h). Realized as
 *    a standard MLP with W = sigma_w / sqrt(fan_in) omega, and the NTK in (omega, beta): the
 *    weight block of layer j weighted by sigma_w2 / fan_in, the bias block by sigma_b2.
 *  - standard: tdlab's model.init (He normal before a relu, LeCun otherwise, biases 0) and
 *    the NTK in the raw parameters: it grows with width, so the relative error against the
 *    analytic NTK grows too (the reason the ntk parameterization is the default).
 * Inputs: fashion-mnist pixels (the first n_train training images) or synthetic N(0, I_d).
 * Metrics (step = width): ntk_rel_error, ntk_rel_error_se (standard error over seeds),
 * nngp_rel_error, nngp_cond_rel_error. Artifacts: kernel_analytic.json and
 * kernel_empirical.json (the analytic NTK and seed 0's empirical NTK at the largest width,
 * downsampled to at most 64 x 64 for display: {n, step, matrix}). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "base/rng.h"
#include "kernels/entk.h"
#include "kernels/kernels.h"
#include "kinds/registry.h"
#include "nn/data.h"
#include "nn/model.h"

#define NTK_MAX_N 1000
#define NTK_HEAT 64

static const td_param ntk_params[] = {
    {"data.name", TD_PT_STR, "\"fashion-mnist\"", 0, 0, "fashion-mnist|synthetic", 0,
     "inputs: Fashion-MNIST pixels in [0, 1], or synthetic N(0, I_d)"},
    {"data.n_train", TD_PT_INT, "20", 2, NTK_MAX_N, NULL, 0,
     "the kernels are n_train x n_train, on the first n_train inputs"},
    {"data.d", TD_PT_INT, "10", 1, 5000, NULL, 0, "synthetic: input dimension"},
    {"widths", TD_PT_INT_LIST, "[64, 128, 256, 512, 1024]", 1, 65536, NULL, 16,
     "hidden widths (every hidden layer of a network has the same width)"},
    {"model.depth", TD_PT_INT, "1", 1, 8, NULL, 0, "hidden layers"},
    {"model.activation", TD_PT_STR, "\"relu\"", 0, 0, "relu|linear", 0,
     "activation of the hidden layers (those with an analytic kernel and a tdlab layer)"},
    {"model.outputs", TD_PT_INT, "10", 1, 100, NULL, 0,
     "linear outputs k: the empirical NTK is averaged over them (trace / k)"},
    {"model.parameterization", TD_PT_STR, "\"ntk\"", 0, 0, "ntk|standard", 0,
     "ntk: W ~ N(0,1), layer outputs scaled by sigma_w/sqrt(fan_in) (Jacot et al. 2018); "
     "standard: tdlab's init, raw parameters (the NTK grows with width)"},
    {"model.sigma_w2", TD_PT_NUM, "2", 1e-6, 1e6, NULL, 0, "sigma_w^2 of every layer"},
    {"model.sigma_b2", TD_PT_NUM, "0.1", 0, 1e6, NULL, 0, "sigma_b^2 of every layer"},
    {"seeds", TD_PT_INT, "10", 2, 1000, NULL, 0, "random networks per width"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0,
     "base seed (network s of each width uses seed + s; synthetic inputs use seed)"},
};

typedef struct ntk_cfg {
  int fmnist, n, d, depth, k, ntk_param, seeds, n_widths;
  long widths[16];
  td_kact kact;
  td_act act;
  double sw2, sb2;
  uint64_t seed;
} ntk_cfg;

static void parse_cfg(const json_t *p, ntk_cfg *c) {
  memset(c, 0, sizeof *c);
  c->fmnist = !strcmp(td_param_str(p, "data.name", "fashion-mnist"), "fashion-mnist");
  c->n = (int)td_param_int(p, "data.n_train", 20);
  c->d = c->fmnist ? 784 : (int)td_param_int(p, "data.d", 10);
  c->depth = (int)td_param_int(p, "model.depth", 1);
  c->k = (int)td_param_int(p, "model.outputs", 10);
  c->ntk_param = !strcmp(td_param_str(p, "model.parameterization", "ntk"), "ntk");
  c->seeds = (int)td_param_int(p, "seeds", 10);
  c->sw2 = td_param_num(p, "model.sigma_w2", 2);
  c->sb2 = td_param_num(p, "model.sigma_b2", 0.1);
  c->seed = (uint64_t)td_param_int(p, "seed", 0);
  int lin = !strcmp(td_param_str(p, "model.activation", "relu"), "linear");
  c->kact = lin ? TD_KACT_LINEAR : TD_KACT_RELU;
  c->act = lin ? TD_ACT_LINEAR : TD_ACT_RELU;
  const json_t *w = td_param_get(p, "widths");
  c->n_widths = (int)json_array_size(w);
  for (int i = 0; i < c->n_widths && i < 16; i++)
    c->widths[i] = (long)json_integer_value(json_array_get(w, (size_t)i));
}

static td_mlp_cfg mlp_cfg(const ntk_cfg *c, long width) {
  td_mlp_cfg m = {.in_dim = c->d, .out_dim = c->k, .n_hidden = c->depth, .act = c->act,
                  .init_scale = 1.0};
  for (int i = 0; i < c->depth; i++) m.hidden[i] = (int)width;
  return m;
}

static int ntk_check(const json_t *params, td_estimate *est, td_err *err) {
  ntk_cfg c;
  parse_cfg(params, &c);
  double worst = 0, np_max = 0;
  for (int i = 0; i < c.n_widths; i++) {
    td_mlp_cfg m = mlp_cfg(&c, c.widths[i]);
    double np, ws;
    int rc = td_mlp_estimate(&m, c.n, &np, &ws, err);
    if (rc) return rc;
    /* params + grad, the eNTK (trace) buffers, and the NNGP accumulators */
    double n = c.n, w = (double)c.widths[i];
    double b = 16 * np + ws + 8 * (3 * n * n + 2 * c.k * n * (w > c.k ? w : c.k));
    if (b > worst) worst = b;
    if (np > np_max) np_max = np;
  }
  est->bytes = worst + 8.0 * c.n * c.d * 2 + (c.fmnist ? 60000.0 * 785 : 0);
  est->n_params = np_max;
  return 0;
}

static void set_list(json_t *o, const char *key, const double *v, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++)
    json_array_append_new(a, isfinite(v[i]) ? json_real(v[i]) : json_string("NaN"));
  json_object_set_new(o, key, a);
}

static double frob_rel(const double *A, const double *B, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; i++) {
    num += (A[i] - B[i]) * (A[i] - B[i]);
    den += B[i] * B[i];
  }
  return sqrt(num / den);
}

/* A heat-map artifact: the n x n matrix downsampled by block means to at most NTK_HEAT. */
static int heat_artifact(td_sink *sink, const char *name, const double *K, int n, long width) {
  int step = (n + NTK_HEAT - 1) / NTK_HEAT, m = (n + step - 1) / step;
  json_t *mat = json_array();
  for (int bi = 0; bi < m; bi++) {
    json_t *row = json_array();
    for (int bj = 0; bj < m; bj++) {
      double s = 0;
      int cnt = 0;
      for (int i = bi * step; i < n && i < (bi + 1) * step; i++)
        for (int j = bj * step; j < n && j < (bj + 1) * step; j++, cnt++) s += K[(size_t)i * n + j];
      json_array_append_new(row, json_real(s / cnt));
    }
    json_array_append_new(mat, row);
  }
  json_t *a = json_pack("{s:i, s:i, s:I, s:o}", "n", n, "step", step, "width", (json_int_t)width,
                        "matrix", mat);
  char *txt = json_dumps(a, JSON_COMPACT);
  json_decref(a);
  int rc = txt ? td_sink_artifact(sink, name, "application/json", txt, strlen(txt)) : TD_ENOMEM;
  free(txt);
  return rc;
}

static int ntk_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  ntk_cfg c;
  parse_cfg(params, &c);
  const int n = c.n, k = c.k;
  td_dataset ds;
  memset(&ds, 0, sizeof ds);
  int rc;
  if (c.fmnist) {
    if ((rc = td_data_fashion_mnist("train", (size_t)n, &ds, err))) return rc;
  } else {
    ds.n = (size_t)n;
    ds.d = (size_t)c.d;
    ds.X = malloc(sizeof(double) * (size_t)n * c.d);
    if (!ds.X) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    td_rng r;
    td_rng_init(&r, c.seed, TD_RNG_DATA);
    td_rng_fill_normal(&r, ds.X, (size_t)n * c.d, 1.0);
  }
  td_kernel_cfg kc = {.act = c.kact, .depth = c.depth, .sigma_w2 = c.sw2, .sigma_b2 = c.sb2};
  size_t nn = (size_t)n * n;
  double *Ka = malloc(sizeof(double) * nn), *Ta = malloc(sizeof(double) * nn);
  double *Te = malloc(sizeof(double) * nn), *Ke = malloc(sizeof(double) * nn);
  double *Kc = malloc(sizeof(double) * nn);
  double e_ntk[16] = {0}, e_se[16] = {0}, e_nngp[16] = {0}, e_cond[16] = {0}, lw[16] = {0};
  td_mlp *m = NULL;
  td_mlp_ws ws;
  memset(&ws, 0, sizeof ws);
  rc = TD_ENOMEM;
  if (!Ka || !Ta || !Te || !Ke || !Kc) {
    td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    goto out;
  }
  if ((rc = td_kernel_matrix(&kc, TD_KERNEL_NNGP, ds.X, n, NULL, 0, c.d, Ka, err)) ||
      (rc = td_kernel_matrix(&kc, TD_KERNEL_NTK, ds.X, n, NULL, 0, c.d, Ta, err)))
    goto out;
  if ((rc = heat_artifact(sink, "kernel_analytic.json", Ta, n, 0))) goto out;
  long total = (long)c.n_widths * c.seeds, done = 0;
  for (int wi = 0; wi < c.n_widths; wi++) {
    long width = c.widths[wi];
    td_mlp_cfg mc = mlp_cfg(&c, width);
    if ((rc = td_mlp_create(&mc, &m, err)) || (rc = td_mlp_ws_init(&ws, m, n, err))) goto out;
    td_mlp_ws_set_mode(&ws, TD_MLP_EVAL, 0);
    double cw[TD_MLP_MAX_HIDDEN + 1], cb[TD_MLP_MAX_HIDDEN + 1];
    for (int j = 0; j <= c.depth; j++) {
      cw[j] = c.sw2 / (j ? (double)width : (double)c.d);
      cb[j] = c.sb2;
    }
    td_entk_opts o = {.full = 0, .w_scale = c.ntk_param ? cw : NULL,
                      .b_scale = c.ntk_param ? cb : NULL};
    memset(Ke, 0, sizeof(double) * nn);
    memset(Kc, 0, sizeof(double) * nn);
    double s1 = 0, s2 = 0;
    for (int s = 0; s < c.seeds; s++) {
      if (td_sink_should_stop(sink)) {
        rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
        goto out;
      }
      uint64_t sd = c.seed + (uint64_t)s;
      if (c.ntk_param) {
        td_rng r;
        td_rng_init(&r, sd, TD_RNG_INIT);
        for (int j = 0; j <= c.depth; j++) {
          double *W, *b;
          const td_layer *L = td_mlp_linear(m, j, m->params, &W, &b);
          td_rng_fill_normal(&r, W, (size_t)L->n_in * L->n_out, sqrt(c.sw2 / L->n_in));
          td_rng_fill_normal(&r, b, (size_t)L->n_out, sqrt(c.sb2));
        }
      } else {
        td_mlp_init(m, sd);
      }
      if ((rc = td_entk_compute(m, m->params, ds.X, n, NULL, 0, &o, Te, err))) goto out;
      for (size_t t = 0; t < nn; t++) Te[t] /= k;
      double e = frob_rel(Te, Ta, nn);
      s1 += e;
      s2 += e * e;
      if (s == 0 && wi == c.n_widths - 1 &&
          (rc = heat_artifact(sink, "kernel_empirical.json", Te, n, width)))
        goto out;
      /* NNGP: outputs (n x k): Ke += F F^T / (S k); conditional: sigma_w2/w Z Z^T + sigma_b2 */
      const double *F = td_mlp_forward(m, &ws, m->params, ds.X, n);
      td_la_gemm(0, 1, n, n, k, 1.0 / ((double)c.seeds * k), F, F, 1.0, Ke);
      if (c.ntk_param) {
        const double *Z = ws.act[m->n_layers - 1]; /* input of the output layer */
        int wz = m->layers[m->n_layers - 1].n_in;
        td_la_gemm(0, 1, n, n, wz, cw[c.depth] / c.seeds, Z, Z, 1.0, Kc);
        for (size_t t = 0; t < nn; t++) Kc[t] += c.sb2 / c.seeds;
      }
      td_sink_progress(sink, ++done, total);
    }
    e_ntk[wi] = s1 / c.seeds;
    double var = (s2 - c.seeds * e_ntk[wi] * e_ntk[wi]) / (c.seeds - 1);
    e_se[wi] = sqrt(var > 0 ? var : 0) / sqrt(c.seeds);
    e_nngp[wi] = frob_rel(Ke, Ka, nn);
    e_cond[wi] = c.ntk_param ? frob_rel(Kc, Ka, nn) : NAN;
    lw[wi] = log((double)width);
    td_sink_metric(sink, "ntk_rel_error", width, e_ntk[wi]);
    td_sink_metric(sink, "ntk_rel_error_se", width, e_se[wi]);
    td_sink_metric(sink, "nngp_rel_error", width, e_nngp[wi]);
    if (c.ntk_param) td_sink_metric(sink, "nngp_cond_rel_error", width, e_cond[wi]);
    td_mlp_ws_deinit(&ws);
    td_mlp_destroy(m);
    m = NULL;
  }
  /* least-squares slope of log ntk_rel_error on log width (expected -1/2) */
  double slope = NAN;
  if (c.n_widths >= 2) {
    double mx = 0, my = 0, sxy = 0, sxx = 0;
    for (int i = 0; i < c.n_widths; i++) {
      mx += lw[i] / c.n_widths;
      my += log(e_ntk[i]) / c.n_widths;
    }
    for (int i = 0; i < c.n_widths; i++) {
      sxy += (lw[i] - mx) * (log(e_ntk[i]) - my);
      sxx += (lw[i] - mx) * (lw[i] - mx);
    }
    if (sxx > 0) slope = sxy / sxx;
  }
  json_t *sm = json_object();
  double wd[16];
  for (int i = 0; i < c.n_widths; i++) wd[i] = (double)c.widths[i];
  json_t *wl = json_array();
  for (int i = 0; i < c.n_widths; i++) json_array_append_new(wl, json_integer(c.widths[i]));
  json_object_set_new(sm, "widths", wl);
  (void)wd;
  set_list(sm, "ntk_rel_error", e_ntk, c.n_widths);
  set_list(sm, "ntk_rel_error_se", e_se, c.n_widths);
  set_list(sm, "nngp_rel_error", e_nngp, c.n_widths);
  if (c.ntk_param) set_list(sm, "nngp_cond_rel_error", e_cond, c.n_widths);
  json_object_set_new(sm, "ntk_error_slope", isfinite(slope) ? json_real(slope) : json_string("NaN"));
  double tr = 0;
  for (int i = 0; i < n; i++) tr += Ta[(size_t)i * n + i];
  json_object_set_new(sm, "analytic_ntk_mean_diag", json_real(tr / n));
  *summary = sm;
  rc = 0;
out:
  td_mlp_ws_deinit(&ws);
  td_mlp_destroy(m);
  td_dataset_deinit(&ds);
  free(Ka);
  free(Ta);
  free(Te);
  free(Ke);
  free(Kc);
  return rc;
}

const td_kind td_kind_ntk = {
    .name = "ntk",
    .doc = "Empirical NTK and NNGP of random finite MLPs against the analytic kernels, over width",
    .chapter = "6",
    .params = ntk_params,
    .n_params = sizeof ntk_params / sizeof ntk_params[0],
    .check = ntk_check,
    .run = ntk_run,
};
