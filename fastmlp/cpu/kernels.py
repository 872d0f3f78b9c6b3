"""Compiled CPU kernels: forward pass, losses, backpropagation and fused optimizer updates.

`train_epoch` runs every mini-batch of an epoch in one call; `loss_and_gradient` serves L-BFGS and
`predict` serves inference, both in bounded chunks. Kernels never call back into Python.
Everything compiled lives in this one module because numba's on-disk cache does not notice when a
callee in another module changes.

Shape legend: B rows in a batch or chunk, N rows in the data set, F input features, I fan-in,
O fan-out, K outputs, P parameters (length of every flat buffer), L weight layers.
Argument order: outputs first, then inputs, then sizes/codes; gradients carry a ``d`` prefix.
"""

import math

import numpy as np

from ..codes import (
    ADAGRAD,
    ADAMW,
    BINARY_LOG_LOSS,
    ELU,
    EXP,
    GELU,
    LEAKY_RELU,
    LEAKY_SLOPE,
    LOG_LOSS,
    LOGISTIC,
    RELU,
    RMSPROP,
    SGD,
    SILU,
    SOFTMAX,
    SQUARED_ERROR,
    TANH,
)
from ..config import njit

# ---------------------------------------------------------------------------------------------
# Views into flat buffers. `layers` is Layout.table: rows (fan_in, fan_out, w_offset, b_offset).
# ---------------------------------------------------------------------------------------------

@njit
def weights(flat, layers, i):
    """(I, O) view of layer i's weight matrix inside a flat buffer (parameters or gradients)."""
    fan_in, fan_out, w_off = layers[i, 0], layers[i, 1], layers[i, 2]
    return flat[w_off:w_off + fan_in * fan_out].reshape((fan_in, fan_out))


@njit
def biases(flat, layers, i):
    """(O,) view of layer i's bias vector inside a flat buffer."""
    return flat[layers[i, 3]:layers[i, 3] + layers[i, 1]]


@njit
def layer_rows(work, layers, i, n):
    """(n, O) view of layer i's slot in a work buffer that holds every layer's rows back to back."""
    offset = 0
    for j in range(i):
        offset += layers[j, 1]
    offset *= n
    return work[offset:offset + n * layers[i, 1]].reshape((n, layers[i, 1]))


@njit
def batch_rows(buffer, n, width):
    """(n, width) view of the first n rows of a flat staging buffer."""
    return buffer[:n * width].reshape((n, width))


@njit
def gather_rows(Xb, X, X_data, X_indices, X_indptr, rows):
    """Copy the input rows listed in `rows` into the dense batch Xb.

    Xb (B, F) out; X (N, F) dense input, or CSR input given as X_data, X_indices, X_indptr
    (X_indptr has N + 1 entries when the input is sparse and none when it is dense); rows (B,).
    """
    if X_indptr.shape[0] > 0:
        Xb[:] = 0
        for r in range(rows.shape[0]):
            i = rows[r]
            for k in range(X_indptr[i], X_indptr[i + 1]):
                Xb[r, X_indices[k]] += X_data[k]  # += : duplicate CSR entries add up, as in scipy
    else:
        for r in range(rows.shape[0]):
            Xb[r, :] = X[rows[r], :]


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

@njit
def activate(Z, kind):
    """Apply activation `kind` in place. Z (B, O): pre-activations in, activations out."""
    n, m = Z.shape
    one = Z.dtype.type(1)
    if kind == LOGISTIC:
        for i in range(n):
            for j in range(m):
                Z[i, j] = one / (one + np.exp(-Z[i, j]))
    elif kind == TANH:
        for i in range(n):
            for j in range(m):
                Z[i, j] = np.tanh(Z[i, j])
    elif kind == RELU:
        for i in range(n):
            for j in range(m):
                if Z[i, j] < 0:
                    Z[i, j] = 0
    elif kind == EXP:
        for i in range(n):
            for j in range(m):
                Z[i, j] = np.exp(Z[i, j])
    elif kind == LEAKY_RELU:
        slope = Z.dtype.type(LEAKY_SLOPE)
        for i in range(n):
            for j in range(m):
                if Z[i, j] < 0:
                    Z[i, j] *= slope
    elif kind == ELU:
        for i in range(n):
            for j in range(m):
                if Z[i, j] < 0:
                    Z[i, j] = np.expm1(Z[i, j])
    elif kind == GELU:
        # Exact GELU, z * Phi(z) with Phi the standard normal CDF.
        half = Z.dtype.type(0.5)
        root_half = Z.dtype.type(math.sqrt(0.5))
        for i in range(n):
            for j in range(m):
                z = Z[i, j]
                Z[i, j] = half * z * (one + math.erf(z * root_half))
    elif kind == SILU:
        for i in range(n):
            for j in range(m):
                z = Z[i, j]
                Z[i, j] = z / (one + np.exp(-z))
    elif kind == SOFTMAX:
        # Subtracting the row maximum keeps exp() from overflowing; the result is unchanged.
        for i in range(n):
            top = Z[i, 0]
            for j in range(1, m):
                top = max(top, Z[i, j])
            total = Z.dtype.type(0)
            for j in range(m):
                Z[i, j] = np.exp(Z[i, j] - top)
                total += Z[i, j]
            for j in range(m):
                Z[i, j] /= total


@njit
def activation_backward(dZ, A, Z, kind):
    """Multiply the incoming gradient dZ (B, O) in place by f'(z). Most derivatives are written in
    terms of the activation's output A = f(z) (B, O); GELU and SiLU need the pre-activation Z
    (B, O), which is only read for them."""
    n, m = dZ.shape
    one = dZ.dtype.type(1)
    if kind == LOGISTIC:
        for i in range(n):
            for j in range(m):
                dZ[i, j] = dZ[i, j] * A[i, j] * (one - A[i, j])
    elif kind == TANH:
        for i in range(n):
            for j in range(m):
                dZ[i, j] *= one - A[i, j] * A[i, j]
    elif kind == RELU:
        for i in range(n):
            for j in range(m):
                if A[i, j] == 0:
                    dZ[i, j] = 0
    elif kind == LEAKY_RELU:
        slope = dZ.dtype.type(LEAKY_SLOPE)
        for i in range(n):
            for j in range(m):
                if A[i, j] <= 0:
                    dZ[i, j] *= slope
    elif kind == ELU:
        for i in range(n):
            for j in range(m):
                if A[i, j] < 0:
                    dZ[i, j] *= A[i, j] + one  # d/dz (e^z - 1) = e^z = a + 1
    elif kind == GELU:
        # d/dz z Phi(z) = Phi(z) + z phi(z)
        half = dZ.dtype.type(0.5)
        root_half = dZ.dtype.type(math.sqrt(0.5))
        inv_root_2pi = dZ.dtype.type(1 / math.sqrt(2 * math.pi))
        for i in range(n):
            for j in range(m):
                z = Z[i, j]
                cdf = half * (one + math.erf(z * root_half))
                dZ[i, j] *= cdf + z * inv_root_2pi * np.exp(-half * z * z)
    elif kind == SILU:
        # d/dz z s(z) = s(z) (1 + z (1 - s(z))), s the logistic function
        for i in range(n):
            for j in range(m):
                z = Z[i, j]
                sig = one / (one + np.exp(-z))
                dZ[i, j] *= sig * (one + z * (one - sig))


# ---------------------------------------------------------------------------------------------
# Dropout: inverted dropout with a counter-based generator, so a mask depends only on (seed,
# position) and any backend can draw the same one.
# ---------------------------------------------------------------------------------------------

@njit
def uniform(seed, counter):
    """A uniform number in [0, 1) from the splitmix64 hash of seed + counter."""
    z = np.uint64(seed) + np.uint64(counter) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # top 53 bits


@njit
def dropout_forward(D, M, A, rate, seed, first, stride):
    """Drop each unit with probability `rate` and scale the survivors by 1 / (1 - rate).

    D (B, O) out: A * M; M (B, O) out: the mask, 0 or 1 / (1 - rate); A (B, O) activations.
    Element (i, j) draws uniform(seed, first + i * stride + j).
    """
    n, m = A.shape
    scale = A.dtype.type(1.0 / (1.0 - rate))
    zero = A.dtype.type(0)
    for i in range(n):
        for j in range(m):
            M[i, j] = scale if uniform(seed, first + i * stride + j) >= rate else zero
            D[i, j] = A[i, j] * M[i, j]


# ---------------------------------------------------------------------------------------------
# Loss and output delta
# ---------------------------------------------------------------------------------------------

@njit
def xlogy(x, y):
    """x * log(y), defined as 0 where x == 0 (as scipy.special.xlogy)."""
    if x == 0:
        return 0.0
    return x * np.log(y)


@njit
def output_delta_and_loss(dZ, P, Y, sw, loss):
    """Output-layer gradient and the weighted sum of per-sample losses.

    dZ (B, K) out: sw * (P - Y), the derivative of sw * loss with respect to the output
    pre-activation (softmax + log loss, logistic + binary log loss, identity + squared error and
    exp + Poisson deviance all reduce to p - y); P (B, K) output activations; Y (B, K) targets;
    sw (B,) sample weights. Returns sum_i sw_i * loss_i as float64.
    """
    n, k = P.shape
    eps = np.finfo(P.dtype).eps  # probabilities are clipped to [eps, 1 - eps] inside logs
    total = 0.0
    for i in range(n):
        sample = 0.0
        for j in range(k):
            p = P[i, j]
            y = Y[i, j]
            dZ[i, j] = (p - y) * sw[i]
            if loss == SQUARED_ERROR:
                sample += (y - p) * (y - p)
            elif loss == LOG_LOSS:
                sample -= xlogy(y, min(max(p, eps), 1 - eps))
            elif loss == BINARY_LOG_LOSS:
                pc = min(max(p, eps), 1 - eps)
                sample -= xlogy(y, pc) + xlogy(1 - y, 1 - pc)
            else:  # POISSON: half deviance, y log(y / p) - y + p
                sample += xlogy(y, y / p) - y + p
        if loss == SQUARED_ERROR:
            sample = 0.5 * sample / k  # scikit-learn averages squared error over outputs
        total += sw[i] * sample
    return total


# ---------------------------------------------------------------------------------------------
# Dense layers, forward and backward through the whole network
# ---------------------------------------------------------------------------------------------

@njit
def dense_forward(Z, A, W, b):
    """Z (B, O) = A (B, I) @ W (I, O) + b (O,)."""
    np.dot(A, W, Z)
    n, m = Z.shape
    for i in range(n):
        for j in range(m):
            Z[i, j] += b[j]


@njit
def dense_backward(dW, db, dZ, A):
    """Unnormalised parameter gradients of one layer: dW (I, O) = A.T @ dZ, db (O,) = column
    sums of dZ (B, O). A (B, I) is the layer's input."""
    np.dot(A.T, dZ, dW)
    db[:] = 0
    for i in range(dZ.shape[0]):
        for j in range(dZ.shape[1]):
            db[j] += dZ[i, j]


@njit
def layer_input(work, Xb, layers, i, n, dropping):
    """(B, I) input of weight layer i: the data for i = 0, else the previous layer's
    activations, or their dropped-out version while training with dropout."""
    acts, _, _, dropped = work
    if i == 0:
        return Xb
    return layer_rows(dropped if dropping else acts, layers, i - 1, n)


@njit
def forward(work, params, Xb, net, first_row):
    """Run the network on Xb (B, F) and return the (B, K) output activations.

    work = (acts, pre, masks, dropped): per-layer slots (see layer_rows) for activations,
    pre-activations (kept only for GELU/SiLU), dropout masks and dropped-out activations.
    net: a bundles.Network; net.dropout > 0 means training with dropout: first_row is the
    batch's position in the epoch, which fixes the dropout draws.
    """
    layers, hidden, output, dropout = net.layers, net.hidden, net.output, net.dropout
    acts, pre, masks, dropped = work
    n = Xb.shape[0]
    last = layers.shape[0] - 1
    hidden_units = 0
    for i in range(last):
        hidden_units += layers[i, 1]
    unit_offset = 0
    for i in range(last + 1):
        Z = layer_rows(acts, layers, i, n)
        dense_forward(Z, layer_input(work, Xb, layers, i, n, dropout > 0),
                      weights(params, layers, i), biases(params, layers, i))
        kind = output if i == last else hidden
        if kind == GELU or kind == SILU:
            layer_rows(pre, layers, i, n)[:] = Z
        activate(Z, kind)
        if dropout > 0 and i < last:
            dropout_forward(layer_rows(dropped, layers, i, n), layer_rows(masks, layers, i, n), Z,
                            dropout, net.seed, first_row * hidden_units + unit_offset, hidden_units)
            unit_offset += layers[i, 1]
    return layer_rows(acts, layers, last, n)


@njit
def backprop(dparams, work, deltas, params, Xb, Yb, sw, net, first_row):
    """Forward and backward pass over one batch.

    dparams (P,) out: sum_i sw_i * d loss_i / d params, NOT yet divided by sum(sw) and without the
    L2 term (see finish_gradient), so chunks of a large data set can be summed. work, deltas:
    work buffers with room for B rows of every layer (see forward). Xb (B, F), Yb (B, K), sw (B,).
    Returns sum_i sw_i * loss_i.
    """
    layers, hidden, loss, dropout = net.layers, net.hidden, net.loss, net.dropout
    acts, pre, masks, _ = work
    n = Xb.shape[0]
    last = layers.shape[0] - 1
    P = forward(work, params, Xb, net, first_row)
    loss_sum = output_delta_and_loss(layer_rows(deltas, layers, last, n), P, Yb, sw, loss)
    for i in range(last, -1, -1):
        dZ = layer_rows(deltas, layers, i, n)
        dense_backward(weights(dparams, layers, i), biases(dparams, layers, i), dZ,
                       layer_input(work, Xb, layers, i, n, dropout > 0))
        if i > 0:
            dA = layer_rows(deltas, layers, i - 1, n)
            np.dot(dZ, weights(params, layers, i).T, dA)
            if dropout > 0:
                dA *= layer_rows(masks, layers, i - 1, n)  # dropped units pass no gradient
            activation_backward(dA, layer_rows(acts, layers, i - 1, n),
                                layer_rows(pre, layers, i - 1, n), hidden)
    return loss_sum


@njit
def finish_gradient(dparams, params, layers, alpha, sw_sum):
    """Add the L2 penalty's gradient alpha * W to the weight part and divide everything by
    sum(sw), in place. Returns ||W||^2 (biases are not penalised)."""
    n_weights = layers[0, 3]  # weights come first in the flat buffer, then biases
    alpha_ = params.dtype.type(alpha)
    norm_ = params.dtype.type(sw_sum)
    for k in range(n_weights):
        dparams[k] = (dparams[k] + alpha_ * params[k]) / norm_
    for k in range(n_weights, params.shape[0]):
        dparams[k] /= norm_
    # A BLAS dot, as scikit-learn computes it: a plain loop would be a serial sum that cannot be
    # vectorised without fastmath.
    weights_ = params[:n_weights]
    return float(np.dot(weights_, weights_))


# ---------------------------------------------------------------------------------------------
# Fused optimizer updates: one pass over the flat buffers
# ---------------------------------------------------------------------------------------------

@njit
def sgd_update(params, velocity, dparams, learning_rate, momentum, nesterov):
    """params (P,), velocity (P,) updated in place from the gradient dparams (P,)."""
    lr = params.dtype.type(learning_rate)
    mu = params.dtype.type(momentum)
    for k in range(params.shape[0]):
        step = mu * velocity[k] - lr * dparams[k]
        velocity[k] = step
        if nesterov:  # look ahead along the new velocity
            step = mu * step - lr * dparams[k]
        params[k] += step


@njit
def adam_update(params, m, v, dparams, step_size, beta_1, beta_2, epsilon, decay, n_decayed):
    """params, first moment m and second moment v (P,) updated in place from dparams (P,).
    step_size already contains Adam's bias correction for this step. decay > 0 is AdamW's
    decoupled weight decay: the first n_decayed entries (the weights) shrink by that fraction."""
    lr = params.dtype.type(step_size)
    b1 = params.dtype.type(beta_1)
    b2 = params.dtype.type(beta_2)
    eps = params.dtype.type(epsilon)
    one = params.dtype.type(1)
    keep = params.dtype.type(1 - decay)
    for k in range(params.shape[0]):
        g = dparams[k]
        m[k] = b1 * m[k] + (one - b1) * g
        v[k] = b2 * v[k] + (one - b2) * (g * g)
        if decay > 0 and k < n_decayed:
            params[k] *= keep
        params[k] += -lr * m[k] / (np.sqrt(v[k]) + eps)


@njit
def adagrad_update(params, accumulator, dparams, learning_rate, epsilon):
    """Adagrad: accumulate squared gradients (P,) and divide each step by their square root."""
    lr = params.dtype.type(learning_rate)
    eps = params.dtype.type(epsilon)
    for k in range(params.shape[0]):
        g = dparams[k]
        accumulator[k] += g * g
        params[k] -= lr * g / (np.sqrt(accumulator[k]) + eps)


@njit
def rmsprop_update(params, mean_square, dparams, learning_rate, rho, epsilon):
    """RMSprop: a decaying mean of squared gradients (P,) normalises each step."""
    lr = params.dtype.type(learning_rate)
    r = params.dtype.type(rho)
    eps = params.dtype.type(epsilon)
    one = params.dtype.type(1)
    for k in range(params.shape[0]):
        g = dparams[k]
        mean_square[k] = r * mean_square[k] + (one - r) * (g * g)
        params[k] -= lr * g / (np.sqrt(mean_square[k]) + eps)


@njit
def adam_step_size(learning_rate, beta_1, beta_2, step):
    """Adam's bias-corrected step size for update number `step` (counted from 1)."""
    t = float(step)  # float exponent: the same pow() Python uses for beta ** t
    return learning_rate * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)


# ---------------------------------------------------------------------------------------------
# Whole-epoch, whole-data-set and inference drivers: one compiled call each
# ---------------------------------------------------------------------------------------------

@njit
def _work_buffers(dtype_like, layers, n_rows, n_features, n_outputs):
    """(work, deltas, xbuf, ybuf, swbuf) for batches of at most n_rows rows (see forward)."""
    units = 0
    for i in range(layers.shape[0]):
        units += layers[i, 1]
    dtype = dtype_like.dtype
    work = (np.empty(n_rows * units, dtype), np.empty(n_rows * units, dtype),
            np.empty(n_rows * units, dtype), np.empty(n_rows * units, dtype))
    deltas = np.empty(n_rows * units, dtype)
    xbuf = np.empty(n_rows * n_features, dtype)
    ybuf = np.empty(n_rows * n_outputs, dtype)
    swbuf = np.empty(n_rows, dtype)
    return work, deltas, xbuf, ybuf, swbuf


@njit
def _stage_batch(xbuf, ybuf, swbuf, features, Y, sw, rows):
    """Gather the listed rows of inputs, targets and weights into the staging buffers; returns
    (B, F), (B, K) and (B,) views."""
    X, X_data, X_indices, X_indptr = features.X, features.data, features.indices, features.indptr
    n = rows.shape[0]
    Xb = batch_rows(xbuf, n, X.shape[1])
    Yb = batch_rows(ybuf, n, Y.shape[1])
    swb = swbuf[:n]
    gather_rows(Xb, X, X_data, X_indices, X_indptr, rows)
    for r in range(n):
        Yb[r, :] = Y[rows[r], :]
        swb[r] = sw[rows[r]]
    return Xb, Yb, swb


@njit
def train_epoch(state, features, Y, sw, order, batch_size, net, opt):
    """One epoch of mini-batch training, every batch in this one call.

    state: a bundles.TrainState, updated in place; features: a bundles.Features, dense or CSR;
    Y (N, K) targets; sw (N,) sample weights; order (n,) the rows to visit, in visiting order;
    net: a bundles.Network; opt: a bundles.OptimizerStep.
    Returns (sum over batches of batch loss * batch rows, Adam's step counter after the epoch).
    """
    params, dparams, slot_1, slot_2 = state.params, state.dparams, state.slot_1, state.slot_2
    layers, alpha = net.layers, net.alpha
    kind, learning_rate, epsilon, step = opt.kind, opt.learning_rate, opt.epsilon, opt.step
    X = features.X
    work, deltas, xbuf, ybuf, swbuf = _work_buffers(params, layers, batch_size, X.shape[1],
                                                    Y.shape[1])
    n_weights = layers[0, 3]
    total = 0.0
    for start in range(0, order.shape[0], batch_size):
        rows = order[start:start + batch_size]
        Xb, Yb, swb = _stage_batch(xbuf, ybuf, swbuf, features, Y, sw, rows)
        loss_sum = backprop(dparams, work, deltas, params, Xb, Yb, swb, net, start)
        sw_sum = swb.sum()
        if sw_sum == 0:
            continue  # every sample in this batch has zero weight: nothing to learn from it
        squares = finish_gradient(dparams, params, layers, alpha, sw_sum)
        total += (loss_sum / sw_sum + 0.5 * alpha * squares / sw_sum) * rows.shape[0]
        if kind == SGD:
            sgd_update(params, slot_1, dparams, learning_rate, opt.momentum, opt.nesterov)
        elif kind == ADAGRAD:
            adagrad_update(params, slot_1, dparams, learning_rate, epsilon)
        elif kind == RMSPROP:
            rmsprop_update(params, slot_1, dparams, learning_rate, opt.rho, epsilon)
        else:  # ADAM, ADAMW
            step += 1
            decay = learning_rate * opt.weight_decay if kind == ADAMW else 0.0
            adam_update(params, slot_1, slot_2, dparams,
                        adam_step_size(learning_rate, opt.beta_1, opt.beta_2, step),
                        opt.beta_1, opt.beta_2, epsilon, decay, n_weights)
    return total, step


@njit
def loss_and_gradient(dparams, params, features, Y, sw, net, chunk_rows):
    """Full-data-set regularised loss (returned) and its gradient dparams (P,) out, computed in
    chunks of at most chunk_rows rows so that memory stays bounded. Used by L-BFGS."""
    layers, alpha = net.layers, net.alpha
    X = features.X
    n = Y.shape[0]
    chunk_rows = min(chunk_rows, n)
    work, deltas, xbuf, ybuf, swbuf = _work_buffers(params, layers, chunk_rows, X.shape[1],
                                                    Y.shape[1])
    chunk_grad = np.empty_like(dparams)
    all_rows = np.arange(n)
    dparams[:] = 0
    loss_sum = 0.0
    sw_sum = 0.0
    for start in range(0, n, chunk_rows):
        rows = all_rows[start:start + chunk_rows]
        Xb, Yb, swb = _stage_batch(xbuf, ybuf, swbuf, features, Y, sw, rows)
        loss_sum += backprop(chunk_grad, work, deltas, params, Xb, Yb, swb, net, start)
        dparams += chunk_grad
        sw_sum += swb.sum()
    squares = finish_gradient(dparams, params, layers, alpha, sw_sum)
    return loss_sum / sw_sum + 0.5 * alpha * squares / sw_sum


@njit
def predict(out, params, features, rows, net, chunk_rows):
    """Output activations out (R, K) for the input rows listed in rows (R,), chunk by chunk;
    net.dropout must be 0 (inference)."""
    X, X_data, X_indices, X_indptr = features.X, features.data, features.indices, features.indptr
    n = rows.shape[0]
    chunk_rows = min(chunk_rows, n)
    work, _, xbuf, _, _ = _work_buffers(params, net.layers, chunk_rows, X.shape[1], 0)
    for start in range(0, n, chunk_rows):
        chunk = rows[start:start + chunk_rows]
        if X_indptr.shape[0] == 0 and _consecutive(chunk):
            Xb = X[chunk[0]:chunk[0] + chunk.shape[0]]  # already a contiguous block: no copy
        else:
            Xb = batch_rows(xbuf, chunk.shape[0], X.shape[1])
            gather_rows(Xb, X, X_data, X_indices, X_indptr, chunk)
        out[start:start + chunk.shape[0], :] = forward(work, params, Xb, net, start)


@njit
def _consecutive(rows):
    """True when rows (R,) is an increasing run r, r + 1, r + 2, ..."""
    for r in range(1, rows.shape[0]):
        if rows[r] != rows[r - 1] + 1:
            return False
    return True
