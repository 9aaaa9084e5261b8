"""Hugging Face Spaces entry point: `python app.py` serves the whole app on one port
(GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; 127.0.0.1:7860 locally, 0.0.0.0:7860 on Spaces).

`gradio app.py` is Gradio's reload mode: the same app, and after each saved edit under `demo/` or
`xception_core/` Gradio re-runs this file in the running app's namespace, where it builds a new
page (`page`, made by `build_page`) for Gradio to swap in; the weights stay loaded (`demo.reload`).
"""

import os

# TensorFlow's C++ start-up chatter is noise in the server log; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# NumPy's BLAS on one thread: the networks run on ONNX Runtime's and TensorFlow's own pools, and
# the NumPy math left (the Teach tab's classifier fits) is small enough that a second BLAS thread
# only adds waits; on a loaded 2-core machine those waits made a fit ~50× slower (bench/README.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def build_page(served):
    """A new page (a `gr.Blocks`) from the current source, around the models of the app
    `served` (the FastAPI app `demo.server.create_app` made)."""
    from demo.reload import rebuild_page

    return rebuild_page(served)


def _serving(app) -> None:
    """Called with the app once its page is mounted (in reload mode, before it serves): keeps it
    and its page in this namespace, and in reload mode starts Gradio's watcher (which re-runs
    this file in this namespace)."""
    global served, page
    served, page = app, app.state.blocks
    from demo.reload import requested, watch_edits

    if requested():
        import sys

        watch_edits(app, sys.modules[__name__])


if __name__ == "__main__" and "served" in globals():
    # Gradio's reload mode re-running this file after an edit: only the page is built again.
    page = build_page(served)  # noqa: F821 - set by _serving on the first run
elif __name__ == "__main__":
    # TensorFlow's native start-up lines bypass TF_CPP_MIN_LOG_LEVEL: filtered from the log.
    from demo.log_filter import configure_logging, drop_native_startup_lines

    drop_native_startup_lines()
    configure_logging()  # before the store logs its first line
    # The weights start loading before the server is made; the server answers the plain HTTP API
    # as soon as it listens and builds the page (Gradio's import) in a thread meanwhile
    # (`demo.server.main`); imports take turns (`demo.store.IMPORTS`: concurrent imports can deadlock).
    from demo.ports import exit_if_port_taken
    from demo.store import IMPORTS, ModelStore
    from xception_core.settings import Settings

    settings = Settings.from_env()
    exit_if_port_taken(settings)  # before any weights load: a taken port costs nothing
    # Only the in-process store loads weights here; a Ray store connects in create_app.
    store = ModelStore(settings).start() if settings.model_store == "local" else None

    with IMPORTS:  # never beside a loader thread's TensorFlow import (`demo.store.IMPORTS`)
        from demo.server import main  # no Gradio: the page's build imports it

    main(settings, store, on_app=_serving)
