"""Each compiled kernel against the plain NumPy reference, float32 and float64."""
import numpy as np
import pytest
from conftest import random_layer_arrays

from fastlstm import _cells, _kernels, _ops
from fastlstm import _reference as ref

SHAPES = [  # (T, N, D, H)
    (1, 1, 1, 1),
    (1, 3, 2, 4),
    (5, 1, 3, 2),
    (4, 3, 1, 1),
    (6, 4, 5, 7),
    (3, 2, 8, 33),   # H not a multiple of any vector width
    (9, 5, 2, 16),
    (5, 1, 3, 70),    # one sequence: gemv in the BLAS loop; H spans 5 vectors of 16
    (4, 13, 3, 40),   # N past one 12-row register tile (7 + 6 rows); H = 2.5 vectors
    (2, 20, 3, 24),   # a 12-row tile and one of 8
    (3, 12, 1, 17),   # N = one full tile; the 2nd thread owns a single unit
    (3, 25, 2, 300),  # a charlm-sized layer: odd vector counts, row tiles of 12 + 7 + 6
    (3, 60, 2, 300),  # the backward cell's buffers past 1 MB a thread on 1 and 2 threads:
                      # the tiles fetch them ahead (FL_FETCH_MIN_BYTES), as the panels
    (4, 32, 1, 50),   # sine-sized: 2 threads split it by samples, 16 each (tiles of 8 + 8 rows)
    (3, 20, 0, 24),   # no input: the gates start from the bias alone
]
# Forward and backward run through the packed, thread-split float32 time loop
# (when the CPU has it) with 1 and 2 threads, and through the BLAS loop (its
# float32 products per step on a packed W_hh where H >= 128: _blas.step_matrix);
# the last as a CPU without AVX-512 runs them: one sgemm per step, the weight
# gradients through BLAS, the float32 cells' portable loops.
PATHS = [("packed", 1), ("packed", 2), ("blas", 1), ("no-avx512", 1)]
# float32 against a float64 reference: a few ulp per operation, grown over T steps
TOL = {np.float32: 2e-5, np.float64: 1e-12}


# What a CPU without AVX-512 runs instead (each switch returns its previous setting)
AVX512_SWITCHES = (_kernels.set_avx512_cell, _kernels.set_gradient_tiles,
                   _kernels.set_step_products)


def random_layer(T, N, D, H, dtype, seed=0, zero_state=False):
    """(x, w_ih, w_hh, b_ih, b_hh, h0, c0) of one LSTM layer."""
    return random_layer_arrays(4 * H, T, N, D, H, dtype, seed, zero_state, n_states=2)


@pytest.fixture(params=PATHS, ids=lambda p: f"{p[0]}-{p[1]}thread")
def path(request):
    """(kind, n_threads) of the time loop; the setting in force before is restored after."""
    kind, n_threads = request.param
    previous = _kernels.set_packed_recurrence(kind == "packed")
    previous_avx512 = [set_avx512(kind != "no-avx512") for set_avx512 in AVX512_SWITCHES]
    yield kind, n_threads
    _kernels.set_packed_recurrence(previous)
    for set_avx512, was in zip(AVX512_SWITCHES, previous_avx512):
        set_avx512(was)


def run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads=None, packed_weights=None):
    T, N, _ = x.shape
    H = w_hh.shape[1]
    dtype = w_hh.dtype
    gates = np.full((T, N, 4 * H), np.nan, dtype)
    c, tanh_c, h = (np.full((T, N, H), np.nan, dtype) for _ in range(3))
    _kernels.lstm_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, c, tanh_c, h,
                                n_threads=n_threads, packed_weights=packed_weights)
    return gates, c, tanh_c, h


def run_forward_one_step(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads=None):
    """run_forward for a forward no backward follows: gates (1, N, G) and tanh_c
    (1, N, H) as scratch for one step at a time."""
    T, N, _ = x.shape
    H = w_hh.shape[1]
    dtype = w_hh.dtype
    gates = np.full((1, N, 4 * H), np.nan, dtype)
    tanh_c = np.full((1, N, H), np.nan, dtype)
    c, h = (np.full((T, N, H), np.nan, dtype) for _ in range(2))
    _kernels.lstm_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, c, tanh_c, h,
                                n_threads=n_threads)
    return gates, c, tanh_c, h


@pytest.mark.parametrize("n_threads", [1, 2])
def test_weights_beyond_the_caches_run_in_groups_of_panels_with_the_same_results(n_threads):
    """H = 768: W_hh packed takes 9 MB, past fl_rows_product's 8 MB, so its panels
    run in groups, each over every tile of rows (batched predict through 1,024
    units took 1.54x less time so; 2,048: 1.54x): the reference's numbers, for
    training's forward and for a prediction's, and the same bits on any number of
    threads."""
    needs_packed_loop()
    args = random_layer(3, 40, 5, 768, np.float32)
    # in float64: sums of 773 float32 terms stray ~3e-5 (NumPy's own float32 too)
    h_expected, _, cache = ref.lstm_forward(*(a.astype(np.float64) for a in args))
    c_expected = np.stack([step[7] for step in cache])
    for run in (run_forward, run_forward_one_step):
        _, c, _, h = run(*args, n_threads=n_threads)
        np.testing.assert_allclose(c, c_expected, rtol=0, atol=1e-4)
        np.testing.assert_allclose(h, h_expected, rtol=0, atol=1e-4)
        _, c_other, _, h_other = run(*args, n_threads=3 - n_threads)
        np.testing.assert_array_equal(h, h_other)


def run_backward(args, saved, dh, dc_last, n_threads=None, with_dh0=True, dgates_steps=None):
    """(dx, dw_ih, dw_hh, db, dh0, dc0) of the kernel; weight gradients start at 1.
    with_dh0=False asks for no dh0 (returned as None); dgates_steps: steps of the
    dgates buffer (default T)."""
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = args
    T, N, D = x.shape
    H = w_hh.shape[1]
    dtype = x.dtype
    dc = dc_last.copy()
    dh0 = np.full((N, H), np.nan, dtype) if with_dh0 else None
    dgates = np.full((dgates_steps or T, N, 4 * H), np.nan, dtype)
    dx = np.full((T, N, D), np.nan, dtype)
    # the kernel accumulates weight gradients: start from a known non-zero value
    dw_ih, dw_hh, db = (np.ones(s, dtype) for s in ((4 * H, D), (4 * H, H), (4 * H,)))
    _kernels.lstm_layer_backward(x, w_ih, w_hh, h0, c0, *saved, dh.copy(), dc,
                                 dh0, dgates, dx, dw_ih, dw_hh, db, n_threads=n_threads)
    return dx, dw_ih, dw_hh, db, dh0, dc


def as64(*arrays):
    return [a.astype(np.float64) for a in arrays]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("zero_state", [False, True])
def test_forward_matches_reference(shape, dtype, zero_state, path):
    args = random_layer(*shape, dtype, zero_state=zero_state)
    gates, c, tanh_c, h = run_forward(*args, n_threads=path[1])
    h_ref, c_last_ref, cache = ref.lstm_forward(*as64(*args))
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=TOL[dtype])
    np.testing.assert_allclose(c[-1], c_last_ref, rtol=0, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(tanh_c, np.tanh(c.astype(np.float64)), rtol=0, atol=TOL[dtype])
    H = shape[3]
    i, f, g, o = (gates[..., k * H:(k + 1) * H] for k in range(4))
    np.testing.assert_allclose(i, np.stack([step[3] for step in cache]), atol=TOL[dtype])
    np.testing.assert_allclose(g, np.stack([step[5] for step in cache]), atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[1] > 1])
def test_forward_with_one_step_of_gates_matches_the_full_one(shape, dtype, path):
    """gates (1, N, G) and tanh_c (1, N, H), scratch for a forward no backward
    follows: the same c and h as with every step's buffers (the input projection
    then runs step by step, its sums rounded apart, and the packed loop's cell
    makes c and h only), the same bits on 1 and 2 threads."""
    args = random_layer(*shape, dtype)
    T, N, _, H = shape
    full = run_forward(*args, n_threads=path[1])
    gates, c, tanh_c, h = run_forward_one_step(*args, n_threads=path[1])
    tol = dict(rtol=0, atol=TOL[dtype])
    np.testing.assert_allclose(c, full[1], **tol)
    np.testing.assert_allclose(h, full[3], **tol)
    _, c_other, _, h_other = run_forward_one_step(*args, n_threads=3 - path[1])
    np.testing.assert_array_equal(c, c_other)
    np.testing.assert_array_equal(h, h_other)
    if T > 1:
        with pytest.raises(ValueError, match="gates has shape"):   # padding needs every step
            _kernels.lstm_layer_forward(*args, gates, c, tanh_c, h,
                                        lengths=np.full(N, T, dtype=np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("zero_state", [False, True])
def test_backward_matches_reference(shape, dtype, zero_state, path):
    T, N, D, H = shape
    args = random_layer(*shape, dtype, zero_state=zero_state)
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = args
    saved = run_forward(*args, n_threads=path[1])
    rng = np.random.default_rng(1)
    dh = rng.standard_normal((T, N, H)).astype(dtype)
    dc_last = rng.standard_normal((N, H)).astype(dtype)

    _, _, cache = ref.lstm_forward(*as64(*args))
    dx_r, dw_ih_r, dw_hh_r, db_r, _, dh0_r, dc0_r = ref.lstm_backward(
        *as64(dh, dc_last, w_ih, w_hh), cache)

    dx, dw_ih, dw_hh, db, dh0, dc = run_backward(args, saved, dh, dc_last, n_threads=path[1])
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(dx, dx_r, rtol=0, atol=tol)
    np.testing.assert_allclose(dw_ih - 1, dw_ih_r, rtol=0, atol=tol)
    np.testing.assert_allclose(dw_hh - 1, dw_hh_r, rtol=0, atol=tol)
    np.testing.assert_allclose(db - 1, db_r, rtol=0, atol=tol)
    np.testing.assert_allclose(dh0, dh0_r, rtol=0, atol=tol)
    np.testing.assert_allclose(dc, dc0_r, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_in_chunks_of_steps_matches_reference(dtype, path):
    """Where dgates outgrows L2, the weight gradients and dx come chunk by chunk,
    each as soon as the time loop is done with its steps: here 4 steps a chunk,
    the first (last steps) of 1. Relative tolerance: the sums run over 1088 rows."""
    T, N, D, H = 17, 64, 3, 64
    assert _kernels.gradient_chunk_steps(T, N, H, dtype) == 4
    assert _kernels.gradient_chunk_steps(T, N // 4, H, dtype) == T  # under 1 MB: one chunk
    args = random_layer(T, N, D, H, dtype)
    rng = np.random.default_rng(7)
    dh = rng.standard_normal((T, N, H)).astype(dtype)
    dc_last = rng.standard_normal((N, H)).astype(dtype)
    _, _, cache = ref.lstm_forward(*as64(*args))
    dx_r, dw_ih_r, dw_hh_r, db_r, _, dh0_r, dc0_r = ref.lstm_backward(
        *as64(dh, dc_last, args[1], args[2]), cache)
    saved = run_forward(*args, n_threads=path[1])
    dx, dw_ih, dw_hh, db, dh0, dc = run_backward(args, saved, dh, dc_last, n_threads=path[1])
    tol = dict(rtol=TOL[dtype] * 5, atol=TOL[dtype] * 10)
    for got, want in ((dx, dx_r), (dw_ih - 1, dw_ih_r), (dw_hh - 1, dw_hh_r), (db - 1, db_r),
                      (dh0, dh0_r), (dc, dc0_r)):
        np.testing.assert_allclose(got, want, **tol)
    # dgates as scratch of one chunk's steps, reused: the same bits
    in_chunk = run_backward(args, saved, dh, dc_last, n_threads=path[1], dgates_steps=4)
    for got, want in zip(in_chunk, (dx, dw_ih, dw_hh, db, dh0, dc)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="dgates"):
        run_backward(args, saved, dh, dc_last, n_threads=path[1], dgates_steps=5)


def test_padded_batch_in_chunks_of_steps_sums_each_sample_alone():
    """A padded batch (lengths: the BLAS loop) whose gradients come in chunks of
    steps, from a buffer of one chunk: dx of each sample, and the weight
    gradients summed over the samples, equal those of each sample run alone at
    its own length (one chunk)."""
    T, N, D, H = 20, 60, 3, 64
    G = 4 * H
    assert _kernels.gradient_chunk_steps(T, N, H, np.float64) == 5
    args = random_layer(T, N, D, H, np.float64, zero_state=True)
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = args
    rng = np.random.default_rng(8)
    lengths = rng.integers(5, T + 1, N).astype(np.int64)
    dh = np.zeros((T, N, H))
    dh[lengths - 1, np.arange(N)] = rng.standard_normal((N, H))   # at each sample's last step

    def gradients(x, h0, c0, dh, lengths, dgates_steps):
        T, N, _ = x.shape
        gates = np.empty((T, N, G))
        c, tanh_c, h = (np.empty((T, N, H)) for _ in range(3))
        _kernels.lstm_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, c, tanh_c, h,
                                    lengths=lengths)
        dx = np.empty_like(x)
        dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros(G)
        _kernels.lstm_layer_backward(x, w_ih, w_hh, h0, c0, gates, c, tanh_c, h, dh.copy(),
                                     np.zeros((N, H)), None, np.empty((dgates_steps, N, G)), dx,
                                     dw_ih, dw_hh, db, lengths=lengths)
        return dx, dw_ih, dw_hh, db

    dx, *weights = gradients(x, h0, c0, dh, lengths, 5)
    alone = [np.zeros_like(w) for w in weights]
    for n, length in enumerate(lengths):
        one = slice(n, n + 1)
        dx_n, *weights_n = gradients(np.ascontiguousarray(x[:length, one]), h0[one], c0[one],
                                     np.ascontiguousarray(dh[:length, one]), None, length)
        np.testing.assert_allclose(dx[:length, n], dx_n[:, 0], rtol=0, atol=1e-12)
        for total, w in zip(alone, weights_n):
            total += w
    for got, want in zip(weights, alone):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7, 13, 3, 40), (5, 4, 2, 128)])   # 128: products on packed W_hh
def test_padded_batch_matches_the_reference_run_on_each_sequence(shape, dtype, path):
    """lengths: each sequence's outputs and gradients are the reference's for it
    alone, from its own (h0, c0); past its end its state stays as it was (dx 0
    there), and the weight gradients are the sum of the sequences'."""
    T, N, D, H = shape
    args = random_layer(*shape, dtype)
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = args
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, T + 1, N).astype(np.int64)
    lengths[:2] = 1, T
    real = np.arange(T)[:, None] < lengths[None, :]                # (T, N)
    x[~real] = 1e3                                                 # padding must not leak in
    dh = rng.standard_normal((T, N, H)).astype(dtype)
    dh[~real] = 0
    dc_last = rng.standard_normal((N, H)).astype(dtype)
    gates = np.full((T, N, 4 * H), np.nan, dtype)
    c, tanh_c, h = (np.full((T, N, H), np.nan, dtype) for _ in range(3))
    _kernels.lstm_layer_forward(*args, gates, c, tanh_c, h, lengths=lengths, n_threads=path[1])
    dc, dh0 = dc_last.copy(), np.full((N, H), np.nan, dtype)
    dgates, dx = np.full((T, N, 4 * H), np.nan, dtype), np.full((T, N, D), np.nan, dtype)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros(4 * H, dtype)
    _kernels.lstm_layer_backward(x, w_ih, w_hh, h0, c0, gates, c, tanh_c, h, dh.copy(), dc,
                                 dh0, dgates, dx, dw_ih, dw_hh, db, lengths=lengths,
                                 n_threads=path[1])
    tol = dict(rtol=0, atol=TOL[dtype] * 10)
    sums = [np.zeros(w.shape) for w in (dw_ih, dw_hh, db)]
    for n, L in enumerate(lengths):
        one = slice(n, n + 1)
        h_r, _, cache = ref.lstm_forward(*as64(x[:L, one], w_ih, w_hh, b_ih, b_hh, h0[one],
                                               c0[one]))
        dx_r, dw_ih_r, dw_hh_r, db_r, _, dh0_r, dc0_r = ref.lstm_backward(
            *as64(dh[:L, one], dc_last[one], w_ih, w_hh), cache)
        np.testing.assert_allclose(h[:L, n], h_r[:, 0], **tol)
        np.testing.assert_allclose(h[L:, n], np.broadcast_to(h_r[-1, 0], (T - L, H)), **tol)
        np.testing.assert_allclose(dx[:L, n], dx_r[:, 0], **tol)
        np.testing.assert_array_equal(dx[L:, n], 0)
        np.testing.assert_allclose(dh0[n], dh0_r[0], **tol)
        np.testing.assert_allclose(dc[n], dc0_r[0], **tol)
        for total, w in zip(sums, (dw_ih_r, dw_hh_r, db_r)):
            total += w
    for got, want in zip((dw_ih, dw_hh, db), sums):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype] * 5, atol=TOL[dtype] * 10)


@pytest.mark.parametrize("tiles", [True, False], ids=["tiles", "blas"])
@pytest.mark.parametrize("shape", [
    # 1500 rows: six passes of FL_BLOCK_ROWS; 244 gate rows: 12 x 19 + 8 + 8;
    # D = 33: a panel and a one-vector panel; H = 61: a partial last vector
    (5, 300, 33, 61),
    (3, 150, 16, 200),  # D = 16, one whole vector; 450 and 300 rows: two passes
    (4, 7, 33, 12)])    # below TILES_MIN_WORK, and H < 16 columns: every product through BLAS
def test_float32_gradient_products_match_reference(shape, tiles):
    """The weight gradients and dx of the time loop: through the register tiles
    (_blas.weight_gradient and input_gradient where on_tiles, on AVX-512 CPUs) or
    through BLAS (set_gradient_tiles(False)), on 1 and 2 threads. The first two
    shapes are layers of 2^25 multiply-adds or more, whose gradients come in one
    call of each product a chunk of steps (gradients_part): their dgates outgrow
    L2, so in chunks of 1 and 2 steps (300 and 150 rows, over TILES_MIN_WORK)."""
    T, N, D, H = shape
    args = random_layer(*shape, np.float32)
    rng = np.random.default_rng(5)
    dh = rng.standard_normal((T, N, H)).astype(np.float32)
    dc_last = rng.standard_normal((N, H)).astype(np.float32)
    _, _, cache = ref.lstm_forward(*as64(*args))
    dx_r, dw_ih_r, dw_hh_r, db_r, _, _, _ = ref.lstm_backward(
        *as64(dh, dc_last, args[1], args[2]), cache)
    previous = _kernels.set_gradient_tiles(tiles)
    try:
        for n_threads in (1, 2):
            saved = run_forward(*args, n_threads=n_threads)
            dx, dw_ih, dw_hh, db, _, _ = run_backward(args, saved, dh, dc_last, n_threads)
            tol = dict(rtol=0, atol=TOL[np.float32] * 10)
            np.testing.assert_allclose(dx, dx_r, **tol)
            np.testing.assert_allclose(dw_ih - 1, dw_ih_r, **tol)
            np.testing.assert_allclose(dw_hh - 1, dw_hh_r, **tol)
            np.testing.assert_allclose(db - 1, db_r, **tol)
    finally:
        _kernels.set_gradient_tiles(previous)


@pytest.mark.parametrize("shape", [(5, 300, 33, 61), (3, 150, 16, 200)])
def test_float32_bias_gradient_is_the_same_on_tiles_and_blas(shape):
    """The tiles sum db beside dW_ih's first panel, each gate row's sum over the
    rows of dgates in order, as BLAS's path (sum_rows) does: the same bits."""
    T, N, D, H = shape
    args = random_layer(*shape, np.float32)
    rng = np.random.default_rng(6)
    dh = rng.standard_normal((T, N, H)).astype(np.float32)
    dc_last = rng.standard_normal((N, H)).astype(np.float32)
    saved = run_forward(*args, n_threads=1)
    biases = []
    for tiles in (True, False):
        previous = _kernels.set_gradient_tiles(tiles)
        try:
            biases.append(run_backward(args, saved, dh, dc_last, 1)[3])
        finally:
            _kernels.set_gradient_tiles(previous)
    np.testing.assert_array_equal(biases[0], biases[1])


@pytest.mark.parametrize("shape", [
    (6, 30, 4, 300),   # split by samples: 15 + 15, 10 + 10 + 10
    (10, 32, 1, 50),   # sine: one input, so dW_ih and dx are BLAS products of one column; 4 blocks
    (5, 24, 2, 16),    # 8 samples a thread on three; the gradients in one block
    (4, 13, 3, 40),    # too few samples to split
    (4, 120, 3, 160),  # the gradients in chunks of steps 3 and 0-2 (dgates past 1 MB)
    (3, 2, 2, 16),
    (4, 3, 2, 256),    # wide (FL_WIDE_H): a sample a thread is worth it, 2 + 1, 1 + 1 + 1
    (3, 5, 3, 300)])
def test_float32_is_bit_identical_for_any_thread_count(shape):
    """Each output of the packed loop is one in-order sum, whoever computes it, and
    the weight gradients of its chunks of steps come in fixed blocks whoever
    computes them."""
    T, N, D, H = shape
    args = random_layer(*shape, np.float32)
    rng = np.random.default_rng(3)
    dh = rng.standard_normal((T, N, H)).astype(np.float32)
    dc_last = rng.standard_normal((N, H)).astype(np.float32)
    results = []
    previous = _kernels.set_packed_recurrence(True)
    try:
        for n_threads in (1, 2, 3):
            saved = run_forward(*args, n_threads=n_threads)
            results.append(saved + run_backward(args, saved, dh, dc_last, n_threads=n_threads))
    finally:
        _kernels.set_packed_recurrence(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# ---- one sequence on weights packed once and kept (PackedWeights) ---------------

ONE_SEQUENCE_SHAPES = [  # (T, N=1, D, H)
    (1, 1, 1, 1),
    (5, 1, 3, 2),
    (5, 1, 3, 70),    # one thread (H < 128); 5 vectors of 16
    (4, 1, 3, 128),   # the narrowest layer packed for two threads
    (6, 1, 4, 200),   # two threads, a partial vector on the second
    (13, 1, 2, 17),   # T past one 12-row tile of the input projection
    (3, 1, 2, 300),   # charlm-sized
    (5, 1, 2, 384),   # 1.2 MB of W_hh a thread: with an L2 of 2 MB, read in alternate
                      # directions step by step (2.4 MB on one thread: up to a 4 MB L2)
]


def needs_packed_loop():
    if not _kernels.packed_recurrence_available():
        pytest.skip("no AVX-512 on this CPU: a single sequence runs the BLAS loop")


# Longer than the slices' window of rows (fl_single_window), each step computed in
# rows reused round: W_hh is scaled down for these, so that float32's rounding does
# not grow over a hundred steps against the float64 reference as it does with the
# random weights (the BLAS loop strays as far there).
LONG_SEQUENCE_SHAPES = [
    (100, 1, 3, 128),   # two windows, of 96 steps of 64 units
    (75, 1, 2, 300),    # three windows of 48 steps, slices of 144 and 156 units
    (130, 1, 2, 384),   # four windows of 36 steps, alternate directions
]


@pytest.mark.parametrize("shape, w_hh_scale", [(shape, 1.0) for shape in ONE_SEQUENCE_SHAPES]
                         + [(shape, 0.25) for shape in LONG_SEQUENCE_SHAPES])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("zero_state", [False, True])
def test_one_sequence_on_kept_weights_matches_reference(shape, w_hh_scale, n_threads,
                                                        zero_state):
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(*shape, np.float32, zero_state=zero_state)
    w_hh *= w_hh_scale
    args = (x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    gates, c, tanh_c, h = run_forward(*args, n_threads=n_threads,
                                      packed_weights=_kernels.PackedWeights())
    h_ref, c_last_ref, cache = ref.lstm_forward(*as64(*args))
    tol = TOL[np.float32]
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(c[-1], c_last_ref, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(tanh_c, np.tanh(c.astype(np.float64)), rtol=0, atol=tol)
    H = shape[3]
    for k, at in ((0, 3), (1, 4), (2, 5), (3, 6)):   # i, f, g, o against the reference's
        np.testing.assert_allclose(gates[..., k * H:(k + 1) * H],
                                   np.stack([step[at] for step in cache]), atol=tol)


@pytest.mark.parametrize("packed_loop", [True, False])
@pytest.mark.parametrize("T, H", [(9, 128), (100, 200)])
@pytest.mark.parametrize("keep_gates", [False, True])
def test_one_sequence_without_gates_kept_gives_the_same_c_and_h(T, H, packed_loop, keep_gates):
    """tanh_c=None, and gates=None too unless keep_gates (a prediction keeps
    neither): c and h, and gates where kept, are those of a call that keeps all
    four, bit for bit, on the packed loop and off it."""
    if packed_loop:
        needs_packed_loop()
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(T, 1, 3, H, np.float32)
    w_hh *= 0.25
    previous = _kernels.set_packed_recurrence(packed_loop)
    try:
        kept = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 2, _kernels.PackedWeights())
        c, h = (np.full((T, 1, H), np.nan, np.float32) for _ in range(2))
        gates = np.full((T, 1, 4 * H), np.nan, np.float32) if keep_gates else None
        _kernels.lstm_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, c, None, h,
                                    None, 2, _kernels.PackedWeights())
    finally:
        _kernels.set_packed_recurrence(previous)
    np.testing.assert_array_equal(c, kept[1])
    np.testing.assert_array_equal(h, kept[3])
    if keep_gates:
        np.testing.assert_array_equal(gates, kept[0])


def test_one_sequence_on_kept_weights_is_taken_and_bit_identical_for_any_thread_count():
    """The kept path rounds differently from the BLAS loop (so it ran), the same on
    1, 2 and 3 threads, and set_packed_recurrence(False) switches it off."""
    needs_packed_loop()
    args = random_layer(9, 1, 3, 200, np.float32)
    blas = run_forward(*args, n_threads=1)
    kept = [run_forward(*args, n_threads=n, packed_weights=_kernels.PackedWeights())
            for n in (1, 2, 3)]
    assert not np.array_equal(kept[0][3], blas[3])
    np.testing.assert_allclose(kept[0][3], blas[3], atol=1e-4)   # rounding, grown over 9 steps
    for other in kept[1:]:
        for a, b in zip(kept[0], other):
            np.testing.assert_array_equal(a, b)
    previous = _kernels.set_packed_recurrence(False)
    try:
        off = run_forward(*args, n_threads=2, packed_weights=_kernels.PackedWeights())
    finally:
        _kernels.set_packed_recurrence(previous)
    np.testing.assert_array_equal(off[3], blas[3])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_kept_weights_follow_every_change_of_the_weights(n_threads):
    """Edits in place between calls (one element of W_hh in each thread's rows, one
    of W_ih) are seen: the next call equals a fresh packing, not the stale one.
    A new shape on the same object is packed anew."""
    needs_packed_loop()
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(7, 1, 3, 200, np.float32)
    kept = _kernels.PackedWeights()
    first = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads, kept)
    np.testing.assert_array_equal(run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads,
                                              kept)[3], first[3])     # reused: same result
    for rows, edit in (((5, 7), w_hh), ((799, 199), w_hh), ((500, 2), w_ih)):
        edit[rows] += 0.25
        got = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads, kept)
        fresh = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads,
                            _kernels.PackedWeights())
        assert not np.array_equal(got[3], first[3])
        np.testing.assert_array_equal(got[3], fresh[3])
        first = got
    b_ih += 0.5                                        # biases are read on every call
    np.testing.assert_array_equal(
        run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads, kept)[3],
        run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads, _kernels.PackedWeights())[3])
    other = random_layer(4, 1, 5, 40, np.float32, seed=2)
    np.testing.assert_array_equal(run_forward(*other, n_threads, kept)[3],
                                  run_forward(*other, n_threads, _kernels.PackedWeights())[3])


def test_a_hold_skips_the_comparison_for_the_holding_thread_only():
    """hold(): the holder's loop vouches for its own calls (forecast, generate).
    Another thread's call, after it changed the weights while the holder runs,
    compares as ever; it was served the stale packing until the hold ended."""
    needs_packed_loop()
    import threading
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(7, 1, 3, 200, np.float32)
    kept = _kernels.PackedWeights()
    holding, done = threading.Event(), threading.Event()

    def hold_like_a_forecast():
        kept.hold()
        try:
            run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 1, kept)  # compares, then trusts
            holding.set()
            done.wait(30)
        finally:
            kept.release()

    holder = threading.Thread(target=hold_like_a_forecast)
    holder.start()
    try:
        assert holding.wait(30)
        w_hh[5, 7] += 0.25                                    # this thread changes them
        got = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 1, kept)
        fresh = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 1, _kernels.PackedWeights())
        np.testing.assert_array_equal(got[3], fresh[3])
    finally:
        done.set()
        holder.join()
    # and within one thread: after its first call, a hold trusts the packing as told
    kept.hold()
    try:
        before = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 1, kept)
        w_hh[5, 7] += 0.25                                    # broken promise: not seen
        np.testing.assert_array_equal(
            run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 1, kept)[3], before[3])
    finally:
        kept.release()
    np.testing.assert_array_equal(                            # released: compared again
        run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 1, kept)[3],
        run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, 1, _kernels.PackedWeights())[3])


@pytest.mark.parametrize("T, H", [(9, 128), (9, 200), (9, 384),   # 384: alternate directions
                                  (100, 128)])                     # two windows of rows
def test_one_sequence_on_one_thread_or_the_team_gives_the_same_bits(T, H):
    """A packing in slices for two threads runs on the team or, slice after slice,
    on the calling thread (forced both ways here, then chosen by measured time):
    the same bits every way, and the measured choice times both ways."""
    needs_packed_loop()
    args = random_layer(T, 1, 3, H, np.float32)
    results, runs = {}, {}
    previous = _kernels.set_one_sequence_threads(None)
    try:
        for way in (1, 2, None):
            _kernels.set_one_sequence_threads(way)
            kept = _kernels.PackedWeights()
            results[way] = [run_forward(*args, 2, kept) for _ in range(20)]
            runs[way] = kept.runs
    finally:
        _kernels.set_one_sequence_threads(previous)
    assert runs[1] == (20, 0) and runs[2] == (0, 20)
    assert min(runs[None]) >= 1 and sum(runs[None]) == 20
    for got in results[2] + results[None] + results[1][1:]:
        for a, b in zip(results[1][0], got):
            np.testing.assert_array_equal(a, b)


def test_one_sequence_way_is_the_faster_one_with_a_probe_of_the_other():
    """pick_team: the team first, then one thread, then whichever has the lower
    fastest kept time, and the other way on a probe; an outlier among the kept
    times does not decide, and a way that got slower in all its kept times loses.
    next_probe_every: probes twice as far apart each time one leaves the choice as
    it was, up to 512 calls, and 16 calls apart again once one changes it."""
    pick = _kernels.pick_team
    assert pick(False, [], []) is True
    assert pick(False, [], [900.0]) is False
    assert pick(True, [], [900.0]) is False                 # no probe before both ran
    assert pick(False, [1500.0], [900.0]) is True
    assert pick(False, [900.0], [1500.0]) is False
    assert pick(True, [1500.0], [900.0]) is False           # the probe of the slower way
    assert pick(True, [900.0], [1500.0]) is True
    assert pick(False, [1500.0], [900.0, 5000.0, 4000.0, 6000.0]) is True    # one good time
    assert pick(False, [1500.0], [2400.0, 2500.0, 2300.0, 2600.0]) is False  # slow every time
    every = 16
    for expected in (32, 64, 128, 256, 512, 512):
        every = _kernels.next_probe_every(every, True)
        assert every == expected
    assert _kernels.next_probe_every(every, False) == 16


def test_kept_weights_shared_by_concurrent_calls_give_the_same_results():
    """Calls that find the packing or the thread team in use pack for themselves on
    one thread: the same bits as the serial calls."""
    needs_packed_loop()
    import threading
    from concurrent.futures import ThreadPoolExecutor
    weights = random_layer(20, 1, 3, 200, np.float32)[1:]
    layers = [(random_layer(20, 1, 3, 200, np.float32, seed=s)[0],) + weights   # eight inputs
              for s in range(8)]
    kept = _kernels.PackedWeights()
    serial = [run_forward(*args, 2, kept)[3] for args in layers]
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()
        return [run_forward(*layers[k], 2, kept)[3] for _ in range(20)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for k in range(8):
        for got in results[k]:
            np.testing.assert_array_equal(got, serial[k])


def test_packed_path_is_taken_where_available():
    """The packed loop and the BLAS loop round differently: if the switch did
    nothing, the path-parametrised tests above would test one path twice."""
    if not _kernels.packed_recurrence_available():
        pytest.skip("no AVX-512 on this CPU: only the BLAS loop exists")
    args = random_layer(8, 30, 4, 300, np.float32)
    previous = _kernels.set_packed_recurrence(False)
    try:
        blas_h = run_forward(*args)[3]
        _kernels.set_packed_recurrence(True)
        packed_h = run_forward(*args)[3]
    finally:
        _kernels.set_packed_recurrence(previous)
    assert not np.array_equal(blas_h, packed_h)
    np.testing.assert_allclose(blas_h, packed_h, atol=1e-3)  # rounding only, grown over 8 steps


@pytest.mark.parametrize("N", [15, 16, 100])
def test_default_takes_the_packed_loop_on_any_batch_and_thread_count(N):
    """By default (None) every unpadded float32 batch runs the packed loop, which
    beats the BLAS loop on every shape measured: on one thread and on two (split
    by samples from 16 samples on), with the same bits, so the thread count never
    changes a result."""
    if not _kernels.packed_recurrence_available():
        pytest.skip("no AVX-512 on this CPU: only the BLAS loop exists")
    args = random_layer(8, N, 4, 64, np.float32)
    previous = _kernels.set_packed_recurrence(False)
    try:
        blas = run_forward(*args, n_threads=1)[3]
        _kernels.set_packed_recurrence(None)
        default = [run_forward(*args, n_threads=n)[3] for n in (1, 2)]
    finally:
        _kernels.set_packed_recurrence(previous)
    assert not np.array_equal(default[0], blas)
    np.testing.assert_array_equal(default[0], default[1])


def test_backward_without_dx_leaves_weight_gradients_equal():
    args = random_layer(4, 3, 2, 5, np.float64)
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = args
    saved = run_forward(*args)
    dh = np.random.default_rng(2).standard_normal((4, 3, 5))
    results = []
    for dx in (np.empty_like(x), None):
        grads = [np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros(20)]
        _kernels.lstm_layer_backward(x, w_ih, w_hh, h0, c0, *saved, dh.copy(), np.zeros((3, 5)),
                                     np.empty((3, 5)), np.empty((4, 3, 20)), dx, *grads)
        results.append(grads)
    for with_dx, without in zip(*results):
        np.testing.assert_array_equal(with_dx, without)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 13, 3, 40), (3, 25, 2, 300), (5, 1, 3, 70), (1, 3, 2, 4),
                                   (4, 32, 1, 50)])
@pytest.mark.parametrize("one_step", [True, False])
def test_forward_reads_any_layout_of_x_as_the_contiguous_one(shape, dtype, one_step, path):
    """x as a prediction passes it, a batch-major (N, T, D) array transposed, a
    slice of wider rows, or rows in reverse order (as an array or as another
    buffer): the same bits as from a C-contiguous copy (read in place where the
    forward keeps one step's gates and the rows lie forward, else copied)."""
    T, N, D, H = shape
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(*shape, dtype)
    run = run_forward_one_step if one_step else run_forward
    expected = run(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads=path[1])
    batch_major = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    wider = np.concatenate([x, np.full((T, N, 3), np.nan, dtype)], axis=2)[..., :D]
    reversed_rows = np.ascontiguousarray(x[:, ::-1])[:, ::-1]
    assert not wider.flags.c_contiguous
    for view in (batch_major, wider, reversed_rows, memoryview(reversed_rows)):
        got = run(view, w_ih, w_hh, b_ih, b_hh, h0, c0, n_threads=path[1])
        for name, a, b in zip(("gates", "c", "tanh_c", "h"), expected, got):
            if one_step and name in ("gates", "tanh_c"):
                continue   # scratch
            np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_forward_refuses_rows_a_gemm_cannot_read(dtype, path):
    """The private _layer_forward, which reads x where it lies, refuses rows in
    reverse order (a leading dimension below D) on every kernel path, rather than
    handing them to BLAS (which rejects such an lda and leaves the gates as they
    were); lstm_layer_forward copies them first."""
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(4, 5, 3, 8, dtype)
    reversed_rows = memoryview(np.ascontiguousarray(x[:, ::-1])[:, ::-1])
    gates = np.empty((1, 5, 32), dtype)
    tanh_c = np.empty((1, 5, 8), dtype)
    c, h = (np.empty((4, 5, 8), dtype) for _ in range(2))
    with pytest.raises(ValueError, match="at least D apart"):
        _kernels._layer_forward(reversed_rows, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, c, tanh_c,
                                h, None, path[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 13, 3, 40), (3, 25, 2, 300), (1, 3, 2, 4), (0, 3, 2, 4)])
def test_backward_without_dh0_gives_the_same_other_gradients(shape, dtype, path):
    """dh0=None skips the last step's product dgates[0] @ W_hh (the network never
    asks for dL/dh0) and leaves every other output as it was, bit for bit."""
    T, N, D, H = shape
    args = random_layer(*shape, dtype)   # h0 and c0 not zero
    saved = run_forward(*args, n_threads=path[1])
    rng = np.random.default_rng(3)
    dh = rng.standard_normal((T, N, H)).astype(dtype)
    dc_last = rng.standard_normal((N, H)).astype(dtype)
    with_dh0 = run_backward(args, saved, dh, dc_last, n_threads=path[1])
    without = run_backward(args, saved, dh, dc_last, n_threads=path[1], with_dh0=False)
    assert without[4] is None and np.isfinite(with_dh0[4]).all()
    for name, a, b in zip(("dx", "dw_ih", "dw_hh", "db", "dh0", "dc0"), with_dh0, without):
        if name != "dh0":
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_kernel_rejects_mismatched_shapes():
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(3, 2, 4, 5, np.float64)
    gates, c, tanh_c, h = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    with pytest.raises(ValueError, match="weight_ih"):
        _kernels.lstm_layer_forward(x, w_ih[:, :3].copy(), w_hh, b_ih, b_hh, h0, c0,
                                    gates, c, tanh_c, h)
    with pytest.raises(ValueError, match="gates"):
        _kernels.lstm_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0,
                                    gates[:2].copy(), c, tanh_c, h)


EXTREMES = [-np.inf, -1e30, -1e5, -710.0, -100.0, -88.0, -20.0, -1.0, -1e-8, 0.0, 1e-8,
            1.0, 20.0, 88.0, 100.0, 710.0, 1e5, 1e30, np.inf]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_finite_and_exact_at_any_size(dtype):
    x = np.array(EXTREMES + list(np.linspace(-30, 30, 2001)), dtype=dtype)
    out = np.empty_like(x)
    with np.errstate(all="raise"):
        _kernels.sigmoid(x, out)
        sig = out.copy()
        _kernels.tanh(x, out)
        tanh = out.copy()
    assert np.isfinite(sig).all() and np.isfinite(tanh).all()
    x64 = x.astype(np.float64)
    atol = 2e-7 if dtype == np.float32 else 1e-15
    np.testing.assert_allclose(sig, ref.sigmoid(x64), rtol=0, atol=atol)
    np.testing.assert_allclose(tanh, np.tanh(x64), rtol=0, atol=atol)
    assert ((sig >= 0) & (sig <= 1)).all() and ((tanh >= -1) & (tanh <= 1)).all()


def extreme_layer(T, N, with_nan=True):
    """A layer whose gate preactivations are EXTREMES, a grid over [-30, 30] and NaN
    (x = 1, W_ih's column = the values, W_hh = 0), with c0 random or far out:
    (args, step 0's activations (i, f, g, o), c and h (T, N, H) in float64).
    From step 1 on a NaN in h reaches every unit through W_hh (0 x NaN is NaN)."""
    values = np.array(EXTREMES + list(np.linspace(-30, 30, 121)) + [np.nan] * with_nan,
                      np.float32)
    # i, f, g, o: every gate over the values, shifted apart so that each gate's NaN
    # is in a lane of its own
    i, f, g, o = (np.roll(values, k) for k in range(4))
    # then a moderate gate beside a far one, each pair in a lane: i with g (f = -inf,
    # so c = i * g), and o with c0 (f = +inf and i = -inf, so c = c0)
    moderate, far = np.linspace(-30, 30, 31), [-1e30, -100.0, -41.0, 41.0, 100.0, 1e30]
    near, out = np.repeat(moderate, len(far)), np.tile(far, len(moderate))
    ones = np.ones_like(near)
    i = np.concatenate([i, near, -np.inf * ones])
    f = np.concatenate([f, -np.inf * ones, np.inf * ones])
    g = np.concatenate([g, out, ones])
    o = np.concatenate([o, ones, near])
    H = len(i)
    w_ih = np.concatenate([i, f, g, o]).astype(np.float32)[:, None]   # (4H, 1)
    x = np.ones((T, N, 1), np.float32)
    w_hh, b_ih, b_hh, h0 = (np.zeros(s, np.float32) for s in ((4 * H, H), 4 * H, 4 * H, (N, H)))
    c0 = np.random.default_rng(0).standard_normal((N, H)).astype(np.float32)
    c0[:, H - len(out):] = out
    args = (x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    with np.errstate(invalid="ignore"):   # the NaN lanes
        h_ref, _, cache = ref.lstm_forward(*as64(*args))
    c_ref = np.stack([step[7] for step in cache])
    return args, cache[0][3:7], c_ref, h_ref


def test_cell_at_extreme_preactivations_matches_reference(path):
    """The cell's activations, c and h on each path against float64 NumPy at
    extreme_layer's preactivations (the AVX-512 cell reduces exp(-x) without a
    negation, and its clamp must let NaN through), NaN where a gate is NaN."""
    args, activations, c_ref, h_ref = extreme_layer(1, 1)
    gates, c, tanh_c, h = run_forward(*args, n_threads=path[1])
    np.testing.assert_allclose(gates[0], np.concatenate(activations, axis=1), rtol=0, atol=2e-7)
    np.testing.assert_allclose(c, c_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=1e-6)
    assert np.isnan(h).sum() == np.isnan(h_ref).sum() == 4   # each gate's NaN lane


@pytest.mark.parametrize("with_nan", [False, True])
def test_prediction_cell_at_extreme_preactivations_matches_reference(path, with_nan):
    """The same for a forward no backward follows (gates of one step, T > 1), where
    the packed loop's cell makes c and h only: it divides once by a product of two
    1 + exp(-x), so clamps x to [-40, 40], not 80, and must still let NaN through.
    16 sequences: two threads take 8 each."""
    T, N = 3, 16
    args, _, c_ref, h_ref = extreme_layer(T, N, with_nan)
    _, c, _, h = run_forward_one_step(*args, n_threads=path[1])
    np.testing.assert_allclose(c, c_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=1e-6)
    assert np.isnan(h[0]).sum() == 4 * N * with_nan       # each gate's NaN lane, then all
    assert np.isnan(h[1:]).all() if with_nan else np.isfinite(h).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_preactivations_keep_the_layer_finite(dtype):
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = random_layer(5, 2, 3, 4, dtype)
    w_ih = (w_ih * 1e30).astype(dtype)
    gates, c, tanh_c, h = run_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    assert np.isfinite(h).all() and np.isfinite(gates).all()
    assert (np.abs(h) <= 1).all()


# ---- the dense head against plain NumPy ---------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, I, K", [
    (7, 5, 3),
    (512, 16, 1),   # one output: the one-column gemv path
    (1, 50, 1),     # one row and one output
    (1, 9, 4),      # one row: the one-row gemv path
    (3, 1, 2),      # one input feature
    (0, 4, 2),      # no rows
])
def test_dense_head_matches_numpy(M, I, K, dtype):
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((M, I)).astype(dtype), rng.standard_normal((M, K)).astype(dtype)
    w, b = rng.standard_normal((K, I)).astype(dtype), rng.standard_normal(K).astype(dtype)
    x64, w64, dout64 = (a.astype(np.float64) for a in (x, w, dout))
    tol = dict(rtol=TOL[dtype], atol=TOL[dtype])
    out = np.full((M, K), np.nan, dtype=dtype)
    _cells.dense_forward(x, w, b, out)
    np.testing.assert_allclose(out, x64 @ w64.T + b, **tol)
    # the outputs are overwritten, not accumulated into
    dw, db, dx = (np.full(shape, np.nan, dtype=dtype) for shape in ((K, I), (K,), (M, I)))
    _cells.dense_backward(x, w, dout, dw, db, dx)
    np.testing.assert_allclose(dw, dout64.T @ x64, **tol)
    np.testing.assert_allclose(db, dout64.sum(axis=0), **tol)
    np.testing.assert_allclose(dx, dout64 @ w64, **tol)
    dw2, db2 = np.full_like(dw, np.nan), np.full_like(db, np.nan)
    _cells.dense_backward(x, w, dout, dw2, db2, None)      # no dx asked: same weights' grads
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_dense_head_rejects_bad_shapes():
    x, w, b = np.zeros((4, 3)), np.zeros((2, 3)), np.zeros(2)
    with pytest.raises(ValueError, match=r"out has shape \(4, 3\), expected \(4, 2\)"):
        _cells.dense_forward(x, w, b, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="bias has shape"):
        _cells.dense_forward(x, w, np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="dx has shape"):
        _cells.dense_backward(x, w, np.zeros((4, 2)), np.zeros((2, 3)), np.zeros(2),
                              np.zeros((4, 2)))


# ---- the Numba ops against plain NumPy -----------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_squared_error_and_gradient(dtype):
    rng = np.random.default_rng(0)
    pred, target = rng.standard_normal((2, 7, 3)).astype(dtype)
    weight = rng.uniform(0.5, 2, 7)
    dpred = np.empty_like(pred)
    loss = _ops.squared_error(pred, target, weight, dpred)
    expected = (weight[:, None] * 0.5 * (pred - target) ** 2).sum() / (3 * weight.sum())
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    np.testing.assert_allclose(dpred, weight[:, None] * (pred - target) / (3 * weight.sum()),
                               rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, K", [(6, 4), (90, 100)])   # exp in the loop, exp by NumPy
def test_softmax_cross_entropy_and_gradient(dtype, M, K):
    assert (M * K >= _ops.NUMPY_EXP_FROM) == (K == 100)
    rng = np.random.default_rng(0)
    logits = (5 * rng.standard_normal((M, K))).astype(dtype)
    logits[0, 0] = 500  # stays finite: max-shifted
    labels = rng.integers(0, K, M)
    weight = rng.uniform(0.5, 2.0, M)
    dlogits = np.empty_like(logits)
    loss = _ops.softmax_cross_entropy(logits, labels, weight, dlogits)
    z = logits.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    w = weight / weight.sum()
    np.testing.assert_allclose(loss, -(w * logp[np.arange(M), labels]).sum(), rtol=1e-5)
    expected = np.exp(logp)
    expected[np.arange(M), labels] -= 1
    np.testing.assert_allclose(dlogits, w[:, None] * expected, atol=1e-6 / M)
    proba = np.empty_like(logits)
    _ops.softmax(logits, proba)
    np.testing.assert_allclose(proba, np.exp(logp), atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_adam_step_matches_formula(dtype, rtol):
    """Three steps against the textbook formula in float64; the update runs in the
    parameters' dtype."""
    rng = np.random.default_rng(0)
    params, grads = rng.standard_normal((2, 10)).astype(dtype)
    m, v = np.zeros(10, dtype), np.zeros(10, dtype)
    expected = params.astype(np.float64)
    m_ref, v_ref = np.zeros(10), np.zeros(10)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    as_dtype = np.dtype(dtype).type
    for step in (1, 2, 3):
        _ops.adam_step(params, grads, m, v, as_dtype(b1), as_dtype(1 - b1), as_dtype(b2),
                       as_dtype(1 - b2), as_dtype(lr / (1 - b1 ** step)),
                       as_dtype(np.sqrt(1 - b2 ** step)), as_dtype(eps))
        m_ref = b1 * m_ref + (1 - b1) * grads
        v_ref = b2 * v_ref + (1 - b2) * grads.astype(np.float64) ** 2
        expected -= lr * (m_ref / (1 - b1 ** step)) / (np.sqrt(v_ref / (1 - b2 ** step)) + eps)
    assert params.dtype == dtype and m.dtype == dtype
    np.testing.assert_allclose(params, expected, rtol=rtol)


def test_clip_grad_norm_and_dropout_mask():
    grads = np.array([3.0, 4.0])
    norm = _ops.clip_grad_norm(grads, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(np.linalg.norm(grads), 1.0, rtol=1e-5)
    untouched = np.array([0.3, 0.4])
    _ops.clip_grad_norm(untouched, 1.0)
    np.testing.assert_array_equal(untouched, [0.3, 0.4])
    # squares past the dtype's range (float32 from 1.8e19, float64 from 1.3e154)
    # still give the norm, and the clipped gradients point the same way
    for dtype, big in ((np.float32, 1e19), (np.float32, 1e37), (np.float64, 1e200)):
        huge = np.array([3 * big, 0.0, -4 * big], dtype=dtype)
        norm = _ops.clip_grad_norm(huge, 2.0)
        np.testing.assert_allclose(norm, 5 * big, rtol=1e-6)
        np.testing.assert_allclose(huge, [1.2, 0.0, -1.6], rtol=1e-5)
    past_float64 = np.full(4, 1e308)         # a norm of 2e308
    assert _ops.clip_grad_norm(past_float64, 3.0) == np.inf
    np.testing.assert_allclose(past_float64, [1.5] * 4, rtol=1e-12)
    not_finite = np.array([np.inf, 1.0])     # left to the divergence check: not rescaled
    assert _ops.clip_grad_norm(not_finite, 1.0) == np.inf

    x = np.arange(1.0, 7.0)
    least = int(np.ceil(0.2 * 2**32))     # the smallest word kept: word / 2**32 >= 0.2
    bits = np.array([least // 2, 2**31, 2**32 - 1, least - 1, least, 0], dtype=np.uint32)
    out = np.empty_like(x)
    _ops.apply_dropout_mask(x, bits, 0.2, out)
    np.testing.assert_allclose(out, [0, 2 / 0.8, 3 / 0.8, 0, 5 / 0.8, 0])
    for dtype in (np.float32, np.float64):   # in place (backward), its own loop: same values
        long_x = np.tile(x, 50).astype(dtype)
        long_bits = np.tile(bits, 50)
        expected = np.empty_like(long_x)
        _ops.apply_dropout_mask(long_x, long_bits, 0.2, expected)
        _ops.apply_dropout_mask(long_x, long_bits, 0.2, long_x)
        np.testing.assert_array_equal(long_x, expected)
        np.testing.assert_array_equal(expected[:6], out.astype(dtype))


def test_dropout_bits_are_fixed_by_the_generator_and_keep_one_minus_rate():
    words = _ops.dropout_bits(np.random.default_rng(3), (50, 15, 301))   # an odd count
    assert words.dtype == np.uint32 and words.shape == (50, 15, 301)
    np.testing.assert_array_equal(words, _ops.dropout_bits(np.random.default_rng(3), words.shape))
    assert not np.array_equal(words, _ops.dropout_bits(np.random.default_rng(4), words.shape))
    kept = np.empty(words.size)
    _ops.apply_dropout_mask(np.ones(words.size), words.reshape(-1), 0.2, kept)
    # 225,750 draws: the kept share within 5 standard deviations (0.0042) of 0.8
    assert abs(np.count_nonzero(kept) / kept.size - 0.8) < 0.0042
    np.testing.assert_allclose(kept[kept != 0], 1 / 0.8)
