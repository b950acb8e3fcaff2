/* queue.h: worker threads that claim queued jobs from SQLite, run them and record the result. */
#ifndef TD_SERVER_QUEUE_H
#define TD_SERVER_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "kinds/registry.h"
#include "store.h"

typedef struct queue queue;

/* How a worker finds the kind of a claimed job; tests substitute their own kinds. */
typedef const td_kind *(*queue_find_kind_fn)(const char *name);

typedef struct queue_config {
  const char *db_path;       /* each worker opens its own connection to it (migrated) */
  int workers;               /* worker threads, >= 0 (0: jobs stay queued) */
  size_t batch_points;       /* metric batch size in points (0: 1024) */
  long batch_ms;             /* metric batch age limit in ms (0: 250) */
  double job_timeout_s;      /* wall-clock limit per job in seconds; 0: none */
  double max_job_points;     /* metric points one job may write; a job that reaches it ends
                                failed, keeping them; 0: none */
  int busy_timeout_ms;       /* SQLite busy_timeout (0: 5000) */
  queue_find_kind_fn find_kind; /* NULL: td_kinds_find */
  struct store_cache *cache; /* job cache attached to each worker's connection (NULL: none) */
  int worker_nice;           /* 1..19: the worker threads' nice value (lower priority); 0: unchanged */
} queue_config;

#define QUEUE_N_RUN_LE 10
#define QUEUE_N_WAIT_LE 10
typedef struct queue_stats {
  int workers;              /* threads */
  int busy;                 /* threads running a job now */
  uint64_t points;          /* metric points committed since start */
  uint64_t jobs_started;    /* claims since start */
  uint64_t jobs_finished;   /* final statuses written since start */
  /* histograms since start, per bucket (not cumulative; the last is +Inf): how long a job
   * ran (claim to final status) and how long it waited (created_at to claim), in seconds */
  uint64_t run_count[QUEUE_N_RUN_LE + 1], wait_count[QUEUE_N_WAIT_LE + 1];
  double run_sum_s, wait_sum_s;
} queue_stats;

/* The upper bounds (seconds) of the job-duration and queue-wait histogram buckets. */
extern const double queue_run_le[QUEUE_N_RUN_LE], queue_wait_le[QUEUE_N_WAIT_LE];

/* queue_create: open one store per worker and start the workers. Each loops: claim (under
 * the queue mutex, which guards nothing but the claim), run the job's kind with a sink that
 * writes to SQLite in batches, record the final status, repeat; with nothing queued it sleeps
 * on a condition variable (woken by queue_notify, or every 2 s to notice jobs inserted by
 * other processes). *out (OUT) must be destroyed with queue_destroy.
 * Errors: TD_EINVAL (bad config), TD_EIO (cannot open the database), TD_ENOMEM. */
int queue_create(const queue_config *cfg, queue **out /* OUT */, td_err *err);

/* queue_notify: wake one idle worker (after a job was inserted). */
void queue_notify(queue *q);

/* queue_cancel: cancel job `id` through `s` (the caller's connection): a queued job becomes
 * cancelled at once (*outcome = STORE_CANCELLED); a running job is flagged and its worker's
 * should_stop fires at the next step (*outcome = STORE_RUNNING; the job then ends as
 * cancelled unless it finished first). Errors: TD_ENOTFOUND, TD_ECONFLICT (finished), TD_EIO. */
int queue_cancel(queue *q, store *s, int64_t id, int *outcome /* OUT */, td_err *err);

/* queue_stats_get: a snapshot of the counters. */
void queue_stats_get(queue *q, queue_stats *out /* OUT */);

/* queue_count_points: adds n to the committed-points counter (tdlab_metric_points_ingested_total)
 * for points stored outside the workers (the ingestion endpoints of remote runs). q may be NULL. */
void queue_count_points(queue *q, uint64_t n);

/* queue_destroy: graceful stop. Every running job sees should_stop at its next step, its
 * buffered metrics are flushed and it goes back to queued (attempt unchanged); then the
 * workers are joined and their connections closed. NULL is a no-op. */
void queue_destroy(queue *q);

#endif
