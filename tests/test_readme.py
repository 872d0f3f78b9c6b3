"""Every Python example in the README runs and prints (or leaves behind) what the README says it
does, where that is checkable. Snippets share one namespace, in order; a complete
program (one with an `if __name__ == "__main__":` guard) runs as a script of its own, as a user
would run it: its worker processes must be able to import it.

Every example works after the README's own install line, `pip install .`: a code block that
needs more starts with a `# needs: MODULE, ...` line (CONTRIBUTING.md), is checked to import
nothing else, and is skipped with a warning where those modules are missing."""

import ast
import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
SHELL_BLOCKS = re.findall(r"```(?:bash|sh)\n(.*?)```", README.read_text(), flags=re.S)
PROGRAMS = [block for block in BLOCKS if 'if __name__ == "__main__":' in block]
SNIPPETS = [block for block in BLOCKS if block not in PROGRAMS]
NEEDS = re.compile(r"#\s*needs:\s*([\w., ]+?)\s*(?:\(.*\))?\s*$")


def needs(block):
    """The modules a block's first line declares it needs beyond `pip install .` (empty when it
    has no `# needs:` line)."""
    match = NEEDS.match(block.lstrip().splitlines()[0]) if block.strip() else None
    return set() if match is None else {name.strip() for name in match.group(1).split(",")}


def missing_needs(block):
    return sorted(name for name in needs(block) if importlib.util.find_spec(name) is None)


def installed_by_pip_install():
    """Top-level module names that `pip install .` provides: fastmlp, the standard library, and
    every distribution in the closure of pyproject.toml's dependencies (markers evaluated,
    extras left out), as installed here."""
    text = (ROOT / "pyproject.toml").read_text()
    declared = re.search(r"^dependencies = \[(.*?)\]", text, flags=re.S | re.M).group(1)
    todo = [Requirement(r) for r in re.findall(r'"([^"]+)"', declared)]
    closure = set()
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in closure or (requirement.marker and
                               not requirement.marker.evaluate({"extra": ""})):
            continue
        closure.add(name)
        todo += [Requirement(r) for r in importlib.metadata.requires(requirement.name) or []]
    modules = {"fastmlp", *sys.stdlib_module_names}
    for module, distributions in importlib.metadata.packages_distributions().items():
        if any(d.lower().replace("_", "-") in closure for d in distributions):
            modules.add(module)
    return modules


def imported_modules(code):
    """Top-level names of every module `code` imports (at any depth)."""
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.partition(".")[0])
    return names


def shell_python_code(block):
    """The code of each `python -c "..."` line of a shell block."""
    for line in block.splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if words[:2] == ["python", "-c"]:
            yield words[2]


# Imports that are refused, as in a fresh `pip install .`, in the processes of
# test_shell_python_lines_run_after_pip_install: whatever the environment has beyond it.
BLOCKER = """\
import importlib.abc
import sys

ALLOWED = set({allowed!r})


class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        top = name.partition(".")[0]
        if top in ALLOWED or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"No module named {{name!r}} (not installed by "
                                  "'pip install .')", name=name)


sys.meta_path.insert(0, _NotInstalled())
"""


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


def _check_search(out, ns):
    from sklearn.model_selection import RandomizedSearchCV

    ours = ns["search"]  # the random search; scikit-learn's own gives the same results
    theirs = RandomizedSearchCV(ours.estimator, ours.param_distributions, n_iter=4, cv=3,
                                random_state=0).fit(ns["X"][:600] / 16, ns["y"][:600])
    assert ours.best_params_ == theirs.best_params_
    assert list(ours.cv_results_["mean_test_score"]) == list(theirs.cv_results_["mean_test_score"])
    grid_line, random_line = out.splitlines()
    assert "mlpclassifier__alpha" in grid_line and random_line == str(ours.best_params_)


def _check_cross_validation(out, ns):
    from sklearn.model_selection import cross_val_score

    scores_line, accuracy_line = out.splitlines()
    theirs = cross_val_score(ns["pipe"], ns["X"][:600], ns["y"][:600], cv=5)
    assert scores_line == str(theirs)  # scikit-learn's own cross-validation, the same scores
    assert accuracy_line == f"{ns['results']['test_accuracy']} Pipeline"
    assert ns["results"]["test_accuracy"].min() > 0.5


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
    "print(search.fit(X[:600] / 16, y[:600]).best_params_)": _check_search,
    "print(cross_val_score(pipe, X[:600], y[:600], cv=5, n_jobs=2))": _check_cross_validation,
}


def test_readme_blocks_import_only_what_pip_install_provides():
    """The README's install line is `pip install .`: a block that imports more must say so
    on its first line (`# needs: pandas`), and name nothing it does not import."""
    provided = installed_by_pip_install()
    blocks = BLOCKS + SHELL_BLOCKS
    assert any(needs(block) for block in blocks)  # the convention is in use
    for block in blocks:
        code = [block] if block in BLOCKS else list(shell_python_code(block))
        imported = set().union(*(imported_modules(c) for c in code)) if code else set()
        extra = imported - provided
        assert extra <= needs(block), (f"imports {sorted(extra - needs(block))} beyond "
                                       f"'pip install .' without a '# needs:' line", block)
        assert needs(block) <= extra, (f"'# needs:' names {sorted(needs(block) - extra)}, "
                                       "which the block does not import", block)


def test_shell_python_lines_run_after_pip_install(tmp_path):
    """`python -c` lines run where only what `pip install .` provides can be imported: a
    library call that imports an extra by itself (load_iris(as_frame=True) needs pandas) fails
    here as it would in a fresh install."""
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(
        BLOCKER.format(allowed=sorted(installed_by_pip_install())))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "blocker"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    lines = [code for block in SHELL_BLOCKS if not needs(block)
             for code in shell_python_code(block)]
    assert lines
    for code in lines:
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (code, result.stderr[-3000:])


def test_readme_snippets_run_after_pip_install(tmp_path):
    """The unmarked Python snippets, in order, as one script, where only what `pip install .`
    provides can be imported: no snippet needs an extra by way of a library call, nor a name
    that only a marked snippet defines."""
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "sitecustomize.py").write_text(
        BLOCKER.format(allowed=sorted(installed_by_pip_install())))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path / "blocker"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = "\n".join(block for block in SNIPPETS if not needs(block))
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_blocker_refuses_what_pip_install_does_not_provide(tmp_path):
    """The check above would catch the README's old iris line."""
    pytest.importorskip("pandas")
    (tmp_path / "sitecustomize.py").write_text(
        BLOCKER.format(allowed=sorted(installed_by_pip_install())))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", "from sklearn.datasets import load_iris; "
                               "load_iris(as_frame=True)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "pandas" in result.stderr


def test_every_check_finds_its_snippet():
    for key in CHECKS:
        assert sum(key in block for block in SNIPPETS) == 1, key


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_readme_python_examples_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    assert len(SNIPPETS) >= 2
    namespace = {}
    _run_command_line_section(tmp_path)  # a snippet uses the files its commands write
    for block in SNIPPETS:
        if missing_needs(block):
            warnings.warn(f"README example not run: needs {missing_needs(block)} "
                          f"({block.splitlines()[0]})", stacklevel=1)
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
    if missing_needs(program):
        pytest.skip(f"needs {missing_needs(program)}: {program.splitlines()[0]}")
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
def test_demo_prints_both_contestants(capsys, monkeypatch):
    """The README's first command, `python -m fastmlp.demo`, shortened. Its headline compares
    against scikit-learn at its faster thread setting and says which (the fit times here are
    scripted: a busy machine where scikit-learn's default BLAS threads are 10x slower)."""
    from fastmlp import demo

    def scripted(model, X, y, threads=None):
        model.fit(X, y)
        if type(model).__module__.startswith("sklearn"):
            return 1.0 if threads == 1 else 10.0
        return 0.5 if model.dtype == "float32" else 1.0

    monkeypatch.setattr(demo, "_timed_fit", scripted)
    demo.main(["--dataset", "iris", "--hidden", "8", "--max-iter", "5"])
    out = capsys.readouterr().out
    for line in ("scikit-learn MLPClassifier, default threads (", "scikit-learn MLPClassifier, "
                 "1 thread", "fastmlp float32 (default)", "fastmlp float64",
                 "speed-up over scikit-learn at its best thread setting (1 thread): 2.0x "
                 "(float32), 1.0x (float64)",
                 "(over scikit-learn at its default threads: 20.0x (float32), 10.0x "
                 "(float64))"):
        assert line in out, out


def test_demo_limits_blas_threads_while_timing():
    from threadpoolctl import threadpool_info

    from fastmlp import demo

    seen = []

    class Probe:
        def fit(self, X, y):
            seen.append(max(p["num_threads"] for p in threadpool_info()
                            if p["user_api"] == "blas"))

    demo._timed_fit(Probe(), None, None, threads=1)
    assert seen == [1]


def _run_command_line_section(folder):
    """Run the shell lines of the README's 'Command line' section in `folder`."""
    from fastmlp.cli import main

    text = README.read_text()
    section = re.search(r"^## Command line\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M).group(1)
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "fastmlp":
                assert main(words[1:]) == 0, line
            elif words:
                subprocess.run([sys.executable, *words[1:]], cwd=folder, check=True,
                               timeout=120)
