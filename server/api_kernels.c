/* api_kernels.c: POST /api/v1/kernels, the analytic NNGP or NTK matrix of a deep fully
 * connected network between the rows the caller sends (synchronous, like /api/v1/fits; the
 * numerics are in core/kernels/kernels.c). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "kernels/entk.h"
#include "kernels/kernels.h"
#include "nn/checkpoint.h"
#include "store.h"

/* Caps: the kernel runs on the request's thread. Its cost is n1 n2 (d + depth) flops-ish
 * (each pair: a dot product and `depth` layers of transcendental functions, ~50 ns each),
 * and its answer is n1 n2 numbers of up to ~25 bytes of JSON. */
#define KERNELS_MAX_ROWS 4096
#define KERNELS_MAX_DIM 100000
#define KERNELS_MAX_ENTRIES 250000.0  /* n1 n2: about 6 MB of JSON */
#define KERNELS_MAX_WORK 2e8          /* n1 n2 (d + 20 depth): about a second */
/* The empirical NTK: memory (td_entk_estimate) and work (flops: 2 N k n_params for the
 * backpropagated derivatives, 2 k^2 n1 n2 per unit of layer width for the Gram products,
 * about 1 GFlop/s per core: 2e10 is a few seconds) */
#define ENTK_MAX_BYTES (512.0 * 1048576)
#define ENTK_MAX_WORK 2e10

/* Rows of a JSON matrix into a new (n x d) array; *d is set by the first matrix read (0 on
 * entry) and enforced on later ones. Returns NULL and writes the 400 into resp on error. */
static double *read_rows(const json_t *v, const char *name, int *n, int *d, http_resp *resp) {
  if (!json_is_array(v) || json_array_size(v) == 0) {
    http_error(resp, HTTP_E_INVALID_PARAM, name, "%s must be a non-empty array of rows", name);
    return NULL;
  }
  size_t rows = json_array_size(v);
  if (rows > KERNELS_MAX_ROWS) {
    http_error(resp, HTTP_E_LIMIT_EXCEEDED, name, "%s has %zu rows; at most %d", name, rows,
               KERNELS_MAX_ROWS);
    return NULL;
  }
  const json_t *r0 = json_array_get(v, 0);
  size_t cols = json_is_array(r0) ? json_array_size(r0) : 0;
  if (*d == 0) {
    if (cols == 0 || cols > KERNELS_MAX_DIM) {
      http_error(resp, cols ? HTTP_E_LIMIT_EXCEEDED : HTTP_E_INVALID_PARAM, name,
                 "%s[0] must be a non-empty array of at most %d numbers", name, KERNELS_MAX_DIM);
      return NULL;
    }
    *d = (int)cols;
  }
  double *X = malloc(sizeof(double) * rows * (size_t)*d);
  if (!X) {
    http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    return NULL;
  }
  char f[64];
  for (size_t i = 0; i < rows; i++) {
    const json_t *r = json_array_get(v, i);
    if (!json_is_array(r) || json_array_size(r) != (size_t)*d) {
      snprintf(f, sizeof f, "%s[%zu]", name, i);
      http_error(resp, HTTP_E_INVALID_PARAM, f,
                 "%s must be an array of %d numbers (every row of x and x2 has x[0]'s length)",
                 f, *d);
      free(X);
      return NULL;
    }
    for (size_t j = 0; j < (size_t)*d; j++) {
      const json_t *e = json_array_get(r, j);
      double val = json_is_number(e) ? json_number_value(e) : NAN;
      if (!isfinite(val) || fabs(val) > 1e150) {
        snprintf(f, sizeof f, "%s[%zu][%zu]", name, i, j);
        http_error(resp, HTTP_E_INVALID_PARAM, f, "%s must be a finite number below 1e150 in size",
                   f);
        free(X);
        return NULL;
      }
      X[i * (size_t)*d + j] = val;
    }
  }
  *n = (int)rows;
  return X;
}

static int get_num(const json_t *root, const char *key, double def, double *out, http_resp *resp) {
  const json_t *v = json_object_get(root, key);
  if (!v) {
    *out = def;
    return 0;
  }
  if (!json_is_number(v))
    return http_error(resp, HTTP_E_INVALID_PARAM, key, "%s must be a number", key);
  *out = json_number_value(v);
  return 0;
}

/* The matrix as rows of numbers; a non-finite entry (never produced by the analytic path,
 * which refuses an overflow first) is the string "NaN", "Infinity" or "-Infinity", as metric
 * values are, so that every row keeps its length. */
static json_t *matrix_json(const double *K, size_t rows, size_t cols) {
  json_t *mat = json_array();
  for (size_t i = 0; i < rows; i++) {
    json_t *row = json_array();
    for (size_t j = 0; j < cols; j++) {
      const double v = K[i * cols + j];
      json_array_append_new(row, isfinite(v) ? json_real(v)
                                             : json_string(isnan(v) ? "NaN"
                                                           : v > 0  ? "Infinity"
                                                                    : "-Infinity"));
    }
    json_array_append_new(mat, row);
  }
  return mat;
}

/* The empirical NTK of a stored network: an uploaded checkpoint ("checkpoint": id) or a
 * job's ("job": id, "step": S). Returns the status; the response is written. */
static int empirical(http_req *req, http_resp *resp, const json_t *root) {
  const json_t *jc = json_object_get(root, "checkpoint"), *jj = json_object_get(root, "job"),
               *js = json_object_get(root, "step"), *jo = json_object_get(root, "outputs");
  long ckpt = 0, job = 0, step = 0;
  if (jc && jj)
    return http_error(resp, HTTP_E_INVALID_PARAM, "checkpoint",
                      "give either checkpoint or job with step, not both");
  if (jc) {
    if (!json_is_integer(jc) || json_integer_value(jc) < 1)
      return http_error(resp, HTTP_E_INVALID_PARAM, "checkpoint",
                        "checkpoint must be the id of an uploaded checkpoint");
    ckpt = (long)json_integer_value(jc);
  } else if (jj) {
    if (!json_is_integer(jj) || json_integer_value(jj) < 1)
      return http_error(resp, HTTP_E_INVALID_PARAM, "job", "job must be a job id");
    if (!json_is_integer(js) || json_integer_value(js) < 0)
      return http_error(resp, HTTP_E_INVALID_PARAM, "step",
                        "step (the checkpoint's step of that job) must be an integer >= 0");
    job = (long)json_integer_value(jj);
    step = (long)json_integer_value(js);
  } else {
    return http_error(resp, HTTP_E_INVALID_PARAM, "checkpoint",
                      "the empirical NTK needs a network: checkpoint, or job with step");
  }
  int full = 1;
  if (jo) {
    const char *o = json_is_string(jo) ? json_string_value(jo) : "";
    if (!strcmp(o, "full")) full = 1;
    else if (!strcmp(o, "trace")) full = 0;
    else return http_error(resp, HTTP_E_INVALID_PARAM, "outputs", "outputs must be \"full\" or \"trace\"");
  }
  static const char *analytic_only[] = {"activation", "depth", "sigma_w2", "sigma_b2"};
  for (size_t i = 0; i < 4; i++)
    if (json_object_get(root, analytic_only[i]))
      return http_error(resp, HTTP_E_INVALID_PARAM, analytic_only[i],
                        "%s belongs to the analytic kernels; the empirical NTK takes the network "
                        "of its checkpoint", analytic_only[i]);
  int status = 0;
  void *buf = NULL;
  size_t len = 0;
  td_mlp *m = NULL;
  double *X = NULL, *X2 = NULL, *K = NULL;
  store *db;
  td_err e;
  td_err_clear(&e);
  int rc;
  if ((rc = http_store(req, &db, &e)) || (rc = store_checkpoint_read(db, job, step, ckpt, &buf, &len, &e))) {
    if (rc == TD_ENOTFOUND) {
      status = http_error(resp, HTTP_E_NOT_FOUND, ckpt ? "checkpoint" : "job",
                          ckpt ? "no checkpoint %ld" : "job %ld has no checkpoint at step %ld",
                          ckpt ? ckpt : job, step);
      goto out;
    }
    status = http_error_td(resp, &e);
    goto out;
  }
  td_mlp_cfg cfg;
  if ((rc = td_checkpoint_cfg(buf, len, &cfg, &e)) || (rc = td_mlp_create(&cfg, &m, &e)) ||
      (rc = td_checkpoint_load(m, buf, len, m->params, &e))) {
    status = http_error(resp, http_err_from_td(rc), ckpt ? "checkpoint" : "job",
                        "the stored network cannot be loaded: %s", e.msg);
    goto out;
  }
  int n1 = 0, n2 = 0, d = cfg.in_dim;
  if (!(X = read_rows(json_object_get(root, "x"), "x", &n1, &d, resp))) {
    status = resp->status;
    goto out;
  }
  const json_t *jx2 = json_object_get(root, "x2");
  if (jx2 && !(X2 = read_rows(jx2, "x2", &n2, &d, resp))) {
    status = resp->status;
    goto out;
  }
  if (!X2) n2 = n1;
  const double k = cfg.out_dim, N = X2 ? (double)n1 + n2 : n1;
  double widths = 0, need = 0;
  for (int i = 0; i < m->n_layers; i++)
    if (m->layers[i].kind == TD_LAYER_LINEAR) widths += m->layers[i].n_in + m->layers[i].n_out;
  double entries = (full ? k * k : 1) * n1 * n2;
  double work = 2 * N * k * (double)m->n_params + 2 * (full ? k * k : k) * n1 * n2 * widths;
  if (m->n_norm) /* the dense Jacobian path (entk.h): k backward passes, then k^2 GEMMs over P */
    work = 4 * N * k * (double)m->n_params + 2 * (full ? k * k : k) * n1 * n2 * (double)m->n_params;
  rc = td_entk_estimate(m, n1, n2, X2 != NULL, full, &need, &e);
  if (!rc && (entries > KERNELS_MAX_ENTRIES || work > ENTK_MAX_WORK || need > ENTK_MAX_BYTES)) {
    status = http_error(resp, HTTP_E_LIMIT_EXCEEDED, X2 ? "x2" : "x",
                        "an empirical NTK of %.0f entries, %.3g flops and %.0f MB is above the "
                        "caps (%.0f entries, %.0g flops, %.0f MB); send fewer rows or ask for "
                        "outputs \"trace\"", entries, work, need / 1048576.0,
                        KERNELS_MAX_ENTRIES, ENTK_MAX_WORK, ENTK_MAX_BYTES / 1048576.0);
    goto out;
  }
  K = rc ? NULL : malloc(sizeof(double) * (size_t)entries);
  td_entk_opts o = {.full = full, .max_bytes = ENTK_MAX_BYTES};
  if (rc || !K || (rc = td_entk_compute(m, m->params, X, n1, X2, n2, &o, K, &e))) {
    status = K ? http_error_td(resp, &e) : http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    goto out;
  }
  size_t rows = (size_t)n1 * (full ? (size_t)k : 1), cols = (size_t)n2 * (full ? (size_t)k : 1);
  json_t *res = json_pack("{s:o, s:s, s:s, s:i, s:[i,i]}", "matrix", matrix_json(K, rows, cols),
                          "kernel", "empirical_ntk", "outputs", full ? "full" : "trace",
                          "n_outputs", (int)k, "shape", (int)rows, (int)cols);
  if (!res) {
    status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    goto out;
  }
  http_buf_json_value(&resp->body, res);
  json_decref(res);
  resp->status = status = 200;
out:
  free(buf);
  td_mlp_destroy(m);
  free(X);
  free(X2);
  free(K);
  return status;
}

int api_kernels_create(http_req *req, http_resp *resp) {
  json_t *root;
  int status = http_json_body(req, resp, 0, &root);
  if (status) return status;
  double *X = NULL, *X2 = NULL, *K = NULL;
  static const char *known[] = {"kernel", "activation", "depth", "sigma_w2", "sigma_b2", "x",
                                "x2", "checkpoint", "job", "step", "outputs"};
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    size_t i = 0;
    while (i < sizeof known / sizeof known[0] && strcmp(known[i], key)) i++;
    if (i == sizeof known / sizeof known[0]) {
      status = http_error(resp, HTTP_E_INVALID_PARAM, key,
                          "unknown field %s (known: kernel, activation, depth, sigma_w2, "
                          "sigma_b2, x, x2; for empirical_ntk: checkpoint or job and step, "
                          "outputs)", key);
      goto out;
    }
  }
  td_kernel_cfg cfg = {.act = TD_KACT_RELU, .depth = 1};
  td_kernel_kind kind;
  const json_t *jk = json_object_get(root, "kernel"), *ja = json_object_get(root, "activation");
  if (json_is_string(jk) && !strcmp(json_string_value(jk), "empirical_ntk")) {
    status = empirical(req, resp, root);
    goto out;
  }
  if (!json_is_string(jk) || td_kernel_kind_parse(json_string_value(jk), &kind)) {
    status = http_error(resp, HTTP_E_INVALID_PARAM, "kernel",
                        "kernel must be \"nngp\", \"ntk\" or \"empirical_ntk\"");
    goto out;
  }
  static const char *empirical_only[] = {"checkpoint", "job", "step", "outputs"};
  for (size_t i = 0; i < 4; i++)
    if (json_object_get(root, empirical_only[i])) {
      status = http_error(resp, HTTP_E_INVALID_PARAM, empirical_only[i],
                          "%s belongs to kernel \"empirical_ntk\"", empirical_only[i]);
      goto out;
    }
  if (ja && (!json_is_string(ja) || td_kernel_act_parse(json_string_value(ja), &cfg.act))) {
    status = http_error(resp, HTTP_E_INVALID_PARAM, "activation",
                        "activation must be \"relu\", \"erf\" or \"linear\"");
    goto out;
  }
  const json_t *jd = json_object_get(root, "depth");
  if (jd) {
    if (!json_is_integer(jd) || json_integer_value(jd) < 0 ||
        json_integer_value(jd) > TD_KERNEL_MAX_DEPTH) {
      status = http_error(resp, HTTP_E_INVALID_PARAM, "depth",
                          "depth (hidden layers) must be an integer in [0, %d]", TD_KERNEL_MAX_DEPTH);
      goto out;
    }
    cfg.depth = (int)json_integer_value(jd);
  }
  if ((status = get_num(root, "sigma_w2", 1.0, &cfg.sigma_w2, resp))) goto out;
  if ((status = get_num(root, "sigma_b2", 0.0, &cfg.sigma_b2, resp))) goto out;
  if (!(cfg.sigma_w2 > 0) || cfg.sigma_w2 > 1e6) {
    status = http_error(resp, HTTP_E_INVALID_PARAM, "sigma_w2", "sigma_w2 must be in (0, 1e6]");
    goto out;
  }
  if (!(cfg.sigma_b2 >= 0) || cfg.sigma_b2 > 1e6) {
    status = http_error(resp, HTTP_E_INVALID_PARAM, "sigma_b2", "sigma_b2 must be in [0, 1e6]");
    goto out;
  }
  int n1 = 0, n2 = 0, d = 0;
  if (!(X = read_rows(json_object_get(root, "x"), "x", &n1, &d, resp))) {
    status = resp->status;
    goto out;
  }
  const json_t *jx2 = json_object_get(root, "x2");
  if (jx2 && !(X2 = read_rows(jx2, "x2", &n2, &d, resp))) {
    status = resp->status;
    goto out;
  }
  if (!X2) n2 = n1;
  double entries = (double)n1 * n2, work = entries * (d + 20.0 * cfg.depth);
  if (entries > KERNELS_MAX_ENTRIES || work > KERNELS_MAX_WORK) {
    status = http_error(resp, HTTP_E_LIMIT_EXCEEDED, X2 ? "x2" : "x",
                        "%d x %d kernel entries with d = %d and depth %d is above the caps "
                        "(%.0f entries, %.0f work units n1 n2 (d + 20 depth)); send fewer rows",
                        n1, n2, d, cfg.depth, KERNELS_MAX_ENTRIES, KERNELS_MAX_WORK);
    goto out;
  }
  K = malloc(sizeof(double) * (size_t)n1 * n2);
  if (!K) {
    status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    goto out;
  }
  td_err e;
  td_err_clear(&e);
  if (td_kernel_matrix(&cfg, kind, X, n1, X2, n2, d, K, &e)) {
    status = http_error_td(resp, &e);
    goto out;
  }
  for (size_t i = 0; i < (size_t)n1 * n2; i++)
    if (!isfinite(K[i])) {
      status = http_error(resp, HTTP_E_INVALID_PARAM, "sigma_w2",
                          "the kernel overflows double precision (entry %zu of %d x %d is %g): "
                          "the recursion multiplies by about sigma_w2 per layer, so lower "
                          "sigma_w2, depth or the input scale",
                          i, n1, n2, K[i]);
      goto out;
    }
  json_t *mat = matrix_json(K, (size_t)n1, (size_t)n2);
  json_t *res = json_pack("{s:o, s:s, s:s, s:i, s:f, s:f, s:[i,i]}", "matrix", mat, "kernel",
                          kind == TD_KERNEL_NTK ? "ntk" : "nngp", "activation",
                          cfg.act == TD_KACT_RELU ? "relu" : cfg.act == TD_KACT_ERF ? "erf" : "linear",
                          "depth", cfg.depth, "sigma_w2", cfg.sigma_w2, "sigma_b2", cfg.sigma_b2,
                          "shape", n1, n2);
  if (!res) {
    status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    goto out;
  }
  http_buf_json_value(&resp->body, res);
  json_decref(res);
  resp->status = status = 200;
out:
  free(X);
  free(X2);
  free(K);
  json_decref(root);
  return status;
}
