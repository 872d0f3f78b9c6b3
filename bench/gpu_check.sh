#!/usr/bin/env bash
# One-shot check of fastmlp's CUDA backend on a machine with an NVIDIA GPU (issue #23), in about
# 9 minutes: versions; tests/cuda_sim on the real GPU; compute-sanitizer racecheck and synccheck
# over tiny fits (bench/gpu_tiny_fits.py: fused, per-layer and persistent paths);
# bench/compare_gpu.py with a short budget, the persistent path forced as an extra W1
# contestant; 128 small models trained together (bench/gpu_many.py, issue #24); the W8 search and
# 5-fold cross-validation of one network on the GPU (bench/search.py); the fused kernel's
# per-batch time at 256 and 512 threads per block, then Nsight Compute over it
# (bench/gpu_profile.py); W2 at batch sizes 32-512 on both paths (bench/gpu_batch_sizes.py);
# memcheck if time is left.
# Every step has a timeout and the script goes on after a failing one; the whole run stays under
# GPU_CHECK_SECONDS (default 540). It installs and downloads nothing.
#
#   bash bench/gpu_check.sh [OUTPUT_DIR] [FASHION_MNIST_DIR]
#
# OUTPUT_DIR: default $OUT. FASHION_MNIST_DIR: the four gzip IDX files; default
# .data/fashion-mnist in the repository when it exists, else W1 and W4 of the benchmark train
# on a synthetic stand-in of the same shape. Writes these flat files into OUTPUT_DIR:
# summary.txt, GPU_RESULTS.md, many.txt and logs.tar.gz, which holds the steps' logs
# (versions.log pytest-cuda.log racecheck.log synccheck.log compare.log many.log search.log
# threads.log ncu.log batch-sizes.log memcheck.log): the device machine hands back at most 8
# files.
# numba-cuda <= 0.30.4 with NumPy 2.5 fails at the first kernel compile (np.row_stack is gone);
# the Python steps run through bench/with_row_stack.py, which shims it for this run only and
# says so in each log. fastmlp itself refuses that combination with an error naming the fix.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=${1:-${OUT:-}}
if [ -z "$OUTDIR" ]; then
    echo "usage: bash bench/gpu_check.sh OUTPUT_DIR [FASHION_MNIST_DIR]  (or set OUT)" >&2
    exit 2
fi
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd) || exit 2
DATA=${2:-}
if [ -z "$DATA" ] && [ -d "$REPO/.data/fashion-mnist" ]; then
    DATA=$REPO/.data/fashion-mnist
fi
cd "$REPO" || exit 2

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_ENABLE_CUDASIM=0   # the real GPU, never the simulator
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
PY=${PYTHON:-$(command -v python || command -v python3)}
SHIM=("$PY" bench/with_row_stack.py)
DEADLINE_S=${GPU_CHECK_SECONDS:-540}
START=$(date +%s)
SUMMARY=$OUTDIR/summary.txt

elapsed() { echo $(( $(date +%s) - START )); }

{
    echo "fastmlp GPU check, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), host $(hostname)"
    echo "repository: $REPO (commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null \
        || echo 'unknown: no git here'))"
    echo "python: $PY; time budget ${DEADLINE_S}s"
} > "$SUMMARY"
if [ -n "$DATA" ]; then
    if [ -d "$DATA" ]; then
        export FASTMLP_FASHION_MNIST=$(cd "$DATA" && pwd)
        echo "Fashion-MNIST: $FASTMLP_FASHION_MNIST ($(ls "$FASTMLP_FASHION_MNIST" | tr '\n' ' '))" \
            >> "$SUMMARY"
    else
        echo "Fashion-MNIST: $DATA is not a folder; W1/W4 use a synthetic stand-in" >> "$SUMMARY"
    fi
else
    echo "Fashion-MNIST: none given; found as fastmlp.datasets finds it, else a synthetic" \
         "stand-in for W1/W4" >> "$SUMMARY"
fi
echo >> "$SUMMARY"

# step NAME LOG SECONDS COMMAND...: COMMAND under a timeout cut to the time left, its output
# appended to OUTDIR/LOG, one line in the summary. Sets RC (124: timed out).
step() {
    local name=$1 logname=$2 limit=$3
    local log=$OUTDIR/$logname
    shift 3
    local left=$(( DEADLINE_S - $(elapsed) - 5 ))
    if [ "$left" -lt 20 ]; then
        echo "$name: SKIPPED, the time budget is spent" >> "$SUMMARY"
        RC=125
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "== $name: $* (timeout ${limit}s, at $(elapsed)s)" >> "$log"
    local t0
    t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >> "$log" 2>&1
    RC=$?
    local verdict="ok"
    if [ "$RC" -eq 124 ] || [ "$RC" -eq 137 ]; then
        verdict="TIMED OUT after ${limit}s"
    elif [ "$RC" -ne 0 ]; then
        verdict="FAILED (exit $RC)"
    fi
    echo "$name: $verdict, $(( $(date +%s) - t0 ))s; log $logname" >> "$SUMMARY"
    if [ "$RC" -ne 0 ]; then
        tail -n 3 "$log" | sed 's/^/    | /' >> "$SUMMARY"
    fi
}

# Lines of a log worth seeing in the summary (indented).
highlights() {
    grep -E "$2" "$OUTDIR/$1" 2>/dev/null | tail -n "${3:-8}" | sed 's/^/    /' >> "$SUMMARY"
}

# ---- (a) versions
cat > "$OUTDIR/versions.log" <<EOF
== nvidia-smi
$(timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi failed or is missing")
$(timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
    --format=csv 2>&1)
EOF
step "versions" versions.log 45 "$PY" - <<'EOF'
import importlib
import importlib.metadata as metadata
import platform
import sys

print("python", sys.version.replace("\n", " "), "on", platform.platform())
missing = []
for name, module in [("numba", "numba"), ("numba-cuda", "numba_cuda"), ("numpy", "numpy"),
                     ("scipy", "scipy"), ("scikit-learn", "sklearn"),
                     ("threadpoolctl", "threadpoolctl"), ("cupy", "cupy"), ("torch", "torch")]:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        print(f"{name}: MISSING ({exc})")
        missing.append(name)
        continue
    except Exception as exc:  # noqa: BLE001 - installed but broken
        print(f"{name}: BROKEN ({type(exc).__name__}: {exc})")
        continue
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = getattr(mod, "__version__", "?")
    print(f"{name}: {version}")
for needed in ("scikit-learn", "threadpoolctl", "scipy", "numba"):
    if needed in missing:
        print(f"MISSING REQUIREMENT: {needed} is not installed; fastmlp needs it, so the steps "
              "below cannot import fastmlp. This script installs nothing: install it into this "
              f"Python ({sys.executable}) and run the script again.")
try:
    import torch

    print("torch CUDA:", torch.version.cuda, "available:", torch.cuda.is_available())
except Exception as exc:  # noqa: BLE001
    print("torch CUDA: -", exc)
try:
    import cupy

    print("cupy CUDA runtime:", cupy.cuda.runtime.runtimeGetVersion(),
          "devices:", cupy.cuda.runtime.getDeviceCount())
except Exception as exc:  # noqa: BLE001
    print("cupy: -", exc)
from numba import cuda

try:
    cuda.detect()
except Exception as exc:  # noqa: BLE001 - no driver, no device
    print("numba.cuda.detect():", type(exc).__name__, str(exc).strip().splitlines()[0])
from fastmlp.cuda import device

print("fastmlp numpy_incompatibility():", device.numpy_incompatibility())
try:
    device.check_available()
    print("fastmlp check_available(): OK")
except RuntimeError as exc:
    print("fastmlp check_available():", exc)
EOF
highlights versions.log "^(python|numba|numba-cuda|numpy|scikit-learn|threadpoolctl|cupy|torch)[: ]|MISSING|BROKEN|check_available|incompat" 20

# ---- (b) the CUDA test suite on the real GPU
step "pytest tests/cuda_sim on the GPU" pytest-cuda.log 120 \
    "${SHIM[@]}" -m pytest -q -x -rs -p no:cacheprovider --durations=10 tests/cuda_sim
highlights pytest-cuda.log "passed|failed|error|skipped|shimmed|^FAILED|^ERROR" 6

# ---- (c) compute-sanitizer over tiny fits
SAN=$(command -v compute-sanitizer || true)
if [ -z "$SAN" ]; then
    for candidate in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
                     /opt/nvidia/*/bin/compute-sanitizer /usr/bin/compute-sanitizer; do
        if [ -x "$candidate" ]; then SAN=$candidate; break; fi
    done
fi
if [ -z "$SAN" ]; then
    SITE=$("$PY" -c "import nvidia, os; print(list(nvidia.__path__)[0])" 2>/dev/null || true)
    if [ -n "$SITE" ]; then
        SAN=$(timeout 10 find "$SITE" -maxdepth 4 -name compute-sanitizer -type f -perm -u+x \
              2>/dev/null | head -n 1)
    fi
fi
if [ -z "$SAN" ]; then
    for tool in racecheck synccheck; do
        echo "compute-sanitizer was not found (PATH, /usr/local/cuda*/bin, /opt/nvidia," \
             "the nvidia wheels): $tool skipped" | tee -a "$OUTDIR/$tool.log" >> "$SUMMARY"
    done
else
    echo "compute-sanitizer: $SAN (exit 3: it found hazards or errors; exit 1: a tiny fit" \
         "disagreed with the CPU or took another path)" >> "$SUMMARY"
    step "racecheck (tiny fused, per-layer and persistent fits)" racecheck.log 90 \
        "$SAN" --tool racecheck --error-exitcode 3 --print-limit 40 \
        "${SHIM[@]}" bench/gpu_tiny_fits.py fused per-layer persistent
    highlights racecheck.log "SUMMARY|^(OK|FAIL) |tiny fits|Error|shimmed" 8
    step "synccheck (tiny fused, per-layer and persistent fits)" synccheck.log 80 \
        "$SAN" --tool synccheck --error-exitcode 3 --print-limit 40 \
        "${SHIM[@]}" bench/gpu_tiny_fits.py fused per-layer persistent
    highlights synccheck.log "SUMMARY|^(OK|FAIL) |tiny fits|Error|shimmed" 8
fi

# ---- (d) the benchmark, short: every workload once, more repeats while the budget lasts
step "bench/compare_gpu.py" compare.log 150 \
    "${SHIM[@]}" bench/compare_gpu.py --epochs 2 --repeats 3 --budget 70 --persistent \
    --out "$OUTDIR/GPU_RESULTS.md"
highlights compare.log "done$|failed|Error|shimmed|Fashion-MNIST not found" 12

# ---- (e) many networks per launch: 128 W2-sized models, fastmlp's train_epoch_many and, when
# a CUDA torch is importable, batched bmm layers in one CUDA graph
step "bench/gpu_many.py (128 models)" many.log 90 \
    "${SHIM[@]}" bench/gpu_many.py --models 128 --epochs 3 --out "$OUTDIR/many.txt"
highlights many.log "gpu_many on|s/epoch|skipped|Error|shimmed" 8

# ---- (f) W8: a 5-fold x 24-candidate search, fastmlp's networks trained together on the GPU
# against scikit-learn's GridSearchCV(n_jobs=-1) over fastmlp on the host's cores
step "bench/search.py --device cuda (W8)" search.log 120 \
    "${SHIM[@]}" bench/search.py --device cuda --repeats 1 --out "$OUTDIR/GPU_RESULTS.md"
highlights search.log "GridSearchCV|cv_results_|Error|shimmed" 8
step "bench/search.py --device cuda --cross-validate (W8-cv)" search.log 40 \
    "${SHIM[@]}" bench/search.py --device cuda --cross-validate --repeats 3 \
    --out "$OUTDIR/GPU_RESULTS.md"
highlights search.log "cross_validate|Test scores|Error|shimmed" 4

# ---- (f2) the fused kernel's block size: 256 threads (the default, no spills) against 512 (128
# registers, a few values spilled outside the inner loops, bench/gpu_sass.py); per-batch times of
# one W2 network and of 24
for threads in 256 512; do
    step "bench/gpu_profile.py, block of $threads threads" threads.log 45 \
        env FASTMLP_FUSED_THREADS=$threads "${SHIM[@]}" bench/gpu_profile.py
done
highlights threads.log "us per batch|Error|shimmed" 8

# ---- (g) Nsight Compute over the fused kernel (issue #23: profile it before tuning it): one W2
# network's epoch, then a group of 24 in one launch (bench/gpu_profile.py)
NCU=$(command -v ncu || true)
if [ -z "$NCU" ]; then
    for candidate in /usr/local/cuda/bin/ncu /usr/local/cuda-*/bin/ncu \
                     /opt/nvidia/nsight-compute/*/ncu /usr/bin/ncu; do
        if [ -x "$candidate" ]; then NCU=$candidate; break; fi
    done
fi
if [ -z "$NCU" ]; then
    echo "ncu was not found (PATH, /usr/local/cuda*/bin, /opt/nvidia/nsight-compute):" \
         "the fused kernel's profile skipped" >> "$SUMMARY"
else
    step "ncu (fused kernel: one W2 network, then 24 in one launch)" ncu.log 90 \
        "$NCU" --kernel-name regex:train_epoch_fused --launch-skip 1 --launch-count 2 \
        --section SpeedOfLight --section LaunchStats --section Occupancy \
        --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
        --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables \
        --section InstructionStats \
        "${SHIM[@]}" bench/gpu_profile.py
    # Bank conflicts: the register tiles' rows can share banks (bench/GPU_RESULTS.md).
    highlights ncu.log "train_epoch_fused|Duration|Registers Per|Achieved Occ|Stall|Bank|path " 20
fi

# ---- (h) up to which batch size the one-block kernel should opt in to more shared memory
# (launch.FUSED_OPT_IN_ROWS, an estimate so far): W2 on both paths, 32 to 512 rows per batch
step "bench/gpu_batch_sizes.py (FUSED_OPT_IN_ROWS)" batch-sizes.log 60 \
    "${SHIM[@]}" bench/gpu_batch_sizes.py --rows 10000 --repeats 2
highlights batch-sizes.log "^\| float|FUSED_OPT_IN_ROWS should|Error|shimmed" 12

# ---- memcheck, only with time to spare
if [ -n "$SAN" ] && [ $(( DEADLINE_S - $(elapsed) )) -ge 60 ]; then
    step "memcheck (tiny fused and per-layer fits)" memcheck.log 60 \
        "$SAN" --tool memcheck --error-exitcode 3 --print-limit 40 \
        "${SHIM[@]}" bench/gpu_tiny_fits.py fused per-layer
    highlights memcheck.log "SUMMARY|^(OK|FAIL) |tiny fits|shimmed" 8
fi

# The device machine hands back at most 8 files: the step logs go back as one archive.
LOGS=$(cd "$OUTDIR" && ls -- *.log 2>/dev/null)
if [ -n "$LOGS" ]; then
    # shellcheck disable=SC2086 # one plain file name per word (step() names them)
    (cd "$OUTDIR" && tar -czf logs.tar.gz $LOGS && rm -f $LOGS) \
        && echo "step logs: logs.tar.gz ($(echo $LOGS | wc -w) files)" >> "$SUMMARY"
fi

{
    echo
    echo "total: $(elapsed)s"
    if [ -f "$OUTDIR/GPU_RESULTS.md" ]; then
        echo
        cat "$OUTDIR/GPU_RESULTS.md"
    else
        echo "no GPU_RESULTS.md: see compare.log"
    fi
} >> "$SUMMARY"
cat "$SUMMARY"
