"""IDX loading and the data set loaders, on small files the tests write themselves."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from fastmlp.datasets import load_fashion_mnist, load_mnist, make_tabular, read_idx

TYPE_BYTES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
              np.float64: 0x0E}


def _idx_bytes(array):
    array = np.asarray(array)
    header = bytes([0, 0, TYPE_BYTES[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, data, compress=True):
    path = Path(str(path) + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _write_set(directory, n_train=6, n_test=4, compress=True):
    rng = np.random.RandomState(0)
    for base, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.randint(0, 10, n).astype(np.uint8)
        _write(directory / f"{base}-images-idx3-ubyte", _idx_bytes(images), compress)
        _write(directory / f"{base}-labels-idx1-ubyte", _idx_bytes(labels), compress)
    return directory


@pytest.mark.parametrize("dtype", list(TYPE_BYTES))
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = _write(tmp_path / "a.idx", _idx_bytes(array), compress)
    got = read_idx(path)
    np.testing.assert_array_equal(got, array)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "unknown IDX data type"),
    (b"\x00\x00\x08\x00", "rank must be at least 1"),
    (b"\x00\x00\x08\x02\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", r"truncated: the header declares \(5,\)"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "bytes after the data"),
    # A header promising 2^32 x 2^32 x 2^32 bytes: refused without trying to allocate it.
    (b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3 + b"xyz", "truncated"),
])
def test_corrupt_idx_files_are_refused(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        read_idx(_write(tmp_path / "bad.idx", data, compress=False))


def test_corrupt_gzip_is_refused(tmp_path):
    good = gzip.compress(_idx_bytes(np.zeros((10, 10), np.uint8)))
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
def test_loaders_read_a_directory(tmp_path, compress):
    _write_set(tmp_path, compress=compress)
    X, y = load_fashion_mnist(tmp_path)
    assert X.shape == (6, 784) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert y.shape == (6,) and y.dtype == np.int64
    raw = read_idx(next(tmp_path.glob("train-images*")))
    np.testing.assert_allclose(X, raw.reshape(6, -1) / 255, rtol=1e-6)
    X_tr, y_tr, X_te, y_te = load_mnist(tmp_path, subset="all", dtype="uint8")
    assert X_tr.dtype == np.uint8 and X_te.shape == (4, 784) and len(y_te) == 4


def test_environment_variable_is_used(tmp_path, monkeypatch):
    _write_set(tmp_path)
    monkeypatch.setenv("FASTMLP_FASHION_MNIST", str(tmp_path))
    assert load_fashion_mnist(subset="test")[0].shape == (4, 784)


def test_missing_files_name_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMLP_MNIST", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as caught:
        load_mnist(tmp_path / "arg")
    message = str(caught.value)
    for place in ("arg", "env", "/usr/share/datasets/mnist", "data_home", "FASTMLP_MNIST"):
        assert place in message


def test_mismatched_images_and_labels(tmp_path):
    _write_set(tmp_path)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        load_fashion_mnist(tmp_path)


def test_bad_arguments(tmp_path):
    _write_set(tmp_path)
    with pytest.raises(ValueError, match="subset must be"):
        load_fashion_mnist(tmp_path, subset="validation")
    with pytest.raises(ValueError, match="dtype must be"):
        load_fashion_mnist(tmp_path, dtype="int64")


def test_make_tabular():
    X, y = make_tabular(500, 20, 3)
    assert X.shape == (500, 20) and X.dtype == np.float32 and set(np.unique(y)) == {0, 1, 2}


REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (REAL / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist package is not installed")
def test_real_fashion_mnist():
    X, y, X_test, y_test = load_fashion_mnist(subset="all")
    assert X.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert set(np.unique(y)) == set(range(10)) and np.bincount(y).min() == 6000
