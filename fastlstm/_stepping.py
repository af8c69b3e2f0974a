"""Running a fitted network on from a carried (h, c) state: stepping, forecasting
and text generation. The estimators' `step`, `forecast` and `generate` are thin
wrappers over these functions.

Every call goes through `LSTMNetwork.forward` with `initial_state`, so one
step (T=1) or a chunk runs in the same compiled per-layer kernels as a whole
sequence; nothing re-runs the history.
"""
import numbers

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _cells
from ._network import _Arena
from ._validation import check_sequences, unflatten_steps


def check_step_input(est, X):
    """X (N, T, D), or (N, T) univariate, of any length T >= 1 -> float (N, T, D).
    A model fitted with step_features also reads a 2-D X as predict does, as
    flattened steps (N, T * step_features)."""
    check_is_fitted(est, "network_")
    net = est.network_
    check_runs_forward(net)
    X3, x_ndim = check_sequences(X, net.dtype)
    if x_ndim == 2 and est._step_features is not None:
        X3 = unflatten_steps(X3, est._step_features)
    if X3.shape[2] != net.n_features:
        raise ValueError(
            f"X has {X3.shape[2]} features per time step, but {type(est).__name__} was fitted "
            f"on {net.n_features}" + (" (pass 3-D X (n_sequences, n_steps, n_features))"
                                      if x_ndim == 2 else ""))
    return X3


def check_runs_forward(net):
    """Stepping carries a state forward in time: a bidirectional network has none."""
    if net.bidirectional:
        raise ValueError("step, forecast and generate need a model that runs forward in time; "
                         "this one was fitted with bidirectional=True")


def check_state(net, state, n_sequences):
    """None, or [(h, c)] per layer, each (N, H_k) -> the same as arrays of net's dtype."""
    if state is None:
        return None
    sizes = net.hidden_sizes
    if not isinstance(state, (list, tuple)) or len(state) != len(sizes):
        raise ValueError(f"state must be a list of {len(sizes)} (h, c) pairs, one per LSTM "
                         f"layer, as returned by step(); got {type(state).__name__}")
    checked = []
    for k, (pair, H) in enumerate(zip(state, sizes)):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"state[{k}] must be an (h, c) pair")
        h, c = (np.asarray(s, dtype=net.dtype) for s in pair)
        for name, s in (("h", h), ("c", c)):
            if s.shape != (n_sequences, H):
                raise ValueError(f"state[{k}] {name} has shape {s.shape}, expected "
                                 f"({n_sequences}, {H}) for {n_sequences} sequences")
            if not np.isfinite(s).all():
                raise ValueError(f"state[{k}] {name} contains NaN or infinity")
        if net.cell != "lstm" and c.any():   # an LSTM's state passed to another model
            raise ValueError(f"state[{k}] c must be zeros: a {net.cell.upper()} layer has no "
                             "cell state (pass the state step() returned)")
        checked.append((h, c))
    return checked


def run(net, X3, state, arena=None, n_threads=None):
    """X3 (N, T, D) from state -> (raw head output after every step (N, T, K),
    new state). n_threads: as in net.forward.

    The head runs on each step's (N, H) block by itself, the very product
    `predict` computes for the last step: BLAS may round a product of another
    shape differently in the last bit, and this keeps the outputs independent of
    how a sequence is cut into chunks.
    """
    N, T, _ = X3.shape
    x_tm = np.ascontiguousarray(X3.transpose(1, 0, 2))          # (T, N, D) time-major
    _, tape = net.forward(x_tm, False, training=False, arena=arena, initial_state=state,
                          n_threads=n_threads, keep=False)
    top_h = tape.layers[-1][4]                                  # (T, N, H_last), no dropout
    w, b = net.p["head.weight"], net.p["head.bias"]             # (K, H_last), (K,)
    out = np.empty((N, T, net.n_outputs), dtype=net.dtype)
    step_out = np.empty((N, net.n_outputs), dtype=net.dtype)   # (N, K)
    for t in range(T):
        _cells.dense_forward(top_h[t], w, b, step_out)          # as in forward
        out[:, t] = step_out
    return out, tape.final_state()


def _check_count(value, name):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def forecast(est, X3, n_steps, n_threads=None):
    """Autoregressive forecast: each prediction is fed back as the next input.

    X3 (N, T, D) history, from check_step_input -> (n_steps, N, D) predictions,
    time-major.
    A many-to-one model fitted on windows of one length (output="last",
    est.n_timesteps_in_ set) slides a window of that length: each prediction
    runs the last n_timesteps_in_ values from a zero state, as in training.
    Carrying its state past that length feeds it sequences longer than any it
    was fitted on (the quick start's sine model, 10 steps from 34 test windows:
    MSE 0.37 carried, 0.035 sliding, 0.055 repeating the last value). Other
    models (output="sequence", or fitted on several lengths) carry the state:
    the history runs once, then each new value is one T=1 step.
    n_threads: as in net.forward.
    """
    n_steps = _check_count(n_steps, "n_steps")
    net = est.network_
    if net.n_outputs != net.n_features:
        raise ValueError(
            f"forecast feeds each prediction back as the next input, so the model must "
            f"predict as many values ({net.n_outputs}) as it takes per step "
            f"({net.n_features})")
    N, T, D = X3.shape
    window = est.n_timesteps_in_ if est._output == "last" else None
    if window is not None and T < window:
        raise ValueError(
            f"X has {T} time steps of history, but the model forecasts from windows of the "
            f"{window} steps it was fitted on")
    preds = np.empty((n_steps, N, net.n_outputs), dtype=net.dtype)
    if n_steps == 0:
        return preds
    arena = _Arena(net.dtype)  # private to this call, reused by every step
    with net.weights_held():   # nothing here writes them: compared on the first call only
        if window is not None:
            # the last `window` values, then the predictions as they come: (N, window + n_steps, D)
            seq = np.concatenate([X3[:, T - window:], np.empty((N, n_steps, D), net.dtype)],
                                 axis=1)
            for k in range(n_steps):
                out, _ = run(net, seq[:, k:k + window], None, arena, n_threads)  # (N, window, K)
                preds[k] = seq[:, window + k] = out[:, -1]
            return preds
        out, state = run(net, X3, None, arena, n_threads)       # (N, T, K)
        for k in range(n_steps):
            preds[k] = out[:, -1]                               # (N, K) next value
            if k + 1 < n_steps:                                 # one step, T=1, from state
                out, state = run(net, preds[k][:, None, :], state, arena, n_threads)
    return preds


def _class_codes(est, vocabulary):
    """codes (C,) in vocabulary of the classifier's classes_: single characters, or
    the vocabulary's integer codes themselves (labels made with vocabulary.encode)."""
    for attr in ("chars", "encode", "one_hot"):
        if not hasattr(vocabulary, attr):
            raise TypeError("vocabulary must be a fastlstm.datasets.CharVocabulary, got "
                            f"{type(vocabulary).__name__}")
    classes = est.classes_
    if classes.dtype.kind in "iu":
        if classes.min() < 0 or classes.max() >= len(vocabulary):
            raise ValueError(f"the classifier's integer classes run from {classes.min()} to "
                             f"{classes.max()}, not codes of a vocabulary of "
                             f"{len(vocabulary)} characters")
        return classes.astype(np.int64)
    if not all(isinstance(c, str) and len(c) == 1 for c in classes):
        raise ValueError(
            "generate needs a classifier trained on next-character labels (single-character "
            "strings, e.g. from fastlstm.datasets.char_windows, or their codes from "
            f"vocabulary.encode); its classes_ are "
            f"{classes[:5].tolist()}{'...' if len(classes) > 5 else ''}")
    unknown = [c for c in classes if c not in vocabulary]
    if unknown:
        raise ValueError(f"the classifier's classes {''.join(unknown)!r} are not in the "
                         f"vocabulary: pass the vocabulary the training windows were made with")
    return vocabulary.encode("".join(classes))


def generate(est, seed, n_chars, vocabulary, temperature, random_state, n_threads=None):
    """Sample n_chars characters after `seed`, one at a time, carrying the state.
    n_threads: as in net.forward."""
    check_is_fitted(est, "network_")
    net = est.network_
    check_runs_forward(net)
    class_codes = _class_codes(est, vocabulary)                  # (C,)
    # the input rows the classifier was trained on: one-hot, or the integer code
    if net.n_features == len(vocabulary):
        rows = vocabulary.one_hot(class_codes, dtype=net.dtype)  # (C, V)
        seed_rows = vocabulary.one_hot
    elif net.n_features == 1:
        rows = class_codes.astype(net.dtype)[:, None]             # (C, 1)
        seed_rows = lambda codes, dtype: codes.astype(dtype)[:, None]  # noqa: E731
    else:
        raise ValueError(
            f"the classifier takes {net.n_features} features per step, but the vocabulary "
            f"encodes a character as {len(vocabulary)} one-hot features (or 1 integer code)")
    if not isinstance(seed, str) or not seed:
        raise ValueError(f"seed must be a non-empty str, got {seed!r}")
    unknown = sorted(set(seed) - set(vocabulary.chars))
    if unknown:
        raise ValueError(f"seed has characters outside the vocabulary: {''.join(unknown)!r}")
    n_chars = _check_count(n_chars, "n_chars")
    if not (isinstance(temperature, numbers.Real) and np.isfinite(temperature)
            and temperature >= 0):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    rs = check_random_state(random_state)

    arena = _Arena(net.dtype)
    x = seed_rows(vocabulary.encode(seed), net.dtype)[None]       # (1, len(seed), D)
    with net.weights_held():   # nothing here writes them: compared on the first call only
        logits, state = run(net, x, None, arena, n_threads)       # (1, T, C)
        logits = logits[:, -1]                                    # (1, C) after the seed
        picked = np.empty(n_chars, dtype=np.intp)
        for k in range(n_chars):
            if temperature == 0:                                  # greedy
                j = int(np.argmax(logits[0]))
            else:  # softmax(logits / temperature), sampled by inverse CDF with one uniform draw
                z = logits[0].astype(np.float64)                  # (C,)
                # the max taken off before the division: a tiny temperature then sends
                # the others to -inf, not every logit to +-inf (inf - inf: NaN)
                cdf = np.cumsum(np.exp((z - z.max()) / temperature))   # unnormalised, >= 1
                j = min(int(np.searchsorted(cdf, rs.random_sample() * cdf[-1], side="right")),
                        len(cdf) - 1)
            picked[k] = j
            if k + 1 < n_chars:
                logits, state = run(net, rows[j][None, None], state, arena, n_threads)
                logits = logits[:, -1]
    return "".join(vocabulary.chars[code] for code in class_codes[picked])
