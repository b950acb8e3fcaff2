/* api_sweeps.c: /api/v1/sweeps (create, list, get, cancel) and /api/v1/fits (a scaling-law
 * fit of points the caller supplies). The logic is in sweeps.c and core/scaling/fit.c. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaling/fit.h"
#include "api.h"
#include "log.h"
#include "sweeps.h"

/* POST /api/v1/fits caps: the fit runs on the request's thread, and its cost grows as
 * points x (bootstrap resamples + 1) (about 10 us each: 250000 is a couple of seconds). */
#define FITS_MAX_POINTS 10000
#define FITS_MAX_WORK 250000.0

static json_t *parse_body(http_req *req, http_resp *resp) {
  json_t *root = NULL;
  return http_json_body(req, resp, 0, &root) ? NULL : root;
}

/* The {id} of the route, or a 404 response. */
static int sweep_id_of(http_req *req, http_resp *resp, int64_t *id) {
  if (req->n_seg < 1 || http_parse_id(req->seg[0], id)) {
    http_error(resp, HTTP_E_NOT_FOUND, NULL,
               "no such sweep (ids are positive integers without a sign or leading zeros)");
    return -1;
  }
  return 0;
}

static int respond_sweep(http_resp *resp, store *st, int64_t id, int status) {
  td_err e;
  td_err_clear(&e);
  if (sweeps_get_json(st, id, 1, &resp->body, &e)) return http_error_td(resp, &e);
  resp->status = status;
  return status;
}

int api_sweeps_create(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  json_t *root = parse_body(req, resp);
  if (!root) return resp->status;
  store *st;
  td_err e;
  td_err_clear(&e);
  int status;
  if (http_store(req, &st, &e)) {
    status = http_error_td(resp, &e);
    goto out;
  }
  int64_t id = 0;
  size_t n = 0;
  int full = 0;
  int rc = sweeps_create_on(st, root, &a->limits, a->max_queued, a->default_executor, &id, &n,
                            &full, &e);
  if (rc && full) {
    http_resp_header(resp, "Retry-After", "5");
    status = http_error(resp, HTTP_E_QUEUE_FULL, NULL, "%s", e.msg);
    goto out;
  }
  if (rc) {
    status = http_error_td(resp, &e);
    goto out;
  }
  if (a->q) queue_notify(a->q);
  http_resp_header(resp, "Location", "/api/v1/sweeps/%lld", (long long)id);
  status = respond_sweep(resp, st, id, 201);
out:
  json_decref(root);
  return status;
}

int api_sweeps_list(http_req *req, http_resp *resp) {
  long long limit = 50;
  int64_t cursor = 0;
  const char *v;
  if ((v = http_query(req, "limit")) && http_parse_ll(v, 1, 1000, &limit))
    return http_error(resp, HTTP_E_INVALID_QUERY, "limit", "limit must be an integer in 1..1000");
  if ((v = http_query(req, "cursor")) && http_parse_id(v, &cursor))
    return http_error(resp, HTTP_E_INVALID_QUERY, "cursor",
                      "cursor must be the next_cursor of a previous page");
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e)) return http_error_td(resp, &e);
  if (sweeps_list_json(st, cursor, (long)limit, &resp->body, &e)) return http_error_td(resp, &e);
  resp->status = 200;
  return 200;
}

int api_sweeps_get(http_req *req, http_resp *resp) {
  int64_t id;
  if (sweep_id_of(req, resp, &id)) return resp->status;
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e)) return http_error_td(resp, &e);
  const char *ch = http_query(req, "children");
  int with_children = 1;
  if (ch) {
    if (strcmp(ch, "0") == 0 || strcmp(ch, "false") == 0) with_children = 0;
    else if (strcmp(ch, "1") && strcmp(ch, "true"))
      return http_error(resp, HTTP_E_INVALID_QUERY, "children",
                        "children must be true, false, 1 or 0");
  }
  if (sweeps_get_json(st, id, with_children, &resp->body, &e)) return http_error_td(resp, &e);
  resp->status = 200;
  return 200;
}

typedef struct cancel_ctx {
  api_ctx *a;
  store *st;
} cancel_ctx;

static void cancel_running(void *ctx, int64_t job_id) {
  cancel_ctx *c = ctx;
  td_err e;
  td_err_clear(&e);
  int outcome = -1;
  /* A child that finished meanwhile answers TD_ECONFLICT: nothing to do. */
  if (c->a->q) queue_cancel(c->a->q, c->st, job_id, &outcome, &e);
  else store_job_cancel(c->st, job_id, &outcome, &e);
}

int api_sweeps_cancel(http_req *req, http_resp *resp) {
  int64_t id;
  if (sweep_id_of(req, resp, &id)) return resp->status;
  store *st;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &st, &e)) return http_error_td(resp, &e);
  cancel_ctx c = {.a = req->app, .st = st};
  long n_cancelled = 0, n_running = 0;
  if (sweeps_cancel(st, id, cancel_running, &c, &n_cancelled, &n_running, &e))
    return http_error_td(resp, &e);
  /* 200: everything stopped now; 202: running children stop at their next step. */
  return respond_sweep(resp, st, id, n_running ? 202 : 200);
}

int api_fits_create(http_req *req, http_resp *resp) {
  json_t *root = parse_body(req, resp);
  if (!root) return resp->status;
  int status;
  json_t *pts = json_object_get(root, "points"), *boot = json_object_get(root, "bootstrap");
  double resamples = json_is_integer(boot) ? (double)json_integer_value(boot) : 200.0;
  if (json_is_array(pts) && json_array_size(pts) > FITS_MAX_POINTS) {
    status = http_error(resp, HTTP_E_LIMIT_EXCEEDED, "points",
                        "%zu points; this endpoint takes at most %d", json_array_size(pts),
                        FITS_MAX_POINTS);
    goto out;
  }
  if (json_is_array(pts) && resamples >= 0 &&
      (double)json_array_size(pts) * (resamples + 1) > FITS_MAX_WORK) {
    status = http_error(resp, HTTP_E_LIMIT_EXCEEDED, "bootstrap",
                        "%zu points x (%.0f bootstrap resamples + 1) is above the cap of %.0f; "
                        "ask for fewer resamples",
                        json_array_size(pts), resamples, FITS_MAX_WORK);
    goto out;
  }
  json_t *result = NULL;
  td_err e;
  td_err_clear(&e);
  int rc = td_fit_request(root, &result, &e);
  if (rc) {
    status = http_error_td(resp, &e);
    goto out;
  }
  http_buf_json_value(&resp->body, result);
  json_decref(result);
  resp->status = status = 200;
out:
  json_decref(root);
  return status;
}
