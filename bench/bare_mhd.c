/* bare_mhd.c: the peer of the REST benchmark: a bare libmicrohttpd server that answers every
 * request with one fixed JSON body, configured like `tdlab serve` (epoll thread pool, same
 * connection limit), so that bench/rest.sh can compare GET /api/v1/jobs/{id} with the cost
 * of libmicrohttpd alone on the same machine in the same run.
 *
 * Usage: bare_mhd [--port P] [--threads N] [--body-file F] [--pool-kb K]
 *   --port 0 (default) picks a free port; the bound port is printed as "port=P" on stdout.
 *   --threads is the epoll thread-pool size (default 2, tdlab's default on 2 cores).
 *   --body-file serves the bytes of F (e.g. the tdlab job JSON, so both sides send the same
 *   body); without it a 400-byte job-like JSON object is served.
 *   --pool-kb is libmicrohttpd's per-connection memory pool (MHD_OPTION_CONNECTION_MEMORY_LIMIT;
 *   0, the default, keeps libmicrohttpd's own default of 32 KiB); pass tdlab's value.
 * Runs until SIGINT or SIGTERM. */
#include <microhttpd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char default_body[] =
    "{\"id\":1,\"kind\":\"linreg\",\"name\":\"\",\"status\":\"running\",\"params\":{\"lr\":0.1,"
    "\"data\":{\"name\":\"synthetic\",\"n\":200,\"d\":50,\"noise\":0.1,\"decay\":0.0},\"steps\":"
    "100,\"init\":\"zero\",\"init_scale\":1.0,\"seed\":0},\"tags\":[],\"priority\":0,\"attempt\":"
    "1,\"sweep_id\":null,\"progress\":{\"done\":10,\"total\":100},\"cancel_requested\":false,"
    "\"created_at\":\"2024-01-01T00:00:00.000Z\",\"started_at\":\"2024-01-01T00:00:00.000Z\","
    "\"finished_at\":null,\"error\":null,\"summary\":null}";

typedef struct bare {
  char *body;
  size_t len;
} bare;

/* The whole handler: one persistent buffer, no per-request allocation of our own. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  (void)url;
  (void)method;
  (void)version;
  (void)upload;
  bare *b = cls;
  if (!*con_cls) { /* first call: headers only */
    *con_cls = b;
    return MHD_YES;
  }
  if (*upload_size) { /* discard any body */
    *upload_size = 0;
    return MHD_YES;
  }
  struct MHD_Response *r =
      MHD_create_response_from_buffer(b->len, b->body, MHD_RESPMEM_PERSISTENT);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return ok;
}

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t k = fread(buf + n, 1, cap - n, f);
    n += k;
    if (n < cap) break;
    char *nb = realloc(buf, cap * 2);
    if (!nb) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  fclose(f);
  *len = n;
  return buf;
}

int main(int argc, char **argv) {
  unsigned port = 0, threads = 2, pool_kb = 0;
  const char *body_file = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--port") && i + 1 < argc) port = (unsigned)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = (unsigned)atoi(argv[++i]);
    else if (!strcmp(argv[i], "--body-file") && i + 1 < argc) body_file = argv[++i];
    else if (!strcmp(argv[i], "--pool-kb") && i + 1 < argc) pool_kb = (unsigned)atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bare_mhd [--port P] [--threads N] [--body-file F] [--pool-kb K]\n");
      return 2;
    }
  }
  if (threads < 1) threads = 1;
  bare b = {(char *)default_body, sizeof default_body - 1};
  if (body_file && !(b.body = read_all(body_file, &b.len))) {
    fprintf(stderr, "bare_mhd: cannot read %s\n", body_file);
    return 1;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC;
  /* The same daemon options as tdlab's http_start, except the ones that need a handler. */
  struct MHD_OptionItem opts[8];
  int k = 0;
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, 1024, NULL};
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, 30, NULL};
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_LISTENING_ADDRESS_REUSE, 1, NULL};
  if (threads > 1) opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, threads, NULL};
  if (pool_kb) opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)pool_kb * 1024, NULL};
  opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  struct MHD_Daemon *d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, &b,
                                          MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
  if (!d) {
    fprintf(stderr, "bare_mhd: cannot listen on port %u\n", port);
    return 1;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
  printf("port=%u\n", info ? (unsigned)info->port : port);
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  MHD_stop_daemon(d);
  if (b.body != default_body) free(b.body);
  return 0;
}
