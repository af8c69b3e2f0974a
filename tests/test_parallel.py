"""Data parallelism over the batch (_parallel.py): slices of a batch run side by
side give what the whole batch gives in one piece, and the estimators use it."""
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastlstm._estimators as est_module
import fastlstm._parallel
import fastlstm._threads
from fastlstm import LSTMClassifier, LSTMRegressor, _threads
from fastlstm._network import LSTMNetwork
from fastlstm._parallel import DataParallel, n_slices, row_slices

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.mark.parametrize("n, parts", [(30, 2), (31, 2), (7, 3), (5, 5), (1, 1), (64, 4)])
def test_row_slices_cover_the_batch_once_in_order(n, parts):
    slices = row_slices(n, parts)
    rows = np.concatenate([np.arange(n)[s] for s in slices])
    np.testing.assert_array_equal(rows, np.arange(n))
    sizes = [s.stop - s.start for s in slices]
    assert len(sizes) == parts and max(sizes) - min(sizes) <= 1


def test_n_slices_keeps_slices_thick_enough():
    assert n_slices(2, 30) == 2
    assert n_slices(2, 1) == 1
    assert n_slices(4, 20) == 20 // fastlstm._parallel.MIN_ROWS_PER_SLICE
    assert n_slices(1, 1000) == 1
    limit = fastlstm._parallel.MIN_SLICED_WORK
    assert n_slices(2, 1000, work=limit - 1) == 1                # too little work to split
    assert n_slices(2, 1000, work=limit) == 2


def test_forward_work_counts_the_multiply_adds_of_every_layer_and_the_head():
    net = LSTMNetwork(3, (5, 4), 2)
    work = fastlstm._parallel.forward_work
    assert work(net, 7, 11) == 7 * 11 * (20 * 8 + 16 * 9) + 7 * 2 * 4      # head: last step
    assert work(net, 7, 11, sequence_output=True) == 7 * 11 * (20 * 8 + 16 * 9 + 2 * 4)
    both = LSTMNetwork(3, (5,), 2, cell="gru", bidirectional=True)
    assert work(both, 2, 3) == 2 * 3 * 2 * 15 * 8 + 2 * 2 * 10


def test_a_per_step_head_over_many_classes_earns_a_batch_its_slices(monkeypatch):
    """LSTM(32) over 50 steps, batches of 32: 13M multiply-adds in the layer, under
    MIN_SLICED_WORK, but 102M more in a per-step head over 2,000 classes: cut
    into a slice per thread (fit 1,803 -> 2,184 samples/s on two)."""
    monkeypatch.setattr(fastlstm._threads, "recurrent_threads", lambda: 2)
    net = LSTMNetwork(32, (32,), 2000)
    work = fastlstm._parallel.forward_work(net, 32, 50, sequence_output=True)
    assert work >= fastlstm._parallel.MIN_SLICED_WORK
    assert fastlstm._parallel.forward_work(net, 32, 50) < fastlstm._parallel.MIN_SLICED_WORK
    with est_module._thread_limit(None, 32, net, work=work, training=True) as parts:
        assert parts == 2


def network(cell="lstm", bidirectional=False, sizes=(5, 4), K=3):
    net = LSTMNetwork(3, sizes, K, dtype=np.float64, cell=cell, bidirectional=bidirectional)
    net.initialize(np.random.default_rng(0))
    return net


@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("gru", False),
                                                 ("rnn", False), ("lstm", True)])
@pytest.mark.parametrize("sequence_output", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_slices_give_the_whole_batch_forward_and_gradients(cell, bidirectional,
                                                           sequence_output, padded):
    T, N = 6, 11
    net = network(cell, bidirectional)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, N, 3))
    lengths = rng.integers(1, T + 1, size=N) if padded else None
    out, tape = net.forward(x, sequence_output, lengths=lengths)
    dout = rng.standard_normal(out.shape)
    grads = net.backward(tape, dout).copy()

    split = DataParallel(net, 3)
    out_split, tape_split = split.forward(x, sequence_output, lengths=lengths)
    np.testing.assert_allclose(out_split, out, rtol=1e-12, atol=1e-14)
    grads_split = split.backward(tape_split, dout)
    assert grads_split is net.grads                       # summed into the network's buffer
    np.testing.assert_allclose(grads_split, grads, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell, bidirectional", [("lstm", False), ("lstm", True), ("gru", False)])
@pytest.mark.parametrize("sequence_output", [False, True])
@pytest.mark.parametrize("N", [1, 11])
def test_a_forward_that_keeps_nothing_gives_the_same_outputs_and_no_backward(
        dtype, cell, bidirectional, sequence_output, N):
    """forward(keep=False), what predict runs: the same outputs and final state (to
    rounding: an LSTM batch's input projection then runs step by step; whole or in
    slices alike, bit for bit), far less scratch for an LSTM batch, and a tape that
    refuses a backward pass."""
    T = 6
    net = LSTMNetwork(3, (5, 4), 3, dtype=dtype, cell=cell, bidirectional=bidirectional)
    net.initialize(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((T, N, 3)).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    outs = []
    for runner in (net, DataParallel(net, 2, training=False)):
        out, tape = runner.forward(x, sequence_output)
        out_lean, tape_lean = runner.forward(x, sequence_output, keep=False)
        np.testing.assert_allclose(out_lean, out, **tol)
        outs.append(out_lean)
        if not bidirectional:
            for kept, lean in zip(tape.final_state(), tape_lean.final_state()):
                np.testing.assert_allclose(lean[0], kept[0], **tol)
                np.testing.assert_allclose(lean[1], kept[1], **tol)
    np.testing.assert_array_equal(outs[1], outs[0])
    _, tape_lean = net.forward(x, sequence_output, keep=False)
    if cell == "lstm" and N > 1:
        assert tape_lean.layers[0][1].shape[0] == 1     # gates: one step, not T
    with pytest.raises(ValueError, match="keep=False"):
        net.backward(tape_lean, np.ones((T * N if sequence_output else N, 3), dtype))


def test_slices_give_the_whole_batch_gradients_summed_in_ranges():
    """From MIN_SPLIT_ELEMENTS parameters on, the slices' gradients are added up in
    ranges of the parameter buffer, one per thread."""
    net = network(sizes=(128,))
    assert net.params.size >= fastlstm._parallel.MIN_SPLIT_ELEMENTS
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 10, 3))
    out, tape = net.forward(x)
    dout = rng.standard_normal(out.shape)
    grads = net.backward(tape, dout).copy()
    split = DataParallel(net, 2)
    grads_split = split.backward(split.forward(x)[1], dout)
    assert grads_split is net.grads
    np.testing.assert_allclose(grads_split, grads, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_an_update_split_in_ranges_gives_the_same_numbers(solver):
    """The optimiser's element-wise update over 2 threads' ranges is the one over
    the whole buffer, to the bit."""
    n = 3 * fastlstm._parallel.MIN_SPLIT_ELEMENTS + 5
    start = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    est = LSTMRegressor(solver=solver)
    results = []
    for parts in (1, 2):
        params = start.copy()
        optimizer = est_module._Optimizer(params, solver)
        for step in range(3):
            grads = np.random.default_rng(step).standard_normal(n).astype(np.float32)
            optimizer.step(est, params, grads, parts)
        results.append(params)
    assert not np.array_equal(results[0], start)
    np.testing.assert_array_equal(results[1], results[0])


def test_slices_carry_the_initial_state_and_return_the_final_one():
    T, N = 5, 9
    net = network()
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, N, 3))
    state = [(rng.standard_normal((N, H)), rng.standard_normal((N, H))) for H in (5, 4)]
    out, tape = net.forward(x, initial_state=state)
    out_split, tape_split = DataParallel(net, 2).forward(x, initial_state=state)
    np.testing.assert_allclose(out_split, out, rtol=1e-12)
    for (h, c), (h_s, c_s) in zip(tape.final_state(), tape_split.final_state()):
        np.testing.assert_allclose(h_s, h, rtol=1e-12)
        np.testing.assert_allclose(c_s, c, rtol=1e-12)


def test_dropout_streams_are_fixed_by_the_generator():
    net = LSTMNetwork(3, (6,), 2, dtype=np.float64, dropout=0.5)
    net.initialize(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((4, 10, 3))
    runs = [DataParallel(net, 2).forward(x, training=True, rng=np.random.default_rng(7))[0]
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])
    eval_out = net.forward(x)[0]
    assert not np.allclose(runs[0], eval_out)              # dropout did act


def test_run_parallel_returns_in_order_and_raises_a_workers_error():
    assert _threads.run_parallel(lambda k: k * k, range(4)) == [0, 1, 4, 9]
    done = []

    def work(k):
        if k == 1:
            raise ValueError("slice 1 failed")
        done.append(k)
        return k

    with pytest.raises(ValueError, match="slice 1 failed"):
        _threads.run_parallel(work, range(3))
    assert sorted(done) == [0, 2]                          # the others finished first


def test_run_parallel_grows_its_pool_under_concurrent_callers():
    """Callers on several threads asking for more and more workers: every call
    gets all its results (none lands on a pool that was just replaced)."""

    def call(size):
        return _threads.run_parallel(lambda k: k + size, range(size))

    sizes = [2, 3, 5, 2, 4, 6, 3, 2] * 4
    with ThreadPoolExecutor(8) as callers:
        results = list(callers.map(call, sizes))
    assert results == [[k + size for k in range(size)] for size in sizes]


def sequences(n=128, T=10, D=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D))
    return X, X[:, :, 0].sum(axis=1)


# A network big enough to be cut into slices: a batch of 64 over 10 steps is
# 64 * 10 * 512 * 131 = 43M multiply-adds (MIN_SLICED_WORK is 2**25 = 34M).
BIG = dict(hidden_layer_sizes=(128,), batch_size=64, max_iter=2, dtype="float64",
           random_state=0)


def spy_slices(monkeypatch):
    seen = []
    original = DataParallel.__init__

    def init(self, net, parts, training=True):
        seen.append((parts, training, threading.current_thread().name))
        original(self, net, parts, training)

    monkeypatch.setattr(DataParallel, "__init__", init)
    return seen


@pytest.mark.parametrize("layers", [
    {},
    # the same dropout masks, whole or in slices: the first layer's over every
    # step, the top one's over the last step (many-to-one) or every step
    dict(hidden_layer_sizes=(128, 128), dropout=0.3),
    dict(hidden_layer_sizes=(128, 128), dropout=0.3, output="sequence"),
])
def test_fit_and_predict_on_two_threads_cut_batches_into_slices(monkeypatch, layers):
    X, y = sequences()
    if layers.get("output") == "sequence":
        y = X[:, :, 0].cumsum(axis=1)
    params = dict(BIG, **layers)
    seen = spy_slices(monkeypatch)
    two = LSTMRegressor(n_jobs=2, **params).fit(X, y)
    assert seen == [(2, True, "MainThread")]
    pred_two = two.predict(X)
    assert seen[-1][:2] == (2, False)
    seen.clear()
    one = LSTMRegressor(n_jobs=1, **params).fit(X, y)
    one.predict(X)
    assert seen == []                                      # one thread: no slices
    # the same training, summed in another order: equal to rounding
    np.testing.assert_allclose(two.network_.params, one.network_.params, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pred_two, one.predict(X), rtol=1e-9, atol=1e-12)


def test_a_sliced_prediction_keeps_its_slices_for_the_next_one():
    """The slices' scratch memory is kept for the next prediction (paging it in
    again cost large's batched inference 5-7%): one set, reused, same results."""
    X, y = sequences()
    model = LSTMRegressor(n_jobs=2, **BIG).fit(X, y)
    net = model.network_
    first = model.predict(X)
    assert len(net._spare_runners) == 1
    runner = net._spare_runners[0]
    assert len(runner.replicas) == 2
    np.testing.assert_array_equal(model.predict(X), first)
    assert net._spare_runners == [runner]                 # the same one, taken and put back
    model.set_params(n_jobs=3)                            # another slice count: a new one
    np.testing.assert_allclose(model.predict(X), first, rtol=1e-9, atol=1e-12)
    assert len(net._spare_runners) == 1 and len(net._spare_runners[0].replicas) == 3


@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_float32_lstm_predicts_a_batch_whole_with_the_sliced_bits(monkeypatch, bidirectional):
    """Float32 LSTM layers split a prediction's batch over threads in their own
    loop (LSTMNetwork.splits_batches_itself), reading the batch-major input in
    place: no slices, what slices give (the layers' bits; the head, one BLAS
    call over all rows or one per slice, may round a last bit apart), and the
    batch's scratch kept. A bidirectional network's batch is still sliced."""
    X, y = sequences(n=300)
    params = dict(BIG, dtype="float32", bidirectional=bidirectional)
    model = LSTMRegressor(n_jobs=2, **params).fit(X, y)
    net = model.network_
    assert net.splits_batches_itself(len(X), None) is (
        fastlstm._kernels.packed_loop_runs() and not bidirectional)
    seen = spy_slices(monkeypatch)
    whole = model.predict(X)
    assert seen == ([] if net.splits_batches_itself(len(X), None) else [(2, False, "MainThread")])
    kept = list(net._spare_batch_arenas)
    np.testing.assert_array_equal(model.predict(X), whole)
    assert net._spare_batch_arenas == kept                # the same one, taken and put back
    monkeypatch.setattr(LSTMNetwork, "splits_batches_itself", lambda self, N, lengths: False)
    np.testing.assert_allclose(model.predict(X), whole, rtol=1e-6, atol=1e-7)
    assert seen[-1][:2] == (2, False)                     # now in slices
    gru = LSTMRegressor(n_jobs=2, cell="gru", **params).fit(X, y)
    assert not gru.network_.splits_batches_itself(len(X), None)


def test_whole_batch_predictions_from_four_threads_at_once_match_serial_calls():
    """Concurrent batch predictions run whole: one on the thread team, the others
    on their own threads while it is busy, each with its own scratch (the large
    arena kept goes to one caller at a time); every result as a serial call's."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 40, 8)).astype(np.float32)
    model = LSTMRegressor(hidden_layer_sizes=(64,), max_iter=1, n_jobs=2, dtype="float32",
                          random_state=0).fit(X[:64], X[:64, -1, 0])
    batches = [X[: 200 + 14 * k] for k in range(4)]
    serial = [model.predict(b) for b in batches]
    barrier = threading.Barrier(4)

    def work(k):
        barrier.wait()
        return [model.predict(batches[k]) for _ in range(3)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, range(4)))
    for k in range(4):
        for got in results[k]:
            np.testing.assert_array_equal(got, serial[k])
    assert len(model.network_._spare_batch_arenas) <= 1


@pytest.mark.parametrize("cell, dtype", [("lstm", "float64"), ("gru", "float32")])
def test_concurrent_predictions_on_the_threads_in_force_match_serial_calls(cell, dtype):
    """n_jobs=None reads the BLAS limit in force. While one call's block holds BLAS
    at one thread (a small batch, a single sequence), another call must still read
    the user's limit, or it cuts its batch into other slices and rounds apart."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 20, 3)).astype(dtype)
    model = LSTMRegressor(hidden_layer_sizes=(64,), cell=cell, max_iter=1, dtype=dtype,
                          random_state=0).fit(X[:64], X[:64, -1, 0])
    batches = [X[:n] for n in (1, 17, 200, 256, 300)]
    with threadpool_limits(2, user_api="blas"):
        serial = [model.predict(b) for b in batches]
        barrier = threading.Barrier(3)

        def work(k):
            barrier.wait()
            return [(j, model.predict(batches[j])) for _ in range(4)
                    for j in np.random.default_rng(k).permutation(len(batches))]

        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(work, range(3)))
    for got in results:
        for j, pred in got:
            np.testing.assert_array_equal(pred, serial[j])


def test_sliced_training_is_reproducible_with_dropout():
    X, y = sequences()
    y = (y > 0).astype(int)
    params = dict(BIG, hidden_layer_sizes=(128, 128), dropout=0.3, n_jobs=2, dtype="float32")
    first = LSTMClassifier(**params).fit(X, y)
    second = LSTMClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(first.network_.params, second.network_.params)
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))


def _predict_in_child(model, X, queue):
    queue.put(model.predict(X))


def test_a_forked_child_predicts_with_slices_too():
    """A child forked after the parent used its worker threads inherits no threads:
    it must start its own, not wait on the parent's."""
    import multiprocessing
    X, y = sequences()
    model = LSTMRegressor(n_jobs=2, **BIG).fit(X, y)
    expected = model.predict(X)                            # the parent's pool is running
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_predict_in_child, args=(model, X, queue))
    child.start()
    try:
        got = queue.get(timeout=30)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(got, expected)


def test_children_forked_while_another_thread_trains_do_not_hang():
    """A thread forked away halfway through the team's per-step barrier leaves its
    arrival counted in the child's copy of the team: the child's own fit then
    waited at that barrier for one thread too many, for ever (9 of 30 children)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 20, 4)).astype(np.float32)
    y = X[:, :, 0].sum(axis=1)
    # a batch the time loop splits over the threads inside the kernel, with barriers
    params = dict(hidden_layer_sizes=(64,), batch_size=64, max_iter=2, random_state=0)
    expected = LSTMRegressor(**params).fit(X, y).network_.params
    stop = threading.Event()

    def train():
        while not stop.is_set():
            LSTMRegressor(**params).fit(X, y)

    trainer = threading.Thread(target=train)
    trainer.start()
    outcomes = []
    try:
        time.sleep(0.2)
        for _ in range(30):
            pid = os.fork()
            if pid == 0:                                     # the child: fit, or die hung
                signal.alarm(20)
                code = 4                                     # an exception in the fit
                try:
                    fitted = LSTMRegressor(**params).fit(X, y).network_.params
                    code = 0 if np.array_equal(fitted, expected) else 3
                finally:
                    os._exit(code)                           # never back into pytest
            _, status = os.waitpid(pid, 0)
            outcomes.append("hung" if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    finally:
        stop.set()
        trainer.join()
    assert outcomes == [0] * 30


class _FakeBlas:
    """Two libraries' (get, set) pairs over one list of limits; set number
    `interrupt_at` raises KeyboardInterrupt, before or after it takes effect,
    as Python raises a Ctrl-C after any call returns."""

    def __init__(self, interrupt_at=None, after=False):
        self.limits, self.sets = [2, 2], 0
        self.interrupt_at, self.after = interrupt_at, after

    def libs(self):
        def setter(k):
            def set_(n):
                self.sets += 1
                interrupt = self.sets == self.interrupt_at
                if interrupt and not self.after:
                    raise KeyboardInterrupt
                self.limits[k] = n
                if interrupt:
                    raise KeyboardInterrupt
            return set_
        return [(lambda k=k: self.limits[k], setter(k)) for k in range(2)]


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("interrupt_at", [1, 2, 3, 4])   # enter: sets 1, 2; exit: 3, 4
def test_ctrl_c_while_blas_limits_are_set_or_restored_leaves_none_behind(
        monkeypatch, interrupt_at, after):
    """A Ctrl-C between setting one library's limit and the other's (on the way
    in or out) left a limit of 1 behind, which the next block then saved as the
    one to keep: BLAS ran on one thread for the rest of the process."""
    blas = _FakeBlas(interrupt_at, after)
    monkeypatch.setattr(_threads, "_libs", blas.libs())
    monkeypatch.setattr(_threads, "_saved", [])
    monkeypatch.setattr(_threads, "_in_force", [])
    with pytest.raises(KeyboardInterrupt):
        with _threads.blas_threads(1):
            assert blas.limits == [1, 1]
    assert _threads._active == 0 and getattr(_threads._own, "threads", None) is None
    with _threads.blas_threads(1):                 # the next block, as the next predict
        assert blas.limits == [1, 1]
    assert blas.limits == [2, 2] and _threads._active == 0
    blas.limits[:] = [3, 3]                        # a limit set between blocks is kept
    with _threads.blas_threads(1):
        pass
    assert blas.limits == [3, 3]


def _blas_limits():
    from threadpoolctl import threadpool_info
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def _report_blas_limits(queue):
    queue.put(_blas_limits())


def test_a_child_forked_while_another_thread_holds_blas_at_one_gets_the_limits_back():
    """The child never runs the block the other parent thread was in, so nothing
    there would restore the limit it set."""
    import multiprocessing
    with threadpool_limits(2, user_api="blas"):
        inside, leave = threading.Event(), threading.Event()

        def hold():
            with _threads.blas_threads(1):
                inside.set()
                leave.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        inside.wait(30)
        assert set(_blas_limits()) == {1}
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_report_blas_limits, args=(queue,))
        child.start()
        try:
            in_child = queue.get(timeout=30)
        finally:
            leave.set()
            holder.join()
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
        assert set(in_child) == {2} and set(_blas_limits()) == {2}


def test_predicts_overlapping_in_threads_with_other_blas_limits_restore_the_limits():
    """A wide single sequence with n_jobs runs on n_jobs BLAS threads, a batch on one:
    overlapping, the last one out restores the limits in force before either (with
    threadpoolctl's threadpool_limits, each could restore the other's and leave 1)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 5, 4)).astype(np.float32)
    model = LSTMRegressor(hidden_layer_sizes=(600,), cell="gru", max_iter=1, n_jobs=2,
                          random_state=0).fit(X, rng.standard_normal(8))
    one, batch = model.predict(X[:1]), model.predict(X)
    before = _blas_limits()

    def singles():
        return all(np.array_equal(model.predict(X[:1]), one) for _ in range(300))

    def batches():
        return all(np.array_equal(model.predict(X), batch) for _ in range(300))

    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            assert all(done.result() for done in [pool.submit(singles), pool.submit(batches)])
        assert _blas_limits() == before


def test_small_networks_run_on_one_thread_and_wide_single_sequences_on_more():
    assert _threads.is_small(32, (50,))                    # sine: one thread
    assert not _threads.is_small(30, (300, 300))           # charlm: threads (slices)
    assert _threads.is_small(1, (300,))                    # one sequence, W_hh fits one L2
    assert not _threads.is_small(1, (512,))                # one sequence, W_hh does not


def test_one_wide_sequence_keeps_the_blas_threads_in_force(monkeypatch):
    """A single float64 sequence through a 512-unit layer runs its gemv on the BLAS threads
    in force (two here), a 64-unit one on one thread; neither is cut into slices. A
    16-unit one leaves the limit alone (BLAS threads no product that small) and
    predicts the same as on one thread."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    forward = LSTMNetwork.forward

    def spy(self, *args, **kwargs):
        seen.append(min(info["num_threads"] for info in threadpool_info()
                        if info["user_api"] == "blas"))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LSTMNetwork, "forward", spy)
    X = np.random.default_rng(0).standard_normal((1, 3, 2))
    for H, threads in ((512, 2), (64, 1), (16, 2)):
        model = LSTMRegressor(hidden_layer_sizes=(H,), max_iter=1, dtype="float64").fit(X, [0.5])
        seen.clear()
        with threadpool_limits(2, user_api="blas"):
            got = model.predict(X)
        assert seen == [threads]
        with threadpool_limits(1, user_api="blas"):
            np.testing.assert_array_equal(model.predict(X), got)
    # nor does it set n_jobs' limit for such a sequence
    monkeypatch.setattr(_threads, "blas_threads", None)           # would fail if called
    model.set_params(n_jobs=2)
    np.testing.assert_array_equal(model.predict(X), got)


def test_one_float32_sequence_runs_its_own_loop_on_the_threads_in_force(monkeypatch):
    """A float32 LSTM runs a single sequence on its own packed loop, which calls no
    BLAS: no BLAS limit is set (the head's product is small), and the layers get
    the threads in force (2), n_jobs' (1) if given, or one when no layer is wide
    enough to split. Stepping, forecasting and generating pass them too."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from fastlstm import _kernels
    if not _kernels.packed_recurrence_available():
        pytest.skip("no AVX-512 on this CPU: a single sequence runs the BLAS loop")
    import fastlstm._network as net_module
    seen = []
    forward = _kernels.lstm_layer_forward

    def spy(*args, **kwargs):
        blas = min(info["num_threads"] for info in threadpool_info()
                   if info["user_api"] == "blas")
        seen.append((blas, args[12], args[13] is not None))   # n_threads, packed_weights
        return forward(*args, **kwargs)

    monkeypatch.setattr(net_module._kernels, "lstm_layer_forward", spy)
    X = np.random.default_rng(0).standard_normal((2, 3, 1)).astype(np.float32)
    for H, n_jobs, threads in ((192, None, 2), (192, 1, 1), (128, None, 2), (127, None, 1)):
        model = LSTMRegressor(hidden_layer_sizes=(H,), max_iter=1, n_jobs=n_jobs).fit(X, [0.5, 1])
        with threadpool_limits(2, user_api="blas"):
            seen.clear()
            model.predict(X[:1])
            model.step(X[:1])
            model.forecast(X[:1], 2)                         # the history, then one step
            assert seen == [(2, threads, True)] * 4
            seen.clear()
            model.predict(X)                                 # two sequences: the usual way
            assert [packed for _, _, packed in seen] == [False]
    # training one sequence at a time: the backward pass runs BLAS products of one row
    # per step, which BLAS would thread (and slow down) without the limit
    seen.clear()
    with threadpool_limits(2, user_api="blas"):
        LSTMRegressor(hidden_layer_sizes=(192,), batch_size=1, max_iter=1).fit(X, [0.5, 1])
    assert seen and all(blas == 1 for blas, _, _ in seen)


def test_ctrl_c_during_a_sliced_fit_keeps_the_last_epoch_and_the_pool_usable(monkeypatch,
                                                                            sigint_raises):
    """SIGINT raised while the slices run (here: from inside a slice's forward, on
    whichever thread runs it): fit waits for the other slice, keeps the last
    completed epoch, and the worker threads serve the next fit."""
    import _thread
    import signal

    X, y = sequences()
    params = dict(BIG, max_iter=20, n_jobs=2)
    calls = [0]
    forward = LSTMNetwork.forward

    def interrupting(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 9:              # in the 3rd epoch: 2 slices x 2 batches an epoch
            _thread.interrupt_main(signal.SIGINT)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LSTMNetwork, "forward", interrupting)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        model = LSTMRegressor(**params).fit(X, y)
    monkeypatch.undo()
    assert 1 <= model.n_iter_ < 20
    reference = LSTMRegressor(**{**params, "max_iter": model.n_iter_}).fit(X, y)
    np.testing.assert_array_equal(model.network_.params, reference.network_.params)
    assert np.isfinite(model.predict(X)).all()


def test_a_small_network_is_not_cut_into_slices(monkeypatch):
    """sine's size (3.3M multiply-adds a batch): a Python thread hand-off per
    slice costs more than it saves, so even with two threads the batch runs whole;
    predicting 256 sequences at once (26M, one hand-off) is worth slicing."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 10, 1))
    seen = spy_slices(monkeypatch)
    # float64: float32 LSTM predictions run whole, split by the layers' own loops
    model = LSTMRegressor(hidden_layer_sizes=(50,), batch_size=32, max_iter=1, n_jobs=2,
                          dtype="float64")
    model.fit(X[:64], X[:64, -1, 0]).predict(X[:64])
    assert seen == []
    model.predict(X)
    assert [(parts, training) for parts, training, _ in seen] == [(2, False)]


def spy_layer_threads(monkeypatch):
    """[(n_threads of a layer forward, of the backward after it)] seen while training."""
    import fastlstm._network as net_module
    seen = []
    kernels = net_module._kernels
    forward, backward = kernels.lstm_layer_forward, kernels.lstm_layer_backward

    class Spy:
        def __getattr__(self, name):
            return getattr(kernels, name)

        def lstm_layer_forward(self, *args, **kwargs):
            seen.append([args[12]])
            return forward(*args, **kwargs)

        def lstm_layer_backward(self, *args, **kwargs):
            seen[-1].append(args[18])
            return backward(*args, **kwargs)

    monkeypatch.setattr(net_module, "_kernels", Spy())
    return seen


def test_a_batch_run_whole_gives_the_layers_its_threads(monkeypatch):
    """sine's size on two threads: the batch is not sliced, but forward and backward
    pass both threads to the layer kernels, whose packed loop splits the batch by
    samples (_recurrent.h), in fit and predict alike. Its results are those of one
    thread, bit for bit. A batch of binadd's size (0.6M multiply-adds) is too small
    to hand off."""
    from fastlstm import _kernels
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 10, 1)).astype(np.float32)
    y = X[:, -1, 0]
    seen = spy_layer_threads(monkeypatch)
    params = dict(hidden_layer_sizes=(50,), batch_size=32, max_iter=2, random_state=0)
    two = LSTMRegressor(n_jobs=2, **params).fit(X, y)
    assert seen and all(threads == [2, 2] for threads in seen)
    seen.clear()
    one = LSTMRegressor(n_jobs=1, **params).fit(X, y)
    assert seen and all(threads == [1, 1] for threads in seen)
    if _kernels.packed_recurrence_available():
        np.testing.assert_array_equal(two.network_.params, one.network_.params)
    seen.clear()
    predicted = two.predict(X)
    assert seen == [[2]]
    np.testing.assert_array_equal(predicted, two.set_params(n_jobs=1).predict(X))
    seen.clear()
    LSTMRegressor(hidden_layer_sizes=(16,), batch_size=64, max_iter=1, n_jobs=2).fit(
        rng.standard_normal((64, 8, 2)), rng.standard_normal(64))
    assert seen and all(threads == [None, None] for threads in seen)


def test_a_batch_split_inside_the_layers_runs_blas_on_one_thread(monkeypatch):
    """A network too big for the small-network rule but whose batch runs whole
    (64 x 128 units over 3 steps: 13M multiply-adds) gives the layers the two
    threads of the limit in force, and their BLAS calls run on one thread each,
    as a slice's do: two team threads calling a two-thread BLAS would put four
    threads on two cores."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import fastlstm._network as net_module
    seen = []
    forward = net_module._kernels.lstm_layer_forward

    def spy(*args, **kwargs):
        blas = min(info["num_threads"] for info in threadpool_info()
                   if info["user_api"] == "blas")
        seen.append((blas, args[12]))
        return forward(*args, **kwargs)

    monkeypatch.setattr(net_module._kernels, "lstm_layer_forward", spy)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3, 8)).astype(np.float32)
    with threadpool_limits(2, user_api="blas"):
        LSTMRegressor(hidden_layer_sizes=(128,), batch_size=64, max_iter=1).fit(X, X[:, -1, 0])
    assert seen == [(1, 2)]


def test_a_large_head_and_softmax_split_their_rows_with_the_same_results(monkeypatch):
    """A per-step head over many classes runs in row slices on the forward pass's
    threads, and a large softmax on n_jobs threads: the same numbers as in one
    piece (each row's sums are the same)."""
    from fastlstm import LSTMClassifier, _ops
    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, 6, 3)).astype(np.float32)
    y = rng.integers(0, 40, (24, 6))
    model = LSTMClassifier((5,), output="sequence", max_iter=1, n_jobs=1, random_state=0)
    whole = model.fit(X, y).predict_proba(X)
    calls = []
    real_run_parallel = fastlstm._threads.run_parallel

    def run_parallel(fn, items):
        calls.append(len(items))
        return real_run_parallel(fn, items)

    monkeypatch.setattr(fastlstm._threads, "run_parallel", run_parallel)
    monkeypatch.setattr(fastlstm._network, "HEAD_SPLIT_WORK", 1)
    monkeypatch.setattr(_ops, "SPLIT_SOFTMAX_FROM", 1)
    split = model.set_params(n_jobs=2).predict_proba(X)
    assert calls == [2]                                 # the softmax's rows
    np.testing.assert_allclose(split, whole, rtol=1e-6, atol=1e-7)
    net = model.network_
    x_tm = np.ascontiguousarray(X.transpose(1, 0, 2))
    one = net.forward(x_tm, True, training=False, n_threads=1)[0]
    two = net.forward(x_tm, True, training=False, n_threads=2)[0]
    assert calls == [2, 2]                              # the head's rows
    np.testing.assert_allclose(two, one, rtol=1e-6, atol=1e-6)
