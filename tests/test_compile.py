"""Compiling ahead of time: `python -m fastmlp.compile`, and the package build that runs it
(setup.py), leave no fit of any configuration anything to compile."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a fresh process: fit and predict models covering every registry entry (fastmlp/ops.py),
# both dtypes, dropout, sparse input, early stopping, partial_fit and fit_many, counting numba's
# compile events for fastmlp's code (a cache hit loads code and raises no compile event).
_FIT_EVERYTHING_AND_COUNT = """
import warnings
warnings.simplefilter("ignore")
import numpy as np
import scipy.sparse as sp
from numba.core import event
import fastmlp
from fastmlp import ops

compiled = []

class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(getattr(ev.data["dispatcher"], "__qualname__", "?"))
    def on_end(self, ev):
        pass

print("from", fastmlp.__file__)
rng = np.random.RandomState(0)
X = rng.uniform(size=(40, 5))
y = np.arange(40) % 3
event.register("numba:compile", Count())
for dtype in ("float32", "float64"):
    for activation in ops.HIDDEN_ACTIVATIONS:
        for solver in ops.SOLVERS:
            params = dict(hidden_layer_sizes=(6,), max_iter=2, activation=activation,
                          solver=solver, dtype=dtype, random_state=0)
            fastmlp.MLPClassifier(**params).fit(X, y).predict_proba(X)
            fastmlp.MLPClassifier(**params).fit(X, y == 1).predict(X)
    for loss in ops.REGRESSION_LOSSES:
        fastmlp.MLPRegressor(max_iter=2, loss=loss, dtype=dtype).fit(X, y).predict(X)
    fastmlp.MLPClassifier(max_iter=3, dropout=0.3, early_stopping=True, dtype=dtype,
                          validation_fraction=0.3).fit(sp.csr_matrix(X), y)
    fastmlp.MLPClassifier(dtype=dtype).partial_fit(X, y, classes=[0, 1, 2]).predict(X)
    fastmlp.fit_many([fastmlp.MLPClassifier(max_iter=2, dtype=dtype, dropout=dropout,
                                            activation="gelu")
                      for dropout in (0.0, 0.2)], sp.csr_matrix(X), y)
    fastmlp.fit_many([fastmlp.MLPRegressor(max_iter=2, dtype=dtype) for _ in range(2)], X, y)
print("compiled:", len(compiled), compiled[:5])
"""


def _python(args, **env):
    """Standard output and error of a fresh Python process running `args`."""
    result = subprocess.run([sys.executable, *args], env=dict(os.environ, **env),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_the_command_prepares_every_configuration_in_one_go(tmp_path):
    cache = str(tmp_path / "cache")
    out = _python(["-m", "fastmlp.compile", "--dtype", "float32", "float64"], NUMBA_CACHE_DIR=cache,
                  PYTHONPATH=str(ROOT))
    assert "fastmlp kernels ready for float32 and float64 in numba's on-disk cache" in out
    assert out.count("fastmlp: compiling its CPU kernels") == 1  # said once, not per dtype
    # numba makes one folder per source folder (cpu_<hash>, and an empty one for config.py)
    assert {p.name.split("-")[0] for p in Path(cache).rglob("*.nbi")} == {
        "kernels.epoch", "kernels.epoch_many", "kernels.full_loss_and_gradient",
        "kernels.output_delta_and_loss", "kernels.predict_rows"}
    out = _python(["-c", _FIT_EVERYTHING_AND_COUNT], NUMBA_CACHE_DIR=cache,
                  PYTHONPATH=str(ROOT))
    assert "compiled: 0 []" in out, out
    assert "fastmlp: compiling" not in out  # nothing compiled, nothing said


def test_the_package_build_ships_compiled_kernels(tmp_path):
    """setup.py's build step compiles into the copy of the package being built: that copy,
    imported with no other cache, fits everything without compiling."""
    build = tmp_path / "build"
    shutil.copytree(ROOT / "fastmlp", build / "fastmlp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("fastmlp_setup", ROOT / "setup.py")
    setup_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_script)  # defines the hook; setup() runs only as __main__
    assert setup_script.compile_into(str(build))
    shipped = sorted(p.name for p in (build / "fastmlp" / "cpu" / "__pycache__").glob("*.nbi"))
    assert [name.split("-")[0] for name in shipped] == [
        "kernels.epoch", "kernels.epoch_many", "kernels.full_loss_and_gradient",
        "kernels.output_delta_and_loss", "kernels.predict_rows"]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(build))
    result = subprocess.run([sys.executable, "-c", _FIT_EVERYTHING_AND_COUNT], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"from {build}" in result.stdout
    assert "compiled: 0 []" in result.stdout, result.stdout


def test_the_command_rejects_unknown_choices(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "fastmlp.compile", "--dtype", "float16"],
                            env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "invalid choice: 'float16'" in result.stderr


class _Event:
    """A stand-in for numba's compile event, for a dispatcher of module `module`."""

    def __init__(self, module):
        self.data = {"dispatcher": type("Dispatcher", (), {
            "py_func": type("F", (), {"__module__": module})})()}


def test_the_compile_watch_times_outermost_compiles_and_speaks_once(capsys, monkeypatch):
    from fastmlp import config

    clock = iter([10.0, 11.0, 12.0, 13.0, 20.0, 20.5, 30.0, 30.0])
    monkeypatch.setattr(config.time, "perf_counter", lambda: next(clock))
    watch = config._CompileWatch()
    ours, other = _Event("fastmlp.cpu.kernels"), _Event("numba.np.linalg")
    watch.on_start(ours)   # 10
    watch.on_start(ours)   # 11: a callee, inside
    watch.on_start(other)  # not fastmlp's: ignored
    watch.on_end(ours)     # 12
    watch.on_end(ours)     # 13: the outermost ends: 3 s
    watch.on_start(ours)   # 20
    watch.on_end(ours)     # 20.5: another 0.5 s
    assert watch.seconds == 3.5
    assert capsys.readouterr().err.count("fastmlp: compiling its CPU kernels") == 1


def test_compiling_is_kept_out_of_epoch_times_and_the_progress_clock(monkeypatch):
    """A first epoch that compiles for 100 s (simulated) is recorded and shown without them."""
    import numpy as np

    import fastmlp
    from fastmlp import callbacks, training

    compiled = {"seconds": 0.0}
    clock = {"now": 1000.0}  # a fake clock: only the simulated compile moves it

    def compile_seconds():
        return compiled["seconds"]

    real_epoch = training.backend("cpu").train_epoch

    def compiling_epoch(*args):
        if compiled["seconds"] == 0:  # as if this epoch had compiled for 100 s first
            compiled["seconds"] += 100.0
            clock["now"] += 100.0
        return real_epoch(*args)

    monkeypatch.setattr(training, "compile_seconds", compile_seconds)
    monkeypatch.setattr(callbacks, "compile_seconds", compile_seconds)
    monkeypatch.setattr(training.backend("cpu"), "train_epoch", compiling_epoch)
    for module in (training, callbacks):
        monkeypatch.setattr(module.time, "perf_counter", lambda: clock["now"])
    records, bars = [], []

    class Bar(callbacks.ProgressBar):
        def __init__(self, total, stream=None):
            super().__init__(total, stream)
            bars.append(self)

    monkeypatch.setattr(training, "ProgressBar", Bar)
    X = np.random.RandomState(0).normal(size=(40, 3))
    fastmlp.MLPClassifier(max_iter=2, progress_bar=True, callbacks=[records.append]).fit(
        X, X[:, 0] > 0)
    assert [r.seconds for r in records] == [0.0, 0.0]
    assert bars[0].started == 1100.0  # the bar's clock starts after the compile


# Each kind of kernel call, on fixed data, printing a digest of what it computed: run one kind per
# process to fill a cache piecemeal, or all kinds in one process to read it back.
_EACH_KIND = """
import hashlib, sys, warnings
warnings.simplefilter("ignore")
import numpy as np, scipy.sparse as sp
from fastmlp import cpu, ops
from fastmlp.bundles import Network, Networks, OptimizerStep, OptimizerSteps, TrainState
from fastmlp.layout import Layout
from fastmlp.training import as_features

def digest(*arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()

rng = np.random.RandomState(0)
layout = Layout((4, 5, 3, 2))
X = rng.normal(size=(10, 4))
X[np.abs(X) < 0.6] = 0
Y, sw = rng.normal(size=(10, 2)), rng.uniform(0.5, 2, 10)
start = rng.uniform(-0.6, 0.6, layout.n_params)
net = Network(layout.table, ops.ACTIVATION["tanh"].code, ops.ACTIVATION["identity"].code,
              ops.LOSS["squared_error"].code, 0.01, 0.3, 99)
adam = OptimizerStep(ops.OPTIMIZER["adam"].code, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.0, 5)
relu = Network(layout.table, ops.ACTIVATION["relu"].code, ops.ACTIVATION["softmax"].code,
               ops.LOSS["log_loss"].code, 0.0, 0.0, 0)
for kind in sys.argv[1:]:
    p = start.copy()
    state = TrainState(p, np.empty_like(p), np.zeros_like(p), np.zeros_like(p))
    if kind == "train":
        backwards = np.arange(10)[::-1].copy()
        cpu.train_epoch(state, as_features(sp.csr_matrix(X)), Y, sw, backwards, 4, net, adam)
        print(kind, digest(*state))
    elif kind == "predict":
        out = np.empty((7, 2))
        cpu.predict(out, p, as_features(X), np.array([3, 1, 4, 1, 5, 9, 2]), relu, 3)
        print(kind, digest(out))
    elif kind == "gradient":
        loss = cpu.loss_and_gradient(state.dparams, p, as_features(X), Y, sw, net._replace(
            dropout=0.0, hidden=ops.ACTIVATION["gelu"].code), 4)
        print(kind, digest(state.dparams, np.array(loss)))
    elif kind == "many":
        states = TrainState(*(np.stack([a, a]) for a in state))
        opts = [adam, adam._replace(kind=ops.OPTIMIZER["rmsprop"].code, rho=0.9)]
        cpu.train_epoch_many(states, as_features(X), Y, sw, np.stack([np.arange(10)]),
                             np.zeros(2, dtype=np.int64), np.arange(2), 4,
                             Networks.of([relu._replace(loss=ops.LOSS["squared_error"].code,
                                                        output=ops.ACTIVATION["identity"].code),
                                          net]), OptimizerSteps.of(opts))
        print(kind, digest(*states))
"""


def test_a_cache_filled_by_several_processes_computes_what_one_process_does(tmp_path):
    """numba names compiled code by qualified name and a per-process counter: kernels cached by
    different processes must not mix up two different functions that once shared a name (they
    did: each operation's loop was one inner function, and predictions came out wrong)."""
    kinds = ["predict", "train", "gradient", "many"]
    piecemeal, whole = str(tmp_path / "piecemeal"), str(tmp_path / "whole")
    for kind in kinds:  # each process compiles only what its call needs
        _python(["-c", _EACH_KIND, kind], NUMBA_CACHE_DIR=piecemeal, PYTHONPATH=str(ROOT))
    mixed = _python(["-c", _EACH_KIND, *kinds], NUMBA_CACHE_DIR=piecemeal, PYTHONPATH=str(ROOT))
    alone = _python(["-c", _EACH_KIND, *kinds], NUMBA_CACHE_DIR=whole, PYTHONPATH=str(ROOT))
    lines = sorted(line for line in alone.splitlines() if line.split(" ")[0] in kinds)
    assert len(lines) == len(kinds)
    assert sorted(line for line in mixed.splitlines() if line.split(" ")[0] in kinds) == lines
