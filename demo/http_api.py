"""`POST /api/v1/classify`: an image in, JSON top-k out, over plain HTTP for machines; and its
interactive docs at `/docs`, served from this process (no CDN).

No Gradio queue, no upload step, no event stream: one request, one answer, so a client with a
persistent connection pays the decode and the forward and little else (bench/README.md has the
figures). The Gradio `/classify` endpoint stays for gradio_client users.

Budgets, in the order a request meets them:

1. The body is read before the request holds anything: capped at the page's upload cap (413,
   before reading when Content-Length says so) and due within `body_deadline_s` of the request's
   start (408 otherwise), a deadline a trickle of bytes does not extend, so slow clients only
   ever cost their own socket for a bounded time.
2. At most `max_waiting` requests with a body hold a slot, waiting or working (503 beyond).
3. At most `max_working` of them decode and classify at once, in worker threads of their own
   (not the thread pool Gradio's events use); a request whose client hung up meanwhile leaves
   the queue at once, and one that hangs up while working skips what is left (the forward).
4. The image waits for its turn at the decode gate (`demo.services.payloads.DECODES`: what its
   format costs to decode, turns shared fairly between client addresses) before it takes a
   decode thread, and is decoded by the page's one decode policy (`decode_image`, no larger than
   1536 px a side); only then does it wait for a working slot, so a small photo never waits
   behind big decodes while holding one. It is classified by the model's micro-batcher, shared
   with the page.
5. One client address holds at most `address_share` of the slots: one client cannot take them all.

Every error under `/api/v1/` is an RFC 9457 problem (`application/problem+json`: `type`, `title`,
`status`, `detail`) in plain words: no server paths, web addresses or Python reprs; 503s carry
`Retry-After`; other methods on the route get 405 with `Allow: POST`.

On Ray Serve the same requests are answered past this process (`scale/api.py`), by the reusable
pieces below (`read_image`, `query_parameters`, `decoded`, `classification`, `failure`, ...), so
both servers read, refuse and answer alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio
import fastapi
import fastapi_offline
import pydantic
from fastapi import Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from demo.errors import MAX_MESSAGE, echo, public_text, unavailable_words, without_addresses
from demo.services import payloads
from demo.services.payloads import DECODE_PREPAID, client_key, decode_cost, decode_image
from demo.store import ModelStore, ServedModel
from xception_core.inputs.images import InvalidImageError
from xception_core.weights.source import WeightsUnavailableError

logger = logging.getLogger(__name__)

PREFIX = "/api/v1"
ROUTE = f"{PREFIX}/classify"
DOCS = "/docs"
PROBLEM = "application/problem+json"
MAX_K = 20
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file in a multipart body
MODEL_WAIT_S = 5.0  # a request during start-up waits this long for the model, then gets 503
BODY_DEADLINE_S = 60.0  # a whole body: a 10 MB photo needs about 1.4 Mbit/s (`demo.server.Budgets`)
MAX_WORKING = 8  # decodes and classifies at once: the micro-batcher's default batch
RETRY_LOADING_S, RETRY_BUSY_S, RETRY_FAILED_S = 2, 1, 3600
NO_IMAGE = "No image: send the image file as the request body, or as the multipart form field 'file'."
METHOD_HINT = ("To classify an image, POST it to /api/v1/classify: the image file as the request body "
               "(or the multipart form field 'file'); ?k= sets how many classes come back. Docs: /docs.")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/tiff", "image/avif",
               "application/octet-stream")
# Swagger UI's files, shipped by the pinned `fastapi-offline` package, served from here.
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
               "favicon.png": "image/png"}
DOCS_CSP = ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'")


# ------------------------------------------------------------------------------------------ shapes


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
    backend: str | None = Field(description="'onnx' (ONNX Runtime) or 'tf' (TensorFlow); null when a page "
                                            "process answers for models in Ray Serve replicas.")
    precision: str | None = Field(description="'fp32', or 'int8' when the server runs the quantized model; "
                                              "null when a page process answers for models in Ray Serve replicas.")
    server_ms: float = Field(description="Decode, resize and forward on the server, in milliseconds.")


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (media type `application/problem+json`)."""

    type: str = Field("about:blank", description="Always 'about:blank': the status says what kind of error.")
    title: str = Field(description="The HTTP status phrase ('Bad Request', 'Service Unavailable', …).")
    status: int = Field(description="The HTTP status code, repeated.")
    detail: str = Field(description="What was wrong and what to do, in plain words.")


class _Refused(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        self.status, self.detail, self.headers = status, detail, headers


class _Gone(Exception):
    """The client hung up: nobody will read the answer."""


def problem_body(status: int, detail: str) -> dict[str, Any]:
    """The problem document of one error. Text that comes from elsewhere (an exception's) is
    made public (`public_text`: no server paths) where it is caught; here no answer carries a web
    address or an errno, and none is longer than a message may be."""
    detail = without_addresses(detail)
    if len(detail) > MAX_MESSAGE:
        detail = detail[: MAX_MESSAGE - 1] + "…"
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail}


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(problem_body(status, detail), status, headers=headers, media_type=PROBLEM)


def under_api(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def refusal_answer(path: str, status: int, message: str) -> tuple[str, bytes] | None:
    """For `demo.limits.BodyLimitMiddleware`: its refusals on the API's paths as problems; None
    (its plain text) elsewhere."""
    if not under_api(path):
        return None
    return PROBLEM, json.dumps(problem_body(status, message)).encode()


def _too_large(max_bytes: int) -> _Refused:
    # Gradio's own words for an upload over the cap, so page and API read the same.
    return _Refused(413, f"File size exceeded maximum allowed size of {max_bytes} bytes.", {"Connection": "close"})


def _validation_words(errors: list[dict[str, Any]]) -> str:
    """FastAPI's validation errors as a sentence ('Query parameter 'k': input should be ≥ 1.'),
    without the echo of the input it keeps in them."""
    parts = []
    for error in errors[:3]:
        where, *name = [str(part) for part in error.get("loc", ())] or ["request"]
        message = public_text(error.get("msg", "is not valid"), 200)
        parts.append(f"{where.capitalize()} parameter {echo('.'.join(name))}: {message[:1].lower()}{message[1:]}")
    return "; ".join(parts) + "."


class _ProblemRoute(APIRoute):
    """A route whose parameter errors (FastAPI's 422) are problems too, as the schema says."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return problem(422, _validation_words(list(exc.errors())))

        return route


# ------------------------------------------------------------------------------------------ load


class ApiLoad:
    """How many API requests are reading their body, waiting for a turn and working now, and how
    many were refused as too slow or abandoned by their client; `wait_until` waits for a state
    (a monitor, or a test that must know the server got that far)."""

    def __init__(self) -> None:
        self.reading = self.waiting = self.working = 0
        self.too_slow = self.abandoned = 0
        self._changed = threading.Condition()

    def add(self, field: str, n: int = 1) -> None:
        with self._changed:
            setattr(self, field, getattr(self, field) + n)
            self._changed.notify_all()

    @contextlib.contextmanager
    def counting(self, field: str) -> Iterator[None]:
        self.add(field)
        try:
            yield
        finally:
            self.add(field, -1)

    def snapshot(self) -> dict[str, int]:
        with self._changed:
            return {k: getattr(self, k) for k in ("reading", "waiting", "working", "too_slow", "abandoned")}

    def wait_until(self, predicate: Callable[["ApiLoad"], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)


# ------------------------------------------------------------------------------------------ bodies


async def _read_body(request: Request, limit: int, max_bytes: int, deadline_s: float) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` bytes and with 408 when it has not
    all arrived `deadline_s` seconds after it started (however it trickles)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    start = anyio.current_time()
    stream = request.stream().__aiter__()
    while True:
        allowed = start + deadline_s - anyio.current_time()
        try:
            with anyio.fail_after(max(allowed, 0.0)):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise _Refused(408, f"The request body arrived too slowly ({size:,} bytes in "
                                f"{anyio.current_time() - start:.0f} s). A body must arrive within {deadline_s:g} s; "
                                "send the whole image at once.",
                           {"Connection": "close"}) from None
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
        raise _Refused(400, f"Malformed multipart body: {public_text(exc.message)}") from None
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


async def _unless_client_leaves(request: Request, load: ApiLoad, gone: threading.Event, work: Callable[[], Any]) -> Any:
    """`await work()`, unless the client hangs up first: then it is counted as abandoned, `gone`
    is set (a worker thread checks it between steps), `work` is cancelled where it waits, and
    `_Gone` is raised. The body has been read, so the next ASGI message can only be the disconnect."""
    result: Any = None
    error: Exception | None = None

    async def watch(scope: anyio.CancelScope) -> None:
        for _ in range(16):  # a server that kept sending empty body messages is not watched (no spin)
            if (await request.receive())["type"] == "http.disconnect":
                break
        else:
            await anyio.sleep_forever()
        load.add("abandoned")
        gone.set()
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(watch, group.cancel_scope)
        try:  # kept out of the task group, which would wrap it in an ExceptionGroup
            result = await work()
        except Exception as exc:  # noqa: BLE001 - re-raised below
            error = exc
        group.cancel_scope.cancel()
    if gone.is_set():
        raise _Gone
    if error is not None:
        raise error
    return result


# ------------------------------------------------------------------------------------------ reusable pieces
# What every server of this API shares: this process's route below, and the Ray Serve model
# replicas (`scale/api.py`), which answer the same requests with the same words.

OTHER_METHODS = ("GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS")
_K = pydantic.TypeAdapter(Annotated[int, Field(ge=1, le=MAX_K)])
_WEIGHTS = pydantic.TypeAdapter(Annotated[str, Field(max_length=200)])


async def read_image(request: Request, max_bytes: int, deadline_s: float = BODY_DEADLINE_S) -> bytes:
    """The image file of a classify request: the raw body, or the multipart form field `file`.

    Raises:
        _Refused: 413 past `max_bytes`, 408 too slow (see `_read_body`), 400 malformed or empty.
    """
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    limit = max_bytes + (MULTIPART_SLACK if multipart else 0)
    body = await _read_body(request, limit, max_bytes, deadline_s)
    if multipart:
        body = await _file_from_multipart(request, body, max_bytes)
    if not body:
        raise _Refused(400, NO_IMAGE)
    return body


def query_parameters(request: Request) -> tuple[int, str | None]:
    """`k` and `weights` of a request whose route does not validate them itself (as FastAPI does
    for this process's route, with the same bounds and the same words on a 422).

    Raises:
        _Refused: 422, in the words of `_validation_words`.
    """
    params = request.query_params
    try:
        k = _K.validate_python(params.get("k", "5"), strict=False)
    except pydantic.ValidationError as exc:
        raise _Refused(422, _validation_words([{**e, "loc": ("query", "k")} for e in exc.errors()])) from None
    weights = params.get("weights")
    try:
        weights = None if weights is None else _WEIGHTS.validate_python(weights)
    except pydantic.ValidationError as exc:
        raise _Refused(422, _validation_words([{**e, "loc": ("query", "weights")} for e in exc.errors()])) from None
    return k, weights or None


def decoded(data: bytes) -> Any:
    """The page's decode policy and its messages, straight from the bytes: a PIL image.

    Raises:
        _Refused: 400 with what was received and what is allowed.
    """
    try:
        return decode_image(data, name=f"the uploaded file, {len(data):,} bytes")
    except InvalidImageError as exc:
        raise _Refused(400, public_text(exc)) from None


def model_for(store: ModelStore, key: str | None) -> ServedModel:
    """The served model for `key` (None: the default weights), or a refusal in plain words."""
    return _model(store, key)


def classification(served: ServedModel, prediction: Any, started: float) -> dict[str, Any]:
    """The answer's JSON (`Classification`) for `prediction` (a `demo.store.Prediction`) by
    `served`, timed from `started` (`time.perf_counter()` when the work began)."""
    return Classification(
        top=[Label(label=label, probability=round(float(p), 6)) for label, p in prediction.top],
        weights=served.key, title=served.title, classes=len(served.labels), input_size=served.input_size,
        backend=served.backend, precision=served.precision,
        server_ms=round((time.perf_counter() - started) * 1000, 2),
    ).model_dump()


def failure(exc: Exception) -> tuple[int, str, dict[str, str] | None]:
    """(status, detail, headers) of the problem for whatever stopped a classify request (a
    refusal, a client gone, no replica, or a failure, which is logged and answered without its
    text): what `problem` takes, and plain data that can travel between processes."""
    if isinstance(exc, _Refused):
        return exc.status, exc.detail, exc.headers
    if isinstance(exc, (_Gone, ClientDisconnect)):  # nobody reads this answer
        return 400, "The client closed the connection before its answer.", None
    if type(exc).__name__ == "ReplicasUnavailableError":  # demo.store_remote (Ray Serve), not imported
        return 503, "No model replica answered; try again shortly.", {"Retry-After": "5"}
    logger.error("POST %s failed", ROUTE, exc_info=exc)
    return 500, "The server failed to classify this image; its log says why.", None


def failure_answer(exc: Exception) -> JSONResponse:
    """The problem document of `failure(exc)`."""
    return problem(*failure(exc))


def wrong_method_answer(method: str) -> JSONResponse:
    return problem(405, f"{method} is not allowed here. {METHOD_HINT}", {"Allow": "POST"})


def no_such_endpoint_answer() -> JSONResponse:
    return problem(404, f"No such endpoint. {METHOD_HINT}")


# ------------------------------------------------------------------------------------------ the route


def _weights_words(store: ModelStore) -> str:
    keys = [public_text(key, 200) for key in store.available()]
    return ", ".join(repr(key) for key in keys) if keys else "none yet (the server is still starting)"


def _model(store: ModelStore, key: str | None) -> ServedModel:
    """The served model for `key`, or a refusal in plain words."""
    if key is not None and key not in store.candidates:
        raise _Refused(400, f"Unknown weights {echo(key)}. Weights this server has: {_weights_words(store)}.")
    try:
        return store.get(key, timeout=MODEL_WAIT_S)
    except TimeoutError:
        which = "The model is" if key is None else f"The weights {echo(key)} are"
        raise _Refused(503, f"{which} still loading; try again in a few seconds.",
                       {"Retry-After": str(RETRY_LOADING_S)}) from None
    except WeightsUnavailableError:
        others = "" if key is None else f" Weights you can ask for: {_weights_words(store)}."
        raise _Refused(503, f"{unavailable_words(store.statuses(), key)}{others}",
                       {"Retry-After": str(RETRY_FAILED_S)}) from None
    except ValueError as exc:
        raise _Refused(400, public_text(exc)) from None


def register_http_api(app: fastapi.FastAPI, store: ModelStore, *, max_bytes: int, max_waiting: int = 64,
                      max_working: int = MAX_WORKING, body_deadline_s: float = BODY_DEADLINE_S,
                      address_share: int | None = None) -> ApiLoad:
    """Adds `POST /api/v1/classify`, its 405/404 answers under `/api/v1/`, and `/docs` to `app`
    (before Gradio is mounted, which would shadow them).

    Args:
        app: The FastAPI app.
        store: Where the models come from.
        max_bytes: The page's upload cap, in bytes.
        max_waiting: Most requests holding a slot (body read, waiting or working); more get 503.
        max_working: Most requests decoding and classifying at once.
        body_deadline_s: Seconds a whole body may take from the request's start (408 otherwise).
        address_share: Most slots one client address (`client_key`) may hold (default: half of them).

    Returns:
        The route's live counts (`ApiLoad`).
    """
    address_share = address_share or max(1, max_waiting // 2)
    load = ApiLoad()
    slots, turns = asyncio.Semaphore(max_waiting), asyncio.Semaphore(max_working)
    threads = anyio.CapacityLimiter(max_working)
    decoding, decode_threads = asyncio.Semaphore(max_working), anyio.CapacityLimiter(max_working)
    held_by: dict[str, int] = {}  # slots held per client address

    def decode(data: bytes, ticket: Any, gone: threading.Event) -> Any:
        if gone.is_set():
            raise _Gone
        token = DECODE_PREPAID.set(ticket)
        try:
            return decoded(data)
        finally:
            DECODE_PREPAID.reset(token)

    def classify(served: ServedModel, image: Any, k: int, gone: threading.Event, start: float) -> dict[str, Any]:
        if gone.is_set():
            raise _Gone
        return classification(served, served.predict(served.preprocess(image), k), start)

    async def take_turn_and_classify(body: bytes, weights: str | None, k: int, gone: threading.Event,
                                     address: str) -> Any:
        start = time.perf_counter()
        with load.counting("waiting"):  # for the model while it loads (anyio's own threads)
            served = await anyio.to_thread.run_sync(_model, store, weights or None)
        gate = payloads.DECODES
        # The decode's turn first, then a decode thread, then a working slot: a request never
        # holds a slot while it waits for memory to decode in.
        with load.counting("waiting"):
            ticket = gate.ticket(decode_cost(body), (address, ""))
            await gate.wait(ticket)
        try:
            with load.counting("waiting"):
                await decoding.acquire()
            try:
                with load.counting("working"):
                    image = await anyio.to_thread.run_sync(decode, body, ticket, gone, limiter=decode_threads)
            finally:
                decoding.release()
        finally:
            gate.release(ticket)
        with load.counting("waiting"):
            await turns.acquire()
        try:
            with load.counting("working"):
                return await anyio.to_thread.run_sync(classify, served, image, k, gone, start, limiter=threads)
        finally:
            turns.release()

    binary = {"schema": {"type": "string", "format": "binary"}}
    request_body = {
        "required": True,
        "description": ("The image file itself as the body (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF), or a "
                        f"multipart form with the file in the field `file`. At most {max_bytes:,} bytes, as on "
                        "the page; the same pixel and format limits apply. The whole body must arrive within "
                        f"{body_deadline_s:g} s of the request's start."),
        "content": {**{t: binary for t in IMAGE_TYPES}, "multipart/form-data": {"schema": {
            "type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}}},
    }
    retry = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
    errors = {
        400: {"model": Problem, "description": "No image, an image the decoder refuses (the detail says why), "
                                               "a malformed multipart body, or unknown weights."},
        408: {"model": Problem, "description": "The body arrived too slowly (see the request body); the "
                                               "connection is closed."},
        413: {"model": Problem, "description": "The body is larger than the upload cap."},
        422: {"model": Problem, "description": "A query parameter out of range (`k`) or too long (`weights`)."},
        500: {"model": Problem, "description": "The server failed; the detail says so in plain words."},
        503: {"model": Problem, "headers": retry,
              "description": "The model is still loading (Retry-After: 2), the weights asked for failed to load "
                             f"(Retry-After: {RETRY_FAILED_S}), or too many requests are waiting (Retry-After: 1)."},
    }
    router = fastapi.APIRouter(route_class=_ProblemRoute)

    @router.post(ROUTE, response_model=Classification, responses=errors, tags=["classify"],
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

        Every error is a problem document (`application/problem+json`) with a `detail` in plain
        words; other methods on this path answer 405 with `Allow: POST`.
        """
        try:
            with load.counting("reading"):  # before any slot: a slow body holds nothing but its socket
                try:
                    body = await read_image(request, max_bytes, body_deadline_s)
                except _Refused as refused:
                    if refused.status == 408:
                        load.add("too_slow")
                    raise
            address = client_key(request)
            if slots.locked() or held_by.get(address, 0) >= address_share:
                raise _Refused(503, "Too many requests are waiting; try again shortly.",
                               {"Retry-After": str(RETRY_BUSY_S)})
            held_by[address] = held_by.get(address, 0) + 1
            try:
                async with slots:
                    gone = threading.Event()
                    return await _unless_client_leaves(
                        request, load, gone, lambda: take_turn_and_classify(body, weights, k, gone, address))
            finally:
                held_by[address] -= 1
                if not held_by[address]:
                    del held_by[address]
        except Exception as exc:  # noqa: BLE001 - every failure answers in the declared shape
            if isinstance(exc, ClientDisconnect):  # while sending its body (`_Gone` is counted where seen)
                load.add("abandoned")
            return failure_answer(exc)

    @router.api_route(ROUTE, methods=list(OTHER_METHODS), include_in_schema=False)
    async def wrong_method(request: Request) -> Response:
        return wrong_method_answer(request.method)

    @router.api_route(PREFIX + "/{rest:path}", methods=["POST", *OTHER_METHODS], include_in_schema=False)
    async def no_such_endpoint(rest: str) -> Response:
        return no_such_endpoint_answer()

    app.include_router(router)
    _declare_problems(app)
    _drop_cdn_docs(app)
    _add_docs(app)
    return load


# ------------------------------------------------------------------------------------------ docs


def _declare_problems(app: fastapi.FastAPI) -> None:
    """Errors of the API's operations in the OpenAPI description as `application/problem+json`
    (FastAPI writes every response model as `application/json`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path, item in schema.get("paths", {}).items():
                if not under_api(path):
                    continue
                for operation in item.values():
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[:1] in "45" and "application/json" in content:
                            response["content"] = {PROBLEM: content["application/json"]}
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_cdn_docs(app: fastapi.FastAPI) -> None:
    """FastAPI's own docs pages (on by default) load Swagger UI and ReDoc from a CDN: gone, so
    `/docs` is ours."""
    own = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url if app.docs_url else None} - {None}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in own]
    app.docs_url = app.redoc_url = None


def _add_docs(app: fastapi.FastAPI) -> None:
    """Swagger UI at `/docs`, its scripts and styles served from this process: the docs work
    with no internet access, and the page loads nothing from elsewhere (its CSP says so)."""
    assets = Path(fastapi_offline.__file__).parent / "static"

    @app.get(DOCS, include_in_schema=False)
    async def docs(request: Request) -> Response:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} · HTTP API",
            swagger_js_url=f"{root}{DOCS}/assets/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS}/assets/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS}/assets/favicon.png", oauth2_redirect_url=None,
            # No online validator badge (it would call out), operations open, models folded.
            swagger_ui_parameters={"validatorUrl": None, "docExpansion": "list", "defaultModelsExpandDepth": 0,
                                   "tryItOutEnabled": True})
        return HTMLResponse(page.body, headers={"Content-Security-Policy": DOCS_CSP})

    @app.get(DOCS + "/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name not in DOCS_ASSETS:
            return Response("Not found.", 404, media_type="text/plain")
        return FileResponse(assets / name, media_type=DOCS_ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
