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
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from demo.store.interface import prepared
from xception_core.io.assets import example_images
from xception_core.io.export import export_files
from xception_core.io.labels import load_labels
from xception_core.runtime.translated import (
    INT8, Translation, add_int8, open_translation, save, translate, translation_dir,
)
from xception_core.settings import Settings
from xception_core.weights.fetch import cached_weights_sha256, preset_samples
from xception_core.weights.presets import PRESETS
from xception_core.weights.source import ModelInfo

if TYPE_CHECKING:  # Keras records: imported where a feature needs TensorFlow, never at import
    from xception_core.model import LoadedModel

__all__ = ["TranslationCache", "calibration_paths", "load_model", "model_labels"]

logger = logging.getLogger(__name__)


def load_model(weights: str, settings: Settings) -> LoadedModel:
    """`xception_core.model.load_model`, imported on first call: the one way the store gets a
    Keras model (TensorFlow), so a process serving cached translations never imports it."""
    from xception_core.model import load_model as load

    return load(weights, settings=settings)


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
    return [prepared(p, size) for p in calibration_paths(preset, settings)]


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
        sha = cached_weights_sha256(source, settings.keras_home, settings.cache_dir)
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
