"""bench/gpu_batch_sizes.py, the harness that decides fastmlp.cuda.launch.FUSED_OPT_IN_ROWS on a
GPU: its rule, and its table, from fake timings (no GPU here; a --smoke run under the simulator
takes minutes, too long for this suite)."""

import pytest
from bench_scripts import load

from fastmlp.cuda import launch


@pytest.fixture
def batch_sizes():
    return load("gpu_batch_sizes")


def _table(times):
    """{(dtype, batch): {"fused": (s, path), "per-layer": (s, path)}} from
    {(dtype, batch): (fused seconds or None when it did not fit, per-layer seconds)}."""
    return {key: {"fused": (fused or 1.0, "fused" if fused else "per-layer (tiled)"),
                  "per-layer": (layer, "per-layer (tiled)")}
            for key, (fused, layer) in times.items()}


def test_the_rule_takes_the_largest_size_up_to_which_the_one_block_kernel_always_won(
        batch_sizes):
    dtypes, sizes = ("float32", "float64"), (32, 64, 128, 256)
    times = {(d, b): (1.0, 2.0) for d in dtypes for b in sizes}
    assert batch_sizes.opt_in_rows(_table(times), dtypes, sizes) == 256
    times["float64", 128] = (2.5, 2.0)  # float64 loses at 128: the limit is 64 for both
    assert batch_sizes.opt_in_rows(_table(times), dtypes, sizes) == 64
    times["float64", 128] = (1.0, 2.0)
    times["float32", 256] = (None, 2.0)  # does not fit at 256
    assert batch_sizes.opt_in_rows(_table(times), dtypes, sizes) == 128
    times["float32", 32] = (3.0, 2.0)  # loses already at the smallest size
    assert batch_sizes.opt_in_rows(_table(times), dtypes, sizes) == 0


def test_a_run_alternates_the_paths_and_restores_the_launch_settings(batch_sizes, monkeypatch,
                                                                      capsys):
    calls = []

    def fake_epoch(estimator, X, y, path):
        calls.append((estimator.dtype, estimator.batch_size, path, len(X)))
        assert launch.FUSED_OPT_IN_ROWS == 8  # lifted to the largest size measured
        return (0.001 if path == "fused" else 0.004), path
    monkeypatch.setattr(batch_sizes, "epoch_seconds", fake_epoch)
    shipped = launch.FUSED_OPT_IN_ROWS, launch.FUSED_EPOCHS
    table = batch_sizes.main(["--rows", "40", "--repeats", "2", "--batch-sizes", "4", "8",
                              "--dtypes", "float64"])
    assert (launch.FUSED_OPT_IN_ROWS, launch.FUSED_EPOCHS) == shipped
    timed = [c for c in calls if c[3] == 40]  # the others are the compiling warm-ups
    assert [c[2] for c in timed] == ["fused", "per-layer", "per-layer", "fused"] * 2
    assert set(table) == {("float64", 4), ("float64", 8)}
    out = capsys.readouterr().out
    # 0.001 s over 10 batches of 4 rows: 100 us per batch; per-layer 4x that
    assert "| float64 | 4 | 100.0 | fused | 400.0 | 4.00x |" in out
    assert f"FUSED_OPT_IN_ROWS should be 8 (now {shipped[0]})" in out
