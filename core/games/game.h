/* game.h: two-player differentiable games with exact Jacobians of the joint gradient field,
 * and the update rules of chapter 10 (simultaneous and alternating GDA, extragradient,
 * optimistic gradient, consensus optimization, symplectic gradient adjustment, Hamiltonian
 * gradient descent), with the Jacobian of each update.
 *
 * Conventions. Player 1 owns x (n_x numbers) and minimizes f; player 2 owns y (n_y numbers)
 * and maximizes f. The parameters are w = (x, y) (d = n_x + n_y) and the joint gradient
 * field is xi(w) = (grad_x f, -grad_y f); every algorithm moves against xi. The game
 * Jacobian is J(w) = d xi / d w (d x d, row-major, J[i*d + j] = d xi_i / d w_j). The
 * Hamiltonian is H = ||xi||^2 / 2 and grad H = J^T xi.
 *
 * Games:
 *  - bilinear: f = x^T A y, A n_x x n_y. xi = (A y, -A^T x), J = [[0, A], [-A^T, 0]].
 *    Equilibrium 0 (the unique one when A is square and invertible).
 *  - quadratic: f = 1/2 x^T P x + x^T C y - 1/2 y^T Q y (P n_x x n_x, C n_x x n_y,
 *    Q n_y x n_y; P and Q are symmetrized as (P + P^T)/2). xi = (P x + C y, -C^T x + Q y),
 *    J = [[P, C], [-C^T, Q]]. Equilibrium 0 when J is invertible.
 *  - dirac_gan (Mescheder, Geiger and Nowozin 2018, "Which training methods for GANs do
 *    actually converge?", ICML, sec. 2.2): the generator is a point mass at theta (x, n_x =
 *    1), the data a point mass at 0, the discriminator D(t) = psi t (y, n_y = 1), and
 *    f(theta, psi) = E_e[phi(psi (theta + e))] + E_e[phi(-psi e)] with phi(t) =
 *    -log(1 + exp(-t)) (the non-saturating form's phi of the paper's eq. 1 with
 *    f(t) = -log(1 + exp(-t))) and e ~ N(0, sigma^2) instance noise (sigma = 0: none).
 *    A gradient penalty R1 (on the data) or R2 (on the generated point) adds
 *    gamma/2 ||grad_t D||^2 = gamma/2 psi^2 to the discriminator's loss, so
 *    xi_psi gains + gamma psi (both penalties are the same function of psi here; the paper
 *    sec. 4.1). With u = psi (theta + e), v = -psi e:
 *      xi_theta = E[psi phi'(u)],   xi_psi = -E[(theta + e) phi'(u)] + E[e phi'(v)] + gamma psi
 *    J at the equilibrium (0, 0): [[0, phi'(0)], [-phi'(0), -2 sigma^2 phi''(0) + gamma]]
 *    = [[0, 1/2], [-1/2, sigma^2/2 + gamma]]: eigenvalues +-i/2 without regularization
 *    (the paper's Lemma 2.3: purely imaginary, GDA does not converge), and real parts
 *    (gamma + sigma^2/2)/2 > 0 with a penalty or instance noise (Lemmas 3.2 and 3.3 of the
 *    paper for the vector field v = -xi). Expectations over e use 40-point Gauss-Hermite
 *    quadrature (Golub-Welsch), exact for sigma = 0. */
#ifndef TD_GAMES_GAME_H
#define TD_GAMES_GAME_H

#include "base/err.h"

typedef enum { TD_GAME_BILINEAR = 0, TD_GAME_QUADRATIC = 1, TD_GAME_DIRAC = 2 } td_game_kind;

#define TD_GAME_NQ 40 /* Gauss-Hermite nodes for instance noise */

/* A game. Build it with td_game_init_* (the matrices are copied), free with td_game_deinit. */
typedef struct td_game {
  td_game_kind kind;
  int nx, ny, d;
  double *A;        /* bilinear: A (nx x ny); quadratic: C (nx x ny) */
  double *P, *Q;    /* quadratic: P (nx x nx), Q (ny x ny), symmetrized */
  double gamma_reg; /* dirac_gan: gradient-penalty weight gamma (0: none) */
  double sigma;     /* dirac_gan: instance-noise standard deviation (0: none) */
  int nq;           /* dirac_gan: quadrature nodes (1 when sigma = 0) */
  double qz[TD_GAME_NQ], qw[TD_GAME_NQ]; /* nodes (of N(0,1)) and weights (sum 1) */
} td_game;

/* td_game_init_bilinear: f = x^T A y with A (nx x ny, row-major, copied). Errors: TD_EINVAL
 * for nx, ny < 1; TD_ENOMEM. */
int td_game_init_bilinear(td_game *g /* OUT */, int nx, int ny, const double *A, td_err *err);
/* td_game_init_quadratic: P (nx x nx), C (nx x ny), Q (ny x ny), copied; P and Q
 * symmetrized. Errors as above. */
int td_game_init_quadratic(td_game *g /* OUT */, int nx, int ny, const double *P,
                           const double *C, const double *Q, td_err *err);
/* td_game_init_dirac: the Dirac-GAN with penalty gamma >= 0 and instance noise sigma >= 0.
 * Errors: TD_EINVAL for a negative or non-finite gamma or sigma; TD_EIO if the quadrature's
 * eigensolver fails. */
int td_game_init_dirac(td_game *g /* OUT */, double gamma, double sigma, td_err *err);
/* td_game_deinit: frees the matrices; safe on a zeroed or already deinit'ed game. */
void td_game_deinit(td_game *g);

/* td_game_field: xi(w) (d) into xi (OUT). w and xi must not alias. */
void td_game_field(const td_game *g, const double *w, double *xi /* OUT */);
/* td_game_jacobian: J(w) (d x d, row-major) into J (OUT). */
void td_game_jacobian(const td_game *g, const double *w, double *J /* OUT */);
/* td_game_value: f(w) (for the Dirac-GAN without the penalty term). */
double td_game_value(const td_game *g, const double *w);

typedef enum {
  TD_GALG_SIMULTANEOUS = 0,
  TD_GALG_ALTERNATING,
  TD_GALG_EXTRAGRADIENT,
  TD_GALG_OPTIMISTIC,
  TD_GALG_CONSENSUS,
  TD_GALG_SGA,
  TD_GALG_HAMILTONIAN,
} td_game_alg;

/* td_game_alg_parse: "simultaneous" | "alternating" | "extragradient" | "optimistic" |
 * "consensus" | "sga" | "hamiltonian" into *a (OUT); returns 0 or -1. */
int td_game_alg_parse(const char *name, td_game_alg *a /* OUT */);

/* An update rule and its state. Update rules (step size eta = lr, xi_t = xi(w_t)):
 *  simultaneous:  w' = w - eta xi(w).
 *  alternating:   x' = x - eta xi_x(x, y); y' = y - eta xi_y(x', y).
 *  extragradient: w_h = w - eta xi(w); w' = w - eta xi(w_h) (Korpelevich 1976, "The
 *                 extragradient method for finding saddle points and other problems").
 *  optimistic:    w' = w - 2 eta xi_t + eta xi_{t-1}, xi_{-1} = xi_0 (Daskalakis, Ilyas,
 *                 Syrgkanis, Zeng 2018, "Training GANs with optimism", ICLR: optimistic mirror
 *                 descent in its Euclidean form).
 *  consensus:     w' = w - eta (xi + gamma J^T xi) (Mescheder, Nowozin, Geiger 2017, "The
 *                 numerics of GANs", NeurIPS, sec. 4: the vector field v = -xi
 *                 plus -gamma grad L with L = ||v||^2/2).
 *  sga:           w' = w - eta (xi + lambda' A^T xi), A = (J - J^T)/2 the antisymmetric part
 *                 (Balduzzi et al. 2018, "The mechanics of n-player differentiable games",
 *                 ICML, Algorithm 1); with align on, lambda' = lambda sign(<xi, grad H>
 *                 <A^T xi, grad H> / d + eps), grad H = J^T xi (the paper's sign rule,
 *                 eps = sga_eps, 0.1 in the paper); align off: lambda' = lambda.
 *  hamiltonian:   w' = w - eta J^T xi (Balduzzi et al. 2018 sec. 3; Abernethy, Lai,
 *                 Wibisono 2019, "Last-iterate convergence rates for min-max optimization"). */
typedef struct td_game_opt {
  td_game_alg alg;
  double lr, gamma, lambda, sga_eps;
  int sga_align;
  double lambda_eff; /* sga: lambda' of the last step (or of td_game_update_jacobian) */
  int have_prev;     /* optimistic: xi_{t-1} is stored */
  double *prev_xi;   /* optimistic: xi_{t-1} (d); other buffers (work) */
  double *work;      /* scratch: 3 d + d^2 */
} td_game_opt;

/* td_game_opt_init: allocate the state for game g. Errors: TD_ENOMEM. */
int td_game_opt_init(td_game_opt *o /* in: alg, lr, gamma, lambda, sga_eps, sga_align */,
                     const td_game *g, td_err *err);
void td_game_opt_deinit(td_game_opt *o);

/* td_game_step: one update of w (d, in place). Never fails. */
void td_game_step(const td_game *g, td_game_opt *o, double *w);

/* td_game_update_dim: size of the update's state (2 d for optimistic, which carries
 * xi_{t-1}, i.e. the state (w_t, w_{t-1}) on linear games; d otherwise). */
int td_game_update_dim(const td_game *g, const td_game_opt *o);

/* td_game_update_jacobian: the Jacobian U (OUT, n x n with n = td_game_update_dim) of the
 * update map of the game LINEARIZED at w (xi(w + h) ~ xi(w) + J(w) h): exact for bilinear
 * and quadratic games at every point, and exact at an equilibrium of any game.
 *   simultaneous I - eta J;  extragradient I - eta J + eta^2 J^2;
 *   alternating [[I - eta Jxx, -eta Jxy], [-eta Jyx (I - eta Jxx), I - eta Jyy + eta^2 Jyx Jxy]];
 *   optimistic on (w_t, w_{t-1}): [[I - 2 eta J, eta J], [I, 0]];
 *   consensus I - eta (J + gamma J^T J);  sga I - eta (J + lambda' A^T J) with lambda' the
 *   sign rule's value at w;  hamiltonian I - eta J^T J.
 * Uses o->work; sets o->lambda_eff for sga. */
void td_game_update_jacobian(const td_game *g, td_game_opt *o, const double *w, double *U);

/* td_game_update_matrix: the same matrix from a given game Jacobian J (d x d, row-major;
 * player 1 owns the first nx coordinates), with o->lambda_eff as SGA's lambda'. U (OUT) is
 * n x n, n = 2 d for optimistic, d otherwise. Never fails; does not touch o->work. */
void td_game_update_matrix(const td_game_opt *o, int nx, int d, const double *J, double *U);

/* td_game_eig: eigenvalues of the general real n x n matrix M (row-major; not modified),
 * sorted by modulus descending, then imaginary part descending, into re, im (OUT, n each).
 * LAPACK dgeev. Returns 0, TD_ENOMEM, or TD_EIO when dgeev fails to converge. */
int td_game_eig(int n, const double *M, double *re /* OUT */, double *im /* OUT */,
                td_err *err);

#endif
