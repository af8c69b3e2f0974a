"""Whole-buffer work in Numba: losses with their gradients, optimiser updates over
the flat parameter buffer, dropout and gradient clipping.

Each is one compiled pass instead of a chain of NumPy temporaries, which is
what small models spend their time on. All are `cache=True`, so the compile
cost is paid once per machine, not once per process.
"""
import math
import warnings

import numpy as np
from numba import njit

from . import _threads

# The one place the Numba flags are set. No fastmath: the losses must stay
# exact for the finite-difference and torch parity tests, and inf/NaN must
# survive so divergence is detected.
JIT = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")


def jit(function):
    """njit with JIT's flags. Where Numba finds no writable folder for its cache
    (a read-only install with a read-only home, and no NUMBA_CACHE_DIR), it
    refuses cache=True at decoration time, which would fail `import fastlstm`:
    there the functions compile in every process instead (a few seconds at the
    first fit), and the first one says so once."""
    try:
        return njit(**JIT)(function)
    except RuntimeError as err:
        if "cannot cache" not in str(err):
            raise
        if JIT["cache"]:
            JIT["cache"] = False
            warnings.warn(f"fastlstm: Numba has no writable folder to cache its compiled "
                          f"functions in ({err}); they compile in every process. Set "
                          f"NUMBA_CACHE_DIR to a writable folder to keep them.",
                          RuntimeWarning, stacklevel=2)
        return njit(**JIT)(function)


# ---- losses: value and gradient in one pass ----------------------------------

@jit
def squared_error(pred, target, weight, dpred):
    """loss = sum_m w_m * 0.5 * sum_k (pred - target)^2 / (K * sum_m w_m).

    pred, target, dpred (M, K); weight (M,). With unit weights this is half the
    mean squared error, as MLPRegressor reports it. dpred = dloss/dpred.
    """
    M, K = pred.shape
    total_weight = 0.0
    for m in range(M):
        total_weight += weight[m]
    scale = 1.0 / (K * total_weight)
    loss = 0.0
    for m in range(M):
        w = weight[m] * scale
        for k in range(K):
            diff = pred[m, k] - target[m, k]
            loss += 0.5 * w * diff * diff
            dpred[m, k] = w * diff
    return loss


# From this many logits a batch's exponentials are taken by NumPy, whose exp runs
# in SIMD lanes where Numba's calls libm once per element: 640 rows of 1000
# classes 2.6 -> 1.1 ms, 640 of 100 0.26 -> 0.15; below, NumPy's calls cost more
# than they save (512 rows of 2 classes: 9 -> 27 us).
NUMPY_EXP_FROM = 8192
# From this many logits softmax splits its rows between threads (handing a slice
# to another thread costs tens of microseconds; 1M logits take ~2 ms).
SPLIT_SOFTMAX_FROM = 2**20


def softmax_cross_entropy(logits, labels, weight, dlogits):
    """loss = sum_m w_m * -log softmax(logits_m)[labels_m] / sum_m w_m.

    logits, dlogits (M, K); labels (M,) int; weight (M,).
    dlogits = dloss/dlogits = w_m * (softmax - onehot) / sum w.
    """
    if logits.size < NUMPY_EXP_FROM:
        return _cross_entropy(logits, labels, weight, dlogits, None)
    return _cross_entropy(logits, labels, weight, dlogits, _exps_by_numpy(logits, dlogits))


def _exps_by_numpy(logits, out):
    """out = exp(logits - row max) (M, K), by NumPy's exp; returns the row maxima (M,)."""
    top = logits.max(axis=1)
    np.subtract(logits, top[:, None], out=out)
    np.exp(out, out=out)
    return top


@jit
def _cross_entropy(logits, labels, weight, dlogits, top):
    """softmax_cross_entropy's loss and gradient; top (M,): the row maxima, with
    dlogits holding exp(logits - top) already, or None to take both here."""
    M, K = logits.shape
    total_weight = 0.0
    for m in range(M):
        total_weight += weight[m]
    loss = 0.0
    for m in range(M):
        norm = 0.0
        if top is None:
            row_top = logits[m, 0]
            for k in range(1, K):
                row_top = max(row_top, logits[m, k])
            for k in range(K):
                e = np.exp(logits[m, k] - row_top)
                dlogits[m, k] = e
                norm += e
        else:
            row_top = top[m]
            for k in range(K):
                norm += dlogits[m, k]
        w = weight[m] / total_weight
        y = labels[m]
        loss += w * (np.log(norm) - (logits[m, y] - row_top))
        scale = w / norm
        for k in range(K):
            dlogits[m, k] *= scale
        dlogits[m, y] -= w
    return loss


def softmax(logits, out, n_threads=1):
    """Row-wise softmax of logits (M, K) into out (M, K); from NUMPY_EXP_FROM
    logits the exponentials by NumPy, as softmax_cross_entropy's. From
    SPLIT_SOFTMAX_FROM logits in row slices on n_threads threads (NumPy's
    exponentials and the loops release the GIL)."""
    parts = min(n_threads, len(logits)) if logits.size >= SPLIT_SOFTMAX_FROM else 1
    if parts > 1:
        _threads.run_parallel(lambda rows: softmax(logits[rows], out[rows]),
                              _threads.row_slices(len(logits), parts))
        return
    exps_given = logits.size >= NUMPY_EXP_FROM
    if exps_given:
        _exps_by_numpy(logits, out)
    _softmax(logits, out, exps_given)


@jit
def _softmax(logits, out, exps_given):
    """softmax's loops; exps_given: out holds exp(logits - row max) already."""
    M, K = logits.shape
    for m in range(M):
        if not exps_given:
            top = logits[m, 0]
            for k in range(1, K):
                top = max(top, logits[m, k])
            for k in range(K):
                out[m, k] = np.exp(logits[m, k] - top)
        norm = 0.0
        for k in range(K):
            norm += out[m, k]
        for k in range(K):
            out[m, k] /= norm


# ---- regularisation and clipping ---------------------------------------------

@jit
def add_l2_penalty(params, grads, coef):
    """grads += coef * params; returns 0.5 * coef * ||params||^2 (the loss term)."""
    penalty = 0.0
    for k in range(params.shape[0]):
        penalty += params[k] * params[k]
        grads[k] += coef * params[k]
    return 0.5 * coef * penalty


@jit
def clip_grad_norm(grads, max_norm):
    """Scale grads in place so their L2 norm is at most max_norm; returns the norm
    before clipping (inf or NaN if the gradients are not finite).

    The squares are taken in float64: float32 ones overflow from |g| ~ 1.8e19,
    and an infinite norm would scale every finite gradient to 0 (torch's
    clip_grad_norm_ does so). Where float64 squares overflow too, the norm is
    taken over the gradients divided by the largest."""
    total = 0.0
    for k in range(grads.shape[0]):
        g = np.float64(grads[k])
        total += g * g
    norm = np.sqrt(total)
    scale = max_norm / (norm + 1e-6)
    if norm == np.inf:              # squares overflowed, or a gradient is infinite
        largest = 0.0
        for k in range(grads.shape[0]):
            largest = max(largest, abs(np.float64(grads[k])))
        if largest < np.inf:        # all finite: rescale (largest > 1e154 here)
            total = 0.0
            for k in range(grads.shape[0]):
                g = np.float64(grads[k]) / largest
                total += g * g
            norm = largest * np.sqrt(total)      # inf only past float64's range
            scale = max_norm / largest / np.sqrt(total)
    if norm > max_norm:
        for k in range(grads.shape[0]):
            grads[k] *= scale
    return norm


# ---- optimisers over the flat parameter buffer ------------------------------

@jit
def adam_step(params, grads, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2,
              step_size, bias2_sqrt, eps):
    """One Adam update of params (P,) in place, torch's form:
        m = beta1 m + (1 - beta1) g;   v = beta2 v + (1 - beta2) g^2
        params -= step_size * m / (sqrt(v) / bias2_sqrt + eps)
    with step_size = lr / (1 - beta1^t) and bias2_sqrt = sqrt(1 - beta2^t) worked
    out by the caller in float64. The scalars come in the arrays' dtype, so a
    float32 network updates in float32, as torch does: 16 lanes a vector instead
    of 8, for its division and square root too (10651 parameters: 16 -> 6 us)."""
    for k in range(params.shape[0]):
        g = grads[k]
        m[k] = beta1 * m[k] + one_minus_beta1 * g
        v[k] = beta2 * v[k] + one_minus_beta2 * g * g
        params[k] -= step_size * m[k] / (np.sqrt(v[k]) / bias2_sqrt + eps)


@jit
def sgd_step(params, grads, velocity, lr, momentum, nesterov):
    """SGD with (optionally Nesterov) momentum, MLP's form, params (P,) in place."""
    for k in range(params.shape[0]):
        velocity[k] = momentum * velocity[k] - lr * grads[k]
        if nesterov:
            params[k] += momentum * velocity[k] - lr * grads[k]
        else:
            params[k] += velocity[k]


# ---- dropout (inverted: scaled at train time, identity at predict) ----------

def dropout_bits(rng, shape):
    """Random 32-bit words of a dropout mask over `shape` (uint32), from rng's
    bit generator: its raw 64-bit draws cut in two, where rng.random makes each
    word a float first (charlm's 225,000 words a slice and batch: 222 us against
    532, 0.8% of its training)."""
    n = math.prod(shape)
    return rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n].reshape(shape)


@jit
def apply_dropout_mask(x, bits, rate, out):
    """out = x * (bits / 2**32 >= rate) / (1 - rate): each element kept with
    probability 1 - rate (to within 2**-32); x, bits (uint32, dropout_bits)
    and out flat (P,); out may be x.

    The same mask serves both ways: forward on the activations, backward on
    their gradients (d(x * mask)/dx = mask), there in place.
    """
    scale = 1.0 / (1.0 - rate)
    least = math.ceil(rate * 4294967296.0)      # the smallest word kept
    if out.ctypes.data == x.ctypes.data:
        # in place: a loop over one array. Given x and out as two arrays, LLVM
        # checks at run time whether they overlap and, when they do, takes its
        # scalar loop (charlm's 450,000 float32: 1.37 ms, against 0.13 ms here)
        for k in range(x.shape[0]):
            x[k] = x[k] * scale if bits[k] >= least else 0.0
    else:
        for k in range(x.shape[0]):
            out[k] = x[k] * scale if bits[k] >= least else 0.0
