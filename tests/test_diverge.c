/* test_diverge.c: the divergence rule (core/train/diverge.h) on synthetic loss series for both
 * sides (blow-up, spike without recovery, catapult recovery, edge-of-stability oscillation,
 * one noisy minibatch, a run that does not learn, disabled rule, non-finite), with the trip
 * step checked against the closed form of the smoothed loss; and the `train` kind through the
 * registry: a large learning rate ends `diverged` naming the step, the rule and the values,
 * a normal one succeeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kinds/registry.h"
#include "train/diverge.h"

static const td_diverge_cfg DEF = {.enabled = 1, .max_ratio = 1e4, .spike_ratio = 10,
                                   .recover_ratio = 0.5};

/* Feed losses[0..n) as steps 1..n. Returns the step at which observe tripped (0: none) and
 * sets *fin to the finish verdict when it did not trip. */
static long feed(const td_diverge_cfg *cfg, const double *losses, long n, int *fin,
                 td_err *err) {
  td_diverge d;
  td_diverge_init(&d, cfg);
  td_err_clear(err);
  for (long t = 1; t <= n; t++) {
    int rc = td_diverge_observe(&d, t, losses[t - 1], err);
    if (rc) {
      assert_int_equal(rc, TD_EDIVERGED);
      *fin = rc;
      return t;
    }
  }
  *fin = td_diverge_finish(&d, n, err);
  return 0;
}

/* Closed form of the smoothed loss for L_1 = a, L_t = c (t >= 2), decay 0.9:
 * m_t = 0.1 * 0.9^(t-1) * a + c * (1 - 0.9^(t-1)),  s_t = m_t / (1 - 0.9^t). */
static double smoothed_step(double a, double c, long t) {
  double q = pow(0.9, (double)(t - 1));
  return (0.1 * q * a + c * (1 - q)) / (1 - 0.9 * q);
}

static void test_blow_up_trips_at_closed_form_step(void **state) {
  (void)state;
  double L[50];
  const double cs[3] = {2e4, 1.5e4, 1.2e4};
  for (int k = 0; k < 3; k++) {
    L[0] = 1.0;
    for (int t = 1; t < 50; t++) L[t] = cs[k];
    long want = 0;
    for (long t = 1; t <= 50 && !want; t++)
      if (smoothed_step(1.0, cs[k], t) > 1e4) want = t;
    assert_true(want >= 2);
    int fin;
    td_err err;
    long got = feed(&DEF, L, 50, &fin, &err);
    if (got != want) fail_msg("c=%g: tripped at %ld, closed form says %ld", cs[k], got, want);
    assert_non_null(strstr(err.msg, "blow-up"));
    char stepbuf[32];
    snprintf(stepbuf, sizeof stepbuf, "step %ld", want);
    assert_non_null(strstr(err.msg, stepbuf));
    assert_non_null(strstr(err.msg, "max_ratio"));
  }
  /* just below: 9.9e3 never exceeds 1e4 L0 (s_t < c) */
  L[0] = 1.0;
  for (int t = 1; t < 50; t++) L[t] = 9.9e3;
  int fin;
  td_err err;
  assert_int_equal(feed(&DEF, L, 50, &fin, &err), 0);
  /* ... but it spiked (> 10 L0) and ended above 0.5 L0: diverged at the end */
  assert_int_equal(fin, TD_EDIVERGED);
  assert_non_null(strstr(err.msg, "spike without recovery"));
}

/* The issue-10 shape: SGD lr 3, momentum 0.9, cross-entropy: 2.53 16.3 117 15.8 3.55 ... and
 * back to about 2.4 (chance) for the remaining steps. */
static void test_spike_without_recovery(void **state) {
  (void)state;
  double L[200];
  const double head[6] = {2.53, 16.3, 117, 15.8, 3.55, 3.84};
  for (int t = 0; t < 200; t++) L[t] = t < 6 ? head[t] : 2.4 + 0.05 * sin(t);
  int fin;
  td_err err;
  assert_int_equal(feed(&DEF, L, 200, &fin, &err), 0);
  assert_int_equal(fin, TD_EDIVERGED);
  assert_non_null(strstr(err.msg, "spike without recovery"));
  assert_non_null(strstr(err.msg, "last step 200"));
  /* the spike is where the smoothed loss first exceeds 10 * 2.53 */
  double m = 0, w = 0;
  long want = 0;
  for (int t = 0; t < 200 && !want; t++) {
    m = 0.9 * m + 0.1 * L[t];
    w = 0.9 * w + 0.1;
    if (m / w > 25.3) want = t + 1;
  }
  char buf[32];
  snprintf(buf, sizeof buf, "at step %ld", want);
  assert_non_null(strstr(err.msg, buf));
  /* a spike that recovers only to 0.6 L0 is still diverged; to 0.4 L0 it is not */
  for (int t = 6; t < 200; t++) L[t] = 0.6 * 2.53;
  feed(&DEF, L, 200, &fin, &err);
  assert_int_equal(fin, TD_EDIVERGED);
  for (int t = 6; t < 200; t++) L[t] = 0.4 * 2.53;
  feed(&DEF, L, 200, &fin, &err);
  assert_int_equal(fin, 0);
}

/* Catapult (Lewkowycz et al. 2020): the loss grows exponentially for ~10 steps to 300x its
 * start, then falls to well below it. */
static void test_catapult_recovers(void **state) {
  (void)state;
  double L[300];
  for (int t = 0; t < 300; t++) {
    if (t <= 10) L[t] = pow(300.0, t / 10.0);
    else if (t <= 25) L[t] = 300.0 * pow(0.05 / 300.0, (t - 10) / 15.0);
    else L[t] = 0.05 * exp(-(t - 25) / 200.0);
  }
  int fin;
  td_err err;
  assert_int_equal(feed(&DEF, L, 300, &fin, &err), 0);
  assert_int_equal(fin, 0);
}

/* Edge of stability (Cohen et al. 2021): the loss falls non-monotonically, with spikes of a
 * few times the current value every ~40 steps. */
static void test_eos_oscillation(void **state) {
  (void)state;
  double L[1000];
  for (int t = 0; t < 1000; t++) {
    double base = 0.73 * exp(-t / 300.0);
    L[t] = base * (1 + 0.3 * sin(t * 0.9) + (t % 40 < 3 ? 4.0 : 0.0));
  }
  int fin;
  td_err err;
  assert_int_equal(feed(&DEF, L, 1000, &fin, &err), 0);
  assert_int_equal(fin, 0);
}

/* One noisy minibatch at 50x the start is not a spike (the EMA weighs it by 0.1), and a run
 * that never learns without spiking is not diverged either. */
static void test_outlier_and_flat(void **state) {
  (void)state;
  double L[200];
  for (int t = 0; t < 200; t++) L[t] = 1.0;
  L[100] = 50.0;
  int fin;
  td_err err;
  assert_int_equal(feed(&DEF, L, 200, &fin, &err), 0);
  assert_int_equal(fin, 0);
}

static void test_disabled_and_nonfinite(void **state) {
  (void)state;
  td_diverge_cfg off = DEF;
  off.enabled = 0;
  double L[100];
  L[0] = 1.0;
  for (int t = 1; t < 100; t++) L[t] = 1e200;
  int fin;
  td_err err;
  assert_int_equal(feed(&off, L, 100, &fin, &err), 0);
  assert_int_equal(fin, 0);
  assert_true(feed(&DEF, L, 100, &fin, &err) == 2);
  /* non-finite: always, also when disabled */
  const double bad[3] = {NAN, INFINITY, -INFINITY};
  for (int k = 0; k < 3; k++) {
    for (int t = 0; t < 100; t++) L[t] = 1.0;
    L[40] = bad[k];
    assert_int_equal(feed(&off, L, 100, &fin, &err), 41);
    assert_non_null(strstr(err.msg, "non-finite"));
    assert_non_null(strstr(err.msg, "step 41"));
    assert_int_equal(feed(&DEF, L, 100, &fin, &err), 41);
  }
  /* parse: absent rows take the documented defaults; given ones are read */
  json_t *p = json_pack("{s:{s:b, s:f}}", "divergence", "enabled", 0, "max_ratio", 100.0);
  td_diverge_cfg c;
  assert_int_equal(td_diverge_parse(p, &c, &err), 0);
  assert_int_equal(c.enabled, 0);
  assert_true(c.max_ratio == 100.0 && c.spike_ratio == 10 && c.recover_ratio == 0.5);
  json_decref(p);
}

/* ---- the train kind through the registry ---- */
static int ignore_metric(void *ctx, const char *key, long step, double v) {
  (void)ctx, (void)key, (void)step, (void)v;
  return 0;
}

static int run_train(const char *text, json_t **summary, td_err *err) {
  json_t *p = json_loads(text, 0, NULL), *filled = NULL;
  assert_non_null(p);
  const td_kind *k = td_kinds_find("train");
  assert_non_null(k);
  int rc = td_kinds_validate("train", p, NULL, &filled, NULL, err);
  json_decref(p);
  if (rc) return rc;
  td_sink sink = {.metric = ignore_metric};
  td_err_clear(err);
  rc = k->run(filled, &sink, summary, err);
  json_decref(filled);
  return rc;
}

#define SYN "\"data\":{\"name\":\"synthetic\",\"n\":256,\"d\":10,\"noise\":0.05},\"loss\":\"mse\"," \
            "\"batch_size\":32,\"steps\":100,\"seed\":1,"

static void test_train_kind_both_sides(void **state) {
  (void)state;
  json_t *s = NULL;
  td_err err;
  /* tanh, lr 2: the loss grows from 0.52 to 1e6 within 8 steps and to 5e148 by step 100 but
   * stays finite (the old isfinite-only check let it succeed) */
  const char *big = "{" SYN "\"model\":{\"hidden\":[16],\"activation\":\"tanh\"},"
                    "\"optimizer\":{\"name\":\"sgd\",\"lr\":2}";
  char spec[512];
  snprintf(spec, sizeof spec, "%s}", big);
  int rc = run_train(spec, &s, &err);
  if (rc != TD_EDIVERGED) fail_msg("large lr: rc %d (%s)", rc, err.msg);
  assert_non_null(strstr(err.msg, "rule: blow-up"));
  assert_non_null(strstr(err.msg, "max_ratio"));
  long ds = (long)json_integer_value(json_object_get(s, "diverged_step"));
  assert_true(ds >= 2 && ds < 100);
  char buf[32];
  snprintf(buf, sizeof buf, "at step %ld ", ds);
  assert_non_null(strstr(err.msg, buf));
  assert_true(isfinite(json_number_value(json_object_get(s, "train_loss"))));
  json_decref(s);
  /* the same with the rule off: succeeded (the loss stays finite) */
  snprintf(spec, sizeof spec, "%s,\"divergence\":{\"enabled\":false}}", big);
  rc = run_train(spec, &s, &err);
  if (rc) fail_msg("rule off: rc %d (%s)", rc, err.msg);
  json_decref(s);
  /* a normal lr succeeds */
  rc = run_train("{" SYN "\"model\":{\"hidden\":[16]},\"optimizer\":{\"name\":\"sgd\","
                 "\"lr\":0.05}}", &s, &err);
  if (rc) fail_msg("normal lr: rc %d (%s)", rc, err.msg);
  json_decref(s);
  /* relu, lr 0.7: a catapult (1.36 -> 24.1 at step 3 -> 0.014 at step 100). With spike_ratio
   * 5 the smoothed peak (about 9 L0) counts as a spike, and the recovery keeps it succeeded;
   * with recover_ratio 0.005 (final 0.014 / 1.36 = 0.01 is not below it) it is diverged. */
  const char *cat = "{" SYN "\"model\":{\"hidden\":[16]},\"optimizer\":{\"name\":\"sgd\","
                    "\"lr\":0.7},\"divergence\":{\"spike_ratio\":5";
  snprintf(spec, sizeof spec, "%s}}", cat);
  rc = run_train(spec, &s, &err);
  if (rc) fail_msg("catapult: rc %d (%s)", rc, err.msg);
  json_decref(s);
  snprintf(spec, sizeof spec, "%s,\"recover_ratio\":0.005}}", cat);
  rc = run_train(spec, &s, &err);
  if (rc != TD_EDIVERGED) fail_msg("catapult, strict recovery: rc %d (%s)", rc, err.msg);
  assert_non_null(strstr(err.msg, "spike without recovery"));
  assert_non_null(strstr(err.msg, "last step 100"));
  json_decref(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_blow_up_trips_at_closed_form_step),
      cmocka_unit_test(test_spike_without_recovery),
      cmocka_unit_test(test_catapult_recovers),
      cmocka_unit_test(test_eos_oscillation),
      cmocka_unit_test(test_outlier_and_flat),
      cmocka_unit_test(test_disabled_and_nonfinite),
      cmocka_unit_test(test_train_kind_both_sides),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
