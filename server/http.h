/* http.h: the libmicrohttpd daemon, routing, body limits, auth and JSON error responses. */
#ifndef TD_SERVER_HTTP_H
#define TD_SERVER_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "store.h"

struct MHD_Connection;

/* ---------------------------------------------------------------- growing text buffer */

/* A growable byte buffer for response bodies. On allocation failure it sets `failed` and
 * ignores later appends, so writers need not check every call; the caller checks once. */
typedef struct http_buf {
  char *data;
  size_t len, cap;
  int failed;
} http_buf;

void http_buf_init(http_buf *b);
void http_buf_free(http_buf *b);
void http_buf_add(http_buf *b, const char *s, size_t n);
void http_buf_str(http_buf *b, const char *s);
void http_buf_printf(http_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* http_buf_json_str: `s` as a JSON string literal; NULL gives null. Invalid UTF-8 bytes are
 * replaced by U+FFFD so the output is always valid JSON. */
void http_buf_json_str(http_buf *b, const char *s);
/* http_buf_json_num: a finite double with 17 significant digits (round-trips exactly); NaN,
 * +Inf and -Inf as the JSON strings "NaN", "Infinity" and "-Infinity" (DESIGN's encoding). */
void http_buf_json_num(http_buf *b, double v);

/* http_buf_json_real: a finite double in the shortest form that reads back to the same
 * value (%.15g, %.16g or %.17g), always with a '.' or exponent so it stays a real. */
void http_buf_json_real(http_buf *b, double v);
/* http_buf_json_value: serialize a jansson value compactly (object keys in insertion order),
 * reals with http_buf_json_real; a non-finite real (jansson never holds one) gives null. */
struct json_t;
void http_buf_json_value(http_buf *b, const struct json_t *v);
/* http_json_dump: the same into a new NUL-terminated string (free it), NULL when out of memory. */
char *http_json_dump(const struct json_t *v);

/* ---------------------------------------------------------------- errors */

/* One table: API error code, its JSON name, its HTTP status, and the TD_* code that maps to
 * it (0: none). http_err_from_td picks the first row whose TD_* code matches. */
#define HTTP_ERRORS(X)                                                   \
  X(INVALID_JSON, "invalid_json", 400, 0)                                \
  X(INVALID_REQUEST, "invalid_request", 400, 0)                          \
  X(INVALID_PARAM, "invalid_param", 400, TD_EINVAL)                      \
  X(OUT_OF_RANGE, "invalid_param", 400, TD_ERANGE)                       \
  X(UNKNOWN_KIND, "unknown_kind", 400, 0)                                \
  X(LIMIT_EXCEEDED, "limit_exceeded", 400, TD_ELIMIT)                    \
  X(INVALID_QUERY, "invalid_query", 400, 0)                              \
  X(UNAUTHORIZED, "unauthorized", 401, 0)                                \
  X(NOT_FOUND, "not_found", 404, TD_ENOTFOUND)                           \
  X(METHOD_NOT_ALLOWED, "method_not_allowed", 405, 0)                    \
  X(CONFLICT, "conflict", 409, TD_ECONFLICT)                             \
  X(PAYLOAD_TOO_LARGE, "payload_too_large", 413, 0)                      \
  X(UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415, 0)            \
  X(INTERNAL, "internal", 500, TD_EINTERNAL)                             \
  X(IO, "internal", 500, TD_EIO)                                         \
  X(STORAGE_FULL, "storage_full", 507, TD_EFULL)                         \
  X(QUEUE_FULL, "queue_full", 503, 0)                                    \
  X(UNAVAILABLE, "unavailable", 503, TD_ENOMEM)                          \
  X(TIMEOUT, "unavailable", 503, TD_ETIMEOUT)                           \
  X(RUN_TOKEN_INVALID, "run_token_invalid", 401, 0)                      \
  X(JOB_FINISHED, "job_finished", 409, 0)

typedef enum {
#define HTTP__ERR_ENUM(e, name, status, td) HTTP_E_##e,
  HTTP_ERRORS(HTTP__ERR_ENUM)
#undef HTTP__ERR_ENUM
      HTTP_E__COUNT
} http_errcode;

/* http_err_status / http_err_name: the HTTP status and JSON code of `e`. */
int http_err_status(http_errcode e);
const char *http_err_name(http_errcode e);
/* http_err_from_td: the API error for a TD_* code (HTTP_E_INTERNAL when none matches). */
http_errcode http_err_from_td(int td_code);

/* ---------------------------------------------------------------- requests */

typedef struct http_server http_server;

/* ---------------------------------------------------------------- query strings */

/* http_unescape: percent-decode the NUL-terminated `s` in place; returns the new length.
 * "%HH" (hex, either case) becomes the byte 0xHH, except that %00 becomes DEL (0x7f), which
 * every path and value check refuses, so "/index.html%00.js" cannot pass as "/index.html".
 * Malformed escapes stay as they are. Never reads past the NUL; the result is never longer.
 * This is the decoder the daemon gives libmicrohttpd for paths and query arguments. */
size_t http_unescape(char *s);

#define HTTP_QUERY_MAX_ARGS 64

/* A query string split into decoded pairs (see http_query_parse). Owns `buf`. */
typedef struct http_query_args {
  char *buf;                               /* decoded copy; keys and values point into it */
  size_t n;                                /* pairs, in order */
  const char *key[HTTP_QUERY_MAX_ARGS];
  const char *value[HTTP_QUERY_MAX_ARGS];  /* NULL for a pair without '=' */
} http_query_args;

/* http_query_parse: split the raw query string qs[0..len) (the bytes after '?'; it need not
 * be NUL-terminated and parsing stops at a NUL byte) into pairs the way libmicrohttpd
 * 0.9.75 does for the daemon (MHD_parse_arguments_): pairs are separated by '&', key and
 * value by the first '='; '+' becomes ' ', then each part goes through http_unescape; a pair
 * without '=' has a NULL value (http_query then answers NULL, as for a missing argument).
 * A pure function: lets tests and tests/fuzz/fuzz_query.c drive the handlers' query parsing
 * without a connection (set http_req.args). On success *out (OUT) must be released with
 * http_query_args_deinit. Errors: TD_ELIMIT (more than HTTP_QUERY_MAX_ARGS pairs),
 * TD_ENOMEM; on error *out is empty. */
int http_query_parse(const char *qs, size_t len, http_query_args *out /* OUT */);
/* http_query_args_get: the value of the first pair named `name`, or NULL. */
const char *http_query_args_get(const http_query_args *q, const char *name);
/* http_query_args_deinit: free the buffer and empty *q. */
void http_query_args_deinit(http_query_args *q);

typedef struct http_req {
  struct MHD_Connection *conn;
  http_server *srv;
  void *app;            /* the application context given to http_start */
  const char *method;   /* "GET", "HEAD", "POST", ... */
  const char *path;     /* percent-decoded path, without the query string */
  const char *seg[4];   /* captures of {..} pattern segments, in order */
  size_t n_seg;
  const char *body;     /* request body (not NUL-terminated), may be NULL */
  size_t body_len;
  store_pool *pool;
  store *st;            /* lazily borrowed by http_store; returned after the handler */
  const http_query_args *args; /* non-NULL: http_query reads these, not the connection
                                * (tests and fuzzing drive handlers without MHD) */
} http_req;

typedef struct http_resp {
  int status;
  const char *content_type; /* static string; NULL means application/json */
  const char *cache;        /* Cache-Control; NULL means no-store */
  http_buf body;
  int fd;                   /* >= 0: send this file (ownership passes to the server) */
  uint64_t fd_size;
  /* stream != NULL: the body is produced by stream(stream_ctx, buf, max) as it is sent (it
   * returns the bytes written, 0 at the end, -1 on an error that aborts the response), and
   * stream_free(stream_ctx) is called once the response is done (ownership passes). */
  long (*stream)(void *stream_ctx, char *buf, size_t max);
  void (*stream_free)(void *stream_ctx);
  void *stream_ctx;
  struct {
    const char *name;
    char value[192];
  } hdr[6];
  int n_hdr;
} http_resp;

typedef int (*http_handler)(http_req *req, http_resp *resp);

/* http_error: set resp to {"error":{"code","message","field"}} with the status of `code`;
 * field may be NULL or "" (then null). Returns the status. */
int http_error(http_resp *resp, http_errcode code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* http_json_body: the request body as a JSON object (new reference in *out, the caller
 * decrefs), parsed with duplicate keys refused. An empty body is *out = NULL and 0 when
 * allow_empty, else a 400 invalid_json; malformed JSON is a 400 invalid_json with its line and
 * column; anything but an object is a 400 invalid_request. Returns 0 or the status written into
 * resp. */
int http_json_body(http_req *req, http_resp *resp, int allow_empty, json_t **out);
/* http_error_td: the same from a td_err (its code picks the row, its field and message are
 * used). */
int http_error_td(http_resp *resp, const td_err *e);

/* http_resp_header: add a response header (at most 6; value truncated to 191 bytes). */
void http_resp_header(http_resp *resp, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* http_query / http_header: a decoded query argument or a request header, or NULL. */
const char *http_query(const http_req *req, const char *name);
const char *http_header(const http_req *req, const char *name);

/* http_query_check: 0 when every query parameter of the request is one of `allowed` (names,
 * comma-separated; NULL or "" allows none), appears once and has a value; else sets resp to
 * a 400 invalid_query error whose field is the offending parameter and returns 400. Reads
 * req->args when set, else the connection. dispatch runs it with the route's list before the
 * handler, so a typo such as ?stauts= is refused instead of silently ignored. */
int http_query_check(const http_req *req, http_resp *resp, const char *allowed);

/* http_store: the request's database connection, borrowed from the pool on first use.
 * Errors: TD_EIO. */
int http_store(http_req *req, store **out /* OUT */, td_err *err);

/* http_parse_ll: strict decimal integer ("-"? digits, nothing else) within [min, max].
 * Returns 0 or TD_EINVAL. */
int http_parse_ll(const char *s, long long min, long long max, long long *out /* OUT */);
/* http_parse_id: a job/sweep id in canonical form: decimal digits without a sign or leading
 * zeros, in 1 .. 2^53 ("01" and "+1" are not ids). Returns 0 or TD_EINVAL. */
int http_parse_id(const char *s, int64_t *out /* OUT */);

/* ---------------------------------------------------------------- the route table */

/* One row of the daemon's route table, read-only (server/openapi.c builds the OpenAPI
 * document from these, so that a row added to the table is documented without more edits). */
typedef struct http_route_info {
  const char *method;  /* "GET", "POST", "PATCH", "DELETE" (a GET route also answers HEAD) */
  const char *pattern; /* "/api/v1/jobs/{id}": {name} segments capture one path segment */
  const char *name;    /* the route's label in /metrics, unique */
  const char *query;   /* the query parameters it takes, comma-separated; NULL: none */
  int json_body;       /* the body must be application/json (else 415) */
  int mutates;         /* needs the bearer token when the server has one */
  int run_token;       /* an ingestion endpoint: needs the run's own token, not the lab token */
} http_route_info;

/* http_route_count: the number of rows in the route table. */
size_t http_route_count(void);
/* http_route_at: row i (< http_route_count()) into *out (OUT; its strings are static).
 * Errors: TD_EINVAL when i is out of range (*out untouched). */
int http_route_at(size_t i, http_route_info *out /* OUT */);

/* ---------------------------------------------------------------- server */

/* The request line and headers of one request must fit in this many bytes
 * (MHD_OPTION_CONNECTION_MEMORY_LIMIT); libmicrohttpd answers a larger head 414 or 431. */
#define HTTP_HEAD_MAX (32u * 1024u)

typedef struct http_config {
  const char *host;       /* address or name to bind (e.g. 127.0.0.1, ::1, 0.0.0.0) */
  unsigned port;          /* 0: an ephemeral port (see http_port) */
  unsigned threads;       /* polling threads (epoll thread pool), >= 1 */
  unsigned max_conns;     /* concurrent connections */
  unsigned conn_timeout_s;/* idle connection timeout, and the most a request head may take
                           * to arrive (from the connection's start or the previous
                           * response; 0: neither) */
  size_t max_body;        /* request body limit in bytes (413 above it) */
  size_t max_upload;      /* body limit of POST /api/v1/checkpoints (0: max_body) */
  const char *token;      /* bearer token required for state changes; NULL: none */
  int token_for_read;     /* also require it for reads */
  store_pool *pool;       /* borrowed */
} http_config;

/* http_start: bind and start serving with `app` passed to handlers in req->app.
 * Errors: TD_EINVAL (bad host), TD_EIO (cannot bind: message says why). */
int http_start(const http_config *cfg, void *app, http_server **out /* OUT */, td_err *err);
/* http_port: the bound port. */
unsigned http_port(const http_server *s);
/* http_quiesce: stop accepting new connections (in-flight requests continue). */
void http_quiesce(http_server *s);
/* http_stop: stop the daemon (waits for running handlers) and free it. NULL is a no-op. */
void http_stop(http_server *s);
/* http_write_prometheus: request counters by route and status and a latency histogram, in
 * the Prometheus text format. */
void http_write_prometheus(http_server *s, http_buf *b);

#endif
