"""Layer 6: each rejected input gets a clear error of scikit-learn's class, raised before any
compiled code runs, and a failed fit leaves the estimator exactly as it was."""

import pickle
import re

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from fastmlp import MLPClassifier, MLPRegressor

X = np.random.RandomState(0).normal(size=(40, 4))
y_class = np.arange(40) % 3
y_reg = X[:, 0] * 2.0


def _fitted_state(est):
    return pickle.dumps({k: v for k, v in vars(est).items() if k.endswith("_") or
                         k.startswith("_")})


@pytest.mark.parametrize("bad, message", [
    (np.nan, "Input X contains NaN"),
    (np.inf, "Input X contains infinity"),
])
def test_non_finite_X(bad, message):
    Xb = X.copy()
    Xb[3, 1] = bad
    with pytest.raises(ValueError, match=message):
        MLPRegressor(max_iter=2).fit(Xb, y_reg)


def test_non_finite_y():
    yb = y_reg.copy()
    yb[0] = np.nan
    with pytest.raises(ValueError, match="Input y contains NaN"):
        MLPRegressor(max_iter=2).fit(X, yb)


def test_mismatched_lengths_and_empty_input():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MLPClassifier(max_iter=2).fit(X, y_class[:-1])
    with pytest.raises(ValueError, match="0 sample"):
        MLPClassifier(max_iter=2).fit(X[:0], y_class[:0])
    with pytest.raises(ValueError, match="0 feature"):
        MLPClassifier(max_iter=2).fit(X[:, :0], y_class)


def test_single_class_is_refused():
    with pytest.raises(ValueError, match="at least two classes in y to learn from; y has one "
                                         "class: 'a'"):
        MLPClassifier(max_iter=2).fit(X, np.full(40, "a"))


def test_wrong_number_of_features_at_predict():
    clf = MLPClassifier(max_iter=2).fit(X, y_class)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.predict(X[:, :3])


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    with pytest.raises(AttributeError, match="not fitted"):
        _ = MLPClassifier().coefs_


@pytest.mark.parametrize("params, message", [
    (dict(hidden_layer_sizes=(4, 0)), "hidden_layer_sizes must be > 0"),
    (dict(activation="softplus"), "'activation' parameter"),
    (dict(solver="lion"), "'solver' parameter"),
    (dict(dropout=1.0), "'dropout' parameter"),
    (dict(rho=1.0), "'rho' parameter"),
    (dict(weight_decay=-0.1), "'weight_decay' parameter"),
    (dict(alpha=-1.0), "'alpha' parameter"),
    (dict(learning_rate_init=0.0), "'learning_rate_init' parameter"),
    (dict(momentum=1.5), "'momentum' parameter"),
    (dict(validation_fraction=1.0), "'validation_fraction' parameter"),
    (dict(beta_1=1.0), "'beta_1' parameter"),
    (dict(batch_size=0), "'batch_size' parameter"),
    (dict(max_iter=0), "'max_iter' parameter"),
    (dict(dtype="float16"), "'dtype' parameter"),
])
def test_invalid_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        MLPClassifier(**params).fit(X, y_class)


def test_partial_fit_label_checks():
    clf = MLPClassifier()
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y_class)
    clf.partial_fit(X, y_class, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="has classes not in"):
        clf.partial_fit(X, y_class + 1)
    with pytest.raises(ValueError, match="is not the same as on last call"):
        clf.partial_fit(X, y_class, classes=[0, 1, 2, 3])


def test_partial_fit_refuses_lbfgs():
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")


@pytest.mark.parametrize("weights, message", [
    (-np.ones(40), "Negative values in data passed to sample_weight"),
    (np.zeros(40), "zero for every sample"),
    (np.ones(39), r"sample_weight.shape == \(39,\), expected \(40,\)"),
    (np.full(40, np.nan), "Input sample_weight contains NaN"),
])
def test_bad_sample_weight(weights, message):
    with pytest.raises(ValueError, match=message):
        MLPRegressor(max_iter=2).fit(X, y_reg, sample_weight=weights)


def test_poisson_needs_non_negative_targets():
    with pytest.raises(ValueError, match="non-negative targets"):
        MLPRegressor(loss="poisson", max_iter=2).fit(X, y_reg)


def test_failed_fit_leaves_a_fresh_estimator_unfitted():
    est = MLPRegressor(max_iter=2)
    with pytest.raises(ValueError):
        est.fit(X, np.full(40, np.nan))
    assert not any(k.endswith("_") for k in vars(est))
    assert "_params" not in vars(est)


def test_failed_fit_keeps_the_earlier_fit():
    clf = MLPClassifier(max_iter=3, random_state=0).fit(X, y_class)
    before = _fitted_state(clf)
    proba = clf.predict_proba(X)
    with pytest.raises(ValueError):
        clf.fit(X, np.where(y_class == 0, "a", "b")[:-1])
    with pytest.raises(ValueError):
        clf.partial_fit(X, y_class + 5)  # unseen labels: detected after labels were encoded
    with pytest.raises(ValueError):
        clf.set_params(warm_start=True, hidden_layer_sizes=(3,)).fit(X, y_class)
    assert _fitted_state(clf) == before
    np.testing.assert_array_equal(clf.predict_proba(X), proba)


def test_divergence_raises_and_restores_previous_state():
    reg = MLPRegressor(max_iter=2, random_state=0).fit(X, y_reg)
    before = _fitted_state(reg)
    huge = np.full_like(y_reg, 1e30)
    with pytest.raises(ValueError, match="diverged|non-finite"):
        reg.set_params(warm_start=True, solver="sgd", learning_rate_init=1e10).fit(X * 1e3, huge)
    assert _fitted_state(reg) == before


def test_warm_start_rejects_a_dtype_change():
    clf = MLPClassifier(max_iter=2, warm_start=True).fit(X, y_class)
    with pytest.raises(ValueError, match="refit from scratch to change it"):
        clf.set_params(dtype="float64").fit(X, y_class)


# ----------------------------------------------------------------------------- weights
# A weight training cannot use is refused, naming the input at fault: sample_weight,
# class_weight or their product, judged as training sees them (in the model's dtype, float32
# subnormals counting as zero, as the kernels' flush-to-zero makes them).
@pytest.mark.parametrize("dtype, weights, message", [
    ("float32", np.full(40, 1e-45), r"sample_weight is zero for every sample: .*in float32, "
                                    r"weights below 1.18e-38 count as zero"),
    ("float64", np.full(40, 1e-320), r"sample_weight sums to 4e-319, outside the range of "
                                     r"normal float64 numbers"),
    ("float32", np.full(40, 1e37), r"sample_weight sums to 4e\+38, outside the range"),
    ("float32", np.full(40, 1e39), "Input sample_weight contains infinity"),
])
def test_sample_weight_that_cannot_train(dtype, weights, message):
    reg = MLPRegressor(max_iter=2, dtype=dtype)
    with pytest.raises(ValueError, match=message):
        reg.fit(X, y_reg, sample_weight=weights)
    assert "_params" not in vars(reg)


def test_subnormal_float32_weights_train_as_zero_weights():
    """What the kernels did already (flush-to-zero), now explicit: the same numbers."""
    tiny = np.where(np.arange(40) % 2, 1.0, 1e-45)
    zero = np.where(np.arange(40) % 2, 1.0, 0.0)
    fits = [MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
            .fit(X, y_reg, sample_weight=w) for w in (tiny, zero)]
    np.testing.assert_array_equal(fits[0]._params, fits[1]._params)


@pytest.mark.parametrize("class_weight, message", [
    ({1: -1.0}, "class_weight for label 1 is -1.0: class weights must be finite numbers >= 0"),
    ({1: np.nan}, "class_weight for label 1 is nan"),
    ({2: np.inf}, "class_weight for label 2 is inf"),
    ({1: "2"}, "class_weight for label 1 is '2'"),
    ({1: None}, "class_weight for label 1 is None"),
    ({0: 0, 1: 0.0, 2: 0}, "class_weight is zero for every class"),
    ({0: 1e-45, 1: 1e-45, 2: 1e-45}, "class_weight is zero for every sample.*float32"),
    ({0: 1e37, 1: 1e37, 2: 1e37}, "class_weight sums to .* outside the range of normal float32"),
])
def test_class_weight_gets_the_rules_of_sample_weight(class_weight, message):
    clf = MLPClassifier(max_iter=2, class_weight=class_weight)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y_class)
    assert "_params" not in vars(clf)


@pytest.mark.parametrize("sample_weight, class_weight, message", [
    (np.full(40, 1e-30), {0: 1e-30, 1: 1e-30, 2: 1e-30}, "is zero for every sample"),
    (np.full(40, 1e30), {0: 1e30, 1: 1e30, 2: 1e30}, "has values too large for float32"),
    (np.where(y_class == 2, 0.0, 1.0), {0: 0, 1: 0}, "is zero for every sample"),
])
def test_the_product_of_sample_and_class_weights_must_be_trainable(sample_weight, class_weight,
                                                                   message):
    clf = MLPClassifier(max_iter=2, class_weight=class_weight)
    with pytest.raises(ValueError, match=r"sample_weight x class_weight \(their product, per "
                                         r"sample\) " + message):
        clf.fit(X, y_class, sample_weight=sample_weight)


def test_class_weight_zero_for_some_classes_still_trains():
    clf = MLPClassifier(max_iter=2, class_weight={0: 0.0, 1: 0.0}).fit(X, y_class)
    assert np.isfinite(clf.loss_) and clf.loss_ > 0


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("callbacks, problem", [
    ([3], r"callbacks\[0\] \(3\) is not callable"),
    ([print, "stop"], r"callbacks\[1\] \('stop'\) is not callable"),
    ((None,), "is not callable"),
    ([[print]], "is not callable"),
    ([lambda: True], "cannot be called with one argument"),
    ([lambda record, other: True], "cannot be called with one argument"),
    ([int.__add__], "cannot be called with one argument"),
    ("stop", "must be an instance of 'list'"),
])
def test_callbacks_are_checked_as_a_parameter_before_any_work(callbacks, problem):
    from sklearn.utils._param_validation import InvalidParameterError

    clf = MLPClassifier(max_iter=2, callbacks=callbacks)
    for fit in (clf.fit, lambda X, y: clf.partial_fit(X, y, classes=[0, 1, 2])):
        with pytest.raises(InvalidParameterError, match="The 'callbacks' parameter of "
                                                        "MLPClassifier must be") as info:
            fit(X, y_class)
        assert re.search(problem, str(info.value)), str(info.value)
        assert not any(k.endswith("_") for k in vars(clf))


def test_callbacks_that_take_one_argument_are_accepted():
    calls = []

    class Recorder:
        def __call__(self, record, *more):
            calls.append(record.epoch)

    MLPClassifier(max_iter=2, callbacks=[Recorder(), lambda record, stop=False: stop, print,
                                          calls.append]).fit(X, y_class)
    assert calls[0] == 1 and len(calls) == 4


@pytest.mark.parametrize("make, message", [
    (lambda: (X[:10, :3], y_class[:10]),
     r"validation_data: X_val has 3 features, but MLPClassifier is expecting 4"),
    (lambda: (np.where(np.eye(10, 4) > 0, np.nan, X[:10]), y_class[:10]),
     "validation_data: Input X_val contains NaN"),
    (lambda: (X[:10, 0], y_class[:10]), "validation_data: Expected 2D array"),
    (lambda: (X[:10], y_class[:9]), "validation_data: X_val has 10 samples but y_val has 9"),
    (lambda: (X[:10], y_class[:10] + 5),
     "validation_data: y_val does not fit the model: `y` has classes not in"),
    (lambda: (X[:10], y_class[:10], -np.ones(10)),
     "Negative values in data passed to sample_weight_val"),
    (lambda: (X[:10], y_class[:10], np.zeros(10)), "sample_weight_val is zero for every sample"),
])
def test_validation_data_errors_name_validation_data(make, message):
    with pytest.raises(ValueError, match=message):
        MLPClassifier(max_iter=2).fit(X, y_class, validation_data=make())


def test_validation_targets_are_named_too():
    y_val = y_reg[:10].copy()
    y_val[3] = np.nan
    with pytest.raises(ValueError, match="validation_data: Input y_val contains NaN"):
        MLPRegressor(max_iter=2).fit(X, y_reg, validation_data=(X[:10], y_val))
    with pytest.raises(ValueError, match="validation_data's y_val has values up to 1e\\+30"):
        MLPRegressor(max_iter=2).fit(X, y_reg, validation_data=(X[:10], np.full(10, 1e30)))


@pytest.mark.parametrize("first, then", [
    (dict(solver="lbfgs"), dict(solver="adam")),
    (dict(early_stopping=True), dict(early_stopping=False)),
    (dict(early_stopping=False), dict(early_stopping=True)),
])
def test_warm_start_after_changing_the_solver_or_early_stopping(first, then):
    """The mini-batch bookkeeping an earlier fit did not keep is started afresh (this failed on a
    missing loss_curve_ or a best_loss_ of None)."""
    reg = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0, **first).fit(X, y_reg)
    before = reg.predict(X)
    reg.set_params(warm_start=True, **then).fit(X, y_reg)
    assert len(reg.loss_curve_) >= 1 and not np.array_equal(reg.predict(X), before)


def test_partial_fit_of_a_model_converted_from_sklearn_with_early_stopping():
    """scikit-learn keeps no validation loss curve: the converted model has NaN for the epochs
    scikit-learn ran, and continuing it records real validation losses after them."""
    from sklearn.neural_network import MLPRegressor as SkMLPRegressor

    theirs = SkMLPRegressor(hidden_layer_sizes=(4,), early_stopping=True, max_iter=3,
                            random_state=0).fit(X, y_reg)
    ours = MLPRegressor.from_sklearn(theirs)
    ours.partial_fit(X, y_reg)
    assert len(ours.validation_scores_) == len(theirs.validation_scores_) + 1
    assert len(ours.validation_loss_curve_) == len(ours.validation_scores_)
    assert np.isnan(ours.validation_loss_curve_[:-1]).all()
    assert np.isfinite(ours.validation_loss_curve_[-1])


def test_malformed_sparse_input_is_refused_before_anything_reads_it():
    """scipy builds CSR/CSC/COO matrices without checking their indices; an index outside the
    shape made the kernels (and scipy's own conversions) write out of bounds. Run in a child
    process, since without the check the process's memory is corrupted."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import warnings
        import numpy as np
        import scipy.sparse as sp
        from fastmlp import MLPClassifier
        warnings.simplefilter("ignore")
        X = np.random.RandomState(0).rand(40, 4)
        y = np.arange(40) % 2
        clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2).fit(X, y)
        ones, rows = np.ones(3), np.arange(4)
        bad = {
            "csr index": sp.csr_matrix((ones, [0, 10**6, 2], rows), shape=(3, 4)),
            "csr negative": sp.csr_matrix((ones, [0, -5, 2], rows), shape=(3, 4)),
            "csr pointer": sp.csr_matrix((ones, [0, 1, 2], [0, 1, 9, 3]), shape=(3, 4)),
            "csc index": sp.csc_matrix((ones, [0, 10**6, 2], [0, 1, 2, 3, 3]), shape=(3, 4)),
            "coo index": sp.coo_matrix((ones, ([0, 1, 2], [0, 1, 2])), shape=(3, 4)),
        }
        bad["coo index"].col[1] = 10**6
        for name, A in bad.items():
            for call in (lambda: clf.predict_proba(A), lambda: clf.fit(A, y[:3]),
                         lambda: clf.fit(X, y, validation_data=(A, y[:3]))):
                try:
                    call()
                    raise SystemExit(name + " was accepted")
                except ValueError as exc:
                    assert "is malformed" in str(exc), (name, exc)
        print("refused")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "refused", done.stderr[-2000:]


def test_validation_data_with_other_column_names_names_validation_data():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    other = pd.DataFrame(X[:10], columns=["a", "b", "c", "e"])
    with pytest.raises(ValueError, match="validation_data: The feature names should match"):
        MLPClassifier(max_iter=2).fit(frame, y_class, validation_data=(other, y_class[:10]))
