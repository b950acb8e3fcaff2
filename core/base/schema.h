/* schema.h: per-kind parameter schemas (type, default, range, enum, doc), validation that
 * names the offending field, default filling, and typed getters on validated params. */
#ifndef TD_SCHEMA_H
#define TD_SCHEMA_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"

typedef enum {
  TD_PT_INT,      /* JSON integer (a real with no fractional part is accepted) */
  TD_PT_NUM,      /* JSON number */
  TD_PT_BOOL,     /* JSON true/false */
  TD_PT_STR,      /* JSON string; restricted to `enums` when given */
  TD_PT_INT_LIST, /* JSON array of integers, each in [min, max] */
  TD_PT_NUM_LIST, /* JSON array of numbers, each in [min, max] */
  TD_PT_NUM_MATRIX, /* JSON array of rows, each a non-empty array of numbers in [min, max],
                       all rows of one length; max_len bounds both rows and columns */
} td_ptype;

/* One leaf parameter. Objects are implied by dotted paths: "optimizer.lr" makes
 * `params.optimizer` an object whose only allowed keys are the leaves declared under it. */
typedef struct td_param {
  const char *path;  /* dotted path inside params, e.g. "optimizer.lr" */
  td_ptype type;
  const char *def;   /* default as JSON text ("0.01", "[256]", "\"relu\""), or NULL: optional
                        and left absent when not given (the kind decides what absence means) */
  double min, max;   /* inclusive range for numbers and for list elements */
  const char *enums; /* TD_PT_STR only: "a|b|c"; NULL allows any string up to 256 bytes */
  int max_len;       /* lists: most elements allowed (0 means 64); min length is 1 */
  const char *doc;   /* one line for `tdlab kinds` and GET /api/v1/kinds. A doc that starts
                        with "synthetic:" marks a field of the synthetic dataset: its default
                        is filled in only when data.name is "synthetic" (or absent). */
} td_param;

/* td_schema_validate: check `params` (borrowed; may be NULL, meaning {}) against `schema`
 * (n entries) and return in *filled (OUT, new reference owned by the caller) a deep copy with
 * every default filled in. Errors: TD_EINVAL with err->field set to "params.<path>" for an
 * unknown field, a wrong type, a value out of range, an enum miss, a too-long list or a
 * non-finite number. On error *filled is NULL. */
int td_schema_validate(const td_param *schema, size_t n, const json_t *params,
                       json_t **filled /* OUT */, td_err *err);

/* td_schema_to_json: the schema as a JSON array of {path,type,default,min,max,enum,doc}.
 * Returns a new reference (NULL only on allocation failure). */
json_t *td_schema_to_json(const td_param *schema, size_t n);

/* Typed getters by dotted path on validated params (borrowed). A missing or mistyped value
 * yields `fallback`. List paths may index: "model.hidden[0]". */
const json_t *td_param_get(const json_t *params, const char *path);
double td_param_num(const json_t *params, const char *path, double fallback);
long td_param_int(const json_t *params, const char *path, long fallback);
int td_param_bool(const json_t *params, const char *path, int fallback);
const char *td_param_str(const json_t *params, const char *path, const char *fallback);
/* td_param_has: non-zero when the path is present (after defaults were filled). */
int td_param_has(const json_t *params, const char *path);

/* td_param_set_path: set the value at a dotted path (with optional [i] list indices, e.g.
 * "model.hidden[0]") inside `root`, creating intermediate objects. Takes ownership of
 * `value` (jansson `_new` convention). Errors: TD_EINVAL for a malformed path, an index past
 * the end of an existing list, or a non-object on the way. */
int td_param_set_path(json_t *root, const char *path, json_t *value /* stolen */, td_err *err);

#endif
