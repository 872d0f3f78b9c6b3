"""Layer 3: a network small enough to work through by hand, with the numbers written out."""

import numpy as np
from numpy.testing import assert_allclose

from fastmlp import MLPClassifier, MLPRegressor


def test_one_sgd_step_on_a_2_1_1_relu_network():
    # x = (1, 2), y = 1, hidden weights (0.1, 0.2), hidden bias 0, output weight 0.5, bias 0.1.
    #   z1 = 1*0.1 + 2*0.2 = 0.5, relu -> 0.5;  p = 0.5*0.5 + 0.1 = 0.35
    #   loss = (1 - 0.35)^2 / 2 = 0.21125
    #   output delta = p - y = -0.65: dW2 = 0.5 * -0.65 = -0.325, db2 = -0.65
    #   hidden delta = -0.65 * 0.5 = -0.325 (relu is active): dW1 = (-0.325, -0.65), db1 = -0.325
    #   SGD, learning rate 0.1, no momentum: each parameter moves by -0.1 * its gradient.
    X, y = np.array([[1.0, 2.0]]), np.array([1.0])
    reg = MLPRegressor(hidden_layer_sizes=(1,), solver="sgd", learning_rate_init=0.1, momentum=0,
                       alpha=0, batch_size=1, shuffle=False, dtype="float64", random_state=0)
    reg.partial_fit(X, y)
    reg.coefs_ = [np.array([[0.1], [0.2]]), np.array([[0.5]])]
    reg.intercepts_ = [np.array([0.0]), np.array([0.1])]
    assert_allclose(reg.predict(X), [0.35])

    reg.partial_fit(X, y)
    assert_allclose(reg.loss_, 0.21125)
    assert_allclose(reg.coefs_[0], [[0.1325], [0.265]])
    assert_allclose(reg.intercepts_[0], [0.0325])
    assert_allclose(reg.coefs_[1], [[0.5325]])
    assert_allclose(reg.intercepts_[1], [0.165])


def test_binary_log_loss_on_a_logistic_unit():
    # One hidden identity unit with weight 1 and bias 0, output weight 2 and bias 0, input 0.5:
    #   z = 0.5 * 1 * 2 = 1, p = 1 / (1 + e^-1) = 0.7310585786
    #   label 1: loss = -log(0.7310585786) = 0.3132616875; predict_proba = (0.2689414214, 0.7310...)
    #   with alpha = 0.2 the penalty adds 0.2 / 2 * (1^2 + 2^2) / 1 = 0.5
    X, y = np.array([[0.5]]), np.array([1])
    clf = MLPClassifier(hidden_layer_sizes=(1,), activation="identity", solver="sgd",
                        learning_rate_init=1e-12, alpha=0.2, dtype="float64")
    clf.partial_fit(X, y, classes=[0, 1])
    clf.coefs_ = [np.array([[1.0]]), np.array([[2.0]])]
    clf.intercepts_ = [np.zeros(1), np.zeros(1)]
    assert_allclose(clf.predict_proba(X), [[0.2689414214, 0.7310585786]])
    clf.partial_fit(X, y)
    assert_allclose(clf.loss_, 0.3132616875 + 0.5, rtol=1e-9)
