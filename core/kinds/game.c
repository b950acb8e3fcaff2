/* game.c: the `game` experiment kind: two-player differentiable games (bilinear, quadratic,
 * Dirac-GAN) under GDA, extragradient, optimistic, consensus, SGA and Hamiltonian updates,
 * with the eigenvalues of the game Jacobian and of the update's Jacobian (chapter 10).
 * Closed form (games/game.h): no network, no trainer.
 *
 * Semantics (also in the schema docs):
 *  - Step 0 is the start, step t the state after t updates (as linreg and eos log). At every
 *    log_every-th step (and the last): dist_to_eq (||w - w*||, w* = 0 for every game here), hamiltonian (||xi(w)||^2/2),
 *    value (f(w)), and the players' parameters x/{i}, y/{i} (the first 16 of each) for the
 *    phase plane.
 *  - At 0, every analyze_every steps and at the last step: jacobian_eig_re/{i},
 *    jacobian_eig_im/{i} (the game Jacobian J(w), sorted by modulus, the first 32),
 *    update_eig_re/{i}, update_eig_im/{i} (the Jacobian of the update map of the game
 *    linearized at w; exact for bilinear and quadratic games) and update_spectral_radius;
 *    sga adds sga_lambda (the sign rule's lambda'). The artifact eigenvalues.json holds all
 *    of them for every analysis step.
 *  - A game whose iterates spiral out is a result: no divergence rule. The run ends early
 *    (status succeeded, summary.escaped_step) when ||w|| exceeds 1e100 or is not finite.
 *  - Summary: predicted_rate (update_spectral_radius at step 0: the per-step factor of
 *    dist_to_eq on linear games once the slowest mode dominates; exactly the factor of every
 *    step when the update matrix is normal, as for the bilinear game with A = a I under
 *    simultaneous, extragradient, consensus, sga and hamiltonian), observed_rate
 *    ((dist_T/dist_0)^(1/T)), observed_rate_late (over the second half), dist_initial,
 *    dist_final, dist_min, dist_max, hamiltonian_final, rho_at_equilibrium and
 *    jacobian_eig_at_equilibrium (J at w* and its eigenvalues), final_step, escaped_step.
 *  - gan_mixture (games/gan.h): the update rules act on the batch of each step (a pure
 *    function of seed and step; alternating and extragradient reuse it for their second
 *    evaluation), optionally scaled by RMSProp (game.rmsprop, default on). Metrics value
 *    (f on the batch) and hamiltonian (||xi||^2/2 on it) at w_t for t = 0..T-1 (every
 *    log_every-th and the last); modes_covered and good_fraction (gan.h's td_gan_coverage on
 *    n_samples samples from latents fixed by the seed) at 0, every sample_every steps and at
 *    T, each with the artifact samples_step<t>.json {step, samples, centres, std,
 *    modes_covered, good_fraction}. With game.analyze_jacobian (d <= 1000), the eigenvalue
 *    metrics above and eigenvalues.json at 0, every analyze_every steps and T, from J = S H
 *    built by d Hessian-vector products on that step's batch (and the update matrix of
 *    games/game.h from it, for the plain rule: RMSProp's coordinate scaling is not in it). No dist_to_eq (no known equilibrium). Summary: modes_covered_final,
 *    good_fraction_final, modes_covered_max, modes, n_gen_params, n_disc_params,
 *    hamiltonian_final, final_step, escaped_step. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "games/game.h"
#include "games/gan.h"
#include "base/rng.h"
#include "kinds/registry.h"

#define GAME_MAXDIM 64
#define GAME_LOG_PLAYERS 16
#define GAME_LOG_EIG 32

static const td_param game_params[] = {
    {"game.name", TD_PT_STR, "\"bilinear\"", 0, 0, "bilinear|quadratic|dirac_gan|gan_mixture", 0,
     "bilinear f = x^T A y; quadratic f = x^T P x/2 + x^T C y - y^T Q y/2; dirac_gan "
     "(Mescheder et al. 2018): generator a point mass at theta, discriminator D(t) = psi t; "
     "gan_mixture: MLP generator and discriminator on a 2-D mixture of Gaussians on a circle"},
    {"game.A", TD_PT_NUM_MATRIX, NULL, -1e6, 1e6, NULL, GAME_MAXDIM,
     "bilinear: the coupling A (n_x rows, n_y columns; absent: [[1]])"},
    {"game.P", TD_PT_NUM_MATRIX, NULL, -1e6, 1e6, NULL, GAME_MAXDIM,
     "quadratic: P (n_x x n_x, symmetrized; absent: [[1]])"},
    {"game.C", TD_PT_NUM_MATRIX, NULL, -1e6, 1e6, NULL, GAME_MAXDIM,
     "quadratic: coupling C (n_x x n_y; absent: [[1]])"},
    {"game.Q", TD_PT_NUM_MATRIX, NULL, -1e6, 1e6, NULL, GAME_MAXDIM,
     "quadratic: Q (n_y x n_y, symmetrized; absent: [[1]])"},
    {"game.penalty", TD_PT_STR, NULL, 0, 0, "none|r1|r2", 0,
     "dirac_gan: gradient penalty gamma/2 ||grad D||^2 on the data (r1) or on the generated "
     "point (r2) (absent: none)"},
    {"game.penalty_weight", TD_PT_NUM, NULL, 0, 1e6, NULL, 0,
     "dirac_gan: gamma of the penalty (absent: 1 with r1/r2)"},
    {"game.noise_std", TD_PT_NUM, NULL, 0, 100, NULL, 0,
     "dirac_gan: instance noise sigma added to real and generated points (absent: 0)"},
    {"game.latent", TD_PT_INT, NULL, 1, 256, NULL, 0, "gan_mixture: latent dimension (absent: 16)"},
    {"game.hidden", TD_PT_INT, NULL, 1, 512, NULL, 0,
     "gan_mixture: units per hidden layer of both networks (absent: 16)"},
    {"game.depth", TD_PT_INT, NULL, 1, 8, NULL, 0,
     "gan_mixture: hidden layers per network (absent: 4)"},
    {"game.activation", TD_PT_STR, NULL, 0, 0, "relu|tanh", 0,
     "gan_mixture: hidden activation (absent: relu)"},
    {"game.batch", TD_PT_INT, NULL, 1, 4096, NULL, 0,
     "gan_mixture: data points and latents per step (absent: 256)"},
    {"game.modes", TD_PT_INT, NULL, 1, 64, NULL, 0, "gan_mixture: Gaussians (absent: 8)"},
    {"game.radius", TD_PT_NUM, NULL, 1e-6, 1e6, NULL, 0,
     "gan_mixture: radius of the circle of centres (absent: 2)"},
    {"game.std", TD_PT_NUM, NULL, 1e-6, 1e6, NULL, 0,
     "gan_mixture: standard deviation of each Gaussian (absent: 0.02)"},
    {"game.rmsprop", TD_PT_BOOL, NULL, 0, 0, NULL, 0,
     "gan_mixture: scale each update coordinate-wise by RMSProp (decay 0.9, eps 1e-8), as "
     "Mescheder et al. 2017 do (absent: true; false: plain steps)"},
    {"game.analyze_jacobian", TD_PT_BOOL, NULL, 0, 0, NULL, 0,
     "gan_mixture: eigenvalues of the game Jacobian J = S H (d Hessian-vector products on the "
     "step's batch) and of the update's Jacobian at 0, every analyze_every steps and T; needs "
     "at most 1000 parameters (absent: false)"},
    {"game.sample_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "gan_mixture: steps between sample artifacts and mode counts (absent: steps/10)"},
    {"game.n_samples", TD_PT_INT, NULL, 10, 100000, NULL, 0,
     "gan_mixture: generated samples per evaluation (absent: 2000)"},
    {"algorithm", TD_PT_STR, "\"simultaneous\"", 0, 0,
     "simultaneous|alternating|extragradient|optimistic|consensus|sga|hamiltonian", 0,
     "update rule (games/game.h cites each source)"},
    {"lr", TD_PT_NUM, "0.1", 1e-12, 1e6, NULL, 0, "step size eta"},
    {"steps", TD_PT_INT, "200", 1, 1e7, NULL, 0, "updates T (metrics at steps 0..T)"},
    {"init", TD_PT_NUM_LIST, NULL, -1e6, 1e6, NULL, 2 * GAME_MAXDIM,
     "start w_0 = (x, y) concatenated (absent: all ones)"},
    {"gamma", TD_PT_NUM, "1", 0, 1e6, NULL, 0, "consensus: weight gamma of J^T xi"},
    {"lambda", TD_PT_NUM, "1", 0, 1e6, NULL, 0, "sga: weight lambda of A^T xi"},
    {"sga_align", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "sga: Balduzzi et al.'s sign rule for lambda (false: lambda as given)"},
    {"sga_eps", TD_PT_NUM, "0.1", 0, 1e6, NULL, 0, "sga: epsilon of the sign rule"},
    {"analyze_every", TD_PT_INT, "10", 1, 1e9, NULL, 0,
     "steps between eigenvalue analyses (always at 0 and T)"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0,
     "gan_mixture: initialization and batches"},
    {"log_every", TD_PT_INT, "1", 1, 1e9, NULL, 0,
     "steps between logged per-step metrics (always at 0 and at the last step)"},
};

static const char *gan_only[] = {"game.latent", "game.hidden", "game.depth", "game.activation",
                                 "game.batch",  "game.modes",  "game.radius", "game.std",
                                 "game.rmsprop", "game.sample_every", "game.n_samples",
                                 "game.analyze_jacobian"};
#define N_GAN_ONLY (sizeof gan_only / sizeof gan_only[0])

/* Reads a matrix param (absent: [[1]]) into *M (malloc'ed), its shape into r, c. */
static int get_matrix(const json_t *p, const char *path, double **M, int *r, int *c) {
  const json_t *m = td_param_get(p, path);
  *r = m ? (int)json_array_size(m) : 1;
  *c = m ? (int)json_array_size(json_array_get(m, 0)) : 1;
  *M = malloc((size_t)*r * (size_t)*c * sizeof **M);
  if (!*M) return TD_ENOMEM;
  if (!m) {
    (*M)[0] = 1;
    return 0;
  }
  for (int i = 0; i < *r; i++)
    for (int j = 0; j < *c; j++)
      (*M)[i * *c + j] = json_number_value(json_array_get(json_array_get(m, (size_t)i), (size_t)j));
  return 0;
}

/* Builds the game from validated params; checks the shapes. */
static int build_game(const json_t *p, td_game *g, td_err *err) {
  memset(g, 0, sizeof *g);
  const char *name = td_param_str(p, "game.name", "bilinear");
  const char *bil_only[] = {"game.A"}, *quad_only[] = {"game.P", "game.C", "game.Q"};
  const char *dirac_only[] = {"game.penalty", "game.penalty_weight", "game.noise_std"};
  int isb = strcmp(name, "bilinear") == 0, isq = strcmp(name, "quadratic") == 0;
  int isd = strcmp(name, "dirac_gan") == 0;
  for (size_t i = 0; i < N_GAN_ONLY; i++)
    if (strcmp(name, "gan_mixture") != 0 && td_param_has(p, gan_only[i])) {
      char f[48];
      snprintf(f, sizeof f, "params.%s", gan_only[i]);
      return td_err_set(err, TD_EINVAL, f, "%s is for game gan_mixture", f);
    }
  for (int i = 0; i < 1; i++)
    if (!isb && td_param_has(p, bil_only[i]))
      return td_err_set(err, TD_EINVAL, "params.game.A", "params.game.A is for game bilinear");
  for (int i = 0; i < 3; i++)
    if (!isq && td_param_has(p, quad_only[i])) {
      char f[40];
      snprintf(f, sizeof f, "params.%s", quad_only[i]);
      return td_err_set(err, TD_EINVAL, f, "%s is for game quadratic", f);
    }
  for (int i = 0; i < 3; i++)
    if (!isd && td_param_has(p, dirac_only[i])) {
      char f[48];
      snprintf(f, sizeof f, "params.%s", dirac_only[i]);
      return td_err_set(err, TD_EINVAL, f, "%s is for game dirac_gan", f);
    }
  if (!isb && !isq && !isd) return 1; /* gan_mixture: built by gan_build */
  if (isd) {
    const char *pen = td_param_str(p, "game.penalty", "none");
    int haspen = strcmp(pen, "none") != 0;
    if (!haspen && td_param_has(p, "game.penalty_weight"))
      return td_err_set(err, TD_EINVAL, "params.game.penalty_weight",
                        "params.game.penalty_weight needs game.penalty r1 or r2");
    double gam = haspen ? td_param_num(p, "game.penalty_weight", 1) : 0;
    return td_game_init_dirac(g, gam, td_param_num(p, "game.noise_std", 0), err);
  }
  int rc = 0;
  if (isb) {
    double *A;
    int r, c;
    if (get_matrix(p, "game.A", &A, &r, &c)) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
    rc = td_game_init_bilinear(g, r, c, A, err);
    free(A);
    return rc;
  }
  double *P = NULL, *C = NULL, *Q = NULL;
  int pr, pc, cr, cc, qr, qc;
  if (get_matrix(p, "game.P", &P, &pr, &pc) || get_matrix(p, "game.C", &C, &cr, &cc) ||
      get_matrix(p, "game.Q", &Q, &qr, &qc))
    rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  else if (pr != pc || pr != cr)
    rc = td_err_set(err, TD_EINVAL, "params.game.P",
                    "P must be n_x x n_x with n_x = rows of C (%d), got %d x %d", cr, pr, pc);
  else if (qr != qc || qr != cc)
    rc = td_err_set(err, TD_EINVAL, "params.game.Q",
                    "Q must be n_y x n_y with n_y = columns of C (%d), got %d x %d", cc, qr, qc);
  else
    rc = td_game_init_quadratic(g, cr, cc, P, C, Q, err);
  free(P);
  free(C);
  free(Q);
  return rc;
}

static void gan_cfg_of(const json_t *p, td_gan_cfg *c) {
  c->latent = (int)td_param_int(p, "game.latent", 16);
  c->hidden = (int)td_param_int(p, "game.hidden", 16);
  c->depth = (int)td_param_int(p, "game.depth", 4);
  c->tanh = strcmp(td_param_str(p, "game.activation", "relu"), "tanh") == 0;
  c->batch = (int)td_param_int(p, "game.batch", 256);
  c->modes = (int)td_param_int(p, "game.modes", 8);
  c->radius = td_param_num(p, "game.radius", 2);
  c->std = td_param_num(p, "game.std", 0.02);
}

static int game_check(const json_t *p, td_estimate *est, td_err *err) {
  td_game g;
  int rc = build_game(p, &g, err);
  if (rc == 1) { /* gan_mixture */
    if (td_param_has(p, "init"))
      return td_err_set(err, TD_EINVAL, "params.init",
                        "params.init is not for gan_mixture (the networks start from the seed)");
    td_gan_cfg c;
    gan_cfg_of(p, &c);
    double np = 0, w = (double)c.hidden;
    np = (c.latent + 2.0) * w + (c.depth - 1) * (w * w + w) + 2 * w + 2 + /* G */
         3.0 * w + (c.depth - 1) * (w * w + w) + w + 1;                   /* D */
    est->bytes = 8.0 * (12.0 * np + 16.0 * (c.depth + 2) * c.batch * (w + c.latent) +
                        4.0 * td_param_int(p, "game.n_samples", 2000) * (c.latent + 2)) + 65536;
    est->n_params = np;
    if (td_param_bool(p, "game.analyze_jacobian", 0)) {
      if (np > 1000)
        return td_err_set(err, TD_EINVAL, "params.game.analyze_jacobian",
                          "game.analyze_jacobian needs at most 1000 parameters (this GAN has "
                          "%.0f; reduce game.hidden or game.depth)", np);
      est->bytes += 8.0 * 6 * np * np;
    }
    return 0;
  }
  if (rc) return rc;
  int d = g.d;
  td_game_deinit(&g);
  const json_t *init = td_param_get(p, "init");
  if (init && (int)json_array_size(init) != d)
    return td_err_set(err, TD_EINVAL, "params.init",
                      "params.init has %zu entries but the game has %d parameters (x then y)",
                      json_array_size(init), d);
  est->bytes = 8.0 * (10.0 * d * d + 16.0 * d) + 65536;
  est->n_params = d;
  return 0;
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* Eigenvalues of J(w) and of the update's Jacobian at w as metrics and into `hist`. */
/* Eigenvalues of a game Jacobian J (d x d) and of an update matrix U (n x n) as metrics at
 * `step` and as one record of `hist`; *rho_out (OUT) = U's spectral radius. */
static int analyze_mats(const double *J, int d, const double *U, int n, const td_game_opt *o,
                        long step, td_sink *sink, json_t *hist, double *rho_out, td_err *err) {
  double *re = malloc((size_t)(n > d ? n : d) * 2 * sizeof *re);
  if (!re) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  double *im = re + (n > d ? n : d);
  json_t *rec = json_object(), *jr = json_array(), *ji = json_array(), *ur = json_array(),
         *ui = json_array();
  char key[48];
  int rc = td_game_eig(d, J, re, im, err);
  for (int i = 0; !rc && i < d; i++) {
    json_array_append_new(jr, json_real(re[i]));
    json_array_append_new(ji, json_real(im[i]));
    if (i < GAME_LOG_EIG) {
      snprintf(key, sizeof key, "jacobian_eig_re/%d", i);
      td_sink_metric(sink, key, step, re[i]);
      snprintf(key, sizeof key, "jacobian_eig_im/%d", i);
      td_sink_metric(sink, key, step, im[i]);
    }
  }
  if (!rc) rc = td_game_eig(n, U, re, im, err);
  double rho = 0;
  for (int i = 0; !rc && i < n; i++) {
    rho = fmax(rho, hypot(re[i], im[i]));
    json_array_append_new(ur, json_real(re[i]));
    json_array_append_new(ui, json_real(im[i]));
    if (i < GAME_LOG_EIG) {
      snprintf(key, sizeof key, "update_eig_re/%d", i);
      td_sink_metric(sink, key, step, re[i]);
      snprintf(key, sizeof key, "update_eig_im/%d", i);
      td_sink_metric(sink, key, step, im[i]);
    }
  }
  if (!rc) {
    td_sink_metric(sink, "update_spectral_radius", step, rho);
    if (o->alg == TD_GALG_SGA) td_sink_metric(sink, "sga_lambda", step, o->lambda_eff);
  }
  json_object_set_new(rec, "step", json_integer(step));
  json_object_set_new(rec, "jacobian_re", jr);
  json_object_set_new(rec, "jacobian_im", ji);
  json_object_set_new(rec, "update_re", ur);
  json_object_set_new(rec, "update_im", ui);
  json_object_set_new(rec, "update_spectral_radius", json_real(rho));
  json_array_append_new(hist, rec);
  *rho_out = rho;
  free(re);
  return rc;
}

/* Eigenvalues of J(w) and of the update's Jacobian at w as metrics and into `hist`. */
static int analyze(const td_game *g, td_game_opt *o, const double *w, long step, td_sink *sink,
                   json_t *hist, double *rho_out, td_err *err) {
  int d = g->d, n = td_game_update_dim(g, o);
  double *J = malloc((size_t)d * (size_t)d * sizeof *J), *U = malloc((size_t)n * (size_t)n * sizeof *U);
  if (!J || !U) {
    free(J);
    free(U);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  td_game_jacobian(g, w, J);
  td_game_update_jacobian(g, o, w, U);
  int rc = analyze_mats(J, d, U, n, o, step, sink, hist, rho_out, err);
  free(J);
  free(U);
  return rc;
}

static double norm(int d, const double *w) {
  double s = 0;
  for (int i = 0; i < d; i++) s += w[i] * w[i];
  return sqrt(s);
}

static void log_state(const td_game *g, const double *w, double *xi, long t, td_sink *sink,
                      double *dist, double *ham) {
  char key[32];
  td_game_field(g, w, xi);
  *dist = norm(g->d, w);
  double h = norm(g->d, xi);
  *ham = 0.5 * h * h;
  td_sink_metric(sink, "dist_to_eq", t, *dist);
  td_sink_metric(sink, "hamiltonian", t, *ham);
  td_sink_metric(sink, "value", t, td_game_value(g, w));
  for (int i = 0; i < g->nx && i < GAME_LOG_PLAYERS; i++) {
    snprintf(key, sizeof key, "x/%d", i);
    td_sink_metric(sink, key, t, w[i]);
  }
  for (int i = 0; i < g->ny && i < GAME_LOG_PLAYERS; i++) {
    snprintf(key, sizeof key, "y/%d", i);
    td_sink_metric(sink, key, t, w[g->nx + i]);
  }
}

/* The GAN's update direction u (d) for algorithm o->alg at w on the batch (xr, z): xi and,
 * as needed, J^T xi = H grad f and J xi = S H S grad f (gan.h). Returns f; *ham (OUT) =
 * ||xi||^2/2. t1, t2, t3 are scratch (d each). */
static double gan_dir(td_gan *G, const td_game_opt *o, const double *w, const double *xr,
                      const double *z, double *u, double *t1, double *t2, double *t3,
                      double *ham, double *lam_eff) {
  int d = td_gan_n_gen(G) + td_gan_n_disc(G), ng = td_gan_n_gen(G);
  double f = td_gan_grad(G, w, xr, z, t1, NULL, NULL); /* t1 = grad f */
  double h = 0;
  for (int i = 0; i < d; i++) {
    u[i] = i < ng ? t1[i] : -t1[i]; /* xi = S grad f */
    h += u[i] * u[i];
  }
  *ham = 0.5 * h;
  if (o->alg == TD_GALG_CONSENSUS || o->alg == TD_GALG_HAMILTONIAN || o->alg == TD_GALG_SGA) {
    td_gan_grad(G, w, xr, z, t3, t1, t2); /* t2 = H grad f = J^T xi */
    if (o->alg == TD_GALG_CONSENSUS)
      for (int i = 0; i < d; i++) u[i] += o->gamma * t2[i];
    else if (o->alg == TD_GALG_HAMILTONIAN)
      for (int i = 0; i < d; i++) u[i] = t2[i];
    else {
      /* J xi = S H S grad f = S H xi: t3 = H xi */
      double *hx = t3 + 0;
      double *tmp = malloc((size_t)d * sizeof *tmp);
      if (!tmp) return NAN;
      td_gan_grad(G, w, xr, z, tmp, u, hx);
      free(tmp);
      double a = 0, b = 0;
      for (int i = 0; i < d; i++) {
        double jxi = i < ng ? hx[i] : -hx[i];
        double at = 0.5 * (t2[i] - jxi); /* A^T xi = (J^T xi - J xi)/2 */
        hx[i] = at;
        a += u[i] * t2[i];
        b += at * t2[i];
      }
      double lam = o->lambda;
      if (o->sga_align && a * b / d + o->sga_eps < 0) lam = -lam;
      *lam_eff = lam;
      for (int i = 0; i < d; i++) u[i] += lam * hx[i];
    }
  }
  return f;
}

static int gan_emit_samples(td_gan *G, const td_gan_cfg *c, const double *w, const double *zs,
                            int ns, long t, double *buf, td_sink *sink, int *cov, double *good) {
  td_gan_generate(G, w, zs, ns, buf);
  td_gan_coverage(c, buf, ns, cov, good);
  json_t *o = json_object(), *pts = json_array(), *cen = json_array();
  for (int i = 0; i < ns; i++) {
    json_t *pt = json_array();
    json_array_append_new(pt, jnum(buf[2 * i]));
    json_array_append_new(pt, jnum(buf[2 * i + 1]));
    json_array_append_new(pts, pt);
  }
  for (int k = 0; k < c->modes; k++) {
    double a = 2.0 * M_PI * k / c->modes;
    json_t *pt = json_array();
    json_array_append_new(pt, json_real(c->radius * cos(a)));
    json_array_append_new(pt, json_real(c->radius * sin(a)));
    json_array_append_new(cen, pt);
  }
  json_object_set_new(o, "step", json_integer(t));
  json_object_set_new(o, "samples", pts);
  json_object_set_new(o, "centres", cen);
  json_object_set_new(o, "std", json_real(c->std));
  json_object_set_new(o, "modes_covered", json_integer(*cov));
  json_object_set_new(o, "good_fraction", json_real(*good));
  char *txt = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!txt) return TD_ENOMEM;
  char name[64];
  snprintf(name, sizeof name, "samples_step%ld.json", t);
  td_sink_artifact(sink, name, "application/json", txt, strlen(txt));
  free(txt);
  td_sink_metric(sink, "modes_covered", t, *cov);
  td_sink_metric(sink, "good_fraction", t, *good);
  return 0;
}

/* The GAN's Jacobian J = S H at w on the batch (xr, z), column by column from Hessian-vector
 * products with unit vectors, its eigenvalues and the update matrix's (analyze_mats). */
static int gan_analyze(td_gan *G, const td_game_opt *o, const double *w, const double *xr,
                       const double *z, long step, td_sink *sink, json_t *hist, td_err *err) {
  int ng = td_gan_n_gen(G), d = ng + td_gan_n_disc(G), n = o->alg == TD_GALG_OPTIMISTIC ? 2 * d : d;
  double *J = malloc((size_t)d * (size_t)d * sizeof *J), *U = malloc((size_t)n * (size_t)n * sizeof *U);
  double *e = calloc((size_t)d * 3, sizeof *e);
  if (!J || !U || !e) {
    free(J);
    free(U);
    free(e);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  double *gr = e + d, *col = gr + d, rho;
  for (int j = 0; j < d; j++) {
    e[j] = 1;
    td_gan_grad(G, w, xr, z, gr, e, col);
    e[j] = 0;
    for (int i = 0; i < d; i++) J[(size_t)i * d + j] = i < ng ? col[i] : -col[i];
  }
  td_game_update_matrix(o, ng, d, J, U);
  int rc = analyze_mats(J, d, U, n, o, step, sink, hist, &rho, err);
  free(J);
  free(U);
  free(e);
  return rc;
}

/* gan_mixture: see games/gan.h and the gan_mixture paragraph of the file comment. */
static int gan_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  td_gan_cfg c;
  gan_cfg_of(p, &c);
  td_gan *G = NULL;
  int rc = td_gan_create(&c, &G, err);
  if (rc) return rc;
  td_game_opt o = {0};
  td_game_alg_parse(td_param_str(p, "algorithm", "simultaneous"), &o.alg);
  o.lr = td_param_num(p, "lr", 0.1);
  o.gamma = td_param_num(p, "gamma", 1);
  o.lambda = o.lambda_eff = td_param_num(p, "lambda", 1);
  o.sga_align = td_param_bool(p, "sga_align", 1);
  o.sga_eps = td_param_num(p, "sga_eps", 0.1);
  int rms = td_param_bool(p, "game.rmsprop", 1);
  long T = td_param_int(p, "steps", 200);
  long se = td_param_int(p, "game.sample_every", T / 10 > 0 ? T / 10 : 1);
  int ns = (int)td_param_int(p, "game.n_samples", 2000);
  uint64_t seed = (uint64_t)td_param_int(p, "seed", 0);
  long log_every = td_param_int(p, "log_every", 1);
  int ana = td_param_bool(p, "game.analyze_jacobian", 0);
  long aevery = td_param_int(p, "analyze_every", 10);
  json_t *hist = json_array();
  int ng = td_gan_n_gen(G), d = ng + td_gan_n_disc(G);
  size_t B = (size_t)c.batch;
  double *mem = calloc((size_t)d * 9 + B * (2 + (size_t)c.latent) + (size_t)ns * (c.latent + 2), sizeof *mem);
  if (!mem) {
    td_gan_destroy(G);
    json_decref(hist);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  double *w = mem, *u = w + d, *t1 = u + d, *t2 = t1 + d, *t3 = t2 + d, *wh = t3 + d,
         *prev = wh + d, *v = prev + d, *u2 = v + d, *xr = u2 + d, *z = xr + 2 * B,
         *zs = z + B * c.latent, *sbuf = zs + (size_t)ns * c.latent;
  td_gan_init(G, seed, w);
  { /* fixed evaluation latents (stream separate from the batches) */
    td_rng r;
    td_rng_init(&r, seed, 0x5a3e);
    td_rng_fill_normal(&r, zs, (size_t)ns * c.latent, 1.0);
  }
  int cov = 0, best_cov = 0;
  double good = 0, ham = 0, lam_eff = o.lambda;
  int have_prev = 0, cancelled = 0;
  long t, escaped = -1;
  rc = gan_emit_samples(G, &c, w, zs, ns, 0, sbuf, sink, &cov, &good);
  best_cov = cov;
  for (t = 0; !rc && t < T; t++) {
    if (td_sink_should_stop(sink)) {
      cancelled = 1;
      break;
    }
    td_gan_batch(G, seed, t, xr, z);
    if (ana && t % aevery == 0) {
      o.lambda_eff = lam_eff;
      if ((rc = gan_analyze(G, &o, w, xr, z, t, sink, hist, err))) break;
    }
    double f = gan_dir(G, &o, w, xr, z, u, t1, t2, t3, &ham, &lam_eff);
    if (t % log_every == 0 || t + 1 == T) {
      td_sink_metric(sink, "value", t, f);
      td_sink_metric(sink, "hamiltonian", t, ham);
      if (o.alg == TD_GALG_SGA) td_sink_metric(sink, "sga_lambda", t, lam_eff);
    }
    /* the step direction s (in u) per algorithm */
    if (o.alg == TD_GALG_EXTRAGRADIENT) {
      for (int i = 0; i < d; i++) wh[i] = w[i] - o.lr * u[i];
      double hh;
      gan_dir(G, &o, wh, xr, z, u, t1, t2, t3, &hh, &lam_eff);
    } else if (o.alg == TD_GALG_OPTIMISTIC) {
      if (!have_prev) memcpy(prev, u, (size_t)d * sizeof *u);
      for (int i = 0; i < d; i++) {
        double cur = u[i];
        u[i] = 2 * cur - prev[i];
        prev[i] = cur;
      }
      have_prev = 1;
    } else if (o.alg == TD_GALG_ALTERNATING) {
      /* generator first, then the discriminator's field at the new generator */
      for (int i = 0; i < ng; i++) u2[i] = u[i];
      for (int i = 0; i < ng; i++) wh[i] = w[i] - o.lr * u[i];
      for (int i = ng; i < d; i++) wh[i] = w[i];
      double hh;
      gan_dir(G, &o, wh, xr, z, u, t1, t2, t3, &hh, &lam_eff);
      for (int i = 0; i < ng; i++) u[i] = u2[i];
    }
    for (int i = 0; i < d; i++) {
      double s = u[i];
      if (rms) {
        v[i] = 0.9 * v[i] + 0.1 * s * s;
        s /= sqrt(v[i]) + 1e-8;
      }
      w[i] -= o.lr * s;
    }
    double nw = 0;
    for (int i = 0; i < d; i++) nw += w[i] * w[i];
    if (!(nw <= 1e200)) {
      escaped = t + 1;
      break;
    }
    if ((t + 1) % se == 0 || t + 1 == T) {
      rc = gan_emit_samples(G, &c, w, zs, ns, t + 1, sbuf, sink, &cov, &good);
      if (cov > best_cov) best_cov = cov;
    }
    if ((t + 1) % 16 == 0) td_sink_progress(sink, t + 1, T);
  }
  if (!rc && ana && t == T && escaped < 0 && !cancelled) {
    td_gan_batch(G, seed, T, xr, z);
    o.lambda_eff = lam_eff;
    rc = gan_analyze(G, &o, w, xr, z, T, sink, hist, err);
  }
  if (!rc && ana) {
    char *txt = json_dumps(hist, JSON_COMPACT);
    if (txt) td_sink_artifact(sink, "eigenvalues.json", "application/json", txt, strlen(txt));
    free(txt);
  }
  json_decref(hist);
  td_sink_progress(sink, t, T);
  json_t *s = json_object();
  json_object_set_new(s, "game", json_string("gan_mixture"));
  json_object_set_new(s, "algorithm", json_string(td_param_str(p, "algorithm", "simultaneous")));
  json_object_set_new(s, "modes_covered_final", json_integer(cov));
  json_object_set_new(s, "good_fraction_final", jnum(good));
  json_object_set_new(s, "modes_covered_max", json_integer(best_cov));
  json_object_set_new(s, "modes", json_integer(c.modes));
  json_object_set_new(s, "n_gen_params", json_integer(ng));
  json_object_set_new(s, "n_disc_params", json_integer(d - ng));
  json_object_set_new(s, "hamiltonian_final", jnum(ham));
  json_object_set_new(s, "final_step", json_integer(t));
  json_object_set_new(s, "escaped_step", escaped >= 0 ? json_integer(escaped) : json_null());
  free(mem);
  td_gan_destroy(G);
  if (rc) {
    json_decref(s);
    return rc;
  }
  *summary = s;
  if (cancelled) return td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", t);
  return 0;
}

static int game_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  td_estimate est;
  int rc = game_check(p, &est, err);
  if (rc) return rc;
  td_game g;
  if ((rc = build_game(p, &g, err)) == 1) return gan_run(p, sink, summary, err);
  if (rc) return rc;
  int d = g.d;
  td_game_opt o = {0};
  td_game_alg_parse(td_param_str(p, "algorithm", "simultaneous"), &o.alg);
  o.lr = td_param_num(p, "lr", 0.1);
  o.gamma = td_param_num(p, "gamma", 1);
  o.lambda = td_param_num(p, "lambda", 1);
  o.sga_align = td_param_bool(p, "sga_align", 1);
  o.sga_eps = td_param_num(p, "sga_eps", 0.1);
  if ((rc = td_game_opt_init(&o, &g, err))) {
    td_game_deinit(&g);
    return rc;
  }
  double *w = malloc((size_t)d * 3 * sizeof *w), *xi = w ? w + d : NULL, *w0 = w ? w + 2 * d : NULL;
  json_t *hist = json_array();
  if (!w) {
    td_game_opt_deinit(&o);
    td_game_deinit(&g);
    json_decref(hist);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  const json_t *init = td_param_get(p, "init");
  for (int i = 0; i < d; i++)
    w[i] = init ? json_number_value(json_array_get(init, (size_t)i)) : 1.0;
  memcpy(w0, w, (size_t)d * sizeof *w);
  long T = td_param_int(p, "steps", 200), every = td_param_int(p, "analyze_every", 10);
  long log_every = td_param_int(p, "log_every", 1);
  double dist0, ham, dist, dmin, dmax, rho0 = NAN, rho, dist_half = NAN;
  log_state(&g, w, xi, 0, sink, &dist0, &ham);
  dist = dmin = dmax = dist0;
  rc = analyze(&g, &o, w, 0, sink, hist, &rho0, err);
  long t, escaped = -1;
  int cancelled = 0;
  for (t = 1; !rc && t <= T; t++) {
    if (td_sink_should_stop(sink)) {
      cancelled = 1;
      break;
    }
    td_game_step(&g, &o, w);
    double nw = norm(d, w);
    if (!(nw <= 1e100)) {
      escaped = t;
      break;
    }
    if (t % log_every == 0 || t == T) log_state(&g, w, xi, t, sink, &dist, &ham);
    else {
      dist = nw;
      td_game_field(&g, w, xi);
      ham = 0.5 * norm(d, xi) * norm(d, xi);
    }
    dmin = fmin(dmin, dist);
    dmax = fmax(dmax, dist);
    if (t == T / 2) dist_half = dist;
    if (t % every == 0 || t == T) rc = analyze(&g, &o, w, t, sink, hist, &rho, err);
    if (t % 16 == 0) td_sink_progress(sink, t, T);
  }
  long last = t > T ? T : t - 1;
  td_sink_progress(sink, last, T);
  /* J and the update's spectral radius at the equilibrium w* = 0. */
  json_t *eq = json_object(), *er = json_array(), *ei = json_array();
  double rho_eq = NAN;
  if (!rc) {
    memset(w0, 0, (size_t)d * sizeof *w0);
    double *J = malloc((size_t)d * (size_t)d * sizeof *J), *re = malloc((size_t)d * 2 * sizeof *re);
    if (J && re) {
      td_game_jacobian(&g, w0, J);
      if (!td_game_eig(d, J, re, re + d, NULL))
        for (int i = 0; i < d; i++) {
          json_array_append_new(er, json_real(re[i]));
          json_array_append_new(ei, json_real(re[d + i]));
        }
      json_t *tmp = json_array();
      if (analyze(&g, &o, w0, -1, NULL, tmp, &rho_eq, NULL)) rho_eq = NAN;
      json_decref(tmp);
    }
    free(J);
    free(re);
  }
  json_object_set_new(eq, "re", er);
  json_object_set_new(eq, "im", ei);
  if (!rc) {
    char *txt = json_dumps(hist, JSON_COMPACT);
    if (txt) td_sink_artifact(sink, "eigenvalues.json", "application/json", txt, strlen(txt));
    free(txt);
  }
  json_decref(hist);
  json_t *s = json_object();
  json_object_set_new(s, "game", json_string(td_param_str(p, "game.name", "bilinear")));
  json_object_set_new(s, "algorithm", json_string(td_param_str(p, "algorithm", "simultaneous")));
  json_object_set_new(s, "predicted_rate", jnum(rho0));
  json_object_set_new(s, "observed_rate", jnum(last > 0 ? pow(dist / dist0, 1.0 / last) : NAN));
  json_object_set_new(s, "observed_rate_late",
                      jnum(last == T && T >= 2 ? pow(dist / dist_half, 1.0 / (T - T / 2)) : NAN));
  json_object_set_new(s, "dist_initial", jnum(dist0));
  json_object_set_new(s, "dist_final", jnum(dist));
  json_object_set_new(s, "dist_min", jnum(dmin));
  json_object_set_new(s, "dist_max", jnum(dmax));
  json_object_set_new(s, "hamiltonian_final", jnum(ham));
  json_object_set_new(s, "rho_at_equilibrium", jnum(rho_eq));
  json_object_set_new(s, "jacobian_eig_at_equilibrium", eq);
  json_object_set_new(s, "final_step", json_integer(last));
  json_object_set_new(s, "escaped_step", escaped >= 0 ? json_integer(escaped) : json_null());
  free(w);
  td_game_opt_deinit(&o);
  td_game_deinit(&g);
  if (rc) {
    json_decref(s);
    return rc;
  }
  *summary = s;
  if (cancelled) return td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", last);
  return 0;
}

const td_kind td_kind_game = {
    .name = "game",
    .doc = "Two-player differentiable games (bilinear, quadratic, Dirac-GAN) under GDA, "
           "extragradient, optimistic, consensus, SGA and Hamiltonian updates: Jacobian and "
           "update eigenvalues, predicted vs observed contraction",
    .chapter = "10",
    .params = game_params,
    .n_params = sizeof game_params / sizeof game_params[0],
    .check = game_check,
    .run = game_run,
};
