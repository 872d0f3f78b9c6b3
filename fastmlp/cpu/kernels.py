"""Compiled CPU kernels: forward pass, losses, backpropagation and fused optimizer updates.

`train_epoch` runs every mini-batch of an epoch in one call; `loss_and_gradient` serves L-BFGS and
`predict` serves inference, both in bounded chunks. Kernels never call back into Python and never
allocate: the backend (fastmlp/cpu/__init__.py) hands them a Workspace. Everything compiled lives
in this one module because numba's on-disk cache does not notice when a callee in another module
changes.

Compile time is a product metric here (a cold first fit compiles all of this): the codes a fit
branches on arrive as compile-time constants (`sw`, a switches.Switches), so only the branches it
takes are compiled; no kernel assigns an array into a slice or reshapes (numba compiles their
error messages' string formatting into every caller, seconds of it).

Shape legend: B rows in a batch or chunk, N rows in the data set, F input features, I fan-in,
O fan-out, K outputs, P parameters (length of every flat buffer), L weight layers, U units of all
layers together. Argument order: outputs first, then inputs, then sizes and switches; gradients
carry a ``d`` prefix.
"""

import math
import platform
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload
from numba.np.arrayobj import make_array, populate_array

from ..codes import (
    ADAGRAD,
    ADAM,
    ADAMW,
    BINARY_LOG_LOSS,
    ELU,
    EXP,
    GELU,
    IDENTITY,
    LEAKY_RELU,
    LEAKY_SLOPE,
    LOG_LOSS,
    LOGISTIC,
    POISSON,
    RELU,
    RMSPROP,
    SGD,
    SILU,
    SOFTMAX,
    SQUARED_ERROR,
    TANH,
)
from ..config import JIT_OPTIONS, entry_point, njit

# ---------------------------------------------------------------------------------------------
# Views into flat buffers. `layers` is Layout.table: rows (fan_in, fan_out, w_offset, b_offset).
# ---------------------------------------------------------------------------------------------


def _view_of(flat, ndim):
    """The typing part of matrix_view and vector_view: a C-order 1-D array gives an ndim view."""
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
        return None
    return flat.copy(ndim=ndim)


def _unmanaged_view(context, builder, sig, args):
    """A C-order view of args[0] (flat) from element args[1] with shape args[2:], without a
    reference to flat's memory: see matrix_view."""
    source = make_array(sig.args[0])(context, builder, args[0])
    offset, *shape = (context.cast(builder, value, ty, types.intp)
                      for value, ty in zip(args[1:], sig.args[1:]))
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
        context.get_data_type(sig.args[0].dtype)))
    strides = [itemsize]
    for extent in reversed(shape[1:]):
        strides.insert(0, builder.mul(extent, strides[0]))
    view = make_array(sig.return_type)(context, builder)
    populate_array(view, data=cgutils.gep_inbounds(builder, source.data, offset),
                   shape=cgutils.pack_array(builder, shape),
                   strides=cgutils.pack_array(builder, strides),
                   itemsize=itemsize, meminfo=None, parent=source.parent)
    return view._getvalue()


def _without_references(context, builder, ty, value):
    """value of type ty with the memory reference of every array in it set to null."""
    if isinstance(ty, types.Array):
        array = make_array(ty)(context, builder, value)
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        return array._getvalue()
    if isinstance(ty, types.BaseTuple):
        for i, member in enumerate(ty):
            value = builder.insert_value(value, _without_references(
                context, builder, member, builder.extract_value(value, i)), i)
    return value


@intrinsic
def unmanaged(typingctx, value):
    """value, an array or a (named) tuple holding arrays, with no reference counting on its
    arrays (see matrix_view). The entry points apply it to their arguments once: the arrays are
    alive for the whole call, because the caller holds them."""
    def codegen(context, builder, sig, args):
        return _without_references(context, builder, sig.args[0], args[0])

    return value(value), codegen


@intrinsic
def matrix_view(typingctx, flat, offset, rows, cols):
    """(rows, cols) C-order view of flat[offset:offset + rows * cols], flat a C-order 1-D array.

    What ``flat[offset:offset + rows * cols].reshape((rows, cols))`` gives, without reshape's
    error path, whose message formatting numba would compile into every caller, and without a
    reference count: numba counts references to an array's memory with atomic instructions on
    every view it creates, passes and drops, which took 16% of a small network's epoch. Such a
    view is valid while `flat` is, i.e. within the kernel call that received it; kernels never
    return one to Python. Bounds are the caller's job: offsets come from the layer table, built
    and checked in Python.
    """
    view = _view_of(flat, 2)
    return view and (view(flat, offset, rows, cols), _unmanaged_view)


@intrinsic
def vector_view(typingctx, flat, offset, length):
    """flat[offset:offset + length] as an unmanaged view, like matrix_view (no slice bounds
    clipping: the caller's offsets are in range)."""
    view = _view_of(flat, 1)
    return view and (view(flat, offset, length), _unmanaged_view)


# ---------------------------------------------------------------------------------------------
# The floating-point environment. Arithmetic on denormal numbers (below float32's 1.2e-38) takes
# x86 CPUs a microcode assist, tens of times slower, and a long float32 fit makes them: with no
# gradient but the L2 term, Adam shrinks the weights into a dead ReLU unit by a few percent a
# step, through the denormal range (a digits fit at default settings had 312 weights below 1e-20
# after 200 epochs, and its last epochs ran 40% slower). float32 training therefore runs with
# the SSE control register's flush-to-zero and denormals-are-zero bits set, restored on return;
# float64 keeps IEEE arithmetic (scikit-learn's numbers).
# ---------------------------------------------------------------------------------------------

FLUSH_DENORMALS = 0x8040  # MXCSR bits: FTZ (denormal results become 0) and DAZ (inputs read as 0)
X86 = platform.machine().lower() in ("x86_64", "amd64")


@intrinsic
def fp_control(typingctx, value):
    """Return the thread's SSE control register (MXCSR), and set it to `value` unless `value`
    is 0 (0: read only; no valid setting is 0). On other CPUs a no-op that returns 0."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        if not X86:
            return ir.Constant(i32, 0)
        slot = cgutils.alloca_once(builder, i32)
        byte_pointer = builder.bitcast(slot, ir.IntType(8).as_pointer())
        access = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
        store = cgutils.get_or_insert_function(builder.module, access, "llvm.x86.sse.stmxcsr")
        load = cgutils.get_or_insert_function(builder.module, access, "llvm.x86.sse.ldmxcsr")
        builder.call(store, [byte_pointer])
        before = builder.load(slot)
        new = builder.trunc(args[0], i32) if args[0].type.width > 32 else args[0]
        with builder.if_then(builder.icmp_unsigned("!=", new, ir.Constant(i32, 0))):
            builder.store(new, slot)
            builder.call(load, [byte_pointer])
        return before

    return types.uint32(value), codegen


@njit
def flush_denormals(params):
    """For float32 params: set flush-to-zero and denormals-are-zero, and return the control
    word to restore with restore_fp(); for float64 nothing changes."""
    before = fp_control(0)
    if params.itemsize == 4:
        fp_control(before | FLUSH_DENORMALS)
    return before


@njit
def restore_fp(before):
    fp_control(before)


@njit
def weights(flat, layers, i):
    """(I, O) view of layer i's weight matrix inside a flat buffer (parameters or gradients)."""
    return matrix_view(flat, layers[i, 2], layers[i, 0], layers[i, 1])


@njit
def biases(flat, layers, i):
    """(O,) view of layer i's bias vector inside a flat buffer."""
    return vector_view(flat, layers[i, 3], layers[i, 1])


@njit
def layer_rows(work, layers, i, n):
    """(n, O) view of layer i's slot in a work buffer that holds every layer's rows back to back
    (U * B long). An empty buffer (a slot this network does not use) gives an empty view."""
    if work.shape[0] == 0:
        return matrix_view(work, 0, 0, layers[i, 1])
    offset = 0
    for j in range(i):
        offset += layers[j, 1]
    return matrix_view(work, offset * n, n, layers[i, 1])


@njit
def gather_rows(Xb, features, rows, sparse):
    """Copy the input rows listed in rows (B,) into the dense batch Xb (B, F).

    features: a bundles.Features, CSR when `sparse` is not None (a switch), else dense.
    """
    if sparse is not None:
        data, indices, indptr = features.data, features.indices, features.indptr
        Xb[:] = 0
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


# ---------------------------------------------------------------------------------------------
# Scalar helpers shared with the CUDA backend: plain scalar code (math functions, casts through
# type(x)) that fastmlp/cuda compiles again from .py_func for the GPU. One function per
# activation, derivative, loss and optimizer; the tables below pick one by its code.
# ---------------------------------------------------------------------------------------------

@njit
def identity(z):
    return z


@njit
def logistic(z):
    return type(z)(1) / (type(z)(1) + math.exp(-z))


@njit
def tanh(z):
    return math.tanh(z)


@njit
def relu(z):
    return type(z)(0) if z < 0 else z  # a NaN passes through: divergence stays visible


@njit
def exponential(z):
    return math.exp(z)


@njit
def leaky_relu(z):
    return z * type(z)(LEAKY_SLOPE) if z < 0 else z


@njit
def elu(z):
    return math.expm1(z) if z < 0 else z


@njit
def gelu(z):
    """Exact GELU, z Phi(z) with Phi the standard normal CDF."""
    return type(z)(0.5) * z * (type(z)(1) + math.erf(z * type(z)(math.sqrt(0.5))))


@njit
def silu(z):
    return z / (type(z)(1) + math.exp(-z))


# Each derivative returns g * f'(z), from the activation's output a = f(z), or from the
# pre-activation z for GELU and SiLU (whose derivatives are not functions of a).

@njit
def identity_backward(g, a, z):
    return g


@njit
def logistic_backward(g, a, z):
    return g * a * (type(g)(1) - a)


@njit
def tanh_backward(g, a, z):
    return g * (type(g)(1) - a * a)


@njit
def relu_backward(g, a, z):
    return type(g)(0) if a == 0 else g


@njit
def leaky_relu_backward(g, a, z):
    return g * type(g)(LEAKY_SLOPE) if a <= 0 else g


@njit
def elu_backward(g, a, z):
    return g * (a + type(g)(1)) if a < 0 else g  # d/dz (e^z - 1) = e^z = a + 1


@njit
def gelu_backward(g, a, z):
    """d/dz z Phi(z) = Phi(z) + z phi(z)."""
    half = type(g)(0.5)
    cdf = half * (type(g)(1) + math.erf(z * type(g)(math.sqrt(0.5))))
    return g * (cdf + z * type(g)(1 / math.sqrt(2 * math.pi)) * math.exp(-half * z * z))


@njit
def silu_backward(g, a, z):
    """d/dz z s(z) = s(z) (1 + z (1 - s(z))), s the logistic function."""
    s = type(g)(1) / (type(g)(1) + math.exp(-z))
    return g * (s * (type(g)(1) + z * (type(g)(1) - s)))


ACTIVATIONS = {IDENTITY: identity, LOGISTIC: logistic, TANH: tanh, RELU: relu, EXP: exponential,
               LEAKY_RELU: leaky_relu, ELU: elu, GELU: gelu, SILU: silu,
               SOFTMAX: identity}  # softmax rows are finished by `activate`
DERIVATIVES = {IDENTITY: identity_backward, LOGISTIC: logistic_backward, TANH: tanh_backward,
               RELU: relu_backward, LEAKY_RELU: leaky_relu_backward, ELU: elu_backward,
               GELU: gelu_backward, SILU: silu_backward}


@entry_point
def uniform(seed, counter):
    """A uniform number in [0, 1) from the splitmix64 hash of seed + counter: a dropout mask then
    depends only on (seed, position), so every backend draws the same one."""
    z = np.uint64(seed) + np.uint64(counter) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # top 53 bits


@entry_point  # with a Python wrapper: the CUDA simulator runs the loss terms calling it as Python
def xlogy(x, y):
    """x * log(y), defined as 0 where x == 0 (as scipy.special.xlogy)."""
    if x == 0:
        return 0.0
    return x * math.log(y)


# Each loss term is one output's contribution to a sample's loss, in float64: p the prediction,
# y the target, eps the dtype's machine epsilon (probabilities are clipped to [eps, 1 - eps]
# inside logs). scikit-learn averages squared error over outputs (see output_delta_and_loss).

@njit
def squared_error_term(p, y, eps):
    return (y - p) * (y - p)


@njit
def log_loss_term(p, y, eps):
    return -xlogy(y, min(max(p, eps), 1 - eps))


@njit
def binary_log_loss_term(p, y, eps):
    pc = min(max(p, eps), 1 - eps)
    return -(xlogy(y, pc) + xlogy(1 - y, 1 - pc))


@njit
def poisson_term(p, y, eps):
    return xlogy(y, y / p) - y + p  # half the Poisson deviance


LOSS_TERMS = {SQUARED_ERROR: squared_error_term, LOG_LOSS: log_loss_term,
              BINARY_LOG_LOSS: binary_log_loss_term, POISSON: poisson_term}


@njit
def finished_gradient(g, p, k, n_weights, alpha, norm):
    """The mean gradient of entry k: the L2 term alpha * p added for weights (k < n_weights; the
    biases come after the weights and are not penalised), then divided by sum(sw)."""
    if k < n_weights:
        g = g + alpha * p
    return g / norm


# Each optimizer step takes one parameter p, its finished gradient g, its two state slots and the
# step's scalars h (see update), and returns (p, slot_1, slot_2) after the step. Optimizers with
# one slot get the same array as both slots (TrainState) and return their new slot twice.

@njit
def sgd_step(p, g, velocity, same, h):
    """SGD with momentum h.momentum, optionally Nesterov's."""
    step = h.momentum * velocity - h.learning_rate * g
    velocity = step
    if h.nesterov:  # look ahead along the new velocity
        step = h.momentum * step - h.learning_rate * g
    return p + step, velocity, velocity


@njit
def adam_step(p, g, m, v, h):
    """Adam; h.step_size holds this step's bias correction, h.keep = 1 - AdamW's decay (1 for
    Adam, and for AdamW's biases)."""
    one = type(p)(1)
    m = h.beta_1 * m + (one - h.beta_1) * g
    v = h.beta_2 * v + (one - h.beta_2) * (g * g)
    return p * h.keep - h.step_size * m / (math.sqrt(v) + h.epsilon), m, v


@njit
def adagrad_step(p, g, accumulator, same, h):
    """Adagrad: squared gradients summed, each step divided by the sum's square root."""
    accumulator = accumulator + g * g
    step = h.learning_rate * g / (math.sqrt(accumulator) + h.epsilon)
    return p - step, accumulator, accumulator


@njit
def rmsprop_step(p, g, mean_square, same, h):
    """RMSprop: a decaying mean of squared gradients (rate h.rho) normalises each step."""
    mean_square = h.rho * mean_square + (type(p)(1) - h.rho) * (g * g)
    step = h.learning_rate * g / (math.sqrt(mean_square) + h.epsilon)
    return p - step, mean_square, mean_square


class StepScalars(NamedTuple):
    """One update's optimizer scalars, in the parameters' dtype (see update)."""

    learning_rate: float
    momentum: float   # SGD
    nesterov: bool    # SGD
    beta_1: float     # Adam
    beta_2: float     # Adam
    epsilon: float    # Adam, Adagrad, RMSprop
    rho: float        # RMSprop
    step_size: float  # Adam: learning_rate with this step's bias correction
    keep: float       # Adam: 1 - AdamW's decay for decayed entries, else 1


OPTIMIZER_STEPS = {SGD: sgd_step, ADAM: adam_step, ADAMW: adam_step, ADAGRAD: adagrad_step,
                   RMSPROP: rmsprop_step}


@entry_point
def adam_step_size(learning_rate, beta_1, beta_2, step):
    """Adam's bias-corrected step size for update number `step` (counted from 1)."""
    t = float(step)  # float exponent: the same pow() Python uses for beta ** t
    return learning_rate * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)


# ---------------------------------------------------------------------------------------------
# Picking a table entry at compile time. `kind`, `loss` and the optimizer code reach the kernels
# as numba literals (switches.Const); these overloads hand numba the one function the code
# names, so the others are never compiled.
# ---------------------------------------------------------------------------------------------

def _literal(code):
    """The value of a code typed as a numba literal (raises for a run-time integer)."""
    if not isinstance(code, types.IntegerLiteral):
        raise TypingError("fastmlp kernels take codes as compile-time constants "
                          "(fastmlp.cpu.switches.Const), got %s" % code)
    return code.literal_value


def _entry(table, code):
    return table[_literal(code)]


def activation_value(z, kind):
    """f(z) for activation `kind`: ACTIVATIONS[kind], chosen when compiling."""


def times_derivative(g, a, z, kind):
    """g * f'(z) for activation `kind`: DERIVATIVES[kind], chosen when compiling."""


def loss_term(p, y, eps, loss):
    """One output's loss term: LOSS_TERMS[loss], chosen when compiling."""


def optimizer_step(p, g, slot_1, slot_2, h, kind):
    """One parameter's optimizer step: OPTIMIZER_STEPS[kind], chosen when compiling."""


@overload(activation_value, jit_options=JIT_OPTIONS)
def _activation_value(z, kind):
    f = _entry(ACTIVATIONS, kind)
    return lambda z, kind: f(z)


@overload(times_derivative, jit_options=JIT_OPTIONS)
def _times_derivative(g, a, z, kind):
    f = _entry(DERIVATIVES, kind)
    return lambda g, a, z, kind: f(g, a, z)


@overload(loss_term, jit_options=JIT_OPTIONS)
def _loss_term(p, y, eps, loss):
    f = _entry(LOSS_TERMS, loss)
    return lambda p, y, eps, loss: f(p, y, eps)


@overload(optimizer_step, jit_options=JIT_OPTIONS)
def _optimizer_step(p, g, slot_1, slot_2, h, kind):
    f = _entry(OPTIMIZER_STEPS, kind)
    return lambda p, g, slot_1, slot_2, h, kind: f(p, g, slot_1, slot_2, h)


# ---------------------------------------------------------------------------------------------
# Layers: activations, dropout, dense products, the output delta
# ---------------------------------------------------------------------------------------------

def activate(Z, kind):
    """Z (B, O) in place: pre-activations in, activations out; softmax_rows for softmax, else
    activate_elements, chosen when compiling."""


@overload(activate, jit_options=JIT_OPTIONS)
def _activate(Z, kind):
    if _literal(kind) == SOFTMAX:
        return lambda Z, kind: softmax_rows(Z)
    return lambda Z, kind: activate_elements(Z, kind)


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


@njit
def activate_elements(Z, kind):
    """Z (B, O) in place: f(z) for every element, f the element-wise activation `kind`."""
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            Z[i, j] = activation_value(Z[i, j], kind)


@njit
def activation_backward(dZ, A, Z, kind):
    """dZ (B, O) in place: times f'(z), from the activations A (B, O) or, for GELU and SiLU, the
    pre-activations Z (B, O) (an empty view for the other activations, never read then)."""
    for i in range(dZ.shape[0]):
        for j in range(dZ.shape[1]):
            a = A[i, j]
            z = Z[i, j] if kind == GELU or kind == SILU else a
            dZ[i, j] = times_derivative(dZ[i, j], a, z, kind)


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
            M[i, j] = scale if uniform(seed, first + i * stride + j) >= rate else zero
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
    db[:] = 0
    for i in range(dZ.shape[0]):
        for j in range(dZ.shape[1]):
            db[j] += dZ[i, j]


@entry_point
def output_delta_and_loss(dZ, P, Y, sw, loss):
    """Output-layer gradient and the weighted sum of per-sample losses.

    dZ (B, K) out: sw * (P - Y), the derivative of sw * loss with respect to the output
    pre-activation (softmax + log loss, logistic + binary log loss, identity + squared error and
    exp + Poisson deviance all reduce to p - y); P (B, K) output activations; Y (B, K) targets;
    sw (B,) sample weights; loss: a compile-time code. Returns sum_i sw_i * loss_i as float64.
    """
    k = P.shape[1]
    eps = float(np.finfo(P.dtype).eps)
    total = 0.0
    for i in range(P.shape[0]):
        sample = 0.0
        for j in range(k):
            dZ[i, j] = (P[i, j] - Y[i, j]) * sw[i]
            sample += loss_term(float(P[i, j]), float(Y[i, j]), eps, loss)
        if loss == SQUARED_ERROR:
            sample = 0.5 * sample / k  # scikit-learn averages squared error over outputs
        total += sw[i] * sample
    return total


# ---------------------------------------------------------------------------------------------
# The network: forward and backward over one batch. hidden, output and loss are compile-time
# codes; dropout is None without dropout (numba then drops those branches before typing them).
# ---------------------------------------------------------------------------------------------

@njit
def layer_input(work, Xb, layers, i, n, dropout):
    """(B, I) input of weight layer i: the data for i = 0, else the previous layer's
    activations, or their dropped-out version while training with dropout."""
    if i == 0:
        return Xb
    if dropout is not None:
        return layer_rows(work.dropped, layers, i - 1, n)
    return layer_rows(work.acts, layers, i - 1, n)


@njit
def forward(work, params, Xb, net, first_row, hidden, output, dropout):
    """Run the network on Xb (B, F) and return the (B, K) output activations.

    work: a Workspace (its per-layer slots, see layer_rows); net: a bundles.Network; with
    dropout, first_row (the batch's position in the epoch) fixes the dropout draws.
    """
    layers = net.layers
    n = Xb.shape[0]
    last = layers.shape[0] - 1
    hidden_units = 0
    for i in range(last):
        hidden_units += layers[i, 1]
    unit_offset = 0
    for i in range(last + 1):
        Z = layer_rows(work.acts, layers, i, n)
        dense_forward(Z, layer_input(work, Xb, layers, i, n, dropout),
                      weights(params, layers, i), biases(params, layers, i))
        if i == last:
            keep_pre_activation(work.pre, Z, layers, i, output)
            activate(Z, output)
        else:
            keep_pre_activation(work.pre, Z, layers, i, hidden)
            activate(Z, hidden)
            if dropout is not None:
                dropout_forward(layer_rows(work.dropped, layers, i, n),
                                layer_rows(work.masks, layers, i, n), Z, net.dropout, net.seed,
                                first_row * hidden_units + unit_offset, hidden_units)
                unit_offset += layers[i, 1]
    return layer_rows(work.acts, layers, last, n)


def keep_pre_activation(pre, Z, layers, i, kind):
    """Copy layer i's pre-activations Z (B, O) into its slot of `pre` for GELU and SiLU, whose
    derivatives need z itself; nothing (not even compiled) for other activations."""


@overload(keep_pre_activation, jit_options=JIT_OPTIONS)
def _keep_pre_activation(pre, Z, layers, i, kind):
    if _literal(kind) in (GELU, SILU):
        return lambda pre, Z, layers, i, kind: copy_matrix(layer_rows(pre, layers, i, Z.shape[0]),
                                                           Z)
    return lambda pre, Z, layers, i, kind: None


@njit
def copy_matrix(dst, src):
    """dst (B, O) = src (B, O), element by element."""
    for r in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[r, j] = src[r, j]


@njit
def backprop(dparams, work, params, Xb, Yb, sample_weight, net, first_row, hidden, output, loss,
             dropout):
    """Forward and backward pass over one batch.

    dparams (P,) out: sum_i sw_i * d loss_i / d params, NOT yet divided by sum(sw) and without the
    L2 term (see finished_gradient), so chunks of a large data set can be summed. Xb (B, F),
    Yb (B, K), sample_weight (B,). Returns sum_i sw_i * loss_i.
    """
    layers = net.layers
    n = Xb.shape[0]
    last = layers.shape[0] - 1
    P = forward(work, params, Xb, net, first_row, hidden, output, dropout)
    loss_sum = output_delta_and_loss(layer_rows(work.deltas, layers, last, n), P, Yb,
                                     sample_weight, loss)
    for i in range(last, -1, -1):
        dZ = layer_rows(work.deltas, layers, i, n)
        dense_backward(weights(dparams, layers, i), biases(dparams, layers, i), dZ,
                       layer_input(work, Xb, layers, i, n, dropout))
        if i > 0:
            dA = layer_rows(work.deltas, layers, i - 1, n)
            np.dot(dZ, weights(params, layers, i).T, dA)
            if dropout is not None:  # dropped units pass no gradient
                M = layer_rows(work.masks, layers, i - 1, n)
                for r in range(n):
                    for j in range(dA.shape[1]):
                        dA[r, j] *= M[r, j]
            activation_backward(dA, layer_rows(work.acts, layers, i - 1, n),
                                layer_rows(work.pre, layers, i - 1, n), hidden)
    return loss_sum


@njit
def weight_squares(params, layers):
    """||W||^2 over every weight (the biases are not penalised): a BLAS dot, as scikit-learn
    computes it (a plain loop is a serial sum that cannot vectorise without fastmath)."""
    W = vector_view(params, 0, layers[0, 3])  # weights come first in the flat buffer, then biases
    return float(np.dot(W, W))


# ---------------------------------------------------------------------------------------------
# The fused optimizer update: finish the gradient and step, in one pass over the flat buffers
# ---------------------------------------------------------------------------------------------

@njit
def update(state, n_weights, alpha, weight_sum, opt, step, kind):
    """Finish the batch gradient state.dparams (see finished_gradient) and apply optimizer
    `kind`'s step (a compile-time code) to every entry of state.params and its slots, in place.
    step: this update's number, from 1 (Adam's bias correction)."""
    params, dparams, slot_1, slot_2 = state.params, state.dparams, state.slot_1, state.slot_2
    dt = params.dtype.type
    a, norm = dt(alpha), dt(weight_sum)
    step_size = dt(adam_step_size(opt.learning_rate, opt.beta_1, opt.beta_2, step))
    decayed = StepScalars(dt(opt.learning_rate), dt(opt.momentum), opt.nesterov, dt(opt.beta_1),
                          dt(opt.beta_2), dt(opt.epsilon), dt(opt.rho), step_size,
                          dt(1 - opt.learning_rate * opt.weight_decay) if kind == ADAMW else dt(1))
    # AdamW decays only the weights, which come before the biases.
    kept = StepScalars(decayed.learning_rate, decayed.momentum, decayed.nesterov, decayed.beta_1,
                       decayed.beta_2, decayed.epsilon, decayed.rho, step_size, dt(1))
    for k in range(params.shape[0]):
        g = finished_gradient(dparams[k], params[k], k, n_weights, a, norm)
        h = decayed if k < n_weights else kept
        params[k], slot_1[k], slot_2[k] = optimizer_step(params[k], g, slot_1[k], slot_2[k], h,
                                                         kind)


# ---------------------------------------------------------------------------------------------
# Whole-epoch, whole-data-set and inference drivers: one compiled call each. sw is a
# switches.Switches; its fields are handed on as arguments, where numba can use them.
# ---------------------------------------------------------------------------------------------

@njit
def stage_batch(work, features, Y, sample_weight, rows, sparse):
    """Gather the listed rows of inputs, targets and weights into the workspace's staging
    buffers; returns (B, F), (B, K) and (B,) views, and the batch's weight sum."""
    n = rows.shape[0]
    Xb = matrix_view(work.xbuf, 0, n, features.X.shape[1])
    Yb = matrix_view(work.ybuf, 0, n, Y.shape[1])
    swb = vector_view(work.swbuf, 0, n)
    gather_rows(Xb, features, rows, sparse)
    copy_rows(Yb, Y, rows)
    weight_sum = 0.0
    for r in range(n):
        swb[r] = sample_weight[rows[r]]
        weight_sum += swb[r]
    return Xb, Yb, swb, weight_sum


@entry_point
def epoch(state, work, features, Y, sample_weight, order, batch_size, net, opt, sw):
    """One epoch of mini-batch training, every batch in this one call (see train_epoch in
    fastmlp/cpu/__init__.py, which adds the workspace and switches). Returns (sum over batches of
    batch loss * batch rows, the number of updates made)."""
    state, work, features, Y, sample_weight, order, net = unmanaged(
        (state, work, features, Y, sample_weight, order, net))
    layers = net.layers
    n_weights = layers[0, 3]
    updates = 0
    total = 0.0
    fp_before = flush_denormals(state.params)
    for start in range(0, order.shape[0], batch_size):
        rows = vector_view(order, start, min(batch_size, order.shape[0] - start))
        Xb, Yb, swb, weight_sum = stage_batch(work, features, Y, sample_weight, rows, sw.sparse)
        loss_sum = backprop(state.dparams, work, state.params, Xb, Yb, swb, net, start,
                            sw.hidden, sw.output, sw.loss, sw.dropout)
        if weight_sum == 0:
            continue  # every sample in this batch has zero weight: nothing to learn from it
        squares = weight_squares(state.params, layers)  # of the weights this batch saw
        total += (loss_sum / weight_sum + 0.5 * net.alpha * squares / weight_sum) * rows.shape[0]
        updates += 1
        update(state, n_weights, net.alpha, weight_sum, opt, opt.step + updates, sw.optimizer)
    restore_fp(fp_before)
    return total, updates


@entry_point
def full_loss_and_gradient(dparams, chunk_grad, work, params, features, Y, sample_weight, net,
                           chunk_rows, sw):
    """Full-data-set regularised loss (returned) and its gradient dparams (P,) out, computed in
    chunks of at most chunk_rows rows (chunk_grad (P,) is work space). Used by L-BFGS."""
    dparams, chunk_grad, work, params, features, Y, sample_weight, net = unmanaged(
        (dparams, chunk_grad, work, params, features, Y, sample_weight, net))
    layers = net.layers
    n = Y.shape[0]
    n_weights = layers[0, 3]
    fp_before = flush_denormals(params)
    dparams[:] = 0
    loss_sum = 0.0
    weight_sum = 0.0
    all_rows = np.arange(n)
    for start in range(0, n, chunk_rows):
        rows = all_rows[start:start + chunk_rows]
        Xb, Yb, swb, chunk_weight = stage_batch(work, features, Y, sample_weight, rows,
                                                sw.sparse)
        loss_sum += backprop(chunk_grad, work, params, Xb, Yb, swb, net, start, sw.hidden,
                             sw.output, sw.loss, sw.dropout)
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
def predict_rows(out, work, params, features, rows, net, chunk_rows, sw):
    """Output activations out (R, K) for the input rows listed in rows (R,), chunk by chunk."""
    out, work, params, features, rows, net = unmanaged((out, work, params, features, rows, net))
    for start in range(0, rows.shape[0], chunk_rows):
        chunk = rows[start:start + chunk_rows]
        P = forward(work, params, input_block(work, features, chunk, sw.sparse), net, start,
                    sw.hidden, sw.output, None)
        for r in range(P.shape[0]):
            for j in range(P.shape[1]):
                out[start + r, j] = P[r, j]


@njit
def input_block(work, features, chunk, sparse):
    """The (B, F) input rows listed in chunk (B,): a view of the data when they are consecutive
    rows of a dense input (no copy), else gathered into the workspace."""
    X = features.X
    if sparse is None and consecutive(chunk):
        return X[chunk[0]:chunk[0] + chunk.shape[0]]
    Xb = matrix_view(work.xbuf, 0, chunk.shape[0], X.shape[1])
    gather_rows(Xb, features, chunk, sparse)
    return Xb


@njit
def consecutive(rows):
    """True when rows (R,) is an increasing run r, r + 1, r + 2, ..."""
    for r in range(1, rows.shape[0]):
        if rows[r] != rows[r - 1] + 1:
            return False
    return True
