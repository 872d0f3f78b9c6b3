"""scikit-learn shells: parameters, input validation, labels, fitted attributes.

No arithmetic happens here: the training driver (training.py) runs the compiled kernels. Every
public name, parameter, default and fitted attribute follows scikit-learn's MLPClassifier and
MLPRegressor, so that changing the import is all a user has to do.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import math
import threading
import types
from numbers import Integral, Real
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import (
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
)
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from . import conversion, fitted_state, ops, persistence
from .bundles import Features
from .layout import Layout
from .training import (
    DivergenceError,
    TrainingData,
    as_features,
    backend,
    drive,
    predict_rows,
    run_lbfgs,
    stochastic_steps,
)

if TYPE_CHECKING:
    import os

    from numpy.typing import ArrayLike

    # What fit, partial_fit and predict accept as X: array-likes and SciPy sparse matrices.
    MatrixLike = ArrayLike | sp.spmatrix | sp.sparray

_Estimator = TypeVar("_Estimator", bound="BaseMultilayerPerceptron")  # fit returns self

_STOCHASTIC_SOLVERS = tuple(ops.OPTIMIZER)  # every registry optimizer trains by mini-batches


@contextlib.contextmanager
def state_kept(est):
    """All-or-nothing fitting: if the block raises, the estimator's fitted state is put back
    exactly as it was (unfitted, or the earlier fit), never left half-written."""
    params = est.get_params(deep=False)
    # One deepcopy of the whole dict keeps shared objects shared (classes_ is the label
    # binarizer's array, for instance).
    saved = copy.deepcopy({key: value for key, value in vars(est).items() if key not in params})
    try:
        yield
    except BaseException:
        for key in [key for key in vars(est) if key not in params]:
            delattr(est, key)
        vars(est).update(saved)
        raise


def _keeps_state_on_error(method):
    """Make a fitting method all-or-nothing (state_kept)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with state_kept(self):
            return method(self, *args, **kwargs)

    return wrapper


class _mini_batch_only:
    """Decorator for partial_fit: the method exists only for mini-batch solvers (``hasattr`` is
    False for lbfgs, as scikit-learn's classifier does), and asking for it says why."""

    def __init__(self, method):
        self.method = method
        functools.update_wrapper(self, method)

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.method
        if obj.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError(
                f"{type(obj).__name__} has no partial_fit with solver={obj.solver!r}: L-BFGS "
                "optimises over the whole data set at once and has no one-epoch step to "
                "continue from (scikit-learn's MLPRegressor runs a complete fit instead). Use "
                "fit, or a mini-batch solver: 'sgd', 'adam', 'adagrad', 'rmsprop' or 'adamw'.")
        return types.MethodType(self.method, obj)


# A fit rewrites the fitted state attribute by attribute, so nothing may read it meanwhile:
# predictions from other threads are refused while an estimator is being fitted, and a fit waits
# for the predictions already running on it to finish. Its own thread (its callbacks) may
# predict between epochs, when the state is whole.
_STATE = threading.Condition()  # guards the two tables below
_FITTING = {}     # id() of each estimator whose fit or partial_fit is running -> its thread
_PREDICTING = {}  # id() of each estimator being read by a prediction -> the threads reading it


@contextlib.contextmanager
def fitting(est, what="fit"):
    """Refuse to start fitting an estimator that is already being fitted (by another thread, or
    by a callback of its own fit): two fits would interleave their updates of one fitted state.
    Predictions running in other threads are waited for; new ones are refused until it ends.
    `what` names the method, for the message."""
    key, me = id(est), threading.get_ident()
    with _STATE:
        if key in _FITTING:
            raise RuntimeError(
                f"This {type(est).__name__} is already being fitted (in another thread or "
                f"by one of its callbacks); {what} cannot run on it at the same "
                "time. Fit a copy (sklearn.base.clone) instead.")
        _FITTING[key] = me
    try:
        with _STATE:
            _STATE.wait_for(lambda: all(t == me for t in _PREDICTING.get(key, ())))
        yield
    finally:
        with _STATE:
            del _FITTING[key]
            _STATE.notify_all()


def _one_fit_at_a_time(method):
    """Decorator: the method runs as a fit (see fitting)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with fitting(self, method.__name__):
            return method(self, *args, **kwargs)

    return wrapper


# What the message calls the methods whose names say nothing to a user.
_READERS = {"__reduce_ex__": "pickling or copying", "__getstate__": "pickling"}


def _reads_fitted_state(method):
    """For predict and its kin, saving, exporting, pickling and copying: refuse to read an
    estimator another thread is fitting, whose state is half old, half new; a fit started
    meanwhile waits for this call to end. The fit's own thread (its callbacks, between epochs)
    may read it: a callback may predict or save a checkpoint."""
    what = _READERS.get(method.__name__, method.__name__)

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        key, me = id(self), threading.get_ident()
        with _STATE:
            # A read already running in this thread (predict_log_proba copies the estimator)
            # goes on: a fit that started meanwhile is waiting for it.
            if _FITTING.get(key, me) != me and me not in _PREDICTING.get(key, ()):
                raise RuntimeError(
                    f"This {type(self).__name__} is being fitted in another thread; "
                    f"{what} cannot read it until that fit returns. To use a model while "
                    "it trains, fit a copy (sklearn.base.clone) and use the original, or wait "
                    "for fit to return.")
            _PREDICTING.setdefault(key, []).append(me)
        try:
            return method(self, *args, **kwargs)
        finally:
            with _STATE:
                readers = _PREDICTING[key]
                readers.remove(me)
                if not readers:
                    del _PREDICTING[key]
                _STATE.notify_all()

    return wrapper


def resolve_device(device, work=None):
    """"cpu" or "cuda" for a `device` parameter; "cuda" is checked to be usable.

    device="auto" is "cuda" only when a GPU is usable and the fit described by `work` (the
    keyword arguments of fastmlp.cuda.device.auto_choice; None for prediction, which is
    unmeasured on the GPU) is measured to be faster there. Raises RuntimeError saying what is
    missing when device="cuda" cannot run.
    """
    if device == "cpu" or (device == "auto" and work is None):
        return "cpu"
    if device == "auto":
        try:
            from .cuda.device import auto_choice
        except ImportError:
            return "cpu"
        return auto_choice(**work)[0]
    try:
        backend("cuda").check_available()
    except ImportError as exc:
        raise RuntimeError(
            f"device='cuda' needs the CUDA backend, which could not be imported ({exc}). "
            "Install it with: pip install 'fastmlp[cuda]'") from exc
    return "cuda"


def _check_sample_weight(sample_weight, n_samples, dtype, name="sample_weight"):
    """Validated weights (ones when none are given): finite, non-negative, one per sample, and
    usable for training (see _usable_weights)."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    if isinstance(sample_weight, Real):
        sample_weight = np.full(n_samples, sample_weight)
    sw = check_array(sample_weight, ensure_2d=False, dtype=dtype, order="C", input_name=name)
    if sw.ndim != 1 or sw.shape[0] != n_samples:
        raise ValueError(f"{name}.shape == {sw.shape}, expected ({n_samples},)!")
    if (sw < 0).any():
        raise ValueError(f"Negative values in data passed to {name}: weights must be >= 0.")
    return _usable_weights(sw, name)


def _usable_weights(sw, name):
    """Weights as training sees them, or a ValueError naming `name`.

    float32 training treats subnormal numbers as zero (flush-to-zero, see the kernels), so such
    weights are zeroed here, explicitly, for every backend. Every mini-batch is divided by its
    weight sum, so the total must be a positive normal number of the dtype: a zero, subnormal
    or overflowing total would skip every batch or give infinite steps.
    """
    info = np.finfo(sw.dtype)
    if not np.isfinite(sw).all():
        raise ValueError(f"{name} has values too large for {sw.dtype}: weights must be finite.")
    if sw.dtype == np.float32:
        subnormal = (sw > 0) & (sw < info.tiny)
        if subnormal.any():
            sw = np.where(subnormal, sw.dtype.type(0), sw)
    total = float(np.sum(sw, dtype=np.float64))
    if total == 0:
        raise ValueError(f"{name} is zero for every sample: there is nothing to learn from "
                         f"(in {sw.dtype}, weights below {info.tiny:.3g} count as zero).")
    if not info.tiny <= total <= info.max:
        raise ValueError(f"{name} sums to {total:.3g}, outside the range of normal {sw.dtype} "
                         f"numbers ({info.tiny:.3g} to {info.max:.3g}) that training divides "
                         "by: rescale the weights.")
    return sw


def _check_sparse_structure(A, name):
    """Refuse a sparse matrix whose index arrays point outside it, before anything reads it.

    scipy builds compressed matrices without a full check, and both scipy's conversions and the
    kernels index with these arrays unchecked: an out-of-range index is an out-of-bounds write.
    Vectorised, O(nnz), and nothing of the user's matrix is modified.
    """
    if not sp.issparse(A):
        return
    if A.format == "coo":
        coords = getattr(A, "coords", None) or (A.row, A.col)
        if any(len(c) and (c.min() < 0 or c.max() >= n) for c, n in zip(coords, A.shape)):
            raise ValueError(f"Sparse {name} is malformed: an index lies outside its shape "
                             f"{A.shape}.")
        return
    if A.format not in ("csr", "csc", "bsr"):
        return  # dict- and list-based formats hold Python objects: nothing indexes blindly
    block = A.blocksize if A.format == "bsr" else (1, 1)
    major, minor = (0, 1) if A.format in ("csr", "bsr") else (1, 0)
    n_major, n_minor = A.shape[major] // block[major], A.shape[minor] // block[minor]
    indptr, indices = np.asarray(A.indptr), np.asarray(A.indices)
    problem = None
    if indptr.ndim != 1 or indptr.shape[0] != n_major + 1 or indices.ndim != 1:
        problem = f"index pointer of length {indptr.shape}, not {n_major + 1}"
    elif indptr[0] != 0 or (np.diff(indptr) < 0).any():
        problem = "its index pointer must start at 0 and never decrease"
    elif indptr[-1] > min(indices.shape[0], A.data.shape[0]):
        problem = f"its index pointer ends at {indptr[-1]}, past its {indices.shape[0]} indices"
    elif indptr[-1] and (indices[:indptr[-1]].min() < 0 or
                         indices[:indptr[-1]].max() >= n_minor):
        problem = f"an index lies outside its shape {A.shape}"
    if problem is not None:
        raise ValueError(f"Sparse {name} is malformed: {problem}.")


class BaseMultilayerPerceptron(BaseEstimator):
    """Shared parameters, fitting and prediction of MLPClassifier and MLPRegressor."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        # Built from the registry of operations (fastmlp/ops.py), like every list of them.
        "activation": [StrOptions(set(ops.HIDDEN_ACTIVATIONS))],
        "solver": [StrOptions(set(ops.SOLVERS))],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "learning_rate_decay": [StrOptions({"linear", "cosine"}), None],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        "rho": [Interval(Real, 0, 1, closed="left")],
        "restore_best_weights": ["boolean"],
        "callbacks": [list, tuple, None],  # of callables: see _validate_callbacks
        "progress_bar": ["boolean"],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "dtype": [StrOptions({"float32", "float64"})],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
    }

    # ------------------------------------------------------------------ fitted parameters
    # Before the first fit, coefs_ and intercepts_ may be assigned (as in scikit-learn): the lists
    # are kept as given and become the starting weights of the next partial_fit or warm_start
    # fit (see _initial_weights); a fit from scratch draws new weights instead.
    @property
    def coefs_(self):
        """Weight matrices, one per layer: views into the flat parameter buffer."""
        if "_params" not in vars(self) and "_initial_coefs" in vars(self):
            return self._initial_coefs
        return self._parameter_views().coefs(self._params)

    @coefs_.setter
    def coefs_(self, values):
        if "_params" not in vars(self):
            if not isinstance(values, (list, tuple)):
                raise ValueError(f"coefs_ must be a list of arrays, one per layer; got "
                                 f"{type(values).__name__}.")
            self._initial_coefs = list(values)
            return
        self._params[:] = self._layout.pack(values, self.intercepts_, self._params.dtype)

    @property
    def intercepts_(self):
        """Bias vectors, one per layer: views into the flat parameter buffer."""
        if "_params" not in vars(self) and "_initial_intercepts" in vars(self):
            return self._initial_intercepts
        return self._parameter_views().intercepts(self._params)

    @intercepts_.setter
    def intercepts_(self, values):
        if "_params" not in vars(self):
            if not isinstance(values, (list, tuple)):
                raise ValueError(f"intercepts_ must be a list of arrays, one per layer; got "
                                 f"{type(values).__name__}.")
            self._initial_intercepts = list(values)
            return
        self._params[:] = self._layout.pack(self.coefs_, values, self._params.dtype)

    def _parameter_views(self):
        if "_params" not in vars(self):
            raise AttributeError(f"This {type(self).__name__} instance is not fitted yet.")
        return self._layout

    def _has_initial_weights(self):
        return "_initial_coefs" in vars(self) or "_initial_intercepts" in vars(self)

    def _initial_weights(self, layer_units):
        """The coefs_ and intercepts_ assigned before the first fit, checked against the network
        this data needs; they are consumed."""
        coefs = vars(self).pop("_initial_coefs", None)
        intercepts = vars(self).pop("_initial_intercepts", None)
        if coefs is None or intercepts is None:
            missing = "intercepts_" if intercepts is None else "coefs_"
            raise ValueError(f"{missing} was not set: to start training from given weights, "
                             "assign both coefs_ and intercepts_ before the first fit.")
        n_layers = len(layer_units) - 1
        if len(coefs) != n_layers or len(intercepts) != n_layers:
            raise ValueError(f"coefs_ and intercepts_ need {n_layers} arrays each for layer "
                             f"sizes {layer_units}; got {len(coefs)} and {len(intercepts)}.")
        return coefs, intercepts

    # ------------------------------------------------------------------ fitting
    def _hidden_layer_sizes(self):
        sizes = self.hidden_layer_sizes
        if not hasattr(sizes, "__iter__"):
            sizes = [sizes]
        sizes = list(sizes)
        if np.any(np.array(sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % sizes)
        return sizes

    def _validate_callbacks(self):
        """The items of `callbacks`, which scikit-learn's constraints cannot describe, checked
        as a parameter: before any work, with the same error. Each must be callable with one
        argument (the EpochRecord), where Python can tell."""
        for i, item in enumerate(self.callbacks or ()):
            problem = None if callable(item) else "is not callable"
            if problem is None:
                try:
                    inspect.signature(item).bind(None)
                except TypeError:
                    problem = "cannot be called with one argument (the EpochRecord)"
                except ValueError:
                    pass  # no signature to read (some built-ins): trust it
            if problem is not None:
                raise InvalidParameterError(
                    f"The 'callbacks' parameter of {type(self).__name__} must be a list or tuple "
                    f"of callables taking one argument, or None. Got "
                    f"{fitted_state.short_repr(self.callbacks)} instead: callbacks[{i}] "
                    f"({fitted_state.short_repr(item)}) {problem}.")

    def _fit(self, X, y, sample_weight=None, incremental=False, validation_data=None):
        return drive(self._fit_steps(X, y, sample_weight, incremental, validation_data))

    def _auto_device(self, layer_units, n_samples, sparse):
        """The device device="auto" trains this network on, for this data (see
        resolve_device): fit asks it, and so does fit_many when it plans GPU memory."""
        batch_size = min(200 if self.batch_size == "auto" else self.batch_size, n_samples)
        return resolve_device("auto", dict(
            layer_units=layer_units, batch_size=batch_size, n_samples=n_samples,
            dtype=self.dtype, sparse=sparse, mini_batch=self.solver in _STOCHASTIC_SOLVERS,
            dropout=self.dropout))

    def _fit_steps(self, X, y, sample_weight=None, incremental=False, validation_data=None):
        """The whole of a fit or partial_fit as a generator of its epochs' EpochRequests (see
        training.stochastic_steps): training.drive runs it alone, fastmlp.fit_many runs many in
        lockstep. It returns self; L-BFGS has no epochs and runs inside."""
        self._validate_params()
        self._validate_callbacks()
        hidden_sizes = self._hidden_layer_sizes()
        if self.dropout > 0 and self.solver == "lbfgs":
            raise ValueError("dropout needs a mini-batch solver (sgd, adam, adagrad, rmsprop or "
                             "adamw): L-BFGS assumes a deterministic loss.")
        device = resolve_device(self.device)
        fitted = "_params" in vars(self)
        first_pass = not (fitted or self._has_initial_weights()) or (
            not self.warm_start and not incremental)
        if not first_pass and fitted:
            # Training continues from the fitted state: every attribute it reads must still
            # describe the network in the parameter buffer.
            if self.solver in _STOCHASTIC_SOLVERS:
                self._resume_bookkeeping()
            fitted_state.check_usable(self, training=True)
            if self._params.dtype != np.dtype(self.dtype):
                raise ValueError(f"dtype={self.dtype!r} differs from the dtype of the fitted "
                                 f"model ({self._params.dtype}); refit from scratch to change "
                                 "it.")

        X, Y, Y_stratify = self._validate_input(X, y, incremental,
                                                reset=first_pass or not fitted)
        self._check_target_range(Y, "y")
        sw = _check_sample_weight(sample_weight, X.shape[0], X.dtype)
        class_sw = self._class_sample_weight(Y, incremental)
        if class_sw is not None:
            class_sw = _usable_weights(class_sw.astype(sw.dtype), "class_weight")
            sw = _usable_weights(sw * class_sw,
                                 "class_weight" if sample_weight is None else
                                 "sample_weight x class_weight (their product, per sample)")
        validation = self._validation_set(validation_data, X.dtype)
        layer_units = [X.shape[1]] + hidden_sizes + [Y.shape[1]]
        if not first_pass and fitted and self._layout.layer_units != tuple(layer_units):
            raise ValueError(f"The network shape {layer_units} differs from the fitted one "
                             f"{list(self._layout.layer_units)}; warm_start and partial_fit "
                             "need the same hidden_layer_sizes and number of outputs.")
        if self.device == "auto":  # the GPU only where it is measured faster
            device = self._auto_device(layer_units, X.shape[0], sp.issparse(X))

        random_state = check_random_state(self.random_state)
        if first_pass:
            vars(self).pop("_initial_coefs", None)
            vars(self).pop("_initial_intercepts", None)
            self._initialize(Y.shape[1], layer_units, X.dtype, random_state)
        elif not fitted:
            self._initialize(Y.shape[1], layer_units, X.dtype, random_state,
                             self._initial_weights(layer_units))

        data = TrainingData(as_features(X), Y, sw, sample_weight is not None or
                            class_sw is not None, Y_stratify).on(device)
        if incremental and not first_pass and vars(self).get("stopped_early_"):
            # The previous call ended on the stopping rule: count afresh, or this call would
            # report stopping again after its first epoch.
            self._no_improvement_count = 0
        if self.solver in _STOCHASTIC_SOLVERS:
            yield from stochastic_steps(self, data, incremental, random_state, device,
                                        None if validation is None else validation.on(device))
        elif validation is not None:
            raise ValueError("validation_data needs a mini-batch solver: L-BFGS has no epochs "
                             "to monitor.")
        else:
            run_lbfgs(self, data, device)

        if not np.isfinite(self._params).all():
            raise DivergenceError("Solver produced non-finite parameter weights. The input data "
                                  "may contain large values and need to be preprocessed. The "
                                  "estimator was left as it was before this call.")
        return self

    def _class_sample_weight(self, Y, incremental):
        """Per-sample weights from class_weight (classifier), or None."""
        return None

    def _check_target_range(self, Y, name):
        """Targets whose squared error overflows the dtype cannot be trained on (regressor)."""

    def _validation_set(self, validation_data, dtype):
        """TrainingData for a user-given (X_val, y_val[, sample_weight_val]), or None."""
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (X_val, y_val) or "
                             "(X_val, y_val, sample_weight_val).")
        X_val, y_val = validation_data[:2]
        _check_sparse_structure(X_val, "X_val in validation_data")
        _check_sparse_structure(y_val, "y_val in validation_data")
        # Checked under their own names first, so that errors say validation_data, not X or y.
        try:
            X_checked = check_array(X_val, accept_sparse=["csr", "csc"], dtype=dtype,
                                    order="C", input_name="X_val")
            y_checked = check_array(y_val, accept_sparse="csr", ensure_2d=False,
                                    dtype=None if is_classifier(self) else "numeric",
                                    input_name="y_val")
        except ValueError as exc:
            raise ValueError(f"validation_data: {exc}") from exc
        if X_checked.shape[0] != y_checked.shape[0]:
            raise ValueError(f"validation_data: X_val has {X_checked.shape[0]} samples but "
                             f"y_val has {y_checked.shape[0]}.")
        if X_checked.shape[1] != self.n_features_in_:
            raise ValueError(f"validation_data: X_val has {X_checked.shape[1]} features, but "
                             f"{type(self).__name__} is expecting {self.n_features_in_} features "
                             "as input (those of X).")
        try:  # what remains to check: feature names, scikit-learn's finer rules
            X_val, y_val = validate_data(self, X_val, y_val, accept_sparse=["csr", "csc"],
                                         multi_output=True, dtype=dtype, order="C",
                                         reset=False, y_numeric=not is_classifier(self))
        except ValueError as exc:
            raise ValueError(f"validation_data: {exc}") from exc
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = column_or_1d(y_val)
        try:
            Y_val = self._encode_targets(y_val, dtype)
        except ValueError as exc:
            raise ValueError(f"validation_data: y_val does not fit the model: {exc}") from exc
        self._check_target_range(Y_val, "validation_data's y_val")
        sw_given = len(validation_data) == 3 and validation_data[2] is not None
        sw_val = _check_sample_weight(validation_data[2] if sw_given else None, X_val.shape[0],
                                      dtype, name="sample_weight_val")
        return TrainingData(as_features(X_val), Y_val, sw_val, sw_given)

    def _initialize(self, n_outputs, layer_units, dtype, random_state, weights=None):
        """Fresh fitted state. Weights are drawn exactly as scikit-learn draws them (Glorot
        uniform, layer by layer, weights before biases), in float64, then cast; or, when given
        as (coefs, intercepts), copied in without drawing anything."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        self._layout = Layout(layer_units)
        if weights is not None:
            params = self._layout.pack(*weights, dtype)
        else:
            params = self._layout.empty(dtype)
            for W, b in zip(self._layout.coefs(params), self._layout.intercepts(params)):
                fan_in, fan_out = W.shape
                factor = 2.0 if self.activation == "logistic" else 6.0
                bound = np.sqrt(factor / (fan_in + fan_out))
                W[...] = random_state.uniform(-bound, bound, (fan_in, fan_out))
                b[...] = random_state.uniform(-bound, bound, fan_out)
        self._params = params
        self._best_params = None  # the best validation weights, once a validation set scores
        self._optimizer = None
        for name in fitted_state.PER_FIT:
            vars(self).pop(name, None)
        if self.solver in _STOCHASTIC_SOLVERS:
            vars(self).update(self._fresh_bookkeeping())

    def _fresh_bookkeeping(self):
        """The mini-batch solvers' stopping bookkeeping before their first epoch."""
        fresh = {"loss_curve_": [], "_no_improvement_count": 0, "stopped_early_": False}
        if self.early_stopping:
            return {**fresh, "validation_scores_": [], "validation_loss_curve_": [],
                    "best_validation_score_": -np.inf, "best_loss_": None}
        return {**fresh, "best_loss_": np.inf, "validation_scores_": None,
                "validation_loss_curve_": None, "best_validation_score_": None}

    def _resume_bookkeeping(self):
        """Before a mini-batch solver continues a fit: start what the earlier fit did not keep
        (an lbfgs fit keeps no loss curve, scikit-learn's no validation loss curve;
        early_stopping may have been switched on or off). Wrong values are left for
        fitted_state.check_usable to name."""
        state = vars(self)
        for name, value in self._fresh_bookkeeping().items():
            if name not in state:
                state[name] = value
        if not self.early_stopping and state["best_loss_"] is None:
            state["best_loss_"] = np.inf
        if self.early_stopping and state["validation_scores_"] is None:
            state.update(validation_scores_=[], validation_loss_curve_=[],
                         best_validation_score_=-np.inf)
        if isinstance(state["validation_scores_"], list) and \
                state["validation_loss_curve_"] is None:
            state["validation_loss_curve_"] = []

    def _check_X_y(self, X, y, reset, **kwargs):
        _check_sparse_structure(X, "X")
        _check_sparse_structure(y, "y")
        return validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=self.dtype, order="C", reset=reset, **kwargs)

    # ------------------------------------------------------------------ prediction
    def _forward(self, X, logits=False):
        """Output activations (n_samples, n_outputs) for validated input X; with logits=True
        the output layer's pre-activations instead."""
        check_is_fitted(self)
        if "_params" not in vars(self):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet: "
                                 "coefs_ and intercepts_ set by hand are used by the next "
                                 "partial_fit (or warm_start fit), not by predict.")
        # Compiled code sizes nothing itself: every attribute it is given must agree with the
        # parameter buffer (users may assign fitted attributes).
        fitted_state.check_usable(self)
        _check_sparse_structure(X, "X")
        X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=self._params.dtype,
                          order="C", reset=False)
        device = resolve_device(self.device)
        features = Features(*(backend(device).to_device(a) for a in as_features(X)))
        est = self
        if logits:  # the same network read with an identity output
            est = copy.copy(self)
            est.out_activation_ = "identity"
        return predict_rows(est, features, np.arange(X.shape[0]), device)

    @_one_fit_at_a_time
    @_keeps_state_on_error
    def fit(self: _Estimator, X: MatrixLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
            validation_data: tuple | None = None) -> _Estimator:
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training data. Sparse input is used in CSR form (CSC is converted once).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classification) or real-valued targets (regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the loss; None weighs all samples equally.
        validation_data : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), default=None
            A validation set scored after every epoch (``validation_scores_``,
            ``validation_loss_curve_``); with ``early_stopping=True`` it replaces the internal
            ``validation_fraction`` split. Mini-batch solvers only.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False,
                         validation_data=validation_data)

    @_reads_fitted_state
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted model to `path` in fastmlp's model format, atomically.

        The file is a zip of JSON metadata and a .npy parameter buffer (no pickle), readable by
        :func:`fastmlp.load`; see ``fastmlp/persistence.py`` for the layout. Everything is
        checked before the first byte is written, and the new file replaces `path` only once it
        is complete and on disk: a failed or killed save leaves an earlier file intact.

        Parameters
        ----------
        path : str or os.PathLike
            Where to write the model.
        """
        check_is_fitted(self)
        persistence.save(self, path)

    @_reads_fitted_state
    def to_sklearn(self):
        """A fitted scikit-learn estimator with this model's weights and identical predictions.

        For tools that take scikit-learn models (converters, inspection). Parameters scikit-learn
        does not have (``dtype``, ``dropout``, ...) are dropped, and a solver it does not have
        becomes 'adam' (the solver does not affect predictions); weights are copied in the
        model's dtype. A UserWarning lists what was dropped that shaped the training (a solver,
        dropout, class weights, ...), since refitting the returned model would not reproduce it.
        Raises ValueError for a hidden activation scikit-learn cannot compute (ONNX export
        handles every activation: see :meth:`to_onnx`).
        """
        return conversion.to_sklearn(self)

    @_reads_fitted_state
    def to_onnx(self, X, **kwargs):
        """An ONNX model computing this model's predictions (needs the ``onnx`` extra).

        Same as ``fastmlp.onnx.to_onnx(self, X, **kwargs)``: every activation, output and
        dtype is supported, and the outputs are ``label`` and ``probabilities`` (classifier) or
        ``variable`` (regressor).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A few rows of input: their dtype and width set the ONNX input's type and shape.
        **kwargs
            ``zipmap`` (classifiers, default False), and arguments of ``skl2onnx.to_onnx``.

        Returns
        -------
        onnx.ModelProto
        """
        from .onnx import to_onnx

        check_is_fitted(self)
        return to_onnx(self, X, **kwargs)

    @classmethod
    def from_sklearn(cls, est):
        """A fastmlp estimator holding the weights of a fitted scikit-learn MLP of the same kind.

        The dtype follows the scikit-learn model's weights (float32 or float64).

        Parameters
        ----------
        est : fitted sklearn.neural_network.MLPClassifier or MLPRegressor
            Of the same kind as `cls`.

        Returns
        -------
        estimator : cls
        """
        return conversion.from_sklearn(cls, est)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ pickle, copy, skops.io
    # pickle and copy call __reduce_ex__ and restore the object as it was, callbacks included
    # (pickle restores code by design). Formats that store __getstate__ as data (skops.io) get
    # plain values without callbacks, and what they hand back to __setstate__ passes the model
    # loader's checks first (persistence.restore_state).
    @_reads_fitted_state
    def __reduce_ex__(self, protocol):
        return _copy_of, (type(self),), dict(vars(self))

    @_reads_fitted_state
    def __getstate__(self):
        return persistence.data_state(self)

    def __setstate__(self, state):
        if vars(self).pop(_COPYING, False):
            vars(self).update(state)
        else:
            persistence.restore_state(self, state)


_COPYING = "_fastmlp_copying"


def _copy_of(cls):
    """The empty instance pickle and copy fill with a state they made themselves."""
    instance = cls.__new__(cls)
    vars(instance)[_COPYING] = True
    return instance


_SHARED_PARAMETERS = """
    hidden_layer_sizes : array-like of shape (n_layers - 2,), default=(100,)
        Width of each hidden layer, in order: ``(64, 32)`` means two hidden layers.
    activation : {'identity', 'logistic', 'tanh', 'relu', 'leaky_relu', 'elu', 'gelu', 'silu'}, \
default='relu'
        Non-linearity applied after every hidden layer: ``z``, ``1 / (1 + exp(-z))``,
        ``tanh(z)``, ``max(z, 0)``, ``max(z, 0.01 z)``, ``z if z > 0 else exp(z) - 1``,
        ``z * Phi(z)`` (Phi the standard normal CDF) or ``z / (1 + exp(-z))``.
    solver : {'lbfgs', 'sgd', 'adam', 'adagrad', 'rmsprop', 'adamw'}, default='adam'
        Optimiser: scipy's L-BFGS-B on the whole data set, mini-batch SGD with momentum, Adam,
        Adagrad, RMSprop or AdamW (Adam with decoupled ``weight_decay``). Adam suits large data
        sets; L-BFGS converges faster on small ones.
    alpha : float, default=0.0001
        Strength of the L2 penalty on the weights (biases are not penalised), added to the loss
        as ``alpha / 2 * ||W||^2 / sum(sample_weight)`` per mini-batch.
    batch_size : int or 'auto', default='auto'
        Rows per mini-batch for sgd and adam; 'auto' means ``min(200, n_samples)``. Ignored by
        lbfgs.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning-rate schedule for sgd: constant; ``learning_rate_init / (t + 1) ** power_t`` after
        each epoch with t the samples seen so far; or divide by 5 whenever ``n_iter_no_change``
        epochs fail to improve by ``tol``.
    learning_rate_init : float, default=0.001
        Initial step size of the mini-batch solvers. The default is scikit-learn's (and Adam's
        usual one); Adagrad's steps shrink as squared gradients accumulate, so with
        solver='adagrad' it learns slowly: start from 0.01, PyTorch's Adagrad default.
    power_t : float, default=0.5
        Exponent of the 'invscaling' schedule (sgd only).
    max_iter : int, default=200
        Maximum number of epochs for sgd and adam; maximum number of iterations for lbfgs.
    shuffle : bool, default=True
        Reshuffle the samples before every epoch (sgd and adam).
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, the validation split and shuffling. An int gives the same
        numbers as scikit-learn with the same int.
    tol : float, default=1e-4
        Improvement that counts: training stops (or, with 'adaptive', the rate drops) when the
        loss or validation score fails to improve by ``tol`` for ``n_iter_no_change`` epochs.
    verbose : bool or int, default=False
        Whether to print progress messages to stdout: any value > 0 prints exactly what
        scikit-learn prints (``Iteration N, loss = ...`` after every epoch, the validation score
        with early stopping, and why training stopped). The level does not change the output.
    warm_start : bool, default=False
        Start the next ``fit`` from the current weights instead of new random ones.
    momentum : float, default=0.9
        Momentum of sgd, in [0, 1].
    nesterovs_momentum : bool, default=True
        Use Nesterov's look-ahead momentum (sgd with momentum > 0).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified by class for binary
        classification only, as scikit-learn does; not for multiclass or multilabel targets) and
        stop when its score stops improving; the best weights seen are kept.
        sgd and adam only.
    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping.
    beta_1 : float, default=0.9
        Adam's decay rate for the first-moment estimate, in [0, 1).
    beta_2 : float, default=0.999
        Adam's decay rate for the second-moment estimate, in [0, 1).
    epsilon : float, default=1e-8
        Adam's numerical-stability term.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` that end training (sgd and adam).
    max_fun : int, default=15000
        Maximum number of loss evaluations for lbfgs.
    rho : float, default=0.9
        Decay rate of RMSprop's running mean of squared gradients (solver='rmsprop'), in [0, 1).
    weight_decay : float, default=0.01
        AdamW's decoupled weight decay (solver='adamw'): each step shrinks the weights (not the
        biases) by ``learning_rate_init * weight_decay``, separately from the gradient.
    learning_rate_decay : {None, 'linear', 'cosine'}, default=None
        Anneal the learning rate of any mini-batch solver over ``max_iter`` epochs, on top of
        its own rate (sgd's ``learning_rate`` schedule included): epoch ``e`` (from 0) uses it
        times ``1 - e / max_iter`` ('linear') or ``(1 + cos(pi * e / max_iter)) / 2``
        ('cosine'); the multiplier keeps its last value after ``max_iter`` epochs. Each
        ``partial_fit`` call is one epoch of the schedule. Annealing typically reaches a given
        test accuracy in fewer epochs than a constant rate. Ignored by lbfgs.
    dropout : float, default=0.0
        Probability of dropping each hidden unit during training (inverted dropout: survivors
        are scaled by ``1 / (1 - dropout)``, so prediction uses the network as it is). Masks are
        drawn from ``random_state``, so fits are reproducible. Mini-batch solvers only.
    restore_best_weights : bool, default=True
        With early stopping, end ``fit`` with the weights of the best validation epoch
        (scikit-learn's behaviour); False keeps the last epoch's weights. In ``partial_fit``
        the best weights are restored when the stopping rule fires. When the loss diverges
        with a validation set monitored, the best weights are restored either way.
    callbacks : list of callables, default=None
        Each is called after every epoch with a :class:`fastmlp.EpochRecord` (epoch, training
        and validation loss, validation score, seconds, learning rate); returning True stops
        training after that epoch.
    progress_bar : bool, default=False
        Show a progress bar over the epochs on stderr (tqdm when installed, else one line per
        epoch) during ``fit`` and ``partial_fit`` (mini-batch solvers). Independent of
        ``verbose``.
    dtype : {'float32', 'float64'}, default='float32'
        Floating-point type of the weights and of the arithmetic. 'float32' is about twice as
        fast; 'float64' reproduces scikit-learn's numbers for the same random_state.
    device : {'cpu', 'cuda', 'auto'}, default='cpu'
        Where training and prediction run. 'cuda' trains on an NVIDIA GPU (needs the ``cuda``
        extra and a working driver; a clear error says what is missing); 'auto' trains on the
        GPU only where it is measured to be faster (today: float32 networks whose largest layer
        product per batch is at least 2**30 multiply-adds, batches of 1024 rows or more, 60,000
        rows or more, CuPy installed; see the README's GPU section), else on the CPU, and
        predicts on the CPU. Fitted attributes are host NumPy arrays either way.
"""

_SHARED_ATTRIBUTES = """
    loss_ : float
        Loss at the end of training (mean over the last epoch for sgd and adam).
    best_loss_ : float or None
        Lowest training loss seen (sgd and adam); None when early stopping is on.
    loss_curve_ : list of float
        Training loss after each epoch (sgd and adam).
    validation_scores_ : list of float or None
        Score on the held-out set after each epoch, when early stopping is on.
    best_validation_score_ : float or None
        Best of ``validation_scores_``, when early stopping is on.
    validation_loss_curve_ : list of float or None
        Loss on the validation set (without the L2 penalty) after each epoch, when one is
        monitored (early stopping or ``validation_data``).
    stopped_early_ : bool
        Whether the last fit or partial_fit call ended on a stopping rule, a callback or Ctrl-C.
    t_ : int
        Number of training samples seen by the solver (sgd and adam).
    coefs_ : list of ndarray
        Weight matrices; ``coefs_[i]`` has shape (units in layer i, units in layer i + 1). These
        are views into one flat parameter buffer: writing into them changes the model.
    intercepts_ : list of ndarray
        Bias vectors; ``intercepts_[i]`` has the size of layer i + 1. Views, like ``coefs_``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names seen during fit, when X had string column names.
    n_iter_ : int
        Number of epochs (sgd, adam) or iterations (lbfgs) run by the last fit.
    n_layers_ : int
        Number of layers, input and output included.
    n_outputs_ : int
        Number of output units.
    out_activation_ : str
        Output activation.
"""


class MLPClassifier(ClassifierMixin, BaseMultilayerPerceptron):
    __doc__ = f"""Multi-layer perceptron classifier trained by compiled kernels.

    A drop-in replacement for :class:`sklearn.neural_network.MLPClassifier`: same parameters,
    attributes and, with ``dtype="float64"`` and the same ``random_state``, the same numbers.
    The output layer is softmax for multiclass targets and logistic for binary and multilabel
    targets; the loss is the matching log loss.

    Parameters
    ----------{_SHARED_PARAMETERS}
    class_weight : dict, 'balanced' or None, default=None
        Weights per class, multiplied into ``sample_weight``: a dict ``{{label: weight}}``
        (missing labels weigh 1), or 'balanced' for ``n_samples / (n_classes * count(label))``
        computed on the training data of ``fit`` ('balanced' is refused by ``partial_fit``).
        Single-output targets only.

    Attributes
    ----------
    classes_ : ndarray or list of ndarray
        Class labels (for multilabel targets, one array of label indices).{_SHARED_ATTRIBUTES}
    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastmlp import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 rho=0.9, weight_decay=0.01, learning_rate_decay=None, dropout=0.0,
                 class_weight=None, restore_best_weights=True, callbacks=None,
                 progress_bar=False, dtype="float32", device="cpu"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.rho = rho
        self.weight_decay = weight_decay
        self.learning_rate_decay = learning_rate_decay
        self.dropout = dropout
        self.class_weight = class_weight
        self.restore_best_weights = restore_best_weights
        self.callbacks = callbacks
        self.progress_bar = progress_bar
        self.dtype = dtype
        self.device = device

    loss = "log_loss"

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _validate_input(self, X, y, incremental, reset):
        """(X, Y, stratify): Y is the one-hot / indicator target matrix in the model's dtype."""
        X, y = self._check_X_y(X, y, reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # A new label encoding on a fresh fit; otherwise the labels must fit the old one.
        if "classes_" not in vars(self) or (not self.warm_start and not incremental):
            binarizer = LabelBinarizer().fit(y)
            if binarizer.y_type_ != "multilabel-indicator" and len(binarizer.classes_) < 2:
                raise ValueError(f"MLPClassifier needs at least two classes in y to learn "
                                 f"from; y has one class: {binarizer.classes_.tolist()[0]!r}.")
            self._label_binarizer = binarizer
            self.classes_ = labels = binarizer.classes_
        else:
            labels = unique_labels(y)
            if self.warm_start and set(labels) != set(self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as in the "
                    f"previous call to fit. Previously got {self.classes_}, `y` has {labels}")
        Y = self._encode_targets(y, X.dtype, labels)
        stratify = Y.astype(bool) if Y.shape[1] == 1 else None  # sklearn stratifies binary only
        return X, Y, stratify

    def _encode_targets(self, y, dtype, labels=None):
        """One-hot / indicator rows (n, n_outputs) for labels y in the fitted encoding.

        `labels` is ``unique_labels(y)`` when the caller has it already: on 1e5 labels each
        pass over y costs about a millisecond, and LabelBinarizer.transform makes several.
        """
        if labels is None:
            labels = unique_labels(y)
        if len(np.setdiff1d(labels, self.classes_)):
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {labels}.")
        if self._label_binarizer.y_type_ in ("binary", "multiclass") and y.ndim == 1:
            # classes_ is sorted (it comes from unique_labels) and holds every label of y.
            index = np.searchsorted(self.classes_, y)
            if len(self.classes_) <= 2:  # one column, 1 for classes_[1], as LabelBinarizer
                return (index == 1).astype(dtype)[:, np.newaxis]
            return np.eye(len(self.classes_), dtype=dtype).take(index, axis=0)
        return np.ascontiguousarray(self._label_binarizer.transform(y).astype(bool), dtype=dtype)

    def _class_sample_weight(self, Y, incremental):
        if self.class_weight is None:
            return None
        if self._label_binarizer.y_type_ == "multilabel-indicator":
            raise ValueError("class_weight is not supported for multilabel targets; pass "
                             "sample_weight instead.")
        if self.class_weight == "balanced" and incremental:
            raise ValueError("class_weight='balanced' needs the whole training set and cannot be "
                             "used with partial_fit; compute weights once with "
                             "sklearn.utils.class_weight.compute_class_weight and pass a dict.")
        index = Y.argmax(axis=1) if Y.shape[1] > 1 else Y[:, 0].astype(np.intp)
        labels = self.classes_[index]
        weights = compute_class_weight(self.class_weight, classes=self.classes_, y=labels) \
            if self.class_weight == "balanced" else self._dict_class_weights()
        return weights[index]

    def _dict_class_weights(self):
        """The weight of each class, in classes_ order; class_weight gets sample_weight's rules:
        finite numbers, non-negative, not all zero."""
        def plain(label):
            return label.item() if isinstance(label, np.generic) else label

        unknown = [label for label in self.class_weight if label not in set(self.classes_)]
        if unknown:
            raise ValueError(f"class_weight names labels {[plain(u) for u in unknown]} that are "
                             f"not among the classes {self.classes_.tolist()}.")
        for label, weight in self.class_weight.items():
            if isinstance(weight, bool) or not isinstance(weight, Real) or \
                    not math.isfinite(weight) or weight < 0:  # math: Fractions too
                raise ValueError(f"class_weight for label {plain(label)!r} is {weight!r}: class "
                                 "weights must be finite numbers >= 0.")
        weights = np.array([self.class_weight.get(label, 1.0) for label in self.classes_],
                           dtype=np.float64)
        if not weights.any():
            raise ValueError("class_weight is zero for every class: there is nothing to learn "
                             "from.")
        return weights

    def _score_outputs(self, P, Y, sample_weight):
        """Accuracy of output activations P against one-hot / indicator targets Y."""
        lb = self._label_binarizer
        y_pred = lb.inverse_transform(P.ravel() if P.shape[1] == 1 else P)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return accuracy_score(lb.inverse_transform(Y), y_pred, sample_weight=sample_weight)

    @_reads_fitted_state
    def predict(self, X: MatrixLike) -> np.ndarray:
        """Predict class labels (or, for multilabel models, label indicator rows) for X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_classes)
        """
        P = self._forward(X)
        return self._label_binarizer.inverse_transform(P.ravel() if P.shape[1] == 1 else P)

    @_reads_fitted_state
    def predict_proba(self, X: MatrixLike) -> np.ndarray:
        """Probability of each class, columns ordered as ``classes_``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        P = self._forward(X)
        if P.shape[1] == 1:
            return np.hstack([1 - P, P])
        return P

    @_reads_fitted_state
    def predict_log_proba(self, X: MatrixLike) -> np.ndarray:
        """Logarithm of ``predict_proba(X)``, finite where probabilities underflow to 0.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            log_proba = np.log(proba)
        underflow = proba < np.finfo(proba.dtype).tiny
        if not underflow.any():
            return log_proba
        # Where p is 0 or subnormal, log(p) is -inf or inexact (in float32 from logits of about
        # -87 on): take log p from the output layer's pre-activations z instead.
        Z = self._forward(X, logits=True)
        if self.out_activation_ == "softmax":
            Z = Z - Z.max(axis=1, keepdims=True)
            exact = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
        else:
            exact = -np.logaddexp(0, -Z)  # log sigmoid(z)
            if Z.shape[1] == 1:  # columns log(1 - sigmoid(z)), log sigmoid(z)
                exact = np.hstack([-np.logaddexp(0, Z), exact])
        return np.where(underflow, exact, log_proba)

    @_mini_batch_only
    @_one_fit_at_a_time
    @_keeps_state_on_error
    def partial_fit(self: _Estimator, X: MatrixLike, y: ArrayLike,
                    sample_weight: ArrayLike | None = None, classes: ArrayLike | None = None,
                    validation_data: tuple | None = None) -> _Estimator:
        """Train for one epoch over (X, y), continuing from the current weights.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            Every class that can appear in any call; required on the first call, and must be
            the same whenever given again.
        validation_data : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), default=None
            Scored after the epoch. With ``early_stopping=True`` (then, without validation_data,
            ``validation_fraction`` of this call's data is held out), ``stopped_early_`` becomes
            True once the score has not improved for ``n_iter_no_change`` calls, and with
            ``restore_best_weights`` the best weights seen are restored at that point.

        Returns
        -------
        self : object
        """
        if "_params" in vars(self):  # labels are checked against classes_: check it first
            fitted_state.check_usable(self)
        _check_sparse_structure(y, "y")
        if self._first_partial_fit(classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True,
                         validation_data=validation_data)

    def _first_partial_fit(self, classes):
        """True on the first partial_fit call; checks `classes` as scikit-learn does."""
        previous = vars(self).get("classes_")
        if previous is None and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if classes is None:
            return False
        if previous is not None:
            if not np.array_equal(previous, unique_labels(classes)):
                raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                                 f"partial_fit, was: {previous!r}")
            return False
        self.classes_ = unique_labels(classes)
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, BaseMultilayerPerceptron):
    __doc__ = f"""Multi-layer perceptron regressor trained by compiled kernels.

    A drop-in replacement for :class:`sklearn.neural_network.MLPRegressor`: same parameters,
    attributes and, with ``dtype="float64"`` and the same ``random_state``, the same numbers.

    Parameters
    ----------
    loss : {{'squared_error', 'poisson'}}, default='squared_error'
        Half squared error with an identity output, or half Poisson deviance with an exponential
        output (targets must be non-negative). As in scikit-learn, the squared error is averaged
        over outputs while its gradient is not (scikit-learn issue 8349; see the
        README).{_SHARED_PARAMETERS}
    Attributes
    ----------{_SHARED_ATTRIBUTES}
    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from fastmlp import MLPRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=0.1, random_state=0)
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), solver="lbfgs", random_state=0).fit(X, y)
    >>> reg.score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict = {
        **BaseMultilayerPerceptron._parameter_constraints,
        "loss": [StrOptions(set(ops.REGRESSION_LOSSES))],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 rho=0.9, weight_decay=0.01, learning_rate_decay=None, dropout=0.0,
                 restore_best_weights=True, callbacks=None, progress_bar=False, dtype="float32",
                 device="cpu"):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.rho = rho
        self.weight_decay = weight_decay
        self.learning_rate_decay = learning_rate_decay
        self.dropout = dropout
        self.restore_best_weights = restore_best_weights
        self.callbacks = callbacks
        self.progress_bar = progress_bar
        self.dtype = dtype
        self.device = device

    def _output_activation(self):
        return ops.LOSS[self.loss].output  # the loss's canonical output activation

    def _validate_input(self, X, y, incremental, reset):
        X, y = self._check_X_y(X, y, reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, self._encode_targets(y, X.dtype), None

    def _check_target_range(self, Y, name):
        """Squared errors of targets beyond sqrt(dtype max) / 2 overflow to inf in training (a
        float32 target of 3e38 is finite; its square is not): refuse them, naming the cure."""
        if self.loss != "squared_error" or not Y.size:
            return
        largest = float(np.abs(Y).max())
        limit = float(np.sqrt(np.finfo(Y.dtype).max)) / 2
        if largest > limit:
            raise ValueError(
                f"{name} has values up to {largest:.3g} in absolute value, too large for "
                f"{Y.dtype} training: their squared errors would be non-finite (|{name}| must "
                f"stay below {limit:.3g}). Scale the targets, e.g. with "
                "sklearn.compose.TransformedTargetRegressor and a StandardScaler"
                + (", or use dtype='float64'." if Y.dtype == np.float32 else "."))

    def _encode_targets(self, y, dtype):
        if self.loss == "poisson" and (np.asarray(y) < 0).any():
            raise ValueError("loss='poisson' needs non-negative targets y; got a minimum of "
                             f"{np.min(y)}.")
        return np.ascontiguousarray(np.asarray(y).reshape(len(y), -1), dtype=dtype)

    def _score_outputs(self, y_pred, Y, sample_weight):
        """R^2 of predictions against targets Y (n, K)."""
        if not np.isfinite(y_pred).all():
            return np.nan
        return r2_score(Y, y_pred, sample_weight=sample_weight)

    @_reads_fitted_state
    def predict(self, X: MatrixLike) -> np.ndarray:
        """Predict targets for X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        y_pred = self._forward(X)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    @_mini_batch_only
    @_one_fit_at_a_time
    @_keeps_state_on_error
    def partial_fit(self: _Estimator, X: MatrixLike, y: ArrayLike,
                    sample_weight: ArrayLike | None = None,
                    validation_data: tuple | None = None) -> _Estimator:
        """Train for one epoch over (X, y), continuing from the current weights.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None
        validation_data : tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), default=None
            As in :meth:`MLPClassifier.partial_fit`.

        Returns
        -------
        self : object
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=True,
                         validation_data=validation_data)


fitted_state.register(MLPClassifier, MLPRegressor)
