"""`python -m fastmlp.demo`: fastmlp and scikit-learn side by side on a bundled data set.

Fits both with the same parameters on scikit-learn's digits (or another bundled set) and prints
test accuracy and fit time. The first fastmlp fit in a fresh install also compiles the kernels;
that one-off cost is measured and shown separately.
"""

import argparse
import time
import warnings

from sklearn import datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SklearnMLP
from sklearn.preprocessing import StandardScaler

from fastmlp import MLPClassifier

LOADERS = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
           "iris": datasets.load_iris, "wine": datasets.load_wine}


def _timed_fit(model, X, y):
    start = time.perf_counter()
    model.fit(X, y)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(LOADERS), default="digits")
    parser.add_argument("--hidden", type=int, nargs="+", default=[100],
                        help="hidden layer widths (default: 100, scikit-learn's default)")
    parser.add_argument("--max-iter", type=int, default=200)
    args = parser.parse_args(argv)

    X, y = LOADERS[args.dataset](return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    params = dict(hidden_layer_sizes=tuple(args.hidden), max_iter=args.max_iter, random_state=0)

    warnings.simplefilter("ignore", ConvergenceWarning)
    # Compiles the kernels for both dtypes on first use (or loads them from numba's cache), so
    # that the timed fits below measure training only.
    started = time.perf_counter()
    for dtype in ("float32", "float64"):
        warm_up = MLPClassifier(hidden_layer_sizes=params["hidden_layer_sizes"], max_iter=1,
                                dtype=dtype).fit(X_train[:50], y_train[:50])
        warm_up.score(X_test[:10], y_test[:10])
    compile_s = time.perf_counter() - started
    print(f"{args.dataset}: {X_train.shape[0]} training rows, {X.shape[1]} features, "
          f"hidden layers {params['hidden_layer_sizes']}")
    print(f"kernel compile / cache load (first call only): {compile_s:.2f} s\n")
    print(f"{'model':<32}{'test accuracy':>14}{'fit time (s)':>14}")
    rows = [("scikit-learn MLPClassifier", SklearnMLP(**params)),
            ("fastmlp float32 (default)", MLPClassifier(**params)),
            ("fastmlp float64", MLPClassifier(dtype="float64", **params))]
    times = {}
    for name, model in rows:
        times[name] = _timed_fit(model, X_train, y_train)
        print(f"{name:<32}{model.score(X_test, y_test):>14.4f}{times[name]:>14.3f}")
    base = times[rows[0][0]]
    print(f"\nspeed-up over scikit-learn: {base / times[rows[1][0]]:.1f}x (float32), "
          f"{base / times[rows[2][0]]:.1f}x (float64)")


if __name__ == "__main__":
    main()
