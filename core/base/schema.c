/* schema.c: validate job params against a kind's td_param table, fill defaults, typed getters. */
#include "base/schema.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TD__PATH_MAX 128

static const char *ptype_name(td_ptype t) {
  switch (t) {
  case TD_PT_INT: return "integer";
  case TD_PT_NUM: return "number";
  case TD_PT_BOOL: return "boolean";
  case TD_PT_STR: return "string";
  case TD_PT_INT_LIST: return "list of integers";
  case TD_PT_NUM_LIST: return "list of numbers";
  case TD_PT_NUM_MATRIX: return "matrix of numbers";
  }
  return "?";
}

/* Is `prefix` (length plen) an object prefix of some schema path, i.e. path starts with
 * prefix + "."? */
static int is_object_prefix(const td_param *schema, size_t n, const char *prefix) {
  size_t plen = strlen(prefix);
  for (size_t i = 0; i < n; i++)
    if (strncmp(schema[i].path, prefix, plen) == 0 && schema[i].path[plen] == '.') return 1;
  return 0;
}

static const td_param *find_leaf(const td_param *schema, size_t n, const char *path) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(schema[i].path, path) == 0) return &schema[i];
  return NULL;
}

static int is_integral(const json_t *v) {
  if (json_is_integer(v)) return 1;
  if (json_is_real(v)) {
    double d = json_real_value(v);
    return isfinite(d) && d == floor(d) && fabs(d) < 9.007199254740992e15;
  }
  return 0;
}

static int enum_has(const char *enums, const char *s) {
  size_t sl = strlen(s);
  const char *p = enums;
  while (*p) {
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (len == sl && strncmp(p, s, len) == 0) return 1;
    if (!bar) break;
    p = bar + 1;
  }
  return 0;
}

static int check_number(const td_param *p, double d, const char *field, td_err *err) {
  if (!isfinite(d)) return td_err_set(err, TD_EINVAL, field, "%s must be a finite number", field);
  if (d < p->min || d > p->max)
    return td_err_set(err, TD_EINVAL, field,
                      p->type == TD_PT_INT ? "%s = %.17g is out of range [%.0f, %.0f]"
                                           : "%s = %.15g is out of range [%.15g, %.15g]",
                      field, d, p->min, p->max);
  return 0;
}

/* Validate one leaf value; on success *out is a new normalized reference. */
static int check_leaf(const td_param *p, const json_t *v, const char *field, json_t **out,
                      td_err *err) {
  *out = NULL;
  switch (p->type) {
  case TD_PT_INT:
    if (!json_is_number(v))
      return td_err_set(err, TD_EINVAL, field, "%s must be an integer", field);
    if (json_is_integer(v)) {
      /* compared and printed as integers: past 2^53 a double would round them alike */
      long long iv = (long long)json_integer_value(v);
      if ((double)iv < p->min || (double)iv > p->max || iv > (long long)p->max ||
          iv < (long long)p->min)
        return td_err_set(err, TD_EINVAL, field, "%s = %lld is out of range [%.0f, %.0f]", field,
                          iv, p->min, p->max);
    } else if (check_number(p, json_number_value(v), field, err))
      return TD_EINVAL;
    if (!is_integral(v))
      return td_err_set(err, TD_EINVAL, field, "%s must be an integer", field);
    *out = json_integer((json_int_t)json_number_value(v));
    break;
  case TD_PT_NUM:
    if (!json_is_number(v)) return td_err_set(err, TD_EINVAL, field, "%s must be a number", field);
    if (check_number(p, json_number_value(v), field, err)) return TD_EINVAL;
    *out = json_real(json_number_value(v));
    break;
  case TD_PT_BOOL:
    if (!json_is_boolean(v)) return td_err_set(err, TD_EINVAL, field, "%s must be a boolean", field);
    *out = json_boolean(json_is_true(v));
    break;
  case TD_PT_STR: {
    if (!json_is_string(v)) return td_err_set(err, TD_EINVAL, field, "%s must be a string", field);
    const char *s = json_string_value(v);
    if (p->enums && !enum_has(p->enums, s))
      return td_err_set(err, TD_EINVAL, field, "%s must be one of %s", field, p->enums);
    if (!p->enums && json_string_length(v) > 256)
      return td_err_set(err, TD_EINVAL, field, "%s is longer than 256 bytes", field);
    *out = json_string(s);
    break;
  }
  case TD_PT_INT_LIST:
  case TD_PT_NUM_LIST: {
    if (!json_is_array(v))
      return td_err_set(err, TD_EINVAL, field, "%s must be a %s", field, ptype_name(p->type));
    size_t len = json_array_size(v), cap = p->max_len ? (size_t)p->max_len : 64;
    if (len < 1) return td_err_set(err, TD_EINVAL, field, "%s must not be empty", field);
    if (len > cap)
      return td_err_set(err, TD_EINVAL, field, "%s has %zu elements, at most %zu allowed", field,
                        len, cap);
    json_t *arr = json_array();
    for (size_t i = 0; i < len; i++) {
      const json_t *e = json_array_get(v, i);
      char ef[TD__PATH_MAX + 64];
      snprintf(ef, sizeof ef, "%s[%zu]", field, i);
      int isint = p->type == TD_PT_INT_LIST;
      if (!json_is_number(e)) {
        json_decref(arr);
        return td_err_set(err, TD_EINVAL, ef, "%s must be %s", ef, isint ? "an integer" : "a number");
      }
      if (check_number(p, json_number_value(e), ef, err)) {
        json_decref(arr);
        return TD_EINVAL;
      }
      if (isint && !is_integral(e)) {
        json_decref(arr);
        return td_err_set(err, TD_EINVAL, ef, "%s must be an integer", ef);
      }
      json_array_append_new(arr, isint ? json_integer((json_int_t)json_number_value(e))
                                       : json_real(json_number_value(e)));
    }
    *out = arr;
    break;
  }
  case TD_PT_NUM_MATRIX: {
    if (!json_is_array(v) || json_array_size(v) < 1)
      return td_err_set(err, TD_EINVAL, field, "%s must be a non-empty list of rows", field);
    size_t rows = json_array_size(v), cap = p->max_len ? (size_t)p->max_len : 64;
    size_t cols = json_is_array(json_array_get(v, 0)) ? json_array_size(json_array_get(v, 0)) : 0;
    if (rows > cap)
      return td_err_set(err, TD_EINVAL, field, "%s has %zu rows, at most %zu allowed", field,
                        rows, cap);
    json_t *mat = json_array();
    for (size_t i = 0; i < rows; i++) {
      const json_t *r = json_array_get(v, i);
      char rf[TD__PATH_MAX + 64];
      snprintf(rf, sizeof rf, "%s[%zu]", field, i);
      if (!json_is_array(r) || json_array_size(r) < 1 || json_array_size(r) != cols ||
          cols > cap) {
        json_decref(mat);
        return td_err_set(err, TD_EINVAL, rf,
                          "%s must be a list of %zu numbers (rows of one length, at most %zu)",
                          rf, cols ? cols : 1, cap);
      }
      json_t *row = json_array();
      json_array_append_new(mat, row);
      for (size_t j = 0; j < cols; j++) {
        const json_t *e = json_array_get(r, j);
        char ef[TD__PATH_MAX + 96];
        snprintf(ef, sizeof ef, "%s[%zu]", rf, j);
        if (!json_is_number(e)) {
          json_decref(mat);
          return td_err_set(err, TD_EINVAL, ef, "%s must be a number", ef);
        }
        if (check_number(p, json_number_value(e), ef, err)) {
          json_decref(mat);
          return TD_EINVAL;
        }
        json_array_append_new(row, json_real(json_number_value(e)));
      }
    }
    *out = mat;
    break;
  }
  }
  return *out ? 0 : td_err_set(err, TD_ENOMEM, field, "out of memory");
}

/* Recursively validate object `obj` whose dotted prefix is `prefix` ("" at the root). */
static int walk(const td_param *schema, size_t n, const json_t *obj, const char *prefix,
                json_t *dst, td_err *err) {
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    char path[TD__PATH_MAX], field[TD__PATH_MAX + 8];
    int w = snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
    snprintf(field, sizeof field, "params.%s", path);
    if (w < 0 || (size_t)w >= sizeof path || strlen(key) == 0)
      return td_err_set(err, TD_EINVAL, "params", "unknown field in params");
    const td_param *leaf = find_leaf(schema, n, path);
    if (leaf) {
      json_t *nv;
      int rc = check_leaf(leaf, v, field, &nv, err);
      if (rc) return rc;
      json_object_set_new(dst, key, nv);
    } else if (is_object_prefix(schema, n, path)) {
      if (!json_is_object(v))
        return td_err_set(err, TD_EINVAL, field, "%s must be an object", field);
      json_t *sub = json_object_get(dst, key);
      if (!sub) {
        sub = json_object();
        json_object_set_new(dst, key, sub);
      }
      int rc = walk(schema, n, v, path, sub, err);
      if (rc) return rc;
    } else {
      return td_err_set(err, TD_EINVAL, field, "unknown field %s", field);
    }
  }
  return 0;
}

int td_schema_validate(const td_param *schema, size_t n, const json_t *params, json_t **filled,
                       td_err *err) {
  *filled = NULL;
  if (params && !json_is_object(params))
    return td_err_set(err, TD_EINVAL, "params", "params must be a JSON object");
  json_t *dst = json_object();
  if (!dst) return td_err_set(err, TD_ENOMEM, "params", "out of memory");
  int rc = params ? walk(schema, n, params, "", dst, err) : 0;
  if (rc) {
    json_decref(dst);
    return rc;
  }
  /* Fill defaults for leaves that were not given. */
  /* The dataset's own default first: it decides whether synthetic-only defaults apply. */
  const td_param *dname = find_leaf(schema, n, "data.name");
  const char *dataset = td_param_str(dst, "data.name", NULL);
  if (!dataset && dname && dname->def) {
    json_t *d = json_loads(dname->def, JSON_DECODE_ANY, NULL);
    int syn = json_is_string(d) && strcmp(json_string_value(d), "synthetic") == 0;
    json_decref(d);
    dataset = syn ? "synthetic" : "other";
  }
  int synthetic = !dataset || strcmp(dataset, "synthetic") == 0;
  for (size_t i = 0; i < n; i++) {
    if (!schema[i].def || td_param_has(dst, schema[i].path)) continue;
    if (!synthetic && schema[i].doc && strncmp(schema[i].doc, "synthetic:", 10) == 0) continue;
    json_error_t jerr;
    json_t *d = json_loads(schema[i].def, JSON_DECODE_ANY, &jerr), *nd = NULL;
    /* A default goes through check_leaf like a given value, so it is normalized the same way
     * (found by tests/fuzz/fuzz_jobspec: the default "1" of a number param stayed a JSON
     * integer while a given 1 became 1.0, so validating filled params changed them). */
    td_err ignored;
    if (d && check_leaf(&schema[i], d, schema[i].path, &nd, &ignored)) nd = NULL;
    json_decref(d);
    if (!nd) {
      json_decref(dst);
      return td_err_set(err, TD_EINTERNAL, schema[i].path, "bad default in schema for %s",
                        schema[i].path);
    }
    td_param_set_path(dst, schema[i].path, nd, NULL);
  }
  *filled = dst;
  return 0;
}

json_t *td_schema_to_json(const td_param *schema, size_t n) {
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++) {
    const td_param *p = &schema[i];
    json_t *o = json_object();
    json_object_set_new(o, "path", json_string(p->path));
    json_object_set_new(o, "type", json_string(ptype_name(p->type)));
    json_t *d = p->def ? json_loads(p->def, JSON_DECODE_ANY, NULL) : NULL;
    json_object_set_new(o, "default", d ? d : json_null());
    if (p->type != TD_PT_BOOL && p->type != TD_PT_STR) {
      json_object_set_new(o, "min", json_real(p->min));
      json_object_set_new(o, "max", json_real(p->max));
    }
    if (p->type == TD_PT_INT_LIST || p->type == TD_PT_NUM_LIST || p->type == TD_PT_NUM_MATRIX)
      json_object_set_new(o, "max_len", json_integer(p->max_len ? p->max_len : 64));
    if (p->enums) {
      json_t *e = json_array();
      char buf[256];
      snprintf(buf, sizeof buf, "%s", p->enums);
      for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save))
        json_array_append_new(e, json_string(tok));
      json_object_set_new(o, "enum", e);
    }
    json_object_set_new(o, "doc", json_string(p->doc ? p->doc : ""));
    json_array_append_new(arr, o);
  }
  return arr;
}

/* Split the next path component: name (up to '.', '[' or end) and optional [index]. Returns a
 * pointer past the component (and past a following '.'), or NULL on a malformed path. */
static const char *next_component(const char *p, char *name, size_t cap, long *index) {
  size_t len = strcspn(p, ".[");
  if (len == 0 || len >= cap) return NULL;
  memcpy(name, p, len);
  name[len] = '\0';
  p += len;
  *index = -1;
  if (*p == '[') {
    char *end;
    long idx = strtol(p + 1, &end, 10);
    if (end == p + 1 || *end != ']' || idx < 0 || idx > 1000000) return NULL;
    *index = idx;
    p = end + 1;
  }
  if (*p == '.') {
    p++;
    if (!*p) return NULL;
  } else if (*p) {
    return NULL;
  }
  return p;
}

const json_t *td_param_get(const json_t *params, const char *path) {
  const json_t *cur = params;
  const char *p = path;
  char name[TD__PATH_MAX];
  long idx;
  while (cur && p && *p) {
    p = next_component(p, name, sizeof name, &idx);
    if (!p || !json_is_object(cur)) return NULL;
    cur = json_object_get(cur, name);
    if (idx >= 0) cur = json_is_array(cur) ? json_array_get(cur, (size_t)idx) : NULL;
  }
  return p ? cur : NULL;
}

double td_param_num(const json_t *params, const char *path, double fallback) {
  const json_t *v = td_param_get(params, path);
  return json_is_number(v) ? json_number_value(v) : fallback;
}

long td_param_int(const json_t *params, const char *path, long fallback) {
  const json_t *v = td_param_get(params, path);
  return json_is_number(v) ? (long)json_number_value(v) : fallback;
}

int td_param_bool(const json_t *params, const char *path, int fallback) {
  const json_t *v = td_param_get(params, path);
  return json_is_boolean(v) ? json_is_true(v) : fallback;
}

const char *td_param_str(const json_t *params, const char *path, const char *fallback) {
  const json_t *v = td_param_get(params, path);
  return json_is_string(v) ? json_string_value(v) : fallback;
}

int td_param_has(const json_t *params, const char *path) {
  return td_param_get(params, path) != NULL;
}

int td_param_set_path(json_t *root, const char *path, json_t *value, td_err *err) {
  json_t *cur = root;
  const char *p = path;
  char name[TD__PATH_MAX];
  long idx;
  if (!json_is_object(root) || !path || !*path) {
    json_decref(value);
    return td_err_set(err, TD_EINVAL, path, "malformed parameter path");
  }
  while (*p) {
    const char *next = next_component(p, name, sizeof name, &idx);
    if (!next || !json_is_object(cur)) {
      json_decref(value);
      return td_err_set(err, TD_EINVAL, path, "malformed parameter path '%s'", path);
    }
    int last = *next == '\0';
    json_t *child = json_object_get(cur, name);
    if (idx >= 0) {
      if (!json_is_array(child) || (size_t)idx >= json_array_size(child)) {
        json_decref(value);
        return td_err_set(err, TD_EINVAL, path, "'%s': index %ld is past the end of the list",
                          path, idx);
      }
      if (last) return json_array_set_new(child, (size_t)idx, value) ? TD_ENOMEM : 0;
      cur = json_array_get(child, (size_t)idx);
    } else {
      if (last) return json_object_set_new(cur, name, value) ? TD_ENOMEM : 0;
      if (!child) {
        child = json_object();
        json_object_set_new(cur, name, child);
      }
      cur = child;
    }
    p = next;
  }
  json_decref(value);
  return td_err_set(err, TD_EINVAL, path, "malformed parameter path");
}
