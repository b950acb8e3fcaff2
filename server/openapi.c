/* openapi.c: GET /api/v1/openapi.json, generated from the route table and the kind schemas.
 *
 * DESIGN. Nothing here lists the routes: the paths, methods, query parameters and auth come
 * from the route table (http_route_at), so a row added to the table appears in the document
 * at once. What the table does not know lives here, keyed by the route's name: a summary and
 * the response shapes (route_docs), and the query parameters' types (query_docs). The shapes
 * of the responses (job, job list, metrics, sweeps, fits, kernels, the error envelope ...)
 * are JSON Schemas written once, in `shapes` below; enums that the server already has in a
 * table (job statuses, error codes, kinds) are filled in from those tables. Each kind's
 * params schema is derived from its td_param table, and the POST /api/v1/jobs body is a oneOf
 * over the kinds with a discriminator on "kind". The document is built per request (a few
 * milliseconds; it is cacheable by the client through the usual ETag-less GET). */
#include "openapi.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http.h"
#include "kinds/registry.h"
#include "store.h"

/* ---------------------------------------------------------------- small JSON helpers */

/* A JSON text written with ' for " (so the shapes below read without escapes), parsed.
 * The texts are constants of this file: a parse failure is a bug, reported to stderr. */
static json_t *J(const char *text) {
  size_t n = strlen(text);
  char *s = malloc(n + 1);
  if (!s) return NULL;
  for (size_t i = 0; i <= n; i++) s[i] = text[i] == '\'' ? '"' : text[i];
  json_error_t je;
  json_t *v = json_loads(s, JSON_DECODE_ANY, &je);
  if (!v) fprintf(stderr, "openapi.c: bad constant JSON at %d: %s\n", je.column, je.text);
  free(s);
  return v;
}

static json_t *ref(const char *kind, const char *name) {
  char buf[200];
  snprintf(buf, sizeof buf, "#/components/%s/%s", kind, name);
  return json_pack("{s:s}", "$ref", buf);
}

/* A JSON array of the strings of a '|'-separated list. */
static json_t *split_enum(const char *list) {
  json_t *a = json_array();
  char buf[512];
  snprintf(buf, sizeof buf, "%s", list);
  for (char *save = NULL, *t = strtok_r(buf, "|", &save); t; t = strtok_r(NULL, "|", &save))
    json_array_append_new(a, json_string(t));
  return a;
}

/* ---------------------------------------------------------------- kind params */

static void set_range(json_t *o, const td_param *p) {
  if (isfinite(p->min)) json_object_set_new(o, "minimum", json_real(p->min));
  if (isfinite(p->max)) json_object_set_new(o, "maximum", json_real(p->max));
}

/* The schema of one leaf. */
static json_t *leaf_schema(const td_param *p) {
  json_t *o = json_object();
  int cap = p->max_len ? p->max_len : 64;
  switch (p->type) {
  case TD_PT_INT:
    json_object_set_new(o, "type", json_string("integer"));
    set_range(o, p);
    break;
  case TD_PT_NUM:
    json_object_set_new(o, "type", json_string("number"));
    set_range(o, p);
    break;
  case TD_PT_BOOL: json_object_set_new(o, "type", json_string("boolean")); break;
  case TD_PT_STR:
    json_object_set_new(o, "type", json_string("string"));
    if (p->enums) json_object_set_new(o, "enum", split_enum(p->enums));
    else json_object_set_new(o, "maxLength", json_integer(256));
    break;
  case TD_PT_INT_LIST:
  case TD_PT_NUM_LIST: {
    json_t *it = json_pack("{s:s}", "type", p->type == TD_PT_INT_LIST ? "integer" : "number");
    set_range(it, p);
    json_object_set_new(o, "type", json_string("array"));
    json_object_set_new(o, "items", it);
    json_object_set_new(o, "minItems", json_integer(1));
    json_object_set_new(o, "maxItems", json_integer(cap));
    break;
  }
  case TD_PT_NUM_MATRIX: {
    json_t *it = json_pack("{s:s}", "type", "number");
    set_range(it, p);
    json_t *row = json_pack("{s:s,s:o,s:i,s:i}", "type", "array", "items", it, "minItems", 1,
                            "maxItems", cap);
    json_object_set_new(o, "type", json_string("array"));
    json_object_set_new(o, "items", row);
    json_object_set_new(o, "minItems", json_integer(1));
    json_object_set_new(o, "maxItems", json_integer(cap));
    break;
  }
  }
  if (p->def) {
    json_t *d = json_loads(p->def, JSON_DECODE_ANY, NULL);
    if (d) json_object_set_new(o, "default", d);
  }
  if (p->doc && *p->doc) json_object_set_new(o, "description", json_string(p->doc));
  return o;
}

static json_t *object_schema(void) {
  return json_pack("{s:s,s:{},s:b}", "type", "object", "properties", "additionalProperties", 0);
}

json_t *openapi_params_schema(const td_param *schema, size_t n) {
  json_t *root = object_schema();
  if (!root) return NULL;
  for (size_t i = 0; i < n; i++) {
    json_t *cur = root;
    char path[256];
    snprintf(path, sizeof path, "%s", schema[i].path);
    char *save = NULL, *seg = strtok_r(path, ".", &save);
    while (seg) {
      char *next = strtok_r(NULL, ".", &save);
      json_t *props = json_object_get(cur, "properties");
      if (!props) break; /* a leaf declared above an object: keep the leaf */
      if (!next) {
        json_object_set_new(props, seg, leaf_schema(&schema[i]));
      } else {
        json_t *child = json_object_get(props, seg);
        if (!child) {
          child = object_schema();
          json_object_set_new(props, seg, child);
        }
        cur = child;
      }
      seg = next;
    }
  }
  return root;
}

/* ---------------------------------------------------------------- response shapes */

/* The shapes of the API's JSON bodies, in one place. Response objects leave
 * additionalProperties open (a field may be added without breaking clients) but list the
 * fields every answer has as required; the error envelope is closed. */
static const struct {
  const char *name;
  const char *schema;
} shapes[] = {
    {"time", "{'type':'string','format':'date-time',"
             "'pattern':'^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?Z$',"
             "'description':'RFC 3339, UTC'}"},
    {"time_or_null", "{'oneOf':[{'$ref':'#/components/schemas/time'},{'type':'null'}]}"},
    {"id", "{'type':'integer','minimum':1,'maximum':9007199254740992}"},
    {"metric_value", "{'description':'a finite number, or one of the strings NaN, Infinity, "
                     "-Infinity for a value that is not finite',"
                     "'oneOf':[{'type':'number'},{'enum':['NaN','Infinity','-Infinity']}]}"},
    {"job_name", "{'type':'string','maxLength':200,'pattern':'^[^\\\\u0000-\\\\u001f\\\\u007f]*$',"
                 "'description':'at most 200 characters (code points) without control characters'}"},
    {"executor", "{'enum':['local','remote','slurm','external'],'description':'where the job "
                 "runs: worker threads, a tdlab run --report elsewhere, Slurm, or an outside "
                 "script (POST /api/v1/runs)'}"},
    {"run_request", "{'type':'object','additionalProperties':false,"
                    "'properties':{'name':{'$ref':'#/components/schemas/job_name'},"
                    "'params':{'type':'object','description':'stored as given'},"
                    "'tags':{'$ref':'#/components/schemas/tags'}}}"},
    {"run_token", "{'type':'object','required':['id','token'],"
                  "'properties':{'id':{'$ref':'#/components/schemas/id'},"
                  "'token':{'type':'string','pattern':'^[0-9a-f]{64}$',"
                  "'description':'the run token for the ingestion endpoints of this job'},"
                  "'heartbeat_timeout_s':{'type':'number'}}}"},
    {"run_start", "{'allOf':[{'$ref':'#/components/schemas/run_token'},{'type':'object',"
                  "'required':['kind','params','attempt'],'properties':{'kind':{'type':'string'},"
                  "'params':{'type':'object'},'attempt':{'type':'integer','minimum':1}}}]}"},
    {"points_request", "{'type':'object','required':['points'],'additionalProperties':false,"
                       "'properties':{'points':{'type':'array','maxItems':10000,'items':{"
                       "'type':'object','required':['key','step','value'],"
                       "'properties':{'key':{'type':'string'},'step':{'type':'integer'},"
                       "'value':{'$ref':'#/components/schemas/metric_value'}}}}}}"},
    {"points_result", "{'type':'object','required':['accepted','duplicates'],"
                      "'properties':{'accepted':{'type':'integer','minimum':0},"
                      "'duplicates':{'type':'integer','minimum':0,"
                      "'description':'(key, step) pairs already stored: kept as they were'}}}"},
    {"heartbeat_request", "{'type':'object','additionalProperties':false,"
                          "'properties':{'progress':{'$ref':'#/components/schemas/progress'}}}"},
    {"heartbeat", "{'type':'object','required':['status','cancel_requested'],"
                  "'properties':{'status':{'const':'running'},'cancel_requested':{'type':'boolean',"
                  "'description':'true: stop, and finish (the job ends cancelled)'},"
                  "'heartbeat_timeout_s':{'type':'number'}}}"},
    {"artifact_stored", "{'type':'object','required':['name','size'],"
                        "'properties':{'name':{'type':'string'},'size':{'type':'integer','minimum':0}}}"},
    {"finish_request", "{'type':'object','required':['status'],'additionalProperties':false,"
                       "'properties':{'status':{'enum':['succeeded','failed','diverged']},"
                       "'summary':{'type':'object'},'error':{'type':'string'}}}"},
    {"finish_result", "{'type':'object','required':['id','status'],"
                      "'properties':{'id':{'$ref':'#/components/schemas/id'},"
                      "'status':{'$ref':'#/components/schemas/job_status'}}}"},
    {"tags", "{'type':'array','maxItems':32,'description':'a repeated tag is kept once',"
             "'items':{'type':'string','pattern':'^[A-Za-z0-9_.:/=+-]{1,64}$'}}"},
    {"progress", "{'type':'object','required':['done','total'],"
                 "'properties':{'done':{'type':'integer','minimum':0},"
                 "'total':{'type':'integer','minimum':0}}}"},
    {"job", "{'type':'object','description':'a job: its params with every default filled in',"
            "'required':['id','kind','name','status','params','tags','priority','attempt',"
            "'sweep_id','progress','cancel_requested','created_at','started_at','finished_at',"
            "'error','summary','parent','children','executor','executor_ref','heartbeat_at'],"
            "'properties':{'id':{'$ref':'#/components/schemas/id'},'kind':{'type':'string'},"
            "'name':{'type':'string'},'status':{'$ref':'#/components/schemas/job_status'},"
            "'params':{'type':'object'},'tags':{'type':'array','items':{'type':'string'}},"
            "'priority':{'type':'integer'},'attempt':{'type':'integer','minimum':1},"
            "'sweep_id':{'type':['integer','null']},"
            "'progress':{'$ref':'#/components/schemas/progress'},"
            "'cancel_requested':{'type':'boolean'},"
            "'created_at':{'$ref':'#/components/schemas/time'},"
            "'started_at':{'$ref':'#/components/schemas/time_or_null'},"
            "'finished_at':{'$ref':'#/components/schemas/time_or_null'},"
            "'error':{'type':['string','null']},'summary':{'type':['object','null']},"
            "'parent':{'oneOf':[{'type':'null'},{'type':'object','required':['job','step'],"
            "'properties':{'job':{'$ref':'#/components/schemas/id'},"
            "'step':{'type':'integer'}}}]},"
            "'children':{'type':'array','items':{'$ref':'#/components/schemas/id'}},"
            "'executor':{'$ref':'#/components/schemas/executor'},"
            "'executor_ref':{'type':['string','null'],'description':'e.g. the Slurm job id'},"
            "'heartbeat_at':{'$ref':'#/components/schemas/time_or_null'}}}"},
    {"job_list", "{'type':'object','required':['jobs','next_cursor'],"
                 "'properties':{'jobs':{'type':'array','items':{'$ref':'#/components/schemas/job'}},"
                 "'next_cursor':{'type':['string','null'],"
                 "'description':'pass as ?cursor= for the next page; null on the last'}}}"},
    {"job_patch", "{'type':'object','additionalProperties':false,'minProperties':1,"
                  "'properties':{'name':{'$ref':'#/components/schemas/job_name'},"
                  "'tags':{'$ref':'#/components/schemas/tags'}}}"},
    {"metric_series", "{'type':'object','required':['step','value','total'],"
                      "'properties':{'step':{'type':'array','items':{'type':'integer'}},"
                      "'value':{'type':'array','items':{'$ref':'#/components/schemas/metric_value'}},"
                      "'time':{'type':'array','items':{'type':['number','null']},"
                      "'description':'with ?time=1: wall time of each point, unix seconds'},"
                      "'total':{'type':'integer','minimum':0,"
                      "'description':'points stored for the key (before downsampling)'}}}"},
    {"metrics", "{'type':'object','required':['job_id','metrics'],"
                "'properties':{'job_id':{'$ref':'#/components/schemas/id'},"
                "'metrics':{'type':'object','additionalProperties':"
                "{'$ref':'#/components/schemas/metric_series'}}}}"},
    {"metrics_multi", "{'type':'object','required':['jobs'],"
                      "'properties':{'jobs':{'type':'object','description':'by job id',"
                      "'additionalProperties':{'$ref':'#/components/schemas/metrics'}}}}"},
    {"artifact_list", "{'type':'object','required':['job_id','artifacts'],"
                      "'properties':{'job_id':{'$ref':'#/components/schemas/id'},"
                      "'artifacts':{'type':'array','items':{'type':'object',"
                      "'required':['name','content_type','size','created_at'],"
                      "'properties':{'name':{'type':'string'},'content_type':{'type':'string'},"
                      "'size':{'type':'integer','minimum':0},"
                      "'created_at':{'$ref':'#/components/schemas/time'}}}}}}"},
    {"kind_list", "{'type':'object','required':['kinds'],'properties':{'kinds':{'type':'array',"
                  "'items':{'type':'object','required':['name','doc','chapter','params'],"
                  "'properties':{'name':{'type':'string'},'doc':{'type':'string'},"
                  "'chapter':{'type':'string'},'params':{'type':'array','items':{'type':'object',"
                  "'required':['path','type','default','doc'],'properties':{'path':{'type':'string'},"
                  "'type':{'type':'string'},'doc':{'type':'string'},'enum':{'type':'array',"
                  "'items':{'type':'string'}},'min':{'type':'number'},'max':{'type':'number'},"
                  "'max_len':{'type':'integer'}}}}}}}}}"},
    {"health", "{'type':'object','required':['status','queue_depth','workers','busy_workers',"
               "'uptime_s'],'properties':{'status':{'const':'ok'},"
               "'queue_depth':{'type':'integer','minimum':0},"
               "'workers':{'type':'integer','minimum':0},"
               "'busy_workers':{'type':'integer','minimum':0},"
               "'uptime_s':{'type':'number','minimum':0}}}"},
    {"checkpoint", "{'type':'object','required':['id','bytes','created_at','tensors'],"
                   "'properties':{'id':{'$ref':'#/components/schemas/id'},"
                   "'bytes':{'type':'integer','minimum':0},"
                   "'created_at':{'$ref':'#/components/schemas/time'},"
                   "'tensors':{'type':'array'}}}"},
    {"sweep_status", "{'enum':['queued','running','finished','cancelled']}"},
    {"sweep", "{'type':'object','required':['id','name','kind','mode','status','created_at',"
              "'finished_at','n_children','max_concurrency','cancel_requested','axes','counts'],"
              "'properties':{'id':{'$ref':'#/components/schemas/id'},'name':{'type':'string'},"
              "'kind':{'type':'string'},'mode':{'type':'string'},"
              "'status':{'$ref':'#/components/schemas/sweep_status'},"
              "'created_at':{'$ref':'#/components/schemas/time'},"
              "'finished_at':{'$ref':'#/components/schemas/time_or_null'},"
              "'n_children':{'type':'integer','minimum':0},"
              "'max_concurrency':{'type':'integer','minimum':0},"
              "'cancel_requested':{'type':'boolean'},'axes':{'type':'object'},"
              "'early_stopping':{'type':['object','null']},"
              "'spec':{'type':'object','description':'the sweep as submitted, defaults filled'},"
              "'counts':{'type':'object','required':['total'],"
              "'additionalProperties':{'type':'integer','minimum':0}},"
              "'fit_spec':{'type':['object','null']},'fit':{'type':['object','null']},"
              "'children':{'type':'array','items':{'type':'object',"
              "'required':['id','idx','name','status','axis_values','params','progress'],"
              "'properties':{'id':{'$ref':'#/components/schemas/id'},"
              "'idx':{'type':'integer','minimum':0},'point':{'type':'integer','minimum':0},"
              "'name':{'type':'string'},'status':{'$ref':'#/components/schemas/job_status'},"
              "'axis_values':{'type':'object'},'params':{'type':'object'},"
              "'progress':{'$ref':'#/components/schemas/progress'},"
              "'started_at':{'$ref':'#/components/schemas/time_or_null'},"
              "'finished_at':{'$ref':'#/components/schemas/time_or_null'},"
              "'error':{'type':['string','null']},'summary':{'type':['object','null']}}}}}}"},
    {"sweep_list", "{'type':'object','required':['sweeps','next_cursor'],"
                   "'properties':{'sweeps':{'type':'array','items':{'$ref':'#/components/schemas/sweep'}},"
                   "'next_cursor':{'type':['string','null']}}}"},
    {"fit_estimate", "{'type':'object','required':['value'],'properties':{'value':{'type':'number'},"
                     "'ci95':{'type':'array','items':{'type':'number'},'minItems':2,'maxItems':2}}}"},
    {"fit", "{'type':'object','required':['law','n_points','params','residuals','curve'],"
            "'properties':{'law':{'type':'string'},'n_points':{'type':'integer','minimum':1},"
            "'objective':{'type':'number'},"
            "'params':{'type':'object','additionalProperties':{'$ref':'#/components/schemas/fit_estimate'}},"
            "'derived':{'type':'object','additionalProperties':{'$ref':'#/components/schemas/fit_estimate'}},"
            "'residuals':{'type':'array','items':{'type':'number'}},'rmse_log':{'type':'number'},"
            "'curve':{'type':'object','required':['x','y'],'properties':{"
            "'x':{'type':'array','items':{'type':'number'}},'y':{'type':'array','items':{'type':'number'}},"
            "'lo':{'type':'array','items':{'type':'number'}},'hi':{'type':'array','items':{'type':'number'}}}},"
            "'bootstrap':{'type':'object'}}}"},
    {"fit_request", "{'type':'object','required':['law','points'],'additionalProperties':false,"
                    "'properties':{'law':{'type':'string','description':'power_offset, chinchilla, "
                    "critical_batch, ...'},'points':{'type':'array','items':{'type':'object'}},"
                    "'bootstrap':{'type':'integer','minimum':0},'seed':{'type':'integer','minimum':0},"
                    "'curve_points':{'type':'integer','minimum':0}}}"},
    {"sweep_request", "{'type':'object','required':['kind'],'additionalProperties':false,"
                      "'properties':{'name':{'$ref':'#/components/schemas/job_name'},"
                      "'kind':{'$ref':'#/components/schemas/kind_name'},"
                      "'base':{'type':'object','description':'params shared by every child'},"
                      "'axes':{'type':'object','description':'param path -> {values} or a range'},"
                      "'mode':{'enum':['grid','random']},'samples':{'type':'integer','minimum':1},"
                      "'seeds':{'type':['integer','array','null']},'seed':{'type':'integer','minimum':0},"
                      "'max_concurrency':{'type':'integer','minimum':0},"
                      "'early_stopping':{'type':['object','null']},'fit':{'type':['object','null']}}}"},
    {"kernel_request", "{'type':'object','additionalProperties':false,"
                       "'properties':{'kernel':{'type':'string','description':'nngp, ntk or empirical_ntk'},"
                       "'activation':{'type':'string'},'depth':{'type':'integer','minimum':1},"
                       "'sigma_w2':{'type':'number'},'sigma_b2':{'type':'number'},"
                       "'x':{'type':'array','items':{'type':'array','items':{'type':'number'}}},"
                       "'x2':{'type':'array','items':{'type':'array','items':{'type':'number'}}},"
                       "'checkpoint':{'$ref':'#/components/schemas/id'},"
                       "'job':{'$ref':'#/components/schemas/id'},'step':{'type':'integer','minimum':0},"
                       "'outputs':{}}}"},
    {"kernel", "{'type':'object','required':['matrix','kernel','shape'],"
               "'properties':{'matrix':{'type':'array','items':{'type':'array',"
               "'items':{'type':'number'}}},'kernel':{'type':'string'},"
               "'activation':{'type':'string'},'depth':{'type':'integer'},"
               "'sigma_w2':{'type':'number'},'sigma_b2':{'type':'number'},"
               "'shape':{'type':'array','items':{'type':'integer','minimum':0},"
               "'minItems':2,'maxItems':2}}}"},
};

/* ---------------------------------------------------------------- per-route descriptors */

/* What the route table does not say, by route name: a summary and the responses, as
 * "STATUS:SHAPE" separated by spaces, SHAPE a component of `shapes`, "@type/sub" for a
 * body that is not JSON (any content of that media type) or "-" for no body. Every route
 * also gets the error envelope for the 4xx statuses that its row implies (see add_errors)
 * and as the default. A route missing here is still documented (generic 2XX). */
static const struct route_doc {
  const char *name;
  const char *summary;
  const char *request; /* component schema of the JSON body, "@type/sub" for a raw body, or
                        * NULL; a trailing '?' makes the body optional */
  const char *responses;
} route_docs[] = {
    {"healthz", "Liveness, queue depth and workers", NULL, "200:health"},
    {"prometheus", "Prometheus metrics (text exposition format)", NULL, "200:@text/plain"},
    {"kinds_list", "The catalogue of experiment kinds with their parameter tables", NULL,
     "200:kind_list"},
    {"jobs_create", "Queue a job (params validated against the kind's schema; defaults filled)",
     "job_create", "201:job 503:error"},
    {"jobs_list", "Jobs, newest first, filtered, one page at a time", NULL, "200:job_list 304:-"},
    {"jobs_get", "One job", NULL, "200:job 304:-"},
    {"jobs_delete", "Delete a finished job with its metrics and artifacts", NULL,
     "204:- 409:error"},
    {"jobs_patch", "Rename or retag a job", "job_patch", "200:job"},
    {"jobs_cancel", "Cancel a job: a queued job at once (200), a running one at its next step (202)",
     NULL, "200:job 202:job 409:error"},
    {"metrics_get", "A job's metric series, columnar, optionally downsampled", NULL,
     "200:metrics 304:-"},
    {"metrics_csv", "A job's metric points as CSV (key,step,value)", NULL, "200:@text/csv"},
    {"metrics_multi", "Several jobs' metric series in one answer", NULL, "200:metrics_multi"},
    {"artifacts_list", "A job's artifacts", NULL, "200:artifact_list"},
    {"artifacts_get", "One artifact, with its stored content type", NULL, "200:@*/*"},
    {"checkpoints_create", "Upload a safetensors checkpoint (raw body)",
     "@application/octet-stream", "201:checkpoint"},
    {"checkpoints_get", "A checkpoint's metadata and tensor list", NULL, "200:checkpoint"},
    {"checkpoints_file", "A checkpoint's safetensors file", NULL,
     "200:@application/octet-stream"},
    {"sweeps_create", "Expand a sweep into child jobs and queue them", "sweep_request",
     "201:sweep 503:error"},
    {"sweeps_list", "Sweeps, newest first", NULL, "200:sweep_list"},
    {"sweeps_get", "One sweep with its counts, fit and (unless ?children=0) children", NULL,
     "200:sweep"},
    {"sweeps_cancel", "Cancel a sweep's queued and running children", NULL,
     "200:sweep 202:sweep 409:error"},
    {"fits_create", "Fit a scaling law to points, with bootstrap intervals", "fit_request",
     "200:fit"},
    {"kernels_create", "An analytic NNGP/NTK matrix or an empirical NTK", "kernel_request",
     "200:kernel"},
    {"openapi", "This document (OpenAPI 3.1, generated from the route table)", NULL,
     "200:@application/json"},
    {"runs_create", "Track a run of an outside script (kind external); answers its run token",
     "run_request", "201:run_token"},
    {"runs_resume", "Resume a crashed (or running) external run with a new run token", NULL,
     "200:run_token 409:error"},
    {"jobs_start", "Start a queued job of executor remote: it is running, with a run token",
     NULL, "200:run_start 409:error"},
    {"jobs_points", "Ingest metric points of a run (idempotent on (key, step))", "points_request",
     "200:points_result 409:error"},
    {"jobs_heartbeat", "A run's heartbeat, optionally with progress; answers cancel_requested",
     "heartbeat_request?", "200:heartbeat 409:error"},
    {"jobs_artifact_put", "Store an artifact of a run (raw body, its Content-Type kept)", "@*/*",
     "201:artifact_stored 409:error"},
    {"jobs_finish", "A run's final status and summary (a repeat of the same finish is 200)",
     "finish_request", "200:finish_result 409:error"},
};

static const struct route_doc *doc_of(const char *name) {
  for (size_t i = 0; i < sizeof route_docs / sizeof route_docs[0]; i++)
    if (!strcmp(route_docs[i].name, name)) return &route_docs[i];
  return NULL;
}

/* Query parameters by name: schema and description. Unknown names get a plain string. */
static const struct {
  const char *name;
  const char *schema;
  const char *doc;
} query_docs[] = {
    {"status", "{'type':'string'}", "one status or several, comma-separated"},
    {"kind", "{'type':'string'}", "a kind name"},
    {"tag", "{'type':'string'}", "jobs carrying this tag"},
    {"sweep", "{'type':'integer','minimum':1}", "children of this sweep"},
    {"limit", "{'type':'integer','minimum':1,'maximum':1000}", "page size"},
    {"cursor", "{'type':'string'}", "next_cursor of the previous page"},
    {"q", "{'type':'string'}", "search in names, tags and params"},
    {"keys", "{'type':'string'}", "metric keys, comma-separated (default: all)"},
    {"max_points", "{'type':'integer','minimum':2}",
     "downsample to at most this many points per key (first, last, bucket min and max kept)"},
    {"since_step", "{'type':'integer'}", "points with step >= since_step"},
    {"time", "{'enum':['0','1']}", "1 adds each point's wall time (unix seconds)"},
    {"jobs", "{'type':'string'}", "job ids, comma-separated"},
    {"children", "{'enum':['0','1','true','false']}", "0 or false leaves the children out"},
};

/* ---------------------------------------------------------------- assembly */

/* "#/components/schemas/x" or a raw media type -> a content map, or NULL for no body. */
static json_t *content_of(const char *shape) {
  if (!strcmp(shape, "-")) return NULL;
  if (shape[0] == '@') return json_pack("{s:{}}", shape + 1);
  return json_pack("{s:{s:o}}", "application/json", "schema", ref("schemas", shape));
}

static void add_response(json_t *responses, const char *status, const char *shape) {
  if (json_object_get(responses, status)) return;
  json_t *r;
  if (!strcmp(shape, "error")) {
    r = ref("responses", "error");
  } else {
    r = json_object();
    char desc[64];
    snprintf(desc, sizeof desc, "%s", !strcmp(shape, "-") ? "no body" : shape[0] == '@' ? shape + 1 : shape);
    json_object_set_new(r, "description", json_string(desc));
    json_t *c = content_of(shape);
    if (c) json_object_set_new(r, "content", c);
  }
  json_object_set_new(responses, status, r);
}

/* The error statuses a row implies: 400 with a body or query parameters, 401 when it needs
 * the token, 404 with a path id, 413 and 415 with a JSON body; and the envelope as default. */
static void add_errors(json_t *responses, const http_route_info *r) {
  if (r->json_body || r->query) add_response(responses, "400", "error");
  if (r->mutates || r->run_token) add_response(responses, "401", "error");
  if (strchr(r->pattern, '{')) add_response(responses, "404", "error");
  if (r->json_body) {
    add_response(responses, "413", "error");
    add_response(responses, "415", "error");
  }
  add_response(responses, "default", "error");
}

static json_t *query_param(const char *name) {
  json_t *p = json_pack("{s:s,s:s,s:b}", "name", name, "in", "query", "required", 0);
  for (size_t i = 0; i < sizeof query_docs / sizeof query_docs[0]; i++)
    if (!strcmp(query_docs[i].name, name)) {
      json_object_set_new(p, "schema", J(query_docs[i].schema));
      json_object_set_new(p, "description", json_string(query_docs[i].doc));
      return p;
    }
  json_object_set_new(p, "schema", json_pack("{s:s}", "type", "string"));
  return p;
}

/* The operation of one route-table row. */
static json_t *operation(const http_route_info *r) {
  const struct route_doc *d = doc_of(r->name);
  json_t *op = json_object();
  json_object_set_new(op, "operationId", json_string(r->name));
  char summary[200];
  if (d) snprintf(summary, sizeof summary, "%s", d->summary);
  else snprintf(summary, sizeof summary, "%s %s", r->method, r->pattern);
  json_object_set_new(op, "summary", json_string(summary));
  /* tag: the path segment after /api/v1 (jobs, sweeps, ...), else "server" */
  char tag[40] = "server";
  if (!strncmp(r->pattern, "/api/v1/", 8)) {
    size_t n = strcspn(r->pattern + 8, "/.");
    if (n && n < sizeof tag) snprintf(tag, sizeof tag, "%.*s", (int)n, r->pattern + 8);
  }
  json_object_set_new(op, "tags", json_pack("[s]", tag));
  json_t *params = json_array();
  for (const char *p = strchr(r->pattern, '{'); p; p = strchr(p + 1, '{')) {
    const char *e = strchr(p, '}');
    if (!e) break;
    char name[40];
    snprintf(name, sizeof name, "%.*s", (int)(e - p - 1), p + 1);
    json_t *schema = !strcmp(name, "id") ? ref("schemas", "id")
                                          : json_pack("{s:s,s:i}", "type", "string", "minLength", 1);
    json_array_append_new(params, json_pack("{s:s,s:s,s:b,s:o}", "name", name, "in", "path",
                                            "required", 1, "schema", schema));
  }
  if (r->query) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", r->query);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
      json_array_append_new(params, query_param(t));
  }
  if (json_array_size(params)) json_object_set_new(op, "parameters", params);
  else json_decref(params);
  if (d && d->request) {
    char rq[64];
    snprintf(rq, sizeof rq, "%s", d->request);
    size_t rn = strlen(rq);
    int optional = rn && rq[rn - 1] == '?';
    if (optional) rq[rn - 1] = '\0';
    json_t *content = rq[0] == '@' ? json_pack("{s:{}}", rq + 1)
                                   : json_pack("{s:{s:o}}", "application/json", "schema",
                                               ref("schemas", rq));
    json_object_set_new(op, "requestBody",
                        json_pack("{s:b,s:o}", "required", !optional, "content", content));
  } else if (!d && r->json_body) {
    json_object_set_new(op, "requestBody",
                        json_pack("{s:b,s:{s:{s:{s:s}}}}", "required", 1, "content",
                                  "application/json", "schema", "type", "object"));
  }
  json_t *responses = json_object();
  if (d) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", d->responses);
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
      char *colon = strchr(t, ':');
      if (!colon) continue;
      *colon = '\0';
      add_response(responses, t, colon + 1);
    }
  } else {
    add_response(responses, "2XX", "@*/*");
  }
  add_errors(responses, r);
  json_object_set_new(op, "responses", responses);
  if (r->mutates) json_object_set_new(op, "security", J("[{'bearer':[]}]"));
  else if (r->run_token) json_object_set_new(op, "security", J("[{'run_token':[]}]"));
  return op;
}

/* The POST /api/v1/jobs body of one kind: kind (const), its params, name, tags, priority. */
static json_t *job_create_variant(const td_kind *k) {
  char pref[120];
  snprintf(pref, sizeof pref, "params.%s", k->name);
  json_t *v = J("{'type':'object','required':['kind'],'additionalProperties':false,"
                "'properties':{'name':{'anyOf':[{'$ref':'#/components/schemas/job_name'},"
                "{'type':'null'}]},"
                "'tags':{'anyOf':[{'$ref':'#/components/schemas/tags'},{'type':'null'}]},"
                "'priority':{'type':['integer','null'],'minimum':-1000,'maximum':1000,"
                "'description':'higher runs first'},"
                "'executor':{'enum':['local','remote','slurm'],'description':'local (worker "
                "threads, the default unless serve --executor slurm), remote (waits for POST "
                "/api/v1/jobs/{id}/start), slurm (only with serve --executor slurm)'}}}");
  json_t *props = json_object_get(v, "properties");
  json_object_set_new(props, "kind", json_pack("{s:s}", "const", k->name));
  json_object_set_new(props, "params",
                      json_pack("{s:[o,{s:s}]}", "anyOf", ref("schemas", pref), "type", "null"));
  json_object_set_new(v, "title", json_string(k->name));
  json_object_set_new(v, "description", json_string(k->doc));
  return v;
}

int openapi_document(json_t **out, td_err *err) {
  *out = NULL;
  json_t *doc = J("{'openapi':'3.1.0','info':{'title':'tdlab','summary':'training-dynamics lab "
                  "server','description':'Generated at request time from the route table and the "
                  "kinds registry. Times are RFC 3339 UTC; a metric value that is not finite is "
                  "the string NaN, Infinity or -Infinity. Errors are {error:{code,message,field}}.'},"
                  "'paths':{},'components':{'schemas':{},'responses':{},'securitySchemes':"
                  "{'bearer':{'type':'http','scheme':'bearer','description':'the lab token "
                  "(serve --token-file): needed by the operations that list this scheme when the "
                  "server has a token, and by every request with --token-required-for-read'},"
                  "'run_token':{'type':'http','scheme':'bearer','description':'the token of one "
                  "run, issued by POST /api/v1/runs, /runs/{id}/resume or /jobs/{id}/start: it "
                  "allows only the ingestion endpoints of its own job'}}}}");
  if (!doc) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  json_object_set_new(json_object_get(doc, "info"), "version", json_string(TDLAB_VERSION));
  json_t *comp = json_object_get(doc, "components");
  json_t *schemas = json_object_get(comp, "schemas");
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    json_object_set_new(schemas, shapes[i].name, J(shapes[i].schema));

  /* enums from the server's own tables */
  json_t *st = json_array(), *codes = json_array(), *kinds = json_array();
  for (int s = 0; store_status_name(s); s++) json_array_append_new(st, json_string(store_status_name(s)));
  json_object_set_new(schemas, "job_status", json_pack("{s:o}", "enum", st));
  for (int e = 0; e < HTTP_E__COUNT; e++) {
    const char *name = http_err_name((http_errcode)e);
    size_t j;
    json_t *x;
    int seen = 0;
    json_array_foreach(codes, j, x) seen |= !strcmp(json_string_value(x), name);
    if (!seen) json_array_append_new(codes, json_string(name));
  }
  json_t *errs = J("{'type':'object','required':['error'],'additionalProperties':false,"
                   "'properties':{'error':{'type':'object','required':['code','message','field'],"
                   "'additionalProperties':false,'properties':{'message':{'type':'string'},"
                   "'field':{'type':['string','null'],'description':'the offending field, e.g. "
                   "params.optimizer.lr'}}}}}");
  json_object_set_new(json_object_get(json_object_get(json_object_get(errs, "properties"), "error"),
                                      "properties"),
                      "code", json_pack("{s:s,s:o}", "type", "string", "enum", codes));
  json_object_set_new(schemas, "error", errs);
  json_object_set_new(json_object_get(comp, "responses"), "error",
                      json_pack("{s:s,s:{s:{s:o}}}", "description", "the error envelope",
                                "content", "application/json", "schema", ref("schemas", "error")));

  /* the kinds: params schemas, and the job body as a oneOf with a discriminator */
  json_t *one_of = json_array(), *mapping = json_object();
  for (size_t i = 0; i < td_kinds_count(); i++) {
    const td_kind *k = td_kinds_at(i);
    char name[120];
    json_array_append_new(kinds, json_string(k->name));
    snprintf(name, sizeof name, "params.%s", k->name);
    json_t *ps = openapi_params_schema(k->params, k->n_params);
    if (ps) json_object_set_new(ps, "title", json_string(name));
    json_object_set_new(schemas, name, ps);
    snprintf(name, sizeof name, "job_create.%s", k->name);
    json_object_set_new(schemas, name, job_create_variant(k));
    json_t *r = ref("schemas", name);
    json_object_set(mapping, k->name, json_object_get(r, "$ref"));
    json_array_append_new(one_of, r);
  }
  json_object_set_new(schemas, "kind_name", json_pack("{s:s,s:o}", "type", "string", "enum", kinds));
  json_object_set_new(schemas, "job_create",
                      json_pack("{s:o,s:{s:s,s:o}}", "oneOf", one_of, "discriminator",
                                "propertyName", "kind", "mapping", mapping));

  /* the paths: one operation per row of the route table */
  json_t *paths = json_object_get(doc, "paths");
  for (size_t i = 0; i < http_route_count(); i++) {
    http_route_info r;
    if (http_route_at(i, &r)) continue;
    json_t *item = json_object_get(paths, r.pattern);
    if (!item) {
      item = json_object();
      json_object_set_new(paths, r.pattern, item);
    }
    char m[12];
    size_t n = 0;
    for (; r.method[n] && n < sizeof m - 1; n++) m[n] = (char)tolower((unsigned char)r.method[n]);
    m[n] = '\0';
    json_object_set_new(item, m, operation(&r));
  }
  *out = doc;
  return 0;
}

int api_openapi(http_req *req, http_resp *resp) {
  (void)req;
  json_t *doc = NULL;
  td_err e;
  td_err_clear(&e);
  if (openapi_document(&doc, &e)) return http_error_td(resp, &e);
  http_buf_json_value(&resp->body, doc);
  json_decref(doc);
  if (resp->body.failed) return http_error(resp, HTTP_E_UNAVAILABLE, NULL, "out of memory");
  resp->cache = "no-cache";
  resp->status = 200;
  return 200;
}
