/* err.h: tdlab status codes and a fixed-size error detail buffer (libuv-style). */
#ifndef TD_ERR_H
#define TD_ERR_H

#include <stddef.h>

/* X-macro table: name, value, short text. One table gives the enum and the strings.
 * The server maps these codes to HTTP statuses in one table of its own (http.c). */
#define TD_ERRNO_MAP(X)                                                        \
  X(OK, 0, "ok")                                                               \
  X(EINVAL, -1, "invalid argument")                                            \
  X(ENOMEM, -2, "out of memory")                                               \
  X(EIO, -3, "input/output error")                                             \
  X(ERANGE, -4, "value out of range")                                          \
  X(ENOTFOUND, -5, "not found")                                                \
  X(ECANCELLED, -6, "cancelled")                                               \
  X(EDIVERGED, -7, "diverged: loss became non-finite or exceeded its bound")   \
  X(ELIMIT, -8, "resource limit exceeded")                                     \
  X(ECONFLICT, -9, "conflict with the current state")                          \
  X(ETIMEOUT, -10, "timed out")                                                \
  X(EINTERNAL, -11, "internal error")                                          \
  X(EFULL, -12, "database or disk is full")

enum {
#define TD__ERR_ENUM(name, val, text) TD_##name = (val),
  TD_ERRNO_MAP(TD__ERR_ENUM)
#undef TD__ERR_ENUM
};

/* A human-readable detail for the last failure. `field` names the offending
 * parameter path (e.g. "params.optimizer.lr") when there is one, else "". */
typedef struct td_err {
  int code;
  char field[128];
  char msg[384];
} td_err;

/* td_strerror: the static text of a TD_* code ("unknown error" for others). Never NULL. */
const char *td_strerror(int code);

/* td_err_set: fill `e` (may be NULL, then nothing happens) with code, field (may be NULL)
 * and a printf-style message; returns `code` so callers can `return td_err_set(...)`. */
int td_err_set(td_err *e, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* td_err_clear: reset to TD_OK with empty strings. `e` may be NULL. */
void td_err_clear(td_err *e);

#endif
