/* entk.c: the empirical NTK of an MLP from per-layer Gram products (see entk.h). */
#include "kernels/entk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/la.h"
#include "curv/curv.h"

/* The widest buffer the backpropagated derivatives need: every layer output except that of
 * the input (derivatives with respect to the input are never formed). */
static int back_width(const td_mlp *m) {
  int w = m->cfg.out_dim;
  for (int i = 1; i < m->n_layers; i++)
    if (m->layers[i].n_in > w) w = m->layers[i].n_in;
  return w;
}

int td_entk_estimate(const td_mlp *m, int n1, int n2, int has_x2, int full, double *bytes,
                     td_err *err) {
  if (!m || n1 < 1 || (has_x2 && n2 < 1))
    return td_err_set(err, TD_EINVAL, "x", "empirical NTK: need a model and at least one row");
  if (!has_x2) n2 = n1;
  double N = has_x2 ? (double)n1 + n2 : n1, k = m->cfg.out_dim;
  double np = 0, ws = 0;
  int rc = td_mlp_estimate(&m->cfg, (int)(N < 2147483647.0 ? N : 2147483647.0), &np, &ws, err);
  if (rc) return rc;
  double b = (full ? k * k : 1) * (double)n1 * n2; /* output */
  b += 2.0 * n1 * n2;                             /* G and M */
  if (has_x2) b += N * m->cfg.in_dim;             /* stacked inputs */
  if (m->n_norm) { /* the dense path: J (k N x P), a weighted block (n2 x P), a curv context */
    double cb = 0;
    if ((rc = td_curv_estimate(&m->cfg, (int)(N < 2147483647.0 ? N : 2147483647.0), &cb, err)))
      return rc;
    b += (k * N + n2) * np + 2 * N * k;
    *bytes = 8 * b + cb;
    return 0;
  }
  b += 2.0 * k * N * back_width(m);               /* D, D' */
  *bytes = 8 * b + ws;
  return 0;
}

/* The per-parameter weight of the kernel: c_W[j] w_mult^2 on linear layer j's weights,
 * c_b[j] b_mult^2 on its bias, 1 on norm parameters (their gradients carry no multiplier). */
static void param_weights(const td_mlp *m, const td_entk_opts *o, double *c) {
  for (int i = 0; i < m->n_layers; i++) {
    const td_layer *L = &m->layers[i];
    if (!L->n_params) continue;
    double cw = 1, cb = 1;
    size_t nw = (size_t)L->n_out;
    if (L->kind == TD_LAYER_LINEAR) {
      cw = o->w_scale ? o->w_scale[L->index] : 1;
      cb = o->b_scale ? o->b_scale[L->index] : 1;
      nw = (size_t)L->n_in * L->n_out;
    }
    for (size_t t = 0; t < nw; t++) c[L->off + t] = cw;
    for (size_t t = nw; t < L->n_params; t++) c[L->off + t] = cb;
  }
}

/* The dense path for models with normalization layers (whose parameters the Gram
 * factorization does not handle): the Jacobian J_a (N x P) of each output a, row by row, by
 * td_curv_per_example_vjp with the cotangent e_a in every row (EVAL mode: BatchNorm's running
 * statistics, examples independent; the model's multipliers are inside the products), then
 * Theta_ab = J_a(X) diag(c) J_b(X2)^T by one GEMM per output pair. Xc holds the N stacked
 * rows (X, then X2 from row off2). */
static int entk_dense(const td_mlp *m, const double *params, const double *Xc, int N, int n1,
                      int n2, int off2, const td_entk_opts *o, double *out, td_err *err) {
  const int k = m->cfg.out_dim;
  const size_t P = m->n_params;
  td_curv_ctx c;
  memset(&c, 0, sizeof c);
  double *J = malloc(sizeof(double) * (size_t)k * N * P), *Wb = malloc(sizeof(double) * n2 * P);
  double *Y = calloc((size_t)N * k, sizeof(double)), *U = calloc((size_t)N * k, sizeof(double));
  double *cw = malloc(sizeof(double) * P), *M = malloc(sizeof(double) * (size_t)n1 * n2);
  int rc = TD_ENOMEM;
  if (!J || !Wb || !Y || !U || !cw || !M) {
    td_err_set(err, TD_ENOMEM, NULL, "empirical NTK: out of memory");
    goto out;
  }
  if ((rc = td_curv_init(&c, m, N, err))) goto out;
  td_curv_set_mode(&c, TD_MLP_EVAL);
  if ((rc = td_curv_set_batch(&c, Xc, NULL, Y, N, TD_CURV_MSE, err))) goto out;
  if ((rc = td_curv_set_point(&c, params, err))) {
    td_err_set(err, TD_ERANGE, "x", "empirical NTK: the network's outputs are not finite");
    goto out;
  }
  for (int a = 0; a < k; a++) {
    for (int r = 0; r < N; r++) {
      if (a) U[(size_t)r * k + a - 1] = 0;
      U[(size_t)r * k + a] = 1;
    }
    td_curv_per_example_vjp(&c, U, J + (size_t)a * N * P);
  }
  param_weights(m, o, cw);
  const int full = o->full;
  memset(out, 0, sizeof(double) * (full ? (size_t)k * k : 1) * (size_t)n1 * n2);
  for (int b = 0; b < k; b++) {
    const double *Jb = J + ((size_t)b * N + off2) * P;
    for (int j = 0; j < n2; j++)
      for (size_t p = 0; p < P; p++) Wb[(size_t)j * P + p] = cw[p] * Jb[(size_t)j * P + p];
    for (int a = full ? 0 : b; a < (full ? k : b + 1); a++) {
      /* M (n1 x n2) = J_a(X) (c o J_b(X2))^T */
      td_la_gemm(0, 1, n1, n2, (int)P, 1.0, J + (size_t)a * N * P, Wb, 0.0, M);
      if (!full) {
        for (size_t t = 0; t < (size_t)n1 * n2; t++) out[t] += M[t];
        continue;
      }
      const size_t ld = (size_t)n2 * k;
      for (int i = 0; i < n1; i++)
        for (int j = 0; j < n2; j++)
          out[((size_t)i * k + a) * ld + (size_t)j * k + b] = M[(size_t)i * n2 + j];
    }
  }
  rc = 0;
out:
  td_curv_deinit(&c);
  free(J);
  free(Wb);
  free(Y);
  free(U);
  free(cw);
  free(M);
  return rc;
}

/* out += G o M for output pair (a, b) (M = D_a D2_b^T, n1 x n2); in full mode also the
 * mirrored (b, a) block when `mirror`. */
static void scatter(double *out, const double *G, const double *M, int n1, int n2, int k, int a,
                    int b, int full, int mirror) {
  if (!full) {
    for (size_t t = 0; t < (size_t)n1 * n2; t++) out[t] += G[t] * M[t];
    return;
  }
  size_t ld = (size_t)n2 * k;
  for (int i = 0; i < n1; i++)
    for (int j = 0; j < n2; j++) {
      double v = G[(size_t)i * n2 + j] * M[(size_t)i * n2 + j];
      out[((size_t)i * k + a) * ld + (size_t)j * k + b] += v;
      if (mirror) out[((size_t)j * k + b) * ld + (size_t)i * k + a] += v;
    }
}

int td_entk_compute(const td_mlp *m, const double *params, const double *X, int n1,
                    const double *X2, int n2, const td_entk_opts *o, double *out, td_err *err) {
  td_entk_opts zero = {0};
  if (!o) o = &zero;
  if (!m || !params || !X || !out || n1 < 1 || (X2 && n2 < 1))
    return td_err_set(err, TD_EINVAL, "x", "empirical NTK: need a model, params and rows");
  double need;
  int rc = td_entk_estimate(m, n1, n2, X2 != NULL, o->full, &need, err);
  if (rc) return rc;
  if (o->max_bytes > 0 && need > o->max_bytes)
    return td_err_set(err, TD_ELIMIT, "x",
                      "empirical NTK needs %.0f MB, above the cap of %.0f MB", need / 1048576.0,
                      o->max_bytes / 1048576.0);
  const int sym = X2 == NULL;
  if (sym) n2 = n1;
  const int N = sym ? n1 : n1 + n2, k = m->cfg.out_dim, off2 = sym ? 0 : n1;
  const int d = m->cfg.in_dim, bw = back_width(m);
  double *Xc = NULL, *G = NULL, *M = NULL, *D = NULL, *Dn = NULL;
  td_mlp_ws ws;
  memset(&ws, 0, sizeof ws);
  rc = TD_ENOMEM;
  if (!sym) {
    Xc = malloc(sizeof(double) * (size_t)N * d);
    if (!Xc) goto fail;
    memcpy(Xc, X, sizeof(double) * (size_t)n1 * d);
    memcpy(Xc + (size_t)n1 * d, X2, sizeof(double) * (size_t)n2 * d);
  }
  if (m->n_norm) {
    rc = entk_dense(m, params, sym ? X : Xc, N, n1, n2, off2, o, out, err);
    free(Xc);
    return rc;
  }
  G = malloc(sizeof(double) * (size_t)n1 * n2);
  M = malloc(sizeof(double) * (size_t)n1 * n2);
  D = malloc(sizeof(double) * (size_t)k * N * bw);
  Dn = malloc(sizeof(double) * (size_t)k * N * bw);
  if (!G || !M || !D || !Dn) goto fail;
  if ((rc = td_mlp_ws_init(&ws, m, N, err))) goto out;
  td_mlp_ws_set_mode(&ws, TD_MLP_EVAL, 0);
  td_mlp_forward(m, &ws, params, sym ? X : Xc, N);
  memset(out, 0, sizeof(double) * (o->full ? (size_t)k * k : 1) * (size_t)n1 * n2);

  /* D: k blocks of (N x w), block a = d f_a / d (current layer output), rows = examples.
   * At the model output it is e_a in every row. */
  int w = k;
  memset(D, 0, sizeof(double) * (size_t)k * N * k);
  for (int a = 0; a < k; a++)
    for (int r = 0; r < N; r++) D[((size_t)a * N + r) * k + a] = 1;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    const td_layer *L = &m->layers[i];
    size_t blk = (size_t)N * w; /* block stride of D */
    if (L->kind == TD_LAYER_LINEAR) {
      const double *A = ws.act[i], *W = params + L->off;
      /* the model's multipliers (model.h td_param_kind): d f / d W = w_mult d f / d W_eff */
      double cw = (o->w_scale ? o->w_scale[L->index] : 1) * (L->w_mult * L->w_mult),
             cb = (o->b_scale ? o->b_scale[L->index] : 1) * (L->b_mult * L->b_mult);
      /* G (n1 x n2) = cw A1 A2^T + cb: A1 rows 0..n1, A2 rows off2..off2+n2 (transpose the
       * second operand: both stored row-major with n_in columns) */
      for (size_t t = 0; t < (size_t)n1 * n2; t++) G[t] = cb;
      td_la_gemm(0, 1, n1, n2, L->n_in, cw, A, A + (size_t)off2 * L->n_in, 1.0, G);
      for (int a = 0; a < k; a++) {
        for (int b = o->full ? (sym ? a : 0) : a; b < (o->full ? k : a + 1); b++) {
          /* M = D_a[rows of X] D_b[rows of X2]^T (n1 x n2), inner dimension n_out = w */
          td_la_gemm(0, 1, n1, n2, w, 1.0, D + a * blk, D + b * blk + (size_t)off2 * w, 0.0, M);
          scatter(out, G, M, n1, n2, k, a, b, o->full, o->full && sym && b != a);
        }
      }
      if (i == 0) break;
      /* Dn (k N x n_in) = D (k N x n_out) W (n_out x n_in): the chain rule through
       * out = inp W^T + b; the k blocks are stacked rows, so one product does them all */
      td_la_gemm(0, 0, k * N, L->n_in, L->n_out, L->w_mult, D, W, 0.0, Dn);
      double *t = D;
      D = Dn;
      Dn = t;
      w = L->n_in;
    } else if (L->kind == TD_LAYER_RELU) {
      const double *h = ws.act[i]; /* pre-activation (N x w) */
      for (int a = 0; a < k; a++)
        for (size_t t = 0; t < (size_t)N * w; t++)
          if (!(h[t] > 0)) D[a * blk + t] = 0;
    } else if (L->kind == TD_LAYER_TANH) {
      const double *y = ws.act[i + 1];
      for (int a = 0; a < k; a++)
        for (size_t t = 0; t < (size_t)N * w; t++) D[a * blk + t] *= 1 - y[t] * y[t];
    }
  }
  rc = 0;
  goto out;
fail:
  td_err_set(err, TD_ENOMEM, NULL, "empirical NTK: out of memory");
out:
  td_mlp_ws_deinit(&ws);
  free(Xc);
  free(G);
  free(M);
  free(D);
  free(Dn);
  return rc;
}
