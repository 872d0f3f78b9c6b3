"""Runs tests/cuda_sim under numba's CUDA simulator in a separate process (the simulator must
be switched on before numba is imported, and the CPU tests in this process need real
compilation). On a machine with a GPU, FASTMLP_GPU_TESTS=1 runs the same tests on the GPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _run(env_flag):
    env = dict(os.environ, **env_flag)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             str(HERE / "cuda_sim")], capture_output=True, text=True, env=env,
                            timeout=900, cwd=HERE.parent)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]


def test_cuda_backend_under_the_simulator():
    _run({"NUMBA_ENABLE_CUDASIM": "1"})


def _gpu_present():
    try:
        from numba import cuda

        return cuda.is_available()
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(not _gpu_present(), reason="no NVIDIA GPU on this machine")
def test_cuda_backend_on_a_real_gpu():
    _run({"FASTMLP_GPU_TESTS": "1", "NUMBA_ENABLE_CUDASIM": "0"})
