"""Xception's layers as data: every named layer of the feature extractor, what it reads, and its
window (kernel, stride, padding), for either wiring.

`layer_graph(variant)` expands `XCEPTION_SPEC` into the same layers, with the same names and the
same connections, that `xception_core.arch.builder.xception_features` builds with Keras (a test
checks the two against each other), but without Keras: the receptive fields
(`xception_core.arch.receptive`) and the arithmetic of one separable step
(`xception_core.runtime.operation`) are read from here, so neither needs TensorFlow.

`separable_plan(block, k, variant)` says what happens around one separable convolution: the layer
that feeds it, the ReLU in between (if any), its BatchNorm, what reads the BatchNorm (the next
ReLU, the block's max-pool, the block's sum) and the block's shortcut.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

from xception_core.arch.spec import XCEPTION_SPEC, Block, Variant, XceptionSpec, get_variant

Op = Literal["input", "conv", "separable", "batchnorm", "relu", "maxpool", "add"]
Padding = Literal["same", "valid"]

INPUT_LAYER = "input_layer"  # the name `build_architecture` gives its `keras.Input`


@dataclass(frozen=True)
class LayerNode:
    """One layer of the feature extractor.

    Attributes:
        name: The Keras layer name ('block2_sepconv1', 'block3_residual_bn', ...).
        op: What it computes. 'separable' is a 3×3 depthwise then a 1×1 pointwise conv;
            'batchnorm', 'relu' and 'add' act on each position alone.
        inputs: Names of the layers it reads, in the Keras call order ([main, shortcut] for a sum).
        block: The block it belongs to ('' for the input).
        kernel, stride, padding: Its square window ('same' follows TensorFlow: the odd padding
            pixel goes after). 1, 1, 'same' for position-wise layers.
        filters: Output channels of a conv; None for layers that keep their input's channels.
    """

    name: str
    op: Op
    inputs: tuple[str, ...]
    block: str = ""
    kernel: int = 1
    stride: int = 1
    padding: Padding = "same"
    filters: int | None = None


@dataclass(frozen=True)
class LayerGraph:
    """Every layer of one wiring, in an order where each layer follows the layers it reads."""

    variant: str
    nodes: tuple[LayerNode, ...]
    in_channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {n.name: n for n in self.nodes})

    def node(self, name: str) -> LayerNode:
        try:
            return self._by_name[name]  # type: ignore[attr-defined]
        except (KeyError, TypeError):
            raise ValueError(f"unknown layer {str(name)[:60]!r} in the {self.variant} wiring") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name  # type: ignore[attr-defined]

    def consumers(self, name: str) -> tuple[LayerNode, ...]:
        """The layers that read `name`'s output, in graph order."""
        return tuple(n for n in self.nodes if name in n.inputs)

    def block_layers(self, block: str) -> tuple[LayerNode, ...]:
        return tuple(n for n in self.nodes if n.block == block)

    def channels(self) -> dict[str, int]:
        """{layer: output channels}."""
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.name] = self.in_channels if n.op == "input" else n.filters or out[n.inputs[0]]
        return out

    def sizes(self, input_size: int | tuple[int, int]) -> dict[str, tuple[int, int]]:
        """{layer: (height, width) of its output} for an input of `input_size` pixels (a side, or
        (height, width)).

        Raises:
            ValueError: The input is too small for some window (a map would be empty).
        """
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        out: dict[str, tuple[int, int]] = {}
        for n in self.nodes:
            if n.op == "input":
                out[n.name] = (int(h), int(w))
                continue
            ih, iw = out[n.inputs[0]]
            size = (output_size(ih, n.kernel, n.stride, n.padding), output_size(iw, n.kernel, n.stride, n.padding))
            if min(size) < 1:
                raise ValueError(f"an input of {h}×{w} px is too small: {n.name} would be empty")
            out[n.name] = size
        return out


def output_size(size: int, kernel: int, stride: int, padding: Padding) -> int:
    """Output length of a window op along one axis (TensorFlow's rule for 'same' and 'valid')."""
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: (before, after), the odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def padding_before(node: LayerNode, in_size: int) -> int:
    """Zero (or, for max-pooling, ignored) positions added before the first input position."""
    return same_padding(in_size, node.kernel, node.stride)[0] if node.padding == "same" else 0


@functools.lru_cache(maxsize=8)
def layer_graph(variant: str = "paper", spec: XceptionSpec = XCEPTION_SPEC) -> LayerGraph:
    """The feature extractor's layers in one wiring ('paper' or 'article'), as the builder wires them."""
    v: Variant = get_variant(variant)
    k = spec.kernel_size
    nodes: list[LayerNode] = [LayerNode(INPUT_LAYER, "input", ())]

    def add(name: str, op: Op, inputs: tuple[str, ...], block: Block, **window) -> str:
        nodes.append(LayerNode(name, op, inputs, block.name, **window))
        return name

    def conv_bn(x: str, block: Block, name: str, filters: int, kernel: int, stride: int, padding: Padding,
                bn_name: str | None = None) -> str:
        x = add(name, "conv", (x,), block, kernel=kernel, stride=stride, padding=padding, filters=filters)
        return add(bn_name or f"{name}_bn", "batchnorm", (x,), block)

    def separable_stack(x: str, block: Block, post_activation: bool) -> str:
        for i, (name, filters) in enumerate(zip(block.conv_names(), block.spec.filters)):
            if not post_activation and (i > 0 or block.spec.activate_input):
                x = add(f"{name}_act", "relu", (x,), block)
            x = add(name, "separable", (x,), block, kernel=k, filters=filters)
            x = add(f"{name}_bn", "batchnorm", (x,), block)
            if post_activation and i < len(block.spec.filters) - 1:
                x = add(f"{name}_act", "relu", (x,), block)
        return x

    x = INPUT_LAYER
    shortcut_source: str | None = None
    for block in spec.blocks:
        if block.kind == "stem":
            for name, filters, stride in zip(block.conv_names(), block.spec.filters, block.spec.strides):
                x = conv_bn(x, block, name, filters, k, stride, v.stem_padding)
                x = add(f"{name}_act", "relu", (x,), block)
            shortcut_source = x
        elif block.kind == "downsample":
            from_previous = block.flow == "entry" and v.entry_shortcut_from == "previous_shortcut"
            source = shortcut_source if from_previous and shortcut_source is not None else x
            residual = conv_bn(source, block, block.residual_conv_name, block.spec.out_channels, 1, 2, "same",
                               bn_name=block.residual_bn_name)
            y = separable_stack(x, block, post_activation=False)
            y = add(f"{block.name}_pool", "maxpool", (y,), block, kernel=spec.pool_size, stride=2)
            x = add(block.add_name, "add", (y, residual), block)
            shortcut_source = residual
        elif block.kind == "residual":
            y = separable_stack(x, block, post_activation=False)
            if v.middle_relu_before_add:
                y = add(f"{block.conv_names()[-1]}_post_act", "relu", (y,), block)
            x = add(block.add_name, "add", (y, x), block)
        elif block.kind == "expand":
            x = separable_stack(x, block, post_activation=True)
            if v.exit_final_relu:
                x = add(f"{block.conv_names()[-1]}_act", "relu", (x,), block)
        else:  # pragma: no cover - the spec's Literal forbids it
            raise ValueError(f"unknown block kind {block.kind!r}")
    return LayerGraph(v.name, tuple(nodes))


@dataclass(frozen=True)
class SeparablePlan:
    """What happens around one separable conv of a block, in one wiring, layer by layer.

    Attributes:
        block: 'block2' ... 'block14'.
        index: 1-based position of the conv in its block (`blockN_sepconv{index}`).
        layer: The SeparableConv2D's name.
        feed: The layer whose output reaches the conv (before `relu_before`, when there is one).
        relu_before: The ReLU between `feed` and the conv (for block 2's first conv, the stem's
            last ReLU), or None (block 14's first conv reads block 13's sum as it is).
        batchnorm: The BatchNorm after the conv.
        relu_after: The ReLU that reads the BatchNorm: the next conv's pre-activation, block 14's
            post-activation, the article's ReLU before each middle-flow sum; or None.
        pool: The block's 3×3/2 max-pool when it reads this conv's BatchNorm, else None.
        add: The block's sum when this conv's path ends there, else None.
        shortcut: 'conv' (1×1/2 conv + BatchNorm) or 'identity' when `add` is set, else None.
        shortcut_source: The layer the shortcut reads (the block's input, or in the article's entry
            flow the previous block's shortcut).
        residual_conv, residual_bn: The shortcut's layers when it is a conv.
        in_channels, out_channels: Channels into and out of the conv.
    """

    block: str
    index: int
    layer: str
    feed: str
    relu_before: str | None
    batchnorm: str
    relu_after: str | None
    pool: str | None
    add: str | None
    shortcut: Literal["conv", "identity"] | None
    shortcut_source: str | None
    residual_conv: str | None
    residual_bn: str | None
    in_channels: int
    out_channels: int

    @property
    def output(self) -> str:
        """The last layer whose value the step computes."""
        return self.add or self.relu_after or self.batchnorm

    @property
    def layers(self) -> tuple[str, ...]:
        """Outputs of the model a pass must keep to compute this step and check each stage: the
        feed, the BatchNorm, the block's sum and the shortcut's source."""
        names = (self.feed, self.batchnorm, self.add, self.shortcut_source)
        return tuple(dict.fromkeys(n for n in names if n))


def separable_names(block: Block) -> tuple[str, ...]:
    """The block's separable convs ('blockN_sepconvK'); empty for the stem's plain convs."""
    return () if block.kind == "stem" else block.conv_names()


@functools.lru_cache(maxsize=128)
def separable_plan(block: str, index: int, variant: str = "paper", spec: XceptionSpec = XCEPTION_SPEC) -> SeparablePlan:
    """The plan of `blockN_sepconv{index}` in a wiring.

    Raises:
        ValueError: An unknown block, a block without separable convs, or an index out of range.
    """
    b = spec.block(block)
    names = separable_names(b)
    if not names:
        raise ValueError(f"{block} ({b.kind}) has no separable convolutions")
    if not isinstance(index, int) or isinstance(index, bool) or not 1 <= index <= len(names):
        raise ValueError(f"{block} has separable convs 1 to {len(names)}, got {index!r}")
    graph = layer_graph(variant, spec)
    channels = graph.channels()
    conv = graph.node(names[index - 1])
    before = graph.node(conv.inputs[0])
    relu_before = before.name if before.op == "relu" else None
    feed = before.inputs[0] if relu_before else before.name
    (bn,) = graph.consumers(conv.name)
    relu_after = pool = add = None
    nxt = graph.consumers(bn.name)
    if nxt and nxt[0].op == "relu":
        relu_after = nxt[0].name
        nxt = tuple(n for n in graph.consumers(relu_after) if n.op == "add")
    if nxt and nxt[0].op == "maxpool":
        pool = nxt[0].name
        nxt = graph.consumers(pool)
    if nxt and nxt[0].op == "add":
        add = nxt[0].name
    shortcut = shortcut_source = residual_conv = residual_bn = None
    if add is not None:
        other = graph.node(graph.node(add).inputs[1])
        if other.op == "batchnorm":
            shortcut, residual_bn = "conv", other.name
            residual_conv = other.inputs[0]
            shortcut_source = graph.node(residual_conv).inputs[0]
        else:
            shortcut, shortcut_source = "identity", other.name
    return SeparablePlan(b.name, index, conv.name, feed, relu_before, bn.name, relu_after, pool, add, shortcut,
                         shortcut_source, residual_conv, residual_bn, channels[feed], channels[conv.name])


def block_output(block: str, variant: str = "paper", spec: XceptionSpec = XCEPTION_SPEC) -> str:
    """The layer whose output is the block's output: its last layer (the same name as
    `xception_core.arch.names.block_output_layer`, which needs Keras)."""
    return layer_graph(variant, spec).block_layers(spec.block(block).name)[-1].name


__all__ = ["INPUT_LAYER", "LayerGraph", "LayerNode", "SeparablePlan", "block_output", "layer_graph", "output_size",
           "padding_before", "same_padding", "separable_names", "separable_plan"]
