/* test_sweep.c: sweep expansion (grid x seeds counts and values, random draws), validation of
 * every child before anything is returned, caps, hostile specs, and the early-stopping rules
 * (median, ASHA) on scripted curves. Pure logic: exact assertions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "scaling/sweep.h"

static int expand(const char *text, td_sweep_plan **plan, td_err *err) {
  json_error_t je;
  json_t *spec = json_loads(text, JSON_DECODE_ANY, &je);
  if (!spec) fail_msg("bad test JSON: %s: %s", je.text, text);
  td_err_clear(err);
  int rc = td_sweep_expand(spec, NULL, 0, plan, err);
  json_decref(spec);
  return rc;
}

static double pnum(const json_t *params, const char *path) {
  const json_t *v = td_param_get(params, path);
  assert_non_null(v);
  return json_number_value(v);
}

static void test_grid_times_seeds(void **state) {
  (void)state;
  td_sweep_plan *p = NULL;
  td_err e;
  assert_int_equal(expand("{\"name\":\"g\",\"kind\":\"nqm\",\"base\":{\"dim\":10},"
                          "\"axes\":{\"lr\":{\"values\":[0.1,0.2,0.5]},"
                          "\"batch_size\":{\"values\":[1,4]}},\"seeds\":2}",
                          &p, &e),
                   0);
  assert_non_null(p);
  assert_int_equal(p->n_points, 6);
  assert_int_equal(p->n_seeds, 2);
  assert_int_equal(p->n_children, 12);
  const double lrs[] = {0.1, 0.2, 0.5};
  const long bss[] = {1, 4};
  for (size_t c = 0; c < 12; c++) {
    size_t point = c / 2, s = c % 2;
    const td_sweep_child *ch = &p->children[c];
    assert_int_equal(ch->point, point);
    assert_int_equal(ch->seed, (long)s);
    /* the first axis is the outer loop, the last the fastest, seeds innermost */
    assert_true(pnum(ch->params, "lr") == lrs[point / 2]);
    assert_int_equal((long)pnum(ch->params, "batch_size"), bss[point % 2]);
    assert_int_equal((long)pnum(ch->params, "seed"), (long)s);
    assert_int_equal((long)pnum(ch->params, "dim"), 10);        /* from base */
    assert_int_equal((long)pnum(ch->params, "max_steps"), 10000); /* default filled */
    assert_true(json_number_value(json_object_get(ch->axis_values, "lr")) == lrs[point / 2]);
    assert_int_equal(json_integer_value(json_object_get(ch->axis_values, "seed")), (long)s);
    assert_true(ch->est.bytes > 0);
  }
  /* normalized spec */
  assert_string_equal(json_string_value(json_object_get(p->spec, "mode")), "grid");
  assert_int_equal(json_array_size(json_object_get(p->spec, "seeds")), 2);
  assert_true(json_is_null(json_object_get(p->spec, "early_stopping")));
  td_sweep_plan_destroy(p);

  /* explicit seed list, no axes: one point */
  assert_int_equal(expand("{\"kind\":\"nqm\",\"seeds\":[3,9,4]}", &p, &e), 0);
  assert_int_equal(p->n_children, 3);
  assert_int_equal((long)pnum(p->children[1].params, "seed"), 9);
  td_sweep_plan_destroy(p);
  td_sweep_plan_destroy(NULL);
}

static void test_bad_point_rejects_all(void **state) {
  (void)state;
  td_sweep_plan *p = (td_sweep_plan *)1;
  td_err e;
  /* point 1 is bad */
  assert_int_equal(expand("{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"values\":[0.1,-1,0.2]}}}", &p, &e),
                   TD_EINVAL);
  assert_null(p);
  assert_string_equal(e.field, "axes.lr");
  assert_non_null(strstr(e.msg, "point 1 (lr=-1)"));
  assert_non_null(strstr(e.msg, "params.lr"));
  /* only the very last point is bad (sgd with momentum): every child is validated before
   * success */
  p = (td_sweep_plan *)1;
  assert_int_equal(expand("{\"kind\":\"nqm\",\"axes\":{\"optimizer.name\":{\"values\":"
                          "[\"heavy_ball\",\"sgd\"]},\"optimizer.momentum\":{\"values\":[0,0.9]}}}",
                          &p, &e),
                   TD_EINVAL);
  assert_null(p);
  assert_string_equal(e.field, "axes.optimizer.momentum");
  assert_non_null(strstr(e.msg, "point 3 (optimizer.name=\"sgd\", optimizer.momentum=0.9)"));
  /* the first bad point is reported, with the seed */
  assert_int_equal(expand("{\"kind\":\"nqm\",\"axes\":{\"dim\":{\"values\":[1,2,3]},"
                          "\"lr\":{\"values\":[0.1,0.2,0.3,1e7]}},\"seeds\":2}",
                          &p, &e),
                   TD_EINVAL);
  assert_string_equal(e.field, "axes.lr");
  assert_non_null(strstr(e.msg, "point 3 (dim=1, lr=1e7, seed=0)"));
  /* a bad base value is reported against base */
  assert_int_equal(expand("{\"kind\":\"nqm\",\"base\":{\"max_steps\":0},"
                          "\"axes\":{\"lr\":{\"values\":[0.1]}}}",
                          &p, &e),
                   TD_EINVAL);
  assert_string_equal(e.field, "base.max_steps");
  /* a cross-field check of the kind (sgd with momentum) names the axis */
  assert_int_equal(expand("{\"kind\":\"nqm\",\"axes\":{\"optimizer.momentum\":"
                          "{\"values\":[0,0.9]}}}",
                          &p, &e),
                   TD_EINVAL);
  assert_string_equal(e.field, "axes.optimizer.momentum");
  assert_non_null(strstr(e.msg, "point 1 (optimizer.momentum=0.9)"));
  /* an unknown parameter path */
  assert_int_equal(expand("{\"kind\":\"nqm\",\"axes\":{\"optimizer.lrr\":{\"values\":[1]}}}", &p, &e),
                   TD_EINVAL);
  assert_string_equal(e.field, "axes.optimizer.lrr");
  /* seeds on a kind without... nqm has seed; a seed list value out of range */
  assert_int_equal(expand("{\"kind\":\"nqm\",\"seeds\":[-1]}", &p, &e), TD_EINVAL);
  assert_string_equal(e.field, "seeds[0]");
}

static void test_caps(void **state) {
  (void)state;
  td_sweep_plan *p = (td_sweep_plan *)1;
  td_err e;
  /* 1000 x 1000 x 1000 seeds = 1e9 children: refused before any allocation */
  char buf[40000];
  size_t n = (size_t)snprintf(buf, sizeof buf, "{\"kind\":\"nqm\",\"seeds\":1000,\"axes\":{");
  const char *ax[] = {"lr", "batch_size"};
  for (int a = 0; a < 2; a++) {
    n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"%s\":{\"values\":[", a ? "," : "", ax[a]);
    for (int i = 0; i < 1000; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%d", i ? "," : "", i + 1);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "]}");
  }
  snprintf(buf + n, sizeof buf - n, "}}");
  assert_int_equal(expand(buf, &p, &e), TD_ELIMIT);
  assert_null(p);
  assert_string_equal(e.field, "axes");
  assert_non_null(strstr(e.msg, "1000000000 children"));
  assert_int_equal(expand("{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":1000000000,"
                          "\"axes\":{\"lr\":{\"log_uniform\":[0.001,1]}}}",
                          &p, &e),
                   TD_ELIMIT);
  assert_string_equal(e.field, "samples");
  /* a custom cap */
  json_t *spec = json_loads("{\"kind\":\"nqm\",\"seeds\":5}", 0, NULL);
  assert_int_equal(td_sweep_expand(spec, NULL, 4, &p, &e), TD_ELIMIT);
  assert_int_equal(td_sweep_expand(spec, NULL, 5, &p, &e), 0);
  assert_int_equal(p->n_children, 5);
  td_sweep_plan_destroy(p);
  json_decref(spec);
  /* the memory cap of td_limits applies to each child (nqm sample mode, 1e5 x 1000 x 24 B) */
  spec = json_loads("{\"kind\":\"nqm\",\"base\":{\"mode\":\"sample\",\"dim\":100000},"
                    "\"axes\":{\"replicas\":{\"values\":[1,1000]}}}",
                    0, NULL);
  td_limits lim = td_kinds_default_limits();
  lim.max_bytes = 1e9;
  assert_int_equal(td_sweep_expand(spec, &lim, 0, &p, &e), TD_ELIMIT);
  assert_string_equal(e.field, "axes");
  assert_non_null(strstr(e.msg, "point 1 (replicas=1000)"));
  json_decref(spec);
  /* children x values: a large h list copied into 1000 children is refused */
  json_t *big = json_pack("{s:s, s:i}", "kind", "nqm", "seeds", 1000);
  json_t *h = json_array();
  for (int i = 0; i < 10000; i++) json_array_append_new(h, json_real(1.0));
  json_object_set_new(big, "base", json_pack("{s:i, s:o}", "dim", 10000, "h", h));
  assert_int_equal(td_sweep_expand(big, NULL, 0, &p, &e), TD_ELIMIT);
  assert_string_equal(e.field, "base");
  json_decref(big);
}

static void test_grid_needs_values(void **state) {
  (void)state;
  td_sweep_plan *p = NULL;
  td_err e;
  assert_int_equal(expand("{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"log_uniform\":[0.001,1]}}}", &p, &e),
                   TD_EINVAL);
  assert_string_equal(e.field, "axes.lr");
  assert_non_null(strstr(e.msg, "random"));
}

static void test_random_mode(void **state) {
  (void)state;
  td_sweep_plan *p = NULL, *q = NULL, *r = NULL;
  td_err e;
  const char *spec = "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":50,\"seed\":%d,"
                     "\"axes\":{\"lr\":{\"log_uniform\":[0.001,1]},"
                     "\"batch_size\":{\"log_uniform\":[1,1024]},"
                     "\"optimizer.power\":{\"uniform\":[0,1]},"
                     "\"optimizer.name\":{\"values\":[\"precond\",\"heavy_ball\"]}},\"seeds\":2}";
  char buf[512];
  snprintf(buf, sizeof buf, spec, 1);
  assert_int_equal(expand(buf, &p, &e), 0);
  assert_int_equal(expand(buf, &q, &e), 0);
  snprintf(buf, sizeof buf, spec, 2);
  assert_int_equal(expand(buf, &r, &e), 0);
  assert_int_equal(p->n_children, 100);
  double lmin = 1, lmax = 0;
  int names[2] = {0, 0}, differs = 0;
  for (size_t c = 0; c < 100; c++) {
    const json_t *pp = p->children[c].params;
    double lr = pnum(pp, "lr");
    assert_true(lr >= 0.001 && lr <= 1);
    lmin = fmin(lmin, lr);
    lmax = fmax(lmax, lr);
    /* integer parameter: rounded draw */
    const json_t *bs = td_param_get(pp, "batch_size");
    assert_true(json_is_integer(bs));
    assert_true(json_integer_value(bs) >= 1 && json_integer_value(bs) <= 1024);
    double pw = pnum(pp, "optimizer.power");
    assert_true(pw >= 0 && pw <= 1);
    names[strcmp(td_param_str(pp, "optimizer.name", ""), "precond") == 0]++;
    /* seeds replicate the same point */
    if (c % 2 == 1) assert_true(lr == pnum(p->children[c - 1].params, "lr"));
    /* same seed: identical; other seed: different draws */
    assert_true(json_equal(pp, q->children[c].params));
    differs += lr != pnum(r->children[c].params, "lr");
  }
  assert_true(lmin < 0.01 && lmax > 0.1); /* spread over the log range (50 draws) */
  assert_true(names[0] > 5 && names[1] > 5);
  assert_true(differs > 90);
  td_sweep_plan_destroy(p);
  td_sweep_plan_destroy(q);
  td_sweep_plan_destroy(r);
}

static void test_indexed_path_on_empty_base(void **state) {
  (void)state;
  td_sweep_plan *p = NULL;
  td_err e;
  assert_int_equal(expand("{\"kind\":\"train\",\"axes\":{\"model.hidden[0]\":{\"values\":[32,64]}}}",
                          &p, &e),
                   0);
  assert_int_equal(p->n_children, 2);
  assert_int_equal((long)pnum(p->children[1].params, "model.hidden[0]"), 64);
  assert_int_equal(json_array_size(td_param_get(p->children[1].params, "model.hidden")), 1);
  td_sweep_plan_destroy(p);
  /* an index past the end of the default list */
  assert_int_equal(expand("{\"kind\":\"train\",\"axes\":{\"model.hidden[3]\":{\"values\":[32]}}}",
                          &p, &e),
                   TD_EINVAL);
  assert_string_equal(e.field, "axes.model.hidden[3]");
}

static void test_hostile_specs(void **state) {
  (void)state;
  static const char *const bad[] = {
      "[]", "null", "3", "\"x\"", "{}", "{\"kind\":3}", "{\"kind\":\"nope\"}",
      "{\"kind\":\"nqm\",\"bogus\":1}",
      "{\"kind\":\"nqm\",\"name\":7}",
      "{\"kind\":\"nqm\",\"base\":[]}",
      "{\"kind\":\"nqm\",\"base\":{\"lr\":\"fast\"}}",
      "{\"kind\":\"nqm\",\"axes\":[]}",
      "{\"kind\":\"nqm\",\"axes\":{\"\":{\"values\":[1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"a..b\":{\"values\":[1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"a[\":{\"values\":[1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"a[-1]\":{\"values\":[1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"a[99999999]\":{\"values\":[1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"h[99999]\":{\"values\":[1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":1}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":{}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"values\":[]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"values\":3}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"values\":[1],\"uniform\":[0,1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"steps\":[1]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"values\":[null]}}}",
      "{\"kind\":\"nqm\",\"axes\":{\"lr\":{\"values\":[{\"a\":[1,2]}]}}}",
      "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":2,\"axes\":{\"lr\":{\"uniform\":[1,0]}}}",
      "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":2,\"axes\":{\"lr\":{\"uniform\":[0,1,2]}}}",
      "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":2,\"axes\":{\"lr\":{\"uniform\":[0,\"1\"]}}}",
      "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":2,\"axes\":{\"lr\":{\"log_uniform\":[0,1]}}}",
      "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":2,\"axes\":{\"lr\":{\"log_uniform\":[-1e308,1e308]}}}",
      "{\"kind\":\"nqm\",\"mode\":\"random\"}",
      "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":0}",
      "{\"kind\":\"nqm\",\"mode\":\"random\",\"samples\":1.5}",
      "{\"kind\":\"nqm\",\"mode\":\"sideways\"}",
      "{\"kind\":\"nqm\",\"samples\":3}",
      "{\"kind\":\"nqm\",\"seed\":-1}",
      "{\"kind\":\"nqm\",\"seeds\":0}",
      "{\"kind\":\"nqm\",\"seeds\":1001}",
      "{\"kind\":\"nqm\",\"seeds\":[]}",
      "{\"kind\":\"nqm\",\"seeds\":[1,1]}",
      "{\"kind\":\"nqm\",\"seeds\":[\"a\"]}",
      "{\"kind\":\"nqm\",\"seeds\":2,\"axes\":{\"seed\":{\"values\":[1]}}}",
      "{\"kind\":\"nqm\",\"max_concurrency\":-1}",
      "{\"kind\":\"nqm\",\"early_stopping\":3}",
      "{\"kind\":\"nqm\",\"early_stopping\":{\"rule\":\"asha\"}}",
      "{\"kind\":\"nqm\",\"early_stopping\":{\"rule\":\"median\",\"metric\":\"loss\",\"eta\":3}}",
      "{\"kind\":\"nqm\",\"early_stopping\":{\"rule\":\"asha\",\"metric\":\"loss\",\"eta\":1}}",
      "{\"kind\":\"nqm\",\"early_stopping\":{\"rule\":\"asha\",\"metric\":\"loss\",\"min_steps\":10,\"max_steps\":5}}",
      "{\"kind\":\"nqm\",\"early_stopping\":{\"rule\":\"gut\",\"metric\":\"loss\"}}",
      "{\"kind\":\"nqm\",\"fit\":{\"law\":\"x\"}}",
      "{\"kind\":\"nqm\",\"fit\":{\"law\":\"power_offset\",\"x\":\"params.lr\"}}",
      "{\"kind\":\"nqm\",\"fit\":{\"law\":\"power_offset\",\"x\":\"lr\",\"y\":\"summary.final_loss\"}}",
      "{\"kind\":\"nqm\",\"fit\":{\"law\":\"chinchilla\",\"x\":\"params.lr\",\"y\":\"summary.final_loss\"}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    td_sweep_plan *p = (td_sweep_plan *)1;
    td_err e;
    int rc = expand(bad[i], &p, &e);
    if (rc != TD_EINVAL && rc != TD_ELIMIT) fail_msg("spec %zu: rc %d for %s", i, rc, bad[i]);
    if (p != NULL) fail_msg("spec %zu: plan returned", i);
    if (strlen(e.msg) == 0) fail_msg("spec %zu: no message", i);
  }
}

static void test_es_and_fit_in_spec(void **state) {
  (void)state;
  td_sweep_plan *p = NULL;
  td_err e;
  assert_int_equal(expand("{\"kind\":\"nqm\",\"axes\":{\"batch_size\":{\"values\":[1,2,4]}},"
                          "\"max_concurrency\":2,"
                          "\"early_stopping\":{\"rule\":\"asha\",\"metric\":\"loss\",\"min_steps\":10},"
                          "\"fit\":{\"law\":\"critical_batch\",\"x\":\"params.batch_size\","
                          "\"y\":\"summary.steps_to_target\"}}",
                          &p, &e),
                   0);
  assert_int_equal(p->max_concurrency, 2);
  assert_int_equal(p->early_stopping.rule, TD_ES_ASHA);
  assert_int_equal(p->early_stopping.eta, 3);
  assert_int_equal(p->early_stopping.min_steps, 10);
  assert_string_equal(p->early_stopping.metric, "loss");
  assert_non_null(p->fit);
  assert_int_equal(json_integer_value(json_object_get(p->fit, "bootstrap")), 200);
  const json_t *es = json_object_get(p->spec, "early_stopping");
  assert_string_equal(json_string_value(json_object_get(es, "rule")), "asha");
  td_sweep_plan_destroy(p);
}

/* ---------------------------------------------------------------- early stopping */

static const long st5[] = {10, 20, 30, 40, 50};

static void test_median_rule(void **state) {
  (void)state;
  td_es_config cfg;
  json_t *j = json_loads("{\"rule\":\"median\",\"metric\":\"loss\",\"grace_steps\":20,"
                         "\"min_trials\":3}",
                         0, NULL);
  assert_int_equal(td_es_parse(j, &cfg, NULL), 0);
  json_decref(j);
  /* three others with running averages at step 30: (1+.8+.6)/3=.8, (2+1.5+1)/3=1.5,
   * (.5+.4+.3)/3=.4 -> median .8 */
  const double o1[] = {1.0, 0.8, 0.6, 0.5, 0.4};
  const double o2[] = {2.0, 1.5, 1.0, 0.9, 0.8};
  const double o3[] = {0.5, 0.4, 0.3, 0.2, 0.1};
  td_es_curve others[3] = {{st5, o1, 5}, {st5, o2, 5}, {st5, o3, 3}};
  const double bad[] = {1.2, 1.0, 0.9};   /* best .9 > .8 -> prune at step 30 */
  const double good[] = {1.2, 1.0, 0.75}; /* best .75 <= .8 -> continue */
  td_es_decision d;
  td_es_curve self = {st5, bad, 3};
  assert_int_equal(td_es_median_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 1);
  assert_int_equal(d.step, 30);
  assert_non_null(strstr(d.reason, "median 0.8"));
  self.value = good;
  assert_int_equal(td_es_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  /* grace period: at step 10 nothing is decided */
  self.value = bad;
  self.n = 1;
  assert_int_equal(td_es_median_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  assert_non_null(strstr(d.reason, "grace"));
  /* at step 40 only two others reached it (o3 stopped at 30): min_trials 3 not met */
  const double bad4[] = {9, 9, 9, 9};
  self.value = bad4;
  self.n = 4;
  assert_int_equal(td_es_median_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  assert_non_null(strstr(d.reason, "only 2"));
  /* mode max: higher is better; NaN counts as worst */
  cfg.maximize = 1;
  const double acc[] = {0.1, 0.2, 0.35};
  self.value = acc;
  self.n = 3;
  assert_int_equal(td_es_median_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 1); /* .35 < median of (.8, 1.5, .4) = .8 */
  const double nanv[] = {NAN, NAN, NAN};
  cfg.maximize = 0;
  self.value = nanv;
  assert_int_equal(td_es_median_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 1);
  /* errors */
  td_es_curve empty = {st5, bad, 0};
  assert_int_equal(td_es_median_decide(&cfg, &empty, others, 3, &d, NULL), TD_EINVAL);
  const long unsorted[] = {10, 5};
  td_es_curve us = {unsorted, bad, 2};
  assert_int_equal(td_es_median_decide(&cfg, &us, others, 3, &d, NULL), TD_EINVAL);
}

static void test_asha_rule(void **state) {
  (void)state;
  td_es_config cfg;
  json_t *j = json_loads("{\"rule\":\"asha\",\"metric\":\"loss\",\"min_steps\":10,\"eta\":3,"
                         "\"max_steps\":200}",
                         0, NULL);
  assert_int_equal(td_es_parse(j, &cfg, NULL), 0);
  json_decref(j);
  /* rungs at 10, 30, 90 (270 >= max_steps is not a rung) */
  const long s1[] = {10};
  const double a[] = {0.5}, b[] = {0.4}, c[] = {0.3};
  td_es_curve others[3] = {{s1, a, 1}, {s1, b, 1}, {s1, c, 1}};
  td_es_decision d;
  /* the first trial at a rung continues */
  td_es_curve self = {s1, a, 1};
  assert_int_equal(td_es_asha_decide(&cfg, &self, NULL, 0, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  assert_int_equal(d.rung, 10);
  /* a 4th trial with 0.45: 2 of 4 are better, keep ceil(4/3) = 2 -> pruned */
  const long s2[] = {5, 10};
  const double v45[] = {0.9, 0.45}, v35[] = {0.9, 0.35};
  self = (td_es_curve){s2, v45, 2};
  assert_int_equal(td_es_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 1);
  assert_int_equal(d.rung, 10);
  assert_non_null(strstr(d.reason, "ranks 3 of 4"));
  /* with 0.35 only one is better -> in the top 2, continues */
  self.value = v35;
  assert_int_equal(td_es_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  /* at step 5 (below the first rung), or between rungs: no decision */
  self.n = 1;
  assert_int_equal(td_es_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  assert_int_equal(d.rung, -1);
  const long s3[] = {10, 20};
  const double w[] = {0.3, 5.0};
  self = (td_es_curve){s3, w, 2};
  assert_int_equal(td_es_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  assert_int_equal(d.rung, -1);
  /* rung 30: others reached it with values; a jump from 20 to 40 crosses rung 30 */
  const long t30[] = {10, 30};
  const double x1[] = {0.5, 0.2}, x2[] = {0.4, 0.25};
  td_es_curve o30[2] = {{t30, x1, 2}, {t30, x2, 2}};
  const long s4[] = {10, 20, 40};
  const double y[] = {0.3, 0.3, 0.22};
  self = (td_es_curve){s4, y, 3};
  assert_int_equal(td_es_decide(&cfg, &self, o30, 2, &d, NULL), 0);
  assert_int_equal(d.rung, 30);
  assert_int_equal(d.prune, 1); /* 0.2 is better; n = 3, keep 1 */
  /* beyond max_steps no rung: 270 is not one */
  const long s5[] = {100, 300};
  const double z[] = {9, 9};
  self = (td_es_curve){s5, z, 2};
  assert_int_equal(td_es_decide(&cfg, &self, o30, 2, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
  assert_int_equal(d.rung, -1);
  /* mode max */
  cfg.maximize = 1;
  const double acc[] = {0.1, 0.6};
  self = (td_es_curve){s2, acc, 2};
  assert_int_equal(td_es_decide(&cfg, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0); /* 0.6 beats 0.5, 0.4, 0.3 */
  /* rule NONE */
  td_es_config none;
  assert_int_equal(td_es_parse(NULL, &none, NULL), 0);
  assert_int_equal(td_es_decide(&none, &self, others, 3, &d, NULL), 0);
  assert_int_equal(d.prune, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_grid_times_seeds),
      cmocka_unit_test(test_bad_point_rejects_all),
      cmocka_unit_test(test_caps),
      cmocka_unit_test(test_grid_needs_values),
      cmocka_unit_test(test_random_mode),
      cmocka_unit_test(test_indexed_path_on_empty_base),
      cmocka_unit_test(test_hostile_specs),
      cmocka_unit_test(test_es_and_fit_in_spec),
      cmocka_unit_test(test_median_rule),
      cmocka_unit_test(test_asha_rule),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
