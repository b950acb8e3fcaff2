/* fuzz_safetensors.c: libFuzzer harness of the safetensors parser (td_safetensors_parse and
 * its readers, core/nn/safetensors.h) and of the checkpoint loader on top of it
 * (td_checkpoint_cfg, td_checkpoint_load, core/nn/checkpoint.h). Input: the bytes of a
 * safetensors file, as a user would upload it. Checks, besides the sanitizers:
 *   - a failure is clean: a negative TD_* code, *st NULL, terminated td_err strings;
 *   - an accepted file is accounted for byte by byte, independently of the parser: the
 *     8-byte little-endian header length N fits, and the tensors (numel = prod(shape),
 *     nbytes = numel * dtype size) tile the N + 8 .. len data buffer exactly;
 *   - every tensor is found by its name; a readable one (F64, F32) reads back exactly the
 *     stored bytes (F64 bitwise, F32 converted exactly), a wrong shape or another dtype is
 *     refused and leaves the output untouched;
 *   - round trip: the readable tensors written again with td_safetensors_write parse back
 *     to the same names, shapes and bits;
 *   - td_checkpoint_load against a fixed small model (4-3-2, and the same with LayerNorm and
 *     BatchNorm) and against the architecture td_checkpoint_cfg reads from the file (when
 *     small): on failure params and buffers are untouched; on success each loaded tensor
 *     equals what td_safetensors_read_f64 gives for it, and save + load reproduces the
 *     parameters bitwise. */
#include <stdint.h>

#include "nn/checkpoint.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_READ ((size_t)1 << 20) /* elements read back per tensor (memory bound) */

static void check_err(int rc, const td_err *e) {
  FZ_ASSERT(rc < 0, "rc %d is not a negative TD_* code", rc);
  FZ_ASSERT(memchr(e->msg, 0, sizeof e->msg) && memchr(e->field, 0, sizeof e->field),
            "td_err not terminated");
}

static uint64_t le64(const uint8_t *p) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; i--) x = (x << 8) | p[i];
  return x;
}

static size_t dtype_bytes(const char *d) {
  static const char *const one[] = {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3"};
  static const char *const two[] = {"I16", "U16", "F16", "BF16"};
  for (size_t i = 0; i < 5; i++) if (!strcmp(d, one[i])) return 1;
  for (size_t i = 0; i < 4; i++) if (!strcmp(d, two[i])) return 2;
  if (!strcmp(d, "I32") || !strcmp(d, "U32") || !strcmp(d, "F32")) return 4;
  if (!strcmp(d, "F64") || !strcmp(d, "I64") || !strcmp(d, "U64")) return 8;
  return 0;
}

/* The parser's accepted view, checked against the raw bytes. */
static void check_parsed(const td_safetensors *st, const uint8_t *data, size_t size) {
  uint64_t hn = le64(data);
  FZ_ASSERT(size >= 8 && hn <= size - 8, "header length %llu, %zu bytes", (unsigned long long)hn,
            size);
  FZ_ASSERT(data[8] == '{', "header does not start with '{'");
  const uint8_t *buf = data + 8 + hn;
  size_t data_len = size - 8 - (size_t)hn, n = td_safetensors_count(st), covered = 0;
  for (size_t i = 0; i < n; i++) {
    const td_safetensors_tensor *t = td_safetensors_at(st, i);
    FZ_ASSERT(t && t->name, "tensor %zu missing", i);
    FZ_ASSERT(td_safetensors_find(st, t->name) == t, "find('%s') is another tensor", t->name);
    FZ_ASSERT(strcmp(t->name, "__metadata__") != 0, "__metadata__ parsed as a tensor");
    FZ_ASSERT(dtype_bytes(t->dtype) == t->elem_size && t->elem_size, "dtype %s size %zu",
              t->dtype, t->elem_size);
    FZ_ASSERT(t->ndim <= TD_SAFETENSORS_MAX_DIM, "rank %zu", t->ndim);
    /* numel and nbytes, recomputed in 128 bits */
    unsigned __int128 numel = 1;
    for (size_t d = 0; d < t->ndim; d++) numel *= t->shape[d];
    FZ_ASSERT(numel == t->numel, "'%s': numel %zu", t->name, t->numel);
    FZ_ASSERT(numel * t->elem_size == t->nbytes, "'%s': nbytes %zu", t->name, t->nbytes);
    FZ_ASSERT(t->offset <= data_len && t->nbytes <= data_len - t->offset, "'%s' out of the buffer",
              t->name);
    covered += t->nbytes;
    /* no two tensors share a byte */
    for (size_t j = 0; j < i; j++) {
      const td_safetensors_tensor *u = td_safetensors_at(st, j);
      FZ_ASSERT(!t->nbytes || !u->nbytes || t->offset + t->nbytes <= u->offset ||
                    u->offset + u->nbytes <= t->offset,
                "'%s' and '%s' overlap", t->name, u->name);
    }
  }
  FZ_ASSERT(covered == data_len, "tensors cover %zu of %zu data bytes", covered, data_len);

  for (size_t i = 0; i < n; i++) {
    const td_safetensors_tensor *t = td_safetensors_at(st, i);
    if (t->numel > MAX_READ) continue;
    double *out = malloc((t->numel + 1) * sizeof *out);
    if (!out) return;
    for (size_t k = 0; k <= t->numel; k++) out[k] = -7.25;
    td_err e;
    td_err_clear(&e);
    int f64 = !strcmp(t->dtype, "F64"), f32 = !strcmp(t->dtype, "F32");
    int rc = td_safetensors_read_f64(st, t->name, t->ndim, t->shape, out, &e);
    if (!f64 && !f32) {
      FZ_ASSERT(rc == TD_EINVAL, "'%s' of dtype %s read: %d", t->name, t->dtype, rc);
      for (size_t k = 0; k <= t->numel; k++) FZ_ASSERT(out[k] == -7.25, "written on error");
    } else {
      FZ_ASSERT(rc == 0, "'%s' (%s) not readable: %s", t->name, t->dtype, e.msg);
      const uint8_t *p = buf + t->offset;
      for (size_t k = 0; k < t->numel; k++) {
        double want;
        if (f64) {
          uint64_t u = le64(p + 8 * k);
          memcpy(&want, &u, 8);
        } else {
          uint32_t u = (uint32_t)p[4 * k] | (uint32_t)p[4 * k + 1] << 8 |
                       (uint32_t)p[4 * k + 2] << 16 | (uint32_t)p[4 * k + 3] << 24;
          float fl;
          memcpy(&fl, &u, 4);
          want = (double)fl;
        }
        FZ_ASSERT(memcmp(&want, &out[k], 8) == 0, "'%s'[%zu] differs", t->name, k);
      }
      FZ_ASSERT(out[t->numel] == -7.25, "'%s': wrote past numel", t->name);
      /* a wrong shape is refused, nothing written */
      size_t wrong[TD_SAFETENSORS_MAX_DIM + 1];
      memcpy(wrong, t->shape, t->ndim * sizeof *wrong);
      wrong[t->ndim] = 1;
      double keep = out[0];
      rc = td_safetensors_read_f64(st, t->name, t->ndim + 1, wrong, out, &e);
      FZ_ASSERT(rc == TD_EINVAL && memcmp(&keep, &out[0], 8) == 0, "rank+1 read: %d", rc);
    }
    free(out);
  }
  td_err e;
  FZ_ASSERT(td_safetensors_read_f64(st, "\x01no such tensor", 0, NULL, NULL, &e) == TD_ENOTFOUND,
            "a missing tensor was found");
  (void)td_safetensors_metadata(st, "format");
}

/* Write the readable tensors again and parse the result: same names, shapes and bits. */
static void check_round_trip(const td_safetensors *st) {
  size_t n = td_safetensors_count(st), m = 0, total = 0;
  for (size_t i = 0; i < n; i++) {
    const td_safetensors_tensor *t = td_safetensors_at(st, i);
    if (strcmp(t->dtype, "F64") && strcmp(t->dtype, "F32")) continue;
    if (t->numel > MAX_READ || !t->name[0]) return;
    total += t->numel;
    m++;
  }
  if (!m || total > MAX_READ) return;
  td_safetensors_entry *ent = calloc(m, sizeof *ent);
  double *vals = malloc((total ? total : 1) * sizeof *vals);
  const td_safetensors_tensor **src = calloc(m, sizeof *src);
  FZ_ASSERT(ent && vals && src, "oom");
  size_t k = 0, at = 0;
  td_err e;
  for (size_t i = 0; i < n; i++) {
    const td_safetensors_tensor *t = td_safetensors_at(st, i);
    if (strcmp(t->dtype, "F64") && strcmp(t->dtype, "F32")) continue;
    FZ_ASSERT(td_safetensors_read_f64(st, t->name, t->ndim, t->shape, vals + at, &e) == 0,
              "read");
    ent[k] = (td_safetensors_entry){t->name, t->ndim, t->shape, vals + at};
    src[k++] = t;
    at += t->numel;
  }
  unsigned char *buf = NULL;
  size_t len = 0;
  td_err_clear(&e);
  int rc = td_safetensors_write(ent, m, NULL, &buf, &len, &e);
  FZ_ASSERT(rc == 0, "td_safetensors_write refused what the parser accepted: %s (%s)", e.msg,
            e.field);
  td_safetensors *st2 = NULL;
  rc = td_safetensors_parse(buf, len, &st2, &e);
  FZ_ASSERT(rc == 0, "written file does not parse: %s", e.msg);
  FZ_ASSERT(td_safetensors_count(st2) == m, "count %zu, wrote %zu", td_safetensors_count(st2), m);
  double *back = malloc((total ? total : 1) * sizeof *back);
  FZ_ASSERT(back, "oom");
  for (size_t i = 0, off = 0; i < m; i++) {
    const td_safetensors_tensor *t = td_safetensors_find(st2, src[i]->name);
    FZ_ASSERT(t && !strcmp(t->dtype, "F64") && t->ndim == src[i]->ndim, "'%s' lost",
              src[i]->name);
    FZ_ASSERT(td_safetensors_read_f64(st2, t->name, t->ndim, src[i]->shape, back + off, &e) == 0,
              "read back '%s'", t->name);
    FZ_ASSERT(memcmp(back + off, vals + off, src[i]->numel * sizeof *back) == 0,
              "'%s' changed in the round trip", t->name);
    off += src[i]->numel;
  }
  free(back);
  td_safetensors_destroy(st2);
  free(buf);
  free(src);
  free(vals);
  free(ent);
}

/* td_checkpoint_load into model m: all or nothing, and consistent with the reader. */
static void check_load(const td_mlp *m, const uint8_t *data, size_t size) {
  size_t np = m->n_params, nb = m->n_buffers;
  double *p = malloc((np + 1) * sizeof *p), *keep = malloc((np + 1) * sizeof *keep);
  double *bkeep = malloc((nb + 1) * sizeof *bkeep);
  FZ_ASSERT(p && keep && bkeep, "oom");
  for (size_t i = 0; i < np; i++) p[i] = keep[i] = 0.5 + (double)i;
  if (nb) memcpy(bkeep, m->buffers, nb * sizeof *bkeep);
  td_err e;
  td_err_clear(&e);
  int rc = td_checkpoint_load(m, data, size, p, &e);
  if (rc) {
    check_err(rc, &e);
    FZ_ASSERT(memcmp(p, keep, np * sizeof *p) == 0, "params changed on error (%s)", e.msg);
    FZ_ASSERT(!nb || memcmp(m->buffers, bkeep, nb * sizeof *bkeep) == 0,
              "buffers changed on error (%s)", e.msg);
  } else {
    /* Save + load reproduces the params bitwise (the layout stays model.c's business). */
    unsigned char *buf = NULL;
    size_t len = 0;
    rc = td_checkpoint_save(m, p, NULL, &buf, &len, &e);
    FZ_ASSERT(rc == 0, "save after load: %s", e.msg);
    double *q = malloc((np + 1) * sizeof *q);
    FZ_ASSERT(q, "oom");
    for (size_t i = 0; i < np; i++) q[i] = -1.0;
    rc = td_checkpoint_load(m, buf, len, q, &e);
    FZ_ASSERT(rc == 0 && memcmp(p, q, np * sizeof *p) == 0, "save + load differs: %s", e.msg);
    /* and the loaded values are the file's: layers.0.bias read directly is somewhere in p */
    td_safetensors *st = NULL;
    FZ_ASSERT(td_safetensors_parse(data, size, &st, &e) == 0, "loaded but does not parse");
    const td_safetensors_tensor *t = td_safetensors_find(st, "layers.0.weight");
    FZ_ASSERT(t && t->numel <= np, "loaded without layers.0.weight");
    double *w = malloc((t->numel + 1) * sizeof *w);
    FZ_ASSERT(w, "oom");
    FZ_ASSERT(td_safetensors_read_f64(st, t->name, t->ndim, t->shape, w, &e) == 0, "read W0");
    int found = 0;
    for (size_t off = 0; off + t->numel <= np && !found; off++)
      found = memcmp(p + off, w, t->numel * sizeof *w) == 0;
    FZ_ASSERT(found, "layers.0.weight of the file is not in the loaded params");
    free(w);
    td_safetensors_destroy(st);
    free(q);
    free(buf);
    if (nb) memcpy(m->buffers, bkeep, nb * sizeof *bkeep); /* the next input starts clean */
  }
  free(bkeep);
  free(keep);
  free(p);
}

static td_mlp *small[3];

static void make_small(void) {
  for (int k = 0; k < 3; k++) {
    td_mlp_cfg c = {.in_dim = 4, .out_dim = 2, .n_hidden = 1, .hidden = {3}, .act = TD_ACT_RELU,
                    .init_scale = 1.0, .norm = (td_norm)k};
    td_err e;
    FZ_ASSERT(td_mlp_create(&c, &small[k], &e) == 0, "small model: %s", e.msg);
    td_mlp_init(small[k], 1);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!small[0]) make_small();
  td_safetensors *st = (td_safetensors *)&st; /* must be set to NULL on error */
  td_err e;
  td_err_clear(&e);
  int rc = td_safetensors_parse(data, size, &st, &e);
  if (rc) {
    check_err(rc, &e);
    FZ_ASSERT(st == NULL, "*st not NULL on error");
  } else {
    FZ_ASSERT(st, "no result");
    check_parsed(st, data, size);
    check_round_trip(st);
    td_safetensors_destroy(st);
  }
  for (int k = 0; k < 3; k++) check_load(small[k], data, size);

  td_mlp_cfg cfg;
  td_err_clear(&e);
  rc = td_checkpoint_cfg(data, size, &cfg, &e);
  if (rc) {
    check_err(rc, &e);
    return 0;
  }
  FZ_ASSERT(cfg.in_dim >= 1 && cfg.out_dim >= 1 && cfg.n_hidden >= 0 &&
                cfg.n_hidden <= TD_MLP_MAX_HIDDEN,
            "cfg in %d out %d hidden %d", cfg.in_dim, cfg.out_dim, cfg.n_hidden);
  double est = (double)cfg.in_dim + cfg.out_dim;
  for (int i = 0; i < cfg.n_hidden; i++) {
    FZ_ASSERT(cfg.hidden[i] >= 1, "hidden[%d] = %d", i, cfg.hidden[i]);
    est += cfg.hidden[i];
  }
  if (est * est > 4e6) return 0; /* the file is small; the model from it need not be */
  td_mlp *m = NULL;
  rc = td_mlp_create(&cfg, &m, &e);
  if (rc) {
    check_err(rc, &e);
    return 0;
  }
  td_mlp_init(m, 2);
  check_load(m, data, size);
  td_mlp_destroy(m);
  return 0;
}
