/* benchjob.h: the in-process job that the ingestion benchmarks bench/bench_{ingest,remote}.c
 * measure: a kind `bench_emit` that writes emit_cfg.points points (4 keys per step, the value
 * of point i is bench_value_of(i)) as fast as its sink takes them, run by a queue worker, and
 * the time from the kind's start to the job's final status. Header-only (static functions), so
 * each benchmark stays one .c file. */
#ifndef TD_BENCHJOB_H
#define TD_BENCHJOB_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kinds/registry.h"
#include "../server/queue.h"
#include "../server/store.h"

static const char *const bench_keys[4] = {"train_loss", "grad_norm", "param_norm", "lr"};

/* CLOCK_MONOTONIC in seconds (an arbitrary origin). */
static inline double bench_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline void bench_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The point of index i: key i % 4, step i / 4 (the same on every side of a comparison). */
static inline double bench_value_of(long i) { return 1.0 / (1.0 + (double)i) + (double)(i & 3); }

/* Removes a database file and its -wal and -shm files. */
static inline void bench_remove_db(const char *path) {
  char p[700];
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
}

/* What the bench kind writes, and when it started (bench_now_s). */
static struct {
  long points;
  double t_start;
} bench_emit_cfg;

static inline int bench_emit_run(const json_t *params, td_sink *sink, json_t **summary,
                                 td_err *err) {
  (void)params;
  (void)err;
  *summary = NULL;
  long n = bench_emit_cfg.points, steps = (n + 3) / 4;
  bench_emit_cfg.t_start = bench_now_s();
  td_sink_progress(sink, 0, steps);
  for (long step = 0, i = 0; step < steps; step++) {
    if (td_sink_should_stop(sink)) return TD_ECANCELLED;
    for (int k = 0; k < 4 && i < n; k++, i++) {
      int rc = td_sink_metric(sink, bench_keys[k], step, bench_value_of(i));
      if (rc) return rc;
    }
    td_sink_progress(sink, step + 1, steps);
  }
  return 0;
}

static const td_kind bench_emit_kind = {.name = "bench_emit",
                                        .doc = "emit points as fast as possible",
                                        .chapter = "-",
                                        .run = bench_emit_run};

static inline const td_kind *bench_find_emit(const char *name) {
  return strcmp(name, "bench_emit") == 0 ? &bench_emit_kind : NULL;
}

/* A fresh migrated database at `path` with one queued bench_emit job (*job_id); exits with a
 * message naming `who` on an error. The caller closes the connection. */
static inline store *bench_fresh_db(const char *who, const char *path, const char *mig,
                                    int64_t *job_id) {
  bench_remove_db(path);
  store *s = NULL;
  td_err e;
  td_err_clear(&e);
  store_new_job j = {.kind = "bench_emit", .params_json = "{}"};
  if (store_open(path, 0, &s, &e) || store_migrate(s, mig, NULL, NULL, &e) ||
      store_job_insert(s, &j, 0, job_id, &e)) {
    fprintf(stderr, "%s: %s: %s\n", who, path, e.msg);
    exit(1);
  }
  return s;
}

/* Seconds from the bench job's start to its final status when one queue worker runs it with
 * `batch` points per write batch (the server's default is 1024) and 250 ms batches; `n` points
 * into a fresh database at `path`. Exits with a message naming `who` unless it succeeds. */
static inline double bench_emit_job_seconds(const char *who, const char *path, const char *mig,
                                            long n, long batch) {
  int64_t job = 0;
  store *s = bench_fresh_db(who, path, mig, &job);
  bench_emit_cfg.points = n;
  bench_emit_cfg.t_start = 0;
  queue_config qc = {.db_path = path, .workers = 1, .batch_points = (size_t)batch,
                     .batch_ms = 250, .find_kind = bench_find_emit};
  queue *q = NULL;
  td_err e;
  td_err_clear(&e);
  if (queue_create(&qc, &q, &e)) {
    fprintf(stderr, "%s: queue: %s\n", who, e.msg);
    exit(1);
  }
  queue_notify(q);
  int st = STORE_QUEUED;
  double t_end = 0;
  for (long i = 0; i < 600000; i++) { /* at most 10 minutes */
    if (store_job_status(s, job, &st, &e)) exit(1);
    if (st != STORE_QUEUED && st != STORE_RUNNING) {
      t_end = bench_now_s();
      break;
    }
    bench_sleep_ms(1);
  }
  queue_destroy(q);
  store_close(s);
  if (st != STORE_SUCCEEDED || bench_emit_cfg.t_start == 0) {
    fprintf(stderr, "%s: the bench job ended as %s\n", who, store_status_name(st));
    exit(1);
  }
  return t_end - bench_emit_cfg.t_start;
}

#endif
