"""Tiny CUDA fits for compute-sanitizer (bench/gpu_check.sh): the one-launch epoch kernel, the
per-layer kernels and the grid-wide persistent epoch kernel, each fit checked against the same fit
on the CPU.

    python bench/gpu_tiny_fits.py                       # every kind
    compute-sanitizer --tool racecheck python bench/gpu_tiny_fits.py fused per-layer persistent

"fused": two fits small enough for one block's shared memory (relu + adam; gelu + dropout +
sgd). "per-layer": the same kernels with the one-launch kernel switched off
(launch.FUSED_EPOCHS = False): relu + adam + dropout with a prediction on the GPU, and L-BFGS.
"persistent": the fused kernel off and the persistent one forced (launch.PERSISTENT_EPOCHS):
relu + adam + dropout, tanh + sgd. Each reports the path the backend says it ran. Products
stay far below cuBLAS's threshold and CuPy is kept out, so only fastmlp's own kernels run. Exits
1 when a fit disagrees with the CPU or ran another path, 2 on a bad argument. Needs a GPU (or
NUMBA_ENABLE_CUDASIM=1, slowly).
"""

import sys
import time
import warnings

import numpy as np

from fastmlp import MLPClassifier
from fastmlp.cuda import device, launch
from fastmlp.datasets import make_tabular

MODES = ("fused", "per-layer", "persistent")
FITS = {
    "fused": [dict(hidden_layer_sizes=(8,), solver="adam"),
              dict(hidden_layer_sizes=(8, 4), activation="gelu", dropout=0.1, solver="sgd")],
    "per-layer": [dict(hidden_layer_sizes=(16, 8), solver="adam", dropout=0.1),
                  dict(hidden_layer_sizes=(16,), solver="lbfgs")],
    "persistent": [dict(hidden_layer_sizes=(16, 8), solver="adam", dropout=0.1),
                   dict(hidden_layer_sizes=(16,), activation="tanh", solver="sgd")],
}


def one_fit(mode, params, X, y):
    """True when the CUDA fit took `mode`'s path and matches the CPU fit."""
    common = dict(batch_size=32, max_iter=3, tol=0.0, n_iter_no_change=10**6, random_state=0,
                  **params)
    start = time.perf_counter()
    launch.LAST_EPOCH.update(path=None, products=())
    on_gpu = MLPClassifier(device="cuda", **common).fit(X, y)
    path = launch.LAST_EPOCH["path"] if params["solver"] != "lbfgs" else "per-layer (L-BFGS)"
    on_cpu = MLPClassifier(device="cpu", **common).fit(X, y)
    gpu_probabilities = on_gpu.predict_proba(X)  # device='cuda': the per-layer forward
    cpu_probabilities = on_cpu.set_params(device="cpu").predict_proba(X)
    # L-BFGS keeps no per-epoch curve (as in scikit-learn): its final loss_ is compared.
    gpu_curve, cpu_curve = (getattr(m, "loss_curve_", [m.loss_]) for m in (on_gpu, on_cpu))
    curves = np.allclose(gpu_curve, cpu_curve, rtol=1e-4, atol=1e-6)
    predictions = np.allclose(gpu_probabilities, cpu_probabilities, rtol=1e-3, atol=1e-5)
    right_path = path.startswith(mode)
    ok = curves and predictions and right_path
    print(f"{'OK  ' if ok else 'FAIL'} {mode:9} {params}: path {path}; loss curve "
          f"{'matches' if curves else 'DIFFERS'} the CPU's ({gpu_curve[-1]:.6f} vs "
          f"{cpu_curve[-1]:.6f}); predict_proba {'matches' if predictions else 'DIFFERS'}"
          f"; {time.perf_counter() - start:.1f} s", flush=True)
    return ok


def main(argv):
    modes = argv or list(MODES)
    if any(mode not in MODES for mode in modes):
        print(f"usage: python bench/gpu_tiny_fits.py [{' | '.join(MODES)}]...", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore")  # 3 epochs do not converge; the simulator's uint64 hash wraps
    device.check_available()
    device._CUPY = None  # tiny products never reach cuBLAS: keep CuPy's kernels out of the check
    X, y = make_tabular(200, 10, 3)
    ok = True
    for mode in modes:
        launch.FUSED_EPOCHS = mode == "fused"
        launch.PERSISTENT_EPOCHS = mode == "persistent"
        for params in FITS[mode]:
            ok &= one_fit(mode, params, X, y)
    print("all tiny fits OK" if ok else "SOME TINY FITS FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
