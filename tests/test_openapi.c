/* test_openapi.c: the generated OpenAPI document covers every row of the route table, and a
 * td_param table maps to the JSON Schema that the 2020-12 spec gives for the same rules
 * (references written by hand). Pure logic: exact assertions. The document is validated
 * against the OpenAPI 3.1 meta-schema, and real responses against it, by ajv in
 * tests/e2e_openapi.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "../server/http.h"
#include "kinds/registry.h"
#include "../server/openapi.h"

/* Every row of the route table is an operation of the document, under its pattern and
 * method, named by the row; rows that need the token carry the bearer requirement, and the
 * rows' query parameters are listed. */
static void test_every_route_documented(void **state) {
  (void)state;
  json_t *doc = NULL;
  td_err e;
  td_err_clear(&e);
  assert_int_equal(openapi_document(&doc, &e), 0);
  assert_string_equal(json_string_value(json_object_get(doc, "openapi")), "3.1.0");
  json_t *paths = json_object_get(doc, "paths");
  assert_true(http_route_count() >= 20);
  size_t ops = 0;
  for (size_t i = 0; i < http_route_count(); i++) {
    http_route_info r;
    assert_int_equal(http_route_at(i, &r), 0);
    char m[12];
    size_t n = 0;
    for (; r.method[n]; n++) m[n] = (char)tolower((unsigned char)r.method[n]);
    m[n] = '\0';
    json_t *op = json_object_get(json_object_get(paths, r.pattern), m);
    if (!op) fail_msg("route %s %s (%s) is not in the document", r.method, r.pattern, r.name);
    assert_string_equal(json_string_value(json_object_get(op, "operationId")), r.name);
    json_t *sec = json_object_get(op, "security");
    assert_int_equal(sec != NULL, r.mutates || r.run_token);
    json_t *params = json_object_get(op, "parameters");
    size_t n_query = 0, n_path = 0, j;
    json_t *p;
    json_array_foreach(params, j, p) {
      const char *in = json_string_value(json_object_get(p, "in"));
      const char *name = json_string_value(json_object_get(p, "name"));
      if (!strcmp(in, "query")) {
        n_query++;
        assert_non_null(r.query);
        assert_non_null(strstr(r.query, name));
      } else {
        n_path++;
        char brace[48];
        snprintf(brace, sizeof brace, "{%s}", name);
        assert_non_null(strstr(r.pattern, brace));
      }
    }
    size_t want_q = 0;
    for (const char *q = r.query; q && *q; q++) want_q += *q == ',';
    if (r.query && *r.query) want_q++;
    assert_int_equal(n_query, want_q);
    size_t want_p = 0;
    for (const char *q = r.pattern; *q; q++) want_p += *q == '{';
    assert_int_equal(n_path, want_p);
    assert_non_null(json_object_get(json_object_get(op, "responses"), "default"));
    /* a success status of its own (a 3-digit 2xx, not the undocumented "2XX" range), so a
     * client knows what the route answers */
    size_t n_ok = 0;
    const char *code;
    json_t *resp;
    json_object_foreach(json_object_get(op, "responses"), code, resp)
      n_ok += strlen(code) == 3 && code[0] == '2' && isdigit((unsigned char)code[1]) &&
              isdigit((unsigned char)code[2]);
    if (!n_ok) fail_msg("route %s %s (%s) documents no success status", r.method, r.pattern, r.name);
    ops++;
  }
  /* and nothing else: the document has exactly the table's operations */
  size_t total = 0;
  const char *k;
  json_t *item;
  json_object_foreach(paths, k, item) total += json_object_size(item);
  assert_int_equal(total, ops);
  assert_int_equal(http_route_at(http_route_count(), &(http_route_info){0}), TD_EINVAL);
  /* the job body: one variant per kind */
  json_t *schemas = json_object_get(json_object_get(doc, "components"), "schemas");
  json_t *one_of = json_object_get(json_object_get(schemas, "job_create"), "oneOf");
  assert_int_equal(json_array_size(one_of), td_kinds_count());
  for (size_t i = 0; i < td_kinds_count(); i++) {
    char name[120];
    snprintf(name, sizeof name, "params.%s", td_kinds_at(i)->name);
    assert_non_null(json_object_get(schemas, name));
  }
  json_decref(doc);
}

static const td_param table[] = {
    {"lr", TD_PT_NUM, "0.1", 1e-12, 10, NULL, 0, "learning rate"},
    {"model.hidden", TD_PT_INT_LIST, "[8]", 1, 100000, NULL, 4, "widths"},
    {"model.act", TD_PT_STR, "\"relu\"", 0, 0, "relu|tanh", 0, "activation"},
    {"free", TD_PT_STR, NULL, 0, 0, NULL, 0, ""},
    {"flag", TD_PT_BOOL, "false", 0, 0, NULL, 0, "a flag"},
    {"x", TD_PT_NUM_MATRIX, NULL, -INFINITY, INFINITY, NULL, 0, "rows"},
    {"n", TD_PT_INT, NULL, 0, 5, NULL, 0, "count"},
};

/* The reference, written from the rules of td_schema_validate (base/schema.h): unknown keys
 * refused at every level, ranges inclusive, lists of 1..max_len (64 when 0), strings without
 * an enum at most 256 bytes, an infinite bound means none. */
static const char *want =
    "{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"lr\":{\"type\":\"number\",\"minimum\":1e-12,\"maximum\":10.0,\"default\":0.1,"
    "\"description\":\"learning rate\"},"
    "\"model\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{"
    "\"hidden\":{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":1.0,"
    "\"maximum\":100000.0},\"minItems\":1,\"maxItems\":4,\"default\":[8],"
    "\"description\":\"widths\"},"
    "\"act\":{\"type\":\"string\",\"enum\":[\"relu\",\"tanh\"],\"default\":\"relu\","
    "\"description\":\"activation\"}}},"
    "\"free\":{\"type\":\"string\",\"maxLength\":256},"
    "\"flag\":{\"type\":\"boolean\",\"default\":false,\"description\":\"a flag\"},"
    "\"x\":{\"type\":\"array\",\"minItems\":1,\"maxItems\":64,\"items\":{\"type\":\"array\","
    "\"minItems\":1,\"maxItems\":64,\"items\":{\"type\":\"number\"}},\"description\":\"rows\"},"
    "\"n\":{\"type\":\"integer\",\"minimum\":0.0,\"maximum\":5.0,\"description\":\"count\"}}}";

static void test_params_schema(void **state) {
  (void)state;
  json_t *got = openapi_params_schema(table, sizeof table / sizeof table[0]);
  json_t *ref = json_loads(want, 0, NULL);
  assert_non_null(got);
  assert_non_null(ref);
  if (!json_equal(got, ref)) {
    char *s = json_dumps(got, JSON_SORT_KEYS);
    fail_msg("params schema differs from the reference: %s", s);
  }
  json_decref(got);
  json_decref(ref);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_route_documented),
      cmocka_unit_test(test_params_schema),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
