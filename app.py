"""Hugging Face Spaces entry point: `python app.py` serves the whole app on one port
(GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; 127.0.0.1:7860 locally, 0.0.0.0:7860 on Spaces)."""

from demo.server import main

if __name__ == "__main__":
    main()
