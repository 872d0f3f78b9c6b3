"""Thread use: kernels are serial and leave threading to BLAS (the OpenBLAS that numba's np.dot
calls, shipped with SciPy), which joblib workers and threadpoolctl limit."""

import warnings

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import ThreadpoolController, threadpool_limits

import fastmlp  # imported first, as a user does: it loads the BLAS the limits must reach


def _fit_and_report_blas_threads():
    X = np.random.RandomState(0).rand(300, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=2).fit(X, X[:, 0] > 0.5)
    threads = [pool.num_threads for pool in ThreadpoolController().select(
        internal_api="openblas").lib_controllers]
    return clf.n_iter_, threads


def test_joblib_workers_get_one_blas_thread_each():
    """GridSearchCV(n_jobs=2) on 2 cores: each worker's BLAS, hence each fit, uses 1 thread."""
    results = Parallel(n_jobs=2)(delayed(_fit_and_report_blas_threads)() for _ in range(2))
    for n_iter, threads in results:
        assert n_iter == 2 and threads and all(t == 1 for t in threads)


def test_threadpool_limits_caps_the_kernels_blas():
    with threadpool_limits(limits=1):
        n_iter, threads = _fit_and_report_blas_threads()
    assert n_iter == 2 and threads and all(t == 1 for t in threads)
