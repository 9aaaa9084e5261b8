"""What a channel looks for: the photo patches that make it fire most.

One forward pass per photo (`xception_core.runtime.operation.LayerSource`) gives every block's
output; `summarize` keeps, for each block and channel, only its largest value in that photo and
where it was (a few KB a photo). Any block and channel over any set of photos is then a lookup:
`top_patches` ranks the photos by that largest value and cuts each one's patch at the receptive
field of the position where it was reached (`xception_core.arch.receptive`). `PatchSearch`
keeps the summaries in a bounded cache, so a photo is run once whatever set it is part of.

Pure NumPy (no TensorFlow).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from xception_core.arch.graph import block_output
from xception_core.arch.receptive import ReceptiveField, receptive_field
from xception_core.arch.registry import architecture
from xception_core.arch.spec import XceptionSpec
from xception_core.runtime.operation import LayerSource, image_key, to_image

__all__ = ["ChannelPatch", "ChannelPatches", "KnownPhoto", "PatchSearch", "PhotoSummary", "summarize", "top_patches"]

MAX_PHOTOS = 64  # most photos one search ranks
BATCH = 4  # photos per forward pass: larger batches gain little on 2 cores and hold more maps at once


@dataclass(frozen=True)
class KnownPhoto:
    """A photo whose key is known from an earlier search: read (`load`, (S, S, 3) float32) only
    when its summary is no longer cached."""

    key: str
    load: Callable[[], np.ndarray]


Photo = np.ndarray | KnownPhoto


@dataclass(frozen=True, eq=False)
class PhotoSummary:
    """One photo through one model (weights + wiring): each block channel's peak.

    Attributes:
        photo: `image_key` of the preprocessed input.
        weights_key, variant: What ran.
        image: (S, S, 3) uint8: the input as the model saw it.
        peaks: {block: (C,) float32 largest value of each channel of the block's output}.
        where: {block: (C,) int32 flat position (row·width + col) of that value}.
        grids: {block: (height, width) of the block's output}.
    """

    photo: str
    weights_key: str
    variant: str
    image: np.ndarray = field(repr=False)
    peaks: dict[str, np.ndarray] = field(repr=False)
    where: dict[str, np.ndarray] = field(repr=False)
    grids: dict[str, tuple[int, int]]

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes + sum(a.nbytes for a in (*self.peaks.values(), *self.where.values())))


def summarize(photo: str, weights_key: str, variant: str, image: np.ndarray,
              outputs: dict[str, np.ndarray]) -> PhotoSummary:
    """A `PhotoSummary` from one photo's block outputs {block: (h, w, c)}.

    Ties go to the first position in row-major order (NumPy's argmax)."""
    peaks, where, grids = {}, {}, {}
    for block, values in outputs.items():
        h, w, c = values.shape
        flat = values.reshape(h * w, c)
        at = np.argmax(flat, axis=0)
        peaks[block] = flat[at, np.arange(c)].astype(np.float32)
        where[block] = at.astype(np.int32)
        grids[block] = (int(h), int(w))
    return PhotoSummary(photo, weights_key, variant, image, peaks, where, grids)


@dataclass(frozen=True, eq=False)
class ChannelPatch:
    """One photo's strongest response of a channel.

    Attributes:
        photo: Index of the photo in the list searched.
        label: Its name, as the caller gave it.
        value: The channel's largest value in that photo.
        row, col: Where, on the block's output grid.
        receptive: The field of that position on the model's input.
        patch: (h, w, 3) uint8: the input cut at that field.
    """

    photo: int
    label: str
    value: float
    row: int
    col: int
    receptive: ReceptiveField
    patch: np.ndarray = field(repr=False)


@dataclass(frozen=True, eq=False)
class ChannelPatches:
    """A channel's strongest patches over a set of photos.

    Attributes:
        block, layer: The block and its output layer.
        channel: The channel.
        variant: The wiring.
        patches: At most one per photo, strongest first.
        peaks: (number of photos,) float32: the channel's largest value in each photo searched,
            in the order given.
        seconds: Time the search took, passes for photos not seen before included.
        passes: Photos that needed a forward pass (the others were cached).
    """

    block: str
    layer: str
    channel: int
    variant: str
    patches: tuple[ChannelPatch, ...]
    peaks: np.ndarray = field(repr=False)
    seconds: float = 0.0
    passes: int = 0


def top_patches(summaries: Sequence[PhotoSummary], labels: Sequence[str], block: str, channel: int, k: int = 8,
                spec: XceptionSpec = architecture().spec) -> ChannelPatches:
    """The `k` photos in which `channel` of `block`'s output peaks highest, each cut at the field of
    its peak.

    Raises:
        ValueError: No photos, mixed wirings, or a block or channel out of range.
    """
    if not summaries:
        raise ValueError("no photos to search")
    if len(labels) != len(summaries):
        raise ValueError(f"{len(labels)} labels for {len(summaries)} photos")
    variants = {s.variant for s in summaries}
    if len(variants) != 1:
        raise ValueError(f"photos summarised in different wirings: {sorted(variants)}")
    (variant,) = variants
    spec.block(block)
    channels = summaries[0].peaks[block].size
    if not isinstance(channel, (int, np.integer)) or isinstance(channel, bool) or not 0 <= channel < channels:
        raise ValueError(f"channel must be an integer in [0, {channels}) for {block}, got {str(channel)[:20]!r}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    layer = block_output(block, variant, spec)
    peaks = np.array([s.peaks[block][channel] for s in summaries], np.float32)
    order = np.argsort(-peaks, kind="stable")[: int(k)]
    out = []
    for i in order:
        s = summaries[int(i)]
        h, w = s.grids[block]
        row, col = divmod(int(s.where[block][channel]), w)
        rf = receptive_field(layer, row, col, s.image.shape[0], variant, spec)
        left, top, right, bottom = rf.box
        out.append(ChannelPatch(int(i), str(labels[int(i)]), float(peaks[i]), row, col, rf,
                                np.ascontiguousarray(s.image[top:bottom, left:right])))
    return ChannelPatches(block, layer, int(channel), variant, tuple(out), peaks)


class PatchSearch:
    """Bounded LRU of `PhotoSummary`, one pass per (photo, weights, wiring).

    Args:
        max_entries: Most summaries kept.
        max_bytes: Most bytes they hold (each is mostly its uint8 photo).
    """

    def __init__(self, max_entries: int = 2 * MAX_PHOTOS, max_bytes: int = 48 * 2**20,
                 spec: XceptionSpec = architecture().spec):
        if max_entries < MAX_PHOTOS:
            raise ValueError(f"max_entries must hold one search ({MAX_PHOTOS} photos), got {max_entries}")
        self.max_entries, self.max_bytes, self.spec = max_entries, max_bytes, spec
        self._cache: OrderedDict[tuple[str, str, str], PhotoSummary] = OrderedDict()
        self._lock = threading.Lock()
        self._forward_lock = threading.Lock()
        self.forward_photos = 0

    def __len__(self) -> int:
        return len(self._cache)

    def summaries(self, source: LayerSource, xs: Sequence[Photo], *, weights_key: str,
                  variant: str) -> tuple[list[PhotoSummary], int]:
        """Each photo's summary, running `source` (in batches) only on photos not cached.

        Args:
            xs: Preprocessed photos, each (S, S, 3) float32 or a `KnownPhoto`; at most `MAX_PHOTOS`.

        Returns:
            (summaries in the order of `xs`, how many photos needed a pass).
        """
        if not 1 <= len(xs) <= MAX_PHOTOS:
            raise ValueError(f"search 1 to {MAX_PHOTOS} photos, got {len(xs)}")
        blocks = {b.name: block_output(b.name, variant, self.spec) for b in self.spec.blocks}
        with self._forward_lock:
            keys: list[str] = []
            found: dict[str, PhotoSummary] = {}
            todo: dict[str, np.ndarray] = {}
            for item in xs:
                x = None if isinstance(item, KnownPhoto) else np.asarray(item, np.float32)
                key = item.key if x is None else image_key(x)
                if key not in found and (summary := self._get((key, weights_key, variant))) is not None:
                    found[key] = summary
                elif key not in found and key not in todo:
                    x = item.load() if x is None else x
                    key = image_key(x)  # the photo as it is now
                    todo.setdefault(key, x)
                keys.append(key)
            missing = [k for k in todo if k not in found]
            for start in range(0, len(missing), BATCH):
                chunk = missing[start:start + BATCH]
                out = source.run(np.stack([todo[k] for k in chunk]), list(blocks.values()))
                for i, k in enumerate(chunk):
                    summary = summarize(k, weights_key, variant, to_image(todo[k]),
                                        {b: out[layer][i] for b, layer in blocks.items()})
                    found[k] = summary
                    self._put((k, weights_key, variant), summary)
                self.forward_photos += len(chunk)
        return [found[k] for k in keys], len(missing)

    def search(self, source: LayerSource, xs: Sequence[np.ndarray], labels: Sequence[str], *, weights_key: str,
               variant: str, block: str, channel: int, k: int = 8) -> ChannelPatches:
        """`top_patches` over `xs`, passes for unseen photos included."""
        start = time.perf_counter()
        summaries, passes = self.summaries(source, xs, weights_key=weights_key, variant=variant)
        found = top_patches(summaries, labels, block, channel, k, self.spec)
        return ChannelPatches(found.block, found.layer, found.channel, found.variant, found.patches, found.peaks,
                              time.perf_counter() - start, passes)

    def _get(self, key: tuple[str, str, str]) -> PhotoSummary | None:
        with self._lock:
            summary = self._cache.get(key)
            if summary is not None:
                self._cache.move_to_end(key)
            return summary

    def _put(self, key: tuple[str, str, str], summary: PhotoSummary) -> None:
        with self._lock:
            self._cache[key] = summary
            self._cache.move_to_end(key)
            total = sum(s.nbytes for s in self._cache.values())
            while len(self._cache) > 1 and (len(self._cache) > self.max_entries or total > self.max_bytes):
                _, old = self._cache.popitem(last=False)
                total -= old.nbytes
