/* fuzz_common.h: shared pieces of the libFuzzer harnesses: FZ_ASSERT; with TD_FUZZ_SERVER
 * defined before the include, also a migrated temporary database, a fake request/response
 * pair and checks of response bodies (static functions; one harness includes it). */
#ifndef TD_FUZZ_COMMON_H
#define TD_FUZZ_COMMON_H

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


#ifndef TD_FUZZ_ROOT
#define TD_FUZZ_ROOT "."
#endif

/* Abort with a message: libFuzzer saves the input as a crash artifact. */
#define FZ_ASSERT(cond, ...)                                                 \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "fuzz: %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                          \
      fputc('\n', stderr);                                                   \
      abort();                                                               \
    }                                                                        \
  } while (0)

#ifdef TD_FUZZ_SERVER
#include "../../server/http.h"
#include "../../server/store.h"

static char fz_db[64];

static void fz_db_remove(void) {
  char p[80];
  if (!fz_db[0]) return;
  unlink(fz_db);
  snprintf(p, sizeof p, "%s-wal", fz_db);
  unlink(p);
  snprintf(p, sizeof p, "%s-shm", fz_db);
  unlink(p);
}

/* Remove the databases of earlier harness processes that died without their atexit (a
 * crash, a kill): /tmp/tdlab-fuzz-<pid>.db* whose pid is gone. */
static void fz_remove_stale(void) {
  DIR *d = opendir("/tmp");
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    long pid;
    char p[300];
    if (sscanf(de->d_name, "tdlab-fuzz-%ld.db", &pid) != 1 || pid <= 0) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    snprintf(p, sizeof p, "/tmp/%s", de->d_name);
    unlink(p);
  }
  closedir(d);
}

/* A fresh, migrated database in /tmp (removed at exit); `seed` fills it. Aborts on failure:
 * a harness without its database would report nothing useful. */
static store_pool *fz_pool_create(void (*seed)(store *s)) {
  fz_remove_stale();
  snprintf(fz_db, sizeof fz_db, "/tmp/tdlab-fuzz-%ld.db", (long)getpid());
  fz_db_remove();
  atexit(fz_db_remove);
  const char *mig = getenv("TDLAB_MIGRATIONS");
  if (!mig || !*mig) mig = TD_FUZZ_ROOT "/migrations";
  td_err e;
  td_err_clear(&e);
  store *s = NULL;
  if (store_open(fz_db, 0, &s, &e) || store_migrate(s, mig, NULL, NULL, &e)) {
    fprintf(stderr, "fuzz: cannot create the database (%s): %s\n", mig, e.msg);
    exit(1);
  }
  if (seed) seed(s);
  store_close(s);
  store_pool *pool = NULL;
  if (store_pool_create(fz_db, 0, &pool, &e)) {
    fprintf(stderr, "fuzz: store_pool_create: %s\n", e.msg);
    exit(1);
  }
  return pool;
}

static void fz_resp_init(http_resp *r) {
  memset(r, 0, sizeof *r);
  r->status = 200;
  http_buf_init(&r->body);
  r->fd = -1;
}

/* Release the request's borrowed connection and the response body. */
static void fz_req_done(http_req *req, http_resp *resp) {
  if (req->st) store_pool_put(req->pool, req->st);
  req->st = NULL;
  if (resp->fd >= 0) close(resp->fd);
  http_buf_free(&resp->body);
}

/* The response body as JSON (new reference); aborts when it is not valid JSON. */
static json_t *fz_resp_json(const http_resp *resp) {
  json_error_t je;
  FZ_ASSERT(!resp->body.failed, "response buffer failed");
  json_t *j = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, &je);
  FZ_ASSERT(j, "status %d: response is not JSON (%s): %.*s", resp->status, je.text,
            (int)(resp->body.len > 300 ? 300 : resp->body.len), resp->body.data);
  return j;
}

/* Every error response is {"error": {"code": string, "message": string, "field": ...}}. */
static void fz_check_error_body(const http_resp *resp) {
  json_t *j = fz_resp_json(resp);
  json_t *err = json_object_get(j, "error");
  FZ_ASSERT(json_is_object(err) && json_is_string(json_object_get(err, "code")) &&
                json_is_string(json_object_get(err, "message")),
            "status %d: not an error body", resp->status);
  json_decref(j);
}

#endif /* TD_FUZZ_SERVER */

#endif
