"""fastmlp.fit_many with device="cuda": each network as its own fit on the device trains it, a
whole group in one launch per epoch on the fused path. Tiny shapes under the simulator."""

import warnings

import numpy as np
import pytest

from fastmlp.cuda.device import target

if target() is None:
    pytest.skip("CUDA code cannot run in this process: these tests need numba's CUDA simulator "
                "(NUMBA_ENABLE_CUDASIM=1 before numba is imported, as tests/test_cuda.py runs "
                "them) or a usable GPU", allow_module_level=True)

from test_cuda_backend import _count_launches  # noqa: E402 (pytest puts this folder on sys.path)

import fastmlp  # noqa: E402

rng = np.random.RandomState(0)
X = rng.normal(size=(20, 3))
y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
BASE = dict(hidden_layer_sizes=(4,), max_iter=2, batch_size=7, tol=0, random_state=0,
            device="cuda")


def _group(dtype):
    return [fastmlp.MLPClassifier(**BASE, dtype=dtype, alpha=1e-3),
            fastmlp.MLPClassifier(**BASE, dtype=dtype, learning_rate_init=0.01,
                                  solver="sgd", momentum=0.9),
            fastmlp.MLPClassifier(**{**BASE, "random_state": 1}, dtype=dtype, activation="tanh")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_each_network_equals_its_own_fit_on_the_device(dtype):
    together, alone = _group(dtype), _group(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 2 epochs
        fastmlp.fit_many(together, X, y)
        for est in alone:
            est.fit(X, y)
    for a, b in zip(together, alone):
        # The same kernel arithmetic, one block per network: bit for bit.
        np.testing.assert_array_equal(a._params, b._params)
        np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
        assert a.n_iter_ == b.n_iter_


def test_a_group_takes_one_launch_per_epoch(monkeypatch):
    counts = _count_launches(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fastmlp.fit_many([fastmlp.MLPClassifier(**BASE, alpha=a) for a in (1e-4, 1e-3, 1e-2)],
                         X, y)
    # Training: one launch per epoch for the three networks; the rest is the gathering of the
    # data and nothing per network or per mini-batch.
    assert counts["train_epoch_fused"] == BASE["max_iter"], counts


# 21 rows: three folds of 14 training rows each, one size, so one group on the device.
X21, y21 = np.vstack([X, X[:1] + 0.5]), np.append(y, 2)


def _folds():
    """Three folds of (X, y) with the same number of rows, as KFold(3) gives on 21 rows."""
    rows = np.arange(21)
    return [(X21[rows % 3 != k], y21[rows % 3 != k]) for k in range(3)]


def _check_one_launch_each_as_alone(monkeypatch, together, datasets):
    """fit_many(together, datasets=datasets) trains in one launch per epoch, and each network
    ends exactly as a copy of it fitted alone on its own data."""
    alone = [fastmlp.MLPClassifier(**est.get_params()) for est in together]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est, data in zip(alone, datasets):
            est.fit(*data)
        counts = _count_launches(monkeypatch)
        fastmlp.fit_many(together, datasets=datasets)
    assert counts["train_epoch_fused"] == BASE["max_iter"], counts
    for a, b in zip(together, alone):
        np.testing.assert_array_equal(a._params, b._params)
        np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fits_on_different_data_of_one_size_train_in_one_launch(monkeypatch, dtype):
    """Cross-validation folds: different rows, same shapes. Their data are concatenated on the
    device once and each fit's batch order offset into its own part, so the whole group still
    trains in one launch per epoch, each network exactly as its own fit on its own fold."""
    folds = _folds()
    together = [fastmlp.MLPClassifier(**BASE, dtype=dtype, alpha=a) for a in (1e-4, 1e-2)
                for _ in folds]
    _check_one_launch_each_as_alone(monkeypatch, together, folds * 2)


def test_fits_on_different_numbers_of_rows_train_in_one_launch(monkeypatch):
    """Data sets of 14 and 20 rows (2 and 3 batches of 7): one launch per epoch, each block
    making its own fit's batches, each network exactly as its own fit."""
    datasets = [(X[:14], y[:14]), (X, y), (X[3:17], y[3:17])]
    assert all(len(np.unique(part)) == 3 for _, part in datasets)  # one output layer for all
    together = [fastmlp.MLPClassifier(**BASE, dtype="float64", alpha=a) for a in (1e-4, 1e-2, 1)]
    _check_one_launch_each_as_alone(monkeypatch, together, datasets)


def test_a_search_trains_every_fold_in_one_launch_per_epoch(monkeypatch):
    """fastmlp's GridSearchCV over GPU networks hands all its folds to one fit_many call: two
    candidates on three folds are six networks in one launch per epoch, with scikit-learn's
    own search's results."""
    from sklearn.model_selection import GridSearchCV as SkGridSearchCV
    from sklearn.model_selection import KFold

    from fastmlp.model_selection import GridSearchCV

    est = fastmlp.MLPClassifier(**BASE, dtype="float64")
    grid, cv = {"alpha": [1e-4, 1e-1]}, KFold(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = SkGridSearchCV(est, grid, cv=cv, refit=False).fit(X21, y21)
        counts = _count_launches(monkeypatch)
        search = GridSearchCV(est, grid, cv=cv, refit=False).fit(X21, y21)
    assert counts["train_epoch_fused"] == BASE["max_iter"], counts
    for key, value in reference.cv_results_.items():
        if not key.endswith("_time"):
            np.testing.assert_array_equal(search.cv_results_[key], value, err_msg=key)


def test_cross_validation_trains_every_fold_in_one_launch_per_epoch(monkeypatch):
    """On 20 rows 3-fold cross-validation trains on 13, 13 and 14 rows: one launch all the
    same."""
    from sklearn import model_selection as skms

    from fastmlp.model_selection import cross_validate

    est = fastmlp.MLPClassifier(**BASE, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = skms.cross_validate(est, X, y, cv=3, return_train_score=True)
        counts = _count_launches(monkeypatch)
        ours = cross_validate(est, X, y, cv=3, return_train_score=True)
    assert counts["train_epoch_fused"] == BASE["max_iter"], counts
    for key in ("test_score", "train_score"):
        np.testing.assert_array_equal(ours[key], reference[key])


def test_fits_on_different_sparse_data_train_in_one_launch(monkeypatch):
    import scipy.sparse as sp

    folds = [(sp.csr_matrix(X_fold * (X_fold > 0)), y_fold) for X_fold, y_fold in _folds()]
    together = [fastmlp.MLPClassifier(**BASE, dtype="float64") for _ in folds]
    _check_one_launch_each_as_alone(monkeypatch, together, folds)
