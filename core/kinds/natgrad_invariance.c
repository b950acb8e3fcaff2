/* natgrad_invariance.c: the `natgrad_invariance` experiment kind: natural gradient descent is
 * invariant to an affine reparameterization of the inputs, gradient descent is not (chapter 3,
 * "metrics").
 *
 * Semantics (also in the schema docs):
 *  - Data: synthetic (default): x ~ N(0, I_d), label = argmax of a random linear teacher
 *    W_t x (W_t (K x d) ~ N(0, 1) from stream TD_RNG_TEACHER), n_train training and n_test
 *    held-out examples from streams TD_RNG_DATA / TD_RNG_TEST_DATA. fashion-mnist: the first
 *    n_train / n_test images, projected to d dims by a fixed Gaussian matrix P (d x 784,
 *    entries N(0, 1/784), stream NGI_RNG_PROJ of the seed) when d < 784 (raw pixels when
 *    d = 784).
 *  - The reparameterization x' = A x + c (stream NGI_RNG_REPARAM of the seed): A = diag(s) Q
 *    with Q a Haar-random orthogonal matrix (Gram-Schmidt, done twice, on a Gaussian matrix;
 *    Q = I when reparam.kind is "diagonal") and s_i = cond^(u_i - 1/2), u_i ~ U[0, 1), so the
 *    condition number of A is at most reparam.cond; c ~ N(0, shift^2 I).
 *  - Two networks with the same architecture: net 1 sees x with parameters theta (td_mlp_init
 *    of the seed); net 2 sees x' and starts from theta with its first layer replaced by
 *    W' = W A^{-1} = W Q^T diag(1/s), b' = b - W' c, so that W' x' + b' = W x + b: the two
 *    compute the same function at init. This is a linear invertible map theta' = T theta.
 *  - Each pair is trained by full-batch updates on its own inputs, with the same rule:
 *      gd:  theta <- theta - gd_lr * grad L(theta)
 *      ngd: theta <- theta - ngd_lr * (F + damping I)^+ grad L(theta)
 *    F the exact true Fisher of the training set (= the Gauss-Newton matrix for both losses;
 *    curv.h) formed densely (one product per column) and solved through its eigendecomposition
 *    (newton.h): eigen-directions below 1e-12 * the largest eigenvalue are dropped, which is
 *    the pseudo-inverse on the exact null space softmax cross-entropy always has (adding a
 *    constant to all logits, or one vector to all output-layer weight rows, changes nothing).
 *  - Why NGD is invariant: with theta' = T theta, the gradient maps as g' = T^{-T} g and the
 *    Fisher as F' = T^{-T} F T^{-1}, so the step d' = -F'^+ g' equals T d whenever the
 *    solution is unique on range(F) and T maps range(F) onto range(F'), which holds here since
 *    T touches only the first layer and any exact null space (softmax cross-entropy: a
 *    constant added to all logits) lies in the output layer (Amari 1998; Martens 2020, "New
 *    insights and perspectives on the natural gradient method", JMLR 21, sec. 12: exact
 *    invariance to affine reparameterizations). GD's step -g' = -T^{-T} g maps back to
 *    -T^{-1} T^{-T} g != -g unless T is orthogonal. Damping lambda I breaks the invariance by
 *    O(lambda / smallest eigenvalue of F), so it defaults to 0.
 *  - line_search (default on): the NGD step length starts at ngd_lr and is halved while the
 *    training loss does not decrease by 1e-4 * a * g.d (Armijo); the test compares losses,
 *    which the two runs share exactly, so it keeps the invariance, and it stops the rare
 *    undamped Gauss-Newton step that overshoots.
 *  - Where the invariance stops showing: it is exact in exact arithmetic, but a nearly singular
 *    Fisher amplifies rounding differences between the two runs. Observed (seeds 0-9): at the
 *    defaults the NGD distance stays below 1e-11 for all ten seeds while GD's reaches 0.13-0.28
 *    at step 50 (peaks up to 1.4); with ngd_lr 0.1, seeds 5, 6 and 9 drive a tanh unit into
 *    saturation, the smallest Fisher eigenvalue falls by ~3x per step to 1e-12 of the largest,
 *    and the NGD distance jumps to 0.03-0.06 around step 30. Cross-entropy on the (separable)
 *    synthetic labels grows the logits without bound and the same happens after ~35 steps;
 *    ReLU's kinks make the two runs' activation patterns differ at rounding level (NGD
 *    distance ~1e-2). So the defaults are mse, tanh, a small ngd_lr and 50 steps.
 *  - Metrics at step t = 0..steps (after t updates): fn_distance_gd and fn_distance_ngd, the
 *    RMS over the n_test held-out points of ||f_1(x_i) - f_2(x'_i)||_2 on the network OUTPUTS
 *    (logits for cross-entropy); train_loss_gd, train_loss_gd_reparam, train_loss_ngd,
 *    train_loss_ngd_reparam; fn_scale, the RMS norm of net 1's NGD outputs on the held-out
 *    points (to read the distances against).
 *  - Summary: the final and maximum distances, the final losses, gd_over_ngd (final GD over
 *    final NGD distance) and line_search_halvings.
 *  - Divergence: a non-finite loss of any run, or the shared rule of core/train/diverge.h
 *    (params.divergence.*) on train_loss_gd, ends the job with TD_EDIVERGED and
 *    summary.diverged_step.
 *  - The loop is the trainer's FULL-BATCH mode (core/train/trainer.h): its model is the GD run
 *    on x (loss logged as train_loss_gd); the other three runs, the distances and the data are
 *    this file's hooks (load, setup, eval, after_loss, update).
 * Defaults: synthetic, d = 8, K = 4, n_train 1024, n_test 256, MLP 8-8-4 tanh (108
 * parameters), mse, 50 steps, gd_lr 0.2, ngd_lr 0.05, cond 10, shift 1: a few seconds.
 * Measured (seed 0): fn_distance_ngd 6.8e-15 at step 50 (max 6.8e-15), fn_distance_gd 0.149
 * (max 1.44); train loss NGD 0.106, GD 0.200. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "curv/curv.h"
#include "nn/data.h"
#include "base/la.h"
#include "nn/model.h"
#include "optim/newton.h"
#include "base/rng.h"
#include "kinds/registry.h"
#include "train/trainer.h"

#define NGI_RNG_PROJ 0x50524f4au    /* "PROJ" */
#define NGI_RNG_REPARAM 0x52455041u /* "REPA" */
#define NGI_MAX_PARAMS 5000

static const td_param ngi_params[] = {
    {"data.name", TD_PT_STR, "\"synthetic\"", 0, 0, "synthetic|fashion-mnist", 0,
     "synthetic (Gaussian inputs, linear-teacher labels) or fashion-mnist (projected to d dims)"},
    {"data.n_train", TD_PT_INT, "1024", 1, 60000, NULL, 0,
     "training examples (full-batch updates; fashion-mnist: the first n_train)"},
    {"data.n_test", TD_PT_INT, "256", 1, 10000, NULL, 0,
     "held-out points of the function-space distance"},
    {"data.d", TD_PT_INT, "8", 1, 784, NULL, 0,
     "input dimension (fashion-mnist: random projection of the 784 pixels; 784: none)"},
    {"data.classes", TD_PT_INT, "4", 2, 100, NULL, 0, "synthetic: number of classes K"},
    {"model.hidden", TD_PT_INT_LIST, "[8]", 1, 4096, NULL, 16, "hidden layer widths"},
    {"model.activation", TD_PT_STR, "\"tanh\"", 0, 0, "relu|tanh|linear", 0,
     "activation after every hidden layer (relu can leave dead units, a singular Fisher)"},
    TD_TRAINER_INIT_PARAMS,
    {"loss", TD_PT_STR, "\"mse\"", 0, 0, "cross_entropy|mse", 0,
     "mse (1/2 mean ||f - onehot(y)||^2) or cross_entropy (see the kind's notes: separable "
     "data drives the logits up and the Fisher towards singular)"},
    {"reparam.kind", TD_PT_STR, "\"dense\"", 0, 0, "dense|diagonal", 0,
     "A = diag(s) Q with Q random orthogonal (dense) or Q = I (diagonal: a per-feature scaling)"},
    {"reparam.cond", TD_PT_NUM, "10", 1, 1e6, NULL, 0,
     "the scales s_i = cond^(u_i - 1/2), u_i ~ U[0,1): cond(A) <= cond"},
    {"reparam.shift", TD_PT_NUM, "1", 0, 1e3, NULL, 0, "std of the shift c in x' = A x + c"},
    {"gd_lr", TD_PT_NUM, "0.2", 1e-12, 1e3, NULL, 0, "learning rate of gradient descent"},
    {"ngd_lr", TD_PT_NUM, "0.05", 1e-12, 1e3, NULL, 0, "learning rate of natural gradient descent"},
    {"damping", TD_PT_NUM, "0", 0, 1e6, NULL, 0,
     "Tikhonov damping of the Fisher (breaks the invariance by O(damping / eigenvalue))"},
    {"line_search", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "NGD: Armijo backtracking on the training loss from ngd_lr (halving; invariant, since the "
     "two runs see the same losses)"},
    {"steps", TD_PT_INT, "50", 1, 100000, NULL, 0, "full-batch updates of each of the 4 runs"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0,
     "seed of data, teacher, init and reparameterization"},
    TD_DIVERGE_PARAMS,
};

typedef struct ngi_cfg {
  int fmnist, diag;
  int n_train, n_test, d, K;
  td_mlp_cfg mlp;
  td_curv_loss loss;
  double cond, shift, gd_lr, ngd_lr, damping;
  int line_search;
  long steps;
  uint64_t seed;
  td_diverge_cfg div;
} ngi_cfg;

static int parse_cfg(const json_t *p, ngi_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  c->fmnist = strcmp(td_param_str(p, "data.name", "synthetic"), "fashion-mnist") == 0;
  c->n_train = (int)td_param_int(p, "data.n_train", 1024);
  c->n_test = (int)td_param_int(p, "data.n_test", 256);
  c->d = (int)td_param_int(p, "data.d", 8);
  c->K = c->fmnist ? 10 : (int)td_param_int(p, "data.classes", 4);
  c->mlp.in_dim = c->d;
  c->mlp.out_dim = c->K;
  int rc = td_trainer_parse_model(p, "tanh", &c->mlp, err);
  if (rc) return rc;
  c->loss = strcmp(td_param_str(p, "loss", "mse"), "mse") == 0 ? TD_CURV_MSE : TD_CURV_XENT;
  c->diag = strcmp(td_param_str(p, "reparam.kind", "dense"), "diagonal") == 0;
  c->cond = td_param_num(p, "reparam.cond", 10);
  c->shift = td_param_num(p, "reparam.shift", 1);
  c->gd_lr = td_param_num(p, "gd_lr", 0.2);
  c->ngd_lr = td_param_num(p, "ngd_lr", 0.05);
  c->damping = td_param_num(p, "damping", 0);
  c->line_search = td_param_bool(p, "line_search", 1);
  c->steps = td_param_int(p, "steps", 50);
  c->seed = (uint64_t)td_param_int(p, "seed", 0);
  return td_diverge_parse(p, &c->div, err);
}

static int ngi_check(const json_t *params, td_estimate *est, td_err *err) {
  int prc = td_trainer_require_standard(params, "natgrad_invariance", err);
  if (prc) return prc;
  ngi_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  double np = 0, cb = 0;
  if ((rc = td_curv_estimate(&c.mlp, c.n_train > c.n_test ? c.n_train : c.n_test, &cb, err)))
    return rc;
  double ws;
  if ((rc = td_mlp_estimate(&c.mlp, 1, &np, &ws, err))) return rc;
  if (np > NGI_MAX_PARAMS)
    return td_err_set(err, TD_EINVAL, "params.model.hidden",
                      "the dense Fisher needs a small model: %.0f parameters, above %d", np,
                      NGI_MAX_PARAMS);
  est->n_params = np;
  est->bytes = 2 * cb + td_newton_bytes(np) + 8.0 * (10 * np) +
               8.0 * (double)(c.n_train + c.n_test) * (2.0 * c.d + 2.0 * c.K) +
               (c.fmnist ? 60000.0 * 785 * 8 + 784.0 * c.d * 8 : 0);
  return 0;
}

/* Modified Gram-Schmidt, twice, on the rows of Q (d x d) in place: an orthogonal matrix. */
static void orthonormalize(double *Q, int d) {
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < d; i++) {
      double *qi = Q + (size_t)i * d;
      for (int j = 0; j < i; j++) {
        const double *qj = Q + (size_t)j * d;
        td_la_axpy((size_t)d, -td_la_dot((size_t)d, qi, qj), qj, qi);
      }
      td_la_scal((size_t)d, 1.0 / td_la_nrm2((size_t)d, qi), qi);
    }
}

/* The kind's own state. The trainer's model and context are run 0 (GD on x): theta[0] is
 * t->m->params and c1 is t->cc. */
typedef struct ngi_state {
  const ngi_cfg *c;
  double *Xr, *Xter;           /* reparameterized inputs x' (n x d) */
  double *A, *s, *shift;       /* Q (d x d) and the scales; c */
  td_curv_ctx c2;              /* on x' */
  td_newton *nt;
  td_mlp_ws ws;
  double *theta[4];            /* gd (x), gd (x'), ngd (x), ngd (x'); theta[0] is borrowed */
  double *dir, *trial, *out1, *out2;
  long ls_halvings;
  double dist[2], dmax[2], last_loss[4];
} ngi_state;

/* Synthetic data: x ~ N(0, I), labels argmax of W_t x. */
static int make_synth(const ngi_cfg *c, int n, uint64_t stream, td_dataset *ds, td_err *err) {
  memset(ds, 0, sizeof *ds);
  ds->n = (size_t)n;
  ds->d = (size_t)c->d;
  ds->k = c->K;
  ds->X = malloc((size_t)n * c->d * sizeof *ds->X);
  ds->y = malloc((size_t)n * sizeof *ds->y);
  double *Wt = malloc((size_t)c->K * c->d * sizeof *Wt);
  if (!ds->X || !ds->y || !Wt) {
    free(Wt);
    return td_err_set(err, TD_ENOMEM, NULL, "natgrad_invariance: out of memory for data");
  }
  td_rng r;
  td_rng_init(&r, c->seed, TD_RNG_TEACHER);
  td_rng_fill_normal(&r, Wt, (size_t)c->K * c->d, 1.0);
  td_rng_init(&r, c->seed, stream);
  td_rng_fill_normal(&r, ds->X, (size_t)n * c->d, 1.0);
  for (int i = 0; i < n; i++) {
    int best = 0;
    double bv = -INFINITY;
    for (int k = 0; k < c->K; k++) {
      double v = td_la_dot((size_t)c->d, Wt + (size_t)k * c->d, ds->X + (size_t)i * c->d);
      if (v > bv) {
        bv = v;
        best = k;
      }
    }
    ds->y[i] = best;
  }
  free(Wt);
  return 0;
}

/* Fashion-MNIST projected to d dims by P (d x 784) ~ N(0, 1/784) (identity when d = 784). */
static int make_fmnist(const ngi_cfg *c, td_dataset *tr, td_dataset *te, td_err *err) {
  int rc = td_data_fashion_mnist("train", (size_t)c->n_train, tr, err);
  if (!rc) rc = td_data_fashion_mnist("test", (size_t)c->n_test, te, err);
  if (rc || c->d == 784) return rc;
  double *P = malloc((size_t)c->d * 784 * sizeof *P);
  if (!P) return td_err_set(err, TD_ENOMEM, NULL, "natgrad_invariance: out of memory");
  td_rng r;
  td_rng_init(&r, c->seed, NGI_RNG_PROJ);
  td_rng_fill_normal(&r, P, (size_t)c->d * 784, 1.0 / sqrt(784.0));
  td_dataset *sets[2] = {tr, te};
  for (int k = 0; k < 2 && !rc; k++) {
    td_dataset *ds = sets[k];
    double *Xp = malloc(ds->n * (size_t)c->d * sizeof *Xp);
    if (!Xp) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "natgrad_invariance: out of memory");
      break;
    }
    /* Xp (n x d) = X (n x 784) P^T: P stored (d x 784), Trans. */
    td_la_gemm(0, 1, (int)ds->n, c->d, 784, 1.0, ds->X, P, 0.0, Xp);
    free(ds->X);
    ds->X = Xp;
    ds->d = (size_t)c->d;
  }
  free(P);
  return rc;
}

/* X' (n x d) = X A^T + c with A = diag(s) Q: row i is s .* (Q x_i) + c. */
static void reparam(const ngi_state *s, int d, const double *X, size_t n, double *Xr) {
  /* Xr = X Q^T: X (n x d) NoTrans, Q stored (d x d), Trans. */
  td_la_gemm(0, 1, (int)n, d, d, 1.0, X, s->A, 0.0, Xr);
  for (size_t i = 0; i < n; i++)
    for (int j = 0; j < d; j++) Xr[i * d + j] = s->s[j] * Xr[i * d + j] + s->shift[j];
}

/* RMS over rows of ||o1_i - o2_i||. */
static double rms_dist(const double *o1, const double *o2, int n, int K) {
  double t = 0.0;
  for (size_t i = 0; i < (size_t)n * K; i++) t += (o1[i] - o2[i]) * (o1[i] - o2[i]);
  return sqrt(t / n);
}

static int ngi_load(td_trainer *t, void *ctx, td_err *err) {
  ngi_state *s = ctx;
  const ngi_cfg *c = s->c;
  if (c->fmnist) return make_fmnist(c, &t->train, &t->test, err);
  int rc = make_synth(c, c->n_train, TD_RNG_DATA, &t->train, err);
  if (!rc) rc = make_synth(c, c->n_test, TD_RNG_TEST_DATA, &t->test, err);
  return rc;
}

/* The reparameterization, the inputs x', the four runs' parameters and the contexts. */
static int ngi_setup(td_trainer *t, void *ctx, td_err *err) {
  ngi_state *s = ctx;
  const ngi_cfg *c = s->c;
  const int d = c->d, K = c->K, N = c->n_train, NT = c->n_test;
  const size_t np = t->m->n_params;
  for (int i = 0; i < 4; i++) s->last_loss[i] = NAN;
  s->Xr = malloc((size_t)N * d * sizeof *s->Xr);
  s->Xter = malloc((size_t)NT * d * sizeof *s->Xter);
  s->A = malloc((size_t)d * d * sizeof *s->A);
  s->s = malloc((size_t)d * sizeof *s->s);
  s->shift = malloc((size_t)d * sizeof *s->shift);
  s->dir = malloc(np * sizeof *s->dir);
  s->trial = malloc(np * sizeof *s->trial);
  s->out1 = malloc((size_t)NT * K * sizeof *s->out1);
  s->out2 = malloc((size_t)NT * K * sizeof *s->out2);
  int ok = s->Xr && s->Xter && s->A && s->s && s->shift && s->dir && s->trial && s->out1 &&
           s->out2;
  for (int i = 1; i < 4; i++) ok = ok && (s->theta[i] = malloc(np * sizeof(double)));
  if (!ok) return td_err_set(err, TD_ENOMEM, NULL, "natgrad_invariance: out of memory");
  s->theta[0] = t->m->params;

  /* The reparameterization A = diag(s) Q, c. */
  td_rng r;
  td_rng_init(&r, c->seed, NGI_RNG_REPARAM);
  if (c->diag) {
    memset(s->A, 0, (size_t)d * d * sizeof *s->A);
    for (int i = 0; i < d; i++) s->A[(size_t)i * d + i] = 1.0;
  } else {
    td_rng_fill_normal(&r, s->A, (size_t)d * d, 1.0);
    orthonormalize(s->A, d);
  }
  for (int i = 0; i < d; i++) s->s[i] = pow(c->cond, td_rng_uniform(&r) - 0.5);
  td_rng_fill_normal(&r, s->shift, (size_t)d, c->shift);
  reparam(s, d, t->train.X, (size_t)N, s->Xr);
  reparam(s, d, t->test.X, (size_t)NT, s->Xter);

  /* theta (net 1, the trainer's initialized model) and theta' = T theta (net 2):
   * W' = W Q^T diag(1/s), b' = b - W' c. */
  memcpy(s->theta[1], s->theta[0], np * sizeof(double));
  {
    double *W = NULL, *b = NULL, *W2 = NULL, *b2 = NULL;
    const td_layer *L0 = td_mlp_linear(t->m, 0, s->theta[0], &W, &b);
    td_mlp_linear(t->m, 0, s->theta[1], &W2, &b2);
    const int h = L0->n_out;
    /* W2 (h x d) = W Q^T: W (h x d) NoTrans, Q stored (d x d), Trans; then columns / s. */
    td_la_gemm(0, 1, h, d, d, 1.0, W, s->A, 0.0, W2);
    for (int i = 0; i < h; i++)
      for (int j = 0; j < d; j++) W2[(size_t)i * d + j] /= s->s[j];
    /* b2 = b - W2 c */
    td_la_gemv(0, h, d, -1.0, W2, s->shift, 1.0, b2);
  }
  memcpy(s->theta[2], s->theta[0], np * sizeof(double));
  memcpy(s->theta[3], s->theta[1], np * sizeof(double));

  int cap = N > NT ? N : NT, rc;
  if ((rc = td_curv_init(&s->c2, t->m, N, err)) ||
      (rc = td_mlp_ws_init(&s->ws, t->m, cap, err)) ||
      (rc = td_newton_create(np, NGI_MAX_PARAMS, &s->nt, err)))
    return rc;
  return td_curv_set_batch(&s->c2, s->Xr, t->train.y, NULL, N, c->loss, err);
}

static void ngi_teardown(td_trainer *t, void *ctx) {
  (void)t;
  ngi_state *s = ctx;
  free(s->Xr);
  free(s->Xter);
  free(s->A);
  free(s->s);
  free(s->shift);
  td_curv_deinit(&s->c2);
  td_newton_destroy(s->nt);
  td_mlp_ws_deinit(&s->ws);
  for (int i = 1; i < 4; i++) free(s->theta[i]);
  free(s->dir);
  free(s->trial);
  free(s->out1);
  free(s->out2);
}

/* Held-out distances of the pairs at step t (every step). */
static int ngi_eval(td_trainer *t, void *ctx, td_err *err) {
  (void)err;
  ngi_state *s = ctx;
  const int K = s->c->K, NT = s->c->n_test;
  double scale = 0;
  for (int mth = 0; mth < 2; mth++) {
    const double *o = td_mlp_forward(t->m, &s->ws, s->theta[2 * mth], t->test.X, NT);
    memcpy(s->out1, o, (size_t)NT * K * sizeof *o);
    o = td_mlp_forward(t->m, &s->ws, s->theta[2 * mth + 1], s->Xter, NT);
    memcpy(s->out2, o, (size_t)NT * K * sizeof *o);
    s->dist[mth] = rms_dist(s->out1, s->out2, NT, K);
    if (s->dist[mth] > s->dmax[mth] || isnan(s->dist[mth])) s->dmax[mth] = s->dist[mth];
    if (mth == 1) {
      double z = 0;
      for (size_t i = 0; i < (size_t)NT * K; i++) z += s->out1[i] * s->out1[i];
      scale = sqrt(z / NT);
    }
  }
  int rc = td_sink_metric(t->sink, "fn_distance_gd", t->step, s->dist[0]);
  if (!rc) rc = td_sink_metric(t->sink, "fn_distance_ngd", t->step, s->dist[1]);
  if (!rc) rc = td_sink_metric(t->sink, "fn_scale", t->step, scale);
  return rc;
}

static const char *const loss_keys[4] = {"train_loss_gd", "train_loss_gd_reparam",
                                         "train_loss_ngd", "train_loss_ngd_reparam"};

/* Runs 1..3 at step t: the loss (logged), then, when update, the update t -> t + 1. Run 2
 * uses the trainer's context t->cc (so run 0's gradient must have been used before). */
static int other_runs(td_trainer *t, ngi_state *s, int update, td_err *err) {
  const ngi_cfg *c = s->c;
  const size_t np = t->m->n_params;
  for (int run = 1; run < 4; run++) {
    td_curv_ctx *cc = (run & 1) ? &s->c2 : &t->cc;
    int e = td_curv_set_point(cc, s->theta[run], NULL);
    s->last_loss[run] = cc->loss_value;
    int rc = td_sink_metric(t->sink, loss_keys[run], t->step, cc->loss_value);
    if (rc) return rc;
    if (e)
      return td_err_set(err, TD_EDIVERGED, NULL, "%s is not finite at step %ld", loss_keys[run],
                        t->step);
    if (!update) continue;
    const double *g = td_curv_grad(cc);
    if (run < 2) {
      td_la_axpy(np, -c->gd_lr, g, s->theta[run]);
      continue;
    }
    if ((rc = td_newton_direction(s->nt, cc, TD_NEWTON_GGN, g, c->damping, 0.0, s->dir, NULL,
                                  err)))
      return rc;
    /* Armijo backtracking on the training loss (invariant: f(theta + a d) = f'(theta' +
     * a d') when d' = T d): a = ngd_lr, halved while the loss rises above
     * f + 1e-4 a g.d, at most 40 times (then no step). */
    const double f0 = cc->loss_value, gd = td_la_dot(np, g, s->dir);
    double a = c->ngd_lr;
    int tries = 0;
    if (c->line_search)
      for (;; tries++) {
        for (size_t i = 0; i < np; i++) s->trial[i] = s->theta[run][i] + a * s->dir[i];
        int e2 = td_curv_set_point(cc, s->trial, NULL);
        if (!e2 && cc->loss_value <= f0 + 1e-4 * a * gd) break;
        if (tries == 40) {
          a = 0.0;
          break;
        }
        a *= 0.5;
      }
    s->ls_halvings += tries;
    td_la_axpy(np, a, s->dir, s->theta[run]);
  }
  return 0;
}

/* At the last step there is no update: log the other runs' final losses here. */
static int ngi_after_loss(td_trainer *t, void *ctx, td_err *err) {
  ngi_state *s = ctx;
  s->last_loss[0] = t->loss;
  return t->step == s->c->steps ? other_runs(t, s, 0, err) : 0;
}

/* Update t -> t + 1 of the four runs, in order: run 0 (the trainer's gradient), then 1..3. */
static int ngi_update(td_trainer *t, void *ctx, td_err *err) {
  ngi_state *s = ctx;
  td_la_axpy(t->m->n_params, -s->c->gd_lr, t->grad, s->theta[0]);
  return other_runs(t, s, 1, err);
}

static int ngi_finish(td_trainer *t, void *ctx, json_t *sum, td_err *err) {
  (void)t;
  (void)err;
  ngi_state *s = ctx;
  td_trainer_set_num(sum, "fn_distance_gd", s->dist[0]);
  td_trainer_set_num(sum, "fn_distance_ngd", s->dist[1]);
  td_trainer_set_num(sum, "fn_distance_gd_max", s->dmax[0]);
  td_trainer_set_num(sum, "fn_distance_ngd_max", s->dmax[1]);
  td_trainer_set_num(sum, "gd_over_ngd", s->dist[0] / s->dist[1]);
  json_object_set_new(sum, "line_search_halvings", json_integer(s->ls_halvings));
  for (int run = 0; run < 4; run++) td_trainer_set_num(sum, loss_keys[run], s->last_loss[run]);
  return 0;
}

static int ngi_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  ngi_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  td_trainer_cfg tc;
  memset(&tc, 0, sizeof tc);
  tc.pb.mlp = c.mlp;
  tc.pb.loss = c.loss;
  tc.pb.seed = c.seed;
  tc.pb.n_train = (size_t)c.n_train;
  tc.pb.n_test = (size_t)c.n_test;
  tc.full_batch = tc.grad_curv = 1;
  tc.loss_key = loss_keys[0];
  tc.opt_name = "sgd";
  tc.hp = td_optim_hp_default();
  tc.lr = c.gd_lr;
  tc.total_steps = c.steps;
  tc.eval_every = 1;
  tc.div = c.div;
  if ((rc = td_sched_init(&tc.sched, TD_SCHED_CONSTANT, c.gd_lr, 0, 0, 0.1, 0.0, c.steps, err)))
    return rc;
  ngi_state s = {.c = &c};
  const td_trainer_hooks hooks = {.ctx = &s,
                                  .load = ngi_load,
                                  .setup = ngi_setup,
                                  .after_loss = ngi_after_loss,
                                  .update = ngi_update,
                                  .eval = ngi_eval,
                                  .finish = ngi_finish,
                                  .teardown = ngi_teardown};
  return td_trainer_run(&tc, &hooks, sink, summary, err);
}

const td_kind td_kind_natgrad_invariance = {
    .name = "natgrad_invariance",
    .doc = "GD vs natural gradient on inputs x and x' = A x + c from the same function: NGD's "
           "function-space distance stays ~0, GD's grows",
    .chapter = "3",
    .params = ngi_params,
    .n_params = sizeof ngi_params / sizeof ngi_params[0],
    .check = ngi_check,
    .run = ngi_run,
};
