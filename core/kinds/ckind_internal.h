/* ckind_internal.h: the Hessian/GGN analysis suite shared by the curvature kinds (curvature,
 * eos): its schema rows, options, and the analysis that reports metrics and artifacts.
 * Internal to core/kinds (td_ckind__). The training loop, data and evaluation are the
 * trainer's (core/train/trainer.h). */
#ifndef TD_CKIND_INTERNAL_H
#define TD_CKIND_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "curv/curv.h"
#include "base/sink.h"

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

#endif
