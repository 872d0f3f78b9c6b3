"""CUDA kernels mirroring fastmlp/cpu/kernels.py: the same arithmetic on device arrays, with the
elementwise steps fused into the matrix products' epilogues so that a mini-batch takes few launches.

Launched only by fastmlp/cuda/__init__.py. Kernels never allocate, never copy to or from the host
and never synchronise with it: batch statistics stay in a small float64 device array `stats`.
Constants are cast to the arrays' dtype, as in the CPU kernels, so float32 work stays float32.

Shape legend as in the CPU module: B rows in a batch or chunk, N rows in the data set, F input
features, I fan-in, O fan-out, K outputs, P parameters (length of every flat buffer), G blocks
of a 1-D launch. Argument order: outputs first, then inputs, then sizes/codes; gradients carry a
``d`` prefix. Codes (activations, losses) are the CPU module's.
"""

import math

import numba
import numpy as np
from numba import cuda

from ..codes import (
    BINARY_LOG_LOSS,
    ELU,
    EXP,
    GELU,
    LEAKY_RELU,
    LEAKY_SLOPE,
    LOG_LOSS,
    LOGISTIC,
    RELU,
    SILU,
    SQUARED_ERROR,
    TANH,
)

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
def gather_rows(Xb, X, X_data, X_indices, X_indptr, rows, start):
    """Xb (B, F) out: the input rows rows[start:start + B] (R,), or rows start, start + 1, ...
    when rows is empty; X (N, F) dense, or CSR (X_data, X_indices, X_indptr (N + 1,)).
    Launch: B blocks of ROW_THREADS."""
    r = cuda.blockIdx.x
    _gather_row(Xb, r, _row_index(rows, start + r), X, X_data, X_indices, X_indptr)


@cuda.jit
def stage_batch(Xb, Yb, swb, X, X_data, X_indices, X_indptr, Y, sw, rows, start):
    """The CPU _stage_batch: Xb (B, F), Yb (B, K), swb (B,) out: inputs, targets Y (N, K) and
    weights sw (N,) of the rows chosen as in gather_rows. Launch: B blocks of ROW_THREADS."""
    r = cuda.blockIdx.x
    i = _row_index(rows, start + r)
    _gather_row(Xb, r, i, X, X_data, X_indices, X_indptr)
    for j in range(cuda.threadIdx.x, Y.shape[1], cuda.blockDim.x):
        Yb[r, j] = Y[i, j]
    if cuda.threadIdx.x == 0:
        swb[r] = sw[i]


# ---------------------------------------------------------------------------------------------
# Activations (one element; softmax is finished row by row) and their derivatives
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def activate(z, kind):
    """f(z) for activation `kind`, the CPU activate for one element. Softmax and identity return
    z unchanged (softmax rows are finished by _softmax_row)."""
    one = type(z)(1)
    if kind == LOGISTIC:
        return one / (one + math.exp(-z))
    if kind == TANH:
        return math.tanh(z)
    if kind == RELU:
        return type(z)(0) if z < 0 else z
    if kind == EXP:
        return math.exp(z)
    if kind == LEAKY_RELU:
        return z * type(z)(LEAKY_SLOPE) if z < 0 else z
    if kind == ELU:
        return math.expm1(z) if z < 0 else z
    if kind == GELU:  # exact GELU, z Phi(z)
        return type(z)(0.5) * z * (one + math.erf(z * type(z)(math.sqrt(0.5))))
    if kind == SILU:
        return z / (one + math.exp(-z))
    return z


@cuda.jit(device=True)
def _times_derivative(g, a, z, kind):
    """g * f'(z), the CPU activation_backward for one element: from the output a = f(z), or from
    the pre-activation z for GELU and SiLU."""
    one = type(g)(1)
    if kind == LOGISTIC:
        return g * a * (one - a)
    if kind == TANH:
        return g * (one - a * a)
    if kind == RELU:
        return type(g)(0) if a == 0 else g
    if kind == LEAKY_RELU:
        return g * type(g)(LEAKY_SLOPE) if a <= 0 else g
    if kind == ELU:
        return g * (a + one) if a < 0 else g  # d/dz (e^z - 1) = e^z = a + 1
    if kind == GELU:  # d/dz z Phi(z) = Phi(z) + z phi(z)
        half = type(g)(0.5)
        cdf = half * (one + math.erf(z * type(g)(math.sqrt(0.5))))
        return g * (cdf + z * type(g)(1 / math.sqrt(2 * math.pi)) * math.exp(-half * z * z))
    if kind == SILU:  # d/dz z s(z) = s(z) (1 + z (1 - s(z)))
        sig = one / (one + math.exp(-z))
        return g * (sig * (one + z * (one - sig)))
    return g


@cuda.jit(device=True)
def _softmax_row(Z, i):
    """Z[i] (K,) in place: its softmax, the row maximum subtracted first (exp cannot overflow)."""
    top = Z[i, 0]
    for j in range(1, Z.shape[1]):
        top = max(top, Z[i, j])
    total = Z.dtype.type(0)
    for j in range(Z.shape[1]):
        Z[i, j] = math.exp(Z[i, j] - top)
        total += Z[i, j]
    for j in range(Z.shape[1]):
        Z[i, j] /= total


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
    SiLU (whose derivatives need it). The dense_forward epilogue, for products made by cuBLAS.
    Launch: elementwise_grid(B, O)."""
    i, j, inside = _element(Z.shape)
    if inside:
        z = Z[i, j] + b[j]
        if kind == GELU or kind == SILU:
            pre[i, j] = z
        Z[i, j] = activate(z, kind)


@cuda.jit
def softmax_rows(Z):
    """Z (B, K) in place: the softmax of every row. Launch: one thread per row."""
    i = cuda.grid(1)
    if i < Z.shape[0]:
        _softmax_row(Z, i)


@cuda.jit
def activation_backward(dZ, A, Z, M, kind, masked):
    """dZ (B, O) in place: times the dropout mask M (B, O) when `masked`, then times f'(z), from
    A = f(z) (B, O) or, for GELU and SiLU, Z = z (B, O). The backward_input epilogue, for
    products made by cuBLAS. Launch: elementwise_grid(B, O)."""
    i, j, inside = _element(dZ.shape)
    if inside:
        g = dZ[i, j]
        if masked:
            g *= M[i, j]  # dropped units pass no gradient
        dZ[i, j] = _times_derivative(g, A[i, j], Z[i, j], kind)


# ---------------------------------------------------------------------------------------------
# Dropout: the CPU module's counter-based draws, bit for bit
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def uniform(seed, counter):
    """A uniform number in [0, 1) from the splitmix64 hash of seed + counter (CPU uniform)."""
    z = np.uint64(seed) + np.uint64(counter) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # top 53 bits


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
def dense_forward(Z, pre, A, W, b, kind):
    """Z (B, O) = f(A (B, I) @ W (I, O) + b (O,)), f the activation `kind`: the CPU dense_forward
    and activate fused (softmax rows are finished later, by softmax_rows or
    output_delta_and_loss). pre (B, O) out: the pre-activation, written only for GELU and SiLU.
    Launch: product_grid(B, O)."""
    row = cuda.blockIdx.x * TILE + cuda.threadIdx.y
    col = cuda.blockIdx.y * TILE + cuda.threadIdx.x
    z = _tiled_dot(A, W, False, False, Z.shape[0], Z.shape[1], A.shape[1], False)
    if row < Z.shape[0] and col < Z.shape[1]:
        z += b[col]
        if kind == GELU or kind == SILU:
            pre[row, col] = z
        Z[row, col] = activate(z, kind)


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
        dA[row, col] = _times_derivative(g, A[row, col], Z[row, col], kind)


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
# Loss and output delta
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def xlogy(x, y):
    """x * log(y), defined as 0 where x == 0 (as scipy.special.xlogy)."""
    if x == 0:
        return 0.0
    return x * math.log(y)


@cuda.jit(device=True)
def _block_sum(partial, value):
    """The sum over the block's threads of value (float64), in a fixed tree order; every thread
    of the block must call this. partial: a (blockDim,) float64 shared array."""
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


@cuda.jit
def output_delta_and_loss(dZ, stats, P, Y, sw, loss, softmax, eps):
    """Output-layer gradient and the batch's loss, as the CPU output_delta_and_loss.

    dZ (B, K) out: sw * (P - Y) (every loss is paired with its canonical output activation, so
    the derivative with respect to the pre-activation is p - y). P (B, K): output activations,
    or with `softmax` pre-activations whose rows get their softmax here first (P then holds the
    probabilities, as on the CPU). Y (B, K) targets; sw (B,) weights; eps: the dtype's machine
    epsilon, probabilities are clipped to [eps, 1 - eps] inside logs (in float64, as the CPU's
    mixed-type min/max does). Adds sum_i sw_i * loss_i to stats[LOSS_SUM] and sum_i sw_i to
    stats[WEIGHT_SUM]. Launch: ONE block of BLOCK threads, rows spread over them; the sums run in
    a fixed order, so results do not depend on scheduling.
    """
    partial = cuda.shared.array(BLOCK, dtype=numba.float64)
    k = P.shape[1]
    loss_sum = 0.0
    weight_sum = 0.0
    for i in range(cuda.threadIdx.x, P.shape[0], cuda.blockDim.x):
        if softmax:
            _softmax_row(P, i)
        sample = 0.0
        for j in range(k):
            p = P[i, j]
            y = Y[i, j]
            dZ[i, j] = (p - y) * sw[i]
            if loss == SQUARED_ERROR:
                sample += (y - p) * (y - p)
            elif loss == LOG_LOSS:
                sample -= xlogy(y, min(max(float(p), eps), 1 - eps))
            elif loss == BINARY_LOG_LOSS:
                pc = min(max(float(p), eps), 1 - eps)
                sample -= xlogy(y, pc) + xlogy(1 - float(y), 1 - pc)
            else:  # POISSON: half deviance, y log(y / p) - y + p
                sample += xlogy(y, y / p) - y + p
        if loss == SQUARED_ERROR:
            sample = 0.5 * sample / k  # scikit-learn averages squared error over outputs
        loss_sum += sw[i] * sample
        weight_sum += sw[i]
    loss_sum = _block_sum(partial, loss_sum)
    weight_sum = _block_sum(partial, weight_sum)
    if cuda.threadIdx.x == 0:
        stats[LOSS_SUM] += loss_sum
        stats[WEIGHT_SUM] += weight_sum


# ---------------------------------------------------------------------------------------------
# Fused finish_gradient + optimizer updates: one thread per parameter, one launch per batch
# ---------------------------------------------------------------------------------------------

@cuda.jit(device=True)
def _finished_gradient(dparams, params, stats, alpha, n_weights, k):
    """The CPU finish_gradient for entry k: (dparams[k] + alpha * W[k]) / sum(sw) (biases are not
    penalised), stored back into dparams and returned. alpha: the dtype's."""
    norm = params.dtype.type(stats[WEIGHT_SUM])
    if k < n_weights:
        g = (dparams[k] + alpha * params[k]) / norm
    else:
        g = dparams[k] / norm
    dparams[k] = g
    return g


@cuda.jit(device=True)
def _store_block_squares(squares, params, n_weights, k):
    """squares[block] := the sum of this block's squared weights, read before any update (the
    CPU finish_gradient's ||W||^2, summed by close_batch). Every thread must call this."""
    partial = cuda.shared.array(BLOCK, dtype=numba.float64)
    value = 0.0
    if k < n_weights:
        value = float(params[k] * params[k])
    total = _block_sum(partial, value)
    if cuda.threadIdx.x == 0:
        squares[cuda.blockIdx.x] = total


@cuda.jit
def finish_gradient(dparams, squares, params, stats, alpha, n_weights):
    """dparams (P,) in place: (dparams + alpha * W) / sum(sw) (sum(sw) = stats[WEIGHT_SUM]);
    squares (G,) out: per-block sums of W^2, whose total is the CPU finish_gradient's return
    value. For L-BFGS; training fuses this into the updates below. Launch: G blocks of BLOCK."""
    k = cuda.grid(1)
    _store_block_squares(squares, params, n_weights, k)
    if k < params.shape[0]:
        _finished_gradient(dparams, params, stats, alpha, n_weights, k)


@cuda.jit
def sgd_update(params, velocity, squares, dparams, stats, alpha, n_weights, learning_rate,
               momentum, nesterov):
    """The CPU finish_gradient and sgd_update fused: params, velocity (P,) updated in place from
    the raw batch gradient dparams (P,), which is left finished; squares (G,) out as in
    finish_gradient. A batch whose weights sum to zero is skipped, as on the CPU. Scalars are in
    the parameters' dtype. Launch: G blocks of BLOCK."""
    if stats[WEIGHT_SUM] == 0:
        return  # the same for every thread: nobody reaches the block reduction
    k = cuda.grid(1)
    _store_block_squares(squares, params, n_weights, k)
    if k < params.shape[0]:
        g = _finished_gradient(dparams, params, stats, alpha, n_weights, k)
        step = momentum * velocity[k] - learning_rate * g
        velocity[k] = step
        if nesterov:  # look ahead along the new velocity
            step = momentum * step - learning_rate * g
        params[k] += step


@cuda.jit
def adam_update(params, m, v, squares, dparams, stats, alpha, n_weights, step_sizes, beta_1,
                beta_2, epsilon, keep, n_decayed):
    """The CPU finish_gradient and adam_update fused (see sgd_update). step_sizes (S,) float64:
    the bias-corrected step size of this call's first, second, ... update (stats[STEPS] counts
    the updates made). keep: AdamW's 1 - learning_rate * weight_decay, applied to the first
    n_decayed entries (the weights; 0 for plain Adam)."""
    if stats[WEIGHT_SUM] == 0:
        return
    k = cuda.grid(1)
    _store_block_squares(squares, params, n_weights, k)
    if k < params.shape[0]:
        g = _finished_gradient(dparams, params, stats, alpha, n_weights, k)
        lr = params.dtype.type(step_sizes[int(stats[STEPS])])
        one = params.dtype.type(1)
        m[k] = beta_1 * m[k] + (one - beta_1) * g
        v[k] = beta_2 * v[k] + (one - beta_2) * (g * g)
        if k < n_decayed:
            params[k] *= keep
        params[k] += -lr * m[k] / (math.sqrt(v[k]) + epsilon)


@cuda.jit
def adagrad_update(params, accumulator, squares, dparams, stats, alpha, n_weights,
                   learning_rate, epsilon):
    """The CPU finish_gradient and adagrad_update fused (see sgd_update)."""
    if stats[WEIGHT_SUM] == 0:
        return
    k = cuda.grid(1)
    _store_block_squares(squares, params, n_weights, k)
    if k < params.shape[0]:
        g = _finished_gradient(dparams, params, stats, alpha, n_weights, k)
        accumulator[k] += g * g
        params[k] -= learning_rate * g / (math.sqrt(accumulator[k]) + epsilon)


@cuda.jit
def rmsprop_update(params, mean_square, squares, dparams, stats, alpha, n_weights,
                   learning_rate, rho, epsilon):
    """The CPU finish_gradient and rmsprop_update fused (see sgd_update)."""
    if stats[WEIGHT_SUM] == 0:
        return
    k = cuda.grid(1)
    _store_block_squares(squares, params, n_weights, k)
    if k < params.shape[0]:
        g = _finished_gradient(dparams, params, stats, alpha, n_weights, k)
        one = params.dtype.type(1)
        mean_square[k] = rho * mean_square[k] + (one - rho) * (g * g)
        params[k] -= learning_rate * g / (math.sqrt(mean_square[k]) + epsilon)


@cuda.jit
def close_batch(stats, squares, alpha, rows):
    """End of a mini-batch: unless its weights summed to zero (then it was skipped), add its
    regularised loss times its row count to stats[EPOCH_TOTAL], as the CPU train_epoch does, and
    count the update in stats[STEPS]; then clear the batch sums. squares (G,): the update's
    per-block sums of W^2; alpha: float64. Launch: ONE block of BLOCK threads."""
    partial = cuda.shared.array(BLOCK, dtype=numba.float64)
    value = 0.0
    for g in range(cuda.threadIdx.x, squares.shape[0], cuda.blockDim.x):
        value += squares[g]
    total = _block_sum(partial, value)
    if cuda.threadIdx.x == 0:
        weight_sum = stats[WEIGHT_SUM]
        if weight_sum != 0:
            stats[EPOCH_TOTAL] += (stats[LOSS_SUM] / weight_sum
                                   + 0.5 * alpha * total / weight_sum) * rows
            stats[STEPS] += 1
        stats[LOSS_SUM] = 0
        stats[WEIGHT_SUM] = 0


@cuda.jit
def add_into(target, source, overwrite):
    """target (P,) += source (P,), or = source when `overwrite` (the first L-BFGS chunk)."""
    k = cuda.grid(1)
    if k < target.shape[0]:
        target[k] = source[k] if overwrite else target[k] + source[k]
