/* test_sweeps.c: the server's sweeps module on a real database with the real migrations:
 * creation of a sweep and all its children in one transaction (an injected failure leaves
 * nothing), a bad point creates nothing, max_concurrency holds in the job claim, the read
 * shape (counts, children with axis values, the fit), cancellation, and, with worker threads
 * running a scripted kind, early stopping that ends children as `pruned` (median rule and
 * ASHA) and the fit refreshed when children finish.
 * Exact values only, except the fit, which is checked on noiseless points from the law
 * S(B) = S_min (1 + B_crit / B) to a relative 1e-3 (the fit minimizes a Huber loss with
 * L-BFGS; noiseless data reach its optimum to many more digits). Waits poll the database up to
 * a generous deadline; nothing asserts on elapsed time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../server/http.h"
#include "../server/log.h"
#include "../server/queue.h"
#include "../server/store.h"
#include "../server/store_internal.h"
#include "../server/sweeps.h"

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

static json_t *parse(const char *txt) {
  json_error_t je;
  json_t *j = json_loads(txt, 0, &je);
  if (!j) fprintf(stderr, "bad JSON: %s\n%.400s\n", je.text, txt);
  assert_non_null(j);
  return j;
}

/* sweeps_create from JSON text; returns the TD code, *id the sweep. */
static int create(store *s, const char *spec_txt, int64_t *id, td_err *e) {
  json_t *spec = parse(spec_txt);
  size_t n = 0;
  int full = 0;
  td_err_clear(e);
  int rc = sweeps_create(s, spec, NULL, 0, id, &n, &full, e);
  json_decref(spec);
  assert_int_equal(full, 0);
  return rc;
}

static json_t *get_sweep(store *s, int64_t id, int with_children) {
  http_buf b;
  http_buf_init(&b);
  td_err e;
  assert_int_equal(sweeps_get_json(s, id, with_children, &b, &e), 0);
  assert_false(b.failed);
  json_t *j = parse(b.data);
  http_buf_free(&b);
  return j;
}

/* count(*) of `table_where` ("jobs WHERE ..."), straight from SQLite. */
static long count_rows(store *s, const char *table_where) {
  char sql[512];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table_where);
  sqlite3_stmt *q = NULL;
  assert_int_equal(sqlite3_prepare_v2(store__db(s), sql, -1, &q, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(q), SQLITE_ROW);
  long n = (long)sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  return n;
}

/* ---------------------------------------------------------------- create */

static const char *NQM_SPEC =
    "{\"name\": \"bs\", \"kind\": \"nqm\", \"base\": {\"dim\": 10, \"target_loss\": 0.1},"
    " \"axes\": {\"batch_size\": {\"values\": [1, 2, 4]}}, \"seeds\": 2}";

static void test_create_children_one_transaction(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id = 0;
  assert_int_equal(create(s, NQM_SPEC, &id, &e), 0);
  assert_true(id > 0);
  assert_int_equal(count_rows(s, "jobs"), 6);
  assert_int_equal(count_rows(s, "jobs WHERE sweep_id IS NOT NULL"), 6);
  assert_int_equal(count_rows(s, "job_tags WHERE tag='sweep:1'"), 6);
  assert_int_equal(count_rows(s, "sweep_children"), 6);
  json_t *j = get_sweep(s, id, 1);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "queued");
  assert_int_equal(json_integer_value(json_object_get(j, "n_children")), 6);
  json_t *counts = json_object_get(j, "counts");
  assert_int_equal(json_integer_value(json_object_get(counts, "queued")), 6);
  assert_int_equal(json_integer_value(json_object_get(counts, "total")), 6);
  json_t *ch = json_object_get(j, "children");
  assert_int_equal(json_array_size(ch), 6);
  /* Grid order with seeds innermost: child 3 is point 1 (batch_size 2), seed 1. */
  json_t *c3 = json_array_get(ch, 3);
  json_t *av = json_object_get(c3, "axis_values");
  assert_int_equal(json_integer_value(json_object_get(av, "batch_size")), 2);
  assert_int_equal(json_integer_value(json_object_get(av, "seed")), 1);
  assert_int_equal(json_integer_value(json_object_get(c3, "point")), 1);
  json_t *params = json_object_get(c3, "params");
  assert_int_equal(json_integer_value(json_object_get(params, "batch_size")), 2);
  assert_int_equal(json_integer_value(json_object_get(params, "seed")), 1);
  assert_int_equal(json_integer_value(json_object_get(params, "dim")), 10); /* from base */
  assert_non_null(json_object_get(params, "max_steps"));                    /* a default */
  assert_non_null(strstr(json_string_value(json_object_get(c3, "name")), "batch_size=2"));
  json_decref(j);

  /* A failure in the middle of the inserts (the 4th child) leaves no trace at all. */
  assert_int_equal(store_exec(s,
                              "CREATE TEMP TRIGGER boom BEFORE INSERT ON sweep_children "
                              "WHEN NEW.idx = 3 BEGIN SELECT RAISE(ABORT, 'injected'); END;",
                              &e),
                   0);
  int64_t id2 = 0;
  assert_int_equal(create(s, NQM_SPEC, &id2, &e), TD_EIO);
  assert_int_equal(id2, 0);
  assert_int_equal(count_rows(s, "jobs"), 6);
  assert_int_equal(count_rows(s, "sweeps"), 1);
  assert_int_equal(count_rows(s, "sweep_children"), 6);
  assert_int_equal(count_rows(s, "job_tags"), 6);
  store_close(s);
}

static void test_bad_point_creates_nothing(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id = 0;
  /* batch_size 0 is below the schema's minimum 1: point 1 of 3. */
  int rc = create(s,
                  "{\"kind\": \"nqm\", \"axes\": {\"batch_size\": {\"values\": [4, 0, 8]}}}",
                  &id, &e);
  assert_int_equal(rc, TD_EINVAL);
  assert_string_equal(e.field, "axes.batch_size");
  assert_non_null(strstr(e.msg, "point 1"));
  assert_int_equal(id, 0);
  assert_int_equal(count_rows(s, "jobs"), 0);
  assert_int_equal(count_rows(s, "sweeps"), 0);
  /* Malformed specs name their field too. */
  assert_int_equal(create(s, "{\"kind\": \"nqm\", \"axes\": {\"lr\": {\"values\": []}}}", &id, &e),
                   TD_EINVAL);
  assert_string_equal(e.field, "axes.lr");
  assert_int_equal(create(s, "{\"kind\": \"nope\"}", &id, &e), TD_EINVAL);
  assert_string_equal(e.field, "kind");
  assert_int_equal(count_rows(s, "jobs"), 0);
  store_close(s);
}

static void test_queue_full_creates_nothing(void **state) {
  (void)state;
  store *s = open_mem();
  json_t *spec = parse(NQM_SPEC);
  td_err e;
  int64_t id = 0;
  int full = 0;
  assert_int_equal(sweeps_create(s, spec, NULL, 5, &id, NULL, &full, &e), TD_ELIMIT);
  assert_int_equal(full, 1);
  assert_int_equal(count_rows(s, "jobs"), 0);
  assert_int_equal(sweeps_create(s, spec, NULL, 6, &id, NULL, &full, &e), 0);
  assert_int_equal(full, 0);
  json_decref(spec);
  store_close(s);
}

/* ---------------------------------------------------------------- max_concurrency */

static int64_t claim(store *s) {
  store_claimed cl;
  int found = 0;
  td_err e;
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  int64_t id = found ? cl.id : 0;
  store_claimed_free(&cl);
  return id;
}

static void test_max_concurrency_claim(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t sw = 0;
  assert_int_equal(create(s,
                          "{\"kind\": \"nqm\", \"max_concurrency\": 2,"
                          " \"axes\": {\"batch_size\": {\"values\": [1, 2, 3, 4, 5]}}}",
                          &sw, &e),
                   0); /* jobs 1..5 */
  store_new_job nj = {.kind = "nqm", .params_json = "{}"};
  int64_t lone = 0;
  assert_int_equal(store_job_insert(s, &nj, 0, &lone, &e), 0); /* job 6, no sweep */
  assert_int_equal(claim(s), 1);
  assert_int_equal(claim(s), 2);
  assert_int_equal(claim(s), lone); /* children 3..5 wait: 2 of the sweep are running */
  assert_int_equal(claim(s), 0);
  assert_int_equal(store_job_finish(s, 1, STORE_SUCCEEDED, NULL, "{}", 1, 1, &e), 0);
  assert_int_equal(claim(s), 3);
  assert_int_equal(claim(s), 0);
  /* A pruned child frees its slot like any other final status. */
  assert_int_equal(store_job_finish(s, 2, STORE_PRUNED, "pruned: test", NULL, 1, 1, &e), 0);
  assert_int_equal(claim(s), 4);
  assert_int_equal(claim(s), 0);
  json_t *j = get_sweep(s, sw, 0);
  json_t *c = json_object_get(j, "counts");
  assert_int_equal(json_integer_value(json_object_get(c, "running")), 2);
  assert_int_equal(json_integer_value(json_object_get(c, "pruned")), 1);
  assert_int_equal(json_integer_value(json_object_get(c, "queued")), 1);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "running");
  assert_null(json_object_get(j, "children"));
  json_decref(j);
  /* Nothing queued but two running: still running, not finished. */
  assert_int_equal(store_job_finish(s, 3, STORE_SUCCEEDED, NULL, "{}", 1, 1, &e), 0);
  assert_int_equal(claim(s), 5);
  j = get_sweep(s, sw, 0);
  c = json_object_get(j, "counts");
  assert_int_equal(json_integer_value(json_object_get(c, "queued")), 0);
  assert_int_equal(json_integer_value(json_object_get(c, "running")), 2);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "running");
  assert_true(json_is_null(json_object_get(j, "finished_at")));
  json_decref(j);
  /* All final: finished, with a finished_at. */
  assert_int_equal(store_job_finish(s, 4, STORE_SUCCEEDED, NULL, "{}", 1, 1, &e), 0);
  assert_int_equal(store_job_finish(s, 5, STORE_FAILED, "boom", NULL, 1, 1, &e), 0);
  j = get_sweep(s, sw, 0);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "finished");
  assert_true(json_is_string(json_object_get(j, "finished_at")));
  json_decref(j);
  store_close(s);
}

/* ---------------------------------------------------------------- read, fit, cancel */

static double law_s(double b) { return 1000.0 * (1.0 + 64.0 / b); }

static void test_fit_over_finished_children(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t sw = 0;
  assert_int_equal(create(s,
                          "{\"kind\": \"nqm\", \"axes\": {\"batch_size\": {\"values\": "
                          "[1, 4, 16, 64, 256, 1024, 4096]}}, \"fit\": {\"law\": "
                          "\"critical_batch\", \"x\": \"params.batch_size\", \"y\": "
                          "\"summary.steps_to_target\", \"bootstrap\": 50}}",
                          &sw, &e),
                   0);
  /* Children 1..7 finish with S(B) from the law; the last one never reached the target. */
  const double bs[] = {1, 4, 16, 64, 256, 1024, 4096};
  for (int i = 0; i < 7; i++) {
    assert_int_equal(claim(s), i + 1);
    char sum[96];
    if (i < 6) snprintf(sum, sizeof sum, "{\"steps_to_target\": %.17g}", law_s(bs[i]));
    else snprintf(sum, sizeof sum, "{\"steps_to_target\": null}");
    assert_int_equal(store_job_finish(s, i + 1, STORE_SUCCEEDED, NULL, sum, 1, 1, &e), 0);
  }
  json_t *j = get_sweep(s, sw, 1);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "finished");
  assert_true(json_is_string(json_object_get(j, "finished_at")));
  json_t *fit = json_object_get(j, "fit");
  assert_null(json_object_get(fit, "error"));
  assert_string_equal(json_string_value(json_object_get(fit, "law")), "critical_batch");
  assert_string_equal(json_string_value(json_object_get(fit, "x")), "params.batch_size");
  double bc = json_real_value(json_object_get(json_object_get(json_object_get(fit, "params"),
                                                              "B_crit"), "value"));
  double smin = json_real_value(json_object_get(json_object_get(json_object_get(fit, "params"),
                                                                "S_min"), "value"));
  assert_true(fabs(bc / 64.0 - 1) < 1e-3);
  assert_true(fabs(smin / 1000.0 - 1) < 1e-3);
  json_t *pts = json_object_get(fit, "points");
  assert_int_equal(json_array_size(pts), 6); /* the null one is skipped */
  assert_int_equal(json_integer_value(json_object_get(fit, "skipped")), 1);
  assert_int_equal(json_integer_value(json_object_get(json_array_get(pts, 2), "job_id")), 3);
  assert_true(fabs(json_real_value(json_object_get(json_array_get(pts, 2), "x")) - 16) < 1e-12);
  assert_int_equal(json_integer_value(json_object_get(fit, "n_succeeded")), 7);
  json_decref(j);
  store_close(s);
}

static int n_signalled;
static void on_running(void *ctx, int64_t job) {
  store *s = ctx;
  int outcome;
  td_err e;
  assert_int_equal(store_job_cancel(s, job, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_RUNNING);
  n_signalled++;
}

static void test_cancel(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t sw = 0;
  assert_int_equal(create(s, NQM_SPEC, &sw, &e), 0);
  assert_int_equal(claim(s), 1);
  long nc = -1, nr = -1;
  n_signalled = 0;
  assert_int_equal(sweeps_cancel(s, sw, on_running, s, &nc, &nr, &e), 0);
  assert_int_equal(nc, 5);
  assert_int_equal(nr, 1);
  assert_int_equal(n_signalled, 1);
  assert_int_equal(claim(s), 0);
  json_t *j = get_sweep(s, sw, 0);
  assert_string_equal(json_string_value(json_object_get(j, "status")), "cancelled");
  assert_true(json_is_null(json_object_get(j, "finished_at"))); /* child 1 still stopping */
  json_decref(j);
  assert_int_equal(store_job_finish(s, 1, STORE_CANCELLED, "cancelled", NULL, 1, 1, &e), 0);
  j = get_sweep(s, sw, 0);
  assert_true(json_is_string(json_object_get(j, "finished_at")));
  json_decref(j);
  assert_int_equal(sweeps_cancel(s, sw, on_running, s, &nc, &nr, &e), TD_ECONFLICT);
  assert_int_equal(sweeps_cancel(s, 99, on_running, s, &nc, &nr, &e), TD_ENOTFOUND);
  /* The list: newest first, with a cursor. */
  int64_t sw2 = 0;
  assert_int_equal(create(s, NQM_SPEC, &sw2, &e), 0);
  http_buf b;
  http_buf_init(&b);
  assert_int_equal(sweeps_list_json(s, 0, 1, &b, &e), 0);
  j = parse(b.data);
  http_buf_free(&b);
  assert_int_equal(json_array_size(json_object_get(j, "sweeps")), 1);
  json_t *first = json_array_get(json_object_get(j, "sweeps"), 0);
  assert_int_equal(json_integer_value(json_object_get(first, "id")), sw2);
  assert_null(json_object_get(first, "children"));
  assert_string_equal(json_string_value(json_object_get(j, "next_cursor")), "2");
  json_decref(j);
  store_close(s);
}

/* ---------------------------------------------------------------- workers: early stopping */

/* The scripted kind (registered as "nqm" for the workers, so that sweeps validate against the
 * real nqm schema): loss(t) = lr + 1 / (t + 1) for t = 0..299, then the summary
 * {"steps_to_target": S(batch_size)}. A larger lr is a worse trial at every step. */
static int scripted_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  (void)err;
  double lr = json_real_value(json_object_get(params, "lr"));
  double b = (double)json_integer_value(json_object_get(params, "batch_size"));
  for (long t = 0; t < 300; t++) {
    if (td_sink_should_stop(sink)) {
      *summary = json_pack("{s:I}", "stopped_at", (json_int_t)t);
      return TD_ECANCELLED;
    }
    td_sink_metric(sink, "loss", t, lr + 1.0 / (double)(t + 1));
  }
  *summary = json_pack("{s:f}", "steps_to_target", law_s(b));
  return 0;
}

static const td_kind scripted = {.name = "nqm", .run = scripted_run};
static const td_kind *find_scripted(const char *name) {
  return strcmp(name, "nqm") == 0 ? &scripted : NULL;
}

typedef struct fx {
  char dir[64], path[128];
  store *s;
  queue *q;
} fx;

static void fx_open(fx *f) {
  snprintf(f->dir, sizeof f->dir, "/tmp/tdlab_test_sweeps_XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  snprintf(f->path, sizeof f->path, "%s/db.sqlite", f->dir);
  td_err e;
  assert_int_equal(store_open(f->path, 0, &f->s, &e), 0);
  assert_int_equal(store_migrate(f->s, mig_dir(), NULL, NULL, &e), 0);
  queue_config qc = {.db_path = f->path, .workers = 1, .batch_points = 16, .batch_ms = 20,
                     .find_kind = find_scripted};
  assert_int_equal(queue_create(&qc, &f->q, &e), 0);
}

static void fx_close(fx *f) {
  queue_destroy(f->q);
  store_close(f->s);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  assert_int_equal(system(cmd), 0);
}

/* Poll the sweep until it is finished (at most 60 s); returns its JSON. */
static json_t *wait_finished(fx *f, int64_t id) {
  for (int i = 0; i < 6000; i++) {
    json_t *j = get_sweep(f->s, id, 1);
    if (strcmp(json_string_value(json_object_get(j, "status")), "finished") == 0) return j;
    json_decref(j);
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  fail_msg("sweep %lld did not finish", (long long)id);
  return NULL;
}

/* want_1, want_2: substrings the errors of children 1 and 2 must contain (where and why the
 * rule pruned them). */
static void run_es(const char *es, const char *expect_reason, const char *want_1,
                   const char *want_2) {
  fx f;
  fx_open(&f);
  char spec[768];
  snprintf(spec, sizeof spec,
           "{\"kind\": \"nqm\", \"max_concurrency\": 1, \"base\": {\"batch_size\": 16},"
           " \"axes\": {\"lr\": {\"values\": [0.1, 0.2, 0.3, 0.05]}},"
           " \"early_stopping\": %s}",
           es);
  td_err e;
  int64_t sw = 0;
  assert_int_equal(create(f.s, spec, &sw, &e), 0);
  queue_notify(f.q);
  json_t *j = wait_finished(&f, sw);
  json_t *ch = json_object_get(j, "children");
  const char *want[] = {"succeeded", "pruned", "pruned", "succeeded"};
  for (size_t i = 0; i < 4; i++) {
    json_t *c = json_array_get(ch, i);
    const char *st = json_string_value(json_object_get(c, "status"));
    if (strcmp(st, want[i]) != 0) fail_msg("child %zu is %s, not %s", i, st, want[i]);
    if (i == 1 || i == 2) {
      const char *err = json_string_value(json_object_get(c, "error"));
      assert_non_null(err);
      assert_non_null(strstr(err, expect_reason));
      const char *w = i == 1 ? want_1 : want_2;
      if (!strstr(err, w)) fail_msg("child %zu: '%s' does not say '%s'", i, err, w);
      /* The kind saw should_stop before its last step. */
      json_t *stopped = json_object_get(json_object_get(c, "summary"), "stopped_at");
      assert_true(json_integer_value(stopped) > 0 && json_integer_value(stopped) < 300);
    }
  }
  json_t *c = json_object_get(j, "counts");
  assert_int_equal(json_integer_value(json_object_get(c, "pruned")), 2);
  assert_int_equal(json_integer_value(json_object_get(c, "succeeded")), 2);
  json_decref(j);
  fx_close(&f);
}

/* Median rule, by hand: child i (lr l_i) has loss l_i + 1/(t + 1), so its best by step t is
 * l_i + 1/(t + 1) and its running average l_i + H(t + 1)/(t + 1) (H the harmonic number).
 * Children run one at a time in order. The rule is checked at every step from grace_steps
 * (10) while step / 20 <= 1 (the next check is step + max(1, step / 20)). Child 2 (lr 0.2) is
 * pruned at the first such t where its best exceeds child 1's running average (the median
 * of one), child 3 (lr 0.3) where its best exceeds the median of children 1 and 2 (their
 * mean, 0.15 + H(t + 1)/(t + 1)); child 4 (lr 0.05) is better than every other and runs to
 * the end. The expected steps are computed here (29 and 15). */
static void test_median_prunes(void **state) {
  (void)state;
  long t2 = -1, t3 = -1;
  double H = 0;
  for (long t = 0; t < 40; t++) {
    H += 1.0 / (double)(t + 1);
    double avg = H / (double)(t + 1), best = 1.0 / (double)(t + 1);
    if (t >= 10 && t2 < 0 && 0.2 + best > 0.1 + avg) t2 = t;
    if (t >= 10 && t3 < 0 && 0.3 + best > 0.15 + avg) t3 = t;
  }
  assert_true(t2 > 10 && t3 > 10);
  char w1[64], w2[64];
  snprintf(w1, sizeof w1, "by step %ld is worse", t2);
  snprintf(w2, sizeof w2, "by step %ld is worse", t3);
  run_es("{\"rule\": \"median\", \"metric\": \"loss\", \"grace_steps\": 10, \"min_trials\": 1}",
         "median rule", w1, w2);
}

/* ASHA with rungs 10, 30, 90: child 2 is behind child 1 at rung 10 (0.2 + 1/11 against
 * 0.1 + 1/11) and ceil(2/3) = 1 continues; child 3 ranks third of three at rung 10; child 4
 * is first. Both are pruned at the first rung. */
static void test_asha_prunes(void **state) {
  (void)state;
  run_es("{\"rule\": \"asha\", \"metric\": \"loss\", \"min_steps\": 10, \"eta\": 3}", "asha",
         "at rung 10, loss 0.290909 ranks 2 of 2", "at rung 10, loss 0.390909 ranks 3 of 3");
}

/* Without early stopping all children succeed, the fit is refreshed by the workers. */
static void test_workers_refresh_fit(void **state) {
  (void)state;
  fx f;
  fx_open(&f);
  td_err e;
  int64_t sw = 0;
  assert_int_equal(create(f.s,
                          "{\"kind\": \"nqm\", \"axes\": {\"batch_size\": {\"values\": "
                          "[2, 8, 32, 128, 512]}}, \"fit\": {\"law\": \"critical_batch\", "
                          "\"x\": \"params.batch_size\", \"y\": \"summary.steps_to_target\", "
                          "\"bootstrap\": 20}}",
                          &sw, &e),
                   0);
  queue_notify(f.q);
  json_t *j = wait_finished(&f, sw);
  json_decref(j);
  /* The worker refreshed the cache before the sweep read as finished... or the read did:
   * either way the cached fit is the one over all 5 children. */
  j = get_sweep(f.s, sw, 0);
  json_t *fit = json_object_get(j, "fit");
  assert_null(json_object_get(fit, "error"));
  assert_int_equal(json_integer_value(json_object_get(fit, "n_points")), 5);
  double bc = json_real_value(json_object_get(json_object_get(json_object_get(fit, "params"),
                                                              "B_crit"), "value"));
  assert_true(fabs(bc / 64.0 - 1) < 1e-3);
  json_decref(j);
  fx_close(&f);
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_children_one_transaction),
      cmocka_unit_test(test_bad_point_creates_nothing),
      cmocka_unit_test(test_queue_full_creates_nothing),
      cmocka_unit_test(test_max_concurrency_claim),
      cmocka_unit_test(test_fit_over_finished_children),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_median_prunes),
      cmocka_unit_test(test_asha_prunes),
      cmocka_unit_test(test_workers_refresh_fit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
