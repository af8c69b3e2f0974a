"""Input and parameter checks: every bad input gets an error that names it."""
import numbers

import numpy as np
from sklearn.utils import check_array


def resolve_dtype(X, dtype):
    """The float type to compute in: `dtype` if given, else X's own float32 or
    float64 (for a list of sequences, the first one's), else float32 (ints,
    bools, lists of numbers)."""
    if dtype is not None:
        return np.dtype(dtype)
    x_dtype = getattr(X, "dtype", None)
    if x_dtype is None and isinstance(X, (list, tuple)) and len(X):  # a list of sequences
        x_dtype = getattr(X[0], "dtype", None)
    if x_dtype in (np.float32, np.float64):
        return np.dtype(x_dtype)
    return np.dtype(np.float32)


def check_sequences(X, dtype, name="X"):
    """X (n_samples, n_timesteps[, n_features]) -> (float array (N, T, D), X's ndim).

    A 2-D X holds univariate sequences: (n_samples, n_timesteps) means D = 1.
    """
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers, got a string")
    try:
        X = check_array(X, dtype=dtype, allow_nd=True, ensure_all_finite=True,
                        input_name=name, order="C")
    except ValueError as err:
        if "inhomogeneous" in str(err) or "setting an array element with a sequence" in str(err):
            raise ValueError(
                f"{name} is ragged: all sequences must have the same number of time steps "
                f"and features ({err})") from None
        raise
    given_ndim = X.ndim
    if X.ndim == 2:
        X = X[:, :, None]
    if X.ndim != 3:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_timesteps) or 3-D (n_samples, n_timesteps, "
            f"n_features), got an array with {X.ndim} dimensions")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has sequences of length 0: need at least one time step")
    if X.shape[2] == 0:
        raise ValueError(f"{name} has 0 features per time step: need at least one")
    return X, given_ndim


def is_sequence_list(X):
    """True for a list/tuple of sequences that do not all have the same length."""
    if not isinstance(X, (list, tuple)) or len(X) == 0:
        return False
    lengths = set()
    for seq in X:
        shape = np.shape(seq) if not isinstance(seq, (str, bytes)) else ()
        if len(shape) == 0:
            return False
        lengths.add(shape[0])
    return len(lengths) > 1


def pad_sequences(X, dtype, name="X"):
    """A list of sequences (T_i, n_features) or (T_i,) of several lengths ->
    (X3 (N, T_max, D) zero-padded at the end, lengths (N,) int64)."""
    seqs = []
    for n, seq in enumerate(X):
        seq = check_array(seq, dtype=dtype, ensure_2d=False, ensure_all_finite=True,
                          ensure_min_samples=0, ensure_min_features=0,
                          input_name=f"{name}[{n}]")
        if seq.ndim == 1:
            seq = seq[:, None]
        if seq.ndim != 2:
            raise ValueError(f"{name}[{n}] must be (n_timesteps, n_features), got {seq.ndim}-D")
        if seq.shape[0] == 0:
            raise ValueError(f"{name}[{n}] has length 0: need at least one time step")
        seqs.append(seq)
    n_features = {seq.shape[1] for seq in seqs}
    if len(n_features) > 1:
        raise ValueError(f"the sequences of {name} have different numbers of features: "
                         f"{sorted(n_features)}")
    lengths = np.array([len(seq) for seq in seqs], dtype=np.int64)
    X3 = np.zeros((len(seqs), lengths.max(), n_features.pop()), dtype=dtype)
    for n, seq in enumerate(seqs):
        X3[n, :len(seq)] = seq
    return X3, lengths


def check_sample_weight(sample_weight, n_samples):
    """sample_weight -> (n_samples,) float64: finite, >= 0, not all zero."""
    if np.isscalar(sample_weight):
        sample_weight = np.full(n_samples, sample_weight, dtype=np.float64)
    try:
        weights = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("sample_weight must be numbers") from None
    if weights.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {weights.shape}")
    if not np.isfinite(weights).all():
        raise ValueError("sample_weight contains NaN or infinity")
    if (weights < 0).any():
        raise ValueError("sample_weight has negative values")
    if not weights.any():
        raise ValueError("sample_weight is zero for every sample: nothing to fit")
    return weights


def check_targets(y, name="y"):
    """y as a finite float array, with a clear error for NaN/inf or non-numbers."""
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.dtype.kind in "OUSc" or y.dtype.kind == "V":
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be numeric for regression, got dtype {y.dtype}") from None
    if y.dtype.kind == "c":
        raise ValueError(f"{name} must be real, got complex values")
    y = y.astype(np.float64, copy=False)
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return y


def check_params(est):
    """Raise ValueError naming the first estimator parameter outside its domain."""
    sizes = est.hidden_layer_sizes
    if isinstance(sizes, numbers.Integral):
        sizes = (sizes,)
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
    if not isinstance(est.verbose, bool):
        number("verbose", 0, integral=True)
    number("validation_fraction", 0, 1 - 1e-12, low_open=True)
    if est.step_features is not None:
        number("step_features", 1, integral=True)
    if est.n_jobs is not None and (not isinstance(est.n_jobs, numbers.Integral) or est.n_jobs == 0):
        raise ValueError(f"n_jobs must be None or a non-zero int, got {est.n_jobs!r}")
    if not (isinstance(est.dropout, numbers.Real) and 0 <= est.dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1), got {est.dropout!r}")
    if est.batch_size != "auto":
        number("batch_size", 1, integral=True)
    if est.clip_grad_norm is not None:
        number("clip_grad_norm", 0, low_open=True)
    if est.solver not in ("adam", "sgd"):
        raise ValueError(f"solver must be 'adam' or 'sgd', got {est.solver!r}")
    if est.output not in ("last", "sequence"):
        raise ValueError(f"output must be 'last' or 'sequence', got {est.output!r}")
    if est.dtype is not None:
        try:
            dtype = np.dtype(est.dtype)
        except TypeError:
            dtype = None
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {est.dtype!r}")
    return sizes
