"""The plain HTTP API on Ray Serve: `POST /api/v1/classify`, past the page's process.

Two halves, two processes:

- `XceptionApi`, a stateless deployment (no CPU booked, autoscaled) that is the ingress of the
  model application (route prefix `/api/v1`, `scale/serve_config.yaml`), so every node's proxy
  hands it API requests. It reads and checks the request (`k`, `weights`, the body's cap and
  deadline, multipart) and sends the compressed image bytes on to a model replica, again to
  another one if that replica dies meanwhile (the page's calls are retried the same way, by
  `demo.store_remote`), so a killed replica costs no request.
- `classify_bytes`, which runs in the model replica (`XceptionModel.classify_image`): the
  page's decode policy (`demo.http_api.decoded`) and preprocessing in a worker thread, then the
  replica's `@serve.batch` forward, shared with every other caller's, the page's included.

No Gradio process is on the way, so the API scales with the model replicas. The answers are the
single-process API's, built by the same pieces of `demo.http_api`: the same JSON, the same budgets
(upload cap, body deadline, `k` and `weights` bounds), the same RFC 9457 problems in the same
words. Who queues differs: Serve's `max_ongoing_requests` per replica, not one process's semaphore.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from demo.http_api import (
    classification,
    decoded,
    failure,
    failure_answer,
    model_for,
    no_such_endpoint_answer,
    problem,
    query_parameters,
    read_image,
    wrong_method_answer,
)
from demo.services.payloads import MAX_UPLOAD_BYTES
from demo.store import ModelStore, Prediction, ServedModel
from demo.store_remote import RETRIES, RETRY_PAUSE_S, RETRYABLE, ReplicasUnavailableError

logger = logging.getLogger(__name__)

API_DEPLOYMENT = "XceptionApi"
API_PREFIX = "/api/v1"  # the route prefix of the model application (scale/serve_config.yaml)
CLASSIFY = "/classify"

# (status, JSON answer when 200 else the problem's detail, headers): what a replica sends back.
Outcome = tuple[int, Any, dict[str, str] | None]
Forward = Callable[[str, np.ndarray], Awaitable[tuple[np.ndarray, np.ndarray]]]
Classify = Callable[[bytes, str | None, int], Awaitable[Outcome]]


# ------------------------------------------------------------------------------------------ in the replica


def prepared_input(store: ModelStore, weights: str | None, data: bytes) -> tuple[ServedModel, np.ndarray]:
    """(served model, its (size, size, 3) input) from the request's bytes; blocking (a thread's)."""
    served = model_for(store, weights)
    return served, served.preprocess(decoded(data))


async def classify_bytes(store: ModelStore, forward: Forward, data: bytes, weights: str | None, k: int) -> Outcome:
    """One image's bytes → the API's answer, in a model replica.

    Args:
        store: The replica's own model store (labels, preprocessing, weights keys).
        forward: (weights key, (size, size, 3) input) → ((h, w, 2048) features, (classes,)
            probabilities), batched with the replica's other callers.
        data: The image file, as the client sent it.
        weights: Weights key, None for the default.
        k: How many classes to answer.
    """
    try:
        started = time.perf_counter()
        # Decode and preprocess in a worker thread: the replica's event loop keeps batching.
        served, x = await asyncio.to_thread(prepared_input, store, weights, data)
        features, probabilities = await forward(served.key, x)
        return 200, classification(served, Prediction.of(features, probabilities, served.labels, k), started), None
    except Exception as exc:  # noqa: BLE001 - refusals and failures travel back as problems
        return failure(exc)


# ------------------------------------------------------------------------------------------ in front


def route(request: Request) -> str:
    """The request's path below its application's route prefix (`/classify`): Serve's proxy sets
    the prefix as the ASGI root path and leaves the full path in `path`."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


async def answer(request: Request, classify: Classify, max_bytes: int = MAX_UPLOAD_BYTES) -> Response:
    """One API request: checked and read here, classified by `classify` (in a model replica).

    Args:
        request: The request as Serve's proxy passed it.
        classify: (image bytes, weights key, k) → `Outcome`.
        max_bytes: The upload cap, the page's.
    """
    if route(request) != CLASSIFY:
        return no_such_endpoint_answer()
    if request.method != "POST":
        return wrong_method_answer(request.method)
    try:
        k, weights = query_parameters(request)
        status, content, headers = await classify(await read_image(request, max_bytes), weights, k)
    except Exception as exc:  # noqa: BLE001 - every failure answers as a problem document
        return failure_answer(exc)
    return JSONResponse(content) if status == 200 else problem(status, content, headers)


async def call_model(handle: DeploymentHandle, method: str, *args: Any, retries: int = RETRIES) -> Any:
    """`await handle.method(*args)` on some model replica, sent again to another one when the
    replica is lost (as `RemoteModelStore.call` does for the page, without blocking the loop).

    Raises:
        ReplicasUnavailableError: No replica answered after `retries` retries.
        Whatever the replica's code raised, without the remote traceback.
    """
    last: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(RETRY_PAUSE_S * attempt)
        try:
            return await getattr(handle, method).remote(*args)
        except RayTaskError as exc:
            raise (exc.cause if isinstance(exc.cause, Exception) else RuntimeError(str(exc.cause))) from None
        except RETRYABLE as exc:
            last = exc
            logger.warning("replica call %s failed (%s); retrying", method, type(exc).__name__)
    raise ReplicasUnavailableError(f"no model replica answered {method!r} ({type(last).__name__})")


@serve.deployment(name=API_DEPLOYMENT, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class XceptionApi:
    """The API's front: stateless, so Serve runs as many as the traffic needs on any node.

    Args:
        model: Handle of the `XceptionModel` deployment.
    """

    def __init__(self, model: DeploymentHandle):
        self.model = model

    async def __call__(self, request: Request) -> Response:
        return await answer(request, lambda *args: call_model(self.model, "classify_image", *args))

