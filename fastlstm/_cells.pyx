# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Compiled forward and backward-through-time of one plain RNN or GRU layer, and of
the dense head every network ends with.

The same design as the LSTM kernels' BLAS loop in _kernels.pyx: time-major
buffers (T, N, .), one gemm for the input projection of all T*N rows, then per
step one recurrent product and one fused elementwise loop (_cells.h), the whole
time loop with the GIL released; backward ends with one product each for dW_ih,
dW_hh and dx (the GRU's: one per chunk of steps, as the loop finishes each, see
gru_layer_backward). In float32 on AVX-512 CPUs the products per step run on W_hh
packed once per call (_blas.step_matrix) where it is 128 x 128 or more, and the
gradient products on the register tiles (_blas.weight_gradient).

RNN  weight_ih (H, D), weight_hh (H, H): the pre-activations are computed in the
     output buffer h and replaced by the activations in place.
GRU  weight_ih (3H, D), weight_hh (3H, H), blocks r, z, n as in torch. The hidden
     side h_prev @ W_hh.T goes into its own (N, 3H) buffer per step, not into
     the gate buffer: r multiplies the n block's hidden part only.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from libc.string cimport memset
from ._blas cimport (any_nonzero, fl_step_matrix, fl_step_matrix_free, gemm, input_gradient,
                     input_projection, step_matrix, step_product, sum_rows, weight_gradients)
from ._checks cimport _check, _dims, _lengths_ptr, _plain_data
cimport numpy as cnp

import numpy as np

cnp.import_array()


cdef extern from "_cells.h" nogil:
    void fl_rnn_fwd_f32(int64_t n, int sigmoid, float *a)
    void fl_rnn_fwd_f64(int64_t n, int sigmoid, double *a)
    void fl_rnn_bwd_f32(int64_t n, int sigmoid, const float *h, const float *dh, float *da)
    void fl_rnn_bwd_f64(int64_t n, int sigmoid, const double *h, const double *dh, double *da)
    void fl_gru_cell_fwd_f32(int64_t N, int64_t H, float *gates, float *hproj,
                             const float *b_hh, const float *h_prev, float *h)
    void fl_gru_cell_fwd_f64(int64_t N, int64_t H, double *gates, double *hproj,
                             const double *b_hh, const double *h_prev, double *h)
    void fl_gru_cell_bwd_f32(int64_t N, int64_t H, const float *gates, const float *hproj,
                             const float *h_prev, const float *dh, float *dai, float *dah,
                             float *dh_direct)
    void fl_gru_cell_bwd_f64(int64_t N, int64_t H, const double *gates, const double *hproj,
                             const double *h_prev, const double *dh, double *dai, double *dah,
                             double *dh_direct)

cdef extern from "_recurrent.h" nogil:
    int fl_blocked_product_enabled
    int fl_step_matrix_enabled
    int64_t fl_gradient_steps(int64_t T, int64_t N, int64_t G, int64_t float_bytes)


def set_compiled_products(bint gradient_tiles, bint step_products):
    """This module's copies of the switches _kernels.set_gradient_tiles and
    set_step_products set (each compiled module has its own)."""
    global fl_blocked_product_enabled, fl_step_matrix_enabled
    fl_blocked_product_enabled = gradient_tiles
    fl_step_matrix_enabled = step_products


# ---- helpers ----------------------------------------------------------------------


cdef void carry_padded_h(Py_ssize_t N, Py_ssize_t H, Py_ssize_t t, const int64_t *lengths,
                         floating *h) noexcept nogil:
    """h[t, n] = h[t-1, n] for samples whose sequence has ended."""
    cdef Py_ssize_t n, j
    for n in range(N):
        if t >= lengths[n]:
            for j in range(H):
                h[(t * N + n) * H + j] = h[((t - 1) * N + n) * H + j]


# ---- plain RNN, forward ------------------------------------------------------------

def rnn_layer_forward(const floating[:, :, ::1] x,          # (T, N, D)
                      const floating[:, ::1] weight_ih,     # (H, D)
                      const floating[:, ::1] weight_hh,     # (H, H)
                      const floating[::1] bias_ih,          # (H,)
                      const floating[::1] bias_hh,          # (H,)
                      const floating[:, ::1] h0,            # (N, H)
                      floating[:, :, ::1] h,                # (T, N, H) out
                      bint sigmoid=False,                   # act: sigmoid, else tanh
                      const int64_t[::1] lengths=None):     # (N,) real steps, or None
    """h[t] = act(x[t] @ W_ih.T + b_ih + h[t-1] @ W_hh.T + b_hh) for all T steps.
    With lengths, h is carried unchanged through each sample's padding."""
    cdef Py_ssize_t T = x.shape[0], N = x.shape[1], D = x.shape[2]
    cdef Py_ssize_t H = weight_hh.shape[1]
    _check("weight_ih", weight_ih.shape, 2, H, D)
    _check("weight_hh", weight_hh.shape, 2, H, H)
    _check("bias_ih", bias_ih.shape, 1, H)
    _check("bias_hh", bias_hh.shape, 1, H)
    _check("h0", h0.shape, 2, N, H)
    _check("h", h.shape, 3, T, N, H)
    cdef const int64_t *len_ptr = _lengths_ptr(lengths, N, T)
    if T == 0 or N == 0 or H == 0:
        return

    cdef Py_ssize_t t, NH = N * H
    cdef floating *h_ptr = &h[0, 0, 0]
    cdef const floating *w_hh = &weight_hh[0, 0]
    cdef bint has_h0
    cdef fl_step_matrix *w_steps
    with nogil:
        # h = x @ W_ih.T + (b_ih + b_hh), all T*N rows at once: pre-activations
        input_projection(T, N, D, H, &x[0, 0, 0], D, &weight_ih[0, 0], &bias_ih[0],
                         &bias_hh[0], h_ptr)
        has_h0 = any_nonzero(&h0[0, 0], NH)
        w_steps = step_matrix(True, N, H, H, w_hh)
        for t in range(T):
            if t > 0:
                step_product(w_steps, True, N, H, H, h_ptr + (t - 1) * NH, H, w_hh, H, True,
                             h_ptr + t * NH, H)                # h[t] += h[t-1] @ W_hh.T
            elif has_h0:   # h[0] += h0 @ W_hh.T
                step_product(w_steps, True, N, H, H, &h0[0, 0], H, w_hh, H, True, h_ptr, H)
            if floating is float:
                fl_rnn_fwd_f32(NH, sigmoid, h_ptr + t * NH)      # h[t] = act(h[t])
            else:
                fl_rnn_fwd_f64(NH, sigmoid, h_ptr + t * NH)
            if len_ptr != NULL and t > 0:
                carry_padded_h(N, H, t, len_ptr, h_ptr)
        fl_step_matrix_free(w_steps)


# ---- plain RNN, backward through time ------------------------------------------------

def rnn_layer_backward(const floating[:, :, ::1] x,          # (T, N, D)
                       const floating[:, ::1] weight_ih,     # (H, D)
                       const floating[:, ::1] weight_hh,     # (H, H)
                       const floating[:, ::1] h0,            # (N, H)
                       const floating[:, :, ::1] h,          # (T, N, H) from forward
                       floating[:, :, ::1] dh,               # (T, N, H) in: dL/dh_t from above; clobbered
                       floating[:, ::1] dh0,                 # (N, H) out: dL/dh0, or None to skip
                       floating[:, :, ::1] dpre,             # (T, N, H) out: dL/d(pre-activations)
                       floating[:, :, ::1] dx,               # (T, N, D) out, or None to skip
                       floating[:, ::1] dweight_ih,          # (H, D) accumulated into
                       floating[:, ::1] dweight_hh,          # (H, H) accumulated into
                       floating[::1] dbias,                  # (H,) accumulated into (= d b_ih = d b_hh)
                       bint sigmoid=False,
                       const int64_t[::1] lengths=None):
    """Backprop through all T steps; dh is the running gradient on h_t (the
    recurrent term is added into dh[t-1]). Padded steps pass dh[t] on to dh[t-1]
    and get zero pre-activation gradients."""
    cdef Py_ssize_t T = x.shape[0], N = x.shape[1], D = x.shape[2]
    cdef Py_ssize_t H = weight_hh.shape[1]
    _check("weight_ih", weight_ih.shape, 2, H, D)
    _check("weight_hh", weight_hh.shape, 2, H, H)
    _check("h0", h0.shape, 2, N, H)
    if dh0 is not None:
        _check("dh0", dh0.shape, 2, N, H)
    _check("h", h.shape, 3, T, N, H)
    _check("dh", dh.shape, 3, T, N, H)
    _check("dpre", dpre.shape, 3, T, N, H)
    if dx is not None:
        _check("dx", dx.shape, 3, T, N, D)
    _check("dweight_ih", dweight_ih.shape, 2, H, D)
    _check("dweight_hh", dweight_hh.shape, 2, H, H)
    _check("dbias", dbias.shape, 1, H)
    cdef const int64_t *len_ptr = _lengths_ptr(lengths, N, T)
    if N == 0 or H == 0:
        return
    if T == 0:
        if dh0 is not None:
            dh0[...] = 0
        return

    cdef Py_ssize_t t, n, j, NH = N * H
    cdef const floating *h_ptr = &h[0, 0, 0]
    cdef const floating *w_hh = &weight_hh[0, 0]
    cdef floating *dh_ptr = &dh[0, 0, 0]
    cdef floating *dp_ptr = &dpre[0, 0, 0]
    cdef floating *dx_ptr = NULL
    cdef floating *dh0_ptr = &dh0[0, 0] if dh0 is not None else NULL
    if dx is not None and D > 0:
        dx_ptr = &dx[0, 0, 0]
    cdef fl_step_matrix *w_steps
    with nogil:
        w_steps = step_matrix(False, N, H, H, w_hh)
        for t in range(T - 1, -1, -1):
            # dpre[t] = dh[t] * act'(pre[t])
            if floating is float:
                fl_rnn_bwd_f32(NH, sigmoid, h_ptr + t * NH, dh_ptr + t * NH, dp_ptr + t * NH)
            else:
                fl_rnn_bwd_f64(NH, sigmoid, h_ptr + t * NH, dh_ptr + t * NH, dp_ptr + t * NH)
            if len_ptr != NULL and t > 0:
                for n in range(N):  # padded: h[t] = h[t-1]
                    if t >= len_ptr[n]:
                        for j in range(H):
                            dh_ptr[(t - 1) * NH + n * H + j] += dh_ptr[t * NH + n * H + j]
                            dp_ptr[t * NH + n * H + j] = 0
            if t > 0:   # dh[t-1] += dpre[t] @ W_hh
                step_product(w_steps, False, N, H, H, dp_ptr + t * NH, H, w_hh, H, True,
                             dh_ptr + (t - 1) * NH, H)
            elif dh0_ptr != NULL:   # dh0 = dpre[0] @ W_hh
                step_product(w_steps, False, N, H, H, dp_ptr, H, w_hh, H, False, dh0_ptr, H)
        fl_step_matrix_free(w_steps)

        weight_gradients(T, N, H, H, D, H, dp_ptr, dp_ptr, &x[0, 0, 0] if D > 0 else NULL,
                         h_ptr, True, &h0[0, 0] if any_nonzero(&h0[0, 0], N * H) else NULL,
                         &dweight_ih[0, 0], &dweight_hh[0, 0], &dbias[0])  # db = dpre.sum(rows)
        if dx_ptr != NULL:
            input_gradient(T * N, H, D, dp_ptr, H, &weight_ih[0, 0], dx_ptr)  # dx = dpre @ W_ih


# ---- GRU, forward --------------------------------------------------------------------

def gru_layer_forward(const floating[:, :, ::1] x,          # (T, N, D)
                      const floating[:, ::1] weight_ih,     # (3H, D)
                      const floating[:, ::1] weight_hh,     # (3H, H)
                      const floating[::1] bias_ih,          # (3H,)
                      const floating[::1] bias_hh,          # (3H,)
                      const floating[:, ::1] h0,            # (N, H)
                      floating[:, :, ::1] gates,            # (T, N, 3H) out: r, z, n activations
                      floating[:, :, ::1] hproj,            # (T, N, 3H) out: h[t-1] @ W_hh.T + b_hh
                      floating[:, :, ::1] h,                # (T, N, H) out
                      const int64_t[::1] lengths=None):     # (N,) real steps, or None
    """Run one GRU layer over all T steps; keep what the backward pass needs.
    With lengths, h is carried unchanged through each sample's padding."""
    cdef Py_ssize_t T = x.shape[0], N = x.shape[1], D = x.shape[2]
    cdef Py_ssize_t H = weight_hh.shape[1], G = 3 * H
    _check("weight_ih", weight_ih.shape, 2, G, D)
    _check("weight_hh", weight_hh.shape, 2, G, H)
    _check("bias_ih", bias_ih.shape, 1, G)
    _check("bias_hh", bias_hh.shape, 1, G)
    _check("h0", h0.shape, 2, N, H)
    _check("gates", gates.shape, 3, T, N, G)
    _check("hproj", hproj.shape, 3, T, N, G)
    _check("h", h.shape, 3, T, N, H)
    cdef const int64_t *len_ptr = _lengths_ptr(lengths, N, T)
    if T == 0 or N == 0 or H == 0:
        return

    cdef Py_ssize_t t, NG = N * G, NH = N * H
    cdef floating *g_ptr = &gates[0, 0, 0]
    cdef floating *hp_ptr = &hproj[0, 0, 0]
    cdef floating *h_ptr = &h[0, 0, 0]
    cdef const floating *w_hh = &weight_hh[0, 0]
    cdef const floating *h_prev
    cdef fl_step_matrix *w_steps
    with nogil:
        # gates = x @ W_ih.T + b_ih, all T*N rows at once (b_hh goes to the hidden side)
        input_projection(T, N, D, G, &x[0, 0, 0], D, &weight_ih[0, 0], &bias_ih[0],
                         <const floating *>NULL, g_ptr)
        w_steps = step_matrix(True, N, G, H, w_hh)
        for t in range(T):
            if t > 0:
                h_prev = h_ptr + (t - 1) * NH
            else:
                h_prev = &h0[0, 0]
            if t > 0 or any_nonzero(h_prev, NH):   # hproj[t] = h_prev @ W_hh.T
                step_product(w_steps, True, N, G, H, h_prev, H, w_hh, H, False,
                             hp_ptr + t * NG, G)
            else:
                memset(hp_ptr, 0, NG * sizeof(floating))
            if floating is float:
                fl_gru_cell_fwd_f32(N, H, g_ptr + t * NG, hp_ptr + t * NG, &bias_hh[0],
                                    h_prev, h_ptr + t * NH)
            else:
                fl_gru_cell_fwd_f64(N, H, g_ptr + t * NG, hp_ptr + t * NG, &bias_hh[0],
                                    h_prev, h_ptr + t * NH)
            if len_ptr != NULL and t > 0:
                carry_padded_h(N, H, t, len_ptr, h_ptr)
        fl_step_matrix_free(w_steps)


# ---- GRU, backward through time ------------------------------------------------------

cdef Py_ssize_t _gru_chunk_steps(Py_ssize_t T, Py_ssize_t N, Py_ssize_t H,
                                 Py_ssize_t float_bytes) noexcept nogil:
    """Steps per chunk of a GRU layer's gradients (fl_gradient_steps over both of
    its gate gradients, 2 x 3H columns)."""
    return fl_gradient_steps(T, N, 6 * H, float_bytes)


def gru_gradient_chunk_steps(Py_ssize_t T, Py_ssize_t N, Py_ssize_t H, dtype):
    """Steps per chunk in which a GRU layer's backward computes its weight
    gradients and dx as it goes (T: one chunk): the steps its dgates_i and
    dgates_h may hold (gru_layer_backward)."""
    return _gru_chunk_steps(T, N, H, np.dtype(dtype).itemsize)


def gru_layer_backward(const floating[:, :, ::1] x,          # (T, N, D)
                       const floating[:, ::1] weight_ih,     # (3H, D)
                       const floating[:, ::1] weight_hh,     # (3H, H)
                       const floating[:, ::1] h0,            # (N, H)
                       const floating[:, :, ::1] gates,      # (T, N, 3H) from forward
                       const floating[:, :, ::1] hproj,      # (T, N, 3H) from forward
                       const floating[:, :, ::1] h,          # (T, N, H) from forward
                       floating[:, :, ::1] dh,               # (T, N, H) in: dL/dh_t from above; clobbered
                       floating[:, ::1] dh0,                 # (N, H) out: dL/dh0, or None to skip
                       floating[:, :, ::1] dgates_i,         # (T or chunk, N, 3H) out: input side
                       floating[:, :, ::1] dgates_h,         # (T or chunk, N, 3H) out: hidden side
                       floating[:, :, ::1] dx,               # (T, N, D) out, or None to skip
                       floating[:, ::1] dweight_ih,          # (3H, D) accumulated into
                       floating[:, ::1] dweight_hh,          # (3H, H) accumulated into
                       floating[::1] dbias_ih,               # (3H,) accumulated into
                       floating[::1] dbias_hh,               # (3H,) accumulated into
                       const int64_t[::1] lengths=None):
    """Backprop through all T steps of one GRU layer. dh is the running gradient
    on h_t. Padded steps pass dh[t] on to dh[t-1] and get zero gate gradients.
    The weight gradients and dx of each chunk of steps are taken as soon as the
    loop is done with it (gru_gradient_chunk_steps; all T steps where the gate
    gradients fit in L2), so dgates_i and dgates_h may instead hold one chunk's
    steps, scratch that each chunk reuses (step t at t % those steps; contents
    unspecified after)."""
    cdef Py_ssize_t T = x.shape[0], N = x.shape[1], D = x.shape[2]
    cdef Py_ssize_t H = weight_hh.shape[1], G = 3 * H
    cdef Py_ssize_t chunk = _gru_chunk_steps(T, N, H, sizeof(floating))
    cdef Py_ssize_t ring = chunk if dgates_i.shape[0] == chunk else T   # steps the buffers hold
    _check("weight_ih", weight_ih.shape, 2, G, D)
    _check("weight_hh", weight_hh.shape, 2, G, H)
    _check("h0", h0.shape, 2, N, H)
    if dh0 is not None:
        _check("dh0", dh0.shape, 2, N, H)
    _check("gates", gates.shape, 3, T, N, G)
    _check("hproj", hproj.shape, 3, T, N, G)
    _check("dgates_i", dgates_i.shape, 3, ring, N, G)
    _check("dgates_h", dgates_h.shape, 3, ring, N, G)
    _check("h", h.shape, 3, T, N, H)
    _check("dh", dh.shape, 3, T, N, H)
    if dx is not None:
        _check("dx", dx.shape, 3, T, N, D)
    _check("dweight_ih", dweight_ih.shape, 2, G, D)
    _check("dweight_hh", dweight_hh.shape, 2, G, H)
    _check("dbias_ih", dbias_ih.shape, 1, G)
    _check("dbias_hh", dbias_hh.shape, 1, G)
    cdef const int64_t *len_ptr = _lengths_ptr(lengths, N, T)
    if N == 0 or H == 0:
        return
    if T == 0:
        if dh0 is not None:
            dh0[...] = 0
        return

    cdef Py_ssize_t t, n, j, k, NG = N * G, NH = N * H
    cdef const floating *g_ptr = &gates[0, 0, 0]
    cdef const floating *hp_ptr = &hproj[0, 0, 0]
    cdef const floating *h_ptr = &h[0, 0, 0]
    cdef const floating *w_hh = &weight_hh[0, 0]
    cdef floating *dh_ptr = &dh[0, 0, 0]
    cdef floating *di_ptr = &dgates_i[0, 0, 0]
    cdef floating *dhg_ptr = &dgates_h[0, 0, 0]
    cdef floating *dx_ptr = NULL
    cdef const floating *h_prev
    cdef floating *dh_prev
    if dx is not None and D > 0:
        dx_ptr = &dx[0, 0, 0]
    cdef floating *dh0_ptr = &dh0[0, 0] if dh0 is not None else NULL
    cdef floating[:, ::1] direct = np.empty_like(h0)         # (N, H) dh[t] * z, the skip path
    cdef floating *dd = &direct[0, 0]
    cdef const floating *h0_ptr = &h0[0, 0] if any_nonzero(&h0[0, 0], NH) else NULL
    cdef floating *di_t
    cdef floating *dhg_t
    cdef Py_ssize_t t1
    cdef fl_step_matrix *w_steps
    with nogil:
        w_steps = step_matrix(False, N, G, H, w_hh)
        for t in range(T - 1, -1, -1):
            if t > 0:
                h_prev, dh_prev = h_ptr + (t - 1) * NH, dh_ptr + (t - 1) * NH
            else:
                h_prev, dh_prev = &h0[0, 0], dh0_ptr
            di_t, dhg_t = di_ptr + t % ring * NG, dhg_ptr + t % ring * NG  # step t's rows
            if floating is float:
                fl_gru_cell_bwd_f32(N, H, g_ptr + t * NG, hp_ptr + t * NG, h_prev,
                                    dh_ptr + t * NH, di_t, dhg_t, dd)
            else:
                fl_gru_cell_bwd_f64(N, H, g_ptr + t * NG, hp_ptr + t * NG, h_prev,
                                    dh_ptr + t * NH, di_t, dhg_t, dd)
            if len_ptr != NULL and t > 0:
                for n in range(N):  # padded: h[t] = h[t-1], all of dh[t] goes straight on
                    if t >= len_ptr[n]:
                        for j in range(H):
                            dd[n * H + j] = dh_ptr[t * NH + n * H + j]
                        for k in range(G):
                            di_t[n * G + k] = 0
                            dhg_t[n * G + k] = 0
            # dh_prev (+)= dh[t] * z + dgates_h[t] @ W_hh (no dh_prev: t = 0 without dh0)
            if dh_prev != NULL:
                if t > 0:
                    for k in range(NH):
                        dh_prev[k] += dd[k]
                else:
                    for k in range(NH):
                        dh_prev[k] = dd[k]
                step_product(w_steps, False, N, H, G, dhg_t, G, w_hh, H, True, dh_prev, H)
            if t % chunk == 0:   # steps [t, t1), while their gate gradients are in cache
                t1 = min(t + chunk, T)
                weight_gradients(t1 - t, N, G, G, D, H, di_t, dhg_t,
                                 &x[t, 0, 0] if D > 0 else NULL,
                                 h_ptr + (t - 1) * NH if t > 0 else h_ptr, t == 0, h0_ptr,
                                 &dweight_ih[0, 0], &dweight_hh[0, 0],
                                 &dbias_ih[0])                  # db_ih = dgates_i.sum(rows)
                sum_rows((t1 - t) * N, G, G, dhg_t, &dbias_hh[0])  # db_hh = dgates_h.sum(rows)
                if dx_ptr != NULL:   # dx = dgates_i @ W_ih
                    input_gradient((t1 - t) * N, G, D, di_t, G, &weight_ih[0, 0],
                                   dx_ptr + t * N * D)
        fl_step_matrix_free(w_steps)


# ---- the dense head: forward and backward ------------------------------------------
# A compiled pair instead of NumPy's matmul: at the heads' shapes (one output, a
# few thousand rows) NumPy's path took 10-16 us a product, OpenBLAS's gemm through
# cython_blas ~1 us.

def dense_forward(x, weight, bias, out):
    """out = x @ weight.T + bias: x (M, I), weight (K, I), bias (K,), out (M, K),
    C-contiguous, of one dtype (float32 or float64)."""
    if not _plain_dense_forward(x, weight, bias, out):
        _dense_forward(x, weight, bias, out)


cdef bint _plain_dense_forward(x, weight, bias, out) except -1:
    """dense_forward with its buffers taken without typed memoryviews (1.0 -> 0.3 us
    a call: a single-sequence predict's head): False, with nothing done, unless
    all four are plain arrays of x's float type and matching shapes (_plain_data)."""
    cdef cnp.npy_intp *x_dims = _dims(x, 2)
    cdef cnp.npy_intp *w_dims = _dims(weight, 2)
    if x_dims == NULL or w_dims == NULL:
        return False
    cdef Py_ssize_t M = x_dims[0], I = x_dims[1], K = w_dims[0]
    cdef int dtype = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if M == 0 or I == 0 or K == 0 or dtype not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        return False
    cdef const void *x_ptr = _plain_data(x, dtype, 2, M, I)
    cdef const void *w_ptr = _plain_data(weight, dtype, 2, K, I)
    cdef const void *b_ptr = _plain_data(bias, dtype, 1, K)
    cdef void *out_ptr = _plain_data(out, dtype, 2, M, K, True)
    if x_ptr == NULL or w_ptr == NULL or b_ptr == NULL or out_ptr == NULL:
        return False
    with nogil:
        if dtype == cnp.NPY_FLOAT32:
            input_projection(1, M, I, K, <const float *>x_ptr, I, <const float *>w_ptr,
                             <const float *>b_ptr, NULL, <float *>out_ptr)
        else:
            input_projection(1, M, I, K, <const double *>x_ptr, I, <const double *>w_ptr,
                             <const double *>b_ptr, NULL, <double *>out_ptr)
    return True


def _dense_forward(const floating[:, ::1] x,          # (M, I)
                   const floating[:, ::1] weight,     # (K, I)
                   const floating[::1] bias,          # (K,)
                   floating[:, ::1] out):             # (M, K) out
    """dense_forward of buffers _plain_dense_forward does not take: typed
    memoryviews, which check them."""
    cdef Py_ssize_t M = x.shape[0], I = x.shape[1], K = weight.shape[0]
    _check("weight", weight.shape, 2, K, I)
    _check("bias", bias.shape, 1, K)
    _check("out", out.shape, 2, M, K)
    if M == 0 or K == 0:
        return
    with nogil:
        input_projection(1, M, I, K, &x[0, 0] if I > 0 else NULL, I,
                         &weight[0, 0] if I > 0 else NULL, &bias[0], NULL, &out[0, 0])


def dense_backward(const floating[:, ::1] x,         # (M, I) what the forward saw
                   const floating[:, ::1] weight,    # (K, I)
                   const floating[:, ::1] dout,      # (M, K) dL/dout
                   floating[:, ::1] dweight,         # (K, I) out (overwritten)
                   floating[::1] dbias,              # (K,) out (overwritten)
                   floating[:, ::1] dx):             # (M, I) out, or None to skip
    """dweight = dout.T @ x, dbias = dout.sum(rows), dx = dout @ weight."""
    cdef Py_ssize_t M = x.shape[0], I = x.shape[1], K = weight.shape[0], k
    _check("weight", weight.shape, 2, K, I)
    _check("dout", dout.shape, 2, M, K)
    _check("dweight", dweight.shape, 2, K, I)
    _check("dbias", dbias.shape, 1, K)
    if dx is not None:
        _check("dx", dx.shape, 2, M, I)
    with nogil:
        for k in range(K):
            dbias[k] = 0
        if M == 0 or K == 0 or I == 0:   # no rows or no outputs: nothing flows
            if K > 0 and I > 0:
                memset(&dweight[0, 0], 0, K * I * sizeof(floating))
            if dx is not None and M > 0 and I > 0:
                memset(&dx[0, 0], 0, M * I * sizeof(floating))
        else:
            gemm(True, False, K, I, M, <floating>1, &dout[0, 0], K, &x[0, 0], I,
                 <floating>0, &dweight[0, 0], I)                   # dW = dout.T @ x
            sum_rows(M, K, K, &dout[0, 0], &dbias[0])                  # db = dout.sum(rows)
            if dx is not None:
                input_gradient(M, K, I, &dout[0, 0], K, &weight[0, 0], &dx[0, 0])  # dx = dout @ W
