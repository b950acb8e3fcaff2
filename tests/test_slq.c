/* test_slq.c: stochastic Lanczos quadrature on operators with a known spectrum.
 * For diag(d) and a normalized Rademacher probe, (v^T e_i)^2 = 1/n for every i, so each probe's
 * quadrature measure is exactly the spectral measure: nodes = the distinct eigenvalues and
 * weights = multiplicity / n, up to rounding (1e-12). For a rotated matrix or Gaussian probes
 * the weights are random with mean multiplicity / n; tolerances are stated where used. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>

#include "base/rng.h"
#include "curv/slq.h"

#define N 100
static const double k_vals[3] = {-1.0, 2.0, 5.0};
static const double k_mult[3] = {20, 30, 50};

static void fill_diag(double *d) {
  /* interleaved so the eigenspaces are not contiguous blocks */
  for (size_t i = 0; i < N; i++) d[i] = (i % 10) < 2 ? -1.0 : (i % 10) < 5 ? 2.0 : 5.0;
}

static void test_diag_rademacher_exact(void **state) {
  (void)state;
  double d[N];
  fill_diag(d);
  td_slq_opts o = td_slq_opts_default();
  o.n_probes = 4;
  o.steps = 20;
  td_slq_result res;
  td_err err;
  assert_int_equal(td_slq_run(td_linop_diag_matvec, d, N, &o, &res, &err), 0);
  for (size_t p = 0; p < o.n_probes; p++) {
    assert_int_equal(res.len[p], 3); /* invariant subspace after 3 steps */
    double wsum = 0.0;
    for (size_t k = 0; k < 3; k++) {
      assert_true(fabs(res.nodes[p * res.stride + k] - k_vals[k]) <= 1e-12);
      assert_true(fabs(res.weights[p * res.stride + k] - k_mult[k] / N) <= 1e-12);
      wsum += res.weights[p * res.stride + k];
    }
    assert_true(fabs(wsum - 1.0) <= 1e-12);
  }
  assert_int_equal(res.n_matvec, 12);
  /* density: integrates to 1 (trapezoid; the grid spans +-5 sigma beyond the extreme nodes,
   * so the lost tails are ~6e-7 and the trapezoid error is far smaller) and peaks at 5 with
   * height 0.5 / (sigma sqrt(2 pi)) (other Gaussians are 300 sigma away). */
  double integ = 0.0, peak = 0.0, tpeak = 0.0;
  for (size_t g = 0; g + 1 < res.n_grid; g++)
    integ += 0.5 * (res.density[g] + res.density[g + 1]) * (res.grid[g + 1] - res.grid[g]);
  for (size_t g = 0; g < res.n_grid; g++)
    if (res.density[g] > peak) {
      peak = res.density[g];
      tpeak = res.grid[g];
    }
  assert_true(fabs(integ - 1.0) <= 1e-4);
  assert_true(fabs(res.sigma - 0.06) <= 1e-12); /* auto: 1% of the node range 6 */
  assert_true(fabs(tpeak - 5.0) <= (res.grid[1] - res.grid[0]));
  double h = 0.5 / (res.sigma * sqrt(2.0 * M_PI));
  assert_true(peak <= h * (1.0 + 1e-12) && peak >= 0.9 * h); /* grid may miss the top */
  /* JSON shape */
  json_t *j = td_slq_result_json(&res);
  assert_non_null(j);
  assert_int_equal(json_array_size(json_object_get(j, "nodes")), 4);
  assert_int_equal(json_array_size(json_array_get(json_object_get(j, "weights"), 0)), 3);
  assert_int_equal(json_array_size(json_object_get(j, "density")), res.n_grid);
  assert_int_equal(json_array_size(json_object_get(j, "grid")), res.n_grid);
  json_decref(j);
  td_slq_result_deinit(&res);
}

/* Rotated A = U D U^T, Gaussian and Rademacher probes: the nodes are still exactly the three
 * eigenvalues (the Krylov space of any generic start vector is 3-dimensional), and each weight
 * is a random variable with mean mult/n and sd <= sqrt(2 p (1-p) / n) <= 0.071 per probe
 * (a Beta-like law); averaged over 64 probes that is sd <= 0.0089, so 0.04 is > 4 sd. */
static void test_rotated_weights_average(void **state) {
  (void)state;
  double *u = malloc(N * N * sizeof *u), *a = malloc(N * N * sizeof *a), tau[N], d[N];
  fill_diag(d);
  td_rng r;
  td_rng_init(&r, 21, 1);
  td_rng_fill_normal(&r, u, N * N, 1.0);
  assert_int_equal(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, N, N, u, N, tau), 0);
  assert_int_equal(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, N, N, N, u, N, tau), 0);
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j <= i; j++) {
      double s = 0.0;
      for (size_t k = 0; k < N; k++) s += u[i * N + k] * d[k] * u[j * N + k];
      a[i * N + j] = a[j * N + i] = s;
    }
  for (int probe = 0; probe < 2; probe++) {
    td_slq_opts o = td_slq_opts_default();
    o.n_probes = 64;
    o.steps = 10;
    o.probe = probe ? TD_SLQ_GAUSSIAN : TD_SLQ_RADEMACHER;
    o.seed = 3;
    td_slq_result res;
    assert_int_equal(td_slq_run(td_linop_dense_matvec, a, N, &o, &res, NULL), 0);
    double wavg[3] = {0, 0, 0};
    for (size_t p = 0; p < o.n_probes; p++) {
      assert_int_equal(res.len[p], 3);
      for (size_t k = 0; k < 3; k++) {
        /* backward error of the rotation ~ 1e-14; Lanczos adds little */
        assert_true(fabs(res.nodes[p * res.stride + k] - k_vals[k]) <= 1e-10);
        wavg[k] += res.weights[p * res.stride + k] / (double)o.n_probes;
      }
    }
    for (size_t k = 0; k < 3; k++) assert_true(fabs(wavg[k] - k_mult[k] / N) <= 0.04);
    td_slq_result_deinit(&res);
  }
  free(u);
  free(a);
}

/* A continuous spectrum (diag of 400 points uniform in [0, 1]) with m = 30 < n: weights still
 * sum to 1, nodes lie inside [min, max] (Cauchy interlacing), and the SLQ estimate of the
 * second moment tr(A^2)/n is exact for polynomials of degree <= 2m - 1 (Gauss quadrature,
 * Golub & Welsch 1969), so with Rademacher probes on a diagonal A it equals mean(d^2) to
 * rounding. */
static void test_moments_exact(void **state) {
  (void)state;
  const size_t n = 400;
  double *d = malloc(n * sizeof *d), m2 = 0.0;
  td_rng r;
  td_rng_init(&r, 8, 1);
  for (size_t i = 0; i < n; i++) {
    d[i] = td_rng_uniform(&r);
    m2 += d[i] * d[i] / (double)n;
  }
  td_slq_opts o = td_slq_opts_default();
  o.n_probes = 2;
  o.steps = 30;
  o.sigma = 0.05;
  o.lo = -0.5;
  o.hi = 1.5;
  o.n_grid = 101;
  td_slq_result res;
  assert_int_equal(td_slq_run(td_linop_diag_matvec, d, n, &o, &res, NULL), 0);
  assert_true(res.sigma == 0.05 && res.grid[0] == -0.5 && res.grid[100] == 1.5);
  for (size_t p = 0; p < 2; p++) {
    double s = 0.0, q = 0.0;
    assert_int_equal(res.len[p], 30);
    for (size_t k = 0; k < 30; k++) {
      double t = res.nodes[p * res.stride + k], w = res.weights[p * res.stride + k];
      assert_true(t >= -1e-12 && t <= 1.0 + 1e-12);
      s += w;
      q += w * t * t;
    }
    assert_true(fabs(s - 1.0) <= 1e-12);
    assert_true(fabs(q - m2) <= 1e-12);
  }
  td_slq_result_deinit(&res);
  free(d);
}

static void test_errors(void **state) {
  (void)state;
  double d[4] = {1, 2, 3, 4};
  td_slq_result res;
  td_err err;
  td_slq_opts o = td_slq_opts_default();
  o.n_probes = 0;
  assert_int_equal(td_slq_run(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  assert_string_equal(err.field, "n_probes");
  o = td_slq_opts_default();
  o.steps = 5;
  assert_int_equal(td_slq_run(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  o = td_slq_opts_default();
  o.sigma = NAN;
  assert_int_equal(td_slq_run(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  o = td_slq_opts_default();
  o.n_grid = 1;
  assert_int_equal(td_slq_run(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_EINVAL);
  d[2] = NAN;
  o = td_slq_opts_default();
  assert_int_equal(td_slq_run(td_linop_diag_matvec, d, 4, &o, &res, &err), TD_ERANGE);
  assert_null(res.nodes);
  assert_null(td_slq_result_json(&res));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_diag_rademacher_exact),
      cmocka_unit_test(test_rotated_weights_average),
      cmocka_unit_test(test_moments_exact),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
