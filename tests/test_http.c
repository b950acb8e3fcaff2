/* test_http.c: the HTTP helpers: strict integer parsing, JSON string/number encoding (NaN and
 * Inf as strings, invalid UTF-8 replaced), the error table, and static path resolution (no
 * traversal, no symlink escape). Exact assertions, no tolerances. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../server/api.h"
#include "../server/http.h"

static void test_parse_ll(void **state) {
  (void)state;
  long long v;
  assert_int_equal(http_parse_ll("42", 0, 100, &v), 0);
  assert_int_equal(v, 42);
  assert_int_equal(http_parse_ll("-7", -10, 10, &v), 0);
  assert_int_equal(v, -7);
  assert_int_equal(http_parse_ll("9223372036854775807", LLONG_MIN, LLONG_MAX, &v), 0);
  assert_true(v == LLONG_MAX);
  assert_int_equal(http_parse_ll("-9223372036854775808", LLONG_MIN, LLONG_MAX, &v), 0);
  assert_true(v == LLONG_MIN);
  const char *bad[] = {"", "-", "+1", " 1", "1 ", "1e3", "0x10", "1.0", "9223372036854775808",
                       "99999999999999999999999", "１"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(http_parse_ll(bad[i], LLONG_MIN, LLONG_MAX, &v), TD_EINVAL);
  assert_int_equal(http_parse_ll("101", 0, 100, &v), TD_EINVAL);
  int64_t id;
  assert_int_equal(http_parse_id("12", &id), 0);
  assert_int_equal(id, 12);
  assert_int_equal(http_parse_id("0", &id), TD_EINVAL);
  assert_int_equal(http_parse_id("-3", &id), TD_EINVAL);
  assert_int_equal(http_parse_id("9007199254740993", &id), TD_EINVAL);
  /* One spelling per id: a leading zero or a sign would make "01" a second name of job 1. */
  const char *noncanon[] = {"01", "007", "+1", "00", " 1"};
  for (size_t i = 0; i < sizeof noncanon / sizeof noncanon[0]; i++)
    assert_int_equal(http_parse_id(noncanon[i], &id), TD_EINVAL);
  assert_int_equal(http_parse_id("10", &id), 0);
  assert_int_equal(id, 10);
}

/* http_query_check: a parameter the route does not list, a repeated one, and one without a
 * value are 400 invalid_query naming it; listed parameters pass; NULL allows none. */
static void test_query_check(void **state) {
  (void)state;
  static const struct {
    const char *qs, *allowed;
    int status;
    const char *field;
  } cases[] = {
      {"status=queued&limit=5", "status,kind,limit", 0, NULL},
      {"", NULL, 0, NULL},
      {"x=1", NULL, 400, "x"},
      {"status=queued&stauts=running", "status,kind", 400, "stauts"},
      {"kind=a&kind=b", "status,kind", 400, "kind"},
      {"limit", "limit", 400, "limit"},
      {"=v", "limit", 400, ""},
      {"kin=train", "kind", 400, "kin"},
      {"kindx=1", "kind", 400, "kindx"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    http_query_args q;
    assert_int_equal(http_query_parse(cases[i].qs, strlen(cases[i].qs), &q), 0);
    http_req req = {.args = &q};
    http_resp resp = {.status = 200, .fd = -1};
    http_buf_init(&resp.body);
    int st = http_query_check(&req, &resp, cases[i].allowed);
    assert_int_equal(st, cases[i].status);
    if (st) {
      json_t *j = json_loads(resp.body.data, 0, NULL);
      assert_non_null(j);
      json_t *err = json_object_get(j, "error");
      assert_string_equal(json_string_value(json_object_get(err, "code")), "invalid_query");
      json_t *f = json_object_get(err, "field");
      if (cases[i].field[0]) assert_string_equal(json_string_value(f), cases[i].field);
      else assert_true(json_is_null(f));
      json_decref(j);
    }
    http_buf_free(&resp.body);
    http_query_args_deinit(&q);
  }
}

static char *enc_str(const char *s) {
  http_buf b;
  http_buf_init(&b);
  http_buf_json_str(&b, s);
  return b.data;
}

/* The query split and decoder (the daemon's, rebuilt without a connection for fuzzing):
 * '&' separates pairs, the first '=' splits, '+' is a space, %00 becomes DEL, malformed
 * escapes stay, a pair without '=' has no value, the first duplicate wins. */
static void test_query_parse(void **state) {
  (void)state;
  const char raw[] = "keys=a%2Cb+c&flag&max_points=10=x&bad=%zz%4&nul=%00&keys=second&=v&";
  http_query_args q;
  assert_int_equal(http_query_parse(raw, sizeof raw - 1, &q), 0);
  assert_int_equal(q.n, 7);
  assert_string_equal(http_query_args_get(&q, "keys"), "a,b c");
  assert_null(http_query_args_get(&q, "flag"));
  assert_string_equal(http_query_args_get(&q, "max_points"), "10=x");
  assert_string_equal(http_query_args_get(&q, "bad"), "%zz%4");
  assert_string_equal(http_query_args_get(&q, "nul"), "\x7f");
  assert_string_equal(http_query_args_get(&q, ""), "v");
  assert_null(http_query_args_get(&q, "absent"));
  http_query_args_deinit(&q);
  /* Parsing stops at a NUL byte; more than HTTP_QUERY_MAX_ARGS pairs is refused. */
  assert_int_equal(http_query_parse("a=1\0b=2", 7, &q), 0);
  assert_int_equal(q.n, 1);
  http_query_args_deinit(&q);
  char many[HTTP_QUERY_MAX_ARGS * 2 + 2];
  memset(many, '&', sizeof many - 1);
  many[sizeof many - 1] = '\0';
  assert_int_equal(http_query_parse(many, strlen(many), &q), TD_ELIMIT);
  assert_int_equal(q.n, 0);
}

static void test_json_strings(void **state) {
  (void)state;
  char *o = enc_str("a\"b\\c\n\x01");
  assert_string_equal(o, "\"a\\\"b\\\\c\\n\\u0001\"");
  free(o);
  o = enc_str("caf\xc3\xa9 \xe2\x82\xac"); /* valid UTF-8 passes through */
  assert_string_equal(o, "\"caf\xc3\xa9 \xe2\x82\xac\"");
  free(o);
  o = enc_str("x\xff\xc3"); /* invalid bytes become U+FFFD */
  assert_string_equal(o, "\"x\xef\xbf\xbd\xef\xbf\xbd\"");
  free(o);
  o = enc_str("\xed\xa0\x80"); /* an encoded surrogate is invalid */
  json_t *back = json_loads(o, JSON_DECODE_ANY, NULL);
  assert_non_null(back); /* and the output parses */
  json_decref(back);
  free(o);
  http_buf b;
  http_buf_init(&b);
  http_buf_json_str(&b, NULL);
  assert_string_equal(b.data, "null");
  http_buf_free(&b);
}

static void test_json_numbers(void **state) {
  (void)state;
  http_buf b;
  http_buf_init(&b);
  http_buf_json_num(&b, NAN);
  http_buf_str(&b, ",");
  http_buf_json_num(&b, INFINITY);
  http_buf_str(&b, ",");
  http_buf_json_num(&b, -INFINITY);
  http_buf_str(&b, ",");
  http_buf_json_num(&b, 0.1);
  assert_string_equal(b.data, "\"NaN\",\"Infinity\",\"-Infinity\",0.10000000000000001");
  assert_true(strtod(b.data + strlen(b.data) - 19, NULL) == 0.1); /* 17 digits round-trip */
  http_buf_free(&b);
  double vals[] = {0.1, 1.0, 1e-300, 123456.789, 1.0 / 3.0, 2.0 / 3.0, -0.0, 5e-324};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    http_buf_init(&b);
    http_buf_json_real(&b, vals[i]);
    assert_true(strtod(b.data, NULL) == vals[i]); /* shortest form still round-trips */
    assert_true(strpbrk(b.data, ".e") != NULL);   /* and stays a real */
    http_buf_free(&b);
  }
  http_buf_init(&b);
  http_buf_json_real(&b, 0.05);
  assert_string_equal(b.data, "0.05");
  http_buf_free(&b);
  json_t *v = json_pack("{s:f,s:[i,s],s:b,s:n}", "lr", 0.05, "l", 7, "x", "t", 1, "z");
  char *txt = http_json_dump(v);
  assert_string_equal(txt, "{\"lr\":0.05,\"l\":[7,\"x\"],\"t\":true,\"z\":null}");
  free(txt);
  json_decref(v);
}

static void test_error_table(void **state) {
  (void)state;
  assert_int_equal(http_err_status(http_err_from_td(TD_EINVAL)), 400);
  assert_int_equal(http_err_status(http_err_from_td(TD_ERANGE)), 400);
  assert_int_equal(http_err_status(http_err_from_td(TD_ELIMIT)), 400);
  assert_int_equal(http_err_status(http_err_from_td(TD_ENOTFOUND)), 404);
  assert_int_equal(http_err_status(http_err_from_td(TD_ECONFLICT)), 409);
  assert_int_equal(http_err_status(http_err_from_td(TD_EIO)), 500);
  assert_int_equal(http_err_status(http_err_from_td(-999)), 500);
  assert_string_equal(http_err_name(http_err_from_td(TD_EINVAL)), "invalid_param");
  assert_int_equal(http_err_status(HTTP_E_PAYLOAD_TOO_LARGE), 413);
  assert_int_equal(http_err_status(HTTP_E_UNSUPPORTED_MEDIA_TYPE), 415);
  assert_int_equal(http_err_status(HTTP_E_METHOD_NOT_ALLOWED), 405);
  assert_int_equal(http_err_status(HTTP_E_QUEUE_FULL), 503);
  http_resp r = {.fd = -1};
  td_err e;
  td_err_set(&e, TD_EINVAL, "params.lr", "lr must be positive");
  assert_int_equal(http_error_td(&r, &e), 400);
  json_t *j = json_loadb(r.body.data, r.body.len, 0, NULL);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "field")),
                      "params.lr");
  assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")),
                      "invalid_param");
  json_decref(j);
  http_buf_free(&r.body);
}

/* A web root with a file, a subdirectory, a hidden file and symlinks in and out of it. */
static void test_static_resolve(void **state) {
  (void)state;
  char dir[] = "/tmp/tdlab_test_web_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char p[PATH_MAX + 64], root[PATH_MAX];
  snprintf(p, sizeof p, "%s/web", dir);
  assert_int_equal(mkdir(p, 0755), 0);
  assert_non_null(realpath(p, root));
  const char *files[] = {"index.html", "app.js", "sub/index.html", ".secret", "style.css"};
  snprintf(p, sizeof p, "%s/sub", root);
  assert_int_equal(mkdir(p, 0755), 0);
  for (size_t i = 0; i < 5; i++) {
    snprintf(p, sizeof p, "%s/%s", root, files[i]);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
  }
  snprintf(p, sizeof p, "%s/outside.txt", dir);
  FILE *f = fopen(p, "w");
  fputs("secret", f);
  fclose(f);
  char link[PATH_MAX + 64];
  snprintf(link, sizeof link, "%s/escape.txt", root);
  assert_int_equal(symlink(p, link), 0);
  snprintf(link, sizeof link, "%s/etc", root);
  assert_int_equal(symlink("/etc", link), 0);
  snprintf(link, sizeof link, "%s/alias.js", root);
  assert_int_equal(symlink("app.js", link), 0); /* a symlink inside the root is fine */
  size_t rl = strlen(root);
  int fd;
  const char *ct;
  assert_int_equal(api_static_resolve(root, rl, "/", &fd, &ct), 0);
  assert_string_equal(ct, "text/html; charset=utf-8");
  close(fd);
  assert_int_equal(api_static_resolve(root, rl, "/app.js", &fd, &ct), 0);
  assert_string_equal(ct, "text/javascript; charset=utf-8");
  close(fd);
  assert_int_equal(api_static_resolve(root, rl, "/alias.js", &fd, &ct), 0);
  close(fd);
  assert_int_equal(api_static_resolve(root, rl, "/style.css", &fd, &ct), 0);
  assert_string_equal(ct, "text/css; charset=utf-8");
  close(fd);
  assert_int_equal(api_static_resolve(root, rl, "/sub", &fd, &ct), 0); /* dir -> index.html */
  close(fd);
  const char *refused[] = {"/../outside.txt", "/sub/../../outside.txt", "/..", "/./index.html",
                           "/.secret", "/escape.txt", "/etc/passwd", "/etc", "/missing.html",
                           "index.html", "/sub\\..\\..\\outside.txt", "/a\x01"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    fd = -2;
    assert_int_equal(api_static_resolve(root, rl, refused[i], &fd, &ct), TD_ENOTFOUND);
    assert_int_equal(fd, -1);
  }
  char cmd[PATH_MAX + 64];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_ll),
      cmocka_unit_test(test_query_parse),
      cmocka_unit_test(test_query_check),
      cmocka_unit_test(test_json_strings),
      cmocka_unit_test(test_json_numbers),
      cmocka_unit_test(test_error_table),
      cmocka_unit_test(test_static_resolve),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
