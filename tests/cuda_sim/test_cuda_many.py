"""train_epoch_many (issue #24): one epoch of a group of models of one layer table on the same
data, against train_epoch run on each model alone. Tiny shapes under the simulator (20 rows,
3 features, 3 - 4 - 3 networks, batches of 5)."""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from fastmlp.cuda.device import target

if target() is None:
    pytest.skip("CUDA code cannot run in this process: these tests need numba's CUDA simulator "
                "(NUMBA_ENABLE_CUDASIM=1 before numba is imported, as tests/test_cuda.py runs "
                "them) or a usable GPU", allow_module_level=True)

from test_cuda_backend import _count_launches  # noqa: E402 (pytest puts this folder on sys.path)

from fastmlp import cuda as gpu  # noqa: E402
from fastmlp import ops  # noqa: E402
from fastmlp.bundles import Networks, OptimizerSteps, TrainState  # noqa: E402
from fastmlp.cuda import device, launch  # noqa: E402
from fastmlp.layout import Layout  # noqa: E402
from fastmlp.training import as_features  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # simulated uint64 overflow

N, F, K, BATCH = 20, 3, 3, 5
LAYOUT = Layout((F, 4, K))
_A, _O, _L = ops.ACTIVATION, ops.OPTIMIZER, ops.LOSS
# One model per row: hidden and output activations, loss, alpha, dropout, seed; optimizer
# (kind, learning rate, momentum, nesterov, beta_1, beta_2, epsilon, rho, weight decay, step).
MODELS = [
    (("relu", "softmax", "log_loss", 1e-4, 0.0, 7),
     ("adam", 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.0, 3)),
    (("tanh", "logistic", "binary_log_loss", 1e-2, 0.3, 11),
     ("sgd", 0.1, 0.9, True, 0.0, 0.0, 0.0, 0.0, 0.0, 0)),
    (("gelu", "identity", "squared_error", 1e-3, 0.0, 5),
     ("sgd", 0.05, 0.5, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0)),
    (("logistic", "softmax", "log_loss", 0.0, 0.0, 3),
     ("adamw", 0.02, 0.0, False, 0.8, 0.99, 1e-7, 0.0, 0.1, 0)),
]


def _group(models):
    """(nets, opts) of a group: bundles.Networks and OptimizerSteps of host arrays."""
    nets = [(_A[h].code, _A[o].code, _L[loss].code, alpha, dropout, seed)
            for (h, o, loss, alpha, dropout, seed), _ in models]
    opts = [(_O[opt[0]].code, *opt[1:]) for _, opt in models]
    dtypes = (np.int64, np.int64, np.int64, np.float64, np.float64, np.int64)
    return (Networks(gpu.to_device(LAYOUT.table),
                     *(np.array(col, dtype=dt) for col, dt in zip(zip(*nets), dtypes))),
            OptimizerSteps(*(np.array(col, dtype=dt) for col, dt in zip(zip(*opts), (
                np.int64, *[np.float64] * 2, bool, *[np.float64] * 5, np.int64)))))


def _data(dtype, n_models, seed=0):
    """(host states (M, P) x 4, features, Y, sw on the device, host orders (2, N))."""
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(N, F)).astype(dtype)
    Y = np.eye(K)[rng.randint(0, K, N)].astype(dtype)
    sw = rng.uniform(0.5, 2.0, N).astype(dtype)
    P = LAYOUT.n_params
    states = [rng.uniform(-0.6, 0.6, (n_models, P)).astype(dtype),
              np.zeros((n_models, P), dtype), np.zeros((n_models, P), dtype),
              np.zeros((n_models, P), dtype)]
    orders = np.stack([rng.permutation(N), rng.permutation(N)]).astype(np.int64)
    features = as_features(X)
    data = (type(features)(*(gpu.to_device(a) for a in features)), gpu.to_device(Y),
            gpu.to_device(sw))
    return states, data, orders


def _alone(states, data, orders, order_of, nets, opts, m, epochs, lengths=None):
    """Model m trained alone by train_epoch for `epochs` epochs (on the first lengths[g] rows of
    its order g): its (P,) params, slot_1, slot_2 and each epoch's (total, step)."""
    state = TrainState(*(gpu.to_device(a[m].copy()) for a in states))
    net, opt = launch.model_of(nets, opts, m)
    order = orders[order_of[m]][:None if lengths is None else lengths[order_of[m]]]
    results = []
    for _ in range(epochs):
        results.append(gpu.train_epoch(state, *data, gpu.to_device(order), BATCH, net, opt))
        opt = opt._replace(step=results[-1][1])
    return [gpu.to_host(a) for a in (state.params, state.slot_1, state.slot_2)], results


def _together(states, data, orders, order_of, active, nets, opts, epochs, lengths=None):
    """The group trained by train_epoch_many: host (M, P) params, slot_1, slot_2, and each
    epoch's (totals, steps)."""
    state = TrainState(*(gpu.to_device(a) for a in states))
    d_orders = gpu.to_device(orders)
    results = []
    for _ in range(epochs):
        totals, steps = gpu.train_epoch_many(state, *data, d_orders, order_of, active, BATCH,
                                             nets, opts, lengths)
        assert totals.dtype == np.float64 and steps.dtype == np.int64
        results.append((totals, steps))
        opts = opts._replace(step=np.where(np.isin(np.arange(len(steps)), active), steps,
                                           opts.step))
    return [gpu.to_host(a) for a in (state.params, state.slot_1, state.slot_2)], results


def _check_against_alone(dtype, active, order_of, epochs, path, lengths=None):
    states, data, orders = _data(dtype, len(MODELS))
    nets, opts = _group(MODELS)
    assert launch.group_path(states[0], LAYOUT.table, BATCH, F, K, nets, active) == path
    together, group_results = _together(states, data, orders, order_of, active, nets, opts,
                                        epochs, lengths)
    for m in range(len(MODELS)):
        if m not in active:  # untouched, nothing reported
            for got, before in zip(together, (states[0], states[2], states[3])):
                assert_array_equal(got[m], before[m])
            assert all(t[m] == 0 and s[m] == 0 for t, s in group_results)
            continue
        alone, results = _alone(states, data, orders, order_of, nets, opts, m, epochs,
                                lengths)
        for got, expected in zip(together, alone):  # the same arithmetic: the same bits
            assert_array_equal(got[m], expected)
        for (totals, steps), (total, step) in zip(group_results, results):
            assert totals[m] == total and steps[m] == step
    return together


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_each_model_of_a_group_trains_as_it_would_alone(dtype):
    """Mixed activations, losses, penalties, optimizers (Adam from step 3, SGD with and without
    Nesterov momentum, AdamW), one with dropout; two order rows. Two epochs: the second starts
    from the first one's state and step counters. Bit-identical: every block does the same
    arithmetic in the same order as the one-model launch."""
    together = _check_against_alone(dtype, np.arange(len(MODELS)), np.array([0, 1, 0, 1]), 2,
                                    "fused")
    states, _, _ = _data(dtype, len(MODELS))
    assert not np.array_equal(together[0], states[0])  # they did train


def test_inactive_models_are_untouched():
    _check_against_alone(np.float64, np.array([0, 3]), np.array([1, 0, 0, 1]), 1, "fused")


def test_each_model_follows_its_own_order_row():
    """Two copies of one model (same hyper-parameters and start): the same order row gives the
    same parameters, another row other parameters."""
    states, data, orders = _data(np.float64, 3)
    states[0][1] = states[0][2] = states[0][0]
    nets, opts = _group([MODELS[0]] * 3)
    together, _ = _together(states, data, orders, np.array([0, 0, 1]), np.arange(3), nets, opts,
                            1)
    assert_array_equal(together[0][0], together[0][1])
    assert not np.array_equal(together[0][0], together[0][2])


def test_a_group_epoch_is_one_launch(monkeypatch):
    """The whole group's epoch (4 batches per model) is one launch of the persistent kernel."""
    counts = _count_launches(monkeypatch)
    states, data, orders = _data(np.float32, len(MODELS))
    nets, opts = _group(MODELS)
    _together(states, data, orders, np.array([0, 1, 0, 1]), np.array([0, 1, 3]), nets, opts, 2)
    assert counts == {"train_epoch_fused": 2}, counts


@pytest.mark.parametrize("fused", [True, False])
def test_orders_of_different_lengths_train_in_one_group(monkeypatch, fused):
    """Folds of different sizes: each model visits only the first lengths[g] rows of its order
    (4 batches of 5 and 3 batches, the last of 2), in one launch on the fused path, one
    train_epoch per model on the fallback; each as it would alone, bit for bit."""
    monkeypatch.setattr(launch, "FUSED_EPOCHS", fused)
    counts = _count_launches(monkeypatch)
    _check_against_alone(np.float64, np.arange(len(MODELS)), np.array([0, 1, 0, 1]), 2,
                         "fused" if fused else "per-layer", lengths=np.array([N, 12]))
    if fused:  # two epochs of the group, then each model alone for its check
        assert counts["train_epoch_fused"] == 2 + 2 * len(MODELS), counts


def test_order_lengths_are_checked():
    states, data, orders = _data(np.float64, 2)
    nets, opts = _group(MODELS[:2])
    for bad in (np.array([N, N + 1]), np.array([-1, 3]), np.array([N])):
        with pytest.raises(ValueError, match="lengths must give"):
            _together(states, data, orders, np.array([0, 1]), np.arange(2), nets, opts, 1, bad)


def test_the_per_layer_fallback_trains_each_model_as_it_would_alone(monkeypatch):
    """Where the group does not fit the persistent kernel, train_epoch per model: the same
    results as each model alone (which then takes the per-layer kernels too)."""
    monkeypatch.setattr(launch, "FUSED_EPOCHS", False)
    counts = _count_launches(monkeypatch)
    _check_against_alone(np.float64, np.array([1]), np.array([0, 1, 1, 0]), 1, "per-layer")
    assert "train_epoch_fused" not in counts and counts


def test_the_group_launch_is_sized_for_its_most_demanding_model():
    """One shared-memory size for all blocks: pre-activations kept if any active model's hidden
    activation needs them (GELU), dropout buffers if any active model drops out."""
    params = np.zeros((len(MODELS), LAYOUT.n_params))
    nets, _ = _group(MODELS)
    table = LAYOUT.table
    units = 4 + K
    plain = 8 * (LAYOUT.n_params + BATCH * (F + K + 1 + 2 * units))
    assert launch.group_shared_bytes(params, table, BATCH, F, K, nets, [0, 3]) == plain
    assert launch.group_shared_bytes(params, table, BATCH, F, K, nets, [0, 2]) == (
        plain + 8 * BATCH * units)
    assert launch.group_shared_bytes(params, table, BATCH, F, K, nets, [1, 2, 3]) == (
        plain + 8 * BATCH * (units + 2 * 4))
    assert launch.group_shared_bytes(params, table, 2000, F, K, nets, [0]) is None
    assert launch.group_path(params, table, 2000, F, K, nets, [0]) == "per-layer"


def test_the_shared_memory_limit_is_the_devices_opt_in_maximum():
    """The decision on plain numbers (the simulator cannot opt in): the opt-in maximum where the
    device reports a larger one, else its default limit, else 48 KiB."""
    default = device.DEFAULT_SHARED_BYTES
    assert device.shared_bytes_limit(default, 227 * 1024) == 227 * 1024  # Hopper
    assert device.shared_bytes_limit(default, None) == default
    assert device.shared_bytes_limit(default, 0) == default
    assert device.shared_bytes_limit(None, None) == default
    assert device.shared_bytes_limit(96 * 1024, 64 * 1024) == 96 * 1024
    assert device.shared_bytes_opt_in() == default  # the simulator's
    device.allow_dynamic_shared(None, (), 10**6, 0)  # nothing to do, nothing touched


def test_a_group_uses_the_opt_in_limit_and_one_model_the_default(monkeypatch):
    """A group too large for 48 KiB still takes one launch where the device lets kernels opt in
    to more, whatever its batch size; train_epoch keeps the default limit for one model beyond
    launch.FUSED_OPT_IN_ROWS rows per batch."""
    params = np.zeros((2, LAYOUT.n_params))
    nets, _ = _group(MODELS[:2])
    net, _ = launch.model_of(nets, _group(MODELS[:2])[1], 0)
    batch = 1000  # 8 bytes x 1000 rows x (3 + 3 + 1 + 2 x 7) = 168 kB: over 48 KiB
    assert launch.group_path(params, LAYOUT.table, batch, F, K, nets, [0]) == "per-layer"
    monkeypatch.setattr(device, "shared_bytes_opt_in", lambda: 227 * 1024)
    assert launch.group_path(params, LAYOUT.table, batch, F, K, nets, [0]) == "fused"
    assert launch.epoch_path(params[0], LAYOUT.table, batch, F, K, net) == "per-layer"


@pytest.mark.gpu
def test_a_group_beyond_48_kib_runs_in_one_launch_on_a_gpu():
    """On a GPU that lets kernels opt in to more shared memory: a float64 group whose blocks need
    about 170 kB trains in one launch, as each model alone does with the per-layer kernels (another
    summation order: close, not bit-identical)."""
    if device.shared_bytes_opt_in() < 200 * 1024:
        pytest.skip("this GPU does not let a kernel opt in to 200 kB of shared memory")
    rng = np.random.RandomState(0)
    n, batch = 1200, 1000
    X, Y = rng.normal(size=(n, F)), np.eye(K)[rng.randint(0, K, n)]
    features = as_features(X)
    data = (type(features)(*(gpu.to_device(a) for a in features)), gpu.to_device(Y),
            gpu.to_device(np.ones(n)))
    states = [rng.uniform(-0.6, 0.6, (2, LAYOUT.n_params)), *np.zeros((3, 2, LAYOUT.n_params))]
    nets, opts = _group([MODELS[0], MODELS[3]])
    orders = np.stack([rng.permutation(n)]).astype(np.int64)
    assert launch.group_path(states[0], LAYOUT.table, batch, F, K, nets, [0, 1]) == "fused"
    together, results = _together(states, data, orders, np.zeros(2, np.int64), np.arange(2),
                                  nets, opts, 1)
    for m in range(2):
        state = TrainState(*(gpu.to_device(a[m].copy()) for a in states))
        total, step = gpu.train_epoch(state, *data, gpu.to_device(orders[0]), batch,
                                      *launch.model_of(nets, opts, m))
        assert launch.LAST_EPOCH["path"] == "per-layer"
        np.testing.assert_allclose(together[0][m], gpu.to_host(state.params), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_allclose(results[0][0][m], total, rtol=1e-10)
        assert results[0][1][m] == step


def test_the_group_benchmark_runs_its_smoke_shapes():
    """bench/gpu_many.py's harness end to end on tiny shapes (its figures mean nothing here)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "bench" / "gpu_many.py"
    spec = importlib.util.spec_from_file_location("gpu_many", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.main(["--smoke", "--contestants", "fastmlp"])
    assert any(label.startswith("fastmlp train_epoch_many, 3 models (fused)")
               for label in results)
    assert all(seconds > 0 for seconds, _ in results.values())


def test_the_groups_adam_step_sizes_are_the_cpus_bit_for_bit():
    """The host makes every block's step sizes with one NumPy expression per model: the same
    bits as the CPU's ops.adam_step_size, update by update."""
    models = [m for m in MODELS if m[1][0].startswith("adam")]
    rates = [1e-4, 3.3e-3, 0.01, 0.7]
    nets, opts = _group([models[i % 2] for i in range(4)])
    opts = opts._replace(learning_rate=np.array(rates), step=np.array([0, 3, 17, 123456]))
    codes, numbers = launch._block_tables(nets, opts, np.array([3, 1, 0]), np.zeros(4, int),
                                          np.array([250]), 50)
    for b, m in enumerate([3, 1, 0]):
        expected = [ops.adam_step_size(rates[m], float(opts.beta_1[m]), float(opts.beta_2[m]),
                                       int(opts.step[m]) + j + 1) for j in range(50)]
        assert numbers[b, launch._fused().STEP_SIZES:].tolist() == expected
        assert codes[b, launch._fused().MODEL] == m
        assert codes[b, launch._fused().ROWS] == 250
