"""JIT options shared by every compiled kernel, set in one place.

Nothing here computes anything; it decides how kernels are compiled (cache or not) so that importing
fastmlp never fails because a cache directory is read-only.
"""

import warnings

import numba

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
