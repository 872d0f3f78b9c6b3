"""Every Python example in the README runs and prints (or leaves behind) what the README says it
does, where that is checkable. Snippets share one namespace, in order; a complete
program (one with an `if __name__ == "__main__":` guard) runs as a script of its own, as a user
would run it: its worker processes must be able to import it."""

import importlib.util
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
PROGRAMS = [block for block in BLOCKS if 'if __name__ == "__main__":' in block]
SNIPPETS = [block for block in BLOCKS if block not in PROGRAMS]


def _check_quick_start(out, ns):
    score, n_iter, loss = (float(v) for v in out.split())
    assert score == ns["clf"].score(ns["X"] / 16, ns["y"]) > 0.99  # training accuracy
    assert n_iter == ns["clf"].n_iter_ <= 300 and loss == ns["clf"].loss_curve_[-1] < 0.05


def _check_parity(out, ns):
    assert float(out) < 1e-6  # "~1e-15": float64 loss curves equal to scikit-learn's


def _check_early_stopping(out, ns):
    n_iter, stopped, best, val_loss = out.split()
    assert stopped == "True" and int(n_iter) < 300 and float(best) > 0.9
    assert float(val_loss) == pytest.approx(ns["clf"].validation_loss_curve_[-1])
    assert ns["stream"].stopped_early_  # the partial_fit loop broke on a stall, not at 100


def _check_callback_stop(out, ns):
    stopped, n_iter = out.split()[:2]
    history = ns["history"]
    assert stopped == "True" and int(n_iter) < 200
    assert [epoch for epoch, _, _ in history] == list(range(1, int(n_iter) + 1))  # every epoch
    # It stopped after the first epoch whose validation score passed 0.9, and no earlier.
    assert history[-1][2] > 0.9 and all(score <= 0.9 for _, _, score in history[:-1])


def _check_plot(out, ns):
    model = ns["model"]
    assert out == f"{model.n_iter_} epochs, best validation accuracy " \
                  f"{model.best_validation_score_:.3f}"
    assert model.n_iter_ < 100 and model.best_validation_score_ > 0.9  # early stopping worked
    assert Path("loss_curve.png").read_bytes().startswith(b"\x89PNG")


def _check_onnx(out, ns):
    assert float(out) < 1e-5  # "~1e-7: float32 rounding"


# What each snippet prints, or leaves behind, checked against what the README says of it. The key
# is a line of the snippet; the snippets that assert for themselves (saving and loading) or print
# nothing (threads, devices) only have to run.
CHECKS = {
    "print(clf.score(X / 16, y), clf.n_iter_, clf.loss_curve_[-1])": _check_quick_start,
    "theirs.loss_curve_": _check_parity,
    "print(clf.n_iter_, clf.stopped_early_, clf.best_validation_score_": _check_early_stopping,
    "callbacks=[stop_when_good]": _check_callback_stop,
    'ax.figure.savefig("loss_curve.png")': _check_plot,
    "session.run(None": _check_onnx,
}


def test_every_check_finds_its_snippet():
    for key in CHECKS:
        assert sum(key in block for block in SNIPPETS) == 1, key


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_readme_python_examples_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    assert len(SNIPPETS) >= 2
    namespace = {}
    for block in SNIPPETS:
        if "import onnxruntime" in block and importlib.util.find_spec("onnxruntime") is None:
            warnings.warn("README's ONNX example not run: needs the onnx extra "
                          "(pip install '.[onnx]')", stacklevel=1)
            continue
        if "import skops" in block and importlib.util.find_spec("skops") is None:
            warnings.warn("README's skops.io example not run: needs the skops extra "
                          "(pip install '.[skops]')", stacklevel=1)
            continue
        capsys.readouterr()
        exec(compile(block, str(README), "exec"), namespace)
        out = capsys.readouterr().out.strip()
        for key, check in CHECKS.items():
            if key in block:
                check(out, namespace)


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.splitlines()[0][:40])
def test_readme_programs_run_as_scripts(program, tmp_path):
    if "dask" in program and importlib.util.find_spec("dask_ml") is None:
        pytest.skip("needs the dask extra: pip install '.[dask]'")
    script = tmp_path / "example.py"
    script.write_text(program)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-6000:]
    # Each model the program trains reports its test accuracy: all of them learned something.
    accuracies = [float(a) for a in re.findall(r"test accuracy ([0-9.]+)", result.stdout)]
    assert len(accuracies) == program.count("test accuracy") >= 1, result.stdout
    assert min(accuracies) > 0.8, result.stdout


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_demo_prints_both_contestants(capsys):
    """The README's first command, `python -m fastmlp.demo`, shortened."""
    from fastmlp import demo

    demo.main(["--dataset", "iris", "--hidden", "8", "--max-iter", "5"])
    out = capsys.readouterr().out
    for line in ("scikit-learn MLPClassifier", "fastmlp float32 (default)", "fastmlp float64",
                 "speed-up over scikit-learn"):
        assert line in out
