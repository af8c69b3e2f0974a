"""Every parameter's analytic gradient against central finite differences, float64."""
import numpy as np
import pytest
from conftest import CELLS, make_network, network_loss


def finite_difference(net, loss_at, eps=1e-6):
    numeric = np.empty_like(net.params)
    for k in range(net.params.size):
        saved = net.params[k]
        net.params[k] = saved + eps
        up = loss_at()
        net.params[k] = saved - eps
        down = loss_at()
        net.params[k] = saved
        numeric[k] = (up - down) / (2 * eps)
    return numeric


def relative_errors(net, analytic, numeric):
    """{parameter name: ||analytic - numeric|| / (||analytic|| + ||numeric||)}.

    Per tensor, not per element: a single entry of size 1e-7 is below the
    finite-difference noise floor (~1e-10 absolute) and says nothing alone.
    """
    errors = {}
    for name, view in net.g.items():
        start = view.__array_interface__["data"][0] - net.grads.__array_interface__["data"][0]
        sl = slice(start // net.grads.itemsize, start // net.grads.itemsize + view.size)
        a, n = analytic[sl], numeric[sl]
        errors[name] = np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-300)
    return errors


@pytest.mark.parametrize("bidirectional", [False, True], ids=["", "bidirectional"])
@pytest.mark.parametrize("cell", CELLS, ids="-".join)
@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
@pytest.mark.parametrize("sequence", [False, True])
@pytest.mark.parametrize("dropout_seed", [None, 7])
def test_two_layer_network_gradients(loss, sequence, dropout_seed, cell, bidirectional, rng):
    T, N, D, K = 5, 3, 3, 2
    net = make_network(D, (4, 3), K, dropout=0.3 if dropout_seed else 0.0, cell=cell[0],
                       nonlinearity=cell[1], bidirectional=bidirectional)
    x = rng.standard_normal((T, N, D))
    M = T * N if sequence else N
    target = (rng.standard_normal((M, K)) if loss == "squared_error"
              else rng.integers(0, K, M))

    def loss_at():
        return network_loss(net, x, target, loss, sequence, dropout_seed)[0]

    _, analytic = network_loss(net, x, target, loss, sequence, dropout_seed)
    numeric = finite_difference(net, loss_at)
    assert np.abs(analytic).max() > 1e-3  # the check has something to check
    errors = relative_errors(net, analytic, numeric)
    assert len(errors) == 2 * 4 * (2 if bidirectional else 1) + 2
    assert max(errors.values()) <= 1e-6, errors
    # and no single entry is off by more than the noise floor
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9)


def test_gradient_check_detects_a_wrong_gradient(rng):
    """The check above can fail: a sign flip in one block is caught."""
    net = make_network()
    x = rng.standard_normal((4, 2, 3))
    target = rng.standard_normal((2, 2))
    _, analytic = network_loss(net, x, target, "squared_error")
    numeric = finite_difference(net, lambda: network_loss(net, x, target, "squared_error")[0])
    broken = analytic.copy()
    broken[:12] *= -1
    assert relative_errors(net, broken, numeric)["weight_ih_l0"] > 1e-2


@pytest.mark.parametrize("cell", CELLS, ids="-".join)
def test_state_carried_across_chunks_equals_whole_sequence(cell, rng):
    """forward on x[:3] then on x[3:] from its final state == forward on all of x."""
    net = make_network(3, (4, 5), 2, cell=cell[0], nonlinearity=cell[1])
    x = rng.standard_normal((7, 2, 3))
    whole, tape = net.forward(x, sequence_output=True)
    first, tape1 = net.forward(x[:3], sequence_output=True)
    second, tape2 = net.forward(x[3:], sequence_output=True, initial_state=tape1.final_state())
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=0, atol=1e-13)
    for (h_a, c_a), (h_b, c_b) in zip(tape2.final_state(), tape.final_state()):
        np.testing.assert_allclose(h_a, h_b, atol=1e-13)
        np.testing.assert_allclose(c_a, c_b, atol=1e-13)


@pytest.mark.parametrize("cell", CELLS, ids="-".join)
def test_gradients_with_a_given_initial_state(cell, rng):
    net = make_network(3, (4,), 2, cell=cell[0], nonlinearity=cell[1])
    x = rng.standard_normal((4, 2, 3))
    state = [(rng.standard_normal((2, 4)), rng.standard_normal((2, 4)))]
    target = rng.standard_normal((2, 2))

    def loss_and_grads():
        out, tape = net.forward(x, initial_state=state)
        dout = out - target                                     # loss = 0.5 * ||out - target||^2
        return 0.5 * np.sum(dout ** 2), net.backward(tape, dout).copy()

    analytic = loss_and_grads()[1]
    numeric = finite_difference(net, lambda: loss_and_grads()[0])
    assert max(relative_errors(net, analytic, numeric).values()) <= 1e-6


@pytest.mark.parametrize("bidirectional", [False, True], ids=["", "bidirectional"])
@pytest.mark.parametrize("cell", CELLS, ids="-".join)
@pytest.mark.parametrize("sequence", [False, True])
def test_padded_batch_equals_each_sequence_alone(sequence, cell, bidirectional, rng):
    """A padded batch with lengths gives, for each sample, the outputs and the
    gradients of running that sample alone on its real steps (bidirectional: the
    reverse pass starts at each sample's own last real step)."""
    net = make_network(3, (4, 5), 2, cell=cell[0], nonlinearity=cell[1],
                       bidirectional=bidirectional)
    lengths = np.array([6, 2, 4, 1, 6], dtype=np.int64)
    T, N = 6, 5
    x = rng.standard_normal((T, N, 3))
    x[np.arange(T)[:, None] >= lengths[None, :]] = 1e3       # padding must not leak in
    out, tape = net.forward(x, sequence, lengths=lengths)
    dout = rng.standard_normal(out.shape)
    if sequence:  # no gradient from padded steps' outputs (the estimator weighs them 0)
        dout.reshape(T, N, -1)[np.arange(T)[:, None] >= lengths[None, :]] = 0
    padded_grads = net.backward(tape, dout).copy()

    summed = np.zeros_like(padded_grads)
    for n, L in enumerate(lengths):
        alone, tape_n = net.forward(np.ascontiguousarray(x[:L, n:n + 1]), sequence)
        if sequence:
            np.testing.assert_allclose(out.reshape(T, N, -1)[:L, n], alone, atol=1e-12)
            d_alone = np.ascontiguousarray(dout.reshape(T, N, -1)[:L, n])
        else:
            np.testing.assert_allclose(out[n:n + 1], alone, atol=1e-12)
            d_alone = dout[n:n + 1]
        summed += net.backward(tape_n, d_alone)
    np.testing.assert_allclose(padded_grads, summed, rtol=0, atol=1e-12)


def test_kernel_rejects_bad_lengths():
    net = make_network(2, (3,), 1)
    x = np.zeros((4, 2, 2))
    for bad in ([0, 4], [5, 1]):
        with pytest.raises(ValueError, match="lengths"):
            net.forward(x, lengths=np.array(bad, dtype=np.int64))
