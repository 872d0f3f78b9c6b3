"""Every Python example in the README runs. Snippets share one namespace, in order; a complete
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
        exec(compile(block, str(README), "exec"), namespace)
    assert capsys.readouterr().out.strip()


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
