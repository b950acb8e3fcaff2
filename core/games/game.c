/* game.c: differentiable two-player games, their Jacobians and update rules (game.h). */
#include "games/game.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* phi(t) = -log(1 + exp(-t)), phi' = sigmoid(-t), phi'' = -sigmoid(t) sigmoid(-t). */
static double sig(double t) { return t >= 0 ? 1.0 / (1.0 + exp(-t)) : exp(t) / (1.0 + exp(t)); }
static double phi(double t) { return t >= 0 ? -log1p(exp(-t)) : t - log1p(exp(t)); }
static double dphi(double t) { return sig(-t); }
static double d2phi(double t) { return -sig(t) * sig(-t); }

static int alloc_copy(double **dst, const double *src, size_t n) {
  *dst = malloc(n * sizeof **dst);
  if (!*dst) return -1;
  memcpy(*dst, src, n * sizeof **dst);
  return 0;
}

int td_game_init_bilinear(td_game *g, int nx, int ny, const double *A, td_err *err) {
  memset(g, 0, sizeof *g);
  if (nx < 1 || ny < 1 || !A)
    return td_err_set(err, TD_EINVAL, "params.game.A", "A must be a non-empty matrix");
  g->kind = TD_GAME_BILINEAR;
  g->nx = nx;
  g->ny = ny;
  g->d = nx + ny;
  if (alloc_copy(&g->A, A, (size_t)nx * (size_t)ny))
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  return 0;
}

int td_game_init_quadratic(td_game *g, int nx, int ny, const double *P, const double *C,
                           const double *Q, td_err *err) {
  memset(g, 0, sizeof *g);
  if (nx < 1 || ny < 1 || !P || !C || !Q)
    return td_err_set(err, TD_EINVAL, "params.game", "P, C and Q must be non-empty matrices");
  g->kind = TD_GAME_QUADRATIC;
  g->nx = nx;
  g->ny = ny;
  g->d = nx + ny;
  if (alloc_copy(&g->A, C, (size_t)nx * (size_t)ny) ||
      alloc_copy(&g->P, P, (size_t)nx * (size_t)nx) ||
      alloc_copy(&g->Q, Q, (size_t)ny * (size_t)ny)) {
    td_game_deinit(g);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  for (int i = 0; i < nx; i++)
    for (int j = 0; j < i; j++) {
      double s = 0.5 * (g->P[i * nx + j] + g->P[j * nx + i]);
      g->P[i * nx + j] = g->P[j * nx + i] = s;
    }
  for (int i = 0; i < ny; i++)
    for (int j = 0; j < i; j++) {
      double s = 0.5 * (g->Q[i * ny + j] + g->Q[j * ny + i]);
      g->Q[i * ny + j] = g->Q[j * ny + i] = s;
    }
  return 0;
}

int td_game_init_dirac(td_game *g, double gamma, double sigma, td_err *err) {
  memset(g, 0, sizeof *g);
  if (!(gamma >= 0) || !isfinite(gamma))
    return td_err_set(err, TD_EINVAL, "params.game.gamma_reg", "gamma_reg must be >= 0");
  if (!(sigma >= 0) || !isfinite(sigma))
    return td_err_set(err, TD_EINVAL, "params.game.noise_std", "noise_std must be >= 0");
  g->kind = TD_GAME_DIRAC;
  g->nx = g->ny = 1;
  g->d = 2;
  g->gamma_reg = gamma;
  g->sigma = sigma;
  if (sigma == 0) {
    g->nq = 1;
    g->qz[0] = 0;
    g->qw[0] = 1;
    return 0;
  }
  /* Golub-Welsch for the probabilists' Hermite weight exp(-z^2/2)/sqrt(2 pi): the Jacobi
   * matrix has zero diagonal and off-diagonal sqrt(k), k = 1..n-1; the nodes are its
   * eigenvalues and the weights the squared first components of its unit eigenvectors. */
  int n = TD_GAME_NQ;
  double dg[TD_GAME_NQ], e[TD_GAME_NQ], *Z = malloc((size_t)n * (size_t)n * sizeof *Z);
  if (!Z) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  for (int k = 0; k < n; k++) {
    dg[k] = 0;
    e[k] = k + 1 < n ? sqrt((double)(k + 1)) : 0;
  }
  int info = LAPACKE_dstev(LAPACK_ROW_MAJOR, 'V', n, dg, e, Z, n);
  if (info) {
    free(Z);
    return td_err_set(err, TD_EIO, NULL, "Gauss-Hermite eigensolver failed (info %d)", info);
  }
  g->nq = n;
  for (int k = 0; k < n; k++) {
    g->qz[k] = dg[k];
    g->qw[k] = Z[k] * Z[k]; /* row 0, column k: first component of eigenvector k */
  }
  free(Z);
  return 0;
}

void td_game_deinit(td_game *g) {
  if (!g) return;
  free(g->A);
  free(g->P);
  free(g->Q);
  g->A = g->P = g->Q = NULL;
}

void td_game_field(const td_game *g, const double *w, double *xi) {
  int nx = g->nx, ny = g->ny;
  const double *x = w, *y = w + nx;
  if (g->kind == TD_GAME_DIRAC) {
    double th = x[0], ps = y[0], a = 0, b = 0;
    for (int k = 0; k < g->nq; k++) {
      double e = g->sigma * g->qz[k], u = ps * (th + e), v = -ps * e;
      a += g->qw[k] * ps * dphi(u);
      b += g->qw[k] * (-(th + e) * dphi(u) + e * dphi(v));
    }
    xi[0] = a;
    xi[1] = b + g->gamma_reg * ps;
    return;
  }
  for (int i = 0; i < nx; i++) { /* xi_x = P x + A y */
    double s = 0;
    if (g->P)
      for (int j = 0; j < nx; j++) s += g->P[i * nx + j] * x[j];
    for (int j = 0; j < ny; j++) s += g->A[i * ny + j] * y[j];
    xi[i] = s;
  }
  for (int j = 0; j < ny; j++) { /* xi_y = -A^T x + Q y */
    double s = 0;
    for (int i = 0; i < nx; i++) s -= g->A[i * ny + j] * x[i];
    if (g->Q)
      for (int k = 0; k < ny; k++) s += g->Q[j * ny + k] * y[k];
    xi[nx + j] = s;
  }
}

void td_game_jacobian(const td_game *g, const double *w, double *J) {
  int nx = g->nx, ny = g->ny, d = g->d;
  if (g->kind == TD_GAME_DIRAC) {
    double th = w[0], ps = w[1], j00 = 0, j01 = 0, j10 = 0, j11 = 0;
    for (int k = 0; k < g->nq; k++) {
      double e = g->sigma * g->qz[k], u = ps * (th + e), v = -ps * e, q = g->qw[k];
      j00 += q * ps * ps * d2phi(u);
      j01 += q * (dphi(u) + ps * (th + e) * d2phi(u));
      j10 -= q * (dphi(u) + (th + e) * ps * d2phi(u));
      j11 += q * (-(th + e) * (th + e) * d2phi(u) - e * e * d2phi(v));
    }
    J[0] = j00;
    J[1] = j01;
    J[2] = j10;
    J[3] = j11 + g->gamma_reg;
    return;
  }
  memset(J, 0, (size_t)d * (size_t)d * sizeof *J);
  for (int i = 0; i < nx; i++) {
    if (g->P)
      for (int j = 0; j < nx; j++) J[i * d + j] = g->P[i * nx + j];
    for (int j = 0; j < ny; j++) {
      J[i * d + nx + j] = g->A[i * ny + j];
      J[(nx + j) * d + i] = -g->A[i * ny + j];
    }
  }
  if (g->Q)
    for (int j = 0; j < ny; j++)
      for (int k = 0; k < ny; k++) J[(nx + j) * d + nx + k] = g->Q[j * ny + k];
}

double td_game_value(const td_game *g, const double *w) {
  int nx = g->nx, ny = g->ny;
  const double *x = w, *y = w + nx;
  if (g->kind == TD_GAME_DIRAC) {
    double f = 0;
    for (int k = 0; k < g->nq; k++) {
      double e = g->sigma * g->qz[k];
      f += g->qw[k] * (phi(y[0] * (x[0] + e)) + phi(-y[0] * e));
    }
    return f;
  }
  double f = 0;
  for (int i = 0; i < nx; i++)
    for (int j = 0; j < ny; j++) f += x[i] * g->A[i * ny + j] * y[j];
  if (g->P)
    for (int i = 0; i < nx; i++)
      for (int j = 0; j < nx; j++) f += 0.5 * x[i] * g->P[i * nx + j] * x[j];
  if (g->Q)
    for (int i = 0; i < ny; i++)
      for (int j = 0; j < ny; j++) f -= 0.5 * y[i] * g->Q[i * ny + j] * y[j];
  return f;
}

int td_game_alg_parse(const char *name, td_game_alg *a) {
  static const char *names[] = {"simultaneous", "alternating", "extragradient", "optimistic",
                                "consensus",    "sga",         "hamiltonian"};
  for (int i = 0; name && i < 7; i++)
    if (strcmp(name, names[i]) == 0) {
      *a = (td_game_alg)i;
      return 0;
    }
  return -1;
}

int td_game_opt_init(td_game_opt *o, const td_game *g, td_err *err) {
  size_t d = (size_t)g->d;
  o->have_prev = 0;
  o->lambda_eff = o->lambda;
  o->prev_xi = malloc(d * sizeof *o->prev_xi);
  o->work = malloc((3 * d + d * d) * sizeof *o->work);
  if (!o->prev_xi || !o->work) {
    td_game_opt_deinit(o);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  return 0;
}

void td_game_opt_deinit(td_game_opt *o) {
  if (!o) return;
  free(o->prev_xi);
  free(o->work);
  o->prev_xi = o->work = NULL;
}

/* out = J^T v (d x d row-major J). */
static void jt_vec(int d, const double *J, const double *v, double *out) {
  for (int j = 0; j < d; j++) out[j] = 0;
  for (int i = 0; i < d; i++)
    for (int j = 0; j < d; j++) out[j] += J[i * d + j] * v[i];
}

/* SGA's lambda' at a point with field xi and Jacobian J (gH = J^T xi, at = A^T xi). */
static double sga_lambda(const td_game_opt *o, int d, const double *J, const double *xi,
                         double *gH, double *at) {
  jt_vec(d, J, xi, gH);
  /* A^T xi = ((J^T - J)/2) xi */
  for (int i = 0; i < d; i++) {
    double s = 0;
    for (int j = 0; j < d; j++) s += 0.5 * (J[j * d + i] - J[i * d + j]) * xi[j];
    at[i] = s;
  }
  if (!o->sga_align) return o->lambda;
  double a = 0, b = 0;
  for (int i = 0; i < d; i++) {
    a += xi[i] * gH[i];
    b += at[i] * gH[i];
  }
  double s = a * b / d + o->sga_eps;
  return s >= 0 ? o->lambda : -o->lambda;
}

void td_game_step(const td_game *g, td_game_opt *o, double *w) {
  int d = g->d, nx = g->nx;
  double eta = o->lr, *xi = o->work, *t1 = xi + d, *t2 = t1 + d, *J = t2 + d;
  td_game_field(g, w, xi);
  switch (o->alg) {
  case TD_GALG_SIMULTANEOUS:
    for (int i = 0; i < d; i++) w[i] -= eta * xi[i];
    break;
  case TD_GALG_ALTERNATING:
    for (int i = 0; i < nx; i++) w[i] -= eta * xi[i];
    td_game_field(g, w, xi);
    for (int i = nx; i < d; i++) w[i] -= eta * xi[i];
    break;
  case TD_GALG_EXTRAGRADIENT:
    for (int i = 0; i < d; i++) t1[i] = w[i] - eta * xi[i];
    td_game_field(g, t1, t2);
    for (int i = 0; i < d; i++) w[i] -= eta * t2[i];
    break;
  case TD_GALG_OPTIMISTIC:
    if (!o->have_prev) memcpy(o->prev_xi, xi, (size_t)d * sizeof *xi);
    for (int i = 0; i < d; i++) w[i] -= eta * (2.0 * xi[i] - o->prev_xi[i]);
    memcpy(o->prev_xi, xi, (size_t)d * sizeof *xi);
    o->have_prev = 1;
    break;
  case TD_GALG_CONSENSUS:
    td_game_jacobian(g, w, J);
    jt_vec(d, J, xi, t1);
    for (int i = 0; i < d; i++) w[i] -= eta * (xi[i] + o->gamma * t1[i]);
    break;
  case TD_GALG_SGA:
    td_game_jacobian(g, w, J);
    o->lambda_eff = sga_lambda(o, d, J, xi, t1, t2);
    for (int i = 0; i < d; i++) w[i] -= eta * (xi[i] + o->lambda_eff * t2[i]);
    break;
  case TD_GALG_HAMILTONIAN:
    td_game_jacobian(g, w, J);
    jt_vec(d, J, xi, t1);
    for (int i = 0; i < d; i++) w[i] -= eta * t1[i];
    break;
  }
}

int td_game_update_dim(const td_game *g, const td_game_opt *o) {
  return o->alg == TD_GALG_OPTIMISTIC ? 2 * g->d : g->d;
}

void td_game_update_jacobian(const td_game *g, td_game_opt *o, const double *w, double *U) {
  int d = g->d;
  double *xi = o->work, *t1 = xi + d, *t2 = t1 + d, *J = t2 + d;
  td_game_field(g, w, xi);
  td_game_jacobian(g, w, J);
  if (o->alg == TD_GALG_SGA) o->lambda_eff = sga_lambda(o, d, J, xi, t1, t2);
  td_game_update_matrix(o, g->nx, d, J, U);
}

void td_game_update_matrix(const td_game_opt *o, int nx, int d, const double *J, double *U) {
  int n = o->alg == TD_GALG_OPTIMISTIC ? 2 * d : d;
  double eta = o->lr;
  memset(U, 0, (size_t)n * (size_t)n * sizeof *U);
  switch (o->alg) {
  case TD_GALG_SIMULTANEOUS:
  case TD_GALG_EXTRAGRADIENT:
  case TD_GALG_CONSENSUS:
  case TD_GALG_SGA:
  case TD_GALG_HAMILTONIAN: {
    double c = o->alg == TD_GALG_CONSENSUS ? o->gamma : 0;
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        double k = o->alg == TD_GALG_HAMILTONIAN ? 0 : J[i * d + j];
        double jtj = 0, atj = 0;
        if (o->alg == TD_GALG_CONSENSUS || o->alg == TD_GALG_HAMILTONIAN ||
            o->alg == TD_GALG_SGA)
          for (int l = 0; l < d; l++) {
            jtj += J[l * d + i] * J[l * d + j];
            atj += 0.5 * (J[l * d + i] - J[i * d + l]) * J[l * d + j];
          }
        if (o->alg == TD_GALG_CONSENSUS) k += c * jtj;
        if (o->alg == TD_GALG_HAMILTONIAN) k += jtj;
        if (o->alg == TD_GALG_SGA) k += o->lambda_eff * atj;
        if (o->alg == TD_GALG_EXTRAGRADIENT) {
          double jj = 0;
          for (int l = 0; l < d; l++) jj += J[i * d + l] * J[l * d + j];
          k -= eta * jj;
        }
        U[i * n + j] = (i == j) - eta * k;
      }
    break;
  }
  case TD_GALG_ALTERNATING:
    /* Rows of x: [I - eta Jxx, -eta Jxy]. Rows of y: y' = y - eta (Jyx x' + Jyy y). */
    for (int i = 0; i < nx; i++)
      for (int j = 0; j < d; j++) U[i * n + j] = (i == j) - eta * J[i * d + j];
    for (int i = nx; i < d; i++)
      for (int j = 0; j < d; j++) {
        double s = 0;
        for (int l = 0; l < nx; l++) s += J[i * d + l] * U[l * n + j];
        U[i * n + j] = (i == j) - eta * (s + (j >= nx ? J[i * d + j] : 0));
      }
    break;
  case TD_GALG_OPTIMISTIC:
    for (int i = 0; i < d; i++)
      for (int j = 0; j < d; j++) {
        U[i * n + j] = (i == j) - 2.0 * eta * J[i * d + j];
        U[i * n + d + j] = eta * J[i * d + j];
      }
    for (int i = 0; i < d; i++) U[(d + i) * n + i] = 1.0;
    break;
  }
}

typedef struct eig_pair {
  double re, im;
} eig_pair;

static int cmp_eig(const void *a, const void *b) {
  const eig_pair *p = a, *q = b;
  double mp = hypot(p->re, p->im), mq = hypot(q->re, q->im);
  if (mp != mq) return mp > mq ? -1 : 1;
  if (p->re != q->re) return p->re > q->re ? -1 : 1;
  return p->im > q->im ? -1 : p->im < q->im ? 1 : 0;
}

int td_game_eig(int n, const double *M, double *re, double *im, td_err *err) {
  double *A = malloc((size_t)n * (size_t)n * sizeof *A);
  eig_pair *e = malloc((size_t)n * sizeof *e);
  if (!A || !e) {
    free(A);
    free(e);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  memcpy(A, M, (size_t)n * (size_t)n * sizeof *A);
  int info = LAPACKE_dgeev(LAPACK_ROW_MAJOR, 'N', 'N', n, A, n, re, im, NULL, 1, NULL, 1);
  free(A);
  if (info) {
    free(e);
    return td_err_set(err, TD_EIO, NULL, "dgeev did not converge (info %d)", info);
  }
  for (int i = 0; i < n; i++) e[i] = (eig_pair){re[i], im[i]};
  qsort(e, (size_t)n, sizeof *e, cmp_eig);
  for (int i = 0; i < n; i++) {
    re[i] = e[i].re;
    im[i] = e[i].im;
  }
  free(e);
  return 0;
}
