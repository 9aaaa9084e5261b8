"""Model export: a weight-free graph file for Netron and a full ``.keras`` file, cached on disk.

Graph file (``export_graph``): a TensorFlow.js "layers-model" JSON document -- the model's own Keras
config (``model.to_json()``) plus a weights *manifest* that lists every weight's name, shape and dtype
but points at no weight data (``paths: []``). Netron 9.3.3 opens it with its Keras reader and shows
every layer (class, name, full config), the weight shapes in each node (``kernel <3x3x3x32>``) and the
input shape, in Keras colours, from a file a fraction of the size of the weights. The alternatives do
worse: a config-only ``.keras`` zip and a bare ``model.to_json()`` file show no shapes at all (and the
latter makes Netron request three sibling files that 404); ONNX (tf2onnx) folds BatchNorm and loses
the Keras layer names. Netron's Keras reader draws no per-edge tensor shapes for any Keras input.

Full file (``export_keras``): ``model.save()`` -- loadable with ``keras.models.load_model``.

Both are cached: the file name carries a hash of the model config (architecture, layer names, input
shape, variant wiring) and, for ``.keras``, a weights fingerprint, so a file is written only when that
changes; files are written through `xception_core.files.write_atomically` (never seen half-written), and older
files of the same export name and kind are removed afterwards.

Pure Keras/NumPy: no gradio, no fastapi.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from xception_core.files import PathLocks, write_atomically, write_bytes_atomically

if TYPE_CHECKING:
    import keras

__all__ = [
    "ExportedFile",
    "ExportKind",
    "config_fingerprint",
    "export_files",
    "export_graph",
    "export_keras",
    "graph_document",
    "list_exports",
    "place_export",
    "weights_fingerprint",
]

ExportKind = Literal["graph", "keras"]

# Bump when the graph document layout changes: old cached files then no longer match.
_GRAPH_FORMAT = 1
_HASH_CHARS = 16

_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_NAME_RE = re.compile(rf"^{_NAME}$")
# <name>.graph-<config>.json and <name>.keras-<config>-<weights>.keras; nothing else is "ours".
_GRAPH_FILE = re.compile(rf"^(?P<name>{_NAME})\.graph-(?P<config>[0-9a-f]{{{_HASH_CHARS}}})\.json$")
_KERAS_FILE = re.compile(
    rf"^(?P<name>{_NAME})\.keras-(?P<config>[0-9a-f]{{{_HASH_CHARS}}})-(?P<weights>[0-9a-f]{{{_HASH_CHARS}}})\.keras$"
)

# The weight dtypes Netron's TF.js reader knows; others are left out of the manifest (it would reject them).
_NETRON_DTYPES = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
)

# Two threads exporting the same file take turns (the second then finds it written); the registry
# holds only the paths being written now.
_WRITING = PathLocks()


@dataclasses.dataclass(frozen=True)
class ExportedFile:
    """One file written by this module.

    Attributes:
        name: File name (what ``/models/{name}`` serves), e.g. ``xception-paper.graph-0123456789abcdef.json``.
        path: Absolute path.
        size: Size in bytes.
        kind: ``'graph'`` (weight-free, for Netron) or ``'keras'`` (full ``.keras`` with weights).
        model_name: The ``name`` given to the exporter.
        config_hash: Hash of the model config the file was made from.
        weights_hash: Weights fingerprint (``'keras'`` files only).
    """

    name: str
    path: Path
    size: int
    kind: ExportKind
    model_name: str
    config_hash: str
    weights_hash: str | None = None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"Invalid export name {name!r}: expected 1-64 letters, digits, '_' or '-', starting with a letter or digit."
        )


def _check_model(model: Any) -> None:
    import keras  # on first export only: listing exports needs no TensorFlow

    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model, received {type(model).__name__}.")


def config_fingerprint(model: keras.Model) -> str:
    """Hash of the model's architecture: its Keras config (layers, names, wiring, shapes) and Keras version.

    Returns:
        16 hex characters.
    """
    import keras  # on first export only: listing exports needs no TensorFlow

    _check_model(model)
    config = model.to_json(sort_keys=True)
    key = json.dumps([_GRAPH_FORMAT, keras.__version__, config])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:_HASH_CHARS]


def weights_fingerprint(model: keras.Model) -> str:
    """Hash of all weight values (name, shape, dtype, bytes); ~0.2 s for Xception's 88 MB on 2 cores.

    Returns:
        16 hex characters.
    """
    import keras  # on first export only: listing exports needs no TensorFlow

    _check_model(model)
    digest = hashlib.blake2b(digest_size=_HASH_CHARS // 2)
    for variable in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
        digest.update(f"{variable.path}|{array.shape}|{array.dtype.str}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


def _add_input_shape_hints(node: Any) -> None:
    """Copy each InputLayer's ``batch_shape`` to ``batch_input_shape``, the key Netron reads (Keras 2's name).

    Keras 3 still accepts ``batch_input_shape``, so the config stays loadable.
    """
    if isinstance(node, dict):
        config = node.get("config")
        if node.get("class_name") == "InputLayer" and isinstance(config, dict) and "batch_shape" in config:
            config.setdefault("batch_input_shape", config["batch_shape"])
        for value in node.values():
            _add_input_shape_hints(value)
    elif isinstance(node, list):
        for value in node:
            _add_input_shape_hints(value)


def graph_document(model: keras.Model) -> dict[str, Any]:
    """The weight-free graph document for Netron (a TF.js layers-model JSON without weight data).

    Returns:
        ``{"modelTopology": {"keras_version", "backend", "model_config"}, "weightsManifest":
        [{"paths": [], "weights": [{"name", "shape", "dtype"}, ...]}], ...}``; ``model_config`` is
        ``json.loads(model.to_json())`` (plus input-shape hints), so
        ``keras.models.model_from_json(json.dumps(doc["modelTopology"]["model_config"]))`` rebuilds
        the architecture.
    """
    import keras  # on first export only: listing exports needs no TensorFlow

    _check_model(model)
    config = json.loads(model.to_json())
    _add_input_shape_hints(config)
    weights = []
    for variable in model.weights:
        dtype = keras.backend.standardize_dtype(variable.dtype)
        if dtype in _NETRON_DTYPES:
            weights.append({"name": variable.path, "shape": [int(d) for d in variable.shape], "dtype": dtype})
    return {
        # No "format" key: Netron then labels it "TensorFlow.js Keras v<keras_version>".
        "generatedBy": f"xception_core.io.export (keras {keras.__version__})",
        "convertedBy": None,
        "modelTopology": {
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "model_config": config,
        },
        # No shard paths: Netron shows the weight shapes and fetches no weight file.
        "weightsManifest": [{"paths": [], "weights": weights}],
        "xception_explorer": {
            "note": "Weight-free graph for viewing; the weights are not included.",
            "config_hash": config_fingerprint(model),
            "graph_format": _GRAPH_FORMAT,
        },
    }


def _prune(export_dir: Path, keep: str, pattern: re.Pattern[str], model_name: str) -> None:
    """Remove older files of the same export name and kind (their architecture or weights changed)."""
    for other in export_dir.iterdir():
        match = pattern.match(other.name)
        if match and match["name"] == model_name and other.name != keep and other.is_file():
            other.unlink(missing_ok=True)


def export_files(model: keras.Model) -> tuple[bytes, bytes, dict[str, str]]:
    """Both exports of ``model`` in memory, for a cached translation to hold
    (`xception_core.runtime.translated.translate`'s ``exporter``): the graph document's JSON, the
    full ``.keras`` and ``{"config": config_fingerprint, "weights": weights_fingerprint}``, the
    hashes ``place_export`` names the files by."""
    import tempfile

    document = graph_document(model)
    graph = json.dumps(document, separators=(",", ":")).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="xception-export-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(str(path))
        data = path.read_bytes()
    config = document["xception_explorer"]["config_hash"]  # `config_fingerprint(model)`, made once
    return graph, data, {"config": config, "weights": weights_fingerprint(model)}


def export_graph(model: keras.Model, export_dir: Path, name: str) -> Path:
    """Write (or reuse) the weight-free graph file of ``model`` for Netron.

    Args:
        model: Any built ``keras.Model``.
        export_dir: Folder for exports (created if missing).
        name: Export name, e.g. ``'xception-paper'``; 1-64 of ``[A-Za-z0-9_-]``.

    Returns:
        Path of ``<export_dir>/<name>.graph-<config_hash>.json``; rewritten only when the config changed.

    Raises:
        ValueError: ``name`` is invalid or ``model`` is not a ``keras.Model``.
    """
    _check_name(name)
    _check_model(model)
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    path = (export_dir / f"{name}.graph-{config_fingerprint(model)}.json").resolve()
    with _WRITING.hold(path):
        if not path.is_file():
            data = json.dumps(graph_document(model), separators=(",", ":")).encode("utf-8")
            write_bytes_atomically(path, data)
            _prune(path.parent, path.name, _GRAPH_FILE, name)
    return path


def export_keras(
    model: keras.Model, export_dir: Path, name: str, weights_hash: str | None = None
) -> Path:
    """Write (or reuse) the full ``.keras`` file of ``model`` (architecture and weights).

    Args:
        model: Any built ``keras.Model``.
        export_dir: Folder for exports (created if missing).
        name: Export name, e.g. ``'xception-paper'``; 1-64 of ``[A-Za-z0-9_-]``.
        weights_hash: A fingerprint of the weights the caller already knows (e.g. a preset id hashed,
            16 hex characters or any string: it is hashed again); ``None`` hashes all weight values.

    Returns:
        Path of ``<export_dir>/<name>.keras-<config_hash>-<weights_hash>.keras``.

    Raises:
        ValueError: ``name`` is invalid or ``model`` is not a ``keras.Model``.
    """
    _check_name(name)
    _check_model(model)
    if weights_hash is None:
        weights_hash = weights_fingerprint(model)
    elif not re.fullmatch(rf"[0-9a-f]{{{_HASH_CHARS}}}", weights_hash):
        weights_hash = hashlib.sha256(weights_hash.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    path = (export_dir / f"{name}.keras-{config_fingerprint(model)}-{weights_hash}.keras").resolve()
    with _WRITING.hold(path):
        if not path.is_file():
            write_atomically(path, lambda tmp: model.save(str(tmp)))
            _prune(path.parent, path.name, _KERAS_FILE, name)
    return path


def place_export(export_dir: Path, name: str, kind: ExportKind, config_hash: str, weights_hash: str | None,
                 write: Callable[[Callable[[bytes], Any]], None]) -> Path:
    """Write (or reuse) an export made earlier (a cached translation's copy, no Keras needed),
    under the name ``export_graph`` / ``export_keras`` would give it.

    Args:
        export_dir: Folder for exports (created if missing).
        name: Export name (as for ``export_graph``).
        kind: ``'graph'`` or ``'keras'``.
        config_hash, weights_hash: The fingerprints the file was made with (``config_fingerprint``,
            ``weights_fingerprint``; ``weights_hash`` only for ``'keras'``), 16 hex characters.
        write: Called with a ``sink(chunk: bytes)``, feeds it the file's bytes.

    Returns:
        The file's path.
    """
    _check_name(name)
    hashes = [config_hash] + ([weights_hash] if kind == "keras" else [])
    if not all(isinstance(h, str) and re.fullmatch(rf"[0-9a-f]{{{_HASH_CHARS}}}", h) for h in hashes):
        raise ValueError(f"fingerprints must be {_HASH_CHARS} hex characters, got {hashes!r}")
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    file = f"{name}.graph-{config_hash}.json" if kind == "graph" else f"{name}.keras-{config_hash}-{weights_hash}.keras"
    path = (export_dir / file).resolve()

    def copy(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            write(out.write)

    with _WRITING.hold(path):
        if not path.is_file():
            write_atomically(path, copy)
            _prune(path.parent, path.name, _GRAPH_FILE if kind == "graph" else _KERAS_FILE, name)
    return path


def list_exports(export_dir: Path) -> list[ExportedFile]:
    """The files this module wrote in ``export_dir`` (by name pattern), sorted by name.

    Use their ``name`` as the allowlist of the ``/models/`` route. A missing folder gives ``[]``.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        return []
    found = []
    for path in export_dir.iterdir():
        graph = _GRAPH_FILE.match(path.name)
        full = None if graph else _KERAS_FILE.match(path.name)
        match = graph or full
        if match is None or path.is_symlink() or not path.is_file():
            continue
        found.append(
            ExportedFile(
                name=path.name,
                path=path.resolve(),
                size=path.stat().st_size,
                kind="graph" if graph else "keras",
                model_name=match["name"],
                config_hash=match["config"],
                weights_hash=None if graph else match["weights"],
            )
        )
    return sorted(found, key=lambda f: f.name)
