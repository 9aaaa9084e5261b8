"""One FastAPI app on one port: the Gradio UI at `/`, Netron and model exports beside it.

Spaces expose a single port, so nothing here starts a second server. Routes are registered
before Gradio is mounted at `/`, which would otherwise shadow them.
"""

from __future__ import annotations

import logging
import os

import fastapi
import gradio as gr

from demo.exports import register_exports
from demo.netron import add_netron_routes
from demo.ui import CSS, build_demo
from xception_core.serving import ModelStore

logger = logging.getLogger(__name__)

MAX_UPLOAD = "10mb"
QUEUE_SIZE = 64  # requests waiting beyond this are refused at once rather than piling up


def create_app(store: ModelStore | None = None) -> fastapi.FastAPI:
    """Builds the app; model loading starts in the background right away."""
    store = (store or ModelStore()).start()
    app = fastapi.FastAPI(title="Xception Explorer", docs_url=None, redoc_url=None)
    app.state.store = store

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ready": store.is_ready(), "status": store.status(), "weights": store.available()}

    exports = register_exports(app, store, add_netron_routes)
    blocks = build_demo(store, exports)
    blocks.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    app = gr.mount_gradio_app(
        app, blocks, path="/", ssr_mode=False, max_file_size=MAX_UPLOAD, show_error=True, css=CSS,
        footer_links=["api"],
    )
    # Gradio checks that a request's file paths were uploaded by a user only once the Blocks
    # "have launched", which mount_gradio_app never marks: without this, an API caller could
    # name any file on the server ({"path": "/etc/passwd"}) and have it copied into the cache.
    blocks.has_launched = True
    return app


def main() -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    app = create_app()
    print(f"Xception Explorer on http://{host}:{port}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
