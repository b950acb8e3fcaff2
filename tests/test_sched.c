/* test_sched.c: learning-rate schedules (sched.h) at given steps against their formulas
 * evaluated by hand, the warm-up composition, and argument errors. Tolerance 1e-15
 * relative: each value is one or two roundings of the same closed form. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "optim/sched.h"

static void near(double got, double want) {
  if (!(fabs(got - want) <= 1e-15 * fabs(want) + 1e-300))
    fail_msg("got %.17g want %.17g", got, want);
}

static void test_constant(void **state) {
  (void)state;
  td_sched s;
  assert_int_equal(td_sched_init(&s, TD_SCHED_CONSTANT, 0.1, 0, 0, 0, 0, 100, NULL), 0);
  near(td_sched_lr(&s, 1), 0.1);
  near(td_sched_lr(&s, 100), 0.1);
  near(td_sched_lr(&s, 0), 0.1); /* t < 1 reads as 1 */
}

/* torch StepLR(step_size=3, gamma=0.5) stepped once per update: 1, 1, 1, .5, .5, .5, .25 */
static void test_step(void **state) {
  (void)state;
  td_sched s;
  assert_int_equal(td_sched_init(&s, TD_SCHED_STEP, 0.2, 0, 3, 0.5, 0, 0, NULL), 0);
  const double want[7] = {0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.05};
  for (int t = 1; t <= 7; t++) near(td_sched_lr(&s, t), want[t - 1]);
}

/* cosine over S = 10 updates, base 1, min 0.1: lr_t = 0.1 + 0.9 (1 + cos(pi (t-1)/10)) / 2;
 * t = 1 gives base, t = 6 the midpoint 0.55, and min_lr after the end. */
static void test_cosine(void **state) {
  (void)state;
  td_sched s;
  assert_int_equal(td_sched_init(&s, TD_SCHED_COSINE, 1.0, 0, 0, 0, 0.1, 10, NULL), 0);
  near(td_sched_lr(&s, 1), 1.0);
  near(td_sched_lr(&s, 6), 0.55);
  near(td_sched_lr(&s, 3), 0.1 + 0.45 * (1 + cos(3.14159265358979323846 * 0.2)));
  near(td_sched_lr(&s, 11), 0.1);
  near(td_sched_lr(&s, 1000), 0.1);
}

/* Warm-up W = 4: lr = base t / 4 for t <= 4; then the main schedule from its start. */
static void test_warmup(void **state) {
  (void)state;
  td_sched s;
  assert_int_equal(td_sched_init(&s, TD_SCHED_CONSTANT, 0.4, 4, 0, 0, 0, 0, NULL), 0);
  near(td_sched_lr(&s, 1), 0.1);
  near(td_sched_lr(&s, 2), 0.2);
  near(td_sched_lr(&s, 4), 0.4);
  near(td_sched_lr(&s, 5), 0.4);
  assert_int_equal(td_sched_init(&s, TD_SCHED_STEP, 0.4, 4, 2, 0.1, 0, 0, NULL), 0);
  near(td_sched_lr(&s, 3), 0.3);
  near(td_sched_lr(&s, 5), 0.4);
  near(td_sched_lr(&s, 6), 0.4);
  near(td_sched_lr(&s, 7), 0.04);
  /* cosine over T = 14 with W = 4: S = 10 steps of cosine after the warm-up */
  assert_int_equal(td_sched_init(&s, TD_SCHED_COSINE, 1.0, 4, 0, 0, 0.0, 14, NULL), 0);
  near(td_sched_lr(&s, 2), 0.5);
  near(td_sched_lr(&s, 5), 1.0);
  near(td_sched_lr(&s, 10), 0.5);
  near(td_sched_lr(&s, 15), 0.0);
}

static void test_errors(void **state) {
  (void)state;
  td_sched s;
  td_err err;
  td_sched_kind k;
  assert_int_equal(td_sched_parse("cosine", &k), 0);
  assert_int_equal(k, TD_SCHED_COSINE);
  assert_int_equal(td_sched_parse("exp", &k), TD_EINVAL);
  assert_int_equal(td_sched_init(&s, TD_SCHED_STEP, 0.1, 0, 0, 0.5, 0, 0, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.schedule.step_size");
  assert_int_equal(td_sched_init(&s, TD_SCHED_STEP, 0.1, 0, 5, 0, 0, 0, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.schedule.gamma");
  assert_int_equal(td_sched_init(&s, TD_SCHED_COSINE, 0.1, 0, 0, 0, 0.2, 10, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.schedule.min_lr");
  assert_int_equal(td_sched_init(&s, TD_SCHED_COSINE, 0.1, 10, 0, 0, 0, 10, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.schedule.warmup_steps");
  assert_int_equal(td_sched_init(&s, TD_SCHED_CONSTANT, 0.1, -1, 0, 0, 0, 10, &err), TD_EINVAL);
  assert_int_equal(td_sched_init(&s, TD_SCHED_CONSTANT, 0.0, 0, 0, 0, 0, 10, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.lr");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constant), cmocka_unit_test(test_step),
      cmocka_unit_test(test_cosine),   cmocka_unit_test(test_warmup),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
