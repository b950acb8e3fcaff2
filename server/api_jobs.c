/* api_jobs.c: /api/v1/jobs: submit (validated against the kind's schema), list, get, cancel,
 * and a job's artifacts. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "search.h"
#include "log.h"
#include "store_cache.h"
#include "sweeps.h"


void api_job_json(http_buf *b, const store_job *j) {
  http_buf_printf(b, "{\"id\":%lld,\"kind\":", (long long)j->id);
  http_buf_json_str(b, j->kind);
  http_buf_str(b, ",\"name\":");
  http_buf_json_str(b, j->name);
  http_buf_str(b, ",\"status\":");
  http_buf_json_str(b, j->status);
  /* params, tags and summary are JSON written by this server: spliced verbatim. */
  http_buf_str(b, ",\"params\":");
  http_buf_str(b, j->params);
  http_buf_str(b, ",\"tags\":");
  http_buf_str(b, j->tags);
  http_buf_printf(b, ",\"priority\":%ld,\"attempt\":%ld,\"sweep_id\":", j->priority, j->attempt);
  if (j->sweep_id > 0) http_buf_printf(b, "%lld", (long long)j->sweep_id);
  else http_buf_str(b, "null");
  http_buf_printf(b, ",\"progress\":{\"done\":%ld,\"total\":%ld},\"cancel_requested\":%s",
                  j->progress_done, j->progress_total, j->cancel_requested ? "true" : "false");
  http_buf_str(b, ",\"created_at\":");
  http_buf_json_str(b, j->created_at);
  http_buf_str(b, ",\"started_at\":");
  http_buf_json_str(b, j->started_at);
  http_buf_str(b, ",\"finished_at\":");
  http_buf_json_str(b, j->finished_at);
  http_buf_str(b, ",\"error\":");
  http_buf_json_str(b, j->error);
  http_buf_str(b, ",\"summary\":");
  http_buf_str(b, j->summary ? j->summary : "null");
  /* fork links (migrations/0003): children is written by SQLite's group_concat of ids */
  if (j->parent_job_id > 0)
    http_buf_printf(b, ",\"parent\":{\"job\":%lld,\"step\":%ld}", (long long)j->parent_job_id,
                    j->parent_step);
  else http_buf_str(b, ",\"parent\":null");
  http_buf_str(b, ",\"children\":[");
  if (j->children) http_buf_str(b, j->children);
  /* where it runs (migrations/0006; README "Remote runs") */
  http_buf_str(b, "],\"executor\":");
  http_buf_json_str(b, j->executor ? j->executor : "local");
  http_buf_str(b, ",\"executor_ref\":");
  http_buf_json_str(b, j->executor_ref);
  http_buf_str(b, ",\"heartbeat_at\":");
  http_buf_json_str(b, j->heartbeat_at);
  http_buf_str(b, "}");
}

static void job_into_buf(void *ctx, const store_job *j) { api_job_json(ctx, j); }

/* Tags: 1..64 bytes of [A-Za-z0-9_.:/=+-]. */
static int valid_tag(const char *t) {
  size_t n = 0;
  for (; t[n]; n++) {
    char c = t[n];
    if (n >= API_MAX_TAG_LEN) return 0;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          strchr("_.:/=+-", c)))
      return 0;
  }
  return n > 0;
}

/* api_parse_tags: see api.h. */
int api_parse_tags(const json_t *jtags, const char **tags, size_t *n_tags, json_t *tags_arr,
                      http_resp *resp) {
  if (!json_is_array(jtags) || json_array_size(jtags) > API_MAX_TAGS)
    return http_error(resp, HTTP_E_INVALID_REQUEST, "tags",
                      "tags must be an array of at most %d strings", API_MAX_TAGS);
  size_t i;
  json_t *t;
  json_array_foreach(jtags, i, t) {
    if (!json_is_string(t) || !valid_tag(json_string_value(t))) {
      char field[32];
      snprintf(field, sizeof field, "tags[%zu]", i);
      return http_error(resp, HTTP_E_INVALID_REQUEST, field,
                        "a tag is 1..%d characters of A-Z a-z 0-9 _ . : / = + -", API_MAX_TAG_LEN);
    }
    int dup = 0;
    for (size_t k = 0; k < *n_tags; k++) dup |= strcmp(tags[k], json_string_value(t)) == 0;
    if (dup) continue;
    tags[(*n_tags)++] = json_string_value(t);
    if (tags_arr) json_array_append(tags_arr, t);
  }
  return 0;
}

/* api_valid_name: see api.h. jansson has already checked that s is valid UTF-8, so the
 * characters are the bytes that do not continue a sequence (10xxxxxx). */
int api_valid_name(const char *s) {
  size_t chars = 0;
  for (size_t i = 0; s[i]; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) return 0;
    if ((c & 0xC0) != 0x80 && ++chars > API_MAX_NAME_LEN) return 0;
  }
  return 1;
}

/* Respond with job `id` and `status`; returns the status. */
static int respond_job(http_req *req, http_resp *resp, store *st, int64_t id, int status) {
  td_err e;
  td_err_clear(&e);
  int rc = store_job_get(st, id, job_into_buf, &resp->body, &e);
  (void)req;
  if (rc) return http_error_td(resp, &e);
  resp->status = status;
  return status;
}

int api_jobs_create(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  json_t *root;
  int status = http_json_body(req, resp, 0, &root);
  if (status) return status;
  json_t *filled = NULL, *tags_arr = NULL;
  char *params_json = NULL, *tags_json = NULL;
  const char *tags[API_MAX_TAGS];
  size_t n_tags = 0;
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (strcmp(key, "kind") && strcmp(key, "params") && strcmp(key, "name") &&
        strcmp(key, "tags") && strcmp(key, "priority") && strcmp(key, "executor")) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, key,
                          "unknown field; allowed: kind, params, name, tags, priority, executor");
      goto out;
    }
  }
  json_t *jkind = json_object_get(root, "kind"), *jparams = json_object_get(root, "params"),
         *jname = json_object_get(root, "name"), *jtags = json_object_get(root, "tags"),
         *jprio = json_object_get(root, "priority");
  if (!json_is_string(jkind)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, "kind",
                        jkind ? "kind must be a string" : "kind is required");
    goto out;
  }
  if (jparams && !json_is_object(jparams) && !json_is_null(jparams)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, "params", "params must be a JSON object");
    goto out;
  }
  const char *name = "";
  if (jname && !json_is_null(jname)) {
    if (!json_is_string(jname) || !api_valid_name(json_string_value(jname))) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, "name",
                          "name must be a string of at most %d characters without control "
                          "characters", API_MAX_NAME_LEN);
      goto out;
    }
    name = json_string_value(jname);
  }
  /* executor (issue 16): local (worker threads), remote (waits for POST .../start), slurm
   * (only when the Slurm executor runs: api_executor_slurm_enabled) */
  const char *executor = a->default_executor ? a->default_executor : "local";
  json_t *jexec = json_object_get(root, "executor");
  if (jexec && !json_is_null(jexec)) {
    const char *ex = json_string_value(jexec);
    int slurm_ok = api_executor_slurm_enabled();
    if (!ex || (strcmp(ex, "local") && strcmp(ex, "remote") && strcmp(ex, "slurm"))) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, "executor",
                          "executor must be \"local\", \"remote\"%s", slurm_ok ? " or \"slurm\"" : "");
      goto out;
    }
    if (!strcmp(ex, "slurm") && !slurm_ok) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, "executor",
                          "the slurm executor is not enabled on this server (tdlab serve "
                          "--executor slurm)");
      goto out;
    }
    executor = ex;
  }
  long priority = 0;
  if (jprio && !json_is_null(jprio)) {
    if (!json_is_integer(jprio) || json_integer_value(jprio) < -1000 ||
        json_integer_value(jprio) > 1000) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, "priority",
                          "priority must be an integer in -1000..1000 (higher runs first)");
      goto out;
    }
    priority = (long)json_integer_value(jprio);
  }
  tags_arr = json_array();
  if (jtags && !json_is_null(jtags)) {
    if ((status = api_parse_tags(jtags, tags, &n_tags, tags_arr, resp))) goto out;
  }
  td_err e;
  td_err_clear(&e);
  int rc = td_kinds_validate(json_string_value(jkind), json_is_object(jparams) ? jparams : NULL,
                             &a->limits, &filled, NULL, &e);
  if (rc == TD_ENOTFOUND) {
    status = http_error(resp, HTTP_E_UNKNOWN_KIND, "kind", "%s; GET /api/v1/kinds lists them",
                        e.msg);
    goto out;
  }
  if (rc) {
    status = http_error_td(resp, &e);
    goto out;
  }
  params_json = http_json_dump(filled);
  tags_json = http_json_dump(tags_arr);
  if (!params_json || !tags_json) {
    status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
    goto out;
  }
  store *st;
  if ((rc = http_store(req, &st, &e))) {
    status = http_error_td(resp, &e);
    goto out;
  }
  store_new_job nj = {.kind = json_string_value(jkind), .name = name, .params_json = params_json,
                      .tags_json = tags_json, .tags = tags, .n_tags = n_tags,
                      .priority = priority, .executor = executor};
  /* params.init_from / params.fork: the named checkpoint exists and fits (api_checkpoints.c) */
  if ((status = api_resolve_start(st, filled, &nj, resp))) goto out;
  int64_t id = 0;
  rc = store_job_insert(st, &nj, a->max_queued, &id, &e);
  if (rc == TD_ELIMIT) {
    http_resp_header(resp, "Retry-After", "5");
    status = http_error(resp, HTTP_E_QUEUE_FULL, NULL, "%s", e.msg);
    goto out;
  }
  if (rc) {
    status = http_error_td(resp, &e);
    goto out;
  }
  if (a->q) queue_notify(a->q);
  log_emit(LOG_INFO, "job_queued", "job=%lld kind=%s executor=%s", (long long)id,
           json_string_value(jkind), executor);
  http_resp_header(resp, "Location", "/api/v1/jobs/%lld", (long long)id);
  status = respond_job(req, resp, st, id, 201);
out:
  free(params_json);
  free(tags_json);
  json_decref(tags_arr);
  json_decref(filled);
  json_decref(root);
  return status;
}

/* Parse a comma-separated status list into a bit mask. */
static int parse_status_mask(const char *s, unsigned *mask) {
  *mask = 0;
  char buf[128];
  if (strlen(s) >= sizeof buf) return TD_EINVAL;
  strcpy(buf, s);
  char *save = NULL;
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int st = store_status_parse(t);
    if (st < 0) return TD_EINVAL;
    *mask |= 1u << st;
  }
  return *mask ? 0 : TD_EINVAL;
}

typedef struct list_ctx {
  http_buf *b;
  int n;
} list_ctx;

static void list_row(void *ctx, const store_job *j) {
  list_ctx *l = ctx;
  if (l->n++) http_buf_add(l->b, ",", 1);
  api_job_json(l->b, j);
}

/* A search (?q=): each job of a page is parsed and matched; matches go to list_row until the
 * page is full. */
typedef struct search_ctx {
  list_ctx *l;
  const search_query *q;
  long want, scanned;
  int64_t last_id; /* the last job looked at */
} search_ctx;

static void search_row(void *ctx, const store_job *j) {
  search_ctx *c = ctx;
  if (c->l->n >= c->want) return;
  c->scanned++;
  c->last_id = j->id;
  json_t *params = j->params ? json_loads(j->params, 0, NULL) : NULL;
  json_t *summary = j->summary ? json_loads(j->summary, 0, NULL) : NULL;
  json_t *tags = j->tags ? json_loads(j->tags, 0, NULL) : NULL;
  search_record r = {.kind = j->kind, .name = j->name, .status = j->status, .params = params,
                     .summary = summary, .tags = tags};
  if (search_match(c->q, &r)) list_row(c->l, j);
  json_decref(params);
  json_decref(summary);
  json_decref(tags);
}

/* Jobs looked at by one search request at most (a bounded scan, newest first); past it the
 * answer carries next_cursor to continue from. */
#define SEARCH_SCAN_MAX 20000
#define SEARCH_PAGE 500

int api_jobs_list(http_req *req, http_resp *resp) {
  store_job_filter f = {.limit = 50};
  const char *v;
  if ((v = http_query(req, "status")) && parse_status_mask(v, &f.status_mask))
    return http_error(resp, HTTP_E_INVALID_QUERY, "status",
                      "status must be a comma-separated list of queued, running, succeeded, "
                      "failed, diverged, cancelled, pruned, crashed");
  if ((v = http_query(req, "kind"))) {
    if (!td_kinds_find(v) && strcmp(v, "external") != 0) { /* external: POST /api/v1/runs */
      char names[256] = "";
      for (size_t i = 0, n = 0; i < td_kinds_count() && n < sizeof names; i++)
        n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "",
                              td_kinds_at(i)->name);
      return http_error(resp, HTTP_E_INVALID_QUERY, "kind", "unknown kind; the kinds are: %s",
                        names);
    }
    f.kind = v;
  }
  if ((v = http_query(req, "tag"))) {
    if (!valid_tag(v))
      return http_error(resp, HTTP_E_INVALID_QUERY, "tag", "not a valid tag");
    f.tag = v;
  }
  if ((v = http_query(req, "sweep")) && http_parse_id(v, &f.sweep_id))
    return http_error(resp, HTTP_E_INVALID_QUERY, "sweep",
                      "sweep must be a sweep id (a positive integer without leading zeros)");
  long long ll;
  if ((v = http_query(req, "limit"))) {
    if (http_parse_ll(v, 1, 1000, &ll))
      return http_error(resp, HTTP_E_INVALID_QUERY, "limit",
                        "limit must be an integer in 1..1000");
    f.limit = (long)ll;
  }
  if ((v = http_query(req, "cursor")) && http_parse_id(v, &f.before_id))
    return http_error(resp, HTTP_E_INVALID_QUERY, "cursor",
                      "cursor must be the next_cursor of a previous page");
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e)) return http_error_td(resp, &e);
  if (f.sweep_id) { /* an unknown sweep is an unknown value, like an unknown kind */
    int rc = sweeps_exists(st, f.sweep_id, &e);
    if (rc == TD_ENOTFOUND)
      return http_error(resp, HTTP_E_INVALID_QUERY, "sweep", "no such sweep");
    if (rc) return http_error_td(resp, &e);
  }
  search_query *sq = NULL;
  if ((v = http_query(req, "q")) && *v) {
    size_t pos = 0;
    char msg[160];
    int rc = search_parse(v, &sq, &pos, msg, sizeof msg);
    if (rc == TD_EINVAL)
      return http_error(resp, HTTP_E_INVALID_QUERY, "q", "at character %zu of the query: %s", pos + 1,
                        msg);
    if (rc) return http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
  }
  http_buf_str(&resp->body, "{\"jobs\":[");
  list_ctx l = {&resp->body, 0};
  int64_t next = 0;
  if (sq) {
    search_ctx c = {.l = &l, .q = sq, .want = f.limit};
    store_job_filter pf = f;
    pf.limit = SEARCH_PAGE;
    for (;;) {
      int64_t pnext = 0;
      c.last_id = 0;
      if (store_job_list(st, &pf, search_row, &c, &pnext, &e)) {
        search_free(sq);
        return http_error_td(resp, &e);
      }
      if (l.n >= c.want) { /* full: the next page starts after the last job looked at (it
                            * may turn out empty) */
        next = c.last_id;
        break;
      }
      if (!pnext) break;
      if (c.scanned >= SEARCH_SCAN_MAX) {
        next = pnext;
        break;
      }
      pf.before_id = pnext;
    }
    search_free(sq);
  } else if (store_job_list(st, &f, list_row, &l, &next, &e)) {
    return http_error_td(resp, &e);
  }
  if (next) http_buf_printf(&resp->body, "],\"next_cursor\":\"%lld\"}", (long long)next);
  else http_buf_str(&resp->body, "],\"next_cursor\":null}");
  resp->status = 200;
  return 200;
}

/* The {id} of the route, or a 404 response. */
static int job_id_of(http_req *req, http_resp *resp, int64_t *id) {
  if (req->n_seg < 1 || http_parse_id(req->seg[0], id)) {
    http_error(resp, HTTP_E_NOT_FOUND, NULL,
               "no such job (ids are positive integers without a sign or leading zeros)");
    return -1;
  }
  return 0;
}

static void cached_into_buf(void *ctx, const char *data, size_t len) { http_buf_add(ctx, data, len); }

/* GET /api/v1/jobs/{id}: from the job cache when it holds a current copy (store_cache.h),
 * else from the database, and then the rendered record is offered to the cache. */
int api_jobs_get(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  int64_t id;
  if (job_id_of(req, resp, &id)) return resp->status;
  store_cache_stamp stamp;
  if (a && a->job_cache &&
      store_cache_get(a->job_cache, id, cached_into_buf, &resp->body, &stamp)) {
    resp->status = 200;
    return 200;
  }
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e)) return http_error_td(resp, &e);
  int status = respond_job(req, resp, st, id, 200);
  if (status == 200 && a && a->job_cache && !resp->body.failed && resp->body.data)
    store_cache_put(a->job_cache, id, &stamp, resp->body.data, resp->body.len);
  return status;
}

int api_jobs_cancel(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  int64_t id;
  if (job_id_of(req, resp, &id)) return resp->status;
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e)) return http_error_td(resp, &e);
  int outcome = -1, rc;
  if (a->q) {
    rc = queue_cancel(a->q, st, id, &outcome, &e);
  } else {
    rc = store_job_cancel(st, id, &outcome, &e);
  }
  if (rc) return http_error_td(resp, &e);
  /* 200: cancelled now; 202: a running job will stop at its next step. */
  return respond_job(req, resp, st, id, outcome == STORE_RUNNING ? 202 : 200);
}

static void artifact_row(void *ctx, const store_artifact *art) {
  list_ctx *l = ctx;
  if (l->n++) http_buf_add(l->b, ",", 1);
  http_buf_str(l->b, "{\"name\":");
  http_buf_json_str(l->b, art->name);
  http_buf_str(l->b, ",\"content_type\":");
  http_buf_json_str(l->b, art->content_type);
  http_buf_printf(l->b, ",\"size\":%zu,\"created_at\":", art->size);
  http_buf_json_str(l->b, art->created_at);
  http_buf_str(l->b, "}");
}

int api_artifacts_list(http_req *req, http_resp *resp) {
  int64_t id;
  if (job_id_of(req, resp, &id)) return resp->status;
  store *st;
  td_err e;
  td_err_clear(&e);
  int status;
  if (http_store(req, &st, &e) || store_job_status(st, id, &status, &e))
    return http_error_td(resp, &e);
  http_buf_printf(&resp->body, "{\"job_id\":%lld,\"artifacts\":[", (long long)id);
  list_ctx l = {&resp->body, 0};
  if (store_artifact_list(st, id, artifact_row, &l, &e)) return http_error_td(resp, &e);
  http_buf_str(&resp->body, "]}");
  resp->status = 200;
  return 200;
}

typedef struct art_ctx {
  http_resp *resp;
  char ctype[128];
} art_ctx;

static void artifact_body(void *ctx, const store_artifact *art) {
  art_ctx *c = ctx;
  http_buf_add(&c->resp->body, art->data ? art->data : "", art->size);
  snprintf(c->ctype, sizeof c->ctype, "%s", art->content_type ? art->content_type : "");
}

int api_artifacts_get(http_req *req, http_resp *resp) {
  int64_t id;
  if (job_id_of(req, resp, &id)) return resp->status;
  const char *name = req->n_seg > 1 ? req->seg[1] : "";
  if (!*name || strlen(name) > 128)
    return http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such artifact");
  store *st;
  td_err e;
  td_err_clear(&e);
  int status;
  if (http_store(req, &st, &e) || store_job_status(st, id, &status, &e))
    return http_error_td(resp, &e);
  art_ctx c = {.resp = resp};
  if (store_artifact_get(st, id, name, artifact_body, &c, &e)) return http_error_td(resp, &e);
  /* The content type is stored per artifact; http_resp keeps only a static pointer, so the
   * value travels as an explicit header and the default is suppressed. */
  http_resp_header(resp, "Content-Type", "%s", c.ctype[0] ? c.ctype : "application/octet-stream");
  http_resp_header(resp, "Content-Security-Policy", "sandbox");
  resp->content_type = "";
  resp->status = 200;
  return 200;
}

/* DELETE /api/v1/jobs/{id}: a finished job, with its metrics and artifacts; 204. A queued or
 * running job is 409 (cancel it first). */
int api_jobs_delete(http_req *req, http_resp *resp) {
  int64_t id;
  if (job_id_of(req, resp, &id)) return resp->status;
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e) || store_job_delete(st, id, &e)) return http_error_td(resp, &e);
  resp->status = 204;
  return 204;
}

/* PATCH /api/v1/jobs/{id} with {"name"?, "tags"?}: edit them after the fact; 200 with the job. */
int api_jobs_patch(http_req *req, http_resp *resp) {
  int64_t id;
  if (job_id_of(req, resp, &id)) return resp->status;
  json_t *root;
  int status = http_json_body(req, resp, 0, &root);
  if (status) return status;
  const char *tags[API_MAX_TAGS];
  size_t n_tags = 0;
  json_t *tags_arr = NULL;
  char *tags_json = NULL;
  const char *name = NULL;
  if (!json_is_object(root) || !json_object_size(root)) {
    status = http_error(resp, HTTP_E_INVALID_REQUEST, NULL,
                        "the body must be a JSON object with name and/or tags");
    goto out;
  }
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (strcmp(key, "name") && strcmp(key, "tags")) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, key,
                          "unknown or read-only field; a job's name and tags can be edited");
      goto out;
    }
  }
  json_t *jname = json_object_get(root, "name"), *jtags = json_object_get(root, "tags");
  if (jname) {
    if (!json_is_string(jname) || !api_valid_name(json_string_value(jname))) {
      status = http_error(resp, HTTP_E_INVALID_REQUEST, "name",
                          "name must be a string of at most %d characters without control "
                          "characters", API_MAX_NAME_LEN);
      goto out;
    }
    name = json_string_value(jname);
  }
  if (jtags) {
    tags_arr = json_array();
    if ((status = api_parse_tags(jtags, tags, &n_tags, tags_arr, resp))) goto out;
    if (!(tags_json = http_json_dump(tags_arr))) {
      status = http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
      goto out;
    }
  }
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e) || store_job_edit(st, id, name, tags_json, tags, n_tags, &e)) {
    status = http_error_td(resp, &e);
    goto out;
  }
  status = respond_job(req, resp, st, id, 200);
out:
  free(tags_json);
  json_decref(tags_arr);
  json_decref(root);
  return status;
}
