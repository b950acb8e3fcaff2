/* sopt.c: the second-order step shared by newton, hessian_free, natural_gradient and kfac
 * (see sopt.h for the rule). */
#include "optim/sopt.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "optim/hf.h"
#include "optim/kfac.h"
#include "base/la.h"

struct td_sopt {
  td_sopt_hp hp;
  const td_mlp *m;
  int cap;
  size_t n;
  double lambda;
  td_newton *nt;
  td_hf *hf;
  td_kfac *kf;
  double *g, *d, *v, *s, *Cs, *Cs2, *trial;
  double gamma;  /* kfac: the factored damping strength */
  int have_prev; /* v holds a previous step */
};

static const char *const sopt_names[] = {"newton", "hessian_free", "natural_gradient", "kfac"};

int td_sopt_kind_parse(const char *name, td_sopt_kind *out) {
  for (int i = 0; name && i < 4; i++)
    if (strcmp(name, sopt_names[i]) == 0) {
      *out = (td_sopt_kind)i;
      return 0;
    }
  return TD_EINVAL;
}

int td_sopt_hp_parse(const json_t *p, const char *name, uint64_t seed, td_sopt_hp *hp,
                     td_err *err) {
  memset(hp, 0, sizeof *hp);
  if (td_sopt_kind_parse(name, &hp->kind))
    return td_err_set(err, TD_EINVAL, "params.optimizer.name",
                      "'%s' is not a second-order optimizer (%s)", name ? name : "",
                      TD_SOPT_NAMES);
  static const double def_damping[] = {0.1, 1.0, 1e-3, 1e-3};
  hp->damping = td_param_num(p, "optimizer.damping", def_damping[hp->kind]);
  hp->adapt_damping = td_param_bool(p, "optimizer.adapt_damping", hp->kind != TD_SOPT_NGD);
  hp->kfac_rescale = td_param_bool(p, "optimizer.kfac_rescale", 1);
  hp->momentum = td_param_num(p, "optimizer.momentum", 0.0);
  hp->weight_decay = td_param_num(p, "optimizer.weight_decay", 0.0);
  hp->cg_max_iters = (int)td_param_int(p, "optimizer.cg_max_iters", 50);
  hp->cg_tol = td_param_num(p, "optimizer.cg_tol", 1e-6);
  hp->cg_martens_stop = td_param_bool(p, "optimizer.cg_martens_stop", 1);
  hp->cg_warm_decay = td_param_num(p, "optimizer.cg_warm_decay", 0.95);
  hp->curv_batch = (int)td_param_int(p, "optimizer.curv_batch", 0);
  hp->fisher_empirical = strcmp(td_param_str(p, "optimizer.fisher", "true"), "empirical") == 0;
  hp->kfac_decay = td_param_num(p, "optimizer.kfac_decay", 0.95);
  hp->kfac_inverse_every = (int)td_param_int(p, "optimizer.kfac_inverse_every", 10);
  hp->kfac_exact_fisher = td_param_bool(p, "optimizer.kfac_exact_fisher", 0);
  hp->newton_max_params = td_param_int(p, "optimizer.newton_max_params",
                                       TD_NEWTON_DEFAULT_MAX_PARAMS);
  hp->newton_curv = strcmp(td_param_str(p, "optimizer.newton_curvature", "hessian"),
                           "gauss_newton") == 0
                        ? TD_NEWTON_GGN
                        : TD_NEWTON_HESSIAN;
  hp->seed = seed;
  if (!(hp->momentum >= 0 && hp->momentum < 1))
    return td_err_set(err, TD_EINVAL, "params.optimizer.momentum",
                      "momentum must be in [0, 1) for %s", name);
  if (hp->kind == TD_SOPT_KFAC && !(hp->damping + hp->weight_decay > 0))
    return td_err_set(err, TD_EINVAL, "params.optimizer.damping",
                      "kfac needs optimizer.damping > 0 (or weight_decay > 0): the factored "
                      "damping uses gamma = sqrt(damping + weight_decay)");
  return 0;
}

int td_sopt_check(const td_sopt_hp *hp, const td_mlp_cfg *cfg, int cap, double *bytes,
                  td_err *err) {
  double np = 0, ws = 0, cb = 0, ob = 0;
  int rc = td_mlp_estimate(cfg, cap, &np, &ws, err);
  if (!rc) rc = td_curv_estimate(cfg, cap, &cb, err);
  if (rc) return rc;
  switch (hp->kind) {
  case TD_SOPT_NEWTON:
    if (np > (double)hp->newton_max_params)
      return td_err_set(err, TD_EINVAL, "params.optimizer.newton_max_params",
                        "newton forms the dense n x n curvature matrix and the model has %.0f "
                        "parameters, above optimizer.newton_max_params = %ld; use a smaller "
                        "model.hidden or raise the cap (at most %d)",
                        np, hp->newton_max_params, TD_NEWTON_MAX_PARAMS_CEIL);
    ob = td_newton_bytes(np);
    break;
  case TD_SOPT_HF:
  case TD_SOPT_NGD: ob = td_hf_bytes(np, hp->cg_max_iters); break;
  case TD_SOPT_KFAC:
    if ((rc = td_kfac_bytes(cfg, cap, &ob, err))) return rc;
    break;
  }
  *bytes = cb + ob + 8.0 * 7.0 * np; /* g, d, v, s, Cs, Cs2, trial */
  return 0;
}

void td_sopt_destroy(td_sopt *o) {
  if (!o) return;
  td_newton_destroy(o->nt);
  td_hf_destroy(o->hf);
  td_kfac_destroy(o->kf);
  free(o->g);
  free(o->d);
  free(o->v);
  free(o->s);
  free(o->Cs);
  free(o->Cs2);
  free(o->trial);
  free(o);
}

int td_sopt_create(const td_sopt_hp *hp, const td_mlp *m, int cap, td_sopt **out, td_err *err) {
  *out = NULL;
  if (!hp || !m || cap < 1) return td_err_set(err, TD_EINVAL, NULL, "sopt: bad arguments");
  double bytes = 0;
  int rc = td_sopt_check(hp, &m->cfg, cap, &bytes, err);
  if (rc) return rc;
  td_sopt *o = calloc(1, sizeof *o);
  if (!o) return td_err_set(err, TD_ENOMEM, NULL, "sopt: out of memory");
  o->hp = *hp;
  o->m = m;
  o->cap = cap;
  o->n = m->n_params;
  o->lambda = hp->damping;
  switch (hp->kind) {
  case TD_SOPT_NEWTON:
    rc = td_newton_create(o->n, (size_t)hp->newton_max_params, &o->nt, err);
    break;
  case TD_SOPT_HF:
  case TD_SOPT_NGD: {
    td_hf_hp h = {
        .curv = hp->kind == TD_SOPT_HF ? TD_HF_GGN
                : hp->fisher_empirical ? TD_HF_FISHER_EMP
                                       : TD_HF_FISHER_TRUE,
        .damping = hp->damping,
        .cg = {.max_iters = hp->cg_max_iters, .tol = hp->cg_tol,
               .martens_stop = hp->cg_martens_stop, .martens_eps = 5e-4},
        .warm_decay = hp->cg_warm_decay};
    rc = td_hf_create(&h, o->n, &o->hf, err);
    break;
  }
  case TD_SOPT_KFAC: {
    td_kfac_hp h = {.decay = hp->kfac_decay, .inverse_every = hp->kfac_inverse_every,
                    .fisher = hp->fisher_empirical    ? TD_KFAC_FISHER_EMPIRICAL
                              : hp->kfac_exact_fisher ? TD_KFAC_FISHER_EXACT
                                                      : TD_KFAC_FISHER_SAMPLED,
                    .seed = hp->seed};
    rc = td_kfac_create(m, cap, &h, &o->kf, err);
    break;
  }
  }
  if (rc) {
    td_sopt_destroy(o);
    return rc;
  }
  o->g = malloc(o->n * sizeof *o->g);
  o->d = malloc(o->n * sizeof *o->d);
  o->v = calloc(o->n, sizeof *o->v);
  o->s = malloc(o->n * sizeof *o->s);
  o->Cs = malloc(o->n * sizeof *o->Cs);
  o->Cs2 = malloc(o->n * sizeof *o->Cs2);
  o->trial = malloc(o->n * sizeof *o->trial);
  if (!o->g || !o->d || !o->v || !o->s || !o->Cs || !o->Cs2 || !o->trial) {
    td_sopt_destroy(o);
    return td_err_set(err, TD_ENOMEM, NULL, "sopt: out of memory for %zu parameters", o->n);
  }
  *out = o;
  return 0;
}

double td_sopt_damping(const td_sopt *o) { return o->lambda; }

/* f(theta + alpha s) with the L2 term, on c's current batch; +Inf when not finite. */
static double trial_loss(td_sopt *o, td_curv_ctx *c, const double *theta, double alpha) {
  const size_t n = o->n;
  for (size_t i = 0; i < n; i++) o->trial[i] = theta[i] + alpha * o->s[i];
  if (td_curv_set_point(c, o->trial, NULL)) return INFINITY;
  double f = c->loss_value;
  if (o->hp.weight_decay > 0) {
    double t = td_la_nrm2(n, o->trial);
    f += 0.5 * o->hp.weight_decay * t * t;
  }
  return isfinite(f) ? f : INFINITY;
}

/* out = C v with the curvature of the quadratic model (see sopt.h), at c's point. */
static void model_curv(td_sopt *o, td_curv_ctx *c, const double *v, double *out) {
  switch (o->hp.kind) {
  case TD_SOPT_NEWTON:
    if (o->hp.newton_curv == TD_NEWTON_GGN) td_curv_ggn_vp(c, v, out);
    else td_curv_hvp(c, v, out);
    break;
  case TD_SOPT_HF:
  case TD_SOPT_NGD: td_hf_curv_vp(o->hf, c, v, out); break;
  case TD_SOPT_KFAC: td_curv_ggn_vp(c, v, out); break;
  }
}

/* K-FAC's re-scaling and momentum (Martens and Grosse 2015, sec. 7): (alpha, mu) minimizing
 * the damped quadratic model M(x) = 1/2 x^T (F + (lambda + eta) I) x + g^T x over
 * x = alpha D + mu v, with F the EXACT Fisher (the GGN) of the batch and v the previous step
 * (mu = 0 when use_mu is 0). Fv (n) = F v, computed by the caller once per step; FD (n,
 * OUT) = F D. Returns the model value M at the optimum (0 when D is degenerate). */
static double kfac_rescale(td_sopt *o, td_curv_ctx *c, const double *D, int use_mu,
                           const double *Fv, double *FD, double *alpha, double *mu) {
  const size_t n = o->n;
  const double lam = o->lambda + o->hp.weight_decay;
  const double *v = o->v;
  td_curv_ggn_vp(c, D, FD);
  const double a11 = td_la_dot(n, D, FD) + lam * td_la_dot(n, D, D);
  const double b1 = td_la_dot(n, o->g, D);
  if (!isfinite(a11) || !isfinite(b1)) { /* D^T F D overflowed: alpha would be 0 or NaN */
    *alpha = *mu = NAN;
    return NAN;
  }
  *alpha = a11 > 0 ? -b1 / a11 : 0.0;
  *mu = 0.0;
  double M = 0.5 * *alpha * b1;
  if (!use_mu) return M;
  const double a12 = td_la_dot(n, D, Fv) + lam * td_la_dot(n, D, v);
  const double a22 = td_la_dot(n, v, Fv) + lam * td_la_dot(n, v, v);
  const double b2 = td_la_dot(n, o->g, v);
  const double det = a11 * a22 - a12 * a12;
  if (det > 1e-14 * a11 * a22 && isfinite(det)) { /* else keep the 1-D solution */
    *alpha = (-b1 * a22 + b2 * a12) / det;
    *mu = (-b2 * a11 + b1 * a12) / det;
    M = 0.5 * (*alpha * b1 + *mu * b2); /* the optimum of a quadratic: 1/2 b^T x* */
  }
  return M;
}

int td_sopt_step(td_sopt *o, td_curv_ctx *c, double *params, double lr, td_sopt_stats *st,
                 td_err *err) {
  td_sopt_stats S = {.loss = NAN, .grad_norm = NAN, .damping = o->lambda, .rho = NAN,
                     .alpha = 1.0, .step_norm = 0.0, .kfac_alpha = NAN, .kfac_mu = NAN};
  if (!c || c->m != o->m || !c->have_point)
    return td_err_set(err, TD_EINVAL, NULL, "sopt: the context has no point for this model");
  const size_t n = o->n, p0 = c->n_products;
  const double eta = o->hp.weight_decay;
  /* The full minibatch binding, restored after a curvature sub-batch. */
  const double *X = c->X, *Y = c->Y;
  const int *y = c->y, B = c->B;
  const td_curv_loss loss = c->loss;

  const double *grad = td_curv_grad(c);
  S.loss = c->loss_value;
  S.grad_norm = td_la_nrm2(n, grad);
  double f0 = c->loss_value;
  memcpy(o->g, grad, n * sizeof *o->g);
  if (eta > 0) {
    td_la_axpy(n, eta, params, o->g);
    double t = td_la_nrm2(n, params);
    f0 += 0.5 * eta * t * t;
  }

  const int is_kfac = o->hp.kind == TD_SOPT_KFAC, is_hf = o->hp.kind == TD_SOPT_HF;
  int sub = !is_kfac && o->hp.curv_batch > 0 && o->hp.curv_batch < B;
  int rc = 0;
  if (sub) {
    rc = td_curv_set_batch(c, X, y, Y, o->hp.curv_batch, loss, err);
    if (!rc) rc = td_curv_set_point(c, params, err);
    if (rc) return rc;
  }
  switch (o->hp.kind) {
  case TD_SOPT_NEWTON:
    rc = td_newton_direction(o->nt, c, o->hp.newton_curv, o->g, o->lambda, eta, o->d, NULL, err);
    break;
  case TD_SOPT_HF:
  case TD_SOPT_NGD: {
    td_hf_set_damping(o->hf, o->lambda);
    td_hf_info inf;
    rc = td_hf_direction(o->hf, c, o->g, eta, o->d, &inf, err);
    if (!rc) S.cg_iters = inf.cg.iters;
    break;
  }
  case TD_SOPT_KFAC:
    if (!o->hp.kfac_rescale || o->gamma <= 0) o->gamma = sqrt(o->lambda + eta);
    rc = td_kfac_direction(o->kf, c, o->g, o->gamma, o->d, err);
    /* The user's damping (the first step's gamma, before any adaptation) below what the
     * factors resolve (kfac.h, "Damping floor") is refused; adapted values are floored. */
    if (!rc && td_kfac_updates(o->kf) == 1 && td_kfac_floored(o->kf, o->gamma) > 0)
      rc = td_err_set(err, TD_EINVAL, "params.optimizer.damping",
                      "kfac: optimizer.damping %g (+ weight_decay %g) gives the factored damping "
                      "gamma = %g, below what the Kronecker factors resolve (dim * eps * their "
                      "largest eigenvalue; core/optim/kfac.h): use damping >= %.3g",
                      o->hp.damping, eta, o->gamma,
                      pow(td_kfac_gamma_floor(o->kf), 2) - eta > 0
                          ? pow(td_kfac_gamma_floor(o->kf), 2) - eta
                          : 0.0);
    if (!rc && !(isfinite(td_la_nrm2(n, o->d))))
      rc = td_err_set(err, TD_ERANGE, "params.optimizer.damping",
                      "kfac: the preconditioned direction is not finite at the factored damping "
                      "gamma = %g; raise params.optimizer.damping (now %g)",
                      o->gamma, o->lambda);
    break;
  }
  if (rc) return rc;

  /* The step s (o->v holds the previous step). */
  const double mu = o->hp.momentum;
  int have_Cs = 0;
  if (is_kfac && o->hp.kfac_rescale) {
    const int use_mu = mu > 0 && o->have_prev;
    double a = 0, m = 0;
    if (use_mu) td_curv_ggn_vp(c, o->v, o->trial); /* F v, shared by the candidates */
    double M = kfac_rescale(o, c, o->d, use_mu, o->trial, o->Cs, &a, &m);
    if (o->hp.adapt_damping && td_kfac_refreshed_last(o->kf) && td_kfac_updates(o->kf) > 1) {
      /* Martens and Grosse sec. 6.6: try gamma * w and gamma / w, w = (19/20)^(T/2), keep the
       * one whose re-scaled step has the lowest model value M. */
      const double w = pow(19.0 / 20.0, 0.5 * o->hp.kfac_inverse_every);
      const double cand[2] = {o->gamma * w, o->gamma / w};
      for (int ci = 0; ci < 2; ci++) {
        td_kfac_precondition(o->kf, cand[ci], o->g, o->s);
        td_la_scal(n, -1.0, o->s);
        double a2 = 0, m2 = 0;
        double M2 = kfac_rescale(o, c, o->s, use_mu, o->trial, o->Cs2, &a2, &m2);
        if (M2 < M) { /* adopt: direction, F direction, coefficients */
          M = M2;
          a = a2;
          m = m2;
          o->gamma = cand[ci];
          memcpy(o->d, o->s, n * sizeof *o->d);
          memcpy(o->Cs, o->Cs2, n * sizeof *o->Cs);
        }
      }
    }
    /* D^T F D overflowing leaves alpha = 0 or NaN: the step is then nothing or garbage, so
     * it is an error, not a silent stall (issue 10). */
    if (!isfinite(M) || !isfinite(a) || !isfinite(m))
      return td_err_set(err, TD_ERANGE, "params.optimizer.damping",
                        "kfac: the re-scaling model is not finite (D^T F D overflows) at the "
                        "factored damping gamma = %g; raise params.optimizer.damping (now %g)",
                        o->gamma, o->lambda);
    S.kfac_alpha = a;
    S.kfac_mu = m;
    for (size_t i = 0; i < n; i++) {
      o->s[i] = lr * (a * o->d[i] + m * o->v[i]);
      o->Cs[i] = lr * (a * o->Cs[i] + (use_mu ? m * o->trial[i] : 0.0)); /* F s, undamped */
    }
    have_Cs = 1;
  } else {
    for (size_t i = 0; i < n; i++) o->s[i] = mu * o->v[i] + lr * o->d[i];
  }
  const double gs = td_la_dot(n, o->g, o->s);

  double alpha = 1.0;
  if (o->hp.adapt_damping || is_hf) {
    /* Predicted change of the undamped quadratic model, at the point of the curvature batch. */
    if (!have_Cs) model_curv(o, c, o->s, o->Cs);
    double sCs = td_la_dot(n, o->s, o->Cs);
    if (eta > 0) {
      double t = td_la_nrm2(n, o->s);
      sCs += eta * t * t;
    }
    const double q = gs + 0.5 * sCs;
    if (sub && (rc = td_curv_set_batch(c, X, y, Y, B, loss, err))) return rc;
    double f1 = trial_loss(o, c, params, 1.0);
    S.rho = (q < 0 && isfinite(f1)) ? (f1 - f0) / q : (isfinite(f1) ? NAN : -INFINITY);
    if (is_hf) {
      /* Armijo backtracking on the minibatch (Martens and Sutskever 2012, sec. 8.8). */
      double fa = f1;
      int tries = 0;
      while (!(fa <= f0 + 0.01 * alpha * gs) && tries < 8) {
        alpha *= 0.8;
        tries++;
        fa = trial_loss(o, c, params, alpha);
      }
      if (!(fa <= f0 + 0.01 * alpha * gs)) alpha = 0.0;
    } else if (o->hp.kind == TD_SOPT_NEWTON && !(f1 <= f0)) {
      alpha = 0.0; /* Levenberg-Marquardt: a step that raises the loss is rejected */
    }
    if (o->hp.adapt_damping) o->lambda = td_lm_adapt(o->lambda, S.rho);
    if (o->lambda != 0.0) {
      if (o->lambda < 1e-12) o->lambda = 1e-12;
      if (o->lambda > 1e12) o->lambda = 1e12;
    }
  }
  if (alpha == 0.0 && o->hf) td_hf_forget(o->hf);
  for (size_t i = 0; i < n; i++) {
    const double si = alpha * o->s[i];
    params[i] += si;
    o->v[i] = si;
  }
  o->have_prev = 1;
  S.alpha = alpha;
  S.step_norm = alpha * td_la_nrm2(n, o->s);
  S.damping = o->lambda;
  S.products = c->n_products - p0;
  if (st) *st = S;
  return 0;
}

int td_sopt_log(const td_sopt *o, const td_sopt_stats *st, td_sink *sink, long step) {
  int rc = td_sink_metric(sink, "damping", step, st->damping);
  if (!rc && !isnan(st->rho)) rc = td_sink_metric(sink, "rho", step, st->rho);
  if (!rc && (o->hp.kind == TD_SOPT_HF || o->hp.kind == TD_SOPT_NGD))
    rc = td_sink_metric(sink, "cg_iters", step, st->cg_iters);
  if (!rc) rc = td_sink_metric(sink, "step_norm", step, st->step_norm);
  if (!rc && o->hp.kind == TD_SOPT_HF)
    rc = td_sink_metric(sink, "line_search_alpha", step, st->alpha);
  if (!rc && !isnan(st->kfac_alpha)) rc = td_sink_metric(sink, "kfac_alpha", step, st->kfac_alpha);
  if (!rc && o->hp.kind == TD_SOPT_KFAC) rc = td_sink_metric(sink, "kfac_gamma", step, o->gamma);
  if (!rc && o->hp.kind == TD_SOPT_KFAC)
    rc = td_sink_metric(sink, "kfac_floored", step, td_kfac_floored(o->kf, o->gamma));
  if (!rc && !isnan(st->kfac_alpha) && o->hp.momentum > 0)
    rc = td_sink_metric(sink, "kfac_mu", step, st->kfac_mu);
  return rc;
}

void td_sopt_diverge_hint(const td_sopt *o, td_err *err) {
  if (!o || !err) return;
  size_t len = strlen(err->msg);
  if (o->hp.kind == TD_SOPT_KFAC)
    snprintf(err->msg + len, sizeof err->msg - len,
             " (kfac: damping %g, factored gamma %g; a small params.optimizer.damping makes "
             "the step large)", o->lambda, o->gamma);
  else
    snprintf(err->msg + len, sizeof err->msg - len,
             " (%s: damping %g; a small params.optimizer.damping makes the step large)",
             sopt_names[o->hp.kind], o->lambda);
}
