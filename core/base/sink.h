/* sink.h: the interface through which a running job reports (metrics, artifacts, progress).
 *
 * A kind's run function receives a td_sink and nothing else from its host. The server
 * implements it with a buffered SQLite writer; `tdlab run` with JSON lines on stdout.
 * All callbacks are called from the job's own thread. */
#ifndef TD_SINK_H
#define TD_SINK_H

#include <stddef.h>

typedef struct td_sink {
  void *ctx;
  /* One scalar point. `key` is borrowed (copy it), e.g. "train_loss" or "weight_norm/0".
   * `value` may be NaN or +-Inf; it is stored exactly. Returns 0 or a negative TD_* code. */
  int (*metric)(void *ctx, const char *key, long step, double value);
  /* A named artifact (e.g. "spectrum.json", "params.safetensors"); `data` is borrowed.
   * `content_type` is a MIME type such as "application/json". Replaces an earlier
   * artifact of the same name. Returns 0 or a negative TD_* code. */
  int (*artifact)(void *ctx, const char *name, const char *content_type, const void *data,
                  size_t len);
  /* Progress in the kind's own units (usually steps); total may be 0 if unknown. */
  void (*progress)(void *ctx, long done, long total);
  /* Non-zero once the job has been cancelled, timed out or the host is shutting down.
   * A kind checks it at least once per step and then returns TD_ECANCELLED. */
  int (*should_stop)(void *ctx);
  /* Reads stored checkpoint bytes (a safetensors file) for params.init_from / params.fork:
   * job > 0 names the checkpoint artifact that job wrote at `step`; otherwise
   * `checkpoint_id` names a checkpoint uploaded with POST /api/v1/checkpoints. On success
   * *data (OUT, malloc'ed; the caller frees it) and *len (OUT). Returns 0, TD_ENOTFOUND, or
   * another negative TD_* code. NULL when the host has no store. */
  int (*checkpoint)(void *ctx, long job, long step, long checkpoint_id, void **data,
                    size_t *len);
} td_sink;

/* Convenience wrappers that tolerate NULL callbacks. */
static inline int td_sink_metric(td_sink *s, const char *key, long step, double value) {
  return (s && s->metric) ? s->metric(s->ctx, key, step, value) : 0;
}
static inline int td_sink_artifact(td_sink *s, const char *name, const char *content_type,
                                   const void *data, size_t len) {
  return (s && s->artifact) ? s->artifact(s->ctx, name, content_type, data, len) : 0;
}
static inline void td_sink_progress(td_sink *s, long done, long total) {
  if (s && s->progress) s->progress(s->ctx, done, total);
}
static inline int td_sink_should_stop(td_sink *s) {
  return (s && s->should_stop) ? s->should_stop(s->ctx) : 0;
}

/* td_sink_checkpoint: the host's checkpoint reader; TD_ENOTFOUND when it has none. */
static inline int td_sink_checkpoint(td_sink *s, long job, long step, long checkpoint_id,
                                     void **data, size_t *len) {
  *data = NULL;
  *len = 0;
  return (s && s->checkpoint) ? s->checkpoint(s->ctx, job, step, checkpoint_id, data, len)
                              : -5 /* TD_ENOTFOUND */;
}

#endif
