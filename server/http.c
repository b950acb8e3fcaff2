/* http.c: the libmicrohttpd daemon, routing, body limits, auth and JSON error responses.
 *
 * The daemon runs a pool of epoll threads (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL with
 * MHD_OPTION_THREAD_POOL_SIZE); a handler runs on the polling thread, so handlers stay short
 * and borrow a database connection from a pool. A request body is buffered up to max_body;
 * a larger one is answered 413 as soon as its Content-Length is known (or when the upload
 * passes the limit). Every error, including 404/405/413/415, is a JSON object
 * {"error":{"code","message","field"}} whose status comes from the HTTP_ERRORS table. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "api.h"
#include "log.h"

/* ---------------------------------------------------------------- buffer */

void http_buf_init(http_buf *b) { memset(b, 0, sizeof *b); }

void http_buf_free(http_buf *b) {
  free(b->data);
  http_buf_init(b);
}

static int buf_reserve(http_buf *b, size_t extra) {
  if (b->failed) return 0;
  if (b->len + extra + 1 <= b->cap) return 1;
  size_t nc = b->cap ? b->cap : 256;
  while (nc < b->len + extra + 1) {
    if (nc > SIZE_MAX / 2) {
      b->failed = 1;
      return 0;
    }
    nc *= 2;
  }
  char *nd = realloc(b->data, nc);
  if (!nd) {
    b->failed = 1;
    return 0;
  }
  b->data = nd;
  b->cap = nc;
  return 1;
}

void http_buf_add(http_buf *b, const char *s, size_t n) {
  if (!buf_reserve(b, n)) return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void http_buf_str(http_buf *b, const char *s) { http_buf_add(b, s, strlen(s)); }

void http_buf_printf(http_buf *b, const char *fmt, ...) {
  char tmp[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof tmp) {
    http_buf_add(b, tmp, (size_t)n);
    return;
  }
  if (!buf_reserve(b, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid (RFC 3629). */
static int utf8_len(const unsigned char *s) {
  unsigned char c = s[0];
  if (c < 0x80) return 1;
  int n;
  unsigned cp;
  if (c >= 0xc2 && c <= 0xdf) n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) n = 3, cp = c & 0x0f;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, cp = c & 0x07;
  else return 0;
  for (int i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return n;
}

void http_buf_json_str(http_buf *b, const char *s) {
  if (!s) {
    http_buf_add(b, "null", 4);
    return;
  }
  http_buf_add(b, "\"", 1);
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    const unsigned char *run = p;
    while (*p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') p++;
    if (p > run) http_buf_add(b, (const char *)run, (size_t)(p - run));
    if (!*p) break;
    unsigned char c = *p;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      http_buf_add(b, e, 2);
      p++;
    } else if (c < 0x20) {
      switch (c) {
      case '\n': http_buf_add(b, "\\n", 2); break;
      case '\r': http_buf_add(b, "\\r", 2); break;
      case '\t': http_buf_add(b, "\\t", 2); break;
      default: http_buf_printf(b, "\\u%04x", c);
      }
      p++;
    } else {
      int n = utf8_len(p);
      if (n) {
        http_buf_add(b, (const char *)p, (size_t)n);
        p += n;
      } else {
        http_buf_add(b, "\xef\xbf\xbd", 3); /* U+FFFD */
        p++;
      }
    }
  }
  http_buf_add(b, "\"", 1);
}

void http_buf_json_num(http_buf *b, double v) {
  if (isnan(v)) {
    http_buf_add(b, "\"NaN\"", 5);
  } else if (isinf(v)) {
    if (v > 0) http_buf_add(b, "\"Infinity\"", 10);
    else http_buf_add(b, "\"-Infinity\"", 11);
  } else {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%.17g", v);
    http_buf_add(b, tmp, (size_t)n);
  }
}

void http_buf_json_real(http_buf *b, double v) {
  if (!isfinite(v)) {
    http_buf_add(b, "null", 4);
    return;
  }
  char tmp[40];
  int n = 0;
  for (int prec = 15; prec <= 17; prec++) {
    n = snprintf(tmp, sizeof tmp, "%.*g", prec, v);
    if (strtod(tmp, NULL) == v) break;
  }
  if (!strpbrk(tmp, ".eEn")) { /* keep it a real: 1 -> 1.0 */
    tmp[n++] = '.';
    tmp[n++] = '0';
    tmp[n] = '\0';
  }
  http_buf_add(b, tmp, (size_t)n);
}

void http_buf_json_value(http_buf *b, const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    const char *k;
    json_t *x;
    int first = 1;
    http_buf_add(b, "{", 1);
    json_object_foreach((json_t *)v, k, x) {
      if (!first) http_buf_add(b, ",", 1);
      first = 0;
      http_buf_json_str(b, k);
      http_buf_add(b, ":", 1);
      http_buf_json_value(b, x);
    }
    http_buf_add(b, "}", 1);
    break;
  }
  case JSON_ARRAY: {
    size_t i;
    json_t *x;
    http_buf_add(b, "[", 1);
    json_array_foreach(v, i, x) {
      if (i) http_buf_add(b, ",", 1);
      http_buf_json_value(b, x);
    }
    http_buf_add(b, "]", 1);
    break;
  }
  case JSON_STRING: http_buf_json_str(b, json_string_value(v)); break;
  case JSON_INTEGER: http_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
  case JSON_REAL: http_buf_json_real(b, json_real_value(v)); break;
  case JSON_TRUE: http_buf_add(b, "true", 4); break;
  case JSON_FALSE: http_buf_add(b, "false", 5); break;
  default: http_buf_add(b, "null", 4); break;
  }
}

char *http_json_dump(const json_t *v) {
  http_buf b;
  http_buf_init(&b);
  http_buf_json_value(&b, v);
  if (b.failed || !b.data) {
    http_buf_free(&b);
    return NULL;
  }
  return b.data;
}

/* ---------------------------------------------------------------- errors */

static const struct {
  const char *name;
  int status;
  int td;
} err_table[HTTP_E__COUNT] = {
#define HTTP__ERR_ROW(e, name, status, td) {name, status, td},
    HTTP_ERRORS(HTTP__ERR_ROW)
#undef HTTP__ERR_ROW
};

int http_err_status(http_errcode e) {
  return (e >= 0 && e < HTTP_E__COUNT) ? err_table[e].status : 500;
}
const char *http_err_name(http_errcode e) {
  return (e >= 0 && e < HTTP_E__COUNT) ? err_table[e].name : "internal";
}
http_errcode http_err_from_td(int td_code) {
  for (int i = 0; i < HTTP_E__COUNT; i++)
    if (err_table[i].td != 0 && err_table[i].td == td_code) return (http_errcode)i;
  return HTTP_E_INTERNAL;
}

static int error_body(http_resp *resp, http_errcode code, const char *field, const char *msg) {
  http_buf_free(&resp->body);
  if (resp->fd >= 0) {
    close(resp->fd);
    resp->fd = -1;
  }
  resp->status = http_err_status(code);
  resp->content_type = "application/json";
  http_buf_str(&resp->body, "{\"error\":{\"code\":");
  http_buf_json_str(&resp->body, http_err_name(code));
  http_buf_str(&resp->body, ",\"message\":");
  http_buf_json_str(&resp->body, msg);
  http_buf_str(&resp->body, ",\"field\":");
  http_buf_json_str(&resp->body, field && *field ? field : NULL);
  http_buf_str(&resp->body, "}}");
  return resp->status;
}

int http_error(http_resp *resp, http_errcode code, const char *field, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return error_body(resp, code, field, msg);
}

int http_json_body(http_req *req, http_resp *resp, int allow_empty, json_t **out) {
  *out = NULL;
  if (!req->body_len) {
    if (allow_empty) return 0;
    return http_error(resp, HTTP_E_INVALID_JSON, NULL, "the body is empty; send a JSON object");
  }
  json_error_t je;
  json_t *root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
  if (!root)
    return http_error(resp, HTTP_E_INVALID_JSON, NULL, "malformed JSON at line %d column %d: %s",
                      je.line, je.column, je.text);
  if (!json_is_object(root)) {
    json_decref(root);
    return http_error(resp, HTTP_E_INVALID_REQUEST, NULL, "the body must be a JSON object");
  }
  *out = root;
  return 0;
}

int http_error_td(http_resp *resp, const td_err *e) {
  http_errcode c = http_err_from_td(e->code);
  if (c == HTTP_E_IO || c == HTTP_E_INTERNAL)
    log_emit(LOG_ERROR, "internal_error", "code=%d msg=\"%s\"", e->code, e->msg);
  return error_body(resp, c, e->field, e->msg[0] ? e->msg : td_strerror(e->code));
}

void http_resp_header(http_resp *resp, const char *name, const char *fmt, ...) {
  if (resp->n_hdr >= (int)(sizeof resp->hdr / sizeof resp->hdr[0])) return;
  resp->hdr[resp->n_hdr].name = name;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(resp->hdr[resp->n_hdr].value, sizeof resp->hdr[0].value, fmt, ap);
  va_end(ap);
  resp->n_hdr++;
}

const char *http_query(const http_req *req, const char *name) {
  if (req->args) return http_query_args_get(req->args, name);
  return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(const http_req *req, const char *name) {
  return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int http_store(http_req *req, store **out, td_err *err) {
  if (!req->st) {
    int rc = store_pool_get(req->pool, &req->st, err);
    if (rc) {
      *out = NULL;
      return rc;
    }
  }
  *out = req->st;
  return 0;
}

int http_parse_ll(const char *s, long long min, long long max, long long *out) {
  if (!s || !*s) return TD_EINVAL;
  const char *p = s;
  int neg = 0;
  if (*p == '-') neg = 1, p++;
  if (!*p) return TD_EINVAL;
  unsigned long long v = 0;
  for (; *p; p++) {
    if (*p < '0' || *p > '9') return TD_EINVAL;
    if (v > (ULLONG_MAX - 9) / 10) return TD_EINVAL;
    v = v * 10 + (unsigned)(*p - '0');
    if (v > (unsigned long long)LLONG_MAX + 1) return TD_EINVAL;
  }
  long long r;
  if (neg) r = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
  else if (v > (unsigned long long)LLONG_MAX) return TD_EINVAL;
  else r = (long long)v;
  if (r < min || r > max) return TD_EINVAL;
  *out = r;
  return 0;
}

int http_parse_id(const char *s, int64_t *out) {
  long long v;
  /* Canonical form only: "01" or "+1" would be a second name for job 1. */
  if (!s || *s == '-' || *s == '0' || http_parse_ll(s, 1, 9007199254740992LL, &v))
    return TD_EINVAL;
  *out = v;
  return 0;
}

/* State of one http_query_check pass: the first problem found wins. */
typedef struct qcheck {
  const char *allowed;
  unsigned seen;  /* bit i: the i-th allowed name was given */
  int bad;        /* 0 ok, 1 unknown, 2 repeated, 3 without a value */
  char key[65];
} qcheck;

/* Index of `key` in the comma-separated `list`, or -1. */
static int list_index(const char *list, const char *key) {
  size_t kl = strlen(key);
  int i = 0;
  for (const char *p = list; p && *p; i++) {
    const char *end = strchr(p, ',');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n == kl && memcmp(p, key, n) == 0) return i;
    if (!end) break;
    p = end + 1;
  }
  return -1;
}

static int qcheck_one(qcheck *c, const char *key, const char *value) {
  if (c->bad) return 0;
  int i = list_index(c->allowed, key ? key : "");
  c->bad = i < 0 ? 1 : i < 32 && (c->seen & (1u << i)) ? 2 : !value ? 3 : 0;
  if (c->bad) {
    snprintf(c->key, sizeof c->key, "%s", key ? key : "");
    return 0;
  }
  if (i < 32) c->seen |= 1u << i;
  return 1;
}

static enum MHD_Result qcheck_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value) {
  (void)kind;
  return qcheck_one(cls, key, value) ? MHD_YES : MHD_NO;
}

int http_query_check(const http_req *req, http_resp *resp, const char *allowed) {
  qcheck c = {.allowed = allowed ? allowed : ""};
  if (req->args) {
    for (size_t i = 0; i < req->args->n && !c.bad; i++)
      qcheck_one(&c, req->args->key[i], req->args->value[i]);
  } else if (req->conn) {
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, qcheck_cb, &c);
  }
  if (!c.bad) return 0;
  char names[160];
  snprintf(names, sizeof names, "%s", c.allowed[0] ? c.allowed : "none");
  for (char *p = names; *p; p++) if (*p == ',') *p = '/';
  if (c.bad == 1)
    return http_error(resp, HTTP_E_INVALID_QUERY, c.key,
                      "unknown query parameter '%s'; this resource takes: %s", c.key, names);
  if (c.bad == 2)
    return http_error(resp, HTTP_E_INVALID_QUERY, c.key,
                      "the query parameter '%s' is given more than once", c.key);
  return http_error(resp, HTTP_E_INVALID_QUERY, c.key,
                    "the query parameter '%s' has no value (write %s=...)", c.key, c.key);
}

/* ---------------------------------------------------------------- routes */

/* ROUTE_RUN_TOKEN: the ingestion endpoints of a remote run (api_remote.c): the handler checks
 * the job's run token, and the lab token is neither needed nor enough. */
enum { ROUTE_JSON_BODY = 1, ROUTE_MUTATES = 2, ROUTE_RUN_TOKEN = 4 };

typedef struct http_route {
  const char *method;
  const char *pattern;
  http_handler fn;
  const char *name; /* label in /metrics */
  unsigned flags;
  const char *query; /* the query parameters it reads, comma-separated; NULL: none (any
                      * other parameter is a 400, see http_query_check) */
} http_route;

/* The API. */
static const http_route routes[] = {
    {"GET", "/healthz", api_healthz, "healthz", 0, NULL},
    {"GET", "/metrics", api_prometheus, "prometheus", 0, NULL},
    {"GET", "/api/v1/kinds", api_kinds_list, "kinds_list", 0, NULL},
    {"POST", "/api/v1/jobs", api_jobs_create, "jobs_create", ROUTE_JSON_BODY | ROUTE_MUTATES, NULL},
    {"GET", "/api/v1/jobs", api_jobs_list, "jobs_list", 0,
     "status,kind,tag,sweep,limit,cursor,q"},
    {"GET", "/api/v1/jobs/{id}", api_jobs_get, "jobs_get", 0, NULL},
    {"DELETE", "/api/v1/jobs/{id}", api_jobs_delete, "jobs_delete", ROUTE_MUTATES, NULL},
    {"PATCH", "/api/v1/jobs/{id}", api_jobs_patch, "jobs_patch", ROUTE_JSON_BODY | ROUTE_MUTATES, NULL},
    {"POST", "/api/v1/jobs/{id}/cancel", api_jobs_cancel, "jobs_cancel", ROUTE_MUTATES, NULL},
    {"GET", "/api/v1/jobs/{id}/metrics", api_metrics_get, "metrics_get", 0,
     "keys,max_points,since_step,time"},
    {"GET", "/api/v1/jobs/{id}/metrics.csv", api_metrics_csv, "metrics_csv", 0, "keys"},
    {"GET", "/api/v1/metrics", api_metrics_multi, "metrics_multi", 0,
     "jobs,keys,max_points,since_step,time"},
    {"GET", "/api/v1/jobs/{id}/artifacts", api_artifacts_list, "artifacts_list", 0, NULL},
    {"GET", "/api/v1/jobs/{id}/artifacts/{name}", api_artifacts_get, "artifacts_get", 0, NULL},
    {"POST", "/api/v1/checkpoints", api_checkpoints_create, "checkpoints_create", ROUTE_MUTATES, NULL},
    {"GET", "/api/v1/checkpoints/{id}", api_checkpoints_get, "checkpoints_get", 0, NULL},
    {"GET", "/api/v1/checkpoints/{id}/file", api_checkpoints_file, "checkpoints_file", 0, NULL},
    {"POST", "/api/v1/sweeps", api_sweeps_create, "sweeps_create", ROUTE_JSON_BODY | ROUTE_MUTATES, NULL},
    {"GET", "/api/v1/sweeps", api_sweeps_list, "sweeps_list", 0, "limit,cursor"},
    {"GET", "/api/v1/sweeps/{id}", api_sweeps_get, "sweeps_get", 0, "children"},
    {"POST", "/api/v1/sweeps/{id}/cancel", api_sweeps_cancel, "sweeps_cancel", ROUTE_MUTATES, NULL},
    /* A fit changes nothing, but it costs CPU: with a token it needs the token like a write. */
    {"POST", "/api/v1/fits", api_fits_create, "fits_create", ROUTE_JSON_BODY | ROUTE_MUTATES, NULL},
    {"POST", "/api/v1/kernels", api_kernels_create, "kernels_create", ROUTE_JSON_BODY | ROUTE_MUTATES, NULL},
    /* Remote runs (issue 16, api_remote.c): creating and starting runs needs the lab token;
     * the ingestion endpoints need the run's own token. */
    {"POST", "/api/v1/runs", api_runs_create, "runs_create", ROUTE_JSON_BODY | ROUTE_MUTATES, NULL},
    {"POST", "/api/v1/runs/{id}/resume", api_runs_resume, "runs_resume", ROUTE_MUTATES, NULL},
    {"POST", "/api/v1/jobs/{id}/start", api_jobs_start, "jobs_start", ROUTE_MUTATES, NULL},
    {"POST", "/api/v1/jobs/{id}/points", api_jobs_points, "jobs_points", ROUTE_JSON_BODY | ROUTE_RUN_TOKEN, NULL},
    {"POST", "/api/v1/jobs/{id}/heartbeat", api_jobs_heartbeat, "jobs_heartbeat", ROUTE_RUN_TOKEN, NULL},
    {"POST", "/api/v1/jobs/{id}/artifacts/{name}", api_jobs_artifact_put, "jobs_artifact_put", ROUTE_RUN_TOKEN, NULL},
    {"POST", "/api/v1/jobs/{id}/finish", api_jobs_finish, "jobs_finish", ROUTE_JSON_BODY | ROUTE_RUN_TOKEN, NULL},
    /* The OpenAPI document, generated from this table (server/openapi.c). */
    {"GET", "/api/v1/openapi.json", api_openapi, "openapi", 0, NULL},
};
#define N_ROUTES ((int)(sizeof routes / sizeof routes[0]))
#define ROUTE_STATIC N_ROUTES
#define ROUTE_OTHER (N_ROUTES + 1)
#define N_ROUTE_SLOTS (N_ROUTES + 2)

size_t http_route_count(void) { return (size_t)N_ROUTES; }

int http_route_at(size_t i, http_route_info *out) {
  if (i >= (size_t)N_ROUTES) return TD_EINVAL;
  const http_route *r = &routes[i];
  *out = (http_route_info){.method = r->method, .pattern = r->pattern, .name = r->name,
                           .query = r->query, .json_body = (r->flags & ROUTE_JSON_BODY) != 0,
                           .mutates = (r->flags & ROUTE_MUTATES) != 0,
                           .run_token = (r->flags & ROUTE_RUN_TOKEN) != 0};
  return 0;
}

static const int status_slots[] = {200, 201, 202, 204, 304, 400, 401, 403, 404,
                                   405, 409, 413, 415, 429, 500, 503, 0};
#define N_STATUS_SLOTS ((int)(sizeof status_slots / sizeof status_slots[0]))
static const double latency_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
#define N_LAT ((int)(sizeof latency_le / sizeof latency_le[0]) + 1)

/* One open connection, from MHD's STARTED to its CLOSED notification (see conn_notify). */
typedef struct conn_slot {
  struct conn_slot *prev, *next;
  int fd;
  atomic_llong head_since_ns; /* > 0: waiting for a request head since then; 0: not */
} conn_slot;

struct http_server {
  struct MHD_Daemon *d;
  http_config cfg;
  char *token;
  size_t token_len;
  void *app;
  unsigned port;
  atomic_ullong requests[N_ROUTE_SLOTS][N_STATUS_SLOTS];
  atomic_ullong latency[N_ROUTE_SLOTS][N_LAT];
  atomic_ullong latency_us_sum[N_ROUTE_SLOTS];
  /* Bytes of request bodies buffered by all connections together (req_ctx.cap summed): a new
   * buffer that would take it past body_budget() is refused with 503, so that many parallel
   * uploads cannot take max_conns x max_upload of memory. */
  atomic_size_t body_bytes;
  /* The head reaper (see head_reaper): open connections and a thread that closes those whose
   * request head is overdue. */
  pthread_mutex_t conn_mu;
  pthread_cond_t conn_cv;
  conn_slot conns;     /* list sentinel */
  int reaper_started, reaper_stop;
  pthread_t reaper;
};

/* Per-request state, kept by MHD in *con_cls from the first call to the completion. */
typedef struct req_ctx {
  int started;          /* the access handler has seen this request */
  int raw_uri_bad;      /* the request target holds a space, control or non-ASCII byte */
  int answered;         /* a response is queued already (on the first call) */
  long long t0_ns;
  char *body;
  size_t len, cap;
  unsigned long long discarded;
  int too_large;
  int busy;     /* the body would have exceeded the server's budget of buffered bodies */
  size_t limit; /* body limit of this request (max_body, or max_upload for an upload) */
  int status;
  int route;
  uint64_t resp_bytes;
  char method[12];
  char path[200];
} req_ctx;

/* body_budget: the bytes of request bodies all connections may buffer together: four
 * uploads at --max-upload (or 64 bodies at --max-body, whichever is larger). */
static size_t body_budget(const http_server *srv) {
  const size_t up = srv->cfg.max_upload > srv->cfg.max_body ? srv->cfg.max_upload : 0;
  const size_t a = 4 * up, b = 64 * srv->cfg.max_body;
  return a > b ? a : b;
}

/* POST /api/v1/jobs/{id}/artifacts/{name} (a remote run's artifact) takes --max-upload. */
static int is_artifact_upload(const char *url) {
  if (strncmp(url, "/api/v1/jobs/", 13) != 0) return 0;
  const char *p = url + 13;
  while (*p >= '0' && *p <= '9') p++;
  return p > url + 13 && !strncmp(p, "/artifacts/", 11) && p[11] && !strchr(p + 11, '/');
}

static long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#define MAX_SEGS 12

/* Split a path into segments in `buf`; returns the count or -1 (too long or too many). */
static int split_path(const char *path, char *buf, size_t bufsz, char *segs[MAX_SEGS]) {
  size_t n = strlen(path);
  if (n + 1 > bufsz || path[0] != '/') return -1;
  memcpy(buf, path + 1, n); /* without the leading '/', with the NUL */
  int k = 0;
  char *p = buf;
  for (;;) {
    if (k == MAX_SEGS) return -1;
    segs[k++] = p;
    char *slash = strchr(p, '/');
    if (!slash) break;
    *slash = '\0';
    p = slash + 1;
  }
  return k;
}

/* Does the route's pattern match the segments? Captures go to req->seg. */
static int route_match(const http_route *r, char *segs[], int n, http_req *req) {
  const char *pat = r->pattern + 1;
  int i = 0;
  size_t caps = 0;
  while (*pat || i < n) {
    if (i >= n || !*pat) return 0;
    const char *end = strchr(pat, '/');
    size_t plen = end ? (size_t)(end - pat) : strlen(pat);
    if (pat[0] == '{') {
      if (!segs[i][0]) return 0;
      if (caps < sizeof req->seg / sizeof req->seg[0]) req->seg[caps++] = segs[i];
    } else if (strlen(segs[i]) != plen || memcmp(segs[i], pat, plen) != 0) {
      return 0;
    }
    i++;
    pat += plen;
    if (*pat == '/') pat++;
    else if (i < n) return 0;
  }
  req->n_seg = caps;
  return 1;
}

/* Constant-time comparison of the bearer token (the time depends on lengths only). */
static int token_ok(const http_server *s, const char *auth) {
  if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return 0;
  const char *t = auth + 7;
  size_t tl = strlen(t);
  unsigned char diff = (unsigned char)(tl != s->token_len);
  for (size_t i = 0; i < s->token_len; i++)
    diff |= (unsigned char)(s->token[i] ^ (i < tl ? t[i] : 0));
  return diff == 0;
}

static int is_json_type(const char *ct) {
  if (!ct) return 0;
  while (*ct == ' ') ct++;
  size_t n = strlen("application/json");
  if (strncasecmp(ct, "application/json", n) != 0) return 0;
  ct += n;
  while (*ct == ' ') ct++;
  return *ct == '\0' || *ct == ';';
}

/* Routes whose 200 answers carry an ETag and answer If-None-Match with 304 (the job page's
 * polls: the job, the job list, the metrics). Chosen by name so the route table stays as is. */
static int etag_route(const char *name) {
  return !strcmp(name, "jobs_get") || !strcmp(name, "jobs_list") || !strcmp(name, "metrics_get");
}

/* The ETag of a response body: FNV-1a 64 of its bytes (Fowler, Noll, Vo), quoted. A change of
 * any byte changes it with probability 1 - 2^-64 for practical purposes. */
static void body_etag(const http_buf *b, char out[20]) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < b->len; i++) {
    h ^= (unsigned char)b->data[i];
    h *= 1099511628211ull;
  }
  snprintf(out, 20, "\"%016llx\"", (unsigned long long)h);
}

/* Does the If-None-Match header value list `tag` (or "*")? Weak tags (W/"...") compare by
 * their opaque part, as RFC 7232 3.2 asks for If-None-Match. */
static int etag_listed(const char *inm, const char *tag) {
  if (!inm) return 0;
  size_t tl = strlen(tag);
  for (const char *p = inm; *p;) {
    while (*p == ' ' || *p == ',' || *p == '\t') p++;
    if (*p == '*') return 1;
    if (p[0] == 'W' && p[1] == '/') p += 2;
    if (!strncmp(p, tag, tl) && (p[tl] == '\0' || p[tl] == ',' || p[tl] == ' ')) return 1;
    while (*p && *p != ',') p++;
  }
  return 0;
}

/* After a GET handler: add the ETag, and turn the answer into 304 without a body when the
 * client already has it. Cache-Control no-cache lets browsers keep the body and revalidate. */
static void etag_apply(http_req *req, http_resp *resp) {
  if (resp->status != 200 || resp->fd >= 0 || resp->body.failed) return;
  char tag[20];
  body_etag(&resp->body, tag);
  http_resp_header(resp, "ETag", "%s", tag);
  resp->cache = "no-cache";
  if (etag_listed(http_header(req, MHD_HTTP_HEADER_IF_NONE_MATCH), tag)) {
    resp->status = 304;
    http_buf_free(&resp->body);
    http_buf_init(&resp->body);
  }
}

static int dispatch(http_server *srv, struct MHD_Connection *conn, const char *url,
                    const char *method, req_ctx *rc, http_resp *resp) {
  http_req req = {.conn = conn, .srv = srv, .app = srv->app, .method = method, .path = url,
                  .body = rc->body, .body_len = rc->len, .pool = srv->cfg.pool};
  int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
  char buf[2048];
  char *segs[MAX_SEGS];
  int n = split_path(url, buf, sizeof buf, segs);
  if (n < 0) return http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such path");
  const http_route *found = NULL;
  char allow[64] = "";
  for (int i = 0; i < N_ROUTES; i++) {
    if (!route_match(&routes[i], segs, n, &req)) continue;
    int same = strcmp(routes[i].method, method) == 0 ||
               (is_get && strcmp(routes[i].method, "GET") == 0);
    if (same) {
      found = &routes[i];
      rc->route = i;
      break;
    }
    size_t al = strlen(allow);
    snprintf(allow + al, sizeof allow - al, "%s%s%s", al ? ", " : "", routes[i].method,
             strcmp(routes[i].method, "GET") == 0 ? ", HEAD" : "");
  }
  int is_api = strncmp(url, "/api/", 5) == 0 || strcmp(url, "/api") == 0;
  if (!found && allow[0]) {
    http_resp_header(resp, "Allow", "%s", allow);
    return http_error(resp, HTTP_E_METHOD_NOT_ALLOWED, NULL, "%s is not allowed on %s (allowed: %s)",
                      method, is_api ? "this resource" : "this path", allow);
  }
  if (!found && is_api) return http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such API resource");
  unsigned flags = found ? found->flags : 0;
  if (srv->token && !(flags & ROUTE_RUN_TOKEN) &&
      ((flags & ROUTE_MUTATES) || srv->cfg.token_for_read) &&
      !token_ok(srv, http_header(&req, MHD_HTTP_HEADER_AUTHORIZATION))) {
    http_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"tdlab\"");
    return http_error(resp, HTTP_E_UNAUTHORIZED, NULL,
                      "this request needs the header 'Authorization: Bearer <token>'");
  }
  if (found && http_query_check(&req, resp, found->query)) return resp->status;
  if (!found) { /* the dashboard */
    rc->route = ROUTE_STATIC;
    if (!is_get) {
      http_resp_header(resp, "Allow", "GET, HEAD");
      return http_error(resp, HTTP_E_METHOD_NOT_ALLOWED, NULL, "static files are read-only");
    }
    return api_static(&req, resp);
  }
  if ((flags & ROUTE_JSON_BODY) &&
      !is_json_type(http_header(&req, MHD_HTTP_HEADER_CONTENT_TYPE)))
    return http_error(resp, HTTP_E_UNSUPPORTED_MEDIA_TYPE, NULL,
                      "the body must be sent with Content-Type: application/json");
  int status = found->fn(&req, resp);
  if (is_get && etag_route(found->name)) {
    etag_apply(&req, resp);
    status = resp->status;
  }
  if (req.st) store_pool_put(req.pool, req.st);
  return status;
}

/* Does the request accept gzip (RFC 9110 12.5.3: "gzip" or "*" listed without q=0)? */
static int accepts_gzip(struct MHD_Connection *conn) {
  const char *ae = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept-Encoding");
  if (!ae) return 0;
  const char *p = ae;
  while (*p) {
    while (*p == ' ' || *p == ',') p++;
    const char *tok = p;
    while (*p && *p != ',' && *p != ';' && *p != ' ') p++;
    size_t tl = (size_t)(p - tok);
    int match = (tl == 4 && !strncasecmp(tok, "gzip", 4)) || (tl == 1 && *tok == '*');
    double q = 1;
    while (*p && *p != ',') {
      if (*p == ';') {
        const char *qq = p + 1;
        while (*qq == ' ') qq++;
        if ((qq[0] == 'q' || qq[0] == 'Q') && qq[1] == '=') q = strtod(qq + 2, NULL);
      }
      p++;
    }
    if (match && q > 0) return 1;
  }
  return 0;
}

#define GZIP_MIN 1024

/* Replace the body by its gzip encoding (RFC 1952, zlib with window bits 15 + 16) when it is
 * larger than GZIP_MIN bytes and the client accepts it; 1 when it did. */
static int gzip_body(http_resp *resp) {
  http_buf *b = &resp->body;
  z_stream z;
  memset(&z, 0, sizeof z);
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return 0;
  uLong cap = deflateBound(&z, (uLong)b->len);
  char *out = malloc(cap + 1);
  if (!out) {
    deflateEnd(&z);
    return 0;
  }
  z.next_in = (Bytef *)b->data;
  z.avail_in = (uInt)b->len;
  z.next_out = (Bytef *)out;
  z.avail_out = (uInt)cap;
  int zrc = deflate(&z, Z_FINISH);
  size_t n = z.total_out;
  deflateEnd(&z);
  if (zrc != Z_STREAM_END) {
    free(out);
    return 0;
  }
  free(b->data);
  b->data = out;
  b->len = n;
  b->cap = cap + 1;
  return 1;
}

/* libmicrohttpd's content reader over an http_resp stream. */
typedef struct stream_box {
  long (*fn)(void *ctx, char *buf, size_t max);
  void (*free_fn)(void *ctx);
  void *ctx;
} stream_box;

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  stream_box *b = cls;
  long n = b->fn(b->ctx, buf, max);
  if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
  if (n == 0) return MHD_CONTENT_READER_END_OF_STREAM;
  return (ssize_t)n;
}

static void stream_done(void *cls) {
  stream_box *b = cls;
  if (b->free_fn) b->free_fn(b->ctx);
  free(b);
}

static enum MHD_Result send_resp(struct MHD_Connection *conn, req_ctx *rc, http_resp *resp) {
  struct MHD_Response *r;
  if (resp->stream) {
    stream_box *box = malloc(sizeof *box);
    if (!box) {
      if (resp->stream_free) resp->stream_free(resp->stream_ctx);
      resp->stream = NULL;
      http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
      return send_resp(conn, rc, resp);
    }
    *box = (stream_box){resp->stream, resp->stream_free, resp->stream_ctx};
    resp->stream = NULL;
    r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, box,
                                          stream_done);
    if (!r) stream_done(box);
  } else if (resp->fd >= 0) {
    r = MHD_create_response_from_fd64(resp->fd_size, resp->fd);
    if (!r) close(resp->fd);
    rc->resp_bytes = resp->fd_size;
    resp->fd = -1;
  } else if (resp->body.failed) {
    http_buf_free(&resp->body);
    http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    return send_resp(conn, rc, resp);
  } else if (resp->body.len) {
    int gz = resp->body.len > GZIP_MIN && resp->body.len < UINT_MAX / 2 && accepts_gzip(conn) &&
             gzip_body(resp);
    if (gz) http_resp_header(resp, "Content-Encoding", "gzip");
    if (resp->body.len > GZIP_MIN || gz) http_resp_header(resp, "Vary", "Accept-Encoding");
    r = MHD_create_response_from_buffer(resp->body.len, resp->body.data, MHD_RESPMEM_MUST_FREE);
    rc->resp_bytes = resp->body.len;
    if (r) http_buf_init(&resp->body); /* MHD frees it */
  } else {
    r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  }
  http_buf_free(&resp->body);
  if (!r) return MHD_NO;
  if (resp->status != 304 && resp->status != 204 && !(resp->content_type && !*resp->content_type))
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            resp->content_type ? resp->content_type : "application/json");
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, resp->cache ? resp->cache : "no-store");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  for (int i = 0; i < resp->n_hdr; i++)
    MHD_add_response_header(r, resp->hdr[i].name, resp->hdr[i].value);
  rc->status = resp->status;
  enum MHD_Result ok = MHD_queue_response(conn, (unsigned)resp->status, r);
  MHD_destroy_response(r);
  return ok;
}

static void copy_for_log(char *dst, size_t n, const char *src) {
  size_t i = 0;
  for (; src && src[i] && i + 1 < n; i++) {
    unsigned char c = (unsigned char)src[i];
    dst[i] = (c < 0x21 || c > 0x7e || c == '"' || c == '\\') ? '?' : (char)c;
  }
  dst[i] = '\0';
}

static void resp_init(http_resp *r) {
  r->status = 200;
  r->content_type = NULL;
  r->cache = NULL;
  http_buf_init(&r->body);
  r->fd = -1;
  r->fd_size = 0;
  r->stream = NULL;
  r->stream_free = NULL;
  r->stream_ctx = NULL;
  r->n_hdr = 0;
}

/* ---------------------------------------------------------------- request heads */

/* RFC 7230 tchar: the characters of a header name. */
static int is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

typedef struct head_scan {
  int n_clen, n_te, n_host, bad_name;
  char name[40];
} head_scan;

static enum MHD_Result head_scan_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
  (void)kind;
  (void)value;
  head_scan *h = cls;
  if (!key) return MHD_YES;
  if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) h->n_clen++;
  else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) h->n_te++;
  else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) h->n_host++;
  const unsigned char *k = (const unsigned char *)key;
  int ok = *k != '\0';
  for (; *k && ok; k++) ok = is_tchar(*k);
  if (!ok && !h->bad_name) {
    h->bad_name = 1;
    copy_for_log(h->name, sizeof h->name, key);
  }
  return MHD_YES;
}

/* What libmicrohttpd 0.9.75 accepts but a request must not carry (RFC 7230 3.2, 3.3.2,
 * 3.3.3, 5.4): a request target with a space, control or non-ASCII byte; a header name that
 * is not a token; Content-Length twice (even with equal values) or together with
 * Transfer-Encoding (the framing would be ambiguous: request smuggling); an HTTP/1.1 request
 * without exactly one Host. Returns 0, or a 400 in resp (the connection is then closed). */
static int head_check(struct MHD_Connection *conn, const char *version, const req_ctx *rc,
                      http_resp *resp) {
  head_scan h = {0};
  MHD_get_connection_values(conn, MHD_HEADER_KIND, head_scan_cb, &h);
  int status = 0;
  if (rc->raw_uri_bad)
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL,
                        "the request target holds a space, control or non-ASCII byte; "
                        "percent-encode it");
  else if (h.bad_name)
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL,
                        "the header name '%s' is not a token (RFC 7230 3.2)", h.name);
  else if (h.n_clen > 1)
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL,
                        "Content-Length is given %d times; send it once", h.n_clen);
  else if (h.n_clen && h.n_te)
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL,
                        "Content-Length and Transfer-Encoding together; send one of them");
  else if (h.n_te > 1)
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL,
                        "Transfer-Encoding is given %d times", h.n_te);
  else if (version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0 && h.n_host == 0)
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL, "HTTP/1.1 needs a Host header");
  else if (h.n_host > 1)
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL,
                        "Host is given %d times; send it once", h.n_host);
  if (status) http_resp_header(resp, "Connection", "close");
  return status;
}

/* MHD_OPTION_URI_LOG_CALLBACK: called with the raw request target as soon as the request
 * line is read; its result becomes the request's *con_cls. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
  (void)cls;
  (void)conn;
  req_ctx *rc = calloc(1, sizeof *rc);
  if (!rc) return NULL;
  rc->t0_ns = mono_ns();
  rc->route = ROUTE_OTHER;
  for (const unsigned char *p = (const unsigned char *)uri; p && *p; p++)
    if (*p <= 0x20 || *p >= 0x7f) rc->raw_uri_bad = 1;
  return rc;
}

static conn_slot *slot_of(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

/* MHD_OPTION_NOTIFY_CONNECTION: keep the list of open connections for head_reaper. MHD calls
 * CLOSED before it closes the socket, and the slot leaves the list under conn_mu, so the
 * reaper never shuts down a descriptor that has been reused. */
static void conn_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                        enum MHD_ConnectionNotificationCode code) {
  http_server *srv = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_slot *c = calloc(1, sizeof *c);
    if (!c || !ci) {
      free(c);
      return;
    }
    c->fd = ci->connect_fd;
    atomic_store(&c->head_since_ns, mono_ns());
    pthread_mutex_lock(&srv->conn_mu);
    c->next = srv->conns.next;
    c->prev = &srv->conns;
    c->next->prev = c;
    srv->conns.next = c;
    pthread_mutex_unlock(&srv->conn_mu);
    *socket_context = c;
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
    conn_slot *c = *socket_context;
    pthread_mutex_lock(&srv->conn_mu);
    c->prev->next = c->next;
    c->next->prev = c->prev;
    pthread_mutex_unlock(&srv->conn_mu);
    free(c);
    *socket_context = NULL;
  }
}

/* The head reaper. libmicrohttpd's connection timeout is an idle timeout: a client that sends
 * one byte of its request head every few seconds (slowloris) would hold a connection for
 * ever. Once a second this thread shuts down (shutdown(2); MHD then closes it) every
 * connection that has waited more than conn_timeout_s for a complete request head, counted
 * from the connection's start or from the end of its previous response. */
static void *head_reaper(void *arg) {
  http_server *srv = arg;
  long long limit = (long long)srv->cfg.conn_timeout_s * 1000000000LL;
  pthread_mutex_lock(&srv->conn_mu);
  while (!srv->reaper_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&srv->conn_cv, &srv->conn_mu, &ts);
    long long now = mono_ns();
    for (conn_slot *c = srv->conns.next; c != &srv->conns; c = c->next) {
      long long since = atomic_load(&c->head_since_ns);
      if (since > 0 && now - since > limit) {
        atomic_store(&c->head_since_ns, 0);
        shutdown(c->fd, SHUT_RDWR);
        log_emit(LOG_INFO, "slow_request_head", "fd=%d waited_s=%.1f", c->fd, (now - since) / 1e9);
      }
    }
  }
  pthread_mutex_unlock(&srv->conn_mu);
  return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  http_server *srv = cls;
  req_ctx *rc = *con_cls;
  http_resp resp;
  if (!rc || !rc->started) {
    if (!rc) {
      rc = calloc(1, sizeof *rc);
      if (!rc) return MHD_NO;
      *con_cls = rc;
      rc->t0_ns = mono_ns();
      rc->route = ROUTE_OTHER;
    }
    rc->started = 1;
    conn_slot *slot = slot_of(conn);
    if (slot) atomic_store(&slot->head_since_ns, 0); /* the head is complete */
    copy_for_log(rc->method, sizeof rc->method, method);
    copy_for_log(rc->path, sizeof rc->path, url);
    rc->limit = srv->cfg.max_upload > 0 && !strcmp(method, "POST") &&
                        (!strcmp(url, "/api/v1/checkpoints") || is_artifact_upload(url))
                    ? srv->cfg.max_upload
                    : srv->cfg.max_body;
    resp_init(&resp);
    if (head_check(conn, version, rc, &resp)) {
      rc->too_large = rc->answered = 1; /* a body, if any, is discarded; then close */
      return send_resp(conn, rc, &resp);
    }
    http_buf_free(&resp.body);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    long long clen = 0;
    if (cl && http_parse_ll(cl, 0, LLONG_MAX, &clen) == 0 && (size_t)clen > rc->limit) {
      resp_init(&resp);
      rc->too_large = rc->answered = 1; /* answer now; MHD discards the body and closes */
      http_error(&resp, HTTP_E_PAYLOAD_TOO_LARGE, NULL, "the body is %lld bytes; the limit is %zu",
                 clen, rc->limit);
      return send_resp(conn, rc, &resp);
    }
    return MHD_YES;
  }
  if (*upload_data_size) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    if (!rc->too_large && rc->len + n > rc->limit) {
      rc->too_large = 1;
      atomic_fetch_sub(&srv->body_bytes, rc->cap);
      free(rc->body);
      rc->body = NULL;
      rc->len = rc->cap = 0;
    }
    if (rc->too_large) {
      rc->discarded += n;
      return rc->discarded > 64ull * rc->limit + (64u << 20) ? MHD_NO : MHD_YES;
    }
    if (rc->len + n > rc->cap) {
      size_t nc = rc->cap ? rc->cap : 4096;
      while (nc < rc->len + n) nc *= 2;
      const size_t grow = nc - rc->cap;
      if (atomic_fetch_add(&srv->body_bytes, grow) + grow > body_budget(srv)) {
        atomic_fetch_sub(&srv->body_bytes, grow + rc->cap); /* refuse: drop this body */
        free(rc->body);
        rc->body = NULL;
        rc->len = rc->cap = 0;
        rc->too_large = rc->busy = 1;
        rc->discarded += n;
        return MHD_YES;
      }
      char *nb = realloc(rc->body, nc);
      if (!nb) {
        atomic_fetch_sub(&srv->body_bytes, grow);
        return MHD_NO;
      }
      rc->body = nb;
      rc->cap = nc;
    }
    memcpy(rc->body + rc->len, upload_data, n);
    rc->len += n;
    return MHD_YES;
  }
  if (rc->answered) return MHD_YES;
  resp_init(&resp);
  if (rc->busy)
    http_error(&resp, HTTP_E_UNAVAILABLE, NULL,
               "the server is buffering other large request bodies (its budget is %zu bytes "
               "in all); retry later",
               body_budget(srv));
  else if (rc->too_large)
    http_error(&resp, HTTP_E_PAYLOAD_TOO_LARGE, NULL, "the body is larger than %zu bytes",
               rc->limit);
  else
    dispatch(srv, conn, url, method, rc, &resp);
  return send_resp(conn, rc, &resp);
}

static int status_slot(int status) {
  for (int i = 0; i < N_STATUS_SLOTS - 1; i++)
    if (status_slots[i] == status) return i;
  return N_STATUS_SLOTS - 1;
}

static char *put_str(char *p, const char *s) {
  size_t n = strlen(s);
  memcpy(p, s, n);
  return p + n;
}

static char *put_u64(char *p, unsigned long long v) {
  char tmp[24];
  int n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (n) *p++ = tmp[--n];
  return p;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  http_server *srv = cls;
  conn_slot *slot = slot_of(conn);
  if (slot) atomic_store(&slot->head_since_ns, mono_ns()); /* the next head may start */
  req_ctx *rc = *con_cls;
  if (!rc) return;
  *con_cls = NULL;
  double secs = (mono_ns() - rc->t0_ns) / 1e9;
  int route = rc->route;
  atomic_fetch_add_explicit(&srv->requests[route][status_slot(rc->status)], 1,
                            memory_order_relaxed);
  int b = 0;
  while (b < N_LAT - 1 && secs > latency_le[b]) b++;
  atomic_fetch_add_explicit(&srv->latency[route][b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&srv->latency_us_sum[route], (unsigned long long)(secs * 1e6),
                            memory_order_relaxed);
  log_level lvl = rc->status >= 500 || rc->status == 0 ? LOG_WARN : LOG_INFO;
  if (log_enabled(lvl)) { /* formatted by hand: printf is slow in this process (log.h) */
    unsigned long long us = secs > 0 ? (unsigned long long)(secs * 1e6) : 0;
    char f[400], *p = f; /* method < 12 and path < 200 bytes */
    p = put_str(p, "method=");
    p = put_str(p, rc->method);
    p = put_str(p, " path=");
    p = put_str(p, rc->path);
    p = put_str(p, " status=");
    p = put_u64(p, rc->status > 0 ? (unsigned long long)rc->status : 0);
    p = put_str(p, " ms=");
    p = put_u64(p, us / 1000);
    *p++ = '.';
    *p++ = (char)('0' + us / 100 % 10);
    *p++ = (char)('0' + us / 10 % 10);
    *p++ = (char)('0' + us % 10);
    p = put_str(p, " bytes=");
    p = put_u64(p, rc->resp_bytes);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) p = put_str(p, " aborted=1");
    *p = '\0';
    log_emit_fields(lvl, "request", f);
  }
  atomic_fetch_sub(&srv->body_bytes, rc->cap);
  free(rc->body);
  free(rc);
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decoding of paths and query arguments, in place. Unlike the default it never
 * produces a NUL byte: %00 becomes DEL (0x7f), which every path and value check refuses, so
 * "/index.html%00.js" cannot pass as "/index.html". Malformed escapes stay as they are.
 * (A public pure function so that the query parsing can be tested and fuzzed; `unescape`
 * below is the libmicrohttpd callback.) */
size_t http_unescape(char *s) {
  char *w = s;
  const char *r = s;
  while (*r) {
    int hi, lo;
    if (r[0] == '%' && (hi = hexval(r[1])) >= 0 && (lo = hexval(r[2])) >= 0) {
      int v = hi * 16 + lo;
      *w++ = v ? (char)v : '\x7f';
      r += 3;
    } else {
      *w++ = *r++;
    }
  }
  *w = '\0';
  return (size_t)(w - s);
}

static size_t unescape(void *cls, struct MHD_Connection *c, char *s) {
  (void)cls;
  (void)c;
  return http_unescape(s);
}

/* MHD_parse_arguments_ of libmicrohttpd 0.9.75, rebuilt on a private copy (see http.h). */
int http_query_parse(const char *qs, size_t len, http_query_args *out) {
  memset(out, 0, sizeof *out);
  const char *nul = memchr(qs, '\0', len);
  if (nul) len = (size_t)(nul - qs);
  char *buf = malloc(len + 1);
  if (!buf) return TD_ENOMEM;
  memcpy(buf, qs, len);
  buf[len] = '\0';
  for (char *p = buf; *p;) {
    if (out->n == HTTP_QUERY_MAX_ARGS) {
      free(buf);
      memset(out, 0, sizeof *out);
      return TD_ELIMIT;
    }
    char *amp = strchr(p, '&'), *eq = strchr(p, '=');
    if (amp) *amp = '\0';
    if (eq && (!amp || eq < amp)) *eq++ = '\0';
    else eq = NULL;
    for (char *t = p; *t; t++) if (*t == '+') *t = ' ';
    http_unescape(p);
    if (eq) {
      for (char *t = eq; *t; t++) if (*t == '+') *t = ' ';
      http_unescape(eq);
    }
    out->key[out->n] = p;
    out->value[out->n] = eq;
    out->n++;
    if (!amp) break;
    p = amp + 1;
  }
  out->buf = buf;
  return 0;
}

const char *http_query_args_get(const http_query_args *q, const char *name) {
  for (size_t i = 0; i < q->n; i++)
    if (strcmp(q->key[i], name) == 0) return q->value[i];
  return NULL;
}

void http_query_args_deinit(http_query_args *q) {
  free(q->buf);
  memset(q, 0, sizeof *q);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  if (!log_enabled(LOG_DEBUG)) return;
  char msg[512], q[600];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  log_emit(LOG_DEBUG, "mhd", "msg=%s", log_quote(q, sizeof q, msg));
}

int http_start(const http_config *cfg, void *app, http_server **out, td_err *err) {
  *out = NULL;
  if (cfg->port > 65535 || cfg->threads < 1 || cfg->max_body < 1)
    return td_err_set(err, TD_EINVAL, NULL, "bad HTTP configuration");
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                  *ai = NULL;
  char port[16];
  snprintf(port, sizeof port, "%u", cfg->port);
  int gai = getaddrinfo(cfg->host, port, &hints, &ai);
  if (gai != 0 || !ai)
    return td_err_set(err, TD_EINVAL, "host", "cannot resolve host '%s': %s", cfg->host,
                      gai_strerror(gai));
  http_server *s = calloc(1, sizeof *s);
  if (!s) {
    freeaddrinfo(ai);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  s->cfg = *cfg;
  s->app = app;
  if (cfg->token) {
    s->token = strdup(cfg->token);
    s->token_len = s->token ? strlen(s->token) : 0;
  }
  pthread_mutex_init(&s->conn_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->conn_cv, &ca);
  pthread_condattr_destroy(&ca);
  s->conns.next = s->conns.prev = &s->conns;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
                   MHD_USE_ERROR_LOG;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  struct MHD_OptionItem opts[16];
  int k = 0;
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr};
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, cfg->max_conns ? cfg->max_conns : 1024, NULL};
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, cfg->conn_timeout_s, NULL};
  /* The request line and headers must fit in this per-connection pool; above it MHD answers
   * 414/431 itself (an HTML body: see README "Protocol errors"). 32 KiB is MHD's default,
   * spelled out because it bounds the memory of a connection. */
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, HTTP_HEAD_MAX, NULL};
  /* No MHD_OPTION_LISTENING_ADDRESS_REUSE: it sets SO_REUSEPORT, which would let a second
   * daemon share this port and split requests between two databases. MHD still sets
   * SO_REUSEADDR, so a restart can bind at once. */
  if (cfg->threads > 1)
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, cfg->threads, NULL};
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  s->d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, s,
                          MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                          MHD_OPTION_NOTIFY_CONNECTION, conn_notify, s,
                          MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
                          MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
                          MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                          MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
  freeaddrinfo(ai);
  if (!s->d) {
    int e = errno;
    pthread_cond_destroy(&s->conn_cv);
    pthread_mutex_destroy(&s->conn_mu);
    free(s->token);
    free(s);
    return td_err_set(err, TD_EIO, "port", "cannot listen on %s:%u (%s)", cfg->host, cfg->port,
                      e ? strerror(e) : "libmicrohttpd refused the configuration");
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : cfg->port;
  if (cfg->conn_timeout_s > 0)
    s->reaper_started = pthread_create(&s->reaper, NULL, head_reaper, s) == 0;
  *out = s;
  return 0;
}

unsigned http_port(const http_server *s) { return s->port; }

void http_quiesce(http_server *s) {
  if (s && s->d) MHD_quiesce_daemon(s->d);
}

void http_stop(http_server *s) {
  if (!s) return;
  if (s->reaper_started) {
    pthread_mutex_lock(&s->conn_mu);
    s->reaper_stop = 1;
    pthread_cond_signal(&s->conn_cv);
    pthread_mutex_unlock(&s->conn_mu);
    pthread_join(s->reaper, NULL);
  }
  if (s->d) MHD_stop_daemon(s->d);
  pthread_cond_destroy(&s->conn_cv);
  pthread_mutex_destroy(&s->conn_mu);
  free(s->token);
  free(s);
}

static const char *route_name(int i) {
  return i < N_ROUTES ? routes[i].name : i == ROUTE_STATIC ? "static" : "other";
}

void http_write_prometheus(http_server *s, http_buf *b) {
  http_buf_str(b, "# HELP tdlab_http_requests_total HTTP requests by route and status code.\n"
                  "# TYPE tdlab_http_requests_total counter\n");
  for (int r = 0; r < N_ROUTE_SLOTS; r++)
    for (int k = 0; k < N_STATUS_SLOTS; k++) {
      unsigned long long v = atomic_load_explicit(&s->requests[r][k], memory_order_relaxed);
      if (!v) continue;
      if (status_slots[k])
        http_buf_printf(b, "tdlab_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                        route_name(r), status_slots[k], v);
      else
        http_buf_printf(b, "tdlab_http_requests_total{route=\"%s\",code=\"other\"} %llu\n",
                        route_name(r), v);
    }
  http_buf_str(b, "# HELP tdlab_http_request_duration_seconds Time from the request line to "
                  "the end of the response, by route.\n"
                  "# TYPE tdlab_http_request_duration_seconds histogram\n");
  for (int r = 0; r < N_ROUTE_SLOTS; r++) {
    unsigned long long cum = 0, counts[N_LAT];
    for (int k = 0; k < N_LAT; k++)
      counts[k] = atomic_load_explicit(&s->latency[r][k], memory_order_relaxed);
    unsigned long long total = 0;
    for (int k = 0; k < N_LAT; k++) total += counts[k];
    if (!total) continue;
    for (int k = 0; k < N_LAT; k++) {
      cum += counts[k];
      if (k < N_LAT - 1)
        http_buf_printf(b, "tdlab_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                        route_name(r), latency_le[k], cum);
      else
        http_buf_printf(b, "tdlab_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                        route_name(r), cum);
    }
    http_buf_printf(b, "tdlab_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n",
                    route_name(r),
                    atomic_load_explicit(&s->latency_us_sum[r], memory_order_relaxed) / 1e6);
    http_buf_printf(b, "tdlab_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                    route_name(r), total);
  }
}
