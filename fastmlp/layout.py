"""Where each layer's weights and biases live inside one flat parameter buffer.

The order is scikit-learn's packing order (every weight matrix, then every bias vector), so the flat
vector handed to L-BFGS is the same vector scikit-learn optimises. No arithmetic happens here.
"""

import numpy as np

from .bundles import BIAS_OFFSET


class Layout:
    """Offsets of every layer inside a flat buffer, computed once.

    Parameters
    ----------
    layer_units : sequence of int
        Units per layer, input first: ``[n_features, *hidden_layer_sizes, n_outputs]``.

    Attributes
    ----------
    table : ndarray of shape (n_layers - 1, 4), int64
        One row per weight layer: ``fan_in, fan_out, weight_offset, bias_offset``. This is the form
        the compiled kernels take.
    n_params : int
        Length of every flat buffer (parameters, gradients, optimizer state).
    """

    def __init__(self, layer_units):
        self.layer_units = tuple(int(u) for u in layer_units)
        fans = list(zip(self.layer_units[:-1], self.layer_units[1:]))
        weight_sizes = [fan_in * fan_out for fan_in, fan_out in fans]
        weight_offsets = np.cumsum([0] + weight_sizes)
        bias_offsets = weight_offsets[-1] + np.cumsum([0] + [fan_out for _, fan_out in fans])
        self.table = np.array(
            [
                (fan_in, fan_out, weight_offsets[i], bias_offsets[i])
                for i, (fan_in, fan_out) in enumerate(fans)
            ],
            dtype=np.int64,
        ).reshape(-1, 4)
        self.n_params = int(bias_offsets[-1])

    def __eq__(self, other):
        return isinstance(other, Layout) and self.layer_units == other.layer_units

    def __hash__(self):
        return hash(self.layer_units)

    @property
    def n_layers(self):
        return len(self.layer_units)

    @property
    def n_weights(self):
        """Number of weights (biases excluded): the FLOP count of a forward pass per sample."""
        return int(self.table[0, BIAS_OFFSET])  # the weights come first, then the biases

    def empty(self, dtype):
        return np.empty(self.n_params, dtype=dtype)

    def coefs(self, flat):
        """Views of the weight matrices, shape (fan_in, fan_out) each, into ``flat``."""
        return [
            flat[w_off : w_off + fan_in * fan_out].reshape(fan_in, fan_out)
            for fan_in, fan_out, w_off, _ in self.table
        ]

    def intercepts(self, flat):
        """Views of the bias vectors into ``flat``."""
        return [flat[b_off : b_off + fan_out] for _, fan_out, _, b_off in self.table]

    def pack(self, coefs, intercepts, dtype):
        """A new flat buffer holding copies of the given arrays.

        Raises ValueError naming ``coefs_`` or ``intercepts_`` unless each is a list or tuple of
        one finite real array per layer, of that layer's shape: every value of the buffer is
        written, none is left uninitialised.
        """
        flat = self.empty(dtype)
        n_layers = len(self.layer_units) - 1
        for name, values, views in (("coefs_", coefs, self.coefs(flat)),
                                    ("intercepts_", intercepts, self.intercepts(flat))):
            if not isinstance(values, (list, tuple)) or len(values) != n_layers:
                raise ValueError(f"{name} must be a list of {n_layers} arrays for layer sizes "
                                 f"{list(self.layer_units)}; got {type(values).__name__}"
                                 + (f" of length {len(values)}" if hasattr(values, "__len__")
                                    else "") + ".")
            for i, (view, value) in enumerate(zip(views, values)):
                value = np.asarray(value)
                if value.shape != view.shape:
                    raise ValueError(f"{name}[{i}] must have shape {view.shape}; got an array "
                                     f"of shape {value.shape}.")
                if value.dtype.kind not in "biuf" or not np.isfinite(value).all():
                    raise ValueError(f"{name}[{i}] must hold finite real numbers; got dtype "
                                     f"{value.dtype}"
                                     + (" with non-finite values" if value.dtype.kind in "biuf"
                                        else "") + ".")
                view[...] = value
                if not np.isfinite(view).all():
                    raise ValueError(f"{name}[{i}] has values too large for {flat.dtype}.")
        return flat
