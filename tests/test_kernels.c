/* test_kernels.c: the analytic NNGP and NTK recursions against closed forms derived by hand
 * and against Monte Carlo estimates from wide random networks (an independent forward pass
 * and chain rule written here, in the NTK parameterization of kernels.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "kernels/kernels.h"

static double kern(td_kact act, int depth, double sw2, double sb2, td_kernel_kind kind,
                   const double *x, const double *y, int d) {
  td_kernel_cfg c = {.act = act, .depth = depth, .sigma_w2 = sw2, .sigma_b2 = sb2};
  double out = NAN;
  td_err e;
  assert_int_equal(td_kernel_matrix(&c, kind, x, 1, y, 1, d, &out, &e), 0);
  return out;
}

/* Closed forms by hand. The only error is rounding in a few transcendental calls: 1e-14. */
static void test_closed_forms(void **state) {
  (void)state;
  const double tol = 1e-14;
  /* relu, d = 2, x = e1, x' = e2, sigma_w2 = 2, sigma_b2 = 0: K^1(x,x) = 1, K^1(x,x') = 0,
   * so theta = pi/2: K^2(x,x') = 2 * 1 * (1 + 0) / (2 pi) = 1/pi, Theta^2 = 1/pi + 2 *
   * (1/2) * 0 = 1/pi; K^2(x,x) = 2 * 1/2 = 1, Theta^2(x,x) = 1 + 2 * (1/2) * 1 = 2. */
  double e1[2] = {1, 0}, e2[2] = {0, 1};
  assert_true(fabs(kern(TD_KACT_RELU, 1, 2, 0, TD_KERNEL_NNGP, e1, e2, 2) - 1 / M_PI) < tol);
  assert_true(fabs(kern(TD_KACT_RELU, 1, 2, 0, TD_KERNEL_NTK, e1, e2, 2) - 1 / M_PI) < tol);
  assert_true(fabs(kern(TD_KACT_RELU, 1, 2, 0, TD_KERNEL_NNGP, e1, e1, 2) - 1) < tol);
  assert_true(fabs(kern(TD_KACT_RELU, 1, 2, 0, TD_KERNEL_NTK, e1, e1, 2) - 2) < tol);
  /* depth 2: (x,x): K^3 = 1, Theta^3 = 1 + 2 (1/2) 2 = 3. (x,x'): c = 1/pi, th = acos(c),
   * K^3 = 2 (sin th + (pi - th) c) / (2 pi), Theta^3 = K^3 + 2 (pi - th)/(2 pi) (1/pi). */
  assert_true(fabs(kern(TD_KACT_RELU, 2, 2, 0, TD_KERNEL_NTK, e1, e1, 2) - 3) < tol);
  double c = 1 / M_PI, th = acos(c);
  double k3 = (sqrt(1 - c * c) + (M_PI - th) * c) / M_PI;
  assert_true(fabs(kern(TD_KACT_RELU, 2, 2, 0, TD_KERNEL_NNGP, e1, e2, 2) - k3) < tol);
  assert_true(fabs(kern(TD_KACT_RELU, 2, 2, 0, TD_KERNEL_NTK, e1, e2, 2) -
                   (k3 + (M_PI - th) / M_PI * c)) < tol);
  /* erf, d = 1, x = 1, x' = -1, sigma_w2 = sigma_b2 = 1: K^1(x,x) = 2, K^1(x,x') = 0:
   * K^2(x,x') = (2/pi) asin(0) + 1 = 1, Theta^2(x,x') = 1 + (4/pi)/5 * 0 = 1;
   * K^2(x,x) = (2/pi) asin(4/5) + 1, Theta^2(x,x) = K^2 + (4/pi)/sqrt(25 - 16) * 2. */
  double p = 1, m = -1;
  assert_true(fabs(kern(TD_KACT_ERF, 1, 1, 1, TD_KERNEL_NNGP, &p, &m, 1) - 1) < tol);
  assert_true(fabs(kern(TD_KACT_ERF, 1, 1, 1, TD_KERNEL_NTK, &p, &m, 1) - 1) < tol);
  double k2 = 2 / M_PI * asin(0.8) + 1;
  assert_true(fabs(kern(TD_KACT_ERF, 1, 1, 1, TD_KERNEL_NNGP, &p, &p, 1) - k2) < tol);
  assert_true(fabs(kern(TD_KACT_ERF, 1, 1, 1, TD_KERNEL_NTK, &p, &p, 1) -
                   (k2 + 8 / (3 * M_PI))) < tol);
  /* linear, depth 2, sigma_w2 = 3, sigma_b2 = 0.5, x = 2, x' = 1: K = 6.5, 20, 60.5;
   * Theta = 6.5, 20 + 3 * 6.5 = 39.5, 60.5 + 3 * 39.5 = 179. */
  double two = 2, one = 1;
  assert_true(fabs(kern(TD_KACT_LINEAR, 2, 3, 0.5, TD_KERNEL_NNGP, &two, &one, 1) - 60.5) < 1e-13);
  assert_true(fabs(kern(TD_KACT_LINEAR, 2, 3, 0.5, TD_KERNEL_NTK, &two, &one, 1) - 179) < 1e-13);
  /* depth 0: the linear model sigma_w2 x.x'/d + sigma_b2 for both kernels */
  assert_true(fabs(kern(TD_KACT_RELU, 0, 3, 0.5, TD_KERNEL_NTK, &two, &one, 1) - 6.5) < tol);
}

/* The matrix form agrees entry by entry with pairs, x2 = NULL means x, and bad input is
 * refused with the field named. */
static void test_matrix_and_errors(void **state) {
  (void)state;
  double X[6] = {0.3, -1.2, 0.5, 2.0, 0.1, -0.7}, K[9];
  td_kernel_cfg c = {.act = TD_KACT_ERF, .depth = 3, .sigma_w2 = 1.7, .sigma_b2 = 0.2};
  td_err e;
  assert_int_equal(td_kernel_matrix(&c, TD_KERNEL_NTK, X, 3, NULL, 0, 2, K, &e), 0);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      assert_true(K[i * 3 + j] == K[j * 3 + i]);
      double v = kern(TD_KACT_ERF, 3, 1.7, 0.2, TD_KERNEL_NTK, X + 2 * i, X + 2 * j, 2);
      assert_true(K[i * 3 + j] == v);
    }
  c.depth = -1;
  assert_int_equal(td_kernel_matrix(&c, TD_KERNEL_NTK, X, 3, NULL, 0, 2, K, &e), TD_EINVAL);
  assert_string_equal(e.field, "depth");
  c.depth = 1;
  c.sigma_w2 = 0;
  assert_int_equal(td_kernel_matrix(&c, TD_KERNEL_NTK, X, 3, NULL, 0, 2, K, &e), TD_EINVAL);
  assert_string_equal(e.field, "sigma_w2");
  c.sigma_w2 = 1;
  c.sigma_b2 = -1;
  assert_int_equal(td_kernel_matrix(&c, TD_KERNEL_NTK, X, 3, NULL, 0, 2, K, &e), TD_EINVAL);
  assert_string_equal(e.field, "sigma_b2");
}

/* ---- Monte Carlo: a random network in the NTK parameterization, written out here ----- */

static double act_f(td_kact a, double h) {
  return a == TD_KACT_RELU ? (h > 0 ? h : 0) : a == TD_KACT_ERF ? erf(h) : h;
}
static double act_d(td_kact a, double h) {
  return a == TD_KACT_RELU ? (h > 0) : a == TD_KACT_ERF ? 2 / sqrt(M_PI) * exp(-h * h) : 1;
}

typedef struct {
  int d, n, depth;
  double sw, sb;
  double *W[8], *b[8]; /* layer l (0-based): W (n x fan_in), b (n); output: w (n), b (1) */
} net;

/* f(x) and its NTK-parameterization gradient features for inputs xs[0..2): fills f[2] and
 * theta[2][2] = sum over all parameters of df(x_a)/dp df(x_b)/dp, by the chain rule. */
static void net_eval(const net *N, td_kact a, const double *xs[2], double f[2],
                     double theta[2][2], double kcond[2][2]) {
  int L = N->depth, n = N->n, d = N->d;
  double *h[2][8], *z[2][8], *dl[2][8]; /* pre-activations, layer inputs, df/dh */
  for (int s = 0; s < 2; s++) {
    for (int l = 0; l <= L; l++) {
      z[s][l] = calloc((size_t)(l ? n : d), sizeof(double));
      if (l < L) {
        h[s][l] = calloc((size_t)n, sizeof(double));
        dl[s][l] = calloc((size_t)n, sizeof(double));
      }
    }
    memcpy(z[s][0], xs[s], sizeof(double) * d);
    for (int l = 0; l < L; l++) {
      int fin = l ? n : d;
      double sc = N->sw / sqrt(fin);
      for (int i = 0; i < n; i++) {
        double acc = 0;
        for (int j = 0; j < fin; j++) acc += N->W[l][(size_t)i * fin + j] * z[s][l][j];
        h[s][l][i] = sc * acc + N->sb * N->b[l][i];
        z[s][l + 1][i] = act_f(a, h[s][l][i]);
      }
    }
    int fin = L ? n : d;
    double sc = N->sw / sqrt(fin), acc = 0;
    for (int j = 0; j < fin; j++) acc += N->W[L][j] * z[s][L][j];
    f[s] = sc * acc + N->sb * N->b[L][0];
    /* backprop df/dh */
    if (L) {
      for (int i = 0; i < n; i++) dl[s][L - 1][i] = sc * N->W[L][i] * act_d(a, h[s][L - 1][i]);
      for (int l = L - 1; l >= 1; l--) {
        double scl = N->sw / sqrt(n);
        for (int j = 0; j < n; j++) {
          double g = 0;
          for (int i = 0; i < n; i++) g += N->W[l][(size_t)i * n + j] * dl[s][l][i];
          dl[s][l - 1][j] = scl * g * act_d(a, h[s][l - 1][j]);
        }
      }
    }
  }
  for (int s = 0; s < 2; s++)
    for (int t = 0; t < 2; t++) {
      int fin = L ? n : d;
      double zz = 0;
      for (int j = 0; j < fin; j++) zz += z[s][L][j] * z[t][L][j];
      double th = N->sw * N->sw / fin * zz + N->sb * N->sb; /* output layer */
      kcond[s][t] = th; /* E[f(x) f(x') | hidden layers]: the output layer is Gaussian */
      for (int l = 0; l < L; l++) {
        int fl = l ? n : d;
        double za = 0, dd = 0;
        for (int j = 0; j < fl; j++) za += z[s][l][j] * z[t][l][j];
        for (int i = 0; i < n; i++) dd += dl[s][l][i] * dl[t][l][i];
        th += dd * (N->sw * N->sw / fl * za + N->sb * N->sb);
      }
      theta[s][t] = th;
    }
  for (int s = 0; s < 2; s++)
    for (int l = 0; l <= L; l++) {
      free(z[s][l]);
      if (l < L) {
        free(h[s][l]);
        free(dl[s][l]);
      }
    }
}

/* Mean over `S` random networks of E[f(x)f(x') | hidden layers] = sigma_w2/n z.z' + sigma_b2
 * (the conditional expectation over the Gaussian output layer: the same mean as f(x)f(x'),
 * with a variance that falls with width), of Theta(x, x') and, at depth 1, of the raw
 * products f(x)f(x'), for the pairs (x1,x1), (x1,x2),
 * (x2,x2), with their standard errors (sample standard deviation / sqrt(S)), against the
 * analytic values. Tolerance: 4 standard errors (a false alarm has probability ~6e-5 per
 * entry for a Gaussian mean) plus the finite-width bias of the mean, which is exactly 0 at
 * depth 1 (the first layer's pre-activations are exactly Gaussian, and the expectations
 * over the output layer are exact) and O(depth / width) relative at larger depths (Hanin
 * and Nica 2019, "Finite depth and width corrections to the neural tangent kernel"): we
 * allow depth / width times the analytic value. */
static void mc_check(td_kact a, int depth, int width, int S, double sw2, double sb2) {
  const int d = 3;
  const double x1[3] = {0.9, -0.4, 1.3}, x2[3] = {-0.2, 1.1, 0.6};
  const double *xs[2] = {x1, x2};
  double sum[3][3] = {{0}}, sq[3][3] = {{0}};
  net N = {.d = d, .n = width, .depth = depth, .sw = sqrt(sw2), .sb = sqrt(sb2)};
  for (int s = 0; s < S; s++) {
    td_rng r;
    td_rng_init(&r, 1000 + (uint64_t)s, 7);
    for (int l = 0; l <= depth; l++) {
      int fin = l ? width : d, fout = l < depth ? width : 1;
      N.W[l] = malloc(sizeof(double) * (size_t)fin * fout);
      N.b[l] = malloc(sizeof(double) * (size_t)fout);
      td_rng_fill_normal(&r, N.W[l], (size_t)fin * fout, 1.0);
      td_rng_fill_normal(&r, N.b[l], (size_t)fout, 1.0);
    }
    double f[2], th[2][2], kc[2][2];
    net_eval(&N, a, xs, f, th, kc);
    double v[3][3] = {{kc[0][0], kc[0][1], kc[1][1]},
                      {th[0][0], th[0][1], th[1][1]},
                      {f[0] * f[0], f[0] * f[1], f[1] * f[1]}};
    for (int k = 0; k < 3; k++)
      for (int p = 0; p < 3; p++) {
        sum[k][p] += v[k][p];
        sq[k][p] += v[k][p] * v[k][p];
      }
    for (int l = 0; l <= depth; l++) {
      free(N.W[l]);
      free(N.b[l]);
    }
  }
  const double *pa[3] = {x1, x1, x2}, *pb[3] = {x1, x2, x2};
  for (int k = 0; k < (depth == 1 ? 3 : 2); k++)
    for (int p = 0; p < 3; p++) {
      double mean = sum[k][p] / S;
      double var = (sq[k][p] - S * mean * mean) / (S - 1);
      double se = sqrt(var > 0 ? var : 0) / sqrt(S);
      double an = kern(a, depth, sw2, sb2, k == 1 ? TD_KERNEL_NTK : TD_KERNEL_NNGP, pa[p], pb[p], d);
      double tol = 4 * se + (depth > 1 ? (double)depth / width * fabs(an) : 0);
      print_message("act %d depth %d %s pair %d: mc %.6f +- %.6f analytic %.6f (tol %.2g)\n", a,
                    depth, k == 1 ? "ntk " : k ? "f f'" : "nngp", p, mean, se, an, tol);
      assert_true(fabs(mean - an) <= tol);
      /* the check must have power: the standard error is a small fraction of the value
       * (for the raw products f f', whose variance does not fall with width, 5 %) */
      assert_true(se < (k == 2 ? 0.05 : 0.02) * fabs(an) + 1e-3);
    }
}

static void test_mc_depth1(void **state) {
  (void)state;
  /* exact in expectation at any width: width 64, 4000 networks */
  mc_check(TD_KACT_RELU, 1, 64, 4000, 2.0, 0.1);
  mc_check(TD_KACT_ERF, 1, 64, 4000, 1.5, 0.3);
  mc_check(TD_KACT_LINEAR, 1, 64, 4000, 1.0, 0.5);
}

static void test_mc_deep(void **state) {
  (void)state;
  /* width 256, 300 networks: 4 SE is about 4 * 0.5 / sqrt(300 * 256) ~ 1e-2 relative for
   * the NTK, the bias allowance depth/width ~ 1e-2 */
  mc_check(TD_KACT_RELU, 3, 256, 300, 2.0, 0.1);
  mc_check(TD_KACT_ERF, 2, 256, 300, 2.0, 0.2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_closed_forms),
      cmocka_unit_test(test_matrix_and_errors),
      cmocka_unit_test(test_mc_depth1),
      cmocka_unit_test(test_mc_deep),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
