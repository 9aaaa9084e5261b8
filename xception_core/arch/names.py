"""Layer names: which layer is a block's output, and our name for each layer of
`keras.applications.Xception` (which leaves its four shortcut convs unnamed)."""

from __future__ import annotations

from typing import Any

from xception_core.arch.graph import block_output
from xception_core.arch.spec import XCEPTION_SPEC, Block, Variant, get_variant


def block_output_layer(block: Block, variant: Variant | str = "paper") -> str:
    """Name of the layer whose output is the block's output (what the explorer shows): its last
    layer in the graph (`xception_core.arch.graph.block_output`)."""
    variant = get_variant(variant) if isinstance(variant, str) else variant
    return block_output(block.name, variant.name)


def reference_layer_name(layer: Any) -> str:
    """Our name for a layer of `keras.applications.Xception` (or of ours: names pass through).

    Keras leaves the four 1×1 shortcut convs and their BatchNorms unnamed; they are told apart by
    their width, which the spec makes unique per downsampling block.
    """
    if layer.name.startswith("block") or type(layer).__name__ not in ("Conv2D", "BatchNormalization"):
        return layer.name
    # By type name, not isinstance: this module stays free of Keras (serving imports it).
    conv = type(layer).__name__ == "Conv2D"
    width = layer.filters if conv else int(layer.gamma.shape[0])
    for block in XCEPTION_SPEC.blocks:
        if block.spec.shortcut == "conv" and block.spec.out_channels == width:
            return block.residual_conv_name if conv else block.residual_bn_name
    return layer.name

