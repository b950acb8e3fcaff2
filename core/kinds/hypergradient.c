/* hypergradient.c: the `hypergradient` experiment kind (chapters 11, 12): the hypergradient of
 * a validation loss with respect to per-layer L2 strengths (and the learning rates of every
 * step) through T unrolled full-batch heavy-ball steps, by each requested method of
 * bilevel/hypergrad.h, with their agreement, time and memory.
 *
 * Semantics (also in the schema docs):
 *  - inner "mlp": the trainer's problem (data.*, model.*, loss, seed: td_trainer_parse_problem
 *    and td_trainer_load; the model initialized by td_mlp_init of the seed); L_train is the
 *    mean loss over ALL n_train training examples (full batch), L_val the mean loss over the
 *    n_test held-out examples. One L2 group per linear layer (its W and b).
 *    inner "ridge": linear least squares on the synthetic linear-teacher set (data.name
 *    synthetic; no bias), L = 1/(2n) ||X w - y||^2, split into ridge.groups contiguous feature
 *    groups; w_0 = 0. The IFT is exact there, and the closed form (Cholesky) is reported.
 *  - The unroll: v_0 = 0, v_{t+1} = mu v_t + g(w_t), w_{t+1} = w_t - lr v_{t+1} (PyTorch's SGD
 *    momentum), t = 0..steps-1, g the gradient of L_train + sum_j l2_j/2 ||w_j||^2.
 *  - Methods: reverse (stored trajectory; truncate K > 0 keeps only the last K steps, biased),
 *    reversal (exact fixed-point reversal, needs momentum > 0), forward (forward mode, one HVP
 *    per group per step), ift (implicit function theorem at w_T by CG or Neumann; for ridge
 *    also at the exact minimizer). The learning-rate hypergradient dL_val/dlr_t is logged as
 *    the metric d_lr (step t) from the first reverse-type method run.
 *  - hyperparameter "data_weights" (the per-example weights s_i of the training examples,
 *    L_train = (1/n) sum_i s_i l_i, derivative at s = 1, the normalization 1/n fixed) adds
 *    dL_val/ds (n_train) by reverse, reversal and the IFT (forward mode would need one
 *    tangent per example: skipped, and said so in the artifact's "skipped"); the L2 results
 *    are still reported. Artifact: d_weights {method: [n]}, d_weights_reference; metric
 *    d_weight (step = example index) of the reference; summary d_weights_rel_diff
 *    {method: relative 2-norm difference}, d_weights_max_rel_diff (over the unrolled methods;
 *    for ridge the closed form at the exact minimizer is the reference, and the IFT counts),
 *    d_weights_top_harmful / d_weights_top_helpful (5 indices: the largest positive
 *    derivatives, up-weighting raises L_val / the most negative). At s = 1 the IFT's d s_i is
 *    Koh and Liang's influence of up-weighting example i on L_val, divided by n.
 *  - mlp: artifact params_init.safetensors holds w_0 (layers.{j}.weight / bias, F64) for
 *    outside checks (tests/hypergrad_torch_check.py).
 *  - Reports: metric val_loss (step 0: at w_0, step T: at w_T); artifact hypergradient.json
 *    {methods: {name: {d_lambda, secs, bytes, n_grad, n_hvp, ...}}, reference, max_rel_diff};
 *    summary d_lambda_<method> (the vector), secs_<method>, bytes_<method>, and
 *    max_rel_diff (largest relative 2-norm difference of a method's d_lambda from the
 *    reference: the full reverse (else the first method run), or the closed form for ridge;
 *    over the unrolled methods, and the IFT too for ridge), ift_rel_diff (the IFT's, which
 *    for a network only meets the others at a minimizer: see ift.stationarity). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bilevel/hgmlp.h"
#include "bilevel/hypergrad.h"
#include "kinds/registry.h"
#include "nn/checkpoint.h"
#include "train/trainer.h"

static const td_param hg_params[] = {
    TD_TRAINER_PROBLEM_PARAMS("1000", "1000", "[64]", "\"relu\"", "\"cross_entropy\""),
    {"inner", TD_PT_STR, "\"mlp\"", 0, 0, "mlp|ridge", 0,
     "inner problem: mlp (the model on data.*) or ridge (linear least squares on the synthetic "
     "set, no bias; the IFT is exact and a closed form is reported)"},
    {"ridge.groups", TD_PT_INT, "2", 1, 64, NULL, 0,
     "ridge: number of contiguous feature groups, each with its own L2 strength"},
    {"hyperparameter", TD_PT_STR, "\"l2\"", 0, 0, "l2|data_weights", 0,
     "outer variables: l2 (per-group L2 strengths, and every step's lr) or data_weights (also "
     "the per-example weights s_i of the training loss (1/n) sum s_i l_i, at s = 1: reverse, "
     "reversal and IFT; at s = 1 the IFT's is the influence of up-weighting example i / n)"},
    {"steps", TD_PT_INT, "100", 1, 100000, NULL, 0, "unrolled heavy-ball steps T (full batch)"},
    {"lr", TD_PT_NUM, "0.1", 1e-12, 1e3, NULL, 0, "inner learning rate (every step)"},
    {"momentum", TD_PT_NUM, "0.9", 0, 0.999, NULL, 0,
     "heavy-ball momentum mu (PyTorch form); exact reversal needs mu > 0"},
    {"l2", TD_PT_NUM_LIST, "[0.001]", 0, 1e3, NULL, 64,
     "L2 strengths, one per group (mlp: per linear layer), or one value for all"},
    {"methods.reverse", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "reverse mode through the stored trajectory (memory O(T P))"},
    {"methods.reversal", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "exact reversal (Maclaurin et al. 2015): memory O(P) plus the bits momentum loses"},
    {"methods.forward", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "forward mode (Franceschi et al. 2017): one HVP per group per step, memory 2 P per group"},
    {"methods.ift", TD_PT_BOOL, "true", 0, 0, NULL, 0,
     "implicit function theorem at w_T (Lorraine et al. 2020); exact only at a minimizer"},
    {"truncate", TD_PT_INT, "0", 0, 100000, NULL, 0,
     "reverse: back-propagate through the last K steps only (0: all; Shaban et al. 2019)"},
    {"ift.solver", TD_PT_STR, "\"cg\"", 0, 0, "cg|neumann", 0,
     "inverse-HVP solver: conjugate gradient, or the Neumann series (converges iff "
     "alpha lambda_max < 2 and H + Lambda is positive definite; both reported)"},
    {"ift.max_iters", TD_PT_INT, "200", 1, 100000, NULL, 0, "CG iterations or Neumann terms"},
    {"ift.tol", TD_PT_NUM, "1e-10", 0, 1, NULL, 0, "CG relative residual target"},
    {"ift.alpha", TD_PT_NUM, "0", 0, 1e6, NULL, 0,
     "Neumann step (0: 1 / lambda_max by the power method)"},
};

typedef struct hg_cfg {
  td_problem_cfg pb;
  int ridge, groups, T, truncate;
  double lr, mu;
  int m_rev, m_rvs, m_fwd, m_ift;
  int wts; /* hyperparameter data_weights */
  td_hg_ift_opts ift;
} hg_cfg;

static int parse(const json_t *p, hg_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  int rc = td_trainer_parse_problem(p, 1000, 1000, 0, &c->pb, err);
  if (rc) return rc;
  c->ridge = strcmp(td_param_str(p, "inner", "mlp"), "ridge") == 0;
  if (c->ridge && !c->pb.synthetic)
    return td_err_set(err, TD_EINVAL, "params.data.name",
                      "inner ridge runs on the synthetic linear-teacher set");
  c->T = (int)td_param_int(p, "steps", 100);
  c->truncate = (int)td_param_int(p, "truncate", 0);
  c->lr = td_param_num(p, "lr", 0.1);
  c->mu = td_param_num(p, "momentum", 0.9);
  c->m_rev = td_param_bool(p, "methods.reverse", 1);
  c->m_rvs = td_param_bool(p, "methods.reversal", 1);
  c->m_fwd = td_param_bool(p, "methods.forward", 1);
  c->m_ift = td_param_bool(p, "methods.ift", 1);
  c->wts = strcmp(td_param_str(p, "hyperparameter", "l2"), "data_weights") == 0;
  if (!(c->m_rev || c->m_rvs || c->m_fwd || c->m_ift))
    return td_err_set(err, TD_EINVAL, "params.methods", "choose at least one method");
  if (c->m_rvs && !(c->mu > 0))
    return td_err_set(err, TD_EINVAL, "params.momentum",
                      "exact reversal needs momentum > 0 (plain SGD destroys information "
                      "that cannot be stored); turn methods.reversal off");
  c->groups = c->ridge ? (int)td_param_int(p, "ridge.groups", 2) : c->pb.mlp.n_hidden + 1;
  if (c->ridge && c->groups > (int)c->pb.synth.d)
    return td_err_set(err, TD_EINVAL, "params.ridge.groups",
                      "more groups (%d) than features (%zu)", c->groups, c->pb.synth.d);
  const json_t *l2 = td_param_get(p, "l2");
  size_t nl = json_array_size(l2);
  if (nl != 1 && (int)nl != c->groups)
    return td_err_set(err, TD_EINVAL, "params.l2",
                      "give one L2 strength or one per group (%d), not %zu", c->groups, nl);
  c->ift.solver =
      strcmp(td_param_str(p, "ift.solver", "cg"), "neumann") == 0 ? TD_HG_IFT_NEUMANN
                                                                  : TD_HG_IFT_CG;
  c->ift.max_iters = (int)td_param_int(p, "ift.max_iters", 200);
  c->ift.tol = td_param_num(p, "ift.tol", 1e-10);
  c->ift.alpha = td_param_num(p, "ift.alpha", 0);
  c->ift.power_iters = 200;
  return 0;
}

static int hg_check(const json_t *p, td_estimate *est, td_err *err) {
  int prc = td_trainer_require_standard(p, "hypergradient", err);
  if (prc) return prc;
  hg_cfg c;
  int rc = parse(p, &c, err);
  if (rc) return rc;
  double P, cb = 0, cbv = 0, ws = 0;
  if (c.ridge) {
    P = (double)c.pb.synth.d;
    cb = 8.0 * P * P;
  } else {
    if ((rc = td_mlp_estimate(&c.pb.mlp, 1, &P, &ws, err))) return rc;
    if ((rc = td_curv_estimate(&c.pb.mlp, (int)c.pb.n_train, &cb, err))) return rc;
    if ((rc = td_curv_estimate(&c.pb.mlp, (int)c.pb.n_test, &cbv, err))) return rc;
  }
  int K = (c.truncate > 0 && c.truncate < c.T) ? c.truncate : c.T;
  double meth = 0;
  if (c.m_rev) meth = fmax(meth, 8.0 * P * (5 + 2.0 * K));
  if (c.m_rvs) meth = fmax(meth, 8.0 * P * 9 + 4.0 * P * (c.T * 0.2 / 32 + 3));
  if (c.m_fwd) meth = fmax(meth, 8.0 * P * (5 + 2.0 * c.groups));
  if (c.m_ift) meth = fmax(meth, 8.0 * P * (8 + c.ift.max_iters));
  est->bytes = meth + cb + cbv + 16.0 * P + td_trainer_data_bytes(&c.pb) +
               (c.wts ? 8.0 * 6 * c.pb.n_train : 0);
  est->n_params = P;
  return 0;
}



/* The host-facing wrapper: counts steps for progress and checks cancellation. */
typedef struct hg_host {
  td_hg_problem inner;
  td_sink *sink;
  long done, total;
} hg_host;

static int hg_stop_point(void *ctx, const double *w, double *loss, double *g, td_err *err) {
  hg_host *h = ctx;
  if (td_sink_should_stop(h->sink)) return td_err_set(err, TD_ECANCELLED, NULL, "cancelled");
  if (++h->done % 10 == 0) td_sink_progress(h->sink, h->done, h->total);
  return h->inner.point(h->inner.ctx, w, loss, g, err);
}
static void hg_host_hvp(void *ctx, const double *v, double *hv) {
  hg_host *h = ctx;
  h->inner.hvp(h->inner.ctx, v, hv);
}
static int hg_host_val(void *ctx, const double *w, double *loss, double *g, td_err *err) {
  hg_host *h = ctx;
  return h->inner.val(h->inner.ctx, w, loss, g, err);
}
static void hg_host_ex_dot(void *ctx, const double *u, double *out) {
  hg_host *h = ctx;
  h->inner.ex_dot(h->inner.ctx, u, out);
}

/* indices of the k largest (sign +1) or smallest (sign -1) entries of x (n), k <= n */
static json_t *top_json(const double *x, size_t n, int sign, size_t k) {
  json_t *a = json_array();
  char *used = calloc(n, 1);
  for (size_t r = 0; used && r < k && r < n; r++) {
    size_t best = n;
    for (size_t i = 0; i < n; i++)
      if (!used[i] && isfinite(x[i]) && (best == n || sign * x[i] > sign * x[best])) best = i;
    if (best == n) break;
    used[best] = 1;
    json_array_append_new(a, json_integer((json_int_t)best));
  }
  free(used);
  return a;
}

static json_t *vec_json(const double *x, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) json_array_append_new(a, isfinite(x[i]) ? json_real(x[i]) : json_null());
  return a;
}

static json_t *res_json(const td_hg_result *r, int G) {
  json_t *o = json_object();
  json_object_set_new(o, "d_lambda", vec_json(r->d_lambda, G));
  json_object_set_new(o, "val_loss", json_real(r->val_loss));
  json_object_set_new(o, "secs", json_real(r->secs));
  json_object_set_new(o, "bytes", json_real(r->bytes));
  json_object_set_new(o, "n_grad", json_integer(r->n_grad));
  json_object_set_new(o, "n_hvp", json_integer(r->n_hvp));
  return o;
}

static double rel_diff(const double *a, const double *b, int n) {
  double num = 0, den = 0;
  for (int i = 0; i < n; i++) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int hg_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  hg_cfg c;
  int rc = parse(p, &c, err);
  if (rc) return rc;
  int G = c.groups, T = c.T;
  td_dataset tr, te;
  memset(&tr, 0, sizeof tr);
  memset(&te, 0, sizeof te);
  td_mlp *m = NULL;
  td_hgmlp hm;
  td_hg_ridge rq;
  memset(&hm, 0, sizeof hm);
  memset(&rq, 0, sizeof rq);
  size_t *off = calloc((size_t)G + 1, sizeof *off);
  double *lam = calloc((size_t)G, sizeof *lam), *lrs = malloc((size_t)T * sizeof *lrs);
  double *dlr = calloc((size_t)T, sizeof *dlr), *dref = calloc((size_t)G, sizeof *dref);
  double *dbuf = calloc((size_t)G * 6, sizeof *dbuf);
  size_t NE = c.wts ? c.pb.n_train : 0; /* data weights: 4 vectors (reverse, reversal, ift, cf) */
  double *wbuf = NE ? calloc(4 * NE, sizeof *wbuf) : NULL;
  double *w0 = NULL, *wT = NULL, *yv = NULL;
  json_t *art = json_object(), *meths = json_object(), *s = json_object();
  hg_host host;
  memset(&host, 0, sizeof host);
  if (!off || !lam || !lrs || !dlr || !dref || !dbuf || !art || !meths || !s || (NE && !wbuf)) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
    goto out;
  }
  const json_t *l2 = td_param_get(p, "l2");
  for (int j = 0; j < G; j++)
    lam[j] = json_number_value(json_array_get(l2, json_array_size(l2) == 1 ? 0 : (size_t)j));
  for (int t = 0; t < T; t++) lrs[t] = c.lr;
  if ((rc = td_trainer_load(&c.pb, &tr, &te, err))) goto out;
  size_t P;
  if (c.ridge) {
    size_t d = c.pb.synth.d;
    P = d;
    if ((rc = td_hg_ridge_init(&rq, tr.X, tr.Y, c.pb.n_train, te.X, te.Y, c.pb.n_test, d,
                               err)))
      goto out;
    for (int j = 0; j <= G; j++) off[j] = (size_t)j * d / (size_t)G;
    host.inner = td_hg_ridge_problem(&rq, G, off);
    w0 = calloc(d, sizeof *w0);
  } else {
    if ((rc = td_mlp_create(&c.pb.mlp, &m, err))) goto out;
    td_mlp_init(m, c.pb.seed);
    if ((rc = td_hgmlp_init(&hm, m, &tr, c.pb.n_train, &te, c.pb.n_test, c.pb.loss, err)))
      goto out;
    host.inner = td_hgmlp_problem(&hm);
    P = m->n_params;
    w0 = malloc(P * sizeof *w0);
    if (w0) memcpy(w0, m->params, P * sizeof *w0);
    /* the initial parameters, for an outside check (tests/hypergrad_torch_check.py) */
    json_t *meta = json_object();
    json_object_set_new(meta, "kind", json_string("hypergradient"));
    json_object_set_new(meta, "activation",
                        json_string(c.pb.mlp.act == TD_ACT_TANH     ? "tanh"
                                    : c.pb.mlp.act == TD_ACT_LINEAR ? "linear"
                                                                    : "relu"));
    unsigned char *bytes = NULL;
    size_t len = 0;
    rc = td_checkpoint_save(m, m->params, meta, &bytes, &len, err);
    json_decref(meta);
    if (!rc)
      rc = td_sink_artifact(sink, "params_init.safetensors", "application/octet-stream", bytes,
                            len);
    free(bytes);
    if (rc) goto out;
  }
  wT = malloc(P * sizeof *wT);
  yv = malloc(P * sizeof *yv); /* gradient scratch */
  if (!w0 || !wT || !yv) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
    goto out;
  }
  host.sink = sink;
  host.total = (long)T * ((c.m_rev ? 2 : 0) + (c.m_rvs ? 2 : 0) + (c.m_fwd ? 1 : 0) + 1) + 2;
  td_hg_problem hp = {.n = P, .n_groups = G, .group_off = c.ridge ? off : hm.group_off,
                      .ctx = &host, .point = hg_stop_point, .hvp = hg_host_hvp,
                      .val = hg_host_val, .n_ex = host.inner.n_ex,
                      .ex_dot = host.inner.ex_dot ? hg_host_ex_dot : NULL};
  td_hg_unroll u = {.T = T, .lrs = lrs, .mu = c.mu, .lambda = lam, .w0 = w0};
  double vl0;
  if ((rc = host.inner.val(host.inner.ctx, w0, &vl0, yv, err))) goto out;
  td_sink_metric(sink, "val_loss", 0, vl0);
  /* the end point of the unroll (the IFT's point) */
  if ((rc = td_hg_forward(&hp, &u, wT, NULL, NULL, err))) goto out;
  double vlT;
  if ((rc = host.inner.val(host.inner.ctx, wT, &vlT, yv, err))) goto out;
  td_sink_metric(sink, "val_loss", T, vlT);
  const char *ref_name = NULL;
  int have_dlr = 0;
  td_hg_result r;
  if (c.m_rev) {
    memset(&r, 0, sizeof r);
    r.d_lambda = dbuf;
    r.d_lr = dlr;
    r.d_wts = NE ? wbuf : NULL;
    if ((rc = td_hg_reverse(&hp, &u, c.truncate, &r, err))) goto out;
    json_t *o = res_json(&r, G);
    json_object_set_new(o, "truncate", json_integer(c.truncate));
    json_object_set_new(meths, "reverse", o);
    have_dlr = 1;
    if (c.truncate == 0 || c.truncate >= T) {
      memcpy(dref, dbuf, (size_t)G * sizeof *dref);
      ref_name = "reverse";
    }
  }
  if (c.m_rvs) {
    memset(&r, 0, sizeof r);
    r.d_lambda = dbuf + G;
    r.d_lr = have_dlr ? NULL : dlr;
    r.d_wts = NE ? wbuf + NE : NULL;
    if ((rc = td_hg_reversal(&hp, &u, &r, NULL, NULL, err))) goto out;
    json_t *o = res_json(&r, G);
    json_object_set_new(o, "mismatch", json_integer(r.mismatch));
    json_object_set_new(o, "store_bits", json_real(r.store_bits));
    json_object_set_new(o, "mu_rational", json_sprintf("%u/%u", r.mu_num, r.mu_den));
    json_object_set_new(meths, "reversal", o);
    json_object_set_new(s, "reversal_mismatch", json_integer(r.mismatch));
    have_dlr = 1;
    if (!ref_name) {
      memcpy(dref, dbuf + G, (size_t)G * sizeof *dref);
      ref_name = "reversal";
    }
  }
  if (c.m_fwd) {
    memset(&r, 0, sizeof r);
    r.d_lambda = dbuf + 2 * G;
    if ((rc = td_hg_forward_mode(&hp, &u, &r, err))) goto out;
    json_t *o = res_json(&r, G);
    json_object_set_new(o, "hvp_per_step_per_hyperparameter", json_integer(1));
    json_object_set_new(meths, "forward", o);
    if (!ref_name) {
      memcpy(dref, dbuf + 2 * G, (size_t)G * sizeof *dref);
      ref_name = "forward";
    }
  }
  if (c.m_ift) {
    memset(&r, 0, sizeof r);
    r.d_lambda = dbuf + 3 * G;
    r.d_wts = NE ? wbuf + 2 * NE : NULL;
    if ((rc = td_hg_ift(&hp, lam, wT, &c.ift, &r, err))) goto out;
    json_t *o = res_json(&r, G);
    json_object_set_new(o, "solver", json_string(c.ift.solver == TD_HG_IFT_CG ? "cg" : "neumann"));
    json_object_set_new(o, "stationarity", json_real(r.stationarity));
    json_object_set_new(o, "solve_resid", json_real(r.solve_resid));
    json_object_set_new(o, "solve_iters", json_integer(r.solve_iters));
    if (c.ift.solver == TD_HG_IFT_NEUMANN) {
      json_object_set_new(o, "lambda_max", json_real(r.lambda_max));
      json_object_set_new(o, "alpha", json_real(r.alpha));
      json_object_set_new(o, "alpha_lambda_max", json_real(r.alpha * r.lambda_max));
      json_object_set_new(o, "neumann_condition_met",
                          json_boolean(r.alpha * r.lambda_max < 2 && r.lambda_max > 0));
    }
    json_object_set_new(meths, "ift", o);
    if (!ref_name) {
      memcpy(dref, dbuf + 3 * G, (size_t)G * sizeof *dref);
      ref_name = "ift";
    }
  }
  if (c.ridge) { /* the closed form at the exact minimizer is the reference */
    double *ws = malloc(P * sizeof *ws);
    if (!ws) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
      goto out;
    }
    rc = td_hg_ridge_solve(&rq, G, off, lam, ws, dbuf + 4 * G, err);
    double vls = NAN;
    if (!rc) rc = host.inner.val(host.inner.ctx, ws, &vls, yv, err);
    free(ws);
    if (rc) goto out;
    json_t *o = json_object();
    json_object_set_new(o, "d_lambda", vec_json(dbuf + 4 * G, G));
    json_object_set_new(o, "val_loss", json_real(vls));
    json_object_set_new(art, "closed_form", o);
    json_object_set_new(s, "d_lambda_closed_form", vec_json(dbuf + 4 * G, G));
  }
  if (have_dlr)
    for (int t = 0; t < T; t++) td_sink_metric(sink, "d_lr", t, dlr[t]);
  if (NE) { /* data weights */
    const char *wn[3] = {"reverse", "reversal", "ift"};
    const int won[3] = {c.m_rev && (c.truncate == 0 || c.truncate >= T), c.m_rvs, c.m_ift};
    const double *wref = NULL;
    const char *wref_name = NULL;
    if (c.ridge) {
      if ((rc = td_hg_ridge_dweights(&rq, G, off, lam, wbuf + 3 * NE, err))) goto out;
      wref = wbuf + 3 * NE;
      wref_name = "closed_form";
    }
    for (int k = 0; k < 3 && !wref; k++)
      if (won[k]) wref = wbuf + (size_t)k * NE, wref_name = wn[k];
    json_t *dw = json_object(), *wd = json_object();
    double wworst = 0;
    for (int k = 0; k < 3; k++) {
      if (!(k == 0 ? c.m_rev : won[k])) continue;
      json_object_set_new(dw, wn[k], vec_json(wbuf + (size_t)k * NE, (int)NE));
      if (!wref || !won[k]) continue;
      double rd = rel_diff(wbuf + (size_t)k * NE, wref, (int)NE);
      json_object_set_new(wd, wn[k], json_real(rd));
      if (k != 2 || c.ridge) wworst = fmax(wworst, rd);
    }
    if (c.ridge) json_object_set_new(dw, "closed_form", vec_json(wbuf + 3 * NE, (int)NE));
    json_object_set_new(art, "d_weights", dw);
    json_object_set_new(s, "d_weights_rel_diff", wd);
    if (wref) {
      json_object_set_new(art, "d_weights_reference", json_string(wref_name));
      json_object_set_new(s, "d_weights_reference", json_string(wref_name));
      json_object_set_new(s, "d_weights_max_rel_diff", json_real(wworst));
      json_object_set_new(s, "d_weights_top_harmful", top_json(wref, NE, 1, 5));
      json_object_set_new(s, "d_weights_top_helpful", top_json(wref, NE, -1, 5));
      for (size_t i = 0; i < NE; i++) td_sink_metric(sink, "d_weight", (long)i, wref[i]);
    }
    if (c.m_fwd)
      json_object_set_new(art, "skipped",
                          json_pack("{s:s}", "forward",
                                    "data weights: forward mode needs one tangent per example"));
  }
  /* agreement */
  const char *names[4] = {"reverse", "reversal", "forward", "ift"};
  const int on[4] = {c.m_rev, c.m_rvs, c.m_fwd, c.m_ift};
  const double *refv = c.ridge ? dbuf + 4 * G : dref;
  double worst = 0;
  json_t *agree = json_object();
  for (int k = 0; k < 4; k++) {
    if (!on[k]) continue;
    double rd = rel_diff(dbuf + k * G, refv, G);
    json_object_set_new(agree, names[k], json_real(rd));
    /* the IFT meets the unrolled methods only at a minimizer: counted for ridge only */
    if (!(k == 0 && c.truncate > 0 && c.truncate < T) && (k != 3 || c.ridge))
      worst = fmax(worst, rd);
    if (k == 3) json_object_set_new(s, "ift_rel_diff", json_real(rd));
    char key[64];
    snprintf(key, sizeof key, "d_lambda_%s", names[k]);
    json_object_set_new(s, key, vec_json(dbuf + k * G, G));
    json_t *mo = json_object_get(meths, names[k]);
    snprintf(key, sizeof key, "secs_%s", names[k]);
    json_object_set(s, key, json_object_get(mo, "secs"));
    snprintf(key, sizeof key, "bytes_%s", names[k]);
    json_object_set(s, key, json_object_get(mo, "bytes"));
  }
  json_object_set_new(art, "methods", meths);
  meths = NULL;
  json_object_set_new(art, "rel_diff_to_reference", agree);
  json_object_set_new(art, "reference", json_string(c.ridge ? "closed_form" : ref_name));
  json_object_set_new(art, "l2", vec_json(lam, G));
  json_object_set_new(art, "n_params", json_integer((json_int_t)P));
  json_object_set_new(art, "steps", json_integer(T));
  json_object_set_new(s, "reference", json_string(c.ridge ? "closed_form" : ref_name));
  json_object_set_new(s, "max_rel_diff", json_real(worst));
  json_object_set_new(s, "val_loss_init", json_real(vl0));
  json_object_set_new(s, "val_loss_final", json_real(vlT));
  json_object_set_new(s, "n_params", json_integer((json_int_t)P));
  json_object_set_new(s, "groups", json_integer(G));
  char *txt = json_dumps(art, JSON_COMPACT | JSON_REAL_PRECISION(17));
  if (txt) {
    rc = td_sink_artifact(sink, "hypergradient.json", "application/json", txt, strlen(txt));
    free(txt);
  }
  td_sink_progress(sink, host.total, host.total);
out:
  if (rc == 0 || rc == TD_ECANCELLED) {
    *summary = s;
    s = NULL;
  }
  json_decref(s);
  json_decref(art);
  json_decref(meths);
  td_hgmlp_deinit(&hm);
  td_hg_ridge_deinit(&rq);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
  free(off), free(lam), free(lrs), free(dlr), free(dref), free(dbuf), free(w0), free(wT);
  free(wbuf);
  free(yv);
  return rc;
}

const td_kind td_kind_hypergradient = {
    .name = "hypergradient",
    .doc = "Hypergradient of a validation loss w.r.t. per-layer L2 strengths (and every step's "
           "lr) through unrolled heavy ball: stored-trajectory reverse, exact reversal, "
           "forward mode, implicit function theorem; agreement, time, memory",
    .chapter = "11,12",
    .params = hg_params,
    .n_params = sizeof hg_params / sizeof hg_params[0],
    .check = hg_check,
    .run = hg_run,
};
