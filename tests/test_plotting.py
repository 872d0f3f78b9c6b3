"""plot_loss_curve: the lines drawn are the model's own curves, labelled; clear errors otherwise.

Drawing tests use matplotlib's Agg backend and are skipped only where matplotlib is missing; the
missing-matplotlib error and the no-import-at-import-time rule are tested everywhere.
"""

import copy
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import fastmlp
from fastmlp.plotting import plot_loss_curve

SKIP_REASON = 'matplotlib is not installed: pip install "fastmlp[plot]"'


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib", reason=SKIP_REASON)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def fit_quietly(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a few epochs on purpose
        return model.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def early_stopped(iris):
    """A classifier with all three curves: training loss, validation loss and score."""
    model = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=6, early_stopping=True,
                                  n_iter_no_change=50, random_state=0)
    return fit_quietly(model, *iris)


def twin_of(ax):
    """The second y-axis plot_loss_curve made beside `ax`, or None."""
    twins = [other for other in ax.figure.axes
             if other is not ax and other.get_shared_x_axes().joined(ax, other)]
    assert len(twins) <= 1
    return twins[0] if twins else None


def line_data(line):
    return np.asarray(line.get_xdata()), np.asarray(line.get_ydata())


def test_lines_are_the_models_curves(plt, early_stopped):
    model = early_stopped
    ax = plot_loss_curve(model)
    epochs = np.arange(1, 7)
    train, val = ax.get_lines()
    np.testing.assert_array_equal(line_data(train)[0], epochs)
    np.testing.assert_array_equal(line_data(train)[1], model.loss_curve_)
    np.testing.assert_array_equal(line_data(val)[0], epochs)
    np.testing.assert_array_equal(line_data(val)[1], model.validation_loss_curve_)
    (score,) = twin_of(ax).get_lines()
    np.testing.assert_array_equal(line_data(score)[0], epochs)
    np.testing.assert_array_equal(line_data(score)[1], model.validation_scores_)


def test_labels_and_one_legend_for_both_axes(plt, early_stopped):
    ax = plot_loss_curve(early_stopped)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "loss")
    assert twin_of(ax).get_ylabel() == "validation accuracy"
    assert ax.get_zorder() > twin_of(ax).get_zorder()  # the legend is not drawn over
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["training loss", "validation loss", "validation accuracy"]


def test_training_loss_only_without_a_validation_set(plt, iris):
    model = fit_quietly(fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=4,
                                              random_state=0), *iris)
    ax = plot_loss_curve(model)
    (train,) = ax.get_lines()
    np.testing.assert_array_equal(line_data(train)[1], model.loss_curve_)
    assert twin_of(ax) is None
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training loss"]


def test_regressor_with_validation_data_into_a_given_ax(plt):
    X, y = make_regression(n_samples=80, n_features=4, random_state=0)
    model = fastmlp.MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    fit_quietly(model, X[:60], y[:60], validation_data=(X[60:], y[60:]))
    _, given = plt.subplots()
    ax = plot_loss_curve(model, ax=given)
    assert ax is given
    np.testing.assert_array_equal(line_data(ax.get_lines()[1])[1], model.validation_loss_curve_)
    assert twin_of(ax).get_ylabel() == "validation R²"


def test_shorter_validation_curves_belong_to_the_last_epochs(plt, early_stopped):
    model = copy.deepcopy(early_stopped)
    # As after fit() without validation, then two partial_fit calls with validation_data.
    model.validation_loss_curve_ = model.validation_loss_curve_[-2:]
    model.validation_scores_ = model.validation_scores_[-2:]
    ax = plot_loss_curve(model)
    np.testing.assert_array_equal(line_data(ax.get_lines()[1])[0], [5, 6])
    np.testing.assert_array_equal(line_data(twin_of(ax).get_lines()[0])[0], [5, 6])


def test_loaded_model_plots_the_curves_its_file_holds(plt, early_stopped, tmp_path):
    early_stopped.save(tmp_path / "m.fmlp")
    model = fastmlp.load(tmp_path / "m.fmlp")
    ax = plot_loss_curve(model)
    assert len(ax.get_lines()) == 2  # training and validation loss
    np.testing.assert_array_equal(line_data(ax.get_lines()[1])[1],
                                  early_stopped.validation_loss_curve_)
    np.testing.assert_array_equal(line_data(twin_of(ax).get_lines()[0])[1],
                                  model.validation_scores_)


def test_model_without_validation_losses(plt, early_stopped):
    model = copy.deepcopy(early_stopped)
    del model.validation_loss_curve_
    ax = plot_loss_curve(model)
    assert [line.get_label() for line in ax.get_lines()] == ["training loss"]
    np.testing.assert_array_equal(line_data(twin_of(ax).get_lines()[0])[1],
                                  model.validation_scores_)


def test_scikit_learn_model(plt, iris):
    from sklearn.neural_network import MLPClassifier

    model = fit_quietly(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0),
                        *iris)
    ax = plot_loss_curve(model)
    np.testing.assert_array_equal(line_data(ax.get_lines()[0])[1], model.loss_curve_)


# ---------------------------------------------------------------------------- errors
def test_unfitted_model_is_refused(plt):
    with pytest.raises(NotFittedError, match="not fitted yet.*before plotting its loss curve"):
        plot_loss_curve(fastmlp.MLPClassifier())


def test_lbfgs_model_has_no_curve(plt, iris):
    model = fit_quietly(fastmlp.MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs",
                                              max_iter=5, random_state=0), *iris)
    with pytest.raises(ValueError, match="no loss_curve_ to plot.*solver='lbfgs'"):
        plot_loss_curve(model)


def test_missing_matplotlib_says_how_to_install_it(monkeypatch, early_stopped):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r'pip install "fastmlp\[plot\]"'):
        plot_loss_curve(early_stopped)


def test_importing_fastmlp_does_not_import_matplotlib():
    code = ("import sys, fastmlp, fastmlp.plotting, fastmlp.cli; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
