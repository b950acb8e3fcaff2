/* test_store_remote.c: the SQLite side of remote runs (server/store_remote.h) on :memory:
 * with the real migrations: the claim skips remote jobs, start/heartbeat/finish, idempotent
 * finish, and the lease rules (external -> crashed, remote -> queued with attempt + 1, then
 * failed at max_attempts, cancel requested -> cancelled), with the clock moved by
 * now_offset_s; and migration 0006 keeps the AUTOINCREMENT high-water mark. Exact values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../server/runtok.h"
#include "../server/store.h"
#include "../server/store_remote.h"

static const char *mig_dir(void) {
  const char *d = getenv("TDLAB_MIGRATIONS");
  return d ? d : "migrations";
}

static store *open_mem(void) {
  store *s = NULL;
  td_err e;
  assert_int_equal(store_open(":memory:", 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, mig_dir(), NULL, NULL, &e), 0);
  return s;
}

static int status_of(store *s, int64_t id) {
  int st = -1;
  td_err e;
  assert_int_equal(store_job_status(s, id, &st, &e), 0);
  return st;
}

static void count_job(void *ctx, const store_job *j) {
  (void)j;
  (*(long *)ctx)++;
}

static void grab_ref(void *ctx, const store_job *j) {
  snprintf(ctx, 32, "%s", j->executor_ref ? j->executor_ref : "");
}

static void grab_attempt(void *ctx, const store_job *j) { *(long *)ctx = j->attempt; }

static void test_remote_lifecycle(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  store_new_job nj = {.kind = "nqm", .params_json = "{\"a\":1}", .executor = "remote"};
  int64_t id = 0;
  assert_int_equal(store_job_insert(s, &nj, 0, &id, &e), 0);
  store_claimed cl;
  int found = 1;
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(found, 0); /* a local worker never claims a remote job */
  char h[RUNTOK_HEX + 1], h2[RUNTOK_HEX + 1];
  runtok_hash("tok1", h);
  runtok_hash("tok2", h2);
  char *kind = NULL, *params = NULL;
  long attempt = 0;
  assert_int_equal(store_run_start(s, id, "slurm", h, NULL, NULL, NULL, &e), TD_ECONFLICT);
  assert_int_equal(store_run_start(s, id, "remote", h, &kind, &params, &attempt, &e), 0);
  assert_string_equal(kind, "nqm");
  assert_string_equal(params, "{\"a\":1}");
  assert_int_equal(attempt, 1);
  free(kind);
  free(params);
  store_run_state rs;
  assert_int_equal(store_run_auth(s, id, h, &rs, &e), 0);
  assert_true(rs.token_ok);
  assert_int_equal(rs.status, STORE_RUNNING);
  assert_int_equal(store_run_auth(s, id, h2, &rs, &e), 0);
  assert_false(rs.token_ok);
  int cancel = 1;
  assert_int_equal(store_run_heartbeat(s, id, 1, 5, 9, &cancel, &e), 0);
  assert_int_equal(cancel, 0);
  /* a lease check within the timeout changes nothing */
  store_lease_counts c;
  assert_int_equal(store_lease_expire(s, 60, 2, STORE_LEASE_ALL, 0, &c, &e), 0);
  assert_int_equal(c.requeued + c.failed + c.crashed + c.cancelled, 0);
  /* 61 s later: re-queued with attempt 2 and the token dropped */
  assert_int_equal(store_lease_expire(s, 60, 2, STORE_LEASE_ALL, 61, &c, &e), 0);
  assert_int_equal(c.requeued, 1);
  assert_int_equal(status_of(s, id), STORE_QUEUED);
  long att = 0;
  assert_int_equal(store_job_get(s, id, grab_attempt, &att, &e), 0);
  assert_int_equal(att, 2);
  assert_int_equal(store_run_auth(s, id, h, &rs, &e), 0);
  assert_false(rs.token_ok);
  /* a mask without remote leaves it alone; at max_attempts 2 it fails */
  assert_int_equal(store_run_start(s, id, "remote", h2, NULL, NULL, &attempt, &e), 0);
  assert_int_equal(attempt, 2);
  assert_int_equal(store_lease_expire(s, 60, 2, STORE_LEASE_EXTERNAL, 61, &c, &e), 0);
  assert_int_equal(status_of(s, id), STORE_RUNNING);
  assert_int_equal(store_lease_expire(s, 60, 2, STORE_LEASE_REMOTE, 61, &c, &e), 0);
  assert_int_equal(c.failed, 1);
  assert_int_equal(status_of(s, id), STORE_FAILED);
  store_close(s);
}

/* A prepared run (store_run_prepare) stays queued with its token; its first heartbeat
 * (store_run_begin) starts it; a local job is never begun that way. */
static void test_prepare_begin(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  store_new_job nj = {.kind = "nqm", .params_json = "{}", .executor = "slurm"};
  int64_t id = 0, loc = 0;
  assert_int_equal(store_job_insert(s, &nj, 0, &id, &e), 0);
  store_new_job nl = {.kind = "nqm", .params_json = "{}"};
  assert_int_equal(store_job_insert(s, &nl, 0, &loc, &e), 0);
  char h[RUNTOK_HEX + 1];
  runtok_hash("p", h);
  assert_int_equal(store_run_prepare(s, id, "remote", h, &e), TD_ECONFLICT);
  assert_int_equal(store_run_prepare(s, id, "slurm", h, &e), 0);
  assert_int_equal(status_of(s, id), STORE_QUEUED);
  store_run_state rs;
  assert_int_equal(store_run_auth(s, id, h, &rs, &e), 0);
  assert_true(rs.token_ok);
  int started = 0;
  assert_int_equal(store_run_begin(s, loc, &started, &e), 0);
  assert_int_equal(started, 0);
  assert_int_equal(store_run_begin(s, id, &started, &e), 0);
  assert_int_equal(started, 1);
  assert_int_equal(status_of(s, id), STORE_RUNNING);
  assert_int_equal(store_run_begin(s, id, &started, &e), 0);
  assert_int_equal(started, 0);
  assert_int_equal(store_run_set_ref(s, id, "123_4", &e), 0);
  char ref[32] = "";
  assert_int_equal(store_job_get(s, id, grab_ref, ref, &e), 0);
  assert_string_equal(ref, "123_4");
  assert_int_equal(store_run_set_ref(s, 99999, "1", &e), TD_ENOTFOUND);
  store_close(s);
}

static void test_external_and_finish(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  char h[RUNTOK_HEX + 1];
  runtok_hash("x", h);
  int64_t id = 0;
  const char *tags[] = {"a"};
  assert_int_equal(store_run_create(s, "r", "{\"p\":2}", "[\"a\"]", tags, 1, h, &id, &e), 0);
  assert_int_equal(status_of(s, id), STORE_RUNNING);
  store_lease_counts c;
  assert_int_equal(store_lease_expire(s, 10, 3, STORE_LEASE_ALL, 11, &c, &e), 0);
  assert_int_equal(c.crashed, 1);
  assert_int_equal(status_of(s, id), STORE_CRASHED);
  int fin = -1;
  assert_int_equal(store_run_finish(s, id, STORE_SUCCEEDED, NULL, NULL, &fin, &e), TD_ECONFLICT);
  assert_int_equal(store_run_resume(s, id, h, &e), 0);
  assert_int_equal(status_of(s, id), STORE_RUNNING);
  assert_int_equal(store_run_finish(s, id, STORE_SUCCEEDED, NULL, "{}", &fin, &e), 0);
  assert_int_equal(fin, STORE_SUCCEEDED);
  assert_int_equal(store_run_finish(s, id, STORE_SUCCEEDED, NULL, "{}", &fin, &e), 0); /* retry */
  assert_int_equal(store_run_finish(s, id, STORE_FAILED, NULL, NULL, &fin, &e), TD_ECONFLICT);
  assert_int_equal(store_run_resume(s, id, h, &e), TD_ECONFLICT);
  /* cancel requested, then lost: cancelled */
  int64_t id2 = 0;
  assert_int_equal(store_run_create(s, "r2", "{}", "[]", NULL, 0, h, &id2, &e), 0);
  int outcome = -1;
  assert_int_equal(store_job_cancel(s, id2, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_RUNNING);
  assert_int_equal(store_lease_expire(s, 10, 3, STORE_LEASE_ALL, 11, &c, &e), 0);
  assert_int_equal(c.cancelled, 1);
  assert_int_equal(status_of(s, id2), STORE_CANCELLED);
  store_close(s);
}

/* The lease against the database clock, not only the offset: a heartbeat made 30 s old in
 * SQL is live under a 60 s lease with the clock 0 or 20 s ahead (30 and 50 s < 60 s) and lost
 * with it 40 s ahead (70 s > 60 s); under a 20 s lease it is lost at once. Then the final
 * states: a run whose cancel was requested finishes cancelled whatever status it reports
 * (and the client's retry of that finish is answered the same), and a finished run's
 * heartbeat is refused. */
static void test_lease_clock_and_final(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  char h[RUNTOK_HEX + 1], sql[256];
  runtok_hash("c", h);
  int64_t id = 0, id2 = 0;
  store_lease_counts c;
  assert_int_equal(store_run_create(s, "r", "{}", "[]", NULL, 0, h, &id, &e), 0);
  assert_int_equal(store_run_create(s, "r2", "{}", "[]", NULL, 0, h, &id2, &e), 0);
  snprintf(sql, sizeof sql,
           "UPDATE jobs SET heartbeat_at=strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ','now','-30 seconds') "
           "WHERE id IN (%lld,%lld)", (long long)id, (long long)id2);
  assert_int_equal(store_exec(s, sql, &e), 0);
  const double live[2] = {0, 20};
  for (int k = 0; k < 2; k++) {
    assert_int_equal(store_lease_expire(s, 60, 3, STORE_LEASE_ALL, live[k], &c, &e), 0);
    assert_int_equal(c.crashed + c.cancelled + c.failed + c.requeued, 0);
  }
  assert_int_equal(store_lease_expire(s, 60, 3, STORE_LEASE_ALL, 40, &c, &e), 0);
  assert_int_equal(c.crashed, 2);
  assert_int_equal(store_run_resume(s, id, h, &e), 0);
  assert_int_equal(store_run_resume(s, id2, h, &e), 0);
  assert_int_equal(store_exec(s, sql, &e), 0);
  assert_int_equal(store_lease_expire(s, 20, 3, STORE_LEASE_ALL, 0, &c, &e), 0);
  assert_int_equal(c.crashed, 2);
  assert_int_equal(store_run_resume(s, id2, h, &e), 0);
  /* cancel requested while running, then the run reports success: cancelled */
  int outcome = -1, fin = -1, cancel = 0;
  assert_int_equal(store_job_cancel(s, id2, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_RUNNING);
  assert_int_equal(store_run_heartbeat(s, id2, 0, 0, 0, &cancel, &e), 0);
  assert_int_equal(cancel, 1);
  assert_int_equal(store_run_finish(s, id2, STORE_SUCCEEDED, NULL, NULL, &fin, &e), 0);
  assert_int_equal(fin, STORE_CANCELLED);
  assert_int_equal(status_of(s, id2), STORE_CANCELLED);
  fin = -1;
  assert_int_equal(store_run_finish(s, id2, STORE_SUCCEEDED, NULL, NULL, &fin, &e), 0);
  assert_int_equal(fin, STORE_CANCELLED);
  assert_int_equal(store_run_heartbeat(s, id2, 0, 0, 0, &cancel, &e), TD_ECONFLICT);
  assert_int_equal(store_run_heartbeat(s, id, 0, 0, 0, &cancel, &e), TD_ECONFLICT); /* crashed */
  store_close(s);
}

/* Migration 0006 rebuilds jobs: the ids of deleted jobs are not reused afterwards. The
 * database is taken to version 5 by a copy of the migrations without 0006. */
static void test_migration_keeps_sequence(void **state) {
  (void)state;
  char dir[] = "/tmp/tdlab-mig5.XXXXXX";
  assert_non_null(mkdtemp(dir));
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cp %s/000[1-5]_*.sql %s/", mig_dir(), dir);
  assert_int_equal(system(cmd), 0);
  store *s = NULL;
  td_err e;
  assert_int_equal(store_open(":memory:", 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, dir, NULL, NULL, &e), 0);
  assert_int_equal(store_exec(s,
                              "INSERT INTO jobs(kind,params,created_at) VALUES('a','{}','t'),"
                              "('b','{}','t'),('c','{}','t');"
                              "INSERT INTO job_tags(tag,job_id) VALUES('x',2);"
                              "DELETE FROM jobs WHERE id=3;",
                              &e),
                   0);
  int v = 0;
  assert_int_equal(store_migrate(s, mig_dir(), NULL, &v, &e), 0);
  assert_true(v >= 6);
  store_new_job nj = {.kind = "nqm", .params_json = "{}"};
  int64_t id = 0;
  assert_int_equal(store_job_insert(s, &nj, 0, &id, &e), 0);
  assert_int_equal(id, 4); /* not 3 */
  /* the tag rows kept their job, and the 0005 triggers work on the rebuilt table */
  store_job_filter f = {.tag = "x", .limit = 10, .status_mask = 1u << STORE_QUEUED};
  int64_t next = 0;
  long n = 0;
  assert_int_equal(store_job_list(s, &f, count_job, &n, &next, &e), 0);
  assert_int_equal(n, 1);
  store_close(s);
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_remote_lifecycle),
      cmocka_unit_test(test_prepare_begin),
      cmocka_unit_test(test_external_and_finish),
      cmocka_unit_test(test_lease_clock_and_final),
      cmocka_unit_test(test_migration_keeps_sequence),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
