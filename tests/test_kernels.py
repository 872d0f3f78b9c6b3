"""Layer 1: every compiled CPU kernel against the plain NumPy reference (fastmlp.reference)."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose

import fastmlp.cpu as cpu
from fastmlp import ops, reference
from fastmlp.bundles import Network, OptimizerStep, TrainState
from fastmlp.cpu import kernels
from fastmlp.layout import Layout
from fastmlp.numba_internals import FLUSH_DENORMALS, X86, fp_control
from fastmlp.training import as_features

# Every registry entry is a test case (fastmlp/ops.py): a new operation is tested here at once.
HIDDEN = list(ops.HIDDEN_ACTIVATIONS)
# (output activation, loss) pairs the estimators use.
HEADS = [(loss.output, loss.name) for loss in ops.LOSSES]
LOG_LOSS_HEAD, SQUARED_HEAD = ("softmax", "log_loss"), ("identity", "squared_error")
SGD, ADAM, ADAMW, ADAGRAD, RMSPROP = (ops.OPTIMIZER[name].code for name in (
    "sgd", "adam", "adamw", "adagrad", "rmsprop"))
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


@numba.njit
def _call(kernel, *args):
    """Call a kernel compiled without a Python wrapper (fastmlp.config.njit) from a test."""
    return kernel(*args)


@numba.njit
def _uniform(seed, counter):
    return ops.uniform(seed, counter)


def _net(units, activation, head, alpha=0.0, dropout=0.0, seed=0):
    layout = Layout(units)
    return layout, Network(layout.table, ops.ACTIVATION[activation].code,
                           ops.ACTIVATION[head[0]].code, ops.LOSS[head[1]].code, alpha, dropout,
                           seed)


def _problem(units, head, dtype, n=13, seed=0):
    rng = np.random.RandomState(seed)
    layout = Layout(units)
    params = rng.uniform(-0.6, 0.6, layout.n_params).astype(dtype)
    X = rng.normal(size=(n, units[0])).astype(dtype)
    k = units[-1]
    if head[1] == "log_loss":
        Y = np.eye(k, dtype=dtype)[rng.randint(0, k, n)]
    elif head[1] == "binary_log_loss":
        Y = rng.randint(0, 2, (n, k)).astype(dtype)
    elif head[1] == "poisson":
        Y = rng.poisson(1.5, (n, k)).astype(dtype)
    else:
        Y = rng.normal(size=(n, k)).astype(dtype)
    sw = rng.uniform(0.2, 2.0, n).astype(dtype)
    return layout, params, X, Y, sw


def kernels_features(X):
    return as_features(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ops.ACTIVATION))
def test_activate_and_its_derivative(name, dtype):
    Z = np.random.RandomState(1).normal(scale=3, size=(9, 5)).astype(dtype)
    Z[0, 0] = 0.0
    A = Z.copy()
    _call(kernels.activate, ops.ACTIVATION[name].code, A)
    assert_allclose(A, reference.activate(name, Z), **TOL[dtype])
    if name in HIDDEN:
        dZ = np.ones_like(Z) * 0.5
        _call(kernels.activation_backward, dZ, A, Z, ops.ACTIVATION[name].code)
        assert_allclose(dZ, 0.5 * reference.activation_derivative(name, A, Z), **TOL[dtype])


def _elu_exact(z):
    return np.where(z < 0, np.expm1(np.minimum(z, 0)), z)


# (activation, its float64 value rounded to float32 is the exact answer, where its float32 form
# changes method or saturates)
FLOAT32_FORMS = [("tanh", np.tanh, [9.0, 9.0001, 1e-4, 1e30]),
                 ("elu", _elu_exact, [-1e-5, -1.00001e-5, -20.0, -20.0001, -1e30])]


@pytest.mark.parametrize("name, exact, edges", FLOAT32_FORMS, ids=[f[0] for f in FLOAT32_FORMS])
def test_float32_forms_are_within_one_ulp_and_float64_is_the_librarys(name, exact, edges):
    """The CPU's float32 tanh and elu (ops.tanh_float32, ops.elu_float32: arithmetic that
    vectorises) against the function computed in float64 and rounded: at most 1 ulp apart over
    2 million points of [-25, 25], at tiny and huge magnitudes, where the form changes method,
    signed zeros, infinities and NaN. float64 keeps the library's function, bit for bit."""
    import math

    code = ops.ACTIVATION[name].code
    grid = np.linspace(-25, 25, 2_000_001, dtype=np.float32)
    powers = np.float32(10.0) ** -np.arange(0, 45, 0.05, dtype=np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, *edges, *np.negative(edges)],
                       dtype=np.float32)
    Z = np.concatenate([grid, powers, -powers, special]).reshape(1, -1)
    A = Z.copy()
    _call(kernels.activate, code, A)
    want = exact(Z.astype(np.float64)).astype(np.float32)
    apart = np.abs(A.view(np.int32).astype(np.int64) - want.view(np.int32).astype(np.int64))
    assert apart.max() <= 1, Z[apart > 1][:5]
    assert np.signbit(A[Z == 0]).tolist() == np.signbit(Z[Z == 0]).tolist()
    nan = np.array([[np.nan, -np.nan]], dtype=np.float32)
    _call(kernels.activate, code, nan)
    assert np.isnan(nan).all()
    Z64 = np.random.RandomState(2).normal(scale=3, size=(4, 50))
    A64 = Z64.copy()
    _call(kernels.activate, code, A64)
    library = {"tanh": math.tanh, "elu": lambda z: math.expm1(z) if z < 0 else z}[name]
    assert A64.tolist() == [[library(z) for z in row] for row in Z64.tolist()]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("head", HEADS)
def test_output_delta_and_loss(head, dtype):
    _, _, _, Y, sw = _problem((3, 4), head, dtype)
    P = np.random.RandomState(2).uniform(0.05, 0.95, Y.shape).astype(dtype)
    if head[0] == "softmax":
        P /= P.sum(axis=1, keepdims=True)
    dZ = np.empty_like(P)
    total = kernels.output_delta_and_loss(dZ, P, Y, sw, ops.LOSS[head[1]].code)
    assert_allclose(total / sw.sum(), reference.loss(head[1], Y, P, sw), **TOL[dtype])
    assert_allclose(dZ, (P - Y) * sw[:, None], **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("activation", HIDDEN)
def test_loss_and_gradient_against_reference(activation, head, dtype):
    units = (6, 5, 4, 3)
    alpha = 0.3
    layout, params, X, Y, sw = _problem(units, head, dtype)
    _, net = _net(units, activation, head, alpha)
    grad = np.empty_like(params)
    # chunk_rows=4 splits the 13 rows into uneven chunks whose sums must add up exactly.
    loss = cpu.loss_and_gradient(grad, params, kernels_features(X), Y, sw, net, 4)
    ref_loss, coef_grads, intercept_grads = reference.loss_and_gradients(
        layout.coefs(params), layout.intercepts(params), X, Y, activation, head[0], head[1],
        alpha, sw)
    assert_allclose(loss, ref_loss, **TOL[dtype])
    got_grads = layout.coefs(grad) + layout.intercepts(grad)
    for got, want in zip(got_grads, coef_grads + intercept_grads):
        assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_against_reference_dense_and_sparse(dtype):
    units = (7, 6, 3)
    layout, params, X, _, _ = _problem(units, LOG_LOSS_HEAD, dtype, n=23)
    X[X < 0.3] = 0
    net = _net(units, "tanh", LOG_LOSS_HEAD)[1]
    want = reference.forward(layout.coefs(params), layout.intercepts(params), X, "tanh",
                             "softmax")[-1]
    rows = np.arange(23)[::-1].copy()
    for features in (kernels_features(X), kernels_features(sp.csr_matrix(X))):
        out = np.empty((23, 3), dtype)
        cpu.predict(out, params, features, rows, net, 5)
        assert_allclose(out, want[rows], **TOL[dtype])


def test_gather_rows_sums_duplicate_sparse_entries():
    X = sp.csr_matrix((np.array([1.0, 2.0, 5.0]), np.array([1, 1, 0]), np.array([0, 2, 3])),
                      shape=(2, 3))
    features = kernels_features(X)
    Xb = np.full((2, 3), 9.0)
    _call(kernels.gather_rows, Xb, features, np.array([1, 0]))
    assert_allclose(Xb, [[5.0, 0, 0], [0, 3.0, 0]])


def _update(params, slot_1, slot_2, grad, opt, step, n_weights=0):
    """One fused update (no L2 term, a weight sum of 1: the gradient is used as it is)."""
    _call(kernels.update, TrainState(params, grad, slot_1, slot_2), n_weights, 0.0, 1.0, opt,
          step)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_update_against_reference(nesterov, dtype):
    rng = np.random.RandomState(4)
    p, v, g = (rng.normal(size=50).astype(dtype) for _ in range(3))
    p_ref, v_ref = p.copy(), v.copy()
    _update(p, v, v, g, OptimizerStep(SGD, 0.1, 0.9, nesterov, 0, 0, 0, 0, 0, 0), 1)
    reference.sgd_step([p_ref], [v_ref], [g], 0.1, 0.9, nesterov)
    assert_allclose(p, p_ref, **TOL[dtype])
    assert_allclose(v, v_ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_and_adamw_update_against_reference(weight_decay, dtype):
    rng = np.random.RandomState(5)
    p, g = rng.normal(size=50).astype(dtype), rng.normal(size=50).astype(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    p_ref = [p[:30].copy(), p[30:].copy()]  # the first 30 play the weights, the rest biases
    m_ref, v_ref = [np.zeros(30, dtype), np.zeros(20, dtype)], [np.zeros(30, dtype),
                                                                np.zeros(20, dtype)]
    for step in (1, 2, 3):
        _update(p, m, v, g, OptimizerStep(ADAMW if weight_decay else ADAM, 0.01, 0, False, 0.9,
                                          0.999, 1e-8, 0, weight_decay, 0), step, n_weights=30)
        reference.adam_step(p_ref, m_ref, v_ref, [g[:30], g[30:]], step, 0.01, 0.9, 0.999, 1e-8,
                            weight_decay, [True, False])
    assert_allclose(p, np.concatenate(p_ref), **TOL[dtype])
    assert_allclose(m, np.concatenate(m_ref), **TOL[dtype])
    assert_allclose(v, np.concatenate(v_ref), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adagrad_and_rmsprop_updates_against_reference(dtype):
    rng = np.random.RandomState(6)
    p, g = rng.normal(size=40).astype(dtype), rng.normal(size=40).astype(dtype)
    for name in ("adagrad", "rmsprop"):
        q, state = p.copy(), np.full_like(p, 0.5)
        q_ref, state_ref = q.copy(), state.copy()
        for _ in range(3):
            if name == "adagrad":
                _update(q, state, state, g, OptimizerStep(ADAGRAD, 0.05, 0, False, 0, 0, 1e-8,
                                                          0, 0, 0), 1)
                reference.adagrad_step([q_ref], [state_ref], [g], 0.05, 1e-8)
            else:
                _update(q, state, state, g, OptimizerStep(RMSPROP, 0.05, 0, False, 0, 0, 1e-8,
                                                          0.9, 0, 0), 1)
                reference.rmsprop_step([q_ref], [state_ref], [g], 0.05, 0.9, 1e-8)
        assert_allclose(q, q_ref, **TOL[dtype])
        assert_allclose(state, state_ref, **TOL[dtype])


def test_uniform_is_deterministic_and_uniform():
    draws = np.array([_uniform(12345, k) for k in range(20000)])
    again = np.array([_uniform(12345, k) for k in range(20000)])
    np.testing.assert_array_equal(draws, again)
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean() - 0.5) < 0.01 and abs(draws.var() - 1 / 12) < 0.005
    assert not np.array_equal(draws[:100], [_uniform(54321, k) for k in range(100)])
    hist = np.histogram(draws, bins=10, range=(0, 1))[0]
    assert hist.min() > 1800 and hist.max() < 2200


def test_dropout_forward_masks_and_scales():
    A = np.random.RandomState(7).uniform(0.5, 1.5, (200, 30))
    D, M = np.empty_like(A), np.empty_like(A)
    _call(kernels.dropout_forward, D, M, A, 0.25, 99, 0, 30)
    dropped = M == 0
    assert abs(dropped.mean() - 0.25) < 0.02
    assert_allclose(M[~dropped], 1 / 0.75)
    assert_allclose(D, A * M)


def _dropout_masks(units, n_rows, rate, seed, first_row):
    """The masks dropout_forward draws for rows first_row.. of an epoch, rebuilt from uniform()."""
    hidden = units[1:-1]
    total = sum(hidden)
    masks, offset = [], 0
    for width in hidden:
        keep = np.array([[_uniform(seed, (first_row + i) * total + offset + j) >= rate
                          for j in range(width)] for i in range(n_rows)])
        masks.append(keep / (1 - rate))
        offset += width
    return masks


SOLVER_OPTS = {
    "sgd": OptimizerStep(SGD, 0.1, 0.9, True, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
    "adam": OptimizerStep(ADAM, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.0, 0),
    "adamw": OptimizerStep(ADAMW, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.1, 0),
    "adagrad": OptimizerStep(ADAGRAD, 0.05, 0.0, False, 0.0, 0.0, 1e-8, 0.0, 0.0, 0),
    "rmsprop": OptimizerStep(RMSPROP, 0.01, 0.0, False, 0.0, 0.0, 1e-8, 0.9, 0.0, 0),
}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("solver", sorted(SOLVER_OPTS))
def test_train_epoch_against_a_reference_loop(solver, dropout, dtype):
    """One compiled epoch equals the reference's batch-by-batch loop in the given row order."""
    units = (5, 4, 6, 3)
    head = LOG_LOSS_HEAD
    alpha = 0.01
    layout, params, X, Y, sw = _problem(units, head, dtype, n=11)
    _, net = _net(units, "gelu", head, alpha, dropout, seed=1234)
    order = np.random.RandomState(6).permutation(11)
    batch = 4
    slot_1, slot_2 = np.zeros_like(params), np.zeros_like(params)
    opt = SOLVER_OPTS[solver]
    start = params.copy()
    total, step = cpu.train_epoch(TrainState(params, np.empty_like(params), slot_1, slot_2),
                                      kernels_features(X), Y, sw, order, batch, net, opt)

    p_ref = [a.copy() for a in layout.coefs(start) + layout.intercepts(start)]
    n_layers = len(p_ref) // 2
    s1 = [np.zeros_like(a) for a in p_ref]
    s2 = [np.zeros_like(a) for a in p_ref]
    ref_total = 0.0
    for k, first in enumerate(range(0, 11, batch)):
        rows = order[first:first + batch]
        masks = _dropout_masks(units, len(rows), dropout, 1234, first) if dropout else None
        loss, cg, ig = reference.loss_and_gradients(p_ref[:n_layers], p_ref[n_layers:], X[rows],
                                                    Y[rows], "gelu", head[0], head[1], alpha,
                                                    sw[rows], masks)
        ref_total += loss * len(rows)
        lr = opt[1]
        if solver == "sgd":
            reference.sgd_step(p_ref, s1, cg + ig, lr, 0.9, True)
        elif solver == "adagrad":
            reference.adagrad_step(p_ref, s1, cg + ig, lr, 1e-8)
        elif solver == "rmsprop":
            reference.rmsprop_step(p_ref, s1, cg + ig, lr, 0.9, 1e-8)
        else:
            reference.adam_step(p_ref, s1, s2, cg + ig, k + 1, lr, 0.9, 0.999, 1e-8, opt[8],
                                [True] * n_layers + [False] * n_layers)
    assert_allclose(total, ref_total, **TOL[dtype])
    assert step == (3 if solver.startswith("adam") else 0)
    for got, want in zip(layout.coefs(params) + layout.intercepts(params), p_ref):
        assert_allclose(got, want, **TOL[dtype])


def test_train_epoch_skips_batches_with_zero_total_weight():
    units = (3, 2)
    layout, params, X, Y, sw = _problem(units, SQUARED_HEAD, np.float64, n=6)
    sw[:3] = 0.0
    _, net = _net(units, "relu", SQUARED_HEAD)
    before = params.copy()
    opt = OptimizerStep(SGD, 0.1, 0.0, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    velocity = np.zeros_like(params)
    total, _ = cpu.train_epoch(TrainState(params, np.empty_like(params), velocity, velocity),
                                   kernels_features(X), Y, sw, np.arange(3), 3, net, opt)
    assert total == 0.0
    assert_allclose(params, before)
    assert np.isfinite(params).all()


@numba.njit
def _fp_control_now():
    return fp_control(0)


@pytest.mark.skipif(not X86, reason="flush-to-zero is a bit of x86's SSE control register")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_training_reads_denormals_as_zero_and_restores_the_fp_environment(dtype):
    """float32 epochs run with flush-to-zero and denormals-are-zero (denormal arithmetic is tens
    of times slower on x86); float64 keeps IEEE arithmetic; the caller's setting comes back."""
    units = (3, 2)
    layout, params, X, Y, sw = _problem(units, SQUARED_HEAD, dtype, n=6)
    _, net = _net(units, "relu", SQUARED_HEAD)
    denormal = np.finfo(dtype).tiny / 4
    params[0] = denormal
    before_params = params.copy()
    opt = OptimizerStep(SGD, 0.0, 0.0, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0)  # p + 0: no change
    velocity = np.zeros_like(params)
    before = _fp_control_now()
    cpu.train_epoch(TrainState(params, np.empty_like(params), velocity, velocity),
                    kernels_features(X), Y, sw, np.arange(6), 3, net, opt)
    after = _fp_control_now()
    flags = 0x3F  # sticky exception flags, set by arithmetic anywhere
    assert after & ~flags == before & ~flags
    assert after & FLUSH_DENORMALS == 0
    assert params[0] == (0 if dtype == np.float32 else denormal)
    assert_allclose(params[1:], before_params[1:], rtol=0, atol=0)
