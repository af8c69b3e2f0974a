"""fastlstm side by side with PyTorch (and Keras when it is installed) on the five
workloads of BENCHMARKS.md.

    python benchmarks/compare.py [--quick] [--workloads sine,binadd,...] [--threads N] [--markdown]
                                 [--cell lstm|gru|rnn]

All engines run in this process, taking turns (see take_turns), on the same float32 data,
batch size, thread count and network: LSTM stack -> dropout on every LSTM layer's
output (while training) -> linear head on the last step or on every step; half MSE
or softmax cross-entropy; Adam, lr 1e-3. --cell gru / rnn runs the same workloads
with GRU (torch.nn.GRU, keras GRU) or tanh RNN (torch.nn.RNN, keras SimpleRNN) layers. fastlstm is driven through its public
estimators, so validation and Python overhead count. Peak memory comes from fresh
child processes (`--child ENGINE WORKLOAD`). Progress goes to stderr, tables to stdout.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import NamedTuple

import numpy as np


class Workload(NamedTuple):
    n: int              # samples in one epoch
    T: int              # time steps
    D: int              # input features per step
    hidden: tuple       # H of each LSTM layer
    output: str         # "last": head on h[T-1]; "sequence": head on every step
    task: str           # "reg" (half MSE) or "clf" (softmax cross-entropy)
    K: int              # outputs (reg) or classes (clf)
    batch: int
    dropout: float = 0.0


WORKLOADS = {
    "sine":   Workload(990,  10,  1,   (50,),      "last",     "reg", 1,  32),
    "binadd": Workload(4096, 8,   2,   (16,),      "sequence", "reg", 1,  64),
    "charlm": Workload(2048, 50,  40,  (300, 300), "last",     "clf", 40, 30, dropout=0.2),
    "medium": Workload(4096, 50,  32,  (128,),     "last",     "clf", 10, 128),
    "large":  Workload(1024, 100, 128, (512,),     "last",     "clf", 10, 64),
}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
CELL = "lstm"              # --cell: the recurrent layer every engine uses
QUICK_BATCHES = 4          # --quick: at most this many minibatches per epoch
INFER_BATCH = 256
REPEATS = 3                # timed epochs / inference passes at least, the best one counts,
MIN_TIMED_S = 2.0          # ... and more while an engine has been timed for less than this
MAX_REPEATS = 50           # (short epochs: best of many, as timeit does, on a noisy machine)
TURN_S = 0.5               # the engines take turns (take_turns), each of calls for this long
SETTLE_S = 0.1             # a pause before each turn: the last engine's threads stop spinning


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_data(w, n, seed=0):
    """Synthetic data of the workload's shapes: X (n, T, D) float32 and
    y (n,) / (n, T) float32 targets or int64 labels."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, w.T, w.D), dtype=np.float32)
    shape = (n, w.T) if w.output == "sequence" else (n,)
    if w.task == "clf":
        return X, rng.integers(0, w.K, size=shape)
    return X, rng.standard_normal(shape + ((w.K,) if w.K > 1 else ()), dtype=np.float32)


def forward_flops_per_sample(w):
    """Matmul flops of one forward pass of one sequence: 2*T*G*(D+H) per layer,
    G = 4H (LSTM), 3H (GRU) or H (RNN)."""
    flops, n_in = 0, w.D
    for H in w.hidden:
        flops += 2 * w.T * GATES[CELL] * H * (n_in + H)
        n_in = H
    return flops


# ---- engines ---------------------------------------------------------------
# use_threads() pins the engine's thread count (process-wide, called before each
# measurement), fit_epoch(X, y) trains one epoch, predict(X) -> ndarray.

class FastLSTM:
    """fastlstm through its public estimators."""
    name = "fastlstm"

    def __init__(self, w, threads):
        from sklearn.exceptions import ConvergenceWarning
        from threadpoolctl import ThreadpoolController

        from fastlstm import LSTMClassifier, LSTMRegressor
        estimator = LSTMClassifier if w.task == "clf" else LSTMRegressor
        self.model = estimator(
            hidden_layer_sizes=w.hidden, cell=CELL, output=w.output, dropout=w.dropout,
            solver="adam",
            learning_rate_init=1e-3, batch_size=w.batch, max_iter=1, shuffle=True, alpha=0.0,
            tol=0.0, n_iter_no_change=10**9, random_state=0, warm_start=True)
        self.threads = threads
        self._blas = ThreadpoolController()   # sees scipy's OpenBLAS, loaded by fastlstm
        self._warning = ConvergenceWarning

    def use_threads(self):
        # not a `with threadpool_limits(...)` per call: that costs ~1.5 ms each time
        self._blas.limit(limits=self.threads, user_api="blas")

    def fit_epoch(self, X, y):
        # max_iter=1 and warm_start: each fit (X and y validated again) is one more
        # epoch of the same network and solver state, as the peers' loops run theirs;
        # the network's initialisation, like theirs, is not timed (without
        # warm_start each fit starts a new network: sine's epoch then reads 9%
        # slower, binadd's 4%, medium's 2%, charlm's and large's about 1%)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._warning)
            self.model.fit(X, y)

    def predict(self, X):
        return self.model.predict(X)


class Torch:
    """torch.nn.LSTM(batch_first=True) + Dropout + nn.Linear, hand-written epoch loop."""
    name = "torch"

    def __init__(self, w, threads):
        import torch
        assert len(set(w.hidden)) == 1, "nn.LSTM stacks layers of one width"
        self.torch, self.w, self.threads = torch, w, threads
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        H, layers = w.hidden[0], len(w.hidden)
        # nn.LSTM's own dropout acts between its layers; self.drop adds the one before the head
        module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[CELL]
        self.lstm = module(w.D, H, num_layers=layers, batch_first=True,
                           dropout=w.dropout if layers > 1 else 0.0)
        self.drop = torch.nn.Dropout(w.dropout)
        self.head = torch.nn.Linear(H, w.K)
        self.net = torch.nn.ModuleList([self.lstm, self.drop, self.head])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)

    def use_threads(self):
        self.torch.set_num_threads(self.threads)

    def _forward(self, x):                                # x (N, T, D)
        h, _ = self.lstm(x)                               # (N, T, H)
        if self.w.output == "last":
            h = h[:, -1]                                  # (N, H)
        return self.head(self.drop(h))                    # (N, K) or (N, T, K)

    def _loss(self, out, y):
        F = self.torch.nn.functional
        if self.w.task == "clf":
            return F.cross_entropy(out.reshape(-1, self.w.K), y.reshape(-1))
        return 0.5 * F.mse_loss(out, y.reshape(out.shape))

    def fit_epoch(self, X, y):
        torch = self.torch
        X, y = torch.from_numpy(X), torch.from_numpy(y)
        self.net.train()
        for idx in torch.randperm(len(X)).split(self.w.batch):   # shuffled minibatches
            self.opt.zero_grad(set_to_none=True)
            loss = self._loss(self._forward(X[idx]), y[idx])
            loss.backward()
            self.opt.step()

    def predict(self, X):
        torch = self.torch
        self.net.eval()
        with torch.inference_mode():
            out = self._forward(torch.from_numpy(X))
        return out.argmax(-1).numpy() if self.w.task == "clf" else out.numpy()


class Keras:
    """keras.layers.LSTM -> Dropout -> ... -> Dense, trained with model.fit."""
    name = "keras"

    def __init__(self, w, threads):
        import keras
        self.backend, self.threads, self.w = keras.backend.backend(), threads, w
        log(f"keras backend: {self.backend}")
        if self.backend == "tensorflow":
            import tensorflow as tf
            try:  # only possible before TensorFlow's runtime has started
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                log("note: TensorFlow was already running; its thread count is not pinned")
        layers = [keras.Input((w.T, w.D))]
        for k, H in enumerate(w.hidden):
            top = k == len(w.hidden) - 1
            layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU,
                     "rnn": keras.layers.SimpleRNN}[CELL]
            layers.append(layer(H, return_sequences=not top or w.output == "sequence"))
            if w.dropout:
                layers.append(keras.layers.Dropout(w.dropout))
        layers.append(keras.layers.Dense(w.K))
        keras.utils.set_random_seed(0)
        self.model = keras.Sequential(layers)
        loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=True) if w.task == "clf"
                else "mse")  # full, not half, MSE: the same work
        self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)

    def use_threads(self):
        if self.backend == "torch":
            import torch
            torch.set_num_threads(self.threads)

    def fit_epoch(self, X, y):
        if self.w.task == "reg" and self.w.output == "sequence":
            y = y[..., None]                              # (n, T) -> (n, T, 1) like the output
        self.model.fit(X, y, batch_size=self.w.batch, epochs=1, shuffle=True, verbose=0)

    def predict(self, X):
        return np.asarray(self.model.predict_on_batch(X))


def engine_classes():
    """The engines importable here; prints a note for each one skipped."""
    import importlib.util
    found = [FastLSTM, Torch]
    if importlib.util.find_spec("keras") is None:
        log("note: keras is not installed here, so the Keras column is skipped")
        return found
    try:
        import keras  # noqa: F401  (installed without its backend, it fails to import)
    except ImportError as err:
        log(f"note: keras is installed but does not import ({err}), so the Keras column "
            "is skipped")
        return found
    found.append(Keras)
    return found


ENGINES = {"fastlstm": FastLSTM, "torch": Torch, "keras": Keras}


# ---- the figures (shared by all engines) -------------------------------------

def take_turns(engines, warm_up, call, n, repeats, min_time_s, budget_s=15.0):
    """Highest n / seconds of call(engine) for each engine of {name: engine}, after one
    warm_up(engine) each. The engines take turns, each of calls for TURN_S seconds (at
    least one call) after a pause of SETTLE_S, until each has made `repeats` calls and
    min_time_s of them, or spent budget_s, or made MAX_REPEATS. The speed of these
    shared machines drifts over minutes (the FMA loop read 176 to 228 GFLOP/s a core
    on one day): taking turns, every engine is timed across the same stretch of it,
    where one engine's timings after the other's put minutes between them. Turns of
    a few short calls each read low, for every engine (sine's batched predict: a pass
    of 1.5 ms, turns of up to 10 calls: 435K samples/s against 669K in one go), hence
    turns of TURN_S, in which such figures are done at their first turn.
    -> {name: samples/s, or the exception that stopped the engine}."""
    result, best, spent, calls = {}, {}, {}, {}
    for name, engine in engines.items():
        try:
            engine.use_threads()
            warm_up(engine)
            best[name], spent[name], calls[name] = 0.0, 0.0, 0
        except Exception as err:  # the others go on
            result[name] = err
    while len(result) < len(engines):
        for name, engine in engines.items():
            if name in result:
                continue
            engine.use_threads()
            time.sleep(SETTLE_S)
            turn_s, turn_calls = 0.0, 0
            try:
                while turn_calls == 0 or turn_s < TURN_S:   # one call at least
                    tic = time.perf_counter()
                    call(engine)
                    seconds = time.perf_counter() - tic
                    best[name] = max(best[name], n / seconds)
                    spent[name] += seconds
                    calls[name] += 1
                    turn_s, turn_calls = turn_s + seconds, turn_calls + 1
                    if (spent[name] > budget_s or calls[name] >= MAX_REPEATS
                            or (calls[name] >= repeats and spent[name] >= min_time_s)):
                        result[name] = best[name]
                        break
            except Exception as err:
                result[name] = err
    return result


def latency_turns(engines, X, budget_s, rounds=1, min_calls=10, max_calls=2000):
    """Wall time of predict on one sequence, in µs, for each engine of {name: engine}:
    the median of each of `rounds` rounds of calls (budget_s each; in each round
    every engine in turn, after a pause of SETTLE_S), the lowest round counting. On a
    shared machine a disturbed second moved one engine's median by up to 2x between
    runs. -> {name: µs, or the exception that stopped the engine}."""
    x1 = np.ascontiguousarray(X[:1])                      # (1, T, D)
    result, best = {}, {}
    for name, engine in engines.items():
        try:
            engine.use_threads()
            engine.predict(x1)
            best[name] = np.inf
        except Exception as err:
            result[name] = err
    for _ in range(rounds):
        for name, engine in engines.items():
            if name in result:
                continue
            engine.use_threads()
            time.sleep(SETTLE_S)
            try:
                times, end = [], time.perf_counter() + budget_s
                while len(times) < min_calls or (time.perf_counter() < end
                                                 and len(times) < max_calls):
                    tic = time.perf_counter()
                    engine.predict(x1)
                    times.append(time.perf_counter() - tic)
                best[name] = min(best[name], statistics.median(times))
            except Exception as err:
                result[name] = err
    return {name: result.get(name, best.get(name, np.inf) * 1e6) for name in engines}


def sgemm_peak_gflops(threads, n=2048, repeats=5):
    """The machine's own float32 gemm speed: best of numpy `a @ b` at n x n."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ b
        best = np.inf
        for _ in range(repeats):
            tic = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best / 1e9


def n_samples(w, quick):
    return min(w.n, QUICK_BATCHES * w.batch) if quick else w.n


def measure(engines, w, X, y, quick):
    """All in-process figures of the engines ({name: engine}) on one workload, the
    engines taking turns at each: {name: {figure: value or "failed"}}, and
    {name: the error that stopped it} for those that failed."""
    repeats, min_time_s = (1, 0.0) if quick else (REPEATS, MIN_TIMED_S)

    def one_pass(engine):
        for start in range(0, len(X), INFER_BATCH):
            engine.predict(X[start:start + INFER_BATCH])
    train = take_turns(engines, lambda e: e.fit_epoch(X, y),    # warm-up: caches, buffers
                       lambda e: e.fit_epoch(X, y), len(X), repeats, min_time_s)
    ok = {name: e for name, e in engines.items() if not isinstance(train[name], Exception)}
    infer = take_turns(ok, lambda e: e.predict(X[:INFER_BATCH]), one_pass, len(X), repeats,
                       min_time_s)
    ok = {name: e for name, e in ok.items() if not isinstance(infer[name], Exception)}
    latency = latency_turns(ok, X, budget_s=0.2 if quick else 0.5,
                            rounds=1 if quick else REPEATS)
    res, errors = {}, {}
    for name in engines:
        error = next((f[name] for f in (train, infer, latency)
                      if isinstance(f.get(name), Exception)), None)
        if error is not None:
            res[name] = {k: "failed" for k in ("train", "gflops", "infer", "latency")}
            errors[name] = error
        else:
            res[name] = {"train": train[name],
                         "gflops": 3 * forward_flops_per_sample(w) * train[name] / 1e9,
                         "infer": infer[name], "latency": latency[name]}
    return res, errors


# ---- fresh processes: peak memory and start-up time --------------------------

def memory_mb(field):
    """VmRSS (now) or VmHWM (peak) of this process, MB (Linux).

    Not resource.getrusage's ru_maxrss: a child started by subprocess (vfork + exec)
    inherits the parent's peak in it, so it reads the size of this benchmark run.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024          # kB -> MB
    raise OSError(f"{field} not in /proc/self/status")


def child(engine_name, workload, threads, quick):
    """Body of `--child`: import the engine, train one epoch, print peak RSS as JSON."""
    w = WORKLOADS[workload]
    engine = ENGINES[engine_name](w, threads)             # imports the engine's library
    after_import = memory_mb("VmRSS")
    X, y = make_data(w, n_samples(w, quick))
    engine.use_threads()
    engine.fit_epoch(X, y)
    print(json.dumps({"peak_mb": memory_mb("VmHWM"), "import_mb": after_import}))


def run_child(engine_name, workload, threads, quick):
    """Run `--child` in a fresh interpreter -> (its JSON, wall seconds)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine_name, workload,
           "--threads", str(threads), "--cell", CELL] + (["--quick"] if quick else [])
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"child {engine_name} {workload} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


# ---- tables ------------------------------------------------------------------

def table(title, headers, rows, markdown):
    """One table, GitHub markdown or aligned plain text."""
    cells = [[str(c) for c in row] for row in rows]
    if markdown:
        lines = [f"### {title}", "", "| " + " | ".join(headers) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
    else:
        widths = [max(len(x) for x in col) for col in zip(headers, *cells)]
        fmt = lambda row: "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                                    for i, c in enumerate(row))
        lines = [title, fmt(headers), fmt(["-" * n for n in widths])] + [fmt(r) for r in cells]
    print("\n".join(lines) + "\n")


def fmt_num(x):
    return x if isinstance(x, str) else f"{x:,.0f}"


def ratio(a, b):
    return f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) and b > 0 else "-"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def print_report(res, names, extra, threads, peak, quick, markdown, errors):
    """res[workload][engine] = {figure: value or "failed"}."""
    import torch

    import fastlstm
    command = "python " + " ".join(sys.argv)
    header = (f"{datetime.date.today().isoformat()} | cell: {CELL} | CPU: {cpu_model()} | "
              f"{os.cpu_count()} cores, {threads} threads for every engine | torch {torch.__version__} | "
              f"numpy {np.__version__} | fastlstm {fastlstm.__version__} | "
              f"float32 sgemm peak (numpy, n=2048): {peak:.0f} GFLOP/s | `{command}`")
    if "keras" in names:
        import keras
        header += f" | keras {keras.__version__} ({keras.backend.backend()} backend)"
    print(("_" + header + "_") if markdown else header)
    print()
    if quick:  # one call per figure, right after another engine's turn
        print("--quick is a smoke run: each figure is a single call (an engine's first call "
              "after another's turn can read 25% slow or worse), so its ratios say nothing; "
              "the full run takes the best of many calls.")
        print()
    best_of = "" if quick else (f" (best of {REPEATS}, or of more within {MIN_TIMED_S:g} s, "
                                f"up to {MAX_REPEATS}; the engines in turns of {TURN_S:g} s)")
    def figure(title, key):  # one row per workload, one column per engine, then the ratio
        rows = [[wl] + [fmt_num(by_engine.get(n, {}).get(key, "-")) for n in names]
                + [ratio(by_engine["fastlstm"].get(key), by_engine["torch"].get(key))]
                for wl, by_engine in res.items()]
        table(title, ["workload"] + names + ["fastlstm:torch"], rows, markdown)

    figure(f"Training samples/s over a full epoch, after a warm-up epoch{best_of} "
           "(higher is better; fastlstm:torch > 1 means fastlstm is faster)", "train")
    headers = ["workload", "GFLOP/fwd sample"] + [f"{n} GFLOP/s (% peak)" for n in names]
    rows = []
    for wl, by_engine in res.items():
        row = [wl, f"{forward_flops_per_sample(WORKLOADS[wl]) / 1e9:.4f}"]
        for n in names:
            g = by_engine.get(n, {}).get("gflops", "-")
            row.append(f"{g:.1f} ({100 * g / peak:.0f}%)" if isinstance(g, float) else g)
        rows.append(row)
    table(f"Achieved training GFLOP/s = 3 x forward matmul flops / time, and % of the "
          f"{peak:.0f} GFLOP/s sgemm peak (higher is better)", headers, rows, markdown)
    figure(f"Batched inference samples/s, predict on batches of {INFER_BATCH}{best_of} "
           "(higher is better; fastlstm:torch > 1 means fastlstm is faster)", "infer")
    rounds = "" if quick else f", the lowest of {REPEATS} rounds' medians"
    figure(f"Single-sequence predict latency, µs, median{rounds} "
           "(lower is better; fastlstm:torch < 1 means fastlstm is faster)", "latency")
    if any("peak_mb" in e for by in res.values() for e in by.values()):
        headers = ["workload"] + [f"{n} peak (after import)" for n in names] + ["fastlstm:torch"]
        rows = []
        for wl, by_engine in res.items():
            row = [wl]
            for n in names:
                e = by_engine.get(n, {})
                row.append(f"{e['peak_mb']:,.0f} ({e['import_mb']:,.0f})" if "peak_mb" in e
                           else e.get("mem_error", "-"))
            row.append(ratio(by_engine["fastlstm"].get("peak_mb"), by_engine["torch"].get("peak_mb")))
            rows.append(row)
        table("Peak resident memory, MB, of a fresh process that imports the engine and trains "
              "one epoch (VmHWM; lower is better; fastlstm:torch < 1 means fastlstm uses less)",
              headers, rows, markdown)
    if "startup" in extra:
        table("Fresh process: import + build + fit `sine` for one epoch, wall seconds "
              "(lower is better)", ["engine", "seconds"],
              [[k, f"{v:.2f}"] for k, v in extra["startup"].items()], markdown)
    if "threads" in extra:
        rows = [[n, fmt_num(r1), fmt_num(r2), ratio(r2, r1)]
                for n, (r1, r2) in extra["threads"].items()]
        table("`large`, training samples/s with 1 and 2 threads (speed-up = 2 threads / 1 thread)",
              ["engine", "1 thread", "2 threads", "speed-up"], rows, markdown)
    if errors:
        print("Failures:" if not markdown else "**Failures:**\n")
        for e in errors:
            print(f"- {e}")
        print()
    if "keras" not in names:
        print("Keras: not installed in this environment, not measured." if not markdown
              else "_Keras: not installed in this environment, not measured._")


# ---- main ------------------------------------------------------------------

def run(selected, threads, quick, markdown):
    """Measure everything, then print the tables."""
    started = time.perf_counter()
    errors, extra = [], {}
    try:
        log("start-up: fresh processes fitting sine for one epoch")
        extra["startup"] = {
            "fastlstm, cold (empty NUMBA_CACHE_DIR)": run_child("fastlstm", "sine", threads, False)[1],
            "fastlstm, warm (second run, same cache)": run_child("fastlstm", "sine", threads, False)[1],
            "torch (for reference)": run_child("torch", "sine", threads, False)[1],
        }
    except RuntimeError as err:
        errors.append(f"start-up: {err}")

    classes = engine_classes()
    peak = sgemm_peak_gflops(threads, repeats=3 if quick else 5)
    log(f"sgemm peak {peak:.0f} GFLOP/s with {threads} threads")
    res = {}
    for wl in selected:
        w = WORKLOADS[wl]
        X, y = make_data(w, n_samples(w, quick))
        res[wl], engines = {}, {}
        log(f"[{wl}] {', '.join(c.name for c in classes)} in turns: {len(X)} samples, "
            f"T={w.T}, D={w.D}, H={w.hidden}")
        for cls in classes:
            try:
                engines[cls.name] = cls(w, threads)
            except Exception as err:  # report and go on with the other engines
                res[wl][cls.name] = {k: "failed" for k in ("train", "gflops", "infer", "latency")}
                errors.append(f"{cls.name} on {wl}: {type(err).__name__}: {err}")
        figures, failed = measure(engines, w, X, y, quick)
        res[wl].update(figures)
        errors += [f"{name} on {wl}: {type(err).__name__}: {err}" for name, err in failed.items()]
        if quick:  # the start-up runs above already went through the child path
            continue
        for cls in classes:
            try:
                mem, _ = run_child(cls.name, wl, threads, quick)
                res[wl][cls.name].update(mem)
            except RuntimeError as err:
                res[wl][cls.name]["mem_error"] = "failed"
                errors.append(f"{cls.name} on {wl} (memory run): {err}")

    if "large" in selected:
        w = WORKLOADS["large"]
        X, y = make_data(w, n_samples(w, quick))
        extra["threads"] = {}
        for cls in (FastLSTM, Torch):
            log(f"[large] {cls.name}: 1 vs 2 threads, in turns")
            try:
                by_threads = {t: cls(w, t) for t in (1, 2)}
                rates = take_turns(by_threads, lambda e: e.fit_epoch(X, y),
                                   lambda e: e.fit_epoch(X, y), len(X), 1 if quick else 2, 0.0)
                for rate in rates.values():
                    if isinstance(rate, Exception):
                        raise rate
                extra["threads"][cls.name] = (rates[1], rates[2])
            except Exception as err:
                errors.append(f"{cls.name} on large, 1 vs 2 threads: {type(err).__name__}: {err}")

    names = [c.name for c in classes]
    print_report(res, names, extra, threads, peak, quick, markdown, errors)
    log(f"total {time.perf_counter() - started:.0f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"at most {QUICK_BATCHES} minibatches per epoch, short timings, "
                             "no memory runs")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated subset of " + ",".join(WORKLOADS))
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="threads for every engine (default: all cores)")
    parser.add_argument("--markdown", action="store_true", help="GitHub markdown tables")
    parser.add_argument("--cell", choices=sorted(GATES), default="lstm",
                        help="the recurrent layer of every engine (default: lstm)")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global CELL
    CELL = args.cell
    if args.child:
        return child(*args.child, args.threads, args.quick)
    selected = [s.strip() for s in args.workloads.split(",") if s.strip()]
    unknown = set(selected) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
    # A Numba cache of our own for this run and its children (inherited through the
    # environment; set before fastlstm is imported). Start-up goes first, while it is
    # empty; the in-process warm-up epochs then fill it before each memory child runs,
    # so no child's peak includes compiling.
    cache = tempfile.mkdtemp(prefix="fastlstm-bench-numba-")
    os.environ["NUMBA_CACHE_DIR"] = cache
    try:
        run(selected, args.threads, args.quick, args.markdown)
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
