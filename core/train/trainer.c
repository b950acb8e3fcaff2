/* trainer.c: the shared training loop (trainer.h): problem set-up, minibatches, loss and
 * gradient, optimizer step, evaluation, divergence, cancellation and the standard metrics. */
#include "train/trainer.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/la.h"
#include "nn/checkpoint.h"
#include "nn/loss.h"

/* ------------------------------------------------------------------ parsing */

int td_trainer_parse_problem(const json_t *p, size_t fmnist_n_train, size_t fmnist_n_test,
                             int center_default, td_problem_cfg *pb, td_err *err) {
  memset(pb, 0, sizeof *pb);
  pb->synthetic = strcmp(td_param_str(p, "data.name", "fashion-mnist"), "synthetic") == 0;
  long ntr = td_param_int(p, "data.n_train", 0), nte = td_param_int(p, "data.n_test", 0);
  if (pb->synthetic) {
    pb->synth_n = (size_t)td_param_int(p, "data.n", 1000);
    pb->synth.d = (size_t)td_param_int(p, "data.d", 20);
    pb->synth.noise = td_param_num(p, "data.noise", 0.1);
    pb->synth.decay = td_param_num(p, "data.decay", 0.0);
    if (ntr > (long)pb->synth_n)
      return td_err_set(err, TD_EINVAL, "params.data.n_train",
                        "n_train (%ld) exceeds the synthetic set size data.n (%zu)", ntr,
                        pb->synth_n);
    pb->n_train = ntr > 0 ? (size_t)ntr : pb->synth_n;
    pb->n_test = nte > 0 ? (size_t)nte : 1000;
    pb->mlp.in_dim = (int)pb->synth.d;
    pb->mlp.out_dim = 1;
  } else {
    if (ntr > TD_TRAINER_FMNIST_TRAIN)
      return td_err_set(err, TD_EINVAL, "params.data.n_train",
                        "fashion-mnist has %d training examples, not %ld",
                        TD_TRAINER_FMNIST_TRAIN, ntr);
    if (nte > TD_TRAINER_FMNIST_TEST)
      return td_err_set(err, TD_EINVAL, "params.data.n_test",
                        "fashion-mnist has %d test examples, not %ld", TD_TRAINER_FMNIST_TEST,
                        nte);
    pb->n_train = ntr > 0              ? (size_t)ntr
                  : fmnist_n_train > 0 ? fmnist_n_train
                                       : TD_TRAINER_FMNIST_TRAIN;
    pb->n_test = nte > 0             ? (size_t)nte
                 : fmnist_n_test > 0 ? fmnist_n_test
                                     : TD_TRAINER_FMNIST_TEST;
    pb->mlp.in_dim = 784;
    pb->mlp.out_dim = 10;
  }
  pb->loss = strcmp(td_param_str(p, "loss", "cross_entropy"), "mse") == 0 ? TD_CURV_MSE
                                                                           : TD_CURV_XENT;
  if (pb->synthetic && pb->loss != TD_CURV_MSE)
    return td_err_set(err, TD_EINVAL, "params.loss",
                      "synthetic data is a regression set: use \"loss\": \"mse\"");
  int rc = td_trainer_parse_model(p, "relu", &pb->mlp, err);
  if (rc) return rc;
  pb->center = td_param_bool(p, "data.center", center_default);
  pb->seed = (uint64_t)td_param_int(p, "seed", 0);
  double np = 0, ws = 0;
  return td_mlp_estimate(&pb->mlp, 1, &np, &ws, err);
}

int td_trainer_parse_model(const json_t *p, const char *act_default, td_mlp_cfg *mlp,
                           td_err *err) {
  const json_t *hid = td_param_get(p, "model.hidden");
  mlp->n_hidden = json_is_array(hid) ? (int)json_array_size(hid) : 0;
  if (mlp->n_hidden > TD_MLP_MAX_HIDDEN)
    return td_err_set(err, TD_EINVAL, "params.model.hidden", "at most %d hidden layers",
                      TD_MLP_MAX_HIDDEN);
  for (int i = 0; i < mlp->n_hidden; i++)
    mlp->hidden[i] = (int)json_number_value(json_array_get(hid, (size_t)i));
  if (td_mlp_act_parse(td_param_str(p, "model.activation", act_default), &mlp->act))
    return td_err_set(err, TD_EINVAL, "params.model.activation", "unknown activation");
  mlp->init_scale = td_param_num(p, "model.init_scale", 1.0);
  if (td_mlp_init_parse(td_param_str(p, "model.init", NULL), &mlp->init))
    return td_err_set(err, TD_EINVAL, "params.model.init", "unknown initialization");
  if (td_mlp_norm_parse(td_param_str(p, "model.norm", "none"), &mlp->norm))
    return td_err_set(err, TD_EINVAL, "params.model.norm", "unknown normalization");
  mlp->norm_eps = td_param_num(p, "model.norm_eps", TD_NORM_EPS_DEFAULT);
  if (td_mlp_param_parse(td_param_str(p, "model.parameterization", NULL), &mlp->param))
    return td_err_set(err, TD_EINVAL, "params.model.parameterization",
                      "unknown parameterization (standard|ntk|mup)");
  mlp->sigma_w2 = td_param_num(p, "model.sigma_w2", 2.0);
  mlp->sigma_b2 = td_param_num(p, "model.sigma_b2", 0.1);
  mlp->base_width = td_param_num(p, "model.base_width", 1.0);
  return 0;
}

int td_trainer_require_standard(const json_t *p, const char *kind, td_err *err) {
  const char *pz = td_param_str(p, "model.parameterization", "standard");
  if (pz && strcmp(pz, "standard") != 0)
    return td_err_set(err, TD_EINVAL, "params.model.parameterization",
                      "%s supports only the standard parameterization (its own layer math or "
                      "optimizer loop does not apply the multipliers or per-layer learning "
                      "rates of '%s')", kind, pz);
  return 0;
}

int td_trainer_parse_length(const json_t *p, td_trainer_cfg *c, double max_steps, long div,
                            td_err *err) {
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
    if (t > max_steps)
      return td_err_set(err, TD_EINVAL, "params.epochs", "%.3g steps is too many", t);
    c->total_steps = (long)t;
  }
  c->eval_every = td_param_int(p, "eval_every", 0);
  if (c->eval_every <= 0)
    c->eval_every = c->total_steps >= div ? (c->total_steps + div - 1) / div : 1;
  return 0;
}

int td_trainer_parse_optim(const json_t *p, td_trainer_cfg *c, td_err *err) {
  c->opt_name = td_param_str(p, "optimizer.name", "sgd");
  c->hp = td_optim_hp_default();
  c->lr = td_param_num(p, "optimizer.lr", 0.05);
  const int mom_default = !strcmp(c->opt_name, "heavy_ball") || !strcmp(c->opt_name, "nesterov");
  c->hp.momentum = td_param_num(p, "optimizer.momentum", mom_default ? 0.9 : 0.0);
  c->hp.nesterov = td_param_bool(p, "optimizer.nesterov", 0);
  c->hp.beta1 = td_param_num(p, "optimizer.beta1", 0.9);
  c->hp.beta2 = td_param_num(p, "optimizer.beta2", 0.999);
  c->hp.eps = td_param_num(p, "optimizer.eps", strcmp(c->opt_name, "adagrad") ? 1e-8 : 1e-10);
  c->hp.weight_decay =
      td_param_num(p, "optimizer.weight_decay", td_optim_default_weight_decay(c->opt_name));
  c->hp.alpha = td_param_num(p, "optimizer.alpha", 0.99);
  c->hp.centered = td_param_bool(p, "optimizer.centered", 0);
  c->hp.lr_decay = td_param_num(p, "optimizer.lr_decay", 0.0);
  c->hp.initial_accumulator = td_param_num(p, "optimizer.initial_accumulator", 0.0);
  c->hp.temperature = td_param_num(p, "optimizer.temperature", 1.0);
  c->hp.n_data = (double)td_param_int(p, "optimizer.n_data", (long)c->pb.n_train);
  c->hp.noise_seed = c->pb.seed;
  c->l2 = td_param_num(p, "l2", 0.0);
  /* first-order methods (the optim.h table) are checked here; names outside it (the schema
   * enum lists them) are validated by their own code */
  if (td_optim_state_count(c->opt_name, NULL) >= 0 && td_optim_check(c->opt_name, &c->hp, err))
    return TD_EINVAL;
  if (c->hp.nesterov && strcmp(c->opt_name, "sgd") == 0 && c->hp.momentum <= 0)
    return td_err_set(err, TD_EINVAL, "params.optimizer.nesterov",
                      "nesterov needs optimizer.momentum > 0");
  td_sched_kind sk;
  if (td_sched_parse(td_param_str(p, "optimizer.schedule.name", "constant"), &sk))
    return td_err_set(err, TD_EINVAL, "params.optimizer.schedule.name", "unknown schedule");
  int rc = td_sched_init(&c->sched, sk, c->lr,
                         td_param_int(p, "optimizer.schedule.warmup_steps", 0),
                         td_param_int(p, "optimizer.schedule.step_size", 0),
                         td_param_num(p, "optimizer.schedule.gamma", 0.1),
                         td_param_num(p, "optimizer.schedule.min_lr", 0.0), c->total_steps, err);
  if (rc) return rc;
  td_sopt_kind sok;
  c->so = td_sopt_kind_parse(c->opt_name, &sok) == 0;
  if (c->so && c->pb.mlp.param == TD_PARAM_MUP)
    return td_err_set(err, TD_EINVAL, "params.model.parameterization",
                      "mup scales the learning rate per layer: use a first-order optimizer "
                      "(not %s)", c->opt_name);
  if (c->so && sok == TD_SOPT_KFAC && c->pb.mlp.param != TD_PARAM_STANDARD)
    return td_err_set(err, TD_EINVAL, "params.model.parameterization",
                      "kfac's Kronecker factors assume the standard parameterization");
  if (!c->so && c->pb.mlp.param == TD_PARAM_MUP && !strcmp(c->opt_name, "sgld"))
    return td_err_set(err, TD_EINVAL, "params.model.parameterization",
                      "mup's per-layer learning rates are not supported with sgld");
  if (c->so) {
    if ((rc = td_sopt_hp_parse(p, c->opt_name, c->pb.seed, &c->so_hp, err))) return rc;
    c->so_hp.weight_decay += c->l2; /* both are a coupled L2 term for these methods */
  }
  return td_diverge_parse(p, &c->div, err);
}

int td_trainer_parse_checkpoint(const json_t *p, td_trainer_cfg *c, td_err *err) {
  c->ckpt_every = td_param_int(p, "checkpoint_every", 0);
  c->init_job = td_param_int(p, "init_from.job", 0);
  c->init_step = td_param_int(p, "init_from.step", -1);
  c->init_ckpt = td_param_int(p, "init_from.checkpoint", 0);
  c->fork_job = td_param_int(p, "fork.job", 0);
  c->fork_step = td_param_int(p, "fork.step", -1);
  const int has_init = td_param_has(p, "init_from"), has_fork = td_param_has(p, "fork");
  if (has_init && has_fork)
    return td_err_set(err, TD_EINVAL, "params.fork",
                      "give either params.init_from or params.fork, not both");
  if (has_init) {
    if (c->init_ckpt > 0 && (c->init_job > 0 || c->init_step >= 0))
      return td_err_set(err, TD_EINVAL, "params.init_from",
                        "give either {\"job\", \"step\"} or {\"checkpoint\"}, not both");
    if (c->init_ckpt <= 0 && (c->init_job <= 0 || c->init_step < 0))
      return td_err_set(err, TD_EINVAL,
                        c->init_job <= 0 ? "params.init_from.job" : "params.init_from.step",
                        "init_from needs {\"job\": J, \"step\": S} or {\"checkpoint\": C}");
  }
  if (has_fork) {
    if (c->fork_job <= 0 || c->fork_step < 0)
      return td_err_set(err, TD_EINVAL, c->fork_job <= 0 ? "params.fork.job" : "params.fork.step",
                        "fork needs {\"job\": J, \"step\": S}");
    if (c->so)
      return td_err_set(err, TD_EINVAL, "params.fork",
                        "the state of the second-order optimizer %s is not stored in "
                        "checkpoints: it cannot be forked (use init_from)",
                        c->opt_name);
    if (c->fork_step >= c->total_steps)
      return td_err_set(err, TD_EINVAL, "params.fork.step",
                        "the fork starts after step %ld, but the run ends at step %ld",
                        c->fork_step, c->total_steps);
  }
  return 0;
}

double td_trainer_data_bytes(const td_problem_cfg *pb) {
  double d = pb->mlp.in_dim, k = pb->mlp.out_dim;
  double b = 8.0 * (double)(pb->n_train + pb->n_test) * (d + k);
  if (pb->synthetic) b += 8.0 * (double)pb->synth_n * (d + k);
  else b += 60000.0 * 785; /* the decompressed IDX file while loading */
  return b;
}

int td_trainer_optim_bytes(const td_trainer_cfg *c, double *bytes, td_err *err) {
  double np = 0, ws = 0;
  int rc = td_mlp_estimate(&c->pb.mlp, 1, &np, &ws, err);
  if (rc) return rc;
  if (c->so) { /* as 4 state vectors, plus the optimizer and its td_curv_ctx */
    if ((rc = td_sopt_check(&c->so_hp, &c->pb.mlp, c->batch, bytes, err))) return rc;
    *bytes += 8.0 * np * 4;
    return 0;
  }
  int n_state = td_optim_state_count(c->opt_name, &c->hp);
  if (n_state < 0) n_state = 4;
  *bytes = 8.0 * np * n_state;
  return 0;
}

/* ------------------------------------------------------------------ problem helpers */

int td_trainer_load(const td_problem_cfg *pb, td_dataset *train, td_dataset *test,
                    td_err *err) {
  int rc;
  if (pb->synthetic) {
    rc = td_data_synthetic(&pb->synth, pb->synth_n, pb->seed, TD_RNG_DATA, train, NULL, err);
    if (!rc) {
      train->n = pb->n_train; /* the first n_train of the n examples */
      rc = td_data_synthetic(&pb->synth, pb->n_test, pb->seed, TD_RNG_TEST_DATA, test, NULL, err);
    }
  } else {
    rc = td_data_fashion_mnist("train", pb->n_train, train, err);
    if (!rc) rc = td_data_fashion_mnist("test", pb->n_test, test, err);
  }
  return rc;
}

void td_trainer_center(td_dataset *train, td_dataset *test) {
  const size_t d = train->d;
  double *mu = calloc(d, sizeof *mu);
  if (!mu) return;
  for (size_t i = 0; i < train->n; i++)
    for (size_t j = 0; j < d; j++) mu[j] += train->X[i * d + j];
  for (size_t j = 0; j < d; j++) mu[j] /= (double)train->n;
  for (size_t i = 0; i < train->n; i++)
    for (size_t j = 0; j < d; j++) train->X[i * d + j] -= mu[j];
  for (size_t i = 0; test && i < test->n; i++)
    for (size_t j = 0; j < d; j++) test->X[i * d + j] -= mu[j];
  free(mu);
}

void td_trainer_loss(td_curv_loss loss, const td_dataset *ds, size_t s, const double *z, int B,
                     double *l, double *dz) {
  const int K = ds->k;
  if (ds->y && loss == TD_CURV_XENT) td_loss_xent(l, dz, z, ds->y + s, B, K);
  else if (ds->y) td_loss_mse_onehot(l, dz, z, ds->y + s, B, K);
  else td_loss_mse(l, dz, z, ds->Y + s * (size_t)K, B, K);
}

void td_trainer_evaluate(const td_mlp *m, td_mlp_ws *ws, const double *params,
                         const td_dataset *ds, size_t n, td_curv_loss loss, double *loss_out,
                         double *acc_out, double *out) {
  double lsum = 0.0;
  long correct = 0;
  const int K = m->cfg.out_dim;
  for (size_t s = 0; s < n; s += (size_t)ws->cap) {
    int B = (int)(n - s < (size_t)ws->cap ? n - s : (size_t)ws->cap);
    const double *z = td_mlp_forward(m, ws, params, ds->X + s * ds->d, B);
    double l = 0.0;
    td_trainer_loss(loss, ds, s, z, B, &l, NULL);
    if (ds->y) correct += td_count_correct(z, ds->y + s, B, K);
    if (out) memcpy(out + s * (size_t)K, z, (size_t)B * K * sizeof *z);
    lsum += l * B;
  }
  *loss_out = lsum / (double)n;
  if (acc_out) *acc_out = ds->y ? (double)correct / (double)n : NAN;
}

void td_trainer_set_num(json_t *o, const char *key, double v) {
  if (isfinite(v)) json_object_set_new(o, key, json_real(v));
  else
    json_object_set_new(o, key,
                        json_string(isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity"));
}

double td_trainer_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int td_trainer_eval(td_trainer *t) {
  const td_trainer_cfg *c = t->cfg;
  double *o = t->ev;
  td_trainer_evaluate(t->m, &t->ws_eval, t->m->params, &t->test, t->test.n, c->pb.loss, &o[0],
                      &o[1], NULL);
  int rc = td_sink_metric(t->sink, "test_loss", t->step, o[0]);
  if (c->eval_train) {
    size_t ntr = t->train.n < TD_TRAINER_TRAIN_EVAL_MAX ? t->train.n : TD_TRAINER_TRAIN_EVAL_MAX;
    td_trainer_evaluate(t->m, &t->ws_eval, t->m->params, &t->train, ntr, c->pb.loss, &o[2],
                        &o[3], NULL);
    if (!rc) rc = td_sink_metric(t->sink, "train_eval_loss", t->step, o[2]);
  }
  if (!rc && t->test.y) rc = td_sink_metric(t->sink, "test_acc", t->step, o[1]);
  if (!rc && c->eval_train && t->train.y) rc = td_sink_metric(t->sink, "train_acc", t->step, o[3]);
  return rc;
}

/* ------------------------------------------------------------------ the loop */

/* Per linear layer j (w = W_j and b_j): weight_norm/{j}, and when prev (the parameters
 * before this update) is given update_ratio/{j} = ||w - w_prev|| / ||w_prev|| and, for
 * scale-invariant layers (followed by a norm layer), effective_lr/{j} = lr / ||w||^2 (the step
 * size on the sphere: van Laarhoven 2017; Arora et al. 2019). */
static int layer_metrics(const td_mlp *m, const double *prev, double lr, td_sink *sink,
                         long step) {
  char key[64];
  int rc = 0;
  for (int j = 0; j < m->n_linear && !rc; j++) {
    const td_layer *L = td_mlp_linear(m, j, m->params, NULL, NULL);
    const double *w = m->params + L->off;
    double w2 = 0.0, d2 = 0.0, p2 = 0.0;
    for (size_t i = 0; i < L->n_params; i++) w2 += w[i] * w[i];
    snprintf(key, sizeof key, "weight_norm/%d", j);
    rc = td_sink_metric(sink, key, step, sqrt(w2));
    if (rc || !prev) continue;
    const double *wp = prev + L->off;
    for (size_t i = 0; i < L->n_params; i++) {
      d2 += (w[i] - wp[i]) * (w[i] - wp[i]);
      p2 += wp[i] * wp[i];
    }
    snprintf(key, sizeof key, "update_ratio/%d", j);
    rc = td_sink_metric(sink, key, step, p2 > 0 ? sqrt(d2 / p2) : NAN);
    if (!rc && td_mlp_scale_invariant(m, j)) {
      snprintf(key, sizeof key, "effective_lr/%d", j);
      rc = td_sink_metric(sink, key, step, lr / w2);
    }
  }
  return rc;
}

/* ------------------------------------------------------------------ checkpoints */

static void meta_num(json_t *meta, const char *key, double v) {
  char buf[40];
  snprintf(buf, sizeof buf, "%.17g", v);
  json_object_set_new(meta, key, json_string(buf));
}

static void meta_long(json_t *meta, const char *key, long v) {
  char buf[32];
  snprintf(buf, sizeof buf, "%ld", v);
  json_object_set_new(meta, key, json_string(buf));
}

/* A metadata number written by meta_num / meta_long; TD_EINVAL naming it when absent. */
static int meta_get(const json_t *meta, const char *key, double *v, td_err *err) {
  const char *s = json_string_value(json_object_get(meta, key));
  char *end = NULL;
  if (s) *v = strtod(s, &end);
  if (!s || end == s || *end)
    return td_err_set(err, TD_EINVAL, "params.fork",
                      "the checkpoint has no trainer metadata \"%s\": it was not written by a "
                      "run that can be forked",
                      key);
  return 0;
}

/* The trainer's state besides the tensors: data order, smoothed losses, divergence rule. */
static json_t *ckpt_meta(const td_trainer *t) {
  json_t *meta = json_object();
  if (!meta) return NULL;
  meta_long(meta, "step", t->step);
  meta_long(meta, "trainer_n_train", (long)t->train.n);
  meta_long(meta, "trainer_shuffles", t->n_shuffles);
  meta_long(meta, "trainer_pos", (long)t->pos);
  meta_num(meta, "trainer_ema", t->ema);
  meta_num(meta, "trainer_ema_w", t->ema_w);
  /* the divergence rule's running state (everything after its cfg), as bytes: the trainer
   * does not depend on its fields */
  const unsigned char *dv = (const unsigned char *)&t->div + offsetof(td_diverge, n);
  char hex[2 * sizeof(td_diverge) + 1];
  const size_t nb = sizeof(td_diverge) - offsetof(td_diverge, n);
  for (size_t i = 0; i < nb; i++) snprintf(hex + 2 * i, 3, "%02x", dv[i]);
  json_object_set_new(meta, "trainer_diverge_state", json_string(hex));
  return meta;
}

/* checkpoint_step<step>.safetensors of the current parameters and optimizer state. */
static int save_checkpoint(td_trainer *t, td_err *err) {
  json_t *meta = ckpt_meta(t);
  if (!meta) return td_err_set(err, TD_ENOMEM, NULL, "trainer: out of memory");
  unsigned char *bytes = NULL;
  size_t len = 0;
  int rc = td_checkpoint_save_state(t->m, t->m->params, t->opt, meta, &bytes, &len, err);
  if (!rc) {
    char name[64];
    snprintf(name, sizeof name, "checkpoint_step%ld.safetensors", t->step);
    rc = td_sink_artifact(t->sink, name, "application/octet-stream", bytes, len);
  }
  free(bytes);
  json_decref(meta);
  return rc;
}

/* init_from (parameters only) or fork (parameters, optimizer state and the trainer's state:
 * the permutations drawn so far are drawn again from the same stream, so the data order goes
 * on as the parent's would have). */
static int load_start(td_trainer *t, td_err *err) {
  const td_trainer_cfg *c = t->cfg;
  const int fork = c->fork_job > 0;
  if (!fork && c->init_job <= 0 && c->init_ckpt <= 0) return 0;
  const char *field = fork ? "params.fork" : "params.init_from";
  void *data = NULL;
  size_t len = 0;
  int rc = fork ? td_sink_checkpoint(t->sink, c->fork_job, c->fork_step, 0, &data, &len)
                : td_sink_checkpoint(t->sink, c->init_ckpt > 0 ? 0 : c->init_job,
                                     c->init_ckpt > 0 ? 0 : c->init_step, c->init_ckpt, &data,
                                     &len);
  if (rc) {
    free(data);
    return td_err_set(err, rc, field, "the checkpoint named by %s cannot be read (%s)", field,
                      td_strerror(rc));
  }
  json_t *meta = NULL;
  rc = td_checkpoint_load_state(t->m, data, len, t->m->params, fork ? t->opt : NULL,
                                fork ? &meta : NULL, err);
  free(data);
  if (rc || !fork) return rc;
  double v[6];
  static const char *const keys[6] = {"step",        "trainer_n_train", "trainer_shuffles",
                                      "trainer_pos", "trainer_ema",     "trainer_ema_w"};
  for (int i = 0; i < 6 && !rc; i++) rc = meta_get(meta, keys[i], &v[i], err);
  /* the divergence rule's state, when written by a build with the same td_diverge (else the
   * rule starts afresh at the fork) */
  const char *hex = json_string_value(json_object_get(meta, "trainer_diverge_state"));
  const size_t nb = sizeof(td_diverge) - offsetof(td_diverge, n);
  unsigned char dv[sizeof(td_diverge)];
  int have_dv = hex && strlen(hex) == 2 * nb;
  for (size_t i = 0; have_dv && i < nb; i++) {
    unsigned x;
    if (sscanf(hex + 2 * i, "%2x", &x) != 1) have_dv = 0;
    dv[i] = (unsigned char)x;
  }
  json_decref(meta);
  if (rc) return rc;
  if ((long)v[0] != c->fork_step)
    return td_err_set(err, TD_EINVAL, "params.fork.step",
                      "the checkpoint is that of step %ld, not %ld", (long)v[0], c->fork_step);
  if (!c->full_batch && (size_t)v[1] == t->train.n) {
    /* the same training set: replay the permutations (else a fresh order from this point) */
    for (long k = 0; k < (long)v[2]; k++) td_rng_shuffle(&t->shuf, t->perm, t->train.n);
    t->n_shuffles = (long)v[2];
    t->pos = (size_t)v[3];
  }
  t->ema = v[4];
  t->ema_w = v[5];
  if (have_dv) memcpy((unsigned char *)&t->div + offsetof(td_diverge, n), dv, nb);
  return 0;
}

/* Allocate the model, workspaces, optimizer and batch buffers (everything, once). */
static int build(td_trainer *t, td_err *err) {
  const td_trainer_cfg *c = t->cfg;
  int rc;
  if ((rc = td_mlp_create(&c->pb.mlp, &t->m, err))) return rc;
  td_mlp_init(t->m, c->pb.seed);
  size_t ne = t->test.n;
  if (c->eval_train && t->train.n > ne) ne = t->train.n;
  int eb = (int)(ne < TD_TRAINER_EVAL_BATCH ? ne : TD_TRAINER_EVAL_BATCH);
  if ((rc = td_mlp_ws_init(&t->ws_eval, t->m, eb, err))) return rc;
  td_mlp_ws_set_mode(&t->ws_eval, TD_MLP_EVAL, 0); /* BatchNorm: running statistics */
  const size_t d = t->train.d, n = t->train.n;
  const int K = c->pb.mlp.out_dim;
  if (c->full_batch) {
    if (n > 2147483647u)
      return td_err_set(err, TD_EINVAL, "params.data.n_train", "n_train too large");
    t->b = (int)n;
    if (!c->grad_curv) return td_err_set(err, TD_EINVAL, NULL, "full batch needs grad_curv");
    if ((rc = td_curv_init(&t->cc, t->m, (int)n, err)) ||
        (rc = td_curv_set_batch(&t->cc, t->train.X, t->train.y, t->train.Y, (int)n, c->pb.loss,
                                err)))
      return rc;
  } else {
    const int B = c->batch;
    if (!c->grad_curv) {
      if ((rc = td_mlp_ws_init(&t->ws, t->m, B, err))) return rc;
      td_mlp_ws_set_mode(&t->ws, TD_MLP_TRAIN, 1); /* BatchNorm: batch stats, running update */
    }
    if ((c->grad_curv || c->so) && (rc = td_curv_init(&t->cc, t->m, B, err))) return rc;
    t->Xb = malloc((size_t)B * d * sizeof *t->Xb);
    t->dz = malloc((size_t)B * K * sizeof *t->dz);
    t->perm = malloc(n * sizeof *t->perm);
    if (t->train.y) t->yb = malloc((size_t)B * sizeof *t->yb);
    else t->Yb = malloc((size_t)B * K * sizeof *t->Yb);
    if (!t->Xb || !t->dz || !t->perm || (!t->yb && !t->Yb))
      return td_err_set(err, TD_ENOMEM, NULL, "trainer: out of memory for batch buffers");
    for (size_t i = 0; i < n; i++) t->perm[i] = i;
    t->pos = n; /* forces a shuffle first */
    td_rng_init(&t->shuf, c->pb.seed, TD_RNG_SHUFFLE);
    t->bview = (td_dataset){.n = (size_t)B, .d = d, .k = K, .X = t->Xb, .y = t->yb, .Y = t->Yb};
  }
  if (c->layer_every > 0 && !(t->prev = malloc(t->m->n_params * sizeof *t->prev)))
    return td_err_set(err, TD_ENOMEM, NULL, "trainer: out of memory");
  if (c->so) return td_sopt_create(&c->so_hp, t->m, c->batch, &t->so, err);
  rc = td_optim_create(c->opt_name, &c->hp, t->m->n_params, &t->opt, err);
  if (rc || t->m->cfg.param != TD_PARAM_MUP) return rc;
  /* mup: the per-layer learning rates of its SGD or Adam column (model.h) */
  size_t ends[2 * TD_MLP_MAX_LAYERS];
  double mults[2 * TD_MLP_MAX_LAYERS];
  int ns = td_mlp_lr_segments(t->m, td_optim_adam_like(c->opt_name), ends, mults);
  return td_optim_set_lr_segments(t->opt, ns, ends, mults, err);
}

static void destroy(td_trainer *t) {
  td_dataset_deinit(&t->train);
  td_dataset_deinit(&t->test);
  td_mlp_ws_deinit(&t->ws);
  td_mlp_ws_deinit(&t->ws_eval);
  td_mlp_destroy(t->m);
  td_optim_destroy(t->opt);
  td_sopt_destroy(t->so);
  td_curv_deinit(&t->cc);
  free(t->perm);
  free(t->Xb);
  free(t->Yb);
  free(t->dz);
  free(t->prev);
  free(t->yb);
}

/* Gather the next minibatch (epoch-wise permutation; the last batch of an epoch may be short). */
static void next_batch(td_trainer *t) {
  const size_t n = t->train.n, d = t->train.d, K = (size_t)t->train.k;
  if (t->pos >= n) {
    td_rng_shuffle(&t->shuf, t->perm, n);
    t->n_shuffles++;
    t->pos = 0;
  }
  const size_t B = (size_t)t->cfg->batch;
  int b = (int)(n - t->pos < B ? n - t->pos : B);
  for (int i = 0; i < b; i++) {
    size_t src = t->perm[t->pos + (size_t)i];
    memcpy(t->Xb + (size_t)i * d, t->train.X + src * d, d * sizeof *t->Xb);
    if (t->yb) t->yb[i] = t->train.y[src];
    else memcpy(t->Yb + (size_t)i * K, t->train.Y + src * K, K * sizeof *t->Yb);
  }
  t->pos += (size_t)b;
  t->b = b;
}

/* The loss and the gradient at the current parameters (t->loss, t->grad). */
static int loss_grad(td_trainer *t, const td_trainer_hooks *h, td_err *err) {
  const td_trainer_cfg *c = t->cfg;
  if (h->loss) return h->loss(t, h->ctx, err);
  if (c->grad_curv) {
    if (!c->full_batch) {
      int rc = td_curv_set_batch(&t->cc, t->Xb, t->yb, t->Yb, t->b, c->pb.loss, err);
      if (rc) return rc;
    }
    td_curv_set_point(&t->cc, t->m->params, NULL); /* TD_ERANGE: a non-finite loss */
    t->loss = t->cc.loss_value;
    t->grad = td_curv_grad(&t->cc);
    return 0;
  }
  const double *z = td_mlp_forward(t->m, &t->ws, t->m->params, t->Xb, t->b);
  td_trainer_loss(c->pb.loss, &t->bview, 0, z, t->b, &t->loss, t->dz);
  t->grad = t->m->grad;
  return 0;
}

/* The l2 penalty l2/2 ||theta||^2 (part of the training loss) and its gradient l2 theta. */
static double l2_penalty(td_trainer *t) {
  const double l2 = t->cfg->l2;
  double pn = td_la_nrm2(t->m->n_params, t->m->params);
  return 0.5 * l2 * pn * pn;
}

static int update(td_trainer *t, const td_trainer_hooks *h, td_sopt_stats *sst, td_err *err) {
  if (h->update) return h->update(t, h->ctx, err);
  if (t->so) { /* bind the minibatch and the point, then the second-order step */
    int rc = td_curv_set_batch(&t->cc, t->Xb, t->yb, t->Yb, t->b, t->cfg->pb.loss, err);
    if (!rc) rc = td_curv_set_point(&t->cc, t->m->params, err);
    if (!rc) rc = td_sopt_step(t->so, &t->cc, t->m->params, t->lr, sst, err);
    return rc;
  }
  td_optim_step(t->opt, t->m->params, t->grad, t->lr);
  return 0;
}

static int do_eval(td_trainer *t, const td_trainer_hooks *h, td_err *err) {
  return h->eval ? h->eval(t, h->ctx, err) : td_trainer_eval(t);
}

/* One step (label t->step); returns 0, 1 to stop (target reached), or an error. */
static int one_step(td_trainer *t, const td_trainer_hooks *h, td_err *err);

int td_trainer_run(const td_trainer_cfg *cfg, const td_trainer_hooks *hooks, td_sink *sink,
                   json_t **summary, td_err *err) {
  *summary = NULL;
  static const td_trainer_hooks none = {0};
  const td_trainer_hooks *h = hooks ? hooks : &none;
  td_trainer t;
  memset(&t, 0, sizeof t);
  t.cfg = cfg;
  t.sink = sink;
  t.diverged_step = -1;
  for (int i = 0; i < 4; i++) t.ev[i] = NAN;
  t.loss = NAN;
  td_diverge_init(&t.div, &cfg->div);
  int rc = h->load ? h->load(&t, h->ctx, err) : td_trainer_load(&cfg->pb, &t.train, &t.test, err);
  if (rc) goto out;
  if (cfg->pb.center) td_trainer_center(&t.train, &t.test);
  if ((rc = build(&t, err))) goto out;
  if ((rc = load_start(&t, err))) goto out;
  if (h->setup && (rc = h->setup(&t, h->ctx, err))) goto out;

  const long T = cfg->total_steps;
  const int fork = cfg->fork_job > 0;
  /* a fork's first step: the one after its checkpoint (FULL-BATCH: the checkpoint's own step,
   * whose metrics are those of the parameters it holds) */
  t.first_step = (fork ? cfg->fork_step : 0) + (cfg->full_batch ? 0 : 1);
  t.step = t.first_step - 1;
  if (!cfg->full_batch && !fork) {
    t.step = 0;
    if ((rc = do_eval(&t, h, err))) goto out;
    if (cfg->layer_every > 0 && (rc = layer_metrics(t.m, NULL, 0.0, sink, 0))) goto out;
    if (h->analyze && cfg->analyze_every > 0 && (rc = h->analyze(&t, h->ctx, err))) {
      if (rc == TD_EDIVERGED) t.diverged_step = 0;
      goto done;
    }
  }
  td_sink_progress(sink, t.first_step > 0 ? t.first_step - 1 : 0, T);
  for (long i = t.first_step; i <= T; i++) {
    if (td_sink_should_stop(sink)) {
      rc = td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld",
                      cfg->full_batch ? i : i - 1);
      break;
    }
    t.step = i;
    rc = one_step(&t, h, err);
    if (rc == 1) { /* target reached */
      rc = 0;
      break;
    }
    if (rc) break;
  }
done:
  if (rc == TD_EDIVERGED && t.diverged_step < 0) t.diverged_step = t.step;
  if (!rc && t.diverged_step < 0 && t.step > 0 && (rc = td_diverge_finish(&t.div, t.step, err))) {
    td_sopt_diverge_hint(t.so, err);
    t.diverged_step = t.div.spike_step;
  }
  if (!rc || rc == TD_EDIVERGED || rc == TD_ECANCELLED) {
    json_t *sum = json_object();
    if (!sum) {
      rc = td_err_set(err, TD_ENOMEM, NULL, "trainer: out of memory");
      goto out;
    }
    json_object_set_new(sum, "n_params", json_integer((json_int_t)t.m->n_params));
    if (t.diverged_step >= 0)
      json_object_set_new(sum, "diverged_step", json_integer(t.diverged_step));
    t.status = rc;
    if (h->finish) {
      int frc = h->finish(&t, h->ctx, sum, err);
      if (frc && !rc) rc = frc;
    }
    *summary = sum;
  }
out:
  if (h->teardown) h->teardown(&t, h->ctx);
  destroy(&t);
  return rc;
}

static int one_step(td_trainer *t, const td_trainer_hooks *h, td_err *err) {
  const td_trainer_cfg *c = t->cfg;
  td_sink *sink = t->sink;
  const long step = t->step, T = c->total_steps;
  const size_t np = t->m->n_params;
  const char *loss_key = c->loss_key ? c->loss_key : "train_loss";
  double t0 = td_trainer_now();
  if (!c->full_batch) next_batch(t);
  int rc = loss_grad(t, h, err);
  if (rc) return rc;
  double penalty = 0.0; /* l2/2 ||theta||^2, part of the training loss */
  if (c->l2 > 0) {
    penalty = l2_penalty(t);
    t->loss += penalty;
  }
  if (h->after_loss && (rc = h->after_loss(t, h->ctx, err))) {
    if (rc == TD_EDIVERGED) td_sink_metric(sink, loss_key, step, t->loss);
    return rc;
  }
  /* FULL-BATCH fork: its first step is the checkpoint's own, already counted in the state
   * the checkpoint holds (divergence rule, smoothed loss) */
  const int replay = c->full_batch && c->fork_job > 0 && step == t->first_step;
  if (!replay && (rc = td_diverge_observe(&t->div, step, t->loss, err))) {
    td_sopt_diverge_hint(t->so, err);
    td_sink_metric(sink, loss_key, step, t->loss);
    return rc;
  }
  if (!c->grad_curv && !h->loss) {
    td_mlp_backward(t->m, &t->ws, t->m->params, t->dz, t->b, t->m->grad, 0);
    if (c->l2 > 0)
      for (size_t i = 0; i < np; i++) t->m->grad[i] += c->l2 * t->m->params[i];
  }
  t->gnorm = (c->metrics & TD_TRAINER_M_GRAD_NORM) ? td_la_nrm2(np, t->grad) : NAN;
  t->lr = td_sched_lr(&c->sched, c->full_batch ? step + 1 : step);
  const int layer_step = c->layer_every > 0 && step % c->layer_every == 0;
  td_sopt_stats sst;
  double pnorm = NAN;
  if (!c->full_batch) {
    if (layer_step) memcpy(t->prev, t->m->params, np * sizeof *t->prev);
    if ((rc = update(t, h, &sst, err))) return rc;
    if (c->metrics & TD_TRAINER_M_PARAM_NORM) pnorm = td_la_nrm2(np, t->m->params);
    t->train_time += td_trainer_now() - t0;
  }
  if ((rc = td_sink_metric(sink, loss_key, step, t->loss))) return rc;
  if ((c->metrics & TD_TRAINER_M_LR) && (rc = td_sink_metric(sink, "lr", step, t->lr))) return rc;
  if (c->l2 > 0 && (rc = td_sink_metric(sink, "l2_penalty", step, penalty))) return rc;
  if (!c->full_batch && layer_step && (rc = layer_metrics(t->m, t->prev, t->lr, sink, step)))
    return rc;
  if ((c->metrics & TD_TRAINER_M_GRAD_NORM) &&
      (rc = td_sink_metric(sink, "grad_norm", step, t->gnorm)))
    return rc;
  if ((c->metrics & TD_TRAINER_M_PARAM_NORM) &&
      (rc = td_sink_metric(sink, "param_norm", step, pnorm)))
    return rc;
  if (t->so && (rc = td_sopt_log(t->so, &sst, sink, step))) return rc;
  if ((c->metrics & TD_TRAINER_M_TRAIN_ACC) && c->grad_curv && t->cc.y) {
    const int B = t->cc.B;
    const double acc = (double)td_count_correct(t->cc.ws.act[t->m->n_layers], t->cc.y, B,
                                                t->m->cfg.out_dim) / B;
    if ((rc = td_sink_metric(sink, "train_acc", step, acc))) return rc;
  }
  if (c->has_target && !replay) {
    t->ema = c->target_ema * t->ema + (1.0 - c->target_ema) * t->loss;
    t->ema_w = c->target_ema * t->ema_w + (1.0 - c->target_ema);
    if ((rc = td_sink_metric(sink, "train_loss_ema", step, t->ema / t->ema_w))) return rc;
    if (t->ema / t->ema_w <= c->target_loss) t->steps_to_target = step;
  }
  if (!c->full_batch && h->after_step && (rc = h->after_step(t, h->ctx, err))) return rc;
  if ((c->eval_every > 0 && step % c->eval_every == 0) || step == T || t->steps_to_target)
    if ((rc = do_eval(t, h, err))) return rc;
  if (h->analyze && c->analyze_every > 0 && (step % c->analyze_every == 0 || step == T) &&
      (rc = h->analyze(t, h->ctx, err)))
    return rc;
  const int stop = t->steps_to_target > 0;
  if (c->ckpt_every > 0 && (step % c->ckpt_every == 0 || step == T || stop) && step > 0 &&
      !replay &&
      (rc = save_checkpoint(t, err)))
    return rc;
  if (c->full_batch) {
    if (step == T) return 0;
    if ((rc = update(t, h, &sst, err))) return rc;
    t->train_time += td_trainer_now() - t0;
    if (h->after_step && (rc = h->after_step(t, h->ctx, err))) return rc;
    td_sink_progress(sink, step + 1, T);
    return 0;
  }
  td_sink_progress(sink, step, T);
  return t->steps_to_target ? 1 : 0;
}
