"""Compile-time switches: the choices a fit makes (activations, loss, optimizer, dropout, sparse
input), handed to the compiled kernels as constants so that numba compiles only the branches the
fit takes.

An integer argument is a run-time value: numba would type and compile every branch on it (ten
activations, four losses, five optimizers), which was most of a cold start. A Switches value is
typed as literal integers instead; numba prunes the other branches before typing them and keeps
one specialisation per combination, in memory and in its on-disk cache.
"""

import functools
from typing import NamedTuple

from numba.core import types
from numba.extending import typeof_impl


class Const:
    """An integer the kernels see as a compile-time constant (numba's literal type).

    Deliberately not an int subclass: numba's C dispatcher would type an int subclass as a plain
    int64 inside a tuple and reuse a specialisation compiled for another value.
    """

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = int(value)

    def __index__(self):  # lets numba unbox it where a value is needed
        return self.value

    __int__ = __index__

    def __repr__(self):
        return f"Const({self.value})"


class Switches(NamedTuple):
    """One fit's compile-time choices; each field is a Const."""

    hidden: Const     # activation code of the hidden layers (fastmlp/codes.py)
    output: Const     # activation code of the output layer
    loss: Const       # loss code
    optimizer: Const  # optimizer code; ignored outside training
    dropout: object   # Const(1) when training with dropout, else None
    sparse: object    # Const(1) when the input is CSR, else None


@typeof_impl.register(Const)
def _typeof_const(value, context):
    return types.IntegerLiteral(value.value)


@typeof_impl.register(Switches)
def _typeof_switches(value, context):
    return _switches_type(tuple(None if field is None else field.value for field in value))


@functools.cache
def _switches_type(codes):
    """The numba type of a Switches holding these codes, made once: building literal types
    took tens of microseconds in every kernel call (a digits fit makes 200)."""
    # None stays None: kernels test `dropout is not None`, which numba decides before typing.
    return types.NamedTuple([types.none if code is None else types.IntegerLiteral(code)
                             for code in codes], Switches)


def switches(net, features, optimizer=0):
    """The Switches of a bundles.Network run on bundles.Features (with an optimizer code)."""
    return Switches(Const(net.hidden), Const(net.output), Const(net.loss), Const(optimizer),
                    Const(1) if net.dropout > 0 else None,
                    Const(1) if features.indptr.shape[0] > 0 else None)
