"""What the plain RNN can and cannot do next to the LSTM, with fixed seeds."""
import numpy as np
import pytest

from fastlstm import LSTMClassifier
from fastlstm.datasets import adding_problem, binary_addition, bits_to_int

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_sigmoid_rnn_learns_the_binary_adder():
    """The classic adder: a plain RNN of 16 sigmoid units, one output bit per step
    (least significant first), exact on the 15360 pairs it never saw."""
    X, y, a, b = binary_addition(8)     # all 16384 pairs a, b < 128: sums fit 8 bits
    order = np.random.default_rng(0).permutation(len(X))
    train, held_out = order[:1024], order[1024:]
    adder = LSTMClassifier(16, cell="rnn", nonlinearity="sigmoid", output="sequence",
                           learning_rate_init=3e-2, batch_size=32, max_iter=20,
                           random_state=0).fit(X[train], y[train])
    assert adder.weights_["weight_hh_l0"].shape == (16, 16)
    sums = bits_to_int(adder.predict(X[held_out]))
    assert np.mean(sums == a[held_out] + b[held_out]) == 1.0


def test_lstm_bridges_a_100_step_lag_that_the_plain_rnn_does_not():
    """Vanishing gradients: the same budget (16 units, 30 epochs of Adam) on the adding
    problem with T = 100. The LSTM's gated cell carries the first value over 90+ steps;
    the tanh RNN stays at the mean's error."""
    from fastlstm import LSTMRegressor

    X, y = adding_problem(2048, 100, random_state=0)
    X_test, y_test = adding_problem(1000, 100, random_state=1)
    mse = {}
    for cell in ("lstm", "rnn"):
        model = LSTMRegressor(16, cell=cell, learning_rate_init=1e-2, batch_size=32,
                              max_iter=30, n_iter_no_change=30, random_state=0).fit(X, y)
        mse[cell] = np.mean((model.predict(X_test) - y_test) ** 2)
    assert mse["lstm"] < 0.02, mse
    assert mse["rnn"] > 0.1, mse


def test_gradient_clipping_tames_exploding_gradients_of_a_plain_rnn():
    """A tanh RNN with its recurrent weights scaled by 3 has gradient norms in the
    hundreds of thousands over 50 steps: plain SGD jumps to a far worse loss and stays
    there, the same SGD with clip_grad_norm=1 keeps the loss where it was."""
    from fastlstm import LSTMRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 50, 1))
    y = X[:, -5:, 0].sum(axis=1)
    curves = {}
    for clip in (None, 1.0):
        model = LSTMRegressor(16, cell="rnn", solver="sgd", learning_rate_init=0.05, momentum=0.0,
                              batch_size=32, max_iter=1, warm_start=True, random_state=0,
                              clip_grad_norm=clip).fit(X, y)
        model.weights_["weight_hh_l0"][...] *= 3.0
        net = model.network_
        out, tape = net.forward(np.ascontiguousarray(X.transpose(1, 0, 2), dtype=net.dtype))
        assert np.linalg.norm(net.backward(tape, out - y[:, None])) / len(X) > 1e4
        curves[clip] = model.set_params(max_iter=10, n_iter_no_change=10).fit(X, y).loss_curve_
    start = curves[1.0][0]
    assert max(curves[None][1:]) > 10 * start, curves
    assert max(curves[1.0][1:]) < 1.5 * start, curves
