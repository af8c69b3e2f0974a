"""Command line: `python -m fastlstm demo [--quick]`.

The demo trains on data it makes itself (no download): noisy sine forecasting
and 8-bit binary addition, and ends in one summary table.
"""
import argparse
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from . import LSTMClassifier, LSTMRegressor
from .datasets import binary_addition, bits_to_int, make_windows, noisy_sine


def demo(quick=False, out=sys.stdout):
    rows = []

    # 1. noisy sine: LSTM(50) -> 1 on windows of 10 steps
    X, y = make_windows(noisy_sine(), time_step=10)
    split = int(0.8 * len(X))
    model = LSTMRegressor(hidden_layer_sizes=(50,), batch_size=32, max_iter=20 if quick else 60,
                          random_state=0, verbose=0 if quick else 1)
    print("== noisy sine forecasting: LSTM(50) -> 1, windows of 10 ==", file=out, flush=True)
    tic = time.perf_counter()
    model.fit(X[:split], y[:split])
    fit_time = time.perf_counter() - tic
    mse = float(np.mean((model.predict(X[split:]) - y[split:]) ** 2))
    naive = float(np.mean((X[split:, -1, 0] - y[split:]) ** 2))
    rows.append(("sine forecast", "test MSE", mse, "last value", naive, fit_time))

    # 2. 8-bit binary addition: one output bit per step
    X, y, a, b = binary_addition()
    n_train = 4096
    model = LSTMClassifier(hidden_layer_sizes=(16,), output="sequence", learning_rate_init=1e-2,
                           batch_size=64, max_iter=10 if quick else 40, random_state=0,
                           verbose=0 if quick else 1)
    print("== 8-bit binary addition: LSTM(16), one sum bit per step ==", file=out, flush=True)
    tic = time.perf_counter()
    model.fit(X[:n_train], y[:n_train])
    fit_time = time.perf_counter() - tic
    pred = model.predict(X[n_train:])
    exact = float(np.mean((pred == y[n_train:]).all(axis=1)))
    for k in range(3):
        j = n_train + k
        print(f"  {a[j]:3d} + {b[j]:3d} = {bits_to_int(pred[k]):3d}  (true {a[j] + b[j]})",
              file=out)
    # baseline: the bitwise XOR of the inputs, i.e. addition without carries
    xor = float(np.mean(((X[n_train:, :, 0] + X[n_train:, :, 1]) % 2 == y[n_train:]).all(axis=1)))
    rows.append(("binary addition", "exact sums", exact, "no carry", xor, fit_time))

    print("\n| task | metric | fastlstm | baseline | baseline value | fit time (s) |", file=out)
    print("|---|---|---|---|---|---|", file=out)
    for task, metric, value, base_name, base_value, seconds in rows:
        print(f"| {task} | {metric} | {value:.4f} | {base_name} | {base_value:.4f} | "
              f"{seconds:.1f} |", file=out)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastlstm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo_parser = sub.add_parser("demo", help="train on built-in data and print a summary")
    demo_parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    if args.command == "demo":
        with warnings.catch_warnings():  # fixed epoch budgets: not-converged is expected
            warnings.simplefilter("ignore", category=ConvergenceWarning)
            demo(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
