"""Hugging Face Spaces entry point: `python app.py` serves the whole app on one port
(GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; 127.0.0.1:7860 locally, 0.0.0.0:7860 on Spaces)."""

import os

# TensorFlow's C++ start-up chatter is noise in the server log; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from webapp.server import main  # noqa: E402

if __name__ == "__main__":
    main()
