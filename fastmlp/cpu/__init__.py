"""The CPU backend: Numba @njit kernels (kernels.py), used in place on host arrays.

A backend module offers train_epoch, loss_and_gradient and predict (signatures in kernels.py),
plus to_device / to_host for moving arrays and empty for work arrays; here the moves are no-ops.
"""

import numpy as np

from .kernels import loss_and_gradient, predict, train_epoch  # noqa: F401

NAME = "cpu"


def to_device(array):
    return array


def to_host(array):
    return array


def empty(shape, dtype):
    """An uninitialised work array on this backend."""
    return np.empty(shape, dtype)


def check_available():
    """The CPU is always usable."""


def copy_to(destination, host_array):
    """Overwrite a backend array in place with the contents of a host array."""
    destination[:] = host_array
