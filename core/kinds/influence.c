/* influence.c: the `influence` experiment kind (chapter 12): influence functions (Koh and Liang
 * 2017) of the training examples on chosen test examples, by exact solve, CG, LiSSA and EK-FAC
 * (of the empirical Fisher, mlp only), with
 * self-influence (mislabel detection by flipped labels) and leave-one-out ground truth.
 *
 * Semantics (also in the schema docs and the README's influence section):
 *  - The model w* minimizes J(w) = (1/n) sum_i l_i(w) + (damping/2) ||w||^2 (damping = the L2
 *    strength, so H + damping I is J's Hessian). inner "ridge": linear least squares on the
 *    synthetic set (no bias), w* in closed form. inner "mlp": the trainer's problem (data.*,
 *    model.*, loss, seed), trained full batch from td_mlp_init(seed) by heavy ball
 *    (train.lr, momentum 0.9) for train.steps steps; summary.stationarity = ||grad J(w*)||.
 *  - Scores (influence.h): score_i = -g_test^T (H + damping I)^-1 g_i, positive = harmful
 *    (upweighting raises the test loss), no normalization; predicted change of the test loss on
 *    removing i = -score_i / n. Self-influence s_i = g_i^T (H + damping I)^-1 g_i (exact solve
 *    when it runs, else CG capped at self_influence.cg_iters iterations per example).
 *  - flip > 0 flips the labels of the first `flip` training examples (class y -> (y + 1) mod K;
 *    regression target -> -target) before training; summary.flipped_in_top counts them among the
 *    `flip` largest self-influences (the check of Koh and Liang 2017, sec. 5.4).
 *  - Leave-one-out for the FIRST test example: ridge: exact for every example (Sherman-Morrison,
 *    td_inf_ridge_loo); mlp: retraining without example i (warm start at w*, loo.steps steps of
 *    the same heavy ball on J without l_i, 1/n kept) for the loo.n examples of largest |score|.
 *    Pearson and Spearman of each method's predicted change with the measured one. mlp also:
 *    the proximal Bregman response (PBRF, Bae et al. 2022, eq. 9) from w* for the same examples
 *    and steps (measured_pbrf; pearson_<method>_pbrf, spearman_<method>_pbrf): what influence
 *    functions approximate for a network, rather than retraining.
 *  - Artifact influence.json: {convention, damping, n_train, tests: [{index, label, pixels,
 *    helpful: [{index, score, label, pixels}], harmful: [...]}], self_influence, flipped, methods:
 *    {name: {secs, iters, rel_err_vs_exact}}, loo: {indices, measured, predicted: {method: []}}};
 *    pixels (Fashion-MNIST only) is the image as 1568 hex digits, one byte per pixel, which the
 *    dashboard draws (web/js/influence.js). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "bilevel/hypergrad.h"
#include "bilevel/influence.h"
#include "curv/power.h"
#include "kinds/registry.h"
#include "nn/loss.h"
#include "train/trainer.h"

#define INF_MAX_TESTS 8

static const td_param inf_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("200", "100", "[16]", "\"relu\"", "\"cross_entropy\""),
    {"inner", TD_PT_STR, "\"mlp\"", 0, 0, "mlp|ridge", 0,
     "mlp (the model on data.*, trained full batch) or ridge (least squares on the synthetic "
     "set, closed-form fit and exact leave-one-out)"},
    {"damping", TD_PT_NUM, "0.01", 1e-8, 1e3, NULL, 0,
     "L2 strength of the training objective = the damping of H + damping I"},
    {"train.steps", TD_PT_INT, "2000", 1, 1e6, NULL, 0, "mlp: full-batch heavy-ball steps to w*"},
    {"train.lr", TD_PT_NUM, "0.05", 1e-8, 1e2, NULL, 0, "mlp: learning rate (momentum 0.9)"},
    {"test_indices", TD_PT_INT_LIST, "[0]", 0, 1e7, NULL, INF_MAX_TESTS,
     "held-out examples whose loss is explained (indices into the first n_test)"},
    {"methods.exact", TD_PT_BOOL, NULL, 0, 0, NULL, 0,
     "dense damped Hessian and Cholesky (absent: when the model has <= 3000 parameters)"},
    {"methods.cg", TD_PT_BOOL, "true", 0, 0, NULL, 0, "conjugate gradient on H + damping I"},
    {"methods.lissa", TD_PT_BOOL, "true", 0, 0, NULL, 0, "LiSSA (Agarwal et al. 2017)"},
    {"methods.ekfac", TD_PT_BOOL, NULL, 0, 0, NULL, 0,
     "EK-FAC of the empirical Fisher (George et al. 2018; a different curvature than the "
     "Hessian of the others); absent: on for mlp; not available for ridge"},
    {"cg.iters", TD_PT_INT, "200", 1, 100000, NULL, 0, "CG iteration cap"},
    {"lissa.depth", TD_PT_INT, "1000", 1, 1e6, NULL, 0, "LiSSA recursion depth"},
    {"lissa.batch", TD_PT_INT, "0", 0, 1e7, NULL, 0,
     "examples per stochastic HVP (0: the full Hessian, deterministic)"},
    {"lissa.repeats", TD_PT_INT, "1", 1, 1000, NULL, 0, "averaged independent recursions"},
    {"lissa.scale", TD_PT_NUM, "0", 0, 1e12, NULL, 0,
     "s > lambda_max(H + damping I) (0: 1.1 x lambda_max by the power method)"},
    {"self_influence.cg_iters", TD_PT_INT, "20", 1, 10000, NULL, 0,
     "CG iterations per example for self-influence when the exact solve does not run"},
    {"top_k", TD_PT_INT, "10", 1, 1000, NULL, 0, "helpful and harmful examples listed"},
    {"flip", TD_PT_INT, "0", 0, 1e6, NULL, 0,
     "flip the labels of the first `flip` training examples (mislabel detection)"},
    {"loo.n", TD_PT_INT, "10", 0, 10000, NULL, 0,
     "mlp: retrain without each of the loo.n examples of largest |score|"},
    {"loo.steps", TD_PT_INT, "500", 1, 1e6, NULL, 0, "mlp: retraining steps (warm start at w*)"},
};

typedef struct inf_cfg {
  td_problem_cfg pb;
  int ridge;
  double damping, lr;
  long steps, loo_n, loo_steps, flip;
  int top_k, n_tests, tests[INF_MAX_TESTS];
  int m_exact, m_cg, m_lissa, m_ekfac;
  td_inf_opts cg, lissa;
  int self_iters;
} inf_cfg;

static int parse(const json_t *p, inf_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  int rc = td_trainer_parse_problem(p, 200, 100, 0, &c->pb, err);
  if (rc) return rc;
  c->ridge = strcmp(td_param_str(p, "inner", "mlp"), "ridge") == 0;
  if (c->ridge && !c->pb.synthetic)
    return td_err_set(err, TD_EINVAL, "params.data.name",
                      "inner ridge runs on the synthetic linear-teacher set");
  c->damping = td_param_num(p, "damping", 0.01);
  c->lr = td_param_num(p, "train.lr", 0.05);
  c->steps = td_param_int(p, "train.steps", 2000);
  c->loo_n = td_param_int(p, "loo.n", 10);
  c->loo_steps = td_param_int(p, "loo.steps", 500);
  c->flip = td_param_int(p, "flip", 0);
  c->top_k = (int)td_param_int(p, "top_k", 10);
  if (c->flip > (long)c->pb.n_train)
    return td_err_set(err, TD_EINVAL, "params.flip", "flip exceeds n_train (%zu)",
                      c->pb.n_train);
  if (c->loo_n > (long)c->pb.n_train) c->loo_n = (long)c->pb.n_train;
  const json_t *ti = td_param_get(p, "test_indices");
  c->n_tests = (int)json_array_size(ti);
  for (int k = 0; k < c->n_tests; k++) {
    json_int_t v = json_integer_value(json_array_get(ti, (size_t)k));
    if (v < 0 || (size_t)v >= c->pb.n_test)
      return td_err_set(err, TD_EINVAL, "params.test_indices",
                        "test index %lld is outside the %zu held-out examples", (long long)v,
                        c->pb.n_test);
    c->tests[k] = (int)v;
  }
  double P = 0, ws = 0;
  if (c->ridge) P = (double)c->pb.synth.d;
  else if ((rc = td_mlp_estimate(&c->pb.mlp, 1, &P, &ws, err))) return rc;
  c->m_exact = td_param_has(p, "methods.exact") ? td_param_bool(p, "methods.exact", 0) : P <= 3000;
  if (c->m_exact && P > 6000)
    return td_err_set(err, TD_EINVAL, "params.methods.exact",
                      "the exact solve forms a %.0f x %.0f matrix: use at most 6000 parameters",
                      P, P);
  c->m_cg = td_param_bool(p, "methods.cg", 1);
  c->m_lissa = td_param_bool(p, "methods.lissa", 1);
  c->m_ekfac = td_param_has(p, "methods.ekfac") ? td_param_bool(p, "methods.ekfac", 0) : !c->ridge;
  if (c->m_ekfac && c->ridge)
    return td_err_set(err, TD_EINVAL, "params.methods.ekfac",
                      "EK-FAC needs the layers of an MLP (inner mlp)");
  if (!(c->m_exact || c->m_cg || c->m_lissa || c->m_ekfac))
    return td_err_set(err, TD_EINVAL, "params.methods", "choose at least one method");
  c->cg = (td_inf_opts){.method = TD_INF_CG, .damping = c->damping,
                        .cg_iters = (int)td_param_int(p, "cg.iters", 200), .cg_tol = 1e-10};
  c->lissa = (td_inf_opts){.method = TD_INF_LISSA, .damping = c->damping,
                           .lissa_depth = (int)td_param_int(p, "lissa.depth", 1000),
                           .lissa_batch = (int)td_param_int(p, "lissa.batch", 0),
                           .lissa_repeats = (int)td_param_int(p, "lissa.repeats", 1),
                           .lissa_scale = td_param_num(p, "lissa.scale", 0),
                           .seed = c->pb.seed};
  /* bounded work: the solvers poll no cancellation inside one solve */
  if ((double)c->lissa.lissa_depth * c->lissa.lissa_repeats > 2e6)
    return td_err_set(err, TD_ELIMIT, "params.lissa.repeats",
                      "lissa.depth x lissa.repeats may not exceed 2e6 Hessian-vector products");
  if (c->lissa.lissa_batch > (int)c->pb.n_train)
    return td_err_set(err, TD_EINVAL, "params.lissa.batch", "lissa.batch exceeds n_train");
  c->self_iters = (int)td_param_int(p, "self_influence.cg_iters", 20);
  if ((double)c->self_iters * c->pb.n_train > 1e7)
    return td_err_set(err, TD_ELIMIT, "params.self_influence.cg_iters",
                      "self_influence.cg_iters x n_train may not exceed 1e7 products");
  return 0;
}

static int inf_check(const json_t *p, td_estimate *est, td_err *err) {
  int prc = td_trainer_require_standard(p, "influence", err);
  if (prc) return prc;
  inf_cfg c;
  int rc = parse(p, &c, err);
  if (rc) return rc;
  double P = 0, ws = 0, cb = 0;
  if (c.ridge) {
    P = (double)c.pb.synth.d;
    cb = 8.0 * P * P * 3;
  } else {
    if ((rc = td_mlp_estimate(&c.pb.mlp, 1, &P, &ws, err))) return rc;
    if ((rc = td_curv_estimate(&c.pb.mlp, (int)c.pb.n_train, &cb, err))) return rc;
    cb *= 2;
  }
  double G = 8.0 * (double)c.pb.n_train * P; /* per-example gradients */
  double ex = c.m_exact ? 8.0 * P * P : 0;
  est->bytes = G + ex + cb + 8.0 * P * (20 + c.cg.cg_iters) + td_trainer_data_bytes(&c.pb);
  est->n_params = P;
  return 0;
}

/* ------------------------------------------------------------------ the model side */

typedef struct inf_state {
  const inf_cfg *c;
  td_dataset tr, te;
  size_t n, P;
  /* ridge */
  double *Xr, *yr, *H;
  /* mlp */
  td_mlp *m;
  td_curv_ctx cc;   /* full training batch */
  td_curv_ctx bc;   /* LiSSA batches / single examples */
  double *bX, *bY;
  int *by;
  double *w;        /* w* */
  double *zstar;    /* n x K outputs at w* (cross-entropy: their softmax), for the PBRF */
  double *u;        /* n x K scratch */
} inf_state;

static void st_hvp(void *ctx, const double *v, double *out) {
  inf_state *s = ctx;
  if (s->c->ridge) td_la_gemv(0, (int)s->P, (int)s->P, 1.0, s->H, v, 0.0, out);
  else td_curv_hvp(&s->cc, v, out);
}

/* gather rows idx into the batch buffers and bind them to bc at w* */
static void bind_rows(inf_state *s, const size_t *idx, int b) {
  size_t d = s->tr.d;
  int k = s->tr.k;
  for (int r = 0; r < b; r++) {
    memcpy(s->bX + (size_t)r * d, s->tr.X + idx[r] * d, d * sizeof *s->bX);
    if (s->tr.y) s->by[r] = s->tr.y[idx[r]];
    if (s->tr.Y) memcpy(s->bY + (size_t)r * k, s->tr.Y + idx[r] * k, (size_t)k * sizeof *s->bY);
  }
  td_curv_set_batch(&s->bc, s->bX, s->tr.y ? s->by : NULL, s->tr.Y ? s->bY : NULL, b,
                    s->c->pb.loss, NULL);
}

static void st_hvp_batch(void *ctx, const size_t *idx, int b, const double *v, double *out) {
  inf_state *s = ctx;
  if (s->c->ridge) {
    memset(out, 0, s->P * sizeof *out);
    for (int k = 0; k < b; k++) {
      const double *x = s->Xr + idx[k] * s->P;
      td_la_axpy(s->P, td_la_dot(s->P, x, v) / b, x, out);
    }
    return;
  }
  bind_rows(s, idx, b);
  td_curv_set_point(&s->bc, s->w, NULL);
  td_curv_hvp(&s->bc, v, out);
}

static void st_matvec(void *ctx, const double *v, double *out, size_t n) {
  inf_state *s = ctx;
  st_hvp(ctx, v, out);
  td_la_axpy(n, s->c->damping, v, out);
}

/* grad of J_{-skip}(w) (skip < 0: J) at w into g; returns J's data loss. Full-batch MLP.
 * pbrf != 0: instead the gradient of the proximal Bregman response objective of Bae, Ng, Lo,
 * Ghassemi and Grosse 2022 ("If influence functions are the answer, then what is the
 * question?", eq. 9) for removing example skip (eps = -1/n):
 *   (1/n) sum_j D(f(w, x_j), f(w*, x_j)) - (1/n) l_skip(w) + (damping/2) ||w - w*||^2,
 * with D the loss's Bregman divergence in output space (gradient in z: softmax(z) -
 * softmax(z*) for cross-entropy, z - z* for squared error). */
static double mlp_grad(inf_state *s, const double *w, long skip, int pbrf, double *g) {
  td_curv_set_point(&s->cc, w, NULL);
  double L = s->cc.loss_value;
  if (pbrf) {
    int K = s->m->cfg.out_dim, B = (int)s->n;
    const double *z = s->cc.ws.act[s->m->n_layers];
    if (s->c->pb.loss == TD_CURV_XENT) td_softmax_rows(s->u, z, B, K);
    else memcpy(s->u, z, (size_t)B * K * sizeof *s->u);
    for (size_t k = 0; k < (size_t)B * K; k++) s->u[k] = (s->u[k] - s->zstar[k]) / B;
    td_curv_vjp(&s->cc, s->u, g);
    size_t i = (size_t)skip;
    bind_rows(s, &i, 1);
    td_curv_set_point(&s->bc, w, NULL);
    td_la_axpy(s->P, -1.0 / s->n, td_curv_grad(&s->bc), g);
    for (size_t k = 0; k < s->P; k++) g[k] += s->c->damping * (w[k] - s->w[k]);
    return L;
  }
  memcpy(g, td_curv_grad(&s->cc), s->P * sizeof *g);
  if (skip >= 0) {
    size_t i = (size_t)skip;
    bind_rows(s, &i, 1);
    td_curv_set_point(&s->bc, w, NULL);
    td_la_axpy(s->P, -1.0 / s->n, td_curv_grad(&s->bc), g);
  }
  td_la_axpy(s->P, s->c->damping, w, g);
  return L;
}

/* heavy ball on J (or J_{-skip}) from w, in place. */
static int mlp_train(inf_state *s, td_sink *sink, double *w, long steps, long skip, int pbrf,
                     td_err *err) {
  double *v = calloc(s->P, sizeof *v), *g = malloc(s->P * sizeof *g);
  if (!v || !g) {
    free(v), free(g);
    return td_err_set(err, TD_ENOMEM, NULL, "influence: out of memory");
  }
  int rc = 0;
  for (long t = 0; t < steps; t++) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
      break;
    }
    double L = mlp_grad(s, w, skip, pbrf, g);
    if (!isfinite(L)) {
      rc = td_err_set(err, TD_EDIVERGED, "params.train.lr", "training diverged at step %ld", t);
      break;
    }
    if (skip < 0 && (t % 50 == 0 || t == steps - 1)) td_sink_metric(sink, "train_loss", t, L);
    for (size_t k = 0; k < s->P; k++) {
      v[k] = 0.9 * v[k] + g[k];
      w[k] -= s->c->lr * v[k];
    }
  }
  free(v), free(g);
  return rc;
}

/* per-example test loss and gradient of held-out example j at w* */
static double test_grad(inf_state *s, int j, double *g) {
  size_t d = s->te.d;
  if (s->c->ridge) {
    const double *x = s->te.X + (size_t)j * d;
    double r = td_la_dot(d, x, s->w) - s->te.Y[j];
    for (size_t k = 0; k < d; k++) g[k] = r * x[k];
    return 0.5 * r * r;
  }
  td_curv_set_batch(&s->bc, s->te.X + (size_t)j * d, s->te.y ? s->te.y + j : NULL,
                    s->te.Y ? s->te.Y + (size_t)j * s->te.k : NULL, 1, s->c->pb.loss, NULL);
  td_curv_set_point(&s->bc, s->w, NULL);
  memcpy(g, td_curv_grad(&s->bc), s->P * sizeof *g);
  return s->bc.loss_value;
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

typedef struct idx_val {
  double v;
  int i;
} idx_val;
static int cmp_desc(const void *a, const void *b) {
  double x = ((const idx_val *)a)->v, y = ((const idx_val *)b)->v;
  return (x < y) - (x > y);
}

/* Fashion-MNIST: the image (784 pixels in [0, 1]) as 1568 hex digits (0..255 per pixel, row
 * major), for the dashboard; NULL for other data. */
static json_t *pixels_hex(const double *x, size_t d) {
  if (d != 784) return NULL;
  char buf[2 * 784 + 1];
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < d; i++) {
    long v = lround(x[i] * 255.0);
    v = v < 0 ? 0 : v > 255 ? 255 : v;
    buf[2 * i] = hx[v >> 4];
    buf[2 * i + 1] = hx[v & 15];
  }
  buf[2 * d] = 0;
  return json_string(buf);
}

static json_t *top_list(const inf_state *s, const double *score, int k, int harmful) {
  size_t n = s->n;
  idx_val *iv = malloc(n * sizeof *iv);
  json_t *a = json_array();
  if (!iv) return a;
  for (size_t i = 0; i < n; i++) iv[i].v = harmful ? score[i] : -score[i], iv[i].i = (int)i;
  qsort(iv, n, sizeof *iv, cmp_desc);
  for (int r = 0; r < k && (size_t)r < n; r++) {
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(iv[r].i));
    json_object_set_new(o, "score", jnum(score[iv[r].i]));
    if (s->tr.y) json_object_set_new(o, "label", json_integer(s->tr.y[iv[r].i]));
    if (!s->c->pb.synthetic)
      json_object_set_new(o, "pixels", pixels_hex(s->tr.X + (size_t)iv[r].i * s->tr.d, s->tr.d));
    json_array_append_new(a, o);
  }
  free(iv);
  return a;
}

static int inf_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  inf_cfg c;
  int rc = parse(p, &c, err);
  if (rc) return rc;
  inf_state s;
  memset(&s, 0, sizeof s);
  s.c = &c;
  json_t *art = json_object(), *sum = json_object(), *meths = json_object();
  double *G = NULL, *gt = NULL, *q = NULL, *qref = NULL, *score = NULL, *self = NULL;
  double *scores_m[4] = {NULL, NULL, NULL, NULL};
  double *first[4] = {NULL, NULL, NULL, NULL}; /* the first test example's scores per method */
  td_inf_exact ex;
  memset(&ex, 0, sizeof ex);
  td_inf_ekfac ek;
  memset(&ek, 0, sizeof ek);
  double *Dbuf = NULL;
  if ((rc = td_trainer_load(&c.pb, &s.tr, &s.te, err))) goto out;
  s.n = c.pb.n_train;
  /* label flips */
  for (long i = 0; i < c.flip; i++) {
    if (s.tr.y) s.tr.y[i] = (s.tr.y[i] + 1) % s.tr.k;
    else for (int k = 0; k < s.tr.k; k++) s.tr.Y[i * s.tr.k + k] = -s.tr.Y[i * s.tr.k + k];
  }
  if (c.ridge) {
    s.P = s.tr.d;
    s.Xr = s.tr.X;
    s.yr = s.tr.Y;
    s.H = malloc(s.P * s.P * sizeof *s.H);
    s.w = malloc(s.P * sizeof *s.w);
    if (!s.H || !s.w) goto nomem;
    td_la_ata((int)s.n, (int)s.P, 1.0 / s.n, s.Xr, s.H);
    td_hg_ridge rq;
    size_t off[2] = {0, s.P};
    double lam = c.damping;
    if ((rc = td_hg_ridge_init(&rq, s.Xr, s.yr, s.n, s.te.X, s.te.Y, c.pb.n_test, s.P, err)))
      goto out;
    rc = td_hg_ridge_solve(&rq, 1, off, &lam, s.w, NULL, err);
    td_hg_ridge_deinit(&rq);
    if (rc) goto out;
  } else {
    if ((rc = td_mlp_create(&c.pb.mlp, &s.m, err))) goto out;
    td_mlp_init(s.m, c.pb.seed);
    s.P = s.m->n_params;
    int bcap = c.lissa.lissa_batch > 1 ? c.lissa.lissa_batch : 1;
    if ((rc = td_curv_init(&s.cc, s.m, (int)s.n, err)) ||
        (rc = td_curv_init(&s.bc, s.m, bcap, err)) ||
        (rc = td_curv_set_batch(&s.cc, s.tr.X, s.tr.y, s.tr.Y, (int)s.n, c.pb.loss, err)))
      goto out;
    s.bX = malloc((size_t)bcap * s.tr.d * sizeof *s.bX);
    s.bY = malloc((size_t)bcap * (size_t)s.tr.k * sizeof *s.bY);
    s.by = malloc((size_t)bcap * sizeof *s.by);
    s.w = malloc(s.P * sizeof *s.w);
    if (!s.bX || !s.bY || !s.by || !s.w) goto nomem;
    memcpy(s.w, s.m->params, s.P * sizeof *s.w);
    if ((rc = mlp_train(&s, sink, s.w, c.steps, -1, 0, err))) goto out;
  }
  size_t n = s.n, P = s.P;
  G = malloc(n * P * sizeof *G);
  gt = malloc(P * sizeof *gt);
  q = malloc(P * sizeof *q);
  qref = malloc(P * sizeof *qref);
  score = malloc(n * sizeof *score);
  self = malloc(n * sizeof *self);
  for (int k = 0; k < 4; k++) scores_m[k] = malloc(n * sizeof *scores_m[k]);
  if (!G || !gt || !q || !qref || !score || !self || !scores_m[0] || !scores_m[1] ||
      !scores_m[2] || !scores_m[3])
    goto nomem;
  /* stationarity and per-example gradients at w* */
  if (c.ridge) {
    for (size_t i = 0; i < n; i++) {
      double r = td_la_dot(P, s.Xr + i * P, s.w) - s.yr[i];
      for (size_t k = 0; k < P; k++) G[i * P + k] = r * s.Xr[i * P + k];
    }
  } else {
    td_curv_set_point(&s.cc, s.w, NULL);
    td_curv_per_example_grads(&s.cc, G);
    size_t nk = n * (size_t)s.m->cfg.out_dim;
    s.zstar = malloc(nk * sizeof *s.zstar);
    s.u = malloc(nk * sizeof *s.u);
    if (!s.zstar || !s.u) goto nomem;
    const double *z = s.cc.ws.act[s.m->n_layers];
    if (c.pb.loss == TD_CURV_XENT) td_softmax_rows(s.zstar, z, (int)n, s.m->cfg.out_dim);
    else memcpy(s.zstar, z, nk * sizeof *s.zstar);
  }
  for (size_t k = 0; k < P; k++) { /* grad J = mean_i g_i + damping w */
    double a = 0;
    for (size_t i = 0; i < n; i++) a += G[i * P + k];
    gt[k] = a / n + c.damping * s.w[k];
  }
  double stat = td_la_nrm2(P, gt);
  json_object_set_new(sum, "stationarity", jnum(stat));
  td_inf_problem ip = {.n_params = P, .n_train = n, .ctx = &s, .hvp = st_hvp,
                       .hvp_batch = st_hvp_batch};
  if (c.m_lissa && !(c.lissa.lissa_scale > 0)) {
    td_power_opts po = td_power_opts_default();
    po.max_iter = 300;
    po.tol = 1e-6;
    td_power_result pr;
    if ((rc = td_power_top(st_matvec, &s, P, &po, NULL, &pr, err))) goto out;
    c.lissa.lissa_scale = 1.1 * fabs(pr.eigval);
  }
  if (c.m_lissa) json_object_set_new(sum, "lissa_scale", jnum(c.lissa.lissa_scale));
  if (c.m_exact && (rc = td_inf_exact_init(&ex, &ip, c.damping, err))) goto out;
  if (c.m_ekfac) { /* layer inputs at w* (cc's forward) and the bias parts of G */
    int nl = s.m->n_linear;
    size_t offs[TD_INF_EKFAC_MAX], tot = 0;
    int nos[TD_INF_EKFAC_MAX], nis[TD_INF_EKFAC_MAX];
    const double *acts[TD_INF_EKFAC_MAX], *Ds[TD_INF_EKFAC_MAX];
    for (int j = 0; j < nl; j++) tot += n * (size_t)s.m->cfg.out_dim + n * (size_t)s.m->max_width;
    if (!(Dbuf = malloc(tot * sizeof *Dbuf))) goto nomem;
    double *dp = Dbuf;
    for (int j = 0; j < nl; j++) {
      double *W, *b;
      const td_layer *l = td_mlp_linear(s.m, j, s.w, &W, &b);
      offs[j] = l->off, nos[j] = l->n_out, nis[j] = l->n_in;
      acts[j] = s.cc.ws.act[l - s.m->layers];
      for (size_t i = 0; i < n; i++)
        for (int r = 0; r < l->n_out; r++)
          dp[i * l->n_out + r] = G[i * P + l->off + (size_t)l->n_out * l->n_in + r];
      Ds[j] = dp;
      dp += n * (size_t)l->n_out;
    }
    if ((rc = td_inf_ekfac_init(&ek, nl, offs, nos, nis, acts, Ds, n, P, err))) goto out;
  }
  /* scores for every test example and method */
  json_t *tests = json_array();
  json_object_set_new(art, "tests", tests);
  const char *mn[4] = {"exact", "cg", "lissa", "ekfac"};
  const int on[4] = {c.m_exact, c.m_cg, c.m_lissa, c.m_ekfac};
  double msecs[4] = {0, 0, 0, 0}, merr[4] = {0, 0, 0, 0};
  int miters[4] = {0, 0, 0, 0};
  for (int t = 0; t < c.n_tests; t++) {
    double lt = test_grad(&s, c.tests[t], gt);
    int have_ref = 0, best = -1;
    for (int k = 0; k < 4; k++) {
      if (!on[k]) continue;
      double t0 = td_trainer_now();
      int it = 0;
      if (k == 0) {
        td_inf_exact_solve(&ex, gt, q);
        it = 1;
      } else if (k == 3) {
        td_inf_ekfac_solve(&ek, c.damping, gt, q);
        it = 1;
      } else if ((rc = td_inf_ihvp(&ip, k == 1 ? &c.cg : &c.lissa, gt, q, &it, err))) {
        goto out;
      }
      msecs[k] += td_trainer_now() - t0;
      miters[k] = it;
      if (!have_ref) {
        memcpy(qref, q, P * sizeof *q);
        have_ref = 1;
      } else {
        double num = 0;
        for (size_t j = 0; j < P; j++) num += (q[j] - qref[j]) * (q[j] - qref[j]);
        merr[k] = fmax(merr[k], sqrt(num) / fmax(td_la_nrm2(P, qref), 1e-300));
      }
      td_inf_scores(G, n, P, q, scores_m[k]);
      if (best < 0) {
        best = k;
        memcpy(score, scores_m[k], n * sizeof *score);
      }
      if (t == 0) {
        first[k] = malloc(n * sizeof *first[k]);
        if (!first[k]) goto nomem;
        memcpy(first[k], scores_m[k], n * sizeof *score);
      }
    }
    json_t *o = json_object();
    json_object_set_new(o, "index", json_integer(c.tests[t]));
    if (s.te.y) json_object_set_new(o, "label", json_integer(s.te.y[c.tests[t]]));
    json_object_set_new(o, "test_loss", jnum(lt));
    if (!c.pb.synthetic)
      json_object_set_new(o, "pixels", pixels_hex(s.te.X + (size_t)c.tests[t] * s.te.d, s.te.d));
    json_object_set_new(o, "method", json_string(mn[best]));
    json_object_set_new(o, "helpful", top_list(&s, score, c.top_k, 0));
    json_object_set_new(o, "harmful", top_list(&s, score, c.top_k, 1));
    json_array_append_new(tests, o);
    td_sink_progress(sink, t + 1, c.n_tests + 2);
  }
  for (int k = 0; k < 4; k++) {
    if (!on[k]) continue;
    json_t *o = json_object();
    json_object_set_new(o, "secs", jnum(msecs[k]));
    json_object_set_new(o, "iters", json_integer(miters[k]));
    json_object_set_new(o, "rel_err_vs_first", jnum(merr[k]));
    json_object_set_new(meths, mn[k], o);
    char key[64];
    snprintf(key, sizeof key, "rel_err_%s", mn[k]);
    json_object_set_new(sum, key, jnum(merr[k]));
  }
  json_object_set_new(art, "methods", meths);
  meths = NULL;
  json_object_set_new(art, "reference_method",
                      json_string(c.m_exact ? "exact" : c.m_cg ? "cg" : c.m_lissa ? "lissa" : "ekfac"));
  /* self-influence */
  {
    td_inf_opts so = {.method = TD_INF_CG, .damping = c.damping, .cg_iters = c.self_iters,
                      .cg_tol = 1e-10};
    for (size_t i = 0; i < n; i++) {
      if (td_sink_should_stop(sink)) {
        rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
        goto out;
      }
      if (c.m_exact) td_inf_exact_solve(&ex, G + i * P, q);
      else if ((rc = td_inf_ihvp(&ip, &so, G + i * P, q, NULL, err))) goto out;
      self[i] = td_la_dot(P, G + i * P, q);
    }
    json_object_set_new(art, "self_influence", json_array());
    for (size_t i = 0; i < n; i++)
      json_array_append_new(json_object_get(art, "self_influence"), jnum(self[i]));
    json_object_set_new(art, "self_influence_method",
                        json_string(c.m_exact ? "exact" : "cg (capped: self_influence.cg_iters)"));
    if (c.flip > 0) {
      idx_val *iv = malloc(n * sizeof *iv);
      if (!iv) goto nomem;
      for (size_t i = 0; i < n; i++) iv[i].v = self[i], iv[i].i = (int)i;
      qsort(iv, n, sizeof *iv, cmp_desc);
      long hit = 0;
      json_t *ranks = json_array();
      for (size_t r = 0; r < n; r++)
        if (iv[r].i < c.flip) {
          json_array_append_new(ranks, json_integer((json_int_t)r));
          if ((long)r < c.flip) hit++;
        }
      free(iv);
      json_object_set_new(art, "flipped_self_influence_ranks", ranks);
      json_object_set_new(sum, "flipped_in_top", json_integer(hit));
      json_object_set_new(sum, "flipped", json_integer(c.flip));
    }
  }
  td_sink_progress(sink, c.n_tests + 1, c.n_tests + 2);
  /* leave-one-out ground truth for the first test example */
  {
    int j = c.tests[0];
    size_t nl = c.ridge ? n : (size_t)c.loo_n;
    double *meas = malloc((nl ? nl : 1) * sizeof *meas), *pred = malloc((nl ? nl : 1) * sizeof *pred);
    double *mpb = calloc(nl ? nl : 1, sizeof *mpb); /* mlp: the PBRF's change */
    int *li = malloc((nl ? nl : 1) * sizeof *li);
    if (!meas || !pred || !li || !mpb) {
      free(meas), free(pred), free(li), free(mpb);
      goto nomem;
    }
    int ref = c.m_exact ? 0 : c.m_cg ? 1 : c.m_lissa ? 2 : 3;
    if (c.ridge) {
      const double *xt = s.te.X + (size_t)j * P, *yt = s.te.Y + j;
      rc = td_inf_ridge_loo(s.Xr, s.yr, n, P, xt, yt, 1, c.damping, meas, err);
      for (size_t i = 0; i < n; i++) li[i] = (int)i;
    } else if (nl > 0) {
      idx_val *iv = malloc(n * sizeof *iv);
      double *w2 = malloc(P * sizeof *w2), *g2 = malloc(P * sizeof *g2);
      if (!iv || !w2 || !g2) {
        free(iv), free(w2), free(g2), free(meas), free(pred), free(li), free(mpb);
        goto nomem;
      }
      for (size_t i = 0; i < n; i++) iv[i].v = fabs(first[ref][i]), iv[i].i = (int)i;
      qsort(iv, n, sizeof *iv, cmp_desc);
      double l0 = test_grad(&s, j, g2);
      for (size_t r = 0; r < nl && !rc; r++) {
        li[r] = iv[r].i;
        memcpy(w2, s.w, P * sizeof *w2);
        rc = mlp_train(&s, sink, w2, c.loo_steps, li[r], 0, err);
        if (rc) break;
        double *keep = s.w;
        s.w = w2;
        meas[r] = test_grad(&s, j, g2) - l0;
        s.w = keep;
        memcpy(w2, s.w, P * sizeof *w2);
        rc = mlp_train(&s, sink, w2, c.loo_steps, li[r], 1, err);
        if (rc) break;
        s.w = w2;
        mpb[r] = test_grad(&s, j, g2) - l0;
        s.w = keep;
      }
      free(iv), free(w2), free(g2);
    }
    if (rc) {
      free(meas), free(pred), free(li), free(mpb);
      goto out;
    }
    json_t *loo = json_object(), *pj = json_object();
    json_t *ja = json_array(), *jm = json_array();
    for (size_t r = 0; r < nl; r++) {
      json_array_append_new(ja, json_integer(li[r]));
      json_array_append_new(jm, jnum(meas[r]));
    }
    json_object_set_new(loo, "test_index", json_integer(j));
    json_object_set_new(loo, "indices", ja);
    json_object_set_new(loo, "measured", jm);
    if (!c.ridge) {
      json_t *jp = json_array();
      for (size_t r = 0; r < nl; r++) json_array_append_new(jp, jnum(mpb[r]));
      json_object_set_new(loo, "measured_pbrf", jp);
    }
    json_object_set_new(loo, "how", json_string(c.ridge ? "exact (Sherman-Morrison)"
                                                         : "retrained from w* without the example"));
    for (int k = 0; k < 4 && nl >= 2; k++) {
      if (!on[k]) continue;
      json_t *pa = json_array();
      for (size_t r = 0; r < nl; r++) {
        pred[r] = -first[k][li[r]] / (double)n;
        json_array_append_new(pa, jnum(pred[r]));
      }
      json_object_set_new(pj, mn[k], pa);
      char key[64];
      snprintf(key, sizeof key, "pearson_%s", mn[k]);
      json_object_set_new(sum, key, jnum(td_inf_pearson(pred, meas, nl)));
      snprintf(key, sizeof key, "spearman_%s", mn[k]);
      json_object_set_new(sum, key, jnum(td_inf_spearman(pred, meas, nl)));
      if (!c.ridge) {
        snprintf(key, sizeof key, "pearson_%s_pbrf", mn[k]);
        json_object_set_new(sum, key, jnum(td_inf_pearson(pred, mpb, nl)));
        snprintf(key, sizeof key, "spearman_%s_pbrf", mn[k]);
        json_object_set_new(sum, key, jnum(td_inf_spearman(pred, mpb, nl)));
      }
    }
    json_object_set_new(loo, "predicted", pj);
    json_object_set_new(art, "loo", loo);
    free(meas), free(pred), free(li), free(mpb);
  }
  json_object_set_new(art, "convention",
                      json_string("score_i = -grad L_test^T (H + damping I)^-1 grad l_i "
                                  "(Koh and Liang 2017 I_up,loss; no normalization); positive = "
                                  "harmful; predicted test-loss change on removing i = "
                                  "-score_i / n_train"));
  json_object_set_new(art, "damping", jnum(c.damping));
  json_object_set_new(art, "n_train", json_integer((json_int_t)n));
  json_object_set_new(art, "n_params", json_integer((json_int_t)P));
  json_object_set_new(art, "dataset", json_string(c.pb.synthetic ? "synthetic" : "fashion-mnist"));
  json_object_set_new(sum, "n_params", json_integer((json_int_t)P));
  json_object_set_new(sum, "damping", jnum(c.damping));
  {
    char *txt = json_dumps(art, JSON_COMPACT | JSON_REAL_PRECISION(17));
    if (txt) {
      rc = td_sink_artifact(sink, "influence.json", "application/json", txt, strlen(txt));
      free(txt);
    }
  }
  td_sink_progress(sink, c.n_tests + 2, c.n_tests + 2);
  goto out;
nomem:
  rc = td_err_set(err, TD_ENOMEM, NULL, "influence: out of memory");
out:
  if (rc == 0 || rc == TD_ECANCELLED || rc == TD_EDIVERGED) {
    *summary = sum;
    sum = NULL;
  }
  json_decref(sum);
  json_decref(art);
  json_decref(meths);
  td_inf_exact_deinit(&ex);
  td_inf_ekfac_deinit(&ek);
  free(Dbuf);
  td_curv_deinit(&s.cc);
  td_curv_deinit(&s.bc);
  td_mlp_destroy(s.m);
  td_dataset_deinit(&s.tr);
  td_dataset_deinit(&s.te);
  free(s.H), free(s.w), free(s.bX), free(s.bY), free(s.by), free(s.zstar), free(s.u);
  free(G), free(gt), free(q), free(qref), free(score), free(self);
  for (int k = 0; k < 4; k++) free(scores_m[k]), free(first[k]);
  return rc;
}

const td_kind td_kind_influence = {
    .name = "influence",
    .doc = "Influence functions (Koh and Liang 2017) of training examples on test losses by "
           "exact solve, CG, LiSSA and EK-FAC: top helpful/harmful, self-influence, leave-one-out "
           "correlations",
    .chapter = "12",
    .params = inf_params,
    .n_params = sizeof inf_params / sizeof inf_params[0],
    .check = inf_check,
    .run = inf_run,
};
