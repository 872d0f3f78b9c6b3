"""Running fastmlp on a Dask cluster: data-parallel training of one model, and BLAS-thread helpers.

`fit` trains one estimator on a chunked Dask array by local SGD (model averaging) with Dask's own
futures doing every transfer; the helpers inspect and limit the BLAS thread pools of workers.
This module must not open sockets or serialise anything itself (Dask does all communication), must
not be imported by ``fastmlp/__init__.py`` (dask is an optional extra), and holds no maths: replicas
train with the estimator's own ``partial_fit``.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from contextlib import nullcontext
from numbers import Integral
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import clone, is_classifier
from sklearn.utils import check_random_state
from threadpoolctl import threadpool_info, threadpool_limits

try:
    import dask.array as da
    from distributed import get_client
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("fastmlp.dask needs dask and distributed: "
                      "pip install 'fastmlp[dask]'") from exc

from .callbacks import EpochRecord
from .estimators import BaseMultilayerPerceptron
from .training import DivergenceError, loss_progress

if TYPE_CHECKING:
    from distributed import Client
    from numpy.typing import ArrayLike

__all__ = ["blas_threads", "fit", "limit_blas_threads"]

_Estimator = TypeVar("_Estimator", bound=BaseMultilayerPerceptron)  # fit returns a fitted copy

_AUTO_BATCH = 200  # batch_size="auto" is min(200, n_samples), as in the estimator


# ---------------------------------------------------------------------------------------- threads
def _pool_sizes():
    """{library: threads} for every BLAS/OpenMP pool loaded in this process."""
    return {f"{pool['internal_api']}:{os.path.basename(pool['filepath'])}": pool["num_threads"]
            for pool in threadpool_info()}


def blas_threads(client):
    """Thread-pool sizes (BLAS, OpenMP) in every worker process of a Dask cluster.

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster to inspect.

    Returns
    -------
    sizes : dict
        ``{worker address: {"api:library file": number of threads}}``. Workers running in the
        client's own process (``Client(processes=False)``) report the client's pools.
    """
    return client.run(_pool_sizes)


class _BLASThreads(WorkerPlugin):
    """Sets the process-wide BLAS/OpenMP limits when a worker starts (and on every worker that
    joins later)."""

    name = "fastmlp-blas-threads"

    def __init__(self, threads):
        self.threads = threads

    def setup(self, worker):
        # Not a context manager: the limit is meant to last for the worker's life.
        threadpool_limits(limits=self.threads)


def limit_blas_threads(client, threads=1):
    """Limit every BLAS and OpenMP thread pool of every worker of the cluster to `threads`.

    Workers started by a nanny (``LocalCluster(processes=True)``, ``dask worker``) already start
    with ``OPENBLAS_NUM_THREADS=OMP_NUM_THREADS=MKL_NUM_THREADS=1`` (Dask's
    ``distributed.nanny.pre-spawn-environ``), so each task uses one BLAS thread and a worker's
    total follows its ``nthreads``. Call this for workers that run as threads of one process
    (``Client(processes=False)``): they share the process's pools, which otherwise keep one
    thread per core for every concurrent task. The limit is process-wide, so there it applies to
    the client's own process too.

    Parameters
    ----------
    client : distributed.Client
        Client of the cluster.
    threads : int, default=1
        Threads per pool; 1 means each concurrently running task uses one core.
    """
    if not isinstance(threads, Integral) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    client.register_plugin(_BLASThreads(int(threads)))


def _workers(client):
    """{address: worker info} for every worker (recent versions list a few unless asked)."""
    try:
        return client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed has no n_workers argument and lists them all
        return client.scheduler_info()["workers"]


def _check_own_processes(client, workers):
    """Raise unless every worker runs in a process of its own (not the client's): BLAS limits are
    per process, and replicas sharing one would undo each other's."""
    info = _workers(client)
    pids = client.run(os.getpid, workers=list(workers))
    processes = [(info[w]["host"], pids[w]) for w in workers]
    if len(set(processes)) < len(processes) or os.getpid() in pids.values():
        raise ValueError("threads= needs workers with a process each (LocalCluster(processes="
                         "True), dask worker); for workers that are threads of one process, use "
                         "limit_blas_threads(client, n) instead")


# ---------------------------------------------------------------------------- work on the workers
def _n_rows(block):
    return block.shape[0]


def _make_shard(x_blocks, y_blocks, dtype):
    """One worker's training data: its partitions concatenated, X in the model's dtype (so that
    partial_fit does not convert it again every epoch); sparse chunks give one CSR matrix."""
    if sp.issparse(x_blocks[0]):
        X = sp.vstack(x_blocks, format="csr", dtype=dtype)
    else:
        X = np.concatenate(x_blocks, axis=0, dtype=dtype, casting="same_kind")
    return X, np.concatenate(y_blocks, axis=0)


def _train_round(model, shard, start, stop, classes, threads):
    """One partial_fit call of a replica on rows [start, stop) of its shard.

    Returns (replica, mean loss, rows). The model is copied first: the scattered model may be the
    very object other replicas read (workers that are threads of one process share it).
    """
    X, y = shard
    stop = X.shape[0] if stop is None else min(stop, X.shape[0])
    replica = copy.deepcopy(model)
    kwargs = {} if classes is None else {"classes": classes}
    limits = nullcontext() if threads is None else threadpool_limits(limits=threads)
    with limits:
        replica.partial_fit(X[start:stop], y[start:stop], **kwargs)
    return replica, replica.loss_, stop - start


# ------------------------------------------------------------------------------- on the client
def _as_dask_array(data, n_parts, name):
    if hasattr(data, "to_dask_array"):  # dask DataFrame / Series
        return data.to_dask_array(lengths=True)
    if isinstance(data, da.Array):
        return data
    data = np.asarray(data)
    if data.ndim == 0:
        raise ValueError(f"{name} must be an array, got a scalar")
    return da.from_array(data, chunks=(max(1, math.ceil(data.shape[0] / n_parts)),)
                         + data.shape[1:])


def _plan(sizes, holders, workers):
    """{worker: partition indices}: each partition stays where it is stored unless that would put
    more than an even share of rows on its worker while another worker is under its share."""
    target = sum(sizes) / len(workers)
    load = dict.fromkeys(workers, 0)
    plan = {w: [] for w in workers}
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        homes = [w for w in holders.get(i, ()) if w in load]
        home = min(homes, key=load.get) if homes else None
        lightest = min(workers, key=load.get)
        if home is None or (load[home] + sizes[i] > target >= load[lightest] + sizes[i]):
            home = lightest
        plan[home].append(i)
        load[home] += sizes[i]
    # Partition order within a shard is the array's order: one worker trains on X as it is.
    return {w: sorted(parts) for w, parts in plan.items() if parts}


def _average(replicas, rows, optimizer_state):
    """The replica that trained the most rows, holding the row-weighted average of all replicas'
    parameters (and optimizer slots when optimizer_state="average")."""
    fractions = np.asarray(rows, dtype=np.float64) / float(sum(rows))
    merged = replicas[int(np.argmax(rows))]

    def mean(arrays):
        # Accumulate in float64; with one replica the fraction is 1.0 and the copy is exact.
        total = np.zeros(arrays[0].shape, dtype=np.float64)
        for fraction, array in zip(fractions, arrays):
            total += fraction * array
        return total

    merged._params[:] = mean([r._params for r in replicas])
    if optimizer_state == "reset":
        merged._optimizer = None
    elif merged._optimizer is not None:
        for name, slot in merged._optimizer.slots().items():
            slot[:] = mean([r._optimizer.slots()[name] for r in replicas])
        # Counters (epochs, Adam's bias correction): the most any replica reached.
        for name in merged._optimizer.counters():
            setattr(merged._optimizer, name,
                    max(r._optimizer.counters()[name] for r in replicas))
    return merged


def fit(estimator: _Estimator, X: Any, y: Any, *, classes: ArrayLike | None = None,
        client: Client | None = None, epochs: int | None = None,
        sync_every: Literal["epoch"] | int = "epoch",
        optimizer_state: Literal["average", "reset"] = "average",
        threads: int | None = None) -> _Estimator:
    """Train one fastmlp estimator data-parallel on a Dask cluster by model averaging.

    Each worker trains a replica on the partitions of (X, y) stored on it (its shard) with the
    estimator's own ``partial_fit``; all replicas start from the same weights, and after every
    epoch (or every `sync_every` mini-batches) their flat parameter buffers are averaged, weighted
    by the rows each trained on, and the average is the starting point of the next round. This is
    local SGD, not equivalent to a single-process fit (see "Scaling out" in the README).

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor
        A mini-batch solver (any but 'lbfgs'), ``early_stopping=False``. It is not modified: a
        fitted copy is returned. With ``warm_start=True`` and a fitted estimator, training
        continues from its weights and optimizer state; otherwise every replica draws the same
        fresh weights from ``random_state`` (an int is drawn from it when it is not one).
    X : dask array of shape (n_samples, n_features)
        Training data, chunked along rows (a dask DataFrame or a NumPy array is converted; a
        NumPy array is split into one chunk per worker).
    y : dask array of shape (n_samples,) or (n_samples, n_outputs)
        Targets, chunked like X's rows (rechunked to match when the chunks are known).
    classes : array-like of shape (n_classes,), default=None
        Every class label, for classifiers: a replica may not see every class in its shard.
        None means the fitted model's classes when continuing one, else the distinct values of
        `y`, computed on the cluster (one extra pass over `y`).
    client : distributed.Client, default=None
        The cluster to train on; None means ``distributed.get_client()``.
    epochs : int, default=None
        Passes over the data; None means ``estimator.max_iter``. Training stops earlier, as
        ``fit`` does, when the averaged epoch loss improves by less than ``tol`` for more than
        ``n_iter_no_change`` epochs.
    sync_every : "epoch" or int, default="epoch"
        Average after every epoch, or after every `sync_every` mini-batches of each replica.
    optimizer_state : {"average", "reset"}, default="average"
        "average": optimizer slots (SGD velocity, Adam's moments, the squared-gradient sums of
        RMSprop and Adagrad) are averaged like the weights, and step counters (Adam's bias
        correction) become the largest of the replicas'. "reset": every round starts with a
        fresh optimizer state (for Adam, bias correction restarts every round).
    threads : int, default=None
        BLAS threads each replica uses while it trains. None leaves the workers' pools as they
        are: one thread under a nanny (see ``limit_blas_threads``), which measured fastest
        here; more helps only wide layers on otherwise idle cores. Needs workers with a
        process each.

    Returns
    -------
    fitted : estimator of the same class
        A fitted estimator: ``coefs_``, ``intercepts_``, ``n_iter_`` (epochs run), ``t_``
        (samples seen by all replicas), ``loss_curve_`` (the row-weighted mean of the replicas'
        training losses in each epoch), ``loss_``, ``best_loss_``, ``stopped_early_``. The
        estimator's ``callbacks`` are called on the client after every epoch with that averaged
        loss (returning True stops training); ``verbose`` prints it.

    Raises
    ------
    DivergenceError
        When the averaged parameters are not finite (a replica's own divergence raises it too).
    """
    epochs = _checked_epochs(estimator, epochs, sync_every, optimizer_state, threads)
    warm = estimator.warm_start and "_params" in vars(estimator)
    model = copy.deepcopy(estimator) if warm else clone(estimator)
    if is_classifier(model):
        if classes is None and warm:
            classes = model.classes_
        if classes is not None:
            classes = np.asarray(classes)
    else:
        classes = None
    # Every replica draws the first weights from the same integer seed, so all start equal.
    user = {"random_state": model.random_state, "verbose": model.verbose,
            "callbacks": model.callbacks, "progress_bar": model.progress_bar}
    if not isinstance(user["random_state"], Integral):
        model.random_state = int(check_random_state(user["random_state"]).randint(2**31 - 1))
    # Replicas run on workers: the client prints the averaged loss and calls the callbacks.
    model.verbose, model.callbacks, model.progress_bar = False, None, False

    client = client or get_client()
    workers = sorted(_workers(client))
    if not workers:
        raise RuntimeError("the Dask cluster has no workers")
    if threads is not None:
        _check_own_processes(client, workers)
    X, y = _row_chunked(X, y, len(workers))
    if is_classifier(model) and classes is None:
        # Every label of y, once, on the cluster: a shard may lack some of them.
        classes = np.unique(client.compute(da.unique(y)).result())

    x_parts = client.compute(list(X.to_delayed().ravel()))
    y_parts = client.compute(list(y.to_delayed().ravel()))
    shards = []
    try:
        sizes = client.gather([client.submit(_n_rows, part, pure=False) for part in x_parts])
        holders = client.who_has(x_parts)
        holders = {i: holders.get(part.key, ()) for i, part in enumerate(x_parts)}
        plan = _plan(sizes, holders, workers)
        owners = list(plan)
        shards = [client.submit(_make_shard, [x_parts[i] for i in plan[w]],
                                [y_parts[i] for i in plan[w]], model.dtype, workers=[w],
                                allow_other_workers=True, pure=False) for w in owners]
        shard_rows = [sum(sizes[i] for i in plan[w]) for w in owners]
        del x_parts, y_parts  # the shards hold the data now
        return _train(client, model, shards, owners, shard_rows, classes, epochs, sync_every,
                      optimizer_state, threads, user)
    finally:
        if shards:
            client.cancel(shards)  # frees the workers' copies of the data


def _checked_epochs(estimator, epochs, sync_every, optimizer_state, threads):
    """The number of epochs to run; raises for what fit cannot train with, before the cluster
    is touched."""
    if not isinstance(estimator, BaseMultilayerPerceptron):
        raise TypeError(f"expected a fastmlp MLPClassifier or MLPRegressor, got "
                        f"{type(estimator).__name__}")
    if not hasattr(estimator, "partial_fit"):  # hidden for solvers without mini-batches
        raise ValueError(f"fastmlp.dask.fit trains with partial_fit, which solver="
                         f"{estimator.solver!r} does not have; use a mini-batch solver")
    if estimator.early_stopping:
        raise ValueError("fastmlp.dask.fit does not support early_stopping=True: hold out a "
                         "validation set yourself and score the returned model.")
    if sync_every != "epoch" and not (isinstance(sync_every, Integral) and sync_every >= 1):
        raise ValueError(f"sync_every must be 'epoch' or a positive integer, got {sync_every!r}")
    if optimizer_state not in ("average", "reset"):
        raise ValueError(f"optimizer_state must be 'average' or 'reset', got {optimizer_state!r}")
    epochs = estimator.max_iter if epochs is None else epochs
    if not isinstance(epochs, Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if threads is not None and not (isinstance(threads, Integral) and threads >= 1):
        raise ValueError(f"threads must be None or a positive integer, got {threads!r}")
    return epochs


def _row_chunked(X, y, n_workers):
    """X and y as dask arrays chunked along rows only, y's row chunks X's."""
    X = _as_dask_array(X, n_workers, "X")
    y = _as_dask_array(y, n_workers, "y")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got {X.ndim} dimension(s)")
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    if y.ndim == 2 and y.numblocks[1] > 1:
        y = y.rechunk({1: -1})
    if y.chunks[0] != X.chunks[0]:
        if np.isnan(X.shape[0]) or np.isnan(y.shape[0]):
            raise ValueError("X and y have unknown and different row chunks; compute their "
                             "chunk sizes (e.g. to_dask_array(lengths=True)) first.")
        y = y.rechunk({0: X.chunks[0]})
    return X, y


def _train(client, model, shards, owners, shard_rows, classes, epochs, sync_every,
           optimizer_state, threads, user):
    """The rounds of `fit`, once the shards are in place on their workers."""
    if sync_every == "epoch":
        windows = [(0, None)]
    else:
        batch = _AUTO_BATCH if model.batch_size == "auto" else int(model.batch_size)
        step = sync_every * batch
        windows = [(start, start + step) for start in range(0, max(shard_rows), step)]
    rows_per_epoch = float(sum(shard_rows))
    callbacks = list(user["callbacks"] or ())

    fitted = "_params" in vars(model)
    curve = list(model.loss_curve_) if fitted else []
    t0 = model.t_ if fitted else 0
    best_loss = model.best_loss_ if fitted else np.inf
    no_improvement = model._no_improvement_count if fitted else 0
    seen = epochs_done = 0
    stopped = False
    running = []
    try:
        for _ in range(epochs):
            started = time.perf_counter()
            learning_rate = _learning_rate(model)  # this epoch's, for the record
            epoch_loss = 0.0
            for start, stop in windows:
                shipped = client.scatter(model, broadcast=True, hash=False)
                running = [client.submit(_train_round, shipped, shard, start, stop, classes,
                                         threads, workers=[w], allow_other_workers=True,
                                         pure=False)
                           for w, shard, n in zip(owners, shards, shard_rows) if start < n]
                results = client.gather(running)
                running = []
                replicas, losses, rows = zip(*results)
                model = _average(list(replicas), rows, optimizer_state)
                if not np.isfinite(model._params).all():
                    raise DivergenceError("The averaged parameters are not finite: lower the "
                                          "learning rate or scale the input.")
                # Exact for one replica: its loss times rows/rows_per_epoch == 1.0.
                epoch_loss += sum(loss * (n / rows_per_epoch) for loss, n in zip(losses, rows))
                seen += sum(rows)
                model.t_ = t0 + seen  # samples seen by all replicas: invscaling decays with it
            epochs_done += 1
            curve.append(epoch_loss)
            if user["verbose"]:
                print("Epoch %d, averaged loss = %.8f" % (epochs_done, epoch_loss))
            record = EpochRecord(epochs_done, epoch_loss, None, None,
                                 time.perf_counter() - started, learning_rate, model)
            stop_requested = any([bool(callback(record)) for callback in callbacks])
            no_improvement, best_loss = loss_progress(no_improvement, best_loss, epoch_loss,
                                                      model.tol)  # fit's stopping rule
            if no_improvement > model.n_iter_no_change or stop_requested:
                if user["verbose"]:
                    print("A callback asked to stop training. Stopping." if stop_requested else
                          "Training loss did not improve more than tol=%f for %d consecutive "
                          "epochs. Stopping." % (model.tol, model.n_iter_no_change))
                stopped = True
                break
    except KeyboardInterrupt:
        client.cancel(running)
        if not epochs_done:
            raise
        warnings.warn("Training interrupted by user.", stacklevel=2)
        stopped = True

    model.n_iter_ = epochs_done
    model.t_ = t0 + seen
    model.loss_curve_ = curve
    model.loss_ = curve[-1]
    model.best_loss_ = best_loss
    model._no_improvement_count = no_improvement
    model.stopped_early_ = stopped
    for name, value in user.items():
        setattr(model, name, value)
    return model


def _learning_rate(model):
    """The optimizer's current base learning rate, for EpochRecord."""
    optimizer = getattr(model, "_optimizer", None)
    current = getattr(optimizer, "current_learning_rate", None)
    return float(current()) if current is not None else float(model.learning_rate_init)
