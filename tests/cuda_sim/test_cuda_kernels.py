"""Layer 1 on the CUDA backend: every kernel of fastmlp/cuda/kernels.py against fastmlp.reference
or the CPU kernel of the same name, on tiny shapes (the simulator runs one Python thread per CUDA
thread). Runs under the simulator or on a real GPU; skipped with the reason elsewhere."""

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from numba import cuda
from numpy.testing import assert_allclose, assert_array_equal

from fastmlp.cuda.device import target

if target() is None:
    pytest.skip("CUDA code cannot run in this process: these tests need numba's CUDA simulator "
                "(NUMBA_ENABLE_CUDASIM=1 before numba is imported, as tests/test_cuda.py runs "
                "them) or a usable GPU", allow_module_level=True)

from fastmlp import ops, reference  # noqa: E402
from fastmlp.bundles import OptimizerStep, TrainState  # noqa: E402
from fastmlp.cpu import kernels as cpu  # noqa: E402
from fastmlp.cuda import kernels as K  # noqa: E402
from fastmlp.cuda import to_device, to_host  # noqa: E402
from fastmlp.cuda.launch import blocks, elementwise_grid, product_grid  # noqa: E402
from fastmlp.training import as_features  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # simulated uint64 overflow

# Every registry entry is a case: a new operation is checked on the GPU path at once.
HIDDEN = list(ops.HIDDEN_ACTIVATIONS)
CODE = {name: entry.code for name, entry in ops.ACTIVATION.items()}
TOL = {np.float64: dict(rtol=1e-12, atol=1e-14), np.float32: dict(rtol=2e-5, atol=2e-6)}


@numba.njit
def _call(kernel, *args):
    """Call a CPU kernel compiled without a Python wrapper (fastmlp.config.njit) from a test."""
    return kernel(*args)


def _rng(seed=0):
    return np.random.RandomState(seed)


def _stats(loss_sum=0.0, weight_sum=0.0, total=0.0, steps=0.0):
    stats = np.zeros(K.N_STATS)
    stats[[K.LOSS_SUM, K.WEIGHT_SUM, K.EPOCH_TOTAL, K.STEPS]] = loss_sum, weight_sum, total, steps
    return to_device(stats)


# ------------------------------------------------------------------------------ gathering

def _csr_with_duplicates(rng, n, f):
    """CSR input with an empty row (4) and a duplicated (row, column) entry, which must add up."""
    rows = np.sort(np.r_[rng.randint(0, n, 20), 2, 2])
    rows[rows == 4] = 3
    cols = rng.randint(0, f, rows.size)
    cols[rows == 2] = 1  # several entries for (2, 1)
    indptr = np.searchsorted(rows, np.arange(n + 1))
    return sp.csr_matrix((rng.normal(size=rows.size), cols, indptr), shape=(n, f))


@pytest.mark.parametrize("sparse", [False, True])
def test_gather_rows_and_stage_batch_match_the_cpu(sparse):
    rng = _rng()
    n, f, k = 7, 5, 3
    X = _csr_with_duplicates(rng, n, f) if sparse else rng.normal(size=(n, f))
    features = as_features(X)
    Y, sw = rng.normal(size=(n, k)), rng.uniform(size=n)
    order = np.array([6, 4, 2, 2, 0, 5])
    expected = np.empty((4, f))
    _call(cpu.gather_rows, expected, features, order[1:5])
    on_device = tuple(to_device(a) for a in features)

    Xb = to_device(np.full((4, f), np.nan))
    K.gather_rows_from[4, K.ROW_THREADS](Xb, *on_device, to_device(order), 1)
    assert_array_equal(to_host(Xb), expected)

    Yb, swb = to_device(np.empty((4, k))), to_device(np.empty(4))
    Xb = to_device(np.full((4, f), np.nan))
    K.stage_batch_from[4, K.ROW_THREADS](Xb, Yb, swb, *on_device, to_device(Y), to_device(sw),
                                    to_device(order), 1)
    assert_array_equal(to_host(Xb), expected)
    assert_array_equal(to_host(Yb), Y[order[1:5]])
    assert_array_equal(to_host(swb), sw[order[1:5]])

    # An empty index array means consecutive rows from `start` (L-BFGS chunks).
    K.gather_rows_from[4, K.ROW_THREADS](Xb, *on_device, to_device(np.empty(0, np.int64)), 3)
    _call(cpu.gather_rows, expected, features, np.arange(3, 7))
    assert_array_equal(to_host(Xb), expected)


# ------------------------------------------------------------------------------ activations

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ops.ACTIVATION))
def test_bias_activate_and_softmax_rows_match_the_reference(name, dtype):
    rng = _rng(1)
    Z = rng.normal(scale=3, size=(7, 6)).astype(dtype)  # more elements than one block holds
    Z[0, 0] = 0.0
    b = rng.normal(size=6).astype(dtype)
    Zd, pre = to_device(Z), to_device(np.zeros_like(Z))
    K.bias_activate[elementwise_grid(K, *Z.shape)](Zd, pre, to_device(b), CODE[name])
    if name == "softmax":
        K.softmax_rows[blocks(7, K.BLOCK), K.BLOCK](Zd)
    assert_allclose(to_host(Zd), reference.activate(name, Z + b), **TOL[dtype])
    assert_allclose(to_host(pre), Z + b if name in ("gelu", "silu") else 0)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", HIDDEN)
def test_activation_backward_matches_the_cpu(name, masked):
    rng = _rng(2)
    Z = rng.normal(scale=2, size=(6, 7))  # more elements than one block holds
    Z[0, 0] = 0.0
    A = reference.activate(name, Z)
    M = rng.choice([0.0, 2.0], size=Z.shape)
    dZ = rng.normal(size=Z.shape)
    expected = dZ * M if masked else dZ.copy()
    _call(cpu.activation_backward, expected, A, Z, CODE[name])
    dZd = to_device(dZ)
    K.activation_backward_masked[elementwise_grid(K, *Z.shape)](dZd, to_device(A), to_device(Z),
                                                          to_device(M), CODE[name], masked)
    assert_allclose(to_host(dZd), expected, **TOL[np.float64])


def test_dropout_forward_draws_the_cpu_masks_bit_for_bit():
    A = _rng(3).normal(size=(9, 7))  # more elements than one block holds
    D, M = np.empty_like(A), np.empty_like(A)
    _call(cpu.dropout_forward, D, M, A, 0.4, 12345, 70, 9)
    Dd, Md = to_device(np.empty_like(A)), to_device(np.empty_like(A))
    K.dropout_forward[elementwise_grid(K, *A.shape)](Dd, Md, to_device(A), 0.4, 12345, 70, 9)
    assert_array_equal(to_host(Md), M)
    assert_array_equal(to_host(Dd), D)
    assert 0 < (M == 0).sum() < M.size  # the draw did drop some units, not all


# ------------------------------------------------------------------------------ products

def test_fused_products_straddle_the_tiles():
    """Shapes with partial 16 x 16 tiles on every edge of every operand, for the two products
    the per-activation tests below make on single tiles: A @ W (+ b) and dZ @ W.T. (A.T @ dZ:
    see the dense_backward test.) float32 goes through the same code."""
    rng = _rng(4)
    B, I, O = 18, 17, 3
    A, W, dZ, b = (rng.normal(size=s) for s in ((B, I), (I, O), (B, O), (O,)))
    Z, pre = to_device(np.full((B, O), np.nan)), to_device(np.zeros((B, O)))
    K.dense_forward_activate[product_grid(K, B, O)](Z, pre, to_device(A), to_device(W),
                                                     to_device(b), CODE["identity"])
    assert_allclose(to_host(Z), A @ W + b, **TOL[np.float64])
    dA = to_device(np.full((B, I), np.nan))
    K.backward_input[product_grid(K, B, I)](dA, to_device(dZ), to_device(W), to_device(A),
                                             to_device(A), to_device(A), CODE["identity"], False)
    assert_allclose(to_host(dA), dZ @ W.T, **TOL[np.float64])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ops.ACTIVATION))
def test_dense_forward_fuses_product_bias_and_activation(name, dtype):
    rng = _rng(5)
    A, W, b = (rng.normal(size=s).astype(dtype) for s in ((5, 3), (3, 4), (4,)))
    Z, pre = to_device(np.full((5, 4), np.nan, dtype)), to_device(np.zeros((5, 4), dtype))
    K.dense_forward_activate[product_grid(K, 5, 4)](Z, pre, to_device(A), to_device(W),
                                                     to_device(b), CODE[name])
    z = A @ W + b
    # softmax rows are finished later (output_delta_and_loss or softmax_rows): z comes out.
    expected = z if name == "softmax" else reference.activate(name, z)
    assert_allclose(to_host(Z), expected, **TOL[dtype])
    assert_allclose(to_host(pre), z if name in ("gelu", "silu") else 0, **TOL[dtype])


def test_dense_backward_and_column_sums_give_weight_and_bias_gradients():
    rng = _rng(6)
    B, I, O = 18, 17, 5  # I + 1 = 18 rows of [A, 1].T: the bias row starts a second tile
    A, dZ = rng.normal(size=(B, I)), rng.normal(size=(B, O))
    dW, db = to_device(np.full((I, O), np.nan)), to_device(np.full(O, np.nan))
    K.dense_backward[product_grid(K, I + 1, O)](dW, db, to_device(dZ), to_device(A))
    expected_dW, expected_db = np.empty((I, O)), np.empty(O)
    _call(cpu.dense_backward, expected_dW, expected_db, dZ, A)
    assert_allclose(to_host(dW), expected_dW, **TOL[np.float64])
    assert_allclose(to_host(db), expected_db, **TOL[np.float64])
    db = to_device(np.full(O, np.nan))
    K.column_sums[1, K.BLOCK](db, to_device(dZ))
    assert_allclose(to_host(db), expected_db, **TOL[np.float64])


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", HIDDEN)
def test_backward_input_fuses_product_mask_and_derivative(name, masked):
    rng = _rng(7)
    B, I, O = 4, 3, 5
    dZ, W, Z = rng.normal(size=(B, O)), rng.normal(size=(I, O)), rng.normal(size=(B, I))
    A = reference.activate(name, Z)
    M = rng.choice([0.0, 2.0], size=(B, I))
    expected = dZ @ W.T * (M if masked else 1)
    _call(cpu.activation_backward, expected, A, Z, CODE[name])
    dA = to_device(np.full((B, I), np.nan))
    K.backward_input[product_grid(K, B, I)](dA, to_device(dZ), to_device(W), to_device(A),
                                             to_device(Z), to_device(M), CODE[name], masked)
    assert_allclose(to_host(dA), expected, **TOL[np.float64])


# ------------------------------------------------------------------------------ loss

HEADS = {loss.name: (loss.output, loss.code) for loss in ops.LOSSES}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("head", list(HEADS))
def test_output_delta_and_loss_matches_the_cpu(head, dtype):
    activation, loss = HEADS[head]
    rng = _rng(8)
    n, k = 37, 3  # more rows than the block has threads, in the simulator
    Z = rng.normal(scale=2, size=(n, k))
    if head == "log_loss":
        Y = np.eye(k)[rng.randint(0, k, n)]
        Z[0] = [-800, 0, 800]  # p = 0 and 1 exactly: clipped inside the log
        Y[0] = [1, 0, 0]
    elif head == "binary_log_loss":
        Y = rng.randint(0, 2, (n, k)).astype(float)
        Z[0] = [-800, 800, 0]
        Y[0] = [1, 0, 1]
    elif head == "poisson":
        Y = rng.poisson(1.0, (n, k)).astype(float)
        Y[0] = 0  # y = 0: the y log(y / p) term is 0
    else:
        Y = rng.normal(size=(n, k))
    Z, Y = Z.astype(dtype), Y.astype(dtype)
    sw = rng.uniform(0.5, 2, n).astype(dtype)
    P = reference.activate(activation, Z).astype(dtype)
    dZ = np.empty_like(P)
    expected = cpu.output_delta_and_loss(dZ, P.copy(), Y, sw, loss)

    softmax = activation == "softmax"
    Pd, dZd, stats = to_device(Z if softmax else P), to_device(np.empty_like(P)), _stats(0.5, 1)
    K.output_delta_and_loss_sums[1, K.BLOCK](dZd, stats, Pd, to_device(Y), to_device(sw), loss,
                                        softmax, float(np.finfo(dtype).eps))
    loss_sum, weight_sum = to_host(stats)[[K.LOSS_SUM, K.WEIGHT_SUM]]
    tol = dict(rtol=1e-12) if dtype == np.float64 else dict(rtol=1e-5)
    assert np.isfinite(expected)
    assert_allclose(loss_sum - 0.5, expected, **tol)  # added to what stats held
    assert_allclose(weight_sum - 1, sw.astype(float).sum(), **tol)
    assert_allclose(to_host(Pd), P, **TOL[dtype])  # the softmax was finished in place
    assert_allclose(to_host(dZd), dZ, **TOL[dtype])


# ------------------------------------------------------------------------------ updates

# The update case: an 8 x FAN_OUT weight matrix and 7 biases, sized from the threads per block
# the kernels are launched with (K.BLOCK: 32 on the simulator, 256 on a GPU) so that the
# parameters always span more than one block, and one block has to close the batch for all.
FAN_OUT = K.BLOCK // 8 + 1
N_WEIGHTS = 8 * FAN_OUT
N_PARAMS = N_WEIGHTS + 7


def _update_case(dtype, seed=9):
    rng = _rng(seed)
    params = rng.normal(size=N_PARAMS).astype(dtype)
    raw = rng.normal(size=N_PARAMS).astype(dtype)  # sum_i sw_i dloss_i / dparams
    slots = [rng.uniform(0, 1, N_PARAMS).astype(dtype) for _ in range(2)]
    return params, raw, slots


# The OptimizerStep of each case (fields: kind, learning_rate, momentum, nesterov, beta_1, beta_2,
# epsilon, rho, weight_decay, step).
_CODE = {name: entry.code for name, entry in ops.OPTIMIZER.items()}
OPT = {"sgd": OptimizerStep(_CODE["sgd"], 0.1, 0.9, True, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
       "sgd_plain": OptimizerStep(_CODE["sgd"], 0.1, 0.9, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0),
       "adam": OptimizerStep(_CODE["adam"], 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.0, 0),
       "adamw": OptimizerStep(_CODE["adamw"], 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0, 0.1, 0),
       "adagrad": OptimizerStep(_CODE["adagrad"], 0.05, 0.0, False, 0.0, 0.0, 1e-8, 0.0, 0.0, 0),
       "rmsprop": OptimizerStep(_CODE["rmsprop"], 0.01, 0.0, False, 0.0, 0.0, 1e-8, 0.9, 0.0, 0)}


def _second_slot(kind, slots):
    """Adam's own second slot; the others get their one slot twice (as TrainState has it)."""
    return slots[1] if kind in ("adam", "adamw") else slots[0]


def _cpu_update(kind, params, raw, slots, alpha, weight_sum, step):
    """What the CPU train_epoch does with one batch gradient: ||W||^2, then its update (which
    finishes the gradient) as update number step + 1."""
    layers = np.array([[8, FAN_OUT, 0, N_WEIGHTS], [0, 7, 0, N_WEIGHTS]])
    squares = _call(cpu.weight_squares, params, layers)
    opt = OPT[kind]
    _call(cpu.update, TrainState(params, raw, slots[0], _second_slot(kind, slots)), N_WEIGHTS,
          alpha, weight_sum, opt, step + 1)
    return squares


def _gpu_update(kind, params, raw, slots, squares, stats, done, alpha, step, rows=4):
    opt = OPT[kind]
    dt = params.dtype.type
    scalars = K.StepScalars(dt(opt.learning_rate), dt(opt.momentum), opt.nesterov,
                            dt(opt.beta_1), dt(opt.beta_2), dt(opt.epsilon), dt(opt.rho), dt(0),
                            dt(1))
    # stats[STEPS] = 3 updates made: the fourth entry is this one's step size.
    sizes = to_device(np.array([99.0] * 3 + [ops.adam_step_size(
        opt.learning_rate, opt.beta_1, opt.beta_2, step + 1)]))
    keep = dt(1 - opt.learning_rate * opt.weight_decay)
    K.update_batch[squares.shape[0], K.BLOCK](
        params, slots[0], _second_slot(kind, slots), squares, raw, stats, done, N_WEIGHTS,
        dt(alpha), scalars, sizes, keep, opt.kind, float(alpha), rows)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["sgd", "sgd_plain", "adam", "adamw", "adagrad", "rmsprop"])
def test_update_batch_matches_the_cpu_update(kind, dtype):
    """One launch finishes the gradient, updates, and (in its last block) closes the batch."""
    params, raw, slots = _update_case(dtype)
    alpha, weight_sum, step = 0.3, 2.5, 3
    host = [params.copy(), raw.copy(), [s.copy() for s in slots]]
    expected_squares = _cpu_update(kind, *host, alpha, weight_sum, step)

    device = [to_device(params), to_device(raw), [to_device(s) for s in slots]]
    squares = to_device(np.full(blocks(N_PARAMS, K.BLOCK), np.nan))
    stats = _stats(loss_sum=1.25, weight_sum=weight_sum, total=10.0, steps=3)  # 4th update
    done = to_device(np.zeros(1, np.int32))
    assert squares.shape[0] > 1  # several blocks: one of them closes the batch
    _gpu_update(kind, *device, squares, stats, done, alpha, step, rows=4)
    tol = TOL[dtype]
    assert_allclose(to_host(device[0]), host[0], **tol)
    assert_array_equal(to_host(device[1]), host[1])  # the raw gradient, read only
    for on_device, on_host in zip(device[2], host[2]):
        assert_allclose(to_host(on_device), on_host, **tol)
    assert_allclose(to_host(squares).sum(), expected_squares, rtol=tol["rtol"])

    result = to_host(stats)
    expected_total = 10.0 + (1.25 / weight_sum + 0.5 * alpha * expected_squares / weight_sum) * 4
    assert_allclose(result[K.EPOCH_TOTAL], expected_total, rtol=tol["rtol"])
    assert result[K.STEPS] == 4
    assert result[K.LOSS_SUM] == 0 and result[K.WEIGHT_SUM] == 0  # ready for the next batch
    assert to_host(done)[0] == 0  # re-armed for the next batch


def test_a_batch_whose_weights_sum_to_zero_is_skipped():
    params, raw, slots = _update_case(np.float64)
    device = [to_device(params), to_device(raw), [to_device(s) for s in slots]]
    squares = to_device(np.zeros(blocks(N_PARAMS, K.BLOCK)))
    stats = _stats(loss_sum=0.0, weight_sum=0.0, total=7.0, steps=2)
    done = to_device(np.zeros(1, np.int32))
    _gpu_update("adam", *device, squares, stats, done, 0.3, 2)
    assert_array_equal(to_host(device[0]), params)
    assert_array_equal(to_host(device[2][0]), slots[0])
    assert_array_equal(to_host(stats)[[K.EPOCH_TOTAL, K.STEPS]], [7.0, 2.0])
    assert to_host(done)[0] == 0


def test_finish_gradient_and_add_into_as_lbfgs_uses_them():
    params, raw, _ = _update_case(np.float64)
    chunk = _rng(10).normal(size=N_PARAMS)
    total = to_device(np.full(N_PARAMS, np.nan))
    K.add_into[blocks(N_PARAMS, K.BLOCK), K.BLOCK](total, to_device(raw), True)
    K.add_into[blocks(N_PARAMS, K.BLOCK), K.BLOCK](total, to_device(chunk), False)
    expected = raw + chunk
    assert_array_equal(to_host(total), expected)

    squares = to_device(np.zeros(blocks(N_PARAMS, K.BLOCK)))
    K.finish_gradient_squares[blocks(N_PARAMS, K.BLOCK), K.BLOCK](total, squares, to_device(params),
                                                           _stats(weight_sum=2.5), 0.3,
                                                           N_WEIGHTS)
    expected = np.array([ops.finished_gradient(expected[k], params[k], k, N_WEIGHTS, 0.3,
                               2.5) for k in range(N_PARAMS)])
    expected_squares = _call(cpu.weight_squares, params, np.array([[8, FAN_OUT, 0, N_WEIGHTS]]))
    assert_allclose(to_host(total), expected, rtol=1e-14)
    assert_allclose(to_host(squares).sum(), expected_squares, rtol=1e-14)


# ------------------------------------------------------------------------------ strided sums

@cuda.jit
def _strided_sums(out, flat, cases):
    """Row c of out: the 2 x 2 tile_dot of case c (its four sums started at 0.5, 1, 1.5 and 2)
    and flat_sum over its second run (started at 0.5)."""
    c = cuda.threadIdx.x
    if c < cases.shape[0]:
        a, a_gap, a_step, b, b_gap, b_step, n = (cases[c, 0], cases[c, 1], cases[c, 2],
                                                 cases[c, 3], cases[c, 4], cases[c, 5],
                                                 cases[c, 6])
        dt = flat.dtype.type
        sums = K.tile_dot(flat, (dt(0.5), dt(1.0), dt(1.5), dt(2.0)), a, a_gap, a_step, b,
                          b_gap, b_step, n)
        for u in range(4):
            out[c, u] = sums[u]
        out[c, 4] = K.flat_sum(flat, dt(0.5), b, b_step, n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tile_dot_and_flat_sum_are_strided_sums_in_order(dtype):
    flat = _rng(3).normal(size=60).astype(dtype)
    # (a, a_gap, a_step, b, b_gap, b_step, n): two rows times two columns, two columns times
    # one column repeated (gap 0, as at an odd edge), a single term, none at all.
    cases = np.array([[0, 7, 1, 20, 1, 5, 7], [3, 1, 6, 4, 0, 6, 9], [59, 0, 1, 0, 58, 1, 1],
                      [5, 2, 1, 9, 3, 1, 0]])
    out = to_device(np.zeros((len(cases), 5), dtype))
    _strided_sums[1, 8](out, to_device(flat), to_device(cases))
    def run(start, step, n):
        return flat[start:start + n * step:step][:n]

    for (a, a_gap, a_step, b, b_gap, b_step, n), got in zip(cases, to_host(out)):
        for u in range(4):
            x, y = run(a + (u >> 1) * a_gap, a_step, n), run(b + (u & 1) * b_gap, b_step, n)
            expected = dtype(0.5 * (u + 1))
            for p, q in zip(x, y):  # term by term, in order, as the kernel adds
                expected = dtype(expected + p * q)
            assert_allclose(got[u], expected, **TOL[dtype])
        expected_sum = dtype(0.5)
        for q in run(b, b_step, n):
            expected_sum = dtype(expected_sum + q)
        assert_allclose(got[4], expected_sum, **TOL[dtype])
