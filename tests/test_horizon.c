/* test_horizon.c: short-horizon bias (bilevel/horizon.h) against outside references: the
 * noisy quadratic model's own exact moment propagation (scaling/nqm.h) for the loss curve,
 * central finite differences for the schedule hypergradient, a one-step scan for the greedy
 * rate, and the qualitative finding of Wu et al. 2018.
 *
 * Tolerances: the two loss recursions are the same arithmetic up to association (1e-13
 * relative); central differences with h = 1e-6 on this smooth polynomial have error
 * ~1e-9 relative; the greedy rate minimizes a convex quadratic in a, so any neighbour at
 * +-1e-3 relative is strictly worse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bilevel/horizon.h"
#include "scaling/nqm.h"

enum { DIM = 20, T = 80 };

static void setup(double *h, double *c, double *s0, td_horizon_cfg *cfg) {
  for (int i = 0; i < DIM; i++) {
    h[i] = 1.0 / (i + 1);
    c[i] = 0.5 * h[i];
    s0[i] = 1.0;
  }
  *cfg = (td_horizon_cfg){.dim = DIM, .h = h, .c = c, .s0 = s0, .batch = 2, .T = T};
}

static void test_loss_matches_nqm(void **st) {
  (void)st;
  double h[DIM], c[DIM], s0[DIM], a[T], loss[T + 1];
  td_horizon_cfg cfg;
  setup(h, c, s0, &cfg);
  for (int t = 0; t < T; t++) a[t] = 0.7;
  td_horizon_loss(&cfg, a, loss, NULL);
  td_nqm_config nc = {.dim = DIM, .h = h, .c = c, .lr = 0.7, .batch = 2, .init = 1.0};
  td_nqm *q;
  td_err err;
  assert_int_equal(td_nqm_create(&nc, &q, &err), 0);
  for (int t = 0; t <= T; t++) {
    double ref = td_nqm_loss(q, NULL);
    assert_true(fabs(loss[t] - ref) <= 1e-13 * ref);
    td_nqm_step(q);
  }
  td_nqm_destroy(q);
}

static void test_gradient_matches_finite_differences(void **st) {
  (void)st;
  double h[DIM], c[DIM], s0[DIM], a[T], g[T];
  td_horizon_cfg cfg;
  setup(h, c, s0, &cfg);
  for (int t = 0; t < T; t++) a[t] = 0.5 + 0.3 * sin(0.1 * t);
  td_horizon_loss(&cfg, a, NULL, g);
  const int ts[4] = {0, 10, 41, T - 1};
  for (int k = 0; k < 4; k++) {
    int t = ts[k];
    double keep = a[t];
    a[t] = keep + 1e-6;
    double fp = td_horizon_loss(&cfg, a, NULL, NULL);
    a[t] = keep - 1e-6;
    double fm = td_horizon_loss(&cfg, a, NULL, NULL);
    a[t] = keep;
    double fd = (fp - fm) / 2e-6;
    assert_true(fabs(g[t] - fd) <= 1e-7 * fabs(fd) + 1e-14);
  }
}

static void test_greedy_minimizes_one_step(void **st) {
  (void)st;
  double h[DIM], c[DIM], s0[DIM], a[T], loss[T + 1];
  td_horizon_cfg cfg;
  setup(h, c, s0, &cfg);
  td_err err;
  assert_int_equal(td_horizon_greedy(&cfg, a, loss, &err), 0);
  /* replay the first 30 steps; at each, a_t +- 0.1 % gives a larger next loss */
  double s[DIM];
  memcpy(s, s0, sizeof s);
  for (int t = 0; t < 30; t++) {
    double best = 0, lo = 0, hi = 0;
    for (int i = 0; i < DIM; i++) {
      double ai[3] = {a[t], a[t] * 0.999, a[t] * 1.001};
      double v[3];
      for (int k = 0; k < 3; k++) {
        double r = 1 - ai[k] * h[i];
        v[k] = 0.5 * h[i] * (r * r * s[i] + ai[k] * ai[k] * c[i] / 2);
      }
      best += v[0], lo += v[1], hi += v[2];
    }
    assert_true(best < lo && best < hi);
    assert_true(fabs(best - loss[t + 1]) <= 1e-13 * best);
    for (int i = 0; i < DIM; i++) {
      double r = 1 - a[t] * h[i];
      s[i] = r * r * s[i] + a[t] * a[t] * c[i] / 2;
    }
  }
}

/* Wu et al. 2018: the greedy schedule decays too fast and loses at the horizon. */
static void test_short_horizon_bias(void **st) {
  (void)st;
  double h[DIM], c[DIM], s0[DIM], ag[T], af[T], lg[T + 1], lf[T + 1];
  td_horizon_cfg cfg;
  setup(h, c, s0, &cfg);
  td_err err;
  assert_int_equal(td_horizon_greedy(&cfg, ag, lg, &err), 0);
  memcpy(af, ag, sizeof af);
  assert_int_equal(td_horizon_full(&cfg, 500, NULL, af, NULL, &err), 0);
  td_horizon_loss(&cfg, af, lf, NULL);
  assert_true(lf[T] < 0.9 * lg[T]);
  assert_true(ag[T / 2] < af[T / 2]);
  /* the greedy curve is lower early (it optimizes the next step), the full one at the end */
  assert_true(lg[5] < lf[5]);
  /* the full schedule is a stationary point: its hypergradient is small */
  double g[T], gn = 0;
  td_horizon_loss(&cfg, af, NULL, g);
  for (int t = 0; t < T; t++) gn = fmax(gn, fabs(af[t] * g[t]) / lf[T]);
  assert_true(gn < 1e-4);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_loss_matches_nqm),
      cmocka_unit_test(test_gradient_matches_finite_differences),
      cmocka_unit_test(test_greedy_minimizes_one_step),
      cmocka_unit_test(test_short_horizon_bias),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
