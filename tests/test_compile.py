"""`python -m fastmlp.compile` fills numba's cache so that a later process compiles nothing."""

import os
import subprocess
import sys

# Run in a fresh process: fit and predict the kind of model the command prepared, counting numba
# compilations of fastmlp's kernels (a cache hit loads code and raises no compile event).
_FIT_AND_COUNT = """
import warnings
warnings.simplefilter("ignore")
from numba.core import event
from sklearn.datasets import load_digits
import fastmlp

compiled = []

class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(getattr(ev.data["dispatcher"], "__qualname__", "?"))
    def on_end(self, ev):
        pass

X, y = load_digits(return_X_y=True)
event.register("numba:compile", Count())
model = fastmlp.MLPClassifier(hidden_layer_sizes=(16,), max_iter=2).fit(X / 16, y)
model.predict(X / 16)
print(len(compiled))
"""


def _run(args, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_prepared_cache_leaves_nothing_to_compile(tmp_path):
    cold = int(_run(["-c", _FIT_AND_COUNT], tmp_path / "empty").strip().splitlines()[-1])
    assert cold > 0  # the counter sees compilations when there is nothing cached

    out = _run(["-m", "fastmlp.compile"], tmp_path / "prepared")
    assert "fastmlp kernels ready for dtype float32, solver adam, activation relu" in out
    warm = int(_run(["-c", _FIT_AND_COUNT], tmp_path / "prepared").strip().splitlines()[-1])
    assert warm == 0


def test_the_command_rejects_unknown_choices(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "fastmlp.compile", "--solver", "newton"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'newton'" in result.stderr
