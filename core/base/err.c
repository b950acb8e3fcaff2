/* err.c: status code strings and the td_err detail buffer. */
#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *td_strerror(int code) {
  switch (code) {
#define TD__ERR_CASE(name, val, text) \
  case (val):                         \
    return text;
    TD_ERRNO_MAP(TD__ERR_CASE)
#undef TD__ERR_CASE
  default:
    return "unknown error";
  }
}

int td_err_set(td_err *e, int code, const char *field, const char *fmt, ...) {
  if (!e) return code;
  e->code = code;
  snprintf(e->field, sizeof e->field, "%s", field ? field : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return code;
}

void td_err_clear(td_err *e) {
  if (!e) return;
  e->code = TD_OK;
  e->field[0] = '\0';
  e->msg[0] = '\0';
}
