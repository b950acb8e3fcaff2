/* queue.c: worker threads that claim queued jobs from SQLite, run them and record the result.
 *
 * DESIGN. SQLite is the queue: a job is claimed with one UPDATE ... RETURNING, so a claim is
 * atomic even across processes. The mutex and condition variable here only put idle workers
 * to sleep and wake them (as in redis's bio.c): the mutex is held for the claim itself and for
 * flagging a cancellation, never while a job computes. Each worker owns one SQLite connection
 * and, while running a job, a buffered metric writer (store_mw) that commits one transaction
 * per batch of points or per batch_ms. The job sees only its params and a td_sink: no HTTP, no
 * SQL, so the same job can run under `tdlab run` elsewhere. Cancellation is cooperative: the
 * sink's should_stop fires when the job was cancelled, when it exceeded its wall-clock limit,
 * or when the server is shutting down; the kind returns at the next step. On shutdown a
 * stopped job is re-queued (its attempt is not counted: nothing went wrong); after a crash,
 * store_recover re-queues it with attempt+1. */
#include "queue.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "store_cache.h"
#include "sweeps.h"

typedef struct worker {
  struct queue *q;
  int index;
  pthread_t thread;
  int thread_started;
  store *st;
  _Atomic int64_t job_id; /* 0 when idle; written under q->mu */
  atomic_int cancel;      /* the running job was cancelled by a user */
} worker;

struct queue {
  queue_config cfg;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  atomic_int stopping;
  worker *workers;
  int n_workers;
  atomic_int busy;
  atomic_ullong points, started, finished;
  atomic_ullong run_count[QUEUE_N_RUN_LE + 1], wait_count[QUEUE_N_WAIT_LE + 1];
  atomic_ullong run_sum_us, wait_sum_us;
};

const double queue_run_le[QUEUE_N_RUN_LE] = {0.1, 1, 5, 30, 60, 300, 900, 3600, 14400, 86400};
const double queue_wait_le[QUEUE_N_WAIT_LE] = {0.01, 0.1, 1, 5, 30, 60, 300, 900, 3600, 86400};

static void observe(atomic_ullong *counts, const double *le, int n, atomic_ullong *sum_us,
                    double x) {
  if (!(x >= 0)) x = 0;
  int k = 0;
  while (k < n && x > le[k]) k++;
  atomic_fetch_add(&counts[k], 1);
  atomic_fetch_add(sum_us, (unsigned long long)(x * 1e6));
}

/* The sink context of one running job. */
typedef struct job_ctx {
  worker *w;
  int64_t id;
  store_mw *mw;
  uint64_t points_seen;
  long long start_ms;
  long long timeout_ms; /* 0: none */
  int timed_out;
  int write_failed;
  int full;             /* a write found the disk or the database full: the job ends failed */
  double max_points;    /* queue_config.max_job_points (0: none) */
  uint64_t n_put;       /* metric points the job has reported */
  int too_many;         /* n_put reached max_points: the job ends failed at its next check */
  long done, total;
  sweeps_hook *sweep; /* set for a sweep child: early stopping, refresh on end (sweeps.h) */
} job_ctx;

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void count_points(job_ctx *c) {
  uint64_t now = store_mw_written(c->mw);
  if (now > c->points_seen) {
    atomic_fetch_add(&c->w->q->points, now - c->points_seen);
    c->points_seen = now;
  }
}

static void note_write(job_ctx *c, int rc) {
  if (rc == TD_EFULL && !c->full) {
    c->full = 1;
    log_emit(LOG_ERROR, "database_full", "job=%lld msg=\"disk or database full; the job stops\"",
             (long long)c->id);
  }
  if (rc == TD_EIO && !c->write_failed) {
    c->write_failed = 1;
    log_emit(LOG_WARN, "metric_write_failed", "job=%lld msg=\"batch not committed; retrying\"",
             (long long)c->id);
  } else if (rc == 0) {
    c->write_failed = 0;
  }
  count_points(c);
}

static int sink_metric(void *ctx, const char *key, long step, double value) {
  job_ctx *c = ctx;
  if (c->too_many) return 0; /* dropped: the job stops at its next should_stop */
  if (c->max_points > 0 && (double)++c->n_put > c->max_points) {
    c->too_many = 1;
    return 0;
  }
  int rc = store_mw_put(c->mw, key, step, value);
  note_write(c, rc);
  if (c->sweep) sweeps_hook_metric(c->sweep, key, step, value);
  /* TD_EIO: the point stays buffered and the next flush retries; TD_EFULL: should_stop ends
   * the job at its next check */
  return rc == TD_EIO || rc == TD_EFULL ? 0 : rc;
}


static int sink_artifact(void *ctx, const char *name, const char *content_type, const void *data,
                         size_t len) {
  job_ctx *c = ctx;
  if (!name || !store_valid_artifact_name(name) || !content_type || !*content_type ||
      strlen(content_type) > 127 || (len && !data))
    return TD_EINVAL;
  td_err e;
  td_err_clear(&e);
  int rc = store_artifact_put(c->w->st, c->id, name, content_type, data, len, &e);
  if (rc) log_emit(LOG_WARN, "artifact_write_failed", "job=%lld name=%s", (long long)c->id, name);
  return rc;
}

static void sink_progress(void *ctx, long done, long total) {
  job_ctx *c = ctx;
  c->done = done;
  c->total = total;
  store_mw_progress(c->mw, done, total);
  note_write(c, store_mw_tick(c->mw));
}

static int sink_should_stop(void *ctx) {
  job_ctx *c = ctx;
  note_write(c, store_mw_tick(c->mw));
  if (atomic_load(&c->w->cancel) || atomic_load(&c->w->q->stopping) || c->full || c->too_many)
    return 1;
  if (c->sweep && sweeps_hook_pruned(c->sweep, NULL)) return 1;
  if (c->timeout_ms > 0 && mono_ms() - c->start_ms > c->timeout_ms) {
    c->timed_out = 1;
    return 1;
  }
  return 0;
}

/* The checkpoint reader for params.init_from / params.fork (sink.h): the job's own worker
 * connection reads the artifact or the uploaded checkpoint (store_checkpoint_read). */
static int sink_checkpoint(void *ctx, long job, long step, long checkpoint_id, void **data,
                           size_t *len) {
  job_ctx *c = ctx;
  td_err e;
  td_err_clear(&e);
  int rc = store_checkpoint_read(c->w->st, job, step, checkpoint_id, data, len, &e);
  if (rc && rc != TD_ENOTFOUND)
    log_emit(LOG_WARN, "checkpoint_read_failed", "job=%lld code=%d", (long long)c->id, rc);
  return rc;
}

/* Retry a write a few times: a transient SQLITE_BUSY past busy_timeout should not lose a
 * job's result. */
static int flush_retry(job_ctx *c) {
  int rc = 0;
  for (int i = 0; i < 20 && !c->full; i++) {
    rc = store_mw_flush(c->mw);
    if (rc == TD_EFULL) c->full = 1;
    if (rc != TD_EIO) break;
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
  }
  count_points(c);
  return rc;
}

static void record(worker *w, int64_t id, int status, const char *error, const char *summary,
                   long done, long total) {
  td_err e;
  int rc = 0;
  /* a full disk may leave no room for the summary: retry without it; the row is updated in
   * place, so a short error text usually fits in the page the row already has */
  for (int i = 0; i < 40; i++) {
    td_err_clear(&e);
    rc = status == STORE_QUEUED ? store_job_requeue(w->st, id, &e)
                                : store_job_finish(w->st, id, status, error, i < 10 ? summary : NULL,
                                                   done, total, &e);
    if (rc != TD_EIO && rc != TD_EFULL) break;
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (rc)
    log_emit(LOG_ERROR, "job_record_failed", "job=%lld status=%s msg=%s", (long long)id,
             store_status_name(status), e.msg);
}

static void run_job(worker *w, store_claimed *cl) {
  queue *q = w->q;
  long long t0 = mono_ms();
  char kq[160];
  log_emit(LOG_INFO, "job_started", "job=%lld kind=%s attempt=%ld worker=%d", (long long)cl->id,
           log_quote(kq, sizeof kq, cl->kind), cl->attempt, w->index);
  observe(q->wait_count, queue_wait_le, QUEUE_N_WAIT_LE, &q->wait_sum_us, cl->wait_s);
  const td_kind *kind = (q->cfg.find_kind ? q->cfg.find_kind : td_kinds_find)(cl->kind);
  json_error_t je;
  json_t *params = json_loads(cl->params, 0, &je);
  job_ctx c = {.w = w, .id = cl->id, .start_ms = t0,
               .timeout_ms = (long long)(q->cfg.job_timeout_s * 1000.0),
               .max_points = q->cfg.max_job_points};
  td_err e;
  td_err_clear(&e);
  int status = STORE_FAILED, rc = 0;
  char error[512] = "";
  char *summary_text = NULL;
  const char *pruned_why = NULL;
  if (sweeps_hook_begin(w->st, cl->id, &c.sweep, &e)) {
    log_emit(LOG_WARN, "sweep_hook_failed", "job=%lld code=%d (runs without early stopping)",
             (long long)cl->id, e.code);
    td_err_clear(&e);
  }
  if (!kind || !params || !json_is_object(params)) {
    snprintf(error, sizeof error, "%s", !kind ? "unknown kind" : "stored params are not a JSON object");
  } else if (store_mw_create(w->st, cl->id, q->cfg.batch_points, q->cfg.batch_ms, &c.mw, &e)) {
    snprintf(error, sizeof error, "%s", e.msg);
  } else {
    td_sink sink = {.ctx = &c,
                    .metric = sink_metric,
                    .artifact = sink_artifact,
                    .progress = sink_progress,
                    .should_stop = sink_should_stop,
                    .checkpoint = sink_checkpoint};
    json_t *summary = NULL;
    rc = kind->run(params, &sink, &summary, &e);
    int frc = flush_retry(&c);
    if (summary) summary_text = http_json_dump(summary);
    json_decref(summary);
    if (c.full || frc == TD_EFULL) {
      status = STORE_FAILED;
      snprintf(error, sizeof error,
               "database or disk is full: the job stopped at step %ld; the %llu points stored "
               "before are kept",
               c.done, (unsigned long long)store_mw_written(c.mw));
    } else if (c.too_many) {
      status = STORE_FAILED;
      snprintf(error, sizeof error,
               "the job reached the server's limit of %.0f metric points per job "
               "(--max-job-points) at step %ld; the %llu points stored before are kept (log "
               "less often, e.g. a larger log_every or eval_every, or ask for a higher limit)",
               c.max_points, c.done, (unsigned long long)store_mw_written(c.mw));
    } else if (frc) {
      status = STORE_FAILED;
      snprintf(error, sizeof error, "could not store the last metrics (database error)");
    } else if (rc == 0) {
      status = STORE_SUCCEEDED;
    } else if (rc == TD_EDIVERGED) {
      status = STORE_DIVERGED;
      snprintf(error, sizeof error, "%s", e.msg[0] ? e.msg : td_strerror(rc));
    } else if (rc == TD_ECANCELLED && !atomic_load(&w->cancel) &&
               sweeps_hook_pruned(c.sweep, &pruned_why)) {
      status = STORE_PRUNED; /* early stopping of a sweep child (sweeps.h) */
      snprintf(error, sizeof error, "pruned by early stopping: %s", pruned_why);
    } else if (atomic_load(&w->cancel)) {
      status = STORE_CANCELLED;
      snprintf(error, sizeof error, "cancelled by request");
    } else if (c.timed_out) {
      status = STORE_FAILED;
      snprintf(error, sizeof error, "timed out after %.3g s (the limit is %g s)",
               (mono_ms() - t0) / 1000.0, q->cfg.job_timeout_s);
    } else if (rc == TD_ECANCELLED && atomic_load(&q->stopping)) {
      status = STORE_QUEUED; /* shutdown: back to the queue */
    } else if (rc == TD_ECANCELLED) {
      status = STORE_CANCELLED;
      snprintf(error, sizeof error, "cancelled");
    } else {
      status = STORE_FAILED;
      snprintf(error, sizeof error, "%s", e.msg[0] ? e.msg : td_strerror(rc));
    }
  }
  record(w, cl->id, status, error[0] ? error : NULL, summary_text, c.done, c.total);
  sweeps_hook_end(c.sweep, status == STORE_QUEUED); /* sweep status and fit refresh */
  atomic_fetch_add(&q->finished, 1);
  if (status != STORE_QUEUED)
    observe(q->run_count, queue_run_le, QUEUE_N_RUN_LE, &q->run_sum_us, (mono_ms() - t0) / 1000.0);
  char eq[600];
  log_emit(status == STORE_FAILED ? LOG_WARN : LOG_INFO,
           status == STORE_QUEUED ? "job_requeued" : "job_finished",
           "job=%lld status=%s seconds=%.3f points=%llu error=%s", (long long)cl->id,
           store_status_name(status), (mono_ms() - t0) / 1000.0,
           (unsigned long long)c.points_seen, log_quote(eq, sizeof eq, error));
  free(summary_text);
  store_mw_destroy(c.mw);
  json_decref(params);
}

static void *worker_main(void *arg) {
  worker *w = arg;
  queue *q = w->q;
  /* Linux keeps a nice value per thread: lowering the workers' priority keeps the HTTP
   * threads (and so the dashboard and the API) responsive while jobs saturate the cores. */
  if (q->cfg.worker_nice > 0 && setpriority(PRIO_PROCESS, (id_t)gettid(), q->cfg.worker_nice) != 0)
    log_emit(LOG_WARN, "worker_nice_failed", "worker=%d nice=%d", w->index, q->cfg.worker_nice);
  char name[16]; /* shown by top -H and ps -L; bench/rest.sh tells the HTTP threads apart */
  snprintf(name, sizeof name, "td-worker-%d", w->index % 1000);
  pthread_setname_np(pthread_self(), name);
  pthread_mutex_lock(&q->mu);
  while (!atomic_load(&q->stopping)) {
    store_claimed cl;
    int found = 0;
    td_err e;
    td_err_clear(&e);
    int rc = store_job_claim(w->st, &cl, &found, &e);
    if (rc) log_emit(LOG_ERROR, "claim_failed", "worker=%d msg=\"%s\"", w->index, e.msg);
    if (!rc && found) {
      atomic_store(&w->cancel, 0);
      atomic_store(&w->job_id, cl.id);
      pthread_mutex_unlock(&q->mu);
      atomic_fetch_add(&q->busy, 1);
      atomic_fetch_add(&q->started, 1);
      run_job(w, &cl);
      atomic_fetch_sub(&q->busy, 1);
      store_claimed_free(&cl);
      pthread_mutex_lock(&q->mu);
      atomic_store(&w->job_id, 0);
      continue;
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += 2;
    pthread_cond_timedwait(&q->cv, &q->mu, &dl);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

int queue_create(const queue_config *cfg, queue **out, td_err *err) {
  *out = NULL;
  if (!cfg || !cfg->db_path || cfg->workers < 0 || cfg->workers > 1024 || cfg->job_timeout_s < 0)
    return td_err_set(err, TD_EINVAL, "workers", "bad queue configuration");
  queue *q = calloc(1, sizeof *q);
  if (!q) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  q->cfg = *cfg;
  pthread_mutex_init(&q->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&q->cv, &ca);
  pthread_condattr_destroy(&ca);
  q->n_workers = cfg->workers;
  q->workers = calloc(cfg->workers ? (size_t)cfg->workers : 1, sizeof *q->workers);
  if (!q->workers) {
    queue_destroy(q);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  for (int i = 0; i < q->n_workers; i++) {
    worker *w = &q->workers[i];
    w->q = q;
    w->index = i;
    int rc = store_open(cfg->db_path, cfg->busy_timeout_ms, &w->st, err);
    if (!rc && cfg->cache) rc = store_cache_attach(w->st, cfg->cache, err);
    if (rc) {
      queue_destroy(q);
      return rc;
    }
  }
  for (int i = 0; i < q->n_workers; i++) {
    worker *w = &q->workers[i];
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      queue_destroy(q);
      return td_err_set(err, TD_ENOMEM, NULL, "cannot start worker thread %d", i);
    }
    w->thread_started = 1;
  }
  *out = q;
  return 0;
}

void queue_notify(queue *q) {
  pthread_mutex_lock(&q->mu);
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

int queue_cancel(queue *q, store *s, int64_t id, int *outcome, td_err *err) {
  pthread_mutex_lock(&q->mu);
  int rc = store_job_cancel(s, id, outcome, err);
  if (!rc && *outcome == STORE_RUNNING) {
    for (int i = 0; i < q->n_workers; i++)
      if (atomic_load(&q->workers[i].job_id) == id) atomic_store(&q->workers[i].cancel, 1);
  }
  pthread_mutex_unlock(&q->mu);
  if (!rc)
    log_emit(LOG_INFO, *outcome == STORE_RUNNING ? "job_cancel_requested" : "job_cancelled",
             "job=%lld", (long long)id);
  return rc;
}

void queue_count_points(queue *q, uint64_t n) {
  if (q && n) atomic_fetch_add(&q->points, n);
}

void queue_stats_get(queue *q, queue_stats *out) {
  out->workers = q->n_workers;
  out->busy = atomic_load(&q->busy);
  out->points = atomic_load(&q->points);
  out->jobs_started = atomic_load(&q->started);
  out->jobs_finished = atomic_load(&q->finished);
  for (int k = 0; k <= QUEUE_N_RUN_LE; k++) out->run_count[k] = atomic_load(&q->run_count[k]);
  for (int k = 0; k <= QUEUE_N_WAIT_LE; k++) out->wait_count[k] = atomic_load(&q->wait_count[k]);
  out->run_sum_s = atomic_load(&q->run_sum_us) / 1e6;
  out->wait_sum_s = atomic_load(&q->wait_sum_us) / 1e6;
}

void queue_destroy(queue *q) {
  if (!q) return;
  pthread_mutex_lock(&q->mu);
  atomic_store(&q->stopping, 1);
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
  for (int i = 0; q->workers && i < q->n_workers; i++) {
    if (q->workers[i].thread_started) pthread_join(q->workers[i].thread, NULL);
    store_close(q->workers[i].st);
  }
  free(q->workers);
  pthread_cond_destroy(&q->cv);
  pthread_mutex_destroy(&q->mu);
  free(q);
}
