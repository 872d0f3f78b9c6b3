"""The CUDA backend's entry points (train_epoch, loss_and_gradient, predict) against the CPU
backend's: same arguments, device arrays. Tiny shapes under the simulator; tests marked gpu need
a real GPU (see conftest.py)."""


import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose

from fastmlp import codes
from fastmlp import cuda as gpu
from fastmlp.bundles import Network, OptimizerStep, TrainState
from fastmlp.codes import ACTIVATION_CODES, LOSS_CODES, RELU
from fastmlp.cpu import kernels as cpu
from fastmlp.layout import Layout
from fastmlp.training import as_features

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # simulated uint64 overflow

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
OUTPUT = {"log_loss": "softmax", "binary_log_loss": "logistic", "squared_error": "identity",
          "poisson": "exp"}


def _opt(solver, step=0):
    """The OptimizerStep an optimizer spec (fastmlp/optimizers.py) hands train_epoch."""
    return OptimizerStep(*{
        "sgd_nesterov": (codes.SGD, 0.1, 0.9, True, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
        "sgd": (codes.SGD, 0.1, 0.9, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
        "adam": (codes.ADAM, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.0, step),
        "adamw": (codes.ADAMW, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.1, step),
        "adagrad": (codes.ADAGRAD, 0.05, 0.0, False, 0.0, 0.0, 1e-8, 0.0, 0.0, 0),
        "rmsprop": (codes.RMSPROP, 0.01, 0.0, False, 0.0, 0.0, 1e-8, 0.9, 0.0, 0),
    }[solver])


def _problem(head, dtype, hidden=(5,), n=10, sparse=False, seed=0):
    """(layout, params, features, Y, sw) of a small random problem for a loss head."""
    rng = np.random.RandomState(seed)
    k = 3 if head == "log_loss" else 2
    layout = Layout((4, *hidden, k))
    X = rng.normal(size=(n, 4))
    if sparse:
        X[np.abs(X) < 0.6] = 0
    if head == "log_loss":
        Y = np.eye(k)[rng.randint(0, k, n)]
    elif head == "binary_log_loss":
        Y = rng.randint(0, 2, (n, k)).astype(float)
    elif head == "poisson":
        Y = rng.poisson(1.0, (n, k)).astype(float)
    else:
        Y = rng.normal(size=(n, k))
    X = X.astype(dtype)
    features = as_features(sp.csr_matrix(X) if sparse else X)
    return (layout, rng.uniform(-0.6, 0.6, layout.n_params).astype(dtype), features,
            Y.astype(dtype), rng.uniform(0.5, 2.0, n).astype(dtype))


def _net(layout, activation, head, alpha=0.01, dropout=0.0, seed=99):
    return Network(layout.table, ACTIVATION_CODES[activation], ACTIVATION_CODES[OUTPUT[head]],
                   LOSS_CODES[head], alpha, dropout, seed)


def _on_device(arrays):
    """The same bundle (Features, TrainState) or tuple, its arrays on the device."""
    moved = [gpu.to_device(a) for a in arrays]
    return type(arrays)(*moved) if hasattr(arrays, "_fields") else tuple(moved)


def _device_net(net):
    return net._replace(layers=gpu.to_device(net.layers))


# Every hidden activation, every loss head, every optimizer (SGD with and without Nesterov), dense
# and CSR input, float64 and float32, dropout, and two hidden layers appear at least once.
EPOCH_CASES = [
    ("sgd_nesterov", "relu", "log_loss", False, np.float64, 0.0, (5,)),
    ("sgd", "logistic", "binary_log_loss", True, np.float64, 0.0, (5,)),
    ("adam", "tanh", "squared_error", False, np.float64, 0.0, (5, 3)),
    ("adamw", "gelu", "poisson", True, np.float64, 0.0, (5,)),
    ("adagrad", "silu", "log_loss", False, np.float64, 0.3, (5,)),
    ("rmsprop", "elu", "squared_error", True, np.float64, 0.0, (5,)),
    ("adam", "leaky_relu", "binary_log_loss", False, np.float32, 0.0, (5,)),
    ("sgd_nesterov", "identity", "log_loss", True, np.float32, 0.2, (5,)),
]


@pytest.mark.parametrize("case", EPOCH_CASES, ids=lambda c: "-".join(
    [c[0], c[1], c[2], "csr" if c[3] else "dense", np.dtype(c[4]).name, f"dropout{c[5]}"]))
def test_train_epoch_matches_the_cpu_backend(case):
    solver, activation, head, sparse, dtype, dropout, hidden = case
    layout, params, features, Y, sw = _problem(head, dtype, hidden, sparse=sparse)
    net = _net(layout, activation, head, dropout=dropout)
    host = [params.copy(), np.empty_like(params), np.zeros_like(params), np.zeros_like(params)]
    device = list(_on_device(host))
    data = _on_device(features), *_on_device((Y, sw))
    epochs = 2 if hidden == (5, 3) else 1  # the second epoch starts from the first one's state
    step = 5  # as after an earlier partial_fit
    for epoch in range(epochs):
        order = np.random.RandomState(epoch).permutation(len(Y))
        expected = cpu.train_epoch(TrainState(*host), features, Y, sw, order, 4, net,
                                   _opt(solver, step))
        total, new_step = gpu.train_epoch(TrainState(*device), *data, gpu.to_device(order), 4,
                                          _device_net(net), _opt(solver, step))
        assert isinstance(total, float) and isinstance(new_step, int)
        assert new_step == expected[1]
        assert_allclose(total, expected[0], **TOL[dtype])
        step = new_step
    assert_allclose(gpu.to_host(device[0]), host[0], **TOL[dtype])  # parameters
    assert_allclose(gpu.to_host(device[2]), host[2], **TOL[dtype])  # first optimizer slot
    assert_allclose(gpu.to_host(device[3]), host[3], **TOL[dtype])


def test_train_epoch_skips_a_batch_whose_weights_are_all_zero():
    layout, params, features, Y, sw = _problem("log_loss", np.float64)
    order = np.random.RandomState(3).permutation(len(Y))
    sw[order[:4]] = 0  # the whole first batch
    net = _net(layout, "tanh", "log_loss")
    host = [params.copy(), np.empty_like(params), np.zeros_like(params), np.zeros_like(params)]
    expected = cpu.train_epoch(TrainState(*host), features, Y, sw, order, 4, net, _opt("adam"))
    device = _on_device(TrainState(params, np.empty_like(params), np.zeros_like(params),
                                   np.zeros_like(params)))
    got = gpu.train_epoch(device, _on_device(features), *_on_device((Y, sw, order)), 4,
                          _device_net(net), _opt("adam"))
    assert got[1] == expected[1] == 2  # two updates from three batches
    assert_allclose(got[0], expected[0], rtol=1e-10)
    assert_allclose(gpu.to_host(device[0]), host[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sparse, dtype, chunk", [(False, np.float64, 4), (True, np.float64, 16),
                                                  (False, np.float32, 3)])
def test_loss_and_gradient_matches_the_cpu_backend(sparse, dtype, chunk):
    layout, params, features, Y, sw = _problem("log_loss", dtype, sparse=sparse)
    net = _net(layout, "tanh", "log_loss", alpha=0.05)
    grad = np.empty_like(params)
    value = cpu.loss_and_gradient(grad, params, features, Y, sw, net, chunk)
    grad_d = gpu.to_device(np.full_like(params, np.nan))
    value_d = gpu.loss_and_gradient(grad_d, gpu.to_device(params), _on_device(features),
                                    *_on_device((Y, sw)), _device_net(net), chunk)
    assert isinstance(value_d, float)
    assert_allclose(value_d, value, **TOL[dtype])
    assert_allclose(gpu.to_host(grad_d), grad, **TOL[dtype])


@pytest.mark.parametrize("head, sparse, dtype", [("log_loss", False, np.float64),
                                                 ("binary_log_loss", True, np.float32),
                                                 ("poisson", False, np.float64)])
def test_predict_matches_the_cpu_backend(head, sparse, dtype):
    layout, params, features, _, _ = _problem(head, dtype, sparse=sparse)
    rows = np.array([3, 1, 4, 1, 5, 9, 2])  # repeats, out of order: gathered in chunks of 3
    k = layout.table[-1, 1]
    out = np.empty((len(rows), k), dtype)
    net = Network(layout.table, RELU, ACTIVATION_CODES[OUTPUT[head]], 0, 0.0, 0.0, 0)
    cpu.predict(out, params, features, rows, net, 3)
    out_d = gpu.to_device(np.full_like(out, np.nan))
    gpu.predict(out_d, gpu.to_device(params), _on_device(features), gpu.to_device(rows),
                _device_net(net), 3)
    assert_allclose(gpu.to_host(out_d), out, **TOL[dtype])


def test_check_available_accepts_the_simulator_or_a_gpu():
    assert gpu.check_available() is None


# ------------------------------------------------------------------------------ real GPU only

@pytest.mark.gpu
def test_cublas_products_match_the_cpu_backend(monkeypatch):
    """Every product through cuBLAS (CuPy, zero-copy) instead of the tiled kernels."""
    pytest.importorskip("cupy", reason="the cuBLAS path needs CuPy (pip install cupy-cuda12x)")
    monkeypatch.setattr(gpu, "CUBLAS_MIN_MACS", 0)
    test_train_epoch_matches_the_cpu_backend(EPOCH_CASES[2])  # adam, two hidden layers
    test_train_epoch_matches_the_cpu_backend(EPOCH_CASES[4])  # dropout
    test_loss_and_gradient_matches_the_cpu_backend(True, np.float64, 4)
    test_predict_matches_the_cpu_backend("log_loss", False, np.float64)
