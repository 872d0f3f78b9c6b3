"""bench/activations.py's harness end to end on a small W2 (its figures mean nothing here):
every hidden activation's loop and epoch are timed, and the timed loop does apply it."""

import numpy as np
import pytest
from bench_scripts import load
from numpy.testing import assert_allclose


@pytest.fixture(scope="module")
def activations():
    return load("activations")


def test_every_hidden_activation_is_timed(activations, capsys):
    figures = activations.main(["--repeats", "1", "--rows", "400"])
    assert set(figures) == {(name, what) for name in activations.ACTIVATIONS
                            for what in ("loop", "epoch")}
    assert all(len(times) == 1 and times[0] > 0 for times in figures.values())
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in activations.ACTIVATIONS)


@pytest.mark.parametrize("name", ["elu", "tanh"])
def test_the_timed_loop_applies_the_activation(activations, name):
    from fastmlp import ops, reference

    Z = np.random.default_rng(1).normal(scale=3.0, size=(4, 6)).astype(np.float32)
    work = np.zeros_like(Z)
    activations._activations(2, ops.ACTIVATION[name].code, Z, work)
    assert_allclose(work, reference.activate(name, Z), rtol=1e-6, atol=1e-7)
