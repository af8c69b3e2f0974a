"""Property-based: random shapes (N, T, D, H from 1), dtypes and values through the
raw kernels and through fit/predict. Nothing crashes, finite inputs give finite
outputs, and every result equals the plain NumPy reference."""
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import reference_predict
from fastlstm import LSTMClassifier, LSTMRegressor, _kernels
from fastlstm import _reference as ref

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# float32 against a float64 reference, relative to the size of what is compared
RTOL = {np.float32: 1e-4, np.float64: 1e-10}

dims = st.integers(1, 6)
dtypes = st.sampled_from([np.float32, np.float64])
# how large inputs and weights get: from tiny to saturating every gate
scales = st.sampled_from([1e-3, 0.3, 1.0, 5.0, 100.0])


def close(got, want, dtype, what):
    """Compare with a tolerance relative to the largest magnitude involved."""
    want = np.asarray(want, np.float64)
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=RTOL[dtype] * scale, err_msg=what)


@st.composite
def layer_problems(draw):
    T, N, D, H = draw(dims), draw(dims), draw(dims), draw(st.integers(1, 9))
    dtype = draw(dtypes)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x_scale, w_scale = draw(scales), draw(st.sampled_from([0.1, 0.5, 1.0]))
    zero_state = draw(st.booleans())
    extreme = draw(st.booleans())
    G = 4 * H

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    x = normal(T, N, D, scale=x_scale)
    if extreme:  # some exact zeros and extreme entries
        x.flat[rng.integers(0, x.size, size=x.size // 3 + 1)] = draw(
            st.sampled_from([0.0, 1e4, -1e4]))
    w_ih, w_hh = normal(G, D, scale=w_scale), normal(G, H, scale=w_scale)
    b_ih, b_hh = normal(G), normal(G)
    h0 = np.zeros((N, H), dtype) if zero_state else np.tanh(normal(N, H))
    c0 = np.zeros((N, H), dtype) if zero_state else normal(N, H)
    moderate = not extreme and x_scale <= 5.0
    return dtype, moderate, (x, w_ih, w_hh, b_ih, b_hh, h0, c0)


@FAST
@given(layer_problems())
def test_kernels_agree_with_the_reference(problem):
    dtype, moderate, (x, w_ih, w_hh, b_ih, b_hh, h0, c0) = problem
    T, N, D = x.shape
    H = w_hh.shape[1]
    gates = np.full((T, N, 4 * H), np.nan, dtype)
    c, tanh_c, h = (np.full((T, N, H), np.nan, dtype) for _ in range(3))
    _kernels.lstm_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, gates, c, tanh_c, h)
    for name, buf in (("gates", gates), ("c", c), ("tanh_c", tanh_c), ("h", h)):
        assert np.isfinite(buf).all(), name
    assert np.abs(h).max() <= 1.0

    args64 = [a.astype(np.float64) for a in (x, w_ih, w_hh, b_ih, b_hh, h0, c0)]
    h_ref, _, cache = ref.lstm_forward(*args64)
    close(h, h_ref, dtype, "h")
    close(c, np.stack([step[7] for step in cache]), dtype, "c")

    rng = np.random.default_rng(0)
    dh = rng.standard_normal((T, N, H)).astype(dtype)
    dc = rng.standard_normal((N, H)).astype(dtype)
    dx_ref, dw_ih_ref, dw_hh_ref, db_ref, _, dh0_ref, dc0_ref = ref.lstm_backward(
        dh.astype(np.float64), dc.astype(np.float64), args64[1], args64[2], cache)
    dh0, dgates, dx = np.empty_like(h0), np.empty_like(gates), np.empty_like(x)
    dw_ih, dw_hh, db = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b_ih)
    _kernels.lstm_layer_backward(x, w_ih, w_hh, h0, c0, gates, c, tanh_c, h, dh.copy(), dc,
                                 dh0, dgates, dx, dw_ih, dw_hh, db)
    for name, got, want in (("dx", dx, dx_ref), ("dW_ih", dw_ih, dw_ih_ref),
                            ("dW_hh", dw_hh, dw_hh_ref), ("db", db, db_ref),
                            ("dh0", dh0, dh0_ref), ("dc0", dc, dc0_ref)):
        assert np.isfinite(got).all(), name
        # Saturated float32 gates have derivatives like 1 - s that float32 rounds to 0
        # (float64 keeps 1e-9); times inputs of 1e4 that is noise no tolerance relative
        # to the result can absorb, so float32 gradients are compared in the moderate
        # regime only. float64 is compared everywhere.
        if dtype is np.float64 or moderate:
            close(got, want, dtype, name)


@st.composite
def fit_problems(draw):
    N, T, D = draw(st.integers(1, 12)), draw(dims), draw(st.integers(1, 3))
    hidden = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=2)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    kind = draw(st.sampled_from(["float32", "float64", "int", "list", "2d", "lengths"]))
    X = scale * rng.standard_normal((N, T, D))
    tbptt_steps = draw(st.sampled_from([None, 1, 2]))
    if kind == "float32":
        X = X.astype(np.float32)
    elif kind == "int":
        X = np.rint(X).astype(np.int64)
    elif kind == "list":
        X = X.tolist()
    elif kind == "2d":
        X = X[:, :, 0]
    elif kind == "lengths":       # a list of sequences of several lengths (when T > 1)
        X = [seq[:length] for seq, length in zip(X, rng.integers(1, T + 1, N))]
        tbptt_steps = None        # refused with several lengths
    params = dict(hidden_layer_sizes=hidden, max_iter=2, random_state=0,
                  output=draw(st.sampled_from(["last", "sequence"])),
                  batch_size=draw(st.sampled_from(["auto", 1, 3])),
                  dropout=draw(st.sampled_from([0.0, 0.3])),
                  tbptt_steps=tbptt_steps,
                  solver=draw(st.sampled_from(["adam", "sgd"])),
                  clip_grad_norm=draw(st.sampled_from([None, 1.0])))
    return X, rng, params


@FAST
@given(fit_problems(), st.booleans())
def test_fit_predict_is_finite_and_matches_the_reference(problem, classify):
    X, rng, params = problem
    several = isinstance(X, list) and len({len(seq) for seq in X}) > 1
    sequences = X if several else np.asarray(X, dtype=np.float64)     # each sample's steps
    N, T = len(X), max(len(seq) for seq in sequences)
    shape = (N, T) if params["output"] == "sequence" else (N,)
    if classify:
        y = rng.integers(0, 3, size=shape)
        y.flat[:2] = [0, 1][: y.size]                 # at least two classes when N*T > 1
        if several and shape == (N, T):
            y = [labels[:len(seq)] for labels, seq in zip(y, sequences)]
        if np.unique(np.concatenate(y) if several and shape == (N, T) else y).size < 2:
            return                                    # one class only
        estimator = LSTMClassifier(**params)
    else:
        y = rng.standard_normal(shape) * 3
        if several and shape == (N, T):
            y = [values[:len(seq)] for values, seq in zip(y, sequences)]
        estimator = LSTMRegressor(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a diverged fit is allowed, and safe
        model = estimator.fit(X, y)
    assert np.isfinite(model.network_.params).all()
    dtype = model.network_.dtype.type
    out = model.predict_proba(X) if classify else model.predict(X)
    if several and shape == (N, T):   # per-step outputs of each sequence, at its length
        assert [len(o) for o in out] == [len(seq) for seq in X]
    else:
        assert out.shape[:len(shape)] == shape
    # each sequence alone through the reference (with several lengths: no padding)
    want = ([reference_predict(model, np.asarray(seq)[None])[0] for seq in X] if several
            else reference_predict(model, X))
    for got_n, want_n in zip(out, want):
        assert np.isfinite(got_n).all()
        if classify:
            want_n = np.exp(want_n - want_n.max(axis=-1, keepdims=True))
            want_n /= want_n.sum(axis=-1, keepdims=True)
        close(got_n, np.reshape(want_n, np.shape(got_n)), dtype, "predict")
    if classify:  # the labels are those of the largest probability
        for labels, proba in zip(model.predict(X), out):
            np.testing.assert_array_equal(labels, model.classes_[np.argmax(proba, axis=-1)])
