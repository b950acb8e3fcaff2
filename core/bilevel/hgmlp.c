/* hgmlp.c: an MLP (through td_curv) as the inner problem of the hypergradient methods. */
#include "bilevel/hgmlp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int hgmlp_point(void *ctx, const double *w, double *loss, double *g, td_err *err) {
  td_hgmlp *h = ctx;
  int rc = td_curv_set_point(&h->tr, w, err);
  if (rc) return rc;
  *loss = h->tr.loss_value;
  memcpy(g, td_curv_grad(&h->tr), h->m->n_params * sizeof *g);
  return 0;
}

static int hgmlp_point_at(void *ctx, int t, int reverse, const double *w, double *loss,
                          double *g, td_err *err) {
  td_hgmlp *h = ctx;
  int k = t - h->cache_first;
  int hit = h->cache && k >= 0 && k < h->cache_steps;
  double *slot = hit ? h->cache + (size_t)k * h->cache_len : NULL;
  int rc = td_curv_set_point_act1(&h->tr, w, reverse ? slot : NULL, err);
  if (rc) return rc;
  if (hit && !reverse) memcpy(slot, h->tr.ws.act[1], h->cache_len * sizeof *slot);
  if (hit && reverse) h->cache_hits++;
  *loss = h->tr.loss_value;
  memcpy(g, td_curv_grad(&h->tr), h->m->n_params * sizeof *g);
  return 0;
}

int td_hgmlp_cache(td_hgmlp *h, int T, double max_bytes, td_err *err) {
  free(h->cache);
  h->cache = NULL;
  h->cache_steps = h->cache_first = 0;
  h->cache_hits = 0;
  if (max_bytes <= 0) return 0;
  if (T < 1 || h->m->n_layers < 2)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: nothing to cache");
  h->cache_len = (size_t)h->tr.B * h->m->layers[0].n_out;
  double per = (double)h->cache_len * sizeof(double);
  double steps = floor(max_bytes / per);
  h->cache_steps = steps >= T ? T : (int)steps;
  h->cache_first = T - h->cache_steps;
  if (h->cache_steps == 0) return 0;
  h->cache = malloc((size_t)h->cache_steps * h->cache_len * sizeof *h->cache);
  if (!h->cache) {
    h->cache_steps = h->cache_first = 0;
    return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory for the cache");
  }
  return 0;
}

static void hgmlp_hvp(void *ctx, const double *v, double *hv) {
  td_hgmlp *h = ctx;
  td_curv_hvp(&h->tr, v, hv);
}

/* out_i = grad l_i . u / n = r_i^T (J_i u) / n: one forward tangent pass (td_curv_jvp) and
 * the per-example output gradients r_i = dl_i/dz_i of the point (c->rgrad, not / n). */
static void hgmlp_ex_dot(void *ctx, const double *u, double *out) {
  td_hgmlp *h = ctx;
  const int B = h->tr.B, K = h->m->cfg.out_dim;
  td_curv_jvp(&h->tr, u, h->jv);
  for (int i = 0; i < B; i++) {
    const double *r = h->tr.rgrad + (size_t)i * K, *j = h->jv + (size_t)i * K;
    double s = 0;
    for (int k = 0; k < K; k++) s += r[k] * j[k];
    out[i] = s / B;
  }
}

static int hgmlp_val(void *ctx, const double *w, double *loss, double *g, td_err *err) {
  td_hgmlp *h = ctx;
  int rc = td_curv_set_point(&h->va, w, err);
  if (rc) return rc;
  *loss = h->va.loss_value;
  memcpy(g, td_curv_grad(&h->va), h->m->n_params * sizeof *g);
  return 0;
}

int td_hgmlp_init(td_hgmlp *h, const td_mlp *m, const td_dataset *train, size_t n_train,
                  const td_dataset *val, size_t n_val, td_curv_loss loss, td_err *err) {
  memset(h, 0, sizeof *h);
  if (!m || !train || !val || n_train < 1 || n_val < 1 || n_train > train->n ||
      n_val > val->n || n_train > 1000000 || n_val > 1000000)
    return td_err_set(err, TD_EINVAL, NULL, "hypergradient: bad data sizes");
  h->m = m;
  int rc = td_curv_init(&h->tr, m, (int)n_train, err);
  if (!rc) rc = td_curv_init(&h->va, m, (int)n_val, err);
  if (!rc)
    rc = td_curv_set_batch(&h->tr, train->X, train->y, train->Y, (int)n_train, loss, err);
  if (!rc) rc = td_curv_set_batch(&h->va, val->X, val->y, val->Y, (int)n_val, loss, err);
  if (rc) {
    td_hgmlp_deinit(h);
    return rc;
  }
  h->jv = malloc(n_train * (size_t)m->cfg.out_dim * sizeof *h->jv);
  if (!h->jv) {
    td_hgmlp_deinit(h);
    return td_err_set(err, TD_ENOMEM, NULL, "hypergradient: out of memory");
  }
  h->n_groups = m->n_linear;
  for (int j = 0; j < m->n_linear; j++) {
    double *W, *b;
    const td_layer *l = td_mlp_linear(m, j, m->params, &W, &b);
    h->group_off[j] = l->off;
  }
  h->group_off[m->n_linear] = m->n_params;
  return 0;
}

void td_hgmlp_deinit(td_hgmlp *h) {
  if (!h) return;
  free(h->cache);
  free(h->jv);
  td_curv_deinit(&h->tr);
  td_curv_deinit(&h->va);
  memset(h, 0, sizeof *h);
}

td_hg_problem td_hgmlp_problem(td_hgmlp *h) {
  td_hg_problem p = {.n = h->m->n_params, .n_groups = h->n_groups, .group_off = h->group_off,
                     .ctx = h, .point = hgmlp_point, .hvp = hgmlp_hvp, .val = hgmlp_val,
                     .point_at = hgmlp_point_at, .n_ex = (size_t)h->tr.B,
                     .ex_dot = hgmlp_ex_dot};
  return p;
}
