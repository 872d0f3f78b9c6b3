"""Layer 5: scikit-learn's own conformance suite on both estimators, in both dtypes."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastmlp import MLPClassifier, MLPRegressor

# These two checks compare predictions at rtol=1e-7, below float32's resolution (eps = 1.2e-7):
# in float32 the weighted and repeated fits agree to one or two ulps, not more. The float64
# instances below must pass them, and test_float32_sample_weight_equivalence checks the same
# property in float32 at a float32 tolerance.
_FLOAT32_RESOLUTION = {
    check: "compares at rtol=1e-7, finer than float32 resolution; float64 instances pass it"
    for check in ("check_sample_weight_equivalence_on_dense_data",
                  "check_sample_weight_equivalence_on_sparse_data")
}


# With dropout, each row's mask depends on its position in the epoch, so a row repeated twice
# gets two different masks while a row of weight 2 gets one: the two fits differ by design.
_DROPOUT_MASKS = {
    check: "dropout masks follow row positions, so repeating a row differs from weighting it"
    for check in _FLOAT32_RESOLUTION
}


def _expected_failures(estimator):
    if estimator.dropout > 0:
        return _DROPOUT_MASKS
    return _FLOAT32_RESOLUTION if estimator.dtype == "float32" else {}


# max_iter is shortened as scikit-learn does for its own MLPs; every other default stays.
@parametrize_with_checks(
    [MLPClassifier(max_iter=100), MLPRegressor(max_iter=100),
     MLPClassifier(max_iter=100, dtype="float64"), MLPRegressor(max_iter=100, dtype="float64"),
     # the features scikit-learn does not have must keep every contract too
     MLPClassifier(max_iter=100, solver="adamw", activation="gelu", dtype="float64"),
     MLPRegressor(max_iter=100, solver="adagrad", activation="silu", dtype="float64"),
     MLPClassifier(max_iter=100, dropout=0.1, dtype="float64")],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("estimator", [MLPClassifier(solver="lbfgs", max_iter=100),
                                       MLPRegressor(solver="sgd", tol=1e-2, max_iter=100)])
def test_float32_sample_weight_equivalence(estimator):
    """An integer weight w acts as w copies of the sample, in float32 too. 100 L-BFGS iterations
    amplify float32 rounding to ~1e-4; mishandled weights would differ by ~1e-1."""
    rng = np.random.RandomState(0)
    X = rng.rand(15, 30)
    y = rng.randint(0, 3, 15) if isinstance(estimator, MLPClassifier) else rng.rand(15)
    sw = rng.randint(0, 3, 15)
    weighted = clone(estimator).set_params(random_state=0, batch_size=100)
    repeated = clone(estimator).set_params(random_state=0, batch_size=100)
    weighted.fit(X, y, sample_weight=sw)
    repeated.fit(X.repeat(sw, axis=0), y.repeat(sw))
    method = "predict_proba" if isinstance(estimator, MLPClassifier) else "predict"
    np.testing.assert_allclose(getattr(weighted, method)(X), getattr(repeated, method)(X),
                               rtol=1e-3, atol=1e-4)
