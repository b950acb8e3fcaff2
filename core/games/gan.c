/* gan.c: the 8-Gaussian GAN game: MLPs in dual numbers for exact gradients and HVPs (gan.h).
 *
 * Every forward and backward quantity is a dual number (v, t): v the value, t its
 * derivative along the direction u of the parameters. Running the reverse pass on duals
 * gives grad f in the v parts and d/ds grad f(w + s u) = H u in the t parts
 * (forward-over-reverse; Pearlmutter 1994, "Fast exact multiplication by the Hessian"). */
#include "games/gan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"

typedef struct dual {
  double v, t;
} dual;

static inline dual dmul(dual a, dual b) { return (dual){a.v * b.v, a.t * b.v + a.v * b.t}; }

/* One MLP: layer sizes n[0..L], parameter offset in w. */
typedef struct net {
  int L, n[16], off;
} net;

struct td_gan {
  td_gan_cfg c;
  net G, D;
  int d;
  int maxw;     /* widest layer */
  dual *act;    /* activations: (L+1) x B x maxw per network pass */
  dual *pre;    /* pre-activations: L x B x maxw */
  dual *delta;  /* 2 x B x maxw */
  dual *gw;     /* parameter gradients (d) */
  dual *wd;     /* parameters as duals (d) */
  /* three passes of D (real, fake) and one of G keep their activations */
  dual *actG, *preG, *actDr, *preDr, *actDf, *preDf;
};

static int net_params(const net *n) {
  int s = 0;
  for (int l = 0; l < n->L; l++) s += n->n[l + 1] * n->n[l] + n->n[l + 1];
  return s;
}

int td_gan_create(const td_gan_cfg *c, td_gan **out, td_err *err) {
  *out = NULL;
  if (c->latent < 1 || c->hidden < 1 || c->depth < 1 || c->depth > 8 || c->batch < 1 ||
      c->modes < 1 || !(c->radius > 0) || !(c->std > 0))
    return td_err_set(err, TD_EINVAL, "params.game", "invalid GAN configuration");
  td_gan *g = calloc(1, sizeof *g);
  if (!g) return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  g->c = *c;
  g->G.L = g->D.L = c->depth + 1;
  g->G.n[0] = c->latent;
  g->D.n[0] = 2;
  for (int l = 1; l <= c->depth; l++) g->G.n[l] = g->D.n[l] = c->hidden;
  g->G.n[c->depth + 1] = 2;
  g->D.n[c->depth + 1] = 1;
  g->G.off = 0;
  g->D.off = net_params(&g->G);
  g->d = g->D.off + net_params(&g->D);
  g->maxw = c->hidden > c->latent ? c->hidden : c->latent;
  if (g->maxw < 2) g->maxw = 2;
  size_t slab = (size_t)(c->depth + 2) * (size_t)c->batch * (size_t)g->maxw;
  g->actG = calloc(slab, sizeof(dual));
  g->preG = calloc(slab, sizeof(dual));
  g->actDr = calloc(slab, sizeof(dual));
  g->preDr = calloc(slab, sizeof(dual));
  g->actDf = calloc(slab, sizeof(dual));
  g->preDf = calloc(slab, sizeof(dual));
  g->delta = calloc(2 * (size_t)c->batch * (size_t)g->maxw, sizeof(dual));
  g->gw = calloc((size_t)g->d, sizeof(dual));
  g->wd = calloc((size_t)g->d, sizeof(dual));
  if (!g->actG || !g->preG || !g->actDr || !g->preDr || !g->actDf || !g->preDf || !g->delta ||
      !g->gw || !g->wd) {
    td_gan_destroy(g);
    return td_err_set(err, TD_ENOMEM, NULL, "out of memory");
  }
  *out = g;
  return 0;
}

void td_gan_destroy(td_gan *g) {
  if (!g) return;
  free(g->actG);
  free(g->preG);
  free(g->actDr);
  free(g->preDr);
  free(g->actDf);
  free(g->preDf);
  free(g->delta);
  free(g->gw);
  free(g->wd);
  free(g);
}

int td_gan_n_gen(const td_gan *g) { return g->D.off; }
int td_gan_n_disc(const td_gan *g) { return g->d - g->D.off; }

void td_gan_init(const td_gan *g, uint64_t seed, double *w) {
  td_rng r;
  td_rng_init(&r, seed, 0x6a6e);
  const net *nets[2] = {&g->G, &g->D};
  for (int k = 0; k < 2; k++) {
    double *p = w + nets[k]->off;
    for (int l = 0; l < nets[k]->L; l++) {
      int in = nets[k]->n[l], o = nets[k]->n[l + 1];
      td_rng_fill_normal(&r, p, (size_t)in * (size_t)o, 1.0 / sqrt((double)in));
      p += in * o;
      memset(p, 0, (size_t)o * sizeof *p);
      p += o;
    }
  }
}

void td_gan_batch(const td_gan *g, uint64_t seed, long step, double *xr, double *z) {
  td_rng r;
  td_rng_init(&r, seed ^ 0x9e3779b97f4a7c15ULL, (uint64_t)step + 1);
  const td_gan_cfg *c = &g->c;
  for (int b = 0; b < c->batch; b++) {
    int k = (int)td_rng_below(&r, (uint64_t)c->modes);
    double a = 2.0 * M_PI * k / c->modes;
    xr[2 * b] = c->radius * cos(a) + c->std * td_rng_normal(&r);
    xr[2 * b + 1] = c->radius * sin(a) + c->std * td_rng_normal(&r);
  }
  td_rng_fill_normal(&r, z, (size_t)c->batch * (size_t)c->latent, 1.0);
}

/* Activation and its first two derivatives. */
static inline double act_f(int tanh_, double x) { return tanh_ ? tanh(x) : (x > 0 ? x : 0); }
static inline double act_d(int tanh_, double x) {
  if (tanh_) {
    double t = tanh(x);
    return 1 - t * t;
  }
  return x > 0 ? 1.0 : 0.0;
}
static inline double act_dd(int tanh_, double x) {
  if (tanh_) {
    double t = tanh(x);
    return -2 * t * (1 - t * t);
  }
  return 0.0;
}

/* Forward pass of net `n` on B inputs in[B x n0] (duals), keeping activations act
 * ((L+1) slabs of B x maxw) and pre-activations pre (L slabs); returns the output slab. */
static dual *forward(td_gan *g, const net *n, const dual *in, int B, dual *act, dual *pre) {
  int mw = g->maxw, tn = g->c.tanh;
  size_t slab = (size_t)B * (size_t)mw;
  for (int b = 0; b < B; b++)
    for (int i = 0; i < n->n[0]; i++) act[(size_t)b * mw + i] = in[(size_t)b * n->n[0] + i];
  const dual *p = g->wd + n->off;
  for (int l = 0; l < n->L; l++) {
    int ni = n->n[l], no = n->n[l + 1];
    const dual *W = p, *bias = p + ni * no;
    dual *a = act + slab * l, *z = pre + slab * l, *an = act + slab * (l + 1);
    for (int b = 0; b < B; b++)
      for (int o = 0; o < no; o++) {
        dual s = bias[o];
        const dual *wr = W + (size_t)o * ni, *ar = a + (size_t)b * mw;
        for (int i = 0; i < ni; i++) {
          s.v += wr[i].v * ar[i].v;
          s.t += wr[i].t * ar[i].v + wr[i].v * ar[i].t;
        }
        z[(size_t)b * mw + o] = s;
        if (l + 1 < n->L)
          an[(size_t)b * mw + o] = (dual){act_f(tn, s.v), act_d(tn, s.v) * s.t};
        else
          an[(size_t)b * mw + o] = s;
      }
    p += ni * no + no;
  }
  return act + slab * n->L;
}

/* Reverse pass of net n: dout (B x n_L duals, the derivative of f w.r.t. the outputs) is
 * propagated down; parameter gradients are ADDED into g->gw; if din is not NULL the
 * derivative w.r.t. the inputs goes there (B x n0). Uses g->delta. */
static void backward(td_gan *g, const net *n, const dual *dout, int B, const dual *act,
                     const dual *pre, dual *din) {
  int mw = g->maxw, tn = g->c.tanh;
  size_t slab = (size_t)B * (size_t)mw;
  dual *cur = g->delta, *nxt = g->delta + slab;
  for (int b = 0; b < B; b++)
    for (int o = 0; o < n->n[n->L]; o++) cur[(size_t)b * mw + o] = dout[(size_t)b * n->n[n->L] + o];
  /* offsets of each layer's parameters */
  int offs[16], p = n->off;
  for (int l = 0; l < n->L; l++) {
    offs[l] = p;
    p += n->n[l + 1] * n->n[l] + n->n[l + 1];
  }
  for (int l = n->L - 1; l >= 0; l--) {
    int ni = n->n[l], no = n->n[l + 1];
    const dual *W = g->wd + offs[l];
    dual *gW = g->gw + offs[l], *gb = gW + ni * no;
    const dual *a = act + slab * l;
    for (int b = 0; b < B; b++)
      for (int o = 0; o < no; o++) {
        dual dl = cur[(size_t)b * mw + o];
        gb[o].v += dl.v;
        gb[o].t += dl.t;
        const dual *ar = a + (size_t)b * mw;
        dual *gr = gW + (size_t)o * ni;
        for (int i = 0; i < ni; i++) {
          gr[i].v += dl.v * ar[i].v;
          gr[i].t += dl.t * ar[i].v + dl.v * ar[i].t;
        }
      }
    if (l == 0 && !din) break;
    for (int b = 0; b < B; b++)
      for (int i = 0; i < ni; i++) {
        dual s = {0, 0};
        for (int o = 0; o < no; o++) {
          dual wv = W[(size_t)o * ni + i], dl = cur[(size_t)b * mw + o];
          s.v += wv.v * dl.v;
          s.t += wv.t * dl.v + wv.v * dl.t;
        }
        if (l > 0) { /* through the activation of layer l-1's output */
          dual zz = pre[slab * (l - 1) + (size_t)b * mw + i];
          dual dact = {act_d(tn, zz.v), act_dd(tn, zz.v) * zz.t};
          s = dmul(s, dact);
          nxt[(size_t)b * mw + i] = s;
        } else {
          din[(size_t)b * ni + i] = s;
        }
      }
    dual *tmp = cur;
    cur = nxt;
    nxt = tmp;
  }
}

static inline double sigm(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }
static inline double log_sigm(double x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

double td_gan_grad(td_gan *g, const double *w, const double *xr, const double *z, double *grad,
                   const double *u, double *hu) {
  int B = g->c.batch, d = g->d, lat = g->c.latent;
  for (int i = 0; i < d; i++) {
    g->wd[i] = (dual){w[i], u ? u[i] : 0};
    g->gw[i] = (dual){0, 0};
  }
  /* inputs as duals (the data and latents do not move with w) */
  dual *in = calloc((size_t)B * (size_t)(lat > 2 ? lat : 2), sizeof *in);
  dual *dD = calloc((size_t)B, sizeof *dD), *dx = calloc((size_t)B * 2, sizeof *dx);
  dual *xf = calloc((size_t)B * 2, sizeof *xf);
  if (!in || !dD || !dx || !xf) {
    free(in);
    free(dD);
    free(dx);
    free(xf);
    for (int i = 0; i < d; i++) grad[i] = NAN;
    return NAN;
  }
  for (int i = 0; i < B * lat; i++) in[i] = (dual){z[i], 0};
  dual *outG = forward(g, &g->G, in, B, g->actG, g->preG);
  for (int b = 0; b < B; b++)
    for (int k = 0; k < 2; k++) xf[2 * b + k] = outG[(size_t)b * g->maxw + k];
  double f = 0;
  /* real: f += 1/B log sigmoid(D); df/dD = sigmoid(-D)/B, its t: -s(D)s(-D) D.t/B */
  for (int i = 0; i < B * 2; i++) in[i] = (dual){xr[i], 0};
  dual *outR = forward(g, &g->D, in, B, g->actDr, g->preDr);
  for (int b = 0; b < B; b++) {
    dual D = outR[(size_t)b * g->maxw];
    f += log_sigm(D.v) / B;
    double sp = sigm(D.v), sn = sigm(-D.v);
    dD[b] = (dual){sn / B, -sp * sn * D.t / B};
  }
  backward(g, &g->D, dD, B, g->actDr, g->preDr, NULL);
  /* fake: f += 1/B log sigmoid(-D); df/dD = -sigmoid(D)/B, its t: -s(D)s(-D) D.t/B */
  dual *outF = forward(g, &g->D, xf, B, g->actDf, g->preDf);
  for (int b = 0; b < B; b++) {
    dual D = outF[(size_t)b * g->maxw];
    f += log_sigm(-D.v) / B;
    double sp = sigm(D.v), sn = sigm(-D.v);
    dD[b] = (dual){-sp / B, -sp * sn * D.t / B};
  }
  backward(g, &g->D, dD, B, g->actDf, g->preDf, dx);
  backward(g, &g->G, dx, B, g->actG, g->preG, NULL);
  for (int i = 0; i < d; i++) {
    grad[i] = g->gw[i].v;
    if (u && hu) hu[i] = g->gw[i].t;
  }
  free(in);
  free(dD);
  free(dx);
  free(xf);
  return f;
}

void td_gan_generate(td_gan *g, const double *w, const double *z, int n, double *out) {
  int lat = g->c.latent, B = g->c.batch;
  for (int i = 0; i < g->d; i++) g->wd[i] = (dual){w[i], 0};
  dual *in = malloc((size_t)B * (size_t)lat * sizeof *in);
  if (!in) return;
  for (int s = 0; s < n; s += B) {
    int m = n - s < B ? n - s : B;
    for (int i = 0; i < m * lat; i++) in[i] = (dual){z[(size_t)s * lat + i], 0};
    dual *o = forward(g, &g->G, in, m, g->actG, g->preG);
    for (int b = 0; b < m; b++)
      for (int k = 0; k < 2; k++) out[2 * (size_t)(s + b) + k] = o[(size_t)b * g->maxw + k].v;
  }
  free(in);
}

void td_gan_coverage(const td_gan_cfg *c, const double *s, int n, int *covered, double *good) {
  int *cnt = calloc((size_t)c->modes, sizeof *cnt), ng = 0;
  double r3 = 3 * c->std;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < c->modes; k++) {
      double a = 2.0 * M_PI * k / c->modes;
      double dx = s[2 * i] - c->radius * cos(a), dy = s[2 * i + 1] - c->radius * sin(a);
      if (dx * dx + dy * dy <= r3 * r3) {
        if (cnt) cnt[k]++;
        ng++;
        break; /* modes are far apart for 3 std < radius sin(pi/modes) */
      }
    }
  int cv = 0;
  for (int k = 0; cnt && k < c->modes; k++)
    if (cnt[k] >= 0.01 * n) cv++;
  free(cnt);
  *covered = cv;
  *good = n ? (double)ng / n : 0;
}
