"""LSTMRegressor and LSTMClassifier: validation, the training loop, the sklearn
protocol. The math lives in _network (layers, head) and _ops (losses, optimisers).
"""
import re
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _ops, _persist
from ._network import LSTMNetwork, _Arena
from ._validation import (check_labels, check_params, check_sequences, check_targets,
                          resolve_dtype)

# Predictions run in chunks whose scratch memory stays near this many bytes.
_PREDICT_CHUNK_BYTES = 64 * 2**20


class _Optimizer:
    """The update rule of the estimator's solver over one flat parameter buffer,
    with its state (moments, step count)."""

    def __init__(self, est, params):
        self.est = est
        self.first_moment = np.zeros_like(params)                 # Adam m, or SGD velocity
        self.second_moment = np.zeros_like(params)                # Adam v
        self.n_steps = 0
        self._ones = np.ones(0)

    def unit_weights(self, n):
        """A vector of n ones (sample weights of an unweighted batch), reused."""
        if self._ones.size < n:
            self._ones = np.ones(n)
        return self._ones[:n]

    def step(self, params, grads):
        est = self.est
        if est.clip_grad_norm is not None:
            _ops.clip_grad_norm(grads, est.clip_grad_norm)
        self.n_steps += 1
        if est.solver == "adam":
            _ops.adam_step(params, grads, self.first_moment, self.second_moment, self.n_steps,
                           est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon)
        else:
            _ops.sgd_step(params, grads, self.first_moment, est.learning_rate_init,
                          est.momentum, est.nesterovs_momentum)


class _BaseLSTM(BaseEstimator):
    """Shared fit/predict machinery; subclasses pick the head's loss."""

    def __init__(self, hidden_layer_sizes=(100,), *, output="last", dropout=0.0,
                 solver="adam", learning_rate_init=1e-3, batch_size="auto", max_iter=200,
                 shuffle=True, alpha=1e-4, momentum=0.9, nesterovs_momentum=True,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, clip_grad_norm=None, tbptt_steps=None, tol=1e-4,
                 n_iter_no_change=10, dtype=None, random_state=None, verbose=0):
        self.hidden_layer_sizes = hidden_layer_sizes
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
        self.tbptt_steps = tbptt_steps
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ---- what the subclasses define ------------------------------------------
    # _encode_targets(y, X3) -> (targets, n_outputs); targets (N, K) float or (N,) int,
    #     with a time axis after N when output="sequence"
    # _loss(out, targets, weight, dout) -> float
    # _check_targets_at_fit, _decode(out)

    # ---- fitting --------------------------------------------------------------

    def fit(self, X, y):
        """Train on X (n_samples, n_timesteps[, n_features]) and y; returns self.

        2-D X holds univariate sequences. Ctrl-C stops training and keeps the
        weights of the last completed epoch.
        """
        sizes = check_params(self)
        dtype = resolve_dtype(X, self.dtype)
        X3 = check_sequences(X, dtype)
        N, T, D = X3.shape
        targets, n_outputs = self._encode_targets(y, X3)
        self.n_features_in_ = X3.shape[2] if np.ndim(X) == 3 else X3.shape[1]
        self.n_timesteps_in_ = T
        self._x_ndim = np.ndim(X)

        random_state = check_random_state(self.random_state)
        rng = np.random.default_rng(random_state.randint(np.iinfo(np.int32).max))
        try:
            net = LSTMNetwork(D, sizes, n_outputs, dtype=dtype, dropout=self.dropout)
        except (MemoryError, ValueError) as err:  # numpy's "array is too big" is a ValueError
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} needs more memory "
                             f"than is available for its parameters ({err})") from None
        net.initialize(rng)
        self.network_ = net
        self.loss_curve_ = []
        self.n_iter_ = 0
        self._train(X3, targets, rng)
        return self

    def _train(self, X3, targets, rng):
        """Epochs of minibatch updates on self.network_; stops early on a flat
        loss (tol, n_iter_no_change), on divergence and on Ctrl-C."""
        net = self.network_
        N, T, D = X3.shape
        batch_size = min(200, N) if self.batch_size == "auto" else min(self.batch_size, N)
        x_tm = np.ascontiguousarray(X3.transpose(1, 0, 2))        # (T, N, D) time-major, once
        if self.output == "sequence":  # time-major targets, to match the head's row order
            targets = np.ascontiguousarray(np.swapaxes(targets, 0, 1))   # (T, N[, K])
        optimizer = _Optimizer(self, net.params)
        arena = _Arena(net.dtype)
        last_good = net.params.copy()
        best_loss, no_improvement = np.inf, 0
        stopped = None
        try:
            for _ in range(self.max_iter):
                tic = time.perf_counter()
                order = rng.permutation(N) if self.shuffle else np.arange(N)
                epoch_loss = self._run_epoch(x_tm, targets, order, batch_size, optimizer,
                                             arena, rng)
                if not (np.isfinite(epoch_loss) and np.isfinite(net.params).all()):
                    stopped = "diverged"
                    break
                last_good[...] = net.params
                self.loss_curve_.append(epoch_loss)
                self.n_iter_ += 1
                if self.verbose:
                    print(f"Iteration {self.n_iter_}, loss = {epoch_loss:.8f}, "
                          f"{N / (time.perf_counter() - tic):,.0f} samples/s", flush=True)
                no_improvement = no_improvement + 1 if epoch_loss > best_loss - self.tol else 0
                best_loss = min(best_loss, epoch_loss)
                if no_improvement >= self.n_iter_no_change:
                    if self.verbose:
                        print(f"Training loss did not improve more than tol={self.tol} for "
                              f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                    stopped = "converged"
                    break
        except KeyboardInterrupt:
            net.params[...] = last_good
            warnings.warn(
                f"Training interrupted during epoch {self.n_iter_ + 1}: the estimator keeps "
                f"the weights of the last completed epoch ({self.n_iter_}).", RuntimeWarning)
            return
        if stopped == "diverged":
            net.params[...] = last_good
            warnings.warn(
                f"Training diverged (the loss became NaN or infinite) in epoch "
                f"{self.n_iter_ + 1}; stopped and kept the weights of the last finite epoch. "
                f"Lower learning_rate_init or set clip_grad_norm.", RuntimeWarning)
        elif stopped is None:
            warnings.warn(
                f"Stochastic optimizer: maximum iterations ({self.max_iter}) reached and the "
                f"optimization hasn't converged yet.", ConvergenceWarning)

    def _run_epoch(self, x_tm, targets, order, batch_size, optimizer, arena, rng):
        """One pass over the samples in `order`; returns the mean loss, or NaN as
        soon as a batch loss is not finite (that batch's update is not applied).

        With tbptt_steps, each batch's time axis is cut into windows of that many
        steps and every window with a loss gets its own backward pass and update.
        """
        net = self.network_
        T, N = x_tm.shape[:2]
        sequence = self.output == "sequence"
        n_weights = net.n_weights
        window = T if self.tbptt_steps is None else min(self.tbptt_steps, T)
        total = 0.0
        # overflow on the way to a non-finite loss is expected, and reported by the caller
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, N, batch_size):
                idx = order[start:start + batch_size]
                B = len(idx)
                xb = np.take(x_tm, idx, axis=1)                    # (T, B, D)
                # (T, B[, K]) per-step targets, or (B[, K]) for the last step
                tb = np.take(targets, idx, axis=1) if sequence else targets[idx]
                # Truncated BPTT: windows of `window` steps; (h, c) flows forward from
                # one window into the next, gradients stop at the window's start.
                state = None
                for t0 in range(0, T, window):
                    t1 = min(t0 + window, T)
                    out, tape = net.forward(xb[t0:t1], sequence, training=True, rng=rng,
                                            arena=arena, initial_state=state)
                    if t1 < T:
                        state = tape.final_state()
                        if not sequence:  # many-to-one: only the last window has a loss
                            continue
                    # (W*B[, K]) time-major rows of this window, or (B[, K])
                    tw = tb[t0:t1].reshape(((t1 - t0) * B,) + tb.shape[2:]) if sequence else tb
                    dout = arena.get("dout", out.shape)
                    loss = self._loss(out, tw, optimizer.unit_weights(out.shape[0]), dout)
                    net.backward(tape, dout)
                    if self.alpha > 0:  # MLP's L2: 0.5 * alpha * ||W||^2 / batch size
                        loss += _ops.add_l2_penalty(net.params[:n_weights],
                                                    net.grads[:n_weights], self.alpha / B)
                    if not np.isfinite(loss):
                        return np.nan
                    optimizer.step(net.params, net.grads)
                    # a window's loss is the mean over its steps: weight it by its share
                    total += loss * B * ((t1 - t0) / T if sequence else 1.0)
        return float(total / N)

    # ---- prediction -----------------------------------------------------------

    def _check_X_predict(self, X):
        check_is_fitted(self, "network_")
        X3 = check_sequences(X, self.network_.dtype)
        n_features = X3.shape[2] if np.ndim(X) == 3 else X3.shape[1]
        if np.ndim(X) != self._x_ndim:
            raise ValueError(
                f"X has {np.ndim(X)} dimensions, but {type(self).__name__} was fitted on "
                f"{self._x_ndim}-D input")
        if n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input.")
        if X3.shape[1] != self.n_timesteps_in_:
            raise ValueError(
                f"X has {X3.shape[1]} time steps, but {type(self).__name__} was fitted on "
                f"sequences of {self.n_timesteps_in_} time steps.")
        return X3

    def _forward(self, X):
        """Raw head outputs: (N, K), or (N, T, K) when output="sequence".

        Runs in batches of samples and, for sequences too long for the memory
        budget, in windows of steps with the state carried across: the scratch
        memory stays near _PREDICT_CHUNK_BYTES whatever N and T are.
        """
        X3 = self._check_X_predict(X)
        net = self.network_
        N, T, D = X3.shape
        sequence = self.output == "sequence"
        # scratch per sample and step: the input, and gates (4H) + c, tanh_c, h per layer
        per_step = (D + 7 * sum(net.hidden_sizes)) * net.dtype.itemsize
        batch = int(np.clip(_PREDICT_CHUNK_BYTES // (T * per_step), 1, N))
        window = int(np.clip(_PREDICT_CHUNK_BYTES // (batch * per_step), 1, T))
        arena = _Arena(net.dtype)  # private to this call: predict is thread-safe
        outs = []
        for start in range(0, N, batch):
            xb = np.ascontiguousarray(X3[start:start + batch].transpose(1, 0, 2))  # (T, B, D)
            B = xb.shape[1]
            state, steps = None, []
            for t0 in range(0, T, window):
                out, tape = net.forward(xb[t0:t0 + window], sequence, training=False,
                                        arena=arena, initial_state=state)
                if t0 + window < T:
                    state = tape.final_state()
                if sequence:  # (W*B, K) time-major -> (B, W, K)
                    steps.append(np.array(out).reshape(-1, B, out.shape[1]).transpose(1, 0, 2))
            outs.append(np.concatenate(steps, axis=1) if sequence else np.array(out))
        return np.concatenate(outs, axis=0)

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
            results.
        """
        check_is_fitted(self, "network_")
        params = self.get_params(deep=False)
        fitted = {name: value for name, value in vars(self).items()
                  if name not in params and name != "network_"
                  and (name.endswith("_") or name.startswith("_"))}
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
        """{torch name: array} views of the fitted parameters (writable)."""
        check_is_fitted(self, "network_")
        return self.network_.p

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags


class LSTMRegressor(RegressorMixin, _BaseLSTM):
    """LSTM network regressor: a stack of LSTM layers and a linear head trained on
    half the mean squared error.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default=(100,)
        Hidden units of each stacked LSTM layer: (300, 300) is two layers of 300.
    output : {"last", "sequence"}, default="last"
        "last": many-to-one, the last step's state feeds the head, y is
        (n_samples,) or (n_samples, n_outputs). "sequence": one prediction per
        step, y is (n_samples, n_timesteps) or (n_samples, n_timesteps, n_outputs).
    dropout : float in [0, 1), default=0.0
        Dropout rate on each LSTM layer's output (before the next layer and
        before the head) while training; off at predict.
    solver : {"adam", "sgd"}, default="adam"
    learning_rate_init : float, default=1e-3
    batch_size : int or "auto", default="auto"
        "auto" is min(200, n_samples), as in MLPRegressor.
    max_iter : int, default=200
        Number of epochs at most.
    shuffle : bool, default=True
        Shuffle the samples every epoch.
    alpha : float, default=1e-4
        L2 penalty on the weight matrices (not the biases), scaled as in
        MLPRegressor: 0.5 * alpha * ||W||^2 / batch size.
    momentum, nesterovs_momentum : SGD settings, as in MLPRegressor.
    beta_1, beta_2, epsilon : Adam settings.
    clip_grad_norm : float or None, default=None
        Scale the gradient to at most this L2 norm before each update.
    tbptt_steps : int or None, default=None
        Truncated backpropagation through time. None: backprop through all
        n_timesteps. An int k: each batch's sequences are processed in windows of
        k steps; the LSTM state (h, c) is carried from one window into the next,
        gradients stop at each window's start, and each window with a loss gets
        its own update (output="sequence": every window; output="last": only the
        last window, the earlier ones just carry the state). Training memory then
        grows with k, not with n_timesteps. k >= n_timesteps is the same as None.
    tol, n_iter_no_change : stop when the epoch loss has not improved by tol
        for n_iter_no_change epochs in a row.
    dtype : None, "float32" or "float64", default=None
        Float type of the computation. None keeps a float32 or float64 X as it
        is and computes anything else (ints, lists) in float32.
    random_state : int, RandomState or None
        Seeds the initial weights, the shuffling and dropout.
    verbose : int, default=0
        Print the loss and speed of every epoch when > 0.

    Attributes
    ----------
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        Features per time step for 3-D X; time steps for 2-D X (sklearn's
        X.shape[1]).
    n_timesteps_in_ : int
    n_outputs_ : int
    weights_ : dict of str to ndarray
        The parameters under torch's names (weight_ih_l0, ...), head.weight, head.bias.
    network_ : the fitted network.

    Examples
    --------
    >>> import numpy as np
    >>> from fastlstm import LSTMRegressor
    >>> X = np.random.default_rng(0).normal(size=(64, 10, 1)).astype(np.float32)
    >>> y = X[:, -1, 0]
    >>> model = LSTMRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    >>> model.predict(X).shape
    (64,)
    """

    def _encode_targets(self, y, X3):
        y = check_targets(y, X3.dtype)
        N, T = X3.shape[:2]
        if y.shape[0] != N:
            raise ValueError(f"X and y have different numbers of samples: {N} and {y.shape[0]}")
        if self.output == "sequence":
            if y.ndim not in (2, 3) or y.shape[1] != T:
                raise ValueError(
                    f"with output='sequence', y must be (n_samples, n_timesteps) or "
                    f"(n_samples, n_timesteps, n_outputs) with n_timesteps={T}, got shape {y.shape}")
            self._y_ndim = y.ndim
            y = y.reshape(N, T, -1)
            self.n_outputs_ = y.shape[2]
        else:
            if y.ndim not in (1, 2):
                raise ValueError(
                    f"y must be 1-D (n_samples,) or 2-D (n_samples, n_outputs), got shape {y.shape}"
                    "; for one target per time step use output='sequence'")
            self._y_ndim = y.ndim
            y = y.reshape(N, -1)
            self.n_outputs_ = y.shape[1]
        return y.astype(X3.dtype), self.n_outputs_

    def _loss(self, out, targets, weight, dout):
        return _ops.squared_error(out, targets.reshape(out.shape), weight, dout)

    def predict(self, X):
        """Predicted values: (n_samples,) or (n_samples, n_outputs) as y was at fit;
        with output="sequence", (n_samples, n_timesteps[, n_outputs])."""
        out = self._forward(X)
        if self._y_ndim == (2 if self.output == "sequence" else 1):
            out = out[..., 0]
        return out


class LSTMClassifier(ClassifierMixin, _BaseLSTM):
    """LSTM network classifier: a stack of LSTM layers and a softmax head trained on
    cross-entropy. Labels may be of any type (ints, strings).

    Parameters are those of LSTMRegressor. With output="sequence", y holds one
    label per time step, (n_samples, n_timesteps).

    Attributes
    ----------
    classes_ : ndarray
        The class labels.
    loss_curve_, n_iter_, n_features_in_, n_timesteps_in_, weights_, network_ :
        as in LSTMRegressor.

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

    def _encode_targets(self, y, X3):
        y = check_labels(y)
        N, T = X3.shape[:2]
        if y.shape[:1] != (N,):
            raise ValueError(f"X and y have different numbers of samples: {N} and "
                             f"{y.shape[0] if y.ndim else 'a scalar'}")
        if self.output == "sequence":
            if y.ndim != 2 or y.shape[1] != T:
                raise ValueError(f"with output='sequence', y must be (n_samples, n_timesteps) "
                                 f"with n_timesteps={T}, got shape {y.shape}")
        elif y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        elif y.ndim != 1:
            raise ValueError(f"y must be 1-D (n_samples,) of labels, got shape {y.shape}; "
                             "for one label per time step use output='sequence'")
        encoder = LabelEncoder()
        codes = encoder.fit_transform(y.ravel()).reshape(y.shape)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"y has only one class ({self.classes_[0]!r}): need at least two")
        return codes.astype(np.int64), len(self.classes_)

    def _loss(self, out, targets, weight, dout):
        return _ops.softmax_cross_entropy(out, targets.reshape(-1), weight, dout)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), in the order of classes_;
        with output="sequence", (n_samples, n_timesteps, n_classes)."""
        logits = self._forward(X)
        flat = logits.reshape(-1, logits.shape[-1])
        proba = np.empty_like(flat)
        _ops.softmax(flat, proba)
        return proba.reshape(logits.shape)

    def predict(self, X):
        """Most probable class of each sample (or of each step)."""
        return self.classes_[np.argmax(self._forward(X), axis=-1)]


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
        n_features, hidden_sizes, n_outputs, dtype, dropout = meta["network"]
        net = LSTMNetwork(n_features, hidden_sizes, n_outputs, dtype=np.dtype(dtype),
                          dropout=dropout)
    except (TypeError, ValueError) as err:
        raise damaged(err) from None
    if net.params.shape != flat.shape or net.params.dtype != flat.dtype:
        raise damaged(f"{flat.dtype} params of shape {flat.shape} do not fit the network "
                      f"({net.params.dtype}, {net.params.shape})")
    net.params[...] = flat
    fitted = {**meta["fitted"], **arrays}
    for name, value in fitted.items():
        if not _ATTRIBUTE_NAME.match(name) or hasattr(cls, name):
            raise damaged(f"bad attribute name {name!r}")
        setattr(est, name, value)
    required = {"n_features_in_", "n_timesteps_in_", "_x_ndim"}
    required |= {"classes_"} if cls is LSTMClassifier else {"_y_ndim", "n_outputs_"}
    if not required <= set(fitted):
        raise damaged(f"missing fitted attributes {sorted(required - set(fitted))}")
    if cls is LSTMClassifier and np.shape(est.classes_) != (net.n_outputs,):
        raise damaged(f"{np.size(est.classes_)} classes for a head of {net.n_outputs} outputs")
    est.network_ = net
    return est
