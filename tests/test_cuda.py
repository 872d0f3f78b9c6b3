"""The CUDA backend, from the ordinary test process.

Its kernels, entry points and estimators are tested in tests/cuda_sim/ under numba's CUDA
simulator, which must be switched on (NUMBA_ENABLE_CUDASIM=1) before numba is imported; this
process needs numba's real CPU compilation, so the simulator runs in child processes, two shards
at once (the simulator is single-threaded Python; this machine has two cores). On a machine with a
GPU, tests/cuda_sim/ is also collected in this process and runs on the GPU (see its conftest).
Here: importing the backend needs neither a GPU nor numba-cuda; device="cuda" without a usable GPU
fails with an error that says why and how to fix it; and, where numba-cuda is installed, every
kernel compiles for a real GPU, which the simulator cannot check.
"""

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import fastmlp
from fastmlp import cuda as gpu
from fastmlp.cuda import device, launch

TESTS = Path(__file__).resolve().parent
SHARDS = [["cuda_sim/test_cuda_backend.py", "cuda_sim/test_cuda_fit_many.py",
           "cuda_sim/test_cuda_persistent.py"],
          ["cuda_sim/test_cuda_kernels.py", "cuda_sim/test_cuda_estimators.py",
           "cuda_sim/test_cuda_many.py"]]


def _child_env(**extra):
    """The environment of a child Python that imports the same fastmlp as this process."""
    env = dict(os.environ, **extra)
    package_root = str(Path(fastmlp.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def test_cuda_backend_under_the_simulator():
    env = _child_env(NUMBA_ENABLE_CUDASIM="1")
    children = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                  *shard], cwd=TESTS, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for shard in SHARDS]
    outputs = []
    try:
        for child in children:
            outputs.append(child.communicate(timeout=600)[0])
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for shard, child, output in zip(SHARDS, children, outputs):
        summary = output.strip().splitlines()[-1] if output.strip() else ""
        assert child.returncode == 0, f"{shard} under the simulator:\n{output[-8000:]}"
        assert re.search(r"\d+ passed", summary) and "failed" not in summary, output[-3000:]


@pytest.mark.skipif(device.target() == "gpu", reason="on a GPU machine tests/cuda_sim runs")
def test_the_cuda_suite_skips_loudly_where_cuda_cannot_run():
    """Without the simulator or a GPU, every file of tests/cuda_sim is reported as skipped with
    the reason, instead of nothing being collected."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p",
                             "no:cacheprovider", "cuda_sim"], cwd=TESTS, capture_output=True,
                            text=True, env=_child_env(NUMBA_ENABLE_CUDASIM="0"), timeout=300)
    files = {path.name for path in (TESTS / "cuda_sim").glob("test_*.py")}
    skipped = set(re.findall(r"SKIPPED \[1\] cuda_sim/(test_\w+\.py):\d+: CUDA code cannot run "
                             r"in this process", result.stdout))
    assert skipped == files and len(files) == 6, result.stdout[-3000:]
    assert f"{len(files)} skipped" in result.stdout


# What the driver (fastmlp/training.py) calls on a backend module.
BACKEND_INTERFACE = {"train_epoch", "loss_and_gradient", "predict", "thread_limit",
                     "to_device", "to_host", "empty", "copy_to", "check_available"}
# What the lockstep driver (fastmlp/many.py) calls on a backend that trains a group of models
# together.
GROUP_INTERFACE = {"train_epoch_many", "stack_rows", "unstack_rows"}


def _public_functions(module):
    """{name: signature} of the public functions a module defines or re-exports."""
    return {name: inspect.signature(getattr(value, "py_func", value))
            for name, value in vars(module).items()
            if not name.startswith("_") and callable(value) and not inspect.ismodule(value)
            and not inspect.isclass(value)}


def test_both_backends_expose_the_same_interface():
    """fastmlp.cpu and fastmlp.cuda are interchangeable for the driver: the functions it calls,
    with the same signatures (arguments as in the CPU kernels), and nothing public on the CUDA
    side that the CPU side lacks."""
    import fastmlp.cpu as cpu_backend

    on_cpu, on_cuda = _public_functions(cpu_backend), _public_functions(gpu)
    assert BACKEND_INTERFACE | GROUP_INTERFACE <= set(on_cpu), on_cpu
    assert set(on_cuda) == BACKEND_INTERFACE | GROUP_INTERFACE, on_cuda
    for name in BACKEND_INTERFACE | GROUP_INTERFACE:
        assert on_cuda[name] == on_cpu[name], (name, on_cpu[name], on_cuda[name])
    assert (cpu_backend.NAME, gpu.NAME) == ("cpu", "cuda")


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="needs numba-cuda (pip install 'fastmlp[cuda]'); no GPU needed")
def test_a_kernel_name_means_the_same_contract_on_both_backends():
    """Below the backend interface, a CUDA kernel or device function named like a CPU kernel
    takes the same arguments (kernels that fuse several CPU steps carry other names)."""
    result = _run_python("""
        import inspect
        from fastmlp.cpu import kernels as cpu
        from fastmlp.cuda import kernels as gpu

        def functions(module):
            return {name: inspect.signature(getattr(value, "py_func", value))
                    for name, value in vars(module).items() if not name.startswith("_")
                    and (hasattr(value, "py_func") or inspect.isfunction(value))}

        on_cpu, on_gpu = functions(cpu), functions(gpu)
        shared = sorted(set(on_cpu) & set(on_gpu))
        for name in shared:
            assert on_cpu[name] == on_gpu[name], (name, on_cpu[name], on_gpu[name])
        print("SHARED:", " ".join(shared))
    """, NUMBA_ENABLE_CUDASIM="0")
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    shared = re.search(r"SHARED: (.*)", result.stdout).group(1).split()
    # The scalar maths is no kernel of either module: both compile fastmlp/ops.py's functions
    # (tests/test_registry.py checks that every operation reaches both).
    assert {"dropout_forward", "dense_backward", "softmax_rows"} <= set(shared), shared


def _run_python(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=_child_env(**env), timeout=300)


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="needs numba-cuda (pip install 'fastmlp[cuda]'); no GPU needed")
def test_the_fused_kernels_block_size_setting_is_checked():
    from fastmlp.cuda import fused

    assert fused.block_threads(None) == fused.block_threads("") == 256
    assert fused.block_threads("512") == 512 and fused.block_threads("32") == 32
    for bad in ("300", "16", "2048", "many", "-256"):
        with pytest.raises(ValueError, match=f"FASTMLP_FUSED_THREADS='{bad}': expected a power "
                                             "of two from 32 to 1024"):
            fused.block_threads(bad)


def test_the_backend_imports_and_explains_itself_without_numbas_cuda_target():
    """A Python where numba.cuda cannot be imported at all (no CUDA target, as a future numba
    without its built-in one and no numba-cuda would be): importing works, and device='cuda' says
    what to install while device='auto' trains on the CPU."""
    result = _run_python("""
        import sys

        class NoCuda:
            def find_spec(self, name, path=None, target=None):
                if name in ("numba.cuda", "numba_cuda") or name.startswith("numba.cuda."):
                    raise ImportError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoCuda())
        import numpy as np
        import fastmlp.cuda
        assert "fastmlp.cuda.kernels" not in sys.modules
        try:
            fastmlp.MLPClassifier(device="cuda").fit(np.eye(4), [0, 1, 0, 1])
        except RuntimeError as exc:
            print("MESSAGE:", exc)
        auto = fastmlp.MLPClassifier(device="auto", max_iter=3).fit(np.eye(4), [0, 1, 0, 1])
        print("AUTO:", auto.predict(np.eye(4)).shape)
    """, NUMBA_ENABLE_CUDASIM="0")
    assert result.returncode == 0, result.stderr
    message = re.search(r"MESSAGE: (.*)", result.stdout).group(1)
    assert "numba's CUDA target failed to import" in message
    assert "pip install 'fastmlp[cuda]'" in message and "device='cpu'" in message
    assert "AUTO: (4,)" in result.stdout


class _FakeCuda:
    """Stands in for numba.cuda: is_available() and the device list, which may raise."""

    def __init__(self, available=False, gpus=()):
        self._available, self._gpus = available, gpus

    def is_available(self):
        return self._available

    @property
    def gpus(self):
        if isinstance(self._gpus, Exception):
            raise self._gpus
        return list(self._gpus)


NO_DRIVER = RuntimeError("Error at driver init: \n\nCUDA driver library cannot be found.\n"
                         "If you are sure that a CUDA driver is installed, ...")


@pytest.fixture
def no_gpu(monkeypatch):
    """check_available on a machine as described: not the simulator, numba-cuda installed, and
    a numba.cuda whose answers the test chooses."""
    monkeypatch.setattr(device, "simulator", lambda: False)
    monkeypatch.setattr(device, "numba_cuda_installed", lambda: True)
    monkeypatch.setattr(device, "compiler_found", lambda: True)
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)

    def machine(**fake):
        monkeypatch.setattr(device, "import_cuda", lambda: _FakeCuda(**fake))

    return machine


def test_check_available_says_the_driver_is_missing(no_gpu):
    no_gpu(gpus=NO_DRIVER)
    with pytest.raises(RuntimeError) as info:
        gpu.check_available()
    message = str(info.value)
    assert "the CUDA driver could not be loaded" in message
    assert "Error at driver init: CUDA driver library cannot be found" in message  # numba's
    assert "nvidia-smi" in message and "device='cpu'" in message
    assert "numba-cuda is not installed" not in message


def test_check_available_says_numba_cuda_is_missing(no_gpu, monkeypatch):
    no_gpu(gpus=NO_DRIVER)
    monkeypatch.setattr(device, "numba_cuda_installed", lambda: False)
    with pytest.raises(RuntimeError, match=r"numba-cuda is not installed.*pip install "
                                           r"'fastmlp\[cuda\]'"):
        gpu.check_available()


def test_check_available_says_there_is_no_device(no_gpu):
    no_gpu(gpus=())
    with pytest.raises(RuntimeError, match="the driver reports no CUDA device.*"
                                           "CUDA_VISIBLE_DEVICES"):
        gpu.check_available()


def test_check_available_says_the_simulator_flag_came_too_late(no_gpu, monkeypatch):
    no_gpu(gpus=NO_DRIVER)
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM=1 was set after numba was "
                                           "imported"):
        gpu.check_available()


def test_check_available_says_the_compiler_is_missing(no_gpu, monkeypatch):
    no_gpu(available=True)
    monkeypatch.setattr(device, "compiler_found", lambda: False)
    with pytest.raises(RuntimeError, match="finds the GPU but not libNVVM.*pip install"):
        gpu.check_available()


def test_check_available_accepts_a_gpu_or_the_simulator(no_gpu, monkeypatch):
    no_gpu(available=True)
    assert gpu.check_available() is None
    monkeypatch.setattr(device, "import_cuda", lambda: pytest.fail("the simulator needs no probe"))
    monkeypatch.setattr(device, "simulator", lambda: True)
    assert gpu.check_available() is None


@pytest.fixture
def numpy_without_row_stack(monkeypatch):
    """NumPy as 2.5 ships it (np.row_stack removed) beside the given numba-cuda version."""
    monkeypatch.delattr(np, "row_stack", raising=False)

    def numba_cuda(version):
        monkeypatch.setattr(device, "numba_cuda_version", lambda: version)

    return numba_cuda


def test_check_available_says_numba_cuda_needs_an_older_numpy(no_gpu, numpy_without_row_stack):
    """numba-cuda 0.30.4 overloads np.row_stack when it builds its CUDA target, so with NumPy 2.5
    the first kernel compile fails with an AttributeError: say so before that, with the fix."""
    no_gpu(available=True)
    numpy_without_row_stack((0, 30, 4))
    with pytest.raises(RuntimeError) as info:
        gpu.check_available()
    message = str(info.value)
    assert "numba-cuda 0.30.4 needs numpy < 2.5" in message and "np.row_stack" in message
    assert "numpy<2.5" in message and "newer than 0.30.4" in message
    assert "device='cpu'" in message
    # device="auto" falls back to the CPU instead of failing, even for work the GPU would win
    assert fastmlp.estimators.resolve_device("auto", GPU_WORK) == "cpu"

    no_gpu(gpus=())  # no GPU either: both reasons are given
    with pytest.raises(RuntimeError, match="needs numpy < 2.5.*no CUDA device"):
        gpu.check_available()


def test_numpy_without_row_stack_is_fine_where_numba_cuda_does_not_need_it(
        no_gpu, numpy_without_row_stack):
    no_gpu(available=True)
    numpy_without_row_stack((0, 31, 0))  # a numba-cuda newer than the last one known to need it
    assert gpu.check_available() is None
    numpy_without_row_stack(None)  # numba-cuda not installed: numba's own CUDA target
    assert gpu.check_available() is None


def test_a_numpy_with_row_stack_passes_whatever_numba_cuda(no_gpu, monkeypatch):
    """Detected by capability: a NumPy that has np.row_stack (before 2.5, or shimmed) passes."""
    no_gpu(available=True)
    monkeypatch.setattr(np, "row_stack", np.vstack, raising=False)
    monkeypatch.setattr(device, "numba_cuda_version", lambda: (0, 30, 4))
    assert gpu.check_available() is None


def test_device_cuda_without_a_gpu_raises_and_auto_falls_back(no_gpu):
    no_gpu(gpus=NO_DRIVER)
    X, y = np.eye(4), [0, 1, 0, 1]
    clf = fastmlp.MLPClassifier(device="cuda", max_iter=3)
    with pytest.raises(RuntimeError, match="device='cuda' cannot run: the CUDA driver"):
        clf.fit(X, y)
    assert not hasattr(clf, "n_iter_")  # nothing half-fitted
    with pytest.warns(ConvergenceWarning):  # 3 epochs
        auto = fastmlp.MLPClassifier(device="auto", max_iter=3).fit(X, y)
    assert auto.predict(X).shape == (4,)
    with pytest.raises(RuntimeError, match="device='cuda' cannot run"):
        auto.set_params(device="cuda").predict(X)


# The one kind of fit measured faster on the GPU (see fastmlp/cuda/device.py): 784-1024-1024-10,
# float32, batch 1024, 60,000 rows, adam, dense, no dropout.
GPU_WORK = dict(layer_units=[784, 1024, 1024, 10], batch_size=1024, n_samples=60_000,
                dtype="float32", sparse=False, mini_batch=True, dropout=0.0)


@pytest.fixture
def usable_gpu(no_gpu, monkeypatch):
    """A usable GPU with a working CuPy, as far as device="auto" can tell."""
    no_gpu(available=True)
    monkeypatch.setattr(device, "cupy", lambda: object())


def test_auto_picks_the_gpu_only_for_work_measured_faster_there(usable_gpu):
    assert device.auto_choice(**GPU_WORK)[0] == "cuda"
    assert fastmlp.estimators.resolve_device("auto", GPU_WORK) == "cuda"
    # The measured workloads where the GPU lost or tied, on the same usable GPU: W2 and W1.
    w2 = dict(GPU_WORK, layer_units=[20, 64, 32, 3], batch_size=32, n_samples=100_000)
    w1 = dict(GPU_WORK, layer_units=[784, 256, 128, 10], batch_size=256)
    for work in (w2, w1):
        assert device.auto_choice(**work)[0] == "cpu", work
    # One step short of the measured work on any single count keeps the CPU.
    for change in [dict(batch_size=1023), dict(n_samples=59_999),
                   dict(layer_units=[784, 1024, 1023, 10]), dict(dtype="float64"),
                   dict(sparse=True), dict(mini_batch=False), dict(dropout=0.1)]:
        device_name, why = device.auto_choice(**dict(GPU_WORK, **change))
        assert device_name == "cpu" and ("unmeasured" in why or "CPU" in why), (change, why)
    # A bigger layer anywhere counts (the largest product decides), as does a bigger batch.
    assert device.auto_choice(**dict(GPU_WORK, layer_units=[64, 2048, 1024, 10]))[0] == "cuda"
    assert device.auto_choice(**dict(GPU_WORK, batch_size=4096,
                                     layer_units=[784, 512, 512, 10]))[0] == "cuda"
    # Prediction on the GPU is unmeasured: "auto" predicts on the CPU.
    assert fastmlp.estimators.resolve_device("auto") == "cpu"


def test_auto_keeps_the_cpu_without_cublas_or_without_a_gpu(no_gpu, monkeypatch):
    """The GPU was measured with CuPy's cuBLAS doing the products; the tiled kernels alone are
    unmeasured (and typically a tenth of cuBLAS's speed), and no GPU means the CPU."""
    no_gpu(available=True)
    monkeypatch.setattr(device, "cupy", lambda: None)
    assert device.auto_choice(**GPU_WORK) == (
        "cpu", "without CuPy's cuBLAS (pip install 'fastmlp[cuda-blas]') it is unmeasured")
    no_gpu(gpus=NO_DRIVER)
    monkeypatch.setattr(device, "cupy", lambda: pytest.fail("no GPU: CuPy is not asked"))
    name, why = device.auto_choice(**GPU_WORK)
    assert name == "cpu" and "the CUDA driver could not be loaded" in why


def test_auto_does_not_touch_cuda_for_small_work(monkeypatch):
    """A fit too small for the GPU decides without initialising CUDA or probing CuPy."""
    monkeypatch.setattr(device, "check_available", lambda: pytest.fail("CUDA was probed"))
    monkeypatch.setattr(device, "cupy", lambda: pytest.fail("CuPy was probed"))
    assert device.auto_choice(**dict(GPU_WORK, batch_size=200))[0] == "cpu"


def test_an_auto_fit_describes_its_work_and_trains_where_the_rule_says(usable_gpu, monkeypatch):
    """The estimator hands the rule the fit's real sizes (batch_size="auto" is min(200, n)), and
    trains on the CPU when it says so, though a GPU is usable."""
    asked = []

    def rule(**work):
        asked.append(work)
        return "cpu", "test"

    monkeypatch.setattr(device, "auto_choice", rule)
    monkeypatch.setattr(gpu, "train_epoch", lambda *a: pytest.fail("trained on the GPU"))
    X, y = np.random.RandomState(0).normal(size=(150, 6)), np.arange(150) % 3
    with pytest.warns(ConvergenceWarning):
        clf = fastmlp.MLPClassifier((5, 4), device="auto", max_iter=2).fit(X, y)
    assert clf.predict(X).shape == (150,)
    assert asked == [dict(layer_units=[6, 5, 4, 3], batch_size=150, n_samples=150,
                          dtype="float32", sparse=False, mini_batch=True, dropout=0.0)]
    asked.clear()
    with pytest.warns(ConvergenceWarning):
        clf.set_params(batch_size=64, dtype="float64", solver="sgd", dropout=0.2).fit(X, y)
    assert asked == [dict(layer_units=[6, 5, 4, 3], batch_size=64, n_samples=150,
                          dtype="float64", sparse=False, mini_batch=True, dropout=0.2)]


PTX_CHECK = r"""
import re, sys, types
import numpy as np
import numba
from numba import cuda, float32, float64, int64, boolean
from numba.cuda.cudadrv.error import CudaSupportError
from fastmlp.bundles import Features, Network, OptimizerStep
from fastmlp.cuda import fused, persistent
from fastmlp.cuda import kernels as K


def signatures(T):
    M, V, F, I, D = T[:, ::1], T[::1], float64[::1], int64[::1], numba.int32[::1]
    F2, I2 = float64[:, ::1], int64[:, ::1]
    features = numba.types.NamedTuple([M, V, I, I], Features)
    net = numba.typeof(Network(np.zeros((2, 4), np.int64), 1, 2, 3, 0.1, 0.0, 5))
    x = np.dtype(str(T)).type(0)
    scalars = numba.typeof(K.StepScalars(x, x, False, x, x, x, x, x, x))
    return {
        "gather_rows_from": (M, M, V, I, I, I, int64),
        "stage_batch_from": (M, M, V, M, V, I, I, M, V, I, int64),
        "bias_activate": (M, M, V, int64),
        "softmax_rows": (M,),
        "activation_backward_masked": (M, M, M, M, int64, boolean),
        "dropout_forward": (M, M, M, float64, int64, int64, int64),
        "dense_forward_activate": (M, M, M, M, V, int64),
        "dense_backward": (M, V, M, M),
        "backward_input": (M, M, M, M, M, M, int64, boolean),
        "column_sums": (V, M),
        "output_delta_and_loss_sums": (M, F, M, M, V, int64, boolean, float64),
        "finish_gradient_squares": (V, F, V, F, T, int64),
        "update_batch": (V, V, V, F, V, F, D, int64, T, scalars, F, T, int64, float64, int64),
        "add_into": (V, V, boolean),
        "train_epoch_fused": (M, M, M, F2, features, M, V, I2, int64, I2, I2, F2, float64),
        "train_epoch_persistent": (V, V, V, V, V, F, F, features, M, V, I, F, int64, net,
                                   scalars, T, int64, float64),
    }


def kernel(name):
    module = {"train_epoch_fused": fused, "train_epoch_persistent": persistent}.get(name, K)
    return getattr(module, name)


def compile_all():
    for T in (float32, float64):
        for name, signature in signatures(T).items():
            ptx, _ = cuda.compile_ptx(kernel(name).py_func, signature, cc=(8, 0))
            doubles = re.findall(r"\b(?:add|mul|fma)\.(?:rn\.)?f64\b", ptx)
            if name in ("dense_forward_activate", "dense_backward", "backward_input",
                        "bias_activate", "activation_backward_masked"):
                # float32 products and activations do float32 arithmetic only.
                assert bool(doubles) == (T is float64), (name, T, doubles[:3])


def launchable(module):
    return {n for n in dir(module) if hasattr(getattr(module, n), "py_func")
            and not getattr(getattr(module, n), "targetoptions", {}).get("device")}


kernels = launchable(K) | launchable(fused) | launchable(persistent)
assert kernels == set(signatures(float32)), kernels ^ set(signatures(float32))
try:
    compile_all()
except CudaSupportError:
    # Device functions are compiled for the current device's compute capability, which needs
    # a driver; without one, give them the same target as the kernels.
    import numba.cuda.dispatcher as dispatcher
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(8, 0))
    compile_all()
print("compiled", len(kernels), "kernels")
"""


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="needs numba-cuda (pip install 'fastmlp[cuda]'); no GPU needed")
def test_every_kernel_compiles_for_a_real_gpu():
    """What the simulator cannot check: numba-cuda types every kernel, the one-block and the
    grid-wide persistent epoch kernels included (the latter with its grid barriers), in float32
    and float64, and NVVM compiles it to PTX (sm_80), with float32 products and activations
    free of float64 arithmetic. Runs wherever numba-cuda is installed, GPU or not."""
    result = _run_python(PTX_CHECK, NUMBA_ENABLE_CUDASIM="0")
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    assert "compiled 16 kernels" in result.stdout


def test_gpu_benchmark_harness_runs_under_the_simulator(tmp_path):
    """bench/compare_gpu.py has never had a GPU here: its --smoke run checks the harness (data,
    contestants, alternation, float32 and float64, the table, its targets, and the CUDA path
    each fit reports) on tiny data under the simulator."""
    out = tmp_path / "GPU_RESULTS.md"
    result = subprocess.run([sys.executable, str(TESTS.parent / "bench" / "compare_gpu.py"),
                             "--smoke", "--out", str(out)], capture_output=True, text=True,
                            env=_child_env(NUMBA_ENABLE_CUDASIM="1"), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    table = out.read_text()
    assert "SMOKE RUN" in table
    for dtype in ("float32", "float64"):
        for workload in ("W1", "W2"):
            for contestant in ("fastmlp cuda", "fastmlp cpu"):
                assert re.search(rf"\| {workload} .*, {dtype} \| {contestant} \| \d+\.\d+ \| "
                                 rf"\d+\.\d+x \|", table), (workload, contestant, table)
        # The path the backend reports: W1 is too large for the one-launch epoch kernel (as the
        # real W1 is), its products by the tiled kernel (no cuBLAS in the simulator); W2 fits.
        assert re.search(rf"\| W1 [^|]*, {dtype} \| fastmlp cuda \|.*\| per-layer \(tiled, "
                         r"tiled, tiled\) \|", table), table
        assert re.search(rf"\| W2 [^|]*, {dtype} \| fastmlp cuda \|.*\| fused \|", table), table
        # same model on both devices: the W1 test accuracies agree
        accuracies = re.findall(rf"\| W1 [^|]*, {dtype} \| fastmlp c(?:uda|pu) \|.*\| "
                                r"(\d\.\d+) \|", table)
        assert len(accuracies) == 2 and accuracies[0] == accuracies[1], table
        assert re.search(rf"W2 [^|]*, {dtype}: device='auto' picks cpu", table), table


def test_the_gpu_checks_row_stack_shim_restores_it_only_where_missing(tmp_path):
    """bench/with_row_stack.py (what bench/gpu_check.sh runs its Python steps through) gives
    NumPy 2.5 np.row_stack back for numba-cuda 0.30.4, says so, and runs the script or module
    with its arguments; with a NumPy that has it, it changes nothing."""
    shim = str(TESTS.parent / "bench" / "with_row_stack.py")
    (tmp_path / "probe.py").write_text(
        "import sys\nimport numpy as np\n"
        "print('PROBE', sys.argv[1:], np.row_stack is np.vstack)\n")
    for target in ([str(tmp_path / "probe.py")], ["-m", "probe"]):
        for numpy_2_5 in (True, False):
            code = ("import runpy, sys\nimport numpy\n"
                    + ("del numpy.row_stack\n" if numpy_2_5 else "")
                    + f"sys.argv = [{shim!r}, *{target!r}, 'a', '--b']\n"
                    f"runpy.run_path({shim!r}, run_name='__main__')\n")
            result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, cwd=tmp_path, env=_child_env(), timeout=120)
            assert result.returncode == 0, result.stderr
            assert f"PROBE ['a', '--b'] {numpy_2_5}" in result.stdout, (target, result.stdout)
            said = "shimmed as np.vstack" if numpy_2_5 else "nothing shimmed"
            assert said in result.stderr, result.stderr


@pytest.mark.skipif(device.target() == "gpu", reason="checks the script where no GPU is usable; "
                    "with one, its steps really run (minutes)")
def test_the_gpu_check_script_runs_through_failing_steps_within_its_budget(tmp_path):
    """bench/gpu_check.sh without a GPU: every step fails or is skipped, yet the script goes on
    to the end, stays within GPU_CHECK_SECONDS, and leaves at most 8 flat, plainly named files
    (what the device machine hands back), the step logs packed in one, with a summary line per
    step."""
    out = tmp_path / "out"
    env = _child_env(GPU_CHECK_SECONDS="60", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(TESTS.parent / "bench" / "gpu_check.sh"), str(out)],
                            capture_output=True, text=True, env=env, timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr
    names = sorted(path.name for path in out.iterdir())
    assert len(names) <= 8 and all(path.is_file() for path in out.iterdir()), names
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in names), names
    summary = (out / "summary.txt").read_text()
    assert re.search(r"^versions: ok", summary, re.M), summary
    with tarfile.open(out / "logs.tar.gz") as logs:  # the step logs, as one file
        assert {"versions.log", "pytest-cuda.log", "compare.log", "threads.log"} <= set(
            logs.getnames())
    assert not any(name.endswith(".log") for name in names), names
    for step in ("pytest tests/cuda_sim on the GPU", "bench/compare_gpu.py",
                 "bench/gpu_profile.py, block of 512 threads"):
        assert re.search(rf"^{re.escape(step)}: (FAILED|SKIPPED|TIMED OUT)", summary, re.M), (
            step, summary)
    assert re.search(r"compute-sanitizer|racecheck", summary), summary
    total = int(re.search(r"^total: (\d+)s", summary, re.M).group(1))
    assert total <= 60, summary


def test_product_grids_stay_within_cudas_grid_limits():
    """Rows of a product go along the grid's x axis (up to 2**31 - 1 blocks): on y (at most
    65535 blocks) a first layer's weight gradient over 2**20 sparse features, or a batch of a
    million rows, could not be launched. The simulator checks that kernels read the same axes."""
    import types

    K = types.SimpleNamespace(TILE=16)
    for rows, cols in [(2**20 + 1, 256), (3_000_000, 10), (7, 5)]:
        (grid_x, grid_y), block = launch.product_grid(K, rows, cols)
        assert grid_x * 16 >= rows and grid_y * 16 >= cols and block == (16, 16)
        assert grid_x <= 2**31 - 1 and grid_y <= 65535


def _fake_cupy(matmul):
    """A stand-in module with the few CuPy names _cupy() uses, over NumPy."""
    import contextlib
    import types

    return types.SimpleNamespace(
        ones=np.ones, matmul=matmul, asnumpy=np.asarray, float32=np.float32,
        cuda=types.SimpleNamespace(Stream=types.SimpleNamespace(null=contextlib.nullcontext())))


def test_cublas_is_used_only_when_cupys_product_works(monkeypatch, recwarn):
    """CuPy is checked once per process with a small product: a working one is used, a broken
    one (built for another CUDA, cuBLAS missing) warns once and the tiled kernels take over, and
    a missing one is silently skipped. Runs without a GPU on a stand-in module."""
    import warnings

    monkeypatch.setattr(device, "simulator", lambda: False)

    working = _fake_cupy(np.matmul)
    monkeypatch.setitem(sys.modules, "cupy", working)
    monkeypatch.setattr(device, "_CUPY", device.UNCHECKED)
    assert device.cupy() is working

    def broken_matmul(a, b):
        raise RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED")

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(broken_matmul))
    monkeypatch.setattr(device, "_CUPY", device.UNCHECKED)
    with pytest.warns(RuntimeWarning, match="CUBLAS_STATUS_NOT_INITIALIZED"):
        assert device.cupy() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked once: no second warning
        assert device.cupy() is None

    wrong = _fake_cupy(lambda a, b: 3 * a)  # a product that computes the wrong thing
    monkeypatch.setitem(sys.modules, "cupy", wrong)
    monkeypatch.setattr(device, "_CUPY", device.UNCHECKED)
    with pytest.warns(RuntimeWarning, match="gave"):
        assert device.cupy() is None

    monkeypatch.setitem(sys.modules, "cupy", None)  # not installed: import fails
    monkeypatch.setattr(device, "_CUPY", device.UNCHECKED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device.cupy() is None
