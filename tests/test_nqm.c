/* test_nqm.c: the noisy quadratic model: steady-state risks against their closed forms (SGD,
 * heavy ball, preconditioning, EMA), the EMA and EMA + momentum + preconditioning paths
 * against an independent scalar moment recursion written from the update rule, exact moments
 * against Monte Carlo (tolerance from the Monte Carlo standard error), steps to target and
 * the tuned lr against the SGD closed form, and the `nqm` kind (steps to target, divergence,
 * validation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scaling/fit.h"
#include "kinds/registry.h"
#include "scaling/nqm.h"

static td_nqm *make(size_t dim, double lr, double beta, double p, double ema, double B,
                    int sample, size_t R) {
  td_nqm_config c = {.dim = dim, .lr = lr, .momentum = beta, .power = p, .ema = ema,
                     .batch = B, .init = 1.0, .sample = sample, .replicas = R, .seed = 5};
  td_nqm *q = NULL;
  td_err e;
  if (td_nqm_create(&c, &q, &e)) fail_msg("create: %s", e.msg);
  return q;
}

static double rel(double a, double b) { return fabs(a - b) / fabs(b); }

/* SGD: E[theta_i^2]_inf = a c_i / (B h_i (2 - a h_i)) from s = (1 - a h)^2 s + a^2 c / B.
 * The code's value must match to rounding (1e-12), and 3000 exact steps must reach it: the
 * slowest second moment contracts by (1 - a h_min)^2 = 0.99^2 per step, 0.99^6000 ~ 1e-26. */
static void test_sgd_steady_state(void **state) {
  (void)state;
  const size_t dim = 50;
  const double lr = 0.5, B = 4;
  td_nqm *q = make(dim, lr, 0, 0, 0, B, 0, 0);
  double closed = 0;
  for (size_t i = 0; i < dim; i++) {
    double h = 1.0 / (double)(i + 1), c = h;
    closed += 0.5 * h * lr * c / (B * h * (2 - lr * h));
  }
  assert_true(td_nqm_stable(q));
  assert_true(rel(td_nqm_steady_risk(q), closed) < 1e-12);
  for (int t = 0; t < 3000; t++) td_nqm_step(q);
  double bias, L = td_nqm_loss(q, &bias);
  assert_true(rel(L, closed) < 1e-10);
  assert_true(bias < 1e-20); /* the mean has decayed */
  td_nqm_destroy(q);
}

/* Heavy ball: theta is an AR(2) process theta' = (1 + beta - a h) theta - beta theta_prev
 * - a eps, whose stationary variance (Box and Jenkins, AR(2)) is
 * (1 - phi2) s2 / ((1 + phi2) ((1 - phi2)^2 - phi1^2)) with phi1 = 1 + beta - a h,
 * phi2 = -beta, s2 = a^2 c / B, i.e. a c (1 + beta) / (B h (1 - beta) (2 (1 + beta) - a h)).
 * The Lyapunov solve in the code is a different route to it: 1e-10 relative. */
static void test_heavy_ball_steady_state(void **state) {
  (void)state;
  const size_t dim = 50;
  const double lr = 0.1, beta = 0.9, B = 8;
  td_nqm *q = make(dim, lr, beta, 0, 0, B, 0, 0);
  double closed = 0;
  for (size_t i = 0; i < dim; i++) {
    double h = 1.0 / (double)(i + 1), c = h, a = lr;
    closed += 0.5 * h * a * c * (1 + beta) / (B * h * (1 - beta) * (2 * (1 + beta) - a * h));
  }
  assert_true(rel(td_nqm_steady_risk(q), closed) < 1e-10);
  /* slowest mode |lambda| ~ 0.9735 for h = 1/50: 6000 steps shrink it by 1e-139 */
  for (int t = 0; t < 6000; t++) td_nqm_step(q);
  assert_true(rel(td_nqm_loss(q, NULL), closed) < 1e-9);
  td_nqm_destroy(q);
  /* unstable: a h >= 2 (1 + beta) */
  q = make(dim, 4.0, beta, 0, 0, B, 0, 0);
  assert_false(td_nqm_stable(q));
  assert_true(isnan(td_nqm_steady_risk(q)));
  td_nqm_destroy(q);
}

/* An independent exact propagation, written from the update rule of nqm.h (not from the
 * code's iteration matrices): per coordinate, with p = 1 - a h and s2 = c / B,
 *   theta' = p theta + beta v - a eps,   v' = -a h theta + beta v - a eps,
 *   avg' = gamma avg + (1 - gamma) theta'  (eps independent of the state, E eps^2 = s2),
 * so the uncentered second moments tt = E theta^2, tv = E theta v, vv = E v^2, at = E avg theta,
 * av = E avg v, aa = E avg^2 obey the scalar recursions below; avg' is expanded through theta'
 * (E[avg theta'] = p at + beta av, E[avg'^2] = gamma^2 aa + 2 gamma (1 - gamma) E[avg theta']
 * + (1 - gamma)^2 E[theta'^2]). Start theta = avg = 1, v = 0. Returns E[L] after `steps` steps
 * (evaluated at avg when gamma > 0, else at theta), h_i = c_i = 1/i, a_i = lr h_i^-pw. */
static double ref_loss(size_t dim, double lr, double beta, double pw, double gamma, double B,
                       long steps) {
  double L = 0;
  for (size_t i = 0; i < dim; i++) {
    const double h = 1.0 / (double)(i + 1), c = h, a = lr * pow(h, -pw), p = 1 - a * h;
    const double s2 = c / B, n2 = a * a * s2;
    double tt = 1, tv = 0, vv = 0, at = 1, av = 0, aa = 1;
    for (long t = 0; t < steps; t++) {
      double tt1 = p * p * tt + 2 * p * beta * tv + beta * beta * vv + n2;
      double tv1 = -p * a * h * tt + (p * beta - beta * a * h) * tv + beta * beta * vv + n2;
      double vv1 = a * a * h * h * tt - 2 * a * h * beta * tv + beta * beta * vv + n2;
      double a_t1 = p * at + beta * av, a_v1 = -a * h * at + beta * av; /* E avg theta', E avg v' */
      double at1 = gamma * a_t1 + (1 - gamma) * tt1;
      double av1 = gamma * a_v1 + (1 - gamma) * tv1;
      double aa1 = gamma * gamma * aa + 2 * gamma * (1 - gamma) * a_t1 + (1 - gamma) * (1 - gamma) * tt1;
      tt = tt1, tv = tv1, vv = vv1, at = at1, av = av1, aa = aa1;
    }
    L += 0.5 * h * (gamma > 0 ? aa : tt);
  }
  return L;
}

/* Preconditioning: SGD with a_i = lr h_i^-p (closed form as SGD).
 * EMA without momentum, closed form: theta is AR(1) with phi = 1 - a h and stationary variance
 * s = a^2 (c/B) / (1 - phi^2); avg = (1 - g) sum_k g^k theta_{t-k} has variance
 * (1 - g)^2 s sum_{k,l} g^(k+l) phi^|k-l| = (1 - g) s (1 + g phi) / ((1 + g) (1 - g phi)).
 * The code's Lyapunov solve must give it to rounding (1e-12), and averaging must lower the
 * risk below SGD's at the same lr (Zhang et al. 2019, sec. 3.4).
 * EMA alone and EMA + momentum + preconditioning, transient: the code's exact propagation
 * against ref_loss at steps 1, 2, 10, 100 and 8000 (the last is the steady state: the slowest
 * mode contracts by ~0.97 per step), relative 1e-11 (each recursion is a contraction: rounding
 * stays ~ a few eps / (1 - rho) ~ 1e-13); the steady_risk against the reference at 8000 steps,
 * 1e-9. Dropping the noise in the average (b_avg = 0) moves the risks by ~10 %. */
static void test_precond_and_ema_steady_state(void **state) {
  (void)state;
  const size_t dim = 40;
  const double lr = 0.2, p = 0.5, B = 2;
  td_nqm *q = make(dim, lr, 0, p, 0, B, 0, 0);
  double closed = 0;
  for (size_t i = 0; i < dim; i++) {
    double h = 1.0 / (double)(i + 1), c = h, a = lr * pow(h, -p);
    closed += 0.5 * h * a * c / (B * h * (2 - a * h));
  }
  assert_true(rel(td_nqm_steady_risk(q), closed) < 1e-12);
  for (int t = 0; t < 5000; t++) td_nqm_step(q);
  assert_true(rel(td_nqm_loss(q, NULL), closed) < 1e-10);
  td_nqm_destroy(q);

  td_nqm *sgd = make(dim, lr, 0, 0, 0, B, 0, 0);
  td_nqm *ema = make(dim, lr, 0, 0, 0.9, B, 0, 0);
  const double g = 0.9;
  double ema_closed = 0;
  for (size_t i = 0; i < dim; i++) {
    double h = 1.0 / (double)(i + 1), c = h, a = lr, phi = 1 - a * h;
    double sv = a * a * (c / B) / (1 - phi * phi);
    ema_closed += 0.5 * h * (1 - g) * sv * (1 + g * phi) / ((1 + g) * (1 - g * phi));
  }
  if (!(rel(td_nqm_steady_risk(ema), ema_closed) < 1e-12))
    fail_msg("ema steady risk %.17g, closed form %.17g", td_nqm_steady_risk(ema), ema_closed);
  assert_true(td_nqm_steady_risk(ema) < 0.7 * td_nqm_steady_risk(sgd));

  const double cfg[3][4] = {{lr, 0, 0, 0.9}, {lr, 0.5, 0.3, 0.9}, {0.1, 0.8, 0, 0.7}};
  for (int k = 0; k < 3; k++) {
    td_nqm *m = make(dim, cfg[k][0], cfg[k][1], cfg[k][2], cfg[k][3], B, 0, 0);
    const long at[5] = {1, 2, 10, 100, 8000};
    long t = 0;
    for (int j = 0; j < 5; j++) {
      for (; t < at[j]; t++) td_nqm_step(m);
      double L = td_nqm_loss(m, NULL), R = ref_loss(dim, cfg[k][0], cfg[k][1], cfg[k][2],
                                                      cfg[k][3], B, t);
      if (!(rel(L, R) < 1e-11)) fail_msg("config %d step %ld: loss %.17g, reference %.17g", k, t, L, R);
    }
    double R = ref_loss(dim, cfg[k][0], cfg[k][1], cfg[k][2], cfg[k][3], B, 8000);
    if (!(rel(td_nqm_steady_risk(m), R) < 1e-9))
      fail_msg("config %d: steady risk %.17g, reference at 8000 steps %.17g", k,
               td_nqm_steady_risk(m), R);
    td_nqm_destroy(m);
  }
  td_nqm_destroy(sgd);
  td_nqm_destroy(ema);
}

/* Exact moments vs Monte Carlo over R replicas. The state is Gaussian (a linear system driven
 * by Gaussian noise from a fixed start), so for x ~ N(m, v): se(mean) = sqrt(v / R),
 * se(mean of x^2) = sqrt((2 v^2 + 4 m^2 v) / R); the loss's se is the sample standard
 * deviation of the replica losses / sqrt(R). Tolerance 4.5 se per check (45 checks: a false
 * alarm has probability ~3e-4). */
static void test_exact_vs_sample(void **state) {
  (void)state;
  const size_t dim = 8, R = 4000;
  const double cfg[3][4] = {{0.3, 0, 0, 0}, {0.2, 0.8, 0, 0.7}, {0.1, 0.5, 0.5, 0}};
  for (int k = 0; k < 3; k++) {
    td_nqm *ex = make(dim, cfg[k][0], cfg[k][1], cfg[k][2], cfg[k][3], 2, 0, 0);
    td_nqm *mc = make(dim, cfg[k][0], cfg[k][1], cfg[k][2], cfg[k][3], 2, 1, R);
    int t = 0;
    const int checks[] = {5, 20, 60};
    for (int ci = 0; ci < 3; ci++) {
      for (; t < checks[ci]; t++) {
        td_nqm_step(ex);
        td_nqm_step(mc);
      }
      double Le = td_nqm_loss(ex, NULL), Lm = td_nqm_loss(mc, NULL), s2 = 0;
      for (size_t r = 0; r < R; r++) s2 += pow(td_nqm_replica_loss(mc, r) - Lm, 2);
      double se = sqrt(s2 / (double)(R - 1) / (double)R);
      if (fabs(Le - Lm) > 4.5 * se)
        fail_msg("config %d step %d: exact %g sample %g se %g", k, t, Le, Lm, se);
      for (size_t i = 0; i < dim; i += 7) {
        double me, se2, mm, sm2;
        td_nqm_coord(ex, i, &me, &se2);
        td_nqm_coord(mc, i, &mm, &sm2);
        double v = se2 - me * me;
        if (fabs(me - mm) > 4.5 * sqrt(v / R))
          fail_msg("config %d step %d coord %zu: mean %g vs %g", k, t, i, me, mm);
        if (fabs(se2 - sm2) > 4.5 * sqrt((2 * v * v + 4 * me * me * v) / R))
          fail_msg("config %d step %d coord %zu: second moment %g vs %g", k, t, i, se2, sm2);
      }
    }
    td_nqm_destroy(ex);
    td_nqm_destroy(mc);
  }
}

/* ---------------------------------------------------------------- the kind */

typedef struct cap {
  long steps[20000];
  double vals[20000];
  size_t n;
  int stop_after;
  int polls;
} cap;

static int cap_metric(void *ctx, const char *key, long step, double value) {
  cap *c = ctx;
  if (strcmp(key, "loss") == 0 && c->n < 20000) {
    c->steps[c->n] = step;
    c->vals[c->n++] = value;
  }
  return 0;
}

static int cap_stop(void *ctx) {
  cap *c = ctx;
  return c->stop_after > 0 && ++c->polls > c->stop_after;
}

static int run_kind(const char *params_text, cap *c, json_t **summary, td_err *e) {
  json_t *p = json_loads(params_text, 0, NULL);
  json_t *filled = NULL;
  td_err_clear(e);
  int rc = td_kinds_validate("nqm", p, NULL, &filled, NULL, e);
  json_decref(p);
  *summary = NULL;
  if (rc) return rc;
  td_sink s = {.ctx = c, .metric = cap_metric, .should_stop = cap_stop};
  rc = td_kind_nqm.run(filled, &s, summary, e);
  json_decref(filled);
  return rc;
}

/* Independent closed form for SGD from theta_0 = 1: each coordinate's second moment is
 * s_t = q^2t + (a^2 c/B) (1 - q^2t) / (1 - q^2), q = 1 - a h, h_i = c_i = 1/i; returns the
 * first t in [0, max_steps] with E[L_t] <= target, or -1. */
static long sgd_steps(int dim, double a, double B, double target, long max_steps) {
  double q2[128], q2t[128];
  assert_true(dim <= 128);
  for (int i = 1; i <= dim; i++) {
    double q = 1 - a / i;
    q2[i - 1] = q * q;
    q2t[i - 1] = 1.0;
  }
  for (long t = 0; t <= max_steps; t++) {
    double L = 0;
    for (int i = 1; i <= dim; i++) {
      double h = 1.0 / i, p = q2t[i - 1];
      L += 0.5 * h * (p + a * a * h / B * (1 - p) / (1 - q2[i - 1]));
      q2t[i - 1] *= q2[i - 1]; /* q^2(t+1) */
    }
    if (L <= target) return t;
  }
  return -1;
}

/* td_nqm_steps_to_target (what tune_lr minimizes) against sgd_steps, and the tuned lr:
 * td_nqm_tune_lr's steps must be those of its own lr by the closed form, and no lr of an
 * independent 400-point log grid over (0, 2 / h_max) may beat it by more than 1 % (the
 * tuner's grid is 33 + 17 points; steps vary slowly near the optimum). */
static void test_steps_and_tune_closed_form(void **state) {
  (void)state;
  td_nqm_config c = {.dim = 100, .lr = 0.5, .batch = 16, .init = 1};
  long s = -2;
  assert_int_equal(td_nqm_steps_to_target(&c, 0.3, 5000, NULL, &s, NULL), 0);
  long want = sgd_steps(100, 0.5, 16, 0.3, 5000);
  assert_true(want > 0);
  if (s != want) fail_msg("steps_to_target %ld, closed form %ld", s, want);
  double lr = NAN;
  long best = -1;
  c.batch = 4;
  assert_int_equal(td_nqm_tune_lr(&c, 0.1, 100000, NULL, &lr, &best, NULL), 0);
  long at_lr = sgd_steps(100, lr, 4, 0.1, 100000);
  if (best != at_lr) fail_msg("tuned lr %.17g: %ld steps, closed form %ld", lr, best, at_lr);
  long scan = -1;
  for (int k = 399; k >= 0; k--) { /* large lr first: the best so far caps the rest */
    double l = 2.0 * exp(log(1e-4) * (1 - (k + 0.5) / 400.0));
    long t = sgd_steps(100, l, 4, 0.1, scan > 0 ? scan : best); /* only a win over best counts */
    if (t > 0 && (scan < 0 || t < scan)) scan = t;
  }
  print_message("tuned: lr %.6g, %ld steps; independent scan: %ld (-1: none <= it)\n", lr, best, scan);
  assert_true(best > 0 && (scan < 0 || best <= 1.01 * scan));
}

/* steps_to_target of the kind against the closed form sgd_steps. */
static void test_kind_steps_to_target(void **state) {
  (void)state;
  static cap c;
  memset(&c, 0, sizeof c);
  json_t *s = NULL;
  td_err e;
  assert_int_equal(run_kind("{\"dim\":100,\"lr\":0.5,\"batch_size\":16,\"target_loss\":0.3,"
                            "\"max_steps\":5000}",
                            &c, &s, &e),
                   0);
  long expect = sgd_steps(100, 0.5, 16, 0.3, 5000);
  assert_true(expect > 0);
  assert_int_equal(json_integer_value(json_object_get(s, "steps_to_target")), expect);
  assert_true(json_is_true(json_object_get(s, "reached_target")));
  assert_int_equal(json_integer_value(json_object_get(s, "final_step")), expect); /* stopped */
  assert_int_equal(c.steps[0], 0);
  assert_int_equal(c.steps[c.n - 1], expect);
  assert_true(c.vals[c.n - 1] <= 0.3 && c.vals[c.n - 2] > 0.3);
  assert_true(json_number_value(json_object_get(s, "steady_state_risk")) > 0);
  json_decref(s);

  /* unreachable target (below the noise floor): null, runs to max_steps */
  memset(&c, 0, sizeof c);
  assert_int_equal(run_kind("{\"lr\":0.5,\"batch_size\":1,\"target_loss\":0.01,\"max_steps\":300}",
                            &c, &s, &e),
                   0);
  assert_true(json_is_null(json_object_get(s, "steps_to_target")));
  assert_int_equal(json_integer_value(json_object_get(s, "final_step")), 300);
  assert_int_equal(c.steps[c.n - 1], 300);
  json_decref(s);
}

static void test_kind_diverges_and_validates(void **state) {
  (void)state;
  static cap c;
  memset(&c, 0, sizeof c);
  json_t *s = NULL;
  td_err e;
  /* a h_1 = 2.5 > 2: the first coordinate grows by 1.5^2 per step */
  assert_int_equal(run_kind("{\"lr\":2.5,\"max_steps\":1000}", &c, &s, &e), TD_EDIVERGED);
  assert_non_null(s);
  long ds = (long)json_integer_value(json_object_get(s, "diverged_step"));
  assert_true(ds > 10 && ds < 100);
  assert_false(json_is_true(json_object_get(s, "stable")));
  json_decref(s);
  /* sample mode diverges too */
  memset(&c, 0, sizeof c);
  assert_int_equal(run_kind("{\"lr\":2.5,\"mode\":\"sample\",\"max_steps\":1000}", &c, &s, &e),
                   TD_EDIVERGED);
  json_decref(s);
  /* validation through the registry */
  assert_int_equal(run_kind("{\"optimizer\":{\"momentum\":0.9}}", &c, &s, &e), TD_EINVAL);
  assert_string_equal(e.field, "params.optimizer.momentum");
  assert_int_equal(run_kind("{\"dim\":3,\"h\":[1,2]}", &c, &s, &e), TD_EINVAL);
  assert_string_equal(e.field, "params.h");
  assert_int_equal(run_kind("{\"dim\":3,\"c\":[1,2,-1]}", &c, &s, &e), TD_EINVAL);
  assert_string_equal(e.field, "params.c[2]");
  assert_int_equal(run_kind("{\"mode\":\"fast\"}", &c, &s, &e), TD_EINVAL);
  assert_string_equal(e.field, "params.mode");
  /* heavy_ball with explicit lists runs */
  memset(&c, 0, sizeof c);
  assert_int_equal(run_kind("{\"dim\":3,\"h\":[1,0.5,0.1],\"c\":[1,1,1],\"optimizer\":"
                            "{\"name\":\"heavy_ball\",\"momentum\":0.9},\"lr\":0.1,"
                            "\"max_steps\":50,\"log_every\":10}",
                            &c, &s, &e),
                   0);
  assert_int_equal(c.n, 6); /* steps 0, 10, ..., 50 */
  json_decref(s);
  /* tune_lr: needs a target and exact mode; the run uses the tuned lr and reaches the
   * target in the tuned number of steps */
  assert_int_equal(run_kind("{\"tune_lr\":true}", &c, &s, &e), TD_EINVAL);
  assert_string_equal(e.field, "params.tune_lr");
  assert_int_equal(run_kind("{\"tune_lr\":true,\"target_loss\":0.1,\"mode\":\"sample\"}", &c, &s,
                            &e),
                   TD_EINVAL);
  memset(&c, 0, sizeof c);
  assert_int_equal(run_kind("{\"tune_lr\":true,\"target_loss\":0.1,\"batch_size\":4,"
                            "\"max_steps\":100000}",
                            &c, &s, &e),
                   0);
  assert_true(json_is_true(json_object_get(s, "tuned_lr")));
  /* the run's steps are those of its (tuned) lr by the closed form */
  double tuned = json_number_value(json_object_get(s, "lr"));
  assert_true(tuned != 0.5);
  assert_int_equal(json_integer_value(json_object_get(s, "steps_to_target")),
                   sgd_steps(100, tuned, 4, 0.1, 100000));
  json_decref(s);
  /* cancellation at the next step */
  memset(&c, 0, sizeof c);
  c.stop_after = 5;
  assert_int_equal(run_kind("{\"max_steps\":100}", &c, &s, &e), TD_ECANCELLED);
  json_decref(s);
  /* memory estimate: sample mode with 1e5 coordinates and 1000 replicas is ~2.4 GB */
  json_t *p = json_loads("{\"dim\":100000,\"mode\":\"sample\",\"replicas\":1000}", 0, NULL);
  json_t *f = NULL;
  td_limits lim = td_kinds_default_limits();
  lim.max_bytes = 1e9;
  assert_int_equal(td_kinds_validate("nqm", p, &lim, &f, NULL, &e), TD_ELIMIT);
  json_decref(p);
}


/* Zhang et al. 2019's qualitative findings, with lr tuned per batch size (their protocol),
 * dim 100, h_i = c_i = 1/i, target loss 0.1 (initial loss 2.59):
 *  - steps to target scale like 1/B at small B (perfect scaling) and saturate at large B;
 *  - momentum helps only at large batch sizes;
 *  - preconditioning raises the critical batch size (B_crit of a critical_batch fit).
 * Thresholds are loose versions of the measured values (SGD: 1719, 442, ..., 29; heavy ball:
 * 1700 at B = 1 but 21 vs 29 at B = 2^16; B_crit about 58 for SGD vs 150 for p = 0.5). */
static long tuned_steps(double beta, double p, double B) {
  td_nqm_config c = {.dim = 100, .momentum = beta, .power = p, .batch = B, .init = 1};
  double lr;
  long s;
  assert_int_equal(td_nqm_tune_lr(&c, 0.1, 100000, NULL, &lr, &s, NULL), 0);
  assert_true(s > 0 && lr > 0);
  return s;
}

static double bcrit(double p) {
  json_t *pts = json_array();
  for (int k = 0; k <= 16; k += 2) {
    double B = pow(2, k);
    json_array_append_new(pts, json_pack("{s:f, s:f}", "B", B, "S", (double)tuned_steps(0, p, B)));
  }
  td_fit_opts o;
  td_fit_opts_default(&o);
  o.resamples = 0;
  json_t *res = NULL;
  assert_int_equal(td_fit_run("critical_batch", pts, &o, &res, NULL), 0);
  double b = json_number_value(
      json_object_get(json_object_get(json_object_get(res, "params"), "B_crit"), "value"));
  json_decref(res);
  json_decref(pts);
  return b;
}

static void test_zhang_qualitative(void **state) {
  (void)state;
  long s1 = tuned_steps(0, 0, 1), s4 = tuned_steps(0, 0, 4);
  long s12 = tuned_steps(0, 0, 4096), s16 = tuned_steps(0, 0, 65536);
  print_message("sgd: B=1 %ld, B=4 %ld, B=2^12 %ld, B=2^16 %ld\n", s1, s4, s12, s16);
  assert_true(s1 > 3.5 * s4 && s1 < 4.5 * s4); /* perfect scaling */
  assert_true(s12 < 1.15 * s16);                /* saturation */
  long h1 = tuned_steps(0.9, 0, 1), h16 = tuned_steps(0.9, 0, 65536);
  print_message("heavy ball: B=1 %ld, B=2^16 %ld\n", h1, h16);
  assert_true(h1 > 0.95 * s1);  /* no help at small batch */
  assert_true(h16 < 0.85 * s16); /* helps at large batch */
  double bs = bcrit(0), bp = bcrit(0.5);
  print_message("B_crit: sgd %.1f, precond p=0.5 %.1f\n", bs, bp);
  assert_true(bp > 1.5 * bs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd_steady_state),
      cmocka_unit_test(test_heavy_ball_steady_state),
      cmocka_unit_test(test_precond_and_ema_steady_state),
      cmocka_unit_test(test_exact_vs_sample),
      cmocka_unit_test(test_steps_and_tune_closed_form),
      cmocka_unit_test(test_kind_steps_to_target),
      cmocka_unit_test(test_kind_diverges_and_validates),
      cmocka_unit_test(test_zhang_qualitative),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
