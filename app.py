"""Hugging Face Spaces entry point: `python app.py` serves the whole app on one port
(GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; 127.0.0.1:7860 locally, 0.0.0.0:7860 on Spaces)."""

import os

# TensorFlow's C++ start-up chatter is noise in the server log; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# NumPy's BLAS on one thread: the networks run on ONNX Runtime's and TensorFlow's own pools, and
# the NumPy math left (the Teach tab's classifier fits) is small enough that a second BLAS thread
# only adds waits; on a loaded 2-core machine those waits made a fit ~50× slower (bench/README.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if __name__ == "__main__":
    # TensorFlow's native start-up lines bypass TF_CPP_MIN_LOG_LEVEL: filtered from the log.
    from demo.log_filter import drop_native_startup_lines

    drop_native_startup_lines()
    # The weights start loading before the UI (Gradio) is imported, so the two overlap on the
    # cores instead of running one after the other (cold start: bench/README.md).
    from demo.ports import exit_if_port_taken
    from demo.store import ModelStore
    from xception_core.settings import Settings

    settings = Settings.from_env()
    exit_if_port_taken(settings)  # before any weights load: a taken port costs nothing
    # Only the in-process store loads weights here; a Ray store connects in create_app.
    store = ModelStore(settings).start() if settings.model_store == "local" else None

    from demo.server import main

    main(settings, store)
