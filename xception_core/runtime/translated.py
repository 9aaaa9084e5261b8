"""A translated model cached next to its weights: what a serving process reads instead of Keras.

`translate(loaded, labels)` (the one step that needs TensorFlow) turns a classifier from
`load_model` into a `Translation`: the folded ONNX graph of the forward (features and output), the
all-blocks graph the explorer runs (every block's map and channel means, `ActivationExplorer`),
their weights once (arrays shared by both graphs), the label set, input size, preprocessing, the
head's dense kernel when the head is global-average pooling + one dense layer (then Grad-CAM is the
class activation map, `cam`), the block table of both wirings (`ModelDescription`) and which block
outputs follow a ReLU. `save` writes it into a folder with `xception_core.files.write_atomically`,
the manifest last, holding each file's sha256; `open_translation` reads it back, checking every
byte it reads against the manifest, the weights' sha256 and `TRANSLATOR_VERSION`, and returns None
(saying why) for anything else: a missing, stale or tampered translation is made again, never
served. `TranslatedModel` serves it: forward, Grad-CAM and the all-blocks pass on ONNX Runtime,
NumPy only besides (this module imports no Keras or TensorFlow at import time; only `translate`
does, inside).

Layout of a folder (`translation_dir`: `<cache_dir>/translated/<weights sha256 + version>`):
`forward.onnx`, `blocks.onnx` (graphs whose large weights are external), `weights.bin` (those
weights, float32, 64-byte aligned), `forward-int8.onnx` (self-contained, when int8 was asked for:
quantized from the cached fp32 graph, no TensorFlow needed) and `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xception_core.arch.spec import get_variant
from xception_core.files import write_atomically
from xception_core.runtime.introspection import ModelDescription
from xception_core.runtime.ort import OUTPUT, OnnxForward, means_name, quantize_int8, softmax
from xception_core.weights.source import ModelInfo

if TYPE_CHECKING:
    from xception_core.model import LoadedModel

__all__ = ["TRANSLATOR_VERSION", "Translation", "TranslatedModel", "cam", "open_translation", "save",
           "translate", "translation_dir"]

logger = logging.getLogger(__name__)

# Bump when the graphs, the weights layout or the manifest change: older translations are rebuilt.
TRANSLATOR_VERSION = 3  # 3: the manifest's model record names its architecture (graphs unchanged)
MANIFEST = "manifest.json"
FORWARD, BLOCKS, WEIGHTS, INT8 = "forward.onnx", "blocks.onnx", "weights.bin", "forward-int8.onnx"
PREPROCESSING = "resize bicubic to input_size, RGB, x / 127.5 - 1"  # `xception_core.io.preprocessing.preprocess`
ALIGN = 64  # bytes: each array starts on a cache line
REFERENCE = "reference"  # the descriptions' key of Keras's 299×299 ImageNet Xception, whatever the weights


def translation_dir(cache_dir: Path, weights_sha256: str) -> Path:
    """Where the translation of the weights with this sha256 lives (one folder per translator version)."""
    return Path(cache_dir) / "translated" / f"{weights_sha256[:32]}-v{TRANSLATOR_VERSION}"


def cam(features: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Grad-CAM of a global-average-pool + dense head, without autograd.

    The gradient of class k's pre-softmax score with respect to every cell of channel c is
    W[c, k] / (h·w), so Grad-CAM's channel weights are W[:, k] / (h·w): the class activation map
    (Zhou et al. 2016), normalised as `Classifier.gradcam` normalises.

    Args:
        features: (h, w, C) exit-flow features.
        column: (C,) the dense kernel's column of the class (or, for a deeper head, the gradient
            of the class score with respect to the pooled features: `head_gradient`).

    Returns:
        (h, w) float32 in [0, 1] (all zeros when no cell raises the class score).
    """
    f = np.asarray(features, np.float32)
    h, w = f.shape[:2]
    heat = np.maximum(f @ (np.asarray(column, np.float32) / np.float32(h * w)), 0.0)
    return (heat / (heat.max() + np.float32(1e-12))).astype(np.float32)


def head_gradient(pooled: np.ndarray, layers: Sequence[tuple[np.ndarray, np.ndarray | None, str]],
                  class_index: int) -> np.ndarray:
    """d(class score)/d(pooled features) of a chain of dense layers, by hand (no autograd).

    The score is the last layer's linear part (as `Classifier.gradcam` takes it: a saturated
    softmax has vanishing gradients); hidden layers are 'relu' or 'linear'. With one layer this
    is the kernel's column, whatever the features.

    Args:
        pooled: (C,) the features' spatial means.
        layers: (kernel (D_in, D_out), bias (D_out,) or None, activation) in order.
        class_index: The class.

    Returns:
        (C,) float32.
    """
    x, masks = np.asarray(pooled, np.float32), []
    for kernel, bias, activation in layers[:-1]:
        z = x @ kernel + (bias if bias is not None else 0.0)
        masks.append(z > 0 if activation == "relu" else None)
        x = np.maximum(z, 0.0) if activation == "relu" else z
    grad = layers[-1][0][:, class_index]
    for (kernel, _, _), mask in zip(reversed(layers[:-1]), reversed(masks)):
        grad = kernel @ (grad * mask if mask is not None else grad)
    return grad.astype(np.float32)


@dataclass
class Translation:
    """A translated model in memory, as saved and as read back.

    Attributes:
        meta: JSON-ready: weights sha256, `ModelInfo` fields, labels, input size, preprocessing,
            head kind, descriptions of both wirings, which block maps follow a ReLU, and for each
            graph {initializer name: array key}.
        graphs: {file name: serialized ONNX graph}.
        arrays: {array key: float32 array}, each held once whatever graphs use it.
    """

    meta: dict[str, Any]
    graphs: dict[str, bytes]
    arrays: dict[str, np.ndarray] = field(repr=False)

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    def weights_for(self, graph: str) -> dict[str, np.ndarray]:
        """{initializer name: array} for one graph's external weights."""
        return {name: self.arrays[key] for name, key in self.meta["initializers"][graph].items()}


# ------------------------------------------------------------------------------------- making one


def _head(model: Any, features_layer: str) -> tuple[list[dict[str, Any]] | None, dict[str, np.ndarray]]:
    """The head as dense layers ([{kernel, bias, activation}], arrays by key) when it is global
    average pooling then dense layers ('relu' or 'linear' inside, any activation last) and
    dropouts: Grad-CAM is then computed by hand (`head_gradient`, `cam`). (None, {}) otherwise."""
    from xception_core.weights.load import layers_after

    head = layers_after(model, model.get_layer(features_layer))
    if not head or type(head[0]).__name__ != "GlobalAveragePooling2D" or getattr(head[0], "keepdims", False):
        return None, {}
    dense = [layer for layer in head[1:] if type(layer).__name__ != "Dropout"]
    if not dense or any(type(layer).__name__ != "Dense" for layer in dense):
        return None, {}
    layers, arrays = [], {}
    for i, layer in enumerate(dense):
        activation = getattr(layer.activation, "__name__", "")
        if activation not in ("relu", "linear") and i < len(dense) - 1:
            return None, {}
        weights = layer.get_weights()
        arrays[f"head/{i}/kernel"] = np.asarray(weights[0], np.float32)
        if layer.use_bias:
            arrays[f"head/{i}/bias"] = np.asarray(weights[1], np.float32)
        layers.append({"kernel": f"head/{i}/kernel", "bias": f"head/{i}/bias" if layer.use_bias else None,
                       "activation": activation})
    return layers, arrays


def _is_relu(layer: Any) -> bool:
    if type(layer).__name__ == "ReLU":
        return True
    return type(layer).__name__ == "Activation" and getattr(layer.activation, "__name__", "") == "relu"


def translate(loaded: LoadedModel, labels: Sequence[str], weights_sha256: str, *, precision: str = "fp32",
              calibration: Sequence[np.ndarray] = ()) -> Translation:
    """Translates a classifier from `load_model` (imports Keras and the translator: TensorFlow).

    Args:
        loaded: A model with a classifier, either wiring.
        labels: Its class names, one per output.
        weights_sha256: Of the weights file it was loaded from (names the translation).
        precision: 'int8' adds the quantized forward (calibrated on `calibration`).
        calibration: Preprocessed (S, S, 3) images for int8.
    """
    from xception_core.model import rewire
    from xception_core.runtime.introspection import describe, reference_description
    from xception_core.runtime.onnx import SharedArrays, to_onnx_parts

    model, info = loaded.model, loaded.info
    if info.outputs == "features":
        raise ValueError("only a model with a classifier (include_top=True) is translated for serving")
    classes = int(model.outputs[0].shape[-1])
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a classifier of {classes} classes")
    layers = info.arch.block_outputs(info.variant)
    shared = SharedArrays()  # the two graphs of one model: equal arrays become one
    graphs, by_id, arrays, initializers = {}, {}, {}, {}
    for name, outputs in ((FORWARD, {}), (BLOCKS, {"block_maps": layers})):
        proto, weights = to_onnx_parts(model, info.features_layer, shared=shared, **outputs)
        graphs[name] = proto.SerializeToString()
        names = {}
        for init, array in weights.items():
            key = by_id.setdefault(id(array), f"a{len(by_id)}")
            arrays[key] = array
            names[init] = key
        initializers[name] = names
    head, head_arrays = _head(model, info.features_layer)
    arrays.update(head_arrays)
    other = "article" if info.variant == "paper" else "paper"
    descriptions = {info.variant: describe(model, info.variant).to_dict(layers=True),
                    other: describe(rewire(loaded, other).model, other).to_dict(layers=True),
                    REFERENCE: reference_description().to_dict(layers=True)}
    meta = {
        "translator_version": TRANSLATOR_VERSION, "weights_sha256": weights_sha256,
        "info": dataclasses.asdict(info), "labels": list(labels), "input_size": loaded.input_size,
        "classes": classes, "preprocessing": PREPROCESSING, "head": head, "descriptions": descriptions,
        "block_maps": layers, "after_relu": {b: _is_relu(model.get_layer(layer)) for b, layer in layers.items()},
        "initializers": initializers,
    }
    translation = Translation(meta, graphs, arrays)
    if precision == "int8":
        add_int8(translation, calibration)
    return translation


def add_int8(translation: Translation, calibration: Sequence[np.ndarray]) -> None:
    """Adds the quantized forward (ONNX Runtime static int8) from the fp32 graph: no TensorFlow.

    Raises:
        ValueError: no calibration images; whatever the quantizer raises.
    """
    import onnx
    from onnx import numpy_helper

    if not len(calibration):
        raise ValueError("int8 needs calibration images")
    proto = onnx.load_from_string(translation.graphs[FORWARD])
    weights = translation.weights_for(FORWARD)
    inline = [t for t in proto.graph.initializer if t.name not in weights]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(inline + [numpy_helper.from_array(a, n) for n, a in weights.items()])
    translation.graphs[INT8] = quantize_int8(proto, list(calibration)).SerializeToString()


# ------------------------------------------------------------------------------------- files


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def save(translation: Translation, folder: Path) -> Path:
    """Writes `translation` into `folder` (each file atomically, the manifest last, so a reader
    never sees a manifest naming files that are not all there). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout, offset, chunks = {}, 0, []
    for key, array in translation.arrays.items():
        a = np.ascontiguousarray(array, np.float32)
        layout[key] = {"offset": offset, "shape": list(a.shape)}
        pad = -a.nbytes % ALIGN
        chunks.append(a.tobytes() + b"\0" * pad)
        offset += a.nbytes + pad
    blobs = {**translation.graphs, WEIGHTS: b"".join(chunks)}
    for name, data in blobs.items():
        write_atomically(folder / name, lambda path, data=data: path.write_bytes(data))
    manifest = {**translation.meta, "arrays": layout, "files": {name: _sha256(data) for name, data in blobs.items()}}
    text = json.dumps(manifest, indent=1, sort_keys=True)
    write_atomically(folder / MANIFEST, lambda path: path.write_text(text + "\n", encoding="utf-8"))
    return folder


def open_translation(folder: Path, weights_sha256: str, *, precision: str = "fp32") -> Translation | None:
    """The translation in `folder`, every file read once and checked against its manifest; None
    when there is none, or it is for other weights, another translator, lacks the int8 graph
    `precision` asks for, or any file is missing or does not match its sha256 (logged)."""
    folder = Path(folder)
    problem = "no translation yet"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("translator_version") != TRANSLATOR_VERSION:
            problem = "made by another translator version"
        elif manifest.get("weights_sha256") != weights_sha256:
            problem = "made from other weights"
        elif precision == "int8" and INT8 not in files:
            problem = "no int8 graph"
        elif not {FORWARD, BLOCKS, WEIGHTS} <= set(files):
            problem = "files missing from its manifest"
        else:
            blobs = {}
            for name, digest in files.items():
                data = (folder / name).read_bytes()  # hashed as read: what is checked is what is served
                if _sha256(data) != digest:
                    problem = f"{name} does not match its sha256 (damaged or altered)"
                    break
                blobs[name] = data
            else:
                buffer = np.frombuffer(blobs.pop(WEIGHTS), np.uint8)
                arrays = {}
                for key, where in manifest["arrays"].items():
                    count = int(np.prod(where["shape"], dtype=np.int64))
                    start = where["offset"]
                    arrays[key] = buffer[start:start + 4 * count].view(np.float32).reshape(where["shape"])
                meta = {k: v for k, v in manifest.items() if k not in ("arrays", "files")}
                return Translation(meta, blobs, arrays)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    if problem != "no translation yet":
        logger.warning("translation in %s not used: %s; translating again", folder.name, problem)
    return None


# ------------------------------------------------------------------------------------- serving it


class TranslatedModel:
    """A translated classifier served on ONNX Runtime: the interface of `Classifier` (forward,
    gradcam, warm_up, classes, input_size, info, backend, precision) plus what the explorer needs
    (`blocks_forward`, `after_relu`, `description`). Thread-safe.

    Args:
        translation: From `translate` or `open_translation`.
        precision: 'fp32', or 'int8' when the translation holds the int8 graph (else fp32, logged).
        threads: ONNX Runtime intra-op threads (default: every CPU this process may use).
        all_blocks: Run the fp32 forward in the all-blocks session from the start (a model the
            explorer will use: one session instead of two).
    """

    backend = "onnx"

    def __init__(self, translation: Translation, *, precision: str = "fp32", threads: int | None = None,
                 all_blocks: bool = False):
        meta = translation.meta
        self.translation, self.threads = translation, threads
        self.info = ModelInfo(**meta["info"])
        self.labels: tuple[str, ...] = tuple(meta["labels"])
        self.classes: int = int(meta["classes"])
        self.input_size: int = int(meta["input_size"])
        self.after_relu: dict[str, bool] = dict(meta["after_relu"])
        self.name = f"{self.info.preset or 'model'}-{translation.weights_sha256[:12]}"
        arrays = translation.arrays
        self._head = None if meta["head"] is None else [
            (arrays[layer["kernel"]], arrays[layer["bias"]] if layer["bias"] else None, layer["activation"])
            for layer in meta["head"]]
        if precision == "int8" and INT8 not in translation.graphs:
            logger.warning("no int8 graph in this translation; running fp32")
            precision = "fp32"
        self._blocks: OnnxForward | None = None
        self._lock = threading.Lock()
        if precision == "int8":
            self.runner = OnnxForward(translation.graphs[INT8], threads=threads, precision="int8")
        elif all_blocks:  # one session for the forward and the explorer's pass (see `blocks_forward`)
            self.runner = self._blocks = OnnxForward(translation.graphs[BLOCKS], translation.weights_for(BLOCKS),
                                                     threads=threads)
        else:
            self.runner = OnnxForward(translation.graphs[FORWARD], translation.weights_for(FORWARD), threads=threads)
        self.precision = self.runner.precision

    @property
    def has_cam(self) -> bool:
        """Whether Grad-CAM is computed here (dense layers on the pooled features); otherwise a
        Keras path must."""
        return self._head is not None

    def description(self, variant: str) -> ModelDescription:
        """The block table of the model in a wiring ('paper' or 'article'), or of the reference
        (`REFERENCE`: `introspection.reference_description()`)."""
        key = variant if variant == REFERENCE else get_variant(variant).name
        return ModelDescription.from_dict(self.translation.meta["descriptions"][key])

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, S, S, 3) float32 in [-1, 1] → (features (N, h, w, 2048), probabilities (N, classes))."""
        batch = np.asarray(batch, dtype=np.float32)
        expected = (self.input_size, self.input_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"batch must have shape (N, {expected[0]}, {expected[1]}, 3), got {batch.shape}")
        features, out = self.runner(batch)
        return features, softmax(out) if self.info.outputs == "logits" else out

    def gradcam(self, features: np.ndarray, class_index: int) -> np.ndarray:
        """(h, w) Grad-CAM in [0, 1] of one class from (h, w, 2048) features: `cam` with the
        head's gradient (`head_gradient`; for one dense layer, its kernel's column).

        Raises:
            ValueError: a class index out of range.
            NotImplementedError: the head is not dense layers (`has_cam` is False).
        """
        if not 0 <= class_index < self.classes:
            raise ValueError(f"class_index must be in [0, {self.classes}), got {class_index}")
        if self._head is None:
            raise NotImplementedError("Grad-CAM of this head needs its Keras model")
        f = np.asarray(features, np.float32)
        return cam(f, head_gradient(f.mean(axis=(0, 1)), self._head, class_index))

    def warm_up(self) -> None:
        """Runs the forward once, so the first user does not pay ONNX Runtime's first-run costs."""
        self.forward(np.zeros((1, self.input_size, self.input_size, 3), np.float32))

    def blocks_forward(self) -> OnnxForward:
        """The all-blocks pass (every block's float16 map and channel means, and the output), built
        on first use and kept; its weights are the forward's arrays, not a copy.

        From then on the fp32 forward runs in this session too (asking for the features and the
        output only) and the forward's own session is let go: each ONNX Runtime session keeps its
        own re-blocked copy of the weights (~130 MB for Xception), and the extra float16 casts and
        means cost ~4% of a forward (bench/README.md)."""
        with self._lock:
            if self._blocks is None:
                self._blocks = OnnxForward(self.translation.graphs[BLOCKS], self.translation.weights_for(BLOCKS),
                                           threads=self.threads)
                if self.precision == "fp32":  # the int8 graph stays: it is another network
                    self.runner = self._blocks  # a call in flight keeps the old session until it returns
            return self._blocks

    def block_output_names(self) -> list[str]:
        """The all-blocks pass's outputs a record is made from."""
        return [n for name in self.after_relu for n in (name, means_name(name))] + [OUTPUT]

