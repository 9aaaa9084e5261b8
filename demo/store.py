"""Models for the server: each set of weights loaded once, in the background, shared by every
request and tab, with a status the page shows while weights download.

What the app needs of models is declared here as two protocols: a `Store` (`get(key)` gives a
`ServedModel`, `variant` the same weights in the article's wiring, `statuses` what is loading,
ready or failed) and a `ServedModel` (a classifier with its labels and preprocessing, whose
`predict` batches concurrent classifies). `ModelStore` and `LocalServedModel` implement them in
this process; `demo.store_remote` implements them over Ray Serve replicas. What both share
(the candidates, titles, when loading has settled, a prediction's top-k) lives here once.
Page text is the UI's: this module only reports states.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from demo.errors import LoadFailure, echo, failure_reason, load_failure
from xception_core.io.assets import example_images
from xception_core.inputs.images import load_image
from xception_core.io.labels import load_labels, top_k
from xception_core.inputs.preprocessing import Preprocessing
from xception_core.runtime.activations import ActivationExplorer, BlockDifference, ImageActivations
from xception_core.runtime.batching import MicroBatcher
from xception_core.runtime.introspection import ModelDescription
from xception_core.runtime.ort import available
from xception_core.runtime.translated import (
    INT8, Translation, TranslatedModel, add_int8, open_translation, save, translate, translation_dir,
)
from xception_core.settings import Settings
from xception_core.weights.fetch import cached_weights_sha256, fetched_weights_sha256, preset_samples
from xception_core.weights.presets import AUTO_ORDER, PRESETS, preprocessing_for
from xception_core.weights.source import ModelInfo, WeightsUnavailableError

if TYPE_CHECKING:  # Keras records: imported where a feature needs TensorFlow, never at import
    from xception_core.model import LoadedModel
    from xception_core.runtime.classifier import Classifier

logger = logging.getLogger(__name__)

# How long a request waits for a feature that needs TensorFlow (the article's wiring, exports,
# operations) the first time: past it, the visitor is told it is warming up and to try again.
KERAS_WAIT_S = 45.0

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

    @classmethod
    def of(cls, features: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], k: int) -> "Prediction":
        """The top `k` (at most every label) of one forward's (classes,) probabilities."""
        return cls(top_k(probabilities, labels, min(k, len(labels))), probabilities, features)


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


# ------------------------------------------------------------------------------------- the protocols


class ServedModel(Protocol):
    """What the app needs of one served set of weights, wherever its forward pass runs."""

    key: str
    labels: tuple[str, ...]

    @property
    def info(self) -> ModelInfo: ...

    @property
    def title(self) -> str: ...

    @property
    def input_size(self) -> int: ...

    @property
    def loaded(self) -> LoadedModel:
        """The weights as a Keras model in this process (descriptions, exports, Teach's extractor)."""
        ...

    @property
    def backend(self) -> str | None:
        """'onnx' or 'tf': what runs the forward here; None when it runs elsewhere (replicas)."""
        ...

    @property
    def precision(self) -> str | None:
        """'fp32' or 'int8' (the quantized model); None when the model runs elsewhere."""
        ...

    @property
    def preprocessing(self) -> Preprocessing:
        """How these weights want their images (their preset's resize filter)."""
        ...

    def preprocess(self, image: Any) -> np.ndarray:
        """Any image `load_image` accepts → (size, size, 3) float32 in [-1, 1], by `preprocessing`."""
        ...

    def predict(self, x: np.ndarray, k: int = 5) -> Prediction:
        """One preprocessed image (size, size, 3) → `Prediction`, batched with concurrent callers."""
        ...

    def classify(self, image: Any, k: int = 5) -> Prediction:
        """Top-k of one image (any input `load_image` accepts)."""
        ...

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """(h, w) Grad-CAM map in [0, 1] of one class from `Prediction.features`."""
        ...

    def description(self, variant: str) -> ModelDescription:
        """The block table of these weights in a wiring ('paper', 'article'), or of the reference
        Xception ('reference')."""
        ...

    def explorable(self, variant: str) -> Any:
        """What the activation cache (`ActivationSource.compute`) runs for a wiring."""
        ...


class WarmingUp(TimeoutError):
    """A feature that needs TensorFlow is still loading it in the background: try again soon."""


class ActivationSource(Protocol):
    """What the Explore tab needs of its activation cache (`ActivationExplorer` here; a cache whose
    records come from replicas in `demo.store_remote`)."""

    forward_calls: int

    def compute(self, loaded: LoadedModel, x: np.ndarray, *, weights_key: str | None = None
                ) -> tuple[ImageActivations, bool]: ...

    def lookup(self, key: str) -> ImageActivations | None: ...

    def compare(self, paper: ImageActivations, article: ImageActivations) -> list[BlockDifference]: ...

    def warm_up(self, loaded: LoadedModel) -> None: ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


class Store(Protocol):
    """What the app needs of its models: the weights it may serve (`candidates`), each loaded once
    and served to every request, and where loading stands."""

    settings: Settings
    candidates: tuple[str, ...]

    @property
    def default_key(self) -> str | None:
        """The weights served when a request names none; None until some weights are ready."""
        ...

    def start(self) -> "Store":
        """Starts loading (idempotent); returns the store."""
        ...

    def get(self, key: str | None = None, timeout: float | None = None) -> ServedModel:
        """The served model for `key` (default weights when None), waiting for it.

        Raises:
            WeightsUnavailableError: It failed to load, or nothing could be loaded.
            TimeoutError: Still loading after `timeout` seconds.
            ValueError: Unknown key.
        """
        ...

    def variant(self, key: str | None, variant: str) -> LoadedModel:
        """The served weights in a wiring ('paper' or 'article') in this process as a Keras model,
        made once (TensorFlow: may raise `WarmingUp`)."""
        ...

    def available(self) -> list[str]:
        """Keys of the weights that loaded, default first."""
        ...

    def title(self, key: str) -> str: ...

    def statuses(self) -> list[SlotStatus]:
        """Each candidate's state, in loading order."""
        ...

    def is_ready(self) -> bool:
        """The default weights are served."""
        ...

    def settled(self) -> bool:
        """Nothing is still loading or waiting: the page can stop polling."""
        ...

    def replicas(self) -> dict[str, int] | None:
        """Model replicas by state where a cluster serves the models; None in-process."""
        ...

    def activation_explorer(self) -> ActivationSource:
        """A new activation cache for the Explore tab, running its forwards where the models run."""
        ...


# ------------------------------------------------------------------------------------- shared by both


def default_candidates(settings: Settings) -> tuple[str, ...]:
    """The weights a store tries: `settings.weights`, else the presets in `AUTO_ORDER`."""
    return (settings.weights,) if settings.weights else AUTO_ORDER


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_KEY = 40


def weights_key(source: str) -> str:
    """The one key weights are known by everywhere (status, /healthz, `?weights=`, every answer,
    export and folder names): a preset's own name; for a file, its stem made safe (letters,
    digits, '_' and '-', at most 40 characters: '/srv/m/xception_taught.keras' → 'xception_taught'),
    never its folder, and never a preset's name (a file called kitchenware.keras → 'kitchenware-file')."""
    if source in PRESETS:
        return source
    stem = _UNSAFE.sub("_", Path(source).stem).strip("_-")[:MAX_KEY] or "weights"
    return f"{stem}-file" if stem in PRESETS else stem


def candidate_sources(sources: Sequence[str]) -> dict[str, str]:
    """{key: source} of the weights a store tries, in order (`weights_key`)."""
    return {weights_key(source): source for source in sources}


def weights_title(key: str) -> str:
    """What the page calls weights before they are loaded: a preset's title, a weights file by its
    file name (its folder is the server's business)."""
    return PRESETS[key].title if key in PRESETS else Path(key).name


def has_settled(ready: bool, statuses: Sequence[SlotStatus]) -> bool:
    """The default weights are served and no candidate is still loading or waiting."""
    return ready and all(s.state in ("ready", "failed") for s in statuses)


# One thread imports at a time where the loaders' imports and the UI's meet: TensorFlow/Keras and
# ONNX Runtime (loader threads) and Gradio/Plotly (the main thread, `app.py`) share packages with
# import cycles (narwhals, pandas), on which Python's per-module import locks can deadlock
# (`_DeadlockError`: the weights, or the whole start, lost at random). Whoever imports one of those
# trees while another thread may be importing holds this lock (`app.py` around the UI's import).
IMPORTS = threading.RLock()


def import_serving(int8: bool = False) -> None:
    """Imports what serving a cached translation needs (ONNX Runtime, and its quantizer for
    `int8`), holding `IMPORTS`."""
    if available():
        with IMPORTS:
            import onnx  # noqa: F401 - imported here, not first in a request or loader thread
            import onnxruntime  # noqa: F401

            if int8:
                import onnxruntime.quantization  # noqa: F401 - `add_int8` quantizes in the loader thread


def load_model(weights: str, settings: Settings) -> LoadedModel:
    """`xception_core.model.load_model`, imported on first call: the one way this module gets a
    Keras model (TensorFlow), so a process serving cached translations never imports it. The
    import holds `IMPORTS`, with what translation imports after it."""
    asked, first = time.monotonic(), "keras" not in sys.modules
    with IMPORTS:
        started = time.monotonic()
        import xception_core.runtime.onnx  # noqa: F401 - the translator, imported with Keras
        from xception_core.model import load_model as load
    if first:
        logger.info("TensorFlow imported in %.1f s, after %.1f s waiting for other imports (for the weights %r)",
                    time.monotonic() - started, started - asked, Path(weights).name)
    return load(weights, settings=settings)


def prepared(image: Any, size: int, preprocessing: Preprocessing) -> np.ndarray:
    """Any image `load_image` accepts → (size, size, 3) float32 in [-1, 1], as the weights want it
    (`preprocessing`, their preset's): every served model's preprocessing, wherever its forward runs."""
    return preprocessing(load_image(image), size)


# ------------------------------------------------------------------------------------- in this process


class LocalServedModel:
    """A classifier served in this process (`ServedModel`): its labels, its preprocessing, and a
    batcher that runs concurrent callers' images as one forward.

    The classifier is a `TranslatedModel` (ONNX Runtime, from the cached translation: no
    TensorFlow) or, with backend 'tf' or without ONNX Runtime, a Keras `Classifier`. The Keras
    model itself (`loaded`, `keras`) is made on first need only, in a background thread.
    """

    def __init__(self, key: str, classifier: TranslatedModel | Classifier, labels: tuple[str, ...], settings: Settings,
                 keras: LoadedModel | None = None, source: str | None = None):
        if len(labels) != classifier.classes:
            raise ValueError(f"{len(labels)} labels for a classifier of {classifier.classes} classes")
        self.key, self.classifier, self.labels, self.settings = key, classifier, labels, settings
        self.source = source or key  # what loads the Keras model: a preset's name or a file's path
        self.batcher = MicroBatcher(classifier.forward, max_batch=settings.max_batch, max_wait_s=settings.batch_wait_s)
        translated = isinstance(classifier, TranslatedModel)
        self.translated: TranslatedModel | None = classifier if translated else None
        self._keras: LoadedModel | None = keras if translated else classifier.loaded  # type: ignore[union-attr]
        self._keras_lock = threading.Lock()
        self._keras_done = threading.Event()
        self._keras_error: BaseException | None = None
        self._keras_thread: threading.Thread | None = None
        self._keras_classifier: Classifier | None = None
        self._variants: dict[str, LoadedModel] = {}
        self._variants_lock = threading.Lock()
        if self._keras is not None:
            self._keras_done.set()

    # ---------------------------------------------------------------- the Keras model, on need

    def keras_state(self) -> Literal["idle", "warming", "ready", "failed"]:
        """Where the Keras model stands: not asked for, loading, loaded, or failed."""
        with self._keras_lock:
            if self._keras is not None:
                return "ready"
            if self._keras_error is not None:
                return "failed"
            return "idle" if self._keras_thread is None else "warming"

    def keras(self, timeout: float | None = None) -> LoadedModel:
        """The weights as a Keras model (TensorFlow), loaded once in a background thread.

        Raises:
            WarmingUp: not loaded after `timeout` seconds (it goes on loading).
            WeightsUnavailableError: loading failed (the error it failed with).
        """
        with self._keras_lock:
            if self._keras is None and self._keras_thread is None:
                self._keras_thread = threading.Thread(target=self._load_keras, name=f"keras-{self.key}", daemon=True)
                self._keras_thread.start()
        if not self._keras_done.wait(timeout):
            raise WarmingUp("this feature is warming up (TensorFlow is loading); try again in a few seconds")
        with self._keras_lock:
            if self._keras is None:
                raise WeightsUnavailableError(f"the Keras model could not be loaded: {self._keras_error}")
            return self._keras

    def _load_keras(self) -> None:
        started = time.monotonic()
        try:
            loaded = load_model(self.source, settings=self.settings)
        except BaseException as exc:  # noqa: BLE001 - told to every waiter, never lost in a thread
            with self._keras_lock:
                self._keras_error = exc
            logger.warning("Keras model of %r unavailable: %s", self.key, exc)
        else:
            with self._keras_lock:
                self._keras = loaded
            logger.info("Keras model of %r ready in %.1f s (TensorFlow features)", self.key, time.monotonic() - started)
        finally:
            self._keras_done.set()

    @property
    def loaded(self) -> LoadedModel:
        """The weights as a Keras model (Teach's `.keras` export): waits up to `KERAS_WAIT_S`,
        then raises `WarmingUp`, which the page words."""
        return self.keras(KERAS_WAIT_S)

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

    @property
    def preprocessing(self) -> Preprocessing:
        return preprocessing_for(self.info.preset)

    def preprocess(self, image: Any) -> np.ndarray:
        return prepared(image, self.input_size, self.preprocessing)

    def predict(self, x: np.ndarray, k: int = 5) -> Prediction:
        return Prediction.of(*self.batcher.run(x), self.labels, k)

    def classify(self, image: Any, k: int = 5) -> Prediction:
        return self.predict(self.preprocess(image), k)

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM: the class activation map for a dense head (no autograd, no TensorFlow);
        another head (a taught one, several layers) differentiates its Keras model."""
        if self.translated is None or self.translated.has_cam:
            return self.classifier.gradcam(features, class_index)
        if not 0 <= class_index < self.classifier.classes:
            raise ValueError(f"class_index must be in [0, {self.classifier.classes}), got {class_index}")
        with self._keras_lock:
            classifier = self._keras_classifier
        if classifier is None:
            from xception_core.runtime.classifier import Classifier

            classifier = Classifier(self.keras(KERAS_WAIT_S), backend=self.settings.backend,
                                    threads=self.settings.onnx_threads)
            with self._keras_lock:
                self._keras_classifier = classifier
        return classifier.gradcam(features, class_index)

    def description(self, variant: str) -> ModelDescription:
        """The block table of a wiring, or of the reference ('reference'): from the translation."""
        if self.translated is not None:
            return self.translated.description(variant)
        from xception_core.runtime.introspection import describe, reference_description

        if variant == "reference":
            return reference_description()
        return describe(self.keras_variant(variant).model, variant)

    def explorable(self, variant: str) -> Any:
        """The translation itself in its own wiring (no TensorFlow); the Keras model otherwise."""
        if self.translated is not None and variant == self.info.variant:
            return self.translated
        return self.keras_variant(variant, KERAS_WAIT_S)

    def keras_variant(self, variant: str, timeout: float | None = None) -> LoadedModel:
        """The weights as a Keras model in a wiring, re-wired once and kept (see `keras`)."""
        base = self.keras(timeout)
        if variant == base.info.variant:
            return base
        with self._variants_lock:  # a rewire takes seconds: one at a time, never under `_keras_lock`
            if variant not in self._variants:
                from xception_core.model import rewire

                self._variants[variant] = rewire(base, variant)
            return self._variants[variant]


def calibration_paths(preset_name: str | None, settings: Settings) -> list[Path]:
    """Photos that calibrate int8 activation ranges: the shipped photos the weights' preset
    declares for calibration (`Preset.samples`), else the app's examples."""
    preset = PRESETS.get(preset_name or "")
    paths: list[Path] = []
    if preset is not None and preset.samples is not None:
        uses = preset.samples
        try:
            paths = [s.path for s in preset_samples(preset.name, settings.cache_dir) if uses.takes(uses.calibration, s.label)]
        except Exception as exc:  # noqa: BLE001 - the examples will do
            logger.warning("no sample photos for %s (%s); calibrating on the examples", preset.name, exc)
    return paths or [e.path for e in example_images(settings.assets_dir)]


@dataclass
class _Slot:
    """One candidate's loading state. Written by the loader thread and read by request threads,
    always under the store's lock."""

    state: State = "waiting"
    served: LocalServedModel | None = None
    error: str = ""
    failure: LoadFailure | None = None
    started: float | None = None  # time.monotonic() when loading began
    ready: threading.Event = field(default_factory=threading.Event)  # set once it is ready or failed


class ModelStore:
    """The `Store` of this process: a thread-safe registry of served models keyed by weights name
    ('imagenet', 'kitchenware', or a file path from `Settings.weights`).

    `start()` returns at once; the default weights (`settings.weights`, else the presets in
    `AUTO_ORDER`) load in a background thread, then the other presets, so a selector can offer
    whatever could be had. Nothing is fetched at import time.
    """

    def __init__(self, settings: Settings | None = None, candidates: Sequence[str] | None = None):
        self.settings = settings or Settings()
        # Keys (`weights_key`) everywhere; the source (a preset name or a file path) only to load.
        self._sources = candidate_sources(tuple(candidates or default_candidates(self.settings)))
        self.candidates: tuple[str, ...] = tuple(self._sources)
        # A slot per candidate from the start: the loader changes slots, never this dict, and
        # every read of a slot's fields happens under `_lock`.
        self._slots: dict[str, _Slot] = {key: _Slot() for key in self.candidates}
        self._lock = threading.Lock()  # held only for reads and writes of state, never for a load
        self._default: str | None = None
        self._default_ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_ready: list[Callable[[LocalServedModel], None]] = []

    # ---------------------------------------------------------------- loading

    def start(self) -> "ModelStore":
        """Starts background loading (idempotent). What serving a cached translation imports (ONNX
        Runtime) is imported here, before the loader thread starts: that thread then imports
        nothing, unless it must translate (TensorFlow, under `IMPORTS`)."""
        if self._thread is None:
            import_serving(int8=self.settings.precision == "int8")
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
            for slot in self._slots.values():
                with self._lock:
                    if not slot.ready.is_set():
                        slot.state, slot.error = "failed", slot.error or "loading stopped"
                slot.ready.set()
            self._default_ready.set()  # also when nothing loaded: waiters get the error

    def when_ready(self, callback: Callable[[LocalServedModel], None]) -> None:
        """Runs `callback(default model)` once the default weights are ready: in the loader
        thread, before other weights load (in a new thread if they are ready already). For
        warm-ups that must not wait for a page view; a failing callback is logged."""
        with self._lock:
            if self._default is None:
                self._on_ready.append(callback)
                return
        threading.Thread(target=self._call, args=(callback,), name="when-ready", daemon=True).start()

    def _call(self, callback: Callable[[LocalServedModel], None]) -> None:
        try:
            callback(self.get(self._default))
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs the first user time
            logger.warning("after-load step %s failed: %s", getattr(callback, "__name__", callback), exc)

    def _load(self, key: str) -> bool:
        slot = self._slots[key]
        with self._lock:
            slot.state, slot.started = "loading", time.monotonic()
        try:
            served = self._serve(key)
        except Exception as exc:  # noqa: BLE001 - any failure (a BadZipFile, a damaged HDF5, an
            # unregistered layer...) must end as "unavailable: <reason>", never as a dead loader
            with self._lock:
                slot.state, slot.error, slot.failure = "failed", failure_reason(exc), load_failure(exc)
            logger.warning("weights %r unavailable: %s: %s", key, type(exc).__name__, exc)
            return False
        else:
            with self._lock:
                slot.served, slot.state = served, "ready"
            logger.info("weights %r ready in %.1f s", key, time.monotonic() - (slot.started or 0.0))
            return True
        finally:
            slot.ready.set()

    def _serve(self, key: str) -> LocalServedModel:
        """The served model of `key`: from its cached translation when one checks out (no
        TensorFlow), else loaded in Keras, translated and cached for the next start."""
        settings = self.settings
        if settings.backend == "tf" or not available():
            return self._serve_keras(key)
        source = self._sources[key]  # a preset's name or a file's path; `key` names it everywhere else
        # ImageNet's file is fetched here without Keras: offline, it fails before TensorFlow is imported.
        sha = fetched_weights_sha256(source, settings.keras_home, settings.cache_dir)
        translation = open_translation(translation_dir(settings.cache_dir, sha), sha) if sha else None
        if translation is not None and not self._labels_current(translation):
            logger.warning("translation of %r has another label set than the app's; translating again", key)
            translation = None
        loaded = None
        if translation is None:
            loaded = load_model(source, settings=self.settings)  # fetches the weights if need be
            sha = sha or cached_weights_sha256(source, settings.keras_home, settings.cache_dir)
            translation = translate(loaded, self._labels(loaded.info, int(loaded.model.outputs[0].shape[-1])),
                                    sha or "")
            self._keep(translation, sha)
        if settings.precision == "int8" and INT8 not in translation.graphs:
            try:
                add_int8(translation, self._calibration(translation.meta["info"]["preset"], translation.meta["input_size"]))
            except Exception as exc:  # noqa: BLE001 - quantizer missing or failing: fp32 still works
                logger.warning("int8 quantization of %r failed (%s); running fp32", key, exc)
            else:
                self._keep(translation, sha)
        # The default weights are the ones the explorer warms up: their forward runs in the
        # all-blocks session from the start, one ONNX Runtime session instead of two.
        model = TranslatedModel(translation, precision=settings.precision, threads=settings.onnx_threads,
                                all_blocks=self._default is None)
        model.warm_up()
        return LocalServedModel(key, model, model.labels, settings, keras=loaded, source=source)

    def _keep(self, translation: Translation, sha: str | None) -> None:
        """Saves a translation for the next start; one that cannot be saved is still served."""
        if not sha:  # weights that are no file (a test's model): nothing to name the cache by
            return
        try:
            save(translation, translation_dir(self.settings.cache_dir, sha))
        except OSError as exc:
            logger.warning("translation not cached (%s: %s); the next start translates again",
                           type(exc).__name__, exc.strerror)

    def _serve_keras(self, key: str) -> LocalServedModel:
        """Backend 'tf', or no ONNX Runtime: the Keras model serves, as a `Classifier`."""
        from xception_core.runtime.classifier import Classifier

        loaded = load_model(self._sources[key], settings=self.settings)
        settings = self.settings
        calibration = (self._calibration(loaded.info.preset, loaded.input_size)
                       if settings.precision == "int8" else ())
        classifier = Classifier(loaded, backend=settings.backend, precision=settings.precision,
                                calibration=calibration, threads=settings.onnx_threads)
        classifier.warm_up()
        return LocalServedModel(key, classifier, self._labels(loaded.info, classifier.classes), settings,
                                source=self._sources[key])

    def _labels_current(self, translation: Translation) -> bool:
        """Whether a cached translation's labels are the label set the app ships now (a named set;
        a taught model's names travel with its file, whose hash names the translation)."""
        name = translation.meta["info"]["labels"]
        return not name or load_labels(name, self.settings.assets_dir) == tuple(translation.meta["labels"])

    def _labels(self, info: ModelInfo, classes: int) -> tuple[str, ...]:
        from xception_core.io.heads import taught_labels  # with the Keras model: translation time only

        return (load_labels(info.labels, self.settings.assets_dir) if info.labels
                else taught_labels(info.source, classes)  # a model taught in the Teach tab
                or tuple(f"class {i}" for i in range(classes)))

    def _calibration(self, preset: str | None, size: int) -> list[np.ndarray]:
        return [prepared(p, size, preprocessing_for(preset)) for p in calibration_paths(preset, self.settings)]

    # ---------------------------------------------------------------- queries

    @property
    def default_key(self) -> str | None:
        return self._default

    def available(self) -> list[str]:
        """Keys of the weights that loaded, default first."""
        with self._lock:
            ready = [key for key, slot in self._slots.items() if slot.state == "ready"]
            default = self._default
        return sorted(ready, key=lambda k: (k != default, self.candidates.index(k)))

    def title(self, key: str) -> str:
        slot = self._slots.get(key)
        with self._lock:
            served = slot.served if slot is not None else None
        return served.title if served is not None else weights_title(self._sources.get(key, key))

    def statuses(self) -> list[SlotStatus]:
        """Each candidate's state, in loading order."""
        now = time.monotonic()
        with self._lock:
            rows = [(key, slot.state, slot.started, slot.error, slot.failure, slot.served)
                    for key, slot in self._slots.items()]
        return [SlotStatus(key, served.title if served is not None else weights_title(self._sources[key]), state,
                           0.0 if started is None else now - started, error, failure)
                for key, state, started, error, failure, served in rows]

    def is_ready(self) -> bool:
        return self._default is not None

    def settled(self) -> bool:
        return has_settled(self.is_ready(), self.statuses())

    def replicas(self) -> None:
        """None: the models run in this process."""
        return None

    def activation_explorer(self) -> ActivationExplorer:
        """A new activation cache for the Explore tab, on the app's backend. Its all-blocks pass is
        built and run once as soon as the default model is ready, for API callers who never open
        the page."""
        explorer = ActivationExplorer(max_entries=8, backend=self.settings.backend, threads=self.settings.onnx_threads)
        self.when_ready(lambda served: explorer.warm_up(served.explorable(served.info.variant)))
        return explorer

    def get(self, key: str | None = None, timeout: float | None = None) -> LocalServedModel:
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
            with self._lock:
                key = self._default
                errors = "; ".join(f"{k}: {slot.error}" for k, slot in self._slots.items())
            if key is None:
                raise WeightsUnavailableError(f"no pretrained weights could be loaded ({errors})")
        slot = self._slots.get(key) if isinstance(key, str) else None
        if slot is None:
            raise ValueError(f"unknown weights {echo(key)}; available: {', '.join(self.available()) or 'none yet'}")
        if not slot.ready.wait(timeout):
            raise TimeoutError(f"weights {key!r} are still loading; try again in a few seconds")
        with self._lock:
            served, error = slot.served, slot.error
        if served is None:
            raise WeightsUnavailableError(f"weights {key!r} are unavailable: {error}")
        return served

    def variant(self, key: str | None, variant: str, timeout: float | None = KERAS_WAIT_S) -> LoadedModel:
        """The served weights as a Keras model in a wiring ('paper' or 'article'), made once.

        Raises:
            WarmingUp: TensorFlow still loading after `timeout` seconds (the first use).
        """
        return self.get(key).keras_variant(variant, timeout)
