/* test_api_checkpoints.c: the submit-time resolution of params.init_from / params.fork
 * (api_resolve_start) on a :memory: store with the real migrations: what exists, which steps
 * have a checkpoint, whether the tensors fit the model of the params, and the parent link.
 * Exact outcomes, no tolerances. Run from the repo root (migrations/), or set
 * TDLAB_MIGRATIONS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../server/api.h"
#include "nn/checkpoint.h"
#include "optim/optim.h"

static const char *mig_dir(void) {
  const char *d = getenv("TDLAB_MIGRATIONS");
  return d ? d : "migrations";
}

typedef struct fx {
  store *s;
  int64_t job;      /* has checkpoint_step20 (params only) and checkpoint_step100 (sgd state) */
  int64_t upload;   /* an uploaded checkpoint of the 3 -> [4] -> 1 model */
  int64_t upload_bad; /* of a 3 -> [5] -> 1 model */
} fx;

/* The file of a synthetic-data model (data.d = 3, one hidden layer of `hidden`, 1 output),
 * with the state of sgd with momentum when `with_opt`. */
static unsigned char *model_file(int hidden, int with_opt, size_t *len) {
  td_mlp_cfg cfg = {.in_dim = 3, .out_dim = 1, .n_hidden = 1, .hidden = {hidden},
                    .act = TD_ACT_RELU, .init_scale = 1.0};
  td_mlp *m = NULL;
  assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
  td_mlp_init(m, 1);
  td_optim *o = NULL;
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = 0.9;
  if (with_opt) assert_int_equal(td_optim_create("sgd", &hp, m->n_params, &o, NULL), 0);
  unsigned char *buf = NULL;
  assert_int_equal(td_checkpoint_save_state(m, m->params, o, NULL, &buf, len, NULL), 0);
  td_optim_destroy(o);
  td_mlp_destroy(m);
  return buf;
}

static void fx_open(fx *f) {
  td_err e;
  assert_int_equal(store_open(":memory:", 0, &f->s, &e), 0);
  assert_int_equal(store_migrate(f->s, mig_dir(), NULL, NULL, &e), 0);
  store_new_job j = {.kind = "train", .params_json = "{}"};
  assert_int_equal(store_job_insert(f->s, &j, 0, &f->job, &e), 0);
  size_t len;
  unsigned char *b = model_file(4, 0, &len);
  assert_int_equal(store_artifact_put(f->s, f->job, "checkpoint_step20.safetensors",
                                      "application/octet-stream", b, len, &e), 0);
  assert_int_equal(store_checkpoint_insert(f->s, b, len, "[]", &f->upload, &e), 0);
  free(b);
  b = model_file(4, 1, &len);
  assert_int_equal(store_artifact_put(f->s, f->job, "checkpoint_step100.safetensors",
                                      "application/octet-stream", b, len, &e), 0);
  free(b);
  b = model_file(5, 0, &len);
  assert_int_equal(store_checkpoint_insert(f->s, b, len, "[]", &f->upload_bad, &e), 0);
  free(b);
}

/* Filled params of a train-like job with `extra` (a JSON object text) merged in. */
static json_t *params_with(const char *extra) {
  json_t *p = json_pack("{s:{s:s, s:i}, s:{s:[i], s:s}, s:{s:s, s:f}}", "data", "name",
                        "synthetic", "d", 3, "model", "hidden", 4, "activation", "relu",
                        "optimizer", "name", "sgd", "lr", 0.1);
  json_t *x = json_loads(extra, 0, NULL);
  assert_non_null(x);
  json_object_update(p, x);
  json_decref(x);
  return p;
}

typedef struct outcome {
  int status;
  char field[128];
  char message[512];
  store_new_job nj;
} outcome;

static outcome resolve(fx *f, const char *extra) {
  json_t *p = params_with(extra);
  outcome o = {0};
  http_resp resp = {.status = 200, .fd = -1};
  http_buf_init(&resp.body);
  o.status = api_resolve_start(f->s, p, &o.nj, &resp);
  if (o.status) {
    json_t *body = json_loadb(resp.body.data, resp.body.len, 0, NULL);
    assert_non_null(body);
    json_t *err = json_object_get(body, "error");
    snprintf(o.field, sizeof o.field, "%s",
             json_string_value(json_object_get(err, "field")) ?: "");
    snprintf(o.message, sizeof o.message, "%s",
             json_string_value(json_object_get(err, "message")) ?: "");
    json_decref(body);
  }
  http_buf_free(&resp.body);
  json_decref(p);
  return o;
}

static void expect_400(fx *f, const char *extra, const char *field, const char *in_message) {
  outcome o = resolve(f, extra);
  if (o.status != 400 || strcmp(o.field, field) || !strstr(o.message, in_message))
    fail_msg("%s: status %d field '%s' message '%s'; wanted 400 '%s' containing '%s'", extra,
             o.status, o.field, o.message, field, in_message);
  assert_int_equal(o.nj.parent_job_id, 0);
}

static void test_resolve(void **state) {
  (void)state;
  fx f;
  fx_open(&f);
  char x[256];
  /* nothing to resolve */
  assert_int_equal(resolve(&f, "{}").status, 0);
  assert_int_equal(resolve(&f, "{\"init_from\":{}}").status, 0);
  /* init_from an uploaded checkpoint that fits, and one that does not */
  snprintf(x, sizeof x, "{\"init_from\":{\"checkpoint\":%lld}}", (long long)f.upload);
  outcome o = resolve(&f, x);
  assert_int_equal(o.status, 0);
  assert_int_equal(o.nj.parent_job_id, 0); /* init_from sets no parent */
  snprintf(x, sizeof x, "{\"init_from\":{\"checkpoint\":%lld}}", (long long)f.upload_bad);
  expect_400(&f, x, "params.init_from", "tensor 'layers.0.weight' has shape (5, 3), the model "
             "expects (4, 3)");
  expect_400(&f, "{\"init_from\":{\"checkpoint\":999}}", "params.init_from.checkpoint",
             "checkpoint 999, which does not exist");
  /* init_from a job's checkpoint: exists, missing step, missing job */
  snprintf(x, sizeof x, "{\"init_from\":{\"job\":%lld,\"step\":20}}", (long long)f.job);
  assert_int_equal(resolve(&f, x).status, 0);
  snprintf(x, sizeof x, "{\"init_from\":{\"job\":%lld,\"step\":100}}", (long long)f.job);
  assert_int_equal(resolve(&f, x).status, 0); /* optimizer state is ignored by init_from */
  snprintf(x, sizeof x, "{\"init_from\":{\"job\":%lld,\"step\":50}}", (long long)f.job);
  expect_400(&f, x, "params.init_from.step", "checkpoints at steps 20, 100");
  expect_400(&f, "{\"init_from\":{\"job\":999,\"step\":20}}", "params.init_from.job",
             "job 999, which does not exist");
  snprintf(x, sizeof x, "{\"init_from\":{\"job\":%lld}}", (long long)f.job);
  expect_400(&f, x, "params.init_from.step", "needs");
  snprintf(x, sizeof x, "{\"init_from\":{\"job\":%lld,\"step\":20,\"checkpoint\":1}}",
           (long long)f.job);
  expect_400(&f, x, "params.init_from", "not both");
  /* fork: the parent link on success */
  snprintf(x, sizeof x, "{\"fork\":{\"job\":%lld,\"step\":100}}", (long long)f.job);
  o = resolve(&f, x);
  assert_int_equal(o.status, 0);
  assert_int_equal(o.nj.parent_job_id, f.job);
  assert_int_equal(o.nj.parent_step, 100);
  /* a fork at a step without a checkpoint lists the steps that have one */
  snprintf(x, sizeof x, "{\"fork\":{\"job\":%lld,\"step\":500}}", (long long)f.job);
  expect_400(&f, x, "params.fork.step", "job 1 has no checkpoint at step 500; it has "
             "checkpoints at steps 20, 100");
  /* a fork needs the optimizer state (step 20 has none), of the same optimizer */
  snprintf(x, sizeof x, "{\"fork\":{\"job\":%lld,\"step\":20}}", (long long)f.job);
  expect_400(&f, x, "params.fork", "no optimizer state");
  snprintf(x, sizeof x, "{\"fork\":{\"job\":%lld,\"step\":100},\"optimizer\":{\"name\":\"adam\"}}",
           (long long)f.job);
  expect_400(&f, x, "params.fork", "params.optimizer.name is 'adam'");
  expect_400(&f, "{\"fork\":{\"job\":999,\"step\":100}}", "params.fork.job", "does not exist");
  expect_400(&f, "{\"fork\":{\"checkpoint\":1}}", "params.fork.checkpoint", "params.init_from");
  snprintf(x, sizeof x, "{\"fork\":{\"job\":%lld,\"step\":100},\"init_from\":{\"checkpoint\":1}}",
           (long long)f.job);
  expect_400(&f, x, "params.fork", "not both");
  /* a job with no checkpoints at all */
  store_new_job j = {.kind = "train", .params_json = "{}"};
  int64_t empty = 0;
  td_err e;
  assert_int_equal(store_job_insert(f.s, &j, 0, &empty, &e), 0);
  snprintf(x, sizeof x, "{\"fork\":{\"job\":%lld,\"step\":1}}", (long long)empty);
  expect_400(&f, x, "params.fork.step", "no stored checkpoints at all");
  store_close(f.s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resolve),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
