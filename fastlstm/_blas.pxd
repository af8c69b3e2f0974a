# The BLAS call and small helpers that every compiled layer kernel uses
# (_kernels.pyx, _cells.pyx): header-only (cdef inline), so each module gets its own copy
# from this one source. Shapes: G gate rows (4H LSTM, 3H GRU, H RNN), row-major.
# The gradient products (weight_gradient, input_gradient) run large float32 products on
# the register tiles of _recurrent.h instead of BLAS where the CPU has AVX-512.
from cython cimport floating
from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef inline void gemv(char trans, int rows, int cols, floating alpha, const floating *A,
                      int lda, const floating *x, int incx, floating beta, floating *y,
                      int incy) noexcept nogil:
    """Fortran's y = alpha * op(A) @ x + beta * y, A column-major (rows, cols):
    sgemv or dgemv by the type."""
    if floating is float:
        sgemv(&trans, &rows, &cols, &alpha, <float *>A, &lda, <float *>x, &incx,
              &beta, y, &incy)
    else:
        dgemv(&trans, &rows, &cols, &alpha, <double *>A, &lda, <double *>x, &incx,
              &beta, y, &incy)


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
    cdef char ta_flipped = b'N' if trans_a else b'T'
    if M == 1:
        # One row (a single sequence): C.T (N,) = op(B).T @ a is a gemv, which
        # streams B once instead of packing it (at H=512: ~44 us vs ~360 us).
        # op(B) as Fortran sees it is (N, K) for 'N' and (K, N) for 'T'; the
        # row a is contiguous unless A is transposed (then it is a column).
        gemv(tb, K if trans_b else N, N if trans_b else K, alpha, B, ldb,
             A, lda if trans_a else 1, beta, C, 1)
        return
    if N == 1:
        # One column (a head with one output): C (M,) = op(A) @ b is a gemv too
        # (512 x 16 rows: ~1 us vs ~4 us). op(A) as Fortran sees it is (K, M) for
        # 'N' (so it asks for the transpose) and (M, K) for 'T'; the column b is
        # contiguous if B is transposed, else strided by ldb.
        gemv(ta_flipped, M if trans_a else K, K if trans_a else M, alpha,
             A, lda, B, 1 if trans_b else ldb, beta, C, ldc)
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


cdef inline void input_projection(Py_ssize_t T, Py_ssize_t N, Py_ssize_t D, Py_ssize_t G,
                                  const floating *x, Py_ssize_t ldx, const floating *w_ih,
                                  const floating *bias, const floating *bias2,
                                  floating *out) noexcept nogil:
    """out (T*N, G) = x @ W_ih.T + bias (+ bias2 when not NULL), all T*N rows in
    one gemm, rows of x ldx apart (D if contiguous): the first step of every
    layer's forward."""
    cdef Py_ssize_t row, k
    for k in range(G):
        out[k] = bias[k] + (bias2[k] if bias2 != NULL else 0)
    for row in range(1, T * N):
        for k in range(G):
            out[row * G + k] = out[k]
    if D > 0:
        gemm(False, True, T * N, G, D, <floating>1, x, ldx, w_ih, D, <floating>1, out, G)


cdef inline void sum_rows(Py_ssize_t rows, Py_ssize_t G, Py_ssize_t lda, const floating *a,
                          floating *out) noexcept nogil:
    """out (G,) += a (rows, G).sum(axis=0), rows lda apart"""
    cdef Py_ssize_t row, k
    for row in range(rows):
        for k in range(G):
            out[k] += a[row * lda + k]


cdef extern from "_recurrent.h" nogil:
    int fl_blocked_product_f32(int64_t K, int64_t M, int64_t cols, const float *A, int64_t lda,
                               int a_down, const float *B, int64_t ldb, float *C, int64_t ldc,
                               int accumulate, float *row_sums)
    ctypedef struct fl_step_matrix:
        pass
    fl_step_matrix *fl_step_matrix_new_f32(const float *w, int64_t K, int64_t cols,
                                           int transposed)
    void fl_step_matrix_free(fl_step_matrix *m)
    void fl_step_product_f32(const fl_step_matrix *m, int64_t N, const float *A, int64_t lda,
                             float *C, int64_t ldc, int accumulate)


# ---- a time loop's recurrent products on W_hh packed once ---------------------------

# A time loop's products run on a packed W_hh where both its sides have this
# many rows and columns. Narrower, with short sums or few columns, the tiles
# lose to sgemm (one layer, one thread, ms, sgemm / packed: LSTM, H = 50, T =
# 20, N = 1024: forward 6.7 / 7.8, backward 11.9 / 12.6; N = 64, backward 0.72
# / 0.78; H = 64, N = 256: forward 7.9 / 8.1; training, median epoch: RNN sine
# 299K / 289K samples/s, RNN binadd 1.10M / 1.06M) or tie; from 128 they gain
# (LSTM, H = 128, T = 50, N = 64: forward 6.6 / 5.8, backward 11.9 / 10.8; N =
# 3: forward 1.39 / 0.35, where sgemm packs W_hh for 3 rows; N = 256: level;
# training, median epoch: GRU charlm 464 / 696 samples/s, GRU large 279 /
# 361, GRU medium 7.9K / 8.7K, RNN medium 23.9K / 25.8K).
cdef enum:
    STEP_TILES_MIN_SIDE = 128


cdef inline fl_step_matrix *step_matrix(bint transposed, Py_ssize_t N, Py_ssize_t rows,
                                        Py_ssize_t cols, const floating *w) noexcept nogil:
    """w (rows, cols) packed for the products of every step of a BLAS time loop
    over N samples, h[t-1] @ w.T (transposed) or dgates[t] @ w: float32, with
    both sides STEP_TILES_MIN_SIDE or more, on AVX-512 CPUs (fl_step_matrix),
    else NULL, and step_product runs BLAS (float64; one row: gemv streams w
    without packing it). Free it with fl_step_matrix_free."""
    if floating is float:
        if N > 1 and rows >= STEP_TILES_MIN_SIDE and cols >= STEP_TILES_MIN_SIDE:
            return fl_step_matrix_new_f32(w, cols if transposed else rows,
                                          rows if transposed else cols, transposed)
    return NULL


cdef inline void step_product(const fl_step_matrix *packed, bint transposed, Py_ssize_t N,
                              Py_ssize_t cols, Py_ssize_t K, const floating *a, Py_ssize_t lda,
                              const floating *w, Py_ssize_t ldw, bint accumulate,
                              floating *out, Py_ssize_t ldo) noexcept nogil:
    """out (N, cols) (+)= a (N, K) @ op(w), op(w) = w.T (w (cols, K)) if transposed
    else w (w (K, cols)), one step's recurrent product: on packed, w's own
    packing (step_matrix), where it is not NULL, else one gemm."""
    if floating is float:
        if packed != NULL:
            fl_step_product_f32(packed, N, a, lda, out, ldo, accumulate)
            return
    gemm(False, transposed, N, cols, K, <floating>1, a, lda, w, ldw,
         <floating>1 if accumulate else <floating>0, out, ldo)


# The gradient products below run on the register tiles from this many
# multiply-adds and 16 columns on. Smaller ones pay more for the tiles' packing
# and scratch, once per call, than they gain (training epochs, tiles vs BLAS,
# alternating in one process: sine, whose gradients come in four blocks of gate
# rows of ~0.7M each, 4-5% slower; binadd, 0.5M, 1.4% slower); the smallest
# measured to gain is charlm's dW_ih, 36M. Fewer columns: sine's single input,
# a gemv, took 3 us where the tiles took 20.
cdef enum:
    TILES_MIN_WORK = 4194304      # 2**22
    TILES_MIN_COLUMNS = 16


cdef inline bint on_tiles(Py_ssize_t K, Py_ssize_t M, Py_ssize_t cols) noexcept nogil:
    """Whether a float32 product of M x cols outputs summed over K may try the tiles."""
    return cols >= TILES_MIN_COLUMNS and K * M * cols >= TILES_MIN_WORK


cdef inline void weight_gradient(Py_ssize_t K, Py_ssize_t G, Py_ssize_t cols,
                                 const floating *dg, Py_ssize_t ldg, const floating *x,
                                 floating *dw, floating *db) noexcept nogil:
    """dw (G, cols) += dg.T @ x, dg (K, G) with rows ldg apart, x (K, cols) and dw
    contiguous, and db (G,) += dg.sum(rows) unless db is NULL: float32 on AVX-512
    CPUs through the register tiles of _recurrent.h (no transposed copy of dg,
    which BLAS makes: charlm's layer, 103 vs 89 GFLOP/s; db summed as the tiles
    read dg, not in a pass of its own) where on_tiles; otherwise, and for
    float64, one gemm and sum_rows (the same bits of db either way)."""
    if floating is float:
        if on_tiles(K, G, cols) and fl_blocked_product_f32(K, G, cols, dg, ldg, True, x, cols,
                                                           dw, cols, True, db) == 0:
            return
    gemm(True, False, G, cols, K, <floating>1, dg, ldg, x, cols, <floating>1, dw, cols)
    if db != NULL:
        sum_rows(K, G, ldg, dg, db)


cdef inline void input_gradient(Py_ssize_t M, Py_ssize_t G, Py_ssize_t D, const floating *dg,
                                Py_ssize_t ldg, const floating *w, floating *dx) noexcept nogil:
    """dx (M, D) = dg (M, G) @ w (G, D), rows of dg ldg apart, w and dx contiguous:
    float32 on AVX-512 CPUs through the register tiles of _recurrent.h where
    on_tiles (charlm's second layer, one thread: 5.6-6.0 ms a batch against
    5.9-6.5 through BLAS), otherwise one gemm."""
    if floating is float:
        if on_tiles(G, M, D) and fl_blocked_product_f32(G, M, D, dg, ldg, False, w, D, dx, D,
                                                        False, NULL) == 0:
            return
    gemm(False, False, M, D, G, <floating>1, dg, ldg, w, D, <floating>0, dx, D)


cdef inline void weight_gradients(Py_ssize_t T, Py_ssize_t N, Py_ssize_t G, Py_ssize_t ldg,
                                  Py_ssize_t D, Py_ssize_t H, const floating *dg_ih,
                                  const floating *dg_hh, const floating *x,
                                  const floating *h_prev, bint first, const floating *h0,
                                  floating *dw_ih, floating *dw_hh,
                                  floating *db_ih) noexcept nogil:
    """The weight gradients of T steps of one layer's backward (all of its steps,
    or a chunk), one product each over their T*N rows, accumulated into dw_ih
    (G, D), dw_hh (G, H) and db_ih (G,):
        dW_ih += dg_ih.T @ x                  dg_ih (T, N, G), x (T, N, D)
        db_ih += dg_ih.sum(rows)              (weight_gradient; NULL: not asked for)
        dW_hh += dg_hh.T @ h_prev             h_prev (T, N, H): the state each step
                                              started from, h[t0 - 1 : t1 - 1]
    or, where the steps start at the layer's first (first), with h_prev = h[0 : T]:
        dW_hh += dg_hh[1:].T @ h_prev[:-1]
        dW_hh += dg_hh[0].T @ h0              h0 (N, H), or NULL when all zero
    The rows of dg_* are ldg apart (G, or more for a block of gate rows). The
    caller checks h0 for zeros once (a layer's blocks of gate rows share it).
    dg_ih and dg_hh are the same buffer except for the GRU, whose hidden-side
    gate gradients differ from its input-side ones."""
    if D > 0:
        weight_gradient(T * N, G, D, dg_ih, ldg, x, dw_ih, db_ih)
    elif db_ih != NULL:
        sum_rows(T * N, G, ldg, dg_ih, db_ih)
    if not first:
        weight_gradient(T * N, G, H, dg_hh, ldg, h_prev, dw_hh, NULL)
        return
    if T > 1:
        weight_gradient((T - 1) * N, G, H, dg_hh + N * ldg, ldg, h_prev, dw_hh, NULL)
    if h0 != NULL:
        weight_gradient(N, G, H, dg_hh, ldg, h0, dw_hh, NULL)
