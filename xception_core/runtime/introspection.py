"""What the explorer shows: per-block shapes, parameters and cost, and every block's output.

Blocks come from the architecture's spec (`xception_core.arch.registry`); numbers come from the built model, so the table describes the
network that actually runs (any input size, either variant, any head).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from xception_core.arch.cost import SeparableCost, separable_cost
from xception_core.arch.graph import block_output, layer_graph
from xception_core.arch.graph_cost import KERAS_CLASS, graph_costs
from xception_core.arch.nodes import WINDOWED, head_nodes
from xception_core.arch.registry import Architecture, BlockLike, architecture
from xception_core.arch.spec import XceptionSpec

if TYPE_CHECKING:
    import keras

# Keras is imported inside the functions that read a Keras model, never at import: a served
# translation (`xception_core.runtime.translated`) carries its `ModelDescription` as data.

HEAD = "head"


# The two kinds of parameter, named for what they are, whatever Keras's `trainable` flags say (a
# shipped transfer model freezes its whole body, so Keras counts only its head as trainable):
# `learned_params`: fitted by gradient descent (kernels, biases, BatchNorm's γ and β);
# `moving_statistics_params`: BatchNorm's moving mean and variance, averaged over the training data.
MOVING_STATISTICS = ("moving_mean", "moving_variance")
_OLD_NAMES = {"trainable_params": "learned_params", "non_trainable_params": "moving_statistics_params"}


@dataclass(frozen=True)
class LayerInfo:
    """One layer. `output_shape` excludes the batch axis; `macs` counts multiply-accumulates of
    convolutions and dense layers for one image (BatchNorm, ReLU, pooling and sums are ~0.1% and
    fold away at inference). `params` = `learned_params` + `moving_statistics_params`."""

    name: str
    class_name: str
    block: str
    input_shape: tuple[int | None, ...]
    output_shape: tuple[int | None, ...]
    kernel_size: int | None
    params: int
    learned_params: int
    moving_statistics_params: int
    macs: int


@dataclass(frozen=True)
class BlockInfo:
    """One block of the paper's diagram (or the classifier head)."""

    name: str
    flow: str
    kind: str
    output_layer: str
    output_shape: tuple[int | None, ...]
    params: int
    learned_params: int
    moving_statistics_params: int
    macs: int
    layers: tuple[LayerInfo, ...]
    shortcut: str = "none"  # 'conv', 'identity' or 'none', from the spec
    wiring_differences: tuple[str, ...] = ()  # `WIRING_DIFFERENCES` fields that live in this block


@dataclass(frozen=True)
class ModelDescription:
    """All blocks of a model, in order, with totals equal to the model's own counts."""

    name: str
    variant: str
    input_shape: tuple[int | None, ...]
    blocks: tuple[BlockInfo, ...]
    total_params: int
    learned_params: int
    moving_statistics_params: int
    total_macs: int

    def block(self, name: str) -> BlockInfo:
        for b in self.blocks:
            if b.name == name:
                return b
        raise ValueError(f"unknown block {name!r}; expected one of {[b.name for b in self.blocks]}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelDescription":
        """The description `to_dict(layers=True)` wrote (e.g. read back from JSON)."""
        def shape(values: Any) -> tuple[int | None, ...]:
            return tuple(values)

        def renamed(record: dict[str, Any]) -> dict[str, Any]:  # a description cached before the counts were named
            return {_OLD_NAMES.get(k, k): v for k, v in record.items()}

        data = renamed(data)
        data["blocks"] = [{**renamed(b), "layers": [renamed(layer) for layer in b["layers"]]} for b in data["blocks"]]

        blocks = tuple(
            BlockInfo(**{**b, "output_shape": shape(b["output_shape"]),
                         "wiring_differences": tuple(b["wiring_differences"]),
                         "layers": tuple(LayerInfo(**{**layer, "input_shape": shape(layer["input_shape"]),
                                                      "output_shape": shape(layer["output_shape"])})
                                         for layer in b["layers"])})
            for b in data["blocks"])
        return cls(**{**data, "input_shape": shape(data["input_shape"]), "blocks": blocks})

    def to_dict(self, *, layers: bool = False) -> dict[str, Any]:
        """JSON-ready form; `layers=True` includes every layer of every block."""
        out = asdict(self)
        for block in out["blocks"]:
            block["output_shape"] = list(block["output_shape"])
            block["wiring_differences"] = list(block["wiring_differences"])
            if layers:
                for layer in block["layers"]:
                    layer["input_shape"] = list(layer["input_shape"])
                    layer["output_shape"] = list(layer["output_shape"])
            else:
                del block["layers"]
        out["input_shape"] = list(out["input_shape"])
        return out


def _count(weights: list) -> int:
    return int(sum(math.prod(w.shape) for w in weights))


def _moving_statistics(layer: keras.layers.Layer) -> int:
    """BatchNorm's moving mean and variance in `layer` (0 for any other layer), by role, not by flag."""
    return _count([w for w in layer.weights if w.path.rsplit("/", 1)[-1] in MOVING_STATISTICS])


def _shape(tensor) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tensor.shape[1:])


def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates of one layer for one image (0 for layers that do no products).

    Raises:
        ValueError: The layer's output has an undefined spatial size (build the model at a size).
    """
    kind = type(layer).__name__
    if kind not in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Dense"):
        return 0
    in_shape, out_shape = _shape(layer.input), _shape(layer.output)
    if any(d is None for d in in_shape + out_shape):
        raise ValueError(f"layer {layer.name!r} has undefined shapes {in_shape} -> {out_shape}; build at a fixed size")
    if kind == "Dense":
        return math.prod(in_shape) * out_shape[-1]
    h, w, c_out = out_shape
    c_in = in_shape[-1]
    kh, kw = layer.kernel_size
    if kind == "Conv2D":
        return h * w * c_out * kh * kw * c_in
    depth = getattr(layer, "depth_multiplier", 1)
    # Separable convs here have stride 1, so the depthwise output has the output's spatial size.
    depthwise = h * w * c_in * depth * kh * kw
    return depthwise + (h * w * c_in * depth * c_out if kind == "SeparableConv2D" else 0)


def describe(model: keras.Model, variant: str = "paper", spec: XceptionSpec = architecture().spec) -> ModelDescription:
    """Describes a model built by `build_architecture` from `spec` in the `variant` wiring, block
    by block.

    A layer of the spec's graph belongs to its node's block (`blockN_*` to block N for Xception);
    every later layer (pooling, classifier, a transfer head) to 'head'. Totals are sums over
    layers, so they equal `model.count_params()`.
    """
    import keras

    graph = layer_graph(variant, spec)
    by_block: dict[str, list[LayerInfo]] = {b.name: [] for b in spec.blocks}
    by_block[HEAD] = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        block = graph.node(layer.name).block if layer.name in graph else HEAD
        moving = _moving_statistics(layer)
        learned = _count(layer.weights) - moving
        by_block[block].append(LayerInfo(
            name=layer.name, class_name=type(layer).__name__, block=block,
            input_shape=_shape(keras.tree.flatten(layer.input)[0]), output_shape=_shape(layer.output),
            kernel_size=getattr(layer, "kernel_size", (None,))[0],
            params=learned + moving, learned_params=learned, moving_statistics_params=moving, macs=layer_macs(layer),
        ))

    blocks = [_summarise(b.name, b.flow, b.kind, block_output(b.name, variant, spec), by_block[b.name], b)
              for b in spec.blocks]
    if by_block[HEAD]:
        blocks.append(_summarise(HEAD, HEAD, HEAD, by_block[HEAD][-1].name, by_block[HEAD]))
    return _description(model.name, variant, _shape(model.inputs[0]), blocks)


def _summarise(name: str, flow: str, kind: str, output_layer: str, layers: list[LayerInfo],
               block: BlockLike | None = None) -> BlockInfo:
    """One block's row: its layers' sums, its output layer's shape and what the spec says of it
    (an Xception `Block`'s shortcut and wiring differences; none for other blocks)."""
    shortcut = getattr(getattr(block, "spec", None), "shortcut", "none")
    return BlockInfo(
        name=name, flow=flow, kind=kind, output_layer=output_layer, shortcut=shortcut,
        wiring_differences=getattr(block, "wiring_differences", ()),
        output_shape=next(layer.output_shape for layer in layers if layer.name == output_layer),
        params=sum(x.params for x in layers), learned_params=sum(x.learned_params for x in layers),
        moving_statistics_params=sum(x.moving_statistics_params for x in layers), macs=sum(x.macs for x in layers),
        layers=tuple(layers),
    )


def _description(name: str, variant: str, input_shape: tuple[int | None, ...],
                 blocks: list[BlockInfo]) -> ModelDescription:
    """The blocks with their totals (sums over layers, so equal to the model's own counts)."""
    return ModelDescription(
        name=name, variant=variant, input_shape=input_shape, blocks=tuple(blocks),
        total_params=sum(b.params for b in blocks), learned_params=sum(b.learned_params for b in blocks),
        moving_statistics_params=sum(b.moving_statistics_params for b in blocks), total_macs=sum(b.macs for b in blocks),
    )


def describe_graph(arch: Architecture, input_size: int | None = None, *, classes: int | None = None,
                   wiring: str | None = None) -> ModelDescription:
    """Describes an architecture from its layer graph alone (no Keras, no weights): the
    description `describe` gives of the model `build_architecture` builds with the ImageNet-style
    head (global average pool, dense softmax), block by block, at `input_size` (default: the
    spec's) with `classes` outputs (default: the spec's).

    Raises:
        ValueError: The input is too small for the network (`LayerGraph.sizes`).
    """
    spec, wiring = arch.spec, wiring or arch.reference_wiring
    size = spec.default_input_size if input_size is None else input_size
    graph = arch.graph(wiring)
    graph = graph.extended(head_nodes(graph.output, include_top=True, pooling=None,
                                      classes=spec.default_classes if classes is None else classes,
                                      classifier_activation="softmax"))
    by_block: dict[str, list[LayerInfo]] = {b.name: [] for b in spec.blocks}
    by_block[HEAD] = []
    for name, cost in graph_costs(graph, size).items():
        node = cost.node
        block = node.block if node.block in by_block else HEAD
        by_block[block].append(LayerInfo(
            name=name, class_name=KERAS_CLASS[node.op], block=block, input_shape=cost.input_shape,
            output_shape=cost.output_shape,
            kernel_size=node.kernel if node.op in WINDOWED and not node.op.endswith("pool") else None,
            params=cost.params, learned_params=cost.learned_params,
            moving_statistics_params=cost.moving_statistics_params, macs=cost.macs))
    blocks = [_summarise(b.name, b.flow, getattr(b, "kind", b.flow), arch.block_output(b.name, wiring),
                         by_block[b.name], b) for b in spec.blocks]
    blocks.append(_summarise(HEAD, HEAD, HEAD, by_block[HEAD][-1].name, by_block[HEAD]))
    return _description(arch.name, wiring, (size, size, graph.in_channels), blocks)


def block_outputs_model(model: keras.Model, variant: str = "paper", spec: XceptionSpec = architecture().spec) -> keras.Model:
    """One multi-output model: every block's output plus the model's own output, ONE forward pass.

    Returns:
        A model from (N, H, W, 3) images to a dict {block name: (N, h, w, c)} with the final output
        under 'output'; it shares the model's layers (no copy of the weights).
    """
    import keras

    outputs = {b.name: model.get_layer(block_output(b.name, variant, spec)).output for b in spec.blocks}
    outputs["output"] = model.outputs[0]
    return keras.Model(model.inputs[0], outputs, name=f"{model.name}_blocks")


def separable_layers(description: ModelDescription) -> list[tuple[str, SeparableCost]]:
    """(layer name, `separable_cost`) for every SeparableConv2D of a described model, in order."""
    out: list[tuple[str, SeparableCost]] = []
    for block in description.blocks:
        for layer in block.layers:
            if layer.class_name == "SeparableConv2D":
                h, w, c_out = layer.output_shape
                out.append((layer.name, separable_cost(layer.kernel_size, layer.input_shape[-1], c_out, h, w)))
    return out


@dataclass(frozen=True)
class SeparableTotals:
    """All separable convs of a model against standard convs with the same channels."""

    count: int
    separable_params: int
    standard_params: int
    separable_macs: int
    standard_macs: int

    @property
    def params_ratio(self) -> float:
        return self.standard_params / self.separable_params

    @property
    def macs_ratio(self) -> float:
        return self.standard_macs / self.separable_macs


def separable_totals(description: ModelDescription) -> SeparableTotals:
    """Sums of `separable_layers` over a described model."""
    costs = [c for _, c in separable_layers(description)]
    return SeparableTotals(len(costs), sum(c.separable_params for c in costs), sum(c.standard_params for c in costs),
                           sum(c.separable_macs for c in costs), sum(c.standard_macs for c in costs))


@functools.cache  # the same for every translation: built once a process (a Keras model: seconds)
def reference_description(spec: XceptionSpec = architecture().spec) -> ModelDescription:
    """`describe()` of the reference: Keras's Xception at its default input size (299×299) with the
    1000-class ImageNet head, whatever weights are loaded (built without weights, then dropped)."""
    from xception_core.arch.builder import build_architecture

    size = spec.default_input_size
    return describe(build_architecture(input_shape=(size, size, 3), classes=spec.default_classes, spec=spec))


__all__ = [
    "BlockInfo", "LayerInfo", "ModelDescription", "SeparableCost", "SeparableTotals", "block_outputs_model",
    "describe", "describe_graph", "layer_macs", "reference_description", "separable_cost", "separable_layers", "separable_totals",
]
