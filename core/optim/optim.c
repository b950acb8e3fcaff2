/* optim.c: first-order optimizers behind one interface; a table of implementations (optim.h). */
#include "optim/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "base/schema.h"

#define TD__OPTIM_MAX_STATE 4

typedef struct td_optim_impl {
  const char *name;
  int n_state; /* state vectors of n_params doubles each */
  const char *state_names[TD__OPTIM_MAX_STATE]; /* PyTorch's state keys (checkpoints) */
  int (*check)(const td_optim_hp *hp, td_err *err);
  void (*step)(td_optim *o, double *p, const double *g, double lr);
} td_optim_impl;

struct td_optim {
  const td_optim_impl *impl;
  td_optim_hp hp;
  size_t n;
  long t; /* steps taken */
  double *state[TD__OPTIM_MAX_STATE];
  int n_seg; /* per-segment lr multipliers (td_optim_set_lr_segments); 0: none */
  size_t seg_end[TD_OPTIM_MAX_SEGMENTS];
  double seg_mult[TD_OPTIM_MAX_SEGMENTS];
};

double td_optim_default_weight_decay(const char *name) {
  return name && strcmp(name, "adamw") == 0 ? 0.01 : 0.0;
}

int td_optim_fill_params(json_t *params, td_err *err) {
  if (!json_is_object(params))
    return td_err_set(err, TD_EINVAL, "params", "params must be an object");
  if (td_param_has(params, "optimizer.weight_decay")) return 0;
  const double wd = td_optim_default_weight_decay(td_param_str(params, "optimizer.name", "sgd"));
  json_t *v = json_real(wd);
  if (!v) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  return td_param_set_path(params, "optimizer.weight_decay", v, err);
}

td_optim_hp td_optim_hp_default(void) {
  td_optim_hp hp = {.momentum = 0.0, .nesterov = 0, .dampening = 0.0, .beta1 = 0.9,
                    .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0, .alpha = 0.99,
                    .centered = 0, .lr_decay = 0.0, .initial_accumulator = 0.0,
                    .temperature = 1.0, .n_data = 0.0, .noise_seed = 0};
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

/* ---- heavy ball (Polyak), nesterov ------------------------------------------------------ */

static int heavy_ball_check(const td_optim_hp *hp, td_err *err) {
  if (!(hp->momentum >= 0) || !isfinite(hp->momentum))
    return td_err_set(err, TD_EINVAL, "params.optimizer.momentum", "momentum must be >= 0");
  if (hp->nesterov)
    return td_err_set(err, TD_EINVAL, "params.optimizer.nesterov",
                      "heavy_ball has no nesterov flag (use the name \"nesterov\")");
  if (hp->dampening != 0)
    return td_err_set(err, TD_EINVAL, "params.optimizer.dampening",
                      "heavy_ball has no dampening (a PyTorch sgd option)");
  return 0;
}

/* d = mu d - lr (g + wd p); p += d (optim.h). */
static void heavy_ball_step(td_optim *o, double *restrict p, const double *restrict g, double lr) {
  const size_t n = o->n;
  const double wd = o->hp.weight_decay, mu = o->hp.momentum;
  double *restrict d = o->state[0];
  for (size_t i = 0; i < n; i++) {
    double gi = wd == 0.0 ? g[i] : g[i] + wd * p[i];
    double di = mu * d[i] - lr * gi;
    d[i] = di;
    p[i] += di;
  }
}

static int nesterov_check(const td_optim_hp *hp, td_err *err) {
  if (!(hp->momentum > 0) || !isfinite(hp->momentum))
    return td_err_set(err, TD_EINVAL, "params.optimizer.momentum",
                      "nesterov needs momentum > 0");
  return sgd_check(hp, err);
}

/* ---- adagrad ---------------------------------------------------------------------------- */

static int adagrad_check(const td_optim_hp *hp, td_err *err) {
  if (!(hp->eps > 0) || !isfinite(hp->eps))
    return td_err_set(err, TD_EINVAL, "params.optimizer.eps", "eps must be > 0");
  if (!(hp->lr_decay >= 0) || !isfinite(hp->lr_decay))
    return td_err_set(err, TD_EINVAL, "params.optimizer.lr_decay", "lr_decay must be >= 0");
  if (!(hp->initial_accumulator >= 0) || !isfinite(hp->initial_accumulator))
    return td_err_set(err, TD_EINVAL, "params.optimizer.initial_accumulator",
                      "initial_accumulator must be >= 0");
  return 0;
}

/* clr = lr / (1 + (t-1) lr_decay); s += g^2; p -= clr g / (sqrt(s) + eps) (optim.h). */
static void adagrad_step(td_optim *o, double *restrict p, const double *restrict g, double lr) {
  const size_t n = o->n;
  const double wd = o->hp.weight_decay, eps = o->hp.eps;
  const double clr = lr / (1.0 + (double)o->t * o->hp.lr_decay); /* o->t = t - 1 */
  double *restrict s = o->state[0];
  for (size_t i = 0; i < n; i++) {
    double gi = wd == 0.0 ? g[i] : g[i] + wd * p[i];
    s[i] += gi * gi;
    p[i] -= clr * gi / (sqrt(s[i]) + eps);
  }
}

/* ---- rmsprop ---------------------------------------------------------------------------- */

static int rmsprop_check(const td_optim_hp *hp, td_err *err) {
  if (!(hp->alpha >= 0 && hp->alpha < 1))
    return td_err_set(err, TD_EINVAL, "params.optimizer.alpha", "alpha must be in [0, 1)");
  if (!(hp->eps > 0) || !isfinite(hp->eps))
    return td_err_set(err, TD_EINVAL, "params.optimizer.eps", "eps must be > 0");
  if (!(hp->momentum >= 0) || !isfinite(hp->momentum))
    return td_err_set(err, TD_EINVAL, "params.optimizer.momentum", "momentum must be >= 0");
  return 0;
}

/* v = alpha v + (1-alpha) g^2; den = sqrt(v [- a^2]) + eps; p -= lr g/den or via buf. */
static void rmsprop_step(td_optim *o, double *restrict p, const double *restrict g, double lr) {
  const size_t n = o->n;
  const double wd = o->hp.weight_decay, eps = o->hp.eps, al = o->hp.alpha, mu = o->hp.momentum;
  double *restrict v = o->state[0], *restrict buf = o->state[1], *restrict a = o->state[2];
  for (size_t i = 0; i < n; i++) {
    double gi = wd == 0.0 ? g[i] : g[i] + wd * p[i];
    v[i] = al * v[i] + (1.0 - al) * gi * gi;
    double den;
    if (a) {
      a[i] = al * a[i] + (1.0 - al) * gi;
      den = sqrt(fmax(v[i] - a[i] * a[i], 0.0)) + eps; /* >= 0 exactly; rounding guard */
    } else {
      den = sqrt(v[i]) + eps;
    }
    if (buf) {
      buf[i] = mu * buf[i] + gi / den;
      p[i] -= lr * buf[i];
    } else {
      p[i] -= lr * gi / den;
    }
  }
}

/* ---- sgld ------------------------------------------------------------------------------- */

static int sgld_check(const td_optim_hp *hp, td_err *err) {
  if (!(hp->temperature >= 0) || !isfinite(hp->temperature))
    return td_err_set(err, TD_EINVAL, "params.optimizer.temperature", "temperature must be >= 0");
  if (!(hp->n_data >= 1) || !isfinite(hp->n_data))
    return td_err_set(err, TD_EINVAL, "params.optimizer.n_data", "sgld needs n_data >= 1");
  return 0;
}

static void sgld_step(td_optim *o, double *p, const double *g, double lr) {
  const double wd = o->hp.weight_decay, sd = sqrt(2.0 * lr * o->hp.temperature / o->hp.n_data);
  td_rng r;
  td_rng_init(&r, o->hp.noise_seed, TD_OPTIM_SGLD_STREAM + (uint64_t)o->t);
  for (size_t i = 0; i < o->n; i++) {
    p[i] -= lr * (g[i] + wd * p[i]);
    if (sd > 0) p[i] += sd * td_rng_normal(&r);
  }
}

/* ---- table ------------------------------------------------------------------------------ */

static const td_optim_impl impls[] = {
    {"sgd", 1, {"momentum_buffer"}, sgd_check, sgd_step},
    {"heavy_ball", 1, {"displacement"}, heavy_ball_check, heavy_ball_step},
    {"nesterov", 1, {"momentum_buffer"}, nesterov_check, sgd_step},
    {"adagrad", 1, {"sum"}, adagrad_check, adagrad_step},
    {"rmsprop", 3, {"square_avg", "momentum_buffer", "grad_avg"}, rmsprop_check, rmsprop_step},
    {"adam", 2, {"exp_avg", "exp_avg_sq"}, adam_check, adam_step},
    {"adamw", 2, {"exp_avg", "exp_avg_sq"}, adam_check, adamw_step},
    {"sgld", 0, {NULL}, sgld_check, sgld_step},
};

const char *td_optim_names(void) { return "sgd|heavy_ball|nesterov|adagrad|rmsprop|adam|adamw|sgld"; }

static const td_optim_impl *find_impl(const char *name) {
  for (size_t i = 0; name && i < sizeof impls / sizeof impls[0]; i++)
    if (strcmp(impls[i].name, name) == 0) return &impls[i];
  return NULL;
}

/* Which state vectors an optimizer uses: bit i set means state[i] is allocated. */
static unsigned state_mask(const td_optim_impl *impl, const td_optim_hp *h) {
  if (impl->step == sgd_step) return h->momentum != 0.0 ? 1u : 0u; /* sgd without momentum */
  if (impl->step == rmsprop_step)
    return 1u | (h->momentum != 0.0 ? 2u : 0u) | (h->centered ? 4u : 0u);
  return (1u << impl->n_state) - 1u;
}

int td_optim_state_count(const char *name, const td_optim_hp *hp) {
  const td_optim_impl *impl = find_impl(name);
  if (!impl) return -1;
  td_optim_hp h = hp ? *hp : td_optim_hp_default();
  unsigned mask = state_mask(impl, &h);
  int c = 0;
  for (; mask; mask >>= 1) c += (int)(mask & 1u);
  return c;
}

/* The initial value of every state vector: 0, except adagrad's sum. */
static void state_fill(td_optim *o) {
  for (int i = 0; i < TD__OPTIM_MAX_STATE; i++) {
    if (!o->state[i]) continue;
    if (o->impl->step == adagrad_step && o->hp.initial_accumulator != 0.0)
      for (size_t j = 0; j < o->n; j++) o->state[i][j] = o->hp.initial_accumulator;
    else memset(o->state[i], 0, o->n * sizeof(double));
  }
}

/* Resolve the name and check the hyperparameters; *h receives the effective copy. */
static int resolve(const char *name, const td_optim_hp *hp, const td_optim_impl **impl_out,
                   td_optim_hp *h, td_err *err) {
  const td_optim_impl *impl = find_impl(name);
  if (!impl)
    return td_err_set(err, TD_EINVAL, "params.optimizer.name", "unknown optimizer '%s' (%s)",
                      name ? name : "", td_optim_names());
  *h = hp ? *hp : td_optim_hp_default();
  if (impl->step == sgd_step && strcmp(impl->name, "nesterov") == 0) h->nesterov = 1;
  if (!(h->weight_decay >= 0) || !isfinite(h->weight_decay))
    return td_err_set(err, TD_EINVAL, "params.optimizer.weight_decay",
                      "weight_decay must be >= 0");
  *impl_out = impl;
  return impl->check(h, err);
}

int td_optim_check(const char *name, const td_optim_hp *hp, td_err *err) {
  const td_optim_impl *impl = NULL;
  td_optim_hp h;
  return resolve(name, hp, &impl, &h, err);
}

int td_optim_create(const char *name, const td_optim_hp *hp, size_t n_params, td_optim **out,
                    td_err *err) {
  *out = NULL;
  const td_optim_impl *impl = NULL;
  td_optim_hp h;
  int rc = resolve(name, hp, &impl, &h, err);
  if (rc) return rc;
  td_optim *o = calloc(1, sizeof *o);
  if (!o) return td_err_set(err, TD_ENOMEM, NULL, "optim: out of memory");
  o->impl = impl;
  o->hp = h;
  o->n = n_params;
  /* sgd without momentum keeps no state; rmsprop only what momentum/centered need */
  const unsigned mask = state_mask(impl, &h);
  for (int i = 0; i < impl->n_state; i++) {
    if (!(mask & (1u << i))) continue;
    o->state[i] = calloc(n_params ? n_params : 1, sizeof(double));
    if (!o->state[i]) {
      td_optim_destroy(o);
      return td_err_set(err, TD_ENOMEM, NULL, "optim: out of memory for %zu parameters",
                        n_params);
    }
  }
  state_fill(o);
  *out = o;
  return 0;
}

void td_optim_destroy(td_optim *o) {
  if (!o) return;
  for (int i = 0; i < TD__OPTIM_MAX_STATE; i++) free(o->state[i]);
  free(o);
}

void td_optim_step(td_optim *o, double *params, const double *grad, double lr) {
  if (!o->n_seg) {
    o->impl->step(o, params, grad, lr);
  } else {
    /* one update of each segment as an optimizer over that slice (same hyperparameters and
     * step count, state vectors offset), with lr times the segment's multiplier */
    size_t start = 0;
    for (int s = 0; s < o->n_seg; s++) {
      td_optim v = *o;
      v.n = o->seg_end[s] - start;
      v.n_seg = 0;
      for (int i = 0; i < TD__OPTIM_MAX_STATE; i++)
        if (o->state[i]) v.state[i] = o->state[i] + start;
      if (v.n) o->impl->step(&v, params + start, grad + start, lr * o->seg_mult[s]);
      start = o->seg_end[s];
    }
  }
  o->t++;
}

int td_optim_set_lr_segments(td_optim *o, int n_seg, const size_t *ends, const double *mults,
                             td_err *err) {
  if (n_seg < 0 || n_seg > TD_OPTIM_MAX_SEGMENTS)
    return td_err_set(err, TD_EINVAL, NULL, "optim: %d lr segments (at most %d)", n_seg,
                      TD_OPTIM_MAX_SEGMENTS);
  if (n_seg && o->impl->step == sgld_step)
    return td_err_set(err, TD_EINVAL, "params.optimizer.name",
                      "sgld: per-layer learning rates (model.parameterization mup) are not "
                      "supported (its noise stream covers the whole vector)");
  size_t prev = 0;
  for (int s = 0; s < n_seg; s++) {
    if (ends[s] < prev || ends[s] > o->n || !(mults[s] > 0) || !isfinite(mults[s]))
      return td_err_set(err, TD_EINVAL, NULL, "optim: bad lr segment %d", s);
    prev = ends[s];
  }
  if (n_seg && prev != o->n)
    return td_err_set(err, TD_EINVAL, NULL, "optim: lr segments end at %zu, not %zu", prev, o->n);
  o->n_seg = n_seg;
  for (int s = 0; s < n_seg; s++) {
    o->seg_end[s] = ends[s];
    o->seg_mult[s] = mults[s];
  }
  return 0;
}

int td_optim_adam_like(const char *name) {
  return name && (!strcmp(name, "adam") || !strcmp(name, "adamw") || !strcmp(name, "adagrad") ||
                  !strcmp(name, "rmsprop"));
}

void td_optim_reset(td_optim *o) {
  state_fill(o);
  o->t = 0;
}

const char *td_optim_name(const td_optim *o) { return o->impl->name; }
long td_optim_steps(const td_optim *o) { return o->t; }
size_t td_optim_n_params(const td_optim *o) { return o->n; }
double *td_optim_state(td_optim *o, int i) {
  return (i >= 0 && i < TD__OPTIM_MAX_STATE) ? o->state[i] : NULL;
}

const char *td_optim_state_name(const td_optim *o, int i) {
  return (o && i >= 0 && i < o->impl->n_state) ? o->impl->state_names[i] : NULL;
}

void td_optim_set_steps(td_optim *o, long t) {
  if (o && t >= 0) o->t = t;
}
