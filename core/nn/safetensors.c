/* safetensors.c: safetensors writer (F64) and hostile-input parser (F64/F32 readable). */
#include "nn/safetensors.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct td_safetensors {
  const unsigned char *data; /* start of the data buffer (borrowed) */
  size_t data_len;
  json_t *header;            /* owns the names */
  json_t *meta;              /* borrowed from header, or NULL */
  td_safetensors_tensor *t;
  size_t n;
};

/* Known dtypes and their element sizes (safetensors Dtype enum). */
static const struct {
  const char *name;
  size_t size;
} k_dtypes[] = {{"BOOL", 1}, {"U8", 1},   {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
                {"I16", 2},  {"U16", 2},  {"F16", 2}, {"BF16", 2},    {"I32", 4},
                {"U32", 4},  {"F32", 4},  {"F64", 8}, {"I64", 8},     {"U64", 8}};

static size_t dtype_size(const char *s) {
  for (size_t i = 0; i < sizeof k_dtypes / sizeof k_dtypes[0]; i++)
    if (!strcmp(s, k_dtypes[i].name)) return k_dtypes[i].size;
  return 0;
}

static void put_le64(unsigned char *p, uint64_t x) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(x >> (8 * i));
}
static uint64_t get_le64(const unsigned char *p) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; i--) x = (x << 8) | p[i];
  return x;
}
static uint32_t get_le32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* *out = a * b; returns 0, or -1 on size_t overflow. */
static int mul_ok(size_t a, size_t b, size_t *out) {
  if (a != 0 && b > SIZE_MAX / a) return -1;
  *out = a * b;
  return 0;
}

/* ---------------------------------------------------------------- writer */

/* A metadata object whose values are all strings. */
static int meta_ok(const json_t *m) {
  const char *k;
  const json_t *v;
  if (!json_is_object(m)) return 0;
  json_object_foreach((json_t *)m, k, v) if (!json_is_string(v)) return 0;
  return 1;
}

int td_safetensors_write(const td_safetensors_entry *tensors, size_t n, const json_t *metadata,
                         unsigned char **buf, size_t *len, td_err *err) {
  if (buf) *buf = NULL;
  if (len) *len = 0;
  if (!buf || !len || (n && !tensors))
    return td_err_set(err, TD_EINVAL, NULL, "safetensors: bad arguments");
  if (metadata && !meta_ok(metadata))
    return td_err_set(err, TD_EINVAL, "__metadata__", "metadata must be an object of strings");

  int rc = 0;
  json_t *root = json_object();
  char *hdr = NULL;
  if (!root) return td_err_set(err, TD_ENOMEM, NULL, "safetensors: out of memory");
  if (metadata && json_object_set_new(root, "__metadata__", json_deep_copy(metadata))) {
    rc = td_err_set(err, TD_ENOMEM, "__metadata__", "safetensors: out of memory");
    goto out;
  }
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    const td_safetensors_entry *e = &tensors[i];
    const char *nm = e->name ? e->name : "";
    if (!e->name || !e->name[0] || !strcmp(e->name, "__metadata__")) {
      rc = td_err_set(err, TD_EINVAL, nm, "tensor %zu: empty or reserved name", i);
      goto out;
    }
    if (json_object_get(root, e->name)) {
      rc = td_err_set(err, TD_EINVAL, nm, "duplicate tensor name '%s'", e->name);
      goto out;
    }
    if (e->ndim > TD_SAFETENSORS_MAX_DIM || (e->ndim && !e->shape)) {
      rc = td_err_set(err, TD_EINVAL, nm, "tensor '%s': rank %zu > %d or no shape", e->name,
                      e->ndim, TD_SAFETENSORS_MAX_DIM);
      goto out;
    }
    size_t numel = 1, nbytes;
    json_t *shape = json_array();
    for (size_t d = 0; shape && d < e->ndim; d++) {
      if (mul_ok(numel, e->shape[d], &numel) || e->shape[d] > (size_t)INT64_MAX) {
        json_decref(shape);
        rc = td_err_set(err, TD_ERANGE, nm, "tensor '%s': element count overflows", e->name);
        goto out;
      }
      if (json_array_append_new(shape, json_integer((json_int_t)e->shape[d]))) {
        json_decref(shape);
        shape = NULL;
      }
    }
    if (!shape) {
      rc = td_err_set(err, TD_ENOMEM, nm, "safetensors: out of memory");
      goto out;
    }
    if (mul_ok(numel, sizeof(double), &nbytes) || off > SIZE_MAX - nbytes ||
        off + nbytes > (size_t)INT64_MAX) {
      json_decref(shape);
      rc = td_err_set(err, TD_ERANGE, nm, "tensor '%s': byte size overflows", e->name);
      goto out;
    }
    if (numel && !e->data) {
      json_decref(shape);
      rc = td_err_set(err, TD_EINVAL, nm, "tensor '%s': data is NULL", e->name);
      goto out;
    }
    json_t *info = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F64", "shape", shape,
                             "data_offsets", (json_int_t)off, (json_int_t)(off + nbytes));
    /* set_new fails on invalid UTF-8 in the key (and consumes info either way). */
    if (!info || json_object_set_new(root, e->name, info)) {
      rc = td_err_set(err, TD_EINVAL, nm, "tensor %zu: name is not valid UTF-8 (or no memory)", i);
      goto out;
    }
    off += nbytes;
  }

  hdr = json_dumps(root, JSON_COMPACT);
  if (!hdr) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "safetensors: out of memory");
    goto out;
  }
  size_t hlen = strlen(hdr), hpad = (hlen + 7) / 8 * 8; /* data 8-byte aligned */
  if (hpad > TD_SAFETENSORS_MAX_HEADER || off > SIZE_MAX - 8 - hpad) {
    rc = td_err_set(err, TD_ERANGE, NULL, "safetensors: header of %zu bytes too large", hlen);
    goto out;
  }
  unsigned char *b = malloc(8 + hpad + off + 1); /* + 1: never malloc(0)-like edge cases */
  if (!b) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "safetensors: out of memory (%zu bytes)", off);
    goto out;
  }
  put_le64(b, (uint64_t)hpad);
  memcpy(b + 8, hdr, hlen);
  memset(b + 8 + hlen, ' ', hpad - hlen);
  unsigned char *p = b + 8 + hpad;
  for (size_t i = 0; i < n; i++) {
    const td_safetensors_entry *e = &tensors[i];
    size_t numel = 1;
    for (size_t d = 0; d < e->ndim; d++) numel *= e->shape[d];
    for (size_t j = 0; j < numel; j++, p += 8) {
      uint64_t u;
      memcpy(&u, &e->data[j], 8);
      put_le64(p, u);
    }
  }
  *buf = b;
  *len = 8 + hpad + off;
out:
  free(hdr);
  json_decref(root);
  return rc;
}

/* ---------------------------------------------------------------- reader */

void td_safetensors_destroy(td_safetensors *st) {
  if (!st) return;
  json_decref(st->header);
  free(st->t);
  free(st);
}

/* A JSON integer in [0, SIZE_MAX]. */
static int get_size(const json_t *v, size_t *out) {
  if (!json_is_integer(v)) return -1;
  json_int_t x = json_integer_value(v);
  if (x < 0 || (unsigned long long)x > SIZE_MAX) return -1;
  *out = (size_t)x;
  return 0;
}

/* Validate one tensor entry into *t. Returns 0 or TD_EINVAL (err set). */
static int parse_tensor(const char *name, const json_t *v, size_t data_len,
                        td_safetensors_tensor *t, td_err *err) {
  memset(t, 0, sizeof *t);
  t->name = name;
  if (!json_is_object(v) || json_object_size(v) != 3)
    return td_err_set(err, TD_EINVAL, name,
                      "tensor '%s': want an object with exactly dtype, shape, data_offsets", name);
  const json_t *dt = json_object_get(v, "dtype"), *sh = json_object_get(v, "shape");
  const json_t *of = json_object_get(v, "data_offsets");
  if (!json_is_string(dt) || !json_is_array(sh) || !json_is_array(of))
    return td_err_set(err, TD_EINVAL, name, "tensor '%s': missing or mistyped dtype/shape/"
                      "data_offsets", name);
  const char *ds = json_string_value(dt);
  t->elem_size = dtype_size(ds);
  if (!t->elem_size)
    return td_err_set(err, TD_EINVAL, name, "tensor '%s': unknown dtype '%.16s'", name, ds);
  snprintf(t->dtype, sizeof t->dtype, "%s", ds);
  t->ndim = json_array_size(sh);
  if (t->ndim > TD_SAFETENSORS_MAX_DIM)
    return td_err_set(err, TD_EINVAL, name, "tensor '%s': rank %zu > %d", name, t->ndim,
                      TD_SAFETENSORS_MAX_DIM);
  /* numel = prod(shape); the product of the non-zero dims must fit in size_t even when a
   * zero dim makes numel 0, so no consumer can overflow multiplying dims. */
  size_t prod = 1;
  int ovf = 0, zero = 0;
  for (size_t d = 0; d < t->ndim; d++) {
    if (get_size(json_array_get(sh, d), &t->shape[d]))
      return td_err_set(err, TD_EINVAL, name, "tensor '%s': shape[%zu] is not a non-negative "
                        "integer", name, d);
    if (t->shape[d] == 0) zero = 1;
    else if (mul_ok(prod, t->shape[d], &prod)) ovf = 1;
  }
  t->numel = zero ? 0 : prod;
  if (ovf || mul_ok(t->numel, t->elem_size, &t->nbytes))
    return td_err_set(err, TD_EINVAL, name, "tensor '%s': element count overflows", name);
  size_t b, e;
  if (json_array_size(of) != 2 || get_size(json_array_get(of, 0), &b) ||
      get_size(json_array_get(of, 1), &e) || b > e)
    return td_err_set(err, TD_EINVAL, name, "tensor '%s': data_offsets must be [begin, end] "
                      "with 0 <= begin <= end", name);
  if (e > data_len)
    return td_err_set(err, TD_EINVAL, name, "tensor '%s': data_offsets end %zu beyond the "
                      "%zu-byte data buffer", name, e, data_len);
  if (e - b != t->nbytes)
    return td_err_set(err, TD_EINVAL, name, "tensor '%s': %zu bytes at data_offsets but shape "
                      "x dtype needs %zu", name, e - b, t->nbytes);
  t->offset = b;
  return 0;
}

static int cmp_offset(const void *a, const void *b) {
  const td_safetensors_tensor *x = *(const td_safetensors_tensor *const *)a;
  const td_safetensors_tensor *y = *(const td_safetensors_tensor *const *)b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
  return 0;
}

int td_safetensors_parse(const void *buf, size_t len, td_safetensors **out, td_err *err) {
  if (out) *out = NULL;
  if (!buf || !out) return td_err_set(err, TD_EINVAL, NULL, "safetensors: bad arguments");
  const unsigned char *b = buf;
  if (len < 8) return td_err_set(err, TD_EINVAL, NULL, "safetensors: %zu bytes, need >= 8", len);
  uint64_t hn = get_le64(b);
  if (hn > len - 8)
    return td_err_set(err, TD_EINVAL, NULL, "safetensors: header length %llu exceeds the "
                      "%zu bytes that follow", (unsigned long long)hn, len - 8);
  if (hn > TD_SAFETENSORS_MAX_HEADER)
    return td_err_set(err, TD_ELIMIT, NULL, "safetensors: header length %llu exceeds %zu",
                      (unsigned long long)hn, TD_SAFETENSORS_MAX_HEADER);
  if (hn < 2 || b[8] != '{')
    return td_err_set(err, TD_EINVAL, NULL, "safetensors: header must be a JSON object");

  json_error_t je;
  json_t *root = json_loadb((const char *)b + 8, (size_t)hn, JSON_REJECT_DUPLICATES, &je);
  if (!root && strstr(je.text, "duplicate object key"))
    return td_err_set(err, TD_EINVAL, NULL, "safetensors: duplicate tensor name in the header: "
                      "%s (at byte %d)", je.text, je.position);
  if (!root)
    return td_err_set(err, TD_EINVAL, NULL, "safetensors: header JSON: %s (at byte %d)", je.text,
                      je.position);
  int rc = 0;
  td_safetensors_tensor **order = NULL;
  td_safetensors *st = calloc(1, sizeof *st);
  if (!st) {
    json_decref(root);
    return td_err_set(err, TD_ENOMEM, NULL, "safetensors: out of memory");
  }
  st->header = root;
  st->data = b + 8 + hn;
  st->data_len = len - 8 - (size_t)hn;
  if (!json_is_object(root)) {
    rc = td_err_set(err, TD_EINVAL, NULL, "safetensors: header must be a JSON object");
    goto fail;
  }
  size_t cap = json_object_size(root);
  st->t = calloc(cap ? cap : 1, sizeof *st->t);
  order = calloc(cap ? cap : 1, sizeof *order);
  if (!st->t || !order) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "safetensors: out of memory");
    goto fail;
  }
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (!strcmp(key, "__metadata__")) {
      if (!meta_ok(val)) {
        rc = td_err_set(err, TD_EINVAL, "__metadata__", "safetensors: __metadata__ must be an "
                        "object of strings");
        goto fail;
      }
      st->meta = val;
      continue;
    }
    rc = parse_tensor(key, val, st->data_len, &st->t[st->n], err);
    if (rc) goto fail;
    order[st->n] = &st->t[st->n];
    st->n++;
  }
  /* The tensors must tile [0, data_len) exactly (reference implementation's validate). */
  qsort(order, st->n, sizeof *order, cmp_offset);
  size_t at = 0;
  for (size_t i = 0; i < st->n; i++) {
    if (order[i]->offset != at) {
      rc = td_err_set(err, TD_EINVAL, order[i]->name, "safetensors: tensor '%s' starts at %zu, "
                      "expected %zu (%s)", order[i]->name, order[i]->offset, at,
                      order[i]->offset < at ? "overlap" : "gap");
      goto fail;
    }
    at += order[i]->nbytes;
  }
  if (at != st->data_len) {
    rc = td_err_set(err, TD_EINVAL, NULL, "safetensors: tensors cover %zu of %zu data bytes", at,
                    st->data_len);
    goto fail;
  }
  free(order);
  *out = st;
  return 0;
fail:
  free(order);
  td_safetensors_destroy(st);
  return rc;
}

size_t td_safetensors_count(const td_safetensors *st) { return st ? st->n : 0; }

const td_safetensors_tensor *td_safetensors_at(const td_safetensors *st, size_t i) {
  return st && i < st->n ? &st->t[i] : NULL;
}

const td_safetensors_tensor *td_safetensors_find(const td_safetensors *st, const char *name) {
  if (!st || !name) return NULL;
  for (size_t i = 0; i < st->n; i++)
    if (!strcmp(st->t[i].name, name)) return &st->t[i];
  return NULL;
}

const char *td_safetensors_metadata(const td_safetensors *st, const char *key) {
  if (!st || !st->meta || !key) return NULL;
  return json_string_value(json_object_get(st->meta, key));
}

const json_t *td_safetensors_metadata_object(const td_safetensors *st) {
  return st ? st->meta : NULL;
}

int td_safetensors_check_float(const td_safetensors *st, td_err *err) {
  if (!st) return td_err_set(err, TD_EINVAL, NULL, "safetensors: bad arguments");
  for (size_t k = 0; k < st->n; k++) {
    const td_safetensors_tensor *t = &st->t[k];
    int f64 = !strcmp(t->dtype, "F64");
    if (!f64 && strcmp(t->dtype, "F32"))
      return td_err_set(err, TD_EINVAL, t->name, "tensor '%s' has dtype %s; only F64 and F32 "
                        "are accepted", t->name, t->dtype);
    const unsigned char *p = st->data + t->offset;
    for (size_t i = 0; i < t->numel; i++) {
      double v;
      if (f64) {
        uint64_t u = get_le64(p + 8 * i);
        memcpy(&v, &u, 8);
      } else {
        uint32_t u = get_le32(p + 4 * i);
        float f;
        memcpy(&f, &u, 4);
        v = f;
      }
      if (!isfinite(v))
        return td_err_set(err, TD_EINVAL, t->name, "tensor '%s' has a non-finite value (%g) at "
                          "flat index %zu", t->name, v, i);
    }
  }
  return 0;
}

int td_safetensors_read_f64(const td_safetensors *st, const char *name, size_t ndim,
                            const size_t *shape, double *out, td_err *err) {
  const td_safetensors_tensor *t = td_safetensors_find(st, name);
  if (!t) return td_err_set(err, TD_ENOTFOUND, name, "no tensor named '%s'", name ? name : "");
  int same = t->ndim == ndim && (ndim == 0 || shape);
  for (size_t d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
  if (!same) {
    char got[128] = "", want[128] = "";
    for (size_t d = 0, o = 0; d < t->ndim && o < sizeof got; d++)
      o += (size_t)snprintf(got + o, sizeof got - o, d ? ",%zu" : "%zu", t->shape[d]);
    for (size_t d = 0, o = 0; shape && d < ndim && o < sizeof want; d++)
      o += (size_t)snprintf(want + o, sizeof want - o, d ? ",%zu" : "%zu", shape[d]);
    return td_err_set(err, TD_EINVAL, name, "tensor '%s' has shape (%s), expected (%s)", name,
                      got, want);
  }
  if (t->numel && !out) return td_err_set(err, TD_EINVAL, name, "out is NULL");
  const unsigned char *p = st->data + t->offset;
  if (!strcmp(t->dtype, "F64")) {
    for (size_t i = 0; i < t->numel; i++) {
      uint64_t u = get_le64(p + 8 * i);
      memcpy(&out[i], &u, 8);
    }
  } else if (!strcmp(t->dtype, "F32")) {
    for (size_t i = 0; i < t->numel; i++) {
      uint32_t u = get_le32(p + 4 * i);
      float f;
      memcpy(&f, &u, 4);
      out[i] = (double)f;
    }
  } else {
    return td_err_set(err, TD_EINVAL, name, "tensor '%s' has dtype %s; only F64 and F32 are "
                      "readable", name, t->dtype);
  }
  return 0;
}
