"""The real app, started as a user starts it (`python app.py`), on a free loopback port, with the
offline kitchenware weights; and one headless Chromium for the browser tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.appserver import app_env, free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """Base URL (no trailing slash) of a running `python app.py`."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    # The default export folder (<cache>/exports, outside the working directory and the temp
    # folder), as a user and a Space have it: the .keras download is tested where it once failed.
    env = app_env(port, "kitchenware")
    env.pop("XCEPTION_EXPORT_DIR", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url
    except Exception:
        print(log.read_text()[-4000:])
        raise
    finally:
        stop(proc)


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
