"""bench/microkernel.py's register-blocked tile (an experiment fastmlp does not use, see its
docstring) computes A @ B at every size around its tile, so the timings it prints compare
correct products."""

import numpy as np
import pytest
from bench_scripts import load


@pytest.fixture(scope="module")
def microkernel():
    return load("microkernel")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tiled_product_matches_numpy_around_the_tile_sizes(microkernel, dtype):
    microkernel.check(dtype)


def test_check_fails_when_the_tile_is_wrong(microkernel, monkeypatch):
    """check() is a real oracle: a product that drops the last column fails it."""
    good = microkernel.tiled_product

    def dropped_column(C, A, B):
        good(C, A, B)
        C[:, -1] = 0

    monkeypatch.setattr(microkernel, "tiled_product", dropped_column)
    with pytest.raises(AssertionError):
        microkernel.check(np.float32)
