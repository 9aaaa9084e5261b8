"""Request, session and disk budgets (issue 9, items 2, 3 and 5): one body limit on every route,
data URLs capped like uploads, sessions that expire and keep no large payloads, files that are
deleted by age and kept under a byte budget. Small Blocks and TestClient; no model."""

from __future__ import annotations

import base64
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

from demo.limits import BodyLimitMiddleware, Janitor
from demo.server import Budgets
from demo.services import UserError
from demo.services.payloads import MAX_UPLOAD_BYTES, payload_to_image

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


# ------------------------------------------------------------------------------ the janitor


@pytest.fixture
def small_app(tmp_path, monkeypatch):
    """A one-event Blocks mounted like the app, the janitor's sweeps run by hand."""
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
    janitor = Janitor(blocks, session_ttl_s=60, files_budget_bytes=3000, file_min_age_s=60, upload_dir=upload_dir,
                      settle_s=0)
    with TestClient(app) as client:
        yield client, blocks, janitor, upload_dir


def _call(client, payload, session: str) -> None:
    response = client.post("/gradio_api/queue/join", json={"data": [payload, None], "fn_index": 0, "session_hash": session})
    assert response.status_code == 200, response.text
    with client.stream("GET", f"/gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream.iter_lines():
            if "process_completed" in line:
                break


def test_sessions_keep_no_large_payloads_after_their_event(small_app):
    client, blocks, janitor, _ = small_app
    _call(client, {"url": _png_data_url(100)}, "s1")
    holder = blocks.state_holder
    assert "s1" in holder.session_data
    assert "data:image" in str(holder.session_data["s1"].config_values), "Gradio keeps the input (what we undo)"
    result = janitor.sweep_sessions()
    assert result.configs_dropped >= 1
    assert "data:image" not in str(holder.session_data["s1"].config_values)
    # The session still works: its State survives and a later event runs.
    assert "result" in str(holder.session_data["s1"].state_data)
    _call(client, {"url": _png_data_url(4)}, "s1")
    janitor.sweep_sessions()
    assert "data:image" not in str(holder.session_data["s1"].config_values)


def test_idle_sessions_expire_with_their_state_and_the_number_is_capped(small_app):
    client, blocks, janitor, _ = small_app
    for i in range(8):
        _call(client, {"url": _png_data_url(4)}, f"s{i}")
    holder = blocks.state_holder
    assert len(holder.session_data) <= 5, "Gradio's capacity, set from Budgets.max_sessions"
    fresh = sorted(holder.session_data)[-1]
    result_ids = list(holder.session_data)
    for session_id in list(holder.session_data):
        if session_id != fresh:
            holder.time_last_used[session_id] -= datetime.timedelta(seconds=120)
    result = janitor.sweep_sessions()
    assert result.sessions_expired == len(result_ids) - 1
    assert list(holder.session_data) == [fresh] and list(holder.time_last_used) == [fresh]


def test_files_are_trimmed_oldest_first_to_the_budget_sparing_examples_and_new_uploads(small_app):
    _, blocks, janitor, upload_dir = small_app
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
    result = janitor.trim_files(now=now)
    assert result.files_deleted == 2 and result.bytes_freed == 2000
    assert not Path(files["older"]).exists() and not Path(files["old"]).exists()
    assert Path(files["example"]).exists() and Path(files["middle"]).exists() and Path(files["new"]).exists()
    assert not Path(files["old"]).parent.exists(), "the emptied hash folder goes too"


def test_heartbeats_of_streams_whose_client_hung_up_are_stopped(tmp_path):
    """Gradio cancels a stream's heartbeat only after `close_stream`; the janitor stops the ones
    left behind (no pending event on two sweeps in a row) and leaves live streams alone."""
    import asyncio
    from types import SimpleNamespace

    def queue_data_helper(session_hash):  # named and nested as in gradio.routes
        async def heartbeat():
            while True:
                await asyncio.sleep(3600)
                print(session_hash)

        return heartbeat()

    async def scenario():
        blocks = SimpleNamespace(_queue=SimpleNamespace(pending_event_ids_session={"live": {"event-1"}},
                                                        pending_messages_per_session={}))
        janitor = Janitor(blocks, session_ttl_s=60, files_budget_bytes=1, file_min_age_s=1, upload_dir=tmp_path)
        live = asyncio.create_task(queue_data_helper("live"))
        gone = asyncio.create_task(queue_data_helper("gone"))
        await asyncio.sleep(0)
        first = janitor.stop_orphan_heartbeats()
        second = janitor.stop_orphan_heartbeats()
        await asyncio.sleep(0)
        result = (first, second, gone.cancelled(), live.done())
        live.cancel()
        return result

    # A loop of its own in a thread of its own: another test may have left one running in this thread.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, scenario()).result(timeout=60) == (0, 1, True, False)


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
