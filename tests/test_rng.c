/* test_rng.c: Philox4x32-10 known answers, reproducibility per seed and stream, and coarse
 * distribution checks (moments with tolerances of several standard errors). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"

/* Random123 kat_vectors, "philox4x32 10" lines: counter[4] key[2] -> output[4]. Exact. */
static void test_philox_kat(void **state) {
  (void)state;
  static const uint32_t v[3][10] = {
      {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
      {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
       0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
      {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
       0x94fdcceb, 0x5001e420, 0x24126ea1},
  };
  for (int i = 0; i < 3; i++) {
    uint32_t out[4];
    td_rng_philox4x32_10(v[i], v[i] + 4, out);
    for (int j = 0; j < 4; j++) assert_int_equal(out[j], v[i][6 + j]);
  }
}

static void test_reproducible(void **state) {
  (void)state;
  td_rng a, b, c;
  td_rng_init(&a, 42, TD_RNG_INIT);
  td_rng_init(&b, 42, TD_RNG_INIT);
  td_rng_init(&c, 43, TD_RNG_INIT);
  int differ = 0;
  for (int i = 0; i < 1000; i++) {
    double x = td_rng_normal(&a), y = td_rng_normal(&b), z = td_rng_normal(&c);
    assert_true(x == y); /* bitwise: same seed, same stream */
    differ += x != z;
  }
  assert_true(differ > 990);
  /* Streams of one seed differ. */
  td_rng_init(&a, 42, TD_RNG_INIT);
  td_rng_init(&b, 42, TD_RNG_DATA);
  int same = 0;
  for (int i = 0; i < 100; i++) same += td_rng_u64(&a) == td_rng_u64(&b);
  assert_int_equal(same, 0);
  /* Copying the state forks it. */
  td_rng_init(&a, 7, 1);
  td_rng_u32(&a);
  b = a;
  for (int i = 0; i < 10; i++) assert_true(td_rng_u64(&a) == td_rng_u64(&b));
}

/* Moments of 1e5 draws: tolerances are 5 standard errors of the estimates. */
static void test_uniform_normal_moments(void **state) {
  (void)state;
  td_rng r;
  td_rng_init(&r, 1, 2);
  const int n = 100000;
  double su = 0, su2 = 0, sn = 0, sn2 = 0, sn4 = 0;
  for (int i = 0; i < n; i++) {
    double u = td_rng_uniform(&r);
    assert_true(u >= 0.0 && u < 1.0);
    su += u;
    su2 += u * u;
    double z = td_rng_normal(&r);
    sn += z;
    sn2 += z * z;
    sn4 += z * z * z * z;
  }
  assert_true(fabs(su / n - 0.5) < 5 * sqrt(1.0 / 12 / n));
  assert_true(fabs(su2 / n - 1.0 / 3) < 5 * sqrt(4.0 / 45 / n));
  assert_true(fabs(sn / n) < 5 / sqrt((double)n));
  assert_true(fabs(sn2 / n - 1.0) < 5 * sqrt(2.0 / n));
  assert_true(fabs(sn4 / n - 3.0) < 5 * sqrt(96.0 / n));
}

static void test_below_and_shuffle(void **state) {
  (void)state;
  td_rng r;
  td_rng_init(&r, 3, 3);
  int counts[7] = {0};
  const int n = 70000;
  for (int i = 0; i < n; i++) {
    uint64_t x = td_rng_below(&r, 7);
    assert_true(x < 7);
    counts[x]++;
  }
  /* Each count ~ Binomial(n, 1/7): sd = sqrt(n p (1-p)) ~ 92; allow 5 sd. */
  for (int i = 0; i < 7; i++) assert_true(abs(counts[i] - 10000) < 5 * 92);
  assert_int_equal(td_rng_below(&r, 1), 0);
  assert_int_equal(td_rng_below(&r, 0), 0);
  /* A huge n near 2^64 stays in range. */
  for (int i = 0; i < 100; i++) assert_true(td_rng_below(&r, UINT64_MAX - 5) < UINT64_MAX - 5);

  size_t idx[100];
  for (size_t i = 0; i < 100; i++) idx[i] = i;
  td_rng_shuffle(&r, idx, 100);
  int seen[100] = {0}, fixed = 0;
  for (size_t i = 0; i < 100; i++) {
    assert_true(idx[i] < 100);
    seen[idx[i]]++;
    fixed += idx[i] == i;
  }
  for (int i = 0; i < 100; i++) assert_int_equal(seen[i], 1); /* a permutation */
  assert_true(fixed < 10); /* expected 1 fixed point; P(>= 10) is about 1e-7 */
  /* Same seed, same permutation. */
  size_t a[50], b[50];
  td_rng ra, rb;
  td_rng_init(&ra, 9, TD_RNG_SHUFFLE);
  td_rng_init(&rb, 9, TD_RNG_SHUFFLE);
  for (size_t i = 0; i < 50; i++) a[i] = b[i] = i;
  td_rng_shuffle(&ra, a, 50);
  td_rng_shuffle(&rb, b, 50);
  assert_memory_equal(a, b, sizeof a);
}

/* Position 0 of a uniform shuffle of 4 items is uniform: chi-square-free check of counts. */
static void test_shuffle_uniform(void **state) {
  (void)state;
  td_rng r;
  td_rng_init(&r, 11, 0);
  int count[4] = {0};
  for (int t = 0; t < 40000; t++) {
    size_t idx[4] = {0, 1, 2, 3};
    td_rng_shuffle(&r, idx, 4);
    count[idx[0]]++;
  }
  for (int i = 0; i < 4; i++) assert_true(abs(count[i] - 10000) < 5 * 87); /* sd ~ 87 */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_philox_kat),
      cmocka_unit_test(test_reproducible),
      cmocka_unit_test(test_uniform_normal_moments),
      cmocka_unit_test(test_below_and_shuffle),
      cmocka_unit_test(test_shuffle_uniform),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
