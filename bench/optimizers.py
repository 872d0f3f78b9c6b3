"""The fused optimizer updates side by side: every solver's CPU update loop, and its W2 epoch.

    python bench/optimizers.py [--repeats 7] [--dtype float32]

Two measurements per mini-batch solver, one BLAS thread, contestants alternated on every
repeat, medians reported:
- the compiled update loop alone (fastmlp/cpu/kernels.py's update_loop, which the epoch calls
  once per batch) over W2's 3,427 parameters and W1's 235,146, in microseconds;
- a whole W2 epoch (100,000 x 20 rows, 64-32-3, batch 32, through `fit`), in microseconds per
  32-row batch.
Adam and AdamW keep two state slots, SGD, Adagrad and RMSprop one (passed to the loop twice);
a loop that does not vectorise shows as several times the others' time. Prints a table.
"""

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import W2_PARAMS, load_tabular  # noqa: E402 - the shared workload definitions

import fastmlp  # noqa: E402
from fastmlp import ops  # noqa: E402
from fastmlp.cpu import kernels  # noqa: E402

SOLVERS = ("sgd", "adam", "adagrad", "rmsprop", "adamw")
SIZES = {"W2": 3_427, "W1": 235_146}  # parameters of 20-64-32-3 and 784-256-128-10


@njit
def _updates(n, code, params, dparams, slot_1, slot_2, scalars):
    """n updates of every parameter, as the epoch makes them (weights first, then biases)."""
    n_weights = params.shape[0] * 9 // 10
    alpha, norm = params.dtype.type(1e-4), params.dtype.type(32)
    for _ in range(n):
        kernels.update_loop(code, params, dparams, slot_1, slot_2, n_weights, alpha, norm,
                            scalars, scalars)


def update_seconds(solver, n_params, dtype, calls):
    """Seconds per update of `solver` over n_params parameters (slots as the estimators pass
    them: a one-slot optimizer gets the same array twice)."""
    rng = np.random.default_rng(0)
    params, dparams = rng.normal(size=(2, n_params)).astype(dtype)
    slot_1 = np.zeros(n_params, dtype)
    slot_2 = np.zeros(n_params, dtype) if ops.OPTIMIZER[solver].slots == 2 else slot_1
    d = np.dtype(dtype).type
    scalars = ops.StepScalars(d(1e-3), d(0.9), True, d(0.9), d(0.999), d(1e-8), d(0.9),
                              d(1e-3), d(1 - 1e-5 if solver == "adamw" else 1))
    code = ops.OPTIMIZER[solver].code
    _updates(1, code, params, dparams, slot_1, slot_2, scalars)  # compiled before timing
    began = time.perf_counter()
    _updates(calls, code, params, dparams, slot_1, slot_2, scalars)
    return (time.perf_counter() - began) / calls


def epoch_seconds_per_batch(solver, X, y, dtype, **changes):
    """One W2 epoch of `solver` (after a first one that compiles and warms up), per batch;
    changes: other estimator parameters (bench/activations.py's activation)."""
    params = dict(W2_PARAMS, solver=solver, max_iter=1, tol=0.0, random_state=0, dtype=dtype,
                  **changes)
    est = fastmlp.MLPClassifier(**params).fit(X, y)
    began = time.perf_counter()
    est.set_params(warm_start=True).fit(X, y)
    return (time.perf_counter() - began) / -(-X.shape[0] // W2_PARAMS["batch_size"])


def options_and_w2(argv, description):
    """The options of the side-by-side benchmarks (this one and bench/activations.py): repeats,
    dtype and W2's rows; and W2's data in that dtype."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--rows", type=int, default=100_000, help="W2's rows (smoke: fewer)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # ConvergenceWarning: one epoch
    X, y = load_tabular(args.rows)
    return args, X.astype(args.dtype), y


def main(argv=None):
    args, X, y = options_and_w2(argv, __doc__.splitlines()[0])
    figures = {(solver, what): [] for solver in SOLVERS for what in (*SIZES, "epoch")}
    with threadpool_limits(1):
        for repeat in range(args.repeats):
            shift = repeat % len(SOLVERS)
            for solver in SOLVERS[shift:] + SOLVERS[:shift]:
                for name, n_params in SIZES.items():
                    calls = max(20, 20_000_000 // n_params)
                    figures[solver, name].append(
                        update_seconds(solver, n_params, args.dtype, calls))
                figures[solver, "epoch"].append(
                    epoch_seconds_per_batch(solver, X, y, args.dtype))
    print(f"{args.dtype}, one BLAS thread, medians of {args.repeats} alternated repeats (us)")
    print("| solver | slots | update, W2's 3,427 params | update, W1's 235,146 params "
          "| W2 epoch, per 32-row batch |")
    print("| --- | --- | --- | --- | --- |")
    for solver in SOLVERS:
        cells = [f"{statistics.median(figures[solver, what]) * 1e6:.2f}"
                 for what in (*SIZES, "epoch")]
        print(f"| {solver} | {ops.OPTIMIZER[solver].slots} | " + " | ".join(cells) + " |")
    return figures


if __name__ == "__main__":
    main()
