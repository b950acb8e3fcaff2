/* fuzz_sweep.c: libFuzzer harness of the sweep-spec expander (td_sweep_expand, core/scaling/sweep.h).
 * From a draft by h4. Input: JSON bytes, ideally the body of POST /api/v1/sweeps. The cap on
 * children is 64 so that one input stays fast; every child is validated by the expander.
 * Checks, besides the sanitizers: a plan comes back iff the call succeeds; a failed call
 * returns a negative TD_* code with a terminated message; a plan's counts agree
 * (n_children = n_points * n_seeds <= 64) and every child has an object of params.
 * The plan's early-stopping config (hostile eta, min_steps, grace...) then goes through
 * td_es_decide after every point of a trial, against a few other trials; steps run up to
 * near LONG_MAX and values (NaN and +-Inf included) come from the input bytes. */
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "scaling/sweep.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ES_N 16
static const long es_steps[ES_N] = {0, 1, 2, 3, 5, 9, 10, 27, 81, 100, 1000, 100000,
                                    1000000000L, LONG_MAX / 3, LONG_MAX / 2, LONG_MAX - 1};

static void fuzz_es(const td_es_config *cfg, const uint8_t *data, size_t size) {
  double val[5][ES_N];
  for (int c = 0; c < 5; c++)
    for (int i = 0; i < ES_N; i++) {
      uint8_t b = data[(size_t)(c * ES_N + i) % size];
      val[c][i] = b == 0xff ? NAN : b == 0xfe ? INFINITY : b == 0xfd ? -INFINITY
                                                         : (double)b / 16.0 - 4.0;
    }
  td_es_curve others[4];
  for (int c = 0; c < 4; c++) {
    others[c].step = es_steps;
    others[c].value = val[c + 1];
    others[c].n = (size_t)(4 + 4 * c); /* 4, 8, 12 and 16 points */
  }
  for (size_t k = 1; k <= ES_N; k++) {
    td_es_curve self = {es_steps, val[0], k};
    td_es_decision d;
    td_err e;
    int rc = td_es_decide(cfg, &self, others, 4, &d, &e);
    FZ_ASSERT(rc == 0, "td_es_decide failed on a valid curve: %s", e.msg);
    FZ_ASSERT(memchr(d.reason, 0, sizeof d.reason) && d.step == es_steps[k - 1],
              "decision step %ld", d.step);
    FZ_ASSERT(d.rung == -1 || (d.rung >= 1 && d.rung <= d.step), "rung %ld at step %ld", d.rung,
              d.step);
  }
}

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
    fuzz_es(&p->early_stopping, data, size);
  }
  td_sweep_plan_destroy(rc ? NULL : p);
  json_decref(j);
  return 0;
}
