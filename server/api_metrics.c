/* api_metrics.c: metric series: one job's or several jobs' (columnar JSON, optionally
 * downsampled, optionally with wall-clock times) and a job's CSV. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

#define MAX_KEYS 64
#define MAX_POINTS_CAP 10000000LL


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

/* Parses ?keys=a,b into *k (duplicates dropped, order kept). An empty element ("a,,b", a
 * leading or trailing comma), an invalid key, or more than MAX_KEYS keys is a 400 naming
 * `keys`. 0 or a response status; on a status *k is freed. */
static int parse_keys_param(const char *v, http_resp *resp, keys_ctx *k) {
  if (strlen(v) >= MAX_KEYS * 130)
    return http_error(resp, HTTP_E_INVALID_QUERY, "keys", "too many keys (at most %d)", MAX_KEYS);
  const char *p = v;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char t[132];
    int status = 0;
    if (len == 0)
      status = http_error(resp, HTTP_E_INVALID_QUERY, "keys",
                          k->n || end ? "keys has an empty element (two commas in a row, or a "
                                        "comma at an end)"
                                      : "keys is empty");
    else if (len > 128)
      status = http_error(resp, HTTP_E_INVALID_QUERY, "keys",
                          "a key is 1..128 printable characters without spaces, quotes, commas "
                          "or backslashes");
    if (!status) {
      memcpy(t, p, len);
      t[len] = 0;
      if (!store_valid_key(t))
        status = http_error(resp, HTTP_E_INVALID_QUERY, "keys",
                            "a key is 1..128 printable characters without spaces, quotes, commas "
                            "or backslashes");
    }
    if (!status) {
      int dup = 0;
      for (int i = 0; i < k->n; i++) dup |= strcmp(k->names[i], t) == 0;
      if (!dup && k->n == MAX_KEYS)
        status = http_error(resp, HTTP_E_INVALID_QUERY, "keys", "too many keys (at most %d)",
                            MAX_KEYS);
      else if (!dup)
        collect_key(k, t);
    }
    if (status) {
      keys_free(k);
      return status;
    }
    if (!end) return 0;
    p = end + 1;
  }
}

/* A job's clock anchors (step, unix ms), in step order. */
typedef struct clock_ctx {
  long *step;
  double *ms;
  size_t n, cap;
  int failed;
} clock_ctx;

static void collect_anchor(void *ctx, long step, double ms) {
  clock_ctx *c = ctx;
  if (c->failed) return;
  if (c->n == c->cap) {
    size_t nc = c->cap ? 2 * c->cap : 64;
    long *ns = realloc(c->step, nc * sizeof *ns);
    if (ns) c->step = ns;
    double *nm = ns ? realloc(c->ms, nc * sizeof *nm) : NULL;
    if (!ns || !nm) {
      c->failed = 1;
      return;
    }
    c->ms = nm;
    c->cap = nc;
  }
  c->step[c->n] = step;
  c->ms[c->n++] = ms;
}

/* The wall time of `step` in unix seconds: linear between the anchors around it, the nearest
 * anchor outside them; NaN without anchors (points written before migration 0004). */
static double clock_at(const clock_ctx *c, long step) {
  if (!c->n) return NAN;
  if (step <= c->step[0]) return c->ms[0] / 1e3;
  if (step >= c->step[c->n - 1]) return c->ms[c->n - 1] / 1e3;
  size_t lo = 0, hi = c->n - 1; /* step[lo] < step < step[hi] */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->step[mid] <= step) lo = mid;
    else hi = mid;
  }
  double f = (double)(step - c->step[lo]) / (double)(c->step[hi] - c->step[lo]);
  return (c->ms[lo] + f * (c->ms[hi] - c->ms[lo])) / 1e3;
}

typedef struct series_ctx {
  http_buf steps, values, times;
  const clock_ctx *clock; /* NULL: no times */
  size_t n;
} series_ctx;

static void put_point(void *ctx, long step, double value) {
  series_ctx *s = ctx;
  if (s->n++) {
    http_buf_add(&s->steps, ",", 1);
    http_buf_add(&s->values, ",", 1);
    if (s->clock) http_buf_add(&s->times, ",", 1);
  }
  http_buf_printf(&s->steps, "%ld", step);
  http_buf_json_num(&s->values, value);
  if (s->clock) {
    double t = clock_at(s->clock, step);
    if (isnan(t)) http_buf_add(&s->times, "null", 4);
    else http_buf_printf(&s->times, "%.3f", t);
  }
}

/* Append {"a":{"step":[..],"value":[..],"total":n[,"time":[..]]},...} for keys k of job id.
 * 0 or a TD_* code (details in e). */
static int write_series(http_buf *b, store *st, int64_t id, const keys_ctx *k, long since,
                        size_t max_points, int with_time, td_err *e) {
  clock_ctx clock = {0};
  int rc = 0;
  if (with_time && !(rc = store_metric_times(st, id, collect_anchor, &clock, e)) && clock.failed)
    rc = td_err_set(e, TD_ENOMEM, NULL, "out of memory");
  http_buf_add(b, "{", 1);
  for (int i = 0; i < k->n && !rc; i++) {
    series_ctx s = {.n = 0, .clock = with_time ? &clock : NULL};
    http_buf_init(&s.steps);
    http_buf_init(&s.values);
    http_buf_init(&s.times);
    size_t total = 0;
    rc = store_metric_series(st, id, k->names[i], since, max_points, put_point, &s, &total, e);
    if (!rc) {
      if (i) http_buf_add(b, ",", 1);
      http_buf_json_str(b, k->names[i]);
      http_buf_str(b, ":{\"step\":[");
      if (s.steps.len) http_buf_add(b, s.steps.data, s.steps.len);
      http_buf_str(b, "],\"value\":[");
      if (s.values.len) http_buf_add(b, s.values.data, s.values.len);
      http_buf_add(b, "]", 1);
      if (with_time) {
        http_buf_str(b, ",\"time\":[");
        if (s.times.len) http_buf_add(b, s.times.data, s.times.len);
        http_buf_add(b, "]", 1);
      }
      http_buf_printf(b, ",\"total\":%zu}", total);
      if (s.steps.failed || s.values.failed || s.times.failed) b->failed = 1;
    }
    http_buf_free(&s.steps);
    http_buf_free(&s.values);
    http_buf_free(&s.times);
  }
  http_buf_add(b, "}", 1);
  free(clock.step);
  free(clock.ms);
  return rc;
}

/* The common query parameters max_points, since_step and time; 0 or a response status. */
static int read_series_query(http_req *req, http_resp *resp, long long *max_points,
                             long long *since, int *with_time) {
  const char *v;
  *max_points = 0;
  *since = LLONG_MIN / 2;
  *with_time = 0;
  if ((v = http_query(req, "max_points")) && http_parse_ll(v, 2, MAX_POINTS_CAP, max_points))
    return http_error(resp, HTTP_E_INVALID_QUERY, "max_points",
                      "max_points must be an integer in 2..%lld", MAX_POINTS_CAP);
  if ((v = http_query(req, "since_step")) &&
      http_parse_ll(v, LONG_MIN / 2, LONG_MAX / 2, since))
    return http_error(resp, HTTP_E_INVALID_QUERY, "since_step",
                      "since_step must be an integer (points with step >= since_step are returned)");
  if ((v = http_query(req, "time"))) {
    if (strcmp(v, "0") && strcmp(v, "1"))
      return http_error(resp, HTTP_E_INVALID_QUERY, "time",
                        "time must be 0 or 1 (1 adds each point's wall time, unix seconds)");
    *with_time = v[0] == '1';
  }
  return 0;
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
    int status = parse_keys_param(v, resp, k);
    if (status) return status;
    if (!k->failed && (status = check_keys_exist(resp, st, id, job_status, k))) return status;
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
  long long max_points, since;
  int with_time;
  if ((status = read_series_query(req, resp, &max_points, &since, &with_time))) return status;
  keys_ctx kc = {0}, *k = &kc;
  if ((status = pick_keys(req, resp, st, id, job_status, k))) {
    keys_free(k);
    return status;
  }
  http_buf *b = &resp->body;
  http_buf_printf(b, "{\"job_id\":%lld,\"metrics\":", (long long)id);
  td_err e;
  td_err_clear(&e);
  int rc = write_series(b, st, id, k, (long)since, (size_t)max_points, with_time, &e);
  keys_free(k);
  if (rc) {
    http_buf_free(b);
    return http_error_td(resp, &e);
  }
  http_buf_str(b, "}");
  resp->status = 200;
  return 200;
}

#define MAX_JOBS 100
#define MULTI_BUDGET 4000000LL

/* GET /api/v1/metrics?jobs=1,2&keys=a,b&max_points=N&since_step=S&time=1: several jobs' series
 * in one answer, {"jobs": {"1": {"job_id": 1, "metrics": {...}}, ...}}, each part shaped as
 * the per-job response. Without keys, every key of each job; with keys, those of them that
 * the job reported (a comparison of different kinds asks for keys some jobs lack). Without
 * max_points a series is downsampled to 1000 points; jobs x keys x max_points is at most
 * MULTI_BUDGET. */
int api_metrics_multi(http_req *req, http_resp *resp) {
  const char *v = http_query(req, "jobs");
  if (!v || !*v)
    return http_error(resp, HTTP_E_INVALID_QUERY, "jobs",
                      "jobs is required: a comma-separated list of job ids (at most %d)", MAX_JOBS);
  int64_t ids[MAX_JOBS];
  int n_ids = 0;
  char buf[MAX_JOBS * 21];
  if (strlen(v) >= sizeof buf)
    return http_error(resp, HTTP_E_INVALID_QUERY, "jobs", "too many jobs (at most %d)", MAX_JOBS);
  strcpy(buf, v);
  char *save = NULL;
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int64_t id;
    if (http_parse_id(t, &id))
      return http_error(resp, HTTP_E_INVALID_QUERY, "jobs",
                        "'%.40s' is not a job id (ids are positive integers)", t);
    int dup = 0;
    for (int i = 0; i < n_ids; i++) dup |= ids[i] == id;
    if (dup) continue;
    if (n_ids == MAX_JOBS)
      return http_error(resp, HTTP_E_INVALID_QUERY, "jobs", "too many jobs (at most %d)", MAX_JOBS);
    ids[n_ids++] = id;
  }
  if (!n_ids) return http_error(resp, HTTP_E_INVALID_QUERY, "jobs", "jobs is empty");
  long long max_points, since;
  int with_time, status;
  if ((status = read_series_query(req, resp, &max_points, &since, &with_time))) return status;
  /* a bound on the answer: without max_points each series is downsampled to 1000 points */
  if (!http_query(req, "max_points")) max_points = 1000;
  keys_ctx asked = {0};
  if ((v = http_query(req, "keys")) && (status = parse_keys_param(v, resp, &asked)))
    return status;
  /* jobs x keys x max_points (every key of a job counted as MAX_KEYS) is at most MULTI_BUDGET
   * points, about 80 MB of JSON */
  long long budget = (long long)n_ids * (asked.n ? asked.n : MAX_KEYS) * max_points;
  if (budget > MULTI_BUDGET) {
    keys_free(&asked);
    return http_error(resp, HTTP_E_INVALID_QUERY, "max_points",
                      "jobs x keys x max_points is at most %lld points (here %d x %d x %lld; "
                      "without keys a job counts as %d keys); ask for fewer",
                      MULTI_BUDGET, n_ids, asked.n ? asked.n : MAX_KEYS, max_points, MAX_KEYS);
  }
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e)) {
    keys_free(&asked);
    return http_error_td(resp, &e);
  }
  for (int i = 0; i < n_ids; i++) { /* every job exists, before any output */
    int js;
    if (store_job_status(st, ids[i], &js, &e)) {
      keys_free(&asked);
      if (e.code == TD_ENOTFOUND)
        return http_error(resp, HTTP_E_NOT_FOUND, "jobs", "no job %lld", (long long)ids[i]);
      return http_error_td(resp, &e);
    }
  }
  http_buf *b = &resp->body;
  http_buf_str(b, "{\"jobs\":{");
  int rc = 0;
  for (int i = 0; i < n_ids && !rc; i++) {
    keys_ctx have = {0}, use = {0};
    rc = store_metric_keys(st, ids[i], collect_key, &have, &e);
    if (!rc && asked.n) {
      for (int a = 0; a < asked.n; a++)
        for (int h = 0; h < have.n; h++)
          if (!strcmp(asked.names[a], have.names[h])) collect_key(&use, asked.names[a]);
    }
    keys_ctx *k = asked.n ? &use : &have;
    if (!rc && (have.failed || use.failed)) rc = td_err_set(&e, TD_ENOMEM, NULL, "out of memory");
    if (!rc) {
      http_buf_printf(b, "%s\"%lld\":{\"job_id\":%lld,\"metrics\":", i ? "," : "",
                      (long long)ids[i], (long long)ids[i]);
      rc = write_series(b, st, ids[i], k, (long)since, (size_t)max_points, with_time, &e);
      http_buf_add(b, "}", 1);
    }
    keys_free(&have);
    keys_free(&use);
  }
  keys_free(&asked);
  if (rc) {
    http_buf_free(b);
    return http_error_td(resp, &e);
  }
  http_buf_str(b, "}}");
  resp->status = 200;
  return 200;
}

/* metrics.csv streams: each call of the content reader borrows a connection, reads the next
 * page of points (keyset by step, CSV_PAGE rows) of the current key and formats it, so the
 * whole file is never in memory. Pages are separate reads: points written while the file is
 * being sent may appear in it (a finished job's file is exact). */
#define CSV_PAGE 4096

typedef struct csv_stream {
  store_pool *pool;
  int64_t id;
  keys_ctx keys;
  int k;            /* current key */
  long next;        /* next step of the current key */
  http_buf out;     /* formatted, not yet sent: out.data[sent..len) */
  size_t sent;
  int header_done, failed;
  long last_step;
} csv_stream;

static void csv_point(void *ctx, long step, double value) {
  csv_stream *c = ctx;
  const char *key = c->keys.names[c->k];
  if (isnan(value)) http_buf_printf(&c->out, "%s,%ld,NaN\n", key, step);
  else if (isinf(value)) http_buf_printf(&c->out, "%s,%ld,%s\n", key, step, value > 0 ? "Infinity" : "-Infinity");
  else http_buf_printf(&c->out, "%s,%ld,%.17g\n", key, step, value);
  c->last_step = step;
}

static long csv_read(void *ctx, char *buf, size_t max) {
  csv_stream *c = ctx;
  while (c->sent == c->out.len) {
    c->out.len = 0;
    c->sent = 0;
    if (!c->header_done) {
      http_buf_str(&c->out, "key,step,value\n");
      c->header_done = 1;
      break;
    }
    if (c->k >= c->keys.n) return 0;
    store *st = NULL;
    td_err e;
    td_err_clear(&e);
    if (store_pool_get(c->pool, &st, &e)) return -1;
    size_t n = 0;
    int rc = store_metric_page(st, c->id, c->keys.names[c->k], c->next, CSV_PAGE, csv_point, c, &n, &e);
    store_pool_put(c->pool, st);
    if (rc || c->out.failed) return -1;
    if (n < CSV_PAGE) {
      c->k++;
      c->next = LONG_MIN / 2;
    } else {
      c->next = c->last_step + 1;
    }
  }
  size_t n = c->out.len - c->sent;
  if (n > max) n = max;
  memcpy(buf, c->out.data + c->sent, n);
  c->sent += n;
  return (long)n;
}

static void csv_free(void *ctx) {
  csv_stream *c = ctx;
  keys_free(&c->keys);
  http_buf_free(&c->out);
  free(c);
}

int api_metrics_csv(http_req *req, http_resp *resp) {
  store *st;
  int64_t id;
  int job_status = -1;
  int status = check_job(req, resp, &st, &id, &job_status);
  if (status) return status;
  csv_stream *c = calloc(1, sizeof *c);
  if (!c) return http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
  if ((status = pick_keys(req, resp, st, id, job_status, &c->keys))) {
    csv_free(c);
    return status;
  }
  c->pool = req->pool;
  c->id = id;
  c->next = LONG_MIN / 2;
  http_buf_init(&c->out);
  resp->stream = csv_read;
  resp->stream_free = csv_free;
  resp->stream_ctx = c;
  resp->content_type = "text/csv; charset=utf-8";
  resp->status = 200;
  return 200;
}
