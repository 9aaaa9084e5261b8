"""Model files the page links to: the weight-free graph Netron shows and the full `.keras`
download, exported once per architecture into one folder and served by allowlisted name."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from pathlib import Path
from typing import Callable

import fastapi

from demo.runs import sweep_stale_temp_files
from demo.store import Store
from xception_core.io.export import list_exports

logger = logging.getLogger(__name__)


def writable_folder(preferred: Path) -> Path | None:
    """`preferred` if a file can be written there, else a fresh temporary folder, else None.

    A read-only cache (everything fetched, the folder mounted read-only) must not stop the app:
    only the exports move.
    """
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=preferred, prefix=".probe-"):
            pass
        return preferred
    except OSError as exc:
        logger.warning("export folder %s is not writable (%s); using a temporary folder", preferred, exc)
    try:
        return Path(tempfile.mkdtemp(prefix="xception-exports-"))
    except OSError as exc:
        logger.warning("no writable temporary folder either (%s): graph view and downloads are off", exc)
        return None


class Exports:
    """Exports of the store's models, made on first request and cached on disk by the exporter."""

    def __init__(self, store: Store, folder: Path):
        self.store, self.folder = store, folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def names(self) -> set[str]:
        """Names that may be served: only files the exporter created in the folder."""
        return {f.name for f in list_exports(self.folder)}

    def _stem(self, variant: str, key: str | None) -> str:
        """The export name: 'xception-<weights key>-<variant>'. The folder is a cache other processes
        share, where the exporter replaces older files of a name: weights from a file also carry a
        digest of where the file is, so another process serving another file of the same stem
        never replaces (deletes) this one's exports."""
        tag = str(key or self.store.default_key)[:32]
        info = self.store.get(key).info
        if info.preset is None and Path(str(info.source)).suffix in (".keras", ".h5", ".hdf5"):
            tag += "-" + hashlib.sha256(str(info.source).encode()).hexdigest()[:8]
        return f"xception-{tag}-{variant}"

    def graph(self, variant: str, key: str | None = None) -> str:
        """File name of the weight-free graph of the `variant` wiring of the store's model (copied
        from its translation: no TensorFlow)."""
        with self._lock:
            return self.store.get(key).export("graph", variant, self.folder, self._stem(variant, key)).name

    def full_keras(self, variant: str, key: str | None = None) -> Path:
        """Path of the full `.keras` (architecture and weights) for download (~90 MB, copied from
        the translation once)."""
        with self._lock:
            return self.store.get(key).export("keras", variant, self.folder, self._stem(variant, key))


def register_exports(app: fastapi.FastAPI, store: Store, add_netron_routes: Callable) -> Exports | None:
    """Adds `/netron/` and `/models/` to `app` (before Gradio is mounted) and keeps the
    `Exports` on `app.state.exports` for the UI; None (and no routes) when nothing can be written."""
    folder = writable_folder(store.settings.exports)
    app.state.exports = None
    if folder is None:
        return None
    if summary := sweep_stale_temp_files(folder).summary():  # a process killed mid-export
        logger.info("exports: %s", summary)
    exports = Exports(store, folder)
    add_netron_routes(app, exports.folder, exports.names)
    app.state.exports = exports
    return exports
