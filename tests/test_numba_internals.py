"""fastmlp/numba_internals.py builds on numba's private API; each piece has a test here that fails
if numba changes under it: the views without reference counting, `unmanaged`, the x86 control
register, and the on-disk cache stamped with every compiled module's source. pyproject.toml
bounds numba's version to the releases these tests have passed on."""

import ast
import os
import re
import shutil
import subprocess
import sys
import types as pytypes
from pathlib import Path

import numba
import numpy as np
import pytest
from numba.core import caching, types
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.arrayobj import make_array
from numpy.testing import assert_array_equal

from fastmlp import config, numba_internals
from fastmlp.cpu import kernels
from fastmlp.numba_internals import (
    FLUSH_DENORMALS,
    X86,
    PackageCache,
    fp_control,
    matrix_view,
    unmanaged,
    vector_view,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fastmlp"


# ------------------------------------------------------------------------------------------
# Views and unmanaged values
# ------------------------------------------------------------------------------------------

@intrinsic
def _meminfo(typingctx, array):
    """The address of an array's memory reference (its meminfo): 0 when numba does not count
    references to it."""
    if not isinstance(array, types.Array):
        return None

    def codegen(context, builder, sig, args):
        value = make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(value.meminfo, context.get_value_type(types.intp))

    return types.intp(array), codegen


@numba.njit
def _matrix(flat, offset, rows, cols, out):
    """Copy matrix_view(flat, ...) into out, write -1 at its last element; return its shape,
    strides and meminfo, and the meminfo of the slice numba would make instead."""
    M = matrix_view(flat, offset, rows, cols)
    for i in range(rows):
        for j in range(cols):
            out[i, j] = M[i, j]
    M[rows - 1, cols - 1] = -1
    return (M.shape[0], M.shape[1], M.strides[0], M.strides[1], _meminfo(M),
            _meminfo(flat[offset:offset + rows * cols]))


@numba.njit
def _vector(flat, offset, length, out):
    v = vector_view(flat, offset, length)
    for i in range(length):
        out[i] = v[i]
    v[0] = -1
    return v.shape[0], v.strides[0], _meminfo(v)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matrix_view_is_a_c_order_view_without_a_reference(dtype):
    flat = np.arange(30, dtype=dtype)
    out = np.zeros((3, 4), dtype)
    rows, cols, stride_0, stride_1, meminfo, slice_meminfo = _matrix(flat, 5, 3, 4, out)
    assert_array_equal(out, np.arange(5, 17, dtype=dtype).reshape(3, 4))
    assert (rows, cols) == (3, 4)
    assert (stride_0, stride_1) == (4 * flat.itemsize, flat.itemsize)
    assert flat[16] == -1 and flat[17] == 17 and flat[4] == 4  # the write went to flat[5 + 11]
    assert meminfo == 0  # no reference: nothing to count on creation, passing and dropping
    assert slice_meminfo != 0  # (which an ordinary slice of the same buffer carries)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vector_view_is_a_view_without_a_reference(dtype):
    flat = np.arange(10, dtype=dtype)
    out = np.zeros(4, dtype)
    length, stride, meminfo = _vector(flat, 3, 4, out)
    assert_array_equal(out, [3, 4, 5, 6])
    assert (length, stride, meminfo) == (4, flat.itemsize, 0)
    assert flat[3] == -1 and flat[2] == 2


def test_views_of_anything_but_a_flat_c_order_array_are_refused_at_typing():
    with pytest.raises(TypingError):
        _matrix(np.zeros((3, 4)), 0, 2, 2, np.zeros((2, 2)))
    with pytest.raises(TypingError):
        _vector(np.zeros(10)[::2], 0, 2, np.zeros(2))


@numba.njit
def _unmanaged(bundle):
    plain = unmanaged(bundle)
    matrix, (vector, number) = plain
    matrix[0, 0] = 7.0
    total = number
    for i in range(vector.shape[0]):
        total += vector[i]
    return (total, matrix[1, 1], _meminfo(matrix), _meminfo(vector), _meminfo(bundle[0]),
            matrix.shape[0], matrix.shape[1])


def test_unmanaged_keeps_every_value_and_drops_every_reference():
    matrix, vector = np.arange(6.0).reshape(2, 3), np.array([1.0, 2.0, 3.0])
    total, m11, matrix_meminfo, vector_meminfo, original_meminfo, rows, cols = _unmanaged(
        (matrix, (vector, 0.5)))
    assert (total, m11, rows, cols) == (6.5, 4.0, 2, 3)
    assert matrix[0, 0] == 7.0  # writes go through to the caller's array
    assert matrix_meminfo == vector_meminfo == 0
    assert original_meminfo != 0  # the argument itself is untouched


def test_unmanaged_keeps_named_tuples_named():
    """Kernels read fields by name after unmanaged (net.layers, state.params)."""
    from fastmlp.bundles import TrainState

    @numba.njit
    def read(state):
        return unmanaged(state).slot_2[1]

    p = np.arange(3.0)
    assert read(TrainState(p, p, p, p + 10)) == 11.0


# ------------------------------------------------------------------------------------------
# The floating-point control register
# ------------------------------------------------------------------------------------------

@numba.njit
def _denormal_arithmetic(x, out):
    """out[k] = x[0] * x[1] before, while and after the flags are set (operands loaded after each
    register access, so the compiler cannot reuse one product for all three); returns the
    register before, while and after."""
    before = fp_control(0)
    out[0] = x[0] * x[1]
    fp_control(before | FLUSH_DENORMALS)
    flagged = fp_control(0)
    out[1] = x[0] * x[1]
    fp_control(before)
    after = fp_control(0)
    out[2] = x[0] * x[1]
    return before, flagged, after


@pytest.mark.skipif(not X86, reason="MXCSR (flush-to-zero, denormals-are-zero) is x86's "
                    "SSE control register; elsewhere fp_control is a no-op")
def test_fp_control_reads_sets_and_restores_mxcsr():
    x = np.array([np.finfo(np.float32).tiny / 8, 2], np.float32)  # a denormal, times 2
    out = np.empty(3, np.float32)
    before, flagged, after = _denormal_arithmetic(x, out)
    exception_flags = 0x3F  # sticky flags, set by arithmetic anywhere
    assert before & 0x1F80 == 0x1F80  # every exception masked: a real MXCSR value was read
    assert before & FLUSH_DENORMALS == 0
    assert flagged & ~exception_flags == (before | FLUSH_DENORMALS) & ~exception_flags
    assert after & ~exception_flags == before & ~exception_flags
    assert out[0] == out[2] == x[0] * 2 != 0  # IEEE arithmetic before and after
    assert out[1] == 0  # denormals read as zero while the flags were set


@pytest.mark.skipif(X86, reason="checks the no-op of CPUs other than x86")
def test_fp_control_is_a_no_op_elsewhere():
    out = np.empty(3, np.float32)
    assert _denormal_arithmetic(np.array([1e-40, 2], np.float32), out) == (0, 0, 0)


# ------------------------------------------------------------------------------------------
# The cache: the package-wide source stamp
# ------------------------------------------------------------------------------------------

def _entry_points():
    return {name: value for name, value in vars(kernels).items()
            if isinstance(value, numba.core.registry.CPUDispatcher)
            and not value.targetoptions.get("no_cpython_wrapper")}


def test_entry_points_are_cached_under_the_package_stamp():
    if not config.CACHE:
        pytest.skip("no writable numba cache directory here: the entry points are not cached")
    entry_points = _entry_points()
    assert {"epoch", "full_loss_and_gradient", "predict_rows",
            "output_delta_and_loss"} <= set(entry_points)
    for name, dispatcher in entry_points.items():
        cache = dispatcher._cache
        assert isinstance(cache, PackageCache), name
        assert cache._impl.locator.get_source_stamp() == numba_internals.SOURCE_STAMP, name
        assert cache._cache_file._source_stamp == numba_internals.SOURCE_STAMP, name
    assert numba_internals.SOURCE_STAMP == numba_internals._source_stamp()


def test_the_package_locators_are_numbas_defaults_in_numbas_order():
    """numba's default locators (NUMBA_CACHE_DIR, __pycache__, the user's cache), each stamped:
    caught if numba renames, reorders or drops them."""
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # 0.68 / 0.60-0.67
    defaults = impl._locator_classes[:3]
    assert [locator.__bases__ for locator in numba_internals._LOCATORS] == [
        (numba_internals._PackageStamp, numba_class) for numba_class in defaults]
    assert [c.__name__.lstrip("_") for c in defaults] == [
        "UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator"]
    assert numba_internals._PackageCacheImpl._locator_classes == numba_internals._LOCATORS
    for locator in numba_internals._LOCATORS:
        assert locator.get_source_stamp(object()) == numba_internals.SOURCE_STAMP


def test_the_package_stamp_holds_with_numbas_locator_setting(monkeypatch):
    """NUMBA_CACHE_LOCATOR_CLASSES (numba 0.68) makes numba ignore a cache's own locator list;
    the locator it picks instead must still stamp fastmlp's kernels with SOURCE_STAMP."""
    numba_reads_it = hasattr(numba.core.config, "CACHE_LOCATOR_CLASSES")  # not before 0.68
    monkeypatch.setattr(numba.core.config, "CACHE_LOCATOR_CLASSES", "InTreeCacheLocator",
                        raising=False)
    cache = PackageCache(kernels.output_delta_and_loss.py_func)
    if numba_reads_it:
        assert type(cache._impl.locator).__name__ == "PackageInTreeCacheLocator"
    assert cache._cache_file._source_stamp == numba_internals.SOURCE_STAMP


def test_numba_class_resolves_both_spellings():
    """numba 0.60-0.67 spell the locators with a leading underscore, 0.68 without."""
    old, new = type("_InTreeCacheLocator", (), {}), type("InTreeCacheLocator", (), {})
    for module, expected in [(pytypes.SimpleNamespace(_InTreeCacheLocator=old), old),
                             (pytypes.SimpleNamespace(InTreeCacheLocator=new), new),
                             (pytypes.SimpleNamespace(InTreeCacheLocator=new,
                                                      _InTreeCacheLocator=old), new)]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(numba_internals, "caching", module)
            assert numba_internals._numba_class(
                "InTreeCacheLocator", "_InTreeCacheLocator") is expected
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(numba_internals, "caching", pytypes.SimpleNamespace())
        with pytest.raises(ImportError, match="InTreeCacheLocator"):
            numba_internals._numba_class("InTreeCacheLocator", "_InTreeCacheLocator")
    stamped = numba_internals._stamped(old)
    assert stamped.__name__ == "PackageInTreeCacheLocator" and issubclass(stamped, old)
    assert stamped().get_source_stamp() == numba_internals.SOURCE_STAMP


@pytest.fixture
def package_copy(tmp_path):
    copy = tmp_path / "fastmlp"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_stamp_is_the_content_of_every_compiled_module(package_copy, monkeypatch):
    monkeypatch.setattr(numba_internals, "PACKAGE", str(package_copy))
    assert numba_internals._source_stamp() == numba_internals.SOURCE_STAMP  # content, not place
    for name in numba_internals.COMPILED_SOURCES:
        path = package_copy / name
        original = path.read_bytes()
        # One byte changed, length and modification time kept.
        stat = path.stat()
        path.write_bytes(original[:-2] + bytes([original[-2] ^ 1]) + original[-1:])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert numba_internals._source_stamp() != numba_internals.SOURCE_STAMP, name
        path.write_bytes(original)
    (package_copy / "estimators.py").write_text("# not compiled\n")
    assert numba_internals._source_stamp() == numba_internals.SOURCE_STAMP


_COMPILING = {"njit", "jit", "entry_point", "register_jitable", "intrinsic", "overload",
              "overload_method", "overload_attribute", "generated_jit", "vectorize",
              "guvectorize", "cfunc", "lower_builtin", "type_callable"}
# config.py's probe is compiled once, to see whether numba can cache; it is in COMPILED_SOURCES
# anyway (its njit helpers compile the kernels).
ALLOWED = set(numba_internals.COMPILED_SOURCES)


def _compiling_names(tree):
    """Names of compiling decorators and calls (njit(f), numba.njit(...)(f)) in a module."""
    found = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            targets = node.decorator_list
        elif isinstance(node, ast.Call):
            targets = [node.func]
        for target in targets:
            while isinstance(target, ast.Call):
                target = target.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(
                target, "id", None)
            if name in _COMPILING:
                found.add(name)
    return found


def test_no_module_outside_the_stamped_sources_defines_cpu_compiled_code():
    """The stamp hashes COMPILED_SOURCES only: compiled code defined in any other module would be
    reloaded stale from the cache after that module changed. (fastmlp/cuda/ compiles for the GPU
    in every process; numba caches none of it.)"""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in ALLOWED or relative.startswith("cuda/"):
            continue
        names = _compiling_names(ast.parse(path.read_text()))
        if names:
            offenders[relative] = names
    assert not offenders, (f"compiled code outside numba_internals.COMPILED_SOURCES: {offenders}; "
                           "add the module there (or move the code)")
    for name in ALLOWED:  # and the scan does see compiled code where it is
        assert (PACKAGE / name).exists(), name
    assert _compiling_names(ast.parse((PACKAGE / "cpu/kernels.py").read_text())) >= {
        "njit", "entry_point"}
    assert "register_jitable" in _compiling_names(ast.parse((PACKAGE / "ops.py").read_text()))


_CACHE_RUN = """
import numpy as np
from fastmlp import ops
from fastmlp.cpu import kernels
f = kernels.output_delta_and_loss
P = np.full((2, 2), 0.5)
f(np.empty_like(P), P, np.eye(2), np.ones(2), ops.LOSS["squared_error"].code)
print("HITS", sum(f.stats.cache_hits.values()), "MISSES", sum(f.stats.cache_misses.values()))
"""


def _cache_run(package_parent, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), PYTHONPATH=str(package_parent))
    result = subprocess.run([sys.executable, "-c", _CACHE_RUN], capture_output=True, text=True,
                            env=env, timeout=300, cwd=str(package_parent))
    assert result.returncode == 0, result.stderr[-3000:]
    hits, misses = re.search(r"HITS (\d+) MISSES (\d+)", result.stdout).groups()
    return int(hits), int(misses)


def test_a_cached_entry_point_is_loaded_by_the_next_process_until_a_compiled_source_changes(
        package_copy, tmp_path):
    """The behaviour the stamp exists for, with the smallest entry point: compiled in one
    process, loaded from the cache in the next; recompiled once ops.py (whose scalar maths the
    kernels compile in) changes; still loaded when only a module that compiles nothing does."""
    cache = tmp_path / "numba-cache"
    parent = package_copy.parent
    assert _cache_run(parent, cache) == (0, 1)  # compiled and saved
    assert _cache_run(parent, cache) == (1, 0)  # loaded
    with open(package_copy / "ops.py", "a") as ops_file:
        ops_file.write("\n# changed\n")
    assert _cache_run(parent, cache) == (0, 1)  # stale: compiled again
    with open(package_copy / "estimators.py", "a") as estimators_file:
        estimators_file.write("\n# changed\n")
    assert _cache_run(parent, cache) == (1, 0)  # not one of COMPILED_SOURCES: still loaded


# ------------------------------------------------------------------------------------------
# The numba versions these tests have passed on
# ------------------------------------------------------------------------------------------

def test_numba_is_bounded_to_the_releases_these_tests_passed_on():
    """fastmlp relies on numba's internals: its dependency is bounded above, the same in the
    build requirements (the build compiles the kernels), and the installed numba is in range."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    text = (ROOT / "pyproject.toml").read_text()
    specs = re.findall(r'"(numba[<>=!~][^"]*)"', text)
    assert len(specs) == 2, specs  # [build-system] requires and [project] dependencies
    requirements = [Requirement(spec) for spec in specs]
    assert requirements[0].specifier == requirements[1].specifier
    specifier = requirements[0].specifier
    assert any(s.operator == "<" for s in specifier), f"no upper bound on numba: {specifier}"
    assert any(s.operator == ">=" for s in specifier), f"no lower bound on numba: {specifier}"
    assert Version(numba.__version__) in specifier, (numba.__version__, str(specifier))


def test_the_minimum_versions_script_still_reads_numbas_minimum():
    """.ci/min-versions turns each "name>=X" of the dependencies into "name==X": an upper bound
    after the minimum must not hide numba from it."""
    script = (ROOT / ".ci" / "min-versions").read_text()
    parser = re.search(r"<<'PY'\n(.*?)\nPY\n", script, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", parser], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    pins = result.stdout.split()
    minimum = re.search(r'"numba>=([0-9.]+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"numba=={minimum}" in pins, pins
    assert {pin.split("==")[0] for pin in pins} == {"numba", "numpy", "scipy", "scikit-learn"}



_TWO_DTYPES_RUN = """
import numpy as np
from fastmlp import ops
from fastmlp.cpu import kernels
f = kernels.output_delta_and_loss
for dtype in (np.float32, np.float64):
    P = np.full((2, 2), 0.25, dtype)
    total = f(np.empty_like(P), P, np.eye(2, dtype=dtype), np.ones(2, dtype),
              ops.LOSS["squared_error"].code)
    print("TOTAL", dtype.__name__, total)
print("HITS", sum(f.stats.cache_hits.values()), "MISSES", sum(f.stats.cache_misses.values()))
"""


def test_an_index_pointing_at_another_signatures_code_is_a_miss(package_copy, tmp_path):
    """numba's cache saves without a lock: two processes compiling one function for different
    signatures at once can leave an index that gives one signature the other's machine code
    (this gave NaN losses). The package's cache checks a loaded entry's signature; here the two
    data files are swapped on purpose, as such a race leaves them."""
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(package_copy.parent))

    def run():
        result = subprocess.run([sys.executable, "-c", _TWO_DTYPES_RUN], capture_output=True,
                                text=True, env=env, timeout=300, cwd=str(package_copy.parent))
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    first = run()
    data = sorted(cache.rglob("kernels.output_delta_and_loss-*.nbc"))
    assert len(data) == 2
    one, two = (path.read_bytes() for path in data)
    data[0].write_bytes(two)
    data[1].write_bytes(one)
    second = run()
    assert "HITS 0 MISSES 2" in second, second  # both refused, both compiled afresh
    assert re.findall(r"TOTAL .*", second) == re.findall(r"TOTAL .*", first)
