"""scikit-learn's own MLP test file, run against fastmlp's estimators in float32 and float64.

The installed scikit-learn's ``sklearn/neural_network/tests/test_mlp.py`` is read at test time,
its import of the estimators is pointed at fastmlp, and it runs in a pytest subprocess. The set of
failing tests must equal the allow-list below exactly: a new failure, or an allow-listed test that
starts passing, fails this check. Nothing of scikit-learn's file is copied into this repository.
"""

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import fastmlp

SKLEARN_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor"

# Each entry: test id -> why fastmlp fails it. Only scikit-learn's private internals and design
# differences the README documents ("What is different") belong here.
EXPECTED_FAILURES = {
    "test_gradient": "reads scikit-learn's private internals (_loss_grad_lbfgs on hand-built "
                     "buffers); fastmlp's gradients are checked in tests/test_gradients.py",
    "test_mlp_partial_fit_after_fit[MLPClassifier]": "early_stopping=True works in partial_fit "
                                                     "(README: What is different)",
    "test_mlp_partial_fit_after_fit[MLPRegressor]": "early_stopping=True works in partial_fit "
                                                    "(README: What is different)",
    "test_preserve_feature_names[MLPClassifier]": "fits a single-class y: a classifier needs two "
                                                  "classes (README: What is different)",
}
# The `dtype` parameter, not the input's dtype, decides the weights' dtype (README: What is
# different): scikit-learn's test expects input of the other dtype to set it.
EXPECTED_FAILURES_BY_DTYPE = {
    "float32": {
        "test_mlp_param_dtypes[MLPClassifier-float64]": "dtype='float32' keeps float32 weights",
        "test_mlp_param_dtypes[MLPRegressor-float64]": "dtype='float32' keeps float32 weights",
        "test_nonfinite_params": "values near float64's maximum do not fit in float32, the "
                                 "default dtype: validation refuses X before training, with "
                                 "scikit-learn's message for infinite input",
        "test_predict_proba_multilabel": "predict_log_proba is finite where predict_proba "
                                         "underflows to 0; the test expects log(0) = -inf",
    },
    "float64": {
        "test_mlp_param_dtypes[MLPClassifier-float32]": "dtype='float64' keeps float64 weights",
        "test_mlp_param_dtypes[MLPRegressor-float32]": "dtype='float64' keeps float64 weights",
    },
}


def _test_file():
    spec = importlib.util.find_spec("sklearn.neural_network.tests.test_mlp")
    if spec is None or spec.origin is None:
        pytest.skip("the installed scikit-learn ships without its tests "
                    "(sklearn/neural_network/tests/test_mlp.py)")
    return Path(spec.origin)


_SHIM = '''\
"""fastmlp's estimators under scikit-learn's names, with dtype={dtype!r} as the default."""
import types

import fastmlp


def _with_dtype_default(cls, dtype):
    init = cls.__init__
    new_init = types.FunctionType(init.__code__, init.__globals__, "__init__", init.__defaults__,
                                  init.__closure__)
    new_init.__kwdefaults__ = {{**init.__kwdefaults__, "dtype": dtype}}
    new_init.__qualname__ = cls.__name__ + ".__init__"
    return type(cls.__name__, (cls,), {{"__init__": new_init, "__module__": __name__}})


MLPClassifier = _with_dtype_default(fastmlp.MLPClassifier, {dtype!r})
MLPRegressor = _with_dtype_default(fastmlp.MLPRegressor, {dtype!r})
'''

# scikit-learn's conftest provides this fixture; its default seed is 42.
_FIXTURE = '''

@pytest.fixture
def global_random_seed():
    return 42
'''


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory):
    """{dtype: {test id: (outcome, message)}} from one pytest subprocess running both copies."""
    source = _test_file().read_text()
    assert source.count(SKLEARN_IMPORT) == 1, "scikit-learn's test file changed its import"
    folder = tmp_path_factory.mktemp("sklearn_suite")
    for dtype in ("float32", "float64"):
        (folder / f"fastmlp_{dtype}.py").write_text(_SHIM.format(dtype=dtype))
        module = source.replace(SKLEARN_IMPORT,
                                f"from fastmlp_{dtype} import MLPClassifier, MLPRegressor")
        (folder / f"test_mlp_{dtype}.py").write_text(module + _FIXTURE)
    report = folder / "report.xml"
    env = dict(os.environ)
    root = str(Path(fastmlp.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, str(folder), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(folder), "-o", "addopts=", f"--junitxml={report}", "test_mlp_float32.py",
         "test_mlp_float64.py"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    if not report.exists():
        pytest.fail("scikit-learn's test file did not run:\n" + result.stdout[-4000:] +
                    result.stderr[-4000:])
    outcomes = {"float32": {}, "float64": {}}
    for case in ET.parse(report).getroot().iter("testcase"):
        dtype = re.search(r"test_mlp_(float\d+)", case.get("classname")).group(1)
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if case.find("skipped") is not None:
            outcome = "skipped"
        elif problem is not None:
            outcome = "failed"
        else:
            outcome = "passed"
        message = "" if problem is None else (problem.get("message") or "")[:500]
        outcomes[dtype][case.get("name")] = (outcome, message)
    return outcomes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sklearn_mlp_test_file_passes_except_allow_list(suite_results, dtype):
    results = suite_results[dtype]
    assert len(results) >= 50, sorted(results)
    expected = {**EXPECTED_FAILURES, **EXPECTED_FAILURES_BY_DTYPE[dtype]}
    failed = {name: message for name, (outcome, message) in results.items()
              if outcome == "failed"}
    skipped = [name for name, (outcome, _) in results.items() if outcome == "skipped"]
    unexpected = {name: message for name, message in failed.items() if name not in expected}
    now_passing = sorted(set(expected) - set(failed))
    assert not unexpected, "new failures:\n" + "\n".join(f"{k}: {v}" for k, v in unexpected.items())
    assert not now_passing, f"allow-listed tests that now pass (remove them): {now_passing}"
    assert not skipped, f"skipped: {skipped}"
