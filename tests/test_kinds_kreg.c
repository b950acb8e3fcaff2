/* test_kinds_kreg.c: the `kernel_regression` kind on 200 Fashion-MNIST images: NNGP and NTK
 * regression on one-hot targets classify far above chance (Lee et al. 2018, Table 2, report
 * about 0.8 test accuracy with a few thousand examples; 200 give about 0.7), and the
 * summary has every field. Skipped when
 * the Fashion-MNIST files are absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kinds/registry.h"
#include "nn/data.h"

static void test_kreg(void **state) {
  (void)state;
  td_dataset probe;
  memset(&probe, 0, sizeof probe);
  if (td_data_fashion_mnist("test", 10, &probe, NULL)) {
    print_message("skip: no Fashion-MNIST\n");
    skip();
  }
  td_dataset_deinit(&probe);
  json_t *p = json_loads("{\"data\":{\"n_train\":200,\"n_test\":200},\"steps\":100,"
                         "\"model\":{\"width\":128}}", 0, NULL), *f = NULL, *s = NULL;
  td_err e;
  assert_int_equal(td_kinds_validate("kernel_regression", p, NULL, &f, NULL, &e), 0);
  td_sink sink = {0};
  assert_int_equal(td_kinds_find("kernel_regression")->run(f, &sink, &s, &e), 0);
  const char *keys[6] = {"nngp_test_accuracy", "ntk_test_accuracy", "net_test_accuracy",
                         "nngp_test_mse", "ntk_test_mse", "net_test_mse"};
  for (int i = 0; i < 6; i++) {
    double v = json_number_value(json_object_get(s, keys[i]));
    print_message("%s %.4f\n", keys[i], v);
    assert_true(isfinite(v));
    if (i < 2) assert_true(v > 0.55); /* chance is 0.1 */
    if (i >= 3 && i < 5) assert_true(v < 0.45); /* predicting 0 everywhere gives 0.5 */
  }
  json_decref(s);
  json_decref(f);
  json_decref(p);
}

/* The NTK prediction WITH the finite network's f_0 (Lee et al. 2019, eqs. 9-10, the same GD
 * steps) is what the network approaches as width grows: the relative distance of the test
 * outputs is O(1/sqrt(width)) (their Theorem 2.1). Stated: at width 2048 below 0.1 and at
 * least 2 times smaller than at width 128 (4 expected), on 50 images, 50 steps. Without the
 * f_0 terms the prediction would miss the network's initial outputs, which are O(1). */
static double kreg_distance(int width) {
  char text[160];
  snprintf(text, sizeof text, "{\"data\":{\"n_train\":50,\"n_test\":50},\"steps\":50,"
           "\"model\":{\"width\":%d}}", width);
  json_t *p = json_loads(text, 0, NULL), *f = NULL, *s = NULL;
  td_err e;
  assert_int_equal(td_kinds_validate("kernel_regression", p, NULL, &f, NULL, &e), 0);
  td_sink sink = {0};
  assert_int_equal(td_kinds_find("kernel_regression")->run(f, &sink, &s, &e), 0);
  double d = json_number_value(json_object_get(s, "net_ntk_f0_distance"));
  print_message("width %d: net vs NTK-with-f0 prediction %.4f\n", width, d);
  json_decref(s);
  json_decref(f);
  json_decref(p);
  return d;
}

static void test_kreg_f0(void **state) {
  (void)state;
  td_dataset probe;
  memset(&probe, 0, sizeof probe);
  if (td_data_fashion_mnist("test", 10, &probe, NULL)) {
    print_message("skip: no Fashion-MNIST\n");
    skip();
  }
  td_dataset_deinit(&probe);
  double a = kreg_distance(128), b = kreg_distance(2048);
  assert_true(b < 0.1);
  assert_true(b < a / 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_kreg), cmocka_unit_test(test_kreg_f0)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
