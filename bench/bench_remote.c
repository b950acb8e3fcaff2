/* bench_remote.c: ingestion throughput of remote runs (issue 16): the total rate at which 64
 * concurrent remote runs stream points to one `tdlab serve` over HTTP (POST
 * /api/v1/jobs/{id}/points, batches of 5000 points as `tdlab run --report` sends them),
 * against the point rate of ONE in-process job (a queue worker running a kind that emits
 * points as fast as its sink takes them, as in bench_ingest.c), measured in the same run on
 * the same machine. Afterwards every remote point is checked to be stored (the per-key totals
 * of each job's metrics).
 *
 * Usage: bench_remote [--tdlab build/tdlab] [--migrations migrations] [--runs 64]
 *                     [--points-per-run 50000] [--batch 5000] [--dir /tmp]
 * Prints:
 *   BENCH remote_ingest_64 tdlab_pts_per_s=<remote total> peer=inprocess_job
 *         peer_pts_per_s=<one job> ratio=<remote/job> complete=<yes|no>
 * and exits 1 when a point is missing or a request failed. */
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "benchjob.h"
#include "kinds/registry.h"
#include "../server/http.h"
#include "../server/httpc.h"
#include "../server/log.h"
#include "../server/queue.h"
#include "../server/store.h"





/* ---------------------------------------------------------------- the in-process job */




/* Points per second of one job run by a queue worker with the server's default batching
 * (1024 points or 250 ms), from the kind's start to the final status. */
static double inprocess_rate(const char *path, const char *mig, long n) {
  double t = bench_emit_job_seconds("bench_remote", path, mig, n, 1024);
  bench_remove_db(path);
  return n / t;
}

/* ---------------------------------------------------------------- the remote runs */

typedef struct run {
  char base[64];
  long long id;
  char token[80];
  long points, batch;
  int failed;
} run;

static void *run_main(void *arg) {
  run *r = arg;
  char url[160];
  snprintf(url, sizeof url, "%s/api/v1/jobs/%lld/points", r->base, r->id);
  http_buf b;
  http_buf_init(&b);
  for (long i0 = 0; i0 < r->points && !r->failed; i0 += r->batch) {
    b.len = 0;
    http_buf_str(&b, "{\"points\":[");
    for (long i = i0; i < i0 + r->batch && i < r->points; i++) {
      http_buf_printf(&b, "%s{\"key\":\"%s\",\"step\":%ld,\"value\":", i > i0 ? "," : "",
                      bench_keys[i & 3], i / 4);
      http_buf_json_num(&b, bench_value_of(i));
      http_buf_str(&b, "}");
    }
    http_buf_str(&b, "]}");
    for (int attempt = 0;; attempt++) { /* retry a 503 (busy) as tdlab run --report does */
      httpc_resp resp;
      td_err e;
      int rc = httpc_request("POST", url, r->token, "application/json", b.data, b.len, 60, &resp,
                             &e);
      long code = rc ? 0 : resp.status;
      httpc_resp_free(&resp);
      if (code == 200) break;
      if ((code == 503 || rc) && attempt < 20) {
        bench_sleep_ms(50);
        continue;
      }
      fprintf(stderr, "bench_remote: job %lld: HTTP %ld %s\n", r->id, code, rc ? e.msg : "");
      r->failed = 1;
      break;
    }
  }
  http_buf_free(&b);
  return NULL;
}

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &l))
    exit(1);
  close(fd);
  return ntohs(a.sin_port);
}

static json_t *post_json(const char *url, const char *body) {
  httpc_resp resp;
  td_err e;
  if (httpc_request("POST", url, NULL, "application/json", body, strlen(body), 30, &resp, &e))
    return NULL;
  json_t *j = resp.status / 100 == 2 ? json_loads(resp.body, 0, NULL) : NULL;
  httpc_resp_free(&resp);
  return j;
}

int main(int argc, char **argv) {
  const char *tdlab = "build/tdlab", *mig = "migrations", *dir = "/tmp";
  long runs = 64, per_run = 50000, batch = 5000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--tdlab")) tdlab = argv[i + 1];
    else if (!strcmp(argv[i], "--migrations")) mig = argv[i + 1];
    else if (!strcmp(argv[i], "--runs")) runs = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--points-per-run")) per_run = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) batch = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
    else {
      fprintf(stderr, "usage: bench_remote [--tdlab B] [--migrations D] [--runs 64] "
                      "[--points-per-run 50000] [--batch 5000] [--dir /tmp]\n");
      return 2;
    }
  }
  if (runs < 1 || runs > 1024 || per_run < 4 || batch < 1 || batch > 10000) return 2;
  log_set_level(LOG_WARN);
  td_err e;
  if (httpc_global_init(&e)) return 1;
  signal(SIGPIPE, SIG_IGN);
  char tmpl[512];
  snprintf(tmpl, sizeof tmpl, "%s/tdlab-remote.XXXXXX", dir);
  if (!mkdtemp(tmpl)) return 1;
  char db1[600], db2[600], logp[600];
  snprintf(db1, sizeof db1, "%s/inproc.db", tmpl);
  snprintf(db2, sizeof db2, "%s/server.db", tmpl);
  snprintf(logp, sizeof logp, "%s/server.log", tmpl);

  /* 1. one in-process job, as many points as all remote runs together */
  double job_rate = inprocess_rate(db1, mig, runs * per_run);
  fprintf(stderr, "in-process job: %.0f pts/s (%ld points)\n", job_rate, runs * per_run);

  /* 2. the server, then the remote runs */
  int port = free_port();
  char ports[16];
  snprintf(ports, sizeof ports, "%d", port);
  pid_t pid = fork();
  if (pid == 0) {
    FILE *lf = freopen(logp, "w", stderr);
    (void)lf;
    execl(tdlab, tdlab, "serve", "--port", ports, "--db", db2, "--migrations", mig, "--workers",
          "0", "--log-level", "warn", "--heartbeat-timeout", "3600", (char *)NULL);
    /* the runs send points only, no heartbeats: a long lease keeps a slow round (a loaded
     * machine, 3.2M points) from being marked crashed mid-measurement (a 409) */
    _exit(127);
  }
  char base[64];
  snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
  char url[200];
  snprintf(url, sizeof url, "%s/healthz", base);
  int up = 0;
  for (int i = 0; i < 400 && !up; i++) {
    httpc_resp resp;
    if (!httpc_request("GET", url, NULL, NULL, NULL, 0, 2, &resp, &e)) {
      up = resp.status == 200;
      httpc_resp_free(&resp);
    }
    if (!up) bench_sleep_ms(25);
  }
  int ok = up;
  run *rs = calloc((size_t)runs, sizeof *rs);
  pthread_t *th = calloc((size_t)runs, sizeof *th);
  for (long i = 0; ok && i < runs; i++) {
    snprintf(url, sizeof url, "%s/api/v1/runs", base);
    char body[64];
    snprintf(body, sizeof body, "{\"name\":\"bench-%ld\"}", i);
    json_t *j = post_json(url, body);
    const char *t = json_string_value(json_object_get(j, "token"));
    if (!t) ok = 0;
    else {
      snprintf(rs[i].base, sizeof rs[i].base, "%s", base);
      rs[i].id = json_integer_value(json_object_get(j, "id"));
      snprintf(rs[i].token, sizeof rs[i].token, "%s", t);
      rs[i].points = per_run;
      rs[i].batch = batch;
    }
    json_decref(j);
  }
  double remote_rate = 0;
  int complete = 0;
  if (ok) {
    double t0 = bench_now_s();
    for (long i = 0; i < runs; i++) pthread_create(&th[i], NULL, run_main, &rs[i]);
    for (long i = 0; i < runs; i++) pthread_join(th[i], NULL);
    double dt = bench_now_s() - t0;
    for (long i = 0; i < runs; i++) ok &= !rs[i].failed;
    remote_rate = runs * per_run / dt;
    fprintf(stderr, "%ld remote runs: %.0f pts/s in total (%.2f s)\n", runs, remote_rate, dt);
    /* 3. every point is there: per job, the totals of its keys add up to per_run */
    complete = ok;
    for (long i = 0; complete && i < runs; i++) {
      snprintf(url, sizeof url, "%s/api/v1/jobs/%lld/metrics?max_points=2", base, rs[i].id);
      httpc_resp resp;
      long total = 0;
      if (!httpc_request("GET", url, NULL, NULL, NULL, 0, 30, &resp, &e)) {
        json_t *j = json_loads(resp.body, 0, NULL);
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(j, "metrics"), k, v)
          total += (long)json_integer_value(json_object_get(v, "total"));
        json_decref(j);
        httpc_resp_free(&resp);
      }
      if (total != per_run) {
        fprintf(stderr, "bench_remote: job %lld has %ld points, wanted %ld\n", rs[i].id, total,
                per_run);
        complete = 0;
      }
    }
  } else {
    fprintf(stderr, "bench_remote: the server did not start or refused a run (log %s)\n", logp);
  }
  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  free(rs);
  free(th);
  bench_remove_db(db2);
  unlink(logp);
  char lock[700];
  snprintf(lock, sizeof lock, "%s.lock", db2);
  unlink(lock);
  rmdir(tmpl);
  printf("BENCH remote_ingest_%ld tdlab_pts_per_s=%.0f peer=inprocess_job peer_pts_per_s=%.0f "
         "ratio=%.3f complete=%s\n",
         runs, remote_rate, job_rate, job_rate > 0 ? remote_rate / job_rate : 0,
         complete ? "yes" : "no");
  return ok && complete ? 0 : 1;
}
