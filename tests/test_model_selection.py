"""fastmlp.model_selection's searches give scikit-learn's own searches' results (the oracle: the
same search run by scikit-learn over the same fastmlp estimator), while training each fold's
candidates with one fit_many call, and fall back to scikit-learn's search where they cannot."""

import re
import warnings

import numpy as np
import pytest
import sklearn
from scipy.stats import loguniform
from sklearn import model_selection as skms
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import (
    ConvergenceWarning,
    FitFailedWarning,
    NotFittedError,
    UnsetMetadataPassedError,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import make_scorer, mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

import fastmlp
import fastmlp.model_selection as ms
from fastmlp import MLPClassifier, MLPRegressor

rng = np.random.RandomState
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

X, y = make_classification(n_samples=120, n_features=5, n_informative=3, random_state=0)
XR, yR = make_regression(n_samples=120, n_features=5, random_state=0)
GROUPS = np.arange(len(X)) % 7
LOSS = "neg_log_loss"  # continuous, so that any difference in the networks shows


def net(dtype="float64", cls=MLPClassifier, **params):
    return cls(hidden_layer_sizes=(6,), max_iter=3, random_state=0, dtype=dtype, **params)


@pytest.fixture
def calls(monkeypatch):
    """Counts fit_many calls (with their sizes) and fresh fits made outside fit_many."""
    record = {"fit_many": [], "fresh": 0}
    real_fit_many, real_fresh = ms.fit_many_timed, ms._Pretrained.fresh

    def counting_fit_many(estimators, *args, **kwargs):
        record["fit_many"].append(len(estimators))
        record["n_jobs"] = kwargs["n_jobs"]
        return real_fit_many(estimators, *args, **kwargs)

    def counting_fresh(self, params):
        record["fresh"] += 1
        return real_fresh(self, params)

    monkeypatch.setattr(ms, "fit_many_timed", counting_fit_many)
    monkeypatch.setattr(ms._Pretrained, "fresh", counting_fresh)
    return record


def assert_same_results(ours, theirs, X_check=X):
    a, b = ours.cv_results_, theirs.cv_results_
    assert list(a) == list(b)
    for key in b:
        if key.endswith("_time"):
            assert a[key].shape == b[key].shape and np.all(a[key] >= 0), key
        elif key == "params":
            assert a[key] == b[key]
        elif isinstance(b[key], np.ma.MaskedArray):
            assert a[key].dtype == b[key].dtype, key
            np.testing.assert_array_equal(np.ma.getmaskarray(a[key]), np.ma.getmaskarray(b[key]))
            assert list(a[key].compressed()) == list(b[key].compressed()), key
        elif b[key].dtype.kind == "f":
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for name in ("best_index_", "best_params_", "best_score_", "n_splits_", "multimetric_"):
        assert (getattr(ours, name, None) == getattr(theirs, name, None)
                or np.isnan(getattr(ours, name))), name
    assert hasattr(ours, "best_estimator_") == hasattr(theirs, "best_estimator_")
    if hasattr(theirs, "best_estimator_"):
        assert type(ours.best_estimator_) is type(theirs.best_estimator_)
        np.testing.assert_array_equal(ours.predict(X_check), theirs.predict(X_check))
        assert ours.refit_time_ >= 0
    assert ours.estimator is not None and not isinstance(ours.estimator, ms._Replay)


def both(search, sk_search, *args, **params):
    return search.fit(*args, **params), sk_search.fit(*args, **params)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_grid_search_equals_scikit_learns(calls, dtype):
    grid = {"alpha": [1e-4, 1e-1], "learning_rate_init": [1e-3, 1e-2]}
    kwargs = dict(cv=3, scoring=LOSS)
    ours, theirs = both(fastmlp.model_selection.GridSearchCV(net(dtype), grid, n_jobs=2, **kwargs),
                        skms.GridSearchCV(net(dtype), grid, n_jobs=1, **kwargs), X, y)
    assert calls["n_jobs"] == 2  # n_jobs is fit_many's threads
    assert_same_results(ours, theirs)
    assert calls["fit_many"] == [4, 4, 4]  # one call per fold, every candidate in it
    assert calls["fresh"] == 1  # the refit only: every fold's fit came from fit_many
    assert type(ours.best_estimator_) is MLPClassifier
    assert ours.best_estimator_.get_params() == theirs.best_estimator_.get_params()
    assert "fit_many" not in str(ours.cv_results_["params"])


@pytest.mark.parametrize("seed", [0, rng])  # an int, or a RandomState drawn from once
def test_randomized_search_draws_scikit_learns_candidates(calls, seed):
    distributions = {"alpha": loguniform(1e-5, 1e-1), "hidden_layer_sizes": [(4,), (8,)],
                     "learning_rate_init": loguniform(1e-3, 1e-1)}
    kwargs = dict(n_iter=4, cv=3, scoring=LOSS)
    ours, theirs = both(
        ms.RandomizedSearchCV(net(), distributions, random_state=seed(0) if callable(seed)
                              else seed, **kwargs),
        skms.RandomizedSearchCV(net(), distributions, random_state=seed(0) if callable(seed)
                                else seed, **kwargs), X, y)
    assert_same_results(ours, theirs)
    assert calls["fit_many"] == [4, 4, 4] and calls["fresh"] == 1  # the refit only


class CountingScaler(StandardScaler):
    fits = 0

    def fit(self, X, y=None, sample_weight=None):
        CountingScaler.fits += 1
        return super().fit(X, y, sample_weight)


def test_pipeline_fits_earlier_steps_once_per_fold(calls):
    grid = {"mlpclassifier__alpha": [1e-4, 1e-1, 1.0]}
    CountingScaler.fits = 0
    ours = ms.GridSearchCV(make_pipeline(CountingScaler(), net()), grid, cv=4,
                           return_train_score=True, scoring=LOSS).fit(X, y)
    assert CountingScaler.fits == 4 + 1  # once per fold, once for the refit
    assert calls["fit_many"] == [3, 3, 3, 3]
    theirs = skms.GridSearchCV(make_pipeline(CountingScaler(), net()), grid, cv=4,
                               return_train_score=True, scoring=LOSS).fit(X, y)
    assert_same_results(ours, theirs)
    assert ours.best_estimator_.steps[-1][0] == "mlpclassifier"


@pytest.mark.parametrize("refit", ["accuracy", lambda results: int(
    np.argmax(results["mean_test_f1"] - 1e-3 * results["param_alpha"].astype(float)))])
def test_multimetric_with_refit_string_or_callable(calls, refit):
    grid = {"alpha": [1e-4, 1e-1, 1.0]}
    kwargs = dict(scoring=["accuracy", "f1", "neg_log_loss"], refit=refit, cv=3,
                  return_train_score=True)
    ours, theirs = both(ms.GridSearchCV(net(), grid, **kwargs),
                        skms.GridSearchCV(net(), grid, **kwargs), X, y)
    assert_same_results(ours, theirs)
    assert set(ours.scorer_) == {"accuracy", "f1", "neg_log_loss"}
    assert calls["fit_many"] == [3, 3, 3]


def test_refit_false_keeps_no_best_estimator(calls):
    grid = {"alpha": [1e-4, 1e-1]}
    ours, theirs = both(ms.GridSearchCV(net(), grid, refit=False, cv=3),
                        skms.GridSearchCV(net(), grid, refit=False, cv=3), X, y)
    assert_same_results(ours, theirs)
    assert calls["fresh"] == 0 and not hasattr(ours, "best_estimator_")


def test_group_splitter_with_groups(calls):
    grid = {"alpha": [1e-4, 1e-1]}
    kwargs = dict(cv=skms.GroupKFold(3), scoring=LOSS)
    ours, theirs = both(ms.GridSearchCV(net(), grid, **kwargs),
                        skms.GridSearchCV(net(), grid, **kwargs),
                        X, y, groups=GROUPS)
    assert_same_results(ours, theirs)
    assert calls["fit_many"] == [2, 2, 2]


def fit_recording(search):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    return [w for w in caught if w.category is FitFailedWarning]


def test_a_failing_candidate_fails_alone_with_scikit_learns_warning(calls):
    grid = {"alpha": [1e-4, -1.0, 1e-1]}  # alpha=-1 is rejected by fit
    ours = ms.GridSearchCV(net(), grid, cv=3, error_score=-7.5, return_train_score=True)
    theirs = skms.GridSearchCV(net(), grid, cv=3, error_score=-7.5, return_train_score=True)
    ours_warned, theirs_warned = fit_recording(ours), fit_recording(theirs)
    assert_same_results(ours, theirs)
    assert (ours.cv_results_["split0_test_score"][1] == -7.5
            and ours.cv_results_["mean_test_score"][0] > 0)
    assert len(ours_warned) == len(theirs_warned) == 1
    ours_lines, theirs_lines = (str(w[0].message).strip().splitlines() for w in
                                (ours_warned, theirs_warned))
    assert ours_lines[:3] == theirs_lines[:3]  # "3 fits failed out of a total of 9." ...
    assert ours_lines[-1] == theirs_lines[-1]  # the error itself
    assert sum("fits failed with the following error" in line for line in ours_lines) == 1
    nan_grid = {"alpha": [1e-4, -1.0]}
    ours, theirs = ms.GridSearchCV(net(), nan_grid, cv=3), skms.GridSearchCV(net(), nan_grid, cv=3)
    fit_recording(ours), fit_recording(theirs)
    assert_same_results(ours, theirs)
    assert np.isnan(ours.cv_results_["mean_test_score"][1])


def test_error_score_raise_raises_scikit_learns_error():
    grid = {"alpha": [1e-4, -1.0]}
    with pytest.raises(Exception) as theirs:
        skms.GridSearchCV(net(), grid, cv=3, error_score="raise").fit(X, y)
    search = ms.GridSearchCV(net(), grid, cv=3, error_score="raise")
    with pytest.raises(theirs.type, match="alpha"):
        search.fit(X, y)
    assert type(search.estimator) is MLPClassifier and search.cv == 3  # put back


def test_unknown_parameter_raises_as_in_scikit_learn():
    with pytest.raises(ValueError, match="Invalid parameter 'alpah'"):
        ms.GridSearchCV(net(), {"alpah": [1.0]}, cv=3).fit(X, y)


@pytest.mark.parametrize("estimator, grid", [
    (LogisticRegression(max_iter=50), {"C": [0.1, 1.0]}),
    (make_pipeline(StandardScaler(), net()),
     {"standardscaler__with_mean": [True, False], "mlpclassifier__alpha": [1e-4, 1e-1]}),
])
def test_fallback_is_scikit_learns_search(calls, estimator, grid):
    ours, theirs = both(ms.GridSearchCV(estimator, grid, cv=3, n_jobs=1),
                        skms.GridSearchCV(estimator, grid, cv=3, n_jobs=1), X, y)
    assert_same_results(ours, theirs)
    assert calls["fit_many"] == [] and calls["fresh"] == 0


def test_sample_weight_reaches_the_networks_and_scorers(calls):
    weights = np.linspace(0.2, 2.0, len(X))
    grid = {"alpha": [1e-4, 1e-1]}
    ours, theirs = both(ms.GridSearchCV(net(), grid, cv=3, scoring=LOSS),
                        skms.GridSearchCV(net(), grid, cv=3, scoring=LOSS),
                        X, y, sample_weight=weights)
    assert_same_results(ours, theirs)
    assert calls["fit_many"] == [2, 2, 2]
    unweighted = skms.GridSearchCV(net(), grid, cv=3, scoring=LOSS).fit(X, y)
    assert not np.allclose(unweighted.cv_results_["mean_test_score"],
                           ours.cv_results_["mean_test_score"])
    # The default scorer (the estimator's score) is given the weights too, as scikit-learn's.
    ours, theirs = both(ms.GridSearchCV(net(), grid, cv=3), skms.GridSearchCV(net(), grid, cv=3),
                        X, y, sample_weight=weights)
    assert_same_results(ours, theirs)
    unweighted = skms.GridSearchCV(net(), grid, cv=3).fit(X, y)
    assert not np.allclose(unweighted.cv_results_["mean_test_score"],
                           ours.cv_results_["mean_test_score"])
    pipe_grid = {"mlpclassifier__alpha": [1e-4, 1e-1]}
    ours, theirs = both(
        ms.GridSearchCV(make_pipeline(StandardScaler(), net()), pipe_grid, cv=3, scoring=LOSS),
        skms.GridSearchCV(make_pipeline(StandardScaler(), net()), pipe_grid, cv=3, scoring=LOSS),
                        X, y, mlpclassifier__sample_weight=weights)
    assert_same_results(ours, theirs)
    assert calls["fit_many"] == [2, 2, 2] * 3


def test_regressor(calls):
    grid = {"alpha": [1e-4, 1e-1], "activation": ["relu", "tanh"]}
    scoring = {"mse": make_scorer(mean_squared_error, greater_is_better=False), "r2": "r2"}
    kwargs = dict(cv=3, scoring=scoring, refit="r2", return_train_score=True)
    ours, theirs = both(ms.GridSearchCV(net(cls=MLPRegressor), grid, **kwargs),
                        skms.GridSearchCV(net(cls=MLPRegressor), grid, **kwargs), XR, yR)
    assert_same_results(ours, theirs, XR)
    assert calls["fit_many"] == [4, 4, 4]


def test_unseeded_networks_fit_independently():
    grid = {"alpha": [1e-4, 1e-1]}
    search = ms.GridSearchCV(MLPClassifier(hidden_layer_sizes=(6,), max_iter=3), grid, cv=3)
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores >= 0) & (scores <= 1)) and search.best_estimator_.n_iter_ == 3


def test_a_replay_never_hands_back_another_fits_network():
    """The k-th fit gets candidate k // n_splits's network on split k % n_splits only when its
    parameters and rows are that candidate's and split's; anything else is fitted afresh."""
    splits = [np.arange(0, 60), np.arange(60, 120)]
    candidates = [{"alpha": 0.1}, {"alpha": 0.2}]

    def pretrained():
        store = ms._Pretrained(net(), candidates, len(splits))
        for split, rows in enumerate(splits):
            store.fingerprints.append(ms._fingerprint(X[rows], y[rows], {}))
            for candidate in range(len(candidates)):
                store.models[candidate, split] = f"network {candidate}, {split}"
        return store

    rows = [(X[r], y[r]) for r in splits]
    store = pretrained()
    assert store.take({"alpha": 0.1}, *rows[0], {}) == "network 0, 0"
    assert store.take({"alpha": 0.1}, *rows[1], {}) == "network 0, 1"
    assert store.take({"alpha": 0.2}, *rows[0], {}) == "network 1, 0"
    assert store.take({"alpha": 0.2}, *rows[1], {}) == "network 1, 1"
    assert store.take({"alpha": 0.2}, X, y, {}) is ms._MISS  # the refit
    flipped = y[splits[0]].copy()
    flipped[0] = 1 - flipped[0]
    for params, data, fit_params in [({"alpha": 0.1}, rows[1], {}),  # split 0 is due
                                     ({"alpha": 0.2}, rows[0], {}),  # candidate 0 is due
                                     ({"alpha": 0.1, "tol": 1e-4}, rows[0], {}),
                                     ({"alpha": np.float32(0.1)}, rows[0], {}),
                                     ({"alpha": 0.1}, rows[0], {"sample_weight": None}),
                                     ({"alpha": 0.1}, (X[splits[0]], flipped), {})]:
        store = pretrained()
        assert store.take(params, *data, fit_params) is ms._MISS
        assert store.take({"alpha": 0.1}, *rows[1], {}) == "network 0, 1"  # the order goes on
    replay = ms._Replay(pretrained()).set_params(alpha=0.3).fit(X, y)  # a normal fit
    assert type(replay.model_) is MLPClassifier and replay.model_.alpha == 0.3
    assert ms._Replay(store).__sklearn_tags__().estimator_type == "classifier"


def test_metadata_routing(calls):
    """With routing on, requested weights reach the networks (batched) and the scorer; a pipeline
    given fit parameters is left to scikit-learn's search."""
    weights = np.linspace(0.2, 2.0, len(X))
    grid = {"alpha": [1e-4, 1e-1]}
    with sklearn.config_context(enable_metadata_routing=True):
        weighted = net().set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        ours, theirs = both(ms.GridSearchCV(weighted, grid, cv=3),
                            skms.GridSearchCV(weighted, grid, cv=3), X, y, sample_weight=weights)
        assert_same_results(ours, theirs)
        assert calls["fit_many"] == [2, 2, 2]
        with pytest.raises(UnsetMetadataPassedError):  # not requested: scikit-learn's error
            ms.GridSearchCV(net(), grid, cv=3).fit(X, y, sample_weight=weights)
        pipe = make_pipeline(StandardScaler().set_fit_request(sample_weight=False), weighted)
        pipe_grid = {"mlpclassifier__alpha": [1e-4, 1e-1]}
        try:
            theirs = skms.GridSearchCV(pipe, pipe_grid, cv=3).fit(X, y, sample_weight=weights)
        except UnsetMetadataPassedError:  # scikit-learn 1.7 wants the pipeline's score request
            with pytest.raises(UnsetMetadataPassedError):  # and so does ours: the same search
                ms.GridSearchCV(pipe, pipe_grid, cv=3).fit(X, y, sample_weight=weights)
        else:
            ours = ms.GridSearchCV(pipe, pipe_grid, cv=3).fit(X, y, sample_weight=weights)
            assert_same_results(ours, theirs)
        assert calls["fit_many"] == [2, 2, 2]  # the fallback: no fit_many


def test_verbose_lines_are_scikit_learns(capsys):
    grid = {"alpha": [1e-4, 1e-1]}
    outputs = []
    for cls in (ms.GridSearchCV, skms.GridSearchCV):
        cls(net(), grid, cv=2, verbose=3, return_train_score=True).fit(X, y)
        outputs.append(re.sub(r"total time=\s*[\d.]+s", "", capsys.readouterr().out))
    assert outputs[0] == outputs[1] and "alpha=0.0001" in outputs[0]


def test_shuffled_splits_are_drawn_once(calls):
    """A splitter that shuffles differently at each split() call: the networks are trained and
    scored on the same splits, drawn once, as in scikit-learn's search."""
    grid = {"alpha": [1e-4, 1e-1]}
    search = ms.GridSearchCV(net(), grid, cv=skms.KFold(3, shuffle=True), scoring=LOSS)
    search.fit(X, y)
    assert calls["fresh"] == 1  # the refit: every fold's network came from fit_many
    kwargs = dict(scoring=LOSS, return_train_score=True)
    ours, theirs = both(
        ms.GridSearchCV(net(), grid, cv=skms.KFold(3, shuffle=True, random_state=rng(0)),
                        **kwargs),
        skms.GridSearchCV(net(), grid, cv=skms.KFold(3, shuffle=True, random_state=rng(0)),
                          **kwargs), X, y)
    assert_same_results(ours, theirs)


ROWS = X


class FailingScaler(StandardScaler):
    def fit(self, X, y=None, sample_weight=None):
        if np.array_equal(X[-1], ROWS[79]):  # the last split's training rows: 0 to 79
            raise ValueError("this fold cannot be scaled")
        return super().fit(X, y, sample_weight)


def test_an_earlier_step_failing_fails_that_folds_fits(calls):
    grid = {"mlpclassifier__alpha": [1e-4, 1e-1]}
    ours, theirs = (cls(make_pipeline(FailingScaler(), net()), grid, cv=skms.KFold(3),
                        scoring=LOSS, error_score=-9.0) for cls in (ms.GridSearchCV,
                                                                     skms.GridSearchCV))
    ours_warned, theirs_warned = fit_recording(ours), fit_recording(theirs)
    assert_same_results(ours, theirs)
    assert list(ours.cv_results_["split2_test_score"]) == [-9.0, -9.0]
    assert len(ours_warned) == len(theirs_warned) == 1
    groups = [str(w[0].message).count("fits failed with the following error")
              for w in (ours_warned, theirs_warned)]
    assert groups == [1, 1]  # "2 fits failed with the following error": one traceback
    assert calls["fit_many"] == [2, 2]


# cross_validate and cross_val_score: scikit-learn's functions over the same estimator are the
# oracle; the folds' networks come from fit_many.

def fitted(estimator):
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    return True


def assert_same_cv(ours, theirs, X_check=X):
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if key.endswith("_time"):
            assert ours[key].shape == value.shape and np.all(ours[key] >= 0), key
        elif key == "estimator":
            for a, b in zip(ours[key], value, strict=True):
                assert type(a) is type(b) and repr(a) == repr(b)
                assert fitted(a) == fitted(b)  # a failed fold's estimator is not fitted
                if fitted(b):
                    np.testing.assert_array_equal(a.predict(X_check), b.predict(X_check))
        elif key == "indices":
            for part in ("train", "test"):
                for a, b in zip(ours[key][part], value[part], strict=True):
                    np.testing.assert_array_equal(a, b)
        else:  # the scores: the same networks, so the same numbers
            np.testing.assert_allclose(ours[key], value, rtol=1e-12, err_msg=key)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_validate_equals_scikit_learns(calls, dtype):
    kwargs = dict(cv=3, scoring=["accuracy", LOSS], return_train_score=True,
                  return_estimator=True, return_indices=True)
    ours = ms.cross_validate(net(dtype), X, y, n_jobs=2, **kwargs)
    theirs = skms.cross_validate(net(dtype), X, y, **kwargs)
    assert_same_cv(ours, theirs)
    assert calls["fit_many"] == [3] and calls["n_jobs"] == 2  # every fold in one call
    assert calls["fresh"] == 0
    assert all(type(est) is MLPClassifier for est in ours["estimator"])


def test_cross_val_score_equals_scikit_learns(calls):
    for estimator, data in ((net(), (X, y)), (net(cls=MLPRegressor), (XR, yR))):
        ours = ms.cross_val_score(estimator, *data, cv=4)
        np.testing.assert_allclose(ours, skms.cross_val_score(estimator, *data, cv=4),
                                   rtol=1e-12)
    assert calls["fit_many"] == [4, 4]
    with pytest.raises(ValueError, match="The 'scoring' parameter of cross_val_score"):
        ms.cross_val_score(net(), X, y, scoring=["accuracy", "f1"])  # as scikit-learn's


def test_cross_validate_pipeline_groups_and_sample_weight(calls):
    weights = np.linspace(0.2, 2.0, len(X))
    pipe = make_pipeline(CountingScaler(), net())
    kwargs = dict(cv=skms.GroupKFold(3), groups=GROUPS, scoring=LOSS, return_estimator=True,
                  params={"mlpclassifier__sample_weight": weights})
    CountingScaler.fits = 0
    ours = ms.cross_validate(pipe, X, y, **kwargs)
    assert CountingScaler.fits == 3 and calls["fit_many"] == [3]  # every fold in one call
    theirs = skms.cross_validate(pipe, X, y, **kwargs)
    assert_same_cv(ours, theirs)
    unweighted = skms.cross_validate(pipe, X, y, **{**kwargs, "params": None})
    assert not np.allclose(unweighted["test_score"], ours["test_score"])
    assert ours["estimator"][0].steps[0][1] is not ours["estimator"][1].steps[0][1]


def test_cross_validate_failures_are_scikit_learns(calls):
    # The second fold's training rows all weigh 0, which fit rejects: that fold fails alone.
    weights = np.where(np.arange(len(X)) < 40, 1.0, 0.0)
    cv = [(np.arange(0, 80), np.arange(80, 120)), (np.arange(40, 120), np.arange(0, 40))]
    kwargs = dict(cv=cv, params={"sample_weight": weights}, return_train_score=True,
                  return_estimator=True)
    results = []
    for cross_validate in (ms.cross_validate, skms.cross_validate):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append(cross_validate(net(), X, y, error_score=-7.5, **kwargs))
        failed = [w for w in caught if w.category is FitFailedWarning]
        assert len(failed) == 1 and "1 fits failed out of a total of 2" in str(failed[0].message)
    assert_same_cv(*results)
    assert results[0]["test_score"][1] == -7.5 and results[0]["test_score"][0] > 0
    assert calls["fit_many"] == [2]
    # error_score="raise": the failing fold's own error, as scikit-learn raises it.
    with pytest.raises(Exception) as theirs:
        skms.cross_validate(net(), X, y, error_score="raise", **kwargs)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value))):
        ms.cross_validate(net(), X, y, error_score="raise", **kwargs)
    # Every fold failing: scikit-learn's own error.
    with pytest.raises(ValueError, match="All the 3 fits failed"):
        ms.cross_validate(net(alpha=-1.0), X, y, cv=3)


@pytest.mark.parametrize("function, option", [
    (ms.cross_validate, {"error_score": "ignore"}),
    (ms.cross_validate, {"return_train_score": "yes"}),
    (ms.cross_val_score, {"n_jobs": "two"}),
    (ms.cross_val_score, {"verbose": -1}),
])
def test_bad_options_fail_before_any_training(calls, function, option):
    """scikit-learn's own parameter error, raised before a fold trains (not after all have)."""
    name = function.__name__
    with pytest.raises(sklearn.utils._param_validation.InvalidParameterError) as theirs:
        getattr(skms, name)(net(), X, y, cv=3, **option)
    with pytest.raises(type(theirs.value), match=re.escape(str(theirs.value))):
        function(net(), X, y, cv=3, **option)
    assert calls["fit_many"] == []


@pytest.mark.parametrize("estimator, params", [
    (LogisticRegression(max_iter=50), None),  # not a fastmlp network
    (net(), {"check_input": True}),  # a fit parameter fit_many does not take
])
def test_cross_validate_falls_back_to_scikit_learns(calls, monkeypatch, estimator, params):
    seen = []
    monkeypatch.setattr(skms, "cross_validate", lambda *args, **kwargs: seen.append(
        (args, kwargs)) or {"test_score": np.zeros(3)})
    ms.cross_validate(estimator, X, y, cv=3, params=params)
    assert calls["fit_many"] == [] and len(seen) == 1
    assert seen[0][0][0] is estimator and seen[0][1]["params"] is params


def test_cross_validate_with_metadata_routing(calls):
    """Routing on: without metadata the folds are batched; with it, scikit-learn's
    cross_validate routes it (and raises its own errors) unbatched."""
    weights = np.linspace(0.2, 2.0, len(X))
    with sklearn.config_context(enable_metadata_routing=True):
        assert_same_cv(ms.cross_validate(net(), X, y, cv=3, scoring=LOSS),
                       skms.cross_validate(net(), X, y, cv=3, scoring=LOSS))
        assert calls["fit_many"] == [3]
        weighted = net().set_fit_request(sample_weight=True).set_score_request(sample_weight=True)
        params = {"sample_weight": weights}
        assert_same_cv(ms.cross_validate(weighted, X, y, cv=3, params=params),
                       skms.cross_validate(weighted, X, y, cv=3, params=params))
        with pytest.raises(UnsetMetadataPassedError):
            ms.cross_validate(net(), X, y, cv=3, params=params)
        with pytest.raises(ValueError, match="groups"):  # scikit-learn's: route them instead
            ms.cross_validate(net(), X, y, cv=skms.GroupKFold(3), groups=GROUPS)
    assert calls["fit_many"] == [3]


def test_fit_times_are_each_fits_own(calls):
    """A candidate's mean_fit_time is its own fits' time, not a share of the fold's: a network
    with 1,600 times the multiply-adds of another takes longer, fold after fold."""
    grid = {"hidden_layer_sizes": [(2,), (512, 512)]}
    ms.GridSearchCV(net(), grid, cv=3, refit=False).fit(X, y)  # loads the kernels: not timed
    search = ms.GridSearchCV(net(), grid, cv=3, refit=False).fit(X, y)
    small, big = search.cv_results_["mean_fit_time"]
    assert 0 < small and 3 * small < big, (small, big)
    ours = ms.cross_validate(net().set_params(hidden_layer_sizes=(512, 512)), X, y, cv=3)
    assert np.all(ours["fit_time"] > 3 * small)
