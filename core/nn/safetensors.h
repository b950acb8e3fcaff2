/* safetensors.h: write and defensively parse the safetensors tensor format (F64 out; F64 and
 * F32 in), for parameter checkpoints that load directly into PyTorch.
 *
 * Format (https://github.com/huggingface/safetensors, README "Format"): an 8-byte little-endian
 * unsigned header length N; N bytes of UTF-8 JSON
 *   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F64", "shape": [..],
 *    "data_offsets": [begin, end]}, ...}
 * padded with trailing spaces; then the data buffer, each tensor little-endian, row-major (C
 * order), at [begin, end) relative to the start of the buffer. tdlab writes N as a multiple
 * of 8 so the data is 8-byte aligned, and stores tensors in the caller's order.
 * Model checkpoints use `layers.{i}.weight` shape (out, in) and `layers.{i}.bias` shape
 * (out): the torch.nn.Linear layout. */
#ifndef TD_SAFETENSORS_H
#define TD_SAFETENSORS_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"

#define TD_SAFETENSORS_MAX_DIM 8                        /* rank cap (reader and writer) */
#define TD_SAFETENSORS_MAX_HEADER ((size_t)100 << 20)   /* as the reference implementation */

/* One tensor to write; everything borrowed. */
typedef struct td_safetensors_entry {
  const char *name;    /* valid UTF-8, non-empty, unique, not "__metadata__" */
  size_t ndim;         /* 0 (a scalar) .. TD_SAFETENSORS_MAX_DIM */
  const size_t *shape; /* ndim dimensions (may be NULL if ndim == 0) */
  const double *data;  /* prod(shape) values, row-major (may be NULL if that is 0) */
} td_safetensors_entry;

/* td_safetensors_write: serialize `n` F64 tensors (and optional metadata, a JSON object whose
 * values are all strings, borrowed; NULL for none) into a new malloc'd buffer.
 * Errors: TD_EINVAL (bad name, duplicate name, rank, NULL data, metadata not an object of
 * strings; err->field says which), TD_ENOMEM, TD_ERANGE (sizes overflow or the header exceeds
 * TD_SAFETENSORS_MAX_HEADER). Ownership: on success the caller frees *buf (OUT) with free();
 * on error *buf is NULL and *len 0. */
int td_safetensors_write(const td_safetensors_entry *tensors, size_t n, const json_t *metadata,
                         unsigned char **buf /* OUT */, size_t *len /* OUT */, td_err *err);

/* One tensor of a parsed file; valid while its td_safetensors lives. */
typedef struct td_safetensors_tensor {
  const char *name;
  char dtype[8];     /* as written in the header: "F64", "F32", "I64", "BF16", ... */
  size_t elem_size;  /* bytes per element */
  size_t ndim;
  size_t shape[TD_SAFETENSORS_MAX_DIM];
  size_t numel;      /* prod(shape) (1 for a scalar) */
  size_t offset;     /* begin of the data, bytes from the start of the data buffer */
  size_t nbytes;     /* numel * elem_size */
} td_safetensors_tensor;

typedef struct td_safetensors td_safetensors;

/* td_safetensors_parse: validate `buf` (len bytes) as a safetensors file, treating it as
 * hostile: the header length fits the buffer and TD_SAFETENSORS_MAX_HEADER; the header is a
 * JSON object starting with '{' and without duplicate keys (jansson JSON_REJECT_DUPLICATES);
 * "__metadata__" is an object of strings; every other entry has exactly the keys dtype (a
 * known safetensors dtype), shape (<= TD_SAFETENSORS_MAX_DIM non-negative integers) and
 * data_offsets (two non-negative integers, begin <= end); numel * elem_size does not overflow
 * and equals end - begin; and, as in the reference implementation, the tensors tile the data
 * buffer exactly: no overlap, no gap, nothing after the last one.
 * Errors: TD_EINVAL (malformed; err->msg says what and where), TD_ELIMIT (header too big),
 * TD_ENOMEM. Ownership: `buf` is borrowed and must outlive *st (OUT), which the caller frees
 * with td_safetensors_destroy; *st is NULL on error. */
int td_safetensors_parse(const void *buf, size_t len, td_safetensors **st /* OUT */, td_err *err);

/* td_safetensors_destroy: free a parsed file (not its buffer). NULL is a no-op. */
void td_safetensors_destroy(td_safetensors *st);

/* td_safetensors_count / td_safetensors_at: the tensors in header order (i < count). */
size_t td_safetensors_count(const td_safetensors *st);
const td_safetensors_tensor *td_safetensors_at(const td_safetensors *st, size_t i);

/* td_safetensors_find: the tensor called `name`, or NULL. Linear in the tensor count. */
const td_safetensors_tensor *td_safetensors_find(const td_safetensors *st, const char *name);

/* td_safetensors_metadata: the "__metadata__" value of `key` (borrowed), or NULL. */
const char *td_safetensors_metadata(const td_safetensors *st, const char *key);

/* td_safetensors_metadata_object: the whole "__metadata__" object (borrowed, valid while st
 * lives; an object of strings), or NULL when the file has none. */
const json_t *td_safetensors_metadata_object(const td_safetensors *st);

/* td_safetensors_check_float: every tensor of st has dtype F64 or F32 and only finite
 * values (the upload rule of POST /api/v1/checkpoints). Reads every value once, O(file).
 * Errors: TD_EINVAL with err->field = the first offending tensor's name and a message giving
 * its dtype, or the value and flat index of its first non-finite element. */
int td_safetensors_check_float(const td_safetensors *st, td_err *err);

/* td_safetensors_read_f64: copy tensor `name` into out (numel doubles), converting F32 to
 * double exactly. The stored shape must equal (ndim, shape) exactly, so a checkpoint of a
 * different architecture is refused rather than silently reinterpreted.
 * Errors: TD_ENOTFOUND (no such tensor; field = name), TD_EINVAL (shape mismatch, or a dtype
 * other than F64/F32). Nothing is written to out on error. */
int td_safetensors_read_f64(const td_safetensors *st, const char *name, size_t ndim,
                            const size_t *shape, double *out /* OUT */, td_err *err);

#endif
