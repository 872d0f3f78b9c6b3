"""fastmlp on the GPU against PyTorch on the same GPU and fastmlp on the same host's CPU.

    python bench/compare_gpu.py                # W1, W2, W4 in float32 and float64
    python bench/compare_gpu.py --epochs 2 --repeats 2 --budget 150 --out /tmp/GPU_RESULTS.md
    NUMBA_ENABLE_CUDASIM=1 python bench/compare_gpu.py --smoke --out /tmp/smoke.md  # harness only
    python bench/compare_gpu.py --persistent --workloads W1 --dtypes float32  # + persistent path

W1: Fashion-MNIST 784-256-128-10, batch 256. W2: synthetic 100,000 x 20, 3 classes, 64-32,
batch 32. W4: Fashion-MNIST 784-1024-1024-10, batch 1024 (the one size where the GPU led in
December 2026). All relu, adam lr 1e-3; seconds per epoch, and test accuracy on Fashion-MNIST.
Contestants: fastmlp cuda, fastmlp cpu (this host), PyTorch eager on the GPU, and PyTorch with
its whole training step captured in one CUDA graph (static index tensor, batch gathered on the
device, Adam with capturable=True: PyTorch's documented whole-network capture). They alternate
on every repeat; figures are medians. The "cuda path" column is what fastmlp's backend reports
it ran (fastmlp.cuda.launch.LAST_EPOCH): fused = the whole epoch in one launch; per-layer, with
who made each layer's products (cuBLAS through CuPy, or fastmlp's tiled kernel); persistent = the
whole epoch in one cooperative launch of the grid-wide kernel. --persistent adds the contestant
"fastmlp cuda persistent" to W1: fastmlp cuda with that path forced (launch.PERSISTENT_EPOCHS,
off by default until this benchmark shows it faster than the per-layer path). Results are
written after every workload, so a run cut short keeps what it measured. Fashion-MNIST is found
as fastmlp.datasets.load_fashion_mnist finds it (FASTMLP_FASHION_MNIST, ...); without it, W1 and
W4 train on a synthetic stand-in of the same shape (timings only; the table says so). Needs an
NVIDIA GPU, numba-cuda and, for the PyTorch contestants, a CUDA build of torch.
"""

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import numba
import numpy as np

from fastmlp import MLPClassifier
from fastmlp.cuda import device as cuda_device
from fastmlp.cuda import launch
from fastmlp.datasets import load_fashion_mnist, make_tabular

BENCH = Path(__file__).resolve().parent
CONTESTANTS = ("fastmlp cuda", "fastmlp cpu", "torch cuda", "torch cuda graph")
# --persistent: fastmlp cuda on the persistent path (one cooperative launch per epoch), W1 only.
PERSISTENT = "fastmlp cuda persistent"
PERSISTENT_WORKLOADS = ("W1",)
# Targets of issue #23, float32 only: (workload, contestant) -> wanted speed-up of fastmlp cuda.
TARGETS = {("W1", "torch cuda"): 1.5, ("W1", "fastmlp cpu"): 10.0, ("W2", "torch cuda"): 3.0}


def fastmlp_epochs(device, X, y, params, epochs, dtype, compile_first, persistent=False):
    """Seconds per epoch of one fit of `epochs` epochs (the data goes to the device once per
    fit, as in real use), the model, and the CUDA path the backend reports for it.
    compile_first: fit 512 rows first, untimed, to compile (once per contestant and workload).
    persistent: force the persistent path where the fused kernel does not fit."""
    with _persistent_epochs(persistent):
        return _fastmlp_epochs(device, X, y, params, epochs, dtype, compile_first)


@contextlib.contextmanager
def _persistent_epochs(on):
    saved = launch.PERSISTENT_EPOCHS
    launch.PERSISTENT_EPOCHS = on
    try:
        yield
    finally:
        launch.PERSISTENT_EPOCHS = saved


def _fastmlp_epochs(device, X, y, params, epochs, dtype, compile_first):
    if compile_first:
        MLPClassifier(device=device, max_iter=1, dtype=dtype, **params).fit(X[:512], y[:512])
    launch.LAST_EPOCH.update(path=None, products=())
    model = MLPClassifier(device=device, max_iter=epochs, tol=0.0, n_iter_no_change=10**6,
                          dtype=dtype, **params)
    start = time.perf_counter()
    model.fit(X, y)
    seconds = (time.perf_counter() - start) / epochs
    return [seconds] * epochs, model, dict(launch.LAST_EPOCH)


def describe_path(last):
    """'fused', 'persistent (264 blocks)' or 'per-layer (cuBLAS, cuBLAS, tiled)' from
    launch.LAST_EPOCH."""
    if last["path"] == "persistent":
        return f"persistent ({last.get('blocks')} blocks)"
    if last["path"] != "per-layer":
        return str(last["path"])
    names = {"cublas": "cuBLAS", "tiled": "tiled"}
    return f"per-layer ({', '.join(names[p] for p in last['products'])})"


def _torch_setup(X, y, params, dtype):
    import torch

    dev = torch.device("cuda")
    tdtype = getattr(torch, dtype)
    sizes = [X.shape[1], *params["hidden_layer_sizes"], int(y.max()) + 1]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1]).to(device=dev, dtype=tdtype)
    Xd = torch.as_tensor(X, device=dev, dtype=tdtype)
    yd = torch.as_tensor(y, device=dev, dtype=torch.long)
    return torch, dev, model, Xd, yd


def torch_epochs(X, y, params, epochs, dtype):
    """PyTorch eager on the GPU: seconds of each epoch after a warm-up epoch, and the model."""
    torch, dev, model, Xd, yd = _torch_setup(X, y, params, dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=params["learning_rate_init"])
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = params["batch_size"]
    times = []
    for _ in range(epochs + 1):  # the first epoch warms up cuBLAS and is not counted
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(Xd), device=dev)
        for i in range(0, len(Xd), batch):
            rows = order[i:i + batch]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(Xd[rows]), yd[rows]).backward()
            optimizer.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[1:], model


def torch_graph_epochs(X, y, params, epochs, dtype):
    """PyTorch with the whole step (gather, forward, loss, backward, Adam) captured in one CUDA
    graph, replayed once per mini-batch: the batch's rows are copied into a static index tensor
    and gathered on the device. A short last batch is padded with other rows whose loss weight
    is 0, so every batch is the graph's shape and the loss is the mean over the real rows."""
    torch, dev, model, Xd, yd = _torch_setup(X, y, params, dtype)
    optimizer = torch.optim.Adam(model.parameters(), lr=params["learning_rate_init"],
                                 capturable=True)
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    n = len(Xd)
    batch = min(params["batch_size"], n)
    idx = torch.zeros(batch, dtype=torch.long, device=dev)  # static: the batch's rows
    weight = torch.ones(batch, dtype=Xd.dtype, device=dev)  # static: 0 on padding rows

    def step():
        loss = (loss_fn(model(Xd[idx]), yd[idx]) * weight).sum() / weight.sum()
        loss.backward()
        optimizer.step()
        return loss

    side = torch.cuda.Stream()  # warm up on a side stream before capture, as documented
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # backward in the graph writes fresh gradients
    with torch.cuda.graph(graph):
        step()
    times = []
    for _ in range(epochs + 1):  # the first epoch is a warm-up, not counted
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(n, device=dev)
        for i in range(0, n, batch):
            rows = order[i:i + batch]
            short = rows.shape[0]
            if short < batch:
                idx[:short].copy_(rows)
                idx[short:].copy_(order[:batch - short])
                weight[short:].zero_()
            else:
                idx.copy_(rows)
            graph.replay()
        weight.fill_(1)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[1:], model


def torch_accuracy(model, X_test, y_test):
    import torch

    with torch.no_grad():
        first = next(model.parameters())
        Xt = torch.as_tensor(X_test, device=first.device, dtype=first.dtype)
        return float((model(Xt).argmax(1).cpu().numpy() == y_test).mean())


def _version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _host():
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} logical CPUs"


def _data(args):
    """{workload: (title, X, y, X_test, y_test, params)} for the workloads asked for."""
    if args.smoke:
        # W1's 128 features make it too large for one block's shared memory, as the real W1
        # is, and W4 with it; W2 fits, as the real W2 does. Few batches: the simulator runs
        # every CUDA thread in Python.
        X1, y1 = make_tabular(96, 128, 3)
        X2, y2 = make_tabular(64, 6, 3)
        fashion = (X1[:64], y1[:64], X1[64:], y1[64:])
        tabular = (X2, y2, None, None)
        sizes = {"W1": ((16, 8), 64), "W2": ((4,), 16), "W4": ((16, 16), 64)}
        source = "smoke stand-in"
    else:
        try:
            fashion = load_fashion_mnist(subset="all")
            source = "Fashion-MNIST"
        except FileNotFoundError as exc:
            print(f"Fashion-MNIST not found ({str(exc).splitlines()[0]}); W1 and W4 use a "
                  "synthetic stand-in of the same shape", file=sys.stderr)
            X, y = make_tabular(70_000, 784, 10)
            fashion = (X[:60_000], y[:60_000], X[60_000:], y[60_000:])
            source = "synthetic stand-in for Fashion-MNIST"
        tabular = (*make_tabular(100_000, 20, 3), None, None)
        sizes = {"W1": ((256, 128), 256), "W2": ((64, 32), 32), "W4": ((1024, 1024), 1024)}
    titles = {"W1": f"W1 {source} 784-256-128-10, batch 256",
              "W2": "W2 tabular 100k x 20, 64-32, batch 32",
              "W4": f"W4 {source} 784-1024-1024-10, batch 1024"}
    if args.smoke:
        titles = {w: f"{w} {source} {sizes[w][0]}, batch {sizes[w][1]}" for w in sizes}
    out = {}
    for w in args.workloads:
        hidden, batch = sizes[w]
        params = dict(hidden_layer_sizes=hidden, batch_size=batch, learning_rate_init=1e-3,
                      random_state=0)
        out[w] = (titles[w], *(tabular if w == "W2" else fashion), params)
    return out


def _run(who, X, y, X_test, y_test, params, epochs, dtype, warmed):
    """(times, accuracy or None, cuda path or "") of one contestant's fit."""
    if who.startswith("torch"):
        run = torch_graph_epochs if who == "torch cuda graph" else torch_epochs
        times, model = run(X, y, params, epochs, dtype)
        return times, None if X_test is None else torch_accuracy(model, X_test, y_test), ""
    device = who.split()[1]
    # The simulator compiles nothing for the GPU; the CPU's compile is quick to skip there too.
    times, model, last = fastmlp_epochs(device, X, y, params, epochs, dtype,
                                        who not in warmed and not numba.config.ENABLE_CUDASIM,
                                        persistent=who == PERSISTENT)
    warmed.add(who)
    accuracy = None
    if X_test is not None:
        accuracy = model.set_params(device="cpu").score(X_test.astype(dtype), y_test)
    return times, accuracy, describe_path(last) if device == "cuda" else ""


def _auto(X, params, dtype, y):
    """What device="auto" picks for this fit on this machine, and why."""
    outputs = len(np.unique(y))
    units = [X.shape[1], *params["hidden_layer_sizes"], 1 if outputs == 2 else outputs]
    return cuda_device.auto_choice(units, min(params["batch_size"], len(X)), len(X), dtype)


def _table(args, header, rows, notes):
    lines = [*header, "", "| workload | contestant | s/epoch | fastmlp cuda speed-up | target | "
             "test accuracy | cuda path |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, dtype, medians, accuracy, path in rows:
        for who, seconds in medians.items():
            cuda = medians.get("fastmlp cuda")
            ratio = f"{seconds / cuda:.2f}x" if cuda else "n/a"
            target = TARGETS.get((name[:2], who)) if dtype == "float32" else None
            goal = ""
            if target is not None and cuda:
                goal = f">= {target:g}x: {'met' if seconds / cuda >= target else 'NOT met'}"
            acc = f"{accuracy[who]:.4f}" if accuracy.get(who) is not None else ""
            where = path.get(who, "")
            lines.append(f"| {name}, {dtype} | {who} | {seconds:.4f} | {ratio} | {goal} | {acc} "
                         f"| {where} |")
    lines += ["", *notes, "", "speed-up: the contestant's seconds over fastmlp cuda's (above 1: "
              "fastmlp cuda is faster). Target on accuracy: fastmlp cuda within 0.5 percentage "
              "points of fastmlp cpu.", "", "cuda path, as the backend reports it: fused = the "
              "whole epoch in one kernel launch (the network fits in one block's shared memory); "
              "per-layer = 3L + 2 launches per mini-batch, each layer's products by cuBLAS "
              "(CuPy) or fastmlp's tiled kernel; persistent = the whole epoch in one cooperative "
              "launch of the grid-wide kernel, phases separated by grid barriers (--persistent)."]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", default="W1,W2,W4",
                        type=lambda s: [w for w in s.split(",") if w])
    parser.add_argument("--dtypes", default="float32,float64",
                        type=lambda s: [d for d in s.split(",") if d])
    parser.add_argument("--budget", type=float, default=float("inf"), metavar="SECONDS",
                        help="start no further repeat after this many seconds (every workload "
                             "still gets one)")
    parser.add_argument("--out", type=Path, default=BENCH / "GPU_RESULTS.md")
    parser.add_argument("--persistent", action="store_true",
                        help=f"add the contestant {PERSISTENT!r} on "
                             f"{', '.join(PERSISTENT_WORKLOADS)}: the persistent epoch kernel "
                             "forced (off by default in fastmlp until measured)")
    parser.add_argument("--smoke", action="store_true",
                        help="check the harness on tiny synthetic data, 1 epoch, 1 repeat, no "
                             "W4; runs under numba's CUDA simulator; its figures mean nothing")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    begun = time.perf_counter()

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
    if args.smoke:  # W4 is W1's path again: not worth the simulator's minute
        args.epochs, args.repeats = 1, 1
        args.workloads = [w for w in args.workloads if w != "W4"]

    shim = " (np.row_stack shimmed as np.vstack for numba-cuda)" if getattr(
        np, "row_stack", None) is np.vstack else ""
    header = [f"# GPU benchmark ({datetime.date.today()})", "",
              f"GPU: {gpu_name}; host: {_host()}; {args.epochs} epochs x up to {args.repeats} "
              "repeats, contestants alternated, medians.", "",
              "Versions: " + ", ".join(f"{name} {_version(name)}" for name in (
                  "numba", "numba-cuda", "numpy", "cupy-cuda12x", "cupy-cuda13x", "torch",
                  "scikit-learn")) + shim + ".",
              f"fastmlp's cuBLAS path: {'on (CuPy works)' if cuda_device.cupy() else 'off'}."]
    rows, notes = [], []
    if not have_torch:
        notes.append("PyTorch with CUDA is not installed: its rows are missing.")
    workloads = _data(args)
    for dtype in args.dtypes:
        for name, X, y, X_test, y_test, params in workloads.values():
            X = X.astype(dtype, copy=False)
            contestants = CONTESTANTS
            if args.persistent and name[:2] in PERSISTENT_WORKLOADS:
                contestants = (*CONTESTANTS, PERSISTENT)
            results = {who: [] for who in contestants}
            accuracy, path, failed, warmed = {}, {}, set(), set()
            for repeat in range(args.repeats):
                if repeat > 0 and time.perf_counter() - begun > args.budget:
                    notes.append(f"{name}, {dtype}: {repeat} repeat(s), the budget was spent.")
                    break
                shift = repeat % len(contestants)
                for who in contestants[shift:] + contestants[:shift]:  # alternate
                    if who in failed or (who.startswith("torch") and not have_torch):
                        continue
                    try:
                        times, acc, where = _run(who, X, y, X_test, y_test, params,
                                                 args.epochs, dtype, warmed)
                    except Exception as exc:  # noqa: BLE001 - report, go on with the others
                        traceback.print_exc()
                        failed.add(who)
                        notes.append(f"{name}, {dtype}: {who} failed: "
                                     f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                        continue
                    results[who] += times
                    accuracy[who] = acc
                    if where:
                        path[who] = where
            medians = {who: float(np.median(t)) for who, t in results.items() if t}
            rows.append((name, dtype, medians, accuracy, path))
            choice, why = _auto(X, params, dtype, y)
            notes.append(f"{name}, {dtype}: device='auto' picks {choice} ({why}).")
            text = _table(args, header, rows, notes)
            print(f"[{time.perf_counter() - begun:.0f} s] {name}, {dtype} done", flush=True)
    print(text)


if __name__ == "__main__":
    main()
