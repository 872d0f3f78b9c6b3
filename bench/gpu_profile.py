"""W2-sized launches of the one-launch epoch kernel, for Nsight Compute (bench/gpu_check.sh).

    ncu --kernel-name regex:train_epoch_fused --launch-skip 1 --launch-count 2 \
        python bench/gpu_profile.py
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_profile.py 40     # a smoke run: 40 rows, 3 networks

Issue #23 asks for the fused kernel to be profiled before it is tuned. After a warm-up epoch that
compiles the kernel (launch 0), this runs the two launches worth profiling: one W2 fit (20-64-32-3,
adam, batch 32, float32) for one epoch of 20,000 rows (625 mini-batches; one block), then the
same network as a group of 24 fits with different alphas (fastmlp.fit_many: one launch of 24
blocks, one per network). It prints the path each epoch took, the wall time and the time per
mini-batch (FASTMLP_FUSED_THREADS sets the kernel's block size: bench/gpu_check.sh runs it at
256 and at 512 threads), and exits 1
when an epoch did not take the fused path (the profile would be of the wrong kernel). Needs a
GPU (or the simulator, with a row count as the argument).
"""

import sys
import time
import warnings

from sklearn.base import clone

from fastmlp import MLPClassifier, fit_many
from fastmlp.cuda import fused, launch
from fastmlp.datasets import make_tabular

W2 = dict(hidden_layer_sizes=(64, 32), activation="relu", solver="adam", batch_size=32,
          learning_rate_init=1e-3, alpha=1e-4, tol=0.0, n_iter_no_change=10**6, random_state=0,
          device="cuda", dtype="float32")
ROWS = 20_000


def timed(label, train, batches):
    launch.LAST_EPOCH.update(path=None, products=())
    start = time.perf_counter()
    train()
    seconds = time.perf_counter() - start
    path = launch.LAST_EPOCH["path"] or "none"
    print(f"{label}: path {path}, {seconds:.3f} s, {seconds / batches * 1e6:.1f} us per batch "
          f"(block of {fused.THREADS} threads)", flush=True)
    return path.startswith("fused")


def main(argv):
    warnings.simplefilter("ignore")  # one epoch does not converge
    X, y = make_tabular(int(argv[0]) if argv else ROWS, 20, 3)
    one = MLPClassifier(**W2, max_iter=1)
    size = 3 if argv else 24  # the simulator runs every thread in Python: a smoke run's group
    group = [clone(one).set_params(alpha=10.0 ** (-6 + k / 4)) for k in range(size)]
    batches = -(-len(X) // W2["batch_size"])
    ok = timed("warm-up (compiles)", lambda: clone(one).fit(X[:64], y[:64]), 2)
    ok &= timed("one W2 network, one epoch (launch 1)", lambda: clone(one).fit(X, y), batches)
    ok &= timed(f"{size} W2 networks, one epoch (launch 2)", lambda: fit_many(group, X, y),
                batches)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
