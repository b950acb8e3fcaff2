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

#include "benchjob.h"
#include "kinds/registry.h"
#include "../server/log.h"
#include "../server/queue.h"
#include "../server/store.h"







/* ---------------------------------------------------------------- peer: raw SQLite */

static double run_raw(const char *path, const char *mig, long n, long batch) {
  int64_t job = 0;
  store_close(bench_fresh_db("bench_ingest", path, mig, &job)); /* the same schema, created by the migrations */
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
  double t0 = bench_now_s();
  for (long i = 0; i < n; i++) {
    if (i % batch == 0) sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    sqlite3_bind_int64(ins, 1, job);
    sqlite3_bind_int64(ins, 2, 1 + (i & 3));
    sqlite3_bind_int64(ins, 3, i / 4);
    sqlite3_bind_double(ins, 4, bench_value_of(i));
    if (sqlite3_step(ins) != SQLITE_DONE) {
      fprintf(stderr, "bench_ingest: raw insert: %s\n", sqlite3_errmsg(db));
      exit(1);
    }
    sqlite3_reset(ins);
    if (i % batch == batch - 1 || i == n - 1) sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  }
  double dt = bench_now_s() - t0;
  sqlite3_finalize(ins);
  sqlite3_close(db);
  return dt;
}

/* ---------------------------------------------------------------- tdlab: store_mw alone */

static double run_store_mw(const char *path, const char *mig, long n, long batch) {
  int64_t job = 0;
  store *s = bench_fresh_db("bench_ingest", path, mig, &job);
  store_mw *w = NULL;
  td_err e;
  if (store_mw_create(s, job, (size_t)batch, 250, &w, &e)) exit(1);
  double t0 = bench_now_s();
  for (long i = 0; i < n; i++)
    if (store_mw_put(w, bench_keys[i & 3], i / 4, bench_value_of(i))) {
      fprintf(stderr, "bench_ingest: store_mw_put failed\n");
      exit(1);
    }
  if (store_mw_flush(w)) exit(1);
  double dt = bench_now_s() - t0;
  store_mw_destroy(w);
  store_close(s);
  return dt;
}

/* ---------------------------------------------------------------- tdlab: a job in a queue */

/* tdlab's path: the bench kind run by a queue worker (benchjob.h). */
static double run_job(const char *path, const char *mig, long n, long batch) {
  return bench_emit_job_seconds("bench_ingest", path, mig, n, batch);
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
  bench_remove_db(path);
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
