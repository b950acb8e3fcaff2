/* test_train.c: the `train` kind: parameter checks and resource estimates (refused before
 * any allocation), learning on synthetic data, bitwise reproducibility per seed (one BLAS
 * thread), divergence and cancellation, eval scheduling, and a short Fashion-MNIST run
 * (skipped when the dataset files are absent). Thresholds on learning are loose on purpose
 * (a factor 5 loss reduction, 70% accuracy) and deterministic for the fixed seeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/data.h"
#include "../core/kinds/registry.h"
#include "../core/la.h"

#define MAXPTS 2048

typedef struct rec {
  double train_loss[MAXPTS];
  long n_train_loss;
  long eval_steps[64];
  double test_loss[64], test_acc[64];
  int n_eval, n_acc;
  long stop_after;
  long progress_done, progress_total;
} rec;

static int rec_metric(void *ctx, const char *key, long step, double v) {
  rec *r = ctx;
  if (strcmp(key, "train_loss") == 0 && step >= 0 && step < MAXPTS) {
    r->train_loss[step] = v;
    r->n_train_loss = step + 1;
  } else if (strcmp(key, "test_loss") == 0 && r->n_eval < 64) {
    r->eval_steps[r->n_eval] = step;
    r->test_loss[r->n_eval++] = v;
  } else if (strcmp(key, "test_acc") == 0 && r->n_acc < 64) {
    r->test_acc[r->n_acc++] = v;
  }
  return 0;
}
static int rec_stop(void *ctx) {
  rec *r = ctx;
  return r->stop_after && r->n_train_loss > r->stop_after;
}
static void rec_progress(void *ctx, long done, long total) {
  rec *r = ctx;
  r->progress_done = done;
  r->progress_total = total;
}

static int validate(const char *text, json_t **filled, td_estimate *est, td_err *err) {
  json_t *p = json_loads(text, 0, NULL);
  assert_non_null(p);
  int rc = td_kinds_validate("train", p, NULL, filled, est, err);
  json_decref(p);
  return rc;
}

static int run(const char *text, rec *r, json_t **summary, td_err *err) {
  json_t *filled = NULL;
  int rc = validate(text, &filled, NULL, err);
  if (rc) return rc;
  td_sink sink = {.ctx = r, .metric = rec_metric, .should_stop = rec_stop,
                  .progress = rec_progress};
  rc = td_kind_train.run(filled, &sink, summary, err);
  json_decref(filled);
  return rc;
}

static void expect_invalid(const char *text, int code, const char *field) {
  json_t *f = NULL;
  td_err err;
  td_err_clear(&err);
  int rc = validate(text, &f, NULL, &err);
  if (rc != code) fail_msg("%s: rc %d (%s) want %d", text, rc, err.msg, code);
  if (field && strcmp(err.field, field) != 0) fail_msg("%s: field '%s' want '%s'", text, err.field, field);
  assert_null(f);
}

static void test_validation_and_estimates(void **state) {
  (void)state;
  json_t *f = NULL;
  td_estimate est;
  td_err err;
  assert_int_equal(validate("{}", &f, &est, &err), 0);
  assert_true(est.n_params == 784.0 * 128 + 128 + 128 * 10 + 10);
  assert_true(est.bytes > 4e8 && est.bytes < 1e9); /* dominated by 70000 x 784 doubles */
  json_decref(f);
  /* absurd sizes are refused from the estimate, before any allocation */
  expect_invalid("{\"model\":{\"hidden\":[100000,100000,100000]}}", TD_ELIMIT, NULL);
  expect_invalid("{\"model\":{\"hidden\":[1000000000]}}", TD_EINVAL, "params.model.hidden[0]");
  expect_invalid("{\"batch_size\":100000}", TD_EINVAL, "params.batch_size");
  expect_invalid("{\"data\":{\"name\":\"synthetic\",\"n\":10000000,\"d\":100000},\"loss\":\"mse\"}",
                 TD_ELIMIT, NULL);
  /* cross-field checks */
  expect_invalid("{\"data\":{\"name\":\"synthetic\"}}", TD_EINVAL, "params.loss");
  expect_invalid("{\"epochs\":1,\"steps\":5}", TD_EINVAL, "params.steps");
  expect_invalid("{\"data\":{\"n_train\":70000}}", TD_EINVAL, "params.data.n_train");
  expect_invalid("{\"data\":{\"n_test\":10001}}", TD_EINVAL, "params.data.n_test");
  expect_invalid("{\"data\":{\"name\":\"synthetic\",\"n\":100,\"n_train\":200},\"loss\":\"mse\"}",
                 TD_EINVAL, "params.data.n_train");
  expect_invalid("{\"optimizer\":{\"nesterov\":true}}", TD_EINVAL, "params.optimizer.nesterov");
  expect_invalid("{\"optimizer\":{\"lr\":0}}", TD_EINVAL, "params.optimizer.lr");
}

#define SYN "\"data\":{\"name\":\"synthetic\",\"n\":512,\"d\":10,\"noise\":0.05},\"loss\":\"mse\""

static void test_synthetic_learns_and_reproduces(void **state) {
  (void)state;
  static rec a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  const char *spec = "{" SYN ",\"model\":{\"hidden\":[32],\"activation\":\"tanh\"},"
                     "\"optimizer\":{\"name\":\"sgd\",\"lr\":0.05,\"momentum\":0.9},"
                     "\"batch_size\":64,\"steps\":300,\"seed\":3}";
  json_t *s = NULL;
  td_err err;
  assert_int_equal(run(spec, &a, &s, &err), 0);
  assert_int_equal(a.n_train_loss, 301); /* steps 1..300 */
  /* evals at 0, every 30 steps (default: about 10) and at the end */
  assert_int_equal(a.n_eval, 11);
  assert_int_equal(a.eval_steps[0], 0);
  assert_int_equal(a.eval_steps[1], 30);
  assert_int_equal(a.eval_steps[10], 300);
  assert_int_equal(a.n_acc, 0); /* regression: no accuracy */
  assert_true(a.test_loss[10] < a.test_loss[0] / 5);
  assert_int_equal(a.progress_done, 300);
  assert_int_equal(a.progress_total, 300);
  assert_int_equal(json_integer_value(json_object_get(s, "steps")), 300);
  assert_true(json_number_value(json_object_get(s, "steps_per_sec")) > 0);
  assert_null(json_object_get(s, "test_acc"));
  json_decref(s);
  /* same spec, same seed, one BLAS thread: bitwise-identical metrics */
  assert_int_equal(run(spec, &b, &s, &err), 0);
  json_decref(s);
  assert_memory_equal(a.train_loss, b.train_loss, sizeof a.train_loss);
  assert_memory_equal(a.test_loss, b.test_loss, sizeof a.test_loss);
}

static void test_adam_adamw_run(void **state) {
  (void)state;
  static rec a;
  const char *opts[2] = {"adam", "adamw"};
  for (int i = 0; i < 2; i++) {
    memset(&a, 0, sizeof a);
    char spec[512];
    snprintf(spec, sizeof spec,
             "{" SYN ",\"model\":{\"hidden\":[16,16]},\"optimizer\":{\"name\":\"%s\",\"lr\":0.003,"
             "\"weight_decay\":0.01},\"batch_size\":32,\"epochs\":3,\"eval_every\":16}",
             opts[i]);
    json_t *s = NULL;
    td_err err;
    assert_int_equal(run(spec, &a, &s, &err), 0);
    assert_int_equal(a.n_train_loss, 1 + 3 * 16);
    assert_int_equal(a.n_eval, 4); /* 0, 16, 32, 48 */
    assert_true(a.test_loss[3] < a.test_loss[0]);
    json_decref(s);
  }
}

static void test_diverges(void **state) {
  (void)state;
  static rec a;
  memset(&a, 0, sizeof a);
  json_t *s = NULL;
  td_err err;
  int rc = run("{" SYN ",\"optimizer\":{\"lr\":500},\"steps\":200}", &a, &s, &err);
  assert_int_equal(rc, TD_EDIVERGED);
  assert_non_null(s);
  long ds = (long)json_integer_value(json_object_get(s, "diverged_step"));
  assert_true(ds >= 1 && ds < 200);
  assert_true(!isfinite(a.train_loss[ds]));
  json_decref(s);
}

static void test_cancel(void **state) {
  (void)state;
  static rec a;
  memset(&a, 0, sizeof a);
  a.stop_after = 5;
  json_t *s = NULL;
  td_err err;
  assert_int_equal(run("{" SYN ",\"steps\":1000}", &a, &s, &err), TD_ECANCELLED);
  assert_true(a.n_train_loss <= 7);
  json_decref(s);
}

/* A short Fashion-MNIST run: 2000 examples, 150 Adam steps; well above chance (10%). */
static void test_fashion_subset(void **state) {
  (void)state;
  char p[4200];
  snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", td_data_dir());
  if (access(p, R_OK) != 0) skip();
  static rec a;
  memset(&a, 0, sizeof a);
  json_t *s = NULL;
  td_err err;
  int rc = run("{\"data\":{\"n_train\":2000,\"n_test\":1000},\"model\":{\"hidden\":[64]},"
               "\"optimizer\":{\"name\":\"adam\",\"lr\":0.002},\"batch_size\":64,\"steps\":150}",
               &a, &s, &err);
  if (rc) fail_msg("rc %d: %s", rc, err.msg);
  double acc = json_number_value(json_object_get(s, "test_acc"));
  assert_true(acc > 0.7);
  assert_true(a.test_acc[0] < 0.3); /* chance at init */
  assert_int_equal(json_integer_value(json_object_get(s, "n_params")), 784 * 64 + 64 + 64 * 10 + 10);
  json_decref(s);
}

int main(void) {
  td_la_set_threads(1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_validation_and_estimates),
      cmocka_unit_test(test_synthetic_learns_and_reproduces),
      cmocka_unit_test(test_adam_adamw_run),
      cmocka_unit_test(test_diverges),
      cmocka_unit_test(test_cancel),
      cmocka_unit_test(test_fashion_subset),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
