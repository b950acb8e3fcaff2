/* main.c: the tdlab command line: serve, run, kinds, migrate. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kinds/registry.h"
#include "api.h"
#include "cli.h"
#include "http.h"
#include "lease.h"
#include "httpc.h"
#include "log.h"
#include "queue.h"
#include "slurm.h"
#include "report.h"
#include "store.h"
#include "store_cache.h"


static void usage(FILE *f) {
  fprintf(f,
          "usage: tdlab <verb> [options]\n"
          "\n"
          "  serve    [--host 127.0.0.1] [--port 8080] [--db var/tdlab.db] [--workers N]\n"
          "           [--web web] [--migrations DIR] [--token-file F] [--token-required-for-read]\n"
          "           [--insecure] [--log-level error|warn|info|debug] [--max-body 1M]\n"
          "           [--max-job-bytes 4G] [--max-params 50e6] [--max-queued 10000]\n"
          "           [--job-timeout SECONDS] [--max-attempts 3] [--http-threads N]\n"
          "           [--max-conns 1024] [--conn-timeout 30] [--batch-points 1024]\n"
          "           [--batch-ms 250] [--shutdown-timeout 60] [--job-cache 4096]\n"
          "           [--worker-nice 5] [--max-upload 64M] [--blas-threads N]\n"
          "           [--max-job-points 1e8] [--heartbeat-timeout 60]\n"
          "           [--executor local|slurm] [--public-url URL] [--slurm-partition P]\n"
          "           [--slurm-account A] [--slurm-time T] [--slurm-mem M] [--slurm-cpus N]\n"
          "           [--slurm-sbatch-args \"...\"] [--slurm-poll S] [--slurm-tdlab PATH]\n"
          "  run      SPEC.json|- [--out metrics.jsonl] [--blas-threads N] [--artifacts DIR]\n"
          "           [--checkpoint-dir DIR]\n"
          "  run      SPEC.json|- --report URL --job ID (--token T | --token-file F | env\n"
          "           TDLAB_RUN_TOKEN) [--heartbeat S] [--max-buffer 64M] [--retry-for 900]\n"
          "           (reports to a server; while it is away, points wait in a buffer of\n"
          "           --max-buffer bytes (the run pauses when it is full, nothing is dropped)\n"
          "           and requests are retried after 0.2 s doubling to 10 s, for at most\n"
          "           --retry-for seconds; then the run fails)\n"
          "  kinds    [--json]\n"
          "  migrate  --db F [--migrations DIR]\n"
          "  backup   --db F --out G      (a consistent copy while the server runs)\n"
          "  prune    --db F [--older-than 30d] [--status S,..] [--tag T] [--sweep N] [--yes]\n"
          "           (finished jobs only; a dry run unless --yes)\n"
          "  submit   SPEC.json|- [--wait]     (prints the job id; --wait follows it to the end)\n"
          "  ls       [--status S,..] [--kind K] [--tag T] [--limit N] [--cursor C]\n"
          "  show     ID\n"
          "  watch    ID                        (live progress and the last metrics)\n"
          "  cancel   ID\n"
          "           (client verbs: --url U or env TDLAB_URL, default http://127.0.0.1:8080;\n"
          "           --token T, --token-file F or env TDLAB_TOKEN)\n"
          "  version\n");
}

/* ---------------------------------------------------------------- option parsing */

typedef struct opts {
  int argc, i;
  char **argv;
  const char *name, *value;
} opts;

/* Next "--name value" or "--name=value" (value NULL for a bare flag followed by another
 * flag). Returns 0 at the end, -1 for a positional argument (left in o->value). */
static int next_opt(opts *o) {
  if (o->i >= o->argc) return 0;
  char *a = o->argv[o->i++];
  if (strncmp(a, "--", 2) != 0) {
    o->name = NULL;
    o->value = a;
    return -1;
  }
  static char namebuf[64];
  char *eq = strchr(a, '=');
  if (eq) {
    snprintf(namebuf, sizeof namebuf, "%.*s", (int)(eq - a), a);
    o->name = namebuf;
    o->value = eq + 1;
  } else {
    o->name = a;
    o->value = (o->i < o->argc && strncmp(o->argv[o->i], "--", 2) != 0) ? o->argv[o->i] : NULL;
  }
  return 1;
}

/* Consume the value of the current option; exits with a message when it is missing. */
static const char *need(opts *o) {
  if (!o->value) {
    fprintf(stderr, "tdlab: %s needs a value\n", o->name);
    exit(2);
  }
  if (!strchr(o->argv[o->i - 1], '=')) o->i++;
  return o->value;
}

/* A size with an optional K/M/G/T suffix (powers of 1024), or a plain number like 50e6. */
static double parse_size(const char *name, const char *v) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  double mul = 1;
  if (*end == 'K' || *end == 'k') mul = 1024.0, end++;
  else if (*end == 'M' || *end == 'm') mul = 1048576.0, end++;
  else if (*end == 'G' || *end == 'g') mul = 1073741824.0, end++;
  else if (*end == 'T' || *end == 't') mul = 1099511627776.0, end++;
  if (*end == 'B' || *end == 'b') end++;
  if (end == v || *end || errno || !isfinite(x) || x < 0) {
    fprintf(stderr, "tdlab: %s: '%s' is not a size\n", name, v);
    exit(2);
  }
  return x * mul;
}

static long parse_long(const char *name, const char *v, long min, long max) {
  long long x;
  if (http_parse_ll(v, min, max, &x)) {
    fprintf(stderr, "tdlab: %s: '%s' is not an integer in %ld..%ld\n", name, v, min, max);
    exit(2);
  }
  return (long)x;
}

static int n_cores(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static int is_dir_with_init(const char *dir) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/0001_init.sql", dir);
  return access(p, R_OK) == 0;
}

/* The migrations directory: the option, else ./migrations, else next to the binary
 * (build/tdlab -> ../migrations, build/x/tdlab -> ../../migrations), else /usr/share/tdlab. */
static const char *find_migrations(const char *opt, char *buf, size_t n) {
  if (opt) return opt;
  if (is_dir_with_init("migrations")) return "migrations";
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len > 0) {
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    const char *ups[] = {"/migrations", "/../migrations", "/../../migrations",
                         "/../share/tdlab/migrations"};
    for (size_t i = 0; i < sizeof ups / sizeof ups[0]; i++) {
      snprintf(buf, n, "%s%s", exe, ups[i]);
      if (is_dir_with_init(buf)) return buf;
    }
  }
  if (is_dir_with_init("/usr/share/tdlab/migrations")) return "/usr/share/tdlab/migrations";
  return "migrations";
}

/* The dashboard directory: the option when given; else ./web, else next to the binary
 * (build/tdlab -> ../web, build/x/tdlab -> ../../web), else /usr/share/tdlab/web. */
static const char *find_web(const char *opt, char *buf, size_t n) {
  if (opt) return opt;
  struct stat sb;
  if (stat("web/index.html", &sb) == 0) return "web";
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len > 0) {
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    const char *ups[] = {"/../web", "/../../web", "/../share/tdlab/web"};
    for (size_t i = 0; i < sizeof ups / sizeof ups[0]; i++) {
      snprintf(buf, n, "%s%s/index.html", exe, ups[i]);
      if (stat(buf, &sb) == 0) {
        snprintf(buf, n, "%s%s", exe, ups[i]);
        return buf;
      }
    }
  }
  return "web";
}

/* Create the parent directories of a file path (like mkdir -p of its dirname). */
static void make_parent_dirs(const char *file) {
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s", file);
  char *slash = strrchr(p, '/');
  if (!slash || slash == p) return;
  *slash = '\0';
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    mkdir(p, 0755);
    *s = '/';
  }
  mkdir(p, 0755);
}

static int open_and_migrate(const char *db, const char *mig_dir, store **out) {
  if (strcmp(db, ":memory:") != 0) make_parent_dirs(db);
  td_err e;
  td_err_clear(&e);
  int applied = 0, version = 0;
  if (store_open(db, 0, out, &e) || store_migrate(*out, mig_dir, &applied, &version, &e)) {
    fprintf(stderr, "tdlab: %s\n", e.msg);
    store_close(*out);
    *out = NULL;
    return 1;
  }
  log_emit(LOG_INFO, "migrated", "db=%s dir=%s version=%d applied=%d", db, mig_dir, version,
           applied);
  return 0;
}

/* ---------------------------------------------------------------- migrate */

static int cmd_migrate(opts *o) {
  const char *db = NULL, *mig = NULL;
  int r;
  while ((r = next_opt(o))) {
    if (r < 0) {
      fprintf(stderr, "tdlab migrate: unexpected argument '%s'\n", o->value);
      return 2;
    }
    if (!strcmp(o->name, "--db")) db = need(o);
    else if (!strcmp(o->name, "--migrations")) mig = need(o);
    else {
      fprintf(stderr, "tdlab migrate: unknown option %s\n", o->name);
      return 2;
    }
  }
  if (!db) {
    fprintf(stderr, "tdlab migrate: --db F is required\n");
    return 2;
  }
  char buf[PATH_MAX];
  store *s = NULL;
  if (open_and_migrate(db, find_migrations(mig, buf, sizeof buf), &s)) return 1;
  store_close(s);
  return 0;
}

/* ---------------------------------------------------------------- backup */

static int cmd_backup(opts *o) {
  const char *db = NULL, *out = NULL;
  int r;
  while ((r = next_opt(o))) {
    if (r > 0 && !strcmp(o->name, "--db")) db = need(o);
    else if (r > 0 && !strcmp(o->name, "--out")) out = need(o);
    else {
      fprintf(stderr, "tdlab backup: unexpected argument '%s'\n", r < 0 ? o->value : o->name);
      return 2;
    }
  }
  if (!db || !out) {
    fprintf(stderr, "tdlab backup: --db F and --out G are required\n");
    return 2;
  }
  td_err e;
  td_err_clear(&e);
  long pages = 0;
  if (store_backup(db, out, &pages, &e)) {
    fprintf(stderr, "tdlab backup: %s\n", e.msg);
    return 1;
  }
  printf("tdlab backup: %s -> %s (%ld pages, quick_check ok)\n", db, out, pages);
  return 0;
}

/* ---------------------------------------------------------------- prune */

/* A duration: a number with an optional unit s, m, h or d (seconds without one). -1: bad. */
static double parse_duration(const char *v) {
  char *end;
  errno = 0;
  double x = strtod(v, &end);
  double mul = 1;
  if (*end == 's') end++;
  else if (*end == 'm') mul = 60, end++;
  else if (*end == 'h') mul = 3600, end++;
  else if (*end == 'd') mul = 86400, end++;
  if (end == v || *end || errno || !isfinite(x) || x < 0) return -1;
  return x * mul;
}

static int cmd_prune(opts *o) {
  const char *db = NULL;
  store_prune_filter f = {0};
  int yes = 0, r;
  while ((r = next_opt(o))) {
    const char *n = o->name;
    if (r < 0) {
      fprintf(stderr, "tdlab prune: unexpected argument '%s'\n", o->value);
      return 2;
    }
    if (!strcmp(n, "--db")) db = need(o);
    else if (!strcmp(n, "--yes")) yes = 1;
    else if (!strcmp(n, "--tag")) f.tag = need(o);
    else if (!strcmp(n, "--sweep")) f.sweep_id = parse_long(n, need(o), 1, LONG_MAX);
    else if (!strcmp(n, "--older-than")) {
      const char *v = need(o);
      if ((f.older_than_s = parse_duration(v)) < 0) {
        fprintf(stderr, "tdlab prune: --older-than: '%s' is not a duration like 30d, 12h, 90m\n", v);
        return 2;
      }
    } else if (!strcmp(n, "--status")) {
      char buf[256];
      snprintf(buf, sizeof buf, "%s", need(o));
      for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int st = store_status_parse(t);
        if (st < 0) {
          fprintf(stderr, "tdlab prune: --status: unknown status '%s'\n", t);
          return 2;
        }
        f.status_mask |= 1u << st;
      }
    } else {
      fprintf(stderr, "tdlab prune: unknown option %s\n", n);
      return 2;
    }
  }
  if (!db) {
    fprintf(stderr, "tdlab prune: --db F is required\n");
    return 2;
  }
  store *s = NULL;
  td_err e;
  td_err_clear(&e);
  if (access(db, R_OK | W_OK) != 0 || store_open(db, 30000, &s, &e)) {
    fprintf(stderr, "tdlab prune: cannot open '%s' %s\n", db, e.msg);
    return 1;
  }
  long long before = 0, fp = 0, wal = 0, after = 0;
  store_file_stats(s, &before, &fp, &wal, &e);
  long jobs = 0, points = 0;
  if (store_prune(s, &f, !yes, &jobs, &points, &e)) {
    fprintf(stderr, "tdlab prune: %s\n", e.msg);
    store_close(s);
    return 1;
  }
  if (!yes) {
    printf("tdlab prune: dry run: %ld jobs with %ld metric points match; add --yes to delete "
           "them\n", jobs, points);
  } else {
    store_file_stats(s, &after, &fp, &wal, &e);
    printf("tdlab prune: deleted %ld jobs with %ld metric points; file %lld -> %lld bytes\n",
           jobs, points, before, after);
  }
  store_close(s);
  return 0;
}

/* ---------------------------------------------------------------- kinds */

static int cmd_kinds(opts *o) {
  int as_json = 0, r;
  while ((r = next_opt(o))) {
    if (r > 0 && !strcmp(o->name, "--json")) as_json = 1;
    else {
      fprintf(stderr, "tdlab kinds: unknown argument\n");
      return 2;
    }
  }
  json_t *cat = td_kinds_catalogue();
  if (!cat) return 1;
  if (as_json) {
    json_dumpf(cat, stdout, JSON_INDENT(2));
    fputc('\n', stdout);
    json_decref(cat);
    return 0;
  }
  size_t i;
  json_t *k;
  json_array_foreach(cat, i, k) {
    printf("%s%s (chapter %s): %s\n", i ? "\n" : "", json_string_value(json_object_get(k, "name")),
           json_string_value(json_object_get(k, "chapter")),
           json_string_value(json_object_get(k, "doc")));
    size_t j;
    json_t *p;
    json_array_foreach(json_object_get(k, "params"), j, p) {
      char *def = json_object_get(p, "default")
                      ? http_json_dump(json_object_get(p, "default"))
                      : NULL;
      char range[96] = "";
      json_t *en = json_object_get(p, "enum"), *mn = json_object_get(p, "min"),
             *mx = json_object_get(p, "max");
      if (json_is_array(en)) {
        size_t e_i;
        json_t *ev;
        json_array_foreach(en, e_i, ev) {
          size_t l = strlen(range);
          snprintf(range + l, sizeof range - l, "%s%s", e_i ? "|" : "", json_string_value(ev));
        }
      } else if (json_is_number(mn) && json_is_number(mx)) {
        snprintf(range, sizeof range, "[%g, %g]", json_number_value(mn), json_number_value(mx));
      }
      printf("  %-24s %-8s %-18s %-26s %s\n", json_string_value(json_object_get(p, "path")),
             json_string_value(json_object_get(p, "type")), def ? def : "-", range,
             json_string_value(json_object_get(p, "doc")) ? json_string_value(json_object_get(p, "doc")) : "");
      free(def);
    }
  }
  json_decref(cat);
  return 0;
}

/* ---------------------------------------------------------------- run */

static volatile sig_atomic_t run_stop;
static void on_run_signal(int sig) {
  (void)sig;
  run_stop = 1;
}

typedef struct jsonl_sink {
  FILE *out;
  http_buf line;
  const char *art_dir;  /* --artifacts: each artifact is also written to DIR/<name> */
  const char *ckpt_dir; /* --checkpoint-dir: where init_from / fork read checkpoints */
} jsonl_sink;

/* A token file: its first line, without the line end and trailing spaces (at most 511 bytes).
 * NULL with a message naming `who` when it cannot be read or has fewer than min_len characters
 * (the lab token of serve: 16; a run token: 1). */
static char *read_token(const char *who, const char *path, size_t min_len) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "tdlab %s: cannot read token file %s: %s\n", who, path, strerror(errno));
    return NULL;
  }
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  n = strcspn(buf, "\r\n");
  buf[n] = '\0';
  while (n && buf[n - 1] == ' ') buf[--n] = '\0';
  if (n < min_len) {
    fprintf(stderr, "tdlab %s: the token in %s must have at least %zu characters\n", who, path,
            min_len);
    return NULL;
  }
  return strdup(buf);
}

/* Write data to dir/name through dir/.name.tmp and a rename (a reader never sees half a
 * file). Returns 0 or TD_EIO (message on stderr). */
static int run_write_artifact(const char *dir, const char *name, const void *data, size_t len) {
  char path[4096], tmp[4200];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) return TD_EIO;
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
  FILE *f = fopen(tmp, "wb");
  int bad = !f;
  if (f) {
    bad |= len && fwrite(data, 1, len, f) != len;
    bad |= fclose(f) != 0;
  }
  if (bad || rename(tmp, path)) {
    fprintf(stderr, "tdlab run: cannot write artifact %s: %s\n", path, strerror(errno));
    remove(tmp);
    return TD_EIO;
  }
  return 0;
}

static void jsonl_flush_line(jsonl_sink *j) {
  http_buf_add(&j->line, "\n", 1);
  if (!j->line.failed) fwrite(j->line.data, 1, j->line.len, j->out);
  j->line.len = 0;
  j->line.failed = 0;
}

static int jsonl_metric(void *ctx, const char *key, long step, double value) {
  jsonl_sink *j = ctx;
  http_buf_str(&j->line, "{\"key\":");
  http_buf_json_str(&j->line, key);
  http_buf_printf(&j->line, ",\"step\":%ld,\"value\":", step);
  http_buf_json_num(&j->line, value);
  http_buf_str(&j->line, "}");
  jsonl_flush_line(j);
  return ferror(j->out) ? TD_EIO : 0;
}

static int jsonl_artifact(void *ctx, const char *name, const char *content_type, const void *data,
                          size_t len) {
  jsonl_sink *j = ctx;
  http_buf_str(&j->line, "{\"artifact\":");
  http_buf_json_str(&j->line, name);
  http_buf_str(&j->line, ",\"content_type\":");
  http_buf_json_str(&j->line, content_type);
  http_buf_printf(&j->line, ",\"size\":%zu", len);
  json_t *doc = NULL;
  if (content_type && strncmp(content_type, "application/json", 16) == 0 && data)
    doc = json_loadb(data, len, JSON_DECODE_ANY, NULL);
  if (doc) {
    char *txt = http_json_dump(doc);
    if (txt) {
      http_buf_str(&j->line, ",\"data\":");
      http_buf_str(&j->line, txt);
      free(txt);
    }
    json_decref(doc);
  }
  http_buf_str(&j->line, "}");
  jsonl_flush_line(j);
  int rc = ferror(j->out) ? TD_EIO : 0;
  if (j->art_dir) {
    if (!name || !store_valid_artifact_name(name) || (len && !data)) return TD_EINVAL;
    int wrc = run_write_artifact(j->art_dir, name, data, len);
    if (wrc) rc = wrc;
  }
  return rc;
}

/* The checkpoint reader of `tdlab run` (sink.h): with --checkpoint-dir D, a job ref
 * {job J, step S} is D/J/checkpoint_stepS.safetensors (the layout of J's --artifacts
 * directory under D) and an uploaded checkpoint C is D/checkpoints/C.safetensors. */
static int jsonl_checkpoint(void *ctx, long job, long step, long checkpoint_id, void **data,
                            size_t *len) {
  jsonl_sink *j = ctx;
  *data = NULL;
  *len = 0;
  if (!j->ckpt_dir) {
    fprintf(stderr, "tdlab run: this spec starts from a checkpoint (params.init_from or "
                    "params.fork); give --checkpoint-dir DIR (see README)\n");
    return TD_ENOTFOUND;
  }
  char path[4096];
  if (job > 0)
    snprintf(path, sizeof path, "%s/%ld/checkpoint_step%ld.safetensors", j->ckpt_dir, job, step);
  else
    snprintf(path, sizeof path, "%s/checkpoints/%ld.safetensors", j->ckpt_dir, checkpoint_id);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "tdlab run: cannot read checkpoint %s: %s\n", path, strerror(errno));
    return errno == ENOENT ? TD_ENOTFOUND : TD_EIO;
  }
  int rc = 0;
  long sz = -1;
  if (fseek(f, 0, SEEK_END) == 0) sz = ftell(f);
  unsigned char *buf = NULL;
  if (sz < 0 || fseek(f, 0, SEEK_SET) != 0 || (unsigned long)sz > (4ul << 30)) rc = TD_EIO;
  else if (!(buf = malloc(sz > 0 ? (size_t)sz : 1))) rc = TD_ENOMEM;
  else if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) rc = TD_EIO;
  fclose(f);
  if (rc) {
    free(buf);
    fprintf(stderr, "tdlab run: cannot read checkpoint %s\n", path);
    return rc;
  }
  *data = buf;
  *len = (size_t)sz;
  return 0;
}

static int jsonl_should_stop(void *ctx) {
  (void)ctx;
  return run_stop != 0;
}

static json_t *load_spec(const char *path, td_err *e) {
  json_error_t je;
  json_t *spec = strcmp(path, "-") == 0 ? json_loadf(stdin, JSON_REJECT_DUPLICATES, &je)
                                        : json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  if (!spec) {
    td_err_set(e, TD_EINVAL, NULL, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
    return NULL;
  }
  if (!json_is_object(spec)) {
    td_err_set(e, TD_EINVAL, NULL, "%s: the spec must be a JSON object {kind, params}", path);
    json_decref(spec);
    return NULL;
  }
  const char *key;
  json_t *v;
  json_object_foreach(spec, key, v) {
    if (strcmp(key, "kind") && strcmp(key, "params") && strcmp(key, "name") &&
        strcmp(key, "tags") && strcmp(key, "priority")) {
      td_err_set(e, TD_EINVAL, key, "unknown field '%s'", key);
      json_decref(spec);
      return NULL;
    }
  }
  return spec;
}


static int cmd_run(opts *o) {
  const char *spec_path = NULL, *out_path = NULL, *art_dir = NULL, *ckpt_dir = NULL;
  const char *report_url = NULL, *token_opt = NULL, *token_file = NULL;
  long long report_job = 0;
  report_cfg rcfg;
  memset(&rcfg, 0, sizeof rcfg);
  long blas = 0;
  int r;
  while ((r = next_opt(o))) {
    if (r < 0) {
      if (spec_path) {
        fprintf(stderr, "tdlab run: one spec only\n");
        return 2;
      }
      spec_path = o->value;
    } else if (!strcmp(o->name, "--out")) {
      out_path = need(o);
    } else if (!strcmp(o->name, "--artifacts")) {
      art_dir = need(o);
    } else if (!strcmp(o->name, "--checkpoint-dir")) {
      ckpt_dir = need(o);
    } else if (!strcmp(o->name, "--blas-threads")) {
      blas = parse_long(o->name, need(o), 1, 4096);
    } else if (!strcmp(o->name, "--report")) {
      report_url = need(o);
    } else if (!strcmp(o->name, "--job")) {
      report_job = parse_long(o->name, need(o), 1, LONG_MAX);
    } else if (!strcmp(o->name, "--token")) {
      token_opt = need(o);
    } else if (!strcmp(o->name, "--token-file")) {
      token_file = need(o);
    } else if (!strcmp(o->name, "--heartbeat")) {
      rcfg.heartbeat_s = parse_size(o->name, need(o));
    } else if (!strcmp(o->name, "--max-buffer")) {
      rcfg.max_buffer_bytes = (size_t)parse_size(o->name, need(o));
    } else if (!strcmp(o->name, "--retry-for")) {
      rcfg.retry_total_s = parse_size(o->name, need(o));
    } else {
      fprintf(stderr, "tdlab run: unknown option %s\n", o->name);
      return 2;
    }
  }
  if (!spec_path) {
    fprintf(stderr, "tdlab run: SPEC.json is required (or - for stdin)\n");
    return 2;
  }
  td_err e;
  td_err_clear(&e);
  json_t *spec = load_spec(spec_path, &e);
  if (!spec) {
    fprintf(stderr, "tdlab run: %s%s%s\n", e.field, e.field[0] ? ": " : "", e.msg);
    return 2;
  }
  const char *kind_name = json_string_value(json_object_get(spec, "kind"));
  json_t *params = json_object_get(spec, "params"), *filled = NULL;
  if (params && !json_is_object(params)) {
    fprintf(stderr, "tdlab run: params must be a JSON object\n");
    json_decref(spec);
    return 2;
  }
  if (!kind_name || td_kinds_validate(kind_name, params, NULL, &filled, NULL, &e)) {
    if (!kind_name) td_err_set(&e, TD_EINVAL, "kind", "kind (a string) is required");
    fprintf(stderr, "tdlab run: %s%s%s\n", e.field, e.field[0] ? ": " : "", e.msg);
    json_decref(spec);
    return 2;
  }
  const td_kind *kind = td_kinds_find(kind_name);
  if (report_url || report_job) { /* tdlab run --report (server/report.h) */
    char *tok = token_file ? read_token("run", token_file, 1)
                           : strdup(token_opt ? token_opt
                                              : getenv("TDLAB_RUN_TOKEN") ? getenv("TDLAB_RUN_TOKEN") : "");
    int bad = !report_url || !report_job || !tok || !tok[0];
    if (bad)
      fprintf(stderr, "tdlab run: --report URL needs --job ID and a run token (--token T, "
                      "--token-file F or TDLAB_RUN_TOKEN)\n");
    else if (strncmp(report_url, "http://", 7) && strncmp(report_url, "https://", 8)) {
      /* else every request fails and is retried for --retry-for seconds */
      fprintf(stderr, "tdlab run: the server URL '%s' must start with http:// or https://\n",
              report_url);
      bad = 1;
    }
    int rc = 2;
    if (!bad) {
      if (blas > 0) openblas_set_num_threads((int)blas);
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_handler = on_run_signal;
      sigaction(SIGINT, &sa, NULL);
      sigaction(SIGTERM, &sa, NULL);
      signal(SIGPIPE, SIG_IGN);
      size_t ul = strlen(report_url);
      char *url = strdup(report_url);
      while (url && ul && url[ul - 1] == '/') url[--ul] = '\0';
      rcfg.url = url;
      rcfg.job = report_job;
      rcfg.token = tok;
      rc = url ? report_run(kind, filled, &rcfg, &run_stop) : 1;
      free(url);
    }
    free(tok);
    json_decref(filled);
    json_decref(spec);
    return rc;
  }
  FILE *out = stdout;
  if (out_path && !(out = fopen(out_path, "w"))) {
    fprintf(stderr, "tdlab run: cannot write %s: %s\n", out_path, strerror(errno));
    json_decref(filled);
    json_decref(spec);
    return 1;
  }
  if (art_dir) { /* like mkdir -p */
    char probe[PATH_MAX];
    snprintf(probe, sizeof probe, "%s/.", art_dir);
    make_parent_dirs(probe);
  }
  if (art_dir && mkdir(art_dir, 0777) != 0 && errno != EEXIST) {
    fprintf(stderr, "tdlab run: cannot create --artifacts %s: %s\n", art_dir, strerror(errno));
    json_decref(filled);
    json_decref(spec);
    if (out != stdout) fclose(out);
    return 1;
  }
  if (blas > 0) openblas_set_num_threads((int)blas);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_run_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  jsonl_sink js = {.out = out, .art_dir = art_dir, .ckpt_dir = ckpt_dir};
  http_buf_init(&js.line);
  td_sink sink = {.ctx = &js, .metric = jsonl_metric, .artifact = jsonl_artifact,
                  .progress = NULL, .should_stop = jsonl_should_stop,
                  .checkpoint = jsonl_checkpoint};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  json_t *summary = NULL;
  int rc = kind->run(filled, &sink, &summary, &e);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const char *status = rc == 0                  ? "succeeded"
                       : rc == TD_EDIVERGED     ? "diverged"
                       : rc == TD_ECANCELLED    ? "cancelled"
                                                : "failed";
  http_buf_str(&js.line, "{\"status\":");
  http_buf_json_str(&js.line, status);
  char *stxt = summary ? http_json_dump(summary) : NULL;
  http_buf_str(&js.line, ",\"summary\":");
  http_buf_str(&js.line, stxt ? stxt : "null");
  http_buf_str(&js.line, ",\"error\":");
  http_buf_json_str(&js.line, rc && rc != TD_ECANCELLED ? (e.msg[0] ? e.msg : td_strerror(rc)) : NULL);
  http_buf_printf(&js.line, ",\"seconds\":%.3f}",
                  (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  jsonl_flush_line(&js);
  free(stxt);
  int werr = fflush(out) != 0 || ferror(out);
  if (out != stdout) werr |= fclose(out) != 0;
  http_buf_free(&js.line);
  json_decref(summary);
  json_decref(filled);
  json_decref(spec);
  if (werr) {
    fprintf(stderr, "tdlab run: writing the metrics failed\n");
    return 1;
  }
  return rc == 0 ? 0 : rc == TD_EDIVERGED ? 3 : rc == TD_ECANCELLED ? 4 : 1;
}

/* ---------------------------------------------------------------- serve */


static int is_loopback(const char *host) {
  return !strcmp(host, "localhost") || !strncmp(host, "127.", 4) || !strcmp(host, "::1") ||
         !strcmp(host, "[::1]");
}

typedef struct watchdog {
  sigset_t set;
  long timeout_s;
} watchdog;

/* After the first signal: a second one, or the shutdown timeout, ends the process at once.
 * That is safe: SQLite is consistent after any kill, and start-up recovery re-queues jobs. */
static void *watchdog_main(void *arg) {
  watchdog *w = arg;
  struct timespec ts = {w->timeout_s, 0};
  siginfo_t si;
  int sig;
  do {
    sig = sigtimedwait(&w->set, &si, &ts);
  } while (sig < 0 && errno == EINTR);
  log_emit(LOG_ERROR, "shutdown_forced", "reason=%s",
           sig > 0 ? "second_signal" : "shutdown_timeout");
  _exit(1);
  return NULL;
}

static int cmd_serve(opts *o) {
  const char *host = "127.0.0.1", *db = "var/tdlab.db", *web = NULL, *mig = NULL,
             *token_file = NULL;
  long port = 8080, workers = -1, max_queued = 10000, max_attempts = 3, http_threads = 0,
       max_conns = 1024, conn_timeout = 30, batch_points = 1024, batch_ms = 250,
       shutdown_timeout = 60, job_cache = 4096, worker_nice = 5;
  double max_body = 1048576, max_upload = 64.0 * 1048576, job_timeout = 0;
  long blas_opt = 0; /* --blas-threads: 0 means max(1, cores / workers) */
  double max_job_points = 1e8; /* --max-job-points: about 2 GB of metrics at 20 bytes a point */
  double heartbeat_timeout = 60; /* --heartbeat-timeout: lease of remote/slurm/external runs */
  int insecure = 0, token_for_read = 0;
  td_limits limits = td_kinds_default_limits();
  slurm_config slurm_cfg = {0};
  slurm_exec_ctx *slurm_x = NULL;
  td_err e;
  td_err_clear(&e);
  int r;
  while ((r = next_opt(o))) {
    const char *n = o->name;
    if (r < 0) {
      fprintf(stderr, "tdlab serve: unexpected argument '%s'\n", o->value);
      return 2;
    }
    if (!strcmp(n, "--host")) host = need(o);
    else if (!strcmp(n, "--port")) port = parse_long(n, need(o), 0, 65535);
    else if (!strcmp(n, "--db")) db = need(o);
    else if (!strcmp(n, "--workers")) workers = parse_long(n, need(o), 0, 1024);
    else if (!strcmp(n, "--blas-threads")) blas_opt = parse_long(n, need(o), 1, 4096);
    else if (!strcmp(n, "--web")) web = need(o);
    else if (!strcmp(n, "--migrations")) mig = need(o);
    else if (!strcmp(n, "--token-file")) token_file = need(o);
    else if (!strcmp(n, "--token-required-for-read")) token_for_read = 1;
    else if (!strcmp(n, "--insecure")) insecure = 1;
    else if (!strcmp(n, "--log-level")) {
      log_level lvl;
      const char *v = need(o);
      if (log_parse_level(v, &lvl)) {
        fprintf(stderr, "tdlab serve: --log-level is error, warn, info or debug\n");
        return 2;
      }
      log_set_level(lvl);
    } else if (!strcmp(n, "--max-body")) max_body = parse_size(n, need(o));
    else if (!strcmp(n, "--max-upload")) max_upload = parse_size(n, need(o));
    else if (!strcmp(n, "--max-job-bytes")) limits.max_bytes = parse_size(n, need(o));
    else if (!strcmp(n, "--max-params")) limits.max_params = parse_size(n, need(o));
    else if (!strcmp(n, "--max-queued")) max_queued = parse_long(n, need(o), 0, 100000000);
    else if (!strcmp(n, "--job-timeout")) job_timeout = parse_size(n, need(o));
    else if (!strcmp(n, "--max-attempts")) max_attempts = parse_long(n, need(o), 1, 1000);
    else if (!strcmp(n, "--http-threads")) http_threads = parse_long(n, need(o), 1, 256);
    else if (!strcmp(n, "--max-conns")) max_conns = parse_long(n, need(o), 1, 1000000);
    else if (!strcmp(n, "--conn-timeout")) conn_timeout = parse_long(n, need(o), 0, 86400);
    else if (!strcmp(n, "--batch-points")) batch_points = parse_long(n, need(o), 1, 10000000);
    else if (!strcmp(n, "--max-job-points")) max_job_points = parse_size(n, need(o));
    else if (!strcmp(n, "--heartbeat-timeout")) heartbeat_timeout = parse_size(n, need(o));
    else if (!strcmp(n, "--batch-ms")) batch_ms = parse_long(n, need(o), 1, 3600000);
    else if (!strcmp(n, "--job-cache")) job_cache = parse_long(n, need(o), 0, 1 << 20);
    else if (!strcmp(n, "--worker-nice")) worker_nice = parse_long(n, need(o), 0, 19);
    else if (!strcmp(n, "--shutdown-timeout")) shutdown_timeout = parse_long(n, need(o), 1, 86400);
    else if (slurm_serve_flag_known(n)) {
      if (slurm_serve_flag(&slurm_cfg, n, need(o), &e)) return fprintf(stderr, "tdlab serve: %s\n", e.msg), 2;
    } else {
      fprintf(stderr, "tdlab serve: unknown option %s\n", n);
      usage(stderr);
      return 2;
    }
  }
  if (max_body < 1 || max_body > 1073741824.0) {
    fprintf(stderr, "tdlab serve: --max-body must be within 1 byte .. 1 GiB\n");
    return 2;
  }
  if (max_upload < 1 || max_upload > 1073741824.0) {
    fprintf(stderr, "tdlab serve: --max-upload must be within 1 byte .. 1 GiB\n");
    return 2;
  }
  if (!(heartbeat_timeout >= 0.5) || heartbeat_timeout > 86400 * 7) {
    fprintf(stderr, "tdlab serve: --heartbeat-timeout must be within 0.5 .. 604800 seconds\n");
    return 2;
  }
  char *token = NULL;
  if (token_file && !(token = read_token("serve", token_file, 16))) return 2;
  if (!token && token_for_read) {
    fprintf(stderr, "tdlab serve: --token-required-for-read needs --token-file\n");
    return 2;
  }
  if (!token && !is_loopback(host) && !insecure) {
    fprintf(stderr,
            "tdlab serve: refusing to listen on %s without --token-file (anyone could submit "
            "jobs); pass --insecure to do it anyway\n",
            host);
    return 2;
  }
  int cores = n_cores();
  if (workers < 0) workers = cores;
  /* At least 4 polling threads even on 2 cores: the workers keep every core busy, and a
   * polling thread that loses its core stalls only its own share of the connections (with 4
   * threads, the p99 of GET /api/v1/jobs/{id} at 50 connections roughly halved, bench/rest.sh). */
  if (!http_threads) http_threads = cores < 4 ? 4 : cores;

  /* One daemon per database: an advisory lock next to it (released by the kernel on kill -9). */
  int lock_fd = -1;
  if (strcmp(db, ":memory:") != 0) {
    make_parent_dirs(db);
    char lock_path[PATH_MAX];
    snprintf(lock_path, sizeof lock_path, "%s.lock", db);
    lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      fprintf(stderr, "tdlab serve: %s is in use by another tdlab serve (lock %s)\n", db,
              lock_path);
      return 1;
    }
  } else {
    fprintf(stderr, "tdlab serve: --db :memory: cannot be shared by threads; give a file\n");
    return 2;
  }

  char migbuf[PATH_MAX];
  store *st = NULL;
  if (open_and_migrate(db, find_migrations(mig, migbuf, sizeof migbuf), &st)) return 1;
  long requeued = 0, failed = 0, cancelled = 0;
  if (store_recover(st, max_attempts, &requeued, &failed, &cancelled, &e)) {
    fprintf(stderr, "tdlab serve: recovery failed: %s\n", e.msg);
    store_close(st);
    return 1;
  }
  if (requeued || failed || cancelled)
    log_emit(LOG_WARN, "recovered", "requeued=%ld failed=%ld cancelled=%ld", requeued, failed,
             cancelled);
  store_close(st);

  /* OpenBLAS has one global thread count: split the cores between the workers once (or take
   * --blas-threads; with 1, a job's metrics are bitwise those of `tdlab run --blas-threads 1`). */
  int blas_threads = workers > 0 ? cores / (int)workers : cores;
  if (blas_opt > 0) blas_threads = (int)blas_opt;
  if (blas_threads < 1) blas_threads = 1;
  openblas_set_num_threads(blas_threads);

  /* Signals go to the main thread only (sigwait below); every thread inherits this mask. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  queue_config qc = {.db_path = db, .workers = (int)workers, .batch_points = (size_t)batch_points,
                     .batch_ms = batch_ms, .job_timeout_s = job_timeout,
                     .max_job_points = max_job_points};
  queue *q = NULL;
  store_pool *pool = NULL;
  api_ctx app;
  memset(&app, 0, sizeof app);
  http_server *srv = NULL;
  /* Rendered job records for GET /api/v1/jobs/{id}, invalidated by every commit that changes
   * the job (store_cache.h); entries also expire after 1 s. --job-cache 0 turns it off. */
  store_cache *cache = NULL;
  int rc = job_cache > 0 ? store_cache_create((size_t)job_cache, 64 * 1024, 1000, &cache, &e) : 0;
  qc.cache = cache;
  qc.worker_nice = (int)worker_nice;
  if (!rc) rc = queue_create(&qc, &q, &e);
  if (!rc) rc = store_pool_create(db, 0, &pool, &e);
  if (!rc) store_pool_set_cache(pool, cache);
  char webbuf[PATH_MAX + 32];
  web = find_web(web, webbuf, sizeof webbuf);
  if (!rc) rc = api_ctx_init(&app, q, limits, max_queued, web, &e);
  app.job_cache = cache;
  app.max_job_points = max_job_points;
  app.heartbeat_timeout_s = heartbeat_timeout;
  /* Runs that execute elsewhere keep a lease by their heartbeats (server/lease.h). */
  lease *leases = NULL;
  lease_config lc = {.db_path = db, .timeout_s = heartbeat_timeout,
                     .max_attempts = max_attempts, .cache = cache};
  if (!rc) rc = lease_start(&lc, &leases, &e);
  if (!rc && slurm_cfg.enabled) api_set_executor_slurm_enabled(1), app.default_executor = "slurm";
  if (!rc) {
    if (!app.web_root) log_emit(LOG_WARN, "no_dashboard", "web=%s msg=\"directory not found\"", web);
    http_config hc = {.host = host, .port = (unsigned)port, .threads = (unsigned)http_threads,
                      .max_conns = (unsigned)max_conns, .conn_timeout_s = (unsigned)conn_timeout,
                      .max_body = (size_t)max_body, .max_upload = (size_t)max_upload,
                      .token = token,
                      .token_for_read = token_for_read, .pool = pool};
    rc = http_start(&hc, &app, &srv, &e);
  }
  if (!rc && slurm_cfg.enabled) rc = slurm_serve_start(&slurm_cfg, db, host, http_port(srv), max_attempts, &slurm_x, &e);
  if (rc) {
    fprintf(stderr, "tdlab serve: %s\n", e.msg);
    http_stop(srv);
    lease_stop(leases);
    queue_destroy(q);
    api_ctx_deinit(&app);
    store_pool_destroy(pool);
    store_cache_destroy(cache);
    free(token);
    return 1;
  }
  int v6 = strchr(host, ':') != NULL;
  log_notice("listening",
           "url=http://%s%s%s:%u/ db=%s workers=%ld blas_threads=%d http_threads=%ld auth=%s",
           v6 ? "[" : "", host, v6 ? "]" : "", http_port(srv), db, workers, blas_threads,
           http_threads, token ? "token" : "none");
  /* From here on the access log and job events are written in batches by a log thread. */
  if (log_async_start() != 0) log_emit(LOG_WARN, "log_async_failed", "msg=\"logging stays synchronous\"");

  int sig = 0;
  sigwait(&set, &sig);
  log_notice("shutdown", "signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
  static watchdog wd; /* outlives this function: the thread may still be waiting at exit */
  wd.set = set;
  wd.timeout_s = shutdown_timeout;
  pthread_t wdt;
  pthread_create(&wdt, NULL, watchdog_main, &wd);
  pthread_detach(wdt);
  /* Stop accepting and finish in-flight requests, then stop the jobs at a step boundary,
   * flush their metrics and re-queue them. */
  http_quiesce(srv);
  http_stop(srv);
  slurm_stop(slurm_x);
  lease_stop(leases);
  queue_destroy(q);
  store_pool_destroy(pool);
  store_cache_destroy(cache);
  api_ctx_deinit(&app);
  free(token);
  log_notice("stopped", "msg=\"clean shutdown\"");
  log_async_stop();
  if (lock_fd >= 0) close(lock_fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *verb = argv[1];
  for (int i = 2; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { /* tdlab <verb> --help */
      usage(stdout);
      return 0;
    }
  td_err ge;
  td_err_clear(&ge);
  if (httpc_global_init(&ge)) { /* libcurl's global state: once, before any thread */
    fprintf(stderr, "tdlab: %s\n", ge.msg);
    return 1;
  }
  opts o = {.argc = argc - 2, .argv = argv + 2, .i = 0};
  if (!strcmp(verb, "serve")) return cmd_serve(&o);
  if (!strcmp(verb, "run")) return cmd_run(&o);
  if (!strcmp(verb, "kinds")) return cmd_kinds(&o);
  if (!strcmp(verb, "migrate")) return cmd_migrate(&o);
  if (!strcmp(verb, "backup")) return cmd_backup(&o);
  if (!strcmp(verb, "prune")) return cmd_prune(&o);
  if (cli_is_verb(verb)) return cli_main(verb, argc - 2, argv + 2);
  if (!strcmp(verb, "version") || !strcmp(verb, "--version")) {
    printf("tdlab %s\n", TDLAB_VERSION);
    return 0;
  }
  if (!strcmp(verb, "help") || !strcmp(verb, "--help") || !strcmp(verb, "-h")) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "tdlab: unknown verb '%s'\n", verb);
  usage(stderr);
  return 2;
}
