"""Build hook: compile fastmlp's CPU kernels while the package is built, so that `pip install .`
ships them in the package's __pycache__ folders and a first fit compiles nothing (README, "The
first fit").

The compiled code is numba's on-disk cache, made by `python -m fastmlp.compile` in the build
environment (numba, numpy and scipy are build requirements). numba uses an entry only where it
matches: the same numba version, Python and CPU; anywhere else a fit compiles as it would
without one, once. Set FASTMLP_SKIP_COMPILE=1 to build without it. Editable installs skip it.
"""

import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


def compile_into(build_lib):
    """Compile the kernels of the package copy in `build_lib` into its __pycache__ folders
    (whatever NUMBA_CACHE_DIR says); True when that worked."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = os.path.abspath(build_lib)  # the copy being packaged
    result = subprocess.run([sys.executable, "-m", "fastmlp.compile"], env=env, cwd=build_lib,
                            check=False)
    return result.returncode == 0


class BuildWithCompiledKernels(build_py):
    def run(self):
        super().run()
        if os.environ.get("FASTMLP_SKIP_COMPILE") or getattr(self, "editable_mode", False):
            return
        if not compile_into(self.build_lib):  # the package works without: a first fit compiles
            print("fastmlp: compiling the kernels failed; the package is built without them",
                  file=sys.stderr)


if __name__ == "__main__":  # what pip's build backend and `python setup.py` run
    setup(cmdclass={"build_py": BuildWithCompiledKernels})
