"""The registry of operations (fastmlp/ops.py) is exhaustive: every activation, loss and optimizer
in it is reached by the CPU dispatch and the CUDA choosers, accepted by the estimators, compiled by
`python -m fastmlp.compile`, exported to ONNX, checked against a hand-written oracle in
reference.py and used as a parameter by the kernel tests. A new entry that one of these places
misses fails here, with a message naming the place."""

import ast
import dataclasses
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from numpy.testing import assert_allclose

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor, compile, ops, reference
from fastmlp.bundles import Network, OptimizerStep, TrainState
from fastmlp.cpu import kernels

TESTS = Path(__file__).resolve().parent
CODES = {"activation": [a.code for a in ops.ACTIVATIONS],
         "loss": [loss.code for loss in ops.LOSSES],
         "optimizer": [o.code for o in ops.OPTIMIZERS]}
UNKNOWN = {kind: max(codes) + 1 for kind, codes in CODES.items()}  # no entry has it
HIDDEN_CODES = [ops.ACTIVATION[name].code for name in ops.HIDDEN_ACTIVATIONS]


# ------------------------------------------------------------------------------------------
# The oracle: reference.py is hand-written, so each entry's NumPy counterpart is named here.
# ------------------------------------------------------------------------------------------

# One optimizer step's hyper-parameters, shared by the CPU and CUDA checks below.
HYPER = dict(learning_rate=0.05, momentum=0.9, nesterov=True, beta_1=0.9, beta_2=0.999,
             epsilon=1e-8, rho=0.9)
WEIGHT_DECAY = 0.1  # for optimizers with decoupled decay; 0 for the others


def _weight_decay(optimizer):
    return WEIGHT_DECAY if optimizer.decoupled_decay else 0.0


def _reference_adam(params, slot_1, slot_2, grads, step, decayed, weight_decay):
    h = HYPER
    reference.adam_step(params, slot_1, slot_2, grads, step, h["learning_rate"], h["beta_1"],
                        h["beta_2"], h["epsilon"], weight_decay, decayed)


# name -> step(params, slot_1, slot_2, grads, step, decayed): in place on lists of arrays.
REFERENCE_STEPS = {
    "sgd": lambda p, s1, s2, g, step, decayed: reference.sgd_step(
        p, s1, g, HYPER["learning_rate"], HYPER["momentum"], HYPER["nesterov"]),
    "adam": lambda p, s1, s2, g, step, decayed: _reference_adam(p, s1, s2, g, step, decayed,
                                                                0.0),
    "adamw": lambda p, s1, s2, g, step, decayed: _reference_adam(p, s1, s2, g, step, decayed,
                                                                 WEIGHT_DECAY),
    "adagrad": lambda p, s1, s2, g, step, decayed: reference.adagrad_step(
        p, s1, g, HYPER["learning_rate"], HYPER["epsilon"]),
    "rmsprop": lambda p, s1, s2, g, step, decayed: reference.rmsprop_step(
        p, s1, g, HYPER["learning_rate"], HYPER["rho"], HYPER["epsilon"]),
}


def _reference_step(name):
    if name not in REFERENCE_STEPS:
        pytest.fail(f"optimizer {name!r} of fastmlp/ops.py has no oracle: write its step in "
                    "fastmlp/reference.py and name it in REFERENCE_STEPS in tests/test_registry.py")
    return REFERENCE_STEPS[name]


def _no_oracle(what, name, exc):
    pytest.fail(f"{what} {name!r} of fastmlp/ops.py has no oracle in fastmlp/reference.py "
                f"({type(exc).__name__}: {exc}): add it there, by hand")


@pytest.mark.parametrize("name", list(ops.ACTIVATION))
def test_reference_has_every_activation(name):
    z = np.linspace(-3, 3, 12).reshape(3, 4)
    try:
        a = reference.activate(name, z)
    except ValueError as exc:
        _no_oracle("activation", name, exc)
    assert a.shape == z.shape and np.isfinite(a).all()
    if ops.ACTIVATION[name].hidden:
        try:
            d = reference.activation_derivative(name, a, z)
        except ValueError as exc:
            _no_oracle("hidden activation's derivative", name, exc)
        assert d.shape == z.shape and np.isfinite(d).all()


@pytest.mark.parametrize("name", list(ops.LOSS))
def test_reference_has_every_loss(name):
    Y = np.array([[1.0, 0.0], [0.0, 1.0]])
    P = np.array([[0.7, 0.3], [0.4, 0.6]])
    try:
        value = reference.loss(name, Y, P)
    except ValueError as exc:
        _no_oracle("loss", name, exc)
    assert np.isfinite(value) and value > 0


def test_every_optimizer_has_a_reference_step_and_the_map_names_no_other():
    for name in ops.OPTIMIZER:
        _reference_step(name)
    assert set(REFERENCE_STEPS) == set(ops.OPTIMIZER), "REFERENCE_STEPS names a removed optimizer"


def test_reference_stays_independent_of_the_registry():
    """reference.py is the oracle: it must not take its maths from fastmlp/ops.py (or any other
    fastmlp module), or a wrong formula there would be checked against itself."""
    tree = ast.parse(Path(reference.__file__).read_text())
    imported = [node.module or "." for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names]
    assert not [m for m in imported if m.startswith((".", "fastmlp"))], imported


# ------------------------------------------------------------------------------------------
# The CPU dispatch (fastmlp/cpu/kernels.py)
# ------------------------------------------------------------------------------------------

def _loops_of(dispatcher):
    """{code: loop} of a dispatcher made by kernels.dispatch, after checking that its generated
    chain of comparisons tests exactly those codes."""
    namespace = dispatcher.py_func.__globals__
    loops = {int(key[len("loop_"):]): value for key, value in namespace.items()
             if key.startswith("loop_")}
    compared = {c for c in dispatcher.py_func.__code__.co_consts if type(c) is int}
    assert compared == set(loops), (dispatcher.py_func.__name__, compared, sorted(loops))
    return loops


def _made_from(loop):
    """The closure variables of a loop made by one of kernels' loop factories, scalar functions
    as the registry holds them (the loops compile them through kernels.scalar)."""
    function = getattr(loop, "py_func", loop)
    return {name: getattr(value, "py_func", value)
            for name, value in inspect.getclosurevars(function).nonlocals.items()}


def test_cpu_activate_has_each_activations_own_loop():
    loops = _loops_of(kernels.activate)
    assert sorted(loops) == sorted(CODES["activation"])
    for activation in ops.ACTIVATIONS:
        loop = loops[activation.code]
        if activation.row_wise:
            assert loop is kernels.softmax_rows, activation.name
        elif activation.value_float32 is not None:  # float32's own form, else the loop of f
            made = _made_from(loop)
            assert made["f32"] is activation.value_float32, activation.name
            assert _made_from(made["activate_elements"])["f"] is activation.value
        else:
            assert _made_from(loop)["f"] is activation.value, activation.name


def test_cpu_derivative_loop_has_a_loop_for_exactly_the_hidden_activations():
    loops = _loops_of(kernels.derivative_loop)
    assert sorted(loops) == sorted(HIDDEN_CODES)
    for name in ops.HIDDEN_ACTIVATIONS:
        activation = ops.ACTIVATION[name]
        made = _made_from(loops[activation.code])
        assert made["backward"] is activation.backward, name
        assert made["from_z"] == activation.needs_pre_activation, name
    # and the forward pass keeps z exactly for the activations whose derivative reads it
    assert [bool(kernels.NEEDS_PRE_ACTIVATION[a.code]) for a in ops.ACTIVATIONS] == [
        a.needs_pre_activation for a in ops.ACTIVATIONS]


def test_cpu_loss_loop_has_each_losss_own_loop():
    loops = _loops_of(kernels.loss_loop)
    assert sorted(loops) == sorted(CODES["loss"])
    for loss in ops.LOSSES:
        made = _made_from(loops[loss.code])
        assert made["term"] is loss.term and made["mean"] == loss.mean_over_outputs, loss.name


def test_cpu_update_loop_has_a_loop_for_every_optimizer_running_its_step():
    loops = _loops_of(kernels.update_loop)
    assert sorted(loops) == sorted(CODES["optimizer"])
    for optimizer in ops.OPTIMIZERS:
        assert _made_from(loops[optimizer.code])["step"] is optimizer.step, optimizer.name


@numba.njit
def _activate(code, Z):
    kernels.activate(code, Z)


@numba.njit
def _times_derivative(code, dZ, A, Z):
    kernels.derivative_loop(code, dZ, A, Z)


@numba.njit
def _loss_loop(code, dZ, P, Y, sw):
    return kernels.loss_loop(code, dZ, P, Y, sw, 1e-16)


@numba.njit
def _update(state, n_weights, alpha, weight_sum, opt, step):
    kernels.update(state, n_weights, alpha, weight_sum, opt, step)


def _unknown_code_calls():
    Z = np.ones((2, 3))
    sw = np.ones(2)
    p = np.ones(4)
    opt = OptimizerStep(UNKNOWN["optimizer"], 0.1, 0.0, False, 0.9, 0.999, 1e-8, 0.9, 0.0, 0)
    return {
        "activate": lambda: _activate(UNKNOWN["activation"], Z.copy()),
        "derivative_loop (an output-only activation)": lambda: _times_derivative(
            ops.ACTIVATION["softmax"].code, Z.copy(), Z, Z),
        "derivative_loop": lambda: _times_derivative(UNKNOWN["activation"], Z.copy(), Z, Z),
        "loss_loop": lambda: _loss_loop(UNKNOWN["loss"], Z.copy(), Z, Z, sw),
        "update_loop": lambda: _update(TrainState(p, p.copy(), p.copy(), p.copy()), 1, 0.0, 1.0,
                                       opt, 1),
    }


@pytest.mark.parametrize("call", list(_unknown_code_calls()))
def test_cpu_dispatch_refuses_a_code_with_no_loop(call):
    """No operation stands in for another: a code with no loop raises in compiled code."""
    with pytest.raises(ValueError, match="no kernel for this operation code"):
        _unknown_code_calls()[call]()


def _optimizer_case(seed=3, n=12, n_weights=7):
    rng = np.random.RandomState(seed)
    params, raw = rng.normal(size=n), rng.normal(size=n)
    slots = [rng.uniform(0.1, 1, n) for _ in range(2)]
    return params, raw, slots, n_weights


def _split(a, n_weights):
    return [a[:n_weights].copy(), a[n_weights:].copy()]


@pytest.mark.parametrize("name", list(ops.OPTIMIZER))
def test_every_optimizer_through_the_cpu_update_matches_its_reference_step(name):
    """Driven by the registry (tests/test_kernels.py names today's optimizers one by one): two
    fused CPU updates, with the L2 term and a weight sum to finish the gradient, equal the
    reference step of the same name, weights (decayed by AdamW) and biases alike."""
    step_reference = _reference_step(name)
    optimizer = ops.OPTIMIZER[name]
    params, raw, slots, n_weights = _optimizer_case()
    alpha, weight_sum = 0.3, 2.0
    two = optimizer.slots == 2
    slot_1 = slots[0].copy()
    # One-slot optimizers get the same array twice, as fits give it (bundles.TrainState).
    state = TrainState(params.copy(), raw.copy(), slot_1, slots[1].copy() if two else slot_1)
    opt = OptimizerStep(optimizer.code, HYPER["learning_rate"], HYPER["momentum"],
                        HYPER["nesterov"], HYPER["beta_1"], HYPER["beta_2"], HYPER["epsilon"],
                        HYPER["rho"], _weight_decay(optimizer), 0)
    P, S1, S2 = (_split(a, n_weights) for a in (params, slots[0], slots[1]))
    for step in (1, 2):
        weights = np.concatenate([P[0], np.zeros_like(P[1])])
        finished = (raw + alpha * weights) / weight_sum  # ops.finished_gradient, by hand
        step_reference(P, S1, S2, _split(finished, n_weights), step, [True, False])
        _update(state, n_weights, alpha, weight_sum, opt, step)
    assert_allclose(state.params, np.concatenate(P), rtol=1e-12, atol=1e-14)
    assert_allclose(state.slot_1, np.concatenate(S1), rtol=1e-12, atol=1e-14)
    if two:
        assert_allclose(state.slot_2, np.concatenate(S2), rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------------------
# The CUDA choosers (fastmlp/cuda/kernels.py), under numba's simulator in a child process
# ------------------------------------------------------------------------------------------

_CUDA_CHILD = r"""
import json, sys
import numpy as np
from numba import cuda
from fastmlp import ops
from fastmlp.cuda import kernels as K

case = json.loads(sys.argv[1])
z = np.array(case["z"])
A = np.array(case["A"])
g = np.array(case["g"])
act_codes = np.array(case["activation_codes"], dtype=np.int64)
loss_codes = np.array(case["loss_codes"], dtype=np.int64)
out = {}


@cuda.jit
def activations(value, derivative, flags, z, A, g, codes):
    for i in range(codes.shape[0]):
        for j in range(z.shape[0]):
            value[i, j] = K.activation_value(z[j], codes[i])
            derivative[i, j] = K.times_derivative(g[j], A[i, j], z[j], codes[i])
        flags[i, 0] = K.keeps_pre_activation(codes[i])
        flags[i, 1] = K.is_softmax(codes[i])


value, derivative = np.empty((len(act_codes), len(z))), np.empty((len(act_codes), len(z)))
flags = np.zeros((len(act_codes), 2), np.int64)
activations[1, 1](value, derivative, flags, z, A, g, act_codes)
out.update(value=value.tolist(), derivative=derivative.tolist(), act_flags=flags.tolist())


@cuda.jit
def losses(term, flags, p, y, codes, eps):
    for i in range(codes.shape[0]):
        for j in range(p.shape[0]):
            term[i, j] = K.loss_term(p[j], y[j], eps, codes[i])
        flags[i] = K.averages_outputs(codes[i])


p, y = np.array(case["p"]), np.array(case["y"])
term, loss_flags = np.empty((len(loss_codes), len(p))), np.zeros(len(loss_codes), np.int64)
losses[1, 1](term, loss_flags, p, y, loss_codes, float(np.finfo(np.float64).eps))
out.update(term=term.tolist(), loss_flags=loss_flags.tolist())


@cuda.jit
def steps(p, s1, s2, g, h, code):
    for k in range(p.shape[0]):
        p[k], s1[k], s2[k] = K.optimizer_step(p[k], g[k], s1[k], s2[k], h, code)


out["steps"] = {}
for code, fields in case["steps"]:
    arrays = [np.array(case[key]) for key in ("params", "slot_1", "slot_2", "g_step")]
    steps[1, 1](*arrays, K.StepScalars(*fields), code)
    out["steps"][str(code)] = [a.tolist() for a in arrays[:3]]

# The CUDA kernel tests' parameters, which can only be imported where CUDA code runs.
sys.path.insert(0, case["cuda_tests"])
import test_cuda_kernels as t


def parameters(test, argname):
    return [list(m.args[1]) for m in test.pytestmark
            if m.name == "parametrize" and m.args[0] == argname][0]


out["tests"] = dict(
    HIDDEN=list(t.HIDDEN), HEADS=sorted(t.HEADS),
    OPT_CODES=sorted({o.kind for o in t.OPT.values()}),
    activate=parameters(t.test_bias_activate_and_softmax_rows_match_the_reference, "name"),
    backward=parameters(t.test_activation_backward_matches_the_cpu, "name"),
    backward_input=parameters(t.test_backward_input_fuses_product_mask_and_derivative, "name"),
    heads=parameters(t.test_output_delta_and_loss_matches_the_cpu, "head"),
    update_codes=sorted({t.OPT[k].kind
                         for k in parameters(t.test_update_batch_matches_the_cpu_update, "kind")}))
print("RESULT", json.dumps(out))
"""

_Z = [-2.5, -0.7, 0.0, 0.3, 1.9]
_G = [0.5, -1.5, 2.0, 1.0, -0.25]
_P = [0.2, 0.9, 0.5, 1.7]  # predictions (probabilities in (0, 1) except the Poisson-only 1.7)
_Y = [1.0, 0.0, 1.0, 2.0]
_ACTIVATION_CODES = CODES["activation"] + [UNKNOWN["activation"], -1]
_LOSS_CODES = CODES["loss"] + [UNKNOWN["loss"], -1]
_OPTIMIZER_CODES = CODES["optimizer"] + [UNKNOWN["optimizer"]]


def _activation_output(code):
    """What the CUDA chooser's f(z) should give: the reference, but softmax's element-wise part is
    the identity (the kernels finish it row-wise)."""
    activation = ops.by_code(ops.ACTIVATIONS, code)
    name = "identity" if activation.row_wise else activation.name
    return reference.activate(name, np.array(_Z))


def _step_scalars(optimizer, step=1):
    """ops.StepScalars of one update of this optimizer, for weights, as kernels.update makes it."""
    h = HYPER
    return [h["learning_rate"], h["momentum"], h["nesterov"], h["beta_1"], h["beta_2"],
            h["epsilon"], h["rho"],
            ops.adam_step_size(h["learning_rate"], h["beta_1"], h["beta_2"], step),
            ops.weight_keep(h["learning_rate"], _weight_decay(optimizer))]


@pytest.fixture(scope="module")
def on_cuda():
    """Every chooser run under the simulator for every code (and unknown ones), in one child."""
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("needs numba-cuda (pip install 'fastmlp[cuda]') for the CUDA simulator")
    params, raw, slots, _ = _optimizer_case(n=5)
    A = [(_activation_output(c).tolist() if c in CODES["activation"] else _Z)
         for c in _ACTIVATION_CODES]
    case = dict(z=_Z, g=_G, A=A, p=_P, y=_Y, activation_codes=_ACTIVATION_CODES,
                loss_codes=_LOSS_CODES, params=params.tolist(), g_step=raw.tolist(),
                slot_1=slots[0].tolist(), slot_2=slots[1].tolist(),
                cuda_tests=str(TESTS / "cuda_sim"),
                steps=[[code, _step_scalars(ops.OPTIMIZERS[0] if code == UNKNOWN["optimizer"]
                                            else ops.by_code(ops.OPTIMIZERS, code))]
                       for code in _OPTIMIZER_CODES])
    package_root = str(Path(fastmlp.__file__).resolve().parent.parent)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                        os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", _CUDA_CHILD, json.dumps(case)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    got = json.loads(result.stdout.split("RESULT ", 1)[1])
    got["case"] = case
    return got


def test_cuda_activation_value_reaches_every_activation(on_cuda):
    for i, code in enumerate(CODES["activation"]):
        assert_allclose(on_cuda["value"][i], _activation_output(code), rtol=1e-12, atol=1e-14,
                        err_msg=ops.by_code(ops.ACTIVATIONS, code).name)


def test_cuda_times_derivative_reaches_every_hidden_activation(on_cuda):
    z, g = np.array(_Z), np.array(_G)
    for i, code in enumerate(CODES["activation"]):
        activation = ops.by_code(ops.ACTIVATIONS, code)
        got = np.array(on_cuda["derivative"][i])
        if activation.hidden:
            a = _activation_output(code)
            want = g * reference.activation_derivative(activation.name, a, z)
            assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=activation.name)
        else:  # an output-only activation has no derivative kernel: NaN, not another's value
            assert np.isnan(got).all(), activation.name


def test_cuda_flags_follow_the_registry(on_cuda):
    for i, code in enumerate(CODES["activation"]):
        activation = ops.by_code(ops.ACTIVATIONS, code)
        assert on_cuda["act_flags"][i] == [activation.needs_pre_activation,
                                           activation.row_wise], activation.name
    assert on_cuda["loss_flags"][:len(ops.LOSSES)] == [loss.mean_over_outputs
                                                       for loss in ops.LOSSES]
    assert on_cuda["act_flags"][len(ops.ACTIVATIONS):] == [[0, 0], [0, 0]]  # unknown codes


def test_cuda_loss_term_reaches_every_loss(on_cuda):
    for i, code in enumerate(CODES["loss"]):
        loss = ops.by_code(ops.LOSSES, code)
        for j, (p, y) in enumerate(zip(_P, _Y)):
            if not loss.regression and p > 1:
                continue  # a probability above 1, with a target that is no class
            want = reference.loss(loss.name, np.array([[y]]), np.array([[p]]))
            got = on_cuda["term"][i][j] * (0.5 if loss.mean_over_outputs else 1)
            assert_allclose(got, want, rtol=1e-12, err_msg=(loss.name, p, y))


@pytest.mark.parametrize("name", list(ops.OPTIMIZER))
def test_cuda_optimizer_step_reaches_every_optimizer(on_cuda, name):
    optimizer = ops.OPTIMIZER[name]
    case = on_cuda["case"]
    P, S1, S2 = ([np.array(case[key])] for key in ("params", "slot_1", "slot_2"))
    _reference_step(name)(P, S1, S2, [np.array(case["g_step"])], 1, [True])
    got = on_cuda["steps"][str(optimizer.code)]
    assert_allclose(got[0], P[0], rtol=1e-12, err_msg=name)
    assert_allclose(got[1], S1[0], rtol=1e-12, err_msg=name)
    assert_allclose(got[2], S2[0] if optimizer.slots == 2 else S1[0], rtol=1e-12, err_msg=name)


def test_cuda_choosers_give_nan_for_an_unknown_code(on_cuda):
    """A code no entry has computes NaN (which the divergence checks report), never another
    operation's value."""
    unknown = slice(len(ops.ACTIVATIONS), None)
    assert np.isnan(on_cuda["value"][unknown]).all()
    assert np.isnan(on_cuda["derivative"][unknown]).all()
    assert np.isnan(on_cuda["term"][len(ops.LOSSES):]).all()
    assert np.isnan(on_cuda["steps"][str(UNKNOWN["optimizer"])][0]).all()


def _network(hidden="relu", output="softmax", loss="log_loss"):
    def code(table, value):
        return table[value].code if isinstance(value, str) else value

    return Network(np.zeros((1, 4), np.int64), code(ops.ACTIVATION, hidden),
                   code(ops.ACTIVATION, output), code(ops.LOSS, loss), 0.0, 0.0, 0)


def _optimizer_step(kind):
    return OptimizerStep(kind, 0.1, 0.0, False, 0.9, 0.999, 1e-8, 0.9, 0.0, 0)


def test_check_codes_accepts_every_registry_combination():
    for hidden in ops.HIDDEN_ACTIVATIONS:
        for output in ops.ACTIVATION:
            for loss in ops.LOSS:
                for optimizer in ops.OPTIMIZERS:
                    ops.check_codes(_network(hidden, output, loss), _optimizer_step(optimizer.code))


@pytest.mark.parametrize("net, opt, message", [
    (_network(hidden=UNKNOWN["activation"]), None, "hidden activation code"),
    (_network(hidden=-1), None, "hidden activation code -1"),
    (_network(output=UNKNOWN["activation"]), None, "output activation code"),
    (_network(loss=UNKNOWN["loss"]), None, "loss code"),
    (_network(), _optimizer_step(UNKNOWN["optimizer"]), "optimizer code"),
] + [(_network(hidden=name), None, "cannot be used in hidden layers")
     for name, a in ops.ACTIVATION.items() if not a.hidden])
def test_check_codes_refuses_unknown_codes_and_output_only_hidden_activations(net, opt, message):
    with pytest.raises(ValueError, match=message):
        ops.check_codes(net, opt)


# ------------------------------------------------------------------------------------------
# The estimators, `python -m fastmlp.compile` and ONNX export
# ------------------------------------------------------------------------------------------

def _options(constraints, name):
    (option,) = [c for c in constraints[name] if hasattr(c, "options")]
    return option.options


@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_estimators_accept_exactly_the_registry(estimator):
    constraints = estimator._parameter_constraints
    assert _options(constraints, "activation") == set(ops.HIDDEN_ACTIVATIONS)
    assert _options(constraints, "solver") == set(ops.SOLVERS)
    assert set(ops.SOLVERS) == {"lbfgs"} | set(ops.OPTIMIZER)
    if estimator is MLPRegressor:
        assert _options(constraints, "loss") == set(ops.REGRESSION_LOSSES)


def test_every_output_activation_is_some_losss_output():
    """An output-only activation no loss pairs with could never be used, nor tested."""
    outputs = {loss.output for loss in ops.LOSSES}
    assert {a.name for a in ops.ACTIVATIONS if not a.hidden} <= outputs
    assert outputs <= set(ops.ACTIVATION)


def test_the_estimators_use_every_loss():
    """The classifier picks its loss from y, the regressor takes it as a parameter: between them
    every loss of the registry is one a fit runs (read from the network a fit would build)."""
    from sklearn.preprocessing import LabelBinarizer

    from fastmlp.training import network

    used = set()
    for y in ([0, 1, 2, 0], [0, 1, 0, 1], [[0, 1], [1, 1], [1, 0], [0, 0]]):
        clf = MLPClassifier()
        clf._label_binarizer = LabelBinarizer().fit(y)
        clf.out_activation_ = clf._output_activation()
        used.add(network(clf, table=np.zeros((1, 4), np.int64)).loss)
    assert used == {loss.code for loss in ops.LOSSES if not loss.regression}
    for name in ops.REGRESSION_LOSSES:
        reg = MLPRegressor(loss=name)
        reg.out_activation_ = reg._output_activation()
        net = network(reg, table=np.zeros((1, 4), np.int64))
        assert (net.loss, net.output) == (ops.LOSS[name].code,
                                          ops.ACTIVATION[ops.LOSS[name].output].code)


def _entry_points():
    """Names of kernels' compiled entry points: the dispatchers callable from Python."""
    return {name for name, value in vars(kernels).items()
            if isinstance(value, numba.core.registry.CPUDispatcher)
            and not value.targetoptions.get("no_cpython_wrapper")}


def test_compile_prepares_every_entry_point_for_both_dtypes_dense_and_sparse(monkeypatch):
    """The entry points take every operation as a run-time code, so one call of each per dtype
    (and per input form) prepares every configuration: prepare() must make each call. Counted
    with stand-ins; nothing is compiled."""
    names = _entry_points()
    assert names >= {"epoch", "full_loss_and_gradient", "predict_rows", "output_delta_and_loss"}
    calls = []

    def recorder(name):
        def record(*args):
            arrays = [a for a in _flatten(args) if isinstance(a, np.ndarray)]
            dtype = next(a.dtype.name for a in arrays if a.dtype.kind == "f")
            sparse = any(getattr(a, "_fields", ()) == ("X", "data", "indices", "indptr")
                         and a.indptr.size > 0 for a in args)
            calls.append((name, dtype, sparse))
            return (0.0, 0) if name == "epoch" else 0.0
        return record

    for name in names:
        monkeypatch.setattr(kernels, name, recorder(name))
    assert set(compile.DTYPES) == {"float32", "float64"}
    compile.prepare()
    made = {(name, dtype) for name, dtype, _ in calls}
    assert made == {(name, dtype) for name in names for dtype in compile.DTYPES}, made
    for name in ("epoch", "full_loss_and_gradient", "predict_rows"):
        assert {sparse for n, _, sparse in calls if n == name} == {False, True}, name


def _flatten(values):
    for value in values:
        if isinstance(value, tuple):
            yield from _flatten(value)
        else:
            yield value


class _OnnxGraph:
    """What fastmlp.onnx._activation needs of its graph: nodes and constants, collected for
    onnx.helper."""

    def __init__(self, element_type):
        self.element_type, self.nodes, self.initializers, self._n = element_type, [], [], 0

    def _name(self, stem):
        self._n += 1
        return f"{stem}_{self._n}"

    def constant(self, name, value, element_type=None):
        from onnx import helper

        unique = self._name(name)
        value = np.asarray(value)
        self.initializers.append(helper.make_tensor(unique, element_type or self.element_type,
                                                    list(value.shape), value.ravel().tolist()))
        return unique

    def node(self, op_type, inputs, output=None, **attributes):
        from onnx import helper

        output = output or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attributes))
        return output


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ops.ACTIVATION))
def test_onnx_exports_every_activation(name, dtype):
    """fastmlp.onnx builds a node for each activation, and onnxruntime computes with it what
    reference.py does (tests/test_onnx.py runs whole exported models)."""
    onnx = pytest.importorskip("onnx", reason="needs the onnx extra: pip install '.[onnx]'")
    ort = pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install '.[onnx]'")
    from onnx import TensorProto, helper

    from fastmlp.onnx import _activation

    element = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    graph = _OnnxGraph(element)
    try:
        _activation(graph, name, "z", "a")
    except NotImplementedError as exc:
        pytest.fail(f"activation {name!r} of fastmlp/ops.py has no ONNX form in fastmlp/onnx.py "
                    f"_activation: {exc}")
    model = helper.make_model(helper.make_graph(
        graph.nodes, name, [helper.make_tensor_value_info("z", element, [None, 4])],
        [helper.make_tensor_value_info("a", element, [None, 4])], graph.initializers),
        opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    z = np.linspace(-4, 3, 12).reshape(3, 4).astype(dtype)
    (a,) = session.run(None, {"z": z})
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 or name == "gelu" else dict(
        rtol=1e-12, atol=1e-14)  # onnxruntime has no double Erf: gelu's is float32
    assert_allclose(a, reference.activate(name, z.astype(np.float64)), **tol)


# ------------------------------------------------------------------------------------------
# The kernel tests take their cases from the registry
# ------------------------------------------------------------------------------------------

def _parameters(test, argname):
    marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"
             and m.args[0] == argname]
    assert marks, f"{test.__name__} is not parametrized over {argname!r}"
    return list(marks[0].args[1])


def test_cpu_kernel_and_gradient_tests_take_their_cases_from_the_registry():
    import test_gradients
    import test_kernels
    import test_onnx

    heads = [(loss.output, loss.name) for loss in ops.LOSSES]
    assert test_kernels.HIDDEN == list(ops.HIDDEN_ACTIVATIONS)
    assert test_kernels.HEADS == heads
    assert _parameters(test_kernels.test_activate_and_its_derivative, "name") == list(
        ops.ACTIVATION)
    assert _parameters(test_kernels.test_loss_and_gradient_against_reference,
                       "activation") == list(ops.HIDDEN_ACTIVATIONS)
    assert _parameters(test_kernels.test_output_delta_and_loss, "head") == heads
    assert sorted(_parameters(test_kernels.test_train_epoch_against_a_reference_loop,
                              "solver")) == sorted(ops.OPTIMIZER), (
        "tests/test_kernels.py SOLVER_OPTS must hold a case for every optimizer in fastmlp/ops.py")
    assert [h[:2] for h in test_gradients.HEADS] == heads
    assert list(_parameters(test_gradients.test_gradient_matches_finite_differences,
                            "activation")) == list(ops.HIDDEN_ACTIVATIONS)
    assert sorted(test_onnx.ACTIVATIONS) == sorted(ops.HIDDEN_ACTIVATIONS)


def test_cuda_kernel_tests_take_their_cases_from_the_registry(on_cuda):
    tests = on_cuda["tests"]
    assert tests["HIDDEN"] == list(ops.HIDDEN_ACTIVATIONS)
    assert tests["activate"] == list(ops.ACTIVATION)
    assert tests["backward"] == tests["backward_input"] == list(ops.HIDDEN_ACTIVATIONS)
    assert tests["HEADS"] == sorted(ops.LOSS) and sorted(tests["heads"]) == sorted(ops.LOSS)
    assert tests["OPT_CODES"] == tests["update_codes"] == sorted(CODES["optimizer"]), (
        "tests/cuda_sim/test_cuda_kernels.py OPT and test_update_batch_matches_the_cpu_update "
        "must hold a case for every optimizer in fastmlp/ops.py")


# ------------------------------------------------------------------------------------------
# The registry's own import-time checks
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["name", "code"])
@pytest.mark.parametrize("table", ["ACTIVATIONS", "LOSSES", "OPTIMIZERS"])
def test_registry_refuses_duplicate_names_and_codes(table, field):
    entries = getattr(ops, table)
    ops._check(entries)  # today's tables pass
    clash = dataclasses.replace(entries[-1], **{
        "name": "new_one" if field == "code" else entries[0].name,
        "code": UNKNOWN[{"ACTIVATIONS": "activation", "LOSSES": "loss",
                         "OPTIMIZERS": "optimizer"}[table]] if field == "name"
        else entries[0].code})
    with pytest.raises(RuntimeError, match=f"duplicate {field}"):
        ops._check((*entries, clash))
