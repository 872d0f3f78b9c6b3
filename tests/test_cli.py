"""The ``fastmlp`` command line: train and predict end to end, --help, and every input error.

Runs ``fastmlp.cli.main`` in-process on tiny files written to tmp_path (plus one real subprocess),
with few epochs, so the whole file stays fast.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris, make_regression

import fastmlp
from fastmlp.cli import DATASET_NAMES, build_parser, main

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
    model = fastmlp.load(model_path)
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
    model = fastmlp.load(model_path)
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
    assert fastmlp.load(tmp_path / "m.fmlp").solver == "lbfgs"


def test_bundled_data_set_train_and_predict(tmp_path, capsys):
    model_path = tmp_path / "digits.fmlp"
    status, out, err = run(["train", "digits", "-o", model_path, "--quiet", "--epochs", "2",
                            "--hidden", "16", "--random-state", "0", "--early-stopping"],
                           capsys)
    assert status == 0, err
    assert out.startswith("digits: 1797 rows, 64 features; classification, 10 classes")
    assert "test accuracy:" in out
    model = fastmlp.load(model_path)
    assert model.early_stopping and len(model.validation_scores_) == 2

    status, out, _ = run(["predict", model_path, "digits"], capsys)
    assert status == 0
    from sklearn.datasets import load_digits
    X, _ = load_digits(return_X_y=True)
    assert out.splitlines() == [str(label) for label in model.predict(X)]


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
    expected = fastmlp.load(iris_model).predict(iris_features(iris_csv))
    assert lines == [str(label) for label in expected]
    assert "150 predictions written to" in out


def test_predict_npz_to_stdout_and_regression_values(regression_csv, tmp_path, capsys):
    model_path = tmp_path / "r.fmlp"
    assert main(["train", str(regression_csv), "--target", "price", "-o", str(model_path),
                 "--quiet", *QUICK]) == 0
    X = np.loadtxt(regression_csv, delimiter=",", skiprows=1)[:, 1:]
    np.savez(tmp_path / "rows.npz", X=X)
    capsys.readouterr()
    status, out, err = run(["predict", model_path, tmp_path / "rows.npz"], capsys)
    assert status == 0, err
    model = fastmlp.load(model_path)
    written = np.array(out.split(), dtype=model.dtype)
    assert written.shape == (60,)
    np.testing.assert_array_equal(written, model.predict(X))  # the text reads back exactly


def test_predict_proba_writes_one_column_per_class(iris_csv, iris_model, tmp_path, capsys):
    out_path = tmp_path / "proba.csv"
    status, _, err = run(["predict", iris_model, iris_csv, "--target", "species", "--proba",
                          "-o", out_path], capsys)
    assert status == 0, err
    header, *rows = out_path.read_text().splitlines()
    assert header == "setosa,versicolor,virginica"
    model = fastmlp.load(iris_model)
    written = np.array([row.split(",") for row in rows], dtype=model.dtype)
    np.testing.assert_array_equal(written, model.predict_proba(iris_features(iris_csv)))


def test_model_fitted_on_a_dataframe_reads_csv_columns_by_name(tmp_path, capsys):
    pytest.importorskip("pandas")
    X, y = load_iris(return_X_y=True, as_frame=True)
    model = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with pytest.warns(Warning):  # ConvergenceWarning: 3 epochs
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
    files = {
        "text": write_csv(tmp_path / "text.csv", ["a", "colour", "label"],
                          [[1, 2, 0], [3, "red", 1]]),
        "empty_field": write_csv(tmp_path / "gap.csv", header, [[1, 2, 0], [3, "", 1]]),
        "ragged": write_csv(tmp_path / "ragged.csv", header, [[1, 2, 0], [3, 1]]),
        "nan": write_csv(tmp_path / "nan.csv", header, [[1, 2, 0], [3, "nan", 1]] * 5),
        "labels": write_csv(tmp_path / "labels.csv", header, [[1, 2, "cat"], [3, 4, "dog"]]),
        "one_class": write_csv(tmp_path / "one.csv", header, [[1, 2, "cat"], [3, 4, "cat"]]),
        "five": write_csv(tmp_path / "five.csv", ["a", "b", "c", "d", "e"], [[1, 2, 3, 4, 0]]),
        "empty": tmp_path / "empty.csv",
        "txt": tmp_path / "data.txt",
        "corrupt": tmp_path / "corrupt.fmlp",
        "no_x": tmp_path / "no_x.npz",
    }
    files["empty"].write_text("")
    files["txt"].write_text("1,2\n")
    files["corrupt"].write_bytes(b"PK\x03\x04 this is not a model")
    np.savez(files["no_x"], features=np.ones((3, 4)))
    out = ["-o", tmp_path / "m.fmlp"]
    return {
        "missing data file": (["train", tmp_path / "missing.csv", *out],
                              "file not found: " + str(tmp_path / "missing.csv")),
        "unknown data set": (["train", "digitz", *out],
                             "unknown data set 'digitz': known names are " +
                             ", ".join(DATASET_NAMES)),
        "unsupported file type": (["train", files["txt"], *out], "unsupported file type '.txt'"),
        "non-numeric column": (["train", files["text"], *out],
                               "column 'colour' is not numeric: 'red' on line 3"),
        "empty field": (["train", files["empty_field"], *out],
                        "column 'b' is not numeric: an empty field on line 3"),
        "ragged row": (["train", files["ragged"], *out], "line 3: 2 fields, but the header has 3"),
        "empty csv": (["train", files["empty"], *out], "the file is empty"),
        "target not found": (["train", files["text"], "--target", "nope", *out],
                             "target column 'nope' not found"),
        "text target regressed": (["train", files["labels"], "--task", "regress", *out],
                                  "target column 'label' is not numeric"),
        "single class": (["train", files["one_class"], *out],
                         "target column 'label' has a single class ('cat')"),
        "nan in features": (["train", files["nan"], "--quiet", *out],
                            "training failed: Input X contains NaN"),
        "npz without X": (["predict", iris_model, files["no_x"]], "no array named 'X'"),
        "feature count mismatch": (["predict", iris_model, files["five"]],
                                   "has 5 feature columns, but the model was trained on 4 "
                                   "(n_features_in_); if one column is the target, name it "
                                   "with --target"),
        "missing model file": (["predict", tmp_path / "nope.fmlp", files["five"]],
                               "model file not found"),
        "corrupt model file": (["predict", files["corrupt"], files["five"]],
                               f"cannot load the model {files['corrupt']}: "),
        "not a model file": (["predict", files["five"], files["five"]], "cannot load the model"),
        "output folder missing": (["train", "iris", "-o", tmp_path / "no" / "m.fmlp"],
                                  "folder " + str(tmp_path / "no") + " does not exist"),
        "bad epochs": (["train", "iris", "--epochs", "0", *out], "must be at least 1, got 0"),
        "bad test size": (["train", "iris", "--test-size", "1", *out], "must be in [0, 1)"),
        "bad task": (["train", "iris", "--task", "cluster", *out], "invalid choice: 'cluster'"),
        "missing output": (["train", "iris"], "the following arguments are required"),
    }


ERROR_CASES = ["missing data file", "unknown data set", "unsupported file type",
               "non-numeric column", "empty field", "ragged row", "empty csv", "target not found",
               "text target regressed", "single class", "nan in features", "npz without X",
               "feature count mismatch", "missing model file", "corrupt model file",
               "not a model file", "output folder missing", "bad epochs", "bad test size",
               "bad task", "missing output"]


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_input_exits_2_with_a_message_naming_the_problem(case, iris_model, tmp_path, capsys):
    argv, message = _bad_files(tmp_path, iris_model)[case]
    status, out, err = run(argv, capsys)
    assert status == 2
    assert message in err
    assert "Traceback" not in err + out
    assert not (tmp_path / "m.fmlp").exists()  # nothing is written on failure


def test_proba_of_a_regressor_is_refused(regression_csv, tmp_path, capsys):
    model_path = tmp_path / "r.fmlp"
    assert main(["train", str(regression_csv), "-o", str(model_path), "--quiet", *QUICK]) == 0
    status, _, err = run(["predict", model_path, regression_csv, "--target", "price", "--proba"],
                         capsys)
    assert status == 2 and "--proba needs a classifier" in err


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
