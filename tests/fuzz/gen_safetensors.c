/* gen_safetensors.c: writes the seed corpus of fuzz_safetensors into DIR: valid files made by
 * td_checkpoint_save (a 4-3-2 MLP, plain, LayerNorm, BatchNorm) and td_safetensors_write
 * (scalars, empty and rank-8 tensors, metadata), hand-written ones (F32, other dtypes, an I64
 * num_batches_tracked as torch writes it), and truncated and mutated copies (cut header, cut
 * data, header length too large, overlapping and gapped offsets, duplicate keys, bad dtype,
 * negative and overflowing shapes, trailing bytes). Not part of any build:
 *   cc -O1 -Icore $(pkg-config --cflags jansson) tests/fuzz/gen_safetensors.c \
 *      build/libtdcore.a $(pkg-config --libs openblas lapacke jansson zlib) -llbfgs -lm \
 *      -o build/gen_safetensors && build/gen_safetensors tests/fuzz/corpus/safetensors */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/checkpoint.h"
#include "nn/model.h"
#include "nn/safetensors.h"

static const char *dir;

static void put(const char *name, const void *buf, size_t len) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
    perror(path);
    exit(1);
  }
}

/* A file from a header string and a data buffer (header length = strlen, no padding). */
static void raw(const char *name, const char *hdr, const void *dat, size_t dlen) {
  size_t h = strlen(hdr);
  unsigned char *b = malloc(8 + h + dlen + 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(b + 8, hdr, h);
  if (dlen) memcpy(b + 8 + h, dat, dlen);
  put(name, b, 8 + h + dlen);
  free(b);
}

/* A valid file plus its truncations and byte mutations. */
static void with_variants(const char *base, const unsigned char *b, size_t len) {
  char n[128];
  snprintf(n, sizeof n, "%s.st", base);
  put(n, b, len);
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = (h << 8) | b[i];
  snprintf(n, sizeof n, "%s-cut-header.st", base);
  put(n, b, 8 + h / 2);
  snprintf(n, sizeof n, "%s-cut-data.st", base);
  put(n, b, len - 3);
  unsigned char *c = malloc(len + 8);
  memcpy(c, b, len);
  c[0] = (unsigned char)(c[0] + 8); /* header length beyond the header */
  snprintf(n, sizeof n, "%s-hlen.st", base);
  put(n, c, len);
  memcpy(c, b, len);
  memcpy(c + len, "\0\0\0\0\0\0\0\0", 8); /* trailing bytes */
  snprintf(n, sizeof n, "%s-trailing.st", base);
  put(n, c, len + 8);
  free(c);
}

/* A copy of the file b with the first `from` in its header replaced by `to` (the header is
 * re-padded with spaces to a multiple of 8 and its length rewritten). */
static void edited(const char *name, const unsigned char *b, size_t len, const char *from,
                   const char *to) {
  uint64_t h = 0;
  for (int i = 7; i >= 0; i--) h = (h << 8) | b[i];
  char *hdr = malloc(h + 1);
  memcpy(hdr, b + 8, h);
  hdr[h] = 0;
  char *at = strstr(hdr, from);
  if (!at) {
    fprintf(stderr, "%s: '%s' not in the header\n", name, from);
    exit(1);
  }
  *at = 0;
  size_t hl = strlen(hdr) + strlen(to) + strlen(at + strlen(from));
  size_t hp = (hl + 7) / 8 * 8, dl = len - 8 - h;
  unsigned char *c = malloc(8 + hp + dl + 1);
  for (int i = 0; i < 8; i++) c[i] = (unsigned char)((uint64_t)hp >> (8 * i));
  snprintf((char *)c + 8, hp + 1, "%s%s%s", hdr, to, at + strlen(from));
  size_t used = strlen((char *)c + 8);
  while (used > 0 && c[8 + used - 1] == ' ') used--; /* drop the old padding */
  memset(c + 8 + used, ' ', hp - used);
  if (dl) memcpy(c + 8 + hp, b + 8 + h, dl);
  hp = (used + 7) / 8 * 8; /* re-pad the trimmed header */
  for (int i = 0; i < 8; i++) c[i] = (unsigned char)((uint64_t)hp >> (8 * i));
  if (dl) memmove(c + 8 + hp, b + 8 + h, dl);
  put(name, c, 8 + hp + dl);
  free(c);
  free(hdr);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: gen_safetensors DIR\n");
    return 2;
  }
  dir = argv[1];
  td_err e;
  for (int k = 0; k < 3; k++) {
    td_mlp_cfg cfg = {.in_dim = 4, .out_dim = 2, .n_hidden = 1, .hidden = {3},
                      .act = TD_ACT_RELU, .init_scale = 1.0, .norm = (td_norm)k};
    td_mlp *m;
    if (td_mlp_create(&cfg, &m, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    td_mlp_init(m, 3);
    unsigned char *b;
    size_t len;
    if (td_checkpoint_save(m, m->params, NULL, &b, &len, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    static const char *names[] = {"ckpt-mlp", "ckpt-layernorm", "ckpt-batchnorm"};
    with_variants(names[k], b, len);
    if (k == 2) { /* torch's I64 counter (accepted, restarts at 0); a non-scalar one (refused) */
      const char *nbt = "\"norms.0.num_batches_tracked\":{\"dtype\":\"F64\",\"shape\":[]";
      edited("ckpt-batchnorm-nbt-i64.st", b, len, nbt,
             "\"norms.0.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[]");
      edited("ckpt-batchnorm-nbt-shape1.st", b, len, nbt,
             "\"norms.0.num_batches_tracked\":{\"dtype\":\"F64\",\"shape\":[1]");
      edited("ckpt-batchnorm-f32-mean.st", b, len, "\"norms.0.running_mean\":{\"dtype\":\"F64\"",
             "\"norms.0.running_mean\":{\"dtype\":\"I64\"");
    }
    free(b);
    td_mlp_destroy(m);
  }
  { /* two hidden layers, tanh: the architecture comes from the file */
    td_mlp_cfg cfg = {.in_dim = 5, .out_dim = 3, .n_hidden = 2, .hidden = {4, 2},
                      .act = TD_ACT_TANH, .init_scale = 1.0};
    td_mlp *m;
    if (td_mlp_create(&cfg, &m, &e)) return 1;
    td_mlp_init(m, 4);
    unsigned char *b;
    size_t len;
    if (td_checkpoint_save(m, m->params, NULL, &b, &len, &e)) return 1;
    put("ckpt-5-4-2-3-tanh.st", b, len);
    free(b);
    td_mlp_destroy(m);
  }
  { /* td_safetensors_write: a scalar, an empty tensor, a rank-8 tensor, metadata */
    double s = -0.0, v[6] = {1, -2.5, 1e-310, 3e300, 0.1, 7};
    size_t sh_empty[2] = {0, 5}, sh8[8] = {1, 1, 1, 1, 1, 1, 2, 3}, sh2[2] = {2, 3};
    td_safetensors_entry t[4] = {{"scalar", 0, NULL, &s},
                                 {"empty", 2, sh_empty, NULL},
                                 {"rank8", 8, sh8, v},
                                 {"m", 2, sh2, v}};
    json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "note", "seed");
    unsigned char *b;
    size_t len;
    if (td_safetensors_write(t, 4, meta, &b, &len, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    with_variants("write-mixed", b, len);
    edited("write-mixed-bf16.st", b, len, "\"m\":{\"dtype\":\"F64\",\"shape\":[2,3]",
           "\"m\":{\"dtype\":\"BF16\",\"shape\":[4,3,2]");
    free(b);
    if (td_safetensors_write(NULL, 0, NULL, &b, &len, &e)) return 1;
    put("write-empty.st", b, len);
    free(b);
    json_decref(meta);
  }
  /* hand-written */
  float f[6] = {1.5f, -2.0f, 0.1f, 3.4e38f, 1e-45f, 0.0f};
  raw("f32.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", f, 24);
  unsigned char z[64] = {0};
  raw("dtypes.st",
      "{\"b\":{\"dtype\":\"BOOL\",\"shape\":[2],\"data_offsets\":[0,2]},"
      "\"h\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[2,8]},"
      "\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
      "\"u\":{\"dtype\":\"U32\",\"shape\":[1,1],\"data_offsets\":[16,20]}}",
      z, 20);
  raw("torch-i64-nbt.st",
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"layers.0.weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]},"
      "\"layers.0.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"norms.0.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[16,24]}}",
      f, 24);
  raw("overlap.st",
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
      z, 8);
  raw("gap.st", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", z, 16);
  raw("dup-key.st",
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
      z, 8);
  raw("bad-dtype.st", "{\"a\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", z, 16);
  raw("neg-shape.st", "{\"a\":{\"dtype\":\"F64\",\"shape\":[-1],\"data_offsets\":[0,8]}}", z, 8);
  raw("ovf-shape.st",
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}",
      z, 0);
  raw("ovf-numel.st",
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952,8],\"data_offsets\":[0,0]}}", z, 0);
  raw("reversed.st", "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,0]}}", z, 8);
  raw("extra-key.st",
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8],\"x\":1}}", z, 8);
  raw("meta-not-string.st", "{\"__metadata__\":{\"k\":1}}", z, 0);
  raw("not-object.st", "[1,2,3]", z, 0);
  raw("chain-mismatch.st",
      "{\"layers.0.weight\":{\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[0,8]},"
      "\"layers.1.weight\":{\"dtype\":\"F64\",\"shape\":[1,2],\"data_offsets\":[8,24]}}",
      z, 24);
  raw("bad-activation.st",
      "{\"__metadata__\":{\"activation\":\"swish\",\"norm_eps\":\"1e-5x\"},"
      "\"layers.0.weight\":{\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[0,8]}}",
      z, 8);
  put("short.st", "\x02\0\0\0", 4);
  return 0;
}
