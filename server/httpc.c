/* httpc.c: a small blocking HTTP client on libcurl (one easy handle per request). */
#include "httpc.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int httpc_global_init(td_err *err) {
  CURLcode c = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (c != CURLE_OK)
    return td_err_set(err, TD_EIO, NULL, "curl_global_init: %s", curl_easy_strerror(c));
  return 0;
}

void httpc_global_cleanup(void) { curl_global_cleanup(); }

typedef struct {
  char *buf;
  size_t len, cap;
  int oom;
} body_buf;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud) {
  body_buf *b = ud;
  size_t n = size * nmemb;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *nb = realloc(b->buf, cap);
    if (!nb) {
      b->oom = 1;
      return 0; /* aborts the transfer */
    }
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, ptr, n);
  b->len += n;
  b->buf[b->len] = '\0';
  return n;
}

int httpc_request(const char *method, const char *url, const char *bearer,
                  const char *content_type, const char *body, size_t body_len,
                  double timeout_s, httpc_resp *resp, td_err *err) {
  if (!resp) return td_err_set(err, TD_EINVAL, NULL, "httpc_request: resp is NULL");
  memset(resp, 0, sizeof *resp);
  if (!method || !*method || !url || !*url || !(timeout_s > 0))
    return td_err_set(err, TD_EINVAL, NULL, "httpc_request: method, url and timeout_s > 0 needed");
  CURL *h = curl_easy_init();
  if (!h) return td_err_set(err, TD_ENOMEM, NULL, "curl_easy_init failed");
  struct curl_slist *hdr = NULL;
  char line[4200];
  int rc = 0;
  if (bearer) {
    if (strlen(bearer) > 4000) {
      curl_easy_cleanup(h);
      return td_err_set(err, TD_EINVAL, NULL, "httpc_request: bearer token too long");
    }
    snprintf(line, sizeof line, "Authorization: Bearer %s", bearer);
    hdr = curl_slist_append(hdr, line);
  }
  if (content_type) {
    snprintf(line, sizeof line, "Content-Type: %s", content_type);
    hdr = curl_slist_append(hdr, line);
  }
  hdr = curl_slist_append(hdr, "Expect:"); /* no 100-continue round trip for POST bodies */
  body_buf b = {0};
  long ms = (long)(timeout_s * 1000.0);
  if (ms < 1) ms = 1;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  if (strcmp(method, "GET") == 0 && !body)
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  else if (strcmp(method, "POST") == 0 && !body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  if (hdr) curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  CURLcode c = curl_easy_perform(h);
  if (c != CURLE_OK) {
    rc = b.oom ? td_err_set(err, TD_ENOMEM, NULL, "out of memory reading the response of %s",
                            url)
               : td_err_set(err, TD_EIO, NULL, "%s %s: %s", method, url,
                            curl_easy_strerror(c));
    free(b.buf);
  } else {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
    if (!b.buf) {
      b.buf = malloc(1);
      if (b.buf) b.buf[0] = '\0';
    }
    if (!b.buf) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "out of memory");
      resp->status = 0;
    } else {
      resp->body = b.buf;
      resp->body_len = b.len;
    }
  }
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  return rc;
}

void httpc_resp_free(httpc_resp *resp) {
  if (!resp) return;
  free(resp->body);
  memset(resp, 0, sizeof *resp);
}
