"""The ``fastmlp`` command line: train and predict end to end, preprocessing of raw CSV files
against a scikit-learn pipeline, --help, and every input error.

Runs ``fastmlp.cli.main`` in-process on small files written to tmp_path (plus one real
subprocess), with few epochs where accuracy is not the point, so the whole file stays fast.
"""

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import fastmlp
from fastmlp.cli import DATASET_NAMES, build_parser, main
from fastmlp.persistence import load_with_preprocessing
from fastmlp.preprocessing import table_from_array

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--hidden", "8", "--epochs", "3", "--random-state", "0"]


def write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def iris_csv(tmp_path_factory):
    """Iris with text labels in the last column."""
    X, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    rows = [list(x) + [label] for x, label in zip(X, names)]
    return write_csv(tmp_path_factory.mktemp("iris") / "iris.csv",
                     ["sepal_l", "sepal_w", "petal_l", "petal_w", "species"], rows)


@pytest.fixture(scope="module")
def iris_model(iris_csv, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "iris.fmlp"
    assert main(["train", str(iris_csv), "-o", str(path), "--quiet", *QUICK]) == 0
    return path


@pytest.fixture
def regression_csv(tmp_path):
    """Continuous target in the first column, named 'price'."""
    X, y = make_regression(n_samples=60, n_features=3, noise=0.1, random_state=0)
    return write_csv(tmp_path / "houses.csv", ["price", "a", "b", "c"],
                     [[t] + list(x) for t, x in zip(y, X)])


def iris_features(csv_path):
    return np.loadtxt(csv_path, delimiter=",", skiprows=1, usecols=range(4))


def predict_raw(model_path, X, proba=False):
    """What the saved model predicts for the raw numeric rows X, preprocessing applied."""
    model, preprocessing = load_with_preprocessing(model_path)
    features = preprocessing.transform(table_from_array(X))
    return model.predict_proba(features) if proba else model.predict(features)


def run(argv, capsys):
    """(status, stdout, stderr) of main(argv)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


# ---------------------------------------------------------------------------- train
def test_train_csv_writes_a_loadable_model_and_prints_metrics(iris_csv, tmp_path, capsys):
    model_path = tmp_path / "m.fmlp"
    status, out, err = run(["train", iris_csv, "--output", model_path, "--quiet",
                            "--dtype", "float64", "--alpha", "0.01", "--learning-rate", "0.01",
                            "--batch-size", "16", "--activation", "tanh", *QUICK], capsys)
    assert status == 0, err
    model, preprocessing = load_with_preprocessing(model_path)
    assert preprocessing.names == ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    assert preprocessing.kinds == ["number"] * 4
    assert isinstance(model, fastmlp.MLPClassifier)
    assert list(model.classes_) == ["setosa", "versicolor", "virginica"]
    assert (model.hidden_layer_sizes, model.max_iter, model.dtype) == ((8,), 3, "float64")
    assert (model.alpha, model.learning_rate_init, model.batch_size) == (0.01, 0.01, 16)
    assert model.activation == "tanh" and model.n_iter_ == 3 and model.callbacks is None
    assert re.search(r"test accuracy: \d\.\d{4}", out)
    assert re.search(r"fit time: \d+\.\d\d s \(3 epochs\)", out)
    assert "training on 120 rows, testing on 30" in out  # --test-size 0.2 by default
    assert not re.search(r"\d/3", err)  # --quiet: no progress display


def test_train_shows_progress_each_epoch(iris_csv, tmp_path, capsys):
    status, _, err = run(["train", iris_csv, "-o", tmp_path / "m.fmlp", *QUICK], capsys)
    assert status == 0
    assert "3/3" in err  # tqdm's bar or the one-line-per-epoch fallback, on stderr
    assert "note: training used all 3 epochs (--epochs)" in err


def test_regression_target_column_is_found_and_task_inferred(regression_csv, tmp_path, capsys):
    model_path = tmp_path / "r.fmlp"
    status, out, err = run(["train", regression_csv, "--target", "price", "-o", model_path,
                            "--test-size", "0.25", "--quiet", *QUICK], capsys)
    assert status == 0, err
    model, _ = load_with_preprocessing(model_path)
    assert isinstance(model, fastmlp.MLPRegressor) and model.n_features_in_ == 3
    assert "regression (guessed because the target is continuous; --task sets it)" in out
    assert re.search(r"test R\^2: -?\d+\.\d{4}", out) and re.search(r"test RMSE: \S+", out)


def test_train_on_npz_and_lbfgs_without_test_set(tmp_path, capsys):
    X, y = load_iris(return_X_y=True)
    np.savez(tmp_path / "iris.npz", X=X, y=y)
    status, out, err = run(["train", tmp_path / "iris.npz", "-o", tmp_path / "m.fmlp",
                            "--solver", "lbfgs", "--test-size", "0", *QUICK], capsys)
    assert status == 0, err
    assert ("classification, 3 classes (guessed because the target has 3 distinct integer "
            "values; --task sets it)") in out
    assert "testing on 0" in out and "test accuracy" not in out
    assert "(3 iterations)" in out
    assert not re.search(r"\d/3", err)  # L-BFGS has no epochs to show
    assert load_with_preprocessing(tmp_path / "m.fmlp")[0].solver == "lbfgs"


def test_bundled_data_set_train_and_predict(tmp_path, capsys):
    model_path = tmp_path / "digits.fmlp"
    status, out, err = run(["train", "digits", "-o", model_path, "--quiet", "--epochs", "2",
                            "--hidden", "16", "--random-state", "0", "--early-stopping"],
                           capsys)
    assert status == 0, err
    assert out.startswith("digits: 1797 rows, 64 features; classification, 10 classes")
    assert "test accuracy:" in out
    model, preprocessing = load_with_preprocessing(model_path)
    assert model.early_stopping and len(model.validation_scores_) == 2
    assert not preprocessing.by_name and len(preprocessing.names) == 64

    status, out, _ = run(["predict", model_path, "digits"], capsys)
    assert status == 0
    X, _ = datasets.load_digits(return_X_y=True)
    assert out.splitlines() == [str(label) for label in predict_raw(model_path, X)]


def test_image_data_sets_come_from_fastmlp_datasets(monkeypatch, tmp_path, capsys):
    import fastmlp.datasets

    X, y = load_iris(return_X_y=True)  # stands in for the 60,000 images
    monkeypatch.setattr(fastmlp.datasets, "load_fashion_mnist", lambda: (X, y))
    status, out, err = run(["train", "Fashion_MNIST", "-o", tmp_path / "f.fmlp", "--quiet",
                            *QUICK], capsys)
    assert status == 0, err
    assert out.startswith("fashion-mnist: 150 rows, 4 features; classification, 3 classes;")

    def missing():
        raise FileNotFoundError("mnist: the four IDX files were not found")

    monkeypatch.setattr(fastmlp.datasets, "load_mnist", missing)
    status, _, err = run(["train", "mnist", "-o", tmp_path / "m.fmlp"], capsys)
    assert status == 2
    assert "could not load data set 'mnist': mnist: the four IDX files were not found" in err


# ---------------------------------------------------------------------------- predict
def test_predict_csv_with_target_column_dropped(iris_csv, iris_model, tmp_path, capsys):
    out_path = tmp_path / "pred.csv"
    status, out, err = run(["predict", iris_model, iris_csv, "--target", "species",
                            "--output", out_path], capsys)
    assert status == 0, err
    lines = out_path.read_text().splitlines()
    assert len(lines) == 150
    expected = predict_raw(iris_model, iris_features(iris_csv))
    assert lines == [str(label) for label in expected]
    assert "150 predictions written to" in out
    # The model reads its columns by name: the target column is ignored without --target.
    status, out, err = run(["predict", iris_model, iris_csv], capsys)
    assert status == 0, err
    assert out.splitlines() == lines


def test_predict_npz_to_stdout_and_regression_values(regression_csv, tmp_path, capsys):
    model_path = tmp_path / "r.fmlp"
    assert main(["train", str(regression_csv), "--target", "price", "-o", str(model_path),
                 "--quiet", *QUICK]) == 0
    X = np.loadtxt(regression_csv, delimiter=",", skiprows=1)[:, 1:]
    np.savez(tmp_path / "rows.npz", X=X)
    capsys.readouterr()
    status, out, err = run(["predict", model_path, tmp_path / "rows.npz"], capsys)
    assert status == 0, err
    model, _ = load_with_preprocessing(model_path)
    written = np.array(out.split(), dtype=model.dtype)
    assert written.shape == (60,)
    np.testing.assert_array_equal(written, predict_raw(model_path, X))  # reads back exactly


def test_predict_proba_writes_one_column_per_class(iris_csv, iris_model, tmp_path, capsys):
    out_path = tmp_path / "proba.csv"
    status, _, err = run(["predict", iris_model, iris_csv, "--target", "species", "--proba",
                          "-o", out_path], capsys)
    assert status == 0, err
    header, *rows = out_path.read_text().splitlines()
    assert header == "setosa,versicolor,virginica"
    model, _ = load_with_preprocessing(iris_model)
    written = np.array([row.split(",") for row in rows], dtype=model.dtype)
    np.testing.assert_array_equal(written, predict_raw(iris_model, iris_features(iris_csv),
                                                       proba=True))


def test_model_fitted_on_a_dataframe_reads_csv_columns_by_name(tmp_path, capsys):
    pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with pytest.warns(ConvergenceWarning):  # 3 epochs
        model.fit(X, y)
    model.save(tmp_path / "named.fmlp")
    shuffled = X[X.columns[::-1]].assign(note="text is ignored")  # other order, extra column
    shuffled.to_csv(tmp_path / "rows.csv", index=False)
    status, out, err = run(["predict", tmp_path / "named.fmlp", tmp_path / "rows.csv"], capsys)
    assert status == 0, err
    assert out.splitlines() == [str(label) for label in model.predict(X)]
    assert "feature names" not in err


# ---------------------------------------------------------------------------- errors
def _bad_files(tmp_path, iris_model):
    """name -> (argv, text the message must contain) for every input error the CLI reports."""
    header = ["a", "b", "label"]
    huge = [[i, i % 3, i % 2] for i in range(20)]
    huge[0][1] = "1e39"  # beyond float32; line 2 lands in the test split with seed 0
    files = {
        "text": write_csv(tmp_path / "text.csv", ["a", "colour", "label"],
                          [[1, 2, 0], [3, "red", 1]]),
        "species": write_csv(tmp_path / "species.csv", ["species", "a", "b"],
                             [["cat", 1, 0.5], ["dog", 3, 1.5]] * 3),
        "empty_field": write_csv(tmp_path / "gap.csv", header, [[1, 2, 0], [3, "", 1]]),
        "ragged": write_csv(tmp_path / "ragged.csv", header, [[1, 2, 0], [3, 1]]),
        "nan": write_csv(tmp_path / "nan.csv", header, [[1, 2, 0], [3, "nan", 1]] * 5),
        "inf": write_csv(tmp_path / "inf.csv", header, [[1, 2, 0], [3, "-inf", 1]] * 5),
        "huge": write_csv(tmp_path / "huge.csv", header, huge),
        "no_target": write_csv(tmp_path / "no_target.csv", header, [[1, 2, 0], [3, 4, ""]]),
        "ids": write_csv(tmp_path / "ids.csv", ["id", "label"],
                         [[f"id{i}", i % 2] for i in range(1300)]),
        "labels": write_csv(tmp_path / "labels.csv", header, [[1, 2, "cat"], [3, 4, "dog"]]),
        "one_class": write_csv(tmp_path / "one.csv", header, [[1, 2, "cat"], [3, 4, "cat"]]),
        "five": write_csv(tmp_path / "five.csv", ["a", "b", "c", "d", "e"], [[1, 2, 3, 4, 0]]),
        "iris_text": write_csv(tmp_path / "iris_text.csv",
                               ["sepal_l", "sepal_w", "petal_l", "petal_w"],
                               [[5.1, 3.5, "long", 0.2]]),
        "empty": tmp_path / "empty.csv",
        "txt": tmp_path / "data.txt",
        "corrupt": tmp_path / "corrupt.fmlp",
        "no_x": tmp_path / "no_x.npz",
        "no_arrays": tmp_path / "no_arrays.npz",
        "no_rows": tmp_path / "no_rows.npz",
    }
    files["empty"].write_text("")
    files["txt"].write_text("1,2\n")
    files["corrupt"].write_bytes(b"PK\x03\x04 this is not a model")
    np.savez(files["no_x"], features=np.ones((3, 4)))
    np.savez(files["no_arrays"])
    np.savez(files["no_rows"], X=np.ones((0, 4)), y=np.ones(0))
    out = ["-o", tmp_path / "m.fmlp"]
    raw = ["--no-preprocess", *out]
    return {
        "missing data file": (["train", tmp_path / "missing.csv", *out],
                              "file not found: " + str(tmp_path / "missing.csv")),
        "unknown data set": (["train", "digitz", *out],
                             "unknown data set 'digitz': known names are " +
                             ", ".join(DATASET_NAMES)),
        "unsupported file type": (["train", files["txt"], *out], "unsupported file type '.txt'"),
        "text column without preprocessing": (
            ["train", files["text"], *raw],
            "column 'colour' is not numeric: 'red' on line 3; with --no-preprocess every "
            "feature column must hold numbers"),
        "text target forgotten": (
            ["train", files["species"], *raw],
            "column 'species' is not numeric: 'cat' on line 2; with --no-preprocess every "
            "feature column must hold numbers; use --target species if 'species' is the target"),
        "empty field without preprocessing": (
            ["train", files["empty_field"], *raw],
            "column 'b' has a missing value on line 3; with --no-preprocess every feature "
            "column must hold numbers (drop --no-preprocess to fill in missing values)"),
        "nan without preprocessing": (["train", files["nan"], "--quiet", *raw],
                                      "column 'b' has a missing value on line 3"),
        "infinite value": (["train", files["inf"], *out],
                           "column 'b' holds an infinite value on line 3"),
        "huge value in the test split": (
            ["train", files["huge"], "--random-state", "0", "--quiet", *out],
            "column 'b' holds 1e+39 on line 2, standardised"),
        "huge value without preprocessing": (
            ["train", files["huge"], "--random-state", "0", "--quiet", *raw],
            "column 'b' holds 1e+39 on line 2 beyond float32's range"),
        "row without target": (["train", files["no_target"], *out],
                               "the target column 'label' is empty on line 3"),
        "too many categories": (["train", files["ids"], *out],
                                "column 'id' holds 1040 distinct text values, more than 1000"),
        "ragged row": (["train", files["ragged"], *out], "line 3: 2 fields, but the header has 3"),
        "empty csv": (["train", files["empty"], *out], "the file is empty"),
        "target not found": (["train", files["text"], "--target", "nope", *out],
                             "target column 'nope' not found"),
        "text target regressed": (["train", files["labels"], "--task", "regress", *out],
                                  "target column 'label' is not numeric"),
        "single class": (["train", files["one_class"], *out],
                         "target column 'label' has a single class ('cat')"),
        "npz without X": (["predict", iris_model, files["no_x"]], "no array named 'X'"),
        "npz without arrays": (["train", files["no_arrays"], *out],
                               "no array named 'X' (the file holds [])"),
        "npz without rows": (["train", files["no_rows"], *out], "X is empty (shape (0, 4))"),
        "missing model column": (["predict", iris_model, files["five"]],
                                 "the model needs columns ['sepal_l', 'sepal_w', 'petal_l', "
                                 "'petal_w'], which the file does not have"),
        "text in a number column": (["predict", iris_model, files["iris_text"]],
                                    "column 'petal_l' must hold numbers, as when the model was "
                                    "trained, but holds 'long' on line 2"),
        "missing model file": (["predict", tmp_path / "nope.fmlp", files["five"]],
                               "model file not found"),
        "corrupt model file": (["predict", files["corrupt"], files["five"]],
                               f"cannot load the model {files['corrupt']}: "),
        "not a model file": (["predict", files["five"], files["five"]], "cannot load the model"),
        "output folder missing": (["train", "iris", "-o", tmp_path / "no" / "m.fmlp"],
                                  "folder " + str(tmp_path / "no") + " does not exist"),
        "bad epochs": (["train", "iris", "--epochs", "0", *out], "must be at least 1, got 0"),
        "bad hidden": (["train", "iris", "--hidden", "16,0", *out], "must be at least 1, got 0"),
        "negative random state": (["train", "iris", "--random-state", "-1", *out],
                                  "argument --random-state: must be between 0 and 4294967295, "
                                  "got -1"),
        "bad test size": (["train", "iris", "--test-size", "1", *out], "must be in [0, 1)"),
        "bad task": (["train", "iris", "--task", "cluster", *out], "invalid choice: 'cluster'"),
        "missing output": (["train", "iris"], "the following arguments are required"),
    }


ERROR_CASES = [
    "missing data file", "unknown data set", "unsupported file type",
    "text column without preprocessing", "text target forgotten",
    "empty field without preprocessing", "nan without preprocessing", "infinite value",
    "huge value in the test split", "huge value without preprocessing", "row without target",
    "too many categories", "ragged row", "empty csv", "target not found",
    "text target regressed", "single class", "npz without X", "npz without arrays",
    "npz without rows", "missing model column", "text in a number column",
    "missing model file", "corrupt model file", "not a model file",
    "output folder missing", "bad epochs", "bad hidden", "negative random state",
    "bad test size", "bad task", "missing output"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_input_exits_2_with_a_message_naming_the_problem(case, iris_model, tmp_path, capsys):
    argv, message = _bad_files(tmp_path, iris_model)[case]
    status, out, err = run(argv, capsys)
    assert status == 2
    assert message in err
    assert "Traceback" not in err + out
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert not (tmp_path / "m.fmlp").exists()  # nothing is written on failure


def test_positional_model_names_the_feature_count_and_the_target_hint(tmp_path, capsys):
    X, y = load_iris(return_X_y=True)
    np.savez(tmp_path / "iris.npz", X=X, y=y)
    assert main(["train", str(tmp_path / "iris.npz"), "-o", str(tmp_path / "m.fmlp"),
                 "--quiet", *QUICK]) == 0
    five = write_csv(tmp_path / "five.csv", ["a", "b", "c", "d", "e"], [[1, 2, 3, 4, 0]])
    status, _, err = run(["predict", tmp_path / "m.fmlp", five], capsys)
    assert status == 2
    assert ("has 5 feature columns, but the model was trained on 4; if one column is the "
            "target, name it with --target to drop it") in err
    status, out, err = run(["predict", tmp_path / "m.fmlp", five, "--target", "e"], capsys)
    assert status == 0, err
    assert out.splitlines() == [str(v) for v in predict_raw(tmp_path / "m.fmlp", [[1, 2, 3, 4]])]


def test_unwritable_output_folder_is_refused_before_training(tmp_path, capsys, monkeypatch):
    if os.geteuid() == 0:
        folder = Path("/proc")  # not even root can create files there
    else:
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the output folder")

    monkeypatch.setattr(fastmlp.MLPClassifier, "fit", no_training)
    status, out, err = run(["train", "iris", "-o", folder / "m.fmlp"], capsys)
    assert status == 2 and out == ""
    assert f"cannot write {folder / 'm.fmlp'}: folder {folder} is not writable" in err


def test_hidden_widths_with_commas_or_spaces(tmp_path, capsys):
    for i, widths in enumerate((["16,8", "4"], ["16", "8", "4"], ["16, 8,4"])):
        path = tmp_path / f"m{i}.fmlp"
        status, _, err = run(["train", "iris", "-o", path, "--quiet", "--epochs", "2",
                              "--hidden", *widths], capsys)
        assert status == 0, err
        assert load_with_preprocessing(path)[0].hidden_layer_sizes == (16, 8, 4)


def test_a_text_column_beside_a_numeric_last_column_prints_a_target_hint(tmp_path, capsys):
    X, y = load_iris(return_X_y=True)
    species = np.array(["setosa", "versicolor", "virginica"])[y]
    path = write_csv(tmp_path / "iris.csv", ["species", "a", "b", "c", "d"],
                     [[s, *x] for s, x in zip(species, X)])
    status, out, err = run(["train", path, "-o", tmp_path / "m.fmlp", *QUICK, "--quiet"],
                           capsys)
    assert status == 0, err
    assert "4 features (1 of text), target 'd'" in out
    assert ("note: the target is the last column, 'd'; use --target COLUMN if 'species' is "
            "the target") in err
    status, _, err = run(["train", path, "--target", "species", "-o", tmp_path / "m.fmlp",
                          *QUICK, "--quiet"], capsys)
    assert status == 0 and "note: the target" not in err


def test_proba_of_a_regressor_is_refused(regression_csv, tmp_path, capsys):
    model_path = tmp_path / "r.fmlp"
    assert main(["train", str(regression_csv), "-o", str(model_path), "--quiet", *QUICK]) == 0
    status, _, err = run(["predict", model_path, regression_csv, "--target", "price", "--proba"],
                         capsys)
    assert status == 2 and "--proba needs a classifier" in err


# ---------------------------------------------------------------------------- raw CSV files
MISSING_TOKENS = np.array(["", "NA", "?", "NaN"], dtype=object)


def raw_csv(name, path, seed=0):
    """A scikit-learn data set as a user's CSV: 3% of the feature values missing (written as
    '', NA, ? or NaN), a text feature 'group' (the class's initial half the time, else noise;
    5% missing), and the class names as a text target 'species' that is not the last column."""
    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    rng = np.random.default_rng(seed)
    frame = bunch.frame.drop(columns="target").astype(object)
    gaps = rng.random(frame.shape) < 0.03
    frame = frame.mask(gaps, rng.choice(MISSING_TOKENS, size=frame.shape))
    labels = np.asarray(bunch.target_names)[bunch.target]
    group = np.where(rng.random(len(frame)) < 0.5, [label[0] for label in labels],
                     rng.choice(["p", "q", "r"], size=len(frame)))
    frame.insert(1, "group", np.where(rng.random(len(frame)) < 0.05, "", group))
    frame.insert(2, "species", labels)
    frame.to_csv(path, index=False)
    return path


def sklearn_pipeline_accuracy(path, test_size=0.2, random_state=0):
    """Test accuracy of imputer + scaler + one-hot + scikit-learn's MLPClassifier on the split
    the command line makes (same rows, same seed, stratified)."""
    frame = pd.read_csv(path, na_values=["?"])
    y = frame.pop("species")
    X_train, X_test, y_train, y_test = train_test_split(
        frame, y, test_size=test_size, random_state=random_state, stratify=y)
    numbers = [column for column in frame.columns if column != "group"]
    pipeline = make_pipeline(
        ColumnTransformer([
            ("number", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
             numbers),
            ("text", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                   OneHotEncoder(handle_unknown="ignore")), ["group"])]),
        SklearnMLPClassifier(random_state=random_state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(X_train, y_train).score(X_test, y_test)


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_raw_csv_reaches_scikit_learn_pipeline_accuracy(name, tmp_path, capsys):
    path = raw_csv(name, tmp_path / f"{name}.csv")
    status, out, err = run(["train", path, "--target", "species", "-o", tmp_path / "m.fmlp",
                            "--random-state", "0", "--quiet"], capsys)
    assert status == 0, err
    assert "(1 of text)" in out
    ours = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    # One test row of iris is 0.033: fastmlp may lose at most that to scikit-learn.
    assert ours >= sklearn_pipeline_accuracy(path) - 0.035, out

    # predict applies the saved preprocessing to the raw file (target column ignored).
    status, predicted, err = run(["predict", tmp_path / "m.fmlp", path], capsys)
    assert status == 0, err
    truth = pd.read_csv(path)["species"]
    assert np.mean(np.array(predicted.split()) == truth) >= 0.9


def test_without_preprocessing_unscaled_features_train_worse(tmp_path, capsys):
    """What the default buys: wine's unscaled columns (proline reaches 1680) hold the network
    back, with the same seed and epochs."""
    X, y = datasets.load_wine(return_X_y=True)
    np.savez(tmp_path / "wine.npz", X=X, y=y)
    accuracy = {}
    for flag in ([], ["--no-preprocess"]):
        status, out, err = run(["train", tmp_path / "wine.npz", "-o", tmp_path / "m.fmlp",
                                "--random-state", "0", "--quiet", "--epochs", "50", *flag],
                               capsys)
        assert status == 0, err
        accuracy[bool(flag)] = float(re.search(r"test accuracy: ([0-9.]+)", out).group(1))
    assert accuracy[False] >= 0.9 > accuracy[True]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_old_model_files_without_preprocessing_still_predict(tmp_path, capsys):
    """A model saved in Python (format version 1, no preprocessing) takes the columns as they
    are."""
    X, y = load_iris(return_X_y=True)
    model = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0)
    model.fit(X, y).save(tmp_path / "v1.fmlp")
    np.savez(tmp_path / "rows.npz", X=X)
    status, out, err = run(["predict", tmp_path / "v1.fmlp", tmp_path / "rows.npz"], capsys)
    assert status == 0, err
    assert out.splitlines() == [str(v) for v in model.predict(X)]
    gap = write_csv(tmp_path / "gap.csv", ["a", "b", "c", "d"], [[1, 2, "", 4]])
    status, _, err = run(["predict", tmp_path / "v1.fmlp", gap], capsys)
    assert status == 2
    assert ("column 'c' has a missing value on line 2; the model was saved without "
            "preprocessing, so it takes numbers only") in err


# ---------------------------------------------------------------------------- help
def _subparsers(parser):
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["predict", "--help"]])
def test_help_explains_every_option(argv, capsys):
    status, out, _ = run(argv, capsys)
    assert status == 0
    parser = build_parser()
    parser = parser if len(argv) == 1 else _subparsers(parser)[argv[0]]
    for action in parser._actions:
        assert action.help, f"{action.dest} has no help text"
        for option in action.option_strings:
            assert option in out
    if len(argv) == 1:
        assert "train" in out and "predict" in out


def test_module_runs_as_a_program():
    result = subprocess.run([sys.executable, "-m", "fastmlp.cli", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: fastmlp ")


# ---------------------------------------------------------------------------- documentation
def _documented_commands():
    """The shell lines of the 'Command line' section, from the README once it has one."""
    for path in (ROOT / "README.md",):
        text = path.read_text() if path.exists() else ""
        section = re.search(r"^## Command line\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
        if section:
            blocks = re.findall(r"```bash\n(.*?)```", section.group(1), flags=re.S)
            return [line for block in blocks for line in block.splitlines() if line.strip()]
    pytest.fail("no '## Command line' section in README.md")


def test_documented_commands_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    commands = _documented_commands()
    assert any(line.startswith("fastmlp predict") for line in commands)
    for line in commands:
        words = shlex.split(line, comments=True)
        if not words:
            continue  # a comment line
        if words[0] == "fastmlp":
            assert main(words[1:]) == 0, (line, capsys.readouterr().err)
        else:
            assert words[0] == "python", line
            subprocess.run([sys.executable, *words[1:]], check=True, timeout=120)


# ---------------------------------------------------------------------------- every failure
def assert_refused(status, out, err, folder, before, message):
    """A failure as the command line reports it: exit status 2, exactly one line on stderr
    naming the problem, no traceback, and no file left behind in `folder` (temporary files
    included)."""
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fastmlp") and ": error: " in err
    assert message in err, err
    assert "Traceback" not in out + err
    assert sorted(p.name for p in folder.iterdir()) == before


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("trained before refusing the input")

    monkeypatch.setattr(fastmlp.MLPClassifier, "fit", refuse)
    monkeypatch.setattr(fastmlp.MLPRegressor, "fit", refuse)


def write_npz_header_only(path, shape, descr="<f8"):
    """An .npz whose X declares `shape` but holds no data (as a hostile or truncated file)."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", header.getvalue())
        archive.writestr("y.npy", header.getvalue())
    return path


def test_npz_declaring_more_than_memory_is_refused_before_loading(tmp_path, capsys,
                                                                   monkeypatch):
    data = write_npz_header_only(tmp_path / "huge.npz", (100_000_000, 1000))
    before = listing(tmp_path)
    no_training(monkeypatch)
    status, out, err = run(["train", data, "-o", tmp_path / "m.fmlp"], capsys)
    assert_refused(status, out, err, tmp_path, before,
                   "huge.npz: X declares shape (100000000, 1000) of float64")
    assert "of memory, more than the" in err


def test_npz_size_is_checked_against_the_memory_budget(tmp_path, capsys, monkeypatch):
    import fastmlp.tabular

    X, y = load_iris(return_X_y=True)
    np.savez(tmp_path / "iris.npz", X=X, y=y)
    before = listing(tmp_path)
    monkeypatch.setattr(fastmlp.tabular, "memory_budget", lambda: 10_000)  # 10 kB left
    status, out, err = run(["train", tmp_path / "iris.npz", "-o", tmp_path / "m.fmlp"],
                           capsys)
    assert_refused(status, out, err, tmp_path, before, "more than the 9.8 KiB available")


@pytest.mark.parametrize("hidden, message", [
    (["2000000000"], "argument --hidden: must be at most 100000000"),
    (["20000", "20000"], "--hidden 20000,20000 makes a network of 400,180,003 parameters "
                         "(4 inputs, 3 outputs), more than the 100,000,000"),
])
def test_networks_predict_could_not_load_are_refused_before_training(hidden, message, tmp_path,
                                                                     capsys, monkeypatch):
    no_training(monkeypatch)
    before = listing(tmp_path)
    status, out, err = run(["train", "iris", "-o", tmp_path / "m.fmlp", "--hidden", *hidden],
                           capsys)
    assert_refused(status, out, err, tmp_path, before, message)


def test_networks_beyond_the_memory_budget_are_refused(tmp_path, capsys, monkeypatch):
    import fastmlp.cli

    no_training(monkeypatch)
    monkeypatch.setattr(fastmlp.cli, "memory_budget", lambda: 2**20)
    before = listing(tmp_path)
    status, out, err = run(["train", "iris", "-o", tmp_path / "m.fmlp", "--hidden", "1000"],
                           capsys)
    assert_refused(status, out, err, tmp_path, before, "--hidden 1000 needs about")
    assert "of memory to train (8,003 parameters), more than the 1.0 MiB available" in err


@pytest.mark.parametrize("labels, message", [
    (np.array(["2020-01-01", "2021-06-01"] * 15, dtype="datetime64[D]"),
     "y holds dates (datetime64) (dtype datetime64[D]); targets must be numbers, text or "
     "booleans"),
    (np.array([10, 20] * 15, dtype="timedelta64[s]"), "y holds durations (timedelta64)"),
    (np.array([b"cat", b"dog"] * 15), "y holds bytes (dtype |S3)"),
    (np.array([1 + 1j, 2] * 15), "y holds complex numbers"),
    (np.array(["cat\ud800", "dog"] * 15), "y holds the label 'cat\\ud800', which is not valid "
                                          "Unicode text"),
], ids=["datetime64", "timedelta64", "bytes", "complex", "lone surrogate"])
def test_labels_the_model_could_not_save_or_print_are_refused_before_training(
        labels, message, tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "d.npz", X=np.arange(60.0).reshape(30, 2), y=labels)
    no_training(monkeypatch)
    before = listing(tmp_path)
    status, out, err = run(["train", tmp_path / "d.npz", "-o", tmp_path / "m.fmlp",
                            "--task", "classify"], capsys)
    assert_refused(status, out, err, tmp_path, before, message)


def test_npz_of_python_objects_is_refused_with_a_reason(tmp_path, capsys):
    np.savez(tmp_path / "o.npz", X=np.ones((4, 2)), y=np.array(["a", None, "b", "c"], object))
    before = listing(tmp_path)
    status, out, err = run(["train", tmp_path / "o.npz", "-o", tmp_path / "m.fmlp"], capsys)
    assert_refused(status, out, err, tmp_path, before,
                   "array 'y' holds Python objects (dtype object)")


def test_predicting_ignores_an_npz_files_targets(iris_model, tmp_path, capsys):
    X = load_iris(return_X_y=True)[0]
    np.savez(tmp_path / "rows.npz", X=X, y=np.array(["2020-01-01"] * 150, "datetime64[D]"))
    status, out, err = run(["predict", iris_model, tmp_path / "rows.npz"], capsys)
    assert status == 0, err
    assert out.splitlines() == [str(v) for v in predict_raw(iris_model, X)]


def test_unreadable_csv_is_one_line(iris_csv, tmp_path, capsys, monkeypatch):
    import fastmlp.tabular

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self.path))

    monkeypatch.setattr(fastmlp.tabular._CsvColumns, "_open", denied)  # tests run as root
    before = listing(tmp_path)
    status, out, err = run(["train", iris_csv, "-o", tmp_path / "m.fmlp"], capsys)
    assert_refused(status, out, err, tmp_path, before, f"{iris_csv}: Permission denied")


def _disk_full(monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the last step before a file is renamed in place


def test_full_disk_when_saving_leaves_no_model_file(tmp_path, capsys, monkeypatch):
    _disk_full(monkeypatch)
    before = listing(tmp_path)
    status, out, err = run(["train", "iris", "-o", tmp_path / "m.fmlp", "--quiet", *QUICK],
                           capsys)
    assert_refused(status, out, err, tmp_path, before,
                   f"cannot write the model file {tmp_path / 'm.fmlp'}: No space left on device")


def test_full_disk_when_predicting_leaves_no_half_file(iris_model, iris_csv, tmp_path, capsys,
                                                       monkeypatch):
    _disk_full(monkeypatch)
    before = listing(tmp_path)
    status, out, err = run(["predict", iris_model, iris_csv, "-o", tmp_path / "p.csv"], capsys)
    assert_refused(status, out, err, tmp_path, before, "No space left on device")


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs /dev/full")
def test_full_output_device_is_one_line(iris_model, iris_csv, tmp_path, capsys):
    status, out, err = run(["predict", iris_model, iris_csv, "-o", "/dev/full"], capsys)
    assert_refused(status, out, err, tmp_path, [],
                   "cannot write /dev/full: No space left on device")
    assert Path("/dev/full").is_char_device()


def test_full_standard_output_is_one_line(iris_model, iris_csv, tmp_path, capsys, monkeypatch):
    import errno

    class Full:
        encoding = "utf-8"

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stdout", Full())
    status = main(["predict", str(iris_model), str(iris_csv)])
    err = capsys.readouterr().err
    assert_refused(status, "", err, tmp_path, [],
                                   "cannot write to standard output: No space left on device")


@pytest.mark.parametrize("target", ["device", "fifo"])
def test_a_model_file_never_replaces_a_device_or_pipe(target, tmp_path, capsys, monkeypatch):
    if target == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    else:
        path = Path("/dev/full")
        if not path.is_char_device():
            pytest.skip("needs /dev/full")
    no_training(monkeypatch)
    status, out, err = run(["train", "iris", "-o", path], capsys)
    assert status == 2 and len(err.splitlines()) == 1
    assert f"cannot write {path}: it is not a regular file" in err
    assert not path.is_file()


def test_class_label_without_utf8_encoding_is_one_line_and_writes_nothing(tmp_path, capsys):
    X, y = load_iris(return_X_y=True)
    labels = np.array(["setosa\ud800", "versicolor", "virginica"])[y]
    model = fastmlp.MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(X, labels).save(tmp_path / "s.fmlp")  # the Python API accepts such labels
    np.savez(tmp_path / "rows.npz", X=X)
    before = listing(tmp_path)
    for output in ([], ["-o", tmp_path / "p.csv"]):
        status, out, err = run(["predict", tmp_path / "s.fmlp", tmp_path / "rows.npz",
                                "--proba", *output], capsys)
        assert_refused(status, out, err, tmp_path, before, "'\\ud800' (in a class label or "
                                                           "value) has no utf-8 encoding")
        assert out == ""


@pytest.mark.parametrize("header, message", [
    (["a", "a", "label"], "columns 1 and 2 are both named 'a'"),
    (["a", "", "label"], "column 2 has no name ('')"),
    (["a", "b", " "], "column 3 has no name ('')"),
])
def test_header_names_follow_the_rule_predict_loads_by(header, message, tmp_path, capsys,
                                                       monkeypatch):
    from fastmlp.preprocessing import check_column_names

    path = write_csv(tmp_path / "h.csv", header, [[1, 2, 0], [3, 4, 1]] * 5)
    before = listing(tmp_path)
    no_training(monkeypatch)
    status, out, err = run(["train", path, "-o", tmp_path / "m.fmlp"], capsys)
    assert_refused(status, out, err, tmp_path, before, message)
    # The same rule, word for word, is what loading a model file applies.
    with pytest.raises(ValueError, match=re.escape(message)):
        check_column_names([name.strip() for name in header])


def test_a_column_named_twice_in_the_rows_to_predict_is_ambiguous(iris_model, tmp_path,
                                                                  capsys):
    path = write_csv(tmp_path / "twice.csv", ["sepal_l", "sepal_w", "petal_l", "petal_w",
                                              "petal_w"], [[5.1, 3.5, 1.4, 0.2, 9]])
    before = listing(tmp_path)
    status, out, err = run(["predict", iris_model, path], capsys)
    assert_refused(status, out, err, tmp_path, before,
                   "the header names column 'petal_w' 2 times")


@pytest.mark.parametrize("argv", [["train", "iris", "-o", "m.fmlp", "--epochs", "0"],
                                  ["train"], ["frobnicate"], ["predict", "m.fmlp"]])
def test_usage_errors_are_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run(argv, capsys)
    assert_refused(status, out, err, tmp_path, [], "error: ")
    assert "--help" in err


# ---------------------------------------------------------------------------- the target
def test_the_target_column_and_why_are_printed(iris_csv, tmp_path, capsys):
    status, _, err = run(["train", iris_csv, "-o", tmp_path / "m.fmlp", "--quiet", *QUICK],
                         capsys)
    assert status == 0, err
    assert "target: column 'species' (last column; use --target NAME to choose)" in \
        err.splitlines()
    status, _, err = run(["train", iris_csv, "--target", "species", "-o", tmp_path / "m.fmlp",
                          "--quiet", *QUICK], capsys)
    assert status == 0, err
    assert "target: column 'species' (--target)" in err.splitlines()


@pytest.mark.parametrize("n_distinct", [200, 180])
def test_a_text_target_that_looks_like_an_identifier_is_refused(n_distinct, tmp_path, capsys,
                                                                monkeypatch):
    rows = [[i % 3, i * 0.5, f"customer-{i % n_distinct:04d}"] for i in range(200)]
    path = write_csv(tmp_path / "people.csv", ["group", "spend", "name"], rows)
    before = listing(tmp_path)
    no_training(monkeypatch)
    status, out, err = run(["train", path, "-o", tmp_path / "m.fmlp"], capsys)
    assert_refused(status, out, err, tmp_path, before,
                   f"target column 'name' holds {n_distinct} different texts in 200 rows: it "
                   "looks like an identifier or free text, not a class label")


def test_a_target_with_many_classes_for_its_rows_is_warned_about(tmp_path, capsys):
    rows = [[i * 0.5, f"c{i // 2}"] for i in range(100)]  # 50 classes of two rows
    path = write_csv(tmp_path / "many.csv", ["x", "label"], rows)
    status, _, err = run(["train", path, "-o", tmp_path / "m.fmlp", "--quiet",
                          "--test-size", "0", *QUICK], capsys)
    assert status == 0, err
    assert ("warning: target column 'label' has 50 distinct values in 100 rows: most classes "
            "have too few rows to learn from") in err


@pytest.mark.parametrize("error", [
    OSError(5, "Input/output error", "rows.csv"), PermissionError(13, "Permission denied"),
    MemoryError("Unable to allocate 745. GiB for an array"), ValueError("bad\nvalue"),
    UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    fastmlp.ModelFileError("damaged"), OverflowError("too big")],
    ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("command", ["train", "predict"])
def test_every_expected_error_class_is_one_line_and_status_2(command, error, iris_model,
                                                             tmp_path, capsys, monkeypatch):
    """Wherever an error of an expected class arises, main reports it in one line."""
    import fastmlp.cli

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(fastmlp.cli, "load_data", fail)
    argv = (["train", "iris", "-o", tmp_path / "m.fmlp"] if command == "train"
            else ["predict", iris_model, "iris"])
    before = listing(tmp_path)
    status, out, err = run(argv, capsys)
    assert_refused(status, out, err, tmp_path, before, f"fastmlp {command}: error: ")


def test_a_cli_model_predicts_on_a_dataframe_in_python(tmp_path, capsys):
    """load_with_preprocessing gives a transformer that reads the training CSV as pandas reads
    it ('?' and empty fields included), with the target column ignored."""
    path = raw_csv("breast_cancer", tmp_path / "bc.csv")
    model_path = tmp_path / "bc.fmlp"
    status, _, err = run(["train", path, "--target", "species", "-o", model_path, "--quiet",
                          *QUICK], capsys)
    assert status == 0, err
    status, predicted, err = run(["predict", model_path, path], capsys)
    assert status == 0, err
    model, pre = load_with_preprocessing(model_path)
    frame = pd.read_csv(path)
    assert [str(v) for v in model.predict(pre.transform(frame))] == predicted.split()
    rows = frame.drop(columns="species").to_numpy(dtype=object).tolist()  # by position
    assert [str(v) for v in model.predict(pre.transform(rows))] == predicted.split()


@pytest.mark.parametrize("y, argv, message", [
    (np.where(np.arange(30) == 3, np.nan, np.arange(30) % 2), [],
     "the target is NaN or infinite on row 4 (1 rows)"),
    (np.linspace(0, 1, 30) + 0.01, ["--task", "classify"],
     "the target holds numbers that are not whole (0.01), which are not class labels; use "
     "--task regress"),
    (np.array([["a", "b"], ["c", "d"]] * 15), [],
     "the target has 2 columns of class labels; a classifier takes one column"),
    (np.array([0] * 29 + [1]), ["--test-size", "0.1", "--random-state", "5"],  # 1 in test
     "hold a single class of the target; classification needs at least two"),
], ids=["nan", "continuous as classes", "2-D labels", "one class left to train on"])
def test_targets_fit_would_refuse_are_refused_before_anything_is_printed(
        y, argv, message, tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "d.npz", X=np.arange(60.0).reshape(30, 2), y=y)
    no_training(monkeypatch)
    before = listing(tmp_path)
    status, out, err = run(["train", tmp_path / "d.npz", "-o", tmp_path / "m.fmlp", *argv],
                           capsys)
    assert_refused(status, out, err, tmp_path, before, message)


def test_outputs_never_replace_the_inputs(iris_csv, iris_model, tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv", ["a", "b", "label"], [[1, 2, 0], [3, 4, 1]] * 10)
    model_copy = tmp_path / "m.fmlp"
    model_copy.write_bytes(iris_model.read_bytes())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for argv in (["train", data, "-o", data],
                 ["predict", model_copy, iris_csv, "-o", model_copy],
                 ["predict", model_copy, data, "--target", "label", "-o", data]):
        status, out, err = run(argv, capsys)
        assert status == 2 and len(err.splitlines()) == 1, err
        assert f"cannot write {argv[-1]}: it is the input file" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_stray_warnings_are_one_line_each_and_silent_on_failure(tmp_path, capsys,
                                                                monkeypatch):
    import fastmlp.cli

    real = fastmlp.cli.load_data

    def warns(*args, **kwargs):
        warnings.warn("invalid value encountered in cast\nsecond line", RuntimeWarning,
                      stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(fastmlp.cli, "load_data", warns)
    status, _, err = run(["train", "iris", "-o", tmp_path / "m.fmlp", "--quiet", *QUICK],
                         capsys)
    assert status == 0, err
    assert "warning: RuntimeWarning: invalid value encountered in cast" in err.splitlines()
    assert "second line" not in err and "warnings.warn" not in err
    monkeypatch.setattr(fastmlp.cli, "memory_budget", lambda: 1)
    before = listing(tmp_path)
    status, out, err = run(["train", "iris", "-o", tmp_path / "m2.fmlp"], capsys)
    assert_refused(status, out, err, tmp_path, before, "of memory to train")


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="needs /dev/full")
def test_a_real_process_writing_to_a_full_device_exits_2_with_one_line(iris_model, iris_csv):
    """End to end, the interpreter's own final flush included: `fastmlp predict ... >
    /dev/full` reports one line, not 'Exception ignored ...'."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "fastmlp.cli", "predict",
                                 str(iris_model), str(iris_csv)], cwd=ROOT, stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "fastmlp predict: error: cannot write to standard output: No space left on device"]


def test_a_model_path_that_is_not_a_file_is_one_line(iris_csv, tmp_path, capsys):
    os.mkfifo(tmp_path / "pipe.fmlp")
    for model in (tmp_path / "pipe.fmlp", tmp_path):
        status, out, err = run(["predict", model, iris_csv], capsys)
        assert status == 2 and err.splitlines() == [
            f"fastmlp predict: error: cannot load the model {model}: it is not a regular file"]


def test_predictions_file_gets_the_permissions_open_would_give(iris_model, iris_csv, tmp_path,
                                                               capsys):
    umask = os.umask(0o022)
    try:
        out = tmp_path / "p.csv"
        assert run(["predict", iris_model, iris_csv, "-o", out], capsys)[0] == 0
        assert out.stat().st_mode & 0o777 == 0o644
        out.chmod(0o640)  # replacing a file keeps its permissions
        assert run(["predict", iris_model, iris_csv, "-o", out], capsys)[0] == 0
        assert out.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
