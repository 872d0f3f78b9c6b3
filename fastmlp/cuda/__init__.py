"""The CUDA backend: the CPU backend's functions (train_epoch, loss_and_gradient, predict,
to_device, to_host, empty, copy_to, check_available) with the same arguments, on device arrays.

The driver moves data, parameters and optimizer state to the device once per fit; an epoch then
runs there batch by batch and only its loss comes back. This module must not copy anything else
to the host inside an epoch, nor allocate inside the batch loop, and it must import without
numba-cuda or a GPU (kernels.py is imported on first use) so that device="auto" can fall back.

A mini-batch of a network with L weight layers takes 3L + 3 launches: the gather of inputs,
targets and weights; one fused product + bias + activation per layer; the output delta and loss
(with the softmax); per layer the weight-and-bias gradient product, and for L - 1 of them the
fused product + dropout mask + activation derivative; the update with finish_gradient fused in;
the batch's loss bookkeeping. Dropout adds one launch per hidden layer. Products of at least
CUBLAS_MIN_MACS multiply-adds go to cuBLAS through CuPy when CuPy is installed (real GPU only):
each then becomes two launches (the cuBLAS call and its elementwise epilogue kernel).
"""

import contextlib
import importlib.util
import os
import types
import warnings

import numba
import numpy as np

from ..codes import ADAGRAD, ADAMW, GELU, RMSPROP, SGD, SILU, SOFTMAX

NAME = "cuda"

# Products with at least this many multiply-adds (rows x fan-in x fan-out) go to cuBLAS when
# CuPy is importable: below it, the tiled kernel's launch is as cheap as the cuBLAS call.
CUBLAS_MIN_MACS = 1 << 20
_HOST_COPY = "_fastmlp_host_copy"  # attribute of a device layers table: its host copy

_INSTALL_HINT = ("install NVIDIA's CUDA target for Numba with pip install 'fastmlp[cuda]' "
                 "(numba-cuda[cu12] for CUDA 12 drivers, numba-cuda[cu13] for CUDA 13)")


# ---------------------------------------------------------------------------------------------
# Availability and moving arrays
# ---------------------------------------------------------------------------------------------

def _simulator():
    """True when numba runs CUDA code in its simulator (NUMBA_ENABLE_CUDASIM=1 at numba import)."""
    return bool(numba.config.ENABLE_CUDASIM)


def _import_cuda():
    from numba import cuda

    return cuda


def _numba_cuda_installed():
    return importlib.util.find_spec("numba_cuda") is not None


def _device_count(cuda):
    """Number of CUDA devices the driver reports; raises numba's error when the driver is
    missing or fails to start."""
    return len(cuda.gpus)


def _compiler_found():
    """False when numba-cuda cannot find libNVVM, the CUDA compiler it needs for every kernel."""
    try:
        from numba.cuda.cudadrv import nvvm

        return nvvm.is_available()
    except Exception:  # noqa: BLE001 - an older numba without the probe: let the launch tell
        return True


def _reason(exc):
    """The first two non-empty lines of numba's error message, as one line."""
    lines = [line.strip(" :") for line in str(exc).splitlines() if line.strip(" :")]
    return ": ".join(lines[:2]) or type(exc).__name__


def check_available():
    """Return None when CUDA training can run here (a usable GPU, or numba's CUDA simulator);
    otherwise raise RuntimeError saying why and how to fix it."""
    if _simulator():
        return
    fallback = "or use device='cpu' (device='auto' picks the GPU only when one is usable)"
    try:
        cuda = _import_cuda()
    except Exception as exc:  # noqa: BLE001 - whatever stops numba's CUDA target from loading
        raise RuntimeError(f"device='cuda' cannot run: numba's CUDA target failed to import "
                           f"({_reason(exc)}). To fix it, {_INSTALL_HINT}; {fallback}."
                           ) from exc
    if cuda.is_available():
        if _compiler_found():
            return
        raise RuntimeError("device='cuda' cannot run: numba finds the GPU but not libNVVM, the "
                           f"CUDA compiler its kernels need. To fix it, {_INSTALL_HINT}, whose "
                           f"toolkit wheels include it; {fallback}.")
    reasons, fixes = [], []
    if not _numba_cuda_installed():
        reasons.append("numba-cuda is not installed")
        fixes.append(_INSTALL_HINT)
    try:
        count = _device_count(cuda)
    except Exception as exc:  # noqa: BLE001 - numba's words for a missing or broken driver
        reasons.append(f"the CUDA driver could not be loaded ({_reason(exc)})")
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


def to_device(array):
    """A device copy of a host array. A 2-D integer array (the layers table) keeps its host copy
    beside it, so that launching kernels never has to read it back from the device."""
    cuda = _import_cuda()
    array = np.ascontiguousarray(array)
    on_device = cuda.to_device(array)
    if array.ndim == 2 and array.dtype.kind in "iu":
        setattr(on_device, _HOST_COPY, array.copy())
    return on_device


def empty(shape, dtype):
    """An uninitialised device array (nothing is copied from the host)."""
    return _import_cuda().device_array(shape, dtype)


def to_host(array):
    """A host NumPy copy of a device array."""
    return array.copy_to_host()


def copy_to(destination, host_array):
    """Overwrite a device array in place with the contents of a host array."""
    destination.copy_to_device(np.ascontiguousarray(host_array, dtype=destination.dtype))


def _host_table(layers):
    """The layers table (L, 4) on the host: the copy to_device kept, else read back once."""
    if isinstance(layers, np.ndarray):
        return layers
    table = getattr(layers, _HOST_COPY, None)
    if table is None:
        table = layers.copy_to_host()
        setattr(layers, _HOST_COPY, table)
    return table


# ---------------------------------------------------------------------------------------------
# Launch geometry and the optional cuBLAS path
# ---------------------------------------------------------------------------------------------

def _kernels():
    from . import kernels

    return kernels


def _blocks(n, per_block):
    return max(1, -(-n // per_block))


def _product_grid(K, rows, cols):
    """(grid, block) of a tiled product kernel writing a (rows, cols) result. Rows go along the
    grid's x dimension, which takes up to 2**31 - 1 blocks (y takes at most 65535)."""
    return (_blocks(rows, K.TILE), _blocks(cols, K.TILE)), (K.TILE, K.TILE)


def _elementwise_grid(K, rows, cols):
    """(grid, block) of an elementwise kernel over (rows, cols): one thread per element, 1-D."""
    return _blocks(rows * cols, K.BLOCK), K.BLOCK


def _launcher(kernel, grid, block):
    """`kernel` configured for (grid, block), made once per call and reused by every batch.
    numba-cuda warns about grids under 128 blocks whenever a configuration is made; small layers
    and the one-block reductions make such grids by design, so that warning is not shown."""
    if _simulator():
        # The simulator's kernel[grid, block] reconfigures the kernel object itself instead of
        # returning a new configuration: configure it at each launch there.
        return lambda *args: kernel[grid, block](*args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Grid size .* under-utilization")
        return kernel[grid, block]


def _cupy():
    """CuPy, when it is importable, a real GPU is in use and a small cuBLAS product works on it;
    else None (tiled kernels only). Checked once per process: a CuPy built for another CUDA
    version, or a cuBLAS that fails to load, warns and falls back here instead of failing in the
    middle of a fit. Not run on a GPU yet: the simulator has no cuBLAS."""
    global _CUPY
    if _simulator():
        return None
    if _CUPY is _UNCHECKED:
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
        warnings.warn(f"CuPy is installed but its cuBLAS product failed ({_reason(exc)}); "
                      "fastmlp uses its own CUDA matrix kernels instead. Install the CuPy that "
                      "matches your CUDA version (cupy-cuda12x or cupy-cuda13x) to use cuBLAS.",
                      RuntimeWarning, stacklevel=3)
        return None
    return cupy


_UNCHECKED = object()
_CUPY = _UNCHECKED  # the result of _cupy()'s one check


def _same_stream(cupy):
    """Run CuPy on the legacy default stream, where numba launches its kernels, so that cuBLAS
    calls and kernels run in the order they are made."""
    return cupy.cuda.Stream.null if cupy is not None else contextlib.nullcontext()


class _Network:
    """Views of one network's parameters and device work buffers for batches of up to `rows`
    rows, made once per call of train_epoch / loss_and_gradient / predict, never per batch."""

    def __init__(self, params, layers, hidden, output, rows, n_features, n_outputs,
                 dropout=False):
        cuda = _import_cuda()
        self.K = _kernels()
        self.cupy = _cupy()
        self.table = table = _host_table(layers)
        self.n_layers = table.shape[0]
        self.last = self.n_layers - 1
        self.hidden, self.output = hidden, output
        self.kinds = [hidden] * self.last + [output]
        self.fans = [(int(fan_in), int(fan_out)) for fan_in, fan_out, _, _ in table]
        self.n_weights = int(table[0, 3])
        self.W, self.b = self.split(params, table)
        self.hidden_units = sum(fan_out for _, fan_out in self.fans[:-1])
        self.eps = float(np.finfo(params.dtype).eps)

        def buffers(width, wanted=True, stand_in=None):
            return cuda.device_array((rows, width), params.dtype) if wanted else stand_in

        widths = [fan_out for _, fan_out in self.fans]
        self.acts = [buffers(w) for w in widths]
        self.deltas = [buffers(w) for w in widths]
        # An array a kernel takes but never touches for this network is stood in for by acts.
        self.pre = [buffers(w, kind in (GELU, SILU), a)
                    for w, kind, a in zip(widths, self.kinds, self.acts)]
        self.masks = [buffers(w, dropout, a) for w, a in zip(widths, self.acts)]
        self.dropped = [buffers(w, dropout, a) for w, a in zip(widths, self.acts)]
        self.Xb = buffers(n_features)
        self.Yb = buffers(n_outputs)
        self.swb = cuda.device_array(rows, params.dtype)
        self._batches = {}

    @staticmethod
    def split(flat, table):
        """Per-layer (I, O) weight and (O,) bias views of a flat device buffer."""
        W = [flat[w:w + i * o].reshape((i, o)) for i, o, w, _ in table]
        b = [flat[bo:bo + o] for _, o, _, bo in table]
        return W, b

    def rows(self, n):
        """Views of the work buffers for a batch of n rows and every launch such a batch makes,
        made once per distinct n (an epoch has at most two: the batch size and the last one)."""
        if n in self._batches:
            return self._batches[n]
        K = self.K
        v = types.SimpleNamespace(n=n)
        for name in ("acts", "deltas", "pre", "masks", "dropped"):
            setattr(v, name, [a[:n] for a in getattr(self, name)])
        v.Xb, v.Yb, v.swb = self.Xb[:n], self.Yb[:n], self.swb[:n]
        v.stage = _launcher(K.stage_batch, n, K.ROW_THREADS)
        v.gather = _launcher(K.gather_rows, n, K.ROW_THREADS)
        v.loss = _launcher(K.output_delta_and_loss, 1, K.BLOCK)
        v.softmax = _launcher(K.softmax_rows, _blocks(n, K.BLOCK), K.BLOCK)
        v.cublas, v.forward, v.dropout, v.gradient, v.delta = [], [], [], [], []
        for fan_in, fan_out in self.fans:
            cublas = self.cupy is not None and n * fan_in * fan_out >= CUBLAS_MIN_MACS
            v.cublas.append(cublas)
            v.dropout.append(_launcher(K.dropout_forward, *_elementwise_grid(K, n, fan_out)))
            if cublas:  # the product by cuBLAS, then its epilogue as an elementwise kernel
                v.forward.append(_launcher(K.bias_activate, *_elementwise_grid(K, n, fan_out)))
                v.gradient.append(_launcher(K.column_sums, _blocks(fan_out, K.BLOCK), K.BLOCK))
                v.delta.append(_launcher(K.activation_backward,
                                         *_elementwise_grid(K, n, fan_in)))
            else:
                v.forward.append(_launcher(K.dense_forward, *_product_grid(K, n, fan_out)))
                v.gradient.append(_launcher(K.dense_backward,  # + the bias row
                                            *_product_grid(K, fan_in + 1, fan_out)))
                v.delta.append(_launcher(K.backward_input, *_product_grid(K, n, fan_in)))
        self._batches[n] = v
        return v

    # ------------------------------------------------------------------ forward and backward
    def forward(self, v, dropout=0.0, seed=0, first_row=0, out=None):
        """Forward pass over the n rows staged in v.Xb; returns the (n, K) output activations,
        written into `out` when given. Softmax rows are left unfinished (see the callers)."""
        A = v.Xb
        unit_offset = 0
        for i in range(self.n_layers):
            Z = out if out is not None and i == self.last else v.acts[i]
            if v.cublas[i]:
                self._cublas(Z, A, self.W[i])
                v.forward[i](Z, v.pre[i], self.b[i], self.kinds[i])
            else:
                v.forward[i](Z, v.pre[i], A, self.W[i], self.b[i], self.kinds[i])
            A = Z
            if dropout > 0 and i < self.last:
                A = v.dropped[i]
                v.dropout[i](A, v.masks[i], Z, dropout, seed,
                             first_row * self.hidden_units + unit_offset, self.hidden_units)
                unit_offset += Z.shape[1]
        return Z

    def backprop(self, v, dW, db, stats, loss, dropout, seed, first_row):
        """Forward and backward over the n staged rows: unnormalised gradients into the views
        dW, db; weighted loss and weight sums added to stats (see output_delta_and_loss)."""
        P = self.forward(v, dropout, seed, first_row)
        v.loss(v.deltas[self.last], stats, P, v.Yb, v.swb, loss, self.output == SOFTMAX,
               self.eps)
        inputs = v.dropped if dropout > 0 else v.acts
        for i in range(self.last, -1, -1):
            dZ = v.deltas[i]
            A_in = v.Xb if i == 0 else inputs[i - 1]
            if v.cublas[i]:
                self._cublas(dW[i], A_in, dZ, transpose_a=True)
                v.gradient[i](db[i], dZ)
            else:
                v.gradient[i](dW[i], db[i], dZ, A_in)
            if i > 0:
                dA = v.deltas[i - 1]
                args = (v.acts[i - 1], v.pre[i - 1], v.masks[i - 1], self.hidden, dropout > 0)
                if v.cublas[i]:
                    self._cublas(dA, dZ, self.W[i], transpose_b=True)
                    v.delta[i](dA, *args)
                else:
                    v.delta[i](dA, dZ, self.W[i], *args)

    def _cublas(self, C, A, B, transpose_a=False, transpose_b=False):
        """C = op(A) @ op(B) by cuBLAS, zero-copy on the same device memory."""
        cp = self.cupy
        a, b = cp.asarray(A), cp.asarray(B)
        cp.matmul(a.T if transpose_a else a, b.T if transpose_b else b, out=cp.asarray(C))


# ---------------------------------------------------------------------------------------------
# The backend's entry points (arguments as in fastmlp/cpu/kernels.py, arrays on the device)
# ---------------------------------------------------------------------------------------------

def _update(network, state, squares, stats, alpha, opt, n_batches):
    """(launcher, arguments) of the fused finish_gradient + update that opt asks for. Scalars
    are cast to the parameters' dtype, as the CPU kernels cast them."""
    from ..cpu.kernels import adam_step_size

    K = network.K
    params, dparams, slot_1, slot_2 = state
    kind, learning_rate, momentum, nesterov, beta_1, beta_2, epsilon, rho, weight_decay, step = opt
    dt = params.dtype.type
    common = (squares, dparams, stats, dt(alpha), network.n_weights)
    grid = (squares.shape[0], K.BLOCK)
    if kind == SGD:
        return _launcher(K.sgd_update, *grid), (params, slot_1, *common, dt(learning_rate),
                                                 dt(momentum), bool(nesterov))
    if kind == ADAGRAD:
        return _launcher(K.adagrad_update, *grid), (params, slot_1, *common, dt(learning_rate),
                                                     dt(epsilon))
    if kind == RMSPROP:
        return _launcher(K.rmsprop_update, *grid), (params, slot_1, *common, dt(learning_rate),
                                                     dt(rho), dt(epsilon))
    # ADAM, ADAMW: the bias-corrected step size of every update this epoch can make, by the CPU's
    # own function (bit-identical), sent once per epoch.
    sizes = np.array([adam_step_size(learning_rate, beta_1, beta_2, step + j + 1)
                      for j in range(n_batches)], dtype=np.float64)
    decay = learning_rate * weight_decay if kind == ADAMW else 0.0
    return _launcher(K.adam_update, *grid), (
        params, slot_1, slot_2, *common, to_device(sizes), dt(beta_1), dt(beta_2), dt(epsilon),
        dt(1 - decay), network.n_weights if decay > 0 else 0)


def train_epoch(state, features, Y, sw, order, batch_size, net, opt):
    """One epoch of mini-batch training on the device (see the CPU train_epoch): batches are
    gathered on the device from `order`; returns (sum of batch loss * batch rows, Adam's step
    counter after the epoch), the only numbers copied back."""
    cuda = _import_cuda()
    params, dparams = state[0], state[1]
    layers, hidden, output, loss, alpha, dropout, seed = net
    n = order.shape[0]
    if n == 0:
        return 0.0, opt[-1]
    batch_size = min(batch_size, n)
    network = _Network(params, layers, hidden, output, batch_size, features.X.shape[1],
                       Y.shape[1], dropout > 0)
    K = network.K
    dW, db = _Network.split(dparams, network.table)
    squares = cuda.device_array(_blocks(params.shape[0], K.BLOCK), np.float64)
    stats = cuda.to_device(np.zeros(K.N_STATS))
    update, update_args = _update(network, state, squares, stats, alpha, opt,
                                  _blocks(n, batch_size))
    close = _launcher(K.close_batch, 1, K.BLOCK)
    with _same_stream(network.cupy):
        for start in range(0, n, batch_size):
            v = network.rows(min(batch_size, n - start))
            v.stage(v.Xb, v.Yb, v.swb, *features, Y, sw, order, start)
            network.backprop(v, dW, db, stats, loss, dropout, seed, start)
            update(*update_args)
            close(stats, squares, float(alpha), v.n)
    result = stats.copy_to_host()
    step = opt[-1]
    if opt[0] not in (SGD, ADAGRAD, RMSPROP):  # Adam and AdamW count their updates
        step += int(result[K.STEPS])
    return float(result[K.EPOCH_TOTAL]), step


def loss_and_gradient(dparams, params, features, Y, sw, net, chunk_rows):
    """Full-data-set regularised loss (returned) and its gradient dparams (P,) out, in chunks of
    at most chunk_rows rows (see the CPU function). Used by L-BFGS."""
    cuda = _import_cuda()
    layers, hidden, output, loss, alpha = net[:5]
    n = Y.shape[0]
    chunk_rows = min(chunk_rows, n)
    network = _Network(params, layers, hidden, output, chunk_rows, features.X.shape[1],
                       Y.shape[1])
    K = network.K
    several = n > chunk_rows
    chunk_grad = cuda.device_array_like(dparams) if several else dparams
    dW, db = _Network.split(chunk_grad, network.table)
    stats = cuda.to_device(np.zeros(K.N_STATS))
    squares = cuda.device_array(_blocks(params.shape[0], K.BLOCK), np.float64)
    consecutive = cuda.device_array(0, np.int64)  # no index array: rows start, start + 1, ...
    add = _launcher(K.add_into, _blocks(dparams.shape[0], K.BLOCK), K.BLOCK)
    with _same_stream(network.cupy):
        for start in range(0, n, chunk_rows):
            v = network.rows(min(chunk_rows, n - start))
            v.stage(v.Xb, v.Yb, v.swb, *features, Y, sw, consecutive, start)
            network.backprop(v, dW, db, stats, loss, 0.0, 0, start)
            if several:
                add(dparams, chunk_grad, start == 0)
        _launcher(K.finish_gradient, squares.shape[0], K.BLOCK)(
            dparams, squares, params, stats, params.dtype.type(alpha), network.n_weights)
    sums = stats.copy_to_host()
    loss_sum, weight_sum = sums[K.LOSS_SUM], sums[K.WEIGHT_SUM]
    weight_squares = float(np.sum(squares.copy_to_host()))
    return float(loss_sum / weight_sum + 0.5 * alpha * weight_squares / weight_sum)


def predict(out, params, features, rows, net, chunk_rows):
    """Output activations out (R, K) for the input rows listed in rows (R,), chunk by chunk (see
    the CPU function)."""
    layers, hidden, output = net.layers, net.hidden, net.output
    n = rows.shape[0]
    if n == 0:
        return
    chunk_rows = min(chunk_rows, n)
    network = _Network(params, layers, hidden, output, chunk_rows, features.X.shape[1], 0)
    with _same_stream(network.cupy):
        for start in range(0, n, chunk_rows):
            v = network.rows(min(chunk_rows, n - start))
            v.gather(v.Xb, *features, rows, start)
            P = network.forward(v, out=out[start:start + v.n])
            if output == SOFTMAX:
                v.softmax(P)


def thread_limit(net, rows):
    """The context a fit runs in: nothing to limit on the GPU (see the CPU backend's)."""
    return contextlib.nullcontext()
