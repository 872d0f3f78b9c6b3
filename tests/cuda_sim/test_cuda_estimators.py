"""The estimators with device="cuda" against device="cpu": same random_state, same model (float64
to 1e-9), fitted attributes on the host, pickling, predicting on the CPU afterwards. Tiny shapes
under the simulator (see conftest.py)."""

import pickle
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

from fastmlp.cuda.device import target

if target() is None:
    pytest.skip("CUDA code cannot run in this process: these tests need numba's CUDA simulator "
                "(NUMBA_ENABLE_CUDASIM=1 before numba is imported, as tests/test_cuda.py runs "
                "them) or a usable GPU", allow_module_level=True)

import fastmlp  # noqa: E402


def _classification(n=24):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return X, y


def test_classifier_on_cuda_trains_the_cpu_model():
    X, y = _classification()
    params = dict(hidden_layer_sizes=(4,), max_iter=3, batch_size=12, random_state=0,
                  dtype="float64", early_stopping=True, validation_fraction=0.25,
                  n_iter_no_change=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 3 epochs
        on_cpu = fastmlp.MLPClassifier(device="cpu", **params).fit(X, y)
        on_gpu = fastmlp.MLPClassifier(device="cuda", **params).fit(X, y)
    assert len(on_gpu.loss_curve_) == 3
    assert_allclose(on_gpu.loss_curve_, on_cpu.loss_curve_, rtol=1e-9)
    assert_allclose(on_gpu.validation_scores_, on_cpu.validation_scores_)  # scored on the device
    assert on_gpu._optimizer.step == on_cpu._optimizer.step
    for name in ("coefs_", "intercepts_"):
        arrays = getattr(on_gpu, name)
        assert all(type(a) is np.ndarray for a in arrays), name
        for a, b in zip(arrays, getattr(on_cpu, name)):
            assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert type(on_gpu._optimizer.m) is np.ndarray
    assert_allclose(on_gpu.predict_proba(X), on_cpu.predict_proba(X), rtol=1e-9)
    restored = pickle.loads(pickle.dumps(on_gpu)).set_params(device="cpu")
    assert_allclose(restored.predict_proba(X), on_cpu.predict_proba(X), rtol=1e-9)
    assert (restored.predict(X) == on_cpu.predict(X)).all()


def test_regressor_on_cuda_trains_the_cpu_model():
    X, _ = _classification()
    y = X[:, 0] - 0.5 * X[:, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # sgd in the default float32: float32 agreement.
        sgd = dict(hidden_layer_sizes=(3,), solver="sgd", max_iter=2, batch_size=12,
                   random_state=0)
        r_cpu = fastmlp.MLPRegressor(**sgd).fit(X, y)
        r_gpu = fastmlp.MLPRegressor(device="cuda", **sgd).fit(X, y)
        assert r_gpu.coefs_[0].dtype == np.float32
        assert_allclose(r_gpu.loss_curve_, r_cpu.loss_curve_, rtol=1e-5)
        # L-BFGS in float64: every loss-and-gradient evaluation on the device.
        lbfgs = dict(hidden_layer_sizes=(3,), solver="lbfgs", max_iter=3, random_state=0,
                     dtype="float64")
        r_cpu = fastmlp.MLPRegressor(**lbfgs).fit(X, y)
        r_gpu = fastmlp.MLPRegressor(device="cuda", **lbfgs).fit(X, y)
    assert r_gpu.n_iter_ == r_cpu.n_iter_
    assert_allclose(r_gpu.loss_, r_cpu.loss_, rtol=1e-9)
    restored = pickle.loads(pickle.dumps(r_gpu)).set_params(device="cpu")
    assert_allclose(restored.predict(X), r_cpu.predict(X), rtol=1e-9)


def test_learning_rate_decay_reaches_the_cuda_kernels():
    X, y = _classification()
    params = dict(hidden_layer_sizes=(4,), solver="adamw", max_iter=3, batch_size=12,
                  random_state=0, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decayed = [fastmlp.MLPClassifier(device=device, learning_rate_decay="cosine",
                                         **params).fit(X, y) for device in ("cpu", "cuda")]
        constant = fastmlp.MLPClassifier(device="cuda", **params).fit(X, y)
    assert_allclose(decayed[1].coefs_[0], decayed[0].coefs_[0], rtol=1e-9, atol=1e-12)
    assert not np.allclose(decayed[1].coefs_[0], constant.coefs_[0], rtol=1e-6)


@pytest.mark.gpu
def test_wide_float32_fit_on_the_gpu_matches_the_cpu():
    """Many blocks per launch, full-size reductions and the fast float32 paths of a real GPU."""
    rng = np.random.RandomState(0)
    X = rng.normal(size=(2000, 60)).astype(np.float32)
    y = (X[:, :3].sum(axis=1) > 0).astype(int) + (X[:, 3] > 1)
    params = dict(hidden_layer_sizes=(128, 64), max_iter=3, batch_size=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_cpu = fastmlp.MLPClassifier(**params).fit(X, y)
        on_gpu = fastmlp.MLPClassifier(device="cuda", **params).fit(X, y)
    assert_allclose(on_gpu.loss_curve_, on_cpu.loss_curve_, rtol=1e-4)
    assert (on_gpu.predict(X) == on_cpu.predict(X)).mean() > 0.99
