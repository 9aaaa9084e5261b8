"""The architectures this project builds, one record each: what everything outside `arch/` reads.

An `Architecture` names its spec (blocks and defaults, behind the `ArchitectureSpec` protocol),
its layer graph per wiring (`graph`), its wirings and the differences between them. A weights
preset (`xception_core.weights.presets.Preset.architecture`) and a built model's record
(`xception_core.weights.source.ModelInfo.architecture`) name their architecture by its key here,
as timm's pretrained configs name theirs. Adding an architecture is one module in `arch/` (its
spec as data and its `graph(wiring)`, written in `xception_core.arch.nodes`' ops) plus one line
in `ARCHITECTURES` (CONTRIBUTING.md, "Adding an architecture").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from xception_core.arch.graph import LayerGraph, block_output, layer_graph
from xception_core.arch.inception_v3 import INCEPTION_V3_SPEC, INCEPTION_V3_WIRINGS
from xception_core.arch.spec import VARIANT_SPECS, WIRING_DIFFERENCES, XCEPTION_SPEC, Variant, WiringDifference


class BlockLike(Protocol):
    """A named block of an architecture, as the explorer lists it."""

    name: str

    @property
    def flow(self) -> str: ...


class ArchitectureSpec(Protocol):
    """What an architecture's spec offers besides its graph (`XceptionSpec` is one)."""

    min_input_size: int
    default_input_size: int
    default_classes: int

    @property
    def blocks(self) -> Sequence[BlockLike]: ...

    def block(self, name: str) -> BlockLike: ...

    def graph(self, variant: str) -> LayerGraph: ...


@dataclass(frozen=True)
class Architecture:
    """One architecture.

    Attributes:
        name: Its key ('xception'): what presets and model records name.
        title: What a page may show.
        spec: Its blocks and defaults (`ArchitectureSpec`); `spec.graph(wiring)` is its graph
            builder (`graph` here caches it).
        wirings: {wiring name: its `Variant`, or a sentence for a network with one wiring};
            `reference_wiring` is the one official weights fit.
        differences: Where the wirings differ, each declared once (`WiringDifference`).
        reference_wiring: The wiring of the Keras reference.
    """

    name: str
    title: str
    spec: ArchitectureSpec
    wirings: Mapping[str, Variant | str]  # Xception's `Variant`s; a one-wiring network's note
    differences: tuple[WiringDifference, ...]
    reference_wiring: str = "paper"

    def graph(self, wiring: str | None = None) -> LayerGraph:
        """Its feature extractor's layers in one wiring (default: the reference's)."""
        return layer_graph(wiring or self.reference_wiring, self.spec)

    def features_layer(self, wiring: str | None = None) -> str:
        """The layer whose output is the feature extractor's: the graph's last."""
        return self.graph(wiring).output

    @property
    def block_names(self) -> tuple[str, ...]:
        """Its blocks' names, input to output."""
        return tuple(b.name for b in self.spec.blocks)

    def block(self, name: str) -> BlockLike:
        """A block by name (a `ValueError` listing the names for an unknown one)."""
        return self.spec.block(name)

    def block_output(self, block: str, wiring: str | None = None) -> str:
        """The layer whose output is the block's output in a wiring."""
        return block_output(block, wiring or self.reference_wiring, self.spec)

    def block_outputs(self, wiring: str | None = None) -> dict[str, str]:
        """{block name: the layer whose output is the block's}, input to output."""
        return {name: self.block_output(name, wiring) for name in self.block_names}


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("xception", "Xception", XCEPTION_SPEC, VARIANT_SPECS, WIRING_DIFFERENCES),
    Architecture("inception_v3", "Inception V3", INCEPTION_V3_SPEC, INCEPTION_V3_WIRINGS, ()),
)}

DEFAULT_ARCHITECTURE = "xception"  # what a model built without a preset (random weights, a file) is


def architecture(name: str = DEFAULT_ARCHITECTURE) -> Architecture:
    """The record of an architecture by its key, raising a `ValueError` that lists the known ones."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown architecture {str(name)[:60]!r}; known: {list(ARCHITECTURES)}") from None


__all__ = ["ARCHITECTURES", "Architecture", "ArchitectureSpec", "DEFAULT_ARCHITECTURE", "architecture"]
