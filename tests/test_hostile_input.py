"""Property-based hostile input, with scikit-learn as the oracle.

Hypothesis generates shapes, dtypes, memory layouts, pandas frames, memmaps, label types and
poisoned values. For every input, fastmlp (dtype="float64") must do what scikit-learn does: both
succeed with the same predictions, or both raise the same class of exception. A numba typing error,
a crash or a silent difference fails the test.

Two more families of hostility, below: fitted attributes assigned wrong values before predict,
partial_fit and warm_start, and predict while the same estimator fits.
"""

import contextlib
import pickle
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn import neural_network as sk

import fastmlp

pd = pytest.importorskip("pandas")

X_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_, object]
LABEL_KINDS = ["int", "str", "bool", "float", "single_class"]


@st.composite
def inputs(draw):
    # Most draws are valid so that successful fits get compared too; each kind of poison is rarer.
    n = draw(st.sampled_from([0] + [3, 8, 25] * 3))
    d = draw(st.sampled_from([0] + [1, 4] * 4))
    rng = np.random.RandomState(draw(st.integers(0, 2**16)))
    X = rng.normal(size=(n, d)) * draw(st.sampled_from([1.0, 100.0]))
    dtype = draw(st.sampled_from(X_DTYPES))
    X = X.astype(dtype)
    poison = draw(st.sampled_from([None] * 9 + [np.nan, np.inf, "text"]))
    if poison is not None and X.size:
        if poison == "text":
            X = X.astype(object)
        elif dtype in (np.float64, np.float32, np.float16, object):
            pass
        else:
            X = X.astype(np.float64)
        X[rng.randint(n), rng.randint(d)] = poison
    layout = draw(st.sampled_from(["C", "F", "strided", "readonly", "frame", "list"]))
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided" and d:
        X = np.repeat(X, 2, axis=1)[:, ::2]
    elif layout == "readonly":
        X = X.copy()
        X.setflags(write=False)
    elif layout == "frame":
        X = pd.DataFrame(X, columns=[f"c{i}" for i in range(d)])
    elif layout == "list":
        X = X.tolist()

    kind = draw(st.sampled_from(LABEL_KINDS[:-1] * 3 + LABEL_KINDS[-1:]))
    labels = rng.randint(0, 3, size=n)
    y = {"int": labels, "str": np.array(["a", "b", "c"])[labels], "bool": labels > 0,
         "float": labels.astype(float), "single_class": np.zeros(n, dtype=int)}[kind]
    if draw(st.integers(0, 9)) == 0 and n:
        y = y[:-1]  # length mismatch
    return X, y


def _outcome(make, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est = make().fit(X, y)
            return "ok", est
        except Exception as exc:  # the class of the exception is what we compare
            return type(exc), exc


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(inputs())
def test_classifier_behaves_like_sklearn_on_hostile_input(data):
    X, y = data
    params = dict(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    theirs, theirs_est = _outcome(lambda: sk.MLPClassifier(**params), X, y)
    # Like arithmetic with like: scikit-learn computes in float32 when the input is float32.
    dtype = "float32" if theirs == "ok" and theirs_est.coefs_[0].dtype == np.float32 else \
        "float64"
    ours, ours_est = _outcome(lambda: fastmlp.MLPClassifier(dtype=dtype, **params), X, y)
    if theirs == "ok" and len(np.unique(np.asarray(y))) == 1:
        # The one intended difference: scikit-learn fits a single class (and then reports two
        # probability columns for it); fastmlp refuses, naming the problem.
        assert ours is ValueError and "at least two classes" in str(ours_est)
        return
    assert ours == theirs, f"fastmlp: {ours_est!r}; scikit-learn: {theirs_est!r}"
    if ours == "ok":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours_p, theirs_p = ours_est.predict_proba(X), theirs_est.predict_proba(X)
            # float64: the same numbers up to summation order; float32: to float32 precision.
            tolerance = 1e-9 if dtype == "float64" else 1e-5
            np.testing.assert_allclose(ours_p, theirs_p, rtol=tolerance, atol=tolerance)
            # Labels must agree wherever the winning class is not a tie within that tolerance.
            top2 = np.sort(theirs_p, axis=1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 10 * tolerance
            np.testing.assert_array_equal(ours_est.predict(X)[clear], theirs_est.predict(X)[clear])


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(inputs(), st.sampled_from(["float32", "float64"]))
def test_regressor_behaves_like_sklearn_on_hostile_input(data, dtype):
    X, y = data
    y = np.asarray(y)
    if y.dtype.kind in "US":
        y = y.astype(object)  # text targets: both must refuse them
    params = dict(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    ours, ours_est = _outcome(lambda: fastmlp.MLPRegressor(dtype=dtype, **params), X, y)
    theirs, theirs_est = _outcome(lambda: sk.MLPRegressor(**params), X, y)
    assert ours == theirs, f"fastmlp: {ours_est!r}; scikit-learn: {theirs_est!r}"
    if ours == "ok":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # scikit-learn computes in float32 when the input is float32 (or float16).
            both_float64 = dtype == "float64" and theirs_est.coefs_[0].dtype == np.float64
            tolerance = 1e-9 if both_float64 else 1e-3
            np.testing.assert_allclose(ours_est.predict(X), theirs_est.predict(X),
                                       rtol=tolerance, atol=tolerance)


def test_memmap_input_is_accepted_without_copy(tmp_path):
    X = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float32,
                                  shape=(60, 4))
    X[:] = np.random.RandomState(0).normal(size=(60, 4))
    X.flush()
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    clf = fastmlp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=3).fit(X, np.arange(60) % 2)
    assert clf.predict(X).shape == (60,)


# ----------------------------------------------------------------------------- attribute edits
# Fitted attributes are public, and users assign them. Whatever they assign, compiled code must
# never read or write outside its buffers: predict and partial_fit either work as before or
# refuse with a ValueError naming the attribute. The kernels below are guarded, so that without
# those checks these tests fail on an assertion instead of corrupting the test process's memory.

RNG = np.random.RandomState(0)
X_EDIT = RNG.normal(size=(60, 4))
y_EDIT = np.arange(60) % 3


@pytest.fixture
def guarded_kernels(monkeypatch):
    import fastmlp.cpu as cpu

    def check(params, features, net, outputs):
        table = net.layers
        assert params.shape == (int(table[-1, 3] + table[-1, 1]),), "parameter buffer"
        assert features.X.shape[1] == table[0, 0], "input width"
        assert outputs == table[-1, 1], "output width"
        assert net.hidden in [a.code for a in fastmlp.ops.ACTIVATIONS if a.hidden]

    real_predict, real_epoch = cpu.predict, cpu.train_epoch

    def predict(out, params, features, rows, net, chunk_rows):
        check(params, features, net, out.shape[1])
        assert out.shape[0] == rows.shape[0]
        return real_predict(out, params, features, rows, net, chunk_rows)

    def train_epoch(state, features, Y, sw, order, batch_size, net, opt):
        check(state.params, features, net, Y.shape[1])
        assert all(a.shape == state.params.shape for a in state), "optimizer state"
        assert sw.shape == (Y.shape[0],)
        return real_epoch(state, features, Y, sw, order, batch_size, net, opt)

    monkeypatch.setattr(cpu, "predict", predict)
    monkeypatch.setattr(cpu, "train_epoch", train_epoch)


@pytest.fixture(scope="module")
def fitted_classifier():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fastmlp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=3,
                                     random_state=0).fit(X_EDIT, y_EDIT)


WRONG_COUNTS = [0, -1, 2**64, 10**400, 3.0, "3", None, True, np.array([3]), [3]]
# (attribute, wrong value, what predict does, what partial_fit does): "error" is a ValueError
# naming the attribute; "ok" is the unedited model's behaviour (predict: the same numbers).
EDITS = (
    [("n_outputs_", v, "error", "error") for v in WRONG_COUNTS + [1, 2, 4, 20]]
    + [("n_features_in_", v, "error", "error") for v in WRONG_COUNTS + [3, 5]]
    + [("n_layers_", v, "error", "error") for v in WRONG_COUNTS + [2, 4]]
    + [("out_activation_", v, "error", "error") for v in ["identity", "logistic", "exp", "soft",
                                                          None, 4, ["softmax"]]]
    + [("classes_", v, "error", "error") for v in [
        np.arange(2), np.arange(4), np.arange(3)[::-1], np.array(["0", "1", "2"]),
        np.arange(3.0), np.arange(6).reshape(3, 2), [0, 1, 2], None, 3]]
    + [("feature_names_in_", v, "error", "error") for v in [
        np.array(["a", "b"]), np.array(["a", "b", "c", "d", "e"]), np.arange(4), 4,
        ["a", "b", "c", "d"]]]
    + [("t_", v, "ok", "error") for v in [-1, 2**70, 1.5, "60", None, np.array([60])]]
    + [("stopped_early_", v, "ok", "error") for v in ["no", None, np.array([True, False])]]
    + [("loss_curve_", v, "ok", "error") for v in [None, "abc", (1.0,), [1.0, "a"], 3.0]]
    + [("best_loss_", v, "ok", "error") for v in ["x", [1.0]]]
    + [("validation_scores_", v, "ok", "error") for v in ["x", [0.5, "x"], [], [0.5]]]
    + [("validation_loss_curve_", v, "ok", "error") for v in [[], "x"]]
    + [("best_validation_score_", "x", "ok", "error"), ("best_validation_score_", 1.0, "ok", "ok")]
    + [("n_iter_", v, "ok", "ok") for v in [-1, "x", None, 2**70]]     # reset by each fit
    + [("loss_", v, "ok", "ok") for v in [None, "x", np.nan]]          # overwritten
)


def _ids(edit):
    return f"{edit[0]}={fastmlp.fitted_state.short_repr(edit[1], 20)}"


@pytest.mark.parametrize("attribute, value, at_predict, at_partial_fit", EDITS,
                         ids=[_ids(e) for e in EDITS])
def test_attribute_edits_before_predict_and_partial_fit(fitted_classifier, guarded_kernels,
                                                        attribute, value, at_predict,
                                                        at_partial_fit):
    import copy

    expected = fitted_classifier.predict_proba(X_EDIT)
    clf = copy.deepcopy(fitted_classifier)
    setattr(clf, attribute, value)
    for method in ("predict_proba", "predict", "predict_log_proba", "score"):
        args = (X_EDIT, y_EDIT) if method == "score" else (X_EDIT,)
        if at_predict == "error":
            with pytest.raises(ValueError, match=attribute):
                getattr(clf, method)(*args)
        elif method == "predict_proba":
            np.testing.assert_array_equal(clf.predict_proba(X_EDIT), expected)
        else:
            getattr(clf, method)(*args)
    for call in (lambda: clf.partial_fit(X_EDIT, y_EDIT),
                 lambda: clf.set_params(warm_start=True).fit(X_EDIT, y_EDIT)):
        if at_partial_fit == "error":
            with pytest.raises(ValueError, match=attribute):
                call()
            # A refused call changes nothing.
            assert pickle.dumps(getattr(clf, attribute)) == pickle.dumps(value)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                call()
            assert clf.predict_proba(X_EDIT).shape == (60, 3)


@pytest.mark.parametrize("attribute", ["coefs_", "intercepts_"])
@pytest.mark.parametrize("value", [
    "short", "long", "wrong shape", "transposed", "text", "nan", "huge", "complex", "none",
    "one array"])
def test_weight_assignments_are_checked_and_leave_the_model_unchanged(
        fitted_classifier, guarded_kernels, attribute, value):
    import copy

    clf = copy.deepcopy(fitted_classifier)
    good = [a.copy() for a in getattr(clf, attribute)]
    bad = {"short": good[:1], "long": good + good, "wrong shape": [a[:1] for a in good],
           "transposed": [a.T[..., None] for a in good], "text": [a.astype(str) for a in good],
           "nan": [a * np.nan for a in good], "huge": [a + 1e300 for a in good],
           "complex": [a + 1j for a in good], "none": None, "one array": good[0]}[value]
    before = clf.predict_proba(X_EDIT)
    with pytest.raises(ValueError, match=attribute):
        setattr(clf, attribute, bad)
    np.testing.assert_array_equal(clf.predict_proba(X_EDIT), before)
    setattr(clf, attribute, [a * 0 for a in good])  # a right assignment is used
    assert not np.array_equal(clf.predict_proba(X_EDIT), before)


def test_regressor_attribute_edits_are_refused(guarded_kernels):
    Y = np.column_stack([X_EDIT[:, 0], X_EDIT[:, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = fastmlp.MLPRegressor(hidden_layer_sizes=(5,), max_iter=2).fit(X_EDIT, Y)
    for attribute, value in [("n_outputs_", 1), ("n_outputs_", 3), ("out_activation_", "exp"),
                             ("n_features_in_", 40)]:
        saved = getattr(reg, attribute)
        setattr(reg, attribute, value)
        for call in (lambda: reg.predict(X_EDIT), lambda: reg.partial_fit(X_EDIT, Y)):
            with pytest.raises(ValueError, match=attribute):
                call()
        setattr(reg, attribute, saved)
    reg.set_params(loss="poisson")  # changes the output the fitted network was trained with
    with pytest.raises(ValueError, match="out_activation_"):
        reg.predict(X_EDIT)
    reg.set_params(loss="squared_error", activation="softmax")
    with pytest.raises(ValueError, match="activation='softmax'"):
        reg.predict(X_EDIT)
    reg.set_params(loss="log_loss", activation="relu")
    with pytest.raises(ValueError, match="loss='log_loss'"):
        reg.predict(X_EDIT)


def test_classifier_loss_edit_is_refused(fitted_classifier, guarded_kernels):
    import copy

    clf = copy.deepcopy(fitted_classifier)
    clf.loss = "squared_error"  # a class attribute, assignable on the instance
    with pytest.raises(ValueError, match="loss='squared_error'"):
        clf.partial_fit(X_EDIT, y_EDIT)


def test_issue_22_attribute_edits_do_not_crash_a_process():
    """The reported crash, in a child process: before the checks, n_outputs_ = 1 on a 10-class
    model corrupted the heap within a few predict_proba calls, and n_outputs_ = 20 returned
    uninitialised memory."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import warnings
        import numpy as np
        from sklearn.datasets import load_digits
        from fastmlp import MLPClassifier
        warnings.simplefilter("ignore")
        X, y = load_digits(return_X_y=True)
        m = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X / 16, y)
        for wrong in (1, 20):
            m.n_outputs_ = wrong
            for _ in range(50):
                try:
                    m.predict_proba(X)
                    raise SystemExit("predict_proba accepted n_outputs_ = %d" % wrong)
                except ValueError as exc:
                    assert "n_outputs_" in str(exc)
        print("refused")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "refused", done.stderr[-2000:]


# ----------------------------------------------------------------------------- predict during fit
# The rule: a prediction from another thread while an estimator is being fitted raises
# RuntimeError (as a second fit does); the fitting thread's callbacks may predict; a fit that
# starts while predictions run waits for them.


@contextlib.contextmanager
def fit_held_in_another_thread(clf, at_each_epoch=lambda record: None):
    """clf.fit(X_EDIT, y_EDIT) running in another thread, held inside its first epoch's callback
    (after at_each_epoch, which every epoch's callback calls first) while the block runs."""
    import threading

    in_fit, release = threading.Event(), threading.Event()

    def hold(record):
        at_each_epoch(record)
        if record.epoch == 1:
            in_fit.set()
            release.wait(timeout=60)

    clf.set_params(callbacks=[hold])
    fitting = threading.Thread(target=clf.fit, args=(X_EDIT, y_EDIT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitting.start()
        try:
            assert in_fit.wait(timeout=120)
            yield
        finally:
            release.set()
            fitting.join(timeout=120)


def test_predict_from_another_thread_during_fit_is_refused(guarded_kernels):
    seen_by_callback = []

    def predict_in_callback(record):
        if record.epoch == 1:
            seen_by_callback.append(record.model.predict_proba(X_EDIT).shape)

    clf = fastmlp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X_EDIT, y_EDIT % 2)  # a binary model first: the refit below changes its shape
    with fit_held_in_another_thread(clf, predict_in_callback):
        for method in ("predict", "predict_proba", "predict_log_proba"):
            with pytest.raises(RuntimeError, match="being fitted in another thread"):
                getattr(clf, method)(X_EDIT)
        with pytest.raises(RuntimeError, match="being fitted in another thread"):
            clf.score(X_EDIT, y_EDIT)
    assert seen_by_callback == [(60, 3)]  # the fitting thread's own callback may predict
    assert clf.predict_proba(X_EDIT).shape == (60, 3)


def test_saving_pickling_and_copying_during_a_fit_in_another_thread_are_refused(tmp_path):
    """A model file, pickle or copy taken while another thread fits would hold a state half old,
    half new: refused, as predictions are, and nothing is written. The fit's own callbacks may
    save a checkpoint between epochs, when the state is whole."""
    import copy
    import pickle

    checkpoints = []

    def checkpoint(record):
        record.model.save(tmp_path / f"epoch{record.epoch}.fastmlp")
        checkpoints.append(record.model.to_sklearn().n_iter_)

    clf = fastmlp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0)
    with fit_held_in_another_thread(clf, checkpoint):
        refusals = {
            "save": lambda: clf.save(tmp_path / "during.fastmlp"),
            "to_sklearn": clf.to_sklearn,
            "pickling or copying": lambda: pickle.dumps(clf),
        }
        for what, attempt in refusals.items():
            with pytest.raises(RuntimeError,
                               match=f"being fitted in another thread; {what} cannot"):
                attempt()
        for copier in (copy.copy, copy.deepcopy):
            with pytest.raises(RuntimeError, match="pickling or copying cannot"):
                copier(clf)
        with pytest.raises(RuntimeError, match="pickling cannot"):
            clf.__getstate__()
    assert not (tmp_path / "during.fastmlp").exists()
    assert checkpoints == [1, 2]
    assert fastmlp.load(tmp_path / "epoch2.fastmlp").n_iter_ == 2
    clf.set_params(callbacks=None)  # a local function does not pickle
    assert pickle.loads(pickle.dumps(clf)).n_iter_ == 2  # after the fit, as ever


def _two_class_classifier():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fastmlp.MLPClassifier(hidden_layer_sizes=(5,), max_iter=2,
                                     random_state=0).fit(X_EDIT, y_EDIT % 2)


def _predict_and_refit_threads(clf):
    """(shapes, predicting, fitting): two threads, not started, on clf: one predicts (its
    result's shape goes into the list shapes), the other refits clf on three classes."""
    import threading

    shapes = []
    return (shapes,
            threading.Thread(target=lambda: shapes.append(clf.predict_proba(X_EDIT).shape)),
            threading.Thread(target=clf.fit, args=(X_EDIT, y_EDIT)))


def test_a_fit_waits_for_the_predictions_running_on_its_estimator(monkeypatch):
    import threading

    import fastmlp.cpu as cpu

    clf = _two_class_classifier()
    in_predict, release, trained = threading.Event(), threading.Event(), threading.Event()
    real_predict, real_epoch = cpu.predict, cpu.train_epoch

    def slow_predict(*args):
        in_predict.set()
        release.wait(timeout=60)
        return real_predict(*args)

    monkeypatch.setattr(cpu, "predict", slow_predict)
    monkeypatch.setattr(cpu, "train_epoch", lambda *a: trained.set() or real_epoch(*a))
    shapes, predicting, fitting = _predict_and_refit_threads(clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicting.start()
        assert in_predict.wait(timeout=60)
        fitting.start()
        try:
            assert not trained.wait(timeout=1.0)  # the fit has not touched the model
        finally:
            release.set()
            predicting.join(timeout=60)
            fitting.join(timeout=120)
    assert shapes == [(60, 2)] and trained.is_set()
    assert clf.predict_proba(X_EDIT).shape == (60, 3)


def test_a_running_read_may_read_again_while_a_fit_waits_for_it(monkeypatch):
    """predict_log_proba copies the estimator inside its own read: a fit that started meanwhile
    (registered, waiting for the reads to end) must not make that nested read fail."""
    import copy

    import fastmlp.cpu as cpu
    from fastmlp import estimators

    clf = _two_class_classifier()
    real_predict, nested = cpu.predict, []

    def predict_then_copy(*args):
        if nested:  # the later predictions are plain ones
            return real_predict(*args)
        deadline = time.monotonic() + 60
        while id(clf) not in estimators._FITTING and time.monotonic() < deadline:
            time.sleep(0.01)  # until the fit in the other thread has registered
        waiting = estimators._FITTING.get(id(clf))
        nested.append((copy.copy(clf).n_iter_, waiting is not None))  # a second read, inside
        return real_predict(*args)

    monkeypatch.setattr(cpu, "predict", predict_then_copy)
    shapes, predicting, fitting = _predict_and_refit_threads(clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicting.start()
        fitting.start()
        predicting.join(timeout=120)
        fitting.join(timeout=120)
    assert nested == [(2, True)] and shapes == [(60, 2)]  # the fit was waiting: copied anyway
    assert clf.predict_proba(X_EDIT).shape == (60, 3)  # the fit ran after the read


def test_predictions_from_many_threads_at_once_are_allowed(fitted_classifier):
    """Readers do not exclude each other: parallel predict on one model (joblib's threading
    backend, a web server) gives every thread the single-threaded answer."""
    from concurrent.futures import ThreadPoolExecutor

    expected = fitted_classifier.predict_proba(X_EDIT)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fitted_classifier.predict_proba(X_EDIT), range(64)))
    for result in results:
        np.testing.assert_array_equal(result, expected)
