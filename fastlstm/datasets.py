"""Built-in data for examples, the demo and the tests: nothing is downloaded."""
import numbers
from collections import Counter

import numpy as np


def _check_whole(name, value, low, high=None):
    """value must be an int in [low, high]: else ValueError naming it."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and low <= value and (high is None or value <= high)):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")


def noisy_sine(n_points=1000, stop=50.0, noise=0.1, random_state=0):
    """sin(t) on n_points evenly spaced t in [0, stop], plus Gaussian noise.

    Returns the series (n_points,) float32.
    """
    rng = np.random.default_rng(random_state)
    t = np.linspace(0.0, stop, n_points)
    return (np.sin(t) + rng.normal(0.0, noise, n_points)).astype(np.float32)


def make_windows(series, time_step, horizon=1, *, targets="next"):
    """Cut a series into supervised windows.

    series (n,) or (n, n_features) -> X (m, time_step, n_features) and y, with
    m = n - time_step - horizon + 1 windows, one starting at every point.

    targets="next" (default): y is the value `horizon` steps after each window,
    (m,) or (m, n_features), for a many-to-one model (output="last").
    targets="sequence": y is the window shifted by `horizon`, the value
    `horizon` steps ahead of every step, (m, time_step) or (m, time_step,
    n_features), for output="sequence"; `LSTMRegressor.forecast` carries such
    a model's state past time_step, and it keeps forecasting well there (a
    many-to-one model's forecast slides a window of time_step instead).
    """
    series = np.asarray(series)
    if series.ndim not in (1, 2):
        raise ValueError(f"series must be 1-D or 2-D (n, n_features), got {series.ndim}-D")
    _check_whole("time_step", time_step, 1)
    _check_whole("horizon", horizon, 1)
    if targets not in ("next", "sequence"):
        raise ValueError(f"targets must be 'next' or 'sequence', got {targets!r}")
    m = len(series) - time_step - horizon + 1
    if m < 1:
        raise ValueError(f"series of length {len(series)} is too short for windows of "
                         f"{time_step} steps and horizon {horizon}")
    table = series.reshape(len(series), -1)                      # (n, n_features)
    X = np.lib.stride_tricks.sliding_window_view(table[:m + time_step - 1], time_step, axis=0)
    X = np.ascontiguousarray(X.transpose(0, 2, 1))               # (m, time_step, n_features)
    if targets == "next":
        y = series[time_step + horizon - 1:]                     # (m,) or (m, n_features)
        return X, y.copy()
    window = np.arange(m)[:, None] + np.arange(time_step) + horizon   # (m, time_step) positions
    return X, series[window]                                     # (m, time_step[, n_features])


def binary_addition(n_bits=8, random_state=0):
    """Every pair a, b < 2**(n_bits - 1), in a shuffled order, as sequences.

    Returns X (n, n_bits, 2) float32, the bits of a and b least significant
    first; y (n, n_bits) int, the bits of a + b; and a, b themselves.
    n_bits is at most 12: 4**11 pairs, 4.2 million sequences (X 400 MB, and y
    as much again).
    """
    _check_whole("n_bits", n_bits, 1, 12)
    half = np.arange(2 ** (n_bits - 1))
    a, b = (v.ravel() for v in np.meshgrid(half, half))
    order = np.random.default_rng(random_state).permutation(a.size)
    a, b = a[order], b[order]
    shifts = np.arange(n_bits)
    X = np.stack([(a[:, None] >> shifts) & 1, (b[:, None] >> shifts) & 1], axis=2)
    y = ((a + b)[:, None] >> shifts) & 1
    return X.astype(np.float32), y, a, b


def adding_problem(n_samples, n_timesteps=100, random_state=0):
    """The adding problem, a long-lag task: each sequence has a value channel,
    uniform in [0, 1), and a marker channel with two 1s, one in the first 10 steps
    and one in the second half; the target is the sum of the two marked values.
    Predicting the mean (1.0) gives MSE 1/6.

    Returns X (n_samples, n_timesteps, 2) float32 and y (n_samples,) float32.
    """
    _check_whole("n_samples", n_samples, 1)
    _check_whole("n_timesteps", n_timesteps, 20)
    rng = np.random.default_rng(random_state)
    X = np.zeros((n_samples, n_timesteps, 2), np.float32)
    X[:, :, 0] = rng.uniform(0, 1, (n_samples, n_timesteps))
    rows = np.arange(n_samples)
    first = rng.integers(0, 10, n_samples)
    second = rng.integers(n_timesteps // 2, n_timesteps, n_samples)
    X[rows, first, 1] = X[rows, second, 1] = 1
    return X, X[rows, first, 0] + X[rows, second, 0]


def bits_to_int(bits):
    """(..., n_bits) least significant first -> integers (...), int64: at most
    63 bits."""
    bits = np.asarray(bits)
    if bits.ndim == 0 or bits.shape[-1] > 63:
        raise ValueError(f"bits must be (..., n_bits) with n_bits <= 63 (an int64), got "
                         f"shape {bits.shape}")
    return (bits.astype(np.int64) << np.arange(bits.shape[-1])).sum(axis=-1)


class CharVocabulary:
    """The characters of a text and their integer codes, both ways.

    Code k is ``chars[k]``. A model trained on one-hot rows of this vocabulary
    sees ``len(vocabulary)`` features per step; `LSTMClassifier.generate` takes
    the same vocabulary to turn its own samples back into input rows.

    Parameters
    ----------
    chars : str or iterable of str
        The distinct characters, in code order.

    Examples
    --------
    >>> vocab = CharVocabulary.from_text("hello")
    >>> vocab.chars
    'ehlo'
    >>> vocab.encode("hole").tolist()
    [1, 3, 2, 0]
    >>> vocab.decode([1, 3, 2, 0])
    'hole'
    >>> vocab.one_hot(vocab.encode("he")).tolist()
    [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    """

    def __init__(self, chars):
        if not isinstance(chars, str):
            chars = list(chars)
            longer = [ch for ch in chars if not (isinstance(ch, str) and len(ch) == 1)]
            if longer:           # "".join would split ["ab", "c"] into three codes
                raise ValueError(f"a vocabulary's characters must be strings of one "
                                 f"character each, got {longer[:5]!r}")
        chars = "".join(chars)
        if len(chars) == 0:
            raise ValueError("a vocabulary needs at least one character")
        if len(set(chars)) != len(chars):
            # the repeats by name, not all of chars (a whole text passed by mistake)
            repeated = "".join(sorted(ch for ch, n in Counter(chars).items() if n > 1))
            raise ValueError(f"the characters of a vocabulary must be distinct: {repeated[:20]!r}"
                             f"{' and more' if len(repeated) > 20 else ''} repeat in the "
                             f"{len(chars)} given (CharVocabulary.from_text(text) makes a "
                             "vocabulary of a text's characters)")
        self.chars = chars
        self._code = {ch: k for k, ch in enumerate(chars)}
        self._table = np.array(list(chars))                     # (V,) code -> char

    @classmethod
    def from_text(cls, text):
        """The sorted distinct characters of `text`."""
        _check_text(text)
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def __contains__(self, char):
        return char in self._code

    def __eq__(self, other):
        return isinstance(other, CharVocabulary) and other.chars == self.chars

    def __hash__(self):
        return hash(self.chars)

    def __repr__(self):
        return f"CharVocabulary({self.chars!r})"

    def encode(self, text):
        """str (n chars) -> int64 codes (n,). Raises ValueError naming any
        character outside the vocabulary."""
        _check_text(text, allow_empty=True)
        try:
            return np.fromiter((self._code[ch] for ch in text), dtype=np.int64, count=len(text))
        except KeyError:
            unknown = sorted(set(text) - set(self.chars))
            raise ValueError(f"characters outside the vocabulary: {''.join(unknown)!r} "
                             f"(the vocabulary is {self.chars!r})") from None

    def decode(self, codes):
        """int codes (n,) -> str."""
        codes = np.asarray(codes)
        if codes.ndim != 1:
            raise ValueError(f"codes must be 1-D, got shape {codes.shape}")
        if codes.size and (codes.dtype.kind not in "iu" or codes.min() < 0
                           or codes.max() >= len(self)):
            raise ValueError(f"codes must be integers in [0, {len(self)}), got {codes!r}")
        return "".join(self._table[codes.astype(np.intp)])

    def one_hot(self, codes, dtype=np.float32):
        """int codes (...) -> one-hot rows (..., V)."""
        codes = np.asarray(codes)
        if codes.size and (codes.min() < 0 or codes.max() >= len(self)):
            raise ValueError(f"codes must be integers in [0, {len(self)})")
        return np.eye(len(self), dtype=dtype)[codes]


def _check_text(text, allow_empty=False):
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text and not allow_empty:
        raise ValueError("text is empty")


def char_windows(text, seq_len, vocabulary, *, step=1, targets="next", one_hot=True):
    """Cut a text into windows of `seq_len` characters with next-character labels.

    Parameters
    ----------
    text : str
    seq_len : int
        Characters per window.
    vocabulary : CharVocabulary
        Every character of `text` must be in it.
    step : int, default=1
        Characters between the starts of consecutive windows (``step=seq_len``
        gives non-overlapping windows).
    targets : {"next", "sequence"}, default="next"
        "next": y (m,) is the character after each window, for a many-to-one
        model (``output="last"``). "sequence": y (m, seq_len) is the next
        character at every step, the window shifted by one, for
        ``output="sequence"``: with ``step=seq_len`` every character of the
        text but the first is a label once (with step=1, up to seq_len times).
    one_hot : bool, default=True
        X (m, seq_len, V) float32 one-hot rows, what the estimators take; False
        gives the integer codes (m, seq_len) instead.

    Returns
    -------
    X : ndarray (m, seq_len, V) float32, or (m, seq_len) int64
    y : ndarray (m,) or (m, seq_len) of single-character str
        Labels are the characters themselves, so a classifier's ``classes_``,
        ``predict`` and ``generate`` all speak characters.

    With m = (len(text) - seq_len - 1) // step + 1 windows: each window and its
    label(s) fit inside the text.
    """
    _check_text(text)
    _check_whole("seq_len", seq_len, 1)
    _check_whole("step", step, 1)
    if targets not in ("next", "sequence"):
        raise ValueError(f"targets must be 'next' or 'sequence', got {targets!r}")
    if len(text) < seq_len + 1:
        raise ValueError(f"text of {len(text)} characters is too short for windows of "
                         f"{seq_len} plus a label")
    codes = vocabulary.encode(text)                              # (n,)
    m = (len(text) - seq_len - 1) // step + 1
    starts = np.arange(m) * step                                 # (m,)
    window = starts[:, None] + np.arange(seq_len)                # (m, seq_len) positions
    X = codes[window]                                            # (m, seq_len)
    chars = np.array(list(text))                                 # (n,) '<U1'
    y = chars[window + 1] if targets == "sequence" else chars[starts + seq_len]
    return (vocabulary.one_hot(X) if one_hot else X), y


def pydoc_topics_text():
    """The text of Python's own help topics: a corpus that ships with Python.

    The entries of the standard library's ``pydoc_data.topics`` (what
    ``help("assert")`` and friends show), joined in the order of their keys:
    about half a million characters of English prose and code, no download.
    The exact text follows the Python version.
    """
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions package the help texts separately
        raise ImportError("this Python has no pydoc_data.topics (the help texts of the "
                          "standard library); install your distribution's full stdlib") from None
    return "\n".join(topics[key] for key in sorted(topics))
