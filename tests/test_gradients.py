"""Layer 2: central finite differences of the compiled loss against the compiled gradient, on
the flat parameter vector, in float64, for every hidden activation with every output loss."""

import numpy as np
import pytest

import fastmlp.cpu as cpu
from fastmlp import ops
from fastmlp.bundles import Network
from fastmlp.layout import Layout
from fastmlp.training import as_features

# Every loss of the registry with its output activation, and an output count that exercises it
# (several classes for softmax; one output for squared error, the common case).
HEADS = [(loss.output, loss.name, {"softmax": 3, "identity": 1}.get(loss.output, 2))
         for loss in ops.LOSSES]
LOG_LOSS_HEAD, SQUARED_HEAD = ("softmax", "log_loss"), ("identity", "squared_error")


def _setup(activation, head, n_outputs, alpha, seed=0, dropout=0.0):
    rng = np.random.RandomState(seed)
    layout = Layout((4, 5, 3, n_outputs))
    params = rng.uniform(-0.7, 0.7, layout.n_params)
    X = rng.normal(size=(9, 4))
    if head[1] == "log_loss":
        Y = np.eye(n_outputs)[rng.randint(0, n_outputs, 9)]
    elif head[1] == "poisson":
        Y = rng.poisson(1.0, (9, n_outputs)).astype(float)
    elif head[1] == "binary_log_loss":
        Y = rng.randint(0, 2, (9, n_outputs)).astype(float)
    else:
        Y = rng.normal(size=(9, n_outputs))
    sw = rng.uniform(0.5, 2.0, 9)
    net = Network(layout.table, ops.ACTIVATION[activation].code, ops.ACTIVATION[head[0]].code,
                  ops.LOSS[head[1]].code, alpha, dropout, 77)
    features = as_features(X)

    def loss_and_grad(p):
        grad = np.empty_like(p)
        return cpu.loss_and_gradient(grad, p.copy(), features, Y, sw, net, 4), grad

    return params, loss_and_grad


def _finite_differences(loss_and_grad, params, h=1e-6):
    fd = np.empty_like(params)
    for k in range(params.size):
        step = np.zeros_like(params)
        step[k] = h
        fd[k] = (loss_and_grad(params + step)[0] - loss_and_grad(params - step)[0]) / (2 * h)
    return fd


@pytest.mark.parametrize("head", HEADS, ids=[h[1] for h in HEADS])
@pytest.mark.parametrize("activation", ops.HIDDEN_ACTIVATIONS)
def test_gradient_matches_finite_differences(activation, head):
    params, loss_and_grad = _setup(activation, head, head[2], alpha=0.1)
    _, grad = loss_and_grad(params)
    fd = _finite_differences(loss_and_grad, params)
    error = np.linalg.norm(fd - grad) / max(np.linalg.norm(fd), np.linalg.norm(grad))
    assert error < 1e-6


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_gradient_with_dropout_matches_finite_differences(activation):
    """Dropout masks depend only on (seed, position), so for a fixed seed the loss is a smooth
    function of the parameters and its gradient can be checked like any other."""
    params, loss_and_grad = _setup(activation, LOG_LOSS_HEAD, 3, alpha=0.1, dropout=0.4)
    loss_without, _ = _setup(activation, LOG_LOSS_HEAD, 3, alpha=0.1)[1](params)
    assert loss_and_grad(params)[0] != loss_without  # dropout is really on
    _, grad = loss_and_grad(params)
    fd = _finite_differences(loss_and_grad, params)
    error = np.linalg.norm(fd - grad) / max(np.linalg.norm(fd), np.linalg.norm(grad))
    assert error < 1e-6


def test_multi_output_squared_error_keeps_sklearn_scaling():
    """scikit-learn averages squared error over the K outputs in the loss but not in its gradient
    (scikit-learn issue 8349); fastmlp matches scikit-learn, so the data part of the gradient is
    exactly K times the derivative of the reported loss."""
    params, loss_and_grad = _setup("tanh", SQUARED_HEAD, 3, alpha=0.0)
    _, grad = loss_and_grad(params)
    fd = _finite_differences(loss_and_grad, params)
    np.testing.assert_allclose(grad, 3 * fd, rtol=1e-6, atol=1e-9)
