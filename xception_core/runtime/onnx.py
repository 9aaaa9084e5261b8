"""An ONNX Runtime forward for our Xception, emitted from its layer graph.

`to_onnx(model, features_layer)` reads a functional model into the layer graph's nodes
(`keras_graph`: for our models, the architecture's own graph plus the head, node for node), folds
each BatchNorm into the conv before it (`xception_core.runtime.folding`), and emits one ONNX op
(or two) per node through one table keyed by the node's op (`EMITTERS`), with the `onnx.helper`
API: Conv (group=C for the depthwise half of a separable conv), Relu, MaxPool, AveragePool, Sum,
Concat, GlobalAveragePool, Gemm, Softmax; the weights come from the Keras layer of the node's
name. Translation is far quicker than a tf2onnx export of the same model, and no tf2onnx is
needed at run time; ONNX Runtime then runs it faster than the TensorFlow forward (both figures in
bench/README.md). The graph runs in NCHW, ONNX Runtime's native
layout (it re-blocks convolutions to NCHWc); one Transpose brings the NHWC input in and one takes
the exit-flow features out, so `OnnxForward` returns exactly what `Classifier`'s TensorFlow
forward returns: (features (N, h, w, 2048) NHWC, model output (N, classes)).

Only the layer types the node vocabulary has (`xception_core.arch.nodes`: Xception's, Inception's,
simple transfer heads') are supported; anything else raises `UnsupportedLayerError`. Which
backend runs is chosen in one place, `xception_core.runtime.forward`.

Needs `onnx` and `onnxruntime` (both optional for the package: `available()` says whether they
are importable). Pure NumPy besides those; no UI code.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from xception_core.arch.graph import LayerGraph, LayerNode, same_padding
from xception_core.runtime.folding import bn_affine, foldable_pairs, folded_weights, layer_inputs
# The graph's names and the session that runs it live where a process without Keras can import them.
from xception_core.runtime.ort import (  # noqa: F401 - re-exported
    FEATURES, FLOAT16_MAX, INPUT, OUTPUT, OnnxForward, available, means_name, pooled_name, quantize_int8,
)

__all__ = ["OnnxForward", "SharedArrays", "forward_of", "UnsupportedLayerError", "available", "keras_graph",
           "means_name", "pooled_name", "quantize_int8", "to_onnx", "to_onnx_parts"]

OPSET = 17
EXTERNAL_MIN_BYTES = 1024


class UnsupportedLayerError(ValueError):
    """The model has a layer this exporter does not translate."""


class SharedArrays:
    """The translated weight arrays of each live model, so that its sessions hold one copy.

    Two sessions of one model (the classifier's and the explorer's) are built independently; each
    translation gives fresh arrays, and an array equal to one already in use for the same model is
    replaced by that one. Weak on both sides: an entry lives only while its model and some session
    using the array do, so this holds no memory of its own and cannot grow past what is in use.
    Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: weakref.WeakKeyDictionary[keras.Model, weakref.WeakValueDictionary[str, np.ndarray]] = (
            weakref.WeakKeyDictionary())

    def __len__(self) -> int:
        """Arrays alive now, over all models."""
        with self._lock:
            return sum(len(kept) for kept in self._by_model.values())

    def share(self, model: keras.Model, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`arrays` ({initializer name: array} of one translation of `model`), each replaced by an
        equal array already in use for `model` where there is one (in place; also returned)."""
        with self._lock:
            kept = self._by_model.get(model)
            if kept is None:
                kept = self._by_model[model] = weakref.WeakValueDictionary()
            for name, array in arrays.items():
                old = kept.get(name)
                same = old is not None and old.shape == array.shape and old.dtype == array.dtype
                if same and np.array_equal(old, array):
                    arrays[name] = old
                else:
                    kept[name] = array
        return arrays


# Process-wide on purpose: the sessions that share arrays are built by objects that do not know
# each other. Bounded by what is in use (see `SharedArrays`).
_SHARED = SharedArrays()


def _pads(node: LayerNode, in_shape: tuple) -> dict[str, Any]:
    """ONNX padding attributes for a 'valid'/'same' window node on an NHWC input shape."""
    if node.padding == "valid":
        return {"pads": [0, 0, 0, 0]}
    (kh, kw), h, w = node.kernel_shape, in_shape[1], in_shape[2]
    if h is None or w is None:
        return {"auto_pad": "SAME_UPPER"}  # TF's rule: the odd pixel goes at the end
    hp = same_padding(h, kh, node.stride, node.dilation)
    wp = same_padding(w, kw, node.stride, node.dilation)
    return {"pads": [hp[0], wp[0], hp[1], wp[1]]}


class _Graph:
    def __init__(self, external: bool = False) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.external = external
        self.arrays: dict[str, np.ndarray] = {}  # external weights by initializer name
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}:{self._n}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        value = np.ascontiguousarray(value, np.float32)
        # ONNX Runtime wants small constants (scalars, shapes) inline for shape inference.
        if not self.external or value.nbytes < EXTERNAL_MIN_BYTES:
            self.initializers.append(self.numpy_helper.from_array(value, name))
            return name
        from onnx import TensorProto

        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape,
                             data_location=TensorProto.EXTERNAL)
        for key, text in (("location", "memory"), ("length", str(value.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, text
        self.initializers.append(tensor)
        self.arrays[name] = value
        return name

    def op(self, op_type: str, inputs: list[str], base: str, output: str | None = None, **attrs: Any) -> str:
        out = output or self.name(base)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=self.name(f"{base}/{op_type}"), **attrs))
        return out


# ------------------------------------------------------------------------------ Keras layers → nodes


def _activation_name(layer: keras.layers.Layer) -> str | None:
    """A layer's own activation by name; None for none ('linear')."""
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    return None if activation is None or name == "linear" else name


def _window(layer: keras.layers.Layer, kernel: tuple[int, int]) -> dict[str, Any]:
    """The node fields of a Keras layer's square-strided window (a non-square kernel is kept)."""
    strides = tuple(layer.strides)
    dilation = tuple(getattr(layer, "dilation_rate", (1, 1)))
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedLayerError(f"{layer.name}: data_format {layer.data_format!r}")
    if layer.padding not in ("same", "valid"):
        raise UnsupportedLayerError(f"{layer.name}: padding {layer.padding!r}")
    if strides[0] != strides[1] or dilation[0] != dilation[1]:
        raise UnsupportedLayerError(f"{layer.name}: strides {strides} or dilation {dilation} differ by axis")
    return dict(kernel=kernel[0], kernel_width=None if kernel[0] == kernel[1] else kernel[1], stride=strides[0],
                padding=layer.padding, dilation=dilation[0])


def _conv_node(layer: keras.layers.Layer, op: str, filters: int | None) -> dict[str, Any]:
    return dict(op=op, filters=filters, bias=bool(layer.use_bias), activation=_activation_name(layer),
                multiplier=getattr(layer, "depth_multiplier", 1), **_window(layer, tuple(layer.kernel_size)))


def _read_conv2d(layer: keras.layers.Layer) -> dict[str, Any]:
    if layer.groups != 1:
        raise UnsupportedLayerError(f"{layer.name}: grouped Conv2D")
    return _conv_node(layer, "conv", layer.filters)


def _read_batchnorm(layer: keras.layers.Layer) -> dict[str, Any]:
    if layer.axis not in (-1, len(layer.input.shape) - 1):
        raise UnsupportedLayerError(f"{layer.name}: BatchNorm axis {layer.axis}")
    return dict(op="batchnorm", scale=bool(layer.scale))


def _read_relu(layer: keras.layers.Layer) -> dict[str, Any]:
    if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
        raise UnsupportedLayerError(f"{layer.name}: ReLU with max_value/negative_slope/threshold")
    return dict(op="relu")


def _read_activation(layer: keras.layers.Layer) -> dict[str, Any]:
    name = _activation_name(layer)
    if name is None:
        return dict(op="identity")
    if name not in ("relu", "softmax"):
        raise UnsupportedLayerError(f"{layer.name}: activation {name!r}")
    return dict(op=name)


def _read_global_pool(op: str) -> Callable[[keras.layers.Layer], dict[str, Any]]:
    def read(layer: keras.layers.Layer) -> dict[str, Any]:
        if layer.keepdims:
            raise UnsupportedLayerError(f"{layer.name}: keepdims=True")
        return dict(op=op)
    return read


def _read_concat(layer: keras.layers.Layer) -> dict[str, Any]:
    if layer.axis not in (-1, len(layer.output.shape) - 1):
        raise UnsupportedLayerError(f"{layer.name}: concatenation along axis {layer.axis}")
    return dict(op="concat")


# Keras layer type → the fields of its node (in this order: the first type that matches reads it).
READERS: tuple[tuple[type, Callable[[keras.layers.Layer], dict[str, Any]]], ...] = (
    (keras.layers.Dropout, lambda layer: dict(op="identity")),
    (keras.layers.SeparableConv2D, lambda layer: _conv_node(layer, "separable", layer.filters)),
    (keras.layers.DepthwiseConv2D, lambda layer: _conv_node(layer, "depthwise", None)),
    (keras.layers.Conv2D, _read_conv2d),
    (keras.layers.BatchNormalization, _read_batchnorm),
    (keras.layers.ReLU, _read_relu),
    (keras.layers.Activation, _read_activation),
    (keras.layers.MaxPooling2D, lambda layer: dict(op="maxpool", **_window(layer, tuple(layer.pool_size)))),
    (keras.layers.AveragePooling2D, lambda layer: dict(op="avgpool", **_window(layer, tuple(layer.pool_size)))),
    (keras.layers.Add, lambda layer: dict(op="add")),
    (keras.layers.Concatenate, _read_concat),
    (keras.layers.GlobalAveragePooling2D, _read_global_pool("global_avg_pool")),
    (keras.layers.GlobalMaxPooling2D, _read_global_pool("global_max_pool")),
    (keras.layers.Dense, lambda layer: dict(op="dense", filters=layer.units, bias=bool(layer.use_bias),
                                            activation=_activation_name(layer))),
)


def keras_graph(model: keras.Model) -> LayerGraph:
    """The layer graph of a functional Keras model (named after the model), in the model's own
    layer order: the nodes the translator emits. For a model of ours it is the architecture's own graph
    (`xception_core.arch.graph.layer_graph`) plus its head's nodes, node for node (a test checks).

    Raises:
        UnsupportedLayerError: A layer type or setting without a node, or a layer called twice.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayerError("only single-input, single-output models are translated")
    nodes: list[LayerNode] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            nodes.append(LayerNode(layer.name, "input", ()))
            continue
        if len(layer._inbound_nodes) != 1:
            raise UnsupportedLayerError(f"{layer.name}: layers called more than once are not translated")
        read = next((r for kind, r in READERS if isinstance(layer, kind)), None)
        if read is None:
            raise UnsupportedLayerError(f"{layer.name}: layer type {type(layer).__name__} has no ONNX translation here")
        inputs = tuple(t._keras_history.operation.name for t in layer_inputs(layer))
        nodes.append(LayerNode(layer.name, inputs=inputs, **read(layer)))
    return LayerGraph(model.name, tuple(nodes), int(model.inputs[0].shape[-1]))


# ------------------------------------------------------------------------------------- nodes → ONNX


def _activation(g: _Graph, x: str, node: LayerNode, rank: int) -> str:
    """The activation a conv or dense node applies itself."""
    if node.activation is None:
        return x
    if node.activation == "relu":
        return g.op("Relu", [x], node.name)
    if node.activation == "softmax" and rank == 2:
        return g.op("Softmax", [x], node.name, axis=-1)
    raise UnsupportedLayerError(f"{node.name}: activation {node.activation!r}")


def _depthwise_kernel(depthwise: np.ndarray) -> np.ndarray:
    """(kh, kw, C, mult) -> (C·mult, 1, kh, kw), output channel c·mult + m."""
    kh, kw, c, mult = depthwise.shape
    return depthwise.transpose(2, 3, 0, 1).reshape(c * mult, 1, kh, kw)


def _group_conv_attrs(node: LayerNode, channels: int, shape: tuple) -> dict[str, Any]:
    return dict(group=channels, kernel_shape=list(node.kernel_shape), strides=[node.stride] * 2,
                dilations=[node.dilation] * 2, **_pads(node, shape))


def _emit_separable(g: _Graph, node: LayerNode, xs: list[str], shape: tuple, w: list[np.ndarray], bias: bool) -> str:
    dw = _depthwise_kernel(w[0])
    y = g.op("Conv", [xs[0], g.const(f"{node.name}/depthwise", dw)], f"{node.name}/depthwise",
             **_group_conv_attrs(node, w[0].shape[2], shape))
    pointwise = w[1][0, 0].T[:, :, None, None]  # (Cin·mult, Cout) -> (Cout, Cin·mult, 1, 1)
    inputs = [y, g.const(f"{node.name}/pointwise", pointwise)]
    if bias:
        inputs.append(g.const(f"{node.name}/bias", w[2]))
    return _activation(g, g.op("Conv", inputs, node.name, kernel_shape=[1, 1]), node, 4)


def _emit_depthwise(g: _Graph, node: LayerNode, xs: list[str], shape: tuple, w: list[np.ndarray], bias: bool) -> str:
    inputs = [xs[0], g.const(f"{node.name}/kernel", _depthwise_kernel(w[0]))]
    if bias:
        inputs.append(g.const(f"{node.name}/bias", w[1]))
    y = g.op("Conv", inputs, node.name, **_group_conv_attrs(node, w[0].shape[2], shape))
    return _activation(g, y, node, 4)


def _emit_conv(g: _Graph, node: LayerNode, xs: list[str], shape: tuple, w: list[np.ndarray], bias: bool) -> str:
    kernel = w[0]  # (kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw)
    inputs = [xs[0], g.const(f"{node.name}/kernel", kernel.transpose(3, 2, 0, 1))]
    if bias:
        inputs.append(g.const(f"{node.name}/bias", w[1]))
    y = g.op("Conv", inputs, node.name, kernel_shape=list(node.kernel_shape), strides=[node.stride] * 2,
             dilations=[node.dilation] * 2, **_pads(node, shape))
    return _activation(g, y, node, 4)


def _emit_batchnorm(g: _Graph, node: LayerNode, xs: list[str], shape: tuple, w: list[np.ndarray], bias: bool) -> str:
    """A BatchNorm that could not be folded: its inference affine map, `w` = [scale, shift]."""
    s, t = w
    bshape = (-1, 1, 1) if len(shape) == 4 else (-1,)
    y = g.op("Mul", [xs[0], g.const(f"{node.name}/scale", s.reshape(bshape))], node.name)
    return g.op("Add", [y, g.const(f"{node.name}/shift", t.reshape(bshape))], node.name)


def _emit_softmax(g: _Graph, node: LayerNode, xs: list[str], shape: tuple, *_: Any) -> str:
    if len(shape) != 2:
        raise UnsupportedLayerError(f"{node.name}: activation 'softmax'")
    return g.op("Softmax", [xs[0]], node.name, axis=-1)


def _emit_pool(op_type: str) -> Callable[..., str]:
    def emit(g: _Graph, node: LayerNode, xs: list[str], shape: tuple, *_: Any) -> str:
        return g.op(op_type, [xs[0]], node.name, kernel_shape=list(node.kernel_shape), strides=[node.stride] * 2,
                    **_pads(node, shape))
    return emit


def _emit_global_pool(op_type: str) -> Callable[..., str]:
    def emit(g: _Graph, node: LayerNode, xs: list[str], *_: Any) -> str:
        return g.op("Flatten", [g.op(op_type, [xs[0]], node.name)], node.name, axis=1)
    return emit


def _emit_dense(g: _Graph, node: LayerNode, xs: list[str], shape: tuple, w: list[np.ndarray], bias: bool) -> str:
    if len(shape) != 2:
        raise UnsupportedLayerError(f"{node.name}: Dense on a rank-{len(shape)} input")
    inputs = [xs[0], g.const(f"{node.name}/kernel", w[0])]
    if bias:
        inputs.append(g.const(f"{node.name}/bias", w[1]))
    return _activation(g, g.op("Gemm", inputs, node.name), node, 2)


# One emitter per node op: (graph, node, NCHW inputs, NHWC input shape, weights, bias) -> output name.
EMITTERS: dict[str, Callable[..., str]] = {
    "identity": lambda g, node, xs, *_: xs[0],
    "separable": _emit_separable,
    "depthwise": _emit_depthwise,
    "conv": _emit_conv,
    "batchnorm": _emit_batchnorm,
    "relu": lambda g, node, xs, *_: g.op("Relu", [xs[0]], node.name),
    "softmax": _emit_softmax,
    "maxpool": _emit_pool("MaxPool"),
    "avgpool": _emit_pool("AveragePool"),  # count_include_pad=0, as TensorFlow's 'same' averages
    "add": lambda g, node, xs, *_: g.op("Sum", xs, node.name),
    "concat": lambda g, node, xs, *_: g.op("Concat", xs, node.name, axis=1),  # channels, in NCHW
    "global_avg_pool": _emit_global_pool("GlobalAveragePool"),
    "global_max_pool": _emit_global_pool("GlobalMaxPool"),
    "dense": _emit_dense,
}


def _weights(layer: keras.layers.Layer, node: LayerNode, pairs: Mapping[str, keras.layers.BatchNormalization],
             fold_cache: dict[tuple[str, str], list[np.ndarray]] | None = None) -> tuple[list[np.ndarray], bool]:
    """(the arrays `node`'s emitter reads, whether it adds a bias): the layer's own, or with the
    BatchNorm that reads it folded in (a bias last; from `fold_cache`, by layer and BatchNorm name,
    where an earlier graph of the same weights folded them); an unfolded BatchNorm's [scale, shift]."""
    if node.op == "batchnorm":
        return [np.asarray(v) for v in bn_affine(layer)], False
    if node.name in pairs:
        if fold_cache is None:
            return folded_weights(layer, pairs[node.name]), True
        key = (node.name, pairs[node.name].name)
        if key not in fold_cache:
            fold_cache[key] = folded_weights(layer, pairs[node.name])
        return fold_cache[key], True
    return [np.asarray(v) for v in layer.get_weights()], node.bias


def to_onnx(model: keras.Model, features_layer: str, *, fold: bool = True, check: bool = False,
            extra_outputs: tuple[str, ...] | list[str] = (), pooled_outputs: tuple[str, ...] | list[str] = (),
            block_maps: Mapping[str, str] | None = None) -> Any:
    """The model as an `onnx.ModelProto` with outputs (features, output), weights inside.

    See `to_onnx_parts` for the arguments; this is its self-contained form (for saving,
    checking, quantizing).
    """
    proto, _ = _translate(model, features_layer, fold=fold, check=check, extra_outputs=extra_outputs,
                          pooled_outputs=pooled_outputs, block_maps=block_maps, external=False)
    return proto


def to_onnx_parts(model: keras.Model, features_layer: str, *, fold: bool = True,
                  extra_outputs: tuple[str, ...] | list[str] = (), pooled_outputs: tuple[str, ...] | list[str] = (),
                  block_maps: Mapping[str, str] | None = None,
                  shared: SharedArrays | None = None,
                  fold_cache: dict[tuple[str, str], list[np.ndarray]] | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    """The model as a weight-free `onnx.ModelProto` plus its weights, for `OnnxForward`.

    The graph references every large weight as external data; ONNX Runtime then reads the NumPy
    arrays themselves (`SessionOptions.add_external_initializers`) instead of a serialized copy,
    so building a session holds the weights once, not three times (the proto, its bytes, the
    session's own copy); the saving is in bench/README.md. Arrays equal to ones a live session of
    the same model already uses are those very arrays (`shared`, default: this process's
    `SharedArrays`). `fold_cache`: a dict kept across the graphs of one set of weights (both wirings'
    graphs: `rewire` keeps every layer's weights and name), so each conv is folded once.

    Returns:
        (proto, {initializer name: float32 array}).
    """
    proto, arrays = _translate(model, features_layer, fold=fold, check=False, extra_outputs=extra_outputs,
                               pooled_outputs=pooled_outputs, block_maps=block_maps, external=True, fold_cache=fold_cache)
    return proto, (_SHARED if shared is None else shared).share(model, arrays)


def _translate(model: keras.Model, features_layer: str, *, fold: bool, check: bool,
               extra_outputs: tuple[str, ...] | list[str], pooled_outputs: tuple[str, ...] | list[str],
               block_maps: Mapping[str, str] | None, external: bool,
               fold_cache: dict[tuple[str, str], list[np.ndarray]] | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    """The model as an `onnx.ModelProto` with outputs (features, output).

    Args:
        model: A single-input, single-output functional model, NHWC input, whose layers are each
            called once (our Xception, either wiring, any simple head).
        features_layer: Name of the layer whose output is returned as `features` (NHWC); a
            BatchNorm that gets folded may be named (its conv's output carries its values).
        fold: Fold every foldable BatchNorm into its conv (`xception_core.runtime.folding`), in NumPy,
            without building a Keras clone.
        check: Run `onnx.checker` on the result (0.2 s: it serialises the whole model).
        extra_outputs: Names of further layers whose outputs (NHWC) to expose, each as an output
            of the same name: e.g. every block's output for the explorer, in one pass.
        pooled_outputs: Names of layers whose outputs to expose averaged over space, (N, C), each
            as an output named `pooled_name(layer)`: features for transfer learning from several
            blocks in one pass, without moving whole feature maps out of the graph.
        block_maps: {output name: layer name} of rank-4 layers to expose the way the explorer
            keeps them, reduced inside the same pass: `name` = the map as float16 in NCHW
            (N, c, h, w), clipped to ±65504 so nothing becomes inf, and `means_name(name)` = the
            (N, c) float32 mean of each channel. Staying in NCHW (ONNX Runtime's own layout)
            and halving the bytes costs less than NHWC float32 (bench/README.md).

    Returns:
        The model: input 'input' (N, H, W, C) float32; outputs 'features' (N, h, w, c) and
        'output' (N, classes), the batch axis dynamic.

    Raises:
        UnsupportedLayerError: A layer type or setting without a translation.
    """
    from onnx import TensorProto, checker, helper

    graph_nodes = keras_graph(model)
    g = _Graph(external)
    model_input = model.inputs[0]
    shapes: dict[str, tuple] = {}
    names: dict[str, str] = {}
    pairs = foldable_pairs(model) if fold else {}
    folded = {bn.name for bn in pairs.values()}
    for node in graph_nodes.nodes:
        if node.op == "input":
            names[node.name] = g.op("Transpose", [INPUT], "input", perm=[0, 3, 1, 2])
            shapes[node.name] = tuple(model_input.shape)
            continue
        layer = model.get_layer(node.name)
        if node.name in folded:  # its conv already computes its output
            names[node.name] = names[node.inputs[0]]
        else:
            names[node.name] = EMITTERS[node.op](g, node, [names[i] for i in node.inputs], shapes[node.inputs[0]],
                                                 *_weights(layer, node, pairs, fold_cache))
        shapes[node.name] = tuple(layer.output.shape)
    features_tensor = model.get_layer(features_layer).output
    output_layer = model.outputs[0]._keras_history.operation.name
    g.op("Transpose", [names[features_layer]], "features", output=FEATURES, perm=[0, 2, 3, 1])
    g.op("Identity", [names[output_layer]], "output", output=OUTPUT)
    extra = [(name, model.get_layer(name).output) for name in extra_outputs]
    for name, tensor in extra:
        g.op("Transpose", [names[name]], name, output=name, perm=[0, 2, 3, 1] if len(tensor.shape) == 4 else [0, 1])
    pooled = [(name, model.get_layer(name).output) for name in pooled_outputs]
    for name, tensor in pooled:
        if len(tensor.shape) != 4:
            raise UnsupportedLayerError(f"{name}: only 4-d (N, H, W, C) outputs can be pooled")
        mean = g.op("GlobalAveragePool", [names[name]], f"{name}/pool")
        g.op("Flatten", [mean], f"{name}/pool", output=pooled_name(name), axis=1)
    maps = [(name, layer, model.get_layer(layer).output) for name, layer in (block_maps or {}).items()]
    if maps:
        lo, hi = g.const("fp16/min", np.float32(-FLOAT16_MAX)), g.const("fp16/max", np.float32(FLOAT16_MAX))
    for name, layer_name, tensor in maps:
        if len(tensor.shape) != 4:
            raise UnsupportedLayerError(f"{name}: block_maps needs rank-4 outputs, got shape {tensor.shape}")
        clipped = g.op("Clip", [names[layer_name], lo, hi], name)
        g.op("Cast", [clipped], name, output=name, to=TensorProto.FLOAT16)
        g.op("ReduceMean", [names[layer_name]], name, output=means_name(name), axes=[2, 3], keepdims=0)

    def info(name: str, shape: tuple, dtype: int = TensorProto.FLOAT) -> Any:
        dims = ["N" if i == 0 else d for i, d in enumerate(shape)]
        return helper.make_tensor_value_info(name, dtype, dims)

    def nchw(shape: tuple) -> tuple:
        return (shape[0], shape[3], shape[1], shape[2])

    graph = helper.make_graph(
        g.nodes, model.name, [info(INPUT, tuple(model_input.shape))],
        [info(FEATURES, tuple(features_tensor.shape)), info(OUTPUT, tuple(model.outputs[0].shape))]
        + [info(name, tuple(tensor.shape)) for name, tensor in extra]
        + [info(pooled_name(name), (None, tensor.shape[-1])) for name, tensor in pooled]
        + [o for name, _, t in maps for o in (info(name, nchw(tuple(t.shape)), TensorProto.FLOAT16),
                                           info(means_name(name), (t.shape[0], t.shape[3])))],
        initializer=g.initializers,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="xception_core.runtime.onnx")
    proto.ir_version = min(proto.ir_version, 9)  # what onnxruntime 1.2x/1.3x reads
    if check:
        checker.check_model(proto)
    return proto, g.arrays


def forward_of(model: keras.Model, features_layer: str, *, threads: int | None = None, spin: bool = False,
               extra_outputs: tuple[str, ...] | list[str] = (), pooled_outputs: tuple[str, ...] | list[str] = (),
               block_maps: Mapping[str, str] | None = None) -> OnnxForward:
    """An `OnnxForward` of `to_onnx_parts(model, features_layer, ...)` (weights held once; see there)."""
    proto, weights = to_onnx_parts(model, features_layer, extra_outputs=extra_outputs,
                                   pooled_outputs=pooled_outputs, block_maps=block_maps)
    return OnnxForward(proto, weights, threads=threads, spin=spin)
