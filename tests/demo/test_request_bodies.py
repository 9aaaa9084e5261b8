"""Request headers and bodies on a public URL (issue 30, items 4, 5 and 10): every route reads
them under a deadline a trickle does not extend, bodies still arriving share one process-wide cap,
and a JSON body is refused by its cost before anything parses it, without stalling the event loop.

The real `create_app` (a store whose weights fail at once: no model is needed to read a body)
served by uvicorn with the app's own protocol (`demo.server.server_config`) in a thread on a
loopback socket; raw sockets as clients. Memory is measured with tracemalloc in this process
(server and clients both; the clients send slices of one buffer made before tracing starts).
Bodies are smaller than the issue's (60 x 1 MB against a 3 MB cap, rather than 60 x 13 MB against
160 MB): the property, at most the cap held and every body ended by its deadline, is the same."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
import uvicorn

from demo.server import Budgets, create_app, server_config

WAIT = 60.0  # bound on every wait for the server (reached only when a test fails)
BODY = 1_000_000
CAP = 3_000_000
# What uvicorn may hold of a connection's body that the app has not taken yet: h11's receive
# buffer (one transport read, up to 256 KiB) and the request's (up to its 64 KiB high-water mark).
IN_FLIGHT = 256 * 1024 + 2 * 64 * 1024
MB = 2**20


@contextlib.contextmanager
def serving(tmp: Path, budgets: Budgets):
    """`create_app` with `budgets`, served with its own uvicorn config on a loopback socket;
    yields (port, app)."""
    from demo.store import ModelStore
    from xception_core.settings import Settings

    patch = pytest.MonkeyPatch()
    patch.setenv("GRADIO_TEMP_DIR", str(tmp / "uploads"))
    settings = Settings(cache_dir=tmp / "cache", upload_dir=tmp / "uploads")
    app = create_app(settings, ModelStore(settings, ["no-such-weights"]), budgets)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    server = uvicorn.Server(server_config(app, "127.0.0.1", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        for _ in range(600):  # the lifespan has started once /healthz answers
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=WAIT).status_code == 200:
                    break
        yield port, app
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
        patch.undo()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Short deadlines and a 3 MB cap on bytes of unfinished bodies."""
    budgets = Budgets(body_deadline_s=1.5, header_deadline_s=1.0, held_body_bytes=CAP)
    with serving(tmp_path_factory.mktemp("bodies-small"), budgets) as served:
        yield served


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    """The app's default budgets."""
    with serving(tmp_path_factory.mktemp("bodies-default"), Budgets()) as served:
        yield served


def _head(port: int, path: str, content_type: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _until_closed(socks: list[socket.socket]) -> dict[socket.socket, bytes]:
    """Everything each socket receives until the server closes it (bounded by WAIT); sockets
    still open then are missing from the answer."""
    got = {s: b"" for s in socks}
    closed: dict[socket.socket, bytes] = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        end = time.monotonic() + WAIT
        while len(closed) < len(socks) and time.monotonic() < end:
            for key, _ in sel.select(timeout=1.0):
                s = key.fileobj
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[s] += chunk
                else:
                    sel.unregister(s)
                    closed[s] = got[s]
    return closed


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


PART = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n")
ROUTES = {  # path, Content-Type, how the body starts (a well-formed start: the server waits for the rest)
    "queue-join": ("/gradio_api/queue/join", "application/json", b'{"data": ["'),
    "upload": ("/gradio_api/upload", "multipart/form-data; boundary=xyz", PART),
    "rest-classify": ("/api/v1/classify", "image/jpeg", b"\xff\xd8"),
}


def _hold_60(port: int, route: str, size: int) -> tuple[list[int], int]:
    """60 connections on `route`, each with a body of `size` bytes sent one byte short; returns
    the statuses they were answered (once the server closed them all) and the traced peak."""
    path, content_type, start = ROUTES[route]
    payload = memoryview(start + b"-" * (size - len(start)))  # made before tracing: clients send slices
    socks: list[socket.socket] = []
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", port))
            socks.append(s)
            try:
                s.sendall(_head(port, path, content_type, size) + payload[: size - 1])
            except OSError:  # refused (the cap) and closed before all of it was sent
                pass
        closed = _until_closed(socks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        for s in socks:
            s.close()
    assert len(closed) == 60, f"{60 - len(closed)} of 60 connections still open"
    return sorted(_status(a) for a in closed.values()), peak - base


@pytest.mark.parametrize("route", ROUTES)
def test_bodies_held_one_byte_short_end_by_their_deadline_and_hold_at_most_the_cap(small, route):
    """60 bodies of 1 MB (60 MB in all) against a 3 MB cap: every connection is ended, those
    within the cap by their deadline (408), the others at once (503); the memory they cost beyond
    60 connections with 1 KB bodies (what a connection costs, measured the same way) is at most
    the cap plus what uvicorn may buffer per connection before the app reads (`IN_FLIGHT`)."""
    port, app = small
    load = app.state.body_load
    _, connections = _hold_60(port, route, 1_000)
    load.peak = 0
    statuses, peak = _hold_60(port, route, BODY)
    assert set(statuses) <= {408, 503}, statuses
    # About CAP // BODY of them fit (fewer where the cap is reached mid-body, more where a body's
    # bytes were still in transit when others were refused).
    # Those the app had not read much of when their deadline came also get 408 (their bytes were
    # still in the kernel's buffers, not the process's).
    assert statuses.count(408) >= 1, "those within the cap waited for their deadline"
    assert statuses.count(503) >= 1, "the others were refused by the cap"
    assert load.peak <= CAP and load.held == 0
    allowed = CAP + 60 * IN_FLIGHT
    assert peak - connections <= allowed, (f"{(peak - connections) / MB:.1f} MB traced beyond the connections' "
                                           f"{connections / MB:.1f} MB, for {allowed / MB:.1f} MB allowed")


def test_half_sent_headers_are_answered_408_and_closed(small):
    """Half-sent request heads get 408 and are closed; connections that sent nothing (a
    browser's preconnect) are closed without an answer."""
    port, _ = small
    socks = []
    silent = []
    try:
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            socks.append(s)
        closed = _until_closed(socks)
        quiet = _until_closed(silent)
    finally:
        for s in socks + silent:
            s.close()
    assert len(quiet) == 5 and all(a == b"" for a in quiet.values())
    assert len(closed) == 50, f"{50 - len(closed)} of 50 connections still open"
    assert all(_status(a) == 408 and b"headers did not arrive" in a for a in closed.values())


def test_a_13_mb_json_body_of_empty_objects_costs_little_and_never_stalls_healthz(default):
    port, app = default
    body = b'{"data":[' + b"{}," * (13 * MB // 3) + b'{}],"fn_index":0,"session_hash":"abcdefgh"}'
    assert len(body) <= Budgets().body_bytes
    head = _head(port, "/gradio_api/queue/join", "application/json", len(body))
    answers: list[bytes] = []

    def send() -> None:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head)
            s.sendall(memoryview(body))
            answers.append(b"".join(iter(lambda: s.recv(65536), b"")))

    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        sender = threading.Thread(target=send)
        sender.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            checks = 0
            while sender.is_alive() or checks < 3:
                # A stalled event loop fails this call by raising (a timeout), not by a duration.
                assert client.get("/healthz", timeout=0.5).status_code == 200
                checks += 1
        sender.join(WAIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answers and _status(answers[0]) == 413 and b"too many parts" in answers[0], answers[:1]
    assert b"{}" not in answers[0], "the answer echoes nothing of the body"
    assert peak - base <= 50 * MB, f"{(peak - base) / MB:.0f} MB traced for a 13 MB body"
    assert app.state.body_load.too_costly >= 1 and app.state.body_load.held == 0


def test_a_served_file_is_never_sniffed(default):
    port, _ = default
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=WAIT)
    assert response.headers["x-content-type-options"] == "nosniff"
    upload = httpx.post(f"http://127.0.0.1:{port}/gradio_api/upload", timeout=WAIT,
                        files={"files": ("pwn.jpg", b"<html><script>alert(1)</script></html>", "image/jpeg")})
    assert upload.status_code == 200, upload.text
    served = httpx.get(f"http://127.0.0.1:{port}/gradio_api/file={upload.json()[0]}", timeout=WAIT)
    assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff"


def test_a_request_without_a_body_is_never_ended_by_the_body_deadline():
    """A stream's disconnect checks (Starlette's `is_disconnected`, in a cancelled scope, as
    Gradio's SSE routes poll it) see the client still there however long the stream lasts: a
    request without a body has no body deadline."""
    import asyncio

    from starlette.requests import Request

    from demo.limits import BodyLimitMiddleware

    seen: list[bool] = []

    async def app(scope, receive, send):
        request = Request(scope, receive)
        for _ in range(5):
            seen.append(await request.is_disconnected())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = BodyLimitMiddleware(app, max_bytes=100, deadline_s=0.0, held_cap=10, max_json_items=10)
    sent: list[dict] = []
    first = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if first:
            return first.pop()
        await asyncio.Event().wait()  # the client stays

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/gradio_api/queue/data", "headers": []}
    asyncio.run(guard(scope, receive, send))
    assert seen == [False] * 5 and sent[0]["status"] == 200
