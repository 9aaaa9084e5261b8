"""Inception V3 for the Compare view: the network the paper measures Xception against, served
from its translation like Xception's weights, and prepared only when the comparison is first
asked for (the app's start stays Xception's alone).

`ComparedModels.get()` starts the preparation in a background thread on its first call and
raises `WarmingUp` until it is done. Preparing is: Keras's official ImageNet weights of Inception
V3 (`INCEPTION_V3_IMAGENET`), fetched over plain HTTP and md5-checked without Keras
(`fetched_weights_sha256`), translated once (`translate_forward`, the one step that imports
TensorFlow) and cached under `<cache_dir>/translated/` by their sha256; where they cannot be had
(offline), an Inception V3 with seeded random weights (`load_model(None, seed=...)`) translated
and cached the same way, under a name made of its architecture, seed and size. Those weights are
honest for the forward's time and the structure only: `ComparedModel.pretrained` says which it is,
and whoever shows predictions shows them only when it is True.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal

import demo.store.cache as store_cache  # its `load_model`, looked up at each call (tests replace it)
from demo.store.interface import WarmingUp
from xception_core.io.labels import load_labels
from xception_core.runtime.translated import (
    TRANSLATOR_VERSION, TranslatedModel, open_translation, save, translate_forward, translation_dir,
)
from xception_core.settings import Settings
from xception_core.weights.fetch import fetched_weights_sha256
from xception_core.weights.presets import INCEPTION_V3_IMAGENET
from xception_core.weights.source import WeightsFailure, WeightsUnavailableError

__all__ = ["ComparedModel", "ComparedModels", "RANDOM_SEED", "random_weights_name"]

logger = logging.getLogger(__name__)

ARCHITECTURE = INCEPTION_V3_IMAGENET.architecture
RANDOM_SEED = 0  # the random Inception V3's weights: the same in every process, so its translation is cached


def random_weights_name(size: int, seed: int = RANDOM_SEED) -> str:
    """What names the cached translation of the seeded random Inception V3 (it has no file whose
    sha256 could): its architecture, seed, input size and the translator's version, hashed."""
    return hashlib.sha256(f"random:{ARCHITECTURE}:seed={seed}:size={size}:v{TRANSLATOR_VERSION}".encode()).hexdigest()


@dataclass(frozen=True)
class ComparedModel:
    """Inception V3 as the comparison serves it.

    Attributes:
        model: Its translation on ONNX Runtime (forward, Grad-CAM), fp32.
        pretrained: Whether its weights are the official ImageNet ones (else seeded random weights:
            for timings and structure only, never for predictions).
        failure: Why the ImageNet weights could not be had (None when `pretrained`).
        prepare_seconds: How long preparing took in this process (reading or making the translation).
        translated_now: Whether the translation was made now (TensorFlow imported) or read from the cache.
    """

    model: TranslatedModel
    pretrained: bool
    failure: WeightsFailure | None
    prepare_seconds: float
    translated_now: bool


State = Literal["idle", "preparing", "ready", "failed"]


class ComparedModels:
    """Inception V3, prepared once in a background thread on first need (thread-safe).

    Args:
        settings: The app's settings (caches, threads).
        input_size: The side it is translated at (default the preset's 299; tests use 75).
        fetch: Try the ImageNet weights (False: the random ones at once, as offline).
    """

    def __init__(self, settings: Settings, input_size: int | None = None, fetch: bool = True):
        self.settings = settings
        self.input_size = input_size or INCEPTION_V3_IMAGENET.input_size
        self.fetch = fetch
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._model: ComparedModel | None = None
        self._error: BaseException | None = None

    def state(self) -> State:
        with self._lock:
            if self._model is not None:
                return "ready"
            if self._error is not None:
                return "failed"
            return "idle" if self._thread is None else "preparing"

    def start(self) -> None:
        """Starts preparing it (idempotent; returns at once)."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._prepare, name="compare-inception-v3", daemon=True)
                self._thread.start()

    def get(self, timeout: float | None = None) -> ComparedModel:
        """The prepared model, starting its preparation on first call.

        Raises:
            WarmingUp: Still preparing after `timeout` seconds (it goes on).
            WeightsUnavailableError: Preparing failed (neither weights could be translated).
        """
        self.start()
        if not self._done.wait(timeout):
            raise WarmingUp("Inception V3 is being prepared for the comparison; try again in a few seconds")
        with self._lock:
            if self._model is None:
                raise WeightsUnavailableError(f"Inception V3 could not be prepared: {self._error}")
            return self._model

    def _prepare(self) -> None:
        started = time.monotonic()
        try:
            model = self._make(started)
        except Exception as exc:  # noqa: BLE001 - any failure ends as one sentence, never a dead thread
            logger.warning("Inception V3 for the comparison unavailable: %s: %s", type(exc).__name__, exc)
            with self._lock:
                self._error = exc
        else:
            with self._lock:
                self._model = model
            logger.info("Inception V3 for the comparison ready in %.1f s (%s, %s)", model.prepare_seconds,
                        "ImageNet weights" if model.pretrained else "seeded random weights",
                        "translated now" if model.translated_now else "from its cached translation")
        finally:
            self._done.set()

    def _make(self, started: float) -> ComparedModel:
        settings, size = self.settings, self.input_size
        failure: WeightsFailure | None = WeightsFailure.OFFLINE if not self.fetch else None
        sha = None
        if self.fetch:
            try:  # a plain download, md5-checked: offline, it fails at once and before TensorFlow
                sha = fetched_weights_sha256(INCEPTION_V3_IMAGENET.name, settings.keras_home, settings.cache_dir)
            except WeightsUnavailableError as exc:
                logger.warning("Inception V3's ImageNet weights unavailable (%s); the comparison times and "
                               "describes seeded random weights and shows no predictions", exc)
                failure = exc.cause
        pretrained = sha is not None
        # The official weights' translation is named by their file (a size of its own: tests).
        name = (sha if size == INCEPTION_V3_IMAGENET.input_size else hashlib.sha256(f"{sha}:{size}".encode()).hexdigest()
                ) if pretrained else random_weights_name(size)
        folder = translation_dir(settings.cache_dir, name)
        translation = open_translation(folder, name)
        translated_now = translation is None
        if translation is None:
            options = {"input_shape": (size, size, 3)}
            loaded = (store_cache.load_model(INCEPTION_V3_IMAGENET.name, settings, **options) if pretrained else
                      store_cache.load_model(None, settings, architecture=ARCHITECTURE, seed=RANDOM_SEED, **options))
            if loaded.input_size != size:  # a preset records its own side; the graph was built at `size`
                loaded = dataclasses.replace(loaded, info=dataclasses.replace(loaded.info, input_size=size))
            labels = load_labels(INCEPTION_V3_IMAGENET.labels, settings.assets_dir)
            translation = translate_forward(loaded, labels, name)
            try:
                save(translation, folder)
            except OSError as exc:
                logger.warning("Inception V3's translation not cached (%s); the next start translates again", exc)
        model = TranslatedModel(translation, threads=settings.onnx_threads)
        model.warm_up()
        return ComparedModel(model, pretrained, None if pretrained else failure, time.monotonic() - started,
                             translated_now)
