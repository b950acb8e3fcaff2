/* fuzz_query.c: libFuzzer harness of the query-string parsing: http_query_parse (the split
 * and percent-decoding libmicrohttpd does for the daemon, with the daemon's own decoder
 * http_unescape), the integer parsers (http_parse_ll, http_parse_id), and the handlers that
 * read ?status=&kind=&tag=&sweep=&limit=&cursor= (GET /api/v1/jobs) and
 * ?keys=&max_points=&since_step= (GET /api/v1/jobs/1/metrics and metrics.csv) and
 * ?limit=&cursor= (GET /api/v1/sweeps), driven through
 * http_req.args against a small database (job 1 with a few metric series, NaN and Inf
 * included). Input: the raw bytes after '?'.
 * Checks, besides the sanitizers:
 *   - http_query_check (the dispatcher's check of parameter names) accepts exactly the
 *     inputs whose keys are all listed, given once and with a value; otherwise a 400 envelope;
 *   - http_parse_ll agrees with a strict reference (optional '-', digits, strtoll range);
 *   - every handler answers 200 or 400 with a JSON body (an error body on 400), and each
 *     metric series has as many steps as values and at most max_points points. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "../../server/api.h"
#define TD_FUZZ_SERVER
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static store_pool *pool;
static api_ctx app;

/* Job 1 with 3 series of 40, 40 and 14 points, job 2 queued with a tag. */
static void seed_db(store *s) {
  td_err e;
  td_err_clear(&e);
  const char *tags[] = {"fuzz"};
  store_new_job j1 = {.kind = "linreg", .name = "one", .params_json = "{}", .tags_json = "[]"};
  store_new_job j2 = {.kind = "train", .name = "two", .params_json = "{}",
                      .tags_json = "[\"fuzz\"]", .tags = tags, .n_tags = 1};
  int64_t id1, id2;
  store_mw *w = NULL;
  if (store_job_insert(s, &j1, 0, &id1, &e) || store_job_insert(s, &j2, 0, &id2, &e) ||
      store_mw_create(s, id1, 0, 0, &w, &e)) {
    fprintf(stderr, "fuzz: seed: %s\n", e.msg);
    exit(1);
  }
  for (long t = 0; t < 40; t++) {
    store_mw_put(w, "train_loss", t, 1.0 / (1.0 + (double)t));
    store_mw_put(w, "lr", t * 10, t % 7 ? 0.1 : (t % 2 ? INFINITY : NAN));
    if (t % 3 == 0) store_mw_put(w, "test/acc@1", t, -(double)t);
  }
  if (store_mw_flush(w)) {
    fprintf(stderr, "fuzz: seed metrics failed\n");
    exit(1);
  }
  store_mw_destroy(w);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  pool = fz_pool_create(seed_db);
  app.limits = td_kinds_default_limits();
  return 0;
}

/* The strict reference of http_parse_ll over the full long long range. */
static int ref_parse_ll(const char *s, long long *out) {
  const char *p = s + (*s == '-');
  if (!*p) return -1;
  for (const char *q = p; *q; q++)
    if (*q < '0' || *q > '9') return -1;
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

static void check_ints(const char *v) {
  long long a = 0, b = 0;
  int ra = http_parse_ll(v, LLONG_MIN, LLONG_MAX, &a), rb = ref_parse_ll(v, &b);
  FZ_ASSERT((ra == 0) == (rb == 0) && (ra || a == b), "http_parse_ll(\"%s\"): %d %lld, ref %d %lld",
            v, ra, a, rb, b);
  long long c;
  if (http_parse_ll(v, 2, 100000, &c) == 0) FZ_ASSERT(c >= 2 && c <= 100000, "range");
  int64_t id;
  if (http_parse_id(v, &id) == 0)
    FZ_ASSERT(id >= 1 && id <= 9007199254740992LL && rb == 0 && b == id, "id %lld",
              (long long)id);
}

typedef int (*handler)(http_req *, http_resp *);

static void run(handler fn, const char *path, const char *seg, const http_query_args *args,
                int is_csv, long long max_points) {
  http_req req = {.app = &app, .method = "GET", .path = path, .pool = pool, .args = args};
  if (seg) {
    req.seg[0] = seg;
    req.n_seg = 1;
  }
  http_resp resp;
  fz_resp_init(&resp);
  int status = fn(&req, &resp);
  FZ_ASSERT(status == resp.status && (status == 200 || status == 400), "%s: status %d", path,
            status);
  if (status != 200) {
    fz_check_error_body(&resp);
  } else if (!is_csv) {
    json_t *j = fz_resp_json(&resp);
    json_t *m = json_object_get(j, "metrics"), *ser;
    const char *key;
    json_object_foreach(m, key, ser) {
      size_t ns = json_array_size(json_object_get(ser, "step"));
      FZ_ASSERT(ns == json_array_size(json_object_get(ser, "value")), "%s: steps != values", key);
      FZ_ASSERT(max_points < 2 || ns <= (size_t)max_points, "%s: %zu points > max_points %lld",
                key, ns, max_points);
    }
    json_decref(j);
  }
  fz_req_done(&req, &resp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  http_query_args q;
  if (http_query_parse((const char *)data, size, &q)) return 0;
  for (size_t i = 0; i < q.n; i++) {
    FZ_ASSERT(q.key[i] != NULL, "pair %zu has no key", i);
    if (q.value[i]) check_ints(q.value[i]);
  }
  long long mp = 0;
  const char *v = http_query_args_get(&q, "max_points");
  if (v && http_parse_ll(v, 2, LLONG_MAX, &mp)) mp = 0;
  /* The dispatcher's parameter check (http_query_check) with the routes' lists: 0 or a 400
   * envelope, and 0 exactly when every key is listed, given once and has a value. */
  static const char *const lists[] = {"status,kind,tag,sweep,limit,cursor",
                                      "keys,max_points,since_step", "limit,cursor", NULL};
  for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
    http_req req = {.args = &q};
    http_resp resp;
    fz_resp_init(&resp);
    int st = http_query_check(&req, &resp, lists[l]);
    int want_ok = 1;
    for (size_t i = 0; i < q.n && want_ok; i++) {
      int listed = 0;
      for (const char *p = lists[l]; p && *p;) {
        size_t n = strcspn(p, ","), kl = strlen(q.key[i]);
        listed |= n == kl && memcmp(p, q.key[i], n) == 0;
        p += n + (p[n] == ',');
      }
      for (size_t j = 0; j < i; j++) listed &= strcmp(q.key[i], q.key[j]) != 0;
      want_ok = listed && q.value[i];
    }
    FZ_ASSERT(st == (want_ok ? 0 : 400), "http_query_check: %d, want %s", st,
              want_ok ? "0" : "400");
    if (st) fz_check_error_body(&resp);
    http_buf_free(&resp.body);
  }
  run(api_jobs_list, "/api/v1/jobs", NULL, &q, 0, 0);
  run(api_sweeps_list, "/api/v1/sweeps", NULL, &q, 0, 0);
  run(api_metrics_get, "/api/v1/jobs/1/metrics", "1", &q, 0, mp);
  run(api_metrics_csv, "/api/v1/jobs/1/metrics.csv", "1", &q, 1, 0);
  http_query_args_deinit(&q);
  return 0;
}
