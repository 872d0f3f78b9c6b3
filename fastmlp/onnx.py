"""ONNX export of fitted fastmlp estimators through skl2onnx's converter registry.

Importing this module registers a shape calculator and a converter for MLPClassifier and
MLPRegressor with skl2onnx (when it is installed), so that ``skl2onnx.to_onnx(model, X)`` works
on them and on pipelines holding them. skl2onnx is imported only here, never by fastmlp itself.
"""

import numpy as np

from . import fitted_state  # the estimator classes, registered by fastmlp.estimators
from .ops import LEAKY_SLOPE

__all__ = ["register", "to_onnx"]

_INSTALL_HINT = ("ONNX export needs skl2onnx, onnx and onnxruntime: "
                 "pip install 'fastmlp[onnx]'")

# Activations that are one ONNX operator in both float32 and float64 (onnxruntime has no double
# Elu, LeakyRelu or Erf; those are built from operators below).
_SINGLE_OPERATOR = {"identity": ("Identity", {}), "logistic": ("Sigmoid", {}),
                    "tanh": ("Tanh", {}), "relu": ("Relu", {}), "exp": ("Exp", {}),
                    "softmax": ("Softmax", {"axis": 1})}


def _skl2onnx():
    try:
        import skl2onnx
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return skl2onnx


def _tensor_types(model):
    """(skl2onnx tensor type class, onnx element type) of the model's dtype."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    if model._params.dtype == np.float64:
        return DoubleTensorType, TensorProto.DOUBLE
    return FloatTensorType, TensorProto.FLOAT


def _label_kind(model):
    """'indicator' (multilabel), 'int64', 'double' or 'string': the label output's type."""
    if model._label_binarizer.y_type_ == "multilabel-indicator":
        return "indicator"
    classes = np.asarray(model.classes_)
    if classes.dtype.kind in "biu":
        return "int64"
    if classes.dtype.kind == "f":
        return "double"
    return "string"  # scikit-learn's label encoding accepts nothing else


# ----------------------------------------------------------------------------- shape calculators
def _classifier_shapes(operator):
    from skl2onnx.common.data_types import DoubleTensorType, Int64TensorType, StringTensorType

    model = operator.raw_operator
    tensor, _ = _tensor_types(model)
    n = operator.inputs[0].get_first_dimension()
    n_columns = len(model.classes_) if model.n_outputs_ > 1 or len(model.classes_) == 2 else 1
    kind = _label_kind(model)
    if kind == "indicator":
        operator.outputs[0].type = Int64TensorType([n, model.n_outputs_])
    elif kind == "int64":
        operator.outputs[0].type = Int64TensorType([n])
    elif kind == "double":
        operator.outputs[0].type = DoubleTensorType([n])
    else:
        operator.outputs[0].type = StringTensorType([n])
    operator.outputs[1].type = tensor([n, n_columns])


def _regressor_shapes(operator):
    model = operator.raw_operator
    tensor, _ = _tensor_types(model)
    operator.outputs[0].type = tensor([operator.inputs[0].get_first_dimension(),
                                       model.n_outputs_])


# ----------------------------------------------------------------------------- converters
class _Graph:
    """Adds nodes and constants to skl2onnx's container under unique names."""

    def __init__(self, scope, container, element_type):
        self.scope, self.container, self.element_type = scope, container, element_type

    def constant(self, name, value, element_type=None):
        value = np.asarray(value)
        unique = self.scope.get_unique_variable_name(name)
        flat = value.ravel()
        if value.dtype.kind in "OUS":
            flat = [s.encode("utf-8") for s in flat]
        self.container.add_initializer(unique, element_type or self.element_type,
                                       list(value.shape), flat)
        return unique

    def node(self, op_type, inputs, output=None, op_domain="", **attributes):
        output = output or self.scope.get_unique_variable_name(op_type.lower())
        self.container.add_node(op_type, inputs, output,
                                name=self.scope.get_unique_operator_name(op_type),
                                op_domain=op_domain, **attributes)
        return output


def _activation(graph, name, z, output=None):
    """The node(s) computing activation `name` of z, as fastmlp's kernels define it."""
    from onnx import TensorProto

    if name in _SINGLE_OPERATOR:
        op_type, attributes = _SINGLE_OPERATOR[name]
        return graph.node(op_type, [z], output, **attributes)
    if name == "gelu":  # exact: z * Phi(z) = z * (1 + erf(z / sqrt(2))) / 2
        scaled = graph.node("Mul", [z, graph.constant("inv_sqrt2", 1 / np.sqrt(2))])
        if graph.element_type == TensorProto.DOUBLE:
            # onnxruntime has no double Erf: erf is evaluated in float32 (error ~1e-7).
            erf = graph.node("Cast", [graph.node("Erf", [graph.node(
                "Cast", [scaled], to=TensorProto.FLOAT)])], to=TensorProto.DOUBLE)
        else:
            erf = graph.node("Erf", [scaled])
        one_plus = graph.node("Add", [erf, graph.constant("one", 1.0)])
        half_z = graph.node("Mul", [z, graph.constant("half", 0.5)])
        return graph.node("Mul", [half_z, one_plus], output)
    if name == "leaky_relu":  # max(z, slope * z), slope in (0, 1)
        return graph.node("Max", [z, graph.node("Mul", [z, graph.constant("slope", LEAKY_SLOPE)])],
                          output)
    if name == "elu":  # z if z > 0 else exp(z) - 1; exp of min(z, 0) cannot overflow
        negative = graph.node("Sub", [graph.node("Exp", [graph.node(
            "Min", [z, graph.constant("zero", 0.0)])]), graph.constant("one", 1.0)])
        positive = graph.node("Greater", [z, graph.constant("zero", 0.0)])
        return graph.node("Where", [positive, z, negative], output)
    if name == "silu":  # z * sigmoid(z)
        return graph.node("Mul", [z, graph.node("Sigmoid", [z])], output)
    raise NotImplementedError(f"no ONNX form for activation {name!r}")


def _network(scope, operator, container):
    """The forward pass; returns (graph, name of the output layer's activations)."""
    model = operator.raw_operator
    _, element_type = _tensor_types(model)
    graph = _Graph(scope, container, element_type)
    dtype = model._params.dtype
    a = graph.node("Cast", [operator.inputs[0].full_name], to=element_type)
    last = len(model.coefs_) - 1
    for i, (W, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        z = graph.node("MatMul", [a, graph.constant("coefficient", W.astype(dtype))])
        z = graph.node("Add", [z, graph.constant("intercept", b.reshape(1, -1).astype(dtype))])
        a = _activation(graph, model.out_activation_ if i == last else model.activation, z)
    return graph, a


def _convert_classifier(scope, operator, container):
    from onnx import TensorProto

    model = operator.raw_operator
    graph, p = _network(scope, operator, container)
    label, proba = operator.outputs[0].full_name, operator.outputs[1].full_name
    kind = _label_kind(model)
    if kind == "indicator":  # label rows as fastmlp predicts them: p > 0.5
        graph.node("Identity", [p], proba)
        above = graph.node("Greater", [p, graph.constant("threshold", 0.5)])
        graph.node("Cast", [above], label, to=TensorProto.INT64)
        return
    if model.n_outputs_ == 1:  # binary: columns 1 - p, p
        graph.node("Concat", [graph.node("Sub", [graph.constant("one", [[1.0]]), p]), p],
                   proba, axis=1)
    else:
        graph.node("Identity", [p], proba)
    index = graph.node("ArgMax", [proba], axis=1, keepdims=0)
    classes = np.asarray(model.classes_)
    if kind == "int64":
        table = graph.constant("classes", classes.astype(np.int64), TensorProto.INT64)
    elif kind == "double":
        table = graph.constant("classes", classes.astype(np.float64), TensorProto.DOUBLE)
    else:
        table = graph.constant("classes", classes.astype(object), TensorProto.STRING)
    graph.node("Gather", [table, index], label, axis=0)


def _convert_regressor(scope, operator, container):
    _, y = _network(scope, operator, container)
    _Graph(scope, container, None).node("Identity", [y], operator.outputs[0].full_name)


def register():
    """Register fastmlp's estimators with skl2onnx (done when this module is imported, if
    skl2onnx is installed). Raises ImportError naming the packages when it is not."""
    skl2onnx = _skl2onnx()
    skl2onnx.update_registered_converter(
        fitted_state.ESTIMATORS["MLPClassifier"], "FastmlpMLPClassifier", _classifier_shapes,
        _convert_classifier,
        options={"zipmap": [True, False, "columns"], "output_class_labels": [False, True],
                 "nocl": [False]})
    skl2onnx.update_registered_converter(
        fitted_state.ESTIMATORS["MLPRegressor"], "FastmlpMLPRegressor", _regressor_shapes,
        _convert_regressor)


def to_onnx(model, X, *, zipmap=False, **kwargs):
    """An ONNX model (``onnx.ModelProto``) computing ``model``'s predictions.

    Parameters
    ----------
    model : fitted MLPClassifier or MLPRegressor, or a scikit-learn pipeline holding one
    X : array-like of shape (n_samples, n_features)
        A few rows of input: their dtype and width set the ONNX input's type and shape.
    zipmap : bool or 'columns', default=False
        For classifiers, skl2onnx's option: False gives the probabilities as a tensor
        (n_samples, n_classes); True a list of {label: probability} maps.
    **kwargs
        Passed on to ``skl2onnx.to_onnx`` (``target_opset``, ``options``, ...).

    Returns
    -------
    onnx.ModelProto
        Outputs ``label`` and ``probabilities`` (classifier) or ``variable`` (regressor), in the
        model's dtype; the network computes in the model's dtype whatever X's is.
    """
    skl2onnx = _skl2onnx()
    register()
    options = kwargs.pop("options", None)
    if options is None:
        options = {fitted_state.ESTIMATORS["MLPClassifier"]: {"zipmap": zipmap}}
    return skl2onnx.to_onnx(model, X, options=options, **kwargs)


try:
    register()
except ImportError:
    pass  # fastmlp works without skl2onnx; to_onnx says what to install
