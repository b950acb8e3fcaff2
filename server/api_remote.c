/* api_remote.c: runs that execute elsewhere (issue 16): POST /api/v1/runs (+ resume), the
 * start of a remote job, and the four ingestion endpoints that take a run token (points,
 * heartbeat, artifacts, finish). The SQL is in store_remote.c; README "Remote runs". */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "runtok.h"
#include "store_remote.h"
#include "sweeps.h"

#define MAX_POINTS_PER_REQUEST 10000
/* Steps are integers within +-2^53 (exact in a double, so JSON clients agree on them). */
#define MAX_STEP 9007199254740992LL

static atomic_int slurm_enabled;

/* The point batches of all remote runs are written one at a time: a thread that waits here
 * wakes as soon as the previous batch commits, where SQLite's busy handler would sleep up to
 * 1 ms between polls of the write lock (the writes are serial in SQLite anyway). Parsing and
 * validating a batch happen outside it, in parallel. */
static pthread_mutex_t points_mu = PTHREAD_MUTEX_INITIALIZER;

int api_executor_slurm_enabled(void) { return atomic_load(&slurm_enabled); }
void api_set_executor_slurm_enabled(int on) { atomic_store(&slurm_enabled, on != 0); }

/* ---------------------------------------------------------------- helpers */

/* 400 naming the first field of obj that is not in `allowed` (comma-separated). */
static int only_fields(const json_t *obj, const char *allowed, const char *prefix,
                       http_resp *resp) {
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    size_t kl = strlen(key);
    const char *p = allowed;
    int ok = 0;
    while (*p && !ok) {
      const char *c = strchr(p, ',');
      size_t l = c ? (size_t)(c - p) : strlen(p);
      ok = l == kl && !strncmp(p, key, l);
      p += l + (c ? 1 : 0);
    }
    if (!ok) {
      char field[160];
      snprintf(field, sizeof field, "%s%s", prefix, key);
      return http_error(resp, HTTP_E_INVALID_REQUEST, field, "unknown field; allowed: %s",
                        allowed);
    }
  }
  return 0;
}




static void token_response(http_resp *resp, int64_t id, const char *tok, const api_ctx *a) {
  http_buf_printf(&resp->body, "{\"id\":%lld,\"token\":\"%s\",\"heartbeat_timeout_s\":",
                  (long long)id, tok);
  http_buf_json_num(&resp->body, a->heartbeat_timeout_s);
}

/* The run-token check of the ingestion endpoints: the job of the path exists and the bearer
 * token's hash is its current run token hash. Returns 0 with *id and *rs filled, or the
 * status of the error written to resp (404 no such job, 401 run_token_invalid). */
static int run_auth(http_req *req, http_resp *resp, store **st, int64_t *id,
                    store_run_state *rs) {
  if (http_parse_id(req->seg[0], id))
    return http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such job");
  td_err e;
  td_err_clear(&e);
  if (http_store(req, st, &e)) return http_error_td(resp, &e);
  const char *tok = runtok_bearer(http_header(req, "Authorization"));
  char h[RUNTOK_HEX + 1];
  if (tok) runtok_hash(tok, h);
  if (store_run_auth(*st, *id, tok ? h : NULL, rs, &e)) return http_error_td(resp, &e);
  if (!tok || !rs->token_ok) {
    http_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"tdlab-run\"");
    return http_error(resp, HTTP_E_RUN_TOKEN_INVALID, NULL,
                      "this endpoint needs 'Authorization: Bearer <run token>' with the current "
                      "run token of job %lld (from POST /api/v1/jobs/%lld/start or "
                      "POST /api/v1/runs); the lab token does not replace it",
                      (long long)*id, (long long)*id);
  }
  /* A Slurm job's run may send points before its first heartbeat and before the executor's
   * squeue saw it RUNNING (server/slurm.h): any authenticated request starts it. */
  int started = 0;
  if (rs->status == STORE_QUEUED && !strcmp(rs->executor, "slurm") &&
      store_run_begin(*st, *id, &started, NULL) == 0 && started)
    rs->status = STORE_RUNNING;
  return 0;
}

static int finished(http_resp *resp, int64_t id, const store_run_state *rs) {
  return http_error(resp, HTTP_E_JOB_FINISHED, NULL,
                    "job %lld is %s; a run can write only while it is running", (long long)id,
                    store_status_name(rs->status));
}

/* ---------------------------------------------------------------- runs */

int api_runs_create(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  json_t *root;
  int status = http_json_body(req, resp, 0, &root);
  if (status) return status;
  char *params_json = NULL, *tags_json = NULL;
  const char *tags[API_MAX_TAGS];
  size_t n_tags = 0;
  json_t *tags_arr = json_array();
  if ((status = only_fields(root, "name,params,tags", "", resp))) goto out;
  json_t *jname = json_object_get(root, "name"), *jparams = json_object_get(root, "params"),
         *jtags = json_object_get(root, "tags");
  const char *name = "";
  if (jname && !json_is_null(jname)) {
    const char *s = json_string_value(jname);
    if (!s || !api_valid_name(s)) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, "name",
                          "name must be a string of at most %d characters without control "
                          "characters", API_MAX_NAME_LEN);
      goto out;
    }
    name = s;
  }
  if (jparams && !json_is_null(jparams) && !json_is_object(jparams)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, "params", "params must be a JSON object");
    goto out;
  }
  if (jtags && !json_is_null(jtags) &&
      (status = api_parse_tags(jtags, tags, &n_tags, tags_arr, resp)))
    goto out;

  json_t *empty = json_object();
  params_json = http_json_dump(json_is_object(jparams) ? jparams : empty);
  json_decref(empty);
  tags_json = http_json_dump(tags_arr);
  if (!params_json || !tags_json) {
    status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    goto out;
  }
  td_err e;
  td_err_clear(&e);
  char tok[RUNTOK_HEX + 1], h[RUNTOK_HEX + 1];
  store *st;
  int64_t id = 0;
  if (runtok_new(tok, &e) || http_store(req, &st, &e) ||
      store_run_create(st, name, params_json, tags_json, tags, n_tags,
                       (runtok_hash(tok, h), h), &id, &e)) {
    status = http_error_td(resp, &e);
    goto out;
  }
  log_emit(LOG_INFO, "run_created", "job=%lld executor=external", (long long)id);
  http_resp_header(resp, "Location", "/api/v1/jobs/%lld", (long long)id);
  token_response(resp, id, tok, a);
  http_buf_str(&resp->body, "}");
  resp->status = status = 201;
out:
  free(params_json);
  free(tags_json);
  json_decref(tags_arr);
  json_decref(root);
  return status;
}

/* The job id of the route (404 "no such <what>" when malformed), the store, and a fresh run
 * token tok with its hash h (RUNTOK_HEX + 1 bytes each). 0 or a response status; e is cleared. */
static int new_run_token(http_req *req, http_resp *resp, const char *what, int64_t *id,
                         store **st, char *tok, char *h, td_err *e) {
  td_err_clear(e);
  if (http_parse_id(req->seg[0], id))
    return http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such %s", what);
  if (runtok_new(tok, e) || http_store(req, st, e)) return http_error_td(resp, e);
  runtok_hash(tok, h);
  return 0;
}

int api_runs_resume(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  int64_t id;
  td_err e;
  char tok[RUNTOK_HEX + 1], h[RUNTOK_HEX + 1];
  store *st;
  int status = new_run_token(req, resp, "run", &id, &st, tok, h, &e);
  if (status) return status;
  if (store_run_resume(st, id, h, &e)) return http_error_td(resp, &e);
  log_emit(LOG_INFO, "run_resumed", "job=%lld", (long long)id);
  token_response(resp, id, tok, a);
  http_buf_str(&resp->body, "}");
  resp->status = 200;
  return 200;
}

int api_jobs_start(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  int64_t id;
  td_err e;
  char tok[RUNTOK_HEX + 1], h[RUNTOK_HEX + 1];
  store *st;
  int status = new_run_token(req, resp, "job", &id, &st, tok, h, &e);
  if (status) return status;
  char *kind = NULL, *params = NULL;
  long attempt = 0;
  if (store_run_start(st, id, "remote", h, &kind, &params, &attempt, &e))
    return http_error_td(resp, &e);
  log_emit(LOG_INFO, "job_started", "job=%lld executor=remote attempt=%ld", (long long)id,
           attempt);
  token_response(resp, id, tok, a);
  http_buf_str(&resp->body, ",\"kind\":");
  http_buf_json_str(&resp->body, kind);
  http_buf_str(&resp->body, ",\"params\":");
  http_buf_str(&resp->body, params); /* JSON written by this server */
  http_buf_printf(&resp->body, ",\"attempt\":%ld}", attempt);
  free(kind);
  free(params);
  resp->status = 200;
  return 200;
}

/* ---------------------------------------------------------------- ingestion */

int api_jobs_points(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  store *st;
  int64_t id;
  store_run_state rs;
  int status = run_auth(req, resp, &st, &id, &rs);
  if (status) return status;
  if (rs.status != STORE_RUNNING) return finished(resp, id, &rs);
  json_t *root;
  if ((status = http_json_body(req, resp, 0, &root))) return status;
  store_mw *w = NULL;
  if ((status = only_fields(root, "points", "", resp))) goto out;
  json_t *pts = json_object_get(root, "points");
  if (!json_is_array(pts)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, "points",
                        pts ? "points must be an array of {key, step, value}"
                            : "points is required: an array of {key, step, value}");
    goto out;
  }
  size_t n = json_array_size(pts);
  if (n > MAX_POINTS_PER_REQUEST) {
    status = http_error(resp, HTTP_E_PAYLOAD_TOO_LARGE, "points",
                        "%zu points in one request; at most %d (send several batches)", n,
                        MAX_POINTS_PER_REQUEST);
    goto out;
  }
  td_err e;
  td_err_clear(&e);
  if (store_mw_create(st, id, n + 1, LONG_MAX / 4, &w, &e)) {
    status = http_error_td(resp, &e);
    goto out;
  }
  store_mw_guard(w, a->max_job_points);
  size_t i;
  json_t *p;
  char field[48];
  json_array_foreach(pts, i, p) {
    if (!json_is_object(p)) {
      snprintf(field, sizeof field, "points[%zu]", i);
      status = http_error(resp, HTTP_E_INVALID_REQUEST, field,
                          "a point is an object {key, step, value}");
      goto out;
    }
    if (json_object_size(p) > 3 || (json_object_size(p) == 3 && !(json_object_get(p, "key") &&
                                                                  json_object_get(p, "step") &&
                                                                  json_object_get(p, "value")))) {
      snprintf(field, sizeof field, "points[%zu].", i); /* only on the error path */
      if ((status = only_fields(p, "key,step,value", field, resp))) goto out;
    }
    json_t *jk = json_object_get(p, "key"), *js = json_object_get(p, "step"),
           *jv = json_object_get(p, "value");
    const char *key = json_string_value(jk);
    if (!key || !store_valid_key(key)) {
      snprintf(field, sizeof field, "points[%zu].key", i);
      status = http_error(resp, HTTP_E_INVALID_REQUEST, field,
                          jk ? "a key is 1..128 printable ASCII characters without space, "
                               "quote, comma or backslash"
                             : "key is required");
      goto out;
    }
    /* an integral JSON real (2.0, as Python's json.dumps writes a float step) is the integer */
    double sd = json_is_integer(js) ? (double)json_integer_value(js)
                : json_is_real(js)  ? json_real_value(js)
                                    : NAN;
    int step_ok = json_is_integer(js) ? json_integer_value(js) >= -MAX_STEP &&
                                            json_integer_value(js) <= MAX_STEP
                                      : isfinite(sd) && sd == floor(sd) &&
                                            sd >= -(double)MAX_STEP && sd <= (double)MAX_STEP;
    if (!step_ok) {
      snprintf(field, sizeof field, "points[%zu].step", i);
      status = http_error(resp, HTTP_E_INVALID_REQUEST, field,
                          js ? "step must be an integer within +-2^53" : "step is required");
      goto out;
    }
    long step = json_is_integer(js) ? (long)json_integer_value(js) : (long)sd;
    double v;
    if (json_is_number(jv)) {
      v = json_number_value(jv);
    } else if (json_is_string(jv) && !strcmp(json_string_value(jv), "NaN")) {
      v = NAN;
    } else if (json_is_string(jv) && !strcmp(json_string_value(jv), "Infinity")) {
      v = INFINITY;
    } else if (json_is_string(jv) && !strcmp(json_string_value(jv), "-Infinity")) {
      v = -INFINITY;
    } else {
      snprintf(field, sizeof field, "points[%zu].value", i);
      status = http_error(resp, HTTP_E_INVALID_REQUEST, field,
                          jv ? "value must be a number or one of the strings \"NaN\", "
                               "\"Infinity\", \"-Infinity\""
                             : "value is required");
      goto out;
    }
    if (store_mw_put(w, key, step, v)) {
      status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
      goto out;
    }
  }
  pthread_mutex_lock(&points_mu);
  int rc = store_mw_flush(w);
  pthread_mutex_unlock(&points_mu);
  if (rc == TD_ECONFLICT) {
    store_run_auth(st, id, NULL, &rs, NULL);
    status = finished(resp, id, &rs);
    goto out;
  }
  if (rc == TD_ELIMIT) {
    char msg[160];
    snprintf(msg, sizeof msg, "reached --max-job-points (%.0f metric points)", a->max_job_points);
    int fin = 0;
    store_run_finish(st, id, STORE_FAILED, msg, NULL, &fin, NULL);
    log_emit(LOG_WARN, "job_point_limit", "job=%lld max=%.0f", (long long)id, a->max_job_points);
    status = http_error(resp, HTTP_E_LIMIT_EXCEEDED, "points",
                        "%s; the job has ended failed, keeping its points", msg);
    goto out;
  }
  if (rc) {
    td_err_set(&e, rc, NULL, "writing the points failed (retry the same batch)");
    status = http_error_td(resp, &e);
    goto out;
  }
  uint64_t fresh = store_mw_inserted(w);
  queue_count_points(a->q, fresh); /* tdlab_metric_points_ingested_total counts these too */
  http_buf_printf(&resp->body, "{\"accepted\":%llu,\"duplicates\":%llu}",
                  (unsigned long long)fresh, (unsigned long long)(n - fresh));
  resp->status = status = 200;
out:
  store_mw_destroy(w);
  json_decref(root);
  return status;
}

int api_jobs_heartbeat(http_req *req, http_resp *resp) {
  store *st;
  int64_t id;
  store_run_state rs;
  int status = run_auth(req, resp, &st, &id, &rs);
  if (status) return status;
  if (rs.status == STORE_QUEUED && strcmp(rs.executor, "local") != 0) {
    /* the first heartbeat of a prepared run (store_run_prepare, e.g. a Slurm job that left
     * PENDING) marks it running */
    td_err be;
    td_err_clear(&be);
    int started = 0;
    if (store_run_begin(st, id, &started, &be)) return http_error_td(resp, &be);
    if (started) {
      rs.status = STORE_RUNNING;
      log_emit(LOG_INFO, "job_started", "job=%lld executor=%s (first heartbeat)", (long long)id,
               rs.executor);
    }
  }
  if (rs.status != STORE_RUNNING) return finished(resp, id, &rs);
  json_t *root;
  if ((status = http_json_body(req, resp, 1, &root))) return status;
  int has = 0;
  long done = 0, total = 0;
  if (root) {
    if ((status = only_fields(root, "progress", "", resp))) goto out;
    json_t *pr = json_object_get(root, "progress");
    if (pr && !json_is_null(pr)) {
      json_t *d = json_object_get(pr, "done"), *t = json_object_get(pr, "total");
      if (!json_is_object(pr) || only_fields(pr, "done,total", "progress.", resp) ||
          !json_is_integer(d) || !json_is_integer(t) || json_integer_value(d) < 0 ||
          json_integer_value(t) < 0 || json_integer_value(d) > MAX_STEP ||
          json_integer_value(t) > MAX_STEP) {
        http_buf_free(&resp->body);
        http_buf_init(&resp->body);
        status = http_error(resp, HTTP_E_INVALID_REQUEST, "progress",
                            "progress must be {\"done\": n, \"total\": m} with integers >= 0");
        goto out;
      }
      if (json_integer_value(t) > 0 && json_integer_value(d) > json_integer_value(t)) {
        status = http_error(resp, HTTP_E_INVALID_REQUEST, "progress.done",
                            "progress.done %lld is above progress.total %lld",
                            (long long)json_integer_value(d), (long long)json_integer_value(t));
        goto out;
      }
      has = 1;
      done = (long)json_integer_value(d);
      total = (long)json_integer_value(t);
    }
  }
  td_err e;
  td_err_clear(&e);
  int cancel = 0;
  int rc = store_run_heartbeat(st, id, has, done, total, &cancel, &e);
  if (rc == TD_ECONFLICT) {
    store_run_auth(st, id, NULL, &rs, NULL);
    status = finished(resp, id, &rs);
    goto out;
  }
  if (rc) {
    status = http_error_td(resp, &e);
    goto out;
  }
  http_buf_printf(&resp->body, "{\"status\":\"running\",\"cancel_requested\":%s,"
                  "\"heartbeat_timeout_s\":", cancel ? "true" : "false");
  http_buf_json_num(&resp->body, ((api_ctx *)req->app)->heartbeat_timeout_s);
  http_buf_str(&resp->body, "}");
  resp->status = status = 200;
out:
  json_decref(root);
  return status;
}

int api_jobs_artifact_put(http_req *req, http_resp *resp) {
  store *st;
  int64_t id;
  store_run_state rs;
  int status = run_auth(req, resp, &st, &id, &rs);
  if (status) return status;
  if (rs.status != STORE_RUNNING) return finished(resp, id, &rs);
  const char *name = req->seg[1];
  if (!store_valid_artifact_name(name))
    return http_error(resp, HTTP_E_INVALID_REQUEST, "name",
                      "an artifact name is 1..128 characters of A-Z a-z 0-9 . _ - and does not "
                      "start with '.'");
  const char *ct = http_header(req, "Content-Type");
  if (!ct || !*ct) ct = "application/octet-stream";
  if (strlen(ct) > 127)
    return http_error(resp, HTTP_E_INVALID_REQUEST, "Content-Type",
                      "the Content-Type header is longer than 127 characters");
  td_err e;
  td_err_clear(&e);
  if (store_artifact_put(st, id, name, ct, req->body ? req->body : "", req->body_len, &e))
    return http_error_td(resp, &e);
  http_buf_str(&resp->body, "{\"name\":");
  http_buf_json_str(&resp->body, name);
  http_buf_printf(&resp->body, ",\"size\":%zu}", req->body_len);
  http_resp_header(resp, "Location", "/api/v1/jobs/%lld/artifacts/%s", (long long)id, name);
  resp->status = 201;
  return 201;
}

int api_jobs_finish(http_req *req, http_resp *resp) {
  store *st;
  int64_t id;
  store_run_state rs;
  int status = run_auth(req, resp, &st, &id, &rs);
  if (status) return status;
  json_t *root;
  if ((status = http_json_body(req, resp, 0, &root))) return status;
  char *summary = NULL;
  if ((status = only_fields(root, "status,summary,error", "", resp))) goto out;
  json_t *js = json_object_get(root, "status"), *jsum = json_object_get(root, "summary"),
         *jerr = json_object_get(root, "error");
  const char *sname = json_string_value(js);
  int fst = sname ? store_status_parse(sname) : -1;
  if (fst != STORE_SUCCEEDED && fst != STORE_FAILED && fst != STORE_DIVERGED) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, "status",
                        js ? "status must be \"succeeded\", \"failed\" or \"diverged\" (a "
                             "cancelled run is marked by the server)"
                           : "status is required: \"succeeded\", \"failed\" or \"diverged\"");
    goto out;
  }
  if (jsum && !json_is_null(jsum) && !json_is_object(jsum)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, "summary", "summary must be a JSON object");
    goto out;
  }
  if (jerr && !json_is_null(jerr) &&
      (!json_is_string(jerr) || json_string_length(jerr) > 4096)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, "error",
                        "error must be a string of at most 4096 bytes");
    goto out;
  }
  if (json_is_object(jsum) && !(summary = http_json_dump(jsum))) {
    status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    goto out;
  }
  td_err e;
  td_err_clear(&e);
  int final = -1;
  int rc = store_run_finish(st, id, fst, json_string_value(jerr), summary, &final, &e);
  if (rc == TD_ECONFLICT) {
    store_run_auth(st, id, NULL, &rs, NULL);
    status = rs.status == fst ? http_error(resp, HTTP_E_JOB_FINISHED, NULL, "%s", e.msg)
                              : finished(resp, id, &rs);
    goto out;
  }
  if (rc) {
    status = http_error_td(resp, &e);
    goto out;
  }
  log_emit(LOG_INFO, "job_finished", "job=%lld status=%s executor=%s", (long long)id,
           store_status_name(final), rs.executor);
  if (rs.sweep_id > 0) sweeps_refresh(st, rs.sweep_id, 0, NULL); /* its status and fit */
  http_buf_printf(&resp->body, "{\"id\":%lld,\"status\":\"%s\"}", (long long)id,
                  store_status_name(final));
  resp->status = status = 200;
out:
  free(summary);
  json_decref(root);
  return status;
}
