"""Features beyond scikit-learn: optimizers, activations, dropout, class weights, validation
monitoring, partial_fit early stopping, callbacks and progress display."""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV
from sklearn.utils.class_weight import compute_class_weight

from fastmlp import EpochRecord, MLPClassifier, MLPRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
X, y = load_digits(return_X_y=True)
X = X[:600] / 16.0
y = y[:600]
X_val, y_val = load_digits(return_X_y=True)
X_val, y_val = X_val[600:900] / 16.0, y_val[600:900]


@pytest.mark.parametrize("solver, lr", [("adagrad", 0.05), ("rmsprop", 0.002), ("adamw", 0.005)])
def test_new_solvers_learn(solver, lr):
    clf = MLPClassifier(hidden_layer_sizes=(32,), solver=solver, learning_rate_init=lr,
                        max_iter=40, random_state=0).fit(X, y)
    assert clf.score(X_val, y_val) > 0.85
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]


def test_adamw_decays_weights_more_than_adam():
    params = dict(hidden_layer_sizes=(32,), max_iter=20, random_state=0, alpha=0.0,
                  learning_rate_init=0.01)
    adam = MLPClassifier(solver="adam", **params).fit(X, y)
    adamw = MLPClassifier(solver="adamw", weight_decay=0.5, **params).fit(X, y)
    norm = lambda m: sum(float((c**2).sum()) for c in m.coefs_)  # noqa: E731
    assert norm(adamw) < 0.8 * norm(adam)
    # weight_decay=0 is exactly Adam (which parameters decay: the reference test below)
    plain = MLPClassifier(solver="adamw", weight_decay=0.0, **params).fit(X, y)
    np.testing.assert_array_equal(plain._params, adam._params)


@pytest.fixture
def first_params(monkeypatch):
    """Filled with the parameters the first epoch of the next CPU fit starts from."""
    import fastmlp.cpu as cpu

    seen, train_epoch = [], cpu.train_epoch

    def recording(state, *args):
        if not seen:
            seen.append(state.params.copy())
        return train_epoch(state, *args)

    monkeypatch.setattr(cpu, "train_epoch", recording)
    return seen


def _reference_adam_fit(layout, params, Xs, ys, epochs, learning_rates, weight_decay=0.0,
                        decayed=None):
    """Full-batch float64 Adam(W) by fastmlp/reference.py from the flat `params`, for a
    (16,)-hidden-unit classifier with alpha=1e-3: coefs then intercepts."""
    from fastmlp import reference

    p = [a.copy() for a in layout.coefs(params) + layout.intercepts(params)]
    m, v = [np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p]
    Y = (ys[:, None] == np.arange(10)).astype(float)
    for epoch in range(epochs):
        _, coef_grads, intercept_grads = reference.loss_and_gradients(
            p[:2], p[2:], Xs, Y, "relu", "softmax", "log_loss", 1e-3)
        reference.adam_step(p, m, v, coef_grads + intercept_grads, epoch + 1,
                            learning_rates[epoch], 0.9, 0.999, 1e-8, weight_decay, decayed)
    return p


def test_adamw_decays_the_weights_and_not_the_biases(first_params):
    """Full-batch float64 AdamW lands where reference.adam_step does when only the coefficient
    arrays are flagged for decay, and away from where decaying the biases too would land."""
    Xs, ys = X[:120], y[:120]
    clf = MLPClassifier(hidden_layer_sizes=(16,), solver="adamw", weight_decay=0.5,
                        learning_rate_init=0.01, batch_size=120, shuffle=False, max_iter=4,
                        tol=0.0, n_iter_no_change=100, alpha=1e-3, dtype="float64",
                        random_state=0).fit(Xs, ys)
    args = (clf._layout, first_params[0], Xs, ys, 4, [0.01] * 4, 0.5)
    want = _reference_adam_fit(*args, decayed=[True, True, False, False])
    for got, expected in zip(clf.coefs_ + clf.intercepts_, want):
        assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    every = _reference_adam_fit(*args, decayed=[True] * 4)
    for got, decayed_bias in zip(clf.intercepts_, every[2:]):
        assert not np.allclose(got, decayed_bias, rtol=1e-6, atol=0)


@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "gelu", "silu"])
def test_new_activations_learn(activation):
    clf = MLPClassifier(hidden_layer_sizes=(32,), activation=activation, max_iter=40,
                        learning_rate_init=0.01, random_state=0).fit(X, y)
    assert clf.score(X_val, y_val) > 0.85


def test_dropout_is_reproducible_and_only_active_in_training():
    params = dict(hidden_layer_sizes=(64, 32), max_iter=10, random_state=0,
                  learning_rate_init=0.01)
    a = MLPClassifier(dropout=0.3, **params).fit(X, y)
    b = MLPClassifier(dropout=0.3, **params).fit(X, y)
    np.testing.assert_array_equal(a._params, b._params)
    other_seed = MLPClassifier(dropout=0.3, **{**params, "random_state": 1}).fit(X, y)
    no_dropout = MLPClassifier(**params).fit(X, y)
    assert not np.array_equal(a._params, no_dropout._params)
    assert not np.array_equal(a.coefs_[0], other_seed.coefs_[0])
    np.testing.assert_array_equal(a.predict_proba(X_val), a.predict_proba(X_val))
    assert a.score(X_val, y_val) > 0.85
    # Dropout regularises: the training loss it sees is higher than without it.
    assert a.loss_curve_[-1] > no_dropout.loss_curve_[-1]


def test_dropout_refuses_lbfgs():
    with pytest.raises(ValueError, match="dropout needs a mini-batch solver"):
        MLPClassifier(solver="lbfgs", dropout=0.2).fit(X, y)


# ----------------------------------------------------------------------------- class weights
def test_balanced_class_weight_equals_the_matching_sample_weight():
    y_imbalanced = (y == 3).astype(int)
    params = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, dtype="float64")
    balanced = MLPClassifier(class_weight="balanced", **params).fit(X, y_imbalanced)
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=y_imbalanced)
    explicit = MLPClassifier(**params).fit(X, y_imbalanced,
                                           sample_weight=weights[y_imbalanced])
    assert_allclose(balanced._params, explicit._params, rtol=1e-12)


def test_dict_class_weight_multiplies_sample_weight():
    params = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, dtype="float64")
    sw = np.random.RandomState(0).uniform(0.5, 2.0, len(y))
    class_weight = {3: 4.0, 7: 0.5}
    weighted = MLPClassifier(class_weight=class_weight, **params).fit(X, y, sample_weight=sw)
    factor = np.array([class_weight.get(label, 1.0) for label in y])
    explicit = MLPClassifier(**params).fit(X, y, sample_weight=sw * factor)
    assert_allclose(weighted._params, explicit._params, rtol=1e-12)


def test_class_weight_errors():
    with pytest.raises(ValueError, match="not among the classes"):
        MLPClassifier(class_weight={42: 2.0}, max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="cannot be used with partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=np.arange(10))
    with pytest.raises(ValueError, match="not supported for multilabel"):
        MLPClassifier(class_weight="balanced", max_iter=2).fit(X, np.column_stack([y > 4, y > 6]))
    with pytest.raises(ValueError, match="'class_weight' parameter"):
        MLPClassifier(class_weight="uniform").fit(X, y)


# ----------------------------------------------------------------------------- monitoring
def test_validation_data_is_monitored_every_epoch():
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=6, random_state=0,
                        restore_best_weights=False)
    clf.fit(X, y, validation_data=(X_val, y_val))
    assert len(clf.validation_scores_) == len(clf.validation_loss_curve_) == 6
    assert clf.validation_scores_[-1] == clf.score(X_val, y_val)
    assert_allclose(clf.validation_loss_curve_[-1],
                    log_loss(y_val, clf.predict_proba(X_val), labels=np.arange(10)), rtol=1e-5)
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ == min(clf.loss_curve_)  # stopping still follows the training loss


def test_internal_split_also_records_a_validation_loss_curve():
    clf = MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, early_stopping=True,
                       random_state=0).fit(X, y.astype(float))
    assert len(clf.validation_loss_curve_) == clf.n_iter_
    assert np.isfinite(clf.validation_loss_curve_).all()


def test_early_stopping_on_external_validation_data_restores_best_weights():
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=200, early_stopping=True,
                        n_iter_no_change=3, learning_rate_init=0.02, random_state=0)
    clf.fit(X, y, validation_data=(X_val, y_val))
    assert clf.stopped_early_ and clf.n_iter_ < 200
    assert clf.score(X_val, y_val) == clf.best_validation_score_
    assert clf.t_ == clf.n_iter_ * len(X)  # no rows were held out of the training set
    last = clone(clf).set_params(restore_best_weights=False)
    last.fit(X, y, validation_data=(X_val, y_val))
    assert last.score(X_val, y_val) == last.validation_scores_[-1]


def test_partial_fit_early_stopping_with_validation_data():
    clf = MLPClassifier(hidden_layer_sizes=(32,), early_stopping=True, n_iter_no_change=2,
                        learning_rate_init=0.05, random_state=0)
    calls = 0
    while calls < 100:
        clf.partial_fit(X, y, classes=np.arange(10), validation_data=(X_val, y_val))
        calls += 1
        if clf.stopped_early_:
            break
    assert clf.stopped_early_ and calls < 100
    assert len(clf.validation_scores_) == calls
    assert clf.score(X_val, y_val) == clf.best_validation_score_


def test_partial_fit_early_stopping_with_the_internal_split():
    reg = MLPRegressor(hidden_layer_sizes=(8,), early_stopping=True, random_state=0)
    for _ in range(3):
        reg.partial_fit(X, y.astype(float))
    assert len(reg.validation_scores_) == 3 and reg.t_ == 3 * int(len(X) * 0.9)


def test_validation_data_errors():
    with pytest.raises(ValueError, match="validation_data must be a tuple"):
        MLPClassifier(max_iter=2).fit(X, y, validation_data=X_val)
    with pytest.raises(ValueError, match="validation_data: X_val has 3 features"):
        MLPClassifier(max_iter=2).fit(X, y, validation_data=(X_val[:, :3], y_val))
    with pytest.raises(ValueError, match="classes not in"):
        MLPClassifier(max_iter=2).fit(X, y, validation_data=(X_val, y_val + 20))
    with pytest.raises(ValueError, match="needs a mini-batch solver"):
        MLPClassifier(solver="lbfgs", max_iter=2).fit(X, y, validation_data=(X_val, y_val))


# ----------------------------------------------------------------------------- callbacks
def test_callbacks_receive_records_and_can_stop_training():
    records = []

    def stop_at_four(record):
        records.append(record)
        return record.epoch == 4

    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=50, random_state=0,
                        callbacks=[stop_at_four])
    clf.fit(X, y, validation_data=(X_val, y_val))
    assert clf.n_iter_ == 4 and clf.stopped_early_
    assert [r.epoch for r in records] == [1, 2, 3, 4]
    assert all(isinstance(r, EpochRecord) and r.model is clf for r in records)
    assert_allclose([r.train_loss for r in records], clf.loss_curve_)
    assert [r.validation_score for r in records] == clf.validation_scores_
    assert_allclose([r.validation_loss for r in records], clf.validation_loss_curve_)
    assert all(r.seconds > 0 and r.learning_rate == 0.001 for r in records)


def test_callbacks_are_a_plain_parameter():
    """GridSearchCV clones the estimator: every clone it fits calls the callback once per
    epoch, the refitted best estimator last."""
    records = []
    search = GridSearchCV(MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0,
                                        callbacks=[records.append]),
                          {"alpha": [1e-4, 1e-3]}, cv=2).fit(X, y)
    assert [r.epoch for r in records] == [1, 2, 3] * 5  # 2 candidates x 2 folds, then the refit
    assert len({id(r.model) for r in records}) == 5
    assert all(r.model is search.best_estimator_ for r in records[-3:])
    assert_allclose([r.train_loss for r in records[-3:]], search.best_estimator_.loss_curve_)
    assert all(r.validation_score is None and r.validation_loss is None for r in records)


def test_progress_bar_is_its_own_parameter_and_leaves_stdout_alone(capsys):
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, progress_bar=True, random_state=0)
    clf.fit(X, y)
    out, err = capsys.readouterr()
    assert "loss" in err and ("3/3" in err or "epoch 3" in err)
    assert out == ""  # verbose=False: nothing on stdout
    assert clone(clf).get_params()["progress_bar"] is True
    # verbose at any level prints scikit-learn's lines and no bar.
    MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, verbose=2, random_state=0).fit(X, y)
    out, err = capsys.readouterr()
    assert out.count("Iteration ") == 3 and err == ""


# ----------------------------------------------------------------------- learning-rate decay
def test_decay_factor_follows_its_formula_and_holds_after_the_horizon():
    from fastmlp.optimizers import decay_factor

    horizon = 8
    for epoch in range(horizon):
        assert decay_factor(None, epoch, horizon) == 1.0
        assert decay_factor("linear", epoch, horizon) == pytest.approx(1 - epoch / horizon)
        assert decay_factor("cosine", epoch, horizon) == pytest.approx(
            (1 + np.cos(np.pi * epoch / horizon)) / 2)
    for decay in ("linear", "cosine"):
        last = decay_factor(decay, horizon - 1, horizon)
        assert 0 < last < decay_factor(decay, horizon - 2, horizon)
        assert decay_factor(decay, horizon + 5, horizon) == last


@pytest.fixture
def kernel_learning_rates(monkeypatch):
    """The learning rate the CPU kernel receives in each epoch, in order."""
    import fastmlp.cpu as cpu

    rates, train_epoch = [], cpu.train_epoch

    def recording(state, features, Y, sw, order, batch_size, net, opt):
        rates.append(opt.learning_rate)
        return train_epoch(state, features, Y, sw, order, batch_size, net, opt)

    monkeypatch.setattr(cpu, "train_epoch", recording)
    return rates


@pytest.mark.parametrize("solver", ["sgd", "adam", "adagrad", "rmsprop", "adamw"])
@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_every_solver_gets_the_decayed_rate_in_fit_and_partial_fit(kernel_learning_rates,
                                                                   solver, decay):
    from fastmlp.optimizers import decay_factor

    records = []
    params = dict(hidden_layer_sizes=(8,), solver=solver, learning_rate_init=0.01,
                  learning_rate_decay=decay, max_iter=5, tol=0.0, n_iter_no_change=100,
                  random_state=0, callbacks=[records.append])
    MLPClassifier(**params).fit(X, y)
    want = [0.01 * decay_factor(decay, e, 5) for e in range(5)]
    assert_allclose(kernel_learning_rates, want, rtol=1e-12)
    assert_allclose([r.learning_rate for r in records], want, rtol=1e-12)  # the epoch's own

    # partial_fit: one epoch of the schedule per call, continuing across calls; past max_iter
    # the rate stays at the last epoch's.
    kernel_learning_rates.clear()
    clf = MLPClassifier(**dict(params, callbacks=None))
    for _ in range(7):
        clf.partial_fit(X, y, classes=np.unique(y))
    assert_allclose(kernel_learning_rates, want + [want[-1]] * 2, rtol=1e-12)


def test_decay_composes_with_sgd_invscaling(kernel_learning_rates):
    from fastmlp.optimizers import decay_factor

    clf = MLPClassifier(hidden_layer_sizes=(8,), solver="sgd", learning_rate="invscaling",
                        learning_rate_init=0.1, power_t=0.5, learning_rate_decay="linear",
                        max_iter=3, tol=0.0, n_iter_no_change=100, random_state=0).fit(X, y)
    n = X.shape[0]
    own = [0.1] + [0.1 / (e * n + 1) ** 0.5 for e in (1, 2)]  # invscaling after e epochs
    assert_allclose(kernel_learning_rates,
                    [r * decay_factor("linear", e, 3) for e, r in enumerate(own)], rtol=1e-12)
    assert clf.n_iter_ == 3


def test_decayed_adam_fit_equals_the_reference_loop(first_params):
    """Full-batch float64 Adam with a linear decay: every step of the reference implementation
    uses learning_rate_init * (1 - e / max_iter) in epoch e, and lands on the same weights."""
    Xs, ys = X[:120], y[:120]
    params = dict(hidden_layer_sizes=(16,), solver="adam", learning_rate_init=0.01,
                  batch_size=120, shuffle=False, max_iter=4, tol=0.0, n_iter_no_change=100,
                  alpha=1e-3, dtype="float64", random_state=0)
    clf = MLPClassifier(learning_rate_decay="linear", **params).fit(Xs, ys)

    p = _reference_adam_fit(clf._layout, first_params[0], Xs, ys, 4,
                            [0.01 * (1 - epoch / 4) for epoch in range(4)])
    for got, want in zip(clf.coefs_ + clf.intercepts_, p):
        assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # and the decay mattered: a constant rate ends elsewhere
    constant = MLPClassifier(**params).fit(Xs, ys)
    assert not np.allclose(constant.coefs_[0], clf.coefs_[0], rtol=1e-6)


def test_decay_is_validated_and_survives_save_and_load(tmp_path):
    import fastmlp

    with pytest.raises(ValueError, match="learning_rate_decay"):
        MLPClassifier(learning_rate_decay="exponential").fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_decay="cosine", max_iter=3,
                        random_state=0).fit(X, y)
    clf.save(tmp_path / "m.fastmlp")
    assert fastmlp.load(tmp_path / "m.fastmlp").learning_rate_decay == "cosine"


@pytest.mark.parametrize("solver", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_optimizer_slots_are_the_buffers_the_kernels_update(solver):
    """slots() (what fastmlp.dask averages) names exactly the arrays train_epoch receives, and
    counters() carries Adam's update count, so averaging can neither miss nor invent state."""
    from fastmlp.optimizers import make_optimizer

    est = MLPClassifier(solver=solver, max_iter=3)
    optimizer = make_optimizer(est, 7, np.float32)
    kernel_slots, opt = optimizer.kernel_args()
    named = optimizer.slots()
    assert {id(a) for a in kernel_slots} == {id(a) for a in named.values()}
    assert all(a.shape == (7,) and a.dtype == np.float32 for a in named.values())
    adam = solver.startswith("adam")
    optimizer.epoch_done(opt.step + 4 if adam else opt.step)  # as train_epoch returns it
    counters = optimizer.counters()
    assert counters["epochs_done"] == 1
    assert ("step" in counters) == adam and counters.get("step", 4) == 4
