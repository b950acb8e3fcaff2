/* test_fit.c: scaling-law fits: recovery of known laws from noiseless points (tight), bootstrap
 * coverage on noisy points, the compute-optimal closed form, validation errors naming the
 * field, and fits over sweep children. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "scaling/fit.h"
#include "base/rng.h"

static double par(const json_t *res, const char *group, const char *name, int which) {
  const json_t *e = json_object_get(json_object_get(res, group), name);
  if (!e) fail_msg("no %s.%s", group, name);
  if (which < 0) return json_number_value(json_object_get(e, "value"));
  return json_number_value(json_array_get(json_object_get(e, "ci95"), (size_t)which));
}

static int inside(const json_t *res, const char *name, double truth) {
  return par(res, "params", name, 0) <= truth && truth <= par(res, "params", name, 1);
}

static json_t *pt2(const char *kx, double x, const char *ky, double y) {
  return json_pack("{s:f, s:f}", kx, x, ky, y);
}

/* Noiseless points: the fit must recover the law to a relative 1e-6. The log residuals are
 * then ~0, inside Huber's quadratic zone, where L-BFGS converges superlinearly; 1e-6 leaves
 * room for its stopping rule (gradient norm 1e-11) on a problem with condition ~1e6. */
static void test_power_offset_noiseless(void **state) {
  (void)state;
  const double E = 1.5, A = 20, alpha = 0.4;
  json_t *pts = json_array();
  for (int i = 0; i < 12; i++) {
    double x = pow(10, 2 + 4.0 * i / 11);
    json_array_append_new(pts, pt2("x", x, "y", E + A * pow(x, -alpha)));
  }
  td_fit_opts o;
  td_fit_opts_default(&o);
  o.resamples = 20;
  json_t *res = NULL;
  td_err e;
  assert_int_equal(td_fit_run("power_offset", pts, &o, &res, &e), 0);
  print_message("E %.9g A %.9g alpha %.9g\n", par(res, "params", "E", -1), par(res, "params", "A", -1),
                par(res, "params", "alpha", -1));
  assert_true(fabs(par(res, "params", "E", -1) / E - 1) < 1e-6);
  assert_true(fabs(par(res, "params", "A", -1) / A - 1) < 1e-6);
  assert_true(fabs(par(res, "params", "alpha", -1) / alpha - 1) < 1e-6);
  assert_int_equal(json_integer_value(json_object_get(res, "n_points")), 12);
  assert_int_equal(json_array_size(json_object_get(res, "residuals")), 12);
  assert_true(json_number_value(json_object_get(res, "rmse_log")) < 1e-7);
  const json_t *cv = json_object_get(res, "curve");
  assert_int_equal(json_array_size(json_object_get(cv, "x")), 60);
  assert_int_equal(json_array_size(json_object_get(cv, "lo")), 60);
  double x0 = json_number_value(json_array_get(json_object_get(cv, "x"), 10));
  double y0 = json_number_value(json_array_get(json_object_get(cv, "y"), 10));
  assert_true(fabs(y0 / (E + A * pow(x0, -alpha)) - 1) < 1e-6);
  json_decref(res);
  json_decref(pts);
}

/* Hoffmann et al. 2022's published fit: E = 1.69, A = 406.4, B = 410.7, alpha = 0.34,
 * beta = 0.28 (their eq. 10), on a 6 x 6 grid of N (1e7..1e10) and D (1e9..1e12).
 * Noiseless points: the log residuals vanish at the truth, where L-BFGS converges
 * superlinearly, so the parameters come back to rounding: measured relative errors 3e-15
 * (E, alpha) to 3.6e-14 (B), about 160 eps. Tolerance 1e-11 relative (~5e4 eps: rounding
 * of the 36 residuals amplified by the conditioning of the fit, with two orders of magnitude
 * to spare for another libm's pow); the exponents a, b to 1e-12 absolute.
 * N_opt against the closed form of Hoffmann et al. 2022, eq. 4, written out here:
 * N_opt(C) = G (C/6)^(beta/(alpha+beta)), G = (alpha A / (beta B))^(1/(alpha+beta)), with the
 * true parameters; a relative error e in the exponents moves N_opt by ~ e log(C/6) ~ 50 e,
 * so 1e-11 * 50 = 5e-10 relative (measured 1e-14). */
static void test_chinchilla_noiseless(void **state) {
  (void)state;
  const double E = 1.69, A = 406.4, B = 410.7, al = 0.34, be = 0.28;
  json_t *pts = json_array();
  for (int i = 0; i < 6; i++)
    for (int j = 0; j < 6; j++) {
      double N = pow(10, 7 + 3.0 * i / 5), D = pow(10, 9 + 3.0 * j / 5);
      json_array_append_new(pts, json_pack("{s:f, s:f, s:f}", "N", N, "D", D, "L",
                                           E + A / pow(N, al) + B / pow(D, be)));
    }
  td_fit_opts o;
  td_fit_opts_default(&o);
  o.resamples = 20;
  json_t *res = NULL;
  td_err e;
  assert_int_equal(td_fit_run("chinchilla", pts, &o, &res, &e), 0);
  const char *names[] = {"E", "A", "B", "alpha", "beta"};
  const double truth[] = {E, A, B, al, be};
  for (int k = 0; k < 5; k++) {
    double v = par(res, "params", names[k], -1);
    print_message("%s %.17g (truth %g) rel %.3g\n", names[k], v, truth[k], fabs(v / truth[k] - 1));
    if (!(fabs(v / truth[k] - 1) < 1e-11)) fail_msg("%s %.17g vs %g", names[k], v, truth[k]);
  }
  /* compute-optimal exponents a = beta/(alpha+beta), b = alpha/(alpha+beta) */
  assert_true(fabs(par(res, "derived", "a", -1) - be / (al + be)) < 1e-12);
  assert_true(fabs(par(res, "derived", "b", -1) - al / (al + be)) < 1e-12);
  const json_t *co = json_object_get(res, "compute_optimal");
  const json_t *Cs = json_object_get(co, "C"), *Ns = json_object_get(co, "N_opt");
  assert_true(json_array_size(Cs) > 30 && json_array_size(Ns) == json_array_size(Cs));
  const double G = pow(al * A / (be * B), 1 / (al + be));
  for (size_t i = 0; i < json_array_size(Cs); i++) {
    double C = json_number_value(json_array_get(Cs, i));
    double Nf = json_number_value(json_array_get(Ns, i)), Nc = G * pow(C / 6, be / (al + be));
    if (!(fabs(Nf / Nc - 1) < 5e-10))
      fail_msg("N_opt at C = %g: %.17g, closed form %.17g", C, Nf, Nc);
  }
  /* the plotted curve: the loss at the compute optimum, E + A N^-alpha + B D^-beta with
   * D = C / (6 N) (same error budget as N_opt) */
  const json_t *cv = json_object_get(res, "curve");
  assert_int_equal(json_array_size(json_object_get(cv, "x")), json_array_size(Cs));
  for (size_t i = 0; i < json_array_size(Cs); i++) {
    double C = json_number_value(json_array_get(json_object_get(cv, "x"), i));
    double y = json_number_value(json_array_get(json_object_get(cv, "y"), i));
    double Nc = G * pow(C / 6, be / (al + be)), Dc = C / (6 * Nc);
    double Lc = E + A / pow(Nc, al) + B / pow(Dc, be);
    if (!(fabs(y / Lc - 1) < 5e-10)) fail_msg("curve at C = %g: %.17g vs %.17g", C, y, Lc);
  }
  json_decref(res);
  json_decref(pts);
}

/* The closed form must satisfy the constraint 6 N D = C and minimize L along it. */
static void test_chinchilla_optimal_closed_form(void **state) {
  (void)state;
  const double A = 406.4, B = 410.7, al = 0.34, be = 0.28, C = 5.76e23; /* Gopher's budget */
  double N, D;
  td_fit_chinchilla_optimal(A, al, B, be, C, &N, &D);
  assert_true(fabs(6 * N * D / C - 1) < 1e-12);
  double Lopt = A / pow(N, al) + B / pow(D, be);
  for (double f = 0.9; f <= 1.11; f += 0.05) {
    if (fabs(f - 1) < 1e-9) continue;
    double n2 = N * f, d2 = C / (6 * n2);
    assert_true(A / pow(n2, al) + B / pow(d2, be) > Lopt);
  }
  /* Hoffmann et al.'s own numbers with these parameters: about 40B parameters at Gopher's
   * compute (their Table 3 gives 40B-ish for Approach 3). */
  assert_true(N > 2e10 && N < 6e10);
  td_fit_chinchilla_optimal(A, -1, B, be, C, &N, &D);
  assert_true(isnan(N) && isnan(D));
}

static void test_critical_batch_noiseless(void **state) {
  (void)state;
  const double Smin = 1000, Bc = 256;
  json_t *pts = json_array();
  for (int i = 0; i < 10; i++) {
    double Bsz = pow(2, 3 + i);
    json_array_append_new(pts, pt2("B", Bsz, "S", Smin * (1 + Bc / Bsz)));
  }
  json_t *res = NULL;
  json_t *body = json_pack("{s:s, s:O, s:i}", "law", "critical_batch", "points", pts, "bootstrap", 20);
  td_err e;
  assert_int_equal(td_fit_request(body, &res, &e), 0);
  assert_true(fabs(par(res, "params", "S_min", -1) / Smin - 1) < 1e-6);
  assert_true(fabs(par(res, "params", "B_crit", -1) / Bc - 1) < 1e-6);
  assert_true(fabs(par(res, "derived", "E_min", -1) / (Smin * Bc) - 1) < 1e-6);
  /* the plotted curve is the law with the true parameters: S_min (1 + B_crit / B), relative
   * error at most the sum of the parameters' (2e-6) */
  const json_t *cv = json_object_get(res, "curve");
  size_t nc = json_array_size(json_object_get(cv, "x"));
  assert_true(nc >= 10);
  for (size_t j = 0; j < nc; j++) {
    double x = json_number_value(json_array_get(json_object_get(cv, "x"), j));
    double y = json_number_value(json_array_get(json_object_get(cv, "y"), j));
    if (!(fabs(y / (Smin * (1 + Bc / x)) - 1) < 2e-6))
      fail_msg("curve at B = %g: %.17g vs %.17g", x, y, Smin * (1 + Bc / x));
  }
  json_decref(res);
  json_decref(body);
  json_decref(pts);
}

/* Noisy points (multiplicative log-normal noise): the percentile bootstrap's 95% intervals
 * should cover the truth about 95% of the time. Over 8 independent data sets x 3 parameters
 * = 24 checks, Binomial(24, 0.95) < 20 has probability 0.8%; each data set is seeded, so the
 * test is deterministic; the threshold keeps it meaningful (a broken interval, e.g. one that
 * ignores the noise, covers almost never). */
static void test_power_offset_noisy_coverage(void **state) {
  (void)state;
  const double E = 2.0, A = 50, alpha = 0.3, sigma = 0.01;
  int covered = 0, total = 0;
  for (uint64_t ds = 0; ds < 8; ds++) {
    td_rng r;
    td_rng_init(&r, 1000 + ds, 0);
    json_t *pts = json_array();
    for (int i = 0; i < 30; i++) {
      double x = pow(10, 3 + 4.0 * i / 29);
      double y = (E + A * pow(x, -alpha)) * exp(sigma * td_rng_normal(&r));
      json_array_append_new(pts, pt2("x", x, "y", y));
    }
    td_fit_opts o;
    td_fit_opts_default(&o);
    o.resamples = 200;
    o.seed = ds;
    json_t *res = NULL;
    assert_int_equal(td_fit_run("power_offset", pts, &o, &res, NULL), 0);
    covered += inside(res, "E", E) + inside(res, "A", A) + inside(res, "alpha", alpha);
    total += 3;
    /* and the intervals are informative: alpha's is about 0.02 wide at 1% noise */
    double w = par(res, "params", "alpha", 1) - par(res, "params", "alpha", 0);
    assert_true(w > 0 && w < 0.1);
    json_decref(res);
    json_decref(pts);
  }
  print_message("power_offset coverage %d / %d\n", covered, total);
  assert_true(covered >= 20);
}

static void test_chinchilla_noisy(void **state) {
  (void)state;
  const double E = 1.69, A = 406.4, B = 410.7, al = 0.34, be = 0.28, sigma = 0.005;
  int covered = 0, total = 0;
  for (uint64_t ds = 0; ds < 2; ds++) {
    td_rng r;
    td_rng_init(&r, 77 + ds, 0);
    json_t *pts = json_array();
    for (int i = 0; i < 7; i++)
      for (int j = 0; j < 7; j++) {
        double N = pow(10, 7 + 3.0 * i / 6), D = pow(10, 9 + 3.0 * j / 6);
        double L = (E + A / pow(N, al) + B / pow(D, be)) * exp(sigma * td_rng_normal(&r));
        json_array_append_new(pts, json_pack("{s:f, s:f, s:f}", "N", N, "D", D, "L", L));
      }
    td_fit_opts o;
    td_fit_opts_default(&o);
    o.resamples = 100;
    json_t *res = NULL;
    assert_int_equal(td_fit_run("chinchilla", pts, &o, &res, NULL), 0);
    covered += inside(res, "E", E) + inside(res, "A", A) + inside(res, "B", B) +
               inside(res, "alpha", al) + inside(res, "beta", be);
    total += 5;
    /* the band contains the fitted curve */
    const json_t *cv = json_object_get(res, "curve");
    for (size_t j = 0; j < 60; j++) {
      double y = json_number_value(json_array_get(json_object_get(cv, "y"), j));
      double lo = json_number_value(json_array_get(json_object_get(cv, "lo"), j));
      double hi = json_number_value(json_array_get(json_object_get(cv, "hi"), j));
      assert_true(lo <= hi);
      assert_true(lo <= y * 1.001 && y <= hi * 1.001);
    }
    json_decref(res);
    json_decref(pts);
  }
  print_message("chinchilla coverage %d / %d\n", covered, total);
  assert_true(covered >= 8); /* Binomial(10, 0.95) < 8: 1.2% */
}

static void expect_error(const char *body_text, const char *field) {
  json_error_t je;
  json_t *body = json_loads(body_text, JSON_DECODE_ANY, &je);
  if (!body) fail_msg("bad JSON in test: %s", body_text);
  json_t *res = (json_t *)1;
  td_err e;
  td_err_clear(&e);
  int rc = td_fit_request(body, &res, &e);
  json_decref(body);
  if (rc != TD_EINVAL) fail_msg("rc %d for %s", rc, body_text);
  assert_null(res);
  if (strcmp(e.field, field) != 0) fail_msg("field '%s' != '%s' (%s)", e.field, field, e.msg);
}

static void test_validation(void **state) {
  (void)state;
  const char *ok4 = "{\"x\":1,\"y\":1},{\"x\":2,\"y\":0.5},{\"x\":3,\"y\":0.4}";
  char buf[512];
  expect_error("[]", "");
  expect_error("{\"law\":\"linear\",\"points\":[]}", "law");
  expect_error("{\"points\":[]}", "law");
  expect_error("{\"law\":\"power_offset\"}", "points");
  expect_error("{\"law\":\"power_offset\",\"points\":{}}", "points");
  expect_error("{\"law\":\"power_offset\",\"points\":[{\"x\":1,\"y\":1}]}", "points");
  snprintf(buf, sizeof buf, "{\"law\":\"power_offset\",\"points\":[%s,{\"x\":4}]}", ok4);
  expect_error(buf, "points[3].y");
  snprintf(buf, sizeof buf, "{\"law\":\"power_offset\",\"points\":[%s,{\"x\":4,\"y\":-1}]}", ok4);
  expect_error(buf, "points[3].y");
  snprintf(buf, sizeof buf, "{\"law\":\"power_offset\",\"points\":[%s,{\"x\":\"4\",\"y\":1}]}", ok4);
  expect_error(buf, "points[3].x");
  snprintf(buf, sizeof buf, "{\"law\":\"power_offset\",\"points\":[%s,7]}", ok4);
  expect_error(buf, "points[3]");
  snprintf(buf, sizeof buf, "{\"law\":\"power_offset\",\"points\":[%s,{\"x\":4,\"y\":1}],\"tol\":1}", ok4);
  expect_error(buf, "tol");
  snprintf(buf, sizeof buf, "{\"law\":\"power_offset\",\"points\":[%s,{\"x\":4,\"y\":1}],\"bootstrap\":-1}", ok4);
  expect_error(buf, "bootstrap");
  snprintf(buf, sizeof buf, "{\"law\":\"power_offset\",\"points\":[%s,{\"x\":4,\"y\":1}],\"curve_points\":1}", ok4);
  expect_error(buf, "curve_points");
  /* too few distinct x */
  expect_error("{\"law\":\"power_offset\",\"points\":[{\"x\":1,\"y\":1},{\"x\":1,\"y\":2},"
               "{\"x\":2,\"y\":1},{\"x\":2,\"y\":3}]}",
               "points");
  expect_error("{\"law\":\"chinchilla\",\"points\":[{\"N\":1,\"D\":1,\"L\":1}]}", "points");
  expect_error("{\"law\":\"critical_batch\",\"points\":[{\"B\":1,\"S\":1},{\"B\":2,\"S\":1},"
               "{\"B\":3}]}",
               "points[2].S");
}

/* A sweep's fit: children {params, summary}; unusable children are skipped. */
static void test_fit_sweep(void **state) {
  (void)state;
  json_t *children = json_array();
  for (int i = 0; i < 8; i++) {
    double B = pow(2, 2 + i), S = 500 * (1 + 64 / B);
    json_array_append_new(children, json_pack("{s:{s:f}, s:{s:f}}", "params", "batch_size", B,
                                              "summary", "steps_to_target", S));
  }
  json_array_append_new(children, json_pack("{s:{s:i}, s:{s:n}}", "params", "batch_size", 4096,
                                            "summary", "steps_to_target"));
  json_t *spec = json_pack("{s:s, s:s, s:s, s:i}", "law", "critical_batch", "x",
                           "params.batch_size", "y", "summary.steps_to_target", "bootstrap", 10);
  json_t *res = NULL;
  td_err e;
  assert_int_equal(td_fit_sweep(spec, children, &res, &e), 0);
  assert_int_equal(json_integer_value(json_object_get(res, "skipped")), 1);
  assert_true(fabs(par(res, "params", "B_crit", -1) / 64 - 1) < 1e-6);
  json_decref(res);
  /* invalid specs */
  json_t *bad = json_pack("{s:s, s:s, s:s}", "law", "power_offset", "x", "n_params", "y",
                          "summary.loss");
  assert_int_equal(td_fit_sweep(bad, children, &res, &e), TD_EINVAL);
  assert_string_equal(e.field, "fit.x");
  json_decref(bad);
  json_decref(spec);
  json_decref(children);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_power_offset_noiseless),
      cmocka_unit_test(test_chinchilla_noiseless),
      cmocka_unit_test(test_chinchilla_optimal_closed_form),
      cmocka_unit_test(test_critical_batch_noiseless),
      cmocka_unit_test(test_power_offset_noisy_coverage),
      cmocka_unit_test(test_chinchilla_noisy),
      cmocka_unit_test(test_validation),
      cmocka_unit_test(test_fit_sweep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
