/* lease.c: the lease thread of `tdlab serve` (heartbeat expiry of remote/slurm/external runs). */
#include "lease.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "log.h"
#include "store.h"
#include "store_cache.h"
#include "store_remote.h"

struct lease {
  lease_config cfg;
  store *st;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
};

static void *lease_main(void *arg) {
  lease *l = arg;
  double every = l->cfg.timeout_s / 4;
  if (every > 5) every = 5;
  if (every < 0.1) every = 0.1;
  /* Grace after start-up: no run could beat while the server was down, so the first check
   * comes one timeout after the start (a restart never expires a live run). */
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = ts.tv_nsec + (long long)(every * 1e9);
    ts.tv_sec += ns / 1000000000LL;
    ts.tv_nsec = ns % 1000000000LL;
    while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) != ETIMEDOUT) {
    }
    if (l->stop) break;
    if ((ts.tv_sec - t0.tv_sec) + (ts.tv_nsec - t0.tv_nsec) * 1e-9 < l->cfg.timeout_s) continue;
    pthread_mutex_unlock(&l->mu); /* no lock held while writing */
    store_lease_counts c;
    td_err e;
    td_err_clear(&e);
    if (store_lease_expire(l->st, l->cfg.timeout_s, l->cfg.max_attempts, l->cfg.which, 0, &c,
                           &e))
      log_emit(LOG_WARN, "lease_check_failed", "msg=\"%s\"", e.msg);
    else if (c.requeued || c.failed || c.crashed || c.cancelled)
      log_emit(LOG_WARN, "lease_expired", "requeued=%ld failed=%ld crashed=%ld cancelled=%ld",
               c.requeued, c.failed, c.crashed, c.cancelled);
    pthread_mutex_lock(&l->mu);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

int lease_start(const lease_config *cfg, lease **out, td_err *err) {
  *out = NULL;
  if (!cfg || !cfg->db_path || !(cfg->timeout_s > 0))
    return td_err_set(err, TD_EINVAL, NULL, "lease: db_path and timeout_s > 0 are needed");
  lease *l = calloc(1, sizeof *l);
  if (!l) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  l->cfg = *cfg;
  if (!l->cfg.which) l->cfg.which = STORE_LEASE_ALL;
  int rc = store_open(cfg->db_path, 0, &l->st, err);
  if (!rc && cfg->cache) rc = store_cache_attach(l->st, cfg->cache, err);
  if (rc) {
    store_close(l->st);
    free(l);
    return rc;
  }
  pthread_mutex_init(&l->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&l->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&l->th, NULL, lease_main, l) != 0) {
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    store_close(l->st);
    free(l);
    return td_err_set(err, TD_ENOMEM, NULL, "cannot start the lease thread");
  }
  *out = l;
  return 0;
}

void lease_stop(lease *l) {
  if (!l) return;
  pthread_mutex_lock(&l->mu);
  l->stop = 1;
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->th, NULL);
  pthread_cond_destroy(&l->cv);
  pthread_mutex_destroy(&l->mu);
  store_close(l->st);
  free(l);
}
