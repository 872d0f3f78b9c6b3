"""JIT options shared by every compiled kernel, set in one place, and the watch on compiling.

Nothing here computes anything; it decides how kernels are compiled (cache or not) so that importing
fastmlp never fails because a cache directory is read-only, and it tells the user, once, when a
fit is about to compile, so that a first fit's pause is explained and kept out of epoch timings.
"""

import sys
import threading
import time
import warnings

import numba
from numba.core import event

# Kernels are compiled without fastmath so that float64 results match scikit-learn's NumPy code to
# the last few ulps, and with error_model="numpy" so that divisions don't carry a zero-check that
# blocks vectorisation (a flat Adam update over 235k parameters ran 3.4x faster without it).
JIT_OPTIONS = {"nogil": True, "error_model": "numpy", "fastmath": False}


def _probe():  # pragma: no cover - only compiled, never run
    return 0


def _cache_is_usable():
    """True when numba can find somewhere to write cached machine code.

    numba raises RuntimeError at decoration time when neither the package's __pycache__ nor the
    user-wide cache directory is writable; probing with a function defined in this package tells us
    before the kernel module is imported.
    """
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


CACHE = _cache_is_usable()
if not CACHE:
    warnings.warn(
        "fastmlp: no writable directory for numba's compiled-code cache (the package directory and "
        "the user cache directory are read-only); kernels will be compiled in every process. Set "
        "NUMBA_CACHE_DIR to a writable directory to keep compiled code between runs.",
        RuntimeWarning,
        stacklevel=2,
    )


def njit(func):
    """Compile ``func`` for the CPU with the project's options, callable from compiled code only.

    Not cached on its own: it is compiled into the entry points that call it, and their cached
    machine code holds it. No CPython and C wrappers are generated: a cold start compiled one
    pair for every kernel, about a sixth of its time, though only entry points are called from
    Python.
    """
    return numba.njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, **JIT_OPTIONS)(func)


def entry_point(func):
    """Compile ``func`` like `njit`, callable from Python too (the backend's kernels), with its
    machine code cached on disk, stamped with every compiled module's source (see
    numba_internals.py)."""
    dispatcher = numba.njit(**JIT_OPTIONS)(func)
    if CACHE:
        from .numba_internals import cache_with_package_stamp

        cache_with_package_stamp(dispatcher)
    return dispatcher


class _CompileWatch(event.Listener):
    """Times numba's compilations of fastmlp's own kernels (the outermost ones: callees compiled
    meanwhile are inside), and announces the first on standard error."""

    def __init__(self):
        self.seconds = 0.0
        self.announced = False
        self._lock = threading.Lock()
        self._open = {}  # thread id -> (depth, start of the outermost fastmlp compile)

    @staticmethod
    def _ours(ev):
        function = getattr(ev.data.get("dispatcher"), "py_func", None)
        return (getattr(function, "__module__", None) or "").startswith("fastmlp.")

    def on_start(self, ev):
        if self._nest(ev, +1):
            gpu = "CUDA" in type(ev.data["dispatcher"]).__name__
            print("fastmlp: compiling its " + ("GPU kernels (once in this process)" if gpu else
                  "CPU kernels (once; cached on disk for later runs: see python -m "
                  "fastmlp.compile)") + "...", file=sys.stderr, flush=True)

    def on_end(self, ev):
        self._nest(ev, -1)

    def _nest(self, ev, step):
        """Count this thread's nested compilations of fastmlp code up (+1) or down (-1), adding
        the outermost one's seconds when it ends; True for the process's first outermost start
        (the one to announce)."""
        if not self._ours(ev):
            return False
        me, now = threading.get_ident(), time.perf_counter()
        with self._lock:
            depth, started = self._open.get(me, (0, now))
            depth += step
            if depth > 0:
                self._open[me] = (depth, started)
            else:
                self._open.pop(me, None)
                self.seconds += now - started
            first = step > 0 and depth == 1 and not self.announced
            self.announced = self.announced or first
        return first


_WATCH = _CompileWatch()
event.register("numba:compile", _WATCH)


def compile_seconds():
    """Seconds this process has spent compiling fastmlp's kernels so far: progress displays and
    timings subtract it, so that a first fit's compiling is not counted as training."""
    return _WATCH.seconds
