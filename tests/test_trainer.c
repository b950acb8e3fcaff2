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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_minibatch_contract),
      cmocka_unit_test(test_full_batch_contract),
      cmocka_unit_test(test_divergence_and_cancel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
