"""Cold start: whole fresh processes timed from outside, side by side in one run.

Contestants, each a new Python process that imports its library and fits scikit-learn's digits
(5 epochs, float32 default for fastmlp), alternated round by round:
  - scikit-learn;
  - fastmlp as `pip install .` leaves it: a copy of the package whose kernels the build step
    compiled into its own __pycache__ (setup.py's compile_into, run once beforehand; no
    NUMBA_CACHE_DIR);
  - fastmlp with an empty compiled-code cache (NUMBA_CACHE_DIR a new empty directory each time);
  - fastmlp with a warm cache (a directory filled once beforehand);
then, once each: the first fit of a configuration the defaults did not use (gelu, adamw,
dropout 0.2, float64) in the installed copy, with its compile seconds (numba's compile events);
and the demo's first run (`python -m fastmlp.demo`) installed and with an empty cache, whose
compile line is read. Prints medians and ratios to scikit-learn (and writes them to --output as
JSON). Run:
    python bench/coldstart.py [--rounds 5] [--output coldstart.json]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIT = ("from sklearn.datasets import load_digits; X, y = load_digits(return_X_y=True); "
       "import warnings; warnings.simplefilter('ignore'); "
       "{cls}(hidden_layer_sizes=(100,), max_iter=5, random_state=0).fit(X / 16, y)")
SCRIPTS = {
    "scikit-learn": "from sklearn.neural_network import MLPClassifier; "
                    + FIT.format(cls="MLPClassifier"),
    "fastmlp": "from fastmlp import MLPClassifier; " + FIT.format(cls="MLPClassifier"),
}


NEW_CONFIGURATION = (
    "import time; from sklearn.datasets import load_digits; X, y = load_digits(return_X_y=True); "
    "import warnings; warnings.simplefilter('ignore'); from fastmlp import MLPClassifier; "
    "from fastmlp.config import compile_seconds; "
    "MLPClassifier(max_iter=5, random_state=0).fit(X / 16, y); before = compile_seconds(); "
    "t = time.perf_counter(); MLPClassifier(activation='gelu', solver='adamw', dropout=0.2, "
    "dtype='float64', max_iter=5, random_state=0).fit(X / 16, y); "
    "print(time.perf_counter() - t, compile_seconds() - before)")

ROOT = Path(__file__).resolve().parent.parent


def _installed_copy(folder):
    """The package as `pip install .` builds it: copied, then compiled by setup.py's hook."""
    import importlib.util
    import shutil

    shutil.copytree(ROOT / "fastmlp", Path(folder) / "fastmlp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("fastmlp_setup", ROOT / "setup.py")
    setup_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup_script)
    if not setup_script.compile_into(str(folder)):
        raise RuntimeError("setup.py's compile step failed")
    return folder


def _run(args, cache_dir=None, package=ROOT):
    """Seconds and standard output of a fresh Python process running `args`, importing fastmlp
    from `package` (the working tree by default), with NUMBA_CACHE_DIR=cache_dir (None: unset,
    so numba uses the __pycache__ folders beside the package)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package), env.get("PYTHONPATH")]))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                            check=True)
    return time.perf_counter() - started, result.stdout


def _demo_compile_seconds(out):
    """The compile seconds the demo printed (0 when it loaded the kernels from a cache)."""
    line = re.search(r"compiling the kernels[^:]*: ([0-9.]+) s", out)
    return float(line.group(1)) if line else 0.0


def measure(rounds, demo=True):
    """{"medians_s", "ratio_to_sklearn", "times_s", "new_configuration", "demo"} over `rounds`
    alternated rounds of fresh processes (see the module docstring)."""
    names = ("scikit-learn", "fastmlp, after pip install .", "fastmlp, empty cache",
             "fastmlp, warm cache")
    times = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as site:
        installed = _installed_copy(site)
        _run(["-c", SCRIPTS["fastmlp"]], warm)  # fill the warm cache once
        for _ in range(rounds):
            times["scikit-learn"].append(_run(["-c", SCRIPTS["scikit-learn"]])[0])
            times["fastmlp, after pip install ."].append(
                _run(["-c", SCRIPTS["fastmlp"]], package=installed)[0])
            with tempfile.TemporaryDirectory() as empty:
                times["fastmlp, empty cache"].append(_run(["-c", SCRIPTS["fastmlp"]], empty)[0])
            times["fastmlp, warm cache"].append(_run(["-c", SCRIPTS["fastmlp"]], warm)[0])
        fit_s, compile_s = map(float, _run(["-c", NEW_CONFIGURATION], package=installed)[1]
                               .split()[-2:])
        report_demo = {}
        if demo:
            demo_s, out = _run(["-m", "fastmlp.demo"], package=installed)
            report_demo["after pip install ."] = {"run_s": round(demo_s, 2),
                                                  "compile_s": _demo_compile_seconds(out)}
            with tempfile.TemporaryDirectory() as empty:
                demo_s, out = _run(["-m", "fastmlp.demo"], empty)
            report_demo["empty cache"] = {"run_s": round(demo_s, 2),
                                          "compile_s": _demo_compile_seconds(out)}
    base = statistics.median(times["scikit-learn"])
    report = {"rounds": rounds, "medians_s": {}, "ratio_to_sklearn": {},
              "times_s": {name: [round(t, 3) for t in values] for name, values in times.items()},
              "new_configuration": {"fit_s": round(fit_s, 3), "compile_s": round(compile_s, 3)},
              "demo": report_demo}
    for name, values in times.items():
        report["medians_s"][name] = round(statistics.median(values), 3)
        report["ratio_to_sklearn"][name] = round(statistics.median(values) / base, 2)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    report = measure(args.rounds)
    print(f"{'process (import + digits fit, 5 epochs)':<42}{'median s':>10}{'x sklearn':>11}"
          f"{'min':>8}{'max':>8}")
    for name, values in report["times_s"].items():
        print(f"{name:<42}{report['medians_s'][name]:>10.2f}"
              f"{report['ratio_to_sklearn'][name]:>11.2f}{min(values):>8.2f}{max(values):>8.2f}")
    new = report["new_configuration"]
    print(f"first fit of gelu/adamw/dropout/float64 after the defaults (installed): "
          f"{new['fit_s']:.2f} s, of which compiling {new['compile_s']:.2f} s")
    for where, demo in report["demo"].items():
        print(f"python -m fastmlp.demo, {where}: {demo['run_s']} s in all, compiling "
              f"{demo['compile_s']} s")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
