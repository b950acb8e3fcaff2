/* registry.h: the catalogue of experiment kinds; each kind lives in core/kinds/<name>.c. */
#ifndef TD_KINDS_REGISTRY_H
#define TD_KINDS_REGISTRY_H

#include <jansson.h>
#include <stddef.h>

#include "base/err.h"
#include "base/schema.h"
#include "base/sink.h"

/* Resource estimate of one job, computed from its filled params before queueing. */
typedef struct td_estimate {
  double bytes;    /* peak resident memory, bytes (order of magnitude is what matters) */
  double n_params; /* model parameters (0 if the kind has no model) */
} td_estimate;

/* Caps that the host configures; a job whose estimate exceeds one is refused. */
typedef struct td_limits {
  double max_bytes;  /* default 4 GiB */
  double max_params; /* default 50e6 */
} td_limits;

typedef struct td_kind {
  const char *name;    /* "train", "linreg", ... */
  const char *doc;     /* one line */
  const char *chapter; /* course chapters, e.g. "1" or "4,5" */
  const td_param *params;
  size_t n_params;
  /* Optional: cross-field checks and the resource estimate on filled params (borrowed).
   * Returns 0, or TD_EINVAL with err->field set. NULL means "no extra checks, tiny job". */
  int (*check)(const json_t *params, td_estimate *est /* OUT */, td_err *err);
  /* Optional, run before check: writes defaults that depend on other fields (rows whose
   * schema default is NULL, e.g. optimizer.weight_decay: 0.01 for adamw, 0 otherwise;
   * td_optim_fill_params) into the filled params (modified in place), so that the stored
   * params show the value the job runs with. Returns 0 or a TD_* error with err->field. */
  int (*fill)(json_t *params, td_err *err);
  /* Runs the job. Returns 0 (succeeded), TD_EDIVERGED (diverged: *summary still set and
   * holds "diverged_step"), TD_ECANCELLED (sink->should_stop fired), or another negative
   * code (failed, err->msg says why). *summary (OUT) is a new reference or NULL. */
  int (*run)(const json_t *params, td_sink *sink, json_t **summary /* OUT */, td_err *err);
} td_kind;

/* The kinds, each defined in its own file. */
extern const td_kind td_kind_train;
extern const td_kind td_kind_linreg;
extern const td_kind td_kind_nqm;
extern const td_kind td_kind_curvature;
extern const td_kind td_kind_eos;
extern const td_kind td_kind_taylor;
extern const td_kind td_kind_natgrad_invariance;
extern const td_kind td_kind_ntk;
extern const td_kind td_kind_lazy;
extern const td_kind td_kind_kernel_regression;
extern const td_kind td_kind_early_stopping;
extern const td_kind td_kind_max_margin;
extern const td_kind td_kind_langevin;
extern const td_kind td_kind_laplace;
extern const td_kind td_kind_igr;
extern const td_kind td_kind_blr;
extern const td_kind td_kind_hypergradient;
extern const td_kind td_kind_influence;
extern const td_kind td_kind_short_horizon;
extern const td_kind td_kind_hyperopt;
extern const td_kind td_kind_momentum;
extern const td_kind td_kind_game;

/* td_kinds_count / td_kinds_at: iterate the catalogue (i < count). */
size_t td_kinds_count(void);
const td_kind *td_kinds_at(size_t i);
/* td_kinds_find: the kind named `name`, or NULL. */
const td_kind *td_kinds_find(const char *name);

/* td_kinds_default_limits: 4 GiB and 50e6 parameters. */
td_limits td_kinds_default_limits(void);

/* td_kinds_validate: find the kind, validate `params` against its schema, fill defaults, run
 * its check and compare the estimate with `lim` (NULL: defaults). On success *filled (OUT,
 * new reference) holds the full params and *est (OUT, may be NULL) the estimate.
 * Errors: TD_ENOTFOUND (field "kind") for an unknown kind, TD_EINVAL with the field path,
 * TD_ELIMIT when the estimate exceeds a cap (field names the dominant parameter if known). */
int td_kinds_validate(const char *kind, const json_t *params, const td_limits *lim,
                      json_t **filled /* OUT */, td_estimate *est /* OUT */, td_err *err);

/* td_kinds_catalogue: [{name, doc, chapter, params: schema}] as a new reference. */
json_t *td_kinds_catalogue(void);

#endif
