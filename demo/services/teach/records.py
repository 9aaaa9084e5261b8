"""What Teach keeps and hands back: its budgets, a visitor's photos, what an add did, a trained
head with every block's lesson, and a new photo through that head."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from xception_core.runtime.transfer import CrossValidation, FeatureMap, SoftmaxHead

Progress = Callable[[int, int], None]
"""Called with (photos done, photos in all) while features are extracted."""


@dataclass(frozen=True)
class TeachLimits:
    """Budgets of one session and of the service.

    Attributes:
        max_classes: Classes a visitor may name.
        max_photos_per_class: Photos a class may hold.
        min_photos_per_class: Photos a class needs before training.
        max_name: Longest class name (characters).
        max_sessions: Sessions held at once.
        max_bytes: Memory all sessions may hold together (features, thumbnails, trained heads,
            as `TeachService.memory` counts it). A new session is admitted while the others and one
            full session fit both limits; otherwise the least recently used session without a
            trained classifier makes room, and when every session is trained, the newcomer is
            refused in words: a trained visitor is never pushed out by newcomers.
        idle_s: A session unused this long is dropped (trained or not).
        thumbnail_side: Longest side of the thumbnails kept per photo (map, overview).
        batch: Photos per extraction pass (progress granularity; concurrent classifies get the
            CPU between passes).
        max_files_per_add: Files accepted in one add (the rest are refused, not silently dropped).
    """

    max_classes: int = 10
    max_photos_per_class: int = 30
    min_photos_per_class: int = 2
    max_name: int = 40
    max_sessions: int = 64
    max_bytes: int = 512 * 2**20
    idle_s: float = 1800.0
    thumbnail_side: int = 96
    batch: int = 4
    max_files_per_add: int = 30


@dataclass(frozen=True)
class Photo:
    """One photo of a class: a thumbnail, its pooled features for every offered block, and the
    upload's file in Gradio's upload folder (None for a photo the server read itself or one sent as
    data: the Knockouts lesion study reads the file again while it lasts)."""

    name: str
    key: str
    thumbnail: bytes  # JPEG
    pooled: dict[str, np.ndarray]  # block → (C,)
    source: Path | None = None

    @property
    def data_url(self) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(self.thumbnail).decode("ascii")


@dataclass(frozen=True)
class NamedPhoto:
    """A decoded photo with the name to show for it: one the server read itself (a starter-set
    or held-out photo), never an upload."""

    image: Image.Image
    name: str


@dataclass(frozen=True)
class AddReport:
    """What an add did.

    Attributes:
        added: Photos added.
        cached: Those among them whose features were already extracted (reused, not recomputed).
        refused: The photos not added, each with why (undecodable, beyond the limits).
        seconds: Time of the add.
        duplicates: The photos not added because they are already in a class (same content),
            each with the class: a photo is in one class, once.
        class_size: Photos in the class after the add (0 for the starter set: several classes).
    """

    added: int
    cached: int
    refused: tuple[str, ...]
    seconds: float
    duplicates: tuple[str, ...] = ()
    class_size: int = 0


@dataclass(frozen=True)
class BlockResult:
    """Cross-validated accuracy and the 2-D map of the photos on one block's features."""

    block: str
    dims: int
    cv: CrossValidation
    map: FeatureMap


@dataclass(frozen=True)
class Trained:
    """A trained session: the head (on the exit-flow features) and every block's lesson.

    Attributes:
        class_names: K names, in the head's order.
        head: Softmax head on the pooled exit-flow (block14) features.
        labels: (N,) class index of each photo, in `photos` order.
        photos: The photos trained on.
        blocks: Block name → `BlockResult`, shallow to deep.
        fit_seconds: Time of the final head's fit.
        cv_seconds: Time of every block's cross-validation.
        weights_key: The weights whose features were used.
        weights_title: Their description.
        best_block: The block whose head scored best under cross-validation (`training.best_block`):
            what the tab shows first.
    """

    class_names: tuple[str, ...]
    head: SoftmaxHead
    labels: np.ndarray
    photos: tuple[Photo, ...]
    blocks: dict[str, BlockResult]
    fit_seconds: float
    cv_seconds: float
    weights_key: str
    weights_title: str
    best_block: str

    @property
    def chance(self) -> float:
        """Accuracy of always answering the largest class."""
        return float(np.bincount(self.labels).max() / len(self.labels))


@dataclass(frozen=True)
class TaughtPrediction:
    """A new photo through the taught head.

    Attributes:
        top: (class name, probability) pairs, most probable first.
        image: Display-size copy of the photo.
        cam: The photo with the top class's activation map over it.
    """

    top: list[tuple[str, float]]
    image: Image.Image
    cam: Image.Image
