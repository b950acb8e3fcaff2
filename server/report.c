/* report.c: `tdlab run --report`: a job run in this process that reports to a tdlab server
 * over HTTP (server/httpc.h) with a bounded buffer, a sender thread, a heartbeat thread and
 * retries with exponential backoff. */
#include "report.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http.h"
#include "httpc.h"
#include "store.h"

#define REPORT_MAX_KEYS 4096
#define REQUEST_TIMEOUT_S 30.0

/* ---------------------------------------------------------------- pure parts */

double report_backoff_next(double cur) {
  if (!(cur > 0)) return REPORT_BACKOFF_MIN_S;
  double n = 2 * cur;
  return n > REPORT_BACKOFF_MAX_S ? REPORT_BACKOFF_MAX_S : n;
}

int report_buf_init(report_buf *b, size_t max_bytes, td_err *err) {
  memset(b, 0, sizeof *b);
  b->cap = max_bytes / sizeof(report_point);
  if (b->cap < 1) return td_err_set(err, TD_EINVAL, NULL, "the buffer holds no point");
  return 0;
}

void report_buf_deinit(report_buf *b) {
  free(b->ring);
  for (size_t i = 0; i < b->n_keys; i++) free(b->keys[i]);
  free(b->keys);
  memset(b, 0, sizeof *b);
}

static const char *intern(report_buf *b, const char *key) {
  for (size_t i = b->n_keys; i-- > 0;) /* newest first: kinds repeat their keys in order */
    if (!strcmp(b->keys[i], key)) return b->keys[i];
  if (b->n_keys >= REPORT_MAX_KEYS) return NULL;
  char **nk = realloc(b->keys, (b->n_keys + 1) * sizeof *nk);
  if (!nk) return NULL;
  b->keys = nk;
  if (!(nk[b->n_keys] = strdup(key))) return NULL;
  return nk[b->n_keys++];
}

int report_buf_push(report_buf *b, const char *key, long step, double value) {
  if (b->n >= b->cap) return TD_ELIMIT;
  if (!b->ring) { /* the whole ring at once: pages are touched only as it fills */
    b->ring = malloc(b->cap * sizeof *b->ring);
    if (!b->ring) return TD_ENOMEM;
  }
  const char *k = intern(b, key);
  if (!k) return b->n_keys >= REPORT_MAX_KEYS ? TD_EINVAL : TD_ENOMEM;
  b->ring[(b->head + b->n) % b->cap] = (report_point){.key = k, .step = step, .value = value};
  b->n++;
  return 0;
}

const report_point *report_buf_peek(const report_buf *b, size_t i) {
  return &b->ring[(b->head + i) % b->cap];
}

void report_buf_pop(report_buf *b, size_t k) {
  if (k > b->n) k = b->n;
  b->head = b->n == k ? 0 : (b->head + k) % b->cap;
  b->n -= k;
}

void report_encode_points(const report_buf *b, size_t k, http_buf *out) {
  http_buf_str(out, "{\"points\":[");
  for (size_t i = 0; i < k && i < b->n; i++) {
    const report_point *p = report_buf_peek(b, i);
    http_buf_str(out, i ? ",{\"key\":" : "{\"key\":");
    http_buf_json_str(out, p->key);
    http_buf_printf(out, ",\"step\":%ld,\"value\":", p->step);
    http_buf_json_num(out, p->value);
    http_buf_str(out, "}");
  }
  http_buf_str(out, "]}");
}

/* ---------------------------------------------------------------- the reporter */

typedef struct report {
  report_cfg cfg;
  char url_points[512], url_hb[512], url_finish[512];
  pthread_mutex_t mu;
  pthread_cond_t cv_send, cv_space, cv_quit;
  report_buf buf;
  int draining, quit, sender_done;
  int fatal;          /* reporting is impossible: stop the kind, do not finish */
  char fatal_msg[512];
  int cancel;         /* the server asked the run to stop */
  long done, total;
  double hb_interval;
  double last_send;
  unsigned long long sent;
  volatile sig_atomic_t *stop;
  int starting;       /* in the first heartbeat: a stop signal ends its retries (nothing to send) */
} report;

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void abs_in(struct timespec *ts, double s) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  long long ns = ts->tv_nsec + (long long)(s * 1e9);
  ts->tv_sec += ns / 1000000000LL;
  ts->tv_nsec = ns % 1000000000LL;
}

static void set_fatal(report *r, const char *fmt, const char *detail) {
  if (!r->fatal) {
    r->fatal = 1;
    snprintf(r->fatal_msg, sizeof r->fatal_msg, fmt, detail);
    fprintf(stderr, "tdlab run: %s\n", r->fatal_msg);
  }
  pthread_cond_broadcast(&r->cv_space);
  pthread_cond_broadcast(&r->cv_send);
}

/* The outcome of one request with retries. */
enum { REQ_OK, REQ_HTTP_ERROR, REQ_GAVE_UP, REQ_QUIT };

/* One request, retried on transport errors, 5xx and 429 with exponential backoff until
 * retry_total_s pass without success (REQ_GAVE_UP), or until `abort_flag` (read under r->mu)
 * is set (REQ_QUIT). A 2xx is REQ_OK; any other answer REQ_HTTP_ERROR (resp kept). */
static int request_retry(report *r, const char *method, const char *url, const char *ct,
                         const char *body, size_t len, const int *abort_flag, httpc_resp *resp) {
  double wait = 0, first_fail = 0;
  for (;;) {
    td_err e;
    td_err_clear(&e);
    int rc = httpc_request(method, url, r->cfg.token, ct, body, len, REQUEST_TIMEOUT_S, resp, &e);
    if (!rc && resp->status >= 200 && resp->status < 300) return REQ_OK;
    if (!rc && resp->status < 500 && resp->status != 429) return REQ_HTTP_ERROR;
    double now = mono();
    if (!first_fail) first_fail = now;
    if (now - first_fail > r->cfg.retry_total_s) {
      if (!rc) httpc_resp_free(resp);
      return REQ_GAVE_UP;
    }
    if (wait == 0 && rc) /* httpc's message names the method and the URL */
      fprintf(stderr, "tdlab run: %s; retrying with backoff (giving up after %.0f s)\n", e.msg,
              r->cfg.retry_total_s);
    else if (wait == 0)
      fprintf(stderr, "tdlab run: %s %s: HTTP %ld; retrying with backoff (giving up after %.0f s)\n",
              method, url, resp->status, r->cfg.retry_total_s);
    if (!rc) httpc_resp_free(resp);
    wait = report_backoff_next(wait);
    pthread_mutex_lock(&r->mu);
    struct timespec ts;
    abs_in(&ts, wait);
    while (!(abort_flag && *abort_flag) &&
           pthread_cond_timedwait(&r->cv_quit, &r->mu, &ts) != ETIMEDOUT) {
    }
    int quit = (abort_flag && *abort_flag) || (r->starting && r->stop && *r->stop);
    pthread_mutex_unlock(&r->mu);
    if (quit) return REQ_QUIT;
  }
}

/* The error message of an answer, for stderr. */
static const char *resp_msg(const httpc_resp *resp, char *buf, size_t n) {
  json_t *j = resp->body ? json_loads(resp->body, 0, NULL) : NULL;
  const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
  snprintf(buf, n, "HTTP %ld: %s", resp->status, m ? m : (resp->body ? resp->body : ""));
  json_decref(j);
  return buf;
}

static void *sender_main(void *arg) {
  report *r = arg;
  http_buf body;
  http_buf_init(&body);
  pthread_mutex_lock(&r->mu);
  for (;;) {
    while (!r->quit && !r->fatal) {
      if (r->buf.n >= r->cfg.batch_points) break;
      if (r->buf.n && (r->draining || mono() - r->last_send >= r->cfg.batch_ms / 1000.0)) break;
      if (!r->buf.n && r->draining) break;
      struct timespec ts;
      abs_in(&ts, r->cfg.batch_ms / 1000.0);
      pthread_cond_timedwait(&r->cv_send, &r->mu, &ts);
    }
    if (r->quit || r->fatal || (!r->buf.n && r->draining)) break;
    size_t k = r->buf.n < r->cfg.batch_points ? r->buf.n : r->cfg.batch_points;
    body.len = 0;
    report_encode_points(&r->buf, k, &body);
    pthread_mutex_unlock(&r->mu);
    httpc_resp resp = {0};
    int out = body.failed ? REQ_GAVE_UP
                          : request_retry(r, "POST", r->url_points, "application/json",
                                          body.data, body.len, &r->quit, &resp);
    char msg[400];
    pthread_mutex_lock(&r->mu);
    if (out == REQ_OK) {
      report_buf_pop(&r->buf, k);
      r->sent += k;
      r->last_send = mono();
      pthread_cond_broadcast(&r->cv_space);
    } else if (out == REQ_GAVE_UP) {
      set_fatal(r, "the server did not take the points (%s); the run stops", body.failed
                                                                               ? "out of memory"
                                                                               : "unreachable");
    } else if (out == REQ_HTTP_ERROR) {
      set_fatal(r, "the server refused the points (%s); the run stops",
                resp_msg(&resp, msg, sizeof msg));
    }
    httpc_resp_free(&resp);
    if (out == REQ_QUIT) break;
  }
  r->sender_done = 1;
  pthread_cond_broadcast(&r->cv_space);
  pthread_mutex_unlock(&r->mu);
  http_buf_free(&body);
  return NULL;
}

/* One heartbeat with retries; 0 when the server answered 2xx (cancel_requested and the
 * interval taken from it). */
static int heartbeat_once(report *r) {
  char body[128];
  pthread_mutex_lock(&r->mu);
  long done = r->done < 0 ? 0 : r->done, total = r->total < 0 ? 0 : r->total;
  if (total > 0 && done > total) done = total; /* the server refuses done > total */
  snprintf(body, sizeof body, "{\"progress\":{\"done\":%ld,\"total\":%ld}}", done, total);
  pthread_mutex_unlock(&r->mu);
  httpc_resp resp = {0};
  int out = request_retry(r, "POST", r->url_hb, "application/json", body, strlen(body), &r->quit,
                          &resp);
  char msg[400];
  pthread_mutex_lock(&r->mu);
  if (out == REQ_OK) {
    json_t *j = json_loads(resp.body, 0, NULL);
    if (json_is_true(json_object_get(j, "cancel_requested")) && !r->cancel) {
      r->cancel = 1;
      fprintf(stderr, "tdlab run: the server asked this run to stop (cancelled)\n");
    }
    double t = json_number_value(json_object_get(j, "heartbeat_timeout_s"));
    if (r->cfg.heartbeat_s <= 0 && t > 0) r->hb_interval = t / 3;
    json_decref(j);
  } else if (out == REQ_HTTP_ERROR) {
    set_fatal(r, "the server refused the heartbeat (%s); the run stops",
              resp_msg(&resp, msg, sizeof msg));
  } else if (out == REQ_GAVE_UP) {
    set_fatal(r, "%s", "the server did not answer heartbeats; the run stops");
  }
  pthread_mutex_unlock(&r->mu);
  httpc_resp_free(&resp);
  return out == REQ_OK ? 0 : -1;
}

static void *heartbeat_main(void *arg) {
  report *r = arg;
  pthread_mutex_lock(&r->mu);
  while (!r->quit && !r->fatal) {
    struct timespec ts;
    abs_in(&ts, r->hb_interval);
    while (!r->quit && pthread_cond_timedwait(&r->cv_quit, &r->mu, &ts) != ETIMEDOUT) {
    }
    if (r->quit) break;
    pthread_mutex_unlock(&r->mu);
    heartbeat_once(r);
    pthread_mutex_lock(&r->mu);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* ---------------------------------------------------------------- the sink */

static int rs_metric(void *ctx, const char *key, long step, double value) {
  report *r = ctx;
  pthread_mutex_lock(&r->mu);
  int rc;
  while ((rc = report_buf_push(&r->buf, key, step, value)) == TD_ELIMIT && !r->fatal &&
         !r->sender_done) {
    pthread_cond_signal(&r->cv_send); /* full: wait for the sender (nothing is dropped) */
    pthread_cond_wait(&r->cv_space, &r->mu);
  }
  if (!rc && r->buf.n >= r->cfg.batch_points) pthread_cond_signal(&r->cv_send);
  if (r->fatal) rc = TD_EIO;
  pthread_mutex_unlock(&r->mu);
  return rc;
}

static void rs_progress(void *ctx, long done, long total) {
  report *r = ctx;
  pthread_mutex_lock(&r->mu);
  r->done = done;
  r->total = total;
  pthread_mutex_unlock(&r->mu);
}

static int rs_should_stop(void *ctx) {
  report *r = ctx;
  pthread_mutex_lock(&r->mu);
  int s = r->fatal || r->cancel || (r->stop && *r->stop);
  pthread_mutex_unlock(&r->mu);
  return s;
}

static int rs_artifact(void *ctx, const char *name, const char *content_type, const void *data,
                       size_t len) {
  report *r = ctx;
  if (!name || !store_valid_artifact_name(name) || (len && !data)) return TD_EINVAL;
  char url[700];
  snprintf(url, sizeof url, "%s/api/v1/jobs/%lld/artifacts/%s", r->cfg.url,
           (long long)r->cfg.job, name);
  httpc_resp resp = {0};
  int out = request_retry(r, "POST", url, content_type ? content_type : "application/octet-stream",
                          data ? data : "", len, &r->quit, &resp);
  int rc = 0;
  if (out != REQ_OK) {
    char msg[400];
    fprintf(stderr, "tdlab run: artifact %s was not stored: %s\n", name,
            out == REQ_HTTP_ERROR ? resp_msg(&resp, msg, sizeof msg) : "server unreachable");
    rc = TD_EIO;
  }
  httpc_resp_free(&resp);
  return rc;
}

/* Checkpoints (params.init_from / params.fork) are read from the server: a job's artifact
 * checkpoint_step<S>.safetensors, or an uploaded checkpoint's file (with TDLAB_TOKEN as the
 * bearer when set, for a server that requires its token for reads). */
static int rs_checkpoint(void *ctx, long job, long step, long checkpoint_id, void **data,
                         size_t *len) {
  report *r = ctx;
  *data = NULL;
  *len = 0;
  char url[700];
  if (job > 0)
    snprintf(url, sizeof url, "%s/api/v1/jobs/%ld/artifacts/checkpoint_step%ld.safetensors",
             r->cfg.url, job, step);
  else
    snprintf(url, sizeof url, "%s/api/v1/checkpoints/%ld/file", r->cfg.url, checkpoint_id);
  const char *lab = getenv("TDLAB_TOKEN");
  td_err e;
  td_err_clear(&e);
  httpc_resp resp = {0};
  double wait = 0, t0 = mono();
  int rc;
  for (;;) {
    rc = httpc_request("GET", url, lab && *lab ? lab : NULL, NULL, NULL, 0, 300, &resp, &e);
    if (!rc && resp.status < 500) break;
    if (!rc) httpc_resp_free(&resp);
    if (mono() - t0 > r->cfg.retry_total_s) return TD_EIO;
    wait = report_backoff_next(wait);
    struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
    nanosleep(&ts, NULL);
  }
  if (resp.status == 404) {
    httpc_resp_free(&resp);
    return TD_ENOTFOUND;
  }
  if (resp.status != 200) {
    char msg[400];
    fprintf(stderr, "tdlab run: cannot read checkpoint %s: %s\n", url,
            resp_msg(&resp, msg, sizeof msg));
    httpc_resp_free(&resp);
    return TD_EIO;
  }
  *data = resp.body; /* ownership passes to the caller */
  *len = resp.body_len;
  return 0;
}

/* ---------------------------------------------------------------- run */

int report_run(const td_kind *kind, const json_t *params, const report_cfg *cfg,
               volatile sig_atomic_t *stop) {
  report *r = calloc(1, sizeof *r);
  if (!r) return 1;
  r->cfg = *cfg;
  if (!r->cfg.max_buffer_bytes) r->cfg.max_buffer_bytes = REPORT_MAX_BUFFER_BYTES;
  if (!(r->cfg.retry_total_s > 0)) r->cfg.retry_total_s = REPORT_RETRY_TOTAL_S;
  if (!r->cfg.batch_points) r->cfg.batch_points = REPORT_BATCH_POINTS;
  if (r->cfg.batch_points > 10000) r->cfg.batch_points = 10000;
  if (r->cfg.batch_ms <= 0) r->cfg.batch_ms = REPORT_BATCH_MS;
  r->hb_interval = r->cfg.heartbeat_s > 0 ? r->cfg.heartbeat_s : 20;
  r->stop = stop;
  snprintf(r->url_points, sizeof r->url_points, "%s/api/v1/jobs/%lld/points", cfg->url,
           (long long)cfg->job);
  snprintf(r->url_hb, sizeof r->url_hb, "%s/api/v1/jobs/%lld/heartbeat", cfg->url,
           (long long)cfg->job);
  snprintf(r->url_finish, sizeof r->url_finish, "%s/api/v1/jobs/%lld/finish", cfg->url,
           (long long)cfg->job);
  td_err e;
  td_err_clear(&e);
  if (report_buf_init(&r->buf, r->cfg.max_buffer_bytes, &e)) {
    fprintf(stderr, "tdlab run: %s\n", e.msg);
    free(r);
    return 2;
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cv_send, &ca);
  pthread_cond_init(&r->cv_space, &ca);
  pthread_cond_init(&r->cv_quit, &ca);
  pthread_condattr_destroy(&ca);
  r->last_send = mono();

  int exit_code = 1;
  const char *status = "failed";
  json_t *summary = NULL;
  int rc = TD_EIO;
  pthread_t snd, hb;
  int have_threads = 0;
  /* A first heartbeat before the kind starts: the token and the job are checked, and the
   * interval is learnt from the server's timeout. */
  r->starting = 1;
  int first = heartbeat_once(r);
  r->starting = 0;
  if (first == 0 && !r->fatal) {
    if (pthread_create(&snd, NULL, sender_main, r) == 0) {
      if (pthread_create(&hb, NULL, heartbeat_main, r) == 0) have_threads = 2;
      else {
        pthread_mutex_lock(&r->mu);
        r->quit = 1;
        pthread_cond_broadcast(&r->cv_send);
        pthread_mutex_unlock(&r->mu);
        pthread_join(snd, NULL);
      }
    }
  }
  if (have_threads) {
    td_sink sink = {.ctx = r, .metric = rs_metric, .artifact = rs_artifact,
                    .progress = rs_progress, .should_stop = rs_should_stop,
                    .checkpoint = rs_checkpoint};
    rc = kind->run(params, &sink, &summary, &e);
    /* every buffered point goes out before the finish */
    pthread_mutex_lock(&r->mu);
    r->draining = 1;
    pthread_cond_broadcast(&r->cv_send);
    while (r->buf.n && !r->fatal && !r->sender_done) pthread_cond_wait(&r->cv_space, &r->mu);
    int fatal = r->fatal, cancel = r->cancel;
    int local_stop = stop && *stop;
    pthread_mutex_unlock(&r->mu);
    if (!fatal && !local_stop) heartbeat_once(r); /* the final progress */
    status = rc == 0 ? "succeeded" : rc == TD_EDIVERGED ? "diverged" : "failed";
    if (fatal) {
      status = "failed";
      exit_code = 1;
    } else if (rc == TD_ECANCELLED && !cancel && local_stop) {
      /* Stopped by a signal here (Ctrl-C, or a scheduler's SIGTERM): no finish; the lease
       * (serve --heartbeat-timeout) or the executor decides what becomes of the job. */
      fprintf(stderr, "tdlab run: stopped by a signal; %llu points sent; the job is left to "
                      "its lease\n", r->sent);
      status = "interrupted";
      exit_code = 4;
    } else {
      json_t *fin = json_object();
      json_object_set_new(fin, "status", json_string(status));
      if (summary) json_object_set(fin, "summary", summary);
      if (rc == TD_ECANCELLED)
        json_object_set_new(fin, "error", json_string("cancelled"));
      else if (rc && rc != TD_EDIVERGED)
        json_object_set_new(fin, "error", json_string(e.msg[0] ? e.msg : td_strerror(rc)));
      char *txt = http_json_dump(fin);
      json_decref(fin);
      httpc_resp resp = {0};
      int never = 0;
      int out = txt ? request_retry(r, "POST", r->url_finish, "application/json", txt,
                                    strlen(txt), &never, &resp)
                    : REQ_GAVE_UP;
      free(txt);
      if (out == REQ_OK) {
        json_t *j = json_loads(resp.body, 0, NULL);
        const char *fs = json_string_value(json_object_get(j, "status"));
        status = fs && !strcmp(fs, "cancelled") ? "cancelled" : status;
        exit_code = !strcmp(status, "succeeded") ? 0 : !strcmp(status, "diverged") ? 3
                    : !strcmp(status, "cancelled") ? 4 : 1;
        json_decref(j);
      } else {
        char msg[400];
        fprintf(stderr, "tdlab run: the finish was not recorded: %s\n",
                out == REQ_HTTP_ERROR ? resp_msg(&resp, msg, sizeof msg) : "server unreachable");
        exit_code = 1;
      }
      httpc_resp_free(&resp);
    }
    pthread_mutex_lock(&r->mu);
    r->quit = 1;
    pthread_cond_broadcast(&r->cv_send);
    pthread_cond_broadcast(&r->cv_quit);
    pthread_mutex_unlock(&r->mu);
    pthread_join(snd, NULL);
    pthread_join(hb, NULL);
  } else if (!r->fatal && stop && *stop) {
    /* a signal while the server was away at the start: nothing was run or buffered */
    fprintf(stderr, "tdlab run: stopped by a signal before the server answered; the job is "
                    "left to its lease\n");
    status = "interrupted";
    exit_code = 4;
  } else if (!r->fatal) {
    fprintf(stderr, "tdlab run: cannot start the reporter threads\n");
  }
  printf("{\"job\":%lld,\"status\":\"%s\",\"points_sent\":%llu,\"error\":", (long long)cfg->job,
         status, r->sent);
  http_buf eb;
  http_buf_init(&eb);
  http_buf_json_str(&eb, r->fatal ? r->fatal_msg
                         : (rc && rc != TD_ECANCELLED && rc != TD_EDIVERGED && e.msg[0]) ? e.msg
                                                                                         : NULL);
  fwrite(eb.data ? eb.data : "null", 1, eb.data ? eb.len : 4, stdout);
  http_buf_free(&eb);
  printf("}\n");
  fflush(stdout);
  json_decref(summary);
  report_buf_deinit(&r->buf);
  pthread_cond_destroy(&r->cv_send);
  pthread_cond_destroy(&r->cv_space);
  pthread_cond_destroy(&r->cv_quit);
  pthread_mutex_destroy(&r->mu);
  free(r);
  return exit_code;
}
