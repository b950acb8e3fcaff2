/* slurm.c: the Slurm executor (see slurm.h for the design): sbatch submission, job arrays for
 * sweeps, state following with squeue/scontrol, scancel, and the pure parsing behind them. */
#include "slurm.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "runtok.h"
#include "store_remote.h"
#include "store.h"
#include "store_internal.h"

/* ---------------------------------------------------------------- states */

static const char *const state_names[SLURM_ST_N] = {
    "UNKNOWN",
#define SLURM__ST_NAME(n) #n,
    SLURM_STATES(SLURM__ST_NAME)
#undef SLURM__ST_NAME
};

slurm_state slurm_state_parse(const char *s, long n) {
  if (!s) return SLURM_ST_UNKNOWN;
  size_t len = n < 0 ? strlen(s) : (size_t)n;
  /* "CANCELLED by 0", "COMPLETING+", trailing blanks: the name is the leading [A-Z_] run. */
  size_t k = 0;
  while (k < len && (isupper((unsigned char)s[k]) || s[k] == '_')) k++;
  if (k == 0) return SLURM_ST_UNKNOWN;
  if (k < len && s[k] != ' ' && s[k] != '+' && s[k] != '\n' && s[k] != '\r' && s[k] != '\t')
    return SLURM_ST_UNKNOWN;
  for (int i = 1; i < SLURM_ST_N; i++)
    if (strlen(state_names[i]) == k && !memcmp(state_names[i], s, k)) return (slurm_state)i;
  return SLURM_ST_UNKNOWN;
}

const char *slurm_state_name(slurm_state st) {
  return (st >= 0 && st < SLURM_ST_N) ? state_names[st] : "UNKNOWN";
}

slurm_class slurm_state_class(slurm_state st) {
  switch (st) {
  case SLURM_ST_PENDING:
  case SLURM_ST_CONFIGURING:
  case SLURM_ST_REQUEUED:
  case SLURM_ST_REQUEUE_HOLD:
  case SLURM_ST_REQUEUE_FED:
  case SLURM_ST_RESV_DEL_HOLD:
  case SLURM_ST_SUSPENDED:
  case SLURM_ST_STOPPED:
    return SLURM_CLASS_WAITING;
  case SLURM_ST_RUNNING:
  case SLURM_ST_COMPLETING:
  case SLURM_ST_RESIZING:
  case SLURM_ST_SIGNALING:
  case SLURM_ST_STAGE_OUT:
    return SLURM_CLASS_RUNNING;
  default:
    return SLURM_CLASS_FINAL;
  }
}

int slurm_map_final(slurm_state st, const char *ref, const char *exit_code, int cancel_requested,
                    long attempt, long max_attempts, slurm_outcome *out) {
  memset(out, 0, sizeof *out);
  if (slurm_state_class(st) != SLURM_CLASS_FINAL) return TD_EINVAL;
  const char *name = slurm_state_name(st);
  out->status = STORE_FAILED;
  switch (st) {
  case SLURM_ST_CANCELLED:
    out->status = STORE_CANCELLED;
    if (!cancel_requested)
      snprintf(out->error, sizeof out->error,
               "slurm: CANCELLED outside tdlab (scancel of Slurm job %s)", ref);
    break;
  case SLURM_ST_TIMEOUT:
    snprintf(out->error, sizeof out->error,
             "slurm: TIMEOUT: Slurm job %s reached its time limit", ref);
    break;
  case SLURM_ST_OUT_OF_MEMORY:
    snprintf(out->error, sizeof out->error,
             "slurm: OUT_OF_MEMORY: Slurm job %s exceeded its memory limit", ref);
    break;
  case SLURM_ST_NODE_FAIL:
  case SLURM_ST_PREEMPTED:
  case SLURM_ST_BOOT_FAIL:
    if (cancel_requested) {
      out->status = STORE_CANCELLED;
      break;
    }
    if (attempt < max_attempts) {
      out->status = STORE_QUEUED;
      out->requeue = 1;
      snprintf(out->error, sizeof out->error,
               "slurm: %s: Slurm job %s lost (attempt %ld of %ld); re-queued", name, ref,
               attempt, max_attempts);
    } else {
      snprintf(out->error, sizeof out->error,
               "slurm: %s: Slurm job %s lost (attempt %ld of %ld); no attempts left", name, ref,
               attempt, max_attempts);
    }
    break;
  case SLURM_ST_FAILED: {
    /* ExitCode is "code:signal". A signal means the run was killed before it could report (kill
     * -9 of the process, Slurm's polling memory limit): it is lost like a run whose lease ran
     * out, so it is re-queued while attempts remain. A plain non-zero exit is the run's own
     * failure (a usage error, say) and is final. */
    const char *colon = exit_code ? strchr(exit_code, ':') : NULL;
    long sig = colon ? strtol(colon + 1, NULL, 10) : 0;
    if (sig > 0 && cancel_requested) {
      out->status = STORE_CANCELLED;
    } else if (sig > 0 && attempt < max_attempts) {
      out->status = STORE_QUEUED;
      out->requeue = 1;
      snprintf(out->error, sizeof out->error,
               "slurm: FAILED: the run of Slurm job %s was killed by signal %ld before reporting "
               "(attempt %ld of %ld); re-queued",
               ref, sig, attempt, max_attempts);
    } else {
      snprintf(out->error, sizeof out->error,
               "slurm: FAILED: Slurm job %s exited with code %s before reporting a final status%s",
               ref, exit_code && *exit_code ? exit_code : "?",
               sig > 0 ? " (killed by a signal; no attempts left)" : "");
    }
    break;
  }
  case SLURM_ST_COMPLETED:
    snprintf(out->error, sizeof out->error,
             "slurm: COMPLETED: Slurm job %s ended without reporting a final status", ref);
    break;
  default:
    if (cancel_requested) out->status = STORE_CANCELLED;
    else
      snprintf(out->error, sizeof out->error, "slurm: %s: Slurm job %s ended", name, ref);
    break;
  }
  return 0;
}

/* ---------------------------------------------------------------- parsing */

/* Copy s[0..n) into dst (cap bytes), truncating. */
static void copy_n(char *dst, size_t cap, const char *s, size_t n) {
  if (n >= cap) n = cap - 1;
  memcpy(dst, s, n);
  dst[n] = '\0';
}

/* A non-negative decimal integer spanning exactly s[0..n). */
static int parse_uint(const char *s, size_t n, long long *v) {
  if (n == 0 || n > 18) return -1;
  long long x = 0;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    x = x * 10 + (s[i] - '0');
  }
  *v = x;
  return 0;
}

size_t slurm_parse_squeue(const char *text, slurm_row_fn fn, void *ctx, size_t *skipped) {
  size_t n_rows = 0, n_skip = 0;
  const char *p = text ? text : "";
  while (*p) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    if (len > 0 && p[len - 1] == '\r') len--;
    /* fields: %i|%A|%F|%K|%T|%r */
    const char *f[6];
    size_t fl[6];
    size_t nf = 0;
    const char *q = p, *end = p + len;
    while (nf < 6) {
      const char *bar = memchr(q, '|', (size_t)(end - q));
      f[nf] = q;
      if (!bar || nf == 5) {
        fl[nf++] = (size_t)(end - q);
        break;
      }
      fl[nf++] = (size_t)(bar - q);
      q = bar + 1;
    }
    long long raw, arr, task;
    slurm_row r;
    memset(&r, 0, sizeof r);
    int good = len > 0 && nf == 6 && !parse_uint(f[1], fl[1], &raw) &&
               !parse_uint(f[2], fl[2], &arr);
    if (good) {
      r.raw = raw;
      if (!parse_uint(f[3], fl[3], &task)) snprintf(r.ref, sizeof r.ref, "%lld_%lld", arr, task);
      else if (fl[3] == 3 && !memcmp(f[3], "N/A", 3)) snprintf(r.ref, sizeof r.ref, "%lld", arr);
      else good = 0; /* "[3-5%2]": an aggregated pending array (squeue without -r) */
    }
    if (good) {
      r.state = slurm_state_parse(f[4], (long)fl[4]);
      good = r.state != SLURM_ST_UNKNOWN;
    }
    if (good) {
      copy_n(r.reason, sizeof r.reason, f[5], fl[5]);
      fn(ctx, &r);
      n_rows++;
    } else if (len > 0) {
      n_skip++;
    }
    p = eol ? eol + 1 : p + len;
    if (!eol) break;
  }
  if (skipped) *skipped = n_skip;
  return n_rows;
}

/* The value of " Key=" in line[0..len) (or at its start), up to the next blank; NULL if absent. */
static const char *field_of(const char *line, size_t len, const char *key, size_t *vlen) {
  size_t kl = strlen(key);
  for (size_t i = 0; i + kl + 1 <= len; i++) {
    if ((i == 0 || line[i - 1] == ' ') && !memcmp(line + i, key, kl) && line[i + kl] == '=') {
      const char *v = line + i + kl + 1;
      size_t n = 0;
      while (v + n < line + len && v[n] != ' ' && v[n] != '\n') n++;
      *vlen = n;
      return v;
    }
  }
  return NULL;
}

size_t slurm_parse_scontrol(const char *text, slurm_row_fn fn, void *ctx) {
  size_t n_rows = 0;
  const char *p = text ? text : "";
  while (*p) {
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    size_t vl = 0, al = 0, tl = 0;
    const char *jid = field_of(p, len, "JobId", &vl);
    long long id, arr, task;
    if (jid && !parse_uint(jid, vl, &id)) {
      slurm_row r;
      memset(&r, 0, sizeof r);
      r.raw = id;
      const char *a = field_of(p, len, "ArrayJobId", &al);
      const char *t = field_of(p, len, "ArrayTaskId", &tl);
      if (a && t && !parse_uint(a, al, &arr) && !parse_uint(t, tl, &task))
        snprintf(r.ref, sizeof r.ref, "%lld_%lld", arr, task);
      else
        snprintf(r.ref, sizeof r.ref, "%lld", id);
      const char *s = field_of(p, len, "JobState", &vl);
      r.state = s ? slurm_state_parse(s, (long)vl) : SLURM_ST_UNKNOWN;
      const char *why = field_of(p, len, "Reason", &vl);
      if (why) copy_n(r.reason, sizeof r.reason, why, vl);
      const char *ec = field_of(p, len, "ExitCode", &vl);
      if (ec) copy_n(r.exit_code, sizeof r.exit_code, ec, vl);
      fn(ctx, &r);
      n_rows++;
    }
    if (!eol) break;
    p = eol + 1;
  }
  return n_rows;
}

int slurm_parse_sbatch(const char *text, long long *id) {
  if (!text) return TD_EINVAL;
  while (*text == ' ' || *text == '\t') text++;
  size_t n = 0;
  while (isdigit((unsigned char)text[n])) n++;
  long long v;
  if (parse_uint(text, n, &v) || v <= 0) return TD_EINVAL;
  if (text[n] && text[n] != ';' && text[n] != '\n' && text[n] != '\r') return TD_EINVAL;
  *id = v;
  return 0;
}

int slurm_split_args(const char *s, char **argv, size_t cap, size_t *n, td_err *err) {
  size_t start = *n, k = *n;
  const char *p = s ? s : "";
  size_t blen = strlen(p) + 1;
  char *word = malloc(blen);
  if (!word) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  int rc = 0;
  for (;;) {
    while (*p == ' ' || *p == '\t' || *p == '\n') p++;
    if (!*p) break;
    size_t w = 0;
    while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
      if (*p == '\'') {
        const char *close = strchr(p + 1, '\'');
        if (!close) {
          rc = td_err_set(err, TD_EINVAL, "slurm-sbatch-args", "unterminated ' in '%s'", s);
          goto fail;
        }
        memcpy(word + w, p + 1, (size_t)(close - p - 1));
        w += (size_t)(close - p - 1);
        p = close + 1;
      } else if (*p == '"') {
        p++;
        while (*p && *p != '"') {
          if (*p == '\\' && p[1]) p++;
          word[w++] = *p++;
        }
        if (*p != '"') {
          rc = td_err_set(err, TD_EINVAL, "slurm-sbatch-args", "unterminated \" in '%s'", s);
          goto fail;
        }
        p++;
      } else if (*p == '\\' && p[1]) {
        word[w++] = p[1];
        p += 2;
      } else {
        word[w++] = *p++;
      }
    }
    word[w] = '\0';
    if (k >= cap) {
      rc = td_err_set(err, TD_ELIMIT, "slurm-sbatch-args", "more than %zu words", cap - start);
      goto fail;
    }
    if (!(argv[k] = strdup(word))) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
      goto fail;
    }
    k++;
  }
  free(word);
  *n = k;
  return 0;
fail:
  free(word);
  for (size_t i = start; i < k; i++) {
    free(argv[i]);
    argv[i] = NULL;
  }
  return rc;
}

/* ---------------------------------------------------------------- sbatch argv */

void slurm_argv_free(char **argv) {
  if (!argv) return;
  for (char **a = argv; *a; a++) free(*a);
  free(argv);
}

#define SLURM_MAX_EXTRA 64

int slurm_sbatch_argv(const slurm_opts *o, const slurm_submit *sub, char ***argv_out,
                      td_err *err) {
  size_t cap = 32 + SLURM_MAX_EXTRA, n = 0;
  char **argv = calloc(cap + 1, sizeof *argv);
  if (!argv) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  char buf[256];
  int rc = 0;
#define PUSH(s)                                         \
  do {                                                  \
    if (!(argv[n] = strdup(s))) goto nomem;             \
    n++;                                                \
  } while (0)
  PUSH("sbatch");
  PUSH("--parsable");
  PUSH("--job-name");
  PUSH(sub->job_name);
  PUSH("--output");
  PUSH(sub->output);
  if (o->partition && *o->partition) { PUSH("--partition"); PUSH(o->partition); }
  if (o->account && *o->account) { PUSH("--account"); PUSH(o->account); }
  if (o->time && *o->time) { PUSH("--time"); PUSH(o->time); }
  if (o->mem && *o->mem) { PUSH("--mem"); PUSH(o->mem); }
  if (o->cpus > 0) {
    snprintf(buf, sizeof buf, "%ld", o->cpus);
    PUSH("--cpus-per-task");
    PUSH(buf);
  }
  if (sub->n_tasks > 0) {
    if (sub->max_concurrent > 0)
      snprintf(buf, sizeof buf, "--array=0-%ld%%%ld", sub->n_tasks - 1, sub->max_concurrent);
    else
      snprintf(buf, sizeof buf, "--array=0-%ld", sub->n_tasks - 1);
    PUSH(buf);
  }
  if (o->extra && (rc = slurm_split_args(o->extra, argv, n + SLURM_MAX_EXTRA, &n, err))) {
    slurm_argv_free(argv);
    return rc;
  }
  PUSH(sub->script);
  PUSH(sub->tdlab_bin);
  PUSH(sub->url);
  PUSH(sub->dir);
#undef PUSH
  argv[n] = NULL;
  *argv_out = argv;
  return 0;
nomem:
  slurm_argv_free(argv);
  return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
}

const char slurm_job_script[] =
    "#!/bin/sh\n"
    "# tdlab Slurm job script (written by tdlab serve --executor slurm; see server/slurm.h).\n"
    "# $1: the tdlab binary, $2: the URL to report to, $3: the task directory (an array's\n"
    "# parent of 0/, 1/, ...) holding spec.json, job (the tdlab job id) and token (0600).\n"
    "d=\"$3\"\n"
    "if [ -n \"${SLURM_ARRAY_TASK_ID:-}\" ]; then d=\"$3/$SLURM_ARRAY_TASK_ID\"; fi\n"
    "exec \"$1\" run \"$d/spec.json\" --report \"$2\" --job \"$(cat \"$d/job\")\" "
    "--token-file \"$d/token\"\n";

/* ---------------------------------------------------------------- running commands */

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int slurm_exec(char *const argv[], double timeout_s, char **out, int *status, td_err *err) {
  *out = NULL;
  *status = -1;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return td_err_set(err, TD_EIO, NULL, "%s: pipe: %s", argv[0], strerror(errno));
  int ep[2]; /* exec failure report: errno, or EOF when exec succeeded (O_CLOEXEC) */
  if (pipe2(ep, O_CLOEXEC) != 0) {
    close(fds[0]);
    close(fds[1]);
    return td_err_set(err, TD_EIO, NULL, "%s: pipe: %s", argv[0], strerror(errno));
  }
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(fds[0]), close(fds[1]), close(ep[0]), close(ep[1]);
    return td_err_set(err, TD_EIO, NULL, "%s: fork: %s", argv[0], strerror(e));
  }
  if (pid == 0) {
    setpgid(0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execvp(argv[0], argv);
    int e = errno;
    ssize_t w = write(ep[1], &e, sizeof e);
    (void)w;
    _exit(127);
  }
  setpgid(pid, pid); /* also here: no race with the child's own call */
  close(fds[1]);
  close(ep[1]);
  int exec_errno = 0;
  ssize_t got = read(ep[0], &exec_errno, sizeof exec_errno);
  close(ep[0]);
  size_t cap = 4096, len = 0, max = 1 << 20;
  char *buf = malloc(cap);
  int timed_out = 0;
  double deadline = mono_s() + timeout_s;
  for (;;) {
    double left = deadline - mono_s();
    if (left <= 0) {
      timed_out = 1;
      break;
    }
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    int pr = poll(&pfd, 1, (int)(left * 1000) + 1);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    char tmp[4096];
    ssize_t r = read(fds[0], tmp, sizeof tmp);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (buf && len + (size_t)r + 1 > cap && len < max) {
      while (len + (size_t)r + 1 > cap) cap *= 2;
      char *nb = realloc(buf, cap);
      if (!nb) free(buf);
      buf = nb;
    }
    if (buf && len + (size_t)r + 1 <= cap) {
      memcpy(buf + len, tmp, (size_t)r);
      len += (size_t)r;
    }
  }
  close(fds[0]);
  if (timed_out) kill(-pid, SIGKILL);
  int ws = 0;
  /* The output closed: the process is exiting; wait for it (bounded by the kill above). */
  for (;;) {
    pid_t w = waitpid(pid, &ws, timed_out ? 0 : WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) break;
    if (w == 0) {
      if (mono_s() > deadline) {
        kill(-pid, SIGKILL);
        timed_out = 1;
        waitpid(pid, &ws, 0);
        break;
      }
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  if (buf) buf[len] = '\0';
  *out = buf ? buf : strdup("");
  *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : -1;
  if (got == (ssize_t)sizeof exec_errno)
    return td_err_set(err, TD_EIO, NULL, "%s: cannot run it: %s", argv[0], strerror(exec_errno));
  if (timed_out)
    return td_err_set(err, TD_ETIMEOUT, NULL, "%s: no answer after %.0f s (killed)", argv[0],
                      timeout_s);
  return 0;
}

/* ---------------------------------------------------------------- the executor */

/* A submission or start clears a failed sbatch's note, but keeps why the job was re-queued. */
#define CLEAR_SBATCH_ERROR \
  "error=CASE WHEN error LIKE 'slurm: sbatch failed%' THEN NULL ELSE error END"

/* Issue a run token for queued job `id`: a fresh one (runtok_new) whose hash replaces the
 * job's (store_run_prepare; the previous token stops working). The job stays queued (Slurm
 * PENDING); the ingestion endpoints start it at its run's first authenticated request
 * (store_run_begin), or the executor does when squeue shows it RUNNING. */
static int issue_token(store *s, int64_t id, char token[RUNTOK_HEX + 1], td_err *err) {
  char hash[RUNTOK_HEX + 1];
  int rc = runtok_new(token, err);
  if (!rc) {
    runtok_hash(token, hash);
    rc = store_run_prepare(s, id, "slurm", hash, err);
  }
  return rc;
}

struct slurm_exec_ctx {
  slurm_config cfg;
  char spool[1024], script[1100], bin[PATH_MAX], url[1024];
  store *st;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop, poked, started;
  unsigned long rounds;
  int slurm_down; /* the last command that needed the controller failed (logged once) */
};

static sqlite3_stmt *prep(slurm_exec_ctx *x, const char *sql) {
  sqlite3_stmt *q = NULL;
  if (sqlite3_prepare_v2(store__db(x->st), sql, -1, &q, NULL) != SQLITE_OK) {
    log_emit(LOG_ERROR, "slurm_sql", "msg=\"%s\"", sqlite3_errmsg(store__db(x->st)));
    return NULL;
  }
  return q;
}

/* Run one UPDATE with text/int args: fmt chars 't' (text, NULL ok) and 'i' (int64). */
static int exec_sql(slurm_exec_ctx *x, const char *sql, const char *fmt, ...) {
  sqlite3_stmt *q = prep(x, sql);
  if (!q) return TD_EIO;
  va_list ap;
  va_start(ap, fmt);
  for (int i = 0; fmt[i]; i++) {
    if (fmt[i] == 't') {
      const char *s = va_arg(ap, const char *);
      if (s) sqlite3_bind_text(q, i + 1, s, -1, SQLITE_TRANSIENT);
      else sqlite3_bind_null(q, i + 1);
    } else {
      sqlite3_bind_int64(q, i + 1, va_arg(ap, int64_t));
    }
  }
  va_end(ap);
  int rc = sqlite3_step(q);
  int changes = sqlite3_changes(store__db(x->st));
  sqlite3_finalize(q);
  if (rc != SQLITE_DONE) {
    log_emit(LOG_ERROR, "slurm_sql", "msg=\"%s\"", sqlite3_errmsg(store__db(x->st)));
    return TD_EIO;
  }
  return changes;
}

#define NOW "strftime('%Y-%m-%dT%H:%M:%fZ','now')"

/* Write `data` to path with mode 0600 (created new or truncated). */
static int write_file(const char *path, const char *data, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  fchmod(fd, mode);
  size_t len = strlen(data), off = 0;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      close(fd);
      return -1;
    }
    off += (size_t)w;
  }
  return close(fd);
}

/* Remove a task directory's files (the token first) and the directory. */
static void remove_task_dir(const char *dir) {
  const char *names[] = {"token", "spec.json", "job", "slurm.out"};
  char p[PATH_MAX];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    unlink(p);
  }
  rmdir(dir);
}

/* A job picked for submission. */
typedef struct pick {
  int64_t id;
  long attempt;
  char *kind, *params, *old_ref;
} pick;

static void picks_free(pick *p, size_t n) {
  for (size_t i = 0; i < n; i++) free(p[i].kind), free(p[i].params), free(p[i].old_ref);
}

static char *dup_col(sqlite3_stmt *q, int c) {
  const unsigned char *s = sqlite3_column_text(q, c);
  return s ? strdup((const char *)s) : NULL;
}

/* The job spec for `tdlab run`: {"kind": K, "params": P}. */
static char *spec_json(const pick *p) {
  size_t n = strlen(p->kind) + strlen(p->params) + 64;
  char *s = malloc(n);
  if (s) snprintf(s, n, "{\"kind\":\"%s\",\"params\":%s}\n", p->kind, p->params);
  return s;
}

/* Issue a run token for queued job p->id (its hash replaces run_token_hash) and write the
 * task directory `dir` with spec.json, job and token (0600). 0 or -1 (logged). */
static int prepare_task(slurm_exec_ctx *x, const pick *p, const char *dir) {
  char token[RUNTOK_HEX + 1];
  td_err e;
  td_err_clear(&e);
  if (issue_token(x->st, p->id, token, &e)) {
    log_emit(LOG_ERROR, "slurm_token", "job=%lld msg=\"%s\"", (long long)p->id, e.msg);
    return -1;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    log_emit(LOG_ERROR, "slurm_spool", "dir=%s msg=\"%s\"", dir, strerror(errno));
    return -1;
  }
  char path[PATH_MAX], idbuf[32];
  char *spec = spec_json(p);
  snprintf(idbuf, sizeof idbuf, "%lld\n", (long long)p->id);
  int bad = !spec;
  snprintf(path, sizeof path, "%s/spec.json", dir);
  bad = bad || write_file(path, spec, 0600);
  snprintf(path, sizeof path, "%s/job", dir);
  bad = bad || write_file(path, idbuf, 0600);
  snprintf(path, sizeof path, "%s/token", dir);
  bad = bad || write_file(path, token, 0600);
  free(spec);
  memset(token, 0, sizeof token);
  if (bad) log_emit(LOG_ERROR, "slurm_spool", "dir=%s msg=\"%s\"", dir, strerror(errno));
  return bad ? -1 : 0;
}

/* scancel REF (best effort; logged). */
static int run_scancel(slurm_exec_ctx *x, const char *ref) {
  char *argv[] = {"scancel", (char *)ref, NULL};
  char *out = NULL;
  int status = 0;
  td_err e;
  td_err_clear(&e);
  int rc = slurm_exec(argv, x->cfg.cmd_timeout_s, &out, &status, &e);
  if (rc || status != 0)
    log_emit(LOG_WARN, "slurm_scancel", "ref=%s status=%d msg=\"%s\"", ref, status,
             rc ? e.msg : (out ? out : ""));
  else
    log_emit(LOG_INFO, "slurm_scancel", "ref=%s", ref);
  free(out);
  return rc || status != 0 ? -1 : 0;
}

/* Record a submission failure on the queued jobs (error text; they stay queued). */
static void submit_failed(slurm_exec_ctx *x, const pick *p, size_t n, const char *why) {
  char msg[512];
  snprintf(msg, sizeof msg, "slurm: sbatch failed, retrying: %s", why);
  for (char *c = msg; *c; c++)
    if (*c == '\n' || *c == '"') *c = ' ';
  for (size_t i = 0; i < n; i++)
    exec_sql(x, "UPDATE jobs SET error=?1, run_token_hash=NULL WHERE id=?2 AND status='queued'",
             "ti", msg, p[i].id);
  log_emit(LOG_WARN, "slurm_sbatch_failed", "jobs=%zu msg=\"%s\"", n, msg);
}

/* Submit picks p[0..n) as one sbatch: a single job (array 0) or an array (max_conc: %N). */
static void submit(slurm_exec_ctx *x, pick *p, size_t n, int array, long max_conc,
                   int64_t sweep_id) {
  char dir[1200], out_pat[1300], name[64], task[1200];
  static unsigned long serial;
  /* A fresh directory per submission: the job id and attempt for a single job, the sweep
   * and a serial for an array. */
  if (!array)
    snprintf(dir, sizeof dir, "%s/job%lld.a%ld", x->spool, (long long)p[0].id, p[0].attempt);
  else
    snprintf(dir, sizeof dir, "%s/sweep%lld.%ld.%lu", x->spool, (long long)sweep_id,
             (long)time(NULL), ++serial);
  if (array && mkdir(dir, 0700) != 0 && errno != EEXIST) {
    submit_failed(x, p, n, strerror(errno));
    return;
  }
  for (size_t i = 0; i < n; i++) {
    /* A re-submission of a job whose old Slurm job may still be alive: stop that one first. */
    if (p[i].old_ref) run_scancel(x, p[i].old_ref);
    /* Every task has its own directory job<ID>.a<ATTEMPT> (pruned when the job is final); an
     * array's directory links task i to it. */
    snprintf(task, sizeof task, "%s/job%lld.a%ld", x->spool, (long long)p[i].id, p[i].attempt);
    int bad = prepare_task(x, &p[i], task);
    if (!bad && array) {
      char link[PATH_MAX + 32], target[PATH_MAX];
      snprintf(link, sizeof link, "%s/%zu", dir, i);
      snprintf(target, sizeof target, "../job%lld.a%ld", (long long)p[i].id, p[i].attempt);
      unlink(link);
      bad = symlink(target, link) != 0;
    }
    if (bad) {
      submit_failed(x, p, n, "cannot write the spool directory");
      return;
    }
  }
  if (array) {
    snprintf(out_pat, sizeof out_pat, "%s/%%a/slurm.out", dir);
    snprintf(name, sizeof name, "tdlab-sweep%lld", (long long)sweep_id);
  } else {
    snprintf(out_pat, sizeof out_pat, "%s/slurm.out", dir);
    snprintf(name, sizeof name, "tdlab-job%lld", (long long)p[0].id);
  }
  slurm_submit sub = {.job_name = name, .output = out_pat, .script = x->script,
                      .tdlab_bin = x->bin, .url = x->url, .dir = dir,
                      .n_tasks = array ? (long)n : 0, .max_concurrent = array ? max_conc : 0};
  char **argv = NULL;
  td_err e;
  td_err_clear(&e);
  if (slurm_sbatch_argv(&x->cfg.opts, &sub, &argv, &e)) {
    submit_failed(x, p, n, e.msg);
    return;
  }
  char *out = NULL;
  int status = 0;
  int rc = slurm_exec(argv, x->cfg.cmd_timeout_s, &out, &status, &e);
  slurm_argv_free(argv);
  long long sid = 0;
  if (rc || status != 0 || slurm_parse_sbatch(out, &sid)) {
    char why[400];
    snprintf(why, sizeof why, "%s", rc ? e.msg : (out && *out ? out : "no job id printed"));
    size_t wl = strlen(why);
    while (wl && (why[wl - 1] == '\n' || why[wl - 1] == ' ')) why[--wl] = '\0';
    submit_failed(x, p, n, why);
    x->slurm_down = 1;
    free(out);
    return;
  }
  free(out);
  x->slurm_down = 0;
  char ref[48];
  for (size_t i = 0; i < n; i++) {
    if (array) snprintf(ref, sizeof ref, "%lld_%zu", sid, i);
    else snprintf(ref, sizeof ref, "%lld", sid);
    exec_sql(x,
             "UPDATE jobs SET executor_ref=?1, " CLEAR_SBATCH_ERROR " WHERE id=?2 AND status='queued'", "ti",
             ref, p[i].id);
    log_emit(LOG_INFO, "slurm_submitted", "job=%lld ref=%s attempt=%ld", (long long)p[i].id, ref,
             p[i].attempt);
  }
  if (array)
    log_emit(LOG_INFO, "slurm_array", "sweep=%lld slurm=%lld tasks=%zu max_concurrency=%ld",
             (long long)sweep_id, sid, n, max_conc);
}

/* The jobs to submit: queued, executor slurm, not yet (or no longer) submitted. */
#define PICK_WHERE                                                                      \
  "status='queued' AND executor='slurm' AND cancel_requested=0 AND "                   \
  "(executor_ref IS NULL OR run_token_hash IS NULL)"

static size_t load_picks(slurm_exec_ctx *x, sqlite3_stmt *q, pick *p, size_t cap) {
  size_t n = 0;
  while (n < cap && sqlite3_step(q) == SQLITE_ROW) {
    p[n].id = sqlite3_column_int64(q, 0);
    p[n].attempt = (long)sqlite3_column_int64(q, 1);
    p[n].kind = dup_col(q, 2);
    p[n].params = dup_col(q, 3);
    p[n].old_ref = dup_col(q, 4);
    if (!p[n].kind || !p[n].params) {
      picks_free(&p[n], 1);
      continue;
    }
    n++;
  }
  (void)x;
  return n;
}

#define MAX_PICKS 1000

static void submit_round(slurm_exec_ctx *x) {
  pick *p = calloc(MAX_PICKS, sizeof *p);
  if (!p) return;
  /* Plain jobs, and sweep children re-queued after a Slurm failure (attempt > 1: they go
   * alone, their siblings' array is already running). */
  sqlite3_stmt *q = prep(x, "SELECT id, attempt, kind, params, executor_ref FROM jobs WHERE "
                            PICK_WHERE " AND (sweep_id IS NULL OR executor_ref IS NOT NULL) "
                            "ORDER BY priority DESC, id LIMIT 100");
  size_t n = q ? load_picks(x, q, p, 100) : 0;
  sqlite3_finalize(q);
  for (size_t i = 0; i < n && !x->stop; i++) submit(x, &p[i], 1, 0, 0, 0);
  picks_free(p, n);
  /* Sweeps: each sweep's never-submitted children as one array. */
  int64_t sweeps[32];
  size_t ns = 0;
  q = prep(x, "SELECT DISTINCT sweep_id FROM jobs WHERE " PICK_WHERE
              " AND sweep_id IS NOT NULL AND executor_ref IS NULL LIMIT 32");
  while (q && ns < 32 && sqlite3_step(q) == SQLITE_ROW) sweeps[ns++] = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  for (size_t s = 0; s < ns && !x->stop; s++) {
    long max_conc = 0;
    q = prep(x, "SELECT max_concurrency FROM sweeps WHERE id=?1");
    if (q) {
      sqlite3_bind_int64(q, 1, sweeps[s]);
      if (sqlite3_step(q) == SQLITE_ROW) max_conc = (long)sqlite3_column_int64(q, 0);
    }
    sqlite3_finalize(q);
    q = prep(x, "SELECT id, attempt, kind, params, executor_ref FROM jobs WHERE " PICK_WHERE
                " AND sweep_id=?1 AND executor_ref IS NULL ORDER BY id LIMIT 1000");
    if (!q) continue;
    sqlite3_bind_int64(q, 1, sweeps[s]);
    n = load_picks(x, q, p, MAX_PICKS);
    sqlite3_finalize(q);
    if (n) submit(x, p, n, 1, max_conc, sweeps[s]);
    picks_free(p, n);
  }
  free(p);
}

/* ---------------------------------------------------------------- following */

typedef struct live_set {
  slurm_row *rows;
  size_t n, cap;
} live_set;

static void live_add(void *ctx, const slurm_row *r) {
  live_set *l = ctx;
  if (l->n == l->cap) {
    size_t nc = l->cap ? l->cap * 2 : 64;
    slurm_row *nr = realloc(l->rows, nc * sizeof *nr);
    if (!nr) return;
    l->rows = nr;
    l->cap = nc;
  }
  l->rows[l->n++] = *r;
}

static const slurm_row *live_find(const live_set *l, const char *ref) {
  for (size_t i = 0; i < l->n; i++)
    if (!strcmp(l->rows[i].ref, ref)) return &l->rows[i];
  return NULL;
}

static void one_row(void *ctx, const slurm_row *r) {
  slurm_row *dst = ctx;
  if (dst->state == SLURM_ST_UNKNOWN) *dst = *r;
}

/* A tracked job (status queued/running with a live submission, or cancelled/cancel requested). */
typedef struct tracked {
  int64_t id;
  long attempt;
  int status, cancel_requested;
  char ref[48];
} tracked;

/* The task directory of a tracked job is not known here; spool files are removed when the
 * whole spool entry is older than a day (prune_spool). */

static void finish_job(slurm_exec_ctx *x, const tracked *t, int status, const char *error) {
  td_err e;
  td_err_clear(&e);
  int changed = 0;
  if (t->status == STORE_QUEUED) {
    /* store_job_finish wants a running job: a queued one is finished directly. */
    changed = exec_sql(x,
                       "UPDATE jobs SET status=?1, error=?2, finished_at=" NOW ", "
                       "run_token_hash=NULL WHERE id=?3 AND status='queued'",
                       "tti", store_status_name(status), error, t->id) > 0;
  } else if (store_job_finish(x->st, t->id, status, error, NULL, 0, 0, &e) == 0) {
    exec_sql(x, "UPDATE jobs SET run_token_hash=NULL WHERE id=?1", "i", t->id);
    changed = 1;
  }
  /* Not changed: the run's own finish got there first (the squeue snapshot was older). */
  if (changed)
    log_emit(status == STORE_CANCELLED && !error ? LOG_INFO : LOG_WARN, "slurm_final",
             "job=%lld ref=%s status=%s msg=\"%s\"", (long long)t->id, t->ref,
             store_status_name(status), error ? error : "");
}

static void requeue_job(slurm_exec_ctx *x, const tracked *t, const char *error) {
  /* attempt+1, back to queued, token dead; executor_ref kept so the re-submission scancels a
   * Slurm job that might still be alive. */
  int changed = exec_sql(x,
           "UPDATE jobs SET status='queued', attempt=attempt+1, error=?1, run_token_hash=NULL, "
           "started_at=NULL, progress_done=0 WHERE id=?2 AND status IN ('queued','running') "
           "AND attempt=?3", "tii", error, t->id, (int64_t)t->attempt);
  if (changed > 0)
    log_emit(LOG_WARN, "slurm_requeue", "job=%lld ref=%s attempt=%ld msg=\"%s\"",
           (long long)t->id, t->ref, t->attempt + 1, error);
}

static void follow_one(slurm_exec_ctx *x, const tracked *t, const live_set *live) {
  const slurm_row *r = live_find(live, t->ref);
  if (r) {
    slurm_class c = slurm_state_class(r->state);
    if (t->cancel_requested || t->status == STORE_CANCELLED) {
      if (c != SLURM_CLASS_FINAL && run_scancel(x, t->ref) == 0 && t->status == STORE_RUNNING)
        finish_job(x, t, STORE_CANCELLED, NULL);
      return;
    }
    if (c == SLURM_CLASS_RUNNING && t->status == STORE_QUEUED) {
      /* The run may have reported already (its first heartbeat starts it); else start it. */
      exec_sql(x,
               "UPDATE jobs SET status='running', started_at=COALESCE(started_at," NOW "), "
               "heartbeat_at=" NOW ", " CLEAR_SBATCH_ERROR " WHERE id=?1 AND status='queued'",
               "i", t->id);
      log_emit(LOG_INFO, "slurm_running", "job=%lld ref=%s", (long long)t->id, t->ref);
    }
    if (c != SLURM_CLASS_FINAL) return;
  }
  if (t->status == STORE_CANCELLED) return; /* gone from squeue: nothing left to stop */
  /* Not listed (or listed final): ask scontrol for the final state. */
  char *argv[] = {"scontrol", "show", "job", "-o", (char *)t->ref, NULL};
  char *out = NULL;
  int status = 0;
  td_err e;
  td_err_clear(&e);
  int rc = slurm_exec(argv, x->cfg.cmd_timeout_s, &out, &status, &e);
  slurm_row fin;
  memset(&fin, 0, sizeof fin);
  if (!rc && status == 0) slurm_parse_scontrol(out, one_row, &fin);
  int unknown = !rc && status != 0 && out && strstr(out, "Invalid job id");
  free(out);
  if (rc || (status != 0 && !unknown)) return; /* controller away: decide nothing */
  if (unknown || fin.state == SLURM_ST_UNKNOWN) {
    /* Purged (MinJobAge) or never known: a queued submission is re-submitted; a running job
     * is left to its lease (heartbeat timeout). */
    if (t->status == STORE_QUEUED)
      exec_sql(x, "UPDATE jobs SET run_token_hash=NULL WHERE id=?1 AND status='queued'", "i",
               t->id);
    return;
  }
  if (slurm_state_class(fin.state) != SLURM_CLASS_FINAL) return; /* squeue raced; next round */
  slurm_outcome o;
  slurm_map_final(fin.state, t->ref, fin.exit_code, t->cancel_requested, t->attempt,
                  x->cfg.max_attempts, &o);
  if (o.requeue) requeue_job(x, t, o.error);
  else finish_job(x, t, o.status, o.error[0] ? o.error : NULL);
}

static void follow_round(slurm_exec_ctx *x) {
  tracked *t = NULL;
  size_t n = 0, cap = 0;
  sqlite3_stmt *q = prep(
      x, "SELECT id, attempt, status, cancel_requested, executor_ref FROM jobs WHERE "
         "executor='slurm' AND executor_ref IS NOT NULL AND ("
         "(status IN ('queued','running') AND run_token_hash IS NOT NULL) OR "
         "(status='cancelled' AND finished_at > strftime('%Y-%m-%dT%H:%M:%fZ','now','-600 seconds')))"
         " ORDER BY id LIMIT 5000");
  while (q && sqlite3_step(q) == SQLITE_ROW) {
    if (n == cap) {
      size_t nc = cap ? cap * 2 : 64;
      tracked *nt = realloc(t, nc * sizeof *nt);
      if (!nt) break;
      t = nt;
      cap = nc;
    }
    t[n].id = sqlite3_column_int64(q, 0);
    t[n].attempt = (long)sqlite3_column_int64(q, 1);
    const unsigned char *s = sqlite3_column_text(q, 2);
    t[n].status = store_status_parse(s ? (const char *)s : "");
    t[n].cancel_requested = sqlite3_column_int(q, 3);
    s = sqlite3_column_text(q, 4);
    snprintf(t[n].ref, sizeof t[n].ref, "%s", s ? (const char *)s : "");
    n++;
  }
  sqlite3_finalize(q);
  if (n == 0) {
    free(t);
    return;
  }
  char *argv[] = {"squeue", "--me", "-h", "-r", "-a", "-o", SLURM_SQUEUE_FORMAT, NULL};
  char *out = NULL;
  int status = 0;
  td_err e;
  td_err_clear(&e);
  int rc = slurm_exec(argv, x->cfg.cmd_timeout_s, &out, &status, &e);
  if (rc || status != 0) {
    if (!x->slurm_down)
      log_emit(LOG_ERROR, "slurm_down", "msg=\"squeue failed (%s); jobs keep their state until "
               "it answers\"", rc ? e.msg : (out ? strtok(out, "\n") : ""));
    x->slurm_down = 1;
    free(out);
    free(t);
    return;
  }
  if (x->slurm_down) log_emit(LOG_INFO, "slurm_up", "msg=\"squeue answers again\"");
  x->slurm_down = 0;
  live_set live = {0};
  slurm_parse_squeue(out, live_add, &live, NULL);
  free(out);
  for (size_t i = 0; i < n && !x->stop; i++) follow_one(x, &t[i], &live);
  free(live.rows);
  free(t);
}

/* Remove the task directories (token first) of jobs that are final or at another attempt,
 * and array directories whose links all dangle; every 30 rounds. */
static void prune_spool(slurm_exec_ctx *x) {
  if (++x->rounds % 30 != 1) return;
  DIR *d = opendir(x->spool);
  if (!d) return;
  struct dirent *de;
  char path[1400];
  sqlite3_stmt *q = prep(x, "SELECT status, attempt FROM jobs WHERE id=?1");
  while (q && (de = readdir(d))) {
    long long id;
    long att;
    char tail;
    snprintf(path, sizeof path, "%s/%s", x->spool, de->d_name);
    if (sscanf(de->d_name, "job%lld.a%ld%c", &id, &att, &tail) == 2) {
      sqlite3_reset(q);
      sqlite3_bind_int64(q, 1, id);
      int keep = 0;
      if (sqlite3_step(q) == SQLITE_ROW) {
        const unsigned char *stt = sqlite3_column_text(q, 0);
        int status = store_status_parse(stt ? (const char *)stt : "");
        keep = (status == STORE_QUEUED || status == STORE_RUNNING) &&
               sqlite3_column_int64(q, 1) == att;
      }
      if (!keep) remove_task_dir(path);
    } else if (!strncmp(de->d_name, "sweep", 5)) {
      DIR *sd = opendir(path);
      if (!sd) continue;
      struct dirent *se;
      int live = 0;
      char lp[1800];
      struct stat sb;
      while ((se = readdir(sd)))
        if (se->d_name[0] != '.') {
          snprintf(lp, sizeof lp, "%s/%s", path, se->d_name);
          if (stat(lp, &sb) == 0) live = 1;
        }
      if (!live) {
        rewinddir(sd);
        while ((se = readdir(sd)))
          if (se->d_name[0] != '.') {
            snprintf(lp, sizeof lp, "%s/%s", path, se->d_name);
            unlink(lp);
          }
        rmdir(path);
      }
      closedir(sd);
    }
  }
  sqlite3_finalize(q);
  closedir(d);
}

static void *slurm_main(void *arg) {
  slurm_exec_ctx *x = arg;
  pthread_mutex_lock(&x->mu);
  while (!x->stop) {
    x->poked = 0;
    pthread_mutex_unlock(&x->mu);
    submit_round(x);
    if (!x->stop) follow_round(x);
    prune_spool(x);
    pthread_mutex_lock(&x->mu);
    if (x->stop || x->poked) continue;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double until = ts.tv_sec + ts.tv_nsec * 1e-9 + x->cfg.poll_s;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    while (!x->stop && !x->poked)
      if (pthread_cond_timedwait(&x->cv, &x->mu, &ts) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&x->mu);
  return NULL;
}

static const char *const serve_flags[] = {
    "--executor",  "--public-url",  "--slurm-partition", "--slurm-account",
    "--slurm-time", "--slurm-mem",  "--slurm-cpus",      "--slurm-sbatch-args",
    "--slurm-poll", "--slurm-tdlab", "--slurm-spool"};

int slurm_serve_flag_known(const char *name) {
  for (size_t i = 0; i < sizeof serve_flags / sizeof serve_flags[0]; i++)
    if (!strcmp(name, serve_flags[i])) return 1;
  return 0;
}

int slurm_serve_flag(slurm_config *c, const char *name, const char *value, td_err *err) {
  const char *f = name + 2;
  if (!value || !*value) return td_err_set(err, TD_EINVAL, f, "%s needs a value", name);
  if (!strcmp(name, "--executor")) {
    if (!strcmp(value, "slurm")) c->enabled = 1;
    else if (!strcmp(value, "local")) c->enabled = 0;
    else return td_err_set(err, TD_EINVAL, f, "--executor is local or slurm, not '%s'", value);
  } else if (!strcmp(name, "--public-url")) {
    if (strncmp(value, "http://", 7) && strncmp(value, "https://", 8))
      return td_err_set(err, TD_EINVAL, f, "--public-url must start with http:// or https://");
    c->public_url = value;
  } else if (!strcmp(name, "--slurm-partition")) c->opts.partition = value;
  else if (!strcmp(name, "--slurm-account")) c->opts.account = value;
  else if (!strcmp(name, "--slurm-time")) c->opts.time = value;
  else if (!strcmp(name, "--slurm-mem")) c->opts.mem = value;
  else if (!strcmp(name, "--slurm-sbatch-args")) c->opts.extra = value;
  else if (!strcmp(name, "--slurm-tdlab")) c->tdlab_bin = value;
  else if (!strcmp(name, "--slurm-spool")) c->spool_dir = value;
  else if (!strcmp(name, "--slurm-cpus") || !strcmp(name, "--slurm-poll")) {
    char *end;
    errno = 0;
    double v = strtod(value, &end);
    int is_cpus = !strcmp(name, "--slurm-cpus");
    if (end == value || *end || errno || !(v >= (is_cpus ? 1 : 0.1)) ||
        !(v <= (is_cpus ? 4096 : 3600)) || (is_cpus && v != (long)v))
      return td_err_set(err, TD_EINVAL, f, "%s: '%s' is not %s", name, value,
                        is_cpus ? "an integer in 1..4096" : "a number of seconds in 0.1..3600");
    if (is_cpus) c->opts.cpus = (long)v;
    else c->poll_s = v;
  } else {
    return td_err_set(err, TD_EINVAL, f, "unknown flag %s", name);
  }
  return 0;
}

/* Is `name` an executable in PATH? */
static int in_path(const char *name) {
  const char *path = getenv("PATH");
  if (!path) path = "/usr/bin:/bin";
  char buf[PATH_MAX];
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t len = colon ? (size_t)(colon - path) : strlen(path);
    snprintf(buf, sizeof buf, "%.*s/%s", (int)len, len ? path : ".", name);
    if (access(buf, X_OK) == 0) return 1;
    if (!colon) break;
    path = colon + 1;
  }
  return 0;
}

int slurm_start(const slurm_config *cfg, slurm_exec_ctx **out, td_err *err) {
  *out = NULL;
  const char *need[] = {"sbatch", "squeue", "scontrol", "scancel"};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
    if (!in_path(need[i]))
      return td_err_set(err, TD_EINVAL, "executor",
                        "--executor slurm: %s is not in PATH (install slurm-wlm)", need[i]);
  if (!cfg->public_url || !*cfg->public_url)
    return td_err_set(err, TD_EINVAL, "public-url", "--executor slurm needs a --public-url");
  slurm_exec_ctx *x = calloc(1, sizeof *x);
  if (!x) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  x->cfg = *cfg;
  if (x->cfg.poll_s <= 0) x->cfg.poll_s = 2;
  if (x->cfg.cmd_timeout_s <= 0) x->cfg.cmd_timeout_s = 30;
  if (x->cfg.max_attempts <= 0) x->cfg.max_attempts = 3;
  /* The extra sbatch words are checked now, not at the first submission. */
  char **probe = NULL;
  slurm_submit sub = {.job_name = "x", .output = "x", .script = "x", .tdlab_bin = "x",
                      .url = "x", .dir = "x"};
  int rc = slurm_sbatch_argv(&x->cfg.opts, &sub, &probe, err);
  slurm_argv_free(probe);
  if (rc) {
    free(x);
    return rc;
  }
  if (cfg->spool_dir && strlen(cfg->spool_dir) > 900) {
    free(x);
    return td_err_set(err, TD_EINVAL, "slurm-spool", "the spool path is longer than 900 bytes");
  }
  if (cfg->spool_dir) {
    snprintf(x->spool, sizeof x->spool, "%s", cfg->spool_dir);
  } else {
    char dbdir[900];
    snprintf(dbdir, sizeof dbdir, "%s", cfg->db_path);
    char *slash = strrchr(dbdir, '/');
    if (slash) *slash = '\0';
    else snprintf(dbdir, sizeof dbdir, ".");
    snprintf(x->spool, sizeof x->spool, "%s/slurm-spool", dbdir);
  }
  /* Absolute paths: the job runs in its own working directory. */
  if (x->spool[0] != '/') {
    char cwd[PATH_MAX], tmp[2100];
    if (getcwd(cwd, sizeof cwd)) {
      snprintf(tmp, sizeof tmp, "%.1000s/%.1000s", cwd, x->spool);
      snprintf(x->spool, sizeof x->spool, "%.1000s", tmp);
    }
  }
  if (cfg->tdlab_bin) {
    snprintf(x->bin, sizeof x->bin, "%s", cfg->tdlab_bin);
  } else {
    ssize_t len = readlink("/proc/self/exe", x->bin, sizeof x->bin - 1);
    if (len <= 0) {
      free(x);
      return td_err_set(err, TD_EIO, NULL, "cannot find this executable; give --slurm-tdlab");
    }
    x->bin[len] = '\0';
  }
  snprintf(x->url, sizeof x->url, "%s", cfg->public_url);
  size_t ul = strlen(x->url);
  while (ul > 1 && x->url[ul - 1] == '/') x->url[--ul] = '\0';
  if ((mkdir(x->spool, 0700) != 0 && errno != EEXIST) || chmod(x->spool, 0700) != 0) {
    rc = td_err_set(err, TD_EIO, NULL, "slurm spool %s: %s", x->spool, strerror(errno));
    free(x);
    return rc;
  }
  snprintf(x->script, sizeof x->script, "%s/job.sh", x->spool);
  if (write_file(x->script, slurm_job_script, 0700)) {
    rc = td_err_set(err, TD_EIO, NULL, "%s: %s", x->script, strerror(errno));
    free(x);
    return rc;
  }
  if ((rc = store_open(cfg->db_path, cfg->busy_timeout_ms, &x->st, err))) {
    free(x);
    return rc;
  }
  pthread_mutex_init(&x->mu, NULL);
  pthread_cond_init(&x->cv, NULL);
  if (pthread_create(&x->thread, NULL, slurm_main, x) != 0) {
    store_close(x->st);
    free(x);
    return td_err_set(err, TD_EIO, NULL, "cannot start the slurm thread");
  }
  x->started = 1;
  log_emit(LOG_INFO, "slurm_executor",
           "url=%s spool=%s bin=%s partition=%s time=%s mem=%s cpus=%ld poll_s=%g", x->url,
           x->spool, x->bin, cfg->opts.partition ? cfg->opts.partition : "-",
           cfg->opts.time ? cfg->opts.time : "-", cfg->opts.mem ? cfg->opts.mem : "-",
           cfg->opts.cpus, x->cfg.poll_s);
  *out = x;
  return 0;
}

int slurm_serve_start(slurm_config *c, const char *db_path, const char *host, unsigned port,
                      long max_attempts, slurm_exec_ctx **out, td_err *err) {
  static char url[600];
  c->db_path = db_path;
  c->max_attempts = max_attempts;
  if (!c->public_url) {
    char name[256];
    const char *h = host;
    if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !*host) {
      if (gethostname(name, sizeof name) != 0) snprintf(name, sizeof name, "127.0.0.1");
      name[sizeof name - 1] = '\0';
      h = name;
    }
    int v6 = strchr(h, ':') != NULL;
    snprintf(url, sizeof url, "http://%s%.256s%s:%u", v6 ? "[" : "", h, v6 ? "]" : "", port);
    c->public_url = url;
  }
  return slurm_start(c, out, err);
}

void slurm_poke(slurm_exec_ctx *x) {
  if (!x) return;
  pthread_mutex_lock(&x->mu);
  x->poked = 1;
  pthread_cond_signal(&x->cv);
  pthread_mutex_unlock(&x->mu);
}

void slurm_stop(slurm_exec_ctx *x) {
  if (!x) return;
  pthread_mutex_lock(&x->mu);
  x->stop = 1;
  pthread_cond_signal(&x->cv);
  pthread_mutex_unlock(&x->mu);
  if (x->started) pthread_join(x->thread, NULL);
  pthread_mutex_destroy(&x->mu);
  pthread_cond_destroy(&x->cv);
  store_close(x->st);
  free(x);
}
