/* log.c: one-line structured (logfmt) log records on stderr, filtered by a level. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../core/err.h"

static atomic_int current_level = LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(log_level level) { atomic_store(&current_level, (int)level); }

int log_parse_level(const char *name, log_level *out) {
  for (int i = 0; i < 4; i++)
    if (name && strcmp(name, level_names[i]) == 0) {
      *out = (log_level)i;
      return 0;
    }
  return TD_EINVAL;
}

int log_enabled(log_level level) { return (int)level <= atomic_load(&current_level); }

static void vemit(const char *level, const char *event, const char *fmt, va_list ap) {
  char line[2048];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                   tm.tm_sec, ts.tv_nsec / 1000000, level, event);
  if (n < 0) return;
  if ((size_t)n < sizeof line) {
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    if (m > 0) n += m;
  }
  if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
  line[n++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}

void log_emit(log_level level, const char *event, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  vemit(level_names[level], event, fmt, ap);
  va_end(ap);
}

void log_notice(const char *event, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vemit("notice", event, fmt, ap);
  va_end(ap);
}

const char *log_quote(char *buf, unsigned long n, const char *s) {
  if (n < 8) {
    if (n) buf[0] = '\0';
    return buf;
  }
  if (!s) s = "";
  int plain = *s != '\0';
  for (const char *p = s; *p && plain; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) plain = 0;
  }
  if (plain) {
    snprintf(buf, n, "%s", s);
    return buf;
  }
  size_t o = 0;
  buf[o++] = '"';
  for (const char *p = s; *p && o + 6 < n; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      o += (size_t)snprintf(buf + o, n - o, "\\x%02x", c);
    } else {
      buf[o++] = (char)c;
    }
  }
  if (o + 1 < n) buf[o++] = '"';
  buf[o < n ? o : n - 1] = '\0';
  return buf;
}
