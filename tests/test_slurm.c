/* test_slurm.c: the Slurm executor's pure parts against outputs captured from a real Slurm
 * 22.05 single-node cluster (tests/fixtures/slurm/, made with tests/slurm/cluster.sh: an array
 * of 4 tasks with %2, plain jobs pending, cancelled, failed with exit 3, timed out), the state
 * table of README "Slurm executor", the sbatch argument vector, word splitting of
 * --slurm-sbatch-args, and slurm_exec (timeout kill, exit status, exec failure).
 * References: the fixtures' own text (the ids and states can be read in them), the README table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "../server/slurm.h"
#include "../server/store.h"
#include "../server/store_internal.h"
#include "../server/sweeps.h"
#include <sqlite3.h>

static char *read_fixture(const char *name) {
  char path[512];
  const char *root = getenv("TDLAB_ROOT");
  snprintf(path, sizeof path, "%s/tests/fixtures/slurm/%s", root ? root : ".", name);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = calloc(1, 1 << 16);
  size_t n = fread(buf, 1, (1 << 16) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

typedef struct rows {
  slurm_row r[32];
  size_t n;
} rows;

static void collect(void *ctx, const slurm_row *r) {
  rows *rs = ctx;
  if (rs->n < 32) rs->r[rs->n++] = *r;
}

static const slurm_row *find(const rows *rs, const char *ref) {
  for (size_t i = 0; i < rs->n; i++)
    if (!strcmp(rs->r[i].ref, ref)) return &rs->r[i];
  return NULL;
}

/* squeue -r: array 12 (tasks 0, 1 running as raw ids 14, 15; 2, 3 pending on the %2 limit),
 * job 13 pending on Resources, 16 pending on Priority. */
static void test_squeue_expanded(void **state) {
  (void)state;
  char *t = read_fixture("squeue_r.txt");
  rows rs = {0};
  size_t skipped = 99;
  assert_int_equal(slurm_parse_squeue(t, collect, &rs, &skipped), 6);
  assert_int_equal(skipped, 0);
  const slurm_row *r = find(&rs, "12_0");
  assert_non_null(r);
  assert_int_equal(r->state, SLURM_ST_RUNNING);
  assert_int_equal(r->raw, 14);
  r = find(&rs, "12_3");
  assert_non_null(r);
  assert_int_equal(r->state, SLURM_ST_PENDING);
  assert_string_equal(r->reason, "JobArrayTaskLimit");
  r = find(&rs, "13");
  assert_non_null(r);
  assert_int_equal(r->state, SLURM_ST_PENDING);
  assert_string_equal(r->reason, "Resources");
  assert_int_equal(r->raw, 13);
  assert_null(find(&rs, "12"));
  free(t);
}

/* Without -r the pending tasks come as one "12_[2-3%2]" line: skipped, never misread. */
static void test_squeue_aggregated(void **state) {
  (void)state;
  char *t = read_fixture("squeue_aggregated.txt");
  rows rs = {0};
  size_t skipped = 0;
  assert_int_equal(slurm_parse_squeue(t, collect, &rs, &skipped), 4);
  assert_int_equal(skipped, 1);
  assert_null(find(&rs, "12_2"));
  assert_non_null(find(&rs, "12_1"));
  free(t);
}

static void test_squeue_garbage(void **state) {
  (void)state;
  rows rs = {0};
  size_t skipped = 0;
  const char *t = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
                  "JOBID|A|F|K|STATE|REASON\n"
                  "12|12|12|N/A|WEIRD|None\n"
                  "|||||\n"
                  "7|7|7|N/A|RUNNING|None"; /* no final newline */
  assert_int_equal(slurm_parse_squeue(t, collect, &rs, &skipped), 1);
  assert_int_equal(skipped, 4);
  assert_string_equal(rs.r[0].ref, "7");
  assert_int_equal(slurm_parse_squeue("", collect, &rs, NULL), 0);
  assert_int_equal(slurm_parse_squeue(NULL, collect, &rs, NULL), 0);
}

static slurm_row scontrol_one(const char *fixture) {
  char *t = read_fixture(fixture);
  rows rs = {0};
  assert_int_equal(slurm_parse_scontrol(t, collect, &rs), 1);
  free(t);
  return rs.r[0];
}

static void test_scontrol_records(void **state) {
  (void)state;
  slurm_row r = scontrol_one("scontrol_cancelled.txt");
  assert_string_equal(r.ref, "13");
  assert_int_equal(r.state, SLURM_ST_CANCELLED);
  r = scontrol_one("scontrol_failed.txt");
  assert_string_equal(r.ref, "16");
  assert_int_equal(r.state, SLURM_ST_FAILED);
  assert_string_equal(r.exit_code, "3:0");
  assert_string_equal(r.reason, "NonZeroExitCode");
  r = scontrol_one("scontrol_timeout.txt");
  assert_string_equal(r.ref, "3");
  assert_int_equal(r.state, SLURM_ST_TIMEOUT);
  assert_string_equal(r.reason, "TimeLimit");
  /* An array task is named by ArrayJobId_ArrayTaskId, not by its own JobId (14). */
  r = scontrol_one("scontrol_array_task.txt");
  assert_string_equal(r.ref, "12_0");
  assert_int_equal(r.raw, 14);
  assert_int_equal(r.state, SLURM_ST_COMPLETED);
  char *t = read_fixture("scontrol_invalid.txt");
  rows rs = {0};
  assert_int_equal(slurm_parse_scontrol(t, collect, &rs), 0);
  free(t);
}

/* kill -9 of slurmd during a run: slurmctld's record after SlurmdTimeout (6 s here). */
static void test_scontrol_node_fail(void **state) {
  (void)state;
  slurm_row r = scontrol_one("scontrol_node_fail.txt");
  assert_string_equal(r.ref, "7");
  assert_int_equal(r.state, SLURM_ST_NODE_FAIL);
  assert_string_equal(r.reason, "NodeDown");
  slurm_outcome o;
  slurm_map_final(r.state, r.ref, r.exit_code, 0, 1, 3, &o);
  assert_true(o.requeue);
}

static store *open_mem(void) {
  const char *d = getenv("TDLAB_MIGRATIONS");
  store *s = NULL;
  td_err e;
  assert_int_equal(store_open(":memory:", 0, &s, &e), 0);
  assert_int_equal(store_migrate(s, d ? d : "migrations", NULL, NULL, &e), 0);
  return s;
}

static const char *col(store *s, const char *sql) {
  static char buf[256];
  sqlite3_stmt *q = NULL;
  buf[0] = '\0';
  assert_int_equal(sqlite3_prepare_v2(store__db(s), sql, -1, &q, NULL), SQLITE_OK);
  if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0))
    snprintf(buf, sizeof buf, "%s", (const char *)sqlite3_column_text(q, 0));
  sqlite3_finalize(q);
  return buf;
}

/* A sweep created on the slurm executor has every child on it from the start (same
 * transaction), so a worker's claim never takes one; the default stays local. */
static void test_sweep_children_executor(void **state) {
  (void)state;
  store *s = open_mem();
  json_error_t je;
  json_t *spec = json_loads("{\"name\":\"a\",\"kind\":\"nqm\",\"base\":{\"dim\":4},"
                            "\"axes\":{\"batch_size\":{\"values\":[1,2,4]}},"
                            "\"max_concurrency\":2}", 0, &je);
  assert_non_null(spec);
  int64_t id = 0;
  size_t n = 0;
  int full = 0;
  td_err e;
  assert_int_equal(sweeps_create_on(s, spec, NULL, 0, "slurm", &id, &n, &full, &e), 0);
  assert_int_equal(n, 3);
  assert_string_equal(col(s, "SELECT count(*) FROM jobs WHERE executor='slurm' AND sweep_id=1"), "3");
  store_claimed c;
  int found = 1;
  assert_int_equal(store_job_claim(s, &c, &found, &e), 0);
  assert_int_equal(found, 0);
  assert_int_equal(sweeps_create(s, spec, NULL, 0, &id, &n, &full, &e), 0);
  assert_string_equal(col(s, "SELECT count(*) FROM jobs WHERE executor='local'"), "3");
  json_decref(spec);
  store_close(s);
}

static void test_state_names(void **state) {
  (void)state;
  assert_int_equal(slurm_state_parse("CANCELLED by 0", -1), SLURM_ST_CANCELLED);
  assert_int_equal(slurm_state_parse("COMPLETING+", -1), SLURM_ST_COMPLETING);
  assert_int_equal(slurm_state_parse("OUT_OF_MEMORY", -1), SLURM_ST_OUT_OF_MEMORY);
  assert_int_equal(slurm_state_parse("RUNNINGX", -1), SLURM_ST_UNKNOWN);
  assert_int_equal(slurm_state_parse("RUN", -1), SLURM_ST_UNKNOWN);
  assert_int_equal(slurm_state_parse("running", -1), SLURM_ST_UNKNOWN);
  assert_int_equal(slurm_state_parse("PENDINGxx", 7), SLURM_ST_PENDING);
  for (int s = 1; s < SLURM_ST_N; s++)
    assert_int_equal(slurm_state_parse(slurm_state_name((slurm_state)s), -1), s);
  assert_int_equal(slurm_state_class(SLURM_ST_PENDING), SLURM_CLASS_WAITING);
  assert_int_equal(slurm_state_class(SLURM_ST_REQUEUED), SLURM_CLASS_WAITING);
  assert_int_equal(slurm_state_class(SLURM_ST_RUNNING), SLURM_CLASS_RUNNING);
  assert_int_equal(slurm_state_class(SLURM_ST_COMPLETING), SLURM_CLASS_RUNNING);
  assert_int_equal(slurm_state_class(SLURM_ST_TIMEOUT), SLURM_CLASS_FINAL);
  assert_int_equal(slurm_state_class(SLURM_ST_UNKNOWN), SLURM_CLASS_FINAL);
}

/* The README table, row by row. */
static void test_map_final(void **state) {
  (void)state;
  slurm_outcome o;
  assert_int_equal(slurm_map_final(SLURM_ST_RUNNING, "1", NULL, 0, 1, 3, &o), TD_EINVAL);

  assert_int_equal(slurm_map_final(SLURM_ST_CANCELLED, "7", "0:0", 1, 1, 3, &o), 0);
  assert_int_equal(o.status, STORE_CANCELLED);
  assert_string_equal(o.error, "");
  slurm_map_final(SLURM_ST_CANCELLED, "7_2", "0:0", 0, 1, 3, &o);
  assert_int_equal(o.status, STORE_CANCELLED);
  assert_false(o.requeue);
  assert_non_null(strstr(o.error, "CANCELLED outside tdlab"));
  assert_non_null(strstr(o.error, "7_2"));

  slurm_map_final(SLURM_ST_TIMEOUT, "3", "0:15", 0, 1, 3, &o);
  assert_int_equal(o.status, STORE_FAILED);
  assert_false(o.requeue);
  assert_non_null(strstr(o.error, "slurm: TIMEOUT"));
  assert_non_null(strstr(o.error, "time limit"));

  slurm_map_final(SLURM_ST_OUT_OF_MEMORY, "4", "0:125", 0, 1, 3, &o);
  assert_int_equal(o.status, STORE_FAILED);
  assert_non_null(strstr(o.error, "OUT_OF_MEMORY"));

  slurm_state retry[] = {SLURM_ST_NODE_FAIL, SLURM_ST_PREEMPTED, SLURM_ST_BOOT_FAIL};
  for (size_t i = 0; i < 3; i++) {
    slurm_map_final(retry[i], "5", NULL, 0, 2, 3, &o);
    assert_true(o.requeue);
    assert_int_equal(o.status, STORE_QUEUED);
    assert_non_null(strstr(o.error, slurm_state_name(retry[i])));
    assert_non_null(strstr(o.error, "attempt 2 of 3"));
    slurm_map_final(retry[i], "5", NULL, 0, 3, 3, &o); /* the last attempt */
    assert_false(o.requeue);
    assert_int_equal(o.status, STORE_FAILED);
    assert_non_null(strstr(o.error, "no attempts left"));
    slurm_map_final(retry[i], "5", NULL, 1, 1, 3, &o); /* tdlab cancelled it meanwhile */
    assert_false(o.requeue);
    assert_int_equal(o.status, STORE_CANCELLED);
  }

  slurm_map_final(SLURM_ST_FAILED, "16", "3:0", 0, 1, 3, &o);
  assert_int_equal(o.status, STORE_FAILED);
  assert_non_null(strstr(o.error, "exited with code 3:0"));
  assert_false(o.requeue);
  /* killed by a signal (kill -9 of the run, the memory limit): lost, re-queued while attempts
   * remain, final at the last one, cancelled when tdlab asked for it */
  slurm_map_final(SLURM_ST_FAILED, "17", "0:9", 0, 1, 3, &o);
  assert_int_equal(o.status, STORE_QUEUED);
  assert_true(o.requeue);
  assert_non_null(strstr(o.error, "signal 9"));
  slurm_map_final(SLURM_ST_FAILED, "17", "0:9", 0, 3, 3, &o);
  assert_int_equal(o.status, STORE_FAILED);
  assert_false(o.requeue);
  assert_non_null(strstr(o.error, "no attempts left"));
  slurm_map_final(SLURM_ST_FAILED, "17", "0:9", 1, 1, 3, &o);
  assert_int_equal(o.status, STORE_CANCELLED);
  assert_false(o.requeue);
  slurm_map_final(SLURM_ST_COMPLETED, "12_0", "0:0", 0, 1, 3, &o);
  assert_int_equal(o.status, STORE_FAILED);
  assert_non_null(strstr(o.error, "without reporting"));
  slurm_map_final(SLURM_ST_DEADLINE, "9", NULL, 0, 1, 3, &o);
  assert_int_equal(o.status, STORE_FAILED);
  assert_non_null(strstr(o.error, "DEADLINE"));
}

static void test_sbatch_id(void **state) {
  (void)state;
  long long id = 0;
  char *t = read_fixture("sbatch_parsable.txt");
  assert_int_equal(slurm_parse_sbatch(t, &id), 0);
  assert_int_equal(id, 12);
  free(t);
  assert_int_equal(slurm_parse_sbatch("4711;tdlab\n", &id), 0);
  assert_int_equal(id, 4711);
  t = read_fixture("sbatch_bad_partition.txt");
  assert_int_equal(slurm_parse_sbatch(t, &id), TD_EINVAL);
  free(t);
  assert_int_equal(slurm_parse_sbatch("", &id), TD_EINVAL);
  assert_int_equal(slurm_parse_sbatch("0", &id), TD_EINVAL);
  assert_int_equal(slurm_parse_sbatch("12x", &id), TD_EINVAL);
}

static size_t argc_of(char **argv) {
  size_t n = 0;
  while (argv[n]) n++;
  return n;
}

static void test_sbatch_argv(void **state) {
  (void)state;
  slurm_opts o = {.partition = "gpu", .account = "lab", .time = "0:30:00", .mem = "4G",
                  .cpus = 2, .extra = "--qos=low --comment 'two words' --exclusive"};
  slurm_submit s = {.job_name = "tdlab-sweep3", .output = "/sp/x/%a/slurm.out",
                    .script = "/sp/job.sh", .tdlab_bin = "/bin/tdlab",
                    .url = "http://h:1", .dir = "/sp/x", .n_tasks = 20, .max_concurrent = 4};
  char **argv = NULL;
  td_err e;
  assert_int_equal(slurm_sbatch_argv(&o, &s, &argv, &e), 0);
  const char *want[] = {"sbatch", "--parsable", "--job-name", "tdlab-sweep3", "--output",
                        "/sp/x/%a/slurm.out", "--partition", "gpu", "--account", "lab",
                        "--time", "0:30:00", "--mem", "4G", "--cpus-per-task", "2",
                        "--array=0-19%4", "--qos=low", "--comment", "two words",
                        "--exclusive", "/sp/job.sh", "/bin/tdlab", "http://h:1", "/sp/x"};
  size_t nw = sizeof want / sizeof want[0];
  assert_int_equal(argc_of(argv), nw);
  for (size_t i = 0; i < nw; i++) assert_string_equal(argv[i], want[i]);
  slurm_argv_free(argv);

  /* A plain job with no options; an array without a cap. */
  slurm_opts none = {0};
  s.n_tasks = 0;
  assert_int_equal(slurm_sbatch_argv(&none, &s, &argv, &e), 0);
  assert_int_equal(argc_of(argv), 10);
  assert_string_equal(argv[6], "/sp/job.sh");
  slurm_argv_free(argv);
  s.n_tasks = 3;
  s.max_concurrent = 0;
  assert_int_equal(slurm_sbatch_argv(&none, &s, &argv, &e), 0);
  assert_string_equal(argv[6], "--array=0-2");
  slurm_argv_free(argv);

  none.extra = "--comment 'open";
  assert_int_equal(slurm_sbatch_argv(&none, &s, &argv, &e), TD_EINVAL);
  assert_string_equal(e.field, "slurm-sbatch-args");
}

static void test_split_args(void **state) {
  (void)state;
  char *w[8] = {0};
  size_t n = 0;
  td_err e;
  assert_int_equal(slurm_split_args("  a  'b c' \"d \\\"e\\\"\" f\\ g ''", w, 8, &n, &e), 0);
  assert_int_equal(n, 5);
  assert_string_equal(w[0], "a");
  assert_string_equal(w[1], "b c");
  assert_string_equal(w[2], "d \"e\"");
  assert_string_equal(w[3], "f g");
  assert_string_equal(w[4], "");
  for (size_t i = 0; i < n; i++) free(w[i]);
  n = 0;
  assert_int_equal(slurm_split_args("a b c", w, 2, &n, &e), TD_ELIMIT);
  assert_int_equal(n, 0);
  assert_int_equal(slurm_split_args("\"x", w, 8, &n, &e), TD_EINVAL);
  assert_int_equal(n, 0);
  assert_int_equal(slurm_split_args("", w, 8, &n, &e), 0);
  assert_int_equal(n, 0);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_exec(void **state) {
  (void)state;
  char *out = NULL;
  int st = 0;
  td_err e;
  char *ok[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
  assert_int_equal(slurm_exec(ok, 10, &out, &st, &e), 0);
  assert_int_equal(st, 3);
  assert_non_null(strstr(out, "out\n"));
  assert_non_null(strstr(out, "err\n"));
  free(out);
  /* A command that hangs (like sbatch against a controller that does not answer) is killed
   * at the timeout, with its children (process group). */
  char *hang[] = {"sh", "-c", "sleep 30 & sleep 30", NULL};
  double t0 = now_s();
  assert_int_equal(slurm_exec(hang, 0.5, &out, &st, &e), TD_ETIMEOUT);
  assert_true(now_s() - t0 < 10);
  assert_non_null(strstr(e.msg, "no answer"));
  free(out);
  char *missing[] = {"tdlab-no-such-command", NULL};
  assert_int_equal(slurm_exec(missing, 5, &out, &st, &e), TD_EIO);
  assert_non_null(strstr(e.msg, "cannot run"));
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_squeue_expanded), cmocka_unit_test(test_squeue_aggregated),
      cmocka_unit_test(test_squeue_garbage),  cmocka_unit_test(test_scontrol_records),
      cmocka_unit_test(test_state_names),     cmocka_unit_test(test_map_final),
      cmocka_unit_test(test_sbatch_id),       cmocka_unit_test(test_sbatch_argv),
      cmocka_unit_test(test_split_args),      cmocka_unit_test(test_exec),
      cmocka_unit_test(test_scontrol_node_fail), cmocka_unit_test(test_sweep_children_executor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
