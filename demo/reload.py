"""Gradio's reload mode (`gradio app.py`) for an app that Gradio does not launch itself.

`gradio app.py` runs `python app.py` with the `GRADIO_WATCH_*` variables set and leaves the rest
to `Blocks.launch()`, which this app never calls: it serves Gradio mounted on its own FastAPI app,
beside Netron and the REST API, on one port. `watch_edits` starts the watcher `launch()` would
have started (Gradio's own `watchfn`): after each saved edit it forgets the project's modules,
re-runs `app.py` in the running app's namespace, where `rebuild_page` builds a new page from the
re-imported modules around the running store, and swaps that page in; the open browser tab
reloads itself. The weights, the REST API and Netron stay as they are (their code needs a restart).

Gradio internals used (gradio 6.31): `gradio.http_server.GRADIO_WATCH_*`,
`gradio.utils.SourceFileReloader` and `watchfn`, `Blocks.dev_mode`; tests/test_app.py fails if
they move.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import ModuleType

import fastapi
import gradio as gr
from gradio import http_server
from gradio.routes import App
from gradio.utils import SourceFileReloader, watchfn
from starlette.routing import Mount

ROOT = Path(__file__).resolve().parents[1]
# Watched instead of the app's folder: that one holds the README's `.venv`, whose ~15,000 .py
# files Gradio's watcher would stat every 50 ms. Edits to app.py itself need a restart.
PAGE_SOURCES = (ROOT / "demo", ROOT / "xception_core")
# What `gr.mount_gradio_app` set on the first page that a new page must keep (Gradio's own
# swap carries the queue, file-size cap, paths, theme and CSS).
CARRIED = ("show_error", "footer_links", "run_history", "custom_mount_path", "ssr_mode", "root_path",
           "favicon_path", "auth", "auth_message", "enable_monitoring", "server_name", "server_port",
           "state_session_capacity", "delete_cache")


def requested() -> bool:
    """Whether `gradio app.py` (reload mode) started this process."""
    return http_server.should_watch


def gradio_app(app: fastapi.FastAPI) -> App:
    """The Gradio app mounted on `app` (it holds the page being served)."""
    for route in app.routes:
        if isinstance(route, Mount) and isinstance(route.app, App):
            return route.app
    raise LookupError("no Gradio app is mounted on this app")


class PageReloader(SourceFileReloader):
    """Gradio's reloader, plus what this app set on its page and keeps beside it."""

    def __init__(self, app: fastapi.FastAPI, module: ModuleType):
        """Marks `app`'s page for reloads (the browser then listens for them); `module` is the
        one whose file Gradio re-runs, holding the page under any name."""
        blocks = app.state.blocks
        blocks.dev_mode = True  # gr.mount_gradio_app turned it off
        blocks.server = None  # set by launch() (its uvicorn server), read by Gradio's swap
        for block in blocks.blocks.values():  # as launch() does: keys let a reload keep values
            if block.key is None:
                block.key = f"__{block._id}__"
        blocks.config = blocks.get_config_file()
        dirs = [str(d) for d in PAGE_SOURCES]
        # Folders added with `gradio app.py --watch-dirs ...`, but not the app's own folder.
        dirs += [d for d in http_server.GRADIO_WATCH_DIRS if d and not ROOT.is_relative_to(Path(d).resolve())]
        self.outer = app
        super().__init__(app=gradio_app(app), watch_dirs=dirs, watch_module_name=http_server.GRADIO_WATCH_MODULE_NAME,
                         demo_file=http_server.GRADIO_WATCH_DEMO_PATH, watch_module=module,
                         stop_event=threading.Event(), demo_name=http_server.GRADIO_WATCH_DEMO_NAME,
                         encoding=os.environ.get("GRADIO_WATCH_ENCODING", "utf-8"))

    def swap_blocks(self, demo: gr.Blocks) -> None:
        old = self.running_app.blocks
        for name in CARRIED:
            setattr(demo, name, getattr(old, name))
        demo.dev_mode = True
        demo.transpile_to_js(quiet=True)
        super().swap_blocks(demo)
        self.outer.state.blocks = demo
        self.outer.state.housekeeping.follow(demo)  # sessions, heartbeats and files of the new page


def watch_edits(app: fastapi.FastAPI, module: ModuleType) -> PageReloader:
    """Starts Gradio's watcher, which re-runs `module`'s file in `module`'s namespace after each
    edit of a watched file and swaps in the page it then holds."""
    reloader = PageReloader(app, module)
    threading.Thread(target=watchfn, args=(reloader,), name="gradio-reload", daemon=True).start()
    return reloader


def rebuild_page(app: fastapi.FastAPI) -> gr.Blocks:
    """A new page from the current source of `demo.ui`, around the running app's store and
    exports: what `app.py` hands Gradio's reloader when it re-runs."""
    from demo.ui.layout import build_demo  # re-imported after an edit: the new code

    running = gradio_app(app).get_blocks()
    from demo.server import disk_room

    return build_demo(app.state.store, app.state.exports, max_upload=f"{running.max_file_size // 2**20}mb",
                      disk=disk_room(app))
