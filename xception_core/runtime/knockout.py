"""Knockouts on a translated network: the paper's ablations and Veit et al.'s lesions, at test time.

A `Knockout` is one change to a trained network (data, checked against its layer graph by
`parse_knockouts`, whose refusals are sentences):

- 'skip_branch': a block's residual branch is left out, so the block's output is its shortcut
  (for an identity shortcut, its input: Veit et al.'s lesion);
- 'drop_shortcut': the block's shortcut is left out, its branch kept;
- 'zero_channels': chosen channels of a block's output are set to zero;
- 'relu_between': a ReLU between the depthwise and the pointwise step of a separable conv (the
  placement of the paper's Figure 10, which trained networks that way; here a trained network
  is perturbed).

`KnockoutChain` serves them on ONNX Runtime from the translation's folded forward graph
(`forward.onnx`), cut into one session per block (and one for the head), each with its
knockouts as gate inputs: every block sum reads `branch·g_b + shortcut·g_s`, every block output
is multiplied by a channel mask, every depthwise output goes through `PRelu(x, slope)` (slope 1:
the identity, slope 0: a ReLU). Gates at 1 are exact identities (x·1 = x, PRelu(x, 1) = x), so one
set of sessions serves every knockout. `intact(x)` runs the chain once and keeps every tensor
that crosses a block boundary (float32, NCHW); `run(boundaries, knockouts)` starts at the first
changed block from those tensors and runs only the rest, and a block whose one change is a
skipped identity branch is not run at all (its output is its input). NumPy and ONNX only: no
Keras or TensorFlow.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xception_core.arch.nodes import LayerGraph
from xception_core.runtime.ort import FEATURES, INPUT, OUTPUT, softmax
from xception_core.runtime.translated import FORWARD as FORWARD_GRAPH
from xception_core.runtime.translated import TranslatedModel

__all__ = ["HEAD", "KINDS", "MAX_KNOCKOUTS", "Boundaries", "Knockout", "KnockoutChain", "KnockoutError",
           "NetworkFacts", "Segment", "chain_of", "parse_knockouts", "probabilities"]

KINDS = ("skip_branch", "drop_shortcut", "zero_channels", "relu_between")
MAX_KNOCKOUTS = 64  # changes in one request: more than every block and separable conv of Xception
HEAD = "head"  # the segment after the last block: pooling, the dense layers, the output


class KnockoutError(ValueError):
    """A knockout that does not fit the network; the message is one sentence a visitor can read."""


@dataclass(frozen=True)
class Knockout:
    """One change to the network.

    Attributes:
        kind: One of `KINDS`.
        block: The block changed ('block5'); for 'relu_between', the separable conv's block.
        layer: 'relu_between' only: the separable conv ('block5_sepconv2').
        channels: 'zero_channels' only: the output channels set to zero, ascending, no repeats.
    """

    kind: str
    block: str
    layer: str | None = None
    channels: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON form `parse_knockouts` reads back."""
        out: dict[str, Any] = {"kind": self.kind, "block": self.block}
        if self.layer is not None:
            out["layer"] = self.layer
        if self.kind == "zero_channels":
            out["channels"] = list(self.channels)
        return out


@dataclass(frozen=True)
class NetworkFacts:
    """What validation reads from the layer graph: blocks in order, which have a sum (and of what
    shortcut), their output layers and channels, and the separable convs by block."""

    blocks: tuple[str, ...]
    shortcuts: dict[str, str]  # block → 'identity' / 'conv', for blocks with a sum
    outputs: dict[str, str]  # block → the layer whose output is the block's
    channels: dict[str, int]  # block → output channels
    separables: dict[str, tuple[str, ...]]  # block → its separable convs

    @classmethod
    def of(cls, graph: LayerGraph, blocks: Sequence[str]) -> "NetworkFacts":
        channels = graph.channels()
        shortcuts, outputs, separables = {}, {}, {}
        for block in blocks:
            layers = graph.block_layers(block)
            outputs[block] = layers[-1].name
            separables[block] = tuple(n.name for n in layers if n.op == "separable")
            adds = [n for n in layers if n.op == "add"]
            if adds:
                shortcut = graph.node(adds[-1].inputs[1])
                shortcuts[block] = "identity" if shortcut.block != block else "conv"
        return cls(tuple(blocks), shortcuts, outputs, {b: channels[outputs[b]] for b in blocks}, separables)


def _field(item: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in item:
        raise KnockoutError(f"{where} has no {name!r}.")
    return item[name]


def _short(value: Any) -> str:
    return repr(value)[:40]


def parse_knockouts(items: Any, facts: NetworkFacts) -> tuple[Knockout, ...]:
    """Knockouts from plain JSON (a list of {'kind', 'block', 'layer'?, 'channels'?}), checked.

    Returns:
        The knockouts in network order (by block, then kind), one per (kind, block, layer);
        channels to zero given twice for a block are joined.

    Raises:
        KnockoutError: not a list, too many, an unknown kind, block, layer or channel, a field
            that does not belong to the kind, or a block left with neither branch nor shortcut.
    """
    if not isinstance(items, (list, tuple)):
        raise KnockoutError(f"Knockouts must be a list of objects, got {type(items).__name__}.")
    if len(items) > MAX_KNOCKOUTS:
        raise KnockoutError(f"At most {MAX_KNOCKOUTS} knockouts at once, got {len(items)}.")
    found: dict[tuple[str, str, str | None], set[int]] = {}
    for i, item in enumerate(items):
        where = f"Knockout {i + 1}"
        if not isinstance(item, Mapping):
            raise KnockoutError(f"{where} must be an object with 'kind' and 'block', got {type(item).__name__}.")
        kind = _field(item, "kind", where)
        if kind not in KINDS:
            raise KnockoutError(f"{where}: unknown kind {_short(kind)}; expected one of {', '.join(KINDS)}.")
        allowed = {"kind", "block"} | {"relu_between": {"layer"}, "zero_channels": {"channels"}}.get(kind, set())
        extra = sorted(str(k)[:20] for k in item if k not in allowed)
        if extra:
            raise KnockoutError(f"{where} ({kind}) takes no {', '.join(map(repr, extra))}.")
        block = _field(item, "block", where)
        if block not in facts.blocks:
            raise KnockoutError(f"{where}: unknown block {_short(block)}; expected one of {', '.join(facts.blocks)}.")
        layer, channels = None, set()
        if kind in ("skip_branch", "drop_shortcut") and block not in facts.shortcuts:
            with_sum = [b for b in facts.blocks if b in facts.shortcuts]
            raise KnockoutError(f"{where}: {block} has no shortcut and branch to choose between; "
                                f"blocks with a residual sum are {with_sum[0]} to {with_sum[-1]}.")
        if kind == "relu_between":
            layer = _field(item, "layer", where)
            names = facts.separables[block]
            if not names:
                raise KnockoutError(f"{where}: {block} has no separable convolutions.")
            if layer not in names:
                raise KnockoutError(f"{where}: unknown layer {_short(layer)} in {block}; "
                                    f"expected one of {', '.join(names)}.")
        if kind == "zero_channels":
            channels = _channels(_field(item, "channels", where), facts.channels[block], f"{where} ({block})")
        found.setdefault((kind, block, layer), set()).update(channels)
    for block in facts.blocks:
        if ("skip_branch", block, None) in found and ("drop_shortcut", block, None) in found:
            raise KnockoutError(f"Skipping {block}'s branch and dropping its shortcut leaves it nothing; choose one.")
    order = {b: i for i, b in enumerate(facts.blocks)}
    keys = sorted(found, key=lambda k: (order[k[1]], KINDS.index(k[0]), k[2] or ""))
    return tuple(Knockout(kind, block, layer, tuple(sorted(found[(kind, block, layer)]))) for kind, block, layer in keys)


def _channels(value: Any, count: int, where: str) -> set[int]:
    if not isinstance(value, (list, tuple)) or not value:
        raise KnockoutError(f"{where}: 'channels' must be a non-empty list of channel numbers.")
    if len(value) > count:
        raise KnockoutError(f"{where}: {len(value)} channels listed, the block has {count}.")
    out = set()
    for c in value:
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not float(c).is_integer() or not 0 <= c < count:
            raise KnockoutError(f"{where}: channel {_short(c)} is not a whole number from 0 to {count - 1}.")
        out.add(int(c))
    return out


# ------------------------------------------------------------------------------------ the chain


def _layer_of(node: Any) -> str:
    """The Keras layer an emitted ONNX node belongs to: its name up to the first '/' or ':'
    (`xception_core.runtime.onnx` names nodes '<layer>/<op>:<n>' and outputs '<layer>:<n>')."""
    return node.name.split("/", 1)[0].split(":", 1)[0]


def branch_gate(block: str) -> str:
    return f"{block}/branch"


def shortcut_gate(block: str) -> str:
    return f"{block}/shortcut"


def mask_gate(block: str) -> str:
    return f"{block}/mask"


def slope_gate(layer: str) -> str:
    return f"{layer}/slope"


@dataclass
class Segment:
    """One block of the chain (or the head) as its own graph.

    Attributes:
        name: The block's name, or `HEAD`.
        inputs: Tensors it reads that earlier segments (or the photo) made, NCHW float32.
        outputs: Tensors later segments (or the answer) read.
        gates: {gate input name: its intact value}.
        output: The block's output tensor (None for the head).
        identity_from: For a block with an identity shortcut whose only input and output are its
            input and output: that input (a skipped branch then makes its output this input).
    """

    name: str
    inputs: list[str]
    outputs: list[str]
    gates: dict[str, np.ndarray]
    output: str | None = None
    identity_from: str | None = None
    proto: Any = field(default=None, repr=False)
    session: Any = field(default=None, repr=False)


Boundaries = dict[str, np.ndarray]  # tensor name → (N, C, H, W) or (N, classes) float32


class KnockoutChain:
    """The network as one ONNX Runtime session per block, with knockout gates (module docstring).

    Args:
        proto: The translation's forward graph (`onnx.ModelProto` or its bytes), NHWC input
            'input', outputs 'features' and 'output'.
        weights: Its external weights {initializer name: float32 array} (shared, not copied).
        graph: The served wiring's layer graph (blocks, sums, separable convs).
        blocks: The blocks' names, input to output.
        threads: ONNX Runtime intra-op threads per session.
    """

    def __init__(self, proto: Any, weights: Mapping[str, np.ndarray], graph: LayerGraph, blocks: Sequence[str], *,
                 threads: int | None = None):
        import onnx

        model = onnx.load_from_string(proto) if isinstance(proto, bytes) else proto
        self.facts = NetworkFacts.of(graph, blocks)
        self.threads = threads
        self._weights = dict(weights)
        self._lock = threading.Lock()
        block_of = {n.name: n.block for n in graph.nodes if n.block}
        first = self.facts.blocks[0]
        nodes = list(model.graph.node)
        owner = [block_of.get(_layer_of(n), first if _layer_of(n) == INPUT else HEAD) for n in nodes]
        names = [*self.facts.blocks, HEAD]
        produced = {o: owner[i] for i, n in enumerate(nodes) for o in n.output}
        produced[INPUT] = ""
        init = {t.name: t for t in model.graph.initializer}
        rank = {name: i for i, name in enumerate(names)}
        readers: dict[str, set[str]] = {}
        for n, o in zip(nodes, owner):
            for t in n.input:
                readers.setdefault(t, set()).add(o)
        self.segments: list[Segment] = []
        for seg in names:
            own = [n for n, o in zip(nodes, owner) if o == seg]
            if not own:
                raise ValueError(f"{seg} has no nodes in the forward graph")
            inputs = sorted({t for n in own for t in n.input if t not in init and produced.get(t) != seg},
                            key=lambda t: t != INPUT)
            outputs = [o for n in own for o in n.output
                       if any(rank[r] > rank[seg] for r in readers.get(o, ())) or o in (FEATURES, OUTPUT)]
            self.segments.append(self._segment(seg, own, inputs, outputs, init, model))
        self.index = {s.name: i for i, s in enumerate(self.segments)}

    # --------------------------------------------------------------- building

    def _segment(self, name: str, own: list[Any], inputs: list[str], outputs: list[str], init: dict[str, Any],
                 model: Any) -> Segment:
        from onnx import TensorProto, helper

        nodes = [_copy(n) for n in own]
        gates: dict[str, np.ndarray] = {}
        output = None
        identity_from = None
        if name != HEAD:
            facts = self.facts
            out_layer = facts.outputs[name]
            if name in facts.shortcuts:
                (add,) = [n for n in nodes if n.op_type == "Sum" and _layer_of(n) == f"{name}_add"]
                branch, shortcut = add.input
                gb, gs = branch_gate(name), shortcut_gate(name)
                gates[gb] = gates[gs] = np.ones((1,), np.float32)
                nodes.insert(nodes.index(add), helper.make_node("Mul", [branch, gb], [f"{gb}:x"], name=f"{gb}/Mul"))
                nodes.insert(nodes.index(add), helper.make_node("Mul", [shortcut, gs], [f"{gs}:x"], name=f"{gs}/Mul"))
                add.input[:] = [f"{gb}:x", f"{gs}:x"]
                if facts.shortcuts[name] == "identity" and inputs == [shortcut]:
                    identity_from = shortcut
            for layer in facts.separables[name]:
                (dw,) = [n for n in nodes if n.op_type == "Conv" and n.name.startswith(f"{layer}/depthwise/")]
                slope, raw = slope_gate(layer), f"{dw.output[0]}/raw"
                gates[slope] = np.ones((1,), np.float32)
                at = nodes.index(dw) + 1
                nodes.insert(at, helper.make_node("PRelu", [raw, slope], [dw.output[0]], name=f"{slope}/PRelu"))
                dw.output[:] = [raw]
            # The block's output is the last node of its output layer; masked in place, so every
            # reader (the next block, a later shortcut) reads the masked tensor.
            last = [n for n in nodes if _layer_of(n) == out_layer][-1]
            output, raw, mask = last.output[0], f"{last.output[0]}/raw", mask_gate(name)
            gates[mask] = np.ones((1, self.facts.channels[name], 1, 1), np.float32)
            nodes.insert(nodes.index(last) + 1, helper.make_node("Mul", [raw, mask], [output], name=f"{mask}/Mul"))
            last.output[:] = [raw]
            if output not in outputs:
                outputs = [*outputs, output]
            if identity_from is not None and outputs != [output]:
                identity_from = None
        used = {t for n in nodes for t in n.input}
        initializers = [init[t] for t in used if t in init]
        declared = {o.name: o for o in model.graph.output}

        def value(name: str) -> Any:
            if name in declared:
                return declared[name]
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)

        graph_inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, None) if t == INPUT else value(t)
                        for t in inputs]
        graph_inputs += [helper.make_tensor_value_info(g, TensorProto.FLOAT, list(v.shape)) for g, v in gates.items()]
        graph = helper.make_graph(nodes, f"{model.graph.name}-{name}", graph_inputs, [value(o) for o in outputs],
                                  initializer=initializers)
        proto = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="xception_core.knockout")
        proto.ir_version = model.ir_version
        return Segment(name, inputs, outputs, gates, output, identity_from, proto)

    def _session(self, segment: Segment) -> Any:
        """The segment's ONNX Runtime session, built on first use: a fast one (NCHWc layout, its own
        re-blocked copy of the segment's weights), since the lesion sweep runs eight tails a photo."""
        with self._lock:
            if segment.session is None:
                from xception_core.runtime.ort import OnnxForward

                used = {t.name for t in segment.proto.graph.initializer}
                weights = {k: a for k, a in self._weights.items() if k in used}
                # Not lean: without NCHWc the eight-block sweep misses its budget of six classifies
                # (bench/README.md, "Knockouts"); the copy is held only once Knockouts are used.
                segment.session = OnnxForward(segment.proto, weights, threads=self.threads).session
            return segment.session

    def warm_up(self) -> None:
        """Builds every session (a second or two for Xception), so the first knockout does not wait."""
        for segment in self.segments:
            self._session(segment)

    # --------------------------------------------------------------- running

    @property
    def blocks(self) -> tuple[str, ...]:
        return self.facts.blocks

    def first_changed(self, knockouts: Iterable[Knockout]) -> int:
        """Index of the first segment a set of knockouts changes (`len(blocks)`, the head, for none)."""
        return min((self.index[k.block] for k in knockouts), default=len(self.facts.blocks))

    def gates(self, knockouts: Iterable[Knockout]) -> dict[str, np.ndarray]:
        """{gate: value} for the gates the knockouts change (the others stay at their intact values)."""
        out: dict[str, np.ndarray] = {}
        for k in knockouts:
            if k.kind == "skip_branch":
                out[branch_gate(k.block)] = np.zeros((1,), np.float32)
            elif k.kind == "drop_shortcut":
                out[shortcut_gate(k.block)] = np.zeros((1,), np.float32)
            elif k.kind == "relu_between":
                out[slope_gate(k.layer or "")] = np.zeros((1,), np.float32)
            else:
                mask = out.get(mask_gate(k.block), np.ones((1, self.facts.channels[k.block], 1, 1), np.float32)).copy()
                mask[0, list(k.channels)] = 0.0
                out[mask_gate(k.block)] = mask
        return out

    def block_outputs(self) -> dict[str, str]:
        """{block: the tensor holding its output} (NCHW)."""
        return {s.name: s.output for s in self.segments if s.output is not None}

    def intact(self, batch: np.ndarray) -> Boundaries:
        """Every tensor crossing a block boundary for (N, S, S, 3) float32 photos in [-1, 1], plus
        'features' (N, h, w, C) and 'output' (N, classes): the pass knockouts start from."""
        return self._run(0, {INPUT: np.ascontiguousarray(batch, np.float32)}, {})

    def run(self, boundaries: Boundaries, knockouts: Sequence[Knockout]) -> Boundaries:
        """The network with `knockouts`, from the first changed block on; the tensors before it
        are `boundaries`' (from `intact`, same batch). Returns the boundaries of the changed net."""
        return self._run(self.first_changed(knockouts), dict(boundaries), self.gates(knockouts), knockouts)

    def _run(self, start: int, tensors: Boundaries, gates: Mapping[str, np.ndarray],
             knockouts: Sequence[Knockout] = ()) -> Boundaries:
        changes: dict[str, set[str]] = {}
        for k in knockouts:
            changes.setdefault(k.block, set()).add(k.kind)
        for segment in self.segments[start:]:
            if segment.identity_from is not None and changes.get(segment.name) == {"skip_branch"}:
                # x·0 + shortcut·1 is the shortcut exactly: nothing to run.
                tensors[segment.output] = tensors[segment.identity_from]
                continue
            feed = {t: tensors[t] for t in segment.inputs}
            feed.update({g: gates.get(g, v) for g, v in segment.gates.items()})
            values = self._session(segment).run(segment.outputs, feed)
            tensors.update(zip(segment.outputs, values))
        return tensors


def _copy(node: Any) -> Any:
    from onnx import NodeProto

    copy = NodeProto()
    copy.CopyFrom(node)
    return copy


def chain_of(model: TranslatedModel, *, threads: int | None = None) -> KnockoutChain:
    """The knockout chain of a served translation, in the wiring it was translated in (its
    forward graph's), sharing its weights' arrays. Sessions are built on first use."""
    translation = model.translation
    arch = model.info.arch
    return KnockoutChain(translation.graphs[FORWARD_GRAPH], translation.weights_for(FORWARD_GRAPH),
                         arch.graph(translation.variant), arch.block_names,
                         threads=threads if threads is not None else model.threads)


def probabilities(model: TranslatedModel, output: np.ndarray) -> np.ndarray:
    """(N, classes) probabilities from the chain's 'output', as `TranslatedModel.forward` gives them."""
    return softmax(output) if model.info.outputs == "logits" else np.asarray(output)
