"""Column preprocessing for tables: impute, standardise, one-hot encode.

A scikit-learn transformer over a :class:`Table` (what ``fastmlp.tabular`` reads from files), a
pandas DataFrame, a 2-D array or a list of rows, with JSON-able fitted state (``to_dict`` /
``from_dict``) so that a model file can hold it without pickle. It reads no files and trains
nothing; the command line decides when to use it.
"""

import math
from numbers import Real
from typing import NamedTuple

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

NUMBER, TEXT = "number", "text"  # the two kinds of column
MAX_CATEGORIES = 1000  # distinct values a text column may hold; each becomes a feature
# Text read as a missing value (compared after stripping spaces, ignoring case).
MISSING = ("", "?", "na", "n/a", "nan", "null", "<na>")
# Characters the fixed-width category arrays may hold in all (count x longest, per column): 64 MiB.
MAX_CATEGORY_CELLS = 2**24


class Table(NamedTuple):
    """Feature columns read from a file: numbers in one block, each text column apart.

    Missing values are NaN in ``numbers`` and None in a text column.
    """

    names: tuple  # every feature column's name, in file order
    kinds: tuple  # NUMBER or TEXT, one per name
    numbers: np.ndarray  # (rows, number columns) float64, in file order of the NUMBER columns
    texts: tuple  # one (rows,) object array of str per TEXT column, in file order
    lines: object  # (rows,) int array: each row's line in a CSV file; None: rows count from 1
    by_name: bool  # names come from a header (CSV); otherwise columns are matched by position

    @property
    def n_rows(self):
        return self.numbers.shape[0]

    def take(self, rows):
        """The table restricted to `rows` (an index array), in that order."""
        return self._replace(numbers=self.numbers[rows],
                             texts=tuple(column[rows] for column in self.texts),
                             lines=None if self.lines is None else self.lines[rows])

    def where(self, row):
        """Where row number `row` came from, for messages: 'line 7' or 'row 7'."""
        return f"row {row + 1}" if self.lines is None else f"line {self.lines[row]}"

    def names_of(self, kind):
        return [name for name, k in zip(self.names, self.kinds) if k == kind]


def table_from_array(X):
    """A Table of the numeric 2-D array X, its columns named x0, x1, ... and matched by
    position."""
    X = np.asarray(X, dtype=np.float64)
    names = tuple(f"x{j}" for j in range(X.shape[1]))
    return Table(names, (NUMBER,) * len(names), X, (), None, False)


def check_column_names(names):
    """Refuse column names a model cannot find its columns by: each must be non-empty text
    (after stripping spaces) and appear once. The one rule for training and for loading.

    Raises
    ------
    ValueError
        Naming the first column (1-based) that breaks the rule.
    """
    seen = {}
    for position, name in enumerate(names, start=1):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"column {position} has no name ({name!r}); every column needs a "
                             "distinct, non-empty name")
        if name in seen:
            raise ValueError(f"columns {seen[name]} and {position} are both named {name!r}; "
                             "every column needs a distinct, non-empty name")
        seen[name] = position


def as_table(X, names=None, kinds=None):
    """A :class:`Table` of `X`: a Table (returned as it is), a pandas DataFrame (columns by
    name), a 2-D array or a list of rows (columns by position).

    Parameters
    ----------
    names : list of str, default=None
        For a DataFrame: the columns to take, in this order (others are ignored).
    kinds : list of str, default=None
        Each column's kind; a NUMBER column holding text is then an error. Without it, a column
        is numbers when every value that is not missing is a number (as in a CSV file).

    Missing values are None, NaN, pandas' NA, or text in ``MISSING`` ('', 'NA', '?', ...).

    Raises
    ------
    ValueError
        When `X` is not 2-D, lacks a named column, or a number column holds text.
    """
    if isinstance(X, Table):
        return X
    if scipy.sparse.issparse(X):  # scikit-learn's wording
        raise TypeError("Sparse data was passed, but dense data is required. Use "
                        "'.toarray()' to convert to a dense numpy array.")
    if hasattr(X, "columns") and hasattr(X, "iloc"):  # a pandas DataFrame, without importing it
        frame_names = [str(name) for name in X.columns]
        check_column_names(frame_names)
        if names is None:
            names, columns = frame_names, [X.iloc[:, j] for j in range(X.shape[1])]
        else:
            absent = [name for name in names if name not in frame_names]
            if absent:
                raise ValueError(f"the data has no columns named {absent}; preprocessing was "
                                 f"fitted on {list(names)}")
            columns = [X.iloc[:, frame_names.index(name)] for name in names]
        columns = [_frame_column(column) for column in columns]
        by_name = True
    else:
        array = np.asarray(X) if isinstance(X, np.ndarray) else np.array(X, dtype=object)
        if array.ndim != 2:
            raise ValueError(f"Expected 2D array (rows x columns), got {array.ndim}D array "
                             "instead. Reshape your data either using array.reshape(-1, 1) if "
                             "your data has a single feature or array.reshape(1, -1) if it "
                             "contains a single sample.")
        if array.dtype.kind == "c" or (array.dtype.kind == "O" and any(
                isinstance(v, complex) for v in array.flat)):
            raise ValueError("Complex data not supported")
        if array.dtype.kind in "biuf":
            return table_from_array(array)
        columns = [array[:, j].astype(object) for j in range(array.shape[1])]
        names, by_name = [f"x{j}" for j in range(array.shape[1])], False
    if kinds is not None and len(kinds) != len(columns):
        raise ValueError(f"the data has {len(columns)} columns, preprocessing was fitted on "
                         f"{len(kinds)}")
    numbers, texts, found = [], [], []
    for j, (name, column) in enumerate(zip(names, columns)):
        wanted = None if kinds is None else kinds[j]
        parsed = None if wanted == TEXT else _as_numbers(column)
        if parsed is not None:
            numbers.append(parsed)
            found.append(NUMBER)
        elif wanted == NUMBER:
            bad = next(i for i, v in enumerate(column)
                       if _as_numbers(np.array([v, None], dtype=object)) is None)
            raise ValueError(f"column {name!r} must hold numbers, as in fitting, but holds "
                             f"{column[bad]!r} in row {bad + 1}")
        else:
            texts.append(np.array([None if _missing(v) else str(v).strip()
                                   for v in column.astype(object)], dtype=object))
            found.append(TEXT)
    n_rows = len(columns[0]) if columns else 0
    block = np.column_stack(numbers) if numbers else np.empty((n_rows, 0))
    return Table(tuple(names), tuple(found), block, tuple(texts), None, by_name)


def _frame_column(series):
    """A DataFrame column as float64 (numeric dtypes, NA as NaN) or as an object array."""
    if series.dtype.kind in "iuf":  # numpy's and pandas' nullable numeric dtypes
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(series.to_numpy(dtype=object), dtype=object)


def _missing(value):
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in MISSING
    try:
        return bool(value != value)  # NaN, NaT
    except TypeError:  # pandas.NA refuses to be a bool
        return True


def _as_numbers(column):
    """The column as float64 with NaN where missing; None when a value is not a number. Text is
    parsed as a CSV field is; booleans and other objects are not numbers."""
    if column.dtype.kind in "iuf":
        return column.astype(np.float64)
    present = np.flatnonzero([not _missing(v) for v in column])
    values = column[present]
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (str, Real)) for v in values):
        return None
    text = np.array([isinstance(v, str) for v in values], dtype=bool)
    out = np.full(len(column), np.nan)
    try:
        out[present[~text]] = np.array(list(values[~text]), dtype=np.float64)
        out[present[text]] = np.array([v.strip() for v in values[text]], dtype=str) \
            .astype(np.float64)
    except (ValueError, OverflowError):
        return None
    return out


class TabularPreprocessor(TransformerMixin, BaseEstimator):
    """Impute missing values, standardise number columns and one-hot encode text columns.

    A scikit-learn transformer. It takes a pandas DataFrame (columns found by name, in any
    order; others ignored), a 2-D array or list of rows (columns by position; text and None
    allowed), or a :class:`Table`. A column is numbers when every value that is not missing
    (None, NaN, pandas' NA, or text such as '', 'NA', '?') is a number, else text. It
    reproduces scikit-learn's
    ``ColumnTransformer([("number", make_pipeline(SimpleImputer(strategy="median"),
    StandardScaler()), number_columns), ("text", make_pipeline(SimpleImputer(
    strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), text_columns)])``:
    the standardised number columns first, then each text column's indicator columns, its
    categories in sorted order. Text values not seen in fitting encode as all zeros.

    Parameters
    ----------
    max_categories : int, default=1000
        Most distinct values a text column may hold; fitting refuses more, since each value
        becomes a feature.

    Attributes
    ----------
    columns_ : list of dict
        One entry per input column, in input order: ``name``, ``kind`` and ``fill`` (the value
        that replaces a missing one: the median, or the most frequent text), plus ``mean`` and
        ``scale`` for numbers, or ``categories`` for text.
    by_name_ : bool
        Whether the column names came from a header or a DataFrame, so that new data is
        matched by name (also readable as ``by_name``).
    n_features_in_ : int
        Number of input columns.
    feature_names_in_ : ndarray of str
        The input columns' names, when fitted on named columns.
    n_features_out_ : int
        Width of the transformed array.

    Examples
    --------
    >>> rows = [[5.1, "red", None], [4.9, None, 2.0], [6.2, "blue", 3.0]]
    >>> TabularPreprocessor().fit_transform(rows).shape
    (3, 4)
    """

    def __init__(self, max_categories=MAX_CATEGORIES):
        self.max_categories = max_categories

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Learn fill values, means, scales and categories from `X`.

        Parameters
        ----------
        X : DataFrame, array-like of shape (n_samples, n_features), or Table
        y : None
            Ignored; present for scikit-learn's API.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            When `X` has no rows, named columns whose names are empty or repeat, or a text
            column with more than ``max_categories`` distinct values.
        """
        table = as_table(X)
        shape = (table.n_rows, len(table.names))
        if table.n_rows == 0:  # scikit-learn's wording, for both
            raise ValueError(f"Found array with 0 sample(s) (shape={shape}) while a minimum "
                             "of 1 is required by TabularPreprocessor.")
        if not table.names:
            raise ValueError(f"Found array with 0 feature(s) (shape={shape}) while a minimum "
                             "of 1 is required by TabularPreprocessor.")
        if table.by_name:
            check_column_names(table.names)
        numbers, texts = iter(table.numbers.T), iter(table.texts)
        columns = []
        for name, kind in zip(table.names, table.kinds):
            if kind == NUMBER:
                columns.append({"name": name, "kind": NUMBER, **_number_stats(next(numbers))})
            else:
                columns.append({"name": name, "kind": TEXT,
                                **self._text_stats(name, next(texts))})
        self.columns_ = columns
        self.by_name_ = bool(table.by_name)
        return self._finish()

    def _text_stats(self, name, column):
        present = column[_present(column)].astype(str)
        if present.size == 0:
            return {"fill": "", "categories": [""]}
        values, counts = np.unique(present, return_counts=True)
        fill = str(values[np.argmax(counts)])  # ties: the smallest value, as scikit-learn
        if len(values) > self.max_categories:
            raise ValueError(f"column {name!r} holds {len(values)} distinct text values, more "
                             f"than {self.max_categories}: one-hot encoding would add a feature "
                             "for each. Remove the column, or give it as numbers")
        return {"fill": fill, "categories": [str(v) for v in values]}

    def _finish(self):
        """Derive the arrays transform uses from columns_ (after fit or from_dict)."""
        number = [c for c in self.columns_ if c["kind"] == NUMBER]
        self._fill = np.array([c["fill"] for c in number], dtype=np.float64)
        self._mean = np.array([c["mean"] for c in number], dtype=np.float64)
        self._scale = np.array([c["scale"] for c in number], dtype=np.float64)
        self._categories = [np.array(c["categories"], dtype=str)
                            for c in self.columns_ if c["kind"] == TEXT]
        self.n_features_out_ = len(number) + sum(len(c) for c in self._categories)
        self.n_features_in_ = len(self.columns_)
        if self.by_name_:
            self.feature_names_in_ = np.array(self.names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    @property
    def by_name(self):
        """Whether new data is matched by column name (``by_name_``)."""
        return self.by_name_

    @property
    def names(self):
        """The input columns' names, in input order."""
        return [c["name"] for c in self.columns_]

    @property
    def kinds(self):
        """The input columns' kinds (NUMBER or TEXT), in input order."""
        return [c["kind"] for c in self.columns_]

    @property
    def n_numbers(self):
        """How many input columns are numbers: they are the first outputs, in this order."""
        return len(self._mean)

    def feature_names_out(self):
        """Names of the output columns: a number column's name, or 'column=value'."""
        names = [c["name"] for c in self.columns_ if c["kind"] == NUMBER]
        for column, categories in zip((c for c in self.columns_ if c["kind"] == TEXT),
                                      self._categories):
            names += [f"{column['name']}={value}" for value in categories]
        return names

    def get_feature_names_out(self, input_features=None):
        """Output feature names: a number column's name, or 'column=value' per category.

        Parameters
        ----------
        input_features : array-like of str, default=None
            Must equal the fitted input names when given (scikit-learn's convention).

        Returns
        -------
        feature_names_out : ndarray of str objects
        """
        check_is_fitted(self, "columns_")
        if input_features is not None and list(input_features) != self.names:
            raise ValueError(f"input_features {list(input_features)} are not the fitted "
                             f"columns {self.names}")
        return np.array(self.feature_names_out(), dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        return tags

    # ------------------------------------------------------------------ transforming
    def transform(self, X):
        """`X` as a float64 array of ``n_features_out_`` columns.

        Parameters
        ----------
        X : DataFrame, array-like of shape (n_samples, n_features), or Table
            The columns fitted on: found by name in a DataFrame when fitted on named columns
            (others are ignored), else taken by position.

        Returns
        -------
        X_out : ndarray of shape (n_samples, n_features_out_)

        Raises
        ------
        ValueError
            When the columns (names where matched by name, and kinds) are not the fitted
            ones, or a number column holds text.
        """
        check_is_fitted(self, "columns_")
        table = as_table(X, names=self.names if self.by_name_ else None, kinds=self.kinds)
        if len(table.names) != self.n_features_in_:
            raise ValueError(f"X has {len(table.names)} features, but TabularPreprocessor is "
                             f"expecting {self.n_features_in_} features as input.")
        if list(table.kinds) != self.kinds or (
                self.by_name and table.by_name and list(table.names) != self.names):
            raise ValueError(f"the table's columns {list(table.names)} are not the columns "
                             f"preprocessing was fitted on, {self.names}")
        out = np.zeros((table.n_rows, self.n_features_out_), dtype=np.float64)
        numbers = np.where(np.isnan(table.numbers), self._fill, table.numbers)
        out[:, :self.n_numbers] = (numbers - self._mean) / self._scale
        offset = self.n_numbers
        fills = (c["fill"] for c in self.columns_ if c["kind"] == TEXT)
        for column, categories, fill in zip(table.texts, self._categories, fills):
            values = np.where(_present(column), column, fill).astype(str)
            codes = np.minimum(np.searchsorted(categories, values), len(categories) - 1)
            known = np.flatnonzero(categories[codes] == values)  # the others stay all zero
            out[known, offset + codes[known]] = 1.0
            offset += len(categories)
        return out

    # ------------------------------------------------------------------ storage
    def to_dict(self):
        """The fitted state as plain JSON-able data (see ``from_dict``)."""
        return {"by_name": bool(self.by_name_), "columns": [dict(c) for c in self.columns_]}

    @classmethod
    def from_dict(cls, data):
        """A fitted preprocessor from ``to_dict``'s output, checked field by field.

        Raises
        ------
        ValueError
            Naming the first field that is missing, of the wrong type or inconsistent.
        """
        if not isinstance(data, dict) or set(data) != {"by_name", "columns"}:
            raise ValueError("preprocessing must be an object with 'by_name' and 'columns'")
        columns = data["columns"]
        if not isinstance(data["by_name"], bool) or not isinstance(columns, list) \
                or not columns:
            raise ValueError("preprocessing: 'by_name' must be true/false and 'columns' a "
                             "non-empty list")
        checked = [_checked_column(i, column) for i, column in enumerate(columns)]
        try:
            check_column_names([c["name"] for c in checked])
        except ValueError as exc:
            raise ValueError(f"preprocessing: {exc}") from None
        # Each text column becomes an array as wide as its longest category: a few long and many
        # short categories in a small file must not allocate gigabytes.
        cells = sum(len(c["categories"]) * max(map(len, c["categories"])) for c in checked
                    if c["kind"] == TEXT)
        if cells > MAX_CATEGORY_CELLS:
            raise ValueError(f"preprocessing: the text columns' categories would take "
                             f"{cells * 4 // 2**20} MiB as arrays, more than "
                             f"{MAX_CATEGORY_CELLS * 4 // 2**20} MiB")
        self = cls()
        self.columns_ = checked
        self.by_name_ = data["by_name"]
        return self._finish()


def _present(column):
    """Boolean mask of the non-missing entries of a text column."""
    return np.array([value is not None for value in column], dtype=bool)


def _number_stats(column):
    """Median fill, then mean and scale (standard deviation, 1 for a constant column) of the
    filled column."""
    present = column[~np.isnan(column)]
    fill = float(np.median(present)) if present.size else 0.0
    filled = np.where(np.isnan(column), fill, column)
    if filled.max() == filled.min():
        return {"fill": fill, "mean": float(filled[0]), "scale": 1.0}
    # Statistics of column / peak, scaled back: squares of values near 1e200 would overflow.
    peak = float(np.max(np.abs(filled)))
    unit = filled / peak
    return {"fill": fill, "mean": float(unit.mean() * peak), "scale": float(unit.std() * peak)}


def _finite_number(value):
    if type(value) not in (int, float):  # bool, str, None, ...
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float's range
        return False


_FIELDS = {NUMBER: {"name", "kind", "fill", "mean", "scale"},
           TEXT: {"name", "kind", "fill", "categories"}}


def _checked_column(index, column):
    where = f"preprocessing column {index}"
    if not isinstance(column, dict) or column.get("kind") not in _FIELDS:
        raise ValueError(f"{where}: not an object with kind 'number' or 'text'")
    if set(column) != _FIELDS[column["kind"]]:
        raise ValueError(f"{where}: fields {sorted(column)}, expected "
                         f"{sorted(_FIELDS[column['kind']])}")
    if not isinstance(column["name"], str):
        raise ValueError(f"{where}: the name must be text")
    if column["kind"] == NUMBER:
        values = [column["fill"], column["mean"], column["scale"]]
        if not all(_finite_number(v) for v in values) or column["scale"] <= 0:
            raise ValueError(f"{where}: fill, mean and scale must be finite numbers, scale "
                             "positive")
        return {key: (float(v) if key in ("fill", "mean", "scale") else v)
                for key, v in column.items()}
    categories = column["categories"]
    if not isinstance(categories, list) or not categories or not all(
            isinstance(v, str) for v in categories) or not isinstance(column["fill"], str):
        raise ValueError(f"{where}: fill must be text and categories a non-empty list of text")
    if any(a >= b for a, b in zip(categories[:-1], categories[1:])):
        raise ValueError(f"{where}: categories must be sorted and distinct")
    return dict(column)
