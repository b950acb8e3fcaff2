/* loss.c: softmax cross-entropy and squared error (means over the batch) with their gradients. */
#include "nn/loss.h"

#include <assert.h>
#include <math.h>

void td_loss_xent(double *loss, double *dz, const double *z, const int *y, int B, int K) {
  /* z: (B, K); y: (B); dz: (B, K) */
  assert(loss && z && y && B >= 1 && K >= 1);
  double total = 0.0, invB = 1.0 / B;
  for (int i = 0; i < B; i++) {
    const double *zi = z + (size_t)i * K;
    assert(y[i] >= 0 && y[i] < K);
    double m = zi[0];
    for (int k = 1; k < K; k++)
      if (zi[k] > m) m = zi[k];
    if (isnan(m) || isinf(m)) { /* propagate: NaN/Inf logits make the loss non-finite */
      total += NAN;
      if (dz)
        for (int k = 0; k < K; k++) dz[(size_t)i * K + k] = NAN;
      continue;
    }
    double s = 0.0;
    for (int k = 0; k < K; k++) s += exp(zi[k] - m);
    double lse = m + log(s);
    total += lse - zi[y[i]];
    if (dz) {
      double *g = dz + (size_t)i * K;
      for (int k = 0; k < K; k++) g[k] = exp(zi[k] - lse) * invB;
      g[y[i]] -= invB;
    }
  }
  *loss = total * invB;
}

void td_loss_mse(double *loss, double *df, const double *f, const double *t, int B, int K) {
  assert(loss && f && t && B >= 1 && K >= 1);
  size_t n = (size_t)B * K;
  double s = 0.0, invB = 1.0 / B;
  for (size_t i = 0; i < n; i++) {
    double r = f[i] - t[i];
    s += r * r;
    if (df) df[i] = r * invB;
  }
  *loss = 0.5 * s * invB;
}

void td_loss_mse_onehot(double *loss, double *df, const double *f, const int *y, int B, int K) {
  assert(loss && f && y && B >= 1 && K >= 1);
  double s = 0.0, invB = 1.0 / B;
  for (int i = 0; i < B; i++) {
    assert(y[i] >= 0 && y[i] < K);
    for (int k = 0; k < K; k++) {
      size_t j = (size_t)i * K + k;
      double r = f[j] - (k == y[i] ? 1.0 : 0.0);
      s += r * r;
      if (df) df[j] = r * invB;
    }
  }
  *loss = 0.5 * s * invB;
}

void td_softmax_rows(double *p, const double *z, int B, int K) {
  for (int i = 0; i < B; i++) {
    const double *zi = z + (size_t)i * K;
    double *pi = p + (size_t)i * K;
    double m = zi[0];
    for (int k = 1; k < K; k++)
      if (zi[k] > m) m = zi[k];
    double s = 0.0;
    for (int k = 0; k < K; k++) {
      pi[k] = exp(zi[k] - m);
      s += pi[k];
    }
    for (int k = 0; k < K; k++) pi[k] /= s;
  }
}

int td_count_correct(const double *z, const int *y, int B, int K) {
  int c = 0;
  for (int i = 0; i < B; i++) {
    const double *zi = z + (size_t)i * K;
    int best = 0, bad = isnan(zi[0]);
    for (int k = 1; k < K; k++) {
      if (isnan(zi[k])) bad = 1;
      if (zi[k] > zi[best]) best = k;
    }
    if (!bad && best == y[i]) c++;
  }
  return c;
}
