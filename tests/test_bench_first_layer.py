"""bench/first_layer.py: its three contestants compute the same first-layer products, and the
harness prints one row per contestant."""

import numpy as np
import pytest
from bench_scripts import load


@pytest.fixture(scope="module")
def first_layer():
    return load("first_layer")


@pytest.mark.parametrize("networks", [1, 3])
def test_the_contestants_compute_the_same_products(first_layer, networks):
    first_layer.check(networks, np.float64)


def test_a_contestant_that_skips_a_copy_is_caught(first_layer, monkeypatch):
    """check() compares every network's products with NumPy's: the wide path without its copy
    back into the networks' activations leaves them unwritten, and check() says so."""
    broken = first_layer.wide_alone

    def wide_without_copies(n, Xb, W, Z, dZ, dW, W_wide, Z_wide, dZ_wide, dW_wide):
        broken(n, Xb, W_wide, Z_wide, dZ_wide, dW_wide)

    monkeypatch.setattr(first_layer, "wide_with_copies", wide_without_copies)
    with pytest.raises(AssertionError):
        first_layer.check(2, np.float64)


def test_the_table_has_a_row_per_contestant(first_layer, capsys):
    times = first_layer.main(["--networks", "2", "--repeats", "1", "--batches", "3"])
    out = capsys.readouterr().out
    assert set(times) == {"separate", "wide, copies included", "wide alone"}
    for name in times:
        assert f"| {name} | " in out
