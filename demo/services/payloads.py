"""Turning what Gradio hands a handler (an image payload) into a PIL image, with clear errors.

Events take their image with `preprocess=False`, so Gradio never decodes an upload itself: every
upload goes through `xception_core.io.images.load_image`, whose limits and messages apply to
the page and the API alike.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from demo.services import UserError
from xception_core.io.images import load_image

MAX_UPLOAD_BYTES = 10 * 2**20  # one image, uploaded or sent as a data URL
# Longest side decoded: 1.5× the display copy (1024) and far above any model input (299), so
# nothing is lost to the page or the model; a 48 MP JPEG is decoded at 1/4 scale (2000×1500).
DECODE_SIDE = 1536
# Non-JPEG images above this many pixels must be decoded at full size before shrinking
# (~4 bytes a pixel): at most BIG_DECODES of them at once, so a burst of 50 MP PNGs cannot
# multiply that peak by the classify concurrency.
BIG_PIXELS = 12_000_000
BIG_DECODES = threading.BoundedSemaphore(2)


def payload_to_image(payload: Any, upload_dir: Path) -> Image.Image:
    """A Gradio image payload (FileData dict, data: URL, or a path Gradio cached) → RGB image.

    Only files inside `upload_dir` (Gradio's upload and example cache) are read.

    Raises:
        UserError: No image, a file outside Gradio's upload folder, or anything `load_image`
            rejects (its message says what was received and what is allowed).
    """
    if payload is None:
        raise UserError("No image: upload one, take a webcam snapshot, paste one, or pick an example.")
    if isinstance(payload, Image.Image):
        source: Any = payload
    else:
        if isinstance(payload, dict):
            url, path = payload.get("url"), payload.get("path")
        else:
            url, path = getattr(payload, "url", None), getattr(payload, "path", payload)
        if isinstance(url, str) and url.startswith("data:"):
            encoded = url.partition(",")[2]
            if len(encoded) * 3 // 4 > MAX_UPLOAD_BYTES:  # checked before decoding a byte
                raise UserError(f"The image data is about {len(encoded) * 3 // 4 / 2**20:.1f} MB; "
                                f"at most {MAX_UPLOAD_BYTES / 2**20:.0f} MB is accepted.")
            try:
                source = base64.b64decode(encoded, validate=False)
            except ValueError:
                raise UserError("The pasted image data is not valid base64.") from None
        elif isinstance(path, (str, os.PathLike)):
            resolved = Path(path).resolve()
            if not resolved.is_relative_to(Path(upload_dir).resolve()):
                raise UserError("That file is not an upload of this app.")
            if not resolved.is_file():  # deleted by the file budget, or never a file: no path, no errno
                raise UserError("That upload is no longer on the server; upload the photo again.")
            source = resolved
        else:
            raise UserError(f"Unsupported image payload of type {type(payload).__name__}.")
    try:
        return decode_image(source)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def decode_image(source: bytes | Path | Image.Image, name: str | None = None) -> Image.Image:
    """The one decode policy of every route that takes a visitor's image (page events, the plain
    HTTP API, and whatever decodes for Ray Serve replicas): `load_image` no larger than
    `DECODE_SIDE` a side, and at most `BIG_DECODES` full-size decodes of big non-JPEGs at once
    (the caller's thread waits its turn).

    Args:
        source: Encoded bytes, a file path, or a PIL image (used as it is).
        name: How error messages name the input (see `load_image`).

    Returns:
        An RGB image, longest side ≤ `DECODE_SIDE` for encoded input.

    Raises:
        InvalidImageError: (a ValueError) anything `load_image` refuses; the message says what
            was received and what is allowed.
    """
    if _full_size_pixels(source) > BIG_PIXELS:
        with BIG_DECODES:
            return load_image(source, DECODE_SIDE, name)
    return load_image(source, DECODE_SIDE, name)


def _full_size_pixels(source: Any) -> int:
    """Pixels a decode of `source` holds at once, from its header (0 when it is not an encoded
    image, or a JPEG, which the decoder scales down; `load_image` reports what is wrong)."""
    if isinstance(source, Image.Image):
        return 0
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as header:
            return 0 if header.format == "JPEG" else header.size[0] * header.size[1]
    except Exception:  # noqa: BLE001 - any unreadable header is load_image's to explain
        return 0
