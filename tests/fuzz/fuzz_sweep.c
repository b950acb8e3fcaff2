/* fuzz_sweep.c: libFuzzer harness of the sweep-spec expander (td_sweep_expand, core/sweep.h).
 * From a draft by h4. Input: JSON bytes, ideally the body of POST /api/v1/sweeps. The cap on
 * children is 64 so that one input stays fast; every child is validated by the expander.
 * Checks, besides the sanitizers: a plan comes back iff the call succeeds; a failed call
 * returns a negative TD_* code with a terminated message; a plan's counts agree
 * (n_children = n_points * n_seeds <= 64) and every child has an object of params. */
#include <stdint.h>

#include "../../core/sweep.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
  if (!j) return 0;
  td_sweep_plan *p = (td_sweep_plan *)1;
  td_err e;
  td_err_clear(&e);
  int rc = td_sweep_expand(j, NULL, 64, &p, &e);
  FZ_ASSERT(memchr(e.msg, 0, sizeof e.msg) && memchr(e.field, 0, sizeof e.field),
            "unterminated td_err");
  if (rc) {
    FZ_ASSERT(rc < 0 && p == NULL, "rc %d with a plan", rc);
  } else {
    FZ_ASSERT(p != NULL, "success without a plan");
    FZ_ASSERT(p->n_children == p->n_points * p->n_seeds && p->n_children <= 64,
              "counts: %zu children, %zu points, %zu seeds", p->n_children, p->n_points,
              p->n_seeds);
    for (size_t i = 0; i < p->n_children; i++)
      FZ_ASSERT(json_is_object(p->children[i].params), "child %zu has no params", i);
  }
  td_sweep_plan_destroy(rc ? NULL : p);
  json_decref(j);
  return 0;
}
