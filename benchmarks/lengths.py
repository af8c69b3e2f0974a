"""Lists of sequences of several lengths: fastlstm beside torch's packed sequences.

    python benchmarks/lengths.py [--threads N] [--quick]

Two sets of 8-feature float32 sequences, a many-to-one LSTM(32) -> 2 classes
(softmax cross-entropy, Adam, lr 1e-3, batches of 64, shuffled):
- skewed: 20,000 sequences of 5 steps and one of 2,000;
- lognormal: 5,000 sequences, lengths exp(N(3, 1)) clipped to [1, 3000] (median 20).
fastlstm takes the list itself (LSTMClassifier.fit / predict_proba); torch pads each
batch (pad_sequence) and packs it (pack_padded_sequence, enforce_sorted=False), the
usual way to feed nn.LSTM sequences of several lengths, and predicts in batches of
256 in the list's order. Each engine runs in a fresh child process (`--child ENGINE
SET`), which reports the best of 3 fit epochs after a warm-up one, the best of 3
predicts, and its peak resident memory (VmHWM) in MB. Tables on stdout.
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np

SETS = ("skewed", "lognormal")
D, H, K, BATCH, PREDICT_BATCH = 8, 32, 2, 64, 256


def make_set(name, quick=False):
    """(list of (T_i, D) float32 arrays, labels (N,) int64)."""
    rng = np.random.default_rng(0)
    if name == "skewed":
        lengths = np.append(np.full(2000 if quick else 20000, 5), 2000)
    else:
        lengths = np.clip(rng.lognormal(3, 1, 500 if quick else 5000).astype(int), 1, 3000)
    X = [rng.standard_normal((L, D), dtype=np.float32) for L in lengths]
    return X, rng.integers(0, K, len(X))


def peak_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024


def best_of(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_fastlstm(X, y, threads):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from fastlstm import LSTMClassifier
    warnings.simplefilter("ignore", ConvergenceWarning)
    model = LSTMClassifier(hidden_layer_sizes=(H,), batch_size=BATCH, max_iter=1, tol=0.0,
                           learning_rate_init=1e-3, alpha=0.0, warm_start=True,
                           n_jobs=threads, random_state=0)
    model.fit(X, y)                                              # warm-up epoch
    fit_s = best_of(lambda: model.fit(X, y))
    predict_s = best_of(lambda: model.predict_proba(X))
    return fit_s, predict_s


def run_torch(X, y, threads):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    lstm, head = torch.nn.LSTM(D, H, batch_first=True), torch.nn.Linear(H, K)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    seqs = [torch.from_numpy(x) for x in X]
    lengths = torch.tensor([len(x) for x in X])
    labels = torch.from_numpy(y)

    def forward(rows):                                           # -> logits (B, K)
        padded = pad_sequence([seqs[r] for r in rows], batch_first=True)
        packed = pack_padded_sequence(padded, lengths[rows], batch_first=True,
                                      enforce_sorted=False)
        _, (h, _) = lstm(packed)                                 # h (1, B, H), last real steps
        return head(h[0])

    def epoch():
        for rows in torch.randperm(len(seqs)).split(BATCH):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(forward(rows.tolist()), labels[rows]).backward()
            opt.step()

    def predict():
        with torch.inference_mode():
            return torch.cat([forward(list(range(start, min(start + PREDICT_BATCH, len(seqs)))))
                              .softmax(-1) for start in range(0, len(seqs), PREDICT_BATCH)])

    epoch()                                                      # warm-up epoch
    return best_of(epoch), best_of(predict)


ENGINES = {"fastlstm": run_fastlstm, "torch": run_torch}


def child(engine, name, threads, quick):
    X, y = make_set(name, quick)
    fit_s, predict_s = ENGINES[engine](X, y, threads)
    print(json.dumps({"fit_s": fit_s, "predict_s": predict_s, "peak_mb": peak_mb()}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a tenth of the sequences")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "SET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.threads, args.quick)
    print("Times and memory, lower is better; fastlstm:torch < 1 means fastlstm does better.\n")
    print("| set | figure | fastlstm | torch | fastlstm:torch |\n|---|---|---:|---:|---:|")
    for name in SETS:
        results = {}
        for engine in ENGINES:
            command = [sys.executable, __file__, "--child", engine, name,
                       "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                print(f"{engine} on {name} failed:\n{done.stderr}", file=sys.stderr)
                results[engine] = None
                continue
            results[engine] = json.loads(done.stdout.strip().splitlines()[-1])
        for figure, unit in (("fit_s", "fit epoch, s"), ("predict_s", "predict_proba, s"),
                             ("peak_mb", "peak memory, MB")):
            ours, theirs = (None if results[e] is None else results[e][figure] for e in ENGINES)
            ratio = "" if ours is None or theirs is None else f"{ours / theirs:.2f}"
            cells = ["" if v is None else f"{v:.3f}" if figure != "peak_mb" else f"{v:.0f}"
                     for v in (ours, theirs)]
            print(f"| {name} | {unit} | {cells[0]} | {cells[1]} | {ratio} |")


if __name__ == "__main__":
    main()
