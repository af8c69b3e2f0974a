"""What the plain RNN can and cannot do next to the LSTM, with fixed seeds."""
import numpy as np
import pytest

from fastlstm import LSTMClassifier
from fastlstm.datasets import binary_addition, bits_to_int

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
