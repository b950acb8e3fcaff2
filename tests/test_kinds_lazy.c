/* test_kinds_lazy.c: the `lazy` kind: under the NTK parameterization the trained network
 * approaches its kernel prediction as width grows (Lee et al. 2019, Theorem 2.1: the
 * distance is O(1/sqrt(width))), its NTK, parameters and features move less; Chizat and
 * Bach's output scale alpha makes a narrow network lazy (their sec. 2: the relative change
 * of the model scales like 1/alpha). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "kinds/registry.h"

static json_t *run(const char *text) {
  json_t *p = json_loads(text, 0, NULL), *filled = NULL, *s = NULL;
  assert_non_null(p);
  td_err e;
  int rc = td_kinds_validate("lazy", p, NULL, &filled, NULL, &e);
  json_decref(p);
  if (rc) fail_msg("%s: %s", e.field, e.msg);
  td_sink sink = {0};
  rc = td_kinds_find("lazy")->run(filled, &sink, &s, &e);
  json_decref(filled);
  if (rc) fail_msg("run: %s", e.msg);
  return s;
}

static double at(const json_t *s, const char *key, size_t i) {
  return json_number_value(json_array_get(json_object_get(s, key), i));
}

/* Widths 64 and 4096 (a factor 64: 1/sqrt gives a factor 8): every distance must fall by at
 * least a factor 4 (half the predicted rate, room for the sampling of two single networks),
 * and the trained network's test outputs must match the kernel prediction to 1 % at 4096. */
static void test_lazy_with_width(void **state) {
  (void)state;
  json_t *s = run("{\"widths\":[64,4096],\"steps\":100,\"lr\":0.5}");
  const char *keys[4] = {"fn_distance", "ntk_change", "param_change", "feature_change"};
  for (int q = 0; q < 4; q++) {
    print_message("%s: %.3g -> %.3g\n", keys[q], at(s, keys[q], 0), at(s, keys[q], 1));
    assert_true(at(s, keys[q], 1) < at(s, keys[q], 0) / 4);
  }
  assert_true(at(s, "fn_distance", 1) < 0.01);
  /* training happened: the loss starts at 1/(2n) sum y^2 (h_0 = 0), about E tanh(z)^2 / 2
   * ~ 0.2 for z ~ N(0, 1), and must end below 0.01 */
  assert_true(at(s, "train_loss", 1) < 0.01);
  json_decref(s);
}

/* alpha = 100 at width 32: the model changes by O(1/alpha), so the NTK change and the
 * feature change are at least 20 times smaller than at alpha = 1 (theory: 100 times). */
static void test_alpha_makes_lazy(void **state) {
  (void)state;
  json_t *a1 = run("{\"widths\":[32],\"steps\":100,\"alpha\":1}");
  json_t *a100 = run("{\"widths\":[32],\"steps\":100,\"alpha\":100}");
  print_message("alpha 1: ntk_change %.3g feature %.3g; alpha 100: %.3g %.3g\n",
                at(a1, "ntk_change", 0), at(a1, "feature_change", 0), at(a100, "ntk_change", 0),
                at(a100, "feature_change", 0));
  assert_true(at(a100, "ntk_change", 0) < at(a1, "ntk_change", 0) / 20);
  assert_true(at(a100, "feature_change", 0) < at(a1, "feature_change", 0) / 20);
  assert_true(at(a100, "fn_distance", 0) < at(a1, "fn_distance", 0) / 20);
  json_decref(a1);
  json_decref(a100);
}

/* mup: the feature change does not vanish with width (feature learning), while under ntk it
 * falls like 1/sqrt(width): from 64 to 4096 ntk's must fall by at least 4 (theory 8) and
 * mup's by less than 2 (theory: it tends to a non-zero limit). */
static void test_mup_learns_features(void **state) {
  (void)state;
  json_t *s = run("{\"widths\":[64,4096],\"steps\":100,\"lr\":0.05,"
                  "\"model\":{\"parameterization\":\"mup\"}}");
  print_message("mup feature_change %.3g -> %.3g, fn_distance %.3g -> %.3g, loss %.3g\n",
                at(s, "feature_change", 0), at(s, "feature_change", 1), at(s, "fn_distance", 0),
                at(s, "fn_distance", 1), at(s, "train_loss", 1));
  assert_true(at(s, "feature_change", 1) > at(s, "feature_change", 0) / 2);
  assert_true(at(s, "feature_change", 1) > 0.02);
  json_decref(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lazy_with_width),
      cmocka_unit_test(test_alpha_makes_lazy),
      cmocka_unit_test(test_mup_learns_features),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
