"""Xception's architecture as data.

The paper (Chollet 2017, Fig. 5) describes Xception as three flows of blocks. This module is
Xception's whole architecture: the frozen spec below, its two wirings (`VARIANT_SPECS`, the
article's four departures declared once in `WIRING_DIFFERENCES`) and the one reading of the spec,
`XceptionSpec.graph` (`xception_graph`), which expands it into the layer graph's nodes
(`xception_core.arch.nodes`). The Keras builder, the ONNX translator, the receptive fields and the
explorer read those nodes, so the picture the user sees is the network that runs. The registry
(`xception_core.arch.registry`) names it 'xception'.

Blocks are declared in order; their names (`block1` ... `block14`) follow from that order, the
middle flow's one declaration expanding into eight blocks (`repeats=8`). These names are the
prefixes of the layer names in `keras.applications.Xception`, which the official weights fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from xception_core.arch.nodes import LayerGraph, LayerNode, Op, Padding

Flow = Literal["entry", "middle", "exit"]
BlockKind = Literal["stem", "downsample", "residual", "expand"]
VariantName = Literal["paper", "article"]


@dataclass(frozen=True)
class BlockSpec:
    """One block (or a repeated run of identical blocks) of Xception.

    Attributes:
        flow: Paper flow the block belongs to.
        kind: 'stem' (two plain convs), 'downsample' (separable convs, 3×3/2 max-pool and a
            1×1/2 conv shortcut), 'residual' (separable convs, identity shortcut) or 'expand'
            (separable convs, post-activated, no shortcut: the end of the exit flow).
        filters: Output channels of each conv in the block, in order.
        strides: Stride of each conv (stem only; separable convs are always stride 1).
        activate_input: Whether a ReLU precedes the first conv (pre-activation blocks).
        repeats: How many identical blocks this declaration stands for.
    """

    flow: Flow
    kind: BlockKind
    filters: tuple[int, ...]
    strides: tuple[int, ...] = ()
    activate_input: bool = True
    repeats: int = 1

    @property
    def shortcut(self) -> Literal["conv", "identity", "none"]:
        """The kind of residual connection around the block."""
        return {"downsample": "conv", "residual": "identity"}.get(self.kind, "none")

    @property
    def out_channels(self) -> int:
        return self.filters[-1]


@dataclass(frozen=True)
class Block:
    """A concrete, named block: one expansion of a `BlockSpec`.

    Attributes:
        name: 'block1' ... 'block14', the layer-name prefix.
        index: 1-based position in the network.
        spec: The declaration this block expands.
    """

    name: str
    index: int
    spec: BlockSpec

    @property
    def flow(self) -> Flow:
        return self.spec.flow

    @property
    def kind(self) -> BlockKind:
        return self.spec.kind

    def conv_names(self) -> tuple[str, ...]:
        """Names of the block's main-path conv layers, e.g. ('block2_sepconv1', 'block2_sepconv2')."""
        prefix = "conv" if self.kind == "stem" else "sepconv"
        return tuple(f"{self.name}_{prefix}{i + 1}" for i in range(len(self.spec.filters)))

    @property
    def residual_conv_name(self) -> str | None:
        return f"{self.name}_residual_conv" if self.spec.shortcut == "conv" else None

    @property
    def residual_bn_name(self) -> str | None:
        return f"{self.name}_residual_bn" if self.spec.shortcut == "conv" else None

    @property
    def add_name(self) -> str | None:
        return f"{self.name}_add" if self.spec.shortcut != "none" else None

    @property
    def wiring_differences(self) -> tuple[str, ...]:
        """The `WIRING_DIFFERENCES` fields that live inside this block (empty for most blocks)."""
        return tuple(d.field for d in WIRING_DIFFERENCES if d.applies_to(self))


@dataclass(frozen=True)
class Variant:
    """How a variant wires the same blocks. 'paper' is the Keras reference; 'article' is the
    code of the article ("Xception: Implementing from scratch using Tensorflow", Towards Data
    Science, 2021), which differs in exactly these four fields.

    Attributes:
        name: 'paper' or 'article'.
        stem_padding: Padding of the two stem convs ('valid': 299→149→147; 'same': 299→150→150).
        entry_shortcut_from: Input of the 1×1 shortcut conv of entry-flow blocks after the first:
            'block_output' (the previous block's sum) or 'previous_shortcut' (the previous block's
            shortcut branch, bypassing its separable convs).
        middle_relu_before_add: A ReLU after the third separable conv of each middle block.
        exit_final_relu: A ReLU after the 2048-filter separable conv, before pooling.
    """

    name: VariantName
    stem_padding: Literal["valid", "same"]
    entry_shortcut_from: Literal["block_output", "previous_shortcut"]
    middle_relu_before_add: bool
    exit_final_relu: bool

    def differences(self, other: "Variant") -> tuple[str, ...]:
        """Names of the wiring fields in which two variants differ."""
        return tuple(d.field for d in WIRING_DIFFERENCES if getattr(self, d.field) != getattr(other, d.field))


VARIANT_SPECS: dict[str, Variant] = {
    "paper": Variant("paper", "valid", "block_output", False, True),
    "article": Variant("article", "same", "previous_shortcut", True, False),
}

@dataclass(frozen=True)
class WiringDifference:
    """One of the article's four departures from the paper's wiring: the one place it is declared.

    Attributes:
        field: The `Variant` field that holds it.
        label: A short name, numbered as the explorer shows it (its first character is the badge).
        note: What differs and what it does.
        flow: The flow whose blocks carry it.
        kind: The kind of block that carries it.
        skip_first: Leave out the first such block (the first entry-flow shortcut reads the stem
            output in both wirings, so only the later ones differ).
    """

    field: str
    label: str
    note: str
    flow: Flow
    kind: BlockKind
    skip_first: bool = False

    def applies_to(self, block: "Block") -> bool:
        if block.flow != self.flow or block.kind != self.kind:
            return False
        if not self.skip_first:
            return True
        same = [b for b in XCEPTION_SPEC.blocks if b.flow == self.flow and b.kind == self.kind]
        return block != same[0]

    @property
    def blocks(self) -> tuple[str, ...]:
        """Names of the blocks it lives in."""
        return tuple(b.name for b in XCEPTION_SPEC.blocks if self.applies_to(b))


WIRING_DIFFERENCES: tuple[WiringDifference, ...] = (
    WiringDifference(
        "stem_padding", "① stem convs use 'same' padding",
        "Stem convs: the paper/Keras use 'valid' padding (299→149→147); the article uses 'same' "
        "(299→150→150), so every later feature map is offset and slightly larger.",
        "entry", "stem"),
    WiringDifference(
        "entry_shortcut_from", "② entry shortcuts read the previous shortcut",
        "Entry-flow shortcuts of blocks 3 and 4: the paper applies the 1×1/2 conv to the previous "
        "block's output (the sum); the article applies it to the previous shortcut, so those "
        "shortcuts skip all the separable convs before them.",
        "entry", "downsample", skip_first=True),
    WiringDifference(
        "middle_relu_before_add", "③ ReLU before each middle-flow sum",
        "Middle flow: the article adds a ReLU after the third separable conv, before the sum; the "
        "paper adds the raw BatchNorm output.",
        "middle", "residual"),
    WiringDifference(
        "exit_final_relu", "④ no ReLU before pooling",
        "Exit flow: the paper applies ReLU after the 2048-filter separable conv before pooling; the "
        "article pools the raw BatchNorm output.",
        "exit", "expand"),
)


def wiring_difference(field: str) -> WiringDifference:
    """The declaration of one wiring difference by its `Variant` field."""
    for d in WIRING_DIFFERENCES:
        if d.field == field:
            return d
    raise ValueError(f"unknown wiring difference {field!r}; expected one of {[d.field for d in WIRING_DIFFERENCES]}")


@dataclass(frozen=True)
class XceptionSpec:
    """The whole network: stem-to-exit block declarations plus classifier defaults."""

    declarations: tuple[BlockSpec, ...]
    kernel_size: int = 3
    pool_size: int = 3
    min_input_size: int = 71
    default_input_size: int = 299
    default_classes: int = 1000
    blocks: tuple[Block, ...] = field(init=False)

    def __post_init__(self) -> None:
        expanded: list[Block] = []
        for decl in self.declarations:
            for _ in range(decl.repeats):
                index = len(expanded) + 1
                expanded.append(Block(f"block{index}", index, decl))
        object.__setattr__(self, "blocks", tuple(expanded))

    def block(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise ValueError(f"unknown block {name!r}; expected one of {[b.name for b in self.blocks]}")

    def flow_blocks(self, flow: Flow) -> tuple[Block, ...]:
        return tuple(b for b in self.blocks if b.flow == flow)

    def graph(self, variant: str = "paper") -> LayerGraph:
        """The feature extractor's layers in one wiring: the one reading of the blocks (cached
        by `xception_core.arch.graph.layer_graph`, which is what callers use)."""
        return xception_graph(self, get_variant(variant))


INPUT_LAYER = "input_layer"  # the name the builder gives its `keras.Input`


def xception_graph(spec: XceptionSpec, v: Variant) -> LayerGraph:
    """Expands the blocks into named layers, wired as the paper / Keras ('paper') or the article
    ('article') wires them. The article's building blocks are the two helpers: `conv_bn` (conv
    without bias, BatchNorm) and a stack of `sep_bn` (separable conv, BatchNorm) with its ReLUs."""
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
        """Pre-activation (ReLU before each conv, as in the entry and middle flows) or
        post-activation (ReLU after, as in block 14). ReLU names follow Keras:
        `blockN_sepconvK_act` is the ReLU adjacent to `blockN_sepconvK`."""
        for i, (name, filters) in enumerate(zip(block.conv_names(), block.spec.filters)):
            if not post_activation and (i > 0 or block.spec.activate_input):
                x = add(f"{name}_act", "relu", (x,), block)
            x = add(name, "separable", (x,), block, kernel=k, filters=filters)
            x = add(f"{name}_bn", "batchnorm", (x,), block)
            if post_activation and i < len(block.spec.filters) - 1:
                x = add(f"{name}_act", "relu", (x,), block)
        return x

    x = INPUT_LAYER
    shortcut_source: str | None = None  # the article's entry flow feeds each 1×1 shortcut from the last one
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
            # Operand order [main, shortcut] as in Keras keeps the graph, and so the legacy
            # HDF5 weight order, identical to the reference's.
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


XCEPTION_SPEC = XceptionSpec(
    declarations=(
        BlockSpec("entry", "stem", filters=(32, 64), strides=(2, 1), activate_input=False),
        # Block 2 follows the stem's ReLU, so it starts without one of its own.
        BlockSpec("entry", "downsample", filters=(128, 128), activate_input=False),
        BlockSpec("entry", "downsample", filters=(256, 256)),
        BlockSpec("entry", "downsample", filters=(728, 728)),
        BlockSpec("middle", "residual", filters=(728, 728, 728), repeats=8),
        BlockSpec("exit", "downsample", filters=(728, 1024)),
        BlockSpec("exit", "expand", filters=(1536, 2048), activate_input=False),
    )
)


def get_variant(name: str) -> Variant:
    """Looks up a variant by name, raising a clear `ValueError` for unknown names."""
    try:
        return VARIANT_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"variant must be one of {list(VARIANT_SPECS)}, got {name!r}") from None
