"""Thread use: kernels are serial and leave threading to BLAS (the OpenBLAS that numba's np.dot
calls, shipped with SciPy), which threadpoolctl limits; fastmlp's own rule (cpu.thread_limit) runs
small products on one BLAS thread. (fastmlp.dask.limit_blas_threads: tests/test_dask.py.)"""

import warnings

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

# Imported first, as a user does: importing the estimators (scikit-learn, SciPy) loads the BLAS the
# limits must reach. A bare `import fastmlp` is lazy and loads nothing yet.
from fastmlp import MLPClassifier


def _openblas_threads():
    return [pool.num_threads for pool in ThreadpoolController().select(
        internal_api="openblas").lib_controllers]


def _fit_and_report_blas_threads():
    X = np.random.RandomState(0).rand(300, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2).fit(X, X[:, 0] > 0.5)
    return clf.n_iter_, _openblas_threads()


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
        MLPClassifier(hidden_layer_sizes=(hidden,), batch_size=batch_size, max_iter=2,
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


def test_predictions_of_small_networks_use_one_blas_thread(monkeypatch):
    """predict follows training's rule: on a busy machine a second BLAS thread made a
    2,000-row prediction of a small network 20x slower."""
    from fastmlp import cpu

    X = np.random.RandomState(0).rand(300, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2).fit(X, X[:, 0] > 0.5)
    seen, predict = [], cpu.predict

    def recording(*args):
        seen.append(_openblas_threads())
        return predict(*args)

    monkeypatch.setattr(cpu, "predict", recording)
    with threadpool_limits(limits=2):
        clf.predict(X)
        after = _openblas_threads()
    assert seen and set(seen[0]) == {1} and set(after) == {2}
