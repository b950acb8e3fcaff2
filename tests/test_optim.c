/* test_optim.c: closed-form first (and second) steps of every optimizer (sgd, heavy_ball,
 * nesterov, adagrad, rmsprop, adam, adamw), the weight-decay conventions, heavy ball and
 * Nesterov on 1-D and 2-D quadratics against their closed-form linear iterations (recurrence
 * and matrix power per eigen-direction), and argument errors. Tolerance 1e-14 relative: the formulas are evaluated
 * in a different but algebraically equal order (a few roundings). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "optim/optim.h"

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

/* Adam's first step with the default eps is lr * sign(g) to within lr * eps / |g| (plus
 * 1e-15 for the rounding of p0 - p1 at |p| ~ 3). */
static void test_adam_sign(void **state) {
  (void)state;
  double lr = 0.01, p[N];
  td_optim *o = make("adam", td_optim_hp_default());
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++) {
    double s = G1[i] > 0 ? 1.0 : -1.0;
    if (!(fabs((P0[i] - p[i]) - lr * s) <= lr * 1e-8 / fabs(G1[i]) + 1e-15))
      fail_msg("p[%d]: step %.17g vs lr sign(g) %.17g", i, P0[i] - p[i], lr * s);
  }
  td_optim_destroy(o);
}

/* Adagrad (Duchi et al. 2011; torch.optim.Adagrad): s1 = a + g1^2, p1 = p0 - lr g1 /
 * (sqrt(s1) + eps) (= lr g/(|g| + eps) for a = 0); then s2 = s1 + g2^2 with
 * clr = lr / (1 + lr_decay). Coupled L2 and reset back to the initial accumulator. */
static void test_adagrad(void **state) {
  (void)state;
  double lr = 0.1, p[N], p1[N];
  td_optim_hp hp = td_optim_hp_default();
  hp.eps = 1e-3;
  td_optim *o = make("adagrad", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++) near(p[i], P0[i] - lr * G1[i] / (fabs(G1[i]) + hp.eps), i);
  td_optim_destroy(o);
  hp.lr_decay = 0.5;
  hp.initial_accumulator = 0.2;
  hp.weight_decay = 0.1;
  o = make("adagrad", hp);
  for (int rep = 0; rep < 2; rep++) { /* the second pass runs after td_optim_reset */
    memcpy(p, P0, sizeof p);
    td_optim_step(o, p, G1, lr);
    double s[N];
    for (int i = 0; i < N; i++) {
      double g = G1[i] + 0.1 * P0[i];
      s[i] = 0.2 + g * g;
      near(p[i], P0[i] - lr * g / (sqrt(s[i]) + hp.eps), i);
    }
    memcpy(p1, p, sizeof p);
    td_optim_step(o, p, G2, lr);
    for (int i = 0; i < N; i++) {
      double g = G2[i] + 0.1 * p1[i];
      near(p[i], p1[i] - lr / 1.5 * g / (sqrt(s[i] + g * g) + hp.eps), i);
    }
    td_optim_reset(o);
  }
  td_optim_destroy(o);
}

/* RMSprop (Tieleman and Hinton 2012; torch.optim.RMSprop), first steps in closed form:
 *  plain:     v1 = (1-a) g^2,           p1 = p0 - lr g / (sqrt(1-a) |g| + eps)
 *  centered:  v1 - m1^2 = a (1-a) g^2,  p1 = p0 - lr g / (sqrt(a (1-a)) |g| + eps)
 *  momentum:  buf1 = g / den1, buf2 = mu buf1 + g2 / den2 with v2 = a v1 + (1-a) g2^2. */
static void test_rmsprop(void **state) {
  (void)state;
  double lr = 0.01, a = 0.9, p[N], p1[N];
  td_optim_hp hp = td_optim_hp_default();
  hp.alpha = a;
  hp.eps = 1e-3;
  td_optim *o = make("rmsprop", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++)
    near(p[i], P0[i] - lr * G1[i] / (sqrt(1 - a) * fabs(G1[i]) + hp.eps), i);
  td_optim_destroy(o);
  hp.centered = 1;
  o = make("rmsprop", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  for (int i = 0; i < N; i++)
    near(p[i], P0[i] - lr * G1[i] / (sqrt(a * (1 - a)) * fabs(G1[i]) + hp.eps), i);
  td_optim_destroy(o);
  hp.centered = 0;
  hp.momentum = 0.5;
  o = make("rmsprop", hp);
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  memcpy(p1, p, sizeof p);
  td_optim_step(o, p, G2, lr);
  for (int i = 0; i < N; i++) {
    double v1 = (1 - a) * G1[i] * G1[i], v2 = a * v1 + (1 - a) * G2[i] * G2[i];
    double b1 = G1[i] / (sqrt(v1) + hp.eps), b2 = 0.5 * b1 + G2[i] / (sqrt(v2) + hp.eps);
    near(p1[i], P0[i] - lr * b1, i);
    near(p[i], p1[i] - lr * b2, i);
  }
  assert_int_equal(td_optim_state_count("rmsprop", &hp), 2);
  td_optim_destroy(o);
}

/* 2x2 matrices, row-major. */
static void mat2_mul(double *c, const double *a, const double *b) {
  double r[4] = {a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
                 a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3]};
  memcpy(c, r, sizeof r);
}
/* out = M^k by binary exponentiation (a different order of roundings than the iteration). */
static void mat2_pow(double *out, const double *M, int k) {
  double r[4] = {1, 0, 0, 1}, b[4];
  memcpy(b, M, sizeof b);
  for (; k > 0; k >>= 1) {
    if (k & 1) mat2_mul(r, r, b);
    mat2_mul(b, b, b);
  }
  memcpy(out, r, sizeof r);
}

/* Heavy ball and Nesterov on f(p) = 1/2 p^T A p, A = Q diag(h1, h2) Q^T (Q a rotation), run
 * in the original coordinates; in each eigen-direction x = q_j . p the iterates follow the
 * linear two-step recurrence [x_{t+1}; x_t] = M [x_t; x_{t-1}]:
 *   heavy ball (Polyak; and sgd+momentum, PyTorch form, at constant lr):
 *       M = [[1 + mu - lr h, -mu], [1, 0]],        from [x_0; x_0] (no previous step);
 *   Nesterov (PyTorch form, buf_1 = g_1):
 *       M = [[(1 + mu)(1 - lr h), -mu (1 - lr h)], [1, 0]], from [x_1; x_0] with
 *       x_1 = (1 - lr h (1 + mu)) x_0.
 * After k = 40 steps the iterate must equal M^k applied to the start, per direction, to 1e-12
 * relative to |x_0| (the iteration is stable: spectral radius < 1, so roundings stay ~1e-15). */
static void test_quadratic_2d(void **state) {
  (void)state;
  const double h[2] = {3.0, 0.25}, th = 0.6, lr = 0.2, mu = 0.8;
  const double q[2][2] = {{cos(th), sin(th)}, {-sin(th), cos(th)}}; /* rows: eigenvectors */
  double A[4] = {0};
  for (int j = 0; j < 2; j++)
    for (int r = 0; r < 2; r++)
      for (int c = 0; c < 2; c++) A[r * 2 + c] += h[j] * q[j][r] * q[j][c];
  const char *names[3] = {"heavy_ball", "sgd", "nesterov"};
  for (int v = 0; v < 3; v++) {
    td_optim_hp hp = td_optim_hp_default();
    hp.momentum = mu;
    td_optim *o = NULL;
    assert_int_equal(td_optim_create(names[v], &hp, 2, &o, NULL), 0);
    double p[2] = {1.0, -2.0}, x0[2], x1[2];
    for (int j = 0; j < 2; j++) x0[j] = q[j][0] * p[0] + q[j][1] * p[1];
    const int k = 40;
    for (int t = 0; t < k; t++) {
      double g[2] = {A[0] * p[0] + A[1] * p[1], A[2] * p[0] + A[3] * p[1]};
      td_optim_step(o, p, g, lr);
    }
    for (int j = 0; j < 2; j++) {
      double x = q[j][0] * p[0] + q[j][1] * p[1], M[4], Mk[4], want;
      if (v < 2) {
        double m[4] = {1 + mu - lr * h[j], -mu, 1, 0};
        memcpy(M, m, sizeof m);
        mat2_pow(Mk, M, k);
        want = Mk[0] * x0[j] + Mk[1] * x0[j];
      } else {
        double m[4] = {(1 + mu) * (1 - lr * h[j]), -mu * (1 - lr * h[j]), 1, 0};
        memcpy(M, m, sizeof m);
        x1[j] = (1 - lr * h[j] * (1 + mu)) * x0[j];
        mat2_pow(Mk, M, k - 1);
        want = Mk[0] * x1[j] + Mk[1] * x0[j];
      }
      if (!(fabs(x - want) <= 1e-12 * fabs(x0[j])))
        fail_msg("%s direction %d: %.17g vs %.17g", names[v], j, x, want);
    }
    td_optim_destroy(o);
  }
}

/* Under a changing lr the two momentum forms differ (optim.h): Polyak's heavy ball
 * p2 = p1 - lr2 g2 + mu (p1 - p0), PyTorch's sgd p2 = p1 - lr2 (mu g1 + g2). */
static void test_heavy_ball_vs_sgd_schedule(void **state) {
  (void)state;
  const double mu = 0.9, lr1 = 0.1, lr2 = 0.02;
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = mu;
  td_optim *hb = make("heavy_ball", hp), *sg = make("sgd", hp);
  double a[N], b[N];
  memcpy(a, P0, sizeof a);
  memcpy(b, P0, sizeof b);
  td_optim_step(hb, a, G1, lr1);
  td_optim_step(sg, b, G1, lr1);
  for (int i = 0; i < N; i++) near(a[i], b[i], i); /* first steps agree: p0 - lr1 g1 */
  td_optim_step(hb, a, G2, lr2);
  td_optim_step(sg, b, G2, lr2);
  for (int i = 0; i < N; i++) {
    double p1 = P0[i] - lr1 * G1[i];
    near(a[i], p1 - lr2 * G2[i] + mu * (p1 - P0[i]), i);
    near(b[i], p1 - lr2 * (mu * G1[i] + G2[i]), i);
  }
  td_optim_destroy(hb);
  td_optim_destroy(sg);
}

/* Heavy ball with coupled weight decay, two steps by optim.h's formula written out:
 * d1 = -lr (g1 + wd p0), p1 = p0 + d1; d2 = mu d1 - lr (g2 + wd p1), p2 = p1 + d2. */
static void test_heavy_ball_weight_decay(void **state) {
  (void)state;
  const double mu = 0.9, lr = 0.1, wd = 0.05;
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = mu;
  hp.weight_decay = wd;
  td_optim *o = make("heavy_ball", hp);
  double p[N];
  memcpy(p, P0, sizeof p);
  td_optim_step(o, p, G1, lr);
  td_optim_step(o, p, G2, lr);
  for (int i = 0; i < N; i++) {
    double d1 = -lr * (G1[i] + wd * P0[i]), p1 = P0[i] + d1;
    double d2 = mu * d1 - lr * (G2[i] + wd * p1);
    near(p[i], p1 + d2, i);
  }
  td_optim_destroy(o);
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
  /* the new methods' hyperparameters */
  hp = td_optim_hp_default();
  hp.momentum = 0.9;
  hp.nesterov = 1;
  assert_int_equal(td_optim_create("heavy_ball", &hp, 3, &o, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.nesterov");
  hp = td_optim_hp_default();
  assert_int_equal(td_optim_create("nesterov", &hp, 3, &o, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.momentum");
  hp.alpha = 1.0;
  assert_int_equal(td_optim_create("rmsprop", &hp, 3, &o, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.alpha");
  hp = td_optim_hp_default();
  hp.lr_decay = -1;
  assert_int_equal(td_optim_create("adagrad", &hp, 3, &o, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.lr_decay");
  hp = td_optim_hp_default();
  assert_int_equal(td_optim_state_count("sgd", &hp), 0);
  assert_int_equal(td_optim_state_count("heavy_ball", &hp), 1);
  assert_int_equal(td_optim_state_count("adagrad", &hp), 1);
  assert_int_equal(td_optim_state_count("rmsprop", &hp), 1);
  assert_int_equal(td_optim_state_count("adamw", NULL), 2);
  assert_int_equal(td_optim_state_count("lion", NULL), -1);
  hp.momentum = 0.5;
  assert_int_equal(td_optim_create("nesterov", &hp, 3, &o, &err), 0);
  assert_string_equal(td_optim_name(o), "nesterov");
  td_optim_destroy(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd),       cmocka_unit_test(test_sgd_momentum),
      cmocka_unit_test(test_sgd_nesterov), cmocka_unit_test(test_adam),
      cmocka_unit_test(test_adamw),     cmocka_unit_test(test_quadratic_recurrences),
      cmocka_unit_test(test_errors),    cmocka_unit_test(test_adam_sign),
      cmocka_unit_test(test_adagrad),   cmocka_unit_test(test_rmsprop),
      cmocka_unit_test(test_quadratic_2d), cmocka_unit_test(test_heavy_ball_vs_sgd_schedule),
      cmocka_unit_test(test_heavy_ball_weight_decay),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
