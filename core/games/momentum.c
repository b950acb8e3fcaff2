/* momentum.c: GD, heavy ball and Nesterov on a quadratic as 2x2 linear systems (momentum.h). */
#include "games/momentum.h"

#include <math.h>
#include <string.h>

int td_mom_parse(const char *name, td_mom_method *m) {
  if (!name) return -1;
  if (strcmp(name, "gd") == 0) *m = TD_MOM_GD;
  else if (strcmp(name, "heavy_ball") == 0) *m = TD_MOM_HEAVY_BALL;
  else if (strcmp(name, "nesterov") == 0) *m = TD_MOM_NESTEROV;
  else return -1;
  return 0;
}

const char *td_mom_name(td_mom_method m) {
  return m == TD_MOM_GD ? "gd" : m == TD_MOM_HEAVY_BALL ? "heavy_ball" : "nesterov";
}

void td_mom_matrix(td_mom_method m, double lr, double beta, double lambda, double M[4]) {
  double a = lr * lambda;
  M[2] = 1.0;
  M[3] = 0.0;
  switch (m) {
  case TD_MOM_GD:
    M[0] = 1.0 - a;
    M[1] = 0.0;
    break;
  case TD_MOM_HEAVY_BALL:
    M[0] = 1.0 + beta - a;
    M[1] = -beta;
    break;
  default:
    M[0] = (1.0 - a) * (1.0 + beta);
    M[1] = -(1.0 - a) * beta;
    break;
  }
}

double td_mom_eig2(const double M[4], double re[2], double im[2]) {
  double tr = M[0] + M[3], det = M[0] * M[3] - M[1] * M[2];
  double disc = tr * tr - 4.0 * det;
  if (disc >= 0) {
    /* Stable form of the two real roots: the larger-magnitude one without cancellation,
     * the other from the product det. */
    double s = sqrt(disc);
    double r1 = tr >= 0 ? 0.5 * (tr + s) : 0.5 * (tr - s);
    double r2 = r1 != 0 ? det / r1 : 0.0;
    if (fabs(r2) > fabs(r1)) {
      double t = r1;
      r1 = r2;
      r2 = t;
    }
    re[0] = r1;
    re[1] = r2;
    im[0] = im[1] = 0.0;
  } else {
    re[0] = re[1] = 0.5 * tr;
    im[0] = 0.5 * sqrt(-disc);
    im[1] = -im[0];
  }
  return disc;
}

void td_mom_analyze(td_mom_method m, double lr, double beta, double lambda, td_mom_mode *out) {
  td_mom_matrix(m, lr, beta, lambda, out->M);
  double disc = td_mom_eig2(out->M, out->eig_re, out->eig_im);
  out->rho = fmax(hypot(out->eig_re[0], out->eig_im[0]), hypot(out->eig_re[1], out->eig_im[1]));
  double tr = out->M[0] + out->M[3];
  if (fabs(disc) <= 1e-12 * fmax(1.0, tr * tr)) out->damping = TD_DAMP_CRITICAL;
  else out->damping = disc > 0 ? TD_DAMP_OVER : TD_DAMP_UNDER;
}

double td_mom_rho(td_mom_method m, double lr, double beta, double lambda) {
  td_mom_mode md;
  td_mom_analyze(m, lr, beta, lambda, &md);
  return md.rho;
}

double td_mom_threshold(td_mom_method m, double lr, double beta) {
  if (!(lr > 0)) return INFINITY;
  switch (m) {
  case TD_MOM_GD: return 2.0 / lr;
  case TD_MOM_HEAVY_BALL: return (2.0 + 2.0 * beta) / lr;
  default: return (2.0 + 2.0 * beta) / ((1.0 + 2.0 * beta) * lr);
  }
}

double td_mom_lr_threshold(td_mom_method m, double beta, double lambda) {
  /* threshold(lr) = c / lr with c independent of lr, so lr* = c / lambda. */
  return td_mom_threshold(m, 1.0, beta) / lambda;
}

td_mom_tuned td_mom_polyak(double mu, double L) {
  double sk = sqrt(L / mu), q = (sk - 1.0) / (sk + 1.0);
  double s = sqrt(L) + sqrt(mu);
  td_mom_tuned t = {.lr = 4.0 / (s * s), .beta = q * q, .rate = q};
  return t;
}

td_mom_tuned td_mom_nesterov_std(double mu, double L) {
  double sk = sqrt(L / mu);
  td_mom_tuned t = {.lr = 1.0 / L, .beta = (sk - 1.0) / (sk + 1.0), .rate = 1.0 - 1.0 / sk};
  return t;
}

td_mom_tuned td_mom_nesterov_lrp(double mu, double L) {
  double r = sqrt(3.0 * L / mu + 1.0);
  td_mom_tuned t = {.lr = 4.0 / (3.0 * L + mu), .beta = (r - 2.0) / (r + 2.0),
                    .rate = 1.0 - 2.0 / r};
  return t;
}

double td_mom_worst_rho(td_mom_method m, double lr, double beta, const double *lambda, int n) {
  double w = 0;
  for (int i = 0; i < n; i++) w = fmax(w, td_mom_rho(m, lr, beta, lambda[i]));
  return w;
}
