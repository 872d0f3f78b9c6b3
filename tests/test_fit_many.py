"""fastmlp.fit_many: many networks trained together, each exactly as its own fit trains it.

The oracle is the estimator's own `.fit` on the same data: on the CPU the grouped kernel runs
the same arithmetic in the same order, so results must be bit-identical, not just close.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

import fastmlp
from fastmlp import cpu

rng = np.random.RandomState(0)
X = rng.normal(size=(120, 6))
y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int) + (X[:, 2] > 1)  # three classes
y_reg = np.exp(X @ rng.normal(size=6) / 3)  # positive: the poisson loss takes it too

BASE = dict(hidden_layer_sizes=(8, 5), max_iter=6, batch_size=16, tol=0, random_state=0)


def _mixed(dtype):
    """Estimators of every kind fit_many must train as .fit does."""
    base = fastmlp.MLPClassifier(**BASE, dtype=dtype)
    return [
        clone(base).set_params(alpha=1e-2, learning_rate_init=3e-3),
        clone(base).set_params(alpha=1e-5, beta_1=0.8, beta_2=0.99),
        clone(base).set_params(solver="sgd", momentum=0.8, nesterovs_momentum=True,
                               learning_rate="invscaling"),
        clone(base).set_params(solver="sgd", momentum=0.5, nesterovs_momentum=False,
                               random_state=3),
        clone(base).set_params(solver="adamw", weight_decay=0.01, activation="gelu"),
        clone(base).set_params(solver="adagrad", activation="tanh", dropout=0.25),
        clone(base).set_params(solver="rmsprop", activation="silu", hidden_layer_sizes=(7,)),
        clone(base).set_params(early_stopping=True, max_iter=40, tol=1e-3,
                               n_iter_no_change=2, learning_rate_init=0.02),
        clone(base).set_params(batch_size=25, class_weight="balanced"),
        clone(base).set_params(solver="lbfgs", max_iter=15),
    ]


def _fitted_alone(estimators, X, y, **fit_params):
    alone = [clone(est) for est in estimators]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in alone:
            est.fit(X, y, **fit_params)
    return alone


def _assert_same_fit(together, alone):
    assert together.n_iter_ == alone.n_iter_
    np.testing.assert_array_equal(together._params, alone._params)
    np.testing.assert_array_equal(getattr(together, "loss_curve_", []),
                                  getattr(alone, "loss_curve_", []))
    assert getattr(together, "stopped_early_", None) == getattr(alone, "stopped_early_", None)
    for name in ("validation_scores_", "best_loss_", "t_"):
        assert getattr(together, name, None) == getattr(alone, name, None)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n_jobs", [None, 2])
def test_every_fit_equals_its_own_fit_bit_for_bit(dtype, n_jobs):
    estimators = _mixed(dtype)
    alone = _fitted_alone(estimators, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fastmlp.fit_many(estimators, X, y, n_jobs=n_jobs)
    assert all(r is est for r, est in zip(result, estimators))
    for together, single in zip(estimators, alone):
        _assert_same_fit(together, single)
        np.testing.assert_array_equal(together.predict_proba(X), single.predict_proba(X))
    # The early-stopping fit stopped before the others and left the group.
    assert estimators[7].n_iter_ < estimators[7].max_iter


def test_fits_on_different_data_train_as_alone():
    """datasets: each estimator its own (X, y[, sample_weight]), as cross-validation folds
    are; fits on the same fold still share a call, each fold's fits their own."""
    folds = [(X[k::3], y[k::3]) for k in range(3)]
    folds[2] = (*folds[2], np.linspace(0.5, 2, len(folds[2][1])))
    estimators = [clone(est) for est in _mixed("float64")[:4] for _ in folds]
    datasets = folds * 4
    alone = [clone(est) for est in estimators]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est, data in zip(alone, datasets):
            est.fit(*data[:2], sample_weight=data[2] if len(data) == 3 else None)
        fastmlp.fit_many(estimators, datasets=datasets, n_jobs=2)
    for together, single in zip(estimators, alone):
        _assert_same_fit(together, single)


def test_datasets_are_checked_before_any_training():
    est = fastmlp.MLPClassifier(**BASE)
    with pytest.raises(TypeError, match="either X, y and sample_weight or datasets"):
        fastmlp.fit_many([est], X, y, datasets=[(X, y)])
    with pytest.raises(TypeError, match="needs X and y, or datasets"):
        fastmlp.fit_many([est], X)
    with pytest.raises(ValueError, match="datasets has 2 entries for 1 estimators"):
        fastmlp.fit_many([est], datasets=[(X, y), (X, y)])
    with pytest.raises(ValueError, match=r"datasets\[0\] must be a tuple .* got list"):
        fastmlp.fit_many([est], datasets=[[X, y]])
    with pytest.raises(ValueError, match=r"datasets\[0\] .* got tuple of length 1"):
        fastmlp.fit_many([est], datasets=[(X,)])
    assert not hasattr(est, "coefs_")


def test_regressors_sparse_input_and_sample_weights_train_as_alone():
    base = fastmlp.MLPRegressor(**BASE, dtype="float64")
    estimators = [clone(base).set_params(alpha=a, loss=loss)
                  for a in (1e-4, 1e-1) for loss in ("squared_error", "poisson")]
    weights = rng.uniform(0.5, 2.0, size=120)
    X_sparse = sp.csr_matrix(np.where(np.abs(X) > 0.7, X, 0.0))
    alone = _fitted_alone(estimators, X_sparse, y_reg, sample_weight=weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many(estimators, X_sparse, y_reg, sample_weight=weights)
    for together, single in zip(estimators, alone):
        _assert_same_fit(together, single)


def test_fits_that_share_a_seed_share_their_batches_in_one_call(monkeypatch):
    """Four fits of one shape: one compiled call per epoch; the two seeds give two orders."""
    calls = []
    original = cpu.train_epoch_many

    def counting(states, features, Y, sw, orders, order_of, *args):
        calls.append((states.params.shape[0], orders.shape[0], tuple(order_of)))
        return original(states, features, Y, sw, orders, order_of, *args)

    monkeypatch.setattr(cpu, "train_epoch_many", counting)
    base = fastmlp.MLPClassifier(**BASE)
    estimators = [clone(base).set_params(alpha=a, random_state=seed)
                  for seed in (0, 1) for a in (1e-4, 1e-3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many(estimators, X, y)
    assert calls == [(4, 2, (0, 0, 1, 1))] * BASE["max_iter"]


def test_a_failing_fit_fails_alone():
    base = fastmlp.MLPClassifier(**BASE)
    diverging = clone(base).set_params(solver="sgd", learning_rate_init=1e12, momentum=0)
    estimators = [clone(base), clone(base).set_params(alpha=-1.0), diverging,
                  clone(base).set_params(learning_rate_init=0.01)]
    alone = _fitted_alone([estimators[0], estimators[3]], X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fastmlp.fit_many(estimators, X, y, errors="return")
    assert isinstance(result[1], ValueError) and "alpha" in str(result[1])
    assert isinstance(result[2], fastmlp.DivergenceError)
    for failed in (estimators[1], estimators[2]):  # left as before the call: unfitted
        assert not hasattr(failed, "coefs_") and not hasattr(failed, "n_iter_")
    _assert_same_fit(estimators[0], alone[0])
    _assert_same_fit(estimators[3], alone[1])


def test_errors_raise_raises_the_first_failure_after_training_the_rest():
    estimators = [fastmlp.MLPClassifier(**BASE), fastmlp.MLPClassifier(**BASE, alpha=-1.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(ValueError, match="alpha"):
            fastmlp.fit_many(estimators, X, y)
    assert estimators[0].n_iter_ == BASE["max_iter"]


def test_unseeded_fits_draw_independently():
    estimators = [fastmlp.MLPClassifier(**{**BASE, "random_state": None}) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many(estimators, X, y)
    params = [est._params for est in estimators]
    assert not np.array_equal(params[0], params[1])
    assert not np.array_equal(params[1], params[2])
    assert all(np.isfinite(p).all() for p in params)


def test_callbacks_see_every_epoch_and_can_stop_their_own_fit():
    seen = []

    def stop_at_two(record):
        seen.append(record.epoch)
        return record.epoch == 2

    stopping = fastmlp.MLPClassifier(**BASE, callbacks=[stop_at_two])
    other = fastmlp.MLPClassifier(**BASE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many([stopping, other], X, y)
    assert seen == [1, 2]
    assert stopping.n_iter_ == 2 and stopping.stopped_early_
    assert other.n_iter_ == BASE["max_iter"]


def test_progress_bar_counts_finished_fits(capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)  # the plain lines
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many([fastmlp.MLPClassifier(**BASE) for _ in range(3)], X, y,
                         progress_bar=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fit ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]


def test_bad_calls_are_refused_before_any_training():
    est = fastmlp.MLPClassifier(**BASE)
    with pytest.raises(TypeError, match="estimators\\[1\\] is a LogisticRegression"):
        from sklearn.linear_model import LogisticRegression

        fastmlp.fit_many([est, LogisticRegression()], X, y)
    with pytest.raises(ValueError, match="same estimator object twice"):
        fastmlp.fit_many([est, est], X, y)
    with pytest.raises(ValueError, match="errors must be"):
        fastmlp.fit_many([est], X, y, errors="ignore")
    with pytest.raises(ValueError, match="n_jobs"):
        fastmlp.fit_many([est], X, y, n_jobs=0)
    assert not hasattr(est, "coefs_")


def test_stored_once_however_many_fits():
    """The fits' validated data is one set of arrays, whatever the number of fits."""
    from fastmlp import training

    moved = []
    original = training._shared

    def recording(move):
        shared = original(move)

        def wrapper(array):
            result = shared(array)
            moved.append(id(result))
            return result
        return wrapper

    training._shared, saved = recording, training._shared
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fastmlp.fit_many([fastmlp.MLPClassifier(**BASE, alpha=a) for a in (1e-4, 1e-3, 1)],
                             X, y)
    finally:
        training._shared = saved
    # Six arrays a fit (X, the three CSR parts, Y, sample weights); dense input's two empty
    # index arrays are equal, so five stored in all.
    assert len(moved) == 3 * 6 and len(set(moved)) == 5


def test_an_interrupt_stops_every_fit_where_it_is(monkeypatch):
    """Ctrl-C during fit_many ends every fit as it ends one fit: after the epochs done, with a
    warning, stopped_early_ set, the weights so far kept."""
    original, calls = cpu.train_epoch_many, []

    def interrupted_second_epoch(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(cpu, "train_epoch_many", interrupted_second_epoch)
    estimators = [fastmlp.MLPClassifier(**BASE, alpha=a) for a in (1e-4, 1e-3)]
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        result = fastmlp.fit_many(estimators, X, y)
    assert result == estimators
    for est in estimators:
        assert est.n_iter_ == 1 and est.stopped_early_ and np.isfinite(est._params).all()


def test_an_estimator_fitted_elsewhere_fails_alone():
    """The guard of fit: an estimator already being fitted (here by the fit_many call itself,
    through a callback) is refused, and that refusal is its result alone."""
    inner = fastmlp.MLPClassifier(**BASE)
    results = []

    def fit_the_other(record):
        if record.epoch == 1:
            results.extend(fastmlp.fit_many([inner], X, y, errors="return"))

    outer = fastmlp.MLPClassifier(**BASE, callbacks=[fit_the_other])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many([outer, inner], X, y)
    assert isinstance(results[0], RuntimeError) and "already being fitted" in str(results[0])
    assert outer.n_iter_ == inner.n_iter_ == BASE["max_iter"]


@pytest.mark.parametrize("budget, data_cost", [(2, 0), (5, 3)])
def test_fits_beyond_the_memory_budget_train_in_waves(monkeypatch, budget, data_cost):
    """Fits whose state would not fit in the device's memory at once train in consecutive
    waves, each as it would alone (here on the CPU, with room for two fits: a budget of two, or
    of five of which the data hold three)."""
    from fastmlp import many

    monkeypatch.setattr(many, "_memory_budget", lambda: budget)
    monkeypatch.setattr(many, "_wave_cost", lambda est, X, y: 1)
    monkeypatch.setattr(many, "_data_cost", lambda fits, data, costs: data_cost)
    calls, original = [], cpu.train_epoch_many

    def counting(states, *args):
        calls.append(states.params.shape[0])
        return original(states, *args)

    monkeypatch.setattr(cpu, "train_epoch_many", counting)
    estimators = [fastmlp.MLPClassifier(**BASE, alpha=a) for a in (1e-4, 1e-3, 1e-2, 1e-1, 1)]
    alone = _fitted_alone(estimators, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many(estimators, X, y)
    assert calls == [2] * BASE["max_iter"] * 2 + [1] * BASE["max_iter"]
    for together, single in zip(estimators, alone):
        _assert_same_fit(together, single)


def test_the_wave_budget_counts_the_gpu_fits_data_once_and_their_concatenation():
    """Each distinct data set of the GPU fits is on the device for the whole call, once; fits
    on several data sets also hold their concatenation. CPU fits hold nothing there."""
    from fastmlp import many

    est = fastmlp.MLPClassifier(hidden_layer_sizes=(8,), device="cuda", dtype="float32")
    one = len(X) * (X.shape[1] + 3 + 1) * 4  # inputs, 3 one-hot classes, weights
    assert many._data_bytes(est, X, y) == one
    half = many._data_bytes(est, X[::2], y[::2])
    assert half == (len(X) + 1) // 2 * (X.shape[1] + 3 + 1) * 4
    sparse = sp.csr_matrix(X * (X > 0))
    assert many._data_bytes(est, sparse, y) == (sparse.nnz * (4 + 8) + (len(X) + 1) * 8
                                                + len(X) * 4 * 4)
    fits = [many._Fit(clone(est), i) for i in range(3)]
    assert many._data_cost(fits, [(X, y, None)] * 3, [1, 1, 1]) == one
    folds = [(X, y, None), (X[::2], y[::2], None), (X, y, None)]
    assert many._data_cost(fits, folds, [1, 1, 1]) == 2 * (one + half)
    assert many._data_cost(fits, folds, [1, 0, 1]) == one  # fit 1 trains on the CPU


def test_the_wave_estimate_counts_a_gpu_fits_parameter_vectors():
    from fastmlp import many

    est = fastmlp.MLPClassifier(hidden_layer_sizes=(8, 5), device="cuda", dtype="float64")
    n_params = (6 + 1) * 8 + (8 + 1) * 5 + (5 + 1) * 3  # three classes in y
    assert many._wave_cost(est, X, y) == 8 * n_params * 8
    assert many._wave_cost(est.set_params(device="cpu"), X, y) == 0
    assert many._wave_cost(est.set_params(device="cuda", hidden_layer_sizes="x"), X, y) == 0


def test_the_wave_estimate_counts_an_auto_fit_only_where_it_would_take_the_gpu(monkeypatch):
    """device="auto" asks the rule the fit itself asks (fastmlp.cuda.device.auto_choice), with
    the same work description."""
    from fastmlp import many
    from fastmlp.cuda import device

    asked = []

    def rule(answer):
        def auto_choice(**work):
            asked.append(work)
            return answer, "test"
        return auto_choice

    est = fastmlp.MLPClassifier(hidden_layer_sizes=(8, 5), device="auto", dtype="float64",
                                batch_size=16)
    n_params = (6 + 1) * 8 + (8 + 1) * 5 + (5 + 1) * 3
    monkeypatch.setattr(device, "auto_choice", rule("cuda"))
    assert many._wave_cost(est, X, y) == 8 * n_params * 8
    monkeypatch.setattr(device, "auto_choice", rule("cpu"))
    assert many._wave_cost(est, X, y) == 0
    assert asked[0] == dict(layer_units=[6, 8, 5, 3], batch_size=16, n_samples=len(X),
                            dtype="float64", sparse=False, mini_batch=True, dropout=0.0)
    # The fit asks the same question with the same words.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(max_iter=1).fit(X, y)
    assert asked[-1] == asked[0]


def test_fit_many_timed_gives_each_fit_its_own_time():
    """Each fit's seconds: its own preparation and bookkeeping plus its share of the compiled
    calls it trained in; a fit in a group of its own with a much bigger network takes longer,
    and the times of one thread's fits add up to about the call's wall time (not three times
    it: no fit is charged the whole call; a little more where the calling thread's bookkeeping
    for one group overlaps the worker thread's compiled call for the other)."""
    import time

    from fastmlp.many import fit_many_timed

    small = [fastmlp.MLPClassifier(**{**BASE, "hidden_layer_sizes": (2,)}, alpha=a)
             for a in (1e-4, 1e-3)]
    big = fastmlp.MLPClassifier(**{**BASE, "hidden_layer_sizes": (512, 512)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fastmlp.fit_many([clone(small[0]), clone(big)], X, y)  # kernels loaded: not timed below
        began = time.perf_counter()
        results, seconds = fit_many_timed([*small, big], X, y)
    wall = time.perf_counter() - began
    assert results == [*small, big]
    assert all(s > 0 for s in seconds) and sum(seconds) <= 1.1 * wall
    assert seconds[2] > 3 * max(seconds[:2]), seconds


def test_gpu_calls_on_different_data_share_one_concatenation():
    """many._data (what a GPU group call trains on): every distinct data set of one width seen
    in the call, concatenated once; a call that brings a new data set rebuilds it, a call on
    data already in it (fits on other folds stopped early) does not."""
    from types import SimpleNamespace

    from fastmlp import many
    from fastmlp.training import as_features

    def request(rows):
        return SimpleNamespace(features=as_features(X[rows]), Y=np.eye(3)[y[rows]],
                               sw=np.ones(len(rows)))

    a, b, c = request(np.arange(0, 40)), request(np.arange(40, 70)), request(np.arange(70, 120))
    merged = {}
    data, offsets = many._data([a, b, a], cpu, merged)
    assert offsets == [0, 40, 0] and data[0].X.shape == (70, 6)
    np.testing.assert_array_equal(data[0].X[40:70], b.features.X)
    assert many._data([b, b], cpu, merged) == ((b.features, b.Y, b.sw), [0, 0])  # its own
    data, offsets = many._data([c, a], cpu, merged)  # c is new: rebuilt with a, b and c
    assert offsets == [70, 0] and data[0].X.shape == (120, 6)
    np.testing.assert_array_equal(data[1][70:], c.Y)
    again, offsets = many._data([b, c], cpu, merged)
    assert again[0].X is data[0].X and offsets == [40, 70] and len(merged) == 1


def test_gpu_calls_on_different_sparse_data_concatenate_their_csr_parts():
    from types import SimpleNamespace

    from fastmlp import many
    from fastmlp.training import as_features

    Xs = sp.random(120, 6, density=0.3, format="csr", random_state=0)

    def request(rows):
        return SimpleNamespace(features=as_features(Xs[rows]), Y=np.eye(3)[y[rows]],
                               sw=np.ones(len(rows)))

    parts = [request(np.arange(0, 50)), request(np.arange(50, 120))]
    # A valid CSR may keep unused entries after its last row's: they must not shift the next
    # part's rows.
    first = parts[0].features
    parts[0].features = first._replace(data=np.r_[first.data, 9.0, 9.0],
                                       indices=np.r_[first.indices, 0, 1])
    (features, Y, sw), offsets = many._data(parts, cpu, {})
    assert offsets == [0, 50]
    rebuilt = sp.csr_matrix((features.data, features.indices, features.indptr), shape=(120, 6))
    np.testing.assert_array_equal(rebuilt.toarray(), Xs.toarray())
    np.testing.assert_array_equal(Y, np.eye(3)[y])


def test_the_cpu_group_kernel_trains_orders_of_different_lengths():
    """cpu.train_epoch_many with lengths (the backends' shared interface; the CUDA backend
    trains such a group in one launch): each model as train_epoch on the first lengths[g]
    entries of its order, bit for bit, one compiled call per length."""
    from fastmlp import ops
    from fastmlp.bundles import Network, Networks, OptimizerStep, OptimizerSteps, TrainState
    from fastmlp.layout import Layout
    from fastmlp.training import as_features

    layout = Layout((6, 5, 3))
    gen = np.random.default_rng(1)
    start = gen.uniform(-0.5, 0.5, (3, layout.n_params))
    Y = np.eye(3)[y]
    sw = np.ones(len(y))
    nets = [Network(layout.table, ops.ACTIVATION["relu"].code, ops.ACTIVATION["softmax"].code,
                    ops.LOSS["log_loss"].code, alpha, 0.0, 0) for alpha in (1e-4, 1e-2, 1e-3)]
    opts = [OptimizerStep(ops.OPTIMIZER["adam"].code, 0.01, 0.0, False, 0.9, 0.999, 1e-8, 0.0,
                          0.0, 0)] * 3
    orders = np.stack([gen.permutation(len(y)), gen.permutation(len(y))])
    lengths, order_of = np.array([len(y), 77]), np.array([1, 0, 1])
    states = TrainState(start.copy(), np.empty_like(start), np.zeros_like(start),
                        np.zeros_like(start))
    kernel_calls, original = [], cpu.kernels.epoch_many

    def counting(*args):
        kernel_calls.append(1)
        return original(*args)

    totals, steps = cpu.train_epoch_many(states, as_features(X), Y, sw, orders, order_of,
                                         np.arange(3), 16, Networks.of(nets),
                                         OptimizerSteps.of(opts), lengths)
    for m in range(3):
        alone = TrainState(start[m].copy(), np.empty(layout.n_params),
                           np.zeros(layout.n_params), np.zeros(layout.n_params))
        g = order_of[m]
        total, step = cpu.train_epoch(alone, as_features(X), Y, sw, orders[g, :lengths[g]], 16,
                                      nets[m], opts[m])
        np.testing.assert_array_equal(states.params[m], alone.params)
        assert (totals[m], steps[m]) == (total, step)
        assert step == -(-lengths[g] // 16)  # Adam counts the order's own batches
    # One compiled call per length; with every order whole, one call.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu.kernels, "epoch_many", counting)
        cpu.train_epoch_many(states, as_features(X), Y, sw, orders, order_of, np.arange(3), 16,
                             Networks.of(nets), OptimizerSteps.of(opts), lengths)
        cpu.train_epoch_many(states, as_features(X), Y, sw, orders, order_of, np.arange(3), 16,
                             Networks.of(nets), OptimizerSteps.of(opts))
    assert len(kernel_calls) == 3
    with pytest.raises(ValueError, match="lengths must give"):
        cpu.train_epoch_many(states, as_features(X), Y, sw, orders, order_of, np.arange(3), 16,
                             Networks.of(nets), OptimizerSteps.of(opts), np.array([5, 999]))
