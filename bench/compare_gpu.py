"""fastmlp on the GPU against PyTorch on the same GPU (and fastmlp on the CPU), in one process.

    python bench/compare_gpu.py                # W1 and W2, writes bench/GPU_RESULTS.md
    python bench/compare_gpu.py --epochs 2 --repeats 2
    NUMBA_ENABLE_CUDASIM=1 python bench/compare_gpu.py --smoke --out /tmp/smoke.md  # harness only

W1: Fashion-MNIST 784-256-128-10, relu, adam lr 1e-3, batch 256, float32: seconds per epoch and
test accuracy after the epochs. W2: synthetic 100,000 x 20, 3 classes, 64-32, batch 32: seconds
per epoch. The table says which CUDA path each workload takes: W2 fits in one block's shared
memory and trains an epoch per launch ("fused"); W1 is too wide and takes the per-layer kernels
(3L + 2 launches per mini-batch, cuBLAS when CuPy works). Contestants alternate on every
repeat; figures are medians. Needs an NVIDIA GPU, numba-cuda (pip install 'fastmlp[cuda]')
and, for the PyTorch contestant, a CUDA build of torch.
"""

import argparse
import datetime
import platform
import time
import warnings
from pathlib import Path

import numba
import numpy as np

from fastmlp import MLPClassifier
from fastmlp.bundles import Network
from fastmlp.cuda import launch
from fastmlp.datasets import load_fashion_mnist, make_tabular
from fastmlp.layout import Layout
from fastmlp.ops import ACTIVATION, LOSS

BENCH = Path(__file__).resolve().parent


def fastmlp_epochs(device, X, y, params, epochs):
    """Seconds per epoch of one fit of `epochs` epochs (the data goes to the device once per
    fit, as in real use), and the model."""
    MLPClassifier(device=device, max_iter=1, **params).fit(X[:512], y[:512])  # compile, warm up
    model = MLPClassifier(device=device, max_iter=epochs, tol=0.0, n_iter_no_change=10**6,
                          **params)
    start = time.perf_counter()
    model.fit(X, y)
    return [(time.perf_counter() - start) / epochs] * epochs, model


def cuda_path(X, y, params):
    """The CUDA path fastmlp's train_epoch takes for this workload (float32, no dropout):
    "fused" (one launch per epoch) or "per-layer"."""
    classes = len(np.unique(y))
    outputs = 1 if classes == 2 else classes
    layout = Layout((X.shape[1], *params["hidden_layer_sizes"], outputs))
    net = Network(layout.table, ACTIVATION["relu"].code, ACTIVATION["softmax"].code,
                  LOSS["log_loss"].code, 1e-4, 0.0, 0)
    return launch.epoch_path(np.empty(layout.n_params, np.float32), layout.table,
                             min(params["batch_size"], len(X)), X.shape[1], outputs, net)


def torch_epochs(X, y, params, epochs):
    import torch

    device = torch.device("cuda")
    sizes = [X.shape[1], *params["hidden_layer_sizes"], int(y.max()) + 1]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=params["learning_rate_init"])
    loss_fn = torch.nn.CrossEntropyLoss()
    Xd = torch.as_tensor(X, device=device)
    yd = torch.as_tensor(y, device=device, dtype=torch.long)
    batch = params["batch_size"]
    times = []
    for _ in range(epochs + 1):  # the first epoch warms up cuDNN/cuBLAS and is not counted
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(Xd), device=device)
        for i in range(0, len(Xd), batch):
            rows = order[i:i + batch]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(Xd[rows]), yd[rows]).backward()
            optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[1:], model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=BENCH / "GPU_RESULTS.md")
    parser.add_argument("--smoke", action="store_true",
                        help="check the harness on tiny synthetic data, 1 epoch, 1 repeat; runs "
                             "under numba's CUDA simulator; its figures mean nothing")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    from numba import cuda

    if not cuda.is_available():
        raise SystemExit("no usable NVIDIA GPU: this benchmark needs one")
    if numba.config.ENABLE_CUDASIM:
        if not args.smoke:
            raise SystemExit("numba's CUDA simulator is on: only --smoke runs there")
        gpu_name = "numba CUDA simulator (SMOKE RUN: figures mean nothing)"
    else:
        gpu_name = cuda.get_current_device().name
        gpu_name = gpu_name.decode() if isinstance(gpu_name, bytes) else gpu_name
    try:
        import torch

        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False

    if args.smoke:
        args.epochs, args.repeats = 1, 1
        # W1's 128 features make it too large for one block's shared memory, as the real W1 is;
        # W2 fits, as the real W2 does. Few batches: the simulator runs every CUDA thread in
        # Python.
        X1, y1 = make_tabular(96, 128, 3)
        X1, y1, X1_test, y1_test = X1[:64], y1[:64], X1[64:], y1[64:]
        X2, y2 = make_tabular(64, 6, 3)
        w1, w2 = dict(hidden_layer_sizes=(16, 8), batch_size=64), dict(
            hidden_layer_sizes=(4,), batch_size=16)
    else:
        X1, y1, X1_test, y1_test = load_fashion_mnist(subset="all")
        X2, y2 = make_tabular(100_000, 20, 3)
        w1, w2 = dict(hidden_layer_sizes=(256, 128), batch_size=256), dict(
            hidden_layer_sizes=(64, 32), batch_size=32)
    common = dict(learning_rate_init=1e-3, random_state=0)
    workloads = {"W1 Fashion-MNIST 784-256-128-10, batch 256": (X1, y1, dict(w1, **common)),
                 "W2 tabular 100k x 20, 64-32, batch 32": (X2, y2, dict(w2, **common))}
    rows = []
    for name, (X, y, params) in workloads.items():
        results = {"fastmlp cuda": [], "fastmlp cpu": [], "torch cuda": []}
        accuracy = {}
        for repeat in range(args.repeats):
            contestants = list(results)
            contestants = contestants[repeat % 3:] + contestants[:repeat % 3]  # alternate
            for who in contestants:
                if who == "torch cuda" and not have_torch:
                    continue
                if who == "torch cuda":
                    times, _ = torch_epochs(X, y, params, args.epochs)
                else:
                    times, model = fastmlp_epochs(who.split()[1], X, y, params, args.epochs)
                    if name.startswith("W1"):
                        accuracy[who] = model.set_params(device="cpu").score(X1_test, y1_test)
                results[who] += times
        medians = {who: float(np.median(t)) for who, t in results.items() if t}
        rows.append((name, medians, accuracy, cuda_path(X, y, params)))

    lines = [f"# GPU benchmark ({datetime.date.today()})", "",
             f"GPU: {gpu_name}; host: {platform.processor() or platform.machine()}; "
             f"{args.epochs} epochs x {args.repeats} repeats, contestants alternated, medians.",
             "", "| workload | contestant | s/epoch | fastmlp cuda speed-up | target | "
             "test accuracy | cuda path |", "| --- | --- | --- | --- | --- | --- | --- |"]
    targets = {("W1", "torch cuda"): 1.5, ("W1", "fastmlp cpu"): 10.0, ("W2", "torch cuda"): 3.0}
    for name, medians, accuracy, path in rows:
        for who, seconds in medians.items():
            ratio = seconds / medians["fastmlp cuda"]
            target = targets.get((name[:2], who))
            goal = "" if target is None else (f">= {target:g}x: "
                                              f"{'met' if ratio >= target else 'NOT met'}")
            acc = f"{accuracy[who]:.4f}" if who in accuracy else ""
            where = path if who == "fastmlp cuda" else ""
            lines.append(f"| {name} | {who} | {seconds:.4f} | {ratio:.2f}x | {goal} | {acc} "
                         f"| {where} |")
    if not have_torch:
        lines += ["", "PyTorch with CUDA is not installed: its rows are missing."]
    lines += ["", "Target on accuracy: fastmlp cuda within 0.5 percentage points of fastmlp cpu "
              "(W1 rows).", "", "cuda path: fused = the whole epoch in one kernel launch (the "
              "network fits in one block's shared memory); per-layer = 3L + 2 launches per "
              "mini-batch."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
