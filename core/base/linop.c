/* linop.c: dense/diagonal matvec callbacks and counter-based probe vectors. */
#include "base/linop.h"

#include <assert.h>
#include <cblas.h>

#include "base/rng.h"

void td_linop_dense_matvec(void *ctx, const double *v, double *out, size_t n) {
  const double *a = ctx;
  assert(a && v && out && v != out);
  /* out = A v, A row-major n x n, no transpose. */
  cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)n, (int)n, 1.0, a, (int)n, v, 1, 0.0, out, 1);
}

void td_linop_diag_matvec(void *ctx, const double *v, double *out, size_t n) {
  const double *d = ctx;
  assert(d && v && out);
  for (size_t i = 0; i < n; i++) out[i] = d[i] * v[i];
}

/* The td_rng stream of probe stream `stream` (documented in linop.h). */
static void probe_rng(td_rng *r, uint64_t seed, uint64_t stream) {
  td_rng_init(r, seed, (uint64_t)TD_RNG_PROBE + ((stream + 1) << 32));
}

void td_linop_rademacher(double *v, size_t n, uint64_t seed, uint64_t stream) {
  assert(v || n == 0);
  td_rng r;
  probe_rng(&r, seed, stream);
  for (size_t b = 0; b < n; b += 64) {
    uint64_t bits = td_rng_u64(&r);
    size_t end = b + 64 < n ? b + 64 : n;
    for (size_t i = b; i < end; i++, bits >>= 1) v[i] = (bits & 1u) ? 1.0 : -1.0;
  }
}

void td_linop_gaussian(double *v, size_t n, uint64_t seed, uint64_t stream) {
  assert(v || n == 0);
  td_rng r;
  probe_rng(&r, seed, stream);
  td_rng_fill_normal(&r, v, n, 1.0);
}
