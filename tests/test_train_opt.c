/* test_train_opt.c: the `train` kind's first-order optimizer options (issue 4): the new
 * parameter checks, the `lr` metric against the schedule, l2 (a loss penalty) versus
 * optimizer.weight_decay (identical trajectories for sgd, different for adam), and the
 * per-layer metrics, whose values must satisfy the scale-invariance identity
 * ||w_t||^2 = ||w_{t-1}||^2 (1 + update_ratio_t^2) for a linear layer followed by LayerNorm
 * under plain GD. All runs use small synthetic regression sets (fast, no files).
 * Tolerances: 1e-15 relative for values that are the same formula (lr), 1e-12 for quantities
 * recomputed in a different order (the penalty difference, equal trajectories), 1e-10 for the
 * invariance identity (eps = 1e-300 makes it exact up to the rounding of w.g). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kinds/registry.h"
#include "optim/sched.h"

#define MAXPTS 20000

typedef struct pt {
  char key[40];
  long step;
  double v;
} pt;

typedef struct rec {
  pt *p;
  int n;
} rec;

static int rec_metric(void *ctx, const char *key, long step, double v) {
  rec *r = ctx;
  if (r->n < MAXPTS) {
    snprintf(r->p[r->n].key, sizeof r->p[0].key, "%s", key);
    r->p[r->n].step = step;
    r->p[r->n++].v = v;
  }
  return 0;
}

/* The value of key at step, or NaN when absent. */
static double get(const rec *r, const char *key, long step) {
  for (int i = 0; i < r->n; i++)
    if (r->p[i].step == step && strcmp(r->p[i].key, key) == 0) return r->p[i].v;
  return NAN;
}

static int run(const char *text, rec *r, td_err *err) {
  json_t *p = json_loads(text, 0, NULL), *filled = NULL, *summary = NULL;
  assert_non_null(p);
  r->n = 0;
  if (!r->p) r->p = malloc(MAXPTS * sizeof *r->p);
  int rc = td_kinds_validate("train", p, NULL, &filled, NULL, err);
  json_decref(p);
  if (rc) return rc;
  td_sink sink = {.ctx = r, .metric = rec_metric};
  rc = td_kind_train.run(filled, &sink, &summary, err);
  json_decref(filled);
  json_decref(summary);
  return rc;
}

static void expect_invalid(const char *text, const char *field) {
  json_t *p = json_loads(text, 0, NULL), *f = NULL;
  td_err err;
  td_err_clear(&err);
  int rc = td_kinds_validate("train", p, NULL, &f, NULL, &err);
  json_decref(p);
  if (rc != TD_EINVAL) fail_msg("%s: rc %d (%s)", text, rc, err.msg);
  if (strcmp(err.field, field) != 0) fail_msg("%s: field '%s' want '%s'", text, err.field, field);
  assert_null(f);
}

#define SYN "\"data\":{\"name\":\"synthetic\",\"n\":200,\"d\":8},\"loss\":\"mse\""

static void test_validation(void **state) {
  (void)state;
  expect_invalid("{" SYN ",\"optimizer\":{\"schedule\":{\"name\":\"step\"}}}",
                 "params.optimizer.schedule.step_size");
  expect_invalid("{" SYN ",\"steps\":10,\"optimizer\":{\"schedule\":{\"name\":\"cosine\","
                 "\"warmup_steps\":10}}}",
                 "params.optimizer.schedule.warmup_steps");
  expect_invalid("{" SYN ",\"steps\":10,\"optimizer\":{\"schedule\":{\"name\":\"cosine\","
                 "\"min_lr\":1}}}",
                 "params.optimizer.schedule.min_lr");
  expect_invalid("{" SYN ",\"optimizer\":{\"name\":\"nesterov\",\"momentum\":0}}",
                 "params.optimizer.momentum");
  expect_invalid("{" SYN ",\"optimizer\":{\"name\":\"lion\"}}", "params.optimizer.name");
  expect_invalid("{" SYN ",\"model\":{\"norm\":\"groupnorm\"}}", "params.model.norm");
  /* 200 examples in batches of 199 leave a batch of 1: refused for batchnorm only */
  expect_invalid("{" SYN ",\"batch_size\":199,\"model\":{\"norm\":\"batchnorm\"}}",
                 "params.batch_size");
  json_t *p = json_loads("{" SYN ",\"batch_size\":199,\"model\":{\"norm\":\"layernorm\"},"
                         "\"optimizer\":{\"name\":\"heavy_ball\"}}",
                         0, NULL),
         *f = NULL;
  assert_int_equal(td_kinds_validate("train", p, NULL, &f, NULL, NULL), 0);
  assert_string_equal(json_string_value(json_object_get(
                          json_object_get(json_object_get(f, "optimizer"), "schedule"), "name")),
                      "constant");
  json_decref(p);
  json_decref(f);
}

/* The logged lr against closed forms of the schedules written out here (sched.h's
 * conventions, torch's StepLR and CosineAnnealingLR), to 1e-15 relative (one pow or cos):
 *  - step decay with a linear warm-up, base 0.01, W = 5, step_size 10, gamma 0.5, T = 30:
 *    0.01 t / 5 for t = 1..5, then 0.01 for t = 6..15, 0.005 for 16..25, 0.0025 for 26..30;
 *  - cosine without warm-up, base 0.1, min_lr 0.01, T = 20:
 *    0.01 + 0.09 (1 + cos(pi (t - 1) / 20)) / 2 for t = 1..20. */
static void test_lr_metric(void **state) {
  (void)state;
  rec r = {0};
  td_err err;
  assert_int_equal(run("{" SYN ",\"steps\":30,\"batch_size\":50,\"optimizer\":{\"name\":\"adam\","
                       "\"lr\":0.01,\"schedule\":{\"name\":\"step\",\"warmup_steps\":5,"
                       "\"step_size\":10,\"gamma\":0.5}}}",
                       &r, &err),
                   0);
  for (long t = 1; t <= 30; t++) {
    double want = t <= 5 ? 0.01 * (double)t / 5 : t <= 15 ? 0.01 : t <= 25 ? 0.005 : 0.0025;
    double got = get(&r, "lr", t);
    if (!(fabs(got - want) <= 1e-15 * want)) fail_msg("step lr at %ld: %.17g vs %.17g", t, got, want);
  }
  free(r.p);
  rec c = {0};
  assert_int_equal(run("{" SYN ",\"steps\":20,\"batch_size\":50,\"optimizer\":{\"name\":\"sgd\","
                       "\"lr\":0.1,\"schedule\":{\"name\":\"cosine\",\"min_lr\":0.01}},"
                       /* lr 0.1 catapults this net (loss 2.7 -> 728 -> 1.2 within 5 steps);
                        * the schedule, not the divergence rule, is under test here */
                       "\"divergence\":{\"enabled\":false}}",
                       &c, &err),
                   0);
  const double pi = 3.14159265358979323846;
  for (long t = 1; t <= 20; t++) {
    double want = 0.01 + 0.09 * (1 + cos(pi * (double)(t - 1) / 20)) / 2, got = get(&c, "lr", t);
    if (!(fabs(got - want) <= 1e-15 * want)) fail_msg("cosine lr at %ld: %.17g vs %.17g", t, got, want);
  }
  free(c.p);
}

/* l2 vs weight_decay. Step 1 sees the same parameters and batch, so the train_loss with l2
 * exceeds the one without by exactly the logged l2_penalty. For sgd, l2 = lambda gives the
 * same trajectory as weight_decay = lambda (both add lambda p to the gradient). For adam the
 * penalty's gradient goes through the preconditioner, which adamw's decoupled decay does not:
 * the trajectories differ (Loshchilov and Hutter 2019). */
static void test_l2_vs_weight_decay(void **state) {
  (void)state;
  rec a = {0}, b = {0}, c = {0};
  td_err err;
  const char *fmt = "{" SYN ",\"steps\":40,\"batch_size\":50,\"eval_every\":40,"
                    "\"model\":{\"hidden\":[16]},\"l2\":%g,"
                    "\"optimizer\":{\"name\":\"%s\",\"lr\":%g,\"weight_decay\":%g}}";
  char spec[512];
  snprintf(spec, sizeof spec, fmt, 0.1, "sgd", 0.05, 0.0);
  assert_int_equal(run(spec, &a, &err), 0);
  snprintf(spec, sizeof spec, fmt, 0.0, "sgd", 0.05, 0.1);
  assert_int_equal(run(spec, &b, &err), 0);
  double pen = get(&a, "l2_penalty", 1);
  assert_true(pen > 0);
  assert_true(isnan(get(&b, "l2_penalty", 1)));
  assert_true(fabs(get(&a, "train_loss", 1) - get(&b, "train_loss", 1) - pen) <= 1e-12 * pen);
  /* same trajectory: the evaluation losses (data only) agree at the end */
  double ta = get(&a, "test_loss", 40), tb = get(&b, "test_loss", 40);
  assert_true(fabs(ta - tb) <= 1e-12 * tb);
  /* adam + l2 (coupled through the preconditioner) vs adamw's decoupled decay: different */
  snprintf(spec, sizeof spec, fmt, 0.1, "adam", 0.01, 0.0);
  assert_int_equal(run(spec, &a, &err), 0);
  snprintf(spec, sizeof spec, fmt, 0.0, "adamw", 0.01, 0.1);
  assert_int_equal(run(spec, &c, &err), 0);
  ta = get(&a, "test_loss", 40);
  double tc = get(&c, "test_loss", 40);
  assert_true(fabs(ta - tc) > 1e-6 * tc);
  free(a.p);
  free(b.p);
  free(c.p);
}

/* Per-layer metrics: weight_norm/{j} at step 0 and every layer_metrics_every steps;
 * update_ratio/{j}; effective_lr/{j} = lr / weight_norm^2 only for layers followed by a norm
 * layer; and for those, plain GD gives ||w_t||^2 = ||w_{t-1}||^2 (1 + update_ratio_t^2). */
static void test_layer_metrics(void **state) {
  (void)state;
  rec r = {0};
  td_err err;
  assert_int_equal(run("{" SYN ",\"steps\":12,\"batch_size\":50,\"layer_metrics_every\":1,"
                       "\"model\":{\"hidden\":[16,12],\"activation\":\"tanh\","
                       "\"norm\":\"layernorm\",\"norm_eps\":1e-300},"
                       "\"optimizer\":{\"name\":\"sgd\",\"lr\":0.2}}",
                       &r, &err),
                   0);
  assert_false(isnan(get(&r, "weight_norm/0", 0)));
  assert_true(isnan(get(&r, "update_ratio/0", 0)));
  assert_true(isnan(get(&r, "effective_lr/2", 5))); /* the output layer is not normalized */
  assert_false(isnan(get(&r, "update_ratio/2", 5)));
  for (int j = 0; j < 2; j++) {
    char wk[32], uk[32], ek[32];
    snprintf(wk, sizeof wk, "weight_norm/%d", j);
    snprintf(uk, sizeof uk, "update_ratio/%d", j);
    snprintf(ek, sizeof ek, "effective_lr/%d", j);
    for (long t = 1; t <= 12; t++) {
      double w = get(&r, wk, t), w0 = get(&r, wk, t - 1), u = get(&r, uk, t);
      assert_true(u > 0);
      double lhs = w * w, rhs = w0 * w0 * (1 + u * u);
      if (!(fabs(lhs - rhs) <= 1e-10 * lhs))
        fail_msg("layer %d step %ld: %.17g vs %.17g", j, t, lhs, rhs);
      assert_true(fabs(get(&r, ek, t) - 0.2 / (w * w)) <= 1e-15 * get(&r, ek, t));
    }
  }
  /* default cadence: eval_every (absent: total/10 -> every 2 of 20 steps) */
  assert_int_equal(run("{" SYN ",\"steps\":20,\"batch_size\":50,\"model\":{\"norm\":\"batchnorm\"}}",
                       &r, &err),
                   0);
  assert_false(isnan(get(&r, "update_ratio/0", 2)));
  assert_true(isnan(get(&r, "update_ratio/0", 3)));
  assert_false(isnan(get(&r, "effective_lr/0", 20)));
  free(r.p);
}

/* AdamW's default weight decay is PyTorch's (torch.optim.AdamW: weight_decay=1e-2; every other
 * optimizer here: 0), and the resolved value is written into the filled params that the
 * server stores (train, and curvature, which shares ckind's optimizer rows). The run uses it:
 * an absent weight_decay gives the same trajectory as an explicit 0.01 and a different one
 * from an explicit 0. */
static double filled_wd(const char *kind, const char *text) {
  json_t *p = json_loads(text, 0, NULL), *f = NULL;
  td_err err;
  assert_int_equal(td_kinds_validate(kind, p, NULL, &f, NULL, &err), 0);
  json_decref(p);
  const json_t *o = json_object_get(json_object_get(f, "optimizer"), "weight_decay");
  assert_true(json_is_number(o));
  double v = json_number_value(o);
  json_decref(f);
  return v;
}

static void test_adamw_default_weight_decay(void **state) {
  (void)state;
  assert_true(filled_wd("train", "{\"optimizer\":{\"name\":\"adamw\"}}") == 0.01);
  assert_true(filled_wd("train", "{\"optimizer\":{\"name\":\"adamw\",\"weight_decay\":0}}") == 0);
  assert_true(filled_wd("train", "{\"optimizer\":{\"name\":\"sgd\"}}") == 0);
  assert_true(filled_wd("train", "{}") == 0);
  assert_true(filled_wd("train", "{\"optimizer\":{\"name\":\"adam\"}}") == 0);
  assert_true(filled_wd("train", "{\"optimizer\":{\"name\":\"kfac\",\"lr\":1}}") == 0);
  assert_true(filled_wd("curvature", "{\"optimizer\":{\"name\":\"adamw\"}}") == 0.01);
  assert_true(filled_wd("curvature", "{\"optimizer\":{\"name\":\"sgd\"}}") == 0);
  rec a = {0}, b = {0}, c = {0};
  td_err err;
  const char *base = "{" SYN ",\"model\":{\"hidden\":[8]},\"batch_size\":50,\"steps\":30,"
                     "\"optimizer\":{\"name\":\"adamw\",\"lr\":0.01%s}}";
  char spec[512];
  snprintf(spec, sizeof spec, base, "");
  assert_int_equal(run(spec, &a, &err), 0);
  snprintf(spec, sizeof spec, base, ",\"weight_decay\":0.01");
  assert_int_equal(run(spec, &b, &err), 0);
  snprintf(spec, sizeof spec, base, ",\"weight_decay\":0");
  assert_int_equal(run(spec, &c, &err), 0);
  const double la = get(&a, "param_norm", 30), lb = get(&b, "param_norm", 30),
               lc = get(&c, "param_norm", 30);
  assert_true(la == lb);
  assert_true(la != lc);
  free(a.p), free(b.p), free(c.p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_validation),
      cmocka_unit_test(test_lr_metric),
      cmocka_unit_test(test_l2_vs_weight_decay),
      cmocka_unit_test(test_layer_metrics),
      cmocka_unit_test(test_adamw_default_weight_decay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
