/* store.h: SQLite persistence for jobs, metrics and artifacts (one connection per thread). */
#ifndef TD_SERVER_STORE_H
#define TD_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* One SQLite connection with its cached prepared statements. A store is used by one thread
 * at a time (it is opened with SQLITE_OPEN_NOMUTEX); every thread that touches the database
 * has its own, either permanently (workers) or borrowed from a store_pool (HTTP threads). */
typedef struct store store;

/* The job statuses, in the order used by store_job_counts. */
#define STORE_STATUSES(X) \
  X(QUEUED, "queued")     \
  X(RUNNING, "running")   \
  X(SUCCEEDED, "succeeded") \
  X(FAILED, "failed")     \
  X(DIVERGED, "diverged") \
  X(CANCELLED, "cancelled") \
  X(PRUNED, "pruned") /* a sweep child stopped by early stopping (server/sweeps.h) */ \
  X(CRASHED, "crashed") /* an external run whose heartbeats stopped (may be resumed) */

enum {
#define STORE__ST_ENUM(e, s) STORE_##e,
  STORE_STATUSES(STORE__ST_ENUM)
#undef STORE__ST_ENUM
      STORE_N_STATUS
};

/* store_status_name: "queued" ... "cancelled" for STORE_QUEUED ..., NULL when out of range.
 * store_status_parse: the index of `name`, or -1. */
const char *store_status_name(int status);
int store_status_parse(const char *name);

/* store_open: open (creating if needed) the database at `path` (":memory:" allowed) and set
 * WAL mode, synchronous=NORMAL (durable against process crashes; kill -9 loses nothing that
 * was committed), busy_timeout (ms, 0 means 5000), foreign keys, journal_size_limit 64 MiB
 * (the WAL file is cut back to that after each checkpoint that resets it), a WAL hook that
 * runs the passive autocheckpoint at 1000 frames and a TRUNCATE checkpoint past 4096 frames
 * (16 MiB; bounded wait), so the WAL stays bounded under continuous readers, and, for a new
 * file, auto_vacuum=INCREMENTAL (store_prune gives freed pages back to the file system). When the environment
 * variable TDLAB_MAX_PAGE_COUNT is set, PRAGMA max_page_count caps the file at that many pages
 * (a database-size quota; tests use it to fill the "disk" for real). A write that finds the
 * disk or the database full fails with TD_EFULL everywhere in this module. *out (OUT) must be
 * closed with store_close. Errors: TD_EIO with the SQLite message. */
int store_open(const char *path, int busy_timeout_ms, store **out /* OUT */, td_err *err);

/* store_close: finalize the statements and close the connection. NULL is a no-op. */
void store_close(store *s);

/* store_migrate: apply, in order, every `dir`/NNNN_*.sql whose version NNNN is above the
 * schema_version recorded in the database, each in its own transaction together with its
 * schema_version row. *applied (OUT, may be NULL) counts the files applied and *version
 * (OUT, may be NULL) is the final version. Errors: TD_EIO (unreadable dir/file, SQL error,
 * with the file named in err->msg), TD_ECONFLICT (the database is newer than the files or two
 * files share a version). */
int store_migrate(store *s, const char *dir, int *applied /* OUT */, int *version /* OUT */,
                  td_err *err);

/* store_exec: run SQL text (no results). For tests and maintenance. Errors: TD_EIO. */
int store_exec(store *s, const char *sql, td_err *err);

/* store_backup: a consistent copy of the database at `src` (which a running server may be
 * writing) into a new file `out`, with SQLite's online backup API (sqlite3_backup_step(-1):
 * every page is copied in one step inside one read transaction, so the copy is the snapshot
 * of the last commit before the step began, and writers are never blocked in WAL mode). The
 * copy is written to `out`.tmp in rollback-journal mode, checked with PRAGMA quick_check,
 * fsync'ed and renamed to `out`. *pages (OUT, may be NULL) is its page count.
 * Errors: TD_ECONFLICT (`out` exists), TD_EIO (SQLite or file system, in err->msg). */
int store_backup(const char *src, const char *out, long *pages /* OUT */, td_err *err);

/* ---------------------------------------------------------------- jobs */

/* A job row as read from the database. Every string borrows from SQLite and is valid only
 * during the visitor call that receives it. NULL means SQL NULL. params, tags and summary are
 * JSON text written by the server (trusted, well formed). */
typedef struct store_job {
  int64_t id;
  const char *kind, *name, *status;
  const char *params;  /* JSON object */
  const char *tags;    /* JSON array of strings */
  long priority, attempt;
  int64_t sweep_id;    /* 0: none */
  long progress_done, progress_total;
  int cancel_requested;
  const char *created_at, *started_at, *finished_at; /* RFC 3339 UTC; started/finished may be NULL */
  const char *error;   /* may be NULL */
  const char *summary; /* JSON object or NULL */
  int64_t parent_job_id; /* a fork's parent job (migrations/0003); 0: none */
  long parent_step;      /* the parent's step the fork continues from (when parent_job_id) */
  const char *children;  /* ids of the jobs forked from this one, "3,5" in id order; NULL: none */
  const char *executor;     /* "local", "remote", "slurm" or "external" (migrations/0006) */
  const char *executor_ref; /* the executor's id of the run (Slurm job id); NULL: none */
  const char *heartbeat_at; /* last heartbeat of a remote/slurm/external run; NULL: none */
} store_job;

typedef void (*store_job_fn)(void *ctx, const store_job *job);

/* A job to insert. params_json must be a JSON object text, tags_json a JSON array text of
 * the same n_tags tags (stored denormalized for fast reads; job_tags indexes them). */
typedef struct store_new_job {
  const char *kind, *name, *params_json, *tags_json;
  const char *const *tags;
  size_t n_tags;
  long priority;
  int64_t sweep_id; /* 0: none */
  int64_t parent_job_id; /* a fork's parent (0: none); its row is touched so caches drop it */
  long parent_step;      /* the step of the parent the fork continues from */
  const char *executor;  /* "local" (NULL means local), "remote" or "slurm" (migrations/0006) */
} store_new_job;

/* store_job_insert: insert a queued job (attempt 1) and its tags in one transaction. When
 * max_queued > 0 and that many jobs are already queued, nothing is inserted and TD_ELIMIT is
 * returned (the check and the insert are atomic). *id (OUT) is the new job id.
 * Errors: TD_ELIMIT, TD_EIO. */
int store_job_insert(store *s, const store_new_job *job, long max_queued, int64_t *id /* OUT */,
                     td_err *err);

/* store_job_get: call fn once with job `id`. Errors: TD_ENOTFOUND, TD_EIO. */
int store_job_get(store *s, int64_t id, store_job_fn fn, void *ctx, td_err *err);

/* A list filter; zero/NULL fields are not applied. */
typedef struct store_job_filter {
  unsigned status_mask; /* bit (1 << STORE_x); 0: any */
  const char *kind;
  const char *tag;
  int64_t sweep_id;
  int64_t before_id;    /* cursor: only ids below it; 0: from the newest */
  long limit;           /* 1..1000 */
} store_job_filter;

/* store_job_list: call fn for each matching job, newest first (by id), at most f->limit.
 * *next_cursor (OUT) is the id to pass as before_id for the next page, or 0 at the end.
 * Errors: TD_EINVAL (limit out of range), TD_EIO. */
int store_job_list(store *s, const store_job_filter *f, store_job_fn fn, void *ctx,
                   int64_t *next_cursor /* OUT */, td_err *err);

/* A claimed job. kind and params are heap copies owned by the struct (store_claimed_free). */
typedef struct store_claimed {
  int64_t id;
  long attempt;
  char *kind, *params;
  double wait_s; /* seconds from created_at to this claim (ms resolution of the stored times) */
} store_claimed;

/* store_job_claim: atomically move the best queued job (highest priority, then oldest) to
 * running, with a single UPDATE ... RETURNING, so that two claimers never get the same job.
 * A child of a sweep whose max_concurrency (migrations/0002_sweeps.sql) is already reached by
 * its running siblings is skipped: the cap is checked inside the same statement.
 * *found (OUT) is 1 with *job filled, or 0 when the queue is empty. Errors: TD_EIO. */
int store_job_claim(store *s, store_claimed *job /* OUT */, int *found /* OUT */, td_err *err);
void store_claimed_free(store_claimed *job);

/* store_job_finish: move a running job to a final status with its error text (NULL: none)
 * and summary JSON (NULL: none) and progress. status is STORE_SUCCEEDED..STORE_PRUNED.
 * Errors: TD_ECONFLICT (the job is not running), TD_EIO. */
int store_job_finish(store *s, int64_t id, int status, const char *error,
                     const char *summary_json, long done, long total, td_err *err);

/* store_job_requeue: a running job that the server stopped (graceful shutdown) goes back to
 * queued with its attempt unchanged and its progress reset. Its committed metrics stay; the
 * re-run inserts with INSERT OR IGNORE. Errors: TD_ECONFLICT, TD_EIO. */
int store_job_requeue(store *s, int64_t id, td_err *err);

/* store_job_cancel: a queued job becomes cancelled at once (*outcome = STORE_CANCELLED); a
 * running job gets cancel_requested = 1 (*outcome = STORE_RUNNING) and the caller signals its
 * worker. Errors: TD_ENOTFOUND, TD_ECONFLICT (already finished), TD_EIO. */
int store_job_cancel(store *s, int64_t id, int *outcome /* OUT */, td_err *err);

/* store_recover: at start-up, before any worker runs. Jobs left running by a crash are
 * re-queued with attempt+1; those already at max_attempts become failed, and those whose
 * cancellation was requested become cancelled. Counts are OUT (each may be NULL).
 * Errors: TD_EIO. */
int store_recover(store *s, long max_attempts, long *requeued /* OUT */, long *failed /* OUT */,
                  long *cancelled /* OUT */, td_err *err);

/* store_job_counts: number of jobs in each status (indexed by STORE_QUEUED ...).
 * Errors: TD_EIO. */
int store_job_counts(store *s, long counts[STORE_N_STATUS] /* OUT */, td_err *err);

/* store_queue_depth: number of queued jobs. Errors: TD_EIO. */
int store_queue_depth(store *s, long *depth /* OUT */, td_err *err);

/* store_job_status: the status index of job `id`. Errors: TD_ENOTFOUND, TD_EIO. */
int store_job_status(store *s, int64_t id, int *status /* OUT */, td_err *err);

/* store_job_delete: delete a finished job with its metric points, pyramid, clock anchors,
 * keys, tags and artifacts, in one transaction (forks keep running with parent_job_id NULL).
 * Errors: TD_ENOTFOUND, TD_ECONFLICT (queued or running), TD_EIO. */
int store_job_delete(store *s, int64_t id, td_err *err);

/* store_job_edit: set the name (when name is not NULL) and the tags (when tags_json is not
 * NULL: the JSON array copy and the n_tags strings of the job_tags index) of job `id`, in one
 * transaction. Errors: TD_ENOTFOUND, TD_EIO. */
int store_job_edit(store *s, int64_t id, const char *name, const char *tags_json,
                   const char *const *tags, size_t n_tags, td_err *err);

/* ---------------------------------------------------------------- metric writer */

/* A buffered writer of one job's metric points. Points are kept in memory and written with
 * one transaction per batch_points points or batch_ms milliseconds, whichever comes first
 * (checked on every put and by store_mw_tick). INSERT OR IGNORE on (job, key, step) makes a
 * re-run idempotent. Keys are interned in metric_keys once and cached per writer. */
typedef struct store_mw store_mw;

/* store_mw_create: a writer for job `job_id` on `s` (borrowed; must outlive the writer).
 * batch_points 0 means 1024, batch_ms 0 means 250. Errors: TD_ENOMEM. */
int store_mw_create(store *s, int64_t job_id, size_t batch_points, long batch_ms,
                    store_mw **out /* OUT */, td_err *err);

/* store_mw_put: buffer one point (value may be NaN or +-Inf). `key` is copied: 1..128 bytes
 * of printable ASCII. Flushes when a batch is due. Errors: TD_EINVAL (bad key), TD_ENOMEM,
 * TD_EIO (the flush failed; the points stay buffered and the next flush retries). */
int store_mw_put(store_mw *w, const char *key, long step, double value);

/* store_mw_progress: remember progress; written with the next batch. */
void store_mw_progress(store_mw *w, long done, long total);

/* store_mw_tick: flush if batch_ms have passed since the last flush and anything is pending
 * (points or progress). Cheap when nothing is due. Errors: as store_mw_flush. */
int store_mw_tick(store_mw *w);

/* store_mw_flush: write every buffered point and the progress in one transaction.
 * Errors: TD_EFULL (disk or database full), TD_EIO (nothing is lost from the buffer). */
int store_mw_flush(store_mw *w);

/* store_mw_written: points committed by this writer so far (ignored duplicates included). */
uint64_t store_mw_written(const store_mw *w);

/* store_mw_inserted: points committed by this writer that were new (written minus the ignored
 * duplicates of (job, key, step) already stored). */
uint64_t store_mw_inserted(const store_mw *w);

/* store_mw_guard: from now on every flush first checks, inside its write transaction, that
 * the job is still 'running' (else it writes nothing and returns TD_ECONFLICT) and, when
 * max_points > 0, that the points the job has stored (the sum of its level-4 pyramid counts)
 * plus the batch stay within max_points (else nothing is written and it returns TD_ELIMIT).
 * For points that arrive over HTTP (POST /api/v1/jobs/{id}/points), where a finish may race
 * with a batch. The buffered points stay in the writer on either error. */
void store_mw_guard(store_mw *w, double max_points);

/* store_mw_destroy: free the writer WITHOUT flushing (call store_mw_flush first). NULL ok. */
void store_mw_destroy(store_mw *w);

/* ---------------------------------------------------------------- metric reads */

typedef void (*store_key_fn)(void *ctx, const char *key);
typedef void (*store_point_fn)(void *ctx, long step, double value);

/* store_metric_keys: call fn with each metric key that job `id` reported, sorted by name.
 * Errors: TD_EIO. */
int store_metric_keys(store *s, int64_t id, store_key_fn fn, void *ctx, td_err *err);

/* store_metric_series: call fn with the points of (job, key) with step >= since_step, in
 * step order; when max_points >= 2 and there are more points, they are downsampled: the
 * first and the last point, and each bucket's min and max. Up to 16 * max_points points the
 * B = (max_points - 2) / 2 buckets are store_ds's (equal counts over the raw points). Past
 * that the pyramid of migrations/0004 answers: with lo, hi the first and last step read, it
 * uses the largest level l <= 4 with 32^l <= (hi - lo + 1) / B, and output bucket k holds the
 * level-l buckets p (p = floor(step / 32^l)) with
 * floor((p - p_lo) * B / (p_hi - p_lo + 1)) = k, whose min and max are exact; so a read costs
 * O(32 * B + log n) rows whatever the length of the series. The count is taken from the pyramid too. Reads one consistent snapshot.
 * A key the job never reported yields no points. *n_total (OUT, may be NULL) is the number
 * of points before downsampling. Errors: TD_EIO. */
int store_metric_series(store *s, int64_t id, const char *key, long since_step,
                        size_t max_points, store_point_fn fn, void *ctx,
                        size_t *n_total /* OUT */, td_err *err);

/* store_metric_page: call fn with at most `limit` points of (job, key) with step >= from_step,
 * in step order (a keyset page: the next one starts at the last step + 1). *n_read (OUT) is
 * the number of points given. A key never reported gives none. Errors: TD_EIO. */
int store_metric_page(store *s, int64_t id, const char *key, long from_step, size_t limit,
                      store_point_fn fn, void *ctx, size_t *n_read /* OUT */, td_err *err);

/* store_metric_times: call fn(ctx, step, unix_ms) with each clock anchor of job `id` in step
 * order (see migrations/0004: one per written batch; interpolate between them).
 * Errors: TD_EIO. */
int store_metric_times(store *s, int64_t id, store_point_fn fn, void *ctx, td_err *err);

/* Streaming min/max downsampler (the idea of M4 / "min-max decimation", Jugel et al. 2014,
 * "M4: a visualization-oriented time series data aggregation", restricted to min and max).
 * Of n points (known in advance) it emits at most max_points: the first and the last point,
 * and for each of B = (max_points - 2) / 2 equal-count buckets over the interior points its
 * minimum and its maximum, in step order (once when they coincide). NaN counts as larger than
 * everything and -Inf/+Inf as the extremes they are, so non-finite points survive.
 * With n <= max_points (or max_points < 2, meaning "all") every point is emitted. */
typedef struct store_ds {
  size_t n, max_points, buckets, i, cur_bucket;
  int have;             /* the current bucket has points */
  size_t imin, imax;
  long smin, smax;
  double vmin, vmax;
  store_point_fn fn;
  void *ctx;
} store_ds;

void store_ds_init(store_ds *ds, size_t n, size_t max_points, store_point_fn fn, void *ctx);
void store_ds_push(store_ds *ds, long step, double value);
void store_ds_finish(store_ds *ds);

/* store_valid_key: 1 when k is a metric key the store accepts (1..128 printable ASCII bytes
 * without space, double quote, comma or backslash), else 0. The HTTP layer checks with it so
 * that its 400 and the store agree. */
int store_valid_key(const char *k);

/* store_valid_artifact_name: 1 when n is an artifact name (1..128 bytes of A-Z a-z 0-9 . _ -,
 * not starting with a dot, so it is also a safe file name for `tdlab run --artifacts`), else 0. */
int store_valid_artifact_name(const char *n);

/* ---------------------------------------------------------------- artifacts */

typedef struct store_artifact {
  const char *name, *content_type, *created_at;
  const void *data; /* only for store_artifact_get */
  size_t size;
} store_artifact;
typedef void (*store_artifact_fn)(void *ctx, const store_artifact *a);

/* store_artifact_put: insert or replace artifact `name` of job `id`. Errors: TD_EIO. */
int store_artifact_put(store *s, int64_t id, const char *name, const char *content_type,
                       const void *data, size_t len, td_err *err);
/* store_artifact_list: fn for each artifact of job `id` (data NULL), by name. TD_EIO. */
int store_artifact_list(store *s, int64_t id, store_artifact_fn fn, void *ctx, td_err *err);
/* store_artifact_get: fn once with the artifact. Errors: TD_ENOTFOUND, TD_EIO. */
int store_artifact_get(store *s, int64_t id, const char *name, store_artifact_fn fn, void *ctx,
                       td_err *err);

/* ---------------------------------------------------------------- checkpoints */

/* An uploaded checkpoint (migrations/0003_checkpoints.sql). Strings and data borrow from
 * SQLite and are valid only during the visitor call. */
typedef struct store_checkpoint {
  int64_t id;
  const char *created_at;
  size_t size;          /* bytes of the file */
  const char *tensors;  /* JSON array text [{"name","dtype","shape"}] written by the server */
  const void *data;     /* the file (size bytes), or NULL when not asked for */
} store_checkpoint;
typedef void (*store_checkpoint_fn)(void *ctx, const store_checkpoint *c);

/* store_checkpoint_insert: store a validated safetensors file (len bytes, < 2 GiB) with its
 * tensor list (JSON array text, trusted). *id (OUT) is its new id. Errors: TD_EINVAL, TD_EIO. */
int store_checkpoint_insert(store *s, const void *data, size_t len, const char *tensors_json,
                            int64_t *id /* OUT */, td_err *err);

/* store_checkpoint_get: fn once with checkpoint `id`, with its bytes when with_data is
 * non-zero. Errors: TD_ENOTFOUND, TD_EIO. */
int store_checkpoint_get(store *s, int64_t id, int with_data, store_checkpoint_fn fn, void *ctx,
                         td_err *err);

/* store_checkpoint_steps: the steps S of job_id's artifacts named
 * checkpoint_step<S>.safetensors, ascending; the first min(cap, *n) are written to steps and
 * *n (OUT) is the total count. Errors: TD_EIO. */
int store_checkpoint_steps(store *s, int64_t job_id, long *steps /* OUT */, size_t cap,
                           size_t *n /* OUT */, td_err *err);

/* store_checkpoint_read: a copy of stored checkpoint bytes, the host side of td_sink's
 * checkpoint callback (core/base/sink.h): job > 0 reads job's artifact
 * checkpoint_step<step>.safetensors; otherwise uploaded checkpoint `checkpoint_id`.
 * On success *data (OUT, malloc'ed, the caller frees it) and *len (OUT).
 * Errors: TD_ENOTFOUND, TD_ENOMEM, TD_EIO. */
int store_checkpoint_read(store *s, long job, long step, long checkpoint_id, void **data /* OUT */,
                          size_t *len /* OUT */, td_err *err);

/* ---------------------------------------------------------------- retention */

/* Which jobs store_prune removes: all given conditions hold. Only jobs in a final status
 * (succeeded, failed, diverged, cancelled, pruned) are ever removed: queued and running jobs
 * are kept whatever the filter says. */
typedef struct store_prune_filter {
  unsigned status_mask; /* bit (1 << STORE_x); 0: every final status */
  double older_than_s;  /* finished (else created) more than this many seconds ago; 0: any */
  const char *tag;      /* NULL: any */
  int64_t sweep_id;     /* 0: any */
} store_prune_filter;

/* store_prune: count (dry_run != 0) or delete the matching jobs with their metric points,
 * metric keys, tags, artifacts and sweep-child rows (a fork's parent link becomes NULL).
 * Deletes in transactions of 500 jobs, so a running server's writers wait at most one batch.
 * After deleting, frees the pages: PRAGMA incremental_vacuum when the file has
 * auto_vacuum=INCREMENTAL (new databases), else one VACUUM, which also switches the file to
 * incremental auto-vacuum; then a WAL checkpoint (TRUNCATE). *jobs and *points (OUT) count
 * what matched (dry run) or what was deleted. Errors: TD_EINVAL (a status that is not final),
 * TD_EFULL, TD_EIO. */
int store_prune(store *s, const store_prune_filter *f, int dry_run, long *jobs /* OUT */,
                long *points /* OUT */, td_err *err);

/* store_file_stats: the database file's size in bytes (page_count * page_size), the pages on
 * the freelist, and the WAL file's size in bytes (0 when absent or in memory). TD_EIO. */
int store_file_stats(store *s, long long *db_bytes /* OUT */,
                     long long *free_pages /* OUT */, long long *wal_bytes /* OUT */, td_err *err);

/* ---------------------------------------------------------------- pool */

/* A pool of connections for threads that come and go (the HTTP threads). Connections are
 * opened on demand and kept for reuse; a borrowed store is used by one thread at a time. */
typedef struct store_pool store_pool;

/* store_pool_create: connections to `path`. The database must already be migrated.
 * Errors: TD_ENOMEM. */
int store_pool_create(const char *path, int busy_timeout_ms, store_pool **out /* OUT */,
                      td_err *err);
/* store_pool_get: borrow a connection (opens one when none is free). Errors: TD_EIO. */
int store_pool_get(store_pool *p, store **out /* OUT */, td_err *err);
/* store_pool_set_cache: attach `c` (see store_cache.h; borrowed, must outlive the pool) to
 * every connection the pool opens from now on. Call it before the first store_pool_get. */
struct store_cache;
void store_pool_set_cache(store_pool *p, struct store_cache *c);
/* store_pool_put: return a borrowed connection. s may be NULL. */
void store_pool_put(store_pool *p, store *s);
/* store_pool_destroy: close every connection; none may be borrowed. NULL ok. */
void store_pool_destroy(store_pool *p);

#endif
