"""Saving and loading fitted models in a documented format that cannot execute code.

A model file is a zip archive with two members:

- ``metadata.json``: format and fastmlp versions, the estimator class, its constructor parameters,
  the scalar and list fitted attributes, the network's layer sizes, the dtype and the class labels;
- ``params.npy``: the flat parameter buffer (weights of every layer, then biases), read with
  ``allow_pickle=False``;
- format version 2 only: ``preprocessing.json``, the column preprocessing the network's inputs
  need (``fastmlp.preprocessing.TabularPreprocessor.to_dict``), written by ``fastmlp train``.

Loading trusts nothing in the file: sizes are checked against the declared network before anything
is allocated, the class is looked up in a fixed table, and no value is ever evaluated.
"""

import io
import json
import warnings
import zipfile
import zlib

import numpy as np
from sklearn.preprocessing import LabelBinarizer

from .layout import Layout

FORMAT = "fastmlp-model"
FORMAT_VERSION = 2  # the newest version this fastmlp reads and writes
# The members of each version. A file is written with the lowest version that holds it: models
# without preprocessing stay version 1, readable by fastmlp releases that know only version 1,
# while a model with preprocessing is version 2, which those releases refuse by name rather than
# load and then feed unpreprocessed features.
_MEMBERS = {1: {"metadata.json", "params.npy"},
            2: {"metadata.json", "params.npy", "preprocessing.json"}}
MAX_METADATA_BYTES = 16 * 2**20
MAX_PARAMETERS = 2**31  # a 8 GiB float32 model; anything larger is not a model we wrote

_SCALARS = ("n_iter_", "t_", "n_features_in_", "n_outputs_", "n_layers_", "out_activation_",
            "loss_", "best_loss_", "best_validation_score_")
_LISTS = ("loss_curve_", "validation_scores_", "validation_loss_curve_", "feature_names_in_")


class ModelFileError(ValueError):
    """A model file that is not a readable fastmlp model of a supported version."""


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def save(estimator, path, preprocessing=None):
    """Write a fitted estimator to `path` (see the module docstring for the format).

    `preprocessing`, a fitted ``fastmlp.preprocessing.TabularPreprocessor`` whose output the
    estimator was trained on, is stored beside it (format version 2).
    """
    from . import __version__

    extra = None
    if preprocessing is not None:
        if preprocessing.n_features_out_ != estimator.n_features_in_:
            raise ValueError(f"the preprocessing makes {preprocessing.n_features_out_} features, "
                             f"the estimator takes {estimator.n_features_in_}")
        extra = json.dumps(preprocessing.to_dict(), allow_nan=False)

    params = estimator.get_params(deep=False)
    # Objects that are not data are not saved: a RandomState instance, callback functions.
    if not isinstance(params.get("random_state"), (int, type(None))):
        params["random_state"] = None
    params["callbacks"] = None
    if isinstance(params.get("class_weight"), dict):  # JSON would turn integer keys into text
        params["class_weight"] = {"items": [[k, v] for k, v in params["class_weight"].items()]}
    meta = {
        "format": FORMAT,
        "format_version": 1 if extra is None else 2,
        "fastmlp_version": __version__,
        "estimator": type(estimator).__name__,
        "params": _jsonable(params),
        "layer_units": list(estimator._layout.layer_units),
        "dtype": estimator._params.dtype.name,
        "attributes": {name: _jsonable(getattr(estimator, name)) for name in _SCALARS + _LISTS
                       if name in vars(estimator)},
    }
    if hasattr(estimator, "_label_binarizer"):
        lb = estimator._label_binarizer
        meta["labels"] = {"y_type": lb.y_type_, "classes": _jsonable(lb.classes_)}
    buffer = io.BytesIO()
    np.save(buffer, estimator._params, allow_pickle=False)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(meta, allow_nan=True))
        archive.writestr("params.npy", buffer.getvalue())
        if extra is not None:
            archive.writestr("preprocessing.json", extra)


def load(path):
    """Read a model written by ``save``; raises ModelFileError for anything else.

    A file that also holds column preprocessing (written by ``fastmlp train``) loads with a
    warning: the network alone expects preprocessed features; ``load_with_preprocessing``
    returns both.
    """
    estimator, preprocessing = _load(path)
    if preprocessing is not None:
        warnings.warn(f"{path} holds column preprocessing (written by 'fastmlp train'): the "
                      "network returned by fastmlp.load expects preprocessed features. Use "
                      "fastmlp.persistence.load_with_preprocessing to get both", UserWarning,
                      stacklevel=2)
    return estimator


def load_with_preprocessing(path):
    """Read a model file and the column preprocessing stored with it.

    Returns
    -------
    estimator : MLPClassifier or MLPRegressor
    preprocessing : fastmlp.preprocessing.TabularPreprocessor or None
        None for files without preprocessing (format version 1).

    Raises
    ------
    ModelFileError
        For anything that is not a readable fastmlp model file.
    """
    return _load(path)


def _load(path):
    from .estimators import MLPClassifier, MLPRegressor

    try:
        with zipfile.ZipFile(path) as archive:
            meta = _read_metadata(archive)
            layout = Layout(meta["layer_units"])
            params = _read_params(archive, layout.n_params, np.dtype(meta["dtype"]))
            preprocessing = (_read_preprocessing(archive, path)
                             if meta["format_version"] == 2 else None)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise ModelFileError(f"{path}: not a readable fastmlp model file ({exc})") from exc

    cls = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[meta["estimator"]]
    init_params = dict(meta["params"])
    if isinstance(init_params.get("hidden_layer_sizes"), list):  # JSON has no tuples
        init_params["hidden_layer_sizes"] = tuple(init_params["hidden_layer_sizes"])
    class_weight = init_params.get("class_weight")
    if isinstance(class_weight, dict):
        items = class_weight.get("items")
        if not isinstance(items, list) or not all(
                isinstance(pair, list) and len(pair) == 2 for pair in items):
            raise ModelFileError(f"{path}: malformed class_weight")
        init_params["class_weight"] = {key: value for key, value in items}
    try:
        estimator = cls(**init_params)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: invalid estimator parameters ({exc})") from exc
    for name, value in meta["attributes"].items():
        setattr(estimator, name, np.asarray(value) if name == "feature_names_in_" else value)
    estimator._layout = layout
    estimator._params = params
    estimator._best_params = None
    estimator._optimizer = None
    estimator._no_improvement_count = 0
    if cls is MLPClassifier:
        estimator._label_binarizer = _label_binarizer(meta, path)
        estimator.classes_ = estimator._label_binarizer.classes_
    _check_consistency(estimator, path)
    if preprocessing is not None and preprocessing.n_features_out_ != estimator.n_features_in_:
        raise ModelFileError(f"{path}: the preprocessing makes {preprocessing.n_features_out_} "
                             f"features, the network takes {estimator.n_features_in_}")
    return estimator, preprocessing


def _read_metadata(archive):
    names = set(archive.namelist())
    if names not in _MEMBERS.values():
        raise ModelFileError(f"unexpected archive members {sorted(names)}")
    if archive.getinfo("metadata.json").file_size > MAX_METADATA_BYTES:
        raise ModelFileError("metadata.json is implausibly large")
    try:
        meta = json.loads(archive.read("metadata.json"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"metadata.json is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError("this is not a fastmlp model file")
    version = meta.get("format_version")
    if type(version) is not int or version not in _MEMBERS:
        raise ModelFileError(
            f"model file format version {version!r} (written by fastmlp "
            f"{meta.get('fastmlp_version')!r}) is not supported by this fastmlp, which reads "
            f"version {' or '.join(str(v) for v in sorted(_MEMBERS))}")
    if names != _MEMBERS[version]:
        raise ModelFileError(f"a version {version} model file holds {sorted(_MEMBERS[version])}, "
                             f"this one holds {sorted(names)}")
    expected = {"estimator": str, "params": dict, "layer_units": list, "dtype": str,
                "attributes": dict}
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind):
            raise ModelFileError(f"metadata field {key!r} is missing or malformed")
    if meta["estimator"] not in ("MLPClassifier", "MLPRegressor"):
        raise ModelFileError(f"unknown estimator {meta['estimator']!r}")
    if meta["dtype"] not in ("float32", "float64"):
        raise ModelFileError(f"unsupported dtype {meta['dtype']!r}")
    units = meta["layer_units"]
    if len(units) < 2 or not all(type(u) is int and 0 < u < 2**31 for u in units):
        raise ModelFileError(f"layer_units {units!r} do not describe a network")
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    if n_params > MAX_PARAMETERS:
        raise ModelFileError(f"layer_units {units!r} declare {n_params} parameters, more than "
                             "any model fastmlp writes")
    unknown = set(meta["attributes"]) - set(_SCALARS + _LISTS)
    if unknown:
        raise ModelFileError(f"unknown attributes {sorted(unknown)}")
    return meta


def _read_params(archive, n_params, dtype):
    info = archive.getinfo("params.npy")
    # The stored member can be no larger than the array plus a small .npy header.
    if info.file_size > n_params * dtype.itemsize + 4096:
        raise ModelFileError("params.npy is larger than the declared network")
    with archive.open("params.npy") as member:
        try:
            version = np.lib.format.read_magic(member)
        except ValueError as exc:
            raise ModelFileError(f"params.npy is not a .npy array ({exc})") from exc
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ModelFileError(f"params.npy has unsupported .npy version {version}")
        try:
            shape, _, stored_dtype = read_header(member)
        except ValueError as exc:
            raise ModelFileError(f"params.npy has a malformed header ({exc})") from exc
        if shape != (n_params,) or stored_dtype != dtype:
            raise ModelFileError(f"params.npy holds {stored_dtype}{list(shape)}, the network "
                                 f"needs {dtype}[{n_params}]")
        data = member.read(n_params * dtype.itemsize + 1)
    if len(data) != n_params * dtype.itemsize:
        raise ModelFileError("params.npy is truncated or has trailing data")
    params = np.frombuffer(data, dtype=dtype).copy()
    if not np.isfinite(params).all():
        raise ModelFileError("params.npy contains non-finite values")
    return params


def _read_preprocessing(archive, path):
    from .preprocessing import TabularPreprocessor

    if archive.getinfo("preprocessing.json").file_size > MAX_METADATA_BYTES:
        raise ModelFileError("preprocessing.json is implausibly large")
    try:
        return TabularPreprocessor.from_dict(json.loads(archive.read("preprocessing.json")))
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:  # JSONDecodeError included
        raise ModelFileError(f"{path}: preprocessing.json is not valid ({exc})") from exc


def _label_binarizer(meta, path):
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not isinstance(labels.get("classes"), list):
        raise ModelFileError(f"{path}: classifier without class labels")
    classes = labels["classes"]
    if labels.get("y_type") == "multilabel-indicator":
        return LabelBinarizer().fit(np.eye(len(classes), dtype=int))
    return LabelBinarizer().fit(np.asarray(classes))


_TYPES = {"n_iter_": int, "t_": int, "n_features_in_": int, "n_outputs_": int, "n_layers_": int,
          "out_activation_": str, "loss_": (int, float), "best_loss_": (int, float, type(None)),
          "best_validation_score_": (int, float, type(None)),
          "loss_curve_": (list, type(None)), "validation_scores_": (list, type(None)),
          "validation_loss_curve_": (list, type(None)),
          "feature_names_in_": np.ndarray}


def _check_consistency(estimator, path):
    for name, kind in _TYPES.items():
        if name in vars(estimator) and not isinstance(vars(estimator)[name], kind):
            raise ModelFileError(f"{path}: attribute {name} has the wrong type")
    for name in ("n_iter_", "n_features_in_", "n_outputs_", "n_layers_", "out_activation_"):
        if name not in vars(estimator):
            raise ModelFileError(f"{path}: attribute {name} is missing")
    if estimator.out_activation_ != estimator._output_activation():
        raise ModelFileError(f"{path}: output activation {estimator.out_activation_!r} does "
                             f"not match the estimator's parameters")
    units = estimator._layout.layer_units
    if estimator.n_layers_ != len(units):
        raise ModelFileError(f"{path}: n_layers_ disagrees with layer_units")
    names = vars(estimator).get("feature_names_in_")
    if names is not None and (names.shape != (units[0],) or names.dtype.kind not in "UO"):
        raise ModelFileError(f"{path}: feature_names_in_ does not match the input width")
    if estimator.n_features_in_ != units[0] or estimator.n_outputs_ != units[-1]:
        raise ModelFileError(f"{path}: n_features_in_/n_outputs_ disagree with layer_units")
    if list(units[1:-1]) != list(np.atleast_1d(estimator.hidden_layer_sizes)):
        raise ModelFileError(f"{path}: hidden_layer_sizes disagree with layer_units")
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        expected = 1 if len(classes) == 2 and units[-1] == 1 else len(classes)
        if units[-1] != expected:
            raise ModelFileError(f"{path}: {len(classes)} classes do not fit {units[-1]} outputs")
