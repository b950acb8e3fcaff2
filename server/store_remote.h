/* store_remote.h: SQLite side of runs that execute elsewhere (issue 16): run tokens, starts,
 * heartbeats, finishes and leases (migrations/0006_remote.sql). */
#ifndef TD_SERVER_STORE_REMOTE_H
#define TD_SERVER_STORE_REMOTE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "store.h"

/* What the ingestion endpoints need to know of a job (store_run_auth). */
typedef struct store_run_state {
  int status;            /* STORE_QUEUED ... */
  int cancel_requested;
  int token_ok;          /* the presented token's hash equals the stored one */
  char executor[16];
} store_run_state;

/* store_run_auth: read job `id`'s status, cancel flag and executor, and compare token_hash
 * (hex SHA-256 of the presented run token, runtok_hash) with the stored hash in constant
 * time. A job without a stored hash (local jobs, re-queued runs) never matches.
 * Errors: TD_ENOTFOUND, TD_EIO. */
int store_run_auth(store *s, int64_t id, const char *token_hash, store_run_state *out /* OUT */,
                   td_err *err);

/* store_run_create: insert an external run (POST /api/v1/runs): kind 'external', status
 * 'running', executor 'external', started_at = heartbeat_at = now, the given params JSON
 * object text (stored as given), name, tags (tags_json: the JSON array of the n_tags strings
 * in tags) and run_token_hash, in one transaction. *id (OUT). Errors: TD_EIO. */
int store_run_create(store *s, const char *name, const char *params_json, const char *tags_json,
                     const char *const *tags, size_t n_tags, const char *token_hash,
                     int64_t *id /* OUT */, td_err *err);

/* store_run_start: a queued job of executor `executor` ("remote" or "slurm") becomes running
 * with started_at = heartbeat_at = now, progress reset and run_token_hash = token_hash (the
 * previous token stops working). The slurm executor calls it before sbatch. On success
 * *kind and *params (OUT, malloc'ed; the caller frees them; either pointer may be NULL when
 * not wanted) and *attempt (OUT, may be NULL).
 * Errors: TD_ENOTFOUND, TD_ECONFLICT (not queued, or another executor), TD_ENOMEM, TD_EIO. */
int store_run_start(store *s, int64_t id, const char *executor, const char *token_hash,
                    char **kind /* OUT */, char **params /* OUT */, long *attempt /* OUT */,
                    td_err *err);

/* store_run_prepare: give a queued job of executor `executor` a run token (its hash) without
 * starting it: for an executor that hands the token to a run which starts later (the Slurm
 * executor before sbatch: the job stays queued while Slurm has it PENDING). The run's first
 * heartbeat then marks it running (store_run_begin). A new prepare replaces the token.
 * Errors: TD_ENOTFOUND, TD_ECONFLICT (not queued, or another executor), TD_EIO. */
int store_run_prepare(store *s, int64_t id, const char *executor, const char *token_hash,
                      td_err *err);

/* store_run_begin: a queued, prepared (token set) job of a non-local executor becomes running
 * with started_at = heartbeat_at = now and progress reset; *started (OUT) is 1 when it did.
 * The heartbeat endpoint calls it for a queued job whose token matched. Errors: TD_EIO. */
int store_run_begin(store *s, int64_t id, int *started /* OUT */, td_err *err);

/* store_run_resume: an external run that is 'crashed' (or still 'running') becomes running
 * again with a new token hash, heartbeat_at = now and its error cleared.
 * Errors: TD_ENOTFOUND, TD_ECONFLICT (not external, or in another status), TD_EIO. */
int store_run_resume(store *s, int64_t id, const char *token_hash, td_err *err);

/* store_run_heartbeat: heartbeat_at = now for a running job, and its progress when
 * has_progress (done, total >= 0). *cancel_requested (OUT). Errors: TD_ECONFLICT (not running),
 * TD_EIO. */
int store_run_heartbeat(store *s, int64_t id, int has_progress, long done, long total,
                        int *cancel_requested /* OUT */, td_err *err);

/* store_run_finish: a running job ends with `status` (STORE_SUCCEEDED, STORE_FAILED or
 * STORE_DIVERGED), error text and summary JSON object text (each may be NULL), keeping its
 * progress; when cancellation was requested it ends 'cancelled' instead. *final (OUT) is the
 * status written. A job that already ended with the same status (the retry of a finish whose
 * answer was lost; 'cancelled' counts as the same when cancellation had been requested)
 * succeeds again without a change. Errors: TD_ENOTFOUND, TD_ECONFLICT (ended otherwise, or
 * not started), TD_EIO. */
int store_run_finish(store *s, int64_t id, int status, const char *error,
                     const char *summary_json, int *final /* OUT */, td_err *err);

/* Which executors a lease check covers (a bit mask). */
enum { STORE_LEASE_REMOTE = 1, STORE_LEASE_SLURM = 2, STORE_LEASE_EXTERNAL = 4,
       STORE_LEASE_ALL = 7 };

/* Counts of one lease check (store_lease_expire). */
typedef struct store_lease_counts {
  long requeued;  /* remote/slurm runs back to queued with attempt + 1 */
  long failed;    /* remote/slurm runs at max_attempts: failed */
  long crashed;   /* external runs: crashed */
  long cancelled; /* runs whose cancellation was requested: cancelled */
} store_lease_counts;

/* store_lease_expire: in one transaction, every running job of the executors in `which`
 * whose last heartbeat (else its start) is more than timeout_s seconds old has lost its
 * lease: if cancellation was requested it becomes cancelled; an external run becomes
 * crashed (error says since when; it may be resumed); a remote or slurm run at attempt >=
 * max_attempts becomes failed; any other goes back to queued with attempt + 1, its token hash
 * and executor_ref cleared, its progress reset (its committed points stay; the re-run inserts
 * with INSERT OR IGNORE). `now_offset_s` is added to the current time (0 in production; tests
 * move the clock). *counts (OUT, may be NULL). Errors: TD_EINVAL (timeout_s <= 0), TD_EIO. */
int store_lease_expire(store *s, double timeout_s, long max_attempts, unsigned which,
                       double now_offset_s, store_lease_counts *counts /* OUT */, td_err *err);

#endif
