"""`python -m fastmlp.demo`: fastmlp and scikit-learn side by side on a bundled data set.

Fits both with the same parameters on scikit-learn's digits (or another bundled set) and prints
test accuracy and fit time. scikit-learn is timed at its default BLAS threads and on one thread
(on a busy machine its default can be several times slower); the speed-up is against the faster
of the two, and says which. The first fastmlp fit in a fresh install also compiles the kernels;
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
from threadpoolctl import threadpool_info, threadpool_limits  # a scikit-learn dependency

from fastmlp import MLPClassifier
from fastmlp.config import compile_seconds

LOADERS = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer,
           "iris": datasets.load_iris, "wine": datasets.load_wine}


def _timed_fit(model, X, y, threads=None):
    """Seconds to fit `model`, with BLAS limited to `threads` (None: as it is)."""
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        model.fit(X, y)
        return time.perf_counter() - start


def _default_blas_threads():
    """The BLAS thread count scikit-learn gets by default (the largest pool's)."""
    return max((pool["num_threads"] for pool in threadpool_info()
                if pool["user_api"] == "blas"), default=1)


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
    ready_s = time.perf_counter() - started
    print(f"{args.dataset}: {X_train.shape[0]} training rows, {X.shape[1]} features, "
          f"hidden layers {params['hidden_layer_sizes']}")
    if compile_seconds() > 0:  # no cache for this numba, Python and CPU (see README)
        print(f"compiling the kernels (first run only): {compile_seconds():.2f} s\n")
    else:
        print(f"kernels loaded from the compiled cache: {ready_s:.2f} s\n")
    default = _default_blas_threads()
    sklearn_rows = {f"default threads ({default})": None, "1 thread": 1}
    print(f"{'model':<48}{'test accuracy':>14}{'fit time (s)':>14}")
    rows = [(f"scikit-learn MLPClassifier, {setting}", SklearnMLP(**params), threads)
            for setting, threads in sklearn_rows.items()]
    rows += [("fastmlp float32 (default)", MLPClassifier(**params), None),
             ("fastmlp float64", MLPClassifier(dtype="float64", **params), None)]
    times = {}
    for name, model, threads in rows:
        times[name] = _timed_fit(model, X_train, y_train, threads)
        print(f"{name:<48}{model.score(X_test, y_test):>14.4f}{times[name]:>14.3f}")
    # The fair comparison is scikit-learn at its best thread setting: on a busy machine its
    # default BLAS threads can make it several times slower than on one.
    best = min((name for name, _, _ in rows[:2]), key=times.get)
    base, setting = times[best], best.split(", ", 1)[1]
    print(f"\nspeed-up over scikit-learn at its best thread setting ({setting}): "
          f"{base / times[rows[2][0]]:.1f}x (float32), {base / times[rows[3][0]]:.1f}x "
          f"(float64)")
    at_default = times[rows[0][0]]
    print(f"(over scikit-learn at its default threads: {at_default / times[rows[2][0]]:.1f}x "
          f"(float32), {at_default / times[rows[3][0]]:.1f}x (float64))")


if __name__ == "__main__":
    main()
