/* checkpoint.c: MLP parameters to and from safetensors (F64) in the torch.nn.Linear layout. */
#include "checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define CKPT_MAX_FILE ((size_t)4 << 30)

static const char *act_name(td_act a) {
  return a == TD_ACT_RELU ? "relu" : a == TD_ACT_TANH ? "tanh" : "linear";
}

int td_checkpoint_save(const td_mlp *m, const double *params, const json_t *metadata,
                       unsigned char **buf, size_t *len, td_err *err) {
  if (buf) *buf = NULL;
  if (len) *len = 0;
  if (!m || !params || !buf || !len)
    return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  if (metadata && !json_is_object(metadata))
    return td_err_set(err, TD_EINVAL, "__metadata__", "checkpoint: metadata must be an object");
  const int nl = m->n_linear;
  td_safetensors_entry *e = calloc((size_t)(2 * nl), sizeof *e);
  char (*names)[40] = calloc((size_t)(2 * nl), sizeof *names);
  size_t (*shapes)[2] = calloc((size_t)(2 * nl), sizeof *shapes);
  json_t *meta = metadata ? json_deep_copy(metadata) : json_object();
  int rc = 0;
  if (!e || !names || !shapes || !meta) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "checkpoint: out of memory");
    goto out;
  }
  if (!json_object_get(meta, "format")) json_object_set_new(meta, "format", json_string("pt"));
  if (!json_object_get(meta, "activation"))
    json_object_set_new(meta, "activation", json_string(act_name(m->cfg.act)));
  for (int j = 0; j < nl; j++) {
    double *W = NULL, *b = NULL;
    const td_layer *L = td_mlp_linear(m, j, (double *)params, &W, &b);
    if (!L) {
      rc = td_err_set(err, TD_EINTERNAL, NULL, "checkpoint: linear layer %d missing", j);
      goto out;
    }
    snprintf(names[2 * j], sizeof names[0], "layers.%d.weight", j);
    snprintf(names[2 * j + 1], sizeof names[0], "layers.%d.bias", j);
    shapes[2 * j][0] = (size_t)L->n_out;
    shapes[2 * j][1] = (size_t)L->n_in;
    shapes[2 * j + 1][0] = (size_t)L->n_out;
    e[2 * j] = (td_safetensors_entry){names[2 * j], 2, shapes[2 * j], W};
    e[2 * j + 1] = (td_safetensors_entry){names[2 * j + 1], 1, shapes[2 * j + 1], b};
  }
  rc = td_safetensors_write(e, (size_t)(2 * nl), meta, buf, len, err);
out:
  json_decref(meta);
  free(e);
  free(names);
  free(shapes);
  return rc;
}

/* Parse "layers.<j>.weight" / "layers.<j>.bias": returns j (>= 0) and *is_bias, or -1. */
static int parse_name(const char *s, int *is_bias) {
  if (strncmp(s, "layers.", 7)) return -1;
  s += 7;
  if (*s < '0' || *s > '9' || (s[0] == '0' && s[1] >= '0' && s[1] <= '9')) return -1;
  long j = 0;
  while (*s >= '0' && *s <= '9') {
    j = j * 10 + (*s++ - '0');
    if (j > 1000000) return -1;
  }
  if (!strcmp(s, ".weight")) *is_bias = 0;
  else if (!strcmp(s, ".bias")) *is_bias = 1;
  else return -1;
  return (int)j;
}

int td_checkpoint_load(const td_mlp *m, const void *buf, size_t len, double *params,
                       td_err *err) {
  if (!m || !buf || !params) return td_err_set(err, TD_EINVAL, NULL, "checkpoint: bad arguments");
  td_safetensors *st = NULL;
  int rc = td_safetensors_parse(buf, len, &st, err);
  if (rc) return rc;
  /* First check everything (names, shapes, dtypes), then copy: all or nothing. */
  size_t n = td_safetensors_count(st);
  for (size_t i = 0; i < n && !rc; i++) {
    const td_safetensors_tensor *t = td_safetensors_at(st, i);
    int is_bias = 0, j = parse_name(t->name, &is_bias);
    if (j < 0 || j >= m->n_linear)
      rc = td_err_set(err, TD_EINVAL, t->name, "checkpoint: unexpected tensor '%s'", t->name);
  }
  for (int j = 0; j < m->n_linear && !rc; j++) {
    double *W = NULL, *b = NULL;
    const td_layer *L = td_mlp_linear(m, j, params, &W, &b);
    char name[40];
    for (int k = 0; k < 2 && !rc; k++) {
      snprintf(name, sizeof name, k ? "layers.%d.bias" : "layers.%d.weight", j);
      const td_safetensors_tensor *t = td_safetensors_find(st, name);
      size_t want0 = (size_t)L->n_out, want1 = (size_t)L->n_in;
      if (!t)
        rc = td_err_set(err, TD_ENOTFOUND, name, "checkpoint: tensor '%s' missing", name);
      else if (strcmp(t->dtype, "F64") && strcmp(t->dtype, "F32"))
        rc = td_err_set(err, TD_EINVAL, name, "checkpoint: '%s' has dtype %s (F64 or F32)", name,
                        t->dtype);
      else if (t->ndim != (size_t)(k ? 1 : 2) || t->shape[0] != want0 ||
               (!k && t->shape[1] != want1))
        rc = td_err_set(err, TD_EINVAL, name,
                        k ? "checkpoint: '%s' must have shape (%zu)"
                          : "checkpoint: '%s' must have shape (%zu, %zu)",
                        name, want0, want1);
    }
  }
  for (int j = 0; j < m->n_linear && !rc; j++) {
    double *W = NULL, *b = NULL;
    const td_layer *L = td_mlp_linear(m, j, params, &W, &b);
    char name[40];
    size_t shw[2] = {(size_t)L->n_out, (size_t)L->n_in};
    snprintf(name, sizeof name, "layers.%d.weight", j);
    rc = td_safetensors_read_f64(st, name, 2, shw, W, err);
    snprintf(name, sizeof name, "layers.%d.bias", j);
    if (!rc) rc = td_safetensors_read_f64(st, name, 1, shw, b, err);
  }
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
