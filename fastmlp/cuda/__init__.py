"""The CUDA backend: the CPU backend's functions, on device arrays, launching kernels.py.

Same interface as fastmlp/cpu: train_epoch, loss_and_gradient, predict (same arguments, device
arrays), to_device, to_host, copy_to and check_available. The driver moves the data once per fit;
an epoch then runs on the device and returns one number. Importing this module needs numba only;
a GPU (or numba's CUDA simulator, NUMBA_ENABLE_CUDASIM=1) is needed to call it.

Launches per mini-batch: 2 gathers, 3 per layer forward (product, bias + activation, dropout when
on), 1 loss, 2-4 per layer backward, then squares, batch close, the fused gradient-and-update
kernel and a reset: about 25 for a two-hidden-layer network. Each is launched from Python.
"""

import os

import numpy as np

from ..cpu.kernels import ADAMW

NAME = "cuda"
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# Threads per block edge of element-wise 2-D kernels, and per block of 1-D kernels. The simulator
# runs one Python thread per CUDA thread, so it gets small blocks.
EDGE = 4 if SIMULATOR else 16
THREADS = 32 if SIMULATOR else 256


def check_available():
    """Return if CUDA training can run here; otherwise raise RuntimeError saying why."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba always ships a cuda module today
        raise RuntimeError("device='cuda' needs numba's CUDA support: pip install "
                           "'fastmlp[cuda]'") from exc
    if SIMULATOR:
        return
    if not cuda.is_available():
        try:
            cuda.current_context()
        except Exception as exc:  # noqa: BLE001 - numba's reason: no driver, no device...
            reason = str(exc)
        else:  # pragma: no cover
            reason = "numba reports no usable CUDA device"
        raise RuntimeError(
            f"device='cuda' but no usable NVIDIA GPU was found ({reason}). Check that an NVIDIA "
            "driver and GPU are present (nvidia-smi) and that the CUDA extra is installed "
            "(pip install 'fastmlp[cuda]'), or use device='cpu'.")


def to_device(array):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(array))


def to_host(array):
    return array.copy_to_host() if hasattr(array, "copy_to_host") else np.asarray(array)


def copy_to(destination, host_array):
    destination.copy_to_device(np.ascontiguousarray(host_array))


# --------------------------------------------------------------------------------- launching
def _grid1(n):
    return (max(1, (n + THREADS - 1) // THREADS),), (THREADS,)


def _grid2(rows, cols):
    return ((rows + EDGE - 1) // EDGE, (cols + EDGE - 1) // EDGE), (EDGE, EDGE)


def _matmul(C, A, B, transpose_a=False, transpose_b=False):
    from .kernels import TILE, matmul

    rows, cols = C.shape
    matmul[((cols + TILE - 1) // TILE, (rows + TILE - 1) // TILE), (TILE, TILE)](
        C, A, B, transpose_a, transpose_b)


class _Network:
    """Device views of one network's parameters and per-layer work buffers for up to `rows`
    rows, built once per call (no allocation inside the batch loop)."""

    def __init__(self, params, layers, hidden, output, rows, n_features, n_outputs):
        from numba import cuda

        self.layers = np.asarray(to_host(layers), dtype=np.int64)
        self.hidden, self.output = hidden, output
        dtype = params.dtype
        self.W = [params[w:w + i * o].reshape((i, o)) for i, o, w, _ in self.layers]
        self.b = [params[b:b + o] for _, o, _, b in self.layers]
        widths = [int(o) for _, o, _, _ in self.layers]
        self.acts, self.pre, self.masks, self.dropped, self.deltas = (
            [cuda.device_array((rows, w), dtype) for w in widths] for _ in range(5))
        self.Xb = cuda.device_array((rows, n_features), dtype)
        self.Yb = cuda.device_array((rows, max(n_outputs, 1)), dtype)
        self.swb = cuda.device_array(rows, dtype)
        self.hidden_units = sum(widths[:-1])
        self.eps = float(np.finfo(dtype).eps)

    def forward(self, n, dropout=0.0, seed=0, first_row=0):
        """Forward pass over the first n rows of Xb; returns the (n, K) output activations."""
        from .kernels import SOFTMAX, bias_activate, dropout_forward, softmax_rows
        from ..cpu.kernels import GELU, SILU

        A = self.Xb[:n]
        last = len(self.W) - 1
        offset = 0
        for i in range(last + 1):
            Z = self.acts[i][:n]
            _matmul(Z, A, self.W[i])
            kind = self.output if i == last else self.hidden
            bias_activate[_grid2(*Z.shape)](Z, self.pre[i][:n], self.b[i], kind,
                                            kind in (GELU, SILU))
            if kind == SOFTMAX:
                softmax_rows[_grid1(n)](Z)
            A = Z
            if dropout > 0 and i < last:
                A = self.dropped[i][:n]
                dropout_forward[_grid2(*Z.shape)](A, self.masks[i][:n], Z, dropout, seed,
                                                  first_row * self.hidden_units + offset,
                                                  self.hidden_units)
                offset += Z.shape[1]
        return self.acts[last][:n]

    def backprop(self, dparams_W, dparams_b, stats, n, loss, dropout, seed, first_row):
        """Forward and backward over n staged rows: unnormalised gradients into the given views,
        weighted loss and weight sums into stats (see kernels.output_delta_and_loss)."""
        from .kernels import activation_backward, column_sums, output_delta_and_loss

        P = self.forward(n, dropout, seed, first_row)
        last = len(self.W) - 1
        output_delta_and_loss[_grid1(n)](self.deltas[last][:n], stats, P, self.Yb[:n],
                                         self.swb[:n], loss, self.eps)
        for i in range(last, -1, -1):
            dZ = self.deltas[i][:n]
            if i == 0:
                A_in = self.Xb[:n]
            else:
                A_in = (self.dropped if dropout > 0 else self.acts)[i - 1][:n]
            _matmul(dparams_W[i], A_in, dZ, transpose_a=True)
            column_sums[_grid1(dZ.shape[1])](dparams_b[i], dZ)
            if i > 0:
                dA = self.deltas[i - 1][:n]
                _matmul(dA, dZ, self.W[i], transpose_b=True)
                activation_backward[_grid2(*dA.shape)](
                    dA, self.acts[i - 1][:n], self.pre[i - 1][:n], self.masks[i - 1][:n],
                    self.hidden, dropout > 0)

    def stage(self, features, Y, sw, rows):
        from .kernels import gather_rows, gather_targets

        X, X_data, X_indices, X_indptr = features
        n = rows.shape[0]
        gather_rows[_grid1(n)](self.Xb[:n], X, X_data, X_indices, X_indptr, rows)
        if Y is not None:
            gather_targets[_grid1(n)](self.Yb[:n], self.swb[:n], Y, sw, rows)
        return n


def _views(flat, layers):
    W = [flat[w:w + i * o].reshape((i, o)) for i, o, w, _ in layers]
    b = [flat[bo:bo + o] for _, o, _, bo in layers]
    return W, b


def train_epoch(state, features, Y, sw, order, batch_size, net, opt):
    """One epoch of mini-batch training on the device (see the CPU function)."""
    from numba import cuda

    from . import kernels as K

    params, dparams, slot_1, slot_2 = state
    layers, hidden, output, loss, alpha, dropout, seed = net
    (kind, learning_rate, momentum, nesterov, beta_1, beta_2, epsilon, rho, weight_decay,
     step) = opt
    network = _Network(params, layers, hidden, output, batch_size, features[0].shape[1],
                       Y.shape[1])
    dW, db = _views(dparams, network.layers)
    n_weights = int(network.layers[0, 3])
    stats = cuda.to_device(np.array([0.0, 0.0, 0.0, 0.0, float(step)]))
    adam = kind in (K.ADAM, ADAMW)
    for start in range(0, order.shape[0], batch_size):
        n = network.stage(features, Y, sw, order[start:start + batch_size])
        network.backprop(dW, db, stats, n, loss, dropout, seed, start)
        K.sum_squares[(params.shape[0] + 255) // 256, 256](stats, params, n_weights)
        K.close_batch[1, 1](stats, alpha, n, adam)
        K.optimizer_update[_grid1(params.shape[0])](
            params, slot_1, slot_2, dparams, stats, kind, alpha,
            n_weights, learning_rate, momentum, nesterov, beta_1, beta_2, epsilon, rho,
            weight_decay)
        K.reset_batch[1, 1](stats)
    result = stats.copy_to_host()
    return float(result[K.EPOCH_TOTAL]), int(result[K.STEP]) if adam else step


def loss_and_gradient(dparams, params, features, Y, sw, net, chunk_rows):
    """Full-data-set loss and gradient in chunks (see the CPU function), for L-BFGS."""
    from numba import cuda

    from . import kernels as K

    layers, hidden, output, loss, alpha = net[:5]
    n_rows = Y.shape[0]
    chunk_rows = min(chunk_rows, n_rows)
    network = _Network(params, layers, hidden, output, chunk_rows, features[0].shape[1],
                       Y.shape[1])
    chunk = cuda.device_array_like(dparams)
    dW, db = _views(chunk, network.layers)
    n_weights = int(network.layers[0, 3])
    stats = cuda.to_device(np.zeros(5))
    dparams[:] = 0
    for start in range(0, n_rows, chunk_rows):
        rows = cuda.to_device(np.arange(start, min(start + chunk_rows, n_rows)))
        n = network.stage(features, Y, sw, rows)
        network.backprop(dW, db, stats, n, loss, 0.0, 0, start)
        K.add_into[_grid1(dparams.shape[0])](dparams, chunk)
    K.sum_squares[(params.shape[0] + 255) // 256, 256](stats, params, n_weights)
    K.finish_gradient[_grid1(params.shape[0])](dparams, params, stats, alpha, n_weights)
    s = stats.copy_to_host()
    return float(s[K.LOSS_SUM] / s[K.WEIGHT_SUM] + 0.5 * alpha * s[K.SQUARES] / s[K.WEIGHT_SUM])


def predict(out, params, features, rows, layers, hidden, output, chunk_rows):
    """Output activations out (R, K) for the listed rows, chunk by chunk (see the CPU one)."""
    from .kernels import copy_rows

    n_rows = rows.shape[0]
    chunk_rows = min(chunk_rows, n_rows)
    network = _Network(params, layers, hidden, output, chunk_rows, features[0].shape[1],
                       out.shape[1])
    for start in range(0, n_rows, chunk_rows):
        n = network.stage(features, None, None, rows[start:start + chunk_rows])
        P = network.forward(n)
        copy_rows[_grid2(*P.shape)](out, start, P)
