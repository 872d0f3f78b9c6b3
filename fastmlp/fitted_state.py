"""The one table of an estimator's fitted state, and the one way to rebuild an estimator from it.

Fitting (which attributes a fresh fit clears), persistence (which attributes a model file holds,
how each is checked and what a further epoch needs) and conversion (which attributes scikit-learn
shares) all read `FITTED`. Nothing here reads files or runs kernels; this module imports no other
part of fastmlp but layout and ops.
"""

import math
from collections import namedtuple
from numbers import Integral, Real

import numpy as np
from sklearn.preprocessing import LabelBinarizer

from . import ops
from .layout import Layout

MINI_BATCH_SOLVERS = tuple(ops.OPTIMIZER)  # the solvers that train epoch by epoch
MAX_LABEL_CELLS = 2**21  # text labels x longest label: 8 MiB as numpy's fixed-width text

# check: turns a value read from a model file into the attribute's value, or raises ValueError.
# sklearn: scikit-learn's MLP estimators have the attribute too (to_sklearn/from_sklearn copy it).
# per_fit: it exists only for some solvers or stopping rules, so a fresh fit clears it first.
# required: every fitted estimator has it, so a model file must hold it.
# resume: when a model of a mini-batch solver needs it (not None) for its next epoch (partial_fit,
#   warm_start): "always", or only "with early_stopping" / "without early_stopping".
Field = namedtuple("Field", "check sklearn per_fit required resume", defaults=(None,))


def _count(value):
    if type(value) is not int or not 0 <= value < 2**63:  # bool is not a count
        raise ValueError("must be a non-negative integer (of 64 bits)")
    return value


def _real(value):
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError("must be a number")
    return float(value)


def _real_or_none(value):
    return None if value is None else _real(value)


def _curve(value):
    if value is None:
        return None
    if not isinstance(value, list) or not all(
            isinstance(v, Real) and not isinstance(v, bool) for v in value):
        raise ValueError("must be a list of numbers")
    return [float(v) for v in value]


def _text(value):
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _flag(value):
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _names(value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return np.asarray(value, dtype=object)


FITTED = {
    "n_iter_": Field(_count, sklearn=True, per_fit=False, required=True),
    "t_": Field(_count, sklearn=True, per_fit=False, required=True),
    "n_features_in_": Field(_count, sklearn=True, per_fit=False, required=True),
    "feature_names_in_": Field(_names, sklearn=True, per_fit=False, required=False),
    "n_outputs_": Field(_count, sklearn=True, per_fit=False, required=True),
    "n_layers_": Field(_count, sklearn=True, per_fit=False, required=True),
    "out_activation_": Field(_text, sklearn=True, per_fit=False, required=True),
    "loss_": Field(_real, sklearn=True, per_fit=False, required=False),
    "best_loss_": Field(_real_or_none, sklearn=True, per_fit=True, required=False,
                        resume="without early_stopping"),
    "loss_curve_": Field(_curve, sklearn=True, per_fit=True, required=False, resume="always"),
    "validation_scores_": Field(_curve, sklearn=True, per_fit=True, required=False,
                                resume="with early_stopping"),
    "best_validation_score_": Field(_real_or_none, sklearn=True, per_fit=True, required=False,
                                    resume="with early_stopping"),
    "validation_loss_curve_": Field(_curve, sklearn=False, per_fit=True, required=False,
                                    resume="with early_stopping"),
    "stopped_early_": Field(_flag, sklearn=False, per_fit=True, required=False),
}
PER_FIT = tuple(name for name, field in FITTED.items() if field.per_fit)
# Monitoring a validation set appends to the two curves and updates the best score together.
VALIDATION = ("validation_scores_", "validation_loss_curve_", "best_validation_score_")
SHARED_WITH_SKLEARN = tuple(name for name, field in FITTED.items() if field.sklearn)

# name -> class, filled by estimators.py: persistence looks classes up here by name, so that it
# need not import the estimators (which import it).
ESTIMATORS = {}


def register(*classes):
    """Make estimator classes known by name to `rebuild`'s callers (persistence)."""
    for cls in classes:
        ESTIMATORS[cls.__name__] = cls


def rebuild(cls, params, attributes, layer_units, flat_params, label_binarizer=None):
    """A fitted estimator of class `cls` from its parts; used by loading and by from_sklearn.

    Parameters
    ----------
    cls : estimator class
    params : dict
        Constructor parameters.
    attributes : dict
        Public fitted attributes (names from `FITTED`), already checked.
    layer_units : sequence of int
        Units per layer, input first.
    flat_params : ndarray of shape (n_params,)
        Weights of every layer, then biases (the layout's order); kept, not copied.
    label_binarizer : LabelBinarizer or None
        The fitted label encoding of a classifier.

    Returns
    -------
    estimator : cls
        With the optimizer and early-stopping state of a model that has not trained yet: the next
        ``partial_fit`` or warm-started ``fit`` starts a fresh optimizer from these weights.
    """
    estimator = cls(**params)
    for name, value in attributes.items():
        setattr(estimator, name, value)
    estimator._layout = Layout(layer_units)
    estimator._params = flat_params
    estimator._best_params = None
    estimator._optimizer = None
    estimator._no_improvement_count = 0
    if label_binarizer is not None:
        estimator._label_binarizer = label_binarizer
        estimator.classes_ = label_binarizer.classes_
    return estimator


def label_binarizer(y_type, classes, n_outputs):
    """A fitted LabelBinarizer for stored labels, after the checks ``fit`` implies.

    Raises ValueError naming the problem: fewer than two classes, labels that are not all text,
    all integers, all finite floats or all booleans, labels not sorted and unique, or a number of
    outputs that does not match the labels.
    """
    if y_type not in ("binary", "multiclass", "multilabel-indicator"):
        raise ValueError(f"unknown target type {short_repr(y_type)}")
    if not isinstance(classes, list) or len(classes) < 2:
        raise ValueError("a classifier needs a list of at least two class labels")
    kinds = {type(c) for c in classes}
    if len(kinds) != 1 or kinds.pop() not in (str, int, float, bool):
        raise ValueError("class labels must be all strings, all integers, all numbers or all "
                         "booleans")
    if isinstance(classes[0], int) and not all(-2**63 <= c < 2**63 for c in classes):
        raise ValueError("integer class labels must fit in 64 bits")
    if isinstance(classes[0], float) and not all(math.isfinite(c) for c in classes):
        raise ValueError("class labels must be finite")
    if any(a >= b for a, b in zip(classes[:-1], classes[1:])):
        raise ValueError("class labels must be sorted and unique")
    if isinstance(classes[0], str):  # one fixed-width array, as wide as the longest label
        cells = len(classes) * max(map(len, classes))
        if cells > MAX_LABEL_CELLS:
            raise ValueError(f"the class labels would take {cells * 4 // 2**20} MiB as an array, "
                             f"more than {MAX_LABEL_CELLS * 4 // 2**20} MiB")
    if y_type == "multilabel-indicator":
        if classes != list(range(len(classes))):
            raise ValueError("multilabel class labels must be 0, 1, ..., n_outputs - 1")
        # Two rows are an indicator matrix of every output: no n_outputs x n_outputs identity.
        binarizer = LabelBinarizer().fit(np.eye(2, len(classes), dtype=int))
    else:
        if (y_type == "binary") != (len(classes) == 2):
            raise ValueError(f"target type {y_type} does not match {len(classes)} classes")
        binarizer = LabelBinarizer().fit(np.asarray(classes))
    expected = 1 if y_type == "binary" else len(classes)
    if n_outputs != expected:
        raise ValueError(f"{len(classes)} classes do not fit {n_outputs} outputs")
    return binarizer


def check_consistency(estimator):
    """Raise ValueError naming the first disagreement between an estimator's parameters, fitted
    attributes, layer sizes and labels (what ``fit`` guarantees for the estimators it fits)."""
    state = vars(estimator)
    for name, field in FITTED.items():
        if field.required and name not in state:
            raise ValueError(f"attribute {name} is missing")
    units = estimator._layout.layer_units
    if estimator.n_layers_ != len(units):
        raise ValueError("n_layers_ disagrees with layer_units")
    if estimator.n_features_in_ != units[0] or estimator.n_outputs_ != units[-1]:
        raise ValueError("n_features_in_/n_outputs_ disagree with layer_units")
    names = state.get("feature_names_in_")
    if names is not None and len(names) != units[0]:
        raise ValueError("feature_names_in_ does not match the input width")
    sizes = estimator.hidden_layer_sizes
    sizes = [sizes] if isinstance(sizes, (str, dict)) or not hasattr(sizes, "__iter__") else \
        list(sizes)
    if not all(isinstance(u, Integral) and not isinstance(u, bool) for u in sizes) or \
            [int(u) for u in sizes] != list(units[1:-1]):
        raise ValueError("hidden_layer_sizes disagree with layer_units")
    if estimator.out_activation_ != estimator._output_activation():
        raise ValueError(f"output activation {short_repr(estimator.out_activation_)} does not "
                         "match the estimator's parameters")
    if estimator._params.dtype != np.dtype(estimator.dtype):
        raise ValueError(f"parameters are {estimator._params.dtype}, the model's dtype is "
                         f"{estimator.dtype}")
    _check_training_record(estimator, state)
    class_weight = getattr(estimator, "class_weight", None)
    if isinstance(class_weight, dict):
        known = set(estimator.classes_.tolist())
        unknown = [label for label in class_weight if label not in known]
        if unknown:
            raise ValueError(f"class_weight names {len(unknown)} label(s) that are not classes, "
                             f"such as {short_repr(unknown[0])}")


def check_usable(estimator, training=False):
    """Raise ValueError naming the first fitted attribute that disagrees with the network in the
    flat parameter buffer, before anything reaches compiled code.

    Fitted attributes are public and can be assigned; compiled code trusts sizes, so every value
    it is given is checked against the layout (the buffer's layer table) here: a wrong
    ``n_outputs_`` or ``n_features_in_`` would make a kernel write or read outside its buffers.
    With ``training=True`` (partial_fit, warm_start) the attributes training continues from are
    checked too: ``t_``, the bookkeeping of the mini-batch solvers and the optimizer's state.
    """
    state = vars(estimator)
    name = type(estimator).__name__
    layout, params = state.get("_layout"), state.get("_params")
    if not isinstance(layout, Layout):
        raise ValueError(f"This {name} has no valid network layout; refit it.")
    if not (isinstance(params, np.ndarray) and params.ndim == 1 and
            params.dtype in (np.float32, np.float64) and params.flags.c_contiguous and
            params.shape[0] == layout.n_params):
        raise ValueError(f"The parameter buffer of this {name} does not match its layer sizes "
                         f"{list(layout.layer_units)} ({layout.n_params} float32 or float64 "
                         "values expected); refit it.")
    units = layout.layer_units
    hint = "fitted attributes describe the trained network and must not be changed (refit to " \
        "change the network)"
    for attribute, expected, what in (("n_features_in_", units[0], "input features"),
                                      ("n_outputs_", units[-1], "output units"),
                                      ("n_layers_", len(units), "layers")):
        value = state.get(attribute)
        if not (isinstance(value, Integral) and not isinstance(value, bool) and
                value == expected):
            raise ValueError(f"{attribute} is {short_repr(value)}, but the fitted network has "
                             f"{expected} {what}: {hint}.")
    names = state.get("feature_names_in_")
    if names is not None and not (isinstance(names, np.ndarray) and names.shape == (units[0],)
                                  and names.dtype.kind in "OU"):
        raise ValueError(f"feature_names_in_ must be None or an array of {units[0]} column "
                         f"names; got {short_repr(names)}: {hint}.")
    losses = ("log_loss",) if "_label_binarizer" in state else ops.REGRESSION_LOSSES
    if getattr(estimator, "loss", None) not in losses:
        raise ValueError(f"loss={short_repr(getattr(estimator, 'loss', None))} is not one of "
                         f"{list(losses)}.")
    expected = estimator._output_activation()
    if not (isinstance(state.get("out_activation_"), str) and
            state["out_activation_"] == expected):
        raise ValueError(f"out_activation_ is {short_repr(state.get('out_activation_'))}, but "
                         f"this {name} computes {expected!r} outputs: {hint}.")
    hidden = estimator._parameter_constraints["activation"][0].options
    if not (isinstance(estimator.activation, str) and estimator.activation in hidden and
            estimator.activation in ops.HIDDEN_ACTIVATIONS):
        raise ValueError(f"activation={short_repr(estimator.activation)} is not one of "
                         f"{sorted(hidden)}.")
    if "_label_binarizer" in state:
        _check_classes(estimator, hint)
    if training:
        _check_training_state(estimator, params)


def _check_classes(estimator, hint):
    """classes_ must be the labels the model was trained on, one per output (binary: two)."""
    trained = estimator._label_binarizer.classes_
    classes = vars(estimator).get("classes_")
    try:  # usually the very array (fit shares it): skip the comparison then
        same = classes is trained or (
            isinstance(classes, np.ndarray) and classes.shape == trained.shape and
            classes.dtype == trained.dtype and bool(np.array_equal(classes, trained)))
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ValueError(f"classes_ is {short_repr(classes)}, but the model was trained on the "
                         f"labels {short_repr(trained.tolist())}: {hint}.")
    outputs = 1 if estimator._label_binarizer.y_type_ == "binary" else len(trained)
    if outputs != estimator._layout.layer_units[-1]:
        raise ValueError(f"The {len(trained)} classes do not fit the network's "
                         f"{estimator._layout.layer_units[-1]} outputs; refit the model.")


def _numbers(value):
    return isinstance(value, list) and all(
        isinstance(v, Real) and not isinstance(v, bool) for v in value)


def _check_training_state(estimator, params):
    """What partial_fit and a warm_start fit continue from: counters, curves, optimizer state."""
    state = vars(estimator)
    t = state.get("t_")
    if not (isinstance(t, Integral) and not isinstance(t, bool) and 0 <= t < 2**62):
        raise ValueError(f"t_ is {short_repr(t)}: it counts the samples seen in training and "
                         "must be a non-negative integer.")
    if not isinstance(state.get("stopped_early_", False), (bool, np.bool_)):
        raise ValueError(f"stopped_early_ is {short_repr(state['stopped_early_'])}; it must be "
                         "True or False.")
    if "loss_curve_" in state and not _numbers(state["loss_curve_"]):
        raise ValueError(f"loss_curve_ is {short_repr(state['loss_curve_'])}; training appends "
                         "to it, so it must be a list of numbers.")
    for name in ("best_loss_", "best_validation_score_"):
        value = state.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, Real)):
            raise ValueError(f"{name} is {short_repr(value)}; it must be a number or None.")
    scores, losses = state.get("validation_scores_"), state.get("validation_loss_curve_")
    if scores is not None:
        if not _numbers(scores) or not _numbers(losses) or \
                state.get("best_validation_score_") is None:
            raise ValueError(
                f"validation_scores_ ({short_repr(scores)}), validation_loss_curve_ "
                f"({short_repr(losses)}) and best_validation_score_ "
                f"({short_repr(state.get('best_validation_score_'))}) must be two lists of "
                "numbers and a number, or all None.")
    elif losses is not None:
        raise ValueError(f"validation_loss_curve_ is {short_repr(losses)} while "
                         "validation_scores_ is None; both must be lists or both None.")
    optimizer = state.get("_optimizer")
    slots = optimizer.slots().values() if optimizer is not None else ()
    best = state.get("_best_params")
    for array in [*slots, *([] if best is None else [best])]:
        if not (isinstance(array, np.ndarray) and array.shape == params.shape and
                array.dtype == params.dtype):
            raise ValueError("The optimizer state of this model does not match its parameter "
                             "buffer; refit it.")


def _check_training_record(estimator, state):
    """The per-fit attributes as fit and partial_fit leave them: what the next epoch of a
    mini-batch solver reads is there, and the curves and counters agree with each other."""
    def given(name):
        return state.get(name) is not None

    mini_batch = estimator.solver in MINI_BATCH_SOLVERS
    if mini_batch:
        early = "with" if estimator.early_stopping else "without"
        for name, field in FITTED.items():
            if field.resume in ("always", f"{early} early_stopping") and not given(name):
                raise ValueError(f"attribute {name} is missing or null: a model trained by "
                                 f"solver={estimator.solver!r} "
                                 f"{'' if field.resume == 'always' else field.resume + ' '}"
                                 "always has it (partial_fit and warm_start need it)")
    if any(given(name) for name in VALIDATION) and not all(given(name) for name in VALIDATION):
        raise ValueError(f"attributes {', '.join(VALIDATION)} must be all set or all null")
    curve = state.get("loss_curve_")
    if given("validation_scores_"):
        n_scores = len(state["validation_scores_"])
        if len(state["validation_loss_curve_"]) != n_scores:
            raise ValueError("validation_scores_ and validation_loss_curve_ differ in length")
        if curve is not None and n_scores > len(curve):
            raise ValueError("validation_scores_ is longer than loss_curve_")
    if curve is not None:
        if estimator.t_ < len(curve):
            raise ValueError(f"t_={estimator.t_} counts fewer samples than loss_curve_ has "
                             f"epochs ({len(curve)})")
        if mini_batch and estimator.n_iter_ > len(curve):
            raise ValueError(f"n_iter_={estimator.n_iter_} is more than loss_curve_'s "
                             f"{len(curve)} epochs")


def short_repr(value, limit=60):
    """repr(value), cut to `limit` characters: messages stay one short line whatever a file
    holds."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ = ["FITTED", "MINI_BATCH_SOLVERS", "PER_FIT", "SHARED_WITH_SKLEARN", "VALIDATION",
           "Field", "check_consistency", "check_usable", "label_binarizer", "rebuild", "register",
           "short_repr"]
