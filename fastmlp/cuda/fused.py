"""The persistent CUDA kernel: a whole training epoch of a small network in ONE launch, for one
model or for a group of models of the same shape (one block per model).

One block runs every mini-batch of its model (gather, forward, loss, backward, gradient finishing
and the optimizer update) with the parameters and the batch's activations in shared memory,
phases separated by cuda.syncthreads(); only the epoch's loss and update count are written out.
Sums run in a fixed order, never with atomics, so results are deterministic: each thread sums
a batch's sample weights itself, and keeps its part of the loss until one block reduction at
the end of the epoch. Launched only by fastmlp/cuda/launch.py, which checks that the network
fits (shared_elements) before using it.
Activations, losses and optimizer steps are the per-batch kernels' own device functions
(kernels.py); the products are 2 x 2 register tiles (kernels.tile_dot), each output's terms
summed in increasing order.
"""

import os
from typing import NamedTuple

import numba
from numba import cuda

from .. import ops
from ..bundles import BIAS_OFFSET, FAN_IN, FAN_OUT, WEIGHT_OFFSET, Network, OptimizerStep
from .kernels import (
    SIMULATOR,
    StepScalars,
    activation_value,
    block_sum,
    delta_and_sample_loss,
    finished_gradient,
    flat_sum,
    is_softmax,
    keeps_pre_activation,
    optimizer_step,
    pairs,
    row_and_column,
    softmax_in_place,
    split_pair,
    tile_dot,
    times_derivative,
    uniform,
)


def block_threads(setting):
    """The block size of the one-launch kernel, from the FASTMLP_FUSED_THREADS setting (None:
    256): a power of two from 32 to 1024 (block_sum halves it). A tuning knob for benchmarks on
    a GPU: the kernel is compiled for it, once per process (launch bounds: at most 65536 /
    threads registers per thread; 256 threads take about 215 without spills, 512 fit 128 with
    a few spilled values outside the inner loops, 1024 spill inside them)."""
    if setting is None or setting == "":
        return 256
    try:
        threads = int(setting)
    except ValueError:
        threads = 0
    if threads < 32 or threads > 1024 or threads & (threads - 1):
        raise ValueError(f"FASTMLP_FUSED_THREADS={setting!r}: expected a power of two from 32 "
                         "to 1024 (the one-launch CUDA kernel's block size; default 256)")
    return threads


# Threads of the one block. The simulator runs one Python thread per CUDA thread: few there.
THREADS = 16 if SIMULATOR else block_threads(os.environ.get("FASTMLP_FUSED_THREADS"))
# Columns of the float64 `totals` array train_epoch_fused writes once per block, at the end of
# the epoch.
EPOCH_TOTAL, UPDATES = 0, 1
# Columns of the per-block tables train_epoch_fused takes (launch.py's _block_tables makes them):
# `codes` (int64) names the model a block trains, its batch order row and how many of that row's
# entries it visits (fits on folds of different sizes share a launch), its activation, loss and
# optimizer codes, its dropout seed and Nesterov switch; `numbers` (float64) its hyper-parameters,
# then from STEP_SIZES on Adam's step size of each update of the epoch.
MODEL, ORDER_ROW, ROWS, HIDDEN, OUTPUT, LOSS, SEED, KIND, NESTEROV = range(9)
N_CODES = 9
ALPHA, DROPOUT, LEARNING_RATE, MOMENTUM, BETA_1, BETA_2, EPSILON, RHO, WEIGHT_DECAY = range(9)
STEP_SIZES = 9


def shared_elements(n_params, batch_size, n_features, n_outputs, units, keep_pre, dropping):
    """Elements of the parameters' dtype that train_epoch_fused keeps in dynamic shared memory,
    in this order: parameters (P,), then for batch_size rows the inputs (F), targets (K),
    weights (1), activations and deltas of every layer (2 x units), pre-activations (units, for
    GELU and SiLU only), dropout masks and dropped-out activations (2 x hidden units, only with
    dropout). The kernel carves its buffer the same way."""
    hidden_units = units - n_outputs
    per_row = (n_features + n_outputs + 1 + 2 * units + (units if keep_pre else 0)
               + (2 * hidden_units if dropping else 0))
    return n_params + batch_size * per_row


STATIC_SHARED_BYTES = 8 * THREADS  # block_sum's float64 partial sums


class Carve(NamedTuple):
    """Where each buffer starts in the dynamic shared array (see shared_elements; persistent.py
    carves its global work array with the same table), and the sizes that carve it; layer i's
    rows of acts, deltas, pre, masks and dropped start B * (units of the layers before i)
    further on, row stride fan-out. Made once per launch by _carve."""

    x: int          # (B, F) the batch's inputs
    y: int          # (B, K) its targets
    sw: int         # (B,) its sample weights
    acts: int       # (B, units) activations of every layer
    deltas: int     # (B, units) deltas of every layer
    pre: int        # (B, units) pre-activations (GELU and SiLU only)
    masks: int      # (B, hidden units) dropout masks (dropout only)
    dropped: int    # (B, hidden units) dropped-out activations (dropout only)
    B: int          # rows of a full batch
    F: int          # input features
    K: int          # outputs
    units: int      # units of every layer but the input
    keep_pre: bool  # whether pre-activations are kept (the hidden activation needs them)
    dropping: bool  # whether dropout is on


@cuda.jit(device=True)
def _carve(layers, n_params, batch_size, n_features, n_outputs, net):
    """The Carve of this launch's shared array: shared_elements' order, in the kernel."""
    units = 0
    for i in range(layers.shape[0]):
        units += layers[i, FAN_OUT]
    keep_pre = keeps_pre_activation(net.hidden)
    B = batch_size
    x_at = n_params
    y_at = x_at + B * n_features
    sw_at = y_at + B * n_outputs
    acts_at = sw_at + B
    deltas_at = acts_at + B * units
    pre_at = deltas_at + B * units
    masks_at = pre_at + (B * units if keep_pre else 0)
    dropped_at = masks_at + B * (units - n_outputs)
    return Carve(x_at, y_at, sw_at, acts_at, deltas_at, pre_at, masks_at, dropped_at, B,
                 n_features, n_outputs, units, keep_pre, net.dropout > 0)


@cuda.jit(device=True)
def _gather(sh, c, features, Y, sw, order, start, nb):
    """Rows order[start:start + nb] of the inputs, targets and sample weights into sh."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    dt = sh.dtype.type
    F, K = c.F, c.K
    sparse = features.indptr.shape[0] > 0
    for e in range(t, nb * F, T):
        r, f = row_and_column(e, F)
        sh[c.x + e] = dt(0) if sparse else features.X[order[start + r], f]
    for e in range(t, nb * K, T):
        r, k = row_and_column(e, K)
        sh[c.y + e] = Y[order[start + r], k]
    for r in range(t, nb, T):
        sh[c.sw + r] = sw[order[start + r]]
    if sparse:
        cuda.syncthreads()  # the rows are zero before entries land in them
        for r in range(t, nb, T):
            i = order[start + r]
            # One thread per row, entries in order: duplicates add up as on the CPU.
            for k in range(features.indptr[i], features.indptr[i + 1]):
                sh[c.x + r * F + features.indices[k]] += features.data[k]
    cuda.syncthreads()


@cuda.jit(device=True)
def _tile(e, rows, columns):
    """Tile e of a rows x columns matrix cut into 2 x 2 tiles of split_pair's pairs: its rows
    (r0, r1) and columns (j0, j1); an odd edge repeats an index (r1 == r0 or j1 == j0)."""
    p, q = row_and_column(e, pairs(columns))
    r0, r1 = split_pair(p, rows)
    j0, j1 = split_pair(q, columns)
    return r0, r1, j0, j1


@cuda.jit(device=True)
def _tiles(rows, columns):
    """How many tiles _tile cuts a rows x columns matrix into."""
    return pairs(rows) * pairs(columns)


@cuda.jit(device=True)
def _pick(u, four):
    """four[u] of a tile's four values (00, 01, 10, 11), u a run-time index."""
    v00, v01, v10, v11 = four
    return (v11 if u & 1 else v10) if u >> 1 else (v01 if u & 1 else v00)


@cuda.jit(device=True)
def _entry(u, r0, r1, j0, j1, sums):
    """Entry u of a 2 x 2 tile (u = 0, 1, 2, 3: row r0 or r1, column j0 or j1, in that order):
    its row, column and sum (of sums: s00, s01, s10, s11), and whether it is the first entry of
    its place (an odd edge repeats an index; each place is stored or stepped once)."""
    below, right = u >> 1, u & 1
    first = not ((below and r1 == r0) or (right and j1 == j0))
    return (r1 if below else r0), (j1 if right else j0), _pick(u, sums), first


@cuda.jit(device=True)
def _activate_output(sh, c, net, kind, hidden, at, z, draw, scale):
    """Store output element `at` of a layer (an offset into its rows) from its pre-activation
    z: z itself for GELU and SiLU, its activation and, with dropout on a hidden layer, its mask
    (0 or `scale`, 1 / (1 - rate)) and dropped-out value (the draw-th uniform of the epoch)."""
    if c.keep_pre and hidden:
        sh[c.pre + at] = z
    a = activation_value(z, kind)
    sh[c.acts + at] = a
    if c.dropping and hidden:
        mask = scale if uniform(net.seed, draw) >= net.dropout else sh.dtype.type(0)
        sh[c.masks + at] = mask
        sh[c.dropped + at] = a * mask


@cuda.jit(device=True)
def _forward(sh, c, layers, net, start, nb):
    """Z = A @ W + b, activation and dropout, layer by layer; one thread per 2 x 2 tile of
    outputs (rows r0, r1 of A times columns j0, j1 of W)."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    zero = sh.dtype.type(0)
    scale = sh.dtype.type(1.0 / (1.0 - net.dropout))  # once: a float64 division is a call
    last = layers.shape[0] - 1
    hidden_units = c.units - c.K
    in_at = c.x
    offset = 0  # units of the layers before i
    for i in range(last + 1):
        fan_in, fan_out = layers[i, FAN_IN], layers[i, FAN_OUT]
        w_at, b_at = layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET]
        kind = net.output if i == last else net.hidden
        hidden = i < last
        here = c.B * offset
        for e in range(t, _tiles(nb, fan_out), T):
            r0, r1, j0, j1 = _tile(e, nb, fan_out)
            sums = tile_dot(sh, (zero, zero, zero, zero), in_at + r0 * fan_in,
                            (r1 - r0) * fan_in, 1, w_at + j0, j1 - j0, fan_out, fan_in)
            for u in range(4):
                r, j, z, first = _entry(u, r0, r1, j0, j1, sums)
                if first:
                    _activate_output(sh, c, net, kind, hidden, here + r * fan_out + j,
                                     z + sh[b_at + j], (start + r) * hidden_units + offset + j,
                                     scale)
        cuda.syncthreads()
        in_at = (c.dropped if c.dropping else c.acts) + here
        offset += fan_out


@cuda.jit(device=True)
def _output_delta_and_loss(sh, c, net, nb, eps):
    """This thread's part of the batch's sum of sample weight * loss (it stays with the thread
    until the epoch's end), the output deltas written beside the outputs; one thread per row."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    K = c.K
    out_at = c.B * (c.units - K)
    loss_part = 0.0
    for r in range(t, nb, T):
        p = sh[c.acts + out_at + r * K:c.acts + out_at + (r + 1) * K]
        if is_softmax(net.output):
            softmax_in_place(p)
        loss_part += delta_and_sample_loss(
            sh[c.deltas + out_at + r * K:c.deltas + out_at + (r + 1) * K], p,
            sh[c.y + r * K:c.y + (r + 1) * K], sh[c.sw + r], net.loss, eps)
    cuda.syncthreads()  # the deltas are written
    return loss_part


@cuda.jit(device=True)
def _store_delta(sh, c, at, g, hidden):
    """Element `at` of the layer below's delta (an offset into its rows), from g, its row of
    dZ times its row of W: dropped units pass no gradient, the rest times f'(z)."""
    if c.dropping:
        g *= sh[c.masks + at]
    z = sh[c.pre + at] if c.keep_pre else sh.dtype.type(0)
    sh[c.deltas + at] = times_derivative(g, sh[c.acts + at], z, hidden)


@cuda.jit(device=True)
def _delta_below(sh, c, layers, i, below, hidden, nb):
    """dA = ((dZ @ W.T) * mask) * f'(z): the delta of layer i - 1, from layer i's delta and
    weights; below: the units before layer i - 1. One thread per 2 x 2 tile of dA (rows r0, r1
    of dZ times rows j0, j1 of W)."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    zero = sh.dtype.type(0)
    fan_in, fan_out, w_at = layers[i, FAN_IN], layers[i, FAN_OUT], layers[i, WEIGHT_OFFSET]
    dz_at = c.deltas + c.B * (below + fan_in)
    for e in range(t, _tiles(nb, fan_in), T):
        r0, r1, j0, j1 = _tile(e, nb, fan_in)
        # The sums start at column j0 mod O and wrap round: neighbouring threads (neighbouring
        # j0) then read W from different shared-memory banks instead of all from one (stride O).
        shift = row_and_column(j0, fan_out)[1]
        dz_row, dz_gap = dz_at + r0 * fan_out, (r1 - r0) * fan_out
        w_row, w_gap = w_at + j0 * fan_out, (j1 - j0) * fan_out
        g = tile_dot(sh, (zero, zero, zero, zero), dz_row + shift, dz_gap, 1, w_row + shift,
                     w_gap, 1, fan_out - shift)
        g = tile_dot(sh, g, dz_row, dz_gap, 1, w_row, w_gap, 1, shift)
        for u in range(4):
            r, j, g_rj, first = _entry(u, r0, r1, j0, j1, g)
            if first:
                _store_delta(sh, c, c.B * below + r * fan_in + j, g_rj, hidden)


@cuda.jit(device=True)
def _step(sh, slot_1, slot_2, k, g, s_1, s_2, n_weights, alpha, norm, decayed, kept, kind):
    """Finish parameter k's gradient sum g and apply the optimizer step to it, its optimizer
    state s_1, s_2 loaded already. Returns its square before the step if it is a weight (for
    ||W||^2), else 0."""
    w = sh[k]
    square = float(w * w) if k < n_weights else 0.0
    g = finished_gradient(g, w, k, n_weights, alpha, norm)
    w, s_1, s_2 = optimizer_step(w, g, s_1, s_2, decayed if k < n_weights else kept, kind)
    slot_1[k] = s_1
    slot_2[k] = s_2  # the same array as slot_1 for one-slot optimizers
    sh[k] = w
    return square


@cuda.jit(device=True)
def _update_layer(sh, slot_1, slot_2, c, layers, i, offset, in_at, nb, n_weights, alpha, norm,
                  decayed, kept, kind, squares):
    """Layer i's gradient (its I x O weights, then its O biases) from its input rows at in_at
    and its delta (offset: the units before layer i), finished and applied at once (no gradient
    buffer). Returns `squares` plus this thread's part of the layer's ||W||^2 before the
    update (one running sum per thread). One thread per 2 x 2 tile of weights (columns j0, j1
    of the input times columns o0, o1 of dZ), then one per bias."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    zero = sh.dtype.type(0)
    fan_in, fan_out = layers[i, FAN_IN], layers[i, FAN_OUT]
    w_at, b_at = layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET]
    dz_at = c.deltas + c.B * offset
    tiles = _tiles(fan_in, fan_out)
    for e in range(t, tiles + fan_out, T):
        if e < tiles:
            j0, j1, o0, o1 = _tile(e, fan_in, fan_out)
            k00 = w_at + j0 * fan_out + o0
            k01, k10 = k00 + (o1 - o0), k00 + (j1 - j0) * fan_out
            k11 = k10 + (o1 - o0)
            # The optimizer state lives in global memory: its loads are issued before the
            # gradient's sums and arrive while they run.
            firsts = slot_1[k00], slot_1[k01], slot_1[k10], slot_1[k11]
            seconds = slot_2[k00], slot_2[k01], slot_2[k10], slot_2[k11]
            g = tile_dot(sh, (zero, zero, zero, zero), in_at + j0, j1 - j0, fan_in,
                         dz_at + o0, o1 - o0, fan_out, nb)
            for u in range(4):
                j, o, g_jo, first = _entry(u, j0, j1, o0, o1, g)
                if first:
                    squares += _step(sh, slot_1, slot_2, w_at + j * fan_out + o, g_jo,
                                     _pick(u, firsts), _pick(u, seconds), n_weights, alpha,
                                     norm, decayed, kept, kind)
        else:  # bias o: the sum of column o of dZ
            o = e - tiles
            k = b_at + o
            s_1, s_2 = slot_1[k], slot_2[k]
            g = flat_sum(sh, zero, dz_at + o, fan_out, nb)
            squares += _step(sh, slot_1, slot_2, k, g, s_1, s_2, n_weights, alpha, norm,
                             decayed, kept, kind)
    return squares


@cuda.jit(device=True)
def _backward_and_update(sh, slot_1, slot_2, c, layers, net, opt, nb, step_size, norm):
    """Backward from the output delta, layer by layer; each layer's parameters are updated as
    soon as the next delta down no longer needs them. Returns this thread's part of ||W||^2
    before the update; every update is done when it returns."""
    dt = sh.dtype.type
    n_weights = layers[0, BIAS_OFFSET]  # weights come first in the flat buffer, then biases
    keep = dt(ops.weight_keep(opt.learning_rate, opt.weight_decay))
    # The CPU update's scalars; AdamW decays only the weights, which come before the biases.
    decayed = StepScalars(dt(opt.learning_rate), dt(opt.momentum), opt.nesterov,
                          dt(opt.beta_1), dt(opt.beta_2), dt(opt.epsilon), dt(opt.rho),
                          step_size, keep)
    kept = StepScalars(decayed.learning_rate, decayed.momentum, decayed.nesterov,
                       decayed.beta_1, decayed.beta_2, decayed.epsilon, decayed.rho,
                       step_size, dt(1))
    squares = 0.0
    offset = c.units - c.K  # units before layer i
    for i in range(layers.shape[0] - 1, -1, -1):
        below = offset - layers[i, FAN_IN]  # units before layer i - 1
        if i > 0:
            _delta_below(sh, c, layers, i, below, net.hidden, nb)
            cuda.syncthreads()  # W of layer i has been read: it may change now
            in_at = (c.dropped if c.dropping else c.acts) + c.B * below
        else:
            in_at = c.x
        squares = _update_layer(sh, slot_1, slot_2, c, layers, i, offset, in_at, nb, n_weights,
                                dt(net.alpha), norm, decayed, kept, opt.kind, squares)
        offset = below
    cuda.syncthreads()  # the next batch may overwrite what the last layer's update read
    return squares


@cuda.jit(device=True)
def _block_model(layers, codes, numbers, b):
    """(Network, OptimizerStep) of the model block b trains, from its rows of the tables."""
    net = Network(layers, codes[b, HIDDEN], codes[b, OUTPUT], codes[b, LOSS], numbers[b, ALPHA],
                  numbers[b, DROPOUT], codes[b, SEED])
    opt = OptimizerStep(codes[b, KIND], numbers[b, LEARNING_RATE], numbers[b, MOMENTUM],
                        codes[b, NESTEROV] != 0, numbers[b, BETA_1], numbers[b, BETA_2],
                        numbers[b, EPSILON], numbers[b, RHO], numbers[b, WEIGHT_DECAY], 0)
    return net, opt


# Launch bounds: at most THREADS threads, one block per multiprocessor at least, so ptxas may
# give each thread up to 65536 / THREADS registers (the simulator takes no such option).
LAUNCH_BOUNDS = (THREADS, 1)


@cuda.jit(**({} if SIMULATOR else {"launch_bounds": LAUNCH_BOUNDS}))
def train_epoch_fused(params, slot_1, slot_2, totals, features, Y, sw, orders, batch_size,
                      layers, codes, numbers, eps):
    """One epoch of mini-batch training, every batch in this one launch (the CPU train_epoch),
    for as many models of one layer table as there are blocks: block b trains one model.

    params, slot_1, slot_2 (M, P): model m's rows updated in place (the parameters live in
    shared memory during the epoch and are written back at its end; slot_2 may be slot_1 for a
    one-slot optimizer). totals (A, 2) float64 out: block b's [EPOCH_TOTAL] the sum over batches
    of batch loss * batch rows, [UPDATES] the number of updates made. features: a
    bundles.Features of device arrays; Y (N, K); sw (N,) sample weights, shared by every model;
    orders (G, n): rows in visiting order, one row per distinct order, of which block b visits
    the first codes[b, ROWS] (the rest pads shorter orders); layers: the (L, 4) table.
    codes (A, N_CODES) int64 and numbers (A, STEP_SIZES + S) float64: block b's model, order
    row and its length, codes and hyper-parameters (columns named above) and from column
    STEP_SIZES on Adam's bias-corrected step size of this epoch's first, second, ... update
    (unused by the other optimizers); eps: the dtype's machine epsilon. Each batch's parameter
    gradient is consumed where it is made: layer i's weights are updated right after the delta
    of layer i - 1 has been computed from them, so no gradient buffer is needed. Phases (device
    functions above): gather, forward, output delta and loss, backward + update. Blocks share
    nothing but the read-only data. Launch: A blocks of THREADS threads, shared_elements(...)
    x itemsize dynamic shared bytes (sized for the group's most demanding model).
    """
    sh = cuda.shared.array(0, dtype=params.dtype)
    partial = cuda.shared.array(THREADS, dtype=numba.float64)
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    b = cuda.blockIdx.x
    dt = params.dtype.type
    net, opt = _block_model(layers, codes, numbers, b)
    m = codes[b, MODEL]
    model_params, model_slot_1, model_slot_2 = params[m], slot_1[m], slot_2[m]
    order = orders[codes[b, ORDER_ROW]]
    step_sizes = numbers[b, STEP_SIZES:]
    n_params = params.shape[1]
    c = _carve(layers, n_params, batch_size, features.X.shape[1], Y.shape[1], net)

    for k in range(t, n_params, T):
        sh[k] = model_params[k]
    total = 0.0
    updates = 0
    n = codes[b, ROWS]
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        _gather(sh, c, features, Y, sw, order, start, nb)
        # Every thread sums the batch's sample weights itself, in the same order: the same sum
        # everywhere, without a block reduction and its barriers.
        weight_sum = flat_sum(sh, 0.0, c.sw, 1, nb)
        if weight_sum == 0:  # every sample has zero weight: nothing to learn
            cuda.syncthreads()  # every thread has read the weights before the next gather
            continue
        _forward(sh, c, layers, net, start, nb)
        loss_part = _output_delta_and_loss(sh, c, net, nb, eps)
        step_size = dt(step_sizes[updates])
        squares_part = _backward_and_update(sh, model_slot_1, model_slot_2, c, layers, net,
                                            opt, nb, step_size, dt(weight_sum))
        # The batch's (loss + alpha/2 ||W||^2) / weight sum, times its rows: each thread adds
        # its part, and the parts are summed once, at the end of the epoch.
        total += (loss_part + 0.5 * net.alpha * squares_part) * (nb / weight_sum)
        updates += 1

    total = block_sum(partial, total)
    for k in range(t, n_params, T):
        model_params[k] = sh[k]
    if t == 0:
        totals[b, EPOCH_TOTAL] = total
        totals[b, UPDATES] = updates
