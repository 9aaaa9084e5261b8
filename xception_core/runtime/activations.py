"""Every block's activations for one image, from ONE forward pass, cached for the explorer.

`ActivationExplorer.compute` runs one multi-output pass per image, weights and wiring that
yields all 14 block outputs as float16 maps plus each channel's mean and the classifier output,
and keeps the maps in a bounded LRU cache. Switching block, channel or grid size then only
slices NumPy arrays: no second forward pass (`forward_calls` counts them). A block's summary
statistics and histogram are computed from its stored map the first time they are asked for
(a page shows one block at a time; reducing all 14 up front would cost about as much as the
forward itself).

The pass runs on the backend `xception_core.runtime.forward` picks: ONNX Runtime
(`xception_core.runtime.onnx.to_onnx_parts(block_maps=…)`, BatchNorm folded, the reductions and the
float16 cast inside the graph), or a `tf.function` computing the same. Both give the same record
(within float16 and BatchNorm-folding rounding).

Maps are stored channel-first, (c, h, w): ONNX Runtime's own layout, so no transpose is paid
for blocks nobody looks at, and one channel is a contiguous slice. `ImageActivations.blocks`
still shows them as (h, w, c). At 299×299 the 14 block outputs hold 5.1 M values (10 MB as
float16); at 150×150, 1.3 M (2.6 MB). float16 keeps ~3 significant digits, plenty for pictures
and for relative differences between wirings, which are O(0.1–1).

Numbers only: no UI code.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import numpy as np

from xception_core.arch.graph import block_output
from xception_core.arch.registry import architecture
from xception_core.arch.spec import XceptionSpec
from xception_core.runtime.ort import OUTPUT, means_name, softmax

if TYPE_CHECKING:
    from xception_core.model import LoadedModel
    from xception_core.runtime.forward import Forward

# A served model is a `TranslatedModel` (ONNX Runtime only, either wiring); a Keras `LoadedModel`
# (backend 'tf', tests, benchmarks) gets a `KerasBlocksPass`, which imports TensorFlow then and only then.
Model = Any  # BlocksPass | LoadedModel

__all__ = [
    "ActivationExplorer",
    "BlockDifference",
    "BlocksPass",
    "KerasBlocksPass",
    "BlockStats",
    "ImageActivations",
    "compare_variants",
]

logger = logging.getLogger(__name__)

HISTOGRAM_BINS = 40


# ------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class BlockStats:
    """Statistics of one block's output for one image, from its stored float16 map (accumulated
    in float32; values below float16's smallest subnormal, 6e-8, count as zeros).

    Attributes:
        block: Block name ('block1' ... 'block14').
        shape: (h, w, c) of the output.
        mean, std, min, max: Over all h·w·c values.
        zero_fraction: Share of values exactly 0.
        after_relu: Whether the output is a ReLU's (stem; block 14 in the paper wiring). Only
            then is `zero_fraction` the share of switched-off units; a block whose output is a
            sum (`blockN_add`) or a BatchNorm has almost no exact zeros.
        histogram_counts: (bins,) int64 counts of the values.
        histogram_edges: (bins + 1,) float32 bin edges, from min to max.
    """

    block: str
    shape: tuple[int, int, int]
    mean: float
    std: float
    min: float
    max: float
    zero_fraction: float
    after_relu: bool
    histogram_counts: np.ndarray = field(repr=False)
    histogram_edges: np.ndarray = field(repr=False)


def block_stats(block: str, values: np.ndarray, after_relu: bool, bins: int = HISTOGRAM_BINS) -> BlockStats:
    """`BlockStats` of one stored map.

    Args:
        block: Block name.
        values: (c, h, w) float16 map, as `ImageActivations` stores it.
        after_relu: Whether the block's output is a ReLU's.
        bins: Histogram bins.
    """
    v = values.astype(np.float32)
    lo, hi = float(v.min()), float(v.max())
    top = max(hi, lo + 1e-6)
    counts, _ = np.histogram(v, bins=bins, range=(lo, top))
    edges = np.linspace(lo, top, bins + 1, dtype=np.float32)
    c, h, w = values.shape
    return BlockStats(block, (h, w, c), float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64)), lo, hi,
                      float(np.count_nonzero(values == 0)) / values.size, after_relu, counts.astype(np.int64), edges)


class _LazyStats(Mapping[str, BlockStats]):
    """{block: BlockStats}, each computed on first access from the stored map and kept."""

    def __init__(self, maps: Mapping[str, np.ndarray], after_relu: Mapping[str, bool], bins: int):
        self._maps, self._after_relu, self._bins = maps, after_relu, bins
        self._done: dict[str, BlockStats] = {}

    def __getitem__(self, block: str) -> BlockStats:
        stats = self._done.get(block)
        if stats is None:  # two threads may both compute it: same result, no lock needed
            stats = self._done[block] = block_stats(block, self._maps[block], self._after_relu[block], self._bins)
        return stats

    def __iter__(self) -> Iterator[str]:
        return iter(self._maps)

    def __len__(self) -> int:
        return len(self._maps)


@dataclass(frozen=True, eq=False)
class ImageActivations:
    """One image through one model (weights + wiring): every block's output and statistics.

    Attributes:
        key: Cache key (weights key, variant and a hash of the preprocessed input).
        weights_key: Which weights ran.
        variant: 'paper' or 'article'.
        image: (S, S, 3) uint8: the input as the model saw it (resized, before scaling).
        maps: {block: (c, h, w) float16 output}, in network order (see `blocks` for (h, w, c)).
        channel_means: {block: (c,) float32 mean over h, w of each channel, from the float32
            output}.
        stats: {block: BlockStats}, each computed when first read.
        probabilities: (classes,) float32 (softmax applied to logits).
        forward_seconds: Time of the one forward pass that produced all of this.
        backend: 'onnx' or 'tf': what ran the pass.
    """

    key: str
    weights_key: str
    variant: str
    image: np.ndarray = field(repr=False)
    maps: dict[str, np.ndarray] = field(repr=False)
    channel_means: dict[str, np.ndarray] = field(repr=False)
    stats: Mapping[str, BlockStats] = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    forward_seconds: float
    backend: str = "tf"

    @property
    def blocks(self) -> dict[str, np.ndarray]:
        """{block: (h, w, c) float16 output}: views of `maps`, no copy."""
        return {name: m.transpose(1, 2, 0) for name, m in self.maps.items()}

    @property
    def block_names(self) -> list[str]:
        return list(self.maps)

    @property
    def nbytes(self) -> int:
        """Bytes held by this record's arrays (what a cache entry costs)."""
        arrays = [self.image, self.probabilities, *self.maps.values(), *self.channel_means.values()]
        return int(sum(a.nbytes for a in arrays)) + len(self.maps) * 8 * (2 * HISTOGRAM_BINS + 1)

    def _block(self, block: str) -> np.ndarray:
        try:
            return self.maps[block]
        except (KeyError, TypeError):
            raise ValueError(f"unknown block {block!r}; expected one of {self.block_names}") from None

    def shape(self, block: str) -> tuple[int, int, int]:
        """(h, w, c) of a block's output."""
        c, h, w = self._block(block).shape
        return int(h), int(w), int(c)

    def top_channels(self, block: str, n: int) -> list[tuple[int, float]]:
        """The `n` most active channels of a block by mean activation, most active first.

        Returns:
            [(channel index, mean activation), ...], at most the block's channel count.
        """
        self._block(block)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        means = self.channel_means[block]
        n = min(int(n), means.size)
        # argpartition + sort of the n winners: O(c), not a full sort of up to 2048 channels.
        top = np.argpartition(-means, n - 1)[:n]
        top = top[np.lexsort((top, -means[top]))]  # ties by lower index, so results are stable
        return [(int(i), float(means[i])) for i in top]

    def channel_map(self, block: str, channel: int) -> np.ndarray:
        """One channel's (h, w) map as float32."""
        values = self._block(block)
        channels = values.shape[0]
        if not isinstance(channel, (int, np.integer)) or isinstance(channel, bool) or not 0 <= channel < channels:
            raise ValueError(f"channel must be an integer in [0, {channels}) for {block}, got {channel!r}")
        return values[int(channel)].astype(np.float32)


@dataclass(frozen=True)
class BlockDifference:
    """How far the article's wiring moves one block's output from the paper's, same image and weights.

    Attributes:
        block: Block name.
        paper_shape, article_shape: (h, w, c) of each output.
        resized: The spatial sizes differ (the article's 'same'-padded stem makes its maps larger),
            so the article's map was resized (bilinear) to the paper's grid before comparing.
        relative_l2: ‖article − paper‖ / ‖paper‖ over the whole block output (0 = identical).
        cosine: Cosine similarity of the two flattened outputs (1 = same direction).
        paper_mean, article_mean: Mean activation of each.
        wiring: The `Variant` fields that differ inside this very block (empty when the block is
            wired the same and only inherits differences from earlier blocks).
    """

    block: str
    paper_shape: tuple[int, int, int]
    article_shape: tuple[int, int, int]
    resized: bool
    relative_l2: float
    cosine: float
    paper_mean: float
    article_mean: float
    wiring: tuple[str, ...]


def compare_variants(
    paper: ImageActivations, article: ImageActivations, spec: XceptionSpec = architecture().spec
) -> list[BlockDifference]:
    """Per-block difference between two wirings' outputs for the same image and weights.

    Where the spatial sizes differ (the stem and the early blocks: e.g. 147 vs 150 at 299×299,
    and 9 vs 10 down to the middle flow at 150×150), the article's map is resized to the paper's
    grid first and `resized` says so; the channel counts always match.
    """
    wiring = {b.name: b.wiring_differences for b in spec.blocks}
    out = []
    for name in paper.maps:
        p = paper.blocks[name].astype(np.float32)  # (h, w, c)
        a = article.blocks[name].astype(np.float32)
        if p.shape[-1] != a.shape[-1]:
            raise ValueError(f"{name}: channel counts differ ({p.shape} vs {a.shape}); not the same architecture")
        resized = p.shape != a.shape
        if resized:
            import tensorflow as tf  # only the article's wiring is compared, and it is a Keras model anyway

            a = tf.image.resize(a[None], p.shape[:2], method="bilinear").numpy()[0]
        p64, a64 = p.ravel().astype(np.float64), a.ravel().astype(np.float64)
        diff_norm, p_norm, a_norm = (float(np.linalg.norm(v)) for v in (a64 - p64, p64, a64))
        dot = float(np.dot(a64, p64))
        out.append(BlockDifference(
            block=name, paper_shape=paper.shape(name), article_shape=article.shape(name), resized=resized,
            relative_l2=diff_norm / p_norm if p_norm > 0 else float("inf") if diff_norm > 0 else 0.0,
            cosine=dot / (p_norm * a_norm) if p_norm > 0 and a_norm > 0 else 0.0,
            # Every channel has h·w values, so the mean of the channel means is the block's mean.
            paper_mean=float(paper.channel_means[name].mean()), article_mean=float(article.channel_means[name].mean()),
            wiring=wiring.get(name, ()),
        ))
    return out


# ------------------------------------------------------------------------------------------ the cache


def _is_relu(layer: Any) -> bool:
    import keras

    if isinstance(layer, keras.layers.ReLU):
        return True
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Activation) and getattr(activation, "__name__", "") == "relu"


@runtime_checkable
class BlocksPass(Protocol):
    """The all-blocks pass of one model in one wiring: a served `TranslatedModel`, or a Keras
    model's (`KerasBlocksPass`). Also what Teach's extractor reads (its channel means are the
    pooled features)."""

    info: Any  # ModelInfo: variant, outputs
    input_size: int
    after_relu: dict[str, bool]

    def blocks_forward(self) -> Forward: ...

    def block_output_names(self) -> list[str]: ...


class KerasBlocksPass:
    """The all-blocks pass of a Keras model from `load_model` (either wiring), on the backend
    `xception_core.runtime.forward.build_forward` picks (TensorFlow imported then): for backend
    'tf', and for the tests' references. Built on first use."""

    def __init__(self, loaded: LoadedModel, *, backend: str | None = None, threads: int | None = None,
                 spec: XceptionSpec | None = None):
        self.loaded, self.info, self.input_size = loaded, loaded.info, loaded.input_size
        self.backend, self.threads = backend, threads
        spec = spec or loaded.info.arch.spec
        self.layers = {b.name: block_output(b.name, loaded.info.variant, spec) for b in spec.blocks}
        self.after_relu = {name: _is_relu(loaded.model.get_layer(layer)) for name, layer in self.layers.items()}
        self._runner: Forward | None = None
        self._lock = threading.Lock()

    def blocks_forward(self) -> Forward:
        from xception_core.runtime.forward import build_forward

        with self._lock:
            if self._runner is None:
                self._runner = build_forward(self.loaded.model, self.info.features_layer, backend=self.backend,
                                             threads=self.threads, block_maps=self.layers)
            return self._runner

    def block_output_names(self) -> list[str]:
        return [n for name in self.layers for n in (name, means_name(name))] + [OUTPUT]


@dataclass
class _Compiled:
    loaded: Model  # the model it was built for, kept alive while this entry is
    runner: Forward  # (1, S, S, 3) → {block, means_name(block), output}
    names: list[str]  # the outputs a record is made from
    after_relu: dict[str, bool]
    input_shape: tuple[int | None, int | None, int]
    serial: int  # names the model in default cache keys; never reused by this explorer

    @property
    def backend(self) -> str:
        return self.runner.backend


class ActivationExplorer:
    """Bounded LRU cache of `ImageActivations`, one compiled forward per (image, weights, wiring).

    Thread-safe: lookups share one lock; forwards are serialised (a second request for an image
    that is being computed waits and then hits the cache instead of running the model again).

    Args:
        max_entries: Most cached records (images × wirings × weights).
        max_bytes: Most bytes held by cached records; the least recently used go first (the newest
            is always kept).
        bins: Histogram bins per block.
        spec: The architecture (block names) of the models passed in.
        backend: 'onnx', 'tf', or None (ONNX Runtime when it can run a model, else TensorFlow,
            logged); see `xception_core.runtime.forward.build_forward`. Each record says which ran.
        threads: ONNX Runtime intra-op threads (default: every CPU this process may use).
        max_models: Most models whose compiled pass is kept (each holds a session or a traced
            function and its model); the least recently used is dropped and rebuilt if needed.

    Raises:
        BackendUnavailableError: (from `compute`, `warm_up`, `backend_for`) backend 'onnx' was
            asked for and cannot run the model.
    """

    def __init__(self, max_entries: int = 8, max_bytes: int = 256 * 2**20, *, bins: int = HISTOGRAM_BINS,
                 spec: XceptionSpec = architecture().spec, backend: str | None = None, threads: int | None = None,
                 max_models: int = 4):
        if max_entries < 1:
            raise ValueError(f"max_entries must be ≥ 1, got {max_entries}")
        if max_models < 1:
            raise ValueError(f"max_models must be ≥ 1, got {max_models}")
        if backend not in (None, "onnx", "tf"):
            raise ValueError(f"backend must be 'onnx', 'tf' or None, got {backend!r}")
        self.max_entries, self.max_bytes, self.bins, self.spec = max_entries, max_bytes, bins, spec
        self.backend = backend  # as asked; each record and `backend_for` say what runs
        self.threads = threads
        self.max_models = max_models
        self._cache: OrderedDict[str, ImageActivations] = OrderedDict()
        # Keyed by the model object itself (held by the entry, so the key cannot be reused).
        self._compiled: OrderedDict[Any, _Compiled] = OrderedDict()
        self._serials = itertools.count()
        self._differences: OrderedDict[tuple[str, str], list[BlockDifference]] = OrderedDict()
        self._lock = threading.RLock()
        self._forward_lock = threading.Lock()
        self.forward_calls = 0  # forward passes run (each computes every block)
        self.hits = 0
        self.misses = 0

    # ---------------------------------------------------------------- keys and lookups

    @staticmethod
    def key_for(x: np.ndarray, weights_key: str, variant: str) -> str:
        """Cache key: weights, wiring and a hash of the preprocessed input's bytes, shape and dtype."""
        x = np.ascontiguousarray(x)
        digest = hashlib.blake2b(x.tobytes(), digest_size=16)
        digest.update(f"{x.shape}{x.dtype}".encode())
        return f"{weights_key}|{variant}|{digest.hexdigest()}"

    def lookup(self, key: str) -> ImageActivations | None:
        """The cached record for `key` (marking it recently used and counting a hit), or None."""
        with self._lock:
            record = self._cache.get(key)
            if record is not None:
                self._cache.move_to_end(key)
                self.hits += 1
            return record

    def __len__(self) -> int:
        return len(self._cache)

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(r.nbytes for r in self._cache.values())

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self._differences.clear()

    # ---------------------------------------------------------------- the forward pass

    def _compile(self, loaded: Model) -> _Compiled:
        key = getattr(loaded, "model", loaded)  # a Keras model's pass is kept per model, as its translation's
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
            source = self.blocks_pass(loaded)
            size = source.input_size
            compiled = _Compiled(loaded, source.blocks_forward(), source.block_output_names(),
                                 {b.name: source.after_relu[b.name] for b in self.spec.blocks}, (size, size, 3),
                                 next(self._serials))
            return self._keep(key, compiled)

    def blocks_pass(self, loaded: Model) -> BlocksPass:
        """What runs the pass: a `TranslatedModel` is one already (its cached graph, no Keras); a
        Keras model from `load_model` gets a `KerasBlocksPass` on this explorer's backend."""
        if isinstance(loaded, BlocksPass):
            return loaded
        return KerasBlocksPass(loaded, backend=self.backend, threads=self.threads, spec=self.spec)

    def _keep(self, model: Any, compiled: _Compiled) -> _Compiled:
        """Keeps `compiled` as the newest entry (caller holds the lock), dropping the oldest past `max_models`."""
        self._compiled[model] = compiled
        while len(self._compiled) > self.max_models:
            self._compiled.popitem(last=False)
        return compiled

    def warm_up(self, loaded: Model) -> None:
        """Builds the pass for `loaded` (an ONNX Runtime session or a traced function) and runs
        it once on a blank image, so a user's first image does not pay for it. Not counted in
        `forward_calls` and not cached: it is no user's image."""
        compiled = self._compile(loaded)
        shape = [d if d is not None else self.spec.default_input_size for d in compiled.input_shape]
        with self._forward_lock:
            compiled.runner.run(np.zeros([1, *shape], np.float32), compiled.names)

    def backend_for(self, loaded: Model) -> str:
        """'onnx' or 'tf': what runs the pass for this model."""
        return self._compile(loaded).backend

    def compute(
        self, loaded: Model, x: np.ndarray, *, weights_key: str | None = None
    ) -> tuple[ImageActivations, bool]:
        """Every block's output for one preprocessed image, from the cache or ONE forward pass.

        Args:
            loaded: A model from `xception_core.model.load_model` (or `rewire`), either wiring.
            x: (S, S, 3) float32 in [-1, 1], S the model's input size.
            weights_key: Names the weights in the cache key (e.g. the store's key); default: the
                model's name and a number this explorer gave it, so two different models never
                share entries.

        Returns:
            (record, cache_hit).
        """
        x = np.asarray(x, dtype=np.float32)
        model = getattr(loaded, "model", loaded)
        compiled = self._compile(loaded)
        expected = compiled.input_shape
        if x.ndim != 3 or any(e is not None and e != d for e, d in zip(expected, x.shape)):
            raise ValueError(f"x must be one preprocessed image of shape {expected}, got {x.shape}")
        weights_key = weights_key or f"{getattr(model, 'name', 'model')}#{compiled.serial}"
        key = self.key_for(x, weights_key, loaded.info.variant)
        if (record := self.lookup(key)) is not None:
            return record, True

        def forward() -> ImageActivations:
            start = time.perf_counter()
            raw = compiled.runner.run(x[None], compiled.names)
            return self._record(key, weights_key, loaded, compiled, x, raw, time.perf_counter() - start)

        # One pass at a time; the record is cached before the lock is released, so a request for
        # the same image that waited here hits the cache instead of running the model again.
        with self._forward_lock:
            return self.cached(key, forward)

    def cached(self, key: str, compute: Callable[[], ImageActivations]) -> tuple[ImageActivations, bool]:
        """The record cached under `key` (a hit), else `compute()`'s, cached under `key` (a miss,
        counted as one forward pass). The cache's one way in: `compute` above passes this
        process's pass; a caller whose records come from elsewhere (a model replica) passes its
        own. Not serialised: a caller that must not compute one record twice holds its own lock.

        Returns:
            (record, cache_hit).
        """
        if (record := self.lookup(key)) is not None:
            return record, True
        record = compute()
        with self._lock:
            self.forward_calls += 1
            self.misses += 1
            self._cache[key] = record
            self._evict()
        return record, False

    def _record(self, key: str, weights_key: str, loaded: Model, compiled: _Compiled, x: np.ndarray,
                raw: dict[str, np.ndarray], seconds: float) -> ImageActivations:
        names = [b.name for b in self.spec.blocks]
        maps = {name: raw[name][0] for name in names}
        means = {name: raw[means_name(name)][0].astype(np.float32) for name in names}
        out = raw[OUTPUT][0].astype(np.float32)
        probabilities = softmax(out) if loaded.info.outputs == "logits" else out
        image = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
        stats = _LazyStats(maps, compiled.after_relu, self.bins)
        return ImageActivations(key, weights_key, loaded.info.variant, image, maps, means, stats,
                                np.asarray(probabilities, np.float32), seconds, compiled.backend)

    def _evict(self) -> None:
        total = sum(r.nbytes for r in self._cache.values())
        while len(self._cache) > 1 and (len(self._cache) > self.max_entries or total > self.max_bytes):
            _, old = self._cache.popitem(last=False)
            total -= old.nbytes
            for pair in [p for p in self._differences if old.key in p]:
                del self._differences[pair]

    # ---------------------------------------------------------------- paper vs article

    def compare(self, paper: ImageActivations, article: ImageActivations) -> list[BlockDifference]:
        """`compare_variants`, memoised per pair of records."""
        pair = (paper.key, article.key)
        with self._lock:
            if pair in self._differences:
                self._differences.move_to_end(pair)
                return self._differences[pair]
        result = compare_variants(paper, article, self.spec)
        with self._lock:
            self._differences[pair] = result
            while len(self._differences) > self.max_entries:
                self._differences.popitem(last=False)
        return result
