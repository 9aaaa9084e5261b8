"""Tests of xception_core.io.export: weight-free graph file, full .keras, caching, atomic names."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from xception_core.io.export import (
    ExportedFile,
    config_fingerprint,
    export_graph,
    export_keras,
    graph_document,
    list_exports,
    weights_fingerprint,
)


def tiny_model(filters: int = 4, name: str = "tiny") -> keras.Model:
    """A small Xception-like functional model: stem conv, separable conv, residual add, head."""
    inputs = keras.Input((16, 16, 3), name="input")
    x = keras.layers.Conv2D(filters, 3, strides=2, use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu", name="stem_act")(x)
    residual = keras.layers.Conv2D(8, 1, padding="same", use_bias=False, name="block1_residual_conv")(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="block1_sepconv1")(x)
    x = keras.layers.Add(name="block1_add")([x, residual])
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


@pytest.fixture(scope="module")
def xception() -> keras.Model:
    return keras.applications.Xception(weights=None, input_shape=(71, 71, 3))


def test_graph_is_weight_free_and_complete(tmp_path: Path, xception: keras.Model) -> None:
    path = export_graph(xception, tmp_path, "xception-paper")
    assert path.parent == tmp_path.resolve()
    assert path.name == f"xception-paper.graph-{config_fingerprint(xception)}.json"
    assert path.stat().st_size < 1_000_000  # the weights alone are 88 MB
    doc = json.loads(path.read_text())
    layers = doc["modelTopology"]["model_config"]["config"]["layers"]
    assert [layer["name"] for layer in layers] == [layer.name for layer in xception.layers]
    assert len(layers) > 130
    # Weight shapes for Netron, no weight data, no file to fetch.
    (manifest,) = doc["weightsManifest"]
    assert manifest["paths"] == []
    assert len(manifest["weights"]) == len(xception.weights)
    assert manifest["weights"][0] == {"name": "block1_conv1/kernel", "shape": [3, 3, 3, 32], "dtype": "float32"}
    assert all(set(w) == {"name", "shape", "dtype"} for w in manifest["weights"])
    # Input shape hint Netron reads.
    assert layers[0]["config"]["batch_input_shape"] == [None, 71, 71, 3]


def test_graph_config_rebuilds_the_architecture(tmp_path: Path) -> None:
    model = tiny_model()
    doc = json.loads(export_graph(model, tmp_path, "tiny").read_text())
    rebuilt = keras.models.model_from_json(json.dumps(doc["modelTopology"]["model_config"]))
    assert [layer.name for layer in rebuilt.layers] == [layer.name for layer in model.layers]
    assert rebuilt.count_params() == model.count_params()
    assert rebuilt.output.shape == model.output.shape


def test_graph_is_cached(tmp_path: Path) -> None:
    model = tiny_model()
    first = export_graph(model, tmp_path, "tiny")
    old = time.time() - 3600
    os.utime(first, (old, old))
    second = export_graph(model, tmp_path, "tiny")
    assert second == first
    assert first.stat().st_mtime == pytest.approx(old)  # not rewritten
    assert [f.name for f in list_exports(tmp_path)] == [first.name]


def test_graph_same_architecture_same_file(tmp_path: Path) -> None:
    # A fresh instance with other weights but the same config reuses the file.
    assert export_graph(tiny_model(), tmp_path, "tiny") == export_graph(tiny_model(), tmp_path, "tiny")


def test_graph_rebuilt_when_architecture_changes(tmp_path: Path) -> None:
    first = export_graph(tiny_model(filters=4), tmp_path, "tiny")
    second = export_graph(tiny_model(filters=6), tmp_path, "tiny")
    assert second != first
    assert second.is_file()
    assert not first.exists()  # the stale graph of this export name is removed
    doc = json.loads(second.read_text())
    conv = next(layer for layer in doc["modelTopology"]["model_config"]["config"]["layers"]
                if layer["name"] == "stem_conv")
    assert conv["config"]["filters"] == 6
    # Other export names are left alone.
    other = export_graph(tiny_model(filters=4), tmp_path, "other")
    assert {f.name for f in list_exports(tmp_path)} == {second.name, other.name}


def test_input_shape_changes_the_hash() -> None:
    a = keras.applications.Xception(weights=None, input_shape=(71, 71, 3), include_top=False)
    b = keras.applications.Xception(weights=None, input_shape=(75, 75, 3), include_top=False)
    assert config_fingerprint(a) != config_fingerprint(b)


def test_no_temporary_files_left(tmp_path: Path) -> None:
    export_graph(tiny_model(), tmp_path, "tiny")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_invalid_arguments(tmp_path: Path) -> None:
    model = tiny_model()
    for name in ["", "../x", "a/b", ".hidden", "a b", "x" * 65, "a.b"]:
        with pytest.raises(ValueError, match="Invalid export name"):
            export_graph(model, tmp_path, name)
    with pytest.raises(ValueError, match="Expected a keras.Model"):
        export_graph("not a model", tmp_path, "tiny")  # type: ignore[arg-type]


def test_keras_export_round_trips(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_keras(model, tmp_path, "tiny")
    assert path.name == f"tiny.keras-{config_fingerprint(model)}-{weights_fingerprint(model)}.keras"
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def test_keras_export_cached_and_keyed_by_weights(tmp_path: Path) -> None:
    model = tiny_model()
    first = export_keras(model, tmp_path, "tiny")
    old = time.time() - 3600
    os.utime(first, (old, old))
    assert export_keras(model, tmp_path, "tiny") == first
    assert first.stat().st_mtime == pytest.approx(old)
    # New weights, same architecture: a new file, the old one is removed.
    model.get_layer("predictions").kernel.assign(np.ones((8, 3), "float32"))
    second = export_keras(model, tmp_path, "tiny")
    assert second != first and second.is_file() and not first.exists()
    # A caller-supplied fingerprint replaces the (slower) hash of all values.
    named = export_keras(model, tmp_path, "tiny", weights_hash="imagenet")
    assert named.is_file() and named != second


def test_list_exports(tmp_path: Path) -> None:
    assert list_exports(tmp_path / "missing") == []
    model = tiny_model()
    graph = export_graph(model, tmp_path, "tiny")
    full = export_keras(model, tmp_path, "tiny")
    (tmp_path / "unrelated.json").write_text("{}")
    (tmp_path / ".tiny.graph-0123456789abcdef.abc.tmp.json").write_text("{}")
    files = list_exports(tmp_path)
    assert [f.name for f in files] == sorted([graph.name, full.name])
    by_kind = {f.kind: f for f in files}
    assert by_kind["graph"] == ExportedFile(graph.name, graph, graph.stat().st_size, "graph", "tiny",
                                            config_fingerprint(model), None)
    assert by_kind["keras"].weights_hash == weights_fingerprint(model)
    assert by_kind["keras"].size == full.stat().st_size


def test_graph_document_is_json_serialisable() -> None:
    doc = graph_document(tiny_model())
    assert json.loads(json.dumps(doc)) == doc
    assert doc["modelTopology"]["keras_version"] == keras.__version__


def test_paper_and_article_variants_get_distinct_graphs(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    paper = request.getfixturevalue("paper_model")
    article = request.getfixturevalue("article_model")
    paper_path = export_graph(paper, tmp_path, "xception-paper")
    article_path = export_graph(article, tmp_path, "xception-article")
    assert paper_path.name != article_path.name
    assert config_fingerprint(paper) != config_fingerprint(article)
    for path, model in ((paper_path, paper), (article_path, article)):
        doc = json.loads(path.read_text())
        assert path.stat().st_size < 1_000_000
        names = [layer["name"] for layer in doc["modelTopology"]["model_config"]["config"]["layers"]]
        assert names == [layer.name for layer in model.layers]
