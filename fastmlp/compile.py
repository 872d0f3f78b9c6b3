"""`python -m fastmlp.compile`: compile every CPU kernel ahead of time, into numba's on-disk cache.

The kernels take the operations (activations, losses, optimizers), dropout and dense or sparse
input as run-time values, so one compilation per dtype serves every configuration: after this,
no fit compiles anything. Building the package runs it (setup.py), so `pip install .` ships the
compiled kernels inside the package; run it yourself after an editable install, in a container
image, or with NUMBA_CACHE_DIR set where the package directory is read-only. It writes nothing
but numba's cache, and needs numba, numpy and scipy only (no scikit-learn), so that it also runs
in pip's isolated build environment.
"""

import argparse
import sys
import time

import numpy as np

DTYPES = ("float32", "float64")


def _call_every_kernel(dtype):
    """Run each compiled entry point once on a tiny problem, with arguments of exactly the types
    fits pass (bundles built as fastmlp.training and fastmlp.optimizers build them)."""
    import scipy.sparse as sp

    from . import cpu, ops
    from .bundles import Features, Network, OptimizerStep, TrainState
    from .cpu import kernels
    from .layout import Layout

    rng = np.random.RandomState(0)
    layout = Layout((3, 4, 2))
    params = rng.uniform(-0.5, 0.5, layout.n_params).astype(dtype)
    X = rng.normal(size=(6, 3)).astype(dtype)
    Y = np.eye(2, dtype=dtype)[np.arange(6) % 2]
    sw = np.ones(6, dtype)
    rows = np.arange(6, dtype=np.int64)
    csr = sp.csr_matrix(X)
    no_index = np.empty(0, dtype=np.int64)
    inputs = (Features(X, np.empty(0, dtype), no_index, no_index),
              Features(np.empty((0, 3), dtype), csr.data.astype(dtype),
                       csr.indices.astype(np.int64), csr.indptr.astype(np.int64)))
    net = Network(layout.table, ops.ACTIVATION["relu"].code, ops.ACTIVATION["softmax"].code,
                  ops.LOSS["log_loss"].code, 1e-4, 0.0, 0)
    opt = OptimizerStep(ops.OPTIMIZER["adam"].code, 0.001, 0.0, False, 0.9, 0.999, 1e-8, 0.0,
                        0.0, 0)
    for features in inputs:
        state = TrainState(params.copy(), np.empty_like(params), np.zeros_like(params),
                           np.zeros_like(params))
        cpu.train_epoch(state, features, Y, sw, rows, 4, net, opt)
        _train_two_together(state, features, Y, sw, rows, net, opt)
        cpu.loss_and_gradient(np.empty_like(params), params, features, Y, sw, net, 4)
        cpu.predict(np.empty((6, 2), dtype), params, features, rows, net, 4)
    kernels.output_delta_and_loss(np.empty_like(Y), Y.copy(), Y, sw, net.loss)


def _train_two_together(state, features, Y, sw, rows, net, opt):
    """cpu.train_epoch_many (fit_many's kernel) on two copies of one model."""
    from . import cpu
    from .bundles import Networks, OptimizerSteps, TrainState

    states = TrainState(*(np.stack([array, array]) for array in state))
    nets, opts = Networks.of([net, net]), OptimizerSteps.of([opt, opt])
    cpu.train_epoch_many(states, features, Y, sw, np.stack([rows, rows]),
                         np.zeros(2, dtype=np.int64), np.arange(2, dtype=np.int64), 4, nets,
                         opts)


def prepare(dtypes=DTYPES):
    """Compile (or load from the cache) every kernel for each dtype; returns seconds taken."""
    started = time.perf_counter()
    for dtype in dtypes:
        _call_every_kernel(np.dtype(dtype))
    return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m fastmlp.compile",
        description="Compile fastmlp's CPU kernels into numba's on-disk cache, once for every "
                    "configuration of each dtype, so that no later fit compiles anything.")
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=list(DTYPES),
                        help="dtypes to prepare (default: both)")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    args = parser.parse_args(argv)
    from .config import CACHE

    seconds = prepare(args.dtype)
    if not args.quiet:
        where = "numba's on-disk cache" if CACHE else "memory only (no writable cache directory)"
        print(f"fastmlp kernels ready for {' and '.join(args.dtype)} in {where}: "
              f"{seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
