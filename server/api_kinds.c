/* api_kinds.c: the catalogue of kinds, /healthz and the Prometheus /metrics endpoint, plus the
 * shared api_ctx. */
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "store_cache.h"

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int api_ctx_init(api_ctx *a, queue *q, td_limits limits, long max_queued, const char *web_dir,
                 td_err *err) {
  memset(a, 0, sizeof *a);
  a->q = q;
  a->limits = limits;
  a->max_queued = max_queued;
  a->start_ms = mono_ms();
  json_t *cat = td_kinds_catalogue();
  json_t *o = json_object();
  if (cat && o) json_object_set_new(o, "kinds", cat);
  else json_decref(cat);
  a->kinds_json = o ? http_json_dump(o) : NULL;
  json_decref(o);
  if (!a->kinds_json) return td_err_set(err, TD_ENOMEM, NULL, "cannot render the catalogue");
  a->kinds_len = strlen(a->kinds_json);
  if (web_dir) {
    char *real = realpath(web_dir, NULL);
    if (real) {
      a->web_root = real;
      a->web_root_len = strlen(real);
    }
  }
  return 0;
}

void api_ctx_deinit(api_ctx *a) {
  free(a->kinds_json);
  free(a->web_root);
  memset(a, 0, sizeof *a);
}

int api_kinds_list(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  http_buf_add(&resp->body, a->kinds_json, a->kinds_len);
  resp->status = 200;
  return 200;
}

int api_healthz(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  store *st;
  td_err e;
  td_err_clear(&e);
  long depth = 0;
  if (http_store(req, &st, &e) || store_queue_depth(st, &depth, &e))
    return http_error(resp, HTTP_E_UNAVAILABLE, NULL, "database unavailable: %s", e.msg);
  queue_stats qs = {0};
  if (a->q) queue_stats_get(a->q, &qs);
  http_buf_printf(&resp->body,
                  "{\"status\":\"ok\",\"queue_depth\":%ld,\"workers\":%d,\"busy_workers\":%d,"
                  "\"uptime_s\":%.3f}",
                  depth, qs.workers, qs.busy, (mono_ms() - a->start_ms) / 1000.0);
  resp->status = 200;
  return 200;
}

int api_prometheus(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  store *st;
  td_err e;
  td_err_clear(&e);
  long counts[STORE_N_STATUS];
  if (http_store(req, &st, &e) || store_job_counts(st, counts, &e))
    return http_error(resp, HTTP_E_UNAVAILABLE, NULL, "database unavailable: %s", e.msg);
  queue_stats qs = {0};
  if (a->q) queue_stats_get(a->q, &qs);
  http_buf *b = &resp->body;
  http_buf_str(b, "# HELP tdlab_jobs Jobs by status.\n# TYPE tdlab_jobs gauge\n");
  for (int i = 0; i < STORE_N_STATUS; i++)
    http_buf_printf(b, "tdlab_jobs{status=\"%s\"} %ld\n", store_status_name(i), counts[i]);
  http_buf_printf(b,
                  "# HELP tdlab_queue_depth Jobs waiting in the queue.\n"
                  "# TYPE tdlab_queue_depth gauge\ntdlab_queue_depth %ld\n"
                  "# HELP tdlab_workers Worker threads.\n"
                  "# TYPE tdlab_workers gauge\ntdlab_workers %d\n"
                  "# HELP tdlab_workers_busy Worker threads running a job.\n"
                  "# TYPE tdlab_workers_busy gauge\ntdlab_workers_busy %d\n",
                  counts[STORE_QUEUED], qs.workers, qs.busy);
  http_buf_printf(b,
                  "# HELP tdlab_metric_points_ingested_total Metric points committed since start.\n"
                  "# TYPE tdlab_metric_points_ingested_total counter\n"
                  "tdlab_metric_points_ingested_total %llu\n"
                  "# HELP tdlab_jobs_started_total Jobs claimed by a worker since start.\n"
                  "# TYPE tdlab_jobs_started_total counter\ntdlab_jobs_started_total %llu\n"
                  "# HELP tdlab_jobs_finished_total Jobs that ended or were re-queued since start.\n"
                  "# TYPE tdlab_jobs_finished_total counter\ntdlab_jobs_finished_total %llu\n",
                  (unsigned long long)qs.points, (unsigned long long)qs.jobs_started,
                  (unsigned long long)qs.jobs_finished);
  if (a->job_cache) {
    uint64_t hits = 0, misses = 0;
    store_cache_stats(a->job_cache, &hits, &misses);
    http_buf_printf(b,
                    "# HELP tdlab_job_cache_lookups_total GET /api/v1/jobs/{id} answered from "
                    "the job cache (hit) or the database (miss).\n"
                    "# TYPE tdlab_job_cache_lookups_total counter\n"
                    "tdlab_job_cache_lookups_total{result=\"hit\"} %llu\n"
                    "tdlab_job_cache_lookups_total{result=\"miss\"} %llu\n",
                    (unsigned long long)hits, (unsigned long long)misses);
  }
  http_write_prometheus(req->srv, b);
  resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  resp->status = 200;
  return 200;
}
