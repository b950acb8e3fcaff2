/* data.h: datasets: the IDX (MNIST format, gzip) loader, Fashion-MNIST, synthetic generators. */
#ifndef TD_DATA_H
#define TD_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define TD_IDX_MAX_DIMS 8

/* One parsed IDX tensor. Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero
 * bytes, a type byte (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64), a byte with
 * the number of dims, then each dim as a big-endian uint32, then the data in row-major order
 * (big-endian for multi-byte types). */
typedef struct td_idx {
  int type;                      /* the type byte */
  int elem_size;                 /* bytes per element */
  int ndim;                      /* 1 .. TD_IDX_MAX_DIMS */
  size_t dims[TD_IDX_MAX_DIMS];  /* each >= 1 */
  size_t count;                  /* product of dims */
  const uint8_t *data;           /* count * elem_size bytes, borrowed from the parsed buffer */
} td_idx;

/* td_idx_parse: parse an in-memory (already decompressed) IDX file of `len` bytes. Never
 * reads outside buf[0..len), never allocates, never crashes on hostile bytes (this is the
 * fuzz entry point). Errors (TD_EINVAL, message says which): too short, bad magic, unknown
 * type, 0 or more than TD_IDX_MAX_DIMS dims, a zero dim, a size that overflows, truncated
 * data, or trailing bytes after the data. On error *out is zeroed. */
int td_idx_parse(const uint8_t *buf, size_t len, td_idx *out /* OUT */, td_err *err);

/* td_idx_read_gz: read the whole file at `path` through zlib's gzopen (a plain, uncompressed
 * file is read as is) into a new malloc'ed buffer (*buf, OUT, caller frees) of *len bytes.
 * At most max_bytes are accepted (gzip bomb guard). Errors: TD_ENOTFOUND (cannot open),
 * TD_EIO (corrupt or truncated gzip stream), TD_ELIMIT (larger than max_bytes), TD_ENOMEM.
 * On error *buf is NULL. */
int td_idx_read_gz(const char *path, size_t max_bytes, uint8_t **buf /* OUT */,
                   size_t *len /* OUT */, td_err *err);

/* A dataset in memory. X is n x d row-major. Classification sets have labels y (n entries in
 * [0, k)); regression sets have targets Y (n x k). Owned by the struct (td_dataset_deinit). */
typedef struct td_dataset {
  size_t n;   /* examples */
  size_t d;   /* features */
  int k;      /* classes (when y) or target dimension (when Y) */
  double *X;  /* n x d */
  int *y;     /* n labels, or NULL */
  double *Y;  /* n x k targets, or NULL */
} td_dataset;

/* td_dataset_deinit: free the arrays and zero the struct. NULL and zeroed structs are fine. */
void td_dataset_deinit(td_dataset *ds);

/* td_dataset_copy: a deep copy of src into dst (X, and y and Y when present; the caller owns
 * dst: td_dataset_deinit). Errors: TD_ENOMEM (dst is then zeroed). */
int td_dataset_copy(td_dataset *dst /* OUT */, const td_dataset *src, td_err *err);

/* td_data_from_idx: build a classification set from parsed images (u8, n x d1 x d2 ...) and
 * labels (u8, n): the first min(n, n_max) examples in file order (n_max 0: all), pixels scaled
 * by 1/255 to [0, 1], d = product of the image dims. Errors: TD_EINVAL when the types are not
 * u8, the counts differ, or a label is >= n_classes; TD_ENOMEM. *out is zeroed on error. */
int td_data_from_idx(const td_idx *images, const td_idx *labels, size_t n_max, int n_classes,
                     td_dataset *out /* OUT */, td_err *err);

/* td_data_load_idx: read (at most 512 MiB decompressed each) and parse an images and a labels
 * .gz IDX file, then td_data_from_idx.
 * Errors as td_idx_read_gz, td_idx_parse and td_data_from_idx (message names the file). */
int td_data_load_idx(const char *images_path, const char *labels_path, size_t n_max,
                     int n_classes, td_dataset *out /* OUT */, td_err *err);

/* td_data_dir: $TDLAB_DATA_DIR if set and non-empty, else /usr/share/datasets/fashion-mnist. */
const char *td_data_dir(void);

/* td_data_fashion_mnist: Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) split "train" (60000)
 * or "test" (10000) from td_data_dir(): the FIRST n_max examples in file order (0: all), no
 * shuffling, d = 784, k = 10, pixels in [0, 1]. Errors: TD_EINVAL (bad split, n_max above the
 * split size), and those of td_data_load_idx. */
int td_data_fashion_mnist(const char *split, size_t n_max, td_dataset *out /* OUT */,
                          td_err *err);

/* Synthetic linear-teacher regression: x ~ N(0, diag(i^-decay)), i = 1..d (the feature
 * covariance has eigenvalues i^-decay), y = <w*, x> + noise * N(0, 1), k = 1, with the
 * teacher w* ~ N(0, I/d) drawn from stream TD_RNG_TEACHER of the seed (so a train and a test
 * set of one seed share it) and X, noise from stream `stream`. */
typedef struct td_synth_cfg {
  size_t d;
  double noise;
  double decay;
} td_synth_cfg;

/* td_data_synthetic: n examples as above into *out (OUT). w_teacher (OUT, d entries, may be
 * NULL) receives w*. Errors: TD_EINVAL (n or d zero, noise/decay negative or not finite),
 * TD_ENOMEM. */
int td_data_synthetic(const td_synth_cfg *cfg, size_t n, uint64_t seed, uint64_t stream,
                      td_dataset *out /* OUT */, double *w_teacher /* OUT */, td_err *err);

/* td_data_onehot: Y (n x k) = one-hot rows of labels y (each in [0, k)). Kernel. */
void td_data_onehot(double *Y, const int *y, size_t n, int k);

#endif
