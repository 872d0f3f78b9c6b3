"""Slow, obvious NumPy versions of the forward pass, losses, backpropagation and optimizer steps.

This is the oracle the compiled kernels are tested against. It works on lists of per-layer arrays,
allocates freely and favours clarity over speed; nothing in the training path may call it.
"""

import numpy as np
from scipy.special import erf


def activate(name, z):
    """The activation ``name`` applied to pre-activations ``z`` (a new array)."""
    if name == "identity":
        return z.copy()
    if name == "logistic":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "exp":
        return np.exp(z)
    if name == "leaky_relu":
        return np.where(z > 0, z, 0.01 * z)
    if name == "elu":
        return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))
    if name == "gelu":
        return 0.5 * z * (1 + erf(z / np.sqrt(2)))
    if name == "silu":
        return z / (1 + np.exp(-z))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(name)


def activation_derivative(name, a, z=None):
    """d activation / d z, from the output ``a`` (and the pre-activation ``z`` where needed)."""
    if name == "gelu":
        return 0.5 * (1 + erf(z / np.sqrt(2))) + z * np.exp(-z**2 / 2) / np.sqrt(2 * np.pi)
    if name == "silu":
        s = 1 / (1 + np.exp(-z))
        return s * (1 + z * (1 - s))
    if name == "leaky_relu":
        return np.where(a > 0, 1.0, 0.01).astype(a.dtype)
    if name == "elu":
        return np.where(a > 0, 1.0, a + 1).astype(a.dtype)
    if name == "identity":
        return np.ones_like(a)
    if name == "logistic":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a**2
    if name == "relu":
        return (a > 0).astype(a.dtype)
    raise ValueError(name)


def forward(coefs, intercepts, X, activation, out_activation, masks=None, pre=None):
    """Outputs of every layer, input included: ``[X, a_1, ..., a_L]``.

    masks: optional dropout multipliers (0 or 1 / (1 - rate)), one array per hidden layer, applied
    to that layer's output before the next layer; the returned outputs are before dropout.
    pre: optional list that receives every layer's pre-activation z."""
    outputs = [X]
    inputs = X
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        last = i == len(coefs) - 1
        z = inputs @ W + b
        if pre is not None:
            pre.append(z)
        outputs.append(activate(out_activation if last else activation, z))
        inputs = outputs[-1] if masks is None or last else outputs[-1] * masks[i]
    return outputs


def loss(name, Y, P, sample_weight=None):
    """Weighted mean over samples of scikit-learn's per-sample loss."""
    eps = np.finfo(P.dtype).eps
    if name == "squared_error":
        per_sample = 0.5 * ((Y - P) ** 2).mean(axis=1)
    elif name == "poisson":
        ratio = np.where(Y > 0, Y / P, 1.0)
        per_sample = (np.where(Y > 0, Y * np.log(ratio), 0.0) - Y + P).sum(axis=1)
    elif name == "log_loss":
        per_sample = -(Y * np.log(np.clip(P, eps, 1 - eps))).sum(axis=1)
    elif name == "binary_log_loss":
        Pc = np.clip(P, eps, 1 - eps)
        per_sample = -(Y * np.log(Pc) + (1 - Y) * np.log(1 - Pc)).sum(axis=1)
    else:
        raise ValueError(name)
    return np.average(per_sample, weights=sample_weight)


def loss_and_gradients(coefs, intercepts, X, Y, activation, out_activation, loss_name, alpha,
                       sample_weight=None, masks=None):
    """Regularised loss and its gradient with respect to every weight and bias.

    The loss is ``mean_w(per-sample loss) + alpha/2 * ||W||^2 / sum(w)``. Each output activation is
    paired with its canonical loss, so the derivative of the loss with respect to the output
    pre-activation is simply ``w * (p - y) / sum(w)``. masks: dropout multipliers (see forward).
    """
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    w_sum = w.sum()
    pre = []
    outputs = forward(coefs, intercepts, X, activation, out_activation, masks, pre)
    value = loss(loss_name, Y, outputs[-1], w)
    value += 0.5 * alpha * sum((W**2).sum() for W in coefs) / w_sum

    def layer_input(i):  # what layer i actually saw: the previous output, after dropout
        return outputs[i] if masks is None or i == 0 else outputs[i] * masks[i - 1]

    delta = (outputs[-1] - Y) * w[:, None] / w_sum
    coef_grads = [None] * len(coefs)
    intercept_grads = [None] * len(coefs)
    for i in reversed(range(len(coefs))):
        coef_grads[i] = layer_input(i).T @ delta + alpha * coefs[i] / w_sum
        intercept_grads[i] = delta.sum(axis=0)
        if i > 0:
            delta = delta @ coefs[i].T
            if masks is not None:
                delta = delta * masks[i - 1]
            delta = delta * activation_derivative(activation, outputs[i], pre[i - 1])
    return value, coef_grads, intercept_grads


def sgd_step(params, velocities, grads, learning_rate, momentum, nesterov):
    """One SGD step with (optionally Nesterov) momentum, in place on every array."""
    for p, v, g in zip(params, velocities, grads):
        v *= momentum
        v -= learning_rate * g
        if nesterov:
            p += momentum * v - learning_rate * g
        else:
            p += v


def adam_step(params, ms, vs, grads, step, learning_rate, beta_1, beta_2, epsilon,
              weight_decay=0.0, decayed=None):
    """Adam step number ``step`` (counted from 1), in place on every array. weight_decay > 0
    makes it AdamW: the arrays flagged in ``decayed`` first shrink by
    learning_rate * weight_decay."""
    corrected_lr = learning_rate * np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
    decayed = decayed or [False] * len(params)
    for p, m, v, g, decay in zip(params, ms, vs, grads, decayed):
        m *= beta_1
        m += (1 - beta_1) * g
        v *= beta_2
        v += (1 - beta_2) * g**2
        if decay:
            p *= 1 - learning_rate * weight_decay
        p -= corrected_lr * m / (np.sqrt(v) + epsilon)


def adagrad_step(params, accumulators, grads, learning_rate, epsilon):
    """One Adagrad step, in place."""
    for p, acc, g in zip(params, accumulators, grads):
        acc += g**2
        p -= learning_rate * g / (np.sqrt(acc) + epsilon)


def rmsprop_step(params, mean_squares, grads, learning_rate, rho, epsilon):
    """One RMSprop step, in place."""
    for p, ms, g in zip(params, mean_squares, grads):
        ms *= rho
        ms += (1 - rho) * g**2
        p -= learning_rate * g / (np.sqrt(ms) + epsilon)
