"""Every Python example in the README runs (blocks share one namespace, in order)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_readme_python_examples_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    namespace = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert capsys.readouterr().out.strip()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_demo_prints_both_contestants(capsys):
    """The README's first command, `python -m fastmlp.demo`, shortened."""
    from fastmlp import demo

    demo.main(["--dataset", "iris", "--hidden", "8", "--max-iter", "5"])
    out = capsys.readouterr().out
    for line in ("scikit-learn MLPClassifier", "fastmlp float32 (default)", "fastmlp float64",
                 "speed-up over scikit-learn"):
        assert line in out
