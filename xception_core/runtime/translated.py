"""A translated model cached next to its weights: what a serving process reads instead of Keras.

`translate(loaded, labels)` (the one step that needs TensorFlow) turns a classifier from
`load_model` into a `Translation`: the folded ONNX graph of the forward (features and output), the
all-blocks graph the explorer runs (every block's map and channel means, `ActivationExplorer`),
their weights once (arrays shared by both graphs), the label set, input size, preprocessing, the
head's dense kernel when the head is global-average pooling + one dense layer (then Grad-CAM is the
class activation map, `cam`), the block table of both wirings (`ModelDescription`) and which block
outputs follow a ReLU; and for both wirings everything else serving reads: the other wiring's
all-blocks graph (Explore › Article vs paper), each wiring's operation pass (every layer output
Explore › Inside one operation reads, `pass_layers`), the separable blocks' unfolded weights
(`operation_params`), and the Keras files the Graph sub-tab shows and offers (the weight-free
graph document for Netron and the full `.keras`, made here, by the process that has TensorFlow). `save` writes it into a folder with `xception_core.files.write_atomically`,
the manifest last, holding each file's sha256; `open_translation` reads it back, checking every
byte it reads against the manifest, the weights' sha256 and `TRANSLATOR_VERSION`, and returns None
(saying why) for anything else: a missing, stale or tampered translation is made again, never
served. `TranslatedModel` serves it: forward, Grad-CAM and the all-blocks pass on ONNX Runtime,
NumPy only besides (this module imports no Keras or TensorFlow at import time; only `translate`
does, inside).

Layout of a folder (`translation_dir`: `<cache_dir>/translated/<weights sha256 + version>`):
`forward.onnx`, `blocks.onnx` (graphs whose large weights are external; `blocks.onnx` is the
model's own wiring), `blocks-<wiring>.onnx` (the other wiring), `operation-<wiring>.onnx` (both),
`weights.bin` (their weights, float32, 64-byte aligned, each array once), `params.bin` (the
operation view's unfolded weights, same layout, memory-mapped on first use: a process that never
opens the view never holds them), `graph-<wiring>.json` and `model-<wiring>.keras` (the exports,
streamed from disk when asked for), `forward-int8.onnx` (self-contained, when int8 was asked for:
quantized from the cached fp32 graph, no TensorFlow needed) and `manifest.json`. Every file's
sha256 is checked when the folder is opened, big ones read in chunks (never held whole).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xception_core.arch.graph import separable_names
from xception_core.arch.spec import get_variant
from xception_core.files import write_atomically
from xception_core.runtime.introspection import ModelDescription
from xception_core.runtime.operation import BlockParams, pass_layers
from xception_core.runtime.ort import OUTPUT, OnnxForward, means_name, quantize_int8, softmax
from xception_core.weights.presets import preprocessing_for
from xception_core.weights.source import ModelInfo

if TYPE_CHECKING:
    from xception_core.model import LoadedModel

__all__ = ["FORWARD_ONLY", "TRANSLATOR_VERSION", "Translation", "TranslatedModel", "cam", "export_file",
           "open_translation", "save", "translate", "translate_forward", "translation_dir"]

logger = logging.getLogger(__name__)

# Bump when the graphs, the weights layout or the manifest change: older translations are rebuilt.
# 3: the manifest's model record names its architecture; 4: both wirings' graphs, the operation
# pass and its weights, the exports.
TRANSLATOR_VERSION = 4
MANIFEST = "manifest.json"
FORWARD, BLOCKS, WEIGHTS, INT8 = "forward.onnx", "blocks.onnx", "weights.bin", "forward-int8.onnx"
PARAMS = "params.bin"
VARIANTS = ("paper", "article")
CHUNK = 1 << 20  # bytes hashed at a time for the files that are streamed, never held whole
ALIGN = 64  # bytes: each array starts on a cache line
REFERENCE = "reference"  # the descriptions' key of Keras's 299×299 ImageNet Xception, whatever the weights


def blocks_graph(own: str, variant: str) -> str:
    """File name of a wiring's all-blocks graph in a translation of a model wired `own`."""
    return BLOCKS if variant == own else f"blocks-{variant}.onnx"


def operation_graph(variant: str) -> str:
    """File name of a wiring's operation pass (the layer outputs `pass_layers(variant)`)."""
    return f"operation-{variant}.onnx"


def export_name(kind: str, variant: str) -> str:
    """File name of a wiring's export in a translation: kind 'graph' (Netron's JSON) or 'keras'."""
    return f"graph-{variant}.json" if kind == "graph" else f"model-{variant}.keras"


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
        files: {file name: its bytes (just translated) or its path (saved, or opened and checked)}:
            the files read only when a feature asks for them (`PARAMS` and the exports).
    """

    meta: dict[str, Any]
    graphs: dict[str, bytes]
    arrays: dict[str, np.ndarray] = field(repr=False)
    files: dict[str, bytes | Path] = field(default_factory=dict, repr=False)
    _params: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False)
    _params_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def weights_sha256(self) -> str:
        return self.meta["weights_sha256"]

    @property
    def variant(self) -> str:
        """The wiring of the model that was translated ('paper' or 'article')."""
        return self.meta["info"]["variant"]

    def weights_for(self, graph: str) -> dict[str, np.ndarray]:
        """{initializer name: array} for one graph's external weights."""
        return {name: self.arrays[key] for name, key in self.meta["initializers"][graph].items()}

    def params(self) -> dict[str, np.ndarray]:
        """The operation view's weights ({'blockN_sepconvK/depthwise': array, ...}, as
        `BlockParams.to_arrays` names them), memory-mapped from `PARAMS` on first call."""
        with self._params_lock:
            if self._params is None:
                source = self.files[PARAMS]
                buffer = (np.memmap(source, np.uint8, mode="r") if isinstance(source, Path)
                          else np.frombuffer(source, np.uint8))
                self._params = _arrays(buffer, self.meta["params"])
            return self._params

    def export(self, kind: str, variant: str) -> bytes | Path:
        """A wiring's export: kind 'graph' (the weight-free JSON Netron shows) or 'keras' (the full
        `.keras`), as bytes or as the checked file's path.

        Raises:
            LookupError: a translation made without exports.
        """
        name = export_name(kind, get_variant(variant).name)
        if name not in self.files:
            raise LookupError(f"this translation holds no {kind} export of the {variant} wiring")
        return self.files[name]


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


Exporter = Callable[[Any], tuple[bytes, bytes, dict[str, str]]]


def _classes(loaded: LoadedModel, labels: Sequence[str]) -> int:
    """The classifier's width, checked: a model to serve has a classifier and one label a class."""
    if loaded.info.outputs == "features":
        raise ValueError("only a model with a classifier (include_top=True) is translated for serving")
    classes = int(loaded.model.outputs[0].shape[-1])
    if len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a classifier of {classes} classes")
    return classes


def translate(loaded: LoadedModel, labels: Sequence[str], weights_sha256: str, *, precision: str = "fp32",
              calibration: Sequence[np.ndarray] = (), exporter: Exporter | None = None) -> Translation:
    """Translates a classifier from `load_model` (imports Keras and the translator: TensorFlow),
    in both wirings: everything a serving process reads.

    Args:
        loaded: A model with a classifier, either wiring.
        labels: Its class names, one per output.
        weights_sha256: Of the weights file it was loaded from (names the translation).
        precision: 'int8' adds the quantized forward (calibrated on `calibration`).
        calibration: Preprocessed (S, S, 3) images for int8.
        exporter: Keras model → (Netron's graph document, the full `.keras`, their fingerprints
            {'config', 'weights'}), run on each wiring (`xception_core.io.export.export_files`,
            which sits above this layer); None: a translation without exports.
    """
    from xception_core.model import rewire
    from xception_core.runtime.introspection import describe, reference_description
    from xception_core.runtime.onnx import SharedArrays, to_onnx_parts

    model, info = loaded.model, loaded.info
    classes = _classes(loaded, labels)
    wired = {v: loaded if v == info.variant else rewire(loaded, v) for v in VARIANTS}
    maps = {v: info.arch.block_outputs(v) for v in VARIANTS}
    graphs, by_content, arrays, initializers = {}, {}, {}, {}
    work = [(FORWARD, loaded, {})]
    for v in VARIANTS:
        work += [(blocks_graph(info.variant, v), wired[v], {"block_maps": maps[v]}),
                 (operation_graph(v), wired[v], {"extra_outputs": pass_layers(v, info.arch.spec)})]
    fold_cache: dict = {}  # each conv folded once for the five graphs (`rewire` keeps the weights)
    for name, which, outputs in work:
        proto, weights = to_onnx_parts(which.model, which.info.features_layer, shared=SharedArrays(), fold_cache=fold_cache,
                                       **outputs)
        graphs[name] = proto.SerializeToString()
        names = {}
        for init, array in weights.items():
            # Every graph of both wirings reads the same weights: equal arrays are stored once,
            # whatever each translation named them.
            a = _contiguous(array)
            content = (a.shape, hashlib.blake2b(a.data, digest_size=16).digest())
            key = by_content.setdefault(content, f"a{len(by_content)}")
            arrays.setdefault(key, a)
            names[init] = key
        initializers[name] = names
    head, head_arrays = _head(model, info.features_layer)
    arrays.update(head_arrays)
    descriptions = {v: describe(wired[v].model, v).to_dict(layers=True) for v in VARIANTS}
    descriptions[REFERENCE] = reference_description().to_dict(layers=True)
    params = {k: a for b in info.arch.spec.blocks if separable_names(b)
              for k, a in BlockParams.from_model(model, b.name, info.arch.spec).to_arrays().items()}
    params_layout, params_bytes = _layout(params)
    files: dict[str, bytes | Path] = {PARAMS: params_bytes}
    exports = {}
    for v in VARIANTS if exporter is not None else ():
        files[export_name("graph", v)], files[export_name("keras", v)], exports[v] = exporter(wired[v].model)
    meta = {
        "translator_version": TRANSLATOR_VERSION, "weights_sha256": weights_sha256,
        "info": dataclasses.asdict(info), "labels": list(labels), "input_size": loaded.input_size,
        "classes": classes, "preprocessing": preprocessing_for(info.preset).describe(), "head": head,
        "descriptions": descriptions,
        "block_maps": maps,
        "after_relu": {v: {b: _is_relu(wired[v].model.get_layer(layer)) for b, layer in maps[v].items()}
                       for v in VARIANTS},
        "initializers": initializers, "params": params_layout, "exports": exports,
    }
    translation = Translation(meta, graphs, arrays, files)
    if precision == "int8":
        add_int8(translation, calibration)
    return translation


FORWARD_ONLY = "forward"  # `meta["kind"]` of a translation holding the forward alone


def translate_forward(loaded: LoadedModel, labels: Sequence[str], weights_sha256: str) -> Translation:
    """Translates a classifier of any registered architecture (Inception V3 for the comparison)
    into its forward alone: the folded ONNX graph of (features, output), its weights, labels,
    input size, preprocessing, the dense head (Grad-CAM by hand) and its block table. No second
    wiring, all-blocks pass or operation view: `TranslatedModel` serves its forward and Grad-CAM.
    Imports Keras and the translator (TensorFlow)."""
    from xception_core.runtime.introspection import describe
    from xception_core.runtime.onnx import SharedArrays, to_onnx_parts

    model, info = loaded.model, loaded.info
    classes = _classes(loaded, labels)
    proto, weights = to_onnx_parts(model, info.features_layer, shared=SharedArrays())
    arrays = {f"a{i}": _contiguous(a) for i, a in enumerate(weights.values())}
    head, head_arrays = _head(model, info.features_layer)
    arrays.update(head_arrays)
    meta = {
        "translator_version": TRANSLATOR_VERSION, "kind": FORWARD_ONLY, "weights_sha256": weights_sha256,
        "info": dataclasses.asdict(info), "labels": list(labels), "input_size": loaded.input_size,
        "classes": classes, "preprocessing": preprocessing_for(info.preset).describe(), "head": head,
        "descriptions": {info.variant: describe(model, info.variant, info.arch.spec).to_dict(layers=True)},
        "after_relu": {info.variant: {}}, "exports": {},
        "initializers": {FORWARD: {init: f"a{i}" for i, init in enumerate(weights)}},
    }
    return Translation(meta, {FORWARD: proto.SerializeToString()}, arrays, {})


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


def _layout(arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], bytes]:
    """({key: {offset, shape}}, the arrays' float32 bytes, each 64-byte aligned)."""
    layout, offset, chunks = {}, 0, []
    for key, array in arrays.items():
        a = _contiguous(array)
        layout[key] = {"offset": offset, "shape": list(a.shape)}
        pad = -a.nbytes % ALIGN
        chunks.append(a.tobytes() + b"\0" * pad)
        offset += a.nbytes + pad
    return layout, b"".join(chunks)


def _contiguous(array: Any) -> np.ndarray:
    """A C-contiguous float32 array of the same shape (0-d stays 0-d, unlike `np.ascontiguousarray`)."""
    a = np.asarray(array, np.float32)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _arrays(buffer: np.ndarray, layout: dict[str, Any]) -> dict[str, np.ndarray]:
    """The inverse of `_layout`: float32 views of a uint8 buffer (no copy)."""
    arrays = {}
    for key, where in layout.items():
        count = int(np.prod(where["shape"], dtype=np.int64))
        start = where["offset"]
        arrays[key] = buffer[start:start + 4 * count].view(np.float32).reshape(where["shape"])
    return arrays


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save(translation: Translation, folder: Path) -> Path:
    """Writes `translation` into `folder` (each file atomically, the manifest last, so a reader
    never sees a manifest naming files that are not all there). Returns the folder. The files
    read on demand are let go from memory: `translation.files` names them on disk from then on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layout, weights = _layout(translation.arrays)
    digests = {}
    for name, data in {**translation.graphs, WEIGHTS: weights}.items():
        write_atomically(folder / name, lambda path, data=data: path.write_bytes(data))
        digests[name] = _sha256(data)
    for name, data in translation.files.items():
        if isinstance(data, Path):  # already on disk (a translation opened and saved again)
            if data.resolve() != (folder / name).resolve():
                write_atomically(folder / name, lambda path, data=data: path.write_bytes(data.read_bytes()))
            digests[name] = _file_sha256(folder / name)
        else:
            write_atomically(folder / name, lambda path, data=data: path.write_bytes(data))
            digests[name] = _sha256(data)
    manifest = {**translation.meta, "arrays": layout, "files": digests}
    text = json.dumps(manifest, indent=1, sort_keys=True)
    write_atomically(folder / MANIFEST, lambda path: path.write_text(text + "\n", encoding="utf-8"))
    for name, data in translation.files.items():
        if not isinstance(data, Path):
            translation.files[name] = folder / name
    return folder


def _lazy(name: str) -> bool:
    """Whether a file is read on demand (checked when opened, read when a feature asks)."""
    return name == PARAMS or name.startswith(("graph-", "model-"))


def required_files(meta: dict[str, Any]) -> set[str]:
    """Every file a translation of this version holds (int8 aside; the exports it was made with)."""
    if meta.get("kind") == FORWARD_ONLY:
        return {FORWARD, WEIGHTS}
    own = meta["info"]["variant"]
    return ({FORWARD, WEIGHTS, PARAMS} | {n for v in VARIANTS for n in (blocks_graph(own, v), operation_graph(v))}
            | {export_name(kind, v) for v in meta["exports"] for kind in ("graph", "keras")})


def open_translation(folder: Path, weights_sha256: str, *, precision: str = "fp32") -> Translation | None:
    """The translation in `folder`, every file checked against its manifest (the graphs and
    weights as read; the files read on demand in chunks); None when there is none, or it is for
    other weights, another translator, lacks the int8 graph `precision` asks for, or any file is
    missing or does not match its sha256 (logged)."""
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
        elif not required_files(manifest) <= set(files):
            problem = "files missing from its manifest"
        else:
            blobs, lazy = {}, {}
            for name, digest in files.items():
                if _lazy(name):  # hashed in chunks: what is served later is this checked file
                    ok, lazy[name] = _file_sha256(folder / name) == digest, folder / name
                else:
                    data = (folder / name).read_bytes()  # hashed as read: what is checked is what is served
                    ok, blobs[name] = _sha256(data) == digest, data
                if not ok:
                    problem = f"{name} does not match its sha256 (damaged or altered)"
                    break
            else:
                arrays = _arrays(np.frombuffer(blobs.pop(WEIGHTS), np.uint8), manifest["arrays"])
                meta = {k: v for k, v in manifest.items() if k not in ("arrays", "files")}
                return Translation(meta, blobs, arrays, lazy)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"unreadable ({type(exc).__name__})"
    if problem != "no translation yet":
        logger.warning("translation in %s not used: %s; translating again", folder.name, problem)
    return None


def export_file(translation: Translation, kind: str, variant: str, write: Any) -> None:
    """Writes a wiring's export (see `Translation.export`) through `write(chunk: bytes)`, in chunks."""
    source = translation.export(kind, variant)
    if isinstance(source, Path):
        with open(source, "rb") as f:
            while chunk := f.read(CHUNK):
                write(chunk)
    else:
        write(source)


# ------------------------------------------------------------------------------------- serving it


class TranslatedModel:
    """A translated classifier served on ONNX Runtime: the interface of `Classifier` (forward,
    gradcam, warm_up, classes, input_size, info, backend, precision) plus what the explorer needs
    (`blocks_forward`, `after_relu`, `description`, `operation_pass`, `operation_params`, `wiring`).
    Thread-safe.

    Args:
        translation: From `translate` or `open_translation`.
        precision: 'fp32', or 'int8' when the translation holds the int8 graph (else fp32, logged).
        threads: ONNX Runtime intra-op threads (default: every CPU this process may use).
        all_blocks: Run the fp32 forward in the all-blocks session from the start (a model the
            explorer will use: one session instead of two).
        variant: The wiring served ('paper' or 'article'; default the translated model's own).
            Another wiring than the translation's runs its forward in its all-blocks session.
    """

    backend = "onnx"

    def __init__(self, translation: Translation, *, precision: str = "fp32", threads: int | None = None,
                 all_blocks: bool = False, variant: str | None = None):
        meta = translation.meta
        self.translation, self.threads = translation, threads
        own = translation.variant
        self.variant = get_variant(variant).name if variant else own
        self.info = dataclasses.replace(ModelInfo(**meta["info"]), variant=self.variant)
        self.labels: tuple[str, ...] = tuple(meta["labels"])
        self.classes: int = int(meta["classes"])
        self.input_size: int = int(meta["input_size"])
        self.after_relu: dict[str, bool] = dict(meta["after_relu"][self.variant])
        self.name = f"{self.info.preset or 'model'}-{translation.weights_sha256[:12]}"
        if self.variant != own:
            self.name += f"-{self.variant}"
        arrays = translation.arrays
        self._head = None if meta["head"] is None else [
            (arrays[layer["kernel"]], arrays[layer["bias"]] if layer["bias"] else None, layer["activation"])
            for layer in meta["head"]]
        if precision == "int8" and (INT8 not in translation.graphs or self.variant != own):
            logger.warning("no int8 graph in this translation for the %s wiring; running fp32", self.variant)
            precision = "fp32"
        self._blocks: OnnxForward | None = None
        self._operation: OnnxForward | None = None
        self._wirings: dict[str, TranslatedModel] = {self.variant: self}
        self._lock = threading.Lock()
        if precision == "int8":
            self.runner = OnnxForward(translation.graphs[INT8], threads=threads, precision="int8")
        elif all_blocks or self.variant != own:  # one session for the forward and the explorer's pass
            # Another wiring than the translation's serves Article vs paper, now and then: lean.
            self.runner = self._blocks = self._session(blocks_graph(own, self.variant), lean=self.variant != own)
        else:
            self.runner = OnnxForward(translation.graphs[FORWARD], translation.weights_for(FORWARD), threads=threads)
        self.precision = self.runner.precision

    def _session(self, graph: str, *, lean: bool = False) -> OnnxForward:
        """A session of one of the translation's graphs (`OnnxForward`'s `lean`: no weights of its own)."""
        return OnnxForward(self.translation.graphs[graph], self.translation.weights_for(graph), threads=self.threads,
                           lean=lean)

    @property
    def has_cam(self) -> bool:
        """Whether Grad-CAM is computed here (dense layers on the pooled features); otherwise a
        Keras path must."""
        return self._head is not None

    def wiring(self, variant: str) -> "TranslatedModel":
        """The same weights in a wiring ('paper' or 'article'), from the same translation (no
        TensorFlow): this model for its own wiring, else one made on first call and kept, whose
        forward is its all-blocks pass (built then: a second of ONNX Runtime)."""
        name = get_variant(variant).name
        with self._lock:
            model = self._wirings.get(name)
            if model is None:
                model = TranslatedModel(self.translation, threads=self.threads, variant=name)
                model._wirings = self._wirings  # one family: each wiring is made once
                self._wirings[name] = model
            return model

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
                self._blocks = self._session(blocks_graph(self.translation.variant, self.variant),
                                             lean=self.variant != self.translation.variant)
                if self.precision == "fp32":  # the int8 graph stays: it is another network
                    self.runner = self._blocks  # a call in flight keeps the old session until it returns
            return self._blocks

    def block_output_names(self) -> list[str]:
        """The all-blocks pass's outputs a record is made from."""
        return [n for name in self.after_relu for n in (name, means_name(name))] + [OUTPUT]

    def operation_pass(self) -> OnnxForward:
        """The pass Explore › Inside one operation reads (`LayerSource`: every layer output of
        `pass_layers` of this wiring, NHWC float32), built on first use and kept; lean (one click
        runs it once: holding no weights of its own matters more than its speed)."""
        with self._lock:
            if self._operation is None:
                self._operation = self._session(operation_graph(self.variant), lean=True)
            return self._operation

    def operation_params(self, block: str) -> BlockParams:
        """One block's unfolded weights for the operation view (the same in both wirings)."""
        return BlockParams.from_arrays(block, self.translation.params())
