/* gan.h: a small GAN on a 2-D mixture of Gaussians on a circle as a differentiable game:
 * MLP generator and MLP discriminator, the exact gradient of the minimax value and its exact
 * Hessian-vector product (forward-over-reverse differentiation with dual numbers), which give
 * the game field xi and J^T xi for consensus optimization (chapter 10).
 *
 * The game. w = (theta, psi): theta the generator's parameters (player 1, minimizes), psi
 * the discriminator's (player 2, maximizes). On a batch of B data points x_b and B latents
 * z_b ~ N(0, I_latent):
 *   f(theta, psi) = 1/B sum_b log sigmoid(D(x_b)) + 1/B sum_b log sigmoid(-D(G(z_b)))
 * (Goodfellow et al. 2014, eq. 1, with D the discriminator's logit: the saturating minimax
 * form, the zero-sum game that consensus optimization is stated for; Mescheder, Nowozin and
 * Geiger 2017, sec. 2). xi = (grad_theta f, -grad_psi f) = S grad f with S = diag(I, -I).
 * Because the game is zero-sum its Jacobian is J = S H (H the Hessian of f in w, symmetric),
 * so J^T xi = H S S grad f = H grad f: one Hessian-vector product of f in the direction of
 * its own gradient.
 *
 * Networks (layout of w, row-major like torch.nn.Linear): G: latent -> hidden x depth -> 2,
 * D: 2 -> hidden x depth -> 1; each layer W (out x in) then b (out); the hidden layers use
 * `act` (relu or tanh), the output layers are linear. Initialization: W ~ N(0, 1/in)
 * (LeCun normal), b = 0.
 *
 * The data: `modes` Gaussians with standard deviation `std` centred on a circle of radius
 * `radius` at angles 2 pi k / modes, equally weighted. */
#ifndef TD_GAMES_GAN_H
#define TD_GAMES_GAN_H

#include <stdint.h>

#include "base/err.h"

typedef struct td_gan_cfg {
  int latent, hidden, depth; /* depth: hidden layers per network, >= 1 */
  int tanh;                  /* 0: relu, 1: tanh */
  int batch;
  int modes;
  double radius, std;
} td_gan_cfg;

typedef struct td_gan td_gan;

/* td_gan_create: check the config and allocate the networks' workspace. Errors: TD_EINVAL
 * (latent, hidden, depth, batch, modes < 1; radius or std not positive), TD_ENOMEM. */
int td_gan_create(const td_gan_cfg *cfg, td_gan **out /* OUT */, td_err *err);
void td_gan_destroy(td_gan *g);

/* Parameter counts: generator, discriminator, total d. */
int td_gan_n_gen(const td_gan *g);
int td_gan_n_disc(const td_gan *g);

/* td_gan_init: w (d, OUT) from the seed as in the file comment. */
void td_gan_init(const td_gan *g, uint64_t seed, double *w);

/* td_gan_batch: the batch of step `step` (a pure function of seed and step): data points
 * xr (B x 2) and latents z (B x latent) (OUT). */
void td_gan_batch(const td_gan *g, uint64_t seed, long step, double *xr, double *z);

/* td_gan_grad: f(w) on the batch (returned) and grad f (d, OUT); when u is not NULL also
 * hu = H u (d, OUT), the exact Hessian-vector product (forward-mode derivative of the
 * reverse pass along u). Uses the workspace of g (one thread at a time). */
double td_gan_grad(td_gan *g, const double *w, const double *xr, const double *z,
                   double *grad /* OUT */, const double *u, double *hu /* OUT */);

/* td_gan_generate: n samples G(z_i) (n x 2, OUT) for latents z (n x latent). */
void td_gan_generate(td_gan *g, const double *w, const double *z, int n, double *out);

/* td_gan_coverage: for n samples (n x 2): *covered (OUT) = the number of modes with at least
 * 1% of the samples within 3 std of its centre; *good (OUT) = the fraction of samples within
 * 3 std of some centre (the criterion of the issue; Srivastava et al. 2017 use 3 std for
 * "high-quality" samples). */
void td_gan_coverage(const td_gan_cfg *cfg, const double *s, int n, int *covered, double *good);

#endif
