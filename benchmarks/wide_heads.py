"""A softmax on every step over thousands of classes: fastlstm beside torch.

    python benchmarks/wide_heads.py [--threads N]

predict_proba of 256 sequences (T = 50, D = 32) through LSTM(128) to 5,000
classes on every step, best of 3; and a fit epoch of 512 sequences through
LSTM(32) to 2,000 classes on every step in batches of 32 (Adam, lr 1e-3), best
of 3. Each engine on the same number of threads. Table on stdout: times, lower
is better.
"""
import numpy as np

from small_batches import best_ms, engines, torch_epoch

T, D = 50, 32


def main():
    threads, torch, LSTMClassifier = engines(__doc__)
    rng = np.random.default_rng(0)
    print("| figure | fastlstm, ms | torch, ms | fastlstm:torch time |\n|---|---:|---:|---:|")

    H, K, N = 128, 5000, 256
    X = rng.standard_normal((N, T, D), dtype=np.float32)
    y = rng.integers(0, K, (N, T))
    model = LSTMClassifier((H,), output="sequence", max_iter=1, n_jobs=threads,
                           random_state=0).fit(X[:32], y[:32])
    lstm, head = torch.nn.LSTM(D, H, batch_first=True), torch.nn.Linear(H, K)
    X_t = torch.from_numpy(X)

    def torch_proba():
        with torch.inference_mode():
            return head(lstm(X_t)[0]).softmax(-1).numpy()

    ours = best_ms(lambda: model.predict_proba(X), repeats=3)
    theirs = best_ms(torch_proba, repeats=3)
    print(f"| predict_proba, {N} x {T} steps, LSTM({H}) -> {K:,} classes | {ours:.0f} | "
          f"{theirs:.0f} | {ours / theirs:.2f} |")

    H, K, N, batch = 32, 2000, 512, 32
    X = rng.standard_normal((N, T, D), dtype=np.float32)
    y = rng.integers(0, K, (N, T))
    model = LSTMClassifier((H,), output="sequence", batch_size=batch, max_iter=1,
                           warm_start=True, tol=0, n_iter_no_change=10**9, alpha=0.0,
                           n_jobs=threads, random_state=0)
    lstm, head = torch.nn.LSTM(D, H, batch_first=True), torch.nn.Linear(H, K)
    ours = best_ms(lambda: model.fit(X, y), repeats=3)
    theirs = best_ms(torch_epoch(torch, lstm, head, X, y, batch, per_step=True), repeats=3)
    print(f"| fit epoch, {N} x {T} steps, LSTM({H}) -> {K:,} classes, batches of {batch} | "
          f"{ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
