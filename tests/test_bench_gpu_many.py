"""bench/gpu_many.py's arguments (no GPU here: the benchmark itself is unmeasured; its smoke run
under numba's CUDA simulator is in tests/cuda_sim/test_cuda_many.py)."""

import pytest
from bench_scripts import load


@pytest.fixture
def gpu_many():
    return load("gpu_many")  # importable without a GPU, numba-cuda or torch


def test_the_defaults_are_128_w2_sized_models(gpu_many):
    args = gpu_many.parse_args([])
    assert (args.models, args.rows, args.features, args.classes) == (128, 100_000, 20, 3)
    assert (args.hidden, args.batch, args.dtype) == ((64, 32), 32, "float32")
    assert args.contestants == ("fastmlp", "torch") and args.epochs >= 3


def test_arguments_are_parsed_and_checked(gpu_many):
    args = gpu_many.parse_args(["--models", "4", "--hidden", "8,4,2", "--contestants", "fastmlp",
                                "--dtype", "float64", "--epochs", "2"])
    assert (args.models, args.hidden, args.contestants, args.dtype, args.epochs) == (
        4, (8, 4, 2), ("fastmlp",), "float64", 2)
    assert gpu_many.parse_args(["--smoke"]).models == 3
    for bad in (["--contestants", "jax"], ["--models", "0"], ["--classes", "2"],
                ["--dtype", "float16"]):
        with pytest.raises(SystemExit):
            gpu_many.parse_args(bad)
