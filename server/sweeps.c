/* sweeps.c: sweeps on the server: creation in one transaction, reads with counts, children
 * and the cached fit, cancellation, and the worker hooks (early stopping, refresh on end).
 *
 * The sweep logic itself (expansion, validation, the stopping rules, the fits) lives in core/
 * (sweep.h, fit.h) as pure functions; this file only stores, reads and schedules. It runs its
 * own SQL on the caller's connection (store__db): every write is one statement or one BEGIN
 * IMMEDIATE transaction, reads that must agree run in one read transaction, and nothing is
 * left open on return. */
#include "sweeps.h"

#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaling/fit.h"
#include "base/schema.h"
#include "scaling/sweep.h"
#include "log.h"
#include "store_internal.h"

#define NOW "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
#define CHILD_NAME_MAX 200
#define FIT_EAGER_N 50 /* refresh the fit after every child up to this many points */

static int sql_fail(sqlite3 *db, td_err *err, const char *what) {
  return td_err_set(err, TD_EIO, NULL, "%s: %s", what, sqlite3_errmsg(db));
}

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **q, td_err *err) {
  if (sqlite3_prepare_v2(db, sql, -1, q, NULL) != SQLITE_OK) {
    *q = NULL;
    return sql_fail(db, err, "prepare");
  }
  return 0;
}

static void rollback(sqlite3 *db) {
  if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
}

static const char *col_text(sqlite3_stmt *q, int i) {
  return (const char *)sqlite3_column_text(q, i);
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

/* ---------------------------------------------------------------- status counts */

typedef struct sweep_counts {
  long n[STORE_N_STATUS];
  long total;
} sweep_counts;

static int read_counts(sqlite3 *db, int64_t id, sweep_counts *c, td_err *err) {
  memset(c, 0, sizeof *c);
  sqlite3_stmt *q;
  if (prep(db, "SELECT status, count(*) FROM jobs WHERE sweep_id=?1 GROUP BY status", &q, err))
    return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src;
  while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    int st = store_status_parse(col_text(q, 0));
    long n = (long)sqlite3_column_int64(q, 1);
    if (st >= 0) c->n[st] = n;
    c->total += n;
  }
  sqlite3_finalize(q);
  return src == SQLITE_DONE ? 0 : sql_fail(db, err, "sweep counts");
}

static long active_of(const sweep_counts *c) { return c->n[STORE_QUEUED] + c->n[STORE_RUNNING]; }

static const char *status_of(const sweep_counts *c, int cancel_requested) {
  if (cancel_requested) return "cancelled";
  if (active_of(c) == 0) return "finished";
  return active_of(c) == c->n[STORE_QUEUED] && c->n[STORE_QUEUED] == c->total ? "queued"
                                                                                : "running";
}

static void counts_json(http_buf *b, const sweep_counts *c) {
  http_buf_str(b, "{");
  for (int i = 0; i < STORE_N_STATUS; i++)
    http_buf_printf(b, "%s\"%s\":%ld", i ? "," : "", store_status_name(i), c->n[i]);
  http_buf_printf(b, ",\"total\":%ld}", c->total);
}

/* ---------------------------------------------------------------- the sweep row */

typedef struct sweep_row {
  int64_t id;
  char *name, *kind, *mode, *status, *spec, *early_stopping, *fit_spec, *fit;
  char *created_at, *finished_at;
  long n_children, max_concurrency, fit_n;
  int cancel_requested;
} sweep_row;

static void row_free(sweep_row *r) {
  free(r->name);
  free(r->kind);
  free(r->mode);
  free(r->status);
  free(r->spec);
  free(r->early_stopping);
  free(r->fit_spec);
  free(r->fit);
  free(r->created_at);
  free(r->finished_at);
  memset(r, 0, sizeof *r);
}

int sweeps_exists(store *s, int64_t id, td_err *err) {
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  if (prep(db, "SELECT 1 FROM sweeps WHERE id=?1", &q, err)) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_DONE) rc = td_err_set(err, TD_ENOTFOUND, "sweep", "no such sweep");
  else if (src != SQLITE_ROW) rc = sql_fail(db, err, "step");
  sqlite3_finalize(q);
  return rc;
}

static int read_row(sqlite3 *db, int64_t id, sweep_row *r, td_err *err) {
  memset(r, 0, sizeof *r);
  sqlite3_stmt *q;
  if (prep(db,
           "SELECT id,name,kind,mode,status,spec,n_children,max_concurrency,early_stopping,"
           "fit_spec,fit,fit_n,cancel_requested,created_at,finished_at FROM sweeps WHERE id=?1",
           &q, err))
    return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_ROW) {
    r->id = sqlite3_column_int64(q, 0);
    r->name = dup_or_null(col_text(q, 1));
    r->kind = dup_or_null(col_text(q, 2));
    r->mode = dup_or_null(col_text(q, 3));
    r->status = dup_or_null(col_text(q, 4));
    r->spec = dup_or_null(col_text(q, 5));
    r->n_children = (long)sqlite3_column_int64(q, 6);
    r->max_concurrency = (long)sqlite3_column_int64(q, 7);
    r->early_stopping = dup_or_null(col_text(q, 8));
    r->fit_spec = dup_or_null(col_text(q, 9));
    r->fit = dup_or_null(col_text(q, 10));
    r->fit_n = (long)sqlite3_column_int64(q, 11);
    r->cancel_requested = sqlite3_column_int(q, 12);
    r->created_at = dup_or_null(col_text(q, 13));
    r->finished_at = dup_or_null(col_text(q, 14));
    if (!r->name || !r->kind || !r->mode || !r->status || !r->spec || !r->created_at)
      rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  } else if (src == SQLITE_DONE) {
    rc = td_err_set(err, TD_ENOTFOUND, NULL, "no sweep %lld", (long long)id);
  } else {
    rc = sql_fail(db, err, "read sweep");
  }
  sqlite3_finalize(q);
  if (rc) row_free(r);
  return rc;
}

/* ---------------------------------------------------------------- create */

/* "<sweep name or 'sweep N'> <axis=value, ...>", at most CHILD_NAME_MAX bytes, control
 * characters replaced (the jobs API refuses them in names). */
static void child_name(char *out, size_t cap, const char *sweep_name, int64_t sweep_id,
                       const json_t *axis_values) {
  char head[96];
  if (sweep_name && *sweep_name) snprintf(head, sizeof head, "%.80s", sweep_name);
  else snprintf(head, sizeof head, "sweep %lld", (long long)sweep_id);
  size_t n = (size_t)snprintf(out, cap, "%s", head);
  const char *k;
  json_t *v;
  int first = 1;
  json_object_foreach((json_t *)axis_values, k, v) {
    if (n + 4 >= cap) break;
    char *txt = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
    n += (size_t)snprintf(out + n, cap - n, "%s%s=%s", first ? " " : ", ", k, txt ? txt : "?");
    free(txt);
    first = 0;
    if (n >= cap) { /* cut: mark it */
      memcpy(out + cap - 4, "...", 4);
      n = cap - 1;
      break;
    }
  }
  for (char *p = out; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

int sweeps_create(store *s, const json_t *spec, const td_limits *lim, long max_queued,
                  int64_t *id, size_t *n_children, int *queue_full, td_err *err) {
  return sweeps_create_on(s, spec, lim, max_queued, NULL, id, n_children, queue_full, err);
}

int sweeps_create_on(store *s, const json_t *spec, const td_limits *lim, long max_queued,
                     const char *executor, int64_t *id, size_t *n_children, int *queue_full,
                     td_err *err) {
  *id = 0;
  if (n_children) *n_children = 0;
  if (queue_full) *queue_full = 0;
  td_sweep_plan *plan = NULL;
  int rc = td_sweep_expand(spec, lim, 0, &plan, err);
  if (rc) return rc;
  sqlite3 *db = store__db(s);
  char *spec_txt = http_json_dump(plan->spec);
  json_t *es_json = td_es_to_json(&plan->early_stopping);
  char *es_txt = es_json && !json_is_null(es_json) ? http_json_dump(es_json) : NULL;
  char *fit_txt = plan->fit ? http_json_dump(plan->fit) : NULL;
  json_decref(es_json);
  sqlite3_stmt *qs = NULL, *qj = NULL, *qt = NULL, *qc = NULL, *qd = NULL;
  int began = 0;
  if (!spec_txt || (plan->early_stopping.rule != TD_ES_NONE && !es_txt) ||
      (plan->fit && !fit_txt)) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    goto out;
  }
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
    rc = sql_fail(db, err, "begin");
    goto out;
  }
  began = 1;
  if (max_queued > 0) {
    if ((rc = prep(db, "SELECT count(*) FROM jobs WHERE status='queued'", &qd, err))) goto out;
    long queued = sqlite3_step(qd) == SQLITE_ROW ? (long)sqlite3_column_int64(qd, 0) : -1;
    if (queued < 0) {
      rc = sql_fail(db, err, "queue depth");
      goto out;
    }
    if (queued + (long)plan->n_children > max_queued) {
      if (queue_full) *queue_full = 1;
      rc = td_err_set(err, TD_ELIMIT, NULL,
                      "the queue is too full for %zu more jobs (%ld queued, the cap is %ld); "
                      "retry later",
                      plan->n_children, queued, max_queued);
      goto out;
    }
  }
  if ((rc = prep(db,
                 "INSERT INTO sweeps(name,kind,mode,status,spec,n_children,max_concurrency,"
                 "early_stopping,fit_spec,created_at) VALUES(?1,?2,?3,'queued',?4,?5,?6,?7,?8," NOW
                 ")",
                 &qs, err)))
    goto out;
  sqlite3_bind_text(qs, 1, plan->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(qs, 2, plan->kind, -1, SQLITE_STATIC);
  sqlite3_bind_text(qs, 3, plan->random ? "random" : "grid", -1, SQLITE_STATIC);
  sqlite3_bind_text(qs, 4, spec_txt, -1, SQLITE_STATIC);
  sqlite3_bind_int64(qs, 5, (sqlite3_int64)plan->n_children);
  sqlite3_bind_int64(qs, 6, plan->max_concurrency);
  if (es_txt) sqlite3_bind_text(qs, 7, es_txt, -1, SQLITE_STATIC);
  else sqlite3_bind_null(qs, 7);
  if (fit_txt) sqlite3_bind_text(qs, 8, fit_txt, -1, SQLITE_STATIC);
  else sqlite3_bind_null(qs, 8);
  if (sqlite3_step(qs) != SQLITE_DONE) {
    rc = sql_fail(db, err, "insert sweep");
    goto out;
  }
  int64_t sid = sqlite3_last_insert_rowid(db);
  char tag[40], tags_json[48];
  snprintf(tag, sizeof tag, "sweep:%lld", (long long)sid);
  snprintf(tags_json, sizeof tags_json, "[\"%s\"]", tag);
  if ((rc = prep(db,
                 "INSERT INTO jobs(kind,name,status,params,tags,priority,sweep_id,attempt,"
                 "created_at,executor) VALUES(?1,?2,'queued',?3,?4,0,?5,1," NOW
                 ",COALESCE(?6,'local'))",
                 &qj, err)) ||
      (rc = prep(db, "INSERT INTO job_tags(tag,job_id) VALUES(?1,?2)", &qt, err)) ||
      (rc = prep(db,
                 "INSERT INTO sweep_children(sweep_id,idx,job_id,point,axis_values) "
                 "VALUES(?1,?2,?3,?4,?5)",
                 &qc, err)))
    goto out;
  for (size_t i = 0; i < plan->n_children; i++) {
    const td_sweep_child *ch = &plan->children[i];
    char name[CHILD_NAME_MAX + 1];
    child_name(name, sizeof name, plan->name, sid, ch->axis_values);
    char *params_txt = http_json_dump(ch->params), *av_txt = http_json_dump(ch->axis_values);
    if (!params_txt || !av_txt) {
      free(params_txt);
      free(av_txt);
      rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
      goto out;
    }
    sqlite3_bind_text(qj, 1, plan->kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(qj, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(qj, 3, params_txt, -1, SQLITE_STATIC);
    sqlite3_bind_text(qj, 4, tags_json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(qj, 5, sid);
    if (executor) sqlite3_bind_text(qj, 6, executor, -1, SQLITE_STATIC);
    int ok = sqlite3_step(qj) == SQLITE_DONE;
    sqlite3_reset(qj);
    int64_t jid = sqlite3_last_insert_rowid(db);
    if (ok) {
      sqlite3_bind_text(qt, 1, tag, -1, SQLITE_STATIC);
      sqlite3_bind_int64(qt, 2, jid);
      ok = sqlite3_step(qt) == SQLITE_DONE;
      sqlite3_reset(qt);
    }
    if (ok) {
      sqlite3_bind_int64(qc, 1, sid);
      sqlite3_bind_int64(qc, 2, (sqlite3_int64)i);
      sqlite3_bind_int64(qc, 3, jid);
      sqlite3_bind_int64(qc, 4, (sqlite3_int64)ch->point);
      sqlite3_bind_text(qc, 5, av_txt, -1, SQLITE_STATIC);
      ok = sqlite3_step(qc) == SQLITE_DONE;
      sqlite3_reset(qc);
    }
    free(params_txt);
    free(av_txt);
    if (!ok) {
      rc = sql_fail(db, err, "insert sweep child");
      goto out;
    }
  }
  if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    rc = sql_fail(db, err, "commit");
    goto out;
  }
  began = 0;
  *id = sid;
  if (n_children) *n_children = plan->n_children;
  log_emit(LOG_INFO, "sweep_created", "sweep=%lld kind=%s children=%zu max_concurrency=%ld",
           (long long)sid, plan->kind, plan->n_children, plan->max_concurrency);
out:
  sqlite3_finalize(qs);
  sqlite3_finalize(qj);
  sqlite3_finalize(qt);
  sqlite3_finalize(qc);
  sqlite3_finalize(qd);
  if (began) rollback(db);
  free(spec_txt);
  free(es_txt);
  free(fit_txt);
  td_sweep_plan_destroy(plan);
  return rc;
}

/* ---------------------------------------------------------------- the fit */

/* The fit over the succeeded children of sweep `id` as new JSON (never NULL unless out of
 * memory): td_fit_sweep's result plus the paths, the points with their job ids and
 * n_succeeded; or {law, paths, error, points, n_succeeded}. *n_succ (OUT) is the number of
 * succeeded children read. */
static json_t *compute_fit(sqlite3 *db, int64_t id, const char *fit_spec_txt, long *n_succ,
                           td_err *err) {
  *n_succ = 0;
  json_t *spec = json_loads(fit_spec_txt, 0, NULL);
  if (!json_is_object(spec)) {
    json_decref(spec);
    td_err_set(err, TD_EINTERNAL, NULL, "stored fit spec is not a JSON object");
    return NULL;
  }
  const char *law = json_string_value(json_object_get(spec, "law"));
  int chin = law && strcmp(law, "chinchilla") == 0;
  static const char *const k_xy[] = {"x", "y"}, *const k_ndl[] = {"N", "D", "L"};
  const char *const *keys = chin ? k_ndl : k_xy;
  size_t nk = chin ? 3 : 2;
  json_t *children = json_array(), *ids = json_array();
  sqlite3_stmt *q = NULL;
  if (prep(db,
           "SELECT id, params, summary FROM jobs WHERE sweep_id=?1 AND status='succeeded' "
           "ORDER BY id",
           &q, err) == 0) {
    sqlite3_bind_int64(q, 1, id);
    while (sqlite3_step(q) == SQLITE_ROW) {
      const char *p = col_text(q, 1), *sm = col_text(q, 2);
      json_t *c = json_object();
      json_object_set_new(c, "params", p ? json_loads(p, 0, NULL) : json_object());
      json_object_set_new(c, "summary", sm ? json_loads(sm, 0, NULL) : json_object());
      json_array_append_new(children, c);
      json_array_append_new(ids, json_integer(sqlite3_column_int64(q, 0)));
    }
    sqlite3_finalize(q);
  }
  *n_succ = (long)json_array_size(children);
  /* The points, as td_fit_sweep selects them (every path a finite number > 0). */
  json_t *points = json_array();
  for (size_t i = 0; i < json_array_size(children); i++) {
    const json_t *c = json_array_get(children, i);
    json_t *pt = json_object();
    int good = 1;
    for (size_t j = 0; j < nk && good; j++) {
      const json_t *v = td_param_get(c, json_string_value(json_object_get(spec, keys[j])));
      double x = json_number_value(v);
      good = json_is_number(v) && isfinite(x) && x > 0;
      if (good) json_object_set_new(pt, keys[j], json_real(x));
    }
    if (good) {
      json_object_set(pt, "job_id", json_array_get(ids, i));
      json_array_append_new(points, pt);
    } else {
      json_decref(pt);
    }
  }
  json_t *res = NULL;
  td_err fe;
  td_err_clear(&fe);
  int rc = td_fit_sweep(spec, children, &res, &fe);
  if (rc) {
    res = json_object();
    json_object_set_new(res, "law", json_string(law ? law : ""));
    json_object_set_new(res, "error", json_string(fe.msg[0] ? fe.msg : td_strerror(rc)));
  }
  for (size_t j = 0; j < nk; j++)
    json_object_set(res, keys[j], json_object_get(spec, keys[j]));
  json_object_set_new(res, "points", points);
  json_object_set_new(res, "n_succeeded", json_integer(*n_succ));
  json_decref(children);
  json_decref(ids);
  json_decref(spec);
  return res;
}

/* When refresh recomputes a stale fit: never (status only), by the worker rule, when a read
 * finds no cached fit or a finished sweep, or always. */
enum { FIT_NONE = 0, FIT_WORKER = 1, FIT_READ = 2, FIT_FORCE = 3 };

/* Refresh the status (persisted when it changed) and, when due under `policy`, the fit. */
static int refresh(sqlite3 *db, int64_t id, int policy, td_err *err) {
  sweep_row r;
  int rc = read_row(db, id, &r, err);
  if (rc) return rc;
  sweep_counts c;
  if ((rc = read_counts(db, id, &c, err))) {
    row_free(&r);
    return rc;
  }
  const char *st = status_of(&c, r.cancel_requested);
  int done = active_of(&c) == 0;
  if (strcmp(st, r.status) != 0 || (done && !r.finished_at) || (!done && r.finished_at)) {
    sqlite3_stmt *q;
    if (prep(db,
             "UPDATE sweeps SET status=?2, finished_at=CASE WHEN ?3 THEN coalesce(finished_at,"
             NOW ") ELSE NULL END WHERE id=?1",
             &q, err) == 0) {
      sqlite3_bind_int64(q, 1, id);
      sqlite3_bind_text(q, 2, st, -1, SQLITE_STATIC);
      sqlite3_bind_int(q, 3, done);
      if (sqlite3_step(q) != SQLITE_DONE) rc = sql_fail(db, err, "update sweep status");
      sqlite3_finalize(q);
    }
  }
  long n_succ = c.n[STORE_SUCCEEDED];
  int stale = r.fit_spec && n_succ != r.fit_n;
  int due = 0;
  if (stale) {
    if (policy == FIT_FORCE) due = 1;
    else if (policy == FIT_READ) due = !r.fit || done;
    else if (policy == FIT_WORKER)
      due = done || r.fit_n < 0 || n_succ <= FIT_EAGER_N || (n_succ - r.fit_n) * 10 >= n_succ;
  }
  if (!rc && due) {
    long seen = 0;
    json_t *fit = compute_fit(db, id, r.fit_spec, &seen, err);
    char *txt = fit ? http_json_dump(fit) : NULL;
    json_decref(fit);
    if (!txt) {
      rc = err && err->code ? err->code : TD_ENOMEM;
    } else {
      sqlite3_stmt *q;
      if (prep(db, "UPDATE sweeps SET fit=?2, fit_n=?3 WHERE id=?1 AND fit_n<?3", &q, err) == 0) {
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_text(q, 2, txt, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, seen);
        if (sqlite3_step(q) != SQLITE_DONE) rc = sql_fail(db, err, "update sweep fit");
        sqlite3_finalize(q);
      }
      free(txt);
    }
  }
  row_free(&r);
  return rc;
}

int sweeps_refresh(store *s, int64_t id, int force, td_err *err) {
  return refresh(store__db(s), id, force ? FIT_FORCE : FIT_WORKER, err);
}

/* ---------------------------------------------------------------- read */

/* The fit text reduced for lists: {law, params, derived, n_points, error}. */
static void fit_brief(http_buf *b, const char *fit_txt) {
  json_t *f = fit_txt ? json_loads(fit_txt, 0, NULL) : NULL;
  if (!json_is_object(f)) {
    json_decref(f);
    http_buf_str(b, "null");
    return;
  }
  json_t *o = json_object();
  const char *keep[] = {"law", "params", "derived", "n_points", "error", "x", "y"};
  for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
    json_t *v = json_object_get(f, keep[i]);
    if (v) json_object_set(o, keep[i], v);
  }
  http_buf_json_value(b, o);
  json_decref(o);
  json_decref(f);
}

static int write_children(sqlite3 *db, int64_t id, http_buf *b, td_err *err) {
  sqlite3_stmt *q;
  if (prep(db,
           "SELECT c.idx, c.point, c.axis_values, j.id, j.name, j.status, j.params, "
           "j.progress_done, j.progress_total, j.started_at, j.finished_at, j.error, j.summary "
           "FROM sweep_children c JOIN jobs j ON j.id=c.job_id WHERE c.sweep_id=?1 ORDER BY c.idx",
           &q, err))
    return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  http_buf_str(b, "[");
  int src, n = 0;
  while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    if (n++) http_buf_str(b, ",");
    const char *av = col_text(q, 2), *params = col_text(q, 6), *summary = col_text(q, 12);
    http_buf_printf(b, "{\"id\":%lld,\"idx\":%lld,\"point\":%lld,\"name\":",
                    (long long)sqlite3_column_int64(q, 3), (long long)sqlite3_column_int64(q, 0),
                    (long long)sqlite3_column_int64(q, 1));
    http_buf_json_str(b, col_text(q, 4));
    http_buf_str(b, ",\"status\":");
    http_buf_json_str(b, col_text(q, 5));
    /* axis_values, params and summary are JSON written by this server: spliced verbatim. */
    http_buf_str(b, ",\"axis_values\":");
    http_buf_str(b, av ? av : "{}");
    http_buf_str(b, ",\"params\":");
    http_buf_str(b, params ? params : "{}");
    http_buf_printf(b, ",\"progress\":{\"done\":%lld,\"total\":%lld},\"started_at\":",
                    (long long)sqlite3_column_int64(q, 7), (long long)sqlite3_column_int64(q, 8));
    http_buf_json_str(b, col_text(q, 9));
    http_buf_str(b, ",\"finished_at\":");
    http_buf_json_str(b, col_text(q, 10));
    http_buf_str(b, ",\"error\":");
    http_buf_json_str(b, col_text(q, 11));
    http_buf_str(b, ",\"summary\":");
    http_buf_str(b, summary ? summary : "null");
    http_buf_str(b, "}");
  }
  sqlite3_finalize(q);
  http_buf_str(b, "]");
  return src == SQLITE_DONE ? 0 : sql_fail(db, err, "sweep children");
}

/* Append sweep `id` (read in one read transaction). brief: no children, reduced fit. */
static int write_sweep(sqlite3 *db, int64_t id, int with_children, int brief, http_buf *b,
                       td_err *err) {
  if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return sql_fail(db, err, "begin");
  sweep_row r;
  sweep_counts c;
  int rc = read_row(db, id, &r, err);
  if (rc) {
    rollback(db);
    return rc;
  }
  if ((rc = read_counts(db, id, &c, err))) goto out;
  json_t *spec = json_loads(r.spec, 0, NULL);
  http_buf_printf(b, "{\"id\":%lld,\"name\":", (long long)r.id);
  http_buf_json_str(b, r.name);
  http_buf_str(b, ",\"kind\":");
  http_buf_json_str(b, r.kind);
  http_buf_str(b, ",\"mode\":");
  http_buf_json_str(b, r.mode);
  http_buf_str(b, ",\"status\":");
  http_buf_json_str(b, status_of(&c, r.cancel_requested));
  http_buf_str(b, ",\"created_at\":");
  http_buf_json_str(b, r.created_at);
  http_buf_str(b, ",\"finished_at\":");
  http_buf_json_str(b, active_of(&c) == 0 ? r.finished_at : NULL);
  http_buf_printf(b, ",\"n_children\":%ld,\"max_concurrency\":%ld,\"cancel_requested\":%s",
                  r.n_children, r.max_concurrency, r.cancel_requested ? "true" : "false");
  http_buf_str(b, ",\"axes\":");
  json_t *axes = json_object_get(spec, "axes");
  if (axes) http_buf_json_value(b, axes);
  else http_buf_str(b, "{}");
  http_buf_str(b, ",\"early_stopping\":");
  http_buf_str(b, r.early_stopping ? r.early_stopping : "null");
  if (!brief) {
    http_buf_str(b, ",\"spec\":");
    http_buf_str(b, r.spec);
  }
  http_buf_str(b, ",\"counts\":");
  counts_json(b, &c);
  http_buf_str(b, ",\"fit_spec\":");
  http_buf_str(b, r.fit_spec ? r.fit_spec : "null");
  http_buf_str(b, ",\"fit\":");
  if (brief) fit_brief(b, r.fit);
  else http_buf_str(b, r.fit ? r.fit : "null");
  json_decref(spec);
  if (with_children) {
    http_buf_str(b, ",\"children\":");
    rc = write_children(db, id, b, err);
  }
  http_buf_str(b, "}");
out:
  rollback(db); /* ends the read transaction */
  row_free(&r);
  return rc;
}

int sweeps_get_json(store *s, int64_t id, int with_children, http_buf *b, td_err *err) {
  sqlite3 *db = store__db(s);
  int rc = refresh(db, id, FIT_READ, err);
  if (rc) return rc;
  return write_sweep(db, id, with_children, 0, b, err);
}

int sweeps_list_json(store *s, int64_t before_id, long limit, http_buf *b, td_err *err) {
  if (limit < 1 || limit > 1000)
    return td_err_set(err, TD_EINVAL, "limit", "limit must be within 1..1000");
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  if (prep(db, "SELECT id FROM sweeps WHERE ?1<=0 OR id<?1 ORDER BY id DESC LIMIT ?2", &q, err))
    return TD_EIO;
  sqlite3_bind_int64(q, 1, before_id);
  sqlite3_bind_int64(q, 2, limit + 1);
  int64_t *ids = malloc((size_t)(limit + 1) * sizeof *ids);
  long n = 0;
  int src;
  while (ids && (src = sqlite3_step(q)) == SQLITE_ROW) ids[n++] = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  if (!ids) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  int rc = 0;
  http_buf_str(b, "{\"sweeps\":[");
  long shown = n > limit ? limit : n;
  for (long i = 0; !rc && i < shown; i++) {
    if (i) http_buf_str(b, ",");
    td_err e;
    td_err_clear(&e);
    refresh(db, ids[i], FIT_NONE, &e);
    rc = write_sweep(db, ids[i], 0, 1, b, err);
  }
  if (!rc) {
    if (n > limit) http_buf_printf(b, "],\"next_cursor\":\"%lld\"}", (long long)ids[shown - 1]);
    else http_buf_str(b, "],\"next_cursor\":null}");
  }
  free(ids);
  return rc;
}

/* ---------------------------------------------------------------- cancel */

int sweeps_cancel(store *s, int64_t id, sweeps_job_fn running_fn, void *ctx, long *n_cancelled,
                  long *n_running, td_err *err) {
  if (n_cancelled) *n_cancelled = 0;
  if (n_running) *n_running = 0;
  sqlite3 *db = store__db(s);
  sweep_row r;
  int rc = read_row(db, id, &r, err);
  if (rc) return rc;
  row_free(&r);
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return sql_fail(db, err, "begin");
  sweep_counts c;
  int64_t *running = NULL;
  long nr = 0, nc = 0;
  sqlite3_stmt *q = NULL;
  if ((rc = read_counts(db, id, &c, err))) goto fail;
  if (active_of(&c) == 0) {
    rc = td_err_set(err, TD_ECONFLICT, NULL, "sweep %lld has already finished", (long long)id);
    goto fail;
  }
  if ((rc = prep(db,
                 "UPDATE sweeps SET cancel_requested=1, status='cancelled' WHERE id=?1", &q,
                 err)))
    goto fail;
  sqlite3_bind_int64(q, 1, id);
  if (sqlite3_step(q) != SQLITE_DONE) rc = sql_fail(db, err, "cancel sweep");
  sqlite3_finalize(q);
  q = NULL;
  if (rc) goto fail;
  if ((rc = prep(db,
                 "UPDATE jobs SET status='cancelled', finished_at=" NOW
                 ", error='cancelled with its sweep while queued' "
                 "WHERE sweep_id=?1 AND status='queued'",
                 &q, err)))
    goto fail;
  sqlite3_bind_int64(q, 1, id);
  if (sqlite3_step(q) != SQLITE_DONE) rc = sql_fail(db, err, "cancel sweep children");
  else nc = sqlite3_changes(db);
  sqlite3_finalize(q);
  q = NULL;
  if (rc) goto fail;
  if ((rc = prep(db, "SELECT id FROM jobs WHERE sweep_id=?1 AND status='running'", &q, err)))
    goto fail;
  sqlite3_bind_int64(q, 1, id);
  running = malloc((size_t)(c.n[STORE_RUNNING] + 1) * sizeof *running);
  while (running && sqlite3_step(q) == SQLITE_ROW && nr <= c.n[STORE_RUNNING])
    running[nr++] = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  q = NULL;
  if (!running) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    goto fail;
  }
  if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    rc = sql_fail(db, err, "commit");
    goto fail;
  }
  for (long i = 0; i < nr; i++)
    if (running_fn) running_fn(ctx, running[i]);
  free(running);
  if (n_cancelled) *n_cancelled = nc;
  if (n_running) *n_running = nr;
  log_emit(LOG_INFO, "sweep_cancelled", "sweep=%lld queued_cancelled=%ld running_signalled=%ld",
           (long long)id, nc, nr);
  td_err e;
  td_err_clear(&e);
  refresh(db, id, FIT_WORKER, &e);
  return 0;
fail:
  sqlite3_finalize(q);
  rollback(db);
  free(running);
  return rc;
}

/* ---------------------------------------------------------------- worker hooks */

typedef struct es_sib {
  int64_t id;
  long upto;   /* median: the cached sums cover steps <= upto (LONG_MIN: none) */
  double sum;  /* of the finite and infinite values */
  long cnt, nans;
} es_sib;

struct sweeps_hook {
  sqlite3 *db;
  int64_t job_id, sweep_id;
  td_es_config es;
  int64_t key_id;          /* metric_keys id of es.metric; 0 until it exists */
  long prev_step, last_step;
  double best;             /* the best value so far (by the rule's mode), NaN if none */
  long n_points;
  long next_check;         /* median */
  long next_rung;          /* asha; LONG_MAX: no more rungs */
  int pruned;
  char reason[256];
  es_sib *sibs;
  size_t n_sibs, cap_sibs;
  sqlite3_stmt *q_key, *q_sibs, *q_reached, *q_range, *q_rung;
};

static double es_score(const td_es_config *es, double v) {
  if (isnan(v)) return INFINITY;
  return es->maximize ? -v : v;
}

int sweeps_hook_begin(store *s, int64_t job_id, sweeps_hook **out, td_err *err) {
  *out = NULL;
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  if (prep(db,
           "SELECT j.sweep_id, w.early_stopping FROM jobs j JOIN sweeps w ON w.id=j.sweep_id "
           "WHERE j.id=?1",
           &q, err))
    return TD_EIO;
  sqlite3_bind_int64(q, 1, job_id);
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_ROW) {
    sweeps_hook *h = calloc(1, sizeof *h);
    if (!h) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    } else {
      h->db = db;
      h->job_id = job_id;
      h->sweep_id = sqlite3_column_int64(q, 0);
      h->prev_step = h->last_step = LONG_MIN;
      h->best = NAN;
      h->next_check = LONG_MIN;
      const char *es = col_text(q, 1);
      json_t *j = es ? json_loads(es, 0, NULL) : NULL;
      td_err pe;
      if (td_es_parse(j, &h->es, &pe) != 0) h->es.rule = TD_ES_NONE;
      json_decref(j);
      if (h->es.rule == TD_ES_MEDIAN) h->next_check = h->es.grace_steps;
      h->next_rung = h->es.rule == TD_ES_ASHA ? h->es.min_steps : LONG_MAX;
      if (h->es.rule == TD_ES_ASHA && h->es.max_steps > 0 && h->next_rung >= h->es.max_steps)
        h->next_rung = LONG_MAX;
      *out = h;
    }
  } else if (src != SQLITE_DONE) {
    rc = sql_fail(db, err, "sweep of job");
  }
  sqlite3_finalize(q);
  return rc;
}

static int hook_prep(sweeps_hook *h, sqlite3_stmt **q, const char *sql) {
  if (*q) {
    sqlite3_reset(*q);
    sqlite3_clear_bindings(*q);
    return 0;
  }
  return sqlite3_prepare_v3(h->db, sql, -1, SQLITE_PREPARE_PERSISTENT, q, NULL) == SQLITE_OK
             ? 0
             : -1;
}

/* The metric's key id (0 while no job has reported it). */
static int64_t hook_key(sweeps_hook *h) {
  if (h->key_id) return h->key_id;
  if (hook_prep(h, &h->q_key, "SELECT id FROM metric_keys WHERE name=?1")) return 0;
  sqlite3_bind_text(h->q_key, 1, h->es.metric, -1, SQLITE_STATIC);
  if (sqlite3_step(h->q_key) == SQLITE_ROW) h->key_id = sqlite3_column_int64(h->q_key, 0);
  sqlite3_reset(h->q_key);
  return h->key_id;
}

static es_sib *hook_sib(sweeps_hook *h, int64_t id) {
  for (size_t i = 0; i < h->n_sibs; i++)
    if (h->sibs[i].id == id) return &h->sibs[i];
  if (h->n_sibs == h->cap_sibs) {
    size_t nc = h->cap_sibs ? 2 * h->cap_sibs : 16;
    es_sib *ns = realloc(h->sibs, nc * sizeof *ns);
    if (!ns) return NULL;
    h->sibs = ns;
    h->cap_sibs = nc;
  }
  es_sib *sb = &h->sibs[h->n_sibs++];
  memset(sb, 0, sizeof *sb);
  sb->id = id;
  sb->upto = LONG_MIN;
  return sb;
}

/* Fill ids (OUT, malloc'd) with the siblings that have started (they may have points). */
static size_t hook_siblings(sweeps_hook *h, int64_t **ids) {
  *ids = NULL;
  if (hook_prep(h, &h->q_sibs,
                "SELECT id FROM jobs WHERE sweep_id=?1 AND id<>?2 AND status<>'queued'"))
    return 0;
  sqlite3_bind_int64(h->q_sibs, 1, h->sweep_id);
  sqlite3_bind_int64(h->q_sibs, 2, h->job_id);
  size_t n = 0, cap = 0;
  while (sqlite3_step(h->q_sibs) == SQLITE_ROW) {
    if (n == cap) {
      cap = cap ? 2 * cap : 32;
      int64_t *ni = realloc(*ids, cap * sizeof *ni);
      if (!ni) break;
      *ids = ni;
    }
    (*ids)[n++] = sqlite3_column_int64(h->q_sibs, 0);
  }
  sqlite3_reset(h->q_sibs);
  return n;
}

/* median: the others' running averages at step t, cached and extended incrementally (a
 * sibling that has a point at or beyond t has committed every point up to t, since a job's
 * points are committed in step order). */
static void check_median(sweeps_hook *h, long t) {
  int64_t key = hook_key(h);
  if (!key) return;
  int64_t *ids = NULL;
  size_t n = hook_siblings(h, &ids);
  long *steps = malloc((n + 1) * sizeof *steps);
  double *vals = malloc((n + 1) * sizeof *vals);
  td_es_curve *curves = malloc((n + 1) * sizeof *curves);
  size_t m = 0;
  if (!steps || !vals || !curves ||
      hook_prep(h, &h->q_reached,
                "SELECT 1 FROM metrics WHERE job_id=?1 AND key_id=?2 AND step>=?3 LIMIT 1") ||
      hook_prep(h, &h->q_range,
                "SELECT count(*), total(value), sum(value IS NULL) FROM metrics "
                "WHERE job_id=?1 AND key_id=?2 AND step>?3 AND step<=?4"))
    goto out;
  for (size_t i = 0; i < n; i++) {
    sqlite3_reset(h->q_reached);
    sqlite3_bind_int64(h->q_reached, 1, ids[i]);
    sqlite3_bind_int64(h->q_reached, 2, key);
    sqlite3_bind_int64(h->q_reached, 3, t);
    int reached = sqlite3_step(h->q_reached) == SQLITE_ROW;
    sqlite3_reset(h->q_reached);
    if (!reached) continue;
    es_sib *sb = hook_sib(h, ids[i]);
    if (!sb) break;
    if (sb->upto < t) {
      sqlite3_reset(h->q_range);
      sqlite3_bind_int64(h->q_range, 1, ids[i]);
      sqlite3_bind_int64(h->q_range, 2, key);
      sqlite3_bind_int64(h->q_range, 3, sb->upto);
      sqlite3_bind_int64(h->q_range, 4, t);
      if (sqlite3_step(h->q_range) == SQLITE_ROW) {
        sb->cnt += (long)sqlite3_column_int64(h->q_range, 0);
        sb->sum += sqlite3_column_double(h->q_range, 1);
        sb->nans += (long)sqlite3_column_int64(h->q_range, 2);
        sb->upto = t;
      }
      sqlite3_reset(h->q_range);
    }
    if (sb->cnt == 0) continue;
    /* The rule averages the values at steps <= t; one point at t with that average (NaN if
     * any value was NaN: the worst) gives it the same running average. */
    steps[m] = t;
    vals[m] = sb->nans ? NAN : sb->sum / (double)(sb->cnt - sb->nans);
    curves[m] = (td_es_curve){.step = &steps[m], .value = &vals[m], .n = 1};
    m++;
  }
  long self_step = t;
  double self_val = h->best;
  td_es_curve self = {.step = &self_step, .value = &self_val, .n = 1};
  td_es_decision d;
  td_err e;
  if (td_es_median_decide(&h->es, &self, curves, m, &d, &e) == 0 && d.prune) {
    h->pruned = 1;
    snprintf(h->reason, sizeof h->reason, "%s", d.reason);
  }
out:
  free(ids);
  free(steps);
  free(vals);
  free(curves);
}

/* asha: the others' values at every rung crossed by this point (the first point at or beyond
 * each rung), then the rule. */
static void check_asha(sweeps_hook *h, long prev, long step, double value) {
  long rungs[64];
  size_t nr = 0;
  for (long r = h->es.min_steps; r <= step && nr < 64;) {
    if (h->es.max_steps > 0 && r >= h->es.max_steps) break;
    if (r > prev) rungs[nr++] = r;
    if (r > LONG_MAX / h->es.eta) break;
    r *= h->es.eta;
  }
  int64_t key = hook_key(h);
  int64_t *ids = NULL;
  size_t n = key ? hook_siblings(h, &ids) : 0;
  long *steps = n ? malloc(n * nr * sizeof *steps) : NULL;
  double *vals = n ? malloc(n * nr * sizeof *vals) : NULL;
  td_es_curve *curves = n ? calloc(n, sizeof *curves) : NULL;
  size_t m = 0;
  if (n && (!steps || !vals || !curves ||
            hook_prep(h, &h->q_rung,
                      "SELECT step, value FROM metrics WHERE job_id=?1 AND key_id=?2 AND "
                      "step>=?3 ORDER BY step LIMIT 1")))
    goto out;
  for (size_t i = 0; i < n; i++) {
    long *cs = steps + m * nr;
    double *cv = vals + m * nr;
    size_t k = 0;
    for (size_t ri = 0; ri < nr; ri++) {
      sqlite3_reset(h->q_rung);
      sqlite3_bind_int64(h->q_rung, 1, ids[i]);
      sqlite3_bind_int64(h->q_rung, 2, key);
      sqlite3_bind_int64(h->q_rung, 3, rungs[ri]);
      if (sqlite3_step(h->q_rung) == SQLITE_ROW) {
        long st = (long)sqlite3_column_int64(h->q_rung, 0);
        double v = sqlite3_column_type(h->q_rung, 1) == SQLITE_NULL
                       ? NAN
                       : sqlite3_column_double(h->q_rung, 1);
        if (k == 0 || st > cs[k - 1]) {
          cs[k] = st;
          cv[k] = v;
          k++;
        }
      }
      sqlite3_reset(h->q_rung);
    }
    if (k) curves[m++] = (td_es_curve){.step = cs, .value = cv, .n = k};
  }
  {
    long ss[2] = {prev, step};
    double sv[2] = {value, value};
    td_es_curve self = prev == LONG_MIN ? (td_es_curve){.step = &ss[1], .value = &sv[1], .n = 1}
                                        : (td_es_curve){.step = ss, .value = sv, .n = 2};
    td_es_decision d;
    td_err e;
    if (td_es_asha_decide(&h->es, &self, curves, m, &d, &e) == 0 && d.prune) {
      h->pruned = 1;
      snprintf(h->reason, sizeof h->reason, "%s", d.reason);
    }
  }
out:
  free(ids);
  free(steps);
  free(vals);
  free(curves);
}

void sweeps_hook_metric(sweeps_hook *h, const char *key, long step, double value) {
  if (!h || h->pruned || h->es.rule == TD_ES_NONE || strcmp(key, h->es.metric) != 0) return;
  if (h->last_step != LONG_MIN && step <= h->last_step) return; /* steps strictly increase */
  long prev = h->last_step;
  h->prev_step = prev;
  h->last_step = step;
  h->n_points++;
  if (isnan(h->best) || es_score(&h->es, value) < es_score(&h->es, h->best)) h->best = value;
  if (h->es.rule == TD_ES_MEDIAN && step >= h->next_check) {
    check_median(h, step);
    long grow = step / 20;
    h->next_check = step + (grow > 1 ? grow : 1);
  } else if (h->es.rule == TD_ES_ASHA && step >= h->next_rung) {
    check_asha(h, prev, step, value);
    long r = h->es.min_steps;
    while (r <= step && r <= LONG_MAX / h->es.eta) r *= h->es.eta;
    h->next_rung = (r <= step || (h->es.max_steps > 0 && r >= h->es.max_steps)) ? LONG_MAX : r;
  }
  if (h->pruned)
    log_emit(LOG_INFO, "job_pruned", "job=%lld sweep=%lld step=%ld", (long long)h->job_id,
             (long long)h->sweep_id, step);
}

int sweeps_hook_pruned(const sweeps_hook *h, const char **reason) {
  if (reason) *reason = h && h->pruned ? h->reason : NULL;
  return h && h->pruned;
}

void sweeps_hook_end(sweeps_hook *h, int requeued) {
  if (!h) return;
  if (!requeued) {
    td_err e;
    td_err_clear(&e);
    if (refresh(h->db, h->sweep_id, FIT_WORKER, &e))
      log_emit(LOG_WARN, "sweep_refresh_failed", "sweep=%lld code=%d", (long long)h->sweep_id,
               e.code);
  }
  sqlite3_finalize(h->q_key);
  sqlite3_finalize(h->q_sibs);
  sqlite3_finalize(h->q_reached);
  sqlite3_finalize(h->q_range);
  sqlite3_finalize(h->q_rung);
  free(h->sibs);
  free(h);
}
