"""fastmlp.preprocessing.TabularPreprocessor against scikit-learn's ColumnTransformer, its JSON
round trip, the fitted state it refuses to load, and its place in model files (format version 2)."""

import json
import re
import warnings
import zipfile

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastmlp
from fastmlp import ModelFileError, persistence
from fastmlp.preprocessing import NUMBER, TEXT, Table, TabularPreprocessor

NAMES = ("a", "colour", "b", "size", "c")
KINDS = (NUMBER, TEXT, NUMBER, TEXT, NUMBER)


def make_table(rows, seed, vocabulary=("red", "green", "blue")):
    """A Table with missing values in every column, and the same data as a 2-D object array
    with NaN for missing (what scikit-learn's imputers expect)."""
    rng = np.random.default_rng(seed)
    numbers = rng.normal([5.0, -300.0, 0.01], [2.0, 50.0, 0.001], size=(rows, 3))
    numbers[rng.random(numbers.shape) < 0.1] = np.nan
    texts = []
    for _ in range(2):
        column = rng.choice(np.array(vocabulary, dtype=object), size=rows)
        column[rng.random(rows) < 0.1] = None
        texts.append(column)
    table = Table(NAMES, KINDS, numbers, tuple(texts), None, True)
    frame = np.empty((rows, 5), dtype=object)
    frame[:, [0, 2, 4]] = numbers
    frame[:, 1], frame[:, 3] = [np.where(t == None, np.nan, t) for t in texts]  # noqa: E711
    return table, frame


def sklearn_oracle():
    return ColumnTransformer([
        ("number", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
         [0, 2, 4]),
        ("text", make_pipeline(SimpleImputer(strategy="most_frequent"),
                               OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
         [1, 3]),
    ])


def test_transform_matches_scikit_learns_column_transformer():
    train, train_frame = make_table(200, seed=0)
    # New data holds a colour never seen in fitting: it encodes as all zeros in both.
    test, test_frame = make_table(50, seed=1, vocabulary=("red", "blue", "purple"))
    ours = TabularPreprocessor().fit(train)
    oracle = sklearn_oracle().fit(train_frame)
    np.testing.assert_allclose(ours.transform(train), oracle.transform(train_frame),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.transform(test), oracle.transform(test_frame),
                               rtol=1e-12, atol=1e-12)
    assert ours.n_features_out_ == 3 + 3 + 3
    assert ours.feature_names_out()[3:6] == ["colour=blue", "colour=green", "colour=red"]


def test_most_frequent_text_breaks_ties_like_scikit_learn():
    column = np.array(["b", "a", None, "b", "a"], dtype=object)
    table = Table(("t",), (TEXT,), np.empty((5, 0)), (column,), None, True)
    ours = TabularPreprocessor().fit(table)
    frame = np.where(column == None, np.nan, column).reshape(-1, 1)  # noqa: E711
    imputer = SimpleImputer(strategy="most_frequent").fit(frame)
    assert ours.columns_[0]["fill"] == imputer.statistics_[0] == "a"


def test_statistics_of_huge_values_do_not_overflow():
    train, _ = make_table(100, seed=2)
    huge = train._replace(numbers=train.numbers * 1e300)
    small = TabularPreprocessor().fit(train)
    big = TabularPreprocessor().fit(huge)
    for a, b in zip(small.columns_, big.columns_):
        if a["kind"] == NUMBER:
            np.testing.assert_allclose([b["mean"], b["scale"]],
                                       [a["mean"] * 1e300, a["scale"] * 1e300], rtol=1e-12)
    np.testing.assert_allclose(big.transform(huge), small.transform(train), rtol=1e-9,
                               atol=1e-12)


def test_constant_and_empty_columns_give_finite_features():
    numbers = np.array([[3.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    table = Table(("k", "e"), (NUMBER, NUMBER), numbers, (), None, True)
    out = TabularPreprocessor().fit_transform(table)
    np.testing.assert_array_equal(out, np.zeros((3, 2)))  # scale 1, centred: all zeros


def test_json_round_trip_transforms_identically():
    train, _ = make_table(120, seed=3)
    fitted = TabularPreprocessor().fit(train)
    text = json.dumps(fitted.to_dict(), allow_nan=False)
    loaded = TabularPreprocessor.from_dict(json.loads(text))
    np.testing.assert_array_equal(loaded.transform(train), fitted.transform(train))
    assert loaded.names == list(NAMES) and loaded.kinds == list(KINDS) and loaded.by_name


def _mutations():
    def set_field(index, key, value):
        def apply(data):
            data["columns"][index][key] = value
        return apply

    def drop_field(index, key):
        def apply(data):
            del data["columns"][index][key]
        return apply

    return {
        "scale zero": set_field(0, "scale", 0.0),
        "mean text": set_field(0, "mean", "1"),
        "mean huge integer": set_field(0, "mean", 10**400),
        "fill bool": set_field(0, "fill", True),
        "unknown kind": set_field(0, "kind", "date"),
        "missing field": drop_field(1, "categories"),
        "unsorted categories": set_field(1, "categories", ["red", "blue"]),
        "repeated category": set_field(1, "categories", ["blue", "blue"]),
        "empty categories": set_field(1, "categories", []),
        "number name": set_field(2, "name", 3),
        "repeated name": set_field(2, "name", "a"),
        "empty name": set_field(2, "name", " "),
        "no columns": lambda data: data.update(columns=[]),
        "extra key": lambda data: data.update(pickle="x"),
    }


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_from_dict_refuses_malformed_state(case):
    train, _ = make_table(30, seed=4)
    data = TabularPreprocessor().fit(train).to_dict()
    _mutations()[case](data)
    with pytest.raises(ValueError, match="preprocessing"):
        TabularPreprocessor.from_dict(data)


def test_too_many_categories_and_wrong_columns_are_refused():
    column = np.array([f"id{i}" for i in range(20)], dtype=object)
    table = Table(("id",), (TEXT,), np.empty((20, 0)), (column,), None, True)
    with pytest.raises(ValueError, match="column 'id' holds 20 distinct text values, more "
                                         "than 10"):
        TabularPreprocessor(max_categories=10).fit(table)
    train, _ = make_table(30, seed=5)
    fitted = TabularPreprocessor().fit(train)
    renamed = train._replace(names=("a", "colour", "b", "size", "d"))
    with pytest.raises(ValueError, match="not the columns preprocessing was fitted on"):
        fitted.transform(renamed)


# ---------------------------------------------------------------------------- in model files
def _fitted_pair(seed=6):
    from fastmlp import MLPClassifier

    table, _ = make_table(60, seed=seed)
    preprocessing = TabularPreprocessor().fit(table)
    X = preprocessing.transform(table)
    y = np.arange(60) % 2
    model = MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(X, y)
    return model, preprocessing, table


def _rewrite(path, change):
    """Rewrite the model zip at `path` with change(members) applied to its {name: bytes}."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    change(members)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_model_file_stores_preprocessing_as_json_in_the_metadata(tmp_path):
    model, preprocessing, table = _fitted_pair()
    path = tmp_path / "m.fmlp"
    persistence.save(model, path, preprocessing=preprocessing)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["metadata.json", "params.npy"]
        meta = json.loads(archive.read("metadata.json"))
        assert meta["extra"]["preprocessing"] == preprocessing.to_dict()
    loaded, loaded_preprocessing = persistence.load_with_preprocessing(path)
    np.testing.assert_array_equal(loaded.predict_proba(loaded_preprocessing.transform(table)),
                                  model.predict_proba(preprocessing.transform(table)))
    with pytest.warns(UserWarning, match="holds column preprocessing"):
        assert type(fastmlp.load(path)) is type(model)


def test_models_without_preprocessing_load_without_a_warning(tmp_path):
    model, _, _ = _fitted_pair()
    path = tmp_path / "m.fmlp"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "extra" not in json.loads(archive.read("metadata.json"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no preprocessing, no warning
        loaded = fastmlp.load(path)
    assert persistence.load_with_preprocessing(path)[1] is None
    np.testing.assert_array_equal(loaded._params, model._params)


def _set_preprocessing(change):
    def rewrite(members):
        meta = json.loads(members["metadata.json"])
        meta["extra"]["preprocessing"] = change(meta["extra"]["preprocessing"])
        members["metadata.json"] = json.dumps(meta).encode()
    return rewrite


def _narrow(data):
    data["columns"] = data["columns"][:-1]  # one number column fewer than the network takes
    return data


@pytest.mark.parametrize("change, message", [
    (_set_preprocessing(lambda data: [1, 2]), "its preprocessing is not valid"),
    (_set_preprocessing(lambda data: {"by_name": True, "columns": []}), "non-empty list"),
    (_set_preprocessing(_narrow), "the preprocessing makes 8 features, the network takes 9"),
], ids=["not an object", "no columns", "narrower"])
def test_inconsistent_preprocessing_is_a_model_file_error(tmp_path, change, message):
    model, preprocessing, _ = _fitted_pair()
    path = tmp_path / "m.fmlp"
    persistence.save(model, path, preprocessing=preprocessing)
    _rewrite(path, change)
    with pytest.raises(ModelFileError, match=re.escape(message)):
        persistence.load_with_preprocessing(path)


def test_save_refuses_preprocessing_of_another_width(tmp_path):
    model, _, _ = _fitted_pair()
    other = TabularPreprocessor().fit(make_table(30, seed=7)[0]._replace(
        kinds=(NUMBER,) * 3, names=("a", "b", "c"), texts=()))
    with pytest.raises(ValueError, match="the preprocessing makes 3 features, the estimator "
                                         "takes 9"):
        persistence.save(model, tmp_path / "m.fmlp", preprocessing=other)
    assert not (tmp_path / "m.fmlp").exists()


# ---------------------------------------------------------------------------- as a transformer
def _frame(table):
    """The Table as a pandas DataFrame, missing values as NaN / None."""
    pd = pytest.importorskip("pandas")
    numbers, texts = iter(table.numbers.T), iter(table.texts)
    return pd.DataFrame({name: next(numbers) if kind == NUMBER else next(texts)
                         for name, kind in zip(table.names, table.kinds)})


def test_dataframes_arrays_and_rows_transform_as_the_table_does():
    train, train_rows = make_table(80, seed=8)
    test, test_rows = make_table(20, seed=9)
    on_table = TabularPreprocessor().fit(train)
    expected = on_table.transform(test)
    # A DataFrame: columns by name, in any order, others ignored.
    on_frame = TabularPreprocessor().fit(_frame(train))
    assert on_frame.kinds == list(KINDS) and on_frame.by_name
    shuffled = _frame(test)[list(NAMES[::-1])].assign(note="ignored")
    np.testing.assert_array_equal(on_frame.transform(shuffled), expected)
    assert list(on_frame.feature_names_in_) == list(NAMES)
    # An object array and a list of rows (None and NaN missing): columns by position.
    for rows in (train_rows, train_rows.tolist()):
        fitted = TabularPreprocessor().fit(rows)
        assert fitted.kinds == list(KINDS) and not fitted.by_name
        np.testing.assert_array_equal(fitted.transform(test_rows.tolist()), expected)
    np.testing.assert_array_equal(on_table.transform(test_rows), expected)


def test_missing_markers_and_numbers_as_text_read_as_a_csv_would():
    rows = [["1.5", "red"], ["NA", " blue "], ["?", None], [3, "n/a"]]
    fitted = TabularPreprocessor().fit(rows)
    assert fitted.kinds == [NUMBER, TEXT]
    assert fitted.columns_[0]["fill"] == 2.25  # the median of 1.5 and 3
    assert fitted.columns_[1]["categories"] == ["blue", "red"]
    with pytest.raises(ValueError, match="column 'x0' must hold numbers, as in fitting, but "
                                         "holds 'heavy' in row 2"):
        fitted.transform([["1", "red"], ["heavy", "red"]])


def test_is_a_scikit_learn_transformer():
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline

    pd = pytest.importorskip("pandas")
    train, _ = make_table(60, seed=10)
    frame = _frame(train)
    pre = TabularPreprocessor(max_categories=5)
    assert clone(pre).get_params() == {"max_categories": 5}
    names = pre.fit(frame).get_feature_names_out()
    assert list(names) == pre.feature_names_out() and names[3] == "colour=blue"
    assert list(pre.get_feature_names_out(list(NAMES))) == list(names)
    out = clone(pre).set_output(transform="pandas").fit_transform(frame)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(names)
    y = np.arange(60) % 2
    pipeline = make_pipeline(TabularPreprocessor(),
                             fastmlp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2,
                                                   random_state=0))
    with pytest.warns(ConvergenceWarning):
        pipeline.fit(frame, y)
    assert pipeline.predict(frame[list(NAMES[::-1])]).shape == (60,)


def test_a_dataframe_lacking_a_fitted_column_is_refused():
    train, _ = make_table(30, seed=11)
    fitted = TabularPreprocessor().fit(_frame(train))
    with pytest.raises(ValueError, match=r"the data has no columns named \['size'\]"):
        fitted.transform(_frame(train).drop(columns="size"))


@parametrize_with_checks([TabularPreprocessor()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
