"""pytest-benchmark timings of the compiled layer kernels and of the estimator.

    pytest benchmarks/test_bench_kernels.py                       # time them
    pytest benchmarks/test_bench_kernels.py --benchmark-disable   # CI: run each once

Nothing here asserts on time; the checks are only that the calls ran and gave
finite numbers. Side-by-side comparisons with PyTorch are in compare.py.
"""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastlstm import LSTMRegressor, _cells, _kernels

# (T, N, D, H) of one layer: sine's layer and medium's layer (see BENCHMARKS.md)
SHAPES = {"sine": (10, 32, 1, 50), "medium": (50, 128, 32, 128)}


def layer_buffers(T, N, D, H, seed=0):
    """Inputs and output buffers of one float32 layer, as _network.py allocates them."""
    rng = np.random.default_rng(seed)
    G = 4 * H
    f32 = np.float32
    return {
        "x": rng.standard_normal((T, N, D), dtype=f32),                    # (T, N, D)
        "weight_ih": rng.uniform(-0.1, 0.1, (G, D)).astype(f32),           # (G, D)
        "weight_hh": rng.uniform(-0.1, 0.1, (G, H)).astype(f32),           # (G, H)
        "bias_ih": np.zeros(G, f32),                                       # (G,)
        "bias_hh": np.zeros(G, f32),                                       # (G,)
        "h0": np.zeros((N, H), f32),                                       # (N, H)
        "c0": np.zeros((N, H), f32),                                       # (N, H)
        "gates": np.empty((T, N, G), f32),                                 # (T, N, G)
        "c": np.empty((T, N, H), f32),                                     # (T, N, H)
        "tanh_c": np.empty((T, N, H), f32),                                # (T, N, H)
        "h": np.empty((T, N, H), f32),                                     # (T, N, H)
    }


def forward(b):
    _kernels.lstm_layer_forward(b["x"], b["weight_ih"], b["weight_hh"], b["bias_ih"],
                                b["bias_hh"], b["h0"], b["c0"], b["gates"], b["c"],
                                b["tanh_c"], b["h"])


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_lstm_layer_forward(benchmark, shape):
    b = layer_buffers(*SHAPES[shape])
    benchmark(forward, b)
    assert np.isfinite(b["h"]).all()


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_lstm_layer_backward(benchmark, shape):
    T, N, D, H = SHAPES[shape]
    b = layer_buffers(T, N, D, H)
    forward(b)
    rng = np.random.default_rng(1)
    dh_from_above = rng.standard_normal((T, N, H), dtype=np.float32)      # (T, N, H)
    dh = np.empty_like(dh_from_above)                 # clobbered by the kernel: reset each round
    dc = np.empty((N, H), np.float32)                                     # (N, H) in/out
    dh0 = np.empty((N, H), np.float32)                                    # (N, H)
    dgates = np.empty((T, N, 4 * H), np.float32)                          # (T, N, G)
    dx = np.empty((T, N, D), np.float32)                                  # (T, N, D)
    dweight_ih = np.zeros_like(b["weight_ih"])                            # (G, D) accumulated
    dweight_hh = np.zeros_like(b["weight_hh"])                            # (G, H) accumulated
    dbias = np.zeros(4 * H, np.float32)                                   # (G,) accumulated

    def reset():  # not timed
        dh[...] = dh_from_above
        dc[...] = 0
        for acc in (dweight_ih, dweight_hh, dbias):
            acc[...] = 0
        return (), {}

    def backward():
        _kernels.lstm_layer_backward(b["x"], b["weight_ih"], b["weight_hh"], b["h0"], b["c0"],
                                     b["gates"], b["c"], b["tanh_c"], b["h"], dh, dc, dh0,
                                     dgates, dx, dweight_ih, dweight_hh, dbias)

    benchmark.pedantic(backward, setup=reset, rounds=20, iterations=1, warmup_rounds=1)
    assert np.isfinite(dweight_hh).all() and np.isfinite(dx).all()


def test_gru_layer_forward_and_backward(benchmark):
    """medium's layer as a GRU: the BLAS time loop, whose products per step run on
    W_hh packed once per call (_blas.step_matrix) at 128 units."""
    T, N, D, H = SHAPES["medium"]
    G = 3 * H
    rng = np.random.default_rng(0)
    f32 = np.float32
    x = rng.standard_normal((T, N, D), dtype=f32)                          # (T, N, D)
    w_ih = rng.uniform(-0.1, 0.1, (G, D)).astype(f32)                      # (G, D)
    w_hh = rng.uniform(-0.1, 0.1, (G, H)).astype(f32)                      # (G, H)
    b_ih, b_hh = np.zeros(G, f32), np.zeros(G, f32)                        # (G,)
    h0 = np.zeros((N, H), f32)                                             # (N, H)
    gates, hproj = np.empty((T, N, G), f32), np.empty((T, N, G), f32)      # (T, N, G)
    h = np.empty((T, N, H), f32)                                           # (T, N, H)
    dh_from_above = rng.standard_normal((T, N, H), dtype=f32)              # (T, N, H)
    dh = np.empty_like(dh_from_above)                # clobbered by the kernel: reset each round
    dgates_i, dgates_h = np.empty_like(gates), np.empty_like(gates)        # (T, N, G)
    dx = np.empty_like(x)                                                  # (T, N, D)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)               # accumulated
    db_ih, db_hh = np.zeros(G, f32), np.zeros(G, f32)                      # accumulated

    def reset():  # not timed
        dh[...] = dh_from_above
        for acc in (dw_ih, dw_hh, db_ih, db_hh):
            acc[...] = 0
        return (), {}

    def forward_and_backward():
        _cells.gru_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, gates, hproj, h)
        _cells.gru_layer_backward(x, w_ih, w_hh, h0, gates, hproj, h, dh, None, dgates_i,
                                  dgates_h, dx, dw_ih, dw_hh, db_ih, db_hh)

    benchmark.pedantic(forward_and_backward, setup=reset, rounds=20, iterations=1,
                       warmup_rounds=1)
    assert np.isfinite(h).all() and np.isfinite(dw_hh).all() and np.isfinite(dx).all()


@pytest.fixture(scope="module")
def sine_data():
    """sine-sized data: X (990, 10, 1) float32, y (990,)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((990, 10, 1), dtype=np.float32)
    return X, X[:, -1, 0] * 0.5


def sine_model():
    return LSTMRegressor(hidden_layer_sizes=(50,), batch_size=32, max_iter=1, alpha=0.0,
                         tol=0.0, n_iter_no_change=10**9, random_state=0)


@pytest.fixture(scope="module")
def fitted_sine(sine_data):
    """A model fitted once: also the warm-up that loads or compiles the Numba caches."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return sine_model().fit(*sine_data)


def test_fit_one_epoch_sine(benchmark, sine_data, fitted_sine):
    model = sine_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        benchmark(model.fit, *sine_data)
    assert model.n_iter_ == 1 and np.isfinite(model.loss_curve_).all()


def test_predict_one_sequence(benchmark, sine_data, fitted_sine):
    x1 = sine_data[0][:1]                                                 # (1, 10, 1)
    pred = benchmark(fitted_sine.predict, x1)
    assert pred.shape == (1,) and np.isfinite(pred).all()


@pytest.fixture(scope="module")
def medium_data():
    """medium-shaped data (T=50, D=32, 10 classes), 256 samples: two batches of 128."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 50, 32), dtype=np.float32)
    return X, rng.integers(0, 10, size=256)


def test_fit_one_epoch_medium_sliced_over_two_threads(benchmark, medium_data):
    """Each batch of 128 cut into two slices of 64, one per thread (_parallel.py)."""
    from fastlstm import LSTMClassifier
    model = LSTMClassifier(hidden_layer_sizes=(128,), batch_size=128, max_iter=1, alpha=0.0,
                           tol=0.0, n_iter_no_change=10**9, random_state=0, n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        benchmark(model.fit, *medium_data)
    assert model.n_iter_ == 1 and np.isfinite(model.loss_curve_).all()
    proba = model.predict_proba(medium_data[0])                        # sliced too
    assert proba.shape == (256, 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
