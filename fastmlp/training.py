"""The training driver: epochs, shuffling, validation split, schedules, early stopping, L-BFGS.

Plain Python that runs once per epoch (never once per mini-batch) and calls one compiled kernel per
epoch. Random numbers are drawn here, in exactly scikit-learn's order, so that a float64 fit with
the same random_state reproduces scikit-learn's. It reads and writes the estimator's fitted state
but never validates user input; the estimator has done that.
"""

import contextlib
import importlib
import threading
import time
import warnings
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from . import ops
from .bundles import (
    BIAS_OFFSET,
    FAN_IN,
    FAN_OUT,
    Features,
    Network,
    OptimizerStep,
    TrainState,
)
from .callbacks import EpochRecord, ProgressBar
from .config import compile_seconds
from .optimizers import make_optimizer

# Each backend is a module with the same functions (see fastmlp/cpu/__init__.py); the driver below
# reads the same whichever runs the kernels.
_BACKENDS = {"cpu": "fastmlp.cpu", "cuda": "fastmlp.cuda"}


def backend(device):
    """The backend module for a resolved device name ("cpu" or "cuda")."""
    return importlib.import_module(_BACKENDS[device])

# Rows per chunk when a whole data set is pushed through the network (L-BFGS, predict): bounds
# the work buffers to chunk x widest-layers instead of the data set's size.
CHUNK_ROWS = 4096


class EpochRequest(NamedTuple):
    """What a fit asks of its backend for one epoch: the device, then train_epoch's arguments."""

    device: str
    state: TrainState
    features: Features
    Y: object
    sw: object
    order: np.ndarray  # on the host: the driver moves it
    batch_size: int
    net: Network
    opt: OptimizerStep


class DivergenceError(ValueError):
    """Training produced a non-finite loss or non-finite weights."""


@dataclass
class TrainingData:
    """Validated training data in the form the kernels take.

    features: a bundles.Features, dense or CSR;
    Y (N, K) float targets (one-hot or indicator for classifiers); sw (N,) sample weights, ones
    when the user gave none (weighted_by_user says which); Y_stratify: labels to stratify the
    validation split on, or None.
    """

    features: tuple
    Y: np.ndarray
    sw: np.ndarray
    weighted_by_user: bool
    Y_stratify: object = None
    host: object = None  # the host-side TrainingData this was moved from, if moved

    @property
    def n_samples(self):
        return self.Y.shape[0]

    def on(self, device):
        """The same data with its arrays moved to `device` once, for a whole fit (once for all
        the fits of fit_many that have the same data, see shared_arrays)."""
        move = _shared(backend(device).to_device)
        return replace(self, features=Features(*(move(a) for a in self.features)), Y=move(self.Y),
                       sw=move(self.sw), host=self)


_SHARING = threading.local()  # .moved: [(host array, moved array)] while shared_arrays is on


@contextlib.contextmanager
def shared_arrays():
    """Within this block (in this thread), TrainingData.on moves arrays of equal content once
    and hands every fit the same copy: fit_many's fits then share their data on the device,
    and arrays that are the same object tell the lockstep driver which fits share it."""
    _SHARING.moved = []
    try:
        yield
    finally:
        _SHARING.moved = None


def _shared(move):
    """`move`, made to reuse an earlier result for an array of equal content while
    shared_arrays is on."""
    def shared_move(array):
        moved = getattr(_SHARING, "moved", None)
        if moved is None:
            return move(array)
        for host, result in moved:
            if host is array or (host.shape == array.shape and host.dtype == array.dtype
                                 and np.array_equal(host[:1], array[:1])  # most differ here
                                 and np.array_equal(host, array)):
                return result
        moved.append((array, move(array)))
        return moved[-1][1]

    return shared_move


def as_features(X):
    """The bundles.Features the kernels take, for dense or sparse (validated) X. Sparse indices
    are normalised to int64: one type, one compiled specialisation."""
    if sp.issparse(X):
        X = X.tocsr()
        return Features(np.empty((0, X.shape[1]), dtype=X.dtype), np.ascontiguousarray(X.data),
                        X.indices.astype(np.int64), X.indptr.astype(np.int64))
    empty_index = np.empty(0, dtype=np.int64)
    return Features(X, np.empty(0, dtype=X.dtype), empty_index, empty_index)


def network(est, dropout_seed=0, device="cpu", table=None):
    """The bundles.Network the kernels take, its layer table (the estimator's unless given) on
    `device`."""
    loss = est.loss
    if loss == "log_loss" and est.out_activation_ == "logistic":
        loss = "binary_log_loss"
    table = est._layout.table if table is None else table
    return Network(backend(device).to_device(table),
                   ops.ACTIVATION[est.activation].code,
                   ops.ACTIVATION[est.out_activation_].code, ops.LOSS[loss].code,
                   float(est.alpha), float(getattr(est, "dropout", 0.0)), int(dropout_seed))


def check_buffers(table, params, features, Y=None, sw=None, slots=()):
    """Raise ValueError unless the arrays a kernel is about to get fit the layer table.

    Compiled code indexes with the table's sizes and checks no bounds, so this is the last
    line before it: the estimator checks its attributes first (fitted_state.check_usable) and
    says which is wrong; this catches whatever got past, instead of reading or writing outside a
    buffer. Shapes and dtypes only: cheap, and the same on every backend.
    """
    fan_in, n_outputs = int(table[0, FAN_IN]), int(table[-1, FAN_OUT])
    n_params = int(table[-1, BIAS_OFFSET] + table[-1, FAN_OUT])
    problems = []
    if len(params.shape) != 1 or params.shape[0] != n_params:
        problems.append(f"parameters {params.shape}, not ({n_params},)")
    if len(features.X.shape) != 2 or features.X.shape[1] != fan_in:
        problems.append(f"input of shape {features.X.shape}, not (rows, {fan_in})")
    if features.X.dtype != params.dtype:
        problems.append(f"input in {features.X.dtype}, parameters in {params.dtype}")
    if Y is not None:
        if len(Y.shape) != 2 or Y.shape[1] != n_outputs or Y.dtype != params.dtype:
            problems.append(f"targets {Y.shape} {Y.dtype}, not (rows, {n_outputs})")
        elif sw is None or sw.shape != (Y.shape[0],) or sw.dtype != params.dtype:
            problems.append("sample weights not one per target row")
        elif features.X.shape[0] not in (0, Y.shape[0]) or \
                features.indptr.shape[0] not in (0, Y.shape[0] + 1):  # 0: dense, or sparse
            problems.append("input and targets with different numbers of rows")
    if features.data.dtype != params.dtype:
        problems.append(f"sparse input in {features.data.dtype}, parameters in {params.dtype}")
    for slot in slots:
        if slot.shape != params.shape or slot.dtype != params.dtype:
            problems.append(f"optimizer state {slot.shape}, not ({n_params},)")
    if problems:
        raise ValueError("Inconsistent model state, refused before compiled code: "
                         + "; ".join(problems) + ". Refit the model.")


def predict_rows(est, features, rows, device="cpu", params=None):
    """Output activations (len(rows), K) on the host for the listed rows of the input.

    features must already live on `device`; params defaults to the fitted parameters. The output
    is sized from the layer table the kernel reads, never from an attribute."""
    be = backend(device)
    table = est._layout.table  # read once: the kernel gets the table that was checked
    net = network(est, device=device, table=table)._replace(dropout=0.0)  # inference
    params = be.to_device(est._params) if params is None else params
    check_buffers(table, params, features)
    out = be.empty((len(rows), int(table[-1, FAN_OUT])), params.dtype)
    # BLAS as training uses it: one thread for small products (a few thousand rows of a small
    # network took 20x longer on two threads while the other core was busy).
    with be.thread_limit(net, min(CHUNK_ROWS, len(rows))):
        be.predict(out, params, features, be.to_device(np.asarray(rows, dtype=np.int64)), net,
                   CHUNK_ROWS)
    return be.to_host(out)


def _batch_size(est, n_samples):
    if est.batch_size == "auto":
        return min(200, n_samples)
    if est.batch_size > n_samples:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to "
                      "be clipped", stacklevel=5)
    return int(np.clip(est.batch_size, 1, n_samples))


def _validation_split(est, data, rs, validation):
    """(train rows, validation data, validation rows); no validation set gives (rows, None, None).

    An external validation set (TrainingData) is used whole. Otherwise, with early stopping,
    rows are held out of `data`: splitting an index array consumes the random generator exactly
    as scikit-learn's split of X and y does, without copying the data.
    """
    rows = np.arange(data.n_samples)
    if validation is not None:
        return rows, validation, np.arange(validation.n_samples)
    if not est.early_stopping:
        return rows, None, None
    train, val = train_test_split(rows, random_state=rs, test_size=est.validation_fraction,
                                  stratify=data.Y_stratify)
    if val.shape[0] < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' or the "
                         "size of your dataset.")
    return train, data, val


def stochastic_steps(est, data, incremental, rs, device="cpu", validation=None):
    """Mini-batch training (sgd, adam, adagrad, rmsprop, adamw), as scikit-learn's
    ``_fit_stochastic`` plus validation monitoring, callbacks and progress display.

    A generator: it yields an EpochRequest for every epoch and must be sent back what the
    backend's train_epoch returns for it. Everything around the compiled epoch (shuffling,
    dropout seeds, schedules, validation, stopping) happens here, so that one fit driven alone
    (drive) and many driven in lockstep (fastmlp/many.py) make the same decisions.

    `data` (and `validation`, an optional external validation set) live on `device` (see
    TrainingData.on); parameters and optimizer state move there for the fit and come back once
    at the end.
    """
    be = backend(device)
    if not incremental or getattr(est, "_optimizer", None) is None:
        est._optimizer = make_optimizer(est, est._params.shape[0], est._params.dtype)
    optimizer = est._optimizer
    host_slots, _ = optimizer.kernel_args()
    params = be.to_device(est._params)
    dparams = be.empty(est._params.shape, est._params.dtype)
    slots = tuple(be.to_device(slot) for slot in host_slots)
    check_buffers(est._layout.table, params, data.features, data.Y, data.sw, slots)
    if validation is not None:
        check_buffers(est._layout.table, params, validation.features, validation.Y,
                      validation.sw)

    train_rows, val_data, val_rows = _validation_split(est, data, rs, validation)
    n_train = train_rows.shape[0]
    batch_size = _batch_size(est, n_train)
    net = network(est, device=device)
    sample_idx = np.arange(n_train)
    callbacks, progress = _callbacks_and_progress(est, incremental)
    if val_rows is not None and getattr(est, "validation_scores_", None) is None:
        # Monitoring an external validation set without early stopping.
        est.validation_scores_, est.validation_loss_curve_ = [], []
        est.best_validation_score_ = -np.inf
    est.stopped_early_ = False
    diverged = False

    try:
        est.n_iter_ = 0
        for _ in range(est.max_iter):
            started = time.perf_counter() - compile_seconds()  # compiling is not training
            if est.shuffle:
                # scikit-learn permutes the previous epoch's order again (sklearn.utils.shuffle:
                # shuffle an arange, then index), so we draw the same numbers the same way.
                permutation = np.arange(n_train)
                rs.shuffle(permutation)
                sample_idx = sample_idx[permutation]
            order = sample_idx if val_data is not data else train_rows[sample_idx]  # host rows
            if net.dropout > 0:  # fresh masks each epoch, drawn only when dropout is used
                net = net._replace(seed=int(rs.randint(0, 2**62)))
            learning_rate = optimizer.current_learning_rate()  # this epoch's, for the record
            total, step = yield EpochRequest(
                device, TrainState(params, dparams, *slots), data.features, data.Y, data.sw,
                order, batch_size, net, optimizer.kernel_args()[1])
            optimizer.epoch_done(step)
            # A diverged epoch ends training. With validation weights to fall back on
            # (scikit-learn issue 29504) it is recorded with a NaN score and the best weights
            # are restored below; without them nothing usable is left, so the fit raises.
            diverged = not np.isfinite(total)
            if diverged and (val_rows is None or est._best_params is None):
                _raise_divergence(est, total, n_train)
            val_score, val_loss = _record_epoch(
                est, total, n_train, diverged, val_data, val_rows,
                lambda: _validate(est, val_data, val_rows, device, params),
                lambda: be.to_host(params).copy())
            if not diverged:
                optimizer.iteration_ends(est.t_)
            record = EpochRecord(est.n_iter_, est.loss_, val_loss, val_score,
                                 time.perf_counter() - compile_seconds() - started,
                                 learning_rate, est)
            stop_requested = any([bool(callback(record)) for callback in callbacks])
            if _stops(est, optimizer, diverged, stop_requested, incremental):
                break
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.", stacklevel=5)
        est.stopped_early_ = True
    finally:
        # Bring parameters and optimizer state home (no-ops on the CPU backend).
        est._params[:] = be.to_host(params)
        for host, on_device in zip(host_slots, slots):
            host[:] = be.to_host(on_device)
        if progress is not None:
            progress.close()

    # scikit-learn keeps the best validation weights at the end of an early-stopped fit; a
    # partial_fit sequence gets them when its stopping rule fires.
    if diverged or (est.early_stopping and est.restore_best_weights and
                    est._best_params is not None and (not incremental or est.stopped_early_)):
        est._params[:] = est._best_params


def drive(steps):
    """Run one fit's steps (a generator of EpochRequests, see stochastic_steps) alone: every epoch
    on its backend, BLAS limited as the backend advises for the network; returns what the steps
    return. An interrupt during an epoch goes to the steps, which end the fit there."""
    try:
        request = next(steps)
    except StopIteration as done:
        return done.value
    be = backend(request.device)
    with be.thread_limit(request.net, request.batch_size):  # one BLAS thread for small products
        while True:
            try:
                try:
                    result = be.train_epoch(request.state, request.features, request.Y,
                                            request.sw, be.to_device(request.order),
                                            request.batch_size, request.net, request.opt)
                except KeyboardInterrupt as interrupt:
                    request = steps.throw(interrupt)
                    continue
                request = steps.send(result)
            except StopIteration as done:
                return done.value


def _callbacks_and_progress(est, incremental):
    """(the callbacks to call after each epoch, the progress bar among them or None)."""
    callbacks = list(est.callbacks or ())
    show_progress = getattr(est, "progress_bar", False)
    progress = ProgressBar(1 if incremental else est.max_iter) if show_progress else None
    if progress is not None:
        callbacks.append(progress)
    return callbacks, progress


def _raise_divergence(est, total, n_train):
    raise DivergenceError(
        "Solver produced non-finite parameter weights. The input data may contain "
        f"large values and need to be preprocessed. (The training loss became "
        f"{total / n_train} in epoch {est.n_iter_ + 1}: the learning rate "
        f"(learning_rate_init={est.learning_rate_init}) is probably too large, or "
        "the input has large values and needs scaling, e.g. StandardScaler.) The "
        "estimator was left as it was before this call.")


def _record_epoch(est, total, n_train, diverged, val_data, val_rows, validate, snapshot):
    """Record an epoch's loss (and validation score and loss, by validate(), when a validation
    set is monitored) in the estimator's curves and stopping bookkeeping; returns (val_score,
    val_loss), None when there is no validation set, NaN after a diverged epoch. snapshot():
    a host copy of the parameters, taken when the validation score is the best yet."""
    est.n_iter_ += 1
    est.loss_ = total / n_train
    est.t_ += n_train
    est.loss_curve_.append(est.loss_)
    if est.verbose:
        print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))

    val_score = val_loss = None
    if diverged:
        val_score = val_loss = np.nan
        est.validation_loss_curve_.append(val_loss)
        est.validation_scores_.append(val_score)
        if est.verbose and est.early_stopping:
            print("Validation score: %f" % val_score)
    else:
        if val_rows is not None:
            val_score, val_loss = validate()
            est.validation_loss_curve_.append(val_loss)
        _update_no_improvement_count(est, val_score, snapshot)
    return val_score, val_loss


def _stops(est, optimizer, diverged, stop_requested, incremental):
    """Whether training stops after this epoch: divergence (with the best validation weights to
    restore), the stopping rule (unless the optimizer lowers its rate instead), a callback, or
    one epoch of partial_fit; warns, as scikit-learn does, when max_iter ends it unconverged."""
    if diverged:
        warnings.warn(
            f"Training diverged: the loss became {est.loss_} in epoch {est.n_iter_}. "
            "Training stopped there and the weights of the best validation epoch "
            f"(score {est.best_validation_score_}) were restored. The learning rate "
            f"(learning_rate_init={est.learning_rate_init}) is probably too large, or "
            "the input needs scaling.", ConvergenceWarning, stacklevel=6)
        est.stopped_early_ = True
        return True

    if est._no_improvement_count > est.n_iter_no_change:
        if est.early_stopping:
            msg = ("Validation score did not improve more than tol=%f for %d "
                   "consecutive epochs." % (est.tol, est.n_iter_no_change))
        else:
            msg = ("Training loss did not improve more than tol=%f for %d consecutive "
                   "epochs." % (est.tol, est.n_iter_no_change))
        if optimizer.trigger_stopping(msg, est.verbose):
            est.stopped_early_ = True
            return True
        est._no_improvement_count = 0
    if stop_requested:
        if est.verbose:
            print("A callback asked to stop training. Stopping.")
        est.stopped_early_ = True
        return True

    if incremental:
        return True
    if est.n_iter_ == est.max_iter:
        warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                      "optimization hasn't converged yet." % est.max_iter,
                      ConvergenceWarning, stacklevel=6)
    return False


def _validate(est, val_data, rows, device, params):
    """(score, loss) of the current parameters on validation rows: accuracy or R^2, and the
    mean loss without the L2 penalty."""
    outputs = predict_rows(est, val_data.features, rows, device, params)
    host = val_data.host or val_data
    sw = host.sw[rows] if host.weighted_by_user else None
    Y = host.Y[rows]
    return est._score_outputs(outputs, Y, sw), _mean_loss(network(est).loss, outputs, Y, sw)


def _mean_loss(loss, P, Y, sw):
    """Weighted mean per-sample loss of outputs P (n, K) for targets Y: the kernels' own loss
    (output_delta_and_loss), run on host arrays."""
    P = np.ascontiguousarray(P)
    weights = np.ones(len(P), P.dtype) if sw is None else np.ascontiguousarray(sw, P.dtype)
    from .cpu.kernels import output_delta_and_loss  # the compiled loss, run on host arrays

    total = output_delta_and_loss(np.empty_like(P), P, np.ascontiguousarray(Y, P.dtype),
                                  weights, loss)
    return float(total / weights.sum())


def _update_no_improvement_count(est, val_score, snapshot):
    """scikit-learn's stopping bookkeeping: on the validation score with early stopping, else on
    the training loss. The best validation weights are kept whenever a validation set is
    monitored. Mirrors BaseMultilayerPerceptron._update_no_improvement_count in scikit-learn's
    sklearn/neural_network/_multilayer_perceptron.py; keep the two in step."""
    if val_score is not None:
        est.validation_scores_.append(val_score)
        if est.verbose and est.early_stopping:
            print("Validation score: %f" % val_score)
        if est.early_stopping:
            if val_score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
        if val_score > est.best_validation_score_:
            est.best_validation_score_ = val_score
            est._best_params = snapshot()
    if not est.early_stopping:
        est._no_improvement_count, est.best_loss_ = loss_progress(
            est._no_improvement_count, est.best_loss_, est.loss_curve_[-1], est.tol)


def loss_progress(no_improvement_count, best_loss, loss, tol):
    """(no_improvement_count, best_loss) after an epoch whose training loss is `loss`, by
    scikit-learn's rule: the count grows unless the loss beat the best by more than tol. The one
    rule of fit, partial_fit and fastmlp.dask.fit (on the replicas' averaged loss)."""
    no_improvement_count = no_improvement_count + 1 if loss > best_loss - tol else 0
    return no_improvement_count, loss if loss < best_loss else best_loss


def run_lbfgs(est, data, device="cpu"):
    """Full-batch training with scipy's L-BFGS-B on the flat parameter vector. scipy runs on the
    host; each loss-and-gradient evaluation runs on `device`, where `data` lives."""
    be = backend(device)
    params = be.to_device(est._params)
    dparams = be.empty(est._params.shape, est._params.dtype)
    net = network(est, device=device)
    check_buffers(est._layout.table, params, data.features, data.Y, data.sw, (dparams,))

    def loss_and_gradient(x):
        be.copy_to(params, x.astype(est._params.dtype, copy=False))
        loss = be.loss_and_gradient(dparams, params, data.features, data.Y, data.sw, net,
                                    CHUNK_ROWS)
        return loss, be.to_host(dparams).astype(np.float64)  # a fresh array: scipy keeps it

    with be.thread_limit(net, min(CHUNK_ROWS, data.n_samples)):
        result = scipy.optimize.minimize(
            loss_and_gradient, est._params.astype(np.float64), method="L-BFGS-B", jac=True,
            options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol},
        )
    # L-BFGS-B stops, with a warning only, when it meets a non-finite loss or gradient; where
    # that is the point it stops at, nothing was trained (e.g. the first evaluation overflowed).
    # As the mini-batch solvers do, such a fit raises, and the estimator keeps its old state.
    if not (np.isfinite(result.fun) and np.isfinite(result.jac).all() and
            np.isfinite(result.x).all()):
        raise DivergenceError(
            "Solver produced non-finite parameter weights. The input data may contain large "
            f"values and need to be preprocessed. (L-BFGS stopped after {result.nit} "
            f"iteration(s) at a loss of {result.fun} with a non-finite gradient or loss: the "
            "input or the targets probably have values too large for "
            f"{est._params.dtype} arithmetic and need scaling, e.g. StandardScaler.) The "
            "estimator was left as it was before this call.")
    est.n_iter_ = _lbfgs_iterations(result, est.max_iter)
    est.loss_ = float(result.fun)
    est._params[:] = result.x


def _lbfgs_iterations(result, max_iter):
    """Iterations used, with scikit-learn's ConvergenceWarning when L-BFGS did not converge
    (the message of scikit-learn's _check_optimize_result, which _fit_lbfgs calls)."""
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        msg = (f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):\n"
               f"{result.message}\n")
        if n_iter == max_iter:
            msg += ("\nIncrease the number of iterations to improve the convergence "
                    f"(max_iter={max_iter}).")
        msg += ("\nYou might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html")
        warnings.warn(msg, ConvergenceWarning, stacklevel=5)
    return n_iter
