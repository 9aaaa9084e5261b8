"""Request, session and disk budgets (issue 9, items 2, 3 and 5): one body limit on every route,
data URLs capped like uploads, sessions that expire and keep no large payloads, files that are
deleted by age and kept under a byte budget, heartbeats of streams that cannot end stopped, and
the housekeeping that runs those chores. Small Blocks, TestClient and one live loopback server;
no model."""

from __future__ import annotations

import base64
import contextlib
import datetime
import io
import os
import time
from pathlib import Path

import gradio as gr
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from demo.limits import (
    BodyLimitMiddleware,
    Chore,
    EmptyFolders,
    FileBudget,
    Housekeeping,
    OrphanHeartbeats,
    SessionSweep,
)
from demo.server import Budgets
from demo.services import UserError
from demo.services.payloads import MAX_UPLOAD_BYTES, payload_to_image
from tests.demo.conftest import ThreadServer

LIMIT = 50_000


def _echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: dict) -> dict:
        return {"keys": len(request)}

    app.add_middleware(BodyLimitMiddleware, max_bytes=LIMIT)
    return app


def test_body_limit_refuses_declared_and_chunked_bodies_over_it():
    client = TestClient(_echo_app())
    assert client.post("/echo", json={"a": "x" * 1000}).json() == {"keys": 1}
    big = client.post("/echo", json={"a": "x" * (LIMIT + 10)})
    assert big.status_code == 413 and "too large" in big.text

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"a": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    chunked = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def _png_data_url(side: int) -> str:
    """A noise PNG (it does not compress): ~4·side² characters of base64."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_data_urls_larger_than_the_upload_cap_are_refused_before_decoding(tmp_path):
    assert payload_to_image({"url": _png_data_url(8)}, tmp_path).size == (8, 8)
    over = "data:image/png;base64," + "A" * (MAX_UPLOAD_BYTES * 4 // 3 + 100)
    with pytest.raises(UserError, match="at most 10 MB"):
        payload_to_image({"url": over}, tmp_path)


def test_the_default_body_limit_fits_one_capped_data_url_and_nothing_much_bigger():
    budgets = Budgets()
    assert MAX_UPLOAD_BYTES * 4 / 3 < budgets.body_bytes < MAX_UPLOAD_BYTES * 1.5


# ------------------------------------------------------------------------------ the real server


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    """The real `create_app` with a store that fails at once (no model needed for limits)."""
    from demo.server import create_app
    from demo.store import ModelStore
    from xception_core.settings import Settings

    tmp = tmp_path_factory.mktemp("limits")
    settings = Settings(cache_dir=tmp / "cache", upload_dir=Path(os.environ.get("GRADIO_TEMP_DIR") or "/tmp/gradio"))
    store = ModelStore(settings, ["no-such-weights"])
    app = create_app(settings, store)
    with TestClient(app) as client:
        yield client, app


def test_every_route_refuses_bodies_over_the_limit(app_client):
    client, _ = app_client
    body = {"data": [{"url": "data:image/png;base64," + "A" * (15 * 2**20)}, None], "fn_index": 0, "session_hash": "abc"}
    for route in ("/gradio_api/queue/join", "/gradio_api/call/classify", "/gradio_api/run/predict"):
        response = client.post(route, json=body)
        assert response.status_code == 413, (route, response.status_code, response.text[:200])
    upload = client.post("/gradio_api/upload", files={"files": ("big.png", b"\0" * (15 * 2**20))})
    assert upload.status_code == 413


def test_gradio_honours_the_session_cap(app_client):
    _, app = app_client
    blocks = app.state.blocks
    assert blocks.state_session_capacity == Budgets().max_sessions
    assert blocks.state_holder.capacity == Budgets().max_sessions
    assert blocks.delete_cache == (300, Budgets().files_age_s)


# ------------------------------------------------------------------------------ sessions and files


@pytest.fixture
def small_app(tmp_path, monkeypatch):
    """A one-event Blocks mounted like the app; the chores are run by hand."""
    upload_dir = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(upload_dir))
    with gr.Blocks() as blocks:
        image = gr.Image(type="filepath")
        kept = gr.State(None, time_to_live=3600)
        out = gr.Textbox()

        def size(payload, state):
            return str(len(str(payload))), "result"

        gr.Button().click(size, [image, kept], [out, kept], api_name="size", preprocess=False)
    blocks.state_session_capacity = 5
    app = gr.mount_gradio_app(FastAPI(), blocks, path="/")
    blocks.has_launched = True
    with TestClient(app) as client:
        yield client, blocks, upload_dir


def _call(client, payload, session: str) -> None:
    response = client.post("/gradio_api/queue/join", json={"data": [payload, None], "fn_index": 0, "session_hash": session})
    assert response.status_code == 200, response.text
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if "process_completed" in line:
                break


def test_sessions_keep_no_large_payloads_after_their_event(small_app):
    client, blocks, _ = small_app
    sweep = SessionSweep(blocks, ttl_s=60, settle_s=0)
    _call(client, {"url": _png_data_url(100)}, "s1")
    holder = blocks.state_holder
    assert "s1" in holder.session_data
    assert "data:image" in str(holder.session_data["s1"].config_values), "Gradio keeps the input (what we undo)"
    result = sweep()
    assert result.configs_dropped >= 1 and result.summary() is None  # nothing expired: no log line
    assert "data:image" not in str(holder.session_data["s1"].config_values)
    # The session still works: its State survives and a later event runs.
    assert "result" in str(holder.session_data["s1"].state_data)
    _call(client, {"url": _png_data_url(4)}, "s1")
    sweep()
    assert "data:image" not in str(holder.session_data["s1"].config_values)


def test_idle_sessions_expire_with_their_state_and_the_number_is_capped(small_app):
    client, blocks, _ = small_app
    sweep = SessionSweep(blocks, ttl_s=60, settle_s=0)
    for i in range(8):
        _call(client, {"url": _png_data_url(4)}, f"s{i}")
    holder = blocks.state_holder
    assert len(holder.session_data) <= 5, "Gradio's capacity, set from Budgets.max_sessions"
    fresh = sorted(holder.session_data)[-1]
    result_ids = list(holder.session_data)
    for session_id in list(holder.session_data):
        if session_id != fresh:
            holder.time_last_used[session_id] -= datetime.timedelta(seconds=120)
    result = sweep()
    assert result.sessions_expired == len(result_ids) - 1 and "idle sessions expired" in result.summary()
    assert list(holder.session_data) == [fresh] and list(holder.time_last_used) == [fresh]


def test_files_are_trimmed_oldest_first_to_the_budget_sparing_examples_and_new_uploads(small_app):
    _, blocks, upload_dir = small_app
    trim = FileBudget(blocks, budget_bytes=3000, min_age_s=60, folders=EmptyFolders(upload_dir, min_age_s=60))
    now = time.time()
    files = {}
    for name, age, size in (("old", 3600, 1000), ("older", 7200, 1000), ("example", 9000, 1000),
                            ("middle", 600, 1000), ("new", 5, 1000)):
        folder = upload_dir / f"hash-{name}"
        folder.mkdir(parents=True)
        path = folder / f"{name}.png"
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age, now - age))
        os.utime(folder, (now - age, now - age))
        files[name] = str(path)
        blocks.upload_file_set.add(str(path))
    next(iter(blocks.blocks.values())).keep_in_cache.add(files["example"])
    result = trim(now=now)
    assert result.files_deleted == 2 and result.bytes_freed == 2000
    assert not Path(files["older"]).exists() and not Path(files["old"]).exists()
    assert Path(files["example"]).exists() and Path(files["middle"]).exists() and Path(files["new"]).exists()
    assert not Path(files["old"]).parent.exists(), "the emptied hash folder goes too"


def test_empty_folders_left_alone_long_enough_are_removed_and_nothing_else(tmp_path):
    upload_dir = tmp_path / "gradio"
    now = time.time()
    old_empty, new_empty, full = (upload_dir / name for name in ("old-empty", "new-empty", "full"))
    for folder in (old_empty, new_empty, full):
        folder.mkdir(parents=True)
    (full / "photo.png").write_bytes(b"x")
    for folder in (old_empty, full):
        os.utime(folder, (now - 120, now - 120))
    outside = tmp_path / "not-gradio"
    outside.mkdir()
    os.utime(outside, (now - 120, now - 120))
    EmptyFolders(upload_dir, min_age_s=60).sweep()
    assert not old_empty.exists() and new_empty.exists() and full.exists() and outside.exists()
    EmptyFolders(upload_dir, min_age_s=60).remove({outside, upload_dir})
    assert outside.exists() and upload_dir.exists()


# ------------------------------------------------------------------------------ heartbeats of a real stream


class LiveGradio:
    """A real Blocks app on uvicorn on a free loopback port, in a thread: `run(fn)` runs `fn` in the
    server's event loop (where Gradio's tasks live) and returns its result."""

    def __init__(self, blocks: gr.Blocks):
        import asyncio
        import threading

        self.asyncio = asyncio
        started = threading.Event()

        @contextlib.asynccontextmanager
        async def lifespan(_app):
            started.set()  # Gradio's startup (its queue) has run
            yield

        app = gr.mount_gradio_app(FastAPI(lifespan=lifespan), blocks, path="/")
        self.server = ThreadServer.start(app)
        self.port = self.server.port
        assert started.wait(60), "the server did not start"

    def run(self, fn):
        return self.server.run(fn)

    def tasks(self) -> set:
        """The server loop's unfinished tasks (but the one asking)."""
        asyncio = self.asyncio
        return self.run(lambda: {t for t in asyncio.all_tasks() if not t.done() and t is not asyncio.current_task()})

    def stream(self, session: str, text: str, receive_buffer: int = 4096):
        """Joins the queue with `text` and opens the session's event stream (a raw socket that
        reads only what the caller asks for); returns once the event has started."""
        import json
        import socket
        import urllib.request

        body = json.dumps({"data": [text], "fn_index": 0, "session_hash": session}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/gradio_api/queue/join", data=body,
                                         headers={"content-type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()
        connection = socket.socket()
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        connection.settimeout(30)
        connection.connect(("127.0.0.1", self.port))
        connection.sendall(f"GET /gradio_api/queue/data?session_hash={session} HTTP/1.1\r\n"
                           "Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        received = b""
        while b"process_starts" not in received:
            received += connection.recv(4096)
        return connection

    def stop(self) -> None:
        self.server.stop()


def test_the_heartbeat_of_a_stream_that_cannot_end_is_stopped_and_a_live_ones_is_not():
    """Real Gradio streams on a real server. A client that stops reading during a large result (a
    phone that lost its network keeps its connection open) leaves its stream waiting for the socket
    after the event is over, and Gradio's heartbeat task for it running; `OrphanHeartbeats` stops
    that task on its second look, and leaves alone the heartbeat of a stream whose event runs."""
    import threading

    release = threading.Event()

    def answer(text: str) -> str:
        if text == "live":
            release.wait(60)
        return "y" * 8_000_000  # far more than the sockets and the transport hold unread

    with gr.Blocks() as blocks:
        question, reply = gr.Textbox(), gr.Textbox()
        question.submit(answer, question, reply, api_name="answer")
    blocks.queue(default_concurrency_limit=4)
    server = LiveGradio(blocks)
    connections = []
    try:
        before = server.tasks()
        connections.append(server.stream("live", "live"))
        with_live = server.tasks()
        connections.append(server.stream("gone", "gone"))  # and never read from again
        queue = blocks._queue
        deadline = time.monotonic() + 30
        while server.run(lambda: bool(queue.pending_event_ids_session.get("gone"))):  # its event ends
            assert time.monotonic() < deadline, "the event never finished"
            time.sleep(0.05)
        gone_tasks = server.tasks() - with_live
        live_tasks = with_live - before
        orphans = OrphanHeartbeats(blocks)
        first, second = server.run(orphans), server.run(orphans)
        still_running = server.tasks()
        assert (first, second) == (0, 1)
        stopped = gone_tasks - still_running
        assert len(stopped) == 1, "exactly one task of the stalled stream (its heartbeat) is stopped"
        assert next(iter(stopped)).cancelled()
        assert live_tasks <= still_running, "the live stream's tasks keep running"
        assert server.run(orphans) == 0  # nothing else is taken for an orphan
    finally:
        release.set()
        for connection in connections:
            connection.close()
        server.stop()


# ------------------------------------------------------------------------------ the scheduler


def test_housekeeping_runs_every_chore_in_order_blocking_ones_off_the_loop_and_survives_a_failure(caplog):
    import asyncio
    import threading

    where: dict[str, bool] = {}

    def chore(name: str, said: str | None):
        def run() -> str | None:
            where[name] = threading.current_thread() is threading.main_thread()
            return said

        return run

    def broken() -> str:
        raise OSError("disk gone")

    housekeeping = Housekeeping([Chore("in loop", chore("in loop", "2 things done")), Chore("broken", broken, blocking=True),
                                 Chore("in thread", chore("in thread", None), blocking=True)])
    with caplog.at_level("INFO", logger="demo.limits"):
        said = asyncio.run(housekeeping.sweep())
    assert said == {"in loop": "2 things done", "broken": None, "in thread": None}
    assert where == {"in loop": True, "in thread": False}
    assert any("broken failed" in r.message for r in caplog.records)
    assert any(r.message == "housekeeping: 2 things done" for r in caplog.records)


def test_the_apps_housekeeping_has_each_chore_once():
    from demo.server import housekeeping

    with gr.Blocks() as blocks:
        gr.Textbox()
    chores = housekeeping(blocks, Budgets(), Path("/tmp/no-such-upload-folder"))
    assert [c.name for c in chores.chores] == ["sessions", "heartbeats", "files", "empty folders", "memory"]
    assert [c.blocking for c in chores.chores] == [False, False, True, True, True]
    # In a process's own upload folder (the app's case: its run folder's files/) the folders of ended processes beside it are swept too.
    chores = housekeeping(blocks, Budgets(), Path("/tmp/no-such-root/xception-run-1-0123abcd/files"))
    assert [c.name for c in chores.chores][-1] == "ended processes" and chores.chores[-1].blocking


def test_the_body_limit_answers_the_apis_problem_shape_on_its_paths_only(app_client):
    """Past the body limit, `/api/v1/*` gets its declared problem document; the page's routes
    keep their plain text."""
    client, _ = app_client
    big = b"\0" * (15 * 2**20)
    api = client.post("/api/v1/classify", content=big, headers={"Content-Type": "image/jpeg"})
    assert api.status_code == 413 and api.headers["content-type"] == "application/problem+json"
    assert api.json()["status"] == 413 and "too large" in api.json()["detail"]
    page = client.post("/gradio_api/upload", content=big)
    assert page.status_code == 413 and page.headers["content-type"].startswith("text/plain")
    assert "too large" in page.text
