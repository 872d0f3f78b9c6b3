"""Plots of a fitted model's training history (loss per epoch, validation loss and score).

matplotlib is an optional dependency (the ``plot`` extra): it is imported inside the functions
here, never at module level, so that ``import fastmlp`` does not import it. Nothing here trains,
changes or copies the model.
"""

import numpy as np
from sklearn.base import is_classifier
from sklearn.utils.validation import check_is_fitted

_INSTALL_HINT = 'pip install "fastmlp[plot]"'


def _curve(model, name):
    """The fitted list attribute `name` as a float array, or None when absent, None or empty."""
    values = getattr(model, name, None)
    if values is None or len(values) == 0:
        return None
    return np.asarray(values, dtype=float)


def _epochs(n_values, n_epochs):
    """Epoch numbers (1-based) of the last `n_values` of `n_epochs` epochs.

    A validation curve can be shorter than the training curve (validation_data given only to
    later partial_fit calls, say); its entries belong to the most recent epochs.
    """
    return np.arange(n_epochs - n_values + 1, n_epochs + 1)


def plot_loss_curve(model, ax=None):
    """Plot the training loss per epoch and, when recorded, the validation loss and score.

    Parameters
    ----------
    model : fitted MLPClassifier or MLPRegressor
        A model fitted with a mini-batch solver (sgd, adam, ...), which records ``loss_curve_``.
        ``validation_loss_curve_`` (fastmlp) and ``validation_scores_`` (early stopping or
        ``validation_data``) are drawn when present. A fitted scikit-learn MLP works too.
    ax : matplotlib Axes, default=None
        Axes to draw into; None makes a new figure. The validation score, when present, goes on
        a second y-axis sharing this one's x-axis (``ax.twinx()``).

    Returns
    -------
    ax : matplotlib Axes
        The axes holding the loss curves (the training loss line first).

    Raises
    ------
    ImportError
        When matplotlib is not installed.
    sklearn.exceptions.NotFittedError
        When the model is not fitted.
    ValueError
        When the model has no loss curve (fitted with ``solver="lbfgs"``, which has no epochs).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn.datasets import load_iris
    >>> from fastmlp import MLPClassifier
    >>> from fastmlp.plotting import plot_loss_curve
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(max_iter=50, early_stopping=True, random_state=0).fit(X, y)
    >>> ax = plot_loss_curve(clf)
    >>> [line.get_label() for line in ax.get_lines()]
    ['training loss', 'validation loss']
    """
    try:
        import matplotlib  # noqa: F401  (only to fail early with the install hint)
    except ImportError:
        raise ImportError(f"plot_loss_curve needs matplotlib, which is not installed: "
                          f"{_INSTALL_HINT}") from None
    check_is_fitted(model, msg=f"This {type(model).__name__} instance is not fitted yet: call "
                               "'fit' before plotting its loss curve.")
    loss = _curve(model, "loss_curve_")
    if loss is None:
        solver = getattr(model, "solver", "unknown")
        raise ValueError(f"This {type(model).__name__} has no loss_curve_ to plot: it was fitted "
                         f"with solver={solver!r}, which records no per-epoch loss. Use a "
                         "mini-batch solver ('adam', 'sgd', ...) to get a loss curve.")
    val_loss = _curve(model, "validation_loss_curve_")
    val_score = _curve(model, "validation_scores_")

    if ax is None:
        import matplotlib.pyplot as plt  # pyplot only when we must make the figure

        _, ax = plt.subplots()
    n_epochs = len(loss)
    lines = ax.plot(_epochs(n_epochs, n_epochs), loss, label="training loss")
    if val_loss is not None:
        lines += ax.plot(_epochs(len(val_loss), n_epochs), val_loss, label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if val_score is not None:
        score_name = "validation accuracy" if is_classifier(model) else "validation R²"
        twin = ax.twinx()
        # Skip the colours already used on `ax`, so the score line is told apart at a glance.
        color = f"C{len(lines)}"
        lines += twin.plot(_epochs(len(val_score), n_epochs), val_score, color=color,
                           linestyle="--", label=score_name)
        twin.set_ylabel(score_name)
        # Draw `ax` (and so its legend) above the twin, with a see-through background.
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
    # One legend for both y-axes: the twin's lines are not in ax's own legend. Losses fall and
    # scores rise, so the middle of the right-hand side is usually free when both are drawn.
    ax.legend(lines, [line.get_label() for line in lines],
              loc="best" if val_score is None else "center right")
    return ax
