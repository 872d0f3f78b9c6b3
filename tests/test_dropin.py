"""Drop-in details against scikit-learn as the oracle: verbose output line by line, divergence
under early stopping (scikit-learn issue 29504), weights assigned before the first fit,
log-probabilities, partial_fit after an early stop, and the messages of refused calls."""

import warnings

import numpy as np
import pytest
import sklearn.neural_network as sk
from numpy.testing import assert_allclose
from sklearn.datasets import load_digits, load_iris
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from fastmlp import DivergenceError, MLPClassifier, MLPRegressor

X_digits, y_digits = load_digits(n_class=4, return_X_y=True)
X_digits = X_digits[:240] / 16
y_digits = y_digits[:240]
X_iris, y_iris = load_iris(return_X_y=True)


# ----------------------------------------------------------------------------- verbose
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("verbose", [1, 2, 10])
@pytest.mark.parametrize("params", [
    dict(solver="sgd", learning_rate="adaptive", n_iter_no_change=2, tol=0.05),
    dict(solver="sgd", early_stopping=True, n_iter_no_change=2, tol=0.05),
    dict(solver="adam"),
    dict(solver="adam", early_stopping=True, n_iter_no_change=2, tol=0.05),
    dict(solver="lbfgs"),
], ids=["sgd-adaptive", "sgd-early-stopping", "adam", "adam-early-stopping", "lbfgs"])
def test_verbose_prints_what_sklearn_prints_line_by_line(params, verbose, capsys):
    common = dict(hidden_layer_sizes=(8,), max_iter=12, random_state=0, verbose=verbose,
                  **params)
    sk.MLPClassifier(**common).fit(X_digits, y_digits)
    theirs = capsys.readouterr()
    MLPClassifier(dtype="float64", **common).fit(X_digits, y_digits)
    ours = capsys.readouterr()
    assert ours.out.splitlines() == theirs.out.splitlines()
    assert ours.err == theirs.err == ""
    if params["solver"] != "lbfgs":
        assert "Iteration 1, loss = " in ours.out


def test_verbose_in_partial_fit_prints_the_epoch(capsys):
    clf = MLPClassifier(solver="sgd", hidden_layer_sizes=(4,), verbose=2, random_state=0)
    clf.partial_fit(X_digits, y_digits, classes=np.unique(y_digits))
    assert capsys.readouterr().out == "Iteration 1, loss = %.8f\n" % clf.loss_


# ----------------------------------------------------------------------------- divergence
DIVERGING = dict(hidden_layer_sizes=100, activation="identity", solver="sgd",
                 learning_rate_init=1, max_iter=20, early_stopping=True, random_state=0)


def test_divergence_under_early_stopping_matches_sklearn_up_to_the_diverged_epoch():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sk.MLPRegressor(**DIVERGING).fit(X_iris, y_iris)
    with pytest.warns(ConvergenceWarning, match="diverged.*best validation epoch"):
        ours = MLPRegressor(dtype="float64", **DIVERGING).fit(X_iris, y_iris)
    n = ours.n_iter_
    assert not np.isfinite(ours.loss_curve_[-1]) and np.isfinite(ours.loss_curve_[:-1]).all()
    assert n < DIVERGING["max_iter"]  # stopped at the diverged epoch
    # scikit-learn trains on with NaN weights; up to the diverged epoch the records agree.
    assert_allclose(ours.loss_curve_, theirs.loss_curve_[:n], rtol=1e-7)
    assert_allclose(ours.validation_scores_, theirs.validation_scores_[:n], rtol=1e-7)
    assert np.isnan(ours.validation_scores_[-1]) and isinstance(ours.validation_scores_[-1],
                                                                float)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, rel=1e-9)
    assert ours.stopped_early_
    # The best validation weights, as scikit-learn ends with.
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert_allclose(a, b, rtol=1e-7, atol=1e-12)
    assert np.isfinite(ours.predict(X_iris)).all()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # scoring huge outputs
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_never_leaves_nan_weights_even_without_restore_best_weights(dtype):
    reg = MLPRegressor(dtype=dtype, restore_best_weights=False, **DIVERGING)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        reg.fit(X_iris, y_iris)
    assert np.isfinite(reg._params).all() and reg.n_iter_ < DIVERGING["max_iter"]


def test_divergence_without_validation_set_still_raises():
    params = {**DIVERGING, "early_stopping": False}
    reg = MLPRegressor(dtype="float64", **params)
    with pytest.raises(DivergenceError, match="Solver produced non-finite parameter weights"):
        reg.fit(X_iris, y_iris)
    assert "_params" not in vars(reg)


def test_divergence_in_partial_fit_restores_the_best_weights():
    reg = MLPRegressor(dtype="float64", **{**DIVERGING, "max_iter": 200})
    X_val, y_val = X_iris[::3], y_iris[::3]
    with pytest.warns(ConvergenceWarning, match="diverged"):
        for _ in range(30):
            reg.partial_fit(X_iris, y_iris, validation_data=(X_val, y_val))
            if reg.stopped_early_:
                break
    assert reg.stopped_early_ and np.isnan(reg.validation_scores_[-1])
    assert reg.score(X_val, y_val) == pytest.approx(reg.best_validation_score_, rel=1e-9)


# ----------------------------------------------------------------------------- weights by hand
def _hand_weights(rng, units):
    coefs = [rng.normal(size=(a, b)) for a, b in zip(units[:-1], units[1:])]
    intercepts = [rng.normal(size=b) for b in units[1:]]
    return coefs, intercepts


@pytest.mark.parametrize("warm_start", [False, True])
def test_weights_assigned_before_the_first_fit_start_training_as_in_sklearn(warm_start):
    coefs, intercepts = _hand_weights(np.random.default_rng(0), [64, 5, 4])
    models = []
    for cls in (sk.MLPClassifier, MLPClassifier):
        extra = {"dtype": "float64"} if cls is MLPClassifier else {}
        clf = cls(hidden_layer_sizes=(5,), solver="sgd", random_state=0, max_iter=3,
                  warm_start=warm_start, **extra)
        clf.coefs_ = [c.copy() for c in coefs]
        clf.intercepts_ = [b.copy() for b in intercepts]
        if cls is sk.MLPClassifier:  # scikit-learn also needs its private state set by hand
            clf.n_outputs_, clf.n_layers_, clf.out_activation_ = 4, 3, "softmax"
            clf.n_iter_, clf.t_, clf.loss_curve_, clf.best_loss_ = 0, 0, [], np.inf
            clf._no_improvement_count = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if warm_start:
                clf.fit(X_digits, y_digits)
            else:
                clf.partial_fit(X_digits, y_digits, classes=np.unique(y_digits))
        models.append(clf)
    theirs, ours = models
    assert ours.n_features_in_ == 64 and ours.n_outputs_ == 4
    assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert_allclose(a, b, rtol=1e-10)


def test_weights_assigned_before_fit_are_replaced_by_a_fit_from_scratch():
    coefs, intercepts = _hand_weights(np.random.default_rng(0), [64, 5, 4])
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0, max_iter=2)
    clf.coefs_, clf.intercepts_ = coefs, intercepts
    assert clf.coefs_[0] is coefs[0]  # kept as given until a fit uses them
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict(X_digits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_digits, y_digits)
        fresh = MLPClassifier(hidden_layer_sizes=(5,), random_state=0, max_iter=2).fit(
            X_digits, y_digits)
    assert_allclose(clf._params, fresh._params)


def test_weights_assigned_before_fit_are_checked():
    coefs, intercepts = _hand_weights(np.random.default_rng(0), [64, 5, 4])
    classes = np.unique(y_digits)
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    clf.coefs_ = coefs
    with pytest.raises(ValueError, match="intercepts_ was not set"):
        clf.partial_fit(X_digits, y_digits, classes=classes)
    clf.intercepts_ = intercepts[:1]
    with pytest.raises(ValueError, match="need 2 arrays each"):
        clf.partial_fit(X_digits, y_digits, classes=classes)
    clf.intercepts_ = [intercepts[0], np.zeros(3)]
    with pytest.raises(ValueError, match=r"must have shape \(4,\)"):
        clf.partial_fit(X_digits, y_digits, classes=classes)
    assert "_params" not in vars(clf)


# ----------------------------------------------------------------------------- partial_fit
def test_partial_fit_after_an_early_stopped_fit_does_not_stop_at_once():
    clf = MLPClassifier(hidden_layer_sizes=(8,), early_stopping=True, n_iter_no_change=2,
                        tol=0.5, max_iter=50, random_state=0).fit(X_digits, y_digits)
    assert clf.stopped_early_
    clf.partial_fit(X_digits, y_digits)
    assert not clf.stopped_early_ and clf._no_improvement_count <= 1
    for _ in range(5):
        clf.partial_fit(X_digits, y_digits)
        if clf.stopped_early_:
            break
    assert clf.stopped_early_  # the stopping rule still works, after n_iter_no_change calls


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_partial_fit_with_lbfgs_is_absent_and_says_why(cls):
    est = cls(solver="lbfgs")
    assert not hasattr(est, "partial_fit")
    with pytest.raises(AttributeError, match="L-BFGS optimises over the whole data set"):
        est.partial_fit(X_iris, y_iris)
    assert hasattr(cls(solver="sgd"), "partial_fit")
    assert cls.partial_fit.__doc__.startswith("Train for one epoch")


def test_class_weight_error_prints_labels_plainly():
    clf = MLPClassifier(class_weight={0: 1.0, 7: 2.0}, max_iter=2)
    with pytest.raises(ValueError) as info:
        clf.fit(X_digits, y_digits)
    assert "labels [7] that are not among the classes [0, 1, 2, 3]" in str(info.value)
    assert "np." not in str(info.value)


# ----------------------------------------------------------------------------- log-probabilities
@pytest.mark.parametrize("target", ["multiclass", "binary", "multilabel"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_log_proba_is_computed_in_log_space(target, dtype):
    y = {"multiclass": y_digits, "binary": y_digits > 1,
         "multilabel": np.column_stack([y_digits > 1, y_digits % 2 == 0])}[target]
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_digits, y)
    # Where probabilities are representable, log_proba is log(proba).
    rtol = 1e-5 if dtype == "float32" else 1e-12
    assert_allclose(clf.predict_log_proba(X_digits), np.log(clf.predict_proba(X_digits)),
                    rtol=rtol, atol=rtol)
    # Logits of about +-200: the probabilities underflow to 0, their logs stay finite.
    clf.coefs_ = [c * 60 for c in clf.coefs_]
    with np.errstate(divide="ignore"):
        assert (clf.predict_proba(X_digits) == 0).any()
    log_proba = clf.predict_log_proba(X_digits)
    assert np.isfinite(log_proba).all() and log_proba.min() < -100
    assert log_proba.dtype == np.dtype(dtype)


# ----------------------------------------------------------------------------- to_sklearn
def test_to_sklearn_warns_about_each_training_setting_it_drops():
    clf = MLPClassifier(hidden_layer_sizes=(8,), solver="adamw", dropout=0.2,
                        class_weight="balanced", learning_rate_decay="cosine", max_iter=3,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_digits, y_digits)
    with pytest.warns(UserWarning, match="to_sklearn") as record:
        theirs = clf.to_sklearn()
    message = str(record[0].message)
    for dropped in ("solver='adamw'", "dropout=0.2", "class_weight='balanced'",
                    "learning_rate_decay='cosine'"):
        assert dropped in message
    assert theirs.solver == "adam"
    assert_allclose(theirs.predict_proba(X_digits), clf.predict_proba(X_digits), rtol=1e-5,
                    atol=1e-6)


def test_to_sklearn_is_silent_when_nothing_is_dropped():
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, dtype="float64",
                        progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_digits, y_digits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.to_sklearn()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_adagrad_needs_a_larger_learning_rate_than_the_shared_default_as_documented():
    """The docstring of learning_rate_init advises 0.01 for adagrad; the default stays
    scikit-learn's 0.001, which leaves adagrad far behind adam after the same epochs."""
    common = dict(hidden_layer_sizes=(16,), max_iter=10, random_state=0)
    default = MLPClassifier(solver="adagrad", **common).fit(X_digits, y_digits)
    advised = MLPClassifier(solver="adagrad", learning_rate_init=0.01, **common).fit(
        X_digits, y_digits)
    adam = MLPClassifier(solver="adam", **common).fit(X_digits, y_digits)
    assert MLPClassifier().learning_rate_init == sk.MLPClassifier().learning_rate_init
    assert default.loss_ > adam.loss_ > advised.loss_
    assert "solver='adagrad'" in MLPClassifier.__doc__ and "0.01" in MLPClassifier.__doc__
