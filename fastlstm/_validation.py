"""Input and parameter checks: every bad input gets an error that names it."""
import math
import numbers

import numpy as np
import scipy.sparse

from . import _kernels


def resolve_dtype(X, dtype):
    """The float type to compute in: `dtype` if given, else X's own float32 or
    float64 (for a list of sequences, the first one's), else float32 (ints,
    bools, lists of numbers)."""
    if dtype is not None:
        return np.dtype(dtype)
    X = object_vector_as_list(X)
    x_dtype = getattr(X, "dtype", None)
    if x_dtype is None and isinstance(X, (list, tuple)) and len(X):  # a list of sequences
        x_dtype = getattr(X[0], "dtype", None)
    elif not isinstance(x_dtype, np.dtype) and hasattr(X, "__array__"):
        x_dtype = np.asarray(X).dtype   # array-likes (a torch tensor's dtype is its own type)
    if x_dtype in (np.float32, np.float64):
        return np.dtype(x_dtype)
    return np.dtype(np.float32)


def _as_number_array(value, name):
    """np.asarray(value) with a clear error for what cannot be an array of numbers
    (None, strings, mappings, ragged nesting, sparse matrices, non-numeric dtypes)."""
    if value is None:
        raise TypeError(f"{name} is required, got None")
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got a string")
    if scipy.sparse.issparse(value):  # before the dict check: dok matrices are dicts
        raise TypeError(f"{name} is a sparse matrix: sparse input is not supported, pass a "
                        "dense array (sequences are dense)")
    if isinstance(value, (dict, set, frozenset)):
        raise TypeError(f"{name} must be an array of numbers, got a {type(value).__name__}")
    try:
        arr = np.asarray(value)
        if arr.dtype.kind == "O":  # e.g. lists of numbers and None: None becomes NaN below
            arr = arr.astype(np.float64)
    except ValueError as err:
        if "inhomogeneous" in str(err) or "with a sequence" in str(err):
            hint = (f"; a DataFrame column of sequences goes in as the column itself, "
                    f"{name}[column], a Series" if hasattr(value, "columns") else "")
            raise ValueError(
                f"{name} is ragged: all sequences must have the same number of time steps "
                f"and features{hint}") from None
        raise ValueError(f"{name} must hold numbers only ({err})") from None
    except TypeError as err:
        if "NAType" in str(err):  # pandas' missing value, in nullable columns
            raise ValueError(f"{name} contains NaN (pandas' NA)") from None
        raise TypeError(f"{name} must hold numbers only ({err})") from None
    kind = arr.dtype.kind
    if kind == "c":  # sklearn's wording, which its own estimator checks look for
        raise ValueError(f"Complex data not supported: {name} is complex; only real numbers "
                         "are supported")
    if kind in "US":
        raise TypeError(f"{name} holds strings (dtype {arr.dtype}); it must hold numbers")
    if kind not in "biuf":  # datetimes, timedeltas, structured records, ...
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr


def _check_finite(arr, name):
    """ValueError if arr (already float) holds NaN or +-inf. A C-contiguous float32
    or float64 array (what a kernel gets) takes one compiled pass (all_finite);
    any other np.isfinite."""
    finite = _kernels.all_finite(arr)
    if finite or (finite is None and np.isfinite(arr).all()):
        return
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (or None)")
    if np.isinf(arr).any():
        too_large = "" if arr.dtype == np.float64 else f", or values too large for {arr.dtype}"
        raise ValueError(f"{name} contains infinity{too_large}")


def check_sequences(X, dtype, name="X"):
    """X (n_samples, n_timesteps[, n_features]) -> (C-contiguous float array (N, T, D),
    X's ndim).

    A 2-D X holds univariate sequences: (n_samples, n_timesteps) means D = 1.
    Every way X can be unusable gets a TypeError or ValueError naming X.
    """
    # an ndarray already of the type to compute in skips the conversions (predict
    # on one small sequence spends most of its time here otherwise)
    arr = X if type(X) is np.ndarray and X.dtype == dtype else _as_number_array(X, name)
    if arr.ndim not in (2, 3):
        got = "a scalar" if arr.ndim == 0 else f"an array with {arr.ndim} dimensions"
        hint = (". Reshape your data: one sequence of n steps is X.reshape(1, -1)"
                if arr.ndim == 1 else "")
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_timesteps) or 3-D (n_samples, n_timesteps, "
            f"n_features), got {got} of shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} has 0 samples (shape {arr.shape}): need at least one")
    if arr.shape[1] == 0:  # for 2-D X also in sklearn's words, which its checks look for
        raise ValueError(f"{name} has sequences of length 0: need at least one time step" + (
            f" (found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 is "
            "required.)" if arr.ndim == 2 else f" (shape {arr.shape})"))
    if arr.ndim == 3 and arr.shape[2] == 0:
        raise ValueError(f"{name} has 0 features per time step: need at least one")
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        with np.errstate(over="ignore"):  # float64 -> float32 overflow is reported as inf
            arr = np.ascontiguousarray(arr, dtype=dtype)
    _check_finite(arr, name)
    given_ndim = arr.ndim
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, given_ndim


def unflatten_steps(X3, step_features):
    """X3 (N, n_columns, 1), a checked 2-D X of flattened steps -> (N, n_columns /
    step_features, step_features): each row is [x_0 features..., x_1 features..., ...]."""
    n_columns = X3.shape[1]
    if n_columns % step_features:
        raise ValueError(
            f"X has {n_columns} columns, not a multiple of step_features={step_features}: "
            "expected (n_samples, n_timesteps * step_features)")
    return X3.reshape(X3.shape[0], n_columns // step_features, step_features)


def object_vector_as_list(X):
    """A 1-D object array or Series of sequences (np.array(seqs, dtype=object), a
    DataFrame column of arrays) -> a list of them, read as a list is; else X."""
    if getattr(X, "dtype", None) == object and getattr(X, "ndim", None) == 1:
        return list(X)
    return X


def is_sequence_list(X, same_lengths_too=False):
    """True for a list/tuple of sequences that do not all have the same length
    (or, same_lengths_too, of any lengths)."""
    if not isinstance(X, (list, tuple)) or len(X) == 0:
        return False
    lengths, not_sequences = set(), False
    for seq in X:
        try:
            shape = np.shape(seq) if not isinstance(seq, (str, bytes)) else ()
        except ValueError:  # itself ragged: not a sequence of steps
            return False
        if len(shape) == 0:
            not_sequences = True
        else:
            lengths.add(shape[0])
    if not_sequences:
        # numbers (a row), or sequences with a None or a number among them, which
        # pack_sequences refuses by name
        return bool(lengths)
    return len(lengths) > 1 or same_lengths_too


class SequenceList:
    """Sequences of several lengths, kept end to end, never padded as a whole:
    steps (S + 1, D), the S real steps of every sequence in turn and a row of
    zeros last; starts (N,) and lengths (N,) int64 index it. Batches are padded
    as they are taken, each to its own longest sequence (time_major), so one
    long sequence among many short ones costs its own steps, not N times them.

    shape is that of the padded array (N, T_max, D) it stands for; X3[rows]
    takes some of the sequences (sharing steps), as X3[rows] of that array
    would: still T_max steps wide (their targets are)."""

    def __init__(self, steps, starts, lengths, n_steps=None):
        self.steps, self.starts, self.lengths = steps, starts, lengths
        self.dtype = steps.dtype
        n_steps = int(lengths.max()) if n_steps is None else n_steps
        self.shape = (len(lengths), n_steps, steps.shape[1])

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, rows):
        """rows: an int array -> those sequences, in that order."""
        return SequenceList(self.steps, self.starts[rows], self.lengths[rows], self.shape[1])

    def time_major(self, rows, n_steps):
        """Sequences `rows` (B,) -> (n_steps, B, D), zero-padded after each one's
        end (n_steps at least the longest of them)."""
        t = np.arange(n_steps)[:, None]                                 # (n_steps, 1)
        where = self.starts[rows] + t                                   # (n_steps, B)
        where[t >= self.lengths[rows]] = len(self.steps) - 1            # the zero row
        return self.steps.take(where, axis=0)


def pack_sequences(X, dtype, name="X"):
    """A list of sequences (T_i, n_features) or (T_i,) of several lengths,
    checked -> (SequenceList of `dtype`, lengths (N,) int64)."""
    seqs = []
    for n, seq in enumerate(X):
        seq_name = f"{name}[{n}]"
        seq = _as_number_array(seq, seq_name)
        if seq.ndim == 1:
            seq = seq[:, None]
        if seq.ndim != 2:
            raise ValueError(f"{seq_name} must be (n_timesteps, n_features), got {seq.ndim}-D")
        if seq.shape[0] == 0:
            raise ValueError(f"{seq_name} has length 0: need at least one time step")
        seqs.append(seq)
    n_features = {seq.shape[1] for seq in seqs}
    if len(n_features) > 1:
        odd = next(n for n, seq in enumerate(seqs) if seq.shape[1] != seqs[0].shape[1])
        raise ValueError(f"the sequences of {name} have different numbers of features: "
                         f"{sorted(n_features)} ({name}[{odd}] has {seqs[odd].shape[1]}, "
                         f"{name}[0] {seqs[0].shape[1]})")
    if 0 in n_features:
        raise ValueError(f"the sequences of {name} have 0 features per time step: need at "
                         "least one")
    lengths = np.array([len(seq) for seq in seqs], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    steps = np.empty((ends[-1] + 1, n_features.pop()), dtype=dtype)    # (S + 1, D)
    with np.errstate(over="ignore"):  # float64 -> float32 overflow is reported as inf
        for n, seq in enumerate(seqs):
            steps[starts[n]:ends[n]] = seq
    steps[-1] = 0
    if not _kernels.all_finite(steps):  # one pass; then the sequence, for its name
        for n in range(len(seqs)):
            _check_finite(steps[starts[n]:ends[n]], f"{name}[{n}]")
    return SequenceList(steps, starts, lengths), lengths


def check_targets(y, dtype=np.float64, name="y"):
    """Regression targets as a finite float array of `dtype` (at least 1-D)."""
    y = _as_number_array(y, name)
    if y.ndim == 0:
        raise ValueError(f"{name} must be an array with one entry per sample, got a scalar")
    if y.size == 0:
        raise ValueError(f"{name} is empty (shape {y.shape})")
    with np.errstate(over="ignore"):
        y = y.astype(dtype, copy=False)
    _check_finite(y, name)
    return y


def check_labels(y, name="y"):
    """Class labels as an array (at least 1-D): numbers or strings, never NaN/None,
    never a mix of the two."""
    if y is None:
        raise TypeError(f"{name} is required, got None")
    try:
        y = np.asarray(y)
    except ValueError:
        raise ValueError(f"{name} is ragged: every sample needs the same number of labels") from None
    if y.ndim == 0:
        raise ValueError(f"{name} must be an array with one label per sample, got a scalar")
    if y.size == 0:
        raise ValueError(f"{name} is empty (shape {y.shape})")
    if y.dtype.kind == "c":
        raise ValueError(f"{name} is complex; labels must be ints, strings or real numbers")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinity")
    if y.dtype.kind == "O":
        values = y.ravel()
        if any(v is None or (isinstance(v, float) and not np.isfinite(v)) for v in values):
            raise ValueError(f"{name} contains None, NaN or infinity")
        if len({isinstance(v, str) for v in values}) > 1:
            raise TypeError(f"{name} mixes strings and numbers; labels must be all one kind")
    return y


def check_sample_weight(sample_weight, n_samples, dtype=np.float64, name="sample_weight"):
    """(n_samples,) finite, non-negative weights with a positive sum; None -> ones."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    w = _as_number_array(sample_weight, name)
    if w.ndim == 0:
        w = np.full(n_samples, w)
    if w.shape != (n_samples,):
        raise ValueError(f"{name} must have shape ({n_samples},), one weight per sample, "
                         f"got shape {w.shape}")
    w = w.astype(dtype)
    _check_finite(w, name)
    if (w < 0).any():
        raise ValueError(f"{name} has negative values")
    with np.errstate(over="ignore"):
        total = w.sum()
    if total == np.inf:
        raise ValueError(f"{name} sums to more than float64 holds: divide the weights by a "
                         "common factor")
    if not total > 0:
        raise ValueError(f"{name} sums to zero: at least one sample needs a positive weight")
    return w


def check_params(est):
    """Raise ValueError naming the first estimator parameter outside its domain."""
    sizes = est.hidden_layer_sizes
    if isinstance(sizes, numbers.Integral):
        sizes = (sizes,)
    if isinstance(sizes, (str, bytes)):
        raise ValueError(f"hidden_layer_sizes must be an int or a sequence of ints, got {sizes!r}")
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(
            f"hidden_layer_sizes must be an int or a sequence of ints, got {sizes!r}") from None
    if len(sizes) == 0 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                  and s >= 1 for s in sizes):
        raise ValueError(
            f"hidden_layer_sizes must be positive ints (one per LSTM layer), got {sizes!r}")

    def number(name, low, high=np.inf, low_open=False, integral=False):
        value = getattr(est, name)
        kind = numbers.Integral if integral else numbers.Real
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok:
            ok = (value > low if low_open else value >= low) and value <= high and np.isfinite(value)
        if not ok:
            bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high < np.inf else "")
            raise ValueError(f"{name} must be a{'n int' if integral else ' number'} {bound}, "
                             f"got {value!r}")

    number("learning_rate_init", 0, low_open=True)
    number("max_iter", 1, integral=True)
    number("alpha", 0)
    number("momentum", 0, 1)
    number("beta_1", 0, 1 - 1e-12)
    number("beta_2", 0, 1 - 1e-12)
    number("epsilon", 0, low_open=True)
    number("tol", 0)
    number("n_iter_no_change", 1, integral=True)
    number("validation_fraction", 0, 1 - 1e-12, low_open=True)
    if est.step_features is not None:
        number("step_features", 1, integral=True)
    if est.n_jobs is not None and (not isinstance(est.n_jobs, numbers.Integral) or est.n_jobs == 0):
        raise ValueError(f"n_jobs must be None or a non-zero int, got {est.n_jobs!r}")
    if not isinstance(est.verbose, bool):
        number("verbose", 0, integral=True)
    if not (isinstance(est.dropout, numbers.Real) and 0 <= est.dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1), got {est.dropout!r}")
    if est.batch_size != "auto":
        number("batch_size", 1, integral=True)
    for name in ("clip_grad_norm", "clip_grad_value"):
        if getattr(est, name) is not None:
            number(name, 0, low_open=True)
    if est.tbptt_steps is not None:
        number("tbptt_steps", 1, integral=True)
    for name in ("shuffle", "nesterovs_momentum", "bidirectional", "early_stopping",
                 "warm_start"):
        if not isinstance(getattr(est, name), (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {getattr(est, name)!r}")
    if est.solver not in ("adam", "sgd"):
        raise ValueError(f"solver must be 'adam' or 'sgd', got {est.solver!r}")
    if est.cell not in ("lstm", "gru", "rnn"):
        raise ValueError(f"cell must be 'lstm', 'gru' or 'rnn', got {est.cell!r}")
    if est.nonlinearity not in ("tanh", "sigmoid"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'sigmoid', got {est.nonlinearity!r}")
    if est.output not in ("last", "sequence"):
        raise ValueError(f"output must be 'last' or 'sequence', got {est.output!r}")
    class_weight = getattr(est, "class_weight", None)               # classifiers only
    if isinstance(class_weight, dict):
        bad = {k: v for k, v in class_weight.items()
               if not (isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"class_weight values must be finite numbers >= 0, got {bad!r}")
    elif not (class_weight is None or isinstance(class_weight, str)
              and class_weight == "balanced"):
        raise ValueError("class_weight must be a dict {label: weight}, 'balanced' or None, "
                         f"got {class_weight!r}")
    if est.dtype is not None:
        try:
            dtype = np.dtype(est.dtype)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {est.dtype!r}")
    return sizes
