"""The node vocabulary every architecture is written in, and the graph those nodes make.

An architecture module (`xception_core.arch.spec` for Xception) turns its spec into a
`LayerGraph`: one `LayerNode` per named layer, with what it reads and its window. Everything that
builds, translates or measures a network reads these nodes and nothing else of the architecture:
the Keras builder (`xception_core.arch.builder`) and the ONNX translator
(`xception_core.runtime.onnx`) each emit one op from one node through a table keyed by `Op`;
`LayerGraph.sizes` / `channels`, the receptive fields and the operation view walk them.

The ops cover Xception and the usual CNNs of its family (Inception V3 needs no new op: its
conv without bias + BatchNorm (`scale=False`) + ReLU, average / max pools with 'same' or 'valid'
padding, non-square kernels (`kernel_width`), `concat` of branches, global average pool, dense).
No Keras, no NumPy: serving imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Op = Literal["input", "conv", "separable", "depthwise", "batchnorm", "relu", "softmax", "identity", "maxpool",
             "avgpool", "add", "concat", "global_avg_pool", "global_max_pool", "dense"]
Padding = Literal["same", "valid"]

# Ops with a spatial window (kernel, stride, padding); the others act on each position alone.
WINDOWED: frozenset[str] = frozenset({"conv", "separable", "depthwise", "maxpool", "avgpool"})
# Ops that end the spatial axes: (N, H, W, C) in, (N, C) out.
GLOBAL: frozenset[str] = frozenset({"global_avg_pool", "global_max_pool"})


@dataclass(frozen=True)
class LayerNode:
    """One layer of a network.

    Attributes:
        name: The Keras layer name ('block2_sepconv1', 'block3_residual_bn', 'predictions', ...).
        op: What it computes. 'separable' is a depthwise then a 1×1 pointwise conv; 'depthwise'
            the depthwise half alone; 'identity' passes its input on (dropout at inference);
            'batchnorm', 'relu', 'softmax' and 'add' act on each position alone; 'concat' joins
            its inputs' channels in order.
        inputs: Names of the layers it reads, in the Keras call order ([main, shortcut] for a sum).
        block: The block it belongs to ('' for the input and the head).
        kernel, stride, padding: Its window ('same' follows TensorFlow: the odd padding pixel goes
            after). `kernel` is the height (and the width unless `kernel_width` is set). 1, 1,
            'same' for position-wise layers.
        filters: Output channels of a conv or dense layer; None for layers that keep their
            input's channels (or, for 'concat', sum them).
        kernel_width: The window's width when it is not square (Inception's 1×7 and 7×1 convs).
        bias: Whether a conv or dense layer adds a bias (False where a BatchNorm follows).
        activation: The activation a conv or dense layer applies itself ('softmax', 'relu', ...;
            None for none).
        scale: Whether a BatchNorm multiplies by a learned γ (Inception's BatchNorms do not).
        multiplier: Depthwise channel multiplier ('separable', 'depthwise').
        dilation: Dilation rate of a conv's window.
    """

    name: str
    op: Op
    inputs: tuple[str, ...]
    block: str = ""
    kernel: int = 1
    stride: int = 1
    padding: Padding = "same"
    filters: int | None = None
    kernel_width: int | None = None
    bias: bool = False
    activation: str | None = None
    scale: bool = True
    multiplier: int = 1
    dilation: int = 1

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """(height, width) of the window."""
        return self.kernel, self.kernel if self.kernel_width is None else self.kernel_width


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

    @property
    def output(self) -> str:
        """The last layer: the graph's output (for a feature extractor, its features)."""
        return self.nodes[-1].name

    def extended(self, nodes: tuple[LayerNode, ...] | list[LayerNode]) -> "LayerGraph":
        """This graph with `nodes` (a head reading its layers) after its own."""
        return LayerGraph(self.variant, self.nodes + tuple(nodes), self.in_channels)

    def channels(self) -> dict[str, int]:
        """{layer: output channels}."""
        out: dict[str, int] = {}
        for n in self.nodes:
            if n.op == "input":
                out[n.name] = self.in_channels
            elif n.op == "concat":
                out[n.name] = sum(out[i] for i in n.inputs)
            else:
                out[n.name] = n.filters or out[n.inputs[0]]
        return out

    def sizes(self, input_size: int | tuple[int, int]) -> dict[str, tuple[int, int]]:
        """{layer: (height, width) of its output} for an input of `input_size` pixels (a side, or
        (height, width)); a layer after a global pool counts as one position, (1, 1).

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
            if n.op in GLOBAL:
                out[n.name] = (1, 1)
                continue
            kh, kw = n.kernel_shape
            size = (output_size(ih, kh, n.stride, n.padding, n.dilation),
                    output_size(iw, kw, n.stride, n.padding, n.dilation))
            if min(size) < 1:
                raise ValueError(f"an input of {h}×{w} px is too small: {n.name} would be empty")
            out[n.name] = size
        return out


def output_size(size: int, kernel: int, stride: int, padding: Padding, dilation: int = 1) -> int:
    """Output length of a window op along one axis (TensorFlow's rule for 'same' and 'valid')."""
    if padding == "same":
        return -(-size // stride)
    return (size - ((kernel - 1) * dilation + 1)) // stride + 1


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'same' padding along one axis: (before, after), the odd pixel after."""
    effective = (kernel - 1) * dilation + 1
    total = max((-(-size // stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def padding_before(node: LayerNode, in_size: int) -> int:
    """Zero (or, for max-pooling, ignored) positions added before the first input position."""
    return same_padding(in_size, node.kernel, node.stride, node.dilation)[0] if node.padding == "same" else 0


def head_nodes(features: str, *, include_top: bool, pooling: str | None, classes: int,
               classifier_activation: str | None) -> tuple[LayerNode, ...]:
    """The Keras applications' optional top after a feature extractor's output `features`:
    global average pool 'avg_pool' and dense 'predictions' with the top, else the global pool
    `pooling` asks for ('avg_pool' / 'max_pool') or nothing."""
    if include_top:
        return (LayerNode("avg_pool", "global_avg_pool", (features,)),
                LayerNode("predictions", "dense", ("avg_pool",), filters=classes, bias=True,
                          activation=classifier_activation))
    if pooling == "avg":
        return (LayerNode("avg_pool", "global_avg_pool", (features,)),)
    if pooling == "max":
        return (LayerNode("max_pool", "global_max_pool", (features,)),)
    return ()
