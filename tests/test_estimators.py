"""The estimators: learning, the sklearn protocol, bad input, reproducibility."""
import pickle
import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from conftest import reference_predict
from fastlstm import LSTMClassifier, LSTMRegressor
from fastlstm._estimators import _generator
from fastlstm._network import LSTMNetwork
from fastlstm.datasets import binary_addition, bits_to_int, make_windows, noisy_sine

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def small_regression(n=60, T=5, D=2, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D)).astype(dtype)
    return X, X[:, :, 0].sum(axis=1)


def small_classification(n=60, T=5, D=2, seed=0):
    X, s = small_regression(n, T, D, seed)
    return X, np.where(s > 0, "up", "down")


# ---- learning -----------------------------------------------------------------

def test_noisy_sine_forecast_beats_mse_0015():
    X, y = make_windows(noisy_sine(1000, noise=0.1), time_step=10)
    split = 800
    model = LSTMRegressor(hidden_layer_sizes=(50,), batch_size=32, max_iter=60, random_state=0)
    model.fit(X[:split], y[:split])
    mse = np.mean((model.predict(X[split:]) - y[split:]) ** 2)
    assert mse < 0.015
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    # ten steps ahead from test windows, each prediction fed back: closer to the clean
    # sine than repeating the last value (a forecast carrying the state past the 10
    # steps it was fitted on read 0.37 against 0.055 here, sliding 0.035)
    starts = np.arange(split, 970, 5)
    truth = np.sin(np.linspace(0, 50, 1000))[starts[:, None] + 10 + np.arange(10)]
    forecast_mse = np.mean((model.forecast(X[starts], 10) - truth) ** 2)
    last_value_mse = np.mean((X[starts, -1] - truth) ** 2)
    assert forecast_mse < 0.75 * last_value_mse


@pytest.mark.parametrize("estimator", [LSTMClassifier, LSTMRegressor])
def test_binary_addition_exact_on_held_out_pairs(estimator):
    X, y, a, b = binary_addition(8)
    train, test = slice(0, 4096), slice(4096, None)
    model = estimator(hidden_layer_sizes=(16,), output="sequence", learning_rate_init=1e-2,
                      batch_size=64, max_iter=60, random_state=0)
    model.fit(X[train], y[train])
    pred = model.predict(X[test])
    if estimator is LSTMRegressor:
        pred = (pred > 0.5).astype(int)
    assert pred.shape == y[test].shape
    np.testing.assert_array_equal(bits_to_int(pred), a[test] + b[test])


def test_multiclass_sequence_classification_learns():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 8, 3)).astype(np.float32)
    y = np.argmax(X.sum(axis=1), axis=1)            # which feature summed largest: 3 classes
    model = LSTMClassifier(hidden_layer_sizes=(16,), learning_rate_init=1e-2, max_iter=60,
                           batch_size=32, random_state=0).fit(X[:240], y[:240])
    assert model.score(X[240:], y[240:]) > 0.8
    proba = model.predict_proba(X[240:])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X[240:]))


def test_sgd_solver_and_stacked_dropout_train():
    X, y = small_regression(200)
    for params in [dict(solver="sgd", learning_rate_init=0.05),
                   dict(hidden_layer_sizes=(12, 12), dropout=0.2, learning_rate_init=1e-2)]:
        model = LSTMRegressor(max_iter=30, random_state=0, **params).fit(X, y)
        assert model.loss_curve_[-1] < 0.5 * model.loss_curve_[0], params


# ---- the sklearn protocol -----------------------------------------------------

def test_fitted_attributes_and_shapes():
    X, y = small_regression()
    model = LSTMRegressor(hidden_layer_sizes=(4, 3), max_iter=2, random_state=0).fit(X, y)
    assert model.n_iter_ == 2 and len(model.loss_curve_) == 2
    assert model.n_features_in_ == 2 and model.n_timesteps_in_ == 5
    assert model.predict(X).shape == (60,)
    assert model.weights_["weight_ih_l0"].shape == (16, 2)
    assert model.weights_["weight_hh_l1"].shape == (12, 3)
    assert model.weights_["head.weight"].shape == (1, 3)
    two_targets = LSTMRegressor(max_iter=1, hidden_layer_sizes=3).fit(X, np.c_[y, -y])
    assert two_targets.predict(X).shape == (60, 2)


def test_two_d_x_is_univariate_sequences():
    X, y = small_regression(D=1)
    m3 = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    m2 = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X[:, :, 0], y)
    np.testing.assert_array_equal(m3.predict(X), m2.predict(X[:, :, 0]))
    assert m2.n_features_in_ == 5  # sklearn's convention: X.shape[1]


def test_same_seed_same_weights_and_predictions():
    X, y = small_regression()
    fits = [LSTMRegressor(hidden_layer_sizes=(6,), dropout=0.3, max_iter=3, random_state=7).fit(X, y)
            for _ in range(2)]
    np.testing.assert_array_equal(fits[0].network_.params, fits[1].network_.params)
    np.testing.assert_array_equal(fits[0].predict(X), fits[1].predict(X))
    other = LSTMRegressor(hidden_layer_sizes=(6,), max_iter=3, random_state=8).fit(X, y)
    assert not np.array_equal(other.network_.params, fits[0].network_.params)


def test_float32_by_default_float64_on_request():
    X, y = small_regression()
    X64 = X.astype(np.float64)
    model = LSTMRegressor(max_iter=1, hidden_layer_sizes=2).fit(X64, y)
    assert model.network_.dtype == np.float32
    # predictions in the wider of the two types: float64 for a float64 X, the same
    # values as for the float32 X it rounds to
    assert model.predict(X).dtype == np.float32
    np.testing.assert_array_equal(model.predict(X64), model.predict(X).astype(np.float64))
    outputs, state = model.step(X64)
    assert outputs.dtype == np.float64 and state[0][0].dtype == np.float32
    assert model.step(X)[0].dtype == np.float32
    univariate = LSTMRegressor(max_iter=1, hidden_layer_sizes=2).fit(X64[:, :, 0], y)
    assert univariate.forecast(X64[:, :, 0], 2).dtype == np.float64
    assert univariate.forecast(X[:, :, 0], 2).dtype == np.float32
    requested = LSTMRegressor(max_iter=1, hidden_layer_sizes=2, dtype="float64").fit(X, y)
    assert requested.network_.dtype == np.float64 and requested.predict(X).dtype == np.float64
    follows = LSTMRegressor(max_iter=1, hidden_layer_sizes=2, dtype=None)
    assert follows.fit(X64, y).network_.dtype == np.float64
    assert follows.fit(X, y).network_.dtype == np.float32
    ints = LSTMRegressor(max_iter=1, hidden_layer_sizes=2, dtype=None).fit((X * 10).astype(int), y)
    assert ints.network_.dtype == np.float32
    classifier = LSTMClassifier(max_iter=1, hidden_layer_sizes=2).fit(X64, y > 0)
    proba = classifier.predict_proba(X64)
    assert classifier.network_.dtype == np.float32 and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-14)   # softmax in float64
    np.testing.assert_allclose(proba, classifier.predict_proba(X), rtol=1e-6)
    assert classifier.step(X64)[0].dtype == np.float64


def test_dropout_is_off_at_predict():
    """predict runs the network as the NumPy reference does, with no dropout."""
    X, y = small_regression()
    model = LSTMRegressor(hidden_layer_sizes=(8, 8), dropout=0.5, max_iter=2, dtype="float64",
                          random_state=0).fit(X, y)
    np.testing.assert_allclose(model.predict(X), reference_predict(model, X)[:, 0],
                               rtol=1e-10, atol=1e-12)


def test_predict_in_chunks_equals_one_batch(monkeypatch):
    import fastlstm._estimators as est_module

    X, y = small_regression(50)
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=1, random_state=0).fit(X, y)
    whole = model.predict(X)
    monkeypatch.setattr(est_module, "_PREDICT_CHUNK_BYTES", 1)  # one sample per chunk
    # one sample runs the single-sequence loop and its cell, a batch the prediction
    # cell (c and h only): the same sums, rounded apart by a few float32 ulp of h
    np.testing.assert_allclose(model.predict(X), whole, rtol=1e-5, atol=1e-6)


def test_classifier_labels_of_any_type():
    X, y = small_classification()
    model = LSTMClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(X, y)
    assert list(model.classes_) == ["down", "up"]
    assert set(model.predict(X)) <= {"down", "up"}
    codes = np.where(y == "up", 10, -3)
    model = LSTMClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(X, codes)
    assert list(model.classes_) == [-3, 10] and model.predict(X).dtype.kind == "i"


def test_pipeline_gridsearch_clone():
    X, y = small_regression(80)
    flat = FunctionTransformer(lambda Z: Z * 0.5)
    pipe = Pipeline([("scale", flat), ("lstm", LSTMRegressor(max_iter=3, random_state=0))])
    search = GridSearchCV(pipe, {"lstm__hidden_layer_sizes": [(2,), (8,)]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["lstm__hidden_layer_sizes"] in [(2,), (8,)]
    assert search.predict(X).shape == (80,)
    model = LSTMClassifier(hidden_layer_sizes=(3,), dropout=0.1, random_state=4)
    copy = clone(model)
    assert copy.get_params() == model.get_params() and not hasattr(copy, "network_")


@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_pickle_round_trip_predicts_identically(estimator):
    X, y = small_classification() if estimator is LSTMClassifier else small_regression()
    model = estimator(hidden_layer_sizes=(5, 4), max_iter=2, random_state=0).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.predict(X), model.predict(X))
    restored.weights_["head.bias"][0] += 100  # views still write the restored buffer
    assert not np.array_equal(restored.predict(X), model.predict(X))


def test_verbose_prints_progress(capsys):
    X, y = small_regression()
    LSTMRegressor(hidden_layer_sizes=(3,), max_iter=2, verbose=1).fit(X, y)
    captured = capsys.readouterr()
    assert re.search(r"Epoch 2 \[#+\] loss = [0-9.]+, [0-9,]+ samples/s", captured.err)
    assert captured.out == ""
    LSTMRegressor(hidden_layer_sizes=(3,), max_iter=2, verbose=0).fit(X, y)
    assert capsys.readouterr() == ("", "")


def test_progress_redrawn_in_place_leaves_no_stale_characters(monkeypatch):
    import io
    import fastlstm._estimators as est_module

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err = Terminal()
    monkeypatch.setattr(est_module.sys, "stderr", err)
    progress = est_module._Progress(1, 1, 1000)
    progress.last_draw = -1.0                                  # draw now
    progress.update(10, 123456.789)                            # a long line in place
    progress.close(0.5)
    drawn, closed = err.getvalue().split("\r")
    assert "batch loss 1.2346e+05" in drawn and closed.rstrip(" \n").endswith("samples/s")
    assert len(closed.rstrip("\n")) >= len(drawn)             # covers what was there


def test_max_iter_reached_warns():
    X, y = small_regression()
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1, tol=0).fit(X, y)


def test_divergence_stops_and_keeps_finite_weights():
    X, y = small_regression()
    y = y * 1e30
    model = LSTMRegressor(hidden_layer_sizes=(4,), solver="sgd", learning_rate_init=1e3,
                          max_iter=20, random_state=0)
    with pytest.warns(RuntimeWarning, match="diverged"):
        model.fit(X, y)
    assert np.isfinite(model.network_.params).all()
    assert model.n_iter_ < 20


# ---- bad input ----------------------------------------------------------------

def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError):
        LSTMRegressor().predict(np.zeros((2, 3, 1)))
    with pytest.raises(NotFittedError):
        LSTMClassifier().predict_proba(np.zeros((2, 3, 1)))


@pytest.mark.parametrize("X, message", [
    (np.zeros(5), "2-D .* or 3-D"),
    (np.zeros((4, 3, 2, 1)), "4 dimensions"),
    (np.full((4, 3, 1), np.nan), "NaN"),
    (np.full((4, 3, 1), np.inf), "infinity"),
    (np.zeros((0, 3, 1)), "0 sample"),
    (np.zeros((4, 0, 1)), "at least one time step"),
    (np.zeros((4, 3, 0)), "0 features"),
    (np.array([[1, [2, 3]], [1, 2]], dtype=object), "ragged|sequence"),
    (np.zeros((4, 3), dtype=complex), "[Cc]omplex"),
    ("abc", "string"),
])
def test_bad_X_is_named(X, message):
    y = np.zeros(len(X) if hasattr(X, "__len__") and np.ndim(X) else 4)
    with pytest.raises((ValueError, TypeError), match=message):
        LSTMRegressor(max_iter=1).fit(X, y)


def test_bad_y_and_length_mismatch():
    X, y = small_regression()
    with pytest.raises(ValueError, match="different numbers of samples"):
        LSTMRegressor(max_iter=1).fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        LSTMRegressor(max_iter=1).fit(X, np.where(y > 0, np.nan, y))
    with pytest.raises(ValueError, match="one class"):
        LSTMClassifier(max_iter=1).fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="output='sequence'"):
        LSTMRegressor(max_iter=1, output="sequence").fit(X, y)


def test_wrong_shape_at_predict_is_named():
    X, y = small_regression()
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but LSTMRegressor is expecting 2"):
        model.predict(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="time steps"):
        model.predict(np.zeros((2, 6, 2)))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(np.full((2, 5, 2), np.nan))


@pytest.mark.parametrize("params, name", [
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=()), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=(-3, 4)), "hidden_layer_sizes"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(learning_rate_init=0), "learning_rate_init"),
    (dict(batch_size=0), "batch_size"),
    (dict(max_iter=0), "max_iter"),
    (dict(solver="lbfgs"), "solver"),
    (dict(output="all"), "output"),
    (dict(alpha=-1), "alpha"),
    (dict(clip_grad_norm=0), "clip_grad_norm"),
    (dict(dtype="int32"), "dtype"),
])
def test_bad_parameters_are_named(params, name):
    X, y = small_regression()
    with pytest.raises(ValueError, match=name):
        LSTMRegressor(**params).fit(X, y)


@pytest.mark.parametrize("n_sequences", [1, 3])
def test_per_step_predictions_are_new_contiguous_arrays(n_sequences):
    """predict hands out arrays of its own: C-contiguous, and not overwritten by the
    next call (one sequence's per-step outputs are returned without a copy)."""
    X, y, _, _ = binary_addition(n_bits=6)                    # (1024, 6, 2), (1024, 6)
    model = LSTMRegressor(hidden_layer_sizes=(8,), output="sequence", max_iter=1,
                          random_state=0).fit(X, y)
    first = model.predict(X[:n_sequences])
    kept = first.copy()
    assert first.flags.c_contiguous and first.shape == (n_sequences, 6)
    model.predict(X[10:10 + n_sequences])
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, model.predict(X[:n_sequences]))


@pytest.mark.parametrize("cell, H", [("lstm", 40), ("gru", 30), ("rnn", 24)])
def test_recurrent_weights_start_orthonormal_as_the_qr_of_a_gaussian(cell, H):
    """weight_hh starts as Q of the QR of a standard Gaussian (G, H) with R's
    diagonal positive, drawn where fit draws it: checked against numpy's
    Householder QR of the same draw, for the tall matrices (Cholesky QR) and the
    square one (RNN)."""
    from fastlstm._estimators import _generator
    from fastlstm._network import GATES, LSTMNetwork
    net = LSTMNetwork(3, (H,), 1, dtype=np.float64, cell=cell)
    net.initialize(_generator(0))
    w_hh = net.p["weight_hh_l0"]
    np.testing.assert_allclose(w_hh.T @ w_hh, np.eye(H), atol=1e-12)
    rng = _generator(0)
    rng.uniform(size=net.p["weight_ih_l0"].shape)         # the draw before it
    q, r = np.linalg.qr(rng.standard_normal((GATES[cell] * H, H)))
    np.testing.assert_allclose(w_hh, q * np.sign(np.diag(r)), rtol=0, atol=1e-12)


def test_assigning_to_weights_changes_the_network():
    X, y = small_regression()
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=1, random_state=0).fit(X, y)
    other = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=1).fit(X, y)
    for name in model.weights_:                     # torch's names, as loaded from torch
        model.weights_[name] = other.weights_[name].astype(np.float64)
    np.testing.assert_array_equal(model.network_.params, other.network_.params)
    np.testing.assert_array_equal(model.predict(X), other.predict(X))
    assert dict(model.weights_).keys() == set(model.network_.p) and len(model.weights_) == 6
    with pytest.raises(ValueError, match=r"weight_hh_l0 has shape \(16, 4\)"):
        model.weights_["weight_hh_l0"] = np.zeros((4, 16))
    for bad in ([np.nan], [1e40]):              # 1e40: inf in the network's float32
        with pytest.raises(ValueError, match="NaN or inf in the network's float32"):
            model.weights_["head.bias"] = bad
    with pytest.raises(KeyError, match="not a parameter"):
        model.weights_["weight_hh_l1"] = np.zeros((16, 4))
    np.testing.assert_array_equal(model.network_.params, other.network_.params)


def test_save_refuses_parameters_load_would_refuse(tmp_path):
    X, y = small_regression()
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=1, random_state=0).fit(X, y)
    model.weights_["head.bias"][...] = np.inf       # through the view: not checked
    with pytest.raises(ValueError, match="NaN or inf.*nothing was saved"):
        model.save(tmp_path / "m.fastlstm")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("solver, extra", [
    ("adam", dict(alpha=0.0)),
    ("adam", dict(alpha=0.3)),
    ("sgd", dict(momentum=0.9, nesterovs_momentum=True, alpha=0.0)),
    ("sgd", dict(momentum=0.9, nesterovs_momentum=False, alpha=0.3)),
    ("adam", dict(alpha=0.3, clip_grad_value=0.05)),
    ("sgd", dict(momentum=0.9, nesterovs_momentum=True, alpha=0.0, clip_grad_value=0.05,
                 clip_grad_norm=0.08)),
])
def test_three_full_batch_updates_follow_the_textbook_rules(solver, extra):
    """Three updates rebuilt by hand from the network's forward and backward:
    Adam with both bias corrections, SGD with (Nesterov) momentum, MLP's L2 on
    the weights only, alpha / batch weight, and each component clipped, then
    the whole gradient's norm."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 4, 2))
    y = X[:, :, 0].sum(axis=1)
    lr, alpha = 0.01, extra["alpha"]
    model = LSTMRegressor((5,), solver=solver, learning_rate_init=lr, batch_size=len(X),
                          shuffle=False, max_iter=3, tol=0, dtype="float64", random_state=0,
                          **extra).fit(X, y)
    net = LSTMNetwork(2, (5,), 1, dtype=np.float64)
    net.initialize(_generator(0))
    x_tm = np.ascontiguousarray(X.transpose(1, 0, 2))                 # (T, N, D)
    m, v = np.zeros_like(net.params), np.zeros_like(net.params)
    b1, b2, eps, momentum = 0.9, 0.999, 1e-8, extra.get("momentum")
    for t in range(1, 4):
        out, tape = net.forward(x_tm)
        g = net.backward(tape, (out - y[:, None]) / len(X)).copy()   # half MSE's gradient
        g[:net.n_weights] += alpha / len(X) * net.params[:net.n_weights]
        if "clip_grad_value" in extra:
            clipped = np.clip(g, -extra["clip_grad_value"], extra["clip_grad_value"])
            assert not np.array_equal(clipped, g)                   # the bound bites
            g = clipped
        if "clip_grad_norm" in extra:
            assert np.linalg.norm(g) > extra["clip_grad_norm"]
            g *= extra["clip_grad_norm"] / (np.linalg.norm(g) + 1e-6)   # as torch's
        if solver == "adam":
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            net.params -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        else:
            m = momentum * m - lr * g
            net.params += momentum * m - lr * g if extra["nesterovs_momentum"] else m
    np.testing.assert_allclose(model.network_.params, net.params, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_initial_weights_are_kerass(cell):
    """Biases 0 but the LSTM's forget gate's 1; orthonormal recurrent columns;
    Glorot-uniform input and head weights."""
    X, y = small_regression(20)
    model = LSTMRegressor((6,), cell=cell, max_iter=1, learning_rate_init=1e-300,
                          dtype="float64", random_state=0).fit(X, y)
    w = model.weights_
    forget = np.zeros_like(w["bias_ih_l0"])
    if cell == "lstm":
        forget[6:12] = 1.0                                    # gates i, f, g, o
    np.testing.assert_allclose(w["bias_ih_l0"], forget, atol=1e-250)
    np.testing.assert_allclose(w["bias_hh_l0"], 0, atol=1e-250)
    np.testing.assert_allclose(w["weight_hh_l0"].T @ w["weight_hh_l0"], np.eye(6), atol=1e-12)
    G, D = w["weight_ih_l0"].shape
    assert np.abs(w["weight_ih_l0"]).max() <= np.sqrt(6 / (G + D))
    assert np.abs(w["weight_ih_l0"]).max() > 0.5 * np.sqrt(6 / (G + D))


def test_shuffle_draws_the_order_from_random_state():
    """The same random_state, the same order; without shuffle, another result
    from the same initial weights."""
    X, y = small_regression(40)
    params = dict(hidden_layer_sizes=(4,), batch_size=8, max_iter=2, dtype="float64")

    def trained(**more):
        return LSTMRegressor(**params, **more).fit(X, y).network_.params

    shuffled = trained(shuffle=True, random_state=0)
    np.testing.assert_array_equal(trained(shuffle=True, random_state=0), shuffled)
    assert not np.array_equal(trained(shuffle=False, random_state=0), shuffled)
