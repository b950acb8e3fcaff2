/* rng.c: Philox4x32-10 counter-based generator and the distributions built on it. */
#include "base/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void td_rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += PHILOX_W0;
      k1 += PHILOX_W1;
    }
    uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
    uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

void td_rng_init(td_rng *r, uint64_t seed, uint64_t stream) {
  r->seed = seed;
  r->stream = stream;
  r->index = 0;
  r->pos = 4;
  r->has_spare = 0;
  r->spare = 0.0;
  r->buf[0] = r->buf[1] = r->buf[2] = r->buf[3] = 0;
}

static void refill(td_rng *r) {
  uint32_t ctr[4] = {(uint32_t)r->index, (uint32_t)(r->index >> 32), (uint32_t)r->stream,
                     (uint32_t)(r->stream >> 32)};
  uint32_t key[2] = {(uint32_t)r->seed, (uint32_t)(r->seed >> 32)};
  td_rng_philox4x32_10(ctr, key, r->buf);
  r->index++;
  r->pos = 0;
}

uint32_t td_rng_u32(td_rng *r) {
  if (r->pos >= 4) refill(r);
  return r->buf[r->pos++];
}

uint64_t td_rng_u64(td_rng *r) {
  uint64_t lo = td_rng_u32(r);
  uint64_t hi = td_rng_u32(r);
  return lo | (hi << 32);
}

double td_rng_uniform(td_rng *r) { return (double)(td_rng_u64(r) >> 11) * 0x1.0p-53; }

double td_rng_normal(td_rng *r) {
  if (r->has_spare) {
    r->has_spare = 0;
    return r->spare;
  }
  double u1 = 1.0 - td_rng_uniform(r); /* (0, 1] */
  double u2 = td_rng_uniform(r);
  double rad = sqrt(-2.0 * log(u1));
  double th = 6.283185307179586476925287 * u2;
  r->spare = rad * sin(th);
  r->has_spare = 1;
  return rad * cos(th);
}

void td_rng_fill_normal(td_rng *r, double *x, size_t n, double std) {
  for (size_t i = 0; i < n; i++) x[i] = std * td_rng_normal(r);
}

uint64_t td_rng_below(td_rng *r, uint64_t n) {
  if (n <= 1) return 0;
  /* Accept x < limit, where limit is the largest multiple of n that fits in 2^64. */
  uint64_t rem = (0 - n) % n; /* 2^64 mod n */
  uint64_t x;
  do {
    x = td_rng_u64(r);
  } while (x < rem); /* reject the low `rem` values: the rest is a whole number of blocks */
  return x % n;
}

void td_rng_shuffle(td_rng *r, size_t *idx, size_t n) {
  if (n < 2) return;
  for (size_t i = n - 1; i > 0; i--) {
    size_t j = (size_t)td_rng_below(r, (uint64_t)i + 1);
    size_t t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
}
