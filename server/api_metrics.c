/* api_metrics.c: a job's metric series: columnar JSON (optionally downsampled) and CSV. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

#define MAX_KEYS 64
#define MAX_POINTS_CAP 10000000LL

/* Same rule as store_mw_put: 1..128 printable ASCII bytes, no space, quote, comma, backslash. */
static int valid_key(const char *k) {
  size_t n = 0;
  for (; k[n]; n++) {
    unsigned char c = (unsigned char)k[n];
    if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == '\\' || n >= 128) return 0;
  }
  return n > 0;
}

typedef struct keys_ctx {
  char **names;
  int n, cap, failed;
} keys_ctx;

static void collect_key(void *ctx, const char *key) {
  keys_ctx *k = ctx;
  if (k->failed) return;
  if (k->n == k->cap) {
    int nc = k->cap ? 2 * k->cap : 16;
    char **nn = realloc(k->names, (size_t)nc * sizeof *nn);
    if (!nn) {
      k->failed = 1;
      return;
    }
    k->names = nn;
    k->cap = nc;
  }
  if (!(k->names[k->n] = strdup(key ? key : ""))) {
    k->failed = 1;
    return;
  }
  k->n++;
}

static void keys_free(keys_ctx *k) {
  for (int i = 0; i < k->n; i++) free(k->names[i]);
  free(k->names);
  memset(k, 0, sizeof *k);
}

typedef struct series_ctx {
  http_buf steps, values;
  size_t n;
} series_ctx;

static void put_point(void *ctx, long step, double value) {
  series_ctx *s = ctx;
  if (s->n++) {
    http_buf_add(&s->steps, ",", 1);
    http_buf_add(&s->values, ",", 1);
  }
  http_buf_printf(&s->steps, "%ld", step);
  http_buf_json_num(&s->values, value);
}

/* The job id of the route, its existence and *job_status (STORE_*); 0 or a response status. */
static int check_job(http_req *req, http_resp *resp, store **st, int64_t *id, int *job_status) {
  td_err e;
  td_err_clear(&e);
  if (req->n_seg < 1 || http_parse_id(req->seg[0], id))
    return http_error(resp, HTTP_E_NOT_FOUND, NULL,
                      "no such job (ids are positive integers without a sign or leading zeros)");
  if (http_store(req, st, &e) || store_job_status(*st, *id, job_status, &e))
    return http_error_td(resp, &e);
  return 0;
}

/* A key asked for in ?keys= that a finished job never reported: 400 naming it, with the keys
 * the job has. While the job is queued or running an absent key may still come, so it is an
 * empty series then. 0 or a response status. */
static int check_keys_exist(http_resp *resp, store *st, int64_t id, int job_status,
                            const keys_ctx *asked) {
  if (job_status == STORE_QUEUED || job_status == STORE_RUNNING) return 0;
  keys_ctx have = {0};
  td_err e;
  td_err_clear(&e);
  if (store_metric_keys(st, id, collect_key, &have, &e)) {
    keys_free(&have);
    return http_error_td(resp, &e);
  }
  int status = have.failed ? http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory") : 0;
  for (int i = 0; i < asked->n && !status; i++) {
    int found = 0;
    for (int j = 0; j < have.n && !found; j++) found = strcmp(asked->names[i], have.names[j]) == 0;
    if (found) continue;
    char list[300] = "";
    size_t n = 0;
    for (int j = 0; j < have.n && n < sizeof list; j++)
      n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", j ? "," : "", have.names[j]);
    if (n >= sizeof list) memcpy(list + sizeof list - 4, "...", 4);
    status = http_error(resp, HTTP_E_INVALID_QUERY, "keys",
                        "job %lld has no metric '%.128s'; its keys are: %s", (long long)id,
                        asked->names[i], have.n ? list : "(none)");
  }
  keys_free(&have);
  return status;
}

/* The keys to return: from ?keys=a,b or every key of the job. 0 or a response status. */
static int pick_keys(http_req *req, http_resp *resp, store *st, int64_t id, int job_status,
                     keys_ctx *k) {
  const char *v = http_query(req, "keys");
  if (v) {
    char buf[MAX_KEYS * 130];
    if (strlen(v) >= sizeof buf)
      return http_error(resp, HTTP_E_INVALID_QUERY, "keys", "too many keys (at most %d)", MAX_KEYS);
    strcpy(buf, v);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
      if (!valid_key(t))
        return http_error(resp, HTTP_E_INVALID_QUERY, "keys",
                          "a key is 1..128 printable characters without spaces, quotes, commas "
                          "or backslashes");
      int dup = 0;
      for (int i = 0; i < k->n; i++) dup |= strcmp(k->names[i], t) == 0;
      if (dup) continue;
      if (k->n == MAX_KEYS)
        return http_error(resp, HTTP_E_INVALID_QUERY, "keys", "too many keys (at most %d)",
                          MAX_KEYS);
      collect_key(k, t);
    }
    if (!k->n) return http_error(resp, HTTP_E_INVALID_QUERY, "keys", "keys is empty");
    if (!k->failed) {
      int status = check_keys_exist(resp, st, id, job_status, k);
      if (status) return status;
    }
  } else {
    td_err e;
    td_err_clear(&e);
    if (store_metric_keys(st, id, collect_key, k, &e)) return http_error_td(resp, &e);
  }
  return k->failed ? http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory") : 0;
}

int api_metrics_get(http_req *req, http_resp *resp) {
  store *st;
  int64_t id;
  int job_status = -1;
  int status = check_job(req, resp, &st, &id, &job_status);
  if (status) return status;
  long long max_points = 0, since = LLONG_MIN / 2;
  const char *v;
  if ((v = http_query(req, "max_points")) && http_parse_ll(v, 2, MAX_POINTS_CAP, &max_points))
    return http_error(resp, HTTP_E_INVALID_QUERY, "max_points",
                      "max_points must be an integer in 2..%lld", MAX_POINTS_CAP);
  if ((v = http_query(req, "since_step")) &&
      http_parse_ll(v, LONG_MIN / 2, LONG_MAX / 2, &since))
    return http_error(resp, HTTP_E_INVALID_QUERY, "since_step",
                      "since_step must be an integer (points with step >= since_step are returned)");
  keys_ctx kc = {0}, *k = &kc;
  if ((status = pick_keys(req, resp, st, id, job_status, k))) {
    keys_free(k);
    return status;
  }
  http_buf *b = &resp->body;
  http_buf_printf(b, "{\"job_id\":%lld,\"metrics\":{", (long long)id);
  td_err e;
  td_err_clear(&e);
  for (int i = 0; i < k->n; i++) {
    series_ctx s = {.n = 0};
    http_buf_init(&s.steps);
    http_buf_init(&s.values);
    size_t total = 0;
    int rc = store_metric_series(st, id, k->names[i], (long)since, (size_t)max_points, put_point,
                                 &s, &total, &e);
    if (!rc) {
      if (i) http_buf_add(b, ",", 1);
      http_buf_json_str(b, k->names[i]);
      http_buf_str(b, ":{\"step\":[");
      if (s.steps.len) http_buf_add(b, s.steps.data, s.steps.len);
      http_buf_str(b, "],\"value\":[");
      if (s.values.len) http_buf_add(b, s.values.data, s.values.len);
      http_buf_printf(b, "],\"total\":%zu}", total);
      if (s.steps.failed || s.values.failed) b->failed = 1;
    }
    http_buf_free(&s.steps);
    http_buf_free(&s.values);
    if (rc) {
      keys_free(k);
      return http_error_td(resp, &e);
    }
  }
  keys_free(k);
  http_buf_str(b, "}}");
  resp->status = 200;
  return 200;
}

typedef struct csv_ctx {
  http_buf *b;
  const char *key;
} csv_ctx;

static void csv_point(void *ctx, long step, double value) {
  csv_ctx *c = ctx;
  if (isnan(value)) http_buf_printf(c->b, "%s,%ld,NaN\n", c->key, step);
  else if (isinf(value)) http_buf_printf(c->b, "%s,%ld,%s\n", c->key, step, value > 0 ? "Infinity" : "-Infinity");
  else http_buf_printf(c->b, "%s,%ld,%.17g\n", c->key, step, value);
}

int api_metrics_csv(http_req *req, http_resp *resp) {
  store *st;
  int64_t id;
  int job_status = -1;
  int status = check_job(req, resp, &st, &id, &job_status);
  if (status) return status;
  keys_ctx kc = {0}, *k = &kc;
  if ((status = pick_keys(req, resp, st, id, job_status, k))) {
    keys_free(k);
    return status;
  }
  td_err e;
  td_err_clear(&e);
  http_buf_str(&resp->body, "key,step,value\n");
  for (int i = 0; i < k->n; i++) {
    csv_ctx c = {&resp->body, k->names[i]};
    if (store_metric_series(st, id, k->names[i], LONG_MIN / 2, 0, csv_point, &c, NULL, &e)) {
      keys_free(k);
      return http_error_td(resp, &e);
    }
  }
  keys_free(k);
  resp->content_type = "text/csv; charset=utf-8";
  resp->status = 200;
  return 200;
}
