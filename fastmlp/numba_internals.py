"""Everything fastmlp builds on numba's private API, in one place: array views without reference
counting, the x86 floating-point control register, and the on-disk cache's source stamp.

Each piece has a test in tests/test_numba_internals.py that fails if numba changes under it, and
pyproject.toml bounds numba's version to the releases those tests have passed on. Kernels import
these; nothing here computes anything a network needs.
"""

import contextlib
import hashlib
import os
import platform

from llvmlite import ir
from numba.core import caching, cgutils, sigutils, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

# ---------------------------------------------------------------------------------------------
# Views into flat buffers, without reference counting (see matrix_view)
# ---------------------------------------------------------------------------------------------


def _view_of(flat, ndim):
    """The typing part of matrix_view and vector_view: a C-order 1-D array gives an ndim view."""
    if not (isinstance(flat, types.Array) and flat.ndim == 1 and flat.layout == "C"):
        return None
    return flat.copy(ndim=ndim)


def _unmanaged_view(context, builder, sig, args):
    """A C-order view of args[0] (flat) from element args[1] with shape args[2:], without a
    reference to flat's memory: see matrix_view."""
    source = make_array(sig.args[0])(context, builder, args[0])
    offset, *shape = (context.cast(builder, value, ty, types.intp)
                      for value, ty in zip(args[1:], sig.args[1:]))
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(
        context.get_data_type(sig.args[0].dtype)))
    strides = [itemsize]
    for extent in reversed(shape[1:]):
        strides.insert(0, builder.mul(extent, strides[0]))
    view = make_array(sig.return_type)(context, builder)
    populate_array(view, data=cgutils.gep_inbounds(builder, source.data, offset),
                   shape=cgutils.pack_array(builder, shape),
                   strides=cgutils.pack_array(builder, strides),
                   itemsize=itemsize, meminfo=None, parent=source.parent)
    return view._getvalue()


def _without_references(context, builder, ty, value):
    """value of type ty with the memory reference of every array in it set to null."""
    if isinstance(ty, types.Array):
        array = make_array(ty)(context, builder, value)
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        return array._getvalue()
    if isinstance(ty, types.BaseTuple):
        for i, member in enumerate(ty):
            value = builder.insert_value(value, _without_references(
                context, builder, member, builder.extract_value(value, i)), i)
    return value


@intrinsic
def unmanaged(typingctx, value):
    """value, an array or a (named) tuple holding arrays, with no reference counting on its
    arrays (see matrix_view). The entry points apply it to their arguments once: the arrays are
    alive for the whole call, because the caller holds them."""
    def codegen(context, builder, sig, args):
        return _without_references(context, builder, sig.args[0], args[0])

    return value(value), codegen


@intrinsic
def matrix_view(typingctx, flat, offset, rows, cols):
    """(rows, cols) C-order view of flat[offset:offset + rows * cols], flat a C-order 1-D array.

    What ``flat[offset:offset + rows * cols].reshape((rows, cols))`` gives, without reshape's
    error path, whose message formatting numba would compile into every caller, and without a
    reference count: numba counts references to an array's memory with atomic instructions on
    every view it creates, passes and drops, which took 16% of a small network's epoch. Such a
    view is valid while `flat` is, i.e. within the kernel call that received it; kernels never
    return one to Python. Bounds are the caller's job: offsets come from the layer table, built
    and checked in Python.
    """
    view = _view_of(flat, 2)
    return view and (view(flat, offset, rows, cols), _unmanaged_view)


@intrinsic
def vector_view(typingctx, flat, offset, length):
    """flat[offset:offset + length] as an unmanaged view, like matrix_view (no slice bounds
    clipping: the caller's offsets are in range)."""
    view = _view_of(flat, 1)
    return view and (view(flat, offset, length), _unmanaged_view)


# ---------------------------------------------------------------------------------------------
# The floating-point environment. Arithmetic on denormal numbers (below float32's 1.2e-38) takes
# x86 CPUs a microcode assist, tens of times slower, and a long float32 fit makes them: with no
# gradient but the L2 term, Adam shrinks the weights into a dead ReLU unit by a few percent a
# step, through the denormal range (a digits fit at default settings had 312 weights below 1e-20
# after 200 epochs, and its last epochs ran 40% slower). float32 training therefore runs with
# the SSE control register's flush-to-zero and denormals-are-zero bits set, restored on return;
# float64 keeps IEEE arithmetic (scikit-learn's numbers).
# ---------------------------------------------------------------------------------------------

FLUSH_DENORMALS = 0x8040  # MXCSR bits: FTZ (denormal results become 0) and DAZ (inputs read as 0)
X86 = platform.machine().lower() in ("x86_64", "amd64")


@intrinsic
def fp_control(typingctx, value):
    """Return the thread's SSE control register (MXCSR), and set it to `value` unless `value`
    is 0 (0: read only; no valid setting is 0). On other CPUs a no-op that returns 0."""
    if not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        if not X86:
            return ir.Constant(i32, 0)
        slot = cgutils.alloca_once(builder, i32)
        byte_pointer = builder.bitcast(slot, ir.IntType(8).as_pointer())
        access = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()])
        store = cgutils.get_or_insert_function(builder.module, access, "llvm.x86.sse.stmxcsr")
        load = cgutils.get_or_insert_function(builder.module, access, "llvm.x86.sse.ldmxcsr")
        builder.call(store, [byte_pointer])
        before = builder.load(slot)
        new = builder.trunc(args[0], i32) if args[0].type.width > 32 else args[0]
        with builder.if_then(builder.icmp_unsigned("!=", new, ir.Constant(i32, 0))):
            builder.store(new, slot)
            builder.call(load, [byte_pointer])
        return before

    return types.uint32(value), codegen


# ---------------------------------------------------------------------------------------------
# The on-disk cache's source stamp. numba stamps a cached function with its own source file only,
# so a kernel whose compiled callees live in another module (fastmlp/ops.py) would be reloaded
# stale after that module changed. fastmlp's compiled functions are stamped with a hash of every
# module whose code they compile instead: any change to any of them recompiles. The stamp is
# content, not file times, so a cache prepared while building the package stays valid wherever
# the package is installed. Only fastmlp's own functions use this (numba's process-wide locator
# settings are untouched).
# ---------------------------------------------------------------------------------------------

PACKAGE = os.path.dirname(os.path.abspath(__file__))
# Every module whose functions the CPU kernels compile (tests/test_numba_internals.py checks that
# no other module of the package defines compiled code).
COMPILED_SOURCES = ("ops.py", "bundles.py", "config.py", "numba_internals.py", "cpu/kernels.py")


def _source_stamp():
    digest = hashlib.sha256()
    for name in COMPILED_SOURCES:
        with open(os.path.join(PACKAGE, name), "rb") as source:
            digest.update(name.encode() + b"\0" + source.read())
    return digest.hexdigest()


SOURCE_STAMP = _source_stamp()


def _numba_class(*names):
    """The first of `names` in numba.core.caching (numba 0.68 dropped the leading underscores)."""
    for name in names:
        if hasattr(caching, name):
            return getattr(caching, name)
    raise ImportError(f"numba.core.caching has none of {names}")


class _PackageStamp:
    """Mixed into a numba locator class: entries are stamped with SOURCE_STAMP."""

    def get_source_stamp(self):
        return SOURCE_STAMP


def _stamped(locator):
    """numba's `locator` class, stamping entries with SOURCE_STAMP."""
    return type("Package" + locator.__name__.lstrip("_"), (_PackageStamp, locator), {})


# numba's default order (NUMBA_CACHE_DIR, then __pycache__ beside the module, then the user's
# cache directory); none writable: the function cannot be cached (config.py checks first).
_LOCATORS = [_stamped(_numba_class(name, "_" + name)) for name in (
    "UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]


class _PackageCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = _LOCATORS

    def __init__(self, py_func):
        super().__init__(py_func)
        # NUMBA_CACHE_LOCATOR_CLASSES (numba 0.68) replaces _locator_classes with the user's
        # list: stamp the locator numba chose from it too, or a kernel would be stamped with its
        # own file only and reloaded stale after ops.py changed.
        if not isinstance(self._locator, _PackageStamp):
            self._locator.__class__ = _stamped(type(self._locator))


class PackageCache(caching.FunctionCache):
    """numba's function cache with the package-wide SOURCE_STAMP, safe against other processes.

    numba saves an entry as an index (signature -> data file) and a data file, without a lock:
    two processes compiling one function for different signatures at once (the test suite's
    parallel processes, a search's workers) can both pick the same data file, leaving an index
    that hands one signature the other's machine code (seen: NaN losses from a float64 fit).
    fastmlp's saves and loads therefore hold a lock file in the cache directory, and a loaded
    entry whose signature is not the one asked for counts as a miss.
    """

    _impl_class = _PackageCacheImpl

    def load_overload(self, sig, target_context):
        with _locked(self._cache_path):
            result = super().load_overload(sig, target_context)
        wanted = sigutils.normalize_signature(sig)[0]
        if result is not None and tuple(result.signature.args) != tuple(wanted):
            return None  # another signature's code under this key: compile afresh
        return result

    def save_overload(self, sig, data):
        with _locked(self._cache_path):
            super().save_overload(sig, data)


@contextlib.contextmanager
def _locked(directory):
    """An exclusive advisory lock on `directory`/fastmlp.lock while the body runs (POSIX; where
    fcntl is missing or the lock file cannot be made, no lock: numba's own behaviour)."""
    try:
        import fcntl

        handle = open(os.path.join(directory, "fastmlp.lock"), "a")
    except (ImportError, OSError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_with_package_stamp(dispatcher):
    """Make a numba dispatcher cache its machine code on disk under SOURCE_STAMP (what
    ``cache=True`` does, with the package-wide stamp); returns the dispatcher."""
    dispatcher._cache = PackageCache(dispatcher.py_func)
    return dispatcher
