/* test_search.c: the jobs list's query language: matches against hand-written records whose
 * expected answers follow from the grammar in search.h, and malformed queries with the
 * position of the error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "../server/search.h"
#include "base/err.h"

static json_t *P, *S, *T;
static search_record rec(void) {
  return (search_record){.kind = "train", .name = "opt-adam", .status = "succeeded",
                         .params = P, .summary = S, .tags = T};
}

static int m(const char *q) {
  search_query *sq = NULL;
  size_t pos;
  char msg[160];
  int rc = search_parse(q, &sq, &pos, msg, sizeof msg);
  if (rc) fail_msg("parse of '%s' failed at %zu: %s", q, pos, msg);
  search_record r = rec();
  int v = search_match(sq, &r);
  search_free(sq);
  return v;
}

static void bad(const char *q, size_t want_pos) {
  search_query *sq = (search_query *)1;
  size_t pos = 999;
  char msg[160];
  assert_int_equal(search_parse(q, &sq, &pos, msg, sizeof msg), TD_EINVAL);
  assert_null(sq);
  assert_true(msg[0] != '\0');
  if (pos != want_pos) fail_msg("'%s': error at %zu, wanted %zu (%s)", q, pos, want_pos, msg);
}

static void test_matches(void **state) {
  (void)state;
  P = json_loads("{\"optimizer\":{\"name\":\"adam\",\"lr\":0.003},\"seed\":1,\"flag\":true}", 0, NULL);
  S = json_loads("{\"test_acc\":0.87,\"loss\":\"NaN\",\"big\":\"Infinity\"}", 0, NULL);
  T = json_loads("[\"cmp\",\"x1\"]", 0, NULL);
  assert_true(m("optimizer.name=adam and summary.test_acc>0.85"));
  assert_false(m("optimizer.name=adam and summary.test_acc>0.9"));
  assert_true(m("optimizer.name=sgd or summary.test_acc>=0.87"));
  assert_true(m("params.optimizer.lr < 0.01"));
  assert_true(m("optimizer.lr = 3e-3"));
  assert_true(m("not optimizer.name = sgd"));
  assert_false(m("not (optimizer.name = adam)"));
  assert_true(m("OPTIMIZER.name != adam or seed = 1")); /* paths are case-sensitive: absent */
  assert_true(m("kind=train and status=succeeded and name=\"opt-adam\""));
  assert_true(m("tag=cmp and tag!=nope"));
  assert_false(m("tag=nope"));
  assert_true(m("flag=true and flag!=false"));
  assert_false(m("summary.loss < 1 or summary.loss >= 1 or summary.loss = 1")); /* NaN */
  assert_true(m("summary.loss != 1"));
  assert_true(m("summary.big > 1e308"));
  assert_false(m("missing.path > 0"));
  assert_true(m("missing.path != 0"));
  assert_false(m("optimizer.name > 5")); /* a string against a number */
  assert_true(m("optimizer.name < b and optimizer.name > a")); /* strcmp order */
  /* precedence: and binds tighter than or */
  assert_true(m("seed=2 and seed=3 or seed=1"));
  assert_false(m("seed=2 and (seed=3 or seed=1)"));
  json_decref(P);
  json_decref(S);
  json_decref(T);
}

static void test_errors(void **state) {
  (void)state;
  bad("", 0);
  bad("optimizer.name=", 15);
  bad("optimizer.name adam", 15);
  bad("a=1 and", 7);
  bad("(a=1", 4);
  bad("a=1 b=2", 4);
  bad("a=\"open", 2);
  bad("a>>1", 2);
  bad("flag > true", 5);
  char deep[200] = "";
  for (int i = 0; i < 40; i++) strcat(deep, "(");
  bad(deep, 32); /* the 33rd level starts after 32 parentheses */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matches),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
