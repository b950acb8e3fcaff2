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
  /* without replacement from n: E|G_b|^2 = |G|^2 + tr (n-b)/(b(n-1)) (Cochran 1977, Thm 2.2) */
  const double n = 100;
  double es = G2 + tr * (n - bs) / (bs * (n - 1)), eb = G2 + tr * (n - bb) / (bb * (n - 1));
  assert_int_equal(td_gns_two_batch_pop(bs, es, bb, eb, n, &g2, &s, NULL), 0);
  assert_true(fabs(g2 - G2) < 1e-12 * G2);
  assert_true(fabs(s - tr) < 1e-12 * tr);
  /* b = n: the whole population, no noise: E|G_n|^2 = |G|^2 */
  assert_int_equal(td_gns_two_batch_pop(bs, es, n, G2, n, &g2, &s, NULL), 0);
  assert_true(fabs(g2 - G2) < 1e-12 * G2 && fabs(s - tr) < 1e-12 * tr);
  assert_int_equal(td_gns_init(&st, 0.9, NULL), 0);
  assert_int_equal(td_gns_set_population(&st, n, NULL), 0);
  for (int i = 0; i < 5; i++) assert_int_equal(td_gns_update(&st, bs, es, bb, eb, NULL), 0);
  assert_true(fabs(td_gns_b_simple(&st) - tr / G2) < 1e-12);
  /* errors: b_big above the population, a population below 2 */
  assert_int_equal(td_gns_two_batch_pop(bs, es, 101, eb, n, &g2, &s, NULL), TD_EINVAL);
  assert_int_equal(td_gns_set_population(&st, 1, NULL), TD_EINVAL);
  assert_int_equal(td_gns_set_population(&st, NAN, NULL), TD_EINVAL);
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
  /* a negative tr(Sigma) average (|G_small|^2 < |G_big|^2) with a positive |G|^2 one: the
   * ratio would be negative, which is not a noise scale: NaN too */
  assert_int_equal(td_gns_init(&st, 0.5, NULL), 0);
  assert_int_equal(td_gns_update(&st, 4, 1.0, 8, 2.0, NULL), 0); /* g2_est = 3, S = -8 */
  assert_true(td_gns_g2(&st) > 0 && td_gns_trace(&st) < 0);
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
  /* The bias-corrected EMAs themselves: each averages about `ess` draws, so its standard
   * error is sd / sqrt(ess); 4 sigma. */
  assert_true(fabs(td_gns_g2(&st) - G2) < 4 * sdg / sqrt(ess));
  assert_true(fabs(td_gns_trace(&st) - tr) < 4 * sds / sqrt(ess));
}

/* A finite population of n = 1000 per-example gradients (D = 12) built so that its true
 * B_simple = tr(S) / |G|^2 = 100, with S the population covariance (divisor n), both computed
 * densely from the population here. Each draw takes b_big DISTINCT examples (partial
 * Fisher-Yates, as the train kind does), b_small = the first of them. With the population size
 * set, the estimates must be unbiased: the ratio of the mean estimates must be 100 within its
 * Monte Carlo error (the i.i.d. formulas give 100 n/(n-1) / (1 - 100/(n-1)) = 111.2). */
#define NPOP 1000
static void test_b_simple_finite_population(void **state) {
  (void)state;
  static double P[NPOP][D];
  double G[D], mz[D] = {0};
  td_rng r;
  td_rng_init(&r, 11, 0);
  for (int j = 0; j < NPOP; j++)
    for (int i = 0; i < D; i++) P[j][i] = td_rng_normal(&r) * (1.0 + 0.2 * i), mz[i] += P[j][i];
  double G2 = 0, q = 0;
  for (int i = 0; i < D; i++) G[i] = 0.1 * (1 + i % 4), G2 += G[i] * G[i];
  for (int j = 0; j < NPOP; j++)
    for (int i = 0; i < D; i++) P[j][i] -= mz[i] / NPOP, q += P[j][i] * P[j][i] / NPOP;
  const double a = sqrt(100.0 * G2 / q);
  for (int j = 0; j < NPOP; j++)
    for (int i = 0; i < D; i++) P[j][i] = G[i] + a * P[j][i];
  /* the reference, from the population itself */
  double mean[D] = {0}, trS = 0, g2ref = 0;
  for (int j = 0; j < NPOP; j++)
    for (int i = 0; i < D; i++) mean[i] += P[j][i] / NPOP;
  for (int j = 0; j < NPOP; j++)
    for (int i = 0; i < D; i++) trS += (P[j][i] - mean[i]) * (P[j][i] - mean[i]) / NPOP;
  for (int i = 0; i < D; i++) g2ref += mean[i] * mean[i];
  const double truth = trS / g2ref;
  assert_true(fabs(truth - 100) < 1e-9);

  const int bs = 16, bb = 128, draws = 40000;
  const double decay = 0.9995;
  td_gns st;
  assert_int_equal(td_gns_init(&st, decay, NULL), 0);
  assert_int_equal(td_gns_set_population(&st, NPOP, NULL), 0);
  static size_t idx[NPOP];
  for (int j = 0; j < NPOP; j++) idx[j] = (size_t)j;
  static double eg[40000], es[40000];
  double sg = 0, ss = 0;
  td_rng_init(&r, 12, 1);
  for (int t = 0; t < draws; t++) {
    double small[D] = {0}, big[D] = {0};
    for (int k = 0; k < bb; k++) {
      size_t j = (size_t)k + (size_t)td_rng_below(&r, (uint64_t)(NPOP - k));
      size_t tmp = idx[k];
      idx[k] = idx[j], idx[j] = tmp;
      for (int i = 0; i < D; i++) {
        big[i] += P[idx[k]][i] / bb;
        if (k < bs) small[i] += P[idx[k]][i] / bs;
      }
    }
    double g2s = td_gns_sqnorm(small, D), g2b = td_gns_sqnorm(big, D);
    assert_int_equal(td_gns_update(&st, bs, g2s, bb, g2b, NULL), 0);
    assert_int_equal(td_gns_two_batch_pop(bs, g2s, bb, g2b, NPOP, &eg[t], &es[t], NULL), 0);
    sg += eg[t], ss += es[t];
  }
  const double mg = sg / draws, ms = ss / draws, ratio = ms / mg;
  /* ratio-estimator standard error (delta method, with the covariance of the two estimates):
   * se = sqrt(sum (S_i - ratio G_i)^2 / (N (N - 1))) / mean G */
  double v = 0, vg = 0, vs = 0;
  for (int t = 0; t < draws; t++) {
    v += (es[t] - ratio * eg[t]) * (es[t] - ratio * eg[t]);
    vg += (eg[t] - mg) * (eg[t] - mg), vs += (es[t] - ms) * (es[t] - ms);
  }
  const double se = sqrt(v / ((double)draws * (draws - 1))) / mg;
  const double seg = sqrt(vg / ((double)draws * (draws - 1)));
  const double ses = sqrt(vs / ((double)draws * (draws - 1)));
  print_message("finite population: mean-estimate ratio %.3f +- %.3f (truth %.3f); "
                "|G|^2 %.5f +- %.5f (%.5f); tr %.4f +- %.4f (%.4f); EMA b_simple %.3f\n",
                ratio, se, truth, mg, seg, g2ref, ms, ses, trS, td_gns_b_simple(&st));
  assert_true(fabs(mg - g2ref) < 4 * seg);
  assert_true(fabs(ms - trS) < 4 * ses);
  assert_true(fabs(ratio - truth) < 4 * se);
  /* the test can tell the i.i.d. formulas' 111.2 from 100 */
  assert_true(11.2 > 8 * se);
  /* the EMA ratio averages about (1 + d)/(1 - d) = 3999 draws: its error is about
   * se * sqrt(draws / 3999); 4 sigma */
  const double se_ema = se * sqrt(draws / ((1 + decay) / (1 - decay)));
  assert_true(fabs(td_gns_b_simple(&st) - truth) < 4 * se_ema);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_batch_exact),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_b_simple_synthetic),
      cmocka_unit_test(test_b_simple_finite_population),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
