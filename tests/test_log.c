/* test_log.c: the logfmt logger (server/log.c): the record format, level filtering, log_quote,
 * and the asynchronous writer: nothing lost, each thread's records in order, an error record
 * written at once and after everything logged before it, everything written by
 * log_async_stop. stderr is redirected to a temporary file for each test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../server/log.h"

static int saved_fd = -1;
static char path[64];

static void capture_begin(void) {
  snprintf(path, sizeof path, "/tmp/tdlab_test_log_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  fflush(stderr);
  saved_fd = dup(2);
  assert_true(dup2(fd, 2) >= 0);
  close(fd);
}

/* Restore stderr; return the captured text (free it). */
static char *capture_end(void) {
  fflush(stderr);
  dup2(saved_fd, 2);
  close(saved_fd);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  assert_non_null(buf);
  assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  unlink(path);
  return buf;
}

static void test_format_and_levels(void **state) {
  (void)state;
  log_set_level(LOG_INFO);
  capture_begin();
  log_emit(LOG_INFO, "hello", "a=%d b=%s", 7, "x");
  log_emit(LOG_DEBUG, "hidden", "a=1");
  log_notice("always", "c=%d", 3);
  char *out = capture_end();
  /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ level=info event=hello a=7 b=x */
  char *l1 = out, *l2 = strchr(out, '\n');
  assert_non_null(l2);
  *l2++ = '\0';
  assert_int_equal(strlen(l1), strlen("ts=2024-01-01T00:00:00.000Z level=info event=hello a=7 b=x"));
  assert_memory_equal(l1, "ts=", 3);
  assert_int_equal(l1[7], '-');
  assert_int_equal(l1[13], 'T');
  assert_int_equal(l1[22], '.');
  assert_int_equal(l1[26], 'Z');
  assert_string_equal(l1 + 27, " level=info event=hello a=7 b=x");
  assert_non_null(strstr(l2, " level=notice event=always c=3\n"));
  assert_null(strstr(out + (l2 - out), "hidden"));
  free(out);
  char q[64];
  assert_string_equal(log_quote(q, sizeof q, "plain"), "plain");
  assert_string_equal(log_quote(q, sizeof q, "a b\"c"), "\"a b\\\"c\"");
  assert_string_equal(log_quote(q, sizeof q, ""), "\"\"");
}

#define N_THREADS 4
#define N_PER 5000

static void *spam(void *arg) {
  long t = (long)(intptr_t)arg;
  for (long i = 0; i < N_PER; i++) log_emit(LOG_INFO, "spam", "t=%ld i=%ld", t, i);
  return NULL;
}

static void test_async_keeps_everything_in_order(void **state) {
  (void)state;
  log_set_level(LOG_INFO);
  capture_begin();
  assert_int_equal(log_async_start(), 0);
  assert_int_equal(log_async_start(), 0); /* no-op */
  pthread_t th[N_THREADS];
  for (long t = 0; t < N_THREADS; t++)
    assert_int_equal(pthread_create(&th[t], NULL, spam, (void *)(intptr_t)t), 0);
  for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
  log_emit(LOG_INFO, "last_info", "x=1");
  log_emit(LOG_ERROR, "urgent", "x=2"); /* written at once, after everything before it */
  char *now = NULL;
  {
    /* Read the file while the writer is still running: the error record is already there,
     * and so is every record logged before it. */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    now = malloc((size_t)n + 1);
    assert_int_equal(fread(now, 1, (size_t)n, f), (size_t)n);
    now[n] = '\0';
    fclose(f);
  }
  char *u = strstr(now, "event=urgent x=2\n");
  assert_non_null(u);
  assert_non_null(strstr(now, "event=last_info x=1\n"));
  assert_true(strstr(now, "event=last_info x=1\n") < u);
  free(now);
  log_emit(LOG_INFO, "after", "x=3");
  log_async_stop();
  log_async_stop(); /* no-op */
  log_emit(LOG_INFO, "sync_again", "x=4");
  char *out = capture_end();
  long next[N_THREADS] = {0};
  long lines = 0;
  int order_ok = 1;
  for (char *p = out; *p;) {
    char *e = strchr(p, '\n');
    assert_non_null(e);
    *e = '\0';
    lines++;
    long t, i;
    const char *f = strstr(p, "event=spam ");
    if (f && sscanf(f, "event=spam t=%ld i=%ld", &t, &i) == 2) {
      assert_true(t >= 0 && t < N_THREADS);
      if (i != next[t]) order_ok = 0;
      next[t] = i + 1;
    }
    p = e + 1;
  }
  assert_true(order_ok);
  for (int t = 0; t < N_THREADS; t++) assert_int_equal(next[t], N_PER);
  assert_int_equal(lines, N_THREADS * N_PER + 4);
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_format_and_levels),
      cmocka_unit_test(test_async_keeps_everything_in_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
