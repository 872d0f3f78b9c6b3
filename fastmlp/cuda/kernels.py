"""CUDA kernels mirroring fastmlp/cpu/kernels.py, one launch per step of a mini-batch.

Each kernel computes what the CPU function of the same name computes, on device arrays. Batch
statistics (weighted loss sum, weight sum, Adam's step counter) stay in small device arrays, so a
whole epoch runs without copying anything back to the host but the final loss. Kernels must not
allocate or synchronise with the host; the launch sequence lives in fastmlp/cuda/__init__.py.

Shape legend as in the CPU module: B batch rows, F features, I fan-in, O fan-out, K outputs,
P parameters. Codes (activations, losses, optimizers) are the CPU module's.
"""

import math

import numpy as np
from numba import cuda

from ..cpu.kernels import (ADAGRAD, ADAM, BINARY_LOG_LOSS, ELU, EXP, GELU, LEAKY_RELU,
                           LEAKY_SLOPE, LOG_LOSS, LOGISTIC, RELU, RMSPROP, SGD, SILU, SOFTMAX,
                           SQUARED_ERROR, TANH)

TILE = 16  # shared-memory tile edge of the matrix product; 16 x 16 = 256 threads per block

# batch statistics slots: [weighted loss sum, weight sum, squared weights, epoch total, step]
LOSS_SUM, WEIGHT_SUM, SQUARES, EPOCH_TOTAL, STEP = 0, 1, 2, 3, 4


@cuda.jit
def gather_rows(Xb, X, X_data, X_indices, X_indptr, rows):
    """Xb (B, F) out: the input rows listed in rows (B,); dense X or CSR (X_data, X_indices,
    X_indptr). One thread per batch row."""
    r = cuda.grid(1)
    if r >= rows.shape[0]:
        return
    i = rows[r]
    if X_indptr.shape[0] > 0:
        for j in range(Xb.shape[1]):
            Xb[r, j] = 0
        for k in range(X_indptr[i], X_indptr[i + 1]):
            Xb[r, X_indices[k]] += X_data[k]
    else:
        for j in range(Xb.shape[1]):
            Xb[r, j] = X[i, j]


@cuda.jit
def gather_targets(Yb, swb, Y, sw, rows):
    """Yb (B, K), swb (B,) out: targets and weights of the listed rows."""
    r = cuda.grid(1)
    if r >= rows.shape[0]:
        return
    for j in range(Y.shape[1]):
        Yb[r, j] = Y[rows[r], j]
    swb[r] = sw[rows[r]]


@cuda.jit
def matmul(C, A, B, transpose_a, transpose_b):
    """C (M, N) = op(A) @ op(B), op transposing when asked; tiled through shared memory.
    One thread per output element, TILE x TILE blocks."""
    sA = cuda.shared.array((TILE, TILE), dtype=C.dtype)
    sB = cuda.shared.array((TILE, TILE), dtype=C.dtype)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    M, N = C.shape
    inner = A.shape[0] if transpose_a else A.shape[1]
    acc = 0.0
    for t in range((inner + TILE - 1) // TILE):
        k = t * TILE + tx
        if row < M and k < inner:
            sA[ty, tx] = A[k, row] if transpose_a else A[row, k]
        else:
            sA[ty, tx] = 0
        k = t * TILE + ty
        if col < N and k < inner:
            sB[ty, tx] = B[col, k] if transpose_b else B[k, col]
        else:
            sB[ty, tx] = 0
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sA[ty, kk] * sB[kk, tx]
        cuda.syncthreads()
    if row < M and col < N:
        C[row, col] = acc


@cuda.jit(device=True)
def _activation(z, kind):
    if kind == LOGISTIC:
        return 1.0 / (1.0 + math.exp(-z))
    if kind == TANH:
        return math.tanh(z)
    if kind == RELU:
        return z if z > 0 else 0.0
    if kind == EXP:
        return math.exp(z)
    if kind == LEAKY_RELU:
        return z if z >= 0 else z * LEAKY_SLOPE
    if kind == ELU:
        return z if z >= 0 else math.expm1(z)
    if kind == GELU:
        return 0.5 * z * (1.0 + math.erf(z * math.sqrt(0.5)))
    if kind == SILU:
        return z / (1.0 + math.exp(-z))
    return z


@cuda.jit
def bias_activate(Z, pre, b, kind, keep_pre):
    """Z (B, O) in place: pre-activations plus bias b (O,), then activation `kind` (softmax
    rows are finished by softmax_rows). pre (B, O) out: z, when keep_pre (GELU, SiLU)."""
    i, j = cuda.grid(2)
    if i >= Z.shape[0] or j >= Z.shape[1]:
        return
    z = Z[i, j] + b[j]
    if keep_pre:
        pre[i, j] = z
    Z[i, j] = z if kind == SOFTMAX else _activation(z, kind)


@cuda.jit
def softmax_rows(Z):
    """Z (B, K) in place: each row's softmax, the row maximum subtracted first. Thread per row."""
    i = cuda.grid(1)
    if i >= Z.shape[0]:
        return
    top = Z[i, 0]
    for j in range(1, Z.shape[1]):
        top = max(top, Z[i, j])
    total = 0.0
    for j in range(Z.shape[1]):
        Z[i, j] = math.exp(Z[i, j] - top)
        total += Z[i, j]
    for j in range(Z.shape[1]):
        Z[i, j] /= total


@cuda.jit(device=True)
def uniform(seed, counter):
    """The CPU module's splitmix64 uniform draw, bit for bit."""
    z = np.uint64(seed) + np.uint64(counter) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@cuda.jit
def dropout_forward(D, M, A, rate, seed, first, stride):
    """As the CPU kernel: D (B, O) = A * M, M the mask (0 or 1 / (1 - rate))."""
    i, j = cuda.grid(2)
    if i >= A.shape[0] or j >= A.shape[1]:
        return
    M[i, j] = 1.0 / (1.0 - rate) if uniform(seed, first + i * stride + j) >= rate else 0.0
    D[i, j] = A[i, j] * M[i, j]


@cuda.jit
def output_delta_and_loss(dZ, stats, P, Y, sw, loss, eps):
    """dZ (B, K) out: sw * (P - Y); adds sum_i sw_i * loss_i to stats[LOSS_SUM] and sum_i sw_i
    to stats[WEIGHT_SUM]. Thread per row; the same per-sample losses as the CPU kernel, with
    probabilities clipped to [eps, 1 - eps] (eps of the parameters' dtype)."""
    i = cuda.grid(1)
    if i >= P.shape[0]:
        return
    k = P.shape[1]
    sample = 0.0
    for j in range(k):
        p = P[i, j]
        y = Y[i, j]
        dZ[i, j] = (p - y) * sw[i]
        if loss == SQUARED_ERROR:
            sample += (y - p) * (y - p)
        elif loss == LOG_LOSS:
            if y != 0:
                sample -= y * math.log(min(max(p, eps), 1 - eps))
        elif loss == BINARY_LOG_LOSS:
            pc = min(max(p, eps), 1 - eps)
            if y != 0:
                sample -= y * math.log(pc)
            if 1 - y != 0:
                sample -= (1 - y) * math.log(1 - pc)
        else:  # POISSON
            if y != 0:
                sample += y * math.log(y / p)
            sample += p - y
    if loss == SQUARED_ERROR:
        sample = 0.5 * sample / k
    cuda.atomic.add(stats, LOSS_SUM, sw[i] * sample)
    cuda.atomic.add(stats, WEIGHT_SUM, sw[i])


@cuda.jit
def column_sums(db, dZ):
    """db (O,) out: the sums of dZ's (B, O) columns. Thread per column."""
    j = cuda.grid(1)
    if j >= dZ.shape[1]:
        return
    total = 0.0
    for i in range(dZ.shape[0]):
        total += dZ[i, j]
    db[j] = total


@cuda.jit
def activation_backward(dZ, A, Z, M, kind, masked):
    """dZ (B, O) in place: times the dropout mask M when masked, then times f'(z), from the
    output A (or the pre-activation Z for GELU and SiLU)."""
    i, j = cuda.grid(2)
    if i >= dZ.shape[0] or j >= dZ.shape[1]:
        return
    g = dZ[i, j]
    if masked:
        g *= M[i, j]
    a = A[i, j]
    if kind == LOGISTIC:
        g = g * a * (1 - a)
    elif kind == TANH:
        g *= 1 - a * a
    elif kind == RELU:
        if a == 0:
            g = 0
    elif kind == LEAKY_RELU:
        if a <= 0:
            g *= LEAKY_SLOPE
    elif kind == ELU:
        if a < 0:
            g *= a + 1
    elif kind == GELU:
        z = Z[i, j]
        g *= 0.5 * (1 + math.erf(z * math.sqrt(0.5))) + z * math.exp(-0.5 * z * z) / math.sqrt(
            2 * math.pi)
    elif kind == SILU:
        z = Z[i, j]
        s = 1 / (1 + math.exp(-z))
        g *= s * (1 + z * (1 - s))
    dZ[i, j] = g


@cuda.jit
def sum_squares(stats, params, n_weights):
    """stats[SQUARES] += sum of params[:n_weights] ** 2: a block reduction, one atomic a block."""
    partial = cuda.shared.array(256, dtype=params.dtype)
    k = cuda.grid(1)
    t = cuda.threadIdx.x
    partial[t] = params[k] * params[k] if k < n_weights else 0
    cuda.syncthreads()
    step = 128
    while step > 0:
        if t < step:
            partial[t] += partial[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        cuda.atomic.add(stats, SQUARES, partial[0])


@cuda.jit
def close_batch(stats, alpha, rows, count_step):
    """One thread: add this batch's loss (times its rows) to the epoch total and, for Adam,
    count the step, unless every weight in the batch was zero (then the batch is skipped, as on
    the CPU)."""
    if cuda.grid(1) != 0:
        return
    w = stats[WEIGHT_SUM]
    if w != 0:
        stats[EPOCH_TOTAL] += (stats[LOSS_SUM] / w + 0.5 * alpha * stats[SQUARES] / w) * rows
        if count_step:
            stats[STEP] += 1


@cuda.jit
def reset_batch(stats):
    if cuda.grid(1) == 0:
        stats[LOSS_SUM] = 0
        stats[WEIGHT_SUM] = 0
        stats[SQUARES] = 0


@cuda.jit
def optimizer_update(params, slot_1, slot_2, dparams, stats, kind, alpha, n_weights,
                     learning_rate, momentum, nesterov, beta_1, beta_2, epsilon, rho,
                     weight_decay):
    """finish_gradient fused with the update of `kind` (sgd, adam/adamw, adagrad, rmsprop),
    one thread per parameter: g = (dparams + alpha * W) / sum(sw), then the step."""
    k = cuda.grid(1)
    w_sum = stats[WEIGHT_SUM]
    if k >= params.shape[0] or w_sum == 0:
        return
    p = params[k]
    g = (dparams[k] + alpha * p) / w_sum if k < n_weights else dparams[k] / w_sum
    dparams[k] = g
    if kind == SGD:
        step = momentum * slot_1[k] - learning_rate * g
        slot_1[k] = step
        if nesterov:
            step = momentum * step - learning_rate * g
        params[k] = p + step
    elif kind == ADAGRAD:
        slot_1[k] += g * g
        params[k] = p - learning_rate * g / (math.sqrt(slot_1[k]) + epsilon)
    elif kind == RMSPROP:
        slot_1[k] = rho * slot_1[k] + (1 - rho) * (g * g)
        params[k] = p - learning_rate * g / (math.sqrt(slot_1[k]) + epsilon)
    else:  # ADAM and ADAMW (kind == ADAM + weight decay)
        t = stats[STEP]
        size = learning_rate * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
        slot_1[k] = beta_1 * slot_1[k] + (1 - beta_1) * g
        slot_2[k] = beta_2 * slot_2[k] + (1 - beta_2) * (g * g)
        if kind != ADAM and k < n_weights:
            p *= 1 - learning_rate * weight_decay
        params[k] = p + -size * slot_1[k] / (math.sqrt(slot_2[k]) + epsilon)


@cuda.jit
def finish_gradient(dparams, params, stats, alpha, n_weights):
    """As the CPU function, for L-BFGS: (dparams + alpha * W) / sum(sw), in place."""
    k = cuda.grid(1)
    if k >= params.shape[0]:
        return
    w_sum = stats[WEIGHT_SUM]
    if k < n_weights:
        dparams[k] = (dparams[k] + alpha * params[k]) / w_sum
    else:
        dparams[k] = dparams[k] / w_sum


@cuda.jit
def add_into(target, source):
    k = cuda.grid(1)
    if k < target.shape[0]:
        target[k] += source[k]


@cuda.jit
def copy_rows(out, start, block):
    """out[start:start + B] = block (B, K)."""
    i, j = cuda.grid(2)
    if i < block.shape[0] and j < block.shape[1]:
        out[start + i, j] = block[i, j]
