"""IDX reading and the data set loaders, on small files the tests write themselves."""

import gzip
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fastmlp.datasets as datasets
from fastmlp.datasets import load_fashion_mnist, load_mnist, make_tabular, read_idx

TYPE_BYTES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
              np.float64: 0x0E}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def _idx_bytes(array):
    """An IDX file's bytes, written here independently of the reader under test."""
    array = np.asarray(array)
    header = bytes([0, 0, TYPE_BYTES[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, data, compress=True):
    path = Path(str(path) + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _write_set(directory, n_train=6, n_test=4, compress=True, parts=("train", "t10k")):
    """Tiny MNIST-layout files; returns {part: (images, labels)} as written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    written = {}
    for base, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        labels = rng.randint(0, 10, n).astype(np.uint8)
        if base in parts:
            _write(directory / f"{base}-images-idx3-ubyte", _idx_bytes(images), compress)
            _write(directory / f"{base}-labels-idx1-ubyte", _idx_bytes(labels), compress)
            written[base] = images, labels
    return written


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    """A developer's own data-set variables must not change what these tests see."""
    monkeypatch.delenv("FASTMLP_FASHION_MNIST", raising=False)
    monkeypatch.delenv("FASTMLP_MNIST", raising=False)


# ---------------------------------------------------------------------------------- read_idx
@pytest.mark.parametrize("dtype", list(TYPE_BYTES))
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    # Values that differ in every byte, so a byte-order mistake cannot go unnoticed.
    array = ((np.arange(24).reshape(2, 3, 4) - 5) * 3).astype(dtype)
    if np.dtype(dtype).itemsize > 1:
        array = array * 37 + 1
    path = _write(tmp_path / "a.idx", _idx_bytes(array), compress)
    got = read_idx(path)
    assert got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, array)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    got[0, 0, 0] = 1  # the result is an ordinary writable array


def test_read_idx_rank_one_and_big_endian(tmp_path):
    path = _write(tmp_path / "v", b"\x00\x00\x0b\x01\x00\x00\x00\x02\x01\x02\xff\xfe", False)
    np.testing.assert_array_equal(read_idx(path), [0x0102, -2])


def test_compression_is_recognised_by_content_not_name(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    plain_named_gz = tmp_path / "plain.gz"
    plain_named_gz.write_bytes(_idx_bytes(array))
    gz_named_plain = tmp_path / "compressed"
    gz_named_plain.write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(plain_named_gz), array)
    np.testing.assert_array_equal(read_idx(gz_named_plain), array)


BAD_FILES = [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01x", "bad magic number"),
    (b"\x00\x00", "bad magic number"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01x", "unknown IDX data type 0x07"),
    (b"\x00\x00\x08\x00", "rank must be at least 1, got 0"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated IDX header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", r"truncated: .*\(5,\) \(5 bytes\).* only 3 bytes"),
    (b"\x00\x00\x0c\x01\x00\x00\x00\x02abcdefg", r"truncated: .*\(2,\) \(8 bytes\)"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "bytes after the data"),
]


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("data, message", BAD_FILES)
def test_corrupt_idx_files_are_refused(tmp_path, data, message, compress):
    path = _write(tmp_path / "bad.idx", data, compress)
    with pytest.raises(ValueError, match=message) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("compress", [True, False])
def test_huge_header_is_refused_before_allocating(tmp_path, compress):
    # Three dimensions of 2^32 - 1: about 7e28 bytes promised by a file of a few bytes.
    data = b"\x00\x00\x0e\x03" + b"\xff\xff\xff\xff" * 3 + b"xyz"
    path = _write(tmp_path / "huge.idx", data, compress)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"\(4294967295, 4294967295, 4294967295\)"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_gzip_header_beyond_what_deflate_can_hold(tmp_path):
    # 1 GB promised by a gzip file of a few dozen bytes: refused before decompressing.
    path = _write(tmp_path / "bomb.idx", b"\x00\x00\x08\x01\x40\x00\x00\x00" + b"\x00" * 100)
    with pytest.raises(ValueError, match="more than a .*-byte gzip file can hold"):
        read_idx(path)


def test_corrupt_gzip_is_refused(tmp_path):
    good = gzip.compress(_idx_bytes(np.arange(1000, dtype=np.int32)))
    cut = tmp_path / "cut.idx.gz"
    cut.write_bytes(good[: len(good) // 2])
    flipped = tmp_path / "flipped.idx.gz"
    flipped.write_bytes(good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:])
    for path in (cut, flipped):
        with pytest.raises(ValueError, match="unreadable or corrupt") as caught:
            read_idx(path)
        assert str(path) in str(caught.value)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nothing.idx")


# ----------------------------------------------------------------------------------- loaders
@pytest.mark.parametrize("compress", [True, False])
def test_loaders_read_a_directory(tmp_path, compress):
    written = _write_set(tmp_path, compress=compress)
    images, labels = written["train"]
    X, y = load_fashion_mnist(tmp_path)
    assert X.shape == (6, 784) and X.dtype == np.float32
    np.testing.assert_allclose(X, images.reshape(6, 784) / 255, rtol=1e-6)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)

    X_tr, y_tr, X_te, y_te = load_mnist(tmp_path, subset="all", dtype="uint8")
    assert X_tr.dtype == np.uint8 and X_te.shape == (4, 784)
    np.testing.assert_array_equal(X_tr, images.reshape(6, 784))
    np.testing.assert_array_equal(X_te, written["t10k"][0].reshape(4, 784))
    np.testing.assert_array_equal(y_te, written["t10k"][1])


def test_unscaled_and_float64(tmp_path):
    images = _write_set(tmp_path)["t10k"][0]
    X, _ = load_mnist(tmp_path, subset="test", dtype=np.float64, scale=False)
    assert X.dtype == np.float64 and X.max() > 1
    np.testing.assert_array_equal(X, images.reshape(4, 784).astype(np.float64))


def test_only_the_requested_subset_is_needed(tmp_path):
    _write_set(tmp_path, parts=("t10k",))
    assert load_mnist(tmp_path, subset="test")[0].shape == (4, 784)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, subset="train")


def test_environment_variable_is_used(tmp_path, monkeypatch):
    _write_set(tmp_path / "fashion", n_test=3)
    _write_set(tmp_path / "digits", n_test=5)
    monkeypatch.setenv("FASTMLP_FASHION_MNIST", str(tmp_path / "fashion"))
    monkeypatch.setenv("FASTMLP_MNIST", str(tmp_path / "digits"))
    assert load_fashion_mnist(subset="test")[0].shape == (3, 784)
    assert load_mnist(subset="test")[0].shape == (5, 784)


def test_data_home_comes_before_the_environment_variable(tmp_path, monkeypatch):
    _write_set(tmp_path / "arg", n_test=2)
    _write_set(tmp_path / "env", n_test=7)
    monkeypatch.setenv("FASTMLP_MNIST", str(tmp_path / "env"))
    assert load_mnist(tmp_path / "arg", subset="test")[0].shape == (2, 784)


def test_a_directory_missing_some_files_is_passed_over(tmp_path, monkeypatch):
    _write_set(tmp_path / "partial", n_train=2)
    (tmp_path / "partial" / "train-labels-idx1-ubyte.gz").unlink()
    _write_set(tmp_path / "complete", n_train=3)
    monkeypatch.setenv("FASTMLP_MNIST", str(tmp_path / "complete"))
    assert load_mnist(tmp_path / "partial")[0].shape == (3, 784)


@pytest.mark.parametrize("loader, name, env, how", [
    (load_mnist, "mnist", "FASTMLP_MNIST", "Debian has no MNIST package"),
    (load_fashion_mnist, "fashion-mnist", "FASTMLP_FASHION_MNIST",
     "apt-get update && apt-get install -y dataset-fashion-mnist"),
])
def test_missing_files_name_every_place_looked(tmp_path, monkeypatch, loader, name, env, how):
    # The default location is moved to an empty directory: the real one may hold the files.
    monkeypatch.setitem(datasets._SOURCES[name], "system", [str(tmp_path / "default")])
    monkeypatch.setenv(env, str(tmp_path / "from-env"))
    with pytest.raises(FileNotFoundError) as caught:
        loader(tmp_path / "from-arg")
    message = str(caught.value)
    places = [str(tmp_path / place) for place in ("from-arg", "from-env", "default")]
    for needle in (*places, how, "data_home", "$" + env, *FILES[:2]):
        assert needle in message, needle

    monkeypatch.delenv(env)
    with pytest.raises(FileNotFoundError, match=rf"\${env} is not set"):
        loader()


def test_default_location_is_where_debian_installs_fashion_mnist():
    assert datasets._SOURCES["fashion-mnist"]["system"] == ["/usr/share/datasets/fashion-mnist"]


def test_image_and_label_counts_must_match(tmp_path):
    _write_set(tmp_path)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("images, labels", [
    (np.zeros((6, 784), np.uint8), np.zeros(6, np.uint8)),        # images of rank 2
    (np.zeros((6, 28, 28), np.uint8), np.zeros((6, 1), np.uint8)),  # labels of rank 2
])
def test_image_and_label_ranks_are_checked(tmp_path, images, labels):
    _write_set(tmp_path)
    _write(tmp_path / "train-images-idx3-ubyte", _idx_bytes(images))
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(labels))
    with pytest.raises(ValueError, match="expected images of rank 3 and labels of rank 1"):
        load_fashion_mnist(tmp_path)


def test_corrupt_file_in_a_data_set_names_that_file(tmp_path):
    _write_set(tmp_path)
    bad = _write(tmp_path / "train-labels-idx1-ubyte", b"\x00\x00\x08\x01\x00\x00\x00\x09ab")
    with pytest.raises(ValueError, match="truncated") as caught:
        load_mnist(tmp_path)
    assert str(bad) in str(caught.value)


def test_bad_arguments(tmp_path):
    _write_set(tmp_path)
    with pytest.raises(ValueError, match="subset must be"):
        load_fashion_mnist(tmp_path, subset="validation")
    for dtype in ("int64", "not-a-type"):
        with pytest.raises(ValueError, match="dtype must be"):
            load_fashion_mnist(tmp_path, dtype=dtype)


# ------------------------------------------------------------------------------- synthetic
def test_make_tabular():
    X, y = make_tabular(500, 20, 3)
    assert X.shape == (500, 20) and X.dtype == np.float32 and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 1, 2}
    X2, y2 = make_tabular(500, 20, 3)
    np.testing.assert_array_equal(X, X2)  # the default seed is fixed
    assert not np.array_equal(X, make_tabular(500, 20, 3, random_state=1)[0])
    assert make_tabular(10, 4, 2, dtype="float64")[0].dtype == np.float64


# ------------------------------------------------------------------------------ real data
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not all((DEBIAN / (f + ".gz")).is_file() for f in FILES),
                    reason="Fashion-MNIST files absent: Debian's dataset-fashion-mnist package "
                           "is not installed")
def test_real_fashion_mnist_from_the_default_location():
    X, y, X_test, y_test = load_fashion_mnist(subset="all")
    assert X.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert y.shape == (60000,) and y_test.shape == (10000,)
    assert 0 <= X.min() and X.max() == 1
    assert np.bincount(y).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
