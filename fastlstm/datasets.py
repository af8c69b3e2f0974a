"""Built-in data for examples, the demo and the tests: nothing is downloaded."""
import numpy as np


def noisy_sine(n_points=1000, stop=50.0, noise=0.1, random_state=0):
    """sin(t) on n_points evenly spaced t in [0, stop], plus Gaussian noise.

    Returns the series (n_points,) float32.
    """
    rng = np.random.default_rng(random_state)
    t = np.linspace(0.0, stop, n_points)
    return (np.sin(t) + rng.normal(0.0, noise, n_points)).astype(np.float32)


def make_windows(series, time_step, horizon=1):
    """Cut a series into supervised windows.

    series (n,) or (n, n_features) -> X (m, time_step, n_features) and the value
    `horizon` steps after each window, y (m,) or (m, n_features), with
    m = n - time_step - horizon + 1.
    """
    series = np.asarray(series)
    if series.ndim not in (1, 2):
        raise ValueError(f"series must be 1-D or 2-D (n, n_features), got {series.ndim}-D")
    if time_step < 1 or horizon < 1:
        raise ValueError(f"time_step and horizon must be >= 1, got {time_step} and {horizon}")
    m = len(series) - time_step - horizon + 1
    if m < 1:
        raise ValueError(f"series of length {len(series)} is too short for windows of "
                         f"{time_step} steps and horizon {horizon}")
    table = series.reshape(len(series), -1)                      # (n, n_features)
    X = np.lib.stride_tricks.sliding_window_view(table[:m + time_step - 1], time_step, axis=0)
    X = np.ascontiguousarray(X.transpose(0, 2, 1))               # (m, time_step, n_features)
    y = series[time_step + horizon - 1:]                         # (m,) or (m, n_features)
    return X, y.copy()


def binary_addition(n_bits=8, random_state=0):
    """Every pair a, b < 2**(n_bits - 1), in a shuffled order, as sequences.

    Returns X (n, n_bits, 2) float32, the bits of a and b least significant
    first; y (n, n_bits) int, the bits of a + b; and a, b themselves.
    """
    half = np.arange(2 ** (n_bits - 1))
    a, b = (v.ravel() for v in np.meshgrid(half, half))
    order = np.random.default_rng(random_state).permutation(a.size)
    a, b = a[order], b[order]
    shifts = np.arange(n_bits)
    X = np.stack([(a[:, None] >> shifts) & 1, (b[:, None] >> shifts) & 1], axis=2)
    y = ((a + b)[:, None] >> shifts) & 1
    return X.astype(np.float32), y, a, b


def bits_to_int(bits):
    """(..., n_bits) least significant first -> integers (...)."""
    bits = np.asarray(bits)
    return (bits.astype(np.int64) << np.arange(bits.shape[-1])).sum(axis=-1)
