"""fastmlp: scikit-learn's multilayer perceptrons, trained by Numba-compiled kernels.

Public names are imported on first use (PEP 562), so that `import fastmlp` is quick and tools
that need only the kernels (`python -m fastmlp.compile`, run while the package is built) do not
import scikit-learn.
"""

import importlib
import importlib.util

from ._version import __version__

_PUBLIC = {
    "DivergenceError": "training",
    "EpochRecord": "callbacks",
    "MLPClassifier": "estimators",
    "MLPRegressor": "estimators",
    "ModelFileError": "persistence",
    "fit_many": "many",
    "load": "persistence",
    "plot_loss_curve": "plotting",
}

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        # The estimators first: importing them registers the classes model files name.
        importlib.import_module(".estimators", __name__)
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value  # found directly from now on
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)  # fastmlp.<module>, as before
    raise AttributeError(f"module 'fastmlp' has no attribute {name!r}")


def __dir__():
    return __all__
