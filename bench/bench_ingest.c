/* bench_ingest.c: metric ingestion throughput (points per second) of tdlab against raw batched
 * SQLite inserts into the same schema, measured in the same run.
 *
 * Three sides, each on a fresh database file in WAL mode with synchronous=NORMAL, migrated
 * with migrations/ (so the metrics table is the real WITHOUT ROWID (job_id, key_id, step)):
 *   job       the server's path end to end: a queue with one worker runs a job whose kind
 *             emits points as fast as it can through its td_sink (4 keys per step, progress
 *             and should_stop every step, like `train`); timed from the kind's start until
 *             the job is recorded as succeeded (so the last batch's commit is included).
 *   store_mw  the batched writer alone (store_mw_put, the code the worker's sink calls).
 *   raw       the peer: one prepared INSERT per point, BEGIN/COMMIT every --batch points.
 * The sides alternate (raw, job, store_mw, raw, ...) for --rounds rounds and each reports
 * total points over total seconds; the spread is printed on stderr.
 *
 * Usage: bench_ingest [--points N (1000000)] [--rounds R (3)] [--batch B (1024)]
 *                     [--migrations DIR (migrations)] [--dir TMPDIR (/tmp)]
 * Prints:
 *   BENCH metric_ingest tdlab_pts_per_s=<job> peer=raw_sqlite peer_pts_per_s=<raw> ratio=<job/raw>
 *   BENCH metric_ingest_store_mw tdlab_pts_per_s=<store_mw> peer=raw_sqlite peer_pts_per_s=<raw> ratio=<store_mw/raw>
 */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kinds/registry.h"
#include "../server/log.h"
#include "../server/queue.h"
#include "../server/store.h"

static const char *const keys[4] = {"train_loss", "grad_norm", "param_norm", "lr"};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The point of index i: key i % 4, step i / 4 (the same on every side). */
static double value_of(long i) { return 1.0 / (1.0 + (double)i) + (double)(i & 3); }

static void remove_db(const char *path) {
  char p[700];
  unlink(path);
  snprintf(p, sizeof p, "%s-wal", path);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", path);
  unlink(p);
}

/* A migrated database at `path` with one job row; returns its connection. */
static store *fresh_db(const char *path, const char *mig, int64_t *job_id) {
  remove_db(path);
  store *s = NULL;
  td_err e;
  td_err_clear(&e);
  if (store_open(path, 0, &s, &e) || store_migrate(s, mig, NULL, NULL, &e)) {
    fprintf(stderr, "bench_ingest: %s: %s\n", path, e.msg);
    exit(1);
  }
  store_new_job j = {.kind = "bench_emit", .params_json = "{}"};
  if (store_job_insert(s, &j, 0, job_id, &e)) {
    fprintf(stderr, "bench_ingest: insert job: %s\n", e.msg);
    exit(1);
  }
  return s;
}

/* ---------------------------------------------------------------- peer: raw SQLite */

static double run_raw(const char *path, const char *mig, long n, long batch) {
  int64_t job = 0;
  store_close(fresh_db(path, mig, &job)); /* the same schema, created by the migrations */
  sqlite3 *db = NULL;
  /* No connection mutex (one thread), as tdlab's own connections: the strongest raw peer. */
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
    exit(1);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL);
  sqlite3_stmt *ins = NULL;
  if (sqlite3_prepare_v2(db, "INSERT INTO metrics(job_id,key_id,step,value) VALUES(?1,?2,?3,?4)",
                         -1, &ins, NULL) != SQLITE_OK) {
    fprintf(stderr, "bench_ingest: raw prepare: %s\n", sqlite3_errmsg(db));
    exit(1);
  }
  double t0 = now_s();
  for (long i = 0; i < n; i++) {
    if (i % batch == 0) sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    sqlite3_bind_int64(ins, 1, job);
    sqlite3_bind_int64(ins, 2, 1 + (i & 3));
    sqlite3_bind_int64(ins, 3, i / 4);
    sqlite3_bind_double(ins, 4, value_of(i));
    if (sqlite3_step(ins) != SQLITE_DONE) {
      fprintf(stderr, "bench_ingest: raw insert: %s\n", sqlite3_errmsg(db));
      exit(1);
    }
    sqlite3_reset(ins);
    if (i % batch == batch - 1 || i == n - 1) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  }
  double dt = now_s() - t0;
  sqlite3_finalize(ins);
  sqlite3_close(db);
  return dt;
}

/* ---------------------------------------------------------------- tdlab: store_mw alone */

static double run_store_mw(const char *path, const char *mig, long n, long batch) {
  int64_t job = 0;
  store *s = fresh_db(path, mig, &job);
  store_mw *w = NULL;
  td_err e;
  if (store_mw_create(s, job, (size_t)batch, 250, &w, &e)) exit(1);
  double t0 = now_s();
  for (long i = 0; i < n; i++)
    if (store_mw_put(w, keys[i & 3], i / 4, value_of(i))) {
      fprintf(stderr, "bench_ingest: store_mw_put failed\n");
      exit(1);
    }
  if (store_mw_flush(w)) exit(1);
  double dt = now_s() - t0;
  store_mw_destroy(w);
  store_close(s);
  return dt;
}

/* ---------------------------------------------------------------- tdlab: a job in a queue */

static struct {
  long points;
  double t_start;
} emit_cfg;

/* The bench kind: emit_cfg.points points, 4 keys per step, as fast as the sink takes them. */
static int emit_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  (void)params;
  (void)err;
  *summary = NULL;
  long n = emit_cfg.points, steps = (n + 3) / 4;
  emit_cfg.t_start = now_s();
  td_sink_progress(sink, 0, steps);
  for (long step = 0, i = 0; step < steps; step++) {
    if (td_sink_should_stop(sink)) return TD_ECANCELLED;
    for (int k = 0; k < 4 && i < n; k++, i++) {
      int rc = td_sink_metric(sink, keys[k], step, value_of(i));
      if (rc) return rc;
    }
    td_sink_progress(sink, step + 1, steps);
  }
  return 0;
}

static const td_kind bench_kind = {.name = "bench_emit",
                                   .doc = "emit points as fast as possible",
                                   .chapter = "-",
                                   .run = emit_run};

static const td_kind *find_bench(const char *name) {
  return strcmp(name, "bench_emit") == 0 ? &bench_kind : NULL;
}

static double run_job(const char *path, const char *mig, long n, long batch) {
  int64_t job = 0;
  store *s = fresh_db(path, mig, &job);
  emit_cfg.points = n;
  emit_cfg.t_start = 0;
  queue_config qc = {.db_path = path, .workers = 1, .batch_points = (size_t)batch,
                     .batch_ms = 250, .find_kind = find_bench};
  queue *q = NULL;
  td_err e;
  if (queue_create(&qc, &q, &e)) {
    fprintf(stderr, "bench_ingest: queue: %s\n", e.msg);
    exit(1);
  }
  queue_notify(q);
  int st = STORE_QUEUED;
  double t_end = 0;
  for (long i = 0; i < 600000; i++) { /* at most 10 minutes */
    if (store_job_status(s, job, &st, &e)) exit(1);
    if (st != STORE_QUEUED && st != STORE_RUNNING) {
      t_end = now_s();
      break;
    }
    sleep_ms(1);
  }
  queue_destroy(q);
  store_close(s);
  if (st != STORE_SUCCEEDED || emit_cfg.t_start == 0) {
    fprintf(stderr, "bench_ingest: the bench job ended as %s\n", store_status_name(st));
    exit(1);
  }
  return t_end - emit_cfg.t_start;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  long n = 1000000, rounds = 3, batch = 1024;
  const char *mig = "migrations", *dir = "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--points")) n = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--rounds")) rounds = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) batch = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--migrations")) mig = argv[i + 1];
    else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
    else {
      fprintf(stderr, "usage: bench_ingest [--points N] [--rounds R] [--batch B] "
                      "[--migrations DIR] [--dir TMPDIR]\n");
      return 2;
    }
  }
  if (n < 4 || rounds < 1 || rounds > 100 || batch < 1) return 2;
  log_set_level(LOG_WARN); /* no job_started/job_finished lines from the queue */
  char tmpl[512];
  snprintf(tmpl, sizeof tmpl, "%s/tdlab-ingest.XXXXXX", dir);
  if (!mkdtemp(tmpl)) {
    perror("bench_ingest: mkdtemp");
    return 1;
  }
  char path[600];
  snprintf(path, sizeof path, "%s/bench.db", tmpl);
  double t_raw = 0, t_job = 0, t_mw = 0, r_raw[100], r_job[100], r_mw[100];
  for (long r = 0; r < rounds; r++) {
    double a = run_raw(path, mig, n, batch);
    double b = run_job(path, mig, n, batch);
    double c = run_store_mw(path, mig, n, batch);
    t_raw += a, t_job += b, t_mw += c;
    r_raw[r] = n / a, r_job[r] = n / b, r_mw[r] = n / c;
    fprintf(stderr, "round %ld raw=%.0f job=%.0f store_mw=%.0f pts/s (job/raw %.3f)\n", r + 1,
            n / a, n / b, n / c, a / b);
  }
  remove_db(path);
  rmdir(tmpl);
  qsort(r_raw, (size_t)rounds, sizeof *r_raw, cmp_double);
  qsort(r_job, (size_t)rounds, sizeof *r_job, cmp_double);
  qsort(r_mw, (size_t)rounds, sizeof *r_mw, cmp_double);
  fprintf(stderr, "spread (min..max pts/s): raw %.0f..%.0f job %.0f..%.0f store_mw %.0f..%.0f\n",
          r_raw[0], r_raw[rounds - 1], r_job[0], r_job[rounds - 1], r_mw[0], r_mw[rounds - 1]);
  double raw = rounds * n / t_raw, job = rounds * n / t_job, mw = rounds * n / t_mw;
  printf("BENCH metric_ingest tdlab_pts_per_s=%.0f peer=raw_sqlite peer_pts_per_s=%.0f "
         "ratio=%.3f\n", job, raw, job / raw);
  printf("BENCH metric_ingest_store_mw tdlab_pts_per_s=%.0f peer=raw_sqlite peer_pts_per_s=%.0f "
         "ratio=%.3f\n", mw, raw, mw / raw);
  return 0;
}
