"""Data set loaders: MNIST-format IDX files (Fashion-MNIST, MNIST) and synthetic tabular data.

Loaders read local files only (nothing is downloaded) and validate every header before trusting
it, so a truncated, corrupt or hostile file gives a clear error instead of a huge allocation.
"""

from __future__ import annotations

import gzip
import os
import zlib
from math import prod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

# IDX type byte -> big-endian dtype (the format stores numbers most significant byte first).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand a stream by more than about 1032:1
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_SOURCES = {
    "fashion-mnist": {"env": "FASTMLP_FASHION_MNIST",
                      "system": ["/usr/share/datasets/fashion-mnist"],
                      "how": "run 'apt-get update && apt-get install -y dataset-fashion-mnist' "
                             "(Debian's package; it installs them in the default location)"},
    "mnist": {"env": "FASTMLP_MNIST", "system": ["/usr/share/datasets/mnist"],
              "how": "Debian has no MNIST package: copy the MNIST IDX files into the default "
                     "location"},
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file, gzip-compressed or plain, into a NumPy array.

    The header is checked before anything is allocated for the payload: two zero bytes, a known
    type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a
    rank of at least one, and dimensions whose byte count the file can actually hold. The
    payload must then be exactly as long as the dimensions say.

    Parameters
    ----------
    path : str or path-like
        The file. Compression is recognised from the content, not the name.

    Returns
    -------
    array : ndarray
        The stored values, with the stored shape, in native byte order.

    Raises
    ------
    ValueError
        The file is not a well-formed IDX file; the message names the file and the problem.
    FileNotFoundError
        The file does not exist.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        try:
            with (gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw) as f:
                return _parse(path, f, size, compressed)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise ValueError(f"{path}: unreadable or corrupt IDX file ({exc})") from exc


def _parse(path, f, size, compressed):
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {magic!r}; the first two "
                         "bytes must be zero)")
    if magic[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{magic[2]:02x}")
    ndim = magic[3]
    if ndim < 1:
        raise ValueError(f"{path}: IDX rank must be at least 1, got {ndim}")
    header = f.read(4 * ndim)
    if len(header) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions declared, "
                         f"{len(header)} of {4 * ndim} header bytes present)")
    shape = tuple(int(d) for d in np.frombuffer(header, dtype=">u4"))
    dtype = np.dtype(_IDX_TYPES[magic[2]])
    expected = prod(shape) * dtype.itemsize
    # Check the length against the file before reading, so a lying header allocates nothing.
    if compressed:
        if expected > size * _DEFLATE_MAX_RATIO:
            raise ValueError(f"{path}: the header declares shape {shape} ({expected} bytes), "
                             f"more than a {size}-byte gzip file can hold")
        payload = _read_at_most(f, expected + 1)  # one byte more reveals trailing data
        available = len(payload)
    else:
        available = size - 4 - 4 * ndim
    if available < expected:
        raise ValueError(f"{path}: truncated: the header declares shape {shape} ({expected} "
                         f"bytes) but only {available} bytes follow")
    if available > expected:
        extra = "more" if compressed else available - expected
        raise ValueError(f"{path}: the header declares shape {shape} ({expected} bytes) but "
                         f"the file has {extra} bytes after the data")
    if not compressed:
        payload = f.read(expected)
        if len(payload) != expected:  # the file shrank while we read it
            raise ValueError(f"{path}: truncated while reading")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_at_most(f, limit, chunk=1 << 24):
    """Up to `limit` bytes, read in chunks, so memory grows only with what the file holds."""
    chunks = []
    while limit > 0:
        data = f.read(min(limit, chunk))
        if not data:
            break
        chunks.append(data)
        limit -= len(data)
    return b"".join(chunks)


def _find(name, data_home, parts):
    """The directory holding the files of `parts`, or FileNotFoundError naming every place."""
    source = _SOURCES[name]
    bases = [base for part in parts for base in _FILES[part]]
    places = []
    if data_home is not None:
        places.append(("the data_home argument", Path(data_home)))
    if os.environ.get(source["env"]):
        places.append((f"${source['env']}", Path(os.environ[source["env"]])))
    places += [("the default location", Path(p)) for p in source["system"]]
    for _, directory in places:
        if all(_file(directory, base) for base in bases):
            return directory
    looked = "\n".join(f"  - {directory} ({why})" for why, directory in places)
    if not os.environ.get(source["env"]):
        looked += f"\n  (${source['env']} is not set)"
    raise FileNotFoundError(
        f"{name}: the IDX files {', '.join(bases)} (each plain or .gz) were not found. "
        f"Looked in:\n{looked}\nTo get them: {source['how']}. Or put them in any directory and "
        f"pass it as data_home, or set ${source['env']} to it.")


def _file(directory, base):
    for candidate in (directory / (base + ".gz"), directory / base):
        if candidate.is_file():
            return candidate
    return None


def _load(name, data_home, subset, dtype, scale):
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}")
    try:
        name_ok = np.dtype(dtype).name in ("float32", "float64", "uint8")
    except TypeError:
        name_ok = False
    if not name_ok:
        raise ValueError(f"dtype must be 'float32', 'float64' or 'uint8', got {dtype!r}")
    dtype = np.dtype(dtype)
    parts = ("train", "test") if subset == "all" else (subset,)
    directory = _find(name, data_home, parts)
    out = []
    for part in parts:
        images_path, labels_path = (_file(directory, base) for base in _FILES[part])
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(f"{images_path}, {labels_path}: expected images of rank 3 and "
                             f"labels of rank 1, got shapes {images.shape} and {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images_path}, {labels_path}: {images.shape[0]} images but "
                             f"{labels.shape[0]} labels")
        X = images.reshape(images.shape[0], -1).astype(dtype, copy=False)
        if scale and dtype.kind == "f":
            X /= 255
        out += [X, labels.astype(np.int64)]
    return tuple(out)


_LOADER_DOC = """{title}

    Parameters
    ----------
    data_home : str or path-like, default=None
        Directory holding the IDX files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``,
        each plain or with ``.gz``. Places are tried in order: ``data_home``, then the directory
        in ``${env}``, then ``{system}``{system_note}. Only the files of the requested subset
        need to be present.
    subset : {{'train', 'test', 'all'}}, default='train'
        The 60,000 training images, the 10,000 test images, or both.
    dtype : {{'float32', 'float64', 'uint8'}}, default='float32'
        Type of the returned images.
    scale : bool, default=True
        Divide pixel values by 255, giving values in [0, 1]; otherwise floats keep the raw
        0-255 values. Ignored for ``dtype='uint8'``.

    Returns
    -------
    X, y : ndarray of shape (n_images, 784) and ndarray of shape (n_images,)
        For ``subset='train'`` or ``'test'``: one row of 28 x 28 = 784 pixels per image, and
        int64 labels 0-9.
    X_train, y_train, X_test, y_test : ndarrays
        For ``subset='all'``: both sets, as above.

    Raises
    ------
    FileNotFoundError
        No place holds the files; the message lists every place tried and how to get them.
    ValueError
        A bad argument, or a corrupt file (see :func:`read_idx`), or images and labels that do
        not match.
    """


def load_fashion_mnist(data_home: str | os.PathLike[str] | None = None, *, subset: str = "train",
                       dtype: DTypeLike = "float32", scale: bool = True
                       ) -> tuple[np.ndarray, ...]:
    return _load("fashion-mnist", data_home, subset, dtype, scale)


def load_mnist(data_home: str | os.PathLike[str] | None = None, *, subset: str = "train",
               dtype: DTypeLike = "float32", scale: bool = True) -> tuple[np.ndarray, ...]:
    return _load("mnist", data_home, subset, dtype, scale)


load_fashion_mnist.__doc__ = _LOADER_DOC.format(
    title="Fashion-MNIST (Zalando Research, MIT licence): 28x28 grey images of 10 kinds of "
          "clothing.", env="FASTMLP_FASHION_MNIST", system="/usr/share/datasets/fashion-mnist",
    system_note=" (where Debian's ``dataset-fashion-mnist`` package installs them)")
load_mnist.__doc__ = _LOADER_DOC.format(
    title="MNIST (Yann LeCun and Corinna Cortes): 28x28 grey images of handwritten digits.",
    env="FASTMLP_MNIST", system="/usr/share/datasets/mnist",
    system_note=" (Debian has no MNIST package; the files go there by hand)")


def make_tabular(n_samples: int = 100_000, n_features: int = 20, n_classes: int = 3, *,
                 random_state: int | np.random.RandomState | None = 0,
                 dtype: DTypeLike = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Synthetic tabular classification data for benchmarks and examples.

    A thin wrapper over :func:`sklearn.datasets.make_classification` with half the features
    informative; the defaults are the benchmarks' small-network workload (100,000 x 20,
    3 classes).

    Parameters
    ----------
    n_samples : int, default=100_000
    n_features : int, default=20
    n_classes : int, default=3
    random_state : int, RandomState or None, default=0
        Seed; the default makes repeated calls return the same data.
    dtype : str or dtype, default='float32'
        Type of ``X``.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        int64 class labels 0 .. n_classes - 1.
    """
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples, n_features, n_informative=n_features // 2,
                               n_classes=n_classes, random_state=random_state)
    return X.astype(dtype), y.astype(np.int64)
