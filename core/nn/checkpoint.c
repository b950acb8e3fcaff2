/* checkpoint.c: MLP parameters to and from safetensors (F64) in the torch.nn.Linear layout. */
#include "nn/checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/safetensors.h"

#define CKPT_MAX_FILE ((size_t)4 << 30)

static const char *act_name(td_act a) {
  return a == TD_ACT_RELU ? "relu" : a == TD_ACT_TANH ? "tanh" : "linear";
}

/* The tensors of a model, in file order: per linear layer j layers.{j}.weight, .bias, and,
 * when layer j is followed by a norm layer, norms.{j}.weight, .bias (and for BatchNorm
 * .running_mean, .running_var, .num_batches_tracked, which point into m->buffers). */
typedef struct ckpt_tensor {
  char name[48];
  size_t ndim;
  size_t shape[2];
  double *data;
  int optional; /* num_batches_tracked: may be absent on load (and of any dtype) */
} ckpt_tensor;

/* Fill t (capacity 7 * n_linear) for params; returns the count or -1 (inconsistent model). */
static int ckpt_tensors(const td_mlp *m, double *params, ckpt_tensor *t) {
  int k = 0;
  for (int j = 0; j < m->n_linear; j++) {
    double *W = NULL, *b = NULL;
    const td_layer *L = td_mlp_linear(m, j, params, &W, &b);
    if (!L) return -1;
    t[k] = (ckpt_tensor){"", 2, {(size_t)L->n_out, (size_t)L->n_in}, W, 0};
    snprintf(t[k++].name, sizeof t[0].name, "layers.%d.weight", j);
    t[k] = (ckpt_tensor){"", 1, {(size_t)L->n_out, 0}, b, 0};
    snprintf(t[k++].name, sizeof t[0].name, "layers.%d.bias", j);
    double *g = NULL, *be = NULL;
    const td_layer *N = td_mlp_norm(m, j, params, &g, &be);
    if (!N) continue;
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, g, 0};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.weight", j);
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, be, 0};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.bias", j);
    double *rm = NULL, *rv = NULL, *cnt = NULL;
    if (!td_mlp_norm_buffers(m, j, &rm, &rv, &cnt)) continue;
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, rm, 0};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.running_mean", j);
    t[k] = (ckpt_tensor){"", 1, {(size_t)N->n_out, 0}, rv, 0};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.running_var", j);
    t[k] = (ckpt_tensor){"", 0, {0, 0}, cnt, 1};
    snprintf(t[k++].name, sizeof t[0].name, "norms.%d.num_batches_tracked", j);
  }
  return k;
}

int td_checkpoint_save(const td_mlp *m, const double *params, const json_t *metadata,
                       unsigned char **buf, size_t *len, td_err *err) {
  if (buf) *buf = NULL;
  if (len) *len = 0;
  if (!m || !params || !buf || !len)
    return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  if (metadata && !json_is_object(metadata))
    return td_err_set(err, TD_EINVAL, "__metadata__", "checkpoint: metadata must be an object");
  const int cap = 7 * m->n_linear;
  td_safetensors_entry *e = calloc((size_t)cap, sizeof *e);
  ckpt_tensor *t = calloc((size_t)cap, sizeof *t);
  json_t *meta = metadata ? json_deep_copy(metadata) : json_object();
  int rc = 0;
  if (!e || !t || !meta) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
    goto out;
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
  int nt = ckpt_tensors(m, (double *)params, t);
  if (nt < 0) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "checkpoint: inconsistent layer list");
    goto out;
  }
  for (int k = 0; k < nt; k++) e[k] = (td_safetensors_entry){t[k].name, t[k].ndim, t[k].shape, t[k].data};
  rc = td_safetensors_write(e, (size_t)nt, meta, buf, len, err);
out:
  json_decref(meta);
  free(e);
  free(t);
  return rc;
}

int td_checkpoint_load(const td_mlp *m, const void *buf, size_t len, double *params,
                       td_err *err) {
  if (!m || !buf || !params) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  td_safetensors *st = NULL;
  int rc = td_safetensors_parse(buf, len, &st, err);
  if (rc) return rc;
  const int cap = 7 * m->n_linear;
  ckpt_tensor *t = calloc((size_t)cap, sizeof *t);
  double *bufs = m->n_buffers ? malloc(m->n_buffers * sizeof *bufs) : NULL;
  if (!t || (m->n_buffers && !bufs)) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
    goto out;
  }
  /* Read the buffers into a copy first, so that nothing changes on error. */
  if (m->n_buffers) memcpy(bufs, m->buffers, m->n_buffers * sizeof *bufs);
  td_mlp shadow = *m;
  shadow.buffers = bufs;
  int nt = ckpt_tensors(&shadow, params, t);
  if (nt < 0) {
    rc = td_err_set(err, TD_EINTERNAL, NULL, "checkpoint: inconsistent layer list");
    goto out;
  }
  /* First check everything (names, shapes, dtypes), then copy: all or nothing. */
  size_t n = td_safetensors_count(st);
  for (size_t i = 0; i < n && !rc; i++) {
    const td_safetensors_tensor *x = td_safetensors_at(st, i);
    int known = 0;
    for (int k = 0; k < nt && !known; k++) known = strcmp(t[k].name, x->name) == 0;
    if (!known)
      rc = td_err_set(err, TD_EINVAL, x->name, "checkpoint: unexpected tensor '%s'", x->name);
  }
  for (int k = 0; k < nt && !rc; k++) {
    const char *name = t[k].name;
    const td_safetensors_tensor *x = td_safetensors_find(st, name);
    int fdt = x && (!strcmp(x->dtype, "F64") || !strcmp(x->dtype, "F32"));
    if (!x && t[k].optional) continue;
    if (!x) rc = td_err_set(err, TD_ENOTFOUND, name, "checkpoint: tensor '%s' missing", name);
    else if (t[k].optional && x->ndim == 0 && x->numel == 1) continue; /* any dtype */
    else if (!fdt)
      rc = td_err_set(err, TD_EINVAL, name, "checkpoint: '%s' has dtype %s (F64 or F32)", name,
                      x->dtype);
    else if (x->ndim != t[k].ndim || (t[k].ndim >= 1 && x->shape[0] != t[k].shape[0]) ||
             (t[k].ndim == 2 && x->shape[1] != t[k].shape[1]))
      rc = t[k].ndim == 2 ? td_err_set(err, TD_EINVAL, name,
                                       "checkpoint: '%s' must have shape (%zu, %zu)", name,
                                       t[k].shape[0], t[k].shape[1])
         : t[k].ndim == 1 ? td_err_set(err, TD_EINVAL, name,
                                       "checkpoint: '%s' must have shape (%zu)", name,
                                       t[k].shape[0])
                          : td_err_set(err, TD_EINVAL, name, "checkpoint: '%s' must be a scalar",
                                       name);
  }
  /* Parameters go to a scratch copy too: a read error half way must leave params intact. */
  double *pcopy = NULL;
  if (!rc && !(pcopy = malloc((m->n_params ? m->n_params : 1) * sizeof *pcopy)))
    rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
  if (!rc) {
    memcpy(pcopy, params, m->n_params * sizeof *pcopy);
    nt = ckpt_tensors(&shadow, pcopy, t);
  }
  for (int k = 0; k < nt && !rc; k++) {
    const td_safetensors_tensor *x = td_safetensors_find(st, t[k].name);
    if (!x) continue; /* an optional tensor */
    if (t[k].optional && strcmp(x->dtype, "F64") && strcmp(x->dtype, "F32")) {
      *t[k].data = 0.0; /* torch writes num_batches_tracked as I64: not read, restarts at 0 */
      continue;
    }
    rc = td_safetensors_read_f64(st, t[k].name, t[k].ndim, t[k].shape, t[k].data, err);
  }
  if (!rc) {
    memcpy(params, pcopy, m->n_params * sizeof *pcopy);
    if (m->n_buffers) memcpy(m->buffers, bufs, m->n_buffers * sizeof *bufs);
  }
  free(pcopy);
out:
  free(t);
  free(bufs);
  td_safetensors_destroy(st);
  return rc;
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
  if (!path) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: no path");
  unsigned char *buf = NULL;
  size_t len = 0;
  int rc = td_checkpoint_save(m, params, metadata, &buf, &len, err);
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
