"""Classify and explain: an image payload in, top-k, timing and Grad-CAM out. No Gradio here."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from demo.errors import echo
from demo.services import UserError
from demo.services.models import MODEL_WAIT_S, served_model
from demo.services.payloads import payload_to_image
from demo.services.sessions import SessionRegistry
from demo.store import Prediction, ServedModel, Store
from xception_core.inputs.images import display_copy
from xception_core.io.visualize import overlay

CAM_ALPHA = 0.5
RESULT_TTL_S = 15 * 60  # how long a classification is kept for "explain another class" (and its key in the page)
RESULTS_KEPT = 64  # classifications kept at most (~0.3 MB each), the least recently used go first


@dataclass(frozen=True)
class Classified:
    """One classification, and what a later Grad-CAM of another class needs. It is kept in the
    visitor's session, so the display copy is kept JPEG-encoded (~0.1 MB, not ~2.4 MB of pixels).

    Attributes:
        served: The model that ran.
        display_jpeg: The display-size copy of the visitor's image, JPEG-encoded.
        prediction: Top-k, probabilities and the exit-flow features.
        seconds: Time spent in the network.
    """

    served: ServedModel
    display_jpeg: bytes
    prediction: Prediction
    seconds: float

    @classmethod
    def of(cls, served: ServedModel, image: Image.Image, prediction: Prediction, seconds: float) -> "Classified":
        buffer = io.BytesIO()
        display_copy(image).save(buffer, "JPEG", quality=90)
        return cls(served, buffer.getvalue(), prediction, seconds)

    @property
    def image(self) -> Image.Image:
        """The display copy (RGB, at most `DISPLAY_SIDE` a side)."""
        with Image.open(io.BytesIO(self.display_jpeg)) as image:
            return image.convert("RGB")

    @property
    def top_labels(self) -> list[str]:
        return [label for label, _ in self.prediction.top]


class ClassifyService:
    """The Classify tab's and `/classify`'s work, on a shared `Store`.

    Args:
        store: Where the served models come from.
        wait_s: How long to wait for weights still loading.
        results_kept: Classifications kept for a later Grad-CAM of another class.
        clock: Seconds, monotonic: how long a kept classification has been unused.
    """

    def __init__(self, store: Store, wait_s: float = MODEL_WAIT_S, results_kept: int = RESULTS_KEPT,
                 clock: Callable[[], float] = time.monotonic):
        self.store, self.wait_s = store, wait_s
        # Results for a later Grad-CAM of another class live here, bounded in number and age
        # whatever the number of sessions; a session holds only a key (`remember` / `recall`).
        self._results: SessionRegistry[Classified] = SessionRegistry(results_kept, RESULT_TTL_S, clock=clock)

    def model(self, key: Any = None) -> ServedModel:
        """The store's model for `key` (default weights when None), failures as `UserError`."""
        return served_model(self.store, key, self.wait_s)

    def _run(self, payload: Any, key: str | None, k: int) -> tuple[ServedModel, Image.Image, Prediction, float]:
        served = self.model(key)
        image = payload_to_image(payload, self.store.settings.upload_dir)
        x = served.preprocess(image)
        start = time.perf_counter()
        prediction = served.predict(x, k)
        return served, image, prediction, time.perf_counter() - start

    def classify(self, payload: Any, key: str | None = None, k: int = 5) -> Classified:
        """Decode, preprocess and classify one image payload."""
        return Classified.of(*self._run(payload, key, k))

    def top(self, payload: Any, key: str | None = None, k: int = 5) -> dict[str, float]:
        """`{label: probability}` of the top `k` classes (the `/classify` answer)."""
        return {label: round(float(p), 6) for label, p in self._run(payload, key, k)[2].top}

    def remember(self, classified: Classified) -> str:
        """Keeps `classified` for a later `recall`; returns its key."""
        key = uuid.uuid4().hex
        self._results.put(key, classified)
        return key

    def recall(self, key: Any) -> Classified:
        """The classification kept under `key`.

        Raises:
            UserError: Unknown or expired key (unused for `RESULT_TTL_S`, or too many newer
                classifications since).
        """
        classified = self._results.find(key) if isinstance(key, str) else None
        if classified is None:
            raise UserError("That result has expired: classify the image again to explain another class.")
        return classified

    def explain(self, classified: Classified, label: str | None = None) -> Image.Image:
        """Grad-CAM of `label` (default: the top class) over the display copy of the image."""
        served = classified.served
        label = label or classified.top_labels[0]
        if label not in served.labels:
            raise UserError(f"{echo(label)} is not a class of {served.title}.")
        cam = served.gradcam(classified.prediction.features, served.labels.index(label))
        return overlay(classified.image, cam, alpha=CAM_ALPHA)
