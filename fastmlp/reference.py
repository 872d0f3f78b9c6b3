"""Slow, obvious NumPy versions of the forward pass, losses, backpropagation and optimizer steps.

This is the oracle the compiled kernels are tested against. It works on lists of per-layer arrays,
allocates freely and favours clarity over speed; nothing in the training path may call it.
"""

import numpy as np


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
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(name)


def activation_derivative(name, a):
    """d activation / d z, written in terms of the activation's output ``a``."""
    if name == "identity":
        return np.ones_like(a)
    if name == "logistic":
        return a * (1 - a)
    if name == "tanh":
        return 1 - a**2
    if name == "relu":
        return (a > 0).astype(a.dtype)
    raise ValueError(name)


def forward(coefs, intercepts, X, activation, out_activation):
    """Outputs of every layer, input included: ``[X, a_1, ..., a_L]``."""
    outputs = [X]
    for i, (W, b) in enumerate(zip(coefs, intercepts)):
        last = i == len(coefs) - 1
        outputs.append(activate(out_activation if last else activation, outputs[-1] @ W + b))
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
                       sample_weight=None):
    """Regularised loss and its gradient with respect to every weight and bias.

    The loss is ``mean_w(per-sample loss) + alpha/2 * ||W||^2 / sum(w)``. Each output activation is
    paired with its canonical loss, so the derivative of the loss with respect to the output
    pre-activation is simply ``w * (p - y) / sum(w)``.
    """
    n = X.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    w_sum = w.sum()
    outputs = forward(coefs, intercepts, X, activation, out_activation)
    value = loss(loss_name, Y, outputs[-1], w)
    value += 0.5 * alpha * sum((W**2).sum() for W in coefs) / w_sum

    delta = (outputs[-1] - Y) * w[:, None] / w_sum
    coef_grads = [None] * len(coefs)
    intercept_grads = [None] * len(coefs)
    for i in reversed(range(len(coefs))):
        coef_grads[i] = outputs[i].T @ delta + alpha * coefs[i] / w_sum
        intercept_grads[i] = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ coefs[i].T) * activation_derivative(activation, outputs[i])
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


def adam_step(params, ms, vs, grads, step, learning_rate, beta_1, beta_2, epsilon):
    """Adam step number ``step`` (counted from 1), in place on every array."""
    corrected_lr = learning_rate * np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
    for p, m, v, g in zip(params, ms, vs, grads):
        m *= beta_1
        m += (1 - beta_1) * g
        v *= beta_2
        v += (1 - beta_2) * g**2
        p -= corrected_lr * m / (np.sqrt(v) + epsilon)
