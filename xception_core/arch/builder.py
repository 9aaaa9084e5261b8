"""Xception built from the article's building blocks, wired as the paper and Keras wire it.

`conv_bn` and `sep_bn` are the article's two building blocks. `xception_features` walks
`XCEPTION_SPEC` and wires them either as the paper / `keras.applications.Xception` does
('paper', the wiring the official weights fit) or as the article's code does ('article').
Every layer is named, shortcuts included, with the Keras reference's names where it has them.

`xception_core.model.build_xception` is the public entry point: this architecture plus weights.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from xception_core.arch.spec import XCEPTION_SPEC, Block, Variant, XceptionSpec, get_variant

KerasTensor = Any  # keras.KerasTensor; kept loose so type checkers need no Keras stubs


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
    """Conv2D (no bias: BatchNorm follows) then BatchNormalization.

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
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False, name=name)(x)
    return layers.BatchNormalization(name=bn_name or f"{name}_bn")(x)


def sep_bn(x: KerasTensor, filters: int, kernel_size: int = 3, *, name: str) -> KerasTensor:
    """Depthwise-separable conv (3×3 depthwise per channel, then 1×1 pointwise) then BatchNorm.

    Args:
        x: (N, H, W, C) input.
        filters: Output channels of the pointwise conv.
        kernel_size: Depthwise kernel side.
        name: SeparableConv2D name; the BatchNorm is `{name}_bn`.

    Returns:
        (N, H, W, filters) tensor (stride 1, 'same' padding).
    """
    x = layers.SeparableConv2D(filters, kernel_size, padding="same", use_bias=False, name=name)(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def _stem(x: KerasTensor, block: Block, variant: Variant, spec: XceptionSpec) -> KerasTensor:
    for conv_name, filters, strides in zip(block.conv_names(), block.spec.filters, block.spec.strides):
        x = conv_bn(x, filters, spec.kernel_size, strides, variant.stem_padding, name=conv_name)
        x = layers.ReLU(name=f"{conv_name}_act")(x)
    return x


def _separable_stack(x: KerasTensor, block: Block, spec: XceptionSpec, *, post_activation: bool) -> KerasTensor:
    """The block's separable convs. Pre-activation (ReLU before each conv, as in the entry and
    middle flows) or post-activation (ReLU after, as in block 14). ReLU names follow Keras:
    `blockN_sepconvK_act` is the ReLU adjacent to `blockN_sepconvK`."""
    for k, (conv_name, filters) in enumerate(zip(block.conv_names(), block.spec.filters)):
        if not post_activation and (k > 0 or block.spec.activate_input):
            x = layers.ReLU(name=f"{conv_name}_act")(x)
        x = sep_bn(x, filters, spec.kernel_size, name=conv_name)
        if post_activation and k < len(block.spec.filters) - 1:
            x = layers.ReLU(name=f"{conv_name}_act")(x)
    return x


def xception_features(
    inputs: KerasTensor, variant: Variant | str = "paper", spec: XceptionSpec = XCEPTION_SPEC
) -> KerasTensor:
    """Wires the stem, entry, middle and exit flows.

    Args:
        inputs: (N, H, W, C) image tensor, H and W ≥ 71 (or None).
        variant: 'paper' (Keras reference wiring) or 'article'.
        spec: The architecture to build.

    Returns:
        (N, H/32, W/32, 2048) exit-flow features (10×10 at 299×299).
    """
    variant = get_variant(variant) if isinstance(variant, str) else variant
    x = inputs
    shortcut_source = None  # the article's entry flow feeds each 1×1 shortcut from the last one
    for block in spec.blocks:
        if block.kind == "stem":
            x = _stem(x, block, variant, spec)
            shortcut_source = x
        elif block.kind == "downsample":
            from_previous = block.flow == "entry" and variant.entry_shortcut_from == "previous_shortcut"
            source = shortcut_source if from_previous and shortcut_source is not None else x
            residual = conv_bn(
                source, block.spec.out_channels, 1, 2, "same",
                name=block.residual_conv_name, bn_name=block.residual_bn_name,
            )
            y = _separable_stack(x, block, spec, post_activation=False)
            y = layers.MaxPooling2D(spec.pool_size, strides=2, padding="same", name=f"{block.name}_pool")(y)
            # Operand order [main, shortcut] as in Keras keeps the graph, and so the legacy
            # HDF5 weight order, identical to the reference's.
            x = layers.Add(name=block.add_name)([y, residual])
            shortcut_source = residual
        elif block.kind == "residual":
            y = _separable_stack(x, block, spec, post_activation=False)
            if variant.middle_relu_before_add:
                y = layers.ReLU(name=f"{block.conv_names()[-1]}_post_act")(y)
            x = layers.Add(name=block.add_name)([y, x])
        elif block.kind == "expand":
            x = _separable_stack(x, block, spec, post_activation=True)
            if variant.exit_final_relu:
                x = layers.ReLU(name=f"{block.conv_names()[-1]}_act")(x)
        else:  # pragma: no cover - the spec's Literal forbids it
            raise ValueError(f"unknown block kind {block.kind!r}")
    return x


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

    inputs = keras.Input(shape=shape, name="input_layer")
    x = xception_features(inputs, v, spec)
    if include_top:
        x = pool(x, "avg")
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = pool(x, pooling)
    return keras.Model(inputs, x, name=name or ("xception" if v.name == "paper" else "xception_article"))


def pool(x: KerasTensor, pooling: str | None) -> KerasTensor:
    """The Keras reference's optional global pooling: (N, h, w, C) → (N, C), or x itself for None."""
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def output_kind(include_top: bool, classifier_activation: str | None) -> str:
    """What a model's output is: 'probabilities', 'logits' or 'features' (no classifier)."""
    if not include_top:
        return "features"
    return "probabilities" if classifier_activation == "softmax" else "logits"
