/* sweep.c: sweep spec parsing, grid/random expansion with per-child validation, and the
 * median-stopping and ASHA early-stopping rules (pure functions over metric histories). */
#include "scaling/sweep.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scaling/fit.h"
#include "base/rng.h"

#define TD__SWEEP_MAX_AXES 32
#define TD__SWEEP_MAX_VALUES 10000
#define TD__SWEEP_MAX_SEEDS 1000
#define TD__SWEEP_MAX_NODES 4000000.0
#define TD__SWEEP_PATH_MAX 127

/* ================================================================ small helpers */

/* A uniform double in [0, 1) that depends only on (seed, point, axis): the first draw of
 * Philox stream point * TD__SWEEP_MAX_AXES + axis of the sweep's seed (rng.h). */
static double draw_u01(uint64_t seed, uint64_t point, uint64_t axis) {
  td_rng r;
  td_rng_init(&r, seed, point * TD__SWEEP_MAX_AXES + axis);
  return td_rng_uniform(&r);
}

/* An integer from a JSON integer or an integral real, in [lo, hi]. */
static int get_long(const json_t *v, long lo, long hi, long *out) {
  double d;
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi) return -1;
    *out = (long)i;
    return 0;
  }
  if (!json_is_real(v)) return -1;
  d = json_real_value(v);
  if (!isfinite(d) || d != floor(d) || d < (double)lo || d > (double)hi) return -1;
  *out = (long)d;
  return 0;
}

/* Count the JSON values inside v (v itself included), stopping once past `cap`. */
static double json_nodes(const json_t *v, double cap) {
  double n = 1;
  if (json_is_array(v)) {
    for (size_t i = 0; i < json_array_size(v) && n <= cap; i++)
      n += json_nodes(json_array_get(v, i), cap - n);
  } else if (json_is_object(v)) {
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
      n += json_nodes(x, cap - n);
      if (n > cap) break;
    }
  }
  return n;
}

/* Compact text of v for messages (at most cap-1 bytes, "..." when cut). */
static void json_brief(const json_t *v, char *buf, size_t cap) {
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
  if (!s) {
    snprintf(buf, cap, "?");
    return;
  }
  if (strlen(s) >= cap && cap > 4)
    snprintf(buf, cap, "%.*s...", (int)(cap - 4), s);
  else
    snprintf(buf, cap, "%s", s);
  free(s);
}

/* A parameter path: components [A-Za-z0-9_-]+ each with an optional [digits] index,
 * separated by '.'; at most TD__SWEEP_PATH_MAX bytes. */
static int path_ok(const char *p, size_t len) {
  if (len == 0 || len > TD__SWEEP_PATH_MAX || strlen(p) != len) return 0;
  for (;;) {
    size_t n = 0;
    while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') ||
           (p[n] >= '0' && p[n] <= '9') || p[n] == '_' || p[n] == '-')
      n++;
    if (n == 0) return 0;
    p += n;
    if (*p == '[') {
      p++;
      size_t d = 0;
      while (p[d] >= '0' && p[d] <= '9') d++;
      if (d == 0 || d > 6 || p[d] != ']') return 0;
      p += d + 1;
    }
    if (*p == '\0') return 1;
    if (*p != '.') return 0;
    p++;
  }
}

/* The schema leaf of `path` with its list indices removed ("model.hidden[0]" -> leaf
 * "model.hidden"), or NULL. */
static const td_param *schema_leaf(const td_kind *k, const char *path) {
  char buf[TD__SWEEP_PATH_MAX + 1];
  size_t j = 0;
  for (size_t i = 0; path[i] && j < sizeof buf - 1; i++) {
    if (path[i] == '[') {
      while (path[i] && path[i] != ']') i++;
      if (!path[i]) break;
      continue;
    }
    buf[j++] = path[i];
  }
  buf[j] = '\0';
  for (size_t i = 0; i < k->n_params; i++)
    if (strcmp(k->params[i].path, buf) == 0) return &k->params[i];
  return NULL;
}

/* ================================================================ early stopping */

static const char *const es_keys_common[] = {"rule", "metric", "mode"};
static const char *const es_keys_median[] = {"grace_steps", "min_trials"};
static const char *const es_keys_asha[] = {"min_steps", "eta", "max_steps"};

static int key_in(const char *k, const char *const *set, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(k, set[i]) == 0) return 1;
  return 0;
}

int td_es_parse(const json_t *j, td_es_config *cfg, td_err *err) {
  memset(cfg, 0, sizeof *cfg);
  cfg->rule = TD_ES_NONE;
  cfg->min_trials = 3;
  cfg->eta = 3;
  cfg->min_steps = 1;
  snprintf(cfg->metric, sizeof cfg->metric, "loss");
  if (!j || json_is_null(j)) return 0;
  if (!json_is_object(j))
    return td_err_set(err, TD_EINVAL, "early_stopping",
                      "early_stopping must be an object like {\"rule\": \"median\", "
                      "\"metric\": \"train_loss\"} or null");
  const json_t *r = json_object_get(j, "rule");
  if (!json_is_string(r))
    return td_err_set(err, TD_EINVAL, "early_stopping.rule",
                      "early_stopping.rule must be \"median\", \"asha\" or \"none\"");
  const char *rule = json_string_value(r);
  if (strcmp(rule, "median") == 0)
    cfg->rule = TD_ES_MEDIAN;
  else if (strcmp(rule, "asha") == 0)
    cfg->rule = TD_ES_ASHA;
  else if (strcmp(rule, "none") == 0)
    cfg->rule = TD_ES_NONE;
  else
    return td_err_set(err, TD_EINVAL, "early_stopping.rule",
                      "early_stopping.rule must be \"median\", \"asha\" or \"none\"");

  const char *key;
  json_t *v;
  json_object_foreach((json_t *)j, key, v) {
    char field[96];
    snprintf(field, sizeof field, "early_stopping.%.60s", key);
    int common = key_in(key, es_keys_common, 3);
    int med = key_in(key, es_keys_median, 2), asha = key_in(key, es_keys_asha, 3);
    if (!common && !med && !asha)
      return td_err_set(err, TD_EINVAL, field, "unknown field %s", field);
    if ((med && cfg->rule != TD_ES_MEDIAN) || (asha && cfg->rule != TD_ES_ASHA))
      return td_err_set(err, TD_EINVAL, field, "%s only applies to rule \"%s\"", field,
                        med ? "median" : "asha");
    if (strcmp(key, "rule") == 0) continue;
    if (strcmp(key, "metric") == 0) {
      if (!json_is_string(v) || json_string_length(v) < 1 ||
          json_string_length(v) >= sizeof cfg->metric ||
          strlen(json_string_value(v)) != json_string_length(v))
        return td_err_set(err, TD_EINVAL, field, "%s must be a metric key of 1 to %zu bytes",
                          field, sizeof cfg->metric - 1);
      snprintf(cfg->metric, sizeof cfg->metric, "%s", json_string_value(v));
    } else if (strcmp(key, "mode") == 0) {
      const char *m = json_string_value(v);
      if (!m || (strcmp(m, "min") != 0 && strcmp(m, "max") != 0))
        return td_err_set(err, TD_EINVAL, field, "%s must be \"min\" or \"max\"", field);
      cfg->maximize = strcmp(m, "max") == 0;
    } else if (strcmp(key, "grace_steps") == 0) {
      if (get_long(v, 0, 1000000000000L, &cfg->grace_steps))
        return td_err_set(err, TD_EINVAL, field, "%s must be an integer in [0, 1e12]", field);
    } else if (strcmp(key, "min_trials") == 0) {
      if (get_long(v, 1, 1000000, &cfg->min_trials))
        return td_err_set(err, TD_EINVAL, field, "%s must be an integer in [1, 1e6]", field);
    } else if (strcmp(key, "min_steps") == 0) {
      if (get_long(v, 1, 1000000000000L, &cfg->min_steps))
        return td_err_set(err, TD_EINVAL, field, "%s must be an integer in [1, 1e12]", field);
    } else if (strcmp(key, "eta") == 0) {
      if (get_long(v, 2, 1000, &cfg->eta))
        return td_err_set(err, TD_EINVAL, field, "%s must be an integer in [2, 1000]", field);
    } else if (strcmp(key, "max_steps") == 0) {
      if (get_long(v, 0, 1000000000000L, &cfg->max_steps))
        return td_err_set(err, TD_EINVAL, field, "%s must be an integer in [0, 1e12]", field);
    }
  }
  if (cfg->rule != TD_ES_NONE && !json_object_get(j, "metric"))
    return td_err_set(err, TD_EINVAL, "early_stopping.metric",
                      "early_stopping.metric is required (the metric key the rule reads)");
  if (cfg->rule == TD_ES_ASHA && cfg->max_steps > 0 && cfg->max_steps <= cfg->min_steps)
    return td_err_set(err, TD_EINVAL, "early_stopping.max_steps",
                      "early_stopping.max_steps must be above min_steps (the first rung)");
  return 0;
}

json_t *td_es_to_json(const td_es_config *cfg) {
  if (cfg->rule == TD_ES_NONE) return json_null();
  json_t *o = json_object();
  if (!o) return NULL;
  json_object_set_new(o, "rule", json_string(cfg->rule == TD_ES_MEDIAN ? "median" : "asha"));
  json_object_set_new(o, "metric", json_string(cfg->metric));
  json_object_set_new(o, "mode", json_string(cfg->maximize ? "max" : "min"));
  if (cfg->rule == TD_ES_MEDIAN) {
    json_object_set_new(o, "grace_steps", json_integer(cfg->grace_steps));
    json_object_set_new(o, "min_trials", json_integer(cfg->min_trials));
  } else {
    json_object_set_new(o, "min_steps", json_integer(cfg->min_steps));
    json_object_set_new(o, "eta", json_integer(cfg->eta));
    json_object_set_new(o, "max_steps", json_integer(cfg->max_steps));
  }
  return o;
}

/* Score: lower is better whatever the mode; NaN is the worst. */
static double es_score(const td_es_config *cfg, double v) {
  if (isnan(v)) return INFINITY;
  return cfg->maximize ? -v : v;
}

static int es_check_curve(const td_es_curve *c, td_err *err) {
  if (!c || c->n == 0 || !c->step || !c->value)
    return td_err_set(err, TD_EINVAL, "curve", "the trial has no metric points yet");
  for (size_t i = 1; i < c->n; i++)
    if (c->step[i] <= c->step[i - 1])
      return td_err_set(err, TD_EINVAL, "curve", "steps must be strictly increasing");
  return 0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int td_es_median_decide(const td_es_config *cfg, const td_es_curve *self,
                        const td_es_curve *others, size_t n_others, td_es_decision *out,
                        td_err *err) {
  memset(out, 0, sizeof *out);
  out->rung = -1;
  if (cfg->rule != TD_ES_MEDIAN)
    return td_err_set(err, TD_EINVAL, "early_stopping.rule", "not the median rule");
  int rc = es_check_curve(self, err);
  if (rc) return rc;
  long t = self->step[self->n - 1];
  out->step = t;
  if (t < cfg->grace_steps) {
    snprintf(out->reason, sizeof out->reason, "step %ld is within the grace period (%ld steps)",
             t, cfg->grace_steps);
    return 0;
  }
  double best = INFINITY;
  for (size_t i = 0; i < self->n; i++) {
    double s = es_score(cfg, self->value[i]);
    if (s < best) best = s;
  }
  double *avg = n_others ? malloc(n_others * sizeof *avg) : NULL;
  if (n_others && !avg) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  size_t m = 0;
  for (size_t j = 0; j < n_others; j++) {
    const td_es_curve *o = &others[j];
    if (!o->step || !o->value || o->n == 0 || o->step[o->n - 1] < t) continue;
    double sum = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < o->n && o->step[i] <= t; i++, cnt++) sum += es_score(cfg, o->value[i]);
    if (cnt == 0) continue;
    avg[m++] = sum / (double)cnt;
  }
  if ((long)m < cfg->min_trials) {
    snprintf(out->reason, sizeof out->reason,
             "only %zu other trial(s) reached step %ld; the rule needs %ld", m, t,
             cfg->min_trials);
    free(avg);
    return 0;
  }
  qsort(avg, m, sizeof *avg, cmp_double);
  double med = (m % 2) ? avg[m / 2] : 0.5 * (avg[m / 2 - 1] + avg[m / 2]);
  free(avg);
  double sign = cfg->maximize ? -1 : 1;
  if (best > med) {
    out->prune = 1;
    snprintf(out->reason, sizeof out->reason,
             "median rule: best %s %.6g by step %ld is worse than the median %.6g of %zu other "
             "trials' running averages at that step",
             cfg->metric, sign * best, t, sign * med, m);
  } else {
    snprintf(out->reason, sizeof out->reason,
             "median rule: best %s %.6g by step %ld is not worse than the median %.6g of %zu "
             "other trials",
             cfg->metric, sign * best, t, sign * med, m);
  }
  return 0;
}

/* Value of curve c at rung r: the first point at or beyond r. Returns 0 if c never got there. */
static int rung_value(const td_es_curve *c, long r, double *v) {
  if (!c->step || !c->value) return 0;
  for (size_t i = 0; i < c->n; i++)
    if (c->step[i] >= r) {
      *v = c->value[i];
      return 1;
    }
  return 0;
}

int td_es_asha_decide(const td_es_config *cfg, const td_es_curve *self,
                      const td_es_curve *others, size_t n_others, td_es_decision *out,
                      td_err *err) {
  memset(out, 0, sizeof *out);
  out->rung = -1;
  if (cfg->rule != TD_ES_ASHA)
    return td_err_set(err, TD_EINVAL, "early_stopping.rule", "not the asha rule");
  int rc = es_check_curve(self, err);
  if (rc) return rc;
  if (cfg->min_steps < 1 || cfg->eta < 2)
    return td_err_set(err, TD_EINVAL, "early_stopping", "asha needs min_steps >= 1, eta >= 2");
  long last = self->step[self->n - 1];
  long prev = self->n > 1 ? self->step[self->n - 2] : LONG_MIN;
  out->step = last;
  double sign = cfg->maximize ? -1 : 1;
  double mine = es_score(cfg, self->value[self->n - 1]);
  /* Every rung crossed by the last point, lowest first. */
  for (long r = cfg->min_steps; r <= last; ) {
    if (cfg->max_steps > 0 && r >= cfg->max_steps) break;
    if (r > prev) {
      size_t n = 1, better = 0;
      for (size_t j = 0; j < n_others; j++) {
        double v;
        if (!rung_value(&others[j], r, &v)) continue;
        n++;
        if (es_score(cfg, v) < mine) better++;
      }
      size_t keep = (n + (size_t)cfg->eta - 1) / (size_t)cfg->eta; /* ceil(n / eta) */
      out->rung = r;
      if (better >= keep) {
        out->prune = 1;
        snprintf(out->reason, sizeof out->reason,
                 "asha: at rung %ld, %s %.6g ranks %zu of %zu trials that reached it; only the "
                 "top %zu (1/%ld) continue",
                 r, cfg->metric, sign * mine, better + 1, n, keep, cfg->eta);
        return 0;
      }
      snprintf(out->reason, sizeof out->reason,
               "asha: at rung %ld, %s %.6g ranks %zu of %zu; in the top %zu (1/%ld), continues",
               r, cfg->metric, sign * mine, better + 1, n, keep, cfg->eta);
    }
    if (r > LONG_MAX / cfg->eta) break;
    r *= cfg->eta;
  }
  if (out->rung < 0) snprintf(out->reason, sizeof out->reason, "asha: no rung crossed at step %ld", last);
  return 0;
}

int td_es_decide(const td_es_config *cfg, const td_es_curve *self, const td_es_curve *others,
                 size_t n_others, td_es_decision *out, td_err *err) {
  switch (cfg->rule) {
  case TD_ES_MEDIAN: return td_es_median_decide(cfg, self, others, n_others, out, err);
  case TD_ES_ASHA: return td_es_asha_decide(cfg, self, others, n_others, out, err);
  default:
    memset(out, 0, sizeof *out);
    out->rung = -1;
    if (self && self->n && self->step) out->step = self->step[self->n - 1];
    snprintf(out->reason, sizeof out->reason, "no early stopping");
    return 0;
  }
}

/* ================================================================ sweep expansion */

enum { AX_VALUES, AX_UNIFORM, AX_LOG_UNIFORM };

typedef struct sw_axis {
  const char *path;     /* borrowed from the spec's key */
  int type;             /* AX_* */
  const json_t *values; /* AX_VALUES: borrowed array */
  size_t n_values;
  double lo, hi;
  int integer;          /* the schema leaf is an integer (list): round draws */
  double max_nodes;     /* JSON values in the largest of its values */
} sw_axis;

static const char *const sweep_keys[] = {"name",  "kind",  "base",  "axes",
                                         "mode",  "samples", "seeds", "seed",
                                         "max_concurrency", "early_stopping", "fit"};

/* Parse one axis spec (the value under axes[path]). */
static int parse_axis(const td_kind *k, const char *path, const json_t *v, int random,
                      sw_axis *ax, td_err *err) {
  char field[TD__SWEEP_PATH_MAX + 32];
  snprintf(field, sizeof field, "axes.%s", path);
  memset(ax, 0, sizeof *ax);
  ax->path = path;
  if (!json_is_object(v) || json_object_size(v) != 1)
    return td_err_set(err, TD_EINVAL, field,
                      "%s must be an object with exactly one of \"values\", \"uniform\", "
                      "\"log_uniform\"",
                      field);
  const td_param *leaf = schema_leaf(k, path);
  ax->integer = leaf && (leaf->type == TD_PT_INT || leaf->type == TD_PT_INT_LIST);
  const json_t *vals = json_object_get(v, "values");
  if (vals) {
    size_t n = json_array_size(vals);
    if (!json_is_array(vals) || n == 0 || n > TD__SWEEP_MAX_VALUES)
      return td_err_set(err, TD_EINVAL, field, "%s.values must be a list of 1 to %d values",
                        field, TD__SWEEP_MAX_VALUES);
    ax->type = AX_VALUES;
    ax->values = vals;
    ax->n_values = n;
    for (size_t i = 0; i < n; i++) {
      double nn = json_nodes(json_array_get(vals, i), TD__SWEEP_MAX_NODES);
      if (nn > ax->max_nodes) ax->max_nodes = nn;
    }
    return 0;
  }
  int logu = json_object_get(v, "log_uniform") != NULL;
  const json_t *range = logu ? json_object_get(v, "log_uniform") : json_object_get(v, "uniform");
  if (!range)
    return td_err_set(err, TD_EINVAL, field,
                      "%s must have one of \"values\", \"uniform\", \"log_uniform\"", field);
  const char *name = logu ? "log_uniform" : "uniform";
  if (!random)
    return td_err_set(err, TD_EINVAL, field,
                      "%s: a grid needs {\"values\": [...]}; %s needs mode \"random\"", field,
                      name);
  if (!json_is_array(range) || json_array_size(range) != 2 ||
      !json_is_number(json_array_get(range, 0)) || !json_is_number(json_array_get(range, 1)))
    return td_err_set(err, TD_EINVAL, field, "%s.%s must be [lo, hi], two numbers", field, name);
  ax->lo = json_number_value(json_array_get(range, 0));
  ax->hi = json_number_value(json_array_get(range, 1));
  if (!isfinite(ax->lo) || !isfinite(ax->hi) || ax->lo > ax->hi || fabs(ax->lo) > 1e300 ||
      fabs(ax->hi) > 1e300)
    return td_err_set(err, TD_EINVAL, field, "%s.%s needs finite lo <= hi", field, name);
  if (logu && !(ax->lo > 0))
    return td_err_set(err, TD_EINVAL, field, "%s.log_uniform needs 0 < lo <= hi", field);
  ax->type = logu ? AX_LOG_UNIFORM : AX_UNIFORM;
  ax->max_nodes = 1;
  return 0;
}

/* The value of axis a at point p (a new reference). Grid: idx is the value index. */
static json_t *axis_value(const sw_axis *ax, size_t a, int random, uint64_t seed, size_t p,
                          size_t idx) {
  if (ax->type == AX_VALUES) {
    if (random) {
      double u = draw_u01(seed, p, a);
      idx = (size_t)(u * (double)ax->n_values);
      if (idx >= ax->n_values) idx = ax->n_values - 1;
    }
    return json_deep_copy(json_array_get(ax->values, idx));
  }
  double u = draw_u01(seed, p, a), x;
  if (ax->type == AX_UNIFORM)
    x = ax->lo + (ax->hi - ax->lo) * u;
  else
    x = exp(log(ax->lo) + (log(ax->hi) - log(ax->lo)) * u);
  if (x < ax->lo) x = ax->lo; /* guard rounding in exp/log */
  if (x > ax->hi) x = ax->hi;
  if (ax->integer && fabs(x) < 9e15) return json_integer((json_int_t)llround(x));
  return json_real(x);
}

/* Put the schema default of an indexed list in place when `params` lacks it, so that
 * "model.hidden[0]" can be set on an empty base. */
static void ensure_list(const td_kind *k, json_t *params, const char *path) {
  const char *br = strchr(path, '[');
  if (!br) return;
  char list[TD__SWEEP_PATH_MAX + 1];
  size_t n = (size_t)(br - path);
  if (n == 0 || n > TD__SWEEP_PATH_MAX || strchr(br + 1, '[')) return;
  memcpy(list, path, n);
  list[n] = '\0';
  if (td_param_get(params, list)) return;
  const td_param *leaf = schema_leaf(k, list);
  if (!leaf || !leaf->def || strcmp(leaf->path, list) != 0) return;
  json_t *d = json_loads(leaf->def, JSON_DECODE_ANY, NULL);
  if (json_is_array(d))
    td_param_set_path(params, list, d, NULL);
  else
    json_decref(d);
}

/* Map the field of a child's validation error to the spec: "axes.<path>", "seeds" or
 * "base.<path>". */
static void map_field(const char *vfield, const sw_axis *axes, size_t n_axes, int has_seeds,
                      char *out, size_t cap) {
  const char *f = vfield;
  if (strncmp(f, "params.", 7) != 0) { /* e.g. "params" for the memory cap: the point's doing */
    snprintf(out, cap, "%s", n_axes ? "axes" : "base");
    return;
  }
  f += 7;
  for (size_t a = 0; a < n_axes; a++) {
    const char *p = axes[a].path;
    size_t lp = strlen(p), lf = strlen(f);
    int hit = strcmp(p, f) == 0 ||                                       /* exact */
              (lf > lp && strncmp(f, p, lp) == 0 && (f[lp] == '.' || f[lp] == '[')) || /* inside */
              (lp > lf && strncmp(p, f, lf) == 0 && (p[lf] == '.' || p[lf] == '['));   /* around */
    if (hit) {
      snprintf(out, cap, "axes.%.127s", p);
      return;
    }
  }
  if (has_seeds && strcmp(f, "seed") == 0) {
    snprintf(out, cap, "seeds");
    return;
  }
  snprintf(out, cap, "base.%.120s", f);
}

void td_sweep_plan_destroy(td_sweep_plan *plan) {
  if (!plan) return;
  for (size_t i = 0; plan->children && i < plan->n_children; i++) {
    json_decref(plan->children[i].params);
    json_decref(plan->children[i].axis_values);
  }
  free(plan->children);
  json_decref(plan->fit);
  json_decref(plan->spec);
  free(plan);
}

int td_sweep_expand(const json_t *spec, const td_limits *lim, size_t max_children,
                    td_sweep_plan **out, td_err *err) {
  *out = NULL;
  if (max_children == 0) max_children = TD_SWEEP_MAX_CHILDREN;
  if (!json_is_object(spec))
    return td_err_set(err, TD_EINVAL, "", "a sweep must be a JSON object");
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)spec, key, v) {
    if (!key_in(key, sweep_keys, sizeof sweep_keys / sizeof sweep_keys[0]))
      return td_err_set(err, TD_EINVAL, key, "unknown field '%.100s' in the sweep", key);
  }

  /* name, kind, base, mode */
  const json_t *jname = json_object_get(spec, "name");
  if (jname && !json_is_null(jname) &&
      (!json_is_string(jname) || json_string_length(jname) > 256 ||
       strlen(json_string_value(jname)) != json_string_length(jname)))
    return td_err_set(err, TD_EINVAL, "name", "name must be a string of at most 256 bytes");
  const json_t *jkind = json_object_get(spec, "kind");
  if (!json_is_string(jkind))
    return td_err_set(err, TD_EINVAL, "kind", "kind is required: the name of an experiment kind");
  const td_kind *k = td_kinds_find(json_string_value(jkind));
  if (!k)
    return td_err_set(err, TD_EINVAL, "kind", "unknown kind '%.64s'", json_string_value(jkind));
  const json_t *base = json_object_get(spec, "base");
  if (base && !json_is_null(base) && !json_is_object(base))
    return td_err_set(err, TD_EINVAL, "base", "base must be an object of params");
  if (json_is_null(base)) base = NULL;
  const json_t *jmode = json_object_get(spec, "mode");
  int random = 0;
  if (jmode) {
    const char *m = json_string_value(jmode);
    if (!m || (strcmp(m, "grid") != 0 && strcmp(m, "random") != 0))
      return td_err_set(err, TD_EINVAL, "mode", "mode must be \"grid\" or \"random\"");
    random = strcmp(m, "random") == 0;
  }

  /* samples, seed, seeds, max_concurrency */
  long samples = 0, sseed = 0, maxc = 0;
  const json_t *jsamples = json_object_get(spec, "samples");
  if (random) {
    if (!jsamples || get_long(jsamples, 1, 1000000000L, &samples))
      return td_err_set(err, TD_EINVAL, "samples",
                        "random mode needs samples: an integer number of points >= 1");
  } else if (jsamples && !json_is_null(jsamples)) {
    return td_err_set(err, TD_EINVAL, "samples",
                      "samples only applies to mode \"random\" (a grid takes every value)");
  }
  const json_t *jseed = json_object_get(spec, "seed");
  if (jseed && get_long(jseed, 0, LONG_MAX, &sseed))
    return td_err_set(err, TD_EINVAL, "seed", "seed must be an integer >= 0");
  const json_t *jmaxc = json_object_get(spec, "max_concurrency");
  if (jmaxc && !json_is_null(jmaxc) && get_long(jmaxc, 0, 1000000, &maxc))
    return td_err_set(err, TD_EINVAL, "max_concurrency",
                      "max_concurrency must be an integer in [0, 1e6] (0: no cap)");
  const json_t *jseeds = json_object_get(spec, "seeds");
  long seed_list[TD__SWEEP_MAX_SEEDS];
  size_t n_seeds = 1;
  int has_seeds = 0;
  if (jseeds && !json_is_null(jseeds)) {
    has_seeds = 1;
    if (json_is_array(jseeds)) {
      n_seeds = json_array_size(jseeds);
      if (n_seeds == 0 || n_seeds > TD__SWEEP_MAX_SEEDS)
        return td_err_set(err, TD_EINVAL, "seeds", "seeds must list 1 to %d seeds",
                          TD__SWEEP_MAX_SEEDS);
      for (size_t i = 0; i < n_seeds; i++) {
        char f[32];
        snprintf(f, sizeof f, "seeds[%zu]", i);
        if (get_long(json_array_get(jseeds, i), 0, 9007199254740991L, &seed_list[i]))
          return td_err_set(err, TD_EINVAL, f, "%s must be an integer in [0, 2^53)", f);
        for (size_t j = 0; j < i; j++)
          if (seed_list[j] == seed_list[i])
            return td_err_set(err, TD_EINVAL, f, "%s repeats seeds[%zu]", f, j);
      }
    } else {
      long ns;
      if (get_long(jseeds, 1, TD__SWEEP_MAX_SEEDS, &ns))
        return td_err_set(err, TD_EINVAL, "seeds",
                          "seeds must be a count in [1, %d] or a list of integers",
                          TD__SWEEP_MAX_SEEDS);
      n_seeds = (size_t)ns;
      for (size_t i = 0; i < n_seeds; i++) seed_list[i] = (long)i;
    }
  }

  /* axes: parse, then count children before allocating anything per child */
  const json_t *jaxes = json_object_get(spec, "axes");
  if (jaxes && !json_is_null(jaxes) && !json_is_object(jaxes))
    return td_err_set(err, TD_EINVAL, "axes",
                      "axes must be an object mapping parameter paths to value specs");
  size_t n_axes = json_is_object(jaxes) ? json_object_size(jaxes) : 0;
  if (n_axes > TD__SWEEP_MAX_AXES)
    return td_err_set(err, TD_EINVAL, "axes", "at most %d axes", TD__SWEEP_MAX_AXES);
  sw_axis axes[TD__SWEEP_MAX_AXES];
  double n_points = 1;
  size_t a = 0;
  if (n_axes) {
    json_object_foreach((json_t *)jaxes, key, v) {
      char field[TD__SWEEP_PATH_MAX + 32];
      snprintf(field, sizeof field, "axes.%.*s", TD__SWEEP_PATH_MAX, key);
      if (!path_ok(key, strlen(key)))
        return td_err_set(err, TD_EINVAL, field,
                          "%s: not a parameter path (like optimizer.lr or model.hidden[0])",
                          field);
      if (has_seeds && strcmp(key, "seed") == 0)
        return td_err_set(err, TD_EINVAL, "axes.seed",
                          "axes.seed conflicts with seeds: use one or the other");
      int rc = parse_axis(k, key, v, random, &axes[a], err);
      if (rc) return rc;
      if (!random) n_points *= (double)axes[a].n_values;
      a++;
    }
  }
  if (random) n_points = (double)samples;
  double n_children = n_points * (double)n_seeds;
  if (n_children > (double)max_children)
    return td_err_set(err, TD_ELIMIT, random ? "samples" : "axes",
                      "the sweep would have %.0f children (%.0f points x %zu seeds), above the "
                      "cap of %zu",
                      n_children, n_points, n_seeds, max_children);
  double per_child = json_nodes(base, TD__SWEEP_MAX_NODES) + (double)k->n_params + 2;
  for (size_t i = 0; i < n_axes; i++) per_child += axes[i].max_nodes;
  if (per_child * n_children > TD__SWEEP_MAX_NODES)
    return td_err_set(err, TD_ELIMIT, "base",
                      "the sweep's children would hold about %.3g JSON values, above the cap of "
                      "%.3g; use fewer children or smaller params",
                      per_child * n_children, TD__SWEEP_MAX_NODES);

  /* early_stopping, fit */
  td_es_config es;
  int rc = td_es_parse(json_object_get(spec, "early_stopping"), &es, err);
  if (rc) return rc;
  json_t *fit = NULL;
  const json_t *jfit = json_object_get(spec, "fit");
  if (jfit && !json_is_null(jfit) && (rc = td_fit_spec_validate(jfit, &fit, err))) return rc;

  /* Expand and validate every child. */
  td_sweep_plan *plan = calloc(1, sizeof *plan);
  size_t nc = (size_t)n_children;
  if (!plan || !(plan->children = calloc(nc ? nc : 1, sizeof *plan->children))) {
    free(plan);
    json_decref(fit);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  plan->fit = fit;
  snprintf(plan->name, sizeof plan->name, "%s", json_is_string(jname) ? json_string_value(jname) : "");
  snprintf(plan->kind, sizeof plan->kind, "%s", k->name);
  plan->random = random;
  plan->n_axes = n_axes;
  plan->n_points = (size_t)n_points;
  plan->n_seeds = n_seeds;
  plan->max_concurrency = maxc;
  plan->early_stopping = es;
  size_t np = (size_t)n_points;
  for (size_t p = 0; p < np; p++) {
    /* grid index of each axis: mixed radix, the last axis fastest */
    size_t idx[TD__SWEEP_MAX_AXES], rest = p;
    for (size_t i = n_axes; i-- > 0;) {
      if (random) {
        idx[i] = 0;
        continue;
      }
      idx[i] = rest % axes[i].n_values;
      rest /= axes[i].n_values;
    }
    for (size_t s = 0; s < n_seeds; s++) {
      size_t c = p * n_seeds + s;
      td_sweep_child *ch = &plan->children[c];
      ch->point = p;
      ch->seed = has_seeds ? seed_list[s] : -1;
      json_t *params = base ? json_deep_copy(base) : json_object();
      json_t *av = json_object();
      char desc[200] = "";
      size_t dl = 0;
      td_err e;
      td_err_clear(&e);
      int crc = (!params || !av) ? TD_ENOMEM : 0;
      for (size_t i = 0; !crc && i < n_axes; i++) {
        json_t *val = axis_value(&axes[i], i, random, (uint64_t)sseed, p, idx[i]);
        if (!val) {
          crc = TD_ENOMEM;
          break;
        }
        char vb[48];
        json_brief(val, vb, sizeof vb);
        if (dl < sizeof desc)
          dl += (size_t)snprintf(desc + dl, sizeof desc - dl, "%s%s=%s", i ? ", " : "",
                                 axes[i].path, vb);
        json_object_set(av, axes[i].path, val);
        ensure_list(k, params, axes[i].path);
        crc = td_param_set_path(params, axes[i].path, val, &e); /* steals val */
        if (crc) snprintf(e.field, sizeof e.field, "params.%s", axes[i].path);
      }
      if (!crc && has_seeds) {
        json_object_set_new(av, "seed", json_integer(seed_list[s]));
        if (dl < sizeof desc)
          dl += (size_t)snprintf(desc + dl, sizeof desc - dl, "%sseed=%ld", n_axes ? ", " : "",
                                 seed_list[s]);
        crc = td_param_set_path(params, "seed", json_integer(seed_list[s]), &e);
      }
      json_t *filled = NULL;
      if (!crc) crc = td_kinds_validate(k->name, params, lim, &filled, &ch->est, &e);
      json_decref(params);
      if (crc) {
        json_decref(av);
        td_sweep_plan_destroy(plan);
        if (crc == TD_ENOMEM) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
        char field[160];
        map_field(e.field, axes, n_axes, has_seeds, field, sizeof field);
        return td_err_set(err, crc == TD_ENOTFOUND ? TD_EINVAL : crc, field, "point %zu (%s): %s",
                          p, desc, e.msg);
      }
      ch->params = filled;
      ch->axis_values = av;
      plan->n_children = c + 1;
    }
  }

  /* The normalized spec, for the sweep's record. */
  json_t *ns = json_object();
  json_t *seeds_json = has_seeds ? json_array() : json_null();
  for (size_t i = 0; has_seeds && i < n_seeds; i++)
    json_array_append_new(seeds_json, json_integer(seed_list[i]));
  json_object_set_new(ns, "name", json_string(plan->name));
  json_object_set_new(ns, "kind", json_string(k->name));
  json_object_set_new(ns, "base", base ? json_deep_copy(base) : json_object());
  json_object_set_new(ns, "axes", json_is_object(jaxes) ? json_deep_copy(jaxes) : json_object());
  json_object_set_new(ns, "mode", json_string(random ? "random" : "grid"));
  if (random) json_object_set_new(ns, "samples", json_integer(samples));
  json_object_set_new(ns, "seed", json_integer(sseed));
  json_object_set_new(ns, "seeds", seeds_json);
  json_object_set_new(ns, "max_concurrency", json_integer(maxc));
  json_object_set_new(ns, "early_stopping", td_es_to_json(&es));
  json_object_set_new(ns, "fit", fit ? json_incref(fit) : json_null());
  plan->spec = ns;
  *out = plan;
  return 0;
}
