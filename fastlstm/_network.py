"""A stack of recurrent layers (LSTM, GRU or plain RNN) and a dense head over one
flat parameter buffer.

The parameters live in one contiguous array (so the optimiser, the L2 penalty
and gradient clipping are single passes over it) with named views in torch's
names: weight_ih_l{k} (G, D), weight_hh_l{k} (G, H), bias_ih_l{k} (G,),
bias_hh_l{k} (G,) with G = 4H (LSTM), 3H (GRU) or H (RNN), and head.weight
(K, H_last), head.bias (K,). All weight
matrices come first and all biases after, so "the weights" (what L2 acts on)
are one prefix slice.

Activations are time-major, (T, N, .): the kernels want each step contiguous.
"""
import contextlib
import math

import numpy as np
import scipy.linalg

from . import _cells, _kernels, _ops, _threads

# gate blocks per hidden unit: LSTM i, f, g, o; GRU r, z, n; RNN one
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# Scratch arenas a network keeps between predictions (borrow_arena), and the
# largest one kept: enough for single sequences and small batches, where
# allocating costs as much as computing.
SPARE_ARENAS = 4
SPARE_ARENA_BYTES = 1 << 20
# A head of this many multiply-adds or more (a softmax on every step over thousands
# of classes) runs in row slices on the threads the forward pass was given: a batch
# run whole holds BLAS to one thread (_estimators._thread_limit), which left it on
# one core (predict_proba, 256 sequences of 50 steps, LSTM(128) -> 5,000 classes).
HEAD_SPLIT_WORK = 2**22


def parameter_layout(n_features, hidden_sizes, n_outputs, cell="lstm", bidirectional=False):
    """[(name, shape)] in buffer order: every weight matrix, then every bias.
    Bidirectional layers have a second set named with torch's _reverse suffix
    and feed 2H features to the next layer and the head."""
    weights, biases = [], []
    n_in = n_features
    for k, H in enumerate(hidden_sizes):
        G = GATES[cell] * H
        for suffix in ("", "_reverse") if bidirectional else ("",):
            weights += [(f"weight_ih_l{k}{suffix}", (G, n_in)),
                        (f"weight_hh_l{k}{suffix}", (G, H))]
            biases += [(f"bias_ih_l{k}{suffix}", (G,)), (f"bias_hh_l{k}{suffix}", (G,))]
        n_in = 2 * H if bidirectional else H
    weights.append(("head.weight", (n_outputs, n_in)))
    biases.append(("head.bias", (n_outputs,)))
    return weights + biases


def named_views(flat, layout):
    """{name: view into flat} for the layout; writing a view writes the buffer."""
    views, start = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        views[name] = flat[start:start + size].reshape(shape)
        start += size
    return views


def layer_views(views, hidden_sizes, bidirectional):
    """{(k, suffix): (weight_ih, weight_hh, bias_ih, bias_hh)} of each layer and
    direction, from named_views' dict: what the kernels take, looked up once."""
    return {(k, suffix): tuple(views[f"{name}_l{k}{suffix}"]
                               for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for k in range(len(hidden_sizes))
            for suffix in (("", "_reverse") if bidirectional else ("",))}


def _aligned_empty(n, dtype, alignment=64):
    """np.empty(n) starting on an `alignment`-byte boundary (a cache line): the
    kernels' 64-byte vector loads and stores then split no line at row starts
    that are multiples of it (numpy's own start 16 bytes in; medium training
    +1-8% in five alternating A/B runs)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + alignment // itemsize, dtype=dtype)
    address = raw.__array_interface__["data"][0]      # (not raw.ctypes: it left allocations behind)
    skip = (-address % alignment) // itemsize
    return raw[skip:skip + n]


class _Arena:
    """Reusable scratch memory: views of the first T*N*... elements of flat
    buffers, so a smaller last batch needs no new allocation."""

    def __init__(self, dtype):
        self.dtype = dtype
        self._buffers = {}
        self._views = {}     # (key, shape) -> the view handed out before
        self.nbytes = 0      # of all buffers

    def get(self, key, shape):
        # a batch asks ~10 times, mostly for views it had last batch: one lookup
        view = self._views.get((key, shape))
        if view is not None:
            return view
        size = math.prod(shape)  # not np.prod: this runs several times per batch
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            self.nbytes -= 0 if buf is None else buf.nbytes
            buf = _aligned_empty(size, self.dtype)
            self.nbytes += buf.nbytes
            self._buffers[key] = buf
            # views of the old buffer are not views of this one
            self._views = {k: v for k, v in self._views.items() if k[0] != key}
        if len(self._views) > 256:  # a long-lived arena seeing many shapes: start over
            self._views = {}
        view = self._views[(key, shape)] = buf[:size].reshape(shape)
        return view

    def zeros(self, key, shape):
        """A view of zeros that nobody writes to (initial states): filled once, when
        first handed out, not on every call."""
        view = self._views.get((key, shape))
        if view is None:
            view = self.get(key, shape)
            view[...] = 0
        return view


class _Tape:
    """What one forward pass keeps for its backward pass. layers[k] is
    (layer_in, gates, c, tanh_c, h, dropout mask bits or None, h0, c0) for the
    LSTM (the mask bits of the top layer of a many-to-one network cover its last
    step only; gates and tanh_c are None for a single sequence in a forward with
    keep=False); a GRU keeps its hidden projection where c is and None for tanh_c, a
    plain RNN None for all three (and its c0 is zeros). A bidirectional
    network's layers[k] holds its forward direction (layer_out is then the
    concatenation) and reverse[k] the reverse one: (reversed layer_in, gates, c,
    tanh_c, h in reversed time)."""

    def __init__(self, layers, head_in, sequence_output, arena, lengths=None, reverse=(),
                 order=None, kept=True, cell_state=True):
        self.layers = layers
        self.cell_state = cell_state           # the layers have one (LSTM): c is it
        self.kept = kept                       # False: a forward(keep=False), no backward
        self.reverse = reverse                 # per layer, bidirectional only
        self.order = order                     # (T, N) time index of the reversal, or None
        self.lengths = lengths                 # (N,) or None
        self.head_in = head_in                 # (M, H_last) what the head saw
        self.sequence_output = sequence_output
        self.arena = arena

    def final_state(self):
        """[(h_T, c_T)] per layer, each (N, H), copied out of the scratch memory.
        GRU and RNN layers have no cell state: their c stays zeros."""
        return [(h[-1].copy(), c[-1].copy() if self.cell_state else np.zeros_like(c0))
                for _, _, c, _, h, _, _, c0 in self.layers]


class LSTMNetwork:
    """Recurrent stack + linear head. `forward` then `backward` on the same batch.

    cell: "lstm", "gru" or "rnn"; nonlinearity ("tanh" or "sigmoid") is the
    plain RNN's activation.
    """

    def __init__(self, n_features, hidden_sizes, n_outputs, dtype=np.float32,
                 dropout=0.0, cell="lstm", nonlinearity="tanh", bidirectional=False):
        if cell not in GATES:
            raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {cell!r}")
        if nonlinearity not in ("tanh", "sigmoid"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'sigmoid', got {nonlinearity!r}")
        self.n_features = int(n_features)
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.n_outputs = int(n_outputs)
        self.dtype = np.dtype(dtype)
        self.dropout = float(dropout)
        self.cell = cell
        self.nonlinearity = nonlinearity
        self.bidirectional = bool(bidirectional)
        self.layout = parameter_layout(self.n_features, self.hidden_sizes, self.n_outputs,
                                       cell, self.bidirectional)
        self.n_weights = sum(math.prod(s) for n, s in self.layout if "weight" in n)
        n_params = sum(math.prod(s) for _, s in self.layout)
        self.params = np.zeros(n_params, dtype=self.dtype)      # (P,)
        self.grads = np.zeros(n_params, dtype=self.dtype)       # (P,)
        self.p = named_views(self.params, self.layout)
        self.g = named_views(self.grads, self.layout)
        self.layer_p = layer_views(self.p, self.hidden_sizes, self.bidirectional)
        self.layer_g = layer_views(self.g, self.hidden_sizes, self.bidirectional)
        self._spare_arenas = []                                  # see borrow_arena
        self._spare_batch_arenas = []                            # see return_arena
        self._spare_runners = []                                 # see borrow_runner
        # per LSTM layer (and direction), float32: its weights packed for single
        # sequences, kept between calls (_recurrent.h); empty until one runs
        self.packed_weights = ({key: _kernels.PackedWeights() for key in self.layer_p}
                               if cell == "lstm" and self.dtype == np.float32 else {})
        self._plans = {}                                         # see one_sequence_plan
        # BLAS takes 32-bit sizes: a forward pass checks its row counts against this
        self._widest_gates = GATES[cell] * max(self.hidden_sizes)

    def replica(self, own_gradients=True):
        """A network on these very parameters (the same memory, so an update shows
        in both) with its own gradient buffer, or sharing this one's when
        own_gradients is False (forward-only use): what one thread of a
        data-parallel pass (_parallel.py) runs."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        if own_gradients:
            twin.grads = np.zeros_like(self.grads)                  # (P,)
            twin.g = named_views(twin.grads, self.layout)
            twin.layer_g = layer_views(twin.g, self.hidden_sizes, self.bidirectional)
        return twin

    # ---- scratch memory of predictions ----------------------------------------

    def borrow_arena(self, nbytes=0):
        """Scratch memory for one prediction that expects to use about nbytes of
        it: an arena kept from an earlier call (a small one, or over
        SPARE_ARENA_BYTES the large one), else a new one; hand it back with
        return_arena. A fresh arena's allocations cost a single-sequence predict
        ~10 us, as much as its kernels. Concurrent calls never get the same arena
        (list.pop and list.append are atomic)."""
        spares = self._spare_batch_arenas if nbytes > SPARE_ARENA_BYTES else self._spare_arenas
        try:
            return spares.pop()
        except IndexError:
            return _Arena(self.dtype)

    def return_arena(self, arena):
        """Keep arena for the next call: up to SPARE_ARENAS small ones (at most
        SPARE_ARENA_BYTES each), and one larger one, the scratch of a batch run
        whole, already paged in for the next such batch (as borrow_runner keeps
        a sliced one's; paged in afresh on every call, large's batch of 256 took
        224-226 ms in the kernel against 210-213)."""
        if arena.nbytes <= SPARE_ARENA_BYTES:
            if len(self._spare_arenas) < SPARE_ARENAS:
                self._spare_arenas.append(arena)
        elif not self._spare_batch_arenas:
            self._spare_batch_arenas.append(arena)

    def borrow_runner(self, parts, make):
        """What one prediction cut into `parts` slices runs on (a DataParallel over
        this network, made by make()): the one kept from an earlier call if it has
        as many slices, its slices' scratch memory already paged in, else a new
        one; hand it back with return_runner. Paging in a large batch's scratch
        afresh on every call cost 4-5% of the time in the kernel's page clearing
        alone (large's batched inference, alternating A/B: 941-957 -> 1016-1085
        samples/s). Concurrent calls never get the same one (list.pop is atomic)."""
        try:
            runner = self._spare_runners.pop()
        except IndexError:
            return make()
        return runner if len(runner.replicas) == parts else make()

    def return_runner(self, runner):
        """Keep runner for the next prediction: one at most, so a fitted model holds
        on to the scratch memory of one prediction's chunk (see
        _estimators._PREDICT_CHUNK_BYTES)."""
        if not self._spare_runners:
            self._spare_runners.append(runner)

    # ---- one sequence ---------------------------------------------------------

    def one_sequence_plan(self, training=False):
        """How a single sequence runs -> (blas_products, threads_help).

        Float32 LSTM layers run its forward pass on the packed loop of
        _recurrent.h, which calls no BLAS; other layers, and every backward pass
        (training), run one BLAS product of one row per step. blas_products lists
        the matrix sizes (elements) of the one-row products BLAS is left with: the
        head's, and each such layer's. threads_help: the packed loop may run some
        layer on more than one thread (it picks per call, see _kernels.PackedWeights)."""
        own_loop = (not training and bool(self.packed_weights)
                    and _kernels.packed_loop_runs())
        plan = self._plans.get(own_loop)
        if plan is None:   # worked out once (own_loop only changes in tests)
            head = self.n_outputs * self.hidden_sizes[-1] * (2 if self.bidirectional else 1)
            if own_loop:
                plan = [head], any(_kernels.one_sequence_threads_help(H)
                                   for H in self.hidden_sizes)
            else:
                plan = [head] + [GATES[self.cell] * H * H for H in self.hidden_sizes], False
            self._plans[own_loop] = plan
        return plan

    # ---- set-up ---------------------------------------------------------------

    def initialize(self, rng):
        """Keras' initialisation: Glorot-uniform input and head weights,
        orthogonal recurrent weights, zero biases except the LSTM's forget-gate
        bias 1. It lets gradients reach far back from the start (see DESIGN.md).
        GRU and RNN get the same with all biases zero."""
        suffixes = ("", "_reverse") if self.bidirectional else ("",)
        for k, H in enumerate(self.hidden_sizes):
            G = GATES[self.cell] * H
            for layer in (f"l{k}{suffix}" for suffix in suffixes):
                w_ih = self.p[f"weight_ih_{layer}"]              # (G, D)
                limit = np.sqrt(6.0 / (w_ih.shape[0] + w_ih.shape[1]))
                w_ih[...] = rng.uniform(-limit, limit, size=w_ih.shape)
                # orthogonal (G, H): orthonormal columns, from the QR of a Gaussian
                self.p[f"weight_hh_{layer}"][...] = orthonormal_columns(
                    rng.standard_normal((G, H)))
                self.p[f"bias_ih_{layer}"][...] = 0
                if self.cell == "lstm":
                    self.p[f"bias_ih_{layer}"][H:2 * H] = 1.0    # forget gate
                self.p[f"bias_hh_{layer}"][...] = 0
        w = self.p["head.weight"]
        limit = np.sqrt(6.0 / (w.shape[0] + w.shape[1]))
        w[...] = rng.uniform(-limit, limit, size=w.shape)
        self.p["head.bias"][...] = 0

    def __getstate__(self):
        # the views and scratch buffers are rebuilt, not pickled
        return {"args": (self.n_features, self.hidden_sizes, self.n_outputs,
                         self.dtype.str, self.dropout, self.cell, self.nonlinearity,
                         self.bidirectional),
                "params": self.params}

    def __setstate__(self, state):
        self.__init__(*state["args"])
        self.params[...] = state["params"]

    # ---- forward and backward -------------------------------------------------

    def dropout_masks(self, rng, T, N, sequence_output):
        """The random words of every layer's dropout mask over a batch of N
        sequences of T steps: [(T or 1, N, width) uint32] (see _ops.dropout_bits),
        drawn from rng in layer order. DataParallel cuts them by rows, so a
        batch gets the same masks run whole or in slices on any thread count."""
        masks = []
        for k, H in enumerate(self.hidden_sizes):
            # a many-to-one head reads the top layer's last step only: the mask
            # covers that step alone there (charlm: half its random words)
            last_only = (k == len(self.hidden_sizes) - 1 and not sequence_output
                         and not self.bidirectional)
            width = 2 * H if self.bidirectional else H
            masks.append(_ops.dropout_bits(rng, (1 if last_only else T, N, width)))
        return masks

    def forward(self, x, sequence_output=False, training=False, rng=None, arena=None,
                initial_state=None, lengths=None, n_threads=None, keep=True, masks=None):
        """x (T, N, D) -> (output, tape).

        output is (N, K), or (T*N, K) in time-major row order if sequence_output.
        tape holds what `backward` needs (and `final_state`); training=True also
        applies dropout (masks from dropout_masks, drawn from rng when None).
        arena is the scratch memory (a fresh one when None, so concurrent
        predictions never share buffers). initial_state
        is [(h0, c0)] per layer, each (N, H); None starts every layer from zeros.
        Gradients do not flow back into initial_state (truncated BPTT).
        lengths (N,) int64: real steps of each sample of a padded batch; its state
        is carried unchanged through the padding, so the last step's output is
        that of its last real step. n_threads: threads of the layers' own time
        loops (None: the BLAS limit in force), which a single float32 sequence
        runs on even under a limit of one BLAS thread. keep=False: no backward
        follows (a prediction), so the LSTM layers of a batch keep gates and
        tanh(c) for one step at a time, not all T, as scratch (see
        _layer_forward); the tape then serves final_state, not backward.

        Bidirectional: each layer also runs over every sequence reversed (from its
        own last real step back to step 0) and outputs [h_forward[t], h_reverse[t]]
        (2H); the many-to-one head sees each direction's last step: h_forward at
        the last real step and h_reverse at step 0.
        """
        T, N, _ = x.shape
        if T * N >= 2**31 or self._widest_gates >= 2**31:
            # BLAS takes 32-bit sizes: T*N rows is one gemm's row count
            raise ValueError(f"a batch of {N} sequences of {T} steps is too large for one pass "
                             f"(T * N must stay below 2**31); use a smaller batch_size or tbptt_steps")
        if self.bidirectional and initial_state is not None:
            raise ValueError("a bidirectional network always starts from zeros: it cannot "
                             "continue from a carried state")
        arena = arena if arena is not None else _Arena(self.dtype)
        if training and self.dropout > 0 and masks is None:
            masks = self.dropout_masks(rng, T, N, sequence_output)
        dropping = training and self.dropout > 0
        order = reverse_order(T, N, lengths) if self.bidirectional else None
        layers, reverse = [], []
        layer_in = x
        for k, H in enumerate(self.hidden_sizes):
            if initial_state is None:
                h0 = c0 = arena.zeros(("zeros", k), (N, H))
            else:
                h0, c0 = (np.ascontiguousarray(s, dtype=self.dtype) for s in initial_state[k])
            gates, c, tanh_c, h = self._layer_forward(k, "", layer_in, h0, c0, lengths, arena,
                                                      n_threads, keep)
            layer_out = h
            if self.bidirectional:
                # the reverse pass is the forward kernel on each sequence reversed
                x_rev = layer_in[order, np.arange(N)]                           # (T, N, D)
                rev = self._layer_forward(k, "_reverse", x_rev, h0, c0, lengths, arena,
                                          n_threads, keep)
                reverse.append((x_rev,) + rev)
                layer_out = arena.get(("both", k), (T, N, 2 * H))
                layer_out[..., :H] = h
                layer_out[..., H:] = rev[3][order, np.arange(N)]                # back in time order
            bits = None
            if dropping:  # on every layer's output, before the next layer or the head
                bits = masks[k]                                         # (T or 1, N, width)
                kept_out = layer_out[T - len(bits):]                    # the steps it covers
                dropped = arena.get(("dropped", k), kept_out.shape)
                _ops.apply_dropout_mask(kept_out.reshape(-1), bits.reshape(-1), self.dropout,
                                        dropped.reshape(-1))
                layer_out = dropped
            layers.append((layer_in, gates, c, tanh_c, h, bits, h0, c0))
            layer_in = layer_out
        # head: a linear map of the last step, or of every step
        if sequence_output:
            head_in = layer_in.reshape(T * N, -1)
        elif self.bidirectional:
            H = self.hidden_sizes[-1]
            head_in = np.concatenate([layer_in[T - 1, :, :H], layer_in[0, :, H:]], axis=1)
        else:
            head_in = layer_in[-1]      # the last step (the only one kept past a dropout mask)
        out = np.empty((head_in.shape[0], self.n_outputs), dtype=self.dtype)   # (M, K)
        self._head_forward(head_in, out, n_threads)
        return out, _Tape(layers, head_in, sequence_output, arena, lengths, reverse, order,
                          keep, self.cell == "lstm")

    def _head_forward(self, head_in, out, n_threads):
        """out (M, K) = head_in (M, I) @ W.T + b; from HEAD_SPLIT_WORK multiply-adds
        in row slices, one per thread of n_threads, each a one-thread BLAS product."""
        M, I = head_in.shape
        weight, bias = self.p["head.weight"], self.p["head.bias"]
        parts = min(n_threads or 1, M) if M * I * self.n_outputs >= HEAD_SPLIT_WORK else 1
        if parts == 1:
            _cells.dense_forward(head_in, weight, bias, out)
            return
        _threads.run_parallel(lambda rows: _cells.dense_forward(head_in[rows], weight, bias,
                                                                out[rows]),
                              _threads.row_slices(M, parts))

    @contextlib.contextmanager
    def weights_held(self):
        """For a loop of forward calls that writes no weights (forecast, generate,
        one step a call): the layers' kept single-sequence packings compare
        themselves with the weights on the first call only (PackedWeights.hold)."""
        for packed in self.packed_weights.values():
            packed.hold()
        try:
            yield
        finally:
            for packed in self.packed_weights.values():
                packed.release()

    def keeps_one_step(self, N, lengths):
        """True if a forward(keep=False) over N sequences keeps the LSTM layers'
        gates and tanh_c for one step only: a batch of sequences of one length.
        One sequence keeps every step: its own way in (_kernels) takes only that."""
        return self.cell == "lstm" and N > 1 and lengths is None

    def splits_batches_itself(self, N, lengths):
        """True if a prediction over N sequences is best run whole on several
        threads rather than cut into slices (_parallel.DataParallel): its layers
        keep one step (keeps_one_step) on the packed float32 loop, whose own
        thread team splits the batch by samples with no Python between the
        threads, and which reads a batch-major input where it lies. The layers
        give the same bits either way (_recurrent.h; the head's one BLAS call
        over all rows may round a last bit apart from one per slice); in
        slices, each Python thread's hand-off and each slice's copy of its rows
        cost more (batched predict, best call, alternating rounds in one
        process, whole against sliced: sine +23%, medium +3-4%, large
        +1.5-2.6%, charlm level). Not a bidirectional network: the reversals and
        concatenations around its layers, numpy's work, then run on one thread
        instead of on each slice's (whole against sliced, 2 x 128 units over
        medium's batch: -8%, 7 of 8 rounds)."""
        return (self.keeps_one_step(N, lengths) and self.dtype == np.float32
                and not self.bidirectional and _kernels.packed_loop_runs())

    def _layer_forward(self, k, suffix, layer_in, h0, c0, lengths, arena, n_threads=None,
                       keep=True):
        """One direction of layer k -> (gates, c, tanh_c, h), what its backward needs
        (None where the cell has no such buffer; a GRU keeps its hidden projection as c).
        keep=False (no backward follows): an LSTM layer's gates and tanh_c are
        not kept for one sequence (None: the packed loop leaves them in its own
        rows, C harness, medium: 86 -> 81 us) and over a batch of sequences of
        one length hold one step, reused at every step:
        they stay in cache, where all T steps of them (the largest buffer of a
        batch) would be written out to memory and read back (batched predict:
        +4% medium, +5-7% charlm, +7-18% large, see fl_forward_part)."""
        T, N, _ = layer_in.shape
        H = self.hidden_sizes[k]
        weights = self.layer_p[k, suffix]
        h = arena.get(("h", k, suffix), (T, N, H))
        gates = c = tanh_c = None
        if self.cell != "lstm":   # only the LSTM loop reads a view (a prediction's input)
            layer_in = np.ascontiguousarray(layer_in)
        if self.cell == "lstm":
            packed = self.packed_weights.get((k, suffix)) if N == 1 else None
            c = arena.get(("c", k, suffix), (T, N, H))
            # one sequence on the packed loop, no backward: its gates and tanh_c not kept
            if keep or packed is None or not _kernels.packed_loop_runs():
                steps = 1 if not keep and self.keeps_one_step(N, lengths) else T
                gates = arena.get(("gates", k, suffix), (steps, N, 4 * H))
                tanh_c = arena.get(("tanh_c", k, suffix), (steps, N, H))
            _kernels.lstm_layer_forward(layer_in, *weights, h0, c0, gates, c, tanh_c, h, lengths,
                                        n_threads, packed)
        elif self.cell == "gru":
            gates = arena.get(("gates", k, suffix), (T, N, 3 * H))
            c = arena.get(("hproj", k, suffix), (T, N, 3 * H))      # hidden side, kept
            _cells.gru_layer_forward(layer_in, *weights, h0, gates, c, h, lengths)
        else:
            _cells.rnn_layer_forward(layer_in, *weights, h0, h, self.nonlinearity == "sigmoid",
                                     lengths)
        return gates, c, tanh_c, h

    def backward(self, tape, dout, n_threads=None):
        """dout (M, K) = dloss/doutput of the forward that made tape -> grads (P,).
        n_threads: as in forward."""
        if not tape.kept:
            raise ValueError("this forward pass ran with keep=False: it kept no activations "
                             "for a backward pass")
        layers, head_in, sequence_output, arena = (tape.layers, tape.head_in,
                                                   tape.sequence_output, tape.arena)
        T, N = layers[0][0].shape[:2]
        top = len(self.hidden_sizes) - 1
        H = self.hidden_sizes[top]
        width = 2 * H if self.bidirectional else H
        dlayer_out = arena.get(("dh", top), (T, N, width))       # (T, N, H or 2H)
        # through out = head_in @ W.T + b, the gradient on head_in written straight
        # into the top layer's dh where the head read its rows
        if sequence_output:
            dhead_in = dlayer_out.reshape(T * N, width)           # every step
        elif self.bidirectional:
            dhead_in = arena.get("dhead_in", (N, width))          # scattered below
        else:
            dlayer_out[:T - 1] = 0
            dhead_in = dlayer_out[T - 1]                          # the last step
        dout = np.ascontiguousarray(dout, dtype=self.dtype)       # (M, K)
        _cells.dense_backward(head_in, self.p["head.weight"], dout, self.g["head.weight"],
                              self.g["head.bias"], dhead_in)
        if self.bidirectional and not sequence_output:
            dlayer_out[...] = 0
            dlayer_out[T - 1, :, :H] = dhead_in[:, :H]
            dlayer_out[0, :, H:] = dhead_in[:, H:]
        for k in range(top, -1, -1):
            H = self.hidden_sizes[k]
            layer_in, gates, c, tanh_c, h, bits, h0, c0 = layers[k]
            if bits is not None:  # through the dropout mask, in place, on the steps it covers
                flat = dlayer_out[T - bits.shape[0]:].reshape(-1)      # (the others' are zero)
                _ops.apply_dropout_mask(flat, bits.reshape(-1), self.dropout, flat)
            dx = arena.get(("dh", k - 1), layer_in.shape) if k > 0 else None
            if not self.bidirectional:
                self._layer_backward(k, "", layer_in, (gates, c, tanh_c, h), h0, c0,
                                     dlayer_out, dx, tape.lengths, arena, n_threads)
            else:
                order = tape.order
                dh_fwd = np.ascontiguousarray(dlayer_out[..., :H])            # (T, N, H)
                self._layer_backward(k, "", layer_in, (gates, c, tanh_c, h), h0, c0,
                                     dh_fwd, dx, tape.lengths, arena, n_threads)
                x_rev, *saved = tape.reverse[k]
                dh_rev = dlayer_out[..., H:][order, np.arange(N)]             # reversed time
                dx_rev = arena.get(("dx_rev", k), layer_in.shape) if k > 0 else None
                self._layer_backward(k, "_reverse", x_rev, saved, h0, c0, dh_rev, dx_rev,
                                     tape.lengths, arena, n_threads)
                if dx is not None:
                    dx += dx_rev[order, np.arange(N)]
            dlayer_out = dx
        return self.grads

    def _layer_backward(self, k, suffix, layer_in, saved, h0, c0, dh, dx, lengths, arena,
                        n_threads=None):
        """Gradients of one direction of layer k into self.g; dh (T, N, H) is clobbered,
        dx (T, N, D) written unless None."""
        T, N, _ = layer_in.shape
        H = self.hidden_sizes[k]
        gates, c, tanh_c, h = saved
        key = lambda name: (name, k, suffix)  # noqa: E731
        w_ih, w_hh = self.layer_p[k, suffix][:2]
        dw_ih, dw_hh, db_ih, db_hh = grads = self.layer_g[k, suffix]
        for grad in grads:
            grad[...] = 0                                         # the kernels accumulate
        dh0 = None                                                # no one asks for dL/dh0
        if self.cell == "lstm":
            dc = arena.get(key("dc"), (N, H))                     # dL/dc_T = 0
            dc[...] = 0
            steps = _kernels.gradient_chunk_steps(T, N, H, self.dtype)   # scratch: a chunk's
            dgates = arena.get(key("dgates"), (steps, N, 4 * H))
            _kernels.lstm_layer_backward(layer_in, w_ih, w_hh, h0, c0, gates, c, tanh_c, h, dh,
                                         dc, dh0, dgates, dx, dw_ih, dw_hh, db_ih, lengths,
                                         n_threads)
            db_hh[...] = db_ih                                    # b_ih and b_hh enter alike
        elif self.cell == "gru":
            steps = _cells.gru_gradient_chunk_steps(T, N, H, self.dtype)  # scratch: a chunk's
            dgates_i = arena.get(key("dgates"), (steps, N, 3 * H))
            dgates_h = arena.get(key("dgates_h"), (steps, N, 3 * H))
            _cells.gru_layer_backward(layer_in, w_ih, w_hh, h0, gates, c, h, dh, dh0, dgates_i,
                                      dgates_h, dx, dw_ih, dw_hh, db_ih, db_hh, lengths)
        else:
            dpre = arena.get(key("dgates"), (T, N, H))
            _cells.rnn_layer_backward(layer_in, w_ih, w_hh, h0, h, dh, dh0, dpre, dx, dw_ih,
                                      dw_hh, db_ih, self.nonlinearity == "sigmoid", lengths)
            db_hh[...] = db_ih


def orthonormal_columns(a):
    """Q of the QR factorisation a = QR of a (G, H), G >= H, float64, with R's
    diagonal positive (the unique one): Keras' orthogonal initialiser.

    For a tall Gaussian (G >= 2H: LSTM and GRU layers) by Cholesky QR, Q = a R^-1
    with R'R = a'a: three BLAS-3 calls, where Householder QR is panel by panel
    (G, H = 2048, 512: 43 vs 132 ms; 1200, 300: 11 vs 19 ms), and such a matrix is
    well conditioned (cond(a) ~ (1 + sqrt(H/G)) / (1 - sqrt(H/G)) <= 6), so Q is
    as orthonormal (1e-15) and equal to Householder's to 1e-15. A square one (RNN
    layers) can be ill conditioned: Householder QR, as when Cholesky fails."""
    G, H = a.shape
    if G >= 2 * H:
        try:
            r = scipy.linalg.cholesky(a.T @ a)                     # upper: a'a = r'r
            return scipy.linalg.solve_triangular(r, a.T, trans="T").T
        except np.linalg.LinAlgError:
            pass
    q, r = np.linalg.qr(a)
    return q * np.sign(np.diag(r))


def reverse_order(T, N, lengths=None):
    """(T, N) time index that reverses each sequence within its real steps:
    order[t, n] = L_n - 1 - t for t < L_n and t on the padding. Applying it twice
    is the identity, so it also puts reversed outputs back in time order."""
    t = np.arange(T)[:, None]
    if lengths is None:
        return np.broadcast_to(T - 1 - t, (T, N))
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
