"""Training curves with matplotlib, which is optional (pip install "fastlstm[plot]")."""


def plot_training(estimator, ax=None):
    """Plot a fitted estimator's loss_curve_ and, with early stopping, its
    validation_scores_ (on a second y axis, against the last epochs, which they
    score: a warm fit may have turned early stopping on). Returns the matplotlib Axes.
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plot_training needs matplotlib: pip install "fastlstm[plot]"') from None
    if not hasattr(estimator, "loss_curve_"):
        raise ValueError(f"{type(estimator).__name__} is not fitted: it has no loss_curve_ yet")
    if ax is None:
        _, ax = plt.subplots()
    epochs = range(1, len(estimator.loss_curve_) + 1)
    ax.plot(epochs, estimator.loss_curve_, label="training loss", color="C0")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    scores = getattr(estimator, "validation_scores_", None)
    if scores:
        score_ax = ax.twinx()
        n_epochs = len(estimator.loss_curve_)
        score_ax.plot(range(n_epochs - len(scores) + 1, n_epochs + 1), scores,
                      label="validation score", color="C1")
        score_ax.set_ylabel("validation score")
    ax.set_title(type(estimator).__name__)
    return ax
