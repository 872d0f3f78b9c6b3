"""The CUDA backend: the CPU backend's functions (train_epoch, loss_and_gradient, predict,
thread_limit, to_device, to_host, empty, copy_to, check_available) with the same arguments, on
device arrays; and train_epoch_many, one epoch of a group of models of one shape (issue #24).

Only the public functions live here: device checks and array moves in device.py, the launch
sequence in launch.py, the per-layer kernels in kernels.py and the persistent one-launch epoch
kernel in fused.py. Importing this package needs neither numba-cuda nor a GPU, so that
device="auto" can fall back to the CPU.
"""

from .device import check_available, copy_to, empty, to_device, to_host  # noqa: F401
from .launch import (  # noqa: F401
    loss_and_gradient,
    predict,
    thread_limit,
    train_epoch,
    train_epoch_many,
)

NAME = "cuda"
