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
# both dtypes, dropout, sparse input, early stopping and partial_fit, counting numba's compile
# events for fastmlp's code (a cache hit loads code and raises no compile event).
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
print("compiled:", len(compiled), compiled[:5])
"""


def _python(args, **env):
    result = subprocess.run([sys.executable, *args], env=dict(os.environ, **env),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_command_prepares_every_configuration_in_one_go(tmp_path):
    cache = str(tmp_path / "cache")
    out = _python(["-m", "fastmlp.compile", "--dtype", "float32", "float64"], NUMBA_CACHE_DIR=cache,
                  PYTHONPATH=str(ROOT))
    assert "fastmlp kernels ready for float32 and float64 in numba's on-disk cache" in out
    assert any(name.endswith(".nbi") for name in os.listdir(next(Path(cache).iterdir())))
    out = _python(["-c", _FIT_EVERYTHING_AND_COUNT], NUMBA_CACHE_DIR=cache,
                  PYTHONPATH=str(ROOT))
    assert "compiled: 0 []" in out, out


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
        "kernels.epoch", "kernels.full_loss_and_gradient", "kernels.output_delta_and_loss",
        "kernels.predict_rows"]
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
