/* api_kinds.c: the catalogue of kinds, /healthz and the Prometheus /metrics endpoint, plus the
 * shared api_ctx. */
#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>
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

/* One Prometheus histogram from per-bucket counts (the last bucket is +Inf). */
static void write_histogram(http_buf *b, const char *name, const char *help, const double *le,
                            int n, const uint64_t *counts, double sum) {
  http_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  unsigned long long cum = 0;
  for (int k = 0; k < n; k++) {
    cum += counts[k];
    http_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, le[k], cum);
  }
  cum += counts[n];
  http_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, cum,
                  name, sum, name, cum);
}

/* The process_* series of the Prometheus client libraries (their "process collector"), read
 * from /proc/self: CPU seconds (user + system), resident and virtual memory, open and maximum
 * file descriptors, start time (seconds since the epoch). Linux only; a missing file skips its
 * series. */
static void write_process(http_buf *b) {
  long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  FILE *f = fopen("/proc/self/stat", "r");
  unsigned long utime = 0, stime = 0, vsize = 0;
  unsigned long long start = 0;
  long rss = 0;
  int have = 0;
  if (f) {
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    char *p = strrchr(buf, ')'); /* fields after the command name, which may hold spaces */
    if (p &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
               "%llu %lu %ld",
               &utime, &stime, &start, &vsize, &rss) == 5)
      have = 1;
  }
  double btime = 0;
  if ((f = fopen("/proc/stat", "r"))) {
    char line[256];
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "btime %lf", &btime) == 1) break;
    fclose(f);
  }
  if (have && tck > 0)
    http_buf_printf(b,
                    "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                    "seconds.\n# TYPE process_cpu_seconds_total counter\n"
                    "process_cpu_seconds_total %.2f\n"
                    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                    "# TYPE process_resident_memory_bytes gauge\n"
                    "process_resident_memory_bytes %lld\n"
                    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                    "# TYPE process_virtual_memory_bytes gauge\n"
                    "process_virtual_memory_bytes %lu\n"
                    "# HELP process_start_time_seconds Start time of the process since unix "
                    "epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"
                    "process_start_time_seconds %.2f\n",
                    (double)(utime + stime) / tck, (long long)rss * page, vsize,
                    btime + (double)start / tck);
  long fds = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    struct dirent *de;
    while ((de = readdir(d)))
      if (de->d_name[0] != '.') fds++;
    closedir(d);
    http_buf_printf(b,
                    "# HELP process_open_fds Number of open file descriptors.\n"
                    "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
                    fds - 1 /* the directory stream's own */);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    http_buf_printf(b,
                    "# HELP process_max_fds Maximum number of open file descriptors.\n"
                    "# TYPE process_max_fds gauge\nprocess_max_fds %lld\n",
                    (long long)rl.rlim_cur);
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
  write_histogram(b, "tdlab_job_duration_seconds",
                  "Jobs by how long they ran, from the claim to the final status.", queue_run_le,
                  QUEUE_N_RUN_LE, qs.run_count, qs.run_sum_s);
  write_histogram(b, "tdlab_job_queue_wait_seconds",
                  "Jobs by how long they waited, from submission to the claim.", queue_wait_le,
                  QUEUE_N_WAIT_LE, qs.wait_count, qs.wait_sum_s);
  long long dbb = 0, freep = 0, walb = 0;
  if (!store_file_stats(st, &dbb, &freep, &walb, &e))
    http_buf_printf(b,
                    "# HELP tdlab_db_bytes Size of the database file (page_count * page_size).\n"
                    "# TYPE tdlab_db_bytes gauge\ntdlab_db_bytes %lld\n"
                    "# HELP tdlab_db_free_pages Pages on the database's freelist.\n"
                    "# TYPE tdlab_db_free_pages gauge\ntdlab_db_free_pages %lld\n"
                    "# HELP tdlab_wal_bytes Size of the write-ahead log file.\n"
                    "# TYPE tdlab_wal_bytes gauge\ntdlab_wal_bytes %lld\n",
                    dbb, freep, walb);
  http_buf_printf(b,
                  "# HELP tdlab_build_info The tdlab version and the SQLite library it runs on.\n"
                  "# TYPE tdlab_build_info gauge\n"
                  "tdlab_build_info{version=\"%s\",sqlite=\"%s\"} 1\n",
                  TDLAB_VERSION, sqlite3_libversion());
  write_process(b);
  http_write_prometheus(req->srv, b);
  resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  resp->status = 200;
  return 200;
}
