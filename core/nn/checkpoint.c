/* checkpoint.c: MLP parameters to and from safetensors (F64) in the torch.nn.Linear layout. */
#include "nn/checkpoint.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/schema.h"
#include "nn/safetensors.h"

#define CKPT_MAX_FILE ((size_t)4 << 30)

static const char *act_name(td_act a) {
  return a == TD_ACT_RELU ? "relu" : a == TD_ACT_TANH ? "tanh" : "linear";
}

/* The tensors of a model, in file order: per linear layer j layers.{j}.weight, .bias, and,
 * when layer j is followed by a norm layer, norms.{j}.weight, .bias (and for BatchNorm
 * .running_mean, .running_var, .num_batches_tracked, which point into m->buffers). */
typedef struct ckpt_tensor {
  char name[96];
  size_t ndim;
  size_t shape[2];
  double *data;
  int optional; /* num_batches_tracked: may be absent on load (and of any dtype) */
  int buffer;   /* a BatchNorm buffer (m->buffers), not a slice of the parameter vector */
} ckpt_tensor;

/* Fill t (capacity 7 * n_linear) for params; returns the count or -1 (inconsistent model). */
static int ckpt_tensors(const td_mlp *m, double *params, ckpt_tensor *t) {
  int k = 0;
  for (int j = 0; j < m->n_linear; j++) {
    double *W = NULL, *b = NULL;
    const td_layer *L = td_mlp_linear(m, j, params, &W, &b);
    if (!L) return -1;
    t[k] = (ckpt_tensor){"", 2, {(size_t)L->n_out, (size_t)L->n_in}, W, 0, 0};
    snprintf(t[k++].name, sizeof t[0].name, "layers.%d.weight", j);
    t[k] = (ckpt_tensor){"", 1, {(size_t)L->n_out, 0}, b, 0, 0};
    snprintf(t[k++].name, sizeof t[0].name, "layers.%d.bias", j);
    double *g = NULL, *be = NULL;
    const td_layer *N = td_mlp_norm(m, j, params, &g, &be);
    if (!N) continue;
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, g, 0, 0};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.weight", j);
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, be, 0, 0};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.bias", j);
    double *rm = NULL, *rv = NULL, *cnt = NULL;
    if (!td_mlp_norm_buffers(m, j, &rm, &rv, &cnt)) continue;
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, rm, 0, 1};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.running_mean", j);
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, rv, 0, 1};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.running_var", j);
    t[k] = (ckpt_tensor){"", 0, {0, 0}, cnt, 1, 1};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.num_batches_tracked", j);
  }
  return k;
}

#define CKPT_MAX_STATE 4 /* optimizer state slots (optim.c's TD__OPTIM_MAX_STATE) */

/* The whole tensor list of a checkpoint: the model's tensors for `params` (and m->buffers),
 * then for each optimizer state slot i with sv[i] != NULL the parameter tensors (not the
 * buffers) of sv[i] (n_params, the layout of params) as optimizer.<names[i]>.<name>.
 * t has room for ckpt_cap(m). Returns the count or -1 (inconsistent model). */
static int ckpt_cap(const td_mlp *m) { return 7 * m->n_linear * (1 + CKPT_MAX_STATE); }

static int ckpt_all(const td_mlp *m, double *params, const char *const *names,
                    double *const *sv, ckpt_tensor *t) {
  int nt = ckpt_tensors(m, params, t);
  if (nt < 0) return -1;
  const int np = nt;
  for (int i = 0; sv && i < CKPT_MAX_STATE; i++) {
    if (!sv[i] || !names[i]) continue;
    int k0 = nt;
    if (ckpt_tensors(m, sv[i], t + k0) < 0) return -1;
    for (int k = 0; k < np; k++) {
      if (t[k].buffer) continue;
      ckpt_tensor x = t[k]; /* a copy: t[nt] may be the slot read here */
      x.data = t[k0 + k].data;
      snprintf(x.name, sizeof x.name, "optimizer.%s.%s", names[i], t[k].name);
      t[nt++] = x;
    }
  }
  return nt;
}

/* The metadata of a checkpoint: a copy of the caller's, plus format, activation, norm and
 * (with opt) optimizer and optimizer_step. NULL on error (err set). */
static json_t *ckpt_meta(const td_mlp *m, const td_optim *opt, const json_t *metadata,
                         td_err *err) {
  if (metadata && !json_is_object(metadata)) {
    td_err_set(err, TD_EINVAL, "__metadata__", "checkpoint: metadata must be an object");
    return NULL;
  }
  json_t *meta = metadata ? json_deep_copy(metadata) : json_object();
  if (!meta) {
    td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
    return NULL;
  }
  if (!json_object_get(meta, "format")) json_object_set_new(meta, "format", json_string("pt"));
  if (!json_object_get(meta, "activation"))
    json_object_set_new(meta, "activation", json_string(act_name(m->cfg.act)));
  if (m->n_norm > 0) {
    char eps[40];
    snprintf(eps, sizeof eps, "%.17g", m->norm_eps);
    if (!json_object_get(meta, "norm"))
      json_object_set_new(meta, "norm", json_string(td_mlp_norm_name(m->cfg.norm)));
    if (!json_object_get(meta, "norm_eps")) json_object_set_new(meta, "norm_eps", json_string(eps));
  }
  if (m->cfg.param != TD_PARAM_STANDARD) { /* standard checkpoints keep their old bytes */
    char v[40];
    json_object_set_new(meta, TD_CHECKPOINT_META_PARAM,
                        json_string(td_mlp_param_name(m->cfg.param)));
    if (m->cfg.param == TD_PARAM_NTK) {
      snprintf(v, sizeof v, "%.17g", m->cfg.sigma_w2);
      json_object_set_new(meta, "sigma_w2", json_string(v));
      snprintf(v, sizeof v, "%.17g", m->cfg.sigma_b2);
      json_object_set_new(meta, "sigma_b2", json_string(v));
    } else {
      snprintf(v, sizeof v, "%.17g", m->cfg.base_width > 0 ? m->cfg.base_width : 1.0);
      json_object_set_new(meta, "base_width", json_string(v));
    }
  }
  if (opt) {
    char st[32];
    snprintf(st, sizeof st, "%ld", td_optim_steps(opt));
    json_object_set_new(meta, TD_CHECKPOINT_META_OPTIMIZER, json_string(td_optim_name(opt)));
    json_object_set_new(meta, TD_CHECKPOINT_META_OPTIMIZER_STEP, json_string(st));
  }
  return meta;
}

int td_checkpoint_save_state(const td_mlp *m, const double *params, const td_optim *opt,
                             const json_t *metadata, unsigned char **bytes, size_t *len,
                             td_err *err) {
  if (bytes) *bytes = NULL;
  if (len) *len = 0;
  if (!m || !params || !bytes || !len)
    return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  if (opt && td_optim_n_params(opt) != m->n_params)
    return td_err_set(err, TD_EINVAL, "optimizer", "checkpoint: the optimizer has %zu "
                      "parameters, the model %zu", td_optim_n_params(opt), m->n_params);
  const char *names[CKPT_MAX_STATE] = {0};
  double *sv[CKPT_MAX_STATE] = {0};
  for (int i = 0; opt && i < CKPT_MAX_STATE; i++) {
    names[i] = td_optim_state_name(opt, i);
    sv[i] = td_optim_state((td_optim *)opt, i); /* read only */
  }
  const int cap = ckpt_cap(m);
  td_safetensors_entry *e = calloc((size_t)cap, sizeof *e);
  ckpt_tensor *t = calloc((size_t)cap, sizeof *t);
  json_t *meta = ckpt_meta(m, opt, metadata, err);
  int rc = 0;
  if (!meta) {
    rc = err ? err->code : TD_EINVAL;
    goto out;
  }
  if (!e || !t) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
    goto out;
  }
  int nt = ckpt_all(m, (double *)params, names, sv, t);
  if (nt < 0) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "checkpoint: inconsistent layer list");
    goto out;
  }
  for (int k = 0; k < nt; k++)
    e[k] = (td_safetensors_entry){t[k].name, t[k].ndim, t[k].shape, t[k].data};
  rc = td_safetensors_write(e, (size_t)nt, meta, bytes, len, err);
out:
  json_decref(meta);
  free(e);
  free(t);
  return rc;
}

int td_checkpoint_save(const td_mlp *m, const double *params, const json_t *metadata,
                       unsigned char **buf, size_t *len, td_err *err) {
  return td_checkpoint_save_state(m, params, NULL, metadata, buf, len, err);
}

/* "(a, b)" for a shape. */
static void shape_str(char *out, size_t cap, size_t ndim, const size_t *shape) {
  size_t o = (size_t)snprintf(out, cap, "(");
  for (size_t d = 0; d < ndim && o < cap; d++)
    o += (size_t)snprintf(out + o, cap - o, d ? ", %zu" : "%zu", shape[d]);
  if (o < cap) snprintf(out + o, cap - o, ")");
}

/* Is `name` optimizer.<s>.<...> with s one of the used state names of opt? */
static int own_state_tensor(const char *name, const char *const *names) {
  if (strncmp(name, "optimizer.", 10)) return 0;
  const char *s = name + 10;
  for (int i = 0; i < CKPT_MAX_STATE; i++) {
    size_t l = names[i] ? strlen(names[i]) : 0;
    if (l && !strncmp(s, names[i], l) && s[l] == '.') return 1;
  }
  return 0;
}

/* The parameterization recorded in the metadata (absent: standard) into cfg's param,
 * sigma_w2, sigma_b2, base_width. Errors: TD_EINVAL naming the metadata key. */
static int meta_param(const td_safetensors *st, td_mlp_cfg *cfg, td_err *err) {
  const char *pz = td_safetensors_metadata(st, TD_CHECKPOINT_META_PARAM);
  if (td_mlp_param_parse(pz, &cfg->param))
    return td_err_set(err, TD_EINVAL, "__metadata__." TD_CHECKPOINT_META_PARAM,
                      "checkpoint: unknown parameterization '%.40s'", pz);
  static const char *const keys[3] = {"sigma_w2", "sigma_b2", "base_width"};
  double *dst[3] = {&cfg->sigma_w2, &cfg->sigma_b2, &cfg->base_width};
  int need[3] = {cfg->param == TD_PARAM_NTK, cfg->param == TD_PARAM_NTK,
                 cfg->param == TD_PARAM_MUP};
  for (int i = 0; i < 3; i++) {
    if (!need[i]) continue;
    const char *v = td_safetensors_metadata(st, keys[i]);
    char *end = NULL;
    double x = v ? strtod(v, &end) : NAN;
    if (!v || !end || *end || !isfinite(x) || x < 0)
      return td_err_set(err, TD_EINVAL, keys[i], "checkpoint: parameterization %s needs a "
                        "finite metadata '%s' >= 0", pz, keys[i]);
    *dst[i] = x;
  }
  return 0;
}

int td_checkpoint_load_state(const td_mlp *m, const void *buf, size_t len, double *params,
                             td_optim *opt, json_t **metadata, td_err *err) {
  if (metadata) *metadata = NULL;
  if (!m || !buf || !params) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  if (opt && td_optim_n_params(opt) != m->n_params)
    return td_err_set(err, TD_EINVAL, "optimizer", "checkpoint: the optimizer has %zu "
                      "parameters, the model %zu", td_optim_n_params(opt), m->n_params);
  td_safetensors *st = NULL;
  int rc = td_safetensors_parse(buf, len, &st, err);
  if (rc) return rc;
  const int cap = ckpt_cap(m);
  const size_t np1 = m->n_params ? m->n_params : 1;
  const char *names[CKPT_MAX_STATE] = {0};
  double *sv[CKPT_MAX_STATE] = {0}; /* scratch copies of the used state vectors */
  long opt_step = 0;
  ckpt_tensor *t = calloc((size_t)cap, sizeof *t);
  double *bufs = m->n_buffers ? malloc(m->n_buffers * sizeof *bufs) : NULL;
  double *pcopy = malloc(np1 * sizeof *pcopy);
  if (!t || (m->n_buffers && !bufs) || !pcopy) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
    goto out;
  }
  for (int i = 0; opt && i < CKPT_MAX_STATE; i++) {
    if (!td_optim_state(opt, i)) continue;
    names[i] = td_optim_state_name(opt, i);
    if (!(sv[i] = malloc(np1 * sizeof(double)))) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
      goto out;
    }
    memcpy(sv[i], td_optim_state(opt, i), m->n_params * sizeof(double));
  }
  /* Everything is read into copies first, so that nothing changes on error. */
  if (m->n_buffers) memcpy(bufs, m->buffers, m->n_buffers * sizeof *bufs);
  memcpy(pcopy, params, m->n_params * sizeof *pcopy);
  td_mlp shadow = *m;
  shadow.buffers = bufs;
  int nt = ckpt_all(&shadow, pcopy, names, sv, t);
  if (nt < 0) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "checkpoint: inconsistent layer list");
    goto out;
  }
  if (!rc) { /* the parameterization: the same function needs the same multipliers */
    td_mlp_cfg pc = m->cfg;
    rc = meta_param(st, &pc, err);
    const double mb = m->cfg.base_width > 0 ? m->cfg.base_width : 1.0;
    if (!rc && (pc.param != m->cfg.param ||
                (pc.param == TD_PARAM_NTK &&
                 (pc.sigma_w2 != m->cfg.sigma_w2 || pc.sigma_b2 != m->cfg.sigma_b2)) ||
                (pc.param == TD_PARAM_MUP && pc.base_width != mb)))
      rc = td_err_set(err, TD_EINVAL, TD_CHECKPOINT_META_PARAM,
                      "checkpoint: written under parameterization %s, the model is %s (with "
                      "its sigma_w2, sigma_b2 or base_width): a different function",
                      td_mlp_param_name(pc.param), td_mlp_param_name(m->cfg.param));
  }
  if (!rc && opt) { /* the optimizer: same name, and its step count */
    const char *on = td_safetensors_metadata(st, TD_CHECKPOINT_META_OPTIMIZER);
    const char *os = td_safetensors_metadata(st, TD_CHECKPOINT_META_OPTIMIZER_STEP);
    char *end = NULL;
    if (!on)
      rc = td_err_set(err, TD_EINVAL, TD_CHECKPOINT_META_OPTIMIZER, "checkpoint: no optimizer "
                      "state (metadata '%s' absent); the job's optimizer is '%s'",
                      TD_CHECKPOINT_META_OPTIMIZER, td_optim_name(opt));
    else if (strcmp(on, td_optim_name(opt)))
      rc = td_err_set(err, TD_EINVAL, TD_CHECKPOINT_META_OPTIMIZER, "checkpoint: the optimizer "
                      "state is of '%.40s', the job's optimizer is '%s'", on, td_optim_name(opt));
    else if (!os || !*os || (opt_step = strtol(os, &end, 10)) < 0 || *end)
      rc = td_err_set(err, TD_EINVAL, TD_CHECKPOINT_META_OPTIMIZER_STEP, "checkpoint: metadata "
                      "'%s' must be a step count >= 0", TD_CHECKPOINT_META_OPTIMIZER_STEP);
  }
  /* Names: every tensor of the file is expected, or the state of another optimizer slot. */
  size_t n = td_safetensors_count(st);
  for (size_t i = 0; i < n && !rc; i++) {
    const td_safetensors_tensor *x = td_safetensors_at(st, i);
    int known = 0;
    for (int k = 0; k < nt && !known; k++) known = strcmp(t[k].name, x->name) == 0;
    if (!known && (strncmp(x->name, "optimizer.", 10) || own_state_tensor(x->name, names)))
      rc = td_err_set(err, TD_EINVAL, x->name, "checkpoint: unexpected tensor '%s'", x->name);
  }
  /* Presence, dtype and shape of every expected tensor; then read and check finiteness. */
  for (int k = 0; k < nt && !rc; k++) {
    const char *name = t[k].name;
    const td_safetensors_tensor *x = td_safetensors_find(st, name);
    int fdt = x && (!strcmp(x->dtype, "F64") || !strcmp(x->dtype, "F32"));
    int same = x && x->ndim == t[k].ndim;
    for (size_t d = 0; same && d < t[k].ndim; d++) same = x->shape[d] == t[k].shape[d];
    if (!x && t[k].optional) continue;
    if (!x) {
      rc = td_err_set(err, TD_ENOTFOUND, name, "checkpoint: tensor '%s' missing", name);
    } else if (t[k].optional && x->ndim == 0 && x->numel == 1 && !fdt) {
      *t[k].data = 0.0; /* torch writes num_batches_tracked as I64: not read, restarts at 0 */
    } else if (!fdt) {
      rc = td_err_set(err, TD_EINVAL, name, "checkpoint: tensor '%s' has dtype %s (F64 or F32 "
                      "expected)", name, x->dtype);
    } else if (!same) {
      char want[96], got[96];
      shape_str(want, sizeof want, t[k].ndim, t[k].shape);
      shape_str(got, sizeof got, x->ndim, x->shape);
      rc = td_err_set(err, TD_EINVAL, name, "checkpoint: tensor '%s' has shape %s, the model "
                      "expects %s", name, got, want);
    } else {
      rc = td_safetensors_read_f64(st, name, t[k].ndim, t[k].shape, t[k].data, err);
      size_t numel = x->numel;
      for (size_t j = 0; j < numel && !rc; j++)
        if (!isfinite(t[k].data[j]))
          rc = td_err_set(err, TD_EINVAL, name, "checkpoint: tensor '%s' has a non-finite "
                          "value (%g) at flat index %zu", name, t[k].data[j], j);
    }
  }
  if (!rc && metadata) {
    const json_t *mo = td_safetensors_metadata_object(st);
    if (!(*metadata = mo ? json_deep_copy(mo) : json_object()))
      rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
  }
  if (!rc) {
    memcpy(params, pcopy, m->n_params * sizeof *pcopy);
    if (m->n_buffers) memcpy(m->buffers, bufs, m->n_buffers * sizeof *bufs);
    for (int i = 0; opt && i < CKPT_MAX_STATE; i++)
      if (sv[i]) memcpy(td_optim_state(opt, i), sv[i], m->n_params * sizeof(double));
    if (opt) td_optim_set_steps(opt, opt_step);
  }
out:
  for (int i = 0; i < CKPT_MAX_STATE; i++) free(sv[i]);
  free(pcopy);
  free(t);
  free(bufs);
  td_safetensors_destroy(st);
  return rc;
}

int td_checkpoint_load(const td_mlp *m, const void *buf, size_t len, double *params,
                       td_err *err) {
  return td_checkpoint_load_state(m, buf, len, params, NULL, NULL, err);
}


int td_checkpoint_cfg(const void *buf, size_t len, td_mlp_cfg *cfg, td_err *err) {
  if (!buf || !cfg) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  memset(cfg, 0, sizeof *cfg);
  td_safetensors *st = NULL;
  int rc = td_safetensors_parse(buf, len, &st, err);
  if (rc) return rc;
  int nl = 0;
  size_t prev_out = 0;
  char name[40];
  for (;; nl++) {
    snprintf(name, sizeof name, "layers.%d.weight", nl);
    const td_safetensors_tensor *t = td_safetensors_find(st, name);
    if (!t) break;
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > 10000000 ||
        t->shape[1] > 10000000) {
      rc = td_err_set(err, TD_EINVAL, name, "checkpoint: '%s' is not a (out, in) matrix", name);
      break;
    }
    if (nl > TD_MLP_MAX_HIDDEN) {
      rc = td_err_set(err, TD_EINVAL, name, "checkpoint: more than %d hidden layers",
                      TD_MLP_MAX_HIDDEN);
      break;
    }
    if (nl == 0) cfg->in_dim = (int)t->shape[1];
    else if (t->shape[1] != prev_out) {
      rc = td_err_set(err, TD_EINVAL, name, "checkpoint: '%s' has %zu inputs, layer %d has %zu "
                      "outputs", name, t->shape[1], nl - 1, prev_out);
      break;
    } else cfg->hidden[nl - 1] = (int)prev_out;
    prev_out = t->shape[0];
  }
  if (!rc && nl == 0)
    rc = td_err_set(err, TD_EINVAL, "layers.0.weight", "checkpoint: no layers.0.weight");
  if (!rc) {
    cfg->n_hidden = nl - 1;
    cfg->out_dim = (int)prev_out;
    cfg->init_scale = 1.0;
    const char *a = td_safetensors_metadata(st, "activation");
    if (td_mlp_act_parse(a ? a : "relu", &cfg->act))
      rc = td_err_set(err, TD_EINVAL, "__metadata__.activation",
                      "checkpoint: unknown activation '%s'", a);
  }
  if (!rc) rc = meta_param(st, cfg, err);
  if (!rc) { /* normalization: the metadata, else inferred from the norms.0.* tensors */
    const char *nm = td_safetensors_metadata(st, "norm");
    if (!nm && cfg->n_hidden > 0)
      nm = td_safetensors_find(st, "norms.0.running_mean") ? "batchnorm"
           : td_safetensors_find(st, "norms.0.weight")     ? "layernorm"
                                                            : "none";
    if (td_mlp_norm_parse(nm ? nm : "none", &cfg->norm))
      rc = td_err_set(err, TD_EINVAL, "__metadata__.norm", "checkpoint: unknown norm '%s'", nm);
    const char *ne = td_safetensors_metadata(st, "norm_eps");
    if (!rc && ne) {
      char *end = NULL;
      double v = strtod(ne, &end);
      if (!end || *end || !(v >= 0) || v > 1e300)
        rc = td_err_set(err, TD_EINVAL, "__metadata__.norm_eps", "checkpoint: bad norm_eps '%s'",
                        ne);
      else cfg->norm_eps = v;
    }
  }
  td_safetensors_destroy(st);
  return rc;
}

int td_checkpoint_save_file(const char *path, const td_mlp *m, const double *params,
                            const json_t *metadata, td_err *err) {
  return td_checkpoint_save_file_state(path, m, params, NULL, metadata, err);
}

int td_checkpoint_save_file_state(const char *path, const td_mlp *m, const double *params,
                                  const td_optim *opt, const json_t *metadata, td_err *err) {
  if (!path) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: no path");
  unsigned char *buf = NULL;
  size_t len = 0;
  int rc = td_checkpoint_save_state(m, params, opt, metadata, &buf, &len, err);
  if (rc) return rc;
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 8);
  if (!tmp) {
    free(buf);
    return td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
  }
  memcpy(tmp, path, pl);
  memcpy(tmp + pl, ".tmp", 5);
  FILE *f = fopen(tmp, "wb");
  if (!f) rc = td_err_set(err, TD_EIO, NULL, "checkpoint: cannot write %s: %s", tmp, strerror(errno));
  else {
    int bad = fwrite(buf, 1, len, f) != len;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path)) {
      rc = td_err_set(err, TD_EIO, NULL, "checkpoint: cannot write %s", path);
      remove(tmp);
    }
  }
  free(tmp);
  free(buf);
  return rc;
}

int td_checkpoint_load_file(const char *path, const td_mlp *m, double *params, td_err *err) {
  if (!path) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: no path");
  FILE *f = fopen(path, "rb");
  if (!f)
    return td_err_set(err, errno == ENOENT ? TD_ENOTFOUND : TD_EIO, NULL,
                      "checkpoint: cannot open %s: %s", path, strerror(errno));
  int rc = 0;
  unsigned char *buf = NULL;
  long sz = -1;
  if (fseek(f, 0, SEEK_END) == 0) sz = ftell(f);
  if (sz < 0 || fseek(f, 0, SEEK_SET) != 0)
    rc = td_err_set(err, TD_EIO, NULL, "checkpoint: cannot size %s", path);
  else if ((size_t)sz > CKPT_MAX_FILE)
    rc = td_err_set(err, TD_ELIMIT, NULL, "checkpoint: %s is larger than 4 GiB", path);
  else if (!(buf = malloc(sz > 0 ? (size_t)sz : 1)))
    rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
  else if (fread(buf, 1, (size_t)sz, f) != (size_t)sz)
    rc = td_err_set(err, TD_EIO, NULL, "checkpoint: cannot read %s", path);
  fclose(f);
  if (!rc) rc = td_checkpoint_load(m, buf, (size_t)sz, params, err);
  free(buf);
  return rc;
}

int td_checkpoint_params_cfg(const json_t *params, td_mlp_cfg *cfg, td_err *err) {
  if (!cfg) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  memset(cfg, 0, sizeof *cfg);
  if (!json_is_object(td_param_get(params, "model")))
    return td_err_set(err, TD_ENOTFOUND, "params.model", "this kind trains no network");
  const char *dn = td_param_str(params, "data.name", "fashion-mnist");
  if (!strcmp(dn, "synthetic")) {
    cfg->in_dim = (int)td_param_int(params, "data.d", 20);
    cfg->out_dim = 1;
  } else if (!strcmp(dn, "fashion-mnist")) {
    cfg->in_dim = 784;
    cfg->out_dim = 10;
  } else {
    return td_err_set(err, TD_EINVAL, "params.data.name", "checkpoint: unknown dataset '%.40s'",
                      dn);
  }
  const json_t *hid = td_param_get(params, "model.hidden");
  cfg->n_hidden = json_is_array(hid) ? (int)json_array_size(hid) : 0;
  if (cfg->n_hidden > TD_MLP_MAX_HIDDEN)
    return td_err_set(err, TD_EINVAL, "params.model.hidden", "at most %d hidden layers",
                      TD_MLP_MAX_HIDDEN);
  for (int i = 0; i < cfg->n_hidden; i++) {
    const json_t *w = json_array_get(hid, (size_t)i);
    if (!json_is_integer(w) || json_integer_value(w) < 1 || json_integer_value(w) > 100000000)
      return td_err_set(err, TD_EINVAL, "params.model.hidden", "hidden widths must be integers "
                        ">= 1");
    cfg->hidden[i] = (int)json_integer_value(w);
  }
  if (td_mlp_act_parse(td_param_str(params, "model.activation", "relu"), &cfg->act))
    return td_err_set(err, TD_EINVAL, "params.model.activation", "unknown activation");
  if (td_mlp_norm_parse(td_param_str(params, "model.norm", "none"), &cfg->norm))
    return td_err_set(err, TD_EINVAL, "params.model.norm", "unknown normalization");
  cfg->norm_eps = td_param_num(params, "model.norm_eps", 0.0);
  cfg->init_scale = 1.0;
  if (td_mlp_param_parse(td_param_str(params, "model.parameterization", NULL), &cfg->param))
    return td_err_set(err, TD_EINVAL, "params.model.parameterization",
                      "unknown parameterization");
  cfg->sigma_w2 = td_param_num(params, "model.sigma_w2", 2.0);
  cfg->sigma_b2 = td_param_num(params, "model.sigma_b2", 0.1);
  cfg->base_width = td_param_num(params, "model.base_width", 1.0);
  return 0;
}

int td_checkpoint_check_params(const json_t *params, const void *buf, size_t len, int optimizer,
                               td_err *err) {
  td_mlp_cfg cfg;
  int rc = td_checkpoint_params_cfg(params, &cfg, err);
  if (rc) return rc;
  td_mlp *m = NULL;
  if ((rc = td_mlp_create(&cfg, &m, err))) return rc;
  json_t *meta = NULL;
  rc = td_checkpoint_load_state(m, buf, len, m->params, NULL, &meta, err);
  if (!rc && optimizer) {
    const char *want = td_param_str(params, "optimizer.name", "sgd");
    const char *on = json_string_value(json_object_get(meta, TD_CHECKPOINT_META_OPTIMIZER));
    if (!on)
      rc = td_err_set(err, TD_EINVAL, TD_CHECKPOINT_META_OPTIMIZER, "checkpoint: no optimizer "
                      "state (metadata '%s' absent)", TD_CHECKPOINT_META_OPTIMIZER);
    else if (strcmp(on, want))
      rc = td_err_set(err, TD_EINVAL, TD_CHECKPOINT_META_OPTIMIZER, "checkpoint: the optimizer "
                      "state is of '%.40s', params.optimizer.name is '%.40s'", on, want);
  }
  json_decref(meta);
  td_mlp_destroy(m);
  return rc;
}
