"""Putting pretrained weights into our Xception.

Two file kinds, one request record (`BuildRequest`):
- legacy-HDF5 weights in the official layout, or a Keras 3 `.weights.h5` of our model
  (`from_h5`);
- a transfer-learning `.keras` model whose base is `keras.applications.Xception` (or ours),
  nested or not, with any chain of head layers (`from_keras_model`).

Each returns the built model and a `WeightsSource` saying what the weights are; the factory
(`xception_core.model`) turns that into the model's `ModelInfo`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import keras

from xception_core.arch.builder import build_architecture, output_kind, pool
from xception_core.arch.names import reference_layer_name
from xception_core.arch.registry import DEFAULT_ARCHITECTURE, architecture
from xception_core.arch.spec import get_variant
from xception_core.files import write_atomically, write_bytes_atomically
from xception_core.weights.fetch import file_sha256
from xception_core.weights.presets import Preset
from xception_core.weights.source import Outputs, WeightsSource  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

# Bump when the conversion or our layer names change: converted copies of older code are ignored.
CONVERTED_VERSION = 2  # 2: the sidecar records the copy's sha256


@dataclass(frozen=True)
class BuildRequest:
    """What the caller of `build_xception` asked for (see its docstring)."""

    input_shape: tuple[int | None, int | None, int] | None = None
    include_top: bool = True
    pooling: str | None = None
    classes: int | None = None
    classifier_activation: str | None = "softmax"
    variant: str = "paper"
    name: str | None = None
    arch_name: str = DEFAULT_ARCHITECTURE  # the architecture's key (`xception_core.arch.registry`)

    def architecture(self, **overrides) -> keras.Model:
        """`build_architecture` for this request, with some arguments overridden."""
        spec = architecture(self.arch_name).spec
        args = dict(input_shape=self.input_shape, include_top=self.include_top, pooling=self.pooling,
                    classes=spec.default_classes if self.classes is None else self.classes,
                    classifier_activation=self.classifier_activation, variant=self.variant, name=self.name,
                    spec=spec)
        return build_architecture(**{**args, **overrides})


def copy_weights(source: keras.Model, target: keras.Model) -> int:
    """Copies every weighted layer of `target` from the same-named layer of `source`.

    Names on the source side go through `reference_layer_name`, so `source` may be a
    `keras.applications.Xception`. Raises `ValueError` on a missing layer or a shape mismatch.

    Returns:
        The number of layers copied.
    """
    by_name = {reference_layer_name(layer): layer for layer in source.layers if layer.weights}
    copied = 0
    for layer in target.layers:
        if not layer.weights:
            continue
        src = by_name.get(layer.name)
        if src is None:
            raise ValueError(f"source model {source.name!r} has no layer for {layer.name!r}")
        values = src.get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [tuple(v.shape) for v in values] != shapes:
            raise ValueError(
                f"layer {layer.name!r}: source weights have shapes {[v.shape for v in values]}, target expects {shapes}"
            )
        layer.set_weights(values)
        copied += 1
    return copied


def seeded_initialisation(model: keras.Model, seed: int) -> None:
    """Draws every kernel again as Keras's default initialiser draws it (Glorot uniform), from a
    NumPy generator seeded with `seed`: the same random weights in every process and on every Keras
    version (Keras's own draws depend on global seed state). Biases and BatchNorm keep their
    constant initial values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            shape = tuple(w.shape)
            if w.path.rsplit("/", 1)[-1] not in ("kernel", "depthwise_kernel", "pointwise_kernel") or len(shape) < 2:
                continue
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
            limit = float(np.sqrt(6.0 / (fan_in + fan_out)))
            w.assign(rng.uniform(-limit, limit, shape).astype("float32"))


def find_xception_base(model: keras.Model) -> tuple[keras.Model, bool]:
    """Finds the Xception feature extractor inside a model.

    Returns:
        (base, nested): the nested Xception sub-model and True, or the model itself and False
        when its own layers are Xception's.

    Raises:
        ValueError: No layer named 'block14_sepconv2' anywhere.
    """
    names = {layer.name for layer in model.layers}
    if "block14_sepconv2" in names:
        return model, False
    for layer in model.layers:
        if isinstance(layer, keras.Model) and "block14_sepconv2" in {sub.name for sub in layer.layers}:
            return layer, True
    raise ValueError(
        f"model {model.name!r} contains no Xception (no layer 'block14_sepconv2', directly or in a "
        f"nested model); its layers are {[layer.name for layer in model.layers][:12]}..."
    )


def layers_after(model: keras.Model, layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers applied after `layer` (a nested base, or the exit-flow features), checked to
    form a single chain: the head that a classifier or a re-wiring carries over."""
    layer_list = list(model.layers)
    head = layer_list[layer_list.index(layer) + 1 :]
    for item in head:
        if isinstance(item.input, (list, tuple)):
            raise ValueError(f"head layer {item.name!r} has several inputs; only a chain of layers can be carried over")
    return head


def stack(x, head: list[keras.layers.Layer], *, share: bool):
    """Applies `head` to `x`: the same layer objects (`share`), or fresh copies with their weights."""
    for layer in head:
        if share:
            x = layer(x)
            continue
        clone = type(layer).from_config(layer.get_config())
        x = clone(x)
        clone.set_weights(layer.get_weights())
    return x


def head_output_kind(head: list[keras.layers.Layer]) -> Outputs:
    """'probabilities' when the last head layer ends in a softmax, else 'logits'."""
    activation = getattr(getattr(head[-1], "activation", None), "__name__", "linear")
    return "probabilities" if activation == "softmax" else "logits"


def _check_pretrained_args(request: BuildRequest, source: str, expected_classes: int | None, *,
                           check_activation: bool = True) -> None:
    shape = request.input_shape
    if shape is not None and len(shape) == 3 and shape[2] != 3:
        raise ValueError(f"input_shape {shape!r}: pretrained weights ({source}) need 3 channels (RGB)")
    if (request.include_top and request.classes is not None and expected_classes is not None
            and request.classes != expected_classes):
        raise ValueError(
            f"classes={request.classes!r} contradicts weights {source!r}, whose classifier has {expected_classes} "
            f"classes; pass classes={expected_classes} or None, or include_top=False"
        )
    if check_activation and request.include_top and request.classifier_activation not in (None, "softmax"):
        raise ValueError(
            f"classifier_activation={request.classifier_activation!r}: with pretrained weights and the top, "
            "only 'softmax' or None (logits) are allowed"
        )


def from_h5(path: Path, preset: Preset | None, request: BuildRequest) -> tuple[keras.Model, WeightsSource]:
    """Loads a legacy-HDF5 file (official layout) or a Keras 3 `.weights.h5` of our model."""
    source = preset.name if preset else path.name
    expected = preset.classes if preset else _h5_classes(path)
    _check_pretrained_args(request, source, expected)
    size = preset.input_size if preset else architecture(request.arch_name).spec.default_input_size
    request = replace(request, input_shape=request.input_shape or (size, size, 3),
                      classes=expected or request.classes)
    # Legacy HDF5 loads by layer order, which only the paper wiring shares with the reference;
    # other variants get the weights by name from a paper-wired twin.
    paper = request.architecture(variant="paper")
    try:
        paper.load_weights(str(path))
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"weights file {path.name!r} does not fit Xception(include_top={request.include_top}): "
                         f"{exc}") from exc
    model = paper
    if get_variant(request.variant).name != "paper":
        model = request.architecture()
        copy_weights(paper, model)
    include_top = request.include_top
    return model, WeightsSource(
        preset=preset.name if preset else "file",
        title=preset.title if preset else f"weights from {path.name}",
        source=str(path),
        labels=preset.labels if preset and include_top else ("imagenet1k" if expected == 1000 and include_top else None),
        input_size=size if include_top or preset else None,
        outputs=output_kind(include_top, request.classifier_activation),  # type: ignore[arg-type]
    )


def _h5_classes(path: Path) -> int | None:
    """Classifier width stored in a weights file, or None if it has no 'predictions' layer."""
    import h5py

    with h5py.File(path, "r") as f:
        found: list[int] = []

        def visit(name: str, obj) -> None:
            if "predictions" in name and hasattr(obj, "shape") and len(obj.shape) == 1:
                found.append(int(obj.shape[0]))

        f.visititems(visit)
    return found[0] if found else None


def converted_path(path: Path, preset: Preset, request: BuildRequest) -> Path:
    """Where `from_keras_model` keeps its converted copy of a preset's model, next to the
    extracted file in the weights cache, keyed by the file, the request and the code version."""
    stat = path.stat()
    key = json.dumps([CONVERTED_VERSION, keras.__version__, preset.name, stat.st_size, stat.st_mtime_ns,
                      dataclasses.asdict(request)], sort_keys=True, default=str)
    return path.parent / f"{path.stem}.ours-{hashlib.sha256(key.encode()).hexdigest()[:16]}.keras"


def from_keras_model(path: Path, preset: Preset | None, request: BuildRequest) -> tuple[keras.Model, WeightsSource]:
    """Carries a transfer-learning `.keras` model over: its Xception base into ours, its head on top.

    For a preset, the result is also saved as our own `.keras` in the weights cache, and later
    starts load that instead: one model to build rather than the file's model plus ours
    (the cold start in bench/README.md). The copy's sha256 is in its sidecar, written after it,
    and checked at every load: a copy that is missing it, does not match it (damaged or altered)
    or fails to load is deleted and converted again, never served.
    """
    if preset is None:
        return _convert_keras_model(path, preset, request)
    cached = converted_path(path, preset, request)
    sidecar = cached.with_suffix(".json")
    if cached.is_file() and sidecar.is_file():
        try:
            record = json.loads(sidecar.read_text())
            if file_sha256(cached) != record["sha256"]:
                raise ValueError("it does not match the sha256 recorded for it (damaged or altered)")
            source = WeightsSource(**record["source"])
            return keras.saving.load_model(cached, safe_mode=True, compile=False), source
        except Exception as exc:  # noqa: BLE001 - a damaged, altered or foreign copy: convert again
            logger.warning("converted copy %s unusable (%s); converting %s again", cached.name, exc, path.name)
            for stale in (cached, sidecar):
                stale.unlink(missing_ok=True)
    model, source = _convert_keras_model(path, preset, request)
    try:  # the sidecar last: a crash in between leaves a copy without one, which is converted again
        write_atomically(cached, lambda tmp: model.save(str(tmp)))
        record = {"source": dataclasses.asdict(source), "sha256": file_sha256(cached)}
        write_bytes_atomically(sidecar, json.dumps(record).encode())
    except OSError as exc:  # a read-only cache only costs the next start time
        logger.warning("could not keep a converted copy of %s: %s", path.name, exc)
    return model, source


def _convert_keras_model(path: Path, preset: Preset | None, request: BuildRequest) -> tuple[keras.Model, WeightsSource]:
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    base, nested = find_xception_base(loaded)
    if nested:
        before = list(loaded.layers)[: list(loaded.layers).index(base)]
        if any(not isinstance(layer, keras.layers.InputLayer) for layer in before):
            raise ValueError(f"layers before the Xception base are not supported: {[layer.name for layer in before]}")
        if len(loaded.outputs) != 1:
            raise ValueError(f"model file {path.name!r} has {len(loaded.outputs)} outputs; "
                             "only single-output models are supported")
    head = layers_after(loaded, base) if nested else []
    if not nested:  # a plain Xception (ours or Keras's), maybe with its 'predictions' top
        has_top = "predictions" in {layer.name for layer in loaded.layers}
        head_classes = loaded.get_layer("predictions").units if has_top else None
    else:
        head_classes = int(loaded.outputs[0].shape[-1]) if head else None
    source = preset.name if preset else path.name
    if request.include_top and head_classes is None:
        raise ValueError(f"model file {path.name!r} has no classifier; pass include_top=False")
    _check_pretrained_args(request, source, head_classes, check_activation=not nested)
    loaded_size = loaded.input_shape[1] if isinstance(loaded.input_shape[1], int) else None
    size = preset.input_size if preset else loaded_size
    shape = request.input_shape or ((size, size, 3) if size else (None, None, 3))

    if not nested:
        classes = head_classes or architecture(request.arch_name).spec.default_classes
        model = request.architecture(input_shape=shape, classes=classes)
        copy_weights(loaded, model)
        outputs: Outputs = output_kind(request.include_top, request.classifier_activation)  # type: ignore[assignment]
    else:
        features = request.architecture(input_shape=shape, include_top=False, pooling=None, name="xception")
        copy_weights(base, features)
        if request.include_top:
            x = stack(features.output, head, share=False)
            outputs = head_output_kind(head)
        else:
            x = pool(features.output, request.pooling)
            outputs = "features"
        model = keras.Model(features.input, x, name=request.name or f"{features.name}_{preset.name if preset else 'transfer'}")
    return model, WeightsSource(
        preset=preset.name if preset else "file",
        title=preset.title if preset else f"transfer model {path.name}",
        source=str(path),
        labels=(preset.labels if preset else None) if request.include_top else None,
        input_size=size,
        outputs=outputs,
    )
