"""The persistent grid-wide CUDA kernel: a whole training epoch of a network too wide for the
one-block kernel (fused.py) in ONE cooperative launch.

Every block of a persistent grid runs every mini-batch; phases (gather, one per layer forward,
loss, one per layer backward, update) are separated by grid barriers (cuda.cg.this_grid().sync())
instead of kernel launches. Work buffers live in global memory; sums use fixed-order reductions
(the per-layer kernels' own orders), never atomics. Must not hold arithmetic of its own: the
device functions are kernels.py's, so the results are the per-layer path's. Launched only by
fastmlp/cuda/launch.py.
"""

from typing import NamedTuple

import numba
from numba import cuda

from ..bundles import BIAS_OFFSET, FAN_IN, FAN_OUT, WEIGHT_OFFSET
from .fused import Carve  # the same buffer table, here over the global `work` array
from .kernels import (
    BLOCK,
    SIMULATOR,
    StepScalars,
    activation_value,
    delta_and_sample_loss,
    finished_gradient,
    is_softmax,
    keeps_pre_activation,
    optimizer_step,
    softmax_in_place,
    times_derivative,
    uniform,
)

# Edge of the shared-memory tiles of the products; a block is TILE * TILE threads, 1-D (the
# simulator runs one Python thread per CUDA thread: small tiles there). The tile size does not
# change any result: each product sums over k in increasing order whatever the tiling.
TILE = 4 if SIMULATOR else 16
THREADS = TILE * TILE
# Slots of the float64 `totals` array written at the end of the epoch (as fused.py's).
EPOCH_TOTAL, UPDATES = 0, 1
# sums (float64, (1 + chunks,)): [WEIGHT_SUM] this batch's sum of sample weights (block 0 writes
# it, every block reads it after a barrier), then the per-chunk sums of squared weights.
WEIGHT_SUM = 0


def work_elements(batch_size, n_features, n_outputs, units, keep_pre, dropping):
    """Elements of the parameters' dtype in the global `work` buffer, in this order, for
    batch_size rows: inputs (F), targets (K), weights (1), activations and deltas of every layer
    (2 x units), pre-activations (units, GELU and SiLU only), dropout masks and dropped-out
    activations (2 x hidden units, dropout only). _carve cuts it the same way."""
    hidden_units = units - n_outputs
    return batch_size * (n_features + n_outputs + 1 + 2 * units + (units if keep_pre else 0)
                         + (2 * hidden_units if dropping else 0))


def chunks(n_params):
    """Chunks of BLOCK parameters the update works in: the per-layer update kernel's blocks, so
    that ||W||^2 is summed in the same order."""
    return max(1, -(-n_params // BLOCK))


def grid_blocks(kernel, args, shared_bytes, most):
    """Blocks of the persistent grid: as many as can be resident at once on the device (a
    cooperative launch needs every block resident), at most `most` (the most tiles any phase
    has), at least 1. One block under the simulator, whose grid barrier works for one only."""
    if SIMULATOR:
        return 1
    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    return max(1, min(most, compiled.max_cooperative_grid_blocks(THREADS, shared_bytes)))


@cuda.jit(device=True)
def _carve(layers, batch_size, n_features, n_outputs, net):
    units = 0
    for i in range(layers.shape[0]):
        units += layers[i, FAN_OUT]
    keep_pre = keeps_pre_activation(net.hidden)
    B = batch_size
    y_at = B * n_features
    sw_at = y_at + B * n_outputs
    acts_at = sw_at + B
    deltas_at = acts_at + B * units
    pre_at = deltas_at + B * units
    masks_at = pre_at + (B * units if keep_pre else 0)
    dropped_at = masks_at + B * (units - n_outputs)
    return Carve(0, y_at, sw_at, acts_at, deltas_at, pre_at, masks_at, dropped_at, B,
                 n_features, n_outputs, units, keep_pre, net.dropout > 0)


# ---------------------------------------------------------------------------------------------
# Products: shared-memory tiles, each block taking output tiles in a grid-stride loop
# ---------------------------------------------------------------------------------------------

class Operand(NamedTuple):
    """A matrix stored C-ordered in a flat array from `at`, `cols` to a row; `transposed`: the
    product uses its transpose."""

    at: int
    cols: int
    transposed: bool


@cuda.jit(device=True)
def _load_a(tile, A, a, row0, k0, n_rows, n_inner, ones_row):
    """tile[ty, tx] := op(A)[row0 + ty, k0 + tx] (0 outside it; with ones_row, 1 on its extra
    row n_rows). As in kernels._tiled_dot, neighbouring threads read neighbouring addresses and
    a transposed operand is stored transposed."""
    t = cuda.threadIdx.x
    ty, tx = t // TILE, t % TILE
    zero = A.dtype.type(0)
    if a.transposed:
        r, k = row0 + tx, k0 + ty
        value = zero
        if k < n_inner:
            if r < n_rows:
                value = A[a.at + k * a.cols + r]
            elif ones_row and r == n_rows:
                value = A.dtype.type(1)
        tile[tx, ty] = value
    else:
        r, k = row0 + ty, k0 + tx
        tile[ty, tx] = A[a.at + r * a.cols + k] if r < n_rows and k < n_inner else zero


@cuda.jit(device=True)
def _load_b(tile, B, b, k0, col0, n_inner, n_cols):
    """tile[ty, tx] := op(B)[k0 + ty, col0 + tx] (0 outside it), read as _load_a reads."""
    t = cuda.threadIdx.x
    ty, tx = t // TILE, t % TILE
    zero = B.dtype.type(0)
    if b.transposed:
        c, k = col0 + ty, k0 + tx
        tile[tx, ty] = B[b.at + c * b.cols + k] if c < n_cols and k < n_inner else zero
    else:
        k, c = k0 + ty, col0 + tx
        tile[ty, tx] = B[b.at + k * b.cols + c] if c < n_cols and k < n_inner else zero


@cuda.jit(device=True)
def _tile_product(tiles, A, a, B, b, n_rows, n_cols, n_inner, ones_row, row0, col0):
    """(op(A) @ op(B))[row, col] for this thread's (row0 + ty, col0 + tx), op(A) (n_rows
    [+ 1 row of ones], n_inner), op(B) (n_inner, n_cols); a, b: their Operands. Sums run over k
    in increasing order (kernels._tiled_dot's order, the same bits). Every thread of the block
    calls this; the result of one outside the product is meaningless. tiles (2, TILE, TILE):
    shared memory, declared once in the kernel (numba-cuda gives each specialization of a
    device function declaring its own shared array the same symbol name: they would clash)."""
    sA = tiles[0]
    sB = tiles[1]
    t = cuda.threadIdx.x
    ty, tx = t // TILE, t % TILE
    acc = A.dtype.type(0)
    for k0 in range(0, n_inner, TILE):
        _load_a(sA, A, a, row0, k0, n_rows, n_inner, ones_row)
        _load_b(sB, B, b, k0, col0, n_inner, n_cols)
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sA[ty, kk] * sB[kk, tx]
        cuda.syncthreads()
    return acc


@cuda.jit(device=True)
def _tiles(rows, cols):
    """(tiles along the rows, tiles in all) of a (rows, cols) product."""
    across = (cols + TILE - 1) // TILE
    return across, ((rows + TILE - 1) // TILE) * across


# ---------------------------------------------------------------------------------------------
# Phases: every block calls each one; a grid barrier follows each in the kernel
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _gather(work, c, features, Y, sw, order, start, nb):
    """Rows order[start:start + nb] of the inputs, targets and weights into work; one block per
    row (kernels._gather_row's arithmetic: CSR entries added in order by one thread)."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    F, K = c.F, c.K
    sparse = features.indptr.shape[0] > 0
    for r in range(cuda.blockIdx.x, nb, cuda.gridDim.x):
        i = order[start + r]
        for j in range(t, F, T):
            work[c.x + r * F + j] = work.dtype.type(0) if sparse else features.X[i, j]
        for j in range(t, K, T):
            work[c.y + r * K + j] = Y[i, j]
        if t == 0:
            work[c.sw + r] = sw[i]
        if sparse:
            cuda.syncthreads()  # the whole row is zero before any entry lands in it
            if t == 0:
                for k in range(features.indptr[i], features.indptr[i + 1]):
                    work[c.x + r * F + features.indices[k]] += features.data[k]


@cuda.jit(device=True)
def _forward_layer(tiles, work, params, c, layers, net, i, offset, in_at, start, nb):
    """Layer i: Z = f(A @ W + b) into acts (offset: units before layer i), pre-activations kept
    for GELU and SiLU, dropout on hidden layers (kernels.dense_forward_activate then
    dropout_forward). in_at: where its input rows start in work."""
    t = cuda.threadIdx.x
    dt = work.dtype.type
    last = layers.shape[0] - 1
    fan_in, fan_out = layers[i, FAN_IN], layers[i, FAN_OUT]
    kind = net.output if i == last else net.hidden
    here = c.B * offset
    hidden_units = c.units - c.K
    across, n_tiles = _tiles(nb, fan_out)
    for q in range(cuda.blockIdx.x, n_tiles, cuda.gridDim.x):
        row0 = (q // across) * TILE
        col0 = (q - (q // across) * across) * TILE
        z = _tile_product(tiles, work, Operand(in_at, fan_in, False), params,
                          Operand(layers[i, WEIGHT_OFFSET], fan_out, False), nb, fan_out,
                          fan_in, False, row0, col0)
        r = row0 + t // TILE
        j = col0 + t % TILE
        if r < nb and j < fan_out:
            e = here + r * fan_out + j
            z += params[layers[i, BIAS_OFFSET] + j]
            if c.keep_pre and i < last:
                work[c.pre + e] = z
            a = activation_value(z, kind)
            work[c.acts + e] = a
            if c.dropping and i < last:
                scale = dt(1.0 / (1.0 - net.dropout))
                draw = uniform(net.seed, (start + r) * hidden_units + offset + j)
                mask = scale if draw >= net.dropout else dt(0)
                work[c.masks + e] = mask
                work[c.dropped + e] = work[c.acts + e] * mask


@cuda.jit(device=True)
def _tree_sum(partial):
    """The sum of partial (BLOCK,) float64 in shared memory, in kernels.block_sum's tree order
    over BLOCK threads, whatever this block's size; every thread of the block calls this and
    gets the sum."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    cuda.syncthreads()  # partial is filled
    half = partial.shape[0] // 2
    while half > 0:
        for s in range(t, half, T):
            partial[s] += partial[s + half]
        cuda.syncthreads()
        half //= 2
    total = partial[0]
    cuda.syncthreads()  # partial may be reused right after
    return total


@cuda.jit(device=True)
def _loss(work, partial, c, net, nb, eps):
    """Block 0's phase: softmax rows, output deltas and the batch's (weighted loss sum, weight
    sum), as kernels.output_delta_and_loss_sums with BLOCK threads (the same rows per thread and
    the same tree, so the same bits). Every thread of the block calls this."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    K = c.K
    out = c.B * (c.units - K)
    for v in range(t, BLOCK, T):  # v: a thread of the per-layer kernel's block
        value = 0.0
        for r in range(v, nb, BLOCK):
            p = work[c.acts + out + r * K:c.acts + out + (r + 1) * K]
            if is_softmax(net.output):
                softmax_in_place(p)
            value += delta_and_sample_loss(
                work[c.deltas + out + r * K:c.deltas + out + (r + 1) * K], p,
                work[c.y + r * K:c.y + (r + 1) * K], work[c.sw + r], net.loss, eps)
        partial[v] = value
    loss_sum = _tree_sum(partial)
    for v in range(t, BLOCK, T):
        value = 0.0
        for r in range(v, nb, BLOCK):
            value += work[c.sw + r]
        partial[v] = value
    return loss_sum, _tree_sum(partial)


@cuda.jit(device=True)
def _backward_layer(tiles, work, dparams, params, c, layers, hidden, i, offset, in_at, nb):
    """Layer i's raw gradient [A, 1].T @ dZ (weights, then the bias row) into dparams and, for
    i > 0, the delta below, ((dZ @ W.T) * mask) * f'(z) (kernels.dense_backward and
    backward_input): the tiles of both products in one grid-stride loop."""
    t = cuda.threadIdx.x
    dt = work.dtype.type
    fan_in, fan_out = layers[i, FAN_IN], layers[i, FAN_OUT]
    w_at, b_at = layers[i, WEIGHT_OFFSET], layers[i, BIAS_OFFSET]
    dz = Operand(c.deltas + c.B * offset, fan_out, False)
    g_across, g_tiles = _tiles(fan_in + 1, fan_out)
    d_across, d_tiles = _tiles(nb, fan_in)
    below = offset - fan_in  # units before layer i - 1
    for q in range(cuda.blockIdx.x, g_tiles + (d_tiles if i > 0 else 0), cuda.gridDim.x):
        if q < g_tiles:
            row0 = (q // g_across) * TILE
            col0 = (q - (q // g_across) * g_across) * TILE
            g = _tile_product(tiles, work, Operand(in_at, fan_in, True), work, dz, fan_in,
                              fan_out, nb, True, row0, col0)
            row = row0 + t // TILE
            col = col0 + t % TILE
            if col < fan_out:
                if row < fan_in:
                    dparams[w_at + row * fan_out + col] = g
                elif row == fan_in:
                    dparams[b_at + col] = g
        else:
            q -= g_tiles
            row0 = (q // d_across) * TILE
            col0 = (q - (q // d_across) * d_across) * TILE
            g = _tile_product(tiles, work, dz, params, Operand(w_at, fan_out, True), nb, fan_in,
                              fan_out, False, row0, col0)
            r = row0 + t // TILE
            j = col0 + t % TILE
            if r < nb and j < fan_in:
                e = c.B * below + r * fan_in + j
                if c.dropping:
                    g *= work[c.masks + e]  # dropped units pass no gradient
                z = work[c.pre + e] if c.keep_pre else dt(0)
                work[c.deltas + e] = times_derivative(g, work[c.acts + e], z, hidden)


@cuda.jit(device=True)
def _update(params, slot_1, slot_2, sums, partial, dparams, n_weights, alpha, scalars, keep,
            kind, step_size):
    """The optimizer step over every parameter, chunk by chunk (chunks of BLOCK, grid-stride),
    the gradient finished on the way (kernels.update_batch); each chunk's sum of squared weights,
    read before the update, into sums[1 + chunk] in block_sum's order. Every thread calls this."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    dt = params.dtype.type
    P = params.shape[0]
    norm = dt(sums[WEIGHT_SUM])
    h = StepScalars(scalars.learning_rate, scalars.momentum, scalars.nesterov, scalars.beta_1,
                    scalars.beta_2, scalars.epsilon, scalars.rho, step_size, keep)
    h_bias = StepScalars(h.learning_rate, h.momentum, h.nesterov, h.beta_1, h.beta_2,
                         h.epsilon, h.rho, step_size, dt(1))
    for chunk in range(cuda.blockIdx.x, (P + BLOCK - 1) // BLOCK, cuda.gridDim.x):
        for v in range(t, BLOCK, T):
            k = chunk * BLOCK + v
            partial[v] = float(params[k] * params[k]) if k < n_weights else 0.0
        squares = _tree_sum(partial)
        if t == 0:
            sums[1 + chunk] = squares
        for v in range(t, BLOCK, T):
            k = chunk * BLOCK + v
            if k < P:
                g = finished_gradient(dparams[k], params[k], k, n_weights, alpha, norm)
                params[k], slot_1[k], slot_2[k] = optimizer_step(
                    params[k], g, slot_1[k], slot_2[k], h if k < n_weights else h_bias, kind)


@cuda.jit(device=True)
def _squares(sums, partial, n_chunks):
    """The sum of sums[1:1 + n_chunks] in kernels._close's order (BLOCK strided partial sums,
    then block_sum's tree). Every thread of the block calls this."""
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    for v in range(t, BLOCK, T):
        value = 0.0
        for g in range(v, n_chunks, BLOCK):
            value += sums[1 + g]
        partial[v] = value
    return _tree_sum(partial)


@cuda.jit(device=True)
def _forward(tiles, work, params, c, layers, net, start, nb):
    """Every layer's forward phase, a grid barrier after each."""
    grid = cuda.cg.this_grid()
    in_at = c.x
    offset = 0  # units of the layers before i
    for i in range(layers.shape[0]):
        _forward_layer(tiles, work, params, c, layers, net, i, offset, in_at, start, nb)
        grid.sync()  # layer i's outputs are complete before layer i + 1 (or the loss) reads them
        in_at = (c.dropped if c.dropping else c.acts) + c.B * offset
        offset += layers[i, FAN_OUT]


@cuda.jit(device=True)
def _backward(tiles, work, dparams, params, c, layers, hidden, nb):
    """Every layer's backward phase, last layer first, a grid barrier after each."""
    grid = cuda.cg.this_grid()
    offset = c.units - c.K  # units before layer i
    for i in range(layers.shape[0] - 1, -1, -1):
        below = offset - layers[i, FAN_IN]
        in_at = c.x if i == 0 else (c.dropped if c.dropping else c.acts) + c.B * below
        _backward_layer(tiles, work, dparams, params, c, layers, hidden, i, offset, in_at, nb)
        grid.sync()  # the delta below is complete; after layer 0, the whole raw gradient
        offset = below


@cuda.jit
def train_epoch_persistent(params, dparams, slot_1, slot_2, work, sums, totals, features, Y, sw,
                           order, step_sizes, batch_size, net, scalars, keep, kind, eps):
    """One epoch of mini-batch training, every batch in this one cooperative launch (the CPU
    train_epoch; the per-layer launch sequence's arithmetic and sums, bit for bit).

    params, slot_1, slot_2 (P,) updated in place; dparams (P,) work space: the batch's raw
    gradient; work (work_elements(...),) work space; sums (1 + chunks(P),) float64 work space;
    totals (2,) float64 out: [EPOCH_TOTAL] the sum over batches of regularised batch loss * batch
    rows, [UPDATES] the number of updates made. features: a bundles.Features of device arrays;
    Y (N, K); sw (N,) sample weights; order (n,) rows in visiting order; step_sizes (S,) float64:
    Adam's bias-corrected step size of this epoch's first, second, ... update (empty for the
    other optimizers); net: a bundles.Network (layers on the device); scalars: the update's
    StepScalars in the parameters' dtype (step_size and keep are set here); keep: AdamW's
    1 - learning_rate * weight_decay in that dtype; kind: the optimizer code; eps: the dtype's
    machine epsilon.

    Per batch, 2L + 2 grid barriers for L layers: gather (beside the previous batch's update) |
    forward, one phase per layer | loss (block 0; it also closes the previous batch) |
    backward, one phase per layer | then the update, grid-stride over BLOCK-sized chunks.
    Launch: cooperative (grid_blocks(...) blocks) of THREADS threads, no dynamic shared memory.
    """
    grid = cuda.cg.this_grid()
    partial = cuda.shared.array(BLOCK, dtype=numba.float64)
    tiles = cuda.shared.array((2, TILE, TILE), dtype=params.dtype)
    dt = params.dtype.type
    layers = net.layers
    c = _carve(layers, batch_size, features.X.shape[1], Y.shape[1], net)
    n_weights = layers[0, BIAS_OFFSET]  # weights come first in the flat buffer, then biases
    n_chunks = (params.shape[0] + BLOCK - 1) // BLOCK
    first = cuda.blockIdx.x == 0
    total = 0.0
    updates = 0
    # The last update's (loss sum, weight sum, rows), closed by block 0 once its chunks' sums
    # of squares are all written (a barrier later); rows 0: nothing to close.
    closing_loss, closing_weight, closing_rows = 0.0, 0.0, 0
    n = order.shape[0]
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        _gather(work, c, features, Y, sw, order, start, nb)
        grid.sync()  # the batch is staged and the previous update is done
        _forward(tiles, work, params, c, layers, net, start, nb)
        if first:
            if closing_rows > 0:
                squares = _squares(sums, partial, n_chunks)
                total += (closing_loss / closing_weight
                          + 0.5 * net.alpha * squares / closing_weight) * closing_rows
            closing_loss, closing_weight = _loss(work, partial, c, net, nb, eps)
            if cuda.threadIdx.x == 0:
                sums[WEIGHT_SUM] = closing_weight
        grid.sync()  # output deltas and the weight sum are written
        closing_rows = 0
        if sums[WEIGHT_SUM] == 0:
            continue  # every sample has zero weight: no update (the same for every block)
        _backward(tiles, work, dparams, params, c, layers, net.hidden, nb)
        step_size = dt(step_sizes[updates]) if step_sizes.shape[0] > 0 else dt(0)
        _update(params, slot_1, slot_2, sums, partial, dparams, n_weights, dt(net.alpha),
                scalars, keep, kind, step_size)
        updates += 1
        closing_rows = nb
    grid.sync()
    if first:
        if closing_rows > 0:
            squares = _squares(sums, partial, n_chunks)
            total += (closing_loss / closing_weight
                      + 0.5 * net.alpha * squares / closing_weight) * closing_rows
        if cuda.threadIdx.x == 0:
            totals[EPOCH_TOTAL] = total
            totals[UPDATES] = updates
