"""The served model of this process (`ServedModel`): everything a request reads of one set of
weights, from its `Translation` on ONNX Runtime and NumPy, in both wirings: classify (batched),
Grad-CAM, the block tables, the all-blocks pass of either wiring (Explore, Teach's features),
Inside one operation's pass and weights, and the exports the Graph sub-tab shows and offers.

TensorFlow is reached only for what the translation cannot hold: Teach's `.keras` export
(`loaded`, the Keras model loaded in a background thread on first need) and Grad-CAM of a head
that is not dense layers. `KerasServedModel` is the same role for backend 'tf' (or no ONNX
Runtime), the one documented setting that serves from Keras: every method there reads the Keras
model, so no other module keeps a second path.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from demo.store.interface import Prediction, WarmingUp, prepared
import demo.store.cache as store_cache  # its `load_model`, looked up at each call (tests replace it)
from xception_core.io.export import place_export
from xception_core.runtime.batching import MicroBatcher
from xception_core.runtime.introspection import ModelDescription
from xception_core.runtime.operation import BlockParams, LayerSource
from xception_core.runtime.translated import TranslatedModel, export_file
from xception_core.settings import Settings
from xception_core.weights.source import ModelInfo, WeightsUnavailableError

if TYPE_CHECKING:  # Keras records: imported where a feature needs TensorFlow, never at import
    from xception_core.model import LoadedModel
    from xception_core.runtime.classifier import Classifier

__all__ = ["KERAS_WAIT_S", "KerasServedModel", "LocalServedModel"]

logger = logging.getLogger(__name__)

# How long a request waits for the Keras model the first time (Teach's `.keras` export): past it,
# the visitor is told it is warming up and to try again.
KERAS_WAIT_S = 45.0


class _KerasOnNeed:
    """The weights as a Keras model, loaded once in a background thread on first need."""

    def __init__(self, key: str, source: str, settings: Settings, loaded: LoadedModel | None = None):
        self.key, self.source, self.settings = key, source, settings
        self._loaded = loaded
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if loaded is not None:
            self._done.set()

    def state(self) -> Literal["idle", "warming", "ready", "failed"]:
        with self._lock:
            if self._loaded is not None:
                return "ready"
            if self._error is not None:
                return "failed"
            return "idle" if self._thread is None else "warming"

    def get(self, timeout: float | None = None) -> LoadedModel:
        """Raises `WarmingUp` past `timeout` (it goes on loading), `WeightsUnavailableError` when
        loading failed."""
        with self._lock:
            if self._loaded is None and self._thread is None:
                self._thread = threading.Thread(target=self._load, name=f"keras-{self.key}", daemon=True)
                self._thread.start()
        if not self._done.wait(timeout):
            raise WarmingUp("this feature is warming up (TensorFlow is loading); try again in a few seconds")
        with self._lock:
            if self._loaded is None:
                raise WeightsUnavailableError(f"the Keras model could not be loaded: {self._error}")
            return self._loaded

    def _load(self) -> None:
        started = time.monotonic()
        try:
            loaded = store_cache.load_model(self.source, settings=self.settings)
        except BaseException as exc:  # noqa: BLE001 - told to every waiter, never lost in a thread
            with self._lock:
                self._error = exc
            logger.warning("Keras model of %r unavailable: %s", self.key, exc)
        else:
            with self._lock:
                self._loaded = loaded
            logger.info("Keras model of %r ready in %.1f s (Teach's .keras export)", self.key,
                        time.monotonic() - started)
        finally:
            self._done.set()


class LocalServedModel:
    """A `ServedModel` in this process, from its translation (ONNX Runtime and NumPy only): its
    labels, its preprocessing, and a batcher that runs concurrent callers' images as one forward.

    Args:
        key: The weights' key (`weights_key`).
        model: The translated model, in its own wiring.
        settings: The app's settings.
        keras: The Keras model when it was just loaded to translate (kept for Teach's export).
        source: What loads the Keras model: a preset's name or a file's path (default `key`).
    """

    def __init__(self, key: str, model: TranslatedModel, settings: Settings, keras: LoadedModel | None = None,
                 source: str | None = None):
        self.key, self.classifier, self.labels, self.settings = key, model, model.labels, settings
        self.translated = model
        self.source = source or key
        self.batcher = MicroBatcher(model.forward, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_s)
        self._keras = _KerasOnNeed(key, self.source, settings, keras)
        self._keras_classifier: Classifier | None = None

    # ---------------------------------------------------------------- what is served

    @property
    def info(self) -> ModelInfo:
        return self.classifier.info

    @property
    def title(self) -> str:
        return self.info.title

    @property
    def backend(self) -> str:
        return self.classifier.backend

    @property
    def precision(self) -> str:
        return self.classifier.precision

    @property
    def input_size(self) -> int:
        return self.classifier.input_size

    def preprocess(self, image: Any) -> np.ndarray:
        return prepared(image, self.input_size)

    def predict(self, x: np.ndarray, k: int = 5) -> Prediction:
        return Prediction.of(*self.batcher.run(x), self.labels, k)

    def classify(self, image: Any, k: int = 5) -> Prediction:
        return self.predict(self.preprocess(image), k)

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM: the class activation map of a head of dense layers, by hand (no TensorFlow);
        another head (several layers that are not dense) differentiates its Keras model."""
        if self.translated.has_cam:
            return self.translated.gradcam(features, class_index)
        if not 0 <= class_index < self.classifier.classes:
            raise ValueError(f"class_index must be in [0, {self.classifier.classes}), got {class_index}")
        classifier = self._keras_classifier
        if classifier is None:
            from xception_core.runtime.classifier import Classifier

            classifier = self._keras_classifier = Classifier(self.loaded, backend=self.settings.backend,
                                                             threads=self.settings.onnx_threads)
        return classifier.gradcam(features, class_index)

    def description(self, variant: str) -> ModelDescription:
        """The block table of a wiring, or of the reference ('reference'): from the translation."""
        return self.translated.description(variant)

    def explorable(self, variant: str) -> TranslatedModel:
        """The translation in a wiring, what the activation cache and Teach's extractor run."""
        return self.translated.wiring(variant)

    def operation_pass(self, variant: str) -> LayerSource:
        """Inside one operation's pass of a wiring (from the translation; built once)."""
        return self.translated.wiring(variant).operation_pass()

    def operation_params(self, block: str) -> BlockParams:
        """One separable block's weights as arrays (the same in both wirings)."""
        return self.translated.operation_params(block)

    def export(self, kind: str, variant: str, folder: Path, name: str) -> Path:
        """A wiring's export in `folder` under export `name` ('graph': Netron's weight-free JSON;
        'keras': the full `.keras`), copied from the translation once (no TensorFlow)."""
        prints = self.translated.translation.meta["exports"][variant]
        return place_export(folder, name, kind, prints["config"], prints["weights"] if kind == "keras" else None,
                            lambda sink: export_file(self.translated.translation, kind, variant, sink))

    # ---------------------------------------------------------------- the Keras model, on need

    def keras_state(self) -> Literal["idle", "warming", "ready", "failed"]:
        """Where the Keras model stands: not asked for, loading, loaded, or failed."""
        return self._keras.state()

    def keras(self, timeout: float | None = None) -> LoadedModel:
        """The weights as a Keras model (TensorFlow), loaded once in a background thread.

        Raises:
            WarmingUp: not loaded after `timeout` seconds (it goes on loading).
            WeightsUnavailableError: loading failed (the error it failed with).
        """
        return self._keras.get(timeout)

    @property
    def loaded(self) -> LoadedModel:
        """The weights as a Keras model (Teach's `.keras` export): waits up to `KERAS_WAIT_S`,
        then raises `WarmingUp`, which the page words."""
        return self.keras(KERAS_WAIT_S)


class KerasServedModel:
    """A `ServedModel` from the Keras model, for backend 'tf' (`XCEPTION_BACKEND=tf`) or a Python
    without ONNX Runtime: classify on a Keras `Classifier`, every other feature read from the Keras
    model (each wiring re-wired once and kept)."""

    def __init__(self, key: str, classifier: Classifier, labels: tuple[str, ...], settings: Settings,
                 source: str | None = None):
        if len(labels) != classifier.classes:
            raise ValueError(f"{len(labels)} labels for a classifier of {classifier.classes} classes")
        self.key, self.classifier, self.labels, self.settings = key, classifier, labels, settings
        self.source = source or key
        self.translated = None
        self.batcher = MicroBatcher(classifier.forward, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_s)
        self._variants: dict[str, LoadedModel] = {classifier.loaded.info.variant: classifier.loaded}
        self._passes: dict[str, LayerSource] = {}
        self._lock = threading.Lock()

    info = LocalServedModel.info
    title = LocalServedModel.title
    backend = LocalServedModel.backend
    precision = LocalServedModel.precision
    input_size = LocalServedModel.input_size
    preprocess = LocalServedModel.preprocess
    predict = LocalServedModel.predict
    classify = LocalServedModel.classify

    @property
    def loaded(self) -> LoadedModel:
        return self.classifier.loaded

    def keras_state(self) -> Literal["ready"]:
        return "ready"

    def keras(self, timeout: float | None = None) -> LoadedModel:
        return self.classifier.loaded

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        return self.classifier.gradcam(features, class_index)

    def keras_variant(self, variant: str) -> LoadedModel:
        """The weights as a Keras model in a wiring, re-wired once and kept."""
        with self._lock:  # a rewire takes seconds: one at a time
            if variant not in self._variants:
                from xception_core.model import rewire

                self._variants[variant] = rewire(self.classifier.loaded, variant)
            return self._variants[variant]

    def description(self, variant: str) -> ModelDescription:
        from xception_core.runtime.introspection import describe, reference_description

        if variant == "reference":
            return reference_description()
        return describe(self.keras_variant(variant).model, variant)

    def explorable(self, variant: str) -> LoadedModel:
        return self.keras_variant(variant)

    def operation_pass(self, variant: str) -> LayerSource:
        from xception_core.runtime.operation_pass import layer_source

        with self._lock:
            source = self._passes.get(variant)
        if source is None:
            source = layer_source(self.keras_variant(variant), backend=self.settings.backend,
                                  threads=self.settings.onnx_threads)
            with self._lock:
                source = self._passes.setdefault(variant, source)
        return source

    def operation_params(self, block: str) -> BlockParams:
        return BlockParams.from_model(self.classifier.loaded.model, block)

    def export(self, kind: str, variant: str, folder: Path, name: str) -> Path:
        from xception_core.io.export import export_graph, export_keras

        write = export_graph if kind == "graph" else export_keras
        return write(self.keras_variant(variant).model, folder, name)
