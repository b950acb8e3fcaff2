/* store_internal.h: store internals shared with other server modules (server/sweeps.c). */
#ifndef TD_SERVER_STORE_INTERNAL_H
#define TD_SERVER_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store.h"

/* store__db: the SQLite connection of `s` (borrowed; used by the same thread as `s`). A
 * module that runs its own statements on it must leave no transaction open on return. */
sqlite3 *store__db(store *s);

/* store__wal_bound: call from a WAL hook of `s`'s connection `db` after a commit that left
 * `frames` frames in the WAL of database `name`. Past 4096 frames (16 MiB) it runs a TRUNCATE
 * checkpoint that waits at most 200 ms for readers (and is not tried again for 2 s after a
 * failure). Returns 1 when the WAL was truncated, else 0 (the caller may checkpoint
 * passively as usual). */
int store__wal_bound(store *s, sqlite3 *db, const char *name, int frames);

#endif
