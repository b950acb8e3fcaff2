/* api_static.c: the dashboard: files under web/, with no path traversal and no symlink escape,
 * correct content types, and revalidation caching (ETag + Cache-Control: no-cache). */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"

static const struct {
  const char *ext, *type;
} content_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".htm", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".map", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".gif", "image/gif"},
    {".ico", "image/x-icon"},
    {".webp", "image/webp"},
    {".woff", "font/woff"},
    {".woff2", "font/woff2"},
    {".txt", "text/plain; charset=utf-8"},
    {".md", "text/plain; charset=utf-8"},
    {".wasm", "application/wasm"},
};

static const char *type_of(const char *path) {
  const char *dot = strrchr(path, '.');
  const char *slash = strrchr(path, '/');
  if (dot && (!slash || dot > slash))
    for (size_t i = 0; i < sizeof content_types / sizeof content_types[0]; i++)
      if (strcasecmp(dot, content_types[i].ext) == 0) return content_types[i].type;
  return "application/octet-stream";
}

/* Refuse "..", "." and hidden segments, backslashes and control bytes before touching disk. */
static int safe_path(const char *p) {
  if (p[0] != '/') return 0;
  for (const char *s = p; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == '\\' || *s == 0x7f) return 0;
  const char *seg = p + 1;
  while (*seg) {
    if (seg[0] == '.') return 0; /* ".", "..", ".git", ".env" ... */
    const char *slash = strchr(seg, '/');
    if (!slash) break;
    seg = slash + 1;
  }
  return 1;
}

/* Is `real` equal to root or inside it? */
static int under_root(const char *real, const char *root, size_t root_len) {
  return strncmp(real, root, root_len) == 0 && (real[root_len] == '/' || real[root_len] == '\0');
}

int api_static_resolve(const char *root, size_t root_len, const char *path, int *fd,
                       const char **ctype) {
  *fd = -1;
  *ctype = NULL;
  if (!root || !path || !safe_path(path) || strlen(path) > 1024) return TD_ENOTFOUND;
  char full[PATH_MAX];
  int n = snprintf(full, sizeof full, "%s%s", root, path);
  if (n < 0 || (size_t)n >= sizeof full - 16) return TD_ENOTFOUND;
  if (full[n - 1] == '/') strcat(full, "index.html");
  char real[PATH_MAX];
  for (int round = 0; round < 2; round++) {
    if (!realpath(full, real) || !under_root(real, root, root_len)) return TD_ENOTFOUND;
    struct stat sb;
    if (stat(real, &sb) != 0) return TD_ENOTFOUND;
    if (S_ISDIR(sb.st_mode) && round == 0) {
      size_t rl = strlen(real);
      if (rl + sizeof "/index.html" > sizeof full) return TD_ENOTFOUND;
      memcpy(full, real, rl);
      memcpy(full + rl, "/index.html", sizeof "/index.html");
      continue;
    }
    if (!S_ISREG(sb.st_mode)) return TD_ENOTFOUND;
    break;
  }
  /* O_NOFOLLOW: the resolved path has no symlinks left; refuse one that appeared since. */
  int f = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (f < 0) return TD_ENOTFOUND;
  struct stat sb;
  if (fstat(f, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    close(f);
    return TD_ENOTFOUND;
  }
  *fd = f;
  *ctype = type_of(real);
  return 0;
}

int api_static(http_req *req, http_resp *resp) {
  api_ctx *a = req->app;
  int fd;
  const char *ctype;
  if (!a->web_root || api_static_resolve(a->web_root, a->web_root_len, req->path, &fd, &ctype))
    return http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such file");
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    close(fd);
    return http_error(resp, HTTP_E_NOT_FOUND, NULL, "no such file");
  }
  char etag[64];
  snprintf(etag, sizeof etag, "\"%llx-%llx-%lx\"", (unsigned long long)sb.st_size,
           (unsigned long long)sb.st_mtim.tv_sec, (unsigned long)sb.st_mtim.tv_nsec);
  http_resp_header(resp, "ETag", "%s", etag);
  resp->cache = "no-cache"; /* cache, but revalidate: the dashboard changes with the server */
  const char *inm = http_header(req, "If-None-Match");
  if (inm && (strstr(inm, etag) || strcmp(inm, "*") == 0)) {
    close(fd);
    resp->status = 304;
    return 304;
  }
  resp->fd = fd;
  resp->fd_size = (uint64_t)sb.st_size;
  resp->content_type = ctype;
  resp->status = 200;
  return 200;
}
