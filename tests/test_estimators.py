"""Estimator behaviour beyond parity: the flat buffer, pickling, verbose output, pipelines."""

import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn import neural_network as sk
from sklearn.datasets import load_digits, make_multilabel_classification
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastmlp import MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
X, y = load_digits(return_X_y=True)
X = X[:400] / 16.0
y = y[:400]


def test_coefs_and_intercepts_are_views_of_one_flat_buffer():
    clf = MLPClassifier(hidden_layer_sizes=(12, 8), max_iter=5, random_state=0).fit(X, y)
    for array in clf.coefs_ + clf.intercepts_:
        assert np.shares_memory(array, clf._params)
    assert sum(a.size for a in clf.coefs_ + clf.intercepts_) == clf._params.size
    before = clf.predict_proba(X[:5])
    clf.coefs_[0][:] = 0.0  # writing through the view changes what the model predicts
    after = clf.predict_proba(X[:5])
    assert not np.allclose(before, after)
    assert_allclose(after, np.broadcast_to(after[0], after.shape), rtol=1e-6)  # inputs ignored


def test_pickle_round_trip_keeps_predictions_and_views():
    clf = MLPClassifier(hidden_layer_sizes=(10,), max_iter=5, random_state=0).fit(X, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    clone.intercepts_[-1][:] += 100.0 * np.eye(10)[3]
    assert (clone.predict(X) == 3).all()


def test_float32_by_default_and_float64_on_request():
    clf = MLPClassifier(max_iter=3).fit(X, y)
    assert clf._params.dtype == np.float32 and clf.predict_proba(X).dtype == np.float32
    clf64 = MLPClassifier(max_iter=3, dtype="float64").fit(X, y)
    assert clf64.coefs_[0].dtype == np.float64


def test_float32_learns_as_well_as_float64():
    params = dict(hidden_layer_sizes=(32,), max_iter=60, learning_rate_init=0.01, random_state=0)
    acc32 = MLPClassifier(**params).fit(X, y).score(X, y)
    acc64 = MLPClassifier(dtype="float64", **params).fit(X, y).score(X, y)
    assert acc32 > 0.95 and abs(acc32 - acc64) < 0.02


def test_predict_log_proba_is_log_of_predict_proba():
    clf = MLPClassifier(max_iter=3, random_state=0, dtype="float64").fit(X, y)
    assert_allclose(clf.predict_log_proba(X), np.log(clf.predict_proba(X)))


def test_multilabel_predicts_an_indicator_matrix():
    Xm, Ym = make_multilabel_classification(80, 6, n_classes=4, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, learning_rate_init=0.01,
                        random_state=0).fit(Xm, Ym)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    pred = clf.predict(Xm)
    assert pred.shape == Ym.shape and set(np.unique(pred)) <= {0, 1}
    assert (pred == Ym).mean() > 0.8


def test_verbose_prints_what_sklearn_prints(capsys):
    params = dict(hidden_layer_sizes=(5,), max_iter=4, random_state=0, verbose=True,
                  early_stopping=True, n_iter_no_change=1, tol=0.5)
    sk.MLPClassifier(**params).fit(X, y)
    theirs = capsys.readouterr().out
    MLPClassifier(dtype="float64", **params).fit(X, y)
    ours = capsys.readouterr().out
    assert "Iteration 1, loss = " in ours and "Validation score:" in ours and "Stopping." in ours
    assert ours == theirs


def test_pipeline_and_grid_search():
    pipe = make_pipeline(StandardScaler(),
                         MLPClassifier(max_iter=50, learning_rate_init=0.01, random_state=0))
    search = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (16,)],
                                 "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2)
    search.fit(X, y)
    assert search.best_score_ > 0.8
    assert len(search.cv_results_["params"]) == 4


def test_feature_names_are_recorded():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X[:, :5], columns=[f"f{i}" for i in range(5)])
    reg = MLPRegressor(max_iter=3).fit(frame, y.astype(float))
    np.testing.assert_array_equal(reg.feature_names_in_, frame.columns)
    assert reg.n_features_in_ == 5


def test_regressor_multi_output_shapes():
    Y = np.column_stack([X[:, 0], X[:, 1] * 2])
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (400, 2) and reg.n_outputs_ == 2
    reg1 = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, Y[:, 0])
    assert reg1.predict(X).shape == (400,)


def test_fitting_one_estimator_from_two_threads_at_once_is_refused():
    """The second fit must not interleave with the first: it raises, and the first fit's result
    is exactly what it would have been alone."""
    import threading

    in_fit, second_done = threading.Event(), threading.Event()
    main = threading.current_thread()

    def pause_first_epoch(record):
        if threading.current_thread() is not main and record.epoch == 1:
            in_fit.set()
            second_done.wait(timeout=30)

    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0,
                        callbacks=[pause_first_epoch])
    first = threading.Thread(target=clf.fit, args=(X, y))
    first.start()
    assert in_fit.wait(timeout=60)
    try:
        with pytest.raises(RuntimeError, match="already being fitted"):
            clf.fit(X, y)
        with pytest.raises(RuntimeError, match="already being fitted"):
            clf.partial_fit(X, y, classes=np.unique(y))
    finally:
        second_done.set()
        first.join(timeout=60)
    alone = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf._params, alone._params)
    assert clf.n_iter_ == alone.n_iter_ == 3
    clf.fit(X, y)  # once the first fit is over, fitting works again


def test_a_callback_cannot_refit_its_own_estimator():
    def refit(record):
        clf.fit(X, y)

    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0, callbacks=[refit])
    with pytest.raises(RuntimeError, match="already being fitted"):
        clf.fit(X, y)
    assert "_params" not in vars(clf)  # the failed fit left the estimator unfitted
