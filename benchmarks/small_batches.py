"""Small batches through wide LSTM layers: fastlstm beside torch.

    python benchmarks/small_batches.py [--threads N]

predict on N = 2 ... 32 sequences (T = 50, D = 32, 10 classes) through LSTM(256)
and LSTM(512), median of the best times of 30 calls, and fit epochs of 512
sequences in batches of 8, 12 and 16 (Adam, lr 1e-3), best of 3, each engine on
the same number of threads. Table on stdout: times, lower is better.
"""
import argparse
import time
import warnings

import numpy as np

T, D, K = 50, 32, 10


def best_ms(fn, repeats=30):
    """The best of `repeats` timed calls of fn, after one untimed, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def engines(doc):
    """Parse --threads for a script of this docstring -> (threads, torch on that
    many threads and seeded, LSTMClassifier, with ConvergenceWarning silenced)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    threads = parser.parse_args().threads
    import torch
    from sklearn.exceptions import ConvergenceWarning

    from fastlstm import LSTMClassifier
    warnings.simplefilter("ignore", ConvergenceWarning)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return threads, torch, LSTMClassifier


def torch_epoch(torch, lstm, head, X, y, batch, per_step=False):
    """A function running one epoch of torch's Adam (lr 1e-3) over X, y in
    shuffled batches: cross-entropy of head on the last step or, per_step, on
    every step."""
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-3)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)

    def epoch():
        for rows in torch.randperm(len(X_t)).split(batch):
            opt.zero_grad(set_to_none=True)
            h = lstm(X_t[rows])[0]
            logits = head(h if per_step else h[:, -1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                     y_t[rows].reshape(-1))
            loss.backward()
            opt.step()

    return epoch


def main():
    threads, torch, LSTMClassifier = engines(__doc__)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, T, D), dtype=np.float32)
    y = rng.integers(0, K, 512)
    print("| figure | H | fastlstm, ms | torch, ms | fastlstm:torch time |")
    print("|---|---:|---:|---:|---:|")
    for H in (256, 512):
        lstm, head = torch.nn.LSTM(D, H, batch_first=True), torch.nn.Linear(H, K)
        model = LSTMClassifier((H,), max_iter=1, n_jobs=threads, random_state=0)
        model.fit(X[:64], y[:64])

        def torch_predict(x):
            with torch.inference_mode():
                return head(lstm(x)[0][:, -1]).argmax(-1).numpy()

        for n in (2, 4, 8, 12, 16, 32):
            x, x_t = X[:n], torch.from_numpy(X[:n])
            ours, theirs = best_ms(lambda: model.predict(x)), best_ms(lambda: torch_predict(x_t))
            print(f"| predict {n} sequences | {H} | {ours:.2f} | {theirs:.2f} | "
                  f"{ours / theirs:.2f} |")
        for batch in (8, 12, 16):
            model = LSTMClassifier((H,), batch_size=batch, max_iter=1, warm_start=True, tol=0,
                                   n_iter_no_change=10**9, alpha=0.0, n_jobs=threads,
                                   random_state=0)
            ours = best_ms(lambda: model.fit(X, y), repeats=3)
            theirs = best_ms(torch_epoch(torch, lstm, head, X, y, batch), repeats=3)
            print(f"| fit epoch, batches of {batch} | {H} | {ours:.0f} | {theirs:.0f} | "
                  f"{ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
