/* cli.c: tdlab submit|ls|show|watch|cancel, a command-line client of the REST API.
 *
 * Each verb is one or a few requests through httpc_request (libcurl) to the server named by
 * --url / TDLAB_URL, with the lab token from --token / --token-file / TDLAB_TOKEN. Output
 * that a script may read (an id, the table, the job) goes to stdout; errors go to stderr as
 * one line, the server's message and field when it answered, or one "cannot reach" line
 * when it did not; the exit codes are CLI_EXIT_* (cli.h). `watch` (and `submit --wait`)
 * polls the job and its metrics every 0.5 s: on a terminal it redraws a progress bar and
 * the last value of each metric key in place; otherwise it prints a line when the status
 * changes and at most every 5 s while the job runs. */
#include "cli.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "httpc.h"

#define CLI_TIMEOUT_S 30.0
#define CLI_DEFAULT_URL "http://127.0.0.1:8080"
#define CLI_POLL_MS 500
#define CLI_MAX_METRIC_LINES 24

/* ---------------------------------------------------------------- pure helpers */

void cli_error_text(long status, const char *body, char *out, size_t cap) {
  if (!cap) return;
  json_t *root = body ? json_loads(body, JSON_DECODE_ANY, NULL) : NULL;
  json_t *err = json_object_get(root, "error");
  const char *msg = json_string_value(json_object_get(err, "message"));
  if (msg) {
    const char *field = json_string_value(json_object_get(err, "field"));
    const char *code = json_string_value(json_object_get(err, "code"));
    if (field)
      snprintf(out, cap, "%s (field %s) [HTTP %ld %s]", msg, field, status, code ? code : "");
    else snprintf(out, cap, "%s [HTTP %ld %s]", msg, status, code ? code : "");
  } else {
    char first[201] = "";
    if (body) {
      size_t n = strcspn(body, "\r\n");
      if (n > 200) n = 200;
      memcpy(first, body, n);
      first[n] = '\0';
    }
    snprintf(out, cap, "HTTP %ld%s%s", status, first[0] ? ": " : "", first);
  }
  json_decref(root);
}

void cli_progress_bar(long done, long total, int width, char *out, size_t cap) {
  if (!cap) return;
  if (width < 1) width = 1;
  if (width > 200) width = 200;
  char cells[201];
  if (total <= 0) {
    memset(cells, '.', (size_t)width);
    cells[width] = '\0';
    snprintf(out, cap, "[%s]    ?  %ld", cells, done);
    return;
  }
  if (done < 0) done = 0;
  if (done > total) done = total;
  int filled = (int)((double)width * (double)done / (double)total);
  int pct = (int)(100.0 * (double)done / (double)total);
  memset(cells, '#', (size_t)filled);
  memset(cells + filled, '.', (size_t)(width - filled));
  cells[width] = '\0';
  snprintf(out, cap, "[%s] %3d%%  %ld/%ld", cells, pct, done, total);
}

void cli_query_escape(http_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
        c == '-' || c == '.' || c == '_' || c == '~') {
      http_buf_add(b, (const char *)p, 1);
    } else {
      char e[3] = {'%', hex[c >> 4], hex[c & 15]};
      http_buf_add(b, e, 3);
    }
  }
}

static void indent(http_buf *out, int depth) {
  http_buf_add(out, "\n", 1);
  for (int i = 0; i < depth; i++) http_buf_add(out, "  ", 2);
}

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void cli_json_pretty(const char *in, size_t len, http_buf *out) {
  int depth = 0;
  for (size_t i = 0; i < len; i++) {
    char c = in[i];
    if (c == '"') { /* a string: copied as is, escapes included */
      size_t j = i + 1;
      while (j < len && in[j] != '"') j += in[j] == '\\' ? 2 : 1;
      if (j >= len) j = len - 1;
      http_buf_add(out, in + i, j - i + 1);
      i = j;
      continue;
    }
    if (is_ws(c)) continue;
    if (c == '{' || c == '[') {
      size_t j = i + 1;
      while (j < len && is_ws(in[j])) j++;
      if (j < len && in[j] == (c == '{' ? '}' : ']')) {
        http_buf_add(out, c == '{' ? "{}" : "[]", 2);
        i = j;
        continue;
      }
      http_buf_add(out, &c, 1);
      indent(out, ++depth);
    } else if (c == '}' || c == ']') {
      indent(out, depth > 0 ? --depth : 0);
      http_buf_add(out, &c, 1);
    } else if (c == ',') {
      http_buf_add(out, ",", 1);
      indent(out, depth);
    } else if (c == ':') {
      http_buf_add(out, ": ", 2);
    } else {
      http_buf_add(out, &c, 1);
    }
  }
}

#define COLS "%6s  %-18s  %-24s  %-10s  %-13s  %s\n"

void cli_job_header(http_buf *out) {
  http_buf_printf(out, COLS, "ID", "KIND", "NAME", "STATUS", "PROGRESS", "CREATED");
}

void cli_job_row(const json_t *job, http_buf *out) {
  char id[24], name[32], progress[48] = "-", created[24] = "-";
  snprintf(id, sizeof id, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(job, "id")));
  const char *nm = json_string_value(json_object_get(job, "name"));
  if (!nm || !*nm) nm = "-";
  size_t n = strlen(nm);
  if (n > 24) {
    n = 23;
    while (n > 0 && ((unsigned char)nm[n] & 0xc0) == 0x80) n--; /* keep whole characters */
    snprintf(name, sizeof name, "%.*s~", (int)n, nm);
  } else {
    snprintf(name, sizeof name, "%s", nm);
  }
  json_t *pr = json_object_get(job, "progress");
  json_int_t done = json_integer_value(json_object_get(pr, "done")),
             total = json_integer_value(json_object_get(pr, "total"));
  if (total > 0)
    snprintf(progress, sizeof progress, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT, done,
             total);
  else if (done > 0) snprintf(progress, sizeof progress, "%" JSON_INTEGER_FORMAT, done);
  const char *ca = json_string_value(json_object_get(job, "created_at"));
  if (ca && strlen(ca) >= 19) {
    snprintf(created, sizeof created, "%.19s", ca);
    if (created[10] == 'T') created[10] = ' ';
  }
  const char *kind = json_string_value(json_object_get(job, "kind"));
  const char *status = json_string_value(json_object_get(job, "status"));
  http_buf_printf(out, COLS, id, kind ? kind : "-", name, status ? status : "-", progress,
                  created);
}

/* ---------------------------------------------------------------- connection and requests */

typedef struct cli_conn {
  char url[512];   /* without a trailing '/' */
  char *token;     /* owned; NULL: none */
} cli_conn;

/* The server's answer to one request, or CLI_EXIT_DOWN after printing the "cannot reach"
 * line. */
static int call(const cli_conn *c, const char *method, const char *path, const char *body,
                size_t len, httpc_resp *r) {
  char url[2048];
  snprintf(url, sizeof url, "%s%s", c->url, path);
  td_err e;
  td_err_clear(&e);
  memset(r, 0, sizeof *r);
  if (httpc_request(method, url, c->token, body ? "application/json" : NULL, body, len,
                    CLI_TIMEOUT_S, r, &e)) {
    fprintf(stderr,
            "tdlab: cannot reach the tdlab server at %s (%s); start it with `tdlab serve` or "
            "point --url / TDLAB_URL at it\n",
            c->url, e.msg[0] ? e.msg : "no answer");
    return CLI_EXIT_DOWN;
  }
  return 0;
}

/* Print the server's error answer as one line; returns CLI_EXIT_FAILED. */
static int server_error(const char *verb, const httpc_resp *r) {
  char line[1024];
  cli_error_text(r->status, r->body, line, sizeof line);
  fprintf(stderr, "tdlab %s: %s\n", verb, line);
  return CLI_EXIT_FAILED;
}

/* ---------------------------------------------------------------- options */

typedef struct cli_args {
  const char *pos[4];
  int n_pos;
  const char *status, *kind, *tag, *limit, *cursor;
  int wait;
} cli_args;

static char *read_all(FILE *f, size_t *len) {
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  if (!buf) return NULL;
  for (;;) {
    if (n == cap) {
      if (cap > ((size_t)256 << 20)) { /* a spec is small; refuse absurd input */
        free(buf);
        errno = EFBIG;
        return NULL;
      }
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        return NULL;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    free(buf);
    return NULL;
  }
  *len = n;
  return buf;
}

/* Parse the options shared by the verbs and the verb's own; returns 0 or CLI_EXIT_USAGE
 * after printing why. */
static int parse_args(const char *verb, int argc, char **argv, cli_conn *c, cli_args *a) {
  memset(a, 0, sizeof *a);
  const char *url = getenv("TDLAB_URL"), *token = getenv("TDLAB_TOKEN"), *token_file = NULL;
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (strncmp(arg, "--", 2) != 0 || !strcmp(arg, "-")) {
      if (a->n_pos == (int)(sizeof a->pos / sizeof a->pos[0])) {
        fprintf(stderr, "tdlab %s: too many arguments ('%s')\n", verb, arg);
        return CLI_EXIT_USAGE;
      }
      a->pos[a->n_pos++] = arg;
      continue;
    }
    char name[64];
    const char *eq = strchr(arg, '='), *value = NULL;
    snprintf(name, sizeof name, "%.*s", (int)(eq ? (size_t)(eq - arg) : strlen(arg)), arg);
    if (!strcmp(name, "--wait") && !eq) {
      a->wait = 1;
      continue;
    }
    int is_ls = !strcmp(verb, "ls");
    if (strcmp(name, "--url") && strcmp(name, "--token") && strcmp(name, "--token-file") &&
        !(is_ls && (!strcmp(name, "--status") || !strcmp(name, "--kind") ||
                    !strcmp(name, "--tag") || !strcmp(name, "--limit") ||
                    !strcmp(name, "--cursor")))) {
      /* before taking a value: an unknown last option is unknown, not short of a value */
      fprintf(stderr, "tdlab %s: unknown option %s (tdlab help lists them)\n", verb, name);
      return CLI_EXIT_USAGE;
    }
    if (eq) value = eq + 1;
    else if (i + 1 < argc) value = argv[++i];
    if (!value) {
      fprintf(stderr, "tdlab %s: %s needs a value\n", verb, name);
      return CLI_EXIT_USAGE;
    }
    if (!strcmp(name, "--url")) url = value;
    else if (!strcmp(name, "--token")) token = value;
    else if (!strcmp(name, "--token-file")) token_file = value;
    else if (!strcmp(verb, "ls") && !strcmp(name, "--status")) a->status = value;
    else if (!strcmp(verb, "ls") && !strcmp(name, "--kind")) a->kind = value;
    else if (!strcmp(verb, "ls") && !strcmp(name, "--tag")) a->tag = value;
    else if (!strcmp(verb, "ls") && !strcmp(name, "--limit")) {
      if (!*value || strspn(value, "0123456789") != strlen(value) || strlen(value) > 9) {
        fprintf(stderr, "tdlab ls: --limit must be a positive integer, not '%s'\n", value);
        return CLI_EXIT_USAGE;
      }
      a->limit = value;
    }
    else if (!strcmp(verb, "ls") && !strcmp(name, "--cursor")) a->cursor = value;
    else {
      fprintf(stderr, "tdlab %s: unknown option %s (tdlab help lists them)\n", verb, name);
      return CLI_EXIT_USAGE;
    }
  }
  if (!url || !*url) url = CLI_DEFAULT_URL;
  if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) {
    fprintf(stderr, "tdlab %s: the server URL '%s' must start with http:// or https://\n", verb,
            url);
    return CLI_EXIT_USAGE;
  }
  snprintf(c->url, sizeof c->url, "%s", url);
  for (size_t n = strlen(c->url); n > 0 && c->url[n - 1] == '/'; n--) c->url[n - 1] = '\0';
  if (token_file) {
    FILE *f = fopen(token_file, "r");
    size_t n = 0;
    char *t = f ? read_all(f, &n) : NULL;
    if (f) fclose(f);
    if (!t) {
      fprintf(stderr, "tdlab %s: cannot read the token file %s: %s\n", verb, token_file,
              strerror(errno));
      return CLI_EXIT_USAGE;
    }
    while (n && (t[n - 1] == '\n' || t[n - 1] == '\r' || t[n - 1] == ' ')) n--;
    t[n] = '\0';
    c->token = t;
  } else if (token && *token) {
    c->token = strdup(token);
  }
  return 0;
}

/* The job id of a positional argument, or CLI_EXIT_USAGE after printing why. */
static int parse_job_id(const char *verb, const cli_args *a, int64_t *id) {
  if (a->n_pos != 1) {
    fprintf(stderr, "tdlab %s: give one job id (tdlab %s ID)\n", verb, verb);
    return CLI_EXIT_USAGE;
  }
  if (http_parse_id(a->pos[0], id)) {
    fprintf(stderr, "tdlab %s: '%s' is not a job id (a positive integer)\n", verb, a->pos[0]);
    return CLI_EXIT_USAGE;
  }
  return 0;
}

/* ---------------------------------------------------------------- watch */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) && errno == EINTR) {
  }
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int is_final(const char *st) {
  return st && strcmp(st, "queued") && strcmp(st, "running");
}

/* The last value of each metric key, as "key  value" lines into b (at most max lines). */
static void metric_lines(const char *body, http_buf *b, int max) {
  json_t *root = json_loads(body, 0, NULL);
  json_t *m = json_object_get(root, "metrics");
  const char *key;
  json_t *s;
  int n = 0, more = 0;
  json_object_foreach(m, key, s) {
    json_t *vals = json_object_get(s, "value"), *steps = json_object_get(s, "step");
    size_t k = json_array_size(vals);
    if (!k) continue;
    if (n == max) {
      more++;
      continue;
    }
    json_t *v = json_array_get(vals, k - 1);
    char val[64];
    if (json_is_number(v)) snprintf(val, sizeof val, "%.6g", json_number_value(v));
    else snprintf(val, sizeof val, "%s", json_string_value(v) ? json_string_value(v) : "?");
    http_buf_printf(b, "  %-28s %14s  (step %" JSON_INTEGER_FORMAT ")\n", key, val,
                    json_integer_value(json_array_get(steps, json_array_size(steps) - 1)));
    n++;
  }
  if (more) http_buf_printf(b, "  (+%d more keys)\n", more);
  json_decref(root);
}

/* Follow job `id` until it ends, drawing on `out` (redrawn in place when tty). Returns
 * CLI_EXIT_OK when it succeeded, CLI_EXIT_FAILED otherwise (with a line on stderr), or
 * CLI_EXIT_DOWN. */
static int follow(const cli_conn *c, int64_t id, FILE *out, int tty) {
  char path[128], last_status[32] = "";
  int drawn = 0; /* lines drawn last time (tty) */
  double last_print = 0;
  for (;;) {
    httpc_resp r;
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", (long long)id);
    int rc = call(c, "GET", path, NULL, 0, &r);
    if (rc) return rc;
    if (r.status != 200) {
      rc = server_error("watch", &r);
      httpc_resp_free(&r);
      return rc;
    }
    json_t *job = json_loads(r.body, 0, NULL);
    httpc_resp_free(&r);
    if (!job) {
      fprintf(stderr, "tdlab watch: the server's answer is not JSON\n");
      return CLI_EXIT_FAILED;
    }
    const char *st = json_string_value(json_object_get(job, "status"));
    json_t *pr = json_object_get(job, "progress");
    long done = (long)json_integer_value(json_object_get(pr, "done")),
         total = (long)json_integer_value(json_object_get(pr, "total"));
    int final = is_final(st);
    http_buf b;
    http_buf_init(&b);
    char bar[128];
    cli_progress_bar(done, total, 30, bar, sizeof bar);
    const char *name = json_string_value(json_object_get(job, "name"));
    http_buf_printf(&b, "job %lld %s%s%s: %-9s %s\n", (long long)id,
                    json_string_value(json_object_get(job, "kind")), name && *name ? " " : "",
                    name ? name : "", st ? st : "?", bar);
    int want_metrics = tty || final;
    if (want_metrics) {
      snprintf(path, sizeof path, "/api/v1/jobs/%lld/metrics?max_points=2", (long long)id);
      if (!call(c, "GET", path, NULL, 0, &r) && r.status == 200 && r.body)
        metric_lines(r.body, &b, CLI_MAX_METRIC_LINES);
      httpc_resp_free(&r);
    }
    double t = now_s();
    if (tty) {
      if (drawn) fprintf(out, "\033[%dA\033[J", drawn);
      fputs(b.data ? b.data : "", out);
      drawn = 0;
      for (size_t i = 0; i < b.len; i++) drawn += b.data[i] == '\n';
    } else if (final || strcmp(last_status, st ? st : "") || t - last_print >= 5.0) {
      fputs(b.data ? b.data : "", out);
      last_print = t;
    }
    fflush(out);
    http_buf_free(&b);
    snprintf(last_status, sizeof last_status, "%s", st ? st : "");
    if (final) {
      int ok = !strcmp(st, "succeeded");
      if (!ok) {
        const char *err = json_string_value(json_object_get(job, "error"));
        fprintf(stderr, "tdlab: job %lld %s%s%s\n", (long long)id, st, err ? ": " : "",
                err ? err : "");
      }
      json_decref(job);
      return ok ? CLI_EXIT_OK : CLI_EXIT_FAILED;
    }
    json_decref(job);
    sleep_ms(CLI_POLL_MS);
  }
}

/* ---------------------------------------------------------------- verbs */

static int cmd_submit(const cli_conn *c, const cli_args *a) {
  if (a->n_pos != 1) {
    fprintf(stderr, "tdlab submit: give one spec (a JSON file, or - for stdin)\n");
    return CLI_EXIT_USAGE;
  }
  const char *spec = a->pos[0];
  FILE *f = strcmp(spec, "-") ? fopen(spec, "rb") : stdin;
  if (!f) {
    fprintf(stderr, "tdlab submit: cannot open %s: %s\n", spec, strerror(errno));
    return CLI_EXIT_USAGE;
  }
  size_t len = 0;
  char *body = read_all(f, &len);
  if (f != stdin) fclose(f);
  if (!body) {
    fprintf(stderr, "tdlab submit: cannot read %s: %s\n", spec, strerror(errno));
    return CLI_EXIT_USAGE;
  }
  json_error_t je;
  json_t *root = json_loadb(body, len, 0, &je);
  if (!root || !json_is_object(root)) {
    if (root)
      fprintf(stderr, "tdlab submit: %s must hold a JSON object (a job spec: kind, params)\n",
              spec);
    else
      fprintf(stderr, "tdlab submit: %s is not valid JSON (line %d, column %d: %s)\n",
              strcmp(spec, "-") ? spec : "stdin",
              je.line, je.column, je.text);
    json_decref(root);
    free(body);
    return CLI_EXIT_USAGE;
  }
  json_decref(root);
  httpc_resp r;
  int rc = call(c, "POST", "/api/v1/jobs", body, len, &r);
  free(body);
  if (rc) return rc;
  if (r.status != 201) {
    rc = server_error("submit", &r);
    httpc_resp_free(&r);
    return rc;
  }
  json_t *job = json_loads(r.body, 0, NULL);
  httpc_resp_free(&r);
  json_int_t id = json_integer_value(json_object_get(job, "id"));
  json_decref(job);
  if (id <= 0) {
    fprintf(stderr, "tdlab submit: the server's answer has no job id\n");
    return CLI_EXIT_FAILED;
  }
  printf("%" JSON_INTEGER_FORMAT "\n", id);
  fflush(stdout);
  if (!a->wait) return CLI_EXIT_OK;
  return follow(c, (int64_t)id, stderr, isatty(STDERR_FILENO));
}

static int cmd_ls(const cli_conn *c, const cli_args *a) {
  if (a->n_pos) {
    fprintf(stderr, "tdlab ls: unexpected argument '%s'\n", a->pos[0]);
    return CLI_EXIT_USAGE;
  }
  http_buf path;
  http_buf_init(&path);
  http_buf_str(&path, "/api/v1/jobs");
  const char *names[] = {"status", "kind", "tag", "limit", "cursor"};
  const char *vals[] = {a->status, a->kind, a->tag, a->limit, a->cursor};
  int n = 0;
  for (int i = 0; i < 5; i++) {
    if (!vals[i]) continue;
    http_buf_printf(&path, "%c%s=", n++ ? '&' : '?', names[i]);
    cli_query_escape(&path, vals[i]);
  }
  if (path.failed) {
    http_buf_free(&path);
    return CLI_EXIT_FAILED;
  }
  httpc_resp r;
  int rc = call(c, "GET", path.data, NULL, 0, &r);
  http_buf_free(&path);
  if (rc) return rc;
  if (r.status != 200) {
    rc = server_error("ls", &r);
    httpc_resp_free(&r);
    return rc;
  }
  json_t *root = json_loads(r.body, 0, NULL);
  httpc_resp_free(&r);
  json_t *jobs = json_object_get(root, "jobs");
  if (!json_is_array(jobs)) {
    json_decref(root);
    fprintf(stderr, "tdlab ls: the server's answer has no job list\n");
    return CLI_EXIT_FAILED;
  }
  http_buf out;
  http_buf_init(&out);
  cli_job_header(&out);
  size_t i;
  json_t *j;
  json_array_foreach(jobs, i, j) cli_job_row(j, &out);
  fputs(out.data ? out.data : "", stdout);
  http_buf_free(&out);
  const char *next = json_string_value(json_object_get(root, "next_cursor"));
  if (next) fprintf(stderr, "(more jobs: add --cursor %s)\n", next);
  json_decref(root);
  return CLI_EXIT_OK;
}

static int cmd_show(const cli_conn *c, const cli_args *a) {
  int64_t id;
  int rc = parse_job_id("show", a, &id);
  if (rc) return rc;
  char path[64];
  snprintf(path, sizeof path, "/api/v1/jobs/%lld", (long long)id);
  httpc_resp r;
  if ((rc = call(c, "GET", path, NULL, 0, &r))) return rc;
  if (r.status != 200) {
    rc = server_error("show", &r);
    httpc_resp_free(&r);
    return rc;
  }
  http_buf out;
  http_buf_init(&out);
  cli_json_pretty(r.body, r.body_len, &out);
  http_buf_add(&out, "\n", 1);
  fputs(out.data ? out.data : "", stdout);
  http_buf_free(&out);
  httpc_resp_free(&r);
  return CLI_EXIT_OK;
}

static int cmd_watch(const cli_conn *c, const cli_args *a) {
  int64_t id;
  int rc = parse_job_id("watch", a, &id);
  if (rc) return rc;
  return follow(c, id, stdout, isatty(STDOUT_FILENO));
}

static int cmd_cancel(const cli_conn *c, const cli_args *a) {
  int64_t id;
  int rc = parse_job_id("cancel", a, &id);
  if (rc) return rc;
  char path[64];
  snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", (long long)id);
  httpc_resp r;
  if ((rc = call(c, "POST", path, NULL, 0, &r))) return rc;
  if (r.status == 200) printf("job %lld cancelled\n", (long long)id);
  else if (r.status == 202)
    printf("job %lld: cancel requested; it stops at its next step\n", (long long)id);
  else rc = server_error("cancel", &r);
  httpc_resp_free(&r);
  return rc;
}

int cli_is_verb(const char *verb) {
  return verb && (!strcmp(verb, "submit") || !strcmp(verb, "ls") || !strcmp(verb, "show") ||
                  !strcmp(verb, "watch") || !strcmp(verb, "cancel"));
}

int cli_main(const char *verb, int argc, char **argv) {
  cli_conn c = {0};
  cli_args a;
  int rc = parse_args(verb, argc, argv, &c, &a);
  if (rc) {
    free(c.token);
    return rc;
  }
  if (a.wait && strcmp(verb, "submit")) {
    fprintf(stderr, "tdlab %s: --wait belongs to tdlab submit\n", verb);
    rc = CLI_EXIT_USAGE;
  } else if (!strcmp(verb, "submit")) rc = cmd_submit(&c, &a);
  else if (!strcmp(verb, "ls")) rc = cmd_ls(&c, &a);
  else if (!strcmp(verb, "show")) rc = cmd_show(&c, &a);
  else if (!strcmp(verb, "watch")) rc = cmd_watch(&c, &a);
  else if (!strcmp(verb, "cancel")) rc = cmd_cancel(&c, &a);
  else rc = CLI_EXIT_USAGE;
  free(c.token);
  return rc;
}
