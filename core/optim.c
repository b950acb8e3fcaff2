/* optim.c: optimizers behind one interface; a table of implementations (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TD__OPTIM_MAX_STATE 4

typedef struct td_optim_impl {
  const char *name;
  int n_state; /* state vectors of n_params doubles each */
  int (*check)(const td_optim_hp *hp, td_err *err);
  void (*step)(td_optim *o, double *p, const double *g, double lr);
} td_optim_impl;

struct td_optim {
  const td_optim_impl *impl;
  td_optim_hp hp;
  size_t n;
  long t; /* steps taken */
  double *state[TD__OPTIM_MAX_STATE];
};

td_optim_hp td_optim_hp_default(void) {
  td_optim_hp hp = {.momentum = 0.0, .nesterov = 0, .dampening = 0.0, .beta1 = 0.9,
                    .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
  return hp;
}

/* ---- sgd -------------------------------------------------------------------------------- */

static int sgd_check(const td_optim_hp *hp, td_err *err) {
  if (!(hp->momentum >= 0) || !isfinite(hp->momentum))
    return td_err_set(err, TD_EINVAL, "params.optimizer.momentum", "momentum must be >= 0");
  if (!(hp->dampening >= 0 && hp->dampening < 1))
    return td_err_set(err, TD_EINVAL, "params.optimizer.dampening", "dampening must be in [0,1)");
  if (hp->nesterov && (hp->momentum <= 0 || hp->dampening != 0))
    return td_err_set(err, TD_EINVAL, "params.optimizer.nesterov",
                      "nesterov needs momentum > 0 and zero dampening");
  return 0;
}

/* The hot loops are unrolled by 4 with restrict pointers so that -O2 vectorizes them
 * (GCC 12's very-cheap cost model leaves runtime-length loops scalar); lane-wise they are
 * the same IEEE operations as the scalar formula. */
static void sgd_step(td_optim *o, double *restrict p, const double *restrict g, double lr) {
  const size_t n = o->n, n4 = n & ~(size_t)3;
  const double wd = o->hp.weight_decay, mu = o->hp.momentum, damp = 1.0 - o->hp.dampening;
  size_t i = 0;
  if (mu == 0.0) {
    if (wd == 0.0) {
      for (; i < n4; i += 4) {
        p[i] -= lr * g[i];
        p[i + 1] -= lr * g[i + 1];
        p[i + 2] -= lr * g[i + 2];
        p[i + 3] -= lr * g[i + 3];
      }
      for (; i < n; i++) p[i] -= lr * g[i];
    } else {
      for (; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
    }
    return;
  }
  double *restrict buf = o->state[0];
  if (o->t > 0 && wd == 0.0 && damp == 1.0 && !o->hp.nesterov) {
    /* the common heavy-ball case: buf = mu buf + g; p -= lr buf */
    for (; i < n4; i += 4) {
      double b0 = mu * buf[i] + g[i], b1 = mu * buf[i + 1] + g[i + 1];
      double b2 = mu * buf[i + 2] + g[i + 2], b3 = mu * buf[i + 3] + g[i + 3];
      buf[i] = b0;
      buf[i + 1] = b1;
      buf[i + 2] = b2;
      buf[i + 3] = b3;
      p[i] -= lr * b0;
      p[i + 1] -= lr * b1;
      p[i + 2] -= lr * b2;
      p[i + 3] -= lr * b3;
    }
    for (; i < n; i++) {
      double b = mu * buf[i] + g[i];
      buf[i] = b;
      p[i] -= lr * b;
    }
    return;
  }
  const int first = o->t == 0, nes = o->hp.nesterov;
  for (; i < n; i++) {
    double gi = wd == 0.0 ? g[i] : g[i] + wd * p[i];
    double b = first ? gi : mu * buf[i] + damp * gi;
    buf[i] = b;
    p[i] -= lr * (nes ? gi + mu * b : b);
  }
}

/* ---- adam / adamw ----------------------------------------------------------------------- */

static int adam_check(const td_optim_hp *hp, td_err *err) {
  if (!(hp->beta1 >= 0 && hp->beta1 < 1))
    return td_err_set(err, TD_EINVAL, "params.optimizer.beta1", "beta1 must be in [0, 1)");
  if (!(hp->beta2 >= 0 && hp->beta2 < 1))
    return td_err_set(err, TD_EINVAL, "params.optimizer.beta2", "beta2 must be in [0, 1)");
  if (!(hp->eps > 0) || !isfinite(hp->eps))
    return td_err_set(err, TD_EINVAL, "params.optimizer.eps", "eps must be > 0");
  return 0;
}

static void adam_core(td_optim *o, double *restrict p, const double *restrict g, double lr,
                      double wd_l2) {
  const size_t n = o->n;
  const double b1 = o->hp.beta1, b2 = o->hp.beta2, eps = o->hp.eps;
  const double t = (double)(o->t + 1);
  const double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
  const double step_size = lr / bc1, inv_sqrt_bc2 = 1.0 / sqrt(bc2);
  double *restrict m = o->state[0], *restrict v = o->state[1];
  for (size_t i = 0; i < n; i++) {
    double gi = g[i] + wd_l2 * p[i];
    m[i] = b1 * m[i] + (1.0 - b1) * gi;
    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
    p[i] -= step_size * m[i] / (sqrt(v[i]) * inv_sqrt_bc2 + eps);
  }
}

static void adam_step(td_optim *o, double *p, const double *g, double lr) {
  adam_core(o, p, g, lr, o->hp.weight_decay);
}

static void adamw_step(td_optim *o, double *p, const double *g, double lr) {
  const double f = 1.0 - lr * o->hp.weight_decay;
  if (f != 1.0)
    for (size_t i = 0; i < o->n; i++) p[i] *= f;
  adam_core(o, p, g, lr, 0.0);
}

/* ---- table ------------------------------------------------------------------------------ */

static const td_optim_impl impls[] = {
    {"sgd", 1, sgd_check, sgd_step},
    {"adam", 2, adam_check, adam_step},
    {"adamw", 2, adam_check, adamw_step},
};

const char *td_optim_names(void) { return "sgd|adam|adamw"; }

int td_optim_create(const char *name, const td_optim_hp *hp, size_t n_params, td_optim **out,
                    td_err *err) {
  *out = NULL;
  const td_optim_impl *impl = NULL;
  for (size_t i = 0; name && i < sizeof impls / sizeof impls[0]; i++)
    if (strcmp(impls[i].name, name) == 0) impl = &impls[i];
  if (!impl)
    return td_err_set(err, TD_EINVAL, "params.optimizer.name", "unknown optimizer '%s' (%s)",
                      name ? name : "", td_optim_names());
  td_optim_hp h = hp ? *hp : td_optim_hp_default();
  if (!(h.weight_decay >= 0) || !isfinite(h.weight_decay))
    return td_err_set(err, TD_EINVAL, "params.optimizer.weight_decay",
                      "weight_decay must be >= 0");
  int rc = impl->check(&h, err);
  if (rc) return rc;
  td_optim *o = calloc(1, sizeof *o);
  if (!o) return td_err_set(err, TD_ENOMEM, NULL, "optim: out of memory");
  o->impl = impl;
  o->hp = h;
  o->n = n_params;
  /* sgd without momentum keeps no state */
  int ns = (impl->step == sgd_step && h.momentum == 0.0) ? 0 : impl->n_state;
  for (int i = 0; i < ns; i++) {
    o->state[i] = calloc(n_params ? n_params : 1, sizeof(double));
    if (!o->state[i]) {
      td_optim_destroy(o);
      return td_err_set(err, TD_ENOMEM, NULL, "optim: out of memory for %zu parameters",
                        n_params);
    }
  }
  *out = o;
  return 0;
}

void td_optim_destroy(td_optim *o) {
  if (!o) return;
  for (int i = 0; i < TD__OPTIM_MAX_STATE; i++) free(o->state[i]);
  free(o);
}

void td_optim_step(td_optim *o, double *params, const double *grad, double lr) {
  o->impl->step(o, params, grad, lr);
  o->t++;
}

void td_optim_reset(td_optim *o) {
  for (int i = 0; i < TD__OPTIM_MAX_STATE; i++)
    if (o->state[i]) memset(o->state[i], 0, o->n * sizeof(double));
  o->t = 0;
}

const char *td_optim_name(const td_optim *o) { return o->impl->name; }
long td_optim_steps(const td_optim *o) { return o->t; }
size_t td_optim_n_params(const td_optim *o) { return o->n; }
double *td_optim_state(td_optim *o, int i) {
  return (i >= 0 && i < TD__OPTIM_MAX_STATE) ? o->state[i] : NULL;
}
