/* test_games.c: momentum as a linear system and differentiable games (core/games): the heavy
 * ball and Nesterov iteration matrices against their eigenvalues by hand and LAPACK, the
 * stability thresholds 2/lr, (2+2b)/lr, (2+2b)/((1+2b) lr), Polyak's, Nesterov's and
 * Lessard-Recht-Packard's parameters against their stated rates and against perturbations,
 * the game Jacobians against finite differences, the update Jacobians against finite
 * differences of the update map, the bilinear game's radii and contraction rates against
 * their closed forms (1e-10), the Dirac-GAN's equilibrium eigenvalues against Mescheder et
 * al. 2018, and the `momentum` and `game` kinds (summaries, validation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <complex.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "games/game.h"
#include "games/gan.h"
#include "games/momentum.h"
#include "kinds/registry.h"

/* Largest eigenvalue modulus of a 2x2 matrix by LAPACK (an independent route). */
static double lapack_rho2(const double M[4]) {
  double A[4], wr[2], wi[2];
  memcpy(A, M, sizeof A);
  assert_int_equal(LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', 2, A, 2, wr, wi, NULL, 1, NULL, 1), 0);
  return fmax(hypot(wr[0], wi[0]), hypot(wr[1], wi[1]));
}

/* Heavy ball with beta = 1/4: z^2 - (5/4 - a) z + 1/4. By hand: a = 1/4 gives (z - 1/2)^2
 * (critical, rho 1/2); a = 1/10 gives tr 1.15, disc 1.15^2 - 1 = 0.3225, roots
 * (1.15 +- sqrt(0.3225))/2 (over); a = 1 gives tr 1/4, disc -15/16, |z| = sqrt(det) = 1/2
 * (under). Rounding only: 1e-12 (critical: the double root is split by sqrt(rounding of
 * disc) ~ 1e-8, so 1e-7 there). */
static void test_heavy_ball_by_hand(void **state) {
  (void)state;
  td_mom_mode m;
  td_mom_analyze(TD_MOM_HEAVY_BALL, 1.0, 0.25, 0.25, &m);
  assert_int_equal(m.damping, TD_DAMP_CRITICAL);
  assert_true(fabs(m.rho - 0.5) < 1e-7);
  td_mom_analyze(TD_MOM_HEAVY_BALL, 1.0, 0.25, 0.1, &m);
  assert_int_equal(m.damping, TD_DAMP_OVER);
  double s = sqrt(0.3225);
  assert_true(fabs(m.eig_re[0] - (1.15 + s) / 2) < 1e-12);
  assert_true(fabs(m.eig_re[1] - (1.15 - s) / 2) < 1e-12);
  assert_true(fabs(m.eig_im[0]) == 0 && fabs(m.eig_im[1]) == 0);
  td_mom_analyze(TD_MOM_HEAVY_BALL, 1.0, 0.25, 1.0, &m);
  assert_int_equal(m.damping, TD_DAMP_UNDER);
  assert_true(fabs(m.eig_re[0] - 0.125) < 1e-12);
  assert_true(fabs(fabs(m.eig_im[0]) - sqrt(15.0 / 16.0) / 2) < 1e-12);
  assert_true(fabs(m.rho - 0.5) < 1e-12);
  /* The matrices themselves, written from the recursions. */
  double M[4];
  td_mom_matrix(TD_MOM_HEAVY_BALL, 0.5, 0.3, 2.0, M); /* a = 1 */
  assert_true(M[0] == 1.3 - 1.0 && M[1] == -0.3 && M[2] == 1 && M[3] == 0);
  td_mom_matrix(TD_MOM_NESTEROV, 0.5, 0.3, 1.0, M); /* a = 1/2 */
  assert_true(fabs(M[0] - 0.5 * 1.3) < 1e-15 && fabs(M[1] + 0.5 * 0.3) < 1e-15);
}

/* Nesterov by hand: tr = (1 + b)(1 - a), det = b (1 - a); with b = 0.5, a = 0.2:
 * tr = 1.2, det = 0.4, disc = 1.44 - 1.6 < 0, |z| = sqrt(0.4). And every method's rho
 * against LAPACK's dgeev over a grid (1e-12 away from double roots, 1e-7 near them). */
static void test_nesterov_and_lapack(void **state) {
  (void)state;
  td_mom_mode m;
  td_mom_analyze(TD_MOM_NESTEROV, 0.2, 0.5, 1.0, &m);
  assert_int_equal(m.damping, TD_DAMP_UNDER);
  assert_true(fabs(m.rho - sqrt(0.4)) < 1e-12);
  assert_true(fabs(m.eig_re[0] - 0.6) < 1e-12);
  for (int meth = 0; meth < 3; meth++)
    for (double lr = 0.05; lr < 4.5; lr += 0.173)
      for (double b = 0; b < 0.99; b += 0.07) {
        td_mom_analyze((td_mom_method)meth, lr, b, 1.0, &m);
        double r = lapack_rho2(m.M), tol = m.damping == TD_DAMP_CRITICAL ? 1e-7 : 1e-10;
        assert_true(fabs(m.rho - r) < tol * fmax(1, r));
      }
}

/* The stability thresholds, derived in momentum.h (Jury's test) and written here as
 * constants: at lambda = threshold an eigenvalue is -1 (rho = 1 to rounding); just below
 * rho < 1, just above rho > 1. */
static void test_thresholds(void **state) {
  (void)state;
  double lr = 0.37;
  for (double b = 0; b < 0.99; b += 0.09) {
    double thr[3] = {2.0 / lr, (2 + 2 * b) / lr, (2 + 2 * b) / ((1 + 2 * b) * lr)};
    for (int meth = 0; meth < 3; meth++) {
      td_mom_method mm = (td_mom_method)meth;
      assert_true(fabs(td_mom_threshold(mm, lr, b) - thr[meth]) < 1e-12 * thr[meth]);
      assert_true(fabs(td_mom_lr_threshold(mm, b, thr[meth]) - lr) < 1e-12);
      double bb = meth == 0 ? 0 : b;
      td_mom_mode m;
      td_mom_analyze(mm, lr, bb, thr[meth], &m);
      assert_true(fabs(m.rho - 1) < 1e-12);
      assert_true(td_mom_rho(mm, lr, bb, thr[meth] * (1 - 1e-6)) < 1);
      assert_true(td_mom_rho(mm, lr, bb, thr[meth] * (1 + 1e-6)) > 1);
    }
  }
}

/* Polyak: every curvature in [mu, L] has rho = sqrt(beta) = (sqrt k - 1)/(sqrt k + 1) (the
 * modes are under- or critically damped with |z|^2 = det = beta); 1e-7 for the critical
 * end points. Optimality: no perturbation of (lr, beta) by 1e-3 lowers the worst rho over
 * [mu, L] (sampled on 2001 points with both ends). */
static void test_polyak(void **state) {
  (void)state;
  double mu = 0.01, L = 1, k = L / mu;
  td_mom_tuned t = td_mom_polyak(mu, L);
  double q = (sqrt(k) - 1) / (sqrt(k) + 1);
  assert_true(fabs(t.lr - 4.0 / pow(sqrt(L) + sqrt(mu), 2)) < 1e-14);
  assert_true(fabs(t.beta - q * q) < 1e-14);
  assert_true(fabs(t.rate - q) < 1e-14);
  double lam[2001];
  for (int i = 0; i < 2001; i++) lam[i] = mu + (L - mu) * i / 2000.0;
  for (int i = 0; i < 2001; i++)
    assert_true(fabs(td_mom_rho(TD_MOM_HEAVY_BALL, t.lr, t.beta, lam[i]) - q) < 1e-7);
  double best = td_mom_worst_rho(TD_MOM_HEAVY_BALL, t.lr, t.beta, lam, 2001);
  for (int dl = -1; dl <= 1; dl++)
    for (int db = -1; db <= 1; db++) {
      if (!dl && !db) continue;
      double w = td_mom_worst_rho(TD_MOM_HEAVY_BALL, t.lr * (1 + 1e-3 * dl), t.beta + 1e-3 * db,
                                  lam, 2001);
      assert_true(w > best);
    }
}

/* Nesterov 1/L with (sqrt k - 1)/(sqrt k + 1): worst rho over [mu, L] is 1 - 1/sqrt k
 * (attained at mu, critically damped: 1e-7); LRP's 4/(3L + mu): 1 - 2/sqrt(3k + 1)
 * (Lessard, Recht and Packard 2016), attained at the end points; both by a dense scan. */
static void test_nesterov_tunings(void **state) {
  (void)state;
  double lam[4001];
  for (int c = 0; c < 3; c++) {
    double mu = c == 0 ? 0.01 : c == 1 ? 1e-3 : 0.2, L = c == 2 ? 3.0 : 1.0, k = L / mu;
    for (int i = 0; i < 4001; i++) lam[i] = mu + (L - mu) * i / 4000.0;
    td_mom_tuned s = td_mom_nesterov_std(mu, L);
    assert_true(fabs(s.lr - 1 / L) < 1e-15);
    assert_true(fabs(s.beta - (sqrt(k) - 1) / (sqrt(k) + 1)) < 1e-14);
    double w = td_mom_worst_rho(TD_MOM_NESTEROV, s.lr, s.beta, lam, 4001);
    assert_true(fabs(w - (1 - 1 / sqrt(k))) < 1e-7);
    td_mom_tuned r = td_mom_nesterov_lrp(mu, L);
    assert_true(fabs(r.lr - 4 / (3 * L + mu)) < 1e-15);
    w = td_mom_worst_rho(TD_MOM_NESTEROV, r.lr, r.beta, lam, 4001);
    assert_true(fabs(w - (1 - 2 / sqrt(3 * k + 1))) < 1e-7);
    /* LRP's tuning beats the textbook constants, as the paper reports. */
    assert_true(w < 1 - 1 / sqrt(k));
  }
}

/* Central differences of the field: error h^2 |xi'''| / 6 + eps |xi| / h ~ 1e-12 + 1e-10. */
static void check_jacobian_fd(const td_game *g, const double *w) {
  int d = g->d;
  double J[64], wp[8], fp[8], fm[8];
  td_game_jacobian(g, w, J);
  const double h = 1e-6;
  for (int j = 0; j < d; j++) {
    memcpy(wp, w, (size_t)d * sizeof *w);
    wp[j] = w[j] + h;
    td_game_field(g, wp, fp);
    wp[j] = w[j] - h;
    td_game_field(g, wp, fm);
    for (int i = 0; i < d; i++) {
      double fd = (fp[i] - fm[i]) / (2 * h);
      if (fabs(fd - J[i * d + j]) > 1e-7) fail_msg("J[%d][%d] = %g, fd %g", i, j, J[i * d + j], fd);
    }
  }
}

/* The field is (grad_x f, -grad_y f): central differences of the value (Dirac-GAN without a
 * penalty, whose xi_psi term is not part of f; bilinear; quadratic). */
static void check_field_fd(const td_game *g, const double *w) {
  int d = g->d;
  double xi[8], wp[8];
  td_game_field(g, w, xi);
  const double h = 1e-6;
  for (int j = 0; j < d; j++) {
    memcpy(wp, w, (size_t)d * sizeof *w);
    wp[j] = w[j] + h;
    double fp = td_game_value(g, wp);
    wp[j] = w[j] - h;
    double fm = td_game_value(g, wp);
    double fd = (fp - fm) / (2 * h) * (j < g->nx ? 1 : -1);
    if (fabs(fd - xi[j]) > 1e-7) fail_msg("xi[%d] = %g, fd %g", j, xi[j], fd);
  }
}

static void test_game_jacobians_fd(void **state) {
  (void)state;
  td_game g;
  double A[6] = {0.3, -1.2, 0.7, 2.0, -0.4, 0.9};
  double w[5] = {0.4, -0.8, 1.1, 0.25, -0.6};
  assert_int_equal(td_game_init_bilinear(&g, 3, 2, A, NULL), 0);
  check_jacobian_fd(&g, w);
  check_field_fd(&g, w);
  td_game_deinit(&g);
  double P[4] = {1.0, 0.3, 0.3, 0.5}, C[4] = {0.2, -1.0, 1.5, 0.4}, Q[4] = {0.7, -0.1, -0.1, 0.2};
  assert_int_equal(td_game_init_quadratic(&g, 2, 2, P, C, Q, NULL), 0);
  check_jacobian_fd(&g, w);
  check_field_fd(&g, w);
  td_game_deinit(&g);
  double pts[3][2] = {{0.7, -1.3}, {-2.0, 0.4}, {0.05, 3.0}};
  for (int c = 0; c < 4; c++) {
    double gam = c == 1 ? 0.8 : 0, sig = c == 2 ? 0.7 : c == 3 ? 0.3 : 0;
    assert_int_equal(td_game_init_dirac(&g, gam, sig, NULL), 0);
    for (int k = 0; k < 3; k++) {
      check_jacobian_fd(&g, pts[k]);
      if (gam == 0) check_field_fd(&g, pts[k]);
    }
    td_game_deinit(&g);
  }
}

/* Gauss-Hermite: the weights sum to 1 and reproduce E z^2 = 1, E z^4 = 3, E z^6 = 15 of
 * N(0, 1) (exact for polynomials of degree <= 79; 1e-12 rounding). */
static void test_quadrature(void **state) {
  (void)state;
  td_game g;
  assert_int_equal(td_game_init_dirac(&g, 0, 1.0, NULL), 0);
  double m[4] = {0, 0, 0, 0};
  for (int k = 0; k < g.nq; k++)
    for (int p = 0; p < 4; p++) m[p] += g.qw[k] * pow(g.qz[k], 2 * p);
  assert_true(fabs(m[0] - 1) < 1e-12 && fabs(m[1] - 1) < 1e-12);
  assert_true(fabs(m[2] - 3) < 1e-11 && fabs(m[3] - 15) < 1e-10);
  td_game_deinit(&g);
}

/* Dirac-GAN at (0, 0): J = [[0, phi'(0)], [-phi'(0), gamma - 2 sigma^2 phi''(0)]] with
 * phi'(0) = 1/2, phi''(0) = -1/4 (Mescheder et al. 2018, Lemma 2.3 / 3.2 / 3.3 for -J):
 * eigenvalues +-i/2; (gamma +- sqrt(gamma^2 - 1))/2; s/2 +- i sqrt(1/4 - s^2/4)... with
 * s = sigma^2/2, i.e. trace s and determinant 1/4. */
static void test_dirac_equilibrium(void **state) {
  (void)state;
  td_game g;
  double w0[2] = {0, 0}, J[4], re[2], im[2];
  assert_int_equal(td_game_init_dirac(&g, 0, 0, NULL), 0);
  td_game_jacobian(&g, w0, J);
  assert_int_equal(td_game_eig(2, J, re, im, NULL), 0);
  assert_true(fabs(re[0]) < 1e-15 && fabs(re[1]) < 1e-15);
  assert_true(fabs(im[0] - 0.5) < 1e-15 && fabs(im[1] + 0.5) < 1e-15);
  td_game_deinit(&g);
  assert_int_equal(td_game_init_dirac(&g, 3.0, 0, NULL), 0);
  td_game_jacobian(&g, w0, J);
  assert_int_equal(td_game_eig(2, J, re, im, NULL), 0);
  assert_true(fabs(re[0] - (3 + sqrt(8.0)) / 2) < 1e-12 && fabs(re[1] - (3 - sqrt(8.0)) / 2) < 1e-12);
  td_game_deinit(&g);
  double sig = 0.8, s = sig * sig / 2;
  assert_int_equal(td_game_init_dirac(&g, 0, sig, NULL), 0);
  td_game_jacobian(&g, w0, J);
  assert_int_equal(td_game_eig(2, J, re, im, NULL), 0);
  assert_true(fabs(re[0] - s / 2) < 1e-12);
  assert_true(fabs(fabs(im[0]) - sqrt(0.25 - s * s / 4)) < 1e-12);
  td_game_deinit(&g);
}

/* One step of the update map from w (and, for optimistic, from w_prev). */
static void step_from(const td_game *g, td_game_opt *o, const double *w, const double *wprev,
                      double *out) {
  int d = g->d;
  memcpy(out, w, (size_t)d * sizeof *w);
  o->have_prev = 0;
  if (o->alg == TD_GALG_OPTIMISTIC) {
    td_game_field(g, wprev, o->prev_xi);
    o->have_prev = 1;
  }
  td_game_step(g, o, out);
}

/* The update Jacobians against central differences of the update map on a quadratic game
 * (linear field: the map is affine, differences are exact up to rounding, 1e-9). */
static void test_update_jacobians_fd(void **state) {
  (void)state;
  td_game g;
  double P[1] = {0.6}, C[2] = {1.0, -0.5}, Q[4] = {0.3, 0.1, 0.1, 0.8};
  assert_int_equal(td_game_init_quadratic(&g, 1, 2, P, C, Q, NULL), 0);
  double w[3] = {0.5, -0.7, 1.2}, wprev[3] = {0.1, 0.3, -0.2};
  for (int a = 0; a < 7; a++) {
    td_game_opt o = {.alg = (td_game_alg)a, .lr = 0.3, .gamma = 0.7, .lambda = 0.9,
                     .sga_eps = 0.1, .sga_align = 1};
    assert_int_equal(td_game_opt_init(&o, &g, NULL), 0);
    int n = td_game_update_dim(&g, &o);
    double U[36], s[6], sp[3], sm[3], h = 1e-4;
    td_game_update_jacobian(&g, &o, w, U);
    for (int j = 0; j < n; j++) {
      double wp[3], wm[3], pp[3], pm[3];
      memcpy(wp, w, sizeof wp);
      memcpy(wm, w, sizeof wm);
      memcpy(pp, wprev, sizeof pp);
      memcpy(pm, wprev, sizeof pm);
      if (j < 3) {
        wp[j] += h;
        wm[j] -= h;
      } else {
        pp[j - 3] += h;
        pm[j - 3] -= h;
      }
      step_from(&g, &o, wp, pp, sp);
      step_from(&g, &o, wm, pm, sm);
      for (int i = 0; i < 3; i++) {
        double fd = (sp[i] - sm[i]) / (2 * h);
        if (fabs(fd - U[i * n + j]) > 1e-9)
          fail_msg("alg %d U[%d][%d] = %g, fd %g", a, i, j, U[i * n + j], fd);
      }
      /* optimistic: the lower block shifts w_t into w_{t-1}. */
      for (int i = 3; i < n; i++) assert_true(U[i * n + j] == (j == i - 3));
    }
    (void)s;
    td_game_opt_deinit(&o);
  }
  td_game_deinit(&g);
}

/* The bilinear game f = a x y from (1, 1): J has eigenvalues +-i a and every rule of the
 * form I - eta K(J) is a scaled rotation, so ||w_t|| = r^t ||w_0|| exactly with
 *   simultaneous r = sqrt(1 + eta^2 a^2)                 (spirals out)
 *   extragradient r = sqrt(1 - eta^2 a^2 + eta^4 a^4)     (|1 - eta c + eta^2 c^2|, c = i a)
 *   consensus r = sqrt((1 - eta gamma a^2)^2 + eta^2 a^2)  (J^T J = a^2 I)
 *   sga r as consensus with lambda (A = J; the sign rule gives +: <xi, J^T xi> = 0)
 *   hamiltonian r = 1 - eta a^2.
 * Alternating GDA keeps x^2 + y^2 - eta a x y (M^T Q M = Q for M = [[1, -eta a],
 * [eta a, 1 - eta^2 a^2]]) and so stays on a bounded orbit. Optimistic: the update's
 * spectral radius is the largest root of z^2 - (1 - 2 eta c) z - eta c, c = +-i a. Relative
 * 1e-10 after 300 steps (rounding grows like 300 eps). */
static void test_bilinear_rates(void **state) {
  (void)state;
  double a = 1.7, eta = 0.08, gam = 0.6, lam = 0.6;
  td_game g;
  assert_int_equal(td_game_init_bilinear(&g, 1, 1, &a, NULL), 0);
  double e2 = eta * eta * a * a;
  double r[7] = {sqrt(1 + e2), NAN, sqrt(1 - e2 + e2 * e2), NAN,
                 sqrt(pow(1 - eta * gam * a * a, 2) + e2), sqrt(pow(1 - eta * lam * a * a, 2) + e2),
                 1 - eta * a * a};
  for (int al = 0; al < 7; al++) {
    td_game_opt o = {.alg = (td_game_alg)al, .lr = eta, .gamma = gam, .lambda = lam,
                     .sga_eps = 0.1, .sga_align = 1};
    assert_int_equal(td_game_opt_init(&o, &g, NULL), 0);
    double w[2] = {1, 1}, n0 = sqrt(2.0), U[16], re[4], im[4];
    td_game_update_jacobian(&g, &o, w, U);
    int n = td_game_update_dim(&g, &o);
    assert_int_equal(td_game_eig(n, U, re, im, NULL), 0);
    double rho = hypot(re[0], im[0]);
    double qmin = INFINITY, qmax = 0;
    for (int t = 1; t <= 300; t++) {
      td_game_step(&g, &o, w);
      if (!isnan(r[al])) {
        double want = pow(r[al], t) * n0;
        if (fabs(hypot(w[0], w[1]) - want) > 1e-10 * want)
          fail_msg("alg %d step %d: %.17g vs %.17g", al, t, hypot(w[0], w[1]), want);
      }
      double qv = w[0] * w[0] + w[1] * w[1] - eta * a * w[0] * w[1];
      qmin = fmin(qmin, qv);
      qmax = fmax(qmax, qv);
    }
    if (!isnan(r[al])) assert_true(fabs(rho - r[al]) < 1e-12);
    if (al == TD_GALG_ALTERNATING) {
      double q0 = 2 - eta * a;
      assert_true(fabs(qmin - q0) < 1e-12 && fabs(qmax - q0) < 1e-12);
      assert_true(fabs(rho - 1) < 1e-12); /* det 1, complex pair on the unit circle */
    }
    if (al == TD_GALG_OPTIMISTIC) {
      double best = 0;
      for (int sgn = -1; sgn <= 1; sgn += 2) {
        double complex c = I * a * sgn, b = 1 - 2 * eta * c, disc = csqrt(b * b + 4 * eta * c);
        best = fmax(best, fmax(cabs((b + disc) / 2), cabs((b - disc) / 2)));
      }
      assert_true(fabs(rho - best) < 1e-12);
      assert_true(rho < 1); /* optimism contracts at this step size */
    }
    td_game_opt_deinit(&o);
  }
  td_game_deinit(&g);
}

static json_t *run_kind(const char *kind, const char *params, int want_rc) {
  json_t *p = json_loads(params, 0, NULL), *filled = NULL, *sum = NULL;
  assert_non_null(p);
  td_err e = {0};
  assert_int_equal(td_kinds_validate(kind, p, NULL, &filled, NULL, &e), 0);
  int rc = td_kinds_find(kind)->run(filled, NULL, &sum, &e);
  if (rc != want_rc) fail_msg("%s: rc %d (%s)", params, rc, e.msg);
  json_decref(p);
  json_decref(filled);
  return sum;
}

static double sget(const json_t *s, const char *k) { return json_number_value(json_object_get(s, k)); }

/* The kinds: a single curvature under gd has x_t = (1 - a)^t x_0, so the observed rate is
 * |1 - a| to rounding; Polyak's run reports the stated rate and a worst rho equal to it;
 * the game kind's bilinear summary matches the closed-form radius, Dirac-GAN with R1
 * reports the equilibrium eigenvalues (gamma +- sqrt(gamma^2 - 1))/2. */
static void test_kinds(void **state) {
  (void)state;
  json_t *s = run_kind("momentum", "{\"spectrum\": [0.5], \"method\": \"gd\", \"lr\": 1, "
                                   "\"momentum\": 0, \"steps\": 60}", 0);
  assert_true(fabs(sget(s, "observed_rate") - 0.5) < 1e-12);
  assert_true(fabs(sget(s, "predicted_rate") - 0.5) < 1e-15);
  json_decref(s);
  s = run_kind("momentum", "{\"kappa\": 400, \"n\": 30, \"tuning\": \"optimal\", \"steps\": 400}", 0);
  assert_true(fabs(sget(s, "stated_rate") - 19.0 / 21.0) < 1e-14);
  assert_true(fabs(sget(s, "predicted_rate") - 19.0 / 21.0) < 1e-7);
  /* observed over a finite window of an oscillating mode: within 2 % of the radius */
  assert_true(fabs(sget(s, "observed_rate") - 19.0 / 21.0) < 0.02);
  json_decref(s);
  s = run_kind("game", "{\"game\": {\"A\": [[2]]}, \"lr\": 0.1, \"steps\": 50}", 0);
  assert_true(fabs(sget(s, "predicted_rate") - sqrt(1.04)) < 1e-12);
  assert_true(fabs(sget(s, "observed_rate") - sqrt(1.04)) < 1e-10);
  json_decref(s);
  s = run_kind("game", "{\"game\": {\"name\": \"dirac_gan\", \"penalty\": \"r1\", "
                       "\"penalty_weight\": 3}, \"lr\": 0.1, \"steps\": 20}", 0);
  const json_t *eq = json_object_get(s, "jacobian_eig_at_equilibrium");
  assert_true(fabs(json_number_value(json_array_get(json_object_get(eq, "re"), 0)) -
                   (3 + sqrt(8.0)) / 2) < 1e-12);
  json_decref(s);
}

static void expect_invalid(const char *kind, const char *params, const char *field) {
  json_t *p = json_loads(params, 0, NULL), *filled = NULL;
  td_err e = {0};
  int rc = td_kinds_validate(kind, p, NULL, &filled, NULL, &e);
  if (rc != TD_EINVAL || strcmp(e.field, field) != 0)
    fail_msg("%s: rc %d field '%s' (%s), want %s", params, rc, e.field, e.msg, field);
  json_decref(p);
}

static void test_validation(void **state) {
  (void)state;
  expect_invalid("game", "{\"game\": {\"A\": [[1, 2], [3]]}}", "params.game.A[1]");
  expect_invalid("game", "{\"game\": {\"A\": [[1, \"x\"]]}}", "params.game.A[0][1]");
  expect_invalid("game", "{\"game\": {\"A\": [[1, 2]]}, \"init\": [1, 2]}", "params.init");
  expect_invalid("game", "{\"game\": {\"name\": \"dirac_gan\", \"A\": [[1]]}}", "params.game.A");
  expect_invalid("game", "{\"game\": {\"name\": \"quadratic\", \"P\": [[1, 0], [0, 1]]}}",
                 "params.game.P");
  expect_invalid("game", "{\"algorithm\": \"gda\"}", "params.algorithm");
  expect_invalid("game", "{\"game\": {\"penalty_weight\": 2, \"name\": \"dirac_gan\"}}",
                 "params.game.penalty_weight");
  expect_invalid("momentum", "{\"method\": \"gd\", \"momentum\": 0.5}", "params.momentum");
  expect_invalid("momentum", "{\"method\": \"heavy_ball\", \"tuning\": \"lrp\"}", "params.tuning");
  expect_invalid("momentum", "{\"spectrum\": [1, -1]}", "params.spectrum[1]");
}

/* The GAN game: grad f against central differences of f, H u against central differences
 * of grad f (tanh networks: smooth; error h^2 f''' ~ 1e-10 plus rounding eps f / h ~ 1e-11 at
 * h = 1e-5; tolerance 1e-6 relative to the largest entry). Coverage on hand-made samples. */
static void test_gan_products(void **state) {
  (void)state;
  td_gan_cfg c = {.latent = 3, .hidden = 5, .depth = 2, .tanh = 1, .batch = 7, .modes = 8,
                  .radius = 2, .std = 0.02};
  td_gan *G;
  assert_int_equal(td_gan_create(&c, &G, NULL), 0);
  int d = td_gan_n_gen(G) + td_gan_n_disc(G);
  assert_int_equal(d, (3 * 5 + 5) + (5 * 5 + 5) + (5 * 2 + 2) + (2 * 5 + 5) + (5 * 5 + 5) + 6);
  double *w = malloc(6 * (size_t)d * sizeof *w), *g0 = w + d, *u = g0 + d, *hu = u + d,
         *gp = hu + d, *gm = gp + d;
  double xr[14], z[21];
  td_gan_init(G, 3, w);
  td_gan_batch(G, 3, 5, xr, z);
  for (int i = 0; i < d; i++) {
    w[i] += 0.3 * sin(1.7 * i); /* move away from b = 0 */
    u[i] = cos(0.9 * i);
  }
  td_gan_grad(G, w, xr, z, g0, u, hu);
  const double h = 1e-5;
  double gmax = 0, hmax = 0;
  for (int i = 0; i < d; i++) {
    gmax = fmax(gmax, fabs(g0[i]));
    hmax = fmax(hmax, fabs(hu[i]));
  }
  for (int i = 0; i < d; i++) {
    double wi = w[i];
    w[i] = wi + h;
    double fp = td_gan_grad(G, w, xr, z, gp, NULL, NULL);
    w[i] = wi - h;
    double fm = td_gan_grad(G, w, xr, z, gp, NULL, NULL);
    w[i] = wi;
    double fd = (fp - fm) / (2 * h);
    if (fabs(fd - g0[i]) > 1e-6 * gmax) fail_msg("grad[%d] %g vs fd %g", i, g0[i], fd);
  }
  double *wp = malloc((size_t)d * sizeof *wp);
  for (int i = 0; i < d; i++) wp[i] = w[i] + h * u[i];
  td_gan_grad(G, wp, xr, z, gp, NULL, NULL);
  for (int i = 0; i < d; i++) wp[i] = w[i] - h * u[i];
  td_gan_grad(G, wp, xr, z, gm, NULL, NULL);
  for (int i = 0; i < d; i++) {
    double fd = (gp[i] - gm[i]) / (2 * h);
    if (fabs(fd - hu[i]) > 1e-6 * hmax) fail_msg("Hu[%d] %g vs fd %g", i, hu[i], fd);
  }
  /* the value: mean log sigmoid(D(x)) + mean log sigmoid(-D(G(z))) <= 0 */
  assert_true(td_gan_grad(G, w, xr, z, gp, NULL, NULL) < 0);
  free(wp);
  free(w);
  td_gan_destroy(G);
  /* coverage: 100 samples, 50 at mode 0, 30 at mode 2 (within 3 std), 1 at mode 5 (below
   * 1%... exactly 1 of 100 = 1%: counts), 19 far away. */
  double s[200];
  for (int i = 0; i < 100; i++) {
    double a = i < 50 ? 0 : i < 80 ? 2 * M_PI * 2 / 8 : 2 * M_PI * 5 / 8, r = i < 81 ? 2 : 5;
    s[2 * i] = r * cos(a) + (i < 81 ? 0.05 : 0);
    s[2 * i + 1] = r * sin(a);
  }
  int cov;
  double good;
  td_gan_coverage(&c, s, 100, &cov, &good);
  assert_int_equal(cov, 3);
  assert_true(fabs(good - 0.81) < 1e-15);
  s[2 * 80] += 0.02; /* 0.07 > 3 std: mode 5 loses its only sample */
  td_gan_coverage(&c, s, 100, &cov, &good);
  assert_int_equal(cov, 2);
}

/* eos with Nesterov momentum: the thresholds and the predicted spectral radius against the
 * logged top Hessian eigenvalues, with the roots of z^2 - (1 + b)(1 - a) z + b (1 - a)
 * computed here in complex arithmetic (rounding only: 1e-12). */
typedef struct cap {
  double eig[3][8], rho[8], thr_n[8], thr_h[8], st[8];
} cap;

static int cap_metric(void *ctx, const char *key, long step, double v) {
  cap *c = ctx;
  if (step % 10 || step / 10 >= 8) return 0;
  int k = (int)(step / 10);
  if (strncmp(key, "hessian_eig_", 12) == 0) {
    int i = atoi(key + 12) - 1;
    if (i >= 0 && i < 3) c->eig[i][k] = v;
  } else if (strcmp(key, "predicted_spectral_radius") == 0) c->rho[k] = v;
  else if (strcmp(key, "threshold_nesterov") == 0) c->thr_n[k] = v;
  else if (strcmp(key, "threshold_heavy_ball") == 0) c->thr_h[k] = v;
  else if (strcmp(key, "stability_threshold") == 0) c->st[k] = v;
  return 0;
}

static void test_eos_nesterov(void **state) {
  (void)state;
  const double lr = 0.1, b = 0.5;
  json_t *p = json_loads("{\"data\": {\"n_train\": 100}, \"model\": {\"hidden\": [12]}, "
                         "\"lr\": 0.1, \"momentum\": 0.5, \"nesterov\": true, \"steps\": 20, "
                         "\"analyze_every\": 10, \"analysis\": {\"top_k\": 3}}", 0, NULL);
  json_t *filled = NULL, *sum = NULL;
  td_err e = {0};
  assert_int_equal(td_kinds_validate("eos", p, NULL, &filled, NULL, &e), 0);
  cap c;
  memset(&c, 0, sizeof c);
  td_sink sink = {.ctx = &c, .metric = cap_metric};
  int rc = td_kinds_find("eos")->run(filled, &sink, &sum, &e);
  if (rc) fail_msg("eos: %s", e.msg);
  for (int k = 0; k < 3; k++) {
    assert_true(fabs(c.thr_n[k] - (2 + 2 * b) / ((1 + 2 * b) * lr)) < 1e-12);
    assert_true(fabs(c.thr_h[k] - (2 + 2 * b) / lr) < 1e-12);
    assert_true(c.st[k] == c.thr_n[k]);
    double best = 0;
    for (int i = 0; i < 3; i++) {
      double a = lr * c.eig[i][k];
      double complex tr = (1 + b) * (1 - a), det = b * (1 - a), s = csqrt(tr * tr - 4 * det);
      best = fmax(best, fmax(cabs((tr + s) / 2), cabs((tr - s) / 2)));
    }
    assert_true(best > 0);
    assert_true(fabs(c.rho[k] - best) < 1e-12 * fmax(1, best));
  }
  json_decref(sum);
  json_decref(filled);
  json_decref(p);
  /* curvature with minibatch heavy ball and coupled weight decay: rho over lambda_i + wd at
   * the constant lr, from the same logged eigenvalues */
  sum = filled = NULL;
  p = json_loads("{\"data\": {\"n_train\": 100, \"n_test\": 50}, \"model\": {\"hidden\": [12]}, "
                 "\"optimizer\": {\"name\": \"sgd\", \"lr\": 0.3, \"momentum\": 0.9, "
                 "\"weight_decay\": 0.01}, \"batch_size\": 50, \"steps\": 20, "
                 "\"analyze_every\": 10, \"analysis_n\": 100, \"analysis\": {\"top_k\": 3}}",
                 0, NULL);
  assert_int_equal(td_kinds_validate("curvature", p, NULL, &filled, NULL, &e), 0);
  memset(&c, 0, sizeof c);
  rc = td_kinds_find("curvature")->run(filled, &sink, &sum, &e);
  if (rc) fail_msg("curvature: %s", e.msg);
  for (int k = 0; k < 3; k++) {
    double best = 0;
    for (int i = 0; i < 3; i++) {
      double a = 0.3 * (c.eig[i][k] + 0.01);
      double complex tr = 1 + 0.9 - a, det = 0.9, s2 = csqrt(tr * tr - 4 * det);
      best = fmax(best, fmax(cabs((tr + s2) / 2), cabs((tr - s2) / 2)));
    }
    assert_true(best > 0);
    assert_true(fabs(c.rho[k] - best) < 1e-12 * fmax(1, best));
  }
  json_decref(sum);
  json_decref(filled);
  json_decref(p);
  /* nesterov without momentum is refused */
  expect_invalid("eos", "{\"nesterov\": true}", "params.nesterov");
}

/* gan_mixture with analyze_jacobian: the update spectral radius at step 0 of simultaneous
 * GDA against max |1 - lr mu| over the eigenvalues mu of a Jacobian built here by central
 * differences of the gradient (J = S dgrad/dw; FD error ~1e-9 moves the eigenvalues by about
 * as much times the eigenvector condition, so 1e-6 relative on the radius). The batch is
 * the kind's (td_gan_batch(seed, 0)) and the start its td_gan_init(seed). */
static double g_rho0;
static int rho_metric(void *ctx, const char *key, long step, double v) {
  (void)ctx;
  if (step == 0 && strcmp(key, "update_spectral_radius") == 0) g_rho0 = v;
  return 0;
}

static void test_gan_jacobian_analysis(void **state) {
  (void)state;
  json_t *p = json_loads("{\"game\": {\"name\": \"gan_mixture\", \"latent\": 2, \"hidden\": 4, "
                         "\"depth\": 1, \"activation\": \"tanh\", \"batch\": 16, \"n_samples\": 50, "
                         "\"analyze_jacobian\": true, \"rmsprop\": false}, \"lr\": 0.5, "
                         "\"steps\": 2, \"seed\": 7}", 0, NULL);
  json_t *filled = NULL, *sum = NULL;
  td_err e = {0};
  assert_int_equal(td_kinds_validate("game", p, NULL, &filled, NULL, &e), 0);
  td_sink sink = {.metric = rho_metric};
  g_rho0 = -1;
  if (td_kinds_find("game")->run(filled, &sink, &sum, &e)) fail_msg("game: %s", e.msg);
  td_gan_cfg c = {.latent = 2, .hidden = 4, .depth = 1, .tanh = 1, .batch = 16, .modes = 8,
                  .radius = 2, .std = 0.02};
  td_gan *G;
  assert_int_equal(td_gan_create(&c, &G, NULL), 0);
  int ng = td_gan_n_gen(G), d = ng + td_gan_n_disc(G);
  double *w = malloc((size_t)d * 3 * sizeof *w), *gp = w + d, *gm = gp + d;
  double *U = malloc((size_t)d * (size_t)d * sizeof *U), *re = malloc(2 * (size_t)d * sizeof *re);
  double xr[32], z[32];
  td_gan_init(G, 7, w);
  td_gan_batch(G, 7, 0, xr, z);
  const double h = 1e-5, lr = 0.5;
  for (int j = 0; j < d; j++) {
    double wj = w[j];
    w[j] = wj + h;
    td_gan_grad(G, w, xr, z, gp, NULL, NULL);
    w[j] = wj - h;
    td_gan_grad(G, w, xr, z, gm, NULL, NULL);
    w[j] = wj;
    for (int i = 0; i < d; i++) {
      double Jij = (gp[i] - gm[i]) / (2 * h) * (i < ng ? 1 : -1);
      U[(size_t)i * d + j] = (i == j) - lr * Jij;
    }
  }
  assert_int_equal(LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', d, U, d, re, re + d, NULL, 1, NULL, 1), 0);
  double rho = 0;
  for (int i = 0; i < d; i++) rho = fmax(rho, hypot(re[i], re[d + i]));
  if (fabs(rho - g_rho0) > 1e-6 * rho) fail_msg("rho %.12g vs fd %.12g", g_rho0, rho);
  free(w);
  free(U);
  free(re);
  td_gan_destroy(G);
  json_decref(sum);
  json_decref(filled);
  json_decref(p);
  expect_invalid("game", "{\"game\": {\"name\": \"gan_mixture\", \"analyze_jacobian\": true}}",
                 "params.game.analyze_jacobian");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_heavy_ball_by_hand),   cmocka_unit_test(test_nesterov_and_lapack),
      cmocka_unit_test(test_thresholds),           cmocka_unit_test(test_polyak),
      cmocka_unit_test(test_nesterov_tunings),     cmocka_unit_test(test_game_jacobians_fd),
      cmocka_unit_test(test_quadrature),           cmocka_unit_test(test_dirac_equilibrium),
      cmocka_unit_test(test_update_jacobians_fd),  cmocka_unit_test(test_bilinear_rates),
      cmocka_unit_test(test_kinds),                cmocka_unit_test(test_validation),
      cmocka_unit_test(test_gan_products),         cmocka_unit_test(test_eos_nesterov),
      cmocka_unit_test(test_gan_jacobian_analysis),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
