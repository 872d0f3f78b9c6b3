"""Would one wide first-layer product pay for a group of networks that share their mini-batches?
(issue #24)

    python bench/first_layer.py [--networks 24] [--dtype float32] [--repeats 7]

The candidates of a search over `alpha` and `learning_rate_init` with one `random_state` see
the same mini-batches, so their first layers could be one matrix product, Xb @ [W1_1 ... W1_M],
instead of M products Xb @ W1_m. fit_many keeps each network's parameters in its own flat buffer
(the layout every kernel reads), so the wide product needs the M weight matrices copied side by
side and its (B, M x H) result copied back into each network's activations, every batch; the
weight gradients likewise (the M deltas side by side, then Xb.T @ [dZ1_1 ... dZ1_M], then the
gradients copied back). This times, at W8's shapes (batches of 32 rows, 20 features, 64 hidden
units) on one BLAS thread, in microseconds per network and batch:
- separate: M products each way, as fit_many makes them;
- wide, copies included: the wide products with the copies the current layout needs;
- wide alone: the wide products without any copy (the floor of a layout that kept the
  group's first layers side by side, which every other kernel would then read strided).
Contestants alternate on every repeat; medians are printed.
"""

import argparse
import statistics
import time

import numpy as np
from numba import njit
from threadpoolctl import threadpool_limits

ROWS, FEATURES, HIDDEN = 32, 20, 64  # one W8 batch and the W2 network's first layer


@njit
def separate(n, Xb, W, Z, dZ, dW):
    """n batches: forward Z[m] = Xb @ W[m] and weight gradient dW[m] = Xb.T @ dZ[m], for each m."""
    for _ in range(n):
        for m in range(W.shape[0]):
            np.dot(Xb, W[m], Z[m])
        for m in range(W.shape[0]):
            np.dot(Xb.T, dZ[m], dW[m])


@njit
def wide_with_copies(n, Xb, W, Z, dZ, dW, W_wide, Z_wide, dZ_wide, dW_wide):
    """separate's results through one wide product each way, with the copies into and out of
    the side-by-side matrices that per-network buffers need."""
    H = W.shape[2]
    for _ in range(n):
        for m in range(W.shape[0]):
            W_wide[:, m * H:(m + 1) * H] = W[m]
        np.dot(Xb, W_wide, Z_wide)
        for m in range(W.shape[0]):
            Z[m] = Z_wide[:, m * H:(m + 1) * H]
            dZ_wide[:, m * H:(m + 1) * H] = dZ[m]
        np.dot(Xb.T, dZ_wide, dW_wide)
        for m in range(W.shape[0]):
            dW[m] = dW_wide[:, m * H:(m + 1) * H]


@njit
def wide_alone(n, Xb, W_wide, Z_wide, dZ_wide, dW_wide):
    """The two wide products alone, as if every buffer were already side by side."""
    for _ in range(n):
        np.dot(Xb, W_wide, Z_wide)
        np.dot(Xb.T, dZ_wide, dW_wide)


def problem(networks, dtype, seed=0):
    """A batch, M first layers and deltas, and the work buffers of both layouts."""
    rng = np.random.default_rng(seed)
    Xb = rng.normal(size=(ROWS, FEATURES)).astype(dtype)
    W = rng.normal(size=(networks, FEATURES, HIDDEN)).astype(dtype)
    dZ = rng.normal(size=(networks, ROWS, HIDDEN)).astype(dtype)
    Z, dW = np.empty_like(dZ), np.empty_like(W)
    wide = (np.empty((FEATURES, networks * HIDDEN), dtype),
            np.empty((ROWS, networks * HIDDEN), dtype),
            np.empty((ROWS, networks * HIDDEN), dtype),
            np.empty((FEATURES, networks * HIDDEN), dtype))
    return Xb, W, Z, dZ, dW, wide


CLOSE = {"rtol": 1e-12, "atol": 1e-12}  # float64 sums of 20 terms of order 1, in any order


def check(networks=3, dtype=np.float64):
    """The three contestants compute the same products (asserts; used by the tests)."""
    Xb, W, Z, dZ, dW, wide = problem(networks, dtype)
    separate(1, Xb, W, Z, dZ, dW)
    expected_Z, expected_dW = np.einsum("bf,mfh->mbh", Xb, W), np.einsum("bf,mbh->mfh", Xb, dZ)
    np.testing.assert_allclose(Z, expected_Z, **CLOSE)
    np.testing.assert_allclose(dW, expected_dW, **CLOSE)
    Z2, dW2 = np.full_like(Z, np.nan), np.full_like(dW, np.nan)
    wide_with_copies(1, Xb, W, Z2, dZ, dW2, *wide)
    np.testing.assert_allclose(Z2, expected_Z, **CLOSE)
    np.testing.assert_allclose(dW2, expected_dW, **CLOSE)
    W_wide, Z_wide, dZ_wide, dW_wide = wide
    wide_alone(1, Xb, W_wide, Z_wide, dZ_wide, dW_wide)
    np.testing.assert_allclose(Z_wide, np.hstack(list(expected_Z)), **CLOSE)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=24)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, default=2_000, help="batches per timing")
    args = parser.parse_args(argv)
    Xb, W, Z, dZ, dW, wide = problem(args.networks, np.dtype(args.dtype))
    contestants = {
        "separate": lambda n: separate(n, Xb, W, Z, dZ, dW),
        "wide, copies included": lambda n: wide_with_copies(n, Xb, W, Z, dZ, dW, *wide),
        "wide alone": lambda n: wide_alone(n, Xb, *wide),
    }
    times = {name: [] for name in contestants}
    with threadpool_limits(1):
        for run in contestants.values():
            run(1)  # compiled before timing
        for repeat in range(args.repeats):
            names = list(contestants)
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                began = time.perf_counter()
                contestants[name](args.batches)
                times[name].append((time.perf_counter() - began) / args.batches / args.networks)
    base = statistics.median(times["separate"])
    print(f"{args.networks} networks, {args.dtype}, batch {ROWS} x {FEATURES} -> {HIDDEN}, one "
          f"BLAS thread, medians of {args.repeats} alternated repeats")
    print("| first layer, forward and weight gradient | us per network and batch | "
          "separate / this |")
    print("| --- | --- | --- |")
    for name, figures in times.items():
        median = statistics.median(figures)
        print(f"| {name} | {median * 1e6:.2f} | {base / median:.2f}x |")
    return times


if __name__ == "__main__":
    main()
