/* store.c: SQLite persistence for jobs, metrics and artifacts.
 *
 * DESIGN. SQLite is the source of truth for the queue and for every metric point. Each thread
 * has its own connection (workers keep one; HTTP threads borrow one from a store_pool), opened
 * with SQLITE_OPEN_NOMUTEX, in WAL mode so that readers never block the writer, with a
 * busy_timeout so that concurrent writers wait instead of failing, and with every write
 * transaction started as BEGIN IMMEDIATE so that a reader never has to upgrade to a writer
 * (the upgrade is the case a busy handler cannot resolve). synchronous=NORMAL in WAL mode
 * keeps every committed transaction across a process crash (kill -9); only a power loss can
 * roll back the last ones. Statements are prepared once per connection and cached.
 * Metric points go through a per-job buffered writer (store_mw): one transaction per
 * batch_points points or batch_ms milliseconds; keys are interned in metric_keys so a point
 * row is (job_id, key_id, step, value) in a WITHOUT ROWID table keyed by all three, and
 * INSERT OR IGNORE makes a deterministic re-run after a crash add only the missing steps.
 * SQLite cannot store NaN (it becomes NULL), so NULL in metrics.value means NaN. */
#include "store.h"
#include "store_cache.h"
#include "store_internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

/* After a checkpoint has reset it, the WAL file is truncated to at most this many bytes
 * (PRAGMA journal_size_limit); wal_hook below keeps it near 16 MiB under continuous readers. */
#define STORE__WAL_LIMIT "67108864"
#define NOW "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
#define JOB_COLS                                                                          \
  "id,kind,name,status,params,tags,priority,attempt,sweep_id,progress_done,progress_total," \
  "cancel_requested,created_at,started_at,finished_at,error,summary,parent_job_id,"        \
  "parent_step,(SELECT group_concat(c.id) FROM jobs c WHERE c.parent_job_id=jobs.id),"   \
  "executor,executor_ref,heartbeat_at"

/* Merge rules of a pyramid bucket (see migrations/0004): the new minimum wins when it is
 * smaller, or a number against a NaN (NULL), or equal at an earlier step; the new maximum wins
 * when it is larger or a NaN against a number, or equal at an earlier step. */
#define PYR_MINC                                                                          \
  "((excluded.min_val IS NOT NULL AND (min_val IS NULL OR excluded.min_val<min_val)) OR "  \
  "(excluded.min_val IS min_val AND excluded.min_step<min_step))"
#define PYR_MAXC                                                                          \
  "((max_val IS NOT NULL AND (excluded.max_val IS NULL OR excluded.max_val>max_val)) OR "  \
  "(excluded.max_val IS max_val AND excluded.max_step<max_step))"

/* Every cached statement: enum name and SQL text. */
#define STORE__STMTS(X)                                                                    \
  X(BEGIN_IMM, "BEGIN IMMEDIATE")                                                          \
  X(BEGIN_READ, "BEGIN")                                                                   \
  X(COMMIT, "COMMIT")                                                                      \
  X(ROLLBACK, "ROLLBACK")                                                                  \
  X(JOB_INSERT,                                                                            \
    "INSERT INTO jobs(kind,name,status,params,tags,priority,sweep_id,attempt,created_at,"  \
    "parent_job_id,parent_step,executor) SELECT ?1,?2,'queued',?3,?4,?5,?6,1," NOW ",?8,?9," \
    "coalesce(?10,'local')"                                                                \
    " WHERE ?7 <= 0 OR (SELECT count(*) FROM jobs WHERE status='queued') < ?7")            \
  /* a no-op write to the parent row, so the job cache drops its copy (children changed) */  \
  X(JOB_TOUCH, "UPDATE jobs SET parent_step=parent_step WHERE id=?1")                     \
  X(CKPT_INSERT,                                                                           \
    "INSERT INTO checkpoints(created_at,size,tensors,bytes) VALUES(" NOW ",?1,?2,?3)")     \
  X(CKPT_GET, "SELECT id,created_at,size,tensors,CASE WHEN ?2 THEN bytes END "             \
              "FROM checkpoints WHERE id=?1")                                              \
  X(TAG_INSERT, "INSERT OR IGNORE INTO job_tags(tag,job_id) VALUES(?1,?2)")                \
  X(JOB_GET, "SELECT " JOB_COLS " FROM jobs WHERE id=?1")                                  \
  X(JOB_CLAIM,                                                                             \
    "UPDATE jobs SET status='running', started_at=" NOW ", finished_at=NULL, "             \
    "progress_done=0, progress_total=0 WHERE id=(SELECT j.id FROM jobs j WHERE "           \
    "j.status='queued' AND j.executor='local' AND (j.sweep_id IS NULL OR NOT EXISTS (SELECT 1 FROM sweeps w "     \
    "WHERE w.id=j.sweep_id AND w.max_concurrency>0 AND (SELECT count(*) FROM jobs r "      \
    "WHERE r.sweep_id=j.sweep_id AND r.status='running')>=w.max_concurrency)) "            \
    "ORDER BY j.priority DESC, j.id LIMIT 1) RETURNING id, kind, params, attempt, "            \
    "(julianday(started_at)-julianday(created_at))*86400.0")         \
  X(JOB_FINISH,                                                                            \
    "UPDATE jobs SET status=?2, finished_at=" NOW ", error=?3, summary=?4, "               \
    "progress_done=?5, progress_total=?6 WHERE id=?1 AND status='running'")                \
  X(JOB_REQUEUE,                                                                           \
    "UPDATE jobs SET status='queued', started_at=NULL, progress_done=0, progress_total=0 " \
    "WHERE id=?1 AND status='running'")                                                    \
  X(JOB_CANCEL_QUEUED,                                                                     \
    "UPDATE jobs SET status='cancelled', finished_at=" NOW ", error='cancelled while queued' " \
    "WHERE id=?1 AND status='queued'")                                                     \
  X(JOB_CANCEL_RUNNING,                                                                    \
    "UPDATE jobs SET cancel_requested=1 WHERE id=?1 AND status='running'")                 \
  X(JOB_STATUS, "SELECT status FROM jobs WHERE id=?1")                                     \
  X(JOB_COUNTS, "SELECT status, count(*) FROM jobs GROUP BY status")                       \
  X(QUEUE_DEPTH, "SELECT count(*) FROM jobs WHERE status='queued'")                        \
  X(RECOVER_CANCELLED,                                                                     \
    "UPDATE jobs SET status='cancelled', finished_at=" NOW ", "                            \
    "error='cancelled (the server stopped before the job noticed)' "                       \
    "WHERE status='running' AND executor='local' AND cancel_requested<>0")                                      \
  X(RECOVER_FAILED,                                                                        \
    "UPDATE jobs SET status='failed', finished_at=" NOW ", error='interrupted by ' || "    \
    "attempt || ' server crashes or kills; not retried again' "                            \
    "WHERE status='running' AND executor='local' AND attempt>=?1")                                              \
  X(RECOVER_REQUEUE,                                                                       \
    "UPDATE jobs SET status='queued', attempt=attempt+1, started_at=NULL, "                \
    "progress_done=0, progress_total=0 WHERE status='running' AND executor='local'")                            \
  X(JOB_PROGRESS, "UPDATE jobs SET progress_done=?2, progress_total=?3 WHERE id=?1")       \
  X(KEY_INSERT, "INSERT OR IGNORE INTO metric_keys(name) VALUES(?1)")                      \
  X(KEY_ID, "SELECT id FROM metric_keys WHERE name=?1")                                    \
  X(JOB_KEY_INSERT, "INSERT OR IGNORE INTO job_keys(job_id,key_id) VALUES(?1,?2)")         \
  X(METRIC_INSERT,                                                                         \
    "INSERT OR IGNORE INTO metrics(job_id,key_id,step,value) VALUES(?1,?2,?3,?4)")         \
  X(METRIC_KEYS,                                                                           \
    "SELECT k.name FROM job_keys j JOIN metric_keys k ON k.id=j.key_id "                   \
    "WHERE j.job_id=?1 ORDER BY k.name")                                                   \
  X(METRIC_SERIES,                                                                         \
    "SELECT step,value FROM metrics WHERE job_id=?1 AND key_id=?2 AND step>=?3 ORDER BY step") \
  X(PYR_UPSERT,                                                                            \
    "INSERT INTO metric_pyr(job_id,key_id,level,bucket,cnt,min_step,min_val,max_step,max_val) " \
    "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9) ON CONFLICT(job_id,key_id,level,bucket) DO UPDATE SET " \
    "cnt=cnt+excluded.cnt,"                                                                \
    "min_step=CASE WHEN " PYR_MINC " THEN excluded.min_step ELSE min_step END,"            \
    "min_val=CASE WHEN " PYR_MINC " THEN excluded.min_val ELSE min_val END,"               \
    "max_step=CASE WHEN " PYR_MAXC " THEN excluded.max_step ELSE max_step END,"            \
    "max_val=CASE WHEN " PYR_MAXC " THEN excluded.max_val ELSE max_val END")               \
  X(PYR_RANGE,                                                                             \
    "SELECT cnt,min_step,min_val,max_step,max_val FROM metric_pyr WHERE job_id=?1 AND "    \
    "key_id=?2 AND level=?3 AND bucket BETWEEN ?4 AND ?5 ORDER BY bucket")                 \
  X(METRIC_RANGE,                                                                          \
    "SELECT step,value FROM metrics WHERE job_id=?1 AND key_id=?2 AND step BETWEEN ?3 AND ?4 " \
    "ORDER BY step")                                                                       \
  X(METRIC_FIRST,                                                                          \
    "SELECT step,value FROM metrics WHERE job_id=?1 AND key_id=?2 AND step>=?3 "           \
    "ORDER BY step LIMIT 1")                                                               \
  X(METRIC_LAST,                                                                           \
    "SELECT step,value FROM metrics WHERE job_id=?1 AND key_id=?2 ORDER BY step DESC LIMIT 1") \
  X(METRIC_PAGE,                                                                           \
    "SELECT step,value FROM metrics WHERE job_id=?1 AND key_id=?2 AND step>=?3 "           \
    "ORDER BY step LIMIT ?4")                                                              \
  /* the ingestion guard (store_mw_guard): is the job running, and how many points it has, as \
   * the sum of its level-4 pyramid counts (one index seek per key) */                    \
  X(MW_GUARD,                                                                              \
    "SELECT status='running', (SELECT coalesce(sum((SELECT sum(p.cnt) FROM metric_pyr p "  \
    "WHERE p.job_id=?1 AND p.key_id=k.key_id AND p.level=4)),0) FROM job_keys k "          \
    "WHERE k.job_id=?1) FROM jobs WHERE id=?1")                                            \
  X(TIME_INSERT, "INSERT OR IGNORE INTO metric_times(job_id,step,t_ms) VALUES(?1,?2,?3)")  \
  X(TIME_LIST, "SELECT step,t_ms FROM metric_times WHERE job_id=?1 ORDER BY step")         \
  X(ART_PUT,                                                                               \
    "INSERT OR REPLACE INTO artifacts(job_id,name,content_type,data,created_at) "          \
    "VALUES(?1,?2,?3,?4," NOW ")")                                                         \
  X(ART_LIST,                                                                              \
    "SELECT name,content_type,length(data),created_at FROM artifacts WHERE job_id=?1 "     \
    "ORDER BY name")                                                                       \
  X(ART_GET, "SELECT name,content_type,data,created_at FROM artifacts WHERE job_id=?1 AND name=?2")

enum {
#define STORE__ENUM(name, sql) ST_##name,
  STORE__STMTS(STORE__ENUM)
#undef STORE__ENUM
      ST__COUNT
};

static const char *const stmt_sql[ST__COUNT] = {
#define STORE__SQL(name, sql) sql,
    STORE__STMTS(STORE__SQL)
#undef STORE__SQL
};

static const char *const status_names[STORE_N_STATUS] = {
#define STORE__ST_NAME(e, s) s,
    STORE_STATUSES(STORE__ST_NAME)
#undef STORE__ST_NAME
};

struct store {
  sqlite3 *db;
  sqlite3_stmt *st[ST__COUNT];
  long busy_ms; /* give up on a lock after about this long */
  long long wal_retry_ms; /* CLOCK_MONOTONIC ms before which wal_hook tries no TRUNCATE */
};

/* Busy handler: wait for a lock held by another connection with short sleeps (20 us, doubling
 * to 1 ms) instead of SQLite's default schedule (1, 2, 5, 10, 15, 20, 25, ... ms), so that the
 * threads of this process hand the write lock to each other within microseconds. Gives up
 * (SQLITE_BUSY) after busy_ms in total. */
static int busy_wait(void *arg, int count) {
  const store *s = arg;
  long us = count < 6 ? 20L << count : 1000;
  long slept = count < 6 ? 20L * ((1L << count) - 1) : 1260 + (long)(count - 6) * 1000;
  if (slept >= s->busy_ms * 1000) return 0;
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
  return 1;
}

/* store__db: the connection, for server modules with their own SQL (store_internal.h). */
sqlite3 *store__db(store *s) { return s->db; }

const char *store_status_name(int status) {
  return (status >= 0 && status < STORE_N_STATUS) ? status_names[status] : NULL;
}

int store_status_parse(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < STORE_N_STATUS; i++)
    if (strcmp(status_names[i], name) == 0) return i;
  return -1;
}

/* A failed statement: TD_EFULL when SQLite reports the disk or the database full
 * (SQLITE_FULL: the file system is out of space, or max_page_count is reached), else TD_EIO. */
static int sql_fail(store *s, td_err *err, const char *what) {
  int full = s && (sqlite3_extended_errcode(s->db) & 0xff) == SQLITE_FULL;
  return td_err_set(err, full ? TD_EFULL : TD_EIO, NULL, "%s: %s", what,
                    s ? sqlite3_errmsg(s->db) : "no database");
}

/* The code of the last failure on s: TD_EFULL for SQLITE_FULL, else TD_EIO. */
static int fail_code(store *s) {
  return (sqlite3_extended_errcode(s->db) & 0xff) == SQLITE_FULL ? TD_EFULL : TD_EIO;
}

/* The cached statement `id`, prepared on first use; NULL on failure (message in err). */
static sqlite3_stmt *stmt(store *s, int id, td_err *err) {
  if (!s->st[id]) {
    if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->st[id],
                           NULL) != SQLITE_OK) {
      sql_fail(s, err, "prepare");
      s->st[id] = NULL;
      return NULL;
    }
  }
  return s->st[id];
}

/* Run a cached statement that returns no rows (or whose rows are ignored). */
static int run_simple(store *s, int id, td_err *err) {
  sqlite3_stmt *q = stmt(s, id, err);
  if (!q) return TD_EIO;
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
  }
  sqlite3_reset(q);
  return rc == SQLITE_DONE ? 0 : sql_fail(s, err, stmt_sql[id]);
}

static int begin_write(store *s, td_err *err) { return run_simple(s, ST_BEGIN_IMM, err); }
static int commit(store *s, td_err *err) { return run_simple(s, ST_COMMIT, err); }
static void rollback(store *s) {
  if (!sqlite3_get_autocommit(s->db)) run_simple(s, ST_ROLLBACK, NULL);
}

/* The WAL bound, run after each commit on a connection with the WAL's frame count (from the
 * WAL hook). It adds the bound that SQLite's autocheckpoint (PASSIVE at 1000 frames) cannot
 * give under continuous readers: a passive checkpoint never lets the WAL start over while
 * some reader's snapshot overlaps the next commit, so with pollers always reading, the file
 * grows without end (measured: +8 MB a minute in the soak). Past STORE__WAL_TRUNCATE_FRAMES
 * frames (16 MiB of 4 KiB pages) it runs a TRUNCATE checkpoint, which holds new writers off,
 * waits for the current readers (each a short transaction) and cuts the file to zero; it waits
 * at most 200 ms, and after a failure tries again only 2 s later. */
#define STORE__WAL_TRUNCATE_FRAMES 4096
int store__wal_bound(store *s, sqlite3 *db, const char *name, int frames) {
  if (frames < STORE__WAL_TRUNCATE_FRAMES) return 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (now < s->wal_retry_ms) return 0;
  long saved = s->busy_ms;
  s->busy_ms = 200;
  int rc = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
  s->busy_ms = saved;
  if (rc == SQLITE_OK) return 1;
  s->wal_retry_ms = now + 2000;
  return 0;
}

/* The WAL hook of a connection without the job cache (store_cache.c installs its own, which
 * calls store__wal_bound too): the bound, else SQLite's autocheckpoint. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames) {
  if (store__wal_bound(arg, db, name, frames)) return SQLITE_OK;
  if (frames >= 1000) sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
  return SQLITE_OK;
}

int store_open(const char *path, int busy_timeout_ms, store **out, td_err *err) {
  *out = NULL;
  store *s = calloc(1, sizeof *s);
  if (!s) return td_err_set(err, TD_ENOMEM, NULL, "store_open: out of memory");
  int rc = sqlite3_open_v2(path, &s->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    td_err_set(err, TD_EIO, NULL, "cannot open database '%s': %s", path,
               s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    sqlite3_close(s->db);
    free(s);
    return TD_EIO;
  }
  s->busy_ms = busy_timeout_ms > 0 ? busy_timeout_ms : 5000;
  sqlite3_busy_handler(s->db, busy_wait, s);
  sqlite3_extended_result_codes(s->db, 1);
  char *msg = NULL;
  if (sqlite3_exec(s->db,
                   "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; "
                   "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; "
                   "PRAGMA journal_size_limit=" STORE__WAL_LIMIT ";",
                   NULL, NULL, &msg) != SQLITE_OK) {
    td_err_set(err, TD_EIO, NULL, "cannot configure database '%s': %s", path,
               msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(s->db);
    free(s);
    return TD_EIO;
  }
  sqlite3_wal_hook(s->db, wal_hook, s);
  const char *mp = getenv("TDLAB_MAX_PAGE_COUNT");
  if (mp && *mp) {
    char pr[64];
    snprintf(pr, sizeof pr, "PRAGMA max_page_count=%ld", strtol(mp, NULL, 10));
    sqlite3_exec(s->db, pr, NULL, NULL, NULL);
  }
  *out = s;
  return 0;
}

void store_close(store *s) {
  if (!s) return;
  for (int i = 0; i < ST__COUNT; i++) sqlite3_finalize(s->st[i]);
  sqlite3_close(s->db);
  free(s);
}

int store_exec(store *s, const char *sql, td_err *err) {
  char *msg = NULL;
  if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    td_err_set(err, TD_EIO, NULL, "%s", msg ? msg : sqlite3_errmsg(s->db));
    sqlite3_free(msg);
    return TD_EIO;
  }
  return 0;
}

/* ---------------------------------------------------------------- migrations */

static int is_migration_name(const char *n) {
  size_t len = strlen(n);
  if (len < 10) return 0; /* "0001_x.sql" */
  for (int i = 0; i < 4; i++)
    if (n[i] < '0' || n[i] > '9') return 0;
  return n[4] == '_' && strcmp(n + len - 4, ".sql") == 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *read_file(const char *path, td_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    td_err_set(err, TD_EIO, NULL, "cannot read %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (len + 1 < cap) break;
    char *nb = realloc(buf, cap * 2);
    if (!nb) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  int bad = ferror(f);
  fclose(f);
  if (!buf || bad) {
    free(buf);
    td_err_set(err, TD_EIO, NULL, "cannot read %s", path);
    return NULL;
  }
  buf[len] = '\0';
  return buf;
}

/* The first 0001_init.sql (commit 64190ac) had a status CHECK without 'pruned'; the file was
 * then edited in place to allow it, so a database made by that commit never got the change
 * and a sweep's early stopping would fail on it with a constraint error. Adding a value to a
 * CHECK changes no stored row, so the table's SQL text is rewritten in sqlite_schema by the
 * procedure of https://sqlite.org/lang_altertable.html#otheralter (writable_schema, then
 * schema_version + 1 so every connection reloads the schema), in one transaction. */
static int fix_pruned_check(store *s, td_err *err) {
  sqlite3_stmt *q = NULL;
  int need = 0;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT 1 FROM sqlite_schema WHERE type='table' AND name='jobs' AND "
                         "sql LIKE '%''cancelled'')%' AND sql NOT LIKE '%''pruned''%'",
                         -1, &q, NULL) != SQLITE_OK)
    return sql_fail(s, err, "schema check");
  need = sqlite3_step(q) == SQLITE_ROW;
  sqlite3_finalize(q);
  if (!need) return 0;
  int rc = begin_write(s, err);
  if (rc) return rc;
  int v = 0;
  if (sqlite3_prepare_v2(s->db, "PRAGMA schema_version", -1, &q, NULL) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW)
    v = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  char sql[512];
  snprintf(sql, sizeof sql,
           "PRAGMA writable_schema=ON;"
           "UPDATE sqlite_schema SET sql=replace(sql,'''cancelled'')','''cancelled'',''pruned'')')"
           " WHERE type='table' AND name='jobs';"
           "PRAGMA schema_version=%d; PRAGMA writable_schema=OFF;",
           v + 1);
  rc = store_exec(s, sql, err);
  if (!rc) rc = commit(s, err);
  if (rc) {
    rollback(s);
    store_exec(s, "PRAGMA writable_schema=OFF", NULL);
  }
  return rc;
}

int store_migrate(store *s, const char *dir, int *applied, int *version, td_err *err) {
  if (applied) *applied = 0;
  if (version) *version = 0;
  int rc = store_exec(s,
                      "CREATE TABLE IF NOT EXISTS schema_version ("
                      " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
                      err);
  if (rc) return rc;
  int current = 0;
  sqlite3_stmt *q = NULL;
  if (sqlite3_prepare_v2(s->db, "SELECT coalesce(max(version),0) FROM schema_version", -1, &q,
                         NULL) != SQLITE_OK)
    return sql_fail(s, err, "schema_version");
  if (sqlite3_step(q) == SQLITE_ROW) current = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);

  DIR *d = opendir(dir);
  if (!d) return td_err_set(err, TD_EIO, NULL, "cannot open migrations dir '%s': %s", dir,
                            strerror(errno));
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  rc = 0;
  while ((e = readdir(d))) {
    if (!is_migration_name(e->d_name)) continue;
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      char **nn = realloc(names, cap * sizeof *nn);
      if (!nn) {
        rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
        break;
      }
      names = nn;
    }
    if (!(names[n] = strdup(e->d_name))) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
      break;
    }
    n++;
  }
  closedir(d);
  if (!rc && n) qsort(names, n, sizeof *names, cmp_str);
  int last = 0, done = 0;
  /* Migrations run with foreign keys off, so that a migration may rebuild a table that others
   * reference (https://sqlite.org/lang_altertable.html#otheralter: DROP TABLE would otherwise
   * run the ON DELETE actions); PRAGMA foreign_key_check must find nothing before each
   * commit. The pragma is a no-op inside a transaction, hence here. */
  if (!rc) rc = store_exec(s, "PRAGMA foreign_keys=OFF", err);
  for (size_t i = 0; !rc && i < n; i++) {
    int v = atoi(names[i]);
    if (v == last) {
      rc = td_err_set(err, TD_ECONFLICT, NULL, "two migrations have version %d", v);
      break;
    }
    last = v;
    if (v <= current) continue;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    char *sql = read_file(path, err);
    if (!sql) {
      rc = TD_EIO;
      break;
    }
    if ((rc = begin_write(s, err)) == 0) {
      char *msg = NULL;
      sqlite3_stmt *fk = NULL;
      if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        rc = td_err_set(err, TD_EIO, NULL, "migration %s: %s", names[i], msg ? msg : "?");
        sqlite3_free(msg);
      } else if (sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &fk, NULL) !=
                     SQLITE_OK ||
                 sqlite3_step(fk) != SQLITE_DONE) {
        rc = td_err_set(err, TD_EIO, NULL, "migration %s leaves a foreign key violated",
                        names[i]);
        sqlite3_finalize(fk);
      } else {
        sqlite3_finalize(fk);
        sqlite3_stmt *ins = NULL;
        if (sqlite3_prepare_v2(s->db,
                               "INSERT INTO schema_version(version,name,applied_at) VALUES(?1,?2," NOW
                               ")",
                               -1, &ins, NULL) != SQLITE_OK) {
          rc = sql_fail(s, err, "schema_version");
        } else {
          sqlite3_bind_int(ins, 1, v);
          sqlite3_bind_text(ins, 2, names[i], -1, SQLITE_STATIC);
          if (sqlite3_step(ins) != SQLITE_DONE) rc = sql_fail(s, err, "schema_version");
          sqlite3_finalize(ins);
        }
      }
      if (!rc) rc = commit(s, err);
      if (rc) rollback(s);
    }
    free(sql);
    if (!rc) {
      done++;
      current = v;
    }
  }
  store_exec(s, "PRAGMA foreign_keys=ON", rc ? NULL : err);
  for (size_t i = 0; i < n; i++) free(names[i]);
  free(names);
  if (rc) return rc;
  if (current > last && last > 0)
    return td_err_set(err, TD_ECONFLICT, NULL,
                      "the database has schema version %d, newer than the migrations in '%s' "
                      "(%d); use a newer tdlab",
                      current, dir, last);
  if (n == 0 && current == 0)
    return td_err_set(err, TD_EIO, NULL, "no migrations found in '%s'", dir);
  if ((rc = fix_pruned_check(s, err))) return rc;
  if (applied) *applied = done;
  if (version) *version = current;
  return 0;
}

/* ---------------------------------------------------------------- backup */

int store_backup(const char *src, const char *out, long *pages, td_err *err) {
  if (pages) *pages = 0;
  if (access(out, F_OK) == 0)
    return td_err_set(err, TD_ECONFLICT, "out", "'%s' exists; backup writes a new file", out);
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", out) >= (int)sizeof tmp)
    return td_err_set(err, TD_EINVAL, "out", "path too long");
  unlink(tmp);
  sqlite3 *from = NULL, *to = NULL;
  int rc = 0;
  if (sqlite3_open_v2(src, &from, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
    rc = td_err_set(err, TD_EIO, "db", "cannot open '%s': %s", src,
                    from ? sqlite3_errmsg(from) : "out of memory");
    goto done;
  }
  sqlite3_busy_timeout(from, 10000);
  if (sqlite3_open_v2(tmp, &to, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
    rc = td_err_set(err, TD_EIO, "out", "cannot create '%s': %s", tmp,
                    to ? sqlite3_errmsg(to) : "out of memory");
    goto done;
  }
  sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
  if (!b) {
    rc = td_err_set(err, TD_EIO, NULL, "backup: %s", sqlite3_errmsg(to));
    goto done;
  }
  int st;
  for (int tries = 0; (st = sqlite3_backup_step(b, -1)) == SQLITE_BUSY || st == SQLITE_LOCKED;
       tries++) {
    if (tries == 200) break;
    sqlite3_sleep(50);
  }
  long n = sqlite3_backup_pagecount(b);
  sqlite3_backup_finish(b);
  if (st != SQLITE_DONE) {
    rc = td_err_set(err, TD_EIO, NULL, "backup of '%s': %s", src, sqlite3_errstr(st));
    goto done;
  }
  char *msg = NULL;
  sqlite3_stmt *q = NULL;
  if (sqlite3_exec(to, "PRAGMA journal_mode=DELETE", NULL, NULL, &msg) != SQLITE_OK ||
      sqlite3_prepare_v2(to, "PRAGMA quick_check", -1, &q, NULL) != SQLITE_OK ||
      sqlite3_step(q) != SQLITE_ROW || strcmp((const char *)sqlite3_column_text(q, 0), "ok")) {
    rc = td_err_set(err, TD_EIO, NULL, "backup copy failed its check: %s",
                    msg ? msg : sqlite3_errmsg(to));
    sqlite3_free(msg);
  }
  sqlite3_finalize(q);
  if (!rc && pages) *pages = n;
done:
  sqlite3_close(from);
  if (to && sqlite3_close(to) != SQLITE_OK && !rc)
    rc = td_err_set(err, TD_EIO, "out", "cannot close '%s'", tmp);
  if (!rc) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0)
      rc = td_err_set(err, TD_EIO, "out", "cannot sync '%s': %s", tmp, strerror(errno));
    if (fd >= 0) close(fd);
  }
  if (!rc && rename(tmp, out) != 0)
    rc = td_err_set(err, TD_EIO, "out", "cannot rename to '%s': %s", out, strerror(errno));
  if (rc) unlink(tmp);
  return rc;
}

/* ---------------------------------------------------------------- jobs */

static const char *col_text(sqlite3_stmt *q, int i) {
  return (const char *)sqlite3_column_text(q, i);
}

static void row_to_job(sqlite3_stmt *q, store_job *j) {
  j->id = sqlite3_column_int64(q, 0);
  j->kind = col_text(q, 1);
  j->name = col_text(q, 2);
  j->status = col_text(q, 3);
  j->params = col_text(q, 4);
  j->tags = col_text(q, 5);
  j->priority = (long)sqlite3_column_int64(q, 6);
  j->attempt = (long)sqlite3_column_int64(q, 7);
  j->sweep_id = sqlite3_column_int64(q, 8);
  j->progress_done = (long)sqlite3_column_int64(q, 9);
  j->progress_total = (long)sqlite3_column_int64(q, 10);
  j->cancel_requested = sqlite3_column_int(q, 11);
  j->created_at = col_text(q, 12);
  j->started_at = col_text(q, 13);
  j->finished_at = col_text(q, 14);
  j->error = col_text(q, 15);
  j->summary = col_text(q, 16);
  j->parent_job_id = sqlite3_column_int64(q, 17);
  j->parent_step = (long)sqlite3_column_int64(q, 18);
  j->children = col_text(q, 19);
  j->executor = col_text(q, 20);
  j->executor_ref = col_text(q, 21);
  j->heartbeat_at = col_text(q, 22);
  if (!j->executor) j->executor = "local";
  if (!j->name) j->name = "";
  if (!j->params) j->params = "{}";
  if (!j->tags) j->tags = "[]";
}

int store_job_insert(store *s, const store_new_job *job, long max_queued, int64_t *id,
                     td_err *err) {
  *id = 0;
  int rc = begin_write(s, err);
  if (rc) return rc;
  sqlite3_stmt *q = stmt(s, ST_JOB_INSERT, err);
  if (!q) {
    rollback(s);
    return TD_EIO;
  }
  sqlite3_bind_text(q, 1, job->kind, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 2, job->name ? job->name : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 3, job->params_json, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 4, job->tags_json ? job->tags_json : "[]", -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 5, job->priority);
  if (job->sweep_id > 0)
    sqlite3_bind_int64(q, 6, job->sweep_id);
  else
    sqlite3_bind_null(q, 6);
  sqlite3_bind_int64(q, 7, max_queued);
  if (job->parent_job_id > 0) {
    sqlite3_bind_int64(q, 8, job->parent_job_id);
    sqlite3_bind_int64(q, 9, job->parent_step);
  } else {
    sqlite3_bind_null(q, 8);
    sqlite3_bind_null(q, 9);
  }
  if (job->executor) sqlite3_bind_text(q, 10, job->executor, -1, SQLITE_STATIC);
  else sqlite3_bind_null(q, 10);
  int src = sqlite3_step(q);
  sqlite3_clear_bindings(q);
  sqlite3_reset(q);
  if (src != SQLITE_DONE) {
    rc = sql_fail(s, err, "insert job");
  } else if (sqlite3_changes(s->db) == 0) {
    rc = td_err_set(err, TD_ELIMIT, NULL, "the queue is full (%ld jobs queued); retry later",
                    max_queued);
  } else {
    *id = sqlite3_last_insert_rowid(s->db);
    sqlite3_stmt *t = stmt(s, ST_TAG_INSERT, err);
    if (!t) rc = TD_EIO;
    for (size_t i = 0; !rc && i < job->n_tags; i++) {
      sqlite3_bind_text(t, 1, job->tags[i], -1, SQLITE_STATIC);
      sqlite3_bind_int64(t, 2, *id);
      if (sqlite3_step(t) != SQLITE_DONE) rc = sql_fail(s, err, "insert tag");
      sqlite3_reset(t);
    }
    if (t) sqlite3_clear_bindings(t);
    if (!rc && job->parent_job_id > 0) {
      sqlite3_stmt *u = stmt(s, ST_JOB_TOUCH, err);
      if (!u) rc = TD_EIO;
      else {
        sqlite3_bind_int64(u, 1, job->parent_job_id);
        if (sqlite3_step(u) != SQLITE_DONE) rc = sql_fail(s, err, "touch parent job");
        sqlite3_reset(u);
      }
    }
  }
  if (!rc) rc = commit(s, err);
  if (rc) {
    rollback(s);
    *id = 0;
  }
  return rc;
}

int store_job_get(store *s, int64_t id, store_job_fn fn, void *ctx, td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_JOB_GET, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_ROW) {
    store_job j;
    row_to_job(q, &j);
    fn(ctx, &j);
  } else if (src == SQLITE_DONE) {
    rc = td_err_set(err, TD_ENOTFOUND, NULL, "no job %lld", (long long)id);
  } else {
    rc = sql_fail(s, err, "get job");
  }
  sqlite3_reset(q);
  return rc;
}

/* One keyset subquery of store_job_list: the ids of the jobs with status `st` (NULL: any)
 * that match the other filters, below the cursor ?4, newest first, at most ?5. It walks one
 * index in id order and stops after ?5 matches (migrations/0005_scale.sql lists the index
 * for each combination), so its cost does not depend on the depth or on the job count.
 * A filter of a later issue (the search, q=) is one more "AND ..." on the same walk. */
static int list_subquery(char *sql, size_t cap, const store_job_filter *f, const char *st) {
  if (f->tag) {
    int need_job = f->sweep_id > 0;
    return snprintf(sql, cap,
                    "SELECT pid FROM (SELECT t.job_id AS pid FROM job_tags t%s WHERE t.tag=?3"
                    "%s%s%s%s%s AND t.job_id<?4 ORDER BY t.job_id DESC LIMIT ?5)",
                    need_job ? " JOIN jobs j ON j.id=t.job_id" : "",
                    st ? " AND t.status='" : "", st ? st : "", st ? "'" : "",
                    f->kind ? " AND t.kind=?1" : "", need_job ? " AND j.sweep_id=?2" : "");
  }
  return snprintf(sql, cap,
                  "SELECT pid FROM (SELECT id AS pid FROM jobs WHERE id<?4%s%s%s%s%s"
                  " ORDER BY id DESC LIMIT ?5)",
                  st ? " AND status='" : "", st ? st : "", st ? "'" : "",
                  f->kind ? " AND kind=?1" : "", f->sweep_id > 0 ? " AND sweep_id=?2" : "");
}

int store_job_list(store *s, const store_job_filter *f, store_job_fn fn, void *ctx,
                   int64_t *next_cursor, td_err *err) {
  *next_cursor = 0;
  if (f->limit < 1 || f->limit > 1000)
    return td_err_set(err, TD_EINVAL, "limit", "limit must be within 1..1000");
  /* ids: the union of one keyset walk per requested status (each at most limit+1 ids), of
   * which the newest limit+1 are joined with their rows. */
  char sql[4096];
  size_t cap = sizeof sql;
  int len = snprintf(sql, cap, "SELECT " JOB_COLS " FROM (SELECT pid FROM (");
  unsigned mask = f->status_mask & ((1u << STORE_N_STATUS) - 1);
  if (mask == (1u << STORE_N_STATUS) - 1) mask = 0; /* every status: no condition */
  int first = 1;
  for (int i = 0; i < STORE_N_STATUS || (mask == 0 && first); i++) {
    if (mask && !(mask & (1u << i))) continue;
    if (!first) len += snprintf(sql + len, cap - len, " UNION ALL ");
    len += list_subquery(sql + len, cap - len, f, mask ? status_names[i] : NULL);
    first = 0;
    if (!mask) break;
  }
  snprintf(sql + len, cap - len,
           ") ORDER BY pid DESC LIMIT ?5) AS p CROSS JOIN jobs ON jobs.id=p.pid ORDER BY p.pid DESC");
  sqlite3_stmt *q = NULL;
  if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK)
    return sql_fail(s, err, "list jobs");
  if (f->kind) sqlite3_bind_text(q, 1, f->kind, -1, SQLITE_STATIC);
  if (f->sweep_id > 0) sqlite3_bind_int64(q, 2, f->sweep_id);
  if (f->tag) sqlite3_bind_text(q, 3, f->tag, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 4, f->before_id > 0 ? f->before_id : INT64_MAX);
  sqlite3_bind_int64(q, 5, f->limit + 1);
  int src, rc = 0;
  long n = 0;
  int64_t last = 0;
  while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    if (n == f->limit) {
      *next_cursor = last; /* there is at least one more */
      break;
    }
    store_job j;
    row_to_job(q, &j);
    fn(ctx, &j);
    last = j.id;
    n++;
  }
  if (src != SQLITE_ROW && src != SQLITE_DONE) rc = sql_fail(s, err, "list jobs");
  sqlite3_finalize(q);
  return rc;
}

int store_job_claim(store *s, store_claimed *job, int *found, td_err *err) {
  memset(job, 0, sizeof *job);
  *found = 0;
  sqlite3_stmt *q = stmt(s, ST_JOB_CLAIM, err);
  if (!q) return TD_EIO;
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_ROW) {
    job->id = sqlite3_column_int64(q, 0);
    const char *k = col_text(q, 1), *p = col_text(q, 2);
    job->kind = strdup(k ? k : "");
    job->params = strdup(p ? p : "{}");
    job->attempt = (long)sqlite3_column_int64(q, 3);
    job->wait_s = sqlite3_column_double(q, 4);
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    }
    if (src != SQLITE_DONE) rc = sql_fail(s, err, "claim job");
    else if (!job->kind || !job->params) rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    else *found = 1;
  } else if (src != SQLITE_DONE) {
    rc = sql_fail(s, err, "claim job");
  }
  sqlite3_reset(q);
  if (rc) store_claimed_free(job);
  return rc;
}

void store_claimed_free(store_claimed *job) {
  if (!job) return;
  free(job->kind);
  free(job->params);
  job->kind = job->params = NULL;
}

static int changes_or(store *s, int64_t id, td_err *err, const char *what) {
  if (sqlite3_changes(s->db) > 0) return 0;
  int st = -1;
  int rc = store_job_status(s, id, &st, err);
  if (rc) return rc;
  return td_err_set(err, TD_ECONFLICT, NULL, "%s: job %lld is %s", what, (long long)id,
                    store_status_name(st));
}

int store_job_finish(store *s, int64_t id, int status, const char *error,
                     const char *summary_json, long done, long total, td_err *err) {
  if (status < STORE_SUCCEEDED || status >= STORE_N_STATUS)
    return td_err_set(err, TD_EINVAL, NULL, "not a final status: %d", status);
  sqlite3_stmt *q = stmt(s, ST_JOB_FINISH, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_text(q, 2, status_names[status], -1, SQLITE_STATIC);
  if (error) sqlite3_bind_text(q, 3, error, -1, SQLITE_STATIC);
  else sqlite3_bind_null(q, 3);
  if (summary_json) sqlite3_bind_text(q, 4, summary_json, -1, SQLITE_STATIC);
  else sqlite3_bind_null(q, 4);
  sqlite3_bind_int64(q, 5, done);
  sqlite3_bind_int64(q, 6, total);
  int src = sqlite3_step(q);
  sqlite3_clear_bindings(q);
  sqlite3_reset(q);
  if (src != SQLITE_DONE) return sql_fail(s, err, "finish job");
  return changes_or(s, id, err, "finish");
}

int store_job_requeue(store *s, int64_t id, td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_JOB_REQUEUE, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q);
  sqlite3_reset(q);
  if (src != SQLITE_DONE) return sql_fail(s, err, "requeue job");
  return changes_or(s, id, err, "requeue");
}

static int update_by_id(store *s, int which, int64_t id, int *changed, td_err *err) {
  sqlite3_stmt *q = stmt(s, which, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q);
  sqlite3_reset(q);
  if (src != SQLITE_DONE) return sql_fail(s, err, "update job");
  *changed = sqlite3_changes(s->db) > 0;
  return 0;
}

int store_job_cancel(store *s, int64_t id, int *outcome, td_err *err) {
  *outcome = -1;
  int changed = 0, rc = update_by_id(s, ST_JOB_CANCEL_QUEUED, id, &changed, err);
  if (rc) return rc;
  if (changed) {
    *outcome = STORE_CANCELLED;
    return 0;
  }
  if ((rc = update_by_id(s, ST_JOB_CANCEL_RUNNING, id, &changed, err))) return rc;
  if (changed) {
    *outcome = STORE_RUNNING;
    return 0;
  }
  int st = -1;
  if ((rc = store_job_status(s, id, &st, err))) return rc;
  return td_err_set(err, TD_ECONFLICT, NULL, "job %lld has already finished (%s)",
                    (long long)id, store_status_name(st));
}

int store_recover(store *s, long max_attempts, long *requeued, long *failed, long *cancelled,
                  td_err *err) {
  long r = 0, f = 0, c = 0;
  int rc = begin_write(s, err);
  if (rc) return rc;
  if (!(rc = run_simple(s, ST_RECOVER_CANCELLED, err))) c = sqlite3_changes(s->db);
  if (!rc) {
    sqlite3_stmt *q = stmt(s, ST_RECOVER_FAILED, err);
    if (!q) {
      rc = TD_EIO;
    } else {
      sqlite3_bind_int64(q, 1, max_attempts);
      if (sqlite3_step(q) != SQLITE_DONE) rc = sql_fail(s, err, "recover");
      sqlite3_reset(q);
      if (!rc) f = sqlite3_changes(s->db);
    }
  }
  if (!rc && !(rc = run_simple(s, ST_RECOVER_REQUEUE, err))) r = sqlite3_changes(s->db);
  if (!rc) rc = commit(s, err);
  if (rc) {
    rollback(s);
    return rc;
  }
  if (requeued) *requeued = r;
  if (failed) *failed = f;
  if (cancelled) *cancelled = c;
  return 0;
}

int store_job_counts(store *s, long counts[STORE_N_STATUS], td_err *err) {
  for (int i = 0; i < STORE_N_STATUS; i++) counts[i] = 0;
  sqlite3_stmt *q = stmt(s, ST_JOB_COUNTS, err);
  if (!q) return TD_EIO;
  int src;
  while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    int st = store_status_parse(col_text(q, 0));
    if (st >= 0) counts[st] = (long)sqlite3_column_int64(q, 1);
  }
  sqlite3_reset(q);
  return src == SQLITE_DONE ? 0 : sql_fail(s, err, "count jobs");
}

int store_queue_depth(store *s, long *depth, td_err *err) {
  *depth = 0;
  sqlite3_stmt *q = stmt(s, ST_QUEUE_DEPTH, err);
  if (!q) return TD_EIO;
  int src = sqlite3_step(q);
  if (src == SQLITE_ROW) *depth = (long)sqlite3_column_int64(q, 0);
  sqlite3_reset(q);
  return src == SQLITE_ROW ? 0 : sql_fail(s, err, "queue depth");
}

int store_job_status(store *s, int64_t id, int *status, td_err *err) {
  *status = -1;
  sqlite3_stmt *q = stmt(s, ST_JOB_STATUS, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_ROW) *status = store_status_parse(col_text(q, 0));
  else if (src == SQLITE_DONE) rc = td_err_set(err, TD_ENOTFOUND, NULL, "no job %lld", (long long)id);
  else rc = sql_fail(s, err, "job status");
  sqlite3_reset(q);
  return rc;
}

/* ---------------------------------------------------------------- metric writer */

/* The pyramid (migrations/0004): levels 1..PYR_LEVELS, bucket width 32^level steps. */
#define PYR_LEVELS 4
#define PYR_SHIFT 5

/* One open pyramid bucket of a key during a flush: count, least and greatest point. */
typedef struct pyr_acc {
  int have;
  long bucket, cnt, smin, smax;
  double vmin, vmax;
} pyr_acc;

typedef struct mw_key {
  char *name;
  int64_t db_id;    /* 0: not yet interned in this database */
  int fresh;        /* interned inside the open transaction (undo on rollback) */
  pyr_acc acc[PYR_LEVELS]; /* open buckets of the flush in progress (empty between flushes) */
} mw_key;

typedef struct mw_point {
  uint32_t key;
  long step;
  double value;
} mw_point;

struct store_mw {
  store *s;
  int64_t job;
  size_t batch_points;
  long batch_ms;
  mw_key *keys;
  size_t n_keys, cap_keys;
  uint32_t *slots; /* open addressing: key index + 1, 0 empty; size n_slots (power of two) */
  size_t n_slots;
  mw_point *pts;
  size_t n_pts, cap_pts;
  long prog_done, prog_total;
  int prog_dirty;
  long long last_flush_ms;
  uint64_t written;
  uint64_t inserted;   /* points that were new (not ignored duplicates) */
  int guard;           /* store_mw_guard was called */
  double guard_max;    /* its max_points (0: no cap) */
  int have_first;      /* the first point's clock anchor is pending */
  long first_step;
  long long first_t_ms;
};

/* Unix time in milliseconds (the clock anchors of metric_times). */
static long long wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* floor(a / 2^sh) for any sign of a (C's / truncates towards zero). */
static long floor_shift(long a, int sh) {
  long w = 1L << sh;
  return a >= 0 ? a / w : -((-(a + 1)) / w) - 1;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* FNV-1a, 64 bit (Fowler, Noll, Vo). */
static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

int store_valid_artifact_name(const char *n) {
  size_t i = 0;
  for (; n[i]; i++) {
    char ch = n[i];
    if (i >= 128) return 0;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '.' || ch == '_' || ch == '-'))
      return 0;
  }
  return i > 0 && n[0] != '.';
}

int store_valid_key(const char *k) {
  size_t n = 0;
  for (; k[n]; n++) {
    unsigned char c = (unsigned char)k[n];
    if (c < 0x21 || c > 0x7e || c == '"' || c == ',' || c == '\\') return 0;
    if (n >= 128) return 0;
  }
  return n > 0;
}

int store_mw_create(store *s, int64_t job_id, size_t batch_points, long batch_ms,
                    store_mw **out, td_err *err) {
  *out = NULL;
  store_mw *w = calloc(1, sizeof *w);
  if (!w) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  w->s = s;
  w->job = job_id;
  w->batch_points = batch_points ? batch_points : 1024;
  w->batch_ms = batch_ms > 0 ? batch_ms : 250;
  w->n_slots = 64;
  w->slots = calloc(w->n_slots, sizeof *w->slots);
  w->cap_pts = w->batch_points;
  w->pts = malloc(w->cap_pts * sizeof *w->pts);
  if (!w->slots || !w->pts) {
    store_mw_destroy(w);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  w->last_flush_ms = now_ms();
  *out = w;
  return 0;
}

void store_mw_destroy(store_mw *w) {
  if (!w) return;
  for (size_t i = 0; i < w->n_keys; i++) free(w->keys[i].name);
  free(w->keys);
  free(w->slots);
  free(w->pts);
  free(w);
}

/* Index of `key` in w->keys, adding it when new; -1 on allocation failure. */
static long mw_intern(store_mw *w, const char *key) {
  uint64_t h = hash_str(key);
  size_t mask = w->n_slots - 1, i = h & mask;
  while (w->slots[i]) {
    if (strcmp(w->keys[w->slots[i] - 1].name, key) == 0) return (long)w->slots[i] - 1;
    i = (i + 1) & mask;
  }
  if (w->n_keys == w->cap_keys) {
    size_t nc = w->cap_keys ? 2 * w->cap_keys : 16;
    mw_key *nk = realloc(w->keys, nc * sizeof *nk);
    if (!nk) return -1;
    w->keys = nk;
    w->cap_keys = nc;
  }
  char *copy = strdup(key);
  if (!copy) return -1;
  if (2 * (w->n_keys + 1) > w->n_slots) { /* keep the load below 1/2: rehash */
    size_t ns = 2 * w->n_slots;
    uint32_t *nsl = calloc(ns, sizeof *nsl);
    if (!nsl) {
      free(copy);
      return -1;
    }
    for (size_t k = 0; k < w->n_keys; k++) {
      size_t j = hash_str(w->keys[k].name) & (ns - 1);
      while (nsl[j]) j = (j + 1) & (ns - 1);
      nsl[j] = (uint32_t)k + 1;
    }
    free(w->slots);
    w->slots = nsl;
    w->n_slots = ns;
    mask = ns - 1;
    i = h & mask;
    while (w->slots[i]) i = (i + 1) & mask;
  }
  w->keys[w->n_keys] = (mw_key){.name = copy, .db_id = 0, .fresh = 0, .acc = {{0}}};
  w->slots[i] = (uint32_t)w->n_keys + 1;
  return (long)w->n_keys++;
}

int store_mw_put(store_mw *w, const char *key, long step, double value) {
  if (!key || !store_valid_key(key)) return TD_EINVAL;
  long k = mw_intern(w, key);
  if (k < 0) return TD_ENOMEM;
  if (w->n_pts == w->cap_pts) { /* only after a failed flush */
    size_t nc = 2 * w->cap_pts;
    mw_point *np = realloc(w->pts, nc * sizeof *np);
    if (!np) return TD_ENOMEM;
    w->pts = np;
    w->cap_pts = nc;
  }
  if (!w->written && !w->n_pts && !w->have_first) {
    w->have_first = 1;
    w->first_step = step;
    w->first_t_ms = wall_ms();
  }
  w->pts[w->n_pts++] = (mw_point){.key = (uint32_t)k, .step = step, .value = value};
  if (w->n_pts >= w->batch_points || now_ms() - w->last_flush_ms >= w->batch_ms)
    return store_mw_flush(w);
  return 0;
}

void store_mw_progress(store_mw *w, long done, long total) {
  w->prog_done = done;
  w->prog_total = total;
  w->prog_dirty = 1;
}

int store_mw_tick(store_mw *w) {
  if (!w->n_pts && !w->prog_dirty) return 0;
  if (now_ms() - w->last_flush_ms < w->batch_ms) return 0;
  return store_mw_flush(w);
}

/* Intern key k in metric_keys and job_keys inside the open transaction. */
static int mw_resolve(store_mw *w, mw_key *k) {
  store *s = w->s;
  sqlite3_stmt *ins = stmt(s, ST_KEY_INSERT, NULL), *sel = stmt(s, ST_KEY_ID, NULL),
               *jk = stmt(s, ST_JOB_KEY_INSERT, NULL);
  if (!ins || !sel || !jk) return TD_EIO;
  int rc = 0;
  sqlite3_bind_text(ins, 1, k->name, -1, SQLITE_STATIC);
  if (sqlite3_step(ins) != SQLITE_DONE) rc = fail_code(s);
  sqlite3_reset(ins);
  if (!rc) {
    sqlite3_bind_text(sel, 1, k->name, -1, SQLITE_STATIC);
    if (sqlite3_step(sel) == SQLITE_ROW) k->db_id = sqlite3_column_int64(sel, 0);
    else rc = TD_EIO;
    sqlite3_reset(sel);
  }
  if (!rc) {
    sqlite3_bind_int64(jk, 1, w->job);
    sqlite3_bind_int64(jk, 2, k->db_id);
    if (sqlite3_step(jk) != SQLITE_DONE) rc = fail_code(s);
    sqlite3_reset(jk);
  }
  if (rc) k->db_id = 0;
  else k->fresh = 1;
  return rc;
}

/* Write one open pyramid bucket (merged with the stored one) and close it. */
static int pyr_write(store_mw *w, const mw_key *k, int level, pyr_acc *a) {
  if (!a->have) return 0;
  sqlite3_stmt *q = stmt(w->s, ST_PYR_UPSERT, NULL);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, w->job);
  sqlite3_bind_int64(q, 2, k->db_id);
  sqlite3_bind_int(q, 3, level);
  sqlite3_bind_int64(q, 4, a->bucket);
  sqlite3_bind_int64(q, 5, a->cnt);
  sqlite3_bind_int64(q, 6, a->smin);
  if (isnan(a->vmin)) sqlite3_bind_null(q, 7);
  else sqlite3_bind_double(q, 7, a->vmin);
  sqlite3_bind_int64(q, 8, a->smax);
  if (isnan(a->vmax)) sqlite3_bind_null(q, 9);
  else sqlite3_bind_double(q, 9, a->vmax);
  int rc = sqlite3_step(q) == SQLITE_DONE ? 0 : TD_EIO;
  sqlite3_reset(q);
  a->have = 0;
  return rc;
}

/* NaN never wins a minimum unless alone, and always wins a maximum (as store_ds ranks). */
static int pyr_less(double a, long sa, double cur, long scur) {
  if (isnan(a)) return isnan(cur) && sa < scur;
  return isnan(cur) || a < cur || (a == cur && sa < scur);
}
static int pyr_greater(double a, long sa, double cur, long scur) {
  if (isnan(cur)) return isnan(a) && sa < scur;
  return isnan(a) || a > cur || (a == cur && sa < scur);
}

/* Add one newly inserted point to the open buckets of its key, writing those it leaves. */
static int pyr_add(store_mw *w, mw_key *k, long step, double value) {
  for (int l = 0; l < PYR_LEVELS; l++) {
    pyr_acc *a = &k->acc[l];
    long b = floor_shift(step, PYR_SHIFT * (l + 1));
    if (a->have && a->bucket != b) {
      int rc = pyr_write(w, k, l + 1, a);
      if (rc) return rc;
    }
    if (!a->have) {
      *a = (pyr_acc){.have = 1, .bucket = b, .cnt = 1, .smin = step, .smax = step,
                     .vmin = value, .vmax = value};
      continue;
    }
    a->cnt++;
    if (pyr_less(value, step, a->vmin, a->smin)) a->smin = step, a->vmin = value;
    if (pyr_greater(value, step, a->vmax, a->smax)) a->smax = step, a->vmax = value;
  }
  return 0;
}

int store_mw_flush(store_mw *w) {
  store *s = w->s;
  if (!w->n_pts && !w->prog_dirty) {
    w->last_flush_ms = now_ms();
    return 0;
  }
  int rc = begin_write(s, NULL);
  if (rc) return rc;
  if (w->guard) {
    sqlite3_stmt *g = stmt(s, ST_MW_GUARD, NULL);
    int grc = 0;
    if (!g) grc = TD_EIO;
    else {
      sqlite3_bind_int64(g, 1, w->job);
      int src = sqlite3_step(g);
      if (src == SQLITE_DONE) grc = TD_ECONFLICT; /* no such job */
      else if (src != SQLITE_ROW) grc = fail_code(s);
      else if (!sqlite3_column_int(g, 0)) grc = TD_ECONFLICT;
      else if (w->guard_max > 0 &&
               (double)sqlite3_column_int64(g, 1) + (double)w->n_pts > w->guard_max)
        grc = TD_ELIMIT;
      sqlite3_reset(g);
    }
    if (grc) {
      rollback(s);
      return grc;
    }
  }
  uint64_t fresh_pts = 0;
  sqlite3_stmt *ins = stmt(s, ST_METRIC_INSERT, NULL);
  if (!ins) rc = TD_EIO;
  for (size_t i = 0; !rc && i < w->n_pts; i++) {
    const mw_point *p = &w->pts[i];
    mw_key *k = &w->keys[p->key];
    if (!k->db_id && (rc = mw_resolve(w, k))) break;
    sqlite3_bind_int64(ins, 1, w->job);
    sqlite3_bind_int64(ins, 2, k->db_id);
    sqlite3_bind_int64(ins, 3, p->step);
    if (isnan(p->value)) sqlite3_bind_null(ins, 4); /* NULL encodes NaN */
    else sqlite3_bind_double(ins, 4, p->value);
    if (sqlite3_step(ins) != SQLITE_DONE) rc = fail_code(s);
    sqlite3_reset(ins);
    /* only a point actually inserted (not an ignored re-run duplicate) enters the pyramid */
    if (!rc && sqlite3_changes(s->db) == 1) {
      fresh_pts++;
      rc = pyr_add(w, k, p->step, p->value);
    }
  }
  for (size_t i = 0; !rc && i < w->n_keys; i++)
    for (int l = 0; !rc && l < PYR_LEVELS; l++)
      rc = pyr_write(w, &w->keys[i], l + 1, &w->keys[i].acc[l]);
  if (!rc && w->n_pts) { /* the clock anchors: the first point, and the batch's last point */
    sqlite3_stmt *tq = stmt(s, ST_TIME_INSERT, NULL);
    if (!tq) rc = TD_EIO;
    for (int a = 0; !rc && a < 2; a++) {
      if (a == 0 && !w->have_first) continue;
      sqlite3_bind_int64(tq, 1, w->job);
      sqlite3_bind_int64(tq, 2, a == 0 ? w->first_step : w->pts[w->n_pts - 1].step);
      sqlite3_bind_int64(tq, 3, a == 0 ? w->first_t_ms : wall_ms());
      if (sqlite3_step(tq) != SQLITE_DONE) rc = TD_EIO;
      sqlite3_reset(tq);
    }
  }
  if (!rc && w->prog_dirty) {
    sqlite3_stmt *pq = stmt(s, ST_JOB_PROGRESS, NULL);
    if (!pq) {
      rc = TD_EIO;
    } else {
      sqlite3_bind_int64(pq, 1, w->job);
      sqlite3_bind_int64(pq, 2, w->prog_done);
      sqlite3_bind_int64(pq, 3, w->prog_total);
      if (sqlite3_step(pq) != SQLITE_DONE) rc = fail_code(s);
      sqlite3_reset(pq);
    }
  }
  if (!rc) rc = commit(s, NULL);
  if (rc) {
    rollback(s);
    for (size_t i = 0; i < w->n_keys; i++) {
      if (w->keys[i].fresh) w->keys[i].db_id = 0, w->keys[i].fresh = 0;
      memset(w->keys[i].acc, 0, sizeof w->keys[i].acc); /* the retry adds the points again */
    }
    return rc == TD_EFULL ? TD_EFULL : TD_EIO;
  }
  for (size_t i = 0; i < w->n_keys; i++) w->keys[i].fresh = 0;
  w->written += w->n_pts;
  w->inserted += fresh_pts;
  if (w->n_pts) w->have_first = 0;
  w->n_pts = 0;
  w->prog_dirty = 0;
  w->last_flush_ms = now_ms();
  return 0;
}

uint64_t store_mw_written(const store_mw *w) { return w->written; }

uint64_t store_mw_inserted(const store_mw *w) { return w->inserted; }

void store_mw_guard(store_mw *w, double max_points) {
  w->guard = 1;
  w->guard_max = max_points > 0 ? max_points : 0;
}

/* ---------------------------------------------------------------- metric reads */

int store_metric_keys(store *s, int64_t id, store_key_fn fn, void *ctx, td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_METRIC_KEYS, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src;
  while ((src = sqlite3_step(q)) == SQLITE_ROW) fn(ctx, col_text(q, 0));
  sqlite3_reset(q);
  return src == SQLITE_DONE ? 0 : sql_fail(s, err, "metric keys");
}

/* ---- the pyramid walk: the points of [lo, hi] as pre-reduced rows, in step order */

typedef void (*pyr_fn)(void *ctx, long cnt, long smin, double vmin, long smax, double vmax);

static double col_val(sqlite3_stmt *q, int c) {
  return sqlite3_column_type(q, c) == SQLITE_NULL ? NAN : sqlite3_column_double(q, c);
}

/* Call fn once per row covering [lo, hi] exactly: the level-`level` buckets that lie inside
 * the range, and for the partial buckets at its two ends the rows of the finer levels (level
 * 0 is the points themselves, cnt 1). Rows come in step order. Reads at most about
 * 2 * 32 * level rows beyond the level's own. 0 or TD_EIO. */
static int pyr_walk(store *s, int64_t job, int64_t key, int level, long lo, long hi, pyr_fn fn,
                    void *ctx, td_err *err) {
  if (lo > hi) return 0;
  if (level == 0) {
    sqlite3_stmt *q = stmt(s, ST_METRIC_RANGE, err);
    if (!q) return TD_EIO;
    sqlite3_bind_int64(q, 1, job);
    sqlite3_bind_int64(q, 2, key);
    sqlite3_bind_int64(q, 3, lo);
    sqlite3_bind_int64(q, 4, hi);
    int src;
    while ((src = sqlite3_step(q)) == SQLITE_ROW) {
      long st = (long)sqlite3_column_int64(q, 0);
      double v = col_val(q, 1);
      fn(ctx, 1, st, v, st, v);
    }
    sqlite3_reset(q);
    return src == SQLITE_DONE ? 0 : sql_fail(s, err, "metric range");
  }
  int sh = PYR_SHIFT * level;
  long width = 1L << sh;
  long bf = -floor_shift(-lo, sh);      /* ceil(lo / width): the first whole bucket */
  long bl = floor_shift(hi + 1, sh) - 1; /* the last whole bucket */
  if (bf > bl) return pyr_walk(s, job, key, level - 1, lo, hi, fn, ctx, err);
  int rc = 0;
  if (lo < bf * width) rc = pyr_walk(s, job, key, level - 1, lo, bf * width - 1, fn, ctx, err);
  if (rc) return rc;
  sqlite3_stmt *q = stmt(s, ST_PYR_RANGE, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, job);
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_int(q, 3, level);
  sqlite3_bind_int64(q, 4, bf);
  sqlite3_bind_int64(q, 5, bl);
  int src;
  while ((src = sqlite3_step(q)) == SQLITE_ROW)
    fn(ctx, (long)sqlite3_column_int64(q, 0), (long)sqlite3_column_int64(q, 1), col_val(q, 2),
       (long)sqlite3_column_int64(q, 3), col_val(q, 4));
  sqlite3_reset(q);
  if (src != SQLITE_DONE) return sql_fail(s, err, "metric pyramid");
  if ((bl + 1) * width <= hi)
    rc = pyr_walk(s, job, key, level - 1, (bl + 1) * width, hi, fn, ctx, err);
  return rc;
}

static void pyr_count(void *ctx, long cnt, long smin, double vmin, long smax, double vmax) {
  (void)smin, (void)vmin, (void)smax, (void)vmax;
  *(size_t *)ctx += (size_t)cnt;
}

/* Step-bucketed min/max over pyramid rows: B buckets of equal step width over [lo, hi]; the
 * first and the last point are emitted by the caller, so they are skipped here. */
typedef struct pyr_ds {
  long first, last;
  int shift;       /* of the level read: its buckets are 2^shift steps wide */
  long pb_lo;      /* the level's bucket holding the first point */
  double n_pb, buckets; /* level buckets from first to last point; output buckets */
  long cur;
  int have;
  long smin, smax;
  double vmin, vmax;
  store_point_fn fn;
  void *ctx;
} pyr_ds;

/* A downsampling bucket's minimum (step smin) and maximum (step smax) in the order they occur:
 * `order` < 0 when the minimum comes first, > 0 when the maximum does, 0 when they are the same
 * point (emitted once). */
static void emit_min_max(store_point_fn fn, void *ctx, int order, long smin, double vmin,
                         long smax, double vmax) {
  if (order == 0) {
    fn(ctx, smin, vmin);
  } else if (order < 0) {
    fn(ctx, smin, vmin);
    fn(ctx, smax, vmax);
  } else {
    fn(ctx, smax, vmax);
    fn(ctx, smin, vmin);
  }
}

static void pyr_ds_emit(pyr_ds *d) {
  if (!d->have) return;
  emit_min_max(d->fn, d->ctx, (d->smin > d->smax) - (d->smin < d->smax), d->smin, d->vmin,
               d->smax, d->vmax);
  d->have = 0;
}

static void pyr_ds_point(pyr_ds *d, long step, double v) {
  if (step == d->first || step == d->last) return;
  /* output bucket k groups whole level buckets, so each holds whole rows and its min and max
   * are exact */
  long b = (long)((double)(floor_shift(step, d->shift) - d->pb_lo) / d->n_pb * d->buckets);
  if (b >= (long)d->buckets) b = (long)d->buckets - 1;
  if (d->have && b != d->cur) pyr_ds_emit(d);
  if (!d->have) {
    d->have = 1;
    d->cur = b;
    d->smin = d->smax = step;
    d->vmin = d->vmax = v;
    return;
  }
  if (pyr_less(v, step, d->vmin, d->smin)) d->smin = step, d->vmin = v;
  if (pyr_greater(v, step, d->vmax, d->smax)) d->smax = step, d->vmax = v;
}

static void pyr_ds_row(void *ctx, long cnt, long smin, double vmin, long smax, double vmax) {
  (void)cnt;
  pyr_ds *d = ctx;
  if (smin == smax) {
    pyr_ds_point(d, smin, vmin);
  } else if (smin < smax) { /* in step order, so buckets only move forward */
    pyr_ds_point(d, smin, vmin);
    pyr_ds_point(d, smax, vmax);
  } else {
    pyr_ds_point(d, smax, vmax);
    pyr_ds_point(d, smin, vmin);
  }
}

/* One row of a "first point >= x" or "last point" query; 1 found, 0 none, TD_EIO. */
static int point_at(store *s, int id_stmt, int64_t job, int64_t key, long since, long *step,
                    double *v, td_err *err) {
  sqlite3_stmt *q = stmt(s, id_stmt, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, job);
  sqlite3_bind_int64(q, 2, key);
  if (id_stmt == ST_METRIC_FIRST) sqlite3_bind_int64(q, 3, since);
  int src = sqlite3_step(q), found = 0;
  if (src == SQLITE_ROW) {
    *step = (long)sqlite3_column_int64(q, 0);
    *v = col_val(q, 1);
    found = 1;
  }
  sqlite3_reset(q);
  if (src != SQLITE_ROW && src != SQLITE_DONE) return sql_fail(s, err, "metric end point");
  return found;
}

/* A raw read is used while it reads at most this many times the points asked for; past it the
 * pyramid answers, whose level is chosen so that it reads fewer rows than that. */
#define RAW_FACTOR 16

int store_metric_series(store *s, int64_t id, const char *key, long since_step,
                        size_t max_points, store_point_fn fn, void *ctx, size_t *n_total,
                        td_err *err) {
  if (n_total) *n_total = 0;
  sqlite3_stmt *kq = stmt(s, ST_KEY_ID, err), *sq = stmt(s, ST_METRIC_SERIES, err);
  if (!kq || !sq) return TD_EIO;
  int64_t key_id = 0;
  sqlite3_bind_text(kq, 1, key, -1, SQLITE_STATIC);
  int src = sqlite3_step(kq);
  if (src == SQLITE_ROW) key_id = sqlite3_column_int64(kq, 0);
  sqlite3_reset(kq);
  if (src != SQLITE_ROW && src != SQLITE_DONE) return sql_fail(s, err, "metric key");
  if (!key_id) return 0;
  /* One read transaction: the count and the rows come from the same snapshot. */
  int in_txn = sqlite3_get_autocommit(s->db) == 0;
  if (!in_txn && run_simple(s, ST_BEGIN_READ, err)) return TD_EIO;
  size_t n = 0;
  long lo = 0, hi = 0;
  double vfirst = 0, vlast = 0;
  int rc = point_at(s, ST_METRIC_FIRST, id, key_id, since_step, &lo, &vfirst, err);
  if (rc == 1) rc = point_at(s, ST_METRIC_LAST, id, key_id, 0, &hi, &vlast, err);
  if (rc == 1) rc = pyr_walk(s, id, key_id, PYR_LEVELS, lo, hi, pyr_count, &n, err);
  else if (rc == 0) n = 0;
  /* the pyramid level whose buckets are at most one output bucket wide */
  size_t nb = max_points >= 2 ? (max_points - 2) / 2 : 0;
  int level = 0;
  if (!rc && max_points >= 2 && nb && n > RAW_FACTOR * max_points) {
    double per = ((double)hi - (double)lo + 1) / (double)nb;
    while (level < PYR_LEVELS && (double)(1L << (PYR_SHIFT * (level + 1))) <= per) level++;
  }
  if (!rc && n > 2 && max_points >= 2 && max_points < 4) { /* no buckets: the two ends */
    fn(ctx, lo, vfirst);
    fn(ctx, hi, vlast);
  } else if (!rc && n && level > 0) {
    int sh = PYR_SHIFT * level;
    pyr_ds d = {.first = lo, .last = hi, .shift = sh, .pb_lo = floor_shift(lo, sh),
                .n_pb = (double)(floor_shift(hi, sh) - floor_shift(lo, sh) + 1),
                .buckets = (double)nb, .fn = fn, .ctx = ctx};
    fn(ctx, lo, vfirst);
    rc = pyr_walk(s, id, key_id, level, lo, hi, pyr_ds_row, &d, err);
    if (!rc) {
      pyr_ds_emit(&d);
      if (hi != lo) fn(ctx, hi, vlast);
    }
  } else if (!rc && n) {
    store_ds ds;
    store_ds_init(&ds, n, max_points, fn, ctx);
    sqlite3_bind_int64(sq, 1, id);
    sqlite3_bind_int64(sq, 2, key_id);
    sqlite3_bind_int64(sq, 3, since_step);
    while ((src = sqlite3_step(sq)) == SQLITE_ROW)
      store_ds_push(&ds, (long)sqlite3_column_int64(sq, 0), col_val(sq, 1));
    if (src != SQLITE_DONE) rc = sql_fail(s, err, "metric series");
    sqlite3_reset(sq);
    if (!rc) store_ds_finish(&ds);
  }
  if (!in_txn) run_simple(s, ST_COMMIT, NULL);
  if (n_total) *n_total = n;
  return rc;
}

int store_metric_times(store *s, int64_t id, store_point_fn fn, void *ctx, td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_TIME_LIST, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src;
  while ((src = sqlite3_step(q)) == SQLITE_ROW)
    fn(ctx, (long)sqlite3_column_int64(q, 0), (double)sqlite3_column_int64(q, 1));
  sqlite3_reset(q);
  return src == SQLITE_DONE ? 0 : sql_fail(s, err, "metric times");
}

/* ---------------------------------------------------------------- downsampling */

void store_ds_init(store_ds *ds, size_t n, size_t max_points, store_point_fn fn, void *ctx) {
  memset(ds, 0, sizeof *ds);
  ds->n = n;
  ds->fn = fn;
  ds->ctx = ctx;
  if (max_points < 2 || n <= max_points) {
    ds->max_points = 0; /* emit everything */
  } else {
    ds->max_points = max_points;
    ds->buckets = (max_points - 2) / 2;
  }
}

/* NaN ranks above +Inf for the maximum and never wins the minimum (unless alone). */
static int ds_greater(double a, double cur) { return !isnan(cur) && (isnan(a) || a > cur); }
static int ds_less(double a, double cur) { return !isnan(a) && (isnan(cur) || a < cur); }

static void ds_emit_bucket(store_ds *ds) {
  if (!ds->have) return;
  emit_min_max(ds->fn, ds->ctx, (ds->imin > ds->imax) - (ds->imin < ds->imax), ds->smin,
               ds->vmin, ds->smax, ds->vmax);
  ds->have = 0;
}

void store_ds_push(store_ds *ds, long step, double value) {
  size_t i = ds->i++;
  if (!ds->max_points) {
    ds->fn(ds->ctx, step, value);
    return;
  }
  if (i >= ds->n) return; /* more points than announced: ignored */
  if (i == 0) {
    ds->fn(ds->ctx, step, value);
    return;
  }
  if (i == ds->n - 1) {
    ds_emit_bucket(ds);
    ds->fn(ds->ctx, step, value);
    return;
  }
  if (!ds->buckets) return;
  size_t b = (size_t)((unsigned long long)(i - 1) * ds->buckets / (ds->n - 2));
  if (ds->have && b != ds->cur_bucket) ds_emit_bucket(ds);
  if (!ds->have) {
    ds->have = 1;
    ds->cur_bucket = b;
    ds->imin = ds->imax = i;
    ds->smin = ds->smax = step;
    ds->vmin = ds->vmax = value;
    return;
  }
  if (ds_less(value, ds->vmin)) ds->imin = i, ds->smin = step, ds->vmin = value;
  if (ds_greater(value, ds->vmax)) ds->imax = i, ds->smax = step, ds->vmax = value;
}

void store_ds_finish(store_ds *ds) { ds_emit_bucket(ds); }

/* ---------------------------------------------------------------- artifacts */

int store_artifact_put(store *s, int64_t id, const char *name, const char *content_type,
                       const void *data, size_t len, td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_ART_PUT, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 3, content_type, -1, SQLITE_STATIC);
  sqlite3_bind_blob64(q, 4, len ? data : "", len, SQLITE_STATIC);
  int src = sqlite3_step(q);
  sqlite3_clear_bindings(q);
  sqlite3_reset(q);
  return src == SQLITE_DONE ? 0 : sql_fail(s, err, "put artifact");
}

int store_artifact_list(store *s, int64_t id, store_artifact_fn fn, void *ctx, td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_ART_LIST, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  int src;
  while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    store_artifact a = {.name = col_text(q, 0),
                        .content_type = col_text(q, 1),
                        .size = (size_t)sqlite3_column_int64(q, 2),
                        .created_at = col_text(q, 3),
                        .data = NULL};
    fn(ctx, &a);
  }
  sqlite3_reset(q);
  return src == SQLITE_DONE ? 0 : sql_fail(s, err, "list artifacts");
}

int store_artifact_get(store *s, int64_t id, const char *name, store_artifact_fn fn, void *ctx,
                       td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_ART_GET, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_ROW) {
    store_artifact a = {.name = col_text(q, 0), .content_type = col_text(q, 1),
                        .data = sqlite3_column_blob(q, 2),
                        .size = (size_t)sqlite3_column_bytes(q, 2),
                        .created_at = col_text(q, 3)};
    fn(ctx, &a);
  } else if (src == SQLITE_DONE) {
    rc = td_err_set(err, TD_ENOTFOUND, NULL, "job %lld has no artifact '%s'", (long long)id, name);
  } else {
    rc = sql_fail(s, err, "get artifact");
  }
  sqlite3_clear_bindings(q);
  sqlite3_reset(q);
  return rc;
}

/* ---------------------------------------------------------------- pool */

struct store_pool {
  pthread_mutex_t mu;
  char *path;
  int busy_ms;
  store_cache *cache; /* attached to every connection the pool opens (NULL: none) */
  store **free_list;
  size_t n_free, cap_free;
};

int store_pool_create(const char *path, int busy_timeout_ms, store_pool **out, td_err *err) {
  *out = NULL;
  store_pool *p = calloc(1, sizeof *p);
  if (!p || !(p->path = strdup(path))) {
    free(p);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  pthread_mutex_init(&p->mu, NULL);
  p->busy_ms = busy_timeout_ms;
  *out = p;
  return 0;
}

int store_pool_get(store_pool *p, store **out, td_err *err) {
  *out = NULL;
  pthread_mutex_lock(&p->mu);
  if (p->n_free) *out = p->free_list[--p->n_free];
  pthread_mutex_unlock(&p->mu);
  if (*out) return 0;
  int rc = store_open(p->path, p->busy_ms, out, err);
  if (!rc && p->cache && (rc = store_cache_attach(*out, p->cache, err))) {
    store_close(*out);
    *out = NULL;
  }
  return rc;
}

void store_pool_set_cache(store_pool *p, store_cache *c) { p->cache = c; }

void store_pool_put(store_pool *p, store *s) {
  if (!s) return;
  /* A statement left mid-transaction by an error path must not leak into the next user. */
  rollback(s);
  pthread_mutex_lock(&p->mu);
  if (p->n_free == p->cap_free) {
    size_t nc = p->cap_free ? 2 * p->cap_free : 16;
    store **nf = realloc(p->free_list, nc * sizeof *nf);
    if (!nf) {
      pthread_mutex_unlock(&p->mu);
      store_close(s);
      return;
    }
    p->free_list = nf;
    p->cap_free = nc;
  }
  p->free_list[p->n_free++] = s;
  pthread_mutex_unlock(&p->mu);
}

void store_pool_destroy(store_pool *p) {
  if (!p) return;
  for (size_t i = 0; i < p->n_free; i++) store_close(p->free_list[i]);
  free(p->free_list);
  free(p->path);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

/* ---------------------------------------------------------------- retention */

/* The WHERE clause of store_prune over jobs j (binds: ?1 seconds, ?2 tag, ?3 sweep). */
static int prune_where(char *sql, size_t cap, const store_prune_filter *f, td_err *err) {
  const unsigned final = (1u << STORE_SUCCEEDED) | (1u << STORE_FAILED) |
                         (1u << STORE_DIVERGED) | (1u << STORE_CANCELLED) | (1u << STORE_PRUNED);
  unsigned mask = f->status_mask ? f->status_mask : final;
  if (mask & ~final)
    return td_err_set(err, TD_EINVAL, "status",
                      "only finished jobs can be pruned (succeeded, failed, diverged, cancelled, "
                      "pruned)");
  int len = snprintf(sql, cap, " j.status IN (");
  int first = 1;
  for (int i = 0; i < STORE_N_STATUS; i++)
    if (mask & (1u << i)) {
      len += snprintf(sql + len, cap - len, "%s'%s'", first ? "" : ",", status_names[i]);
      first = 0;
    }
  len += snprintf(sql + len, cap - len, ")");
  if (f->older_than_s > 0)
    len += snprintf(sql + len, cap - len,
                    " AND coalesce(j.finished_at, j.created_at) < "
                    "strftime('%%Y-%%m-%%dT%%H:%%M:%%fZ','now', '-' || ?1 || ' seconds')");
  if (f->tag)
    len += snprintf(sql + len, cap - len,
                    " AND j.id IN (SELECT job_id FROM job_tags WHERE tag=?2)");
  if (f->sweep_id > 0) len += snprintf(sql + len, cap - len, " AND j.sweep_id=?3");
  return 0;
}

static void prune_bind(sqlite3_stmt *q, const store_prune_filter *f) {
  if (f->older_than_s > 0) sqlite3_bind_double(q, 1, f->older_than_s);
  if (f->tag) sqlite3_bind_text(q, 2, f->tag, -1, SQLITE_STATIC);
  if (f->sweep_id > 0) sqlite3_bind_int64(q, 3, f->sweep_id);
}

int store_prune(store *s, const store_prune_filter *f, int dry_run, long *jobs, long *points,
                td_err *err) {
  *jobs = 0;
  *points = 0;
  char where[1024], sql[2048];
  int rc = prune_where(where, sizeof where, f, err);
  if (rc) return rc;
  sqlite3_stmt *q = NULL;
  snprintf(sql, sizeof sql,
           "SELECT count(*), coalesce(sum((SELECT count(*) FROM metrics m WHERE m.job_id=j.id)),0)"
           " FROM jobs j WHERE%s", where);
  if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) return sql_fail(s, err, "prune");
  prune_bind(q, f);
  if (sqlite3_step(q) == SQLITE_ROW) {
    *jobs = (long)sqlite3_column_int64(q, 0);
    *points = (long)sqlite3_column_int64(q, 1);
  } else {
    rc = sql_fail(s, err, "prune count");
  }
  sqlite3_finalize(q);
  if (rc || dry_run || *jobs == 0) return rc;
  /* delete in batches of 500 jobs: metrics first (no foreign key), then the job rows, whose
   * ON DELETE CASCADE removes tags, job_keys, artifacts and sweep_children */
  snprintf(sql, sizeof sql,
           "CREATE TEMP TABLE IF NOT EXISTS prune_batch(id INTEGER PRIMARY KEY);"
           "DELETE FROM prune_batch;");
  if ((rc = store_exec(s, sql, err))) return rc;
  char fill[1400];
  snprintf(fill, sizeof fill, "INSERT INTO prune_batch SELECT j.id FROM jobs j WHERE%s LIMIT 500",
           where);
  for (;;) {
    if ((rc = begin_write(s, err))) return rc;
    if (sqlite3_prepare_v2(s->db, fill, -1, &q, NULL) != SQLITE_OK) {
      rc = sql_fail(s, err, "prune");
      rollback(s);
      return rc;
    }
    prune_bind(q, f);
    int st = sqlite3_step(q);
    sqlite3_finalize(q);
    int n = sqlite3_changes(s->db);
    if (st != SQLITE_DONE) rc = sql_fail(s, err, "prune batch");
    if (!rc && n)
      rc = store_exec(s,
                      "DELETE FROM metrics WHERE job_id IN (SELECT id FROM prune_batch);"
                      "DELETE FROM jobs WHERE id IN (SELECT id FROM prune_batch);"
                      "DELETE FROM prune_batch;",
                      err);
    if (!rc) rc = commit(s, err);
    if (rc) {
      rollback(s);
      return rc;
    }
    if (n == 0) break;
  }
  /* give the freed pages back to the file system */
  int av = 0;
  if (sqlite3_prepare_v2(s->db, "PRAGMA auto_vacuum", -1, &q, NULL) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW)
    av = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  if (av == 2) {
    if (sqlite3_prepare_v2(s->db, "PRAGMA incremental_vacuum", -1, &q, NULL) != SQLITE_OK)
      return sql_fail(s, err, "incremental_vacuum");
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return sql_fail(s, err, "incremental_vacuum");
    rc = 0;
  } else if ((rc = store_exec(s, "PRAGMA auto_vacuum=INCREMENTAL; VACUUM", err))) {
    return rc;
  }
  return store_exec(s, "PRAGMA wal_checkpoint(TRUNCATE)", err);
}

static long long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

int store_file_stats(store *s, long long *db_bytes, long long *free_pages,
                     long long *wal_bytes, td_err *err) {
  sqlite3_stmt *q = NULL;
  *db_bytes = *free_pages = *wal_bytes = 0;
  if (sqlite3_prepare_v2(s->db,
                         "SELECT (SELECT page_count FROM pragma_page_count())*"
                         "(SELECT page_size FROM pragma_page_size()),"
                         "(SELECT freelist_count FROM pragma_freelist_count())",
                         -1, &q, NULL) != SQLITE_OK)
    return sql_fail(s, err, "file stats");
  if (sqlite3_step(q) == SQLITE_ROW) {
    *db_bytes = sqlite3_column_int64(q, 0);
    *free_pages = sqlite3_column_int64(q, 1);
  }
  sqlite3_finalize(q);
  const char *path = sqlite3_db_filename(s->db, "main");
  if (path && *path) {
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", path);
    *wal_bytes = file_size(wal);
  }
  return 0;
}

/* ---------------------------------------------------------------- checkpoints */

int store_checkpoint_insert(store *s, const void *data, size_t len, const char *tensors_json,
                            int64_t *id, td_err *err) {
  *id = 0;
  if (!data || !tensors_json || len > (size_t)INT32_MAX)
    return td_err_set(err, TD_EINVAL, NULL, "bad checkpoint");
  sqlite3_stmt *q = stmt(s, ST_CKPT_INSERT, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, (sqlite3_int64)len);
  sqlite3_bind_text(q, 2, tensors_json, -1, SQLITE_STATIC);
  sqlite3_bind_blob(q, 3, data, (int)len, SQLITE_STATIC);
  int src = sqlite3_step(q);
  sqlite3_clear_bindings(q);
  sqlite3_reset(q);
  if (src != SQLITE_DONE) return sql_fail(s, err, "insert checkpoint");
  *id = sqlite3_last_insert_rowid(s->db);
  return 0;
}

int store_checkpoint_get(store *s, int64_t id, int with_data, store_checkpoint_fn fn, void *ctx,
                         td_err *err) {
  sqlite3_stmt *q = stmt(s, ST_CKPT_GET, err);
  if (!q) return TD_EIO;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_int(q, 2, with_data != 0);
  int src = sqlite3_step(q), rc = 0;
  if (src == SQLITE_ROW) {
    store_checkpoint c = {.id = sqlite3_column_int64(q, 0), .created_at = col_text(q, 1),
                          .size = (size_t)sqlite3_column_int64(q, 2), .tensors = col_text(q, 3),
                          .data = with_data ? sqlite3_column_blob(q, 4) : NULL};
    if (!c.tensors) c.tensors = "[]";
    fn(ctx, &c);
  } else if (src == SQLITE_DONE) {
    rc = td_err_set(err, TD_ENOTFOUND, NULL, "no checkpoint %lld", (long long)id);
  } else {
    rc = sql_fail(s, err, "get checkpoint");
  }
  sqlite3_reset(q);
  return rc;
}

/* Collect the steps of checkpoint_step<S>.safetensors artifacts. */
typedef struct steps_ctx {
  long *steps;
  size_t n, cap;
} steps_ctx;

static void step_of_artifact(void *ctx, const store_artifact *a) {
  steps_ctx *c = ctx;
  const char *pre = "checkpoint_step", *suf = ".safetensors";
  size_t lp = strlen(pre), ls = strlen(suf), n = a->name ? strlen(a->name) : 0;
  if (n <= lp + ls || strncmp(a->name, pre, lp) || strcmp(a->name + n - ls, suf)) return;
  long v = 0;
  for (size_t i = lp; i < n - ls; i++) {
    char ch = a->name[i];
    if (ch < '0' || ch > '9' || v > 100000000000L) return;
    v = v * 10 + (ch - '0');
  }
  if (c->n < c->cap) c->steps[c->n] = v;
  c->n++;
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return x < y ? -1 : x > y;
}

int store_checkpoint_steps(store *s, int64_t job_id, long *steps, size_t cap, size_t *n,
                           td_err *err) {
  steps_ctx c = {steps, 0, cap};
  *n = 0;
  int rc = store_artifact_list(s, job_id, step_of_artifact, &c, err);
  if (rc) return rc;
  qsort(steps, c.n < cap ? c.n : cap, sizeof *steps, cmp_long);
  *n = c.n;
  return 0;
}

typedef struct bytes_ctx {
  void *data;
  size_t len;
  int oom;
} bytes_ctx;

static void copy_artifact(void *ctx, const store_artifact *a) {
  bytes_ctx *c = ctx;
  c->len = a->size;
  c->data = malloc(a->size ? a->size : 1);
  if (!c->data) c->oom = 1;
  else if (a->size) memcpy(c->data, a->data, a->size);
}

static void copy_checkpoint(void *ctx, const store_checkpoint *k) {
  bytes_ctx *c = ctx;
  c->len = k->size;
  c->data = malloc(k->size ? k->size : 1);
  if (!c->data) c->oom = 1;
  else if (k->size && k->data) memcpy(c->data, k->data, k->size);
}

int store_checkpoint_read(store *db, long job, long step, long checkpoint_id, void **data,
                        size_t *len, td_err *err) {
  *data = NULL;
  *len = 0;
  bytes_ctx c = {0};
  int rc;
  if (job > 0) {
    char name[64];
    snprintf(name, sizeof name, "checkpoint_step%ld.safetensors", step);
    rc = store_artifact_get(db, job, name, copy_artifact, &c, err);
  } else {
    rc = store_checkpoint_get(db, checkpoint_id, 1, copy_checkpoint, &c, err);
  }
  if (!rc && c.oom) rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory for a checkpoint");
  if (rc) {
    free(c.data);
    return rc;
  }
  *data = c.data;
  *len = c.len;
  return 0;
}


/* ---------------------------------------------------------------- delete and edit (issue 17) */

/* Run one statement bound to the job id inside the open transaction. */
static int exec_id(store *s, const char *sql, int64_t id, td_err *err) {
  sqlite3_stmt *q = NULL;
  if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) return sql_fail(s, err, "prepare");
  sqlite3_bind_int64(q, 1, id);
  int src = sqlite3_step(q);
  sqlite3_finalize(q);
  return src == SQLITE_DONE || src == SQLITE_ROW ? 0 : sql_fail(s, err, "delete job");
}

int store_job_delete(store *s, int64_t id, td_err *err) {
  int rc = begin_write(s, err);
  if (rc) return rc;
  int status = -1;
  rc = store_job_status(s, id, &status, err);
  if (!rc && (status == STORE_QUEUED || status == STORE_RUNNING))
    rc = td_err_set(err, TD_ECONFLICT, NULL,
                    "job %lld is %s; cancel it first (only a finished job can be deleted)",
                    (long long)id, status == STORE_QUEUED ? "queued" : "running");
  static const char *const sql[] = {
      "DELETE FROM metrics WHERE job_id=?1",      "DELETE FROM metric_pyr WHERE job_id=?1",
      "DELETE FROM metric_times WHERE job_id=?1", "DELETE FROM jobs WHERE id=?1"};
  for (size_t i = 0; !rc && i < sizeof sql / sizeof *sql; i++) rc = exec_id(s, sql[i], id, err);
  if (!rc) rc = commit(s, err);
  if (rc) rollback(s);
  return rc;
}

int store_job_edit(store *s, int64_t id, const char *name, const char *tags_json,
                   const char *const *tags, size_t n_tags, td_err *err) {
  int rc = begin_write(s, err);
  if (rc) return rc;
  int status;
  rc = store_job_status(s, id, &status, err);
  sqlite3_stmt *q = NULL;
  if (!rc && name) {
    if (sqlite3_prepare_v2(s->db, "UPDATE jobs SET name=?2 WHERE id=?1", -1, &q, NULL) != SQLITE_OK)
      rc = sql_fail(s, err, "prepare");
    else {
      sqlite3_bind_int64(q, 1, id);
      sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
      if (sqlite3_step(q) != SQLITE_DONE) rc = sql_fail(s, err, "edit job");
      sqlite3_finalize(q);
    }
  }
  if (!rc && tags_json) {
    rc = exec_id(s, "DELETE FROM job_tags WHERE job_id=?1", id, err);
    if (!rc && sqlite3_prepare_v2(s->db, "UPDATE jobs SET tags=?2 WHERE id=?1", -1, &q, NULL) != SQLITE_OK)
      rc = sql_fail(s, err, "prepare");
    else if (!rc) {
      sqlite3_bind_int64(q, 1, id);
      sqlite3_bind_text(q, 2, tags_json, -1, SQLITE_STATIC);
      if (sqlite3_step(q) != SQLITE_DONE) rc = sql_fail(s, err, "edit job");
      sqlite3_finalize(q);
    }
    sqlite3_stmt *t = rc ? NULL : stmt(s, ST_TAG_INSERT, err);
    if (!rc && !t) rc = TD_EIO;
    for (size_t i = 0; !rc && i < n_tags; i++) {
      sqlite3_bind_text(t, 1, tags[i], -1, SQLITE_STATIC);
      sqlite3_bind_int64(t, 2, id);
      if (sqlite3_step(t) != SQLITE_DONE) rc = sql_fail(s, err, "edit tags");
      sqlite3_reset(t);
    }
  }
  if (!rc) rc = commit(s, err);
  if (rc) rollback(s);
  return rc;
}

int store_metric_page(store *s, int64_t id, const char *key, long from_step, size_t limit,
                      store_point_fn fn, void *ctx, size_t *n_read, td_err *err) {
  *n_read = 0;
  sqlite3_stmt *kq = stmt(s, ST_KEY_ID, err), *q = stmt(s, ST_METRIC_PAGE, err);
  if (!kq || !q) return TD_EIO;
  int64_t key_id = 0;
  sqlite3_bind_text(kq, 1, key, -1, SQLITE_STATIC);
  int src = sqlite3_step(kq);
  if (src == SQLITE_ROW) key_id = sqlite3_column_int64(kq, 0);
  sqlite3_reset(kq);
  if (src != SQLITE_ROW && src != SQLITE_DONE) return sql_fail(s, err, "metric key");
  if (!key_id) return 0;
  sqlite3_bind_int64(q, 1, id);
  sqlite3_bind_int64(q, 2, key_id);
  sqlite3_bind_int64(q, 3, from_step);
  sqlite3_bind_int64(q, 4, (sqlite3_int64)limit);
  while ((src = sqlite3_step(q)) == SQLITE_ROW) {
    fn(ctx, (long)sqlite3_column_int64(q, 0), col_val(q, 1));
    (*n_read)++;
  }
  sqlite3_reset(q);
  return src == SQLITE_DONE ? 0 : sql_fail(s, err, "metric page");
}
