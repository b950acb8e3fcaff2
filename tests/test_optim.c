/* test_optim.c: closed-form first (and second) steps of every optimizer, the weight-decay
 * conventions, heavy ball and Nesterov on a 1-D quadratic against their closed-form linear
 * recurrences, and argument errors. Tolerance 1e-14 relative: the formulas are evaluated
 * in a different but algebraically equal order (a few roundings). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "../core/optim.h"

#define N 4
static const double P0[N] = {1.0, -2.0, 0.5, 3.0};
static const double G1[N] = {0.3, -0.1, 2.0, -4.0};
static const double G2[N] = {-0.2, 0.7, 1.0, 0.5};

static void near(double got, double want, int i) {
  if (!(fabs(got - want) <= 1e-14 * fabs(want) + 1e-15))
    fail_msg("p[%d]: got %.17g want %.17g", i, got, want);
}

static td_optim *make(const char *name, td_optim_hp hp) {
  td_optim *o = NULL;
  td_err err;
  if (td_optim_create(name, &hp, N, &o, &err)) fail_msg("create %s: %s", name, err.msg);
  return o;
}

static void test_sgd(void **state) {
  (void)state;
  double lr = 0.1, wd = 0.01, p[N];
  td_optim_hp hp = td_optim_hp_default();
  hp.weight_decay = wd;
  td_optim *o = make("sgd", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++) near(p[i], P0[i] - lr * (G1[i] + wd * P0[i]), i); /* coupled L2 */
  td_optim_destroy(o);
}

static void test_sgd_momentum(void **state) {
  (void)state;
  double lr = 0.1, mu = 0.9, p[N], p1[N];
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = mu;
  td_optim *o = make("sgd", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++) near(p[i], P0[i] - lr * G1[i], i); /* buf_1 = g_1 (PyTorch) */
  memcpy(p1, p, sizeof p);
  td_optim_step(o, p, G2, lr);
  for (int i = 0; i < N; i++) near(p[i], p1[i] - lr * (mu * G1[i] + G2[i]), i);
  assert_int_equal(td_optim_steps(o), 2);
  td_optim_reset(o);
  assert_int_equal(td_optim_steps(o), 0);
  td_optim_destroy(o);
  /* dampening applies from the second step: buf_2 = mu buf_1 + (1 - tau) g_2 */
  hp.dampening = 0.5;
  o = make("sgd", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  memcpy(p1, p, sizeof p);
  td_optim_step(o, p, G2, lr);
  for (int i = 0; i < N; i++) near(p[i], p1[i] - lr * (mu * G1[i] + 0.5 * G2[i]), i);
  td_optim_destroy(o);
}

static void test_sgd_nesterov(void **state) {
  (void)state;
  double lr = 0.05, mu = 0.8, p[N], p1[N];
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = mu;
  hp.nesterov = 1;
  td_optim *o = make("sgd", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++) near(p[i], P0[i] - lr * (G1[i] + mu * G1[i]), i);
  memcpy(p1, p, sizeof p);
  td_optim_step(o, p, G2, lr);
  for (int i = 0; i < N; i++) {
    double buf = mu * G1[i] + G2[i];
    near(p[i], p1[i] - lr * (G2[i] + mu * buf), i);
  }
  td_optim_destroy(o);
}

/* Adam's first step: m = (1-b1) g, v = (1-b2) g^2, bias corrections give m^ = g, v^ = g^2:
 * p1 = p0 - lr g / (|g| + eps) (Kingma and Ba 2015, Algorithm 1). */
static void test_adam(void **state) {
  (void)state;
  double lr = 1e-3, p[N], p1[N];
  td_optim_hp hp = td_optim_hp_default();
  hp.eps = 1e-3; /* large enough to matter in the check */
  td_optim *o = make("adam", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++) near(p[i], P0[i] - lr * G1[i] / (fabs(G1[i]) + hp.eps), i);
  /* second step by the formula */
  memcpy(p1, p, sizeof p);
  td_optim_step(o, p, G2, lr);
  for (int i = 0; i < N; i++) {
    double b1 = hp.beta1, b2 = hp.beta2;
    double m = b1 * (1 - b1) * G1[i] + (1 - b1) * G2[i];
    double v = b2 * (1 - b2) * G1[i] * G1[i] + (1 - b2) * G2[i] * G2[i];
    double mh = m / (1 - b1 * b1), vh = v / (1 - b2 * b2);
    near(p[i], p1[i] - lr * mh / (sqrt(vh) + hp.eps), i);
  }
  td_optim_destroy(o);
  /* coupled L2 for adam: the first step uses g + wd p */
  hp.weight_decay = 0.1;
  o = make("adam", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++) {
    double g = G1[i] + 0.1 * P0[i];
    near(p[i], P0[i] - lr * g / (fabs(g) + hp.eps), i);
  }
  td_optim_destroy(o);
}

/* AdamW (decoupled, PyTorch): p1 = p0 (1 - lr wd) - lr g / (|g| + eps). */
static void test_adamw(void **state) {
  (void)state;
  double lr = 1e-2, wd = 0.5, p[N];
  td_optim_hp hp = td_optim_hp_default();
  hp.weight_decay = wd;
  td_optim *o = make("adamw", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++)
    near(p[i], P0[i] * (1 - lr * wd) - lr * G1[i] / (fabs(G1[i]) + hp.eps), i);
  td_optim_destroy(o);
}

/* On f(p) = h p^2 / 2, heavy ball (PyTorch form) gives v_t = mu v_{t-1} + h p_{t-1},
 * p_t = p_{t-1} - lr v_t: the linear recurrence p_{t+1} = (1 + mu - lr h) p_t - mu p_{t-1}.
 * Nesterov: p_{t+1} = (1 + mu)(1 - lr h) p_t - mu (1 - lr h) p_{t-1}. Checked for 50 steps
 * (relative 1e-12: the recurrences are stable here, |roots| < 1, so rounding stays small). */
static void test_quadratic_recurrences(void **state) {
  (void)state;
  const double h = 2.0, lr = 0.1, mu = 0.7;
  for (int nes = 0; nes < 2; nes++) {
    td_optim_hp hp = td_optim_hp_default();
    hp.momentum = mu;
    hp.nesterov = nes;
    td_optim *o = NULL;
    assert_int_equal(td_optim_create("sgd", &hp, 1, &o, NULL), 0);
    double p = 1.0, g;
    double prev = 1.0, cur;
    g = h * p;
    td_optim_step(o, &p, &g, lr);
    cur = nes ? 1.0 - lr * h * (1 + mu) : 1.0 - lr * h; /* first step: buf = g */
    assert_true(fabs(p - cur) < 1e-15);
    for (int t = 0; t < 50; t++) {
      g = h * p;
      td_optim_step(o, &p, &g, lr);
      double next = nes ? (1 + mu) * (1 - lr * h) * cur - mu * (1 - lr * h) * prev
                        : (1 + mu - lr * h) * cur - mu * prev;
      prev = cur;
      cur = next;
      if (!(fabs(p - cur) <= 1e-12 * fabs(cur) + 1e-18)) fail_msg("nes=%d t=%d %g vs %g", nes, t, p, cur);
    }
    td_optim_destroy(o);
  }
}

static void test_errors(void **state) {
  (void)state;
  td_optim *o = (td_optim *)1;
  td_err err;
  td_optim_hp hp = td_optim_hp_default();
  assert_int_equal(td_optim_create("lion", &hp, 3, &o, &err), TD_EINVAL);
  assert_null(o);
  assert_string_equal(err.field, "params.optimizer.name");
  hp.nesterov = 1;
  assert_int_equal(td_optim_create("sgd", &hp, 3, &o, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.nesterov");
  hp = td_optim_hp_default();
  hp.beta2 = 1.0;
  assert_int_equal(td_optim_create("adam", &hp, 3, &o, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.beta2");
  hp = td_optim_hp_default();
  hp.weight_decay = -1;
  assert_int_equal(td_optim_create("adamw", &hp, 3, &o, &err), TD_EINVAL);
  assert_int_equal(td_optim_create("adamw", NULL, 3, &o, &err), 0);
  assert_string_equal(td_optim_name(o), "adamw");
  assert_non_null(td_optim_state(o, 1));
  td_optim_destroy(o);
  td_optim_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd),       cmocka_unit_test(test_sgd_momentum),
      cmocka_unit_test(test_sgd_nesterov), cmocka_unit_test(test_adam),
      cmocka_unit_test(test_adamw),     cmocka_unit_test(test_quadratic_recurrences),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
