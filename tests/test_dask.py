"""fastmlp on Dask: joblib's dask backend, dask-ml's wrappers, fastmlp.dask.fit (model averaging).

Clusters are real and listen on 127.0.0.1 only: one LocalCluster of two single-threaded worker
processes for the whole module, and in-process clients (threads) for the quick exact cases.
Oracles are in-memory runs of the same partial_fit sequence, compared bit for bit in float64.
"""

import faulthandler
import logging
import pickle
import time
import warnings

import numpy as np
import pytest
import scipy.sparse
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.model_selection import GridSearchCV
from sklearn.utils import check_random_state

pytest.importorskip("dask", reason="needs the dask extra: pip install '.[dask]'")
pytest.importorskip("distributed", reason="needs the dask extra: pip install '.[dask]'")
pytest.importorskip("dask_ml", reason="needs the dask extra: pip install '.[dask]'")

import dask.array as da  # noqa: E402
import joblib  # noqa: E402
from dask.utils import key_split  # noqa: E402
from dask_ml.wrappers import Incremental, ParallelPostFit  # noqa: E402
from distributed import Client, LocalCluster, get_task_stream  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastmlp.dask as fmd  # noqa: E402
from fastmlp import MLPClassifier, MLPRegressor, config  # noqa: E402
from fastmlp.training import DivergenceError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Every listening socket (scheduler, workers, their HTTP servers) on the loopback interface, on a
# free port: the HTTP servers otherwise bind 0.0.0.0:8787 even with the dashboard off.
LOOPBACK_ONLY = dict(dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
                     silence_logs=logging.ERROR)
HANG_LIMIT_S = 120  # no test here takes more than a few seconds; a stuck cluster must not hang CI


@pytest.fixture(autouse=True)
def _no_hang():
    """Dump every thread's stack and exit if a test runs far past its expected time."""
    faulthandler.dump_traceback_later(HANG_LIMIT_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _digits(n=600):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16, y[:n]


def _warm_compiled_code():
    """Compile (or load) the float32 and float64 kernels in this process first, so that workers
    find them in numba's on-disk cache instead of all compiling at once."""
    X, y = _digits(50)
    for dtype in ("float32", "float64"):
        MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, dtype=dtype).fit(X, y).predict(X)


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each, on 127.0.0.1."""
    _warm_compiled_code()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      **LOOPBACK_ONLY) as lc, \
            Client(lc, timeout="60s", set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.fixture(scope="module")
def inproc():
    """Two workers as threads of this process (no pickling, quick to start)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, **LOOPBACK_ONLY) as lc, \
            Client(lc, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def one_worker():
    """A single worker thread: fastmlp.dask.fit then has one replica, an exact oracle case."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, **LOOPBACK_ONLY) as lc, \
            Client(lc, set_as_default=False) as client:
        yield client


# ------------------------------------------------------------------ what travels to workers
def _arrays_in(obj, seen=None):
    """Every distinct ndarray reachable through an object's attributes, lists and dicts."""
    seen = {} if seen is None else seen
    if isinstance(obj, np.ndarray):
        seen[id(obj)] = obj
    elif isinstance(obj, dict):
        for value in obj.values():
            _arrays_in(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _arrays_in(value, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        _arrays_in(vars(obj), seen)
    return seen


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_pickles_hold_parameters_and_no_compiled_code(solver):
    X, y = _digits()
    unfitted = MLPClassifier(hidden_layer_sizes=(64,), solver=solver, max_iter=5, random_state=0)
    assert len(pickle.dumps(unfitted)) < 2_000

    clf = unfitted.fit(X, y)
    payload = pickle.dumps(clf)
    arrays = _arrays_in(clf).values()
    array_bytes = sum(a.nbytes for a in arrays)
    # Nothing but the arrays (parameters, optimizer slots, labels) plus a few KB of metadata.
    assert clf._params.nbytes <= len(payload) <= array_bytes + 4_000
    # At most: parameters and two optimizer slots (Adam's m and v); no best-weights copy
    # without a validation set.
    slots = 2 if solver == "adam" else 1
    assert len(payload) <= (1 + slots) * clf._params.nbytes + 4_000
    for marker in (b"numba", b"Dispatcher", b"llvmlite"):
        assert marker not in payload
    assert_array_equal(pickle.loads(payload).predict_proba(X), clf.predict_proba(X))


# ------------------------------------------------------------------ threads and compiled code
def _kernel_stats():
    from numba.core.registry import CPUDispatcher

    from fastmlp.cpu import kernels

    dispatchers = [d for d in vars(kernels).values() if isinstance(d, CPUDispatcher)]
    return (sum(len(d.signatures) for d in dispatchers),
            sum(sum(d.stats.cache_hits.values()) for d in dispatchers),
            sum(sum(d.stats.cache_misses.values()) for d in dispatchers))


def _fit_twice_on_worker():
    """Whether this process caches compiled code on disk (fastmlp.config.CACHE), and
    (signatures, cache hits, cache misses, seconds) added by each of two identical fits."""
    X, y = _digits(200)
    out = []
    for _ in range(2):
        before = _kernel_stats()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, dtype="float64",
                          random_state=0).fit(X, y)
        seconds = time.perf_counter() - start
        out.append(tuple(b - a for a, b in zip(before, _kernel_stats())) + (seconds,))
    return config.CACHE, out


def test_workers_compile_each_kernel_at_most_once(cluster):
    """fastmlp.config's contract on every worker: with a writable cache directory, kernels this
    process compiled are loaded from disk, never recompiled; with none (config warned at import),
    each worker compiles them in memory, once. Either way a second fit compiles nothing."""
    _fit_twice_on_worker()  # this process has compiled (or loaded) these signatures
    for cache, (first, second) in cluster.run(_fit_twice_on_worker).values():
        assert cache == config.CACHE  # workers see the parent's cache directories
        new_signatures, hits, misses, _ = first
        if cache:
            assert misses == 0, "a worker compiled a kernel instead of loading numba's cache"
            assert hits == new_signatures  # every signature new to the worker came from disk
        else:
            assert hits == 0 and misses == new_signatures  # compiled in memory, once each
        assert second[:3] == (0, 0, 0)  # the second fit neither compiles nor reloads
        assert second[3] < 1.0


def test_process_workers_use_one_blas_thread_each(cluster):
    pools = fmd.blas_threads(cluster)
    assert len(pools) == 2
    for sizes in pools.values():
        assert sizes and set(sizes.values()) == {1}, sizes


def test_limit_blas_threads_for_threaded_workers(inproc):
    with threadpool_limits(limits=None):  # the limit is process-wide: restore it afterwards
        fmd.limit_blas_threads(inproc, threads=1)
        for sizes in fmd.blas_threads(inproc).values():
            assert set(sizes.values()) == {1}, sizes
    with pytest.raises(ValueError, match="positive integer"):
        fmd.limit_blas_threads(inproc, threads=0)
    # Per-replica limits would be process-wide here, shared by both replicas: refused.
    X, y, _, _ = _blobs(200)
    with pytest.raises(ValueError, match="process each"):
        fmd.fit(MLPClassifier(), da.from_array(X, chunks=(100, 20)), da.from_array(y, chunks=100),
                classes=[0, 1, 2], client=inproc, threads=1)


# ------------------------------------------------------------------ joblib's dask backend
def test_grid_search_on_the_dask_backend_equals_n_jobs_1(cluster):
    X, y = _digits()
    est = MLPClassifier(max_iter=15, dtype="float64", random_state=0)
    grid = {"hidden_layer_sizes": [(8,), (16,)], "alpha": [1e-4, 1e-1]}
    with threadpool_limits(limits=1):  # the workers' setting: results may depend on it
        local = GridSearchCV(est, grid, cv=3, n_jobs=1).fit(X, y)
    with joblib.parallel_config(backend="dask", client=cluster), \
            get_task_stream(cluster) as stream:
        remote = GridSearchCV(est, grid, cv=3, n_jobs=-1).fit(X, y)
    assert len({task["worker"] for task in stream.data}) == 2  # both workers took fits
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == local.best_score_
    for key in ("mean_test_score", "std_test_score", "rank_test_score"):
        assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    assert_array_equal(remote.best_estimator_._params, local.best_estimator_._params)


# ------------------------------------------------------------------ dask-ml wrappers
def test_incremental_equals_the_same_partial_fit_sequence_in_memory(cluster):
    X, y = make_classification(n_samples=1200, n_features=20, n_informative=8, n_classes=3,
                               random_state=0)
    classes = np.unique(y)
    Xd, yd = da.from_array(X, chunks=(200, 20)), da.from_array(y, chunks=200)
    est = MLPClassifier(hidden_layer_sizes=(16,), dtype="float64", random_state=0)
    inc = Incremental(est, random_state=0, shuffle_blocks=True)
    inc.fit(Xd, yd, classes=classes)
    inc.partial_fit(Xd, yd, classes=classes)  # a second pass continues from estimator_

    ours = MLPClassifier(hidden_layer_sizes=(16,), dtype="float64", random_state=0)
    with threadpool_limits(limits=1):  # the workers' BLAS setting
        for _ in range(2):
            order = list(range(6))
            check_random_state(0).shuffle(order)  # Incremental's block order, random_state=0
            for block in order:
                rows = slice(200 * block, 200 * (block + 1))
                ours.partial_fit(X[rows], y[rows], classes=classes)
    assert_array_equal(inc.estimator_._params, ours._params)
    assert inc.estimator_.loss_curve_ == ours.loss_curve_
    assert inc.estimator_.t_ == ours.t_ == 2 * 1200

    assert_array_equal(inc.predict(Xd).compute(), ours.predict(X))


def test_parallel_post_fit_predicts_as_the_estimator(cluster):
    X, y = _digits()
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0).fit(X, y)
    Xd = da.from_array(X, chunks=(150, 64))
    wrapped = ParallelPostFit(clf)
    assert_array_equal(wrapped.predict(Xd).compute(), clf.predict(X))
    assert_allclose(wrapped.predict_proba(Xd).compute(), clf.predict_proba(X), rtol=1e-6)


# ------------------------------------------------------------------ fastmlp.dask.fit
def _blobs(n=3000):
    X, y = make_classification(n_samples=n + 1000, n_features=20, n_informative=10,
                               n_classes=3, class_sep=2.0, random_state=0)
    return X[:n], y[:n], X[n:], y[n:]


def test_data_parallel_fit_is_close_to_a_single_process_fit(cluster):
    X, y, X_test, y_test = _blobs()
    est = MLPClassifier(hidden_layer_sizes=(32,), random_state=0)
    single = MLPClassifier(hidden_layer_sizes=(32,), max_iter=30, random_state=0).fit(X, y)
    Xd, yd = cluster.persist([da.from_array(X, chunks=(375, 20)), da.from_array(y, chunks=375)])

    with get_task_stream(cluster) as stream:
        model = fmd.fit(est, Xd, yd, classes=np.unique(y), client=cluster, epochs=30)
    ran_on = {}
    for task in stream.data:
        ran_on.setdefault(key_split(task["key"]), set()).add(task["worker"])
    assert len(ran_on["make_shard"]) == len(ran_on["train_round"]) == 2  # a replica each
    assert type(model) is MLPClassifier and "_params" not in vars(est)  # input left as it was
    assert np.isfinite(model._params).all()
    assert [c.shape for c in model.coefs_] == [(20, 32), (32, 3)]
    assert model.n_iter_ == len(model.loss_curve_) == 30 and model.t_ == 30 * 3000
    assert model.loss_curve_[-1] < 0.5 * model.loss_curve_[0]
    assert model.score(X_test, y_test) >= single.score(X_test, y_test) - 0.03
    assert model.get_params() == est.get_params()

    every_3 = fmd.fit(est, Xd, yd, classes=np.unique(y), client=cluster, epochs=10,
                      sync_every=3)
    assert np.isfinite(every_3._params).all() and len(every_3.loss_curve_) == 10
    single_10 = MLPClassifier(hidden_layer_sizes=(32,), max_iter=10, random_state=0).fit(X, y)
    assert every_3.score(X_test, y_test) >= single_10.score(X_test, y_test) - 0.05


def test_data_parallel_regressor(cluster):
    X, y = make_regression(n_samples=2000, n_features=10, noise=1.0, random_state=0)
    y = y / y.std()
    Xd, yd = da.from_array(X, chunks=(500, 10)), da.from_array(y, chunks=500)
    model = fmd.fit(MLPRegressor(hidden_layer_sizes=(32,), random_state=0), Xd, yd,
                    client=cluster, epochs=40, threads=1)
    assert type(model) is MLPRegressor and model.score(X, y) > 0.95


def test_partitions_train_where_they_are_stored_unless_that_leaves_a_worker_idle():
    plan = fmd._plan([100] * 4, {0: ["a"], 1: ["b"], 2: ["a"], 3: ["b"]}, ["a", "b"])
    assert plan == {"a": [0, 2], "b": [1, 3]}
    # Everything stored on "a": half of it moves to "b", once.
    plan = fmd._plan([100] * 4, dict.fromkeys(range(4), ["a"]), ["a", "b"])
    assert sorted(map(len, plan.values())) == [2, 2]
    # More workers than partitions: the idle worker gets no replica.
    assert fmd._plan([100], {0: ["b"]}, ["a", "b", "c"]) == {"b": [0]}


MINI_BATCH_SOLVERS = [s for s in ("sgd", "adam", "adagrad", "rmsprop", "adamw")
                      if s in MLPClassifier._parameter_constraints["solver"][0].options]


@pytest.mark.parametrize("solver", MINI_BATCH_SOLVERS)
@pytest.mark.parametrize("chunks", [1200, 300])
def test_one_worker_model_averaging_equals_partial_fit_epochs(one_worker, solver, chunks):
    X, y, _, _ = _blobs(1200)
    params = dict(hidden_layer_sizes=(16,), solver=solver, learning_rate="invscaling",
                  dtype="float64", random_state=0)
    model = fmd.fit(MLPClassifier(**params), da.from_array(X, chunks=(chunks, 20)),
                    da.from_array(y, chunks=chunks), classes=[0, 1, 2], client=one_worker,
                    epochs=4)
    ours = MLPClassifier(**params)
    for _ in range(4):
        ours.partial_fit(X, y, classes=[0, 1, 2])
    assert_array_equal(model._params, ours._params)
    assert model.loss_curve_ == ours.loss_curve_
    assert model.t_ == ours.t_ and model.n_iter_ == 4


def test_one_worker_sync_every_k_batches_equals_partial_fit_on_chunks(one_worker):
    X, y, _, _ = _blobs(1000)
    params = dict(hidden_layer_sizes=(16,), batch_size=100, dtype="float64", random_state=0)
    model = fmd.fit(MLPClassifier(**params), da.from_array(X, chunks=(500, 20)),
                    da.from_array(y, chunks=500), classes=[0, 1, 2], client=one_worker,
                    epochs=2, sync_every=3)
    ours = MLPClassifier(**params)
    losses = []
    for _ in range(2):
        for start in range(0, 1000, 300):  # 3 batches of 100 rows per round; the last has 1
            ours.partial_fit(X[start:start + 300], y[start:start + 300], classes=[0, 1, 2])
            losses.append(ours.loss_ * min(300, 1000 - start) / 1000)
    assert_array_equal(model._params, ours._params)
    assert_allclose(model.loss_curve_, [sum(losses[:4]), sum(losses[4:])], rtol=1e-14)


def test_one_worker_with_optimizer_reset_restarts_adam_every_round(one_worker):
    X, y, _, _ = _blobs(600)
    params = dict(hidden_layer_sizes=(8,), dtype="float64", random_state=0)
    model = fmd.fit(MLPClassifier(**params), da.from_array(X, chunks=(600, 20)),
                    da.from_array(y, chunks=600), classes=[0, 1, 2], client=one_worker,
                    epochs=3, optimizer_state="reset")
    ours = MLPClassifier(**params)
    for _ in range(3):
        ours._optimizer = None  # what "reset" does before every round
        ours.partial_fit(X, y, classes=[0, 1, 2])
    assert_array_equal(model._params, ours._params)


def test_two_workers_average_is_the_row_weighted_mean_of_replicas(inproc):
    X, y, _, _ = _blobs(900)
    params = dict(hidden_layer_sizes=(16,), dtype="float64", random_state=0)
    # Two partitions of unequal size: one per worker.
    Xd, yd = da.from_array(X, chunks=((600, 300), (20,))), da.from_array(y, chunks=((600, 300),))
    model = fmd.fit(MLPClassifier(**params), Xd, yd, classes=[0, 1, 2], client=inproc, epochs=1)

    first = MLPClassifier(**params).partial_fit(X[:600], y[:600], classes=[0, 1, 2])
    second = MLPClassifier(**params).partial_fit(X[600:], y[600:], classes=[0, 1, 2])
    w1, w2 = 600 / 900, 300 / 900
    assert_allclose(model._params, w1 * first._params + w2 * second._params, rtol=0, atol=1e-15)
    assert_allclose(model._optimizer.m, w1 * first._optimizer.m + w2 * second._optimizer.m,
                    rtol=0, atol=1e-15)
    assert model._optimizer.step == max(first._optimizer.step, second._optimizer.step)
    assert_allclose(model.loss_curve_, [w1 * first.loss_ + w2 * second.loss_], rtol=1e-15)
    assert model.t_ == 900


def test_warm_start_continues_from_the_fitted_weights(one_worker):
    X, y, _, _ = _blobs(600)
    params = dict(hidden_layer_sizes=(8,), dtype="float64", random_state=0, warm_start=True)
    Xd, yd = da.from_array(X, chunks=(300, 20)), da.from_array(y, chunks=300)
    once = fmd.fit(MLPClassifier(**params), Xd, yd, classes=[0, 1, 2], client=one_worker,
                   epochs=2)
    twice = fmd.fit(once, Xd, yd, client=one_worker, epochs=2)  # classes come from the model
    ours = MLPClassifier(**params)
    for _ in range(4):
        ours.partial_fit(X, y, classes=[0, 1, 2])
    assert_array_equal(twice._params, ours._params)
    assert twice.loss_curve_ == ours.loss_curve_ and len(once.loss_curve_) == 2


def test_callbacks_run_on_the_client_with_the_averaged_loss_and_can_stop(inproc):
    X, y, _, _ = _blobs(800)
    seen = []

    rates = []

    def stop_after_three(record):
        seen.append((record.epoch, record.train_loss))
        rates.append(record.learning_rate)
        return record.epoch == 3

    est = MLPClassifier(hidden_layer_sizes=(8,), random_state=0, callbacks=[stop_after_three],
                        learning_rate_decay="linear", max_iter=4)
    model = fmd.fit(est, da.from_array(X, chunks=(200, 20)), da.from_array(y, chunks=200),
                    classes=[0, 1, 2], client=inproc, epochs=10)
    assert model.n_iter_ == 3 and model.stopped_early_
    assert seen == list(enumerate(model.loss_curve_, start=1))
    # each record carries the rate its epoch trained with: 1e-3 * (1 - e / 4)
    np.testing.assert_allclose(rates, [1e-3, 0.75e-3, 0.5e-3], rtol=1e-12)
    assert model.callbacks == [stop_after_three]  # the user's parameters are given back


def test_sparse_chunks_train_like_dense_ones(one_worker):
    X, y, _, _ = _blobs(600)
    X[np.abs(X) < 1.0] = 0.0
    params = dict(hidden_layer_sizes=(8,), dtype="float64", random_state=0)
    Xs = da.from_array(X, chunks=(200, 20)).map_blocks(scipy.sparse.csr_matrix)
    sparse = fmd.fit(MLPClassifier(**params), Xs, da.from_array(y, chunks=200),
                     classes=[0, 1, 2], client=one_worker, epochs=2)
    ours = MLPClassifier(**params)
    for _ in range(2):
        ours.partial_fit(scipy.sparse.csr_matrix(X), y, classes=[0, 1, 2])
    assert_array_equal(sparse._params, ours._params)


def test_classes_are_computed_from_y_when_not_given(inproc):
    X, y, _, _ = _blobs(400)
    order = np.argsort(y, kind="stable")  # sorted: the first partition lacks the last class
    X, y = X[order], np.array(["a", "b", "c"])[y[order]]
    Xd, yd = da.from_array(X, chunks=(200, 20)), da.from_array(y, chunks=200)
    params = dict(hidden_layer_sizes=(8,), dtype="float64", random_state=0)
    computed = fmd.fit(MLPClassifier(**params), Xd, yd, client=inproc, epochs=2)
    given = fmd.fit(MLPClassifier(**params), Xd, yd, classes=["a", "b", "c"], client=inproc,
                    epochs=2)
    assert_array_equal(computed.classes_, ["a", "b", "c"])
    assert_array_equal(computed._params, given._params)


def test_bad_arguments_are_rejected_before_any_work(one_worker):
    X, y, _, _ = _blobs(200)
    Xd, yd = da.from_array(X, chunks=(100, 20)), da.from_array(y, chunks=100)
    cases = [
        (MLPClassifier(solver="lbfgs"), {"classes": [0, 1, 2]}, ValueError, "solver"),
        (MLPClassifier(early_stopping=True), {"classes": [0, 1, 2]}, ValueError,
         "early_stopping"),
        (MLPClassifier(), {"classes": [0, 1, 2], "sync_every": 0}, ValueError, "sync_every"),
        (MLPClassifier(), {"classes": [0, 1, 2], "epochs": 0}, ValueError, "epochs"),
        (MLPClassifier(), {"classes": [0, 1, 2], "optimizer_state": "keep"}, ValueError,
         "optimizer_state"),
        (object(), {}, TypeError, "fastmlp"),
    ]
    for est, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            fmd.fit(est, Xd, yd, client=one_worker, **kwargs)


def test_divergence_is_reported(one_worker):
    X, y, _, _ = _blobs(400)
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=10.0,
                       random_state=0)
    with pytest.raises(DivergenceError):
        fmd.fit(est, da.from_array(X * 1e3, chunks=(200, 20)),
                da.from_array(y * 1e3, chunks=200), client=one_worker, epochs=5)
