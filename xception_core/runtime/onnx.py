"""An ONNX Runtime forward for our Xception, built straight from the Keras layers.

`to_onnx(model, features_layer)` walks a functional model layer by layer, folds each BatchNorm
into the conv before it (`xception_core.runtime.folding`), and emits the same network with the
`onnx.helper` API: Conv (group=C for the depthwise half of a separable conv), Relu, MaxPool, Add,
GlobalAveragePool, Gemm, Softmax. Translation is far quicker than a tf2onnx export of the same
model, and no tf2onnx is needed at run time; ONNX Runtime then runs it faster than the TensorFlow
forward (both figures in bench/README.md). The graph runs in NCHW, ONNX Runtime's native
layout (it re-blocks convolutions to NCHWc); one Transpose brings the NHWC input in and one takes
the exit-flow features out, so `OnnxForward` returns exactly what `Classifier`'s TensorFlow
forward returns: (features (N, h, w, 2048) NHWC, model output (N, classes)).

Only the layer types Xception and simple transfer heads use are supported; anything else raises
`UnsupportedLayerError`. Which backend runs is chosen in one place, `xception_core.runtime.forward`.

Needs `onnx` and `onnxruntime` (both optional for the package: `available()` says whether they
are importable). Pure NumPy besides those; no UI code.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from xception_core.arch.graph import same_padding
from xception_core.runtime.folding import bn_affine, foldable_pairs, folded_weights, layer_inputs
# The graph's names and the session that runs it live where a process without Keras can import them.
from xception_core.runtime.ort import (  # noqa: F401 - re-exported
    FEATURES, FLOAT16_MAX, INPUT, OUTPUT, OnnxForward, available, means_name, pooled_name, quantize_int8,
)

__all__ = ["OnnxForward", "SharedArrays", "forward_of", "UnsupportedLayerError", "available", "means_name", "pooled_name",
           "quantize_int8", "to_onnx", "to_onnx_parts"]

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


def _same_pads(size: int | None, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int] | None:
    """TensorFlow's 'same' padding (the extra pixel goes after), or None when `size` is unknown."""
    return None if size is None else same_padding(size, kernel, stride, dilation)


def _pads(layer: keras.layers.Layer, in_shape: tuple, kernel: tuple[int, int], strides: tuple[int, int],
          dilation: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """ONNX padding attributes for a Keras 'valid'/'same' spatial op on an NHWC input shape."""
    if layer.padding == "valid":
        return {"pads": [0, 0, 0, 0]}
    if layer.padding != "same":
        raise UnsupportedLayerError(f"{layer.name}: padding {layer.padding!r}")
    hp = _same_pads(in_shape[1], kernel[0], strides[0], dilation[0])
    wp = _same_pads(in_shape[2], kernel[1], strides[1], dilation[1])
    if hp is None or wp is None:
        return {"auto_pad": "SAME_UPPER"}  # TF's rule: the odd pixel goes at the end
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


def _activation(g: _Graph, x: str, layer: keras.layers.Layer, activation: Any, rank: int) -> str:
    name = getattr(activation, "__name__", str(activation))
    if name == "linear":
        return x
    if name == "relu":
        return g.op("Relu", [x], layer.name)
    if name == "softmax" and rank == 2:
        return g.op("Softmax", [x], layer.name, axis=-1)
    raise UnsupportedLayerError(f"{layer.name}: activation {name!r}")


def _convert(g: _Graph, layer: keras.layers.Layer, xs: list[str], in_shapes: list[tuple],
             weights: list[np.ndarray] | None = None) -> str:
    """Emits `layer` on NCHW tensors `xs`; returns its output name. `weights` (with a bias last)
    replace the layer's own, e.g. with a BatchNorm folded in."""
    x, shape = xs[0], in_shapes[0]
    w = [np.asarray(v) for v in (layer.get_weights() if weights is None else weights)]
    use_bias = getattr(layer, "use_bias", False) or weights is not None
    if isinstance(layer, keras.layers.Dropout):
        return x
    if isinstance(layer, (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv2D)):
        if layer.data_format != "channels_last":
            raise UnsupportedLayerError(f"{layer.name}: data_format {layer.data_format!r}")
        if isinstance(layer, (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)):
            depthwise = w[0]  # (kh, kw, C, mult) -> (C·mult, 1, kh, kw), output channel c·mult + m
            kh, kw, c, mult = depthwise.shape
            dw = depthwise.transpose(2, 3, 0, 1).reshape(c * mult, 1, kh, kw)
            attrs = dict(group=c, kernel_shape=[kh, kw], strides=list(layer.strides),
                         dilations=list(layer.dilation_rate),
                         **_pads(layer, shape, (kh, kw), layer.strides, layer.dilation_rate))
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                inputs = [x, g.const(f"{layer.name}/kernel", dw)] + ([g.const(f"{layer.name}/bias", w[1])] if use_bias else [])
                y = g.op("Conv", inputs, layer.name, **attrs)
            else:
                y = g.op("Conv", [x, g.const(f"{layer.name}/depthwise", dw)], f"{layer.name}/depthwise", **attrs)
                pointwise = w[1][0, 0].T[:, :, None, None]  # (Cin·mult, Cout) -> (Cout, Cin·mult, 1, 1)
                inputs = [y, g.const(f"{layer.name}/pointwise", pointwise)]
                if use_bias:
                    inputs.append(g.const(f"{layer.name}/bias", w[2]))
                y = g.op("Conv", inputs, layer.name, kernel_shape=[1, 1])
        else:
            if layer.groups != 1:
                raise UnsupportedLayerError(f"{layer.name}: grouped Conv2D")
            kernel = w[0]  # (kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw)
            kh, kw = kernel.shape[:2]
            inputs = [x, g.const(f"{layer.name}/kernel", kernel.transpose(3, 2, 0, 1))]
            if use_bias:
                inputs.append(g.const(f"{layer.name}/bias", w[1]))
            y = g.op("Conv", inputs, layer.name, kernel_shape=[kh, kw], strides=list(layer.strides),
                     dilations=list(layer.dilation_rate),
                     **_pads(layer, shape, (kh, kw), layer.strides, layer.dilation_rate))
        return _activation(g, y, layer, layer.activation, 4)
    if isinstance(layer, keras.layers.BatchNormalization):  # one that could not be folded
        if layer.axis not in (-1, len(shape) - 1):
            raise UnsupportedLayerError(f"{layer.name}: BatchNorm axis {layer.axis}")
        s, t = bn_affine(layer)
        bshape = (-1, 1, 1) if len(shape) == 4 else (-1,)
        y = g.op("Mul", [x, g.const(f"{layer.name}/scale", s.reshape(bshape))], layer.name)
        return g.op("Add", [y, g.const(f"{layer.name}/shift", t.reshape(bshape))], layer.name)
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            raise UnsupportedLayerError(f"{layer.name}: ReLU with max_value/negative_slope/threshold")
        return g.op("Relu", [x], layer.name)
    if isinstance(layer, keras.layers.Activation):
        return _activation(g, x, layer, layer.activation, len(shape))
    if isinstance(layer, keras.layers.MaxPooling2D):
        return g.op("MaxPool", [x], layer.name, kernel_shape=list(layer.pool_size), strides=list(layer.strides),
                    **_pads(layer, shape, layer.pool_size, layer.strides))
    if isinstance(layer, keras.layers.Add):
        return g.op("Sum", xs, layer.name)
    if isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        if layer.keepdims:
            raise UnsupportedLayerError(f"{layer.name}: keepdims=True")
        op = "GlobalAveragePool" if isinstance(layer, keras.layers.GlobalAveragePooling2D) else "GlobalMaxPool"
        return g.op("Flatten", [g.op(op, [x], layer.name)], layer.name, axis=1)
    if isinstance(layer, keras.layers.Dense):
        if len(shape) != 2:
            raise UnsupportedLayerError(f"{layer.name}: Dense on a rank-{len(shape)} input")
        inputs = [x, g.const(f"{layer.name}/kernel", w[0])]
        if use_bias:
            inputs.append(g.const(f"{layer.name}/bias", w[1]))
        y = g.op("Gemm", inputs, layer.name)
        return _activation(g, y, layer, layer.activation, 2)
    raise UnsupportedLayerError(f"{layer.name}: layer type {type(layer).__name__} has no ONNX translation here")


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
                  shared: SharedArrays | None = None) -> tuple[Any, dict[str, np.ndarray]]:
    """The model as a weight-free `onnx.ModelProto` plus its weights, for `OnnxForward`.

    The graph references every large weight as external data; ONNX Runtime then reads the NumPy
    arrays themselves (`SessionOptions.add_external_initializers`) instead of a serialized copy,
    so building a session holds the weights once, not three times (the proto, its bytes, the
    session's own copy); the saving is in bench/README.md. Arrays equal to ones a live session of
    the same model already uses are those very arrays (`shared`, default: this process's
    `SharedArrays`).

    Returns:
        (proto, {initializer name: float32 array}).
    """
    proto, arrays = _translate(model, features_layer, fold=fold, check=False, extra_outputs=extra_outputs,
                               pooled_outputs=pooled_outputs, block_maps=block_maps, external=True)
    return proto, (_SHARED if shared is None else shared).share(model, arrays)


def _translate(model: keras.Model, features_layer: str, *, fold: bool, check: bool,
               extra_outputs: tuple[str, ...] | list[str], pooled_outputs: tuple[str, ...] | list[str],
               block_maps: Mapping[str, str] | None, external: bool) -> tuple[Any, dict[str, np.ndarray]]:
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

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayerError("only single-input, single-output models are translated")
    g = _Graph(external)
    model_input = model.inputs[0]
    names: dict[int, str] = {id(model_input): g.op("Transpose", [INPUT], "input", perm=[0, 3, 1, 2])}
    shapes: dict[int, tuple] = {id(model_input): tuple(model_input.shape)}
    features_tensor = model.get_layer(features_layer).output
    for layer in model.layers:
        if len(layer._inbound_nodes) != 1:
            raise UnsupportedLayerError(f"{layer.name}: layers called more than once are not translated")
    pairs = foldable_pairs(model) if fold else {}
    folded = {bn.name for bn in pairs.values()}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        ins = layer_inputs(layer)
        if layer.name in folded:  # its conv already computes its output
            out = names[id(ins[0])]
        else:
            weights = folded_weights(layer, pairs[layer.name]) if layer.name in pairs else None
            out = _convert(g, layer, [names[id(t)] for t in ins], [shapes[id(t)] for t in ins], weights)
        names[id(layer.output)] = out
        shapes[id(layer.output)] = tuple(layer.output.shape)
    g.op("Transpose", [names[id(features_tensor)]], "features", output=FEATURES, perm=[0, 2, 3, 1])
    g.op("Identity", [names[id(model.outputs[0])]], "output", output=OUTPUT)
    extra = [(name, model.get_layer(name).output) for name in extra_outputs]
    for name, tensor in extra:
        g.op("Transpose", [names[id(tensor)]], name, output=name, perm=[0, 2, 3, 1] if len(tensor.shape) == 4 else [0, 1])
    pooled = [(name, model.get_layer(name).output) for name in pooled_outputs]
    for name, tensor in pooled:
        if len(tensor.shape) != 4:
            raise UnsupportedLayerError(f"{name}: only 4-d (N, H, W, C) outputs can be pooled")
        mean = g.op("GlobalAveragePool", [names[id(tensor)]], f"{name}/pool")
        g.op("Flatten", [mean], f"{name}/pool", output=pooled_name(name), axis=1)
    maps = [(name, model.get_layer(layer).output) for name, layer in (block_maps or {}).items()]
    if maps:
        lo, hi = g.const("fp16/min", np.float32(-FLOAT16_MAX)), g.const("fp16/max", np.float32(FLOAT16_MAX))
    for name, tensor in maps:
        if len(tensor.shape) != 4:
            raise UnsupportedLayerError(f"{name}: block_maps needs rank-4 outputs, got shape {tensor.shape}")
        clipped = g.op("Clip", [names[id(tensor)], lo, hi], name)
        g.op("Cast", [clipped], name, output=name, to=TensorProto.FLOAT16)
        g.op("ReduceMean", [names[id(tensor)]], name, output=means_name(name), axes=[2, 3], keepdims=0)

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
        + [o for name, t in maps for o in (info(name, nchw(tuple(t.shape)), TensorProto.FLOAT16),
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
