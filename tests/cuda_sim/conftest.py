"""The CUDA suite needs numba's CUDA target live when numba is imported: the simulator
(NUMBA_ENABLE_CUDASIM=1; tests/test_cuda.py starts such a process) or a real GPU. In any other
process these files are not collected. Tests marked `gpu` run only on a real GPU."""

import numba
import pytest


def _target():
    """'simulator', 'gpu', or None when CUDA code cannot run in this process."""
    if numba.config.ENABLE_CUDASIM:
        return "simulator"
    try:
        from numba import cuda

        return "gpu" if cuda.is_available() else None
    except Exception:  # noqa: BLE001 - no CUDA target at all
        return None


TARGET = _target()
if TARGET is None:
    collect_ignore_glob = ["test_*.py"]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: needs a real CUDA GPU (numba.cuda.is_available() and not the simulator)")


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a real CUDA GPU: numba.cuda.is_available() is False "
                                   "or numba's CUDA simulator is on")
    for item in items:
        if TARGET != "gpu" and item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
