"""ONNX export (fastmlp/onnx.py): the exported graph, run in onnxruntime, gives fastmlp's own
predictions and probabilities, for every activation, output, label type and dtype, alone and
inside a scikit-learn pipeline."""

import importlib.util
import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_iris, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fastmlp.onnx
from fastmlp import MLPClassifier, MLPRegressor

HAVE_ONNX = all(importlib.util.find_spec(name) is not None
                for name in ("skl2onnx", "onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="needs the onnx extra: "
                                "pip install '.[onnx]' (skl2onnx, onnx, onnxruntime)")

X, y = load_iris(return_X_y=True)
X = StandardScaler().fit_transform(X)
X32 = X.astype(np.float32)
ACTIVATIONS = ["identity", "logistic", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu"]


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _run(onx, X):
    import onnxruntime

    session = onnxruntime.InferenceSession(onx.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: X})


def _tolerance(model):
    if model.dtype == "float32":
        return dict(rtol=1e-5, atol=1e-6)
    # onnxruntime has no double erf, so gelu's is evaluated in float32.
    return dict(rtol=1e-6, atol=1e-7) if model.activation == "gelu" else dict(rtol=1e-12,
                                                                               atol=1e-14)


@needs_onnx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_exports_directly_through_skl2onnx(activation, dtype):
    import skl2onnx

    clf = _fit(MLPClassifier(hidden_layer_sizes=(16, 8), activation=activation, max_iter=30,
                             learning_rate_init=0.01, dtype=dtype, random_state=0), X, y)
    onx = skl2onnx.to_onnx(clf, X32, options={"zipmap": False})
    labels, proba = _run(onx, X32)
    assert_array_equal(labels, clf.predict(X32))
    assert proba.dtype == np.dtype(dtype)
    assert_allclose(proba, clf.predict_proba(X32), **_tolerance(clf))
    # A regressor with the same hidden layers, two outputs.
    reg = _fit(MLPRegressor(hidden_layer_sizes=(16,), activation=activation, max_iter=30,
                            dtype=dtype, random_state=0), X, np.column_stack([y, X[:, 0]]))
    (out,) = _run(skl2onnx.to_onnx(reg, X32), X32)
    assert out.shape == (len(X), 2)
    assert_allclose(out, reg.predict(X32), **_tolerance(reg))


@needs_onnx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("target", ["binary", "bool", "floats", "strings", "multilabel"])
def test_every_classification_target_exports(target, dtype):
    if target == "multilabel":
        Xt, yt = make_multilabel_classification(80, 6, n_classes=4, random_state=0)
        Xt = Xt.astype(np.float32)
    else:
        Xt = X32
        yt = {"binary": (y == 1).astype(int) * 7, "bool": y == 1, "floats": y * 1.0,
              "strings": np.array(["setosa", "versicolor", "virginica"])[y]}[target]
    clf = _fit(MLPClassifier(hidden_layer_sizes=(8,), max_iter=40, learning_rate_init=0.01,
                             dtype=dtype, random_state=0), Xt, yt)
    labels, proba = _run(clf.to_onnx(Xt), Xt)
    expected = clf.predict(Xt)
    if target == "bool":
        expected = expected.astype(np.int64)  # ONNX labels: int64, double or string
    assert_array_equal(labels, expected)
    assert proba.shape == clf.predict_proba(Xt).shape
    assert_allclose(proba, clf.predict_proba(Xt), **_tolerance(clf))


@needs_onnx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_poisson_regressor_exports_its_exponential_output(dtype):
    counts = np.random.default_rng(0).poisson(np.exp(X[:, 0] / 2 + 1))
    reg = _fit(MLPRegressor(loss="poisson", hidden_layer_sizes=(8,), max_iter=50,
                            dtype=dtype, random_state=0), X, counts)
    (out,) = _run(fastmlp.onnx.to_onnx(reg, X), X)
    assert out.shape == (len(X), 1) and (out > 0).all()
    assert_allclose(out.ravel(), reg.predict(X), **_tolerance(reg))


@needs_onnx
def test_pipeline_exports_with_skl2onnx_defaults():
    import skl2onnx

    raw = load_iris().data.astype(np.float32)
    pipe = _fit(make_pipeline(StandardScaler(), MLPClassifier(activation="gelu", max_iter=30,
                                                              random_state=0)), raw, y)
    labels, proba_maps = _run(skl2onnx.to_onnx(pipe, raw), raw)  # zipmap: a dict per row
    assert_array_equal(labels, pipe.predict(raw))
    proba = np.array([[row[c] for c in pipe.classes_] for row in proba_maps])
    assert_allclose(proba, pipe.predict_proba(raw), rtol=1e-5, atol=1e-6)


@needs_onnx
def test_unfitted_model_is_refused():
    with pytest.raises(Exception, match="not fitted"):
        MLPClassifier().to_onnx(X32)


def test_missing_skl2onnx_gives_an_install_hint(monkeypatch):
    clf = _fit(MLPClassifier(hidden_layer_sizes=(4,), max_iter=2), X32, y)
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # import skl2onnx now raises
    with pytest.raises(ImportError, match=r"pip install 'fastmlp\[onnx\]'"):
        clf.to_onnx(X32)


def test_fastmlp_imports_without_loading_skl2onnx():
    code = "import sys, fastmlp; print('skl2onnx' in sys.modules, 'onnx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
