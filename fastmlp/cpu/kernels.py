"""Compiled CPU kernels: forward pass, losses, backpropagation and fused optimizer updates.

`epoch` runs every mini-batch of an epoch in one call; `full_loss_and_gradient` serves L-BFGS and
`predict_rows` serves inference, both in bounded chunks. Kernels never call back into Python and
allocate nothing per batch: the backend (fastmlp/cpu/__init__.py) hands them a Workspace.

Compile once, for every configuration. The operations (activations, losses, optimizers) come as
run-time codes, so each entry point is compiled once per dtype and serves every network; a new
configuration compiles nothing (`python -m fastmlp.compile`, run while the package is built,
compiles them all). The choice among operations is made once per layer and batch, by a
dispatcher generated from fastmlp/ops.py, and each operation has its own loop, compiled for it
(its scalar maths inlined, nothing chosen per element). No kernel reshapes or formats numbers in
an error message: numba would compile that formatting into every caller, seconds of it.

Shape legend: B rows in a batch or chunk, N rows in the data set, F input features, I fan-in,
O fan-out, K outputs, P parameters (length of every flat buffer), L weight layers, U units of all
layers together. Argument order: outputs first, then inputs, then sizes and codes; gradients
carry a ``d`` prefix.
"""

import functools
import math

import numpy as np

from .. import ops
from ..bundles import (
    BIAS_OFFSET,
    FAN_IN,
    FAN_OUT,
    WEIGHT_OFFSET,
    Network,
    OptimizerStep,
    TrainState,
)
from ..config import entry_point, njit
from ..numba_internals import FLUSH_DENORMALS, fp_control, matrix_view, unmanaged, vector_view

# ---------------------------------------------------------------------------------------------
# Views into flat buffers, and the floating-point environment of float32 training
# ---------------------------------------------------------------------------------------------


@njit
def weights(flat, layers, i):
    """(I, O) view of layer i's weight matrix inside a flat buffer (parameters or gradients)."""
    return matrix_view(flat, layers[i, WEIGHT_OFFSET], layers[i, FAN_IN], layers[i, FAN_OUT])


@njit
def biases(flat, layers, i):
    """(O,) view of layer i's bias vector inside a flat buffer."""
    return vector_view(flat, layers[i, BIAS_OFFSET], layers[i, FAN_OUT])


@njit
def layer_rows(work, layers, i, n):
    """(n, O) view of layer i's slot in a work buffer that holds every layer's rows back to back
    (U * B long). An empty buffer (a slot this network does not use) gives an empty view."""
    if work.shape[0] == 0:
        return matrix_view(work, 0, 0, layers[i, FAN_OUT])
    offset = 0
    for j in range(i):
        offset += layers[j, FAN_OUT]
    return matrix_view(work, offset * n, n, layers[i, FAN_OUT])


@njit
def flush_denormals(params):
    """For float32 params: set flush-to-zero and denormals-are-zero (arithmetic on denormals is
    tens of times slower on x86, and weights into dead ReLU units decay through them), and return
    the control word to restore with restore_fp(); float64 keeps IEEE arithmetic."""
    before = fp_control(0)
    if params.itemsize == 4:
        fp_control(before | FLUSH_DENORMALS)
    return before


@njit
def restore_fp(before):
    fp_control(before)


@njit
def is_sparse(features):
    """True when the bundles.Features holds CSR input (its dense X is then empty)."""
    return features.indptr.shape[0] > 0


@njit
def gather_rows(Xb, features, rows):
    """Copy the input rows listed in rows (B,) into the dense batch Xb (B, F), from the dense or
    CSR input in features (a bundles.Features)."""
    if is_sparse(features):
        data, indices, indptr = features.data, features.indices, features.indptr
        for r in range(Xb.shape[0]):
            for j in range(Xb.shape[1]):
                Xb[r, j] = 0
        for r in range(rows.shape[0]):
            i = rows[r]
            for k in range(indptr[i], indptr[i + 1]):
                Xb[r, indices[k]] += data[k]  # += : duplicate CSR entries add up, as in scipy
    else:
        copy_rows(Xb, features.X, rows)


@njit
def copy_rows(dst, src, rows):
    """dst[r] = src[rows[r]] for every r; dst (B, W), src (N, W), rows (B,)."""
    for r in range(rows.shape[0]):
        i = rows[r]
        for j in range(dst.shape[1]):
            dst[r, j] = src[i, j]


@njit
def softmax_rows(Z):
    """Z (B, K) in place: the softmax of every row. Subtracting the row maximum keeps exp() from
    overflowing; the result is unchanged."""
    for i in range(Z.shape[0]):
        top = Z[i, 0]
        for j in range(1, Z.shape[1]):
            top = max(top, Z[i, j])
        total = Z.dtype.type(0)
        for j in range(Z.shape[1]):
            Z[i, j] = math.exp(Z[i, j] - top)
            total += Z[i, j]
        for j in range(Z.shape[1]):
            Z[i, j] /= total


# ---------------------------------------------------------------------------------------------
# One loop per operation, chosen at run time. Each factory below makes the loop of one
# fastmlp/ops.py entry (the entry's scalar function is a constant of the loop, so it inlines);
# `dispatch` makes the function that runs the loop whose code it is given.
# ---------------------------------------------------------------------------------------------

def compiled_as(name, function):
    """njit(function), named `name` for numba. numba names compiled code by the function's
    qualified name and a counter of the process that compiled it; the loops below are one inner
    function per operation, so without their own names two different loops, compiled by two
    processes into the on-disk cache, could carry one name, and a process that loads both runs
    one in place of the other (wrong results, found by a test). Each gets its operation's name."""
    function.__name__ = function.__qualname__ = name
    return njit(function)


def dispatch(name, loops, arguments):
    """A function name(code, <arguments>) that runs loops[code](<arguments>), for a
    {code: loop} dict and the loops' argument names ("Z" or "dZ, A, Z", say).

    Generated as one flat chain of comparisons, the way one would write it by hand:

        def activate(code, Z):
            if code == 0:
                return loop_0(Z)
            ...
            raise ValueError(...)

    A code with no loop raises: no operation falls back silently to another. The estimators only
    ever pass registry codes.
    """
    lines = [f"def {name}(code, {arguments}):"]
    for code in sorted(loops):
        lines += [f"    if code == {code}:", f"        return loop_{code}({arguments})"]
    lines.append('    raise ValueError("fastmlp: no kernel for this operation code")')
    namespace = {f"loop_{code}": loop for code, loop in loops.items()}
    namespace["__name__"] = __name__  # the generated function belongs to this module
    exec("\n".join(lines), namespace)  # source built above from integer codes only
    return compiled_as(name, namespace[name])


@functools.cache
def scalar(function):
    """A fastmlp/ops.py scalar function compiled with the project's JIT options. Called directly,
    a register_jitable function would compile with numba's default error model, which checks
    every division for zero and so keeps the loops around it from vectorising (Adam's update over
    235k parameters: 3.4x slower)."""
    return njit(function)


finished_gradient = scalar(ops.finished_gradient)


def _activation_loop(activation):
    """Z (B, O) in place: pre-activations in, activations out."""
    if activation.row_wise:
        return softmax_rows
    f = scalar(activation.value)

    def activate_elements(Z):
        for i in range(Z.shape[0]):
            for j in range(Z.shape[1]):
                Z[i, j] = f(Z[i, j])

    if activation.value_float32 is None:
        return compiled_as(f"activate_{activation.name}", activate_elements)
    f32 = scalar(activation.value_float32)

    def activate_elements_by_dtype(Z):
        if Z.itemsize == 4:  # a constant of each compiled version: one loop is left
            for i in range(Z.shape[0]):
                for j in range(Z.shape[1]):
                    Z[i, j] = f32(Z[i, j])
        else:
            activate_elements(Z)

    activate_elements = compiled_as(f"activate_{activation.name}_all_dtypes", activate_elements)
    return compiled_as(f"activate_{activation.name}", activate_elements_by_dtype)


def _derivative_loop(activation):
    """dZ (B, O) in place: times f'(z), from the activations A (B, O) or, for activations that
    need it, the pre-activations Z (B, O) (an empty view otherwise, never read)."""
    backward, from_z = scalar(activation.backward), activation.needs_pre_activation

    def times_derivative_elements(dZ, A, Z):
        for i in range(dZ.shape[0]):
            for j in range(dZ.shape[1]):
                a = A[i, j]
                dZ[i, j] = backward(dZ[i, j], a, Z[i, j] if from_z else a)

    return compiled_as(f"times_{activation.name}_derivative", times_derivative_elements)


def _loss_loop(loss):
    """Output delta dZ (B, K) and the weighted loss sum: see output_delta_and_loss."""
    term, mean = scalar(loss.term), loss.mean_over_outputs

    def delta_and_loss(dZ, P, Y, sw, eps):
        k = P.shape[1]
        total = 0.0
        for i in range(P.shape[0]):
            sample = 0.0
            for j in range(k):
                dZ[i, j] = (P[i, j] - Y[i, j]) * sw[i]
                sample += term(float(P[i, j]), float(Y[i, j]), eps)
            if mean:
                sample = 0.5 * sample / k  # scikit-learn averages squared error over outputs
            total += sw[i] * sample
        return total

    return compiled_as(f"{loss.name}_delta_and_loss", delta_and_loss)


def _update_loop(optimizer):
    """One optimizer step over every entry of the flat buffers: see update."""
    step = scalar(optimizer.step)

    def update_entries(params, dparams, slot_1, slot_2, n_weights, alpha, norm, decayed, kept):
        for k in range(params.shape[0]):
            g = finished_gradient(dparams[k], params[k], k, n_weights, alpha, norm)
            h = decayed if k < n_weights else kept
            params[k], slot_1[k], slot_2[k] = step(params[k], g, slot_1[k], slot_2[k], h)

    def update_entries_one_slot(params, dparams, slot, same, n_weights, alpha, norm, decayed,
                                kept):
        # One-slot optimizers get their slot twice (the same array). Writing it through both
        # names made LLVM's run-time overlap check fail and the scalar loop run: SGD's update
        # over W2's 3,427 parameters took 6.3 us instead of 0.8, Adagrad's and RMSprop's 11
        # instead of 1.4. So the slot is read and written once, through one name.
        for k in range(params.shape[0]):
            g = finished_gradient(dparams[k], params[k], k, n_weights, alpha, norm)
            h = decayed if k < n_weights else kept
            params[k], slot[k], _ = step(params[k], g, slot[k], slot[k], h)

    # Named by the step function: optimizers that share one (Adam, AdamW) share this loop.
    loop = update_entries if optimizer.slots == 2 else update_entries_one_slot
    return compiled_as(f"update_by_{optimizer.step.__name__}", loop)


def _loops(entries, make_loop, shared_by=lambda entry: entry.code):
    """{code: make_loop(entry)} for the given fastmlp/ops.py entries; entries with the same
    `shared_by` key share one loop (Adam and AdamW differ only in their scalars)."""
    made, loops = {}, {}
    for entry in entries:
        key = shared_by(entry)
        if key not in made:
            made[key] = make_loop(entry)
        loops[entry.code] = made[key]
    return loops


activate = dispatch("activate", _loops(ops.ACTIVATIONS, _activation_loop), "Z")
derivative_loop = dispatch(
    "derivative_loop", _loops([a for a in ops.ACTIVATIONS if a.backward is not None],
                              _derivative_loop), "dZ, A, Z")
loss_loop = dispatch("loss_loop", _loops(ops.LOSSES, _loss_loop), "dZ, P, Y, sw, eps")
update_loop = dispatch(
    "update_loop", _loops(ops.OPTIMIZERS, _update_loop, shared_by=lambda o: o.step),
    "params, dparams, slot_1, slot_2, n_weights, alpha, norm, decayed, kept")

# Activations whose derivative reads the pre-activation, by code: the forward pass keeps z.
NEEDS_PRE_ACTIVATION = np.zeros(max(a.code for a in ops.ACTIVATIONS) + 1, dtype=np.bool_)
NEEDS_PRE_ACTIVATION[[a.code for a in ops.ACTIVATIONS if a.needs_pre_activation]] = True


# ---------------------------------------------------------------------------------------------
# Layers: activations, dropout, dense products, the output delta
# ---------------------------------------------------------------------------------------------

@njit
def activation_backward(dZ, A, Z, kind):
    """dZ (B, O) in place: times f'(z) of activation `kind`, from A = f(z) (B, O) or, for the
    activations that need it, Z = z (B, O)."""
    derivative_loop(kind, dZ, A, Z)


@njit
def dropout_forward(D, M, A, rate, seed, first, stride):
    """Drop each unit with probability `rate` and scale the survivors by 1 / (1 - rate).

    D (B, O) out: A * M; M (B, O) out: the mask, 0 or 1 / (1 - rate); A (B, O) activations.
    Element (i, j) draws uniform(seed, first + i * stride + j).
    """
    scale = A.dtype.type(1.0 / (1.0 - rate))
    zero = A.dtype.type(0)
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            M[i, j] = scale if ops.uniform(seed, first + i * stride + j) >= rate else zero
            D[i, j] = A[i, j] * M[i, j]


@njit
def dense_forward(Z, A, W, b):
    """Z (B, O) = A (B, I) @ W (I, O) + b (O,)."""
    np.dot(A, W, Z)
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] += b[j]


@njit
def dense_backward(dW, db, dZ, A):
    """Unnormalised parameter gradients of one layer: dW (I, O) = A.T @ dZ, db (O,) = column
    sums of dZ (B, O). A (B, I) is the layer's input."""
    np.dot(A.T, dZ, dW)
    for j in range(db.shape[0]):
        db[j] = 0
    for i in range(dZ.shape[0]):
        for j in range(dZ.shape[1]):
            db[j] += dZ[i, j]


@entry_point
def output_delta_and_loss(dZ, P, Y, sw, loss):
    """Output-layer gradient and the weighted sum of per-sample losses.

    dZ (B, K) out: sw * (P - Y), the derivative of sw * loss with respect to the output
    pre-activation: each loss is paired with its canonical output activation (softmax + log
    loss, logistic + binary log loss, identity + squared error, exp + Poisson deviance), and for
    each pair that derivative reduces to p - y. P (B, K) output activations; Y (B, K) targets;
    sw (B,) sample weights; loss: a loss code. Returns sum_i sw_i * loss_i as float64.
    """
    return loss_loop(loss, dZ, P, Y, sw, float(np.finfo(P.dtype).eps))


# ---------------------------------------------------------------------------------------------
# The network: forward and backward over one batch. Dropout applies while net.dropout > 0 (the
# backends set it to 0 for inference).
# ---------------------------------------------------------------------------------------------

@njit
def layer_input(work, Xb, layers, i, n, dropout):
    """(B, I) input of weight layer i: the data for i = 0, else the previous layer's
    activations, or their dropped-out version while training with dropout."""
    if i == 0:
        return Xb
    if dropout:
        return layer_rows(work.dropped, layers, i - 1, n)
    return layer_rows(work.acts, layers, i - 1, n)


@njit
def forward(work, params, Xb, net, first_row):
    """Run the network on Xb (B, F) and return the (B, K) output activations.

    work: a Workspace (its per-layer slots, see layer_rows); net: a bundles.Network; with
    dropout, first_row (the batch's position in the epoch) fixes the dropout draws.
    """
    layers = net.layers
    n = Xb.shape[0]
    last = layers.shape[0] - 1
    dropout = net.dropout > 0
    hidden_units = 0
    for i in range(last):
        hidden_units += layers[i, FAN_OUT]
    unit_offset = 0
    for i in range(last + 1):
        kind = net.output if i == last else net.hidden
        Z = layer_rows(work.acts, layers, i, n)
        dense_forward(Z, layer_input(work, Xb, layers, i, n, dropout),
                      weights(params, layers, i), biases(params, layers, i))
        if NEEDS_PRE_ACTIVATION[kind]:
            copy_matrix(layer_rows(work.pre, layers, i, n), Z)
        activate(kind, Z)
        if dropout and i < last:
            dropout_forward(layer_rows(work.dropped, layers, i, n),
                            layer_rows(work.masks, layers, i, n), Z, net.dropout, net.seed,
                            first_row * hidden_units + unit_offset, hidden_units)
            unit_offset += layers[i, FAN_OUT]
    return layer_rows(work.acts, layers, last, n)


@njit
def copy_matrix(dst, src):
    """dst (B, O) = src (B, O), element by element."""
    for r in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[r, j] = src[r, j]


@njit
def backprop(dparams, work, params, Xb, Yb, sample_weight, net, first_row):
    """Forward and backward pass over one batch.

    dparams (P,) out: sum_i sw_i * d loss_i / d params, NOT yet divided by sum(sw) and without the
    L2 term (see ops.finished_gradient), so chunks of a large data set can be summed. Xb (B, F),
    Yb (B, K), sample_weight (B,). Returns sum_i sw_i * loss_i.
    """
    layers = net.layers
    n = Xb.shape[0]
    last = layers.shape[0] - 1
    dropout = net.dropout > 0
    P = forward(work, params, Xb, net, first_row)
    loss_sum = output_delta_and_loss(layer_rows(work.deltas, layers, last, n), P, Yb,
                                     sample_weight, net.loss)
    for i in range(last, -1, -1):
        dZ = layer_rows(work.deltas, layers, i, n)
        dense_backward(weights(dparams, layers, i), biases(dparams, layers, i), dZ,
                       layer_input(work, Xb, layers, i, n, dropout))
        if i > 0:
            dA = layer_rows(work.deltas, layers, i - 1, n)
            np.dot(dZ, weights(params, layers, i).T, dA)
            if dropout:  # dropped units pass no gradient
                M = layer_rows(work.masks, layers, i - 1, n)
                for r in range(n):
                    for j in range(dA.shape[1]):
                        dA[r, j] *= M[r, j]
            activation_backward(dA, layer_rows(work.acts, layers, i - 1, n),
                                layer_rows(work.pre, layers, i - 1, n), net.hidden)
    return loss_sum


@njit
def weight_squares(params, layers):
    """||W||^2 over every weight (the biases are not penalised): a BLAS dot, as scikit-learn
    computes it (a plain loop is a serial sum that cannot vectorise without fastmath)."""
    # Weights come first in the flat buffer, then biases.
    W = vector_view(params, 0, layers[0, BIAS_OFFSET])
    return float(np.dot(W, W))


# ---------------------------------------------------------------------------------------------
# The fused optimizer update: finish the gradient and step, in one pass over the flat buffers
# ---------------------------------------------------------------------------------------------

@njit
def update(state, n_weights, alpha, weight_sum, opt, step):
    """Finish the batch gradient state.dparams (see ops.finished_gradient) and apply the step of
    optimizer opt.kind to every entry of state.params and its slots, in place. A one-slot
    optimizer's state is state.slot_1 (callers pass that array as slot_2 too; it is written
    once, through slot_1). step: this update's number, from 1 (Adam's bias correction)."""
    dt = state.params.dtype.type
    step_size = dt(ops.adam_step_size(opt.learning_rate, opt.beta_1, opt.beta_2, step))
    # Decoupled weight decay (AdamW) shrinks only the weights, which come before the biases.
    rate, momentum, beta_1, beta_2 = (dt(opt.learning_rate), dt(opt.momentum), dt(opt.beta_1),
                                      dt(opt.beta_2))
    epsilon, rho = dt(opt.epsilon), dt(opt.rho)
    decayed = ops.StepScalars(rate, momentum, opt.nesterov, beta_1, beta_2, epsilon, rho,
                              step_size, dt(ops.weight_keep(opt.learning_rate, opt.weight_decay)))
    kept = ops.StepScalars(rate, momentum, opt.nesterov, beta_1, beta_2, epsilon, rho, step_size,
                           dt(1))
    update_loop(opt.kind, state.params, state.dparams, state.slot_1, state.slot_2, n_weights,
                dt(alpha), dt(weight_sum), decayed, kept)


# ---------------------------------------------------------------------------------------------
# Whole-epoch, whole-data-set and inference drivers: one compiled call each
# ---------------------------------------------------------------------------------------------

@njit
def stage_batch(work, features, Y, sample_weight, rows):
    """Gather the listed rows of inputs, targets and weights into the workspace's staging
    buffers; returns (B, F), (B, K) and (B,) views, and the batch's weight sum."""
    return stage_into(work.xbuf, work.ybuf, work.swbuf, features, Y, sample_weight, rows)


@njit
def stage_into(xbuf, ybuf, swbuf, features, Y, sample_weight, rows):
    """stage_batch into the given flat staging buffers (B * F, B * K and B long)."""
    n = rows.shape[0]
    Xb = matrix_view(xbuf, 0, n, features.X.shape[1])
    Yb = matrix_view(ybuf, 0, n, Y.shape[1])
    swb = vector_view(swbuf, 0, n)
    gather_rows(Xb, features, rows)
    copy_rows(Yb, Y, rows)
    weight_sum = 0.0
    for r in range(n):
        swb[r] = sample_weight[rows[r]]
        weight_sum += swb[r]
    return Xb, Yb, swb, weight_sum


@entry_point
def epoch(state, work, features, Y, sample_weight, order, batch_size, net, opt):
    """One epoch of mini-batch training, every batch in this one call (see train_epoch in
    fastmlp/cpu/__init__.py, which adds the workspace). Returns (sum over batches of batch
    loss * batch rows, the number of updates made)."""
    state, work, features, Y, sample_weight, order, net = unmanaged(
        (state, work, features, Y, sample_weight, order, net))
    layers = net.layers
    n_weights = layers[0, BIAS_OFFSET]
    updates = 0
    total = 0.0
    fp_before = flush_denormals(state.params)
    for start in range(0, order.shape[0], batch_size):
        rows = vector_view(order, start, min(batch_size, order.shape[0] - start))
        Xb, Yb, swb, weight_sum = stage_batch(work, features, Y, sample_weight, rows)
        loss_sum = backprop(state.dparams, work, state.params, Xb, Yb, swb, net, start)
        if weight_sum == 0:
            continue  # every sample in this batch has zero weight: nothing to learn from it
        squares = weight_squares(state.params, layers)  # of the weights this batch saw
        total += (loss_sum / weight_sum + 0.5 * net.alpha * squares / weight_sum) * rows.shape[0]
        updates += 1
        update(state, n_weights, net.alpha, weight_sum, opt, opt.step + updates)
    restore_fp(fp_before)
    return total, updates


@entry_point
def epoch_many(states, work, staged, features, Y, sample_weight, orders, order_of, active,
               batch_size, nets, opts, totals, updates):
    """One epoch of M networks of one shape on the same data, in lockstep: each mini-batch is
    gathered once per distinct order and then trained on by every active model in turn, with
    exactly the arithmetic `epoch` does for that model alone (so the results are identical).

    states: a TrainState of (M, P) arrays, row m model m's; work: a Workspace for one model
    (its staging slots unused); staged: a Workspace whose xbuf, ybuf and swbuf are (G, B * F),
    (G, B * K) and (G, B) staging rows, one per order; orders (G, n) the rows each order visits;
    order_of (M,) model m's row in orders; active (A,) the models that train; nets, opts:
    bundles.Networks and bundles.OptimizerSteps. totals (M,) and updates (M,) out: `epoch`'s two
    results, for the active models (others untouched).
    """
    states, work, staged, features, Y, sample_weight, orders, nets = unmanaged(
        (states, work, staged, features, Y, sample_weight, orders, nets))
    layers = nets.layers
    n_weights = layers[0, BIAS_OFFSET]
    for a in range(active.shape[0]):
        totals[active[a]] = 0.0
        updates[active[a]] = 0
    fp_before = flush_denormals(states.params)
    n = orders.shape[1]
    weight_sums = np.empty(orders.shape[0])  # each order's batch weight sum; once per call
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        for g in range(orders.shape[0]):
            weight_sums[g] = stage_into(staged.xbuf[g], staged.ybuf[g], staged.swbuf[g],
                                        features, Y, sample_weight,
                                        vector_view(orders[g], start, nb))[3]
        for a in range(active.shape[0]):
            m = active[a]
            g = order_of[m]
            Xb = matrix_view(staged.xbuf[g], 0, nb, features.X.shape[1])
            Yb = matrix_view(staged.ybuf[g], 0, nb, Y.shape[1])
            swb = vector_view(staged.swbuf[g], 0, nb)
            weight_sum = weight_sums[g]
            net = model_network(nets, m)
            loss_sum = backprop(states.dparams[m], work, states.params[m], Xb, Yb, swb, net,
                                start)
            if weight_sum == 0:
                continue  # as in epoch: a batch of zero weight teaches nothing
            squares = weight_squares(states.params[m], layers)
            totals[m] += (loss_sum / weight_sum + 0.5 * net.alpha * squares / weight_sum) * nb
            updates[m] += 1
            opt = model_step(opts, m)
            update(TrainState(states.params[m], states.dparams[m], states.slot_1[m],
                              states.slot_2[m]), n_weights, net.alpha, weight_sum, opt,
                   opt.step + updates[m])
    restore_fp(fp_before)


@njit
def model_network(nets, m):
    """Model m's bundles.Network out of a bundles.Networks."""
    return Network(nets.layers, nets.hidden[m], nets.output[m], nets.loss[m], nets.alpha[m],
                   nets.dropout[m], nets.seed[m])


@njit
def model_step(opts, m):
    """Model m's bundles.OptimizerStep out of a bundles.OptimizerSteps."""
    return OptimizerStep(opts.kind[m], opts.learning_rate[m], opts.momentum[m],
                         opts.nesterov[m], opts.beta_1[m], opts.beta_2[m], opts.epsilon[m],
                         opts.rho[m], opts.weight_decay[m], opts.step[m])


@entry_point
def full_loss_and_gradient(dparams, chunk_grad, work, params, features, Y, sample_weight, net,
                           chunk_rows):
    """Full-data-set regularised loss (returned) and its gradient dparams (P,) out, computed in
    chunks of at most chunk_rows rows (chunk_grad (P,) is work space). Used by L-BFGS."""
    dparams, chunk_grad, work, params, features, Y, sample_weight, net = unmanaged(
        (dparams, chunk_grad, work, params, features, Y, sample_weight, net))
    layers = net.layers
    n = Y.shape[0]
    n_weights = layers[0, BIAS_OFFSET]
    fp_before = flush_denormals(params)
    for k in range(dparams.shape[0]):
        dparams[k] = 0
    loss_sum = 0.0
    weight_sum = 0.0
    all_rows = np.arange(n)  # the one allocation: once per call, never per chunk
    for start in range(0, n, chunk_rows):
        rows = vector_view(all_rows, start, min(chunk_rows, n - start))
        Xb, Yb, swb, chunk_weight = stage_batch(work, features, Y, sample_weight, rows)
        loss_sum += backprop(chunk_grad, work, params, Xb, Yb, swb, net, start)
        weight_sum += chunk_weight
        for k in range(dparams.shape[0]):
            dparams[k] += chunk_grad[k]
    dt = params.dtype.type
    for k in range(dparams.shape[0]):
        dparams[k] = finished_gradient(dparams[k], params[k], k, n_weights, dt(net.alpha),
                                           dt(weight_sum))
    squares = weight_squares(params, layers)
    restore_fp(fp_before)
    return loss_sum / weight_sum + 0.5 * net.alpha * squares / weight_sum


@entry_point
def predict_rows(out, work, params, features, rows, net, chunk_rows):
    """Output activations out (R, K) for the input rows listed in rows (R,), chunk by chunk;
    net.dropout must be 0."""
    out, work, params, features, rows, net = unmanaged((out, work, params, features, rows, net))
    for start in range(0, rows.shape[0], chunk_rows):
        chunk = vector_view(rows, start, min(chunk_rows, rows.shape[0] - start))
        P = forward(work, params, input_block(work, features, chunk), net, start)
        for r in range(P.shape[0]):
            for j in range(P.shape[1]):
                out[start + r, j] = P[r, j]


@njit
def input_block(work, features, chunk):
    """The (B, F) input rows listed in chunk (B,): a view of the data when they are consecutive
    rows of a dense input (no copy), else gathered into the workspace."""
    X = features.X
    if not is_sparse(features) and consecutive(chunk):
        return X[chunk[0]:chunk[0] + chunk.shape[0]]
    Xb = matrix_view(work.xbuf, 0, chunk.shape[0], X.shape[1])
    gather_rows(Xb, features, chunk)
    return Xb


@njit
def consecutive(rows):
    """True when rows (R,) is an increasing run r, r + 1, r + 2, ..."""
    for r in range(1, rows.shape[0]):
        if rows[r] != rows[r - 1] + 1:
            return False
    return True
