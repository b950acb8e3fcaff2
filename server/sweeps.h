/* sweeps.h: sweeps on the server: a spec expanded (core/scaling/sweep.h) into ordinary child jobs
 * inserted in one transaction, the sweep read back with its status counts, children and
 * cached fit, cancellation, and the worker-side hooks (early stopping of a child, status and
 * fit refresh when a child ends).
 *
 * Tables (migrations/0002_sweeps.sql): sweeps (one row per sweep: normalized spec, status,
 * max_concurrency, early_stopping, fit spec and cached fit) and sweep_children (sweep, idx,
 * job, point, axis values). A child is a row of jobs with sweep_id set and the tag
 * "sweep:<id>"; the job claim (store.c) skips a child whose sweep already runs
 * max_concurrency children.
 *
 * Sweep status, derived from the children's statuses (and persisted when it changes):
 * "queued" (no child has started), "running" (some child is queued or running, and one has
 * started), "finished" (every child has ended), "cancelled" (cancel was requested; running
 * children may still be stopping). finished_at is set once no child is queued or running.
 *
 * The fit: when the spec has one, td_fit_sweep (core/scaling/fit.h) runs over the SUCCEEDED children
 * (params and summary). The result is cached in sweeps.fit with fit_n, the number of
 * succeeded children it saw. A worker refreshes it after a child ends: always for the first
 * 50 succeeded children and when the sweep is done, otherwise once 10% more children have
 * succeeded (a bootstrap over 1000 points takes about 2 s). Reads refresh it when there is no
 * cached fit yet, or when the sweep is done and the cache is stale. */
#ifndef TD_SERVER_SWEEPS_H
#define TD_SERVER_SWEEPS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "kinds/registry.h"
#include "http.h"
#include "store.h"

/* sweeps_create: expand and validate `spec` (borrowed; the POST /api/v1/sweeps body, any
 * JSON) with td_sweep_expand under `lim` (NULL: defaults). Every child is validated before
 * anything is written; then the sweep row, every child job (queued, attempt 1, tag
 * "sweep:<id>", name "<sweep name> <axis=value ...>") and its sweep_children row are
 * inserted in ONE transaction: all of them or none. When max_queued > 0 and the queued jobs
 * plus the new children would exceed it, nothing is inserted, *queue_full (OUT) is 1 and
 * TD_ELIMIT is returned. On success *id (OUT) is the sweep id and *n_children (OUT, may be
 * NULL) the child count.
 * Errors: those of td_sweep_expand (TD_EINVAL / TD_ELIMIT naming the field and the point,
 * TD_ENOTFOUND for an unknown kind), TD_ELIMIT (queue full), TD_EIO, TD_ENOMEM. */
int sweeps_create(store *s, const json_t *spec, const td_limits *lim, long max_queued,
                  int64_t *id /* OUT */, size_t *n_children /* OUT */, int *queue_full /* OUT */,
                  td_err *err);

/* sweeps_create_on: sweeps_create whose children run on `executor` ("local", "remote" or
 * "slurm", migrations/0006; NULL: local), set in the same transaction so that no worker of
 * another executor can claim a child first. */
int sweeps_create_on(store *s, const json_t *spec, const td_limits *lim, long max_queued,
                     const char *executor, int64_t *id /* OUT */, size_t *n_children /* OUT */,
                     int *queue_full /* OUT */, td_err *err);

/* sweeps_exists: 0 when sweep `id` exists (a read without side effects, unlike
 * sweeps_get_json). Errors: TD_ENOTFOUND (field "sweep"), TD_EIO. */
int sweeps_exists(store *s, int64_t id, td_err *err);

/* sweeps_get_json: append the JSON object of sweep `id` to `b`:
 *   {"id", "name", "kind", "mode", "status", "created_at", "finished_at", "n_children",
 *    "max_concurrency", "cancel_requested", "axes" (the spec's axes), "early_stopping",
 *    "spec" (normalized), "counts": {"queued": n, ..., "pruned": n, "total": n},
 *    "fit_spec", "fit" (see below, or null),
 *    "children": [{"id", "idx", "point", "name", "status", "axis_values": {...},
 *                  "params", "progress": {"done", "total"}, "started_at", "finished_at",
 *                  "error", "summary"}, ...]}   (children only when with_children != 0)
 * "fit" is the td_fit_sweep result plus "x"/"y" (or "N"/"D"/"L") paths, "points": [{"x",
 * "y", "job_id"}] ({"N","D","L","job_id"} for chinchilla) in the order of "residuals", and
 * "n_succeeded"; when the fit cannot be made yet it is {"law", paths, "error": "...",
 * "points", "n_succeeded"}. Refreshes the status and, when due, the fit (see above).
 * Errors: TD_ENOTFOUND, TD_EIO, TD_ENOMEM. */
int sweeps_get_json(store *s, int64_t id, int with_children, http_buf *b, td_err *err);

/* sweeps_list_json: append {"sweeps": [...], "next_cursor": "ID" | null} to `b`: sweeps
 * newest first, below before_id (0: from the newest), at most limit (1..1000), each as
 * sweeps_get_json without children and with the fit reduced to {law, params, derived,
 * n_points, error}. Errors: TD_EINVAL (limit), TD_EIO. */
int sweeps_list_json(store *s, int64_t before_id, long limit, http_buf *b, td_err *err);

/* sweeps_cancel: mark sweep `id` cancelled, cancel its queued children at once, and call
 * running_fn(ctx, job_id) for each running child (the caller signals its worker, e.g. with
 * queue_cancel). *n_cancelled / *n_running (OUT, may be NULL) count them.
 * Errors: TD_ENOTFOUND, TD_ECONFLICT (the sweep has already finished), TD_EIO. */
typedef void (*sweeps_job_fn)(void *ctx, int64_t job_id);
int sweeps_cancel(store *s, int64_t id, sweeps_job_fn running_fn, void *ctx,
                  long *n_cancelled /* OUT */, long *n_running /* OUT */, td_err *err);

/* sweeps_refresh: recompute the status of sweep `id` (persisted when it changed) and, when
 * due (force: whenever the cache is stale), its fit. Errors: TD_ENOTFOUND, TD_EIO. */
int sweeps_refresh(store *s, int64_t id, int force, td_err *err);

/* ---------------------------------------------------------------- worker hooks */

/* The worker-side state of one running sweep child (queue.c). */
typedef struct sweeps_hook sweeps_hook;

/* sweeps_hook_begin: when job `job_id` is a sweep child, *out (OUT) is a new hook bound to
 * `s` (the worker's connection, borrowed; it must outlive the hook); otherwise *out is NULL.
 * Errors: TD_EIO, TD_ENOMEM (then *out is NULL and the job runs without early stopping). */
int sweeps_hook_begin(store *s, int64_t job_id, sweeps_hook **out /* OUT */, td_err *err);

/* sweeps_hook_metric: observe one metric point of the child. Points of the early-stopping
 * metric are kept as the child's curve (its best value so far, its last two steps); the rule
 * is consulted with the siblings' curves read from SQLite, and only
 *   - median: at the first point at or after grace_steps, then whenever the step has grown
 *     by 5% (at least 1) since the last consultation (about 150 reads over 10^4 steps);
 *     each sibling's running average is cached and extended incrementally;
 *   - asha: at the points that cross a rung (min_steps * eta^k).
 * Once pruned, later points are ignored. Never fails (a read error only skips the check). */
void sweeps_hook_metric(sweeps_hook *h, const char *key, long step, double value);

/* sweeps_hook_pruned: non-zero once the rule decided to stop the child; *reason (OUT, may be
 * NULL) then points at the decision's text (owned by the hook). */
int sweeps_hook_pruned(const sweeps_hook *h, const char **reason /* OUT */);

/* sweeps_hook_end: the child's final status was recorded: refresh the sweep (status, fit when
 * due), then free the hook. `requeued` non-zero: the job went back to the queue (shutdown),
 * nothing to refresh. NULL is a no-op. */
void sweeps_hook_end(sweeps_hook *h, int requeued);

#endif
