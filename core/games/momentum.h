/* momentum.h: gradient descent, heavy ball and Nesterov on a quadratic as linear dynamical
 * systems: per-curvature 2x2 iteration matrices, their eigenvalues and spectral radius, the
 * damping regime, stability thresholds and the classical optimal parameters (chapter 9).
 *
 * On f(x) = 1/2 sum_i lambda_i x_i^2 every method acts on each eigen-coordinate separately.
 * With a = lr lambda the recursions on one coordinate are (state z_k = (x_k, x_{k-1})):
 *   gd:         x_{k+1} = (1 - a) x_k                          M = [[1 - a, 0], [1, 0]]
 *   heavy_ball: x_{k+1} = x_k - a x_k + beta (x_k - x_{k-1})   M = [[1 + beta - a, -beta], [1, 0]]
 *               (Polyak 1964, "Some methods of speeding up the convergence of iteration
 *               methods"; PyTorch SGD with momentum gives the same recursion)
 *   nesterov:   y_k = x_k + beta (x_k - x_{k-1}), x_{k+1} = y_k - a y_k
 *               M = [[(1 - a)(1 + beta), -(1 - a) beta], [1, 0]]
 *               (Nesterov 1983; Sutskever et al. 2013 eq. 3-4; PyTorch's nesterov=True,
 *               buf = beta buf + g, p -= lr (g + beta buf), has the same characteristic
 *               polynomial: trace (1 + beta)(1 - a), determinant beta (1 - a)).
 * gd is written as a 2x2 matrix (eigenvalues 1 - a and 0) so that the three share one form.
 * The characteristic polynomial is z^2 - tr z + det; its eigenvalues are
 * (tr +- sqrt(tr^2 - 4 det)) / 2. */
#ifndef TD_GAMES_MOMENTUM_H
#define TD_GAMES_MOMENTUM_H

typedef enum { TD_MOM_GD = 0, TD_MOM_HEAVY_BALL = 1, TD_MOM_NESTEROV = 2 } td_mom_method;

/* Damping regime of a mode from the discriminant tr^2 - 4 det of its 2x2 matrix:
 * OVER (two real eigenvalues, no oscillation from the pair), UNDER (a complex pair: the
 * mode oscillates), CRITICAL (a double real eigenvalue, |disc| <= 1e-12 max(1, tr^2)). gd
 * (beta = 0) is always OVER unless a = 1 (both eigenvalues 0: CRITICAL). */
typedef enum { TD_DAMP_OVER = 0, TD_DAMP_CRITICAL = 1, TD_DAMP_UNDER = 2 } td_damping;

/* One mode's analysis. */
typedef struct td_mom_mode {
  double M[4];            /* iteration matrix, row-major 2x2 */
  double eig_re[2];       /* eigenvalues (larger modulus first) */
  double eig_im[2];
  double rho;             /* spectral radius max |eig| */
  td_damping damping;
} td_mom_mode;

/* td_mom_parse: "gd" | "heavy_ball" | "nesterov" into *m (OUT). Returns 0, or -1 for any
 * other string. */
int td_mom_parse(const char *name, td_mom_method *m /* OUT */);
/* td_mom_name: the name of a method ("gd", "heavy_ball", "nesterov"). */
const char *td_mom_name(td_mom_method m);

/* td_mom_matrix: the 2x2 iteration matrix M (OUT, row-major) of `m` with step lr, momentum
 * beta (ignored for gd) on curvature lambda, as in the file comment. Never fails. */
void td_mom_matrix(td_mom_method m, double lr, double beta, double lambda, double M[4]);

/* td_mom_eig2: eigenvalues of a real 2x2 matrix M (row-major) from its characteristic
 * polynomial, larger modulus first: re[2], im[2] (OUT); returns the discriminant
 * tr^2 - 4 det. For a complex pair, re[0] = re[1] = tr/2 and im = +-sqrt(-disc)/2. */
double td_mom_eig2(const double M[4], double re[2], double im[2]);

/* td_mom_analyze: matrix, eigenvalues, spectral radius and damping of one mode (OUT *out). */
void td_mom_analyze(td_mom_method m, double lr, double beta, double lambda,
                    td_mom_mode *out /* OUT */);

/* td_mom_rho: spectral radius of the mode (td_mom_analyze's rho). */
double td_mom_rho(td_mom_method m, double lr, double beta, double lambda);

/* td_mom_threshold: the largest curvature for which the method is stable at (lr, beta):
 * lambda < threshold <=> rho < 1 (for lambda > 0, beta in [0, 1)). Units 1/lr.
 *   gd: 2/lr.
 *   heavy_ball: (2 + 2 beta)/lr. Jury's conditions for z^2 - tr z + det with
 *     tr = 1 + beta - a, det = beta: |det| < 1; p(1) = a > 0; p(-1) = 2 + 2 beta - a > 0.
 *   nesterov: (2 + 2 beta)/((1 + 2 beta) lr). With tr = (1 + beta)(1 - a),
 *     det = beta (1 - a): p(1) = 1 - (1 - a) = a > 0; p(-1) = 1 + (1 - a)(1 + 2 beta) > 0
 *     <=> a < (2 + 2 beta)/(1 + 2 beta); and |det| < 1 then holds because
 *     1 - a > -1/(1 + 2 beta) gives |beta (1 - a)| < max(beta, beta/(1 + 2 beta)) < 1.
 * Returns +Inf for lr <= 0. */
double td_mom_threshold(td_mom_method m, double lr, double beta);

/* td_mom_lr_threshold: the same boundary solved for lr at fixed curvature lambda > 0:
 * the largest stable step (threshold(lr) = lambda). */
double td_mom_lr_threshold(td_mom_method m, double beta, double lambda);

/* Parameters and worst-case rate over a spectrum in [mu, L] (0 < mu <= L). */
typedef struct td_mom_tuned {
  double lr, beta;
  double rate; /* the rate the source states (spectral radius bound) */
} td_mom_tuned;

/* td_mom_polyak: Polyak's optimal heavy ball for quadratics with spectrum in [mu, L]:
 * lr = 4/(sqrt L + sqrt mu)^2, beta = ((sqrt kappa - 1)/(sqrt kappa + 1))^2,
 * rate = (sqrt kappa - 1)/(sqrt kappa + 1), kappa = L/mu (Polyak 1964; Lessard, Recht and
 * Packard 2016, sec. 2.2). */
td_mom_tuned td_mom_polyak(double mu, double L);

/* td_mom_nesterov_std: Nesterov's constants for strongly convex functions: lr = 1/L,
 * beta = (sqrt kappa - 1)/(sqrt kappa + 1) (Nesterov 2004, "Introductory lectures", scheme
 * 2.2.19). rate = 1 - 1/sqrt(kappa), the worst spectral radius over [mu, L] on quadratics:
 * at lambda = mu (a = 1/kappa) (1 + beta)^2 (1 - a) = 4 beta, so the mode is critically
 * damped with rho = tr/2 = (1 + beta)(1 - a)/2 = 1 - 1/sqrt(kappa); for lambda > mu the
 * discriminant (1 - a)((1 + beta)^2 (1 - a) - 4 beta) is negative and
 * rho = sqrt(beta (1 - a)) is smaller. */
td_mom_tuned td_mom_nesterov_std(double mu, double L);

/* td_mom_nesterov_lrp: the tuned Nesterov step of Lessard, Recht and Packard 2016
 * ("Analysis and design of optimization algorithms via integral quadratic constraints",
 * SIAM J. Optim., sec. 2.2): lr = 4/(3L + mu), beta = (sqrt(3 kappa + 1) - 2)/
 * (sqrt(3 kappa + 1) + 2), rate = 1 - 2/sqrt(3 kappa + 1) on quadratics. */
td_mom_tuned td_mom_nesterov_lrp(double mu, double L);

/* td_mom_worst_rho: max over the n curvatures lambda[i] of td_mom_rho. */
double td_mom_worst_rho(td_mom_method m, double lr, double beta, const double *lambda, int n);

#endif
