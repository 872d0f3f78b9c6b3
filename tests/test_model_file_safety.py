"""Model files that cannot hurt: saves that never destroy an earlier file, loads that read nothing
unbounded, and a fuzz test over mutated archives (load returns a working model or raises
ModelFileError, within a time and memory bound)."""

import io
import json
import os
import stat
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_iris

import fastmlp
from fastmlp import MLPClassifier, ModelFileError, persistence
from fastmlp.fitted_state import FITTED

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
X, y = load_iris(return_X_y=True)


@pytest.fixture(scope="module")
def model():
    return MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, random_state=0).fit(X, y)


def _leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# ----------------------------------------------------------------------------- atomic saves
def test_a_save_that_fails_while_writing_leaves_the_earlier_file(model, tmp_path, monkeypatch):
    path = tmp_path / "m.fmlp"
    model.save(path)
    before = path.read_bytes()

    def disk_full(fp, array, **kwargs):
        fp.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, {"m.fmlp"}) == []  # the temporary file is removed


def test_what_cannot_be_saved_is_refused_before_the_first_byte(model, tmp_path):
    path = tmp_path / "m.fmlp"
    model.save(path)
    before = path.read_bytes()
    # fit refuses a class weight that is no real number; set after the fit, save must refuse it
    odd = MLPClassifier(hidden_layer_sizes=(3,), max_iter=3, random_state=0).fit(X, y)
    odd.set_params(class_weight={0: Decimal("0.5")})
    with pytest.raises(TypeError, match="cannot save parameter class_weight: Decimal"):
        odd.save(path)
    assert path.read_bytes() == before and _leftovers(tmp_path, {"m.fmlp"}) == []
    odd._params[0] = np.nan  # a model the loader would refuse is never written
    odd.set_params(class_weight=None)
    with pytest.raises(ValueError, match="cannot save this model: .*non-finite"):
        odd.save(path)
    assert path.read_bytes() == before and _leftovers(tmp_path, {"m.fmlp"}) == []


def test_a_fraction_class_weight_is_saved_as_a_number(tmp_path):
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0,
                        class_weight={0: Fraction(1, 2)}).fit(X, y)
    clf.save(tmp_path / "m.fmlp")
    assert fastmlp.load(tmp_path / "m.fmlp").class_weight == {0: 0.5}


_CHILD = r"""
import sys, time
import numpy as np
import fastmlp

model = fastmlp.load(sys.argv[1])
model._params += 1.0

def stalled_write(fp, array, **kwargs):  # write part of the parameters, then hang mid-save
    fp.write(b"\x93NUMPY" + array.tobytes()[:64])
    print("writing", flush=True)
    time.sleep(60)

np.lib.format.write_array = stalled_write
model.save(sys.argv[1])
"""


def test_a_save_killed_midway_leaves_the_earlier_file(model, tmp_path):
    path = tmp_path / "m.fmlp"
    model.save(path)
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE,
                             env=env, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        assert [n for n in _leftovers(tmp_path, {"m.fmlp"}) if n.startswith(".m.fmlp.")]
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait(timeout=30)
    assert path.read_bytes() == before
    np.testing.assert_array_equal(fastmlp.load(path)._params, model._params)
    # What a killed save leaves: one hidden temporary file, never the target itself.
    leftovers = _leftovers(tmp_path, {"m.fmlp"})
    assert len(leftovers) == 1 and leftovers[0].startswith(".m.fmlp.")
    assert leftovers[0].endswith(".tmp")


def test_save_keeps_the_mode_and_writes_through_a_symlink(model, tmp_path):
    real = tmp_path / "real.fmlp"
    model.save(real)
    os.chmod(real, 0o640)
    link = tmp_path / "link.fmlp"
    link.symlink_to(real)
    model.save(link)
    assert link.is_symlink() and stat.S_IMODE(real.stat().st_mode) == 0o640
    assert fastmlp.load(link).get_params() == model.get_params()
    with pytest.raises(IsADirectoryError):
        model.save(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo needs a POSIX system")
def test_save_refuses_a_target_that_is_not_a_regular_file(model, tmp_path):
    # A rename over a FIFO or a device node would replace it with the model file (it replaced
    # /dev/full once): refused before any byte is written, the node and the folder unchanged.
    fifo = tmp_path / "pipe.fmlp"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        model.save(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        persistence.save(model, fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe.fmlp"]
    link = tmp_path / "link.fmlp"
    link.symlink_to(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        model.save(link)
    assert link.is_symlink() and stat.S_ISFIFO(os.stat(fifo).st_mode)


# ----------------------------------------------------------------------------- bounded reads
def _finishes(function, seconds=10):
    """Run `function` in a thread: a load that blocks must fail the test, not hang it."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: B036 - handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "load blocked"
    return outcome


def test_only_regular_files_are_read(tmp_path):
    fifo = tmp_path / "pipe.fmlp"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.fmlp"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero, tmp_path):
        outcome = _finishes(lambda p=path: fastmlp.load(p))
        assert isinstance(outcome.get("error"), ModelFileError), outcome
        assert str(outcome["error"]) == f"{path}: not a regular file"


def _archive(members, compression=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _members(model, tmp_path):
    model.save(tmp_path / "base.fmlp")
    with zipfile.ZipFile(tmp_path / "base.fmlp") as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _patch_central_directory(data, name, offset, fmt, value):
    """Overwrite one field of `name`'s central directory entry (offsets from the zip spec)."""
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(name)] != name.encode():
        entry = data.index(b"PK\x01\x02", entry + 4)
    data = bytearray(data)
    struct.pack_into(fmt, data, entry + offset, value)
    return bytes(data)


def _bounded_load(path, **kwargs):
    """ModelFileError's message, after checking the load took < 2 s and < 20 MB."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelFileError) as info:
            fastmlp.load(path, **kwargs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 20 * 2**20
    message = str(info.value)
    assert "\n" not in message and len(message) < 300 + len(str(path))
    return message


def test_a_metadata_bomb_is_refused_unread(model, tmp_path):
    members = _members(model, tmp_path)
    path = tmp_path / "bomb.fmlp"
    big = b" " * (32 * 2**20) + members["metadata.json"]  # 32 MiB that deflate to 32 KiB
    path.write_bytes(_archive([("metadata.json", big), ("params.npy", members["params.npy"])]))
    assert "metadata.json is larger than 16 MiB" in _bounded_load(path)
    # The same bomb declaring a small size: only the declared bytes are inflated.
    data = _patch_central_directory(path.read_bytes(), "metadata.json", 24, "<I", 1900)
    path.write_bytes(data)
    _bounded_load(path)


def test_a_parameter_bomb_is_refused_unread(model, tmp_path):
    members = _members(model, tmp_path)
    meta = json.loads(members["metadata.json"])
    width = 134_217_000
    meta["layer_units"] = [4, 3, width]
    n_params = 4 * 3 + 3 + 3 * width + width  # about 537 million
    path = tmp_path / "bomb.fmlp"
    path.write_bytes(_archive([("metadata.json", json.dumps(meta)),
                               ("params.npy", members["params.npy"])]))
    assert f"{n_params} parameters, more than max_params" in _bounded_load(path)
    # Declared as 2 GB of float32 deflated into a few bytes: refused by the expansion ratio.
    data = _patch_central_directory(path.read_bytes(), "params.npy", 24, "<I",
                                    n_params * 4 + 128)
    path.write_bytes(data)
    assert "params.npy would expand more than 32 times" in _bounded_load(path, max_params=2**30)
    meta["layer_units"] = [4, 3, 3]
    zeros = io.BytesIO()
    np.save(zeros, np.zeros(2**22, np.float32))
    path.write_bytes(_archive([("metadata.json", json.dumps(meta)),
                               ("params.npy", zeros.getvalue())]))
    data = _patch_central_directory(path.read_bytes(), "params.npy", 24, "<I",
                                    27 * 4 + 128)  # as if it held the 27 parameters
    path.write_bytes(data)
    _bounded_load(path)


@pytest.mark.parametrize("offset, fmt, value, message", [
    (8, "<H", 0x1, "is encrypted"),
    (8, "<H", 0x20, "unsupported zip features"),
    (10, "<H", 99, "unsupported compression"),
    (20, "<I", 2**31, "declares more data than the file holds"),
])
def test_archive_entries_must_be_plain(model, tmp_path, offset, fmt, value, message):
    members = _members(model, tmp_path)
    data = _archive(list(members.items()))
    path = tmp_path / "m.fmlp"
    path.write_bytes(_patch_central_directory(data, "params.npy", offset, fmt, value))
    assert message in _bounded_load(path)


def test_members_are_exactly_the_two_each_once(model, tmp_path):
    members = _members(model, tmp_path)
    path = tmp_path / "m.fmlp"
    with pytest.warns(UserWarning, match="Duplicate name"):
        path.write_bytes(_archive([("metadata.json", b"{}")] + list(members.items())))
    assert "archive member 'metadata.json' appears twice" in _bounded_load(path)
    many = [(f"payload_{i:05d}.bin", b"") for i in range(3000)]
    path.write_bytes(_archive(list(members.items()) + many))
    message = _bounded_load(path)
    assert "unexpected archive members (3002: " in message and len(message) < 400
    # A zip directory bigger than any model file's (long names here) is not even parsed.
    path.write_bytes(_archive([("n" * 60_000 + str(i), b"") for i in range(20)]))
    assert "zip directory is implausibly large" in _bounded_load(path)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
    ('{"format": 1%s}' % ("0" * 5000), "number longer than 40 characters"),
    ('{"format": "fastmlp-model", "format": "x"}', "repeats a key"),
    ("\xff\xfe", "not UTF-8"),
    ("{", "not valid JSON"),
])
def test_hostile_json_is_refused_with_model_file_error(model, tmp_path, text, message):
    members = _members(model, tmp_path)
    path = tmp_path / "m.fmlp"
    raw = text.encode("latin-1") if text.startswith("\xff") else text.encode()
    path.write_bytes(_archive([("metadata.json", raw), ("params.npy", members["params.npy"])]))
    assert message in _bounded_load(path)


def _with_metadata(model, tmp_path, text):
    """A model file whose metadata.json is `text` (deflated, as save writes it)."""
    members = _members(model, tmp_path)
    path = tmp_path / "m.fmlp"
    path.write_bytes(_archive([("metadata.json", text), ("params.npy", members["params.npy"])]))
    return path


def _refused_within(path, seconds=5, megabytes=48):
    """ModelFileError's message, after checking the load's time and traced memory peak."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelFileError) as info:
            fastmlp.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert elapsed < seconds and peak < megabytes * 2**20, (elapsed, peak)
    return str(info.value)


# Metadata texts of about 1 MB that once took minutes to refuse: scanning for strings restarted
# at every quote (time grew with the square of the text).
@pytest.mark.parametrize("text", [
    b'\\"' * 500_000,  # escaped quotes and no string at all
    b'["' + b'\\"' * 500_000 + b']',  # a string that never ends
    b'\\' * 1_000_000 + b'"',
    b'["\\\\' + b'\\"' * 500_000,
    b'"' + b'\\\\\\"' * 250_000,
], ids=["escaped-quotes", "unterminated", "backslashes", "escaped-backslash", "mixed"])
def test_pathological_json_text_is_refused_in_linear_time(model, tmp_path, text):
    _refused_within(_with_metadata(model, tmp_path, text), megabytes=20)


# Metadata that deflates to a few kilobytes and would make json build hundreds of megabytes.
@pytest.mark.parametrize("text, message", [
    (b"[" + b"[]," * 5_500_000 + b"[]]", "more than 262144 arrays and objects"),
    (b"[" + b"1.5," * 4_000_000 + b"1]", "more than 2097152 values"),
    (b"[" + b'"ab",' * 3_000_000 + b'""]', "more than 2097152 values"),
    (b"[" + b"1234567," * 2_000_000 + b"1]", "MiB of memory to read"),
    (b"{" + b",".join(b'"%d":1' % i for i in range(400_000)) + b"}", "MiB of memory to read"),
    ('["\U0001F600'.encode() + b"x" * 16_000_000 + b'"]', "MiB of memory to read"),
    (b"[" * 1_000_000 + b"]" * 1_000_000, "nested deeper than 32 levels"),
    (b"]" * 1_000_000, "unbalanced brackets"),
], ids=["empty-arrays", "floats", "strings", "integers", "keys", "wide-text", "deep", "closing"])
def test_wide_and_deep_json_is_refused_before_it_is_built(model, tmp_path, text, message):
    assert message in _refused_within(_with_metadata(model, tmp_path, text))


def test_a_preprocessing_bomb_is_refused_before_it_is_built(model, tmp_path):
    """A text column's categories become one fixed-width array: 20,000 short categories and one
    of 20,000 characters (200 KB of JSON) would take 1.5 GB. ``fastmlp predict`` reads it."""
    from fastmlp import persistence

    categories = sorted([f"{i:05d}" for i in range(20_000)] + ["z" * 20_000])
    preprocessing = {"by_name": True, "columns": [
        {"name": "a", "kind": "text", "fill": "00000", "categories": categories}]}
    path = tmp_path / "m.fmlp"
    persistence.save(model, path, extra={"preprocessing": preprocessing})
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ModelFileError, match="categories would take 1525 MiB as arrays"):
            persistence.load_with_preprocessing(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 20 * 2**20


def _labels_file(model, tmp_path, y_type, classes):
    """A model file of a 1-1-len(classes) network with these labels (its zero weights deflate
    to almost nothing)."""
    members = _members(model, tmp_path)
    meta = json.loads(members["metadata.json"])
    units = [1, 1, len(classes)]
    meta.update(layer_units=units, labels={"y_type": y_type, "classes": classes})
    meta["params"]["hidden_layer_sizes"] = [1]
    meta["attributes"].update(n_features_in_=1, n_outputs_=len(classes))
    meta["attributes"].pop("feature_names_in_", None)
    if y_type == "multilabel-indicator":
        meta["attributes"]["out_activation_"] = "logistic"
    params = io.BytesIO()
    np.save(params, np.zeros(2 + 2 * len(classes), np.float32))
    path = tmp_path / "labels.fmlp"
    path.write_bytes(_archive([("metadata.json", json.dumps(meta)),
                               ("params.npy", params.getvalue())]))
    return path


def test_a_label_bomb_is_refused_before_it_is_built(model, tmp_path):
    """Text labels become one fixed-width array (20,000 short labels and one of 20,000
    characters: 4.5 GB and 30 s); multilabel outputs once built an n x n identity."""
    labels = sorted([f"{i:05d}" for i in range(20_000)] + ["z" * 20_000])
    path = _labels_file(model, tmp_path, "multiclass", labels)
    assert "class labels would take 1525 MiB as an array" in _refused_within(path, megabytes=20)
    path = _labels_file(model, tmp_path, "multilabel-indicator", list(range(20_000)))
    tracemalloc.start()
    try:
        loaded = fastmlp.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20 and loaded.predict(np.zeros((2, 1))).shape == (2, 20_000)


def test_class_weight_labels_cannot_collide_in_a_dict(model, tmp_path):
    """Integers k * (2**61 - 1) all hash alike: 20,000 of them took 4.5 s to put in a dict, and
    the time grows with the square of their number. A class label fits in 64 bits."""
    members = _members(model, tmp_path)
    meta = json.loads(members["metadata.json"])
    meta["params"]["class_weight"] = {"items": [[k * (2**61 - 1), 1.0]
                                                for k in range(5, 100_000)]}
    path = _with_metadata(model, tmp_path, json.dumps(meta).encode())
    assert "class_weight labels must be distinct strings or numbers (integers of 64 bits)" in \
        _refused_within(path, megabytes=40)


def test_metadata_near_the_bounds_still_loads(tmp_path):
    """A long loss curve and bracket-, quote- and digit-laden strings are data, not structure."""
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0).fit(X, y)
    clf.loss_curve_ = clf.loss_curve_ + [0.125] * 200_000
    clf.t_ += 200_000 * len(X)
    clf.save(tmp_path / "long.fmlp")
    assert len(fastmlp.load(tmp_path / "long.fmlp").loss_curve_) == 200_002
    names = ['[[[{"\\' * 20 + "1" * 100, "]" * 50, '"' * 50, "\U0001F600\\\"[" * 30]
    reg = fastmlp.MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    reg.fit(__import__("pandas").DataFrame(X, columns=names), y)
    reg.save(tmp_path / "names.fmlp")
    assert list(fastmlp.load(tmp_path / "names.fmlp").feature_names_in_) == names


JSON_TEXT = st.text(st.sampled_from('"\\[]{},:1eé\U0001F600 x'), max_size=12)
NESTED_JSON = st.recursive(
    st.none() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_TEXT, inner, max_size=3),
    max_leaves=60)


def _depth(value):
    if isinstance(value, (list, dict)):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((_depth(item) for item in items), default=0)
    return 0


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(NESTED_JSON, st.integers(0, 40), st.integers(25, 45), st.booleans())
def test_the_json_measure_sees_structure_only_outside_strings(value, shift, depth, ascii):
    """Nesting is counted outside strings, across the scan's piece boundaries: the measure
    refuses exactly the texts nested deeper than the bound."""
    from fastmlp import persistence

    for _ in range(depth - _depth(value)):
        value = [value]
    pad = "x" * (persistence._SCAN_CHUNK - shift)  # strings and escapes straddle a boundary
    text = json.dumps([pad, value, pad, value], ensure_ascii=ascii).encode()
    if _depth(value) + 1 > fastmlp.persistence.MAX_JSON_DEPTH:
        with pytest.raises(ModelFileError, match="nested deeper than 32 levels"):
            persistence._measure_json(text)
    else:
        persistence._measure_json(text)


@pytest.mark.parametrize("shift", [-45, -41, -40, -21, -1, 0, 2])
def test_number_lengths_are_measured_across_pieces(shift):
    from fastmlp import persistence

    pad = persistence._SCAN_CHUNK + shift
    for prefix in (b"[" + b" " * pad, b'["' + b"x" * pad + b'",'):  # a number that straddles
        persistence._measure_json(prefix + b"1" * 40 + b"]")
        with pytest.raises(ModelFileError, match="number longer than 40 characters"):
            persistence._measure_json(prefix + b"1" * 41 + b"]")


# ----------------------------------------------------------------------------- file names
@pytest.mark.parametrize("name", ["m" * 245, "m" * 250 + ".fmlp", "é" * 127],
                         ids=["245", "255", "multibyte"])
def test_a_legal_long_file_name_saves(model, tmp_path, name):
    model.save(tmp_path / name)
    assert fastmlp.load(tmp_path / name).get_params() == model.get_params()
    assert _leftovers(tmp_path, {name}) == []


# ----------------------------------------------------------------------------- fuzz
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=8)


def _paths(value, prefix=()):
    """Every key/index path in a JSON tree."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:4]):
            yield from _paths(item, prefix + (index,))


def _set(tree, path, value, delete):
    for step in path[:-1]:
        tree = tree[step]
    if delete and isinstance(tree, dict):
        del tree[path[-1]]
    else:
        tree[path[-1]] = value


@st.composite
def mutated_files(draw, base):
    meta = json.loads(base["metadata.json"])
    params = base["params.npy"]
    members = {"metadata.json": None, "params.npy": params}
    kind = draw(st.sampled_from(["meta", "meta", "state", "state", "params", "members",
                                 "bytes"]))
    if kind == "state":  # what fit leaves, made inconsistent: removed, nulled, resized, swapped
        for _ in range(draw(st.integers(1, 3))):
            name = draw(st.sampled_from(sorted(FITTED) + ["early_stopping", "solver"]))
            where = meta["params"] if name in meta["params"] else meta["attributes"]
            value = where.get(name)
            change = draw(st.sampled_from(["drop", "null", "grow", "shrink", "number"]))
            if change == "drop":
                where.pop(name, None)
            elif change == "null":
                where[name] = None
            elif change in ("grow", "shrink") and isinstance(value, list) and value:
                where[name] = value * 2 if change == "grow" else value[:-1]
            elif name == "solver":
                where[name] = draw(st.sampled_from(["sgd", "adam", "lbfgs", "rmsprop"]))
            else:
                where[name] = draw(st.sampled_from([0, 1, 2, 10**6, True, 0.5, float("nan")]))
    elif kind == "meta":
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(list(_paths(meta))[1:]))
            _set(meta, path, draw(JSON_VALUES), draw(st.booleans()))
    elif kind == "params":
        header, data = params[:128], bytearray(params[128:])
        choice = draw(st.sampled_from(["flip", "truncate", "header", "array"]))
        if choice == "flip":
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif choice == "truncate":
            data = data[:draw(st.integers(0, len(data) - 1))]
        elif choice == "header":
            header = draw(st.binary(min_size=0, max_size=160))
        else:
            array = io.BytesIO()
            np.save(array, np.zeros(draw(st.integers(0, 40)),
                                    draw(st.sampled_from(["f4", "f8", "i8", ">f4"]))))
            header, data = array.getvalue(), b""
        members["params.npy"] = bytes(header) + bytes(data)
    elif kind == "members":
        action = draw(st.sampled_from(["drop", "extra", "swap"]))
        if action == "drop":
            del members[draw(st.sampled_from(sorted(members)))]
        elif action == "extra":
            name = draw(st.sampled_from(["payload.pkl", "../params.npy", "metadata.json"]))
            members[name] = draw(st.binary(max_size=20))
        else:
            members = {"metadata.json": params, "params.npy": None}
    text = json.dumps(meta).encode()
    members = [(name, text if data is None else data) for name, data in members.items()]
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    data = bytearray(_archive(members, compression))
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = data[:draw(st.integers(len(data) // 2, len(data)))]
    return bytes(data)


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0,
                        class_weight={"a": 2.0}).fit(X, np.array(["a", "b", "c"])[y])
    return _members(clf, tmp_path_factory.mktemp("fuzz"))


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_load_of_a_mutated_file_returns_a_working_model_or_model_file_error(
        fuzz_base, tmp_path_factory, data):
    path = tmp_path_factory.getbasetemp() / "fuzz.fmlp"
    path.write_bytes(data.draw(mutated_files(fuzz_base)))
    tracemalloc.start()
    start = time.perf_counter()
    try:
        loaded = fastmlp.load(path)
    except ModelFileError as exc:
        loaded = None
        assert "\n" not in str(exc) and len(str(exc)) < 300 + len(str(path))
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < 2 and peak < 20 * 2**20
    if loaded is not None:  # what loads must work as a model, and keep training
        proba = loaded.predict_proba(X[:5])
        assert proba.shape == (5, len(loaded.classes_)) and np.isfinite(proba).all()
        assert set(loaded.predict(X[:5])) <= set(loaded.classes_)
        _keeps_training(loaded)


def _keeps_training(model):
    """One more epoch and a warm-started fit run, or fail with a ValueError naming the problem
    (data the model cannot take, divergence); never AttributeError or TypeError."""
    if model._label_binarizer.y_type_ == "multilabel-indicator":
        return
    rows = np.resize(X[:30], (30, model.n_features_in_))
    labels = model.classes_[np.arange(30) % len(model.classes_)]
    model.set_params(max_iter=2, verbose=False, progress_bar=False)
    try:
        if hasattr(model, "partial_fit"):
            model.partial_fit(rows, labels)
        model.set_params(warm_start=True).fit(rows, labels)
    except ValueError:
        pass


# ----------------------------------------------------------------------------- restored state
# What skops.io (or any format storing __getstate__ as data) hands __setstate__ is as hostile as
# a model file: the same outcome is required, a working model or ModelFileError.
STATE_VALUES = st.sampled_from([
    None, 0, 3, -1, 2**70, 1.5, float("nan"), True, "x", [], [1.0], [4, 3, 3], {},
    np.zeros(3, np.float32), np.zeros(0), np.zeros((2, 2)), np.array(["a"], dtype=object)])


@pytest.fixture(scope="module")
def state_base():
    from fastmlp import persistence

    clf = MLPClassifier(hidden_layer_sizes=(3,), max_iter=2, random_state=0,
                        class_weight={"a": 2.0}).fit(X, np.array(["a", "b", "c"])[y])
    return persistence.data_state(clf)


@settings(max_examples=150, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_mutated_restored_state_gives_a_working_model_or_model_file_error(state_base, data):
    import copy

    state = copy.deepcopy(state_base)
    for _ in range(data.draw(st.integers(1, 3))):
        where = state
        key = data.draw(st.sampled_from(sorted(where)))
        if isinstance(where[key], dict) and where[key] and data.draw(st.booleans()):
            where = where[key]  # inside the optimizer's slots and counters, or the labels
            key = data.draw(st.sampled_from(sorted(where)))
            if isinstance(where[key], dict) and where[key]:
                where = where[key]
                key = data.draw(st.sampled_from(sorted(where)))
        if data.draw(st.booleans()) and len(where) > 1:
            del where[key]
        else:
            where[key] = data.draw(STATE_VALUES)
    restored = MLPClassifier.__new__(MLPClassifier)
    try:
        restored.__setstate__(state)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        assert vars(restored) == {}  # nothing half-restored
        return
    if hasattr(restored, "_params"):
        proba = restored.predict_proba(X[:5])
        assert proba.shape == (5, len(restored.classes_)) and np.isfinite(proba).all()
        _keeps_training(restored)
