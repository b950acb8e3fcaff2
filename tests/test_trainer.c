/* test_trainer.c: the trainer's contract (core/train/trainer.h): step labels and the order of
 * hooks in both modes, the losses of an independent gradient-descent loop, divergence
 * (the shared rule and a hook's TD_EDIVERGED) and cancellation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/loss.h"
#include "nn/model.h"
#include "kinds/registry.h"
#include "train/trainer.h"

#define MAXS 64

/* What the sink and the hooks saw. */
typedef struct rec {
  double loss[MAXS];    /* train_loss by step */
  int n_loss;
  long loss_step[MAXS];
  long ev[MAXS], an[MAXS], after_loss[MAXS], after_step[MAXS];
  int n_ev, n_an, n_al, n_as;
  int stop_after;       /* should_stop true once this many losses were logged (0: never) */
  long diverge_at;      /* analyze returns TD_EDIVERGED at this step (-1: never) */
  int finished;
} rec;

static int rec_metric(void *ctx, const char *key, long step, double v) {
  rec *r = ctx;
  if (!strcmp(key, "train_loss") && r->n_loss < MAXS) {
    r->loss_step[r->n_loss] = step;
    r->loss[r->n_loss++] = v;
  }
  return 0;
}
static int rec_stop(void *ctx) {
  rec *r = ctx;
  return r->stop_after > 0 && r->n_loss >= r->stop_after;
}
static int h_eval(td_trainer *t, void *ctx, td_err *err) {
  (void)err;
  rec *r = ctx;
  r->ev[r->n_ev++] = t->step;
  return 0;
}
static int h_analyze(td_trainer *t, void *ctx, td_err *err) {
  rec *r = ctx;
  r->an[r->n_an++] = t->step;
  if (t->step == r->diverge_at)
    return td_err_set(err, TD_EDIVERGED, NULL, "hook diverged at %ld", t->step);
  return 0;
}
static int h_after_loss(td_trainer *t, void *ctx, td_err *err) {
  (void)err;
  rec *r = ctx;
  r->after_loss[r->n_al++] = t->step;
  return 0;
}
static int h_after_step(td_trainer *t, void *ctx, td_err *err) {
  (void)err;
  rec *r = ctx;
  r->after_step[r->n_as++] = t->step;
  return 0;
}
static int h_finish(td_trainer *t, void *ctx, json_t *sum, td_err *err) {
  (void)t, (void)sum, (void)err;
  ((rec *)ctx)->finished = 1;
  return 0;
}

/* Synthetic regression, 40 examples in 3 dims, MLP 3-4-1 tanh, plain SGD at lr 0.1. */
#define SPEC                                                                                      \
  "{\"data\":{\"name\":\"synthetic\",\"n\":40,\"d\":3},\"loss\":\"mse\",\"model\":{\"hidden\":" \
  "[4],\"activation\":\"tanh\"},\"optimizer\":{\"lr\":0.1},\"batch_size\":40,\"steps\":7,"       \
  "\"eval_every\":3"

static void make_cfg(const char *extra, td_trainer_cfg *c) {
  char text[1024];
  snprintf(text, sizeof text, SPEC "%s}", extra);
  json_t *p = json_loads(text, 0, NULL);
  assert_non_null(p);
  memset(c, 0, sizeof *c);
  td_err err;
  assert_int_equal(td_trainer_parse_problem(p, 0, 0, 0, &c->pb, &err), 0);
  assert_int_equal(td_trainer_parse_length(p, c, 1e9, 10, &err), 0);
  assert_int_equal(td_trainer_parse_optim(p, c, &err), 0);
  c->opt_name = "sgd"; /* a literal: the params object is freed below */
  json_decref(p);
}

static int run(const td_trainer_cfg *c, rec *r, json_t **sum, td_err *err) {
  td_sink sink = {.ctx = r, .metric = rec_metric, .should_stop = rec_stop};
  td_trainer_hooks h = {.ctx = r,
                        .eval = h_eval,
                        .analyze = h_analyze,
                        .after_loss = h_after_loss,
                        .after_step = h_after_step,
                        .finish = h_finish};
  return td_trainer_run(c, &h, &sink, sum, err);
}

/* The mean loss of all 40 training examples at p (file order), and its gradient in g. */
static double full_loss(const td_mlp *m, td_mlp_ws *ws, const td_dataset *ds, double *p,
                        double *dz, double *g) {
  double l = 0;
  const double *z = td_mlp_forward(m, ws, p, ds->X, (int)ds->n);
  td_loss_mse(&l, dz, z, ds->Y, (int)ds->n, 1);
  td_mlp_backward(m, ws, p, dz, (int)ds->n, g, 0);
  return l;
}

/* An independent loop: theta_{t+1} = theta_t - lr grad L(theta_t) on the whole set. */
static void reference(const td_trainer_cfg *c, long T, double *L /* OUT, T + 1 */) {
  td_dataset tr, te;
  td_err err;
  assert_int_equal(td_trainer_load(&c->pb, &tr, &te, &err), 0);
  td_mlp *m;
  td_mlp_ws ws;
  assert_int_equal(td_mlp_create(&c->pb.mlp, &m, &err), 0);
  assert_int_equal(td_mlp_ws_init(&ws, m, (int)tr.n, &err), 0);
  td_mlp_init(m, c->pb.seed);
  double dz[40];
  for (long t = 0; t <= T; t++) {
    L[t] = full_loss(m, &ws, &tr, m->params, dz, m->grad);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] -= 0.1 * m->grad[i];
  }
  td_mlp_ws_deinit(&ws);
  td_mlp_destroy(m);
  td_dataset_deinit(&tr);
  td_dataset_deinit(&te);
}

static void expect_steps(const long *got, int n, const long *want, int nw, const char *what) {
  if (n != nw) fail_msg("%s: %d calls, want %d", what, n, nw);
  for (int i = 0; i < n; i++)
    if (got[i] != want[i]) fail_msg("%s: call %d at step %ld, want %ld", what, i, got[i], want[i]);
}

/* MINIBATCH mode, one batch = the whole set: train_loss at step t is L(theta_{t-1}) of the
 * independent loop (the batch order is a permutation, so sums agree to rounding: 1e-12);
 * evaluations at 0, every 3 and 7; analyses at 0, every 2 and 7. */
static void test_minibatch_contract(void **state) {
  (void)state;
  td_trainer_cfg c;
  make_cfg(",\"analyze_every\":2", &c);
  c.analyze_every = 2;
  rec r;
  memset(&r, 0, sizeof r);
  r.diverge_at = -1;
  json_t *sum = NULL;
  td_err err;
  assert_int_equal(run(&c, &r, &sum, &err), 0);
  assert_non_null(sum);
  assert_true(r.finished);
  const long ev[] = {0, 3, 6, 7}, an[] = {0, 2, 4, 6, 7}, st[] = {1, 2, 3, 4, 5, 6, 7};
  expect_steps(r.ev, r.n_ev, ev, 4, "eval");
  expect_steps(r.an, r.n_an, an, 5, "analyze");
  expect_steps(r.after_loss, r.n_al, st, 7, "after_loss");
  expect_steps(r.after_step, r.n_as, st, 7, "after_step");
  expect_steps(r.loss_step, r.n_loss, st, 7, "train_loss");
  double L[8];
  reference(&c, 7, L);
  for (int t = 1; t <= 7; t++)
    if (fabs(r.loss[t - 1] - L[t - 1]) > 1e-12 * L[t - 1])
      fail_msg("step %d: train_loss %.17g, reference L(theta_%d) %.17g", t, r.loss[t - 1], t - 1,
               L[t - 1]);
  json_decref(sum);
}

/* FULL-BATCH mode (as eos): steps 0..7, train_loss at t is L(theta_t), T updates (after_step
 * at 0..6), evaluations at 0, 3, 6, 7. The gradient comes through the curvature context: the
 * same mean loss in the same example order, so 1e-12 again. */
static void test_full_batch_contract(void **state) {
  (void)state;
  td_trainer_cfg c;
  make_cfg("", &c);
  c.full_batch = c.grad_curv = 1;
  c.analyze_every = 5;
  rec r;
  memset(&r, 0, sizeof r);
  r.diverge_at = -1;
  json_t *sum = NULL;
  td_err err;
  assert_int_equal(run(&c, &r, &sum, &err), 0);
  const long ev[] = {0, 3, 6, 7}, an[] = {0, 5, 7}, ls[] = {0, 1, 2, 3, 4, 5, 6, 7},
             st[] = {0, 1, 2, 3, 4, 5, 6};
  expect_steps(r.ev, r.n_ev, ev, 4, "eval");
  expect_steps(r.an, r.n_an, an, 3, "analyze");
  expect_steps(r.loss_step, r.n_loss, ls, 8, "train_loss");
  expect_steps(r.after_step, r.n_as, st, 7, "after_step");
  double L[8];
  reference(&c, 7, L);
  for (int t = 0; t <= 7; t++)
    if (fabs(r.loss[t] - L[t]) > 1e-12 * L[t])
      fail_msg("step %d: train_loss %.17g, reference %.17g", t, r.loss[t], L[t]);
  json_decref(sum);
}

/* A hook's TD_EDIVERGED at analysis step 4 stops the run there with a summary; the shared rule
 * stops a blow-up (lr 1e3 on this problem) with its message; cancellation after 3 steps. */
static void test_divergence_and_cancel(void **state) {
  (void)state;
  td_trainer_cfg c;
  make_cfg("", &c);
  c.analyze_every = 2;
  rec r;
  memset(&r, 0, sizeof r);
  r.diverge_at = 4;
  json_t *sum = NULL;
  td_err err;
  assert_int_equal(run(&c, &r, &sum, &err), TD_EDIVERGED);
  assert_non_null(sum);
  assert_int_equal(json_integer_value(json_object_get(sum, "diverged_step")), 4);
  assert_true(r.finished);
  assert_int_equal(r.n_loss, 4);
  json_decref(sum);

  make_cfg(",\"optimizer\":{\"lr\":1000},\"steps\":40", &c);
  memset(&r, 0, sizeof r);
  r.diverge_at = -1;
  sum = NULL;
  assert_int_equal(run(&c, &r, &sum, &err), TD_EDIVERGED);
  assert_non_null(strstr(err.msg, "(rule:"));
  long ds = (long)json_integer_value(json_object_get(sum, "diverged_step"));
  assert_true(ds > 0 && ds < 40);
  assert_int_equal(r.loss_step[r.n_loss - 1], ds); /* the diverged step's loss is logged */
  json_decref(sum);
  /* the same with the rule off goes on until the loss is non-finite or the end */
  make_cfg(",\"optimizer\":{\"lr\":1000},\"steps\":40,\"divergence\":{\"enabled\":false}", &c);
  memset(&r, 0, sizeof r);
  r.diverge_at = -1;
  sum = NULL;
  int rc = run(&c, &r, &sum, &err);
  assert_true(r.n_loss > ds);
  if (rc == TD_EDIVERGED) assert_false(isfinite(r.loss[r.n_loss - 1]));
  else assert_int_equal(rc, 0);
  json_decref(sum);

  make_cfg("", &c);
  memset(&r, 0, sizeof r);
  r.diverge_at = -1;
  r.stop_after = 3;
  sum = NULL;
  assert_int_equal(run(&c, &r, &sum, &err), TD_ECANCELLED);
  assert_int_equal(r.n_loss, 3);
  json_decref(sum);
}


/* ------------------------------------------------------------------ forks */

/* An in-memory host: every metric (key, step, value) in order, every artifact by name; its
 * checkpoint reader serves the artifacts of `parent` (job 1). */
#define MAXM 4096
#define MAXA 64
typedef struct mem_host {
  char key[MAXM][48];
  long step[MAXM];
  double val[MAXM];
  int n;
  char aname[MAXA][64];
  unsigned char *adata[MAXA];
  size_t alen[MAXA];
  int na;
  const struct mem_host *parent;
} mem_host;

static int mem_metric(void *ctx, const char *key, long step, double v) {
  mem_host *h = ctx;
  assert_true(h->n < MAXM);
  snprintf(h->key[h->n], sizeof h->key[0], "%s", key);
  h->step[h->n] = step;
  h->val[h->n++] = v;
  return 0;
}
static int mem_artifact(void *ctx, const char *name, const char *ct, const void *d, size_t len) {
  (void)ct;
  mem_host *h = ctx;
  assert_true(h->na < MAXA);
  snprintf(h->aname[h->na], sizeof h->aname[0], "%s", name);
  h->adata[h->na] = malloc(len ? len : 1);
  memcpy(h->adata[h->na], d, len);
  h->alen[h->na++] = len;
  return 0;
}
static int mem_checkpoint(void *ctx, long job, long step, long id, void **data, size_t *len) {
  const mem_host *p = ((mem_host *)ctx)->parent;
  char name[64];
  snprintf(name, sizeof name, "checkpoint_step%ld.safetensors", step);
  if (!p || job != 1 || id) return TD_ENOTFOUND;
  for (int i = 0; i < p->na; i++)
    if (!strcmp(p->aname[i], name)) {
      *data = malloc(p->alen[i]);
      memcpy(*data, p->adata[i], p->alen[i]);
      *len = p->alen[i];
      return 0;
    }
  return TD_ENOTFOUND;
}
static void mem_free(mem_host *h) {
  for (int i = 0; i < h->na; i++) free(h->adata[i]);
}

static int run_kind(const char *kind, const char *text, mem_host *h, json_t **sum, td_err *err) {
  json_t *p = json_loads(text, 0, NULL), *filled = NULL;
  assert_non_null(p);
  int rc = td_kinds_validate(kind, p, NULL, &filled, NULL, err);
  json_decref(p);
  if (rc) return rc;
  td_sink sink = {.ctx = h, .metric = mem_metric, .artifact = mem_artifact,
                  .checkpoint = mem_checkpoint};
  rc = td_kinds_find(kind)->run(filled, &sink, sum, err);
  json_decref(filled);
  return rc;
}

/* Every metric of `a` at steps > from, and of `b`, are the same points, bitwise. */
static void expect_same_after(const mem_host *a, const mem_host *b, long from, int *n_cmp) {
  int j = 0;
  for (int i = 0; i < a->n; i++) {
    if (a->step[i] <= from) continue;
    if (j >= b->n) fail_msg("fork: no point for parent's %s@%ld", a->key[i], a->step[i]);
    if (strcmp(a->key[i], b->key[j]) || a->step[i] != b->step[j] ||
        memcmp(&a->val[i], &b->val[j], sizeof(double)))
      fail_msg("fork point %d: %s@%ld = %.17g, parent %s@%ld = %.17g", j, b->key[j], b->step[j],
               b->val[j], a->key[i], a->step[i], a->val[i]);
    j++;
  }
  if (j != b->n) fail_msg("fork has %d points, parent %d after step %ld", b->n, j, from);
  *n_cmp = j;
}

/* A fork that changes nothing reproduces the parent's later metrics bitwise: train with
 * momentum SGD (layer metrics, target EMA, batches that straddle epochs), adam with BatchNorm
 * and a cosine schedule, and eos (full batch, heavy ball). One BLAS thread (make test). */
static void test_fork_reproduces_parent(void **state) {
  (void)state;
  static const struct {
    const char *kind, *spec;
    long S;
  } cases[] = {
      {"train",
       "\"data\":{\"name\":\"synthetic\",\"n\":50,\"d\":4},\"loss\":\"mse\",\"model\":{\"hidden\":"
       "[6]},\"optimizer\":{\"momentum\":0.9,\"lr\":0.05},\"batch_size\":16,\"steps\":14,"
       "\"layer_metrics_every\":3,\"target_loss\":1e-9,\"checkpoint_every\":5",
       5},
      {"train",
       "\"data\":{\"name\":\"synthetic\",\"n\":50,\"d\":4},\"loss\":\"mse\",\"model\":{\"hidden\":"
       "[6],\"norm\":\"batchnorm\"},\"optimizer\":{\"name\":\"adam\",\"lr\":0.01,\"schedule\":{"
       "\"name\":\"cosine\"}},\"batch_size\":12,\"steps\":12,\"checkpoint_every\":4",
       8},
      {"eos",
       "\"data\":{\"name\":\"synthetic\",\"n\":30,\"d\":4},\"loss\":\"mse\",\"model\":{\"hidden\":"
       "[5]},\"momentum\":0.5,\"lr\":0.05,\"steps\":9,\"analyze_every\":3,\"checkpoint_every\":3",
       6},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char text[1024];
    static mem_host parent, child;
    memset(&parent, 0, sizeof parent);
    memset(&child, 0, sizeof child);
    json_t *sum = NULL;
    td_err err;
    snprintf(text, sizeof text, "{%s}", cases[k].spec);
    if (run_kind(cases[k].kind, text, &parent, &sum, &err))
      fail_msg("%s parent: %s", cases[k].kind, err.msg);
    json_decref(sum);
    snprintf(text, sizeof text, "{%s,\"fork\":{\"job\":1,\"step\":%ld}}", cases[k].spec,
             cases[k].S);
    child.parent = &parent;
    if (run_kind(cases[k].kind, text, &child, &sum, &err))
      fail_msg("%s fork: %s (%s)", cases[k].kind, err.msg, err.field);
    json_decref(sum);
    /* full batch: the fork's first step is the checkpoint's own (S), the parent's too */
    int n = 0;
    expect_same_after(&parent, &child, strcmp(cases[k].kind, "eos") ? cases[k].S : cases[k].S - 1,
                      &n);
    assert_true(n > 10);
    mem_free(&parent);
    mem_free(&child);
  }
}

/* A fork with another lr: the same train_loss at step S + 1 (the parameters of the checkpoint),
 * a different lr and param_norm there, a different train_loss from S + 2 on. A fork at a step
 * with no checkpoint is refused. */
static void test_fork_changed_lr(void **state) {
  (void)state;
  const char *spec = "\"data\":{\"name\":\"synthetic\",\"n\":50,\"d\":4},\"loss\":\"mse\","
                     "\"model\":{\"hidden\":[6]},\"batch_size\":16,\"steps\":10,"
                     "\"checkpoint_every\":5";
  static mem_host parent, child;
  memset(&parent, 0, sizeof parent);
  memset(&child, 0, sizeof child);
  char text[1024];
  json_t *sum = NULL;
  td_err err;
  snprintf(text, sizeof text, "{%s,\"optimizer\":{\"lr\":0.05}}", spec);
  assert_int_equal(run_kind("train", text, &parent, &sum, &err), 0);
  json_decref(sum);
  child.parent = &parent;
  snprintf(text, sizeof text, "{%s,\"optimizer\":{\"lr\":0.01},\"fork\":{\"job\":1,\"step\":3}}",
           spec);
  assert_int_not_equal(run_kind("train", text, &child, &sum, &err), 0);
  assert_string_equal(err.field, "params.fork");
  json_decref(sum);
  sum = NULL;
  memset(&child, 0, sizeof child);
  child.parent = &parent;
  snprintf(text, sizeof text, "{%s,\"optimizer\":{\"lr\":0.01},\"fork\":{\"job\":1,\"step\":5}}",
           spec);
  assert_int_equal(run_kind("train", text, &child, &sum, &err), 0);
  json_decref(sum);
  double pv[3][12], cv[3][12];
  const char *keys[3] = {"train_loss", "lr", "param_norm"};
  for (int q = 0; q < 3; q++)
    for (int t = 0; t < 12; t++) pv[q][t] = cv[q][t] = NAN;
  for (int q = 0; q < 3; q++) {
    for (int i = 0; i < parent.n; i++)
      if (!strcmp(parent.key[i], keys[q])) pv[q][parent.step[i]] = parent.val[i];
    for (int i = 0; i < child.n; i++) {
      if (!strcmp(child.key[i], keys[q])) cv[q][child.step[i]] = child.val[i];
      assert_true(child.step[i] > 5);
    }
  }
  assert_true(pv[0][6] == cv[0][6]);
  assert_true(pv[1][6] != cv[1][6] && cv[1][6] == 0.01);
  assert_true(pv[2][6] != cv[2][6]);
  for (int t = 7; t <= 10; t++) assert_true(pv[0][t] != cv[0][t]);
  mem_free(&parent);
  mem_free(&child);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_minibatch_contract),
      cmocka_unit_test(test_full_batch_contract),
      cmocka_unit_test(test_divergence_and_cancel),
      cmocka_unit_test(test_fork_reproduces_parent),
      cmocka_unit_test(test_fork_changed_lr),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
