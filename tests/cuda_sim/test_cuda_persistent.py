"""The persistent grid-wide epoch kernel (fastmlp/cuda/persistent.py) against the per-layer
launch sequence it replaces: the same parameters, optimizer slots, epoch loss and step count.
Under the simulator (one block, whose grid barrier is a block barrier) they agree bit for bit;
on a GPU within the CPU/GPU tolerance. Tiny shapes: 12 rows, 5 features, hidden (6, 4)."""

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal

from fastmlp.cuda.device import target

if target() is None:
    pytest.skip("CUDA code cannot run in this process: these tests need numba's CUDA simulator "
                "(NUMBA_ENABLE_CUDASIM=1 before numba is imported, as tests/test_cuda.py runs "
                "them) or a usable GPU", allow_module_level=True)

from test_cuda_backend import (  # noqa: E402 - the same helpers as the backend's tests
    TOL,
    _count_launches,
    _device_net,
    _net,
    _on_device,
    _opt,
)

from fastmlp import cuda as gpu  # noqa: E402
from fastmlp.bundles import TrainState  # noqa: E402
from fastmlp.cuda import device, kernels, launch, persistent  # noqa: E402
from fastmlp.layout import Layout  # noqa: E402
from fastmlp.training import as_features  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # simulated uint64 overflow

N_ROWS, N_FEATURES, HIDDEN, BATCH = 12, 5, (6, 4), 5  # batches of 5, 5 and 2 rows


@pytest.fixture(autouse=True)
def small_per_layer_tiles(monkeypatch):
    """The per-layer reference with 4 x 4 product tiles under the simulator (16 Python threads
    a block instead of 256): a product sums over k in increasing order whatever the tile size,
    so its results are the same bits, in a third of the time."""
    if device.simulator():
        monkeypatch.setattr(kernels, "TILE", 4)


def _problem(head, dtype, sparse, seed=0):
    """(layout, params, features, Y, sw) of a small random problem for a loss head."""
    rng = np.random.RandomState(seed)
    k = 3 if head == "log_loss" else 2
    layout = Layout((N_FEATURES, *HIDDEN, k))
    X = rng.normal(size=(N_ROWS, N_FEATURES))
    if sparse:
        X[np.abs(X) < 0.6] = 0
    if head == "log_loss":
        Y = np.eye(k)[rng.randint(0, k, N_ROWS)]
    elif head == "binary_log_loss":
        Y = rng.randint(0, 2, (N_ROWS, k)).astype(float)
    else:
        Y = rng.normal(size=(N_ROWS, k))
    X = X.astype(dtype)
    features = as_features(sp.csr_matrix(X) if sparse else X)
    return (layout, rng.uniform(-0.6, 0.6, layout.n_params).astype(dtype), features,
            Y.astype(dtype), rng.uniform(0.5, 2.0, N_ROWS).astype(dtype))


def _epochs(path, problem, net, solver, epochs, monkeypatch, sw=None):
    """[(total, step)] per epoch and the final (params, slot_1, slot_2) of `epochs` epochs on
    `path` ("persistent" or "per-layer"), from the same start."""
    monkeypatch.setattr(launch, "FUSED_EPOCHS", False)  # these networks would fit in one block
    monkeypatch.setattr(launch, "PERSISTENT_EPOCHS", path == "persistent")
    layout, params, features, Y, weights = problem
    weights = weights if sw is None else sw
    assert launch.epoch_path(params, layout.table, BATCH, N_FEATURES, Y.shape[1], net) == path
    state = _on_device(TrainState(params.copy(), np.zeros_like(params), np.zeros_like(params),
                                  np.zeros_like(params)))
    data = _on_device(features), *_on_device((Y, weights))
    step, results = 5, []  # as after an earlier partial_fit
    for epoch in range(epochs):
        order = gpu.to_device(np.random.RandomState(epoch).permutation(N_ROWS))
        total, step = gpu.train_epoch(state, *data, order, BATCH, _device_net(net),
                                      _opt(solver, step))
        assert isinstance(total, float) and isinstance(step, int)
        assert launch.LAST_EPOCH["path"] == path
        results.append((total, step))
    return results, [gpu.to_host(a) for a in (state.params, state.slot_1, state.slot_2)]


def _same(got, expected, dtype):
    """Bit for bit under the simulator; on a GPU, where the compiler may contract other
    multiply-adds in the two kernels, within the CPU/GPU tolerance."""
    if device.simulator():
        assert_array_equal(got, expected)
    else:
        assert_allclose(got, expected, **TOL[dtype])


def _check(case, monkeypatch, epochs=1):
    solver, activation, head, sparse, dtype, dropout = case
    problem = _problem(head, dtype, sparse)
    net = _net(problem[0], activation, head, dropout=dropout)
    expected, expected_state = _epochs("per-layer", problem, net, solver, epochs, monkeypatch)
    got, got_state = _epochs("persistent", problem, net, solver, epochs, monkeypatch)
    assert [step for _, step in got] == [step for _, step in expected]
    _same(np.array([total for total, _ in got]), np.array([t for t, _ in expected]), dtype)
    for a, b in zip(got_state, expected_state):  # params, slot_1, slot_2
        _same(a, b, dtype)
    assert not np.array_equal(got_state[0], problem[1])  # it did train


# Hidden activations relu, tanh, gelu (which keeps pre-activations); every loss head (log_loss
# multi-class, binary logistic, squared error as a regressor has it); every optimizer (SGD with
# Nesterov and without); dense and CSR input; float64 and float32; dropout.
CASES = [
    ("adam", "relu", "log_loss", False, np.float64, 0.0),
    ("sgd_nesterov", "tanh", "binary_log_loss", True, np.float64, 0.0),
    ("adagrad", "gelu", "squared_error", False, np.float64, 0.3),
    ("rmsprop", "relu", "squared_error", True, np.float32, 0.0),
    ("adamw", "tanh", "log_loss", False, np.float32, 0.25),
    ("sgd", "gelu", "binary_log_loss", True, np.float32, 0.0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(
    [c[0], c[1], c[2], "csr" if c[3] else "dense", np.dtype(c[4]).name, f"dropout{c[5]}"]))
def test_the_persistent_epoch_matches_the_per_layer_path(case, monkeypatch):
    _check(case, monkeypatch)


def test_a_second_epoch_continues_from_the_first(monkeypatch):
    """Adam's step counter and the optimizer slots carry over from one launch to the next."""
    _check(("adam", "gelu", "log_loss", True, np.float64, 0.2), monkeypatch, epochs=2)


def test_the_persistent_epoch_does_not_depend_on_the_block_size(monkeypatch):
    """Blocks of 4 threads (2 x 2 tiles: every product several tiles and k-steps, every sum
    several virtual threads per thread) give the same bits as the default block."""
    if not device.simulator():
        pytest.skip("on a GPU the tile size is compiled into the kernel")
    monkeypatch.setattr(persistent, "TILE", 2)
    monkeypatch.setattr(persistent, "THREADS", 4)
    _check(("adam", "tanh", "log_loss", True, np.float64, 0.3), monkeypatch)


def test_a_batch_whose_weights_are_all_zero_is_skipped(monkeypatch):
    problem = _problem("log_loss", np.float64, False)
    sw = problem[4].copy()
    sw[np.random.RandomState(0).permutation(N_ROWS)[:BATCH]] = 0  # the whole first batch
    net = _net(problem[0], "relu", "log_loss")
    expected, expected_state = _epochs("per-layer", problem, net, "adam", 1, monkeypatch, sw)
    got, got_state = _epochs("persistent", problem, net, "adam", 1, monkeypatch, sw)
    assert got[0][1] == expected[0][1] == 5 + 2  # two updates from three batches
    _same(np.array(got[0][:1]), np.array(expected[0][:1]), np.float64)
    for a, b in zip(got_state, expected_state):
        _same(a, b, np.float64)


def test_an_epoch_on_the_persistent_path_is_one_launch(monkeypatch):
    """However many batches (here 3, then 6), the epoch is exactly one kernel launch."""
    counts = _count_launches(monkeypatch)
    monkeypatch.setattr(launch, "FUSED_EPOCHS", False)
    monkeypatch.setattr(launch, "PERSISTENT_EPOCHS", True)
    for n in (12, 24):
        layout, params, features, Y, sw = _problem("log_loss", np.float64, False)
        net = _net(layout, "relu", "log_loss")
        state = _on_device(TrainState(params, np.empty_like(params), np.zeros_like(params),
                                      np.zeros_like(params)))
        order = gpu.to_device(np.arange(n) % N_ROWS)
        gpu.train_epoch(state, _on_device(features), *_on_device((Y, sw)), order, 4,
                        _device_net(net), _opt("adam"))
        assert counts == {"train_epoch_persistent": 1}, (n, counts)
        counts.clear()


def test_the_persistent_path_is_off_by_default_and_never_replaces_the_fused_one():
    layout, params, _, _, _ = _problem("log_loss", np.float64, False)
    net = _net(layout, "relu", "log_loss")
    assert launch.PERSISTENT_EPOCHS is False  # until measured on a GPU
    assert launch.epoch_path(params, layout.table, 400, N_FEATURES, 3, net) == "per-layer"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(launch, "PERSISTENT_EPOCHS", True)
        assert launch.epoch_path(params, layout.table, 4, N_FEATURES, 3, net) == "fused"
        assert launch.epoch_path(params, layout.table, 400, N_FEATURES, 3, net) == "persistent"


@pytest.mark.gpu
def test_on_a_gpu_the_grid_has_many_blocks_and_agrees(monkeypatch):
    """On a real GPU the grid is as large as can be resident (at most the most tiles a phase
    has): several blocks meet at every grid barrier, and the epoch still agrees with the
    per-layer path. (The simulator runs one block only.)"""
    rng = np.random.RandomState(4)
    layout = Layout((20, 24, 18, 3))
    X = rng.normal(size=(64, 20)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.randint(0, 3, 64)]
    sw = np.ones(64, np.float32)
    params = rng.uniform(-0.3, 0.3, layout.n_params).astype(np.float32)
    problem = (layout, params, as_features(X), Y, sw)
    net = _net(layout, "relu", "log_loss", dropout=0.1)
    monkeypatch.setattr(launch, "FUSED_EPOCHS", False)
    order = gpu.to_device(rng.permutation(64))
    results = {}
    for path in ("per-layer", "persistent"):
        monkeypatch.setattr(launch, "PERSISTENT_EPOCHS", path == "persistent")
        state = _on_device(TrainState(params.copy(), np.zeros_like(params),
                                      np.zeros_like(params), np.zeros_like(params)))
        total, step = gpu.train_epoch(state, _on_device(problem[2]), *_on_device((Y, sw)), order,
                                      32, _device_net(net), _opt("adam"))
        assert launch.LAST_EPOCH["path"] == path
        results[path] = total, step, gpu.to_host(state.params), gpu.to_host(state.slot_2)
    assert launch.LAST_EPOCH["blocks"] > 1
    expected, got = results["per-layer"], results["persistent"]
    assert got[1] == expected[1]  # the step counter
    for a, b in zip(got[0:1] + got[2:], expected[0:1] + expected[2:]):  # total, params, slot_2
        assert_allclose(a, b, **TOL[np.float32])
