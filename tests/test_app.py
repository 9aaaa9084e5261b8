"""`app.py`: importing it starts nothing, and Gradio's reload mode (`gradio app.py`) swaps in a
page rebuilt from edited source while the app keeps its models, budgets and routes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_importing_app_exposes_the_page_factory_and_starts_nothing():
    code = ("import sys, app; print(callable(app.build_page), hasattr(app, 'served'), "
            "sorted(m for m in ('gradio', 'tensorflow', 'demo.server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False", "[]"]


@pytest.fixture
def served_app(tmp_path):
    """The real `create_app` around a store whose weights never load (the page needs none)."""
    from fastapi.testclient import TestClient

    from demo.server import Budgets, create_app
    from demo.store import ModelStore
    from xception_core.settings import Settings

    settings = Settings(cache_dir=tmp_path / "cache", upload_dir=tmp_path / "uploads")
    app = create_app(settings, ModelStore(settings, ["no-such-weights"]), Budgets(max_sessions=7))
    with TestClient(app) as client:
        yield app, client


def test_serving_without_reload_mode_keeps_the_page_and_starts_no_watcher(served_app, monkeypatch):
    for name in ("TF_CPP_MIN_LOG_LEVEL", "OPENBLAS_NUM_THREADS"):  # app.py sets them: restored after
        monkeypatch.delenv(name, raising=False)
    import app as entry

    app, client = served_app
    entry._serving(app)
    assert entry.page is app.state.blocks and entry.served is app
    assert not any(t.name == "gradio-reload" for t in threading.enumerate())
    assert client.get("/config").json()["dev_mode"] is False


def test_a_rebuilt_page_is_swapped_in_with_the_apps_settings(served_app):
    from demo.reload import PageReloader, gradio_app, rebuild_page

    app, client = served_app
    first = app.state.blocks
    module = types.ModuleType("app_under_reload")
    module.page = first
    reloader = PageReloader(app, module)
    assert reloader.demo_name == "page"  # found by identity, whatever its name
    assert client.get("/config").json()["dev_mode"] is True  # the browser listens for reloads

    new = rebuild_page(app)
    assert new is not first
    reloader.swap_blocks(new)
    assert gradio_app(app).get_blocks() is new and app.state.blocks is new
    assert all(watcher.blocks is new for watcher in app.state.housekeeping.page_watchers)
    assert new.state_holder.capacity == 7 and new.state_session_capacity == 7  # the session budget stays
    assert new.has_launched and new._queue is first._queue
    config = client.get("/config").json()
    assert config["dev_mode"] is True and config["footer_links"] == ["api"]
    assert client.get("/healthz").json()["ready"] is False  # the app's own routes are still there
    assert client.get("/netron/index.html").status_code == 200


@pytest.mark.slow
def test_gradio_reload_mode_swaps_in_an_edited_page(tmp_path):
    """`gradio app.py` on a copy of the project: an edit of the page text reaches the open page
    (Gradio's reload event), the weights are not loaded again, the REST API still answers."""
    from bench.appserver import app_env, free_port, log_tail, wait_ready

    # What the `gradio` command runs (its console script), whatever folder the scripts are in.
    gradio = [sys.executable, "-c", "import sys; from gradio.cli import cli; sys.argv[0] = 'gradio'; sys.exit(cli())"]
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    for folder in ("demo", "xception_core", "assets"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=ignore)
    shutil.copy(ROOT / "app.py", copy)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        # A session of its own: the gradio command runs `python app.py` as its child, and a
        # terminated gradio command leaves that child running.
        proc = subprocess.Popen([*gradio, "app.py"], cwd=copy, env=app_env(port, "kitchenware"),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(url, proc, timeout=300, log=log)
        text_py = copy / "demo" / "ui" / "text.py"
        source = text_py.read_text(encoding="utf-8")
        assert "# Xception Explorer\n" in source
        events: list[str] = []
        listening = threading.Event()

        def listen() -> None:  # what the open page does in reload mode
            with urllib.request.urlopen(f"{url}/gradio_api/dev/reload", timeout=120) as stream:
                listening.set()
                for line in stream:
                    if line.startswith(b"event: ") and line.strip() != b"event: heartbeat":
                        events.append(line.decode().strip())
                        return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert listening.wait(120), "the page's reload stream did not open" + log_tail(log)
        text_py.write_text(source.replace("# Xception Explorer\n", "# Xception Explorer, edited\n", 1), encoding="utf-8")
        # Gradio's watcher takes its first look at the files' times only once it has run app.py
        # again in its own thread, which a loaded machine can finish after the edit above: such an
        # edit looks like the original. So the file is saved again (a newer time) every few
        # seconds until the reload event arrives, or for at most 300 s.
        deadline = time.monotonic() + 300
        listener.join(5)
        while listener.is_alive() and time.monotonic() < deadline:
            os.utime(text_py)
            listener.join(5)
        assert events == ["event: reload"], f"no reload event after 300 s: {events}" + log_tail(log)
        with urllib.request.urlopen(f"{url}/config", timeout=30) as r:
            assert "# Xception Explorer, edited" in json.dumps(json.load(r))
        request = urllib.request.Request(f"{url}/api/v1/classify?k=1", data=(ROOT / "assets/examples/coffee.jpg").read_bytes(),
                                         headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=60) as r:
            assert json.load(r)["top"][0]["label"] == "cup"
        assert log.read_text().count("weights 'kitchenware' ready") == 1
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
