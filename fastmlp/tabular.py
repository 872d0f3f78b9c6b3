"""Reading the command line's DATA: a bundled data set, a CSV file or an .npz file, as a Table.

Columns keep their kind (numbers or text) and their missing values; turning them into features is
``fastmlp.preprocessing``'s job. Every problem with the input is an InputError whose message names
the file, column and line; nothing here trains or prints.
"""

import csv
import os
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn import datasets as sklearn_datasets

from .preprocessing import MISSING, NUMBER, TEXT, Table, check_column_names, table_from_array

CSV_CHUNK_ROWS = 10_000  # CSV rows held as text at once; number columns go straight to arrays
# Copies of an .npz file's X the command may hold at once, as float64: the table, the
# preprocessed training and test rows, the model's own copy. Sizes are checked against it.
FLOAT64_COPIES = 3
# Target dtypes the command accepts (numpy kinds): booleans, integers, floats, text.
LABEL_KINDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "text"}
REFUSED_KINDS = {"M": "dates (datetime64)", "m": "durations (timedelta64)", "S": "bytes",
                 "O": "Python objects", "V": "structured records", "c": "complex numbers"}

# name -> (loader, task). Only sets that ship inside scikit-learn: they work offline.
BUNDLED = {
    "digits": (sklearn_datasets.load_digits, "classify"),
    "iris": (sklearn_datasets.load_iris, "classify"),
    "wine": (sklearn_datasets.load_wine, "classify"),
    "breast_cancer": (sklearn_datasets.load_breast_cancer, "classify"),
    "diabetes": (sklearn_datasets.load_diabetes, "regress"),
}
# name -> loader function in fastmlp.datasets (read from local IDX files).
FROM_FASTMLP_DATASETS = {"fashion-mnist": "load_fashion_mnist", "mnist": "load_mnist"}
DATASET_NAMES = sorted(BUNDLED) + sorted(FROM_FASTMLP_DATASETS)


class InputError(Exception):
    """Input the user can fix; the command line prints the message and exits with status 2."""


def memory_budget():
    """Bytes of memory the command may plan to use: what the system reports available now
    (Linux's MemAvailable), else its physical memory; None when neither is known."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def size_text(n_bytes):
    """'3.2 GiB'-style text for a byte count."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n_bytes < 1024 or unit == "TiB":
            return f"{n_bytes:.0f} {unit}" if unit == "bytes" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return None  # not reached


def check_labels(y, what):
    """Refuse targets the model file or the output cannot hold, before any training: dtypes
    other than booleans, numbers and text, and text that is not valid Unicode (lone
    surrogates), which could not be written as UTF-8."""
    kind = y.dtype.kind
    if kind not in LABEL_KINDS:
        raise InputError(f"{what} holds {REFUSED_KINDS.get(kind, str(y.dtype))} (dtype "
                         f"{y.dtype}); targets must be numbers, text or booleans: convert them "
                         "first, e.g. dates to numbers or bytes to str")
    if kind == "U":
        for label in np.unique(y):
            try:
                str(label).encode("utf-8")
            except UnicodeEncodeError:
                raise InputError(f"{what} holds the label {str(label)!r}, which is not valid "
                                 "Unicode text (a lone surrogate) and could not be written "
                                 "out; fix or re-encode the labels") from None


class Data(NamedTuple):
    """Feature columns and (when there are any) targets read from DATA."""

    table: Table
    y: object  # ndarray or None
    name: str
    task: object  # "classify" / "regress" for bundled sets, else None
    target_name: object  # the CSV target column, or None


def load_data(source, target=None, target_required=False, columns=None, kinds=None):
    """Read DATA: a bundled data set name, or a path to a .csv or .npz file.

    Parameters
    ----------
    source : str
        A name from ``DATASET_NAMES`` or a file path. An existing file wins over a name.
    target : str, default=None
        CSV only: the target column (dropped from the features).
    target_required : bool, default=False
        True for training: a CSV without ``target`` then uses its last column as the target, and
        an .npz file must hold ``y``.
    columns : list of str, default=None
        CSV only: read exactly these feature columns, in this order (the columns a model was
        trained on).
    kinds : list of str, default=None
        CSV only, with ``columns``: each column's kind, ``"number"`` or ``"text"``. A number
        column holding text is then an error. Without it, a column is numbers when every value
        that is not missing is a number.

    Returns
    -------
    Data

    Raises
    ------
    InputError
        Naming what is wrong: missing file, unknown name, unreadable content, infinite values.
    """
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return _read_csv(path, target, target_required, columns, kinds)
        if target is not None:
            raise InputError(f"--target names a CSV column, but {source} is not a CSV file")
        if suffix == ".npz":
            return _read_npz(path, target_required)
        raise InputError(f"{source}: unsupported file type {path.suffix or '(none)'!r}; "
                         "DATA must be a .csv or .npz file or a bundled data set name")
    if path.is_dir():
        raise InputError(f"{source} is a folder, not a .csv or .npz file")
    key = _dataset_key(source)
    if key is None:
        if path.suffix or path.parent != Path("."):
            raise InputError(f"file not found: {source}")
        raise InputError(f"unknown data set {source!r}: known names are "
                         f"{', '.join(DATASET_NAMES)} (or give a path to a .csv or .npz file)")
    if target is not None:
        raise InputError(f"--target names a CSV column, but {source!r} is a bundled data set")
    if key in BUNDLED:
        loader, task = BUNDLED[key]
        X, y = loader(return_X_y=True)
        return Data(table_from_array(X), y, key, task, None)
    X, y = _load_from_fastmlp_datasets(key)
    return Data(table_from_array(X), y, key, "classify", None)


def _normalise(name):
    return name.strip().lower().replace("-", "_")


def _dataset_key(name):
    """The DATASET_NAMES entry `name` refers to (case, '-' and '_' ignored), or None."""
    return {_normalise(known): known for known in DATASET_NAMES}.get(_normalise(name))


def _load_from_fastmlp_datasets(name):
    """(X, y): the training images of `name`, scaled to [0, 1], from fastmlp.datasets.

    Imported here, not at the top: only these data sets need it. Its loaders read local IDX
    files and say where they looked when the files are missing.
    """
    from . import datasets

    try:
        X, y = getattr(datasets, FROM_FASTMLP_DATASETS[name])()
    except (OSError, ValueError) as exc:  # files missing, truncated or corrupt
        raise InputError(f"could not load data set {name!r}: {exc}") from None
    return X, y


# ---------------------------------------------------------------------------- .npz
def _read_npz(path, target_required):
    headers = _npz_headers(path)
    if "X" not in headers:
        raise InputError(f"{path}: no array named 'X' (the file holds {sorted(headers)})")
    if target_required and "y" not in headers:
        raise InputError(f"{path}: no array named 'y' with the targets (the file holds "
                         f"{sorted(headers)})")
    x_shape, x_dtype = headers["X"]
    if len(x_shape) != 2:
        raise InputError(f"{path}: X must be 2-D (rows x features), its shape is {x_shape}")
    if x_shape[0] == 0 or x_shape[1] == 0:
        raise InputError(f"{path}: X is empty (shape {x_shape}); it needs rows and columns")
    if x_dtype.kind not in "biuf":
        raise InputError(f"{path}: X must hold numbers, its dtype is {x_dtype}")
    y_header = headers.get("y") if target_required else None  # predicting ignores y
    if y_header is not None:
        y_shape, y_dtype = y_header
        if y_shape[:1] != x_shape[:1]:
            raise InputError(f"{path}: X has {x_shape[0]} rows but y has "
                             f"{y_shape[0] if y_shape else 0}")
        if len(y_shape) > 2:
            raise InputError(f"{path}: y must be 1-D (or 2-D for several targets), its shape "
                             f"is {y_shape}")
        check_labels(np.empty(0, y_dtype), f"{path}: y")
    _check_memory(path, {name: headers[name] for name in ("X", "y")
                         if name == "X" or y_header is not None}, x_shape)
    try:
        with np.load(path, allow_pickle=False) as archive:
            X = archive["X"]
            y = archive["y"] if y_header is not None else None
    except MemoryError:
        raise InputError(f"{path}: not enough memory to read X of shape {x_shape}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    if y is not None:
        check_labels(y, f"{path}: y")
    table = table_from_array(X)
    _check_finite(path, table)
    return Data(table, y, path.name, None, None)


def _npz_headers(path):
    """{array name: (shape, dtype)} of an .npz file, from each member's .npy header: nothing
    is loaded, so sizes can be checked first."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith(".npy"):
                    continue
                with archive.open(name) as member:
                    version = np.lib.format.read_magic(member)
                    read = {(1, 0): np.lib.format.read_array_header_1_0,
                            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read is None:
                        raise InputError(f"{path}: array {name[:-4]!r} uses .npy format "
                                         f"version {version}, which is not supported")
                    shape, _, dtype = read(member)
                headers[name[:-4]] = (tuple(shape), np.dtype(dtype))
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile,
            NotImplementedError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({_first_line(exc)})") from None
    for name, (_, dtype) in headers.items():
        if dtype.hasobject:
            raise InputError(f"{path}: array {name!r} holds Python objects (dtype {dtype}), "
                             "which fastmlp does not load (they would need pickle); save "
                             "numbers or strings")
    return headers


def _check_memory(path, headers, x_shape):
    """Refuse, before loading, an .npz file whose declared arrays would not fit in memory
    together with the float64 copies training makes."""
    declared = sum(int(np.prod(headers[name][0], dtype=object)) * headers[name][1].itemsize
                   for name in ("X", "y") if name in headers)
    needed = declared + int(np.prod(x_shape, dtype=object)) * 8 * FLOAT64_COPIES
    budget = memory_budget()
    if budget is not None and needed > budget:
        raise InputError(f"{path}: X declares shape {x_shape} of {headers['X'][1]} "
                         f"({size_text(declared)} with y); reading and training on it needs "
                         f"about {size_text(needed)} of memory, more than the "
                         f"{size_text(budget)} available")


def _first_line(exc):
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------- CSV
def _read_csv(path, target, target_required, columns, kinds):
    """A CSV file with a header row: feature columns of numbers or text, and optionally a
    target column."""
    reader = _CsvColumns(path, target, target_required, columns, kinds)
    table, y_text = reader.read()
    y = None
    if target_required:
        target_name = reader.header[reader.target_index]
        missing = np.flatnonzero(_is_missing(y_text))
        if missing.size:
            raise InputError(f"{path}: the target column {target_name!r} is empty on "
                             f"{table.where(missing[0])} ({missing.size} rows have no target); "
                             "every training row needs one")
        y = _parse_target(y_text)
    _check_finite(path, table)
    return Data(table, y, path.name, None,
                None if reader.target_index is None else reader.header[reader.target_index])


class _CsvColumns:
    """One pass over a CSV file (two when a column turns out to hold text late in the file)."""

    def __init__(self, path, target, target_required, columns, kinds):
        self.path = path
        try:
            with self._open() as file:
                header = next(csv.reader(file), None)
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc})") from None
        except csv.Error as exc:
            raise InputError(f"{path}: not valid CSV ({exc})") from None
        if not header:
            raise InputError(f"{path}: the file is empty (a header row is expected)")
        self.header = [name.strip() for name in header]
        if target_required:  # training: the model will find its columns by these names
            try:
                check_column_names(self.header)
            except ValueError as exc:
                raise InputError(f"{path}: in the header row, {exc}") from None
        self.target_index = _target_index(path, self.header, target, target_required)
        if columns is not None:
            missing = [name for name in columns if name not in self.header]
            if missing:
                raise InputError(f"{path}: the model needs columns {missing}, which the file "
                                 "does not have")
            repeated = [name for name in columns if self.header.count(name) > 1]
            if repeated:
                raise InputError(f"{path}: the header names column {repeated[0]!r} "
                                 f"{self.header.count(repeated[0])} times; the model needs "
                                 "to know which one to read")
            self.index = [self.header.index(name) for name in columns]
        else:
            self.index = [i for i in range(len(self.header)) if i != self.target_index]
        if not self.index:
            raise InputError(f"{path}: no feature columns besides the target "
                             f"{self.header[self.target_index]!r}")
        self.names = [self.header[i] for i in self.index]
        self.required = list(kinds) if kinds is not None else [None] * len(self.names)

    def _open(self):
        return open(self.path, newline="", encoding="utf-8-sig")  # -sig: Excel's BOM

    def _chunks(self, wanted):
        """(text block of the `wanted` header columns, line numbers, target texts) per chunk."""
        try:
            with self._open() as file:
                reader = csv.reader(file)
                next(reader)
                rows, lines, targets = [], [], []
                for row in reader:
                    if not row:
                        continue  # blank lines carry no data
                    if len(row) != len(self.header):
                        raise InputError(f"{self.path}, line {reader.line_num}: {len(row)} "
                                         f"fields, but the header has {len(self.header)}")
                    rows.append([row[i] for i in wanted])
                    lines.append(reader.line_num)
                    if self.target_index is not None:
                        targets.append(row[self.target_index])
                    if len(rows) == CSV_CHUNK_ROWS:
                        yield np.array(rows, dtype=str).reshape(len(rows), -1), lines, targets
                        rows, lines, targets = [], [], []
                if rows:
                    yield np.array(rows, dtype=str).reshape(len(rows), -1), lines, targets
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.path}: not UTF-8 text ({exc})") from None
        except csv.Error as exc:
            raise InputError(f"{self.path}: not valid CSV ({exc})") from None

    def read(self):
        """(Table, target texts): every column parsed as its kind."""
        kinds = list(self.required)
        numbers = [[] for _ in self.names]
        texts = [[] for _ in self.names]
        late_text = set()  # columns of numbers that held text in a later chunk
        all_lines, y_text = [], []
        for block, lines, targets in self._chunks(self.index):
            all_lines += lines
            y_text += targets
            if kinds.count(TEXT) == 0 and _all_numbers(block):
                for j in range(len(self.names)):
                    numbers[j].append(block[:, j].astype(np.float64))
                    kinds[j] = NUMBER
                continue
            for j in range(len(self.names)):
                if kinds[j] != TEXT:
                    parsed = _parse_numbers(block[:, j])
                    if parsed is not None:
                        numbers[j].append(parsed)
                        kinds[j] = NUMBER
                        continue
                    if self.required[j] == NUMBER:
                        self._not_a_number(j, block[:, j], lines)
                    if numbers[j]:
                        late_text.add(j)
                    kinds[j] = TEXT
                texts[j].append(_texts(block[:, j]))
        if not all_lines:
            raise InputError(f"{self.path}: no data rows after the header")
        if late_text:
            self._reread_as_text(sorted(late_text), texts)
        number_columns = [np.concatenate(numbers[j]) for j, k in enumerate(kinds) if k == NUMBER]
        block = (np.column_stack(number_columns) if number_columns
                 else np.empty((len(all_lines), 0)))
        table = Table(tuple(self.names), tuple(kinds), block,
                      tuple(np.concatenate(texts[j]) for j, k in enumerate(kinds) if k == TEXT),
                      np.array(all_lines), True)
        return table, np.array(y_text, dtype=str)

    def _reread_as_text(self, columns, texts):
        for j in columns:
            texts[j] = []
        for block, _, _ in self._chunks([self.index[j] for j in columns]):
            for position, j in enumerate(columns):
                texts[j].append(_texts(block[:, position]))

    def _not_a_number(self, j, column, lines):
        bad = first_non_number(column)
        raise InputError(f"{self.path}: column {self.names[j]!r} must hold numbers, as when the "
                         f"model was trained, but holds {str(column[bad])!r} on line {lines[bad]}")


def _target_index(path, header, target, target_required):
    if target is None:
        return len(header) - 1 if target_required else None
    matches = [i for i, name in enumerate(header) if name == target.strip()]
    if not matches:
        raise InputError(f"{path}: target column {target!r} not found; the columns are "
                         f"{header}")
    if len(matches) > 1:
        raise InputError(f"{path}: the header has {len(matches)} columns named {target!r}")
    return matches[0]


def _is_missing(column):
    return np.isin(np.char.lower(np.char.strip(column)), MISSING)


def _all_numbers(block):
    """Whether numpy reads every field of the text block as a number (the fast path)."""
    try:
        block.astype(np.float64)
    except ValueError:
        return False
    return True


def _parse_numbers(column):
    """The text column as float64, NaN where missing; None when some value is not a number."""
    try:
        return np.where(_is_missing(column), "nan", column).astype(np.float64)
    except ValueError:
        return None


def first_non_number(column):
    """Index of the first entry of a text column (str or object array, None for missing) that
    is neither missing nor a number; None when there is none."""
    for i, value in enumerate(column):
        if value is not None and _parse_numbers(np.array([value], dtype=str)) is None:
            return i
    return None


def _texts(column):
    """The text column stripped, as an object array with None where missing."""
    values = np.char.strip(column).astype(object)
    values[_is_missing(column)] = None
    return values


def _parse_target(text):
    """Integers or floats when every value is one, else the labels as strings."""
    for dtype in (np.int64, np.float64):
        try:
            return text.astype(dtype)
        except (ValueError, OverflowError):
            continue
    return np.char.strip(text)


def _check_finite(path, table):
    """Missing values are NaN and allowed; an infinite one is an error naming where it is."""
    infinite = np.isinf(table.numbers)
    if infinite.any():
        row, column = np.argwhere(infinite)[0]
        name = table.names_of(NUMBER)[column]
        raise InputError(f"{path}: column {name!r} holds an infinite value on "
                         f"{table.where(row)} (inf, or a number beyond float64's range); "
                         "feature values must be finite (leave a field empty when it is "
                         "missing)")
