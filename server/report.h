/* report.h: `tdlab run SPEC --report URL --job ID`: a job run in this process whose metrics,
 * progress, artifacts and final status go to a tdlab server over HTTP (the ingestion
 * endpoints of api_remote.c), with a bounded buffer and retries while the server is away. */
#ifndef TD_SERVER_REPORT_H
#define TD_SERVER_REPORT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "kinds/registry.h"

/* Defaults (README "Remote runs", and the usage text of tdlab run). */
#define REPORT_MAX_BUFFER_BYTES (64u << 20) /* points held while the server is away */
#define REPORT_RETRY_TOTAL_S 900.0          /* give up after 15 min of failed requests */
#define REPORT_BACKOFF_MIN_S 0.2            /* first wait after a failure */
#define REPORT_BACKOFF_MAX_S 10.0           /* the wait doubles up to this */
#define REPORT_BATCH_POINTS 5000            /* points per request (the server takes 10000) */
#define REPORT_BATCH_MS 500                 /* a partial batch is sent after this long */

/* ---------------------------------------------------------------- pure parts (unit tested) */

/* report_backoff_next: the wait after `cur` seconds of waiting failed again:
 * min(2 cur, REPORT_BACKOFF_MAX_S), and REPORT_BACKOFF_MIN_S when cur <= 0. */
double report_backoff_next(double cur);

/* One buffered point. key points into the buffer's interned key table. */
typedef struct report_point {
  const char *key;
  long step;
  double value;
} report_point;

/* A FIFO of points bounded in bytes (each point counts sizeof(report_point)); keys are
 * interned once (at most 4096 distinct keys, 128 bytes each). Not thread-safe: the reporter
 * holds its lock around every call. */
typedef struct report_buf {
  report_point *ring;
  size_t cap, head, n; /* capacity in points, index of the oldest, count */
  char **keys;
  size_t n_keys;
} report_buf;

/* report_buf_init: an empty buffer of at most max_bytes (>= one point) of points; the ring is
 * allocated up to that size as it fills. Errors: TD_EINVAL (max_bytes too small). */
int report_buf_init(report_buf *b, size_t max_bytes, td_err *err);
void report_buf_deinit(report_buf *b);
/* report_buf_push: append a point (key copied once). Errors: TD_ELIMIT (full: nothing
 * changed; the caller waits for report_buf_pop), TD_ENOMEM, TD_EINVAL (more than 4096 keys). */
int report_buf_push(report_buf *b, const char *key, long step, double value);
/* report_buf_peek: the i-th oldest point (i < b->n). */
const report_point *report_buf_peek(const report_buf *b, size_t i);
/* report_buf_pop: drop the k oldest points (k <= b->n). */
void report_buf_pop(report_buf *b, size_t k);

/* report_encode_points: append {"points":[{"key","step","value"}, ...]} of the k oldest
 * points of b to out (an http_buf), non-finite values as "NaN", "Infinity", "-Infinity". */
struct http_buf;
void report_encode_points(const report_buf *b, size_t k, struct http_buf *out);

/* ---------------------------------------------------------------- the run */

typedef struct report_cfg {
  const char *url;          /* the server, e.g. http://host:8080 (no trailing path) */
  int64_t job;              /* the job id */
  const char *token;        /* its run token */
  double heartbeat_s;       /* 0: a third of the server's --heartbeat-timeout */
  size_t max_buffer_bytes;  /* 0: REPORT_MAX_BUFFER_BYTES */
  double retry_total_s;     /* 0: REPORT_RETRY_TOTAL_S */
  size_t batch_points;      /* 0: REPORT_BATCH_POINTS (at most 10000) */
  long batch_ms;            /* 0: REPORT_BATCH_MS */
} report_cfg;

/* report_run: run `kind` with `params` (filled, borrowed) in this thread with a sink that
 * reports to the server: points are buffered (bounded by max_buffer_bytes; when the buffer
 * is full the kind waits in its metric call, nothing is dropped) and sent in batches by a
 * sender thread; a heartbeat thread sends progress every heartbeat_s and stops the kind when
 * the server says cancel_requested; artifacts are sent as they come; at the end every
 * buffered point is sent, then the finish. Every request is retried on a transport error or
 * a 5xx answer, waiting REPORT_BACKOFF_MIN_S doubling to REPORT_BACKOFF_MAX_S, until
 * retry_total_s have passed without success; then the run fails. *stop (may be NULL; set by
 * a signal handler) stops the kind too. Messages go to stderr, one JSON status line to
 * stdout. Returns the exit status of tdlab run: 0 succeeded, 3 diverged, 4 cancelled, 1
 * failed or unable to report. */
int report_run(const td_kind *kind, const struct json_t *params, const report_cfg *cfg,
               volatile sig_atomic_t *stop);

#endif
