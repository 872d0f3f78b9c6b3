"""The CUDA backend against the CPU backend, under numba's CUDA simulator (tiny shapes: the
simulator runs one Python thread per CUDA thread) or on a real GPU (FASTMLP_GPU_TESTS=1)."""

import pickle
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import fastmlp
from fastmlp import cuda as gpu
from fastmlp.cpu import kernels as cpu
from fastmlp.estimators import _as_features
from fastmlp.layout import Layout

pytestmark = pytest.mark.filterwarnings("ignore")

OPTS = {
    "sgd": (cpu.SGD, 0.1, 0.9, True, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
    "adam": (cpu.ADAM, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.0, 0),
    "adamw": (cpu.ADAMW, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.1, 0),
    "adagrad": (cpu.ADAGRAD, 0.05, 0.0, False, 0.0, 0.0, 1e-8, 0.0, 0.0, 0),
    "rmsprop": (cpu.RMSPROP, 0.01, 0.0, False, 0.0, 0.0, 1e-8, 0.9, 0.0, 0),
}
HEADS = {"log_loss": (cpu.SOFTMAX, cpu.LOG_LOSS, 3), "binary": (cpu.LOGISTIC,
         cpu.BINARY_LOG_LOSS, 2), "squared": (cpu.IDENTITY, cpu.SQUARED_ERROR, 2),
         "poisson": (cpu.EXP, cpu.POISSON, 2)}


def _problem(head, dtype, n=10, seed=0, sparse=False):
    rng = np.random.RandomState(seed)
    output, loss, k = HEADS[head]
    layout = Layout((4, 5, k))
    X = rng.normal(size=(n, 4))
    if sparse:
        X[np.abs(X) < 0.7] = 0
    if head == "log_loss":
        Y = np.eye(k)[rng.randint(0, k, n)]
    elif head == "binary":
        Y = rng.randint(0, 2, (n, k)).astype(float)
    elif head == "poisson":
        Y = rng.poisson(1.0, (n, k)).astype(float)
    else:
        Y = rng.normal(size=(n, k))
    features = _as_features(sp.csr_matrix(X.astype(dtype)) if sparse else X.astype(dtype))
    return (layout, rng.uniform(-0.5, 0.5, layout.n_params).astype(dtype), features,
            Y.astype(dtype), rng.uniform(0.5, 2.0, n).astype(dtype), output, loss)


def _on_device(*arrays):
    return tuple(gpu.to_device(a) for a in arrays)


TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


@pytest.mark.parametrize("case", [
    ("adam", "relu", "log_loss", 0.0, False, np.float64),
    ("sgd", "gelu", "binary", 0.3, False, np.float64),
    ("adamw", "silu", "squared", 0.0, True, np.float64),
    ("adagrad", "tanh", "poisson", 0.0, False, np.float64),
    ("rmsprop", "elu", "log_loss", 0.2, False, np.float32),
])
def test_train_epoch_matches_the_cpu_backend(case):
    solver, activation, head, dropout, sparse, dtype = case
    layout, params, features, Y, sw, output, loss = _problem(head, dtype, sparse=sparse)
    net = (layout.table, cpu.ACTIVATION_CODES[activation], output, loss, 0.01, dropout, 99)
    order = np.random.RandomState(1).permutation(len(Y))
    host = params.copy()
    slots = [np.zeros_like(params), np.zeros_like(params)]
    total, step = cpu.train_epoch((host, np.empty_like(host), *slots), features, Y, sw, order,
                                  4, net, OPTS[solver])
    device = _on_device(params, np.empty_like(params), np.zeros_like(params),
                        np.zeros_like(params))
    total_d, step_d = gpu.train_epoch(device, _on_device(*features), *_on_device(Y, sw, order),
                                      4, (gpu.to_device(layout.table),) + net[1:], OPTS[solver])
    np.testing.assert_allclose(total_d, total, **TOL[dtype])
    assert step_d == step
    np.testing.assert_allclose(gpu.to_host(device[0]), host, **TOL[dtype])
    np.testing.assert_allclose(gpu.to_host(device[2]), slots[0], **TOL[dtype])


@pytest.mark.parametrize("sparse", [False, True])
def test_loss_and_gradient_and_predict_match_the_cpu_backend(sparse):
    layout, params, features, Y, sw, output, loss = _problem("log_loss", np.float64,
                                                             sparse=sparse)
    net = (layout.table, cpu.TANH, output, loss, 0.05, 0.0, 0)
    grad = np.empty_like(params)
    value = cpu.loss_and_gradient(grad, params, features, Y, sw, net, 4)
    grad_d = gpu.to_device(np.empty_like(params))
    value_d = gpu.loss_and_gradient(grad_d, gpu.to_device(params), _on_device(*features),
                                    *_on_device(Y, sw), (gpu.to_device(layout.table),) + net[1:],
                                    4)
    np.testing.assert_allclose(value_d, value, rtol=1e-12)
    np.testing.assert_allclose(gpu.to_host(grad_d), grad, rtol=1e-10, atol=1e-14)

    rows = np.array([9, 0, 3, 4, 5])
    out = np.empty((5, Y.shape[1]))
    cpu.predict(out, params, features, rows, layout.table, cpu.TANH, output, 2)
    out_d = gpu.to_device(np.empty_like(out))
    gpu.predict(out_d, gpu.to_device(params), _on_device(*features), gpu.to_device(rows),
                gpu.to_device(layout.table), cpu.TANH, output, 2)
    np.testing.assert_allclose(gpu.to_host(out_d), out, rtol=1e-12)


def test_estimators_train_the_same_model_on_cuda_and_cpu(tmp_path):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(24, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    params = dict(hidden_layer_sizes=(4,), max_iter=2, batch_size=12, random_state=0,
                  dtype="float64", early_stopping=True, validation_fraction=0.25,
                  n_iter_no_change=5)
    on_cpu = fastmlp.MLPClassifier(device="cpu", **params).fit(X, y)
    on_gpu = fastmlp.MLPClassifier(device="cuda", **params).fit(X, y)
    np.testing.assert_allclose(on_gpu.loss_curve_, on_cpu.loss_curve_, rtol=1e-9)
    np.testing.assert_allclose(on_gpu.validation_scores_, on_cpu.validation_scores_)
    assert all(type(c) is np.ndarray for c in on_gpu.coefs_ + on_gpu.intercepts_)
    np.testing.assert_allclose(on_gpu.predict_proba(X), on_cpu.predict_proba(X), rtol=1e-9)
    restored = pickle.loads(pickle.dumps(on_gpu)).set_params(device="cpu")
    np.testing.assert_allclose(restored.predict_proba(X), on_cpu.predict_proba(X), rtol=1e-9)

    reg = dict(hidden_layer_sizes=(3,), solver="lbfgs", max_iter=3, random_state=0,
               dtype="float64")
    r_cpu = fastmlp.MLPRegressor(**reg).fit(X, X[:, 0])
    r_gpu = fastmlp.MLPRegressor(device="cuda", **reg).fit(X, X[:, 0])
    np.testing.assert_allclose(r_gpu.loss_, r_cpu.loss_, rtol=1e-9)


def test_unusable_gpu_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(gpu, "SIMULATOR", False)
    from numba import cuda

    monkeypatch.setattr(cuda, "is_available", lambda: False)

    def no_driver():
        raise RuntimeError("CUDA driver library cannot be found")

    monkeypatch.setattr(cuda, "current_context", no_driver)
    with pytest.raises(RuntimeError, match="no usable NVIDIA GPU.*driver library cannot be found"
                                           ".*device='cpu'"):
        fastmlp.MLPClassifier(device="cuda").fit(np.eye(4), [0, 1, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auto = fastmlp.MLPClassifier(device="auto", max_iter=2).fit(np.eye(4), [0, 1, 0, 1])
    assert auto.predict(np.eye(4)).shape == (4,)  # 'auto' fell back to the CPU
