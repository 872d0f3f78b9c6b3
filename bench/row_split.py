"""What would both cores give a small network? (issue #12) An experiment, not used by fastmlp.

Each 32-row mini-batch of W2 (100,000 x 20, hidden (64, 32), adam, float32) is split in two:
the main thread runs forward and backward on the first half, a second thread on the other half
into its own gradient buffer; the main thread waits for it, adds the two gradients (always in
the same order, so results are reproducible for two threads), applies the fused update and
releases the next batch. The hand-offs are spin-waits on shared flags with acquire/release
atomics, since anything slower than a microsecond would eat the gain. BLAS runs on one thread
in both threads. Prints the epoch time with one thread (fastmlp's epoch kernel) and split,
quiet and with another process spinning on one core. Run: python bench/row_split.py [--epochs N]
"""

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.arrayobj import make_array
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import fastmlp  # noqa: E402
import fastmlp.cpu as cpu  # noqa: E402
from fastmlp.cpu import kernels as K  # noqa: E402
from fastmlp.numba_internals import unmanaged  # noqa: E402


def _flag_pointer(context, builder, sig, args):
    array = make_array(sig.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, sig.args[0], array, [args[1]])


@intrinsic
def load_acquire(typingctx, flags, index):
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_flag_pointer(context, builder, sig, args), "acquire", 8)
    return types.int64(flags, index), codegen


@intrinsic
def store_release(typingctx, flags, index, value):
    def codegen(context, builder, sig, args):
        builder.store_atomic(args[2], _flag_pointer(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()
    return types.none(flags, index, value), codegen


@intrinsic
def pause(typingctx):
    def codegen(context, builder, sig, args):
        hint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                              "llvm.x86.sse2.pause")
        builder.call(hint, [])
        return context.get_dummy_value()
    return types.none(), codegen


@njit(nogil=True)
def wait_until(flags, index, value):
    while load_acquire(flags, index) < value:
        pause()


RELEASED, DONE = 0, 1  # flags[RELEASED] = batches the worker may start; flags[DONE]: finished


@njit(nogil=True)
def worker_half(flags, partial, dparams, work, params, features, Y, sw, order, batch, net):
    """The second half of every batch's rows: gradient into dparams, (loss, weight sum) into
    partial, then flags[DONE] = batch number + 1."""
    dparams, work, params, features, Y, sw, order, net = unmanaged(
        (dparams, work, params, features, Y, sw, order, net))
    n = order.shape[0]
    half = batch // 2
    for b in range((n + batch - 1) // batch):
        wait_until(flags, RELEASED, b + 1)
        start = b * batch + half
        stop = min(b * batch + batch, n)
        loss, weight = 0.0, 0.0
        if start < stop:
            Xb, Yb, swb, weight = K.stage_batch(work, features, Y, sw, order[start:stop])
            loss = K.backprop(dparams, work, params, Xb, Yb, swb, net, start)
        else:
            dparams[:] = 0
        partial[0], partial[1] = loss, weight
        store_release(flags, DONE, b + 1)


@njit(nogil=True)
def main_half(flags, partial, worker_dparams, state, work, features, Y, sw, order, batch, net,
              opt):
    """The first half of every batch's rows, the sum of both halves' gradients and the update;
    returns the epoch's summed loss like kernels.epoch."""
    worker_dparams, state, work, features, Y, sw, order, net = unmanaged(
        (worker_dparams, state, work, features, Y, sw, order, net))
    n = order.shape[0]
    half = batch // 2
    layers = net.layers
    total = 0.0
    for b in range((n + batch - 1) // batch):
        store_release(flags, RELEASED, b + 1)  # the parameters are up to date for batch b
        start = b * batch
        stop = min(start + half, n)
        Xb, Yb, swb, weight = K.stage_batch(work, features, Y, sw, order[start:stop])
        loss = K.backprop(state.dparams, work, state.params, Xb, Yb, swb, net, start)
        wait_until(flags, DONE, b + 1)
        for k in range(state.dparams.shape[0]):
            state.dparams[k] += worker_dparams[k]
        loss += partial[0]
        weight += partial[1]
        rows = min(start + batch, n) - start
        squares = K.weight_squares(state.params, layers)
        total += (loss / weight + 0.5 * net.alpha * squares / weight) * rows
        K.update(state, layers[0, 3], net.alpha, weight, opt, opt.step + b + 1)
    return total


def captured_fit_arguments(X, y):
    """The arguments fastmlp's CPU backend gets for one W2 epoch (from a one-epoch fit)."""
    captured = {}
    original = cpu.train_epoch

    def spy(*args):
        captured["args"] = args
        return original(*args)

    cpu.train_epoch = spy
    try:
        fastmlp.MLPClassifier(hidden_layer_sizes=(64, 32), batch_size=32, max_iter=1,
                              random_state=0).fit(X, y)
    finally:
        cpu.train_epoch = original
    return captured["args"]


def copy_state(state):
    return type(state)(*(a.copy() for a in state))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    from sklearn.datasets import make_classification
    X, y = make_classification(n_samples=100_000, n_features=20, n_informative=12,
                               n_redundant=4, n_classes=3, random_state=0)
    X = X.astype(np.float32)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state0, features, Y, sw, order, batch, net, opt = captured_fit_arguments(X, y)
    dtype = state0.params.dtype

    def work():
        return cpu.workspace(net, batch, X.shape[1], Y.shape[1], dtype, True)

    def one_thread(state):
        return K.epoch(state, work(), features, Y, sw, order, batch, net, opt)[0]

    def two_threads(state):
        flags = np.zeros(2, np.int64)
        partial = np.zeros(2)
        worker_dparams = np.zeros_like(state.params)
        worker = threading.Thread(target=worker_half, args=(
            flags, partial, worker_dparams, work(), state.params, features, Y, sw, order, batch,
            net))
        worker.start()
        total = main_half(flags, partial, worker_dparams, state, work(), features, Y, sw, order,
                          batch, net, opt)
        worker.join()
        return total

    results = {}
    with threadpool_limits(1, user_api="blas"):
        reference = copy_state(state0)
        one_thread(reference)
        split = copy_state(state0)
        two_threads(split)
        difference = np.abs(reference.params - split.params).max()
        again = copy_state(state0)
        two_threads(again)
        reproducible = np.array_equal(split.params, again.params)
        for busy in (False, True):
            spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy \
                else None
            try:
                for name, run in (("one thread", one_thread), ("two threads", two_threads)):
                    times = []
                    for _ in range(args.epochs):
                        state = copy_state(state0)
                        started = time.perf_counter()
                        run(state)
                        times.append(time.perf_counter() - started)
                    results[(name, busy)] = times
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    n_batches = -(-len(order) // batch)
    print(f"W2 epoch ({len(order)} rows, batch {batch}, {n_batches} batches), "
          f"{args.epochs} epochs each, one BLAS thread")
    print(f"largest parameter difference after one epoch, split vs one thread: {difference:.2e}; "
          f"split runs bit-identical: {reproducible}")
    print(f"{'':12s} {'quiet median':>13s} {'quiet us/batch':>15s} {'busy median':>12s} "
          f"{'busy worst':>11s}")
    for name in ("one thread", "two threads"):
        quiet, busy = results[(name, False)], results[(name, True)]
        print(f"{name:12s} {np.median(quiet):13.4f} {np.median(quiet) / n_batches * 1e6:15.2f} "
              f"{np.median(busy):12.4f} {max(busy):11.4f}")


if __name__ == "__main__":
    main()
