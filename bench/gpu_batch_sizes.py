"""Up to which batch size should the one-block kernel opt in to more shared memory? (issue #23)

    python bench/gpu_batch_sizes.py [--rows 20000] [--repeats 3]
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_batch_sizes.py --smoke    # the harness, tiny shapes

`fastmlp.cuda.launch.FUSED_OPT_IN_ROWS` (128) lets a network run its epoch in one launch of the
one-block kernel beyond the default 48 KiB of shared memory, for batches of up to that many
rows; larger batches go to the per-layer kernels. The value is an estimate from the first H200
run. This measures it: W2's network (20-64-32-3, Adam) on W2-shaped data, float32 and float64,
batches of 32 to 512 rows, one epoch on each path (the one-block kernel with the opt-in limit
lifted, and the per-layer kernels), alternated, medians of the repeats. An epoch is timed as
the difference between a 3-epoch and a 1-epoch fit, so set-up and transfers cancel out.
Prints microseconds per batch, each epoch's path as the backend reports it, and the value
FUSED_OPT_IN_ROWS should take: the largest batch size up to which the one-block kernel was
faster at every measured size in both dtypes. Needs a GPU (or the simulator with --smoke).
"""

import argparse
import statistics
import sys
import time
import warnings

from sklearn.base import clone

from fastmlp import MLPClassifier
from fastmlp.cuda import launch
from fastmlp.datasets import make_tabular

W2 = dict(hidden_layer_sizes=(64, 32), activation="relu", solver="adam", learning_rate_init=1e-3,
          alpha=1e-4, tol=0.0, n_iter_no_change=10**6, random_state=0, device="cuda")
PATHS = ("fused", "per-layer")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"],
                        choices=("float32", "float64"))
    parser.add_argument("--smoke", action="store_true",
                        help="tiny data and network, one repeat (checks the harness)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rows, args.repeats, args.batch_sizes = 12, 1, [4, 8]
    return args


def epoch_seconds(estimator, X, y, path):
    """(seconds of one epoch on `path`, the path the backend reports): a 3-epoch fit less a
    1-epoch fit, halved."""
    launch.FUSED_EPOCHS = path == "fused"
    seconds = {}
    for epochs in (1, 3):
        launch.LAST_EPOCH.update(path=None, products=())
        began = time.perf_counter()
        clone(estimator).set_params(max_iter=epochs).fit(X, y)
        seconds[epochs] = time.perf_counter() - began
    return max(seconds[3] - seconds[1], 0.0) / 2, launch.LAST_EPOCH["path"] or "none"


def opt_in_rows(table, dtypes, batch_sizes):
    """The largest batch size b such that, at every measured size up to b and in every dtype,
    the one-block kernel ran (it fitted) and was faster than the per-layer kernels; 0 when
    there is none. table[(dtype, batch)] = {"fused": (seconds, path), "per-layer": (...)}."""
    best = 0
    for batch in sorted(batch_sizes):
        for dtype in dtypes:
            fused_s, fused_path = table[dtype, batch]["fused"]
            layer_s, _ = table[dtype, batch]["per-layer"]
            if not fused_path.startswith("fused") or fused_s >= layer_s:
                return best
        best = batch
    return best


def main(argv=None):
    args = parse_args(argv)
    warnings.simplefilter("ignore")  # short fits do not converge
    features, hidden = (6, (4, 3)) if args.smoke else (20, W2["hidden_layer_sizes"])
    X, y = make_tabular(args.rows, features, 3)
    shipped = launch.FUSED_OPT_IN_ROWS, launch.FUSED_EPOCHS
    launch.FUSED_OPT_IN_ROWS = max(args.batch_sizes)  # every size may opt in; fitting decides
    samples = {}
    try:
        for dtype in args.dtypes:
            for batch in args.batch_sizes:
                net = MLPClassifier(**dict(W2, hidden_layer_sizes=hidden), batch_size=batch,
                                    dtype=dtype)
                for path in PATHS:  # compiled before timing
                    epoch_seconds(net, X[:2 * batch], y[:2 * batch], path)
                for repeat in range(args.repeats):
                    for path in PATHS if repeat % 2 == 0 else PATHS[::-1]:
                        samples.setdefault((dtype, batch, path), []).append(
                            epoch_seconds(net, X, y, path))
    finally:
        launch.FUSED_OPT_IN_ROWS, launch.FUSED_EPOCHS = shipped
    table = {}
    smoke = " (SMOKE RUN: tiny shapes)" if args.smoke else ""
    print(f"W2's network {features}-{'-'.join(map(str, hidden))}-3, {args.rows} rows, medians "
          f"of {args.repeats} alternated repeats{smoke}")
    print("| dtype | batch | one-block kernel, us per batch | its path | per-layer, us per batch "
          "| per-layer / one-block |")
    print("| --- | --- | --- | --- | --- | --- |")
    for dtype in args.dtypes:
        for batch in args.batch_sizes:
            batches = -(-args.rows // batch)
            row = {path: (statistics.median(s for s, _ in samples[dtype, batch, path]),
                          samples[dtype, batch, path][-1][1]) for path in PATHS}
            table[dtype, batch] = row
            fused_us, layer_us = (row[path][0] / batches * 1e6 for path in PATHS)
            fused_path = row["fused"][1]
            ratio = f"{layer_us / fused_us:.2f}x" if fused_us > 0 else "-"
            print(f"| {dtype} | {batch} | {fused_us:.1f} | {fused_path} | {layer_us:.1f} | "
                  f"{ratio} |")
    rows = opt_in_rows(table, args.dtypes, args.batch_sizes)
    print(f"\nFUSED_OPT_IN_ROWS should be {rows} (now {shipped[0]}): the largest batch up to "
          "which the one-block kernel was faster at every measured size, in every dtype.")
    return table


if __name__ == "__main__":
    main(sys.argv[1:])
