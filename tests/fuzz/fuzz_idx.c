/* fuzz_idx.c: libFuzzer harness of the IDX parser (td_idx_parse, core/nn/data.h) on an in-memory
 * buffer, and of td_data_from_idx on what it accepts. Input: the bytes of an (uncompressed)
 * IDX file. Checks, besides the sanitizers: on success the header, the dims and the data
 * account for every byte (no trailing bytes; data inside the buffer; count = product of
 * dims); on failure *out is zeroed. A parsed u8 tensor is then turned into a dataset with the
 * first byte of each example as its label (n_classes 256 accepts every label; 10 exercises the
 * label check), and the pixels must land in [0, 1]. */
#include <stdint.h>

#include "nn/data.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  td_idx idx;
  memset(&idx, 0xA5, sizeof idx);
  td_err e;
  td_err_clear(&e);
  int rc = td_idx_parse(data, size, &idx, &e);
  if (rc) {
    static const td_idx zero;
    FZ_ASSERT(rc < 0 && memcmp(&idx, &zero, sizeof idx) == 0, "rc %d, out not zeroed", rc);
    return 0;
  }
  FZ_ASSERT(idx.ndim >= 1 && idx.ndim <= TD_IDX_MAX_DIMS, "ndim %d", idx.ndim);
  size_t count = 1;
  for (int i = 0; i < idx.ndim; i++) {
    FZ_ASSERT(idx.dims[i] >= 1, "dim %d is 0", i);
    count *= idx.dims[i];
  }
  FZ_ASSERT(count == idx.count, "count %zu, product %zu", idx.count, count);
  size_t header = 4 + 4 * (size_t)idx.ndim;
  FZ_ASSERT(idx.data == data + header, "data does not follow the header");
  FZ_ASSERT(header + idx.count * (size_t)idx.elem_size == size, "bytes unaccounted for");
  if (idx.type != 0x08) return 0;
  /* Labels: a 1-D u8 view of the first byte of every example. */
  size_t n = idx.dims[0], per = idx.count / n;
  uint8_t *lab = malloc(n);
  if (!lab) return 0;
  for (size_t i = 0; i < n; i++) lab[i] = idx.data[i * per];
  td_idx labels = {.type = 0x08, .elem_size = 1, .ndim = 1, .dims = {n}, .count = n,
                   .data = lab};
  int n_classes = (data[size - 1] & 1) ? 10 : 256;
  td_dataset ds;
  rc = td_data_from_idx(&idx, &labels, n > 3 ? n - 2 : 0, n_classes, &ds, &e);
  if (rc == 0) {
    FZ_ASSERT(ds.n >= 1 && ds.n <= n && ds.d * n == idx.count, "n %zu d %zu", ds.n, ds.d);
    for (size_t i = 0; i < ds.n * ds.d; i++)
      FZ_ASSERT(ds.X[i] >= 0.0 && ds.X[i] <= 1.0, "pixel %zu = %g", i, ds.X[i]);
    for (size_t i = 0; i < ds.n; i++)
      FZ_ASSERT(ds.y[i] >= 0 && ds.y[i] < n_classes, "label %zu = %d", i, ds.y[i]);
    td_dataset_deinit(&ds);
  } else {
    FZ_ASSERT(rc < 0 && ds.X == NULL && ds.y == NULL, "rc %d, out not zeroed", rc);
  }
  free(lab);
  return 0;
}
