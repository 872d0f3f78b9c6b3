"""`python -m fastmlp.compile`: compile the kernels a kind of fit needs and store them in numba's
on-disk cache, ahead of time (container images, cluster nodes, CI caches).

Each combination of dtype, solver and hidden activation is one small fit of a classifier
(multiclass and binary heads) and a regressor, plus a prediction, so that later fits of that kind
start from the cache. It writes nothing but numba's cache (NUMBA_CACHE_DIR, or __pycache__
beside the package).
"""

import argparse
import time
import warnings

import numpy as np

from .codes import ACTIVATION_CODES

_SOLVERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop", "lbfgs")
_HIDDEN = sorted(set(ACTIVATION_CODES) - {"softmax", "exp"})


def prepare(dtypes=("float32",), solvers=("adam",), activations=("relu",)):
    """Compile (or load from the cache) the kernels of every combination; returns seconds."""
    from sklearn.exceptions import ConvergenceWarning

    from .estimators import MLPClassifier, MLPRegressor

    rng = np.random.RandomState(0)
    X = rng.normal(size=(20, 3))
    y_multi, y_binary, y_real = np.arange(20) % 3, np.arange(20) % 2, rng.normal(size=20)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for dtype in dtypes:
            for solver in solvers:
                for activation in activations:
                    params = dict(hidden_layer_sizes=(4,), max_iter=1, dtype=dtype,
                                  solver=solver, activation=activation)
                    for model, y in ((MLPClassifier(**params), y_multi),
                                     (MLPClassifier(**params), y_binary),
                                     (MLPRegressor(**params), y_real)):
                        model.fit(X, y).predict(X)
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastmlp.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", nargs="+", choices=("float32", "float64"),
                        default=["float32"], help="dtypes to prepare (default: float32)")
    parser.add_argument("--solver", nargs="+", choices=_SOLVERS, default=["adam"],
                        help="solvers to prepare (default: adam)")
    parser.add_argument("--activation", nargs="+", choices=_HIDDEN, default=["relu"],
                        help="hidden activations to prepare (default: relu)")
    args = parser.parse_args(argv)
    seconds = prepare(args.dtype, args.solver, args.activation)
    print(f"fastmlp kernels ready for dtype {' '.join(args.dtype)}, solver "
          f"{' '.join(args.solver)}, activation {' '.join(args.activation)}: {seconds:.1f} s")


if __name__ == "__main__":
    main()
