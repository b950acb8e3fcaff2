/* test_data.c: the IDX parser on crafted good and corrupt in-memory files, the gzip reader
 * (good, truncated, size cap), dataset construction, the synthetic generator and, when the
 * Debian files are installed, the real Fashion-MNIST. Exact assertions except the synthetic
 * covariance check, whose tolerance (5 standard errors) is stated there. */
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
#include <zlib.h>

#include "nn/data.h"
#include "base/rng.h"

/* Build an IDX file: type, dims, then `payload` bytes (pattern i % 251). */
static size_t make_idx(uint8_t *buf, int type, int ndim, const uint32_t *dims, size_t payload) {
  buf[0] = 0;
  buf[1] = 0;
  buf[2] = (uint8_t)type;
  buf[3] = (uint8_t)ndim;
  for (int i = 0; i < ndim; i++) {
    buf[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
    buf[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
    buf[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
    buf[7 + 4 * i] = (uint8_t)dims[i];
  }
  size_t h = 4 + 4 * (size_t)ndim;
  for (size_t i = 0; i < payload; i++) buf[h + i] = (uint8_t)(i % 251);
  return h + payload;
}

static void expect_bad(const uint8_t *buf, size_t len, const char *needle) {
  td_idx idx;
  td_err err;
  td_err_clear(&err);
  assert_int_equal(td_idx_parse(buf, len, &idx, &err), TD_EINVAL);
  assert_null(idx.data);
  if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_idx_good(void **state) {
  (void)state;
  uint8_t buf[256];
  uint32_t dims[3] = {3, 4, 5};
  size_t len = make_idx(buf, 0x08, 3, dims, 60);
  td_idx idx;
  assert_int_equal(td_idx_parse(buf, len, &idx, NULL), 0);
  assert_int_equal(idx.type, 0x08);
  assert_int_equal(idx.ndim, 3);
  assert_int_equal(idx.count, 60);
  assert_int_equal(idx.dims[2], 5);
  assert_ptr_equal(idx.data, buf + 16);
  /* A 16-bit tensor: 2 bytes per element. */
  uint32_t d1[1] = {7};
  len = make_idx(buf, 0x0B, 1, d1, 14);
  assert_int_equal(td_idx_parse(buf, len, &idx, NULL), 0);
  assert_int_equal(idx.elem_size, 2);
}

static void test_idx_corrupt(void **state) {
  (void)state;
  uint8_t buf[256];
  uint32_t dims[2] = {4, 5};
  size_t len = make_idx(buf, 0x08, 2, dims, 20);
  expect_bad(buf, 0, "too short");
  expect_bad(buf, 3, "too short");
  expect_bad(NULL, 10, "too short");
  expect_bad(buf, 7, "header truncated");
  expect_bad(buf, len - 1, "truncated");
  buf[len] = 1;
  expect_bad(buf, len + 1, "trailing");
  buf[0] = 1;
  expect_bad(buf, len, "magic");
  buf[0] = 0;
  buf[1] = 8;
  expect_bad(buf, len, "magic");
  buf[1] = 0;
  buf[2] = 0x07;
  expect_bad(buf, len, "type");
  buf[2] = 0x08;
  buf[3] = 0;
  expect_bad(buf, len, "dimensions");
  buf[3] = 200;
  expect_bad(buf, len, "dimensions");
  uint32_t zero[2] = {4, 0};
  len = make_idx(buf, 0x08, 2, zero, 0);
  expect_bad(buf, len, "zero");
  /* 8 dims of 2^32-1: the element count overflows size_t. */
  uint32_t huge[8];
  for (int i = 0; i < 8; i++) huge[i] = 0xffffffffu;
  len = make_idx(buf, 0x0E, 8, huge, 8);
  expect_bad(buf, len, "overflows");
  /* A plausible header that claims more data than present. */
  uint32_t big[3] = {60000, 28, 28};
  len = make_idx(buf, 0x08, 3, big, 100);
  expect_bad(buf, len, "truncated");
}

/* Hostile bytes: random mutations of a valid file must never crash (run under ASan by
 * `make sanitize`); whatever parses must describe bytes inside the buffer. */
static void test_idx_random_bytes(void **state) {
  (void)state;
  uint8_t good[64], buf[64];
  uint32_t dims[2] = {4, 10};
  size_t glen = make_idx(good, 0x08, 2, dims, 40);
  td_rng r;
  td_rng_init(&r, 5, 0);
  for (int it = 0; it < 20000; it++) {
    size_t len = (size_t)td_rng_below(&r, glen + 1);
    memcpy(buf, good, glen);
    int flips = 1 + (int)td_rng_below(&r, 4);
    for (int f = 0; f < flips; f++) buf[td_rng_below(&r, 12)] = (uint8_t)td_rng_u32(&r);
    td_idx idx;
    if (td_idx_parse(buf, len, &idx, NULL) == 0) {
      assert_true(idx.data >= buf);
      assert_true(idx.data + idx.count * (size_t)idx.elem_size == buf + len);
    }
  }
}

static char tmpdir[256];

static int setup_tmp(void **state) {
  (void)state;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/tdlab_test_data_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  return system(cmd) == 0 ? 0 : -1;
}

static void write_gz(const char *path, const uint8_t *buf, size_t len) {
  gzFile f = gzopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(gzwrite(f, buf, (unsigned)len), (int)len);
  assert_int_equal(gzclose(f), Z_OK);
}

static void test_gz_read(void **state) {
  (void)state;
  uint8_t img[4 + 12 + 5 * 6], lab[4 + 4 + 5];
  uint32_t di[3] = {5, 2, 3}, dl[1] = {5};
  size_t il = make_idx(img, 0x08, 3, di, 30), ll = make_idx(lab, 0x08, 1, dl, 5);
  for (int i = 0; i < 5; i++) lab[8 + i] = (uint8_t)(i % 3);
  img[16] = 255;
  char ip[300], lp[300];
  snprintf(ip, sizeof ip, "%s/img.gz", tmpdir);
  snprintf(lp, sizeof lp, "%s/lab.gz", tmpdir);
  write_gz(ip, img, il);
  write_gz(lp, lab, ll);

  uint8_t *buf = NULL;
  size_t len = 0;
  assert_int_equal(td_idx_read_gz(ip, 1 << 20, &buf, &len, NULL), 0);
  assert_int_equal(len, il);
  assert_memory_equal(buf, img, il);
  free(buf);
  /* The size cap: exactly il is fine, one byte less is refused. */
  assert_int_equal(td_idx_read_gz(ip, il, &buf, &len, NULL), 0);
  free(buf);
  td_err err;
  assert_int_equal(td_idx_read_gz(ip, il - 1, &buf, &len, &err), TD_ELIMIT);
  assert_null(buf);

  td_dataset ds;
  assert_int_equal(td_data_load_idx(ip, lp, 0, 3, &ds, NULL), 0);
  assert_int_equal(ds.n, 5);
  assert_int_equal(ds.d, 6);
  assert_true(ds.X[0] == 1.0); /* 255 / 255 */
  assert_true(ds.X[1] == 1.0 / 255.0);
  assert_int_equal(ds.y[4], 1);
  td_dataset_deinit(&ds);
  /* n_max takes the first examples in file order. */
  assert_int_equal(td_data_load_idx(ip, lp, 2, 3, &ds, NULL), 0);
  assert_int_equal(ds.n, 2);
  assert_int_equal(ds.y[1], 1);
  td_dataset_deinit(&ds);
  /* A label >= n_classes is refused. */
  assert_int_equal(td_data_load_idx(ip, lp, 0, 2, &ds, &err), TD_EINVAL);
  assert_non_null(strstr(err.msg, "label"));
  assert_null(ds.X);
  /* Images and labels disagree on n. */
  uint32_t dl4[1] = {4};
  ll = make_idx(lab, 0x08, 1, dl4, 4);
  memset(lab + 8, 0, 4);
  write_gz(lp, lab, ll);
  assert_int_equal(td_data_load_idx(ip, lp, 0, 3, &ds, &err), TD_EINVAL);
  /* Missing file. */
  char mp[300];
  snprintf(mp, sizeof mp, "%s/missing.gz", tmpdir);
  assert_int_equal(td_data_load_idx(mp, lp, 0, 3, &ds, &err), TD_ENOTFOUND);
}

static void test_gz_truncated_and_garbage(void **state) {
  (void)state;
  /* A compressed file cut in the middle: the gzip stream ends early -> TD_EIO. */
  static uint8_t img[16 + 4000];
  uint32_t di[3] = {10, 20, 20};
  size_t il = make_idx(img, 0x08, 3, di, 4000);
  td_rng r;
  td_rng_init(&r, 1, 1);
  for (size_t i = 16; i < il; i++) img[i] = (uint8_t)td_rng_u32(&r); /* incompressible */
  char p[300];
  snprintf(p, sizeof p, "%s/trunc.gz", tmpdir);
  write_gz(p, img, il);
  FILE *f = fopen(p, "rb");
  static uint8_t gz[8192];
  size_t gl = fread(gz, 1, sizeof gz, f);
  fclose(f);
  f = fopen(p, "wb");
  fwrite(gz, 1, gl / 2, f);
  fclose(f);
  uint8_t *buf = NULL;
  size_t len = 0;
  td_err err;
  assert_int_equal(td_idx_read_gz(p, 1 << 20, &buf, &len, &err), TD_EIO);
  assert_null(buf);
  /* Corrupted deflate data (flipped bytes after the gzip header) -> TD_EIO, no crash. */
  f = fopen(p, "wb");
  for (size_t i = 20; i < gl; i += 7) gz[i] ^= 0x5a;
  fwrite(gz, 1, gl, f);
  fclose(f);
  assert_int_equal(td_idx_read_gz(p, 1 << 20, &buf, &len, &err), TD_EIO);
  assert_null(buf);
}

static void test_synthetic(void **state) {
  (void)state;
  td_synth_cfg cfg = {.d = 6, .noise = 0.0, .decay = 2.0};
  td_dataset a, b, t;
  double wa[6], wt[6];
  assert_int_equal(td_data_synthetic(&cfg, 20000, 7, TD_RNG_DATA, &a, wa, NULL), 0);
  assert_int_equal(td_data_synthetic(&cfg, 20000, 7, TD_RNG_DATA, &b, NULL, NULL), 0);
  assert_int_equal(td_data_synthetic(&cfg, 10, 7, TD_RNG_TEST_DATA, &t, wt, NULL), 0);
  assert_memory_equal(a.X, b.X, 20000 * 6 * sizeof(double)); /* reproducible */
  assert_memory_equal(wa, wt, sizeof wa);                      /* one teacher per seed */
  assert_true(a.X[0] != t.X[0]);                               /* other stream, other X */
  assert_int_equal(a.k, 1);
  assert_null(a.y);
  /* noise 0: y = <w*, x> exactly (up to rounding of the same sum). */
  for (size_t i = 0; i < 100; i++) {
    double s = 0;
    for (int j = 0; j < 6; j++) s += wa[j] * a.X[i * 6 + j];
    assert_true(fabs(a.Y[i] - s) < 1e-12);
  }
  /* Feature variances ~ j^-decay: the sample variance of n normals has relative sd
   * sqrt(2/n) ~ 0.01; allow 5 sd. */
  for (int j = 0; j < 6; j++) {
    double s2 = 0;
    for (size_t i = 0; i < a.n; i++) s2 += a.X[i * 6 + j] * a.X[i * 6 + j];
    double want = pow(j + 1, -2.0);
    assert_true(fabs(s2 / a.n / want - 1.0) < 5 * sqrt(2.0 / a.n));
  }
  td_dataset_deinit(&a);
  td_dataset_deinit(&b);
  td_dataset_deinit(&t);
  cfg.noise = -1;
  assert_int_equal(td_data_synthetic(&cfg, 10, 7, 0, &a, NULL, NULL), TD_EINVAL);
  cfg.noise = 0;
  assert_int_equal(td_data_synthetic(&cfg, 0, 7, 0, &a, NULL, NULL), TD_EINVAL);
}

static void test_onehot(void **state) {
  (void)state;
  int y[3] = {2, 0, 1};
  double Y[9];
  td_data_onehot(Y, y, 3, 3);
  double want[9] = {0, 0, 1, 1, 0, 0, 0, 1, 0};
  assert_memory_equal(Y, want, sizeof want);
}

/* The real files (Debian dataset-fashion-mnist); skipped when absent. */
static void test_fashion_mnist(void **state) {
  (void)state;
  char p[4200];
  snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte.gz", td_data_dir());
  if (access(p, R_OK) != 0) skip();
  td_dataset ds;
  td_err err;
  assert_int_equal(td_data_fashion_mnist("test", 10, &ds, &err), 0);
  assert_int_equal(ds.n, 10);
  assert_int_equal(ds.d, 784);
  assert_int_equal(ds.k, 10);
  int want[10] = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7}; /* first t10k labels in file order */
  for (int i = 0; i < 10; i++) assert_int_equal(ds.y[i], want[i]);
  for (size_t i = 0; i < ds.n * ds.d; i++) assert_true(ds.X[i] >= 0.0 && ds.X[i] <= 1.0);
  td_dataset_deinit(&ds);
  assert_int_equal(td_data_fashion_mnist("train", 3, &ds, &err), 0);
  assert_int_equal(ds.y[0], 9);
  assert_int_equal(ds.y[1], 0);
  assert_int_equal(ds.y[2], 0);
  double s = 0;
  for (int j = 0; j < 784; j++) s += ds.X[j];
  assert_true(fabs(s - 76247.0 / 255.0) < 1e-9); /* pixel sum of image 0 */
  td_dataset_deinit(&ds);
  assert_int_equal(td_data_fashion_mnist("test", 10001, &ds, &err), TD_EINVAL);
  assert_int_equal(td_data_fashion_mnist("valid", 1, &ds, &err), TD_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idx_good),
      cmocka_unit_test(test_idx_corrupt),
      cmocka_unit_test(test_idx_random_bytes),
      cmocka_unit_test(test_gz_read),
      cmocka_unit_test(test_gz_truncated_and_garbage),
      cmocka_unit_test(test_synthetic),
      cmocka_unit_test(test_onehot),
      cmocka_unit_test(test_fashion_mnist),
  };
  return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
