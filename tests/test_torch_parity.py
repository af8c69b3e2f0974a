"""Outputs and all gradients against torch.nn.LSTM / GRU / RNN + nn.Linear with the
same weights. (torch has no sigmoid RNN: that cell is checked against the NumPy
reference in test_cells.py and by finite differences in test_gradients.py.)"""
import numpy as np
import pytest
from conftest import make_network

torch = pytest.importorskip("torch")

TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}
OUT_TOL = {np.float32: 1e-5, np.float64: 1e-10}
GRAD_TOL = {np.float32: 1e-4, np.float64: 1e-10}


def torch_twin(net):
    """torch modules holding exactly net's parameters."""
    dtype = TORCH_DTYPE[net.dtype.type]
    lstms = []
    n_in = net.n_features
    for k, H in enumerate(net.hidden_sizes):
        # one module per layer: dropout sits between
        both = dict(bidirectional=net.bidirectional, dtype=dtype)
        if net.cell == "lstm":
            lstm = torch.nn.LSTM(n_in, H, **both)
        elif net.cell == "gru":
            lstm = torch.nn.GRU(n_in, H, **both)
        else:
            lstm = torch.nn.RNN(n_in, H, nonlinearity=net.nonlinearity, **both)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                for suffix in ("", "_reverse") if net.bidirectional else ("",):
                    getattr(lstm, f"{name}_l0{suffix}").copy_(
                        torch.from_numpy(net.p[f"{name}_l{k}{suffix}"].copy()))
        lstms.append(lstm)
        n_in = 2 * H if net.bidirectional else H
    head = torch.nn.Linear(n_in, net.n_outputs, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(net.p["head.weight"].copy()))
        head.bias.copy_(torch.from_numpy(net.p["head.bias"].copy()))
    return lstms, head


def assert_gradients_match(net, lstms, head):
    """net.g (after net.backward) against the .grad of its torch twin's parameters,
    to GRAD_TOL relative to each gradient's largest component (at least 1)."""
    theirs = {"head.weight": head.weight.grad, "head.bias": head.bias.grad}
    for k, lstm in enumerate(lstms):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            for suffix in ("", "_reverse") if net.bidirectional else ("",):
                theirs[f"{name}_l{k}{suffix}"] = getattr(lstm, f"{name}_l0{suffix}").grad
    assert set(theirs) == set(net.g)
    for name, grad in theirs.items():
        scale = max(1.0, float(grad.abs().max()))
        np.testing.assert_allclose(net.g[name], grad.numpy(), rtol=0,
                                   atol=GRAD_TOL[net.dtype.type] * scale, err_msg=name)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["", "bidirectional"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("hidden", [(6,), (5, 7)])
@pytest.mark.parametrize("sequence", [False, True])
def test_outputs_and_gradients_match_torch(dtype, hidden, sequence, cell, bidirectional, rng):
    T, N, D, K = 7, 4, 3, 2
    net = make_network(D, hidden, K, dtype=dtype, cell=cell, bidirectional=bidirectional)
    x = rng.standard_normal((T, N, D)).astype(dtype)
    out, tape = net.forward(x, sequence)
    dout = rng.standard_normal(out.shape).astype(dtype)      # loss = sum(out * dout)
    net.backward(tape, dout)                                 # into net.g (named views)

    lstms, head = torch_twin(net)
    x_t = torch.from_numpy(x).requires_grad_(True)
    h = x_t
    for lstm in lstms:
        h, _ = lstm(h)                                        # (T, N, H)
    if sequence:
        top = h.reshape(T * N, -1)
    elif bidirectional:  # each direction's last step: forward at T-1, reverse at 0
        H = hidden[-1]
        top = torch.cat([h[-1, :, :H], h[0, :, H:]], dim=1)
    else:
        top = h[-1]
    out_t = head(top)
    (out_t * torch.from_numpy(dout)).sum().backward()

    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=0, atol=OUT_TOL[dtype])
    top_layer_h = tape.layers[-1][4]                           # the forward direction
    np.testing.assert_allclose(top_layer_h, h.detach().numpy()[..., :hidden[-1]], rtol=0,
                               atol=OUT_TOL[dtype])
    assert_gradients_match(net, lstms, head)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_torch_lstm_reproduces_fitted_estimator(dtype, rng):
    """A fitted estimator's weights_, loaded into a 2-layer torch.nn.LSTM, give its predictions."""
    from fastlstm import LSTMRegressor

    X = rng.standard_normal((40, 6, 3)).astype(dtype)
    y = X.sum(axis=(1, 2))
    model = LSTMRegressor(hidden_layer_sizes=(5, 5), max_iter=3, dtype=dtype,
                          random_state=0).fit(X, y)
    w = model.weights_
    lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True, dtype=TORCH_DTYPE[dtype])
    with torch.no_grad():
        for name, param in lstm.named_parameters():
            param.copy_(torch.from_numpy(w[name].copy()))
        h, _ = lstm(torch.from_numpy(X))                      # (N, T, H)
        pred = h[:, -1] @ torch.from_numpy(w["head.weight"].copy()).T + torch.from_numpy(
            w["head.bias"].copy())
    np.testing.assert_allclose(model.predict(X), pred[:, 0].numpy(), rtol=0, atol=OUT_TOL[dtype])


def test_a_torch_state_dict_updates_the_weights_at_once(rng):
    """weights_.update(module.state_dict()) (Parameters that require grad, too) copies
    torch's weights in; a bad one leaves every weight as it was."""
    from fastlstm import LSTMRegressor

    X = rng.standard_normal((30, 6, 3))
    model = LSTMRegressor(hidden_layer_sizes=(5, 5), max_iter=1, dtype="float64",
                          random_state=0).fit(X, X[:, -1, 0])
    lstm = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True, dtype=torch.float64)
    head = torch.nn.Linear(5, 1, dtype=torch.float64)
    model.weights_.update(lstm.state_dict())
    model.weights_.update({f"head.{name}": p for name, p in head.named_parameters()})
    with torch.no_grad():
        expected = head(lstm(torch.from_numpy(X))[0][:, -1])[:, 0].numpy()
    np.testing.assert_allclose(model.predict(X), expected, rtol=0, atol=1e-12)
    before = model.network_.params.copy()
    with pytest.raises(ValueError, match="weight_hh_l1 has shape"):
        model.weights_.update({"weight_ih_l0": np.zeros((20, 3)),
                               "weight_hh_l1": np.zeros((5, 5))})
    with pytest.raises(KeyError, match="not parameters of this network"):
        model.weights_.update({"weight_ih_l0": np.zeros((20, 3)), "rnn.weight": 1})
    np.testing.assert_array_equal(model.network_.params, before)


def test_torch_tensors_are_read_as_arrays_of_their_dtype(rng):
    """A tensor's dtype is torch's own type: it is read from the array it converts to,
    so a float64 tensor gets float64 predictions as a float64 array does."""
    from fastlstm import LSTMRegressor

    X = rng.standard_normal((20, 4, 2))
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1, random_state=0)
    model.fit(torch.from_numpy(X), torch.from_numpy(X[:, -1, 0]))
    assert model.network_.dtype == np.float32
    assert model.predict(torch.from_numpy(X)).dtype == np.float64
    assert model.predict(torch.from_numpy(X.astype(np.float32))).dtype == np.float32
    np.testing.assert_array_equal(model.predict(torch.from_numpy(X)), model.predict(X))
    follows = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1, dtype=None, random_state=0)
    assert follows.fit(torch.from_numpy(X), X[:, -1, 0]).network_.dtype == np.float64


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sequence", [False, True])
def test_a_padded_batch_from_a_given_state_matches_torchs_packed_sequences(cell, dtype,
                                                                           sequence, rng):
    """Sequences of several lengths (lengths), each layer starting from a given
    (h0, c0): outputs at the real steps (or each sequence's last) and all weight
    gradients are torch's over pack_padded_sequence, from the same state."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    T, N, D, K, hidden = 6, 5, 3, 2, (5, 4)
    net = make_network(D, hidden, K, dtype=dtype, cell=cell)
    lengths = np.array([6, 2, 4, 1, 5], dtype=np.int64)
    real = np.arange(T)[:, None] < lengths[None, :]                # (T, N)
    x = rng.standard_normal((T, N, D)).astype(dtype)
    state = [tuple(rng.standard_normal((N, H)).astype(dtype) for _ in range(2)) for H in hidden]
    out, tape = net.forward(x, sequence, lengths=lengths, initial_state=state)
    dout = rng.standard_normal(out.shape).astype(dtype)            # loss = sum(out * dout)
    if sequence:
        dout.reshape(T, N, K)[~real] = 0                           # padded steps: no loss
    net.backward(tape, dout)

    lstms, head = torch_twin(net)
    h = pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                             enforce_sorted=False)
    for lstm, (h0, c0) in zip(lstms, state):
        h0, c0 = torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]
        h, last = lstm(h, (h0, c0) if cell == "lstm" else h0)
    if sequence:
        top = pad_packed_sequence(h, total_length=T)[0].reshape(T * N, -1)
    else:  # each sequence's last real step
        top = (last[0] if cell == "lstm" else last)[0]
    out_t = head(top)
    (out_t * torch.from_numpy(dout)).sum().backward()

    got, want = out, out_t.detach().numpy()
    if sequence:    # the real steps (padded ones carry the state in ours, zeros in torch's)
        got, want = got.reshape(T, N, K)[real], want.reshape(T, N, K)[real]
    np.testing.assert_allclose(got, want, rtol=0, atol=OUT_TOL[dtype])
    assert_gradients_match(net, lstms, head)
