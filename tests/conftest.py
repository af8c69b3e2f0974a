import signal

import numpy as np
import pytest

from fastlstm import _ops
from fastlstm import _reference as ref
from fastlstm._network import LSTMNetwork


# every cell the networks have: (cell, nonlinearity)
CELLS = [("lstm", "tanh"), ("gru", "tanh"), ("rnn", "tanh"), ("rnn", "sigmoid")]


def make_network(n_features=3, hidden=(4, 3), n_outputs=2, dtype=np.float64, dropout=0.0, seed=0,
                 cell="lstm", nonlinearity="tanh", bidirectional=False):
    """A small network with random (not initialiser-shaped) weights and biases."""
    net = LSTMNetwork(n_features, hidden, n_outputs, dtype=dtype, dropout=dropout, cell=cell,
                      nonlinearity=nonlinearity, bidirectional=bidirectional)
    net.params[...] = np.random.default_rng(seed).uniform(-0.6, 0.6, net.params.size)
    return net


def random_layer_arrays(G, T, N, D, H, dtype, seed=0, zero_state=False, n_states=1):
    """Random inputs of one layer kernel: x (T, N, D), w_ih (G, D), w_hh (G, H),
    b_ih, b_hh (G,), then n_states initial states (N, H) (h0, and c0 for the
    LSTM), zeros if zero_state."""
    rng = np.random.default_rng(seed)

    def draw(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    x = draw(T, N, D)
    w_ih, w_hh = draw(G, D, scale=0.5), draw(G, H, scale=0.5)
    b_ih, b_hh = draw(G), draw(G)
    states = [np.zeros((N, H), dtype) if zero_state else draw(N, H) for _ in range(n_states)]
    return (x, w_ih, w_hh, b_ih, b_hh, *states)


def network_loss(net, x, target, loss, sequence=False, dropout_seed=None):
    """(loss value, dloss/dparams) of net on one batch; dropout masks from dropout_seed."""
    training = dropout_seed is not None
    rng = np.random.default_rng(dropout_seed) if training else None
    out, tape = net.forward(x, sequence, training=training, rng=rng)
    dout = np.empty_like(out)
    weight = np.ones(out.shape[0])
    if loss == "squared_error":
        value = _ops.squared_error(out, target.reshape(out.shape), weight, dout)
    else:
        value = _ops.softmax_cross_entropy(out, target.reshape(-1), weight, dout)
    return value, net.backward(tape, dout).copy()


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt during the test, as in a plain Python program
    (the handler in force before is put back after)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def reference_predict(model, X):
    """The fitted network, run by the NumPy reference from model.weights_."""
    w = {k: v.astype(np.float64) for k, v in model.weights_.items()}
    X = np.asarray(X, np.float64)
    layer_in = (X[:, :, None] if X.ndim == 2 else X).transpose(1, 0, 2)   # (T, N, D)
    N = layer_in.shape[1]
    for k, H in enumerate(model.network_.hidden_sizes):
        zeros = np.zeros((N, H))
        layer_in, _, _ = ref.lstm_forward(layer_in, w[f"weight_ih_l{k}"], w[f"weight_hh_l{k}"],
                                          w[f"bias_ih_l{k}"], w[f"bias_hh_l{k}"], zeros, zeros)
    top = layer_in if model.output == "sequence" else layer_in[-1]
    out = top @ w["head.weight"].T + w["head.bias"]          # (T, N, K) or (N, K)
    return np.moveaxis(out, 0, 1) if model.output == "sequence" else out
