"""Xception's layers as data: every named layer of the feature extractor, what it reads, and its
window (kernel, stride, padding), for either wiring.

`layer_graph(variant)` is the one reading of the spec (`XceptionSpec.graph`): the Keras builder
(`xception_core.arch.builder`) emits its layers node by node, the ONNX translator emits the same
nodes (a test checks both against `keras.applications.Xception`), and the receptive fields
(`xception_core.arch.receptive`) and the arithmetic of one separable step
(`xception_core.runtime.operation`) are read from here without Keras. The node vocabulary
(`LayerNode`, `LayerGraph`, the padding rules) is `xception_core.arch.nodes`.

`separable_plan(block, k, variant)` says what happens around one separable convolution: the layer
that feeds it, the ReLU in between (if any), its BatchNorm, what reads the BatchNorm (the next
ReLU, the block's max-pool, the block's sum) and the block's shortcut.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

# The vocabulary lives in `nodes` (architecture modules build from it); its names are public here.
from xception_core.arch.nodes import (  # noqa: F401 - re-exported
    LayerGraph, LayerNode, Op, Padding, head_nodes, output_size, padding_before, same_padding,
)
from xception_core.arch.spec import INPUT_LAYER, XCEPTION_SPEC, Block, XceptionSpec

@functools.lru_cache(maxsize=8)
def layer_graph(variant: str = "paper", spec: XceptionSpec = XCEPTION_SPEC) -> LayerGraph:
    """The feature extractor's layers in one wiring ('paper' or 'article'), as the builder wires
    them: the architecture's own reading of its spec (`spec.graph`), made once per wiring."""
    return spec.graph(variant)  # the spec checks the wiring's name


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


__all__ = ["INPUT_LAYER", "LayerGraph", "LayerNode", "SeparablePlan", "block_output", "head_nodes", "layer_graph",
           "output_size", "padding_before", "same_padding", "separable_names", "separable_plan"]
