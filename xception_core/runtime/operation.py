"""One depthwise-separable step of Xception, number by number.

For one separable conv of a block (`blockN_sepconvK`), one position and one output channel,
`separable_step` recomputes from plain arrays what the model computed there:

1. the depthwise step: for the input channels that matter most, the 3×3 input patch (zeros
   where the window hangs over the border), the 3×3 kernel, their product and its sum;
2. the pointwise step: every input channel's depthwise value times its 1×1 weight, ranked, the
   rest summed: the SeparableConv2D's output;
3. batch normalisation, (x − mean) / √(var + ε) · γ + β (and its folded form s·x + t);
4. the ReLU that reads it, where the wiring has one (the next conv's pre-activation, block 14's
   post-activation, the article's ReLU before each middle-flow sum);
5. at the block's end, the 3×3/2 max-pool (entry and exit flow) and the residual sum with the
   shortcut (the block's input, or a 1×1/2 conv + BatchNorm of it).

Each value equals the corresponding layer's output in the model (tests compare with Keras
intermediate outputs on random and on real weights).

The arrays come from two typed records: `BlockParams` (the layers' weights: made from a Keras
model now, or from a dict of arrays, e.g. a translated cache on disk) and `BlockTensors` (the
layer outputs the step reads, for one photo, from one forward pass kept in `OperationCache`).
Everything here is NumPy: answering a click needs no TensorFlow and no second forward pass.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from xception_core.arch.cost import SeparableCost, separable_cost
from xception_core.arch.graph import (SeparablePlan, block_output, layer_graph, padding_before, separable_names,
                                      separable_plan)
from xception_core.arch.receptive import ReceptiveField, receptive_field
from xception_core.arch.registry import architecture
from xception_core.arch.spec import XceptionSpec

__all__ = [
    "AddStep", "BatchNormParams", "BatchNormStep", "BlockParams", "BlockTensors", "Contribution", "DepthwiseChannel",
    "LayerSource", "OperationCache", "PointwiseStep", "PoolStep", "ReluStep", "SeparableParams", "SeparableStep",
    "ShortcutParams", "ShortcutStep", "StageValue", "image_key", "pass_layers", "separable_step",
]


# ------------------------------------------------------------------------------------------ weights


@dataclass(frozen=True, eq=False)
class BatchNormParams:
    """A BatchNormalization at inference: y = (x − mean) / √(variance + ε) · γ + β, per channel.

    Attributes:
        gamma, beta, mean, variance: (C,) float32 (mean and variance are the moving statistics).
        epsilon: ε.
    """

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    epsilon: float

    @property
    def scale(self) -> np.ndarray:
        """(C,) float64 s = γ / √(var + ε): the folded form is y = s·x + t."""
        return self.gamma.astype(np.float64) / np.sqrt(self.variance.astype(np.float64) + self.epsilon)

    @property
    def shift(self) -> np.ndarray:
        """(C,) float64 t = β − s·mean."""
        return self.beta.astype(np.float64) - self.scale * self.mean.astype(np.float64)

    @classmethod
    def from_layer(cls, layer: Any) -> "BatchNormParams":
        """From a Keras BatchNormalization (read through its variables; no Keras import here)."""
        mean = np.asarray(layer.moving_mean.numpy(), np.float32)
        gamma, beta = getattr(layer, "gamma", None), getattr(layer, "beta", None)  # None without scale / center
        gamma = np.ones_like(mean) if gamma is None else np.asarray(gamma.numpy(), np.float32)
        beta = np.zeros_like(mean) if beta is None else np.asarray(beta.numpy(), np.float32)
        return cls(gamma, beta, mean, np.asarray(layer.moving_variance.numpy(), np.float32), float(layer.epsilon))

    def to_arrays(self, name: str) -> dict[str, np.ndarray]:
        return {f"{name}/gamma": self.gamma, f"{name}/beta": self.beta, f"{name}/moving_mean": self.mean,
                f"{name}/moving_variance": self.variance, f"{name}/epsilon": np.float32(self.epsilon)}

    @classmethod
    def from_arrays(cls, name: str, arrays: Mapping[str, np.ndarray]) -> "BatchNormParams":
        get = lambda part: np.asarray(arrays[f"{name}/{part}"], np.float32)  # noqa: E731
        return cls(get("gamma"), get("beta"), get("moving_mean"), get("moving_variance"), float(get("epsilon")))


@dataclass(frozen=True, eq=False)
class SeparableParams:
    """One SeparableConv2D and the BatchNorm after it.

    Attributes:
        layer: 'blockN_sepconvK'.
        depthwise: (k, k, Cin) float32: one k×k kernel per input channel.
        pointwise: (Cin, Cout) float32: the 1×1 mixing.
        bias: (Cout,) float32 or None (Xception's convs have none: the BatchNorm shifts).
        batchnorm: The BatchNorm `{layer}_bn`.
    """

    layer: str
    depthwise: np.ndarray
    pointwise: np.ndarray
    bias: np.ndarray | None
    batchnorm: BatchNormParams


@dataclass(frozen=True, eq=False)
class ShortcutParams:
    """A block's 1×1 strided shortcut conv and its BatchNorm.

    Attributes:
        layer: 'blockN_residual_conv'.
        kernel: (Cin, Cout) float32.
        bn_layer: 'blockN_residual_bn'.
        batchnorm: Its weights.
    """

    layer: str
    kernel: np.ndarray
    bn_layer: str
    batchnorm: BatchNormParams


@dataclass(frozen=True, eq=False)
class BlockParams:
    """The weights one block's separable steps need, as NumPy arrays.

    Attributes:
        block: 'block2' ... 'block14'.
        separable: Its separable convs, in order.
        shortcut: Its shortcut conv, or None (identity or no shortcut).
    """

    block: str
    separable: tuple[SeparableParams, ...]
    shortcut: ShortcutParams | None

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.to_arrays().values()))

    @classmethod
    def from_model(cls, model: Any, block: str, spec: XceptionSpec = architecture().spec) -> "BlockParams":
        """From a Keras model built by `xception_core` (either wiring: the layer names are the same).

        Raises:
            ValueError: A block without separable convs, or a layer that is not what the spec says.
        """
        b = spec.block(block)
        names = separable_names(b)
        if not names:
            raise ValueError(f"{block} ({b.kind}) has no separable convolutions")
        separable = []
        for name in names:
            layer = model.get_layer(name)
            if getattr(layer, "depth_multiplier", 1) != 1:
                raise ValueError(f"{name}: depth_multiplier {layer.depth_multiplier} is not Xception's 1")
            weights = layer.get_weights()
            depthwise, pointwise = weights[0][..., 0], weights[1][0, 0]
            bias = weights[2] if getattr(layer, "use_bias", False) else None
            separable.append(SeparableParams(name, np.asarray(depthwise, np.float32), np.asarray(pointwise, np.float32),
                                             None if bias is None else np.asarray(bias, np.float32),
                                             BatchNormParams.from_layer(model.get_layer(f"{name}_bn"))))
        shortcut = None
        if b.residual_conv_name:
            conv = model.get_layer(b.residual_conv_name)
            if getattr(conv, "use_bias", False):
                raise ValueError(f"{conv.name}: a bias is not Xception's")
            kernel = np.asarray(conv.get_weights()[0][0, 0], np.float32)
            shortcut = ShortcutParams(conv.name, kernel, b.residual_bn_name,
                                      BatchNormParams.from_layer(model.get_layer(b.residual_bn_name)))
        return cls(b.name, tuple(separable), shortcut)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """{name: array}, e.g. for an `.npz` next to a translated model: 'blockN_sepconvK/depthwise'
        (k, k, Cin), '/pointwise' (Cin, Cout), '/bias' when there is one, 'blockN_residual_conv/kernel'
        (Cin, Cout), and for each BatchNorm '{bn}/gamma', '/beta', '/moving_mean',
        '/moving_variance', '/epsilon'."""
        out: dict[str, np.ndarray] = {}
        for s in self.separable:
            out[f"{s.layer}/depthwise"], out[f"{s.layer}/pointwise"] = s.depthwise, s.pointwise
            if s.bias is not None:
                out[f"{s.layer}/bias"] = s.bias
            out.update(s.batchnorm.to_arrays(f"{s.layer}_bn"))
        if self.shortcut is not None:
            out[f"{self.shortcut.layer}/kernel"] = self.shortcut.kernel
            out.update(self.shortcut.batchnorm.to_arrays(self.shortcut.bn_layer))
        return out

    @classmethod
    def from_arrays(cls, block: str, arrays: Mapping[str, np.ndarray],
                    spec: XceptionSpec = architecture().spec) -> "BlockParams":
        """The inverse of `to_arrays`.

        Raises:
            KeyError: An array is missing.
        """
        b = spec.block(block)
        separable = tuple(
            SeparableParams(name, np.asarray(arrays[f"{name}/depthwise"], np.float32),
                            np.asarray(arrays[f"{name}/pointwise"], np.float32),
                            np.asarray(arrays[f"{name}/bias"], np.float32) if f"{name}/bias" in arrays else None,
                            BatchNormParams.from_arrays(f"{name}_bn", arrays))
            for name in separable_names(b))
        shortcut = None
        if b.residual_conv_name:
            kernel = np.asarray(arrays[f"{b.residual_conv_name}/kernel"], np.float32)
            shortcut = ShortcutParams(b.residual_conv_name, kernel, b.residual_bn_name,
                                      BatchNormParams.from_arrays(b.residual_bn_name, arrays))
        return cls(b.name, separable, shortcut)

    def separable_conv(self, layer: str) -> SeparableParams:
        for s in self.separable:
            if s.layer == layer:
                return s
        raise ValueError(f"{layer!r} is not a separable conv of {self.block}")


# ------------------------------------------------------------------------------------------ tensors


class LayerSource(Protocol):
    """Runs the model once and hands back named layer outputs: an ONNX Runtime session today
    (`xception_core.runtime.operation_pass`), a translated graph on disk later."""

    def run(self, batch: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """(N, S, S, 3) float32 preprocessed images → {layer: (N, h, w, c) float32 output}."""
        ...


@dataclass(frozen=True, eq=False)
class BlockTensors:
    """What one photo's forward pass left for one block's separable steps.

    Attributes:
        photo: `image_key` of the preprocessed input.
        weights_key: Which weights ran.
        variant: 'paper' or 'article'.
        block: 'block2' ... 'block14'.
        image: (S, S, 3) uint8: the input as the model saw it.
        arrays: {layer: (h, w, c) float32 output}: each plan's `layers` (feeds, BatchNorms, the
            block's sum, the shortcut's source).
        forward_seconds: The pass that produced them.
    """

    photo: str
    weights_key: str
    variant: str
    block: str
    image: np.ndarray = field(repr=False)
    arrays: dict[str, np.ndarray] = field(repr=False)
    forward_seconds: float

    @property
    def input_size(self) -> int:
        return int(self.image.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes + sum(a.nbytes for a in self.arrays.values()))


def image_key(x: np.ndarray) -> str:
    """A photo's name in the caches: a hash of its preprocessed input's bytes, shape and dtype."""
    x = np.ascontiguousarray(x)
    digest = hashlib.blake2b(x.tobytes(), digest_size=12)
    digest.update(f"{x.shape}{x.dtype}".encode())
    return digest.hexdigest()


def to_image(x: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 in [-1, 1] → the uint8 image it was scaled from (exact for `preprocess`)."""
    return np.clip(np.rint((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def from_image(image: np.ndarray) -> np.ndarray:
    """The inverse of `to_image`, with the same two float32 operations as `preprocess`."""
    x = np.asarray(image, np.float32)
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x


def block_layers(block: str, variant: str, spec: XceptionSpec = architecture().spec) -> tuple[str, ...]:
    """Every layer output a block's separable steps read (the union of their plans' `layers`)."""
    names = separable_names(spec.block(block))
    return tuple(dict.fromkeys(n for k in range(1, len(names) + 1)
                               for n in separable_plan(block, k, variant, spec).layers))


def pass_layers(variant: str = "paper", spec: XceptionSpec = architecture().spec) -> tuple[str, ...]:
    """Every layer output the operation pass exposes: each block's separable-step layers and each
    block's output (what `BlockTensors` and the channel search read)."""
    names: list[str] = []
    for block in spec.blocks:
        if separable_names(block):
            names += block_layers(block.name, variant, spec)
        names.append(block_output(block.name, variant, spec))
    return tuple(dict.fromkeys(names))


class OperationCache:
    """Bounded LRU of `BlockTensors`, one forward pass per (photo, weights, wiring, block), plus the
    photos themselves (as uint8, to rerun a pass for another block without the upload).

    Thread-safe; passes are serialised, and a request for an entry being computed waits for it
    instead of running the model again.

    Args:
        max_entries: Most cached `BlockTensors`.
        max_bytes: Most bytes they hold (the least recently used go first; the newest stays).
        max_photos: Most photos remembered.
    """

    def __init__(self, max_entries: int = 12, max_bytes: int = 96 * 2**20, max_photos: int = 32,
                 spec: XceptionSpec = architecture().spec):
        if min(max_entries, max_photos) < 1:
            raise ValueError("max_entries and max_photos must be ≥ 1")
        self.max_entries, self.max_bytes, self.max_photos, self.spec = max_entries, max_bytes, max_photos, spec
        self._entries: OrderedDict[tuple[str, str, str, str], BlockTensors] = OrderedDict()
        self._photos: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._forward_lock = threading.Lock()
        self.forward_calls = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values()) + sum(p.nbytes for p in self._photos.values())

    def remember(self, x: np.ndarray) -> str:
        """Keeps a preprocessed photo (S, S, 3) and returns its key."""
        key = image_key(x)
        image = to_image(x)
        # A photo from `preprocess` is kept as its uint8 pixels (4× smaller); anything else as it is.
        kept = image if np.array_equal(from_image(image), x) else np.array(x, np.float32)
        with self._lock:
            self._photos[key] = kept
            self._photos.move_to_end(key)
            while len(self._photos) > self.max_photos:
                self._photos.popitem(last=False)
        return key

    def photo(self, key: str) -> np.ndarray | None:
        """The preprocessed photo (S, S, 3) float32 kept under `key`, or None."""
        with self._lock:
            kept = self._photos.get(key) if isinstance(key, str) else None
            if kept is None:
                return None
            self._photos.move_to_end(key)
        return from_image(kept) if kept.dtype == np.uint8 else kept.copy()

    def lookup(self, photo: str, weights_key: str, variant: str, block: str) -> BlockTensors | None:
        with self._lock:
            entry = self._entries.get((photo, weights_key, variant, block))
            if entry is not None:
                self._entries.move_to_end((photo, weights_key, variant, block))
            return entry

    def tensors(self, source: LayerSource, x: np.ndarray, *, weights_key: str, variant: str,
                block: str) -> tuple[BlockTensors, bool]:
        """The block's tensors for one preprocessed photo, from the cache or one pass of `source`.

        Args:
            source: Runs the model `weights_key` in wiring `variant`.
            x: (S, S, 3) float32, as `preprocess` makes it.

        Returns:
            (tensors, cache_hit).
        """
        x = np.asarray(x, np.float32)
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"x must be one preprocessed image (S, S, 3), got shape {x.shape}")
        photo = self.remember(x)
        if (entry := self.lookup(photo, weights_key, variant, block)) is not None:
            return entry, True
        names = block_layers(block, variant, self.spec)
        with self._forward_lock:
            if (entry := self.lookup(photo, weights_key, variant, block)) is not None:
                return entry, True
            start = time.perf_counter()
            out = source.run(x[None], names)
            seconds = time.perf_counter() - start
            arrays = {n: np.ascontiguousarray(out[n][0], np.float32) for n in names}
            entry = BlockTensors(photo, weights_key, variant, block, to_image(x), arrays, seconds)
            with self._lock:
                self.forward_calls += 1
                self._entries[(photo, weights_key, variant, block)] = entry
                total = sum(e.nbytes for e in self._entries.values())
                while len(self._entries) > 1 and (len(self._entries) > self.max_entries or total > self.max_bytes):
                    _, old = self._entries.popitem(last=False)
                    total -= old.nbytes
        return entry, False


# ------------------------------------------------------------------------------------------ the step


@dataclass(frozen=True, eq=False)
class DepthwiseChannel:
    """The depthwise step of one input channel at one position.

    Attributes:
        channel: Input channel.
        inputs: (k, k) float32: the conv's input around the position (after the ReLU that feeds
            it, if any); 0 where the window hangs over the border (zero padding).
        before_relu: (k, k) float32: the same before that ReLU (0 at padding), or None without one.
        padding: (k, k) bool: where the window is outside the map.
        kernel: (k, k) float32: this channel's depthwise kernel.
        products: (k, k) float64: inputs × kernel.
        value: The sum of the products: the depthwise output.
    """

    channel: int
    inputs: np.ndarray
    before_relu: np.ndarray | None
    padding: np.ndarray
    kernel: np.ndarray
    products: np.ndarray
    value: float


@dataclass(frozen=True)
class Contribution:
    """One input channel's share of a 1×1 conv's output: value × weight."""

    channel: int
    value: float
    weight: float

    @property
    def product(self) -> float:
        return self.value * self.weight


@dataclass(frozen=True)
class PointwiseStep:
    """A 1×1 conv's output at one position and channel as a sum of ranked contributions.

    Attributes:
        layer: The layer whose output `value` is ('blockN_sepconvK' or 'blockN_residual_conv').
        channel: Output channel.
        top: The largest contributions by magnitude, largest first.
        rest: Sum of the other contributions.
        rest_count: How many those are.
        bias: The conv's bias (0 without one).
        value: Sum of every contribution plus the bias.
    """

    layer: str
    channel: int
    top: tuple[Contribution, ...]
    rest: float
    rest_count: int
    bias: float
    value: float

    @property
    def in_channels(self) -> int:
        return len(self.top) + self.rest_count


@dataclass(frozen=True)
class BatchNormStep:
    """y = (x − mean) / √(var + ε) · γ + β = scale·x + shift, for one channel."""

    layer: str
    x: float
    mean: float
    variance: float
    epsilon: float
    gamma: float
    beta: float
    scale: float
    shift: float
    value: float


@dataclass(frozen=True)
class ReluStep:
    layer: str
    x: float
    value: float


@dataclass(frozen=True, eq=False)
class PoolStep:
    """The block's 3×3/2 max-pool at the output position whose window holds the chosen one.

    Attributes:
        layer: 'blockN_pool'.
        row, col: Its output position.
        top, left: The window's first row and column on the conv's grid (−1 when it starts in the
            padding).
        window: (3, 3) float32 BatchNorm outputs in the window; NaN where it hangs over the border
            (max-pooling ignores those).
        value: The window's largest value.
        argmax: (row, col) of it inside the window.
    """

    layer: str
    row: int
    col: int
    top: int
    left: int
    window: np.ndarray
    value: float
    argmax: tuple[int, int]


@dataclass(frozen=True)
class ShortcutStep:
    """The block's shortcut at the sum's position and channel.

    Attributes:
        kind: 'identity' (the block's input as it is) or 'conv' (1×1/2 conv then BatchNorm).
        source: The layer the shortcut reads.
        row, col: The position read in `source`.
        layer: The layer whose output `value` is (the source, or 'blockN_residual_bn').
        conv: The 1×1 conv as ranked contributions (conv shortcuts only).
        batchnorm: Its BatchNorm (conv shortcuts only).
        value: The shortcut's value.
    """

    kind: Literal["identity", "conv"]
    source: str
    row: int
    col: int
    layer: str
    conv: PointwiseStep | None
    batchnorm: BatchNormStep | None
    value: float


@dataclass(frozen=True)
class AddStep:
    """The block's sum: main path + shortcut."""

    layer: str
    row: int
    col: int
    main: float
    shortcut: ShortcutStep
    value: float


@dataclass(frozen=True)
class StageValue:
    """One number of the step that is some layer's output: where to find it in the model."""

    stage: str
    layer: str
    row: int
    col: int
    channel: int
    value: float


@dataclass(frozen=True, eq=False)
class SeparableStep:
    """One separable conv at one position and output channel, number by number.

    Attributes:
        plan: The layers around the conv (`xception_core.arch.graph.SeparablePlan`).
        variant: The wiring.
        row, col: Position on the conv's grid (its input's and output's: stride 1, 'same').
        channel: Output channel.
        grid: (height, width) of the conv's grid.
        depthwise: The depthwise step of the input channels that matter most here (largest
            |depthwise value × pointwise weight| first).
        depthwise_values: (Cin,) float64: every input channel's depthwise output here.
        pointwise: The 1×1 mixing into `channel`.
        batchnorm: The BatchNorm after it.
        relu: The ReLU that reads it, or None.
        pool: The block's max-pool, when it reads this conv's output.
        add: The block's sum, when this conv's path ends there.
        model: {layer: the model's own value} at the same positions and channel, from the forward
            pass the tensors came from (BatchNorm-folded, so equal up to float32 rounding).
        receptive: The receptive field of the position on the model's input.
        cost: This conv against a standard conv with the same shapes, over the whole grid.
    """

    plan: SeparablePlan
    variant: str
    row: int
    col: int
    channel: int
    grid: tuple[int, int]
    depthwise: tuple[DepthwiseChannel, ...]
    depthwise_values: np.ndarray = field(repr=False)
    pointwise: PointwiseStep = field(repr=False)
    batchnorm: BatchNormStep = field(repr=False)
    relu: ReluStep | None = field(repr=False)
    pool: PoolStep | None = field(repr=False)
    add: AddStep | None = field(repr=False)
    model: dict[str, float] = field(repr=False)
    receptive: ReceptiveField = field(repr=False)
    cost: SeparableCost = field(repr=False)

    @property
    def value(self) -> float:
        """The step's last value (the block's sum, the ReLU's, or the BatchNorm's)."""
        last = self.add or self.relu or self.batchnorm
        return last.value

    def stages(self) -> tuple[StageValue, ...]:
        """Every number of the step that a layer of the model outputs, in order."""
        r, c, o = self.row, self.col, self.channel
        out = [StageValue("pointwise", self.pointwise.layer, r, c, o, self.pointwise.value),
               StageValue("batchnorm", self.batchnorm.layer, r, c, o, self.batchnorm.value)]
        if self.relu is not None and self.relu.layer:
            out.append(StageValue("relu", self.relu.layer, r, c, o, self.relu.value))
        if self.pool is not None:
            out.append(StageValue("pool", self.pool.layer, self.pool.row, self.pool.col, o, self.pool.value))
        if self.add is not None:
            s = self.add.shortcut
            # The shortcut's output sits on the sum's grid (a conv shortcut reads its source at a stride).
            out.append(StageValue("shortcut", s.layer, self.add.row, self.add.col, o, s.value))
            out.append(StageValue("add", self.add.layer, self.add.row, self.add.col, o, self.add.value))
        return tuple(out)


def _window(x: np.ndarray, row: int, col: int, kernel: int, stride: int, pad: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """The k×k window of `x` (h, w, c) read by output position (row, col): ((k, k, c) values with
    zeros outside the map, (k, k) bool mask of those outside)."""
    h, w, c = x.shape
    top, left = row * stride - pad[0], col * stride - pad[1]
    patch = np.zeros((kernel, kernel, c), x.dtype)
    outside = np.ones((kernel, kernel), bool)
    r0, r1, c0, c1 = max(top, 0), min(top + kernel, h), max(left, 0), min(left + kernel, w)
    if r0 < r1 and c0 < c1:
        patch[r0 - top:r1 - top, c0 - left:c1 - left] = x[r0:r1, c0:c1]
        outside[r0 - top:r1 - top, c0 - left:c1 - left] = False
    return patch, outside


def _rank(layer: str, channel: int, values: np.ndarray, weights: np.ndarray, bias: float, top: int) -> PointwiseStep:
    products = values * weights.astype(np.float64)
    n = min(top, products.size)
    order = np.argsort(-np.abs(products), kind="stable")
    best, rest = order[:n], order[n:]
    return PointwiseStep(layer, channel, tuple(Contribution(int(i), float(values[i]), float(weights[i])) for i in best),
                         float(products[rest].sum()), int(rest.size), float(bias), float(products.sum() + bias))


def _batchnorm(layer: str, bn: BatchNormParams, channel: int, x: float) -> BatchNormStep:
    mean, var = float(bn.mean[channel]), float(bn.variance[channel])
    gamma, beta = float(bn.gamma[channel]), float(bn.beta[channel])
    value = (x - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
    return BatchNormStep(layer, float(x), mean, var, bn.epsilon, gamma, beta, float(bn.scale[channel]),
                         float(bn.shift[channel]), float(value))


def _check_position(value: Any, label: str, high: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value < high:
        raise ValueError(f"{label} must be an integer in [0, {high}), got {str(value)[:20]!r}")
    return int(value)


def separable_step(plan: SeparablePlan, params: BlockParams, tensors: BlockTensors | Mapping[str, np.ndarray],
                   row: int, col: int, channel: int, *, top: int = 4, variant: str = "paper",
                   input_size: int | None = None, spec: XceptionSpec = architecture().spec) -> SeparableStep:
    """Recomputes one separable conv at (row, col) for output `channel`, and what follows it in
    its block, from the conv's input and the layers' weights.

    Args:
        plan: `separable_plan(block, k, variant)`.
        params: The block's weights.
        tensors: The block's layer outputs for one photo (`BlockTensors`, or {layer: (h, w, c)}).
        row, col: Position on the conv's grid.
        channel: Output channel.
        top: How many input channels to show in full (depthwise) and by name (pointwise).
        variant: The wiring (`tensors.variant` when they are `BlockTensors`).
        input_size: The model's input side, for the receptive field (the photo's, from `tensors`).

    Raises:
        ValueError: A position or channel out of range, or tensors of another block or wiring.
    """
    arrays = tensors.arrays if isinstance(tensors, BlockTensors) else tensors
    if isinstance(tensors, BlockTensors):
        if tensors.block != plan.block:
            raise ValueError(f"tensors of {tensors.block} for a step of {plan.block}")
        variant, input_size = tensors.variant, tensors.input_size
    if input_size is None:
        raise ValueError("input_size is needed with plain arrays")
    graph = layer_graph(variant, spec)
    conv = params.separable_conv(plan.layer)
    feed = arrays[plan.feed]
    h, w, cin = feed.shape
    row, col = _check_position(row, "row", h), _check_position(col, "col", w)
    channel = _check_position(channel, "channel", plan.out_channels)
    if top < 1:
        raise ValueError(f"top must be ≥ 1, got {top}")
    node = graph.node(plan.layer)
    pad = (padding_before(node, h), padding_before(node, w))
    k = node.kernel
    kernel = conv.depthwise.astype(np.float64)  # (k, k, Cin)
    pointwise = conv.pointwise[:, channel]
    bias = float(conv.bias[channel]) if conv.bias is not None else 0.0

    def conv_input(patch: np.ndarray) -> np.ndarray:
        return np.maximum(patch, 0) if plan.relu_before else patch

    def depthwise_at(r: int, c: int) -> np.ndarray:
        patch, _ = _window(feed, r, c, k, 1, pad)
        return (conv_input(patch).astype(np.float64) * kernel).sum(axis=(0, 1))

    def bn_out(r: int, c: int) -> float:
        x = float(depthwise_at(r, c) @ pointwise.astype(np.float64) + bias)
        return _batchnorm(plan.batchnorm, conv.batchnorm, channel, x).value

    raw, outside = _window(feed, row, col, k, 1, pad)
    inputs = conv_input(raw)
    values = (inputs.astype(np.float64) * kernel).sum(axis=(0, 1))  # (Cin,)
    pw = _rank(plan.layer, channel, values, pointwise, bias, top)
    shown = [c.channel for c in pw.top]
    depthwise = tuple(DepthwiseChannel(
        i, inputs[..., i].astype(np.float32), raw[..., i].astype(np.float32) if plan.relu_before else None, outside,
        conv.depthwise[..., i], inputs[..., i].astype(np.float64) * kernel[..., i], float(values[i])) for i in shown)
    bn = _batchnorm(plan.batchnorm, conv.batchnorm, channel, pw.value)
    relu = ReluStep(plan.relu_after, bn.value, max(bn.value, 0.0)) if plan.relu_after else None
    model = {plan.batchnorm: float(arrays[plan.batchnorm][row, col, channel])} if plan.batchnorm in arrays else {}

    pool = add = None
    main, at = (relu or bn).value, (row, col)
    if plan.pool:
        pnode = graph.node(plan.pool)
        ppad = (padding_before(pnode, h), padding_before(pnode, w))
        out_h, out_w = arrays[plan.add].shape[:2] if plan.add in arrays else (-(-h // 2), -(-w // 2))
        pr = min((row + ppad[0]) // pnode.stride, out_h - 1)
        pc = min((col + ppad[1]) // pnode.stride, out_w - 1)
        top_, left = pr * pnode.stride - ppad[0], pc * pnode.stride - ppad[1]
        window = np.full((pnode.kernel, pnode.kernel), np.nan, np.float64)
        for i in range(pnode.kernel):
            for j in range(pnode.kernel):
                r, c = top_ + i, left + j
                if 0 <= r < h and 0 <= c < w:
                    window[i, j] = bn.value if (r, c) == (row, col) else bn_out(r, c)
        arg = np.unravel_index(int(np.nanargmax(window)), window.shape)
        pool = PoolStep(plan.pool, int(pr), int(pc), int(top_), int(left), window.astype(np.float32),
                        float(np.nanmax(window)), (int(arg[0]), int(arg[1])))
        main, at = pool.value, (pool.row, pool.col)
    if plan.add:
        source = arrays[plan.shortcut_source]
        if plan.shortcut == "conv":
            rnode = graph.node(plan.residual_conv)
            sh, sw = source.shape[:2]
            sr = at[0] * rnode.stride - padding_before(rnode, sh)
            sc = at[1] * rnode.stride - padding_before(rnode, sw)
            if params.shortcut is None:
                raise ValueError(f"{plan.block}'s weights have no shortcut conv")
            conv_step = _rank(plan.residual_conv, channel, source[sr, sc].astype(np.float64),
                              params.shortcut.kernel[:, channel], 0.0, top)
            sbn = _batchnorm(plan.residual_bn, params.shortcut.batchnorm, channel, conv_step.value)
            shortcut = ShortcutStep("conv", plan.shortcut_source, int(sr), int(sc), plan.residual_bn, conv_step, sbn,
                                    sbn.value)
        else:
            shortcut = ShortcutStep("identity", plan.shortcut_source, at[0], at[1], plan.shortcut_source, None, None,
                                    float(source[at[0], at[1], channel]))
        add = AddStep(plan.add, at[0], at[1], main, shortcut, main + shortcut.value)
        if plan.add in arrays:
            model[plan.add] = float(arrays[plan.add][at[0], at[1], channel])
    return SeparableStep(plan, variant, row, col, channel, (h, w), depthwise, values, pw, bn, relu, pool, add, model,
                         receptive_field(plan.layer, row, col, input_size, variant, spec),
                         separable_cost(k, cin, plan.out_channels, h, w))
