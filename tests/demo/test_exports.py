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


class _Store:
    """The part of ModelStore that Exports uses, around one tiny model."""

    default_key = "tiny"

    def __init__(self, export_dir=None):
        self.settings = Settings(export_dir=export_dir)
        self.models = {v: load_model(None, input_shape=(71, 71, 3), classes=3, variant=v)
                       for v in ("paper", "article")}

    def variant(self, key, variant):
        return self.models[variant]


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
