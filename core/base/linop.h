/* linop.h: abstract symmetric linear operators (matvec callbacks) and seeded probe vectors
 * for the spectral methods (lanczos, power, hutchinson, slq). */
#ifndef TD_LINOP_H
#define TD_LINOP_H

#include <stddef.h>
#include <stdint.h>

/* td_matvec_fn: out = A v for a symmetric n x n operator A that is never formed.
 * `v` (n) is borrowed and must not be modified; `out` (n) is fully overwritten and never
 * aliases `v`. `ctx` is the operator's state (e.g. a model, a batch and a parameter point).
 * A matvec cannot fail: an operator that can must record the failure in its ctx (the spectral
 * routines also stop with TD_ERANGE as soon as they see a non-finite value). */
typedef void (*td_matvec_fn)(void *ctx, const double *v, double *out /* OUT */, size_t n);

/* td_linop_dense_matvec: a td_matvec_fn for a dense row-major n x n matrix; ctx is
 * `const double *A` (borrowed). out = A v with one cblas_dgemv (A need not be symmetric,
 * but the spectral methods assume it is). For tests and small problems. */
void td_linop_dense_matvec(void *ctx, const double *v, double *out /* OUT */, size_t n);

/* td_linop_diag_matvec: a td_matvec_fn for diag(d); ctx is `const double *d` (n, borrowed). */
void td_linop_diag_matvec(void *ctx, const double *v, double *out /* OUT */, size_t n);

/* td_linop_rademacher: fill v (n) with independent +-1 entries, P(+1) = 1/2 (one random bit
 *   each, low bits of td_rng_u64 first).
 * td_linop_gaussian:   fill v (n) with independent N(0, 1) entries (td_rng_fill_normal).
 * Both draw from td_rng (Philox4x32-10, core/base/rng.h) stream TD_RNG_PROBE + ((stream + 1) << 32)
 * of `seed`: disjoint from the kinds' small stream ids (init, data, shuffle, ...), and probe p
 * (stream = p) is reproducible on its own, whatever the order of the calls. */
void td_linop_rademacher(double *v /* OUT */, size_t n, uint64_t seed, uint64_t stream);
void td_linop_gaussian(double *v /* OUT */, size_t n, uint64_t seed, uint64_t stream);

#endif
