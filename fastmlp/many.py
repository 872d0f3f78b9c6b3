"""Many networks trained together: fit_many.

Each estimator's fit runs as a generator of its epochs (BaseMultilayerPerceptron._fit_steps):
everything a fit decides (validation, initial weights, shuffles, dropout seeds, schedules,
early stopping, callbacks) is its own code, as in `.fit`. This driver only runs their epochs
together. Fits whose epoch requests share a device, dtype, layer table, batch size and data
form a group; one compiled call (per thread) trains a group's epoch, gathering each mini-batch
once per distinct batch order (fits with the same random_state share one). A fit that stops or
fails leaves its group; the others go on. L-BFGS fits have no epochs and run while the fits
are prepared.
"""

import contextlib
import numbers
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import numpy as np
import scipy.sparse as sp
from sklearn.base import is_classifier

from .bundles import Networks, OptimizerSteps, TrainState
from .callbacks import ProgressBar
from .training import backend, shared_arrays

ERRORS = ("raise", "return")

# Models in one compiled call at most by the bytes of their stacked state (parameters, gradient
# and two optimizer slots): a search of big networks runs in several calls per epoch instead of
# doubling its memory at once.
STACK_BYTES = 256 << 20


def fit_many(estimators, X=None, y=None, sample_weight=None, *, datasets=None, n_jobs=None,
             errors="raise", progress_bar=False):
    """Fit every estimator on (X, y[, sample_weight]) as its own ``fit`` would, training the
    networks together; returns the list of the estimators (the same objects, fitted).

    Every result equals that estimator's own ``fit(X, y, sample_weight=sample_weight)``: the
    same initial weights, batch order, dropout masks, loss curve and stopping decisions (on the
    CPU, bit for bit). What is shared is work: the data is validated, moved and gathered into
    mini-batches once, and the fits' epochs run together, in one compiled call per group of
    networks of the same shape, batch size and dtype.

    Parameters
    ----------
    estimators : iterable of fastmlp.MLPClassifier or fastmlp.MLPRegressor
        Any mix of hyper-parameters, architectures, activations, optimizers and devices;
        L-BFGS fits are run the ordinary way in the same call.
    X, y, sample_weight : as for ``fit``: the data every estimator is fitted on.
    datasets : list of tuples, default=None
        Instead of X, y and sample_weight: one ``(X, y)`` or ``(X, y, sample_weight)`` per
        estimator, in order, for fits on different data (cross-validation folds). Fits on
        different data never share a CPU call; on a GPU, fits whose data have the same
        columns (dense or CSR) still train in one launch per epoch, whatever their numbers of
        rows (their data are concatenated on the device once).
    n_jobs : int, default=None
        Threads that run the CPU groups' compiled epochs (which release the GIL): None means
        1, -1 all cores, -2 all but one, as in joblib. Each thread keeps BLAS to one thread.
    errors : {"raise", "return"}, default="raise"
        A fit that fails (bad parameters, divergence) fails alone: the others train on. With
        "raise" the first failure is raised once all are done; with "return" the failed fit's
        entry in the returned list is the exception instead of the estimator.
    progress_bar : bool, default=False
        Show a bar (tqdm's when installed) counting finished fits.

    Returns
    -------
    list
        The estimators in the given order, fitted (or, with errors="return", the exception of
        each fit that failed).
    """
    if errors not in ERRORS:
        raise ValueError(f"errors must be one of {ERRORS}, got {errors!r}.")
    results, _ = fit_many_timed(estimators, X, y, sample_weight, datasets=datasets,
                                n_jobs=n_jobs, progress_bar=progress_bar)
    if errors == "raise":
        for result in results:
            if isinstance(result, BaseException):
                raise result
    return results


def fit_many_timed(estimators, X=None, y=None, sample_weight=None, *, datasets=None,
                   n_jobs=None, progress_bar=False):
    """fit_many with errors="return", and the seconds each fit took: its own preparation and
    epoch bookkeeping, plus its share of every compiled call it trained in (the call's time
    over its models). With several threads these add up to more than the wall time, as the
    fit times of parallel jobs do (with one, a little more where the calling thread's
    bookkeeping overlaps the pool thread's compiled call). For fastmlp.model_selection's
    ``*_fit_time``."""
    threads = _threads(n_jobs)
    estimators = list(estimators)
    data = _datasets(len(estimators), X, y, sample_weight, datasets)
    from .estimators import BaseMultilayerPerceptron

    for i, est in enumerate(estimators):
        if not isinstance(est, BaseMultilayerPerceptron):
            raise TypeError(f"fit_many trains fastmlp's MLPClassifier and MLPRegressor; "
                            f"estimators[{i}] is a {type(est).__name__}.")
    if len({id(est) for est in estimators}) < len(estimators):
        raise ValueError("fit_many got the same estimator object twice: fit copies of it "
                         "(sklearn.base.clone) instead.")
    progress = ProgressBar(len(estimators), unit="fit") if progress_bar else None
    fits = [_Fit(est, i) for i, est in enumerate(estimators)]
    try:
        with shared_arrays():  # the fits' data: validated each, stored and moved once
            for wave in _waves(fits, data):
                for fit in wave:
                    fit.start(*data[fit.index], progress)
                _train_together([fit for fit in wave if fit.request is not None], threads)
    except KeyboardInterrupt as interruption:  # as .fit does: every fit stops where it is
        for fit in fits:
            fit.interrupt(interruption)
    finally:
        for fit in fits:  # only after an error of the driver itself: release the estimators
            fit.interrupt(KeyboardInterrupt())
        if progress is not None:
            progress.close()
    return [fit.result for fit in fits], [fit.seconds for fit in fits]


def _datasets(n_fits, X, y, sample_weight, datasets):
    """Each fit's (X, y, sample_weight), from the shared data or from datasets."""
    if datasets is None:
        if X is None or y is None:
            raise TypeError("fit_many needs X and y, or datasets.")
        return [(X, y, sample_weight)] * n_fits
    if X is not None or y is not None or sample_weight is not None:
        raise TypeError("fit_many takes either X, y and sample_weight or datasets, not both.")
    datasets = list(datasets)
    if len(datasets) != n_fits:
        raise ValueError(f"datasets has {len(datasets)} entries for {n_fits} estimators: give "
                         "one (X, y) or (X, y, sample_weight) per estimator.")
    for i, entry in enumerate(datasets):
        if not isinstance(entry, tuple) or len(entry) not in (2, 3):
            raise ValueError(f"datasets[{i}] must be a tuple (X, y) or (X, y, sample_weight), "
                             f"got {type(entry).__name__}"
                             f"{f' of length {len(entry)}' if isinstance(entry, tuple) else ''}.")
    return [entry if len(entry) == 3 else (*entry, None) for entry in datasets]


def _waves(fits, data):
    """The fits in consecutive waves, each trained (and holding its state) only after the one
    before has ended: one wave, unless the fits that train on a GPU would together hold more
    than half its free memory (their parameters, gradients, two optimizer slots and the
    stacked copies of an epoch: 8 parameter vectors each), less what their data holds there
    for the whole call (_data_cost)."""
    costs = [_wave_cost(fit.est, *data[fit.index][:2]) for fit in fits]
    # Asked only where a GPU fit is: importing the CUDA bindings takes about a second.
    budget = _memory_budget() if any(costs) else None
    if budget is not None:
        budget -= _data_cost(fits, data, costs)
    waves, wave, used = [], [], 0
    for fit, cost in zip(fits, costs):
        if wave and budget is not None and used + cost > budget:
            waves.append(wave)
            wave, used = [], 0
        wave.append(fit)
        used += cost
    return [*waves, wave] if wave else waves


def _memory_budget():
    """Bytes the GPU fits of one wave may hold: half the device's free memory; None (no
    limit) without a usable device."""
    from .cuda import device

    try:
        free = device.free_bytes() if device.target() == "gpu" else None
    except Exception:  # noqa: BLE001 - no device to ask: the fits will say why themselves
        free = None
    return None if free is None else free // 2


def _data_cost(fits, data, costs):
    """The GPU memory the data of the fits with a cost (those on a GPU) hold for the whole
    call, in bytes: one device copy of each distinct data set (training.shared_arrays keeps
    them), and where there are several, their concatenation too (_data). An estimate from the
    shapes, like _wave_cost."""
    distinct = {}
    for fit, cost in zip(fits, costs):
        if cost:
            X, y = data[fit.index][:2]
            distinct.setdefault((id(X), id(y)), _data_bytes(fit.est, X, y))
    total = sum(distinct.values())
    return 2 * total if len(distinct) > 1 else total


def _data_bytes(est, X, y):
    """Device bytes of one data set in a fit's dtype: inputs (dense, or CSR values, int64
    column indices and row pointers), targets and sample weights."""
    try:
        itemsize = np.dtype(est.dtype).itemsize
        rows = int(np.shape(X)[0])
        if sp.issparse(X):
            inputs = X.nnz * (itemsize + 8) + (rows + 1) * 8
        else:
            inputs = rows * int(np.shape(X)[1]) * itemsize
        return inputs + rows * (_units(est, X, y)[-1] + 1) * itemsize
    except Exception:  # noqa: BLE001 - bad data fails in the fit itself, alone
        return 0


def _units(est, X, y):
    """The network's layer sizes, inputs first, from its parameters and the data's shape."""
    hidden = est.hidden_layer_sizes
    hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
    y = np.asarray(y)
    classes = len(np.unique(y)) if y.ndim == 1 and is_classifier(est) else 1
    outputs = y.shape[1] if y.ndim == 2 else (classes if classes > 2 else 1)
    return [int(np.shape(X)[1]), *map(int, hidden), int(outputs)]


def _wave_cost(est, X, y):
    """The GPU memory a fit's state takes, in bytes (8 parameter vectors), from its parameters
    and the data's shape before anything is validated: an estimate for _waves, never used to
    size a buffer; 0 for a fit on the CPU (device="auto" asks the rule the fit will ask), or
    where the parameters do not say (the fit will then fail with its own error)."""
    if est.device == "cpu":
        return 0
    try:
        units = _units(est, X, y)
        if est.device == "auto" and est._auto_device(
                units, int(np.shape(X)[0]), sp.issparse(X)) != "cuda":
            return 0
        n_params = sum((a + 1) * b for a, b in zip(units, units[1:]))
        return 8 * n_params * np.dtype(est.dtype).itemsize
    except Exception:  # noqa: BLE001 - bad parameters fail in the fit itself, alone
        return 0


def _threads(n_jobs):
    """Threads for n_jobs, joblib's way: None is 1, negative counts back from all cores."""
    if n_jobs is None:
        return 1
    if not isinstance(n_jobs, numbers.Integral) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero int or None, got {n_jobs!r}.")
    cores = os.cpu_count() or 1
    return max(1, n_jobs if n_jobs > 0 else cores + 1 + n_jobs)


class _Fit:
    """One estimator's fit, driven epoch by epoch: its steps generator, the epoch it asks for
    next (request; None once it has ended), and its result (the estimator or the exception)."""

    def __init__(self, est, index):
        self.est = est
        self.index = index  # in the call's estimators
        self.request = None
        self.result = None
        self.steps = None
        self.guards = contextlib.ExitStack()
        self.progress = None
        self.seconds = 0.0  # this fit's time: its own Python, its share of the compiled calls

    def start(self, X, y, sample_weight, progress):
        """Validate and prepare the fit, up to its first epoch (an L-BFGS fit runs whole)."""
        from .estimators import fitting, state_kept

        self.progress = progress
        try:
            self.guards.enter_context(fitting(self.est))
            self.guards.enter_context(state_kept(self.est))
            self.steps = self.est._fit_steps(X, y, sample_weight)
        except Exception as exc:  # noqa: BLE001 - this fit's failure, not the call's
            self._end(exc)
            return
        self._advance(lambda: next(self.steps))

    def send(self, total, step):
        """The backend's result for the requested epoch; the fit decides what comes next."""
        self._advance(lambda: self.steps.send((total, step)))

    def _advance(self, step):
        began = time.perf_counter()
        try:
            self.request = step()
        except StopIteration:
            self._end(None)
        except Exception as exc:  # noqa: BLE001 - one fit fails alone, as error_score expects
            self._end(exc)
        finally:
            self.seconds += time.perf_counter() - began

    def _end(self, error):
        self.request = None
        try:
            if error is None:
                self.guards.close()
            elif not self.guards.__exit__(type(error), error, error.__traceback__):
                pass  # the state guard put the estimator back; the error is this fit's result
        except Exception as exc:  # noqa: BLE001 - a guard refusing (fitted elsewhere)
            error = exc
        self.result = self.est if error is None else error
        if self.progress is not None:
            self.progress.advance()

    def interrupt(self, interruption):
        """End the fit as an interrupted fit ends (with its weights so far, stopped_early_)."""
        if self.request is not None:
            self._advance(lambda: self.steps.throw(interruption))
        if self.request is not None:  # it asked for another epoch all the same
            self.steps.close()
            self._end(RuntimeError("fit_many was interrupted"))


def _train_together(fits, threads):
    """Run the fits' epochs until every one has ended. The fits are split into one call per
    thread at first; when a call's epoch is done its fits decide what comes next (in this
    thread: callbacks, validation and stopping run where the user's code runs) and go on as one
    call again, while the other threads still train theirs."""
    with ThreadPoolExecutor(max_workers=threads) as pool, _blas_single_thread(threads):

        pending, merged = {}, {}

        def start(fits, parts):
            for group in _groups(fits):
                for call in _calls(group, parts, merged):
                    if call.on_cpu:
                        pending[pool.submit(call.run, threads == 1)] = call
                    else:  # here, in the thread that owns the fits' device arrays
                        done = Future()
                        done.set_result(call.run(True))
                        pending[done] = call

        start(fits, threads)
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                call = pending.pop(future)
                call.deliver(*future.result())
                start([fit for fit in call.fits if fit.request is not None], 1)


def _blas_single_thread(threads):
    """With several threads training, each keeps BLAS to one thread (the networks a search
    trains are small; threads on top of BLAS threads only fight for the cores)."""
    if threads == 1:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _groups(fits):
    """The fits whose epochs one compiled call can train: same device, dtype, layer table and
    batch size; on the CPU also the same data (shared_arrays made equal data the same arrays)
    and epoch length (the CPU would take a call per length all the same). On a GPU, fits on
    different data of the same width (dense, or CSR) go in one group too, whatever their
    number of rows: their call trains on the data concatenated (_data), each fit visiting its
    own part for its own number of batches."""
    groups = {}
    for fit in fits:
        r = fit.request
        key = (r.device, r.state.params.dtype.str, r.net.layers.tobytes(), r.batch_size)
        if r.device == "cpu":
            key += (r.order.shape[0], *(id(a) for a in r.features), id(r.Y), id(r.sw))
        else:
            key += (_sparse(r.features),)
        groups.setdefault(key, []).append(fit)
    return list(groups.values())


def _sparse(features):
    """cpu.kernels.is_sparse's rule, on the host for either backend's arrays."""
    return features.indptr.shape[0] > 0


def _calls(group, parts, merged):
    """A group's epoch as compiled calls: in `parts` calls on the CPU (one per thread), and in
    calls whose stacked state stays under STACK_BYTES. merged: the call's cache of concatenated
    data (_GroupCall)."""
    request = group[0].request
    per_model = 4 * request.state.params.nbytes
    most = max(1, STACK_BYTES // max(1, per_model))
    parts = parts if request.device == "cpu" else 1
    size = max(1, min(most, -(-len(group) // parts)))
    return [_GroupCall(group[i:i + size], merged) for i in range(0, len(group), size)]


class _GroupCall:
    """One compiled call: the epoch each fit of `fits` asked for, on stacked copies of their
    state (copied in before, out after: cheap next to an epoch of arithmetic)."""

    def __init__(self, fits, merged):
        self.fits = fits
        requests = [fit.request for fit in fits]
        first = requests[0]
        self.be = backend(first.device)
        self.on_cpu = first.device == "cpu"
        began = time.perf_counter()
        self.data, offsets = _data(requests, self.be, merged)
        self.seconds = time.perf_counter() - began  # a GPU group's data joined: its first cost
        # Distinct batch orders: fits with the same random_state (and data) visit the same rows.
        orders, order_of = [], []
        for r, offset in zip(requests, offsets):
            order = r.order if offset == 0 else r.order + offset
            for g, seen in enumerate(orders):
                if seen is order or np.array_equal(seen, order):
                    order_of.append(g)
                    break
            else:
                order_of.append(len(orders))
                orders.append(order)
        # One row per order; on a GPU shorter ones (smaller folds) are padded, and `lengths`
        # says how many entries of each row an epoch visits.
        self.lengths = np.array([order.shape[0] for order in orders], dtype=np.int64)
        self.orders = np.zeros((len(orders), self.lengths.max()), dtype=np.int64)
        for row, order in zip(self.orders, orders):
            row[:order.shape[0]] = order
        self.order_of = np.asarray(order_of, dtype=np.int64)
        self.nets = Networks.of([r.net for r in requests])
        self.opts = OptimizerSteps.of([r.opt for r in requests])

    def run(self, alone):
        """Stack, train, unstack: runs on a pool thread (the compiled epoch holds no GIL).
        alone: the only thread training, which may use BLAS threads as one fit would."""
        began = time.perf_counter()
        be, requests = self.be, [fit.request for fit in self.fits]
        first = requests[0]
        params = be.stack_rows([r.state.params for r in requests])
        slot_1 = be.stack_rows([r.state.slot_1 for r in requests])
        slot_2 = be.stack_rows([r.state.slot_2 for r in requests])
        states = TrainState(params, be.empty(params.shape, params.dtype), slot_1, slot_2)
        limit = be.thread_limit(first.net, first.batch_size) if alone else \
            contextlib.nullcontext()
        with limit:
            totals, steps = be.train_epoch_many(
                states, *self.data, be.to_device(self.orders),
                self.order_of, np.arange(len(requests), dtype=np.int64), first.batch_size,
                self.nets, self.opts, self.lengths)
        be.unstack_rows(params, [r.state.params for r in requests])
        be.unstack_rows(slot_1, [r.state.slot_1 for r in requests])
        # One-slot optimizers pass their slot twice (optimizers.kernel_args): copy it back once.
        be.unstack_rows(slot_2, [None if r.state.slot_2 is r.state.slot_1 else r.state.slot_2
                                 for r in requests])
        self.seconds += time.perf_counter() - began
        return totals, steps

    def deliver(self, totals, steps):
        """Hand each fit its epoch's result (back on the calling thread: callbacks, validation
        and stopping run where the user's code runs)."""
        for m, fit in enumerate(self.fits):
            fit.seconds += self.seconds / len(self.fits)
            fit.send(float(totals[m]), int(steps[m]))


def _data(requests, be, merged):
    """The (features, Y, sw) a call trains on, and each request's row offset in them: the
    requests' own data when they share it, else (on a GPU) every distinct data set of their
    width seen in this fit_many call, concatenated on the device (cached in merged: built again
    only when a call brings a data set it lacks, so fits that stop early never cause a copy)."""
    def key(r):
        return *(id(a) for a in r.features), id(r.Y), id(r.sw)

    distinct = {key(r): (r.features, r.Y, r.sw) for r in requests}
    first = requests[0]
    if len(distinct) == 1:
        return (first.features, first.Y, first.sw), [0] * len(requests)
    width = (first.features.X.shape[1], first.Y.shape[1], first.features.X.dtype.str,
             _sparse(first.features))
    data, parts, start_of = merged.get(width, (None, {}, {}))
    if not distinct.keys() <= start_of.keys():
        parts = {**parts, **distinct}
        data = _concatenated(list(parts.values()), be)
        starts = np.cumsum([0] + [Y.shape[0] for _, Y, _ in parts.values()][:-1])
        start_of = dict(zip(parts, starts.tolist()))
        merged[width] = data, parts, start_of
    return data, [start_of[key(r)] for r in requests]


def _concatenated(parts, be):
    """(features, Y, sw) of data sets of one width, one after another, as device arrays: the
    rows of dense inputs, or the CSR parts of sparse ones (row pointers shifted by the entries
    before them)."""
    def joined(arrays):
        return be.to_device(np.concatenate([be.to_host(array) for array in arrays]))

    features = [f for f, _, _ in parts]
    if _sparse(features[0]):
        pointers, values, columns, entries = [], [], [], 0
        for f in features:
            indptr = be.to_host(f.indptr)
            first, end = int(indptr[0]), int(indptr[-1])  # entries outside are not the rows'
            values.append(be.to_host(f.data)[first:end])
            columns.append(be.to_host(f.indices)[first:end])
            pointers.append((indptr if not pointers else indptr[1:]) - first + entries)
            entries += end - first
        merged_features = features[0]._replace(
            data=be.to_device(np.concatenate(values)),
            indices=be.to_device(np.concatenate(columns)),
            indptr=be.to_device(np.concatenate(pointers)))
    else:
        merged_features = features[0]._replace(X=joined(f.X for f in features))
    return merged_features, joined(Y for _, Y, _ in parts), joined(sw for _, _, sw in parts)
