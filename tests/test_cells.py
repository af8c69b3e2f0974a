"""The plain RNN and GRU cells: the NumPy reference against torch, the compiled
kernels against the reference (float32 and float64)."""
import numpy as np
import pytest
from conftest import random_layer_arrays

from fastlstm import _kernels
from fastlstm import _reference as ref



@pytest.fixture
def torch():
    """torch, for the tests that compare with it (the others run without it)."""
    return pytest.importorskip("torch")

SHAPES = [  # (T, N, D, H)
    (1, 1, 1, 1),
    (1, 3, 2, 4),
    (5, 1, 3, 2),
    (4, 3, 1, 1),
    (6, 4, 5, 7),
    (3, 2, 8, 33),
    (3, 6, 4, 128),    # float32: each step's products on a packed W_hh (_blas.step_matrix)
    (2, 13, 3, 160),   # ... N past one 12-row register tile; H = 10 vectors of 16
]
GATES = {"rnn_tanh": 1, "rnn_sigmoid": 1, "gru": 3}


def random_layer(cell, T, N, D, H, dtype, seed=0, zero_state=False):
    """(x, w_ih, w_hh, b_ih, b_hh, h0) of one RNN or GRU layer."""
    return random_layer_arrays(GATES[cell] * H, T, N, D, H, dtype, seed, zero_state)


def ref_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0):
    if cell == "gru":
        return ref.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0)
    return ref.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, cell.split("_")[1])


def ref_backward(cell, dh, w_ih, w_hh, cache):
    if cell == "gru":
        return ref.gru_backward(dh, w_ih, w_hh, cache)
    return ref.rnn_backward(dh, w_ih, w_hh, cache, cell.split("_")[1])


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru"])
def test_reference_matches_torch(cell, torch):
    """The reference itself, outputs and every gradient, against torch in float64."""
    T, N, D, H = 5, 3, 4, 6
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, T, N, D, H, np.float64)
    dh = np.random.default_rng(1).standard_normal((T, N, H))
    h, cache = ref_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0)
    dx, dw_ih, dw_hh, db_ih, db_hh, dh0 = ref_backward(cell, dh, w_ih, w_hh, cache)

    module = (torch.nn.GRU(D, H, dtype=torch.float64) if cell == "gru"
              else torch.nn.RNN(D, H, nonlinearity="tanh", dtype=torch.float64))
    with torch.no_grad():
        for name, value in (("weight_ih", w_ih), ("weight_hh", w_hh),
                            ("bias_ih", b_ih), ("bias_hh", b_hh)):
            getattr(module, f"{name}_l0").copy_(torch.from_numpy(value))
    x_t = torch.from_numpy(x).requires_grad_(True)
    h0_t = torch.from_numpy(h0[None]).requires_grad_(True)
    h_t, _ = module(x_t, h0_t)
    (h_t * torch.from_numpy(dh)).sum().backward()
    np.testing.assert_allclose(h, h_t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dh0, h0_t.grad.numpy()[0], atol=1e-12)
    for name, mine in (("weight_ih", dw_ih), ("weight_hh", dw_hh),
                       ("bias_ih", db_ih), ("bias_hh", db_hh)):
        np.testing.assert_allclose(mine, getattr(module, f"{name}_l0").grad.numpy(),
                                   atol=1e-12, err_msg=name)


def test_sigmoid_rnn_reference_by_finite_differences():
    """torch has no sigmoid RNN: check that reference's gradients numerically."""
    T, N, D, H = 4, 2, 3, 5
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer("rnn_sigmoid", T, N, D, H, np.float64)
    dh = np.random.default_rng(1).standard_normal((T, N, H))
    params = [x, w_ih, w_hh, b_ih, b_hh, h0]
    _, cache = ref.rnn_forward(*params, "sigmoid")
    dx, dw_ih, dw_hh, db_ih, db_hh, dh0 = ref.rnn_backward(dh, w_ih, w_hh, cache, "sigmoid")
    for p, analytic in zip(params, (dx, dw_ih, dw_hh, db_ih, db_hh, dh0)):
        numeric = np.empty_like(p)
        for k in np.ndindex(p.shape):
            saved = p[k]
            p[k] = saved + 1e-6
            up = (ref.rnn_forward(*params, "sigmoid")[0] * dh).sum()
            p[k] = saved - 1e-6
            down = (ref.rnn_forward(*params, "sigmoid")[0] * dh).sum()
            p[k] = saved
            numeric[k] = (up - down) / 2e-6
        np.testing.assert_allclose(analytic, numeric, atol=1e-8)


# ---- the compiled kernels against the reference ------------------------------------

from fastlstm import _cells  # noqa: E402

# float32 against a float64 reference: a few ulp per operation, grown over T steps
TOL = {np.float32: 2e-5, np.float64: 1e-12}
CELLS = ["rnn_tanh", "rnn_sigmoid", "gru"]


def as64(*arrays):
    return [a.astype(np.float64) for a in arrays]


def kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, lengths=None):
    """h (T, N, H) and what the kernel's backward needs."""
    T, N, _ = x.shape
    H = w_hh.shape[1]
    h = np.full((T, N, H), np.nan, x.dtype)
    if cell == "gru":
        gates, hproj = (np.full((T, N, 3 * H), np.nan, x.dtype) for _ in range(2))
        _cells.gru_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, gates, hproj, h, lengths)
        return h, (gates, hproj)
    _cells.rnn_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, h, cell == "rnn_sigmoid", lengths)
    return h, ()


def kernel_backward(cell, x, w_ih, w_hh, h0, h, saved, dh, lengths=None, with_dh0=True,
                    dgates_steps=None):
    """dx, dW_ih, dW_hh, db_ih, db_hh, dh0; weight gradients accumulate onto ones.
    with_dh0=False asks for no dh0 (returned as None); dgates_steps: steps of the
    GRU's gate gradient buffers (default T)."""
    T, N, D = x.shape
    H = w_hh.shape[1]
    dtype = x.dtype
    G = w_hh.shape[0]
    dh0 = np.full((N, H), np.nan, dtype) if with_dh0 else None
    dx = np.full((T, N, D), np.nan, dtype)
    dw_ih, dw_hh = np.ones((G, D), dtype), np.ones((G, H), dtype)
    db_ih, db_hh = np.ones(G, dtype), np.ones(G, dtype)
    if cell == "gru":
        dgi, dgh = (np.full((dgates_steps or T, N, G), np.nan, dtype) for _ in range(2))
        _cells.gru_layer_backward(x, w_ih, w_hh, h0, *saved, h, dh.copy(), dh0, dgi, dgh, dx,
                                  dw_ih, dw_hh, db_ih, db_hh, lengths)
    else:
        dpre = np.full((T, N, H), np.nan, dtype)
        _cells.rnn_layer_backward(x, w_ih, w_hh, h0, h, dh.copy(), dh0, dpre, dx,
                                  dw_ih, dw_hh, db_ih, cell == "rnn_sigmoid", lengths)
        db_hh = db_ih.copy()
    return dx, dw_ih - 1, dw_hh - 1, db_ih - 1, db_hh - 1, dh0


@pytest.fixture(params=[True, False], ids=["step-tiles", "sgemm"])
def step_products(request):
    """float32 products per step on a packed W_hh where they can (the default), or
    one sgemm per step (a CPU without AVX-512); the setting before is restored."""
    previous = _kernels.set_step_products(request.param)
    yield request.param
    _kernels.set_step_products(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("zero_state", [False, True])
def test_kernels_match_reference(cell, shape, dtype, zero_state, step_products):
    T, N, D, H = shape
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, *shape, dtype, zero_state=zero_state)
    h, saved = kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0)
    h_ref, cache = ref_forward(cell, *as64(x, w_ih, w_hh, b_ih, b_hh, h0))
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=TOL[dtype])

    dh = np.random.default_rng(1).standard_normal((T, N, H)).astype(dtype)
    got = kernel_backward(cell, x, w_ih, w_hh, h0, h, saved, dh)
    expected = ref_backward(cell, *as64(dh, w_ih, w_hh), cache)
    names = ("dx", "dW_ih", "dW_hh", "db_ih", "db_hh", "dh0")
    for name, a, b in zip(names, got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype] * 10, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padded", [False, True])
def test_gru_backward_in_chunks_of_steps(dtype, padded):
    """Where the GRU's two gate gradients outgrow L2, its weight gradients and dx
    come chunk by chunk as the loop goes (here 4 steps a chunk, the first of 1),
    and its gate gradient buffers may hold one chunk's steps, reused: the same
    bits as buffers of every step, and the reference's values."""
    T, N, D, H = 17, 64, 3, 64
    assert _cells.gru_gradient_chunk_steps(T, N, H, dtype) == 4
    assert _cells.gru_gradient_chunk_steps(T, N // 4, H, dtype) == T   # under 1 MB: one chunk
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer("gru", T, N, D, H, dtype)
    w_ih, w_hh = w_ih * 0.25, w_hh * 0.25                     # keep the gates off saturation
    lengths = np.random.default_rng(3).integers(1, T + 1, N).astype(np.int64) if padded else None
    dh = np.random.default_rng(1).standard_normal((T, N, H)).astype(dtype)
    h, saved = kernel_forward("gru", x, w_ih, w_hh, b_ih, b_hh, h0, lengths)
    whole = kernel_backward("gru", x, w_ih, w_hh, h0, h, saved, dh, lengths)
    in_chunk = kernel_backward("gru", x, w_ih, w_hh, h0, h, saved, dh, lengths, dgates_steps=4)
    for got, want in zip(in_chunk, whole):
        np.testing.assert_array_equal(got, want)
    if not padded:
        _, cache = ref_forward("gru", *as64(x, w_ih, w_hh, b_ih, b_hh, h0))
        expected = ref_backward("gru", *as64(dh, w_ih, w_hh), cache)
        for name, a, b in zip(("dx", "dW_ih", "dW_hh", "db_ih", "db_hh", "dh0"), whole, expected):
            np.testing.assert_allclose(a, b, rtol=TOL[dtype] * 5, atol=TOL[dtype] * 10,
                                       err_msg=name)
    with pytest.raises(ValueError, match="dgates_i"):
        kernel_backward("gru", x, w_ih, w_hh, h0, h, saved, dh, lengths, dgates_steps=5)


@pytest.mark.parametrize("dtype, H", [(np.float64, 5), (np.float32, 128)])
@pytest.mark.parametrize("cell", CELLS)
def test_padded_batch_equals_each_sequence_alone(cell, dtype, H, step_products):
    """With lengths, each sample's h and gradients are those of running it alone
    (float32: the batch's products per step on tiles, one sequence's through
    gemv, so to float32's rounding)."""
    T, N, D = 6, 4, 3
    # float32: rounding grows with the terms summed, of the size of the largest
    scale = 1e-12 if dtype == np.float64 else 2e-5

    def close(a, b, err_msg=""):
        np.testing.assert_allclose(a, b, rtol=0, atol=scale * max(1.0, np.abs(b).max()),
                                   err_msg=err_msg)

    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, T, N, D, H, dtype)
    lengths = np.array([6, 2, 1, 4], dtype=np.int64)
    padding = np.arange(T)[:, None] >= lengths[None, :]
    x[padding] = 1e3                                          # must not leak in
    dh = np.random.default_rng(2).standard_normal((T, N, H)).astype(dtype)
    dh[padding] = 0
    h, saved = kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, lengths)
    grads = kernel_backward(cell, x, w_ih, w_hh, h0, h, saved, dh, lengths)
    summed = [np.zeros_like(g) for g in grads[1:5]]
    for n, L in enumerate(lengths):
        x_n = np.ascontiguousarray(x[:L, n:n + 1])
        h_n, saved_n = kernel_forward(cell, x_n, w_ih, w_hh, b_ih, b_hh, h0[n:n + 1])
        close(h[:L, n], h_n[:, 0])
        np.testing.assert_allclose(h[L:, n], np.broadcast_to(h[L - 1, n], h[L:, n].shape))
        g_n = kernel_backward(cell, x_n, w_ih, w_hh, h0[n:n + 1], h_n, saved_n,
                              np.ascontiguousarray(dh[:L, n:n + 1]))
        close(grads[0][:L, n], g_n[0][:, 0])    # dx
        np.testing.assert_allclose(grads[0][L:, n], 0)
        close(grads[5][n], g_n[5][0])           # dh0
        for s, g in zip(summed, g_n[1:5]):
            s += g
    for name, a, b in zip(("dW_ih", "dW_hh", "db_ih", "db_hh"), grads[1:5], summed):
        close(a, b, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_kernels_reject_bad_shapes_and_lengths(cell):
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, 3, 2, 2, 4, np.float64)
    with pytest.raises(ValueError, match="has shape"):
        kernel_forward(cell, x, w_ih, w_hh[:, :3].copy(), b_ih, b_hh, h0)
    with pytest.raises(ValueError, match="lengths"):
        kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0, np.array([0, 3], dtype=np.int64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
def test_huge_preactivations_keep_the_layer_finite(cell, dtype):
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, 5, 2, 3, 4, dtype)
    h, _ = kernel_forward(cell, x, (w_ih * 1e30).astype(dtype), w_hh, b_ih, b_hh, h0)
    assert np.isfinite(h).all()
    assert (np.abs(h) <= np.abs(h0).max() + 1).all()


# ---- the cells in the estimators ------------------------------------------------------

from fastlstm import LSTMClassifier, LSTMRegressor, load  # noqa: E402

ESTIMATOR_CELLS = [dict(cell="gru"), dict(cell="rnn"), dict(cell="rnn", nonlinearity="sigmoid")]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cell", ESTIMATOR_CELLS, ids=lambda c: "-".join(c.values()))
def test_estimators_fit_save_and_load_every_cell(cell, tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5, 2))
    y = X[:, :, 0].sum(axis=1)
    model = LSTMRegressor((6, 4), max_iter=20, learning_rate_init=1e-2, random_state=0,
                          **cell).fit(X, y)
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    G = {"gru": 3, "rnn": 1}[cell["cell"]]
    shapes = {name: w.shape for name, w in model.weights_.items()}
    assert shapes["weight_ih_l0"] == (6 * G, 2) and shapes["weight_hh_l1"] == (4 * G, 4)
    assert shapes["bias_ih_l1"] == (4 * G,) and shapes["head.weight"] == (1, 4)
    expected = model.predict(X)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(X), expected)
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    assert loaded.cell == cell["cell"] and loaded.network_.cell == cell["cell"]
    np.testing.assert_array_equal(loaded.predict(X), expected)
    # stepping one step at a time reproduces the whole-sequence prediction
    outputs, _ = model.step(X)
    state = None
    for t in range(5):
        step_out, state = model.step(X[:, t:t + 1], state)
    np.testing.assert_allclose(step_out[:, -1], outputs[:, -1], atol=1e-12)
    # and the cell cannot change under warm_start
    with pytest.raises(ValueError, match="cell changed"):
        model.set_params(warm_start=True, cell="lstm").fit(X, y)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_torch_reproduces_a_fitted_estimator(cell, dtype, torch):
    """weights_ of a fitted 2-layer GRU / RNN classifier, loaded into torch.nn.GRU / RNN."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6, 3)).astype(dtype)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    model = LSTMClassifier((5, 5), cell=cell, max_iter=3, dtype=dtype, random_state=0).fit(X, y)
    w = model.weights_
    module = (torch.nn.GRU if cell == "gru" else torch.nn.RNN)(
        3, 5, num_layers=2, batch_first=True, dtype={np.float32: torch.float32,
                                                     np.float64: torch.float64}[dtype])
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(torch.from_numpy(w[name].copy()))
        h, _ = module(torch.from_numpy(X))                     # (N, T, H)
        logits = h[:, -1] @ torch.from_numpy(w["head.weight"].copy()).T + torch.from_numpy(
            w["head.bias"].copy())
        proba = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(model.predict_proba(X), proba, rtol=0,
                               atol={np.float32: 1e-5, np.float64: 1e-10}[dtype])


@pytest.mark.parametrize("bad, named", [(dict(cell="lstmx"), "cell"),
                                        (dict(cell="rnn", nonlinearity="relu"), "nonlinearity")])
def test_bad_cell_parameters_are_named(bad, named):
    with pytest.raises(ValueError, match=f"^{named} must be"):
        LSTMRegressor(**bad).fit(np.zeros((4, 3, 1)), np.zeros(4))


# ---- bidirectional layers in the estimators ----------------------------------------------

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_bidirectional_sees_the_future():
    """y[t] = x[t+1]: out of reach for a forward-only model, easy both ways round."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 8, 1))
    y = np.concatenate([X[:, 1:, 0], np.zeros((256, 1))], axis=1)
    X_test = rng.standard_normal((100, 8, 1))
    y_test = np.concatenate([X_test[:, 1:, 0], np.zeros((100, 1))], axis=1)
    scores = {}
    for bidirectional in (False, True):
        model = LSTMRegressor(8, cell="gru", bidirectional=bidirectional, output="sequence",
                              learning_rate_init=1e-2, batch_size=32, max_iter=30,
                              random_state=0).fit(X, y)
        scores[bidirectional] = model.score(X_test, y_test)
    assert scores[True] > 0.7 and scores[False] < 0.1, scores


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_reproduces_a_bidirectional_estimator_on_several_lengths(cell, tmp_path, torch):
    """Fitted on a list of sequences of several lengths: torch's packed sequences
    (whose reverse pass starts at each sequence's last step) give our predictions,
    also after save and load; stepping is refused."""
    import pickle

    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 30)
    X = [rng.standard_normal((L, 3)) for L in lengths]
    y = np.array([x[0, 0] - x[-1, 1] for x in X])
    model = LSTMRegressor((5, 4), cell=cell, bidirectional=True, max_iter=3, dtype="float64",
                          random_state=0).fit(X, y)
    w = model.weights_
    assert w["weight_ih_l1_reverse"].shape == (w["weight_hh_l1"].shape[0], 2 * 5)
    assert w["head.weight"].shape == (1, 2 * 4)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](
        3, 5, num_layers=1, bidirectional=True, batch_first=True, dtype=torch.float64)
    top = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](
        10, 4, num_layers=1, bidirectional=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for layer, mod in ((0, module), (1, top)):
            for name, param in mod.named_parameters():
                param.copy_(torch.from_numpy(w[name.replace("_l0", f"_l{layer}")].copy()))
        padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(x) for x in X],
                                                 batch_first=True)
        packed = torch.nn.utils.rnn.pack_padded_sequence(padded, torch.from_numpy(lengths),
                                                         batch_first=True, enforce_sorted=False)
        mid, _ = module(packed)
        _, h_n = top(mid)
        h_n = h_n[0] if cell == "lstm" else h_n                 # (2, N, 4): forward, reverse
        features = torch.cat([h_n[0], h_n[1]], dim=1)
        pred = features @ torch.from_numpy(w["head.weight"].copy()).T + torch.from_numpy(
            w["head.bias"].copy())
    np.testing.assert_allclose(model.predict(X), pred[:, 0].numpy(), rtol=0, atol=1e-10)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(X), model.predict(X))
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(load(tmp_path / "m.npz").predict(X), model.predict(X))
    with pytest.raises(ValueError, match="bidirectional"):
        model.step(X[0][None])
    with pytest.raises(ValueError, match="bidirectional"):
        LSTMRegressor(4, bidirectional=True, tbptt_steps=2).fit(np.zeros((4, 6, 1)), np.zeros(4))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_reproduces_a_float32_estimator_on_tiles_per_step(cell, torch):
    """A float32 model of 128 units fitted on sequences of several lengths: its
    time loops (BLAS loops, the LSTM's for a padded batch) run their products per
    step on a packed W_hh (_blas.step_matrix), in fit and in predict, and torch's
    packed sequences give its predictions to float32's rounding."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 12, 48)
    X = [rng.standard_normal((L, 3)).astype(np.float32) for L in lengths]
    y = np.array([x[0, 0] - x[-1, 1] for x in X])
    model = LSTMRegressor(128, cell=cell, max_iter=2, batch_size=16, random_state=0,
                          dtype="float32").fit(X, y)
    w = model.weights_
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](
        3, 128, batch_first=True)
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(torch.from_numpy(w[name].copy()))
        padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(x) for x in X],
                                                 batch_first=True)
        packed = torch.nn.utils.rnn.pack_padded_sequence(padded, torch.from_numpy(lengths),
                                                         batch_first=True, enforce_sorted=False)
        _, h_n = module(packed)
        h_n = h_n[0] if cell == "lstm" else h_n                 # (1, N, 128)
        pred = h_n[0] @ torch.from_numpy(w["head.weight"].copy()).T + torch.from_numpy(
            w["head.bias"].copy())
    np.testing.assert_allclose(model.predict(X), pred[:, 0].numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_kernels_release_the_gil(cell):
    """Another thread runs while the forward and backward kernels do (see the Ticker
    in test_reliability.py: it only advances while the GIL is released). Buffers are
    allocated first, so only the kernel calls are timed."""
    from test_reliability import Ticker, one_core_left, ticks_during

    T, N, D, H = 100, 64, 32, 128
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(
        "gru" if cell == "gru" else "rnn_tanh", T, N, D, H, np.float32, zero_state=True)
    w_ih, w_hh = 0.1 * w_ih, 0.1 * w_hh
    G = w_hh.shape[0]
    h, dh = np.empty((T, N, H), np.float32), np.ones((T, N, H), np.float32)
    dh0, dx = np.empty_like(h0), np.empty_like(x)
    dw_ih, dw_hh, db_ih, db_hh = (np.zeros_like(a) for a in (w_ih, w_hh, b_ih, b_hh))
    g1, g2, g3, g4 = (np.empty((T, N, G), np.float32) for _ in range(4))
    if cell == "gru":
        def forward():
            _cells.gru_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, g1, g2, h)

        def backward():
            _cells.gru_layer_backward(x, w_ih, w_hh, h0, g1, g2, h, dh, dh0, g3, g4, dx,
                                      dw_ih, dw_hh, db_ih, db_hh)
    else:
        def forward():
            _cells.rnn_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, h)

        def backward():
            _cells.rnn_layer_backward(x, w_ih, w_hh, h0, h, dh, dh0, g3, dx, dw_ih, dw_hh, db_ih)
    with one_core_left(), Ticker() as ticker:
        assert ticks_during(ticker, forward) > 0
        assert ticks_during(ticker, backward) > 0


@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_dx_gives_the_same_weight_gradients(cell):
    T, N, D, H = 4, 3, 2, 5
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, T, N, D, H, np.float64)
    h, saved = kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0)
    dh = np.random.default_rng(2).standard_normal((T, N, H))
    G = w_hh.shape[0]
    results = []
    for dx in (np.empty_like(x), None):
        grads = [np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros(G), np.zeros(G)]
        dh0 = np.empty((N, H))
        if cell == "gru":
            _cells.gru_layer_backward(x, w_ih, w_hh, h0, *saved, h, dh.copy(), dh0,
                                      np.empty((T, N, G)), np.empty((T, N, G)), dx, *grads)
        else:
            _cells.rnn_layer_backward(x, w_ih, w_hh, h0, h, dh.copy(), dh0, np.empty((T, N, H)),
                                      dx, *grads[:3], cell == "rnn_sigmoid")
        results.append(grads + [dh0])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("T", [0, 1, 5])
@pytest.mark.parametrize("cell", CELLS)
def test_backward_without_dh0_gives_the_same_other_gradients(cell, T, dtype):
    """dh0=None skips what only dL/dh0 needs; every other output is as it was."""
    N, D, H = 3, 2, 5
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, T, N, D, H, dtype)
    h, saved = kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0)
    dh = np.random.default_rng(2).standard_normal((T, N, H)).astype(dtype)
    with_dh0 = kernel_backward(cell, x, w_ih, w_hh, h0, h, saved, dh)
    without = kernel_backward(cell, x, w_ih, w_hh, h0, h, saved, dh, with_dh0=False)
    assert without[5] is None and np.isfinite(with_dh0[5]).all()
    for name, a, b in zip(("dx", "dW_ih", "dW_hh", "db_ih", "db_hh"), with_dh0, without):
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_zero_steps(cell):
    """T = 0: nothing to compute, and the gradient on h0 is zero."""
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, 0, 2, 3, 4, np.float64)
    h, saved = kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0)
    assert h.shape == (0, 2, 4)
    dx, dw_ih, dw_hh, db_ih, db_hh, dh0 = kernel_backward(cell, x, w_ih, w_hh, h0, h, saved,
                                                          np.zeros((0, 2, 4)))
    np.testing.assert_array_equal(dh0, 0)
    for g in (dw_ih, dw_hh, db_ih, db_hh):
        np.testing.assert_array_equal(g, 0)


# ---- property-based: random shapes, scales up to saturation --------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def cell_problems(draw):
    cell = draw(st.sampled_from(CELLS))
    T, N, D, H = (draw(st.integers(1, 6)) for _ in range(4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    x_scale = draw(st.sampled_from([1e-3, 0.3, 1.0, 5.0, 1e4]))
    x, w_ih, w_hh, b_ih, b_hh, h0 = random_layer(cell, T, N, D, H, dtype,
                                                 seed=draw(st.integers(0, 2**32 - 1)),
                                                 zero_state=draw(st.booleans()))
    return cell, dtype, x_scale <= 5.0, ((x * x_scale).astype(dtype), w_ih, w_hh, b_ih, b_hh,
                                         np.tanh(h0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cell_problems())
def test_kernels_agree_with_the_reference_anywhere(problem):
    cell, dtype, moderate, (x, w_ih, w_hh, b_ih, b_hh, h0) = problem
    T, N, D = x.shape
    H = w_hh.shape[1]
    h, saved = kernel_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0)
    assert np.isfinite(h).all() and np.abs(h).max() <= 1.0
    h_ref, cache = ref_forward(cell, *as64(x, w_ih, w_hh, b_ih, b_hh, h0))
    atol = {np.float32: 1e-4, np.float64: 1e-10}[dtype]
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=atol)
    dh = np.random.default_rng(0).standard_normal((T, N, H)).astype(dtype)
    got = kernel_backward(cell, x, w_ih, w_hh, h0, h, saved, dh)
    expected = ref_backward(cell, *as64(dh, w_ih, w_hh), cache)
    for name, a, b in zip(("dx", "dW_ih", "dW_hh", "db_ih", "db_hh", "dh0"), got, expected):
        assert np.isfinite(a).all(), name
        # float32 rounds saturated derivatives (1 - s) to 0 where float64 keeps 1e-9:
        # times inputs of 1e4 no tolerance absorbs that, so compare float32 when moderate
        if dtype is np.float64 or moderate:
            scale = max(1.0, float(np.abs(b).max(initial=0.0)))
            np.testing.assert_allclose(a, b, rtol=0, atol=atol * scale, err_msg=name)
