/* bench_metrics_read.c: the cost of a downsampled metric read against the length of the
 * series, and the bytes each stored point costs (issue 17).
 *
 *   read     store_metric_series(max_points=1000) of a 10,000-point and of a 10,000,000-point
 *            series (one key, steps 0..n-1, values of a noisy decay), median of --reads reads
 *            each; the peer is the read before the pyramid (migration 0004): a count and a
 *            full scan of the key's points through store_ds, the same downsampler, timed on
 *            the same database in the same run.
 *   bytes    1,000,000 points (4 keys x 250,000 steps, as `train` writes them) through
 *            store_mw into a fresh file, size after a WAL checkpoint and VACUUM, over the
 *            points; then the pyramid and the clock anchors are deleted and the file vacuumed
 *            again, which is the size of the same points without them (today's schema).
 *   --make-compare-db PATH: write 20 jobs x 100,000 points of train_loss (and 1,000 of
 *            test_acc) to PATH and exit (bench/compare.sh opens them in the comparison page).
 *
 * Usage: bench_metrics_read [--big N (10000000)] [--reads R (21)] [--migrations DIR]
 *                           [--dir TMPDIR (/tmp)] [--make-compare-db PATH]
 * Prints:
 *   BENCH metric_read_1000_of_10k tdlab_ms=<t> peer=full_scan peer_ms=<t> ratio=<peer/tdlab>
 *   BENCH metric_read_1000_of_10M tdlab_ms=<t> peer=full_scan peer_ms=<t> ratio=<peer/tdlab>
 *   BENCH metric_read_growth_10k_to_10M tdlab=<t10M/t10k> peer=<p10M/p10k>
 *   BENCH metric_bytes_per_point tdlab=<b> peer=without_pyramid peer_bytes=<b0> ratio=<b/b0>
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../server/store.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, const td_err *e) {
  fprintf(stderr, "bench_metrics_read: %s: %s\n", what, e ? e->msg : "");
  exit(1);
}

static store *open_db(const char *path, const char *mig) {
  store *s = NULL;
  td_err e;
  td_err_clear(&e);
  if (store_open(path, 0, &s, &e) || store_migrate(s, mig, NULL, NULL, &e)) die("open", &e);
  return s;
}

static int64_t new_job(store *s, const char *name, const char *params) {
  store_new_job j = {.kind = "train", .name = name, .params_json = params, .tags_json = "[]",
                     .tags = NULL, .n_tags = 0, .priority = 0};
  int64_t id = 0;
  td_err e;
  td_err_clear(&e);
  if (store_job_insert(s, &j, 0, &id, &e)) die("insert job", &e);
  return id;
}

/* n points of key for job id: a decaying loss with multiplicative noise (seeded LCG). */
static void write_series(store *s, int64_t id, const char *key, long n, long every, unsigned seed) {
  store_mw *w = NULL;
  td_err e;
  td_err_clear(&e);
  if (store_mw_create(s, id, 4096, 3600 * 1000L, &w, &e)) die("writer", &e);
  unsigned long long r = seed * 2654435761ull + 1;
  for (long i = 0; i < n; i++) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    double u = (double)(r >> 11) / 9007199254740992.0;
    double v = (2.3 * exp(-(double)i / (0.3 * (double)n)) + 0.1) * (0.8 + 0.4 * u) + 0.01 * seed;
    if (store_mw_put(w, key, i * every, v)) die("put", NULL);
  }
  if (store_mw_flush(w)) die("flush", NULL);
  store_mw_destroy(w);
}

static void sink(void *ctx, long step, double v) {
  (void)step, (void)v;
  (*(size_t *)ctx)++;
}

/* The read before migration 0004: count, then every point through store_ds. */
static size_t old_read(sqlite3 *db, int64_t job, size_t max_points) {
  sqlite3_stmt *c, *q;
  sqlite3_prepare_v2(db, "SELECT count(*) FROM metrics m JOIN metric_keys k ON k.id=m.key_id "
                         "WHERE m.job_id=?1 AND k.name='train_loss'", -1, &c, NULL);
  sqlite3_prepare_v2(db, "SELECT step,value FROM metrics m JOIN metric_keys k ON k.id=m.key_id "
                         "WHERE m.job_id=?1 AND k.name='train_loss' ORDER BY step", -1, &q, NULL);
  sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  sqlite3_bind_int64(c, 1, job);
  sqlite3_step(c);
  size_t n = (size_t)sqlite3_column_int64(c, 0), out = 0;
  store_ds ds;
  store_ds_init(&ds, n, max_points, sink, &out);
  sqlite3_bind_int64(q, 1, job);
  while (sqlite3_step(q) == SQLITE_ROW)
    store_ds_push(&ds, (long)sqlite3_column_int64(q, 0),
                  sqlite3_column_type(q, 1) == SQLITE_NULL ? NAN : sqlite3_column_double(q, 1));
  store_ds_finish(&ds);
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  sqlite3_finalize(c);
  sqlite3_finalize(q);
  return out;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return v[n / 2];
}

static long file_size(const char *p) {
  struct stat sb;
  return stat(p, &sb) ? 0 : (long)sb.st_size;
}

int main(int argc, char **argv) {
  long big = 10000000;
  int reads = 21;
  const char *mig = "migrations", *dir = "/tmp", *compare_db = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--big") && i + 1 < argc) big = atol(argv[++i]);
    else if (!strcmp(argv[i], "--reads") && i + 1 < argc) reads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--migrations") && i + 1 < argc) mig = argv[++i];
    else if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--make-compare-db") && i + 1 < argc) compare_db = argv[++i];
    else {
      fprintf(stderr, "usage: bench_metrics_read [--big N] [--reads R] [--migrations DIR] [--dir D] "
                      "[--make-compare-db PATH]\n");
      return 2;
    }
  }
  if (reads < 1 || reads > 1000) reads = 21;
  if (compare_db) {
    unlink(compare_db);
    store *s = open_db(compare_db, mig);
    for (int j = 0; j < 20; j++) {
      char name[32], params[160];
      snprintf(name, sizeof name, "cmp-%d", j);
      snprintf(params, sizeof params,
               "{\"optimizer\":{\"name\":\"%s\",\"lr\":%g},\"seed\":%d}",
               j % 2 ? "adam" : "sgd", j % 2 ? 0.001 * (1 + j / 4) : 0.1 * (1 + j / 4), j % 4 / 2);
      int64_t id = new_job(s, name, params);
      write_series(s, id, "train_loss", 100000, 1, (unsigned)j + 1);
      write_series(s, id, "test_acc", 1000, 100, (unsigned)j + 101);
    }
    store_close(s);
    printf("wrote 20 jobs x 100000 points to %s\n", compare_db);
    return 0;
  }

  char path[512];
  snprintf(path, sizeof path, "%s/tdlab-bench-read-%d.db", dir, (int)getpid());
  unlink(path);
  store *s = open_db(path, mig);
  int64_t small = new_job(s, "small", "{}"), large = new_job(s, "large", "{}");
  double t = now_s();
  write_series(s, small, "train_loss", 10000, 1, 1);
  write_series(s, large, "train_loss", big, 1, 2);
  fprintf(stderr, "bench_metrics_read: wrote %ld + 10000 points in %.1f s\n", big, now_s() - t);
  sqlite3 *db;
  sqlite3_open(path, &db);
  double *tt = malloc(sizeof(double) * (size_t)reads), res[2][2];
  int64_t jobs[2] = {small, large};
  for (int k = 0; k < 2; k++) {
    for (int side = 0; side < 2; side++) {
      int nr = side == 1 && k == 1 ? (reads < 5 ? reads : 5) : reads; /* the full scan is slow */
      for (int r = 0; r < nr; r++) {
        size_t out = 0, total = 0;
        td_err e;
        double t0 = now_s();
        if (side == 0) {
          if (store_metric_series(s, jobs[k], "train_loss", -1000000000L, 1000, sink, &out, &total, &e))
            die("read", &e);
        } else {
          out = old_read(db, jobs[k], 1000);
        }
        tt[r] = (now_s() - t0) * 1e3;
        if (out > 1000 || out < 100) {
          fprintf(stderr, "bench_metrics_read: a read returned %zu points\n", out);
          return 1;
        }
      }
      res[k][side] = median(tt, nr);
    }
  }
  printf("BENCH metric_read_1000_of_10k tdlab_ms=%.3f peer=full_scan peer_ms=%.3f ratio=%.2f\n",
         res[0][0], res[0][1], res[0][1] / res[0][0]);
  printf("BENCH metric_read_1000_of_%ldM tdlab_ms=%.3f peer=full_scan peer_ms=%.3f ratio=%.2f\n",
         big / 1000000, res[1][0], res[1][1], res[1][1] / res[1][0]);
  printf("BENCH metric_read_growth_10k_to_%ldM tdlab=%.2f peer=%.2f\n", big / 1000000,
         res[1][0] / res[0][0], res[1][1] / res[0][1]);
  sqlite3_close(db);
  store_close(s);
  unlink(path);

  /* bytes per point */
  snprintf(path, sizeof path, "%s/tdlab-bench-bytes-%d.db", dir, (int)getpid());
  unlink(path);
  s = open_db(path, mig);
  int64_t id = new_job(s, "bytes", "{}");
  {
    static const char *const keys[4] = {"train_loss", "grad_norm", "param_norm", "lr"};
    store_mw *w = NULL;
    td_err e;
    if (store_mw_create(s, id, 1024, 250, &w, &e)) die("writer", &e);
    unsigned long long r = 7;
    for (long i = 0; i < 250000; i++)
      for (int k = 0; k < 4; k++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        if (store_mw_put(w, keys[k], i, (double)(r >> 11) / 9007199254740992.0)) die("put", NULL);
      }
    if (store_mw_flush(w)) die("flush", NULL);
    store_mw_destroy(w);
  }
  store_close(s);
  sqlite3_open(path, &db);
  long empty_pages = 0;
  sqlite3_exec(db, "PRAGMA journal_mode=DELETE; VACUUM;", NULL, NULL, NULL);
  long with = file_size(path);
  sqlite3_exec(db, "DELETE FROM metric_pyr; DELETE FROM metric_times; VACUUM;", NULL, NULL, NULL);
  long without = file_size(path);
  sqlite3_exec(db, "DELETE FROM metrics; VACUUM;", NULL, NULL, NULL);
  empty_pages = file_size(path);
  sqlite3_close(db);
  unlink(path);
  double b1 = (double)(with - empty_pages) / 1e6, b0 = (double)(without - empty_pages) / 1e6;
  printf("BENCH metric_bytes_per_point tdlab=%.2f peer=without_pyramid peer_bytes=%.2f ratio=%.3f\n",
         b1, b0, b1 / b0);
  free(tt);
  return 0;
}
