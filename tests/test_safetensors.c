/* test_safetensors.c: safetensors round trip (bit-exact, incl. NaN/Inf/-0), the exact byte
 * layout of a known file, F32 reading, and hostile inputs (every prefix, every header byte
 * flipped, and a catalogue of malformed headers). Pure logic: exact assertions.
 * Set TDLAB_ST_DUMP=path to also write a checkpoint for tests/safetensors_torch_check.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/safetensors.h"

/* A file from a header string and `data_len` bytes of data (byte i = i & 0xff). */
static unsigned char *mk(const char *hdr, size_t data_len, size_t *len) {
  size_t h = strlen(hdr);
  unsigned char *b = malloc(8 + h + data_len + 1);
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)h >> (8 * i));
  memcpy(b + 8, hdr, h);
  for (size_t i = 0; i < data_len; i++) b[8 + h + i] = (unsigned char)i;
  *len = 8 + h + data_len;
  return b;
}

static void expect_bad(const char *hdr, size_t data_len, int code) {
  size_t len;
  unsigned char *b = mk(hdr, data_len, &len);
  td_safetensors *st = (td_safetensors *)1;
  td_err err;
  td_err_clear(&err);
  int rc = td_safetensors_parse(b, len, &st, &err);
  if (rc != code) fail_msg("header %s: rc %d, want %d (%s)", hdr, rc, code, err.msg);
  assert_null(st);
  assert_true(strlen(err.msg) > 0);
  free(b);
}

/* A two-layer MLP checkpoint (torch.nn.Linear layout) plus odd tensors. */
static const size_t k_w0_shape[2] = {3, 4}, k_b0_shape[1] = {3}, k_w1_shape[2] = {2, 3},
                    k_b1_shape[1] = {2}, k_empty_shape[2] = {0, 5};
static double k_w0[12], k_b0[3], k_w1[6], k_b1[2], k_scalar = 42.5;

static void fill_values(void) {
  for (int i = 0; i < 12; i++) k_w0[i] = 0.1 * i - 0.55;
  for (int i = 0; i < 3; i++) k_b0[i] = 1.0 / (i + 3.0);
  for (int i = 0; i < 6; i++) k_w1[i] = (i - 2.5) * 1e-3;
  k_b1[0] = NAN; /* special values survive bit-exactly */
  k_b1[1] = -0.0;
  k_w1[5] = INFINITY;
  k_w1[4] = 4.9e-324; /* denormal */
}

static unsigned char *write_model(size_t *len) {
  fill_values();
  const td_safetensors_entry e[] = {
      {"layers.0.weight", 2, k_w0_shape, k_w0}, {"layers.0.bias", 1, k_b0_shape, k_b0},
      {"layers.1.weight", 2, k_w1_shape, k_w1}, {"layers.1.bias", 1, k_b1_shape, k_b1},
      {"scalar", 0, NULL, &k_scalar},          {"empty", 2, k_empty_shape, NULL},
  };
  json_t *meta = json_pack("{s:s, s:s}", "format", "pt", "tdlab", "test");
  unsigned char *buf = NULL;
  td_err err;
  int rc = td_safetensors_write(e, 6, meta, &buf, len, &err);
  json_decref(meta);
  if (rc) fail_msg("write: %s", err.msg);
  return buf;
}

static void test_round_trip(void **state) {
  (void)state;
  size_t len;
  unsigned char *buf = write_model(&len);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
  assert_int_equal(n % 8, 0); /* data 8-byte aligned */
  assert_int_equal(len, 8 + n + 8 * (12 + 3 + 6 + 2 + 1));
  assert_int_equal(buf[8], '{');

  td_safetensors *st = NULL;
  td_err err;
  assert_int_equal(td_safetensors_parse(buf, len, &st, &err), 0);
  assert_int_equal(td_safetensors_count(st), 6);
  assert_string_equal(td_safetensors_at(st, 0)->name, "layers.0.weight"); /* caller's order */
  assert_string_equal(td_safetensors_metadata(st, "format"), "pt");
  assert_null(td_safetensors_metadata(st, "nope"));
  const td_safetensors_tensor *t = td_safetensors_find(st, "layers.0.weight");
  assert_non_null(t);
  assert_string_equal(t->dtype, "F64");
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->shape[0], 3);
  assert_int_equal(t->shape[1], 4);
  assert_int_equal(t->offset, 0);
  assert_int_equal(t->nbytes, 96);

  double w0[12], b0[3], w1[6], b1[2], sc, dummy;
  assert_int_equal(td_safetensors_read_f64(st, "layers.0.weight", 2, k_w0_shape, w0, &err), 0);
  assert_int_equal(td_safetensors_read_f64(st, "layers.0.bias", 1, k_b0_shape, b0, &err), 0);
  assert_int_equal(td_safetensors_read_f64(st, "layers.1.weight", 2, k_w1_shape, w1, &err), 0);
  assert_int_equal(td_safetensors_read_f64(st, "layers.1.bias", 1, k_b1_shape, b1, &err), 0);
  assert_int_equal(td_safetensors_read_f64(st, "scalar", 0, NULL, &sc, &err), 0);
  assert_int_equal(td_safetensors_read_f64(st, "empty", 2, k_empty_shape, &dummy, &err), 0);
  assert_memory_equal(w0, k_w0, sizeof w0);
  assert_memory_equal(b0, k_b0, sizeof b0);
  assert_memory_equal(w1, k_w1, sizeof w1);
  assert_memory_equal(b1, k_b1, sizeof b1);
  assert_true(sc == 42.5);

  /* shape mismatch, transposed weight, missing tensor */
  const size_t wrong[2] = {4, 3};
  assert_int_equal(td_safetensors_read_f64(st, "layers.0.weight", 2, wrong, w0, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "(3,4)"));
  assert_int_equal(td_safetensors_read_f64(st, "layers.0.weight", 1, k_b0_shape, w0, &err),
                   TD_EINVAL);
  assert_int_equal(td_safetensors_read_f64(st, "layers.9.weight", 2, wrong, w0, &err),
                   TD_ENOTFOUND);
  assert_string_equal(err.field, "layers.9.weight");

  const char *dump = getenv("TDLAB_ST_DUMP");
  if (dump) {
    FILE *f = fopen(dump, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
  }
  td_safetensors_destroy(st);
  free(buf);
}

/* The exact bytes of a one-tensor file, written from the format description by hand. */
static void test_exact_bytes_and_f32(void **state) {
  (void)state;
  const double v[2] = {1.0, -2.0};
  const size_t shape[1] = {2};
  const td_safetensors_entry e = {"a", 1, shape, v};
  unsigned char *buf;
  size_t len;
  assert_int_equal(td_safetensors_write(&e, 1, NULL, &buf, &len, NULL), 0);
  const char *hdr = "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}";
  size_t h = strlen(hdr), hp = (h + 7) / 8 * 8; /* 55 -> 56: one space of padding */
  assert_int_equal(len, 8 + hp + 16);
  assert_int_equal(buf[0], hp);
  for (int i = 1; i < 8; i++) assert_int_equal(buf[i], 0);
  assert_memory_equal(buf + 8, hdr, h);
  for (size_t i = h; i < hp; i++) assert_int_equal(buf[8 + i], ' ');
  const unsigned char one[8] = {0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, m2[8] = {0, 0, 0, 0, 0, 0, 0, 0xc0};
  assert_memory_equal(buf + 8 + hp, one, 8);
  assert_memory_equal(buf + 8 + hp + 8, m2, 8);
  free(buf);

  /* An F32 file as PyTorch would write for float32 (values 1.5, -0.25), plus an I64 tensor
   * that parses but is not readable as f64. */
  size_t flen;
  unsigned char *f = mk("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"i\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}",
                        16, &flen);
  const unsigned char f32[8] = {0, 0, 0xc0, 0x3f, 0, 0, 0x80, 0xbe};
  memcpy(f + flen - 16, f32, 8);
  td_safetensors *st;
  td_err err;
  assert_int_equal(td_safetensors_parse(f, flen, &st, &err), 0);
  double x[2];
  assert_int_equal(td_safetensors_read_f64(st, "x", 1, shape, x, &err), 0);
  assert_true(x[0] == 1.5 && x[1] == -0.25);
  assert_int_equal(td_safetensors_find(st, "i")->numel, 1);
  assert_int_equal(td_safetensors_read_f64(st, "i", 0, NULL, x, &err), TD_EINVAL);
  td_safetensors_destroy(st);
  free(f);
  /* empty file: header {} and no data */
  f = mk("{}", 0, &flen);
  assert_int_equal(td_safetensors_parse(f, flen, &st, &err), 0);
  assert_int_equal(td_safetensors_count(st), 0);
  td_safetensors_destroy(st);
  free(f);
}

static void test_hostile_headers(void **state) {
  (void)state;
#define T(body, off) "{\"t\":{\"dtype\":\"F64\",\"shape\":" body ",\"data_offsets\":" off "}}"
  expect_bad("[]", 0, TD_EINVAL);                                      /* not an object */
  expect_bad(" {}", 0, TD_EINVAL);                                     /* must start with { */
  expect_bad("{", 0, TD_EINVAL);                                       /* truncated JSON */
  expect_bad("{}x", 0, TD_EINVAL);                                     /* trailing garbage */
  expect_bad("{}", 8, TD_EINVAL);                                      /* data not covered */
  expect_bad("{\"t\":1}", 0, TD_EINVAL);                               /* entry not an object */
  expect_bad(T("[1]", "[0,8]") , 0, TD_EINVAL);                        /* end beyond data */
  expect_bad(T("[2]", "[0,8]"), 8, TD_EINVAL);                         /* shape vs bytes */
  expect_bad(T("[1]", "[8,0]"), 8, TD_EINVAL);                         /* begin > end */
  expect_bad(T("[1]", "[0,8,9]"), 8, TD_EINVAL);                       /* three offsets */
  expect_bad(T("[1]", "[-8,0]"), 8, TD_EINVAL);                        /* negative */
  expect_bad(T("[1]", "[0,8.0]"), 8, TD_EINVAL);                       /* real, not integer */
  expect_bad(T("[1]", "[0,100000000000000000000000]"), 8, TD_EINVAL);  /* too big for JSON ints */
  expect_bad(T("[-1]", "[0,8]"), 8, TD_EINVAL);                        /* negative dim */
  expect_bad(T("[1.0]", "[0,8]"), 8, TD_EINVAL);                       /* real dim */
  expect_bad(T("\"1\"", "[0,8]"), 8, TD_EINVAL);                       /* shape not array */
  expect_bad(T("[1,1,1,1,1,1,1,1,1]", "[0,8]"), 8, TD_EINVAL);         /* rank 9 */
  expect_bad(T("[4294967296,4294967296]", "[0,8]"), 8, TD_EINVAL);     /* numel*8 overflows */
  expect_bad(T("[4294967296,4294967296,4294967296]", "[0,8]"), 8, TD_EINVAL);
  expect_bad(T("[2305843009213693952]", "[0,0]"), 0, TD_EINVAL);      /* 2^61 * 8 = 2^64 */
  expect_bad(T("[0,4294967296,4294967296]", "[0,0]"), 0, TD_EINVAL);  /* zero, but dims overflow */
  expect_bad("{\"t\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, TD_EINVAL);
  expect_bad("{\"t\":{\"dtype\":64,\"shape\":[1],\"data_offsets\":[0,8]}}", 8, TD_EINVAL);
  expect_bad("{\"t\":{\"shape\":[1],\"data_offsets\":[0,8]}}", 8, TD_EINVAL);
  expect_bad("{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8],\"x\":1}}", 8,
             TD_EINVAL);
  /* duplicates, overlap, gap */
  expect_bad("{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
             "\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", 16, TD_EINVAL);
  expect_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
             "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[8,24]}}", 24, TD_EINVAL);
  expect_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[16,24]}}", 24, TD_EINVAL);
  expect_bad("{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, TD_EINVAL);
  /* metadata must be an object of strings */
  expect_bad("{\"__metadata__\":{\"a\":1}}", 0, TD_EINVAL);
  expect_bad("{\"__metadata__\":[\"a\"]}", 0, TD_EINVAL);
  expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, TD_EINVAL);
  /* NUL bytes: inside the header, and as an escaped character in a name */
  {
    size_t len;
    unsigned char *b = mk("{  }", 0, &len);
    b[9] = 0;
    td_safetensors *st;
    assert_int_equal(td_safetensors_parse(b, len, &st, NULL), TD_EINVAL);
    free(b);
  }
  expect_bad("{\"a\\u0000b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
             TD_EINVAL);
  expect_bad("{\"\xff\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
             TD_EINVAL); /* invalid UTF-8 */
#undef T
}

static void test_hostile_lengths(void **state) {
  (void)state;
  td_safetensors *st;
  td_err err;
  unsigned char b[16] = {0};
  assert_int_equal(td_safetensors_parse(b, 7, &st, &err), TD_EINVAL); /* < 8 bytes */
  memset(b, 0xff, 8);                                                 /* N = 2^64 - 1 */
  assert_int_equal(td_safetensors_parse(b, 16, &st, &err), TD_EINVAL);
  b[0] = 9, memset(b + 1, 0, 7); /* N = 9 > 8 bytes that follow */
  assert_int_equal(td_safetensors_parse(b, 16, &st, &err), TD_EINVAL);
  b[0] = 0; /* N = 0 */
  assert_int_equal(td_safetensors_parse(b, 16, &st, &err), TD_EINVAL);
  /* N over the 100 MiB cap (calloc: untouched pages cost nothing) */
  size_t big = TD_SAFETENSORS_MAX_HEADER + 16;
  unsigned char *h = calloc(big, 1);
  assert_non_null(h);
  uint64_t n = TD_SAFETENSORS_MAX_HEADER + 1;
  for (int i = 0; i < 8; i++) h[i] = (unsigned char)(n >> (8 * i));
  assert_int_equal(td_safetensors_parse(h, big, &st, &err), TD_ELIMIT);
  free(h);
  assert_int_equal(td_safetensors_parse(NULL, 16, &st, &err), TD_EINVAL);
}

/* Every strict prefix of a valid file must be refused (the data region is exactly tiled);
 * every single-byte corruption of the header must be either refused or parsed into
 * tensors that stay inside the buffer (run under ASan by `make sanitize`). */
static void test_truncations_and_bitflips(void **state) {
  (void)state;
  size_t len;
  unsigned char *buf = write_model(&len);
  td_safetensors *st;
  for (size_t l = 0; l < len; l++) {
    unsigned char *c = malloc(l ? l : 1); /* exact-size copy so ASan sees over-reads */
    memcpy(c, buf, l);
    assert_int_not_equal(td_safetensors_parse(c, l, &st, NULL), 0);
    free(c);
  }
  size_t hn = buf[0] | (size_t)buf[1] << 8;
  unsigned char *c = malloc(len);
  size_t accepted = 0;
  for (size_t i = 0; i < 8 + hn; i++) {
    for (int bit = 0; bit < 8; bit++) {
      memcpy(c, buf, len);
      c[i] ^= (unsigned char)(1u << bit);
      if (td_safetensors_parse(c, len, &st, NULL) == 0) {
        accepted++;
        double tmp[16];
        for (size_t t = 0; t < td_safetensors_count(st); t++) {
          const td_safetensors_tensor *ti = td_safetensors_at(st, t);
          assert_true(ti->offset + ti->nbytes <= len - 8 - hn);
          if (ti->numel <= 16)
            (void)td_safetensors_read_f64(st, ti->name, ti->ndim, ti->shape, tmp, NULL);
        }
        td_safetensors_destroy(st);
      }
    }
  }
  assert_true(accepted > 0); /* e.g. flips inside names or metadata values are harmless */
  free(c);
  free(buf);
}

static void test_writer_errors(void **state) {
  (void)state;
  const double v[1] = {1.0};
  const size_t s1[1] = {1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  unsigned char *buf = (unsigned char *)1;
  size_t len = 7;
  td_err err;
  const td_safetensors_entry dup[2] = {{"a", 1, s1, v}, {"a", 1, s1, v}};
  assert_int_equal(td_safetensors_write(dup, 2, NULL, &buf, &len, &err), TD_EINVAL);
  assert_null(buf);
  assert_int_equal(len, 0);
  assert_string_equal(err.field, "a");
  const td_safetensors_entry bad[] = {
      {"", 1, s1, v}, {"__metadata__", 1, s1, v}, {NULL, 1, s1, v}, {"r9", 9, s9, v},
      {"nodata", 1, s1, NULL}, {"\xc3\x28", 1, s1, v}, {"noshape", 1, NULL, v}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(td_safetensors_write(&bad[i], 1, NULL, &buf, &len, &err), TD_EINVAL);
  json_t *meta = json_pack("{s:i}", "epoch", 3);
  assert_int_equal(td_safetensors_write(dup, 1, meta, &buf, &len, &err), TD_EINVAL);
  assert_string_equal(err.field, "__metadata__");
  json_decref(meta);
  const size_t huge[2] = {SIZE_MAX / 4, 8};
  const td_safetensors_entry ov = {"ov", 2, huge, v};
  assert_int_equal(td_safetensors_write(&ov, 1, NULL, &buf, &len, &err), TD_ERANGE);
  /* zero tensors: a valid empty file */
  assert_int_equal(td_safetensors_write(NULL, 0, NULL, &buf, &len, &err), 0);
  assert_int_equal(len, 16);
  td_safetensors *st;
  assert_int_equal(td_safetensors_parse(buf, len, &st, &err), 0);
  td_safetensors_destroy(st);
  free(buf);
}

/* The refusals a user sees (POST /api/v1/checkpoints answers 400 with this message): each
 * malformed file is refused with a message that names the problem. */
static void expect_msg(const unsigned char *b, size_t len, const char *want) {
  td_safetensors *st = NULL;
  td_err err;
  td_err_clear(&err);
  assert_int_not_equal(td_safetensors_parse(b, len, &st, &err), 0);
  assert_null(st);
  if (!strstr(err.msg, want)) fail_msg("message '%s' lacks '%s'", err.msg, want);
}

static void test_refusal_messages(void **state) {
  (void)state;
  size_t len;
  unsigned char *b;
  /* truncated header: the JSON stops half way (the length counts only what is there) */
  b = mk("{\"t\":{\"dtype\":\"F64\",\"sha", 0, &len);
  expect_msg(b, len, "header JSON");
  free(b);
  /* header length beyond the body: the file is cut inside the header */
  b = mk("{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, &len);
  expect_msg(b, 20, "exceeds the 12 bytes that follow");
  free(b);
  /* offsets out of range, overlapping */
  b = mk("{\"t\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 8, &len);
  expect_msg(b, len, "beyond the 8-byte data buffer");
  free(b);
  b = mk("{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
         "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[8,24]}}", 24, &len);
  expect_msg(b, len, "overlap");
  free(b);
  /* unknown dtype */
  b = mk("{\"t\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, &len);
  expect_msg(b, len, "unknown dtype 'F128'");
  free(b);
  /* duplicate tensor name */
  b = mk("{\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
         "\"t\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", 16, &len);
  expect_msg(b, len, "duplicate tensor name");
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_exact_bytes_and_f32),
      cmocka_unit_test(test_hostile_headers),
      cmocka_unit_test(test_hostile_lengths),
      cmocka_unit_test(test_truncations_and_bitflips),
      cmocka_unit_test(test_writer_errors),
      cmocka_unit_test(test_refusal_messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
