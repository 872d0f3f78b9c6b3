"""fastmlp against scikit-learn's MLP and PyTorch (CPU), in one process, on the same data.

    python bench/compare.py                 # full run: every workload, writes bench/RESULTS.md
    python bench/compare.py --quick         # smoke run: small subsets, 1 repeat (~30 s idle)
    python bench/compare.py --workloads W1,W4 --repeats 5 --epochs 3

Workloads (see bench/README.md): W1 wide (Fashion-MNIST, s/epoch + accuracy), W2 small/tabular
(s/epoch), W3 defaults on digits (fit time, and first fit in a fresh process), W4 inference
(predict_proba rows/s), W5 GridSearchCV on digits, W6 time-to-accuracy on Fashion-MNIST, plus the
machine's float32 matmul peak, against which W1's training throughput is compared; W7 cold start
(whole fresh processes with an empty and a warm compiled-code cache, bench/coldstart.py).

Contestants run one after another, in an order that rotates with each repeat, and every number
reported is a median. Every contestant is warmed up (compiled, first-call allocations) before it
is timed, except where the first call is what is measured (W3/W5 fresh process).
scikit-learn is timed twice, at its default BLAS threads and on one thread: on a busy machine its
default threads can make it several times slower, so the table shows its faster setting, and the
notes say which it was and what the other gave.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SklearnMLP

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:  # benchmark the working tree's fastmlp
    sys.path.insert(0, str(ROOT))

FAST, SKL, TORCH = "fastmlp", "sklearn", "torch"
# scikit-learn's two timings; alternate() reports the faster as SKL (see SKLEARN_THREADS).
SKL_DEFAULT, SKL_ONE = "sklearn, default threads", "sklearn, 1 thread"
SKLEARN_THREADS = []  # (workload, setting shown, {setting: median}) for each alternate() call
CURRENT = {"workload": ""}  # the workload main() is running, for SKLEARN_THREADS
ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")

# The shared network settings (scikit-learn's parameter names; torch gets the same values).
W1_PARAMS = dict(hidden_layer_sizes=(256, 128), activation="relu", solver="adam",
                 learning_rate_init=1e-3, batch_size=256, alpha=1e-4)
W2_PARAMS = dict(hidden_layer_sizes=(64, 32), activation="relu", solver="adam",
                 learning_rate_init=1e-3, batch_size=32, alpha=1e-4)
W5_GRID = {"hidden_layer_sizes": [(64,), (128,), (64, 32)], "alpha": [1e-4, 1e-2],
           "learning_rate_init": [1e-3, 3e-3]}  # 12 configurations


# ----------------------------------------------------------------------------------- data
def load_fashion(quick=False):
    """Fashion-MNIST as float32 in [0, 1]: (X_train, y_train, X_test, y_test, source), read by
    fastmlp.datasets (Debian's dataset-fashion-mnist package, $FASTMLP_FASHION_MNIST or
    $FASHION_MNIST_DIR)."""
    from fastmlp.datasets import load_fashion_mnist

    home = os.environ.get("FASHION_MNIST_DIR")
    X_tr, y_tr, X_te, y_te = load_fashion_mnist(home, subset="all")
    if quick:
        X_tr, y_tr, X_te, y_te = X_tr[:6000], y_tr[:6000], X_te[:2000], y_te[:2000]
    return X_tr, y_tr, X_te, y_te, "fastmlp.datasets.load_fashion_mnist()"


def load_tabular(n_rows):
    X, y = make_classification(n_samples=n_rows, n_features=20, n_informative=12, n_redundant=4,
                               n_classes=3, random_state=0)
    return np.ascontiguousarray(X, dtype=np.float32), y.astype(np.int64)


def load_digits_scaled():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


# ------------------------------------------------------------------------------ contestants
class SklearnAPITrainer:
    """One model of fastmlp or scikit-learn, trained epoch by epoch with partial_fit."""

    def __init__(self, cls, params, seed, X, y, classes):
        self.model, self.X, self.y, self.classes = cls(random_state=seed, **params), X, y, classes

    def epoch(self):
        if self.classes is not None:
            self.model.partial_fit(self.X, self.y, classes=self.classes)
            self.classes = None
        else:
            self.model.partial_fit(self.X, self.y)

    def fit_epochs(self, epochs):
        """A whole fit(max_iter=epochs) that cannot stop early (for --epoch-mode fit)."""
        self.model.set_params(max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1)
        self.model.fit(self.X, self.y)

    def proba(self, X):
        return self.model.predict_proba(X)


class TorchTrainer:
    """The same network in PyTorch eager mode, trained by a plain loop (no DataLoader).

    Initialisation is scikit-learn's (Glorot uniform, bound sqrt(6/(fan_in+fan_out)) for weights
    and biases); scikit-learn's L2 term alpha/2*||W||^2/batch becomes Adam's coupled weight decay
    alpha/batch_size on the weights only (biases are not penalised in scikit-learn either).
    """

    ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "logistic": "Sigmoid", "identity": "Identity"}

    def __init__(self, params, seed, X, y, n_classes):
        import torch
        self.torch = torch
        torch.manual_seed(seed)
        sizes = [X.shape[1], *params["hidden_layer_sizes"], n_classes]
        layers, factor = [], 2.0 if params.get("activation") == "logistic" else 6.0
        act = getattr(torch.nn, self.ACTIVATIONS[params.get("activation", "relu")])
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            lin = torch.nn.Linear(fan_in, fan_out)
            bound = float(np.sqrt(factor / (fan_in + fan_out)))
            torch.nn.init.uniform_(lin.weight, -bound, bound)
            torch.nn.init.uniform_(lin.bias, -bound, bound)
            layers += [lin] if i == len(sizes) - 2 else [lin, act()]
        self.net = torch.nn.Sequential(*layers)
        self.batch = params["batch_size"]
        weights = [m.weight for m in self.net if isinstance(m, torch.nn.Linear)]
        biases = [m.bias for m in self.net if isinstance(m, torch.nn.Linear)]
        groups = [{"params": weights, "weight_decay": params.get("alpha", 1e-4) / self.batch},
                  {"params": biases, "weight_decay": 0.0}]
        adam = dict(lr=params["learning_rate_init"], eps=params.get("epsilon", 1e-8),
                    betas=(params.get("beta_1", 0.9), params.get("beta_2", 0.999)))
        try:  # the fastest CPU implementation; the default per-tensor loop is ~2x slower
            self.opt = torch.optim.Adam(groups, fused=True, **adam)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.Adam(groups, foreach=True, **adam)
        self.loss = torch.nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.gen = torch.Generator().manual_seed(seed)

    def epoch(self):
        perm = self.torch.randperm(len(self.X), generator=self.gen)
        for start in range(0, len(perm), self.batch):
            rows = perm[start:start + self.batch]
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.net(self.X[rows]), self.y[rows]).backward()
            self.opt.step()

    def fit_epochs(self, epochs):
        for _ in range(epochs):
            self.epoch()

    def proba(self, X):
        with self.torch.inference_mode():
            return self.torch.softmax(self.net(self.torch.from_numpy(X)), dim=1).numpy()


def fastmlp_estimator(fake, **params):
    """fastmlp's classifier, float32 on the CPU (scikit-learn's under --fake-fastmlp)."""
    if fake:
        return SklearnMLP(**params)
    from fastmlp import MLPClassifier
    cpu = {"device": "cpu"} if "device" in MLPClassifier().get_params() else {}
    return MLPClassifier(dtype="float32", **cpu, **params)


def make_contestants(args):
    """{name: factory(params, seed, X, y, classes) -> trainer} for the contestants available."""
    notes, contestants = [], {}
    if args.fake_fastmlp:
        notes.append("FAKE fastmlp: the 'fastmlp' contestant is scikit-learn itself "
                     "(--fake-fastmlp, harness development only; its numbers mean nothing)")
    else:
        try:
            fastmlp_estimator(False)
        except Exception as exc:  # noqa: BLE001 - report any import failure
            sys.exit(f"cannot import fastmlp ({exc!r}); fix it, or test the harness with "
                     "--fake-fastmlp")
    fast_cls = lambda **kw: fastmlp_estimator(args.fake_fastmlp, **kw)  # noqa: E731
    contestants[FAST] = lambda p, s, X, y, c: SklearnAPITrainer(fast_cls, p, s, X, y, c)
    contestants[SKL] = lambda p, s, X, y, c: SklearnAPITrainer(SklearnMLP, p, s, X, y, c)
    if args.no_torch:
        notes.append("torch skipped (--no-torch)")
    else:
        try:
            import torch
            torch.set_num_threads(args.threads)
            contestants[TORCH] = lambda p, s, X, y, c: TorchTrainer(p, s, X, y, len(c))
        except ImportError:
            notes.append("torch is not installed: torch contestants skipped "
                         "(pip install torch==2.13.0, the CPU wheel)")
    return contestants, notes


# ----------------------------------------------------------------------------------- timing
def alternate(runners, repeats):
    """Call runners[name](repeat) for every repeat, rotating the order of names each repeat.

    Each runner returns (list of timings in seconds, dict of extra numbers). Returns
    {name: {"median": median timing, "times": all timings, "extra": [extra dicts]}}.
    scikit-learn's runner runs at its default BLAS threads and on one thread; its entry is the
    setting with the lower median, recorded in SKLEARN_THREADS.
    """
    runners = dict(runners)
    if SKL in runners:
        runners[SKL_DEFAULT] = runners.pop(SKL)
        runners[SKL_ONE] = one_thread(runners[SKL_DEFAULT])
    names = list(runners)
    results = {name: {"times": [], "extra": []} for name in names}
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            times, extra = runners[name](rep)
            results[name]["times"] += list(times)
            results[name]["extra"].append(extra)
    for res in results.values():
        res["median"] = float(np.median(res["times"]))
    if SKL_DEFAULT in results:
        both = {"default threads": results.pop(SKL_DEFAULT), "1 thread": results.pop(SKL_ONE)}
        shown = min(both, key=lambda setting: both[setting]["median"])
        results[SKL] = both[shown]
        SKLEARN_THREADS.append((CURRENT["workload"], shown,
                                {setting: r["median"] for setting, r in both.items()}))
    return results


def one_thread(run):
    """`run` with every BLAS/OpenMP pool limited to one thread."""
    def limited(rep):
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency
        with threadpool_limits(limits=1):
            return run(rep)
    return limited


def sklearn_thread_notes():
    """One line per timing of scikit-learn: the thread setting shown and both medians."""
    return [f"{workload}: scikit-learn shown at its faster setting, {shown} ("
            + ", ".join(f"{setting} {fmt(median)} s" for setting, median in medians.items())
            + ")" for workload, shown, medians in SKLEARN_THREADS]


def median_extra(res, key):
    return float(np.median([e[key] for e in res["extra"]]))


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def warm_up(contestants, params, X, y, classes, mode="partial_fit"):
    """Compile / allocate once on a small slice so the timed runs measure steady state."""
    for factory in contestants.values():
        trainer = factory(params, 0, X[:512], y[:512], classes)
        trainer.fit_epochs(1) if mode == "fit" else trainer.epoch()


def matmul_peak(n=2048, runs=10):
    """Median float32 GFLOP/s of an n x n numpy matmul."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    times = [timed(lambda: a @ b) for _ in range(runs)]
    return 2.0 * n ** 3 / float(np.median(times)) / 1e9


def n_weights(n_in, hidden, n_out):
    sizes = [n_in, *hidden, n_out]
    return sum(i * o for i, o in zip(sizes[:-1], sizes[1:]))


# -------------------------------------------------------------------------------- results
@dataclass
class Row:
    """One line of the table: a metric, each contestant's value, fastmlp's speed-ups.

    goals ({"vs sklearn": 2.7, ...}) are required speed-ups; they fill in target and met. Rows
    whose target is not a speed-up give target and met themselves.
    """

    workload: str
    metric: str
    values: dict  # contestant -> number (None: not reached)
    speedups: dict = field(default_factory=dict)  # "vs sklearn" -> fastmlp's speed-up
    goals: dict = field(default_factory=dict)
    target: str = ""
    met: bool | None = None
    note: str = ""

    def __post_init__(self):
        if self.goals and not self.target:
            self.target = ", ".join(f">={g:g}x {k[3:]}" for k, g in self.goals.items())
        if self.goals and self.met is None:
            checked = [self.speedups[k] >= g for k, g in self.goals.items() if k in self.speedups]
            self.met = all(checked) if checked else None


def speedup(values, lower_is_better=True):
    out = {}
    for other in (SKL, TORCH):
        a, b = values.get(FAST), values.get(other)
        if a and b:
            out[f"vs {other}"] = b / a if lower_is_better else a / b
    return out


# ------------------------------------------------------------------------------- workloads
def epochs_runner(factory, params, X, y, classes, epochs, mode, X_test=None, y_test=None):
    """A runner for alternate(): trains a fresh model for `epochs` epochs, timing each one."""
    def run(rep):
        trainer = factory(params, rep, X, y, classes)
        if mode == "fit":
            times = [timed(lambda: trainer.fit_epochs(epochs)) / epochs] * epochs
        else:
            times = [timed(trainer.epoch) for _ in range(epochs)]
        extra = {}
        if X_test is not None:
            extra["accuracy"] = float(np.mean(trainer.proba(X_test).argmax(1) == y_test))
        return times, extra
    return run


def w1_wide(args, contestants, data, peak):
    X, y, X_te, y_te, source = data
    classes = np.unique(y)
    warm_up(contestants, W1_PARAMS, X, y, classes, args.epoch_mode)
    res = alternate({name: epochs_runner(f, W1_PARAMS, X, y, classes, args.epochs,
                                         args.epoch_mode, X_te, y_te)
                     for name, f in contestants.items()}, args.repeats)
    sec = {n: r["median"] for n, r in res.items()}
    ups = speedup(sec)
    weights = n_weights(X.shape[1], W1_PARAMS["hidden_layer_sizes"], len(classes))
    flops = 6.0 * len(X) * weights
    frac = flops / sec[FAST] / 1e9 / peak
    # No contestant computes the input layer's gradient, so the work really done is smaller:
    first = X.shape[1] * W1_PARAMS["hidden_layer_sizes"][0]
    needed = 2.0 * len(X) * (3 * weights - first) / 1e9
    label = f"W1 wide ({len(X)}x{X.shape[1]})"
    return [
        Row(label, "s/epoch", sec, ups, {"vs sklearn": 2.7, "vs torch": 1.8},
            note=f"data: {source}; epochs timed by {args.epoch_mode}"),
        Row(label, f"test accuracy after {args.epochs} epochs",
            {n: median_extra(r, "accuracy") for n, r in res.items()}),
        Row(label, "training GFLOP/s (6*n*weights/epoch)",
            {n: flops / s / 1e9 for n, s in sec.items()}),
        Row(label, "fastmlp fraction of matmul peak", {FAST: frac}, target=">=75%",
            met=frac >= 0.75,
            note=f"numpy float32 matmul peak {peak:.1f} GFLOP/s; 6*n*weights = "
                 f"{flops / 1e9:.1f} GFLOP/epoch, but without the input layer's gradient "
                 f"(computed by no contestant) an epoch is {needed:.1f} GFLOP, "
                 f"{needed / peak:.3f} s at the peak"),
    ]


def w2_tabular(args, contestants):
    X, y = load_tabular(10_000 if args.quick else 100_000)
    classes = np.unique(y)
    warm_up(contestants, W2_PARAMS, X, y, classes, args.epoch_mode)
    res = alternate({name: epochs_runner(f, W2_PARAMS, X, y, classes, args.epochs,
                                         args.epoch_mode)
                     for name, f in contestants.items()}, args.repeats)
    sec = {n: r["median"] for n, r in res.items()}
    ups = speedup(sec)
    return [Row(f"W2 tabular ({len(X)}x{X.shape[1]})", "s/epoch", sec, ups,
                {"vs sklearn": 40, "vs torch": 80})]


def w7_cold_start(args):
    """Whole fresh processes timed from outside (bench/coldstart.py): scikit-learn, fastmlp as
    pip install . leaves it, with an empty compiled-code cache and with a warm one; the first fit
    of a new configuration; the demo's compile line. Targets: issue #20."""
    import coldstart

    report = coldstart.measure(rounds=args.repeats, demo=not args.quick)
    median = report["medians_s"]
    sk = median["scikit-learn"]
    rows = []
    for name, limit in (("fastmlp, after pip install .", 1.2), ("fastmlp, warm cache", 1.2),
                        ("fastmlp, empty cache", None)):
        ratio = median[name] / sk
        rows.append(Row("W7 cold start (digits, 5 epochs)", f"fresh process s, {name[9:]}",
                        {FAST: median[name], SKL: sk}, {"vs sklearn": sk / median[name]},
                        target=f"<= {limit}x sklearn's" if limit else "",
                        met=ratio <= limit if limit else None,
                        note=f"import + fit in a new python, {args.repeats} alternated rounds: "
                             f"{report['times_s'][name]}"))
    new = report["new_configuration"]
    rows.append(Row("W7 cold start (digits, 5 epochs)",
                    "compile s, first gelu/adamw/dropout/float64 fit (installed)",
                    {FAST: new["compile_s"]}, target="<= 1.5 s", met=new["compile_s"] <= 1.5,
                    note=f"that fit took {new['fit_s']} s in all"))
    for where, demo in report["demo"].items():
        rows.append(Row("W7 cold start (digits, 5 epochs)",
                        f"python -m fastmlp.demo compile line s ({where})",
                        {FAST: demo["compile_s"]}, target="< 1 s" if "pip" in where else "",
                        met=demo["compile_s"] < 1 if "pip" in where else None,
                        note=f"whole demo {demo['run_s']} s"))
    return rows


CHILD_CODE = ("import sys; sys.path[:0] = [{bench!r}, {root!r}]; import compare; "
              "compare.child({workload!r}, {fake!r}, {quick!r})")


def child(workload, fake, quick):
    """Runs in a fresh process: import fastmlp, do the workload once, print JSON timings."""
    warnings.simplefilter("ignore", ConvergenceWarning)
    start = time.perf_counter()
    model = fastmlp_estimator(fake, random_state=0)
    import_s = time.perf_counter() - start
    X, y = load_digits_scaled()
    if workload == "W3":
        fit_s = timed(lambda: model.fit(X, y))
    else:
        fit_s = timed(lambda: w5_search(model, quick).fit(X, y))
    print(json.dumps({"import_s": import_s, "fit_s": fit_s}))


def fresh_process(workload, args):
    """Median {"import_s", "fit_s"} over args.repeats fresh pythons running child()."""
    code = CHILD_CODE.format(bench=str(BENCH), root=str(ROOT), workload=workload,
                             fake=args.fake_fastmlp, quick=args.quick)
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(f"fresh-process {workload} failed:\n{out.stderr[-3000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def w3_defaults(args, contestants):
    X, y = load_digits_scaled()

    def runner(name):
        cls = contestants[name]

        def run(rep):
            trainer = cls({}, 0, X, y, None)
            t = timed(lambda: trainer.model.fit(X, y))
            return [t], {"n_iter": trainer.model.n_iter_}
        return run
    runner(FAST)(0)  # compile (or load from numba's cache) before timing
    res = alternate({n: runner(n) for n in (FAST, SKL)}, args.repeats)  # no torch "defaults"
    sec = {n: r["median"] for n, r in res.items()}
    fresh = fresh_process("W3", args)
    up_fresh = sec[SKL] / fresh["fit_s"]
    n_iter = ", ".join(f"{n} {int(median_extra(r, 'n_iter'))}" for n, r in res.items())
    return [
        Row("W3 defaults (digits)", "fit s, warm process", sec, speedup(sec),
            note=f"MLPClassifier() defaults, random_state=0; epochs run: {n_iter}"),
        Row("W3 defaults (digits)", "fit s, first fit in a fresh process",
            {FAST: fresh["fit_s"], SKL: sec[SKL]}, {"vs sklearn": up_fresh}, {"vs sklearn": 5},
            ">=5x sklearn incl. compile",
            note=f"fastmlp in a new python (compiled-code cache warm; import took "
                 f"{fresh['import_s']:.2f} s, not counted); sklearn value is its warm fit"),
    ]


def w4_inference(args, contestants, data):
    X, y, X_te, _, _ = data
    classes = np.unique(y)
    n_calls = 3 if args.quick else 10
    trainers = {}
    for name, factory in contestants.items():  # weights don't matter: one epoch on 2,000 rows
        trainers[name] = factory(W1_PARAMS, 0, X[:2000], y[:2000], classes)
        trainers[name].epoch()
        trainers[name].proba(X_te[:100])

    def runner(name):
        return lambda rep: ([timed(lambda: trainers[name].proba(X_te))
                             for _ in range(n_calls)], {})
    res = alternate({n: runner(n) for n in trainers}, args.repeats)
    rows_s = {n: len(X_te) / r["median"] for n, r in res.items()}
    ups = speedup(rows_s, lower_is_better=False)
    return [Row(f"W4 inference ({len(X_te)}x{X_te.shape[1]})", "predict_proba rows/s", rows_s,
                ups, {"vs sklearn": 2}, note="W1 network; median of one whole-test-set call")]


def w5_search(estimator, quick):
    """The W5 search around `estimator` (cloned for every fit, as GridSearchCV does)."""
    estimator.set_params(random_state=0, max_iter=20 if quick else 200)
    return GridSearchCV(estimator, W5_GRID, cv=3)


def w5_search_run(args, contestants):
    X, y = load_digits_scaled()
    make = {FAST: lambda: fastmlp_estimator(args.fake_fastmlp), SKL: SklearnMLP}

    def runner(name):
        def run(rep):
            search = w5_search(make[name](), args.quick)
            t = timed(lambda: search.fit(X, y))
            return [t], {"best": search.best_score_}
        return run
    res = alternate({n: runner(n) for n in make}, args.repeats)
    sec = {n: r["median"] for n, r in res.items()}
    fresh = fresh_process("W5", args)
    up_fresh = sec[SKL] / fresh["fit_s"]
    best = ", ".join(f"{n} {median_extra(r, 'best'):.3f}" for n, r in res.items())
    label = "W5 GridSearchCV (digits, 12 configs x 3 folds)"
    return [
        Row(label, "search s, warm process", sec, speedup(sec),
            note=f"max_iter={20 if args.quick else 200}; best CV accuracy: {best}"),
        Row(label, "search s, fresh process", {FAST: fresh["fit_s"], SKL: sec[SKL]},
            {"vs sklearn": up_fresh}, {"vs sklearn": 5}, ">=5x sklearn incl. compile",
            note="fastmlp in a new python; sklearn value is its warm-process search"),
    ]


def w6_time_to_accuracy(args, contestants, data):
    X, y, X_te, y_te, _ = data
    classes = np.unique(y)
    params = dict(hidden_layer_sizes=tuple(args.w6_hidden), activation="relu", solver="adam",
                  learning_rate_init=args.w6_lr, batch_size=args.w6_batch, alpha=1e-4)
    # fastmlp anneals the rate over --w6-horizon epochs (each partial_fit call is one epoch of
    # its schedule); scikit-learn's adam has no schedule, so it keeps the constant rate.
    decay = None if args.w6_decay == "none" else args.w6_decay
    own = {FAST: dict(params, learning_rate_decay=decay, max_iter=args.w6_horizon)
           if decay and not args.fake_fastmlp else params, SKL: params}
    cap = min(args.w6_cap, 5.0) if args.quick else args.w6_cap
    curves = {}

    def runner(name):
        def run(rep):
            # A RandomState, not an int: partial_fit with an int seed reshuffles into the same
            # order every epoch (scikit-learn's semantics), which slows learning for both.
            trainer = contestants[name](own[name], np.random.RandomState(rep), X, y, classes)
            spent, curve = 0.0, []
            while spent < cap and len(curve) < args.w6_max_epochs:
                spent += timed(trainer.epoch)  # only training is on the clock
                curve.append((spent, float(np.mean(trainer.proba(X_te).argmax(1) == y_te))))
                if curve[-1][1] >= args.w6_target:
                    break
            curves.setdefault(name, curve)
            reached = curve[-1][1] >= args.w6_target
            return [spent if reached else float("inf")], {"epochs": len(curve)}
        return run
    res = alternate({n: runner(n) for n in (FAST, SKL)}, args.w6_repeats)
    sec = {n: (r["median"] if np.isfinite(r["median"]) else None) for n, r in res.items()}
    epochs = ", ".join(f"{n} {int(median_extra(r, 'epochs'))}" for n, r in res.items())
    reached = {n: "not reached" for n, s in sec.items() if s is None}
    note = (f"hidden {params['hidden_layer_sizes']}, adam lr {args.w6_lr}, batch "
            f"{args.w6_batch}; cap {cap:.0f} s training; epochs: {epochs}")
    if own[FAST] is not params:
        note += (f"; fastmlp anneals the rate ({decay}, learning_rate_decay) over "
                 f"{args.w6_horizon} epochs, scikit-learn's adam has no schedule (constant rate)")
    if reached:
        note += "; " + ", ".join(f"{n}: not reached within the cap" for n in reached)
    return [Row(f"W6 time to {args.w6_target:.0%} test accuracy (Fashion-MNIST)",
                "training s", sec, speedup(sec), target="fastmlp < 6 s",
                met=sec[FAST] is not None and sec[FAST] < 6.0, note=note)], curves


# ---------------------------------------------------------------------------- reporting
def fmt(v):
    if v is None:
        return "not reached"
    if isinstance(v, float) and not np.isfinite(v):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def table_lines(rows, names, markdown):
    head = ["workload", "metric", *names, "fastmlp vs sklearn", "fastmlp vs torch", "target",
            "met"]
    body = []
    for r in rows:
        vals = []
        for n in names:
            v = r.values.get(n, float("nan"))
            vals.append(f"{v:.1%}" if "fraction" in r.metric and np.isfinite(v) else fmt(v))
        ups = [f"{r.speedups[k]:.2f}x" if k in r.speedups else "" for k in
               ("vs sklearn", "vs torch")]
        met = {True: "yes", False: "NO", None: ""}[r.met]
        body.append([r.workload, r.metric, *vals, *ups, r.target, met])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return lines + ["| " + " | ".join(b) + " |" for b in body]
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]


def cpu_pressure_us():
    """Total microseconds some task waited for a CPU (Linux PSI), or None."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return int(first.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def machine_info(args, peak):
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "scikit-learn": sklearn.__version__}
    for mod in ("numba", "torch", "fastmlp", "threadpoolctl"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = "not installed"
    pools = []
    try:
        from threadpoolctl import threadpool_info
        pools = [f"{p['internal_api']} ({Path(p['filepath']).name}): {p['num_threads']} threads"
                 for p in threadpool_info()]
    except ImportError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {"cpu": cpu, "cores": os.cpu_count(), "usable cores": args.threads, "load": load,
            "versions": versions, "thread pools": pools,
            "matmul peak": f"{peak:.1f} GFLOP/s (numpy float32 2048x2048, median of 10)"
            if peak else "not measured",
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def write_markdown(path, rows, names, info, notes, args, elapsed, waited):
    v = ", ".join(f"{k} {val}" for k, val in info["versions"].items())
    lines = ["# fastmlp benchmark results", ""]
    if args.quick:
        lines += ["> **QUICK smoke run** (`--quick`: small subsets, few epochs, 1 repeat). "
                  "These numbers only show that the harness works; run "
                  "`python bench/compare.py` for real ones.", ""]
    lines += [line for n in notes if "FAKE" in n for line in (f"> **{n}**", "")]
    lines += ["## Machine", "",
              f"- CPU: {info['cpu']}, {info['cores']} cores ({info['usable cores']} used by "
              "every contestant)",
              f"- versions: {v}",
              f"- thread pools: {'; '.join(info['thread pools']) or 'threadpoolctl missing'}",
              f"- float32 matmul peak: {info['matmul peak']}",
              f"- date: {info['date']}; run took {elapsed:.0f} s",
              f"- contention: load average at the end {info['load']}; some task waited for a "
              f"CPU during {waited} of the run (Linux PSI; our own threads count too; high "
              "values mean another process shared the cores and the numbers are noisy)",
              f"- command: `python bench/compare.py {' '.join(sys.argv[1:])}`",
              f"- settings: epochs {args.epochs}, repeats {args.repeats}, epoch timing by "
              f"{args.epoch_mode}", "",
              "## Results", "",
              "Medians over repeats (and epochs); contestants alternate order each repeat. "
              "'fastmlp vs X' is fastmlp's speed-up (above 1: fastmlp faster).", ""]
    lines += table_lines(rows, names, markdown=True) + [""]
    lines += ["## Notes", ""] + [f"- {r.workload}, {r.metric}: {r.note}" for r in rows if r.note]
    lines += [f"- {n}" for n in notes]
    lines += ["- torch: same layer sizes, Glorot-uniform init as scikit-learn, CrossEntropyLoss, "
              "Adam (fused CPU implementation) with the same lr, betas and eps; scikit-learn's "
              "L2 alpha becomes weight_decay = alpha / batch_size on the weights. Adam's eps is "
              "added after bias correction in torch, before it in scikit-learn (negligible).",
              "- fastmlp runs with dtype='float32'; scikit-learn and torch get the same float32 "
              "arrays (scikit-learn then trains in float32 too).", ""]
    path.write_text("\n".join(lines))


def write_chart(path, rows, curves, target):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: chart skipped (pip install matplotlib)")
        return False
    bars = [(f"{r.workload.split(' (')[0]}: {r.metric} {k}", up, r.goals.get(k))
            for r in rows for k, up in r.speedups.items()]
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(15 if curves else 9, 6),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 2] if curves
                                                          else [1]})
    ax = axes[0][0]
    ys = np.arange(len(bars))
    ax.barh(ys, [b[1] for b in bars], color=["tab:blue" if "sklearn" in b[0] else "tab:orange"
                                             for b in bars])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(ys, [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    goals = [(y, g) for y, (_, _, g) in zip(ys, bars) if g]
    if goals:
        ax.scatter([g for _, g in goals], [y for y, _ in goals], marker="|", s=400, color="k",
                   zorder=3, label="target")
        ax.legend(loc="lower right")
    ax.set_xlabel("fastmlp speed-up (x, log scale; blue: vs sklearn, orange: vs torch)")
    ax.set_title("fastmlp speed-up over scikit-learn and PyTorch (CPU)")
    for y, (_, up, _) in zip(ys, bars):
        ax.text(up, y, f" {up:.2f}x", va="center", fontsize=8)
    if curves:
        ax2 = axes[0][1]
        for name, curve in curves.items():
            ax2.plot(*zip(*curve), marker="o", label=name)
        ax2.axhline(target, color="gray", ls="--", lw=0.8)
        ax2.axvline(6.0, color="gray", ls=":", lw=0.8)  # the W6 target: < 6 s
        ax2.set_xlabel("training seconds (evaluation excluded)")
        ax2.set_ylabel("Fashion-MNIST test accuracy")
        ax2.set_title("W6 time to accuracy")
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------- main
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: small subsets, 2 epochs, 1 repeat, short caps")
    p.add_argument("--workloads", default=",".join(ALL_WORKLOADS),
                   help="comma-separated subset of W1..W7 (default: all)")
    p.add_argument("--repeats", type=int, help="repeats per workload (default 3; quick 1)")
    p.add_argument("--epochs", type=int, help="epochs timed in W1/W2 (default 5; quick 2)")
    p.add_argument("--epoch-mode", choices=("partial_fit", "fit"), default="partial_fit",
                   help="time each epoch as one partial_fit call (default), or one "
                        "fit(max_iter=epochs) divided by epochs")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="threads for BLAS/OpenMP/torch (default: usable cores)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    p.add_argument("--fake-fastmlp", action="store_true",
                   help="DEVELOPMENT ONLY: use scikit-learn as the 'fastmlp' contestant")
    p.add_argument("--w6-target", type=float, default=0.89)
    p.add_argument("--w6-cap", type=float, default=60.0,
                   help="training seconds after which W6 gives up (default 60)")
    p.add_argument("--w6-max-epochs", type=int, default=100)
    p.add_argument("--w6-repeats", type=int, default=1)
    p.add_argument("--w6-hidden", type=int, nargs="+", default=[256, 128])
    p.add_argument("--w6-lr", type=float, default=2e-3)
    p.add_argument("--w6-batch", type=int, default=256)
    p.add_argument("--w6-decay", choices=("linear", "cosine", "none"), default="linear",
                   help="fastmlp's learning_rate_decay in W6 (default linear)")
    p.add_argument("--w6-horizon", type=int, default=10,
                   help="epochs over which fastmlp's W6 rate anneals (its max_iter; default 10)")
    p.add_argument("--out-dir", type=Path, default=BENCH,
                   help="where RESULTS.md and results.png go (default: bench/)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.epochs = args.epochs or (2 if args.quick else 5)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(ALL_WORKLOADS)
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}; choose from {','.join(ALL_WORKLOADS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    began, pressure = time.perf_counter(), cpu_pressure_us()
    warnings.simplefilter("ignore", ConvergenceWarning)
    contestants, notes = make_contestants(args)
    try:  # every BLAS/OpenMP pool at the core count (their default; nothing more)
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=args.threads)
    except ImportError:
        notes.append("threadpoolctl missing: thread pools left at their defaults")
    for n in notes:
        print("note:", n)
    names = list(contestants)
    peak = matmul_peak()
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s; contestants: {', '.join(names)}; "
          f"threads {args.threads}")
    fashion = None
    if {"W1", "W4", "W6"} & set(args.workloads):
        fashion = load_fashion(args.quick)
        print(f"Fashion-MNIST: {fashion[0].shape[0]} train / {fashion[2].shape[0]} test rows "
              f"from {fashion[4]}")
    rows, curves = [], {}
    steps = {"W1": lambda: w1_wide(args, contestants, fashion, peak),
             "W2": lambda: w2_tabular(args, contestants),
             "W3": lambda: w3_defaults(args, contestants),
             "W4": lambda: w4_inference(args, contestants, fashion),
             "W5": lambda: w5_search_run(args, contestants),
             "W6": lambda: w6_time_to_accuracy(args, contestants, fashion),
             "W7": lambda: w7_cold_start(args)}
    for w in ALL_WORKLOADS:
        if w not in args.workloads:
            continue
        t = time.perf_counter()
        CURRENT["workload"] = w
        seen = len(SKLEARN_THREADS)
        out = steps[w]()
        if w == "W6":
            out, curves = out
        rows += out
        print(f"\n{w} done in {time.perf_counter() - t:.1f} s")
        print("\n".join(table_lines(out, names, markdown=False)))
        for line in sklearn_thread_notes()[seen:]:
            print("note:", line)
    notes += sklearn_thread_notes()
    elapsed = time.perf_counter() - began
    after = cpu_pressure_us()
    waited = "unknown" if pressure is None or after is None else \
        f"{(after - pressure) / 1e6 / elapsed:.0%}"
    print(f"\n=== all workloads ({elapsed:.0f} s) ===")
    print("\n".join(table_lines(rows, names, markdown=False)))
    for n in notes:
        print("note:", n)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md = args.out_dir / "RESULTS.md"
    write_markdown(md, rows, names, machine_info(args, peak), notes, args, elapsed, waited)
    print(f"CPU contention during the run (PSI some): {waited}")
    print(f"\nwrote {md}")
    png = args.out_dir / "results.png"
    if write_chart(png, rows, curves, args.w6_target):
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
