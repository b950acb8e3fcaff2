/* log.c: one-line structured (logfmt) log records on stderr, filtered by a level.
 *
 * By default every record is one write(2). The daemon calls log_async_start: then records
 * below notice/error are appended to a buffer that a writer thread empties in batches, about
 * every 2 ms while records keep coming (one write per batch instead of one per request: the
 * per-request access log cost about a third of a cached GET's CPU time). Order is kept:
 * error and notice records, and any record that finds the buffer full, first wait for the
 * writer's batch, then write what is pending and themselves, all under the buffer's lock.
 * A kill -9 loses at most the last few milliseconds of info/debug/warn records. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/err.h"

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

/* ---------------------------------------------------------------- asynchronous writer */

#define ASYNC_CAP (1u << 20) /* pending bytes; past this a record is written synchronously */
#define ASYNC_BATCH_NS 2000000L

static struct {
  pthread_mutex_t mu;
  pthread_cond_t wake; /* the writer waits for records */
  pthread_cond_t idle; /* a synchronous writer waits for the writer's batch */
  char *buf, *spare;
  size_t len;
  int stop, sleeping, writing;
  pthread_t thread;
} la = {.mu = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
        .idle = PTHREAD_COND_INITIALIZER};
static atomic_int async_on;

static void write_all(const char *p, size_t n) {
  while (n) {
    ssize_t w = write(STDERR_FILENO, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= (size_t)w;
  }
}

static void *writer_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&la.mu);
  for (;;) {
    while (!la.len && !la.stop) {
      la.sleeping = 1;
      pthread_cond_wait(&la.wake, &la.mu);
      la.sleeping = 0;
    }
    if (!la.len) break; /* stopping, nothing pending */
    if (!la.stop) {     /* let a batch gather */
      pthread_mutex_unlock(&la.mu);
      struct timespec ts = {0, ASYNC_BATCH_NS};
      nanosleep(&ts, NULL);
      pthread_mutex_lock(&la.mu);
    }
    char *out = la.buf;
    size_t n = la.len;
    la.buf = la.spare;
    la.spare = out;
    la.len = 0;
    la.writing = 1;
    pthread_mutex_unlock(&la.mu);
    write_all(out, n);
    pthread_mutex_lock(&la.mu);
    la.writing = 0;
    pthread_cond_broadcast(&la.idle);
  }
  pthread_mutex_unlock(&la.mu);
  return NULL;
}

int log_async_start(void) {
  if (atomic_load(&async_on)) return 0;
  la.buf = malloc(ASYNC_CAP);
  la.spare = malloc(ASYNC_CAP);
  la.len = 0;
  la.stop = 0;
  if (!la.buf || !la.spare || pthread_create(&la.thread, NULL, writer_main, NULL) != 0) {
    free(la.buf);
    free(la.spare);
    la.buf = la.spare = NULL;
    return TD_ENOMEM;
  }
  atomic_store(&async_on, 1);
  return 0;
}

void log_async_stop(void) {
  if (!atomic_load(&async_on)) return;
  pthread_mutex_lock(&la.mu);
  la.stop = 1;
  pthread_cond_signal(&la.wake);
  pthread_mutex_unlock(&la.mu);
  pthread_join(la.thread, NULL);
  pthread_mutex_lock(&la.mu); /* a record that raced with the stop sees buf == NULL */
  atomic_store(&async_on, 0);
  if (la.len) write_all(la.buf, la.len);
  la.len = 0;
  free(la.buf);
  free(la.spare);
  la.buf = la.spare = NULL;
  pthread_mutex_unlock(&la.mu);
}

/* One finished record (with its newline): queued, or written now when `urgent`. */
static void put_line(const char *line, size_t n, int urgent) {
  if (!atomic_load_explicit(&async_on, memory_order_acquire)) {
    write_all(line, n);
    return;
  }
  pthread_mutex_lock(&la.mu);
  if (!la.buf) {
    write_all(line, n);
  } else if (urgent || la.stop || la.len + n > ASYNC_CAP) {
    while (la.writing) pthread_cond_wait(&la.idle, &la.mu);
    write_all(la.buf, la.len);
    la.len = 0;
    write_all(line, n);
  } else {
    memcpy(la.buf + la.len, line, n);
    la.len += n;
    if (la.sleeping) pthread_cond_signal(&la.wake);
  }
  pthread_mutex_unlock(&la.mu);
}

/* ---------------------------------------------------------------- records */

/* The "ts=YYYY-MM-DDTHH:MM:SS." prefix, formatted once per second per thread. */
static _Thread_local struct {
  time_t sec;
  int n;
  char text[40];
} ts_cache = {.sec = -1};

/* The record: prefix, then `fields` (when not NULL) or fmt formatted with ap. */
static void vemit2(const char *level, const char *event, const char *fields, const char *fmt,
                   va_list ap, int urgent) {
  char line[2048];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  if (ts.tv_sec != ts_cache.sec) {
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    ts_cache.n = snprintf(ts_cache.text, sizeof ts_cache.text, "ts=%04d-%02d-%02dT%02d:%02d:%02d.",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                          tm.tm_sec);
    ts_cache.sec = ts.tv_sec;
  }
  memcpy(line, ts_cache.text, (size_t)ts_cache.n);
  int n = ts_cache.n;
  long ms = ts.tv_nsec / 1000000;
  line[n++] = (char)('0' + ms / 100);
  line[n++] = (char)('0' + ms / 10 % 10);
  line[n++] = (char)('0' + ms % 10);
  /* "Z level=<level> event=<event> " without printf (this runs once per request). */
  size_t ll = strlen(level), el = strnlen(event, 256);
  memcpy(line + n, "Z level=", 8);
  n += 8;
  memcpy(line + n, level, ll);
  n += (int)ll;
  memcpy(line + n, " event=", 7);
  n += 7;
  memcpy(line + n, event, el);
  n += (int)el;
  line[n++] = ' ';
  if (fields) {
    size_t fl = strnlen(fields, sizeof line - (size_t)n - 2);
    memcpy(line + n, fields, fl);
    n += (int)fl;
  } else {
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    if (m > 0) n += m;
  }
  if ((size_t)n >= sizeof line - 1) n = (int)sizeof line - 2;
  line[n++] = '\n';
  put_line(line, (size_t)n, urgent);
}

static void vemit(const char *level, const char *event, const char *fmt, va_list ap, int urgent) {
  vemit2(level, event, NULL, fmt, ap, urgent);
}

/* Only vemit2's `fields` branch is taken, which never reads the va_list. */
static void emit_fields(const char *level, const char *event, const char *fields, int urgent,
                        ...) {
  va_list ap;
  va_start(ap, urgent);
  vemit2(level, event, fields, NULL, ap, urgent);
  va_end(ap);
}

void log_emit_fields(log_level level, const char *event, const char *fields) {
  if (!log_enabled(level)) return;
  emit_fields(level_names[level], event, fields, level == LOG_ERROR);
}

void log_emit(log_level level, const char *event, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  vemit(level_names[level], event, fmt, ap, level == LOG_ERROR);
  va_end(ap);
}

void log_notice(const char *event, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vemit("notice", event, fmt, ap, 1);
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
