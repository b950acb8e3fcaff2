/* httpc.h: a small blocking HTTP client on libcurl (tdlab run --report, the command line). */
#ifndef TD_SERVER_HTTPC_H
#define TD_SERVER_HTTPC_H

#include <stddef.h>

#include "base/err.h"

/* One response: the HTTP status and the body (NUL-terminated after body_len bytes; owned by
 * the struct, freed by httpc_resp_free). */
typedef struct {
  long status;
  char *body;
  size_t body_len;
} httpc_resp;

/* httpc_global_init: curl_global_init(CURL_GLOBAL_DEFAULT). Call once from main before any
 * thread uses httpc_request (libcurl's rule). Errors: TD_EIO. */
int httpc_global_init(td_err *err);
/* httpc_global_cleanup: curl_global_cleanup(); once, at exit, when no request runs. */
void httpc_global_cleanup(void);

/* httpc_request: one HTTP request, blocking, on a fresh libcurl easy handle (so it is safe
 * from any thread once httpc_global_init ran). method is "GET", "POST", "PUT", "DELETE" ...;
 * url is absolute (http:// or https://); bearer (may be NULL) is sent as
 * "Authorization: Bearer <bearer>"; content_type (may be NULL) as Content-Type; body (may be
 * NULL, then body_len is ignored and nothing is sent) is body_len bytes. timeout_s > 0 bounds
 * the whole request (connect + transfer), in seconds. Redirects are not followed; no signals
 * are used (CURLOPT_NOSIGNAL).
 * Returns 0 whenever a response came, whatever its HTTP status (resp->status), with the body
 * in resp (the caller frees it with httpc_resp_free). Errors: TD_EINVAL (bad arguments),
 * TD_ENOMEM, TD_EIO with libcurl's message in err when no response came (connection refused,
 * timeout, DNS failure, connection reset); resp is then empty (status 0, body NULL). */
int httpc_request(const char *method, const char *url, const char *bearer,
                  const char *content_type, const char *body, size_t body_len,
                  double timeout_s, httpc_resp *resp /* OUT */, td_err *err);

/* httpc_resp_free: free the body and reset the struct. resp may be NULL. */
void httpc_resp_free(httpc_resp *resp);

#endif
