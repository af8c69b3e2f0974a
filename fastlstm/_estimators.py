"""LSTMRegressor and LSTMClassifier: validation, the training loop, the sklearn
protocol. The math lives in _network (layers, head) and _ops (losses, optimisers).
"""
import collections.abc
import copy
import functools
import math
import numbers
import re
import sys
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from . import _ops, _persist, _stepping, _threads
from ._network import LSTMNetwork, _Arena
from ._parallel import (MIN_SLICED_PREDICT_WORK, MIN_SLICED_WORK, MIN_SPLIT_LOOP_WORK,
                        DataParallel,
                        forward_work, in_ranges, n_slices)
from ._validation import (check_labels, check_params, check_sample_weight, check_sequences,
                          check_targets, is_sequence_list, object_vector_as_list, pack_sequences,
                          resolve_dtype, unflatten_steps)

# Predictions run in chunks whose scratch memory stays near this many bytes: enough
# for a batch of 256 `charlm` or 90 `large` sequences, so that each thread's slice
# of a chunk (_parallel.py) is still a thick gemm.
_PREDICT_CHUNK_BYTES = 128 * 2**20


def _n_features(X3, x_ndim):
    """sklearn's n_features_in_: X.shape[1] of the X the user gave: features per
    step for 3-D X, columns (steps x step features) for 2-D X."""
    return X3.shape[2] if x_ndim == 3 else X3.shape[1] * X3.shape[2]


def _generator(random_state, stream=None):
    """The numpy Generator a fit draws from (initialisation, shuffling, dropout),
    seeded from scikit-learn's random_state (None, an int or a RandomState
    instance, drawn from as check_random_state gives it: None is numpy's global
    one, so np.random.seed works as in scikit-learn). stream: another
    independent Generator of the same seed (1: the validation split)."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        seed = _seed_of_int(int(random_state))
    else:
        seed = _seed_of(random_state)
    return np.random.default_rng(seed if stream is None else [seed, stream])


def _seed_of(random_state):
    """The seed a random_state gives: a draw from check_random_state's RandomState."""
    return check_random_state(random_state).randint(np.iinfo(np.int32).max)


# An int's seed, remembered: building its RandomState (MT19937's seeding) costs
# ~0.2 ms, paid by every fit otherwise.
_seed_of_int = functools.lru_cache(maxsize=8)(_seed_of)


def _n_threads(n_jobs):
    """The threads n_jobs asks for, None if it is None; -1: every CPU this process
    may run on (its affinity, as joblib's), not the host's."""
    return None if n_jobs is None else max(
        1, _threads._cpus() + 1 + n_jobs if n_jobs < 0 else n_jobs)


class _thread_limit:
    """`with _thread_limit(...) as parts:` the threads a call runs on; parts is how
    many slices each batch is cut into, and .threads what to pass the network as
    n_threads.

    Several threads (n_jobs, or else the BLAS limit in force) and batches of
    enough work (fit and predict pass `work`, the multiply-adds of a batch's
    forward pass, to compare with min_work): each batch is cut into one slice
    per thread, run side by side on single-threaded kernels (_parallel.py).
    Otherwise the kernels run on one BLAS thread for small networks (see
    _threads), else on n_jobs BLAS threads if given and the limit in force if not;
    and a batch run whole with MIN_SPLIT_LOOP_WORK or more hands the threads to
    the layers' own time loops (.threads), which split it by samples.
    One sequence may need no BLAS limit at all (see LSTMNetwork.one_sequence_plan);
    fit passes training=True, as its backward pass runs BLAS products of one row.
    A class rather than a generator context manager: a single-sequence predict
    enters one, and every microsecond shows there."""

    def __init__(self, n_jobs, batch, net, work=0, min_work=MIN_SLICED_WORK, training=False):
        self.n = _n_threads(n_jobs)
        self.parts = 1
        if work >= min_work:
            self.parts = n_slices(_threads.recurrent_threads() if self.n is None else self.n,
                                  batch, work, min_work)
        self.untouched = False
        self.threads = None
        if batch == 1:
            # one sequence: no limit to set when BLAS runs each of its products on
            # one thread by itself; layers with their own loop (no BLAS) run on
            # n_jobs threads or the BLAS limit read here, before any limit is set
            blas_products, threads_help = net.one_sequence_plan(training)
            self.untouched = _threads.blas_stays_single(blas_products)
            self.threads = 1
            if threads_help:
                self.threads = self.n if self.n is not None else _threads.recurrent_threads()
        self.split_inside = batch > 1 and self.parts == 1 and work >= MIN_SPLIT_LOOP_WORK
        if self.split_inside:
            # a batch run whole: the layers' own time loops split it by samples, and
            # the BLAS calls around and inside them run on one thread each, as a
            # slice's do (two team threads calling a threaded BLAS would oversubscribe)
            self.threads = self.n if self.n is not None else _threads.recurrent_threads()
        self.small = not self.untouched and _threads.is_small(batch, net.hidden_sizes)
        self._limit = None

    def __enter__(self):
        if self.untouched:
            return self.parts
        if self.parts > 1 or self.small or self.split_inside:
            self._limit = _threads.blas_threads(1)
        elif self.n is not None:
            self._limit = _threads.blas_threads(self.n)
        if self._limit is not None:
            self._limit.__enter__()
        return self.parts

    def __exit__(self, *exc_info):
        if self._limit is not None:
            self._limit.__exit__(*exc_info)


class _Weights(collections.abc.Mapping):
    """weights_: {torch name: array view} of the network's flat parameters.

    `weights_[name] = value` copies value into the view (same shape, finite), so
    predict, save and further training all see it (`weights_.update(mapping)`
    for several: a torch module's state_dict()); writing through the view
    (`weights_[name][...] = value`) does the same. A plain dict would rebind
    the name to a new array that the network never reads."""

    def __init__(self, views):
        self._views = views

    def __getitem__(self, name):
        return self._views[name]

    def __iter__(self):
        return iter(self._views)

    def __len__(self):
        return len(self._views)

    def __setitem__(self, name, value):
        if name not in self._views:
            raise KeyError(f"{name!r} is not a parameter of this network; its parameters "
                           f"are {list(self._views)}")
        view = self._views[name]
        if hasattr(value, "detach"):        # a torch Parameter: its values, not its graph
            value = value.detach()
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"{name} has shape {view.shape}, got an array of shape "
                             f"{value.shape}")
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{name} takes finite numbers, got {value.dtype} values")
        with np.errstate(over="ignore"):              # checked as the network holds it:
            value = value.astype(view.dtype)          # 1e40 is inf in float32
        if not np.isfinite(value).all():
            raise ValueError(f"{name} takes finite numbers, got values that are NaN or inf "
                             f"in the network's {view.dtype}")
        view[...] = value

    def update(self, weights):
        """weights_[name] = value for each pair of a mapping (a torch module's
        state_dict(), say), every one checked before any is written."""
        pairs = dict(weights)
        unknown = sorted(set(pairs) - set(self._views))
        if unknown:
            raise KeyError(f"{unknown} are not parameters of this network; its parameters "
                           f"are {list(self._views)}")
        saved = {name: self._views[name].copy() for name in pairs}
        try:
            for name, value in pairs.items():
                self[name] = value
        except BaseException:             # a bad shape or value: leave the network as it was
            for name, value in saved.items():
                self._views[name][...] = value
            raise

    def __repr__(self):
        return "{" + ", ".join(f"{name!r}: array{v.shape}" for name, v in self.items()) + "}"


class _Progress:
    """verbose progress of one epoch on stderr: a bar updated in place while the
    epoch runs, closed by a line with the loss, validation score and speed."""

    def __init__(self, verbose, epoch, n_samples, width=30):
        self.verbose = verbose
        self.epoch = epoch
        self.n_samples = n_samples
        self.width = width
        self.done = 0
        self._drawn = 0   # length of the line last drawn in place
        self.tic = self.last_draw = time.perf_counter()
        # redraw in place only on a terminal: logs get one line per epoch
        self.live = verbose and getattr(sys.stderr, "isatty", lambda: False)()

    def update(self, n, loss):
        if not self.live:
            return
        self.done += n
        now = time.perf_counter()
        if now - self.last_draw > 0.1:                            # redraw at most 10x per second
            self.last_draw = now
            self._draw(f"batch loss {loss:.5g}", end="\r")

    def _draw(self, tail, end):
        filled = int(self.width * self.done / max(self.n_samples, 1))
        rate = self.done / max(time.perf_counter() - self.tic, 1e-9)
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"Epoch {self.epoch} [{bar}] {tail}, {rate:,.0f} samples/s"
        # padded to the last line drawn in place: a shorter one leaves no stale characters
        print(line.ljust(self._drawn), end=end, file=sys.stderr, flush=True)
        self._drawn = len(line) if end == "\r" else 0

    def close(self, loss, validation_score=None):
        if not self.verbose:
            return
        self.done = self.n_samples
        tail = f"loss = {loss:.8f}"
        if validation_score is not None:
            tail += f", validation score = {validation_score:.6f}"
        self._draw(tail, end="\n")


class _Optimizer:
    """The solver's update rule over one flat parameter buffer, with its state
    (moments, step count), which partial_fit and warm_start continue while the
    solver stays the one it was made for."""

    def __init__(self, params, solver):
        self.solver = solver                                      # "adam" or "sgd"
        self.first_moment = np.zeros_like(params)                 # Adam m, or SGD velocity
        self.second_moment = np.zeros_like(params)                # Adam v
        self.n_steps = 0

    def step(self, est, params, grads, parts=1):
        """One update of params from grads; parts: threads the element-wise update
        may be split over (_parallel.in_ranges)."""
        if est.clip_grad_value is not None:  # each component, then the whole (if asked)
            np.clip(grads, -est.clip_grad_value, est.clip_grad_value, out=grads)
        if est.clip_grad_norm is not None:
            _ops.clip_grad_norm(grads, est.clip_grad_norm)
        self.n_steps += 1
        m, v = self.first_moment, self.second_moment
        if self.solver == "adam":
            as_params = params.dtype.type            # the update runs in the parameters' dtype
            beta1, beta2, t = est.beta_1, est.beta_2, self.n_steps
            scalars = (as_params(beta1), as_params(1.0 - beta1), as_params(beta2),
                       as_params(1.0 - beta2),
                       as_params(est.learning_rate_init / (1.0 - beta1 ** t)),
                       as_params(math.sqrt(1.0 - beta2 ** t)), as_params(est.epsilon))

            def update(r):
                _ops.adam_step(params[r], grads[r], m[r], v[r], *scalars)
        else:
            def update(r):
                _ops.sgd_step(params[r], grads[r], m[r], est.learning_rate_init,
                              est.momentum, est.nesterovs_momentum)
        in_ranges(update, params.size, parts)

    def copy_state_into(self, other):
        """Copy this state (moments, step count) into other's arrays: a diverged or
        interrupted epoch goes back to the last completed one's solver state along
        with its weights (else the next fit restarts from the failed updates'
        velocity)."""
        other.solver, other.n_steps = self.solver, self.n_steps
        other.first_moment[...] = self.first_moment
        other.second_moment[...] = self.second_moment


class _BaseLSTM(BaseEstimator):
    """Shared fit/predict machinery; subclasses pick the head's loss."""

    def __init__(self, hidden_layer_sizes=(100,), *, cell="lstm", nonlinearity="tanh",
                 bidirectional=False, output="last", dropout=0.0,
                 solver="adam", learning_rate_init=1e-3, batch_size="auto", max_iter=200,
                 shuffle=True, alpha=1e-4, momentum=0.9, nesterovs_momentum=True,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, clip_grad_norm=None,
                 clip_grad_value=None, tbptt_steps=None, tol=1e-4,
                 n_iter_no_change=10, early_stopping=False, validation_fraction=0.1,
                 warm_start=False, step_features=None, dtype="float32", n_jobs=None,
                 random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.cell = cell
        self.nonlinearity = nonlinearity
        self.bidirectional = bidirectional
        self.output = output
        self.dropout = dropout
        self.solver = solver
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.alpha = alpha
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.clip_grad_norm = clip_grad_norm
        self.clip_grad_value = clip_grad_value
        self.tbptt_steps = tbptt_steps
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.step_features = step_features
        self.dtype = dtype
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    # ---- what the subclasses define ------------------------------------------
    # _encode_targets(y, X3, reset, classes) -> (targets, n_outputs); targets (N[, K])
    #     float or (N,) int, with a time axis after N when output="sequence"
    # _loss(out, targets, weight, dout) -> float
    # _validation_score(X3, y_encoded, sample_weight, lengths, parts) -> float, higher is better

    # ---- fitting --------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train on X (n_samples, n_timesteps[, n_features]) and y; returns self.

        2-D X holds univariate sequences (or flattened steps, see
        step_features). Ctrl-C stops training and keeps the weights and solver
        state of the last completed epoch (with early_stopping, the weights of the
        best epoch so far); so does a loss that becomes NaN or infinite.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        sizes = check_params(self)
        if incremental and self.early_stopping:   # one epoch: nothing to stop (as MLP's)
            raise ValueError("partial_fit does not support early_stopping=True")
        reset = not hasattr(self, "network_") or not (incremental or self.warm_start)
        if not reset:
            return self._fit_checked(X, y, sample_weight, incremental, classes, sizes, reset)
        # a new fit replaces the fitted attributes before it can check everything
        # (sample weights, the validation split): one that raises puts them back, so
        # a fitted model survives a failed refit
        fitted = dict(vars(self))
        try:
            return self._fit_checked(X, y, sample_weight, incremental, classes, sizes, reset)
        except BaseException:
            vars(self).clear()
            vars(self).update(fitted)
            raise

    def _fit_checked(self, X, y, sample_weight, incremental, classes, sizes, reset):
        if reset:
            # feature_names_in_: a DataFrame's columns, checked in _check_X_predict
            # (the array itself is checked here, where 3-D X and lists are known)
            validate_data(self, X, skip_check_array=True, reset=True, ensure_2d=False)
            # what predict, step and forecast read: the parameters as fitted, whatever
            # set_params does later (a warm fit refuses their change)
            self._output, self._step_features = self.output, self.step_features
            dtype = resolve_dtype(X, self.dtype)
            X3, x_ndim, lengths = self._validate_X(X, dtype)
            targets, n_outputs = self._encode_targets(y, X3, reset=True, classes=classes,
                                                      lengths=lengths)
            self.n_features_in_ = _n_features(X3, x_ndim)
            # a model fitted on sequences of several lengths takes any length
            self.n_timesteps_in_ = X3.shape[1] if lengths is None else None
            self._x_ndim = x_ndim
            self._rng = _generator(self.random_state)
            try:
                net = LSTMNetwork(X3.shape[2], sizes, n_outputs, dtype=dtype,
                                  dropout=self.dropout, cell=self.cell,
                                  nonlinearity=self.nonlinearity,
                                  bidirectional=self.bidirectional)
            except (MemoryError, ValueError) as err:  # numpy's "array is too big": ValueError
                raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} needs more "
                                 f"memory than is available for its parameters ({err})") from None
            # one BLAS thread: OpenBLAS's workers, once woken by the QR of a large
            # initialisation, spin for ~0.1 s on the core the training threads need
            with _threads.blas_threads(1):
                net.initialize(self._rng)
            self.network_ = net
            self._optimizer = _Optimizer(net.params, self.solver)
            self.loss_curve_ = []
            self.n_iter_ = 0
            self.best_loss_ = np.inf
            self._no_improvement = 0
            # a new fit scores anew: an old best validation score would be a bar no
            # epoch of it clears, and it would end on its initial weights
            vars(self).pop("validation_scores_", None)
            vars(self).pop("best_validation_score_", None)
        else:
            if self.network_.hidden_sizes != sizes:
                raise ValueError(
                    f"hidden_layer_sizes changed from {self.network_.hidden_sizes} to {sizes} "
                    "since the last fit; warm_start and partial_fit need the same network")
            changed = [(name, getattr(self.network_, name), getattr(self, name))
                       for name in ("cell", "nonlinearity", "bidirectional")]
            changed += [("output", self._output, self.output),
                        ("step_features", self._step_features, self.step_features)]
            if self.dtype is not None:
                changed.append(("dtype", self.network_.dtype.name, np.dtype(self.dtype).name))
            for name, was, now in changed:
                if was != now:
                    raise ValueError(
                        f"{name} changed from {was!r} to {now!r} since the last fit; "
                        "warm_start and partial_fit need the same network")
            X3, lengths = self._check_X_predict(X)
            targets, _ = self._encode_targets(y, X3, reset=False, classes=classes,
                                              lengths=lengths)
            if not hasattr(self, "_optimizer"):  # loaded from a model file: fresh solver state
                self._rng = _generator(self.random_state)
            if not hasattr(self, "_optimizer") or self._optimizer.solver != self.solver:
                # Adam's moments are no SGD velocity (nor the reverse): a new solver starts
                # afresh, as MLP's does on every fit
                self._optimizer = _Optimizer(self.network_.params, self.solver)
            self.network_.dropout = float(self.dropout)   # a training setting: the new one
        if self.bidirectional and self.tbptt_steps is not None:
            raise ValueError("tbptt_steps does not work with bidirectional=True: the reverse "
                             "pass needs each whole sequence")
        if lengths is not None and self.tbptt_steps is not None:
            raise ValueError("tbptt_steps does not work with sequences of several lengths yet; "
                             "pad them to one length or leave tbptt_steps=None")
        weights = self._sample_weights(sample_weight, targets, X3.shape[0], lengths)
        batch_size = min(200, len(X3)) if self.batch_size == "auto" else self.batch_size
        batch = min(batch_size, len(X3))
        steps = X3.shape[1] if self.tbptt_steps is None else min(self.tbptt_steps, X3.shape[1])
        limit = _thread_limit(self.n_jobs, batch, self.network_, training=True,
                              work=forward_work(self.network_, batch, steps,
                                                self._output == "sequence"))
        with limit as parts:
            self._train(X3, targets, weights, incremental, lengths, parts, limit.threads)
        return self

    def _sample_weights(self, sample_weight, targets, n_samples, lengths):
        """float64 weights, sample_weight times class weights, checked: (N,), or
        (N, T) one per step for per-step labels with class weights."""
        if sample_weight is None:
            weights = np.ones(n_samples)
        else:
            weights = check_sample_weight(sample_weight, n_samples)
        weights = self._weigh_classes(weights, targets, lengths)
        # the losses sum a batch's weights over its steps (per-step class weights
        # are one per step already)
        steps = targets.shape[1] if self._output == "sequence" and weights.ndim == 1 else 1
        with np.errstate(over="ignore"):
            total = weights.sum()
            over_steps = total * steps
        if over_steps == np.inf:    # sample_weight alone is checked for its sum already
            raise ValueError("sample_weight (times class_weight, over every time step) sums "
                             "to more than float64 holds: divide the weights by a common "
                             "factor")
        if not total > 0:
            raise ValueError("class_weight gives every sample a weight of zero: nothing "
                             "to learn from")
        return weights

    def _weigh_classes(self, weights, targets, lengths):
        return weights

    def _train(self, X3, targets, weights, incremental, lengths=None, parts=1, n_threads=None):
        """Epochs of minibatch updates on self.network_; stops early on a flat
        loss or validation score (tol, n_iter_no_change), on divergence and on
        Ctrl-C. incremental: one epoch, no validation split (partial_fit).
        parts: slices each batch is cut into, run side by side (_parallel.py);
        n_threads: what the network's forward and backward get (_thread_limit)."""
        net = self.network_
        runner = DataParallel(net, parts) if parts > 1 else net
        early_stopping = self.early_stopping and not incremental
        validation = None
        if early_stopping:
            train, validation = self._split_validation(X3, targets, weights, lengths)
            targets, weights = targets[train], weights[train]
            if lengths is not None:   # a SequenceList of the training rows, no copy
                X3, lengths = X3[train], lengths[train]
                x_tm = X3
            else:
                # the training rows into their time-major copy a few at a time: one
                # copy of the data, not X3[train] and then its time-major copy too (nor
                # np.take along axis 1 of the transposed view, which first copies it all)
                x_tm = np.empty((X3.shape[1], len(train), X3.shape[2]), X3.dtype)  # (T, N, D)
                for start in range(0, len(train), 1024):
                    rows = train[start:start + 1024]
                    x_tm[:, start:start + len(rows)] = X3[rows].transpose(1, 0, 2)
            if not hasattr(self, "validation_scores_"):  # a warm fit may turn it on
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
        else:  # epochs without scores: those kept always score the last epochs
            vars(self).pop("validation_scores_", None)
            vars(self).pop("best_validation_score_", None)
            # (T, N, D) time-major, once; a SequenceList pads each batch as it is taken
            x_tm = X3 if lengths is not None else np.ascontiguousarray(X3.transpose(1, 0, 2))
        N = len(x_tm) if lengths is not None else x_tm.shape[1]
        batch_size = min(200, N) if self.batch_size == "auto" else min(self.batch_size, N)
        if self._output == "sequence":  # time-major targets, to match the head's row order
            targets = np.ascontiguousarray(np.swapaxes(targets, 0, 1))   # (T, N[, K])
        arena = _Arena(net.dtype)
        last_good = net.params.copy()
        last_good_solver = copy.deepcopy(self._optimizer)
        best_params = net.params.copy() if early_stopping else None
        stopped = None
        n_epochs = 1 if incremental else self.max_iter
        if not incremental:
            # each fit counts its own epochs without improvement: a warm fit (the next
            # stage of a learning-rate schedule, say) would otherwise stop after one
            self._no_improvement = 0
        try:
            for _ in range(n_epochs):
                progress = _Progress(self.verbose, self.n_iter_ + 1, N)
                epoch_loss = self._run_epoch(runner, x_tm, targets, weights, lengths, batch_size,
                                             arena, progress, n_threads)
                if not (np.isfinite(epoch_loss) and np.isfinite(net.params).all()):
                    stopped = "diverged"
                    break
                last_good[...] = net.params
                self._optimizer.copy_state_into(last_good_solver)
                self.loss_curve_.append(epoch_loss)
                self.loss_ = epoch_loss
                self.n_iter_ += 1
                if early_stopping:
                    score = self._validation_score(*validation, parts=parts)
                    self.validation_scores_.append(score)
                    improved = score > self.best_validation_score_ + self.tol
                    if score > self.best_validation_score_:
                        self.best_validation_score_ = score
                        best_params[...] = net.params
                else:
                    score = None
                    improved = epoch_loss < self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, epoch_loss)
                self._no_improvement = 0 if improved else self._no_improvement + 1
                progress.close(epoch_loss, score)
                if self._no_improvement >= self.n_iter_no_change and not incremental:
                    what = "Validation score" if early_stopping else "Training loss"
                    if self.verbose:
                        print(f"{what} did not improve more than tol={self.tol} for "
                              f"{self.n_iter_no_change} consecutive epochs. Stopping.",
                              file=sys.stderr)
                    stopped = "converged"
                    break
        except KeyboardInterrupt:
            # early stopping ends on its best epoch, interrupted or not
            best = early_stopping and self.validation_scores_
            net.params[...] = best_params if best else last_good
            last_good_solver.copy_state_into(self._optimizer)
            warnings.warn(
                f"Training interrupted during epoch {self.n_iter_ + 1}: the estimator keeps "
                + ("the weights of the best epoch so far (early_stopping)." if best else
                   f"the weights of the last completed epoch ({self.n_iter_})."), RuntimeWarning)
            return
        if stopped == "diverged":
            net.params[...] = last_good
            last_good_solver.copy_state_into(self._optimizer)
            warnings.warn(
                f"Training diverged (the loss became NaN or infinite) in epoch "
                f"{self.n_iter_ + 1}; stopped and kept the weights of the last finite epoch. "
                f"Lower learning_rate_init or set clip_grad_norm.", RuntimeWarning)
        elif stopped is None and not incremental:
            warnings.warn(
                f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached and the "
                f"optimization hasn't converged yet.", ConvergenceWarning)
        if early_stopping and self.validation_scores_:
            net.params[...] = best_params                         # the best epoch, not the last

    def _split_validation(self, X3, targets, weights, lengths):
        """Hold out validation_fraction of the samples (stratified by class for
        many-to-one classification), as MLP does: (the training rows' indices,
        (X3, targets, weights, lengths) of the validation rows)."""
        N = X3.shape[0]
        n_val = int(np.ceil(self.validation_fraction * N))
        # R^2 of one sample is undefined (NaN): no epoch would ever score better
        fewest = 1 if is_classifier(self) else 2
        if n_val < fewest or N - n_val < 1:
            raise ValueError(
                f"early_stopping with validation_fraction={self.validation_fraction} leaves "
                f"{n_val} validation and {N - n_val} training samples out of {N}; it needs "
                f"{fewest} validation sample{'s' if fewest > 1 else ''} at least and 1 "
                "training sample")
        stratify = targets if (is_classifier(self) and self._output == "last") else None
        # drawn afresh from random_state on every fit, as MLP's: an int's split is the
        # same in a warm fit, whose best_validation_score_ so stays comparable
        seed = int(_generator(self.random_state, stream=1).integers(np.iinfo(np.int32).max))
        try:
            train, val = train_test_split(np.arange(N), test_size=n_val, random_state=seed,
                                          stratify=stratify)
        except ValueError:  # a class too small to stratify: fall back to a plain split
            train, val = train_test_split(np.arange(N), test_size=n_val, random_state=seed)
        return train, (X3[val], targets[val], weights[val],
                       None if lengths is None else lengths[val])

    def _run_epoch(self, runner, x_tm, targets, weights, lengths, batch_size, arena, progress,
                   n_threads=None):
        """One pass over the samples, shuffled if asked; returns the weighted mean
        loss, or NaN as soon as a batch loss is not finite (that batch's update is
        not applied).

        With tbptt_steps, each batch's time axis is cut into windows of that many
        steps and every window with a loss gets its own backward pass and update.
        runner: the network, or a DataParallel over it (same forward/backward).
        x_tm: the samples time-major (T, N, D), or with lengths a SequenceList.
        """
        net = self.network_
        T, N = (x_tm.shape[1], len(x_tm)) if lengths is not None else x_tm.shape[:2]
        sequence = self._output == "sequence"
        n_weights = net.n_weights
        parts = len(runner.replicas) if isinstance(runner, DataParallel) else 1
        order = self._rng.permutation(N) if self.shuffle else np.arange(N)
        window = T if self.tbptt_steps is None else min(self.tbptt_steps, T)
        total, total_weight = 0.0, 0.0
        # the epoch's sums in units of the largest weight: weights near float64's
        # largest overflowed loss * batch weight (1 for unit weights: the same bits)
        weight_unit = float(weights.max())
        # overflow on the way to a non-finite loss is expected, and reported by the caller
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, N, batch_size):
                idx = order[start:start + batch_size]
                wb = weights[idx]          # (B,), or (B, T) per step: per-step class weights
                lb = None if lengths is None else lengths[idx]     # (B,)
                step_wb = None
                if wb.ndim == 2:           # a sample weighs the mean over its real steps
                    step_wb, wb = wb, wb.sum(axis=1) / (T if lb is None else lb)
                batch_weight = wb.sum()
                if batch_weight == 0:                              # nothing to learn from
                    continue
                # sequences of several lengths: the batch runs to its own longest, not
                # to the data's (the steps after it are padding for all its samples)
                T_b = T if lb is None else int(lb.max())
                xb = (np.take(x_tm[:T_b], idx, axis=1) if lb is None  # (T_b, B, D)
                      else x_tm.time_major(idx, T_b))
                # (T_b, B[, K]) per-step targets, or (B[, K]) for the last step
                tb = np.take(targets[:T_b], idx, axis=1) if sequence else targets[idx]
                if step_wb is not None:
                    step_wb = step_wb[:, :T_b]
                # Truncated BPTT: windows of `window` steps; (h, c) flows forward from
                # one window into the next, gradients stop at the window's start.
                state = None
                for t0 in range(0, T_b, window):
                    t1 = min(t0 + window, T_b)
                    out, tape = runner.forward(xb[t0:t1], sequence, training=True,
                                               rng=self._rng, arena=arena, initial_state=state,
                                               lengths=lb, n_threads=n_threads)
                    if t1 < T_b:
                        state = tape.final_state()
                        if not sequence:  # many-to-one: only the last window has a loss
                            continue
                    if sequence:  # (W*B[, K]) time-major rows, weights in the same order
                        tw = tb[t0:t1].reshape(((t1 - t0) * len(idx),) + tb.shape[2:])
                        if step_wb is not None:                    # padded steps hold 0
                            ww = np.ascontiguousarray(step_wb[:, t0:t1].T).reshape(-1)
                            if not ww.any():  # a window of weight-0 classes only (tbptt):
                                continue      # nothing to learn
                        else:
                            ww = np.empty((t1 - t0, len(wb)))      # wb tiled, one per step
                            ww[...] = wb                           # (not broadcast_to: 3x slower)
                            ww = ww.reshape(-1)
                            if lb is not None:                     # padded steps weigh 0
                                ww *= (np.arange(t0, t1)[:, None] < lb[None, :]).ravel()
                    else:
                        tw, ww = tb, wb
                    dout = arena.get("dout", out.shape)
                    loss = self._loss(out, tw, ww, dout)
                    runner.backward(tape, dout, n_threads)
                    if self.alpha > 0:
                        # MLP's L2, 0.5 * alpha * ||W||^2 / batch size, with the batch
                        # size counted in sample weight: integer weights = repeats
                        loss += _ops.add_l2_penalty(net.params[:n_weights],
                                                    net.grads[:n_weights],
                                                    self.alpha / batch_weight)
                    if not math.isfinite(loss):
                        return np.nan
                    self._optimizer.step(self, net.params, net.grads, parts)
                    # a window's loss is the weighted mean over its steps: weight it by
                    # its share of the batch's step weight, so that the windows add up to
                    # the batch's loss without tbptt (per-step class weights: by weight)
                    share = 1.0
                    if sequence and window < T_b:
                        share = (t1 - t0) / T_b if step_wb is None else ww.sum() / step_wb.sum()
                    total += loss * (batch_weight / weight_unit) * share
                total_weight += batch_weight / weight_unit
                progress.update(len(idx), loss)
        return float(total / total_weight) if total_weight > 0 else 0.0

    # ---- prediction -----------------------------------------------------------

    def _validate_X(self, X, dtype, fitted_on_lists=False):
        """X -> (X3 (N, T, D) checked, ndim of X as given, lengths).

        lengths is None, or (N,) int64 for a list of sequences of several
        lengths: X3 is then a SequenceList, which stands for them zero-padded
        at the end to the longest and pads each batch as it is taken. A model
        fitted on such a list (fitted_on_lists) reads any list of sequences so,
        whatever their lengths: one (T,) sequence is a univariate one there,
        not a row of a 2-D X.
        """
        X = object_vector_as_list(X)
        if is_sequence_list(X, same_lengths_too=fitted_on_lists):
            if self._step_features is not None:
                raise ValueError("step_features reads a 2-D array, not a list of sequences")
            X3, lengths = pack_sequences(X, dtype)                # a SequenceList
            return X3, 3, lengths
        X3, x_ndim = check_sequences(X, dtype)
        if self._step_features is not None:
            if x_ndim != 2:
                raise ValueError(f"step_features={self._step_features} reads a 2-D X of "
                                 f"flattened steps, but X is {x_ndim}-D")
            X3 = unflatten_steps(X3, self._step_features)
        return X3, x_ndim, None

    def _check_X_predict(self, X):
        if not hasattr(self, "network_"):  # sklearn's check costs ~5 us even when fitted
            check_is_fitted(self, "network_")
        if hasattr(self, "feature_names_in_") or hasattr(X, "columns"):  # skip its ~1 us
            validate_data(self, X, skip_check_array=True, reset=False, ensure_2d=False)
        X3, x_ndim, lengths = self._validate_X(X, self.network_.dtype,
                                               fitted_on_lists=self.n_timesteps_in_ is None)
        if x_ndim != self._x_ndim:
            raise ValueError(
                f"X has {x_ndim} dimensions, but {type(self).__name__} was fitted on "
                f"{self._x_ndim}-D input" + self._dimensions_hint(x_ndim, X3))
        n_features = _n_features(X3, x_ndim)
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input." + (
                    f" A 2-D X holds {self.n_features_in_} time steps of one feature each"
                    if x_ndim == 2 and self._step_features is None else ""))
        if self.n_timesteps_in_ is not None and lengths is not None and (
                lengths != self.n_timesteps_in_).any():
            raise ValueError(
                f"X has sequences of {sorted(set(lengths.tolist()))} time steps, but "
                f"{type(self).__name__} was fitted on sequences of {self.n_timesteps_in_} "
                "time steps" + _ANY_LENGTH_HINT)
        if self.n_timesteps_in_ is not None and X3.shape[1] != self.n_timesteps_in_:
            raise ValueError(
                f"X has {X3.shape[1]} time steps, but {type(self).__name__} was fitted on "
                f"sequences of {self.n_timesteps_in_} time steps" + _ANY_LENGTH_HINT)
        return X3, lengths

    def _dimensions_hint(self, x_ndim, X3):
        """What to say of an X of x_ndim dimensions to a model fitted on the other."""
        if self.n_timesteps_in_ is None and x_ndim == 2:
            return (", a list of sequences: pass a list of (n_timesteps, n_features) arrays, "
                    "or a 3-D X (X[..., None] for one feature)")
        if x_ndim == 2 and self.n_features_in_ == 1:
            return ": for sequences of one feature, pass X[..., None] (n_samples, n_timesteps, 1)"
        if x_ndim == 3 and X3.shape[2] == 1 and self._step_features is None:
            return ": for sequences of one feature, pass X[..., 0] (n_samples, n_timesteps)"
        return ""

    def _forward(self, X):
        """(raw head outputs, lengths): outputs (N, K), or when output="sequence"
        (N, T, K), or (S, K) for a list of sequences (each one's real steps in
        turn, see _unpad); lengths None or (N,) for a list of sequences."""
        X3, lengths = self._check_X_predict(X)
        # one sequence is never cut into slices: no work to count
        work = (forward_work(self.network_, len(X3), X3.shape[1], self._output == "sequence")
                if len(X3) > 1 else 0)
        whole = self.network_.splits_batches_itself(len(X3), lengths)
        limit = _thread_limit(self.n_jobs, len(X3), self.network_, work=work,
                              min_work=math.inf if whole else MIN_SLICED_PREDICT_WORK)
        with limit as parts:
            out = self._forward_checked(X3, lengths, parts, limit.threads)
        return self._as_output(out, X), lengths

    def _as_output(self, out, X):
        """out (the network's dtype) in the wider of the computation's float type
        and X's: a float64 X computed in float32 gets float64 predictions, as
        scikit-learn's estimators give for float64 input; a float32 X gets float32."""
        dtype = self.network_.dtype
        x_dtype = getattr(X, "dtype", None)
        if x_dtype is not None and x_dtype == dtype:  # the common case, kept cheap: the
            return out                                # rule costs a sine predict 1.5 of 14 us
        return out.astype(np.result_type(dtype, resolve_dtype(X, None)), copy=False)

    def _forward_checked(self, X3, lengths=None, parts=1, n_threads=None):
        """Head outputs for checked X3 (N, T, D): (N, K), or per step (N, T, K),
        or with lengths (S, K), the real steps of every sequence in turn.

        In batches of samples and, for sequences too long for the memory
        budget, in windows of steps with the state carried across: scratch
        memory stays near _PREDICT_CHUNK_BYTES whatever N and T are (padded
        batches, lengths given, are not windowed).
        parts: slices each batch is cut into, run side by side (_parallel.py);
        n_threads: as in the network's forward."""
        net = self.network_
        runner = (net.borrow_runner(parts, lambda: DataParallel(net, parts, training=False))
                  if parts > 1 else net)
        N, T, D = X3.shape
        sequence = self._output == "sequence"
        # scratch per sample and step: the input, and per layer c, h (where LSTM layers
        # keep their gates and tanh_c for one step only), else gates (4H) + c, tanh_c, h
        per_layer = 2 if net.keeps_one_step(N, lengths) else 7
        per_step = (D + per_layer * sum(net.hidden_sizes)) * net.dtype.itemsize
        if net.bidirectional:
            per_step *= 3  # two directions and their concatenated output
        by_length = None
        if lengths is None:
            batch = min(max(_PREDICT_CHUNK_BYTES // (T * per_step), 1), N)
            # a bidirectional pass needs each whole sequence: no windows of steps
            window = T if net.bidirectional else min(
                max(_PREDICT_CHUNK_BYTES // (batch * per_step), 1), T)
            scratch = batch * window * per_step
        else:
            # sequences of several lengths: batches of similar lengths (shortest
            # first), each run to its own longest, not to the data's, and each as
            # many sequences as the budget holds at that longest
            by_length = np.argsort(lengths, kind="stable")
            bounds = _batches_by_length(lengths[by_length], _PREDICT_CHUNK_BYTES // per_step)
            window = T                                         # padded batches: no windows
            scratch = max((stop - start) * int(lengths[by_length[stop - 1]])
                          for start, stop in bounds) * per_step
        # private to this call: predict is thread-safe
        arena = net.borrow_arena(scratch if runner is net else 0)
        outs = []
        try:
            if N == 1 and window == T:
                # one sequence in one piece: the loops below without their ~1-3 us;
                # per-step outputs (T*1, K) are already in its (1, T, K) row order
                if lengths is None:
                    x1 = np.ascontiguousarray(X3.transpose(1, 0, 2))  # (T, 1, D)
                else:                                   # its own steps: (T_0, K) outputs
                    T = int(lengths[0])
                    x1 = X3.time_major([0], T)
                out = runner.forward(x1, sequence, arena=arena, lengths=lengths,
                                     n_threads=n_threads, keep=False)[0]
                return out.reshape(1, T, -1) if sequence and lengths is None else out
            if by_length is None:
                bounds = [(start, min(start + batch, N)) for start in range(0, N, batch)]
            for start, stop in bounds:
                if by_length is None:
                    # (T, B, D), a view: DataParallel copies each slice's rows on its
                    # thread, the network's LSTM layers read it where it lies (the
                    # others copy it)
                    xb, lb, T_b = X3[start:stop].transpose(1, 0, 2), None, T
                else:
                    rows = by_length[start:stop]
                    lb = lengths[rows]
                    T_b = int(lb[-1])                                  # the longest
                    xb = X3.time_major(rows, T_b)                      # (T_b, B, D)
                B = xb.shape[1]
                state, steps = None, []
                for t0 in range(0, T_b, window):
                    out, tape = runner.forward(xb[t0:t0 + window], sequence, training=False,
                                               arena=arena, initial_state=state, lengths=lb,
                                               n_threads=n_threads, keep=False)
                    if t0 + window < T_b:
                        state = tape.final_state()
                    if sequence:  # (W*B, K) time-major -> (B, W, K), a view
                        steps.append(out.reshape(-1, B, out.shape[1]).transpose(1, 0, 2))
                if sequence:  # one sequence's view is in row order already: no copy
                    out = (np.ascontiguousarray(steps[0]) if len(steps) == 1
                           else np.concatenate(steps, axis=1))
                outs.append(out)
        finally:
            net.return_arena(arena)
            if runner is not net:
                net.return_runner(runner)
        if by_length is not None:   # back in the samples' order
            K = outs[0].shape[-1]
            if not sequence:
                result = np.empty((N, K), dtype=outs[0].dtype)
                for (start, stop), out in zip(bounds, outs):
                    result[by_length[start:stop]] = out               # (B, K)
                return result
            # the real steps of every sequence in turn (S, K), never padded to the
            # longest: sequence n's are rows starts[n]:starts[n] + lengths[n]
            ends = np.cumsum(lengths)
            starts = ends - lengths
            result = np.empty((int(ends[-1]), K), dtype=outs[0].dtype)
            for (start, stop), out in zip(bounds, outs):               # out (B, T_b, K)
                rows = by_length[start:stop]
                t = np.arange(out.shape[1])[None, :]                   # (1, T_b)
                real = t < lengths[rows][:, None]                      # (B, T_b)
                result[(starts[rows][:, None] + t)[real]] = out[real]
            return result
        # each part is a new array (the head's output, or a concatenation of it),
        # never scratch memory, so one part is returned as it is
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    # ---- model files (no pickle) ---------------------------------------------

    def save(self, path):
        """Save the fitted model in a file that executes no code when loaded.

        Parameters
        ----------
        path : str, path-like or binary file object
            Where to write. The file is a NumPy ``.npz`` archive (the name is used
            as given) holding the parameters as arrays and everything else as JSON;
            a path is written atomically (temporary file, then rename).

        See Also
        --------
        fastlstm.load : read the file back; ``predict`` then gives bit-identical
            results. The solver state is not saved: training a loaded model
            (warm_start, partial_fit) continues from a fresh solver state.
        """
        check_is_fitted(self, "network_")
        if not np.isfinite(self.network_.params).all():   # load would refuse the file
            raise ValueError("the model's parameters hold NaN or inf (written through "
                             "weights_?): nothing was saved")
        params = self.get_params(deep=False)
        fitted = {name: value for name, value in vars(self).items()
                  if name not in params and name != "network_"
                  and (name.endswith("_") or name in _SAVED_PRIVATE)}
        _persist.write(path, type(self).__name__, params, fitted,
                       self.network_.__getstate__()["args"], self.network_.params)

    @classmethod
    def load(cls, path):
        """Load a model written by ``save``; it must hold this class of estimator.

        Parameters
        ----------
        path : str, path-like or binary file object

        Returns
        -------
        estimator : fitted instance of this class

        Raises
        ------
        ValueError
            If the file is not a fastlstm model file, is damaged, was written by a
            newer format version, or holds another estimator class.
        """
        est = load(path)
        if not isinstance(est, cls):
            raise ValueError(f"{path!r} holds a {type(est).__name__}, not a {cls.__name__}")
        return est

    @property
    def weights_(self):
        """{torch name: array} views of the fitted parameters; assigning to a
        name copies into its view (see _Weights)."""
        check_is_fitted(self, "network_")
        return _Weights(self.network_.p)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags


    # ---- stepping: run on from a carried state --------------------------------

    def step(self, X, state=None):
        """Run sequences on from a state, one step or a chunk at a time.

        Feeding a sequence in chunks, each call passing on the state the last
        one returned, gives the same outputs as feeding it whole: the state
        carries everything the network remembers. The chunks run in the same
        compiled kernels as `predict`; dropout is off.

        Parameters
        ----------
        X : array-like of shape (n_sequences, n_steps, n_features)
            The next `n_steps` inputs of each sequence, any n_steps >= 1. A 2-D
            X is (n_sequences, n_steps) of a model with one feature per step, or,
            of a model fitted with step_features, flattened steps as predict reads.
        state : list of (h, c) or None, default=None
            The state returned by the previous call, one (h, c) pair per LSTM
            layer, each of shape (n_sequences, hidden units of that layer); a
            GRU or RNN layer has no cell state, and its c is zeros.
            None starts every sequence from zeros, as `fit` and `predict` do.

        Returns
        -------
        outputs : ndarray
            The prediction after every step: LSTMRegressor gives values of
            shape (n_sequences, n_steps) or (n_sequences, n_steps, n_outputs),
            as y was at fit; LSTMClassifier gives class probabilities
            (n_sequences, n_steps, n_classes). For a model fitted with
            output="last", ``outputs[:, -1]`` of a whole sequence from
            state=None is what `predict` (`predict_proba`) gives.
        state : list of (h, c)
            The state after the last step, to pass to the next call.
        """
        X3 = _stepping.check_step_input(self, X)
        state = _stepping.check_state(self.network_, state, X3.shape[0])
        limit = _thread_limit(self.n_jobs, len(X3), self.network_)
        with limit:
            raw, state = _stepping.run(self.network_, X3, state, n_threads=limit.threads)
        return self._step_outputs(self._as_output(raw, X)), state

_PARAMETERS_DOC = """
    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Hidden units of each stacked LSTM layer: (300, 300) is two layers of 300.
    cell : {"lstm", "gru", "rnn"}, default="lstm"
        The recurrent layer: LSTM, GRU (torch's equations, gates r, z, n) or a
        plain RNN, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh). The
        parameters keep torch's names and shapes (4H, 3H or H gate rows), so
        torch.nn.LSTM / GRU / RNN reproduce the outputs from ``weights_``. GRU and
        RNN layers have no cell state: the c of their (h, c) state stays zero.
    nonlinearity : {"tanh", "sigmoid"}, default="tanh"
        The plain RNN's activation (ignored by the other cells).
    bidirectional : bool, default=False
        Each layer also runs over every sequence reversed (from its own last
        real step back to the first) and outputs both directions' states side by
        side (2H features for the next layer and the head). Many-to-one heads
        see each direction's last step: the forward state after the last real
        step and the reverse state at step 0. The reverse parameters carry
        torch's ``_reverse`` suffix. Not with tbptt_steps, step, forecast or
        generate (they carry a state forward in time).
    output : {"last", "sequence"}, default="last"
        "last": many-to-one, the last step's state feeds the head. "sequence":
        one prediction per time step.
    dropout : float in [0, 1), default=0.0
        Dropout rate on each LSTM layer's output (before the next layer and
        before the head) while training; off at predict.
    solver : {"adam", "sgd"}, default="adam"
        Adam, or SGD with momentum.
    learning_rate_init : float, default=1e-3
        Step size of the solver.
    batch_size : int or "auto", default="auto"
        Samples per minibatch; "auto" is min(200, n_samples), as in MLP.
    max_iter : int, default=200
        Epochs at most.
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    alpha : float, default=1e-4
        L2 penalty on the weight matrices (not the biases), scaled as in MLP:
        0.5 * alpha * ||W||^2 over the (weighted) number of samples in the batch.
    momentum : float, default=0.9
        SGD momentum.
    nesterovs_momentum : bool, default=True
        Nesterov's momentum for SGD.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's moment decay rates and its denominator guard.
    clip_grad_norm : float or None, default=None
        Scale the gradient to at most this L2 norm before each update, the norm
        over all the parameters (torch's clip_grad_norm_, Keras's
        global_clipnorm).
    clip_grad_value : float or None, default=None
        Clip each component of the gradient to [-clip_grad_value,
        clip_grad_value] before each update (torch's clip_grad_value_, Keras's
        clipvalue); with clip_grad_norm too, before the norm is taken.
    tbptt_steps : int or None, default=None
        Truncated backpropagation through time. None: backprop through all
        n_timesteps. An int k: each batch's sequences are processed in windows of
        k steps; the state (h, c) is carried from one window into the next,
        gradients stop at each window's start, and each window with a loss gets
        its own update (output="sequence": every window; output="last": only the
        last window, the earlier ones just carry the state). Training memory then
        grows with k, not with n_timesteps. k >= n_timesteps is the same as None.
    tol : float, default=1e-4
        Improvement of the training loss (or validation score with
        early_stopping) that counts as progress.
    n_iter_no_change : int, default=10
        Stop after this many epochs in a row without progress (counted afresh
        by every fit, a warm one too).
    early_stopping : bool, default=False
        Hold out validation_fraction of the training data, drawn at random as
        MLP's (stratified by class for a many-to-one classifier, where every
        class can be), whatever shuffle says; score it after every epoch (R^2 or
        accuracy), stop when it stops improving and keep the weights of the
        best epoch. fit only: partial_fit refuses it, as MLP's does. For time
        series, whose overlapping windows a random split leaks, hold out the
        last windows yourself instead (see README, "Coming from Keras").
    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping.
    warm_start : bool, default=False
        fit continues from the fitted weights and solver state instead of
        starting anew. The network's shape (hidden_layer_sizes, cell,
        nonlinearity, bidirectional), output, step_features and dtype must stay
        as fitted (predict, step and forecast read output and step_features as
        fitted, whatever set_params says later); dropout, the solver settings
        and early_stopping may change (another solver starts its state afresh).
    step_features : int or None, default=None
        Read a 2-D X as flattened steps, (n_samples, n_timesteps * step_features),
        each row [x_0 features, x_1 features, ...], so scalers and tools that
        only move 2-D arrays can sit in front. None: a 2-D X is (n_samples,
        n_timesteps) of one feature each.
    dtype : "float32", "float64" or None, default="float32"
        Float type of the computation. float32, as torch and Keras train in,
        runs 2-2.5x faster than float64 (README); "float64" on request, for
        full precision. None follows X: float64 for a float64 X, float32 for
        anything else (ints, lists). Predictions come in the wider of this
        type and X's: float64 for a float64 X. Regression targets are held in
        this type too: scale a y far from zero against its spread first.
    n_jobs : int or None, default=None
        Threads for fit and predict (-1: all the cores this process may run on);
        None takes the BLAS thread limit in force (OpenBLAS's default, or a
        threadpoolctl limit).
        With several threads, a network big enough to gain cuts each batch
        into one slice per thread (8 samples at least), run side by side on
        single-threaded kernels; small networks run on one thread.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, the shuffling, dropout and the validation
        split: the same seed (and thread count) gives the same weights.
    verbose : int, default=0
        > 0: a progress bar on stderr for every epoch with the loss, the
        validation score and samples/s. 0: silent.
"""

_ATTRIBUTES_DOC = """
    loss_ : float
        Mean training loss of the last epoch (loss_curve_[-1]), as MLP's;
        absent while no epoch has completed (a first epoch that diverged).
    loss_curve_ : list of float
        Mean training loss of each epoch.
    best_loss_ : float
        Lowest epoch loss.
    validation_scores_ : list of float
        Validation score of each epoch (with early_stopping): of the last
        len(validation_scores_) epochs, since a fit without it drops them.
    best_validation_score_ : float
        Best validation score (with early_stopping).
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        X.shape[1] for 2-D X (time steps, or time steps x step_features);
        features per time step for 3-D X.
    feature_names_in_ : ndarray of str
        The columns of a DataFrame X (2-D: time steps, or flattened steps);
        set only when X had string column names. predict checks them.
    n_timesteps_in_ : int or None
        Time steps of each sequence; None for a model fitted on a list of
        sequences of several lengths, which takes any length.
    weights_ : mapping of str to ndarray
        The parameters under torch's names (weight_ih_l0, weight_hh_l0,
        bias_ih_l0, bias_hh_l0, ..., head.weight, head.bias), as views of the
        network's weights; ``weights_[name] = array`` copies into the view
        (same shape), e.g. to load weights from a torch model.
    network_ : the fitted network.
"""


class LSTMRegressor(RegressorMixin, _BaseLSTM):
    __doc__ = """LSTM network regressor: a stack of LSTM layers and a linear head
    trained on half the mean squared error.

    y is (n_samples,) or (n_samples, n_outputs); with output="sequence",
    (n_samples, n_timesteps) or (n_samples, n_timesteps, n_outputs).
""" + _PARAMETERS_DOC + """
    Attributes
    ----------
    n_outputs_ : int
        Targets per sample (or per step).""" + _ATTRIBUTES_DOC + """
    Examples
    --------
    >>> import numpy as np
    >>> from fastlstm import LSTMRegressor
    >>> X = np.random.default_rng(0).normal(size=(64, 10, 1)).astype(np.float32)
    >>> y = X[:, -1, 0]
    >>> model = LSTMRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    >>> model.predict(X).shape
    (64,)
    >>> model.n_iter_
    5
    """

    def _encode_targets(self, y, X3, reset, classes=None, lengths=None):
        N, T = X3.shape[:2]
        if y is None:
            raise ValueError("requires y to be passed, but the target y is None")
        if lengths is not None and self._output == "sequence":
            y = _pad_targets(y, lengths, T, fill=0.0)
        y = check_targets(y, X3.dtype)
        if y.shape[0] != N:
            raise ValueError(f"X and y have different numbers of samples: {N} and {y.shape[0]}")
        if self._output == "sequence":
            if y.ndim not in (2, 3) or y.shape[1] != T:
                raise ValueError(
                    f"with output='sequence', y must be (n_samples, n_timesteps) or "
                    f"(n_samples, n_timesteps, n_outputs) with n_timesteps={T}, got shape {y.shape}")
            y_ndim, y = y.ndim, y.reshape(N, T, -1)
        else:
            if y.ndim not in (1, 2):
                raise ValueError(
                    f"y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got shape {y.shape}"
                    "; for several steps ahead of each window, flatten y to (n_samples, "
                    "horizon * n_outputs); for one target per input step use output='sequence'")
            y_ndim, y = y.ndim, y.reshape(N, -1)
        if reset:
            self._y_ndim, self.n_outputs_ = y_ndim, y.shape[-1]
        elif y.shape[-1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[-1]} outputs, but the model was fitted with "
                             f"{self.n_outputs_}")
        elif y_ndim != self._y_ndim:  # predictions take the fitted y's shape
            raise ValueError(f"y is {y_ndim}-D, but the model was fitted on {self._y_ndim}-D y")
        return y.astype(X3.dtype), self.n_outputs_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _loss(self, out, targets, weight, dout):
        return _ops.squared_error(out, targets.reshape(out.shape), weight, dout)

    def _validation_score(self, X3, targets, weights, lengths, parts=1):
        pred = self._forward_checked(X3, lengths, parts)          # (N[, T], K), or (S, K)
        if lengths is not None and self._output == "sequence":     # the real steps only
            real = np.arange(targets.shape[1])[None, :] < lengths[:, None]
            return float(r2_score(targets[real], pred.reshape(targets[real].shape),
                                  sample_weight=np.broadcast_to(weights[:, None], real.shape)[real]))
        return float(r2_score(targets.reshape(len(targets), -1), pred.reshape(len(pred), -1),
                              sample_weight=weights))

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights and solver
        state (starting anew on the first call); returns self. Refuses
        early_stopping=True, as MLPRegressor does."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X):
        """Predicted values: (n_samples,) or (n_samples, n_outputs) as y was at fit;
        with output="sequence", (n_samples, n_timesteps[, n_outputs])."""
        out, lengths = self._forward(X)
        if self._y_ndim == (2 if self._output == "sequence" else 1):
            out = out[..., 0]
        return _unpad(out, lengths) if self._output == "sequence" else out

    def score(self, X, y, sample_weight=None):
        """R^2 of predict(X) against y (uniform average over outputs and steps)."""
        pred = self.predict(X)
        if isinstance(pred, list):  # sequences of several lengths: score every real step
            y, pred, sample_weight = _every_step(y, pred, sample_weight)
        y = np.asarray(y)
        return float(r2_score(y.reshape(len(y), -1), pred.reshape(len(pred), -1),
                              sample_weight=sample_weight))


    def _step_outputs(self, raw):
        """(N, T, K) head outputs -> predictions, K dropped if y had no output axis."""
        return raw[..., 0] if self._y_ndim == (2 if self._output == "sequence" else 1) else raw

    def forecast(self, X, n_steps):
        """Forecast n_steps ahead autoregressively from a history.

        The model predicts the next value from the history, that prediction is
        fed back as the next input, and so on. A many-to-one model fitted on
        windows of one length (output="last", e.g. a next-value model trained
        on `fastlstm.datasets.make_windows`) slides a window of that length:
        each prediction runs the last n_timesteps_in_ values, as in training.
        A model with output="sequence" (or fitted on sequences of several
        lengths) carries its state instead: the history runs once, then each
        new value is one T=1 run of the compiled kernels. The model must
        predict as many values as it takes per step.

        Parameters
        ----------
        X : array-like of shape (n_sequences, n_timesteps, n_features)
            The history of each sequence: any length for a model that carries
            its state, at least n_timesteps_in_ steps (the last ones are used)
            for one that slides a window; a 2-D X is (n_sequences,
            n_timesteps) of a univariate series, or flattened steps of a model
            fitted with step_features, as predict reads them.
        n_steps : int
            How many steps to forecast.

        Returns
        -------
        ndarray of shape (n_sequences, n_steps), or (n_sequences, n_steps,
        n_features) if the model was fitted on y with an output axis.
        """
        X3 = _stepping.check_step_input(self, X)
        limit = _thread_limit(self.n_jobs, len(X3), self.network_)
        with limit:
            preds = _stepping.forecast(self, X3, n_steps, limit.threads)  # (n_steps, N, K)
        preds = np.ascontiguousarray(preds.transpose(1, 0, 2))           # (N, n_steps, K)
        return self._step_outputs(self._as_output(preds, X))

class LSTMClassifier(ClassifierMixin, _BaseLSTM):
    __doc__ = """LSTM network classifier: a stack of LSTM layers and a softmax head
    trained on cross-entropy. Labels may be of any type (ints, strings).

    y is (n_samples,) of labels; with output="sequence", (n_samples,
    n_timesteps), one label per step.
""" + _PARAMETERS_DOC + """    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the loss, multiplying sample_weight; a label
        the dict lacks weighs 1, a key that is no label is ignored, but both at
        once is refused as a mistyped key (as in scikit-learn). "balanced"
        weighs by n_samples / (n_classes * class count), samples counted by
        their sample_weight (as LogisticRegression does). With
        output="sequence" each step weighs its own label's weight ("balanced"
        counts steps), as torch's CrossEntropyLoss(weight=...) does.

    Attributes
    ----------
    classes_ : ndarray
        The class labels.""" + _ATTRIBUTES_DOC + """
    Examples
    --------
    >>> import numpy as np
    >>> from fastlstm import LSTMClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(64, 5, 2)).astype(np.float32)
    >>> y = np.where(X[:, :, 0].sum(axis=1) > 0, "up", "down")
    >>> model = LSTMClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    >>> model.classes_.tolist()
    ['down', 'up']
    >>> model.predict_proba(X).shape
    (64, 2)
    """

    def __init__(self, hidden_layer_sizes=(100,), *, cell="lstm", nonlinearity="tanh",
                 bidirectional=False, output="last", dropout=0.0,
                 solver="adam", learning_rate_init=1e-3, batch_size="auto", max_iter=200,
                 shuffle=True, alpha=1e-4, momentum=0.9, nesterovs_momentum=True,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, clip_grad_norm=None,
                 clip_grad_value=None, tbptt_steps=None, tol=1e-4,
                 n_iter_no_change=10, early_stopping=False, validation_fraction=0.1,
                 warm_start=False, step_features=None, dtype="float32", n_jobs=None,
                 random_state=None, verbose=0, class_weight=None):
        super().__init__(
            hidden_layer_sizes, cell=cell, nonlinearity=nonlinearity,
            bidirectional=bidirectional, output=output,
            dropout=dropout, solver=solver,
            learning_rate_init=learning_rate_init, batch_size=batch_size, max_iter=max_iter,
            shuffle=shuffle, alpha=alpha, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, clip_grad_norm=clip_grad_norm, clip_grad_value=clip_grad_value,
            tbptt_steps=tbptt_steps, tol=tol,
            n_iter_no_change=n_iter_no_change, early_stopping=early_stopping,
            validation_fraction=validation_fraction, warm_start=warm_start,
            step_features=step_features, dtype=dtype, n_jobs=n_jobs,
            random_state=random_state, verbose=verbose)
        self.class_weight = class_weight

    def _encode_targets(self, y, X3, reset, classes=None, lengths=None):
        if y is None:
            raise ValueError("requires y to be passed, but the target y is None")
        N, T = X3.shape[:2]
        if lengths is not None and self._output == "sequence":
            # pad with a label of the sequence itself: the padded steps weigh 0
            y = _pad_targets(y, lengths, T, fill=None)
        y = check_labels(y)
        if self._output == "sequence":
            if y.ndim != 2 or y.shape[1] != T:
                raise ValueError(f"with output='sequence', y must be (n_samples, n_timesteps) "
                                 f"with n_timesteps={T}, got shape {y.shape}" + (
                                     _one_hot_hint(y) or ("; for y of one label per step in a "
                                                          "last axis of 1, pass y[..., 0]"
                                                          if y.ndim == 3 and y.shape[2] == 1
                                                          else "")))
        else:
            if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
                raise ValueError(f"y must be 1-D (n_samples,) of labels, got shape {y.shape}"
                                 + (_one_hot_hint(y) or _several_labels_hint(y, T)))
            if y.ndim != 1:   # (N, 1): raveled with column_or_1d's DataConversionWarning
                y = column_or_1d(y, warn=True)
        if y.shape[0] != N:
            raise ValueError(f"X and y have different numbers of samples: {N} and {y.shape[0]}")
        if y.dtype.kind == "O" and any(v is None for v in y.ravel()):
            raise ValueError("y contains None")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        # integers and booleans are labels whatever their values (type_of_target's
        # checks cost a small partial_fit about as much as its training did)
        if y.dtype.kind not in "iub":
            check_classification_targets(y)
        if reset:
            labels = np.unique(y) if classes is None else np.unique(np.asarray(classes))
            if classes is not None and not np.isin(y, labels).all():
                raise ValueError("y has labels that are not in classes: "
                                 f"{sorted(set(np.unique(y).tolist()) - set(labels.tolist()))!r}")
            if len(labels) < 2:
                raise ValueError(f"y has only one class ({labels[0].item()!r}): need at least "
                                 "two (a first partial_fit takes them all as classes=[...])")
            self.classes_ = labels
        else:
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"classes={classes!r} differs from the classes of the first "
                                 f"partial_fit, {self.classes_!r}")
            unseen = ~np.isin(y, self.classes_)
            if unseen.any():
                raise ValueError(f"y has labels not seen in the first fit: "
                                 f"{np.unique(y[unseen]).tolist()!r}")
        codes = np.searchsorted(self.classes_, y)
        return codes.astype(np.int64), len(self.classes_)

    def _weigh_classes(self, weights, targets, lengths):
        if self.class_weight is None:
            return weights
        sequence = self._output == "sequence"
        if sequence:  # each real step weighs its own label's weight
            real = (np.ones(targets.shape, bool) if lengths is None
                    else np.arange(targets.shape[1])[None, :] < lengths[:, None])
            codes = targets[real]
            code_weights = np.broadcast_to(weights[:, None], targets.shape)[real]
        else:
            codes, code_weights = targets, weights
        if isinstance(self.class_weight, dict):
            # scikit-learn's rule: a label the dict lacks weighs 1 and a key that is no
            # label is ignored (a fold may lack a rare class), unless both happen
            # (a mistyped key)
            per_class = compute_class_weight(self.class_weight, classes=self.classes_,
                                             y=self.classes_)
        else:
            # "balanced": n / (n_classes * count) over the classes present, n and the
            # counts in sample weight (as LogisticRegression's): a zero weight ignores
            # a sample and an integer one repeats it, here too
            counts = np.bincount(codes, weights=code_weights, minlength=len(self.classes_))
            present = counts > 0
            per_class = np.zeros(len(counts))
            per_class[present] = counts.sum() / (present.sum() * counts[present])
        if sequence:                                              # (N, T)
            per_step = np.zeros(targets.shape)
            per_step[real] = per_class[codes]
            return weights[:, None] * per_step
        return weights * per_class[codes]                         # (N,)

    def _loss(self, out, targets, weight, dout):
        return _ops.softmax_cross_entropy(out, targets.reshape(-1), weight, dout)

    def _validation_score(self, X3, targets, weights, lengths, parts=1):
        pred = np.argmax(self._forward_checked(X3, lengths, parts), axis=-1)  # (N[, T]), (S,)
        if lengths is not None and self._output == "sequence":     # the real steps only
            real = np.arange(targets.shape[1])[None, :] < lengths[:, None]
            return float(accuracy_score(targets[real], pred, sample_weight=np.broadcast_to(
                weights if weights.ndim == 2 else weights[:, None], real.shape)[real]))
        return _accuracy(targets, pred, weights)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y), continuing from the current weights and solver
        state; returns self. The first call needs `classes`, all the labels that
        will ever be seen (as in MLPClassifier), unless y already has them all.
        Refuses class_weight="balanced" (as SGDClassifier does) and
        early_stopping=True (as MLPClassifier does)."""
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' weighs by the class counts of all the "
                             "data, which partial_fit does not see; pass a dict of weights "
                             "(as scikit-learn's SGDClassifier asks)")
        first = not hasattr(self, "network_")
        return self._fit(X, y, sample_weight, incremental=True,
                         classes=classes if first or classes is not None else None)

    def _proba(self, X):
        """(class probabilities (N[, T], n_classes), lengths or None)."""
        logits, lengths = self._forward(X)
        return self._step_outputs(logits), lengths

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), in the order of classes_;
        with output="sequence", (n_samples, n_timesteps, n_classes)."""
        proba, lengths = self._proba(X)
        return _unpad(proba, lengths) if self._output == "sequence" else proba

    def predict_log_proba(self, X):
        """Log of predict_proba (as MLPClassifier gives it)."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):   # a probability rounded to 0: -inf, as MLP
            return [np.log(p) for p in proba] if isinstance(proba, list) else np.log(proba)

    def predict(self, X):
        """Most probable class of each sample (or of each step): the argmax of
        predict_proba (of the probabilities, not the logits, so that the two agree
        even where rounding makes two classes' probabilities equal)."""
        proba, lengths = self._proba(X)
        labels = self.classes_[proba.argmax(axis=-1)]
        return _unpad(labels, lengths) if self._output == "sequence" else labels

    def score(self, X, y, sample_weight=None):
        """Accuracy of predict(X) (per step, with output="sequence")."""
        pred = self.predict(X)
        if isinstance(pred, list):  # sequences of several lengths: score every real step
            y, pred, sample_weight = _every_step(y, pred, sample_weight)
        return _accuracy(np.asarray(y), pred, sample_weight)


    def _step_outputs(self, raw):
        """(..., C) logits -> class probabilities; a large softmax on the threads
        n_jobs (or the BLAS limit in force) gives."""
        flat = raw.reshape(-1, raw.shape[-1])
        proba = np.empty_like(flat)
        threads = 1
        # softmax's own bound, checked here first: reading the BLAS limit costs
        # microseconds, which a single step of generate or predict would pay
        if flat.size >= _ops.SPLIT_SOFTMAX_FROM:
            threads = _n_threads(self.n_jobs) or _threads.recurrent_threads()
        _ops.softmax(flat, proba, threads)
        return proba.reshape(raw.shape)

    def generate(self, seed, n_chars, *, vocabulary, temperature=1.0, random_state=None):
        """Sample text from a classifier trained on next-character prediction.

        The seed is run through the network once; then each sampled character
        is fed back as the next input (its one-hot row in `vocabulary`) with
        the (h, c) state carried from step to step, one T=1 run of the
        compiled kernels per character. The result equals sampling from
        ``step`` run over seed + generated text as one sequence.

        Parameters
        ----------
        seed : str
            Text to start from (at least one character, all in `vocabulary`).
        n_chars : int
            Characters to generate.
        vocabulary : fastlstm.datasets.CharVocabulary
            The vocabulary the training windows were encoded with (one-hot rows
            of len(vocabulary) features, or integer codes as 1 feature: the raw
            codes 0 ... V-1, not scaled); the labels may be its characters or
            their integer codes.
        temperature : float >= 0, default=1.0
            Divides the logits before the softmax: below 1 the text is more
            conservative, above 1 more surprising; 0 always takes the most
            probable character.
        random_state : int, RandomState or None, default=None
            Seeds the sampling: the same value gives the same text.

        Returns
        -------
        str of n_chars characters, the continuation (without the seed).
        """
        check_is_fitted(self, "network_")
        limit = _thread_limit(self.n_jobs, 1, self.network_)
        with limit:
            return _stepping.generate(self, seed, n_chars, vocabulary, temperature,
                                      random_state, limit.threads)

def _every_step(y_list, pred_list, sample_weight):
    """Per-step targets and predictions of sequences of several lengths as flat
    arrays of all their steps, each sample's weight repeated over its steps."""
    counts = [len(p) for p in pred_list]
    if sample_weight is not None:
        sample_weight = np.repeat(np.asarray(sample_weight, dtype=float), counts)
    return (np.concatenate([np.asarray(v) for v in y_list]), np.concatenate(pred_list),
            sample_weight)


def _accuracy(y_true, y_pred, sample_weight=None):
    """Accuracy over samples, or over every step of every sample for (N, T) labels."""
    if y_true.ndim == 2:
        T = y_true.shape[1]
        if sample_weight is not None:   # one per sample, or one per step already
            sample_weight = np.asarray(sample_weight, dtype=float)
            sample_weight = (sample_weight.ravel() if sample_weight.ndim == 2
                             else np.repeat(sample_weight, T))
        y_true, y_pred = y_true.ravel(), y_pred.ravel()
    return float(accuracy_score(y_true, y_pred, sample_weight=sample_weight))


def _several_labels_hint(y, T):
    """What to say of a y (N, k) of several labels per sample, not one-hot."""
    if y.ndim == 2 and y.shape[1] == T:
        return "; for one label per time step use output='sequence'"
    return ("; several labels per sample (multilabel or multi-output classification) are "
            "not supported (sklearn.multioutput.MultiOutputClassifier fits one per column)")


# what a model fitted on sequences of one length says when given another
_ANY_LENGTH_HINT = (" (a model takes sequences of any length when fitted on a list of "
                    "sequences of several lengths; a list of one length is read as an array)")


def _one_hot_hint(y):
    """What to say of a y of labels whose last axis looks one-hot (Keras's
    to_categorical), else ""."""
    if y.ndim >= 2 and y.dtype.kind in "biuf" and y.size and np.isin(y, (0, 1)).all() and (
            y.sum(axis=-1) == 1).all():
        return ("; it looks one-hot (as to_categorical gives): pass the labels, "
                "y.argmax(axis=-1)")
    return ""


def _batches_by_length(sorted_lengths, max_steps, min_rows=64, max_rows=8192):
    """sorted_lengths (N,) non-decreasing -> [(start, stop), ...]: consecutive
    batches for predict, each run to its longest. A batch takes sequences while
    its padded steps (count x its longest) stay within max_steps and, past
    min_rows of them (a thick enough gemm), within 5/4 of its real steps: one
    long sequence among short ones runs alone, not with them padded to it."""
    bounds, start, N = [], 0, len(sorted_lengths)
    while start < N:
        stop = min(N, start + max_rows, start + max(max_steps // int(sorted_lengths[start]), 1))
        lengths = sorted_lengths[start:stop]                           # (k,) candidates
        counts = np.arange(1, len(lengths) + 1)
        padded = counts * lengths
        little_padding = 4 * padded <= 5 * np.cumsum(lengths)
        fits = (padded <= max_steps) & ((counts <= min_rows) | little_padding)
        taken = len(fits) if fits.all() else max(int(np.argmin(fits)), 1)  # to the first misfit
        bounds.append((start, start + taken))
        start += taken
    return bounds


def _pad_targets(y, lengths, T, fill):
    """A list of per-step targets (T_i[, K]) -> (N, T[, K]) padded at the end with
    `fill` (None: the sequence's own first target, so labels stay valid)."""
    y = object_vector_as_list(y)
    if not isinstance(y, (list, tuple)) or len(y) != len(lengths):
        raise ValueError("with sequences of several lengths and output='sequence', y must be a "
                         f"list of {len(lengths)} per-step target arrays")
    rows = []
    for n, (target, length) in enumerate(zip(y, lengths)):
        target = np.asarray(target)
        if target.ndim == 0 or len(target) != length:
            raise ValueError(f"y[{n}] has {len(target) if target.ndim else 'no'} steps, but "
                             f"X[{n}] has {length}")
        pad = np.repeat(target[:1] if fill is None else np.full_like(target[:1], fill),
                        T - length, axis=0)
        rows.append(np.concatenate([target, pad]))
    return np.stack(rows)


def _unpad(per_step, lengths):
    """Per-step outputs of a list of sequences, (S, ...) the real steps of each in
    turn -> a list of (T_i, ...) arrays (views); without lengths, unchanged."""
    if lengths is None:
        return per_step
    return np.split(per_step, np.cumsum(lengths)[:-1])


# The private attributes save writes and load takes back (the others, the solver
# state and the random generator, are rebuilt: a file holding one is not a model's own).
_SAVED_PRIVATE = {"_x_ndim", "_y_ndim", "_output", "_step_features", "_no_improvement"}
# Fitted attribute names a model file may set: public ones end in "_", private ones
# start with one "_"; neither may shadow anything the class defines (methods).
_ATTRIBUTE_NAME = re.compile(r"^(_[A-Za-z][A-Za-z0-9_]*|[A-Za-z][A-Za-z0-9_]*_)$")


def load(path):
    """Load an estimator written by ``save``, executing no code from the file.

    Parameters
    ----------
    path : str, path-like or binary file object

    Returns
    -------
    estimator : fitted LSTMRegressor or LSTMClassifier
        Its predictions are bit-identical to those of the saved estimator.

    Raises
    ------
    ValueError
        If the file is not a fastlstm model file, is damaged (failed checksum,
        missing or inconsistent entries), or was written by a newer format version.
    """
    meta, flat, arrays = _persist.read(path)
    classes = {c.__name__: c for c in (LSTMRegressor, LSTMClassifier)}
    cls = classes.get(meta["class"])
    if cls is None:
        raise ValueError(f"{path!r} holds an unknown estimator class {meta['class']!r}")

    def damaged(why):
        return ValueError(f"{path!r} is a damaged fastlstm model file: {why}")

    params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
    unknown = set(params) - set(cls._get_param_names())
    if unknown:
        raise damaged(f"unknown parameters {sorted(unknown)}")
    est = cls(**params)
    try:
        check_params(est)
        # files from before the GRU and RNN cells hold 5 entries (an LSTM)
        n_features, hidden_sizes, n_outputs, dtype, dropout, *cell = meta["network"]
        net = LSTMNetwork(n_features, hidden_sizes, n_outputs, dtype=np.dtype(dtype),
                          dropout=dropout,
                          **dict(zip(("cell", "nonlinearity", "bidirectional"), cell)))
    except (TypeError, ValueError) as err:
        raise damaged(err) from None
    if net.params.shape != flat.shape or net.params.dtype != flat.dtype:
        raise damaged(f"{flat.dtype} params of shape {flat.shape} do not fit the network "
                      f"({net.params.dtype}, {net.params.shape})")
    net.params[...] = flat
    fitted = {**meta["fitted"], **arrays}
    for name, value in fitted.items():
        if not _ATTRIBUTE_NAME.match(name) or hasattr(cls, name) or (
                name.startswith("_") and name not in _SAVED_PRIVATE):
            raise damaged(f"bad attribute name {name!r}")
        setattr(est, name, value)
    # files written before these were kept: their parameters are the fitted ones
    vars(est).setdefault("_output", est.output)
    vars(est).setdefault("_step_features", est.step_features)
    required = {"n_features_in_", "n_timesteps_in_", "_x_ndim"}
    required |= {"classes_"} if cls is LSTMClassifier else {"_y_ndim", "n_outputs_"}
    if not required <= set(fitted):
        raise damaged(f"missing fitted attributes {sorted(required - set(fitted))}")
    if cls is LSTMClassifier and np.shape(est.classes_) != (net.n_outputs,):
        raise damaged(f"{np.size(est.classes_)} classes for a head of {net.n_outputs} outputs")
    _check_fitted_shapes(est, net, damaged)
    est.network_ = net
    return est


def _check_fitted_shapes(est, net, damaged):
    """The fitted attributes predict reads agree with the network, and those
    training continues from are of their types (a file edited by hand would
    otherwise load and fail at predict or partial_fit with a puzzling message)."""
    def whole(value):
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def number(value):
        return isinstance(value, numbers.Real) and not isinstance(value, bool)

    state = vars(est)
    for name, ok in (("n_iter_", lambda v: whole(v) and v >= 0),
                     ("_no_improvement", lambda v: whole(v) and v >= 0),
                     ("loss_", number), ("best_loss_", number),
                     ("best_validation_score_", number),
                     ("loss_curve_", lambda v: isinstance(v, list) and all(map(number, v))),
                     ("validation_scores_",
                      lambda v: isinstance(v, list) and all(map(number, v)))):
        if name in state and not ok(state[name]):
            raise damaged(f"{name}={state[name]!r}")

    if est._output not in ("last", "sequence") or est._step_features is not None and (
            est._x_ndim != 2 or est._step_features != net.n_features):
        raise damaged(f"_output={est._output!r}, _step_features={est._step_features!r}")
    T = est.n_timesteps_in_
    if est._x_ndim not in (2, 3) or not (T is None or whole(T) and T >= 1):
        raise damaged(f"_x_ndim={est._x_ndim!r}, n_timesteps_in_={T!r}")
    # 3-D X: features per step; 2-D X: its columns, steps x features per step
    expected = net.n_features if est._x_ndim == 3 else (None if T is None else T * net.n_features)
    if not whole(est.n_features_in_) or expected is not None and est.n_features_in_ != expected:
        raise damaged(f"n_features_in_={est.n_features_in_!r} does not fit a network of "
                      f"{net.n_features} features per step on {est._x_ndim}-D X")
    if isinstance(est, LSTMRegressor) and (est.n_outputs_ != net.n_outputs
                                           or est._y_ndim not in (1, 2, 3)):
        raise damaged(f"n_outputs_={est.n_outputs_!r}, _y_ndim={est._y_ndim!r} for a head of "
                      f"{net.n_outputs} outputs")
