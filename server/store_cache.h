/* store_cache.h: a shared cache of rendered job records, invalidated by SQLite's own change
 * hooks after every commit that touches the jobs table. */
#ifndef TD_SERVER_STORE_CACHE_H
#define TD_SERVER_STORE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "store.h"

/* A fixed-size, direct-mapped cache (slot = id mod size; job ids are dense, so recent jobs do
 * not collide) of one byte string per job id, e.g. the JSON of GET /api/v1/jobs/{id}. It is
 * shared by threads: every slot has a generation counter, and a connection attached with
 * store_cache_attach bumps the generation of each job row it changed AFTER its transaction
 * committed (SQLite's update hook collects the rowids, the WAL hook applies them). A reader
 * takes a stamp (the generations) BEFORE it reads the row, and an entry is served only while
 * its stamp is still current, so a read that raced with a commit is never served afterwards.
 * Entries also expire after ttl_ms, which bounds the staleness caused by a writer that is not
 * attached (another process, the sqlite3 shell). All entries together hold at most 32 MiB
 * (a put past that is dropped). Thread-safe. */
typedef struct store_cache store_cache;

/* What a reader must pass back to store_cache_put: the generations seen before the read. */
typedef struct store_cache_stamp {
  uint64_t gen, epoch;
} store_cache_stamp;

/* store_cache_create: a cache of `slots` entries (rounded up to a power of two, 16..1<<20),
 * entries of at most max_bytes (larger values are not cached), expiring after ttl_ms (> 0).
 * *out (OUT) is destroyed with store_cache_destroy after every attached connection is closed.
 * Errors: TD_EINVAL (bad sizes), TD_ENOMEM. */
int store_cache_create(size_t slots, size_t max_bytes, long ttl_ms, store_cache **out /* OUT */,
                       td_err *err);

/* store_cache_destroy: free the cache and its hook contexts. NULL is a no-op. */
void store_cache_destroy(store_cache *c);

/* store_cache_attach: install the change hooks on s's connection (borrowed; used by one
 * thread at a time, as every store). Replaces SQLite's default WAL auto-checkpoint hook with
 * one that still checkpoints every 1000 WAL frames. On a database that is not in WAL mode
 * (":memory:"), invalidation happens in the commit hook, just before the commit, so a
 * concurrent reader may keep an old copy for up to ttl_ms. Attaching twice is a no-op.
 * Errors: TD_ENOMEM. */
int store_cache_attach(store *s, store_cache *c, td_err *err);

/* Copies out a cached value; called under the slot's lock, so it must not call back. */
typedef void (*store_cache_fn)(void *ctx, const char *data, size_t len);

/* store_cache_get: when the cache holds a current value for `id`, call fn(ctx, data, len) and
 * return 1. Otherwise return 0; then *stamp (OUT) is the stamp to give store_cache_put with
 * the value read from the database. *stamp is filled in both cases. */
int store_cache_get(store_cache *c, int64_t id, store_cache_fn fn, void *ctx,
                    store_cache_stamp *stamp /* OUT */);

/* store_cache_put: remember `data` (copied) for `id`, unless the job changed since `stamp`
 * was taken (then the value may be old and is dropped). */
void store_cache_put(store_cache *c, int64_t id, const store_cache_stamp *stamp,
                     const char *data, size_t len);

/* store_cache_invalidate: forget `id` (all entries when id <= 0). For writers that change
 * jobs without going through an attached connection. */
void store_cache_invalidate(store_cache *c, int64_t id);

/* store_cache_stats: lookups answered from the cache and lookups that missed (OUT). */
void store_cache_stats(store_cache *c, uint64_t *hits /* OUT */, uint64_t *misses /* OUT */);

#endif
