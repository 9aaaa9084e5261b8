"""Receptive fields: which input pixels one output position of any layer can depend on.

Computed from the layer graph (`xception_core.arch.graph`: the spec's kernels, strides, padding
and pooling, in either wiring), exactly, borders included: the set of pixels is carried back
layer by layer, clipped to each map at every step (a padding position depends on no pixel), with
TensorFlow's 'same' rule (the odd padding pixel after), and the two branches of each block
joined where they meet. Every window here is square and acts on rows and columns alike, so the
set is worked out per axis; a test checks the result against the gradient footprint of the Keras
model itself (every pixel inside the box has a non-zero gradient, every pixel outside a zero one).

Pure Python and NumPy: no TensorFlow.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from xception_core.arch.graph import INPUT_LAYER, LayerGraph, block_output, layer_graph, padding_before
from xception_core.arch.spec import XCEPTION_SPEC, XceptionSpec

Size = int | tuple[int, int]


@dataclass(frozen=True)
class Geometry:
    """Where an interior position's field lies along one axis: position p sees input pixels
    p·jump + start ... p·jump + end (padding included, so start may be negative).

    Attributes:
        jump: Input pixels between neighbouring positions (the product of the strides).
        start, end: Offsets of the field of position 0, inclusive.
    """

    jump: int
    start: int
    end: int

    @property
    def size(self) -> int:
        """The field's side for a position far from the borders."""
        return self.end - self.start + 1

    def centre(self, position: int) -> float:
        return position * self.jump + (self.start + self.end) / 2


@dataclass(frozen=True)
class ReceptiveField:
    """The input pixels one output position depends on: a box in the model's input.

    Attributes:
        layer: The layer ('block5_sepconv2', 'block13_add', ...).
        row, col: The output position.
        top, left, bottom, right: The box, inclusive, in input pixels, clipped to the input.
        input_size: (height, width) of the input.
        rows, cols: The unclipped `Geometry` along each axis (field size and jump far from borders).
    """

    layer: str
    row: int
    col: int
    top: int
    left: int
    bottom: int
    right: int
    input_size: tuple[int, int]
    rows: Geometry
    cols: Geometry

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right + 1, bottom + 1): the crop box PIL and NumPy slicing use."""
        return self.left, self.top, self.right + 1, self.bottom + 1

    @property
    def clipped(self) -> bool:
        """The unclipped field reaches past the input's border (this one is cut there)."""
        return self.height < self.rows.size or self.width < self.cols.size

    @property
    def covers_input(self) -> bool:
        return (self.height, self.width) == self.input_size


@dataclass(frozen=True)
class BlockField:
    """One row of the receptive-field table: a block's output layer at one input size.

    Attributes:
        block: 'block1' ... 'block14'.
        layer: The block's output layer.
        grid: (height, width) of its output.
        jump: Input pixels between neighbouring output positions.
        size: Side of an interior position's field (unclipped; may exceed the input).
        centre: The clipped field of the central position.
    """

    block: str
    layer: str
    grid: tuple[int, int]
    jump: int
    size: int
    centre: ReceptiveField


def _pair(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return int(size), int(size)
    if (isinstance(size, tuple) and len(size) == 2
            and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)):
        return int(size[0]), int(size[1])
    raise ValueError(f"input_size must be a side or (height, width) in pixels, got {str(size)[:40]!r}")


@functools.lru_cache(maxsize=64)
def _sizes(variant: str, spec: XceptionSpec, input_size: tuple[int, int]) -> dict[str, tuple[int, int]]:
    return layer_graph(variant, spec).sizes(input_size)


@functools.lru_cache(maxsize=64)
def geometries(input_size: Size, variant: str = "paper",
               spec: XceptionSpec = XCEPTION_SPEC) -> dict[str, tuple[Geometry, Geometry]]:
    """{layer: (row `Geometry`, column `Geometry`)} for every layer at one input size.

    A sum's field is the hull of its two branches' (they share the jump); 'same' padding depends
    on each map's size, so the offsets do too.
    """
    size = _pair(input_size)
    graph = layer_graph(variant, spec)
    sizes = _sizes(variant, spec, size)
    out: dict[str, tuple[Geometry, Geometry]] = {}
    for node in graph.nodes:
        if node.op == "input":
            out[node.name] = (Geometry(1, 0, 0), Geometry(1, 0, 0))
            continue
        per_axis = []
        for axis in (0, 1):
            parts = []
            for name in node.inputs:
                g = out[name][axis]
                pad = padding_before(node, sizes[name][axis])
                parts.append(Geometry(g.jump * node.stride, g.start - pad * g.jump,
                                      g.end + (node.kernel - 1 - pad) * g.jump))
            if len({p.jump for p in parts}) != 1:  # pragma: no cover - the spec sums maps of one grid
                raise ValueError(f"{node.name}: inputs on different grids")
            per_axis.append(Geometry(parts[0].jump, min(p.start for p in parts), max(p.end for p in parts)))
        out[node.name] = (per_axis[0], per_axis[1])
    return out


def _footprint(graph: LayerGraph, sizes: dict[str, tuple[int, int]], layer: str, position: int,
               axis: int) -> np.ndarray:
    """(input side,) bool: the input pixels along `axis` that `position` of `layer` depends on.

    The set travels back through the layers in reverse graph order, so a layer's set is complete
    (every reader's share joined) before it is carried further back."""
    masks: dict[str, np.ndarray] = {layer: np.zeros(sizes[layer][axis], bool)}
    masks[layer][position] = True
    order = [n.name for n in graph.nodes]
    for name in reversed(order[: order.index(layer) + 1]):
        node = graph.node(name)
        mask = None if node.op == "input" else masks.pop(name, None)
        if mask is None:
            continue
        hit = np.flatnonzero(mask)
        for source in node.inputs:
            n_in = sizes[source][axis]
            if node.kernel == 1 and node.stride == 1:
                back = mask
            else:
                back = np.zeros(n_in, bool)
                first = hit * node.stride - padding_before(node, n_in)
                for d in range(node.kernel):
                    j = first + d
                    back[j[(j >= 0) & (j < n_in)]] = True
            masks[source] = masks[source] | back if source in masks else back.copy()
    return masks[INPUT_LAYER]


def receptive_field(layer: str, row: int, col: int, input_size: Size, variant: str = "paper",
                    spec: XceptionSpec = XCEPTION_SPEC) -> ReceptiveField:
    """The input box that position (row, col) of `layer` depends on.

    Args:
        layer: Any layer of the feature extractor ('block1_conv1' ... 'block14_sepconv2_act').
        row, col: Position on the layer's output grid.
        input_size: The model's input side (or (height, width)).
        variant: 'paper' or 'article' wiring.

    Raises:
        ValueError: Unknown layer, or a position off the layer's grid.
    """
    size = _pair(input_size)
    graph = layer_graph(variant, spec)
    graph.node(layer)
    sizes = _sizes(variant, spec, size)
    h, w = sizes[layer]
    for label, value, high in (("row", row, h), ("col", col, w)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < high:
            raise ValueError(f"{label} must be an integer in [0, {high}) for {layer} at {size[0]}×{size[1]}, "
                             f"got {str(value)[:20]!r}")
    box = []
    for axis, position in ((0, int(row)), (1, int(col))):
        hit = np.flatnonzero(_footprint(graph, sizes, layer, position, axis))
        box += [int(hit[0]), int(hit[-1])]
    rows, cols = geometries(size, variant, spec)[layer]
    return ReceptiveField(layer, int(row), int(col), box[0], box[2], box[1], box[3], size, rows, cols)


def position_at(layer: str, y: float, x: float, input_size: Size, variant: str = "paper",
                spec: XceptionSpec = XCEPTION_SPEC) -> tuple[int, int]:
    """The output position of `layer` whose field is centred nearest input pixel (y, x): where a
    click on the photo lands on the layer's grid."""
    size = _pair(input_size)
    rows, cols = geometries(size, variant, spec)[layer]
    h, w = _sizes(variant, spec, size)[layer]
    row = int(np.clip(round((float(y) - rows.centre(0)) / rows.jump), 0, h - 1))
    col = int(np.clip(round((float(x) - cols.centre(0)) / cols.jump), 0, w - 1))
    return row, col


def receptive_table(input_size: Size, variant: str = "paper",
                    spec: XceptionSpec = XCEPTION_SPEC) -> tuple[BlockField, ...]:
    """The field of every block's output at one input size, stem to exit."""
    size = _pair(input_size)
    sizes = _sizes(variant, spec, size)
    geo = geometries(size, variant, spec)
    rows = []
    for block in spec.blocks:
        layer = block_output(block.name, variant, spec)
        h, w = sizes[layer]
        g = geo[layer][0]
        centre = receptive_field(layer, h // 2, w // 2, size, variant, spec)
        rows.append(BlockField(block.name, layer, (h, w), g.jump, g.size, centre))
    return tuple(rows)


def layer_grid(layer: str, input_size: Size, variant: str = "paper",
               spec: XceptionSpec = XCEPTION_SPEC) -> tuple[int, int]:
    """(height, width) of a layer's output at an input size."""
    layer_graph(variant, spec).node(layer)
    return _sizes(variant, spec, _pair(input_size))[layer]


__all__ = ["BlockField", "Geometry", "ReceptiveField", "geometries", "layer_grid", "position_at", "receptive_field",
           "receptive_table"]
