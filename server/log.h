/* log.h: one-line structured (logfmt) log records on stderr, filtered by a level. */
#ifndef TD_SERVER_LOG_H
#define TD_SERVER_LOG_H

typedef enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level;

/* log_set_level: records above `level` are dropped. Set once at start-up (the level is the
 * process's only logging state; it is an atomic so reading it from any thread is safe). */
void log_set_level(log_level level);

/* log_parse_level: "error" | "warn" | "info" | "debug" into *out. Returns 0 or TD_EINVAL. */
int log_parse_level(const char *name, log_level *out /* OUT */);

/* log_enabled: non-zero when records at `level` are written. */
int log_enabled(log_level level);

/* log_emit: write "ts=<RFC 3339 UTC> level=<level> event=<event> <fields>" as one line with
 * one write(2), so that lines from different threads never interleave. `fmt` formats the
 * fields as space-separated key=value pairs; quote values with log_quote. */
void log_emit(log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_emit_fields: the same with the fields already formatted (no printf: for the per-request
 * access log; in this process every printf takes glibc's slow path, because libquadmath,
 * loaded with OpenBLAS, registers printf extensions). */
void log_emit_fields(log_level level, const char *event, const char *fields);

/* log_notice: like log_emit with "level=notice", written whatever the level (start-up,
 * listening address, shutdown). */
void log_notice(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* log_async_start: from now on, error and notice records are still written at once, but
 * warn, info and debug records go to a buffer that a writer thread writes in batches (about
 * every 2 ms while records come in; order across all records is kept). For the daemon, where
 * the access log would otherwise cost one write(2) per request. Errors: TD_ENOMEM (then
 * records stay synchronous). Call log_async_stop before exit: it writes what is pending and
 * joins the thread. Both are no-ops when already in that state. */
int log_async_start(void);
void log_async_stop(void);

/* log_quote: copy `s` into buf (size n) as a logfmt value: unchanged when it has only safe
 * characters, else in double quotes with ", \ and control bytes escaped. Returns buf. */
const char *log_quote(char *buf, unsigned long n, const char *s);

#endif
