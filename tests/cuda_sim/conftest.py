"""The CUDA tests need NUMBA_ENABLE_CUDASIM=1 (or a GPU) set before numba is imported, so they
are collected only in a process started that way: tests/test_cuda.py starts one."""

import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("FASTMLP_GPU_TESTS") != "1":
    collect_ignore_glob = ["test_*.py"]
