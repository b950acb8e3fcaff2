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
#include "optim/optim.h"

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

/* The value placed at flat index j of state vector i: a closed form, so that the test knows
 * every stored number without reading it back from the code under test. */
static double state_val(int i, size_t j) { return (double)(i + 1) * 0.25 + (double)j / 64.0; }

/* Model 3 -> [4] -> 2: by the documented layout (model.h: per linear layer W row-major, then
 * b) W0 is at 0 (4 x 3), b0 at 12 (4), W1 at 16 (2 x 4), b1 at 24 (2); 26 parameters. */
static void check_state_round_trip(const char *opt_name, td_optim_hp hp, const char *const *names,
                                   int n_names) {
  const int hid[1] = {4};
  td_mlp *m = mk(3, 1, hid, 2, TD_ACT_RELU, 7), *m2 = mk(3, 1, hid, 2, TD_ACT_RELU, 8);
  assert_int_equal(m->n_params, 26);
  td_optim *o = NULL, *o2 = NULL;
  td_err err;
  assert_int_equal(td_optim_create(opt_name, &hp, m->n_params, &o, &err), 0);
  assert_int_equal(td_optim_create(opt_name, &hp, m->n_params, &o2, &err), 0);
  for (int i = 0; i < n_names; i++) {
    assert_string_equal(td_optim_state_name(o, i), names[i]);
    double *v = td_optim_state(o, i);
    assert_non_null(v);
    for (size_t j = 0; j < m->n_params; j++) v[j] = state_val(i, j);
  }
  td_optim_set_steps(o, 137);
  unsigned char *buf = NULL;
  size_t len = 0;
  assert_int_equal(td_checkpoint_save_state(m, m->params, o, NULL, &buf, &len, &err), 0);

  /* The file: named tensors at the documented positions, and the metadata. */
  td_safetensors *st = NULL;
  assert_int_equal(td_safetensors_parse(buf, len, &st, &err), 0);
  assert_int_equal(td_safetensors_count(st), 4 * (1 + (size_t)n_names));
  assert_string_equal(td_safetensors_metadata(st, "optimizer"), opt_name);
  assert_string_equal(td_safetensors_metadata(st, "optimizer_step"), "137");
  for (int i = 0; i < n_names; i++) {
    char name[96];
    double W1[8], b0[4];
    size_t sw[2] = {2, 4}, sb[1] = {4};
    snprintf(name, sizeof name, "optimizer.%s.layers.1.weight", names[i]);
    assert_int_equal(td_safetensors_read_f64(st, name, 2, sw, W1, &err), 0);
    for (size_t j = 0; j < 8; j++) assert_true(W1[j] == state_val(i, 16 + j));
    snprintf(name, sizeof name, "optimizer.%s.layers.0.bias", names[i]);
    assert_int_equal(td_safetensors_read_f64(st, name, 1, sb, b0, &err), 0);
    for (size_t j = 0; j < 4; j++) assert_true(b0[j] == state_val(i, 12 + j));
  }
  td_safetensors_destroy(st);

  /* Load into a fresh optimizer: every state value and the step count come back. */
  json_t *meta = NULL;
  assert_int_equal(td_checkpoint_load_state(m2, buf, len, m2->params, o2, &meta, &err), 0);
  assert_memory_equal(m->params, m2->params, m->n_params * sizeof(double));
  assert_int_equal(td_optim_steps(o2), 137);
  for (int i = 0; i < n_names; i++)
    for (size_t j = 0; j < m->n_params; j++) assert_true(td_optim_state(o2, i)[j] == state_val(i, j));
  assert_string_equal(json_string_value(json_object_get(meta, "optimizer")), opt_name);
  json_decref(meta);

  /* Params only (init_from): the optimizer tensors are ignored. */
  double *p3 = calloc(m->n_params, sizeof *p3);
  assert_int_equal(td_checkpoint_load_state(m2, buf, len, p3, NULL, NULL, &err), 0);
  assert_memory_equal(m->params, p3, m->n_params * sizeof(double));
  assert_int_equal(td_checkpoint_load(m2, buf, len, p3, &err), 0);
  free(p3);
  free(buf);
  td_optim_destroy(o);
  td_optim_destroy(o2);
  td_mlp_destroy(m);
  td_mlp_destroy(m2);
}

static void test_state_round_trip_sgd_momentum(void **s) {
  (void)s;
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = 0.9;
  const char *names[] = {"momentum_buffer"};
  check_state_round_trip("sgd", hp, names, 1);
}

static void test_state_round_trip_adam(void **s) {
  (void)s;
  const char *names[] = {"exp_avg", "exp_avg_sq"};
  check_state_round_trip("adam", td_optim_hp_default(), names, 2);
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = 0.5;
  hp.centered = 1;
  const char *rn[] = {"square_avg", "momentum_buffer", "grad_avg"};
  check_state_round_trip("rmsprop", hp, rn, 3);
}

/* Resuming from a checkpoint continues the optimizer exactly: K steps, save, load into a new
 * model and optimizer, K more steps equals 2K uninterrupted steps bitwise (Adam's bias
 * correction depends on the restored step count: with t reset to 0 the first resumed step
 * is a different number). */
static void test_state_resume_adam(void **s) {
  (void)s;
  const int hid[1] = {4};
  td_mlp *a = mk(3, 1, hid, 2, TD_ACT_RELU, 9), *b = mk(3, 1, hid, 2, TD_ACT_RELU, 10);
  td_optim_hp hp = td_optim_hp_default();
  td_optim *oa = NULL, *ob = NULL;
  assert_int_equal(td_optim_create("adam", &hp, a->n_params, &oa, NULL), 0);
  assert_int_equal(td_optim_create("adam", &hp, a->n_params, &ob, NULL), 0);
  double g[26];
  const int K = 5;
  for (int t = 0; t < K; t++) {
    for (size_t j = 0; j < 26; j++) g[j] = sin((double)(t * 26 + (int)j));
    td_optim_step(oa, a->params, g, 1e-2);
  }
  unsigned char *buf = NULL;
  size_t len = 0;
  assert_int_equal(td_checkpoint_save_state(a, a->params, oa, NULL, &buf, &len, NULL), 0);
  assert_int_equal(td_checkpoint_load_state(b, buf, len, b->params, ob, NULL, NULL), 0);
  for (int t = K; t < 2 * K; t++) {
    for (size_t j = 0; j < 26; j++) g[j] = sin((double)(t * 26 + (int)j));
    td_optim_step(oa, a->params, g, 1e-2);
    td_optim_step(ob, b->params, g, 1e-2);
  }
  assert_memory_equal(a->params, b->params, 26 * sizeof(double));
  /* Without the restored step count the continuation differs. */
  assert_int_equal(td_checkpoint_load_state(b, buf, len, b->params, ob, NULL, NULL), 0);
  td_optim_set_steps(ob, 0);
  for (size_t j = 0; j < 26; j++) g[j] = 1.0;
  double before = b->params[0];
  td_optim_step(ob, b->params, g, 1e-2);
  assert_true(b->params[0] != before);
  free(buf);
  td_optim_destroy(oa);
  td_optim_destroy(ob);
  td_mlp_destroy(a);
  td_mlp_destroy(b);
}

/* With TDLAB_CKPT_DUMP=DIR: for sgd (momentum 0.9, dampening 0.1, weight decay 0.01) and
 * adam (weight decay 0.01), K = 5 steps on the model 3 -> [4] -> 2 with gradients
 * g_t[j] = sin(26 t + j), then DIR/<opt>.safetensors (params + optimizer state after K steps)
 * and DIR/<opt>_next.safetensors (params after step K + 1, gradient g_K) for
 * tests/checkpoint_torch_check.py, which loads the state into torch.optim and takes that
 * step itself. Without the variable nothing is written. */
static void test_dump_for_torch(void **s) {
  (void)s;
  const char *dir = getenv("TDLAB_CKPT_DUMP");
  if (!dir) return;
  const char *names[2] = {"sgd", "adam"};
  for (int k = 0; k < 2; k++) {
    const int hid[1] = {4};
    td_mlp *m = mk(3, 1, hid, 2, TD_ACT_RELU, 21);
    td_optim_hp hp = td_optim_hp_default();
    hp.weight_decay = 0.01;
    if (k == 0) hp.momentum = 0.9, hp.dampening = 0.1;
    td_optim *o = NULL;
    assert_int_equal(td_optim_create(names[k], &hp, m->n_params, &o, NULL), 0);
    double g[26];
    const int K = 5;
    char path[512];
    for (int t = 0; t <= K; t++) {
      if (t == K) {
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, names[k]);
        assert_int_equal(td_checkpoint_save_file_state(path, m, m->params, o, NULL, NULL), 0);
      }
      for (size_t j = 0; j < 26; j++) g[j] = sin((double)(t * 26 + (int)j));
      td_optim_step(o, m->params, g, 1e-2);
    }
    snprintf(path, sizeof path, "%s/%s_next.safetensors", dir, names[k]);
    assert_int_equal(td_checkpoint_save_file(path, m, m->params, NULL, NULL), 0);
    td_optim_destroy(o);
    td_mlp_destroy(m);
  }
}

/* Refusals of td_checkpoint_load_state, each naming the problem; nothing is written. */
static void test_state_refusals(void **s) {
  (void)s;
  const int hid[1] = {4};
  td_mlp *m = mk(3, 1, hid, 2, TD_ACT_RELU, 11);
  td_optim_hp hp = td_optim_hp_default();
  hp.momentum = 0.9;
  td_optim *sgd = NULL, *adam = NULL, *plain = NULL;
  assert_int_equal(td_optim_create("sgd", &hp, m->n_params, &sgd, NULL), 0);
  assert_int_equal(td_optim_create("adam", NULL, m->n_params, &adam, NULL), 0);
  assert_int_equal(td_optim_create("sgd", NULL, m->n_params, &plain, NULL), 0);
  td_err err;
  unsigned char *buf = NULL;
  size_t len = 0;
  for (size_t j = 0; j < m->n_params; j++) td_optim_state(adam, 0)[j] = 1.0;
  assert_int_equal(td_checkpoint_save_state(m, m->params, sgd, NULL, &buf, &len, &err), 0);
  double *keep = malloc(m->n_params * sizeof *keep);
  memcpy(keep, m->params, m->n_params * sizeof *keep);
  double *p = calloc(m->n_params, sizeof *p);
  /* A different optimizer. */
  assert_int_equal(td_checkpoint_load_state(m, buf, len, p, adam, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "optimizer");
  assert_non_null(strstr(err.msg, "'sgd'"));
  assert_non_null(strstr(err.msg, "'adam'"));
  assert_true(td_optim_state(adam, 0)[0] == 1.0);
  free(buf);
  /* sgd with momentum from a checkpoint of sgd without: the buffer is missing. */
  assert_int_equal(td_checkpoint_save_state(m, m->params, plain, NULL, &buf, &len, &err), 0);
  assert_int_equal(td_checkpoint_load_state(m, buf, len, p, sgd, NULL, &err), TD_ENOTFOUND);
  assert_string_equal(err.field, "optimizer.momentum_buffer.layers.0.weight");
  /* ... and a params-only checkpoint (no optimizer metadata) for an optimizer. */
  free(buf);
  assert_int_equal(td_checkpoint_save(m, m->params, NULL, &buf, &len, &err), 0);
  assert_int_equal(td_checkpoint_load_state(m, buf, len, p, adam, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "optimizer");
  free(buf);
  /* Wrong shape: expected and found shapes in the message. */
  double w0[12] = {0}, b0[4] = {0}, w1[8] = {0}, b1[2] = {0};
  size_t s_w0[2] = {4, 3}, s_w0t[2] = {3, 4}, s_b0[1] = {4}, s_w1[2] = {2, 4}, s_b1[1] = {2};
  td_safetensors_entry e[] = {{"layers.0.weight", 2, s_w0t, w0}, {"layers.0.bias", 1, s_b0, b0},
                              {"layers.1.weight", 2, s_w1, w1}, {"layers.1.bias", 1, s_b1, b1}};
  buf = raw_file(e, 4, &len);
  assert_int_equal(td_checkpoint_load_state(m, buf, len, p, NULL, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "layers.0.weight");
  assert_non_null(strstr(err.msg, "has shape (3, 4)"));
  assert_non_null(strstr(err.msg, "expects (4, 3)"));
  free(buf);
  /* A NaN, then an infinity, in a parameter; a NaN in an optimizer state. */
  e[0].shape = s_w0;
  b1[1] = NAN;
  buf = raw_file(e, 4, &len);
  assert_int_equal(td_checkpoint_load_state(m, buf, len, p, NULL, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "layers.1.bias");
  assert_non_null(strstr(err.msg, "non-finite"));
  free(buf);
  b1[1] = -INFINITY;
  buf = raw_file(e, 4, &len);
  assert_int_equal(td_checkpoint_load_state(m, buf, len, p, NULL, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "layers.1.bias");
  free(buf);
  b1[1] = 0;
  td_optim_state(sgd, 0)[3] = NAN;
  assert_int_equal(td_checkpoint_save_state(m, m->params, sgd, NULL, &buf, &len, &err), 0);
  assert_int_equal(td_checkpoint_load_state(m, buf, len, p, sgd, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "optimizer.momentum_buffer.layers.0.weight");
  free(buf);
  /* Nothing was written to the model's own params. */
  assert_memory_equal(keep, m->params, m->n_params * sizeof *keep);
  free(p);
  free(keep);
  td_optim_destroy(sgd);
  td_optim_destroy(adam);
  td_optim_destroy(plain);
  td_mlp_destroy(m);
}

/* td_checkpoint_params_cfg / td_checkpoint_check_params: the model of a job's params. */
static void test_params_check(void **s) {
  (void)s;
  json_t *p = json_pack("{s:{s:s, s:i}, s:{s:[i], s:s}, s:{s:s}}", "data", "name", "synthetic",
                        "d", 3, "model", "hidden", 4, "activation", "relu", "optimizer", "name",
                        "sgd");
  td_mlp_cfg cfg;
  td_err err;
  assert_int_equal(td_checkpoint_params_cfg(p, &cfg, &err), 0);
  assert_int_equal(cfg.in_dim, 3);
  assert_int_equal(cfg.out_dim, 1);
  assert_int_equal(cfg.n_hidden, 1);
  assert_int_equal(cfg.hidden[0], 4);
  const int hid1[1] = {4}, hid2[1] = {5};
  td_mlp *ok = mk(3, 1, hid1, 1, TD_ACT_RELU, 1), *bad = mk(3, 1, hid2, 1, TD_ACT_RELU, 1);
  unsigned char *buf = NULL;
  size_t len = 0;
  assert_int_equal(td_checkpoint_save(ok, ok->params, NULL, &buf, &len, &err), 0);
  assert_int_equal(td_checkpoint_check_params(p, buf, len, 0, &err), 0);
  /* a fork needs optimizer state */
  assert_int_equal(td_checkpoint_check_params(p, buf, len, 1, &err), TD_EINVAL);
  assert_string_equal(err.field, "optimizer");
  free(buf);
  assert_int_equal(td_checkpoint_save(bad, bad->params, NULL, &buf, &len, &err), 0);
  assert_int_equal(td_checkpoint_check_params(p, buf, len, 0, &err), TD_EINVAL);
  assert_string_equal(err.field, "layers.0.weight");
  assert_non_null(strstr(err.msg, "has shape (5, 3), the model expects (4, 3)"));
  free(buf);
  json_t *nomodel = json_pack("{s:i}", "seed", 1);
  assert_int_equal(td_checkpoint_params_cfg(nomodel, &cfg, &err), TD_ENOTFOUND);
  json_decref(nomodel);
  json_decref(p);
  td_mlp_destroy(ok);
  td_mlp_destroy(bad);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_file_round_trip),
      cmocka_unit_test(test_strict),
      cmocka_unit_test(test_state_round_trip_sgd_momentum),
      cmocka_unit_test(test_state_round_trip_adam),
      cmocka_unit_test(test_state_resume_adam),
      cmocka_unit_test(test_state_refusals),
      cmocka_unit_test(test_params_check),
      cmocka_unit_test(test_dump_for_torch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
