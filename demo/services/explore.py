"""The Explore tab's work without Gradio: model descriptions, the activation cache, feature-map
pictures and the article-vs-paper comparison, on a shared `Store`."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from demo.services import UserError
from demo.services.models import served_model
from demo.services.payloads import payload_to_image
from demo.store import ActivationSource, ServedModel, Store
from xception_core.arch.registry import ARCHITECTURES, DEFAULT_ARCHITECTURE, architecture
from xception_core.io.labels import top_k
from xception_core.io.visualize import map_tile, map_tiles
from xception_core.runtime.activations import BlockDifference, ImageActivations
from xception_core.runtime.introspection import ModelDescription, describe_graph

logger = logging.getLogger(__name__)

LOADED, REFERENCE = "loaded", "reference"
WHICH = (LOADED, REFERENCE)
# `/architecture` also describes the other registered networks (Inception V3), from their graphs
# at their default size: structure and cost, no weights, no TensorFlow.
OTHER_ARCHITECTURES = tuple(name for name in ARCHITECTURES if name != DEFAULT_ARCHITECTURE)
VARIANTS = ("paper", "article")
BLOCK_NAMES = architecture().block_names
THUMB = 128  # gallery tile side (px): big enough to read, cheap to render and send
FULL_MIN = 384  # smallest side of the full-size channel view
N_MAX = 64  # most tiles one view renders
OVERLAY_ALPHA = 0.55


@dataclass(frozen=True)
class Comparison:
    """Both wirings on one image: per-block differences and each wiring's top 5."""

    paper: ImageActivations
    article: ImageActivations
    differences: list[BlockDifference]
    paper_top: list[tuple[str, float]]
    article_top: list[tuple[str, float]]


def cell_side(grid: int, at_least: int) -> int:
    """The smallest side of at least `at_least` pixels that is a whole number of `grid` cells."""
    return -(-at_least // grid) * grid


def check_block(block: Any) -> str:
    """A block name from a client, checked against the spec."""
    name = block.strip() if isinstance(block, str) else ""
    if name not in BLOCK_NAMES:
        raise UserError(f"Unknown block {str(block)[:40]!r}; expected one of {', '.join(BLOCK_NAMES)}.")
    return name


def check_int(value: Any, label: str, low: int, high: int) -> int:
    """A whole number from a client in [low, high] (fractions and booleans are refused)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer() or not low <= number <= high:
        raise UserError(f"{label} must be a whole number from {low:,} to {high:,}, got {str(value)[:40]!r}.")
    return int(number)


def check_choice(value: Any, label: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"{label} must be one of {', '.join(choices)}, got {str(value)[:40]!r}.")
    return value


class ExploreService:
    """What the Explore tab's handlers share: descriptions built once per model, and the
    activation cache (one forward pass per image, weights and wiring)."""

    def __init__(self, store: Store, explorer: ActivationSource | None = None):
        self.store = store
        self.explorer = explorer or store.activation_explorer()
        self._lock = threading.Lock()
        self._descriptions: dict[Any, ModelDescription] = {}
        self._warming = False

    # ---------------------------------------------------------------- architecture

    def model(self) -> ServedModel:
        """The app's default weights, failures as `UserError`."""
        return served_model(self.store)

    def description(self, which: str = LOADED, variant: str = "paper") -> ModelDescription:
        """`describe()` of the loaded model (either wiring), or of the reference 299×299 ImageNet
        Xception whatever weights are loaded: the served model's own tables (made when its weights
        were translated, so no TensorFlow here)."""
        check_choice(which, "which", WHICH)
        check_choice(variant, "variant", VARIANTS)
        served = self.model()
        key: Any = REFERENCE if which == REFERENCE else (served.key, variant)
        with self._lock:
            if key not in self._descriptions:
                self._descriptions[key] = served.description(REFERENCE if which == REFERENCE else variant)
            return self._descriptions[key]

    def architecture(self, which: str = LOADED) -> dict[str, Any]:
        """The `/architecture` answer: totals and, per block, shape, parameters and cost; `which`
        is 'loaded', 'reference' or another registered architecture's key ('inception_v3': its
        reference at its default size, from its layer graph, whatever weights are loaded)."""
        check_choice(which, "which", WHICH + OTHER_ARCHITECTURES)
        if which in OTHER_ARCHITECTURES:
            with self._lock:
                if which not in self._descriptions:
                    self._descriptions[which] = describe_graph(architecture(which))
                description = self._descriptions[which]
        else:
            description = self.description(which)
        table = description.to_dict()
        fields = ("name", "flow", "kind", "output_shape", "params", "trainable_params", "non_trainable_params", "macs")
        blocks = [{name: block[name] for name in fields} for block in table["blocks"]]
        weights = None if which == REFERENCE or which in OTHER_ARCHITECTURES else self.store.default_key
        return {"weights": weights, "model": description.name, "variant": description.variant,
                "input_shape": table["input_shape"], "total_params": description.total_params,
                "trainable_params": description.trainable_params,
                "non_trainable_params": description.non_trainable_params,
                "total_macs": description.total_macs, "blocks": blocks}

    def warm_up_in_background(self) -> None:
        """Once the weights are loaded: trace and run the all-blocks forward once in a daemon
        thread, so the first image shown does not pay for tracing."""
        with self._lock:
            if self._warming:
                return
            self._warming = True

        def run() -> None:
            try:
                served = self.model()
                self.explorer.warm_up(served.explorable(served.info.variant))
            except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first user time
                logger.warning("activation warm-up failed: %s", exc)

        threading.Thread(target=run, name="explore-warm-up", daemon=True).start()

    # ---------------------------------------------------------------- activations

    def activations(self, payload: Any, variant: str = "paper") -> tuple[ImageActivations, bool]:
        """Decode, preprocess and run (or hit the cache). Returns (record, cache_hit)."""
        check_choice(variant, "variant", VARIANTS)
        served = self.model()
        image = payload_to_image(payload, self.store.settings.upload_dir)
        x = served.preprocess(image)
        # Either wiring from the translation: no TensorFlow.
        return self.explorer.compute(served.explorable(variant), x, weights_key=served.key)

    def record(self, key: str | None, payload: Any, variant: str = "paper") -> tuple[ImageActivations, bool]:
        """The session's cached record, else recomputed from the image (evicted, or a new server)."""
        if isinstance(key, str) and (record := self.explorer.lookup(key)) is not None and record.variant == variant:
            return record, True
        if payload is None:
            raise UserError("No image yet: pick an example or upload a photo above.")
        return self.activations(payload, variant)

    def activations_json(self, payload: Any, block: Any) -> dict[str, Any]:
        """The `/activations` answer: the block's shape and per-channel mean activations."""
        block = check_block(block)
        start = time.perf_counter()
        record, hit = self.activations(payload)
        stats = record.stats[block]
        return {
            "block": block, "shape": list(record.shape(block)),
            "channel_means": [round(float(v), 6) for v in record.channel_means[block]],
            "mean": round(stats.mean, 6), "zero_fraction": round(stats.zero_fraction, 6),
            "after_relu": stats.after_relu, "cache_hit": hit, "weights": record.weights_key,
            "variant": record.variant, "input_size": int(record.image.shape[0]),
            "forward_ms": None if hit else round(record.forward_seconds * 1000, 1),
            "server_ms": round((time.perf_counter() - start) * 1000, 1),
        }

    def activation_maps(self, payload: Any, block: Any, top_n: Any) -> tuple[dict[str, Any], list[tuple[Image.Image, str]]]:
        """The `/activations` answer with pictures: `activations_json`, plus the `top_n` most active
        channels as maps on their true grid and one shared colour scale (its range in the JSON)."""
        answer = self.activations_json(payload, block)
        record, _ = self.activations(payload)  # a cache hit: the line above computed it
        value_range = self.shared_range(record, answer["block"], top_n)
        tiles = self.tiles(record, answer["block"], top_n, False, value_range)
        answer["top_channels"] = [{"channel": c, "mean": round(float(m), 6)} for _, c, m in tiles]
        answer["map_range"] = [round(value_range[0], 6), round(value_range[1], 6)]
        return answer, [(tile, f"#{c} · mean {m:.3g}") for tile, c, m in tiles]

    # ---------------------------------------------------------------- pictures

    @staticmethod
    def _base(record: ImageActivations, side: int) -> Image.Image:
        """The input as the model saw it, at `side` pixels."""
        return Image.fromarray(record.image).resize((side, side), Image.Resampling.BILINEAR)

    def shared_range(self, record: ImageActivations, block: Any, n: Any) -> tuple[float, float]:
        """(low, high) over the block's `n` most active channels: one colour scale for all their tiles
        (low is 0 after a ReLU; a sum or BatchNorm output keeps its negative values)."""
        block = check_block(block)
        n = check_int(n, "Number of channels", 1, N_MAX)
        maps = [record.channel_map(block, c) for c, _ in record.top_channels(block, n)]
        low = min(float(m.min()) for m in maps)
        high = max(float(m.max()) for m in maps)
        return (0.0 if record.stats[block].after_relu else low), high

    def tiles(self, record: ImageActivations, block: Any, n: Any, with_image: bool,
              value_range: tuple[float, float] | None = None) -> list[tuple[Image.Image, int, float]]:
        """The `n` most active channels of a block as (tile, channel, mean), `n` clamped to N_MAX.

        Tiles show the map's true grid (each cell a flat square, a whole number of pixels wide, so
        at least THUMB pixels a side); `value_range` puts every tile on one colour scale."""
        block = check_block(block)
        n = check_int(n, "Number of channels", 1, N_MAX)
        side = cell_side(record.shape(block)[0], THUMB)
        top = record.top_channels(block, n)
        if not with_image and value_range is not None:  # one pass over the stack (the API's maps)
            maps = np.stack([record.channel_map(block, c) for c, _ in top])
            return [(tile, c, m) for tile, (c, m) in zip(map_tiles(maps, side, value_range, grid=True), top)]
        base = self._base(record, side) if with_image else None
        return [(map_tile(record.channel_map(block, c), side, base, OVERLAY_ALPHA, nearest=True,
                          value_range=value_range, grid=True), c, m)
                for c, m in top]

    def full(self, record: ImageActivations, block: Any, channel: Any, with_image: bool,
             value_range: tuple[float, float] | None = None) -> Image.Image:
        """One channel at full size (at least FULL_MIN pixels a side), on its true grid."""
        block = check_block(block)
        channel = check_int(channel, "Channel", 0, record.shape(block)[-1] - 1)
        side = cell_side(record.shape(block)[0], max(FULL_MIN, record.image.shape[0]))
        return map_tile(record.channel_map(block, channel), side,
                        self._base(record, side) if with_image else None, OVERLAY_ALPHA, nearest=True,
                        value_range=value_range, grid=True)

    # ---------------------------------------------------------------- paper vs article

    def compare(self, key: str | None, payload: Any) -> Comparison:
        """Both wirings, same weights, same image."""
        paper, _ = self.record(key, payload, "paper")
        article, _ = self.record(None, payload, "article")
        labels = self.model().labels
        k = min(5, len(labels))
        return Comparison(paper, article, self.explorer.compare(paper, article),
                          top_k(paper.probabilities, labels, k), top_k(article.probabilities, labels, k))
