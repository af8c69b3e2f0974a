import numpy as np
import pytest

from fastlstm import _ops
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
def rng():
    return np.random.default_rng(12345)
