"""fastmlp on a local Dask cluster: grid search on joblib's dask backend, and data-parallel fit.

    python bench/dask_bench.py            # a few minutes on 2 cores; writes bench/DASK_RESULTS.md
    python bench/dask_bench.py --quick    # smoke run (~1 min), marked as such in the results

D1 times GridSearchCV over fastmlp with 2 dask workers (1 thread each) against the same search
with n_jobs=1 in this process, and checks both pick the same parameters with the same scores.
D2 trains one network with fastmlp.dask.fit (model averaging) on 2 workers and on 1 worker, and
with a plain in-process fit, and reports time and held-out accuracy. Every cluster listens on
127.0.0.1 only. Timings are wall-clock medians over --repeats runs, compile time excluded (every
process loads numba's cache first; the fresh worker's first fit is reported separately).
"""

import argparse
import datetime
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

BENCH = Path(__file__).absolute().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:  # benchmark the working tree's fastmlp
    sys.path.insert(0, str(ROOT))

import dask  # noqa: E402
import dask.array as da  # noqa: E402
import distributed  # noqa: E402
import joblib  # noqa: E402
import sklearn  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import fastmlp  # noqa: E402
import fastmlp.dask as fmd  # noqa: E402
from fastmlp import MLPClassifier  # noqa: E402

LOOPBACK_ONLY = dict(host="127.0.0.1", dashboard_address="127.0.0.1:0",
                     worker_dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
GRID = {"hidden_layer_sizes": [(64,), (128,)], "alpha": [1e-4, 1e-3],
        "learning_rate_init": [1e-3, 3e-3]}  # 8 configurations x 3 folds + refit
SMOKE = "\n\n**Smoke run (--quick): small sizes, one repeat; not figures to quote.**"
D2_PARAMS = dict(hidden_layer_sizes=(128, 64), batch_size=200, learning_rate_init=1e-3,
                 random_state=0)


def cluster(n_workers, threads):
    lc = LocalCluster(n_workers=n_workers, threads_per_worker=threads, processes=True,
                      **LOOPBACK_ONLY)
    return lc, Client(lc, set_as_default=False)


def data(n_train, n_test, n_features, seed=0):
    X, y = make_classification(n_samples=n_train + n_test, n_features=n_features,
                               n_informative=n_features // 2, n_classes=4, class_sep=1.0,
                               random_state=seed)
    X = X.astype(np.float32)
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def rotated(setups, repeats):
    """{name: (median seconds, last result)}, running the setups in turn and rotating their order
    on every repeat, so that a change in the machine's background load hits all of them alike."""
    names = list(setups)
    times = {name: [] for name in names}
    results = {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            results[name] = setups[name]()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(times[name])), results[name]) for name in names}


def _first_fit_seconds():
    """Seconds of a worker's first fastmlp fit (loading numba's cache), then of its second."""
    X = np.random.RandomState(0).rand(200, 8).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(int)
    out = []
    for _ in range(2):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X, y)
        out.append(time.perf_counter() - start)
    return out


def one_thread(fn):
    """fn run with every BLAS pool of this process limited to one thread."""
    def run():
        with threadpool_limits(limits=1):
            return fn()
    return run


def d1_grid_search(args, rows):
    X, y, _, _ = data(args.d1_rows, 0, 40)
    est = MLPClassifier(max_iter=args.d1_epochs, random_state=0)
    search = lambda n_jobs: GridSearchCV(est, GRID, cv=3, n_jobs=n_jobs).fit(X, y)  # noqa: E731
    est.fit(X[:500], y[:500])  # load the compiled kernels in this process

    lc, client = cluster(2, 1)
    with lc, client:
        first = client.run(_first_fit_seconds)

        def on_dask():
            with joblib.parallel_config(backend="dask", client=client):
                return search(-1)

        on_dask()  # warm-up: workers settled
        names = ["n_jobs=1, 2 BLAS threads", "n_jobs=1, 1 BLAS thread",
                 "dask backend, 2 workers x 1 thread"]
        results = rotated(dict(zip(names, [lambda: search(1), one_thread(lambda: search(1)),
                                           on_dask])), args.repeats)
    local_1, remote = results[names[1]][1], results[names[2]][1]
    # Compared with the n_jobs=1 run that has the workers' thread setting: float32 products can
    # differ in the last bit with the number of BLAS threads.
    same = (remote.best_params_ == local_1.best_params_ and
            np.array_equal(remote.cv_results_["mean_test_score"],
                           local_1.cv_results_["mean_test_score"]))
    fits = len(remote.cv_results_["params"]) * 3 + 1
    label = f"GridSearchCV, {fits} fits, {args.d1_rows:,} x 40, {args.d1_epochs} epochs"
    base = min(results[names[0]][0], results[names[1]][0])
    for name, (seconds, found) in results.items():
        note = f"best {found.best_score_:.4f}"
        if found is remote:
            note += f"; same parameters and scores as n_jobs=1 with 1 BLAS thread: {same}"
        rows.append(("D1", label, name, seconds, f"{base / seconds:.2f}x", note))
    return {"first_fit": first, "same": same}


def d2_data_parallel(args, rows):
    X, y, X_test, y_test = data(args.d2_rows, args.d2_rows // 10, 50, seed=1)
    classes = np.unique(y)
    label = f"one network (128, 64), {args.d2_rows:,} x 50"
    epochs = args.d2_epochs

    def plain():
        return MLPClassifier(max_iter=epochs, tol=0, **D2_PARAMS).fit(X, y)

    def on_dask(client, data, n_epochs, sync):
        return lambda: fmd.fit(MLPClassifier(tol=0, **D2_PARAMS), *data, classes=classes,
                               client=client, epochs=n_epochs, sync_every=sync)

    MLPClassifier(max_iter=1, **D2_PARAMS).fit(X[:1000], y[:1000])  # load compiled kernels
    one_lc, one = cluster(1, 1)
    two_lc, two = cluster(2, 1)
    with one_lc, one, two_lc, two, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Sending large graph": the data, once
        warnings.simplefilter("ignore", ConvergenceWarning)
        data_on = {}
        for client in (one, two):
            client.run(_first_fit_seconds)  # load compiled kernels on the workers
            data_on[client] = client.persist([
                da.from_array(X, chunks=(len(X) // 4, X.shape[1])),
                da.from_array(y, chunks=len(y) // 4)])
        setups = {
            f"fit in this process, 2 BLAS threads, {epochs} epochs": plain,
            f"fit in this process, 1 BLAS thread, {epochs} epochs": one_thread(plain),
            f"fastmlp.dask.fit, 1 worker x 1 thread, sync every epoch, {epochs} epochs":
                on_dask(one, data_on[one], epochs, "epoch"),
            f"fastmlp.dask.fit, 2 workers x 1 thread, sync every epoch, {epochs} epochs":
                on_dask(two, data_on[two], epochs, "epoch"),
            f"fastmlp.dask.fit, 2 workers x 1 thread, sync every {args.sync_k} batches, "
            f"{epochs} epochs": on_dask(two, data_on[two], epochs, args.sync_k),
            f"fastmlp.dask.fit, 2 workers x 1 thread, sync every epoch, {2 * epochs} epochs":
                on_dask(two, data_on[two], 2 * epochs, "epoch"),
        }
        results = rotated(setups, args.repeats)
    base = min(seconds for seconds, _ in list(results.values())[:2])  # the in-process fits
    for name, (seconds, model) in results.items():
        rows.append(("D2", label, name, seconds, f"{base / seconds:.2f}x",
                     f"test acc {model.score(X_test, y_test):.4f}, "
                     f"final loss {model.loss_curve_[-1]:.4f}"))


def _busy_seconds():
    """CPU seconds the whole machine has spent busy since boot (from /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    """CPU seconds used by this process and its finished children (the workers, once closed)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine():
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown"
    return cpu, os.cpu_count(), os.getloadavg()


def write(args, rows, extra, started, load_before, others):
    cpu, cores, load_after = machine()
    header = ("| | workload | setup | seconds | speed-up | result |\n"
              "| --- | --- | --- | --- | --- | --- |")
    table = "\n".join(f"| {w} | {label} | {setup} | {s:.2f} | {x} | {res} |"
                      for w, label, setup, s, x, res in rows)
    first = ", ".join(f"{a:.2f} s then {b:.3f} s" for a, b in extra["first_fit"].values())
    quick, smoke = (" --quick", SMOKE) if args.quick else ("", "")
    versions = ", ".join(f"{name} {version}" for name, version in [
        ("Python", platform.python_version()), ("fastmlp", fastmlp.__version__),
        ("numpy", np.__version__), ("scikit-learn", sklearn.__version__),
        ("dask", dask.__version__), ("distributed", distributed.__version__),
        ("joblib", joblib.__version__)])
    text = f"""# fastmlp on Dask: benchmark results

Written by `python bench/dask_bench.py{quick}` on {started:%Y-%m-%d %H:%M} UTC.{smoke}

- Machine: {cpu}, {cores} cores, shared with other work. Load average {load_before[0]:.2f} before
  the run, {load_after[0]:.2f} after.
- {others}
- Versions: {versions}.
- Clusters: `LocalCluster(processes=True)` on 127.0.0.1. Each setup ran {args.repeats} time(s),
  in turn with the others of its workload (order rotated each time); times are medians, with
  compiled code already in numba's cache. Speed-up is against the faster of the two in-process
  configurations of the same workload.

{header}
{table}

- First fastmlp fit on each fresh worker process (numba's cache loaded, nothing compiled), then
  the second fit: {first}.
- D1: each fit runs as one task on a worker with one BLAS thread (Dask's nanny starts workers
  with `OPENBLAS_NUM_THREADS=1`), so two fits run at once on the 2 cores.
- D2: `fastmlp.dask.fit` is local SGD (model averaging), not the single-process algorithm: with
  2 replicas each epoch takes half as many sequential steps per replica, so an epoch of it
  reaches less than an epoch of a single-process fit; the last row gives it twice the epochs.
  The shards are built once; every round ships the model (parameters and optimizer state) to
  each worker and back.
"""
    args.out.write_text(text)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repeat")
    parser.add_argument("--repeats", type=int, default=None, help="runs per setup (default 3)")
    parser.add_argument("--out", type=Path, default=BENCH / "DASK_RESULTS.md")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.d1_rows, args.d1_epochs = (4_000, 5) if args.quick else (50_000, 10)
    args.d2_rows, args.d2_epochs = (20_000, 3) if args.quick else (300_000, 8)
    args.sync_k = 50
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    busy, own, clock = _busy_seconds(), _own_seconds(), time.perf_counter()
    rows = []
    extra = d1_grid_search(args, rows)
    d2_data_parallel(args, rows)
    others = "Other processes' CPU use during the run: not measurable here."
    if busy is not None:
        # Everything the machine did that this benchmark (and its closed workers) did not.
        other = max(0.0, _busy_seconds() - busy - (_own_seconds() - own))
        share = other / ((time.perf_counter() - clock) * (os.cpu_count() or 1))
        others = (f"Other processes used {other:.0f} CPU-seconds during the run, {share:.0%} of "
                  "the machine's capacity:\n  the timings are as clean as that is small.")
    text = write(args, rows, extra, started, load_before, others)
    print(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
