"""Hyper-parameter searches and cross-validation that train their networks together.

GridSearchCV and RandomizedSearchCV are scikit-learn's, subclassed, and cross_validate and
cross_val_score call scikit-learn's: this module only pre-trains the networks (with `fit_many`:
a search's candidates fold by fold, cross-validation's folds together) and hands them to
scikit-learn's own code, which scores, ranks, refits and formats the results. It must not score
or rank anything itself.
"""

import copy
import hashlib
import time
import warnings
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
from sklearn import model_selection as sk_model_selection
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.metrics._scorer import _MultimetricScorer
from sklearn.model_selection import ParameterGrid, ParameterSampler, check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import get_tags, indexable
from sklearn.utils._available_if import available_if
from sklearn.utils.metadata_routing import _routing_enabled, get_routing_for_object
from sklearn.utils.metaestimators import _safe_split
from sklearn.utils.validation import _check_method_params

from .estimators import MLPClassifier, MLPRegressor
from .many import fit_many_timed

__all__ = ["GridSearchCV", "RandomizedSearchCV", "cross_val_score", "cross_validate"]

# Exact types: a subclass may override fit, which a grouped fit_many need not call.
NETWORKS = (MLPClassifier, MLPRegressor)
# Above this many bytes, X is fingerprinted by a sample of its rows (y and weights in full).
FULL_HASH_BYTES = 1 << 20  # a W8 fold (6.4 MB) hashed whole: 7 ms, 125 times a search
SAMPLED_ROWS = 1024
_MISS = object()


def _feed(digest, value, sample=False):
    """Add one array-like (or None) to a fingerprint."""
    if value is None:
        digest.update(b"none")
        return
    if sp.issparse(value):
        value = value.tocsr()
        digest.update(repr((value.shape, value.dtype.str)).encode())
        for part in (value.data, value.indices, value.indptr):
            digest.update(np.ascontiguousarray(part))
        return
    array = np.asarray(value)
    digest.update(repr((array.shape, array.dtype.str)).encode())
    if array.dtype == object:
        digest.update("\x00".join(map(repr, array.ravel().tolist())).encode())
        return
    if sample and array.ndim and array.nbytes > FULL_HASH_BYTES:
        array = array[np.linspace(0, len(array) - 1, SAMPLED_ROWS).astype(np.intp)]
    digest.update(np.ascontiguousarray(array))


def _fingerprint(X, y, fit_params):
    """What identifies a fold's training data: its rows' count and a hash of its contents."""
    digest = hashlib.blake2b(digest_size=16)
    _feed(digest, X, sample=True)
    _feed(digest, y)
    for key in sorted(fit_params):
        digest.update(key.encode())
        _feed(digest, fit_params[key])
    return X.shape[0], digest.hexdigest()


def _same(a, b):
    """Whether a deep copy of a parameter value equals the original (unsure means no)."""
    if a is b:
        return True
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return type(a) is type(b) and np.array_equal(a, b)
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the same
        return False


class _Pretrained:
    """The networks trained for every (candidate, split), handed out once each.

    Shared, never copied, by every clone of the replay estimator (clone deep-copies constructor
    parameters)."""

    def __init__(self, estimator, candidates, n_splits):
        self.estimator = estimator
        self.candidates = candidates
        self.models = {}  # (candidate, split) -> fitted estimator or the exception its fit raised
        self.fingerprints = []  # by split
        self.fit_times = np.zeros((len(candidates), n_splits))
        self.calls = 0

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self

    def __repr__(self):
        return f"<{len(self.models)} pre-trained fits>"

    def fresh(self, params):
        """An unfitted estimator with these parameters, as scikit-learn's search makes one."""
        return clone(self.estimator).set_params(**params)

    def take(self, params, X, y, fit_params):
        """The pre-trained result of fitting with these parameters on these rows, or _MISS.

        scikit-learn's search (n_jobs=1) fits candidate by candidate, split by split: the k-th
        fit is candidate k // n_splits on split k % n_splits. It is handed that network only if
        the parameters equal that candidate's and the rows match that split's fingerprint, so
        anything unexpected costs a fresh fit, never another fit's network."""
        candidate, split = divmod(self.calls, len(self.fingerprints))
        self.calls += 1
        if candidate >= len(self.candidates):
            return _MISS  # the refit on all rows
        expected = self.candidates[candidate]
        if (params.keys() != expected.keys()
                or not all(_same(params[key], expected[key]) for key in params)
                or _fingerprint(X, y, fit_params) != self.fingerprints[split]):
            return _MISS
        return self.models.pop((candidate, split))


def _delegates(name):
    """available_if check: the method exists when the wrapped (or user's) estimator has it."""
    return lambda self: hasattr(self._target(), name)


class _Replay(BaseEstimator):
    """Stands in for the user's estimator inside scikit-learn's search: it takes the candidates'
    parameters, whatever their names, and fitting it hands back the network pre-trained with
    them on those rows (or raises the exception that fit raised)."""

    def __init__(self, pretrained=None):
        self.pretrained = pretrained

    def set_params(self, **params):
        self._candidate = params
        return self

    def fit(self, X, y=None, **fit_params):
        params = self.__dict__.get("_candidate", {})
        found = self.pretrained.take(params, X, y, fit_params)
        if isinstance(found, BaseException):
            raise found
        if found is _MISS:  # the refit on all rows, or anything not pre-trained: a normal fit
            found = self.pretrained.fresh(params)
            if y is None:
                found.fit(X, **fit_params)
            else:
                found.fit(X, y, **fit_params)
        self.model_ = found
        return self

    def _target(self):
        return self.__dict__.get("model_", self.pretrained.estimator)

    def __getattr__(self, name):
        # Fitted attributes (classes_, n_features_in_, feature_names_in_...) are the model's.
        model = self.__dict__.get("model_")
        if model is None or name.startswith("_") or not name.endswith("_"):
            raise AttributeError(name)
        return getattr(model, name)

    def __sklearn_tags__(self):
        return copy.deepcopy(get_tags(self.pretrained.estimator))

    def get_metadata_routing(self):
        return get_routing_for_object(self.pretrained.estimator)

    @property
    def _metadata_request(self):
        # scikit-learn 1.7's default scorer copies the score request from here (later versions
        # ask get_metadata_routing): the user's estimator's, as for the real one.
        estimator = self.__dict__.get("pretrained") and self.pretrained.estimator
        if estimator is None:
            raise AttributeError("_metadata_request")
        try:
            return estimator._metadata_request
        except AttributeError:
            return estimator._get_default_requests()

    @available_if(_delegates("predict"))
    def predict(self, X, **params):
        return self.model_.predict(X, **params)

    @available_if(_delegates("predict_proba"))
    def predict_proba(self, X, **params):
        return self.model_.predict_proba(X, **params)

    @available_if(_delegates("predict_log_proba"))
    def predict_log_proba(self, X, **params):
        return self.model_.predict_log_proba(X, **params)

    @available_if(_delegates("decision_function"))
    def decision_function(self, X, **params):
        return self.model_.decision_function(X, **params)

    @available_if(_delegates("transform"))
    def transform(self, X, **params):
        return self.model_.transform(X, **params)

    @available_if(_delegates("score"))
    def score(self, X, y=None, sample_weight=None, **params):
        # sample_weight is named so that scikit-learn sees the score accepts it, as the real
        # estimator's does.
        if sample_weight is not None:
            params["sample_weight"] = sample_weight
        return self.model_.score(X, y, **params)


def _network_step(estimator):
    """(the network, the name of its pipeline step or None) where fit_many can train the
    estimator's final network, else None."""
    if type(estimator) in NETWORKS:
        return estimator, None
    if isinstance(estimator, Pipeline) and type(estimator.steps[-1][1]) in NETWORKS:
        return estimator.steps[-1][1], estimator.steps[-1][0]
    return None


def _network_params(last, candidates):
    """The candidates' parameters as the network's own, or None where one touches anything but
    the pipeline's last step (an earlier step, or the step itself)."""
    if last is None:
        return candidates
    prefix = last + "__"
    if any(not key.startswith(prefix) or "__" in key[len(prefix):]
           for params in candidates for key in params):
        return None
    return [{key[len(prefix):]: value for key, value in params.items()} for params in candidates]


def _sample_weight_key(last):
    return "sample_weight" if last is None else f"{last}__sample_weight"


def _plan(search, X, y, params):
    """Everything scikit-learn's fit would compute before fitting, or None to leave the search to
    scikit-learn (not a fastmlp network, a grid over earlier pipeline steps, other fit params)."""
    estimator = search.estimator
    step = _network_step(estimator)
    if y is None or step is None:
        return None
    network, last = step
    search._validate_params()
    X, y = indexable(X, y)
    params = _check_method_params(X, params=params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's own fit warns about these, once
        search._get_scorers()
        routed = search._get_routed_params_for_fit(params)
    fit_params = dict(routed.estimator.fit)
    allowed = set() if (last is not None and _routing_enabled()) else {
        _sample_weight_key(last)}
    if not set(fit_params) <= allowed:
        return None
    split_params = routed.splitter.split
    cv = check_cv(search.cv, y, classifier=is_classifier(estimator))
    n_splits = cv.get_n_splits(X, y, **split_params)
    # The splits are drawn once and replayed as a list, so that both passes see the same ones.
    splits = list(cv.split(X, y, **split_params))
    if len(splits) != n_splits:
        return None  # scikit-learn raises its own error
    candidates = search._candidates()
    network_params = _network_params(last, candidates)
    if network_params is None:
        return None
    for params_ in candidates:  # an unknown parameter fails here, as in scikit-learn's fit
        clone(estimator).set_params(**clone(params_, safe=False))
    return SimpleNamespace(estimator=estimator, X=X, y=y, params=params, fit_params=fit_params,
                           cv=cv, splits=splits, candidates=candidates, network=network,
                           last=last, network_params=network_params)


def _copies(exc, n):
    """n copies of an exception with its traceback: re-raising one object n times would grow
    its traceback at each raise, and scikit-learn groups failures by their traceback's text."""
    try:
        return [copy.copy(exc).with_traceback(exc.__traceback__) for _ in range(n)]
    except Exception:  # noqa: BLE001 - an exception that cannot be copied is shared
        return [exc] * n


def _fold(plan, pretrained, train):
    """One split's training data for the networks: X (the pipeline's earlier steps' output, or
    the exception fitting them raised), y, sample_weight, head (those steps fitted once on these
    rows; None for a bare network) and seconds (the time fitting them took)."""
    estimator = plan.estimator
    X_train, y_train = _safe_split(estimator, plan.X, plan.y, train)
    fit_params = _check_method_params(plan.X, params=plan.fit_params, indices=train)
    pretrained.fingerprints.append(_fingerprint(X_train, y_train, fit_params))
    fold = SimpleNamespace(X=X_train, y=y_train, head=None, seconds=0.0,
                           sample_weight=fit_params.get(_sample_weight_key(plan.last)))
    if plan.last is not None:
        # The pipeline with its last step passed through: Pipeline.fit's own transform path.
        fold.head = clone(estimator).set_params(**{plan.last: "passthrough"})
        began = time.perf_counter()
        try:
            fold.X = fold.head.fit_transform(X_train, y_train)
        except Exception as exc:  # noqa: BLE001 - every candidate's fit on this fold fails so
            fold.X = exc
        fold.seconds = time.perf_counter() - began
    return fold


def _pretrain(plan, pretrained, n_jobs, all_folds=False):
    """Fit every candidate's network on every split with fit_many, a pipeline's earlier steps
    once per split: all splits in one call (every fold's training copy held at once), or one
    call per split. For device="cuda" networks always all in one call: networks on different
    folds share a launch per epoch. A fit's time is its own (fit_many_timed) plus
    its share of its fold's earlier steps."""
    if any(params.get("device", plan.network.device) == "cuda"
           for params in plan.network_params):
        all_folds = True
    splits = list(enumerate(plan.splits))
    n_candidates = len(plan.network_params)
    for part in [splits] if all_folds else [[split] for split in splits]:
        networks, datasets, slots = [], [], []
        for split, (train, _) in part:
            fold = _fold(plan, pretrained, train)
            pretrained.fit_times[:, split] = fold.seconds / n_candidates
            if isinstance(fold.X, BaseException):
                for candidate, exc in enumerate(_copies(fold.X, n_candidates)):
                    pretrained.models[candidate, split] = exc
                continue
            for candidate, params in enumerate(plan.network_params):
                networks.append(clone(plan.network).set_params(**clone(params, safe=False)))
                datasets.append((fold.X, fold.y, fold.sample_weight))
                slots.append((candidate, split, fold.head))
        results, seconds = fit_many_timed(networks, datasets=datasets, n_jobs=n_jobs) \
            if networks else ([], [])
        for (candidate, split, head), result, took in zip(slots, results, seconds):
            pretrained.fit_times[candidate, split] += took
            if head is not None and not isinstance(result, BaseException):
                fitted = copy.copy(head)  # the fold's fitted earlier steps, shared read-only
                fitted.steps = [*head.steps[:-1], (plan.last, result)]
                result = fitted
            pretrained.models[candidate, split] = result


class _BatchedSearch:
    """fit for scikit-learn's searches: pre-train with fit_many, then replay through
    scikit-learn's own fit."""

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters (scikit-learn's ``fit``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), default=None
            Target relative to X.
        **params : dict of str -> object
            Parameters passed to the estimator's ``fit``, the scorer and the CV splitter.

        Returns
        -------
        self : object
            Instance of fitted estimator.
        """
        try:
            plan = _plan(self, X, y, params)
        except Exception:  # noqa: BLE001 - scikit-learn's fit raises its own error for it
            plan = None
        if plan is None:
            return super().fit(X, y, **params)
        pretrained = _Pretrained(self.estimator, plan.candidates, len(plan.splits))
        _pretrain(plan, pretrained, self.n_jobs)
        self._replay(plan, pretrained)
        return self

    def _replay(self, plan, pretrained):
        """scikit-learn's fit over the candidates with the pre-trained networks, then the user's
        estimator and the measured fit times put in."""
        saved = {name: getattr(self, name) for name in ("estimator", "cv", "n_jobs")}
        self.estimator = _Replay(pretrained)
        self.cv, self.n_jobs = plan.splits, 1
        self._replay_candidates = plan.candidates
        try:
            super().fit(plan.X, plan.y, **plan.params)
        finally:
            for name, value in saved.items():
                setattr(self, name, value)
            del self._replay_candidates
        self._checked_cv_orig = plan.cv
        times = pretrained.fit_times
        self.cv_results_["mean_fit_time"] = times.mean(axis=1)
        self.cv_results_["std_fit_time"] = times.std(axis=1)
        if hasattr(self, "best_estimator_"):
            self.best_estimator_ = self.best_estimator_.model_
        scorers, _ = self._get_scorers()  # scorers bound to the user's estimator, not the replay
        self.scorer_ = scorers._scorers if isinstance(scorers, _MultimetricScorer) else scorers

    def _run_search(self, evaluate_candidates, *, callback_ctx=None):
        candidates = getattr(self, "_replay_candidates", None)
        if candidates is None:
            if callback_ctx is None:
                return super()._run_search(evaluate_candidates)
            return super()._run_search(evaluate_candidates, callback_ctx=callback_ctx)
        # The candidates drawn for the pre-training, not a second draw.
        if callback_ctx is None:
            return evaluate_candidates(candidates)
        search_ctx = callback_ctx.subcontext(
            task_name="search", max_subtasks=len(candidates) * self.n_splits_,
            sequential_subtasks=False).call_on_fit_task_begin(estimator=self)
        evaluate_candidates(candidates, callback_ctx=search_ctx)
        search_ctx.call_on_fit_task_end(estimator=self)


_SHARED_DOC = """
    Drop-in for scikit-learn's {name}, with the same parameters, attributes and results
    (``cv_results_``, ``best_*``, ``refit_time_``, ``multimetric_``, ``scorer_``...).

    When ``estimator`` is a fastmlp :class:`~fastmlp.MLPClassifier` or
    :class:`~fastmlp.MLPRegressor`, or a :class:`~sklearn.pipeline.Pipeline` ending in one whose
    searched parameters are all the last step's, every candidate network of a cross-validation
    fold is trained together by one :func:`fastmlp.fit_many` call (for ``device="cuda"``
    networks, one call for every fold, sharing a launch per epoch; a
    pipeline's earlier steps are fitted once per fold), then scikit-learn's own search scores
    them, ranks them and refits the best on all rows with a normal ``fit``. ``sample_weight``
    goes to the networks.
    Anything else (other estimators, a grid over an earlier pipeline step, other fit
    parameters) is left to scikit-learn's search as it is.

    ``n_jobs`` is the number of threads ``fit_many`` uses when the fits are batched (scoring is
    then serial, and ``pre_dispatch`` unused); otherwise it is scikit-learn's number of joblib
    jobs. When batched, a fit's time in ``cv_results_`` is its own: its preparation and epoch
    bookkeeping, its share of each compiled call it trained in, and its share of its fold's
    earlier pipeline steps (fitted once for all candidates); every fold's networks are held in
    memory until scikit-learn's search has scored them.

    See scikit-learn's :class:`sklearn.model_selection.{name}` for every parameter.
"""


class GridSearchCV(_BatchedSearch, sk_model_selection.GridSearchCV):
    __doc__ = "Exhaustive search over specified parameter values for an estimator.\n" + \
        _SHARED_DOC.format(name="GridSearchCV")

    def _candidates(self):
        return list(ParameterGrid(self.param_grid))


class RandomizedSearchCV(_BatchedSearch, sk_model_selection.RandomizedSearchCV):
    __doc__ = "Randomized search on hyper parameters.\n" + \
        _SHARED_DOC.format(name="RandomizedSearchCV")

    def _candidates(self):
        # Drawn once, as scikit-learn's search draws them (random_state handled by the sampler).
        return list(ParameterSampler(self.param_distributions, self.n_iter,
                                     random_state=self.random_state))


def _cv_plan(estimator, X, y, groups, cv, params, scoring):
    """What cross_validate needs to pre-train its folds' networks, or None to leave it to
    scikit-learn (not a fastmlp network, routed metadata, fit params other than sample_weight;
    bad arguments, for which scikit-learn raises its own error)."""
    step = _network_step(estimator)
    if y is None or step is None or (_routing_enabled() and (params or groups is not None)):
        return None
    network, last = step
    params = {} if params is None else dict(params)
    if not set(params) <= {_sample_weight_key(last)}:
        return None
    check_scoring(estimator, scoring=scoring)
    X, y = indexable(X, y)
    cv = check_cv(cv, y, classifier=is_classifier(estimator))
    splits = list(cv.split(X, y, groups))  # drawn once: the replay gets this list
    return SimpleNamespace(estimator=estimator, X=X, y=y, params=params, fit_params=params,
                           cv=cv, splits=splits, candidates=[{}], network=network, last=last,
                           network_params=[{}])


def _validate_as(function, **arguments):
    """scikit-learn's parameter validation of `function` (the constraints its @validate_params
    declares) applied to these arguments before anything is trained: a misspelt option fails at
    once, with scikit-learn's error, not after every fold has trained. Where a scikit-learn
    version does not expose the constraints, its own call validates them later."""
    from sklearn import get_config

    constraints = getattr(function, "_skl_parameter_constraints", None)
    if constraints is None or get_config().get("skip_parameter_validation", False):
        return
    from sklearn.utils._param_validation import validate_parameter_constraints

    validate_parameter_constraints(constraints, arguments, caller_name=function.__qualname__)


def cross_validate(estimator, X, y=None, *, groups=None, scoring=None, cv=None, n_jobs=None,
                   verbose=0, params=None, pre_dispatch="2*n_jobs", return_train_score=False,
                   return_estimator=False, return_indices=False, error_score=np.nan):
    """Evaluate metric(s) by cross-validation and also record fit/score times.

    Drop-in for scikit-learn's :func:`sklearn.model_selection.cross_validate`, with the same
    parameters and the same returned dict. When ``estimator`` is a fastmlp
    :class:`~fastmlp.MLPClassifier` or :class:`~fastmlp.MLPRegressor`, or a
    :class:`~sklearn.pipeline.Pipeline` ending in one, the folds' networks are trained together
    by :func:`fastmlp.fit_many` (a pipeline's earlier steps once per fold, as always), each
    exactly as its own ``fit`` would; scikit-learn's ``cross_validate`` then scores them. Every
    fold goes in one ``fit_many`` call: on the CPU the folds share ``n_jobs`` threads, on a GPU
    every fold shares one launch per epoch.
    ``sample_weight`` (``params``) goes to the networks. Anything else (other estimators, other
    fit parameters, metadata routing with ``params``) is scikit-learn's ``cross_validate`` as it
    is.

    When batched, ``n_jobs`` is the number of threads, ``pre_dispatch`` is unused, every fold's
    training copy is held at once (as by scikit-learn's with ``n_jobs`` at least the number of
    folds), ``fit_time`` is each fold's own (as in the searches: its preparation, epoch
    bookkeeping and share of the compiled calls it trained in), and with
    ``return_estimator=True`` the estimators are the fitted networks (or pipelines) themselves.
    """
    options = dict(scoring=scoring, verbose=verbose, return_train_score=return_train_score,
                   return_estimator=return_estimator, return_indices=return_indices,
                   error_score=error_score)
    _validate_as(sk_model_selection.cross_validate, estimator=estimator, X=X, y=y,
                 groups=groups, cv=cv, n_jobs=n_jobs, params=params, pre_dispatch=pre_dispatch,
                 **options)
    try:
        plan = _cv_plan(estimator, X, y, groups, cv, params, scoring)
    except Exception:  # noqa: BLE001 - scikit-learn's cross_validate raises its own error
        plan = None
    if plan is None:
        return sk_model_selection.cross_validate(estimator, X, y, groups=groups, cv=cv,
                                                 n_jobs=n_jobs, params=params,
                                                 pre_dispatch=pre_dispatch, **options)
    pretrained = _Pretrained(estimator, plan.candidates, len(plan.splits))
    # A network's folds train only alongside each other: all in one call, n_jobs threads.
    _pretrain(plan, pretrained, n_jobs, all_folds=True)
    results = sk_model_selection.cross_validate(_Replay(pretrained), plan.X, plan.y,
                                                cv=plan.splits, n_jobs=1,
                                                params=plan.params or None, **options)
    results["fit_time"] = pretrained.fit_times[0]
    if return_estimator:  # a fold whose fit failed: an unfitted estimator, as scikit-learn's
        results["estimator"] = [replay.__dict__["model_"] if "model_" in replay.__dict__
                                else pretrained.fresh({}) for replay in results["estimator"]]
    return results


def cross_val_score(estimator, X, y=None, *, groups=None, scoring=None, cv=None, n_jobs=None,
                    verbose=0, params=None, pre_dispatch="2*n_jobs", error_score=np.nan):
    """Evaluate a score by cross-validation.

    Drop-in for scikit-learn's :func:`sklearn.model_selection.cross_val_score`: one metric's
    test scores, by :func:`cross_validate` (the folds' networks trained together)."""
    _validate_as(sk_model_selection.cross_val_score, estimator=estimator, X=X, y=y,
                 groups=groups, scoring=scoring, cv=cv, n_jobs=n_jobs, verbose=verbose,
                 params=params, pre_dispatch=pre_dispatch, error_score=error_score)
    if not (scoring is None or isinstance(scoring, str) or callable(scoring)):
        # Several metrics: scikit-learn's own function refuses them with its own error.
        return sk_model_selection.cross_val_score(estimator, X, y, scoring=scoring)
    scorer = check_scoring(estimator, scoring=scoring)
    return cross_validate(estimator, X, y, groups=groups, scoring={"score": scorer}, cv=cv,
                          n_jobs=n_jobs, verbose=verbose, params=params,
                          pre_dispatch=pre_dispatch, error_score=error_score)["test_score"]
