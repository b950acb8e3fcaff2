/* test_gns.c: the two-batch gradient-noise-scale estimator (McCandlish et al. 2018, App. A):
 * exact algebra on noiseless inputs, then b_simple on synthetic per-example gradients with a
 * known mean and covariance against tr(Sigma) / |G|^2 with a Monte Carlo tolerance. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "scaling/gns.h"
#include "base/rng.h"

/* E|G_b|^2 = |G|^2 + tr(Sigma)/b exactly: the estimators must return |G|^2 and tr(Sigma) to
 * rounding (tolerance 1e-12 relative: a handful of flops on O(1) numbers). */
static void test_two_batch_exact(void **state) {
  (void)state;
  double G2 = 4.0, tr = 10.0, bs = 8, bb = 64, g2, s;
  assert_int_equal(td_gns_two_batch(bs, G2 + tr / bs, bb, G2 + tr / bb, &g2, &s, NULL), 0);
  assert_true(fabs(g2 - G2) < 1e-12 * G2);
  assert_true(fabs(s - tr) < 1e-12 * tr);
  td_gns st;
  assert_int_equal(td_gns_init(&st, 0.9, NULL), 0);
  assert_true(isnan(td_gns_b_simple(&st)));
  for (int i = 0; i < 5; i++)
    assert_int_equal(td_gns_update(&st, bs, G2 + tr / bs, bb, G2 + tr / bb, NULL), 0);
  assert_true(fabs(td_gns_b_simple(&st) - tr / G2) < 1e-12);
  /* bias correction: the corrected EMAs equal the constant inputs */
  assert_true(fabs(td_gns_g2(&st) - G2) < 1e-12);
  assert_true(fabs(td_gns_trace(&st) - tr) < 1e-12);
}

static void test_errors(void **state) {
  (void)state;
  td_err e;
  double g2, s;
  td_err_clear(&e);
  assert_int_equal(td_gns_two_batch(8, 1, 8, 1, &g2, &s, &e), TD_EINVAL);
  assert_true(isnan(g2) && isnan(s));
  assert_int_equal(td_gns_two_batch(0, 1, 8, 1, &g2, &s, &e), TD_EINVAL);
  assert_int_equal(td_gns_two_batch(2, -1, 8, 1, &g2, &s, &e), TD_EINVAL);
  assert_int_equal(td_gns_two_batch(2, NAN, 8, 1, &g2, &s, &e), TD_EINVAL);
  td_gns st;
  assert_int_equal(td_gns_init(&st, 1.0, &e), TD_EINVAL);
  assert_string_equal(e.field, "noise_scale.decay");
  assert_int_equal(td_gns_init(&st, 0.5, NULL), 0);
  assert_int_equal(td_gns_update(&st, 4, 1, 2, 1, NULL), TD_EINVAL);
  assert_int_equal((int)st.n, 0); /* unchanged on error */
  /* a non-positive |G|^2 average leaves b_simple undefined */
  assert_int_equal(td_gns_update(&st, 4, 1.0, 8, 2.0, NULL), 0); /* g2_est = 3, S = -8 */
  assert_int_equal(td_gns_update(&st, 4, 5.0, 8, 0.1, NULL), 0); /* g2_est < 0 */
  assert_true(isnan(td_gns_b_simple(&st)));
}

/* Synthetic per-example gradients g_j = G + L z_j, z_j ~ N(0, I), Sigma = L L^T with L lower
 * triangular (correlated coordinates), so tr(Sigma) = ||L||_F^2. Each measurement draws b_big
 * examples; the small batch is the first b_small of them (as on one device in data-parallel
 * training). The estimators stay unbiased although the two batches share examples, because
 * each is linear in E|G_b|^2. */
#define D 12
static void test_b_simple_synthetic(void **state) {
  (void)state;
  double G[D], L[D][D], tr = 0, G2 = 0;
  td_rng r;
  td_rng_init(&r, 42, 0);
  for (int i = 0; i < D; i++) {
    G[i] = 0.3 * (1 + (i % 3));
    G2 += G[i] * G[i];
    for (int j = 0; j < D; j++) {
      L[i][j] = j <= i ? (i == j ? 1.0 + 0.1 * i : 0.2 * td_rng_normal(&r)) : 0.0;
      tr += L[i][j] * L[i][j];
    }
  }
  const double truth = tr / G2;
  const int bs = 4, bb = 32, steps = 20000;
  const double decay = 0.999;
  td_gns st;
  td_gns_init(&st, decay, NULL);
  double sum_g2 = 0, sum_s = 0, sq_g2 = 0, sq_s = 0;
  td_rng_init(&r, 7, 1);
  for (int t = 0; t < steps; t++) {
    double small[D] = {0}, big[D] = {0}, z[D], g[D];
    for (int j = 0; j < bb; j++) {
      for (int i = 0; i < D; i++) z[i] = td_rng_normal(&r);
      for (int i = 0; i < D; i++) {
        g[i] = G[i];
        for (int k = 0; k <= i; k++) g[i] += L[i][k] * z[k];
        big[i] += g[i] / bb;
        if (j < bs) small[i] += g[i] / bs;
      }
    }
    double g2s = td_gns_sqnorm(small, D), g2b = td_gns_sqnorm(big, D), e1, e2;
    assert_int_equal(td_gns_update(&st, bs, g2s, bb, g2b, NULL), 0);
    td_gns_two_batch(bs, g2s, bb, g2b, &e1, &e2, NULL);
    sum_g2 += e1;
    sum_s += e2;
    sq_g2 += e1 * e1;
    sq_s += e2 * e2;
  }
  double mg = sum_g2 / steps, ms = sum_s / steps;
  double sdg = sqrt(sq_g2 / steps - mg * mg), sds = sqrt(sq_s / steps - ms * ms);
  /* Unbiasedness over all steps: within 4 standard errors of the plain means. */
  assert_true(fabs(mg - G2) < 4 * sdg / sqrt(steps));
  assert_true(fabs(ms - tr) < 4 * sds / sqrt(steps));
  /* The EMA ratio: the EMA averages about (1 + d) / (1 - d) = 1999 independent draws; the
   * relative error of a ratio of two means is about sqrt((sd_S/S)^2 + (sd_G/G)^2 / n) (the
   * delta method, ignoring the positive correlation, which only shrinks it). 4 sigma. */
  double ess = (1 + decay) / (1 - decay);
  double rel = sqrt(pow(sds / tr, 2) + pow(sdg / G2, 2)) / sqrt(ess);
  double b = td_gns_b_simple(&st);
  print_message("b_simple %.4f truth %.4f (tolerance %.4f)\n", b, truth, 4 * rel * truth);
  assert_true(fabs(b - truth) < 4 * rel * truth);
  /* And the naive |G_small|^2 would be far off: its expectation is |G|^2 + tr/b_small. */
  assert_true(fabs((G2 + tr / bs) - G2) > 10 * 4 * rel * G2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_batch_exact),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_b_simple_synthetic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
