"""The CPU backend: Numba @njit kernels (kernels.py), used in place on host arrays.

A backend module offers train_epoch, loss_and_gradient and predict with the signatures below
(the CUDA backend mirrors them), plus to_device / to_host / copy_to for moving arrays and empty
for work arrays; here the moves are no-ops. This module allocates each call's work buffers; the
kernels do the arithmetic.
"""

import contextlib
from typing import NamedTuple

import numpy as np

from .. import ops
from ..bundles import Network, order_lengths
from . import kernels

NAME = "cpu"

# A batch whose largest product has fewer multiply-adds than this runs BLAS on one thread: waking a
# second thread costs more than it saves, and on a shared machine a spinning BLAS thread fights
# the other process for its core. Measured on the 2-core VM (bench/RESULTS.md, "Threads"): whole
# digits fits with products of 1.3 and 3.3 M multiply-adds were faster on one thread, 13 and 26 M
# faster on two, and a fit with the other core busy took 2-4x longer on two threads.
SINGLE_THREAD_MACS = 1 << 22

_threadpools = None  # threadpoolctl's view of the loaded BLAS libraries, made on first use


class Workspace(NamedTuple):
    """Work buffers for batches of up to B rows. Per-layer slots hold every layer's rows back to
    back (U * B long, see kernels.layer_rows); a slot the network does not need is empty."""

    acts: np.ndarray     # (U * B,) activations
    pre: np.ndarray      # (U * B,) pre-activations, kept for GELU and SiLU only
    masks: np.ndarray    # (U * B,) dropout masks, with dropout only
    dropped: np.ndarray  # (U * B,) activations after dropout, with dropout only
    deltas: np.ndarray   # (U * B,) gradients with respect to pre-activations; training only
    xbuf: np.ndarray     # (B * F,) gathered input rows
    ybuf: np.ndarray     # (B * K,) gathered targets; training only
    swbuf: np.ndarray    # (B,) gathered sample weights; training only


def workspace(net, rows, n_features, n_outputs, dtype, training):
    size = int(net.layers[:, 1].sum()) * rows

    def slot(wanted, n=size):
        return np.empty(n if wanted else 0, dtype)

    keeps_z = any(ops.by_code(ops.ACTIVATIONS, code).needs_pre_activation
                  for code in (net.hidden, net.output))
    return Workspace(slot(True), slot(keeps_z),
                     slot(training and net.dropout > 0), slot(training and net.dropout > 0),
                     slot(training), slot(True, rows * n_features),
                     slot(training, rows * n_outputs), slot(training, rows))


def thread_limit(net, rows):
    """The context in which a fit of `net` on batches of `rows` rows calls this backend: BLAS
    limited to one thread when the network's products are small (see SINGLE_THREAD_MACS)."""
    global _threadpools
    largest = rows * int((net.layers[:, 0] * net.layers[:, 1]).max())
    if largest >= SINGLE_THREAD_MACS:
        return contextlib.nullcontext()
    if _threadpools is None:
        from threadpoolctl import ThreadpoolController  # scikit-learn's own dependency

        _threadpools = ThreadpoolController()
    return _threadpools.limit(limits=1, user_api="blas")


def train_epoch(state, features, Y, sw, order, batch_size, net, opt):
    """One epoch of mini-batch training, every batch in one compiled call.

    state: a bundles.TrainState, updated in place; features: bundles.Features, dense or CSR;
    Y (N, K) targets; sw (N,) sample weights; order (n,) the rows to visit, in visiting order;
    batch_size: rows per mini-batch; net: a bundles.Network; opt: a bundles.OptimizerStep.
    Returns (sum over batches of batch loss * batch rows, Adam's step counter after the epoch).
    """
    rows = max(1, min(batch_size, order.shape[0]))
    work = workspace(net, rows, features.X.shape[1], Y.shape[1], state.params.dtype, True)
    total, updates = kernels.epoch(state, work, features, Y, sw, order, batch_size, net, opt)
    if ops.counts_steps(opt.kind):  # Adam's bias correction
        return total, opt.step + int(updates)
    return total, opt.step


def train_epoch_many(states, features, Y, sw, orders, order_of, active, batch_size, nets, opts,
                     lengths=None):
    """One epoch of many models of one shape on the same data (fastmlp/many.py), in one compiled
    call: train_epoch for each active model, each batch gathered once per distinct order.

    states: a TrainState of (M, P) arrays (row m: model m); orders (G, n) int64, one row per
    distinct batch order, order_of (M,) model m's row; active (A,) the models that train;
    nets: a bundles.Networks; opts: a bundles.OptimizerSteps; lengths (G,): how many entries of
    each order an epoch visits (the rest pads shorter orders), None for all n. Returns (totals
    (M,), steps (M,)): train_epoch's two results for each active model, 0 for the others.
    Orders of different lengths take one compiled call per length (fit_many's CPU groups
    have one length; the CUDA backend trains them in one launch).
    """
    n_models = states.params.shape[0]
    active = np.asarray(active, dtype=np.int64)
    lengths = order_lengths(orders, lengths)
    if np.any(lengths != orders.shape[1]):
        return _by_length(states, features, Y, sw, orders, order_of, active, batch_size, nets,
                          opts, lengths)
    if active.shape[0] == 0:
        return np.zeros(n_models), np.zeros(n_models, dtype=np.int64)
    rows = max(1, min(batch_size, orders.shape[1]))
    n_features, n_outputs = features.X.shape[1], Y.shape[1]
    dtype = states.params.dtype
    # One model's work buffers, with every slot that any model of the group needs.
    codes = np.concatenate([nets.hidden[active], nets.output[active]])
    keeping = [code for code in codes
               if ops.by_code(ops.ACTIVATIONS, int(code)).needs_pre_activation]
    widest = Network(nets.layers, int(keeping[0] if keeping else codes[0]), 0, 0, 0.0,
                     float(nets.dropout[active].max()), 0)
    work = workspace(widest, rows, n_features, n_outputs, dtype, True)._replace(
        xbuf=np.empty(0, dtype), ybuf=np.empty(0, dtype), swbuf=np.empty(0, dtype))
    groups = orders.shape[0]
    staged = Workspace(*(np.empty(0, dtype),) * 5, np.empty((groups, rows * n_features), dtype),
                       np.empty((groups, rows * n_outputs), dtype), np.empty((groups, rows), dtype))
    totals, updates = np.zeros(n_models), np.zeros(n_models, dtype=np.int64)
    kernels.epoch_many(states, work, staged, features, Y, sw, orders, order_of, active,
                       batch_size, nets, opts, totals, updates)
    counting = np.array([ops.counts_steps(int(kind)) for kind in opts.kind], dtype=bool)
    steps = np.where(counting, opts.step + updates, opts.step)
    steps[np.setdiff1d(np.arange(n_models), active)] = 0
    return totals, steps


def _by_length(states, features, Y, sw, orders, order_of, active, batch_size, nets, opts,
               lengths):
    """train_epoch_many for orders of different lengths: one call per length, each on the
    orders of that length cut to it, for the active models that follow them."""
    n_models = states.params.shape[0]
    totals, steps = np.zeros(n_models), np.zeros(n_models, dtype=np.int64)
    order_of = np.asarray(order_of, dtype=np.int64)
    for length in np.unique(lengths[order_of[active]]):
        rows = np.flatnonzero(lengths == length)
        which = np.full(orders.shape[0], -1, dtype=np.int64)
        which[rows] = np.arange(rows.shape[0])
        part = active[lengths[order_of[active]] == length]
        got = train_epoch_many(states, features, Y, sw,
                               np.ascontiguousarray(orders[rows, :length]), which[order_of],
                               part, batch_size, nets, opts)
        totals[part], steps[part] = got[0][part], got[1][part]
    return totals, steps


def loss_and_gradient(dparams, params, features, Y, sw, net, chunk_rows):
    """Full-data-set regularised loss (returned) and its gradient dparams (P,) out, in chunks of
    at most chunk_rows rows so that memory stays bounded. Used by L-BFGS."""
    rows = max(1, min(chunk_rows, Y.shape[0]))
    work = workspace(net, rows, features.X.shape[1], Y.shape[1], params.dtype, True)
    return kernels.full_loss_and_gradient(dparams, np.empty_like(dparams), work, params,
                                          features, Y, sw, net, rows)


def predict(out, params, features, rows, net, chunk_rows):
    """Output activations out (R, K) for the input rows listed in rows (R,), in chunks of at most
    chunk_rows rows; net.dropout must be 0 (inference)."""
    chunk_rows = max(1, min(chunk_rows, rows.shape[0]))
    work = workspace(net, chunk_rows, features.X.shape[1], 0, params.dtype, False)
    kernels.predict_rows(out, work, params, features, rows, net, chunk_rows)


def to_device(array):
    return array


def to_host(array):
    return array


def empty(shape, dtype):
    """An uninitialised work array on this backend."""
    return np.empty(shape, dtype)


def check_available():
    """The CPU is always usable."""


def stack_rows(arrays):
    """An (M, P) array whose rows are copies of the M given (P,) arrays."""
    return np.stack(arrays)


def unstack_rows(stacked, arrays):
    """Copy row m of stacked into arrays[m], for each one that is not None."""
    for row, array in zip(stacked, arrays):
        if array is not None:
            array[:] = row


def copy_to(destination, host_array):
    """Overwrite a backend array in place with the contents of a host array."""
    destination[:] = host_array
