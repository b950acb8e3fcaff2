/* registry.c: the table of experiment kinds and the validation entry point used before queueing. */
#include "kinds/registry.h"

#include <string.h>

static const td_kind *const kinds[] = {
    &td_kind_train,
    &td_kind_linreg,
    &td_kind_nqm,
    &td_kind_curvature,
    &td_kind_eos,
    &td_kind_taylor,
    &td_kind_natgrad_invariance,
    &td_kind_ntk,
    &td_kind_lazy,
    &td_kind_kernel_regression,
    &td_kind_early_stopping,
    &td_kind_max_margin,
    &td_kind_langevin,
    &td_kind_laplace,
    &td_kind_igr,
    &td_kind_blr,
    &td_kind_hypergradient,
    &td_kind_influence,
    &td_kind_short_horizon,
    &td_kind_hyperopt,
    &td_kind_momentum,
    &td_kind_game,
};

size_t td_kinds_count(void) { return sizeof kinds / sizeof kinds[0]; }

const td_kind *td_kinds_at(size_t i) { return i < td_kinds_count() ? kinds[i] : NULL; }

const td_kind *td_kinds_find(const char *name) {
  if (!name) return NULL;
  for (size_t i = 0; i < td_kinds_count(); i++)
    if (strcmp(kinds[i]->name, name) == 0) return kinds[i];
  return NULL;
}

td_limits td_kinds_default_limits(void) {
  td_limits l = {.max_bytes = 4.0 * 1024 * 1024 * 1024, .max_params = 50e6};
  return l;
}

int td_kinds_validate(const char *kind, const json_t *params, const td_limits *lim,
                      json_t **filled, td_estimate *est, td_err *err) {
  *filled = NULL;
  const td_kind *k = td_kinds_find(kind);
  if (!k) return td_err_set(err, TD_ENOTFOUND, "kind", "unknown kind '%s'", kind ? kind : "");
  json_t *f = NULL;
  int rc = td_schema_validate(k->params, k->n_params, params, &f, err);
  if (rc) return rc;
  td_estimate e = {0, 0};
  if ((k->fill && (rc = k->fill(f, err))) || (k->check && (rc = k->check(f, &e, err)))) {
    json_decref(f);
    return rc;
  }
  td_limits l = lim ? *lim : td_kinds_default_limits();
  if (e.n_params > l.max_params) {
    json_decref(f);
    return td_err_set(err, TD_ELIMIT, "params.model",
                      "the model has %.3g parameters, above the cap of %.3g", e.n_params,
                      l.max_params);
  }
  if (e.bytes > l.max_bytes) {
    json_decref(f);
    return td_err_set(err, TD_ELIMIT, "params",
                      "the job needs about %.3g GiB of memory, above the cap of %.3g GiB",
                      e.bytes / 1073741824.0, l.max_bytes / 1073741824.0);
  }
  if (est) *est = e;
  *filled = f;
  return 0;
}

json_t *td_kinds_catalogue(void) {
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < td_kinds_count(); i++) {
    const td_kind *k = kinds[i];
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(k->name));
    json_object_set_new(o, "doc", json_string(k->doc));
    json_object_set_new(o, "chapter", json_string(k->chapter));
    json_object_set_new(o, "params", td_schema_to_json(k->params, k->n_params));
    json_array_append_new(arr, o);
  }
  return arr;
}
