"""Saving and loading fitted models in a documented format that cannot execute code.

A model file (format version 2; version 1 files are still read) is a zip archive with exactly two
members:

- ``metadata.json`` (deflated): ``format``, ``format_version``, ``fastmlp_version``, ``estimator``
  (the class name), ``params`` (constructor parameters; callbacks and RandomState instances are not
  data and are stored as null), ``layer_units``, ``dtype``, ``attributes`` (the fitted attributes of
  `fitted_state.FITTED`), ``labels`` (classifiers: ``y_type`` and sorted ``classes``) and, from
  version 2, an optional ``extra`` object of named JSON values that callers other than the
  estimator store beside the model (see `save`'s ``extra``);
- ``params.npy`` (stored): the flat parameter buffer (weights of every layer, then biases), read
  with ``allow_pickle=False``.

Saving validates everything by the loader's own rules before the first byte is written, then writes
a temporary file beside the target, flushes and fsyncs it and renames it over the target, so an
earlier file survives any failure or kill. Loading reads nothing unbounded and evaluates nothing: it
opens regular files only, caps the metadata's size and measures it (nesting, counts of containers
and values, estimated memory, number lengths) in one linear pass before json parses it, requires
exactly the two members (not encrypted, stored or deflated, sizes plausible for the file), checks
the network size against ``max_params`` before allocating it, and applies ``fit``'s rules to what
it read. Every refusal is a `ModelFileError` naming the problem in one line. This module imports
no estimator class: they are looked up by name in `fitted_state.ESTIMATORS`.

The same rules restore the plain-data state that skops.io stores (`data_state`, `restore_state`).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import os
import secrets
import stat
import struct
import warnings
import zipfile
import zlib
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from . import fitted_state
from ._version import __version__
from .fitted_state import FITTED, short_repr
from .optimizers import make_optimizer

# Hints name the estimators' scikit-learn base: this module imports no estimator class.
if TYPE_CHECKING:
    from sklearn.base import BaseEstimator

    from .preprocessing import TabularPreprocessor

FORMAT = "fastmlp-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)

MAX_PARAMS = 100_000_000  # load()'s default max_params: 400 MB of float32, 800 MB of float64
MAX_LAYERS = 1_000
MAX_METADATA_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 32
MAX_JSON_CONTAINERS = 2**18  # arrays and objects in metadata.json
MAX_JSON_VALUES = 2**21  # values of every kind (an array of two million floats is 64 MB)
MAX_METADATA_MEMORY = 64 * 2**20  # what parsing metadata.json may allocate, estimated beforehand
MAX_NUMBER_CHARS = 40  # a float64's repr needs at most 24, an int64 at most 20
MAX_EXPANSION = 32  # params.npy's size over its compressed size (float weights deflate ~1.1x)
_EXPANSION_ALLOWANCE = 2**20  # small models may compress well (zeros) without being suspicious
_MAX_NPY_HEADER = 4096
_MAX_OPENING_READ = 2**20  # no single read while the zip directory is parsed may be larger
_CHUNK = 2**22
_MEMBERS = ("metadata.json", "params.npy")
_ALLOWED_FLAGS = 0x080E  # deflate options, data descriptor, UTF-8 names; not encryption or patches
_REQUIRED_KEYS = {"format": str, "format_version": int, "fastmlp_version": str, "estimator": str,
                  "params": dict, "layer_units": list, "dtype": str, "attributes": dict}
_OPTIONAL_KEYS = {1: {"labels"}, 2: {"labels", "extra"}}
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # a fixed timestamp: the same model gives the same bytes

_SCAN_CHUNK = 2**17  # metadata.json is measured in pieces of this many bytes (bounded memory)
_NUMBER_BYTES = np.zeros(256, bool)
_NUMBER_BYTES[np.frombuffer(b"-+.0123456789eE", np.uint8)] = True


class ModelFileError(ValueError):
    """A model file that is not a readable fastmlp model of a supported version."""


# ----------------------------------------------------------------------------------------- save
def save(estimator: BaseEstimator, path: str | os.PathLike[str], *,
         extra: dict[str, Any] | None = None,
         preprocessing: TabularPreprocessor | None = None) -> None:
    """Write a fitted estimator to `path` atomically (see the module docstring for the format).

    Parameters
    ----------
    estimator : fitted MLPClassifier or MLPRegressor
    path : str or os.PathLike
        The target file; an existing file is replaced only once the new one is complete and on
        disk. If `path` is a symbolic link, the file it points to is replaced. Anything else
        that exists there (a directory, a device, a pipe) is refused before anything is written.
    extra : dict of str to JSON-able values, optional
        Information stored beside the model under ``metadata.json``'s ``extra`` key and returned
        by `load_with_extra` (for instance the command line's preprocessing). Checked like the
        rest of the metadata: plain JSON types, nesting and size within the loader's limits.
    preprocessing : fastmlp.preprocessing.TabularPreprocessor, optional
        The fitted column preprocessing whose output the estimator was trained on (``fastmlp
        train``), stored as ``extra["preprocessing"]`` and returned by `load_with_preprocessing`.

    Raises
    ------
    TypeError or ValueError
        If anything that would be written is not representable or would not load back, or if
        `path` exists and is not a regular file or a directory; the target is then untouched.
    IsADirectoryError
        If `path` is a directory.
    """
    check_is_fitted(estimator)
    if preprocessing is not None:
        if preprocessing.n_features_out_ != estimator.n_features_in_:
            raise ValueError(f"the preprocessing makes {preprocessing.n_features_out_} features, "
                             f"the estimator takes {estimator.n_features_in_}")
        extra = {**(extra or {}), "preprocessing": preprocessing.to_dict()}
    meta = _metadata(estimator, extra, __version__)
    params = estimator._params
    text = json.dumps(meta, allow_nan=True).encode("utf-8")
    if len(text) > MAX_METADATA_BYTES:
        raise ValueError(f"cannot save this model: its metadata would take {len(text)} bytes, "
                         f"more than the {MAX_METADATA_BYTES} a model file may hold (shorten "
                         "long curves such as loss_curve_ first)")
    try:  # the loader's own rules, so that a file that is written always loads
        _assemble(_parse_json(text), params, max_params=None)
    except ModelFileError as exc:
        raise ValueError(f"cannot save this model: {exc}") from None

    target = os.path.realpath(os.fspath(path))
    _check_replaceable(target, os.fspath(path))

    def write(file):
        with zipfile.ZipFile(file, "w") as archive:
            info = zipfile.ZipInfo("metadata.json", _ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text)
            info = zipfile.ZipInfo("params.npy", _ZIP_DATE)
            info.file_size = params.nbytes + _MAX_NPY_HEADER  # lets zipfile choose zip64
            with archive.open(info, "w") as member:
                np.lib.format.write_array(member, params, allow_pickle=False)

    atomic_write(target, write)


def atomic_write(target, write):
    """Replace the file `target` (absent or a regular file: the caller checks) with one that
    write(file) fills, atomically: a temporary file beside it, with the permissions of the file
    it replaces (else what open() gives a new file), is filled, flushed, fsynced and renamed
    over `target`. On any failure it is removed and `target` is as it was."""
    directory, name = os.path.split(os.fspath(target))
    directory = directory or os.curdir
    temporary, fd = _create_beside(directory, name)
    try:
        with contextlib.suppress(FileNotFoundError):  # keep the mode of the file being replaced
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        with open(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _check_replaceable(target, shown):
    """Raise unless `target` is absent or a regular file. The file is replaced by renaming a
    temporary file over it, which would put a model file in place of a directory, a device (such
    as /dev/full) or a pipe; refused before anything is written."""
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"cannot save the model: {shown} is a directory")
    if not stat.S_ISREG(mode):
        raise ValueError(f"cannot save the model: {shown} exists and is not a regular file (a "
                         "device, pipe or socket); a model file replaces only a regular file")


def _create_beside(directory, name):
    """(path, fd) of a new, empty, exclusively created file in `directory`.

    Its name starts with at most 32 bytes of `name` (so that a leftover says whose it was) and
    is at most 50 bytes long: a target whose name is as long as the file system allows still
    gets a temporary file beside it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    prefix = name[:32]
    while len(os.fsencode(prefix)) > 32:  # a multi-byte name: cut whole characters
        prefix = prefix[:-1]
    while True:
        temporary = os.path.join(directory, f".{prefix}.{secrets.token_hex(6)}.tmp")
        try:
            return temporary, os.open(temporary, flags, 0o666)  # the umask applies, as for open()
        except FileExistsError:
            continue


def _fsync_directory(directory):
    """Make the rename durable; best effort (not every system can open a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_params(params):
    """Constructor parameters in their JSON form (what `_init_params` reads back)."""
    params = dict(params)
    random_state = params.get("random_state")
    # An integer seed (np.int64 included) is data; a RandomState instance is not.
    params["random_state"] = int(random_state) if isinstance(random_state, Integral) else None
    params["callbacks"] = None
    class_weight = params.get("class_weight")
    if isinstance(class_weight, dict):  # JSON would turn integer keys into text
        params["class_weight"] = {"items": [[key, value] for key, value in class_weight.items()]}
    return {key: _plain(value, f"parameter {key}") for key, value in params.items()}


def _metadata(estimator, extra, version):
    state = vars(estimator)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastmlp_version": version,
        "estimator": type(estimator).__name__,
        "params": _json_params(estimator.get_params(deep=False)),
        "layer_units": list(estimator._layout.layer_units),
        "dtype": estimator._params.dtype.name,
        "attributes": {name: _plain(state[name], f"attribute {name}") for name in FITTED
                       if name in state},
    }
    if "_label_binarizer" in state:
        binarizer = estimator._label_binarizer
        meta["labels"] = {"y_type": binarizer.y_type_,
                          "classes": _plain(binarizer.classes_, "classes_")}
    if extra is not None:
        if not isinstance(extra, dict) or not all(isinstance(key, str) for key in extra):
            raise TypeError("extra must be a dict with string keys")
        meta["extra"] = _plain(extra, "extra")
    return meta


def _plain(value, what):
    """`value` as JSON types (numpy scalars and arrays included); TypeError names `what` when it
    holds anything else, before any file is touched."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, np.ndarray):
        return [_plain(v, what) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _plain(v, what) for key, v in value.items()}
    raise TypeError(f"cannot save {what}: {type(value).__name__} values are not representable "
                    "in a model file")


# ----------------------------------------------------------------------------------------- load
def load(path: str | os.PathLike[str], *, max_params: int = MAX_PARAMS) -> BaseEstimator:
    """Read a model written by ``save``.

    Parameters
    ----------
    path : str or os.PathLike
        A regular file (devices, FIFOs and directories are refused without being read).
    max_params : int, default=100_000_000
        Refuse networks with more parameters than this (before allocating them). Raise it
        explicitly for larger models from sources you trust.

    Returns
    -------
    estimator : MLPClassifier or MLPRegressor

    Raises
    ------
    ModelFileError
        For anything that is not a consistent fastmlp model file of a readable version.
    OSError
        When the file cannot be opened (FileNotFoundError, PermissionError).
    """
    estimator, extra = load_with_extra(path, max_params=max_params)
    if "preprocessing" in extra:
        warnings.warn(f"{os.fspath(path)} holds column preprocessing (written by 'fastmlp "
                      "train'): the network returned by fastmlp.load expects preprocessed "
                      "features. fastmlp.persistence.load_with_preprocessing returns both.",
                      UserWarning, stacklevel=2)
    return estimator


def load_with_preprocessing(path: str | os.PathLike[str], *, max_params: int = MAX_PARAMS
                            ) -> tuple[BaseEstimator, TabularPreprocessor | None]:
    """``(estimator, preprocessing)``: `load`, plus the column preprocessing stored by ``save``
    (a ``fastmlp.preprocessing.TabularPreprocessor``), or None when the file holds none."""
    from .preprocessing import TabularPreprocessor

    estimator, extra = load_with_extra(path, max_params=max_params)
    if "preprocessing" not in extra:
        return estimator, None
    name = os.fspath(path)
    try:
        preprocessing = TabularPreprocessor.from_dict(extra["preprocessing"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: its preprocessing is not valid ({_line(exc)})") from exc
    if preprocessing.n_features_out_ != estimator.n_features_in_:
        raise ModelFileError(f"{name}: the preprocessing makes {preprocessing.n_features_out_} "
                             f"features, the network takes {estimator.n_features_in_}")
    return estimator, preprocessing


def load_with_extra(path: str | os.PathLike[str], *, max_params: int = MAX_PARAMS
                    ) -> tuple[BaseEstimator, dict[str, Any]]:
    """``(estimator, extra)``: `load`, plus the ``extra`` dict stored by ``save`` (empty if none).

    The values of `extra` are plain JSON within the metadata's limits; their meaning is for the
    caller that stored them to check.
    """
    if isinstance(max_params, bool) or not isinstance(max_params, Integral):
        raise TypeError(f"max_params must be an integer, got {type(max_params).__name__}")
    if max_params < 1:
        raise ValueError(f"max_params must be at least 1, got {max_params}")
    name = os.fspath(path)
    try:
        with _open_regular_file(name) as file:
            meta, params = _read_archive(file, int(max_params))
        return _assemble(meta, params, max_params=int(max_params))
    except ModelFileError as exc:
        raise ModelFileError(f"{name}: {exc}") from exc.__cause__


def _open_regular_file(name):
    # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it (no race with
    # a file swapped in between a stat and an open).
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelFileError("not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return _BoundedFile(fd, info.st_size)
    except BaseException:
        os.close(fd)
        raise


class _BoundedFile(io.FileIO):
    """A file that refuses any single read larger than `limit` (while the zip directory, which
    the file itself sizes, is parsed)."""

    def __init__(self, fd, size):
        super().__init__(fd, "rb", closefd=True)
        self.size = size
        self.limit = None

    def read(self, size=-1):
        wanted = self.size - self.tell() if size is None or size < 0 else size
        if self.limit is not None and wanted > self.limit:
            raise ModelFileError("the zip directory is implausibly large")
        return super().read(size)


def _read_archive(file, max_params):
    """(metadata dict, parameter array) from an open model file, every bound checked."""
    try:
        file.limit = _MAX_OPENING_READ
        with zipfile.ZipFile(file) as archive:
            file.limit = None
            _check_members(archive, file.size)
            meta = _read_metadata(archive)
            units, n_params = _network(meta, max_params)
            params = _read_params(archive, n_params, np.dtype(meta["dtype"]))
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, zlib.error, ValueError,
            struct.error, NotImplementedError, RuntimeError) as exc:
        raise ModelFileError(f"not a readable fastmlp model file ({_line(exc)})") from exc
    return meta, params


def _check_members(archive, file_size):
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if sorted(names) != sorted(_MEMBERS):
        duplicated = sorted({n for n in names if names.count(n) > 1}) if len(names) < 10 else []
        if duplicated:
            raise ModelFileError(f"archive member {short_repr(duplicated[0])} appears twice")
        shown = ", ".join(short_repr(n, 30) for n in names[:3]) + \
            (", ..." if len(names) > 3 else "")
        raise ModelFileError(f"unexpected archive members ({len(names)}: {shown}); a model file "
                             "holds metadata.json and params.npy")
    for info in infos:
        if info.flag_bits & 0x1:
            raise ModelFileError(f"archive member {info.filename} is encrypted")
        if info.flag_bits & ~_ALLOWED_FLAGS:
            raise ModelFileError(f"archive member {info.filename} uses unsupported zip features "
                                 f"(flags {info.flag_bits:#x})")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ModelFileError(f"archive member {info.filename} uses unsupported compression "
                                 f"(method {info.compress_type})")
        if info.header_offset + info.compress_size > file_size:
            raise ModelFileError(f"archive member {info.filename} declares more data than the "
                                 "file holds")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise ModelFileError(f"archive member {info.filename} declares inconsistent sizes")


def _read_metadata(archive):
    info = archive.getinfo("metadata.json")
    if info.file_size > MAX_METADATA_BYTES:
        raise ModelFileError(f"metadata.json is larger than {MAX_METADATA_BYTES // 2**20} MiB")
    with archive.open(info) as member:
        # Asking for the declared size bounds what deflate may produce in one step, too.
        raw = member.read(info.file_size)
    return _parse_json(raw)


def _parse_json(raw):
    """The metadata object, after bounds on what json may build that json itself lacks."""
    _measure_json(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError("metadata.json is not UTF-8 text") from None
    try:
        meta = json.loads(text, object_pairs_hook=_no_repeated_keys)
    except ModelFileError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"metadata.json is not valid JSON ({_line(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError("this is not a fastmlp model file")
    version = meta.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ModelFileError(
            f"model file format version {short_repr(version)} (written by fastmlp "
            f"{short_repr(meta.get('fastmlp_version'))}) is not supported by this fastmlp, which "
            f"reads versions {' and '.join(map(str, READABLE_VERSIONS))}")
    for key, kind in _REQUIRED_KEYS.items():
        if not isinstance(meta.get(key), kind):
            raise ModelFileError(f"metadata field {key!r} is missing or malformed")
    unknown = set(meta) - set(_REQUIRED_KEYS) - _OPTIONAL_KEYS[version]
    if unknown:
        raise ModelFileError(f"unknown metadata field {short_repr(sorted(unknown)[0])}")
    return meta


def _measure_json(raw):
    """Refuse JSON text whose parse would nest, count or allocate beyond the metadata's bounds.

    One pass over the bytes, a piece at a time, whatever they hold: no pattern matching that
    could backtrack, nothing allocated per token. Strings are found by their unescaped quotes (a
    quote after an odd run of backslashes is escaped; outside strings a backslash is invalid, and
    json stops there), and everything else is counted outside them. The memory estimate
    overstates what json builds: every comma, colon and bracket counts as a value, every bracket
    as a container, and the text and its strings take the widest character the text uses.
    """
    data = np.frombuffer(raw, np.uint8)
    in_string, backslashes, number, depth, deepest, widest = 0, 0, 0, 0, 0, 0
    n_strings = n_containers = n_commas = n_members = n_outside = 0
    for start in range(0, data.size, _SCAN_CHUNK):
        piece = data[start:start + _SCAN_CHUNK]
        widest = max(widest, int(piece.max()))
        # before[i]: the length of the run of backslashes just before byte i.
        index = np.arange(piece.size, dtype=np.int32)
        last_other = np.maximum.accumulate(np.where(piece == 92, np.int32(-1), index))
        before = np.empty(piece.size, np.int32)
        before[0] = backslashes
        before[1:] = index[:-1] - last_other[:-1]
        before[1:][last_other[:-1] < 0] += backslashes  # a run that began in an earlier piece
        backslashes = int(before[-1] + 1 if piece[-1] == 92 else 0)
        quotes = (piece == 34) & (before % 2 == 0)
        inside = (np.cumsum(quotes, dtype=np.int32) + in_string) % 2 == 1
        n_strings += int(np.count_nonzero(quotes & inside))
        in_string = int(inside[-1])
        outside = piece[~inside & ~quotes]
        n_outside += outside.size
        opening = (outside == 91) | (outside == 123)
        closing = (outside == 93) | (outside == 125)
        n_containers += int(np.count_nonzero(opening))
        n_commas += int(np.count_nonzero(outside == 44))
        n_members += int(np.count_nonzero(outside == 58))
        steps = opening[opening | closing].astype(np.int32) * 2 - 1
        if steps.size:
            levels = np.cumsum(steps) + depth
            if levels.min() < 0:  # a bracket closes what was never opened: json stops there
                raise ModelFileError("metadata.json is not valid JSON (unbalanced brackets)")
            deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
        if deepest > MAX_JSON_DEPTH:
            raise ModelFileError(f"metadata.json is nested deeper than {MAX_JSON_DEPTH} levels")
        others = np.flatnonzero(~_NUMBER_BYTES[outside])  # numbers are the runs between these
        if others.size == 0:
            number += outside.size
            longest = number
        else:
            runs = np.diff(others) - 1
            longest = max(number + int(others[0]), int(runs.max()) if runs.size else 0)
            number = outside.size - 1 - int(others[-1])  # the run still open at the piece's end
        if max(longest, number) > MAX_NUMBER_CHARS:
            raise ModelFileError(f"metadata.json holds a number longer than {MAX_NUMBER_CHARS} "
                                 "characters")
        if n_containers > MAX_JSON_CONTAINERS:
            raise ModelFileError(f"metadata.json holds more than {MAX_JSON_CONTAINERS} arrays "
                                 "and objects")
        if n_commas + n_members + n_containers > MAX_JSON_VALUES:
            raise ModelFileError(f"metadata.json holds more than {MAX_JSON_VALUES} values")
    width = 4 if widest >= 0xF0 else 2 if widest >= 0xC4 else 1  # UTF-8 lead bytes
    # Bytes per item, rounded up from CPython's sizes: a list slot and a float; an object member
    # (its pair while parsing, its key and its dict entry); a string's header; a small dict.
    memory = (width * (2 * data.size - n_outside) + 56 * n_strings + 200 * n_containers +
              40 * (n_commas + n_containers + 1) + 250 * n_members)
    if memory > MAX_METADATA_MEMORY:
        raise ModelFileError(f"metadata.json would take about {memory // 2**20} MiB of memory "
                             f"to read, more than the {MAX_METADATA_MEMORY // 2**20} MiB a model "
                             "file may use")


def _no_repeated_keys(pairs):
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ModelFileError("metadata.json repeats a key")
    return result


def _network(meta, max_params):
    """(layer_units, n_params) from checked metadata; refuses networks above `max_params`."""
    if meta["estimator"] not in fitted_state.ESTIMATORS:
        raise ModelFileError(f"unknown estimator {short_repr(meta['estimator'])}")
    if meta["dtype"] not in ("float32", "float64"):
        raise ModelFileError(f"unsupported dtype {short_repr(meta['dtype'])}")
    units = meta["layer_units"]
    if not 2 <= len(units) <= MAX_LAYERS + 2 or not all(type(u) is int and u > 0 for u in units):
        raise ModelFileError(f"layer_units {short_repr(units)} do not describe a network")
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    if max_params is not None and n_params > max_params:
        raise ModelFileError(f"the network has {n_params} parameters, more than "
                             f"max_params={max_params}; pass a larger max_params to load it")
    return units, n_params


def _read_params(archive, n_params, dtype):
    info = archive.getinfo("params.npy")
    n_bytes = n_params * dtype.itemsize
    if not n_bytes < info.file_size <= n_bytes + _MAX_NPY_HEADER:
        raise ModelFileError(f"params.npy's size ({info.file_size} bytes) does not match the "
                             f"declared network ({n_params} {dtype} parameters)")
    if info.file_size > MAX_EXPANSION * info.compress_size + _EXPANSION_ALLOWANCE:
        raise ModelFileError(f"params.npy would expand more than {MAX_EXPANSION} times")
    with archive.open(info) as member:
        head = member.read(_MAX_NPY_HEADER)
        header = io.BytesIO(head)  # the header is parsed from these bytes only
        try:
            version = np.lib.format.read_magic(header)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ModelFileError(f"params.npy has unsupported .npy version {version}")
            shape, _, stored = read_header(header)
        except ValueError as exc:
            raise ModelFileError(f"params.npy is not a readable .npy array ({_line(exc)})") \
                from None
        if shape != (n_params,) or stored != dtype:
            raise ModelFileError(f"params.npy holds {str(stored)[:40]}"
                                 f"{short_repr(list(shape), 30)}, the network needs "
                                 f"{dtype}[{n_params}]")
        if info.file_size != header.tell() + n_bytes:
            raise ModelFileError("params.npy is truncated or has trailing data")
        params = np.empty(n_params, dtype)
        view = memoryview(params).cast("B")
        first = head[header.tell():]
        view[:len(first)] = first
        done = len(first)
        while done < n_bytes:
            chunk = member.read(min(_CHUNK, n_bytes - done))
            if not chunk:
                raise ModelFileError("params.npy is truncated")
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
    return params


def _assemble(meta, params, max_params, cls=None):
    """(estimator, extra) from checked metadata and parameters, applying fit's rules; `cls`, a
    subclass of the estimator class named in the metadata, is built instead when given."""
    registered = fitted_state.ESTIMATORS.get(meta["estimator"])
    if registered is None:
        raise ModelFileError(f"unknown estimator {short_repr(meta['estimator'])}")
    cls = registered if cls is None else cls
    units, n_params = _network(meta, max_params)
    if params.dtype.name != meta["dtype"] or params.shape != (n_params,):
        raise ModelFileError(f"parameters are {params.dtype}{list(params.shape)}, the metadata "
                             f"declares {meta['dtype']}[{n_params}]")
    if not np.isfinite(params).all():
        raise ModelFileError("params.npy contains non-finite values")
    init_params = _init_params(meta["params"])
    attributes = {}
    for name, value in meta["attributes"].items():
        if name not in FITTED:
            raise ModelFileError(f"unknown attributes such as {short_repr(name)}")
        try:
            attributes[name] = FITTED[name].check(value)
        except ValueError as exc:
            raise ModelFileError(f"attribute {name} {exc}") from None
    labels = meta.get("labels")
    binarizer = None
    if issubclass(cls, ClassifierMixin):
        if not isinstance(labels, dict) or set(labels) != {"y_type", "classes"}:
            raise ModelFileError("classifier without class labels")
        try:
            binarizer = fitted_state.label_binarizer(labels["y_type"], labels["classes"],
                                                     units[-1])
        except ValueError as exc:
            raise ModelFileError(_line(exc)) from None
    elif labels is not None:
        raise ModelFileError("a regressor's file holds class labels")
    try:
        estimator = fitted_state.rebuild(cls, init_params, attributes, units, params, binarizer)
        estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"invalid estimator parameters ({_line(exc)})") from None
    try:
        fitted_state.check_consistency(estimator)
    except ValueError as exc:
        raise ModelFileError(_line(exc)) from None
    extra = meta.get("extra", {})
    if not isinstance(extra, dict):
        raise ModelFileError("metadata field 'extra' is not an object")
    return estimator, extra


def _init_params(stored):
    """Constructor parameters from their JSON form; what fit would refuse is refused here."""
    params = dict(stored)
    if params.get("callbacks") is not None:
        raise ModelFileError("callbacks are never loaded from a file (the file names some)")
    random_state = params.get("random_state")
    if random_state is not None and type(random_state) is not int:
        raise ModelFileError("random_state must be an integer or null")
    if isinstance(params.get("hidden_layer_sizes"), list):  # JSON has no tuples
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
    class_weight = params.get("class_weight")
    if isinstance(class_weight, dict):
        items = class_weight.get("items")
        if set(class_weight) != {"items"} or not isinstance(items, list) or not all(
                isinstance(pair, list) and len(pair) == 2 for pair in items):
            raise ModelFileError("malformed class_weight")
        weights = {}
        for label, weight in items:
            # Integers beyond int64 cannot be class labels, and would let a file choose labels
            # whose hashes collide (each insertion then costs as much as all the earlier ones).
            if not isinstance(label, (str, int, float)) or label in weights or (
                    isinstance(label, int) and not -2**63 <= label < 2**63):
                raise ModelFileError("class_weight labels must be distinct strings or numbers "
                                     "(integers of 64 bits)")
            if isinstance(weight, bool) or not isinstance(weight, Real) or \
                    not math.isfinite(weight):
                raise ModelFileError("class_weight values must be finite numbers")
            weights[label] = weight
        params["class_weight"] = weights
    return params


# ------------------------------------------------------------------ state for data formats
# skops.io (and any format that stores an object's __getstate__ as data) gets an estimator's
# state as plain values: numbers, strings, lists, dicts, numpy arrays, and scikit-learn's own
# parameter types. __setstate__ hands that state to `restore_state`, which applies the loader's
# rules before anything compiled can run on it. pickle and copy do not come here (see the
# estimators' __reduce_ex__).
_PRIVATE_STATE = ("_layout", "_params", "_best_params", "_optimizer", "_no_improvement_count",
                  "_label_binarizer")
_INITIAL_WEIGHTS = ("_initial_coefs", "_initial_intercepts")  # assigned before the first fit


def data_state(estimator):
    """The estimator's state as plain data for ``__getstate__``: no callbacks (code, not data:
    they are never written), the layout as its layer sizes, the optimizer as its named buffers
    and counters, the labels as their type and classes."""
    state = dict(vars(estimator))
    state["callbacks"] = None
    for name in _INITIAL_WEIGHTS:  # assigned by hand before the first fit, perhaps as lists
        if name in state:
            state[name] = [np.asarray(array) for array in state[name]]
    if "_layout" in state:
        state["_layout"] = list(state["_layout"].layer_units)
    optimizer = state.get("_optimizer")
    if optimizer is not None:
        state["_optimizer"] = {"slots": dict(optimizer.slots()),
                               "counters": dict(optimizer.counters()),
                               "learning_rate": getattr(optimizer, "learning_rate", None)}
    binarizer = state.pop("_label_binarizer", None)
    state.pop("classes_", None)  # the binarizer's classes, rebuilt with it
    if binarizer is not None:
        state["_label_binarizer"] = {"y_type": binarizer.y_type_, "classes": binarizer.classes_}
    return state


def restore_state(estimator, state):
    """Fill a new, empty `estimator` from `data_state`'s form, after the rules `load` applies
    (parameters as fit would accept them, the fitted attributes consistent with each other and
    with the network, optimizer buffers the network's size); ModelFileError names the first
    problem, and the estimator is left empty."""
    try:
        restored = _restored(type(estimator), state)
    except ModelFileError as exc:
        raise ModelFileError(f"cannot restore {type(estimator).__name__}: {exc}") from None
    vars(estimator).clear()
    vars(estimator).update(restored)


def _restored(cls, state):
    """The instance dictionary `restore_state` installs."""
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise ModelFileError("the state is not a dict with string keys")
    names = cls._get_param_names()
    signature = inspect.signature(cls.__init__).parameters
    # A parameter the state lacks (one added to fastmlp since) takes its default, as in `load`.
    params = {name: state[name] if name in state else signature[name].default for name in names}
    missing = [name for name, value in params.items() if value is inspect.Parameter.empty]
    if missing:
        raise ModelFileError(f"parameter {missing[0]} is missing")
    if params["callbacks"] is not None:
        raise ModelFileError("callbacks are never loaded from a file (the state names some)")
    fitted = "_params" in state
    allowed = set(names) | ({*FITTED, *_PRIVATE_STATE} if fitted else set(_INITIAL_WEIGHTS))
    unknown = sorted(set(state) - allowed)
    if unknown:
        raise ModelFileError(f"unknown attribute {short_repr(unknown[0])}"
                             f"{'' if fitted else ' (the estimator is not fitted)'}")
    if not fitted:
        for name in _INITIAL_WEIGHTS:
            if name in state:
                _check_arrays(state[name], name)
        return {**state, **params}
    registered = next((c for c in cls.__mro__ if fitted_state.ESTIMATORS.get(c.__name__) is c),
                      None)
    if registered is None:
        raise ModelFileError(f"{cls.__name__} is not a fastmlp estimator")
    flat = _flat_array(state["_params"], "_params")
    try:
        meta = {"estimator": registered.__name__, "dtype": flat.dtype.name,
                "layer_units": state.get("_layout"),
                "params": _json_params(params),
                "attributes": {name: _plain(state[name], f"attribute {name}") for name in FITTED
                               if name in state}}
        labels = state.get("_label_binarizer")
        if labels is not None:
            meta["labels"] = _plain(labels, "_label_binarizer")
    except TypeError as exc:
        raise ModelFileError(_line(exc)) from None
    except RecursionError:
        raise ModelFileError("a parameter or attribute is nested too deeply") from None
    if not isinstance(meta["layer_units"], list):
        raise ModelFileError("_layout must be the list of layer sizes")
    if labels is not None and not isinstance(meta["labels"], dict):
        raise ModelFileError("_label_binarizer must be a dict of y_type and classes")
    estimator, _ = _assemble(meta, flat, max_params=None, cls=cls)
    random_state = params["random_state"]
    if type(random_state) is np.random.RandomState:  # data, though JSON cannot hold it
        estimator.random_state = random_state
    best = state.get("_best_params")
    estimator._best_params = None if best is None else _flat_array(best, "_best_params", flat)
    count = state.get("_no_improvement_count", 0)
    if type(count) is not int or count < 0:
        raise ModelFileError("_no_improvement_count must be a non-negative integer")
    estimator._no_improvement_count = count
    estimator._optimizer = _restored_optimizer(estimator, state.get("_optimizer"))
    return vars(estimator)


def _flat_array(value, name, like=None):
    """A writable, contiguous float32/float64 vector (of `like`'s dtype and length if given)."""
    if type(value) is not np.ndarray or value.ndim != 1 or \
            value.dtype.name not in ("float32", "float64"):
        raise ModelFileError(f"{name} must be a one-dimensional float32 or float64 array")
    if like is not None and (value.dtype != like.dtype or value.shape != like.shape):
        raise ModelFileError(f"{name} is {value.dtype}[{value.size}], the parameters are "
                             f"{like.dtype}[{like.size}]")
    if not np.isfinite(value).all():
        raise ModelFileError(f"{name} contains non-finite values")
    return np.require(value, requirements=["C", "W", "O"])


def _check_arrays(value, name):
    if not isinstance(value, list) or len(value) > MAX_LAYERS + 1 or not all(
            type(a) is np.ndarray and a.dtype.kind in "fiu" for a in value):
        raise ModelFileError(f"{name} must be a list of numeric arrays")


def _restored_optimizer(estimator, stored):
    """The optimizer a mini-batch estimator resumes with, its buffers and counters checked
    against the solver and the network; None starts a fresh one at the next epoch."""
    if stored is None or estimator.solver not in fitted_state.MINI_BATCH_SOLVERS:
        return None
    optimizer = make_optimizer(estimator, estimator._params.size, estimator._params.dtype)
    if not isinstance(stored, dict) or set(stored) != {"slots", "counters", "learning_rate"}:
        raise ModelFileError("_optimizer must hold slots, counters and learning_rate")
    slots, counters = stored["slots"], stored["counters"]
    if isinstance(slots, dict) and not set(slots) & set(optimizer.slots()):
        # Written by a version that named a buffer differently (Adagrad's and RMSprop's "m").
        slots = {optimizer.renamed_slots.get(name, name): value for name, value in slots.items()}
    if not isinstance(slots, dict) or set(slots) != set(optimizer.slots()):
        held = sorted(map(str, slots)) if isinstance(slots, dict) else slots
        raise ModelFileError(f"solver={estimator.solver!r} keeps the optimizer buffers "
                             f"{sorted(optimizer.slots())}, the state holds {short_repr(held)}")
    for name, buffer in optimizer.slots().items():
        buffer[...] = _flat_array(slots[name], f"optimizer buffer {name}", estimator._params)
    if not isinstance(counters, dict) or set(counters) != set(optimizer.counters()):
        raise ModelFileError(f"solver={estimator.solver!r} counts "
                             f"{sorted(optimizer.counters())}, the state holds "
                             f"{short_repr(counters)}")
    for name, value in counters.items():
        if type(value) is not int or not 0 <= value < 2**62:
            raise ModelFileError(f"optimizer counter {name} must be a non-negative integer")
        setattr(optimizer, name, value)
    rate = stored["learning_rate"]
    if hasattr(optimizer, "learning_rate"):
        if isinstance(rate, bool) or not isinstance(rate, Real) or not 0 < rate < math.inf:
            raise ModelFileError("the optimizer's learning_rate must be a positive number")
        optimizer.learning_rate = float(rate)
    elif rate is not None:
        raise ModelFileError(f"solver={estimator.solver!r} keeps no learning_rate")
    return optimizer


def _line(exc):
    """The first line of an exception's message, cut short: messages stay one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
