"""Teach's features: each photo's pooled block features, extracted once on the app's fast backend
(one extractor per set of weights, shared by every session) and kept in the visitor's session,
keyed by weights and image content, so a re-added photo is never extracted twice."""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from demo.services.teach.records import Photo, Progress, TeachLimits
from demo.store import ServedModel
from xception_core.inputs.images import display_copy
from xception_core.runtime.extractor import TRANSFER_BLOCKS, FeatureExtractor
from xception_core.settings import Settings

CacheKey = tuple[str, str]  # (weights key, hash of the preprocessed image)


class FeatureCache:
    """One session's pooled features by (weights, image), bounded by what the limits let a session
    use at once (every class full)."""

    def __init__(self, limits: TeachLimits):
        self.capacity = limits.max_classes * limits.max_photos_per_class
        self._features: dict[CacheKey, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, key: CacheKey) -> bool:
        return key in self._features

    def __getitem__(self, key: CacheKey) -> dict[str, np.ndarray]:
        return self._features[key]

    def __setitem__(self, key: CacheKey, pooled: dict[str, np.ndarray]) -> None:
        self._features[key] = pooled

    def values(self) -> list[dict[str, np.ndarray]]:
        """Every cached photo's pooled features (block → (C,))."""
        return list(self._features.values())

    def clear(self) -> None:
        self._features.clear()

    def trim(self, in_use: set[str]) -> None:
        """Back within capacity: features of photos not in a class (`in_use`: image hashes) go
        first, oldest first; a re-added photo is then extracted again."""
        if len(self._features) <= self.capacity:
            return
        unused = [k for k in self._features if k[1] not in in_use]
        for key in unused[: len(self._features) - self.capacity]:
            del self._features[key]


class FeatureExtraction:
    """Turns decoded photos into `Photo`s: preprocessed, hashed, extracted in small batches (cache
    misses only) and thumbnailed.

    Args:
        limits: Photos per extraction pass and the thumbnail size.
        settings: The app's backend and ONNX Runtime threads.
    """

    def __init__(self, limits: TeachLimits, settings: Settings):
        self.limits, self.settings = limits, settings
        self._extractors: dict[str, FeatureExtractor] = {}
        self._lock = threading.Lock()

    def extractor(self, served: ServedModel) -> FeatureExtractor:
        """The pooled-feature extractor for `served`'s weights, built once and shared."""
        with self._lock:
            extractor = self._extractors.get(served.key)
            if extractor is None:
                # Built from the served weights in this process: the cached translation's all-blocks
                # pass (no TensorFlow), or the Keras model (backend 'tf'; a remote store's local copy).
                extractor = FeatureExtractor(served.explorable(served.info.variant), TRANSFER_BLOCKS,
                                             backend=self.settings.backend,
                                             threads=self.settings.onnx_threads)
                self._extractors[served.key] = extractor
            return extractor

    def photos(self, cache: FeatureCache, served: ServedModel, images: list[tuple[str, Image.Image, Path | None]],
               progress: Progress | None) -> tuple[list[Photo], set[str]]:
        """[(name, image, source file)] → (their `Photo`s, the keys of those whose features were
        already cached)."""
        total = len(images)
        prepared = []
        for name, image, source in images:
            x = served.preprocess(image)
            key = (served.key, hashlib.sha256(x.tobytes()).hexdigest()[:32])
            prepared.append((name, image, x, key, source))
        cached = {p[3][1] for p in prepared if p[3] in cache}
        missing = [i for i, p in enumerate(prepared) if p[3] not in cache]
        hits = total - len(missing)
        if progress:
            progress(hits, total)
        extractor = self.extractor(served) if missing else None
        for start in range(0, len(missing), self.limits.batch):
            chunk = missing[start : start + self.limits.batch]
            out = extractor(np.stack([prepared[i][2] for i in chunk]))
            for row, i in enumerate(chunk):
                cache[prepared[i][3]] = {block: v[row].copy() for block, v in out.pooled.items()}
            if progress:
                progress(hits + start + len(chunk), total)
        photos = [Photo(name, key[1], self.thumbnail(image), cache[key], source)
                  for name, image, _, key, source in prepared]
        return photos, cached

    def thumbnail(self, image: Image.Image) -> bytes:
        """A JPEG of at most `thumbnail_side` pixels a side (the map and the overview show it)."""
        out = io.BytesIO()
        display_copy(image, self.limits.thumbnail_side).save(out, format="JPEG", quality=80)
        return out.getvalue()
