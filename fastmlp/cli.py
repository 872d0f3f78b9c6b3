"""The ``fastmlp`` command: train a model from the shell and predict with a saved one.

``fastmlp train`` fits an MLPClassifier or MLPRegressor on a bundled data set, a CSV file or an
.npz file, by default after imputing, standardising and one-hot encoding its columns, writes a
model file (preprocessing included) and prints test metrics; ``fastmlp predict`` loads a model
file and writes its predictions. This module calls the public API and reports: reading files is
``fastmlp.tabular``'s job, preprocessing ``fastmlp.preprocessing``'s; it holds no training logic.
Bad input, and every expected failure (unreadable or full files, memory), is one line on stderr
and exit status 2, never a traceback, with no file half-written; sizes, label types and column
names are checked before training.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import csv
import io
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils.multiclass import type_of_target

from . import __version__, persistence
from .callbacks import ProgressBar
from .config import compile_seconds
from .estimators import MLPClassifier, MLPRegressor
from .persistence import MAX_PARAMS, ModelFileError
from .preprocessing import NUMBER, TEXT, TabularPreprocessor
from .tabular import (
    DATASET_NAMES,
    InputError,
    check_labels,
    first_non_number,
    load_data,
    memory_budget,
    size_text,
)

EXIT_BAD_INPUT = 2  # argparse's status for usage errors; every input error uses it
MAX_AUTO_CLASSES = 20  # an integer target with more distinct values is taken as a quantity
MAX_SEED = 2**32 - 1  # numpy's RandomState accepts seeds in [0, 2**32)
# A text target with at least this share of distinct values looks like an id or free text.
ID_SHARE = 0.9
# A network must load again in 'fastmlp predict', whose loader refuses more parameters.
MAX_WIDTH = MAX_PARAMS
# Training holds about this many copies of the parameters: weights, gradients, two optimizer
# slots, the best weights kept for early stopping, and a spare for the update.
PARAM_COPIES = 6
# Errors the command reports as one line and exit status 2 wherever they arise (ModelFileError
# and UnicodeError are ValueErrors). Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (InputError, OSError, MemoryError, ValueError, OverflowError)


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


def _split(rows, y, classify, test_size, random_state):
    """(rows_train, rows_test, y_train, y_test); the test parts are None when test_size is 0."""
    if test_size == 0:
        return rows, None, y, None
    stratify = None
    if classify and y.ndim == 1 and np.unique(y, return_counts=True)[1].min() >= 2:
        stratify = y  # keeps every class in both parts where it can
    try:
        return train_test_split(rows, y, test_size=test_size, random_state=random_state,
                                stratify=stratify)
    except ValueError as exc:
        raise InputError(f"cannot split off a test set with --test-size {test_size}: "
                         f"{_one_line(exc)}") from None


def _fit(model, X, y, quiet):
    """Fit with a per-epoch progress display; returns (seconds of training, seconds spent
    compiling kernels first, warnings to report)."""
    progress = None
    if not quiet and model.solver != "lbfgs":  # L-BFGS has no epochs to show
        progress = ProgressBar(model.max_iter)
        model.set_params(callbacks=[progress])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        compiled = compile_seconds()
        try:
            model.fit(X, y)
        except (ValueError, RuntimeError) as exc:  # bad input, divergence, unusable device
            raise InputError(f"training failed: {_one_line(exc)}") from None
        except MemoryError:
            raise InputError("training failed: not enough memory for this network and "
                             "data (try fewer or narrower --hidden layers, or a smaller "
                             "--batch-size)") from None
        finally:
            if progress is not None:
                progress.close()
            # The progress bar belongs to this run, not to the saved model.
            model.set_params(callbacks=None)
        compiling = compile_seconds() - compiled  # reported apart: not part of the fit time
        seconds = time.perf_counter() - started - compiling
    return seconds, compiling, caught


def _one_line(exc, limit=200):
    """An exception's message cut to one short line (some quote whole arrays)."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    text = lines[0] if len(lines) == 1 else lines[0] + " ..."
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _report_warnings(caught, epochs):
    """Each distinct warning of the fit as one line on stderr (no source lines)."""
    seen = set()
    for warning in caught:
        text = (str(warning.message).strip().splitlines() or [""])[0]
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
    _check_output(output, args.data)  # first, so that a long fit is not lost to a typo
    data = load_data(args.data, args.target, target_required=True)
    table = data.table
    what = f"target column {data.target_name!r}" if data.target_name else "the target"
    check_labels(data.y, f"{args.data}: {what}")
    _check_finite_targets(data, what)
    task, reason = _choose_task(args.task, data)
    classify = task == "classify"
    if not classify and data.y.dtype.kind not in "biuf":
        raise InputError(f"{what} is not numeric, so it cannot be regressed on; use "
                         "--task classify for class labels")
    if classify:
        _check_class_labels(data.y, what)
    if classify and data.y.ndim == 1 and len(np.unique(data.y)) < 2:
        raise InputError(f"{what} has a single class ({str(data.y[0])!r}); classification "
                         "needs at least two")
    notes = _target_notes(args, data, classify, what)
    # A text column beside a numeric last column is often the forgotten target.
    text_columns = table.names_of(TEXT)
    target_hint = None
    if args.target is None and text_columns and data.y.dtype.kind in "biuf":
        target_hint = f"use --target COLUMN if {text_columns[0]!r} is the target"

    rows = np.arange(table.n_rows)
    train_rows, test_rows, y_train, y_test = _split(rows, data.y, classify, args.test_size,
                                                    args.random_state)
    kind = f"classification, {len(np.unique(data.y))} classes" if classify and data.y.ndim == 1 \
        else ("classification" if classify else "regression")
    target = f", target {data.target_name!r}" if data.target_name else ""
    if reason is not None:
        kind += f" (guessed because {reason}; --task sets it)"
    columns = f"{len(table.names)} features"
    if text_columns:
        columns += f" ({len(text_columns)} of text)"
    print(f"{data.name}: {table.n_rows} rows, {columns}{target}; {kind}; training on "
          f"{len(train_rows)} rows, testing on {0 if test_rows is None else len(test_rows)}")
    if target_hint is not None and not args.no_preprocess:
        notes.append(f"note: the target is the last column, {data.target_name!r}; "
                     f"{target_hint}")

    preprocessing = None if args.no_preprocess else TabularPreprocessor()
    if args.no_preprocess:  # checked on every row, so that a message names the first bad one
        _plain_features(args.data, table, "--no-preprocess", target_hint)
    X_train = _features(args.data, table.take(train_rows), preprocessing, args.dtype,
                        "--no-preprocess", target_hint, fit=True)
    X_test = None if test_rows is None else _features(
        args.data, table.take(test_rows), preprocessing, args.dtype, "--no-preprocess",
        target_hint)

    estimator = MLPClassifier if classify else MLPRegressor
    if classify and y_train.ndim == 1 and len(np.unique(y_train)) < 2:
        raise InputError(f"the {len(y_train)} training rows left after holding out "
                         f"--test-size {args.test_size} hold a single class of {what}; "
                         "classification needs at least two (more rows, or --test-size 0)")
    hidden = tuple(width for group in args.hidden for width in group)
    _check_network(X_train.shape, hidden, _n_outputs(data.y, classify), args)
    for line in notes:  # every check has passed: what remains is training and saving
        print(line, file=sys.stderr)
    model = estimator(hidden_layer_sizes=hidden, activation=args.activation,
                      solver=args.solver, alpha=args.alpha,
                      batch_size="auto" if args.batch_size is None else args.batch_size,
                      learning_rate_init=args.learning_rate, max_iter=args.epochs,
                      early_stopping=args.early_stopping, random_state=args.random_state,
                      dtype=args.dtype, device=args.device)
    seconds, compiling, caught = _fit(model, X_train, y_train, args.quiet)
    metrics = [] if X_test is None else _metrics(model, X_test, y_test, classify)
    try:
        persistence.save(model, output, preprocessing=preprocessing)
    except OSError as exc:  # the save is atomic: nothing is left at `output`
        raise InputError(f"cannot write the model file {output}: "
                         f"{exc.strerror or _one_line(exc)}") from None
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot write the model file {output}: {_one_line(exc)}") from None

    _report_warnings(caught, args.epochs)  # after saving: a failure is then the only line
    unit = "iterations" if args.solver == "lbfgs" else "epochs"
    print(f"fit time: {seconds:.2f} s ({model.n_iter_} {unit})" +
          (f"; compiling kernels, once: {compiling:.2f} s" if compiling > 0.005 else ""))
    for line in metrics:
        print(line)
    print(f"model written to {output}")
    return 0


def _check_finite_targets(data, what):
    """Refuse NaN or infinite numeric targets, naming the first row that holds one."""
    y = data.y
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) if y.ndim == 1 else ~np.isfinite(y).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"{what} is NaN or infinite on {data.table.where(row)} "
                             f"({int(bad.sum())} rows); every training row needs a finite "
                             "target")


def _check_class_labels(y, what):
    """Refuse targets a classifier cannot take, before training: non-integer numbers, and
    several columns that are not 0/1 indicators."""
    kind = type_of_target(y)
    if kind.startswith("continuous"):
        example = y[~np.equal(np.mod(y, 1), 0)].flat[0]
        raise InputError(f"{what} holds numbers that are not whole ({example}), which are "
                         "not class labels; use --task regress")
    if kind == "multiclass-multioutput":
        raise InputError(f"{what} has {y.shape[1]} columns of class labels; a classifier "
                         "takes one column, or several 0/1 columns (multilabel)")


def _target_notes(args, data, classify, what):
    """Lines for stderr saying which column is the target and why; refuses a text target
    that looks like an identifier (a different value on every row) for classification."""
    notes = []
    if data.target_name is not None:
        why = "--target" if args.target is not None else \
            "last column; use --target NAME to choose"
        notes.append(f"target: column {data.target_name!r} ({why})")
    y = data.y
    if classify and y.ndim == 1:
        n_rows, n_classes = len(y), len(np.unique(y))
        if y.dtype.kind == "U" and n_classes > MAX_AUTO_CLASSES and \
                n_classes >= ID_SHARE * n_rows:
            raise InputError(f"{what} holds {n_classes} different texts in {n_rows} rows: it "
                             "looks like an identifier or free text, not a class label, and a "
                             "classifier needs several rows of each class; name the target "
                             "column with --target NAME")
        if n_classes > MAX_AUTO_CLASSES and 2 * n_classes >= n_rows:  # <= 2 rows a class
            notes.append(f"warning: {what} has {n_classes} distinct values in {n_rows} rows: "
                         "most classes have too few rows to learn from; is it the target "
                         "you meant? (--target NAME, --task regress)")
    return notes


def _n_outputs(y, classify):
    """The network's output units for targets y (as fit will make them)."""
    if y.ndim == 2:
        return y.shape[1]
    if not classify:
        return 1
    n_classes = len(np.unique(y))
    return 1 if n_classes == 2 else n_classes


def _check_network(shape, hidden, n_outputs, args):
    """Refuse, before training, a network that 'fastmlp predict' could not load again, or
    that would not fit in memory."""
    units = [shape[1], *hidden, n_outputs]
    n_params = sum(a * b + b for a, b in zip(units[:-1], units[1:]))
    layers = ",".join(map(str, hidden))
    if n_params > MAX_PARAMS:
        raise InputError(f"--hidden {layers} makes a network of {n_params:,} parameters "
                         f"({shape[1]} inputs, {n_outputs} outputs), more than the "
                         f"{MAX_PARAMS:,} a model file may hold for 'fastmlp predict'; use "
                         "fewer or narrower layers")
    itemsize = np.dtype(args.dtype).itemsize
    batch = shape[0] if args.solver == "lbfgs" else min(args.batch_size or 200, shape[0])
    needed = itemsize * (PARAM_COPIES * n_params + 3 * batch * sum(units[1:]))
    budget = memory_budget()
    if budget is not None and needed > budget:
        raise InputError(f"--hidden {layers} needs about {size_text(needed)} of memory to "
                         f"train ({n_params:,} parameters), more than the {size_text(budget)} "
                         "available; use fewer or narrower layers")


def _check_output(output, *inputs, devices=False):
    """Refuse an output path that cannot be written, or that is one of the `inputs` (it would
    be replaced), or (unless `devices`) a device or pipe, before anything is read or
    trained."""
    folder = output.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {output}: folder {folder} does not exist")
    if output.is_dir():
        raise InputError(f"cannot write {output}: it is a folder")
    for source in inputs:
        with contextlib.suppress(OSError):
            if Path(source).is_file() and output.exists() and os.path.samefile(source, output):
                raise InputError(f"cannot write {output}: it is the input file {source}; "
                                 "choose another output")
    if output.exists() and not output.is_file():
        if devices:  # predictions are written to a device or pipe in place
            return
        # A model file is replaced by renaming a new file over it: that would replace a
        # device or a FIFO (/dev/full, a pipe) with a regular file.
        raise InputError(f"cannot write {output}: it is not a regular file (a device or a "
                         "pipe); a model file must be a file")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {output}: folder {folder} is not writable "
                         f"({exc.strerror or exc})") from None


def _features(source, table, preprocessing, dtype, plain_option, hint, fit=False):
    """The model's input array for `table`: preprocessed (fitted first when `fit`), or the
    number columns as they are when `preprocessing` is None; refused when a value does not
    fit the model's dtype."""
    if preprocessing is None:
        X = _plain_features(source, table, plain_option, hint)
    else:
        try:
            X = preprocessing.fit_transform(table) if fit else preprocessing.transform(table)
        except ValueError as exc:
            raise InputError(f"{source}: {exc}") from None
    limit = np.finfo(dtype).max
    too_large = ~(np.abs(X) <= limit)
    if too_large.any():
        row, column = np.argwhere(too_large)[0]  # always a number column: they come first
        value = table.numbers[row, column]
        standardised = "" if preprocessing is None else f", standardised {X[row, column]:.3g},"
        raise InputError(f"{source}: column {table.names_of(NUMBER)[column]!r} holds "
                         f"{value:.6g} on {table.where(row)}{standardised} beyond {dtype}'s "
                         f"range (+-{limit:.3g}); rescale the column or use --dtype float64")
    return X


def _plain_features(source, table, plain_option, hint):
    """The number block of a table whose columns must all be numbers without missing values."""
    why = (f"with {plain_option} every feature column must hold numbers" if plain_option
           else "the model was saved without preprocessing, so it takes numbers only")
    if table.texts:
        name, column = table.names_of(TEXT)[0], table.texts[0]
        row = first_non_number(column)  # a text column always has one
        hint_text = "" if hint is None else f"; {hint.replace('COLUMN', name)}"
        raise InputError(f"{source}: column {name!r} is not numeric: {str(column[row])!r} on "
                         f"{table.where(row)}; {why}{hint_text}")
    missing = np.isnan(table.numbers)
    if missing.any():
        row, column = np.argwhere(missing)[0]
        fix = f" (drop {plain_option} to fill in missing values)" if plain_option else ""
        raise InputError(f"{source}: column {table.names_of(NUMBER)[column]!r} has a missing "
                         f"value on {table.where(row)}; {why}{fix}")
    return table.numbers


def _metrics(model, X_test, y_test, classify):
    """The lines reporting the test metrics."""
    try:
        y_pred = model.predict(X_test)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"predicting the test rows failed: {_one_line(exc)}") from None
    if classify:
        return [f"test accuracy: {accuracy_score(y_test, y_pred):.4f}"]
    finite = np.isfinite(y_pred)
    if not finite.all():
        n_bad = int(np.size(finite) - np.count_nonzero(finite))
        return [f"test R^2 and RMSE: not computed, {n_bad} of {np.size(finite)} predictions "
                "are not finite (test features far outside the training rows' range?)"]
    rmse = float(np.sqrt(mean_squared_error(y_test, y_pred)))
    return [f"test R^2: {r2_score(y_test, y_pred):.4f}", f"test RMSE: {rmse:.6g}"]


# ---------------------------------------------------------------------------- predict
def _load_model(source):
    path = Path(source)
    if path.exists() and not path.is_file():
        raise InputError(f"cannot load the model {source}: it is not a regular file")
    if not path.is_file():
        raise InputError(f"model file not found: {source}")
    try:
        return persistence.load_with_preprocessing(path)
    except (ModelFileError, OSError) as exc:
        reason = str(exc).removeprefix(f"{path}: ")  # load() often names the file already
        raise InputError(f"cannot load the model {source}: {reason}") from None


def _predict(args):
    if args.output is not None:
        _check_output(Path(args.output), args.model, args.data, devices=True)
    model, preprocessing = _load_model(args.model)
    if model.device == "cuda":
        # Trained on a GPU; predictions are the same on the CPU, so use one only if present.
        model.set_params(device="auto")
    if args.proba and not hasattr(model, "predict_proba"):
        raise InputError(f"--proba needs a classifier, but {args.model} holds a "
                         f"{type(model).__name__}")
    is_csv = Path(args.data).suffix.lower() == ".csv"
    if preprocessing is not None:
        # A model trained on a CSV reads its columns, by name and kind, whatever their order.
        by_name = preprocessing.by_name and is_csv
        data = load_data(args.data, args.target,
                         columns=preprocessing.names if by_name else None,
                         kinds=preprocessing.kinds if by_name else None)
        expected = len(preprocessing.names)
    else:
        # A model fitted on named columns (a DataFrame) reads those columns, by name.
        names = getattr(model, "feature_names_in_", None)
        columns = None if names is None or not is_csv else list(names)
        data = load_data(args.data, args.target, columns=columns)
        expected = model.n_features_in_
    table = data.table
    if len(table.names) != expected:
        hint = ""
        if is_csv and args.target is None and len(table.names) == expected + 1:
            hint = "; if one column is the target, name it with --target to drop it"
        raise InputError(f"{args.data} has {len(table.names)} feature columns, but the model "
                         f"was trained on {expected}{hint}")
    if preprocessing is not None and list(table.kinds) != preprocessing.kinds:
        column = next(i for i, (a, b) in enumerate(zip(table.kinds, preprocessing.kinds))
                      if a != b)
        raise InputError(f"{args.data}: feature column {column + 1} ({table.names[column]!r}) "
                         f"holds {table.kinds[column]}s, but the model was trained on "
                         f"{preprocessing.kinds[column]}s there")
    X = _features(args.data, table, preprocessing, model.dtype, None, None)
    with warnings.catch_warnings():
        # We matched the columns by name above; sklearn only sees a plain array.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        try:
            values = model.predict_proba(X) if args.proba else model.predict(X)
        except (ValueError, RuntimeError) as exc:  # unusable device, ...
            raise InputError(f"prediction failed: {_one_line(exc)}") from None
    header = [str(label) for label in model.classes_] if args.proba else None
    text = _rows_text(values, header)  # all of it, so that nothing is written half

    if args.output is None:
        _encoded(text, sys.stdout.encoding or "utf-8", "standard output")
        _write_stdout(text)
        return 0
    _write_file(Path(args.output), _encoded(text, "utf-8", args.output))
    print(f"{len(values)} predictions written to {args.output}")
    return 0


def _rows_text(values, header):
    """The CSV text: one line per sample; numpy's str() of each value is the shortest text
    that reads back as the same number (float32 included)."""
    file = io.StringIO()
    writer = csv.writer(file, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    if values.ndim == 1:
        writer.writerows([str(value)] for value in values)
    else:
        writer.writerows([str(value) for value in row] for row in values)
    return file.getvalue()


def _encoded(text, encoding, where):
    """`text` as bytes in `encoding`, or an InputError naming the character that has none
    (a class label holding a lone surrogate, say)."""
    try:
        encoding = codecs.lookup(encoding).name
    except LookupError:  # an encoding Python does not know
        encoding = "utf-8"
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as exc:
        raise InputError(f"cannot write the predictions to {where}: "
                         f"{exc.object[exc.start:exc.end]!r} (in a class label or value) has "
                         f"no {encoding} encoding") from None


def _write_file(path, data):
    """Write `data` to `path`: through a temporary file renamed over a regular file, so that a
    failure (a full disk) leaves no half-written file; straight to a device or pipe."""
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder")
    try:
        if path.exists() and not path.is_file():
            with open(path, "wb") as file:
                file.write(data)
            return
        persistence.atomic_write(path, lambda file: file.write(data))
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or _one_line(exc)}") from None


# ---------------------------------------------------------------------------- arguments
def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _widths(text):
    """Hidden layer widths: one number, or several separated by commas ('16,8')."""
    parts = text.replace(",", " ").split()
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} holds no layer width")
    widths = [_positive_int(part) for part in parts]
    for width in widths:
        if width > MAX_WIDTH:
            raise argparse.ArgumentTypeError(f"must be at most {MAX_WIDTH} (the most "
                                             "parameters a model file may hold), got "
                                             f"{width}")
    return widths


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED}, got {value}")
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
  fastmlp train digits --hidden 64,32 --epochs 50 --output digits.fmlp
  fastmlp train houses.csv --target price --task regress --output price.fmlp
  fastmlp predict digits.fmlp digits --output predictions.csv
  fastmlp predict price.fmlp houses.csv
"""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error reported as one line (not the usage text first)."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} "
                                  "--help')\n")


def build_parser():
    """The argument parser of the ``fastmlp`` command (exposed for documentation tools)."""
    parser = _Parser(
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
                    "print test metrics (accuracy; or R^2 and RMSE) and the fit time. By "
                    "default missing values are filled in (median; most frequent text), number "
                    "columns standardised and text columns one-hot encoded, all learnt from the "
                    "training rows and saved in the model file; --no-preprocess turns this off.")
    train.set_defaults(run=_train)
    train.add_argument("data", metavar="DATA", help=data_help)
    train.add_argument("-o", "--output", metavar="MODEL", required=True,
                       help="model file to write (fastmlp's .fmlp format, preprocessing "
                            "included; read it back with 'fastmlp predict' or "
                            "fastmlp.persistence.load_with_preprocessing)")
    train.add_argument("--target", metavar="COLUMN",
                       help="CSV only: name of the target column (default: the last column)")
    train.add_argument("--task", choices=["classify", "regress"],
                       help="classification or regression (default: known for bundled data "
                            "sets; otherwise classify when the target is text, binary, or has "
                            f"at most {MAX_AUTO_CLASSES} distinct integer values)")
    train.add_argument("--hidden", metavar="N", type=_widths, nargs="+", default=[[100]],
                       help="hidden layer widths, e.g. --hidden 256 128 or --hidden 256,128 "
                            "(default: 100)")
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
    train.add_argument("--random-state", metavar="N", type=_seed,
                       help="seed for the test split, weight initialisation and shuffling, "
                            f"0 to {MAX_SEED} (default: a fresh seed each run)")
    train.add_argument("--early-stopping", action="store_true",
                       help="hold out 10%% of the training rows and stop when their score stops "
                            "improving, keeping the best weights")
    train.add_argument("--no-preprocess", action="store_true",
                       help="use the feature columns as they are: they must all hold numbers, "
                            "with no missing values")
    train.add_argument("-q", "--quiet", action="store_true",
                       help="no per-epoch progress display")

    predict = commands.add_parser(
        "predict", help="predict with a saved model",
        description="Load a model file and write its predictions for DATA: one per line, or "
                    "with --proba a CSV of class probabilities whose header is the class "
                    "labels. The preprocessing saved with the model is applied first.")
    predict.set_defaults(run=_predict)
    predict.add_argument("model", metavar="MODEL", help="model file written by 'fastmlp train' "
                                                        "or model.save()")
    predict.add_argument("data", metavar="DATA",
                         help="rows to predict: a .csv file with a header row and the model's "
                              "feature columns (found by name; others are ignored), an .npz "
                              "file with an array X, or a bundled data set name")
    predict.add_argument("-o", "--output", metavar="FILE",
                         help="file to write (default: standard output)")
    predict.add_argument("--target", metavar="COLUMN",
                         help="CSV only: a column to drop before predicting, such as the "
                              "target column of a training file")
    predict.add_argument("--proba", action="store_true",
                         help="write class probabilities (classifiers only)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
        with warnings.catch_warnings(record=True) as stray:
            warnings.simplefilter("default")
            warnings.simplefilter("ignore", DeprecationWarning)  # for developers, not users
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            status = args.run(args)
        # Warnings from outside the fit (numpy, scikit-learn) as one line each, and only when
        # the command succeeded: a failure is its one line.
        _report_warnings(stray, None)
        _write_stdout()  # a full disk behind stdout fails here, not at the interpreter's exit
        return status
    except KeyboardInterrupt:
        print(f"fastmlp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output has gone (`fastmlp predict ... | head`): stop quietly.
        _drop_stdout()
        return 1
    except EXPECTED_ERRORS as exc:
        _drop_stdout()
        print(f"fastmlp {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _error_line(exc):
    """The one line that reports an expected error."""
    if isinstance(exc, InputError):
        text = str(exc)
    elif isinstance(exc, OSError):
        reason = exc.strerror or _one_line(exc)
        text = reason if exc.filename is None else f"{exc.filename}: {reason}"
    elif isinstance(exc, MemoryError):
        text = "not enough memory" + (f" ({_one_line(exc)})" if str(exc) else "")
    else:
        text = f"{_one_line(exc)} ({type(exc).__name__})"
    # A file name or a label may hold line breaks; the report stays one line.
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _write_stdout(text=None):
    """Write `text` (if any) to stdout and flush it; a failure other than a closed pipe is an
    InputError."""
    try:
        if text is not None:
            sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise InputError(f"cannot write to standard output: "
                         f"{exc.strerror or _one_line(exc)}") from None


def _drop_stdout():
    """After a failed write to stdout (a full disk, a closed pipe), discard what is left in
    its buffer so that the interpreter's final flush does not fail again."""
    try:
        sys.stdout.flush()
    except OSError:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
