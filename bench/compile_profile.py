"""Where a cold first fit spends its compile time: numba's compile events, per dispatcher.

Run in a fresh process with an empty cache, e.g.
    NUMBA_CACHE_DIR=$(mktemp -d) python bench/compile_profile.py [--dtype float64] [--solver sgd]
Prints the first fit's wall time and each compiled function's compile time (times include the
functions it calls), largest first. Used to measure every kernel change (issue: cold start).
"""

import argparse
import time
from collections import defaultdict

from numba.core import event


class _CompileTimes(event.Listener):
    """Inclusive seconds (callees compiled meanwhile included) and self seconds per function."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.own = defaultdict(float)
        self.count = defaultdict(int)
        self._stack = []  # [name, started, seconds spent in nested compiles]

    def on_start(self, ev):
        dispatcher = ev.data["dispatcher"]
        name = getattr(dispatcher, "py_func", dispatcher)
        name = f"{getattr(name, '__module__', '?')}.{getattr(name, '__qualname__', name)}"
        self._stack.append([name, time.perf_counter(), 0.0])

    def on_end(self, ev):
        name, started, nested = self._stack.pop()
        seconds = time.perf_counter() - started
        self.seconds[name] += seconds
        self.own[name] += seconds - nested
        self.count[name] += 1
        if self._stack:
            self._stack[-1][2] += seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--solver", default="adam")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    from sklearn.datasets import load_digits

    import fastmlp  # noqa: F401  (import time is part of what a user feels)

    imported = time.perf_counter()
    X, y = load_digits(return_X_y=True)
    listener = _CompileTimes()
    event.register("numba:compile", listener)
    fit_started = time.perf_counter()
    fastmlp.MLPClassifier(max_iter=args.epochs, dtype=args.dtype, solver=args.solver,
                          random_state=0).fit(X / 16, y)
    fit_s = time.perf_counter() - fit_started
    print(f"import {imported - started:.2f} s, first fit {fit_s:.2f} s "
          f"({args.dtype}, {args.solver}, {args.epochs} epochs)")
    print(f"{len(listener.seconds)} functions compiled "
          f"({sum(listener.count.values())} compilations)")
    print(f"{'incl. s':>8} {'self s':>8} count  function")
    top = sorted(listener.seconds.items(), key=lambda kv: -kv[1])[: args.top]
    for name, seconds in top:
        print(f"{seconds:8.3f} {listener.own[name]:8.3f} {listener.count[name]:5d}  {name}")


if __name__ == "__main__":
    main()
