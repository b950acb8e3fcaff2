/* test_kfac.c: K-FAC (kfac.h): where the Kronecker-factored curvature is exact, what its
 * factors are, the factored damping and its inverse, the moving averages, and the sampled
 * Fisher's unbiasedness.
 *
 * What holds exactly (so the tolerance is rounding only, 1e-12 relative to the largest entry):
 *  - one linear layer, squared error, EXACT Fisher mode: G = I_K and A = (1/B) sum abar abar^T,
 *    and G V A = V A is the GGN product of that model (V -> (1/B) sum_i V abar_i abar_i^T),
 *    which is also the Hessian (the model is linear in its parameters). Checked as dense
 *    n x n matrices built column by column.
 *  - the LAST layer's diagonal block of a deeper net with squared error (EXACT mode): with
 *    h_i the last hidden activations, the GGN block is V -> (1/B) sum V hbar_i hbar_i^T =
 *    I kron A, again what K-FAC gives.
 *  - one linear layer, cross-entropy, EXACT mode, a batch of ONE example: GGN = H_out kron
 *    abar abar^T = K-FAC. With several examples H_out,i varies and K-FAC differs (checked to
 *    differ by more than 1e-3 relative: the statement is not vacuous).
 * Statistical: the SAMPLED mode's G is unbiased. T = 1000 updates of a batch of 8 with
 * sampled labels; a decay-0 twin (same seed, so the same draws) gives each update's own G_t,
 * from which the per-entry mean and its standard error se = sd(G_t) / sqrt(T) are estimated.
 * The decay-1 running mean must equal the mean of the draws to rounding (1e-12 of the
 * largest entry), and each of the 9 entries of the mean must lie within 4.5 se of the EXACT
 * mode's G (the cross-entropy last layer, G = mean_i diag(p_i) - p_i p_i^T): a false alarm
 * has probability ~7e-6 per entry, and the seed is fixed, so the test is deterministic.
 * Measured: largest |G| 0.23, se 0.0014-0.0020, |z| <= 0.74. Scaling the sampled cotangents by
 * 1.12 scales G by 1.25 (0.06 on the largest entry, ~40 se); a missing 1/B or a wrong
 * sampling law is off by far more.
 * Also: the moving-average weights, pi_j, and F_gamma (F_gamma^{-1} v) = v through the
 * eigenbasis inverse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curv/curv.h"
#include "optim/kfac.h"
#include "base/la.h"
#include "nn/model.h"
#include "base/rng.h"

#include <float.h>
#include <lapacke.h>

enum { B = 8, D = 5, K = 3 };

typedef struct fx {
  td_mlp *m;
  td_curv_ctx c;
  td_kfac *k;
  double X[B * D], Y[B * K];
  int y[B];
  size_t n;
} fx;

static void make(fx *f, int n_hidden, int hidden, td_curv_loss loss, int Bn, td_kfac_fisher fk,
                 double decay, uint64_t seed) {
  memset(f, 0, sizeof *f);
  td_mlp_cfg cfg = {.in_dim = D, .out_dim = K, .n_hidden = n_hidden, .act = TD_ACT_TANH,
                    .init_scale = 1.0};
  if (n_hidden) cfg.hidden[0] = hidden;
  td_err err;
  assert_int_equal(td_mlp_create(&cfg, &f->m, &err), 0);
  td_mlp_init(f->m, seed);
  td_rng r;
  td_rng_init(&r, seed, TD_RNG_DATA);
  td_rng_fill_normal(&r, f->X, B * D, 1.0);
  td_rng_fill_normal(&r, f->Y, B * K, 1.0);
  for (int i = 0; i < B; i++) f->y[i] = (int)td_rng_below(&r, K);
  for (int j = 0; j < f->m->n_linear; j++) { /* non-zero biases */
    double *b = NULL;
    const td_layer *L = td_mlp_linear(f->m, j, f->m->params, NULL, &b);
    td_rng_fill_normal(&r, b, (size_t)L->n_out, 0.3);
  }
  f->n = f->m->n_params;
  assert_int_equal(td_curv_init(&f->c, f->m, B, &err), 0);
  assert_int_equal(td_curv_set_batch(&f->c, f->X, f->y, loss == TD_CURV_MSE ? f->Y : NULL, Bn,
                                     loss, &err),
                   0);
  assert_int_equal(td_curv_set_point(&f->c, f->m->params, &err), 0);
  td_kfac_hp hp = {.decay = decay, .inverse_every = 1, .fisher = fk, .seed = seed};
  assert_int_equal(td_kfac_create(f->m, B, &hp, &f->k, &err), 0);
}

static void unmake(fx *f) {
  td_kfac_destroy(f->k);
  td_curv_deinit(&f->c);
  td_mlp_destroy(f->m);
}

/* Dense n x n matrices of the GGN and of K-FAC (undamped), column j = product with e_j. */
static void dense_pair(fx *f, double *Gd, double *Kd) {
  const size_t n = f->n;
  double *e = calloc(n, sizeof *e);
  for (size_t j = 0; j < n; j++) {
    e[j] = 1.0;
    td_curv_ggn_vp(&f->c, e, Gd + j * n);
    td_kfac_curv_vp(f->k, 0.0, e, Kd + j * n);
    e[j] = 0.0;
  }
  free(e);
}

static double max_abs(const double *a, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(a[i]) > m) m = fabs(a[i]);
  return m;
}

static double max_diff(const double *a, const double *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(a[i] - b[i]) > m) m = fabs(a[i] - b[i]);
  return m;
}

static void test_single_layer_mse_exact(void **st) {
  (void)st;
  fx f;
  make(&f, 0, 0, TD_CURV_MSE, B, TD_KFAC_FISHER_EXACT, 0.95, 1);
  td_err err;
  assert_int_equal(td_kfac_update(f.k, &f.c, &err), 0);
  /* G = I exactly (one pass per output, cotangent e_k) */
  int dg = 0, da = 0;
  const double *G = td_kfac_factor_g(f.k, 0, &dg);
  const double *A = td_kfac_factor_a(f.k, 0, &da);
  assert_int_equal(dg, K);
  assert_int_equal(da, D + 1);
  for (int i = 0; i < K; i++)
    for (int j = 0; j < K; j++) assert_true(G[i * K + j] == (i == j ? 1.0 : 0.0));
  assert_true(fabs(A[D * da + D] - 1.0) < 1e-15); /* the homogeneous coordinate */
  const size_t n = f.n;
  double *Gd = malloc(n * n * sizeof *Gd), *Kd = malloc(n * n * sizeof *Kd);
  dense_pair(&f, Gd, Kd);
  assert_true(max_diff(Gd, Kd, n * n) <= 1e-12 * max_abs(Gd, n * n));
  free(Gd);
  free(Kd);
  unmake(&f);
}

static void test_last_layer_block_mse_exact(void **st) {
  (void)st;
  fx f;
  make(&f, 1, 4, TD_CURV_MSE, B, TD_KFAC_FISHER_EXACT, 0.95, 2);
  td_err err;
  assert_int_equal(td_kfac_update(f.k, &f.c, &err), 0);
  const size_t n = f.n;
  const td_layer *Ll = td_mlp_linear(f.m, 1, f.m->params, NULL, NULL);
  const size_t o0 = Ll->off, o1 = Ll->off + Ll->n_params;
  double *Gd = malloc(n * n * sizeof *Gd), *Kd = malloc(n * n * sizeof *Kd);
  dense_pair(&f, Gd, Kd);
  double scale = max_abs(Gd, n * n), worst = 0, first_block = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < n; j++) {
      double dlt = fabs(Gd[i * n + j] - Kd[i * n + j]);
      if (i >= o0 && i < o1 && j >= o0 && j < o1) {
        if (dlt > worst) worst = dlt;
      } else if (i < o0 && j < o0 && dlt > first_block) {
        first_block = dlt;
      }
    }
  assert_true(worst <= 1e-12 * scale);
  /* the first layer's block is an approximation (not exact): it differs */
  assert_true(first_block > 1e-3 * scale);
  free(Gd);
  free(Kd);
  unmake(&f);
}

static void test_single_layer_xent(void **st) {
  (void)st;
  const int sizes[2] = {1, B};
  for (int t = 0; t < 2; t++) {
    fx f;
    make(&f, 0, 0, TD_CURV_XENT, sizes[t], TD_KFAC_FISHER_EXACT, 0.95, 3);
    td_err err;
    assert_int_equal(td_kfac_update(f.k, &f.c, &err), 0);
    const size_t n = f.n;
    double *Gd = malloc(n * n * sizeof *Gd), *Kd = malloc(n * n * sizeof *Kd);
    dense_pair(&f, Gd, Kd);
    double rel = max_diff(Gd, Kd, n * n) / max_abs(Gd, n * n);
    if (sizes[t] == 1) assert_true(rel <= 1e-12);
    else assert_true(rel > 1e-3);
    free(Gd);
    free(Kd);
    unmake(&f);
  }
}

static void test_sampled_is_unbiased(void **st) {
  (void)st;
  enum { T = 1000 };
  fx fe, fs, f0;
  make(&fe, 1, 4, TD_CURV_XENT, B, TD_KFAC_FISHER_EXACT, 1.0, 4);
  make(&fs, 1, 4, TD_CURV_XENT, B, TD_KFAC_FISHER_SAMPLED, 1.0, 4);
  make(&f0, 1, 4, TD_CURV_XENT, B, TD_KFAC_FISHER_SAMPLED, 0.0, 4); /* each update's own G */
  td_err err;
  assert_int_equal(td_kfac_update(fe.k, &fe.c, &err), 0);
  double sum[K * K] = {0}, sum2[K * K] = {0};
  for (int t = 0; t < T; t++) {
    assert_int_equal(td_kfac_update(fs.k, &fs.c, &err), 0);
    assert_int_equal(td_kfac_update(f0.k, &f0.c, &err), 0);
    const double *Gt = td_kfac_factor_g(f0.k, 1, NULL);
    for (int i = 0; i < K * K; i++) {
      sum[i] += Gt[i];
      sum2[i] += Gt[i] * Gt[i];
    }
  }
  assert_int_equal(td_kfac_updates(fs.k), T);
  int dg;
  const double *Ge = td_kfac_factor_g(fe.k, 1, &dg), *Gs = td_kfac_factor_g(fs.k, 1, NULL);
  assert_int_equal(dg, K);
  for (int i = 0; i < K * K; i++) {
    const double mean = sum[i] / T, var = (sum2[i] - T * mean * mean) / (T - 1);
    const double se = sqrt(var > 0 ? var / T : 0);
    /* the running mean (decay 1) is the arithmetic mean of the same draws (same seed) */
    if (!(fabs(Gs[i] - mean) <= 1e-12 * max_abs(Ge, (size_t)K * K)))
      fail_msg("entry %d: running mean %.17g, mean of the draws %.17g", i, Gs[i], mean);
    if (getenv("TD_TEST_VERBOSE"))
      printf("G[%d] exact %.5f sampled %.5f se %.5f z %.2f\n", i, Ge[i], mean, se,
             (mean - Ge[i]) / se);
    if (!(fabs(mean - Ge[i]) <= 4.5 * se && se < 0.01))
      fail_msg("entry %d: sampled mean %.6f, exact %.6f, se %.6f", i, mean, Ge[i], se);
  }
  /* A does not depend on the targets: identical, and the running mean of identical batches
   * is the batch value */
  int da;
  const double *Ae = td_kfac_factor_a(fe.k, 0, &da), *As = td_kfac_factor_a(fs.k, 0, NULL);
  assert_true(max_diff(Ae, As, (size_t)da * da) <= 1e-12 * max_abs(Ae, (size_t)da * da));
  unmake(&fe);
  unmake(&fs);
  unmake(&f0);
}

static void test_moving_average(void **st) {
  (void)st;
  /* decay 0.5: update 1 sets A = A1 (eps_1 = 0), update 2 gives 0.5 A1 + 0.5 A2 (eps_2 =
   * min(1/2, 0.5)), update 3 gives 0.5 (that) + 0.5 A3 (eps_3 = min(2/3, 0.5)). Three batches
   * = three prefixes of the data (B = 2, 4, 8 rows). */
  fx f;
  make(&f, 0, 0, TD_CURV_MSE, 2, TD_KFAC_FISHER_EMPIRICAL, 0.5, 5);
  td_err err;
  const int bs[3] = {2, 4, 8};
  int da = 0;
  double Ab[3][(D + 1) * (D + 1)];
  for (int t = 0; t < 3; t++) { /* each batch's own statistic via a fresh decay-0 object */
    td_kfac *k1;
    td_kfac_hp hp = {.decay = 0.0, .inverse_every = 1, .fisher = TD_KFAC_FISHER_EMPIRICAL};
    assert_int_equal(td_kfac_create(f.m, B, &hp, &k1, &err), 0);
    assert_int_equal(td_curv_set_batch(&f.c, f.X, NULL, f.Y, bs[t], TD_CURV_MSE, &err), 0);
    assert_int_equal(td_curv_set_point(&f.c, f.m->params, &err), 0);
    assert_int_equal(td_kfac_update(k1, &f.c, &err), 0);
    memcpy(Ab[t], td_kfac_factor_a(k1, 0, &da), sizeof Ab[t]);
    td_kfac_destroy(k1);
    assert_int_equal(td_kfac_update(f.k, &f.c, &err), 0);
  }
  double want[(D + 1) * (D + 1)];
  for (int i = 0; i < da * da; i++) want[i] = 0.5 * (0.5 * Ab[0][i] + 0.5 * Ab[1][i]) + 0.5 * Ab[2][i];
  const double *A = td_kfac_factor_a(f.k, 0, NULL);
  assert_true(max_diff(A, want, (size_t)da * da) <= 1e-14 * max_abs(want, (size_t)da * da));
  /* A is symmetric and E[abar abar^T] of the 8 rows: A[i][D] = mean of feature i (decay 0
   * object, batch 8) */
  for (int i = 0; i < D; i++) {
    double mean = 0;
    for (int r = 0; r < 8; r++) mean += f.X[r * D + i] / 8;
    assert_true(fabs(Ab[2][i * da + D] - mean) < 1e-14);
    assert_true(Ab[2][i * da + D] == Ab[2][D * da + i]);
  }
  unmake(&f);
}

static void test_damped_inverse_and_pi(void **st) {
  (void)st;
  fx f;
  make(&f, 1, 6, TD_CURV_XENT, B, TD_KFAC_FISHER_SAMPLED, 0.95, 6);
  td_err err;
  assert_int_equal(td_kfac_update(f.k, &f.c, &err), 0);
  assert_int_equal(td_kfac_refresh(f.k, &err), 0);
  /* pi_j = sqrt((tr A / dim A) / (tr G / dim G)) */
  for (int j = 0; j < 2; j++) {
    int da, dg;
    const double *A = td_kfac_factor_a(f.k, j, &da), *G = td_kfac_factor_g(f.k, j, &dg);
    double ta = 0, tg = 0;
    for (int i = 0; i < da; i++) ta += A[i * da + i];
    for (int i = 0; i < dg; i++) tg += G[i * dg + i];
    assert_true(fabs(td_kfac_pi(f.k, j) - sqrt((ta / da) / (tg / dg))) < 1e-12 * td_kfac_pi(f.k, j));
  }
  /* F_gamma (F_gamma^{-1} v) = v: the eigenbasis inverse against the direct product with the
   * damped factors; the condition number of F_gamma is at most (1 + s_max / gamma')^2 ~ 1e4
   * here, so 1e-9 is a safe bound on rounding. */
  const size_t n = f.n;
  double *v = malloc(n * sizeof *v), *u = malloc(n * sizeof *u), *w = malloc(n * sizeof *w);
  td_rng r;
  td_rng_init(&r, 9, 3);
  td_rng_fill_normal(&r, v, n, 1.0);
  const double gamma = 0.03;
  td_kfac_precondition(f.k, gamma, v, u);
  td_kfac_curv_vp(f.k, gamma, u, w);
  assert_true(max_diff(w, v, n) < 1e-9 * max_abs(v, n));
  /* The damped product itself against a dense evaluation written here from the factors:
   * layer j's block (W_j | b_j) = V (n_out x (n_in + 1)) maps to (G + gamma/pi I) V (A + pi
   * gamma I) (Martens and Grosse 2015, sec. 6.3, factored Tikhonov damping). gamma = 0.03 is
   * far above the floors (dim eps lambda_max), so the floor does not enter. Sums of <= 8
   * products of O(1) terms: 1e-12 relative covers the rounding. */
  td_kfac_curv_vp(f.k, gamma, v, w);
  for (int j = 0; j < 2; j++) {
    int da, dg;
    const double *A = td_kfac_factor_a(f.k, j, &da), *G = td_kfac_factor_g(f.k, j, &dg);
    const double pi = td_kfac_pi(f.k, j);
    double *W, *b, *Wo, *bo;
    td_mlp_linear(f.m, j, v, &W, &b);
    td_mlp_linear(f.m, j, w, &Wo, &bo);
    const int ni = da - 1;
    for (int o = 0; o < dg; o++)
      for (int i = 0; i < da; i++) {
        double want = 0;
        for (int p = 0; p < dg; p++) {
          const double gp = G[o * dg + p] + (p == o ? gamma / pi : 0.0);
          for (int q = 0; q < da; q++) {
            const double vpq = q < ni ? W[p * ni + q] : b[p];
            want += gp * vpq * (A[q * da + i] + (q == i ? gamma * pi : 0.0));
          }
        }
        const double got = i < ni ? Wo[o * ni + i] : bo[o];
        if (!(fabs(got - want) <= 1e-12 * (1.0 + fabs(want))))
          fail_msg("layer %d (%d, %d): curv_vp %.17g, dense %.17g", j, o, i, got, want);
      }
  }
  /* the direction is -F_gamma^{-1} g */
  double *d = malloc(n * sizeof *d);
  td_kfac_hp hp = {.decay = 0.95, .inverse_every = 3, .fisher = TD_KFAC_FISHER_SAMPLED, .seed = 6};
  td_kfac *k2;
  assert_int_equal(td_kfac_create(f.m, B, &hp, &k2, &err), 0);
  const double *g = td_curv_grad(&f.c);
  assert_int_equal(td_kfac_direction(k2, &f.c, g, 0.03, d, &err), 0);
  assert_true(td_kfac_refreshed_last(k2));
  td_kfac_curv_vp(k2, 0.03, d, w);
  for (size_t i = 0; i < n; i++) w[i] += g[i];
  assert_true(max_abs(w, n) < 1e-9 * max_abs(g, n));
  /* factored damping needs gamma > 0 */
  assert_int_equal(td_kfac_direction(k2, &f.c, g, 0.03, d, &err), 0); /* update 2: no refresh */
  assert_false(td_kfac_refreshed_last(k2));
  assert_int_equal(td_kfac_direction(k2, &f.c, g, 0.0, d, &err), TD_EINVAL);
  td_kfac_destroy(k2);
  free(v);
  free(u);
  free(w);
  free(d);
  unmake(&f);
}

/* The damping floor (kfac.h): with an input that is always 0, A has an exact null direction and
 * the gradient has no component on that input's weights. A gamma far below the factors'
 * resolution (1e-150) used to divide the eigendecomposition's rounding (~eps ||V||) by
 * pi gamma ~ 1e-150 and step ~1e17 on those weights, or overflow. With the floor
 * dA_j >= (n_in + 1) eps lambda_max(A_j), dG_j >= n_out eps lambda_max(G_j) (lambda_max
 * computed here with LAPACK's dsyev, independently of the refresh), the amplification of that
 * rounding is at most about 1 / dim relative to the step (kfac.h), so the zero input's
 * weights move by less than ||d|| / (n_in + 1), and the direction is finite. */
static double lmax_dense(const double *M, int n) {
  double *c = malloc((size_t)n * n * sizeof *c), *w = malloc((size_t)n * sizeof *w);
  memcpy(c, M, (size_t)n * n * sizeof *c);
  assert_int_equal(LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', n, c, n, w), 0);
  double m = w[n - 1];
  free(c);
  free(w);
  return m;
}

static void test_damping_floor(void **st) {
  (void)st;
  fx f;
  make(&f, 1, 6, TD_CURV_XENT, B, TD_KFAC_FISHER_EXACT, 0.95, 8);
  /* input 0 is always 0; inputs 2 and 1 are equal: A has the null directions e_0 and
   * (e_1 - e_2)/sqrt(2), the second not axis-aligned, so its computed eigenvector carries
   * rounding from the rest of the spectrum */
  for (int i = 0; i < B; i++) f.X[i * D + 0] = 0.0, f.X[i * D + 2] = f.X[i * D + 1];
  td_err err;
  assert_int_equal(td_curv_set_point(&f.c, f.m->params, &err), 0);
  assert_int_equal(td_kfac_update(f.k, &f.c, &err), 0);
  assert_int_equal(td_kfac_refresh(f.k, &err), 0);
  /* the smallest unfloored gamma, from the factors' largest eigenvalues */
  double want = 0;
  for (int j = 0; j < 2; j++) {
    int da, dg;
    const double *A = td_kfac_factor_a(f.k, j, &da), *G = td_kfac_factor_g(f.k, j, &dg);
    const double pi = td_kfac_pi(f.k, j);
    const double fa = da * DBL_EPSILON * lmax_dense(A, da), fg = dg * DBL_EPSILON * lmax_dense(G, dg);
    if (fa / pi > want) want = fa / pi;
    if (fg * pi > want) want = fg * pi;
  }
  assert_true(fabs(td_kfac_gamma_floor(f.k) - want) <= 1e-12 * want);
  assert_int_equal(td_kfac_floored(f.k, 1e-150), 4);
  assert_int_equal(td_kfac_floored(f.k, 1e-3), 0);
  const size_t n = f.n;
  const double *g = td_curv_grad(&f.c);
  double *d = malloc(n * sizeof *d), *w = malloc(n * sizeof *w);
  td_kfac_precondition(f.k, 1e-150, g, d);
  const double dn = td_la_nrm2(n, d);
  assert_true(isfinite(dn) && dn > 0);
  /* layer 0's W is 6 x 5 row-major at offset 0: column 0 is the zero input's weights */
  double z = 0;
  for (int o = 0; o < 6; o++) {
    z = fmax(z, fabs(d[o * D + 0]));
    z = fmax(z, fabs(d[o * D + 1] - d[o * D + 2]) / sqrt(2.0));
  }
  print_message("null-space components: max %.3g, ||d|| %.3g\n", z, dn);
  assert_true(z < dn / (D + 1));
  /* F_floored (F_floored^{-1} g) = g: curv_vp applies the same floored damping */
  td_kfac_curv_vp(f.k, 1e-150, d, w);
  for (size_t i = 0; i < n; i++) w[i] -= g[i];
  /* relative residual: the damped condition number is at most ~1/(dim eps)^2 per Kronecker
   * pair, so only the direction's scale is checked: residual <= 1e-3 ||g|| */
  assert_true(td_la_nrm2(n, w) <= 1e-3 * td_la_nrm2(n, g));
  free(d);
  free(w);
  unmake(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_single_layer_mse_exact),
      cmocka_unit_test(test_last_layer_block_mse_exact),
      cmocka_unit_test(test_single_layer_xent),
      cmocka_unit_test(test_sampled_is_unbiased),
      cmocka_unit_test(test_moving_average),
      cmocka_unit_test(test_damped_inverse_and_pi),
      cmocka_unit_test(test_damping_floor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
