/* loss.h: softmax cross-entropy and squared error (means over the batch) with their gradients. */
#ifndef TD_LOSS_H
#define TD_LOSS_H

#include <stddef.h>

/* All losses are means over the B examples (DESIGN "Numerics conventions"). Kernels: they
 * never allocate, shapes are asserted, and the gradient is WRITTEN (not accumulated) since it
 * starts the backward pass. A NaN or Inf in the outputs propagates to the loss. */

/* td_loss_xent: *loss = (1/B) sum_i -log softmax(z_i)[y_i] for logits z (B x K), labels y
 * (B, each in [0, K)), via the stable log-sum-exp lse(z) = m + log sum_k exp(z_k - m),
 * m = max_k z_k. dz (B x K, may be NULL) = (softmax(z_i) - onehot(y_i)) / B.
 * Source: Bishop, Pattern Recognition and Machine Learning, eq. 4.109 (per example). */
void td_loss_xent(double *loss /* OUT */, double *dz /* OUT */, const double *z, const int *y,
                  int B, int K);

/* td_loss_mse: *loss = 1/2 * (1/B) sum_i ||f_i - t_i||^2 (sum over the K outputs), f and t
 * (B x K). df (B x K, may be NULL) = (f - t) / B. */
void td_loss_mse(double *loss /* OUT */, double *df /* OUT */, const double *f, const double *t,
                 int B, int K);

/* td_loss_mse_onehot: td_loss_mse with t = onehot(y) (labels y in [0, K)), without building t. */
void td_loss_mse_onehot(double *loss /* OUT */, double *df /* OUT */, const double *f,
                        const int *y, int B, int K);

/* td_softmax_rows: p (B x K) = row-wise softmax of z (stable: exp(z - max)). p may equal z. */
void td_softmax_rows(double *p /* OUT */, const double *z, int B, int K);

/* td_count_correct: how many rows have argmax_k z_ik == y_i (ties go to the lowest k; a row
 * with NaN never counts as correct). Accuracy is this count / B. */
int td_count_correct(const double *z, const int *y, int B, int K);

#endif
