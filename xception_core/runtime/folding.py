"""Inference-only rewrites of a built Xception: BatchNorm folded into the convolution before it.

At inference a BatchNormalization is a per-channel affine map, y = s·(x − μ) + β with
s = γ / √(σ² + ε). After a convolution with kernel W (and bias b) it folds into that convolution:
W' = W·s along the output channels, b' = s·(b − μ) + β. `fold_batchnorm` returns a BN-free
functional clone of a model with exactly that done to every Conv2D / SeparableConv2D (pointwise
kernel) / DepthwiseConv2D / Dense whose only consumer is a BatchNormalization. The clone computes
the same function up to float32 rounding (tests/xception_core/test_folding_and_onnx.py) and saves the 40
BatchNorm passes over the activations (bench/README.md).

Layer names are kept (a folded conv keeps its conv's name); the removed BatchNorms are recorded in
the returned `Folded.removed` as {BatchNorm name: conv name}, so callers that look up a block
output by name (e.g. the article wiring's `block14_sepconv2_bn`) use `Folded.resolve`.

Pure TensorFlow/Keras/NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

__all__ = ["Folded", "fold_batchnorm", "foldable_pairs", "folded_weights", "max_abs_difference"]

_FOLDABLE = (keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D, keras.layers.Conv2D, keras.layers.Dense)


def _producer(tensor: Any) -> keras.layers.Layer:
    return tensor._keras_history.operation  # (operation, node_index, tensor_index)


def layer_inputs(layer: keras.layers.Layer) -> list[Any]:
    inp = layer.input
    return list(inp) if isinstance(inp, (list, tuple)) else [inp]


def bn_affine(bn: keras.layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """(scale s, shift t) with bn(x) = s·x + t at inference, float64 for exact folding."""
    mean = np.asarray(bn.moving_mean.numpy(), np.float64)
    var = np.asarray(bn.moving_variance.numpy(), np.float64)
    gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros_like(mean)
    s = gamma / np.sqrt(var + bn.epsilon)
    return s, beta - s * mean


def folded_weights(layer: keras.layers.Layer, bn: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """`layer`'s weights with `bn` folded in, in `layer`'s own order plus a bias (float32).

    Conv2D / Dense: [kernel·s, bias']; SeparableConv2D: [depthwise, pointwise·s, bias'] (the
    depthwise half is untouched: only the pointwise conv's output channels meet the BatchNorm);
    DepthwiseConv2D: [kernel·s, bias']. bias' = s·(b − μ) + β, computed in float64.
    """
    s, t = bn_affine(bn)
    weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
    bias = weights.pop() if layer.use_bias else np.zeros_like(s)
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise, pointwise = weights  # (k, k, Cin, mult), (1, 1, Cin·mult, Cout)
        new = [depthwise, pointwise * s]
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        (kernel,) = weights  # (k, k, C, mult): output channel c·mult + m
        new = [kernel * s.reshape(kernel.shape[2], kernel.shape[3])]
    else:  # Conv2D (k, k, Cin, Cout), Dense (Cin, Cout): output channels last
        (kernel,) = weights
        new = [kernel * s]
    new.append(s * bias + t)
    return [w.astype(np.float32) for w in new]


def _folded_layer(layer: keras.layers.Layer,
                  bn: keras.layers.BatchNormalization) -> tuple[keras.layers.Layer, list[np.ndarray]]:
    """An unbuilt copy of `layer` with a bias, and its weights with `bn` folded in."""
    config = layer.get_config()
    config["use_bias"] = True
    config.pop("bias_initializer", None)
    return type(layer).from_config(config), folded_weights(layer, bn)


def _foldable_pair(bn: keras.layers.Layer, consumers: dict[int, int]) -> keras.layers.Layer | None:
    """The conv/dense layer `bn` can be folded into, or None."""
    if not isinstance(bn, keras.layers.BatchNormalization) or len(bn._inbound_nodes) != 1:
        return None
    rank = len(bn.input.shape)
    if bn.axis not in (-1, rank - 1):
        return None  # only channels-last BatchNorm folds into the output channels
    (source,) = layer_inputs(bn)
    prev = _producer(source)
    if not isinstance(prev, _FOLDABLE) or len(prev._inbound_nodes) != 1:
        return None
    activation = getattr(prev.activation, "__name__", "linear")
    if activation != "linear" or consumers.get(id(source), 0) != 1:
        return None  # an activation between conv and BN, or the conv output is used elsewhere too
    return prev


def foldable_pairs(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """{conv/dense layer name: the BatchNorm that can be folded into it} for a functional model.

    A pair qualifies when the BatchNorm normalises the last (channel) axis, its input is the
    layer's output, the layer has no activation of its own, and nothing else reads that output.

    Raises:
        ValueError: A layer is called more than once (shared layers are not supported).
    """
    layers_ = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for layer in layers_:
        if len(layer._inbound_nodes) != 1:
            raise ValueError(f"layer {layer.name!r} is called {len(layer._inbound_nodes)} times; BatchNorm "
                             "folding supports models whose layers are each called once")
    consumers: dict[int, int] = {}
    for layer in layers_:
        for t in layer_inputs(layer):
            consumers[id(t)] = consumers.get(id(t), 0) + 1
    for out in model.outputs:  # a model output counts as a consumer: it must stay as it is
        consumers[id(out)] = consumers.get(id(out), 0) + 1
    pairs: dict[str, keras.layers.BatchNormalization] = {}
    for layer in layers_:
        prev = _foldable_pair(layer, consumers)
        if prev is not None:
            pairs[prev.name] = layer
    return pairs


@dataclass(frozen=True)
class Folded:
    """A BN-free clone and the BatchNorms it absorbed.

    Attributes:
        model: The clone.
        removed: {removed BatchNorm name: conv that absorbed it}.
    """

    model: keras.Model
    removed: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> str:
        """`name`, or the conv a folded BatchNorm `name` went into: the layer that outputs its values."""
        return self.removed.get(name, name)


def fold_batchnorm(model: keras.Model) -> Folded:
    """A BN-free clone of a functional model for inference.

    Args:
        model: A functional `keras.Model` whose layers are each called once (our Xception, either
            wiring, with or without a transfer head). Not modified.

    Returns:
        A new functional model, same inputs and outputs (up to float32 rounding), every foldable
        conv → BatchNorm pair replaced by one conv with a bias, and the map of removed BatchNorms.

    Raises:
        ValueError: A layer is called more than once (shared layers are not supported).
    """
    layers_ = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    fold_into = foldable_pairs(model)

    new_inputs = [keras.Input(shape=t.shape[1:], dtype=t.dtype, name=_producer(t).name) for t in model.inputs]
    mapped: dict[int, Any] = {id(old): new for old, new in zip(model.inputs, new_inputs)}
    removed: dict[str, str] = {}
    pending: list[tuple[keras.layers.Layer, list[np.ndarray]]] = []
    for layer in layers_:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.name in removed:
            mapped[id(layer.output)] = mapped[id(layer.input)]
            continue
        args = [mapped[id(t)] for t in layer_inputs(layer)]
        if layer.name in fold_into:
            bn = fold_into[layer.name]
            clone, values = _folded_layer(layer, bn)
            removed[bn.name] = layer.name
        else:
            clone, values = type(layer).from_config(layer.get_config()), layer.get_weights()
        # Weights are set once the clone is built (called), which creates its variables.
        pending.append((clone, values))
        out = clone(args if isinstance(layer.input, (list, tuple)) else args[0])
        mapped[id(layer.output)] = out
    for clone, values in pending:
        clone.set_weights(values)
    outputs = [mapped[id(t)] for t in model.outputs]
    folded = keras.Model(new_inputs[0] if len(new_inputs) == 1 else new_inputs,
                         outputs[0] if len(outputs) == 1 else outputs, name=f"{model.name}_folded")
    return Folded(folded, removed)


def max_abs_difference(a: keras.Model, b: keras.Model, x: np.ndarray) -> float:
    """Largest |a(x) − b(x)| over every output: the numerical error of a rewrite."""
    out_a, out_b = a(x, training=False), b(x, training=False)
    out_a = out_a if isinstance(out_a, (list, tuple)) else [out_a]
    out_b = out_b if isinstance(out_b, (list, tuple)) else [out_b]
    return max(float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in zip(out_a, out_b))
