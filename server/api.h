/* api.h: the REST handlers (one api_<resource>.c per resource) and their shared context. */
#ifndef TD_SERVER_API_H
#define TD_SERVER_API_H

#include <jansson.h>
#include <stddef.h>

#include "kinds/registry.h"
#include "http.h"
#include "queue.h"
#include "store.h"

/* Everything the handlers share; built once in `serve` and read-only afterwards. */
/* The version that tdlab version and tdlab_build_info report. */
#define TDLAB_VERSION "0.1.0"

typedef struct api_ctx {
  queue *q;              /* borrowed */
  td_limits limits;      /* caps on a job's estimated memory and parameter count */
  long max_queued;       /* 503 with Retry-After past this many queued jobs; 0: no cap */
  char *kinds_json;      /* the catalogue response, rendered once (owned) */
  size_t kinds_len;
  char *web_root;        /* realpath of the dashboard directory (owned), or NULL */
  size_t web_root_len;
  long long start_ms;    /* CLOCK_MONOTONIC at start, for uptime */
  struct store_cache *job_cache; /* rendered GET /api/v1/jobs/{id} bodies (borrowed); NULL: off */
  /* Remote runs (issue 16, api_remote.c). */
  double max_job_points;     /* serve --max-job-points: also caps points sent over HTTP; 0: none */
  double heartbeat_timeout_s;/* serve --heartbeat-timeout (a run learns it from /start, /runs) */
  const char *default_executor; /* executor of a job that names none: "local" (NULL) or "slurm" */
} api_ctx;

/* api_valid_name: 1 when s (NUL-terminated UTF-8, as jansson hands it over) is a job or run
 * name: at most API_MAX_NAME_LEN characters (code points, not bytes) and no control
 * characters (below U+0020, or U+007F); else 0. */
#define API_MAX_NAME_LEN 200
int api_valid_name(const char *s);

/* At most this many tags on a job (or a run); a tag is 1..API_MAX_TAG_LEN bytes. */
#define API_MAX_TAGS 32
#define API_MAX_TAG_LEN 64

/* api_parse_tags: the request's "tags" (borrowed; a JSON array) as at most API_MAX_TAGS valid,
 * distinct tags of 1..API_MAX_TAG_LEN characters of A-Z a-z 0-9 _ . : / = + -: tags[0..*n_tags)
 * (room for API_MAX_TAGS) borrow the strings, and tags_arr (may be NULL) receives them in
 * order. Returns 0, or the HTTP status of the 400 written into resp (field "tags" or
 * "tags[i]"). Used by POST /api/v1/jobs, PATCH /api/v1/jobs/{id} and POST /api/v1/runs. */
int api_parse_tags(const json_t *jtags, const char **tags, size_t *n_tags, json_t *tags_arr,
                   http_resp *resp);

/* api_ctx_init: render the catalogue and resolve `web_dir` (NULL or missing: no dashboard,
 * static requests get 404). Errors: TD_ENOMEM. */
int api_ctx_init(api_ctx *a, queue *q, td_limits limits, long max_queued, const char *web_dir,
                 td_err *err);
void api_ctx_deinit(api_ctx *a);

/* Jobs (api_jobs.c). */
int api_jobs_create(http_req *req, http_resp *resp);
int api_jobs_list(http_req *req, http_resp *resp);
int api_jobs_get(http_req *req, http_resp *resp);
int api_jobs_cancel(http_req *req, http_resp *resp);
int api_artifacts_list(http_req *req, http_resp *resp);
int api_artifacts_get(http_req *req, http_resp *resp);

/* api_job_json: append the JSON object of one job (the GET /api/v1/jobs/{id} shape). */
void api_job_json(http_buf *b, const store_job *j);

/* Checkpoints (api_checkpoints.c): POST (raw safetensors body), GET metadata, GET the file. */
int api_checkpoints_create(http_req *req, http_resp *resp);
int api_checkpoints_get(http_req *req, http_resp *resp);
int api_checkpoints_file(http_req *req, http_resp *resp);

/* api_resolve_start: the submit-time check of a job's params.init_from / params.fork on the
 * filled params (borrowed): the named job or uploaded checkpoint exists, a job ref has a
 * stored checkpoint at its step (else the 400 lists the steps that have one), the
 * checkpoint's tensors fit the model of the params (td_checkpoint_check_params; a fork also
 * needs optimizer state of params.optimizer.name). On a fork sets nj->parent_job_id and
 * nj->parent_step. Returns 0 (resp untouched) or the status of the error written to resp. */
int api_resolve_start(store *db, const struct json_t *filled, store_new_job *nj,
                      http_resp *resp);

/* Sweeps and fits (api_sweeps.c; the logic is in sweeps.c and core/scaling/fit.c). */
int api_sweeps_create(http_req *req, http_resp *resp);
int api_sweeps_list(http_req *req, http_resp *resp);
int api_sweeps_get(http_req *req, http_resp *resp);
int api_sweeps_cancel(http_req *req, http_resp *resp);
int api_fits_create(http_req *req, http_resp *resp);

/* POST /api/v1/kernels: the analytic NNGP or NTK matrix (api_kernels.c; core/kernels). */
int api_kernels_create(http_req *req, http_resp *resp);

/* Metrics of a job (api_metrics.c). */
int api_metrics_get(http_req *req, http_resp *resp);
int api_metrics_csv(http_req *req, http_resp *resp);
/* DELETE and PATCH /api/v1/jobs/{id} (api_jobs.c). */
int api_jobs_delete(http_req *req, http_resp *resp);
int api_jobs_patch(http_req *req, http_resp *resp);
/* GET /api/v1/metrics?jobs=..: several jobs' series in one answer (api_metrics.c). */
int api_metrics_multi(http_req *req, http_resp *resp);

/* Runs that execute elsewhere (api_remote.c, issue 16; README "Remote runs"). */
int api_runs_create(http_req *req, http_resp *resp);     /* POST /api/v1/runs */
int api_runs_resume(http_req *req, http_resp *resp);     /* POST /api/v1/runs/{id}/resume */
int api_jobs_start(http_req *req, http_resp *resp);      /* POST /api/v1/jobs/{id}/start */
int api_jobs_points(http_req *req, http_resp *resp);     /* POST /api/v1/jobs/{id}/points */
int api_jobs_heartbeat(http_req *req, http_resp *resp);  /* POST /api/v1/jobs/{id}/heartbeat */
int api_jobs_artifact_put(http_req *req, http_resp *resp); /* POST .../artifacts/{name} */
int api_jobs_finish(http_req *req, http_resp *resp);     /* POST /api/v1/jobs/{id}/finish */

/* api_executor_slurm_enabled / api_set_executor_slurm_enabled: whether POST /api/v1/jobs
 * accepts "executor": "slurm" (else a 400 naming executor). The Slurm executor (serve
 * --executor slurm, server/slurm.c) turns it on at start-up, before the HTTP threads run. */
int api_executor_slurm_enabled(void);
void api_set_executor_slurm_enabled(int on);

/* Catalogue, health and Prometheus (api_kinds.c). */
int api_kinds_list(http_req *req, http_resp *resp);
int api_healthz(http_req *req, http_resp *resp);
int api_prometheus(http_req *req, http_resp *resp);

/* GET /api/v1/openapi.json: the OpenAPI 3.1 document (server/openapi.c). */
int api_openapi(http_req *req, http_resp *resp);

/* The dashboard files under web/ (api_static.c). */
int api_static(http_req *req, http_resp *resp);
/* api_static_resolve: map a decoded URL path to a regular file under `root` (a realpath):
 * "/" and directories mean their index.html; a segment "..", "." or starting with "." is
 * refused; the realpath must stay under root (no symlink escape). On success *fd (OUT) is an
 * open descriptor and *ctype (OUT) the content type. Errors: TD_ENOTFOUND. */
int api_static_resolve(const char *root, size_t root_len, const char *path, int *fd /* OUT */,
                       const char **ctype /* OUT */);

#endif
