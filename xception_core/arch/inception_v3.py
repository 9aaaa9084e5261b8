"""Inception V3 as data, wired as `keras.applications.InceptionV3` wires it.

Szegedy et al. 2016 ("Rethinking the Inception Architecture for Computer Vision") is the network
the Xception paper measures itself against. This module is its whole architecture: a stem of
plain convs and eleven Inception modules ('mixed0' ... 'mixed10', Keras's names), each declared
as its branches (`Branch`: a run of convs and pools, possibly ending in a split into two convs
whose outputs are concatenated), and the one reading of that declaration, `InceptionV3Spec.graph`,
which expands it into `xception_core.arch.nodes` nodes. The Keras builder and the ONNX translator
emit those nodes as they do Xception's.

Every conv is Keras's `conv2d_bn`: a Conv2D without bias, a BatchNormalization without γ
(`scale=False`) and a ReLU. Keras names none of them, so a fresh process numbers them by layer
type in the order they are made ('conv2d', 'conv2d_1', ..., 'batch_normalization_93',
'activation_93'); the graph makes its nodes in that order and gives them those names. The
official `.h5` weights load by layer order (Keras's legacy HDF5 loader is topological, not by
name), which the same order gives too (a test writes a Keras InceptionV3's weights in that layout
and loads them into ours). The registry (`xception_core.arch.registry`) names it 'inception_v3'.
No Keras, no NumPy: serving imports it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from xception_core.arch.nodes import LayerGraph, LayerNode, Op, Padding

INPUT_LAYER = "input_layer"  # the builder's `keras.Input` name, as for Xception
WIRING = "paper"  # the one wiring: Keras's reference (`build_architecture` takes it by this name)

ModuleKind = Literal["stem", "inception_a", "reduction_a", "inception_b", "reduction_b", "inception_c"]


@dataclass(frozen=True)
class Conv:
    """One `conv2d_bn`: Conv2D (no bias), BatchNorm without γ, ReLU.

    Attributes:
        filters: Output channels.
        kernel: (height, width) of the window (Inception's 1×7 and 7×1 factorisations).
        stride: Square stride.
        padding: 'same' or 'valid'.
    """

    filters: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: Padding = "same"


@dataclass(frozen=True)
class Pool:
    """A 3×3 max or average pool (Keras's MaxPooling2D / AveragePooling2D)."""

    kind: Literal["max", "avg"]
    stride: int
    padding: Padding


@dataclass(frozen=True)
class Branch:
    """One branch of a module: `steps` in order, then optionally `split`, two convs reading the
    last step whose outputs are concatenated (the 8×8 modules' 1×3 and 3×1 pair)."""

    steps: tuple[Conv | Pool, ...]
    split: tuple[Conv, Conv] | None = None


@dataclass(frozen=True)
class Module:
    """A named block: the stem (one branch, no concatenation) or an Inception module.

    Attributes:
        name: 'stem' or Keras's concatenation name ('mixed0' ... 'mixed10').
        kind: What kind of module it is, as torchvision names the classes: 'inception_a' (35×35 at
            299 px, Fig. 5 of the paper), 'reduction_a' / 'reduction_b' (the grid reductions),
            'inception_b' (17×17, Fig. 6, 7×1 factorised), 'inception_c' (8×8, Fig. 7, split
            branches).
        branches: Its branches, in Keras's call order (which is the concatenation's order).
        flow: Where it sits: 'stem' or 'inception'.
    """

    name: str
    kind: ModuleKind
    branches: tuple[Branch, ...]

    @property
    def flow(self) -> str:
        return "stem" if self.kind == "stem" else "inception"


def _c(filters: int, h: int, w: int | None = None, stride: int = 1, padding: Padding = "same") -> Conv:
    return Conv(filters, (h, h if w is None else w), stride, padding)


AVG = Pool("avg", 1, "same")
MAX = Pool("max", 2, "valid")


def _module_a(name: str, pool_filters: int) -> Module:
    return Module(name, "inception_a", (
        Branch((_c(64, 1),)),
        Branch((_c(48, 1), _c(64, 5))),
        Branch((_c(64, 1), _c(96, 3), _c(96, 3))),
        Branch((AVG, _c(pool_filters, 1))),
    ))


def _module_b(name: str, width: int) -> Module:
    return Module(name, "inception_b", (
        Branch((_c(192, 1),)),
        Branch((_c(width, 1), _c(width, 1, 7), _c(192, 7, 1))),
        Branch((_c(width, 1), _c(width, 7, 1), _c(width, 1, 7), _c(width, 7, 1), _c(192, 1, 7))),
        Branch((AVG, _c(192, 1))),
    ))


def _module_c(name: str) -> Module:
    return Module(name, "inception_c", (
        Branch((_c(320, 1),)),
        Branch((_c(384, 1),), split=(_c(384, 1, 3), _c(384, 3, 1))),
        Branch((_c(448, 1), _c(384, 3)), split=(_c(384, 1, 3), _c(384, 3, 1))),
        Branch((AVG, _c(192, 1))),
    ))


INCEPTION_V3_MODULES: tuple[Module, ...] = (
    Module("stem", "stem", (Branch((
        _c(32, 3, stride=2, padding="valid"), _c(32, 3, padding="valid"), _c(64, 3), MAX,
        _c(80, 1, padding="valid"), _c(192, 3, padding="valid"), MAX)),)),
    _module_a("mixed0", 32),
    _module_a("mixed1", 64),
    _module_a("mixed2", 64),
    Module("mixed3", "reduction_a", (
        Branch((_c(384, 3, stride=2, padding="valid"),)),
        Branch((_c(64, 1), _c(96, 3), _c(96, 3, stride=2, padding="valid"))),
        Branch((MAX,)),
    )),
    _module_b("mixed4", 128),
    _module_b("mixed5", 160),
    _module_b("mixed6", 160),
    _module_b("mixed7", 192),
    Module("mixed8", "reduction_b", (
        Branch((_c(192, 1), _c(320, 3, stride=2, padding="valid"))),
        Branch((_c(192, 1), _c(192, 1, 7), _c(192, 7, 1), _c(192, 3, stride=2, padding="valid"))),
        Branch((MAX,)),
    )),
    _module_c("mixed9"),
    _module_c("mixed10"),
)


@dataclass(frozen=True)
class InceptionV3Spec:
    """The whole network: its modules plus the Keras reference's input and classifier defaults
    (the `ArchitectureSpec` of `xception_core.arch.registry`)."""

    modules: tuple[Module, ...] = INCEPTION_V3_MODULES
    min_input_size: int = 75
    default_input_size: int = 299
    default_classes: int = 1000

    @property
    def blocks(self) -> tuple[Module, ...]:
        return self.modules

    def block(self, name: str) -> Module:
        for m in self.modules:
            if m.name == name:
                return m
        raise ValueError(f"unknown block {str(name)[:60]!r}; expected one of {[m.name for m in self.modules]}")

    def graph(self, variant: str = WIRING) -> LayerGraph:
        """The feature extractor's layers (its one wiring; cached by
        `xception_core.arch.graph.layer_graph`, which is what callers use)."""
        if variant != WIRING:
            raise ValueError(f"Inception V3 has one wiring, {WIRING!r}; got {str(variant)[:40]!r}")
        return inception_v3_graph(self)


# Keras's automatic name prefix of each op's layer (`snake_case` of its class name).
_AUTO_PREFIX: dict[str, str] = {"conv": "conv2d", "batchnorm": "batch_normalization", "relu": "activation",
                                "maxpool": "max_pooling2d", "avgpool": "average_pooling2d",
                                "concat": "concatenate"}


def inception_v3_graph(spec: InceptionV3Spec) -> LayerGraph:
    """Expands the modules into named layers in the order `keras.applications.InceptionV3` makes
    them, so each automatic name (and the legacy HDF5 weight order) is the reference's."""
    nodes: list[LayerNode] = [LayerNode(INPUT_LAYER, "input", ())]
    made: Counter[str] = Counter()

    def add(op: Op, inputs: tuple[str, ...], block: str, name: str | None = None, **window) -> str:
        if name is None:  # Keras's auto name: 'conv2d', then 'conv2d_1', ...
            prefix = _AUTO_PREFIX[op]
            name = prefix if made[prefix] == 0 else f"{prefix}_{made[prefix]}"
            made[prefix] += 1
        nodes.append(LayerNode(name, op, inputs, block, **window))
        return name

    def step(x: str, s: Conv | Pool, block: str) -> str:
        if isinstance(s, Pool):
            return add("maxpool" if s.kind == "max" else "avgpool", (x,), block, kernel=3, stride=s.stride,
                       padding=s.padding)
        (h, w) = s.kernel
        x = add("conv", (x,), block, kernel=h, kernel_width=None if w == h else w, stride=s.stride,
                padding=s.padding, filters=s.filters)
        x = add("batchnorm", (x,), block, scale=False)
        return add("relu", (x,), block)

    x = INPUT_LAYER
    for module in spec.modules:
        outputs: list[str] = []
        for branch in module.branches:
            y = x
            for s in branch.steps:
                y = step(y, s, module.name)
            if branch.split is not None:
                halves = tuple(step(y, s, module.name) for s in branch.split)
                # Keras names the first split of a module 'mixed9_0' / 'mixed9_1' and leaves the
                # second unnamed ('concatenate', 'concatenate_1').
                first = not any(n.op == "concat" and n.block == module.name for n in nodes)
                index = int(module.name.removeprefix("mixed")) - 9
                y = add("concat", halves, module.name, name=f"mixed9_{index}" if first else None)
            outputs.append(y)
        x = outputs[0] if module.kind == "stem" else add("concat", tuple(outputs), module.name, name=module.name)
    return LayerGraph(WIRING, tuple(nodes))


INCEPTION_V3_SPEC = InceptionV3Spec()
INCEPTION_V3_WIRINGS: dict[str, str] = {WIRING: "keras.applications.InceptionV3's wiring, which its weights fit"}

__all__ = ["Branch", "Conv", "INCEPTION_V3_SPEC", "INCEPTION_V3_WIRINGS", "InceptionV3Spec", "Module", "Pool",
           "inception_v3_graph"]
