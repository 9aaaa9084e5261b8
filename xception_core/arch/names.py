"""Layer names: which layer is a block's output, and our name for each layer of
`keras.applications.Xception` (which leaves its four shortcut convs unnamed)."""

from __future__ import annotations

from typing import Any

from xception_core.arch.spec import XCEPTION_SPEC, Block, Variant, get_variant


def block_output_layer(block: Block, variant: Variant | str = "paper") -> str:
    """Name of the layer whose output is the block's output (what the explorer shows)."""
    variant = get_variant(variant) if isinstance(variant, str) else variant
    if block.kind == "stem":
        return f"{block.name}_conv{len(block.spec.filters)}_act"
    if block.kind == "expand":
        last = f"{block.name}_sepconv{len(block.spec.filters)}"
        return f"{last}_act" if variant.exit_final_relu else f"{last}_bn"
    return f"{block.name}_add"


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


def features_layer(variant: Variant | str = "paper") -> str:
    """Name of the layer giving the exit-flow features (N, h, w, 2048): block 14's output."""
    return block_output_layer(XCEPTION_SPEC.blocks[-1], variant)
