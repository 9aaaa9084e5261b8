"""One FastAPI app on one port: the Gradio UI at `/`, Netron and model exports beside it.

Spaces expose a single port, so nothing here starts a second server. Routes are registered
before Gradio is mounted at `/`, which would otherwise shadow them.
"""

from __future__ import annotations

import logging

import fastapi
import gradio as gr

from webapp.http_api import register_http_api
from webapp.netron.exports import register_exports
from webapp.netron.routes import add_netron_routes
from webapp.store import ModelStore
from webapp.ui import text
from webapp.ui.layout import CSS, build_demo
from xception.settings import Settings

logger = logging.getLogger(__name__)

MAX_UPLOAD = "10mb"
QUEUE_SIZE = 64  # requests waiting beyond this are refused at once rather than piling up


def make_store(settings: Settings) -> ModelStore:
    """The store `settings.model_store` names: models in this process, or replicas on Ray Serve."""
    if settings.model_store == "ray":
        from webapp.store_remote import RemoteModelStore  # needs requirements-scale.txt

        return RemoteModelStore.connect(settings)
    return ModelStore(settings)


def create_app(settings: Settings | None = None, store: ModelStore | None = None) -> fastapi.FastAPI:
    """Builds the app; model loading starts in the background right away."""
    store = (store or make_store(settings or Settings())).start()
    app = fastapi.FastAPI(title="Xception Explorer", docs_url=None, redoc_url=None)
    app.state.store = store

    @app.get("/healthz")
    def healthz() -> dict:
        health = {"ready": store.is_ready(), "status": text.status_line(store.statuses(), store.is_ready()),
                  "weights": store.available()}
        if (replicas := store.replicas()) is not None:
            health["replicas"] = replicas
        return health

    exports = register_exports(app, store, add_netron_routes)
    # Gradio's own parser, so the plain HTTP API's cap is exactly the page's.
    register_http_api(app, store, max_bytes=gr.utils._parse_file_size(MAX_UPLOAD), max_waiting=QUEUE_SIZE)
    blocks = build_demo(store, exports, max_upload=MAX_UPLOAD)
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


def main(settings: Settings | None = None, store: ModelStore | None = None) -> None:
    """`python app.py`: settings from the environment, read once here, then the server.

    `app.py` passes a store it already started, so the weights load while Gradio is imported.
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings or Settings.from_env()
    app = create_app(settings, store)
    print(f"Xception Explorer on http://{settings.host}:{settings.port}", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=2)
