"""Thread use: kernels are serial and leave threading to BLAS (the OpenBLAS that numba's np.dot
calls, shipped with SciPy), which joblib workers and threadpoolctl limit."""

import warnings

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed
from threadpoolctl import ThreadpoolController, threadpool_limits

import fastmlp  # imported first, as a user does: it loads the BLAS the limits must reach


def _openblas_threads():
    return [pool.num_threads for pool in ThreadpoolController().select(
        internal_api="openblas").lib_controllers]


def _fit_and_report_blas_threads():
    X = np.random.RandomState(0).rand(300, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=2).fit(X, X[:, 0] > 0.5)
    return clf.n_iter_, _openblas_threads()


def test_joblib_workers_get_their_share_of_blas_threads():
    """GridSearchCV(n_jobs=2): each worker's BLAS, hence each fit, gets cores // 2 threads (1 on
    2 cores), fewer than this process's BLAS would use, so the workers do not oversubscribe."""
    cores = joblib.cpu_count()
    if cores < 2:
        pytest.skip("one CPU core: BLAS uses one thread anyway, so no limit can be observed")
    with threadpool_limits(limits=cores):  # whatever earlier code in this process set
        parent = _openblas_threads()
        assert parent and min(parent) > 1, f"BLAS in this process uses {parent} threads"
        share = cores // 2
        results = Parallel(n_jobs=2)(delayed(_fit_and_report_blas_threads)() for _ in range(2))
    for n_iter, threads in results:
        assert n_iter == 2 and threads and set(threads) == {share}, (threads, cores)
    assert share < min(parent)


def test_threadpool_limits_caps_the_kernels_blas():
    with threadpool_limits(limits=1):
        n_iter, threads = _fit_and_report_blas_threads()
    assert n_iter == 2 and threads and all(t == 1 for t in threads)


def _blas_threads_seen_by_callbacks(n_features, hidden, batch_size):
    """BLAS thread counts seen during every epoch of a fit, inside a context allowing two."""
    seen = []

    def record(_):
        seen.append(_openblas_threads())

    X = np.random.RandomState(0).rand(batch_size, n_features)
    with threadpool_limits(limits=2), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastmlp.MLPClassifier(hidden_layer_sizes=(hidden,), batch_size=batch_size, max_iter=2,
                              callbacks=[record]).fit(X, X[:, 0] > 0.5)
        after = _openblas_threads()
    return seen, after


def test_small_networks_train_on_one_blas_thread_and_restore_the_limit():
    """Products below cpu.SINGLE_THREAD_MACS run BLAS on one thread (a second one costs more than
    it saves); the caller's limit is back in force after the fit."""
    from fastmlp.cpu import SINGLE_THREAD_MACS

    assert 200 * 64 * 100 < SINGLE_THREAD_MACS  # scikit-learn's default network on digits
    seen, after = _blas_threads_seen_by_callbacks(n_features=64, hidden=100, batch_size=200)
    assert len(seen) == 2 and all(threads and set(threads) == {1} for threads in seen)
    assert set(after) == {2}


def test_wide_networks_keep_the_blas_threads_they_are_given():
    from fastmlp.cpu import SINGLE_THREAD_MACS

    assert 256 * 128 * 128 >= SINGLE_THREAD_MACS
    seen, _ = _blas_threads_seen_by_callbacks(n_features=128, hidden=128, batch_size=256)
    assert len(seen) == 2 and all(threads and set(threads) == {2} for threads in seen)
