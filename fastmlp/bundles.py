"""The named bundles every backend's kernels take: the network, the input rows, the training state
and one epoch's optimizer settings.

Numba compiles a named tuple to a plain struct, so naming the fields costs nothing at run time;
kernels read ``net.layers``, never ``net[0]``. Plain data only: no logic lives here beyond
stacking one-model bundles into many-model ones and checking a group's order lengths.
"""

from typing import NamedTuple

import numpy as np

# Columns of the layer table (Network.layers, fastmlp/layout.py): one row per weight layer.
FAN_IN, FAN_OUT, WEIGHT_OFFSET, BIAS_OFFSET = 0, 1, 2, 3


class Network(NamedTuple):
    """The network a kernel runs: its shape, activations, loss and regularisation."""

    layers: np.ndarray  # (L, 4) int64 rows: FAN_IN, FAN_OUT, WEIGHT_OFFSET, BIAS_OFFSET
    hidden: int         # activation code of every hidden layer (fastmlp/ops.py)
    output: int         # activation code of the output layer
    loss: int           # loss code
    alpha: float        # L2 penalty on the weights (not the biases)
    dropout: float      # dropout rate on hidden units while training; 0.0 for none
    seed: int           # seed of this epoch's dropout masks


class Features(NamedTuple):
    """The input rows, dense or CSR: exactly one of the two forms is non-empty."""

    X: np.ndarray        # (N, F) dense input; (0, F) when the input is CSR (F gives the width)
    data: np.ndarray     # (nnz,) CSR values; empty for dense input
    indices: np.ndarray  # (nnz,) int64 CSR column indices; empty for dense input
    indptr: np.ndarray   # (N + 1,) int64 CSR row pointers; empty for dense input


class TrainState(NamedTuple):
    """Flat (P,) buffers a training epoch updates in place."""

    params: np.ndarray   # weights of every layer, then biases (fastmlp/layout.py)
    dparams: np.ndarray  # the batch gradient (work space)
    slot_1: np.ndarray   # SGD velocity, Adam's first moment, Adagrad's sum, RMSprop's mean square
    slot_2: np.ndarray   # Adam's second moment; the same array as slot_1 for other optimizers


class OptimizerStep(NamedTuple):
    """One epoch's optimizer settings; fields an optimizer does not use are 0."""

    kind: int              # optimizer code (fastmlp/ops.py)
    learning_rate: float   # this epoch's rate, schedules and decay applied
    momentum: float        # SGD
    nesterov: bool         # SGD
    beta_1: float          # Adam, AdamW
    beta_2: float          # Adam, AdamW
    epsilon: float         # Adam, AdamW, Adagrad, RMSprop
    rho: float             # RMSprop
    weight_decay: float    # AdamW's decoupled decay
    step: int              # Adam's update counter before this epoch


class Networks(NamedTuple):
    """M networks of one shape trained together (fastmlp/many.py): model m is the Network
    Network(layers, hidden[m], output[m], loss[m], alpha[m], dropout[m], seed[m])."""

    layers: np.ndarray   # (L, 4) int64, the one layer table they share
    hidden: np.ndarray   # (M,) int64 activation codes of the hidden layers
    output: np.ndarray   # (M,) int64 activation codes of the output layer
    loss: np.ndarray     # (M,) int64 loss codes
    alpha: np.ndarray    # (M,) float64 L2 penalties
    dropout: np.ndarray  # (M,) float64 dropout rates
    seed: np.ndarray     # (M,) int64 this epoch's dropout seeds

    @classmethod
    def of(cls, nets):
        """The Networks of a list of Networks that share their layer table."""
        return cls(nets[0].layers, *(np.array([net[k] for net in nets], dtype=dtype)
                                     for k, dtype in enumerate(_NETWORK_DTYPES, start=1)))


class OptimizerSteps(NamedTuple):
    """The OptimizerStep of each of M models trained together, field by field: model m's is
    OptimizerStep(kind[m], learning_rate[m], ..., step[m])."""

    kind: np.ndarray           # (M,) int64
    learning_rate: np.ndarray  # (M,) float64
    momentum: np.ndarray       # (M,) float64
    nesterov: np.ndarray       # (M,) bool
    beta_1: np.ndarray         # (M,) float64
    beta_2: np.ndarray         # (M,) float64
    epsilon: np.ndarray        # (M,) float64
    rho: np.ndarray            # (M,) float64
    weight_decay: np.ndarray   # (M,) float64
    step: np.ndarray           # (M,) int64

    @classmethod
    def of(cls, opts):
        """The OptimizerSteps of a list of OptimizerSteps."""
        return cls(*(np.array([opt[k] for opt in opts], dtype=dtype)
                     for k, dtype in enumerate(_STEP_DTYPES)))


def order_lengths(orders, lengths):
    """The (G,) int64 numbers of entries an epoch visits in each row of a group's (G, n) batch
    orders (train_epoch_many's `lengths`: shorter orders padded), all n for None; ValueError
    unless each is between 0 and n."""
    n = orders.shape[1]
    if lengths is None:
        return np.full(orders.shape[0], n, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.shape != (orders.shape[0],) or np.any(lengths < 0) or np.any(lengths > n):
        raise ValueError(f"lengths must give 0 to {n} rows for each of the {orders.shape[0]} "
                         f"orders, got {lengths!r}.")
    return lengths


# The array dtypes of Networks' fields after `layers`, and of OptimizerSteps' fields.
_NETWORK_DTYPES = (np.int64, np.int64, np.int64, np.float64, np.float64, np.int64)
_STEP_DTYPES = (np.int64, np.float64, np.float64, np.bool_, np.float64, np.float64, np.float64,
                np.float64, np.float64, np.int64)
