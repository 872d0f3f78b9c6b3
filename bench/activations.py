"""The hidden activations side by side on the CPU: each one's compiled loop, and its W2 epoch.

    python bench/activations.py [--repeats 7] [--dtype float32]

Two measurements per hidden activation, one BLAS thread, contestants alternated on every
repeat, medians reported:
- the compiled activation loop alone (fastmlp/cpu/kernels.py's `activate`) over one W2
  batch's hidden units (32 rows x 96 units = 3,072 values, drawn from N(0, 3)), in
  microseconds, with a copy that restores the input each time (identity's row: that copy);
- a whole W2 epoch (100,000 x 20 rows, 64-32-3, batch 32, Adam, through `fit`), in
  microseconds per 32-row batch; the activation's derivative loop runs in it too.
A loop that calls the C library per element (expf, expm1f, erff) instead of vectorising shows
as several times ReLU's time. Prints a table.
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from optimizers import epoch_seconds_per_batch, options_and_w2  # noqa: E402

from fastmlp import ops  # noqa: E402
from fastmlp.cpu import kernels  # noqa: E402

ACTIVATIONS = tuple(ops.HIDDEN_ACTIVATIONS)
BATCH_VALUES = (32, 96)  # a W2 batch's rows x hidden units (64 + 32)


@njit
def _activations(n, code, Z, work):
    """n applications of activation `code` to a fresh copy of Z."""
    for _ in range(n):
        work[:] = Z
        kernels.activate(code, work)


def loop_seconds(name, dtype, calls):
    """Seconds per application of `name`'s compiled loop to one W2 batch's hidden units, with
    the copy that restores its input (identity's figure is about that copy and the call)."""
    Z = np.random.default_rng(0).normal(scale=3.0, size=BATCH_VALUES).astype(dtype)
    work = np.empty_like(Z)
    code = ops.ACTIVATION[name].code
    _activations(1, code, Z, work)  # compiled before timing
    began = time.perf_counter()
    _activations(calls, code, Z, work)
    return (time.perf_counter() - began) / calls


def main(argv=None):
    args, X, y = options_and_w2(argv, __doc__.splitlines()[0])
    figures = {(name, what): [] for name in ACTIVATIONS for what in ("loop", "epoch")}
    with threadpool_limits(1):
        for repeat in range(args.repeats):
            shift = repeat % len(ACTIVATIONS)
            for name in ACTIVATIONS[shift:] + ACTIVATIONS[:shift]:
                figures[name, "loop"].append(loop_seconds(name, args.dtype, 2_000))
                figures[name, "epoch"].append(epoch_seconds_per_batch(
                    "adam", X, y, args.dtype, activation=name))
    relu = statistics.median(figures["relu", "epoch"])
    print(f"{args.dtype}, one BLAS thread, medians of {args.repeats} alternated repeats (us)")
    print("| activation | loop over 3,072 values | W2 epoch, per 32-row batch | epoch / ReLU's |")
    print("| --- | --- | --- | --- |")
    for name in ACTIVATIONS:
        loop, epoch = (statistics.median(figures[name, what]) for what in ("loop", "epoch"))
        print(f"| {name} | {loop * 1e6:.2f} | {epoch * 1e6:.2f} | {epoch / relu:.2f} |")
    return figures


if __name__ == "__main__":
    main()
