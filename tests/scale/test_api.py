"""The plain API as Serve answers it (`scale.api`: the front's `answer`, the replica's
`classify_bytes`, composed here without Ray) on a tiny random model: under the route prefix
Serve's proxy sets, every answer (classifications and problems, status, headers and body) equals
the single-process route's (`demo.http_api`) for the same request."""

from __future__ import annotations

import asyncio
import io

import fastapi
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount

from tests.conftest import shared_loaded, store_serving
from demo.http_api import PREFIX, ROUTE, register_http_api
from xception_core.settings import Settings

pytest.importorskip("ray", reason="needs requirements-scale.txt")

from scale.api import API_PREFIX, answer, classify_bytes  # noqa: E402

CAP = 200_000


@pytest.fixture(scope="module")
def both():
    """(single-process client, replica-API client, forward calls seen) over one tiny store."""
    store = store_serving(shared_loaded(71, 7), Settings())
    single = fastapi.FastAPI()
    register_http_api(single, store, max_bytes=CAP)
    calls: list[tuple[str, tuple[int, ...]]] = []

    async def forward(key, x):  # as the replica's batched forward: one image in, its outputs back
        calls.append((key, x.shape))
        features, probabilities = await asyncio.to_thread(store.get(key).classifier.forward, x[None])
        return features[0], probabilities[0]

    async def front(scope, receive, send):
        response = await answer(Request(scope, receive), lambda *args: classify_bytes(store, forward, *args),
                                max_bytes=CAP)
        await response(scope, receive, send)

    # Mounted as Serve's proxy routes it: the prefix as the root path, the full path kept.
    served = Starlette(routes=[Mount(API_PREFIX, app=front)])
    return TestClient(single), TestClient(served), calls


def jpeg(size=(120, 90), color=(200, 30, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def comparable(response) -> tuple:
    body = response.json()
    body.pop("server_ms", None)  # a timing
    headers = {k: response.headers.get(k) for k in ("content-type", "allow", "retry-after", "connection")}
    return response.status_code, headers, body


@pytest.mark.parametrize("method, path, kwargs", [
    ("POST", f"{ROUTE}?k=3", {"content": jpeg(), "headers": {"Content-Type": "image/jpeg"}}),
    ("POST", ROUTE, {"files": {"file": ("photo.jpg", jpeg((300, 200)), "image/jpeg")}}),
    ("POST", f"{ROUTE}?k=20", {"content": jpeg((40, 40), (10, 200, 90))}),
    ("POST", ROUTE, {"content": b""}),  # no image
    ("POST", ROUTE, {"content": b"not an image" * 50}),
    ("POST", ROUTE, {"content": jpeg()[:300]}),  # truncated
    ("POST", ROUTE, {"content": b"\xff" * (CAP + 1)}),  # over the cap
    ("POST", ROUTE, {"files": {"other": ("photo.jpg", jpeg(), "image/jpeg")}}),  # no 'file' field
    ("POST", ROUTE, {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}}),
    ("POST", f"{ROUTE}?k=0", {"content": jpeg()}),
    ("POST", f"{ROUTE}?k=abc", {"content": jpeg()}),
    ("POST", f"{ROUTE}?weights={'w' * 201}", {"content": jpeg()}),
    ("POST", f"{ROUTE}?weights=nope", {"content": jpeg()}),
    ("GET", ROUTE, {}),
    ("DELETE", ROUTE, {}),
    ("POST", f"{PREFIX}/predict", {"content": jpeg()}),
    ("GET", f"{PREFIX}/classify/more", {}),
])
def test_the_replica_answers_as_the_single_process(both, method, path, kwargs):
    single, replica, _ = both
    want, got = single.request(method, path, **kwargs), replica.request(method, path, **kwargs)
    assert comparable(got) == comparable(want)


def test_the_bytes_are_decoded_in_the_replica_and_forwarded_preprocessed(both):
    _, replica, calls = both
    calls.clear()
    assert replica.post(ROUTE, content=jpeg((640, 480))).status_code == 200
    assert calls == [("tiny", (71, 71, 3))]  # one preprocessed image per request, to the batcher
    assert replica.post(ROUTE, content=b"junk").status_code == 400 and len(calls) == 1  # refused before it
