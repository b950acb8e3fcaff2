/* rng.h: seeded, counter-based random numbers (Philox4x32-10) that are reproducible per seed. */
#ifndef TD_RNG_H
#define TD_RNG_H

#include <stddef.h>
#include <stdint.h>

/* A Philox4x32-10 stream (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011). The key is the 64-bit seed; the 128-bit counter is (index, stream):
 * block i of stream s is philox(ctr = {lo(i), hi(i), lo(s), hi(s)}, key = {lo(seed),
 * hi(seed)}). Different streams of one seed are independent, so a job draws its init, its
 * data and its shuffles from separate streams and changing one never shifts another.
 * Plain value type: copy it to fork the state; no allocation, no global state. */
typedef struct td_rng {
  uint64_t seed;
  uint64_t stream;
  uint64_t index;     /* next block to generate */
  uint32_t buf[4];    /* current block */
  int pos;            /* next unused word of buf (4 = empty) */
  int has_spare;      /* Box-Muller keeps its second normal */
  double spare;
} td_rng;

/* Well-known stream ids used by the kinds (any uint64 works). */
enum { TD_RNG_INIT = 1, TD_RNG_DATA = 2, TD_RNG_SHUFFLE = 3, TD_RNG_TEACHER = 4,
       TD_RNG_TEST_DATA = 5, TD_RNG_PROBE = 6 };

/* td_rng_philox4x32_10: the raw block function; out = Philox4x32-10(ctr, key). Source:
 * Salmon et al. 2011, Random123 reference (10 rounds, multipliers 0xD2511F53, 0xCD9E8D57,
 * Weyl key bumps 0x9E3779B9, 0xBB67AE85). Checked against Random123's kat_vectors. */
void td_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* td_rng_init: start stream `stream` of `seed` at block 0. Never fails. */
void td_rng_init(td_rng *r, uint64_t seed, uint64_t stream);

/* td_rng_u32 / td_rng_u64: uniform 32/64 random bits (u64 = two consecutive words). */
uint32_t td_rng_u32(td_rng *r);
uint64_t td_rng_u64(td_rng *r);

/* td_rng_uniform: uniform double in [0, 1) with 53 random bits: (u64 >> 11) * 2^-53. */
double td_rng_uniform(td_rng *r);

/* td_rng_normal: standard normal N(0, 1) by the Box-Muller transform (Box and Muller 1958),
 * u1 in (0, 1] so log never sees 0; the second value of each pair is cached in the state. */
double td_rng_normal(td_rng *r);

/* td_rng_fill_normal: x[i] = std * N(0,1) for i < n. */
void td_rng_fill_normal(td_rng *r, double *x, size_t n, double std);

/* td_rng_below: uniform integer in [0, n) for n >= 1 without modulo bias (rejection of the
 * incomplete top range). n == 0 returns 0. */
uint64_t td_rng_below(td_rng *r, uint64_t n);

/* td_rng_shuffle: uniform random permutation of idx[0..n) in place (Fisher-Yates, Knuth
 * TAOCP vol. 2, Algorithm P). */
void td_rng_shuffle(td_rng *r, size_t *idx, size_t n);

#endif
