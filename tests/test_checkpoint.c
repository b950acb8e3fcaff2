/* test_checkpoint.c: MLP parameters <-> safetensors: bitwise round trip (buffer and file),
 * tensor names and shapes (the torch.nn.Linear layout), architecture inference, metadata,
 * strict loading (missing, extra, misshaped tensors refused, params untouched on error). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/checkpoint.h"
#include "nn/model.h"
#include "base/rng.h"
#include "nn/safetensors.h"

static td_mlp *mk(int in, int n_hidden, const int *hid, int out, td_act act, uint64_t seed) {
  td_mlp_cfg cfg = {.in_dim = in, .out_dim = out, .n_hidden = n_hidden, .act = act,
                    .init_scale = 1.0};
  for (int i = 0; i < n_hidden; i++) cfg.hidden[i] = hid[i];
  td_mlp *m = NULL;
  assert_int_equal(td_mlp_create(&cfg, &m, NULL), 0);
  td_mlp_init(m, seed);
  td_rng r;
  td_rng_init(&r, seed, 99);
  /* Biases non-zero, and a few special values, so that the round trip is bitwise. */
  for (size_t i = 0; i < m->n_params; i += 7) m->params[i] = td_rng_normal(&r);
  m->params[1] = -0.0;
  m->params[2] = 4.9e-324;
  m->params[3] = 1.0 / 3.0;
  return m;
}

static void test_round_trip(void **s) {
  (void)s;
  const int hid[2] = {6, 4};
  td_mlp *m = mk(5, 2, hid, 3, TD_ACT_TANH, 1), *m2 = mk(5, 2, hid, 3, TD_ACT_TANH, 2);
  json_t *meta = json_pack("{s:s}", "step", "42");
  unsigned char *buf = NULL;
  size_t len = 0;
  td_err err;
  assert_int_equal(td_checkpoint_save(m, m->params, meta, &buf, &len, &err), 0);
  assert_int_equal(td_checkpoint_load(m2, buf, len, m2->params, &err), 0);
  assert_memory_equal(m->params, m2->params, m->n_params * sizeof(double));
  /* Names, shapes, dtype and metadata as documented. */
  td_safetensors *st = NULL;
  assert_int_equal(td_safetensors_parse(buf, len, &st, &err), 0);
  assert_int_equal(td_safetensors_count(st), 6);
  const td_safetensors_tensor *t = td_safetensors_find(st, "layers.1.weight");
  assert_non_null(t);
  assert_string_equal(t->dtype, "F64");
  assert_int_equal(t->ndim, 2);
  assert_int_equal(t->shape[0], 4);
  assert_int_equal(t->shape[1], 6);
  t = td_safetensors_find(st, "layers.2.bias");
  assert_non_null(t);
  assert_int_equal(t->ndim, 1);
  assert_int_equal(t->shape[0], 3);
  double W1[24];
  size_t sh[2] = {4, 6};
  assert_int_equal(td_safetensors_read_f64(st, "layers.1.weight", 2, sh, W1, &err), 0);
  double *W = NULL;
  td_mlp_linear(m, 1, m->params, &W, NULL);
  assert_memory_equal(W1, W, sizeof W1);
  assert_string_equal(td_safetensors_metadata(st, "step"), "42");
  assert_string_equal(td_safetensors_metadata(st, "format"), "pt");
  assert_string_equal(td_safetensors_metadata(st, "activation"), "tanh");
  td_safetensors_destroy(st);
  /* Architecture inference. */
  td_mlp_cfg cfg;
  assert_int_equal(td_checkpoint_cfg(buf, len, &cfg, &err), 0);
  assert_int_equal(cfg.in_dim, 5);
  assert_int_equal(cfg.n_hidden, 2);
  assert_int_equal(cfg.hidden[0], 6);
  assert_int_equal(cfg.hidden[1], 4);
  assert_int_equal(cfg.out_dim, 3);
  assert_int_equal(cfg.act, TD_ACT_TANH);
  free(buf);
  json_decref(meta);
  td_mlp_destroy(m);
  td_mlp_destroy(m2);
}

static void test_file_round_trip(void **s) {
  (void)s;
  const int hid[1] = {3};
  td_mlp *m = mk(4, 1, hid, 2, TD_ACT_RELU, 3), *m2 = mk(4, 1, hid, 2, TD_ACT_RELU, 4);
  char path[] = "/tmp/tdlab_ckpt_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  td_err err;
  assert_int_equal(td_checkpoint_save_file(path, m, m->params, NULL, &err), 0);
  assert_int_equal(td_checkpoint_load_file(path, m2, m2->params, &err), 0);
  assert_memory_equal(m->params, m2->params, m->n_params * sizeof(double));
  remove(path);
  assert_int_equal(td_checkpoint_load_file(path, m2, m2->params, &err), TD_ENOTFOUND);
  td_mlp_destroy(m);
  td_mlp_destroy(m2);
}

/* Write a file with hand-picked tensors (for the strictness tests). */
static unsigned char *raw_file(const td_safetensors_entry *e, size_t n, size_t *len) {
  unsigned char *buf = NULL;
  assert_int_equal(td_safetensors_write(e, n, NULL, &buf, len, NULL), 0);
  return buf;
}

static void test_strict(void **s) {
  (void)s;
  const int hid[1] = {3};
  td_mlp *m = mk(4, 1, hid, 2, TD_ACT_RELU, 5);
  double *keep = malloc(m->n_params * sizeof *keep);
  memcpy(keep, m->params, m->n_params * sizeof *keep);
  double w0[12] = {0}, b0[3] = {0}, w1[6] = {0}, b1[2] = {0}, bad[8] = {0};
  size_t s_w0[2] = {3, 4}, s_b0[1] = {3}, s_w1[2] = {2, 3}, s_b1[1] = {2}, s_bad[2] = {2, 4};
  td_err err;
  size_t len;
  /* Missing layers.1.bias. */
  td_safetensors_entry e1[] = {{"layers.0.weight", 2, s_w0, w0}, {"layers.0.bias", 1, s_b0, b0},
                               {"layers.1.weight", 2, s_w1, w1}};
  unsigned char *buf = raw_file(e1, 3, &len);
  assert_int_equal(td_checkpoint_load(m, buf, len, m->params, &err), TD_ENOTFOUND);
  assert_string_equal(err.field, "layers.1.bias");
  free(buf);
  /* Wrong shape. */
  td_safetensors_entry e2[] = {{"layers.0.weight", 2, s_w0, w0}, {"layers.0.bias", 1, s_b0, b0},
                               {"layers.1.weight", 2, s_bad, bad}, {"layers.1.bias", 1, s_b1, b1}};
  buf = raw_file(e2, 4, &len);
  assert_int_equal(td_checkpoint_load(m, buf, len, m->params, &err), TD_EINVAL);
  assert_string_equal(err.field, "layers.1.weight");
  /* ... and td_checkpoint_cfg refuses shapes that do not chain. */
  td_mlp_cfg cfg;
  assert_int_equal(td_checkpoint_cfg(buf, len, &cfg, &err), TD_EINVAL);
  free(buf);
  /* An extra tensor. */
  td_safetensors_entry e3[] = {{"layers.0.weight", 2, s_w0, w0}, {"layers.0.bias", 1, s_b0, b0},
                               {"layers.1.weight", 2, s_w1, w1}, {"layers.1.bias", 1, s_b1, b1},
                               {"layers.2.bias", 1, s_b1, b1}};
  buf = raw_file(e3, 5, &len);
  assert_int_equal(td_checkpoint_load(m, buf, len, m->params, &err), TD_EINVAL);
  assert_string_equal(err.field, "layers.2.bias");
  free(buf);
  /* Garbage. */
  unsigned char junk[16] = {1, 2, 3};
  assert_int_not_equal(td_checkpoint_load(m, junk, sizeof junk, m->params, &err), 0);
  assert_int_not_equal(td_checkpoint_cfg(junk, sizeof junk, &cfg, &err), 0);
  /* Nothing was written. */
  assert_memory_equal(keep, m->params, m->n_params * sizeof *keep);
  /* Metadata must be an object of strings. */
  json_t *meta = json_pack("{s:i}", "step", 3);
  unsigned char *out = NULL;
  assert_int_equal(td_checkpoint_save(m, m->params, meta, &out, &len, &err), TD_EINVAL);
  assert_null(out);
  json_decref(meta);
  free(keep);
  td_mlp_destroy(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_file_round_trip),
      cmocka_unit_test(test_strict),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
