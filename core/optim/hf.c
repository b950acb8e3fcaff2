/* hf.c: Hessian-free and natural-gradient directions by CG (see hf.h). */
#include "optim/hf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"

struct td_hf {
  td_hf_hp hp;
  size_t n;
  double lambda;
  double *prev;  /* previous CG solution (warm start) */
  double *work;  /* td_cg_work_len(n, cap) */
};

double td_hf_bytes(double n_params, int cg_max_iters) {
  return 8.0 * (4.0 * n_params + cg_max_iters + 1.0);
}

int td_hf_create(const td_hf_hp *hp, size_t n_params, td_hf **out, td_err *err) {
  *out = NULL;
  if (!hp || n_params == 0) return td_err_set(err, TD_EINVAL, NULL, "hf: bad arguments");
  if (!(hp->damping >= 0) || !isfinite(hp->damping))
    return td_err_set(err, TD_EINVAL, "params.optimizer.damping", "damping must be >= 0");
  if (!(hp->warm_decay >= 0 && hp->warm_decay <= 1))
    return td_err_set(err, TD_EINVAL, "params.optimizer.cg_warm_decay",
                      "cg_warm_decay must be in [0, 1]");
  if (hp->cg.max_iters < 1)
    return td_err_set(err, TD_EINVAL, "params.optimizer.cg_max_iters", "cg_max_iters must be >= 1");
  td_hf *o = calloc(1, sizeof *o);
  if (!o) return td_err_set(err, TD_ENOMEM, NULL, "hf: out of memory");
  o->hp = *hp;
  o->n = n_params;
  o->lambda = hp->damping;
  o->prev = calloc(n_params, sizeof *o->prev);
  o->work = malloc(td_cg_work_len(n_params, hp->cg.max_iters) * sizeof *o->work);
  if (!o->prev || !o->work) {
    td_hf_destroy(o);
    return td_err_set(err, TD_ENOMEM, NULL, "hf: out of memory for %zu parameters", n_params);
  }
  *out = o;
  return 0;
}

void td_hf_destroy(td_hf *o) {
  if (!o) return;
  free(o->prev);
  free(o->work);
  free(o);
}

void td_hf_curv_vp(const td_hf *o, td_curv_ctx *c, const double *v, double *out) {
  switch (o->hp.curv) {
  case TD_HF_GGN: td_curv_ggn_vp(c, v, out); break;
  case TD_HF_FISHER_TRUE: td_curv_fisher_vp(c, TD_CURV_FISHER_TRUE, v, out); break;
  case TD_HF_FISHER_EMP: td_curv_fisher_vp(c, TD_CURV_FISHER_EMPIRICAL, v, out); break;
  }
}

int td_hf_direction(td_hf *o, td_curv_ctx *c, const double *g, double l2, double *d,
                    td_hf_info *info, td_err *err) {
  if (!o || !c || !c->m || c->m->n_params != o->n || !g || !d)
    return td_err_set(err, TD_EINVAL, NULL, "hf: model size does not match the state");
  if (!c->have_point) return td_err_set(err, TD_EINVAL, NULL, "hf: no point set");
  const size_t n = o->n;
  td_matvec_fn mv = o->hp.curv == TD_HF_GGN          ? td_curv_ggn_matvec
                    : o->hp.curv == TD_HF_FISHER_TRUE ? td_curv_fisher_true_matvec
                                                      : td_curv_fisher_emp_matvec;
  /* x0 = decay * previous solution, in d (CG's x). */
  for (size_t i = 0; i < n; i++) d[i] = o->hp.warm_decay * o->prev[i];
  td_hf_info inf;
  memset(&inf, 0, sizeof inf);
  inf.damping = o->lambda;
  /* The right-hand side -g goes into prev (already consumed as x0); the solution into d. */
  for (size_t i = 0; i < n; i++) o->prev[i] = -g[i];
  int rc = td_cg_solve(mv, c, n, o->lambda + l2, o->prev, d, &o->hp.cg, o->work, &inf.cg, err);
  if (rc) {
    memset(o->prev, 0, n * sizeof *o->prev);
    return rc;
  }
  memcpy(o->prev, d, n * sizeof *d);
  if (info) *info = inf;
  return 0;
}

double td_hf_damping(const td_hf *o) { return o->lambda; }

void td_hf_set_damping(td_hf *o, double lambda) {
  if (lambda == 0.0) {
    o->lambda = 0.0;
    return;
  }
  if (!(lambda >= 1e-12)) lambda = 1e-12;
  if (lambda > 1e12) lambda = 1e12;
  o->lambda = lambda;
}

void td_hf_forget(td_hf *o) { memset(o->prev, 0, o->n * sizeof *o->prev); }

double td_lm_adapt(double lambda, double rho) {
  if (rho > 0.75) return lambda * (2.0 / 3.0);
  if (!(rho >= 0.25)) return lambda * 1.5; /* rho < 1/4 or NaN */
  return lambda;
}
