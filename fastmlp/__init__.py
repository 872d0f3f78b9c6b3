"""fastmlp: scikit-learn's multilayer perceptrons, trained by Numba-compiled kernels."""

from ._version import __version__
from .callbacks import EpochRecord
from .estimators import MLPClassifier, MLPRegressor
from .persistence import ModelFileError, load
from .plotting import plot_loss_curve
from .training import DivergenceError

__all__ = ["DivergenceError", "EpochRecord", "MLPClassifier", "MLPRegressor", "ModelFileError",
           "load", "plot_loss_curve",
           "__version__"]
