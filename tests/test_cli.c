/* test_cli.c: the command line's pure helpers (server/cli.c): error lines from the envelope,
 * the progress bar, query escaping (RFC 3986), the JSON re-indenter and the ls table row.
 * Exact assertions; the references are written by hand from the formats' definitions, and
 * the pretty printer is checked by re-parsing its output with jansson (an independent
 * parser) and comparing values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <string.h>

#include "../server/cli.h"

static void test_error_text(void **state) {
  (void)state;
  char out[256];
  cli_error_text(400,
                 "{\"error\":{\"code\":\"invalid_param\",\"message\":\"params.lr must be >= 0\","
                 "\"field\":\"params.lr\"}}",
                 out, sizeof out);
  assert_string_equal(out, "params.lr must be >= 0 (field params.lr) [HTTP 400 invalid_param]");
  cli_error_text(404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no job 9\",\"field\":null}}",
                 out, sizeof out);
  assert_string_equal(out, "no job 9 [HTTP 404 not_found]");
  cli_error_text(502, "<html>bad gateway</html>\nmore", out, sizeof out);
  assert_string_equal(out, "HTTP 502: <html>bad gateway</html>");
  cli_error_text(500, NULL, out, sizeof out);
  assert_string_equal(out, "HTTP 500");
  cli_error_text(400, "{\"error\":{\"code\":\"x\",\"message\":\"abcdefghij\"}}", out, 8);
  assert_string_equal(out, "abcdefg"); /* truncated, terminated */
}

static void test_progress_bar(void **state) {
  (void)state;
  char out[128];
  cli_progress_bar(5, 10, 10, out, sizeof out);
  assert_string_equal(out, "[#####.....]  50%  5/10");
  cli_progress_bar(1, 3, 10, out, sizeof out); /* floor(10/3) = 3 cells, floor(33.3) = 33 % */
  assert_string_equal(out, "[###.......]  33%  1/3");
  cli_progress_bar(2, 3, 10, out, sizeof out); /* floor(6.67) = 6 cells, floor(66.7) = 66 % */
  assert_string_equal(out, "[######....]  66%  2/3");
  cli_progress_bar(99, 100, 10, out, sizeof out); /* floor(9.9) = 9: never full before 100 % */
  assert_string_equal(out, "[#########.]  99%  99/100");
  cli_progress_bar(10, 10, 4, out, sizeof out);
  assert_string_equal(out, "[####] 100%  10/10");
  cli_progress_bar(15, 10, 4, out, sizeof out); /* clamped */
  assert_string_equal(out, "[####] 100%  10/10");
  cli_progress_bar(-3, 10, 4, out, sizeof out);
  assert_string_equal(out, "[....]   0%  0/10");
  cli_progress_bar(7, 0, 4, out, sizeof out); /* unknown total */
  assert_string_equal(out, "[....]    ?  7");
}

static void test_query_escape(void **state) {
  (void)state;
  http_buf b;
  http_buf_init(&b);
  cli_query_escape(&b, "a b&c=d/é~x-y_z.0");
  /* RFC 3986 2.3: only ALPHA DIGIT - . _ ~ stay; é is UTF-8 C3 A9 */
  assert_string_equal(b.data, "a%20b%26c%3Dd%2F%C3%A9~x-y_z.0");
  http_buf_free(&b);
}

static void test_json_pretty(void **state) {
  (void)state;
  const char *in = "{\"a\":1,\"b\":[1.0,\"x,y:{z}\",{}],\"c\":{\"d\":null,\"e\":[]},"
                   "\"f\":\"q\\\"uote\",\"g\":0.10000000000000001}";
  http_buf b;
  http_buf_init(&b);
  cli_json_pretty(in, strlen(in), &b);
  const char *want = "{\n"
                     "  \"a\": 1,\n"
                     "  \"b\": [\n"
                     "    1.0,\n"
                     "    \"x,y:{z}\",\n"
                     "    {}\n"
                     "  ],\n"
                     "  \"c\": {\n"
                     "    \"d\": null,\n"
                     "    \"e\": []\n"
                     "  },\n"
                     "  \"f\": \"q\\\"uote\",\n"
                     "  \"g\": 0.10000000000000001\n"
                     "}";
  assert_string_equal(b.data, want);
  /* the same value, by an independent parser */
  json_t *x = json_loads(in, 0, NULL), *y = json_loads(b.data, 0, NULL);
  assert_non_null(y);
  assert_true(json_equal(x, y));
  json_decref(x);
  json_decref(y);
  http_buf_free(&b);
}

static void test_job_row(void **state) {
  (void)state;
  json_t *job = json_loads(
      "{\"id\":42,\"kind\":\"train\",\"name\":\"a very long job name that goes on\","
      "\"status\":\"running\",\"progress\":{\"done\":5,\"total\":200},"
      "\"created_at\":\"2026-12-06T23:09:22.255Z\"}",
      0, NULL);
  http_buf b;
  http_buf_init(&b);
  cli_job_row(job, &b);
  assert_string_equal(b.data, "    42  train               a very long job name th~  running     "
                              "5/200          2026-12-06 23:09:22\n");
  http_buf_free(&b);
  json_decref(job);
  /* a cut inside a two-byte character backs off to its start: 22 x 'a' then "é" (2 bytes)
   * then more; byte 23 is the second byte of é, so the name keeps 22 bytes */
  job = json_loads("{\"id\":1,\"kind\":\"k\",\"name\":\"aaaaaaaaaaaaaaaaaaaaaa\xc3\xa9zzzz\","
                   "\"status\":\"queued\",\"progress\":{\"done\":0,\"total\":0},"
                   "\"created_at\":\"2026-01-02T03:04:05Z\"}",
                   0, NULL);
  http_buf_init(&b);
  cli_job_row(job, &b);
  assert_non_null(strstr(b.data, "  aaaaaaaaaaaaaaaaaaaaaa~  "));
  assert_non_null(strstr(b.data, "queued      -              2026-01-02 03:04:05\n"));
  http_buf_free(&b);
  json_decref(job);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_error_text), cmocka_unit_test(test_progress_bar),
      cmocka_unit_test(test_query_escape), cmocka_unit_test(test_json_pretty),
      cmocka_unit_test(test_job_row),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
