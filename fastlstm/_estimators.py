"""LSTMRegressor and LSTMClassifier: validation, the training loop, the sklearn
protocol. The math lives in _network (layers, head) and _ops (losses, optimisers).
"""
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _ops, _stepping
from ._network import LSTMNetwork, _Arena
from ._validation import check_params, check_sequences, check_targets, resolve_dtype

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
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, clip_grad_norm=None, tol=1e-4,
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
        net = LSTMNetwork(D, sizes, n_outputs, dtype=dtype, dropout=self.dropout)
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
        soon as a batch loss is not finite (that batch's update is not applied)."""
        net = self.network_
        T, N = x_tm.shape[:2]
        sequence = self.output == "sequence"
        n_weights = net.n_weights
        total = 0.0
        # overflow on the way to a non-finite loss is expected, and reported by the caller
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, N, batch_size):
                idx = order[start:start + batch_size]
                B = len(idx)
                xb = np.take(x_tm, idx, axis=1)                    # (T, B, D)
                if sequence:
                    tb = np.take(targets, idx, axis=1)             # (T, B[, K])
                    tb = tb.reshape((T * B,) + tb.shape[2:])       # (T*B[, K]) time-major rows
                else:
                    tb = targets[idx]                              # (B[, K])
                out, tape = net.forward(xb, sequence, training=True, rng=rng, arena=arena)
                dout = arena.get("dout", out.shape)
                loss = self._loss(out, tb, optimizer.unit_weights(out.shape[0]), dout)
                net.backward(tape, dout)
                if self.alpha > 0:  # MLP's L2: 0.5 * alpha * ||W||^2 / batch size
                    loss += _ops.add_l2_penalty(net.params[:n_weights], net.grads[:n_weights],
                                                self.alpha / B)
                if not np.isfinite(loss):
                    return np.nan
                optimizer.step(net.params, net.grads)
                total += loss * B
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
        """Raw head outputs: (N, K), or (N, T, K) when output="sequence"."""
        X3 = self._check_X_predict(X)
        net = self.network_
        N, T, D = X3.shape
        sequence = self.output == "sequence"
        per_sample = T * (D + 7 * sum(net.hidden_sizes)) * net.dtype.itemsize
        chunk = int(np.clip(_PREDICT_CHUNK_BYTES // per_sample, 1, N))
        arena = _Arena(net.dtype)  # private to this call: predict is thread-safe
        outs = []
        for start in range(0, N, chunk):
            xb = np.ascontiguousarray(X3[start:start + chunk].transpose(1, 0, 2))  # (T, B, D)
            out, _ = net.forward(xb, sequence, training=False, arena=arena)
            if sequence:  # (T*B, K) time-major -> (B, T, K)
                out = out.reshape(T, -1, out.shape[1]).transpose(1, 0, 2)
            outs.append(np.array(out))
        return np.concatenate(outs, axis=0)

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
            X is (n_sequences, n_steps) of a model with one feature per step.
        state : list of (h, c) or None, default=None
            The state returned by the previous call, one (h, c) pair per LSTM
            layer, each of shape (n_sequences, hidden units of that layer).
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
        raw, state = _stepping.run(self.network_, X3, state)
        return self._step_outputs(raw), state


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
        y = check_targets(y)
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

    def _step_outputs(self, raw):
        """(N, T, K) head outputs -> predictions, K dropped if y had no output axis."""
        return raw[..., 0] if self._y_ndim == (2 if self.output == "sequence" else 1) else raw

    def forecast(self, X, n_steps):
        """Forecast n_steps ahead autoregressively from a history.

        The model predicts the next value from the history, that prediction is
        fed back as the next input, and so on; the (h, c) state is carried
        from step to step (each new step is one T=1 run of the compiled
        kernels, the history is not re-run). The model must predict as many
        values as it takes per step, e.g. a univariate next-value model trained
        on `fastlstm.datasets.make_windows`.

        Parameters
        ----------
        X : array-like of shape (n_sequences, n_timesteps, n_features)
            The history of each sequence, any length; a 2-D X is
            (n_sequences, n_timesteps) of a univariate series.
        n_steps : int
            How many steps to forecast.

        Returns
        -------
        ndarray of shape (n_sequences, n_steps), or (n_sequences, n_steps,
        n_features) if the model was fitted on y with an output axis.
        """
        preds = _stepping.forecast(self, X, n_steps)               # (n_steps, N, K)
        return self._step_outputs(np.ascontiguousarray(preds.transpose(1, 0, 2)))


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
        if y is None:
            raise ValueError("y is required to fit this estimator, got None")
        y = np.asarray(y)
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
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError("y contains NaN or infinity")
        if y.dtype.kind == "O" and any(v is None for v in y.ravel()):
            raise ValueError("y contains None")
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

    def _step_outputs(self, raw):
        """(N, T, C) logits -> class probabilities."""
        flat = raw.reshape(-1, raw.shape[-1])
        proba = np.empty_like(flat)
        _ops.softmax(flat, proba)
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
            of len(vocabulary) features, or integer codes as 1 feature).
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
        return _stepping.generate(self, seed, n_chars, vocabulary, temperature, random_state)
