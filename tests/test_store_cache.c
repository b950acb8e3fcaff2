/* test_store_cache.c: the job cache (server/store_cache.c): hits, invalidation by a commit on
 * any attached connection (file database in WAL mode, two connections), a value read before
 * a commit is never served after it, rollbacks, statements that touch many jobs, expiry, the
 * size limit, :memory: (no WAL: the commit hook), and that WAL checkpoints still happen with
 * the replaced WAL hook. Exact logic: no tolerances, no timing asserts except the TTL (which
 * only checks that an entry older than ttl_ms is not served). Run from the repo root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../server/store.h"
#include "../server/store_cache.h"

static const char *mig_dir(void) {
  const char *d = getenv("TDLAB_MIGRATIONS");
  return d ? d : "migrations";
}

typedef struct fx {
  char dir[64], path[128];
  store *a, *b; /* two connections to the same file, both attached */
  store_cache *c;
} fx;

static void fx_open(fx *f, long ttl_ms) {
  snprintf(f->dir, sizeof f->dir, "/tmp/tdlab_test_cache_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/db.sqlite", f->dir);
  td_err e;
  assert_int_equal(store_open(f->path, 0, &f->a, &e), 0);
  assert_int_equal(store_migrate(f->a, mig_dir(), NULL, NULL, &e), 0);
  assert_int_equal(store_open(f->path, 0, &f->b, &e), 0);
  assert_int_equal(store_cache_create(64, 4096, ttl_ms, &f->c, &e), 0);
  assert_int_equal(store_cache_attach(f->a, f->c, &e), 0);
  assert_int_equal(store_cache_attach(f->b, f->c, &e), 0);
}

static void fx_close(fx *f) {
  store_close(f->a);
  store_close(f->b);
  store_cache_destroy(f->c);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
}

static int64_t add_job(store *s) {
  store_new_job j = {.kind = "k", .params_json = "{}"};
  int64_t id = 0;
  td_err e;
  assert_int_equal(store_job_insert(s, &j, 0, &id, &e), 0);
  return id;
}

typedef struct got {
  char buf[256];
  int n;
} got;

static void grab(void *ctx, const char *data, size_t len) {
  got *g = ctx;
  snprintf(g->buf, sizeof g->buf, "%.*s", (int)len, data);
  g->n++;
}

/* get: 1 and the value on a hit; 0 on a miss (the stamp is returned through *st). */
static int get(store_cache *c, int64_t id, got *g, store_cache_stamp *st) {
  memset(g, 0, sizeof *g);
  return store_cache_get(c, id, grab, g, st);
}

static void test_hit_and_miss(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 60000);
  int64_t id = add_job(f.a);
  got g;
  store_cache_stamp st;
  assert_int_equal(get(f.c, id, &g, &st), 0);
  store_cache_put(f.c, id, &st, "v1", 2);
  assert_int_equal(get(f.c, id, &g, &st), 1);
  assert_string_equal(g.buf, "v1");
  assert_int_equal(g.n, 1);
  /* Another id in the same slot (64 slots) does not see it, and evicts it when put. */
  assert_int_equal(get(f.c, id + 64, &g, &st), 0);
  store_cache_put(f.c, id + 64, &st, "other", 5);
  assert_int_equal(get(f.c, id, &g, &st), 0);
  assert_int_equal(get(f.c, id + 64, &g, &st), 1);
  assert_string_equal(g.buf, "other");
  uint64_t hits, misses;
  store_cache_stats(f.c, &hits, &misses);
  assert_int_equal(hits, 2);
  assert_int_equal(misses, 3);
  fx_close(&f);
}

/* Forking a job (a child with parent_job_id) changes the parent's record (its children):
 * the parent's cached entry is dropped by the insert. */
static void test_fork_invalidates_parent(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 60000);
  int64_t parent = add_job(f.a), other = add_job(f.a);
  got g;
  store_cache_stamp st, st2;
  get(f.c, parent, &g, &st);
  store_cache_put(f.c, parent, &st, "no children", 11);
  get(f.c, other, &g, &st2);
  store_cache_put(f.c, other, &st2, "other", 5);
  store_new_job j = {.kind = "k", .params_json = "{}", .parent_job_id = parent, .parent_step = 5};
  int64_t id = 0;
  td_err e;
  assert_int_equal(store_job_insert(f.b, &j, 0, &id, &e), 0);
  assert_int_equal(get(f.c, parent, &g, &st), 0);
  assert_int_equal(get(f.c, other, &g, &st2), 1);
  fx_close(&f);
}

/* A commit that changes the job, on either connection, invalidates its entry only. */
static void test_commit_invalidates(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 60000);
  int64_t id = add_job(f.a), other = add_job(f.a);
  got g;
  store_cache_stamp st, st2;
  get(f.c, id, &g, &st);
  store_cache_put(f.c, id, &st, "queued", 6);
  get(f.c, other, &g, &st2);
  store_cache_put(f.c, other, &st2, "other", 5);
  td_err e;
  int outcome;
  assert_int_equal(store_job_cancel(f.b, id, &outcome, &e), 0); /* connection b writes */
  assert_int_equal(outcome, STORE_CANCELLED);
  assert_int_equal(get(f.c, id, &g, &st), 0);
  assert_int_equal(get(f.c, other, &g, &st2), 1); /* untouched */
  store_cache_put(f.c, id, &st, "cancelled", 9);
  assert_int_equal(get(f.c, id, &g, &st), 1);
  assert_string_equal(g.buf, "cancelled");
  /* The claim (UPDATE ... RETURNING) and the metric writer's progress update count too. */
  int64_t run = add_job(f.a);
  get(f.c, run, &g, &st);
  store_cache_put(f.c, run, &st, "queued", 6);
  store_claimed cl;
  int found = 0;
  assert_int_equal(store_job_claim(f.a, &cl, &found, &e), 0);
  assert_int_equal(found, 1);
  assert_int_equal(cl.id, other); /* the oldest queued job */
  store_claimed_free(&cl);
  assert_int_equal(get(f.c, other, &g, &st2), 0);
  assert_int_equal(store_job_claim(f.a, &cl, &found, &e), 0);
  assert_int_equal(cl.id, run);
  store_claimed_free(&cl);
  get(f.c, run, &g, &st);
  store_cache_put(f.c, run, &st, "running 0", 9);
  store_mw *w = NULL;
  assert_int_equal(store_mw_create(f.b, run, 16, 250, &w, &e), 0);
  assert_int_equal(store_mw_put(w, "loss", 0, 1.0), 0);
  assert_int_equal(store_mw_flush(w), 0); /* points only: the job row is unchanged */
  assert_int_equal(get(f.c, run, &g, &st), 1);
  store_mw_progress(w, 5, 10);
  assert_int_equal(store_mw_flush(w), 0); /* progress: the job row changes */
  assert_int_equal(get(f.c, run, &g, &st), 0);
  store_mw_destroy(w);
  fx_close(&f);
}

/* A value read before a commit (stamp taken before it) is dropped by put, or never served. */
static void test_stale_put_is_dropped(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 60000);
  int64_t id = add_job(f.a);
  got g;
  store_cache_stamp before;
  assert_int_equal(get(f.c, id, &g, &before), 0); /* the reader takes its stamp ... */
  td_err e;
  int outcome;
  assert_int_equal(store_job_cancel(f.b, id, &outcome, &e), 0); /* ... a writer commits ... */
  store_cache_put(f.c, id, &before, "stale", 5); /* ... the reader offers its old copy */
  store_cache_stamp now;
  assert_int_equal(get(f.c, id, &g, &now), 0);
  fx_close(&f);
}

/* A rolled-back change invalidates nothing; a statement over many jobs invalidates all. */
static void test_rollback_and_many_rows(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 60000);
  int64_t ids[40];
  for (int i = 0; i < 40; i++) ids[i] = add_job(f.a);
  got g;
  store_cache_stamp st;
  get(f.c, ids[0], &g, &st);
  store_cache_put(f.c, ids[0], &st, "x", 1);
  td_err e;
  assert_int_equal(store_exec(f.a, "BEGIN; UPDATE jobs SET name='y' WHERE id=1; ROLLBACK;", &e), 0);
  assert_int_equal(get(f.c, ids[0], &g, &st), 1);
  /* 40 rows in one statement: more than the per-transaction list holds, so all are dropped. */
  assert_int_equal(store_exec(f.b, "UPDATE jobs SET name='z'", &e), 0);
  assert_int_equal(get(f.c, ids[0], &g, &st), 0);
  store_cache_put(f.c, ids[0], &st, "x", 1);
  assert_int_equal(get(f.c, ids[0], &g, &st), 1);
  store_cache_invalidate(f.c, ids[0]);
  assert_int_equal(get(f.c, ids[0], &g, &st), 0);
  store_cache_put(f.c, ids[0], &st, "x", 1);
  store_cache_invalidate(f.c, 0);
  assert_int_equal(get(f.c, ids[0], &g, &st), 0);
  fx_close(&f);
}

static void test_ttl_and_size_limit(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 50);
  int64_t id = add_job(f.a);
  got g;
  store_cache_stamp st;
  get(f.c, id, &g, &st);
  store_cache_put(f.c, id, &st, "v", 1);
  assert_int_equal(get(f.c, id, &g, &st), 1);
  struct timespec ts = {0, 120 * 1000000L};
  nanosleep(&ts, NULL);
  assert_int_equal(get(f.c, id, &g, &st), 0); /* older than 50 ms */
  char big[5000];
  memset(big, 'b', sizeof big);
  store_cache_put(f.c, id, &st, big, sizeof big); /* over max_bytes (4096): not kept */
  assert_int_equal(get(f.c, id, &g, &st), 0);
  fx_close(&f);
}

/* All entries together stay within 32 MiB: of 40 values of 1 MiB, at most 31 are kept. */
static void test_total_budget(void **state) {
  (void)state;
  store_cache *c = NULL;
  td_err e;
  assert_int_equal(store_cache_create(64, 2u << 20, 60000, &c, &e), 0);
  size_t n = 1u << 20;
  char *big = malloc(n);
  assert_non_null(big);
  memset(big, 'x', n);
  int kept = 0;
  for (int64_t id = 1; id <= 40; id++) {
    got g;
    store_cache_stamp st;
    store_cache_get(c, id, grab, &g, &st);
    store_cache_put(c, id, &st, big, n);
  }
  for (int64_t id = 1; id <= 40; id++) {
    got g;
    store_cache_stamp st;
    kept += store_cache_get(c, id, grab, &g, &st);
  }
  assert_true(kept >= 30 && kept <= 31); /* 32 MiB / (1 MiB + 1 byte) */
  free(big);
  store_cache_destroy(c);
}

/* :memory: has no WAL: invalidation happens in the commit hook. */
static void test_memory_database(void **state) {
  (void)state;
  store *s = NULL;
  store_cache *c = NULL;
  td_err e;
  assert_int_equal(store_open(":memory:", 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, mig_dir(), NULL, NULL, &e), 0);
  assert_int_equal(store_cache_create(16, 1024, 60000, &c, &e), 0);
  assert_int_equal(store_cache_attach(s, c, &e), 0);
  int64_t id = add_job(s);
  got g;
  store_cache_stamp st;
  get(c, id, &g, &st);
  store_cache_put(c, id, &st, "q", 1);
  assert_int_equal(get(c, id, &g, &st), 1);
  int outcome;
  assert_int_equal(store_job_cancel(s, id, &outcome, &e), 0);
  assert_int_equal(get(c, id, &g, &st), 0);
  store_close(s);
  store_cache_destroy(c);
  assert_int_equal(store_cache_create(0, 1024, 1000, &c, &e), TD_EINVAL);
  assert_int_equal(store_cache_create(16, 1024, 0, &c, &e), TD_EINVAL);
  store_cache_destroy(NULL);
}

/* The replaced WAL hook still checkpoints: the WAL stays bounded under many commits. */
static void test_wal_is_checkpointed(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 60000);
  td_err e;
  for (int i = 0; i < 3000; i++) assert_int_equal(store_exec(f.a, "UPDATE jobs SET name='a'", &e), 0);
  add_job(f.a);
  for (int i = 0; i < 3000; i++) {
    char sql[64];
    snprintf(sql, sizeof sql, "UPDATE jobs SET name='%d'", i);
    assert_int_equal(store_exec(i % 2 ? f.a : f.b, sql, &e), 0);
  }
  char wal[160];
  snprintf(wal, sizeof wal, "%s-wal", f.path);
  struct stat sb;
  assert_int_equal(stat(wal, &sb), 0);
  /* 6000 one-page commits without checkpoints would be ~6000 frames (~25 MB at 4 KiB). */
  assert_true(sb.st_size < 2 * 1024 * (4096 + 24) + 32);
  fx_close(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hit_and_miss),
      cmocka_unit_test(test_commit_invalidates),
      cmocka_unit_test(test_fork_invalidates_parent),
      cmocka_unit_test(test_stale_put_is_dropped),
      cmocka_unit_test(test_rollback_and_many_rows),
      cmocka_unit_test(test_ttl_and_size_limit),
      cmocka_unit_test(test_total_budget),
      cmocka_unit_test(test_memory_database),
      cmocka_unit_test(test_wal_is_checkpointed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
