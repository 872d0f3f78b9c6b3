"""Label encoding of MLPClassifier: the target matrix built from class labels.

fastmlp builds the one-hot / single-column targets itself (one pass over y); scikit-learn's
LabelBinarizer, fitted on the same classes, is the oracle for every batch shape and label kind.
"""

import numpy as np
import pytest
from sklearn.preprocessing import LabelBinarizer

from fastmlp import MLPClassifier

X = np.random.RandomState(0).normal(size=(12, 3))

# (classes given to the first partial_fit, later batches of labels): batches are unsorted, with
# unequal class counts, so that a misplaced column changes the matrix.
CASES = {
    "multiclass int": ([0, 1, 2], [[2, 0, 1, 1, 2, 2], [2, 0, 2], [1]]),
    "multiclass mixed int": ([-5, 3, 10, 7], [np.array([10, -5, 7, 7, 3], dtype=np.int32),
                                              [7, 10, 10], [-5, -5]]),
    "multiclass str": (["emu", "cat", "dog"], [["dog", "emu", "cat", "cat"], ["emu", "cat"],
                                               ["dog"]]),
    "binary int": ([7, 3], [[7, 3, 7, 7], [3, 3], [7]]),
    "binary str": (["yes", "no"], [["yes", "no", "no"], ["yes", "yes"], ["no"]]),
}


def _model(classes, dtype):
    clf = MLPClassifier(hidden_layer_sizes=(2,), dtype=dtype, random_state=0)
    y = np.asarray(classes)[np.arange(len(X)) % len(classes)]
    return clf.partial_fit(X, y, classes=classes)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_targets_equal_label_binarizer(case, dtype):
    classes, batches = CASES[case]
    clf = _model(classes, dtype)
    oracle = LabelBinarizer().fit(classes)
    for batch in batches:
        expected = oracle.transform(batch)
        assert expected.shape[1] == (1 if len(classes) == 2 else len(classes))
        # The partial_fit / fit path (label set computed once) and the validation-set path.
        _, Y, _ = clf._validate_input(X[:len(batch)], batch, incremental=True, reset=False)
        Y_val = clf._encode_targets(np.asarray(batch), np.dtype(dtype))
        for got in (Y, Y_val):
            assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", sorted(CASES))
def test_fresh_fit_targets_equal_label_binarizer(case):
    classes, batches = CASES[case]
    y = np.concatenate([np.asarray(b, dtype=np.asarray(classes).dtype) for b in batches])
    _, Y, _ = MLPClassifier()._validate_input(X[:len(y)], y, incremental=False, reset=True)
    np.testing.assert_array_equal(Y, LabelBinarizer().fit_transform(y))


def test_multilabel_targets_still_go_through_the_binarizer():
    Y_true = np.array([[1, 0, 1], [0, 1, 1], [0, 0, 0], [1, 1, 0]] * 3)
    clf = MLPClassifier(hidden_layer_sizes=(2,), random_state=0).partial_fit(X, Y_true,
                                                                            classes=[0, 1, 2])
    _, Y, _ = clf._validate_input(X, Y_true[::-1], incremental=True, reset=False)
    np.testing.assert_array_equal(Y, Y_true[::-1])


@pytest.mark.parametrize("batch, message", [
    ([0, 3, 1], r"`y` has classes not in `self.classes_`.*'y' has \[0 1 3\]"),
    (["a", "b"], "`y` has classes not in `self.classes_`"),
    ([0.5, 1.0, 2.0], "Unknown label type"),
    (np.eye(3, dtype=int), "The object was not fitted with multilabel input"),
])
def test_bad_labels_in_a_later_batch_are_refused(batch, message):
    clf = _model([0, 1, 2], "float32")
    with pytest.raises(ValueError, match=message):
        clf.partial_fit(X[:len(batch)], batch)
    with pytest.raises(ValueError, match=message):
        clf._encode_targets(np.asarray(batch), np.dtype("float32"))
