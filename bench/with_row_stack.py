"""Run a Python module or script with np.row_stack restored (as np.vstack) where NumPy lacks it.

    python bench/with_row_stack.py -m pytest -q tests/cuda_sim
    python bench/with_row_stack.py bench/compare_gpu.py --epochs 2

For bench/gpu_check.sh only: the H200 image pairs numba-cuda 0.30.4, which overloads
np.row_stack when it builds its CUDA target, with NumPy 2.5, which removed it, and has no
internet to install numpy<2.5. fastmlp itself never patches NumPy: without this shim it refuses
device='cuda' with an error naming the fix (fastmlp/cuda/device.py, numpy_incompatibility).
Says on stderr whether it shimmed anything. Must not be imported by fastmlp or its tests' code.
"""

import os
import runpy
import sys

import numpy as np


def main():
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
        print(f"with_row_stack: numpy {np.__version__} has no np.row_stack; shimmed as np.vstack "
              "for this run (numba-cuda <= 0.30.4 needs it)", file=sys.stderr, flush=True)
    else:
        print(f"with_row_stack: numpy {np.__version__} has np.row_stack; nothing shimmed",
              file=sys.stderr, flush=True)
    if len(sys.argv) < 2 or (sys.argv[1] == "-m" and len(sys.argv) < 3):
        raise SystemExit("usage: python bench/with_row_stack.py (-m module | script) [args...]")
    if sys.argv[1] == "-m":
        module = sys.argv[2]
        sys.argv = [module, *sys.argv[3:]]
        sys.path[0] = os.getcwd()  # as python -m has it
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = sys.argv[1]
        sys.argv = sys.argv[1:]
        sys.path[0] = os.path.dirname(os.path.abspath(script))  # as python script.py has it
        runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
