"""The real app, started as a user starts it (`python app.py`), on a free loopback port, with the
offline kitchenware weights; one headless Chromium for the browser tests; an ASGI app on uvicorn
in a thread (`ThreadServer`); and a module's tiny served model with its upload folder (`store`,
`upload_dir`)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench.appserver import app_env, free_port, stop, wait_ready
from tests.conftest import shared_loaded, store_serving

TINY_SIZE = 96  # the side of the `store` fixture's random Xception

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


LIVE_SERVER_STOP = pytest.StashKey[object]()  # stops the live app: set by `live_server`
LAST_LIVE_USER = pytest.StashKey[str]()  # the node id of the run's last test that uses it


def pytest_collection_finish(session) -> None:
    users = [item.nodeid for item in session.items if "live_server" in getattr(item, "fixturenames", ())]
    if users:
        session.config.stash[LAST_LIVE_USER] = users[-1]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem) -> None:
    """The live app stops after the last test that uses it, not at the end of the session: the
    tests after it (Ray's replicas, the core's models) do not run beside its ~1.4 GB."""
    if item.nodeid == item.config.stash.get(LAST_LIVE_USER, None) and (stop_it := item.config.stash.get(
            LIVE_SERVER_STOP, None)):
        stop_it()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory, request):
    """Base URL (no trailing slash) of a running `python app.py` (stopped after its last user)."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    # The default export folder (<cache>/exports, outside the working directory and the temp
    # folder), as a user and a Space have it: the .keras download is tested where it once failed.
    env = app_env(port, "kitchenware")
    env.pop("XCEPTION_EXPORT_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    request.config.stash[LIVE_SERVER_STOP] = lambda: stop(proc)
    try:
        wait_ready(url, proc, log=log)  # its error ends with the app's log
        yield url
    finally:
        stop(proc)  # at once if it has stopped already


@pytest.fixture(scope="session")
def live_log(live_server, tmp_path_factory) -> Path:
    return next(Path(tmp_path_factory.getbasetemp()).glob("app*/app.log"))


@pytest.fixture(scope="session")
def client(live_server):
    from gradio_client import Client

    return Client(live_server + "/", verbose=False)


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium per test module. Not per session: Playwright's sync API keeps an
    asyncio loop running in the main thread while it is open, and Ray Serve's handles refuse
    blocking calls from a thread with a running loop, so a browser left open would break the
    scale tests that run after the browser tests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_app(chromium, url: str, width: int = 1280, height: int = 1100, **options):
    """A new page on the app, once the model is ready; returns (page, uncaught page errors).
    `options` go to Playwright's `new_page` (color_scheme="dark", accept_downloads=True, …)."""
    page = chromium.new_page(viewport={"width": width, "height": height}, **options)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    page.locator("#status-line").get_by_text("Model status: ready").wait_for(timeout=60_000)
    return page, errors


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory) -> Path:
    """The module's Gradio upload folder (services read uploads only from there)."""
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module")
def store(upload_dir):
    """A started store serving a random Xception of `TINY_SIZE` with 6 classes, uploads in
    `upload_dir`. Every module's store serves the same weights (`shared_loaded`), translated once
    per session; the store itself (sessions, batcher, settings) is the module's and goes when its
    tests are done (tests/conftest.py, `release_memory`)."""
    from xception_core.settings import Settings

    return store_serving(shared_loaded(TINY_SIZE, 6, seed=0), Settings(upload_dir=upload_dir))


@dataclasses.dataclass
class ThreadServer:
    """An ASGI app on uvicorn in a daemon thread, on a loopback socket that listens before the server
    runs (a connection made meanwhile waits in the backlog, so nothing waits for it to start).
    `ThreadServer.start(app, lifespan="off", ...)` (uvicorn.Config's options); `stop()`, or use it
    as a context manager; `run(fn)` runs `fn` in the server's event loop and returns its result."""

    port: int
    server: object  # uvicorn.Server
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    listener: socket.socket

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, app, **config) -> "ThreadServer":
        import uvicorn

        listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", **config}))
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(sockets=[listener]),),
                                  name="uvicorn-test", daemon=True)
        thread.start()
        return cls(listener.getsockname()[1], server, loop, thread, listener)

    def run(self, fn, timeout: float = 30.0):
        async def call():
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.listener.close()
        if not self.thread.is_alive():
            self.loop.close()

    def __enter__(self) -> "ThreadServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
