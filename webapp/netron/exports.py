"""Model files the page links to: the weight-free graph Netron shows and the full `.keras`
download, exported once per architecture into one folder and served by allowlisted name."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import fastapi

from webapp.store import ModelStore
from xception.io.export import export_graph, export_keras, list_exports

class Exports:
    """Exports of the store's models, made on first request and cached on disk by the exporter."""

    def __init__(self, store: ModelStore, folder: Path):
        self.store, self.folder = store, folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def names(self) -> set[str]:
        """Names that may be served: only files the exporter created in the folder."""
        return {f.name for f in list_exports(self.folder)}

    def _model(self, variant: str, key: str | None):
        return self.store.variant(key, variant).model

    def _stem(self, variant: str, key: str | None) -> str:
        return f"xception-{key or self.store.default_key}-{variant}"

    def graph(self, variant: str, key: str | None = None) -> str:
        """File name of the weight-free graph of the `variant` wiring of the store's model."""
        with self._lock:
            return export_graph(self._model(variant, key), self.folder, self._stem(variant, key)).name

    def full_keras(self, variant: str, key: str | None = None) -> Path:
        """Path of the full `.keras` (architecture and weights) for download (~90 MB, ~1 s)."""
        with self._lock:
            return export_keras(self._model(variant, key), self.folder, self._stem(variant, key))


def register_exports(app: fastapi.FastAPI, store: ModelStore, add_netron_routes: Callable) -> Exports:
    """Adds `/netron/` and `/models/` to `app` (before Gradio is mounted) and keeps the
    `Exports` on `app.state.exports` for the UI."""
    exports = Exports(store, store.settings.exports)
    add_netron_routes(app, exports.folder, exports.names)
    app.state.exports = exports
    return exports
