"""The training driver: epochs, shuffling, validation split, schedules, early stopping, L-BFGS.

Plain Python that runs once per epoch (never once per mini-batch) and calls one compiled kernel per
epoch. Random numbers are drawn here, in exactly scikit-learn's order, so that a float64 fit with
the same random_state reproduces scikit-learn's. It reads and writes the estimator's fitted state
but never validates user input; the estimator has done that.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.optimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import shuffle as shuffle_indices

from .cpu import kernels
from .optimizers import make_optimizer

# Rows per chunk when a whole data set is pushed through the network (L-BFGS, predict): bounds
# the work buffers to chunk x widest-layers instead of the data set's size.
CHUNK_ROWS = 4096


@dataclass
class TrainingData:
    """Validated training data in the form the kernels take.

    features: (X, X_data, X_indices, X_indptr), dense or CSR (see kernels.gather_rows);
    Y (N, K) float targets (one-hot or indicator for classifiers); sw (N,) sample weights, ones
    when the user gave none (weighted_by_user says which); Y_stratify: labels to stratify the
    validation split on, or None.
    """

    features: tuple
    Y: np.ndarray
    sw: np.ndarray
    weighted_by_user: bool
    Y_stratify: object = None

    @property
    def n_samples(self):
        return self.Y.shape[0]


def network(est):
    """The (layers, hidden, output, loss, alpha) tuple the kernels take."""
    loss = est.loss
    if loss == "log_loss" and est.out_activation_ == "logistic":
        loss = "binary_log_loss"
    return (est._layout.table, kernels.ACTIVATION_CODES[est.activation],
            kernels.ACTIVATION_CODES[est.out_activation_], kernels.LOSS_CODES[loss],
            float(est.alpha))


def predict_rows(est, features, rows):
    """Output activations (len(rows), K) for the listed rows of the input."""
    layers, hidden, output, _, _ = network(est)
    out = np.empty((len(rows), est.n_outputs_), dtype=est._params.dtype)
    kernels.predict(out, est._params, features, np.asarray(rows, dtype=np.int64), layers,
                    hidden, output, CHUNK_ROWS)
    return out


def _batch_size(est, n_samples):
    if est.batch_size == "auto":
        return min(200, n_samples)
    if est.batch_size > n_samples:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to "
                      "be clipped")
    return int(np.clip(est.batch_size, 1, n_samples))


def _validation_split(est, data, rs):
    """(train rows, validation rows); the validation rows are None without early stopping.

    Splitting an index array consumes the random generator exactly as scikit-learn's split of X
    and y does, without copying the data.
    """
    rows = np.arange(data.n_samples)
    if not est.early_stopping:
        return rows, None
    train, val = train_test_split(rows, random_state=rs, test_size=est.validation_fraction,
                                  stratify=data.Y_stratify)
    if val.shape[0] < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' or the "
                         "size of your dataset.")
    return train, val


def run_stochastic(est, data, incremental, rs, score_rows):
    """Mini-batch training with sgd or adam, as scikit-learn's ``_fit_stochastic``.

    score_rows(rows) -> validation score of the current parameters on those rows of the data.
    """
    params, dparams = est._params, np.empty_like(est._params)
    if not incremental or getattr(est, "_optimizer", None) is None:
        est._optimizer = make_optimizer(est, params.shape[0], params.dtype)
    optimizer = est._optimizer

    train_rows, val_rows = _validation_split(est, data, rs)
    n_train = train_rows.shape[0]
    batch_size = _batch_size(est, n_train)
    net = network(est)
    sample_idx = np.arange(n_train)

    try:
        est.n_iter_ = 0
        for _ in range(est.max_iter):
            if est.shuffle:
                # scikit-learn shuffles the previous epoch's order again, so we do too.
                sample_idx = shuffle_indices(sample_idx, random_state=rs)
            order = train_rows[sample_idx]
            slots, opt = optimizer.kernel_args()
            total, step = kernels.train_epoch((params, dparams) + slots, data.features, data.Y,
                                              data.sw, order, batch_size, net, opt)
            optimizer.epoch_done(step)

            est.n_iter_ += 1
            est.loss_ = total / n_train
            est.t_ += n_train
            est.loss_curve_.append(est.loss_)
            if est.verbose:
                print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))

            _update_no_improvement_count(est, val_rows, score_rows)
            optimizer.iteration_ends(est.t_)

            if est._no_improvement_count > est.n_iter_no_change:
                if est.early_stopping:
                    msg = ("Validation score did not improve more than tol=%f for %d consecutive "
                           "epochs." % (est.tol, est.n_iter_no_change))
                else:
                    msg = ("Training loss did not improve more than tol=%f for %d consecutive "
                           "epochs." % (est.tol, est.n_iter_no_change))
                if optimizer.trigger_stopping(msg, est.verbose):
                    break
                est._no_improvement_count = 0

            if incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the "
                              "optimization hasn't converged yet." % est.max_iter,
                              ConvergenceWarning)
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.")

    if est.early_stopping:
        params[:] = est._best_params


def _update_no_improvement_count(est, val_rows, score_rows):
    if est.early_stopping:
        score = score_rows(val_rows)
        est.validation_scores_.append(score)
        if est.verbose:
            print("Validation score: %f" % score)
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_params = est._params.copy()
    else:
        if est.loss_curve_[-1] > est.best_loss_ - est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if est.loss_curve_[-1] < est.best_loss_:
            est.best_loss_ = est.loss_curve_[-1]


def run_lbfgs(est, data):
    """Full-batch training with scipy's L-BFGS-B on the flat parameter vector."""
    params, dparams = est._params, np.empty_like(est._params)
    net = network(est)

    def loss_and_gradient(x):
        params[:] = x
        loss = kernels.loss_and_gradient(dparams, params, data.features, data.Y, data.sw, net,
                                         CHUNK_ROWS)
        return loss, dparams.astype(np.float64)  # a fresh array: scipy keeps references

    result = scipy.optimize.minimize(
        loss_and_gradient, params.astype(np.float64), method="L-BFGS-B", jac=True,
        options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol},
    )
    est.n_iter_ = _lbfgs_iterations(result, est.max_iter)
    est.loss_ = float(result.fun)
    params[:] = result.x


def _lbfgs_iterations(result, max_iter):
    """Iterations used, with scikit-learn's ConvergenceWarning when L-BFGS did not converge."""
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        msg = (f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):\n"
               f"{result.message}\n")
        if n_iter == max_iter:
            msg += f"\nIncrease the number of iterations to improve the convergence (max_iter={max_iter})."
        msg += ("\nYou might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html")
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return n_iter
