"""bench/optimizers.py's harness end to end on a small W2 (its figures mean nothing here): every
solver's update loop and epoch are timed, and the timed update does update."""

import numpy as np
import pytest
from bench_scripts import load


@pytest.fixture(scope="module")
def optimizers():
    return load("optimizers")


def test_every_solver_is_timed(optimizers, capsys):
    figures = optimizers.main(["--repeats", "1", "--rows", "400"])
    assert set(figures) == {(solver, what) for solver in optimizers.SOLVERS
                            for what in ("W2", "W1", "epoch")}
    assert all(len(times) == 1 and times[0] > 0 for times in figures.values())
    table = capsys.readouterr().out
    assert all(f"| {solver} |" in table for solver in optimizers.SOLVERS)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_the_timed_loop_updates_the_parameters(optimizers, solver):
    from fastmlp import ops

    params, dparams = np.ones((2, 50))
    slot_1 = np.zeros(50)
    slot_2 = np.zeros(50) if solver == "adam" else slot_1
    scalars = ops.StepScalars(1e-3, 0.9, True, 0.9, 0.999, 1e-8, 0.9, 1e-3, 1.0)
    optimizers._updates(2, ops.OPTIMIZER[solver].code, params, dparams, slot_1, slot_2,
                        scalars)
    assert np.all(params < 1) and np.all(slot_1 != 0)
