"""The persistent CUDA kernel: a whole training epoch of a small network in ONE launch.

One block runs every mini-batch (gather, forward, loss, backward, gradient finishing and the
optimizer update) with the parameters and the batch's activations in shared memory, phases
separated by cuda.syncthreads(); only the epoch's loss and update count are written out. Sums
use fixed-order block reductions, never atomics, so results are deterministic. Launched only by
fastmlp/cuda/launch.py, which checks that the network fits (shared_elements) before using it.
The arithmetic is the per-batch kernels' (kernels.py): the same device functions.
"""

import numba
from numba import cuda

from .. import ops
from .kernels import (
    SIMULATOR,
    StepScalars,
    activation_value,
    block_sum,
    delta_and_sample_loss,
    finished_gradient,
    is_softmax,
    keeps_pre_activation,
    optimizer_step,
    softmax_in_place,
    times_derivative,
    uniform,
)

# Threads of the one block (a power of two: block_sum halves it). The simulator runs one Python
# thread per CUDA thread: few there.
THREADS = 16 if SIMULATOR else 256
# Slots of the float64 `totals` array train_epoch_fused writes once, at the end of the epoch.
EPOCH_TOTAL, UPDATES = 0, 1


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


@cuda.jit
def train_epoch_fused(params, slot_1, slot_2, totals, features, Y, sw, order, step_sizes,
                      batch_size, net, opt, eps):
    """One epoch of mini-batch training, every batch in this one launch (the CPU train_epoch).

    params, slot_1, slot_2 (P,) updated in place (the parameters live in shared memory during the
    epoch and are written back at its end); totals (2,) float64 out: [EPOCH_TOTAL] the sum over
    batches of batch loss * batch rows, [UPDATES] the number of updates made. features: a
    bundles.Features of device arrays; Y (N, K); sw (N,); order (n,) rows in visiting order;
    step_sizes (S,) float64: Adam's bias-corrected step size of this epoch's first, second, ...
    update (unused by the other optimizers); net: a bundles.Network (layers on the device); opt:
    a bundles.OptimizerStep; eps: the dtype's machine epsilon. Each batch's parameter gradient is
    consumed where it is made: layer i's weights are updated right after the delta of layer
    i - 1 has been computed from them, so no gradient buffer is needed.
    Launch: ONE block of THREADS threads, shared_elements(...) x itemsize dynamic shared bytes.
    """
    sh = cuda.shared.array(0, dtype=params.dtype)
    partial = cuda.shared.array(THREADS, dtype=numba.float64)
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    dt = params.dtype.type
    layers = net.layers
    last = layers.shape[0] - 1
    n_params = params.shape[0]
    n_weights = layers[0, 3]  # weights come first in the flat buffer, then biases
    F = features.X.shape[1]
    K = Y.shape[1]
    B = batch_size
    units = 0
    for i in range(last + 1):
        units += layers[i, 1]
    hidden_units = units - K
    keep_pre = keeps_pre_activation(net.hidden)
    dropping = net.dropout > 0
    sparse = features.indptr.shape[0] > 0

    # Where each buffer starts in sh (see shared_elements); layer i's rows of acts, deltas, pre,
    # masks and dropped start B * (units of the layers before i) further on, row stride fan-out.
    x_at = n_params
    y_at = x_at + B * F
    sw_at = y_at + B * K
    acts_at = sw_at + B
    deltas_at = acts_at + B * units
    pre_at = deltas_at + B * units
    masks_at = pre_at + (B * units if keep_pre else 0)
    dropped_at = masks_at + B * hidden_units

    alpha = dt(net.alpha)
    scale = dt(1.0 / (1.0 - net.dropout))
    keep = dt(ops.weight_keep(opt.learning_rate, opt.weight_decay))

    for k in range(t, n_params, T):
        sh[k] = params[k]
    total = 0.0
    updates = 0
    n = order.shape[0]
    for start in range(0, n, B):
        nb = min(B, n - start)
        # ---- gather the batch's inputs, targets and weights
        for e in range(t, nb * F, T):
            r = e // F
            sh[x_at + e] = dt(0) if sparse else features.X[order[start + r], e - r * F]
        for e in range(t, nb * K, T):
            r = e // K
            sh[y_at + e] = Y[order[start + r], e - r * K]
        for r in range(t, nb, T):
            sh[sw_at + r] = sw[order[start + r]]
        if sparse:
            cuda.syncthreads()  # the rows are zero before entries land in them
            for r in range(t, nb, T):
                i = order[start + r]
                # One thread per row, entries in order: duplicates add up as on the CPU.
                for k in range(features.indptr[i], features.indptr[i + 1]):
                    sh[x_at + r * F + features.indices[k]] += features.data[k]
        cuda.syncthreads()

        # ---- forward: Z = A @ W + b, activation, dropout; one thread per output element
        in_at = x_at
        offset = 0  # units of the layers before i
        for i in range(last + 1):
            fan_in, fan_out, w_at, b_at = layers[i, 0], layers[i, 1], layers[i, 2], layers[i, 3]
            kind = net.output if i == last else net.hidden
            here = B * offset
            for e in range(t, nb * fan_out, T):
                r = e // fan_out
                j = e - r * fan_out
                acc = dt(0)
                for c in range(fan_in):
                    acc += sh[in_at + r * fan_in + c] * sh[w_at + c * fan_out + j]
                z = acc + sh[b_at + j]
                if keep_pre and i < last:
                    sh[pre_at + here + e] = z
                a = activation_value(z, kind)
                sh[acts_at + here + e] = a
                if dropping and i < last:
                    draw = uniform(net.seed, (start + r) * hidden_units + offset + j)
                    mask = scale if draw >= net.dropout else dt(0)
                    sh[masks_at + here + e] = mask
                    sh[dropped_at + here + e] = a * mask
            cuda.syncthreads()
            in_at = (dropped_at if dropping else acts_at) + here
            offset += fan_out

        # ---- output delta and loss: one thread per row, sums in a fixed order
        out_at = B * (units - K)
        loss_part = 0.0
        weight_part = 0.0
        for r in range(t, nb, T):
            p = sh[acts_at + out_at + r * K:acts_at + out_at + (r + 1) * K]
            if is_softmax(net.output):
                softmax_in_place(p)
            loss_part += delta_and_sample_loss(
                sh[deltas_at + out_at + r * K:deltas_at + out_at + (r + 1) * K], p,
                sh[y_at + r * K:y_at + (r + 1) * K], sh[sw_at + r], net.loss, eps)
            weight_part += float(sh[sw_at + r])
        loss_sum = block_sum(partial, loss_part)
        weight_sum = block_sum(partial, weight_part)
        if weight_sum == 0:
            continue  # every sample has zero weight: nothing to learn (the same for all threads)

        # ---- backward, layer by layer from the output; each layer's parameters are updated as
        # soon as the next delta down no longer needs them
        norm = dt(weight_sum)
        step_size = dt(step_sizes[updates]) if step_sizes.shape[0] > updates else dt(0)
        # The CPU update's scalars; AdamW decays only the weights, which come before the biases.
        decayed = StepScalars(dt(opt.learning_rate), dt(opt.momentum), opt.nesterov,
                              dt(opt.beta_1), dt(opt.beta_2), dt(opt.epsilon), dt(opt.rho),
                              step_size, keep)
        kept = StepScalars(decayed.learning_rate, decayed.momentum, decayed.nesterov,
                           decayed.beta_1, decayed.beta_2, decayed.epsilon, decayed.rho,
                           step_size, dt(1))
        squares = 0.0
        offset = units - K
        for i in range(last, -1, -1):
            fan_in, fan_out, w_at, b_at = layers[i, 0], layers[i, 1], layers[i, 2], layers[i, 3]
            dz_at = deltas_at + B * offset
            below = offset - fan_in  # units before layer i - 1
            if i > 0:
                # dA = ((dZ @ W.T) * mask) * f'(z): the delta of layer i - 1
                for e in range(t, nb * fan_in, T):
                    r = e // fan_in
                    c = e - r * fan_in
                    g = dt(0)
                    # Thread c starts at column c mod O: neighbouring threads then read W from
                    # different shared-memory banks instead of all from one (stride O).
                    shift = c % fan_out
                    for step in range(fan_out):
                        o = step + shift
                        if o >= fan_out:
                            o -= fan_out
                        g += sh[dz_at + r * fan_out + o] * sh[w_at + c * fan_out + o]
                    if dropping:
                        g *= sh[masks_at + B * below + e]  # dropped units pass no gradient
                    z = sh[pre_at + B * below + e] if keep_pre else dt(0)
                    sh[deltas_at + B * below + e] = times_derivative(
                        g, sh[acts_at + B * below + e], z, net.hidden)
                cuda.syncthreads()  # W of layer i has been read: it may change now
                in_at = (dropped_at if dropping else acts_at) + B * below
            else:
                in_at = x_at
            # Layer i's gradient (its I x O weights, then its O biases), finished and applied.
            for e in range(t, (fan_in + 1) * fan_out, T):
                if e < fan_in * fan_out:
                    c = e // fan_out
                    o = e - c * fan_out
                    k = w_at + e
                else:
                    c = -1
                    o = e - fan_in * fan_out
                    k = b_at + o
                g = dt(0)
                for r in range(nb):
                    a = sh[in_at + r * fan_in + c] if c >= 0 else dt(1)
                    g += a * sh[dz_at + r * fan_out + o]
                w = sh[k]
                if k < n_weights:
                    squares += float(w * w)  # ||W||^2 before the update, as the CPU's
                g = finished_gradient(g, w, k, n_weights, alpha, norm)
                w, s_1, s_2 = optimizer_step(w, g, slot_1[k], slot_2[k],
                                             decayed if k < n_weights else kept, opt.kind)
                slot_1[k] = s_1
                slot_2[k] = s_2  # the same array as slot_1 for one-slot optimizers
                sh[k] = w
            offset = below
        squares = block_sum(partial, squares)  # also: every update is done
        total += (loss_sum / weight_sum + 0.5 * net.alpha * squares / weight_sum) * nb
        updates += 1

    cuda.syncthreads()
    for k in range(t, n_params, T):
        params[k] = sh[k]
    if t == 0:
        totals[EPOCH_TOTAL] = total
        totals[UPDATES] = updates
