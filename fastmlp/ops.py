"""The operations a network is built from: activations, losses and optimizer steps, each defined
once, with its public name, the integer code the kernels branch on, its scalar maths and flags.

Everything else is built from the three tables at the bottom: the CPU and CUDA dispatch, the
estimators' allowed values, `python -m fastmlp.compile`, ONNX coverage and the test parameters.
Adding an operation is one entry here (plus its NumPy oracle in reference.py, which stays
hand-written); a test fails if any place misses it. The maths is plain scalar Python, marked
`register_jitable` so that every backend compiles it into its own kernels (CPU and CUDA) and the
CUDA simulator runs it as Python. Nothing here touches arrays or allocates.

Codes are append-only: never renumber or reuse one (saved models and compiled caches hold them).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba.extending import register_jitable

LEAKY_SLOPE = 0.01  # leaky_relu's slope for z < 0


# ---------------------------------------------------------------------------------------------
# Activations: f(z), and g * f'(z) from the output a = f(z) or, where the flag says so, from the
# pre-activation z (GELU's and SiLU's derivatives are not functions of a).
# ---------------------------------------------------------------------------------------------

@register_jitable
def identity(z):
    return z


@register_jitable
def identity_backward(g, a, z):
    return g


@register_jitable
def logistic(z):
    return type(z)(1) / (type(z)(1) + math.exp(-z))


@register_jitable
def logistic_backward(g, a, z):
    return g * a * (type(g)(1) - a)


@register_jitable
def tanh(z):
    return math.tanh(z)


@register_jitable
def _exp_float64(t):
    """e^t for |t| <= 20 in float64 arithmetic alone (no library call, so loops over it
    vectorise): (a degree-8 Taylor polynomial of e^(t / 64)) ** 64, relative error below 1e-8,
    far below a float32 ulp."""
    y = t * (1.0 / 64.0)
    e = 1.0 + y * (1.0 + y * (1.0 / 2 + y * (1.0 / 6 + y * (1.0 / 24 + y * (1.0 / 120 + y * (
        1.0 / 720 + y * (1.0 / 5040 + y * (1.0 / 40320))))))))
    for _ in range(6):
        e = e * e
    return e


@register_jitable
def tanh_float32(z):
    """tanh of a float32, within 1 ulp (glibc's tanhf: 2), by arithmetic alone, so that the CPU
    loop over a layer vectorises: tanhf is a library call per element (19 us for a W2 batch's
    3,072 activations; this form 3.8 us). In float64: with e = e^(2|x|), (e - 1) / (e + 1);
    tanh(x) = x - x^3 / 3 below 1e-4, where that quotient cancels; |x| capped at 9, where tanh
    rounds to 1 in float32."""
    x = min(abs(float(z)), 9.0)
    e = _exp_float64(2.0 * x)
    t = (e - 1.0) / (e + 1.0) if x >= 1e-4 else x - x * x * x / 3.0
    return type(z)(math.copysign(t, z))


@register_jitable
def elu_float32(z):
    """elu of a float32 (e^z - 1 below zero), within 1 ulp, by arithmetic alone so that the CPU
    loop over a layer vectorises (glibc's expm1f is a call per element, up to 6.4 ns). In
    float64: e^z - 1, or z + z^2 / 2 + z^3 / 6 above -1e-5, where that difference cancels; z
    capped at -20, where e^z - 1 rounds to -1 in float32. z >= 0 and NaN pass through."""
    x = max(float(z), -20.0)
    m = _exp_float64(x) - 1.0 if x < -1e-5 else x + x * x * (0.5 + x / 6.0)
    return type(z)(m) if z < 0 else z


@register_jitable
def tanh_backward(g, a, z):
    return g * (type(g)(1) - a * a)


@register_jitable
def relu(z):
    return type(z)(0) if z < 0 else z  # a NaN passes through: divergence stays visible


@register_jitable
def relu_backward(g, a, z):
    return type(g)(0) if a == 0 else g


@register_jitable
def exponential(z):
    return math.exp(z)


@register_jitable
def leaky_relu(z):
    return z * type(z)(LEAKY_SLOPE) if z < 0 else z


@register_jitable
def leaky_relu_backward(g, a, z):
    return g * type(g)(LEAKY_SLOPE) if a <= 0 else g


@register_jitable
def elu(z):
    return math.expm1(z) if z < 0 else z


@register_jitable
def elu_backward(g, a, z):
    return g * (a + type(g)(1)) if a < 0 else g  # d/dz (e^z - 1) = e^z = a + 1


@register_jitable
def gelu(z):
    """Exact GELU, z Phi(z) with Phi the standard normal CDF."""
    return type(z)(0.5) * z * (type(z)(1) + math.erf(z * type(z)(math.sqrt(0.5))))


@register_jitable
def gelu_backward(g, a, z):
    """d/dz z Phi(z) = Phi(z) + z phi(z)."""
    half = type(g)(0.5)
    cdf = half * (type(g)(1) + math.erf(z * type(g)(math.sqrt(0.5))))
    return g * (cdf + z * type(g)(1 / math.sqrt(2 * math.pi)) * math.exp(-half * z * z))


@register_jitable
def silu(z):
    return z / (type(z)(1) + math.exp(-z))


@register_jitable
def silu_backward(g, a, z):
    """d/dz z s(z) = s(z) (1 + z (1 - s(z))), s the logistic function."""
    s = type(g)(1) / (type(g)(1) + math.exp(-z))
    return g * (s * (type(g)(1) + z * (type(g)(1) - s)))


# ---------------------------------------------------------------------------------------------
# Losses: one output's contribution to a sample's loss, in float64: p the prediction, y the
# target, eps the dtype's machine epsilon (probabilities are clipped to [eps, 1 - eps] in logs).
# ---------------------------------------------------------------------------------------------

@register_jitable
def xlogy(x, y):
    """x * log(y), defined as 0 where x == 0 (as scipy.special.xlogy)."""
    if x == 0:
        return 0.0
    return x * math.log(y)


@register_jitable
def squared_error_term(p, y, eps):
    return (y - p) * (y - p)


@register_jitable
def log_loss_term(p, y, eps):
    return -xlogy(y, min(max(p, eps), 1 - eps))


@register_jitable
def binary_log_loss_term(p, y, eps):
    pc = min(max(p, eps), 1 - eps)
    return -(xlogy(y, pc) + xlogy(1 - y, 1 - pc))


@register_jitable
def poisson_term(p, y, eps):
    return xlogy(y, y / p) - y + p  # half the Poisson deviance


# ---------------------------------------------------------------------------------------------
# Optimizer steps: one parameter p, its finished gradient g, its two state slots and the step's
# scalars h (a StepScalars); each returns (p, slot_1, slot_2) after the step. One-slot optimizers
# get the same array as both slots and return their new slot twice.
# ---------------------------------------------------------------------------------------------

class StepScalars(NamedTuple):
    """One update's optimizer scalars, in the parameters' dtype."""

    learning_rate: float
    momentum: float   # SGD
    nesterov: bool    # SGD
    beta_1: float     # Adam
    beta_2: float     # Adam
    epsilon: float    # Adam, Adagrad, RMSprop
    rho: float        # RMSprop
    step_size: float  # Adam: learning_rate with this step's bias correction
    keep: float       # 1 - learning_rate * weight_decay for decayed entries (AdamW), else 1


@register_jitable
def sgd_step(p, g, velocity, same, h):
    """SGD with momentum h.momentum, optionally Nesterov's."""
    step = h.momentum * velocity - h.learning_rate * g
    velocity = step
    if h.nesterov:  # look ahead along the new velocity
        step = h.momentum * step - h.learning_rate * g
    return p + step, velocity, velocity


@register_jitable
def adam_step(p, g, m, v, h):
    """Adam; h.step_size holds this step's bias correction, h.keep AdamW's decoupled decay."""
    one = type(p)(1)
    m = h.beta_1 * m + (one - h.beta_1) * g
    v = h.beta_2 * v + (one - h.beta_2) * (g * g)
    return p * h.keep - h.step_size * m / (math.sqrt(v) + h.epsilon), m, v


@register_jitable
def adagrad_step(p, g, accumulator, same, h):
    """Adagrad: squared gradients summed, each step divided by the sum's square root."""
    accumulator = accumulator + g * g
    step = h.learning_rate * g / (math.sqrt(accumulator) + h.epsilon)
    return p - step, accumulator, accumulator


@register_jitable
def rmsprop_step(p, g, mean_square, same, h):
    """RMSprop: a decaying mean of squared gradients (rate h.rho) normalises each step."""
    mean_square = h.rho * mean_square + (type(p)(1) - h.rho) * (g * g)
    step = h.learning_rate * g / (math.sqrt(mean_square) + h.epsilon)
    return p - step, mean_square, mean_square


@register_jitable
def adam_step_size(learning_rate, beta_1, beta_2, step):
    """Adam's bias-corrected step size for update number `step` (counted from 1)."""
    t = float(step)  # float exponent: the same pow() Python uses for beta ** t
    return learning_rate * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)


@register_jitable
def weight_keep(learning_rate, weight_decay):
    """What decoupled weight decay (AdamW) multiplies each weight by per step; exactly 1 for
    every other optimizer, whose weight_decay is 0."""
    return 1 - learning_rate * weight_decay


@register_jitable
def finished_gradient(g, p, k, n_weights, alpha, norm):
    """The mean gradient of entry k: the L2 term alpha * p added for weights (k < n_weights; the
    biases come after the weights and are not penalised), then divided by sum(sw)."""
    if k < n_weights:
        g = g + alpha * p
    return g / norm


@register_jitable
def uniform(seed, counter):
    """A uniform number in [0, 1) from the splitmix64 hash of seed + counter: a dropout mask then
    depends only on (seed, position), so every backend draws the same one."""
    z = np.uint64(seed) + np.uint64(counter) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # top 53 bits


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Activation:
    name: str
    code: int
    value: Callable            # f(z)
    backward: Callable | None  # g * f'(z); None for output-only activations (softmax, exp)
    hidden: bool = True        # allowed as the hidden layers' activation
    needs_pre_activation: bool = False  # backward reads z, so the forward pass keeps it
    row_wise: bool = False     # softmax: each row is normalised after f (see the kernels)
    # A form of f the CPU loops use for float32 where f is a library call that keeps the loop
    # from vectorising (tanh, elu); float64 and the GPU keep f.
    value_float32: Callable | None = None


@dataclass(frozen=True)
class Loss:
    name: str
    code: int
    term: Callable       # one output's loss term (p, y, eps) -> float64
    output: str          # the output activation that makes d loss / d z = p - y ("canonical")
    regression: bool     # offered as MLPRegressor's `loss` (classifiers pick theirs from y)
    mean_over_outputs: bool = False  # squared error: scikit-learn averages the terms over outputs


@dataclass(frozen=True)
class Optimizer:
    name: str            # the estimators' `solver` value
    code: int
    step: Callable       # one parameter's step (see sgd_step)
    slots: int           # state buffers as long as the parameters: 1 or 2
    counts_steps: bool   # the update counter sets a bias correction (Adam): kept across epochs
    decoupled_decay: bool = False  # weights shrink by learning_rate * weight_decay each step


ACTIVATIONS = (
    Activation("identity", 0, identity, identity_backward),
    Activation("logistic", 1, logistic, logistic_backward),
    Activation("tanh", 2, tanh, tanh_backward, value_float32=tanh_float32),
    Activation("relu", 3, relu, relu_backward),
    # Softmax's element-wise part is exp after subtracting the row maximum: the kernels finish it.
    Activation("softmax", 4, identity, None, hidden=False, row_wise=True),
    Activation("exp", 5, exponential, None, hidden=False),
    Activation("leaky_relu", 6, leaky_relu, leaky_relu_backward),
    Activation("elu", 7, elu, elu_backward, value_float32=elu_float32),
    Activation("gelu", 8, gelu, gelu_backward, needs_pre_activation=True),
    Activation("silu", 9, silu, silu_backward, needs_pre_activation=True),
)

LOSSES = (
    Loss("squared_error", 0, squared_error_term, "identity", regression=True,
         mean_over_outputs=True),
    Loss("log_loss", 1, log_loss_term, "softmax", regression=False),
    Loss("binary_log_loss", 2, binary_log_loss_term, "logistic", regression=False),
    Loss("poisson", 3, poisson_term, "exp", regression=True),
)

# L-BFGS is no entry: it runs in SciPy on the compiled loss and gradient, with no per-step kernel.
OPTIMIZERS = (
    Optimizer("sgd", 0, sgd_step, slots=1, counts_steps=False),
    Optimizer("adam", 1, adam_step, slots=2, counts_steps=True),
    Optimizer("adagrad", 2, adagrad_step, slots=1, counts_steps=False),
    Optimizer("rmsprop", 3, rmsprop_step, slots=1, counts_steps=False),
    Optimizer("adamw", 4, adam_step, slots=2, counts_steps=True, decoupled_decay=True),
)


def _by_name(entries):
    return {entry.name: entry for entry in entries}


ACTIVATION = _by_name(ACTIVATIONS)
LOSS = _by_name(LOSSES)
OPTIMIZER = _by_name(OPTIMIZERS)
HIDDEN_ACTIVATIONS = tuple(a.name for a in ACTIVATIONS if a.hidden)
REGRESSION_LOSSES = tuple(loss.name for loss in LOSSES if loss.regression)
SOLVERS = ("lbfgs", *OPTIMIZER)


def counts_steps(optimizer_code):
    """True when the optimizer's update counter must persist (Adam's bias correction)."""
    return by_code(OPTIMIZERS, optimizer_code).counts_steps


def by_code(entries, code):
    """The entry of `entries` with this code."""
    for entry in entries:
        if entry.code == code:
            return entry
    raise KeyError(f"no operation with code {code}")


def check_codes(net, optimizer=None):
    """Raise ValueError unless a bundles.Network's codes (and an OptimizerStep's) name registry
    entries fit for their place: for backends that choose operations at run time, before they
    launch anything."""
    def entry(entries, code, what):
        try:
            return by_code(entries, code)
        except KeyError:
            raise ValueError(f"fastmlp: {what} code {code} is not in fastmlp.ops") from None

    if entry(ACTIVATIONS, net.hidden, "hidden activation").backward is None:
        raise ValueError(f"fastmlp: activation code {net.hidden} cannot be used in hidden layers")
    entry(ACTIVATIONS, net.output, "output activation")
    entry(LOSSES, net.loss, "loss")
    if optimizer is not None:
        entry(OPTIMIZERS, optimizer.kind, "optimizer")


def _check(entries):
    """Import-time consistency: unique names and codes (a clash would make two operations one)."""
    for field in ("name", "code"):
        values = [getattr(entry, field) for entry in entries]
        if len(set(values)) != len(values):
            raise RuntimeError(f"fastmlp.ops: duplicate {field} in {values}")


for _table in (ACTIVATIONS, LOSSES, OPTIMIZERS):
    _check(_table)
for _loss in LOSSES:
    if _loss.output not in ACTIVATION:
        raise RuntimeError(f"fastmlp.ops: loss {_loss.name!r} pairs with an unknown activation")
