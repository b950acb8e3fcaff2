/* curvature.c: the `curvature` experiment kind: train an MLP and track the Hessian spectrum
 * (sharpness, top-k, GGN top, trace, density) on a fixed analysis batch (chapters 2, 3, 9).
 *
 * Semantics (also in the schema docs):
 *  - Training is that of `train`: the same data, model, loss, optimizers, epoch-wise shuffled
 *    minibatches from stream TD_RNG_SHUFFLE, steps 1..T, train_loss/grad_norm at step t on the
 *    minibatch before update t, evaluations (test_loss, test_acc) at 0, every eval_every and T.
 *  - The analysis batch is the first analysis_n training examples in file order (fixed for the
 *    whole run). L is the mean loss on it (DESIGN: sharpness is the largest algebraic
 *    eigenvalue of the Hessian of the training loss on the analysis batch).
 *  - Analyses happen at step 0 (init), every analyze_every steps and ALWAYS at the last step T,
 *    at the parameters after update t. They log sharpness (= hessian_eig_1), hessian_eig_1..k,
 *    sharpness_resid (max(Lanczos residual ||H y - theta y||, eps ||H|| sqrt(n_params)): a
 *    bound on the eigenvalue error, Parlett Thm 4.5.1 plus the products' rounding; ckind.c),
 *    lanczos_steps, analysis_loss, and optionally hessian_max_abs_eig, ggn_top, hessian_trace
 *    (+ hessian_trace_stderr), with artifacts eigenvalues_step<t>.json, eigenvalues.json (all
 *    steps so far), and with analysis.density density_step<t>.json / density.json (SLQ:
 *    {grid, density, nodes, weights, ...}).
 *  - At the end, params.safetensors (application/octet-stream) holds the final parameters, the
 *    very point of the last analysis, with metadata (step, sharpness, analysis_n, loss,
 *    activation, dataset) for tests/hessian_torch_check.py.
 *  - A non-finite minibatch loss ends the job with TD_EDIVERGED (summary.diverged_step). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/checkpoint.h"
#include "base/la.h"
#include "kinds/ckind_internal.h"
#include "kinds/registry.h"

static const td_param curvature_params[] = {
    TD_CKIND__PROBLEM_PARAMS("all 60000", "all 10000", "[128]", "\"relu\"", "\"cross_entropy\""),
    TD_CKIND__OPTIM_PARAMS("0.05"),
    {"batch_size", TD_PT_INT, "128", 1, 65536, NULL, 0, "minibatch size (clamped to n_train)"},
    {"epochs", TD_PT_INT, NULL, 1, 1e5, NULL, 0,
     "passes over the training set, reshuffled each epoch (give epochs or steps; neither: 1)"},
    {"steps", TD_PT_INT, NULL, 1, 1e9, NULL, 0, "training steps (instead of epochs)"},
    {"eval_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between test evaluations (absent: about 10; always at step 0 and the end)"},
    {"analyze_every", TD_PT_INT, NULL, 1, 1e9, NULL, 0,
     "steps between curvature analyses (absent: about 10; always at step 0 and the last step)"},
    {"analysis_n", TD_PT_INT, NULL, 1, 60000, NULL, 0,
     "analysis batch: the first analysis_n training examples in file order (absent: "
     "min(1000, n_train))"},
    TD_CKIND__ANALYSIS_PARAMS("5", "1e-10", "20", "false", "true"),
};

typedef struct curv_cfg {
  td_ckind__problem pb;
  const char *opt_name;
  td_optim_hp hp;
  double lr;
  int n_state;
  int batch;
  long total_steps, eval_every, analyze_every;
  int analysis_n;
  td_ckind__ana_opts ana;
} curv_cfg;

static long every_default(long given, long total) {
  if (given > 0) return given;
  return total >= 10 ? (total + 9) / 10 : 1;
}

static int parse_cfg(const json_t *p, curv_cfg *c, td_err *err) {
  memset(c, 0, sizeof *c);
  int rc = td_ckind__parse_problem(p, 0, 0, &c->pb, err);
  if (rc) return rc;
  if ((rc = td_ckind__parse_optim(p, &c->opt_name, &c->hp, &c->lr, &c->n_state, err))) return rc;
  long bs = td_param_int(p, "batch_size", 128);
  c->batch = (int)(bs < (long)c->pb.n_train ? bs : (long)c->pb.n_train);
  long spe = (long)((c->pb.n_train + (size_t)c->batch - 1) / (size_t)c->batch);
  int has_ep = td_param_has(p, "epochs"), has_st = td_param_has(p, "steps");
  if (has_ep && has_st)
    return td_err_set(err, TD_EINVAL, "params.steps", "give either epochs or steps, not both");
  if (has_st) {
    c->total_steps = td_param_int(p, "steps", 1);
  } else {
    double t = (double)td_param_int(p, "epochs", 1) * (double)spe;
    if (t > 1e9) return td_err_set(err, TD_EINVAL, "params.epochs", "%.3g steps is too many", t);
    c->total_steps = (long)t;
  }
  c->eval_every = every_default(td_param_int(p, "eval_every", 0), c->total_steps);
  c->analyze_every = every_default(td_param_int(p, "analyze_every", 0), c->total_steps);
  long an = td_param_int(p, "analysis_n", 0);
  if (an <= 0) an = c->pb.n_train < 1000 ? (long)c->pb.n_train : 1000;
  if (an > (long)c->pb.n_train)
    return td_err_set(err, TD_EINVAL, "params.analysis_n",
                      "analysis_n (%ld) exceeds the training set (%zu examples)", an,
                      c->pb.n_train);
  c->analysis_n = (int)an;
  td_ckind__parse_analysis(p, &c->ana);
  return 0;
}

static int curvature_check(const json_t *params, td_estimate *est, td_err *err) {
  curv_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  double np = 0, ws = 0, ws_eval = 0, cb = 0;
  if ((rc = td_mlp_estimate(&c.pb.mlp, c.batch, &np, &ws, err))) return rc;
  if ((rc = td_mlp_estimate(&c.pb.mlp, TD_CKIND__EVAL_BATCH, &np, &ws_eval, err))) return rc;
  if ((rc = td_curv_estimate(&c.pb.mlp, c.analysis_n, &cb, err))) return rc;
  double d = c.pb.mlp.in_dim, k = c.pb.mlp.out_dim;
  double bytes = 8.0 * np * (3 + c.n_state);             /* params, grad, state, checkpoint */
  bytes += ws + ws_eval + cb;                            /* activations, curvature buffers */
  bytes += td_ckind__analysis_bytes(&c.ana, np);         /* Lanczos / SLQ basis */
  bytes += td_ckind__data_bytes(&c.pb) + 8.0 * c.pb.n_train;
  bytes += 8.0 * c.batch * (d + k);
  est->bytes = bytes;
  est->n_params = np;
  return 0;
}

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct curv_state {
  td_dataset train, test;
  td_mlp *m;
  td_mlp_ws ws, ws_eval;
  td_optim *opt;
  td_curv_ctx cc;
  td_ckind__batcher bt;
  double *Xb, *Yb, *dz;
  int *yb;
  json_t *hist;
} curv_state;

static void state_free(curv_state *s) {
  td_dataset_deinit(&s->train);
  td_dataset_deinit(&s->test);
  td_mlp_ws_deinit(&s->ws);
  td_mlp_ws_deinit(&s->ws_eval);
  td_curv_deinit(&s->cc);
  td_ckind__batcher_deinit(&s->bt);
  td_mlp_destroy(s->m);
  td_optim_destroy(s->opt);
  free(s->Xb);
  free(s->Yb);
  free(s->dz);
  free(s->yb);
  json_decref(s->hist);
}

static int do_eval(curv_state *s, const curv_cfg *c, td_sink *sink, long step, double *tl,
                   double *ta) {
  td_ckind__evaluate(s->m, &s->ws_eval, s->m->params, &s->test, s->test.n, c->pb.loss, tl, ta,
                     NULL);
  int rc = td_sink_metric(sink, "test_loss", step, *tl);
  if (!rc && s->test.y) rc = td_sink_metric(sink, "test_acc", step, *ta);
  return rc;
}

static int do_analysis(curv_state *s, const curv_cfg *c, td_sink *sink, long step,
                       td_ckind__ana_result *res, double *secs, td_err *err) {
  double t0 = now_sec();
  int rc = td_curv_set_point(&s->cc, s->m->params, err);
  if (rc == TD_ERANGE)
    return td_err_set(err, TD_EDIVERGED, NULL, "analysis loss is not finite at step %ld", step);
  if (!rc) rc = td_ckind__analyze(&s->cc, &c->ana, step, sink, s->hist, res, err);
  *secs += now_sec() - t0;
  return rc;
}

/* The final parameters as params.safetensors, with what a cross-check needs in metadata. */
static int save_params(curv_state *s, const curv_cfg *c, td_sink *sink, long step,
                       double sharpness, td_err *err) {
  char buf[64];
  json_t *meta = json_object();
  snprintf(buf, sizeof buf, "%ld", step);
  json_object_set_new(meta, "step", json_string(buf));
  snprintf(buf, sizeof buf, "%.17g", sharpness);
  json_object_set_new(meta, "sharpness", json_string(buf));
  snprintf(buf, sizeof buf, "%d", c->analysis_n);
  json_object_set_new(meta, "analysis_n", json_string(buf));
  json_object_set_new(meta, "loss", json_string(c->pb.loss == TD_CURV_MSE ? "mse" : "cross_entropy"));
  json_object_set_new(meta, "dataset", json_string(c->pb.synthetic ? "synthetic" : "fashion-mnist"));
  json_object_set_new(meta, "kind", json_string("curvature"));
  unsigned char *bytes = NULL;
  size_t len = 0;
  int rc = td_checkpoint_save(s->m, s->m->params, meta, &bytes, &len, err);
  if (!rc) rc = td_sink_artifact(sink, "params.safetensors", "application/octet-stream", bytes, len);
  free(bytes);
  json_decref(meta);
  return rc;
}

static int curvature_run(const json_t *params, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  curv_cfg c;
  int rc = parse_cfg(params, &c, err);
  if (rc) return rc;
  curv_state s;
  memset(&s, 0, sizeof s);
  if ((rc = td_ckind__load(&c.pb, &s.train, &s.test, err))) goto out;

  const int B = c.batch, K = c.pb.mlp.out_dim;
  const size_t d = s.train.d;
  if ((rc = td_mlp_create(&c.pb.mlp, &s.m, err))) goto out;
  td_mlp_init(s.m, c.pb.seed);
  int eb = (int)(s.test.n < TD_CKIND__EVAL_BATCH ? s.test.n : TD_CKIND__EVAL_BATCH);
  if ((rc = td_mlp_ws_init(&s.ws, s.m, B, err))) goto out;
  if ((rc = td_mlp_ws_init(&s.ws_eval, s.m, eb, err))) goto out;
  if ((rc = td_optim_create(c.opt_name, &c.hp, s.m->n_params, &s.opt, err))) goto out;
  if ((rc = td_curv_init(&s.cc, s.m, c.analysis_n, err))) goto out;
  if ((rc = td_curv_set_batch(&s.cc, s.train.X, s.train.y, s.train.Y, c.analysis_n, c.pb.loss,
                              err)))
    goto out;
  if ((rc = td_ckind__batcher_init(&s.bt, s.train.n, B, c.pb.seed, err))) goto out;
  s.Xb = malloc((size_t)B * d * sizeof *s.Xb);
  s.dz = malloc((size_t)B * K * sizeof *s.dz);
  if (s.train.y) s.yb = malloc((size_t)B * sizeof *s.yb);
  else s.Yb = malloc((size_t)B * K * sizeof *s.Yb);
  s.hist = json_object();
  if (!s.Xb || !s.dz || (!s.yb && !s.Yb) || !s.hist) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "curvature: out of memory for batch buffers");
    goto out;
  }
  /* The batcher and the loss read labels from a dataset view of the batch buffers. */
  td_dataset bview = {.n = (size_t)B, .d = d, .k = K, .X = s.Xb, .y = s.yb, .Y = s.Yb};

  double tl = NAN, ta = NAN, ana_secs = 0, loss = NAN, smax = -INFINITY;
  td_ckind__ana_result ar = {0};
  long step = 0, diverged_step = 0, n_ana = 0;
  if ((rc = do_eval(&s, &c, sink, 0, &tl, &ta))) goto out;
  if ((rc = do_analysis(&s, &c, sink, 0, &ar, &ana_secs, err))) goto out;
  n_ana++;
  smax = ar.sharpness;
  td_sink_progress(sink, 0, c.total_steps);

  while (step < c.total_steps) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", step);
      break;
    }
    int b = td_ckind__batcher_next(&s.bt, &s.train, s.Xb, s.yb, s.Yb);
    const double *z = td_mlp_forward(s.m, &s.ws, s.m->params, s.Xb, b);
    td_ckind__loss(c.pb.loss, &bview, 0, z, b, &loss, s.dz);
    step++;
    if (!isfinite(loss)) {
      diverged_step = step;
      td_sink_metric(sink, "train_loss", step, loss);
      break;
    }
    td_mlp_backward(s.m, &s.ws, s.m->params, s.dz, b, s.m->grad, 0);
    double gnorm = td_la_nrm2(s.m->n_params, s.m->grad);
    td_optim_step(s.opt, s.m->params, s.m->grad, c.lr);
    if ((rc = td_sink_metric(sink, "train_loss", step, loss))) break;
    if ((rc = td_sink_metric(sink, "grad_norm", step, gnorm))) break;
    if (step % c.eval_every == 0 || step == c.total_steps)
      if ((rc = do_eval(&s, &c, sink, step, &tl, &ta))) break;
    if (step % c.analyze_every == 0 || step == c.total_steps) {
      if ((rc = do_analysis(&s, &c, sink, step, &ar, &ana_secs, err))) {
        if (rc == TD_EDIVERGED) diverged_step = step, rc = 0;
        break;
      }
      n_ana++;
      if (ar.sharpness > smax) smax = ar.sharpness;
    }
    td_sink_progress(sink, step, c.total_steps);
  }

  if (!rc && !diverged_step) rc = save_params(&s, &c, sink, step, ar.sharpness, err);

  json_t *sum = json_object();
  if (sum) {
    json_object_set_new(sum, "n_params", json_integer((json_int_t)s.m->n_params));
    json_object_set_new(sum, "steps", json_integer(step));
    json_object_set_new(sum, "analyses", json_integer(n_ana));
    td_ckind__set_num(sum, "analysis_seconds", ana_secs);
    if (diverged_step) {
      json_object_set_new(sum, "diverged_step", json_integer(diverged_step));
      td_ckind__set_num(sum, "train_loss", loss);
    } else {
      td_ckind__set_num(sum, "sharpness", ar.sharpness);
      td_ckind__set_num(sum, "sharpness_max", smax);
      td_ckind__set_num(sum, "sharpness_resid", ar.resid);
      td_ckind__set_num(sum, "test_loss", tl);
      if (s.test.y) td_ckind__set_num(sum, "test_acc", ta);
      td_ckind__set_num(sum, "last_batch_loss", loss);
    }
  }
  *summary = sum;
  if (!rc && diverged_step)
    rc = td_err_set(err, TD_EDIVERGED, NULL, "loss became non-finite at step %ld", diverged_step);
out:
  state_free(&s);
  return rc;
}

const td_kind td_kind_curvature = {
    .name = "curvature",
    .doc = "Train an MLP and track the Hessian spectrum (sharpness, top-k, GGN, trace, density) "
           "on a fixed analysis batch",
    .chapter = "2,3,9",
    .params = curvature_params,
    .n_params = sizeof curvature_params / sizeof curvature_params[0],
    .check = curvature_check,
    .fill = td_optim_fill_params,
    .run = curvature_run,
};
