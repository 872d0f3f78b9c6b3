"""The CUDA suite needs numba's CUDA target live when numba is imported: the simulator
(NUMBA_ENABLE_CUDASIM=1; tests/test_cuda.py starts such a process) or a real GPU. In any other
process each file skips at module level and says why. Tests marked `gpu` run only on a GPU."""

import pytest

from fastmlp.cuda.device import target

TARGET = target()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs a real CUDA GPU (numba.cuda.is_available() and not the simulator)")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a real CUDA GPU: numba.cuda.is_available() is False "
                                   "or numba's CUDA simulator is on")
    for item in items:
        if TARGET != "gpu" and item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
