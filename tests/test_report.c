/* test_report.c: the pure parts of `tdlab run --report` (server/report.h: the bounded point
 * buffer, the backoff schedule, the batch encoding) and of run tokens (server/runtok.h:
 * SHA-256 against the FIPS 180-2 test vectors, token shape, bearer parsing, comparison).
 * Exact values: no tolerances. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../server/http.h"
#include "../server/report.h"
#include "../server/runtok.h"

/* The backoff: 0.2 s doubling to the 10 s cap (0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10, ...);
 * the reference sequence is written out by hand from the documented rule. */
static void test_backoff(void **state) {
  (void)state;
  const double want[] = {0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10, 10};
  double w = 0;
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    w = report_backoff_next(w);
    assert_true(fabs(w - want[i]) < 1e-12);
  }
  /* the waits before giving up after REPORT_RETRY_TOTAL_S: at least 90 tries fit in 900 s,
   * so a server restart of a few seconds is always waited out */
  double t = 0, cur = 0;
  int tries = 0;
  while (t <= REPORT_RETRY_TOTAL_S) cur = report_backoff_next(cur), t += cur, tries++;
  assert_true(tries >= 90);
}

/* The buffer: FIFO order across pops, and the byte bound: it takes exactly
 * max_bytes / sizeof(report_point) points, then refuses with TD_ELIMIT without changing. */
static void test_buffer_bound_and_order(void **state) {
  (void)state;
  report_buf b;
  td_err e;
  size_t cap = 7;
  assert_int_equal(report_buf_init(&b, cap * sizeof(report_point) + 3, &e), 0);
  for (size_t i = 0; i < cap; i++)
    assert_int_equal(report_buf_push(&b, i % 2 ? "acc" : "loss", (long)i, (double)i / 2), 0);
  assert_int_equal(report_buf_push(&b, "loss", 99, 1), TD_ELIMIT);
  assert_int_equal(b.n, cap);
  report_buf_pop(&b, 3);
  assert_int_equal(b.n, cap - 3);
  assert_int_equal(report_buf_peek(&b, 0)->step, 3);
  assert_string_equal(report_buf_peek(&b, 0)->key, "acc");
  /* wrap around the ring: 3 more fit, in order after the 4 left */
  for (long s = 100; s < 103; s++) assert_int_equal(report_buf_push(&b, "loss", s, 0), 0);
  assert_int_equal(report_buf_push(&b, "loss", 103, 0), TD_ELIMIT);
  const long order[] = {3, 4, 5, 6, 100, 101, 102};
  for (size_t i = 0; i < cap; i++) assert_int_equal(report_buf_peek(&b, i)->step, order[i]);
  /* keys are interned: the same pointer for the same name */
  assert_ptr_equal(report_buf_peek(&b, 4)->key, report_buf_peek(&b, 5)->key);
  report_buf_pop(&b, cap);
  assert_int_equal(b.n, 0);
  report_buf_deinit(&b);
  assert_int_equal(report_buf_init(&b, sizeof(report_point) - 1, &e), TD_EINVAL);
}

/* The batch body: the k oldest points, non-finite values as the DESIGN strings. */
static void test_encode(void **state) {
  (void)state;
  report_buf b;
  td_err e;
  assert_int_equal(report_buf_init(&b, 1 << 16, &e), 0);
  assert_int_equal(report_buf_push(&b, "loss", 0, 1.5), 0);
  assert_int_equal(report_buf_push(&b, "loss", 1, NAN), 0);
  assert_int_equal(report_buf_push(&b, "g/0", 2, INFINITY), 0);
  assert_int_equal(report_buf_push(&b, "g/0", 3, -INFINITY), 0);
  assert_int_equal(report_buf_push(&b, "x", 4, 0.1), 0);
  http_buf out;
  http_buf_init(&out);
  report_encode_points(&b, 4, &out);
  http_buf_add(&out, "", 1);
  assert_string_equal(out.data,
                      "{\"points\":[{\"key\":\"loss\",\"step\":0,\"value\":1.5},"
                      "{\"key\":\"loss\",\"step\":1,\"value\":\"NaN\"},"
                      "{\"key\":\"g/0\",\"step\":2,\"value\":\"Infinity\"},"
                      "{\"key\":\"g/0\",\"step\":3,\"value\":\"-Infinity\"}]}");
  http_buf_free(&out);
  report_buf_deinit(&b);
}

/* SHA-256 of the FIPS 180-2 examples (appendix B.1 "abc", and the empty message). */
static void test_runtok_hash(void **state) {
  (void)state;
  char h[RUNTOK_HEX + 1];
  runtok_hash("abc", h);
  assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  runtok_hash("", h);
  assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  runtok_hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", h);
  assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

static void test_runtok_new_and_compare(void **state) {
  (void)state;
  char a[RUNTOK_HEX + 1], b[RUNTOK_HEX + 1];
  td_err e;
  assert_int_equal(runtok_new(a, &e), 0);
  assert_int_equal(runtok_new(b, &e), 0);
  assert_int_equal(strlen(a), 64);
  assert_int_equal(strspn(a, "0123456789abcdef"), 64);
  assert_string_not_equal(a, b); /* equal with probability 2^-256 */
  assert_true(runtok_equal(a, a));
  assert_false(runtok_equal(a, b));
  char c[RUNTOK_HEX + 1];
  memcpy(c, a, sizeof c);
  c[63] = c[63] == '0' ? '1' : '0';
  assert_false(runtok_equal(a, c));
  c[63] = '\0';
  assert_false(runtok_equal(a, c)); /* a prefix */
  assert_false(runtok_equal(c, a)); /* the other way round: the presented value a prefix */
  assert_false(runtok_equal("", a));
  assert_false(runtok_equal(a, NULL));
  assert_string_equal(runtok_bearer("Bearer abc"), "abc");
  assert_string_equal(runtok_bearer("bearer  abc"), "abc");
  assert_null(runtok_bearer("Basic abc"));
  assert_null(runtok_bearer("Bearer "));
  assert_null(runtok_bearer("Bearer a b"));
  assert_null(runtok_bearer(NULL));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_backoff),
      cmocka_unit_test(test_buffer_bound_and_order),
      cmocka_unit_test(test_encode),
      cmocka_unit_test(test_runtok_hash),
      cmocka_unit_test(test_runtok_new_and_compare),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
