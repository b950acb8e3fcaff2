/* test_second_order.c: the second-order optimizers (sopt.h, newton.h, hf.h, kfac.h) and the
 * natgrad_invariance kind.
 *
 *  - Linear least squares in one step: a linear model (no hidden layer) with squared error
 *    has a quadratic loss whose Hessian = GGN = true Fisher = (1/B) Xa^T Xa kron I (Xa = [X 1]),
 *    so one undamped Newton, Gauss-Newton (newton with gauss_newton, and hessian_free with CG
 *    run to a 1e-14 residual), natural-gradient (true Fisher) or exact-Fisher K-FAC step with
 *    lr 1 lands on the minimizer. The reference minimum is LAPACK's least-squares solution
 *    (dgelsd). Criterion: (L_after - L_min) / L_min <= 1e-10 (the one step, to
 *    rounding: an error e in the parameters costs O(|e|^2 lambda_max) in the loss, and e is
 *    ~1e-13 here; a method that is off by any O(1) factor misses by orders of magnitude).
 *    K-FAC needs gamma > 0: damping 1e-20 gives gamma = 1e-10, a relative error ~1e-10 in the
 *    step and ~1e-20 in the loss.
 *  - Newton refuses a model above optimizer.newton_max_params in train's check (TD_EINVAL,
 *    field params.optimizer.newton_max_params) and in td_newton_create; a small one passes.
 *  - The Levenberg-Marquardt rule's constants.
 *  - Saddle-free Newton: on a diagonal indefinite matrix the step is -g_i / (|s_i| + damping).
 *  - natgrad_invariance in a tiny setting: NGD trains (loss below 0.5 of its start after 20
 *    steps, never rising), its function-space distance stays within 64 eps fn_scale (t + 1)
 *    of 0 at every step (rounding), while GD's is > 1e-2.
 *  - The train kind runs every second-order optimizer on synthetic regression and reduces
 *    the training loss by a factor 5 (a smoke test of the wiring). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curv/curv.h"
#include "optim/hf.h"
#include "kinds/registry.h"
#include "base/la.h"
#include "nn/model.h"
#include "optim/newton.h"
#include "base/rng.h"
#include "optim/sopt.h"
#include "nn/data.h"

#include <unistd.h>

enum { NB = 40, D = 4, K = 2 };

typedef struct lls {
  td_mlp *m;
  td_curv_ctx c;
  double X[NB * D], Y[NB * K];
  double lmin;
  double *theta0;
} lls;

static void lls_make(lls *f) {
  memset(f, 0, sizeof *f);
  td_mlp_cfg cfg = {.in_dim = D, .out_dim = K, .n_hidden = 0, .act = TD_ACT_LINEAR,
                    .init_scale = 1.0};
  td_err err;
  assert_int_equal(td_mlp_create(&cfg, &f->m, &err), 0);
  td_mlp_init(f->m, 1);
  td_rng r;
  td_rng_init(&r, 17, TD_RNG_DATA);
  td_rng_fill_normal(&r, f->X, NB * D, 1.0);
  for (int i = 0; i < NB * D; i++) f->X[i] += 0.5; /* a non-zero mean exercises the bias */
  td_rng_fill_normal(&r, f->Y, NB * K, 1.0);
  f->theta0 = malloc(f->m->n_params * sizeof *f->theta0);
  memcpy(f->theta0, f->m->params, f->m->n_params * sizeof *f->theta0);
  assert_int_equal(td_curv_init(&f->c, f->m, NB, &err), 0);
  assert_int_equal(td_curv_set_batch(&f->c, f->X, NULL, f->Y, NB, TD_CURV_MSE, &err), 0);
  /* the least-squares minimum with [X 1] */
  double Xa[NB * (D + 1)], Beta[(D + 1) * K];
  for (int i = 0; i < NB; i++) {
    memcpy(Xa + i * (D + 1), f->X + i * D, D * sizeof(double));
    Xa[i * (D + 1) + D] = 1.0;
  }
  assert_int_equal(td_la_lstsq_minnorm(NB, D + 1, K, Xa, f->Y, -1.0, Beta, NULL, &err), 0);
  double l = 0;
  for (int i = 0; i < NB; i++)
    for (int k = 0; k < K; k++) {
      double p = 0;
      for (int j = 0; j <= D; j++) p += Xa[i * (D + 1) + j] * Beta[j * K + k];
      l += (p - f->Y[i * K + k]) * (p - f->Y[i * K + k]);
    }
  f->lmin = 0.5 * l / NB;
  assert_true(f->lmin > 0.1); /* noise targets: the minimum is well above rounding */
}

static void lls_free(lls *f) {
  td_curv_deinit(&f->c);
  td_mlp_destroy(f->m);
  free(f->theta0);
}

/* One step of optimizer `name` with the given extra JSON optimizer fields from theta0;
 * returns the relative excess loss over the least-squares minimum. */
static double one_step(lls *f, const char *name, const char *opt_json) {
  char buf[512];
  snprintf(buf, sizeof buf, "{\"optimizer\": %s}", opt_json);
  json_error_t je;
  json_t *p = json_loads(buf, 0, &je);
  assert_non_null(p);
  td_sopt_hp hp;
  td_err err;
  assert_int_equal(td_sopt_hp_parse(p, name, 0, &hp, &err), 0);
  json_decref(p);
  td_sopt *o;
  assert_int_equal(td_sopt_create(&hp, f->m, NB, &o, &err), 0);
  memcpy(f->m->params, f->theta0, f->m->n_params * sizeof(double));
  assert_int_equal(td_curv_set_batch(&f->c, f->X, NULL, f->Y, NB, TD_CURV_MSE, &err), 0);
  assert_int_equal(td_curv_set_point(&f->c, f->m->params, &err), 0);
  const double l0 = f->c.loss_value;
  td_sopt_stats st;
  assert_int_equal(td_sopt_step(o, &f->c, f->m->params, 1.0, &st, &err), 0);
  assert_true(fabs(st.loss - l0) == 0.0);
  assert_int_equal(td_curv_set_batch(&f->c, f->X, NULL, f->Y, NB, TD_CURV_MSE, &err), 0);
  assert_int_equal(td_curv_set_point(&f->c, f->m->params, &err), 0);
  td_sopt_destroy(o);
  assert_true(l0 > 2 * f->lmin); /* the start is far from the minimum */
  return (f->c.loss_value - f->lmin) / f->lmin;
}

static void test_lls_one_step(void **st) {
  (void)st;
  lls f;
  lls_make(&f);
  const char *cg = "\"cg_max_iters\": 200, \"cg_tol\": 1e-14, \"cg_martens_stop\": false, "
                   "\"adapt_damping\": false, \"damping\": 0, \"lr\": 1";
  char hf[256];
  snprintf(hf, sizeof hf, "{%s}", cg);
  const struct {
    const char *name, *json;
  } cases[] = {
      {"newton", "{\"damping\": 0, \"adapt_damping\": false}"},
      {"newton", "{\"damping\": 0, \"adapt_damping\": false, \"newton_curvature\": "
                 "\"gauss_newton\"}"},
      {"hessian_free", hf},
      {"natural_gradient", hf},
      {"kfac", "{\"damping\": 1e-20, \"adapt_damping\": false, \"kfac_exact_fisher\": true, "
               "\"kfac_rescale\": false}"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    double ex = one_step(&f, cases[i].name, cases[i].json);
    if (!(fabs(ex) <= 1e-10)) fail_msg("%s %s: excess %g", cases[i].name, cases[i].json, ex);
  }
  /* a damped step does NOT reach the minimum in one step (the criterion can fail) */
  double ex = one_step(&f, "newton", "{\"damping\": 1, \"adapt_damping\": false}");
  assert_true(ex > 1e-3);
  /* nor does a natural-gradient step with the empirical Fisher (a different matrix) */
  snprintf(hf, sizeof hf, "{%s, \"fisher\": \"empirical\"}", cg);
  ex = one_step(&f, "natural_gradient", hf);
  assert_true(ex > 1e-3);
  lls_free(&f);
}

static void test_newton_refusal(void **st) {
  (void)st;
  td_err err;
  json_error_t je;
  /* 784-128-10 = 101770 parameters > 5000 */
  json_t *p = json_loads("{\"optimizer\": {\"name\": \"newton\"}, \"model\": {\"hidden\": [128]}}",
                         0, &je);
  json_t *filled = NULL;
  assert_int_equal(td_kinds_validate("train", p, NULL, &filled, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.newton_max_params");
  assert_non_null(strstr(err.msg, "101770"));
  assert_null(filled);
  json_decref(p);
  /* synthetic d = 20, hidden [8]: 20*8+8+8+1 = 177 parameters: accepted; with a cap of 100:
   * refused */
  p = json_loads("{\"optimizer\": {\"name\": \"newton\"}, \"model\": {\"hidden\": [8]}, "
                 "\"data\": {\"name\": \"synthetic\"}, \"loss\": \"mse\"}",
                 0, &je);
  assert_int_equal(td_kinds_validate("train", p, NULL, &filled, NULL, &err), 0);
  json_decref(filled);
  json_object_set_new(json_object_get(p, "optimizer"), "newton_max_params", json_integer(100));
  assert_int_equal(td_kinds_validate("train", p, NULL, &filled, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.newton_max_params");
  json_decref(p);
  td_newton *nt = NULL;
  assert_int_equal(td_newton_create(6000, 5000, &nt, &err), TD_EINVAL);
  assert_null(nt);
  assert_int_equal(td_newton_create(50, 5000, &nt, &err), 0);
  td_newton_destroy(nt);
  /* kfac without any damping is refused too */
  p = json_loads("{\"optimizer\": {\"name\": \"kfac\", \"damping\": 0}, \"model\": "
                 "{\"hidden\": [8]}, \"data\": {\"name\": \"synthetic\"}, \"loss\": \"mse\"}",
                 0, &je);
  assert_int_equal(td_kinds_validate("train", p, NULL, &filled, NULL, &err), TD_EINVAL);
  assert_string_equal(err.field, "params.optimizer.damping");
  json_decref(p);
}

static void test_lm_rule_and_saddle_free(void **st) {
  (void)st;
  assert_true(td_lm_adapt(1.0, 0.9) == 2.0 / 3.0);
  assert_true(td_lm_adapt(1.0, 0.1) == 1.5);
  assert_true(td_lm_adapt(1.0, -3.0) == 1.5);
  assert_true(td_lm_adapt(1.0, NAN) == 1.5);
  assert_true(td_lm_adapt(1.0, 0.5) == 1.0);
  assert_true(td_lm_adapt(1.0, 0.75) == 1.0 && td_lm_adapt(1.0, 0.25) == 1.0);
  /* M = diag(2, -4, 0): d = -g_i / (|s_i| + 0.5); the zero eigenvalue with damping 0 is
   * dropped (pseudo-inverse) */
  double M[9] = {2, 0, 0, 0, -4, 0, 0, 0, 0}, g[3] = {1, 1, 1}, d[3], w[3], t[3];
  td_newton_info inf;
  assert_int_equal(td_newton_solve_dense(3, M, g, 0.5, d, w, t, &inf, NULL), 0);
  assert_true(fabs(d[0] + 1 / 2.5) < 1e-15 && fabs(d[1] + 1 / 4.5) < 1e-15 &&
              fabs(d[2] + 1 / 0.5) < 1e-15);
  assert_int_equal(inf.n_negative, 1);
  double M2[9] = {2, 0, 0, 0, -4, 0, 0, 0, 0};
  assert_int_equal(td_newton_solve_dense(3, M2, g, 0.0, d, w, t, &inf, NULL), 0);
  assert_true(fabs(d[0] + 0.5) < 1e-15 && fabs(d[1] + 0.25) < 1e-15 && d[2] == 0.0);
  assert_int_equal(inf.n_dropped, 1);
  assert_true(inf.eig_min == -4.0 && inf.eig_max == 2.0);
}

/* A sink that keeps every step of the distances, the scale and the four losses (steps
 * 0..NGI_STEPS). */
#define NGI_STEPS 20
typedef struct ngi_rec {
  double gd[NGI_STEPS + 1], ngd[NGI_STEPS + 1], scale[NGI_STEPS + 1];
  double loss[4][NGI_STEPS + 1];
  long last;
} ngi_rec;

static int ngi_metric(void *ctx, const char *key, long step, double v) {
  ngi_rec *r = ctx;
  static const char *const lk[4] = {"train_loss_gd", "train_loss_gd_reparam", "train_loss_ngd",
                                    "train_loss_ngd_reparam"};
  if (step < 0 || step > NGI_STEPS) return 0;
  if (strcmp(key, "fn_distance_gd") == 0) r->gd[step] = v;
  if (strcmp(key, "fn_distance_ngd") == 0) r->ngd[step] = v;
  if (strcmp(key, "fn_scale") == 0) r->scale[step] = v;
  for (int i = 0; i < 4; i++)
    if (strcmp(key, lk[i]) == 0) r->loss[i][step] = v;
  r->last = step;
  return 0;
}

/* natgrad_invariance, tiny: 3-4-3 tanh MLP (31 parameters), mse, 20 full-batch steps.
 *  - NGD trains: the training loss of both NGD runs falls below 0.5 of its start at step 20
 *    (measured 0.6675 -> 0.1592 on x and on x', a ratio 0.24; GD at lr 0.2 reaches 0.1295) and
 *    never rises (the Armijo line search accepts only decreasing steps). With ngd_lr 0 (NGD
 *    never moves) the ratio is 1.
 *  - Invariance to rounding: in exact arithmetic the two NGD runs compute the same function
 *    (Martens 2020, sec. 12); in floating point they differ by the rounding of the
 *    reparameterization (W' = W A^{-1}, b' = b - W' c, cond(A) = 30), of the forward passes
 *    and of the Fisher solves, and each step adds its own rounding. Tolerance: a budget of
 *    64 eps * fn_scale per step, 64 eps * fn_scale * (t + 1) at step t (2.1e-13 at step 20
 *    with fn_scale 0.70). Measured: at most 4.9 eps * fn_scale per step (8.1e-15 = 52 eps *
 *    fn_scale at step 20). GD, whose step is not invariant, is at 0.17 at step 20 and must
 *    be > 1e-2. A change of the NGD step away from the exact pseudo-inverse (a damping
 *    comparable to F's eigenvalues, a scaled block) breaks the invariance by far more. */
static void test_natgrad_invariance_tiny(void **st) {
  (void)st;
  const td_kind *k = td_kinds_find("natgrad_invariance");
  assert_non_null(k);
  json_error_t je;
  json_t *p = json_loads("{\"data\": {\"n_train\": 128, \"n_test\": 64, \"d\": 3, \"classes\": 3}, "
                         "\"model\": {\"hidden\": [4]}, \"steps\": 20, \"reparam\": {\"cond\": 30}}",
                         0, &je);
  json_t *filled = NULL, *sum = NULL;
  td_err err;
  assert_int_equal(td_kinds_validate("natgrad_invariance", p, NULL, &filled, NULL, &err), 0);
  static ngi_rec r;
  memset(&r, 0, sizeof r);
  r.last = -1;
  for (int t = 0; t <= NGI_STEPS; t++) r.gd[t] = r.ngd[t] = r.scale[t] = NAN;
  td_sink s = {.ctx = &r, .metric = ngi_metric};
  assert_int_equal(k->run(filled, &s, &sum, &err), 0);
  assert_int_equal(r.last, NGI_STEPS);
  const double eps = 2.220446049250313e-16;
  double worst = 0.0;
  for (int t = 0; t <= NGI_STEPS; t++) {
    if (getenv("TD_TEST_VERBOSE"))
      printf("t %2d ngd %.3e gd %.3e scale %.4f loss_ngd %.6f %.6f loss_gd %.6f\n", t, r.ngd[t],
             r.gd[t], r.scale[t], r.loss[2][t], r.loss[3][t], r.loss[0][t]);
    const double tol = 64 * eps * r.scale[t] * (t + 1);
    if (!(r.ngd[t] <= tol)) fail_msg("step %d: fn_distance_ngd %g > %g", t, r.ngd[t], tol);
    if (r.ngd[t] / (r.scale[t] * eps) > worst) worst = r.ngd[t] / (r.scale[t] * eps);
    if (t > 0)
      for (int run = 2; run < 4; run++)
        if (!(r.loss[run][t] <= r.loss[run][t - 1]))
          fail_msg("NGD run %d: loss rose at step %d: %.17g -> %.17g", run, t, r.loss[run][t - 1],
                   r.loss[run][t]);
  }
  for (int run = 2; run < 4; run++)
    if (!(r.loss[run][NGI_STEPS] < 0.5 * r.loss[run][0]))
      fail_msg("NGD run %d does not train: loss %.6f -> %.6f", run, r.loss[run][0],
               r.loss[run][NGI_STEPS]);
  if (!(r.gd[NGI_STEPS] > 1e-2)) fail_msg("gd distance %g", r.gd[NGI_STEPS]);
  if (getenv("TD_TEST_VERBOSE")) printf("max ngd / (eps scale) = %.2f\n", worst);
  json_decref(sum);
  json_decref(filled);
  json_decref(p);
}

/* train on synthetic regression with each second-order optimizer */
typedef struct train_rec {
  double first, last;
  long n;
} train_rec;

static int train_metric(void *ctx, const char *key, long step, double v) {
  train_rec *r = ctx;
  if (strcmp(key, "train_loss") == 0) {
    if (step == 1) r->first = v;
    r->last = v;
    r->n++;
  }
  return 0;
}

static void test_train_kind_smoke(void **st) {
  (void)st;
  const char *names[4] = {"newton", "hessian_free", "natural_gradient", "kfac"};
  for (int i = 0; i < 4; i++) {
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"data\": {\"name\": \"synthetic\", \"d\": 6, \"n\": 300}, \"loss\": \"mse\", "
             "\"model\": {\"hidden\": [8]}, \"optimizer\": {\"name\": \"%s\", \"lr\": 1}, "
             "\"steps\": 25, \"batch_size\": 100, \"eval_every\": 25}",
             names[i]);
    json_error_t je;
    json_t *p = json_loads(buf, 0, &je), *filled = NULL, *sum = NULL;
    td_err err;
    assert_int_equal(td_kinds_validate("train", p, NULL, &filled, NULL, &err), 0);
    train_rec r = {NAN, NAN, 0};
    td_sink s = {.ctx = &r, .metric = train_metric};
    int rc = td_kind_train.run(filled, &s, &sum, &err);
    if (rc) fail_msg("%s: %s", names[i], err.msg);
    assert_int_equal(r.n, 25);
    if (!(r.last < r.first / 5)) fail_msg("%s: loss %g -> %g", names[i], r.first, r.last);
    json_decref(sum);
    json_decref(filled);
    json_decref(p);
  }
}

/* The three K-FAC cases of issue 10 (Fashion-MNIST 1000 examples, MLP 784-64-10, batch 100):
 *  1. damping 1e-300, kfac_rescale true, adapt_damping false: gamma = 1e-150 used to overflow
 *     D^T F D (alpha 0, nothing trains), then step 1e10 into the null space of A; now refused
 *     at the first step: gamma is below the factors' resolution floor (kfac.h);
 *  2. damping 1e-15, kfac_rescale false: the loss went to 7e149 and the job "succeeded"; now
 *     diverged (the divergence rule) with the damping named in the error;
 *  3. damping 1e-300, kfac_rescale false: diverged with no word about damping; now refused
 *     as case 1.
 * Cases 1 and 3 also on synthetic data (no dataset needed). */
static int run_train_spec(const char *spec, td_err *err) {
  json_t *p = json_loads(spec, 0, NULL), *filled = NULL, *sum = NULL;
  assert_non_null(p);
  int rc = td_kinds_validate("train", p, NULL, &filled, NULL, err);
  json_decref(p);
  if (rc) return rc;
  train_rec r = {NAN, NAN, 0};
  td_sink s = {.ctx = &r, .metric = train_metric};
  rc = td_kind_train.run(filled, &s, &sum, err);
  json_decref(sum);
  json_decref(filled);
  return rc;
}

static void test_kfac_extreme_damping(void **st) {
  (void)st;
  char buf[1024];
  td_err err;
  const char *syn = "\"data\": {\"name\": \"synthetic\", \"d\": 6, \"n\": 300}, \"loss\": \"mse\", "
                    "\"model\": {\"hidden\": [8]}, \"steps\": 20, \"batch_size\": 100";
  char fm[4200];
  snprintf(fm, sizeof fm, "%s/train-images-idx3-ubyte.gz", td_data_dir());
  const int have_fm = access(fm, R_OK) == 0;
  const char *fmnist = "\"data\": {\"name\": \"fashion-mnist\", \"n_train\": 1000, \"n_test\": 200}, "
                       "\"model\": {\"hidden\": [64]}, \"steps\": 20, \"batch_size\": 100";
  const char *opts[2] = {"\"kfac_rescale\": true, \"adapt_damping\": false",
                         "\"kfac_rescale\": false"};
  for (int data = 0; data < 1 + have_fm; data++)
    for (int c = 0; c < 2; c++) {
      snprintf(buf, sizeof buf,
               "{%s, \"optimizer\": {\"name\": \"kfac\", \"lr\": 1, \"damping\": 1e-300, %s}}",
               data ? fmnist : syn, opts[c]);
      td_err_clear(&err);
      int rc = run_train_spec(buf, &err);
      if (rc != TD_EINVAL || strcmp(err.field, "params.optimizer.damping") != 0)
        fail_msg("%s: rc %d field '%s' (%s)", buf, rc, err.field, err.msg);
      assert_non_null(strstr(err.msg, "use damping >="));
    }
  /* a usable damping on the same synthetic problem trains (the refusal is not blanket) */
  snprintf(buf, sizeof buf,
           "{%s, \"optimizer\": {\"name\": \"kfac\", \"lr\": 1, \"damping\": 1e-3, %s}}", syn,
           opts[0]);
  assert_int_equal(run_train_spec(buf, &err), 0);
  if (!have_fm) return;
  snprintf(buf, sizeof buf,
           "{%s, \"optimizer\": {\"name\": \"kfac\", \"lr\": 1, \"damping\": 1e-15, %s}}", fmnist,
           opts[1]);
  int rc = run_train_spec(buf, &err);
  if (rc != TD_EDIVERGED) fail_msg("case 2: rc %d (%s)", rc, err.msg);
  assert_non_null(strstr(err.msg, "rule: blow-up"));
  assert_non_null(strstr(err.msg, "params.optimizer.damping"));
}

int main(void) {
  td_la_set_threads(1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lls_one_step),
      cmocka_unit_test(test_newton_refusal),
      cmocka_unit_test(test_lm_rule_and_saddle_free),
      cmocka_unit_test(test_natgrad_invariance_tiny),
      cmocka_unit_test(test_train_kind_smoke),
      cmocka_unit_test(test_kfac_extreme_damping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
