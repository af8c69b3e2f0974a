"""Data parallelism over the batch: each core runs the whole forward and backward
of its own slice of the samples, and the slices meet once per pass.

Why over the batch and not inside each step: a step's product at these sizes
takes 0.1-1 ms, and splitting it across cores (BLAS's threads, or the packed
loop's) costs a synchronisation every step. The samples of a batch are
independent until the weight gradients, which are summed at the end. Each slice
runs single-threaded kernels, where the packed time loop (W_hh packed once per
pass, not once per step as BLAS does) is at its best.

The loss is taken on the whole batch's output, so it is the same as in one
piece; the gradient is the sum of the slices' in a fixed order, so results are
reproducible for a given number of slices (they round differently from one).
"""
import numpy as np

from . import _threads
from ._threads import row_slices
from ._network import GATES, _Arena

# A slice needs this many samples: below it, one gemm per step is too thin to pay
# for the split.
MIN_ROWS_PER_SLICE = 8
# ... and a batch this much work (multiply-adds of its forward pass): handing a
# slice to another thread costs tens of microseconds, which small networks do not
# earn back (2 threads vs 1, training, samples/s: sine, 3.3M, 43K vs 53-63K;
# binadd, 0.6M, 72-104K vs 320-350K; 2 x LSTM(50) over 20 steps, 21M, 8.5-9.2K vs
# 7.9-9.5K; 2 x LSTM(64) over 32 steps, 66M, 4.7-5.0K vs 3.7-3.8K; the demo's
# 2 x LSTM(128) over 64 steps, 507M, 1.1K vs 0.65K).
MIN_SLICED_WORK = 2**25
# A batch trained whole (below MIN_SLICED_WORK) with this much work or more hands
# its threads to the layer kernels, whose packed loop splits it by samples with no
# Python between the threads (_recurrent.h): sine, 3.3M, 82K -> 111K samples/s
# on 2 threads; binadd, 0.6M, 510-540K either way, and once 280K on two.
MIN_SPLIT_LOOP_WORK = 2**20
# A prediction cut into slices (where the network does not split it itself:
# LSTMNetwork.splits_batches_itself) hands off once per call, not twice per
# batch, and has no serial loss and update around it: it pays from less work
# (measured before LSTM predictions ran whole: sine, 2 threads vs 1,
# samples/s: 256 rows, 26M, 274-277K vs 194-199K; 128 rows, 13M, 205-235K vs
# 190-226K; 64 rows, 6.5M, 150-157K vs 176-190K; binadd 1024 rows, 9.4M,
# 1.21-1.29M vs 1.32-1.34M).
MIN_SLICED_PREDICT_WORK = 2**24


# Whole-buffer passes over the parameters (the slices' gradient sum, the
# optimiser's update) split into ranges on the slices' threads from this many
# elements (charlm's 1.1M float32 parameters: Adam 1.24 -> 0.86 ms a batch, on
# the main thread while the other one waited).
MIN_SPLIT_ELEMENTS = 2**16


def in_ranges(fn, n, parts):
    """fn(range_slice) for contiguous ranges covering range(n), one per thread of
    `parts` (1 below MIN_SPLIT_ELEMENTS): for element-wise work with no order
    between elements, so the result is the same for any split."""
    parts = parts if n >= MIN_SPLIT_ELEMENTS else 1
    _threads.run_parallel(fn, row_slices(n, parts))


def n_slices(threads, batch, work=MIN_SLICED_WORK, min_work=MIN_SLICED_WORK):
    """How many slices a batch of `batch` samples, `work` multiply-adds (see
    forward_work), is cut into on `threads` threads: 1 (no split) below min_work."""
    if work < min_work:
        return 1
    return max(1, min(threads, batch // MIN_ROWS_PER_SLICE))


def forward_work(net, batch, n_steps, sequence_output=False):
    """Multiply-adds of a forward pass over a batch: batch x steps x sum over
    layers (and directions) of G x (D + H), and the head's K x H on the last
    step or, sequence_output, on every step (a per-step softmax over thousands
    of classes can outweigh a narrow recurrent layer)."""
    directions = 2 if net.bidirectional else 1
    work, n_in = 0, net.n_features
    for H in net.hidden_sizes:
        work += directions * GATES[net.cell] * H * (n_in + H)
        n_in = directions * H
    head = net.n_outputs * n_in
    return batch * (n_steps * (work + (head if sequence_output else 0))
                    + (0 if sequence_output else head))


class _SplitTape:
    """What a data-parallel forward keeps for its backward: each slice's tape."""

    def __init__(self, tapes, slices, shape):
        self.tapes = tapes                    # one _Tape per slice
        self.slices = slices                  # rows of the batch each one ran
        self.shape = shape                    # (T, N) of the batch

    def final_state(self):
        """[(h_T, c_T)] per layer, each (N, H), the slices' rows put back together."""
        states = [tape.final_state() for tape in self.tapes]
        return [tuple(np.concatenate([s[k][i] for s in states]) for i in (0, 1))
                for k in range(len(states[0]))]


class DataParallel:
    """net.forward / net.backward with the batch cut into up to `parts` slices,
    run side by side on threads. The first slice writes its gradients into net's
    buffer, the others into their own, added to it after backward; with
    training=False (forward only) none has a buffer of its own."""

    def __init__(self, net, parts, training=True):
        self.net = net
        self.replicas = [net.replica(own_gradients=training and p > 0) for p in range(parts)]
        self.arenas = [_Arena(net.dtype) for _ in range(parts)]

    def forward(self, x, sequence_output=False, training=False, rng=None, arena=None,
                initial_state=None, lengths=None, n_threads=None, keep=True, masks=None):
        """As LSTMNetwork.forward (arena and n_threads are ignored: each slice has
        its own arena and runs on one thread)."""
        T, N, _ = x.shape
        slices = row_slices(N, min(len(self.replicas), max(N, 1)))
        # dropout: the whole batch's masks, each slice its rows of them, so that the
        # masks do not depend on the number of slices (charlm: +0.2 ms a batch of
        # ~50, drawn here on one thread rather than each slice its own)
        if training and self.net.dropout > 0 and masks is None:
            masks = self.net.dropout_masks(rng, T, N, sequence_output)

        def run(p):                                       # slice p: (T, n_p, D) -> (out, tape)
            rows = slices[p]
            state = (None if initial_state is None
                     else [(h[rows], c[rows]) for h, c in initial_state])
            return self.replicas[p].forward(
                np.ascontiguousarray(x[:, rows]), sequence_output, training=training,
                arena=self.arenas[p], initial_state=state,
                lengths=None if lengths is None else lengths[rows], n_threads=1, keep=keep,
                masks=None if masks is None else [np.ascontiguousarray(m[:, rows])
                                                  for m in masks])

        results = _threads.run_parallel(run, range(len(slices)))
        outs = [out for out, _ in results]
        if sequence_output:                               # time-major rows: (T*n_p, K) each
            K = outs[0].shape[1]
            out = np.empty((T, N, K), dtype=outs[0].dtype)
            for rows, part in zip(slices, outs):
                out[:, rows] = part.reshape(T, -1, K)
            out = out.reshape(T * N, K)
        else:
            out = np.concatenate(outs)                    # (N, K)
        return out, _SplitTape([tape for _, tape in results], slices, (T, N))

    def backward(self, tape, dout, n_threads=None):
        """As LSTMNetwork.backward: net.grads = the sum of the slices' gradients
        (n_threads is ignored: each slice runs on one thread)."""
        T, N = tape.shape
        sequence = tape.tapes[0].sequence_output
        K = dout.shape[1]

        def run(p):
            rows = tape.slices[p]
            part = (np.ascontiguousarray(dout.reshape(T, N, K)[:, rows]).reshape(-1, K)
                    if sequence else dout[rows])
            return self.replicas[p].backward(tape.tapes[p], part, n_threads=1)

        grads = _threads.run_parallel(run, range(len(tape.tapes)))
        total = self.net.grads                            # is grads[0]

        def add_up(part):                                 # the same order in every range
            for g in grads[1:]:
                total[part] += g[part]
        in_ranges(add_up, total.size, len(self.replicas))
        return total
