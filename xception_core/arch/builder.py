"""Xception built from the article's building blocks, wired as the paper and Keras wire it.

The builder reads no architecture itself: it emits one Keras layer per node of the layer graph
(`xception_core.arch.graph.layer_graph`, wired either as the paper / `keras.applications.Xception`
does, 'paper', the wiring the official weights fit, or as the article's code does, 'article'),
through one table keyed by the node's op (`EMITTERS`). Every layer is named, shortcuts included,
with the Keras reference's names where it has them. `conv_bn` and `sep_bn`, the article's two
building blocks, are the same emitters on two nodes each.

`xception_core.model.build_xception` is the public entry point: this architecture plus weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import keras
from keras import layers

from xception_core.arch.graph import INPUT_LAYER, LayerNode, head_nodes, layer_graph
from xception_core.arch.spec import XCEPTION_SPEC, Variant, XceptionSpec, get_variant

KerasTensor = Any  # keras.KerasTensor; kept loose so type checkers need no Keras stubs


def _conv(node: LayerNode) -> keras.layers.Layer:
    return layers.Conv2D(node.filters, node.kernel_shape, strides=node.stride, padding=node.padding,
                         dilation_rate=node.dilation, use_bias=node.bias, activation=node.activation, name=node.name)


def _separable(node: LayerNode) -> keras.layers.Layer:
    return layers.SeparableConv2D(node.filters, node.kernel_shape, strides=node.stride, padding=node.padding,
                                  depth_multiplier=node.multiplier, dilation_rate=node.dilation, use_bias=node.bias,
                                  activation=node.activation, name=node.name)


def _depthwise(node: LayerNode) -> keras.layers.Layer:
    return layers.DepthwiseConv2D(node.kernel_shape, strides=node.stride, padding=node.padding,
                                  depth_multiplier=node.multiplier, dilation_rate=node.dilation, use_bias=node.bias,
                                  activation=node.activation, name=node.name)


def _pool(kind: type) -> Callable[[LayerNode], keras.layers.Layer]:
    return lambda node: kind(node.kernel_shape, strides=node.stride, padding=node.padding, name=node.name)


# One Keras layer per node op: the only place this module knows what an op is.
EMITTERS: dict[str, Callable[[LayerNode], keras.layers.Layer]] = {
    "conv": _conv,
    "separable": _separable,
    "depthwise": _depthwise,
    "batchnorm": lambda node: layers.BatchNormalization(scale=node.scale, name=node.name),
    "relu": lambda node: layers.ReLU(name=node.name),
    "softmax": lambda node: layers.Softmax(name=node.name),
    "identity": lambda node: layers.Identity(name=node.name),
    "maxpool": _pool(layers.MaxPooling2D),
    "avgpool": _pool(layers.AveragePooling2D),
    "add": lambda node: layers.Add(name=node.name),
    "concat": lambda node: layers.Concatenate(name=node.name),
    "global_avg_pool": lambda node: layers.GlobalAveragePooling2D(name=node.name),
    "global_max_pool": lambda node: layers.GlobalMaxPooling2D(name=node.name),
    "dense": lambda node: layers.Dense(node.filters, activation=node.activation, use_bias=node.bias, name=node.name),
}
MERGES = frozenset({"add", "concat"})  # ops whose layer is called on the list of its inputs


def emit(nodes: Iterable[LayerNode], tensors: dict[str, KerasTensor]) -> KerasTensor:
    """Builds each node's Keras layer on the tensors of the layers it reads.

    Args:
        nodes: Nodes in graph order (each after the layers it reads).
        tensors: {layer name: tensor} of what they may read (the input at least); gains each
            node's output.

    Returns:
        The last node's output.
    """
    x = None
    for node in nodes:
        if node.op == "input":
            continue
        try:
            layer = EMITTERS[node.op](node)
        except KeyError:
            raise ValueError(f"{node.name}: op {node.op!r} has no Keras layer here") from None
        inputs = [tensors[name] for name in node.inputs]
        x = tensors[node.name] = layer(inputs if node.op in MERGES else inputs[0])
    return x


def conv_bn(
    x: KerasTensor,
    filters: int,
    kernel_size: int,
    strides: int = 1,
    padding: str = "same",
    *,
    name: str,
    bn_name: str | None = None,
) -> KerasTensor:
    """Conv2D (no bias: BatchNorm follows) then BatchNormalization: the article's first building
    block (the graph's `conv` + `batchnorm` nodes).

    Args:
        x: (N, H, W, C) input.
        filters: Output channels.
        kernel_size: Square kernel side.
        strides: Square stride.
        padding: 'same' or 'valid'.
        name: Conv layer name; the BatchNorm is `bn_name` or `{name}_bn`.

    Returns:
        (N, H', W', filters) tensor.
    """
    bn = bn_name or f"{name}_bn"
    return emit((LayerNode(name, "conv", ("x",), kernel=kernel_size, stride=strides, padding=padding, filters=filters),
                 LayerNode(bn, "batchnorm", (name,))), {"x": x})


def sep_bn(x: KerasTensor, filters: int, kernel_size: int = 3, *, name: str) -> KerasTensor:
    """Depthwise-separable conv (3×3 depthwise per channel, then 1×1 pointwise) then BatchNorm:
    the article's second building block (the graph's `separable` + `batchnorm` nodes).

    Args:
        x: (N, H, W, C) input.
        filters: Output channels of the pointwise conv.
        kernel_size: Depthwise kernel side.
        name: SeparableConv2D name; the BatchNorm is `{name}_bn`.

    Returns:
        (N, H, W, filters) tensor (stride 1, 'same' padding).
    """
    return emit((LayerNode(name, "separable", ("x",), kernel=kernel_size, filters=filters),
                 LayerNode(f"{name}_bn", "batchnorm", (name,))), {"x": x})


def xception_features(
    inputs: KerasTensor, variant: Variant | str = "paper", spec: XceptionSpec = XCEPTION_SPEC
) -> KerasTensor:
    """The feature extractor: every node of `layer_graph(variant, spec)` on `inputs`.

    Args:
        inputs: (N, H, W, C) image tensor, H and W ≥ 71 (or None).
        variant: 'paper' (Keras reference wiring) or 'article'.
        spec: The architecture to build.

    Returns:
        (N, H/32, W/32, 2048) exit-flow features (10×10 at 299×299).
    """
    variant = get_variant(variant) if isinstance(variant, str) else variant
    return emit(layer_graph(variant.name, spec).nodes, {INPUT_LAYER: inputs})


def validate_input_shape(
    input_shape: tuple[int | None, int | None, int] | None,
    *,
    include_top: bool,
    spec: XceptionSpec = XCEPTION_SPEC,
) -> tuple[int | None, int | None, int]:
    """Checks an (H, W, C) input shape, returning it as a tuple (default 299×299×3)."""
    if input_shape is None:
        return (spec.default_input_size, spec.default_input_size, 3)
    try:
        shape = tuple(None if d is None else int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}") from None
    if len(shape) != 3 or shape[2] is None or shape[2] < 1:
        raise ValueError(f"input_shape must be (height, width, channels) with channels ≥ 1, got {input_shape!r}")
    for side in shape[:2]:
        if side is None:
            if include_top:
                raise ValueError(
                    f"input_shape {input_shape!r} has an undefined side; that is allowed only with "
                    "include_top=False (a dense top needs a fixed size)"
                )
        elif side < spec.min_input_size:
            raise ValueError(
                f"input_shape {input_shape!r}: height and width must be ≥ {spec.min_input_size} "
                f"(five stride-2 stages), got {side}"
            )
    return shape  # type: ignore[return-value]


POOLINGS = (None, "avg", "max")


def build_architecture(
    *,
    input_shape: tuple[int | None, int | None, int] | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    variant: str = "paper",
    name: str | None = None,
    spec: XceptionSpec = XCEPTION_SPEC,
) -> keras.Model:
    """Builds the randomly initialised network (no weights logic; see `build_xception`).

    Returns:
        A functional `keras.Model` from (N, H, W, C) images to (N, classes) with the top,
        (N, 2048) with pooling, else (N, H/32, W/32, 2048).
    """
    v = get_variant(variant)
    shape = validate_input_shape(input_shape, include_top=include_top, spec=spec)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if include_top and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 1):
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise ValueError(
                f"classifier_activation must be None or a Keras activation name, got {classifier_activation!r}"
            ) from None

    inputs = keras.Input(shape=shape, name=INPUT_LAYER)
    graph = layer_graph(v.name, spec)
    head = head_nodes(graph.output, include_top=include_top, pooling=pooling, classes=classes,
                      classifier_activation=classifier_activation)
    x = emit(graph.extended(head).nodes, {INPUT_LAYER: inputs})
    return keras.Model(inputs, x, name=name or ("xception" if v.name == "paper" else "xception_article"))


def pool(x: KerasTensor, pooling: str | None) -> KerasTensor:
    """The Keras reference's optional global pooling: (N, h, w, C) → (N, C), or x itself for None."""
    head = head_nodes("x", include_top=False, pooling=pooling, classes=0, classifier_activation=None)
    return emit(head, {"x": x}) if head else x


def output_kind(include_top: bool, classifier_activation: str | None) -> str:
    """What a model's output is: 'probabilities', 'logits' or 'features' (no classifier)."""
    if not include_top:
        return "features"
    return "probabilities" if classifier_activation == "softmax" else "logits"
