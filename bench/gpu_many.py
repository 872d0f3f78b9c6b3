"""Many small networks per launch on the GPU (issue #24): seconds per epoch for a whole group.

    python bench/gpu_many.py                      # 128 W2-sized models, fastmlp and torch
    python bench/gpu_many.py --models 32 --epochs 3 --contestants fastmlp
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_many.py --smoke   # the harness only

The group: --models networks of one shape (default W2's: 100,000 x 20 make_classification
rows, 3 classes, 64-32-3 ReLU, softmax + log-loss, batch 32, Adam, float32) with their own
starting parameters and learning rates (log-spaced, as a search would try), in --orders
distinct batch orders (models m and m + orders share one), trained on the same data.

Contestants:
- "fastmlp": the CUDA backend's train_epoch_many, one launch per epoch for the whole group
  (one block per model, each block the persistent epoch kernel); the epoch's orders are made and
  copied to the device before the clock starts. Also reported: one model alone through
  train_epoch, and what the group would take trained one model after another (x models).
- "torch" (when torch with CUDA is importable): the models as batched layers (torch.baddbmm
  over a leading model axis), the whole step (gather by a static (models, batch) index tensor,
  forward, summed per-model mean losses, backward by autograd.grad, a hand-written Adam with
  per-model learning rates and a device step counter) captured in ONE CUDA graph replayed per
  mini-batch.

Reports the median seconds per epoch over --epochs epochs after one warm-up epoch (compiles,
graph capture). UNMEASURED so far: written without a GPU; its first GPU run is
bench/gpu_check.sh's step (e).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

CONTESTANTS = ("fastmlp", "torch")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=128)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--hidden", default=(64, 32),
                        type=lambda s: tuple(int(u) for u in s.split(",") if u),
                        help="hidden layer sizes, comma-separated (default 64,32)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--epochs", type=int, default=5,
                        help="timed epochs, after one warm-up epoch (default 5)")
    parser.add_argument("--orders", type=int, default=8,
                        help="distinct batch orders in the group (default 8)")
    parser.add_argument("--contestants", default=CONTESTANTS,
                        type=lambda s: tuple(c for c in s.split(",") if c))
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the result lines to this file")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes (3 models, 40 x 6 rows, hidden 4, batch 8, 1 timed "
                             "epoch) to check the harness, e.g. under numba's CUDA simulator; "
                             "its figures mean nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.rows, args.features, args.hidden = 3, 40, 6, (4,)
        args.batch, args.epochs, args.orders = 8, 1, 2
    unknown = set(args.contestants) - set(CONTESTANTS)
    if unknown:
        parser.error(f"unknown contestants {sorted(unknown)}; choose from {CONTESTANTS}")
    for name in ("models", "rows", "features", "batch", "epochs", "orders"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.classes < 3 or not args.hidden:
        parser.error("--classes must be at least 3 (softmax) and --hidden name a layer")
    return args


def problem(args):
    """(X (N, F), one-hot Y (N, K), layer sizes, initial params (M, P), learning rates (M,),
    order_of (M,)): the same for every contestant."""
    from fastmlp.datasets import make_tabular
    from fastmlp.layout import Layout

    X, y = make_tabular(args.rows, args.features, args.classes, dtype=args.dtype)
    Y = np.eye(args.classes, dtype=args.dtype)[y]
    sizes = (args.features, *args.hidden, args.classes)
    layout = Layout(sizes)
    rng = np.random.RandomState(0)
    params = np.zeros((args.models, layout.n_params), dtype=args.dtype)
    for fan_in, fan_out, w_at, _ in layout.table:  # Glorot-uniform weights, zero biases
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        params[:, w_at:w_at + fan_in * fan_out] = rng.uniform(
            -bound, bound, (args.models, fan_in * fan_out))
    rates = np.geomspace(1e-4, 1e-2, args.models)
    order_of = np.arange(args.models, dtype=np.int64) % args.orders
    return X, Y, sizes, layout, params, rates, order_of


def epoch_orders(args, epoch):
    """(orders (G, N) int64) of one epoch: one permutation per distinct order."""
    return np.stack([np.random.RandomState(1000 * epoch + g).permutation(args.rows)
                     for g in range(args.orders)]).astype(np.int64)


def fastmlp_group(args, X, Y, layout, params, rates, order_of):
    """{label: (median seconds per epoch, models)} of train_epoch_many, of one model alone
    through train_epoch, and of the group trained one model after another (estimated)."""
    from fastmlp import cuda as gpu
    from fastmlp import ops
    from fastmlp.bundles import Networks, OptimizerSteps, TrainState
    from fastmlp.cuda import launch
    from fastmlp.training import as_features

    M = args.models
    features = as_features(X)
    features = type(features)(*(gpu.to_device(a) for a in features))
    Yd, sw = gpu.to_device(Y), gpu.to_device(np.ones(args.rows, dtype=args.dtype))
    states = TrainState(gpu.to_device(params), gpu.to_device(np.zeros_like(params)),
                        gpu.to_device(np.zeros_like(params)), gpu.to_device(np.zeros_like(params)))
    codes = lambda value: np.full(M, value, dtype=np.int64)  # noqa: E731
    nets = Networks(gpu.to_device(layout.table), codes(ops.ACTIVATION["relu"].code),
                    codes(ops.ACTIVATION["softmax"].code), codes(ops.LOSS["log_loss"].code),
                    np.full(M, 1e-4), np.zeros(M), codes(0))
    opts = OptimizerSteps(codes(ops.OPTIMIZER["adam"].code), rates, np.zeros(M),
                          np.zeros(M, dtype=bool), np.full(M, 0.9), np.full(M, 0.999),
                          np.full(M, 1e-8), np.zeros(M), np.zeros(M), codes(0))
    active = np.arange(M, dtype=np.int64)
    times, path = [], None
    for epoch in range(args.epochs + 1):  # the first is a warm-up (compiles)
        orders = gpu.to_device(epoch_orders(args, epoch))
        start = time.perf_counter()
        _, steps = gpu.train_epoch_many(states, features, Yd, sw, orders, order_of, active,
                                        args.batch, nets, opts)  # returns host arrays: synced
        times.append(time.perf_counter() - start)
        path = launch.LAST_EPOCH["path"]
        opts = opts._replace(step=steps)
    one = TrainState(*(a[0] for a in states))
    net, opt = launch.model_of(nets, opts, 0)
    alone = []
    for epoch in range(min(args.epochs, 3) + 1):
        order = gpu.to_device(epoch_orders(args, epoch)[0])
        start = time.perf_counter()
        gpu.train_epoch(one, features, Yd, sw, order, args.batch, net, opt)
        alone.append(time.perf_counter() - start)
    median_alone = float(np.median(alone[1:]))
    return {f"fastmlp train_epoch_many, {M} models ({path})": (float(np.median(times[1:])), M),
            f"fastmlp train_epoch, 1 model ({launch.LAST_EPOCH['path']})": (median_alone, 1),
            f"fastmlp train_epoch one model after another, x {M} (estimate)": (
                M * median_alone, M)}


def torch_group(args, X, Y, sizes, layout, params, rates, order_of):
    """{label: (median seconds per epoch, models)} of the batched-bmm PyTorch group, each step
    one CUDA graph replay."""
    import torch

    dev, dt = torch.device("cuda"), getattr(torch, args.dtype)
    M, B = args.models, args.batch
    Xd, Yd = torch.as_tensor(X, device=dev), torch.as_tensor(Y, device=dev)
    weights, biases = [], []
    for fan_in, fan_out, w_at, b_at in layout.table:  # the same start as fastmlp's
        weights.append(torch.as_tensor(params[:, w_at:w_at + fan_in * fan_out].reshape(
            M, fan_in, fan_out), device=dev).clone().requires_grad_())
        biases.append(torch.as_tensor(params[:, b_at:b_at + fan_out].reshape(M, 1, fan_out),
                                      device=dev).clone().requires_grad_())
    tensors = weights + biases
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in tensors]
    lr = torch.as_tensor(rates, device=dev, dtype=dt).reshape(M, 1, 1)
    t = torch.zeros((), device=dev, dtype=dt)  # Adam's step counter, on the device
    idx = torch.zeros((M, B), dtype=torch.long, device=dev)  # static: each model's batch rows
    alpha, beta_1, beta_2, eps = 1e-4, 0.9, 0.999, 1e-8

    def step():
        A = Xd[idx]  # (M, B, F)
        for i, (W, b) in enumerate(zip(weights, biases)):
            A = torch.baddbmm(b, A, W)
            if i < len(weights) - 1:
                A = torch.relu(A)
        log_p = torch.log_softmax(A, dim=2)
        loss = -(log_p * Yd[idx]).sum() / B  # the sum over models of each model's mean loss
        loss = loss + 0.5 * alpha / B * sum((W * W).sum() for W in weights)
        grads = torch.autograd.grad(loss, tensors)
        with torch.no_grad():
            t.add_(1)
            size = lr * torch.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
            for p, g, (m, v) in zip(tensors, grads, moments):
                m.mul_(beta_1).add_(g, alpha=1 - beta_1)
                v.mul_(beta_2).addcmul_(g, g, value=1 - beta_2)
                p.sub_(size * m / (torch.sqrt(v) + eps))

    side = torch.cuda.Stream()  # warm up on a side stream before capture, as documented
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    of = torch.as_tensor(order_of, device=dev)
    times = []
    for epoch in range(args.epochs + 1):  # the first is a warm-up
        orders = torch.as_tensor(epoch_orders(args, epoch), device=dev)[of]  # (M, N)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, args.rows - B + 1, B):  # full batches only (100,000 / 32 is exact)
            idx.copy_(orders[:, i:i + B])
            graph.replay()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {f"torch bmm + one CUDA graph per step, {M} models": (float(np.median(times[1:])), M)}


def main(argv=None):
    args = parse_args(argv)
    from numba import cuda

    from fastmlp.cuda import device

    if not cuda.is_available():
        raise SystemExit("no usable NVIDIA GPU (nor numba's CUDA simulator): this benchmark "
                         "needs one")
    simulated = device.simulator()
    if simulated and not args.smoke:
        raise SystemExit("numba's CUDA simulator is on: only --smoke runs there")
    gpu_name = "numba CUDA simulator (SMOKE: figures mean nothing)" if simulated else (
        cuda.get_current_device().name)
    if isinstance(gpu_name, bytes):
        gpu_name = gpu_name.decode()
    X, Y, sizes, layout, params, rates, order_of = problem(args)
    lines = [f"gpu_many on {gpu_name}: {args.models} models {'-'.join(map(str, sizes))}, "
             f"{args.rows} x {args.features} rows, batch {args.batch}, adam, {args.dtype}; "
             f"median s/epoch over {args.epochs} epochs after a warm-up"]
    results = {}
    if "fastmlp" in args.contestants:
        results.update(fastmlp_group(args, X, Y, layout, params, rates, order_of))
    if "torch" in args.contestants:
        try:
            import torch

            usable = torch.cuda.is_available() and not simulated
        except ImportError:
            usable = False
        if usable:
            results.update(torch_group(args, X, Y, sizes, layout, params, rates, order_of))
        else:
            lines.append("torch: skipped (no CUDA build of torch importable, or the simulator)")
    for label, (seconds, models) in results.items():
        lines.append(f"  {label}: {seconds:.4f} s/epoch ({seconds / models * 1e3:.3f} ms per "
                     "model-epoch)")
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
