"""The fused CUDA kernel's machine code, read without a GPU (bench/gpu_sass.py): compiled for an
H100/H200 (sm_90), its inner products over shared memory stay cheap. A static check of speed:
it counts instructions, so it is the same on every machine, and it fails when the kernel's
products regress: signed offsets cost 28-38 instructions per multiply-add, single running sums
4.3-5.3 with two shared-memory loads each, 2 x 2 register tiles 2.2-3.3 with one load each."""

import importlib.util

import numpy as np
import pytest
from bench_scripts import load

gpu_sass = load("gpu_sass")
CC = (9, 0)


def _missing():
    """What this machine lacks to compile and disassemble the kernel, or None."""
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda (the cuda extra): numba's own CUDA target has no compiler here"
    try:
        gpu_sass.tool("ptxas"), gpu_sass.tool("nvdisasm")
    except SystemExit as missing:
        return str(missing)
    return None


MISSING = _missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"needs {MISSING}")


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def compiled(request):
    dtype = request.param
    return dtype, *gpu_sass.machine_code(gpu_sass.fused_ptx(dtype, CC), CC)


def test_the_fused_kernel_spills_nothing(compiled):
    _, usage, code = compiled
    assert "0 bytes spill stores" in usage and "0 bytes spill loads" in usage
    assert not any(gpu_sass.opcode(text) in ("LDL", "STL") for _, text in code)


def test_inner_products_take_few_instructions_per_multiply_add(compiled):
    dtype, _, code = compiled
    fma = "FFMA" if dtype == np.float32 else "DFMA"
    # A product over shared memory: at least one shared load for each multiply-add (the
    # activations' loops make several multiply-adds of each value they load).
    products = [loop for loop in gpu_sass.inner_loops(code)
                if loop.mix["LDS"] >= loop.mix[fma] > 0]
    assert len(products) >= 3  # forward, delta of the layer below, weight gradient
    for loop in products:
        # A 2 x 2 tile: four loads feed four multiply-adds.
        assert loop.mix["LDS"] == loop.mix[fma], f"loop at {loop.start:x}: {loop.mix}"
        assert len(loop.body) <= 4 * loop.mix[fma], f"loop at {loop.start:x}: {loop.mix}"


def test_the_report_lists_the_loops(capsys):
    gpu_sass.main(["--dtype", "float32"])
    out = capsys.readouterr().out
    assert "## train_epoch_fused, float32, sm_90" in out
    assert "| inner loop | instructions | LDS | FFMA | instructions per FFMA |" in out


def test_a_block_of_512_threads_fits_its_registers_and_keeps_spills_out_of_its_loops():
    """FASTMLP_FUSED_THREADS=512 (the tuning knob bench/gpu_check.sh measures): the kernel is
    compiled with launch bounds, so ptxas fits it into 128 registers. It spills a few values
    there (the weight tiles' prefetched optimizer state), none inside an inner loop."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, FASTMLP_FUSED_THREADS="512", NUMBA_ENABLE_CUDASIM="0",
               PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, str(root / "bench" / "gpu_sass.py")],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sm_90, 512 threads" in result.stdout
    registers = [int(n) for n in re.findall(r"Used (\d+) registers", result.stdout)]
    assert len(registers) == 2 and max(registers) <= 128  # float32 and float64
    assert re.findall(r"local loads/stores \d+ \((\d+) in inner loops\)",
                      result.stdout) == ["0", "0"]
