"""Saving and loading models, hostile model files, and conversion to and from scikit-learn."""

import io
import json
import pickle
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn import neural_network as sk
from sklearn.datasets import load_iris

import fastmlp
from fastmlp import MLPClassifier, MLPRegressor, ModelFileError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
X, y = load_iris(return_X_y=True)
LABELS = np.array(["setosa", "versicolor", "virginica"])[y]


def _models():
    yield MLPClassifier(max_iter=30, random_state=0).fit(X, LABELS)
    yield MLPClassifier(max_iter=30, random_state=0, dtype="float64").fit(X, y == 1)
    yield MLPClassifier(max_iter=30, random_state=0).fit(X, np.column_stack([y == 1, y == 2]))
    yield MLPRegressor(max_iter=30, random_state=0, dtype="float64").fit(X, X[:, :2])
    yield MLPRegressor(loss="poisson", max_iter=30, random_state=0).fit(X, y)
    yield MLPRegressor(solver="lbfgs", max_iter=30, random_state=0).fit(X, X[:, 0])


@pytest.mark.parametrize("model", list(_models()), ids=lambda m: type(m).__name__)
def test_save_and_load_round_trip(model, tmp_path):
    path = tmp_path / "model.fmlp"
    model.save(path)
    loaded = fastmlp.load(path)
    assert type(loaded) is type(model)
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded._params, model._params)
    for name in ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_", "loss_"):
        assert getattr(loaded, name) == getattr(model, name)
    if hasattr(model, "classes_"):
        np.testing.assert_array_equal(loaded.classes_, model.classes_)
        np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_the_format_is_a_zip_of_json_and_a_pickle_free_npy(tmp_path):
    path = tmp_path / "model.fmlp"
    model = next(_models())
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["metadata.json", "params.npy"]
        assert archive.getinfo("params.npy").compress_type == zipfile.ZIP_STORED
        meta = json.loads(archive.read("metadata.json"))
        params = np.load(io.BytesIO(archive.read("params.npy")), allow_pickle=False)
    assert meta["fastmlp_version"] == fastmlp.__version__ and meta["format_version"] == 2
    assert meta["layer_units"] == [4, 100, 3]
    np.testing.assert_array_equal(params, model._params)


def test_loaded_model_keeps_training(tmp_path):
    model = MLPClassifier(solver="sgd", max_iter=5, random_state=0).fit(X, y)
    model.save(tmp_path / "m.fmlp")
    loaded = fastmlp.load(tmp_path / "m.fmlp")
    loaded.partial_fit(X, y)
    assert loaded.n_iter_ == 1 and np.isfinite(loaded._params).all()


@pytest.mark.parametrize("solver", ["sgd", "adam", "adagrad", "rmsprop", "adamw"])
@pytest.mark.parametrize("monitoring", ["none", "early_stopping", "validation_data"])
def test_every_loaded_mini_batch_model_keeps_training(tmp_path, solver, monitoring):
    """What fit and partial_fit leave loads, and the next partial_fit and warm-started fit run
    on it (the loader refuses the states they could not continue from)."""
    model = MLPClassifier(hidden_layer_sizes=(4,), solver=solver, max_iter=3, random_state=0,
                          early_stopping=monitoring == "early_stopping")
    validation = {"validation_data": (X[::3], y[::3])} if monitoring == "validation_data" else {}
    model.fit(X, y, **validation)
    model.partial_fit(X, y, **validation)
    model.save(tmp_path / "m.fmlp")
    loaded = fastmlp.load(tmp_path / "m.fmlp")
    loaded.partial_fit(X, y, **validation)
    assert len(loaded.loss_curve_) == len(model.loss_curve_) + 1
    loaded.set_params(warm_start=True, max_iter=2).fit(X, y, **validation)
    assert loaded.n_iter_ == 2 and np.isfinite(loaded._params).all()


def test_a_scikit_learn_model_that_stopped_early_keeps_training():
    theirs = sk.MLPClassifier(hidden_layer_sizes=(5,), max_iter=20, early_stopping=True,
                              random_state=0).fit(X, y)
    ours = MLPClassifier.from_sklearn(theirs)
    n_epochs = len(theirs.loss_curve_)
    assert np.isnan(ours.validation_loss_curve_).all()  # scikit-learn does not record it
    assert len(ours.validation_loss_curve_) == len(ours.validation_scores_) == n_epochs
    ours.partial_fit(X, y)
    assert len(ours.validation_scores_) == n_epochs + 1
    assert np.isfinite(ours.validation_loss_curve_[-1])


def test_class_weight_survives_and_callbacks_are_not_saved(tmp_path):
    model = MLPClassifier(max_iter=3, class_weight={0: 2.0, 2: 0.5}, callbacks=[print])
    model.fit(X, y).save(tmp_path / "m.fmlp")
    loaded = fastmlp.load(tmp_path / "m.fmlp")
    assert loaded.class_weight == {0: 2.0, 2: 0.5} and loaded.callbacks is None


def test_feature_names_survive(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = MLPRegressor(max_iter=3).fit(frame, y)
    model.save(tmp_path / "m.fmlp")
    np.testing.assert_array_equal(fastmlp.load(tmp_path / "m.fmlp").feature_names_in_,
                                  ["a", "b", "c", "d"])


# ----------------------------------------------------------------------------- hostile files
def _saved(tmp_path):
    path = tmp_path / "model.fmlp"
    next(_models()).save(path)
    return path


def _rewrite(path, meta_change=None, params_bytes=None, extra=None):
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("metadata.json"))
        params = archive.read("params.npy")
    if meta_change:
        meta_change(meta)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps(meta))
        archive.writestr("params.npy", params if params_bytes is None else params_bytes)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def test_truncated_file(tmp_path):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a readable fastmlp model"):
        fastmlp.load(path)


def test_corrupted_file(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        fastmlp.load(path)


def test_not_a_model_file(tmp_path):
    (tmp_path / "x.fmlp").write_bytes(b"definitely not a zip")
    with pytest.raises(ModelFileError, match="not a readable"):
        fastmlp.load(tmp_path / "x.fmlp")
    with pytest.raises(FileNotFoundError):
        fastmlp.load(tmp_path / "missing.fmlp")


def test_incompatible_version(tmp_path):
    path = _rewrite(_saved(tmp_path), lambda m: m.update(format_version=99,
                                                          fastmlp_version="9.0"))
    with pytest.raises(ModelFileError,
                       match="version 99 .* fastmlp '9.0'.* reads versions 1 and 2"):
        fastmlp.load(path)
    for version in (True, 1.0, "2"):  # a known version, but not an integer
        path = _rewrite(_saved(tmp_path), lambda m, v=version: m.update(format_version=v))
        with pytest.raises(ModelFileError, match="format version"):
            fastmlp.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(layer_units=[4, 50, 3]), "params.npy holds"),
    (lambda m: m.update(layer_units=[2**30, 2**30, 3]), "more than max_params=100000000"),
    (lambda m: m.update(layer_units=[4, -1, 3]), "do not describe a network"),
    (lambda m: m.update(estimator="os.system"), "unknown estimator"),
    (lambda m: m.update(dtype="object"), "unsupported dtype"),
    (lambda m: m["params"].update(hidden_layer_sizes="__import__('os').system('touch PWNED')"),
     "invalid estimator parameters"),
    (lambda m: m["params"].update(evil="__import__('os')"), "invalid estimator parameters"),
    (lambda m: m["attributes"].update(__class__="x"), "unknown attributes"),
    (lambda m: m["attributes"].update(out_activation_="eval"), "output activation"),
    (lambda m: m["attributes"].update(n_features_in_=7), "disagree with layer_units"),
    (lambda m: m["labels"].update(classes=[1, 2, 3, 4, 5]), "do not fit"),
    # What fit would refuse, refused on load too (issue 16).
    (lambda m: m["params"].update(callbacks=["os.system"]), "callbacks are never loaded"),
    (lambda m: m["labels"].update(classes=["a"]), "at least two class labels"),
    (lambda m: m["labels"].update(classes=[]), "at least two class labels"),
    (lambda m: m["labels"].update(classes=[None, "a", "b"]), "all strings"),
    (lambda m: m["labels"].update(classes=[{}, {}, {}]), "all strings"),
    (lambda m: m["labels"].update(classes=[1, "a", "b"]), "all strings"),
    (lambda m: m["labels"].update(classes=["c", "b", "a"]), "sorted and unique"),
    (lambda m: m["labels"].update(y_type="binary"), "does not match 3 classes"),
    (lambda m: m["labels"].update(y_type={"x": 1}), "unknown target type"),
    (lambda m: m.pop("labels"), "classifier without class labels"),
    (lambda m: m["params"].update(class_weight={"items": [[[1], 2.0]]}), "class_weight labels"),
    (lambda m: m["params"].update(class_weight={"items": [["setosa", "x"]]}),
     "class_weight values"),
    (lambda m: m["params"].update(class_weight={"items": [["rose", 2.0]]}), "not classes"),
    (lambda m: m["params"].update(random_state="7"), "random_state"),
    (lambda m: m["attributes"].update(loss_curve_=[{"a": 1}]), "loss_curve_ must be a list"),
    (lambda m: m["attributes"].update(loss_curve_=[True]), "loss_curve_ must be a list"),
    (lambda m: m["attributes"].update(n_iter_=True), "n_iter_ must be a non-negative"),
    (lambda m: m["attributes"].update(stopped_early_="yes"), "stopped_early_ must be true"),
    (lambda m: m["attributes"].update(feature_names_in_=["a", ["b"], "c", "d"]),
     "feature_names_in_ must be a list of strings"),
    (lambda m: m["attributes"].update(feature_names_in_=["a", "b"]), "input width"),
    (lambda m: m["attributes"].pop("n_iter_"), "n_iter_ is missing"),
    (lambda m: m["params"].update(dtype="float64"), "parameters are float32"),
    (lambda m: m.update(extra=[1]), "'extra' is not an object"),
    (lambda m: m.update(surprise=1), "unknown metadata field 'surprise'"),
    # States fit never leaves, on which partial_fit or warm_start would fail (issue 22).
    (lambda m: m["attributes"].update(loss_curve_=None), "loss_curve_ is missing or null"),
    (lambda m: m["attributes"].pop("loss_curve_"), "loss_curve_ is missing or null"),
    (lambda m: m["attributes"].update(best_loss_=None),
     "best_loss_ is missing or null: .*without early_stopping"),
    (lambda m: m["attributes"].pop("best_loss_"), "best_loss_ is missing or null"),
    (lambda m: m["params"].update(early_stopping=True),
     "validation_scores_ is missing or null: .*with early_stopping"),
    (lambda m: m["attributes"].update(validation_scores_=[0.5]), "all set or all null"),
    (lambda m: m["attributes"].update(validation_scores_=[0.5], validation_loss_curve_=[],
                                      best_validation_score_=0.5), "differ in length"),
    (lambda m: m["attributes"].update(validation_scores_=[0.5] * 31,
                                      validation_loss_curve_=[0.5] * 31,
                                      best_validation_score_=0.5), "longer than loss_curve_"),
    (lambda m: m["attributes"].update(t_=3), "t_=3 counts fewer samples"),
    (lambda m: m["attributes"].update(n_iter_=31), "n_iter_=31 is more than"),
])
def test_hostile_metadata_is_refused(tmp_path, monkeypatch, change, message):
    monkeypatch.chdir(tmp_path)
    path = _rewrite(_saved(tmp_path), change)
    with pytest.raises(ModelFileError, match=message):
        fastmlp.load(path)
    assert not (tmp_path / "PWNED").exists()


def test_hostile_parameter_payloads_are_refused(tmp_path):
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for payload, message in [(pickled.getvalue(), "params.npy"),
                             (b"\x93NUMPY\x01\x00" + b"x" * 50, ""),
                             (b"junk", "")]:
        path = _rewrite(_saved(tmp_path), params_bytes=payload)
        with pytest.raises(ModelFileError, match=message):
            fastmlp.load(path)
    path = _rewrite(_saved(tmp_path), extra={"payload.pkl": pickle.dumps(print)})
    with pytest.raises(ModelFileError, match="unexpected archive members"):
        fastmlp.load(path)


# ----------------------------------------------------------------------------- pickle, sklearn
def test_pickle_and_joblib_keep_working(tmp_path):
    model = next(_models())
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict(X), model.predict(X))
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict(X), model.predict(X))


@pytest.mark.parametrize("model", list(_models()), ids=lambda m: type(m).__name__)
def test_to_sklearn_predicts_identically(model):
    """To the last bits in float64: scikit-learn multiplies with numpy's BLAS and fastmlp's kernels
    with SciPy's, two OpenBLAS builds that can round a product's last bit differently (they did
    with numpy 1.24 and SciPy 1.10 on an AMD EPYC). A float32 model's weights go to scikit-learn
    as float32, which it multiplies with float64 input in float64, so values then agree to
    float32 precision."""
    theirs = model.to_sklearn()
    assert type(theirs).__module__.startswith("sklearn.")
    tolerance = dict(rtol=1e-13, atol=0) if model.dtype == "float64" else dict(rtol=1e-5,
                                                                                atol=1e-6)

    def check(a, b):
        np.testing.assert_allclose(a, b, **tolerance)
    if hasattr(model, "predict_proba"):
        np.testing.assert_array_equal(theirs.predict(X), model.predict(X))
        check(theirs.predict_proba(X), model.predict_proba(X))
    else:
        check(theirs.predict(X), model.predict(X))


def test_from_sklearn_predicts_identically():
    theirs = sk.MLPClassifier(hidden_layer_sizes=(8,), max_iter=50, random_state=0).fit(X, LABELS)
    ours = MLPClassifier.from_sklearn(theirs)
    assert ours.dtype == "float64"
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-12)
    with pytest.raises(TypeError, match="expects a fitted MLPRegressor"):
        MLPRegressor.from_sklearn(theirs)


def test_from_sklearn_applies_the_loaders_consistency_rules():
    theirs = sk.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    theirs.n_features_in_ = 7  # tampered: the weights take 4 inputs
    with pytest.raises(ValueError, match="n_features_in_/n_outputs_ disagree"):
        MLPClassifier.from_sklearn(theirs)


# ----------------------------------------------------------------------------- format details
def test_a_numpy_integer_seed_is_saved_as_that_integer(tmp_path):
    model = MLPClassifier(max_iter=2, random_state=np.int64(7)).fit(X, y)
    model.save(tmp_path / "m.fmlp")
    with zipfile.ZipFile(tmp_path / "m.fmlp") as archive:
        assert json.loads(archive.read("metadata.json"))["params"]["random_state"] == 7
    assert fastmlp.load(tmp_path / "m.fmlp").random_state == 7


def test_stopped_early_survives(tmp_path):
    model = MLPClassifier(max_iter=2, random_state=0).fit(X, y)
    model.save(tmp_path / "m.fmlp")
    assert fastmlp.load(tmp_path / "m.fmlp").stopped_early_ is model.stopped_early_ is False


def test_extra_values_travel_beside_the_model(tmp_path):
    from fastmlp import persistence

    model = next(_models())
    extra = {"preprocessing": {"mean": [0.5, 1.5], "columns": ["a", "b"], "scale": None}}
    persistence.save(model, tmp_path / "m.fmlp", extra=extra)
    loaded, read_back = persistence.load_with_extra(tmp_path / "m.fmlp")
    assert read_back == extra
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    model.save(tmp_path / "plain.fmlp")
    assert persistence.load_with_extra(tmp_path / "plain.fmlp")[1] == {}
    deep = [1]
    for _ in range(40):
        deep = [deep]
    for bad, error, message in [({"f": print}, TypeError, "cannot save extra"),
                                ({1: "x"}, TypeError, "string keys"),
                                ({"deep": deep}, ValueError, "nested deeper than 32")]:
        with pytest.raises(error, match=message):
            persistence.save(model, tmp_path / "bad.fmlp", extra=bad)
        assert not (tmp_path / "bad.fmlp").exists()


def test_version_1_files_still_load():
    """tests/data/model_v1.fmlp was written by the version-1 writer (fastmlp 0.1.0 before
    issue 16): a classifier with string labels, a class_weight dict and early stopping."""
    from fastmlp import reference

    path = Path(__file__).parent / "data" / "model_v1.fmlp"
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("metadata.json"))
        params = np.load(io.BytesIO(archive.read("params.npy")), allow_pickle=False)
    assert meta["format_version"] == 1
    model = fastmlp.load(path)
    np.testing.assert_array_equal(model._params, params)
    assert model.class_weight == {"setosa": 2.0} and model.early_stopping
    assert model.validation_scores_ == meta["attributes"]["validation_scores_"]
    expected = reference.forward(model.coefs_, model.intercepts_, X, "relu", "softmax")[-1]
    np.testing.assert_allclose(model.predict_proba(X), expected, rtol=1e-12)
    np.testing.assert_array_equal(model.classes_, ["setosa", "versicolor", "virginica"])


def test_max_params_bounds_the_network_and_can_be_raised(tmp_path):
    path = _saved(tmp_path)
    n_params = next(_models())._params.size
    with pytest.raises(ModelFileError, match=f"{n_params} parameters, more than max_params"):
        fastmlp.load(path, max_params=n_params - 1)
    assert fastmlp.load(path, max_params=n_params)._params.size == n_params
    with pytest.raises(TypeError, match="max_params must be an integer"):
        fastmlp.load(path, max_params=1e9)
    with pytest.raises(ValueError, match="at least 1"):
        fastmlp.load(path, max_params=0)


def test_the_modules_import_each_other_without_cycles():
    """Persistence and conversion sit below the estimators: nothing in fastmlp imports in a
    circle (the package's __init__, which gathers the public names, aside)."""
    import ast

    package = Path(fastmlp.__file__).parent
    graph = {}
    for file in package.rglob("*.py"):
        if file.name == "__init__.py" and file.parent == package:
            continue
        parts = file.relative_to(package).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        here = parts[:-1]
        graph[name] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - (node.level - 1)]
                targets = [node.module] if node.module else [a.name for a in node.names]
                graph[name] |= {".".join(base + tuple(t.split("."))) for t in targets}
    assert {"persistence", "conversion", "fitted_state", "estimators"} <= set(graph)

    def visit(name, path):
        assert name not in path, f"import cycle: {' -> '.join(path + (name,))}"
        for dependency in graph.get(name, ()):
            visit(dependency, path + (name,))

    for name in graph:
        visit(name, ())


def test_float64_parameters_for_a_float32_model_are_refused(tmp_path):
    path = _saved(tmp_path)  # a float32 model
    with zipfile.ZipFile(path) as archive:
        params = np.load(io.BytesIO(archive.read("params.npy")))
    as_float64 = io.BytesIO()
    np.save(as_float64, params.astype(np.float64))
    _rewrite(path, lambda m: m.update(dtype="float64"), params_bytes=as_float64.getvalue())
    with pytest.raises(ModelFileError, match="parameters are float64, the model's dtype is "
                                             "float32"):
        fastmlp.load(path)


# ----------------------------------------------------------------------------- skops.io
SKOPS_TRUSTED = ["fastmlp.estimators.MLPClassifier", "fastmlp.estimators.MLPRegressor"]


def _skops():
    return pytest.importorskip("skops.io", reason="skops is not installed (pip install "
                                                  "'fastmlp[skops]')")


def _pipelines():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    yield make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(5,), max_iter=5, random_state=np.random.RandomState(0),
        class_weight={"setosa": 2.0})), X, LABELS
    yield make_pipeline(StandardScaler(), MLPClassifier(
        hidden_layer_sizes=(4,), solver="sgd", learning_rate="adaptive", max_iter=5,
        early_stopping=True, random_state=0)), X, y
    yield make_pipeline(StandardScaler(), MLPRegressor(
        hidden_layer_sizes=(4, 3), solver="rmsprop", max_iter=5, dtype="float64",
        random_state=0)), X, X[:, :2]


@pytest.mark.parametrize("index", range(3))
def test_a_pipeline_round_trips_through_skops_without_pickle(tmp_path, index):
    """The README's recipe: the fastmlp estimator classes are the only types to trust, and the
    loaded pipeline predicts and keeps training exactly as the original does."""
    sio = _skops()
    pipeline, features, target = list(_pipelines())[index]
    pipeline.fit(features, target)
    sio.dump(pipeline, tmp_path / "p.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "p.skops")
    assert set(untrusted) <= set(SKOPS_TRUSTED) and untrusted
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.load(tmp_path / "p.skops")
    loaded = sio.load(tmp_path / "p.skops", trusted=SKOPS_TRUSTED)
    np.testing.assert_array_equal(loaded.predict(features), pipeline.predict(features))
    ours, theirs = loaded[-1], pipeline[-1]
    assert ours.get_params().keys() == theirs.get_params().keys()
    for name in ("n_iter_", "t_", "loss_curve_", "best_loss_", "validation_scores_"):
        assert getattr(ours, name) == getattr(theirs, name)
    # The optimizer's buffers and counters came along: the next epoch is the same epoch.
    scaled = pipeline[0].transform(features)
    for model in (theirs, ours):
        model.set_params(random_state=0).partial_fit(scaled, target)
    np.testing.assert_array_equal(ours._params, theirs._params)


def test_skops_never_writes_callbacks_and_pickle_keeps_them(tmp_path):
    import copy

    sio = _skops()
    model = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, callbacks=[print]).fit(X, y)
    sio.dump(model, tmp_path / "m.skops")
    assert sio.get_untrusted_types(file=tmp_path / "m.skops") == SKOPS_TRUSTED[:1]
    assert sio.load(tmp_path / "m.skops", trusted=SKOPS_TRUSTED).callbacks is None
    assert model.callbacks == [print]  # dumping changed nothing
    assert pickle.loads(pickle.dumps(model)).callbacks == [print]
    assert copy.deepcopy(model).callbacks == copy.copy(model).callbacks == [print]


def test_skops_restores_unfitted_estimators_as_they_were(tmp_path):
    sio = _skops()
    model = MLPRegressor(hidden_layer_sizes=(7, 2), alpha=0.5, random_state=3)
    sio.dump(model, tmp_path / "m.skops")
    loaded = sio.load(tmp_path / "m.skops", trusted=SKOPS_TRUSTED)
    assert loaded.get_params() == model.get_params() and not hasattr(loaded, "n_iter_")
    # Starting weights assigned before the first fit travel too, and partial_fit starts there.
    model = MLPRegressor(hidden_layer_sizes=(2,), random_state=0)
    model.coefs_ = [[[0.5, -0.5]] * 4, np.ones((2, 1))]
    model.intercepts_ = [np.zeros(2), np.zeros(1)]
    sio.dump(model, tmp_path / "m.skops")
    loaded = sio.load(tmp_path / "m.skops", trusted=SKOPS_TRUSTED)
    for estimator in (model, loaded):
        estimator.partial_fit(X, y)
    np.testing.assert_array_equal(loaded._params, model._params)


def _state_of(model):
    from fastmlp import persistence

    return persistence.data_state(model)


def _nested(depth):
    value = [1.0]
    for _ in range(depth):
        value = [value]
    return value


def _trusted_object():
    from sklearn.preprocessing import StandardScaler  # skops trusts scikit-learn's estimators

    return StandardScaler()


def _nan_first(array):
    array = array.copy()
    array[0] = np.nan
    return array


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(_params=s["_params"][:-1]), "params.npy holds|parameters are"),
    (lambda s: s.update(_params=_nan_first(s["_params"])), "non-finite"),
    (lambda s: s.update(_params=s["_params"].astype(np.float16)), "float32 or float64 array"),
    (lambda s: s.update(_params=list(s["_params"])), "float32 or float64 array"),
    (lambda s: s.update(_layout=[4, 5, 4]), "parameters are"),
    (lambda s: s.update(_layout=[2**40, 2**40, 3]), "parameters are"),
    (lambda s: s.update(_layout="4,5,3"), "list of layer sizes"),
    (lambda s: s.update(loss_curve_=None), "loss_curve_ is missing or null"),
    (lambda s: s.pop("best_loss_"), "best_loss_ is missing or null"),
    (lambda s: s.update(n_features_in_=9), "disagree with layer_units"),
    (lambda s: s.update(callbacks=[_trusted_object()]), "callbacks are never loaded"),
    (lambda s: s.update(_forward=_trusted_object()), "unknown attribute '_forward'"),
    (lambda s: s.update(alpha=-1.0), "invalid estimator parameters"),
    (lambda s: s.update(_label_binarizer={"y_type": "multiclass", "classes": [0, 1, 2, 3]}),
     "4 classes do not fit 3 outputs"),
    (lambda s: s.update(_label_binarizer=None), "classifier without class labels"),
    (lambda s: s.update(_best_params=s["_params"][:3]), "_best_params is float32"),
    (lambda s: s.update(_no_improvement_count=-1), "_no_improvement_count"),
    (lambda s: s.update(t_=2**64), "t_ must be a non-negative integer \\(of 64 bits\\)"),
    (lambda s: s["_optimizer"]["slots"].update(m=s["_params"][:3]), "optimizer buffer m"),
    (lambda s: s["_optimizer"]["slots"].update(m=_nan_first(s["_params"])), "non-finite"),
    (lambda s: s["_optimizer"]["slots"].pop("v"), "keeps the optimizer buffers"),
    (lambda s: s["_optimizer"]["counters"].update(step=-5), "counter step"),
    (lambda s: s["_optimizer"]["counters"].update(step=1.5), "counter step"),
    (lambda s: s["_optimizer"].update(learning_rate=0.1), "keeps no learning_rate"),
    (lambda s: s.update(_optimizer=[1, 2]), "slots, counters and learning_rate"),
    (lambda s: s.update(solver="sgd"), "keeps the optimizer buffers"),
])
def test_a_hostile_skops_state_is_refused_before_anything_runs(tmp_path, monkeypatch, change,
                                                              message):
    """skops.io hands __setstate__ whatever the file says: the loader's rules apply to it."""
    sio = _skops()
    from fastmlp import persistence

    model = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0).fit(X, y)
    state = _state_of(model)
    change(state)
    monkeypatch.setattr(persistence, "data_state", lambda estimator: state)
    sio.dump(model, tmp_path / "m.skops")
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match=f"cannot restore MLPClassifier: .*({message})"):
        sio.load(tmp_path / "m.skops", trusted=SKOPS_TRUSTED)


@pytest.mark.parametrize("solver", ["adagrad", "rmsprop"])
def test_state_and_pickles_of_versions_that_named_the_squared_gradients_m_still_load(solver):
    """Adagrad's and RMSprop's one buffer was stored as "m" (Adam's name) before it was named
    squared_gradients: such a state, and such a pickled optimizer, restore the same buffer."""
    import pickle

    model = MLPClassifier(hidden_layer_sizes=(4,), solver=solver, max_iter=3, random_state=0,
                          dtype="float64").fit(X, y)
    state = _state_of(model)
    state["_optimizer"]["slots"] = {"m": state["_optimizer"]["slots"].pop("squared_gradients")}
    restored = MLPClassifier.__new__(MLPClassifier)
    restored.__setstate__(state)
    np.testing.assert_array_equal(restored._optimizer.squared_gradients,
                                  model._optimizer.squared_gradients)

    old = dict(vars(model._optimizer), step=0)  # the attributes an older version pickled
    old["m"] = old.pop("squared_gradients")
    optimizer = type(model._optimizer).__new__(type(model._optimizer))
    optimizer.__setstate__(old)
    model._optimizer = pickle.loads(pickle.dumps(optimizer))
    assert sorted(vars(model._optimizer)) == sorted(vars(restored._optimizer))
    for fitted in (model, restored):
        fitted.partial_fit(X, y)
    np.testing.assert_array_equal(model._params, restored._params)


def test_a_parameter_the_state_lacks_takes_its_default():
    """As `load` does for a file written before a parameter was added."""
    model = MLPRegressor(hidden_layer_sizes=(3,), alpha=0.5, rho=0.5, max_iter=2).fit(X, y)
    for fitted in (model, MLPRegressor(rho=0.5)):
        state = _state_of(fitted)
        del state["rho"]
        restored = MLPRegressor.__new__(MLPRegressor)
        restored.__setstate__(state)
        assert restored.rho == MLPRegressor().rho and restored.get_params()["alpha"] == \
            fitted.alpha


def test_a_state_nested_too_deeply_is_refused():
    model = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2).fit(X, y)
    for name in ("loss_curve_", "hidden_layer_sizes"):
        state = _state_of(model)
        state[name] = _nested(5000)  # beyond what skops itself writes, not beyond a file
        with pytest.raises(ModelFileError, match="nested too deeply"):
            MLPRegressor.__new__(MLPRegressor).__setstate__(state)


def test_an_sgd_optimizer_state_needs_a_positive_learning_rate():
    model = MLPRegressor(hidden_layer_sizes=(3,), solver="sgd", max_iter=2).fit(X, y)
    for rate in (0.0, float("nan"), None, "0.1"):
        state = _state_of(model)
        state["_optimizer"]["learning_rate"] = rate
        with pytest.raises(ModelFileError, match="learning_rate must be a positive number"):
            MLPRegressor.__new__(MLPRegressor).__setstate__(state)
