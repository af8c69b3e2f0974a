"""Every kind of bad input gets a TypeError/ValueError that names the argument and
the problem, at fit and at predict, never a crash or an error from deep inside."""
import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from fastlstm import LSTMClassifier, LSTMRegressor, _kernels
from fastlstm._validation import check_sample_weight

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RNG = np.random.default_rng(0)
X = RNG.standard_normal((10, 4, 2)).astype(np.float32)
Y = X[:, 0, 0].astype(np.float64)
LABELS = np.array(["a", "b"] * 5)


def fit_reg(X_=X, y=Y, **params):
    return LSTMRegressor(hidden_layer_sizes=3, max_iter=1, **params).fit(X_, y)


def fit_clf(X_=X, y=LABELS, **params):
    return LSTMClassifier(hidden_layer_sizes=3, max_iter=1, **params).fit(X_, y)


@pytest.mark.parametrize("bad_X, error, message", [
    (None, TypeError, "X is required"),
    ("abc", TypeError, "X must be an array of numbers, got a string"),
    ({"a": 1}, TypeError, "X must be an array of numbers, got a dict"),
    (3.0, ValueError, "X must be 2-D .* got a scalar"),
    (np.zeros(8), ValueError, "X must be 2-D .* 1 dimensions"),
    (np.zeros((2, 3, 1, 1)), ValueError, "X must be 2-D .* 4 dimensions"),
    # (lists of sequences of several lengths are valid input: see test_sklearn.py)
    ([[[1, 2], [3, 4]], [[1]]], ValueError, "different numbers of features"),
    ([np.ones((3, 2)), np.ones((5, 3)), np.ones((4, 2))], ValueError,
     r"different numbers of features: \[2, 3\] \(X\[1\] has 3, X\[0\] 2\)"),
    ([np.ones((3, 0)), np.ones((4, 0))], ValueError, "sequences of X have 0 features per time step"),
    ([[1, [2, 3]], [1, 2]], ValueError, "X is ragged"),
    # a list of sequences with something else among them: named
    ([np.zeros((3, 1)), None], TypeError, r"X\[1\] is required, got None"),
    ([np.zeros((3, 1)), 5.0], ValueError, r"X\[1\] must be \(n_timesteps, n_features\), got 0-D"),
    # (a 1-D object array of sequences is a list of them: several lengths are fine)
    (np.array([[1, [2, 3]], [1, 2]], dtype=object), ValueError, "X is ragged"),
    (np.array([["a", "b"], ["c", "d"]]), TypeError, "X holds strings"),
    (np.array([["1", "2"], ["3", "4"]]), TypeError, "X holds strings"),  # no silent parsing
    (np.array([[1, None], [3, 4]], dtype=object), ValueError, "X contains NaN"),
    (np.array([[1, "a"], [3, 4]], dtype=object), ValueError, "X must hold numbers"),
    (np.zeros((2, 3, 1), dtype=complex), ValueError, "X is complex"),
    (np.zeros((2, 3, 1), dtype="datetime64[s]"), TypeError, "X must hold numbers, got dtype datetime"),
    (np.zeros((2, 3), dtype=[("a", "f4")]), TypeError, "X must hold numbers"),
    (np.zeros((0, 3, 1)), ValueError, "X has 0 samples"),
    (np.zeros((2, 0, 1)), ValueError, r"X has sequences of length 0: need at least one time "
                                      r"step \(shape \(2, 0, 1\)\)$"),
    (np.zeros((2, 0)), ValueError, "X has sequences of length 0"),
    (np.zeros((2, 3, 0)), ValueError, "X has 0 features"),
    (np.full((2, 3, 1), np.nan), ValueError, "X contains NaN"),
    (np.full((2, 3, 1), -np.inf), ValueError, "X contains infinity"),
    (np.full((2, 3, 1), 1e300), ValueError, "X contains infinity, or values too large for float32"),
])
def test_bad_X_at_fit(bad_X, error, message):
    with pytest.raises(error, match=message):
        LSTMRegressor(max_iter=1, dtype="float32").fit(bad_X, np.zeros(2))
    with pytest.raises(error, match=message):
        LSTMClassifier(max_iter=1, dtype="float32").fit(bad_X, [0, 1])


def test_sparse_X_is_refused_by_name():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="X is a sparse matrix"):
        fit_reg(sparse.csr_matrix(np.ones((10, 4))))


def test_pandas_na_is_named_as_a_missing_value():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame({"a": pd.array([1.0, None, 3.0, 4.0], dtype="Float64"), "b": [1.0] * 4})
    with pytest.raises(ValueError, match="X contains NaN"):
        LSTMRegressor(max_iter=1).fit(X, np.zeros(4))
    with pytest.raises(ValueError, match="y contains NaN"):
        LSTMRegressor(max_iter=1).fit(np.ones((4, 3)), pd.array([1.0, None, 2.0, 3.0],
                                                                  dtype="Float64"))


def test_float64_values_fine_in_float64():
    model = fit_reg(np.full((2, 3, 1), 1e300), np.zeros(2), dtype="float64")  # finite in float64
    assert model.network_.dtype == np.float64


@pytest.mark.parametrize("bad_y, error, message", [
    (None, ValueError, "requires y to be passed"),
    (3.0, ValueError, "y must be an array with one entry per sample, got a scalar"),
    ([], ValueError, "y is empty"),
    (np.zeros((10, 0)), ValueError, "y is empty"),
    (Y[:-1], ValueError, "different numbers of samples: 10 and 9"),
    (np.where(Y > 0, np.nan, Y), ValueError, "y contains NaN"),
    (np.full(10, np.inf), ValueError, "y contains infinity"),
    (np.full(10, 1e300), ValueError, "y contains infinity, or values too large for float32"),
    (np.array([None] * 10), ValueError, "y contains NaN"),
    (LABELS, TypeError, "y holds strings"),
    (np.zeros(10, dtype=complex), ValueError, "y is complex"),
    (np.zeros((10, 2, 2)), ValueError, "y must be 1-D .* or 2-D"),
    ([[1.0], [2.0, 3.0]] * 5, ValueError, "y is ragged"),
])
def test_bad_regression_targets(bad_y, error, message):
    with pytest.raises(error, match=message):
        fit_reg(y=bad_y)


@pytest.mark.parametrize("bad_y, error, message", [
    (None, ValueError, "requires y to be passed"),
    ("a", ValueError, "y must be an array with one label per sample, got a scalar"),
    ([], ValueError, "y is empty"),
    (LABELS[:-1], ValueError, "different numbers of samples"),
    (np.r_[np.nan, np.arange(9) % 2], ValueError, "y contains NaN"),
    (np.array(["a", None] * 5, dtype=object), ValueError, "y contains None"),
    (np.array([1.0, np.nan] * 5, dtype=object), ValueError, "y contains None, NaN"),
    (np.array(["a", 1] * 5, dtype=object), TypeError, "y mixes strings and numbers"),
    (np.zeros(10, dtype=complex), ValueError, "y is complex"),
    (np.zeros((10, 4)), ValueError, "y must be 1-D.*use output='sequence'$"),  # T = 4
    (np.zeros((10, 3)), ValueError, "y must be 1-D.*several labels per sample .* not supported"),
    (np.eye(3)[np.arange(10) % 3], ValueError,        # Keras's to_categorical labels
     r"y must be 1-D.*looks one-hot .*: pass the labels, y.argmax\(axis=-1\)$"),
    (np.zeros(10), ValueError, r"y has only one class .*classes=\[...\]"),
])
def test_bad_class_labels(bad_y, error, message):
    with pytest.raises(error, match=message):
        fit_clf(y=bad_y)


def test_sequence_targets_must_match_time_steps():
    with pytest.raises(ValueError, match="n_timesteps=4, got shape"):
        fit_clf(y=np.zeros((10, 3)), output="sequence")
    with pytest.raises(ValueError, match="n_timesteps=4, got shape"):
        fit_reg(y=np.zeros((10, 3)), output="sequence")
    with pytest.raises(ValueError, match=r"\(10, 4, 3\); it looks one-hot"):
        fit_clf(y=np.eye(3)[np.arange(40).reshape(10, 4) % 3], output="sequence")
    with pytest.raises(ValueError, match=r"\(10, 4, 1\); .* pass y\[\.\.\., 0\]$"):
        fit_clf(y=np.zeros((10, 4, 1), int), output="sequence")   # Keras's TimeDistributed


def test_tbptt_is_refused_on_sequences_of_several_lengths():
    X = [np.zeros((3, 2)), np.zeros((5, 2))]
    with pytest.raises(ValueError, match="tbptt_steps does not work with sequences of several "
                                         "lengths yet"):
        fit_reg(X, [1.0, 2.0], tbptt_steps=2)


def test_a_dataframe_column_of_sequences_is_pointed_to_as_a_series():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"seq": [np.ones((3, 2)), np.ones((4, 2))]})
    with pytest.raises(ValueError, match=r"ragged.*goes in as the column itself"):
        fit_reg(frame[["seq"]], [1.0, 2.0])
    assert fit_reg(frame["seq"], [1.0, 2.0]).n_features_in_ == 2


@pytest.mark.parametrize("dtype, big", [(np.float32, 3e38), (np.float64, 1.7e308),
                                        (np.float16, 6e4)])
@pytest.mark.parametrize("shape", [(2000, 3, 1), (1, 5, 1), (3, 4)])
def test_finiteness_check_finds_every_nan_and_inf(dtype, big, shape):
    """The finiteness check accepts finite values, the largest and their sums
    beyond the dtype's range too, and refuses one NaN, inf or -inf among them, in
    C and Fortran order (the compiled pass and np.isfinite)."""
    from fastlstm._validation import _check_finite
    compiled = dtype in (np.float32, np.float64)
    for values in (np.full(shape, big, dtype=dtype), np.full(shape, -big, dtype=dtype),
                   np.ones(shape, dtype=dtype)):
        _check_finite(values, "X")
        _check_finite(np.asfortranarray(values), "X")
        assert _kernels.all_finite(values) is (True if compiled else None)
        for bad, message in ((np.nan, "X contains NaN"), (np.inf, "X contains infinity"),
                             (-np.inf, "X contains infinity")):
            spoiled = values.copy()
            spoiled.flat[values.size // 2] = bad
            assert _kernels.all_finite(spoiled) is (False if compiled else None)
            with pytest.raises(ValueError, match=message):
                _check_finite(spoiled, "X")
            with pytest.raises(ValueError, match=message):
                _check_finite(np.asfortranarray(spoiled), "X")


@pytest.fixture(scope="module")
def fitted():
    return {"3d": fit_reg(), "2d": fit_reg(X[:, :, 0]), "clf": fit_clf(),
            "list": fit_reg([np.ones(3), np.ones(5)], [1.0, 2.0]), "3d1": fit_reg(X[:, :, :1])}


@pytest.mark.parametrize("model, bad_X, message", [
    ("3d", X[:, :, :1], "X has 1 features, but LSTMRegressor is expecting 2"),
    ("3d", X[:, :3], "X has 3 time steps, but LSTMRegressor was fitted on sequences of 4"),
    ("3d", X[:, :, 0], "X has 2 dimensions, but LSTMRegressor was fitted on 3-D input$"),
    ("3d1", X[:, :, 0], r"on 3-D input: for sequences of one feature, pass X\[\.\.\., None\]"),
    ("2d", X[:, :, :1], r"on 2-D input: for sequences of one feature, pass X\[\.\.\., 0\]"),
    ("list", np.ones((4, 9)), r"on 3-D input, a list of sequences: pass a list .*X\[\.\.\., "),
    ("2d", X, "X has 3 dimensions, but LSTMRegressor was fitted on 2-D input$"),
    ("2d", X[:, :3, 0], "X has 3 features, but LSTMRegressor is expecting 4"),
    ("3d", np.zeros((0, 4, 2)), "X has 0 samples"),
    ("3d", np.full((1, 4, 2), np.inf), "X contains infinity"),
    ("3d", np.full((1, 4, 2), np.nan), "X contains NaN"),
    ("3d", "abc", "got a string"),
    ("3d", [[[1, 2]] * 4, [[1, 2]] * 3], "time steps"),
    ("3d", X.astype(complex), "X is complex"),
    ("3d", np.zeros(8), "X must be 2-D"),
    ("clf", X[:, :, :1], "X has 1 features, but LSTMClassifier is expecting 2"),
])
def test_bad_X_at_predict(fitted, model, bad_X, message):
    est = fitted[model]
    methods = [est.predict, est.score] if model != "clf" else [est.predict, est.predict_proba]
    y = np.zeros(1 if isinstance(bad_X, str) else len(bad_X))
    for method in methods:
        with pytest.raises((TypeError, ValueError), match=message):
            method(bad_X, y) if method == est.score else method(bad_X)


def test_unseen_labels_at_score_count_as_errors(fitted):
    """Labels never seen at fit cannot be predicted: score counts them wrong, no crash."""
    clf = fitted["clf"]
    assert clf.score(X, np.array(["c", "d"] * 5)) == 0.0


def test_predict_accepts_other_float_types_and_lists(fitted):
    model = fitted["3d"]
    expected = model.predict(X)
    np.testing.assert_allclose(model.predict(X.astype(np.float64)), expected, rtol=1e-6)
    np.testing.assert_allclose(model.predict(X.tolist()), expected, rtol=1e-6)


@pytest.mark.parametrize("params, message", [
    (dict(hidden_layer_sizes="10"), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=2.5), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=(4, 0)), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=(True,)), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=10**12), "hidden_layer_sizes=.* needs more memory"),
    (dict(learning_rate_init=np.nan), "learning_rate_init"),
    (dict(learning_rate_init=np.inf), "learning_rate_init"),
    (dict(learning_rate_init="x"), "learning_rate_init"),
    (dict(learning_rate_init=-1e-3), "learning_rate_init"),
    (dict(dropout=np.nan), "dropout"),
    (dict(dropout=True), "dropout"),
    (dict(dropout=1), "dropout"),
    (dict(batch_size=2.5), "batch_size"),
    (dict(batch_size="big"), "batch_size"),
    (dict(batch_size=-1), "batch_size"),
    (dict(max_iter=2.0), "max_iter"),
    (dict(max_iter=-5), "max_iter"),
    (dict(momentum=1.5), "momentum"),
    (dict(beta_1=1.0), "beta_1"),
    (dict(beta_2=-0.1), "beta_2"),
    (dict(epsilon=0), "epsilon"),
    (dict(tol=np.nan), "tol"),
    (dict(n_iter_no_change=0), "n_iter_no_change"),
    (dict(verbose=-1), "verbose"),
    (dict(clip_grad_norm=np.nan), "clip_grad_norm"),
    (dict(clip_grad_norm=np.inf), "clip_grad_norm"),
    (dict(clip_grad_norm=-1.0), "clip_grad_norm"),
    (dict(clip_grad_value=np.nan), "clip_grad_value"),
    (dict(clip_grad_value=0.0), "clip_grad_value must be a number > 0"),
    (dict(clip_grad_value="1"), "clip_grad_value"),
    (dict(shuffle="yes"), "shuffle must be True or False"),
    (dict(nesterovs_momentum=None), "nesterovs_momentum must be True or False"),
    (dict(early_stopping="yes"), "early_stopping must be True or False"),
    (dict(warm_start=None), "warm_start must be True or False"),
    (dict(dtype="float16"), "dtype"),
    (dict(dtype=object), "dtype"),
    (dict(dtype="blah"), "dtype"),
    (dict(random_state="x"), "seed"),
])
@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_bad_parameters_are_named(estimator, params, message):
    y = Y if estimator is LSTMRegressor else LABELS
    with pytest.raises(ValueError, match=message):
        estimator(**{"max_iter": 1, **params}).fit(X, y)


@pytest.mark.parametrize("weight, message", [
    (np.r_[np.nan, np.ones(9)], "sample_weight contains NaN"),
    (np.r_[np.inf, np.ones(9)], "sample_weight contains infinity"),
    (np.r_[-1.0, np.ones(9)], "sample_weight has negative values"),
    (np.zeros(10), "sample_weight sums to zero"),
    (np.full(10, 1e308), "sample_weight sums to more than float64 holds"),
    (np.ones(9), r"sample_weight must have shape \(10,\)"),
    (np.ones((10, 1)), r"sample_weight must have shape \(10,\)"),
    (["a"] * 10, "sample_weight holds strings"),
])
def test_bad_sample_weight_is_named(weight, message):
    with pytest.raises((TypeError, ValueError), match=message):
        check_sample_weight(weight, 10)


@pytest.mark.parametrize("class_weight, output", [
    ({0: 1e300, 1: 1.0}, "last"),        # times class_weight
    (None, "sequence"),                  # over every step: 10 x 100 x 1e306
    ({0: 1.0, 1: 1.0}, "sequence"),      # the same, per-step weights
])
def test_weights_whose_sum_over_the_loss_overflows_are_named(class_weight, output):
    """Each weight finite, the sum a loss takes of them not: an error before
    training, not a "diverged" warning (nor, over steps, gradients of w / inf = 0)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 100, 2))
    y = rng.integers(0, 2, (10, 100)) if output == "sequence" else np.arange(10) % 2
    weight = 1e10 if output == "last" else 1e306
    with pytest.raises(ValueError, match=r"sample_weight \(times class_weight, over every "
                                         r"time step\) sums to more than float64 holds"):
        LSTMClassifier(3, class_weight=class_weight, output=output, max_iter=1).fit(
            X, y, sample_weight=np.full(10, weight))


def test_weights_near_float64s_largest_train_as_unit_weights_do():
    """Uniform weights summing to 1e308: the same loss as weights of 1 (the epoch's
    sum of loss x batch weight overflowed and was reported as divergence)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 5, 2))
    y = 10 * rng.standard_normal(100)
    params = dict(hidden_layer_sizes=(4,), max_iter=3, alpha=0.0, dtype="float64",
                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)             # no "diverged"
        warnings.simplefilter("ignore", ConvergenceWarning)
        huge = LSTMRegressor(**params).fit(X, y, sample_weight=np.full(100, 1e306))
        unit = LSTMRegressor(**params).fit(X, y)
    assert huge.n_iter_ == 3
    np.testing.assert_allclose(huge.loss_curve_, unit.loss_curve_, rtol=1e-12)


def test_sample_weight_defaults_and_scalars():
    np.testing.assert_array_equal(check_sample_weight(None, 3), np.ones(3))
    np.testing.assert_array_equal(check_sample_weight(2, 3), np.full(3, 2.0))


@pytest.mark.parametrize("N, kept", [(2, False), (1, True)])
def test_raw_kernels_refuse_bad_buffers(N, kept):
    """The compiled entry points check dtype, contiguity and shape before any pointer
    is touched; a single sequence on kept weights (its own way in, _plain_data) too."""
    T, D, H = 3, 4, 5
    x = np.zeros((T, N, D), np.float32)
    w_ih, w_hh = np.zeros((4 * H, D), np.float32), np.zeros((4 * H, H), np.float32)
    b = np.zeros(4 * H, np.float32)
    h0 = np.zeros((N, H), np.float32)
    out = [np.zeros((T, N, 4 * H), np.float32)] + [np.zeros((T, N, H), np.float32) for _ in range(3)]

    def forward(*args):
        _kernels.lstm_layer_forward(*args, packed_weights=_kernels.PackedWeights() if kept
                                    else None)

    forward(x, w_ih, w_hh, b, b, h0, h0, *out)  # the good call works
    with pytest.raises(ValueError, match="dtype mismatch"):  # float64 weights, float32 data
        forward(x, w_ih.astype(np.float64), w_hh, b, b, h0, h0, *out)
    # an input in any layout is read as it is (copied where the loop cannot read it
    # in place); an output buffer in another layout is refused: nothing would reach it
    forward(np.asfortranarray(np.zeros((T, N, D + 1), np.float32))[..., :D], w_ih, w_hh,
            b, b, h0, h0, *out)
    with pytest.raises(ValueError, match="contiguous"):
        h_view = np.zeros((T, N, H + 1), np.float32)[..., :H]
        forward(x, w_ih, w_hh, b, b, h0, h0, *out[:3], h_view)
    with pytest.raises(ValueError, match="h0 has shape"):
        forward(x, w_ih, w_hh, b, b, np.zeros((N + 1, H), np.float32), h0, *out)
    with pytest.raises(ValueError, match="bias_hh has shape"):
        forward(x, w_ih, w_hh, b, b[:-1], h0, h0, *out)
    with pytest.raises(ValueError, match=rf"h has shape .2, {N}, 5., expected .3, {N}, 5."):
        forward(x, w_ih, w_hh, b, b, h0, h0, *out[:3], out[3][:2].copy())
    with pytest.raises(ValueError):  # read-only output buffer
        ro = out[0].copy()
        ro.flags.writeable = False
        forward(x, w_ih, w_hh, b, b, h0, h0, ro, *out[1:])


def test_batches_beyond_32_bit_blas_sizes_are_refused():
    """BLAS counts rows in 32 bits: a batch with T * N >= 2**31 rows would overflow it.
    (A broadcast view: the check happens before any memory is touched.)"""
    from fastlstm._network import LSTMNetwork

    net = LSTMNetwork(1, (2,), 1)
    huge = np.broadcast_to(np.zeros((1, 1, 1), np.float32), (2**16, 2**15, 1))
    with pytest.raises(ValueError, match="T \\* N must stay below 2\\*\\*31"):
        net.forward(huge)
