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

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_kreg)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
