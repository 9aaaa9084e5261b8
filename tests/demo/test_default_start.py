"""The README's own start, `python app.py` with no XCEPTION_WEIGHTS (issue 25): offline, on a warm
cache, it serves classify, Grad-CAM and `/activations` without ever importing TensorFlow (the
ImageNet attempt is a plain download that fails at once), within the memory a free Space has;
and starts whose loader imports TensorFlow while the main thread imports the UI never lose their
weights (or the start) to an import deadlock.

"Offline" is made sure of, not assumed: the app's proxies point at a closed local port, so every
download fails at once, on any machine."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.appserver import free_port, stop, wait_ready
from demo.store import ModelStore
from xception_core.runtime.translated import open_translation, translation_dir
from xception_core.weights.fetch import cached_weights_sha256

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = sorted((ROOT / "assets" / "examples").glob("*.jpg"))[0]
RSS_BUDGET_MB = 600
RACE_STARTS = 4  # each start imports Gradio and TensorFlow side by side: 20-80 s on 2 shared cores


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_env(port: int, **extra: str) -> dict[str, str]:
    """The environment of a user's `python app.py` on this port: no XCEPTION_WEIGHTS, and every
    download through a proxy that refuses connections (offline, whatever the machine's network)."""
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("XCEPTION_WEIGHTS", "NO_PROXY", "no_proxy")}
    return {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "HTTPS_PROXY": proxy,
            "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy, "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1", **extra}


@pytest.fixture(scope="module")
def warm_cache(settings):
    """The kitchenware weights translated into the cache, as the first start leaves them."""
    ModelStore(settings, ["kitchenware"]).start().get(timeout=600)
    sha = cached_weights_sha256("kitchenware", settings.keras_home, settings.cache_dir)
    assert sha and open_translation(translation_dir(settings.cache_dir, sha), sha) is not None
    return settings


def _rss_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024


def test_the_default_start_offline_never_imports_tensorflow(warm_cache, tmp_path):
    import httpx

    from bench.live import api_classify, raw_gradio_call

    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=offline_env(port), stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url.rstrip("/"), proc, timeout=300)
        with httpx.Client(timeout=120) as http:
            _, answer = api_classify(http, url, EXAMPLE.read_bytes())
            assert answer["weights"] == "kitchenware" and answer["backend"] == "onnx"
            heat = raw_gradio_call(http, url, "gradcam", EXAMPLE, "", "kitchenware")["data"]
            assert heat
            maps = raw_gradio_call(http, url, "activations", EXAMPLE, "block4", 8)["data"]
            assert maps["block"] == "block4"
            for variant in ("paper", "article"):  # the article wiring's passes are sessions of their own
                step = raw_gradio_call(http, url, "operation", EXAMPLE, "block5", "block5_sepconv2", 2, 3, 7, variant,
                                       4)["data"]
                assert step["variant"] == variant, step
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "onnxruntime" in libraries  # the check reads the right process
        assert "tensorflow" not in libraries and "_pywrap" not in libraries
        rss = _rss_mb(proc.pid)
        assert rss <= RSS_BUDGET_MB, f"{rss} MB after classify, Grad-CAM, activations and both wirings' operation"
        text = log.read_text()
        assert "weights 'imagenet' unavailable" in text and "TensorFlow imported" not in text
    finally:
        stop(proc)


def _race_cache(settings, folder: Path) -> Path:
    """A cache of its own with the extracted kitchenware weights (hard links where the file system
    allows, else copies; never the shared folder itself) and no translation: the loader must import
    TensorFlow to translate them, and whatever it writes stays in `folder`."""
    source, cache = settings.cache_dir / "kitchenware", folder / "cache"
    for path in source.rglob("*"):
        if path.is_file() and ".ours-" not in path.name:
            target = cache / "kitchenware" / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
    return cache


def test_starts_with_both_presets_loading_never_lose_weights_to_an_import_race(warm_cache, tmp_path):
    """`python app.py` with the default presets, RACE_STARTS times: ImageNet (offline: fails as a
    download, never as an import) then kitchenware, whose loader imports TensorFlow to translate
    while the page's build imports Gradio and Plotly, and the server answers requests. Each start
    runs until the page is built and the loader is past its imports; no log line names an import
    error or a deadlock."""
    cache = _race_cache(warm_cache, tmp_path)
    bad = re.compile(r"_DeadlockError|deadlock detected|ImportError|ModuleNotFoundError|circular import")
    for start in range(RACE_STARTS):
        port = free_port()
        log = tmp_path / f"start{start}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT,
                                    env=offline_env(port, XCEPTION_CACHE_DIR=str(cache)),
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")
                if proc.poll() is not None or bad.search(text):
                    break
                if "page ready" in text and ("TensorFlow imported" in text or "weights 'kitchenware'" in text):
                    break
                subprocess.run(["sleep", "0.5"])  # polling a child's log: no event to wait on
            text = log.read_text(errors="replace")
            assert proc.poll() is None, f"start {start} died:\n{text[-3000:]}"
            assert not bad.search(text), f"start {start}:\n{text[-3000:]}"
            assert "Xception Explorer on http" in text and "page ready" in text, f"start {start} not serving:\n{text[-3000:]}"
            assert "weights 'kitchenware' unavailable" not in text
            failures = re.findall(r"weights '(\w+)' unavailable: (\w+)", text)
            assert failures == [("imagenet", "WeightsUnavailableError")], text[-3000:]
        finally:
            stop(proc)


TRACE = """
import sys, threading
first = {}
class Tracer:
    def find_spec(self, name, path=None, target=None):
        if name not in sys.modules:
            first.setdefault(name, threading.current_thread().name)
        return None
sys.meta_path.insert(0, Tracer())
from demo.store import ModelStore
from xception_core.settings import Settings
store = ModelStore(Settings.from_env()).start()
served = store.get(None, timeout=600)
import numpy as np
served.predict(np.zeros((served.input_size, served.input_size, 3), np.float32))
print("LOADER", sorted(n for n, t in first.items() if t == "model-loader"), served.key)
"""


def test_a_warm_loader_thread_imports_nothing(warm_cache):
    """What the loader thread needs on a warm start (ONNX Runtime) is imported before it starts:
    with the default presets offline (ImageNet's download fails, kitchenware's translation
    serves), the thread itself imports no module, so it cannot race the main thread's imports."""
    out = subprocess.run([sys.executable, "-c", TRACE], cwd=ROOT, env=offline_env(free_port()), capture_output=True,
                         text=True, timeout=600)
    line = next((x for x in out.stdout.splitlines() if x.startswith("LOADER ")), None)
    assert line is not None, out.stderr[-3000:]
    assert line == "LOADER [] kitchenware", line


# `python app.py` with an import tracer: an import by any thread but the page's builder (and the
# loader, whose imports hold `IMPORTS` as the builder's do) while the builder runs is printed.
TRACED_START = """
import runpy, sys, threading
class Tracer:
    def find_spec(self, name, path=None, target=None):
        me = threading.current_thread().name
        if name not in sys.modules and me not in ("page-builder", "model-loader") and any(
                t.name == "page-builder" for t in threading.enumerate()):
            print("IMPORT BESIDE THE PAGE'S BUILD", name, me, flush=True)
        return None
sys.meta_path.insert(0, Tracer())
sys.argv = ["app.py"]
runpy.run_path("app.py", run_name="__main__")
"""


def test_the_api_answers_before_the_page_and_nothing_imports_beside_its_build(warm_cache, tmp_path):
    """The plain HTTP API answers while the page is being built (`/` then says the page is
    starting, `/healthz` that it is not served yet); requests served meanwhile import nothing, so
    they cannot race the build's imports of Gradio; then the page serves."""
    import httpx

    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", TRACED_START], cwd=ROOT, env=offline_env(port), stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    seen = {"classify before the page": False, "starting page": False}
    try:
        with httpx.Client(timeout=60) as http:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    health = http.get(url + "/healthz").json()
                    classify = http.post(url + "/api/v1/classify", content=EXAMPLE.read_bytes(),
                                         headers={"Content-Type": "image/jpeg"})
                    page = http.get(url + "/")
                except httpx.TransportError:
                    continue  # not listening yet
                if page.status_code == 503 and not health["page"]:
                    seen["starting page"] = seen["starting page"] or "page is starting" in page.text
                    seen["classify before the page"] |= classify.status_code == 200
                elif page.status_code == 200 and health["page"]:
                    assert "gradio" in page.text.lower()
                    break
            else:
                pytest.fail("the page never served" + log.read_text(errors="replace")[-3000:])
        text = log.read_text(errors="replace")
        assert "IMPORT BESIDE THE PAGE'S BUILD" not in text, text[-3000:]
        assert "page ready" in text
        # A loaded machine may build the page before the weights are ready: then there was no
        # classify to see before it (the build waits a few seconds for the weights).
        assert seen["starting page"], text[-3000:]
        if "weights 'kitchenware' ready" in text.split("page ready")[0]:
            assert seen["classify before the page"], text[-3000:]
    finally:
        stop(proc)
