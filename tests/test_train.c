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

#include "nn/data.h"
#include "kinds/registry.h"
#include "base/la.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "base/rng.h"

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
  /* the divergence rule off: only the non-finite check is left */
  int rc = run("{" SYN ",\"optimizer\":{\"lr\":500},\"steps\":200,"
               "\"divergence\":{\"enabled\":false}}", &a, &s, &err);
  assert_int_equal(rc, TD_EDIVERGED);
  assert_non_null(s);
  long ds = (long)json_integer_value(json_object_get(s, "diverged_step"));
  assert_true(ds >= 1 && ds < 200);
  assert_true(!isfinite(a.train_loss[ds]));
  assert_non_null(strstr(err.msg, "rule: non-finite"));
  json_decref(s);
  /* on (default): the blow-up rule ends it earlier, at a finite loss (tests/test_diverge.c) */
  memset(&a, 0, sizeof a);
  rc = run("{" SYN ",\"optimizer\":{\"lr\":500},\"steps\":200}", &a, &s, &err);
  assert_int_equal(rc, TD_EDIVERGED);
  long ds2 = (long)json_integer_value(json_object_get(s, "diverged_step"));
  assert_true(ds2 >= 1 && ds2 <= ds);
  assert_non_null(strstr(err.msg, "rule:"));
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


/* ---------------------------------------------------------------- noise scale, target loss */

typedef struct gns_rec {
  double b_simple, g2, trace, ema;
  long n_b, last_ema_step;
} gns_rec;
static int gns_metric(void *ctx, const char *key, long step, double v) {
  gns_rec *r = ctx;
  if (strcmp(key, "b_simple") == 0) r->b_simple = v, r->n_b++;
  else if (strcmp(key, "gns_g2") == 0) r->g2 = v;
  else if (strcmp(key, "gns_trace") == 0) r->trace = v;
  else if (strcmp(key, "train_loss_ema") == 0) r->ema = v, r->last_ema_step = step;
  return 0;
}

#define GNS_N "128"
#define GNS_STEPS "6000"
#define GNS_SYN "\"data\":{\"name\":\"synthetic\",\"n\":4096,\"d\":10,\"noise\":0.5},\"loss\":\"mse\""

/* b_simple of the frozen initial model (lr 1e-12: the parameters move by ~1e-12 in 600
 * steps) against the exact per-example gradients of the same model and data, rebuilt here.
 * Sampling b examples without replacement from n gives E|G_b|^2 = |G|^2 + tr(S)(n-b)/(b(n-1))
 * (S: the population covariance, denominator n); the kind applies that finite-population
 * correction (core/scaling/gns.h), so its estimates are unbiased for tr(S) and |G|^2 and the
 * reference is tr(S) / |G|^2 of the exact per-example gradients. (The i.i.d. formulas would
 * give tr(S) n/(n-1) / (|G|^2 - tr(S)/(n-1)).)
 * Tolerance 10%: an EMA of decay 0.999 averages about (1 + d)/(1 - d) = 2000 noisy
 * measurements (each single estimate of tr(S) and |G|^2 has a relative spread of order 1 at
 * b_small = 4), so the relative error of their ratio is about sqrt(2/2000) = 3.2%; 10% is three
 * of those, and the i.i.d. formulas' +24% is outside it. */
static void test_noise_scale_matches_per_example_gradients(void **state) {
  (void)state;
  /* validation */
  expect_invalid("{" GNS_SYN ",\"noise_scale\":{\"every\":1,\"b_small\":8,\"b_big\":8}}", TD_EINVAL,
                 "params.noise_scale.b_big");
  expect_invalid("{" GNS_SYN ",\"noise_scale\":{\"every\":1,\"b_small\":8,\"b_big\":5000}}",
                 TD_EINVAL, "params.noise_scale.b_big");
  expect_invalid("{" GNS_SYN ",\"noise_scale\":{\"b_small\":8}}", TD_EINVAL,
                 "params.noise_scale.every");

  /* a small population (n = 128, b_big = 64) so that the without-replacement bias of the
   * i.i.d. formulas (about 1 + B_simple/n, over 20 % here) is far outside the tolerance */
  const char *spec = "{\"data\":{\"name\":\"synthetic\",\"n\":" GNS_N ",\"d\":10,\"noise\":0.5},"
                     "\"loss\":\"mse\",\"model\":{\"hidden\":[8],\"activation\":\"tanh\"},"
                     "\"optimizer\":{\"name\":\"sgd\",\"lr\":1e-12},\"batch_size\":32,"
                     "\"steps\":" GNS_STEPS ",\"eval_every\":100000,\"seed\":5,"
                     "\"noise_scale\":{\"every\":1,\"b_small\":4,\"b_big\":64,\"decay\":0.999}}";
  json_t *filled = NULL;
  td_err err;
  assert_int_equal(validate(spec, &filled, NULL, &err), 0);
  gns_rec r;
  memset(&r, 0, sizeof r);
  td_sink sink = {.ctx = &r, .metric = gns_metric};
  json_t *sum = NULL;
  assert_int_equal(td_kind_train.run(filled, &sink, &sum, &err), 0);
  json_decref(filled);
  assert_int_equal(r.n_b, atoi(GNS_STEPS));
  assert_true(fabs(json_number_value(json_object_get(sum, "b_simple")) - r.b_simple) == 0);
  json_decref(sum);

  /* the same data and initial model, per-example gradients */
  td_synth_cfg sc = {.d = 10, .noise = 0.5, .decay = 0};
  td_dataset tr;
  memset(&tr, 0, sizeof tr);
  assert_int_equal(td_data_synthetic(&sc, atoi(GNS_N), 5, TD_RNG_DATA, &tr, NULL, &err), 0);
  td_mlp_cfg mc;
  memset(&mc, 0, sizeof mc);
  mc.in_dim = 10, mc.out_dim = 1, mc.n_hidden = 1, mc.hidden[0] = 8, mc.act = TD_ACT_TANH;
  mc.init_scale = 1;
  td_mlp *m = NULL;
  assert_int_equal(td_mlp_create(&mc, &m, &err), 0);
  td_mlp_init(m, 5);
  td_mlp_ws ws;
  assert_int_equal(td_mlp_ws_init(&ws, m, 1, &err), 0);
  size_t np = m->n_params, n = tr.n;
  double *G = calloc(np, sizeof *G), sq = 0, dz;
  for (size_t i = 0; i < n; i++) {
    double l;
    const double *z = td_mlp_forward(m, &ws, m->params, tr.X + i * tr.d, 1);
    td_loss_mse(&l, &dz, z, tr.Y + i, 1, 1);
    td_mlp_backward(m, &ws, m->params, &dz, 1, m->grad, 0);
    for (size_t k = 0; k < np; k++) G[k] += m->grad[k] / (double)n, sq += m->grad[k] * m->grad[k];
  }
  double g2 = 0;
  for (size_t k = 0; k < np; k++) g2 += G[k] * G[k];
  double trace = sq / (double)n - g2; /* population covariance */
  double dn = (double)n;
  double want = trace / g2;
  print_message("b_simple %g, per-example reference %g (i.i.d. formulas' expectation %g)\n",
                r.b_simple, want, trace * dn / (dn - 1) / (g2 - trace / (dn - 1)));
  if (fabs(r.b_simple / want - 1) > 0.1)
    fail_msg("b_simple %g, per-example gradients give %g (tr %g, |G|^2 %g; logged %g, %g)",
             r.b_simple, want, trace, g2, r.trace, r.g2);
  free(G);
  td_mlp_ws_deinit(&ws);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
}

/* target_loss: the job stops at the first step whose smoothed loss is <= the target, with a
 * final evaluation there; an unreachable target runs every step and records null. */
static void test_target_loss(void **state) {
  (void)state;
  const char *base = "{" SYN ",\"model\":{\"hidden\":[32],\"activation\":\"tanh\"},"
                     "\"optimizer\":{\"name\":\"sgd\",\"lr\":0.05,\"momentum\":0.9},"
                     "\"batch_size\":64,\"steps\":300,\"seed\":3,";
  char spec[512];
  static rec a;
  gns_rec g;
  for (int reach = 1; reach >= 0; reach--) {
    memset(&a, 0, sizeof a);
    memset(&g, 0, sizeof g);
    snprintf(spec, sizeof spec, "%s\"target_loss\":%s,\"target_ema\":0.9}", base,
             reach ? "0.05" : "1e-9");
    json_t *filled = NULL, *s = NULL;
    td_err err;
    assert_int_equal(validate(spec, &filled, NULL, &err), 0);
    /* both recorders: train_loss and evals into a, the EMA into g */
    td_sink sink = {.ctx = &a, .metric = rec_metric};
    assert_int_equal(td_kind_train.run(filled, &sink, &s, &err), 0);
    memset(&sink, 0, sizeof sink);
    sink.ctx = &g, sink.metric = gns_metric;
    json_decref(s);
    assert_int_equal(td_kind_train.run(filled, &sink, &s, &err), 0);
    json_decref(filled);
    const json_t *st = json_object_get(s, "steps_to_target");
    long steps = (long)json_integer_value(json_object_get(s, "steps"));
    if (reach) {
      long t = (long)json_integer_value(st);
      assert_true(json_is_integer(st) && t > 1 && t < 300);
      assert_int_equal(steps, t);
      assert_int_equal(a.n_train_loss, t + 1);
      assert_int_equal(a.eval_steps[a.n_eval - 1], t); /* the final evaluation */
      assert_int_equal(g.last_ema_step, t);
      assert_true(g.ema <= 0.05);
      /* the EMA recomputed from the logged minibatch losses, bias-corrected */
      double e = 0, w = 0;
      for (long k = 1; k <= t; k++) e = 0.9 * e + 0.1 * a.train_loss[k], w = 0.9 * w + 0.1;
      assert_true(fabs(e / w - g.ema) <= 1e-12 * fabs(g.ema));
      assert_true(json_is_true(json_object_get(s, "reached_target")));
    } else {
      assert_true(json_is_null(st));
      assert_int_equal(steps, 300);
      assert_true(json_is_false(json_object_get(s, "reached_target")));
    }
    json_decref(s);
  }
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
      cmocka_unit_test(test_noise_scale_matches_per_example_gradients),
      cmocka_unit_test(test_target_loss),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
