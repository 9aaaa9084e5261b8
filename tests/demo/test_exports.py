"""Model exports behind the Netron view and the download button: made on request, cached, and
servable only by the names the exporter created."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from demo.netron.exports import Exports, register_exports
from demo.netron.routes import add_netron_routes
from xception_core.model import load_model
from xception_core.settings import Settings


class _Served:
    """The part of a served model that Exports uses: the Keras exporter's files of each wiring,
    as a served model of backend 'tf' writes them."""

    def __init__(self):
        self.models = {v: load_model(None, input_shape=(71, 71, 3), classes=3, variant=v)
                       for v in ("paper", "article")}
        self.info = self.models["paper"].info

    def export(self, kind, variant, folder, name):
        from xception_core.io.export import export_graph, export_keras

        return (export_graph if kind == "graph" else export_keras)(self.models[variant].model, folder, name)


class _Store:
    """The part of ModelStore that Exports uses, around one tiny model."""

    default_key = "tiny"

    def __init__(self, export_dir=None):
        self.settings = Settings(export_dir=export_dir)
        self.served = _Served()

    def get(self, key=None):
        return self.served


@pytest.fixture(scope="module")
def store():
    return _Store()


def test_graph_and_full_model_are_exported_and_served(store, tmp_path):
    store.settings = Settings(export_dir=tmp_path)
    app = FastAPI()
    exports = register_exports(app, store, add_netron_routes)
    http = TestClient(app)
    assert exports.names() == set()
    paper, article = exports.graph("paper"), exports.graph("article")
    assert paper != article and paper.startswith("xception-tiny-paper.graph-")
    assert exports.graph("paper") == paper  # cached: same file, not rewritten
    keras_file = exports.full_keras("paper")
    assert keras_file.stat().st_size > 1_000_000  # weights included
    assert exports.names() == {paper, article, keras_file.name}
    for name in (paper, keras_file.name):
        response = http.get(f"/models/{name}")
        assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"
    assert http.get("/models/xception-tiny-paper.graph-0000000000000000.json").status_code == 404


def test_only_files_the_exporter_made_are_servable(store, tmp_path):
    exports = Exports(store, tmp_path)
    (tmp_path / "notes.txt").write_text("not an export")
    (tmp_path / "xception-evil.graph-zz.json").write_text("{}")
    assert exports.names() == set()


def test_the_translations_exports_are_the_exporters_own_files(tmp_path):
    """A served translation places the files the Keras exporter would write, under the same names
    and with the same bytes for the graph, without Keras (they were made at translation time)."""
    from tests.conftest import shared_loaded, store_serving
    from xception_core.io.export import export_graph
    from xception_core.model import rewire

    loaded = shared_loaded(71, 3, seed=1)
    store = store_serving(loaded, Settings(export_dir=tmp_path / "exports", upload_dir=tmp_path))
    exports = Exports(store, tmp_path / "exports")
    for variant in ("paper", "article"):
        ours = exports.folder / exports.graph(variant)
        theirs = export_graph(rewire(loaded, variant).model, tmp_path / "keras", f"xception-tiny-{variant}")
        assert ours.name == theirs.name and ours.read_bytes() == theirs.read_bytes()
    keras_file = exports.full_keras("article")
    assert keras_file.name.startswith("xception-tiny-article.keras-") and exports.names() >= {keras_file.name}
