/* ckind_internal.h: pieces shared by the curvature kinds (curvature, eos, taylor): the data and
 * model part of their params, data loading, minibatch order, evaluation and the Hessian/GGN
 * analysis suite that reports metrics and artifacts. Internal to core/kinds (td_ckind__). */
#ifndef TD_CKIND_INTERNAL_H
#define TD_CKIND_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "curv/curv.h"
#include "nn/data.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "base/rng.h"
#include "base/sink.h"

#define TD_CKIND__FMNIST_TRAIN 60000
#define TD_CKIND__FMNIST_TEST 10000
#define TD_CKIND__EVAL_BATCH 500

/* Schema rows for the data/model/loss/seed part (same paths and meanings as `train`).
 * NTRAIN_DOC documents what an absent data.n_train means for the kind (see
 * td_ckind__parse_problem); HIDDEN, ACT, LOSS are default JSON texts. */
#define TD_CKIND__PROBLEM_PARAMS(NTRAIN_DOC, NTEST_DOC, HIDDEN, ACT, LOSS)                        \
  {"data.name", TD_PT_STR, "\"fashion-mnist\"", 0, 0, "fashion-mnist|synthetic", 0,               \
   "dataset: fashion-mnist (IDX files, pixels / 255) or synthetic (linear teacher, loss mse)"},    \
      {"data.n_train", TD_PT_INT, NULL, 1, 1e7, NULL, 0,                                          \
       "training examples: the first n_train in file order (absent: " NTRAIN_DOC                  \
       "; synthetic: all data.n)"},                                                               \
      {"data.n_test", TD_PT_INT, NULL, 1, 1e7, NULL, 0,                                           \
       "held-out examples: the first n_test of the test file (absent: " NTEST_DOC                 \
       "; synthetic: 1000)"},                                                                     \
      {"data.n", TD_PT_INT, "1000", 1, 1e7, NULL, 0, "synthetic: training set size"},             \
      {"data.d", TD_PT_INT, "20", 1, 1e5, NULL, 0, "synthetic: input dimension"},                 \
      {"data.noise", TD_PT_NUM, "0.1", 0, 1e3, NULL, 0, "synthetic: std of the label noise"},     \
      {"data.decay", TD_PT_NUM, "0", 0, 10, NULL, 0,                                              \
       "synthetic: feature covariance eigenvalues are i^-decay, i = 1..d"},                       \
      {"model.hidden", TD_PT_INT_LIST, HIDDEN, 1, 1e5, NULL, 16, "hidden layer widths"},          \
      {"model.activation", TD_PT_STR, ACT, 0, 0, "relu|tanh|linear", 0,                           \
       "activation after every hidden linear layer"},                                             \
      {"model.init_scale", TD_PT_NUM, "1", 0, 1e3, NULL, 0,                                       \
       "multiplier on the init std (He for relu, LeCun otherwise); biases start at 0"},           \
      {"loss", TD_PT_STR, LOSS, 0, 0, "cross_entropy|mse", 0,                                     \
       "cross_entropy (mean -log softmax of the true class) or mse (1/2 mean ||f-y||^2, "         \
       "one-hot targets for classes)"},                                                           \
      {"seed", TD_PT_INT, "0", 0, 9007199254740991.0, NULL, 0,                                    \
       "seed of init, data, shuffling and probe vectors"}

/* Schema rows of the analysis suite (Hessian/GGN spectra) with the given defaults. */
#define TD_CKIND__ANALYSIS_PARAMS(TOPK, TOL, TRACE, DENSITY, GGN)                                 \
  {"analysis.top_k", TD_PT_INT, TOPK, 1, 100, NULL, 0,                                            \
   "Hessian eigenvalues reported per analysis (largest algebraic; sharpness is the first)"},      \
      {"analysis.lanczos_steps", TD_PT_INT, "100", 2, 2000, NULL, 0,                              \
       "Lanczos step cap m (memory (m+1) x n_params doubles); stops early once converged"},       \
      {"analysis.tol", TD_PT_NUM, TOL, 1e-14, 1e-1, NULL, 0,                                      \
       "Lanczos stops when each wanted Ritz residual ||H y - theta y|| <= tol * |theta_max|. "    \
       "sharpness_resid = max(that residual, eps ||H|| sqrt(n_params)) bounds the error of "      \
       "sharpness (Parlett 1998, Thm 4.5.1, plus the rounding of the products; ||H|| ~ the "      \
       "largest |Ritz value|)"},                                                                  \
      {"analysis.largest_magnitude", TD_PT_BOOL, "false", 0, 0, NULL, 0,                          \
       "also report hessian_max_abs_eig, the eigenvalue of largest magnitude (signed)"},          \
      {"analysis.ggn", TD_PT_BOOL, GGN, 0, 0, NULL, 0,                                            \
       "also report ggn_top, the top eigenvalue of the Gauss-Newton matrix J^T H_out J"},         \
      {"analysis.trace_probes", TD_PT_INT, TRACE, 0, 10000, NULL, 0,                              \
       "Rademacher probes of Hutchinson's Hessian trace estimate (0: no trace)"},                 \
      {"analysis.density", TD_PT_BOOL, DENSITY, 0, 0, NULL, 0,                                    \
       "also estimate the Hessian spectral density by stochastic Lanczos quadrature"},            \
      {"analysis.density_probes", TD_PT_INT, "5", 1, 1000, NULL, 0, "SLQ probe vectors"},         \
      {"analysis.density_steps", TD_PT_INT, "60", 2, 2000, NULL, 0, "SLQ Lanczos steps per probe"}, \
      {"analysis.density_grid", TD_PT_INT, "256", 2, 100000, NULL, 0, "SLQ density grid points"}

/* Schema rows of the optimizer (as `train`), default lr LR. */
#define TD_CKIND__OPTIM_PARAMS(LR)                                                                \
  {"optimizer.name", TD_PT_STR, "\"sgd\"", 0, 0, "sgd|adam|adamw", 0, "optimizer"},                 \
      {"optimizer.lr", TD_PT_NUM, LR, 1e-12, 1e3, NULL, 0, "learning rate"},                      \
      {"optimizer.momentum", TD_PT_NUM, "0", 0, 1, NULL, 0, "sgd: momentum (PyTorch convention)"}, \
      {"optimizer.nesterov", TD_PT_BOOL, "false", 0, 0, NULL, 0,                                  \
       "sgd: Nesterov momentum (needs momentum > 0)"},                                            \
      {"optimizer.beta1", TD_PT_NUM, "0.9", 0, 0.999999, NULL, 0, "adam/adamw: beta1"},           \
      {"optimizer.beta2", TD_PT_NUM, "0.999", 0, 0.99999999, NULL, 0, "adam/adamw: beta2"},       \
      {"optimizer.eps", TD_PT_NUM, "1e-8", 1e-30, 1, NULL, 0, "adam/adamw: epsilon"},             \
      {"optimizer.weight_decay", TD_PT_NUM, NULL, 0, 1e3, NULL, 0,                                \
       "sgd/adam: L2 added to the gradient; adamw: decoupled p -= lr*wd*p (PyTorch). Absent: "    \
       "PyTorch's default, 0.01 for adamw and 0 otherwise, written into the stored params "       \
       "(the kind's fill hook: td_optim_fill_params)"}

typedef struct td_ckind__problem {
  int synthetic;
  size_t n_train, n_test; /* effective sizes */
  size_t synth_n;
  td_synth_cfg synth;
  td_mlp_cfg mlp;
  td_curv_loss loss;
  uint64_t seed;
} td_ckind__problem;

/* Parse and cross-check the TD_CKIND__PROBLEM_PARAMS part of validated params; an absent
 * data.n_train (data.n_test) means fmnist_n_train (fmnist_n_test) examples of fashion-mnist
 * (0: all 60000 / 10000), all data.n synthetic ones (1000 synthetic test examples).
 * Errors: TD_EINVAL with the field. */
int td_ckind__parse_problem(const json_t *p, size_t fmnist_n_train, size_t fmnist_n_test,
                            td_ckind__problem *pb /* OUT */, td_err *err);

/* Read TD_CKIND__OPTIM_PARAMS: name, hyperparameters, lr; the number of optimizer state
 * vectors goes to *n_state (may be NULL). Errors: TD_EINVAL (nesterov without momentum). */
int td_ckind__parse_optim(const json_t *p, const char **name /* OUT */, td_optim_hp *hp /* OUT */,
                          double *lr /* OUT */, int *n_state /* OUT */, td_err *err);

/* Bytes of the loaded data sets (plus the decompressed IDX file while loading). */
double td_ckind__data_bytes(const td_ckind__problem *pb);

/* Load train (first n_train) and test (first n_test) sets. Errors of td_data_*. */
int td_ckind__load(const td_ckind__problem *pb, td_dataset *train /* OUT */,
                   td_dataset *test /* OUT */, td_err *err);

/* Center the inputs: subtract the per-feature mean of the first n_train rows of train from
 * every row of train and test (the preprocessing of Cohen et al. 2021's CIFAR experiments). */
void td_ckind__center(td_dataset *train, td_dataset *test);

/* Mean loss and accuracy (NaN for regression sets) of params on the first n examples of ds,
 * in chunks through ws (capacity >= min(n, TD_CKIND__EVAL_BATCH)). Outputs of every chunk
 * are copied to out (n x K) when out is not NULL. */
void td_ckind__evaluate(const td_mlp *m, td_mlp_ws *ws, const double *params,
                        const td_dataset *ds, size_t n, td_curv_loss loss, double *loss_out,
                        double *acc_out, double *out);

/* Epoch-wise shuffled minibatches, as `train` draws them (stream TD_RNG_SHUFFLE). */
typedef struct td_ckind__batcher {
  size_t *perm, n, pos;
  td_rng rng;
  int B;
} td_ckind__batcher;
int td_ckind__batcher_init(td_ckind__batcher *b, size_t n, int B, uint64_t seed, td_err *err);
void td_ckind__batcher_deinit(td_ckind__batcher *b);
/* Gather the next batch (<= B examples; the last of an epoch may be short) into X (B x d)
 * and y or Y (whichever ds has). Returns its size. */
int td_ckind__batcher_next(td_ckind__batcher *b, const td_dataset *ds, double *X, int *y,
                           double *Y);

/* The analysis suite. */
typedef struct td_ckind__ana_opts {
  int top_k;
  size_t lanczos_steps;
  double tol;
  int magnitude, ggn;
  int trace_probes;
  int density, density_probes, density_steps, density_grid;
  uint64_t seed;
  int artifacts;        /* per-step eigenvalue/density artifacts and the rolling history */
} td_ckind__ana_opts;

/* Read TD_CKIND__ANALYSIS_PARAMS. */
void td_ckind__parse_analysis(const json_t *p, td_ckind__ana_opts *o /* OUT */);

/* Peak bytes of one analysis for n parameters (Lanczos basis, SLQ basis, probes). */
double td_ckind__analysis_bytes(const td_ckind__ana_opts *o, double n_params);

typedef struct td_ckind__ana_result {
  double sharpness, resid;
  size_t steps, n_matvec;
  int converged;
} td_ckind__ana_result;

/* Run the suite on c (its point set) and report at `step`: metrics sharpness,
 * sharpness_resid (max(Ritz residual, eps ||H|| sqrt(n)): a bound on the error of sharpness,
 * see ckind.c), lanczos_steps, hessian_eig_1..k, analysis_loss, and when asked
 * hessian_max_abs_eig, ggn_top, hessian_trace (+ hessian_trace_stderr); artifacts
 * eigenvalues_step<step>.json, density_step<step>.json and the rolling eigenvalues.json /
 * density.json when o->artifacts. `hist` (a JSON object owned by the caller, may be NULL)
 * accumulates the rolling history. Errors: those of the spectral routines (TD_ERANGE for a
 * non-finite product), sink errors. */
int td_ckind__analyze(td_curv_ctx *c, const td_ckind__ana_opts *o, long step, td_sink *sink,
                      json_t *hist, td_ckind__ana_result *res /* OUT */, td_err *err);

/* Put a number in a JSON object; NaN/Inf become the strings "NaN", "Infinity", "-Infinity". */
void td_ckind__set_num(json_t *o, const char *key, double v);

/* The loss of outputs z (B x K) against the labels/targets of rows [s, s + B) of ds, with the
 * mean gradient dz (B x K, may be NULL). */
void td_ckind__loss(td_curv_loss loss, const td_dataset *ds, size_t s, const double *z, int B,
                    double *l /* OUT */, double *dz /* OUT */);

#endif
