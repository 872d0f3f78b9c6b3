"""The ``fastmlp`` command: train a model from the shell and predict with a saved one.

``fastmlp train`` fits an MLPClassifier or MLPRegressor on a bundled data set, a CSV file or an
.npz file, writes a model file and prints test metrics; ``fastmlp predict`` loads a model file and
writes its predictions. This module reads input, calls the public estimator API and reports: it
holds no training logic, imports nothing optional at import time, and answers bad input with a
one-line message and exit status 2, never a traceback.
"""

import argparse
import csv
import os
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn import datasets as sklearn_datasets
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import type_of_target

from . import __version__
from .callbacks import ProgressBar
from .estimators import MLPClassifier, MLPRegressor
from .persistence import ModelFileError, load

EXIT_BAD_INPUT = 2  # argparse's status for usage errors; every input error uses it
MAX_AUTO_CLASSES = 20  # an integer target with more distinct values is taken as a quantity
CSV_CHUNK_ROWS = 10_000  # CSV rows held as text at once; the numbers go straight to arrays

# name -> (loader, task). Only sets that ship inside scikit-learn: they work offline.
BUNDLED = {
    "digits": (sklearn_datasets.load_digits, "classify"),
    "iris": (sklearn_datasets.load_iris, "classify"),
    "wine": (sklearn_datasets.load_wine, "classify"),
    "breast_cancer": (sklearn_datasets.load_breast_cancer, "classify"),
    "diabetes": (sklearn_datasets.load_diabetes, "regress"),
}
# name -> loader function in fastmlp.datasets, imported only when asked for.
FROM_FASTMLP_DATASETS = {"fashion-mnist": "load_fashion_mnist", "mnist": "load_mnist"}
DATASET_NAMES = sorted(BUNDLED) + sorted(FROM_FASTMLP_DATASETS)


class InputError(Exception):
    """Input the user can fix; main() prints the message and returns status 2."""


class Data(NamedTuple):
    """Features and (when there are any) targets read from DATA."""

    X: np.ndarray
    y: object  # ndarray or None
    name: str
    task: object  # "classify" / "regress" for bundled sets, else None
    feature_names: object  # list of CSV column names, or None
    target_name: object  # the CSV target column, or None


# ---------------------------------------------------------------------------- reading data
def _normalise(name):
    return name.strip().lower().replace("-", "_")


def _dataset_key(name):
    """The DATASET_NAMES entry `name` refers to (case, '-' and '_' ignored), or None."""
    return {_normalise(known): known for known in DATASET_NAMES}.get(_normalise(name))


def load_data(source, target=None, target_required=False, columns=None):
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
        CSV only: read exactly these feature columns, in this order (a model's
        ``feature_names_in_``).

    Returns
    -------
    Data

    Raises
    ------
    InputError
        Naming what is wrong: missing file, unknown name, unreadable or non-numeric content.
    """
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return _read_csv(path, target, target_required, columns)
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
        return Data(X, y, key, task, None, None)
    X, y = _load_from_fastmlp_datasets(key)
    return Data(X, y, key, "classify", None, None)


def _load_from_fastmlp_datasets(name):
    """(X, y): the training images of `name`, scaled to [0, 1], from fastmlp.datasets.

    Imported here, not at the top: only these data sets need it. Its loaders read local IDX
    files and say where they looked when the files are missing.
    """
    try:
        from . import datasets
    except ImportError as exc:
        raise InputError(f"data set {name!r} needs the fastmlp.datasets module, which could not "
                         f"be imported ({exc})") from None
    function = FROM_FASTMLP_DATASETS[name]
    loader = getattr(datasets, function, None)
    if loader is None:
        raise InputError(f"data set {name!r} needs fastmlp.datasets.{function}(), which this "
                         "version of fastmlp does not have")
    try:
        X, y = loader()
    except (OSError, ValueError) as exc:  # files missing, truncated or corrupt
        raise InputError(f"could not load data set {name!r}: {exc}") from None
    return X, y


def _read_npz(path, target_required):
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "X" not in names:
                raise InputError(f"{path}: no array named 'X' (the file holds {names})")
            if target_required and "y" not in names:
                raise InputError(f"{path}: no array named 'y' with the targets (the file holds "
                                 f"{names})")
            X = archive["X"]
            y = archive["y"] if "y" in names else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    if X.ndim != 2:
        raise InputError(f"{path}: X must be 2-D (rows x features), its shape is {X.shape}")
    if X.dtype.kind not in "biuf":
        raise InputError(f"{path}: X must hold numbers, its dtype is {X.dtype}")
    if y is not None and y.shape[:1] != X.shape[:1]:
        raise InputError(f"{path}: X has {X.shape[0]} rows but y has {y.shape[0] if y.ndim else 0}")
    return Data(X, y, path.name, None, None, None)


def _read_csv(path, target, target_required, columns):
    """A CSV file with a header row: numeric feature columns and (optionally) a target column."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: Excel's BOM
            reader = csv.reader(file)
            header = next(reader, None)
            if not header:
                raise InputError(f"{path}: the file is empty (a header row is expected)")
            header = [name.strip() for name in header]
            target_index = _target_index(path, header, target, target_required)
            if columns is not None:
                missing = [name for name in columns if name not in header]
                if missing:
                    raise InputError(f"{path}: the model needs columns {missing}, which the "
                                     "file does not have")
                feature_index = [header.index(name) for name in columns]
            else:
                feature_index = [i for i in range(len(header)) if i != target_index]
            if not feature_index:
                raise InputError(f"{path}: no feature columns besides the target "
                                 f"{header[target_index]!r}")

            names = [header[i] for i in feature_index]
            X_parts, y_text = [], []
            rows, lines = [], []  # only the feature fields: other columns may be long text

            def convert():
                X_parts.append(_numeric(path, np.array(rows, dtype=str), names, lines))
                rows.clear()
                lines.clear()

            for row in reader:
                if not row:
                    continue  # blank lines carry no data
                if len(row) != len(header):
                    raise InputError(f"{path}, line {reader.line_num}: {len(row)} fields, but "
                                     f"the header has {len(header)}")
                rows.append([row[i] for i in feature_index])
                lines.append(reader.line_num)
                if target_index is not None:
                    y_text.append(row[target_index])
                if len(rows) == CSV_CHUNK_ROWS:
                    convert()
            if rows:
                convert()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: not valid CSV ({exc})") from None
    if not X_parts:
        raise InputError(f"{path}: no data rows after the header")
    X = np.concatenate(X_parts)
    y = _parse_target(np.array(y_text, dtype=str)) if target_index is not None else None
    return Data(X, y, path.name, None, names,
                None if target_index is None else header[target_index])


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


def _numeric(path, block, names, lines):
    """The text block (rows x len(names)) as float64; on failure, name the first column and line
    holding something that is not a number."""
    try:
        return block.astype(np.float64)
    except ValueError:
        pass
    # The slow search runs only on the error path, with numpy's own parser (not float()).
    for j, name in enumerate(names):
        column = block[:, j]
        try:
            column.astype(np.float64)
            continue
        except ValueError:
            pass
        for row, text in enumerate(column):
            try:
                np.array(text).astype(np.float64)
            except ValueError:
                shown = "an empty field" if not text.strip() else repr(str(text))
                raise InputError(f"{path}: column {name!r} is not numeric: {shown} on line "
                                 f"{lines[row]}; feature columns must hold numbers") from None
    raise InputError(f"{path}: the feature columns do not all hold numbers")


def _parse_target(text):
    """Integers or floats when every value is one, else the labels as strings."""
    for dtype in (np.int64, np.float64):
        try:
            return text.astype(dtype)
        except (ValueError, OverflowError):
            continue
    return np.char.strip(text)


# ---------------------------------------------------------------------------- train
def _choose_task(requested, data):
    """("classify" | "regress", why) from --task, the data set, or (why not None) a guess from
    the target's values."""
    if requested is not None:
        return requested, None
    if data.task is not None:
        return data.task, None
    y = data.y
    if y.dtype.kind not in "biuf":
        return "classify", "the target is not numeric"
    try:
        kind = type_of_target(y)
    except ValueError as exc:  # NaN or infinite targets, for instance
        raise InputError(f"cannot use the target: {exc}") from None
    if kind in ("binary", "multilabel-indicator"):
        return "classify", f"the target is {kind}"
    if kind == "multiclass":
        n_values = len(np.unique(y))
        if n_values <= MAX_AUTO_CLASSES:
            return "classify", f"the target has {n_values} distinct integer values"
        return "regress", f"the target has {n_values} distinct values"
    return "regress", "the target is continuous"


def _split(X, y, classify, test_size, random_state):
    """(X_train, X_test, y_train, y_test); the test parts are None when test_size is 0."""
    if test_size == 0:
        return X, None, y, None
    stratify = None
    if classify and y.ndim == 1 and np.unique(y, return_counts=True)[1].min() >= 2:
        stratify = y  # keeps every class in both parts where it can
    try:
        return train_test_split(X, y, test_size=test_size, random_state=random_state,
                                stratify=stratify)
    except ValueError as exc:
        raise InputError(f"cannot split off a test set with --test-size {test_size}: {exc}") \
            from None


def _fit(model, X, y, quiet):
    """Fit with a per-epoch progress display; returns (seconds, warnings to report)."""
    progress = None
    if not quiet and model.solver != "lbfgs":  # L-BFGS has no epochs to show
        progress = ProgressBar(model.max_iter)
        model.set_params(callbacks=[progress])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        try:
            model.fit(X, y)
        except (ValueError, RuntimeError) as exc:  # bad input, divergence, unusable device
            raise InputError(f"training failed: {exc}") from None
        finally:
            if progress is not None:
                progress.close()
            # The progress bar belongs to this run, not to the saved model.
            model.set_params(callbacks=None)
        seconds = time.perf_counter() - started
    return seconds, caught


def _report_warnings(caught, epochs):
    """Each distinct warning of the fit as one line on stderr (no source lines)."""
    seen = set()
    for warning in caught:
        text = str(warning.message).strip().splitlines()[0]
        if issubclass(warning.category, ConvergenceWarning) and text.startswith("Stochastic"):
            # The user chose the epoch budget: say what it means rather than name the optimizer.
            text = (f"note: training used all {epochs} epochs (--epochs) and had not converged; "
                    "more epochs may give a better model")
        else:
            text = f"warning: {warning.category.__name__}: {text}"
        if text not in seen:
            seen.add(text)
            print(text, file=sys.stderr)


def _train(args):
    output = Path(args.output)
    # Checked first, so that a long fit is not lost to a typo in the output path.
    if not output.parent.is_dir():
        raise InputError(f"cannot write {output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise InputError(f"cannot write {output}: it is a folder")
    data = load_data(args.data, args.target, target_required=True)
    task, reason = _choose_task(args.task, data)
    classify = task == "classify"
    what = f"target column {data.target_name!r}" if data.target_name else "the target"
    if not classify and data.y.dtype.kind not in "biuf":
        raise InputError(f"{what} is not numeric, so it cannot be regressed on; use "
                         "--task classify for class labels")
    if classify and data.y.ndim == 1 and len(np.unique(data.y)) < 2:
        raise InputError(f"{what} has a single class ({str(data.y[0])!r}); classification "
                         "needs at least two")

    X_train, X_test, y_train, y_test = _split(data.X, data.y, classify, args.test_size,
                                              args.random_state)
    kind = f"classification, {len(np.unique(data.y))} classes" if classify and data.y.ndim == 1 \
        else ("classification" if classify else "regression")
    target = f", target {data.target_name!r}" if data.target_name else ""
    if reason is not None:
        kind += f" (guessed because {reason}; --task sets it)"
    print(f"{data.name}: {data.X.shape[0]} rows, {data.X.shape[1]} features{target}; {kind}; "
          f"training on {X_train.shape[0]} rows, testing on "
          f"{0 if X_test is None else X_test.shape[0]}")

    estimator = MLPClassifier if classify else MLPRegressor
    model = estimator(hidden_layer_sizes=tuple(args.hidden), activation=args.activation,
                      solver=args.solver, alpha=args.alpha,
                      batch_size="auto" if args.batch_size is None else args.batch_size,
                      learning_rate_init=args.learning_rate, max_iter=args.epochs,
                      early_stopping=args.early_stopping, random_state=args.random_state,
                      dtype=args.dtype, device=args.device)
    seconds, caught = _fit(model, X_train, y_train, args.quiet)
    _report_warnings(caught, args.epochs)
    try:
        model.save(output)
    except OSError as exc:
        raise InputError(f"cannot write the model file {output}: {exc}") from None

    unit = "iterations" if args.solver == "lbfgs" else "epochs"
    print(f"fit time: {seconds:.2f} s ({model.n_iter_} {unit})")
    if X_test is not None:
        y_pred = model.predict(X_test)
        if classify:
            print(f"test accuracy: {accuracy_score(y_test, y_pred):.4f}")
        else:
            rmse = float(np.sqrt(mean_squared_error(y_test, y_pred)))
            print(f"test R^2: {r2_score(y_test, y_pred):.4f}")
            print(f"test RMSE: {rmse:.6g}")
    print(f"model written to {output}")
    return 0


# ---------------------------------------------------------------------------- predict
def _load_model(source):
    path = Path(source)
    if not path.is_file():
        raise InputError(f"model file not found: {source}")
    try:
        return load(path)
    except (ModelFileError, OSError) as exc:
        reason = str(exc).removeprefix(f"{path}: ")  # load() often names the file already
        raise InputError(f"cannot load the model {source}: {reason}") from None


def _predict(args):
    model = _load_model(args.model)
    if model.device == "cuda":
        # Trained on a GPU; predictions are the same on the CPU, so use one only if present.
        model.set_params(device="auto")
    if args.proba and not hasattr(model, "predict_proba"):
        raise InputError(f"--proba needs a classifier, but {args.model} holds a "
                         f"{type(model).__name__}")
    # A model fitted on named columns reads those columns, by name, whatever their order.
    names = getattr(model, "feature_names_in_", None)
    columns = None if names is None or Path(args.data).suffix.lower() != ".csv" else list(names)
    data = load_data(args.data, args.target, columns=columns)
    X = data.X
    expected = model.n_features_in_
    if X.shape[1] != expected:
        hint = ""
        if data.feature_names is not None and args.target is None and X.shape[1] == expected + 1:
            hint = "; if one column is the target, name it with --target to drop it"
        raise InputError(f"{args.data} has {X.shape[1]} feature columns, but the model was "
                         f"trained on {expected} (n_features_in_){hint}")
    with warnings.catch_warnings():
        # We matched the columns by name above; sklearn only sees a plain array.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            values = model.predict_proba(X) if args.proba else model.predict(X)
        except (ValueError, RuntimeError) as exc:  # NaN in X, unusable device, ...
            raise InputError(f"prediction failed: {exc}") from None
    header = [str(label) for label in model.classes_] if args.proba else None

    if args.output is None:
        _write_rows(sys.stdout, values, header)
        return 0
    try:
        with open(args.output, "w", newline="") as file:
            _write_rows(file, values, header)
    except OSError as exc:
        raise InputError(f"cannot write {args.output}: {exc}") from None
    print(f"{len(values)} predictions written to {args.output}")
    return 0


def _write_rows(file, values, header):
    """One line per sample; numpy's str() of each value is the shortest text that reads back
    as the same number (float32 included)."""
    writer = csv.writer(file, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    if values.ndim == 1:
        writer.writerows([str(value)] for value in values)
    else:
        writer.writerows([str(value) for value in row] for row in values)


# ---------------------------------------------------------------------------- arguments
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _float_in(low, high=None, low_open=False):
    """An argparse type: a float in [low, high) (or (low, high) when low_open)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not np.isfinite(value) or value < low or (low_open and value == low) or (
                high is not None and value >= high):
            bounds = f"{'(' if low_open else '['}{low}, {'inf)' if high is None else f'{high})'}"
            raise argparse.ArgumentTypeError(f"must be in {bounds}, got {text}")
        return value

    return parse


def _options(name):
    """The values the estimators accept for parameter `name`, from their declared constraints."""
    return sorted(MLPClassifier._parameter_constraints[name][0].options)


EXAMPLES = """\
examples:
  fastmlp train digits --hidden 64 --epochs 50 --output digits.fmlp
  fastmlp train houses.csv --target price --task regress --output price.fmlp
  fastmlp predict digits.fmlp digits --output predictions.csv
  fastmlp predict price.fmlp houses.csv --target price
"""


def build_parser():
    """The argument parser of the ``fastmlp`` command (exposed for documentation tools)."""
    parser = argparse.ArgumentParser(
        prog="fastmlp", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Train fastmlp multilayer perceptrons and predict with them. Run "
                    "'fastmlp COMMAND --help' for a command's options. Input errors exit with "
                    "status 2.")
    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     help="what to do (each has its own --help)")
    data_help = (f"a bundled data set ({', '.join(DATASET_NAMES)}; for fashion-mnist and mnist, "
                 "the 60,000 training images from local IDX files, see fastmlp.datasets), or a "
                 ".csv file with a header row, or an .npz file with arrays X and y")

    train = commands.add_parser(
        "train", help="fit a model, save it and print test metrics",
        description="Fit an MLPClassifier or MLPRegressor on DATA, save it to --output, and "
                    "print test metrics (accuracy; or R^2 and RMSE) and the fit time. Features "
                    "are used as they are: scale them beforehand if they need it.")
    train.set_defaults(run=_train)
    train.add_argument("data", metavar="DATA", help=data_help)
    train.add_argument("-o", "--output", metavar="MODEL", required=True,
                       help="model file to write (fastmlp's .fmlp format; read it back with "
                            "fastmlp.load or 'fastmlp predict')")
    train.add_argument("--target", metavar="COLUMN",
                       help="CSV only: name of the target column (default: the last column)")
    train.add_argument("--task", choices=["classify", "regress"],
                       help="classification or regression (default: known for bundled data "
                            "sets; otherwise classify when the target is text, binary, or has "
                            f"at most {MAX_AUTO_CLASSES} distinct integer values)")
    train.add_argument("--hidden", metavar="N", type=_positive_int, nargs="+", default=[100],
                       help="hidden layer widths, e.g. --hidden 256 128 (default: 100)")
    train.add_argument("--activation", choices=_options("activation"), default="relu",
                       help="hidden-layer activation (default: relu)")
    train.add_argument("--solver", choices=_options("solver"), default="adam",
                       help="optimiser; lbfgs is full-batch and has no epochs (default: adam)")
    train.add_argument("--epochs", metavar="N", type=_positive_int, default=200,
                       help="maximum epochs, or iterations for lbfgs (max_iter; default: 200)")
    train.add_argument("--batch-size", metavar="N", type=_positive_int,
                       help="rows per mini-batch (default: min(200, training rows))")
    train.add_argument("--learning-rate", metavar="X", type=_float_in(0, low_open=True),
                       default=0.001, help="initial step size (learning_rate_init; "
                                           "default: 0.001)")
    train.add_argument("--alpha", metavar="X", type=_float_in(0), default=0.0001,
                       help="L2 penalty strength (default: 0.0001)")
    train.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                       help="precision of weights and arithmetic (default: float32)")
    train.add_argument("--device", choices=_options("device"), default="cpu",
                       help="where to train: the CPU, an NVIDIA GPU (cuda), or the GPU when "
                            "one is usable (auto) (default: cpu)")
    train.add_argument("--test-size", metavar="F", type=_float_in(0, 1), default=0.2,
                       help="share of rows held out for the test metrics, stratified by class "
                            "where possible; 0 trains on every row (default: 0.2)")
    train.add_argument("--random-state", metavar="N", type=int,
                       help="seed for the test split, weight initialisation and shuffling "
                            "(default: a fresh seed each run)")
    train.add_argument("--early-stopping", action="store_true",
                       help="hold out 10%% of the training rows and stop when their score stops "
                            "improving, keeping the best weights")
    train.add_argument("-q", "--quiet", action="store_true",
                       help="no per-epoch progress display")

    predict = commands.add_parser(
        "predict", help="predict with a saved model",
        description="Load a model file and write its predictions for DATA: one per line, or "
                    "with --proba a CSV of class probabilities whose header is the class "
                    "labels.")
    predict.set_defaults(run=_predict)
    predict.add_argument("model", metavar="MODEL", help="model file written by 'fastmlp train' "
                                                        "or model.save()")
    predict.add_argument("data", metavar="DATA",
                         help="rows to predict: a .csv file with a header row and the model's "
                              "feature columns, an .npz file with an array X, or a bundled "
                              "data set name")
    predict.add_argument("-o", "--output", metavar="FILE",
                         help="file to write (default: standard output)")
    predict.add_argument("--target", metavar="COLUMN",
                         help="CSV only: a column to drop before predicting, such as the "
                              "target column of a training file")
    predict.add_argument("--proba", action="store_true",
                         help="write class probabilities (classifiers only)")
    return parser


def main(argv=None):
    """Run the ``fastmlp`` command.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 2 for bad arguments or input (with a message on standard error).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error argparse has reported
        return 0 if exit_.code is None else exit_.code
    try:
        return args.run(args)
    except InputError as exc:
        print(f"fastmlp {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"fastmlp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output has gone (`fastmlp predict ... | head`): stop quietly, and
        # point stdout at devnull so that the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
