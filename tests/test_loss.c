/* test_loss.c: cross-entropy and squared error: closed forms, finite-difference gradients,
 * numerical stability at extreme logits, accuracy counting.
 * Tolerances: closed forms to 1e-14 relative (a few roundings); central differences with
 * h = 1e-5 on smooth O(1) functions: truncation ~h^2 = 1e-10, rounding ~eps/h = 1e-11; we
 * allow 1e-7 absolute. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "nn/loss.h"
#include "base/rng.h"

static void test_xent_closed_form(void **state) {
  (void)state;
  /* Equal logits: loss = log K exactly in exact arithmetic; gradient (1/K - onehot)/B. */
  double z[2 * 4] = {0}, dz[8];
  int y[2] = {1, 3};
  double l;
  td_loss_xent(&l, dz, z, y, 2, 4);
  assert_true(fabs(l - log(4.0)) < 1e-14);
  for (int i = 0; i < 8; i++) {
    double want = (0.25 - ((i == 1 || i == 7) ? 1.0 : 0.0)) / 2;
    assert_true(fabs(dz[i] - want) < 1e-15);
  }
  /* Two classes, z = (a, 0), y = 0: loss = log(1 + e^-a) = softplus(-a). */
  double z2[2] = {1.5, 0.0};
  int y0 = 0;
  td_loss_xent(&l, NULL, z2, &y0, 1, 2);
  assert_true(fabs(l - log1p(exp(-1.5))) < 1e-15);
}

static void test_xent_stable(void **state) {
  (void)state;
  double z[2] = {1000.0, 0.0}, dz[2], l;
  int y = 0;
  td_loss_xent(&l, dz, z, &y, 1, 2);
  assert_true(isfinite(l) && l >= 0 && l < 1e-300 + 1e-16);
  y = 1;
  td_loss_xent(&l, dz, z, &y, 1, 2);
  assert_true(fabs(l - 1000.0) < 1e-12);
  assert_true(fabs(dz[0] - 1.0) < 1e-15 && fabs(dz[1] + 1.0) < 1e-15);
  double zm[2] = {-1000.0, -1000.0}; /* exp(-1000) underflows: the shift must happen */
  td_loss_xent(&l, dz, zm, &y, 1, 2);
  assert_true(fabs(l - log(2.0)) < 1e-13);
  /* Non-finite logits give a non-finite loss (divergence detection relies on it). */
  double zn[2] = {NAN, 0.0};
  td_loss_xent(&l, dz, zn, &y, 1, 2);
  assert_true(!isfinite(l));
  double zi[2] = {INFINITY, 0.0};
  td_loss_xent(&l, dz, zi, &y, 1, 2);
  assert_true(!isfinite(l));
}

static void fd_check(int which) {
  enum { B = 4, K = 5 };
  td_rng r;
  td_rng_init(&r, 10 + which, 0);
  double z[B * K], t[B * K], dz[B * K];
  int y[B];
  td_rng_fill_normal(&r, z, B * K, 2.0);
  td_rng_fill_normal(&r, t, B * K, 1.0);
  for (int i = 0; i < B; i++) y[i] = (int)td_rng_below(&r, K);
  double l;
#define EVAL(L, D)                                                  \
  do {                                                              \
    if (which == 0) td_loss_xent(L, D, z, y, B, K);                 \
    else if (which == 1) td_loss_mse(L, D, z, t, B, K);             \
    else td_loss_mse_onehot(L, D, z, y, B, K);                      \
  } while (0)
  EVAL(&l, dz);
  const double h = 1e-5;
  for (int i = 0; i < B * K; i++) {
    double z0 = z[i], lp, lm;
    z[i] = z0 + h;
    EVAL(&lp, NULL);
    z[i] = z0 - h;
    EVAL(&lm, NULL);
    z[i] = z0;
    double fd = (lp - lm) / (2 * h);
    if (fabs(fd - dz[i]) > 1e-7) fail_msg("loss %d: dz[%d] = %.12g, fd %.12g", which, i, dz[i], fd);
  }
#undef EVAL
}

static void test_xent_fd(void **s) { (void)s; fd_check(0); }
static void test_mse_fd(void **s) { (void)s; fd_check(1); }
static void test_mse_onehot_fd(void **s) { (void)s; fd_check(2); }

static void test_mse_closed_form(void **state) {
  (void)state;
  /* 1/2 * mean over 2 examples of squared norms: (1/2) * ((1+4) + 9) / 2 = 3.5. */
  double f[4] = {1, 2, 0, 3}, t[4] = {0, 0, 0, 0}, df[4], l;
  td_loss_mse(&l, df, f, t, 2, 2);
  assert_true(l == 3.5);
  assert_true(df[1] == 1.0 && df[3] == 1.5);
  int y[2] = {0, 1};
  td_loss_mse_onehot(&l, df, f, y, 2, 2);
  /* residuals (0, 2), (0, 2): (1/2)(4 + 4)/2 = 2 */
  assert_true(l == 2.0);
  /* one-hot variant equals the explicit-target one */
  double T[4] = {1, 0, 0, 1}, l2, df2[4];
  td_loss_mse(&l2, df2, f, T, 2, 2);
  assert_true(l == l2);
  assert_memory_equal(df, df2, sizeof df);
}

static void test_softmax_and_accuracy(void **state) {
  (void)state;
  double z[6] = {1, 2, 3, 5, 5, 0}, p[6];
  td_softmax_rows(p, z, 2, 3);
  assert_true(fabs(p[0] + p[1] + p[2] - 1) < 1e-15);
  assert_true(fabs(p[2] / p[1] - exp(1.0)) < 1e-13);
  int y[2] = {2, 0};
  assert_int_equal(td_count_correct(z, y, 2, 3), 2); /* tie 5,5 goes to class 0 */
  y[1] = 1;
  assert_int_equal(td_count_correct(z, y, 2, 3), 1);
  double zn[3] = {NAN, 1, 0};
  int yn = 1;
  assert_int_equal(td_count_correct(zn, &yn, 1, 3), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_xent_closed_form),  cmocka_unit_test(test_xent_stable),
      cmocka_unit_test(test_xent_fd),           cmocka_unit_test(test_mse_fd),
      cmocka_unit_test(test_mse_onehot_fd),     cmocka_unit_test(test_mse_closed_form),
      cmocka_unit_test(test_softmax_and_accuracy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
