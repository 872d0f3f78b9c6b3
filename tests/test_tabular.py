"""fastmlp.tabular: CSV columns read with their kinds and missing values, chunk by chunk, and
.npz files checked before use."""

import re

import numpy as np
import pandas as pd
import pytest

from fastmlp import tabular
from fastmlp.preprocessing import NUMBER, TEXT
from fastmlp.tabular import InputError, load_data

CSV = """\
a,colour,b,label
1.5,red,2,x
NA, blue ,?,y
3,,nan,x
N/A,red,-4e3,y
7,NULL,1,x
"""


def test_csv_columns_keep_their_kind_and_missing_values(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(CSV)
    data = load_data(str(path), target_required=True)
    table = data.table
    assert table.names == ("a", "colour", "b") and table.kinds == (NUMBER, TEXT, NUMBER)
    # pandas, told the same missing markers, is the oracle for every cell.
    frame = pd.read_csv(path, na_values=["?", "N/A", "NULL"], keep_default_na=True,
                        skipinitialspace=True)
    np.testing.assert_array_equal(table.numbers, frame[["a", "b"]].to_numpy(dtype=float))
    expected = [None if pd.isna(v) else v.strip() for v in frame["colour"]]
    assert list(table.texts[0]) == expected
    assert list(data.y) == list(frame["label"]) and data.target_name == "label"
    assert list(table.lines) == [2, 3, 4, 5, 6]


def test_a_column_that_turns_to_text_late_is_read_as_text_throughout(tmp_path, monkeypatch):
    path = tmp_path / "late.csv"
    values = ["1", "2", "3", "4", "5", "six"]
    path.write_text("v,w,y\n" + "".join(f"{v},{i},{i % 2}\n" for i, v in enumerate(values)))
    monkeypatch.setattr(tabular, "CSV_CHUNK_ROWS", 2)  # 'six' arrives in the third chunk
    table = load_data(str(path), target_required=True).table
    assert table.kinds == (TEXT, NUMBER)
    assert list(table.texts[0]) == values  # the text as written, not '1.0'
    np.testing.assert_array_equal(table.numbers[:, 0], np.arange(6))


def test_required_kinds_read_numbers_as_text_and_refuse_text_as_numbers(tmp_path):
    path = tmp_path / "k.csv"
    path.write_text("code,n\n01,5\n2,x\n")
    table = load_data(str(path), columns=["code"], kinds=[TEXT]).table
    assert list(table.texts[0]) == ["01", "2"]  # categories compare as text
    with pytest.raises(InputError, match="column 'n' must hold numbers, as when the model was "
                                         "trained, but holds 'x' on line 3"):
        load_data(str(path), columns=["n"], kinds=[NUMBER])


def test_infinite_values_and_rows_without_target_are_refused(tmp_path):
    path = tmp_path / "inf.csv"
    path.write_text("a,y\n1,0\ninf,1\n")
    with pytest.raises(InputError, match="column 'a' holds an infinite value on line 3"):
        load_data(str(path), target_required=True)
    path.write_text("a,y\n1,0\n2,\n3,1\n")
    with pytest.raises(InputError, match="the target column 'y' is empty on line 3"):
        load_data(str(path), target_required=True)
    # Predicting ignores the target column, empty or not.
    assert load_data(str(path), target="y").y is None


@pytest.mark.parametrize("arrays, message", [
    ({}, "no array named 'X' (the file holds [])"),
    ({"X": np.empty((0, 3)), "y": np.empty(0)}, "X is empty (shape (0, 3))"),
    ({"X": np.empty((4, 0)), "y": np.zeros(4)}, "X is empty (shape (4, 0))"),
    ({"X": np.array([[1.0], [np.inf]]), "y": np.zeros(2)}, "infinite value on row 2"),
])
def test_npz_contents_are_checked(tmp_path, arrays, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError) as caught:
        load_data(str(path), target_required=True)
    assert message in str(caught.value)


def test_zero_byte_npz_is_refused(tmp_path):
    path = tmp_path / "zero.npz"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="not a readable .npz file"):
        load_data(str(path))


@pytest.mark.parametrize("content, message", [
    (b"caf\xe9,y\n1,0\n", "not UTF-8 text"),
    (b"a,y\n1,0\n\xff,1\n", "not UTF-8 text"),
    (b"a,y\n" + b"1" * 200_000 + b",0\n", "not valid CSV"),  # beyond csv's field limit
])
def test_unreadable_csv_text_is_an_input_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_data(str(path), target_required=True)


def _header_only_npz(path, shapes):
    """An .npz whose members declare `shapes` ({name: (shape, descr)}) and hold no data."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, (shape, descr) in shapes.items():
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": descr, "fortran_order": False, "shape": shape})
            archive.writestr(f"{name}.npy", header.getvalue())
    return path


def test_npz_sizes_are_checked_from_the_headers_before_anything_is_loaded(tmp_path,
                                                                          monkeypatch):
    path = _header_only_npz(tmp_path / "big.npz", {"X": ((50_000, 1000), "<f4"),
                                                   "y": ((50_000,), "<i8")})
    monkeypatch.setattr(tabular, "memory_budget", lambda: 2**30)  # 1 GiB available

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded an array before checking its declared size")

    monkeypatch.setattr(np, "load", no_loading)
    # 200 MB of float32 and y, plus three float64 copies (1.2 GB): more than 1 GiB.
    with pytest.raises(InputError, match=r"X declares shape \(50000, 1000\) of float32 "
                                         r"\(191\.1 MiB with y\); reading and training on it "
                                         r"needs about 1\.3 GiB of memory, more than the "
                                         r"1\.0 GiB available"):
        load_data(str(path), target_required=True)


@pytest.mark.parametrize("shapes, message", [
    ({"X": ((4, 2), "<f8"), "y": ((4,), "<M8[D]")}, "y holds dates (datetime64)"),
    ({"X": ((4, 2), "<f8"), "y": ((4,), "|S3")}, "y holds bytes"),
    ({"X": ((4, 2), "<f8"), "y": ((4,), "|O")}, "array 'y' holds Python objects"),
    ({"X": ((4, 2), "<f8"), "y": ((3,), "<i8")}, "X has 4 rows but y has 3"),
    ({"X": ((4, 2), "<f8"), "y": ((4, 1, 1), "<i8")}, "y must be 1-D"),
    ({"X": ((4, 2), "<c16"), "y": ((4,), "<i8")}, "X must hold numbers, its dtype is "
                                                  "complex128"),
], ids=["datetime", "bytes", "object", "rows", "3-D", "complex X"])
def test_npz_dtypes_and_shapes_are_refused_from_the_headers(tmp_path, shapes, message):
    path = _header_only_npz(tmp_path / "d.npz", shapes)  # no data: loading would fail
    with pytest.raises(InputError, match=re.escape(message)):
        load_data(str(path), target_required=True)


@pytest.mark.parametrize("header, message", [
    ("a,b,a,y", "columns 1 and 3 are both named 'a'"),
    ("a, ,b,y", "column 2 has no name ('')"),
])
def test_training_header_names_must_be_distinct_and_non_empty(tmp_path, header, message):
    path = tmp_path / "h.csv"
    path.write_text(header + "\n1,2,3,0\n")
    with pytest.raises(InputError, match=re.escape(f"in the header row, {message}")):
        load_data(str(path), target_required=True)
