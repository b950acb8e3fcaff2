/* store_internal.h: store internals shared with other server modules (server/sweeps.c). */
#ifndef TD_SERVER_STORE_INTERNAL_H
#define TD_SERVER_STORE_INTERNAL_H

#include <sqlite3.h>

#include "store.h"

/* store__db: the SQLite connection of `s` (borrowed; used by the same thread as `s`). A
 * module that runs its own statements on it must leave no transaction open on return. */
sqlite3 *store__db(store *s);

#endif
