/* api_kernels.c: POST /api/v1/kernels, the analytic NNGP or NTK matrix of a deep fully
 * connected network between the rows the caller sends (synchronous, like /api/v1/fits; the
 * numerics are in core/kernels/kernels.c). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "kernels/kernels.h"

/* Caps: the kernel runs on the request's thread. Its cost is n1 n2 (d + depth) flops-ish
 * (each pair: a dot product and `depth` layers of transcendental functions, ~50 ns each),
 * and its answer is n1 n2 numbers of up to ~25 bytes of JSON. */
#define KERNELS_MAX_ROWS 4096
#define KERNELS_MAX_DIM 100000
#define KERNELS_MAX_ENTRIES 250000.0  /* n1 n2: about 6 MB of JSON */
#define KERNELS_MAX_WORK 2e8          /* n1 n2 (d + 20 depth): about a second */

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

int api_kernels_create(http_req *req, http_resp *resp) {
  if (!req->body_len)
    return http_error(resp, HTTP_E_INVALID_JSON, NULL, "the body is empty; send a JSON object");
  json_error_t je;
  json_t *root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return http_error(resp, HTTP_E_INVALID_JSON, NULL, "malformed JSON at line %d column %d: %s",
                      je.line, je.column, je.text);
  int status = 0;
  double *X = NULL, *X2 = NULL, *K = NULL;
  if (!json_is_object(root)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL, "the body must be a JSON object");
    goto out;
  }
  static const char *known[] = {"kernel", "activation", "depth", "sigma_w2", "sigma_b2", "x", "x2"};
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    size_t i = 0;
    while (i < sizeof known / sizeof known[0] && strcmp(known[i], key)) i++;
    if (i == sizeof known / sizeof known[0]) {
      status = http_error(resp, HTTP_E_INVALID_PARAM, key,
                          "unknown field %s (known: kernel, activation, depth, sigma_w2, "
                          "sigma_b2, x, x2)", key);
      goto out;
    }
  }
  td_kernel_cfg cfg = {.act = TD_KACT_RELU, .depth = 1};
  td_kernel_kind kind;
  const json_t *jk = json_object_get(root, "kernel"), *ja = json_object_get(root, "activation");
  if (!json_is_string(jk) || td_kernel_kind_parse(json_string_value(jk), &kind)) {
    status = http_error(resp, HTTP_E_INVALID_PARAM, "kernel", "kernel must be \"nngp\" or \"ntk\"");
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
  json_t *mat = json_array();
  for (int i = 0; i < n1; i++) {
    json_t *row = json_array();
    for (int j = 0; j < n2; j++) json_array_append_new(row, json_real(K[(size_t)i * n2 + j]));
    json_array_append_new(mat, row);
  }
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
