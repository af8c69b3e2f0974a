"""The plain RNN and GRU cells: the NumPy reference against torch, the compiled
kernels against the reference (float32 and float64)."""
import numpy as np
import pytest

from fastlstm import _reference as ref

torch = pytest.importorskip("torch")

SHAPES = [  # (T, N, D, H)
    (1, 1, 1, 1),
    (1, 3, 2, 4),
    (5, 1, 3, 2),
    (4, 3, 1, 1),
    (6, 4, 5, 7),
    (3, 2, 8, 33),
]
GATES = {"rnn_tanh": 1, "rnn_sigmoid": 1, "gru": 3}


def random_layer(cell, T, N, D, H, dtype, seed=0, zero_state=False):
    rng = np.random.default_rng(seed)
    G = GATES[cell] * H

    def draw(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    x = draw(T, N, D)
    w_ih, w_hh = draw(G, D, scale=0.5), draw(G, H, scale=0.5)
    b_ih, b_hh = draw(G), draw(G)
    h0 = np.zeros((N, H), dtype) if zero_state else draw(N, H)
    return x, w_ih, w_hh, b_ih, b_hh, h0


def ref_forward(cell, x, w_ih, w_hh, b_ih, b_hh, h0):
    if cell == "gru":
        return ref.gru_forward(x, w_ih, w_hh, b_ih, b_hh, h0)
    return ref.rnn_forward(x, w_ih, w_hh, b_ih, b_hh, h0, cell.split("_")[1])


def ref_backward(cell, dh, w_ih, w_hh, cache):
    if cell == "gru":
        return ref.gru_backward(dh, w_ih, w_hh, cache)
    return ref.rnn_backward(dh, w_ih, w_hh, cache, cell.split("_")[1])


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru"])
def test_reference_matches_torch(cell):
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
