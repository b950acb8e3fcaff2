/* test_schema.c: parameter-schema validation (unknown field, wrong type, range, enum, lists,
 * defaults) and the path helpers. Pure logic: exact assertions, no tolerances. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/schema.h"

static const td_param schema[] = {
    {"lr", TD_PT_NUM, "0.1", 1e-12, 10, NULL, 0, "learning rate"},
    {"steps", TD_PT_INT, "100", 1, 1e6, NULL, 0, "steps"},
    {"nesterov", TD_PT_BOOL, "false", 0, 0, NULL, 0, "nesterov"},
    {"model.activation", TD_PT_STR, "\"relu\"", 0, 0, "relu|tanh|linear", 0, "activation"},
    {"model.hidden", TD_PT_INT_LIST, "[8]", 1, 100000, NULL, 4, "widths"},
    {"opt.betas", TD_PT_NUM_LIST, NULL, 0, 1, NULL, 2, "betas"},
};
#define NS (sizeof schema / sizeof schema[0])

static int validate(const char *text, json_t **out, td_err *err) {
  json_t *p = json_loads(text, 0, NULL);
  assert_non_null(p);
  int rc = td_schema_validate(schema, NS, p, out, err);
  json_decref(p);
  return rc;
}

static void expect_field(const char *text, const char *field) {
  json_t *out = (json_t *)1;
  td_err err;
  td_err_clear(&err);
  assert_int_equal(validate(text, &out, &err), TD_EINVAL);
  assert_null(out);
  assert_string_equal(err.field, field);
  assert_true(strlen(err.msg) > 0);
}

/* An integer past 2^53 is compared and printed as an integer: as doubles, 2^53 + 1 and the
 * bound 2^53 - 1 would print alike and 2^53 + 1 would round to 2^53. */
static void test_big_integer_range_message(void **state) {
  (void)state;
  static const td_param big[] = {{"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "seed"}};
  json_t *p = json_loads("{\"seed\": 9007199254740993}", 0, NULL), *out = NULL;
  td_err err;
  td_err_clear(&err);
  assert_int_equal(td_schema_validate(big, 1, p, &out, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "9007199254740993"));
  assert_non_null(strstr(err.msg, "9007199254740991]"));
  json_decref(p);
  p = json_loads("{\"seed\": 9007199254740991}", 0, NULL);
  assert_int_equal(td_schema_validate(big, 1, p, &out, &err), 0);
  assert_int_equal(json_integer_value(json_object_get(out, "seed")), 9007199254740991LL);
  json_decref(out);
  json_decref(p);
}

static void test_defaults_filled(void **state) {
  (void)state;
  json_t *out;
  assert_int_equal(validate("{}", &out, NULL), 0);
  assert_true(td_param_num(out, "lr", -1) == 0.1);
  assert_int_equal(td_param_int(out, "steps", -1), 100);
  assert_int_equal(td_param_bool(out, "nesterov", -1), 0);
  assert_string_equal(td_param_str(out, "model.activation", ""), "relu");
  assert_int_equal(td_param_int(out, "model.hidden[0]", -1), 8);
  assert_false(td_param_has(out, "opt.betas")); /* no default: stays absent */
  json_decref(out);
}

static void test_given_values_kept(void **state) {
  (void)state;
  json_t *out;
  assert_int_equal(validate("{\"lr\":2,\"steps\":5.0,\"model\":{\"hidden\":[3,4]},"
                            "\"opt\":{\"betas\":[0.9,0.99]}}",
                            &out, NULL),
                   0);
  assert_true(td_param_num(out, "lr", -1) == 2.0);
  assert_int_equal(td_param_int(out, "steps", -1), 5);
  assert_int_equal(td_param_int(out, "model.hidden[1]", -1), 4);
  assert_string_equal(td_param_str(out, "model.activation", ""), "relu");
  assert_true(td_param_num(out, "opt.betas[1]", -1) == 0.99);
  json_decref(out);
}

static void test_errors_name_field(void **state) {
  (void)state;
  expect_field("{\"bogus\":1}", "params.bogus");
  expect_field("{\"model\":{\"depth\":3}}", "params.model.depth");
  expect_field("{\"lr\":\"big\"}", "params.lr");
  expect_field("{\"lr\":-1}", "params.lr");
  expect_field("{\"lr\":1e300}", "params.lr");
  expect_field("{\"steps\":1.5}", "params.steps");
  expect_field("{\"steps\":0}", "params.steps");
  expect_field("{\"nesterov\":1}", "params.nesterov");
  expect_field("{\"model\":{\"activation\":\"gelu\"}}", "params.model.activation");
  expect_field("{\"model\":5}", "params.model");
  expect_field("{\"model\":{\"hidden\":[]}}", "params.model.hidden");
  expect_field("{\"model\":{\"hidden\":[1,2,3,4,5]}}", "params.model.hidden");
  expect_field("{\"model\":{\"hidden\":[8,1000000000]}}", "params.model.hidden[1]");
  expect_field("{\"model\":{\"hidden\":[8,\"x\"]}}", "params.model.hidden[1]");
  expect_field("{\"model\":{\"hidden\":8}}", "params.model.hidden");
}

static void test_non_object_params(void **state) {
  (void)state;
  json_t *out, *p = json_loads("[1,2]", 0, NULL);
  td_err err;
  assert_int_equal(td_schema_validate(schema, NS, p, &out, &err), TD_EINVAL);
  assert_string_equal(err.field, "params");
  json_decref(p);
}

/* Defaults are normalized like given values, so validating filled params changes nothing
 * (found by tests/fuzz/fuzz_jobspec: the default "1" of a number param stayed an integer). */
static void test_defaults_normalized(void **state) {
  (void)state;
  static const td_param s2[] = {
      {"init", TD_PT_NUM, "1", -10, 10, NULL, 0, "a number whose default is written as 1"},
      {"n", TD_PT_INT, "2.0", 1, 10, NULL, 0, "an integer whose default is written as 2.0"},
  };
  json_t *once = NULL, *twice = NULL;
  assert_int_equal(td_schema_validate(s2, 2, NULL, &once, NULL), 0);
  assert_true(json_is_real(json_object_get(once, "init")));
  assert_true(json_is_integer(json_object_get(once, "n")));
  assert_int_equal(td_schema_validate(s2, 2, once, &twice, NULL), 0);
  assert_true(json_equal(once, twice));
  json_decref(once);
  json_decref(twice);
}

static void test_set_path(void **state) {
  (void)state;
  json_t *root = json_loads("{\"model\":{\"hidden\":[1,2]}}", 0, NULL);
  assert_int_equal(td_param_set_path(root, "model.hidden[1]", json_integer(7), NULL), 0);
  assert_int_equal(td_param_int(root, "model.hidden[1]", -1), 7);
  assert_int_equal(td_param_set_path(root, "optimizer.lr", json_real(0.5), NULL), 0);
  assert_true(td_param_num(root, "optimizer.lr", -1) == 0.5);
  assert_int_equal(td_param_set_path(root, "model.hidden[5]", json_integer(1), NULL), TD_EINVAL);
  assert_int_equal(td_param_set_path(root, "a..b", json_integer(1), NULL), TD_EINVAL);
  assert_int_equal(td_param_set_path(root, "x[", json_integer(1), NULL), TD_EINVAL);
  assert_null(td_param_get(root, "model.hidden[9]"));
  json_decref(root);
}

static void test_schema_json(void **state) {
  (void)state;
  json_t *s = td_schema_to_json(schema, NS);
  assert_int_equal(json_array_size(s), NS);
  json_t *act = json_array_get(s, 3);
  assert_string_equal(json_string_value(json_object_get(act, "path")), "model.activation");
  assert_int_equal(json_array_size(json_object_get(act, "enum")), 3);
  json_decref(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults_filled),  cmocka_unit_test(test_given_values_kept),
      cmocka_unit_test(test_errors_name_field), cmocka_unit_test(test_non_object_params),
      cmocka_unit_test(test_set_path),          cmocka_unit_test(test_schema_json),
      cmocka_unit_test(test_defaults_normalized), cmocka_unit_test(test_big_integer_range_message),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
