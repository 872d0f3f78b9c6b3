"""Conversion between fastmlp estimators and scikit-learn's fitted MLP estimators.

Copies weights and the fitted attributes both libraries share (`fitted_state.SHARED_WITH_SKLEARN`)
and nothing else; it never trains and never imports the estimator module (classes are passed in).
"""

import copy
import math
import warnings

import numpy as np
from sklearn import neural_network
from sklearn.utils.validation import check_is_fitted

from . import fitted_state
from .layout import Layout

_SKLEARN_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_SKLEARN_SOLVERS = ("lbfgs", "sgd", "adam")


def to_sklearn(estimator):
    """A fitted scikit-learn estimator with `estimator`'s weights (see ``to_sklearn`` methods)."""
    check_is_fitted(estimator)
    sklearn_class = getattr(neural_network, type(estimator).__name__)
    if estimator.activation not in _SKLEARN_ACTIVATIONS:
        raise ValueError(f"scikit-learn's {sklearn_class.__name__} has no "
                         f"{estimator.activation!r} activation, so it cannot reproduce this model")
    dropped = dropped_by_conversion(estimator)
    if dropped:
        warnings.warn(f"to_sklearn: scikit-learn's {sklearn_class.__name__} has no "
                      f"{'; no '.join(dropped)}. Predictions are the same, but refitting the "
                      "returned estimator would train differently.", UserWarning, stacklevel=3)
    known = sklearn_class().get_params(deep=False)
    params = {k: v for k, v in estimator.get_params(deep=False).items() if k in known}
    if params["solver"] not in _SKLEARN_SOLVERS:
        params["solver"] = "adam"
    theirs = sklearn_class(**params)
    state = vars(estimator)
    for name in fitted_state.SHARED_WITH_SKLEARN:
        if name in state:
            setattr(theirs, name, copy.deepcopy(state[name]))
    theirs.coefs_ = [c.copy() for c in estimator.coefs_]
    theirs.intercepts_ = [b.copy() for b in estimator.intercepts_]
    if "_label_binarizer" in state:
        theirs._label_binarizer = copy.deepcopy(estimator._label_binarizer)
        theirs.classes_ = theirs._label_binarizer.classes_
    return theirs


def dropped_by_conversion(est):
    """What a scikit-learn copy of `est` cannot keep that shaped its training, as phrases (empty
    when nothing is lost). Prediction-only settings (dtype, device, progress_bar) are not
    listed."""
    dropped = []
    if est.solver not in _SKLEARN_SOLVERS:
        dropped.append(f"solver={est.solver!r} (it becomes 'adam')")
    if est.dropout > 0:
        dropped.append(f"dropout={est.dropout}")
    if getattr(est, "class_weight", None) is not None:
        dropped.append(f"class_weight={est.class_weight!r}")
    if est.learning_rate_decay is not None:
        dropped.append(f"learning_rate_decay={est.learning_rate_decay!r}")
    if est.early_stopping and not est.restore_best_weights:
        dropped.append("restore_best_weights=False")
    if est.callbacks:
        dropped.append("callbacks")
    return dropped


def from_sklearn(cls, theirs):
    """A fastmlp estimator of class `cls` holding the weights of a fitted scikit-learn MLP."""
    expected = getattr(neural_network, cls.__name__)
    if not isinstance(theirs, expected):
        raise TypeError(f"from_sklearn expects a fitted {expected.__name__}, got "
                        f"{type(theirs).__name__}")
    check_is_fitted(theirs)
    dtype = np.result_type(*theirs.coefs_).name
    if dtype not in ("float32", "float64"):
        raise ValueError(f"unsupported weight dtype {dtype}")
    state = vars(theirs)
    attributes = {name: copy.deepcopy(state[name]) for name in fitted_state.SHARED_WITH_SKLEARN
                  if name in state}
    scores = attributes.get("validation_scores_")
    if scores is not None:  # scikit-learn records no validation loss; the next epoch appends one
        attributes["validation_loss_curve_"] = [math.nan] * len(scores)
    units = [c.shape[0] for c in theirs.coefs_] + [theirs.coefs_[-1].shape[1]]
    flat = Layout(units).pack(theirs.coefs_, theirs.intercepts_, dtype)
    binarizer = copy.deepcopy(state["_label_binarizer"]) if "_label_binarizer" in state else None
    ours = fitted_state.rebuild(cls, {**theirs.get_params(deep=False), "dtype": dtype},
                                attributes, units, flat, binarizer)
    fitted_state.check_consistency(ours)
    return ours
