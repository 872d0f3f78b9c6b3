"""The fused CUDA kernel's machine code, read without a GPU: registers, spills and the cost of
each inner loop in instructions (issue #23).

    python bench/gpu_sass.py          # float32 and float64, compute capability 9.0 (H100, H200)
    python bench/gpu_sass.py --dtype float32 --show 13700    # also print one loop's SASS

Compiles fastmlp.cuda.fused.train_epoch_fused to PTX with numba-cuda, assembles it with ptxas
(`ptxas -v`: registers, spill bytes) and disassembles it with nvdisasm. Neither needs a GPU or a
driver. Then it lists every innermost loop that does floating-point arithmetic: its
instructions, shared-memory loads (LDS), fused multiply-adds (FFMA/DFMA) and instructions per
multiply-add. The kernel's products are 2 x 2 register tiles (kernels.tile_dot): one
shared-memory load per multiply-add, about two or three instructions per multiply-add in all
(a single running sum needs two loads per multiply-add); index arithmetic is the rest.
Nsight Compute on a GPU says where time goes; this says what each iteration costs, and it runs
on any machine with the CUDA extra installed plus nvdisasm (`pip install nvidia-cuda-nvdisasm`).
"""

import argparse
import collections
import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import types
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda


def tool(name):
    """Path of a CUDA command-line tool: from an installed nvidia-* wheel (the one numba-cuda's
    compiler comes with, for ptxas), else on PATH."""
    for base in sys.path:
        hits = glob.glob(os.path.join(base or ".", "nvidia", "*", "bin", name))
        if hits:
            return sorted(hits)[-1]
    found = shutil.which(name)
    if found:
        return found
    sys.exit(f"{name} not found: install it (ptxas comes with numba-cuda[cu12]; nvdisasm with "
             "pip install nvidia-cuda-nvdisasm)")


@contextlib.contextmanager
def compiling_for(cc):
    """Device functions compile for the current device's compute capability; with no device
    here, name the one to compile for, for the time of the block."""
    import numba.cuda.dispatcher as dispatcher
    current = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = current


def fused_ptx(dtype, cc):
    """PTX of train_epoch_fused for a dense-input group of the given dtype."""
    from fastmlp.bundles import Features
    from fastmlp.cuda import fused

    P, N, F, K = 10, 4, 2, 2  # sizes do not matter: only the argument types do
    args = (np.zeros((1, P), dtype), np.zeros((1, P), dtype), np.zeros((1, P), dtype),
            np.zeros((1, 2)),
            Features(np.zeros((N, F), dtype), np.zeros(0, dtype), np.zeros(0, np.int64),
                     np.zeros(0, np.int64)),
            np.zeros((N, K), dtype), np.zeros(N, dtype), np.zeros((1, N), np.int64), 2,
            np.zeros((2, 4), np.int64), np.zeros((1, fused.N_CODES), np.int64),
            np.zeros((1, fused.STEP_SIZES + 1)), 1e-7)
    signature = tuple(numba.typeof(a) for a in args)
    with compiling_for(cc):
        ptx, _ = cuda.compile_ptx(fused.train_epoch_fused.py_func, signature, cc=cc,
                                  launch_bounds=fused.LAUNCH_BOUNDS)
    return ptx


def machine_code(ptx, cc):
    """(ptxas -v's report, [(address, instruction)]) of PTX assembled for compute capability
    cc."""
    arch = f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as work:
        source, cubin = os.path.join(work, "kernel.ptx"), os.path.join(work, "kernel.cubin")
        with open(source, "w") as f:
            f.write(ptx)
        assembled = subprocess.run([tool("ptxas"), f"-arch={arch}", "-v", "-O3", source, "-o",
                                    cubin], capture_output=True, text=True, check=True)
        sass = subprocess.run([tool("nvdisasm"), cubin], capture_output=True, text=True,
                              check=True).stdout
    usage = " ".join(line.split("info    : ")[-1].strip() for line in
                     assembled.stderr.splitlines() if "registers" in line or "spill" in line)
    return usage, instructions(sass)


def instructions(sass):
    """[(address, instruction text without its predicate)] of nvdisasm's output, branch targets
    written as addresses (nvdisasm names them with labels)."""
    out, labels, pending = [], {}, []
    for line in sass.splitlines():
        label = re.match(r"(\.L_x_\d+):", line)
        if label:
            pending.append(label.group(1))
            continue
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            address = int(m.group(1), 16)
            labels.update((name, address) for name in pending)
            pending = []
            text = re.sub(r"^@!?U?P[T0-9]+\s+", "", re.sub(r"\s+", " ", m.group(2)))
            out.append((address, text))
    return [(address, re.sub(r"`\((\.L_x_\d+)\)", lambda m: hex(labels.get(m.group(1), -1)),
                             text)) for address, text in out]


def opcode(text):
    return text.split()[0].split(".")[0]


class Loop(NamedTuple):
    start: int          # address of its first instruction
    end: int            # address of its backward branch
    body: list          # [(address, instruction)]
    mix: collections.Counter  # opcode -> count


ARITHMETIC = ("FFMA", "DFMA", "FADD", "DADD", "FMUL", "DMUL")


def inner_loops(code):
    """A Loop for each backward branch's range that holds no other backward branch and does
    floating-point arithmetic: the innermost loops."""
    where = {address: i for i, (address, _) in enumerate(code)}
    ranges = []
    for i, (address, text) in enumerate(code):
        m = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        target = int(m.group(1), 16) if m else address
        if target < address and target in where:
            ranges.append((target, address, code[where[target]:i + 1]))
    loops = []
    for start, end, body in ranges:
        if any(start <= s and e <= end and (s, e) != (start, end) for s, e, _ in ranges):
            continue  # holds an inner loop
        mix = collections.Counter(opcode(t) for _, t in body)
        if any(mix[op] for op in ARITHMETIC):
            loops.append(Loop(start, end, body, mix))
    return loops


def report(dtype, cc, show):
    usage, code = machine_code(fused_ptx(dtype, cc), cc)
    mix = collections.Counter(opcode(t) for _, t in code)
    from fastmlp.cuda import fused

    print(f"## train_epoch_fused, {np.dtype(dtype).name}, sm_{cc[0]}{cc[1]}, "
          f"{fused.THREADS} threads")
    print(f"ptxas: {usage}")
    loops = inner_loops(code)
    in_loops = sum(loop.mix["LDL"] + loop.mix["STL"] for loop in loops)
    print(f"{len(code)} instructions; calls {mix['CALL']}, local loads/stores "
          f"{mix['LDL'] + mix['STL']} ({in_loops} in inner loops)")
    fma = "FFMA" if dtype == np.float32 else "DFMA"
    print(f"\n| inner loop | instructions | LDS | {fma} | instructions per {fma} |")
    print("| --- | --- | --- | --- | --- |")
    for loop in loops:
        per = f"{len(loop.body) / loop.mix[fma]:.1f}" if loop.mix[fma] else "-"
        print(f"| {loop.start:x}-{loop.end:x} | {len(loop.body)} | {loop.mix['LDS']} | "
              f"{loop.mix[fma]} | {per} |")
        if show and int(show, 16) == loop.start:
            for address, text in loop.body:
                print(f"    {address:6x}  {text}")
    print()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=["float32", "float64"], action="append")
    parser.add_argument("--cc", default="9.0", help="compute capability (default 9.0)")
    parser.add_argument("--show", help="print the SASS of the loop starting at this hex address")
    args = parser.parse_args(argv)
    cc = tuple(int(p) for p in args.cc.split("."))
    for name in args.dtype or ["float32", "float64"]:
        report(np.dtype(name).type, cc, args.show)


if __name__ == "__main__":
    main(sys.argv[1:])
