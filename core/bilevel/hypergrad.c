/* hypergrad.c: hypergradients of an unrolled heavy-ball inner problem: stored-trajectory
 * reverse mode, exact fixed-point reversal, forward mode and the implicit function theorem. */
#include "bilevel/hypergrad.h"

#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/la.h"
#include "curv/cg.h"
#include "curv/power.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int check_problem(const td_hg_problem *p, td_err *err) {
  if (!p || p->n == 0 || p->n_groups < 1 || !p->group_off || !p->point || !p->hvp || !p->val)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: incomplete inner problem");
  if (p->group_off[0] != 0 || p->group_off[p->n_groups] != p->n)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: groups must cover [0, n)");
  for (int j = 0; j < p->n_groups; j++)
    if (p->group_off[j + 1] <= p->group_off[j])
      return td_err_set(err, TD_EINVAL, NULL, "hypergradient: empty or unordered group %d", j);
  return 0;
}

static int check_unroll(const td_hg_problem *p, const td_hg_unroll *u, td_err *err) {
  int rc = check_problem(p, err);
  if (rc) return rc;
  if (!u || u->T < 1 || !u->lrs || !u->lambda || !u->w0 || !(u->mu >= 0 && u->mu < 1))
    return td_err_set(err, TD_EINVAL, NULL,
                      "hypergradient: the unroll needs T >= 1, lrs, lambda, w0, mu in [0, 1)");
  for (int t = 0; t < u->T; t++)
    if (!(u->lrs[t] > 0) || !isfinite(u->lrs[t]))
      return td_err_set(err, TD_EINVAL, NULL, "hypergradient: lr_%d must be > 0", t);
  for (int j = 0; j < p->n_groups; j++)
    if (!(u->lambda[j] >= 0) || !isfinite(u->lambda[j]))
      return td_err_set(err, TD_EINVAL, NULL, "hypergradient: lambda_%d must be >= 0", j);
  return 0;
}

/* lam (P) = the per-parameter L2 strength. */
static void expand_lambda(const td_hg_problem *p, const double *lambda, double *lam) {
  for (int j = 0; j < p->n_groups; j++)
    for (size_t i = p->group_off[j]; i < p->group_off[j + 1]; i++) lam[i] = lambda[j];
}

/* g += lam .* w */
static void add_l2(size_t n, const double *lam, const double *w, double *g) {
  for (size_t i = 0; i < n; i++) g[i] += lam[i] * w[i];
}

/* d_lambda_j += w_{G_j} . dv_{G_j} */
static void acc_dlambda(const td_hg_problem *p, const double *w, const double *dv, double *dl) {
  for (int j = 0; j < p->n_groups; j++) {
    size_t a = p->group_off[j], b = p->group_off[j + 1];
    dl[j] += td_la_dot(b - a, w + a, dv + a);
  }
}

/* d_wts_i += grad l_i . dv / n at the point set last (ex: n_ex scratch); no-op without d_wts */
static void acc_dwts(const td_hg_problem *p, const double *dv, double *dwts, double *ex) {
  if (!dwts) return;
  p->ex_dot(p->ctx, dv, ex);
  for (size_t i = 0; i < p->n_ex; i++) dwts[i] += ex[i];
}

/* The data-weight output needs ex_dot; allocate its scratch (n_ex) or fail. */
static int wts_setup(const td_hg_problem *p, const td_hg_result *res, double **ex, td_err *err) {
  *ex = NULL;
  if (!res->d_wts) return 0;
  if (!p->ex_dot || p->n_ex == 0)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: this inner problem has no data weights");
  *ex = malloc(p->n_ex * sizeof **ex);
  if (!*ex) return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
  memset(res->d_wts, 0, p->n_ex * sizeof *res->d_wts);
  return 0;
}

static int finite_vec(size_t n, const double *x) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

/* ------------------------------------------------------------------ double-precision unroll */

/* One step: v = mu v + g(w) + Lambda w; w -= lr v. */
static int step_fwd(const td_hg_problem *p, const double *lam, double mu, double lr, double *w,
                    double *v, double *g, td_err *err) {
  double loss;
  int rc = p->point(p->ctx, w, &loss, g, err);
  if (rc) return rc;
  size_t n = p->n;
  for (size_t i = 0; i < n; i++) {
    v[i] = mu * v[i] + (g[i] + lam[i] * w[i]);
    w[i] -= lr * v[i];
  }
  if (!finite_vec(n, w))
    return td_err_set(err, TD_ERANGE, NULL, "hypergradient: the inner iterate is not finite");
  return 0;
}

int td_hg_forward(const td_hg_problem *p, const td_hg_unroll *u, double *wT, double *vT,
                  double *traj, td_err *err) {
  int rc = check_unroll(p, u, err);
  if (rc) return rc;
  size_t n = p->n;
  double *buf = malloc(3 * n * sizeof *buf);
  if (!buf) return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
  double *lam = buf, *v = buf + n, *g = buf + 2 * n;
  expand_lambda(p, u->lambda, lam);
  memset(v, 0, n * sizeof *v);
  memcpy(wT, u->w0, n * sizeof *wT);
  if (traj) memcpy(traj, wT, n * sizeof *wT);
  for (int t = 0; t < u->T && !rc; t++) {
    rc = step_fwd(p, lam, u->mu, u->lrs[t], wT, v, g, err);
    if (!rc && traj) memcpy(traj + (size_t)(t + 1) * n, wT, n * sizeof *wT);
  }
  if (!rc && vT) memcpy(vT, v, n * sizeof *v);
  free(buf);
  return rc;
}

/* The body of the reverse recursion at step t, given w_t (w), v_{t+1} (v) and the point set at
 * w_t: updates dw, dv, d_lambda, d_lr. hv is scratch. */
static void reverse_step(const td_hg_problem *p, const double *lam, double mu, double lr,
                         const double *w, const double *v, double *dw, double *dv, double *hv,
                         double *dl, double *dlr_t, double *dwts, double *ex) {
  size_t n = p->n;
  if (dlr_t) *dlr_t = -td_la_dot(n, v, dw);
  td_la_axpy(n, -lr, dw, dv);
  acc_dlambda(p, w, dv, dl);
  acc_dwts(p, dv, dwts, ex);
  p->hvp(p->ctx, dv, hv);
  for (size_t i = 0; i < n; i++) {
    dw[i] += hv[i] + lam[i] * dv[i];
    dv[i] *= mu;
  }
}

int td_hg_reverse(const td_hg_problem *p, const td_hg_unroll *u, int truncate,
                  td_hg_result *res, td_err *err) {
  int rc = check_unroll(p, u, err);
  if (rc) return rc;
  if (!res || !res->d_lambda)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: no result arrays");
  double t0 = now_s();
  size_t n = p->n;
  int T = u->T, K = (truncate <= 0 || truncate > T) ? T : truncate;
  double *ex;
  if ((rc = wts_setup(p, res, &ex, err))) return rc;
  double *buf = malloc((5 * n + 2 * (size_t)K * n) * sizeof *buf);
  if (!buf) {
    free(ex);
    return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
  }
  double *lam = buf, *w = buf + n, *v = buf + 2 * n, *g = buf + 3 * n, *hv = buf + 4 * n;
  double *W = buf + 5 * n, *V = W + (size_t)K * n; /* w_t and v_{t+1}, t = T-K .. T-1 */
  double *dw = g, *dv = v;                         /* reused after the forward pass */
  expand_lambda(p, u->lambda, lam);
  memset(v, 0, n * sizeof *v);
  memcpy(w, u->w0, n * sizeof *w);
  res->n_grad = res->n_hvp = 0;
  for (int t = 0; t < T && !rc; t++) {
    int k = t - (T - K);
    if (k >= 0) memcpy(W + (size_t)k * n, w, n * sizeof *w);
    rc = step_fwd(p, lam, u->mu, u->lrs[t], w, v, g, err);
    res->n_grad++;
    if (!rc && k >= 0) memcpy(V + (size_t)k * n, v, n * sizeof *v);
  }
  if (!rc) rc = p->val(p->ctx, w, &res->val_loss, dw, err);
  if (!rc) {
    memset(dv, 0, n * sizeof *dv);
    memset(res->d_lambda, 0, (size_t)p->n_groups * sizeof *res->d_lambda);
    if (res->d_lr) memset(res->d_lr, 0, (size_t)T * sizeof *res->d_lr);
    for (int k = K - 1; k >= 0 && !rc; k--) {
      int t = T - K + k;
      double loss;
      rc = p->point(p->ctx, W + (size_t)k * n, &loss, hv, err); /* the HVP's point */
      res->n_grad++;
      if (rc) break;
      reverse_step(p, lam, u->mu, u->lrs[t], W + (size_t)k * n, V + (size_t)k * n, dw, dv, hv,
                   res->d_lambda, res->d_lr ? res->d_lr + t : NULL, res->d_wts, ex);
      res->n_hvp++;
    }
  }
  res->bytes = (5.0 * n + 2.0 * K * n + (ex ? p->n_ex : 0)) * sizeof(double);
  res->secs = now_s() - t0;
  free(buf);
  free(ex);
  return rc;
}

/* ------------------------------------------------------------------ exact reversal */

int td_hg_mu_rational(double mu, uint32_t *num, uint32_t *den, td_err *err) {
  if (!(mu > 0 && mu < 1))
    return td_err_set(err, TD_EINVAL, "params.momentum",
                      "exact reversal needs a momentum in (0, 1), got %g", mu);
  /* Continued-fraction convergents h/k of mu; keep the last with k <= 65536. */
  double x = mu;
  uint64_t h0 = 0, h1 = 1, k0 = 1, k1 = 0, bn = 0, bd = 1;
  for (int it = 0; it < 64; it++) {
    double a = floor(x);
    uint64_t ai = (uint64_t)a;
    uint64_t h2 = ai * h1 + h0, k2 = ai * k1 + k0;
    if (k2 > 65536) break;
    bn = h2;
    bd = k2;
    h0 = h1, h1 = h2, k0 = k1, k1 = k2;
    double f = x - a;
    if (f < 1e-12 || fabs((double)bn / (double)bd - mu) <= 1e-17) break;
    x = 1.0 / f;
  }
  if (bn == 0 || bn >= bd)
    return td_err_set(err, TD_EINVAL, "params.momentum", "momentum %g has no usable rational",
                      mu);
  *num = (uint32_t)bn;
  *den = (uint32_t)bd;
  return 0;
}

#define FIX_LIMIT 2048.0 /* 2^(63 - TD_HG_RADIX) */
#define FIX_ONE 4503599627370496.0 /* 2^TD_HG_RADIX = 2^52 */

static int to_fix(double x, int64_t *out) {
  if (!(fabs(x) < FIX_LIMIT)) return TD_ERANGE;
  *out = (int64_t)llrint(x * FIX_ONE); /* exact scaling by a power of two, then round */
  return 0;
}

static double from_fix(int64_t i) { return (double)i * (1.0 / FIX_ONE); }

/* The per-parameter mixed-radix store: L little-endian 32-bit limbs each.
 * push: S <- S d + r (returns non-zero on overflow of the L limbs); pop: q = S mod n,
 * S <- S div n. */
static int store_push(uint32_t *S, int L, uint32_t d, uint32_t r) {
  uint64_t carry = r;
  for (int k = 0; k < L; k++) {
    uint64_t t = (uint64_t)S[k] * d + carry;
    S[k] = (uint32_t)t;
    carry = t >> 32;
  }
  return carry != 0;
}

static uint32_t store_pop(uint32_t *S, int L, uint32_t n) {
  uint64_t rem = 0;
  for (int k = L - 1; k >= 0; k--) {
    uint64_t t = (rem << 32) | S[k];
    S[k] = (uint32_t)(t / n);
    rem = t % n;
  }
  return (uint32_t)rem;
}

/* v <- v * num / den exactly, the lost remainder kept in S (see td_hg_reversal). */
static int rat_mul(int64_t *v, uint32_t *S, int L, uint32_t num, uint32_t den) {
  /* floor division v = x den + r, 0 <= r < den (no intermediate can overflow) */
  int64_t x = *v / (int64_t)den, r = *v % (int64_t)den;
  if (r < 0) r += den, x -= 1;
  if (store_push(S, L, den, (uint32_t)r)) return TD_ERANGE;
  int64_t y;
  if (__builtin_mul_overflow(x, (int64_t)num, &y)) return TD_ERANGE;
  *v = y + (int64_t)store_pop(S, L, num);
  return 0;
}

static double store_bits(const uint32_t *S, int L, size_t n) {
  double bits = 0;
  for (size_t i = 0; i < n; i++)
    for (int k = L - 1; k >= 0; k--)
      if (S[i * L + k]) {
        bits += 32.0 * k + (32 - __builtin_clz(S[i * L + k]));
        break;
      }
  return bits;
}

int td_hg_reversal(const td_hg_problem *p, const td_hg_unroll *u, td_hg_result *res,
                   double *traj_fwd, double *traj_rev, td_err *err) {
  int rc = check_unroll(p, u, err);
  if (rc) return rc;
  if (!res || !res->d_lambda)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: no result arrays");
  uint32_t num, den;
  if ((rc = td_hg_mu_rational(u->mu, &num, &den, err))) return rc;
  double *ex;
  if ((rc = wts_setup(p, res, &ex, err))) return rc;
  double t0 = now_s();
  size_t n = p->n;
  int T = u->T;
  /* Store size: S_t + 1 <= (S_{t-1} + 1) d / n + 1, so S_T < (d/n)^T (T + 1) d: bits. */
  double bits = T * log2((double)den / num) + log2(T + 1.0) + log2((double)den) + 2;
  int L = (int)ceil(bits / 32.0) + 1;
  double *buf = malloc(5 * n * sizeof *buf);
  int64_t *iw = malloc(2 * n * sizeof *iw);
  int64_t *i0 = malloc(2 * n * sizeof *i0);
  uint32_t *S = calloc(n * (size_t)L, sizeof *S);
  if (!buf || !iw || !i0 || !S) {
    free(buf), free(iw), free(i0), free(S), free(ex);
    return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
  }
  double *lam = buf, *w = buf + n, *g = buf + 2 * n, *dw = buf + 3 * n, *dv = buf + 4 * n;
  double *hv = g;
  int64_t *iv = iw + n;
  expand_lambda(p, u->lambda, lam);
  res->n_grad = res->n_hvp = 0;
  res->mu_num = num;
  res->mu_den = den;
  for (size_t i = 0; i < n && !rc; i++) {
    if (to_fix(u->w0[i], &iw[i])) rc = TD_ERANGE;
    iv[i] = 0;
  }
  if (rc) {
    td_err_set(err, TD_ERANGE, NULL, "exact reversal: |w0| must stay below %g", FIX_LIMIT);
    goto done;
  }
  memcpy(i0, iw, 2 * n * sizeof *iw);
  /* forward: v <- mu v + g(w) + Lambda w ; w <- w - lr v, all on the fixed-point grid */
  for (int t = 0; t < T && !rc; t++) {
    for (size_t i = 0; i < n; i++) w[i] = from_fix(iw[i]);
    if (traj_fwd) memcpy(traj_fwd + (size_t)t * n, w, n * sizeof *w);
    double loss;
    rc = p->point_at ? p->point_at(p->ctx, t, 0, w, &loss, g, err)
                     : p->point(p->ctx, w, &loss, g, err);
    if (rc) goto done;
    res->n_grad++;
    double lr = u->lrs[t];
    for (size_t i = 0; i < n; i++) {
      int64_t gi, step;
      if (rat_mul(&iv[i], S + i * L, L, num, den) || to_fix(g[i] + lam[i] * w[i], &gi) ||
          __builtin_add_overflow(iv[i], gi, &iv[i]) || to_fix(lr * from_fix(iv[i]), &step) ||
          __builtin_sub_overflow(iw[i], step, &iw[i])) {
        rc = td_err_set(err, TD_ERANGE, NULL,
                        "exact reversal: a value left the fixed-point range (|x| < %g) at "
                        "step %d",
                        FIX_LIMIT, t);
        goto done;
      }
    }
  }
  res->store_bits = store_bits(S, L, n);
  for (size_t i = 0; i < n; i++) w[i] = from_fix(iw[i]);
  if (traj_fwd) memcpy(traj_fwd + (size_t)T * n, w, n * sizeof *w);
  if (traj_rev) memcpy(traj_rev + (size_t)T * n, w, n * sizeof *w);
  if ((rc = p->val(p->ctx, w, &res->val_loss, dw, err))) goto done;
  memset(dv, 0, n * sizeof *dv);
  memset(res->d_lambda, 0, (size_t)p->n_groups * sizeof *res->d_lambda);
  if (res->d_lr) memset(res->d_lr, 0, (size_t)T * sizeof *res->d_lr);
  /* reverse: undo step t bitwise, then the reverse recursion at (w_t, v_{t+1}) */
  for (int t = T - 1; t >= 0; t--) {
    double lr = u->lrs[t];
    double dlr = 0;
    for (size_t i = 0; i < n; i++) { /* d lr_t = -v_{t+1} . dw ; dv -= lr dw */
      double vi = from_fix(iv[i]);
      dlr -= vi * dw[i];
      dv[i] -= lr * dw[i];
      int64_t step = 0;
      to_fix(lr * vi, &step); /* in range: it was on the forward pass */
      iw[i] += step;
      w[i] = from_fix(iw[i]);
    }
    if (res->d_lr) res->d_lr[t] = dlr;
    if (traj_rev) memcpy(traj_rev + (size_t)t * n, w, n * sizeof *w);
    double loss;
    rc = p->point_at ? p->point_at(p->ctx, t, 1, w, &loss, g, err)
                     : p->point(p->ctx, w, &loss, g, err);
    if (rc) goto done;
    res->n_grad++;
    for (size_t i = 0; i < n; i++) {
      int64_t gi = 0;
      to_fix(g[i] + lam[i] * w[i], &gi);
      iv[i] -= gi;
      rat_mul(&iv[i], S + i * L, L, den, num); /* the inverse of the forward multiplication */
    }
    acc_dlambda(p, w, dv, res->d_lambda);
    acc_dwts(p, dv, res->d_wts, ex);
    p->hvp(p->ctx, dv, hv);
    res->n_hvp++;
    for (size_t i = 0; i < n; i++) {
      dw[i] += hv[i] + lam[i] * dv[i];
      dv[i] *= u->mu;
    }
  }
  res->mismatch = 0;
  for (size_t i = 0; i < 2 * n; i++) res->mismatch += iw[i] != i0[i];
  for (size_t i = 0; i < n * (size_t)L; i++) res->mismatch += S[i] != 0; /* store emptied */
  if (!finite_vec(n, dw))
    rc = td_err_set(err, TD_ERANGE, NULL, "exact reversal: the adjoint is not finite");
done:
  res->bytes = 5.0 * n * sizeof(double) + 4.0 * n * sizeof(int64_t) +
               (double)n * L * sizeof(uint32_t) + (ex ? p->n_ex : 0) * sizeof(double);
  res->secs = now_s() - t0;
  free(buf), free(iw), free(i0), free(S), free(ex);
  return rc;
}

/* ------------------------------------------------------------------ forward mode */

int td_hg_forward_mode(const td_hg_problem *p, const td_hg_unroll *u, td_hg_result *res,
                       td_err *err) {
  int rc = check_unroll(p, u, err);
  if (rc) return rc;
  if (!res || !res->d_lambda)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: no result arrays");
  double t0 = now_s();
  size_t n = p->n, G = (size_t)p->n_groups;
  double *buf = malloc((5 * n + 2 * G * n) * sizeof *buf);
  if (!buf) return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
  double *lam = buf, *w = buf + n, *v = buf + 2 * n, *g = buf + 3 * n, *hz = buf + 4 * n;
  double *Zw = buf + 5 * n, *Zv = Zw + G * n;
  expand_lambda(p, u->lambda, lam);
  memset(v, 0, n * sizeof *v);
  memset(Zw, 0, 2 * G * n * sizeof *Zw);
  memcpy(w, u->w0, n * sizeof *w);
  res->n_grad = res->n_hvp = 0;
  for (int t = 0; t < u->T && !rc; t++) {
    double loss, lr = u->lrs[t];
    if ((rc = p->point(p->ctx, w, &loss, g, err))) break;
    res->n_grad++;
    for (size_t j = 0; j < G; j++) {
      double *zw = Zw + j * n, *zv = Zv + j * n;
      p->hvp(p->ctx, zw, hz);
      res->n_hvp++;
      for (size_t i = 0; i < n; i++) {
        double e = (i >= p->group_off[j] && i < p->group_off[j + 1]) ? w[i] : 0.0;
        zv[i] = u->mu * zv[i] + hz[i] + lam[i] * zw[i] + e;
        zw[i] -= lr * zv[i];
      }
    }
    for (size_t i = 0; i < n; i++) {
      v[i] = u->mu * v[i] + (g[i] + lam[i] * w[i]);
      w[i] -= lr * v[i];
    }
    if (!finite_vec(n, w))
      rc = td_err_set(err, TD_ERANGE, NULL, "hypergradient: the inner iterate is not finite");
  }
  if (!rc) rc = p->val(p->ctx, w, &res->val_loss, g, err);
  if (!rc)
    for (size_t j = 0; j < G; j++) res->d_lambda[j] = td_la_dot(n, g, Zw + j * n);
  res->bytes = (5.0 * n + 2.0 * G * n) * sizeof(double);
  res->secs = now_s() - t0;
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------ IFT */

typedef struct ift_op {
  const td_hg_problem *p;
  const double *lam;
} ift_op;

static void ift_matvec(void *ctx, const double *v, double *out, size_t n) {
  const ift_op *o = ctx;
  o->p->hvp(o->p->ctx, v, out);
  add_l2(n, o->lam, v, out);
}

int td_hg_ift(const td_hg_problem *p, const double *lambda, const double *w,
              const td_hg_ift_opts *o, td_hg_result *res, td_err *err) {
  int rc = check_problem(p, err);
  if (rc) return rc;
  if (!lambda || !w || !o || o->max_iters < 1 || !res || !res->d_lambda)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: bad IFT arguments");
  double t0 = now_s();
  size_t n = p->n;
  size_t wl = td_cg_work_len(n, o->max_iters);
  size_t nb = 5 * n + (o->solver == TD_HG_IFT_CG ? wl : 0);
  double *buf = malloc(nb * sizeof *buf);
  if (!buf) return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
  double *lam = buf, *g = buf + n, *b = buf + 2 * n, *q = buf + 3 * n, *s = buf + 4 * n;
  expand_lambda(p, lambda, lam);
  res->n_grad = res->n_hvp = 0;
  double loss;
  if ((rc = p->point(p->ctx, w, &loss, g, err))) goto done;
  res->n_grad++;
  add_l2(n, lam, w, g);
  res->stationarity = td_la_nrm2(n, g);
  if ((rc = p->val(p->ctx, w, &res->val_loss, b, err))) goto done;
  ift_op op = {p, lam};
  double bn = td_la_nrm2(n, b);
  memset(q, 0, n * sizeof *q);
  if (o->solver == TD_HG_IFT_CG) {
    td_cg_opts co = {.max_iters = o->max_iters, .tol = o->tol};
    td_cg_result cr;
    rc = td_cg_solve(ift_matvec, &op, n, 0.0, b, q, &co, buf + 5 * n, &cr, err);
    if (rc) goto done;
    res->solve_iters = cr.iters;
    res->n_hvp += cr.matvecs;
  } else {
    td_power_opts po = td_power_opts_default();
    po.max_iter = (size_t)(o->power_iters > 0 ? o->power_iters : 100);
    po.tol = 1e-6;
    td_power_result pr;
    rc = td_power_top(ift_matvec, &op, n, &po, NULL, &pr, err);
    if (rc) goto done;
    res->n_hvp += (long)pr.n_matvec;
    res->lambda_max = pr.eigval;
    double alpha = o->alpha > 0 ? o->alpha : 1.0 / fabs(pr.eigval);
    res->alpha = alpha;
    /* q = alpha sum_{k<K} (I - alpha A)^k b: s_k = (I - alpha A)^k b */
    memcpy(s, b, n * sizeof *s);
    for (int k = 0; k < o->max_iters; k++) {
      td_la_axpy(n, 1.0, s, q);
      ift_matvec(&op, s, g, n);
      res->n_hvp++;
      td_la_axpy(n, -alpha, g, s);
    }
    td_la_scal(n, alpha, q);
    res->solve_iters = o->max_iters;
  }
  if (!finite_vec(n, q)) {
    rc = td_err_set(err, TD_ERANGE, NULL, "IFT: the inverse-Hessian-vector product diverged");
    goto done;
  }
  ift_matvec(&op, q, g, n); /* the true residual of the solve */
  res->n_hvp++;
  for (size_t i = 0; i < n; i++) g[i] = b[i] - g[i];
  res->solve_resid = bn > 0 ? td_la_nrm2(n, g) / bn : 0.0;
  for (int j = 0; j < p->n_groups; j++) {
    size_t a = p->group_off[j], e = p->group_off[j + 1];
    res->d_lambda[j] = -td_la_dot(e - a, w + a, q + a);
  }
  if (res->d_wts) { /* d s_i = -grad l_i . q / n; the training point w is still set */
    double *ex;
    if ((rc = wts_setup(p, res, &ex, err))) goto done;
    acc_dwts(p, q, res->d_wts, ex);
    for (size_t i = 0; i < p->n_ex; i++) res->d_wts[i] = -res->d_wts[i];
    free(ex);
  }
done:
  res->bytes = nb * sizeof(double);
  res->secs = now_s() - t0;
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------ ridge */

static int ridge_point(void *ctx, const double *w, double *loss, double *g, td_err *err) {
  td_hg_ridge *q = ctx;
  (void)err;
  /* r = X w - y; loss = ||r||^2 / 2n; g = X^T r / n */
  memcpy(q->rt, q->y, q->n * sizeof *q->rt);
  td_la_gemv(0, (int)q->n, (int)q->d, 1.0, q->X, w, -1.0, q->rt);
  *loss = 0.5 * td_la_dot(q->n, q->rt, q->rt) / q->n;
  td_la_gemv(1, (int)q->n, (int)q->d, 1.0 / q->n, q->X, q->rt, 0.0, g);
  return isfinite(*loss) ? 0 : TD_ERANGE;
}

/* out_i = r_i x_i^T u / n: the gradient of l_i = r_i^2 / 2 is r_i x_i */
static void ridge_ex_dot(void *ctx, const double *u, double *out) {
  td_hg_ridge *q = ctx;
  td_la_gemv(0, (int)q->n, (int)q->d, 1.0, q->X, u, 0.0, out);
  for (size_t i = 0; i < q->n; i++) out[i] *= q->rt[i] / q->n;
}

static void ridge_hvp(void *ctx, const double *v, double *hv) {
  td_hg_ridge *q = ctx;
  td_la_gemv(0, (int)q->d, (int)q->d, 1.0, q->H, v, 0.0, hv);
}

static int ridge_val(void *ctx, const double *w, double *loss, double *g, td_err *err) {
  td_hg_ridge *q = ctx;
  (void)err;
  memcpy(q->r, q->yv, q->m * sizeof *q->r);
  td_la_gemv(0, (int)q->m, (int)q->d, 1.0, q->Xv, w, -1.0, q->r);
  *loss = 0.5 * td_la_dot(q->m, q->r, q->r) / q->m;
  td_la_gemv(1, (int)q->m, (int)q->d, 1.0 / q->m, q->Xv, q->r, 0.0, g);
  return isfinite(*loss) ? 0 : TD_ERANGE;
}

int td_hg_ridge_init(td_hg_ridge *q, const double *X, const double *y, size_t n,
                     const double *Xv, const double *yv, size_t m, size_t d, td_err *err) {
  memset(q, 0, sizeof *q);
  if (!X || !y || !Xv || !yv || n == 0 || m == 0 || d == 0)
    return td_err_set(err, TD_EINVAL, NULL, "ridge: empty problem");
  q->n = n, q->m = m, q->d = d;
  q->X = X, q->y = y, q->Xv = Xv, q->yv = yv;
  q->H = malloc(d * d * sizeof *q->H);
  q->b = malloc(d * sizeof *q->b);
  q->r = malloc((n > m ? n : m) * sizeof *q->r);
  q->rt = calloc(n, sizeof *q->rt);
  if (!q->H || !q->b || !q->r || !q->rt) {
    td_hg_ridge_deinit(q);
    return td_err_set(err, TD_ENOMEM, NULL, "ridge: out of memory");
  }
  td_la_ata((int)n, (int)d, 1.0 / n, X, q->H);
  td_la_gemv(1, (int)n, (int)d, 1.0 / n, X, y, 0.0, q->b);
  return 0;
}

void td_hg_ridge_deinit(td_hg_ridge *q) {
  if (!q) return;
  free(q->H), free(q->b), free(q->r), free(q->rt);
  memset(q, 0, sizeof *q);
}

td_hg_problem td_hg_ridge_problem(td_hg_ridge *q, int n_groups, const size_t *group_off) {
  td_hg_problem p = {.n = q->d, .n_groups = n_groups, .group_off = group_off, .ctx = q,
                     .point = ridge_point, .hvp = ridge_hvp, .val = ridge_val,
                     .n_ex = q->n, .ex_dot = ridge_ex_dot};
  return p;
}

int td_hg_ridge_solve(const td_hg_ridge *q, int n_groups, const size_t *group_off,
                      const double *lambda, double *wstar, double *dl, td_err *err) {
  size_t d = q->d;
  double *A = malloc(d * d * sizeof *A), *B = malloc(2 * d * sizeof *B);
  double *r = malloc(q->m * sizeof *r);
  if (!A || !B || !r) {
    free(A), free(B), free(r);
    return td_err_set(err, TD_ENOMEM, NULL, "ridge: out of memory");
  }
  memcpy(A, q->H, d * d * sizeof *A);
  for (int j = 0; j < n_groups; j++)
    for (size_t i = group_off[j]; i < group_off[j + 1]; i++) A[i * d + i] += lambda[j];
  /* column 0: b (-> w*); column 1 filled after w* is known (a second solve). */
  for (size_t i = 0; i < d; i++) B[i] = q->b[i];
  int rc = 0;
  lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, A, (lapack_int)d);
  if (info != 0) {
    rc = td_err_set(err, TD_ERANGE, NULL, "ridge: H + Lambda is not positive definite");
    goto out;
  }
  LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, 1, A, (lapack_int)d, B, 1);
  memcpy(wstar, B, d * sizeof *wstar);
  if (dl) {
    /* grad L_val(w*) = Xv^T (Xv w* - yv) / m, then (H + Lambda)^-1 of it */
    memcpy(r, q->yv, q->m * sizeof *r);
    td_la_gemv(0, (int)q->m, (int)d, 1.0, q->Xv, wstar, -1.0, r);
    td_la_gemv(1, (int)q->m, (int)d, 1.0 / q->m, q->Xv, r, 0.0, B + d);
    LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, 1, A, (lapack_int)d, B + d, 1);
    for (int j = 0; j < n_groups; j++) {
      double s = 0;
      for (size_t i = group_off[j]; i < group_off[j + 1]; i++) s += wstar[i] * B[d + i];
      dl[j] = -s;
    }
  }
out:
  free(A), free(B), free(r);
  return rc;
}

int td_hg_ridge_dweights(const td_hg_ridge *q, int n_groups, const size_t *group_off,
                         const double *lambda, double *ds, td_err *err) {
  size_t d = q->d, n = q->n;
  double *dl = malloc((size_t)n_groups * sizeof *dl), *ws = malloc(d * sizeof *ws);
  double *A = malloc(d * d * sizeof *A), *gv = malloc(d * sizeof *gv);
  double *r = malloc((q->m > n ? q->m : n) * sizeof *r);
  int rc = 0;
  if (!dl || !ws || !A || !gv || !r) {
    rc = td_err_set(err, TD_ENOMEM, NULL, "ridge: out of memory");
    goto out;
  }
  if ((rc = td_hg_ridge_solve(q, n_groups, group_off, lambda, ws, dl, err))) goto out;
  /* gv = (H + Lambda)^-1 grad L_val(w*) */
  memcpy(A, q->H, d * d * sizeof *A);
  for (int j = 0; j < n_groups; j++)
    for (size_t i = group_off[j]; i < group_off[j + 1]; i++) A[i * d + i] += lambda[j];
  memcpy(r, q->yv, q->m * sizeof *r);
  td_la_gemv(0, (int)q->m, (int)d, 1.0, q->Xv, ws, -1.0, r);
  td_la_gemv(1, (int)q->m, (int)d, 1.0 / q->m, q->Xv, r, 0.0, gv);
  if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, A, (lapack_int)d) != 0) {
    rc = td_err_set(err, TD_ERANGE, NULL, "ridge: H + Lambda is not positive definite");
    goto out;
  }
  LAPACKE_dpotrs(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, 1, A, (lapack_int)d, gv, 1);
  /* ds_i = -r_i x_i^T gv / n with r_i the training residual at w* */
  memcpy(r, q->y, n * sizeof *r);
  td_la_gemv(0, (int)n, (int)d, 1.0, q->X, ws, -1.0, r);
  td_la_gemv(0, (int)n, (int)d, 1.0, q->X, gv, 0.0, ds);
  for (size_t i = 0; i < n; i++) ds[i] = -r[i] * ds[i] / n;
out:
  free(dl), free(ws), free(A), free(gv), free(r);
  return rc;
}
