"""Classify and explain: an image payload in, top-k, timing and Grad-CAM out. No Gradio here."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PIL import Image

from demo.errors import echo, public_text
from demo.services import UserError
from demo.services.payloads import payload_to_image
from demo.store import ModelStore, Prediction, ServedModel
from xception_core.io.images import display_copy
from xception_core.io.visualize import overlay
from xception_core.model import WeightsUnavailableError

MODEL_WAIT_S = 600.0  # a first start may download ~90 MB of weights
CAM_ALPHA = 0.5
RESULT_TTL_S = 15 * 60  # how long a session holds the key of its last classification
RESULTS_KEPT = 64  # classifications kept for "explain another class" (~0.3 MB each), newest first


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
    """The Classify tab's and `/classify`'s work, on a shared `ModelStore`."""

    def __init__(self, store: ModelStore, wait_s: float = MODEL_WAIT_S, results_kept: int = RESULTS_KEPT):
        self.store, self.wait_s = store, wait_s
        # Results for a later Grad-CAM of another class live here, bounded in number whatever the
        # number of sessions; a session holds only a key (`remember` / `recall`).
        self._results: OrderedDict[str, Classified] = OrderedDict()
        self._results_kept = results_kept
        self._lock = threading.Lock()

    def model(self, key: str | None = None) -> ServedModel:
        """The store's model for `key` (default weights when None), failures as `UserError`."""
        if key is not None and not isinstance(key, str):
            raise UserError(f"Weights must be named by a string, got {type(key).__name__}.")
        if key and key not in self.store.candidates:
            raise UserError(f"unknown weights {echo(key)}; available: {', '.join(map(self.store.title, self.store.available())) or 'none yet'}.")
        try:
            return self.store.get(key or None, timeout=self.wait_s)
        except TimeoutError as exc:
            raise UserError(f"{exc}.") from None
        except (WeightsUnavailableError, ValueError) as exc:
            raise UserError(public_text(exc)) from None

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
        """Keeps `classified` for a later `recall`; returns its key (the oldest beyond the bound go)."""
        key = uuid.uuid4().hex
        with self._lock:
            self._results[key] = classified
            while len(self._results) > self._results_kept:
                self._results.popitem(last=False)
        return key

    def recall(self, key: Any) -> Classified:
        """The classification kept under `key`.

        Raises:
            UserError: Unknown or expired key (too many newer classifications since).
        """
        with self._lock:
            classified = self._results.get(key) if isinstance(key, str) else None
            if classified is not None:
                self._results.move_to_end(key)
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
