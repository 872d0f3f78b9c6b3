"""The CUDA backend: the CPU backend's functions (train_epoch, loss_and_gradient, predict,
thread_limit, to_device, to_host, empty, copy_to, check_available) with the same arguments, on
device arrays; and train_epoch_many, one epoch of a group of models of one shape (issue #24),
with stack_rows / unstack_rows to gather the group's state into (M, P) arrays and back.

Only the public functions live here: device checks and array moves in device.py, the launch
sequence in launch.py, the per-layer kernels in kernels.py and the persistent one-launch epoch
kernel in fused.py. Importing this package needs neither numba-cuda nor a GPU, so that
device="auto" can fall back to the CPU.
"""

from .device import (  # noqa: F401
    check_available,
    copy_to,
    empty,
    stack_rows,
    to_device,
    to_host,
    unstack_rows,
)
from .launch import (  # noqa: F401
    loss_and_gradient,
    predict,
    thread_limit,
    train_epoch,
    train_epoch_many,
)

NAME = "cuda"
