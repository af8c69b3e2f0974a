"""Training that goes wrong stays safe: divergence, exploding gradients, Ctrl-C,
threads, repeated use (no leaks) and bit-for-bit reproducibility."""
import _thread
import gc
import io
import signal
import sys
import threading
import time
import tracemalloc
import types
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastlstm
import fastlstm._estimators as est_module
import fastlstm._network as net_module
from fastlstm import LSTMClassifier, LSTMRegressor, _kernels

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def exploding_task():
    """Targets of size ~100: plain SGD with momentum at learning rate 1 overshoots
    until the loss overflows."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 20, 2)).astype(np.float32)
    return X, 100 * X[:, :, 0].sum(axis=1) / np.sqrt(20)


EXPLODING = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1.0, max_iter=30,
                 batch_size=16, tol=0, n_iter_no_change=30, random_state=0)


def initial_params(n_features, hidden_sizes, n_outputs, random_state):
    """The weights fit starts from, drawn as fit draws them."""
    net = net_module.LSTMNetwork(n_features, hidden_sizes, n_outputs, dtype=np.float32)
    net.initialize(est_module._generator(random_state))
    return net.params


def diverged_warnings(record):
    return [w for w in record if "diverged" in str(w.message)]


# ---- divergence -----------------------------------------------------------------

@pytest.mark.parametrize("params", [
    dict(EXPLODING),
    dict(hidden_layer_sizes=(4,), solver="sgd", learning_rate_init=1e3, max_iter=20,
         random_state=0),
])
def test_divergence_stops_at_once_and_keeps_the_last_finite_epoch(params):
    X, y = exploding_task()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = LSTMRegressor(**params).fit(X, y)
    [warning] = diverged_warnings(record)
    assert warning.category is RuntimeWarning
    assert "kept the weights of the last finite epoch" in str(warning.message)
    assert "clip_grad_norm" in str(warning.message)
    assert model.n_iter_ < params["max_iter"] and len(model.loss_curve_) == model.n_iter_
    assert np.isfinite(model.loss_curve_).all()
    assert np.isfinite(model.network_.params).all()
    # exactly the weights of the last finite epoch: a fit that stops there by itself
    reference = LSTMRegressor(**{**params, "max_iter": model.n_iter_}).fit(X, y)
    np.testing.assert_array_equal(model.network_.params, reference.network_.params)
    assert_same_solver_state(model, reference)          # not the failed epoch's velocity
    assert np.isfinite(model.predict(X)).all()          # still usable


def assert_same_solver_state(model, reference):
    a, b = model._optimizer, reference._optimizer
    assert (a.solver, a.n_steps) == (b.solver, b.n_steps)
    np.testing.assert_array_equal(a.first_moment, b.first_moment)
    np.testing.assert_array_equal(a.second_moment, b.second_moment)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_training_goes_on_after_a_divergence_at_a_lower_learning_rate(method):
    """As the warning advises: the next fit starts from the last finite epoch's
    weights and solver state (here the initial ones), not from the velocity of the
    updates that blew up."""
    X, y = exploding_task()
    y = y / y.std()
    model = LSTMRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1e8,
                          batch_size=16, max_iter=20, warm_start=True, random_state=0)
    with pytest.warns(RuntimeWarning, match="diverged"):
        model.fit(X, y)
    assert model.n_iter_ == 0
    model.set_params(learning_rate_init=1e-3)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            getattr(model, method)(X, y)
    assert not diverged_warnings(record)
    assert np.isfinite(model.loss_curve_).all() and len(model.loss_curve_) >= 5


def test_divergence_in_the_first_epoch_keeps_the_initial_weights():
    X, y = exploding_task()
    params = dict(hidden_layer_sizes=(4,), solver="sgd", learning_rate_init=1e3, random_state=0)
    with pytest.warns(RuntimeWarning, match="diverged"):  # the first update overflows float32
        model = LSTMRegressor(max_iter=5, batch_size=len(X), **params).fit(X, y * 1e35)
    assert model.n_iter_ == 0 and model.loss_curve_ == []
    np.testing.assert_array_equal(model.network_.params, initial_params(2, (4,), 1, 0))
    assert np.isfinite(model.predict(X)).all()


def test_adam_at_learning_rate_1e3_never_returns_non_finite_weights():
    X, y = exploding_task()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = LSTMRegressor(hidden_layer_sizes=(8,), learning_rate_init=1e3, max_iter=10,
                              random_state=0).fit(X, y)
    assert np.isfinite(model.network_.params).all() and np.isfinite(model.predict(X)).all()


def test_clip_grad_norm_tames_exploding_gradients():
    X, y = exploding_task()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        unclipped = LSTMRegressor(**EXPLODING).fit(X, y)
    assert diverged_warnings(record) and unclipped.n_iter_ < EXPLODING["max_iter"]

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clipped = LSTMRegressor(clip_grad_norm=1.0, **EXPLODING).fit(X, y)
    assert not diverged_warnings(record)
    assert clipped.n_iter_ == EXPLODING["max_iter"]
    curve = np.array(clipped.loss_curve_)
    assert np.isfinite(curve).all()
    assert curve.max() < 1.5 * curve[0]                 # bounded all the way
    # and it learns: at learning rate 1 one epoch's loss still jumps by 2x (from
    # 0.2x to 0.85x the first's, as rounding steers each run), so the later half's
    # median (0.3-0.7x over ten random_states)
    assert np.median(curve[len(curve) // 2:]) < 0.75 * curve[0]
    # the last epoch of the unclipped run was already far above where it started
    assert unclipped.loss_curve_[-1] > 10 * unclipped.loss_curve_[0]


def test_clipping_scales_every_update_to_the_bound(monkeypatch):
    """Each update's gradient reaches the optimizer with norm <= clip_grad_norm."""
    norms = []
    real_sgd = est_module._ops.sgd_step

    def spy(params, grads, *args):
        norms.append(float(np.linalg.norm(grads.astype(np.float64))))
        return real_sgd(params, grads, *args)

    monkeypatch.setattr(est_module._ops, "sgd_step", spy)
    X, y = exploding_task()
    LSTMRegressor(clip_grad_norm=0.5, **{**EXPLODING, "max_iter": 3}).fit(X, y)
    assert len(norms) == 3 * 4 and max(norms) <= 0.5 * (1 + 1e-5)


def test_clip_grad_value_bounds_every_component_and_tames_exploding_gradients(monkeypatch):
    """Each update's gradient reaches the optimizer with every component within
    +-clip_grad_value; the run that diverges unclipped stays bounded and learns."""
    largest = []
    real_sgd = est_module._ops.sgd_step

    def spy(params, grads, *args):
        largest.append(float(np.abs(grads).max()))
        return real_sgd(params, grads, *args)

    monkeypatch.setattr(est_module._ops, "sgd_step", spy)
    X, y = exploding_task()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clipped = LSTMRegressor(clip_grad_value=0.05, **EXPLODING).fit(X, y)
    assert not diverged_warnings(record) and clipped.n_iter_ == EXPLODING["max_iter"]
    assert len(largest) == EXPLODING["max_iter"] * 4 and max(largest) == pytest.approx(0.05)
    curve = np.array(clipped.loss_curve_)
    assert curve.max() <= curve[0] and np.median(curve[len(curve) // 2:]) < 0.75 * curve[0]


# ---- Ctrl-C -----------------------------------------------------------------------

def interrupt_after(monkeypatch, n_updates, raise_it):
    """Make the n-th optimizer update trigger a Ctrl-C (via raise_it)."""
    real_step = est_module._Optimizer.step
    count = [0]

    def step(self, est, params, grads, parts=1):
        real_step(self, est, params, grads, parts)
        count[0] += 1
        if count[0] == n_updates:
            raise_it()

    monkeypatch.setattr(est_module._Optimizer, "step", step)


@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
@pytest.mark.parametrize("n_updates, epochs_done", [(1, 0), (9, 2), (12, 2)])
def test_ctrl_c_keeps_the_last_completed_epoch(monkeypatch, estimator, n_updates, epochs_done):
    X, y = exploding_task()
    y = y if estimator is LSTMRegressor else y > 0
    params = dict(hidden_layer_sizes=(5, 3), dropout=0.1, batch_size=16, max_iter=10,
                  random_state=0)                      # 4 updates per epoch
    reference = estimator(**{**params, "max_iter": max(epochs_done, 1)}).fit(X, y)

    def ctrl_c():
        raise KeyboardInterrupt

    interrupt_after(monkeypatch, n_updates, ctrl_c)
    with pytest.warns(RuntimeWarning, match=rf"interrupted during epoch {epochs_done + 1}.*"
                                            rf"last completed epoch \({epochs_done}\)"):
        model = estimator(**params).fit(X, y)
    assert model.n_iter_ == epochs_done and len(model.loss_curve_) == epochs_done
    if epochs_done:
        np.testing.assert_array_equal(model.network_.params, reference.network_.params)
        assert model.loss_curve_ == reference.loss_curve_
        assert_same_solver_state(model, reference)
    else:  # interrupted in the first epoch: the initial weights, the solver untouched
        n_outputs = 1 if estimator is LSTMRegressor else 2
        np.testing.assert_array_equal(model.network_.params,
                                      initial_params(2, (5, 3), n_outputs, 0))
        assert model._optimizer.n_steps == 0 and not model._optimizer.first_moment.any()
    assert np.isfinite(model.predict(X)).all()          # usable
    monkeypatch.undo()
    model.fit(X, y)                                     # and it can be fitted again
    np.testing.assert_array_equal(
        model.network_.params, estimator(**params).fit(X, y).network_.params)


def test_ctrl_c_with_early_stopping_keeps_the_best_epoch_so_far(monkeypatch):
    X, y = exploding_task()
    params = dict(hidden_layer_sizes=(5,), batch_size=16, max_iter=10, early_stopping=True,
                  validation_fraction=0.25, learning_rate_init=0.1, random_state=7)
    reference = LSTMRegressor(**{**params, "max_iter": 4}).fit(X, y)   # ends on its best
    assert np.argmax(reference.validation_scores_) < 3   # the best is not the last epoch

    def ctrl_c():
        raise KeyboardInterrupt

    interrupt_after(monkeypatch, 4 * 3 + 1, ctrl_c)      # 48 / 16 = 3 updates: in epoch 5
    with pytest.warns(RuntimeWarning, match="best epoch so far"):
        model = LSTMRegressor(**params).fit(X, y)
    assert model.validation_scores_ == reference.validation_scores_
    np.testing.assert_array_equal(model.network_.params, reference.network_.params)


def test_a_real_sigint_during_fit_is_caught_the_same_way(monkeypatch, sigint_raises):
    """The signal arrives from another thread while the kernels run; Python raises
    KeyboardInterrupt in the fitting thread at its next check."""
    X, y = exploding_task()
    params = dict(hidden_layer_sizes=(6,), batch_size=16, max_iter=50, random_state=0)
    interrupt_after(monkeypatch, 6, lambda: _thread.interrupt_main(signal.SIGINT))
    with pytest.warns(RuntimeWarning, match="interrupted"):
        model = LSTMRegressor(**params).fit(X, y)
    assert 1 <= model.n_iter_ < 50
    reference = LSTMRegressor(**{**params, "max_iter": model.n_iter_}).fit(X, y)
    np.testing.assert_array_equal(model.network_.params, reference.network_.params)


# ---- the GIL and threads --------------------------------------------------------

class Ticker:
    """A thread that counts as fast as it can, giving up the GIL after every tick.
    With a huge switch interval, the interpreter never takes the GIL from a thread
    by force: the ticker advances only while another thread has released it."""

    def __enter__(self):
        self.count, self._stop = 0, False
        self._interval = sys.getswitchinterval()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        while self.count == 0:
            time.sleep(0)
        sys.setswitchinterval(1000.0)
        # a ticker already waiting for the GIL still waits with the old interval and
        # could force one switch: let it through before anything is measured
        for _ in range(3):
            time.sleep(0.01)
        return self

    def _run(self):
        while not self._stop:
            self.count += 1
            time.sleep(0)       # releases the GIL

    def __exit__(self, *exc):
        sys.setswitchinterval(self._interval)
        self._stop = True
        self._thread.join()


def big_layer(dtype=np.float32, T=100, N=64, D=32, H=128):
    rng = np.random.default_rng(0)
    G = 4 * H
    x = rng.standard_normal((T, N, D)).astype(dtype)
    w_ih, w_hh = ((0.1 * rng.standard_normal(s)).astype(dtype) for s in ((G, D), (G, H)))
    b = np.zeros(G, dtype)
    h0 = np.zeros((N, H), dtype)
    gates, c, tanh_c, h = (np.empty((T, N, n), dtype) for n in (G, H, H, H))
    return x, w_ih, w_hh, b, h0, gates, c, tanh_c, h


def ticks_during(ticker, call):
    start = ticker.count
    call()
    return ticker.count - start


def one_core_left():
    """The kernels on one thread (BLAS and the layers' own loops read this limit),
    so a core stays free for the ticker: on two cores, a kernel call on both (BLAS
    threads spin between their products) can keep the ticker off the CPU for the
    whole call, and it counts nothing although the GIL was free."""
    return threadpool_limits(limits=1, user_api="blas")


def test_the_ticker_detects_a_call_that_holds_the_gil():
    with Ticker() as ticker:
        assert ticks_during(ticker, lambda: sum(range(3_000_000))) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_release_the_gil(dtype):
    x, w_ih, w_hh, b, h0, gates, c, tanh_c, h = big_layer(dtype)
    T, N, D = x.shape
    dh = np.ones_like(h)
    dc, dh0 = np.zeros_like(h0), np.zeros_like(h0)
    dgates, dx = np.empty_like(gates), np.empty_like(x)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b)
    with one_core_left(), Ticker() as ticker:
        forward = ticks_during(ticker, lambda: _kernels.lstm_layer_forward(
            x, w_ih, w_hh, b, b, h0, h0, gates, c, tanh_c, h))
        backward = ticks_during(ticker, lambda: _kernels.lstm_layer_backward(
            x, w_ih, w_hh, h0, h0, gates, c, tanh_c, h, dh, dc, dh0, dgates, dx,
            dw_ih, dw_hh, db))
    assert forward > 0 and backward > 0


def test_another_thread_progresses_while_fit_runs_the_kernels(monkeypatch):
    """Count the ticks that happen inside the kernel calls of a real fit."""
    inside = {"forward": 0, "backward": 0}
    ticker = Ticker()

    def counted(name):
        real = getattr(_kernels, f"lstm_layer_{name}")

        def call(*args):
            start = ticker.count
            real(*args)
            inside[name] += ticker.count - start
        return call

    monkeypatch.setattr(net_module, "_kernels", types.SimpleNamespace(
        lstm_layer_forward=counted("forward"), lstm_layer_backward=counted("backward"),
        PackedWeights=_kernels.PackedWeights, gradient_chunk_steps=_kernels.gradient_chunk_steps))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((128, 100, 16)).astype(np.float32)
    with ticker:
        start = ticker.count
        LSTMRegressor(hidden_layer_sizes=(128,), batch_size=64, max_iter=2,
                      random_state=0).fit(X, X[:, -1, 0])
        total = ticker.count - start
    assert inside["forward"] > 0 and inside["backward"] > 0 and total > 0


@pytest.mark.parametrize("estimator, output", [(LSTMRegressor, "last"),
                                               (LSTMClassifier, "sequence")])
def test_eight_threads_predicting_at_once_match_serial_calls(estimator, output):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 30, 4)).astype(np.float32)
    y = X[:, :, 0].cumsum(axis=1) > 0 if output == "sequence" else X[:, :, 0].sum(axis=1)
    model = estimator(hidden_layer_sizes=(32, 16), output=output, max_iter=2,
                      random_state=0).fit(X, y)
    batches = [X[k:k + 8 + 5 * k] for k in range(8)]    # different sizes, one per thread
    method = model.predict_proba if estimator is LSTMClassifier else model.predict
    serial = [method(b) for b in batches]
    barrier = threading.Barrier(8)

    def work(k):
        barrier.wait()                                  # all eight start together
        return [method(batches[k]) for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for k in range(8):
        for got in results[k]:
            np.testing.assert_array_equal(got, serial[k])


# ---- scratch memory -------------------------------------------------------------

def test_scratch_arena_views_follow_their_buffer():
    arena = net_module._Arena(np.float32)
    small = arena.get("x", (2, 3))
    assert arena.get("x", (2, 3)) is small              # handed out again, not rebuilt
    big = arena.get("x", (4, 5))                         # outgrows the buffer: a new one
    again = arena.get("x", (2, 3))
    assert np.shares_memory(again, big) and not np.shares_memory(again, small)
    arena.zeros("z", (3,))[...] = 0
    big_zeros = arena.zeros("z", (50,))                  # a new buffer, zero-filled too
    assert not big_zeros.any()
    assert arena.nbytes == (20 + 50) * 4                 # the live buffers only


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scratch_buffers_start_on_a_cache_line(dtype):
    arena = net_module._Arena(dtype)
    for n in (1, 3, 1000, 12345):
        view = arena.get(("x", n), (n,))
        assert view.ctypes.data % 64 == 0 and view.size == n


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_sequence_predicts_as_its_row_of_a_batch(dtype):
    """A single sequence takes a shorter way through predict: the same numbers as
    its row of a batch, for every input form one sequence can come in."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 12, 3))
    y = X[:, -1, 0]
    reg = LSTMRegressor(hidden_layer_sizes=(16,), max_iter=2, random_state=0,
                        dtype=dtype).fit(X, y)
    clf = LSTMClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0,
                         dtype=dtype).fit(X, y > 0)
    batch = reg.predict(X), clf.predict_proba(X)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-13)
    strided = np.asfortranarray(X[5:6])                    # not C-contiguous
    for one in (X[5:6], strided, [X[5]]):
        np.testing.assert_allclose(reg.predict(one), batch[0][5:6], **tol)
        np.testing.assert_allclose(clf.predict_proba(one), batch[1][5:6], **tol)
    flat = LSTMRegressor(hidden_layer_sizes=(16,), max_iter=2, random_state=0, dtype=dtype,
                         step_features=3).fit(X.reshape(40, -1), y)
    np.testing.assert_allclose(flat.predict(X[5:6].reshape(1, -1)),
                               flat.predict(X.reshape(40, -1))[5:6], **tol)
    steps = X[:, :, :2].cumsum(axis=1)                      # per-step targets (40, 12, 2)
    for model, y_steps in ((LSTMRegressor, steps), (LSTMRegressor, steps[..., 0]),
                           (LSTMClassifier, steps[..., 0] > 0)):
        seq = model(hidden_layer_sizes=(16,), output="sequence", max_iter=2, random_state=0,
                    dtype=dtype).fit(X, y_steps)
        predict = seq.predict_proba if model is LSTMClassifier else seq.predict
        one, rows = predict(X[5:6]), predict(X)[5:6]
        assert one.shape == rows.shape
        np.testing.assert_allclose(one, rows, **tol)


def test_predictions_keep_only_a_few_small_scratch_arenas_and_one_large_one():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 40, 3)).astype(np.float32)
    model = LSTMRegressor(hidden_layer_sizes=(16,), max_iter=1, random_state=0).fit(
        X[:64], X[:64, -1, 0])
    net = model.network_
    one = model.predict(X[:1])
    many = model.predict(X)                              # > 1 MB of scratch: the large one
    assert len(net._spare_arenas) == 1
    assert all(a.nbytes <= net_module.SPARE_ARENA_BYTES for a in net._spare_arenas)
    assert len(net._spare_batch_arenas) <= 1
    np.testing.assert_array_equal(model.predict(X[:1]), one)   # reused arena, same result
    np.testing.assert_array_equal(model.predict(X), many)
    large = net._spare_batch_arenas + [runner.arenas for runner in net._spare_runners]
    assert len(large) == 1                               # whole or in slices, one is kept
    model.predict(X[:300])
    assert len(net._spare_batch_arenas) + len(net._spare_runners) == 1
    barrier = threading.Barrier(8)

    def work(_):
        barrier.wait()
        return model.predict(X[:3])

    with ThreadPoolExecutor(8) as pool:                  # up to 8 arenas at once
        list(pool.map(work, range(8)))
    assert len(net._spare_arenas) <= net_module.SPARE_ARENAS


# ---- no leaks -------------------------------------------------------------------

def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_a_thousand_fit_predict_cycles_keep_memory_flat():
    """Each cycle allocates ~0.3 MB of buffers; leaking even 1% of that per cycle
    (a buffer, a reference to the input) would add ~3 MB over the run."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 20, 3)).astype(np.float32)
    y = X[:, :, 0].sum(axis=1)

    def cycle(i):
        if i % 2:
            model = LSTMRegressor(hidden_layer_sizes=(16,), max_iter=1, random_state=i,
                                  tbptt_steps=None if i % 4 == 1 else 7).fit(X, y)
            model.predict(X)
        else:
            model = LSTMClassifier(hidden_layer_sizes=(8, 8), dropout=0.1, max_iter=1,
                                   random_state=i).fit(X, y > 0)
            model.predict_proba(X)
        if i % 50 == 0:
            buffer = io.BytesIO()
            model.save(buffer)
            buffer.seek(0)
            fastlstm.load(buffer).predict(X)

    for i in range(100):        # warm-up: caches, allocator arenas
        cycle(i)
    gc.collect()
    before = resident_bytes()
    for i in range(100, 800):
        cycle(i)
    gc.collect()
    grown = resident_bytes() - before
    # a leaked buffer per cycle (the smallest, a batch of X, is 2.5 KB) adds > 1.5 MB
    assert grown < 1 * 2**20, f"resident memory grew by {grown / 2**20:.2f} MB"

    tracemalloc.start()         # slower, exact to the byte for Python objects and arrays
    try:
        # Freelists and caches (CPython's dicts, numpy's small dims) keep freed blocks,
        # which count as traced once blocks allocated under tracing replace the older
        # ones: 15-20 KB over the first 200 traced cycles, ~1-2 KB per 200 after 100
        # (bounded: they fill). So cycles under tracing first, then the measured ones.
        for i in range(800, 900):
            cycle(i)
        gc.collect()
        traced_before = tracemalloc.get_traced_memory()[0]
        for i in range(900, 1100):
            cycle(i)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
    finally:
        tracemalloc.stop()
    # a leaked object of ~100 bytes per cycle would show
    assert traced < 20_000, f"{traced} bytes of Python allocations kept over 200 cycles"


# ---- reproducibility ------------------------------------------------------------

DETERMINISM_CASES = [
    (LSTMRegressor, dict(hidden_layer_sizes=(6, 5), dropout=0.3)),
    (LSTMRegressor, dict(hidden_layer_sizes=(7,), output="sequence", dropout=0.2,
                         solver="sgd", learning_rate_init=0.05, tbptt_steps=3)),
    (LSTMRegressor, dict(hidden_layer_sizes=(4, 4, 3), dtype="float64", clip_grad_norm=0.1)),
    (LSTMClassifier, dict(hidden_layer_sizes=(6, 5), dropout=0.5)),
    (LSTMClassifier, dict(hidden_layer_sizes=(6,), output="sequence", dropout=0.1)),
]


@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("estimator, params", DETERMINISM_CASES)
def test_same_seed_same_threads_bit_identical_weights(estimator, params, n_threads):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((70, 8, 3)).astype(np.float32)
    s = X[:, :, 0].cumsum(axis=1)
    y = s if params.get("output") == "sequence" else s[:, -1]
    y = y > 0 if estimator is LSTMClassifier else y
    with threadpool_limits(n_threads):
        fits = [estimator(max_iter=4, batch_size=16, random_state=3, **params).fit(X, y)
                for _ in range(2)]
        other = estimator(max_iter=4, batch_size=16, random_state=4, **params).fit(X, y)
    np.testing.assert_array_equal(fits[0].network_.params, fits[1].network_.params)
    assert fits[0].loss_curve_ == fits[1].loss_curve_
    np.testing.assert_array_equal(fits[0].predict(X), fits[1].predict(X))
    assert not np.array_equal(fits[0].network_.params, other.network_.params)
