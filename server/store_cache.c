/* store_cache.c: a shared cache of rendered job records, invalidated by SQLite's own change
 * hooks after every commit that touches the jobs table.
 *
 * DESIGN. GET /api/v1/jobs/{id} is the hottest read (dashboards poll it), and most of its cost
 * was the SQLite read (a read transaction takes file locks) and the JSON rendering. The cache
 * keeps the rendered bytes per job id. Correctness does not depend on every write path
 * remembering to invalidate: each connection that may write (workers, HTTP pool) is attached,
 * and SQLite tells us which job rows it changed (sqlite3_update_hook gives the rowid of every
 * INSERT, UPDATE and DELETE on a rowid table; metrics is WITHOUT ROWID, so the hot metric
 * inserts never call it). The ids are applied when the WAL hook fires, which SQLite calls
 * after the commit has happened and its write lock is released; a rollback discards them. A
 * reader takes the slot's generation before reading the row and an entry is only served
 * while its generation is current, so a row read just before a commit can never be served
 * after it. A TTL bounds the staleness from writers that are not attached. */
#include "store_cache.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_internal.h"

#define N_LOCKS 64
#define MAX_DIRTY 32
#define CHECKPOINT_FRAMES 1000 /* SQLite's default wal_autocheckpoint */
#define TOTAL_BYTES_CAP (32u << 20) /* all entries together; a put past it is dropped */

typedef struct cache_slot {
  int64_t id;      /* 0: empty */
  uint64_t gen, epoch;
  long long t_ms;
  char *data;
  size_t len, cap;
} cache_slot;

/* The change hooks' state of one attached connection. */
typedef struct hook_ctx {
  store_cache *c;
  store *s; /* the connection's store (store__wal_bound) */
  int wal;
  int n_dirty, all;
  int64_t dirty[MAX_DIRTY];
  struct hook_ctx *next;
} hook_ctx;

struct store_cache {
  size_t mask;
  size_t max_bytes;
  long ttl_ms;
  cache_slot *slots;
  _Atomic uint64_t *gen;
  _Atomic uint64_t epoch;
  atomic_int ck_frames; /* WAL size at the last checkpoint attempt */
  atomic_ullong hits, misses;
  atomic_size_t bytes; /* sum of the slots' buffer capacities */
  pthread_mutex_t mu[N_LOCKS];
  pthread_mutex_t hooks_mu;
  hook_ctx *hooks;
};

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store_cache_create(size_t slots, size_t max_bytes, long ttl_ms, store_cache **out,
                       td_err *err) {
  *out = NULL;
  if (slots < 1 || slots > (1u << 20) || max_bytes < 1 || ttl_ms <= 0)
    return td_err_set(err, TD_EINVAL, NULL, "bad job cache configuration");
  size_t n = 16;
  while (n < slots) n *= 2;
  store_cache *c = calloc(1, sizeof *c);
  if (!c) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  c->slots = calloc(n, sizeof *c->slots);
  c->gen = calloc(n, sizeof *c->gen);
  if (!c->slots || !c->gen) {
    free(c->slots);
    free((void *)c->gen);
    free(c);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  c->mask = n - 1;
  c->max_bytes = max_bytes;
  c->ttl_ms = ttl_ms;
  for (int i = 0; i < N_LOCKS; i++) pthread_mutex_init(&c->mu[i], NULL);
  pthread_mutex_init(&c->hooks_mu, NULL);
  *out = c;
  return 0;
}

void store_cache_destroy(store_cache *c) {
  if (!c) return;
  for (size_t i = 0; i <= c->mask; i++) free(c->slots[i].data);
  free(c->slots);
  free((void *)c->gen);
  for (hook_ctx *h = c->hooks, *next; h; h = next) {
    next = h->next;
    free(h);
  }
  for (int i = 0; i < N_LOCKS; i++) pthread_mutex_destroy(&c->mu[i]);
  pthread_mutex_destroy(&c->hooks_mu);
  free(c);
}

void store_cache_invalidate(store_cache *c, int64_t id) {
  if (id <= 0) atomic_fetch_add_explicit(&c->epoch, 1, memory_order_release);
  else atomic_fetch_add_explicit(&c->gen[(uint64_t)id & c->mask], 1, memory_order_release);
}

/* ---------------------------------------------------------------- hooks */

static void hook_reset(hook_ctx *h) {
  h->n_dirty = 0;
  h->all = 0;
}

static void hook_apply(hook_ctx *h) {
  for (int i = 0; i < h->n_dirty; i++) store_cache_invalidate(h->c, h->dirty[i]);
  if (h->all) store_cache_invalidate(h->c, 0);
  hook_reset(h);
}

static void on_update(void *arg, int op, const char *db, const char *table, sqlite3_int64 rowid) {
  (void)op;
  hook_ctx *h = arg;
  if (strcmp(table, "jobs") != 0 || strcmp(db, "main") != 0) return;
  if (h->n_dirty && h->dirty[h->n_dirty - 1] == rowid) return;
  if (h->n_dirty < MAX_DIRTY) h->dirty[h->n_dirty++] = rowid;
  else h->all = 1; /* a statement that touched many jobs: forget everything */
}

static void on_rollback(void *arg) { hook_reset(arg); }

/* Called after the commit, with the write lock released: now readers can see the change.
 * It also replaces SQLite's auto-checkpoint (a PASSIVE checkpoint whenever the WAL holds 1000
 * frames or more), with one difference: while other connections keep reading and writing, a
 * checkpoint cannot reset the WAL, so the default retries (and fsyncs) after every single
 * commit; here the next attempt waits until another CHECKPOINT_FRAMES frames were added (or
 * the WAL was reset meanwhile). */
static int on_wal_commit(void *arg, sqlite3 *db, const char *zdb, int n_frames) {
  hook_ctx *h = arg;
  hook_apply(h);
  if (store__wal_bound(h->s, db, zdb, n_frames)) return SQLITE_OK; /* the WAL bound (store.c) */
  if (n_frames >= CHECKPOINT_FRAMES) {
    int last = atomic_load_explicit(&h->c->ck_frames, memory_order_relaxed);
    if ((n_frames < last || n_frames - last >= CHECKPOINT_FRAMES) &&
        atomic_compare_exchange_strong(&h->c->ck_frames, &last, n_frames))
      sqlite3_wal_checkpoint(db, zdb);
  }
  return SQLITE_OK;
}

/* Without WAL there is no post-commit hook: invalidate just before the commit. */
static int on_commit(void *arg) {
  hook_ctx *h = arg;
  if (!h->wal) hook_apply(h);
  return 0;
}

int store_cache_attach(store *s, store_cache *c, td_err *err) {
  sqlite3 *db = store__db(s);
  hook_ctx *h = calloc(1, sizeof *h);
  if (!h) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  h->c = c;
  h->s = s;
  sqlite3_stmt *q = NULL;
  if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW) {
    const char *m = (const char *)sqlite3_column_text(q, 0);
    h->wal = m && strcmp(m, "wal") == 0;
  }
  sqlite3_finalize(q);
  pthread_mutex_lock(&c->hooks_mu);
  h->next = c->hooks;
  c->hooks = h;
  pthread_mutex_unlock(&c->hooks_mu);
  sqlite3_update_hook(db, on_update, h);
  sqlite3_rollback_hook(db, on_rollback, h);
  sqlite3_commit_hook(db, on_commit, h);
  if (h->wal) sqlite3_wal_hook(db, on_wal_commit, h);
  return 0;
}

/* ---------------------------------------------------------------- lookups */

int store_cache_get(store_cache *c, int64_t id, store_cache_fn fn, void *ctx,
                    store_cache_stamp *stamp) {
  size_t i = (uint64_t)id & c->mask;
  /* The stamp is taken before the slot is looked at (and before the caller reads the row). */
  stamp->epoch = atomic_load_explicit(&c->epoch, memory_order_acquire);
  stamp->gen = atomic_load_explicit(&c->gen[i], memory_order_acquire);
  long long now = mono_ms();
  pthread_mutex_lock(&c->mu[i % N_LOCKS]);
  const cache_slot *s = &c->slots[i];
  int hit = id > 0 && s->id == id && s->data && s->gen == stamp->gen &&
            s->epoch == stamp->epoch && now - s->t_ms < c->ttl_ms;
  if (hit) fn(ctx, s->data, s->len);
  pthread_mutex_unlock(&c->mu[i % N_LOCKS]);
  atomic_fetch_add_explicit(hit ? &c->hits : &c->misses, 1, memory_order_relaxed);
  return hit;
}

void store_cache_put(store_cache *c, int64_t id, const store_cache_stamp *stamp,
                     const char *data, size_t len) {
  if (id <= 0 || len > c->max_bytes) return;
  size_t i = (uint64_t)id & c->mask;
  long long now = mono_ms();
  pthread_mutex_lock(&c->mu[i % N_LOCKS]);
  cache_slot *s = &c->slots[i];
  if (atomic_load_explicit(&c->gen[i], memory_order_acquire) != stamp->gen ||
      atomic_load_explicit(&c->epoch, memory_order_acquire) != stamp->epoch)
    goto out; /* changed while the caller was reading: its copy may be old */
  size_t nc = len + 1 < 1024 ? 1024 : len + 1;
  if (s->cap < len + 1 || s->cap > 4 * nc) { /* grow, or shrink a buffer far too big */
    if (nc > s->cap && atomic_load(&c->bytes) + (nc - s->cap) > TOTAL_BYTES_CAP) goto out;
    char *nd = realloc(s->data, nc);
    if (!nd) goto out;
    if (nc > s->cap) atomic_fetch_add(&c->bytes, nc - s->cap);
    else atomic_fetch_sub(&c->bytes, s->cap - nc);
    s->data = nd;
    s->cap = nc;
  }
  memcpy(s->data, data, len);
  s->data[len] = '\0';
  s->len = len;
  s->id = id;
  s->gen = stamp->gen;
  s->epoch = stamp->epoch;
  s->t_ms = now;
out:
  pthread_mutex_unlock(&c->mu[i % N_LOCKS]);
}

void store_cache_stats(store_cache *c, uint64_t *hits, uint64_t *misses) {
  *hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
  *misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
}
