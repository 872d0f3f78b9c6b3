"""Many networks trained together: fit_many.

(Serial stand-in: every estimator is fitted on its own. The grouped, lockstep driver replaces
this body; its results are the same.)
"""

import numbers

ERRORS = ("raise", "return")


def fit_many(estimators, X, y, sample_weight=None, *, n_jobs=None, errors="raise",
             progress_bar=False):
    """Fit every estimator on (X, y[, sample_weight]) as its own ``fit`` would, training together
    those that can be; returns the list of estimators (the same objects, fitted).

    errors="raise": a fit that fails does not stop the others; once all are done, the first
    failure is raised. errors="return": the failed fit's entry in the returned list is the
    exception instead of the estimator.
    """
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}.")
    if n_jobs is not None and not isinstance(n_jobs, numbers.Integral):
        raise ValueError(f"n_jobs must be an int or None, got {n_jobs!r}.")
    estimators = list(estimators)
    results = []
    for est in estimators:
        try:
            if sample_weight is None:
                est.fit(X, y)
            else:
                est.fit(X, y, sample_weight=sample_weight)
            results.append(est)
        except Exception as exc:  # noqa: BLE001 - one failure is that model's alone
            results.append(exc)
    if errors == "raise":
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results
