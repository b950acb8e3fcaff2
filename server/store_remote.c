/* store_remote.c: SQLite side of runs that execute elsewhere: tokens, starts, heartbeats,
 * finishes and leases (migrations/0006_remote.sql). Statements are prepared per call: each
 * runs once per HTTP request or lease check, next to a transaction that costs far more. */
#include "store_remote.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtok.h"
#include "store_internal.h"

#define NOW "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
#define NOWF "strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ','now')" /* in a printf format */

static int fail(sqlite3 *db, td_err *err, const char *what) {
  int full = (sqlite3_extended_errcode(db) & 0xff) == SQLITE_FULL;
  return td_err_set(err, full ? TD_EFULL : TD_EIO, NULL, "%s: %s", what, sqlite3_errmsg(db));
}

static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **q, td_err *err) {
  if (sqlite3_prepare_v2(db, sql, -1, q, NULL) != SQLITE_OK) {
    *q = NULL;
    return fail(db, err, "prepare");
  }
  return 0;
}

static int begin(sqlite3 *db, td_err *err) {
  if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    return fail(db, err, "begin");
  return 0;
}

static int finish_tx(sqlite3 *db, int rc, td_err *err) {
  if (!rc && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    rc = fail(db, err, "commit");
  if (rc && !sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  return rc;
}

/* Why a conditional UPDATE of job `id` changed nothing: TD_ENOTFOUND or TD_ECONFLICT. */
static int no_change(store *s, int64_t id, const char *what, td_err *err) {
  int st = -1;
  int rc = store_job_status(s, id, &st, err);
  if (rc) return rc;
  return td_err_set(err, TD_ECONFLICT, NULL, "%s: job %lld is %s", what, (long long)id,
                    store_status_name(st));
}

int store_run_auth(store *s, int64_t id, const char *token_hash, store_run_state *out,
                   td_err *err) {
  memset(out, 0, sizeof *out);
  out->status = -1;
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db, "SELECT status, cancel_requested, executor, run_token_hash, sweep_id FROM jobs "
                    "WHERE id=?1", &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q);
  if (src == SQLITE_ROW) {
    out->status = store_status_parse((const char *)sqlite3_column_text(q, 0));
    out->cancel_requested = sqlite3_column_int(q, 1);
    const char *ex = (const char *)sqlite3_column_text(q, 2);
    snprintf(out->executor, sizeof out->executor, "%s", ex ? ex : "local");
    const char *h = (const char *)sqlite3_column_text(q, 3);
    out->token_ok = h && token_hash && runtok_equal(token_hash, h);
    out->sweep_id = sqlite3_column_int64(q, 4);
  } else if (src == SQLITE_DONE) {
    rc = td_err_set(err, TD_ENOTFOUND, NULL, "no job %lld", (long long)id);
  } else {
    rc = fail(db, err, "job");
  }
  sqlite3_finalize(q);
  return rc;
}

int store_run_create(store *s, const char *name, const char *params_json, const char *tags_json,
                     const char *const *tags, size_t n_tags, const char *token_hash, int64_t *id,
                     td_err *err) {
  *id = 0;
  sqlite3 *db = store__db(s);
  int rc = begin(db, err);
  if (rc) return rc;
  sqlite3_stmt *q = NULL;
  rc = prep(db,
            "INSERT INTO jobs(kind,name,status,params,tags,attempt,created_at,started_at,"
            "heartbeat_at,executor,run_token_hash) VALUES('external',?1,'running',?2,?3,1," NOW
            "," NOW "," NOW ",'external',?4)",
            &q, err);
  if (!rc) {
    sqlite3_bind_text(q, 1, name ? name : "", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, params_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, tags_json ? tags_json : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, token_hash, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE) rc = fail(db, err, "insert run");
    else *id = sqlite3_last_insert_rowid(db);
    sqlite3_finalize(q);
  }
  if (!rc && n_tags) {
    rc = prep(db, "INSERT OR IGNORE INTO job_tags(tag,job_id) VALUES(?1,?2)", &q, err);
    for (size_t i = 0; !rc && i < n_tags; i++) {
      sqlite3_bind_text(q, 1, tags[i], -1, SQLITE_STATIC);
      sqlite3_bind_int64(q, 2, *id);
      if (sqlite3_step(q) != SQLITE_DONE) rc = fail(db, err, "insert tag");
      sqlite3_reset(q);
    }
    sqlite3_finalize(q);
  }
  rc = finish_tx(db, rc, err);
  if (rc) *id = 0;
  return rc;
}

int store_run_start(store *s, int64_t id, const char *executor, const char *token_hash,
                    char **kind, char **params, long *attempt, td_err *err) {
  if (kind) *kind = NULL;
  if (params) *params = NULL;
  if (attempt) *attempt = 0;
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db,
                "UPDATE jobs SET status='running', started_at=" NOW ", heartbeat_at=" NOW
                ", finished_at=NULL, progress_done=0, progress_total=0, run_token_hash=?3 "
                "WHERE id=?1 AND status='queued' AND executor=?2 RETURNING kind, params, attempt",
                &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_text(q, 2, executor, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 3, token_hash, -1, SQLITE_STATIC);
  int src = sqlite3_step(q), found = 0;
  if (src == SQLITE_ROW) {
    found = 1;
    const char *k = (const char *)sqlite3_column_text(q, 0),
               *p = (const char *)sqlite3_column_text(q, 1);
    if (kind && !(*kind = strdup(k ? k : ""))) rc = TD_ENOMEM;
    if (params && !(*params = strdup(p ? p : "{}"))) rc = TD_ENOMEM;
    if (attempt) *attempt = (long)sqlite3_column_int64(q, 2);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    }
  }
  if (src != SQLITE_DONE) rc = fail(db, err, "start job");
  sqlite3_finalize(q);
  if (rc == TD_ENOMEM) td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  if (!rc && !found) {
    rc = no_change(s, id, "start", err);
    if (rc == TD_ECONFLICT) {
      store_run_state rs;
      if (!store_run_auth(s, id, NULL, &rs, NULL) && strcmp(rs.executor, executor) != 0)
        td_err_set(err, TD_ECONFLICT, NULL,
                   "job %lld has executor '%s'; only a queued job with executor '%s' can be "
                   "started here", (long long)id, rs.executor, executor);
    }
  }
  if (rc) {
    if (kind) free(*kind), *kind = NULL;
    if (params) free(*params), *params = NULL;
  }
  return rc;
}

int store_run_prepare(store *s, int64_t id, const char *executor, const char *token_hash,
                      td_err *err) {
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db,
                "UPDATE jobs SET run_token_hash=?3 WHERE id=?1 AND status='queued' AND "
                "executor=?2",
                &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_text(q, 2, executor, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 3, token_hash, -1, SQLITE_STATIC);
  if (sqlite3_step(q) != SQLITE_DONE) rc = fail(db, err, "prepare run");
  sqlite3_finalize(q);
  if (!rc && sqlite3_changes(db) == 0) rc = no_change(s, id, "prepare", err);
  return rc;
}

int store_run_begin(store *s, int64_t id, int *started, td_err *err) {
  *started = 0;
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db,
                "UPDATE jobs SET status='running', started_at=" NOW ", heartbeat_at=" NOW
                ", finished_at=NULL, progress_done=0, progress_total=0 WHERE id=?1 AND "
                "status='queued' AND executor<>'local' AND run_token_hash IS NOT NULL",
                &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  if (sqlite3_step(q) != SQLITE_DONE) rc = fail(db, err, "begin run");
  sqlite3_finalize(q);
  if (!rc) *started = sqlite3_changes(db) > 0;
  return rc;
}

int store_run_set_ref(store *s, int64_t id, const char *ref, td_err *err) {
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db, "UPDATE jobs SET executor_ref=?2 WHERE id=?1", &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  if (ref) sqlite3_bind_text(q, 2, ref, -1, SQLITE_STATIC);
  else sqlite3_bind_null(q, 2);
  if (sqlite3_step(q) != SQLITE_DONE) rc = fail(db, err, "set executor_ref");
  sqlite3_finalize(q);
  if (!rc && sqlite3_changes(db) == 0)
    rc = td_err_set(err, TD_ENOTFOUND, NULL, "no job %lld", (long long)id);
  return rc;
}

int store_run_resume(store *s, int64_t id, const char *token_hash, td_err *err) {
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db,
                "UPDATE jobs SET status='running', heartbeat_at=" NOW ", finished_at=NULL, "
                "error=NULL, run_token_hash=?2 WHERE id=?1 AND executor='external' AND "
                "status IN ('crashed','running')",
                &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_text(q, 2, token_hash, -1, SQLITE_STATIC);
  if (sqlite3_step(q) != SQLITE_DONE) rc = fail(db, err, "resume run");
  sqlite3_finalize(q);
  if (!rc && sqlite3_changes(db) == 0) {
    store_run_state rs;
    rc = store_run_auth(s, id, NULL, &rs, err);
    if (!rc)
      rc = strcmp(rs.executor, "external") != 0
               ? td_err_set(err, TD_ECONFLICT, NULL,
                            "job %lld is not an external run (POST /api/v1/runs); only those "
                            "can be resumed", (long long)id)
               : td_err_set(err, TD_ECONFLICT, NULL,
                            "run %lld is %s; only a crashed or running run can be resumed",
                            (long long)id, store_status_name(rs.status));
  }
  return rc;
}

int store_run_heartbeat(store *s, int64_t id, int has_progress, long done, long total,
                        int *cancel_requested, td_err *err) {
  *cancel_requested = 0;
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db,
                "UPDATE jobs SET heartbeat_at=" NOW ", progress_done=CASE WHEN ?2 THEN ?3 ELSE "
                "progress_done END, progress_total=CASE WHEN ?2 THEN ?4 ELSE progress_total END "
                "WHERE id=?1 AND status='running' RETURNING cancel_requested",
                &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_int(q, 2, has_progress != 0);
  sqlite3_bind_int64(q, 3, done);
  sqlite3_bind_int64(q, 4, total);
  int src = sqlite3_step(q), found = 0;
  if (src == SQLITE_ROW) {
    found = 1;
    *cancel_requested = sqlite3_column_int(q, 0);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    }
  }
  if (src != SQLITE_DONE) rc = fail(db, err, "heartbeat");
  sqlite3_finalize(q);
  if (!rc && !found) rc = no_change(s, id, "heartbeat", err);
  return rc;
}

int store_run_finish(store *s, int64_t id, int status, const char *error,
                     const char *summary_json, int *final, td_err *err) {
  *final = -1;
  if (status != STORE_SUCCEEDED && status != STORE_FAILED && status != STORE_DIVERGED)
    return td_err_set(err, TD_EINVAL, "status", "status must be succeeded, failed or diverged");
  sqlite3 *db = store__db(s);
  sqlite3_stmt *q;
  int rc = prep(db,
                "UPDATE jobs SET status=CASE WHEN cancel_requested<>0 THEN 'cancelled' ELSE ?2 "
                "END, finished_at=" NOW ", error=CASE WHEN cancel_requested<>0 THEN "
                "coalesce(?3,'cancelled') ELSE ?3 END, summary=?4 WHERE id=?1 AND "
                "status='running' RETURNING status",
                &q, err);
  if (rc) return rc;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_text(q, 2, store_status_name(status), -1, SQLITE_STATIC);
  if (error) sqlite3_bind_text(q, 3, error, -1, SQLITE_STATIC);
  else sqlite3_bind_null(q, 3);
  if (summary_json) sqlite3_bind_text(q, 4, summary_json, -1, SQLITE_STATIC);
  else sqlite3_bind_null(q, 4);
  int src = sqlite3_step(q), found = 0;
  if (src == SQLITE_ROW) {
    found = 1;
    *final = store_status_parse((const char *)sqlite3_column_text(q, 0));
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    }
  }
  if (src != SQLITE_DONE) rc = fail(db, err, "finish");
  sqlite3_finalize(q);
  if (rc || found) return rc;
  store_run_state rs;
  if ((rc = store_run_auth(s, id, NULL, &rs, err))) return rc;
  if (rs.status == STORE_CANCELLED && rs.cancel_requested) {
    *final = rs.status; /* the retry of a finish that was applied (as cancelled) */
    return 0;
  }
  if (rs.status == status) {
    /* the retry of the finish that was applied: the same status, summary and error; another
     * summary or error would not be stored, so it is a conflict, not a silent 200 */
    int same = 0;
    if ((rc = prep(db, "SELECT summary IS ?2 AND error IS ?3 FROM jobs WHERE id=?1", &q, err)))
      return rc;
    sqlite3_bind_int64(q, 1, id);
    if (summary_json) sqlite3_bind_text(q, 2, summary_json, -1, SQLITE_STATIC);
    else sqlite3_bind_null(q, 2);
    if (error) sqlite3_bind_text(q, 3, error, -1, SQLITE_STATIC);
    else sqlite3_bind_null(q, 3);
    if (sqlite3_step(q) == SQLITE_ROW) same = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (same) {
      *final = rs.status;
      return 0;
    }
    return td_err_set(err, TD_ECONFLICT, NULL,
                      "job %lld has already finished %s with another summary or error",
                      (long long)id, store_status_name(rs.status));
  }
  return td_err_set(err, TD_ECONFLICT, NULL, "job %lld is %s; it cannot finish as %s",
                    (long long)id, store_status_name(rs.status), store_status_name(status));
}

int store_lease_expire(store *s, double timeout_s, long max_attempts, unsigned which,
                       double now_offset_s, store_lease_counts *counts, td_err *err) {
  if (counts) memset(counts, 0, sizeof *counts);
  if (!(timeout_s > 0)) return td_err_set(err, TD_EINVAL, NULL, "timeout_s must be > 0");
  char ex_all[64] = "", ex_rs[64] = "";
  if (which & STORE_LEASE_REMOTE) strcat(ex_all, "'remote',"), strcat(ex_rs, "'remote',");
  if (which & STORE_LEASE_SLURM) strcat(ex_all, "'slurm',"), strcat(ex_rs, "'slurm',");
  if (which & STORE_LEASE_EXTERNAL) strcat(ex_all, "'external',");
  if (!ex_all[0]) return 0;
  ex_all[strlen(ex_all) - 1] = '\0';
  if (ex_rs[0]) ex_rs[strlen(ex_rs) - 1] = '\0';
  else strcpy(ex_rs, "''");
  /* ?1: the cut-off as a julian day: now + offset - timeout. */
#define LOST "status='running' AND executor IN (%s) AND " \
             "julianday(coalesce(heartbeat_at,started_at,created_at)) < ?1"
  char sql[4][640];
  snprintf(sql[0], sizeof sql[0],
           "UPDATE jobs SET status='cancelled', finished_at=" NOWF ", error='cancelled (the run "
           "stopped sending heartbeats after the cancellation)', run_token_hash=NULL WHERE "
           "cancel_requested<>0 AND " LOST, ex_all);
  snprintf(sql[1], sizeof sql[1],
           "UPDATE jobs SET status='crashed', finished_at=" NOWF ", error='crashed: no heartbeat "
           "since ' || coalesce(heartbeat_at,started_at) || ' (resume it with POST "
           "/api/v1/runs/' || id || '/resume)' WHERE " LOST,
           (which & STORE_LEASE_EXTERNAL) ? "'external'" : "''");
  snprintf(sql[2], sizeof sql[2],
           "UPDATE jobs SET status='failed', finished_at=" NOWF ", error='lost: no heartbeat "
           "since ' || coalesce(heartbeat_at,started_at) || ' in attempt ' || attempt || '; "
           "not retried again', run_token_hash=NULL WHERE attempt>=?2 AND " LOST, ex_rs);
  snprintf(sql[3], sizeof sql[3],
           "UPDATE jobs SET status='queued', attempt=attempt+1, started_at=NULL, "
           "heartbeat_at=NULL, progress_done=0, progress_total=0, run_token_hash=NULL, "
           "executor_ref=NULL WHERE " LOST, ex_rs);
#undef LOST
  sqlite3 *db = store__db(s);
  int rc = begin(db, err);
  if (rc) return rc;
  long n[4] = {0, 0, 0, 0};
  double jd = 0; /* the cut-off as a julian day: now + offset - timeout */
  sqlite3_stmt *q;
  if (!(rc = prep(db, "SELECT julianday('now') + ?1 / 86400.0", &q, err))) {
    sqlite3_bind_double(q, 1, now_offset_s - timeout_s);
    if (sqlite3_step(q) == SQLITE_ROW) jd = sqlite3_column_double(q, 0);
    else rc = fail(db, err, "clock");
    sqlite3_finalize(q);
  }
  for (int i = 0; !rc && i < 4; i++) {
    if ((rc = prep(db, sql[i], &q, err))) break;
    sqlite3_bind_double(q, 1, jd);
    if (sqlite3_bind_parameter_count(q) >= 2) sqlite3_bind_int64(q, 2, max_attempts);
    if (sqlite3_step(q) != SQLITE_DONE) rc = fail(db, err, "lease check");
    else n[i] = sqlite3_changes(db);
    sqlite3_finalize(q);
  }
  rc = finish_tx(db, rc, err);
  if (!rc && counts) {
    counts->cancelled = n[0];
    counts->crashed = n[1];
    counts->failed = n[2];
    counts->requeued = n[3];
  }
  return rc;
}
