"""`POST /api/v1/classify`: an image in, JSON top-k out, over plain HTTP for machines.

No Gradio queue, no upload step, no event stream: one request, one answer, so a client with a
persistent connection pays the decode and the forward and little else (bench/README.md has the
figures). The Gradio `/classify` endpoint stays for gradio_client users.

The same limits and messages as the page: the body is capped at the page's upload cap (the
server refuses more with 413 and Gradio's own wording, before reading it when Content-Length says
so), and the image goes through `xception_core.io.images.load_image`, whose checks and messages the
page uses too. Work runs in a worker thread; classifies from every client share the model's
micro-batcher, and at most `max_waiting` requests wait at once (503 beyond).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
import fastapi
from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from demo.errors import public_text
from demo.store import ModelStore
from xception_core.io.images import InvalidImageError
from xception_core.model import WeightsUnavailableError

ROUTE = "/api/v1/classify"
MAX_K = 20
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file in a multipart body
MODEL_WAIT_S = 5.0  # a request during start-up waits this long for the model, then gets 503
NO_IMAGE = "No image: send the image file as the request body, or as the multipart form field 'file'."
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/avif",
               "application/octet-stream")


class Label(BaseModel):
    label: str
    probability: float = Field(ge=0.0, le=1.0)


class Classification(BaseModel):
    """The answer: the `k` most probable classes, most probable first."""

    top: list[Label]
    weights: str = Field(description="Key of the weights that ran ('kitchenware', 'imagenet' or a file).")
    title: str = Field(description="Human-readable name of those weights.")
    classes: int = Field(description="How many classes these weights know.")
    input_size: int = Field(description="Side in pixels the image was resized to.")
    backend: str | None = Field(description="'onnx' (ONNX Runtime) or 'tf' (TensorFlow); null when the "
                                            "model runs in Ray Serve replicas.")
    precision: str | None = Field(description="'fp32', or 'int8' when the server runs the quantized model; "
                                              "null when the model runs in Ray Serve replicas.")
    server_ms: float = Field(description="Decode, resize and forward on the server, in milliseconds.")


class Problem(BaseModel):
    detail: str


class _Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status, self.detail, self.headers = status, detail, headers


def _too_large(max_bytes: int) -> _Refused:
    # Gradio's own words for an upload over the cap, so page and API read the same.
    return _Refused(413, f"File size exceeded maximum allowed size of {max_bytes} bytes.")


async def _read_capped(request: Request, limit: int, max_bytes: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit` bytes, before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


async def _file_from_multipart(request: Request, body: bytes, max_bytes: int) -> bytes:
    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=1, max_fields=8).parse()
    except MultiPartException as exc:
        raise _Refused(400, f"Malformed multipart body: {exc.message}") from None
    except (KeyError, ValueError):  # no boundary, or one the parser cannot use
        raise _Refused(400, "Malformed multipart body: no usable boundary in the Content-Type header.") from None
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise _Refused(400, NO_IMAGE)
    try:
        data = await file.read()
    finally:
        await file.close()
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def register_http_api(app: fastapi.FastAPI, store: ModelStore, *, max_bytes: int, max_waiting: int = 64) -> None:
    """Adds `POST /api/v1/classify` to `app` (before Gradio is mounted, which would shadow it).

    Args:
        app: The FastAPI app.
        store: Where the models come from.
        max_bytes: The page's upload cap, in bytes.
        max_waiting: Most requests in progress at once; more get 503 at once.
    """
    slots = asyncio.Semaphore(max_waiting)

    def classify(data: bytes, weights: str | None, k: int) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            served = store.get(weights or None, timeout=MODEL_WAIT_S)
        except TimeoutError as exc:
            raise _Refused(503, f"{exc}.", {"Retry-After": "2"}) from None
        except WeightsUnavailableError as exc:
            raise _Refused(503, str(exc)) from None
        except ValueError as exc:  # unknown weights
            raise _Refused(400, str(exc)) from None
        try:  # decoded once, by the page's decoder with the page's limits, straight from the bytes
            x = served.preprocess(data)
        except InvalidImageError as exc:  # what was received and what is allowed
            raise _Refused(400, str(exc)) from None
        prediction = served.predict(x, k)
        return Classification(
            top=[Label(label=label, probability=round(float(p), 6)) for label, p in prediction.top],
            weights=served.key, title=served.title, classes=len(served.labels), input_size=served.input_size,
            backend=served.backend, precision=served.precision,
            server_ms=round((time.perf_counter() - start) * 1000, 2),
        ).model_dump()

    binary = {"schema": {"type": "string", "format": "binary"}}
    request_body = {
        "required": True,
        "description": ("The image file itself as the body (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF), or a "
                        f"multipart form with the file in the field `file`. At most {max_bytes:,} bytes, as on "
                        "the page; the same pixel and format limits apply."),
        "content": {**{t: binary for t in IMAGE_TYPES}, "multipart/form-data": {"schema": {
            "type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}}},
    }
    errors = {
        400: {"model": Problem, "description": "No image, an image the decoder refuses (the message says why), "
                                               "or unknown weights. (A bad `k` gets FastAPI's 422.)"},
        413: {"model": Problem, "description": "The body is larger than the upload cap."},
        503: {"model": Problem, "description": "The model is still loading (Retry-After), failed to load, or "
                                               "too many requests are waiting."},
    }

    @app.post(ROUTE, response_model=Classification, responses=errors, tags=["classify"],
              summary="Classify one image (raw body or multipart) → top-k JSON",
              openapi_extra={"requestBody": request_body})
    async def classify_route(
        request: Request,
        k: Annotated[int, Query(ge=1, le=MAX_K, description="How many classes to return (capped at the "
                                                            "number of classes the weights know).")] = 5,
        weights: Annotated[str | None, Query(max_length=200, description="Weights key (default: the "
                                                                          "server's default weights).")] = None,
    ) -> Any:
        """Classifies one image without Gradio's queue. Example:
        `curl -s --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:7860/api/v1/classify?k=3`
        """
        if slots.locked():
            return JSONResponse({"detail": "Too many requests are waiting; try again shortly."}, 503,
                                headers={"Retry-After": "1"})
        async with slots:
            try:
                multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
                body = await _read_capped(request, max_bytes + (MULTIPART_SLACK if multipart else 0), max_bytes)
                if multipart:
                    body = await _file_from_multipart(request, body, max_bytes)
                if not body:
                    raise _Refused(400, NO_IMAGE)
                return await anyio.to_thread.run_sync(classify, body, weights, k)
            except _Refused as refused:
                # Through the same filter as the page's messages: no server paths (a weights file's).
                return JSONResponse({"detail": public_text(refused.detail)}, refused.status, headers=refused.headers)
