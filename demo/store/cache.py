"""The translation cache: each set of weights as the `Translation` that serves it, read from
`<cache_dir>/translated/` when every file checks out, else made once from the Keras model (the one
step of serving that imports TensorFlow) and saved for the next start; and the int8 graph,
quantized from the cached fp32 graph (no TensorFlow), when `Settings.precision` asks for it.

Also the Keras side the app still has, each imported on first call: `load_model` (the first
translation, backend 'tf', Teach's `.keras` export) and the label sets of a model being translated.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from demo.store.interface import prepared
from xception_core.io.assets import example_images
from xception_core.io.export import export_files
from xception_core.io.labels import load_labels
from xception_core.runtime.ort import available
from xception_core.runtime.translated import (
    INT8, Translation, add_int8, open_translation, save, translate, translation_dir,
)
from xception_core.settings import Settings
from xception_core.weights.fetch import cached_weights_sha256, fetched_weights_sha256, preset_samples
from xception_core.weights.presets import PRESETS, preprocessing_for
from xception_core.weights.source import ModelInfo

if TYPE_CHECKING:  # Keras records: imported where a feature needs TensorFlow, never at import
    from xception_core.model import LoadedModel

__all__ = ["IMPORTS", "TranslationCache", "calibration_paths", "import_serving", "load_model", "model_labels"]

logger = logging.getLogger(__name__)


# One thread imports at a time where the loaders' imports and the UI's meet: TensorFlow/Keras and
# ONNX Runtime (loader threads) and Gradio/Plotly (the main thread, `app.py`) share packages with
# import cycles (narwhals, pandas), on which Python's per-module import locks can deadlock
# (`_DeadlockError`: the weights, or the whole start, lost at random). Whoever imports one of those
# trees while another thread may be importing holds this lock (`app.py` around the UI's import,
# `demo.server.main` around the page's build).
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


def load_model(weights: str | None, settings: Settings, **options: Any) -> LoadedModel:
    """`xception_core.model.load_model`, imported on first call: the one way the store gets a
    Keras model (TensorFlow), so a process serving cached translations never imports it. The
    import holds `IMPORTS`, with what translation imports after it. `options` go to it as they are
    (the comparison's random Inception V3: `architecture`, `seed`, `input_shape`)."""
    asked, first = time.monotonic(), "keras" not in sys.modules
    with IMPORTS:
        started = time.monotonic()
        import xception_core.runtime.onnx  # noqa: F401 - the translator, imported with Keras
        from xception_core.model import load_model as load
    if first:
        logger.info("TensorFlow imported in %.1f s, after %.1f s waiting for other imports (for the weights %r)",
                    time.monotonic() - started, started - asked, Path(weights or "random").name)
    return load(weights, settings=settings, **options)


def model_labels(info: ModelInfo, classes: int, settings: Settings) -> tuple[str, ...]:
    """A Keras model's class names: its preset's label set, a taught model's own names, else
    'class i'."""
    from xception_core.io.heads import taught_labels  # with the Keras model: translation time only

    return (load_labels(info.labels, settings.assets_dir) if info.labels
            else taught_labels(info.source, classes)  # a model taught in the Teach tab
            or tuple(f"class {i}" for i in range(classes)))


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


def calibration(preset: str | None, size: int, settings: Settings) -> list[np.ndarray]:
    """The calibration photos, preprocessed at `size`."""
    return [prepared(p, size, preprocessing_for(preset)) for p in calibration_paths(preset, settings)]


def _private_folder(translation: Translation) -> Path:
    """A folder of this process's own for `translation`'s files, removed when the translation is
    let go or the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="xception-translation-"))
    weakref.finalize(translation, shutil.rmtree, folder, True)
    return folder


class TranslationCache:
    """Translations by weights source, on disk under `settings.cache_dir`. Stateless besides the
    settings: every call reads (and checks) or makes one."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def translation(self, key: str, source: str) -> tuple[Translation, LoadedModel | None]:
        """The translation of `source` (a preset's name or a file's path; `key` names it in the
        log), with the Keras model when it had to be made (else None: no TensorFlow imported)."""
        settings = self.settings
        # ImageNet's file is fetched here without Keras: offline, it fails before TensorFlow is imported.
        sha = fetched_weights_sha256(source, settings.keras_home, settings.cache_dir)
        translation = open_translation(translation_dir(settings.cache_dir, sha), sha) if sha else None
        if translation is not None and not self._labels_current(translation):
            logger.warning("translation of %r has another label set than the app's; translating again", key)
            translation = None
        loaded = None
        if translation is None:
            loaded = load_model(source, settings=settings)  # fetches the weights if need be
            sha = sha or cached_weights_sha256(source, settings.keras_home, settings.cache_dir)
            classes = int(loaded.model.outputs[0].shape[-1])
            translation = translate(loaded, model_labels(loaded.info, classes, settings), sha or "",
                                    exporter=export_files)
            self._keep(translation, sha)
        if settings.precision == "int8" and INT8 not in translation.graphs:
            try:
                add_int8(translation, calibration(translation.meta["info"]["preset"], translation.meta["input_size"],
                                                  settings))
            except Exception as exc:  # noqa: BLE001 - quantizer missing or failing: fp32 still works
                logger.warning("int8 quantization of %r failed (%s); running fp32", key, exc)
            else:
                self._keep(translation, sha)
        return translation, loaded

    def _keep(self, translation: Translation, sha: str | None) -> None:
        """Saves a translation for the next start; one that cannot be saved is still served.
        Weights that are no file (a test's model) have nothing to name the cache by: theirs goes
        to a folder of this process's own, removed at exit, so that its exports (two `.keras`
        files) are read from disk when asked for instead of held in memory."""
        try:
            save(translation, translation_dir(self.settings.cache_dir, sha) if sha else _private_folder(translation))
        except OSError as exc:
            logger.warning("translation not cached (%s: %s); the next start translates again",
                           type(exc).__name__, exc.strerror)

    def _labels_current(self, translation: Translation) -> bool:
        """Whether a cached translation's labels are the label set the app ships now (a named set;
        a taught model's names travel with its file, whose hash names the translation)."""
        name = translation.meta["info"]["labels"]
        return not name or load_labels(name, self.settings.assets_dir) == tuple(translation.meta["labels"])
