"""scikit-learn citizenship: sklearn's own checks, early stopping, partial_fit,
warm_start, sample and class weights, flattened steps, threads."""
import tracemalloc

import numpy as np
import pytest
from sklearn.base import clone, is_classifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.estimator_checks import estimator_checks_generator
from threadpoolctl import threadpool_info

import fastlstm._network
from fastlstm import LSTMClassifier, LSTMRegressor, load
from fastlstm._validation import pack_sequences

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

CHECKED = dict(hidden_layer_sizes=(16,), learning_rate_init=1e-2, max_iter=100, random_state=0)
VARIANTS = [LSTMRegressor(**CHECKED), LSTMClassifier(**CHECKED),
            LSTMRegressor(cell="gru", **CHECKED),
            LSTMClassifier(cell="rnn", nonlinearity="sigmoid", **CHECKED),
            LSTMClassifier(cell="gru", bidirectional=True, **CHECKED)]
# Every variant runs every check in float64; in float32, the default, all but
# two, which compare two computations of the same values at rtol 1e-7 (a float64
# prediction of a float64 X is compared at float64's tolerance, though computed in
# float32):
# - integer weights and repeated rows add the same terms in another order: an ulp
#   apart in float32, grown to 1e-3 by 100 Adam steps on random labels; held to
#   float32's rounding by test_integer_weights_equal_repeated_samples_and_zero_ignores;
# - predicting one row at a time runs the single-sequence loop, a batch the batch
#   cell: a few ulp of float32 apart; held to that by
#   test_estimators.py::test_predict_in_chunks_equals_one_batch.
EXACT_ARITHMETIC_CHECKS = {"check_sample_weight_equivalence_on_dense_data",
                           "check_methods_subset_invariance"}


def _sklearn_checks():
    for variant in VARIANTS:
        for dtype in ("float32", "float64"):
            estimator = clone(variant).set_params(dtype=dtype)
            for estimator, check in estimator_checks_generator(estimator):
                name = check.func.__name__          # each check is partial(check, name)
                if dtype == "float32" and name in EXACT_ARITHMETIC_CHECKS:
                    continue
                # array API input (torch tensors, CuPy arrays) as arrays of their own: the
                # estimators take such input as NumPy arrays (test_torch_parity.py); the
                # check itself runs only with SCIPY_ARRAY_API=1 and skips otherwise
                if name == "check_array_api_input":
                    continue
                yield pytest.param(estimator, check, id=f"{estimator!r}-{name}".replace(" ", "")
                                   .replace("\n", ""))


def test_float32_is_the_default_of_the_checked_variants():
    assert all(variant.dtype == "float32" for variant in VARIANTS)


@pytest.mark.parametrize("estimator, check", list(_sklearn_checks()))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def sequences(n=120, T=6, D=2, seed=0, classes=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D))
    y = X[:, :, 0].sum(axis=1) - X[:, -1, D - 1]
    return (X, (y > 0).astype(int)) if classes else (X, y)


# ---- early stopping -------------------------------------------------------------

@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_early_stopping_keeps_the_best_epoch(estimator):
    X, y = sequences(classes=estimator is LSTMClassifier)
    params = dict(hidden_layer_sizes=(8,), learning_rate_init=0.05, early_stopping=True,
                  validation_fraction=0.25, n_iter_no_change=3, max_iter=60, random_state=0)
    model = estimator(**params).fit(X, y)
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ == len(model.loss_curve_)
    assert model.best_validation_score_ == max(scores)
    best_epoch = int(np.argmax(scores)) + 1
    assert best_epoch < model.n_iter_  # it ran past the best epoch and stopped
    # the same run cut at the best epoch ends with the same weights
    params["max_iter"] = best_epoch
    at_best = estimator(**params).fit(X, y)
    np.testing.assert_array_equal(model.network_.params, at_best.network_.params)


def test_early_stopping_split_is_stratified():
    X, _ = sequences(100)
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    model = LSTMClassifier(hidden_layer_sizes=(2,), early_stopping=True, validation_fraction=0.2,
                           max_iter=1, random_state=0)
    seen = {}
    original = LSTMClassifier._validation_score

    def spy(self, X3, targets, weights, lengths, parts=1):
        seen["targets"] = targets
        return original(self, X3, targets, weights, lengths, parts)

    LSTMClassifier._validation_score = spy
    try:
        model.fit(X, y)
    finally:
        LSTMClassifier._validation_score = original
    assert len(seen["targets"]) == 20 and seen["targets"].sum() == 2


# ---- partial_fit and warm_start -------------------------------------------------

@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_partial_fit_is_one_epoch_continuing_the_solver(estimator):
    X, y = sequences(classes=estimator is LSTMClassifier)
    full = estimator(hidden_layer_sizes=(5,), max_iter=3, tol=0, random_state=1).fit(X, y)
    step = estimator(hidden_layer_sizes=(5,), random_state=1)
    for k in range(3):
        step.partial_fit(X, y)
        assert step.n_iter_ == k + 1 and step.loss_ == step.loss_curve_[-1]   # as MLP's
    np.testing.assert_array_equal(step.network_.params, full.network_.params)
    assert step.loss_curve_ == full.loss_curve_ and full.loss_ == full.loss_curve_[-1]


def test_warm_start_continues_fit():
    X, y = sequences()
    full = LSTMRegressor(hidden_layer_sizes=(5,), max_iter=4, tol=0, random_state=2).fit(X, y)
    warm = LSTMRegressor(hidden_layer_sizes=(5,), max_iter=2, tol=0, warm_start=True,
                         random_state=2)
    warm.fit(X, y).fit(X, y)
    assert warm.n_iter_ == 4
    np.testing.assert_array_equal(warm.network_.params, full.network_.params)
    cold = LSTMRegressor(hidden_layer_sizes=(5,), max_iter=2, tol=0, random_state=2)
    cold.fit(X, y).fit(X, y)
    assert cold.n_iter_ == 2


def test_classifier_partial_fit_classes():
    X, y = sequences(classes=True)
    model = LSTMClassifier(hidden_layer_sizes=(4,), random_state=0)
    model.partial_fit(X[y == 0], y[y == 0], classes=[0, 1])
    assert model.classes_.tolist() == [0, 1]
    model.partial_fit(X, y)
    with pytest.raises(ValueError, match="not seen"):
        model.partial_fit(X, np.where(y == 1, 2, y))
    with pytest.raises(ValueError, match="only one class"):
        LSTMClassifier().partial_fit(X[y == 0], y[y == 0])


# ---- weights ---------------------------------------------------------------------

FULL_BATCH = dict(hidden_layer_sizes=(6,), max_iter=15, shuffle=False, batch_size=10_000,
                  tol=0, random_state=0)


@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-6, 1e-9), ("float32", 1e-5, 1e-6)])
@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_integer_weights_equal_repeated_samples_and_zero_ignores(estimator, dtype, rtol, atol):
    X, y = sequences(40, classes=estimator is LSTMClassifier)
    counts = np.random.default_rng(3).integers(0, 3, len(X))
    counts[:2] = 1                                           # keep both classes present
    params = dict(FULL_BATCH, dtype=dtype)
    weighted = estimator(**params).fit(X, y, sample_weight=counts)
    repeated = estimator(**params).fit(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    # the same sums in another order: float32 rounds the weights an ulp or two apart
    np.testing.assert_allclose(weighted.network_.params, repeated.network_.params,
                               rtol=rtol, atol=atol)
    out_w = weighted.predict_proba(X) if estimator is LSTMClassifier else weighted.predict(X)
    out_r = repeated.predict_proba(X) if estimator is LSTMClassifier else repeated.predict(X)
    np.testing.assert_allclose(out_w, out_r, rtol=rtol, atol=atol)


def test_sample_weight_changes_the_fit_and_is_checked():
    X, y = sequences(40)
    plain = LSTMRegressor(**FULL_BATCH).fit(X, y)
    weighted = LSTMRegressor(**FULL_BATCH).fit(X, y, sample_weight=np.linspace(0.1, 2, 40))
    assert not np.allclose(plain.predict(X), weighted.predict(X))
    for bad, message in [(np.full(40, np.nan), "NaN"), (-np.ones(40), "negative"),
                         (np.ones(3), "shape"), (np.zeros(40), "sums to zero")]:
        with pytest.raises(ValueError, match=message):
            LSTMRegressor(max_iter=1).fit(X, y, sample_weight=bad)
    score = plain.score(X, y, sample_weight=np.r_[np.ones(20), np.zeros(20)])
    assert score == pytest.approx(plain.score(X[:20], y[:20]))


def test_class_weight_equals_its_sample_weight():
    X, _ = sequences(60)
    y = np.r_[np.zeros(45, int), np.ones(15, int)]
    balanced = LSTMClassifier(class_weight="balanced", **FULL_BATCH).fit(X, y)
    by_hand = LSTMClassifier(**FULL_BATCH).fit(X, y, sample_weight=compute_sample_weight(
        "balanced", y))
    np.testing.assert_array_equal(balanced.network_.params, by_hand.network_.params)
    as_dict = LSTMClassifier(class_weight={0: 1.0, 1: 3.0}, **FULL_BATCH).fit(X, y)
    assert not np.array_equal(as_dict.network_.params, by_hand.network_.params)
    # scikit-learn's rule: a label the dict lacks weighs 1, a key that is no label is
    # ignored (a cross-validation fold may lack a rare class)...
    for same in ({1: 3.0}, {0: 1.0, 1: 3.0, 2: 5.0}):
        np.testing.assert_array_equal(
            LSTMClassifier(class_weight=same, **FULL_BATCH).fit(X, y).network_.params,
            as_dict.network_.params)
    # ... unless both happen: a mistyped key
    with pytest.raises(ValueError, match=r"classes, \[0\], are not in class_weight"):
        LSTMClassifier(class_weight={"1": 3.0, 1: 3.0}, max_iter=1).fit(X, y)
    for bad in ("bal", [1.0, 3.0]):
        with pytest.raises(ValueError, match="class_weight must be a dict"):
            LSTMClassifier(class_weight=bad, max_iter=1).fit(X, y)


@pytest.mark.parametrize("ragged_lengths", [False, True])
def test_per_step_labels_weigh_each_step_by_its_class(ragged_lengths):
    """With output="sequence" the loss is torch's CrossEntropyLoss(weight=...): the
    mean of each real step's loss, weighted by its own label's class weight. Checked
    on the first epoch's loss, one full batch at the initial weights."""
    X, _ = sequences(30, T=6)
    y = (np.cumsum(X[:, :, 0], axis=1) > 1).astype(int)           # (30, 6), mostly 0
    lengths = np.random.default_rng(1).integers(2, 7, 30) if ragged_lengths else np.full(30, 6)
    if ragged_lengths:
        X, y = [x[:n] for x, n in zip(X, lengths)], [t[:n] for t, n in zip(y, lengths)]
    weights = {0: 1.0, 1: 4.0}
    model = LSTMClassifier(output="sequence", class_weight=weights, alpha=0.0, dtype="float64",
                           **{**FULL_BATCH, "max_iter": 1}).fit(X, y)
    initial = LSTMClassifier(output="sequence", alpha=0.0, dtype="float64",
                             learning_rate_init=1e-300, **{**FULL_BATCH, "max_iter": 1}).fit(X, y)
    proba = initial.predict_proba(X)                               # the initial weights'
    step_loss = np.concatenate([-np.log(p[np.arange(len(t)), t]) for p, t in zip(proba, y)])
    step_weight = np.concatenate([np.vectorize(weights.get)(t) for t in y])
    expected = np.sum(step_weight * step_loss) / step_weight.sum()
    assert model.loss_curve_[0] == pytest.approx(expected, rel=1e-9)
    # the mean weight of each sample's steps, the rule before, gives another loss
    per_sample = np.concatenate([np.full(len(t), np.vectorize(weights.get)(t).mean())
                                 for t in y])
    assert abs(np.sum(per_sample * step_loss) / per_sample.sum() - expected) > 1e-3 * expected
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        LSTMClassifier(output="sequence", class_weight={0: 1.0, 1: -1.0}, max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match="weight of zero"):
        LSTMClassifier(output="sequence", class_weight={0: 0.0, 1: 0.0}, max_iter=1).fit(X, y)


def test_sequence_output_scores_per_step():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4, 1))
    y = (np.cumsum(X[:, :, 0], axis=1) > 0).astype(int)
    model = LSTMClassifier(output="sequence", hidden_layer_sizes=(8,), learning_rate_init=0.02,
                           max_iter=40, random_state=0).fit(X, y)
    assert model.score(X, y) == pytest.approx(np.mean(model.predict(X) == y))


# ---- 2-D input: flattened steps, pipelines, threads -------------------------------

def test_step_features_reads_flattened_steps():
    X, y = sequences(60, T=5, D=3)
    flat = X.reshape(60, 15)
    model3 = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    model2 = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0,
                           step_features=3).fit(flat, y)
    np.testing.assert_array_equal(model2.network_.params, model3.network_.params)
    np.testing.assert_array_equal(model2.predict(flat), model3.predict(X))
    assert model2.n_features_in_ == 15 and model2.n_timesteps_in_ == 5
    with pytest.raises(ValueError, match="multiple of step_features"):
        LSTMRegressor(step_features=4, max_iter=1).fit(flat, y)
    # step reads the layout predict reads (and 3-D steps too), of any length
    stepped, state = model3.step(X)
    for steps in (flat, X):
        np.testing.assert_array_equal(model2.step(steps)[0], stepped)
    np.testing.assert_array_equal(model2.step(flat[:, 6:], model2.step(flat[:, :6])[1])[1][0][0],
                                  state[0][0])                # 2 steps, then 3
    with pytest.raises(ValueError, match="14 columns, not a multiple of step_features=3"):
        model2.step(flat[:, :14])
    per_step = LSTMRegressor(hidden_layer_sizes=(4,), output="sequence", max_iter=2,
                             step_features=3, random_state=0).fit(flat, X[:, :, :])
    np.testing.assert_array_equal(per_step.forecast(flat[:2], 4),
                                  per_step.forecast(X[:2], 4))
    pipe = Pipeline([("scale", StandardScaler()),
                     ("lstm", LSTMRegressor(hidden_layer_sizes=(4,), step_features=3,
                                            max_iter=3, random_state=0))])
    assert pipe.fit(flat, y).predict(flat).shape == (60,)


def test_gridsearch_in_parallel_matches_serial():
    X, y = sequences(80, T=6, D=1)
    X2 = X[:, :, 0]                                          # (n, T): univariate, 2-D
    pipe = Pipeline([("scale", StandardScaler()),
                     ("lstm", LSTMRegressor(max_iter=10, random_state=0))])
    grid = {"lstm__hidden_layer_sizes": [(2,), (12,)], "lstm__learning_rate_init": [1e-3, 2e-2]}
    serial = GridSearchCV(pipe, grid, cv=2, n_jobs=1).fit(X2, y)
    parallel = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X2, y)
    assert parallel.best_params_ == serial.best_params_
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"], rtol=1e-5)


def test_n_jobs_limits_blas_threads(monkeypatch):
    seen = []
    forward = fastlstm._network.LSTMNetwork.forward

    def spy(self, *args, **kwargs):
        seen.append({info["num_threads"] for info in threadpool_info()
                     if info["user_api"] == "blas"})
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(fastlstm._network.LSTMNetwork, "forward", spy)
    X, y = sequences(20)
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1, n_jobs=1).fit(X, y)
    model.predict(X)
    assert seen and all(threads == {1} for threads in seen)
    with pytest.raises(ValueError, match="n_jobs"):
        LSTMRegressor(n_jobs=0).fit(X, y)


def test_plot_training(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from fastlstm.plotting import plot_training

    X, y = sequences()
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=5, early_stopping=True,
                          random_state=0).fit(X, y)
    ax = plot_training(model)
    assert len(ax.lines) == 1 and len(ax.figure.axes) == 2      # loss + validation axis
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), model.loss_curve_)
    ax.figure.savefig(tmp_path / "curve.png")
    with pytest.raises(ValueError, match="not fitted"):
        plot_training(LSTMRegressor())
    # early stopping turned on in a warm fit: its scores are of the last epochs
    model.set_params(early_stopping=False, warm_start=True, max_iter=2).fit(X, y)
    model.set_params(early_stopping=True).fit(X, y)
    scores = plot_training(model).figure.axes[1].lines[0]
    n = model.n_iter_
    np.testing.assert_array_equal(scores.get_xdata(), [n - 1, n])


# ---- sequences of several lengths ----------------------------------------------

def ragged(n=40, D=2, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, n)
    return [rng.standard_normal((L, D)) for L in lengths], lengths


def test_list_of_sequences_many_to_one():
    X, lengths = ragged()
    y = np.array([seq[:, 0].sum() for seq in X])
    # float64: padded and alone run the same sums, to its last bits
    model = LSTMRegressor(hidden_layer_sizes=(8,), learning_rate_init=0.02, max_iter=60,
                          dtype="float64", random_state=0).fit(X, y)
    assert model.n_timesteps_in_ is None
    pred = model.predict(X)
    assert pred.shape == (40,) and model.score(X, y) > 0.5
    # each sequence alone (no padding at all) gives the same prediction
    alone = [model.predict(seq[None])[0] for seq in X[:6]]
    np.testing.assert_allclose(pred[:6], alone, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="different numbers of features"):
        model.predict([np.zeros((3, 2)), np.zeros((2, 3))])
    with pytest.raises(ValueError, match="length 0"):
        model.predict([np.zeros((3, 2)), np.zeros((0, 2))])


def test_list_of_sequences_per_step_classifier():
    X, lengths = ragged(60, D=1, seed=1)
    y = [(np.cumsum(seq[:, 0]) > 0).astype(int) for seq in X]
    model = LSTMClassifier(output="sequence", hidden_layer_sizes=(8,), learning_rate_init=0.02,
                           max_iter=40, random_state=0).fit(X, y)
    pred = model.predict(X)
    assert [len(p) for p in pred] == list(lengths)
    assert model.score(X, y) > 0.8
    for seq, p in list(zip(X, pred))[:5]:
        np.testing.assert_array_equal(model.predict(seq[None])[0], p)
    with pytest.raises(ValueError, match="steps"):
        model.fit(X, [t[:-1] if len(t) > 1 else t[:0] for t in y])


@pytest.mark.parametrize("output", ["last", "sequence"])
def test_batches_of_sequences_run_to_their_own_longest_not_the_datas(monkeypatch, output):
    """One long sequence among short ones: each training batch, and each predict
    batch (of similar lengths), runs as many steps as its longest sequence, not
    the data's longest; every sequence still predicts as it does alone. (All
    batches ran 40 steps: 21x torch's time for a fit, 65x for a predict, with
    one sequence of 2,000 steps among 20,000 of 5.)"""
    rng = np.random.default_rng(0)
    lengths = np.full(31, 3)
    lengths[17] = 40
    X = [rng.standard_normal((L, 2)) for L in lengths]
    y = ([rng.standard_normal(L) for L in lengths] if output == "sequence"
         else rng.standard_normal(31))
    steps_run = []
    real_forward = fastlstm._network.LSTMNetwork.forward

    def forward(self, x, *args, **kwargs):
        steps_run.append(x.shape[0])                       # x (T, B, D)
        return real_forward(self, x, *args, **kwargs)

    monkeypatch.setattr(fastlstm._network.LSTMNetwork, "forward", forward)
    model = LSTMRegressor(hidden_layer_sizes=(4,), output=output, batch_size=8, max_iter=1,
                          dtype="float64", random_state=0).fit(X, y)
    assert sorted(steps_run) == [3, 3, 3, 40]             # 4 batches, the long one in one
    steps_run.clear()
    # 31 sequences make one batch (under 64 rows a batch costs about its steps,
    # whatever its rows); test_a_list_of_sequences_is_never_padded_as_a_whole has more
    pred = model.predict(X)
    assert steps_run == [40]
    steps_run.clear()
    # a predict budget of 30 padded steps (a step's scratch: D + 7 x 4 units, float64)
    monkeypatch.setattr(fastlstm._estimators, "_PREDICT_CHUNK_BYTES", 30 * (2 + 7 * 4) * 8)
    for got, expected in zip(model.predict(X), pred):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    assert steps_run == [3, 3, 3, 40]                     # 10 + 10 + 10 short ones
    alone = [model.predict(seq[None])[0] for seq in X]
    for got, expected in zip(pred, alone):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def sorted_ragged(seed=0, n=24):
    """n sequences (T_i, 2), shortest first, and their per-step running sums."""
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((L, 2)) for L in np.sort(rng.integers(2, 9, n))]
    return X, [np.cumsum(x[:, 0]) for x in X]


def test_padded_steps_add_nothing_to_a_per_step_regression_loss():
    """output='sequence' on sequences of several lengths: the first epoch's loss
    (a learning rate too small to move a weight) is half the mean squared error
    over the real steps only."""
    X, y = sorted_ragged()
    model = LSTMRegressor(hidden_layer_sizes=(4,), output="sequence", max_iter=1, alpha=0.0,
                          solver="sgd", momentum=0.0, learning_rate_init=1e-300, shuffle=False,
                          batch_size=1000, dtype="float64", random_state=0).fit(X, y)
    squares = np.concatenate([(p - t) ** 2 for p, t in zip(model.predict(X), y)])
    assert model.loss_curve_[0] == pytest.approx(0.5 * squares.mean(), rel=1e-9)


def test_early_stoppings_score_is_scores():
    """The validation score weighs samples as score(X, y, sample_weight) does, and
    on sequences of several lengths scores their real steps only."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5, 2))
    y = X[:, :, 0].sum(axis=1)
    w = rng.uniform(0, 3, 40)
    model = LSTMRegressor((4,), max_iter=3, dtype="float64", random_state=0).fit(X, y)
    assert model._validation_score(X, y, w, None) == pytest.approx(
        model.score(X, y, sample_weight=w), rel=1e-12)
    assert model.score(X, y, sample_weight=w) != pytest.approx(model.score(X, y), rel=1e-6)
    X, y = sorted_ragged()
    model = LSTMRegressor((4,), output="sequence", max_iter=3, dtype="float64",
                          random_state=0).fit(X, y)
    X3, lengths = pack_sequences(X, np.float64)
    targets = np.full(X3.shape[:2], 1e3)                  # padding: must not be scored
    for n, t in enumerate(y):
        targets[n, :len(t)] = t
    assert model._validation_score(X3, targets, np.ones(len(X)), lengths) == pytest.approx(
        model.score(X, y), rel=1e-12)


def test_score_of_sequences_of_several_lengths_weighs_each_samples_steps():
    """A sample's weight counts on every one of its real steps."""
    X, y = sorted_ragged()
    labels = [(t > 0).astype(int) for t in y]
    model = LSTMClassifier((4,), output="sequence", max_iter=3, dtype="float64",
                           random_state=0).fit(X, labels)
    w = np.random.default_rng(1).uniform(0, 3, len(X))
    hits = np.concatenate([p == t for p, t in zip(model.predict(X), labels)])
    step_w = np.concatenate([np.full(len(t), wi) for t, wi in zip(labels, w)])
    assert model.score(X, labels, sample_weight=w) == pytest.approx(
        np.sum(hits * step_w) / step_w.sum(), rel=1e-12)
    assert not hits.all()                      # else any weights would give the same


def test_a_list_of_sequences_is_never_padded_as_a_whole():
    """fit (with and without early stopping) and predict pad each batch of a list
    as they take it, to the batch's own longest: one long sequence among many
    short ones costs its own steps, not the list padded to it (here 26 MB, twice
    in a fit; 20,000 sequences of 5 steps and one of 2,000 took 2.8 GB to fit).
    predict runs the long one alone, not with 400 short ones padded to it."""
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((3, 4), dtype=np.float32) for _ in range(400)]
    X.append(rng.standard_normal((4000, 4), dtype=np.float32))
    y = rng.standard_normal(401)
    padded_bytes = 401 * 4000 * 4 * 4
    params = dict(hidden_layer_sizes=(2,), batch_size=8, max_iter=1, random_state=0)
    LSTMRegressor(**params).fit(X[-12:], y[-12:]).predict(X[-12:])  # first-call allocations
    for early_stopping in (False, True):
        tracemalloc.start()
        try:
            model = LSTMRegressor(**params, early_stopping=early_stopping).fit(X, y)
            fit_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            pred = model.predict(X)
            predict_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert fit_peak < padded_bytes / 4 and predict_peak < padded_bytes / 4
        np.testing.assert_allclose(pred[-1], model.predict(X[-1][None])[0], rtol=1e-5)


@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_per_step_predictions_of_a_list_are_never_padded_as_a_whole(estimator):
    """output='sequence' on a list: predict (and predict_proba) build each
    sequence's steps only, not N x T_max of them (here 6.4 MB per output, twice
    and more in the classifier), and return views of those."""
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((3, 1), dtype=np.float32) for _ in range(400)]
    X.append(rng.standard_normal((4000, 1), dtype=np.float32))
    if estimator is LSTMClassifier:
        y = [rng.integers(0, 4, len(x)) for x in X]
    else:
        y = [rng.standard_normal(len(x)) for x in X]
    model = estimator(hidden_layer_sizes=(2,), output="sequence", batch_size=8, max_iter=1,
                      random_state=0).fit(X, y)
    padded_bytes = 401 * 4000 * 4
    methods = [model.predict] + ([model.predict_proba] if estimator is LSTMClassifier else [])
    for method in methods:
        method(X[-12:])                                              # first-call allocations
        tracemalloc.start()
        try:
            pred = method(X)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < padded_bytes / 4
        assert [len(p) for p in pred] == [len(x) for x in X]
        for n in (0, 400):
            np.testing.assert_allclose(pred[n], method(X[n][None])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_early_stopping_on_a_list_of_per_step_targets(estimator):
    """The validation sequences may all be shorter than the training ones: their
    scores still read the real steps (a crash, when the longest trained)."""
    X = [np.full((2, 1), k / 10) for k in range(9)] + [np.ones((9, 1))]
    targets = [np.arange(len(x)) % 2 for x in X]
    extra = dict(class_weight="balanced") if estimator is LSTMClassifier else {}
    for seed in range(3):                     # the long one in training, in validation
        model = estimator(output="sequence", early_stopping=True, validation_fraction=0.2,
                          max_iter=2, random_state=seed, **extra).fit(X, targets)
        assert len(model.validation_scores_) == 2
        assert np.isfinite(model.validation_scores_).all()


def test_a_list_of_sequences_names_the_sequence_that_is_not_finite():
    X = [np.zeros((3, 2)), np.zeros((2, 2)), np.zeros((4, 2))]
    X[2][1, 0] = np.nan
    model = LSTMRegressor(hidden_layer_sizes=(2,), max_iter=1)
    with pytest.raises(ValueError, match=r"X\[2\] contains NaN"):
        model.fit(X, np.zeros(3))
    X[2][1, 0] = 1e300
    with pytest.raises(ValueError, match=r"X\[2\] contains infinity, or values too large "
                                         "for float32"):
        model.fit(X, np.zeros(3))
    model.set_params(dtype="float64").fit(X, np.zeros(3))   # finite in float64
    assert model.network_.dtype == np.float64


def test_a_refit_that_raises_leaves_the_fitted_model_as_it_was():
    X, y = sequences(40)
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    before, n_iter = model.predict(X), model.n_iter_
    with pytest.raises(ValueError, match="shape"):            # found after the new network
        model.fit(X, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="tbptt_steps"):
        model.set_params(bidirectional=True, tbptt_steps=2).fit(X, y)
    model.set_params(bidirectional=False, tbptt_steps=None)
    np.testing.assert_array_equal(model.predict(X), before)
    assert model.n_iter_ == n_iter and not model.network_.bidirectional
    X, labels = sequences(40, classes=True)
    classifier = LSTMClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    classes = classifier.fit(X, labels).classes_.copy()
    with pytest.raises(ValueError, match="shape"):
        classifier.fit(X, np.arange(40) % 3 + 7, sample_weight=np.ones(3))
    np.testing.assert_array_equal(classifier.classes_, classes)


def test_early_stopping_turned_on_in_a_warm_fit_and_off_in_a_new_one():
    X, y = sequences(60)
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2, warm_start=True,
                          random_state=0).fit(X, y)
    assert not hasattr(model, "validation_scores_")
    model.set_params(early_stopping=True).fit(X, y)
    assert len(model.validation_scores_) == 2 and model.n_iter_ == 4
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        model.partial_fit(X, y)                               # one epoch: nothing to stop
    model.fit(X, y)
    assert len(model.validation_scores_) == 4 and model.n_iter_ == 6
    model.set_params(early_stopping=False).fit(X, y)          # warm: epochs without scores
    assert not hasattr(model, "validation_scores_") and model.n_iter_ == 8
    model.set_params(early_stopping=True).fit(X, y)
    assert len(model.validation_scores_) == 2
    model.set_params(warm_start=False, early_stopping=False).fit(X, y)
    assert not hasattr(model, "validation_scores_") and not hasattr(model,
                                                                    "best_validation_score_")


def test_a_warm_fit_holds_out_the_same_validation_samples(monkeypatch):
    """The split is drawn from random_state on every fit, as MLP's: with an int,
    a warm fit scores the same samples as the fit before, so its
    best_validation_score_ stays the bar to beat."""
    X, y = sequences(60)
    held_out = []
    split = LSTMRegressor._split_validation

    def spy(self, *args):
        parts = split(self, *args)
        held_out.append(parts[-1][0])                          # the validation X3
        return parts

    monkeypatch.setattr(LSTMRegressor, "_split_validation", spy)
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2, early_stopping=True,
                          warm_start=True, random_state=3).fit(X, y)
    model.fit(X, y)
    LSTMRegressor(**{**model.get_params(), "random_state": 4}).fit(X, y)
    np.testing.assert_array_equal(held_out[1], held_out[0])
    assert not np.array_equal(held_out[2], held_out[0])


@pytest.mark.parametrize("estimator", [LSTMRegressor, LSTMClassifier])
def test_a_refit_with_early_stopping_trains_as_the_first_fit(estimator):
    """A new fit scores anew: the old fit's best validation score is no bar to it
    (else no epoch improves and it ends on its initial weights)."""
    X, y = sequences(80, classes=estimator is LSTMClassifier)
    model = estimator(hidden_layer_sizes=(6,), early_stopping=True, max_iter=8,
                      learning_rate_init=1e-2, dtype="float64", random_state=0)
    first = model.fit(X, y).network_.params.copy()
    scores = list(model.validation_scores_)
    model.fit(X, y)
    np.testing.assert_array_equal(model.network_.params, first)
    assert model.validation_scores_ == scores and len(scores) == model.n_iter_


def test_balanced_class_weights_count_samples_by_their_weight():
    """As LogisticRegression's: a zero weight ignores a sample and an integer one
    repeats it in the class counts too."""
    X, _ = sequences(40)
    y = (X[:, -1, 0] > 0.5).astype(int)                         # imbalanced
    params = dict(hidden_layer_sizes=(4,), class_weight="balanced", dtype="float64",
                  max_iter=5, shuffle=False, batch_size=1000, alpha=0.0, random_state=0)
    plain = LSTMClassifier(**params).fit(X, y).network_.params
    extra = np.random.default_rng(1).standard_normal((20,) + X.shape[1:])
    ignored = LSTMClassifier(**params).fit(np.r_[X, extra], np.r_[y, np.zeros(20, int)],
                                           sample_weight=np.r_[np.ones(40), np.zeros(20)])
    np.testing.assert_allclose(ignored.network_.params, plain, rtol=1e-9, atol=1e-12)
    twice = np.arange(40) < 10
    repeated = LSTMClassifier(**params).fit(np.r_[X, X[twice]], np.r_[y, y[twice]])
    weighted = LSTMClassifier(**params).fit(X, y, sample_weight=1.0 + twice)
    np.testing.assert_allclose(weighted.network_.params, repeated.network_.params,
                               rtol=1e-9, atol=1e-12)


def test_n_jobs_minus_one_counts_the_cores_this_process_may_use(monkeypatch):
    from fastlstm import _threads
    from fastlstm._estimators import _thread_limit
    monkeypatch.setattr(_threads, "_cpu_count", 1)               # as under taskset -c 0
    net = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=1).fit(*sequences(10)).network_
    assert _thread_limit(-1, 64, net).n == 1 and _thread_limit(-2, 64, net).n == 1


def test_each_warm_fit_counts_its_own_epochs_without_improvement():
    X, y = sequences(40)
    # tol so large that no epoch improves but the first (on an infinite best loss):
    # each fit stops after n_iter_no_change epochs without improvement
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=5, tol=1e9, n_iter_no_change=2,
                          warm_start=True, random_state=0)
    for learning_rate, epochs_so_far in ((1e-2, 3), (3e-3, 5), (1e-3, 7)):
        model.set_params(learning_rate_init=learning_rate).fit(X, y)
        assert model.n_iter_ == epochs_so_far


def test_early_stopping_needs_two_validation_samples_for_r2():
    X, y = sequences(60)
    # ceil(0.01 * 60) = 1 sample: its R^2 is NaN, so no epoch could score best
    with pytest.raises(ValueError, match="1 validation and 59 training"):
        LSTMRegressor(early_stopping=True, validation_fraction=0.01, max_iter=2).fit(X, y)
    model = LSTMRegressor(hidden_layer_sizes=(4,), early_stopping=True, validation_fraction=0.03,
                          max_iter=2, random_state=0).fit(X, y)      # 2 samples
    assert np.isfinite(model.validation_scores_).all()


def test_a_warm_fit_refuses_a_new_dtype_output_or_y_shape_and_takes_a_new_dropout():
    X, y = sequences(40)
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=1, warm_start=True, random_state=0)
    model.fit(X, y)
    for change in ({"dtype": "float64"}, {"output": "sequence"}):
        name = next(iter(change))
        with pytest.raises(ValueError, match=f"{name} changed from"):
            model.set_params(**change).fit(X, y)
        model.set_params(**{name: LSTMRegressor().get_params()[name]})
    with pytest.raises(ValueError, match="2-D, but the model was fitted on 1-D y"):
        model.fit(X, y[:, None])
    model.set_params(dtype=None).fit(X.astype(np.float64), y)      # follows the network
    assert model.network_.dtype == np.float32
    model.set_params(dropout=0.5).fit(X, y)
    assert model.network_.dropout == 0.5


def test_predict_step_and_forecast_read_output_and_step_features_as_fitted(tmp_path):
    X, y = sequences(30)                                          # (30, 6, 2), (30,)
    X1 = X[:, :, :1]                                              # (30, 6, 1)
    model = LSTMRegressor(hidden_layer_sizes=(4,), output="sequence", max_iter=2,
                          random_state=0).fit(X1, X1.cumsum(axis=1))
    pred, (stepped, _) = model.predict(X1), model.step(X1)
    carried = model.forecast(X1[:2], 3)          # (2, 3, 1): state carried, as fitted
    model.set_params(output="last")                               # not refitted
    np.testing.assert_array_equal(model.predict(X1), pred)
    np.testing.assert_array_equal(model.step(X1)[0], stepped)
    np.testing.assert_array_equal(model.forecast(X1[:2], 3), carried)
    with pytest.raises(ValueError, match="output changed from 'sequence' to 'last'"):
        model.set_params(warm_start=True).fit(X1, X1.cumsum(axis=1))
    model.save(tmp_path / "m.fastlstm")
    np.testing.assert_array_equal(load(tmp_path / "m.fastlstm").predict(X1), pred)
    flat = X.reshape(30, -1)                                      # 6 steps x 2 features
    steps = LSTMRegressor(hidden_layer_sizes=(4,), step_features=2, max_iter=2,
                          random_state=0).fit(flat, y)
    before = steps.predict(flat)
    steps.set_params(step_features=None)
    np.testing.assert_array_equal(steps.predict(flat), before)
    with pytest.raises(ValueError, match="step_features changed from 2 to None"):
        steps.set_params(warm_start=True).fit(flat, y)


@pytest.mark.parametrize("first, then", [("adam", "sgd"), ("sgd", "adam")])
def test_a_warm_fit_with_another_solver_starts_its_state_afresh(tmp_path, first, then):
    X, y = sequences(60)
    model = LSTMRegressor(hidden_layer_sizes=(4,), solver=first, max_iter=2, warm_start=True,
                          dtype="float64", random_state=0).fit(X, y)
    model.save(tmp_path / "m.fastlstm")                        # no solver state in the file
    fresh = load(tmp_path / "m.fastlstm")
    for est in (model, fresh):
        est.set_params(solver=then, learning_rate_init=1e-4, shuffle=False, max_iter=1)
        est.fit(X, y)
    np.testing.assert_allclose(model.network_.params, fresh.network_.params, rtol=1e-12)


def test_a_model_fitted_on_a_list_reads_any_list_of_sequences_as_one():
    rng = np.random.default_rng(0)
    X = [rng.standard_normal(L) for L in (3, 5, 4, 6, 5, 2)]     # univariate, 1-D each
    y = np.array([seq.sum() for seq in X])
    model = LSTMRegressor(hidden_layer_sizes=(4,), max_iter=2, dtype="float64",
                          random_state=0).fit(X, y)
    pred = model.predict(X)
    # one sequence, or several of one length, are still univariate sequences
    np.testing.assert_allclose(model.predict([X[0]]), pred[:1], rtol=1e-12)
    np.testing.assert_allclose(model.predict([X[1], X[4]]), pred[[1, 4]], rtol=1e-12)
    per_step = LSTMRegressor(hidden_layer_sizes=(4,), output="sequence", max_iter=2,
                             random_state=0).fit(X, [np.cumsum(seq) for seq in X])
    out = per_step.predict([X[1], X[4]])                       # a list, as for any lengths
    assert isinstance(out, list) and [o.shape for o in out] == [(5,), (5,)]


def test_an_object_array_or_series_of_sequences_reads_as_a_list():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    X = [rng.standard_normal((L, 2)) for L in (3, 5, 4, 6)]
    y = [np.cumsum(seq[:, 0]) for seq in X]
    as_objects = np.empty(len(X), dtype=object)                # np.array(X, dtype=object)
    as_objects[:] = X
    y_objects = np.empty(len(y), dtype=object)
    y_objects[:] = y
    params = dict(hidden_layer_sizes=(4,), output="sequence", max_iter=2, dtype="float64",
                  random_state=0)
    from_list = LSTMRegressor(**params).fit(X, y)
    from_objects = LSTMRegressor(**params).fit(as_objects, y_objects)
    np.testing.assert_array_equal(from_objects.network_.params, from_list.network_.params)
    for seqs in (as_objects, pd.Series(X)):                    # a DataFrame column of arrays
        for got, expected in zip(from_objects.predict(seqs), from_list.predict(X)):
            assert got.dtype == np.float64                     # float64 sequences' type
            np.testing.assert_array_equal(got, expected)
    follows = LSTMRegressor(**{**params, "dtype": None}).fit(pd.Series(X), y_objects)
    assert follows.network_.dtype == np.float64


def test_predict_log_proba_and_partial_fit_refusing_balanced_weights():
    X, y = sequences(40, classes=True)
    model = LSTMClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)
    np.testing.assert_allclose(np.exp(model.predict_log_proba(X)), model.predict_proba(X),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="partial_fit does not see"):
        LSTMClassifier(class_weight="balanced").partial_fit(X, y, classes=np.unique(y))


def test_messages_name_values_plainly_and_explain_2d_steps():
    X, y = sequences(40)
    with pytest.raises(ValueError, match=r"only one class \(0\.0\): need"):
        LSTMClassifier(max_iter=1).fit(X, np.zeros(40))
    with pytest.raises(ValueError, match=r"not in classes: \[9\]"):
        LSTMClassifier(max_iter=1).partial_fit(X, np.arange(40) % 2 * 9, classes=[0, 1])
    model = LSTMRegressor(hidden_layer_sizes=(3,), max_iter=1).fit(X[:, :, 0], y)
    with pytest.raises(ValueError, match="expecting 6 features as input. A 2-D X holds 6 time "
                                         "steps of one feature each"):
        model.predict(X[:, :4, 0])


def test_targets_far_from_zero_train_through_a_target_scaler():
    """float32 holds y to ~7 digits: y = 1e6 + a signal of spread 0.1 keeps only a
    few levels of it; centred and scaled by TransformedTargetRegressor (as the README
    advises) it trains as well as the signal alone."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.metrics import r2_score

    X, signal = sequences(120)
    signal = 0.1 * signal / np.abs(signal).max()
    y = 1e6 + signal
    assert len(np.unique(y.astype(np.float32))) < 40           # what float32 keeps of y
    params = dict(hidden_layer_sizes=(8,), learning_rate_init=0.02, max_iter=60, random_state=0)
    scaled = TransformedTargetRegressor(LSTMRegressor(**params), transformer=StandardScaler())
    pred = scaled.fit(X, y).predict(X)
    alone = LSTMRegressor(**params).fit(X, signal / signal.std()).score(X, signal / signal.std())
    assert pred.dtype == np.float64
    assert r2_score(y, pred) > 0.9 * alone > 0.5


@pytest.mark.parametrize("variant", VARIANTS[:2])
def test_dataframe_columns_are_kept_and_checked(variant):
    pd = pytest.importorskip("pandas")
    from sklearn.utils.estimator_checks import check_dataframe_column_names_consistency

    check_dataframe_column_names_consistency(type(variant).__name__, clone(variant))
    X, y = sequences(40, T=4, D=1, classes=is_classifier(variant))
    frame = pd.DataFrame(X[:, :, 0], columns=[f"t{i}" for i in range(4)])
    model = clone(variant).set_params(max_iter=2).fit(frame, y)
    np.testing.assert_array_equal(model.feature_names_in_, ["t0", "t1", "t2", "t3"])
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        model.predict(X[:, :, 0])
    with pytest.raises(ValueError, match="same order"):
        model.predict(frame[frame.columns[::-1]])
    assert not hasattr(model.fit(X, y), "feature_names_in_")   # a new fit on arrays
