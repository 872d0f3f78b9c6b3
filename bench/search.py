"""W8: a hyper-parameter search, fastmlp's (networks trained together) against scikit-learn's.

    python bench/search.py                    # W8 on the CPU; writes its part of bench/RESULTS.md
    python bench/search.py --quick            # smoke run: small data, 2 epochs, 1 repeat
    python bench/search.py --sklearn-mlp      # also scikit-learn's search over its own MLP (slow)
    python bench/search.py --device cuda --out bench/GPU_RESULTS.md   # fastmlp's networks on a GPU
    python bench/search.py --cross-validate   # 5-fold cross_validate of one W2 network instead

W8 is 5-fold cross-validation of 24 candidates (4 alphas x 6 learning rates) of the W2 network
(make_classification 100,000 x 20, 3 classes; hidden (64, 32), adam, batch 32, float32), 10
epochs each with tol=0, so that no fit stops early. Contestants, alternated on every repeat,
medians reported:
- fastmlp.model_selection.GridSearchCV: each fold's 24 networks trained together (fit_many);
- sklearn.model_selection.GridSearchCV over fastmlp.MLPClassifier, 120 separate fits;
- (--sklearn-mlp) sklearn.model_selection.GridSearchCV over sklearn's MLPClassifier.
All with the same n_jobs (--n-jobs, default -1: every core). The two searches over fastmlp must
agree: the script checks that their cv_results_ scores are equal and says so.

--cross-validate times cross-validation of one W2 network (the first candidate) instead:
fastmlp.model_selection.cross_validate (the folds trained together) against scikit-learn's
cross_validate over fastmlp, same folds, test scores compared.
"""

import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import W2_PARAMS, load_tabular  # noqa: E402 - the shared workload definitions

GRID = {"alpha": [1e-5, 1e-4, 1e-3, 1e-2],
        "learning_rate_init": [3e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2]}
SECTION = "## W8 hyper-parameter search (bench/search.py)"
CV_SECTION = "## W8-cv cross-validation of one network (bench/search.py --cross-validate)"
OURS, THEIRS = "fastmlp GridSearchCV", "sklearn GridSearchCV over fastmlp"
CV_OURS, CV_THEIRS = "fastmlp cross_validate", "sklearn cross_validate over fastmlp"


def contestants(args):
    """{name: a function(X, y) running the whole search and returning its cv_results_}."""
    import sklearn.model_selection as skms
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    import fastmlp
    import fastmlp.model_selection as fms

    settings = dict(W2_PARAMS, max_iter=args.epochs, tol=0.0, random_state=0)
    ours = fastmlp.MLPClassifier(**settings, device=args.device)
    theirs = fastmlp.MLPClassifier(**settings, device="cpu")
    if args.cross_validate:
        first = {name: values[0] for name, values in GRID.items()}
        ours.set_params(**first)
        theirs.set_params(**first)
        return {
            CV_OURS: lambda X, y: fms.cross_validate(ours, X, y, cv=args.folds,
                                                     n_jobs=args.n_jobs),
            CV_THEIRS: lambda X, y: skms.cross_validate(theirs, X, y, cv=args.folds,
                                                        n_jobs=args.n_jobs),
        }
    runs = {
        OURS: lambda X, y: fms.GridSearchCV(
            ours, GRID, cv=args.folds, n_jobs=args.n_jobs).fit(X, y).cv_results_,
        THEIRS: lambda X, y: skms.GridSearchCV(
            theirs, GRID, cv=args.folds, n_jobs=args.n_jobs).fit(X, y).cv_results_,
    }
    if args.sklearn_mlp:
        skl = SklearnMLP(**settings)
        runs["sklearn GridSearchCV over sklearn MLP"] = lambda X, y: skms.GridSearchCV(
            skl, GRID, cv=args.folds, n_jobs=args.n_jobs).fit(X, y).cv_results_
    return runs


def run(args):
    X, y = load_tabular(args.rows)
    runs = contestants(args)
    # Warm up: compile (or load) kernels, start joblib's workers once, on a small slice.
    for search in runs.values():
        search(X[:500], y[:500])
    times = {name: [] for name in runs}
    results = {}
    for rep in range(args.repeats):
        names = list(runs)
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            started = time.perf_counter()
            results[name] = runs[name](X, y)
            times[name].append(time.perf_counter() - started)
            print(f"{name}: {times[name][-1]:.2f} s", flush=True)
    if args.cross_validate:
        ours, theirs = results[CV_OURS]["test_score"], results[CV_THEIRS]["test_score"]
        worst = float(np.max(np.abs(ours - theirs)))
        same_ranks = None
    else:
        ours, theirs = results[OURS], results[THEIRS]
        worst = float(np.max(np.abs(ours["mean_test_score"] - theirs["mean_test_score"])))
        same_ranks = bool(np.array_equal(ours["rank_test_score"], theirs["rank_test_score"]))
    return {name: float(np.median(t)) for name, t in times.items()}, times, worst, same_ranks


def markdown(args, medians, times, worst, same_ranks):
    baseline = medians[CV_THEIRS if args.cross_validate else THEIRS]
    workload = (f"{args.folds}-fold cross_validate of 1 network" if args.cross_validate else
                f"{args.folds}-fold x {len(GRID['alpha']) * len(GRID['learning_rate_init'])} "
                "candidates")
    lines = [_section(args), "",
             f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.machine()}, "
             f"load average before/after {args.load_before:.1f}/{os.getloadavg()[0]:.1f}, "
             f"{os.cpu_count()} cores, n_jobs={args.n_jobs}, fastmlp device={args.device}; "
             f"{workload}, {args.rows} rows, {args.epochs} epochs, {args.repeats} repeat(s)"
             + (" (QUICK smoke run)" if args.quick else "") + ".", "",
             "| contestant | median s | all s | speed-up over scikit-learn's, over fastmlp |",
             "| --- | --- | --- | --- |"]
    for name, median in medians.items():
        lines.append(f"| {name} | {median:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} "
                     f"| {baseline / median:.2f}x |")
    if args.cross_validate:
        lines += ["", f"Test scores of the two fastmlp cross-validations: largest difference "
                  f"{worst:.3g}.", ""]
    else:
        lines += ["", f"cv_results_ of the two fastmlp searches: largest mean_test_score "
                  f"difference {worst:.3g}, ranks {'identical' if same_ranks else 'DIFFERENT'}.",
                  ""]
    return "\n".join(lines)


def _section(args):
    return CV_SECTION if args.cross_validate else SECTION


def write_section(path, text, section):
    """Replace this script's section of `path` (or add it at the end)."""
    old = path.read_text() if path.exists() else ""
    if section in old:
        before, rest = old.split(section, 1)
        after = rest[rest.find("\n## "):] if "\n## " in rest else ""
        new = before + text + after
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10,000 rows, 2 epochs, 1 repeat")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-jobs", type=int, default=-1)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="where fastmlp's own search trains its networks")
    p.add_argument("--cross-validate", action="store_true",
                   help="time cross_validate of one network instead of the search")
    p.add_argument("--sklearn-mlp", action="store_true",
                   help="add scikit-learn's search over its own MLP (minutes per repeat)")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md",
                   help="file whose W8 section is (re)written; '-' prints only")
    args = p.parse_args(argv)
    if args.cross_validate and args.sklearn_mlp:
        p.error("--sklearn-mlp adds a contestant to the search; --cross-validate has none")
    if args.quick:
        args.rows, args.epochs, args.repeats = 10_000, 2, 1
    return args


def main(argv=None):
    args = parse(argv)
    args.load_before = os.getloadavg()[0]  # other work on the machine skews every figure
    warnings.filterwarnings("ignore", message=".*Maximum iterations.*")
    text = markdown(args, *run(args))
    print(text)
    if str(args.out) != "-":
        write_section(args.out, text, _section(args))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
