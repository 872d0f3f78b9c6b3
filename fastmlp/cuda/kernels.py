"""CUDA kernels mirroring fastmlp/cpu/kernels.py: the same arithmetic on device arrays, with the
elementwise steps fused into the matrix products' epilogues so that a mini-batch takes few launches.

Launched only by fastmlp/cuda/launch.py; fastmlp/cuda/fused.py reuses the device functions.
Kernels never allocate, never copy to or from the host and never synchronise with it: batch
statistics stay in a small float64 device array `stats`. Constants are cast to the arrays'
dtype, as in the CPU kernels, so float32 work stays float32.

Shape legend as in the CPU module: B rows in a batch or chunk, N rows in the data set, F input
features, I fan-in, O fan-out, K outputs, P parameters (length of every flat buffer), G blocks
of a 1-D launch. Argument order: outputs first, then inputs, then sizes/codes; gradients carry a
``d`` prefix. Codes (activations, losses, optimizers) are fastmlp/ops.py's. A name shared with
the CPU module means the same contract; kernels that fuse several CPU steps are named for what
they do.
"""

import math

import numba
from numba import cuda

from .. import ops

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)
TILE = 16  # edge of the matrix products' shared-memory tiles: TILE x TILE threads per block
# Threads per block of 1-D kernels (a power of two: block reductions halve it) and of the
# block-per-row gathers. The simulator runs one Python thread per CUDA thread: small blocks there.
BLOCK = 32 if SIMULATOR else 256
ROW_THREADS = 8 if SIMULATOR else 128

# Slots of the float64 `stats` array: this batch's weighted loss sum and weight sum, the epoch's
# running total (what the CPU train_epoch returns) and the number of updates made so far.
LOSS_SUM, WEIGHT_SUM, EPOCH_TOTAL, STEPS = 0, 1, 2, 3
N_STATS = 4


# ---------------------------------------------------------------------------------------------
# Gathering batches: one block per batch row, its threads spread over the row's columns
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _row_index(rows, position):
    """rows[position], or position itself when rows is empty (consecutive rows, as L-BFGS
    chunks are): no index array has to be made for them."""
    return rows[position] if rows.shape[0] > 0 else position


@cuda.jit(device=True)
def _gather_row(Xb, r, i, X, X_data, X_indices, X_indptr):
    """Xb[r] (F,) := input row i, dense or CSR (see the CPU gather_rows)."""
    t = cuda.threadIdx.x
    step = cuda.blockDim.x
    if X_indptr.shape[0] > 0:
        for j in range(t, Xb.shape[1], step):
            Xb[r, j] = 0
        cuda.syncthreads()  # the whole row is zero before any entry lands in it
        if t == 0:
            # One thread, entries in order: duplicate entries add up (as in scipy) in the CPU's
            # order, so the sums are the CPU's to the bit, with no atomics.
            for k in range(X_indptr[i], X_indptr[i + 1]):
                Xb[r, X_indices[k]] += X_data[k]
    else:
        for j in range(t, Xb.shape[1], step):
            Xb[r, j] = X[i, j]


@cuda.jit
def gather_rows_from(Xb, X, X_data, X_indices, X_indptr, rows, start):
    """Xb (B, F) out: the input rows rows[start:start + B] (R,), or rows start, start + 1, ...
    when rows is empty; X (N, F) dense, or CSR (X_data, X_indices, X_indptr (N + 1,)).
    Launch: B blocks of ROW_THREADS."""
    r = cuda.blockIdx.x
    _gather_row(Xb, r, _row_index(rows, start + r), X, X_data, X_indices, X_indptr)


@cuda.jit
def stage_batch_from(Xb, Yb, swb, X, X_data, X_indices, X_indptr, Y, sw, rows, start):
    """The CPU stage_batch for the rows chosen as in gather_rows_from: Xb (B, F), Yb (B, K), swb
    (B,) out: their inputs, targets Y (N, K) and weights sw (N,). Launch: B blocks of
    ROW_THREADS."""
    r = cuda.blockIdx.x
    i = _row_index(rows, start + r)
    _gather_row(Xb, r, i, X, X_data, X_indices, X_indptr)
    for j in range(cuda.threadIdx.x, Y.shape[1], cuda.blockDim.x):
        Yb[r, j] = Y[i, j]
    if cuda.threadIdx.x == 0:
        swb[r] = sw[i]


# ---------------------------------------------------------------------------------------------
# The operations: fastmlp/ops.py's scalar functions, compiled for the GPU (each formula is
# written once, for every backend). CUDA kernels get operation codes at run time; the choosers
# below are generated from the registry, one comparison per entry, so every operation is reached
# and none stands in for another. The launchers check codes before launching (ops.check_codes); a
# code no entry has would give NaN, which the divergence checks report, never another result.
# ---------------------------------------------------------------------------------------------

def _chooser(name, entries, function, arguments, otherwise):
    """A device function `name`(<arguments>, code) returning getattr(entry, function)(<arguments>)
    for the entry with that code, else the expression `otherwise`. Written out as source, e.g.

        def activation_value(z, code):
            if code == 0:
                return f_0(z)
            ...
            return z * type(z)(NAN)
    """
    lines = [f"def {name}({arguments}, code):"]
    namespace = {"NAN": math.nan, "__name__": __name__}
    for entry in entries:
        namespace[f"f_{entry.code}"] = getattr(entry, function)
        lines += [f"    if code == {entry.code}:",
                  f"        return f_{entry.code}({arguments})"]
    lines.append(f"    return {otherwise}")
    exec("\n".join(lines), namespace)  # source built above from registry codes only
    return cuda.jit(device=True)(namespace[name])


def _flag(name, entries, flag):
    """A device function `name`(code): True for the codes of entries whose `flag` is set."""
    codes = [entry.code for entry in entries if getattr(entry, flag)]
    test = " or ".join(f"code == {code}" for code in codes) or "False"
    namespace = {"__name__": __name__}
    exec(f"def {name}(code):\n    return {test}", namespace)  # as in _chooser
    return cuda.jit(device=True)(namespace[name])


activation_value = _chooser("activation_value", ops.ACTIVATIONS, "value", "z", "z * type(z)(NAN)")
times_derivative = _chooser("times_derivative",
                            [a for a in ops.ACTIVATIONS if a.backward is not None], "backward",
                            "g, a, z", "g * type(g)(NAN)")
loss_term = _chooser("loss_term", ops.LOSSES, "term", "p, y, eps", "NAN")
optimizer_step = _chooser("optimizer_step", ops.OPTIMIZERS, "step", "p, g, slot_1, slot_2, h",
                          "(p * type(p)(NAN), slot_1, slot_2)")
keeps_pre_activation = _flag("keeps_pre_activation", ops.ACTIVATIONS, "needs_pre_activation")
is_softmax = _flag("is_softmax", ops.ACTIVATIONS, "row_wise")
averages_outputs = _flag("averages_outputs", ops.LOSSES, "mean_over_outputs")
finished_gradient = cuda.jit(device=True)(ops.finished_gradient)
uniform = cuda.jit(device=True)(ops.uniform)
StepScalars = ops.StepScalars


@cuda.jit(device=True)
def softmax_in_place(z):
    """z (K,) in place: its softmax, the row maximum subtracted first (exp cannot overflow)."""
    top = z[0]
    for j in range(1, z.shape[0]):
        top = max(top, z[j])
    total = z.dtype.type(0)
    for j in range(z.shape[0]):
        z[j] = math.exp(z[j] - top)
        total += z[j]
    for j in range(z.shape[0]):
        z[j] /= total


@cuda.jit(device=True)
def _element(shape):
    """(i, j, inside) of this thread in an elementwise kernel over a C-ordered (rows, cols)
    array: one thread per element in memory order, so that a warp reads consecutive addresses
    (a 2-D grid would put neighbouring threads on different rows)."""
    k = cuda.grid(1)
    cols = shape[1]
    i = k // cols if cols > 0 else 0
    return i, k - i * cols, k < shape[0] * cols


@cuda.jit
def bias_activate(Z, pre, b, kind):
    """Z (B, O) in place: f(Z + b), b (O,); pre (B, O) out: Z + b, written only for GELU and
    SiLU (whose derivatives need it). The dense_forward_activate epilogue, for products made by
    cuBLAS. Launch: elementwise_grid(B, O)."""
    i, j, inside = _element(Z.shape)
    if inside:
        z = Z[i, j] + b[j]
        if keeps_pre_activation(kind):
            pre[i, j] = z
        Z[i, j] = activation_value(z, kind)


@cuda.jit
def softmax_rows(Z):
    """Z (B, K) in place: the softmax of every row. Launch: one thread per row."""
    i = cuda.grid(1)
    if i < Z.shape[0]:
        softmax_in_place(Z[i])


@cuda.jit
def activation_backward_masked(dZ, A, Z, M, kind, masked):
    """dZ (B, O) in place: times the dropout mask M (B, O) when `masked`, then times f'(z), from
    A = f(z) (B, O) or, for GELU and SiLU, Z = z (B, O): the CPU activation_backward after the
    mask. The backward_input epilogue, for
    products made by cuBLAS. Launch: elementwise_grid(B, O)."""
    i, j, inside = _element(dZ.shape)
    if inside:
        g = dZ[i, j]
        if masked:
            g *= M[i, j]  # dropped units pass no gradient
        dZ[i, j] = times_derivative(g, A[i, j], Z[i, j], kind)


# ---------------------------------------------------------------------------------------------
# Dropout: the CPU module's counter-based draws (uniform, above), bit for bit
# ---------------------------------------------------------------------------------------------

@cuda.jit
def dropout_forward(D, M, A, rate, seed, first, stride):
    """D (B, O) out: A * M; M (B, O) out: the mask, 0 or 1 / (1 - rate); A (B, O) activations.
    Element (i, j) draws uniform(seed, first + i * stride + j). Launch: elementwise_grid(B, O)."""
    i, j, inside = _element(A.shape)
    if inside:
        scale = A.dtype.type(1.0 / (1.0 - rate))
        M[i, j] = scale if uniform(seed, first + i * stride + j) >= rate else A.dtype.type(0)
        D[i, j] = A[i, j] * M[i, j]


# ---------------------------------------------------------------------------------------------
# Matrix products: TILE x TILE shared-memory tiles, one thread per output element
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _tiled_dot(A, B, transpose_a, transpose_b, n_rows, n_cols, n_inner, ones_row):
    """(op(A) @ op(B))[row, col] for this thread's (row, col) of a (n_rows, n_cols) product;
    op transposes when asked. With ones_row, op(A) has one more row, of ones, whose product row is
    the column sums of op(B). Every thread of the block must call this (it synchronises), those
    outside the product too; their result is meaningless. Sums run over k in increasing order."""
    sA = cuda.shared.array((TILE, TILE), dtype=A.dtype)
    sB = cuda.shared.array((TILE, TILE), dtype=A.dtype)
    ty = cuda.threadIdx.y
    tx = cuda.threadIdx.x
    # Rows of the product go along the grid's x dimension (up to 2**31 - 1 blocks): its y
    # dimension is limited to 65535 blocks, too few for 16 * 65535 rows (large batches, or the
    # fan-in + 1 rows of a first layer's weight gradient with ~2**20 sparse features).
    row0 = cuda.blockIdx.x * TILE
    col0 = cuda.blockIdx.y * TILE
    zero = A.dtype.type(0)
    acc = zero
    for k0 in range(0, n_inner, TILE):
        # Neighbouring threads (tx) read neighbouring addresses of A and B in both layouts; a
        # transposed operand is stored transposed into its tile.
        if transpose_a:
            r, k = row0 + tx, k0 + ty
            value = zero
            if k < n_inner:
                if r < n_rows:
                    value = A[k, r]
                elif ones_row and r == n_rows:
                    value = A.dtype.type(1)
            sA[tx, ty] = value
        else:
            r, k = row0 + ty, k0 + tx
            sA[ty, tx] = A[r, k] if r < n_rows and k < n_inner else zero
        if transpose_b:
            c, k = col0 + ty, k0 + tx
            sB[tx, ty] = B[c, k] if c < n_cols and k < n_inner else zero
        else:
            k, c = k0 + ty, col0 + tx
            sB[ty, tx] = B[k, c] if c < n_cols and k < n_inner else zero
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sA[ty, kk] * sB[kk, tx]
        cuda.syncthreads()
    return acc


@cuda.jit
def dense_forward_activate(Z, pre, A, W, b, kind):
    """Z (B, O) = f(A (B, I) @ W (I, O) + b (O,)), f the activation `kind`: the CPU dense_forward
    and activate fused (softmax rows are finished later, by softmax_rows or
    output_delta_and_loss_sums). pre (B, O) out: the pre-activation, written only for GELU and SiLU.
    Launch: product_grid(B, O)."""
    row = cuda.blockIdx.x * TILE + cuda.threadIdx.y
    col = cuda.blockIdx.y * TILE + cuda.threadIdx.x
    z = _tiled_dot(A, W, False, False, Z.shape[0], Z.shape[1], A.shape[1], False)
    if row < Z.shape[0] and col < Z.shape[1]:
        z += b[col]
        if keeps_pre_activation(kind):
            pre[row, col] = z
        Z[row, col] = activation_value(z, kind)


@cuda.jit
def dense_backward(dW, db, dZ, A):
    """Unnormalised parameter gradients of one layer, as the CPU dense_backward: dW (I, O) =
    A.T @ dZ and db (O,) = column sums of dZ (B, O), as one product [A, 1].T @ dZ whose extra last
    row is db. A (B, I) is the layer's input. Launch: product_grid(I + 1, O)."""
    row = cuda.blockIdx.x * TILE + cuda.threadIdx.y
    col = cuda.blockIdx.y * TILE + cuda.threadIdx.x
    g = _tiled_dot(A, dZ, True, False, dW.shape[0], dW.shape[1], A.shape[0], True)
    if col < dW.shape[1]:
        if row < dW.shape[0]:
            dW[row, col] = g
        elif row == dW.shape[0]:
            db[col] = g


@cuda.jit
def backward_input(dA, dZ, W, A, Z, M, kind, masked):
    """dA (B, I) = ((dZ (B, O) @ W.T) * M) * f'(z): the gradient reaching the previous layer's
    pre-activations. The CPU backprop's np.dot(dZ, W.T, dA), dropout mask M (B, I) (when
    `masked`) and activation_backward (from A = f(z) (B, I), or Z = z for GELU and SiLU), fused.
    W (I, O). Launch: product_grid(B, I)."""
    row = cuda.blockIdx.x * TILE + cuda.threadIdx.y
    col = cuda.blockIdx.y * TILE + cuda.threadIdx.x
    g = _tiled_dot(dZ, W, False, True, dA.shape[0], dA.shape[1], dZ.shape[1], False)
    if row < dA.shape[0] and col < dA.shape[1]:
        if masked:
            g *= M[row, col]
        dA[row, col] = times_derivative(g, A[row, col], Z[row, col], kind)


@cuda.jit
def column_sums(db, dZ):
    """db (O,) out: the sums of dZ's (B, O) columns, rows in order (the dense_backward bias row,
    for products made by cuBLAS). Launch: one thread per column."""
    j = cuda.grid(1)
    if j < dZ.shape[1]:
        total = dZ.dtype.type(0)
        for i in range(dZ.shape[0]):
            total += dZ[i, j]
        db[j] = total


# ---------------------------------------------------------------------------------------------
# Strided sums over one flat array (the one-launch kernel's products, fused.py)
# ---------------------------------------------------------------------------------------------

# Offsets into flat arrays held as unsigned integers: numba then skips the negative-index check
# it makes for signed ones, and the loops below keep running offsets instead of recomputing
# products. On sm_90 that took the fused kernel's inner loops from 28-38 machine instructions
# per multiply-add to about 5 with one running sum, and tile_dot's 2 x 2 tiles to 2.2-3.3
# (bench/gpu_sass.py).
OFFSET = numba.uint64
ONE = numba.uint64(1)


@cuda.jit(device=True)
def row_and_column(e, width):
    """(e // width, e % width) as int64: where element e of a row-major matrix of `width`
    columns lies. In 32-bit unsigned arithmetic (e < 2**32): a 64-bit division is a call to a
    slow routine on the GPU, and numba's floor division adds sign corrections."""
    e, width = numba.uint32(e), numba.uint32(width)
    r = e // width
    return numba.int64(r), numba.int64(e - r * width)


@cuda.jit(device=True)
def pairs(n):
    """How many pairs split_pair cuts range(n) into: ceil(n / 2)."""
    return (numba.int64(n) + 1) >> 1


@cuda.jit(device=True)
def split_pair(p, n):
    """The two members of pair p of range(n), cut into halves: p and p + ceil(n / 2), or p twice
    when n is odd and p is the last pair. Neighbouring pairs hold neighbouring indices, so
    neighbouring threads read neighbouring shared-memory words (different banks)."""
    p, n = numba.int64(p), numba.int64(n)
    q = p + pairs(n)
    return p, (q if q < n else p)


@cuda.jit(device=True)
def tile_dot(flat, acc, a, a_gap, a_step, b, b_gap, b_step, n):
    """A 2 x 2 register tile of strided dot products over one flat array (rows and columns of
    matrices kept in it). acc: four running sums (s00, s01, s10, s11); returns them plus, for
    s_uv, the sum over k < n, in increasing k, of
        flat[a + u * a_gap + k * a_step] * flat[b + v * b_gap + k * b_step].
    Each step loads four values for four multiply-adds (one sum alone needs two loads per
    multiply-add), and the four sums' chains of dependent adds run side by side."""
    a0, a1, b0, b1 = OFFSET(a), OFFSET(a + a_gap), OFFSET(b), OFFSET(b + b_gap)
    a_step, b_step = OFFSET(a_step), OFFSET(b_step)
    s00, s01, s10, s11 = acc
    left = OFFSET(n)
    while left > 0:
        x0, x1, y0, y1 = flat[a0], flat[a1], flat[b0], flat[b1]
        s00 += x0 * y0
        s01 += x0 * y1
        s10 += x1 * y0
        s11 += x1 * y1
        a0 += a_step
        a1 += a_step
        b0 += b_step
        b1 += b_step
        left -= ONE
    return s00, s01, s10, s11


@cuda.jit(device=True)
def flat_sum(flat, acc, a, a_step, n):
    """acc + the sum over k < n, in increasing k, of flat[a + k * a_step]."""
    a, a_step = OFFSET(a), OFFSET(a_step)
    left = OFFSET(n)
    while left > 0:
        acc += flat[a]
        a += a_step
        left -= ONE
    return acc


# ---------------------------------------------------------------------------------------------
# Loss and output delta
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def block_sum(partial, value):
    """The sum over the block's threads of value (float64), in a fixed tree order; every thread
    of the block must call this, and every thread gets the sum. partial: a (blockDim,) float64
    shared array (blockDim a power of two)."""
    t = cuda.threadIdx.x
    partial[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            partial[t] += partial[t + half]
        cuda.syncthreads()
        half //= 2
    total = partial[0]
    cuda.syncthreads()  # partial may be reused right after
    return total


@cuda.jit(device=True)
def delta_and_sample_loss(dz, p, y, w, loss, eps):
    """One row of the CPU output_delta_and_loss: dz (K,) out: w * (p - y) (every loss is paired
    with its canonical output activation, so the derivative with respect to the pre-activation
    is p - y); p (K,) output activations, y (K,) targets, w the row's weight. Returns w * loss
    of the row (float64); eps: the dtype's machine epsilon (see loss_term)."""
    k = p.shape[0]
    sample = 0.0
    for j in range(k):
        dz[j] = (p[j] - y[j]) * w
        sample += loss_term(float(p[j]), float(y[j]), eps, loss)
    if averages_outputs(loss):
        sample = 0.5 * sample / k  # scikit-learn averages squared error over outputs
    return w * sample


@cuda.jit
def output_delta_and_loss_sums(dZ, stats, P, Y, sw, loss, softmax, eps):
    """The CPU output_delta_and_loss over a batch, its sums kept on the device.

    dZ (B, K) out: sw * (P - Y) (see delta_and_sample_loss). P (B, K): output activations, or
    with `softmax` pre-activations whose rows get their softmax here first (P then holds the
    probabilities, as on the CPU). Y (B, K) targets; sw (B,) weights. Adds sum_i sw_i * loss_i
    to stats[LOSS_SUM] and sum_i sw_i to stats[WEIGHT_SUM]. Launch: ONE block of BLOCK threads,
    rows spread over them; the sums run in a fixed order, so results do not depend on scheduling.
    """
    partial = cuda.shared.array(BLOCK, dtype=numba.float64)
    loss_sum = 0.0
    weight_sum = 0.0
    for i in range(cuda.threadIdx.x, P.shape[0], cuda.blockDim.x):
        if softmax:
            softmax_in_place(P[i])
        loss_sum += delta_and_sample_loss(dZ[i], P[i], Y[i], sw[i], loss, eps)
        weight_sum += sw[i]
    loss_sum = block_sum(partial, loss_sum)
    weight_sum = block_sum(partial, weight_sum)
    if cuda.threadIdx.x == 0:
        stats[LOSS_SUM] += loss_sum
        stats[WEIGHT_SUM] += weight_sum


# ---------------------------------------------------------------------------------------------
# Gradient finishing (ops.finished_gradient) fused with the optimizer step: one thread per
# parameter, one launch per batch
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _finished_gradient(dparams, params, stats, alpha, n_weights, k):
    """ops.finished_gradient (as the CPU update applies it) for entry k, from the batch's
    weight sum stats[WEIGHT_SUM];
    stored back into dparams and returned. alpha: the dtype's."""
    g = finished_gradient(dparams[k], params[k], k, n_weights, alpha,
                          params.dtype.type(stats[WEIGHT_SUM]))
    dparams[k] = g
    return g


@cuda.jit(device=True)
def _store_block_squares(squares, params, n_weights, k):
    """squares[block] := the sum of this block's squared weights, read before any update (the
    CPU weight_squares' ||W||^2, summed by _close). Every thread must call this."""
    partial = cuda.shared.array(BLOCK, dtype=numba.float64)
    value = 0.0
    if k < n_weights:
        value = float(params[k] * params[k])
    total = block_sum(partial, value)
    if cuda.threadIdx.x == 0:
        squares[cuda.blockIdx.x] = total


@cuda.jit
def finish_gradient_squares(dparams, squares, params, stats, alpha, n_weights):
    """dparams (P,) in place: (dparams + alpha * W) / sum(sw) (sum(sw) = stats[WEIGHT_SUM]);
    squares (G,) out: per-block sums of W^2, whose total is the CPU weight_squares'
    ||W||^2. For L-BFGS; training fuses this into the updates below. Launch: G blocks of BLOCK."""
    k = cuda.grid(1)
    _store_block_squares(squares, params, n_weights, k)
    if k < params.shape[0]:
        _finished_gradient(dparams, params, stats, alpha, n_weights, k)


@cuda.jit(device=True)
def _close(stats, squares, alpha, rows):
    """Block-wide end of a mini-batch: add its regularised loss times its row count to
    stats[EPOCH_TOTAL], as the CPU train_epoch does, and count the update in stats[STEPS]; then
    clear the batch sums. squares (G,): the update's per-block sums of W^2, added in a fixed
    order; alpha: float64. Every thread of the block must call this."""
    partial = cuda.shared.array(BLOCK, dtype=numba.float64)
    value = 0.0
    for g in range(cuda.threadIdx.x, squares.shape[0], cuda.blockDim.x):
        value += squares[g]
    total = block_sum(partial, value)
    if cuda.threadIdx.x == 0:
        weight_sum = stats[WEIGHT_SUM]
        stats[EPOCH_TOTAL] += (stats[LOSS_SUM] / weight_sum
                               + 0.5 * alpha * total / weight_sum) * rows
        stats[STEPS] += 1
        stats[LOSS_SUM] = 0
        stats[WEIGHT_SUM] = 0


@cuda.jit(device=True)
def _close_in_last_block(stats, squares, done, alpha, rows):
    """Every thread of every block of an update kernel calls this at its end: the last block to
    finish closes the batch (_close), so that no separate launch is needed, and re-arms done
    (1,) int32 for the next batch. Blocks count themselves with one integer atomic after a
    memory fence (CUDA's threadFenceReduction pattern); the sum itself runs in a fixed order."""
    last = cuda.shared.array(1, dtype=numba.int32)
    cuda.syncthreads()  # this block has read stats and written its squares entry
    if cuda.threadIdx.x == 0:
        cuda.threadfence()
        last[0] = 1 if cuda.atomic.add(done, 0, 1) == cuda.gridDim.x - 1 else 0
    cuda.syncthreads()
    if last[0] == 1:
        _close(stats, squares, alpha, rows)
        if cuda.threadIdx.x == 0:
            done[0] = 0


@cuda.jit(device=True)
def _skipped(stats):
    """True when the batch's weights sum to zero: the update is skipped, as on the CPU (the same
    answer for every thread, so nobody reaches a block reduction); its loss sum is cleared."""
    if stats[WEIGHT_SUM] != 0:
        return False
    if cuda.grid(1) == 0:
        stats[LOSS_SUM] = 0
    return True


@cuda.jit
def update_batch(params, slot_1, slot_2, squares, dparams, stats, done, n_weights, alpha,
                 scalars, step_sizes, keep, kind, alpha_64, rows):
    """A batch's update from its raw gradient, as the CPU update: gradient finishing and the
    optimizer step of `kind` in one pass, and the batch closed (see _close) by the last block.

    params, slot_1, slot_2 (P,) updated in place (slot_2 is slot_1 for one-slot optimizers);
    dparams (P,): the raw batch gradient, read only; squares (G,) out as in
    finish_gradient_squares; stats (N_STATS,) float64; done (1,) int32: 0 between batches;
    alpha: the dtype's; scalars: a StepScalars in the parameters' dtype whose step_size and keep
    are set here: step_size from step_sizes (S,) float64 (Adam's bias-corrected step size of
    this call's first, second, ... update; stats[STEPS] counts them; empty for the others) and
    keep (AdamW's 1 - learning_rate * weight_decay, 1 otherwise) for the weights only.
    alpha_64: alpha in float64; rows: the batch's row count. A batch whose weights sum to zero is
    skipped, as on the CPU. Launch: G blocks of BLOCK.
    """
    if _skipped(stats):
        return
    k = cuda.grid(1)
    _store_block_squares(squares, params, n_weights, k)
    if k < params.shape[0]:
        dt = params.dtype.type
        g = finished_gradient(dparams[k], params[k], k, n_weights, alpha, dt(stats[WEIGHT_SUM]))
        step_size = dt(step_sizes[int(stats[STEPS])]) if step_sizes.shape[0] > 0 else dt(0)
        h = StepScalars(scalars.learning_rate, scalars.momentum, scalars.nesterov,
                        scalars.beta_1, scalars.beta_2, scalars.epsilon, scalars.rho, step_size,
                        keep if k < n_weights else dt(1))
        params[k], slot_1[k], slot_2[k] = optimizer_step(params[k], g, slot_1[k], slot_2[k], h,
                                                         kind)
    _close_in_last_block(stats, squares, done, alpha_64, rows)


@cuda.jit
def add_into(target, source, overwrite):
    """target (P,) += source (P,), or = source when `overwrite` (the first L-BFGS chunk)."""
    k = cuda.grid(1)
    if k < target.shape[0]:
        target[k] = source[k] if overwrite else target[k] + source[k]
