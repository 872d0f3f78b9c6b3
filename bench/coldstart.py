"""Cold start: whole fresh processes timed from outside, side by side in one run.

Contestants, each a new Python process that imports its library and fits scikit-learn's digits
(5 epochs, float32 default for fastmlp), alternated round by round:
  - scikit-learn;
  - fastmlp with an empty compiled-code cache (NUMBA_CACHE_DIR a new empty directory each time);
  - fastmlp with a warm cache (a directory filled once beforehand);
and the demo's first run (`python -m fastmlp.demo`, empty cache), whose compile line is read.
Prints medians and ratios to scikit-learn (and writes them to --output as JSON). Run:
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


ROOT = Path(__file__).resolve().parent.parent


def _run(args, cache_dir=None):
    env = dict(os.environ)
    # The working tree's fastmlp, whatever is installed (as bench/compare.py does).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                            check=True)
    return time.perf_counter() - started, result.stdout


def measure(rounds, demo=True):
    """{"medians_s", "ratio_to_sklearn", "times_s", "demo_first_run_s", "demo_compile_line_s"}
    over `rounds` alternated rounds of fresh processes (see the module docstring)."""
    times = {"scikit-learn": [], "fastmlp, empty cache": [], "fastmlp, warm cache": []}
    with tempfile.TemporaryDirectory() as warm:
        _run(["-c", SCRIPTS["fastmlp"]], warm)  # fill the warm cache once
        for _ in range(rounds):
            times["scikit-learn"].append(_run(["-c", SCRIPTS["scikit-learn"]])[0])
            with tempfile.TemporaryDirectory() as empty:
                times["fastmlp, empty cache"].append(_run(["-c", SCRIPTS["fastmlp"]], empty)[0])
            times["fastmlp, warm cache"].append(_run(["-c", SCRIPTS["fastmlp"]], warm)[0])
    base = statistics.median(times["scikit-learn"])
    report = {"rounds": rounds, "medians_s": {}, "ratio_to_sklearn": {},
              "times_s": {name: [round(t, 3) for t in values] for name, values in times.items()},
              "demo_first_run_s": None, "demo_compile_line_s": None}
    for name, values in times.items():
        report["medians_s"][name] = round(statistics.median(values), 3)
        report["ratio_to_sklearn"][name] = round(statistics.median(values) / base, 2)
    if demo:
        with tempfile.TemporaryDirectory() as empty:
            demo_s, out = _run(["-m", "fastmlp.demo"], empty)
        compile_line = re.search(r"compile[^:]*: ([0-9.]+) s", out)
        report["demo_first_run_s"] = round(demo_s, 2)
        report["demo_compile_line_s"] = float(compile_line.group(1)) if compile_line else None
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
    print(f"python -m fastmlp.demo, empty cache: {report['demo_first_run_s']} s in all, compile "
          f"line {report['demo_compile_line_s']} s")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
