"""Data set loaders: MNIST-format IDX files (Fashion-MNIST, MNIST) and synthetic tabular data.

Loaders read local files only (nothing is downloaded) and validate every header before trusting
it, so a truncated, corrupt or hostile file gives a clear error instead of a huge allocation.
"""

import gzip
import os
from pathlib import Path

import numpy as np

# IDX type byte -> big-endian dtype (the format stores numbers most significant byte first).
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_SOURCES = {
    "fashion-mnist": {"env": "FASTMLP_FASHION_MNIST",
                      "system": ["/usr/share/datasets/fashion-mnist"],
                      "how": "apt-get update && apt-get install -y dataset-fashion-mnist"},
    "mnist": {"env": "FASTMLP_MNIST", "system": ["/usr/share/datasets/mnist"],
              "how": "download the four MNIST IDX files into a directory and pass it as "
                     "data_home"},
}


def read_idx(path):
    """Read one IDX file (gzip-compressed or plain) into a NumPy array.

    The header is checked before any allocation: two zero bytes, a known type byte, a rank of at
    least one, and dimensions whose product matches the payload's length exactly.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray with the stored shape, in native byte order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
                raise ValueError(f"{path}: not an IDX file (bad magic number {magic!r})")
            if magic[2] not in _IDX_TYPES:
                raise ValueError(f"{path}: unknown IDX data type 0x{magic[2]:02x}")
            ndim = magic[3]
            if ndim < 1:
                raise ValueError(f"{path}: IDX rank must be at least 1, got {ndim}")
            header = f.read(4 * ndim)
            if len(header) < 4 * ndim:
                raise ValueError(f"{path}: truncated IDX header")
            shape = tuple(int(d) for d in np.frombuffer(header, dtype=">u4"))
            dtype = np.dtype(_IDX_TYPES[magic[2]])
            expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
            payload = _read_at_most(f, expected + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: unreadable or corrupt IDX file ({exc})") from exc
    if len(payload) < expected:
        raise ValueError(f"{path}: truncated: the header declares {shape} ({expected} bytes) but "
                         f"only {len(payload)} bytes follow")
    if len(payload) > expected:
        raise ValueError(f"{path}: {shape} declared, but the file has bytes after the data")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_at_most(f, limit, chunk=1 << 24):
    """Up to `limit` bytes, read in chunks: a header that lies about the size cannot make us
    allocate more than the file really holds. Reading one byte past the promised payload
    detects trailing data."""
    chunks = []
    while limit > 0:
        data = f.read(min(limit, chunk))
        if not data:
            break
        chunks.append(data)
        limit -= len(data)
    return b"".join(chunks)


def _find(name, data_home):
    """The directory holding a data set's files, or FileNotFoundError naming every place."""
    source = _SOURCES[name]
    places = []
    if data_home is not None:
        places.append(("the data_home argument", Path(data_home)))
    if os.environ.get(source["env"]):
        places.append((f"${source['env']}", Path(os.environ[source["env"]])))
    places += [("the system location", Path(p)) for p in source["system"]]
    for _, directory in places:
        if all(_file(directory, base) for pair in _FILES.values() for base in pair):
            return directory
    looked = "\n".join(f"  - {directory} ({why})" for why, directory in places)
    raise FileNotFoundError(
        f"{name}: the four IDX files ({', '.join(b for p in _FILES.values() for b in p)}, "
        f"optionally .gz) were not found. Looked in:\n{looked}\n"
        f"To get them: {source['how']}; or point data_home or ${source['env']} at a "
        "directory that holds them.")


def _file(directory, base):
    for candidate in (directory / (base + ".gz"), directory / base):
        if candidate.is_file():
            return candidate
    return None


def _load(name, data_home, subset, dtype, scale):
    if subset not in ("train", "test", "all"):
        raise ValueError(f"subset must be 'train', 'test' or 'all', got {subset!r}")
    if dtype not in ("float32", "float64", "uint8"):
        raise ValueError(f"dtype must be 'float32', 'float64' or 'uint8', got {dtype!r}")
    directory = _find(name, data_home)
    out = []
    for part in (("train", "test") if subset == "all" else (subset,)):
        images_path, labels_path = (_file(directory, base) for base in _FILES[part])
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(f"{images_path}: expected images of rank 3 and labels of rank 1, "
                             f"got shapes {images.shape} and {labels.shape}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images_path}: {images.shape[0]} images but {labels.shape[0]} "
                             "labels")
        X = images.reshape(images.shape[0], -1)
        if dtype != "uint8":
            X = X.astype(dtype)
            if scale:
                X /= 255
        out += [X, labels.astype(np.int64)]
    return tuple(out)


def load_fashion_mnist(data_home=None, *, subset="train", dtype="float32", scale=True):
    """Fashion-MNIST (Zalando Research, MIT licence): 28x28 grey images of 10 clothing classes.

    Parameters
    ----------
    data_home : str or Path, default=None
        Directory holding the four IDX files. Otherwise $FASTMLP_FASHION_MNIST, then
        /usr/share/datasets/fashion-mnist (Debian's ``dataset-fashion-mnist`` package).
    subset : {'train', 'test', 'all'}, default='train'
        60,000 training or 10,000 test images; 'all' returns both.
    dtype : {'float32', 'float64', 'uint8'}, default='float32'
    scale : bool, default=True
        Divide pixel values by 255 (ignored for uint8).

    Returns
    -------
    (X, y), or (X_train, y_train, X_test, y_test) for subset='all'; X has one row of 784 pixels
    per image, y int64 labels 0-9.
    """
    return _load("fashion-mnist", data_home, subset, dtype, scale)


def load_mnist(data_home=None, *, subset="train", dtype="float32", scale=True):
    """MNIST handwritten digits, in the same IDX format and with the same API as
    :func:`load_fashion_mnist` (environment variable ``$FASTMLP_MNIST``)."""
    return _load("mnist", data_home, subset, dtype, scale)


def make_tabular(n_samples=100_000, n_features=20, n_classes=3, *, random_state=0,
                 dtype="float32"):
    """Synthetic tabular classification data (scikit-learn's make_classification, half the
    features informative), as used by the benchmarks' small-network workload."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples, n_features, n_informative=n_features // 2,
                               n_classes=n_classes, random_state=random_state)
    return X.astype(dtype), y
