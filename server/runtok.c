/* runtok.c: run tokens: generation with getrandom(2), SHA-256 with nettle, comparison. */
#include "runtok.h"

#include <errno.h>
#include <nettle/sha2.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

static void to_hex(const unsigned char *b, size_t n, char *out) {
  static const char hx[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hx[b[i] >> 4];
    out[2 * i + 1] = hx[b[i] & 15];
  }
  out[2 * n] = '\0';
}

int runtok_new(char tok[RUNTOK_HEX + 1], td_err *err) {
  unsigned char raw[RUNTOK_HEX / 2];
  size_t got = 0;
  while (got < sizeof raw) {
    ssize_t r = getrandom(raw + got, sizeof raw - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      tok[0] = '\0';
      return td_err_set(err, TD_EIO, NULL, "getrandom: %s", strerror(errno));
    }
    got += (size_t)r;
  }
  to_hex(raw, sizeof raw, tok);
  return 0;
}

void runtok_hash(const char *tok, char out[RUNTOK_HEX + 1]) {
  struct sha256_ctx c;
  unsigned char d[SHA256_DIGEST_SIZE];
  sha256_init(&c);
  sha256_update(&c, strlen(tok), (const uint8_t *)tok);
  sha256_digest(&c, sizeof d, d);
  to_hex(d, sizeof d, out);
}

int runtok_equal(const char *a, const char *b) {
  if (!a || !b) return 0;
  size_t la = strlen(a), lb = strlen(b);
  unsigned char diff = (unsigned char)(la != lb);
  for (size_t i = 0; i < la; i++) diff |= (unsigned char)(a[i] ^ (i < lb ? b[i] : 0));
  return diff == 0;
}

const char *runtok_bearer(const char *auth) {
  if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) return NULL;
  const char *t = auth + 7;
  while (*t == ' ') t++;
  size_t n = strlen(t);
  if (n == 0 || n > 256) return NULL;
  for (size_t i = 0; i < n; i++)
    if (t[i] < 0x21 || t[i] > 0x7e) return NULL;
  return t;
}
