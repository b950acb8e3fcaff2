/* test_queue.c: worker threads with fake kinds: success, failure, divergence, cancellation
 * (queued and running), wall-clock timeout, graceful shutdown that flushes and re-queues, and
 * the sink's checkpoint reader.
 * Waits poll the database up to a generous deadline; nothing asserts on elapsed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../server/log.h"
#include "../server/queue.h"
#include "../server/store.h"

static const char *mig_dir(void) {
  const char *d = getenv("TDLAB_MIGRATIONS");
  return d ? d : "migrations";
}

static void nap_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- fake kinds */

static atomic_long spin_points; /* points the spin kind has reported (all attempts) */

/* steps: n points of "loss", then succeeds with {"n": n}. */
static int steps_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  (void)err;
  long n = (long)json_integer_value(json_object_get(params, "n"));
  for (long i = 0; i < n; i++) {
    if (td_sink_should_stop(sink)) return TD_ECANCELLED;
    td_sink_metric(sink, "loss", i, 1.0 / (double)(i + 1));
    td_sink_progress(sink, i + 1, n);
  }
  td_sink_artifact(sink, "hello.json", "application/json", "{\"x\":1}", 7);
  *summary = json_pack("{s:I}", "n", (json_int_t)n);
  return 0;
}

/* spin: one point per millisecond until should_stop (at most 30 s). */
static int spin_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  (void)params;
  (void)summary;
  for (long i = 0; i < 30000; i++) {
    if (td_sink_should_stop(sink)) return TD_ECANCELLED;
    td_sink_metric(sink, "tick", i, (double)i);
    atomic_fetch_add(&spin_points, 1);
    td_sink_progress(sink, i + 1, 0);
    nap_ms(1);
  }
  return td_err_set(err, TD_EINTERNAL, NULL, "spin was never stopped");
}

static int boom_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  (void)params;
  (void)sink;
  (void)summary;
  return td_err_set(err, TD_EINTERNAL, NULL, "boom");
}

static int nan_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  (void)params;
  td_sink_metric(sink, "loss", 0, 1.0);
  td_sink_metric(sink, "loss", 1, 0.0 / 0.0);
  *summary = json_pack("{s:i}", "diverged_step", 1);
  return td_err_set(err, TD_EDIVERGED, NULL, "loss is NaN at step 1");
}

/* ckread: reads the checkpoint {job, step} or {checkpoint} through the sink and succeeds with
 * {"len": bytes, "last": the last byte}; fails with the code's text when the host has none. */
static int ckread_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  void *data = NULL;
  size_t len = 0;
  int rc = td_sink_checkpoint(sink, (long)json_integer_value(json_object_get(params, "job")),
                              (long)json_integer_value(json_object_get(params, "step")),
                              (long)json_integer_value(json_object_get(params, "checkpoint")),
                              &data, &len);
  if (rc) return td_err_set(err, rc, NULL, "checkpoint: %s", td_strerror(rc));
  *summary = json_pack("{s:I, s:i}", "len", (json_int_t)len, "last",
                       len ? ((unsigned char *)data)[len - 1] : -1);
  free(data);
  return 0;
}

static const td_kind fake_kinds[] = {
    {.name = "ckread", .run = ckread_run},
    {.name = "steps", .run = steps_run},
    {.name = "spin", .run = spin_run},
    {.name = "boom", .run = boom_run},
    {.name = "nan", .run = nan_run},
};

static const td_kind *find_fake(const char *name) {
  for (size_t i = 0; i < sizeof fake_kinds / sizeof fake_kinds[0]; i++)
    if (strcmp(fake_kinds[i].name, name) == 0) return &fake_kinds[i];
  return NULL;
}

/* ---------------------------------------------------------------- fixture */

typedef struct fx {
  char dir[64];
  char path[128];
  store *s; /* the test's own connection */
  queue *q;
} fx;

static void fx_open(fx *f, int workers, double timeout_s) {
  snprintf(f->dir, sizeof f->dir, "/tmp/tdlab_test_queue_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/db.sqlite", f->dir);
  td_err e;
  assert_int_equal(store_open(f->path, 0, &f->s, &e), 0);
  assert_int_equal(store_migrate(f->s, mig_dir(), NULL, NULL, &e), 0);
  queue_config qc = {.db_path = f->path, .workers = workers, .batch_points = 64, .batch_ms = 50,
                     .job_timeout_s = timeout_s, .find_kind = find_fake};
  assert_int_equal(queue_create(&qc, &f->q, &e), 0);
}

static void fx_close(fx *f) {
  queue_destroy(f->q);
  store_close(f->s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
}

static int64_t submit(fx *f, const char *kind, const char *params) {
  store_new_job j = {.kind = kind, .params_json = params};
  int64_t id = 0;
  td_err e;
  assert_int_equal(store_job_insert(f->s, &j, 0, &id, &e), 0);
  queue_notify(f->q);
  return id;
}

typedef struct row {
  char status[16], error[256], summary[128];
  long attempt, done;
} row;
static void grab(void *ctx, const store_job *j) {
  row *r = ctx;
  snprintf(r->status, sizeof r->status, "%s", j->status);
  snprintf(r->error, sizeof r->error, "%s", j->error ? j->error : "");
  snprintf(r->summary, sizeof r->summary, "%s", j->summary ? j->summary : "");
  r->attempt = j->attempt;
  r->done = j->progress_done;
}
static row get(fx *f, int64_t id) {
  row r = {0};
  td_err e;
  assert_int_equal(store_job_get(f->s, id, grab, &r, &e), 0);
  return r;
}

/* Poll until the job's status is `want` (or 30 s pass); returns the last status seen. */
static row wait_for(fx *f, int64_t id, const char *want) {
  row r = get(f, id);
  for (int i = 0; i < 6000 && strcmp(r.status, want) != 0; i++) {
    nap_ms(5);
    r = get(f, id);
  }
  return r;
}

static void ignore_point(void *ctx, long step, double value) {
  (void)ctx;
  (void)step;
  (void)value;
}

static size_t count_points(fx *f, int64_t id, const char *key) {
  size_t total = 0;
  td_err e;
  assert_int_equal(store_metric_series(f->s, id, key, LONG_MIN, 2, ignore_point, NULL, &total, &e), 0);
  return total;
}

/* ---------------------------------------------------------------- tests */

static void test_jobs_succeed_on_two_workers(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 2, 0);
  int64_t id[4];
  for (int i = 0; i < 4; i++) id[i] = submit(&f, "steps", "{\"n\":300}");
  for (int i = 0; i < 4; i++) {
    row r = wait_for(&f, id[i], "succeeded");
    assert_string_equal(r.status, "succeeded");
    assert_string_equal(r.summary, "{\"n\":300}");
    assert_int_equal(r.done, 300);
    assert_int_equal(count_points(&f, id[i], "loss"), 300);
  }
  queue_stats qs;
  queue_stats_get(f.q, &qs);
  assert_int_equal(qs.workers, 2);
  assert_int_equal(qs.jobs_started, 4);
  assert_int_equal(qs.points, 1200);
  fx_close(&f);
}

static void test_failed_and_diverged(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 1, 0);
  int64_t a = submit(&f, "boom", "{}"), b = submit(&f, "nan", "{}"), c = submit(&f, "nokind", "{}");
  row r = wait_for(&f, a, "failed");
  assert_string_equal(r.status, "failed");
  assert_string_equal(r.error, "boom");
  r = wait_for(&f, b, "diverged");
  assert_string_equal(r.status, "diverged");
  assert_string_equal(r.summary, "{\"diverged_step\":1}");
  assert_int_equal(count_points(&f, b, "loss"), 2); /* the NaN point is kept */
  r = wait_for(&f, c, "failed");
  assert_string_equal(r.error, "unknown kind");
  fx_close(&f);
}

static void test_cancel_queued_and_running(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 1, 0);
  int64_t run = submit(&f, "spin", "{}");
  row r = wait_for(&f, run, "running");
  assert_string_equal(r.status, "running");
  int64_t waiting = submit(&f, "steps", "{\"n\":5}"); /* the only worker is busy */
  int outcome = -1;
  td_err e;
  assert_int_equal(queue_cancel(f.q, f.s, waiting, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_CANCELLED);
  assert_string_equal(get(&f, waiting).status, "cancelled");
  assert_int_equal(queue_cancel(f.q, f.s, run, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_RUNNING);
  r = wait_for(&f, run, "cancelled");
  assert_string_equal(r.status, "cancelled");
  assert_string_equal(r.error, "cancelled by request");
  assert_int_equal(queue_cancel(f.q, f.s, run, &outcome, &e), TD_ECONFLICT);
  fx_close(&f);
}

static void test_timeout_fails_the_job(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 1, 0.2);
  int64_t id = submit(&f, "spin", "{}");
  row r = wait_for(&f, id, "failed");
  assert_string_equal(r.status, "failed");
  assert_non_null(strstr(r.error, "timed out"));
  fx_close(&f);
}

static void test_shutdown_flushes_and_requeues(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 1, 0);
  atomic_store(&spin_points, 0);
  int64_t id = submit(&f, "spin", "{}");
  assert_string_equal(wait_for(&f, id, "running").status, "running");
  while (atomic_load(&spin_points) < 20) nap_ms(2);
  queue_destroy(f.q); /* graceful: stop at the next step, flush, re-queue */
  f.q = NULL;
  row r = get(&f, id);
  assert_string_equal(r.status, "queued");
  assert_int_equal(r.attempt, 1); /* a shutdown is not a failed attempt */
  /* Every point the job reported was flushed before the worker exited. */
  assert_int_equal(count_points(&f, id, "tick"), (size_t)atomic_load(&spin_points));
  fx_close(&f);
}

/* The server sink's checkpoint reader (sink.h): a job's checkpoint_step<S>.safetensors
 * artifact for {job, step}, an uploaded checkpoint for {checkpoint}, TD_ENOTFOUND else. */
static void test_sink_checkpoint_reader(void **state) {
  (void)state;
  fx f;
  fx_open(&f, 1, 0);
  td_err e;
  const unsigned char art[5] = {9, 8, 7, 6, 42}, up[3] = {1, 2, 77};
  int64_t src = submit(&f, "steps", "{\"n\":1}"), ck = 0;
  wait_for(&f, src, "succeeded");
  assert_int_equal(store_artifact_put(f.s, src, "checkpoint_step30.safetensors",
                                      "application/octet-stream", art, sizeof art, &e), 0);
  assert_int_equal(store_checkpoint_insert(f.s, up, sizeof up, "[]", &ck, &e), 0);
  char p1[96], p2[96], p3[96];
  snprintf(p1, sizeof p1, "{\"job\":%lld,\"step\":30}", (long long)src);
  snprintf(p2, sizeof p2, "{\"checkpoint\":%lld}", (long long)ck);
  snprintf(p3, sizeof p3, "{\"job\":%lld,\"step\":31}", (long long)src);
  int64_t a = submit(&f, "ckread", p1), b = submit(&f, "ckread", p2), c = submit(&f, "ckread", p3);
  row r = wait_for(&f, a, "succeeded");
  assert_string_equal(r.summary, "{\"len\":5,\"last\":42}");
  r = wait_for(&f, b, "succeeded");
  assert_string_equal(r.summary, "{\"len\":3,\"last\":77}");
  r = wait_for(&f, c, "failed");
  assert_string_equal(r.status, "failed");
  assert_non_null(strstr(r.error, "not found"));
  fx_close(&f);
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jobs_succeed_on_two_workers),
      cmocka_unit_test(test_sink_checkpoint_reader),
      cmocka_unit_test(test_failed_and_diverged),
      cmocka_unit_test(test_cancel_queued_and_running),
      cmocka_unit_test(test_timeout_fails_the_job),
      cmocka_unit_test(test_shutdown_flushes_and_requeues),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
