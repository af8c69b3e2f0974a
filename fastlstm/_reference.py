"""The readable specification: one LSTM, RNN or GRU layer in plain NumPy, step by step.

Every compiled kernel is tested against these functions. Nothing here runs
when fastlstm trains or predicts.

Shapes: T time steps, N batch, D input features, H hidden units, G = 4H
(LSTM), 3H (GRU) or H (RNN). Gate blocks are stacked in torch's order: i, f, g,
o for the LSTM, r, z, n for the GRU.
"""
import numpy as np


def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow for large |x|."""
    x = np.asarray(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def lstm_forward(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0):
    """x (T, N, D) -> h (T, N, H) and the cache backward needs."""
    T = x.shape[0]
    H = weight_hh.shape[1]
    h_prev, c_prev = h0, c0
    hs, cache = [], []
    for t in range(T):
        a = x[t] @ weight_ih.T + bias_ih + h_prev @ weight_hh.T + bias_hh  # (N, G)
        i = sigmoid(a[:, :H])
        f = sigmoid(a[:, H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = sigmoid(a[:, 3 * H:])
        c = f * c_prev + i * g
        h = o * np.tanh(c)
        cache.append((x[t], h_prev, c_prev, i, f, g, o, c))
        hs.append(h)
        h_prev, c_prev = h, c
    h_all = np.stack(hs) if hs else np.zeros((0,) + h0.shape, dtype=x.dtype)
    return h_all, c_prev, cache


def lstm_backward(dh_all, dc_last, weight_ih, weight_hh, cache):
    """Gradients of a loss given dL/dh_t for every t (T, N, H) and dL/dc_T (N, H).

    Returns dx (T, N, D), dW_ih, dW_hh, db_ih, db_hh, dh0, dc0.
    """
    dW_ih = np.zeros_like(weight_ih)
    dW_hh = np.zeros_like(weight_hh)
    db = np.zeros(weight_hh.shape[0], dtype=weight_hh.dtype)
    dx = []
    dh_next = np.zeros_like(dc_last)
    dc_next = dc_last
    for t in reversed(range(len(cache))):
        x_t, h_prev, c_prev, i, f, g, o, c = cache[t]
        dh = dh_all[t] + dh_next
        tanh_c = np.tanh(c)
        # through h = o * tanh(c)
        do = dh * tanh_c
        dc = dc_next + dh * o * (1 - tanh_c ** 2)
        # through c = f * c_prev + i * g
        di = dc * g
        dg = dc * i
        df = dc * c_prev
        dc_next = dc * f
        # through the nonlinearities, to the pre-activations a
        da = np.concatenate([di * i * (1 - i), df * f * (1 - f),
                             dg * (1 - g ** 2), do * o * (1 - o)], axis=1)  # (N, G)
        # through a = x W_ih.T + b_ih + h_prev W_hh.T + b_hh
        dW_ih += da.T @ x_t
        dW_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dx.append(da @ weight_ih)
        dh_next = da @ weight_hh
    dx = np.stack(dx[::-1]) if dx else np.zeros((0,) + dc_last.shape[:1] + weight_ih.shape[1:])
    return dx, dW_ih, dW_hh, db, db.copy(), dh_next, dc_next


# ---- the plain RNN cell: h = act(x W_ih.T + b_ih + h_prev W_hh.T + b_hh) ------------
# W_ih (H, D), W_hh (H, H), b_ih, b_hh (H,); act is tanh or sigmoid.

def rnn_forward(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, nonlinearity="tanh"):
    """x (T, N, D) -> h (T, N, H) and the cache backward needs."""
    act = np.tanh if nonlinearity == "tanh" else sigmoid
    h_prev = h0
    hs, cache = [], []
    for t in range(x.shape[0]):
        h = act(x[t] @ weight_ih.T + bias_ih + h_prev @ weight_hh.T + bias_hh)   # (N, H)
        cache.append((x[t], h_prev, h))
        hs.append(h)
        h_prev = h
    h_all = np.stack(hs) if hs else np.zeros((0,) + h0.shape, dtype=x.dtype)
    return h_all, cache


def rnn_backward(dh_all, weight_ih, weight_hh, cache, nonlinearity="tanh"):
    """Gradients given dL/dh_t for every t (T, N, H).

    Returns dx (T, N, D), dW_ih, dW_hh, db_ih, db_hh, dh0.
    """
    dW_ih = np.zeros_like(weight_ih)
    dW_hh = np.zeros_like(weight_hh)
    db = np.zeros(weight_hh.shape[0], dtype=weight_hh.dtype)
    dx = []
    dh_next = np.zeros(dh_all.shape[1:], dtype=dh_all.dtype)
    for t in reversed(range(len(cache))):
        x_t, h_prev, h = cache[t]
        dh = dh_all[t] + dh_next
        # through the nonlinearity, to the pre-activation a
        da = dh * (1 - h ** 2) if nonlinearity == "tanh" else dh * h * (1 - h)   # (N, H)
        dW_ih += da.T @ x_t
        dW_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dx.append(da @ weight_ih)
        dh_next = da @ weight_hh
    dx = np.stack(dx[::-1]) if dx else np.zeros(dh_all.shape[:2] + weight_ih.shape[1:])
    return dx, dW_ih, dW_hh, db, db.copy(), dh_next


# ---- the GRU cell, torch's equations and gate order r, z, n -----------------------
# W_ih (3H, D), W_hh (3H, H), b_ih, b_hh (3H,):
#   r = sig(x W_ir.T + b_ir + h_prev W_hr.T + b_hr)
#   z = sig(x W_iz.T + b_iz + h_prev W_hz.T + b_hz)
#   n = tanh(x W_in.T + b_in + r * (h_prev W_hn.T + b_hn))
#   h = (1 - z) * n + z * h_prev

def gru_forward(x, weight_ih, weight_hh, bias_ih, bias_hh, h0):
    """x (T, N, D) -> h (T, N, H) and the cache backward needs."""
    H = weight_hh.shape[1]
    h_prev = h0
    hs, cache = [], []
    for t in range(x.shape[0]):
        ai = x[t] @ weight_ih.T + bias_ih                   # (N, 3H) input side
        ah = h_prev @ weight_hh.T + bias_hh                 # (N, 3H) hidden side
        r = sigmoid(ai[:, :H] + ah[:, :H])
        z = sigmoid(ai[:, H:2 * H] + ah[:, H:2 * H])
        hn = ah[:, 2 * H:]                                  # W_hn h_prev + b_hn
        n = np.tanh(ai[:, 2 * H:] + r * hn)
        h = (1 - z) * n + z * h_prev
        cache.append((x[t], h_prev, r, z, n, hn))
        hs.append(h)
        h_prev = h
    h_all = np.stack(hs) if hs else np.zeros((0,) + h0.shape, dtype=x.dtype)
    return h_all, cache


def gru_backward(dh_all, weight_ih, weight_hh, cache):
    """Gradients given dL/dh_t for every t (T, N, H).

    Returns dx (T, N, D), dW_ih, dW_hh, db_ih, db_hh, dh0.
    """
    dW_ih = np.zeros_like(weight_ih)
    dW_hh = np.zeros_like(weight_hh)
    db_ih = np.zeros(weight_ih.shape[0], dtype=weight_ih.dtype)
    db_hh = np.zeros(weight_hh.shape[0], dtype=weight_hh.dtype)
    dx = []
    dh_next = np.zeros(dh_all.shape[1:], dtype=dh_all.dtype)
    for t in reversed(range(len(cache))):
        x_t, h_prev, r, z, n, hn = cache[t]
        dh = dh_all[t] + dh_next
        # through h = (1 - z) * n + z * h_prev
        dn = dh * (1 - z)
        dz = dh * (h_prev - n)
        # through the nonlinearities; n's pre-activation is a_in + r * hn
        da_n = dn * (1 - n ** 2)
        da_r = da_n * hn * r * (1 - r)
        da_z = dz * z * (1 - z)
        dai = np.concatenate([da_r, da_z, da_n], axis=1)          # (N, 3H) input side
        dah = np.concatenate([da_r, da_z, da_n * r], axis=1)      # (N, 3H) hidden side
        dW_ih += dai.T @ x_t
        dW_hh += dah.T @ h_prev
        db_ih += dai.sum(axis=0)
        db_hh += dah.sum(axis=0)
        dx.append(dai @ weight_ih)
        dh_next = dh * z + dah @ weight_hh
    dx = np.stack(dx[::-1]) if dx else np.zeros(dh_all.shape[:2] + weight_ih.shape[1:])
    return dx, dW_ih, dW_hh, db_ih, db_hh, dh_next
