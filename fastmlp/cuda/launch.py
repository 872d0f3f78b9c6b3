"""The CUDA backend's launch sequence: train_epoch, loss_and_gradient and predict on device arrays,
with the CPU backend's arguments and results.

An epoch of a network that fits in one block's shared memory is ONE launch of the persistent
kernel (fused.py), and so is an epoch of a whole group of such networks (train_epoch_many: one
block per model). A wider network can take ONE cooperative launch of the grid-wide persistent
kernel (persistent.py), off by default until measured (PERSISTENT_EPOCHS); otherwise it takes
3L + 2 launches per mini-batch of L weight layers (see
_Network), all configured once per call: no allocation, host-device copy or launch
configuration happens per batch. They are: the gather of inputs, targets and weights; per layer
one product + bias + activation; the softmax, output delta and loss; per layer the weight and
bias gradient product and, for L - 1 of them, the product + dropout mask + activation
derivative; the update, with gradient finishing and the batch's loss bookkeeping fused in.
Dropout adds a launch per hidden layer; a product made by cuBLAS (CuPy installed, at least
CUBLAS_MIN_MACS multiply-adds) becomes two launches, the cuBLAS call and its epilogue. Only the
epoch's loss comes back to the host. Imports without numba-cuda or a GPU: kernels are imported
on first use.
"""

import contextlib
import math
import types
import warnings

import numpy as np

from .. import ops
from ..bundles import (
    BIAS_OFFSET,
    FAN_IN,
    FAN_OUT,
    WEIGHT_OFFSET,
    Network,
    Networks,
    OptimizerStep,
    OptimizerSteps,
    TrainState,
    order_lengths,
)
from . import device

# Products with at least this many multiply-adds (rows x fan-in x fan-out) go to cuBLAS when
# CuPy is importable: below it, the tiled kernel's launch is as cheap as the cuBLAS call.
CUBLAS_MIN_MACS = 1 << 20


def _kernels():
    from . import kernels

    return kernels


def _fused():
    from . import fused

    return fused


def blocks(n, per_block):
    return max(1, -(-n // per_block))


def product_grid(kernels, rows, cols):
    """(grid, block) of a tiled product kernel writing a (rows, cols) result. Rows go along the
    grid's x dimension, which takes up to 2**31 - 1 blocks (y takes at most 65535)."""
    return (blocks(rows, kernels.TILE), blocks(cols, kernels.TILE)), (kernels.TILE, kernels.TILE)


def elementwise_grid(kernels, rows, cols):
    """(grid, block) of an elementwise kernel over (rows, cols): one thread per element, 1-D."""
    return blocks(rows * cols, kernels.BLOCK), kernels.BLOCK


def launcher(kernel, grid, block, shared_bytes=0):
    """`kernel` configured for (grid, block), made once per call and reused by every batch.
    numba-cuda warns about grids under 128 blocks whenever a configuration is made; small layers
    and the one-block reductions make such grids by design, so that warning is not shown."""
    if device.simulator():
        # The simulator's kernel[...] reconfigures the kernel object itself instead of
        # returning a new configuration: configure it at each launch there.
        return lambda *args: kernel[grid, block, 0, shared_bytes](*args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Grid size .* under-utilization")
        return kernel[grid, block, 0, shared_bytes]


class _Network:
    """Views of one network's parameters and device work buffers for batches of up to `rows`
    rows, made once per call of train_epoch / loss_and_gradient / predict, never per batch."""

    def __init__(self, params, layers, hidden, output, rows, n_features, n_outputs,
                 dropout=False):
        cuda = device.import_cuda()
        self.kernels = _kernels()
        self.cupy = device.cupy()
        self.table = table = device.host_table(layers)
        self.n_layers = table.shape[0]
        self.last = self.n_layers - 1
        self.hidden, self.output = hidden, output
        self.kinds = [hidden] * self.last + [output]
        self.fans = list(zip(table[:, FAN_IN].tolist(), table[:, FAN_OUT].tolist()))
        self.n_weights = int(table[0, BIAS_OFFSET])  # weights come first, then biases
        self.W, self.b = self.split(params, table)
        self.hidden_units = sum(fan_out for _, fan_out in self.fans[:-1])
        self.eps = float(np.finfo(params.dtype).eps)

        def buffers(width, wanted=True, stand_in=None):
            return cuda.device_array((rows, width), params.dtype) if wanted else stand_in

        widths = [fan_out for _, fan_out in self.fans]
        self.acts = [buffers(w) for w in widths]
        self.deltas = [buffers(w) for w in widths]
        # An array a kernel takes but never touches for this network is stood in for by acts.
        self.pre = [buffers(w, ops.by_code(ops.ACTIVATIONS, kind).needs_pre_activation, a)
                    for w, kind, a in zip(widths, self.kinds, self.acts)]
        self.masks = [buffers(w, dropout, a) for w, a in zip(widths, self.acts)]
        self.dropped = [buffers(w, dropout, a) for w, a in zip(widths, self.acts)]
        self.Xb = buffers(n_features)
        self.Yb = buffers(n_outputs)
        self.swb = cuda.device_array(rows, params.dtype)
        self._batches = {}

    @staticmethod
    def split(flat, table):
        """Per-layer (I, O) weight and (O,) bias views of a flat device buffer."""
        fan_in, fan_out = table[:, FAN_IN], table[:, FAN_OUT]
        W = [flat[w:w + i * o].reshape((i, o))
             for i, o, w in zip(fan_in, fan_out, table[:, WEIGHT_OFFSET])]
        b = [flat[bo:bo + o] for o, bo in zip(fan_out, table[:, BIAS_OFFSET])]
        return W, b

    def rows(self, n):
        """Views of the work buffers for a batch of n rows and every launch such a batch makes,
        made once per distinct n (an epoch has at most two: the batch size and the last one)."""
        if n in self._batches:
            return self._batches[n]
        kernels = self.kernels
        v = types.SimpleNamespace(n=n)
        for name in ("acts", "deltas", "pre", "masks", "dropped"):
            setattr(v, name, [a[:n] for a in getattr(self, name)])
        v.Xb, v.Yb, v.swb = self.Xb[:n], self.Yb[:n], self.swb[:n]
        v.stage = launcher(kernels.stage_batch_from, n, kernels.ROW_THREADS)
        v.gather = launcher(kernels.gather_rows_from, n, kernels.ROW_THREADS)
        v.loss = launcher(kernels.output_delta_and_loss_sums, 1, kernels.BLOCK)
        v.softmax = launcher(kernels.softmax_rows, blocks(n, kernels.BLOCK), kernels.BLOCK)
        v.cublas, v.forward, v.dropout, v.gradient, v.delta = [], [], [], [], []

        def elementwise(kernel, cols):
            return launcher(kernel, *elementwise_grid(kernels, n, cols))

        def tiled(kernel, rows, cols):
            return launcher(kernel, *product_grid(kernels, rows, cols))

        for fan_in, fan_out in self.fans:
            cublas = self.cupy is not None and n * fan_in * fan_out >= CUBLAS_MIN_MACS
            v.cublas.append(cublas)
            v.dropout.append(elementwise(kernels.dropout_forward, fan_out))
            if cublas:  # the product by cuBLAS, then its epilogue as an elementwise kernel
                v.forward.append(elementwise(kernels.bias_activate, fan_out))
                v.gradient.append(launcher(kernels.column_sums, blocks(fan_out, kernels.BLOCK),
                                           kernels.BLOCK))
                v.delta.append(elementwise(kernels.activation_backward_masked, fan_in))
            else:
                v.forward.append(tiled(kernels.dense_forward_activate, n, fan_out))
                v.gradient.append(tiled(kernels.dense_backward, fan_in + 1, fan_out))  # + bias row
                v.delta.append(tiled(kernels.backward_input, n, fan_in))
        self._batches[n] = v
        return v

    # ------------------------------------------------------------------ forward and backward
    def forward(self, v, dropout=0.0, seed=0, first_row=0, out=None):
        """Forward pass over the n rows staged in v.Xb; returns the (n, K) output activations,
        written into `out` when given. Softmax rows are left unfinished (see the callers)."""
        A = v.Xb
        unit_offset = 0
        for i in range(self.n_layers):
            Z = out if out is not None and i == self.last else v.acts[i]
            if v.cublas[i]:
                self._cublas(Z, A, self.W[i])
                v.forward[i](Z, v.pre[i], self.b[i], self.kinds[i])
            else:
                v.forward[i](Z, v.pre[i], A, self.W[i], self.b[i], self.kinds[i])
            A = Z
            if dropout > 0 and i < self.last:
                A = v.dropped[i]
                v.dropout[i](A, v.masks[i], Z, dropout, seed,
                             first_row * self.hidden_units + unit_offset, self.hidden_units)
                unit_offset += Z.shape[1]
        return Z

    def backprop(self, v, dW, db, stats, loss, dropout, seed, first_row):
        """Forward and backward over the n staged rows: unnormalised gradients into the views
        dW, db; weighted loss and weight sums added to stats (see output_delta_and_loss)."""
        P = self.forward(v, dropout, seed, first_row)
        softmax = ops.by_code(ops.ACTIVATIONS, self.output).row_wise
        v.loss(v.deltas[self.last], stats, P, v.Yb, v.swb, loss, softmax, self.eps)
        inputs = v.dropped if dropout > 0 else v.acts
        for i in range(self.last, -1, -1):
            dZ = v.deltas[i]
            A_in = v.Xb if i == 0 else inputs[i - 1]
            if v.cublas[i]:
                self._cublas(dW[i], A_in, dZ, transpose_a=True)
                v.gradient[i](db[i], dZ)
            else:
                v.gradient[i](dW[i], db[i], dZ, A_in)
            if i > 0:
                dA = v.deltas[i - 1]
                args = (v.acts[i - 1], v.pre[i - 1], v.masks[i - 1], self.hidden, dropout > 0)
                if v.cublas[i]:
                    self._cublas(dA, dZ, self.W[i], transpose_b=True)
                    v.delta[i](dA, *args)
                else:
                    v.delta[i](dA, dZ, self.W[i], *args)

    def _cublas(self, C, A, B, transpose_a=False, transpose_b=False):
        """C = op(A) @ op(B) by cuBLAS, zero-copy on the same device memory."""
        cp = self.cupy
        a, b = cp.asarray(A), cp.asarray(B)
        cp.matmul(a.T if transpose_a else a, b.T if transpose_b else b, out=cp.asarray(C))


# ---------------------------------------------------------------------------------------------
# The backend's entry points (arguments as in fastmlp/cpu/kernels.py, arrays on the device)
# ---------------------------------------------------------------------------------------------

# Whether train_epoch may run a whole epoch in one launch of the persistent kernel when the
# network fits in a block's shared memory (False: always the per-layer kernels, for comparison).
FUSED_EPOCHS = True


# Batches of up to this many rows may take the one-block kernel beyond the default 48 KiB of
# shared memory, up to the device's opt-in limit (227 KiB on an H200): W2 in float64, or W2 at
# batch 64 or 128, then stays on the one-launch path. From the H200 figures of issue #23: the
# one-block kernel took 94 us per 32-row batch of W2, its work growing with the rows, while the
# per-layer kernels took 568 us per 128-row batch and 799 us per 32-row float64 batch, mostly a
# fixed cost per batch (3L + 2 launches). At 128 rows the one-block kernel should still win
# (about 4 x 94 us); at 256 the two would be about even, so larger batches keep the default
# limit and, beyond it, the per-layer kernels. To be confirmed on a GPU by
# bench/gpu_batch_sizes.py (a step of bench/gpu_check.sh), which prints the value to set here.
FUSED_OPT_IN_ROWS = 128


def fused_shared_bytes(params, table, batch_size, n_features, n_outputs, net):
    """Dynamic shared-memory bytes the persistent epoch kernel needs for this network and batch
    size, or None when they do not fit in one block beside its static arrays. The limit is the
    device's opt-in maximum for batches of up to FUSED_OPT_IN_ROWS rows, else its default shared
    memory per block (device.shared_bytes_opt_in, device.shared_bytes_per_block)."""
    limit = (device.shared_bytes_opt_in() if batch_size <= FUSED_OPT_IN_ROWS
             else device.shared_bytes_per_block())
    return _fused_bytes(params, table, batch_size, n_features, n_outputs,
                        _needs_pre(net.hidden), net.dropout > 0, limit)


def _needs_pre(hidden):
    return ops.by_code(ops.ACTIVATIONS, int(hidden)).needs_pre_activation


def _fused_bytes(params, table, batch_size, n_features, n_outputs, keep_pre, dropping, limit):
    """fused_shared_bytes for a network whose hidden activation does (keep_pre) or does not keep
    its pre-activations and that has (dropping) or has not dropout, in at most `limit` shared
    bytes per block."""
    fused = _fused()
    n_params = params.shape[len(params.shape) - 1]  # (P,) or (M, P); the simulator's shape
    elements = fused.shared_elements(n_params, batch_size, n_features, n_outputs,
                                     int(table[:, FAN_OUT].sum()), keep_pre, dropping)
    needed = elements * params.dtype.itemsize
    if needed + fused.STATIC_SHARED_BYTES > limit:
        return None
    return needed


def group_shared_bytes(params, table, batch_size, n_features, n_outputs, nets, active):
    """fused_shared_bytes for the active models of a group (train_epoch_many): one launch gives
    every block the same dynamic shared memory, sized for the most demanding model (one that
    keeps pre-activations, one with dropout), or None when that does not fit. The limit is the
    device's opt-in maximum (device.shared_bytes_opt_in: up to 227 KiB instead of 48), which the
    launch then opts in to, whatever the batch size: the alternative for a group, one model
    after another, is slower however the one-block kernel compares with the per-layer kernels.
    (train_epoch opts in for one model only up to FUSED_OPT_IN_ROWS rows per batch.)
    """
    active = np.asarray(active, dtype=np.int64)
    return _fused_bytes(params, table, batch_size, n_features, n_outputs,
                        any(_needs_pre(nets.hidden[m]) for m in active),
                        bool(np.any(np.asarray(nets.dropout)[active] > 0)),
                        device.shared_bytes_opt_in())


def epoch_path(params, layers, batch_size, n_features, n_outputs, net):
    """"fused" when train_epoch runs this network's epochs in one launch of the one-block
    kernel, "persistent" in one cooperative launch of the grid-wide one, else "per-layer"."""
    table = device.host_table(layers)
    if FUSED_EPOCHS and fused_shared_bytes(params, table, batch_size, n_features, n_outputs,
                                           net) is not None:
        return "fused"
    if persistent_epochs_possible():
        return "persistent"
    return "per-layer"


def group_path(params, layers, batch_size, n_features, n_outputs, nets, active):
    """"fused" when train_epoch_many runs the group's epoch in one launch (one block per active
    model), else "per-layer" (one train_epoch per model)."""
    table = device.host_table(layers)
    if FUSED_EPOCHS and group_shared_bytes(params, table, batch_size, n_features, n_outputs,
                                           nets, active) is not None:
        return "fused"
    return "per-layer"


def model_of(nets, opts, m):
    """(Network, OptimizerStep) of model m of a group, every scalar a plain Python number (as
    training.network() and the optimizers make them)."""
    net = Network(nets.layers, int(nets.hidden[m]), int(nets.output[m]), int(nets.loss[m]),
                  float(nets.alpha[m]), float(nets.dropout[m]), int(nets.seed[m]))
    opt = OptimizerStep(int(opts.kind[m]), float(opts.learning_rate[m]),
                        float(opts.momentum[m]), bool(opts.nesterov[m]), float(opts.beta_1[m]),
                        float(opts.beta_2[m]), float(opts.epsilon[m]), float(opts.rho[m]),
                        float(opts.weight_decay[m]), int(opts.step[m]))
    return net, opt


def _block_tables(nets, opts, active, order_of, lengths, n_batches):
    """The persistent kernel's per-block (codes, numbers) tables (columns in fused.py) for the
    active models, as host arrays: block b trains model active[b] on the first lengths[g] rows of
    its order g. n_batches: the most batches any of them makes. Adam's step sizes are the
    CPU's ops.adam_step_size, bit for bit (_bias_corrections), 0 for the optimizers that do not
    use them."""
    fused = _fused()
    codes = np.zeros((len(active), fused.N_CODES), dtype=np.int64)
    numbers = np.zeros((len(active), fused.STEP_SIZES + n_batches), dtype=np.float64)
    corrections = {}  # models of a search mostly share their betas and step counter
    for b, m in enumerate(active):
        net, opt = model_of(nets, opts, m)
        codes[b] = (m, order_of[m], lengths[order_of[m]], net.hidden, net.output, net.loss,
                    net.seed, opt.kind, opt.nesterov)
        numbers[b, :fused.STEP_SIZES] = (net.alpha, net.dropout, opt.learning_rate,
                                         opt.momentum, opt.beta_1, opt.beta_2, opt.epsilon,
                                         opt.rho, opt.weight_decay)
        if ops.counts_steps(opt.kind):
            key = (opt.beta_1, opt.beta_2, opt.step)
            if key not in corrections:
                corrections[key] = _bias_corrections(*key, n_batches)
            root, denominator = corrections[key]
            numbers[b, fused.STEP_SIZES:] = opt.learning_rate * root / denominator
    return codes, numbers


def _bias_corrections(beta_1, beta_2, step, n_batches):
    """(sqrt(1 - beta_2 ** t), 1 - beta_1 ** t) for the updates t = step + 1 ... step +
    n_batches, as float64 arrays: learning_rate * root / denominator, elementwise, is then
    ops.adam_step_size's own expression in its own order (the powers by Python's float pow, as
    there; multiply, divide and sqrt are correctly rounded everywhere) at one NumPy operation per
    model instead of n_batches Python calls."""
    ts = [float(step + j + 1) for j in range(n_batches)]
    return (np.array([math.sqrt(1 - beta_2 ** t) for t in ts]),
            np.array([1 - beta_1 ** t for t in ts]))


def _step_sizes(opt, n_batches):
    """Adam's bias-corrected step size of every update this epoch can make, by the CPU's own
    function (bit-identical), as a float64 device array sent once per epoch; empty for the
    optimizers that do not use it."""
    if not ops.counts_steps(opt.kind):
        return device.empty(0, np.float64)
    return device.to_device(np.array(
        [ops.adam_step_size(opt.learning_rate, opt.beta_1, opt.beta_2, opt.step + j + 1)
         for j in range(n_batches)], dtype=np.float64))


# What the latest train_epoch call in this process ran, for benchmarks to report (nothing in
# fastmlp reads it back): "path" is "fused" or "persistent" (one launch per epoch) or
# "per-layer"; "products" names, per weight layer of a full per-layer batch, who made its
# products: "cublas" or "tiled"; "blocks", after a persistent epoch, the size of its grid.
LAST_EPOCH = {"path": None, "products": ()}


def train_epoch(state, features, Y, sw, order, batch_size, net, opt):
    """One epoch of mini-batch training on the device (see the CPU train_epoch): batches are
    gathered on the device from `order`; returns (sum of batch loss * batch rows, Adam's step
    counter after the epoch), the only numbers copied back. One launch per epoch when the
    network fits in a block's shared memory (epoch_path), else 3L + 2 launches per batch."""
    ops.check_codes(net, opt)
    n = order.shape[0]
    if n == 0:
        return 0.0, opt.step
    batch_size = min(batch_size, n)
    if epoch_path(state.params, net.layers, batch_size, features.X.shape[1], Y.shape[1],
                  net) == "fused":
        LAST_EPOCH.update(path="fused", products=())
        return _train_epoch_fused(state, features, Y, sw, order, batch_size, net, opt)
    if persistent_epochs_possible():  # (the persistent path's hook: see its section below)
        LAST_EPOCH.update(path="persistent", products=())
        return _train_epoch_persistent(state, features, Y, sw, order, batch_size, net, opt)
    return _train_epoch_per_layer(state, features, Y, sw, order, batch_size, net, opt)


def _train_epoch_fused(state, features, Y, sw, order, batch_size, net, opt):
    """train_epoch in one launch of the persistent kernel (fused.py): a group of one."""
    P, n = state.params.shape[0], order.shape[0]
    one = TrainState(*(a.reshape(1, P) for a in state))
    nets = Networks(net.layers, *(np.array([field]) for field in net[1:]))
    opts = OptimizerSteps(*(np.array([field]) for field in opt))
    first = np.zeros(1, dtype=np.int64)
    totals, steps = _train_group_fused(one, features, Y, sw, order.reshape(1, n), first,
                                       np.array([n]), first, batch_size, nets, opts)
    return float(totals[0]), int(steps[0])


def train_epoch_many(states, features, Y, sw, orders, order_of, active, batch_size, nets, opts,
                     lengths=None):
    """One epoch of each active model of a group of M models of one layer table and dtype, on the
    same data: for model m in active, what train_epoch(row m of states, features, Y, sw,
    orders[g, :lengths[g]] with g = order_of[m], batch_size, *model_of(nets, opts, m)) does and
    returns, as (totals (M,) float64, steps (M,) int64) host arrays, 0 for the models not in
    active (left untouched).

    states: a TrainState of (M, P) device arrays (slot_2 its own array); orders (G, n) device
    rows in visiting order; lengths (G,): how many entries of each row an epoch visits (fits on
    folds of different sizes: shorter orders padded), None for all n; order_of (M,) and active
    (A,) int64 host arrays; nets, opts: a bundles.Networks and OptimizerSteps. When the group
    fits the persistent kernel (group_path), the whole epoch is ONE launch of A blocks, block b
    training model active[b]. Otherwise the models are trained one after another with
    train_epoch on row views: correct, but not batched (each model then takes its own launches).
    """
    M = states.params.shape[0]
    active = np.asarray(active, dtype=np.int64)
    order_of = np.asarray(order_of, dtype=np.int64)
    lengths = order_lengths(orders, lengths)
    for m in active:
        ops.check_codes(*model_of(nets, opts, m))
    totals, steps = np.zeros(M), np.zeros(M, dtype=np.int64)
    if len(active) == 0:
        return totals, steps
    longest = int(lengths[order_of[active]].max())
    if longest == 0:
        steps[active] = np.asarray(opts.step)[active]
        return totals, steps
    batch_size = min(batch_size, longest)
    if group_path(states.params, nets.layers, batch_size, features.X.shape[1], Y.shape[1], nets,
                  active) == "fused":
        LAST_EPOCH.update(path="fused", products=())
        return _train_group_fused(states, features, Y, sw, orders, order_of, lengths, active,
                                  batch_size, nets, opts)
    for m in active:
        state = TrainState(*(a[m] for a in states))
        g = order_of[m]
        totals[m], steps[m] = train_epoch(state, features, Y, sw, orders[g, :lengths[g]],
                                          batch_size, *model_of(nets, opts, m))
    return totals, steps


def _train_group_fused(states, features, Y, sw, orders, order_of, lengths, active, batch_size,
                       nets, opts):
    """train_epoch_many in one launch of the persistent kernel: one block per active model."""
    fused = _fused()
    params = states.params
    layers = nets.layers
    if isinstance(layers, np.ndarray):
        layers = device.to_device(layers)
    shared = group_shared_bytes(params, device.host_table(layers), batch_size,
                                features.X.shape[1], Y.shape[1], nets, active)
    codes, numbers = _block_tables(nets, opts, active, order_of, lengths,
                                   blocks(int(lengths[order_of[active]].max()), batch_size))
    out = device.empty((len(active), 2), np.float64)
    args = (params, states.slot_1, states.slot_2, out, features, Y, sw, orders, batch_size, layers,
            device.to_device(codes), device.to_device(numbers), float(np.finfo(params.dtype).eps))
    device.allow_dynamic_shared(fused.train_epoch_fused, args, shared, fused.STATIC_SHARED_BYTES)
    launcher(fused.train_epoch_fused, len(active), fused.THREADS, shared)(*args)
    result = out.copy_to_host()
    totals, steps = np.zeros(params.shape[0]), np.zeros(params.shape[0], dtype=np.int64)
    for b, m in enumerate(active):
        totals[m] = result[b, fused.EPOCH_TOTAL]
        steps[m] = opts.step[m]
        if ops.counts_steps(int(opts.kind[m])):  # Adam's bias correction
            steps[m] += int(result[b, fused.UPDATES])
    return totals, steps


# ---------------------------------------------------------------------------------------------
# The persistent path (persistent.py): a network too wide for the fused kernel, an epoch in ONE
# cooperative launch of a grid-wide kernel whose phases are separated by grid barriers (2L + 2 per
# batch, ~1.4-1.9 us each on an H200) instead of 3L + 2 launches (23-58 us each) per batch.
# ---------------------------------------------------------------------------------------------

# Whether train_epoch may take the persistent path where the fused kernel does not fit. OFF by
# default: it has not been measured on a GPU yet (only its results, under the simulator, with
# one block). Its hand-tiled products (16 x 16 tiles, no cuBLAS) may well lose to the per-layer
# path's cuBLAS products for W1-sized layers; switch it on by default only once
# bench/compare_gpu.py --persistent shows it faster on an H200. Tests and benchmarks set it.
PERSISTENT_EPOCHS = False


def persistent_epochs_possible():
    """True when PERSISTENT_EPOCHS is set and the device can launch cooperatively (a grid-wide
    barrier needs every block resident at once); the simulator can, with a one-block grid."""
    if not PERSISTENT_EPOCHS:
        return False
    if device.simulator():
        return True
    gpu = device.import_cuda().get_current_device()
    return bool(getattr(gpu, "COOPERATIVE_LAUNCH", False))


def _persistent():
    from . import persistent

    return persistent


def _train_epoch_persistent(state, features, Y, sw, order, batch_size, net, opt):
    """train_epoch in one cooperative launch of persistent.py's kernel: work buffers allocated
    here once per epoch, the grid as large as can be resident (at most the most tiles a phase
    has)."""
    persistent = _persistent()
    params = state.params
    dt = params.dtype.type
    # Plain Python scalars, one type per field: the kernel takes net and opt whole and so
    # compiles once per dtype.
    net, opt = model_of(Networks.of([net]), OptimizerSteps.of([opt]), 0)
    table = device.host_table(net.layers)
    fans = table[:, [FAN_IN, FAN_OUT]].tolist()
    units = int(table[:, FAN_OUT].sum())
    keep_pre = ops.by_code(ops.ACTIVATIONS, net.hidden).needs_pre_activation
    work = device.empty(persistent.work_elements(batch_size, features.X.shape[1], Y.shape[1],
                                                 units, keep_pre, net.dropout > 0), params.dtype)
    sums = device.empty(1 + persistent.chunks(params.shape[0]), np.float64)
    totals = device.empty(2, np.float64)
    scalars = ops.StepScalars(dt(opt.learning_rate), dt(opt.momentum), bool(opt.nesterov),
                              dt(opt.beta_1), dt(opt.beta_2), dt(opt.epsilon), dt(opt.rho),
                              dt(0), dt(1))
    args = (params, state.dparams, state.slot_1, state.slot_2, work, sums, totals, features, Y,
            sw, order, _step_sizes(opt, blocks(order.shape[0], batch_size)), batch_size, net,
            scalars, dt(ops.weight_keep(opt.learning_rate, opt.weight_decay)), int(opt.kind),
            float(np.finfo(params.dtype).eps))
    tile = persistent.TILE
    most = max([persistent.chunks(params.shape[0]), batch_size]
               + [blocks(i + 1, tile) * blocks(o, tile) + blocks(batch_size, tile)
                  * blocks(i, tile) for i, o in fans])
    grid = persistent.grid_blocks(persistent.train_epoch_persistent, args, 0, most)
    LAST_EPOCH["blocks"] = grid
    launcher(persistent.train_epoch_persistent, grid, persistent.THREADS)(*args)
    result = totals.copy_to_host()
    step = opt.step
    if ops.counts_steps(opt.kind):  # Adam's bias correction
        step += int(result[persistent.UPDATES])
    return float(result[persistent.EPOCH_TOTAL]), step


def _update(network, state, squares, stats, done, alpha, opt, n_batches):
    """(launcher, arguments) of the update kernel (finish, step, close the batch) for opt; each
    launch appends the batch's row count. Scalars are cast to the parameters' dtype, as the CPU
    update casts them."""
    kernels = network.kernels
    params, dparams, slot_1, slot_2 = state
    dt = params.dtype.type
    scalars = kernels.StepScalars(dt(opt.learning_rate), dt(opt.momentum), bool(opt.nesterov),
                            dt(opt.beta_1), dt(opt.beta_2), dt(opt.epsilon), dt(opt.rho),
                            dt(0), dt(1))
    keep = dt(ops.weight_keep(opt.learning_rate, opt.weight_decay))
    return launcher(kernels.update_batch, squares.shape[0], kernels.BLOCK), (
        params, slot_1, slot_2, squares, dparams, stats, done, network.n_weights, dt(alpha),
        scalars, _step_sizes(opt, n_batches), keep, int(opt.kind), float(alpha))


def _train_epoch_per_layer(state, features, Y, sw, order, batch_size, net, opt):
    """train_epoch with the per-layer kernels: 3L + 2 launches per batch, configured once."""
    cuda = device.import_cuda()
    params, dparams = state.params, state.dparams
    n = order.shape[0]
    network = _Network(params, net.layers, net.hidden, net.output, batch_size,
                       features.X.shape[1], Y.shape[1], net.dropout > 0)
    kernels = network.kernels
    dW, db = _Network.split(dparams, network.table)
    squares = cuda.device_array(blocks(params.shape[0], kernels.BLOCK), np.float64)
    stats = cuda.to_device(np.zeros(kernels.N_STATS))
    done = cuda.to_device(np.zeros(1, np.int32))  # blocks of the update done with this batch
    update, update_args = _update(network, state, squares, stats, done, net.alpha, opt,
                                  blocks(n, batch_size))
    with device.same_stream(network.cupy):
        for start in range(0, n, batch_size):
            v = network.rows(min(batch_size, n - start))
            v.stage(v.Xb, v.Yb, v.swb, *features, Y, sw, order, start)
            network.backprop(v, dW, db, stats, net.loss, net.dropout, net.seed, start)
            update(*update_args, v.n)
    LAST_EPOCH.update(path="per-layer", products=tuple(
        "cublas" if cublas else "tiled" for cublas in network.rows(batch_size).cublas))
    result = stats.copy_to_host()
    step = opt.step
    if ops.counts_steps(opt.kind):  # Adam's bias correction
        step += int(result[kernels.STEPS])
    return float(result[kernels.EPOCH_TOTAL]), step


def loss_and_gradient(dparams, params, features, Y, sw, net, chunk_rows):
    """Full-data-set regularised loss (returned) and its gradient dparams (P,) out, in chunks of
    at most chunk_rows rows (see the CPU function). Used by L-BFGS."""
    ops.check_codes(net)
    cuda = device.import_cuda()
    n = Y.shape[0]
    chunk_rows = min(chunk_rows, n)
    network = _Network(params, net.layers, net.hidden, net.output, chunk_rows,
                       features.X.shape[1], Y.shape[1])
    kernels = network.kernels
    several = n > chunk_rows
    chunk_grad = cuda.device_array_like(dparams) if several else dparams
    dW, db = _Network.split(chunk_grad, network.table)
    stats = cuda.to_device(np.zeros(kernels.N_STATS))
    squares = cuda.device_array(blocks(params.shape[0], kernels.BLOCK), np.float64)
    consecutive = cuda.device_array(0, np.int64)  # no index array: rows start, start + 1, ...
    add = launcher(kernels.add_into, blocks(dparams.shape[0], kernels.BLOCK), kernels.BLOCK)
    with device.same_stream(network.cupy):
        for start in range(0, n, chunk_rows):
            v = network.rows(min(chunk_rows, n - start))
            v.stage(v.Xb, v.Yb, v.swb, *features, Y, sw, consecutive, start)
            network.backprop(v, dW, db, stats, net.loss, 0.0, 0, start)
            if several:
                add(dparams, chunk_grad, start == 0)
        launcher(kernels.finish_gradient_squares, squares.shape[0], kernels.BLOCK)(
            dparams, squares, params, stats, params.dtype.type(net.alpha), network.n_weights)
    sums = stats.copy_to_host()
    loss_sum, weight_sum = sums[kernels.LOSS_SUM], sums[kernels.WEIGHT_SUM]
    weight_squares = float(np.sum(squares.copy_to_host()))
    return float(loss_sum / weight_sum + 0.5 * net.alpha * weight_squares / weight_sum)


def predict(out, params, features, rows, net, chunk_rows):
    """Output activations out (R, K) for the input rows listed in rows (R,), chunk by chunk (see
    the CPU function)."""
    ops.check_codes(net)
    n = rows.shape[0]
    if n == 0:
        return
    chunk_rows = min(chunk_rows, n)
    network = _Network(params, net.layers, net.hidden, net.output, chunk_rows,
                       features.X.shape[1], 0)
    with device.same_stream(network.cupy):
        for start in range(0, n, chunk_rows):
            v = network.rows(min(chunk_rows, n - start))
            v.gather(v.Xb, *features, rows, start)
            P = network.forward(v, out=out[start:start + v.n])
            if ops.by_code(ops.ACTIVATIONS, net.output).row_wise:
                v.softmax(P)


def thread_limit(net, rows):
    """The context a fit runs in: nothing to limit on the GPU (see the CPU backend's)."""
    return contextlib.nullcontext()
