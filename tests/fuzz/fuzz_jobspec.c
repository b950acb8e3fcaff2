/* fuzz_jobspec.c: libFuzzer harness of the job-spec validator (td_kinds_validate) and of the
 * body parsing of POST /api/v1/jobs (api_jobs_create). Validation only: no job ever runs
 * (the fake server's queue is full, so an accepted spec is answered 503 and not stored).
 *
 * Input: JSON bytes, ideally a job body {"kind": ..., "params": {...}, "name", "tags", ...}.
 * Checks, besides the sanitizers:
 *   - td_kinds_validate returns 0 with a filled params object, or a negative TD_* code with
 *     no object; validating the filled params again succeeds and gives the same object
 *     (defaults are themselves valid and filling is idempotent);
 *   - api_jobs_create answers 4xx or 503, never 2xx/500, with a JSON error body. */
#include <stdint.h>

#include "kinds/registry.h"
#include "../../server/api.h"
#define TD_FUZZ_SERVER
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static store_pool *pool;
static api_ctx app;

/* One queued job and a cap of 1 queued job: every valid submission gets 503 queue_full. */
static void seed_db(store *s) {
  td_err e;
  td_err_clear(&e);
  store_new_job nj = {.kind = "linreg", .name = "fuzz", .params_json = "{}", .tags_json = "[]"};
  int64_t id;
  if (store_job_insert(s, &nj, 0, &id, &e)) {
    fprintf(stderr, "fuzz: seed job: %s\n", e.msg);
    exit(1);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  pool = fz_pool_create(seed_db);
  app.limits = td_kinds_default_limits();
  app.max_queued = 1;
  return 0;
}

static void fuzz_validator(const json_t *root) {
  const char *kind = json_string_value(json_object_get(root, "kind")); /* NULL if absent */
  const json_t *params = json_object_get(root, "params");              /* any JSON, or NULL */
  json_t *filled = (json_t *)1;
  td_estimate est = {-1, -1};
  td_err e;
  td_err_clear(&e);
  int rc = td_kinds_validate(kind, params, NULL, &filled, &est, &e);
  FZ_ASSERT(memchr(e.msg, 0, sizeof e.msg) && memchr(e.field, 0, sizeof e.field),
            "unterminated td_err");
  if (rc) {
    FZ_ASSERT(rc < 0 && filled == NULL, "rc %d, filled %p", rc, (void *)filled);
    return;
  }
  FZ_ASSERT(json_is_object(filled), "validated params are not an object");
  FZ_ASSERT(est.bytes >= 0 && est.n_params >= 0, "negative estimate");
  json_t *again = NULL;
  rc = td_kinds_validate(kind, filled, NULL, &again, NULL, &e);
  FZ_ASSERT(rc == 0, "filled params of '%s' do not validate: %s: %s", kind, e.field, e.msg);
  if (!json_equal(filled, again)) {
    char *a = json_dumps(filled, JSON_SORT_KEYS | JSON_COMPACT);
    char *b = json_dumps(again, JSON_SORT_KEYS | JSON_COMPACT);
    FZ_ASSERT(0, "filling defaults of '%s' is not idempotent:\n  once:  %s\n  twice: %s", kind,
              a, b);
  }
  json_decref(again);
  json_decref(filled);
}

static void fuzz_create(const uint8_t *data, size_t size) {
  http_req req = {.app = &app, .method = "POST", .path = "/api/v1/jobs",
                  .body = (const char *)data, .body_len = size, .pool = pool};
  http_resp resp;
  fz_resp_init(&resp);
  int status = api_jobs_create(&req, &resp);
  FZ_ASSERT(status == resp.status, "returned %d, response says %d", status, resp.status);
  FZ_ASSERT((status >= 400 && status < 500) || status == 503, "status %d", status);
  fz_check_error_body(&resp);
  fz_req_done(&req, &resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *root = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
  if (root) {
    fuzz_validator(root);
    json_decref(root);
  }
  fuzz_create(data, size);
  return 0;
}
