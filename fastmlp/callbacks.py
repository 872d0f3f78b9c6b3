"""What per-epoch callbacks receive, and the built-in progress display.

A callback is any callable taking an EpochRecord; returning True asks training to stop after this
epoch. Callbacks run on the host once per epoch; they must not be given per-batch work.
"""

import sys
import time
from dataclasses import dataclass

from .config import compile_seconds


@dataclass(frozen=True)
class EpochRecord:
    """Summary of one finished epoch.

    Attributes
    ----------
    epoch : int
        1 for the first epoch of this fit (or partial_fit) call.
    train_loss : float
        Mean training loss over the epoch, L2 penalty included (the value in ``loss_curve_``).
    validation_loss : float or None
        Loss on the validation set, without the L2 penalty, when one is monitored.
    validation_score : float or None
        Accuracy (classifier) or R^2 (regressor) on the validation set, when one is monitored.
    seconds : float
        Wall time of the epoch, validation included, compiling kernels excluded (a first fit
        in a fresh environment compiles them during its first epoch).
    learning_rate : float
        The optimizer's base learning rate during the epoch.
    model : estimator
        The estimator being trained. Its parameters may live on a GPU during training; use the
        record's numbers, not the model's weights, inside a callback.
    """

    epoch: int
    train_loss: float
    validation_loss: object
    validation_score: object
    seconds: float
    learning_rate: float
    model: object


class ProgressBar:
    """Progress over epochs: a tqdm bar when tqdm is installed, else one line per epoch."""

    def __init__(self, total, stream=None, unit="epoch"):
        self.total = total
        self.unit = unit
        self.done = 0
        self.stream = stream or sys.stderr
        self.started = time.perf_counter()
        self.compiled = compile_seconds()  # compiling is not training: kept out of the ETA
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self.bar = None
        else:
            self.bar = tqdm(total=total, unit=unit, file=self.stream, leave=True)

    def __call__(self, record):
        compiling = compile_seconds() - self.compiled
        if compiling > 0:  # the epoch compiled kernels first: start the clocks after that
            self.compiled += compiling
            self.started += compiling
            if self.bar is not None:
                self.bar.start_t += compiling
        fields = [f"loss {record.train_loss:.5f}"]
        if record.validation_loss is not None:
            fields.append(f"val_loss {record.validation_loss:.5f}")
        if record.validation_score is not None:
            fields.append(f"val_score {record.validation_score:.4f}")
        self.advance(fields, record.epoch)

    def advance(self, fields=(), position=None):
        """One more unit done (an epoch, or a fit of fit_many), with `fields` to show; the line
        without tqdm says `position` (the count of calls by default) of the total."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(fields), refresh=False)
            self.bar.update(1)
        else:
            elapsed = time.perf_counter() - self.started
            print(f"{self.unit} {position or self.done}/{self.total}  " + "  ".join(fields) +
                  f"  ({elapsed:.1f} s)", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
