"""Long sequences: memory linear in T (the bytes per step of README.md), truncated
BPTT that bounds training memory by the window, and equals full BPTT when the
window covers the sequence."""
import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastlstm import LSTMClassifier, LSTMRegressor
from fastlstm._estimators import _generator
from fastlstm._network import LSTMNetwork

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N, D, H = 4, 1, 16
ITEM = 4  # float32


def long_data(T, seed=0):
    X = np.random.default_rng(seed).standard_normal((N, T, D)).astype(np.float32)
    return X, X[:, -1, 0].copy()


def traced_peaks(T, **params):
    """Peak bytes allocated (beyond what existed before) during fit, then predict."""
    X, y = long_data(T)
    model = LSTMRegressor(hidden_layer_sizes=(H,), max_iter=1, batch_size=N, random_state=0,
                          **params)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        model.fit(X, y)
        fit_peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        pred = model.predict(X)
        predict_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert pred.shape == (N,) and np.isfinite(pred).all()
    assert np.isfinite(model.network_.params).all() and model.n_iter_ == 1
    return fit_peak, predict_peak


# README.md, "Long sequences": bytes per time step, one layer, output="last", no dropout.
TRAIN_BYTES_PER_STEP = ITEM * (N * (8 * H + D) + N * 2 * D)
PREDICT_BYTES_PER_STEP = ITEM * N * (D + 2 * H)
DATA_BYTES_PER_STEP = ITEM * N * 2 * D  # the time-major copy of X and the batch gather


@pytest.fixture(scope="module")
def peaks():
    traced_peaks(50)  # warm-up: compile and cache outside the measurement
    return {(T, k): traced_peaks(T, tbptt_steps=k)
            for T in (2_500, 5_000, 10_000) for k in (None, 100)}


def test_ten_thousand_steps_train_and_predict_in_linear_memory(peaks):
    for T in (2_500, 5_000, 10_000):
        fit_peak, predict_peak = peaks[T, None]
        # what the buffers of _network.py need, per step, and not much more
        assert 0.9 < fit_peak / (T * TRAIN_BYTES_PER_STEP) < 1.15, (T, fit_peak)
        assert 0.9 < predict_peak / (T * PREDICT_BYTES_PER_STEP) < 1.15, (T, predict_peak)
    # linear: doubling T doubles the growth
    growth_1 = peaks[5_000, None][0] - peaks[2_500, None][0]
    growth_2 = peaks[10_000, None][0] - peaks[5_000, None][0]
    assert growth_2 == pytest.approx(2 * growth_1, rel=0.05)


def test_truncated_bptt_memory_is_bounded_by_the_window(peaks):
    # beyond the data itself, training memory does not grow with T
    growth = peaks[10_000, 100][0] - peaks[5_000, 100][0]
    assert growth < 1.25 * 5_000 * DATA_BYTES_PER_STEP
    assert peaks[10_000, 100][0] < 0.05 * peaks[10_000, None][0]
    window_buffers = 100 * TRAIN_BYTES_PER_STEP
    assert peaks[10_000, 100][0] < 2 * window_buffers + 10_000 * DATA_BYTES_PER_STEP * 1.25


def test_predict_memory_stays_within_its_budget(monkeypatch):
    """Past the budget, predict runs in windows of steps: scratch memory stops
    growing with T (only the input and its time-major copy do)."""
    import fastlstm._estimators as est_module

    X, y = long_data(3_000)
    model = LSTMRegressor(hidden_layer_sizes=(H,), max_iter=1, random_state=0).fit(X, y)
    whole = model.predict(X)
    budget = 50 * PREDICT_BYTES_PER_STEP  # 50 steps of one batch
    monkeypatch.setattr(est_module, "_PREDICT_CHUNK_BYTES", budget)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        windowed = model.predict(X)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(windowed, whole, rtol=1e-5, atol=1e-6)
    assert peak < 1.5 * budget + 1.25 * 3_000 * DATA_BYTES_PER_STEP


CASES = [
    (LSTMRegressor, "last", dict()),
    (LSTMRegressor, "sequence", dict(hidden_layer_sizes=(5, 4), dropout=0.2)),
    (LSTMClassifier, "last", dict(hidden_layer_sizes=(5, 3), dropout=0.3)),
    (LSTMClassifier, "sequence", dict()),
]


def case_data(estimator, output, T=12):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, T, 2)).astype(np.float32)
    s = np.cumsum(X[:, :, 0], axis=1)                     # (N, T)
    y = s if output == "sequence" else s[:, -1]
    return X, (y > 0).astype(int) if estimator is LSTMClassifier else y


@pytest.mark.parametrize("estimator, output, params", CASES)
def test_window_covering_the_sequence_equals_full_bptt(estimator, output, params):
    X, y = case_data(estimator, output)
    common = dict(hidden_layer_sizes=(6,), output=output, max_iter=3, batch_size=8,
                  random_state=0)
    common.update(params)
    full = estimator(**common).fit(X, y)
    for k in (12, 13, 1000):
        windowed = estimator(tbptt_steps=k, **common).fit(X, y)
        np.testing.assert_array_equal(windowed.network_.params, full.network_.params)
        assert windowed.loss_curve_ == full.loss_curve_


@pytest.mark.parametrize("estimator, output, params", CASES)
def test_short_windows_train(estimator, output, params):
    X, y = case_data(estimator, output, T=20)
    if estimator is LSTMRegressor:
        # unit-scale targets: a sum of 20 steps has a spread of ~4.5, which 45 Adam
        # steps of 1e-2 barely reach whatever the windows learn (the loss then
        # fell or not by the seed's luck)
        y = y / y.std()
    common = dict(hidden_layer_sizes=(8,), output=output, max_iter=15, batch_size=10,
                  learning_rate_init=1e-2, random_state=0)
    common.update(params)
    model = estimator(tbptt_steps=6, **common).fit(X, y)
    assert np.isfinite(model.loss_curve_).all()
    assert model.loss_curve_[-1] < 0.9 * model.loss_curve_[0]
    full = estimator(**common).fit(X, y)
    assert not np.array_equal(model.network_.params, full.network_.params)


def test_windows_carry_the_state_and_update_once_each():
    """One epoch of plain SGD on one batch, rebuilt by hand: per window, forward
    from the previous window's final state, backward, one update."""
    T, k, lr = 10, 4, 0.1
    X, y = case_data(LSTMRegressor, "sequence", T=T)
    model = LSTMRegressor(hidden_layer_sizes=(5,), output="sequence", tbptt_steps=k,
                          solver="sgd", momentum=0.0, learning_rate_init=lr, alpha=0.0,
                          batch_size=len(X), shuffle=False, max_iter=1, random_state=0)
    model.fit(X, y)

    init = LSTMRegressor(**{**model.get_params(), "max_iter": 1})
    rng = _generator(0)                                           # as fit draws it
    net = LSTMNetwork(2, (5,), 1, dtype=np.float32)
    net.initialize(rng)
    x_tm = np.ascontiguousarray(X.transpose(1, 0, 2))            # (T, N, D)
    y_tm = y.T.astype(np.float32)                                # (T, N)
    state, n_updates = None, 0
    for t0 in range(0, T, k):
        out, tape = net.forward(x_tm[t0:t0 + k], True, initial_state=state)
        state = tape.final_state()
        target = y_tm[t0:t0 + k].reshape(-1, 1)
        dout = (out - target) / out.shape[0]                      # d(half MSE)
        grads = net.backward(tape, dout.astype(np.float32))
        net.params -= lr * grads
        n_updates += 1
    assert n_updates == 3 and init.tbptt_steps == k
    np.testing.assert_allclose(model.network_.params, net.params, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("class_weight", [None, "balanced", {0: 5.0, 1: 1.0}])
def test_windows_report_the_loss_full_bptt_reports(class_weight):
    """At a learning rate too small to move a weight, every window sees the weights
    full BPTT sees: the windows' losses, each the weighted mean over its own steps,
    add up to the batch's (with per-step class weights: by each window's weight)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 9, 2))
    y = (np.cumsum(X[:, :, 0], axis=1) > 0.5).astype(int)
    y[:, :3] = 0                                  # windows of unequal class weight
    common = dict(hidden_layer_sizes=(5,), output="sequence", max_iter=1, random_state=0,
                  solver="sgd", learning_rate_init=1e-300, momentum=0.0, alpha=0.0,
                  class_weight=class_weight, shuffle=False, batch_size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = LSTMClassifier(**common).fit(X, y)
        windowed = LSTMClassifier(tbptt_steps=3, **common).fit(X, y)
    np.testing.assert_array_equal(windowed.network_.params, full.network_.params)
    np.testing.assert_allclose(windowed.loss_, full.loss_, rtol=1e-12)


def test_early_stopping_copies_the_training_rows_once():
    """Wide inputs, a small network: the time-major copy of X is the one big
    allocation of a fit; with early_stopping the training rows go straight into
    it. They were first copied as X[train]: the fit's peak was 0.9x the data
    above a fit without early_stopping, now 0.3x (the held-out rows' copy, 0.1x,
    and their scoring)."""
    X = np.random.default_rng(0).standard_normal((2000, 50, 64)).astype(np.float32)
    y = X[:, -1, 0].copy()
    peaks = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for early_stopping in (False, True):
            params = dict(hidden_layer_sizes=(2,), max_iter=1, batch_size=200,
                          early_stopping=early_stopping, random_state=0)
            LSTMRegressor(**params).fit(X[:50], y[:50])   # compiled code loaded: not counted
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                LSTMRegressor(**params).fit(X, y)
                peaks[early_stopping] = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
    assert peaks[False] > X.nbytes                       # the time-major copy
    assert peaks[True] - peaks[False] < 0.5 * X.nbytes


def test_a_window_with_nothing_to_learn_is_skipped_not_taken_for_divergence():
    """A window whose steps all weigh 0 (labels of weight-0 classes only) has no
    loss: no update there, and the state goes on to the next window."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 10, 2))
    y = np.zeros((40, 10), int)
    y[:, 5:] = rng.integers(0, 2, (40, 5))                   # steps 0-4 hold class 0 only
    params = dict(class_weight={0: 0.0, 1: 1.0})
    model = LSTMClassifier(hidden_layer_sizes=(4,), output="sequence", tbptt_steps=5,
                           max_iter=5, tol=0.0, random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no "diverged" warning
        warnings.simplefilter("ignore", ConvergenceWarning)  # 5 epochs: not converged
        model.fit(X, y)
    assert model.n_iter_ == 5 and np.isfinite(model.loss_curve_).all()


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_bad_tbptt_steps_is_named(bad):
    X, y = case_data(LSTMRegressor, "last")
    with pytest.raises(ValueError, match="tbptt_steps"):
        LSTMRegressor(tbptt_steps=bad, max_iter=1).fit(X, y)
