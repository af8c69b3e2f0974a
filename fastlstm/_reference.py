"""The readable specification: one LSTM layer in plain NumPy, step by step.

Every compiled kernel is tested against these functions. Nothing here runs
when fastlstm trains or predicts.

Shapes: T time steps, N batch, D input features, H hidden units, G = 4H.
Gate blocks are stacked in torch's order i, f, g, o.
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
