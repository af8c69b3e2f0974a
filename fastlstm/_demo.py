"""The demo behind `fastlstm demo`: four classic LSTM workloads on built-in data
(nothing is downloaded), each next to a simple baseline, ending in one table.

1. noisy sine forecasting: test MSE next to repeating the last value, and a PNG
   plot of true vs predicted (when matplotlib is installed);
2. 8-bit binary addition: exact sums on held-out pairs next to adding without
   carries, with worked examples;
3. character-level text on Python's own help texts: validation bits per
   character next to the unigram entropy, and generated text at two
   temperatures;
4. the adding problem over 100 steps, where a value from the first 10 steps
   must be kept to the end: the LSTM next to a plain tanh RNN of the same size
   and training budget, whose gradients vanish over the lag.
"""
import contextlib
import os
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from ._estimators import LSTMClassifier, LSTMRegressor
from .datasets import (CharVocabulary, adding_problem, binary_addition, bits_to_int,
                       char_windows, make_windows, noisy_sine, pydoc_topics_text)


def _fit(model, X, y, label, progress):
    """model.fit(X, y), under a label with the estimator's own per-epoch progress
    bar on stderr when progress is on; returns the wall seconds it took."""
    if progress:
        print(f"{label}:", file=sys.stderr, flush=True)
    tic = time.perf_counter()
    model.set_params(verbose=1 if progress else 0).fit(X, y)
    return time.perf_counter() - tic


def _plot_sine(path, true, pred, naive, out):
    """True vs predicted on the test split, as a PNG; needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (matplotlib is not installed: no plot; pip install 'fastlstm[plot]')",
              file=out)
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    steps = np.arange(len(true))
    ax.plot(steps, true, ".", ms=3, color="0.6", label="true (noisy)")
    ax.plot(steps, naive, lw=1, color="tab:orange", alpha=0.7, label="last value")
    ax.plot(steps, pred, lw=1.5, color="tab:blue", label="LSTM one step ahead")
    ax.set_xlabel("test step")
    ax.set_title("noisy sine: LSTM(50) on windows of 10")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as err:  # a read-only folder, say: the results are still printed
        print(f"  (could not write the plot: {err}; no plot)", file=out)
        return None
    finally:
        plt.close(fig)
    return path


def sine_task(quick, out, progress, plot_path):
    """LSTM(50) -> 1 on windows of 10 of a noisy sine: test MSE vs the last value."""
    print("== noisy sine forecasting: LSTM(50) -> 1, windows of 10 ==", file=out, flush=True)
    X, y = make_windows(noisy_sine(), time_step=10)               # X (990, 10, 1), y (990,)
    split = int(0.8 * len(X))
    model = LSTMRegressor(hidden_layer_sizes=(50,), batch_size=32, max_iter=20 if quick else 60,
                          random_state=0)
    seconds = _fit(model, X[:split], y[:split], "sine", progress)
    pred = model.predict(X[split:])
    naive = X[split:, -1, 0]                                     # repeat the last value
    mse = float(np.mean((pred - y[split:]) ** 2))
    naive_mse = float(np.mean((naive - y[split:]) ** 2))
    print(f"  test MSE {mse:.4f}, last-value baseline {naive_mse:.4f}", file=out)
    if plot_path is not None and _plot_sine(plot_path, y[split:], pred, naive, out):
        print(f"  plot of true vs predicted: {os.path.abspath(plot_path)}", file=out)
    return ("sine forecast", "test MSE", mse, "last value", naive_mse, seconds)


def binary_addition_task(quick, out, progress):
    """LSTM(16), one sum bit per step: exact sums on held-out pairs vs no carries."""
    print("== 8-bit binary addition: LSTM(16), one sum bit per step ==", file=out, flush=True)
    X, y, a, b = binary_addition(8)                               # X (16384, 8, 2), y (16384, 8)
    n_train = 4096
    model = LSTMClassifier(hidden_layer_sizes=(16,), output="sequence", learning_rate_init=1e-2,
                           batch_size=64, max_iter=10 if quick else 40, random_state=0)
    seconds = _fit(model, X[:n_train], y[:n_train], "binary addition", progress)
    pred = model.predict(X[n_train:])                             # (n_test, 8) bits
    exact = float(np.mean((pred == y[n_train:]).all(axis=1)))
    for k in range(3):
        j = n_train + k
        print(f"  {a[j]:3d} + {b[j]:3d} = {bits_to_int(pred[k]):3d}  (true {a[j] + b[j]})",
              file=out)
    # baseline: the bitwise XOR of the inputs, i.e. addition without carries
    xor = (X[n_train:, :, 0] + X[n_train:, :, 1]) % 2
    no_carry = float(np.mean((xor == y[n_train:]).all(axis=1)))
    return ("binary addition", "exact sums", exact, "no carry", no_carry, seconds)


def bits_per_char(proba, classes, targets, vocabulary, floor=1e-3):
    """Mean -log2 p(target) in bits, from per-step probabilities proba (m, T, C)
    over `classes` (characters) for the target characters (m, T).

    A character of the vocabulary the model never saw as a label has no column
    in proba: the probabilities are mixed with `floor` of the uniform
    distribution over the vocabulary, so it costs log2(V / floor) bits rather
    than infinitely many; that moves any other character's cost by at most
    -log2(1 - floor), 0.0014 bits.
    """
    V = len(vocabulary)
    full = np.zeros(proba.shape[:2] + (V,))                        # (m, T, V)
    full[..., vocabulary.encode("".join(classes))] = proba
    full = (1 - floor) * full + floor / V
    codes = vocabulary.encode("".join(targets.ravel())).reshape(targets.shape)  # (m, T)
    p = np.take_along_axis(full, codes[..., None], axis=-1)       # (m, T, 1)
    return float(-np.mean(np.log2(p)))


def char_text_task(quick, out, progress):
    """Two stacked LSTM layers with dropout on Python's help texts: bits per char
    vs the unigram entropy, and generated text at two temperatures."""
    text = pydoc_topics_text()
    vocab = CharVocabulary.from_text(text)          # every character, train or validation
    n_val = len(text) // 10
    train, val = text[:-n_val], text[-n_val:]
    if quick:                                       # a slice: seconds, and still well under unigram
        train, val = train[:60_000], val[:10_000]
    hidden, seq_len = ((64, 64), 32) if quick else ((128, 128), 64)
    print(f"== character-level text: LSTM({hidden[0]}) x 2 + dropout 0.2 on Python's help "
          f"texts ({len(train):,} training characters) ==", file=out, flush=True)
    # Non-overlapping windows with a label at every step (output="sequence"): every
    # character is a label once per epoch, and the model learns to keep going from
    # any state, which is what generation needs when it runs past seq_len.
    X, y = char_windows(train, seq_len, vocab, step=seq_len, targets="sequence")
    X_val, y_val = char_windows(val, seq_len, vocab, step=seq_len, targets="sequence")
    model = LSTMClassifier(hidden_layer_sizes=hidden, output="sequence", dropout=0.2,
                           learning_rate_init=2e-2 if quick else 1e-2, clip_grad_norm=5.0,
                           batch_size=32, max_iter=4 if quick else 5, random_state=0)
    seconds = _fit(model, X, y, "char text", progress)
    bpc = bits_per_char(model.predict_proba(X_val), model.classes_, y_val, vocab)
    # baseline: the training text's character frequencies (add-one smoothed)
    counts = np.bincount(vocab.encode(train), minlength=len(vocab)) + 1.0
    unigram = counts / counts.sum()                                # (V,)
    unigram_bpc = float(-np.mean(np.log2(unigram[vocab.encode("".join(y_val.ravel()))])))
    print(f"  validation bits per character {bpc:.3f}, unigram baseline {unigram_bpc:.3f}",
          file=out)
    seed = "The "
    for temperature in (0.5, 1.0):
        sample = model.generate(seed, 160 if quick else 400, vocabulary=vocab,
                                temperature=temperature, random_state=0)
        print(f"  -- generated at temperature {temperature} from {seed!r}:", file=out)
        for line in (seed + sample).splitlines():
            print(f"  | {line}", file=out)
    return ("char text", "val bits/char", bpc, "unigram", unigram_bpc, seconds)


def long_lag_task(quick, out, progress):
    """Adding problem, T=100: LSTM(16) vs a plain RNN(16), same budget; test MSE."""
    print("== long lag: the adding problem over 100 steps, LSTM(16) vs plain RNN(16) ==",
          file=out, flush=True)
    X, y = adding_problem(2048, 100, random_state=0)
    X_test, y_test = adding_problem(1000, 100, random_state=1)
    mse, seconds = {}, 0.0
    for cell in ("lstm", "rnn"):
        model = LSTMRegressor(16, cell=cell, learning_rate_init=1e-2, batch_size=32,
                              max_iter=30, n_iter_no_change=30, random_state=0)
        took = _fit(model, X, y, f"long lag, {cell}", progress)
        seconds += took if cell == "lstm" else 0.0
        mse[cell] = float(np.mean((model.predict(X_test) - y_test) ** 2))
        print(f"  {cell}: test MSE {mse[cell]:.4f}  ({took:.1f} s)", file=out)
    print(f"  predicting the mean: test MSE {np.mean((1.0 - y_test) ** 2):.4f}", file=out)
    return ("long lag (T=100)", "adding test MSE", mse["lstm"], "plain RNN", mse["rnn"], seconds)


def demo(quick=False, out=sys.stdout, progress=True, plot_path="fastlstm-demo-sine.png",
         blas_threads=None):
    """Run the four tasks, print a summary table to `out`; returns its rows
    (task, metric, value, baseline name, baseline value, fit seconds).

    plot_path: where the sine plot goes (None: no plot). progress: progress bars
    on stderr. blas_threads: a BLAS thread limit for the whole demo; None leaves
    the threads to fastlstm, which runs the small models on one thread and cuts
    the text model's batches into one slice per core (the whole demo: 23 s
    against 39 s with one thread, on 2 cores, and up to ~40 s while other work
    shares the machine).
    """
    tic = time.perf_counter()
    limit = (threadpool_limits(blas_threads, user_api="blas") if blas_threads
             else contextlib.nullcontext())
    with limit:
        rows = [sine_task(quick, out, progress, plot_path),
                binary_addition_task(quick, out, progress),
                char_text_task(quick, out, progress),
                long_lag_task(quick, out, progress)]
    print("\n| task | metric | fastlstm | baseline | baseline value | fit time (s) |", file=out)
    print("|---|---|---|---|---|---|", file=out)
    for task, metric, value, base_name, base_value, seconds in rows:
        print(f"| {task} | {metric} | {value:.4f} | {base_name} | {base_value:.4f} | "
              f"{seconds:.1f} |", file=out)
    print(f"\ntotal {time.perf_counter() - tic:.0f} s (lower is better for MSE and bits/char, "
          f"higher for exact sums)", file=out, flush=True)
    return rows
