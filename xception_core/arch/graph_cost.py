"""What each layer of a layer graph holds and computes, read from its nodes alone (no Keras).

`graph_costs(graph, size)` gives every layer's output shape, its weights (trainable and not) and
its multiply-accumulates for one image of `size` pixels, with the same conventions as the count
over a built Keras model (`xception_core.runtime.introspection.describe`): MACs of convolutions
and dense layers only (BatchNorm, ReLU, pools, sums and concatenations do no products worth
counting and fold away at inference); a BatchNorm holds β, its moving mean and variance, and γ
when it scales. So an architecture is described at any input size without building it (a test
checks both counts agree, and Inception V3's against Keras's own).
"""

from __future__ import annotations

from dataclasses import dataclass

from xception_core.arch.nodes import GLOBAL, LayerGraph, LayerNode

# The Keras layer class the builder (`xception_core.arch.builder.EMITTERS`) makes for each op.
KERAS_CLASS: dict[str, str] = {
    "input": "InputLayer", "conv": "Conv2D", "separable": "SeparableConv2D", "depthwise": "DepthwiseConv2D",
    "batchnorm": "BatchNormalization", "relu": "ReLU", "softmax": "Softmax", "identity": "Identity",
    "maxpool": "MaxPooling2D", "avgpool": "AveragePooling2D", "add": "Add", "concat": "Concatenate",
    "global_avg_pool": "GlobalAveragePooling2D", "global_max_pool": "GlobalMaxPooling2D", "dense": "Dense",
}


@dataclass(frozen=True)
class LayerCost:
    """One layer for one image.

    Attributes:
        input_shape, output_shape: (H, W, C) or, after a global pool, (C,); no batch axis.
        trainable_params, non_trainable_params: Its weights (BatchNorm statistics are not trained).
        macs: Multiply-accumulates of a conv or dense layer (0 for the others).
    """

    node: LayerNode
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    trainable_params: int
    non_trainable_params: int
    macs: int

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params


def _weights(node: LayerNode, c_in: int, c_out: int) -> tuple[int, int]:
    """(trainable, non-trainable) weights of one node reading `c_in` channels."""
    kh, kw = node.kernel_shape
    bias = c_out if node.bias else 0
    if node.op == "conv":
        return kh * kw * c_in * c_out + bias, 0
    if node.op == "separable":
        return kh * kw * c_in * node.multiplier + c_in * node.multiplier * c_out + bias, 0
    if node.op == "depthwise":
        return kh * kw * c_in * node.multiplier + bias, 0
    if node.op == "dense":
        return c_in * c_out + bias, 0
    if node.op == "batchnorm":
        return (2 if node.scale else 1) * c_in, 2 * c_in
    return 0, 0


def _macs(node: LayerNode, c_in: int, c_out: int, h: int, w: int) -> int:
    """Multiply-accumulates of one node with an (h, w, c_out) output."""
    kh, kw = node.kernel_shape
    if node.op == "conv":
        return h * w * c_out * kh * kw * c_in
    if node.op in ("separable", "depthwise"):
        depthwise = h * w * c_in * node.multiplier * kh * kw
        return depthwise + (h * w * c_in * node.multiplier * c_out if node.op == "separable" else 0)
    if node.op == "dense":
        return c_in * c_out
    return 0


def graph_costs(graph: LayerGraph, input_size: int | tuple[int, int]) -> dict[str, LayerCost]:
    """{layer: its `LayerCost`} for every node but the input, in graph order.

    Args:
        graph: The layers (a feature extractor, with its head if it has one).
        input_size: A side, or (height, width), in pixels.

    Raises:
        ValueError: The input is too small for some window (`LayerGraph.sizes`).
    """
    sizes, channels = graph.sizes(input_size), graph.channels()
    flat: set[str] = set()  # layers after a global pool: (C,) not (1, 1, C)
    out: dict[str, LayerCost] = {}
    for node in graph.nodes:
        if node.op == "input":
            continue
        source = node.inputs[0]
        if node.op in GLOBAL or source in flat:
            flat.add(node.name)
        c_in, c_out = channels[source], channels[node.name]
        (ih, iw), (h, w) = sizes[source], sizes[node.name]
        in_shape = (c_in,) if source in flat else (ih, iw, c_in)
        out_shape = (c_out,) if node.name in flat else (h, w, c_out)
        trainable, frozen = _weights(node, c_in, c_out)
        out[node.name] = LayerCost(node, in_shape, out_shape, trainable, frozen, _macs(node, c_in, c_out, h, w))
    return out


__all__ = ["KERAS_CLASS", "LayerCost", "graph_costs"]
