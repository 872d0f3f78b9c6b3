"""Optimizer specs: hyper-parameters, flat state slots and the per-epoch learning-rate logic.

The arithmetic of an update lives in the compiled kernels; these objects only own the state buffers
and decide, once per epoch, what scalars the kernel gets. Behaviour follows scikit-learn's
SGDOptimizer and AdamOptimizer, so that schedules and stopping match step for step.
"""

import math

import numpy as np

from .bundles import OptimizerStep
from .ops import OPTIMIZER


def decay_factor(decay, epoch, horizon):
    """Learning-rate multiplier of 0-based `epoch` under `learning_rate_decay`: 1 in the first
    epoch, falling linearly or along a half cosine over `horizon` epochs. It never reaches 0 (the
    last epoch of the horizon keeps a small step) and stays at its last value after it."""
    if decay is None:
        return 1.0
    progress = min(epoch, horizon - 1) / horizon
    if decay == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Optimizer:
    """What every optimizer shares: the epoch count and the decay schedule applied on top of the
    optimizer's own rate (set by make_optimizer; no decay by default)."""

    decay = None
    horizon = 1
    epochs_done = 0

    def scale(self):
        """This epoch's decay multiplier."""
        return decay_factor(self.decay, self.epochs_done, self.horizon)

    def epoch_done(self, step):
        """Count the epoch; `step` is the kernel's update counter after it."""
        self.epochs_done += 1

    def slots(self):
        """The state buffers by name: flat arrays as long as the parameters, updated in place by
        the kernels (what model averaging averages)."""
        return {}

    def counters(self):
        """The integer state by name (epochs done, and Adam's update count)."""
        return {"epochs_done": self.epochs_done}

    # {name an older version stored a slot under: its name now}; see persistence.
    renamed_slots = {}


class SGDOptimizer(Optimizer):
    """Mini-batch SGD with momentum (optionally Nesterov's) and a learning-rate schedule.

    Schedules: ``"constant"``; ``"invscaling"``,
    ``lr = learning_rate_init / (t + 1) ** power_t`` with t the number of samples seen, updated
    after each epoch; ``"adaptive"``, divide by 5 each time training stops improving, until the
    rate falls below 1e-6.
    """

    def __init__(self, n_params, dtype, learning_rate_init, lr_schedule, momentum, nesterov,
                 power_t):
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)
        self.lr_schedule = lr_schedule
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.power_t = float(power_t)
        self.velocity = np.zeros(n_params, dtype=dtype)

    def kernel_args(self):
        """(state slots, bundles.OptimizerStep) in the form train_epoch takes."""
        opt = OptimizerStep(OPTIMIZER["sgd"].code, self.current_learning_rate(), self.momentum,
                            self.nesterov, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
        return (self.velocity, self.velocity), opt

    def slots(self):
        return {"velocity": self.velocity}

    def current_learning_rate(self):
        return self.learning_rate * self.scale()

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        """Called when training stops improving: True to stop, False to go on at a lower rate.
        Mirrors SGDOptimizer.trigger_stopping in scikit-learn's
        sklearn/neural_network/_stochastic_optimizers.py (same messages, same rate division)."""
        if self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.learning_rate /= 5.0
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False


class AdaptiveOptimizer(Optimizer):
    """What Adam, AdamW, Adagrad and RMSprop share: each parameter's step is scaled by its own
    gradient statistics, so the base rate is constant (only the decay schedule changes it), and
    training stops, as scikit-learn's Adam does, when it stops improving."""

    def __init__(self, learning_rate_init, epsilon):
        self.learning_rate_init = float(learning_rate_init)
        self.epsilon = float(epsilon)

    def current_learning_rate(self):
        return self.learning_rate_init * self.scale()

    def iteration_ends(self, time_step):
        pass

    def trigger_stopping(self, msg, verbose):
        if verbose:
            print(msg + " Stopping.")
        return True


class AdamOptimizer(AdaptiveOptimizer):
    """Adam (Kingma and Ba, 2014) with bias-corrected step sizes; the step counter persists across
    epochs and partial_fit calls. With weight_decay > 0 this is AdamW (Loshchilov and Hutter,
    2019): weights shrink by learning_rate * weight_decay each step, apart from the gradient."""

    def __init__(self, n_params, dtype, learning_rate_init, beta_1, beta_2, epsilon,
                 weight_decay=0.0):
        super().__init__(learning_rate_init, epsilon)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.weight_decay = float(weight_decay)
        self.step = 0
        self.m = np.zeros(n_params, dtype=dtype)  # first moment: running mean of gradients
        self.v = np.zeros(n_params, dtype=dtype)  # second moment: of squared gradients

    def kernel_args(self):
        kind = OPTIMIZER["adamw" if self.weight_decay > 0 else "adam"].code
        opt = OptimizerStep(kind, self.current_learning_rate(), 0.0, False, self.beta_1,
                            self.beta_2, self.epsilon, 0.0, self.weight_decay, self.step)
        return (self.m, self.v), opt

    def slots(self):
        return {"m": self.m, "v": self.v}

    def counters(self):
        return {**super().counters(), "step": self.step}

    def epoch_done(self, step):
        super().epoch_done(step)
        self.step = int(step)


class SquaredGradientOptimizer(AdaptiveOptimizer):
    """Adagrad (a running sum of squared gradients) or RMSprop (a decaying mean of them, rate
    rho); each step is divided by the square root. One state slot, no update counter."""

    # Slot names older versions stored (persistence maps them when it reads their state).
    renamed_slots = {"m": "squared_gradients"}

    def __init__(self, n_params, dtype, kind, learning_rate_init, epsilon, rho=0.0):
        super().__init__(learning_rate_init, epsilon)
        self.kind = kind
        self.rho = float(rho)
        self.squared_gradients = np.zeros(n_params, dtype=dtype)

    def __setstate__(self, state):
        # Pickled by a version whose one slot was named "m" (and which kept an unused step).
        state = dict(state)
        if "m" in state:
            state["squared_gradients"] = state.pop("m")
            state.pop("step", None)
        vars(self).update(state)

    def kernel_args(self):
        opt = OptimizerStep(self.kind, self.current_learning_rate(), 0.0, False, 0.0, 0.0,
                            self.epsilon, self.rho, 0.0, 0)
        return (self.squared_gradients, self.squared_gradients), opt

    def slots(self):
        return {"squared_gradients": self.squared_gradients}


def make_optimizer(est, n_params, dtype):
    """The optimizer an estimator's parameters ask for, with zeroed state."""
    optimizer = _new_optimizer(est, n_params, dtype)
    optimizer.decay = est.learning_rate_decay
    optimizer.horizon = est.max_iter  # partial_fit: max_iter calls of one epoch each
    return optimizer


def _new_optimizer(est, n_params, dtype):
    solver = est.solver
    if solver == "sgd":
        return SGDOptimizer(n_params, dtype, est.learning_rate_init, est.learning_rate,
                            est.momentum, est.nesterovs_momentum, est.power_t)
    if solver == "adagrad":
        return SquaredGradientOptimizer(n_params, dtype, OPTIMIZER["adagrad"].code,
                                        est.learning_rate_init, est.epsilon)
    if solver == "rmsprop":
        return SquaredGradientOptimizer(n_params, dtype, OPTIMIZER["rmsprop"].code,
                                        est.learning_rate_init, est.epsilon, est.rho)
    return AdamOptimizer(n_params, dtype, est.learning_rate_init, est.beta_1, est.beta_2,
                         est.epsilon, est.weight_decay if solver == "adamw" else 0.0)
