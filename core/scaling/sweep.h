/* sweep.h: sweep specs (grid and random over parameter paths, repeated over seeds) expanded
 * into validated child job specs, and the early-stopping rules (median stopping, ASHA) as pure
 * functions over metric histories. No server state: the server stores and schedules.
 *
 * A sweep spec (the body of POST /api/v1/sweeps):
 *   {"name": "lr-scan",                      optional string, at most 256 bytes
 *    "kind": "train",                        required, a registered kind
 *    "base": {...},                          optional params shared by every child
 *    "axes": {"optimizer.lr": {"log_uniform": [1e-3, 1]},
 *             "model.hidden[0]": {"values": [64, 128, 256]}},
 *    "mode": "grid" | "random",              default "grid"
 *    "samples": 20,                          random mode only (required there)
 *    "seed": 0,                              seed of the random draws (default 0)
 *    "seeds": 3 | [0, 7, 9],                 optional: repeat every point with params.seed
 *    "max_concurrency": 4,                   optional cap on running children (0: none)
 *    "early_stopping": {...},                optional, see td_es_parse
 *    "fit": {"law": ..., "x": ..., "y": ...}} optional, see td_fit_spec_validate (fit.h)
 *
 * Axes:
 *   - A key is a parameter path with optional list indices ("model.hidden[0]"). When the
 *     indexed list is absent from `base`, the kind's schema default is put there first, so
 *     "model.hidden[0]" works on an empty base.
 *   - {"values": [v, ...]}: any JSON values (a number, a string, a list ...), 1..10000 of them.
 *   - {"uniform": [lo, hi]}, {"log_uniform": [lo, hi]} (0 < lo): random mode only. A grid
 *     refuses them (TD_EINVAL, field "axes.<path>"): a grid needs a finite list of values.
 *     A draw for a parameter whose schema type is an integer (or a list of integers) is
 *     rounded to the nearest integer.
 *   - In random mode a "values" axis draws one of its values uniformly.
 * Order: grid points enumerate the axes in the order they appear in the spec, the LAST axis
 * varying fastest (like nested loops). Seeds are the innermost loop: child
 * i = point * n_seeds + seed_index. `seeds: n` means seeds 0..n-1. Random draws are
 * counter-based: point p's value on axis a is a pure function of (seed, p, a).
 */
#ifndef TD_SWEEP_H
#define TD_SWEEP_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "kinds/registry.h"

/* ---------------------------------------------------------------- early stopping */

typedef enum { TD_ES_NONE = 0, TD_ES_MEDIAN = 1, TD_ES_ASHA = 2 } td_es_rule;

/* Parsed early-stopping config. JSON form:
 *   {"rule": "median", "metric": "train_loss", "mode": "min",
 *    "grace_steps": 100, "min_trials": 3}
 *   {"rule": "asha", "metric": "train_loss", "mode": "min",
 *    "min_steps": 100, "eta": 3, "max_steps": 10000}
 * Defaults: mode "min", grace_steps 0, min_trials 3, eta 3, max_steps 0 (no cap). */
typedef struct td_es_config {
  td_es_rule rule;
  char metric[64];  /* metric key the rule reads, e.g. "train_loss" */
  int maximize;     /* 0: lower is better (mode "min"); 1: higher is better ("max") */
  long grace_steps; /* median: no decision while the trial's step < grace_steps */
  long min_trials;  /* median: at least this many OTHER trials must have reached step t */
  long min_steps;   /* asha: r_min, the first rung (steps) */
  long eta;         /* asha: reduction factor; rungs at min_steps * eta^k; top 1/eta go on */
  long max_steps;   /* asha: no rung at or beyond this step (0: unbounded) */
} td_es_config;

/* One trial's history of the metric: steps strictly increasing; borrowed arrays. */
typedef struct td_es_curve {
  const long *step;
  const double *value;
  size_t n;
} td_es_curve;

typedef struct td_es_decision {
  int prune;        /* 1: stop the trial now (job ends as "pruned") */
  long step;        /* the step the decision was made at (the trial's last step) */
  long rung;        /* asha: the rung's step crossed at this point, else -1 */
  char reason[256]; /* why, in words, for the job record (also set when continuing) */
} td_es_decision;

/* td_es_parse: parse and validate `j` (borrowed; NULL or JSON null gives rule NONE) into *cfg
 * (OUT). Errors: TD_EINVAL with field "early_stopping.<key>" for an unknown key, a wrong
 * type or an out-of-range value. */
int td_es_parse(const json_t *j, td_es_config *cfg /* OUT */, td_err *err);

/* td_es_to_json: the config as a new JSON object (JSON null for rule NONE). */
json_t *td_es_to_json(const td_es_config *cfg);

/* td_es_median_decide: the median stopping rule (Golovin et al. 2017, "Google Vizier", sec.
 * 3.2.2): at the trial's latest step t, prune it when its best value so far is strictly
 * worse than the median, over the OTHER trials that have reached step t, of their running
 * averages (the mean of their values at steps <= t). No decision while t < grace_steps or
 * while fewer than min_trials other trials have reached t. NaN counts as the worst value.
 * `others` (n_others curves, borrowed) may include finished and still-running trials.
 * Errors: TD_EINVAL for rule != MEDIAN or an empty/unsorted self curve. */
int td_es_median_decide(const td_es_config *cfg, const td_es_curve *self,
                        const td_es_curve *others, size_t n_others,
                        td_es_decision *out /* OUT */, td_err *err);

/* td_es_asha_decide: asynchronous successive halving (Li et al. 2018, "Massively Parallel
 * Hyperparameter Tuning", ASHA, in its stopping form as used by Ray Tune's AsyncHyperBand).
 * Rungs sit at r_k = min_steps * eta^k (k = 0, 1, ...; only r_k < max_steps when capped).
 * A decision is made only when the trial's LAST point is the first to reach a rung (its
 * previous point was below r_k): its rung value (the value at that first point at or beyond
 * r_k) is ranked among the rung values of every trial that has reached r_k so far, itself
 * included; it continues iff fewer than ceil(n / eta) of them are strictly better, i.e. it is
 * in the top 1/eta (so the first trial at a rung always continues). Otherwise the result is
 * "continue, no rung crossed". Call it after every new point of a running trial.
 * Errors: TD_EINVAL for rule != ASHA or an empty/unsorted self curve. */
int td_es_asha_decide(const td_es_config *cfg, const td_es_curve *self,
                      const td_es_curve *others, size_t n_others,
                      td_es_decision *out /* OUT */, td_err *err);

/* td_es_decide: dispatch on cfg->rule (NONE always continues). Same errors. */
int td_es_decide(const td_es_config *cfg, const td_es_curve *self, const td_es_curve *others,
                 size_t n_others, td_es_decision *out /* OUT */, td_err *err);

/* ---------------------------------------------------------------- sweeps */

typedef struct td_sweep_child {
  json_t *params;      /* validated params with defaults filled (owned by the plan) */
  json_t *axis_values; /* {"optimizer.lr": 0.01, ..., "seed": 0 when seeds are set} (owned) */
  size_t point;        /* index of the point (before replication over seeds) */
  long seed;           /* params.seed set by `seeds`, or -1 when seeds are not given */
  td_estimate est;     /* the kind's resource estimate */
} td_sweep_child;

typedef struct td_sweep_plan {
  char name[257];
  char kind[64];
  int random;             /* 0 grid, 1 random */
  size_t n_axes;
  size_t n_points;        /* grid: product of the value counts; random: samples */
  size_t n_seeds;         /* 1 when seeds are not given */
  size_t n_children;      /* n_points * n_seeds */
  td_sweep_child *children;
  long max_concurrency;   /* 0: no cap */
  td_es_config early_stopping;
  json_t *fit;            /* normalized fit spec, or NULL */
  json_t *spec;           /* the normalized spec (defaults filled, seeds as a list) */
} td_sweep_plan;

/* TD_SWEEP_MAX_CHILDREN: the default cap on n_children. */
#define TD_SWEEP_MAX_CHILDREN 1000

/* td_sweep_expand: parse `spec` (borrowed, any JSON: it may be hostile), expand it into child
 * specs and validate EVERY child with td_kinds_validate (limits `lim`, NULL: defaults) before
 * returning. Nothing is returned unless every child is valid.
 *   - The child count is computed before anything is allocated; more than `max_children`
 *     (0: TD_SWEEP_MAX_CHILDREN) is TD_ELIMIT (field "axes", or "samples"/"seeds"), and so is
 *     a sweep whose children together would hold more than 4e6 JSON values.
 *   - A bad child is TD_EINVAL (or the TD_ELIMIT of the limits) with field "axes.<path>" when
 *     the offending parameter is an axis, "seeds" for the seed, else "base.<path>"; the
 *     message names the point: "point 3 (optimizer.lr=-1): params.optimizer.lr = -1 is out of
 *     range [1e-12, 1000]".
 *   - Malformed specs: TD_EINVAL with the field ("kind", "axes.<path>.values", "seeds[2]",
 *     "early_stopping.eta", "fit.law", ...). TD_ENOMEM on allocation failure.
 * On success *out (OUT) is a new plan owned by the caller (td_sweep_plan_destroy); on error
 * *out is NULL. Thread-safe (no shared state). */
int td_sweep_expand(const json_t *spec, const td_limits *lim, size_t max_children,
                    td_sweep_plan **out /* OUT */, td_err *err);

/* td_sweep_plan_destroy: free the plan and every child. NULL is a no-op. */
void td_sweep_plan_destroy(td_sweep_plan *plan);

#endif
