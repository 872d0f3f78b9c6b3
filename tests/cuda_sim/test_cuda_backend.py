"""The CUDA backend's entry points (train_epoch, loss_and_gradient, predict) against the CPU
backend's: same arguments, device arrays. Tiny shapes under the simulator; tests marked gpu need
a real GPU (see conftest.py)."""


import collections

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

from fastmlp.cuda.device import target

if target() is None:
    pytest.skip("CUDA code cannot run in this process: these tests need numba's CUDA simulator "
                "(NUMBA_ENABLE_CUDASIM=1 before numba is imported, as tests/test_cuda.py runs "
                "them) or a usable GPU", allow_module_level=True)

from fastmlp import cpu, ops  # noqa: E402
from fastmlp import cuda as gpu  # noqa: E402
from fastmlp.bundles import Network, OptimizerStep, TrainState  # noqa: E402
from fastmlp.cuda import device, fused, kernels, launch, persistent  # noqa: E402
from fastmlp.layout import Layout  # noqa: E402
from fastmlp.training import as_features  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # simulated uint64 overflow

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
OUTPUT = {"log_loss": "softmax", "binary_log_loss": "logistic", "squared_error": "identity",
          "poisson": "exp"}


def _opt(solver, step=0):
    """The OptimizerStep an optimizer spec (fastmlp/optimizers.py) hands train_epoch."""
    return OptimizerStep(*{
        "sgd_nesterov": (ops.OPTIMIZER["sgd"].code, 0.1, 0.9, True, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
        "sgd": (ops.OPTIMIZER["sgd"].code, 0.1, 0.9, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
        "adam": (ops.OPTIMIZER["adam"].code, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.0, step),
        "adamw": (ops.OPTIMIZER["adamw"].code, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.1, step),
        "adagrad": (ops.OPTIMIZER["adagrad"].code, 0.05, 0.0, False, 0.0, 0.0, 1e-8, 0.0, 0.0, 0),
        "rmsprop": (ops.OPTIMIZER["rmsprop"].code, 0.01, 0.0, False, 0.0, 0.0, 1e-8, 0.9, 0.0, 0),
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
    return Network(layout.table, ops.ACTIVATION[activation].code,
                   ops.ACTIVATION[OUTPUT[head]].code, ops.LOSS[head].code, alpha, dropout, seed)


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


def _take(path, monkeypatch):
    """Make train_epoch take `path`: "fused" (one launch per epoch, the default for networks
    that fit in shared memory) or "per-layer"."""
    monkeypatch.setattr(launch, "FUSED_EPOCHS", path == "fused")


def _check_epochs(case, path, batch=4):
    """train_epoch on the device against the CPU backend's, one or two epochs of case (10 rows,
    in batches of `batch`)."""
    solver, activation, head, sparse, dtype, dropout, hidden = case
    layout, params, features, Y, sw = _problem(head, dtype, hidden, sparse=sparse)
    net = _net(layout, activation, head, dropout=dropout)
    assert launch.epoch_path(params, layout.table, batch, 4, Y.shape[1], net) == path
    # As the estimators pass them: a one-slot optimizer's slot is both slot arguments.
    two_slots = ops.by_code(ops.OPTIMIZERS, _opt(solver).kind).slots == 2
    host = [params.copy(), np.empty_like(params), np.zeros_like(params)]
    host.append(np.zeros_like(params) if two_slots else host[2])
    device = list(_on_device(host))
    device[3] = device[3] if two_slots else device[2]
    data = _on_device(features), *_on_device((Y, sw))
    epochs = 2 if hidden == (5, 3) else 1  # the second epoch starts from the first one's state
    step = 5  # as after an earlier partial_fit
    for epoch in range(epochs):
        order = np.random.RandomState(epoch).permutation(len(Y))
        expected = cpu.train_epoch(TrainState(*host), features, Y, sw, order, batch, net,
                                   _opt(solver, step))
        total, new_step = gpu.train_epoch(TrainState(*device), *data, gpu.to_device(order), batch,
                                          _device_net(net), _opt(solver, step))
        assert isinstance(total, float) and isinstance(new_step, int)
        assert new_step == expected[1]
        assert_allclose(total, expected[0], **TOL[dtype])
        step = new_step
    assert_allclose(gpu.to_host(device[0]), host[0], **TOL[dtype])  # parameters
    assert_allclose(gpu.to_host(device[2]), host[2], **TOL[dtype])  # first optimizer slot
    if two_slots:
        assert_allclose(gpu.to_host(device[3]), host[3], **TOL[dtype])


@pytest.mark.parametrize("path", ["fused", "per-layer"])
@pytest.mark.parametrize("case", EPOCH_CASES, ids=lambda c: "-".join(
    [c[0], c[1], c[2], "csr" if c[3] else "dense", np.dtype(c[4]).name, f"dropout{c[5]}"]))
def test_train_epoch_matches_the_cpu_backend(case, path, monkeypatch):
    _take(path, monkeypatch)
    _check_epochs(case, path)


# The persistent kernel once more per hidden activation, each with another loss head and
# optimizer than in EPOCH_CASES (every head twice, every optimizer at least once), float32, CSR,
# dropout and two hidden layers mixed in. Each case compiles its own CPU reference (seconds).
FUSED_CASES = [
    ("adamw", "relu", "poisson", True, np.float32, 0.0, (4, 3)),
    ("rmsprop", "logistic", "log_loss", False, np.float64, 0.25, (5,)),
    ("adagrad", "tanh", "binary_log_loss", True, np.float64, 0.0, (4, 3)),
    ("sgd", "gelu", "squared_error", False, np.float32, 0.0, (5,)),
    ("adam", "silu", "poisson", False, np.float64, 0.25, (4, 3)),
    ("sgd_nesterov", "elu", "binary_log_loss", True, np.float32, 0.0, (5,)),
    ("adagrad", "leaky_relu", "log_loss", False, np.float64, 0.0, (4, 3)),
    ("rmsprop", "identity", "squared_error", True, np.float64, 0.0, (5,)),
]


@pytest.mark.parametrize("case", FUSED_CASES, ids=lambda c: "-".join(
    [c[0], c[1], c[2], "csr" if c[3] else "dense", np.dtype(c[4]).name, f"dropout{c[5]}"]))
def test_the_one_launch_epoch_matches_the_cpu_backend(case):
    _check_epochs(case, "fused")


@pytest.mark.parametrize("path", ["fused", "per-layer"])
def test_train_epoch_skips_a_batch_whose_weights_are_all_zero(path, monkeypatch):
    _take(path, monkeypatch)
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


@pytest.mark.parametrize("batch", [4, 3])
def test_the_one_launch_epoch_does_not_depend_on_the_block_size(monkeypatch, batch):
    """Threads stride over every phase's 2 x 2 tiles: a block of 4 threads (each doing many
    tiles) trains the same model as the CPU, as the default block does. Batches of 3 rows (3,
    3, 3, 1) and layers of 5, 3 and 2 units give tiles at odd edges, whose repeated row or
    column must be stored and stepped once."""
    monkeypatch.setattr(fused, "THREADS", 4)
    _check_epochs(("adam", "tanh", "squared_error", True, np.float64, 0.3, (5, 3)), "fused",
                  batch)


def test_the_one_launch_epoch_is_deterministic():
    """Sums run in a fixed order (no floating-point atomics): the same epoch from the same state
    gives the same bits, however the simulator schedules its threads."""
    layout, params, features, Y, sw = _problem("log_loss", np.float32, (4, 3), sparse=True)
    net = _net(layout, "tanh", "log_loss", dropout=0.2)
    order = gpu.to_device(np.random.RandomState(1).permutation(len(Y)))
    results = []
    for _ in range(2):
        state = _on_device(TrainState(params, np.empty_like(params), np.zeros_like(params),
                                      np.zeros_like(params)))
        total, _ = gpu.train_epoch(state, _on_device(features), *_on_device((Y, sw)), order, 4,
                                   _device_net(net), _opt("adam"))
        results.append((total, gpu.to_host(state.params), gpu.to_host(state.slot_2)))
    assert results[0][0] == results[1][0]
    assert_array_equal(results[0][1], results[1][1])
    assert_array_equal(results[0][2], results[1][2])
    assert not np.array_equal(results[0][1], params)  # it did train


def _count_launches(monkeypatch):
    """A Counter of kernel launches by kernel name: every kernel of kernels.py, fused.py and
    persistent.py is replaced by a stand-in that counts each launch of every configuration made
    from it (and passes anything else, such as compile, to the kernel)."""
    counts = collections.Counter()

    class Counted:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, configuration):
            configured = self.kernel[configuration]

            def launch_and_count(*args):
                counts[self.name] += 1
                return configured(*args)

            return launch_and_count

        def __getattr__(self, name):
            return getattr(self.kernel, name)

    for module in (kernels, fused, persistent):
        for name in dir(module):
            kernel = getattr(module, name)
            device_function = (getattr(kernel, "_device", False)
                               or getattr(kernel, "targetoptions", {}).get("device"))
            if hasattr(kernel, "py_func") and not device_function:
                monkeypatch.setattr(module, name, Counted(name, kernel))
    return counts


def test_an_epoch_of_a_small_network_is_one_launch(monkeypatch):
    """The persistent kernel runs every mini-batch: one launch per epoch however many batches
    there are. The same counter sees the per-layer path's 3L + 2 launches per batch."""
    counts = _count_launches(monkeypatch)
    for n in (8, 24):  # 2 and 6 batches of 4
        layout, params, features, Y, sw = _problem("log_loss", np.float64, (4, 3), n=n)
        net = _net(layout, "relu", "log_loss")
        state = _on_device(TrainState(params, np.empty_like(params), np.zeros_like(params),
                                      np.zeros_like(params)))
        order = gpu.to_device(np.arange(n))
        gpu.train_epoch(state, _on_device(features), *_on_device((Y, sw)), order, 4,
                        _device_net(net), _opt("adam"))
        assert counts == {"train_epoch_fused": 1}, (n, counts)
        counts.clear()
    _take("per-layer", monkeypatch)
    gpu.train_epoch(state, _on_device(features), *_on_device((Y, sw)), gpu.to_device(order[:8]),
                    4, _device_net(net), _opt("adam"))
    n_layers = 3
    assert sum(counts.values()) == (3 * n_layers + 2) * 2, counts
    assert "train_epoch_fused" not in counts


def test_the_persistent_kernel_is_used_only_where_the_network_fits():
    layout, params, _, _, _ = _problem("log_loss", np.float64)
    net = _net(layout, "relu", "log_loss")
    assert device.shared_bytes_per_block() == device.DEFAULT_SHARED_BYTES  # the simulator's
    needed = launch.fused_shared_bytes(params, layout.table, 4, 4, 3, net)
    P = params.shape[0]
    assert needed == 8 * (P + 4 * (4 + 3 + 1 + 2 * (5 + 3)))  # the kernel's own layout
    assert launch.epoch_path(params, layout.table, 4, 4, 3, net) == "fused"
    # A float64 network of 4 - 2000 - 3 has 16,003 parameters: 128 kB, more than a block has.
    wide = Layout((4, 2000, 3))
    wide_params = np.zeros(wide.n_params)
    assert launch.fused_shared_bytes(wide_params, wide.table, 4, 4, 3, net) is None
    assert launch.epoch_path(wide_params, wide.table, 4, 4, 3, net) == "per-layer"
    # Dropout and GELU keep more per row; a batch that is too large falls back as well.
    gelu = _net(layout, "gelu", "log_loss", dropout=0.5)
    assert launch.fused_shared_bytes(params, layout.table, 4, 4, 3, gelu) == needed + 8 * 4 * (
        8 + 2 * 5)
    assert launch.epoch_path(params, layout.table, 400, 4, 3, net) == "per-layer"


def test_one_network_opts_in_to_more_shared_memory_for_batches_of_up_to_128_rows(monkeypatch):
    """W2 (20-64-32-3) in float64 needs 84 kB at batch 32: over the default 48 KiB, so on a
    device that lets a kernel opt in to 227 KiB (an H200) it keeps the one-launch path, up to
    launch.FUSED_OPT_IN_ROWS rows per batch; larger batches keep the default limit."""
    w2 = Layout((20, 64, 32, 3))
    params = np.zeros(w2.n_params)
    net = _net(w2, "relu", "log_loss")
    assert launch.fused_shared_bytes(params, w2.table, 32, 20, 3, net) is None  # the simulator
    assert launch.epoch_path(params, w2.table, 32, 20, 3, net) == "per-layer"
    monkeypatch.setattr(device, "shared_bytes_opt_in", lambda: 227 * 1024)
    assert launch.fused_shared_bytes(params, w2.table, 32, 20, 3, net) == 8 * (
        w2.n_params + 32 * (20 + 3 + 1 + 2 * 99))
    assert launch.epoch_path(params, w2.table, 32, 20, 3, net) == "fused"
    # In float32, 129 rows would fit in 227 KiB (128 kB) but keep the default limit.
    rows = launch.FUSED_OPT_IN_ROWS + 1
    params32 = params.astype(np.float32)
    assert 4 * (w2.n_params + rows * 222) < 227 * 1024
    assert launch.epoch_path(params32, w2.table, rows, 20, 3, net) == "per-layer"
    assert launch.epoch_path(params32, w2.table, rows - 1, 20, 3, net) == "fused"


@pytest.mark.parametrize("sparse, dtype, chunk", [(False, np.float64, 4), (True, np.float64, 16),
                                                  (False, np.float32, 3)])
def test_loss_and_gradient_matches_the_cpu_backend(sparse, dtype, chunk):
    _check_loss_and_gradient(sparse, dtype, chunk)


def _check_loss_and_gradient(sparse, dtype, chunk):
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
    _check_predict(head, sparse, dtype)


def _check_predict(head, sparse, dtype):
    layout, params, features, _, _ = _problem(head, dtype, sparse=sparse)
    rows = np.array([3, 1, 4, 1, 5, 9, 2])  # repeats, out of order: gathered in chunks of 3
    k = layout.table[-1, 1]
    out = np.empty((len(rows), k), dtype)
    net = Network(layout.table, ops.ACTIVATION["relu"].code, ops.ACTIVATION[OUTPUT[head]].code, 0,
                  0.0, 0.0, 0)
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
    monkeypatch.setattr(launch, "CUBLAS_MIN_MACS", 0)
    _take("per-layer", monkeypatch)
    _check_epochs(EPOCH_CASES[2], "per-layer")  # adam, two hidden layers
    _check_epochs(EPOCH_CASES[4], "per-layer")  # dropout
    _check_loss_and_gradient(True, np.float64, 4)
    _check_predict("log_loss", False, np.float64)
