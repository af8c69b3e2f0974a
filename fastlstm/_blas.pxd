# The BLAS call and small helpers that every compiled layer kernel uses
# (_kernels.pyx, _cells.pyx): header-only (cdef inline), so each module gets its own copy
# from this one source.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef inline void gemm(bint trans_a, bint trans_b, int M, int N, int K,
                      floating alpha, const floating *A, int lda,
                      const floating *B, int ldb,
                      floating beta, floating *C, int ldc) noexcept nogil:
    """Row-major C (M, N) = alpha * op(A) @ op(B) + beta * C.

    Fortran BLAS is column-major, and a row-major matrix is its column-major
    transpose, so we ask for C.T = op(B).T @ op(A).T: swap the operands, keep
    the flags.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int rows, cols, incx, one = 1
    if M == 1:
        # One row (a single sequence): C.T (N,) = op(B).T @ a is a gemv, which
        # streams B once instead of packing it (at H=512: ~44 us vs ~360 us).
        # op(B) as Fortran sees it is (N, K) for 'N' and (K, N) for 'T'; the
        # row a is contiguous unless A is transposed (then it is a column).
        rows, cols = (N, K) if tb == b'N' else (K, N)
        incx = lda if trans_a else 1
        if floating is float:
            sgemv(&tb, &rows, &cols, &alpha, <float *>B, &ldb, <float *>A, &incx,
                  &beta, C, &one)
        else:
            dgemv(&tb, &rows, &cols, &alpha, <double *>B, &ldb, <double *>A, &incx,
                  &beta, C, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float *>B, &ldb, <float *>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double *>B, &ldb, <double *>A, &lda,
              &beta, C, &ldc)


cdef inline bint any_nonzero(const floating *a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        if a[k] != 0:
            return True
    return False
