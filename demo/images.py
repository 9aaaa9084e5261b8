"""Turning what Gradio hands a handler into a PIL image, with clear errors for the user.

Events take their image with `preprocess=False`, so Gradio never decodes an upload itself: every
upload goes through `xception_core.preprocessing.load_image`, whose limits and messages apply to
the page and the API alike.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from xception_core.preprocessing import load_image

ALLOWED_ROOTS_ENV = "GRADIO_TEMP_DIR"


def _upload_roots() -> list[Path]:
    """Folders Gradio stores uploads and examples in; only files there are read."""
    import tempfile

    roots = [Path(os.environ.get(ALLOWED_ROOTS_ENV) or Path(tempfile.gettempdir()) / "gradio")]
    return [r.resolve() for r in roots]


def payload_to_image(payload: Any) -> Image.Image:
    """A Gradio image payload (FileData dict, data: URL, or a path Gradio cached) → RGB image.

    Raises:
        gr.Error: No image, a file outside Gradio's upload folder, or anything `load_image`
            rejects (its message says what was received and what is allowed).
    """
    if payload is None:
        raise gr.Error("No image: upload one, take a webcam snapshot, paste one, or pick an example.")
    if isinstance(payload, Image.Image):
        source: Any = payload
    else:
        if isinstance(payload, dict):
            url, path = payload.get("url"), payload.get("path")
        else:
            url, path = getattr(payload, "url", None), getattr(payload, "path", payload)
        if isinstance(url, str) and url.startswith("data:"):
            try:
                source = base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, ValueError):
                raise gr.Error("The pasted image data is not valid base64.") from None
        elif isinstance(path, (str, os.PathLike)):
            resolved = Path(path).resolve()
            if not any(resolved.is_relative_to(root) for root in _upload_roots()):
                raise gr.Error("That file is not an upload of this app.")
            source = resolved
        else:
            raise gr.Error(f"Unsupported image payload of type {type(payload).__name__}.")
    try:
        return load_image(source)
    except ValueError as exc:
        raise gr.Error(str(exc)) from None
