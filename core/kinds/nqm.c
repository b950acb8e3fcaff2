/* nqm.c: the `nqm` experiment kind: noisy quadratic model, steps to a target loss (chapter 7). */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scaling/nqm.h"
#include "kinds/registry.h"

/* Metrics: "loss" (the expected loss in exact mode, the replica mean in sample mode) and, in
 * exact mode, "loss_bias" and "loss_variance" (its parts due to the mean and to the noise).
 * Logged at step 0, every `log_every` steps (0: auto, max(1, max_steps / 5000)), at the step
 * the target is first reached and at the last step.
 * Summary: steps_to_target (the first step whose loss is <= target_loss; JSON null when the
 * target is absent or was not reached within max_steps), reached_target, initial_loss,
 * final_loss, final_step, steady_state_risk (closed form; null when the iteration is
 * unstable), stable, lr (the one used), tuned_lr (tune_lr found an lr reaching the target;
 * when none does, the given lr is used), max_lr_h (max_i a_i h_i), effective_lr (lr / (1 - momentum), Zhang et
 * al.'s effective learning rate), optimizer, mode.
 * Diverged (TD_EDIVERGED) when the loss is non-finite or exceeds 1e8 times
 * max(initial loss, 1/2 sum_i h_i a_i c_i / B); the summary then has diverged_step. */
static const td_param nqm_params[] = {
    {"dim", TD_PT_INT, "100", 1, 100000, NULL, 0, "number of coordinates (Hessian eigenvalues)"},
    {"h", TD_PT_NUM_LIST, NULL, 1e-12, 1e12, NULL, 100000,
     "curvatures h_i, one per coordinate (absent: h_i = 1/i, Zhang et al. 2019)"},
    {"c", TD_PT_NUM_LIST, NULL, 0, 1e12, NULL, 100000,
     "per-example gradient-noise variances c_i (absent: c_i = 1/i, i.e. C = H)"},
    {"optimizer.name", TD_PT_STR, "\"sgd\"", 0, 0, "sgd|heavy_ball|precond|ema", 0,
     "sgd takes no momentum/power/ema_decay; heavy_ball, precond and ema run the general "
     "update (preconditioned heavy ball with iterate EMA) with the knobs given"},
    {"optimizer.momentum", TD_PT_NUM, "0", 0, 0.9999, NULL, 0,
     "heavy-ball momentum beta: v' = beta v - a g, theta' = theta + v'"},
    {"optimizer.power", TD_PT_NUM, "0", 0, 2, NULL, 0,
     "preconditioning power p: per-coordinate step a_i = lr h_i^-p (P = H^-p)"},
    {"optimizer.ema_decay", TD_PT_NUM, "0", 0, 0.9999, NULL, 0,
     "iterate averaging: avg' = gamma avg + (1-gamma) theta'; the loss is taken at avg"},
    {"lr", TD_PT_NUM, "0.5", 1e-12, 1e6, NULL, 0, "learning rate (ignored when tune_lr)"},
    {"tune_lr", TD_PT_BOOL, "false", 0, 0, NULL, 0,
     "exact mode: use the lr that minimizes steps_to_target (log grid below the stability "
     "limit, as Zhang et al. tune per batch size); needs target_loss"},
    {"batch_size", TD_PT_INT, "16", 1, 1e9, NULL, 0, "batch size B: gradient noise c_i / B"},
    {"target_loss", TD_PT_NUM, NULL, 0, 1e300, NULL, 0,
     "target expected loss for steps_to_target (absent: no target)"},
    {"stop_at_target", TD_PT_BOOL, "true", 0, 0, NULL, 0, "end the run when the target is reached"},
    {"max_steps", TD_PT_INT, "10000", 1, 1e8, NULL, 0, "most optimizer steps"},
    {"mode", TD_PT_STR, "\"exact\"", 0, 0, "exact|sample", 0,
     "exact: propagate means and second moments in closed form; sample: simulate"},
    {"replicas", TD_PT_INT, "1", 1, 1000, NULL, 0,
     "sample mode: independent runs averaged into the logged loss"},
    {"init", TD_PT_NUM, "1", -1e6, 1e6, NULL, 0,
     "theta_0,i for every i (exact mode: same expected loss as any start with E theta^2 = init^2)"},
    {"log_every", TD_PT_INT, "0", 0, 1e8, NULL, 0,
     "steps between logged points (0: max(1, max_steps / 5000))"},
    {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0, "sample mode: noise seed"},
};

static int nqm_check(const json_t *p, td_estimate *est, td_err *err) {
  long dim = td_param_int(p, "dim", 100);
  const char *lists[] = {"h", "c"};
  for (int i = 0; i < 2; i++) {
    const json_t *l = td_param_get(p, lists[i]);
    if (l && (long)json_array_size(l) != dim) {
      char f[32];
      snprintf(f, sizeof f, "params.%s", lists[i]);
      return td_err_set(err, TD_EINVAL, f, "%s has %zu entries but dim is %ld", f,
                        json_array_size(l), dim);
    }
  }
  const char *name = td_param_str(p, "optimizer.name", "sgd");
  if (strcmp(name, "sgd") == 0) {
    const char *knobs[] = {"optimizer.momentum", "optimizer.power", "optimizer.ema_decay"};
    for (int i = 0; i < 3; i++)
      if (td_param_num(p, knobs[i], 0) != 0) {
        char f[48];
        snprintf(f, sizeof f, "params.%s", knobs[i]);
        return td_err_set(err, TD_EINVAL, f,
                          "%s must be 0 for optimizer sgd (use heavy_ball, precond or ema)", f);
      }
  }
  int sample = strcmp(td_param_str(p, "mode", "exact"), "sample") == 0;
  if (td_param_bool(p, "tune_lr", 0)) {
    if (!td_param_has(p, "target_loss"))
      return td_err_set(err, TD_EINVAL, "params.tune_lr",
                        "params.tune_lr needs params.target_loss (it minimizes steps_to_target)");
    if (sample)
      return td_err_set(err, TD_EINVAL, "params.tune_lr",
                        "params.tune_lr needs mode \"exact\"");
  }
  long R = td_param_int(p, "replicas", 1);
  est->bytes = td_nqm_bytes((size_t)dim, sample, (size_t)R);
  est->n_params = (double)dim;
  return 0;
}

static double *list_copy(const json_t *l) {
  size_t n = json_array_size(l);
  double *v = n ? malloc(n * sizeof *v) : NULL;
  for (size_t i = 0; v && i < n; i++) v[i] = json_number_value(json_array_get(l, i));
  return v;
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static int nqm_run(const json_t *p, td_sink *sink, json_t **summary, td_err *err) {
  *summary = NULL;
  td_estimate est;
  int rc = nqm_check(p, &est, err);
  if (rc) return rc;
  td_nqm_config cfg = {0};
  cfg.dim = (size_t)td_param_int(p, "dim", 100);
  const json_t *hl = td_param_get(p, "h"), *cl = td_param_get(p, "c");
  double *h = hl ? list_copy(hl) : NULL, *c = cl ? list_copy(cl) : NULL;
  if ((hl && !h) || (cl && !c)) {
    free(h);
    free(c);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  cfg.h = h;
  cfg.c = c;
  cfg.lr = td_param_num(p, "lr", 0.5);
  cfg.momentum = td_param_num(p, "optimizer.momentum", 0);
  cfg.power = td_param_num(p, "optimizer.power", 0);
  cfg.ema = td_param_num(p, "optimizer.ema_decay", 0);
  cfg.batch = (double)td_param_int(p, "batch_size", 16);
  cfg.init = td_param_num(p, "init", 1);
  const char *mode = td_param_str(p, "mode", "exact");
  cfg.sample = strcmp(mode, "sample") == 0;
  cfg.replicas = (size_t)td_param_int(p, "replicas", 1);
  cfg.seed = (uint64_t)td_param_int(p, "seed", 0);
  long max_steps = td_param_int(p, "max_steps", 10000);
  int tuned = td_param_bool(p, "tune_lr", 0);
  long tuned_steps = -1;
  if (tuned) {
    double best_lr;
    rc = td_nqm_tune_lr(&cfg, td_param_num(p, "target_loss", 0), max_steps, sink, &best_lr,
                        &tuned_steps, err);
    if (!rc && isfinite(best_lr)) cfg.lr = best_lr;
  }
  td_nqm *q = NULL;
  if (!rc) rc = td_nqm_create(&cfg, &q, err);
  free(h);
  free(c);
  if (rc) return rc;

  long every = td_param_int(p, "log_every", 0);
  if (every <= 0) every = max_steps / 5000 > 1 ? max_steps / 5000 : 1;
  int has_target = td_param_has(p, "target_loss");
  double target = td_param_num(p, "target_loss", 0);
  int stop_at = td_param_bool(p, "stop_at_target", 1);

  double bias, L = td_nqm_loss(q, &bias), L0 = L;
  double steady = td_nqm_steady_risk(q);
  double noise_ref = fmax(td_nqm_noise_scale(q), isfinite(steady) ? steady : 0);
  double bound = 1e8 * fmax(fmax(L0, noise_ref), 1e-300);

  long steps_to_target = (has_target && L <= target) ? 0 : -1;
  int exact = !cfg.sample;
  td_sink_metric(sink, "loss", 0, L);
  if (exact) {
    td_sink_metric(sink, "loss_bias", 0, bias);
    td_sink_metric(sink, "loss_variance", 0, L - bias);
  }
  long t = 0, diverged = -1;
  int cancelled = 0;
  if (!(steps_to_target == 0 && stop_at)) {
    for (t = 1; t <= max_steps; t++) {
      if (td_sink_should_stop(sink)) {
        cancelled = 1;
        t--;
        break;
      }
      td_nqm_step(q);
      L = td_nqm_loss(q, &bias);
      int reached = has_target && steps_to_target < 0 && L <= target;
      if (reached) steps_to_target = t;
      int bad = !isfinite(L) || L > bound;
      if (bad) diverged = t;
      if (t % every == 0 || reached || t == max_steps || bad || (reached && stop_at)) {
        td_sink_metric(sink, "loss", t, L);
        if (exact) {
          td_sink_metric(sink, "loss_bias", t, bias);
          td_sink_metric(sink, "loss_variance", t, L - bias);
        }
      }
      if (t % every == 0) td_sink_progress(sink, t, max_steps);
      if (bad || (reached && stop_at)) break;
    }
    if (t > max_steps) t = max_steps;
  }
  td_sink_progress(sink, t, max_steps);

  json_t *s = json_object();
  json_object_set_new(s, "steps_to_target",
                      steps_to_target >= 0 ? json_integer(steps_to_target) : json_null());
  json_object_set_new(s, "reached_target", json_boolean(steps_to_target >= 0));
  json_object_set_new(s, "target_loss", has_target ? json_real(target) : json_null());
  json_object_set_new(s, "initial_loss", jnum(L0));
  json_object_set_new(s, "final_loss", jnum(L));
  json_object_set_new(s, "final_step", json_integer(t));
  json_object_set_new(s, "steady_state_risk", jnum(steady));
  json_object_set_new(s, "stable", json_boolean(td_nqm_stable(q)));
  json_object_set_new(s, "max_lr_h", jnum(td_nqm_max_ah(q)));
  json_object_set_new(s, "lr", jnum(cfg.lr));
  json_object_set_new(s, "tuned_lr", json_boolean(tuned && tuned_steps >= 0));
  json_object_set_new(s, "effective_lr", jnum(cfg.lr / (1 - cfg.momentum)));
  json_object_set_new(s, "optimizer", json_string(td_param_str(p, "optimizer.name", "sgd")));
  json_object_set_new(s, "mode", json_string(mode));
  td_nqm_destroy(q);
  if (diverged >= 0) {
    json_object_set_new(s, "diverged_step", json_integer(diverged));
    *summary = s;
    return td_err_set(err, TD_EDIVERGED, "params.lr",
                      "the loss %s at step %ld (lr %g, max a_i h_i = %.3g)",
                      isfinite(L) ? "exceeded its bound" : "became non-finite", diverged, cfg.lr,
                      json_real_value(json_object_get(s, "max_lr_h")));
  }
  *summary = s;
  if (cancelled) return td_err_set(err, TD_ECANCELLED, NULL, "cancelled at step %ld", t);
  return 0;
}

const td_kind td_kind_nqm = {
    .name = "nqm",
    .doc = "Noisy quadratic model (Zhang et al. 2019): expected loss and steps to a target "
           "for SGD, heavy ball, preconditioning and EMA",
    .chapter = "7",
    .params = nqm_params,
    .n_params = sizeof nqm_params / sizeof nqm_params[0],
    .check = nqm_check,
    .run = nqm_run,
};
