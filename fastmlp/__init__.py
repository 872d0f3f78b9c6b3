"""fastmlp: scikit-learn's multilayer perceptrons, trained by Numba-compiled kernels."""

from .estimators import MLPClassifier, MLPRegressor
from .persistence import ModelFileError, load
from .training import DivergenceError

__version__ = "0.1.0"
__all__ = ["DivergenceError", "MLPClassifier", "MLPRegressor", "ModelFileError", "load",
           "__version__"]
