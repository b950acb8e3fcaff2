/* api_checkpoints.c: /api/v1/checkpoints (upload and read safetensors checkpoints) and the
 * submit-time resolution of a job's params.init_from / params.fork.
 *
 * An upload is the raw safetensors file as the body (Content-Type: application/octet-stream,
 * at most the server's --max-upload bytes, 64 MiB by default). It is validated before it is
 * stored: the header and offsets (td_safetensors_parse), dtype F64 or F32 and finite values
 * (td_safetensors_check_float), at least one tensor. Whether its tensors fit a model is
 * checked when a job names it, against the model of that job's params. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "base/schema.h"
#include "log.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"

#define MAX_LISTED_STEPS 256

static int is_octet_stream(const char *ct) {
  if (!ct) return 0;
  while (*ct == ' ') ct++;
  size_t n = strlen("application/octet-stream");
  if (strncasecmp(ct, "application/octet-stream", n) != 0) return 0;
  ct += n;
  while (*ct == ' ') ct++;
  return *ct == '\0' || *ct == ';';
}

/* [{"name","dtype","shape"}] of a parsed file, header order. NULL when out of memory. */
static json_t *tensor_list(const td_safetensors *st) {
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < td_safetensors_count(st); i++) {
    const td_safetensors_tensor *t = td_safetensors_at(st, i);
    json_t *shape = json_array();
    for (size_t d = 0; shape && d < t->ndim; d++)
      json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
    json_t *o = shape ? json_pack("{s:s, s:s, s:o}", "name", t->name, "dtype", t->dtype, "shape",
                                  shape)
                      : NULL;
    if (!o || json_array_append_new(arr, o)) {
      json_decref(arr);
      return NULL;
    }
  }
  return arr;
}

static void checkpoint_json(void *ctx, const store_checkpoint *c) {
  http_buf *b = ctx;
  http_buf_printf(b, "{\"id\":%lld,\"bytes\":%zu,\"created_at\":", (long long)c->id, c->size);
  http_buf_json_str(b, c->created_at);
  http_buf_str(b, ",\"tensors\":");
  http_buf_str(b, c->tensors); /* written by this server */
  http_buf_str(b, "}");
}

int api_checkpoints_create(http_req *req, http_resp *resp) {
  if (!is_octet_stream(http_header(req, "Content-Type")))
    return http_error(resp, HTTP_E_UNSUPPORTED_MEDIA_TYPE, NULL,
                      "send the safetensors file as the body with Content-Type: "
                      "application/octet-stream");
  if (!req->body_len)
    return http_error(resp, HTTP_E_INVALID_REQUEST, "body", "the body is empty; send a "
                      "safetensors file");
  td_err e;
  td_err_clear(&e);
  td_safetensors *st = NULL;
  int rc = td_safetensors_parse(req->body, req->body_len, &st, &e);
  if (!rc) rc = td_safetensors_check_float(st, &e);
  if (!rc && td_safetensors_count(st) == 0)
    rc = td_err_set(&e, TD_EINVAL, NULL, "the file holds no tensors");
  if (rc) {
    td_safetensors_destroy(st);
    if (rc == TD_ENOMEM) return http_error_td(resp, &e);
    /* 400 for every malformed file (TD_ELIMIT: a header over 100 MiB is malformed here) */
    return http_error(resp, HTTP_E_INVALID_PARAM, e.field[0] ? e.field : "body",
                      "invalid safetensors file: %s", e.msg);
  }
  json_t *list = tensor_list(st);
  td_safetensors_destroy(st);
  char *tensors = list ? http_json_dump(list) : NULL;
  json_decref(list);
  if (!tensors) return http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
  store *db;
  int64_t id = 0;
  if ((rc = http_store(req, &db, &e)) ||
      (rc = store_checkpoint_insert(db, req->body, req->body_len, tensors, &id, &e))) {
    free(tensors);
    return http_error_td(resp, &e);
  }
  free(tensors);
  log_emit(LOG_INFO, "checkpoint_stored", "checkpoint=%lld bytes=%zu", (long long)id,
           req->body_len);
  if ((rc = store_checkpoint_get(db, id, 0, checkpoint_json, &resp->body, &e)))
    return http_error_td(resp, &e);
  http_resp_header(resp, "Location", "/api/v1/checkpoints/%lld", (long long)id);
  resp->status = 201;
  return 201;
}

/* The {id} of the route, or a 404 response. */
static int checkpoint_id_of(http_req *req, http_resp *resp, int64_t *id) {
  if (req->n_seg < 1 || http_parse_id(req->seg[0], id)) {
    http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such checkpoint (ids are positive integers)");
    return -1;
  }
  return 0;
}

int api_checkpoints_get(http_req *req, http_resp *resp) {
  int64_t id;
  if (checkpoint_id_of(req, resp, &id)) return resp->status;
  store *db;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &db, &e) || store_checkpoint_get(db, id, 0, checkpoint_json, &resp->body, &e))
    return http_error_td(resp, &e);
  resp->status = 200;
  return 200;
}

static void checkpoint_bytes(void *ctx, const store_checkpoint *c) {
  http_buf_add(ctx, c->data ? c->data : "", c->data ? c->size : 0);
}

int api_checkpoints_file(http_req *req, http_resp *resp) {
  int64_t id;
  if (checkpoint_id_of(req, resp, &id)) return resp->status;
  store *db;
  td_err e;
  td_err_clear(&e);
  if (http_store(req, &db, &e) || store_checkpoint_get(db, id, 1, checkpoint_bytes, &resp->body, &e))
    return http_error_td(resp, &e);
  resp->content_type = "application/octet-stream";
  http_resp_header(resp, "Content-Disposition",
                   "attachment; filename=\"checkpoint_%lld.safetensors\"", (long long)id);
  resp->status = 200;
  return 200;
}

/* ---------------------------------------------------------------- init_from / fork */

/* The 400 for a job ref {job, step} whose job has no checkpoint at `step`: lists the steps
 * that have one. */
static int no_checkpoint_at(store *db, http_resp *resp, const char *field, int64_t job, long step) {
  long steps[MAX_LISTED_STEPS];
  size_t n = 0;
  td_err e;
  td_err_clear(&e);
  if (store_checkpoint_steps(db, job, steps, MAX_LISTED_STEPS, &n, &e))
    return http_error_td(resp, &e);
  if (n == 0)
    return http_error(resp, HTTP_E_INVALID_PARAM, field, "job %lld has no checkpoint at step %ld "
                      "and no stored checkpoints at all (set its checkpoint_every)",
                      (long long)job, step);
  char list[400];
  size_t o = 0;
  size_t shown = n < MAX_LISTED_STEPS ? n : MAX_LISTED_STEPS;
  for (size_t i = 0; i < shown && o < sizeof list - 24; i++)
    o += (size_t)snprintf(list + o, sizeof list - o, i ? ", %ld" : "%ld", steps[i]);
  if (o >= sizeof list - 24 || shown < n) snprintf(list + o, sizeof list - o, ", ...");
  return http_error(resp, HTTP_E_INVALID_PARAM, field, "job %lld has no checkpoint at step %ld; "
                    "it has checkpoints at steps %s", (long long)job, step, list);
}

/* A non-negative integer member of a params object, or -1 when absent. */
static long long member_ll(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  if (json_is_integer(v)) return json_integer_value(v);
  if (json_is_real(v)) return (long long)json_real_value(v);
  return -1;
}

int api_resolve_start(store *db, const json_t *filled, store_new_job *nj, http_resp *resp) {
  const json_t *init = td_param_get(filled, "init_from"), *fork = td_param_get(filled, "fork");
  if (init && !json_is_object(init)) init = NULL;
  if (fork && !json_is_object(fork)) fork = NULL;
  if (init && json_object_size(init) == 0) init = NULL;
  if (fork && json_object_size(fork) == 0) fork = NULL;
  if (!init && !fork) return 0;
  if (init && fork)
    return http_error(resp, HTTP_E_INVALID_PARAM, "params.fork", "give either params.init_from "
                      "or params.fork, not both (a fork already starts from the parent's "
                      "parameters)");
  const json_t *ref = init ? init : fork;
  const char *field = init ? "params.init_from" : "params.fork";
  char sub[64];
  long long job = member_ll(ref, "job"), step = member_ll(ref, "step");
  long long ckpt = member_ll(ref, "checkpoint");
  if (fork && ckpt >= 0)
    return http_error(resp, HTTP_E_INVALID_PARAM, "params.fork.checkpoint", "a fork names a job "
                      "and a step ({\"job\": J, \"step\": S}); to start from an uploaded "
                      "checkpoint use params.init_from");
  if (ckpt >= 0 && (job >= 0 || step >= 0))
    return http_error(resp, HTTP_E_INVALID_PARAM, field, "give either {\"job\", \"step\"} or "
                      "{\"checkpoint\"}, not both");
  if (ckpt < 0 && (job < 1 || step < 0)) {
    snprintf(sub, sizeof sub, "%s.%s", field, job < 1 ? "job" : "step");
    return http_error(resp, HTTP_E_INVALID_PARAM, sub, "%s needs %s", field,
                      init ? "{\"job\": J, \"step\": S} or {\"checkpoint\": C}"
                           : "{\"job\": J, \"step\": S}");
  }
  td_err e;
  td_err_clear(&e);
  int rc, status;
  if (ckpt < 0 && (rc = store_job_status(db, job, &status, &e))) {
    if (rc != TD_ENOTFOUND) return http_error_td(resp, &e);
    snprintf(sub, sizeof sub, "%s.job", field);
    return http_error(resp, HTTP_E_INVALID_PARAM, sub, "%s names job %lld, which does not exist",
                      field, job);
  }
  void *data = NULL;
  size_t len = 0;
  rc = store_checkpoint_read(db, ckpt < 0 ? (long)job : 0, ckpt < 0 ? (long)step : 0,
                           ckpt < 0 ? 0 : (long)ckpt, &data, &len, &e);
  if (rc == TD_ENOTFOUND && ckpt >= 0) {
    snprintf(sub, sizeof sub, "%s.checkpoint", field);
    return http_error(resp, HTTP_E_INVALID_PARAM, sub, "%s names checkpoint %lld, which does not "
                      "exist (POST /api/v1/checkpoints uploads one)", field, ckpt);
  }
  if (rc == TD_ENOTFOUND) {
    snprintf(sub, sizeof sub, "%s.step", field);
    return no_checkpoint_at(db, resp, sub, job, (long)step);
  }
  if (rc) return http_error_td(resp, &e);
  rc = td_checkpoint_check_params(filled, data, len, fork != NULL, &e);
  free(data);
  if (rc == TD_ENOMEM) return http_error_td(resp, &e);
  if (rc == TD_ENOTFOUND && !strcmp(e.field, "params.model"))
    return http_error(resp, HTTP_E_INVALID_PARAM, field, "this kind trains no network, so it "
                      "cannot start from a checkpoint");
  if (rc) {
    char what[64];
    if (ckpt >= 0) snprintf(what, sizeof what, "checkpoint %lld", ckpt);
    else snprintf(what, sizeof what, "the checkpoint of job %lld at step %lld", job, step);
    return http_error(resp, HTTP_E_INVALID_PARAM, field, "%s does not fit this job: %s", what,
                      e.msg);
  }
  if (fork) {
    nj->parent_job_id = job;
    nj->parent_step = (long)step;
  }
  return 0;
}
