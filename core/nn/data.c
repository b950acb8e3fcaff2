/* data.c: the IDX (gzip) loader, Fashion-MNIST and the synthetic linear-teacher generator. */
#include "nn/data.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "base/rng.h"

static int idx_elem_size(int type) {
  switch (type) {
  case 0x08: case 0x09: return 1;
  case 0x0B: return 2;
  case 0x0C: case 0x0D: return 4;
  case 0x0E: return 8;
  default: return 0;
  }
}

int td_idx_parse(const uint8_t *buf, size_t len, td_idx *out, td_err *err) {
  memset(out, 0, sizeof *out);
  if (!buf || len < 4)
    return td_err_set(err, TD_EINVAL, NULL, "idx: file too short (%zu bytes) for a header", len);
  if (buf[0] != 0 || buf[1] != 0)
    return td_err_set(err, TD_EINVAL, NULL, "idx: bad magic %02x %02x (want 00 00)", buf[0],
                      buf[1]);
  int type = buf[2], ndim = buf[3];
  int es = idx_elem_size(type);
  if (!es) return td_err_set(err, TD_EINVAL, NULL, "idx: unknown element type 0x%02x", type);
  if (ndim < 1 || ndim > TD_IDX_MAX_DIMS)
    return td_err_set(err, TD_EINVAL, NULL, "idx: %d dimensions (want 1..%d)", ndim,
                      TD_IDX_MAX_DIMS);
  size_t hdr = 4 + 4 * (size_t)ndim;
  if (len < hdr)
    return td_err_set(err, TD_EINVAL, NULL, "idx: header truncated (%zu of %zu bytes)", len, hdr);
  size_t count = 1;
  size_t dims[TD_IDX_MAX_DIMS];
  for (int i = 0; i < ndim; i++) {
    const uint8_t *p = buf + 4 + 4 * i;
    uint32_t v = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    if (v == 0) return td_err_set(err, TD_EINVAL, NULL, "idx: dimension %d is zero", i);
    dims[i] = v;
    if (count > SIZE_MAX / v)
      return td_err_set(err, TD_EINVAL, NULL, "idx: element count overflows");
    count *= v;
  }
  if (count > (SIZE_MAX - hdr) / (size_t)es)
    return td_err_set(err, TD_EINVAL, NULL, "idx: data size overflows");
  size_t need = count * (size_t)es;
  if (len - hdr < need)
    return td_err_set(err, TD_EINVAL, NULL, "idx: data truncated (%zu of %zu bytes)", len - hdr,
                      need);
  if (len - hdr > need)
    return td_err_set(err, TD_EINVAL, NULL, "idx: %zu trailing bytes after the data",
                      len - hdr - need);
  out->type = type;
  out->elem_size = es;
  out->ndim = ndim;
  memcpy(out->dims, dims, (size_t)ndim * sizeof dims[0]);
  out->count = count;
  out->data = buf + hdr;
  return 0;
}

int td_idx_read_gz(const char *path, size_t max_bytes, uint8_t **buf, size_t *len, td_err *err) {
  *buf = NULL;
  *len = 0;
  gzFile f = gzopen(path, "rb");
  if (!f) return td_err_set(err, TD_ENOTFOUND, NULL, "cannot open %s", path);
  gzbuffer(f, 1 << 17);
  if (max_bytes < 1) max_bytes = 1;
  size_t cap = max_bytes < ((size_t)1 << 20) ? max_bytes : (size_t)1 << 20, n = 0;
  uint8_t *b = malloc(cap);
  if (!b) {
    gzclose(f);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory reading %s", path);
  }
  for (;;) {
    if (n == cap) {
      if (cap >= max_bytes) {
        /* Probe one more byte: exactly max_bytes is fine, more is not. */
        unsigned char extra;
        int r = gzread(f, &extra, 1);
        if (r == 0) break;
        free(b);
        gzclose(f);
        if (r < 0) return td_err_set(err, TD_EIO, NULL, "corrupt gzip data in %s", path);
        return td_err_set(err, TD_ELIMIT, NULL, "%s is larger than %zu bytes", path, max_bytes);
      }
      size_t ncap = cap > max_bytes / 2 ? max_bytes : cap * 2;
      uint8_t *nb = realloc(b, ncap);
      if (!nb) {
        free(b);
        gzclose(f);
        return td_err_set(err, TD_ENOMEM, NULL, "out of memory reading %s", path);
      }
      b = nb;
      cap = ncap;
    }
    size_t want = cap - n;
    if (want > (1u << 30)) want = 1u << 30;
    int r = gzread(f, b + n, (unsigned)want);
    if (r < 0) {
      int zerr = 0;
      const char *msg = gzerror(f, &zerr);
      td_err_set(err, TD_EIO, NULL, "corrupt or truncated gzip data in %s: %s", path,
                 msg ? msg : "?");
      free(b);
      gzclose(f);
      return TD_EIO;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  /* gzread returns 0 at a clean end, but a truncated stream also ends with 0 and sets
   * Z_BUF_ERROR ("unexpected end of file"): check it. */
  int zerr = Z_OK;
  const char *msg = gzerror(f, &zerr);
  if (zerr != Z_OK && zerr != Z_STREAM_END) {
    td_err_set(err, TD_EIO, NULL, "corrupt or truncated gzip data in %s: %s", path,
               msg ? msg : "?");
    free(b);
    gzclose(f);
    return TD_EIO;
  }
  if (gzclose(f) != Z_OK) {
    free(b);
    return td_err_set(err, TD_EIO, NULL, "error closing %s (truncated gzip?)", path);
  }
  *buf = b;
  *len = n;
  return 0;
}

int td_dataset_copy(td_dataset *dst, const td_dataset *src, td_err *err) {
  memset(dst, 0, sizeof *dst);
  dst->n = src->n;
  dst->d = src->d;
  dst->k = src->k;
  const size_t nx = src->n * src->d, ny = src->n * (size_t)src->k;
  dst->X = malloc(sizeof(double) * (nx > 0 ? nx : 1));
  if (src->y) dst->y = malloc(sizeof(int) * (src->n > 0 ? src->n : 1));
  if (src->Y) dst->Y = malloc(sizeof(double) * (ny > 0 ? ny : 1));
  if (!dst->X || (src->y && !dst->y) || (src->Y && !dst->Y)) {
    td_dataset_deinit(dst);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory copying a data set");
  }
  memcpy(dst->X, src->X, sizeof(double) * src->n * src->d);
  if (src->y) memcpy(dst->y, src->y, sizeof(int) * src->n);
  if (src->Y) memcpy(dst->Y, src->Y, sizeof(double) * src->n * (size_t)src->k);
  return 0;
}

void td_dataset_deinit(td_dataset *ds) {
  if (!ds) return;
  free(ds->X);
  free(ds->y);
  free(ds->Y);
  memset(ds, 0, sizeof *ds);
}

int td_data_from_idx(const td_idx *images, const td_idx *labels, size_t n_max, int n_classes,
                     td_dataset *out, td_err *err) {
  memset(out, 0, sizeof *out);
  if (images->type != 0x08 || labels->type != 0x08)
    return td_err_set(err, TD_EINVAL, NULL, "idx: images and labels must be unsigned bytes");
  if (images->ndim < 1 || labels->ndim != 1)
    return td_err_set(err, TD_EINVAL, NULL, "idx: labels must be a vector");
  if (images->dims[0] != labels->dims[0])
    return td_err_set(err, TD_EINVAL, NULL, "idx: %zu images but %zu labels", images->dims[0],
                      labels->dims[0]);
  if (n_classes < 1 || n_classes > 256)
    return td_err_set(err, TD_EINVAL, NULL, "idx: n_classes %d out of 1..256", n_classes);
  size_t n = images->dims[0];
  if (n_max && n_max < n) n = n_max;
  size_t d = images->count / images->dims[0];
  if (d == 0 || n > SIZE_MAX / sizeof(double) / d)
    return td_err_set(err, TD_EINVAL, NULL, "idx: images too large");
  for (size_t i = 0; i < n; i++)
    if (labels->data[i] >= n_classes)
      return td_err_set(err, TD_EINVAL, NULL, "idx: label %d of example %zu is not below %d",
                        labels->data[i], i, n_classes);
  double *X = malloc(n * d * sizeof *X);
  int *y = malloc(n * sizeof *y);
  if (!X || !y) {
    free(X);
    free(y);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory for %zu x %zu images", n, d);
  }
  const uint8_t *px = images->data;
  for (size_t i = 0; i < n * d; i++) X[i] = px[i] / 255.0;
  for (size_t i = 0; i < n; i++) y[i] = labels->data[i];
  out->n = n;
  out->d = d;
  out->k = n_classes;
  out->X = X;
  out->y = y;
  return 0;
}

int td_data_load_idx(const char *images_path, const char *labels_path, size_t n_max,
                     int n_classes, td_dataset *out, td_err *err) {
  memset(out, 0, sizeof *out);
  const size_t max_bytes = (size_t)512 << 20; /* gzip-bomb guard; Fashion-MNIST is 47 MB */
  uint8_t *ib = NULL, *lb = NULL;
  size_t il = 0, ll = 0;
  td_idx im, lab;
  int rc = td_idx_read_gz(images_path, max_bytes, &ib, &il, err);
  if (rc) return rc;
  rc = td_idx_read_gz(labels_path, max_bytes, &lb, &ll, err);
  if (rc) goto done;
  if ((rc = td_idx_parse(ib, il, &im, err))) {
    if (err) {
      char tmp[sizeof err->msg];
      snprintf(tmp, sizeof tmp, "%s", err->msg);
      td_err_set(err, rc, NULL, "%s: %s", images_path, tmp);
    }
    goto done;
  }
  if ((rc = td_idx_parse(lb, ll, &lab, err))) {
    if (err) {
      char tmp[sizeof err->msg];
      snprintf(tmp, sizeof tmp, "%s", err->msg);
      td_err_set(err, rc, NULL, "%s: %s", labels_path, tmp);
    }
    goto done;
  }
  rc = td_data_from_idx(&im, &lab, n_max, n_classes, out, err);
done:
  free(ib);
  free(lb);
  return rc;
}

const char *td_data_dir(void) {
  const char *d = getenv("TDLAB_DATA_DIR");
  return (d && *d) ? d : "/usr/share/datasets/fashion-mnist";
}

int td_data_fashion_mnist(const char *split, size_t n_max, td_dataset *out, td_err *err) {
  memset(out, 0, sizeof *out);
  const char *prefix;
  size_t total;
  if (split && strcmp(split, "train") == 0) {
    prefix = "train";
    total = 60000;
  } else if (split && strcmp(split, "test") == 0) {
    prefix = "t10k";
    total = 10000;
  } else {
    return td_err_set(err, TD_EINVAL, NULL, "fashion-mnist: unknown split '%s'",
                      split ? split : "");
  }
  if (n_max > total)
    return td_err_set(err, TD_EINVAL, NULL, "fashion-mnist %s has %zu examples, not %zu", split,
                      total, n_max);
  char ip[4096], lp[4096];
  const char *dir = td_data_dir();
  int a = snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
  int b = snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
  if (a < 0 || b < 0 || (size_t)a >= sizeof ip || (size_t)b >= sizeof lp)
    return td_err_set(err, TD_EINVAL, NULL, "data directory path too long");
  return td_data_load_idx(ip, lp, n_max, 10, out, err);
}

int td_data_synthetic(const td_synth_cfg *cfg, size_t n, uint64_t seed, uint64_t stream,
                      td_dataset *out, double *w_teacher, td_err *err) {
  memset(out, 0, sizeof *out);
  if (!cfg || n == 0 || cfg->d == 0 || !(cfg->noise >= 0) || !isfinite(cfg->noise) ||
      !(cfg->decay >= 0) || !isfinite(cfg->decay))
    return td_err_set(err, TD_EINVAL, NULL, "synthetic: need n, d >= 1, noise, decay >= 0");
  size_t d = cfg->d;
  if (n > SIZE_MAX / sizeof(double) / d)
    return td_err_set(err, TD_EINVAL, NULL, "synthetic: n x d too large");
  double *X = malloc(n * d * sizeof *X);
  double *Y = malloc(n * sizeof *Y);
  double *w = malloc(d * sizeof *w);
  double *sd = malloc(d * sizeof *sd);
  if (!X || !Y || !w || !sd) {
    free(X);
    free(Y);
    free(w);
    free(sd);
    return td_err_set(err, TD_ENOMEM, NULL, "synthetic: out of memory (%zu x %zu)", n, d);
  }
  td_rng r;
  td_rng_init(&r, seed, TD_RNG_TEACHER);
  td_rng_fill_normal(&r, w, d, 1.0 / sqrt((double)d));
  for (size_t j = 0; j < d; j++) sd[j] = pow((double)(j + 1), -0.5 * cfg->decay);
  td_rng_init(&r, seed, stream);
  for (size_t i = 0; i < n; i++) {
    double *x = X + i * d, s = 0.0;
    for (size_t j = 0; j < d; j++) {
      x[j] = sd[j] * td_rng_normal(&r);
      s += w[j] * x[j];
    }
    Y[i] = s + cfg->noise * td_rng_normal(&r);
  }
  if (w_teacher) memcpy(w_teacher, w, d * sizeof *w);
  free(w);
  free(sd);
  out->n = n;
  out->d = d;
  out->k = 1;
  out->X = X;
  out->Y = Y;
  return 0;
}

void td_data_onehot(double *Y, const int *y, size_t n, int k) {
  assert(k >= 1);
  memset(Y, 0, n * (size_t)k * sizeof *Y);
  for (size_t i = 0; i < n; i++) {
    assert(y[i] >= 0 && y[i] < k);
    Y[i * (size_t)k + (size_t)y[i]] = 1.0;
  }
}
