"""Column preprocessing for tables read from files: impute, standardise, one-hot encode.

Plain NumPy with JSON-able fitted state (``to_dict``/``from_dict``), so that a model file can hold
it without pickle. It reads no files and trains nothing: ``fastmlp.tabular`` builds the Table it
works on, and the command line decides when to use it.
"""

import math
from typing import NamedTuple

import numpy as np

NUMBER, TEXT = "number", "text"  # the two kinds of column
MAX_CATEGORIES = 1000  # distinct values a text column may hold; each becomes a feature
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


class TabularPreprocessor:
    """Impute missing values, standardise number columns and one-hot encode text columns.

    Fitted on a :class:`Table`, it reproduces scikit-learn's
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
    by_name : bool
        Whether the column names came from a header, so that new data is matched by name.
    n_features_out_ : int
        Width of the transformed array.
    """

    def __init__(self, max_categories=MAX_CATEGORIES):
        self.max_categories = max_categories

    # ------------------------------------------------------------------ fitting
    def fit(self, table):
        """Learn fill values, means, scales and categories from `table`.

        Raises
        ------
        ValueError
            When the table has no rows or a text column has more than ``max_categories``
            distinct values.
        """
        if table.n_rows == 0:
            raise ValueError("cannot fit preprocessing on a table without rows")
        numbers, texts = iter(table.numbers.T), iter(table.texts)
        columns = []
        for name, kind in zip(table.names, table.kinds):
            if kind == NUMBER:
                columns.append({"name": name, "kind": NUMBER, **_number_stats(next(numbers))})
            else:
                columns.append({"name": name, "kind": TEXT,
                                **self._text_stats(name, next(texts))})
        self.columns_ = columns
        self.by_name = table.by_name
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
        return self

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

    # ------------------------------------------------------------------ transforming
    def transform(self, table):
        """The table as a float64 array of ``n_features_out_`` columns.

        Raises
        ------
        ValueError
            When the table's columns (names where matched by name, and kinds) are not the
            fitted ones.
        """
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

    def fit_transform(self, table):
        """``fit(table).transform(table)``."""
        return self.fit(table).transform(table)

    # ------------------------------------------------------------------ storage
    def to_dict(self):
        """The fitted state as plain JSON-able data (see ``from_dict``)."""
        return {"by_name": bool(self.by_name), "columns": [dict(c) for c in self.columns_]}

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
        names = [c["name"] for c in checked]
        if len(set(names)) != len(names):
            raise ValueError("preprocessing: column names repeat")
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
        self.by_name = data["by_name"]
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
