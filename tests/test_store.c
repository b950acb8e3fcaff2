/* test_store.c: the SQLite store: migrations on :memory:, the job life cycle, batched metric
 * writes, NaN/Inf storage, downsampling (first, last, bucket min and max) and restart recovery.
 * Pure logic and exact values: no tolerances. Run from the repo root (migrations/), or set
 * TDLAB_MIGRATIONS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../server/store.h"

static const char *mig_dir(void) {
  const char *d = getenv("TDLAB_MIGRATIONS");
  return d ? d : "migrations";
}

static store *open_mem(void) {
  store *s = NULL;
  td_err e;
  assert_int_equal(store_open(":memory:", 0, &s, &e), 0);
  int applied = -1, version = -1;
  assert_int_equal(store_migrate(s, mig_dir(), &applied, &version, &e), 0);
  assert_true(applied >= 1);
  assert_true(version >= 1);
  return s;
}

static int64_t add_job(store *s, const char *kind, long priority) {
  store_new_job j = {.kind = kind, .name = "t", .params_json = "{\"a\":1}", .tags_json = "[\"x\"]",
                     .tags = (const char *[]){"x"}, .n_tags = 1, .priority = priority};
  int64_t id = 0;
  td_err e;
  assert_int_equal(store_job_insert(s, &j, 0, &id, &e), 0);
  assert_true(id > 0);
  return id;
}

typedef struct got_job {
  int n;
  char status[16];
  long attempt, done, total;
  int cancel_requested;
  char error[256];
  char summary[256];
  int has_finished_at;
} got_job;

static void grab_job(void *ctx, const store_job *j) {
  got_job *g = ctx;
  g->n++;
  snprintf(g->status, sizeof g->status, "%s", j->status);
  g->attempt = j->attempt;
  g->done = j->progress_done;
  g->total = j->progress_total;
  g->cancel_requested = j->cancel_requested;
  snprintf(g->error, sizeof g->error, "%s", j->error ? j->error : "");
  snprintf(g->summary, sizeof g->summary, "%s", j->summary ? j->summary : "");
  g->has_finished_at = j->finished_at != NULL;
}

static got_job get(store *s, int64_t id) {
  got_job g = {0};
  td_err e;
  assert_int_equal(store_job_get(s, id, grab_job, &g, &e), 0);
  assert_int_equal(g.n, 1);
  return g;
}

/* Points of one series collected in arrays. */
typedef struct pts {
  long step[4096];
  double value[4096];
  size_t n;
} pts;

static void grab_point(void *ctx, long step, double value) {
  pts *p = ctx;
  assert_true(p->n < 4096);
  p->step[p->n] = step;
  p->value[p->n] = value;
  p->n++;
}

static pts *series(store *s, int64_t id, const char *key, long since, size_t max_points,
                   size_t *total) {
  pts *p = calloc(1, sizeof *p);
  td_err e;
  assert_int_equal(store_metric_series(s, id, key, since, max_points, grab_point, p, total, &e), 0);
  return p;
}

/* ---------------------------------------------------------------- migrations */

static void test_migrations_idempotent(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int applied = -1, version = -1;
  assert_int_equal(store_migrate(s, mig_dir(), &applied, &version, &e), 0);
  assert_int_equal(applied, 0);
  assert_true(version >= 1);
  /* Every table the server uses exists. */
  assert_int_equal(store_exec(s, "SELECT id, kind, status, params, attempt FROM jobs LIMIT 0; "
                                 "SELECT job_id, key_id, step, value FROM metrics LIMIT 0; "
                                 "SELECT id, name FROM metric_keys LIMIT 0; "
                                 "SELECT job_id, name, data FROM artifacts LIMIT 0; "
                                 "SELECT tag, job_id FROM job_tags LIMIT 0;",
                              &e),
                   0);
  store_close(s);
}

static void test_migrations_errors(void **state) {
  (void)state;
  store *s = NULL;
  td_err e;
  assert_int_equal(store_open(":memory:", 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, "/nonexistent/tdlab/migrations", NULL, NULL, &e), TD_EIO);
  assert_non_null(strstr(e.msg, "/nonexistent"));
  store_close(s);
  /* A database newer than the files is refused rather than silently used. */
  s = open_mem();
  assert_int_equal(store_exec(s, "INSERT INTO schema_version VALUES (9999, 'future.sql', 'x')", &e), 0);
  assert_int_equal(store_migrate(s, mig_dir(), NULL, NULL, &e), TD_ECONFLICT);
  store_close(s);
}

/* ---------------------------------------------------------------- jobs */

static void test_claim_order_and_finish(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t a = add_job(s, "k", 0), b = add_job(s, "k", 5), c = add_job(s, "k", 0);
  store_claimed cl;
  int found = 0;
  /* Highest priority first, then the oldest. */
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(found, 1);
  assert_int_equal(cl.id, b);
  assert_string_equal(cl.kind, "k");
  assert_string_equal(cl.params, "{\"a\":1}");
  assert_int_equal(cl.attempt, 1);
  store_claimed_free(&cl);
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(cl.id, a);
  store_claimed_free(&cl);
  assert_string_equal(get(s, a).status, "running");
  long depth = -1;
  assert_int_equal(store_queue_depth(s, &depth, &e), 0);
  assert_int_equal(depth, 1);
  assert_int_equal(store_job_finish(s, a, STORE_SUCCEEDED, NULL, "{\"acc\":0.5}", 7, 10, &e), 0);
  got_job g = get(s, a);
  assert_string_equal(g.status, "succeeded");
  assert_string_equal(g.summary, "{\"acc\":0.5}");
  assert_int_equal(g.done, 7);
  assert_int_equal(g.total, 10);
  assert_true(g.has_finished_at);
  /* Finishing twice is a conflict, not a silent overwrite. */
  assert_int_equal(store_job_finish(s, a, STORE_FAILED, "x", NULL, 0, 0, &e), TD_ECONFLICT);
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(cl.id, c);
  store_claimed_free(&cl);
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(found, 0);
  long counts[STORE_N_STATUS];
  assert_int_equal(store_job_counts(s, counts, &e), 0);
  assert_int_equal(counts[STORE_RUNNING], 2);
  assert_int_equal(counts[STORE_SUCCEEDED], 1);
  assert_int_equal(counts[STORE_QUEUED], 0);
  store_close(s);
}

static void test_cancel_states(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t a = add_job(s, "k", 0), b = add_job(s, "k", 0);
  int outcome = -1;
  assert_int_equal(store_job_cancel(s, a, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_CANCELLED);
  assert_string_equal(get(s, a).status, "cancelled");
  store_claimed cl;
  int found;
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(cl.id, b); /* the cancelled job is never claimed */
  store_claimed_free(&cl);
  assert_int_equal(store_job_cancel(s, b, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_RUNNING);
  assert_int_equal(get(s, b).cancel_requested, 1);
  assert_string_equal(get(s, b).status, "running");
  assert_int_equal(store_job_cancel(s, a, &outcome, &e), TD_ECONFLICT);
  assert_int_equal(store_job_cancel(s, 424242, &outcome, &e), TD_ENOTFOUND);
  store_close(s);
}

static void test_queue_cap(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  store_new_job j = {.kind = "k", .params_json = "{}"};
  int64_t id;
  for (int i = 0; i < 3; i++) assert_int_equal(store_job_insert(s, &j, 3, &id, &e), 0);
  assert_int_equal(store_job_insert(s, &j, 3, &id, &e), TD_ELIMIT);
  assert_int_equal(id, 0);
  long depth;
  assert_int_equal(store_queue_depth(s, &depth, &e), 0);
  assert_int_equal(depth, 3);
  store_close(s);
}

typedef struct ids {
  int64_t id[128];
  int n;
} ids;
static void grab_id(void *ctx, const store_job *j) {
  ids *x = ctx;
  x->id[x->n++] = j->id;
}

static void test_list_filters_and_cursor(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id[5];
  for (int i = 0; i < 5; i++) id[i] = add_job(s, i % 2 ? "odd" : "even", 0);
  store_job_filter f = {.limit = 2};
  ids got = {0};
  int64_t next = 0;
  assert_int_equal(store_job_list(s, &f, grab_id, &got, &next, &e), 0);
  assert_int_equal(got.n, 2);
  assert_int_equal(got.id[0], id[4]); /* newest first */
  assert_int_equal(got.id[1], id[3]);
  assert_int_equal(next, id[3]);
  f.before_id = next;
  got.n = 0;
  assert_int_equal(store_job_list(s, &f, grab_id, &got, &next, &e), 0);
  assert_int_equal(got.id[0], id[2]);
  f.before_id = 0;
  f.limit = 10;
  f.kind = "odd";
  got.n = 0;
  assert_int_equal(store_job_list(s, &f, grab_id, &got, &next, &e), 0);
  assert_int_equal(got.n, 2);
  assert_int_equal(next, 0);
  f.kind = NULL;
  f.tag = "x";
  f.status_mask = 1u << STORE_QUEUED;
  got.n = 0;
  assert_int_equal(store_job_list(s, &f, grab_id, &got, &next, &e), 0);
  assert_int_equal(got.n, 5);
  f.tag = "nope";
  got.n = 0;
  assert_int_equal(store_job_list(s, &f, grab_id, &got, &next, &e), 0);
  assert_int_equal(got.n, 0);
  f.limit = 0;
  assert_int_equal(store_job_list(s, &f, grab_id, &got, &next, &e), TD_EINVAL);
  store_close(s);
}

/* Every filter combination, walked page by page with the keyset cursor, against a brute
 * force over the jobs this test made (the reference is the test's own record of each job's
 * kind, tags, sweep and status, not the store). Statuses change after the tags were written,
 * so the tag rows' status copies (migrations/0005_scale.sql triggers) are exercised. */
typedef struct ref_job {
  int64_t id;
  int kind, tag_a, tag_b, sweep, status;
} ref_job;

static void test_list_every_combination(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  enum { N = 60 };
  ref_job r[N];
  assert_int_equal(store_exec(s, "INSERT INTO sweeps(id,kind,spec,n_children,created_at) "
                                 "VALUES(1,'k0','{}',0,'x'),(2,'k0','{}',0,'x')", &e), 0);
  for (int i = 0; i < N; i++) {
    r[i].kind = i % 3;
    r[i].tag_a = i % 2 == 0;
    r[i].tag_b = i % 5 == 0;
    r[i].sweep = i % 4 == 1 ? 1 + (i / 4) % 2 : 0;
    const char *tags[2];
    size_t nt = 0;
    if (r[i].tag_a) tags[nt++] = "a";
    if (r[i].tag_b) tags[nt++] = "b";
    char kind[8];
    snprintf(kind, sizeof kind, "k%d", r[i].kind);
    store_new_job j = {.kind = kind, .params_json = "{}", .tags_json = "[]", .tags = tags,
                       .n_tags = nt, .sweep_id = r[i].sweep};
    assert_int_equal(store_job_insert(s, &j, 0, &r[i].id, &e), 0);
    r[i].status = STORE_QUEUED;
  }
  /* move jobs through the life cycle: claim (oldest first), then finish some */
  for (int i = 0; i < 40; i++) {
    store_claimed c;
    int found = 0;
    assert_int_equal(store_job_claim(s, &c, &found, &e), 0);
    assert_true(found);
    int k = (int)(c.id - r[0].id);
    r[k].status = STORE_RUNNING;
    if (i % 3 == 0) {
      assert_int_equal(store_job_finish(s, c.id, STORE_SUCCEEDED, NULL, NULL, 1, 1, &e), 0);
      r[k].status = STORE_SUCCEEDED;
    } else if (i % 3 == 1) {
      assert_int_equal(store_job_finish(s, c.id, STORE_FAILED, "x", NULL, 1, 1, &e), 0);
      r[k].status = STORE_FAILED;
    }
    store_claimed_free(&c);
  }
  const unsigned masks[] = {0, 1u << STORE_QUEUED, 1u << STORE_RUNNING,
                            (1u << STORE_FAILED) | (1u << STORE_SUCCEEDED),
                            (1u << STORE_QUEUED) | (1u << STORE_RUNNING) | (1u << STORE_FAILED)};
  const char *kinds[] = {NULL, "k0", "k2"};
  const char *tagv[] = {NULL, "a", "b"};
  const int64_t sweeps[] = {0, 1, 2};
  int checked = 0;
  for (size_t mi = 0; mi < 5; mi++)
    for (size_t ki = 0; ki < 3; ki++)
      for (size_t ti = 0; ti < 3; ti++)
        for (size_t si = 0; si < 3; si++)
          for (long limit = 1; limit <= 7; limit += 3) {
            /* the reference: ids newest first */
            int64_t want[N];
            int nw = 0;
            for (int i = N - 1; i >= 0; i--) {
              if (masks[mi] && !(masks[mi] & (1u << r[i].status))) continue;
              if (kinds[ki] && r[i].kind != kinds[ki][1] - '0') continue;
              if (tagv[ti] && !(tagv[ti][0] == 'a' ? r[i].tag_a : r[i].tag_b)) continue;
              if (sweeps[si] && r[i].sweep != sweeps[si]) continue;
              want[nw++] = r[i].id;
            }
            store_job_filter f = {.status_mask = masks[mi], .kind = kinds[ki], .tag = tagv[ti],
                                  .sweep_id = sweeps[si], .limit = limit};
            ids got = {0};
            int pages = 0;
            for (;;) {
              int64_t next = -1;
              int before = got.n;
              assert_int_equal(store_job_list(s, &f, grab_id, &got, &next, &e), 0);
              assert_true(got.n - before <= limit);
              pages++;
              if (!next) break;
              assert_int_equal(got.n - before, limit); /* a page before the last is full */
              assert_int_equal(next, got.id[got.n - 1]);
              f.before_id = next;
              assert_true(pages <= N);
            }
            assert_int_equal(got.n, nw);
            for (int i = 0; i < nw; i++) assert_int_equal(got.id[i], want[i]);
            checked++;
          }
  assert_int_equal(checked, 5 * 3 * 3 * 3 * 3);
  store_close(s);
}

/* ---------------------------------------------------------------- metrics */

static void test_batched_writes(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id = add_job(s, "k", 0);
  store_mw *w = NULL;
  /* 10 points per batch; a batch age (1 hour) that never fires during the test. */
  assert_int_equal(store_mw_create(s, id, 10, 3600 * 1000L, &w, &e), 0);
  for (long i = 0; i < 9; i++) assert_int_equal(store_mw_put(w, "loss", i, 1.0 / (double)(i + 1)), 0);
  size_t total = 99;
  pts *p = series(s, id, "loss", LONG_MIN, 0, &total);
  assert_int_equal(total, 0); /* still buffered: nothing committed */
  free(p);
  assert_int_equal(store_mw_put(w, "loss", 9, 0.1), 0); /* the 10th point commits the batch */
  p = series(s, id, "loss", LONG_MIN, 0, &total);
  assert_int_equal(total, 10);
  assert_int_equal(p->n, 10);
  for (size_t i = 0; i < 10; i++) {
    assert_int_equal(p->step[i], (long)i);
    assert_true(p->value[i] == (i == 9 ? 0.1 : 1.0 / (double)(i + 1))); /* stored exactly */
  }
  free(p);
  assert_int_equal(store_mw_written(w), 10);
  /* A second key and progress, then an explicit flush. */
  assert_int_equal(store_mw_put(w, "acc", 0, 0.25), 0);
  store_mw_progress(w, 3, 7);
  assert_int_equal(store_mw_flush(w), 0);
  assert_int_equal(get(s, id).done, 3);
  assert_int_equal(get(s, id).total, 7);
  /* Bad keys are refused, nothing buffered. */
  assert_int_equal(store_mw_put(w, "", 0, 1), TD_EINVAL);
  assert_int_equal(store_mw_put(w, "a,b", 0, 1), TD_EINVAL);
  assert_int_equal(store_mw_put(w, "has space", 0, 1), TD_EINVAL);
  store_mw_destroy(w);
  store_close(s);
}

typedef struct names {
  char k[8][32];
  int n;
} names;
static void grab_key(void *ctx, const char *k) {
  names *n = ctx;
  snprintf(n->k[n->n++], 32, "%s", k);
}

static void test_nonfinite_and_keys(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id = add_job(s, "k", 0), other = add_job(s, "k", 0);
  store_mw *w = NULL;
  assert_int_equal(store_mw_create(s, id, 0, 0, &w, &e), 0);
  assert_int_equal(store_mw_put(w, "x", 0, NAN), 0);
  assert_int_equal(store_mw_put(w, "x", 1, INFINITY), 0);
  assert_int_equal(store_mw_put(w, "x", 2, -INFINITY), 0);
  assert_int_equal(store_mw_put(w, "x", 3, -0.0), 0);
  assert_int_equal(store_mw_put(w, "b/0", 0, 1e-300), 0);
  assert_int_equal(store_mw_flush(w), 0);
  store_mw_destroy(w);
  pts *p = series(s, id, "x", LONG_MIN, 0, NULL);
  assert_int_equal(p->n, 4);
  assert_true(isnan(p->value[0]));
  assert_true(isinf(p->value[1]) && p->value[1] > 0);
  assert_true(isinf(p->value[2]) && p->value[2] < 0);
  assert_true(p->value[3] == 0.0);
  free(p);
  p = series(s, id, "b/0", LONG_MIN, 0, NULL);
  assert_true(p->value[0] == 1e-300);
  free(p);
  names n = {0};
  assert_int_equal(store_metric_keys(s, id, grab_key, &n, &e), 0);
  assert_int_equal(n.n, 2);
  assert_string_equal(n.k[0], "b/0");
  assert_string_equal(n.k[1], "x");
  n.n = 0;
  assert_int_equal(store_metric_keys(s, other, grab_key, &n, &e), 0);
  assert_int_equal(n.n, 0); /* keys are per job */
  p = series(s, other, "x", LONG_MIN, 0, NULL);
  assert_int_equal(p->n, 0);
  free(p);
  store_close(s);
}

/* A failed batch keeps its points; the next flush writes them all, once. */
static void test_flush_failure_keeps_points(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id = add_job(s, "k", 0);
  assert_int_equal(store_exec(s, "CREATE TRIGGER no_points BEFORE INSERT ON metrics "
                                 "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END;", &e), 0);
  store_mw *w = NULL;
  assert_int_equal(store_mw_create(s, id, 4, 3600 * 1000L, &w, &e), 0);
  for (long i = 0; i < 3; i++) assert_int_equal(store_mw_put(w, "new_key", i, (double)i), 0);
  assert_int_equal(store_mw_put(w, "new_key", 3, 3.0), TD_EIO);
  assert_int_equal(store_mw_written(w), 0);
  assert_int_equal(store_mw_put(w, "new_key", 4, 4.0), TD_EIO); /* still failing, buffer grows */
  assert_int_equal(store_exec(s, "DROP TRIGGER no_points", &e), 0);
  assert_int_equal(store_mw_flush(w), 0);
  assert_int_equal(store_mw_written(w), 5);
  size_t total;
  pts *p = series(s, id, "new_key", LONG_MIN, 0, &total);
  assert_int_equal(total, 5);
  for (size_t i = 0; i < 5; i++) assert_true(p->value[i] == (double)i);
  free(p);
  names n = {0};
  assert_int_equal(store_metric_keys(s, id, grab_key, &n, &e), 0);
  assert_int_equal(n.n, 1); /* the key interned in the rolled-back batch was re-interned */
  store_mw_destroy(w);
  store_close(s);
}

/* ---------------------------------------------------------------- downsampling */

static void ds_run(const long *step, const double *v, size_t n, size_t max_points, pts *out) {
  store_ds ds;
  out->n = 0;
  store_ds_init(&ds, n, max_points, grab_point, out);
  for (size_t i = 0; i < n; i++) store_ds_push(&ds, step[i], v[i]);
  store_ds_finish(&ds);
}

static int contains(const pts *p, long step) {
  for (size_t i = 0; i < p->n; i++)
    if (p->step[i] == step) return 1;
  return 0;
}

static void test_downsample_keeps_extremes(void **state) {
  (void)state;
  enum { N = 1000 };
  static long step[N];
  static double v[N];
  for (size_t i = 0; i < N; i++) {
    step[i] = (long)(10 * i);
    v[i] = sin(0.05 * (double)i) * (1.0 + 0.001 * (double)i);
  }
  v[500] = 1e6;  /* a spike */
  v[501] = -1e6; /* and a dip next to it */
  static pts out;
  const size_t M = 50;
  ds_run(step, v, N, M, &out);
  assert_true(out.n <= M);
  assert_true(out.n >= M - 2); /* 24 buckets of min and max plus the ends */
  assert_int_equal(out.step[0], step[0]);
  assert_true(out.value[0] == v[0]);
  assert_int_equal(out.step[out.n - 1], step[N - 1]);
  assert_true(out.value[out.n - 1] == v[N - 1]);
  for (size_t i = 1; i < out.n; i++) assert_true(out.step[i] > out.step[i - 1]);
  assert_true(contains(&out, 5000) && contains(&out, 5010));
  /* Every bucket's min and max, recomputed here from the documented bucket rule. */
  size_t B = (M - 2) / 2, m = N - 2;
  for (size_t b = 0; b < B; b++) {
    size_t lo = 1 + (b * m + B - 1) / B, hi = 1 + ((b + 1) * m + B - 1) / B; /* [lo, hi) */
    size_t imin = lo, imax = lo;
    for (size_t i = lo; i < hi; i++) {
      if (v[i] < v[imin]) imin = i;
      if (v[i] > v[imax]) imax = i;
    }
    assert_true(contains(&out, step[imin]));
    assert_true(contains(&out, step[imax]));
  }
}

static void test_downsample_small_and_nonfinite(void **state) {
  (void)state;
  long step[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  double v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  static pts out;
  ds_run(step, v, 8, 8, &out); /* n <= max_points: everything */
  assert_int_equal(out.n, 8);
  ds_run(step, v, 8, 0, &out); /* 0: no downsampling */
  assert_int_equal(out.n, 8);
  ds_run(step, v, 8, 2, &out); /* only the ends */
  assert_int_equal(out.n, 2);
  assert_int_equal(out.step[0], 0);
  assert_int_equal(out.step[1], 7);
  ds_run(step, v, 8, 3, &out); /* (3-2)/2 = 0 buckets: still only the ends */
  assert_int_equal(out.n, 2);
  /* NaN and +-Inf in the interior survive a 4-point budget (one bucket: min and max). */
  double w[8] = {1, 2, NAN, 4, -INFINITY, 6, 7, 8};
  ds_run(step, w, 8, 4, &out);
  assert_int_equal(out.n, 4);
  assert_true(isnan(out.value[1]));
  assert_true(isinf(out.value[2]) && out.value[2] < 0);
  double z[8] = {1, 2, 3, INFINITY, 4, 5, 6, 8};
  ds_run(step, z, 8, 4, &out);
  assert_true(contains(&out, 3));
}

static void test_series_downsampled_from_db(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id = add_job(s, "k", 0);
  store_mw *w = NULL;
  assert_int_equal(store_mw_create(s, id, 256, 0, &w, &e), 0);
  for (long i = 0; i < 3000; i++) assert_int_equal(store_mw_put(w, "loss", i, (double)(i % 97)), 0);
  assert_int_equal(store_mw_flush(w), 0);
  store_mw_destroy(w);
  size_t total = 0;
  pts *p = series(s, id, "loss", LONG_MIN, 100, &total);
  assert_int_equal(total, 3000);
  assert_true(p->n <= 100);
  assert_int_equal(p->step[0], 0);
  assert_int_equal(p->step[p->n - 1], 2999);
  free(p);
  p = series(s, id, "loss", 2990, 0, &total); /* since_step is inclusive */
  assert_int_equal(total, 10);
  assert_int_equal(p->step[0], 2990);
  free(p);
  store_close(s);
}


/* ---------------------------------------------------------------- pyramid reads */

/* Reference ranking of store_ds: NaN above everything for the max, never the min unless alone;
 * ties keep the earlier step. Written independently of store.c. */
static int ref_less(double a, double b) { return isnan(b) ? !isnan(a) : (!isnan(a) && a < b); }
static int ref_greater(double a, double b) { return isnan(b) ? 0 : (isnan(a) || a > b); }

/* A long series (negative, gapped and out-of-order steps; NaN and +-Inf; a re-run that puts
 * already written steps again with other values) read through the pyramid: the total is the
 * brute-force count, every output point is a stored point, the first and last are kept, and
 * each of the B equal step ranges contributes its brute-force minimum and maximum. */
static void test_pyramid_read_matches_brute_force(void **state) {
  (void)state;
  enum { N = 60000 };
  static long step[N];
  static double val[N];
  store *s = open_mem();
  td_err e;
  int64_t id = add_job(s, "k", 0);
  store_mw *w = NULL;
  assert_int_equal(store_mw_create(s, id, 1000, 3600 * 1000L, &w, &e), 0);
  unsigned long long r = 12345;
  long st = -5000;
  for (size_t i = 0; i < N; i++) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    st += 1 + (long)((r >> 60) % 3); /* gaps of 1..3 */
    step[i] = st;
    double u = (double)(r >> 11) / 9007199254740992.0;
    val[i] = (r >> 20) % 997 == 0 ? NAN : (r >> 20) % 991 == 0 ? -INFINITY
             : (r >> 20) % 983 == 0 ? INFINITY : sin((double)i / 500.0) + 0.5 * u;
  }
  /* blocks of 64 written back to front, so points arrive out of step order */
  for (size_t b = 0; b < N; b += 64)
    for (size_t j = (b + 64 <= N ? 64 : N - b); j-- > 0;)
      assert_int_equal(store_mw_put(w, "x", step[b + j], val[b + j]), 0);
  /* a re-run of the first 3000 with other values: ignored, as in the points table */
  for (size_t i = 0; i < 3000; i++) assert_int_equal(store_mw_put(w, "x", step[i], 1e9), 0);
  assert_int_equal(store_mw_flush(w), 0);
  store_mw_destroy(w);

  long sinces[] = {LONG_MIN / 2, step[0], step[777] + 1, step[N / 2], step[N - 40000]};
  size_t maxps[] = {100, 302, 1000};
  static pts out;
  for (size_t a = 0; a < sizeof sinces / sizeof *sinces; a++) {
    size_t i0 = 0;
    while (i0 < N && step[i0] < sinces[a]) i0++;
    size_t n = N - i0;
    for (size_t m = 0; m < sizeof maxps / sizeof *maxps; m++) {
      memset(&out, 0, sizeof out);
      size_t total = 0;
      assert_int_equal(store_metric_series(s, id, "x", sinces[a], maxps[m], grab_point, &out,
                                           &total, &e), 0);
      assert_int_equal(total, n);
      assert_true(out.n <= maxps[m]);
      assert_int_equal(out.step[0], step[i0]);
      assert_int_equal(out.step[out.n - 1], step[N - 1]);
      size_t j = i0;
      for (size_t k = 0; k < out.n; k++) { /* strictly increasing, each a stored point */
        if (k) assert_true(out.step[k] > out.step[k - 1]);
        while (j < N && step[j] < out.step[k]) j++;
        assert_true(j < N && step[j] == out.step[k]);
        if (isnan(val[j])) assert_true(isnan(out.value[k]));
        else assert_true(out.value[k] == val[j]);
      }
      /* each step range's extremes */
      /* the documented buckets: groups of whole level-l pyramid buckets (32^l steps) */
      size_t nb = (maxps[m] - 2) / 2;
      double per = ((double)step[N - 1] - (double)step[i0] + 1) / (double)nb;
      double width = 1;
      while (width * 32 <= per && width < 1048576) width *= 32;
      assert_true(width > 1); /* the pyramid path */
      double p_lo = floor((double)step[i0] / width);
      double n_p = floor((double)step[N - 1] / width) - p_lo + 1;
      static long smin[500], smax[500];
      static double vmin[500], vmax[500];
      static int have[500];
      memset(have, 0, sizeof have);
      for (size_t i = i0 + 1; i + 1 < N; i++) {
        size_t bi = (size_t)((floor((double)step[i] / width) - p_lo) / n_p * (double)nb);
        assert_true(bi < nb);
        if (!have[bi]) {
          have[bi] = 1, smin[bi] = smax[bi] = step[i], vmin[bi] = vmax[bi] = val[i];
          continue;
        }
        if (ref_less(val[i], vmin[bi])) smin[bi] = step[i], vmin[bi] = val[i];
        if (ref_greater(val[i], vmax[bi])) smax[bi] = step[i], vmax[bi] = val[i];
      }
      for (size_t bi = 0; bi < nb; bi++) {
        if (!have[bi]) continue;
        assert_true(contains(&out, smin[bi]));
        assert_true(contains(&out, smax[bi]));
      }
    }
  }
  store_close(s);
}

/* ---------------------------------------------------------------- restart recovery */

static void test_restart_recovery(void **state) {
  (void)state;
  char dir[] = "/tmp/tdlab_test_store_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/db.sqlite", dir);
  td_err e;
  store *s = NULL;
  assert_int_equal(store_open(path, 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, mig_dir(), NULL, NULL, &e), 0);
  int64_t id = add_job(s, "k", 0), doomed = add_job(s, "k", 0), cancelled = add_job(s, "k", 0);
  store_claimed cl;
  int found;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
    store_claimed_free(&cl);
  }
  int outcome;
  assert_int_equal(store_job_cancel(s, cancelled, &outcome, &e), 0);
  assert_int_equal(outcome, STORE_RUNNING);
  /* The first attempt commits steps 0..49, then the process "dies" (no finish, no flush of
   * the buffered tail: those points were never acknowledged). */
  store_mw *w = NULL;
  assert_int_equal(store_mw_create(s, id, 10, 3600 * 1000L, &w, &e), 0);
  for (long i = 0; i < 55; i++) assert_int_equal(store_mw_put(w, "loss", i, (double)i), 0);
  store_mw_destroy(w);
  store_close(s);

  assert_int_equal(store_open(path, 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, mig_dir(), NULL, NULL, &e), 0);
  size_t total;
  pts *p = series(s, id, "loss", LONG_MIN, 0, &total);
  assert_int_equal(total, 50);
  free(p);
  /* doomed is already at the attempt limit (3 of 3). */
  char sql[128];
  snprintf(sql, sizeof sql, "UPDATE jobs SET attempt=3 WHERE id=%lld", (long long)doomed);
  assert_int_equal(store_exec(s, sql, &e), 0);
  long requeued = -1, failed = -1, nc = -1;
  assert_int_equal(store_recover(s, 3, &requeued, &failed, &nc, &e), 0);
  assert_int_equal(requeued, 1);
  assert_int_equal(failed, 1);
  assert_int_equal(nc, 1);
  got_job g = get(s, id);
  assert_string_equal(g.status, "queued");
  assert_int_equal(g.attempt, 2);
  assert_string_equal(get(s, doomed).status, "failed");
  assert_non_null(strstr(get(s, doomed).error, "interrupted"));
  assert_string_equal(get(s, cancelled).status, "cancelled");
  /* The second attempt re-runs steps 0..99. A re-run is deterministic, but should it differ
   * (another BLAS thread count), the committed points of the first attempt are kept: here
   * the re-run's values for steps < 50 are -1 and must not replace them. */
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(found, 1);
  assert_int_equal(cl.id, id);
  assert_int_equal(cl.attempt, 2);
  store_claimed_free(&cl);
  assert_int_equal(store_mw_create(s, id, 10, 0, &w, &e), 0);
  for (long i = 0; i < 100; i++)
    assert_int_equal(store_mw_put(w, "loss", i, i < 50 ? -1.0 : (double)i), 0);
  assert_int_equal(store_mw_flush(w), 0);
  store_mw_destroy(w);
  assert_int_equal(store_job_finish(s, id, STORE_SUCCEEDED, NULL, NULL, 100, 100, &e), 0);
  p = series(s, id, "loss", LONG_MIN, 0, &total);
  assert_int_equal(total, 100); /* no duplicate step, none missing */
  for (size_t i = 0; i < p->n; i++) {
    assert_int_equal(p->step[i], (long)i);
    assert_true(p->value[i] == (double)i);
  }
  free(p);
  /* A graceful requeue keeps the attempt count. */
  int64_t g2 = add_job(s, "k", 0);
  assert_int_equal(store_job_claim(s, &cl, &found, &e), 0);
  assert_int_equal(cl.id, g2);
  store_claimed_free(&cl);
  assert_int_equal(store_job_requeue(s, g2, &e), 0);
  assert_string_equal(get(s, g2).status, "queued");
  assert_int_equal(get(s, g2).attempt, 1);
  store_close(s);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- artifacts and pool */

typedef struct art {
  char name[64], type[64];
  char data[64];
  size_t size;
  int n;
} art;
static void grab_art(void *ctx, const store_artifact *a) {
  art *x = ctx;
  x->n++;
  snprintf(x->name, sizeof x->name, "%s", a->name);
  snprintf(x->type, sizeof x->type, "%s", a->content_type);
  x->size = a->size;
  if (a->data && a->size < sizeof x->data) {
    memcpy(x->data, a->data, a->size);
    x->data[a->size] = '\0';
  }
}

static void test_artifacts(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t id = add_job(s, "k", 0);
  assert_int_equal(store_artifact_put(s, id, "spectrum.json", "application/json", "[1,2]", 5, &e), 0);
  assert_int_equal(store_artifact_put(s, id, "spectrum.json", "application/json", "[3]", 3, &e), 0);
  art a = {0};
  assert_int_equal(store_artifact_get(s, id, "spectrum.json", grab_art, &a, &e), 0);
  assert_string_equal(a.data, "[3]"); /* replaced */
  assert_string_equal(a.type, "application/json");
  a.n = 0;
  assert_int_equal(store_artifact_list(s, id, grab_art, &a, &e), 0);
  assert_int_equal(a.n, 1);
  assert_int_equal(a.size, 3);
  assert_int_equal(store_artifact_get(s, id, "missing", grab_art, &a, &e), TD_ENOTFOUND);
  store_close(s);
}

static void test_pool_reuses_connections(void **state) {
  (void)state;
  char dir[] = "/tmp/tdlab_test_pool_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/db.sqlite", dir);
  td_err e;
  store *s = NULL;
  assert_int_equal(store_open(path, 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, mig_dir(), NULL, NULL, &e), 0);
  store_pool *pool = NULL;
  assert_int_equal(store_pool_create(path, 0, &pool, &e), 0);
  store *a = NULL, *b = NULL, *c = NULL;
  assert_int_equal(store_pool_get(pool, &a, &e), 0);
  assert_int_equal(store_pool_get(pool, &b, &e), 0);
  assert_ptr_not_equal(a, b);
  int64_t id = add_job(a, "k", 0);
  assert_string_equal(get(b, id).status, "queued"); /* WAL: visible to the other connection */
  store_pool_put(pool, a);
  assert_int_equal(store_pool_get(pool, &c, &e), 0);
  assert_ptr_equal(c, a);
  store_pool_put(pool, b);
  store_pool_put(pool, c);
  store_pool_destroy(pool);
  store_close(s);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

/* ---------------------------------------------------------------- checkpoints and forks */

typedef struct got_ckpt {
  int n;
  int64_t id;
  size_t size;
  char tensors[256];
  unsigned char data[64];
  int has_data;
} got_ckpt;

static void grab_ckpt(void *ctx, const store_checkpoint *c) {
  got_ckpt *g = ctx;
  g->n++;
  g->id = c->id;
  g->size = c->size;
  snprintf(g->tensors, sizeof g->tensors, "%s", c->tensors);
  g->has_data = c->data != NULL;
  if (c->data && c->size <= sizeof g->data) memcpy(g->data, c->data, c->size);
}

static void test_checkpoints(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  const unsigned char file[10] = {1, 2, 3, 0, 5, 6, 7, 8, 9, 10}; /* a NUL inside: a blob */
  const char *tensors = "[{\"name\":\"w\",\"dtype\":\"F64\",\"shape\":[1]}]";
  int64_t id = 0, id2 = 0;
  assert_int_equal(store_checkpoint_insert(s, file, sizeof file, tensors, &id, &e), 0);
  assert_int_equal(store_checkpoint_insert(s, file, 3, "[]", &id2, &e), 0);
  assert_true(id > 0 && id2 == id + 1);
  got_ckpt g = {0};
  assert_int_equal(store_checkpoint_get(s, id, 0, grab_ckpt, &g, &e), 0);
  assert_int_equal(g.n, 1);
  assert_int_equal(g.id, id);
  assert_int_equal(g.size, 10);
  assert_string_equal(g.tensors, tensors);
  assert_false(g.has_data);
  memset(&g, 0, sizeof g);
  assert_int_equal(store_checkpoint_get(s, id, 1, grab_ckpt, &g, &e), 0);
  assert_true(g.has_data);
  assert_memory_equal(g.data, file, sizeof file);
  assert_int_equal(store_checkpoint_get(s, id + 7, 0, grab_ckpt, &g, &e), TD_ENOTFOUND);
  /* The sink's reader: an uploaded checkpoint ... */
  void *data = NULL;
  size_t len = 0;
  assert_int_equal(store_checkpoint_read(s, 0, 0, id, &data, &len, &e), 0);
  assert_int_equal(len, sizeof file);
  assert_memory_equal(data, file, sizeof file);
  free(data);
  assert_int_equal(store_checkpoint_read(s, 0, 0, id + 7, &data, &len, &e), TD_ENOTFOUND);
  assert_null(data);
  /* ... and a job's checkpoint_step<S>.safetensors artifacts. */
  int64_t job = add_job(s, "train", 0);
  const char *anames[] = {"checkpoint_step100.safetensors", "checkpoint_step20.safetensors",
                         "checkpoint_step0.safetensors", "checkpoint_stepx.safetensors",
                         "checkpoint_step5.json", "spectrum.json"};
  for (size_t i = 0; i < 6; i++)
    assert_int_equal(store_artifact_put(s, job, anames[i], "application/octet-stream", file,
                                        4 + i, &e), 0);
  long steps[8];
  size_t n = 0;
  assert_int_equal(store_checkpoint_steps(s, job, steps, 8, &n, &e), 0);
  assert_int_equal(n, 3);
  assert_int_equal(steps[0], 0);
  assert_int_equal(steps[1], 20);
  assert_int_equal(steps[2], 100);
  assert_int_equal(store_checkpoint_read(s, job, 20, 0, &data, &len, &e), 0);
  assert_int_equal(len, 5); /* the second artifact: 4 + 1 bytes */
  assert_memory_equal(data, file, 5);
  free(data);
  assert_int_equal(store_checkpoint_read(s, job, 21, 0, &data, &len, &e), TD_ENOTFOUND);
  assert_int_equal(store_checkpoint_steps(s, job + 1, steps, 8, &n, &e), 0);
  assert_int_equal(n, 0);
  store_close(s);
}

typedef struct got_links {
  int64_t parent;
  long step;
  char children[64];
} got_links;

static void grab_links(void *ctx, const store_job *j) {
  got_links *g = ctx;
  g->parent = j->parent_job_id;
  g->step = j->parent_step;
  snprintf(g->children, sizeof g->children, "%s", j->children ? j->children : "");
}

static void test_fork_links(void **state) {
  (void)state;
  store *s = open_mem();
  td_err e;
  int64_t parent = add_job(s, "train", 0), other = add_job(s, "train", 0), c1 = 0, c2 = 0, gc = 0;
  store_new_job j = {.kind = "train", .params_json = "{}", .parent_job_id = parent,
                     .parent_step = 500};
  assert_int_equal(store_job_insert(s, &j, 0, &c1, &e), 0);
  j.parent_step = 0;
  assert_int_equal(store_job_insert(s, &j, 0, &c2, &e), 0);
  j.parent_job_id = c1;
  j.parent_step = 700;
  assert_int_equal(store_job_insert(s, &j, 0, &gc, &e), 0);
  got_links g = {0};
  char want[64];
  assert_int_equal(store_job_get(s, parent, grab_links, &g, &e), 0);
  assert_int_equal(g.parent, 0);
  snprintf(want, sizeof want, "%lld,%lld", (long long)c1, (long long)c2);
  assert_string_equal(g.children, want);
  assert_int_equal(store_job_get(s, c1, grab_links, &g, &e), 0);
  assert_int_equal(g.parent, parent);
  assert_int_equal(g.step, 500);
  snprintf(want, sizeof want, "%lld", (long long)gc);
  assert_string_equal(g.children, want);
  assert_int_equal(store_job_get(s, c2, grab_links, &g, &e), 0);
  assert_int_equal(g.parent, parent);
  assert_int_equal(g.step, 0);
  assert_string_equal(g.children, "");
  assert_int_equal(store_job_get(s, other, grab_links, &g, &e), 0);
  assert_int_equal(g.parent, 0);
  assert_string_equal(g.children, "");
  /* The parent must exist (foreign key). */
  j.parent_job_id = gc + 100;
  int64_t bad = 0;
  assert_int_not_equal(store_job_insert(s, &j, 0, &bad, &e), 0);
  assert_int_equal(bad, 0);
  store_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_migrations_idempotent),
      cmocka_unit_test(test_migrations_errors),
      cmocka_unit_test(test_claim_order_and_finish),
      cmocka_unit_test(test_cancel_states),
      cmocka_unit_test(test_queue_cap),
      cmocka_unit_test(test_list_filters_and_cursor),
      cmocka_unit_test(test_list_every_combination),
      cmocka_unit_test(test_batched_writes),
      cmocka_unit_test(test_nonfinite_and_keys),
      cmocka_unit_test(test_flush_failure_keeps_points),
      cmocka_unit_test(test_downsample_keeps_extremes),
      cmocka_unit_test(test_downsample_small_and_nonfinite),
      cmocka_unit_test(test_series_downsampled_from_db),
      cmocka_unit_test(test_pyramid_read_matches_brute_force),
      cmocka_unit_test(test_restart_recovery),
      cmocka_unit_test(test_artifacts),
      cmocka_unit_test(test_pool_reuses_connections),
      cmocka_unit_test(test_checkpoints),
      cmocka_unit_test(test_fork_links),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
