/* la.h: thin CBLAS/LAPACKE wrappers on dense row-major double matrices. */
#ifndef TD_LA_H
#define TD_LA_H

#include <stddef.h>

#include "base/err.h"

/* td_la_set_threads / td_la_get_threads: OpenBLAS's one global thread count. DESIGN: the host
 * sets it once at start-up to max(1, cores / workers); kinds never call set. n < 1 means 1. */
void td_la_set_threads(int n);
int td_la_get_threads(void);

/* td_la_gemm: C (m x n) = alpha * op(A) op(B) + beta * C, all row-major and packed:
 * op(A) is m x k (A stored m x k, or k x m when ta), op(B) is k x n (B stored k x n, or
 * n x k when tb). Kernel: never allocates; shapes asserted. With beta == 0, C may hold
 * garbage (BLAS convention: it is not read). */
void td_la_gemm(int ta, int tb, int m, int n, int k, double alpha, const double *A,
                const double *B, double beta, double *C);

/* td_la_gemv: y (m or n) = alpha * op(A) x + beta * y, A stored m x n row-major; op(A) = A^T
 * when ta (then x has m entries and y has n). */
void td_la_gemv(int ta, int m, int n, double alpha, const double *A, const double *x,
                double beta, double *y);

/* td_la_ata: C (d x d) = alpha * X^T X for X (n x d) row-major; both triangles filled
 * (dsyrk on the upper triangle, then mirrored). */
void td_la_ata(int n, int d, double alpha, const double *X, double *C);

/* Level-1 helpers on length-n vectors. td_la_nrm2 is the 2-norm, overflow- and underflow-
 * safe (a plain sum of squares when it is in range, else the scaled dnrm2). */
double td_la_dot(size_t n, const double *x, const double *y);
double td_la_nrm2(size_t n, const double *x);
void td_la_axpy(size_t n, double alpha, const double *x, double *y); /* y += alpha x */
void td_la_scal(size_t n, double alpha, double *x);                  /* x *= alpha */

/* td_la_syevd: all eigenpairs of the symmetric n x n matrix A (row-major; only the upper
 * triangle is read) by LAPACK's divide and conquer dsyevd. On return w[0..n) holds the
 * eigenvalues in ascending order and A holds the orthonormal eigenvectors as COLUMNS:
 * A[i*n + j] is component i of eigenvector j. Errors: TD_EINVAL (n < 1 or NULL),
 * TD_ENOMEM, TD_EINTERNAL when dsyevd fails to converge (A is then unspecified). */
int td_la_syevd(int n, double *A /* in: matrix, OUT: eigenvectors */, double *w /* OUT */,
                td_err *err);

/* td_la_lstsq_minnorm: the minimum-norm least-squares solution X (n x k) = A^+ B of
 * min ||A X - B||_F, A (m x n), B (m x k), by LAPACK dgelsd (SVD, divide and conquer).
 * Singular values below rcond * s_max count as zero (rcond < 0: machine precision).
 * A and B are borrowed and unchanged (copied internally). *rank (OUT, may be NULL) gets the
 * effective rank. Errors: TD_EINVAL, TD_ENOMEM, TD_EINTERNAL (SVD did not converge).
 * Source: Golub and Van Loan, Matrix Computations, 4th ed., section 5.5 (pseudo-inverse). */
int td_la_lstsq_minnorm(int m, int n, int k, const double *A, const double *B, double rcond,
                        double *X /* OUT, n x k */, int *rank /* OUT */, td_err *err);

#endif
