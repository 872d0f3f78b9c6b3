"""bench/compare.py's harness: scikit-learn is timed at its default BLAS threads and on one
thread, and the faster is what the table shows, with a note saying which (no timings here: the
runners are scripted)."""

import pytest
from bench_scripts import load

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def compare():
    return load("compare")


def blas_threads():
    return max((p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"), default=1)


@pytest.mark.parametrize("one_thread_faster", [True, False])
def test_sklearn_is_shown_at_its_faster_thread_setting(compare, one_thread_faster):
    seen = []

    def sklearn_run(rep):
        threads = blas_threads()
        seen.append(threads)
        slow = threads > 1 if one_thread_faster else threads == 1
        return [10.0 if slow else 1.0], {}

    compare.CURRENT["workload"] = "W9"
    with threadpoolctl.threadpool_limits(limits=2):  # a default of two threads, as on the VM
        results = compare.alternate({compare.FAST: lambda rep: ([0.5], {}),
                                     compare.SKL: sklearn_run}, repeats=2)
    assert sorted(set(seen)) == [1, 2] and len(seen) == 4  # both settings, every repeat
    assert set(results) == {compare.FAST, compare.SKL}
    assert results[compare.SKL]["median"] == 1.0
    shown = "1 thread" if one_thread_faster else "default threads"
    assert compare.sklearn_thread_notes() == [
        f"W9: scikit-learn shown at its faster setting, {shown} ("
        + ("default threads 10 s, 1 thread 1 s" if one_thread_faster
           else "default threads 1 s, 1 thread 10 s") + ")"]
