"""Whether and where CUDA code can run, and moving arrays between host and device.

Availability checks with errors that say how to fix them, the array moves the driver uses, the
device's shared-memory size and the one-time CuPy (cuBLAS) probe. Imports without numba-cuda or a
GPU: nothing here launches a kernel, and numba.cuda is imported only when a function needs it.
"""

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import warnings

import numba
import numpy as np

_HOST_COPY = "_fastmlp_host_copy"  # attribute of a device layers table: its host copy

# Shared memory one block may use without opting in: 48 KiB on every CUDA GPU since Kepler
# (cudaDevAttrMaxSharedMemoryPerBlock). The simulator has no device to ask, so it uses this.
DEFAULT_SHARED_BYTES = 48 * 1024

_INSTALL_HINT = ("install NVIDIA's CUDA target for Numba with pip install 'fastmlp[cuda]' "
                 "(numba-cuda[cu12] for CUDA 12 drivers, numba-cuda[cu13] for CUDA 13)")


def simulator():
    """True when numba runs CUDA code in its simulator (NUMBA_ENABLE_CUDASIM=1 at numba import)."""
    return bool(numba.config.ENABLE_CUDASIM)


def import_cuda():
    from numba import cuda

    return cuda


def numba_cuda_installed():
    return importlib.util.find_spec("numba_cuda") is not None


def device_count(cuda):
    """Number of CUDA devices the driver reports; raises numba's error when the driver is
    missing or fails to start."""
    return len(cuda.gpus)


def compiler_found():
    """False when numba-cuda cannot find libNVVM, the CUDA compiler it needs for every kernel."""
    try:
        from numba.cuda.cudadrv import nvvm

        return nvvm.is_available()
    except Exception:  # noqa: BLE001 - an older numba without the probe: let the launch tell
        return True


def reason(exc):
    """The first two non-empty lines of numba's error message, as one line."""
    lines = [line.strip(" :") for line in str(exc).splitlines() if line.strip(" :")]
    return ": ".join(lines[:2]) or type(exc).__name__


def target():
    """Where CUDA code runs in this process: "simulator", "gpu", or None (it cannot run)."""
    if simulator():
        return "simulator"
    try:
        return "gpu" if import_cuda().is_available() else None
    except Exception:  # noqa: BLE001 - no CUDA target at all
        return None


def numba_cuda_version():
    """numba-cuda's version as a tuple of ints (pre-release tags dropped), or None when it is not
    installed."""
    try:
        text = importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


# The newest numba-cuda known to register an overload of np.row_stack, which NumPy 2.5 removed,
# when it builds its CUDA target (at the first kernel compile): 0.30.4, the newest release in
# December 2026, fails there with "module 'numpy' has no attribute 'row_stack'" (H200 image,
# numba 0.68.0, numpy 2.5.2). Raise it when a newer release is known to do the same.
LAST_NUMBA_CUDA_NEEDING_ROW_STACK = (0, 30, 4)


def numpy_incompatibility():
    """A sentence saying why numba-cuda cannot compile kernels with this NumPy (check_available
    adds the fix), or None when they work together. Asked by capability (np.row_stack missing),
    not by NumPy's version, so a NumPy that still has it, or a shim, passes."""
    if hasattr(np, "row_stack"):
        return None
    version = numba_cuda_version()
    if version is None or version > LAST_NUMBA_CUDA_NEEDING_ROW_STACK:
        return None
    found = ".".join(map(str, version))
    return (f"numba-cuda {found} needs numpy < 2.5 (it uses np.row_stack, which numpy "
            f"{np.__version__} removed, and would fail at the first kernel compile)")


def check_available():
    """Return None when CUDA training can run here (a usable GPU, or numba's CUDA simulator);
    otherwise raise RuntimeError saying why and how to fix it."""
    if simulator():
        return
    fallback = "or use device='cpu' (device='auto' never picks an unusable GPU)"
    try:
        cuda = import_cuda()
    except Exception as exc:  # noqa: BLE001 - whatever stops numba's CUDA target from loading
        raise RuntimeError(f"device='cuda' cannot run: numba's CUDA target failed to import "
                           f"({reason(exc)}). To fix it, {_INSTALL_HINT}; {fallback}."
                           ) from exc
    numpy_problem = numpy_incompatibility()
    numpy_fix = ("install numpy<2.5 (pip install 'numpy<2.5') or a numba-cuda release newer "
                 f"than {'.'.join(map(str, LAST_NUMBA_CUDA_NEEDING_ROW_STACK))} that works "
                 "with it")
    if cuda.is_available():
        if numpy_problem is not None:
            raise RuntimeError(f"device='cuda' cannot run: {numpy_problem}. To fix it, "
                               f"{numpy_fix}; {fallback}.")
        if compiler_found():
            return
        raise RuntimeError("device='cuda' cannot run: numba finds the GPU but not libNVVM, the "
                           f"CUDA compiler its kernels need. To fix it, {_INSTALL_HINT}, whose "
                           f"toolkit wheels include it; {fallback}.")
    reasons, fixes = [], []
    if numpy_problem is not None:
        reasons.append(numpy_problem)
        fixes.append(numpy_fix)
    if not numba_cuda_installed():
        reasons.append("numba-cuda is not installed")
        fixes.append(_INSTALL_HINT)
    try:
        count = device_count(cuda)
    except Exception as exc:  # noqa: BLE001 - numba's words for a missing or broken driver
        reasons.append(f"the CUDA driver could not be loaded ({reason(exc)})")
        fixes.append("install the NVIDIA driver (nvidia-smi must list the GPU); if it is "
                     "installed, point NUMBA_CUDA_DRIVER at libcuda.so")
    else:
        if count == 0:
            reasons.append("the driver reports no CUDA device")
            fixes.append("check nvidia-smi and CUDA_VISIBLE_DEVICES")
        else:
            reasons.append("numba cannot use the CUDA device (unsupported GPU or toolkit?)")
            fixes.append("run numba -s to see what it finds")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        reasons.append("NUMBA_ENABLE_CUDASIM=1 was set after numba was imported, so numba's "
                       "CUDA simulator is off")
        fixes.append("set it before Python starts to run on the simulator instead")
    raise RuntimeError(f"device='cuda' cannot run: {'; '.join(reasons)}. To fix it, "
                       f"{'; '.join(fixes)}; {fallback}.")


# ---------------------------------------------------------------------------------------------
# device="auto": the GPU only where it was measured to be faster than the CPU
# ---------------------------------------------------------------------------------------------
# Measured on an H200 with a 16-core host (December 2026, numba-cuda 0.30.4, CuPy 14), seconds
# per epoch, float32, adam, dense input, 60,000 rows or more:
#   W2 20-64-32-3, batch 32 (100,000 rows; largest product 32 x 64 x 32 = 65,536 multiply-adds
#     per batch): cuda 0.29 against cpu 0.054-0.08, the CPU 4-5x faster;
#   W1 784-256-128-10, batch 256 (Fashion-MNIST, 60,000 rows; largest product 256 x 784 x 256 =
#     51 million): cuda 0.29-0.42 against cpu 0.33-0.42, a tie;
#   784-1024-1024-10, batch 1024 (Fashion-MNIST; largest product 1024 x 1024 x 1024 = 2**30):
#     cuda 0.148 against PyTorch eager on the GPU 0.100; our CPU is unmeasured there, but its
#     arithmetic (about 3.4e11 multiply-adds an epoch) takes a 16-core CPU well over 0.15 s.
# So "auto" picks the GPU only for work at least as large as that last row, on the path it took
# (cuBLAS through CuPy), and keeps the CPU everywhere else, unmeasured cases included. Lower a
# threshold only with a measurement of fastmlp's own CPU beside it (bench/compare_gpu.py).

# Largest layer product per mini-batch (batch rows x fan-in x fan-out) at or above which the GPU
# may be picked: the 784-1024-1024-10 batch-1024 row's (2**30), 21x W1's, where the GPU tied.
AUTO_GPU_MIN_PRODUCT = 1 << 30
# Rows per mini-batch at or above which the GPU may be picked: that row's 1024 (launch costs of
# 23-58 us each, 3L + 2 per batch, make small batches launch-bound: W2).
AUTO_GPU_MIN_BATCH = 1024
# Training rows at or above which the GPU may be picked: Fashion-MNIST's 60,000, the smallest
# data set it was measured on; below it the per-fit costs (CUDA compile, host-device copies)
# weigh more and are unmeasured.
AUTO_GPU_MIN_ROWS = 60_000
# Only what was measured: float32 (float64 on the GPU is unmeasured), dense input (the sparse
# gather is unmeasured), a mini-batch solver (L-BFGS's chunked loop is unmeasured), no dropout
# (its extra launches are unmeasured).
AUTO_GPU_DTYPES = ("float32",)


def auto_choice(layer_units, batch_size, n_samples, dtype="float32", sparse=False,
                mini_batch=True, dropout=0.0):
    """("cuda" or "cpu", why) for a fit with device="auto", by the measured rule above.

    layer_units: the network's sizes, inputs first; batch_size: rows per mini-batch (already
    clipped to n_samples); n_samples: training rows. Only when the work favours the GPU does it
    ask whether one is usable (check_available) and whether CuPy's cuBLAS works there (the path
    the GPU was measured on): small fits never initialise CUDA."""
    largest = max(batch_size * fan_in * fan_out
                  for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]))
    unmeasured = [(str(dtype) not in AUTO_GPU_DTYPES, f"{dtype} on the GPU is unmeasured"),
                  (sparse, "sparse input on the GPU is unmeasured"),
                  (not mini_batch, "L-BFGS on the GPU is unmeasured"),
                  (dropout > 0, "dropout on the GPU is unmeasured"),
                  (batch_size < AUTO_GPU_MIN_BATCH,
                   f"batches of {batch_size} rows (< {AUTO_GPU_MIN_BATCH}) are faster on the CPU"),
                  (largest < AUTO_GPU_MIN_PRODUCT,
                   f"the largest layer product, {largest} multiply-adds per batch (< "
                   f"{AUTO_GPU_MIN_PRODUCT}), is faster or as fast on the CPU"),
                  (n_samples < AUTO_GPU_MIN_ROWS,
                   f"{n_samples} rows (< {AUTO_GPU_MIN_ROWS}) are unmeasured on the GPU")]
    for applies, why in unmeasured:
        if applies:
            return "cpu", why
    try:
        check_available()
    except RuntimeError as exc:
        return "cpu", str(exc)
    if cupy() is None:
        return "cpu", "without CuPy's cuBLAS (pip install 'fastmlp[cuda-blas]') it is unmeasured"
    return "cuda", (f"the largest layer product, {largest} multiply-adds per batch, is measured "
                    "faster on the GPU")


def shared_bytes_per_block():
    """Bytes of shared memory one block may use on the current device without opting in
    (DEFAULT_SHARED_BYTES under the simulator). Asked once per process."""
    global _SHARED_BYTES
    if _SHARED_BYTES is None:
        if simulator():
            _SHARED_BYTES = DEFAULT_SHARED_BYTES
        else:
            device = import_cuda().get_current_device()
            _SHARED_BYTES = int(getattr(device, "MAX_SHARED_MEMORY_PER_BLOCK",
                                        DEFAULT_SHARED_BYTES))
    return _SHARED_BYTES


_SHARED_BYTES = None


def shared_bytes_limit(per_block, opt_in):
    """Shared bytes one block may use once a kernel opts in: the device's opt-in maximum
    (cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 KiB on Hopper) where it reports one larger
    than its default per-block limit, else that limit; DEFAULT_SHARED_BYTES when the device
    reports neither (None or 0)."""
    per_block = int(per_block) if per_block else DEFAULT_SHARED_BYTES
    return max(per_block, int(opt_in)) if opt_in else per_block


def shared_bytes_opt_in():
    """shared_bytes_limit of the current device (DEFAULT_SHARED_BYTES under the simulator, which
    cannot opt in). Asked once per process."""
    global _OPT_IN_BYTES
    if _OPT_IN_BYTES is None:
        opt_in = None
        if not simulator():
            try:
                opt_in = import_cuda().get_current_device().MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            except Exception:  # noqa: BLE001 - an older driver without the attribute
                opt_in = None
        _OPT_IN_BYTES = shared_bytes_limit(shared_bytes_per_block(), opt_in)
    return _OPT_IN_BYTES


_OPT_IN_BYTES = None
_OPTED_IN = {}  # id of a compiled kernel's function -> dynamic shared bytes it is allowed


def allow_dynamic_shared(kernel, args, dynamic_bytes, static_bytes):
    """Let `kernel`, compiled for these arguments, launch with dynamic_bytes of dynamic shared
    memory beside its static_bytes beyond the default per-block limit
    (cudaFuncAttributeMaxDynamicSharedMemorySize; the caller checked that the sum is at most
    shared_bytes_opt_in()). Compiles the kernel for args first (the launch then reuses that
    compilation). Nothing to do under the simulator or within the default limit."""
    if simulator() or dynamic_bytes + static_bytes <= shared_bytes_per_block():
        return
    from numba.cuda.cudadrv.driver import binding, driver

    compiled = kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
    function = compiled._codelibrary.get_cufunc()  # noqa: SLF001 - numba-cuda has no public way
    if _OPTED_IN.get(id(function), 0) >= dynamic_bytes:
        return
    driver.cuKernelSetAttribute(
        binding.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        int(dynamic_bytes), function.handle, function.device.id)
    _OPTED_IN[id(function)] = dynamic_bytes


# ---------------------------------------------------------------------------------------------
# Moving arrays
# ---------------------------------------------------------------------------------------------

def to_device(array):
    """A device copy of a host array. A 2-D integer array (the layers table) keeps its host copy
    beside it, so that launching kernels never has to read it back from the device."""
    cuda = import_cuda()
    array = np.ascontiguousarray(array)
    on_device = cuda.to_device(array)
    if array.ndim == 2 and array.dtype.kind in "iu":
        setattr(on_device, _HOST_COPY, array.copy())
    return on_device


def empty(shape, dtype):
    """An uninitialised device array (nothing is copied from the host)."""
    return import_cuda().device_array(shape, dtype)


def to_host(array):
    """A host NumPy copy of a device array."""
    return array.copy_to_host()


def copy_to(destination, host_array):
    """Overwrite a device array in place with the contents of a host array."""
    destination.copy_to_device(np.ascontiguousarray(host_array, dtype=destination.dtype))


def free_bytes():
    """Free memory on the current device, in bytes; None where it cannot be asked (the
    simulator)."""
    if simulator():
        return None
    return int(import_cuda().current_context().get_memory_info()[0])


def stack_rows(arrays):
    """An (M, P) device array whose rows are copies of the M given (P,) device arrays, copied on
    the device."""
    stacked = empty((len(arrays), arrays[0].shape[0]), arrays[0].dtype)
    for row, array in zip(stacked, arrays):
        row.copy_to_device(array)
    return stacked


def unstack_rows(stacked, arrays):
    """Copy row m of a stacked device array into arrays[m], for each one that is not None."""
    for m, array in enumerate(arrays):
        if array is not None:
            array.copy_to_device(stacked[m])


def host_table(layers):
    """The layers table (L, 4) on the host: the copy to_device kept, else read back once."""
    if isinstance(layers, np.ndarray):
        return layers
    table = getattr(layers, _HOST_COPY, None)
    if table is None:
        table = layers.copy_to_host()
        setattr(layers, _HOST_COPY, table)
    return table


# ---------------------------------------------------------------------------------------------
# The optional cuBLAS path
# ---------------------------------------------------------------------------------------------

def cupy():
    """CuPy, when it is importable, a real GPU is in use and a small cuBLAS product works on it;
    else None (tiled kernels only). Checked once per process: a CuPy built for another CUDA
    version, or a cuBLAS that fails to load, warns and falls back here instead of failing in the
    middle of a fit. Not run on a GPU yet: the simulator has no cuBLAS."""
    global _CUPY
    if simulator():
        return None
    if _CUPY is UNCHECKED:
        _CUPY = _working_cupy()
    return _CUPY


def _working_cupy():
    try:
        import cupy
    except Exception:  # noqa: BLE001 - not installed, or broken: the tiled kernels do the work
        return None
    try:
        with cupy.cuda.Stream.null:
            a = cupy.ones((2, 2), dtype=cupy.float32)
            product = cupy.asnumpy(cupy.matmul(a, a))
        if not np.array_equal(product, np.full((2, 2), 2, np.float32)):
            raise RuntimeError(f"cupy.matmul of ones gave {product.tolist()}")
    except Exception as exc:  # noqa: BLE001 - any failure means: do not use it
        warnings.warn(f"CuPy is installed but its cuBLAS product failed ({reason(exc)}); "
                      "fastmlp uses its own CUDA matrix kernels instead. Install the CuPy that "
                      "matches your CUDA version (cupy-cuda12x or cupy-cuda13x) to use cuBLAS.",
                      RuntimeWarning, stacklevel=3)
        return None
    return cupy


UNCHECKED = object()
_CUPY = UNCHECKED  # the result of cupy()'s one check


def same_stream(cupy_module):
    """Run CuPy on the legacy default stream, where numba launches its kernels, so that cuBLAS
    calls and kernels run in the order they are made."""
    return cupy_module.cuda.Stream.null if cupy_module is not None else contextlib.nullcontext()
