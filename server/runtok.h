/* runtok.h: run tokens (issue 16): 32 random bytes as 64 hex characters, stored only hashed. */
#ifndef TD_SERVER_RUNTOK_H
#define TD_SERVER_RUNTOK_H

#include "base/err.h"

#define RUNTOK_HEX 64 /* characters of a token and of its hash (without the NUL) */

/* runtok_new: a fresh token: 32 bytes from getrandom(2) (the kernel's CSPRNG; blocks only
 * before the pool is initialised at boot), as lowercase hex into tok[0..64] (NUL-terminated).
 * Errors: TD_EIO (getrandom failed). */
int runtok_new(char tok[RUNTOK_HEX + 1] /* OUT */, td_err *err);

/* runtok_hash: the lowercase hex SHA-256 (FIPS 180-4; nettle's sha256) of the NUL-terminated
 * string tok, into out[0..64]. The database keeps only this: a stolen database file gives no
 * usable token (the token has 256 bits of entropy, so no salt or slow hash is needed). */
void runtok_hash(const char *tok, char out[RUNTOK_HEX + 1] /* OUT */);

/* runtok_equal: 1 when the NUL-terminated strings a and b are equal, comparing every byte of
 * a in constant time for strings of the same length (the hash of a presented token against
 * the stored hash); 0 otherwise. NULL never equals anything. */
int runtok_equal(const char *a, const char *b);

/* runtok_bearer: the token of an "Authorization: Bearer <token>" header value (borrowed from
 * auth), or NULL when the header is absent or not a bearer token of 1..256 printable ASCII. */
const char *runtok_bearer(const char *auth);

#endif
