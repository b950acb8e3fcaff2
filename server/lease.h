/* lease.h: the lease thread of `tdlab serve`: runs that stopped sending heartbeats lose their
 * lease (store_lease_expire) and are re-queued, failed or marked crashed. */
#ifndef TD_SERVER_LEASE_H
#define TD_SERVER_LEASE_H

#include "base/err.h"

struct store_cache;
typedef struct lease lease;

typedef struct lease_config {
  const char *db_path;        /* a migrated database; the thread opens its own connection */
  double timeout_s;           /* serve --heartbeat-timeout (> 0) */
  long max_attempts;          /* serve --max-attempts */
  unsigned which;             /* STORE_LEASE_* executors it covers (0: all) */
  struct store_cache *cache;  /* attached to its connection (borrowed; NULL: none) */
} lease_config;

/* lease_start: a thread that calls store_lease_expire every min(timeout_s / 4, 5) seconds
 * (at least every 0.1 s), so a run is declared lost between timeout_s and 1.25 timeout_s
 * after its last heartbeat; each change is logged (event lease_expired). The first check
 * comes timeout_s after the start (a run cannot beat while the server is down, so a restart
 * gives every running run a full timeout). The Slurm executor
 * may call store_lease_expire itself with its own mask instead, or leave slurm to this
 * thread. *out (OUT). Errors: TD_EINVAL, TD_EIO (cannot open the database), TD_ENOMEM. */
int lease_start(const lease_config *cfg, lease **out /* OUT */, td_err *err);

/* lease_stop: stop and join the thread, close its connection. NULL is a no-op. */
void lease_stop(lease *l);

#endif
