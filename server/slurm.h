/* slurm.h: the Slurm executor: submits queued jobs (executor "slurm") with sbatch as
 * `tdlab run SPEC --report URL --job ID --token-file F`, a sweep's children as one job array
 * (`--array=0-(n-1)%max_concurrency`), follows their Slurm states with squeue and
 * `scontrol show job`, maps the final ones to tdlab statuses, re-queues the retryable ones and
 * scancels cancelled jobs. Every Slurm command runs through fork/exec with an argument vector
 * (no shell) and a timeout.
 *
 * DESIGN. One thread, one SQLite connection of its own. Each round (every poll_s seconds):
 *   1. submit: jobs with executor 'slurm', status queued and no live submission (executor_ref
 *      NULL, or run_token_hash NULL after a re-queue) get a new run token (store_run_prepare:
 *      only its hash is stored), a spool directory <db dir>/slurm-spool/job<ID>.a<ATTEMPT>/
 *      (0700) with spec.json, token and job (0600), and one sbatch; a sweep's such children go
 *      together as one array. executor_ref becomes the Slurm id ("123", or "123_4" for task 4
 *      of array 123); the job stays queued (Slurm PENDING) until its run's first authenticated
 *      request (store_run_begin, api_remote.c) or squeue shows it RUNNING. A failed sbatch
 *      leaves the job queued without a token, writes the reason to the job's error and is
 *      retried next round (a re-submission first scancels the previous Slurm id, if any).
 *   2. follow: one `squeue --me -r` lists the live Slurm jobs; a tracked job (executor_ref set,
 *      status queued/running) found RUNNING moves to running (started_at, heartbeat_at = now,
 *      so its lease starts); one no longer listed is looked up with `scontrol show job -o REF`
 *      and its final state mapped (slurm_map_final). When squeue itself fails nothing is
 *      decided that round (a Slurm that is down never fails or re-queues a job).
 *   3. cancel: a job with cancel_requested (running) or cancelled while its Slurm job is still
 *      listed gets `scancel REF`; a running one then ends cancelled.
 * The pure parts (parsing, state mapping, argv construction) are separate functions below, so
 * that tests/test_slurm.c checks them against captured outputs of a real Slurm 22.05. */
#ifndef TD_SERVER_SLURM_H
#define TD_SERVER_SLURM_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* ---------------------------------------------------------------- Slurm job states */

/* The Slurm job states (squeue %T / scontrol JobState names), Slurm 22.05. */
#define SLURM_STATES(X)                                                                      \
  X(PENDING) X(CONFIGURING) X(REQUEUED) X(REQUEUE_HOLD) X(REQUEUE_FED) X(RESV_DEL_HOLD)      \
  X(SUSPENDED) X(STOPPED) X(RUNNING) X(COMPLETING) X(RESIZING) X(SIGNALING) X(STAGE_OUT)     \
  X(COMPLETED) X(FAILED) X(TIMEOUT) X(NODE_FAIL) X(OUT_OF_MEMORY) X(PREEMPTED) X(CANCELLED)  \
  X(BOOT_FAIL) X(DEADLINE) X(SPECIAL_EXIT) X(REVOKED)

typedef enum {
  SLURM_ST_UNKNOWN = 0,
#define SLURM__ST_ENUM(n) SLURM_ST_##n,
  SLURM_STATES(SLURM__ST_ENUM)
#undef SLURM__ST_ENUM
      SLURM_ST_N
} slurm_state;

/* slurm_state_parse: the state named by the text s[0..n) (n < 0: NUL-terminated), ignoring a
 * trailing "+" or " by <uid>" as scontrol prints them (e.g. "CANCELLED by 0");
 * SLURM_ST_UNKNOWN for anything else. slurm_state_name: its name ("UNKNOWN" for 0). */
slurm_state slurm_state_parse(const char *s, long n);
const char *slurm_state_name(slurm_state st);

/* The coarse class of a state: waiting to run (PENDING, CONFIGURING, REQUEUED, held,
 * SUSPENDED, STOPPED: the job keeps status queued or its current one), running (RUNNING,
 * COMPLETING, RESIZING, SIGNALING, STAGE_OUT) or final (the rest). */
typedef enum { SLURM_CLASS_WAITING, SLURM_CLASS_RUNNING, SLURM_CLASS_FINAL } slurm_class;
slurm_class slurm_state_class(slurm_state st);

/* What the executor does with a job whose Slurm job reached a final state while tdlab still
 * has it queued or running (a run that called finish is no longer tracked). */
typedef struct slurm_outcome {
  int status;      /* STORE_FAILED, STORE_CANCELLED, or STORE_QUEUED for a re-queue */
  int requeue;     /* 1: re-queue with attempt + 1 (retryable and attempts left) */
  char error[256]; /* the job's error text ("" for none) */
} slurm_outcome;

/* slurm_map_final: the tdlab outcome of Slurm job `ref` ending in `st` with `exit_code`
 * (scontrol's "ExitCode=E:S" text, may be NULL) for a job at `attempt` of `max_attempts`
 * whose cancellation tdlab requested (cancel_requested) or not. The table (README "Slurm
 * executor"):
 *   CANCELLED    tdlab asked: cancelled, no error; else cancelled, "slurm: CANCELLED outside
 *                tdlab (scancel of Slurm job REF)"
 *   TIMEOUT      failed, "slurm: TIMEOUT: Slurm job REF reached its time limit"
 *   OUT_OF_MEMORY failed, "slurm: OUT_OF_MEMORY: Slurm job REF exceeded its memory limit"
 *   NODE_FAIL, PREEMPTED, BOOT_FAIL  retryable: re-queued with attempt + 1 while
 *                attempt < max_attempts, else failed "... (attempt N of N)"
 *   FAILED       failed, "slurm: FAILED: Slurm job REF exited with code E before reporting"
 *   COMPLETED    failed, "slurm: COMPLETED: Slurm job REF ended without reporting a final status"
 *   DEADLINE, SPECIAL_EXIT, REVOKED, unknown  failed with the state named.
 * st must be of class FINAL (else TD_EINVAL). */
int slurm_map_final(slurm_state st, const char *ref, const char *exit_code, int cancel_requested,
                    long attempt, long max_attempts, slurm_outcome *out /* OUT */);

/* ---------------------------------------------------------------- parsing */

/* One line of `squeue -h -r -o '%i|%A|%F|%K|%T|%r'` (SLURM_SQUEUE_FORMAT): ref is the job's
 * tdlab-style reference ("123" for a plain job, "123_4" for array task 4, taken from %F and
 * %K), raw the job's own numeric id (%A), state, and the pending reason (%r). */
#define SLURM_SQUEUE_FORMAT "%i|%A|%F|%K|%T|%r"
typedef struct slurm_row {
  char ref[48];
  long long raw;
  slurm_state state;
  char reason[64];
  char exit_code[16]; /* scontrol only: "E:S"; "" when absent */
} slurm_row;
typedef void (*slurm_row_fn)(void *ctx, const slurm_row *row);

/* slurm_parse_squeue: call fn for each well-formed line of text (format above); lines that do
 * not parse (a header, an aggregated pending array "12_[3-5%2]") are skipped and counted in
 * *skipped (OUT, may be NULL). Returns the number of rows given to fn. */
size_t slurm_parse_squeue(const char *text, slurm_row_fn fn, void *ctx, size_t *skipped /* OUT */);

/* slurm_parse_scontrol: call fn for each record of `scontrol show job -o` output (one line
 * per job; fields "Key=Value" separated by spaces): ref from JobId, or ArrayJobId_ArrayTaskId
 * for an array task; state from JobState; reason from Reason; exit_code from ExitCode.
 * Returns the number of records. */
size_t slurm_parse_scontrol(const char *text, slurm_row_fn fn, void *ctx);

/* slurm_parse_sbatch: the job id printed by `sbatch --parsable` ("123" or "123;cluster"),
 * in *id (OUT). Errors: TD_EINVAL (no leading positive integer). */
int slurm_parse_sbatch(const char *text, long long *id /* OUT */);

/* slurm_split_args: split `s` into words like a shell without expansion: blanks separate,
 * '...' and "..." quote (a backslash escapes the next character outside single quotes).
 * Appends malloc'ed words to argv[*n..cap) and advances *n. Errors: TD_EINVAL (unterminated
 * quote, in err), TD_ELIMIT (more than cap words), TD_ENOMEM. On error the words added are
 * freed and *n is unchanged. */
int slurm_split_args(const char *s, char **argv, size_t cap, size_t *n /* IN/OUT */, td_err *err);

/* ---------------------------------------------------------------- sbatch argv */

/* The sbatch options common to every submission (the serve flags). */
typedef struct slurm_opts {
  const char *partition; /* --slurm-partition; NULL: the cluster's default */
  const char *account;   /* --slurm-account; NULL: none */
  const char *time;      /* --slurm-time, Slurm's time format ("10", "1:30:00", "2-0"); NULL */
  const char *mem;       /* --slurm-mem ("4G"); NULL: the cluster's default */
  long cpus;             /* --slurm-cpus per task; 0: the cluster's default */
  const char *extra;     /* --slurm-sbatch-args, split with slurm_split_args; NULL */
} slurm_opts;

/* One submission: a single job (n_tasks 0) or an array of n_tasks tasks 0..n_tasks-1 with at
 * most max_concurrent running at once (0: no cap). */
typedef struct slurm_submit {
  const char *job_name;   /* --job-name */
  const char *output;     /* --output pattern (e.g. DIR/slurm.out or DIR/%a/slurm.out) */
  const char *script;     /* the batch script (slurm_job_script), then its arguments: */
  const char *tdlab_bin;  /* $1: the tdlab binary */
  const char *url;        /* $2: the URL the run reports to */
  const char *dir;        /* $3: the task directory (an array's parent of 0/, 1/, ...) */
  long n_tasks;
  long max_concurrent;
} slurm_submit;

/* slurm_sbatch_argv: the argument vector of `sbatch --parsable ...` for `sub` with `o`, in
 * order: sbatch --parsable --job-name N --output O [--partition P] [--account A] [--time T]
 * [--mem M] [--cpus-per-task C] [--array=0-(n-1)[%K]] [extra words...] SCRIPT BIN URL DIR.
 * The strings are malloc'ed copies, NULL-terminated; free with slurm_argv_free.
 * Errors: TD_EINVAL (bad extra args, in err), TD_ENOMEM. */
int slurm_sbatch_argv(const slurm_opts *o, const slurm_submit *sub, char ***argv /* OUT */,
                      td_err *err);
void slurm_argv_free(char **argv);

/* The batch script every submission runs (constant; written once into the spool directory):
 * it picks its task directory ($3, or $3/$SLURM_ARRAY_TASK_ID in an array) and execs
 * `$1 run DIR/spec.json --report $2 --job $(cat DIR/job) --token-file DIR/token`. */
extern const char slurm_job_script[];

/* ---------------------------------------------------------------- running commands */

/* slurm_exec: run argv[0] (looked up in PATH) with argv, no shell, stdin /dev/null, stdout
 * and stderr captured together into *out (OUT, malloc'ed, NUL-terminated, at most 1 MiB kept;
 * the caller frees it, also on error). Kills the process group with SIGKILL after timeout_s.
 * *status (OUT) is the exit status (128 + signal when killed by one).
 * Errors: TD_EIO (cannot fork/exec, in err), TD_ETIMEOUT (killed after timeout_s). */
int slurm_exec(char *const argv[], double timeout_s, char **out /* OUT */, int *status /* OUT */,
               td_err *err);

/* ---------------------------------------------------------------- the executor */

typedef struct slurm_config {
  int enabled;            /* --executor slurm given: slurm is the default executor */
  const char *db_path;    /* the server's database (the executor opens its own connection) */
  const char *spool_dir;  /* NULL: <dir of db_path>/slurm-spool */
  const char *public_url; /* the URL the runs report to (no trailing slash needed) */
  const char *tdlab_bin;  /* NULL: this process's executable (/proc/self/exe) */
  slurm_opts opts;
  double poll_s;          /* seconds between rounds (0: 2) */
  double cmd_timeout_s;   /* timeout of one sbatch/squeue/scontrol/scancel (0: 30) */
  long max_attempts;      /* the server's --max-attempts */
  int busy_timeout_ms;    /* SQLite (0: 5000) */
} slurm_config;

typedef struct slurm_exec_ctx slurm_exec_ctx;

/* slurm_serve_flag_known: is `name` one of the serve flags below (all take a value)?
 * slurm_serve_flag: apply one of them to *c:
 *   --executor local|slurm   the default executor of jobs that do not name one (slurm also
 *                            starts the Slurm executor)
 *   --public-url URL         the URL the Slurm jobs report to (default http://HOST:PORT of
 *                            the listening socket; 0.0.0.0 / :: become this host's name)
 *   --slurm-partition P, --slurm-account A, --slurm-time T, --slurm-mem M (sbatch's formats),
 *   --slurm-cpus N (1..4096), --slurm-sbatch-args "..." (extra sbatch options, split like a
 *   shell without expansion), --slurm-poll SECONDS (0.1..3600, default 2),
 *   --slurm-tdlab PATH (the tdlab binary the jobs run; default this one),
 *   --slurm-spool DIR (default <db dir>/slurm-spool).
 * The strings are borrowed (argv). Errors: TD_EINVAL with the flag named in err->field. */
int slurm_serve_flag_known(const char *name);
int slurm_serve_flag(slurm_config *c, const char *name, const char *value, td_err *err);

/* slurm_start: check that sbatch, squeue, scontrol and scancel are found in PATH, make the
 * spool directory (0700), write the job script, open the database and start the thread.
 * *out (OUT) is stopped with slurm_stop. Errors: TD_EINVAL (config, in err), TD_EIO. */
int slurm_start(const slurm_config *cfg, slurm_exec_ctx **out /* OUT */, td_err *err);

/* slurm_serve_start: `tdlab serve --executor slurm` (after the HTTP server listens; the jobs
 * API was told before with api_set_executor_slurm_enabled and api_ctx.default_executor):
 * complete *c (db_path, max_attempts, the default --public-url http://HOST:PORT of the
 * listening socket, with 0.0.0.0/:: replaced by this host's name) and start the executor.
 * Errors: as slurm_start. */
int slurm_serve_start(slurm_config *c, const char *db_path, const char *host, unsigned port,
                      long max_attempts, slurm_exec_ctx **out /* OUT */, td_err *err);

/* slurm_stop: stop the thread (at most one command timeout later) and close its connection.
 * Slurm jobs keep running; a restarted server follows them again. NULL is a no-op. */
void slurm_stop(slurm_exec_ctx *x);

/* slurm_poke: run a round soon (after a job was submitted or cancelled). NULL is a no-op. */
void slurm_poke(slurm_exec_ctx *x);

#endif
